//! `litellm.proxy`: the LiteLLM proxy process. Started detached with its secrets
//! resolved into its environment (never into the config), ready when
//! `/health/readiness` answers, restarted when — and only when — its inputs
//! (config content, port, secrets…) change, adopted when already running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use miette::miette;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::driver::{Drift, Driver, Outputs, StepCtx};
use crate::fleetfile::secret::{Secret, SecretRef};
use crate::fsutil::sha256_hex;
use crate::process::supervisor::{self, Place, Service};
use crate::process::{listener_pid, Pid};
use crate::resource::Resource;
use crate::state::Record;

/// What the proxy's inputs say, decoded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyInputs {
    pub exe: PathBuf,
    pub config: PathBuf,
    pub config_sha256: String,
    pub bind: String,
    pub port: u16,
    pub log: PathBuf,
    pub pid_file: PathBuf,
    /// Variable → `env:NAME` / `file:PATH` (resolved at start) or `value:TEXT` (not secret).
    pub env: BTreeMap<String, String>,
    pub start_timeout_s: u64,
}

impl ProxyInputs {
    /// Where fleet reaches the proxy (`netaddr`: a wildcard bind is reached on loopback).
    pub fn url(&self) -> String {
        crate::netaddr::http_url(&self.bind, self.port)
    }
    fn host(&self) -> &str {
        crate::netaddr::connect_host(&self.bind)
    }

    /// Resolves every variable; errors name the reference, never a value.
    fn resolve_env(&self) -> miette::Result<Vec<(String, Secret)>> {
        let mut out = Vec::new();
        for (var, r) in &self.env {
            let value = if let Some(text) = r.strip_prefix("value:") {
                Secret::new(text.to_string())
            } else {
                let sref = SecretRef::parse(r, Path::new("/")).map_err(|e| miette!("{var}: {e}"))?;
                sref.resolve().map_err(|e| miette!("cannot resolve {var} for the proxy: {e}"))?
            };
            out.push((var.clone(), value));
        }
        Ok(out)
    }
}

/// A digest of the resolved environment, so a rotated provider key restarts the proxy.
fn env_digest(env: &[(String, Secret)]) -> String {
    let mut text = String::new();
    for (k, v) in env {
        text.push_str(k);
        text.push('\0');
        text.push_str(&sha256_hex(v.expose().as_bytes()));
        text.push('\n');
    }
    sha256_hex(text.as_bytes())
}

pub async fn ready(url: &str) -> bool {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build();
    let Ok(client) = client else { return false };
    match client.get(format!("{url}/health/readiness")).send().await {
        Ok(r) if r.status().is_success() => {
            r.json::<Value>().await.ok().and_then(|v| v.get("status").and_then(Value::as_str).map(|s| s == "healthy"))
                == Some(true)
        }
        _ => false,
    }
}

/// What a proxy was started with (its pid file records it): a running proxy is adopted only when both match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Started {
    config_sha256: String,
    env_sha256: String,
}

/// The proxy as the supervisor runs it: its inputs and its resolved environment.
struct Proxy<'a> {
    k: &'a ProxyInputs,
    env: Vec<(String, Secret)>,
}

impl<'a> Proxy<'a> {
    fn new(k: &'a ProxyInputs) -> miette::Result<Self> {
        Ok(Proxy { k, env: k.resolve_env()? })
    }

    fn started(&self) -> Started {
        Started { config_sha256: self.k.config_sha256.clone(), env_sha256: env_digest(&self.env) }
    }

    fn outputs(&self, pid: Pid) -> Outputs {
        let k = self.k;
        json!({"pid": pid.pid, "start": pid.start, "url": k.url(), "env_sha256": env_digest(&self.env), "config_sha256": k.config_sha256})
    }
}

/// A proxy this fleet started: its command line names our config.
fn ours(pid: Pid, k: &ProxyInputs) -> bool {
    pid.alive() && pid.cmdline().contains(&k.config.display().to_string())
}

