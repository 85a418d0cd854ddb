//! Moving directories by rename (resumable), and walking them for the manifest.

use std::collections::BTreeMap;
use std::path::Path;

use miette::{miette, IntoDiagnostic, WrapErr};

/// Moves `from` to `to` by rename. When `to` exists already (a run killed halfway through, or a
/// directory that came back), the entries of `from` move into it one by one; an entry present in
/// both is a conflict (nothing is overwritten). A missing `from` is nothing to do.
pub fn move_into(from: &Path, to: &Path) -> miette::Result<()> {
    if std::fs::symlink_metadata(from).is_err() {
        return Ok(());
    }
    if std::fs::symlink_metadata(to).is_err() {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).into_diagnostic()?;
        }
        return std::fs::rename(from, to)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot move {} to {}", from.display(), to.display()));
    }
    for entry in std::fs::read_dir(from).into_diagnostic()? {
        let entry = entry.into_diagnostic()?;
        let target = to.join(entry.file_name());
        if std::fs::symlink_metadata(&target).is_ok() {
            if entry.file_type().into_diagnostic()?.is_dir() && target.is_dir() {
                move_into(&entry.path(), &target)?;
                continue;
            }
            return Err(miette!(
                "{} exists in both {} and {}; fleet overwrites nothing: move one away",
                entry.file_name().to_string_lossy(),
                from.display(),
                to.display()
            ));
        }
        std::fs::rename(entry.path(), &target)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot move {} to {}", entry.path().display(), target.display()))?;
    }
    std::fs::remove_dir(from).into_diagnostic().wrap_err_with(|| format!("cannot remove {}", from.display()))
}

/// Makes renames inside `dir` durable.
pub fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// A file of an archive: its hash and size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileSum {
    pub sha256: String,
    pub bytes: u64,
}

/// SQLite's shared-memory index beside a WAL database (`*.db-shm`): not data (SQLite rebuilds it from
/// the database and its WAL), and rewritten by any connection still open on a moved database, even
/// one that only reads (the daemon's trace writer keeps its buckets open). An archive neither
/// lists nor exports it.
pub fn volatile(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("-shm"))
}

/// Every regular file under `root` (relative path → hash and size), `volatile` ones left out;
/// symlinks are listed by target.
pub fn sums(root: &Path) -> miette::Result<BTreeMap<String, FileSum>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for entry in rd {
            let entry = entry.into_diagnostic()?;
            let path = entry.path();
            let ft = entry.file_type().into_diagnostic()?;
            let rel = path.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() && !volatile(&path) {
                let bytes = entry.metadata().into_diagnostic()?.len();
                out.insert(rel, FileSum { sha256: crate::fsutil::sha256_file(&path)?, bytes });
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path).into_diagnostic()?;
                let t = target.to_string_lossy();
                out.insert(rel, FileSum { sha256: crate::fsutil::sha256_hex(t.as_bytes()), bytes: 0 });
            }
        }
    }
    Ok(out)
}

/// Total size of the regular files under `root`.
pub fn size(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for entry in rd.flatten() {
            match entry.file_type() {
                Ok(ft) if ft.is_dir() => stack.push(entry.path()),
                Ok(ft) if ft.is_file() => total += entry.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_resumes_into_what_an_earlier_one_left_and_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let (from, to) = (d.path().join("from"), d.path().join("to"));
        std::fs::create_dir_all(from.join("sub")).unwrap();
        std::fs::write(from.join("a"), "a").unwrap();
        std::fs::write(from.join("sub/b"), "b").unwrap();
        // An earlier run moved `sub/` halfway.
        std::fs::create_dir_all(to.join("sub")).unwrap();
        std::fs::write(to.join("sub/c"), "c").unwrap();
        move_into(&from, &to).unwrap();
        assert!(!from.exists());
        let got = sums(&to).unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["a", "sub/b", "sub/c"]);
        assert_eq!(got["a"].sha256, crate::fsutil::sha256_hex(b"a"));
        move_into(&from, &to).unwrap();
        std::fs::create_dir_all(&from).unwrap();
        std::fs::write(from.join("a"), "other").unwrap();
        let e = move_into(&from, &to).unwrap_err();
        assert!(e.to_string().contains("exists in both"), "{e}");
        assert_eq!(std::fs::read(to.join("a")).unwrap(), b"a");
    }
}
