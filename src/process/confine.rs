//! What a confined child becomes between its fork and its exec: its cgroups, its resource limits,
//! its own identity (uid, gid, one supplementary group), no new privileges (no setuid binary gives
//! any back), and a Landlock ruleset. Everything is prepared in the parent; the child only makes system
//! calls. The policy — which user, which paths — is the caller's (`runtime::confine` for gateways).

use std::os::unix::process::CommandExt;
use std::process::Command;

use super::landlock::{self, Ruleset};

/// Who the child runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Its only supplementary groups.
    pub groups: Vec<u32>,
}

/// A resource limit the child gets (soft = hard).
pub type Rlimit = (libc::__rlimit_resource_t, u64);

/// A child's confinement, ready to install on its `Command`.
#[derive(Default)]
pub struct Confinement {
    pub identity: Option<Identity>,
    /// Missing when the kernel has no Landlock (the plan says so).
    pub ruleset: Option<Ruleset>,
    pub rlimits: Vec<Rlimit>,
    /// The `cgroup.procs` files of the cgroups it joins (`cgroup.rs`), opened by the parent.
    pub cgroups: Vec<std::os::fd::OwnedFd>,
}

impl Confinement {
    /// Installs the child's side on `cmd`. The ruleset's descriptor must stay open until the spawn:
    /// keep `self` alive until then.
    pub fn install(&self, cmd: &mut Command) {
        let identity = self.identity.clone();
        let ruleset = self.ruleset.as_ref().map(Ruleset::raw_fd);
        let rlimits = self.rlimits.clone();
        let cgroups: Vec<i32> = self.cgroups.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
        // SAFETY: between fork and exec the closure makes system calls only (write, setrlimit,
        // setgroups, setgid, setuid, prctl, landlock_restrict_self) on data allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // Into its cgroups first, while still privileged enough to move itself.
                for fd in &cgroups {
                    if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (resource, value) in &rlimits {
                    let lim = libc::rlimit { rlim_cur: *value, rlim_max: *value };
                    if libc::setrlimit(*resource, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(id) = &identity {
                    if libc::setgroups(id.groups.len(), id.groups.as_ptr()) != 0
                        || libc::setgid(id.gid) != 0
                        || libc::setuid(id.uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = ruleset {
                    landlock::restrict_self(fd)?;
                }
                Ok(())
            });
        }
    }
}
