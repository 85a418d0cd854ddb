//! Starting a detached child: its own session (it outlives fleet), only the environment it is
//! given, its output appended to a log.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::confine::Confinement;
use super::pid::{proc_start, Pid};

/// What a process fleet starts may take from fleet's own environment: locale, time zone, the CA
/// bundle variables and the outbound proxy settings — never anything else of the caller's (API
/// keys, tokens). Everything else a child gets is set explicitly by whoever starts it.
pub fn passed_env() -> Vec<(String, String)> {
    const NAMES: [&str; 14] = [
        "LANG",
        "LANGUAGE",
        "TZ",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "NODE_EXTRA_CA_CERTS",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    ];
    std::env::vars().filter(|(k, _)| NAMES.contains(&k.as_str()) || k.starts_with("LC_")).collect()
}

/// PATH with `bin` first.
pub fn path_with(bin: &Path) -> String {
    let rest = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    format!("{}:{rest}", bin.display())
}

/// `spawn_detached` for a child that runs confined (`confine`): its identity, no new privileges,
/// its Landlock ruleset, its limits, all in place before its exec.
pub fn spawn_confined(mut cmd: Command, log: &Path, what: &str, confine: &Confinement) -> std::io::Result<Pid> {
    confine.install(&mut cmd);
    spawn_detached(cmd, log, what)
}

/// Starts `cmd` in its own session (it survives fleet exiting), stdin closed, stdout and stderr
/// appended to `log` after a header line. The caller decides its environment (`env_clear` +
/// `passed_env` + what it needs).
pub fn spawn_detached(mut cmd: Command, log: &Path, what: &str) -> std::io::Result<Pid> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // The log is fleet's (its child writes through the descriptor it inherits): 0600.
    let mut out = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(log)?;
    writeln!(out, "\n=== fleet: starting {what} at {} ===", crate::clock::now())?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The crash tests' hook for the window between the fork and the exec: the child kills fleet,
    // then holds its exec for 4 s — a run killed mid-spawn on a busy machine, whose child is still
    // a copy of fleet (fleet's command line) while the next run looks for strays.
    if std::env::var("FLEET_DEBUG_KILL_DURING_SPAWN").is_ok_and(|w| w == what) {
        // SAFETY: getppid, kill and nanosleep are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::kill(libc::getppid(), libc::SIGKILL);
                let t = libc::timespec { tv_sec: 4, tv_nsec: 0 };
                libc::nanosleep(&t, std::ptr::null_mut());
                Ok(())
            });
        }
    }
    let child = cmd.spawn()?;
    let pid = child.id();
    // Reap it in the background if it dies while we still run; it is not our job to wait on it.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    let start = proc_start(pid).unwrap_or(0);
    // The crash tests' hook: die as a kill -9 would, right after this spawn and before the caller
    // records it anywhere (the narrowest window a crash can hit).
    if std::env::var("FLEET_DEBUG_KILL_AFTER_SPAWN").is_ok_and(|w| w == what) {
        // SAFETY: kill(2) on our own pid.
        unsafe { libc::kill(std::process::id() as i32, libc::SIGKILL) };
    }
    Ok(Pid { pid, start })
}
