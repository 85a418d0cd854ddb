//! `litellm.proxy`: the LiteLLM proxy process. Started detached with its secrets
//! resolved into its environment (never into the config), ready when
//! `/health/readiness` answers, restarted when — and only when — its inputs
//! (config content, port, secrets…) change, adopted when already running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::driver::{Drift, Driver, Outputs, StepCtx};
use crate::fleetfile::secret::{Secret, SecretRef};
use crate::fsutil::{sha256_hex, write_atomic};
use crate::process::{listener_pid, log_tail, port_holder, port_open, spawn_detached, Pid};
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

#[derive(Serialize, Deserialize)]
struct PidFile {
    pid: Pid,
    config_sha256: String,
    env_sha256: String,
    /// False from the moment the proxy is spawned until it answered its readiness probe.
    #[serde(default = "yes")]
    ready: bool,
}

fn yes() -> bool {
    true
}

pub struct ProxyDriver;

impl ProxyDriver {
    fn outputs(k: &ProxyInputs, pid: Pid, env_sha: &str) -> Outputs {
        json!({"pid": pid.pid, "start": pid.start, "url": k.url(), "env_sha256": env_sha, "config_sha256": k.config_sha256})
    }

    /// A proxy this fleet started (its command line names our config).
    fn ours(pid: Pid, k: &ProxyInputs) -> bool {
        pid.alive() && pid.cmdline().contains(&k.config.display().to_string())
    }

    /// Ready, and it is this very process answering (not an older one still on the port).
    async fn answering(k: &ProxyInputs, pid: Pid) -> bool {
        ready(&k.url()).await && listener_pid(k.port).and_then(Pid::of).and_then(|p| p.session_leader()) == Some(pid)
    }

    fn pid_file(k: &ProxyInputs) -> Option<PidFile> {
        std::fs::read(&k.pid_file).ok().and_then(|b| serde_json::from_slice::<PidFile>(&b).ok())
    }

    /// This fleet's proxies running outside the record: the pid file's (written the moment a proxy
    /// is spawned, before it is ready), whoever listens on the port, and any session working in the
    /// config's directory (a proxy spawned just before a crash, before its pid file) — each only
    /// with this fleet's config on its command line.
    fn strays(k: &ProxyInputs) -> Vec<Pid> {
        let dir = k.config.parent().unwrap_or(Path::new("/"));
        crate::process::strays(Self::pid_file(k).map(|pf| pf.pid), k.port, dir, |p| Self::ours(p, k))
    }

    async fn stop_strays(k: &ProxyInputs, ctx: &StepCtx) -> miette::Result<()> {
        for p in Self::strays(k) {
            ctx.progress(&format!("stopping an unrecorded proxy of this fleet (pid {})", p.pid));
            Self::stop(p, k).await?;
        }
        Ok(())
    }

    fn write_pid_file(k: &ProxyInputs, pf: &PidFile) -> miette::Result<()> {
        write_atomic(&k.pid_file, &serde_json::to_vec(pf).expect("pid file serialises"), 0o644)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write {}", k.pid_file.display()))
    }

