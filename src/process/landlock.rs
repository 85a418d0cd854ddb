//! Landlock through its three system calls (no crate: the rules are few and the calls plain): a
//! ruleset built in the parent from paths and rights, enforced by the child right before its exec.
//! Everything the ruleset handles and no rule allows is denied to the child and all it starts; so
//! are ptrace and `/proc/<pid>` reads of processes outside its domain, and (ABI 6+) signals to them
//! and connections to their abstract unix sockets.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Filesystem rights (`LANDLOCK_ACCESS_FS_*`).
pub mod fs {
    pub const EXECUTE: u64 = 1 << 0;
    pub const WRITE_FILE: u64 = 1 << 1;
    pub const READ_FILE: u64 = 1 << 2;
    pub const READ_DIR: u64 = 1 << 3;
    pub const REFER: u64 = 1 << 13;
    pub const TRUNCATE: u64 = 1 << 14;
    pub const IOCTL_DEV: u64 = 1 << 15;
    /// The rights that apply to a file (a rule on a file may grant no others).
    pub const ON_FILES: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV;
}

/// Read files and list directories.
pub const READ: u64 = fs::READ_FILE | fs::READ_DIR;
/// Read, list and execute.
pub const READ_EXEC: u64 = READ | fs::EXECUTE;
/// Everything (masked to what the kernel handles).
pub const ALL: u64 = u64::MAX;

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: u32 = 1;
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

/// The kernel's Landlock ABI version; `None` when Landlock is not there (not built, or not enabled
/// among the LSMs).
pub fn abi() -> Option<u32> {
    // SAFETY: the version query takes no attribute (null, size 0).
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v as u32)
}

/// Every filesystem right an ABI knows.
fn handled_fs(abi: u32) -> u64 {
    let mut all = (1u64 << 13) - 1;
    if abi >= 2 {
        all |= fs::REFER;
    }
    if abi >= 3 {
        all |= fs::TRUNCATE;
    }
    if abi >= 5 {
        all |= fs::IOCTL_DEV;
    }
    all
}

/// A ruleset being built: every filesystem right handled, signals and abstract sockets scoped.
pub struct Ruleset {
    fd: OwnedFd,
    handled: u64,
    pub abi: u32,
}

impl Ruleset {
    /// `None` when the kernel has no Landlock.
    pub fn new() -> io::Result<Option<Ruleset>> {
        let Some(abi) = abi() else { return Ok(None) };
        let handled = handled_fs(abi);
        let scoped = if abi >= 6 { SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL } else { 0 };
        let attr = RulesetAttr { handled_access_fs: handled, handled_access_net: 0, scoped };
        // SAFETY: attr is a valid ruleset attribute of the given size; the kernel accepts a larger
        // struct whose fields it does not know are zero (scoped is zero below ABI 6).
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                std::mem::size_of::<RulesetAttr>(),
                0u32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor the kernel just returned, owned by nobody else.
        Ok(Some(Ruleset { fd: unsafe { OwnedFd::from_raw_fd(fd as i32) }, handled, abi }))
    }

    /// Allows `access` beneath `path` (on the file itself when it is one). A missing path is an
    /// error of kind NotFound (the caller decides whether it matters).
    pub fn allow(&mut self, path: &Path, access: u64) -> io::Result<()> {
        let c =
            CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: c is a valid C string; O_PATH opens no data.
        let raw = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just opened here.
        let parent = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut allowed = access & self.handled;
        if !std::fs::metadata(path)?.is_dir() {
            allowed &= fs::ON_FILES;
        }
        let attr = PathBeneath { allowed_access: allowed, parent_fd: parent.as_raw_fd() };
        // SAFETY: attr is a valid path-beneath rule for a ruleset descriptor this struct owns.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                self.fd.as_raw_fd(),
                RULE_PATH_BENEATH,
                &attr as *const PathBeneath,
                0u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The descriptor the child enforces (open until this ruleset drops, after the spawn).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// Enforces a ruleset on the calling thread and everything it starts from now on. Between fork and
/// exec: a system call only.
///
/// # Safety
/// `fd` must be a Landlock ruleset descriptor.
pub unsafe fn restrict_self(fd: i32) -> io::Result<()> {
    if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child under a ruleset that allows one directory reads there and nowhere else (the kernel
    /// of this machine kind has Landlock; where it has not, there is nothing to enforce).
    #[test]
    #[cfg_attr(not(target_os = "linux"), ignore = "Landlock is Linux's")]
    fn a_child_reads_only_where_its_ruleset_allows() {
        let Some(_) = abi() else { panic!("this kernel has no Landlock (the tests need it)") };
        let (inside, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(inside.path().join("ok"), "yes").unwrap();
        std::fs::write(outside.path().join("secret"), "no").unwrap();
        let mut rs = Ruleset::new().unwrap().unwrap();
        for sys in ["/usr", "/bin", "/lib", "/lib64", "/etc"] {
            let _ = rs.allow(Path::new(sys), READ_EXEC);
        }
        rs.allow(inside.path(), ALL).unwrap();
        let fd = rs.raw_fd();
        let run = |file: &Path| {
            use std::os::unix::process::CommandExt;
            let mut cmd = std::process::Command::new("/bin/cat");
            cmd.arg(file);
            // SAFETY: prctl and landlock_restrict_self are system calls.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    restrict_self(fd)
                });
            }
            cmd.output().unwrap()
        };
        let ok = run(&inside.path().join("ok"));
        assert_eq!((ok.status.success(), ok.stdout.as_slice()), (true, b"yes".as_slice()), "{ok:?}");
        let denied = run(&outside.path().join("secret"));
        assert!(!denied.status.success(), "read outside the ruleset: {denied:?}");
        assert!(String::from_utf8_lossy(&denied.stderr).contains("Permission denied"), "{denied:?}");
    }
}
