//! Long-running child processes fleet supervises (the LiteLLM proxy, the daemon, process
//! gateways): started detached so they outlive `fleet apply`, identified by pid *and* start time,
//! adopted or stopped by one supervisor (`supervisor`), stopped politely then firmly; and the small
//! helpers around them (ports, logs). The only place fleet spawns a detached process.

pub mod cgroup;
pub mod confine;
pub mod landlock;
mod logs;
pub mod ownership;
mod pid;
mod port;
mod spawn;
pub mod supervisor;
pub mod users;

pub use logs::{log_tail, run_logged};
pub use ownership::stop_all_working_in;
pub use pid::{leaders_working_in, proc_start, stat_fields, working_in, Pid, STAT_PPID, STAT_SESSION, STAT_STATE};
pub use port::{listener_pid, port_holder, port_open};
pub use spawn::{passed_env, path_with, spawn_confined, spawn_detached};
pub use supervisor::strays;

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn detached_process_lifecycle_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello-from-child; exec sleep 30"]);
        let pid = spawn_detached(cmd, &log, "test child").unwrap();
        assert!(pid.alive());
        let t0 = Instant::now();
        while !log_tail(&log, 5).contains("hello-from-child") {
            assert!(t0.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(log_tail(&log, 5).contains("=== fleet: starting test child"));
        assert!(pid.stop(Duration::from_secs(2)));
        assert!(!pid.alive());
        let reused = Pid { pid: std::process::id(), start: 1 };
        assert!(!reused.alive(), "a different start time is a different process");
    }

    #[test]
    fn finds_who_listens_on_a_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(port_open("127.0.0.1", port));
        assert_eq!(listener_pid(port), Some(std::process::id()));
        drop(l);
        assert!(!port_open("127.0.0.1", port));
    }
}
