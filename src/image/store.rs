//! The image store of a process host: an image's `/usr/local` (Node and openclaw)
//! unpacked under the fleet's data dir, so process gateways that name an image run
//! exactly the bits its Incus twin runs. The rest of the rootfs (the Debian base) is
//! not needed by a host process and is not unpacked.
//!
//! `<store>/rootfs/usr/local/…` plus `<store>/image.sha256` (the tarball it came
//! from), written into a sibling temp dir and renamed into place, so a store is
//! either the old image or the new one, never half of either.

use std::path::{Component, Path, PathBuf};

use miette::{miette, IntoDiagnostic, WrapErr};

/// The part of the rootfs a process gateway runs from.
const KEEP: &str = "rootfs/usr/local/";
const MARKER: &str = "image.sha256";

/// The sha256 of the image the store holds, if it is complete.
pub fn held(store: &Path) -> Option<String> {
    let sha = std::fs::read_to_string(store.join(MARKER)).ok()?;
    store.join("rootfs/usr/local/bin/node").is_file().then(|| sha.trim().to_string())
}

/// Unpacks `tarball` (whose sha256 is `sha256`) into `store`, replacing what was there.
pub fn unpack(tarball: &Path, sha256: &str, store: &Path) -> miette::Result<()> {
    let parent = store.parent().ok_or_else(|| miette!("{} has no parent", store.display()))?;
    std::fs::create_dir_all(parent).into_diagnostic()?;
    let tmp = tempfile::Builder::new().prefix(".unpacking-").tempdir_in(parent).into_diagnostic()?;
    let file = std::fs::File::open(tarball)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot open {}", tarball.display()))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    ar.set_preserve_permissions(true);
    let mut kept = 0usize;
    for entry in ar.entries().into_diagnostic()? {
        let mut entry = entry.into_diagnostic().wrap_err("reading the image")?;
        let path = entry.path().into_diagnostic()?.into_owned();
        if !path.to_string_lossy().starts_with(KEEP) || !plain(&path) {
            continue;
        }
        entry.unpack_in(tmp.path()).into_diagnostic().wrap_err_with(|| format!("unpacking {}", path.display()))?;
        kept += 1;
    }
    if kept == 0 {
        return Err(miette!("{} has no {KEEP} (not an openclaw image?)", tarball.display()));
    }
    std::fs::write(tmp.path().join(MARKER), format!("{sha256}\n")).into_diagnostic()?;
    let tmp = tmp.keep();
    let old: Option<PathBuf> = store.exists().then(|| parent.join(format!(".old-{}", std::process::id())));
    if let Some(old) = &old {
        std::fs::rename(store, old).into_diagnostic()?;
    }
    std::fs::rename(&tmp, store).into_diagnostic().wrap_err_with(|| format!("cannot move into {}", store.display()))?;
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(())
}

/// Relative, without `..`: a name that stays inside where it is unpacked.
fn plain(p: &Path) -> bool {
    p.components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path, node: &str) -> PathBuf {
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("usr/local/bin")).unwrap();
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(rootfs.join("usr/local/bin/node"), node).unwrap();
        std::os::unix::fs::symlink("node", rootfs.join("usr/local/bin/nodejs")).unwrap();
        std::fs::write(rootfs.join("etc/hostname"), "x").unwrap();
        let out = dir.join("image.tar.gz");
        crate::image::pack::pack(&rootfs, "architecture: x86_64\n", 1, &out).unwrap();
        out
    }

    #[test]
    fn only_usr_local_is_unpacked_and_a_new_image_replaces_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("data/images/base");
        assert_eq!(held(&store), None);
        let first = image(&dir.path().join("a"), "v1");
        unpack(&first, "aaa", &store).unwrap();
        assert_eq!(held(&store).as_deref(), Some("aaa"));
        assert_eq!(std::fs::read_to_string(store.join("rootfs/usr/local/bin/node")).unwrap(), "v1");
        assert_eq!(std::fs::read_link(store.join("rootfs/usr/local/bin/nodejs")).unwrap(), Path::new("node"));
        assert!(!store.join("rootfs/etc").exists(), "the base system stays packed");

        let second = image(&dir.path().join("b"), "v2");
        unpack(&second, "bbb", &store).unwrap();
        assert_eq!(held(&store).as_deref(), Some("bbb"));
        assert_eq!(std::fs::read_to_string(store.join("rootfs/usr/local/bin/node")).unwrap(), "v2");
        let leftovers: Vec<_> = std::fs::read_dir(store.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp or old dirs left behind");
    }

    #[test]
    fn a_tarball_without_usr_local_is_refused_and_leaves_the_store_alone() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        let out = dir.path().join("bare.tar.gz");
        crate::image::pack::pack(&rootfs, "x\n", 1, &out).unwrap();
        let store = dir.path().join("store");
        assert!(unpack(&out, "ccc", &store).unwrap_err().to_string().contains("usr/local"));
        assert!(!store.exists());
    }
}
