//! Packs a root filesystem as an Incus unified image (`metadata.yaml` + `rootfs/`,
//! gzip), byte-for-byte reproducible: entries sorted, numeric owners only, every
//! mtime clamped to SOURCE_DATE_EPOCH, a fixed gzip header (no name, mtime 0).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use miette::{IntoDiagnostic, WrapErr};

fn header(meta: &std::fs::Metadata, epoch: u64, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_mtime((meta.mtime().max(0) as u64).min(epoch));
    h.set_size(size);
    h
}

/// Every path under `root`, sorted bytewise (directories before their contents).
fn sorted_entries(root: &Path) -> miette::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut children: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_diagnostic()?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .into_diagnostic()?;
        children.sort();
        for c in children.iter().rev() {
            let m = std::fs::symlink_metadata(c).into_diagnostic()?;
            if m.is_dir() {
                stack.push(c.clone());
            }
        }
        out.extend(children);
    }
    out.sort_by(|a, b| a.as_os_str().as_encoded_bytes().cmp(b.as_os_str().as_encoded_bytes()));
    Ok(out)
}

/// Writes `<out>` (a .tar.gz) from `metadata_yaml` and the tree at `rootfs`.
pub fn pack(rootfs: &Path, metadata_yaml: &str, epoch: u64, out: &Path) -> miette::Result<()> {
    let file =
        std::fs::File::create(out).into_diagnostic().wrap_err_with(|| format!("cannot create {}", out.display()))?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(std::io::BufWriter::new(file), flate2::Compression::new(6));
    let mut ar = tar::Builder::new(gz);
    ar.mode(tar::HeaderMode::Complete);

    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(epoch);
    h.set_size(metadata_yaml.len() as u64);
    ar.append_data(&mut h, "metadata.yaml", metadata_yaml.as_bytes()).into_diagnostic()?;

    let root_meta = std::fs::symlink_metadata(rootfs).into_diagnostic()?;
    let mut h = header(&root_meta, epoch, tar::EntryType::Directory, 0);
    ar.append_data(&mut h, "rootfs/", std::io::empty()).into_diagnostic()?;
    for path in sorted_entries(rootfs)? {
        let rel = path.strip_prefix(rootfs).expect("under root");
        let name = Path::new("rootfs").join(rel);
        let m = std::fs::symlink_metadata(&path).into_diagnostic()?;
        let ft = m.file_type();
        if ft.is_dir() {
            let mut h = header(&m, epoch, tar::EntryType::Directory, 0);
            ar.append_data(&mut h, format!("{}/", name.display()), std::io::empty()).into_diagnostic()?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).into_diagnostic()?;
            let mut h = header(&m, epoch, tar::EntryType::Symlink, 0);
            ar.append_link(&mut h, &name, &target).into_diagnostic()?;
        } else if ft.is_file() {
            let mut h = header(&m, epoch, tar::EntryType::Regular, m.len());
            let f = std::fs::File::open(&path).into_diagnostic()?;
            ar.append_data(&mut h, &name, f)
                .into_diagnostic()
                .wrap_err_with(|| format!("packing {}", rel.display()))?;
        }
        // Device nodes, fifos and sockets are left out: the container runtime provides /dev.
    }
    let gz = ar.into_inner().into_diagnostic()?;
    let mut w = gz.finish().into_diagnostic()?;
    w.flush().into_diagnostic()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_tree_packs_to_the_same_bytes_whatever_its_mtimes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc/z")).unwrap();
        std::fs::write(root.join("etc/b"), "b").unwrap();
        std::fs::write(root.join("etc/a"), "a").unwrap();
        std::os::unix::fs::symlink("a", root.join("etc/link")).unwrap();
        let one = dir.path().join("one.tar.gz");
        pack(&root, "architecture: x86_64\n", 1_700_000_000, &one).unwrap();
        // Touch everything: new mtimes must not change a byte (they are clamped to the epoch).
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(root.join("etc/a"), "a").unwrap();
        let two = dir.path().join("two.tar.gz");
        pack(&root, "architecture: x86_64\n", 1_700_000_000, &two).unwrap();
        assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());

        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&one).unwrap()));
        let names: Vec<String> =
            ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(
            names,
            vec![
                "metadata.yaml",
                "rootfs/",
                "rootfs/etc/",
                "rootfs/etc/a",
                "rootfs/etc/b",
                "rootfs/etc/link",
                "rootfs/etc/z/"
            ]
        );
    }
}
