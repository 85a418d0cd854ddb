//! A process as fleet knows it: pid *and* start time (a reused pid is another process), its
//! command line and working place, stopping its whole session, and the session leaders working
//! inside a directory.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A process as fleet recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pid {
    pub pid: u32,
    pub start: u64,
}

impl Pid {
    /// The process a resource's outputs record (`{"pid": N, "start": T, …}`).
    pub fn recorded_in(outputs: &serde_json::Value) -> Option<Pid> {
        Some(Pid { pid: outputs.get("pid")?.as_u64()? as u32, start: outputs.get("start")?.as_u64()? })
    }

    /// Whether this very process (not a later one that reused the pid) still runs.
    pub fn alive(&self) -> bool {
        proc_start(self.pid) == Some(self.start) && !is_zombie(self.pid)
    }

    pub fn cmdline(&self) -> String {
        cmdline(self.pid)
    }

    /// Its arguments, one by one.
    pub fn argv(&self) -> Vec<String> {
        std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The real uid it runs as.
    pub fn uid(&self) -> Option<u32> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. True if it is gone.
    pub fn stop(&self, grace: Duration) -> bool {
        if !self.alive() {
            return true;
        }
        // The process leads its own session: signal the whole group so children go too. A group
        // that was stopped (SIGSTOP) is let go on, so that it can act on the TERM.
        signal_group(self.pid, libc::SIGTERM);
        signal_group(self.pid, libc::SIGCONT);
        let t0 = Instant::now();
        while t0.elapsed() < grace {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        signal_group(self.pid, libc::SIGKILL);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `stop` for async code: the waiting happens on a blocking thread, not on the runtime's.
    pub async fn stop_async(self, grace: Duration) -> bool {
        tokio::task::spawn_blocking(move || self.stop(grace)).await.unwrap_or(false)
    }

    /// The process with this pid now, if any.
    pub fn of(pid: u32) -> Option<Pid> {
        proc_start(pid).map(|start| Pid { pid, start })
    }

    /// The leader of this process's session (fleet starts every child as a session leader, so
    /// stopping the leader's group stops its workers too).
    pub fn session_leader(&self) -> Option<Pid> {
        Pid::of(stat_fields(self.pid)?.get(STAT_SESSION)?.parse().ok()?)
    }

    /// Whether the process works inside `dir`: its working directory is under it, or one of the
    /// variables fleet gives its children names it (`HOME`, `TMPDIR`, `OPENCLAW_*`, `FLEET_*`) —
    /// not any variable (an `OLDPWD` says where a shell was, not whose it is). Where a process
    /// works is not whose it is: `ownership::why_ours` says that.
    pub fn works_in(&self, dir: &Path) -> bool {
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", self.pid)).ok();
        if cwd.is_some_and(|c| c.starts_with(dir)) {
            return true;
        }
        let env = std::fs::read(format!("/proc/{}/environ", self.pid)).unwrap_or_default();
        let fleets = |k: &str| matches!(k, "HOME" | "TMPDIR") || k.starts_with("OPENCLAW_") || k.starts_with("FLEET_");
        env.split(|b| *b == 0).any(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=').is_some_and(|(k, v)| fleets(k) && Path::new(v).starts_with(dir))
        })
    }
}

/// The session leaders (fleet starts every child as one) of processes working inside `dir` — a
/// process spawned just before a crash, before anything recorded it or it listened anywhere. A
/// leader descending from another one found (a worker a gateway started in a session of its own)
/// is left out: stopping its ancestor's group stops it.
pub fn leaders_working_in(dir: &Path) -> Vec<Pid> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Some(p) = Pid::of(pid).filter(|p| p.alive() && p.works_in(dir)) else { continue };
        if let Some(leader) = p.session_leader().filter(|l| l.works_in(dir)) {
            if !found.contains(&leader) {
                found.push(leader);
            }
        }
    }
    let ancestors = |p: &Pid| {
        let mut up = Vec::new();
        let mut at = p.pid;
        while let Some(ppid) = stat_fields(at).and_then(|f| f.get(STAT_PPID)?.parse::<u32>().ok()).filter(|pp| *pp > 1)
        {
            up.push(ppid);
            at = ppid;
            if up.len() > 64 {
                break;
            }
        }
        up
    };
    found.iter().filter(|p| !ancestors(p).iter().any(|a| found.iter().any(|f| f.pid == *a))).copied().collect()
}

/// Every live process working inside `dir` (`Pid::works_in`; whose it is: `ownership`).
pub fn working_in(dir: &Path) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| *pid != std::process::id())
        .filter_map(Pid::of)
        .filter(|p| p.alive() && p.works_in(dir))
        .collect()
}

fn signal_group(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
    unsafe {
        if libc::kill(-(pid as i32), sig) != 0 {
            libc::kill(pid as i32, sig);
        }
    }
}

/// Indexes into `stat_fields`: field 3 (state), 4 (ppid), 6 (session) and 22 (start time) of
/// /proc/<pid>/stat.
pub const STAT_STATE: usize = 0;
pub const STAT_PPID: usize = 1;
pub const STAT_SESSION: usize = 3;
const STAT_START: usize = 19;

/// The fields of /proc/<pid>/stat after the command name (None when there is no such process). The
/// name (field 2) may contain spaces and parentheses, so the split is after the last ')'.
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat[stat.rfind(')')? + 2..].split(' ').map(str::to_string).collect())
}

fn is_zombie(pid: u32) -> bool {
    stat_fields(pid).is_none_or(|f| f.get(STAT_STATE).is_some_and(|s| s == "Z"))
}

/// Field 22 of /proc/<pid>/stat (start time in clock ticks), or None when there is no such process.
pub fn proc_start(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(STAT_START)?.parse().ok()
}

pub(super) fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).split('\0').filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
