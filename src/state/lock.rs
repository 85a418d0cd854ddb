//! Who holds the apply lock, and whether they are still alive.

use std::fmt;

use crate::process::proc_start;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// The process's start time in clock ticks since boot (guards against pid reuse).
    pub proc_start: Option<u64>,
    pub host: String,
    pub started_at: String,
    pub command: String,
    /// A random token naming the one session that holds the lock (a process may run several).
    pub owner: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} on host {} since {} ({})", self.pid, self.host, self.started_at, self.command)
    }
}

impl Holder {
    pub fn me(command: &str) -> Self {
        let pid = std::process::id();
        Holder {
            pid,
            proc_start: proc_start(pid),
            host: hostname(),
            started_at: crate::clock::now(),
            command: command.to_string(),
            owner: owner_token(),
        }
    }

    /// Whether this holder is certainly gone: same host, and its pid is dead or reused.
    pub fn is_stale(&self) -> bool {
        if self.host != hostname() {
            return false;
        }
        match proc_start(self.pid) {
            None => true,
            Some(now) => self.proc_start.is_some_and(|then| then != now),
        }
    }
}

/// 128 random bits, hex.
fn owner_token() -> String {
    crate::fsutil::random_hex(16)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_not_stale_and_a_dead_one_is() {
        let me = Holder::me("test");
        assert!(!me.is_stale());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = Holder { pid, proc_start: Some(1), ..me.clone() };
        assert!(dead.is_stale());
        let reused = Holder { proc_start: Some(me.proc_start.unwrap() + 1), ..me.clone() };
        assert!(reused.is_stale());
        let elsewhere = Holder { host: "another-host".into(), pid, ..me };
        assert!(!elsewhere.is_stale(), "a holder on another host cannot be checked, so it is respected");
    }
}
