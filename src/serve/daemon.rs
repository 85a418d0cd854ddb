//! `serve`: the daemon as a process apply runs — started detached (`fleet serve --from-state`),
//! recorded the moment it is spawned, ready when `/healthz` answers from that very process,
//! restarted only when its settings or fleet's binary changed, adopted when already running,
//! stopped by destroy. It holds no secret in its environment.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::driver::{Drift, Driver, Outputs, StepCtx};
use crate::fsutil::write_atomic;
use crate::process::{log_tail, port_holder, port_open, spawn_detached, Pid};
use crate::resource::Resource;
use crate::state::Record;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeInputs {
    /// fleet's own binary, and what it is (size and modification time): a new build restarts it.
    pub exe: PathBuf,
    pub exe_id: String,
    pub fleet: String,
    pub data_dir: PathBuf,
    pub bind: String,
    pub port: u16,
    pub reply_timeout_s: u64,
    pub log: PathBuf,
    pub pid_file: PathBuf,
    /// `trace { otlp … }`: where the daemon exports spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportInputs>,
}

/// `trace { otlp … }` as the daemon exports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportInputs {
    pub url: String,
    /// A secret reference (`env:`/`file:`) to `k=v,k2=v2` headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<String>,
    #[serde(default)]
    pub capture_content: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

impl ServeInputs {
    pub fn url(&self) -> String {
        crate::netaddr::http_url(&self.bind, self.port)
    }
    fn listen(&self) -> String {
        crate::netaddr::join_host_port(&self.bind, self.port)
    }
}

/// What `exe_id` says of a binary.
pub fn exe_id(exe: &Path) -> String {
    match std::fs::metadata(exe) {
        Ok(m) => {
            let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            format!("{}:{}", m.len(), mtime.map(|d| d.as_nanos()).unwrap_or(0))
        }
        Err(_) => "missing".into(),
    }
}

/// `GET /healthz`: the pid of the daemon answering, if one does.
pub async fn answering_pid(url: &str) -> Option<u32> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
    let v: Value = client.get(format!("{url}/healthz")).send().await.ok()?.json().await.ok()?;
    (v["ok"] == true).then(|| v["pid"].as_u64()).flatten().map(|p| p as u32)
}

#[derive(Serialize, Deserialize)]
struct PidFile {
    pid: Pid,
    inputs: ServeInputs,
    ready: bool,
}

pub struct ServeDriver;

