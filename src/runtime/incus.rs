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
    let out = Command::new("incus")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| miette!("cannot run incus: {e}; is incus installed?"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(miette!("incus {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
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
