//! Long-running child processes fleet supervises (the LiteLLM proxy, gateways):
//! start detached so they outlive `fleet apply`, identify them by pid *and*
//! start time, stop them politely then firmly, and read the tail of their logs.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

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

    /// Whether the process works inside `dir`: its working directory is under it, or its
    /// environment names it (how fleet recognises its own processes without a record — never by
    /// name alone).
    pub fn works_in(&self, dir: &Path) -> bool {
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", self.pid)).ok();
        if cwd.is_some_and(|c| c.starts_with(dir)) {
            return true;
        }
        let env = std::fs::read(format!("/proc/{}/environ", self.pid)).unwrap_or_default();
        let needle = dir.display().to_string();
        env.split(|b| *b == 0).any(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=').is_some_and(|(_, v)| Path::new(v).starts_with(&needle))
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

pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).split('\0').filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

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

/// Starts `cmd` in its own session (it survives fleet exiting), stdin closed, stdout and stderr
/// appended to `log` after a header line. The caller decides its environment (`env_clear` +
/// `passed_env` + what it needs).
pub fn spawn_detached(mut cmd: Command, log: &Path, what: &str) -> std::io::Result<Pid> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
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

/// A service's processes of this fleet that its record may not know: the one its pid file names,
/// whoever listens on its port, and the session leaders working in `dir` (its working directory:
/// one spawned by a run killed before it wrote the pid file, and not listening yet), each only
/// when `ours` says it belongs to this fleet (never a process by name alone).
pub fn strays(pid_file: Option<Pid>, port: u16, dir: &Path, ours: impl Fn(Pid) -> bool) -> Vec<Pid> {
    let mut out: Vec<Pid> = pid_file.filter(|p| ours(*p)).into_iter().collect();
    let listener = listener_pid(port).and_then(Pid::of);
    for p in listener.into_iter().chain(leaders_working_in(dir)) {
        if ours(p) && !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The last `lines` lines of a log file (at most 64 KiB read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else { return format!("(no log at {})", path.display()) };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(64 * 1024);
    let _ = f.seek(SeekFrom::Start(from));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether something accepts TCP connections at host:port.
pub fn port_open(host: &str, port: u16) -> bool {
    let Ok(addrs) = (host, port).to_socket_addrs() else { return false };
    addrs.into_iter().any(|a: SocketAddr| TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
}

/// The pid listening on a local TCP port, found through /proc (None if not visible to us).
pub fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue; // not LISTEN
            }
            let local_port = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| target.to_str() == Some(i.as_str())) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// Describes who holds a port, for error messages.
pub fn port_holder(port: u16) -> String {
    match listener_pid(port) {
        Some(pid) => {
            let cmd = cmdline(pid);
            let short: String = cmd.chars().take(160).collect();
            format!("pid {pid} ({short})")
        }
        None => "a process fleet cannot see".to_string(),
    }
}

/// Runs a command to completion, telling `say` pip/npm-style milestones and keeping
/// all output in `log`; on failure the error carries the tail of stderr.
pub async fn run_logged(
    say: &(dyn Fn(&str) + Sync),
    mut cmd: tokio::process::Command,
    log: &Path,
) -> miette::Result<()> {
    let std_cmd = cmd.as_std();
    let what = std::iter::once(std_cmd.get_program())
        .chain(std_cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot run {what}"))?;
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let err = child.stderr.take().expect("piped");
    let err_task = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(err).lines();
        let mut all = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            all.push(l);
        }
        all
    });
    let mut logged = Vec::new();
    while let Ok(Some(line)) = out.next_line().await {
        if line.starts_with("Collecting ")
            || line.starts_with("Installing collected")
            || line.starts_with("Successfully")
        {
            let short: String = line.chars().take(100).collect();
            say(&short);
        }
        logged.push(line);
    }
    let status = child.wait().await.into_diagnostic()?;
    let err_lines = err_task.await.unwrap_or_default();
    logged.extend(err_lines.iter().cloned());
    let _ = std::fs::write(log, logged.join("\n"));
    if status.success() {
        Ok(())
    } else {
        let tail = err_lines[err_lines.len().saturating_sub(15)..].join("\n");
        Err(miette!("{what} failed ({status}); full output in {}:\n{tail}", log.display()))
    }
}

#[cfg(test)]
mod tests {
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
