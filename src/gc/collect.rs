//! Destroying one orphan, by its id.

use std::time::Duration;

use miette::{miette, IntoDiagnostic};

use super::orphans::Orphan;
use crate::archive::{About, Footprint};
use crate::layout::Layout;
use crate::openclaw::client::GatewayRef;
use crate::process::Pid;

/// Destroys `o`; says what was done.
pub async fn destroy(layout: &Layout, gateways: &[GatewayRef], o: &Orphan) -> miette::Result<String> {
    match o {
        Orphan::Process { pid, start, .. } => {
            let p = Pid { pid: *pid, start: *start };
            if !p.alive() {
                return Ok("already gone".into());
            }
            match p.stop_async(Duration::from_secs(10)).await {
                true => Ok("stopped (its process group)".into()),
                false => Err(miette!("process {pid} did not stop")),
            }
        }
        Orphan::Key { alias } => {
            let f = crate::litellm::keyfile::KeyFile::load(&layout.keys_file()).map_err(|e| miette!("{e}"))?;
            f.remove(alias).into_diagnostic()?;
            Ok("revoked (the proxy re-reads the key file)".into())
        }
        Orphan::GatewayAgent { gateway, agent } => {
            let g = gateways.iter().find(|g| &g.name == gateway).ok_or_else(|| miette!("gateway {gateway} unknown"))?;
            g.connect().await?.delete_agent(agent).await.map_err(|e| miette!("agents.delete {agent}: {e}"))?;
            // The gateway answers before it has reloaded: wait until it no longer lists the agent (measured
            // under load: a verify right after agents.delete still saw it).
            let t0 = std::time::Instant::now();
            while t0.elapsed() < Duration::from_secs(90) {
                let listed = match g.connect_within(Duration::from_secs(20)).await {
                    Ok(c) => c.agent_ids().await.ok(),
                    Err(_) => None,
                };
                if listed.is_some_and(|ids| !ids.contains(agent)) {
                    return Ok("deleted from its gateway (agents.delete)".into());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(miette!("agents.delete {agent} returned, but gateway {gateway} still lists it after 90 s"))
        }
        Orphan::Workspace { gateway, agent, with_home } => {
            let mut fp = Footprint::of(layout, gateway, agent);
            if !with_home {
                // The agent lives on elsewhere: only this stale copy goes into the archive.
                let nowhere = layout.data_dir.join("archive").join(".none");
                fp.home = nowhere.clone();
                fp.conversations = nowhere;
            }
            archive(layout, fp, gateway).await
        }
        Orphan::AgentHome { agent } => {
            let mut fp = Footprint::of(layout, "-", agent);
            let nowhere = layout.data_dir.join("archive").join(".none");
            fp.workspace = nowhere.clone();
            fp.gateway_state = nowhere;
            archive(layout, fp, "").await
        }
        Orphan::GatewayDir { gateway } => {
            let dir = layout.gateway_dir(gateway);
            let left = std::fs::read_dir(layout.gateway_home(gateway).join("workspaces"))
                .map(|mut r| r.next().is_some())
                .unwrap_or(false);
            if left {
                return Err(miette!("{} still holds workspaces; they are archived first", dir.display()));
            }
            std::fs::remove_dir_all(&dir).into_diagnostic()?;
            Ok(format!("removed {}", dir.display()))
        }
        Orphan::Instance { remote, name, config } => {
            let target = crate::runtime::incus_cli::target(remote, name);
            crate::runtime::incus_cli::incus_in(config.as_deref(), &["delete", "--force", &target]).await?;
            Ok("deleted (incus delete --force)".into())
        }
    }
}

async fn archive(layout: &Layout, fp: Footprint, gateway: &str) -> miette::Result<String> {
    let root = layout.archive_dir();
    let about = About { gateway: gateway.to_string(), ..About::default() };
    let now = crate::clock::now_ms().div_euclid(1000);
    let id = tokio::task::spawn_blocking(move || crate::archive::take::archive(&root, &fp, &about, None, now))
        .await
        .into_diagnostic()??;
    Ok(match id {
        Some(id) => format!("archived as {id}"),
        None => "nothing left to archive".into(),
    })
}