    async fn start(k: &ProxyInputs, ctx: &StepCtx) -> miette::Result<Outputs> {
        Self::stop_strays(k, ctx).await?;
        // A stopped proxy's workers may hold the port a moment longer.
        let t0 = Instant::now();
        while port_open(k.host(), k.port) && t0.elapsed() < Duration::from_secs(10) && Self::strays(k).is_empty() {
            if listener_pid(k.port).and_then(Pid::of).is_some_and(|p| !Self::ours(p, k)) {
                break; // someone else's: said below
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if port_open(k.host(), k.port) {
            return Err(miette!(
                "port {} on {} is already in use by {}; stop it, or give this fleet's litellm another `port`",
                k.port,
                k.host(),
                port_holder(k.port)
            ));
        }
        if !k.exe.is_file() {
            return Err(miette!("litellm executable {} does not exist", k.exe.display()));
        }
        let env = k.resolve_env()?;
        let env_sha = env_digest(&env);
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
        for (var, value) in &env {
            cmd.env(var, value.expose());
        }
        let pid = spawn_detached(cmd, &k.log, "litellm proxy").into_diagnostic().wrap_err("cannot start litellm")?;
        // Intent before waiting: from here on, a crash leaves a proxy the next run finds and adopts or stops.
        let mut pf = PidFile { pid, config_sha256: k.config_sha256.clone(), env_sha256: env_sha.clone(), ready: false };
        if let Err(e) = Self::write_pid_file(k, &pf) {
            pid.stop_async(Duration::from_secs(5)).await;
            return Err(e);
        }
        ctx.progress(&format!("started pid {}, waiting for {}/health/readiness", pid.pid, k.url()));
        let t0 = Instant::now();
        let timeout = Duration::from_secs(k.start_timeout_s);
        loop {
            if !pid.alive() {
                return Err(miette!(
                    "the proxy exited during start; last lines of {}:\n{}",
                    k.log.display(),
                    log_tail(&k.log, 25)
                ));
            }
            if Self::answering(k, pid).await {
                break;
            }
            if t0.elapsed() > timeout {
                pid.stop_async(Duration::from_secs(5)).await;
                return Err(miette!(
                    "the proxy was not ready within {} s (stopped it); last lines of {}:\n{}",
                    k.start_timeout_s,
                    k.log.display(),
                    log_tail(&k.log, 25)
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        pf.ready = true;
        Self::write_pid_file(k, &pf)?;
        Ok(Self::outputs(k, pid, &env_sha))
    }

    /// Stops the proxy at `pid` if it is ours.
    async fn stop(pid: Pid, k: &ProxyInputs) -> miette::Result<()> {
        if Self::ours(pid, k) && !pid.stop_async(Duration::from_secs(15)).await {
            return Err(miette!("the proxy (pid {}) did not stop", pid.pid));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Driver for ProxyDriver {
    async fn observe(&self, prior: &Record, desired: &Resource) -> Drift {
        let Ok(k) = prior.inputs_as::<ProxyInputs>() else { return Drift::Update("unreadable record".into()) };
        let Some(pid) = Pid::recorded_in(&prior.outputs) else { return Drift::Update("no pid recorded".into()) };
        if !pid.alive() {
            return Drift::Update(format!("the proxy (pid {}) is not running", pid.pid));
        }
        if !ready(&k.url()).await {
            return Drift::Update(format!("the proxy (pid {}) does not answer {}/health/readiness", pid.pid, k.url()));
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
        let k = desired.inputs_as::<ProxyInputs>().ok()?;
        let p = Self::strays(&k).into_iter().next()?;
        Some(format!("an unrecorded proxy of this fleet is running, pid {}; it will be adopted or replaced", p.pid))
    }

    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        let k = r.inputs_as::<ProxyInputs>()?;
        // Adopt a proxy this fleet started earlier (state lost, or a crash before it was recorded);
        // `start` stops any other.
        if let Some(pf) = Self::pid_file(&k).filter(|pf| Self::ours(pf.pid, &k)) {
            if !pf.ready {
                // Started by a run that did not see it through: let it finish starting, then look.
                ctx.progress(&format!("waiting for the proxy a previous run started (pid {})", pf.pid.pid));
                let t0 = Instant::now();
                while pf.pid.alive() && !Self::answering(&k, pf.pid).await && t0.elapsed().as_secs() < k.start_timeout_s
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            let env = k.resolve_env()?;
            if pf.config_sha256 == k.config_sha256
                && pf.env_sha256 == env_digest(&env)
                && Self::answering(&k, pf.pid).await
            {
                ctx.progress(&format!("adopting the running proxy (pid {})", pf.pid.pid));
                Self::write_pid_file(&k, &PidFile { ready: true, ..pf })?;
                return Ok(Self::outputs(&k, pf.pid, &env_digest(&env)));
            }
        }
        Self::start(&k, ctx).await
    }

    async fn update(&self, r: &Resource, prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        let k = r.inputs_as::<ProxyInputs>()?;
        if let (Some(pid), Ok(old)) = (Pid::recorded_in(&prior.outputs), prior.inputs_as::<ProxyInputs>()) {
            if pid.alive() {
                ctx.progress(&format!("stopping the proxy (pid {}) to restart it", pid.pid));
            }
            Self::stop(pid, &old).await?;
        }
        Self::start(&k, ctx).await
    }

    /// Stops the recorded proxy and any other of this fleet's (a crash may have left one).
    async fn delete(&self, prior: &Record, ctx: &StepCtx) -> miette::Result<()> {
        let k = prior.inputs_as::<ProxyInputs>()?;
        if let Some(pid) = Pid::recorded_in(&prior.outputs) {
            Self::stop(pid, &k).await?;
        }
        Self::stop_strays(&k, ctx).await?;
        let _ = std::fs::remove_file(&k.pid_file);
        Ok(())
    }
}
