//! One supervised detached process — the LiteLLM proxy, the daemon, a process gateway — written
//! once: a pid file written at the spawn (before anything waits on the process, so a crash from
//! there on leaves a process the next run finds), adopted when it is ours, started with what is
//! asked and healthy, else stopped; this fleet's strays (a pid file's, the port's listener, a
//! session working in its directory) found and stopped — each only when `ours` says so, never a
//! process by name alone; one start-and-wait that gives the tail of the log when it fails.
//!
//! A kind of process says what is particular to it (`Service`); the functions here do the rest.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::logs::log_tail;
use super::pid::{leaders_working_in, Pid};
use super::port::{listener_pid, port_holder, port_open};
use super::spawn::spawn_detached;

/// Where a service is and how long its starts and stops may take.
pub struct Place<'a> {
    /// In messages: "the proxy", "the daemon".
    pub what: &'a str,
    /// The spawn's name (the log's header line; the crash tests' spawn hook).
    pub label: &'a str,
    pub pid_file: &'a Path,
    pub log: &'a Path,
    /// Where fleet connects to it, and its port.
    pub host: &'a str,
    pub port: u16,
    /// Its working directory: a session working inside it is one of this fleet's.
    pub workdir: &'a Path,
    pub start_timeout: Duration,
    pub stop_grace: Duration,
    /// Lines of its log an error carries.
    pub log_lines: usize,
}

/// What is particular to one kind of supervised process.
#[async_trait::async_trait]
pub trait Service: Send + Sync {
    /// What the pid file records beside the pid: what the process was started with. A running
    /// process is adopted only when this equals what is wanted now.
    type Started: Serialize + DeserializeOwned + PartialEq + Clone + Send + Sync;
    fn place(&self) -> Place<'_>;
    /// Whether `pid` is this fleet's process of this service (its command line, never its name).
    fn ours(&self, pid: Pid) -> bool;
    /// Whether it answers its health check — and it is this very process that answers.
    async fn healthy(&self, pid: Pid) -> bool;
    /// For a plan's look at a recorded process: whether it answers. `healthy` unless a service has a
    /// cheaper check that says enough there (the proxy: its readiness, without finding who listens).
    async fn answers(&self, pid: Pid) -> bool {
        self.healthy(pid).await
    }
    /// What the health check asks (in progress lines).
    fn health_check(&self) -> String;
    /// Its command, environment and working directory set: `env_clear` + `passed_env` + its own.
    fn command(&self) -> miette::Result<Command>;
    /// The hint after "port N is already in use by …".
    fn port_hint(&self) -> String;
}

/// The pid file: the process, whether it has answered its health check yet, and what it was
/// started with (its fields beside `pid` and `ready`).
#[derive(Serialize, Deserialize)]
pub struct PidFile<S> {
    pub pid: Pid,
    /// False from the spawn until it answered its health check.
    #[serde(default = "yes")]
    pub ready: bool,
    #[serde(flatten)]
    pub started: S,
}

fn yes() -> bool {
    true
}

/// Progress lines go to whoever runs the step.
pub type Say<'a> = &'a (dyn Fn(&str) + Sync);

