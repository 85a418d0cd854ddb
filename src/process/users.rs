//! System users for confined processes, when fleet runs as root: each gateway its own user and
//! group (`useradd`, uid derived from the name so the same gateway gets the same uid back), all of
//! them members of one group (`fleet-gateways`) that may search — only search, `x` — the
//! directories above their homes and toolchains that others may not (one POSIX ACL entry each).

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use miette::{miette, IntoDiagnostic};

/// The group every gateway user is in: it may search the directories above their homes.
pub const SHARED_GROUP: &str = "fleet-gateways";
/// Gateway users' uids and gids: far above login users and Incus's subordinate ranges.
/// The first uid (and gid) a gateway's own user can get.
pub const ID_BASE: u32 = 2_000_000_000;
const ID_SPAN: u32 = 100_000_000;
/// The comment of every user fleet makes (how a stale one is told from anyone else's).
const COMMENT: &str = "fleet gateway";

/// A user's uid and primary gid, from the system's user database (files).
pub fn user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// The users fleet made (gateways' own: `fl-…`, its comment): name, uid, home.
fn fleet_users() -> Vec<(String, u32, PathBuf)> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 6 && f[4] == COMMENT && f[0].starts_with("fl-"))
                .then(|| Some((f[0].to_string(), f[2].parse().ok()?, PathBuf::from(f[5]))))?
        })
        .collect()
}

/// The user fleet made (a gateway's own) whose uid is `uid`: its name and home.
pub fn gateway_user_by_uid(uid: u32) -> Option<(String, PathBuf)> {
    if uid < ID_BASE {
        return None;
    }
    fleet_users().into_iter().find(|(_, u, _)| *u == uid).map(|(name, _, home)| (name, home))
}

/// A group's gid.
pub fn group(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| f[2].parse().ok())?
    })
}

/// An id for `name` in fleet's range: derived from the name, the next free one when that is taken.
fn free_id(name: &str, taken: impl Fn(u32) -> bool) -> u32 {
    let hash = crate::fsutil::sha256_hex(name.as_bytes());
    let mut id = ID_BASE + u32::from_str_radix(&hash[..8], 16).unwrap_or(0) % ID_SPAN;
    while taken(id) {
        id = ID_BASE + (id - ID_BASE + 1) % ID_SPAN;
    }
    id
}

fn uid_taken(id: u32) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(':').nth(2).and_then(|s| s.parse::<u32>().ok()) == Some(id))
}

fn taken(id: u32) -> bool {
    let used = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(':').nth(2).and_then(|s| s.parse::<u32>().ok()) == Some(id))
    };
    used("/etc/passwd") || used("/etc/group")
}

