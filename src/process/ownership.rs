//! Whether a process found in one of a fleet's directories is one fleet started — never a process
//! merely sitting there (a shell `cd`'d into the data dir, an editor on a log, a tool whose
//! `OLDPWD` points there). Fleet's are: a process running as one of this fleet's gateway users
//! (fleet as root gives each gateway its own), an OpenClaw gateway or worker (Node) working inside
//! the directory, the LiteLLM proxy (Python) or the daemon (fleet) whose command line names a path
//! inside it. The answer says why, for `fleet gc` to show.

use std::path::Path;
use std::time::{Duration, Instant};

use super::pid::{working_in, Pid};

/// Every live process of fleet's working inside `dir` — never one merely sitting there.
pub fn fleets_working_in(dir: &Path) -> Vec<Pid> {
    working_in(dir).into_iter().filter(|p| why_ours(*p, dir).is_some()).collect()
}

/// Stops whatever of fleet's still works inside `dir` once its leader is gone: the workers a gateway starts in
/// sessions of their own outlive its group's signal for a moment, or for good (seen: a destroy
/// killed right after the gateway's delete, and the next destroy returned while one still ran).
/// TERM, then KILL what is left after `grace`; the processes still there after that (none, normally).
pub fn stop_all_working_in(dir: &Path, grace: Duration) -> Vec<Pid> {
    let signal = |sig: i32| {
        for p in fleets_working_in(dir) {
            // SAFETY: kill(2) on a process just seen alive, working in `dir`.
            unsafe { libc::kill(p.pid as i32, sig) };
        }
    };
    let gone_within = |within: Duration| {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if fleets_working_in(dir).is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    signal(libc::SIGTERM);
    if gone_within(grace) {
        return Vec::new();
    }
    signal(libc::SIGKILL);
    gone_within(Duration::from_secs(5));
    fleets_working_in(dir)
}

/// Why `p` is one of the processes fleet starts in `dir`; None when it is not.
pub fn why_ours(p: Pid, dir: &Path) -> Option<String> {
    let gateway_user = p.uid().and_then(super::users::gateway_user_by_uid);
    if let Some((user, home)) = gateway_user.filter(|(_, home)| home.starts_with(dir)) {
        return Some(format!("runs as {user}, the user of the gateway whose home is {}", home.display()));
    }
    let argv = p.argv();
    let exe = std::fs::read_link(format!("/proc/{}/exe", p.pid)).ok();
    let exe_name = exe
        .as_deref()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| argv.first().and_then(|a| Path::new(a).file_name()).map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let names_dir = argv.iter().any(|a| a.split('=').any(|part| Path::new(part).starts_with(dir)));
    if exe_name == "node" && p.works_in(dir) {
        return Some(format!("an OpenClaw process (Node) working in {}", dir.display()));
    }
    if exe_name.starts_with("python") && names_dir {
        return Some(format!("the LiteLLM proxy (Python), its command line names {}", dir.display()));
    }
    let fleet_exe = std::env::current_exe().ok();
    let is_fleet = exe_name == "fleet" || (exe.is_some() && exe == fleet_exe);
    if is_fleet && argv.iter().any(|a| a == "serve") && names_dir {
        return Some(format!("fleet's daemon, its command line names {}", dir.display()));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    fn spawn(program: &str, args: &[&str], cwd: &Path, env: &[(&str, &Path)]) -> std::process::Child {
        let mut c = Command::new(program);
        c.args(args).current_dir(cwd).stdout(Stdio::null()).stderr(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.spawn().unwrap()
    }

    fn pid(c: &std::process::Child) -> Pid {
        let t0 = std::time::Instant::now();
        loop {
            // Wait for the exec: until then the child is a copy of this test binary.
            let p = Pid::of(c.id()).unwrap();
            if p.argv().first().is_some_and(|a| !a.contains("fleet-")) || t0.elapsed().as_secs() > 5 {
                return p;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_process_sitting_in_the_directory_is_not_fleets_and_a_python_naming_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        // A shell sitting in the data dir, its OLDPWD pointing there too: an operator's, not fleet's.
        let mut shell = spawn("sh", &["-c", "sleep 30"], data, &[("OLDPWD", data)]);
        assert!(pid(&shell).works_in(data), "it does sit there");
        assert_eq!(why_ours(pid(&shell), data), None);
        // A Python whose command line names a file in it: what the LiteLLM proxy looks like.
        let config = data.join("litellm/config.yaml");
        let arg = config.display().to_string();
        let mut py = spawn("/usr/bin/python3", &["-c", "import time; time.sleep(30)", &arg], Path::new("/"), &[]);
        let why = why_ours(pid(&py), data).unwrap_or_default();
        assert!(why.contains("LiteLLM proxy"), "{why}");
        // The same Python not naming it, only sitting there: not fleet's.
        let mut idle = spawn("/usr/bin/python3", &["-c", "import time; time.sleep(30)"], data, &[]);
        assert_eq!(why_ours(pid(&idle), data), None);
        for c in [&mut shell, &mut py, &mut idle] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
