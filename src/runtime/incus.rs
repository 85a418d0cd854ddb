//! The Incus runtime: one container per gateway from the imported image alias,
//! the gateway home on the host mounted at /root (`shift=true`), a proxy device
//! exposing the gateway port on host loopback and another bringing the LiteLLM
//! proxy onto the container's loopback. The container is disposable: stopping a
//! gateway deletes it (force), starting creates it afresh; all state is in the home.

use std::path::PathBuf;
use tokio::process::Command;

use miette::{miette, IntoDiagnostic};
use serde_json::{json, Value};

use super::{Container, Launch, Runtime};

pub struct IncusRuntime;

/// Runs the `incus` CLI (so INCUS_DIR and `incus remote` settings apply); stdout, or stderr as the
/// error. Async (tokio's process), so waiting on Incus never blocks the runtime's threads.
pub async fn incus(args: &[&str]) -> miette::Result<String> {
    Cli::default().run(args).await
}

/// One way to call the `incus` CLI: which client config (INCUS_CONF: fleet's own for other
/// hosts, the caller's default otherwise), what to type at its prompt, and what of the command
/// line an error may repeat (a trust token must not).
#[derive(Default)]
pub struct Cli<'a> {
    pub config: Option<&'a std::path::Path>,
    pub stdin: Option<&'a str>,
    /// Say only the first this-many arguments in an error.
    pub shown_args: Option<usize>,
}

impl Cli<'_> {
    pub async fn run(&self, args: &[&str]) -> miette::Result<String> {
        use tokio::io::AsyncWriteExt;
        let mut cmd = Command::new("incus");
        cmd.args(args).kill_on_drop(true).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        cmd.stdin(if self.stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() });
        if let Some(dir) = self.config {
            cmd.env("INCUS_CONF", dir);
        }
        let mut child = cmd.spawn().map_err(|e| miette!("cannot run incus: {e}; is incus installed?"))?;
        if let (Some(text), Some(mut pipe)) = (self.stdin, child.stdin.take()) {
            let _ = pipe.write_all(text.as_bytes()).await;
        }
        let out = child.wait_with_output().await.map_err(|e| miette!("incus: {e}"))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let shown = &args[..self.shown_args.unwrap_or(args.len()).min(args.len())];
        let more = if shown.len() < args.len() { " …" } else { "" };
        let err = String::from_utf8_lossy(&out.stderr);
        // After a prompt, its own lines are noise in an error; the last line says what went wrong.
        let why = match self.stdin {
            Some(_) => err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim(),
            None => err.trim(),
        };
        Err(miette!("incus {}{more}: {why}", shown.join(" ")))
    }

    /// `incus query` of a REST path as JSON.
    pub async fn query(&self, path: &str) -> miette::Result<Value> {
        let text = self.run(&["query", path]).await?;
        serde_json::from_str(&text).map_err(|e| miette!("incus query {path}: not JSON: {e}"))
    }
}

/// `remote:name` or `name`.
pub fn target(remote: &Option<String>, name: &str) -> String {
    match remote {
        Some(r) => format!("{r}:{name}"),
        None => name.to_string(),
    }
}

fn container(l: &Launch) -> miette::Result<&Container> {
    l.container.as_ref().ok_or_else(|| miette!("gateway {} has no container settings", l.gateway))
}

/// `incus query` of a REST path (on the remote, if any), as JSON; None when it fails.
pub async fn query(remote: &Option<String>, path: &str) -> Option<Value> {
    incus(&["query", &target(remote, path)]).await.ok().and_then(|s| serde_json::from_str(&s).ok())
}

pub async fn instance_state(remote: &Option<String>, name: &str) -> Option<String> {
    query(remote, &format!("/1.0/instances/{name}/state")).await?["status"].as_str().map(str::to_string)
}

#[async_trait::async_trait]
impl Runtime for IncusRuntime {
    async fn start(&self, l: &Launch) -> miette::Result<Value> {
        let c = container(l)?;
        let name = target(&c.remote, &c.name);
        for d in ["state", "logs", "tmp", "workspaces"] {
            std::fs::create_dir_all(l.home.join(d)).into_diagnostic()?;
        }
        if instance_state(&c.remote, &c.name).await.is_some() {
            let _ = incus(&["delete", "--force", &name]).await;
        }
        // Labelled for `fleet gc`: the container is `fleet-<fleet>-<gateway>`.
        let fleet = c.name.strip_prefix("fleet-").and_then(|r| r.strip_suffix(&format!("-{}", l.gateway)));
        let label = format!("user.fleet.fleet={}", fleet.unwrap_or(&c.name));
        incus(&["init", &target(&c.remote, &c.image), &name, "-c", &label, "-q"]).await?;
        let home = format!("source={}", l.home.display());
        incus(&["config", "device", "add", &name, "home", "disk", &home, "path=/root", "shift=true", "-q"]).await?;
        let gw = format!("tcp:127.0.0.1:{}", l.port);
        incus(&[
            "config",
            "device",
            "add",
            &name,
            "gateway",
            "proxy",
            &format!("listen={gw}"),
            &format!("connect={gw}"),
            "-q",
        ])
        .await?;
        for port in &c.forward {
            let addr = format!("tcp:127.0.0.1:{port}");
            incus(&[
                "config",
                "device",
                "add",
                &name,
                &format!("host-{port}"),
                "proxy",
                "bind=instance",
                &format!("listen={addr}"),
                &format!("connect={addr}"),
                "-q",
            ])
            .await?;
        }
        incus(&["start", &name]).await?;
        Ok(json!({"container": c.name, "remote": c.remote}))
    }

    async fn stop(&self, l: &Launch, handle: &Value) -> miette::Result<()> {
        let c = container(l)?;
        let name = handle["container"].as_str().unwrap_or(&c.name);
        if instance_state(&c.remote, name).await.is_some() {
            incus(&["delete", "--force", &target(&c.remote, name)]).await?;
        }
        Ok(())
    }

    async fn running(&self, handle: &Value) -> bool {
        let Some(name) = handle["container"].as_str() else { return false };
        let remote = handle["remote"].as_str().map(str::to_string);
        instance_state(&remote, name).await.as_deref() == Some("Running")
    }

    fn home_inside(&self, _l: &Launch) -> PathBuf {
        PathBuf::from("/root")
    }
}
