//! An image tarball's root filesystem (fleet's image format: `metadata.yaml` + `rootfs/`) as the plain tar `podman import` takes, every entry owned by
//! root: a sandbox runs in a user namespace that maps one id only (its gateway's user as root), so
//! an image holding files of other owners cannot be imported there (measured: `podman import` of
//! the Debian base fails at `/etc/gshadow`, group 42).

use std::path::{Component, Path, PathBuf};

use miette::{miette, IntoDiagnostic, WrapErr};

const ROOTFS: &str = "rootfs";

/// Writes `tarball`'s `rootfs/` into `out` as a tar of its own, owners 0:0. Returns the entries written.
pub fn write(tarball: &Path, out: &Path) -> miette::Result<usize> {
    let file = std::fs::File::open(tarball)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot open {}", tarball.display()))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let dest =
        std::fs::File::create(out).into_diagnostic().wrap_err_with(|| format!("cannot write {}", out.display()))?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(dest));
    let mut n = 0usize;
    for entry in ar.entries().into_diagnostic()? {
        let mut entry = entry.into_diagnostic().wrap_err("reading the image")?;
        let path = entry.path().into_diagnostic()?.into_owned();
        let Some(rel) = inside_rootfs(&path) else { continue };
        let mut h = entry.header().clone();
        h.set_uid(0);
        h.set_gid(0);
        let _ = h.set_username("root");
        let _ = h.set_groupname("root");
        if rel.as_os_str().is_empty() {
            continue;
        }
        match entry.link_name().into_diagnostic()? {
            Some(target) if h.entry_type().is_hard_link() => {
                let target = inside_rootfs(&target).ok_or_else(|| miette!("a hard link out of the rootfs"))?;
                b.append_link(&mut h, &rel, &target).into_diagnostic()?;
            }
            Some(target) => {
                let target = target.into_owned();
                b.append_link(&mut h, &rel, &target).into_diagnostic()?;
            }
            None => b.append_data(&mut h, &rel, &mut entry).into_diagnostic()?,
        }
        n += 1;
    }
    b.into_inner().into_diagnostic()?;
    if n == 0 {
        return Err(miette!("{} has no {ROOTFS}/ (not an image fleet built or fetched?)", tarball.display()));
    }
    Ok(n)
}

/// `rootfs/etc/motd` → `etc/motd`; None for anything outside `rootfs/` or with `..`.
fn inside_rootfs(p: &Path) -> Option<PathBuf> {
    let rel = p.strip_prefix(ROOTFS).ok()?;
    rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)).then(|| rel.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rootfs_comes_out_owned_by_root_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        // An image as fleet packs one: metadata.yaml, then rootfs/ (owners of all kinds).
        let tarball = dir.path().join("img.tar.gz");
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(&tarball).unwrap(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let entry = |b: &mut tar::Builder<_>, name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(1000);
            h.set_gid(42);
            match link {
                Some(target) => b.append_link(&mut h, name, target).unwrap(),
                None => b.append_data(&mut h, name, data).unwrap(),
            }
        };
        entry(&mut b, "metadata.yaml", tar::EntryType::Regular, b"architecture: x86_64\n", None);
        entry(&mut b, "rootfs/", tar::EntryType::Directory, b"", None);
        entry(&mut b, "rootfs/etc/", tar::EntryType::Directory, b"", None);
        entry(&mut b, "rootfs/etc/motd", tar::EntryType::Regular, b"hi", None);
        entry(&mut b, "rootfs/etc/issue", tar::EntryType::Symlink, b"", Some("motd"));
        b.into_inner().unwrap().finish().unwrap();
        let out = dir.path().join("plain.tar");
        assert!(write(&tarball, &out).unwrap() >= 3);
        let mut ar = tar::Archive::new(std::fs::File::open(&out).unwrap());
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!((e.header().uid().unwrap(), e.header().gid().unwrap()), (0, 0));
            names.push(e.path().unwrap().display().to_string());
        }
        assert!(names.iter().any(|n| n == "etc/motd"), "{names:?}");
        assert!(names.iter().any(|n| n == "etc/issue"), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("metadata")), "{names:?}");
    }

    #[test]
    fn a_tarball_without_a_rootfs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tarball = dir.path().join("x.tar.gz");
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(&tarball).unwrap(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "other/file", &b"x"[..]).unwrap();
        b.into_inner().unwrap().finish().unwrap();
        assert!(write(&tarball, &dir.path().join("o.tar")).is_err());
    }
}
