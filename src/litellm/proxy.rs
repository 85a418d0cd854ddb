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
use crate::process::{log_tail, port_holder, port_open, spawn_detached, Pid};
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
}

pub struct ProxyDriver;

impl ProxyDriver {
    fn outputs(k: &ProxyInputs, pid: Pid, env_sha: &str) -> Outputs {
        json!({"pid": pid.pid, "start": pid.start, "url": k.url(), "env_sha256": env_sha, "config_sha256": k.config_sha256})
    }

    fn recorded_pid(outputs: &Value) -> Option<Pid> {
        Some(Pid { pid: outputs.get("pid")?.as_u64()? as u32, start: outputs.get("start")?.as_u64()? })
    }

    /// A proxy this fleet started (its command line names our config).
    fn ours(pid: Pid, k: &ProxyInputs) -> bool {
        pid.alive() && pid.cmdline().contains(&k.config.display().to_string())
    }

    async fn start(k: &ProxyInputs, ctx: &StepCtx) -> miette::Result<Outputs> {
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
            if ready(&k.url()).await {
                break;
            }
            if t0.elapsed() > timeout {
                pid.stop(Duration::from_secs(5));
                return Err(miette!(
                    "the proxy was not ready within {} s (stopped it); last lines of {}:\n{}",
                    k.start_timeout_s,
                    k.log.display(),
                    log_tail(&k.log, 25)
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let pf = PidFile { pid, config_sha256: k.config_sha256.clone(), env_sha256: env_sha.clone() };
        write_atomic(&k.pid_file, &serde_json::to_vec(&pf).expect("pid file serialises"), 0o644).into_diagnostic()?;
        Ok(Self::outputs(k, pid, &env_sha))
    }

    /// Stops the proxy at `pid` if it is ours.
    fn stop(pid: Pid, k: &ProxyInputs) -> miette::Result<()> {
        if Self::ours(pid, k) && !pid.stop(Duration::from_secs(15)) {
            return Err(miette!("the proxy (pid {}) did not stop", pid.pid));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Driver for ProxyDriver {
    async fn observe(&self, prior: &Record, desired: &Resource) -> Drift {
        let Ok(k) = prior.inputs_as::<ProxyInputs>() else { return Drift::Update("unreadable record".into()) };
        let Some(pid) = Self::recorded_pid(&prior.outputs) else { return Drift::Update("no pid recorded".into()) };
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

    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        let k = r.inputs_as::<ProxyInputs>()?;
        // Adopt a proxy this fleet started earlier (state lost, or a crash before it was recorded).
        if let Some(pf) = std::fs::read(&k.pid_file).ok().and_then(|b| serde_json::from_slice::<PidFile>(&b).ok()) {
            if Self::ours(pf.pid, &k) {
                let env = k.resolve_env()?;
                if pf.config_sha256 == k.config_sha256 && pf.env_sha256 == env_digest(&env) && ready(&k.url()).await {
                    ctx.progress(&format!("adopting the running proxy (pid {})", pf.pid.pid));
                    return Ok(Self::outputs(&k, pf.pid, &pf.env_sha256));
                }
                Self::stop(pf.pid, &k)?;
            }
        }
        Self::start(&k, ctx).await
    }

    async fn update(&self, r: &Resource, prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        let k = r.inputs_as::<ProxyInputs>()?;
        if let (Some(pid), Ok(old)) = (Self::recorded_pid(&prior.outputs), prior.inputs_as::<ProxyInputs>()) {
            if pid.alive() {
                ctx.progress(&format!("stopping the proxy (pid {}) to restart it", pid.pid));
            }
            Self::stop(pid, &old)?;
        }
        Self::start(&k, ctx).await
    }

    async fn delete(&self, prior: &Record, _ctx: &StepCtx) -> miette::Result<()> {
        let k = prior.inputs_as::<ProxyInputs>()?;
        if let Some(pid) = Self::recorded_pid(&prior.outputs) {
            Self::stop(pid, &k)?;
        }
        let _ = std::fs::remove_file(&k.pid_file);
        Ok(())
    }
}
