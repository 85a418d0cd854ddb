//! Small file helpers: atomic writes with a mode, hashing, and finding a program on the PATH.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use miette::{IntoDiagnostic, WrapErr};
use sha2::{Digest, Sha256};

/// Where `name` is on this process's PATH, if anywhere.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// `n` random bytes from the OS, hex.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// sha256 of a file, streamed (image tarballs are hundreds of MB).
pub fn sha256_file(path: &Path) -> miette::Result<String> {
    let mut f =
        std::fs::File::open(path).into_diagnostic().wrap_err_with(|| format!("cannot read {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).into_diagnostic()?;
    Ok(hex::encode(h.finalize()))
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename),
/// with `mode` set before any byte is written, so a secret is never briefly world-readable.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".fleet-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Closes what a data dir holds beside its gateways' homes, by mode: a confined gateway's user may
/// search the data dir to reach its home (docs/security.md), so everything else there is private to
/// fleet's user (directories 0700, the state 0600) and `gateways/` lets one reach a home by name
/// without listing the others (0711). Best effort: a missing entry is skipped.
pub fn close_data_dir(data: &Path) {
    let mode = |p: &Path, m: u32| {
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    };
    for d in ["litellm", "agents", "serve", "archive", "incus"] {
        mode(&data.join(d), 0o700);
    }
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        mode(&data.join(f), 0o600);
    }
    mode(&data.join("gateways"), 0o711);
    for gw in std::fs::read_dir(data.join("gateways")).into_iter().flatten().flatten() {
        mode(&gw.path(), 0o711);
    }
}

/// Creates a directory (and parents) private to the owner.
/// Group search alone (`--x`) is left as it is: on a data dir it is the mask of the ACL entry that
/// lets confined gateways reach their homes (docs/security.md), and a chmod to 0700 would close it.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o067 != 0 || mode & 0o700 != 0o700 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Holds an exclusive flock on a file for as long as it lives (parallel fleets installing the same venv).
pub struct FileLock(#[allow(dead_code)] std::fs::File);

impl FileLock {
    pub async fn take(path: &Path) -> miette::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).into_diagnostic()?;
        }
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).into_diagnostic()?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        tokio::task::spawn_blocking(move || {
            // SAFETY: flock on an fd this closure's caller keeps open.
            let rc = unsafe { libc::flock(fd, libc::LOCK_EX) };
            (rc == 0).then_some(()).ok_or_else(std::io::Error::last_os_error)
        })
        .await
        .into_diagnostic()?
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot lock {}", path.display()))?;
        Ok(FileLock(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/secret");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1, "no temp files left");
    }
}