/// One user-database change at a time in this process; another process's (useradd refuses at once
/// while the database is locked) is waited out for up to 30 s.
fn run(cmd: &mut Command) -> miette::Result<()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let t0 = std::time::Instant::now();
    loop {
        let out = cmd.output().into_diagnostic()?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if !err.contains("lock") || t0.elapsed() > std::time::Duration::from_secs(30) {
            return Err(miette!("{:?} failed: {err}", cmd));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The shared group's gid, created (a system group) when missing.
pub fn ensure_shared_group() -> miette::Result<u32> {
    if let Some(g) = group(SHARED_GROUP) {
        return Ok(g);
    }
    let made = run(Command::new("groupadd").args(["--system", SHARED_GROUP]));
    // Another apply may have made it at the same moment.
    group(SHARED_GROUP).ok_or_else(|| made.err().unwrap_or_else(|| miette!("groupadd made no {SHARED_GROUP}")))
}

/// `name`'s uid and gid, the user created when missing: a system user with a group of its own
/// (the same number), in the shared group, no login shell, `home` as its home (not created here).
pub fn ensure_user(name: &str, home: &Path) -> miette::Result<(u32, u32)> {
    if let Some(ids) = user(name) {
        return Ok(ids);
    }
    prune_stale();
    ensure_shared_group()?;
    // Each step is idempotent: a run killed between the group and the user finds the group next time.
    let gid = match group(name) {
        Some(g) => g,
        None => {
            let id = free_id(name, taken);
            run(Command::new("groupadd").args(["--system", "-g", &id.to_string(), name]))?;
            group(name).ok_or_else(|| miette!("groupadd made no group {name}"))?
        }
    };
    let uid = if uid_taken(gid) { free_id(name, |id| taken(id) || uid_taken(id)) } else { gid };
    let n = uid.to_string();
    let home = home.display().to_string();
    run(Command::new("useradd").args([
        "--system",
        "-u",
        &n,
        "-g",
        name,
        "-G",
        SHARED_GROUP,
        "-M",
        "-d",
        &home,
        "-s",
        "/usr/sbin/nologin",
        "-c",
        COMMENT,
        name,
    ]))?;
    user(name).ok_or_else(|| miette!("useradd made no user {name}"))
}

/// Removes the gateway users whose home is gone (a data dir removed by hand, a test's temporary
/// fleet): a live gateway's home always exists before its user is made. Best effort.
fn prune_stale() {
    for (name, _, home) in fleet_users() {
        if !home.exists() {
            let _ = remove_user(&name);
        }
    }
}

/// Removes a user fleet made (and its group); nothing when it is not there.
pub fn remove_user(name: &str) -> miette::Result<()> {
    if user(name).is_some() {
        run(Command::new("userdel").arg(name))?;
    }
    if group(name).is_some() {
        run(Command::new("groupdel").arg(name))?;
    }
    Ok(())
}

/// Gives `path` and everything under it to `uid:gid` (symlinks themselves, not what they point at).
pub fn own_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.uid() != uid || meta.gid() != gid {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    }
    if meta.is_dir() {
        for e in std::fs::read_dir(path)? {
            own_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Gives `path` (and what is under it) to the owner of `home` when fleet runs as root and the home
/// is another user's (a confined gateway's): what fleet writes into a gateway's home is that
/// gateway's to use. Nothing otherwise.
pub fn own_like(path: &Path, home: &Path) -> io::Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 || !path.exists() {
        return Ok(());
    }
    match std::fs::metadata(home) {
        Ok(m) if m.uid() != 0 => own_tree(path, m.uid(), m.gid()),
        _ => Ok(()),
    }
}

const ACL_XATTR: &str = "system.posix_acl_access";
const ACL_VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;

/// Lets the group `gid` search `dir` (`x`: reach what is inside by name, never list it) when others
/// may not: one entry added to its access ACL, the rest kept, the mask widened to let it through.
pub fn grant_search(dir: &Path, gid: u32) -> io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    let mode = meta.permissions().mode();
    if mode & 0o001 != 0 {
        return Ok(());
    }
    let mut entries = read_acl(dir)?.unwrap_or_else(|| {
        vec![
            (USER_OBJ, ((mode >> 6) & 7) as u16, UNDEFINED_ID),
            (GROUP_OBJ, ((mode >> 3) & 7) as u16, UNDEFINED_ID),
            (OTHER, (mode & 7) as u16, UNDEFINED_ID),
        ]
    });
    // In force only when the mask lets it through too (a chmod since, e.g. to 0700, narrows the mask).
    let granted = entries.iter().any(|&(t, p, id)| t == GROUP && id == gid && p & 1 != 0);
    if granted && entries.iter().any(|&(t, p, _)| t == MASK && p & 1 != 0) {
        return Ok(());
    }
    let perm = entries.iter().find(|&&(t, _, id)| t == GROUP && id == gid).map_or(0, |e| e.1) | 1;
    entries.retain(|&(t, _, id)| !(t == GROUP && id == gid) && t != MASK);
    entries.push((GROUP, perm, gid));
    let mask = entries.iter().filter(|e| matches!(e.0, USER | GROUP_OBJ | GROUP)).fold(0, |m, e| m | e.1);
    entries.push((MASK, mask, UNDEFINED_ID));
    entries.sort_by_key(|&(t, _, id)| (t, id));
    let mut raw = ACL_VERSION.to_le_bytes().to_vec();
    for (t, p, id) in entries {
        raw.extend_from_slice(&t.to_le_bytes());
        raw.extend_from_slice(&p.to_le_bytes());
        raw.extend_from_slice(&id.to_le_bytes());
    }
    xattr::set(dir, ACL_XATTR, &raw)
}

fn read_acl(dir: &Path) -> io::Result<Option<Vec<(u16, u16, u32)>>> {
    let Some(raw) = xattr::get(dir, ACL_XATTR)? else { return Ok(None) };
    if raw.len() < 4 || (raw.len() - 4) % 8 != 0 {
        return Ok(None);
    }
    Ok(Some(
        raw[4..]
            .chunks(8)
            .map(|c| {
                (
                    u16::from_le_bytes([c[0], c[1]]),
                    u16::from_le_bytes([c[2], c[3]]),
                    u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect(),
    ))
}

/// Extended attributes through libc (two calls).
mod xattr {
    use std::ffi::CString;
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    fn c(p: &Path) -> io::Result<CString> {
        CString::new(p.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }

    pub fn get(p: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
        let (p, n) = (c(p)?, CString::new(name).unwrap());
        let mut buf = vec![0u8; 1024];
        // SAFETY: valid C strings and a buffer of the given length.
        let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if len < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENODATA) { Ok(None) } else { Err(e) };
        }
        buf.truncate(len as usize);
        Ok(Some(buf))
    }

    pub fn set(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
        let (p, n) = (c(p)?, CString::new(name).unwrap());
        // SAFETY: valid C strings and a value of the given length.
        if unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 0700 directory gets one group entry with `x`, a mask that lets it through, and keeps its
    /// owner's and others' permissions (read back as the kernel stores them).
    #[test]
    fn a_search_grant_adds_one_entry_and_keeps_the_rest() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        grant_search(d.path(), 4_242_424).unwrap();
        let acl = read_acl(d.path()).unwrap().expect("an access ACL");
        assert!(acl.contains(&(GROUP, 1, 4_242_424)), "{acl:?}");
        assert!(acl.contains(&(USER_OBJ, 7, UNDEFINED_ID)), "{acl:?}");
        assert!(acl.contains(&(OTHER, 0, UNDEFINED_ID)), "{acl:?}");
        assert!(acl.contains(&(MASK, 1, UNDEFINED_ID)), "{acl:?}");
        let mode = std::fs::metadata(d.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o710, "the group bits show the mask");
        grant_search(d.path(), 4_242_424).unwrap();
        assert_eq!(read_acl(d.path()).unwrap().unwrap().len(), acl.len(), "a second grant adds nothing");
        // A chmod narrows the mask (the group bits): the next grant widens it again.
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(read_acl(d.path()).unwrap().unwrap().contains(&(MASK, 0, UNDEFINED_ID)));
        grant_search(d.path(), 4_242_424).unwrap();
        assert!(read_acl(d.path()).unwrap().unwrap().contains(&(MASK, 1, UNDEFINED_ID)));
    }
}
