//! `serve`: the daemon as a process apply runs — started detached (`fleet serve --from-state`),
//! recorded the moment it is spawned, ready when `/healthz` answers from that very process,
//! restarted only when its settings or fleet's binary changed, adopted when already running,
//! stopped by destroy. It holds no secret in its environment.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::driver::{Drift, Driver, Outputs, StepCtx};
use crate::process::supervisor::{self, Place, Service};
use crate::process::Pid;
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

/// What a daemon was started with (its pid file records it): a running daemon is adopted only when
/// it was started with the same settings and binary.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
struct Started {
    inputs: ServeInputs,
}

/// The daemon as the supervisor runs it.
struct Daemon<'a>(&'a ServeInputs);

impl Daemon<'_> {
    fn started(&self) -> Started {
        Started { inputs: self.0.clone() }
    }

    fn outputs(&self, pid: Pid) -> Outputs {
        json!({"pid": pid.pid, "start": pid.start, "url": self.0.url()})
    }
}

#[async_trait::async_trait]
impl Service for Daemon<'_> {
    type Started = Started;

    fn place(&self) -> Place<'_> {
        let s = self.0;
        Place {
            what: "the daemon",
            label: "fleet serve",
            pid_file: &s.pid_file,
            log: &s.log,
            host: crate::netaddr::connect_host(&s.bind),
            port: s.port,
            workdir: &s.data_dir,
            start_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            log_lines: 20,
        }
    }

    /// A daemon of this fleet: `fleet serve --from-state --data-dir <this data dir>` (its arguments,
    /// not substrings: a proxy's config path may contain "serve").
    fn ours(&self, pid: Pid) -> bool {
        let argv = pid.argv();
        let data_dir = self.0.data_dir.display().to_string();
        pid.alive()
            && argv.windows(2).any(|w| w[0] == "serve" && w[1] == "--from-state")
            && argv.windows(2).any(|w| w[0] == "--data-dir" && w[1] == data_dir)
    }

    async fn healthy(&self, pid: Pid) -> bool {
        answering_pid(&self.0.url()).await == Some(pid.pid)
    }

    fn health_check(&self) -> String {
        format!("{}/healthz", self.0.url())
    }

    fn command(&self) -> miette::Result<Command> {
        let s = self.0;
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
        Ok(cmd)
    }

    fn port_hint(&self) -> String {
        "give serve another `listen` address".into()
    }
}

pub struct ServeDriver;

impl ServeDriver {
    async fn start(s: &ServeInputs, ctx: &StepCtx) -> miette::Result<Outputs> {
        let d = Daemon(s);
        let pid = supervisor::start(&d, &d.started(), &|m| ctx.progress(m)).await?;
        Ok(d.outputs(pid))
    }
}

#[async_trait::async_trait]
impl Driver for ServeDriver {
    async fn observe(&self, prior: &Record, _desired: &Resource) -> Drift {
        let Ok(s) = prior.inputs_as::<ServeInputs>() else { return Drift::Update("unreadable record".into()) };
        match supervisor::trouble(&Daemon(&s), Pid::recorded_in(&prior.outputs)).await {
            Some(why) => Drift::Update(why),
            None => Drift::InSync,
        }
    }

    async fn observe_unrecorded(&self, desired: &Resource) -> Option<String> {
        supervisor::unrecorded(&Daemon(&desired.inputs_as::<ServeInputs>().ok()?))
    }

    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        let s = r.inputs_as::<ServeInputs>()?;
        let d = Daemon(&s);
        if let Some(pid) = supervisor::adopt(&d, &d.started(), &|m| ctx.progress(m)).await? {
            return Ok(d.outputs(pid));
        }
        Self::start(&s, ctx).await
    }

    async fn update(&self, r: &Resource, prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        let s = r.inputs_as::<ServeInputs>()?;
        if let (Some(pid), Ok(old)) = (Pid::recorded_in(&prior.outputs), prior.inputs_as::<ServeInputs>()) {
            let d = Daemon(&old);
            if d.ours(pid) {
                ctx.progress(&format!("stopping the daemon (pid {}) to restart it", pid.pid));
                supervisor::stop(&d, pid).await?;
            }
        }
        Self::start(&s, ctx).await
    }

    async fn delete(&self, prior: &Record, ctx: &StepCtx) -> miette::Result<()> {
        let s = prior.inputs_as::<ServeInputs>()?;
        supervisor::retire(&Daemon(&s), Pid::recorded_in(&prior.outputs), &|m| ctx.progress(m)).await
    }
}