#[async_trait::async_trait]
impl Service for Proxy<'_> {
    type Started = Started;

    fn place(&self) -> Place<'_> {
        let k = self.k;
        Place {
            what: "the proxy",
            label: "litellm proxy",
            pid_file: &k.pid_file,
            log: &k.log,
            host: k.host(),
            port: k.port,
            workdir: k.config.parent().unwrap_or(Path::new("/")),
            start_timeout: Duration::from_secs(k.start_timeout_s),
            stop_grace: Duration::from_secs(15),
            log_lines: 25,
        }
    }

    fn ours(&self, pid: Pid) -> bool {
        ours(pid, self.k)
    }

    /// Ready, and it is this very process answering (not an older one still on the port).
    async fn healthy(&self, pid: Pid) -> bool {
        ready(&self.k.url()).await
            && listener_pid(self.k.port).and_then(Pid::of).and_then(|p| p.session_leader()) == Some(pid)
    }

    /// A plan only asks whether it is ready (finding who listens reads every process's descriptors:
    /// ~20 ms of a no-op apply, measured).
    async fn answers(&self, _pid: Pid) -> bool {
        ready(&self.k.url()).await
    }

    fn health_check(&self) -> String {
        format!("{}/health/readiness", self.k.url())
    }

    fn command(&self) -> miette::Result<Command> {
        let k = self.k;
        if !k.exe.is_file() {
            return Err(miette!("litellm executable {} does not exist", k.exe.display()));
        }
        let mut cmd = Command::new(&k.exe);
        cmd.arg("--config")
            .arg(&k.config)
            .args(["--host", &k.bind, "--port", &k.port.to_string()])
            .current_dir(k.config.parent().unwrap_or(Path::new("/")))
            // Its own secrets (below) and nothing else of the caller's environment.
            .env_clear()
            .envs(crate::process::passed_env())
            .env("HOME", std::env::var_os("HOME").unwrap_or_else(|| "/".into()))
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("PYTHONUNBUFFERED", "1");
        // LiteLLM runs `prisma` by name (database keys): its venv's bin/ goes first on PATH.
        match k.exe.parent().filter(|b| !b.as_os_str().is_empty()) {
            Some(bin) => cmd.env("PATH", crate::process::path_with(bin)),
            None => cmd.env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())),
        };
        for (var, value) in &self.env {
            cmd.env(var, value.expose());
        }
        Ok(cmd)
    }

    fn port_hint(&self) -> String {
        "stop it, or give this fleet's litellm another `port`".into()
    }
}

pub struct ProxyDriver;

impl ProxyDriver {
    /// Starts `proxy` (its secrets resolved once, by `Proxy::new`).
    async fn start(proxy: &Proxy<'_>, ctx: &StepCtx) -> miette::Result<Outputs> {
        let pid = supervisor::start(proxy, &proxy.started(), &|m| ctx.progress(m)).await?;
        Ok(proxy.outputs(pid))
    }
}

#[async_trait::async_trait]
impl Driver for ProxyDriver {
    async fn observe(&self, prior: &Record, desired: &Resource) -> Drift {
        let Ok(k) = prior.inputs_as::<ProxyInputs>() else { return Drift::Update("unreadable record".into()) };
        let proxy = Proxy { k: &k, env: Vec::new() };
        if let Some(why) = supervisor::trouble(&proxy, Pid::recorded_in(&prior.outputs)).await {
            return Drift::Update(why);
        }
        // A rotated secret (same reference, new value) needs a restart too.
        if let Ok(want) = desired.inputs_as::<ProxyInputs>() {
            if let Ok(env) = want.resolve_env() {
                if Some(env_digest(&env).as_str()) != prior.outputs.get("env_sha256").and_then(Value::as_str) {
                    return Drift::Update("a secret in the proxy's environment changed".into());
                }
            }
        }
        Drift::InSync
    }

    async fn observe_unrecorded(&self, desired: &Resource) -> Option<String> {
        supervisor::unrecorded(&Proxy { k: &desired.inputs_as::<ProxyInputs>().ok()?, env: Vec::new() })
    }

    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        let k = r.inputs_as::<ProxyInputs>()?;
        // Adopt a proxy this fleet started earlier (state lost, or a crash before it was recorded);
        // `start` stops any other.
        let proxy = Proxy::new(&k)?;
        let say = |m: &str| ctx.progress(m);
        if let Some(pid) = supervisor::adopt(&proxy, &proxy.started(), &say).await? {
            return Ok(proxy.outputs(pid));
        }
        Self::start(&proxy, ctx).await
    }

    async fn update(&self, r: &Resource, prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        let k = r.inputs_as::<ProxyInputs>()?;
        if let (Some(pid), Ok(old)) = (Pid::recorded_in(&prior.outputs), prior.inputs_as::<ProxyInputs>()) {
            if pid.alive() {
                ctx.progress(&format!("stopping the proxy (pid {}) to restart it", pid.pid));
            }
            supervisor::stop(&Proxy { k: &old, env: Vec::new() }, pid).await?;
        }
        Self::start(&Proxy::new(&k)?, ctx).await
    }

    /// Stops the recorded proxy and any other of this fleet's (a crash may have left one).
    async fn delete(&self, prior: &Record, ctx: &StepCtx) -> miette::Result<()> {
        let k = prior.inputs_as::<ProxyInputs>()?;
        let proxy = Proxy { k: &k, env: Vec::new() };
        supervisor::retire(&proxy, Pid::recorded_in(&prior.outputs), &|m| ctx.progress(m)).await
    }
}