pub fn read_pid_file<S: Service>(s: &S) -> Option<PidFile<S::Started>> {
    std::fs::read(s.place().pid_file).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

fn write_pid_file<S: Service>(s: &S, pid: Pid, ready: bool, started: &S::Started) -> miette::Result<()> {
    let file = s.place().pid_file;
    let doc = PidFile { pid, ready, started: started.clone() };
    crate::fsutil::write_atomic(file, &serde_json::to_vec(&doc).expect("a pid file serialises"), 0o644)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", file.display()))
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

/// This service's strays (`strays`), found by its pid file, its port and its directory.
pub fn strays_of<S: Service>(s: &S) -> Vec<Pid> {
    let p = s.place();
    strays(read_pid_file(s).map(|f| f.pid), p.port, p.workdir, |pid| s.ours(pid))
}

/// Stops `pid` if it is ours (its whole session: TERM, then KILL after the grace).
pub async fn stop<S: Service>(s: &S, pid: Pid) -> miette::Result<()> {
    let p = s.place();
    if s.ours(pid) && !pid.stop_async(p.stop_grace).await {
        return Err(miette!("{} (pid {}) did not stop", p.what, pid.pid));
    }
    Ok(())
}

/// Stops every stray of this service, saying so — one still being spawned by a run that died
/// included (`SpawnLock`).
pub async fn stop_strays<S: Service>(s: &S, say: Say<'_>) -> miette::Result<()> {
    let _spawning = SpawnLock::take(s.place().pid_file).await?;
    stop_strays_seen(s, say).await
}

/// `stop_strays` for a caller that holds the spawn lock.
async fn stop_strays_seen<S: Service>(s: &S, say: Say<'_>) -> miette::Result<()> {
    for pid in strays_of(s) {
        say(&format!("stopping {} of this fleet that the state does not record (pid {})", s.place().what, pid.pid));
        stop(s, pid).await?;
    }
    Ok(())
}

/// The process its pid file names, when it is ours, was started with `want` and is healthy (one
/// still starting — a run killed while it waited — is given its start timeout first). Its pid file
/// then says ready. None: nothing to adopt (`start` stops whatever runs).
pub async fn adopt<S: Service>(s: &S, want: &S::Started, say: Say<'_>) -> miette::Result<Option<Pid>> {
    let Some(f) = read_pid_file(s).filter(|f| s.ours(f.pid)) else { return Ok(None) };
    let p = s.place();
    if !f.ready {
        say(&format!("waiting for {} a previous run started (pid {}) to finish starting", p.what, f.pid.pid));
        let t0 = Instant::now();
        while f.pid.alive() && !s.healthy(f.pid).await && t0.elapsed() < p.start_timeout {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if f.started != *want || !s.healthy(f.pid).await {
        return Ok(None);
    }
    say(&format!("adopting the running {} (pid {})", p.what.trim_start_matches("the "), f.pid.pid));
    write_pid_file(s, f.pid, true, want)?;
    Ok(Some(f.pid))
}

/// Held from a search for strays to the pid file of the process started after it. The lock file's
/// descriptor is close-on-exec, so a child spawned under it holds the lock too until its exec: a
/// run killed between a fork and its exec leaves a child that is still a copy of fleet (fleet's
/// command line, not yet recognisable as this service), and the next run's search waits for it to
/// become what it will be instead of missing it and starting a second one beside it.
struct SpawnLock {
    _file: std::fs::File,
}

impl SpawnLock {
    async fn take(pid_file: &Path) -> miette::Result<SpawnLock> {
        use std::os::fd::AsRawFd;
        let path = pid_file.with_extension("spawning");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).into_diagnostic()?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot open {}", path.display()))?;
        let t0 = Instant::now();
        // SAFETY: flock(2) on a descriptor this function owns.
        while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            if t0.elapsed() > Duration::from_secs(60) {
                return Err(miette!(
                    "{} is still locked after 60 s: a process another run of fleet began to spawn never started",
                    path.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(SpawnLock { _file: file })
    }
}

/// Starts the service with `started`: stops this fleet's strays first, refuses a port someone else
/// holds, records the process at its spawn (not ready), waits until it is healthy (the tail of its
/// log when it exits or times out — then it is stopped), and records it ready.
pub async fn start<S: Service>(s: &S, started: &S::Started, say: Say<'_>) -> miette::Result<Pid> {
    let p = s.place();
    let spawning = SpawnLock::take(p.pid_file).await?;
    stop_strays_seen(s, say).await?;
    // A stopped process's workers may hold the port a moment longer.
    let t0 = Instant::now();
    while port_open(p.host, p.port) && t0.elapsed() < Duration::from_secs(10) {
        if listener_pid(p.port)
            .and_then(Pid::of)
            .is_some_and(|l| !s.ours(l) && l.session_leader().is_none_or(|l| !s.ours(l)))
        {
            break; // someone else's: said below
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if port_open(p.host, p.port) {
        return Err(miette!(
            "port {} on {} is already in use by {}; {}",
            p.port,
            p.host,
            port_holder(p.port),
            s.port_hint()
        ));
    }
    let cmd = s.command()?;
    let pid =
        spawn_detached(cmd, p.log, p.label).into_diagnostic().wrap_err_with(|| format!("cannot start {}", p.label))?;
    // Intent before waiting: from here on, a crash leaves a process the next run adopts or stops.
    if let Err(e) = write_pid_file(s, pid, false, started) {
        pid.stop_async(Duration::from_secs(5)).await;
        return Err(e);
    }
    drop(spawning);
    say(&format!("started pid {}, waiting for {}", pid.pid, s.health_check()));
    let t0 = Instant::now();
    while !s.healthy(pid).await {
        if !pid.alive() {
            return Err(miette!(
                "{} exited during start; last lines of {}:\n{}",
                p.what,
                p.log.display(),
                log_tail(p.log, p.log_lines)
            ));
        }
        if t0.elapsed() > p.start_timeout {
            pid.stop_async(Duration::from_secs(5)).await;
            return Err(miette!(
                "{} did not answer within {} s (stopped it); last lines of {}:\n{}",
                p.what,
                p.start_timeout.as_secs(),
                p.log.display(),
                log_tail(p.log, p.log_lines)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    write_pid_file(s, pid, true, started)?;
    Ok(pid)
}

/// Why the recorded process is not what the state says (None: it runs and answers its health check).
pub async fn trouble<S: Service>(s: &S, recorded: Option<Pid>) -> Option<String> {
    let p = s.place();
    let Some(pid) = recorded else { return Some("no pid recorded".into()) };
    if !pid.alive() {
        return Some(format!("{} (pid {}) is not running", p.what, pid.pid));
    }
    if !s.answers(pid).await {
        return Some(format!("{} (pid {}) does not answer {}", p.what, pid.pid, s.health_check()));
    }
    None
}

/// What a plan says of a process of this service that the state does not record, if one runs.
pub fn unrecorded<S: Service>(s: &S) -> Option<String> {
    let pid = strays_of(s).into_iter().next()?;
    let what = s.place().what.trim_start_matches("the ");
    Some(format!("an unrecorded {what} of this fleet is running, pid {}; it will be adopted or replaced", pid.pid))
}

/// Stops the recorded process and every stray, and removes the pid file: the service is gone.
pub async fn retire<S: Service>(s: &S, recorded: Option<Pid>, say: Say<'_>) -> miette::Result<()> {
    if let Some(pid) = recorded {
        stop(s, pid).await?;
    }
    stop_strays(s, say).await?;
    let _ = std::fs::remove_file(s.place().pid_file);
    Ok(())
}
