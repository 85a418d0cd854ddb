//! How a process gateway is confined (docs/security.md). Its agents run tools inside it, so it is
//! the untrusted party: when fleet runs as root it gets a user of its own (`fl-<10 hex of its
//! home>`) that owns its home and is in the group that may search the directories above it; in
//! every case no new privileges and a Landlock ruleset — its home read-write, its Node and openclaw
//! (or its image) and the system read-only, `/proc` and `/sys` readable, `/dev` usable, its lock
//! directory in `/tmp`. Everything else — the data dir's other files (state, the proxy's and the
//! daemon's secrets, agents' env files and traces), other gateways' homes — is out of its reach.

use std::path::{Path, PathBuf};

use miette::{IntoDiagnostic, WrapErr};

use super::Launch;
use crate::fleetfile::Limits;
use crate::process::cgroup;
use crate::process::confine::{Confinement, Identity};
use crate::process::landlock::{self, Ruleset};
use crate::process::users;

/// The system directories a gateway may read and run from.
const SYSTEM: [&str; 9] = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"];

/// The user a gateway runs as when fleet runs as root.
pub fn user_name(l: &Launch) -> String {
    format!("fl-{}", &crate::fsutil::sha256_hex(l.home.display().to_string().as_bytes())[..10])
}

pub fn running_as_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Where OpenClaw keeps its state locks (`/tmp/openclaw-state-locks-<uid>`: no setting moves it).
fn lock_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/openclaw-state-locks-{uid}"))
}

/// Prepares the confinement of gateway `l`, about to start from `reads` (its Node and openclaw, or
/// its image's root): its user made and given its home, the directories above searchable by it,
/// the ruleset built. Blocking (useradd, a walk of the home).
pub fn prepare(l: &Launch, reads: &[PathBuf]) -> miette::Result<Confinement> {
    let what = || format!("cannot confine gateway {}", l.gateway);
    let identity = if running_as_root() {
        let (uid, gid) = users::ensure_user(&user_name(l), &l.home).wrap_err_with(what)?;
        let shared = users::ensure_shared_group().wrap_err_with(what)?;
        users::own_tree(&l.home, uid, gid).into_diagnostic().wrap_err_with(what)?;
        set_mode(&l.home, 0o700).wrap_err_with(what)?;
        for dir in reads.iter().chain([&l.home]).flat_map(|p| p.ancestors().skip(1)) {
            users::grant_search(dir, shared)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot let gateway users search {}", dir.display()))?;
        }
        Some(Identity { uid, gid, groups: vec![shared] })
    } else {
        None
    };
    // SAFETY: geteuid/getegid cannot fail.
    let (uid, gid) =
        identity.as_ref().map_or_else(|| unsafe { (libc::geteuid(), libc::getegid()) }, |i| (i.uid, i.gid));
    let locks = lock_dir(uid);
    std::fs::create_dir_all(&locks).into_diagnostic().wrap_err_with(what)?;
    if identity.is_some() {
        users::own_tree(&locks, uid, gid).into_diagnostic().wrap_err_with(what)?;
    }
    set_mode(&locks, 0o700).wrap_err_with(what)?;
    // Podman cannot start inside a Landlock domain (no mount(2) there): a gateway whose agents' tools
    // run in sandboxes keeps its own user, no new privileges and its limits, not Landlock.
    let ruleset = match l.sandboxes.is_empty() {
        true => ruleset(l, reads, &locks).into_diagnostic().wrap_err_with(what)?,
        false => None,
    };
    let mut rlimits = vec![(libc::RLIMIT_CORE, 0)];
    let mut cgroups = Vec::new();
    match how_limited(&l.limits) {
        // Limits dropped from the fleet file: their cgroups stay, empty, until the gateway goes.
        Held::Nothing => {}
        Held::Cgroups(h) => {
            let placed = h.place(&user_name(l), &caps(&l.limits)).into_diagnostic().wrap_err_with(what)?;
            cgroups = placed.procs;
        }
        Held::Rlimits => rlimits.extend(rlimits_for(&l.limits)),
    }
    Ok(Confinement { identity, ruleset, rlimits, cgroups })
}