impl ServeDriver {
    fn pid_file(s: &ServeInputs) -> Option<PidFile> {
        std::fs::read(&s.pid_file).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// A daemon of this fleet: `fleet serve --from-state --data-dir <this data dir>` (its arguments,
    /// not substrings: a proxy's config path may contain "serve").
    fn ours(pid: Pid, s: &ServeInputs) -> bool {
        let argv = pid.argv();
        let data_dir = s.data_dir.display().to_string();
        pid.alive()
            && argv.windows(2).any(|w| w[0] == "serve" && w[1] == "--from-state")
            && argv.windows(2).any(|w| w[0] == "--data-dir" && w[1] == data_dir)
    }

    async fn healthy(s: &ServeInputs, pid: Pid) -> bool {
        answering_pid(&s.url()).await == Some(pid.pid)
    }

    fn strays(s: &ServeInputs) -> Vec<Pid> {
        crate::process::strays(Self::pid_file(s).map(|f| f.pid), s.port, &s.data_dir, |p| Self::ours(p, s))
    }

    async fn stop_strays(s: &ServeInputs, ctx: &StepCtx) -> miette::Result<()> {
        for p in Self::strays(s) {
            ctx.progress(&format!("stopping a daemon of this fleet (pid {})", p.pid));
            if !p.stop_async(Duration::from_secs(10)).await {
                return Err(miette!("the daemon (pid {}) did not stop", p.pid));
            }
        }
        Ok(())
    }

    fn outputs(s: &ServeInputs, pid: Pid) -> Outputs {
        json!({"pid": pid.pid, "start": pid.start, "url": s.url()})
    }

    fn write_pid_file(s: &ServeInputs, pid: Pid, ready: bool) -> miette::Result<()> {
        let f = PidFile { pid, inputs: s.clone(), ready };
        write_atomic(&s.pid_file, &serde_json::to_vec(&f).expect("serialises"), 0o644)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write {}", s.pid_file.display()))
    }

    async fn start(s: &ServeInputs, ctx: &StepCtx) -> miette::Result<Outputs> {
        Self::stop_strays(s, ctx).await?;
        if port_open(crate::netaddr::connect_host(&s.bind), s.port) {
            return Err(miette!(
                "port {} is already in use by {}; give serve another `listen` address",
                s.port,
                port_holder(s.port)
            ));
        }
        let mut cmd = Command::new(&s.exe);
        cmd.arg("serve")
            .arg("--from-state")
            .arg("--data-dir")
            .arg(&s.data_dir)
            .args(["--listen", &s.listen(), "--fleet", &s.fleet, "--reply-timeout", &s.reply_timeout_s.to_string()])
            .current_dir(&s.data_dir)
            .env_clear()
            .envs(crate::process::passed_env())
            .env("HOME", std::env::var_os("HOME").unwrap_or_else(|| "/".into()));
        // The export's headers, when they come from the environment: that one variable, no other.
        let header_var = s.export.as_ref().and_then(|e| e.headers.as_deref()).and_then(|h| h.strip_prefix("env:"));
        if let Some(v) = header_var.and_then(|n| std::env::var_os(n).map(|v| (n, v))) {
            cmd.env(v.0, v.1);
        }
        if let Some(filter) = std::env::var_os("FLEET_SERVE_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        let pid = spawn_detached(cmd, &s.log, "fleet serve").into_diagnostic().wrap_err("cannot start fleet serve")?;
        // Intent before waiting: a crash from here on leaves a daemon the next run adopts or stops.
        if let Err(e) = Self::write_pid_file(s, pid, false) {
            pid.stop_async(Duration::from_secs(5)).await;
            return Err(e);
        }
        ctx.progress(&format!("started pid {}; waiting for {}/healthz", pid.pid, s.url()));
        let t0 = Instant::now();
        while !Self::healthy(s, pid).await {
            if !pid.alive() {
                return Err(miette!(
                    "fleet serve exited during start; last lines of {}:\n{}",
                    s.log.display(),
                    log_tail(&s.log, 20)
                ));
            }
            if t0.elapsed() > Duration::from_secs(30) {
                pid.stop_async(Duration::from_secs(5)).await;
                return Err(miette!(
                    "fleet serve did not answer within 30 s (stopped it); last lines of {}:\n{}",
                    s.log.display(),
                    log_tail(&s.log, 20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self::write_pid_file(s, pid, true)?;
        Ok(Self::outputs(s, pid))
    }
}

#[async_trait::async_trait]
impl Driver for ServeDriver {
    async fn observe(&self, prior: &Record, _desired: &Resource) -> Drift {
        let Ok(s) = prior.inputs_as::<ServeInputs>() else { return Drift::Update("unreadable record".into()) };
        let Some(pid) = Pid::recorded_in(&prior.outputs) else { return Drift::Update("no pid recorded".into()) };
        if !pid.alive() {
            return Drift::Update(format!("the daemon (pid {}) is not running", pid.pid));
        }
        if !Self::healthy(&s, pid).await {
            return Drift::Update(format!("the daemon (pid {}) does not answer {}/healthz", pid.pid, s.url()));
        }
        Drift::InSync
    }

    async fn observe_unrecorded(&self, desired: &Resource) -> Option<String> {
        let s = desired.inputs_as::<ServeInputs>().ok()?;
        let p = Self::strays(&s).into_iter().next()?;
        Some(format!("an unrecorded daemon of this fleet is running, pid {}; it will be adopted or replaced", p.pid))
    }

    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        let s = r.inputs_as::<ServeInputs>()?;
        if let Some(f) = Self::pid_file(&s).filter(|f| Self::ours(f.pid, &s)) {
            let t0 = Instant::now();
            while !f.ready && f.pid.alive() && !Self::healthy(&s, f.pid).await && t0.elapsed() < Duration::from_secs(30)
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if f.inputs == s && Self::healthy(&s, f.pid).await {
                ctx.progress(&format!("adopting the running daemon (pid {})", f.pid.pid));
                Self::write_pid_file(&s, f.pid, true)?;
                return Ok(Self::outputs(&s, f.pid));
            }
        }
        Self::start(&s, ctx).await
    }

    async fn update(&self, r: &Resource, prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        let s = r.inputs_as::<ServeInputs>()?;
        if let (Some(pid), Ok(old)) = (Pid::recorded_in(&prior.outputs), prior.inputs_as::<ServeInputs>()) {
            if Self::ours(pid, &old) {
                ctx.progress(&format!("stopping the daemon (pid {}) to restart it", pid.pid));
                pid.stop_async(Duration::from_secs(10)).await;
            }
        }
        Self::start(&s, ctx).await
    }

    async fn delete(&self, prior: &Record, ctx: &StepCtx) -> miette::Result<()> {
        let s = prior.inputs_as::<ServeInputs>()?;
        if let Some(pid) = Pid::recorded_in(&prior.outputs).filter(|p| Self::ours(*p, &s)) {
            if !pid.stop_async(Duration::from_secs(10)).await {
                return Err(miette!("the daemon (pid {}) did not stop", pid.pid));
            }
        }
        Self::stop_strays(&s, ctx).await?;
        let _ = std::fs::remove_file(&s.pid_file);
        Ok(())
    }
}
