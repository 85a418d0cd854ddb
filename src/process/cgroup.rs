//! A cgroup of its own for a detached process, holding what it and everything it starts may take
//! of the machine: memory (swap included), processes, CPU time. Made by the parent (it must be
//! root, or own the hierarchy), joined by the child between its fork and its exec (it writes "0"
//! into the `cgroup.procs` files the parent opened), so nothing of the child ever runs outside it.
//! cgroup v2 (one hierarchy) and v1 (one per controller, as on this machine kind) alike; the
//! cgroups are `fleet/<unit>` at the hierarchy's root.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// What the process may take.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Caps {
    /// Bytes of memory, swap included.
    pub memory: Option<u64>,
    /// Microseconds of CPU time per 100 ms period (100000 = one CPU).
    pub cpu_quota: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
}

/// The period `cpu_quota` is counted in, in microseconds.
const PERIOD: u64 = 100_000;

/// Where the cgroups are on this machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Hierarchy {
    /// One hierarchy: its root.
    V2(PathBuf),
    /// One hierarchy per controller: the directory holding them (`memory/`, `pids/`, `cpu/`).
    V1(PathBuf),
}

const ROOT: &str = "/sys/fs/cgroup";

/// This machine's cgroups, when they have the controllers a `Caps` needs.
pub fn hierarchy() -> Option<Hierarchy> {
    let root = Path::new(ROOT);
    if root.join("cgroup.controllers").exists() {
        return Some(Hierarchy::V2(root.into()));
    }
    root.join("memory").join("cgroup.procs").exists().then(|| Hierarchy::V1(root.into()))
}

/// A process's cgroups, made and given their caps: the `cgroup.procs` files the child writes "0"
/// into to join them (opened here, close-on-exec).
pub struct Placed {
    pub procs: Vec<OwnedFd>,
}

impl Hierarchy {
    /// The directories of `unit`'s cgroups, one per controller `caps` needs (v1), or the one (v2).
    fn dirs(&self, unit: &str, caps: &Caps) -> Vec<(PathBuf, &'static str)> {
        match self {
            Hierarchy::V2(root) => vec![(root.join("fleet").join(unit), "")],
            Hierarchy::V1(root) => {
                [(caps.memory.is_some(), "memory"), (caps.pids.is_some(), "pids"), (caps.cpu_quota.is_some(), "cpu")]
                    .into_iter()
                    .filter(|(wanted, _)| *wanted)
                    .map(|(_, c)| (root.join(c).join("fleet").join(unit), c))
                    .collect()
            }
        }
    }

    /// Makes `unit`'s cgroups with `caps`, or changes the caps of those there.
    pub fn place(&self, unit: &str, caps: &Caps) -> std::io::Result<Placed> {
        if let Hierarchy::V2(root) = self {
            // The controllers must be handed down to `fleet/` and from it to its children.
            for dir in [root.clone(), root.join("fleet")] {
                std::fs::create_dir_all(&dir)?;
                write(&dir.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
            }
        }
        let mut procs = Vec::new();
        for (dir, controller) in self.dirs(unit, caps) {
            std::fs::create_dir_all(&dir)?;
            match controller {
                "memory" => set_v1_memory(&dir, caps.memory.unwrap_or(u64::MAX))?,
                "pids" => write(&dir.join("pids.max"), &caps.pids.map_or("max".into(), |p| p.to_string()))?,
                "cpu" => {
                    write(&dir.join("cpu.cfs_period_us"), &PERIOD.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &caps.cpu_quota.map_or("-1".into(), |q| q.to_string()))?;
                }
                _ => {
                    let or_max = |v: Option<u64>| v.map_or("max".into(), |v| v.to_string());
                    write(&dir.join("memory.max"), &or_max(caps.memory))?;
                    if dir.join("memory.swap.max").exists() {
                        write(&dir.join("memory.swap.max"), if caps.memory.is_some() { "0" } else { "max" })?;
                    }
                    write(&dir.join("pids.max"), &or_max(caps.pids))?;
                    write(&dir.join("cpu.max"), &format!("{} {PERIOD}", or_max(caps.cpu_quota)))?;
                }
            }
            procs.push(OpenOptions::new().write(true).open(dir.join("cgroup.procs"))?.into());
        }
        Ok(Placed { procs })
    }

    /// Removes `unit`'s cgroups; what still runs in them (a tool's process that outlived its
    /// gateway) is killed first. Those not there are fine.
    pub fn remove(&self, unit: &str) -> std::io::Result<()> {
        let all = Caps { memory: Some(0), cpu_quota: Some(0), pids: Some(0) };
        for (dir, _) in self.dirs(unit, &all) {
            let t0 = std::time::Instant::now();
            loop {
                let left = members(&dir);
                if left.is_empty() || t0.elapsed() > std::time::Duration::from_secs(5) {
                    break;
                }
                for pid in left {
                    // SAFETY: kill(2) on a pid read from this cgroup's own member list.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            match std::fs::remove_dir(&dir) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(std::io::Error::new(e.kind(), format!("cannot remove {}: {e}", dir.display())))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// How many times the kernel's OOM killer killed a process of `unit` (None: not known here).
    pub fn oom_kills(&self, unit: &str) -> Option<u64> {
        let file = match self {
            Hierarchy::V2(root) => root.join("fleet").join(unit).join("memory.events"),
            Hierarchy::V1(root) => root.join("memory").join("fleet").join(unit).join("memory.oom_control"),
        };
        let text = std::fs::read_to_string(file).ok()?;
        text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok())
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Hierarchy::V2(_) => "cgroup v2",
            Hierarchy::V1(_) => "cgroup v1",
        }
    }
}

impl Caps {
    /// `cpus` CPUs' time per period.
    pub fn cpu_quota_of(cpus: f64) -> u64 {
        (cpus * PERIOD as f64).round().max(1000.0) as u64
    }
}

/// v1 memory: the limit on memory, and the same on memory + swap (none beyond it) where the
/// kernel counts swap. The kernel refuses a memory limit above the memory + swap one: the order
/// depends on which way it moves.
fn set_v1_memory(dir: &Path, bytes: u64) -> std::io::Result<()> {
    let value = if bytes == u64::MAX { "-1".to_string() } else { bytes.to_string() };
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    if write(&dir.join("memory.limit_in_bytes"), &value).is_err() && memsw.exists() {
        write(&memsw, &value)?;
        return write(&dir.join("memory.limit_in_bytes"), &value);
    }
    if memsw.exists() {
        write(&memsw, &value)?;
    }
    Ok(())
}

/// The processes in the cgroup at `dir` (none when it is not there).
fn members(dir: &Path) -> Vec<i32> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot write {value:?} to {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_puts_each_cap_in_its_controller_and_v2_all_in_one() {
        let caps = Caps { memory: Some(1 << 30), cpu_quota: None, pids: Some(512) };
        let v1 = Hierarchy::V1("/cg".into()).dirs("fl-1", &caps);
        assert_eq!(v1, [("/cg/memory/fleet/fl-1".into(), "memory"), ("/cg/pids/fleet/fl-1".into(), "pids")]);
        assert_eq!(Hierarchy::V2("/cg".into()).dirs("fl-1", &caps), [("/cg/fleet/fl-1".into(), "")]);
    }

    #[test]
    fn cpus_become_a_quota_per_period() {
        assert_eq!(Caps::cpu_quota_of(1.5), 150_000);
        assert_eq!(Caps::cpu_quota_of(0.001), 1000, "the kernel's least quota");
    }
}