/// How a process gateway's `limits` are held on this machine.
pub enum Held {
    Nothing,
    /// Its own cgroups: memory (swap included), processes, CPU time.
    Cgroups(cgroup::Hierarchy),
    /// Not root (or no cgroups): rlimits, which hold memory (its data segments: heap and private
    /// writable mappings) and processes (counted for its user), not CPU time.
    Rlimits,
}

pub fn how_limited(limits: &Limits) -> Held {
    if limits.is_none() {
        return Held::Nothing;
    }
    match cgroup::hierarchy().filter(|_| running_as_root()) {
        Some(h) => Held::Cgroups(h),
        None => Held::Rlimits,
    }
}

fn caps(limits: &Limits) -> cgroup::Caps {
    cgroup::Caps {
        memory: limits.memory,
        cpu_quota: limits.cpus.map(cgroup::Caps::cpu_quota_of),
        pids: limits.processes,
    }
}

fn rlimits_for(limits: &Limits) -> Vec<crate::process::confine::Rlimit> {
    let mut out = Vec::new();
    if let Some(m) = limits.memory {
        out.push((libc::RLIMIT_DATA, m));
    }
    if let Some(p) = limits.processes {
        out.push((libc::RLIMIT_NPROC, p));
    }
    out
}

fn ruleset(l: &Launch, reads: &[PathBuf], locks: &Path) -> std::io::Result<Option<Ruleset>> {
    let Some(mut rs) = Ruleset::new()? else { return Ok(None) };
    rs.allow(&l.home, landlock::ALL)?;
    rs.allow(locks, landlock::ALL)?;
    for r in reads {
        rs.allow(r, landlock::READ_EXEC)?;
    }
    let optional = |rs: &mut Ruleset, p: &str, access: u64| match rs.allow(Path::new(p), access) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    for sys in SYSTEM {
        optional(&mut rs, sys, landlock::READ_EXEC)?;
    }
    optional(&mut rs, "/proc", landlock::READ)?;
    optional(&mut rs, "/sys", landlock::READ)?;
    optional(&mut rs, "/run/systemd/resolve", landlock::READ)?;
    optional(
        &mut rs,
        "/dev",
        landlock::READ | landlock::fs::WRITE_FILE | landlock::fs::IOCTL_DEV | landlock::fs::TRUNCATE,
    )?;
    Ok(Some(rs))
}

fn set_mode(p: &Path, mode: u32) -> miette::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot set the mode of {}", p.display()))
}

/// Removes what `prepare` made for a gateway that goes: its user and its lock directory. Its home
/// stays (a replace starts the gateway on it again; the next user owns it then).
pub fn discard(l: &Launch) -> miette::Result<()> {
    if !running_as_root() {
        return Ok(());
    }
    let name = user_name(l);
    if let Some((uid, _)) = users::user(&name) {
        // Its OpenClaw locks and podman's runtime directories (sandbox.rs).
        for dir in
            [lock_dir(uid), format!("/tmp/podman-run-{uid}").into(), format!("/tmp/containers-user-{uid}").into()]
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    if let Some(h) = cgroup::hierarchy() {
        h.remove(&name).into_diagnostic().wrap_err_with(|| format!("gateway {}", l.gateway))?;
    }
    users::remove_user(&name)
}

/// Whether this kernel confines gateways' files (Landlock), for the plan's warning.
pub fn landlock_missing() -> bool {
    landlock::abi().is_none()
}

/// Who gateway `l` runs as, when fleet gave it a user of its own (None: fleet's own).
pub fn identity_of(l: &Launch) -> Option<Identity> {
    if !running_as_root() {
        return None;
    }
    let (uid, gid) = users::user(&user_name(l))?;
    let shared = users::group(users::SHARED_GROUP)?;
    Some(Identity { uid, gid, groups: vec![shared] })
}
