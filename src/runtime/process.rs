//! The process runtime: `node openclaw.mjs gateway run` in its own session,
//! with HOME, OPENCLAW_* and TMPDIR all inside the gateway's home.

use std::process::Command;
use std::time::Duration;

use miette::{miette, IntoDiagnostic, WrapErr};

use super::{Handle, Launch, Runtime};
use crate::process::{passed_env, path_with, spawn_confined};

pub struct ProcessRuntime;

/// Gateway `l` as its sandboxes see it.
fn boxed(l: &Launch) -> super::sandbox::Boxed<'_> {
    super::sandbox::Boxed { gateway: &l.gateway, home: &l.home, images: &l.sandboxes }
}

pub fn gateway_env(l: &Launch) -> Vec<(String, String)> {
    let h = |p: &str| l.home.join(p).display().to_string();
    vec![
        ("HOME".into(), l.home.display().to_string()),
        ("OPENCLAW_HOME".into(), l.home.display().to_string()),
        ("OPENCLAW_STATE_DIR".into(), h("state")),
        ("OPENCLAW_CONFIG_PATH".into(), l.config_file().display().to_string()),
        ("TMPDIR".into(), h("tmp")),
        ("OPENCLAW_DISABLE_BONJOUR".into(), "1".into()),
        ("OPENCLAW_NO_AUTO_UPDATE".into(), "1".into()),
        ("DO_NOT_TRACK".into(), "1".into()),
        ("OPENCLAW_NO_RESPAWN".into(), "1".into()),
        ("OPENCLAW_SKIP_CHANNELS".into(), "1".into()),
        ("NO_COLOR".into(), "1".into()),
    ]
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    async fn start(&self, l: &Launch) -> miette::Result<Handle> {
        let (node, entry, bin_dir, reads) = match (&l.image_root, &l.toolchain) {
            (Some(root), _) => {
                // The image's own `openclaw` command (a relative symlink to its entry script).
                let bin = root.join("usr/local/bin");
                let entry = std::fs::canonicalize(bin.join("openclaw")).unwrap_or_else(|_| bin.join("openclaw"));
                (bin.join("node"), entry, bin, vec![root.clone()])
            }
            (None, Some(t)) => {
                (t.node_bin(), t.entry(), t.node_dir.join("bin"), vec![t.node_dir.clone(), t.openclaw_dir.clone()])
            }
            (None, None) => return Err(miette!("the process runtime needs the openclaw toolchain or an image")),
        };
        if !node.is_file() || !entry.is_file() {
            return Err(miette!("no Node or openclaw at {} and {}", node.display(), entry.display()));
        }
        for d in ["state", "logs", "tmp", "workspaces"] {
            std::fs::create_dir_all(l.home.join(d)).into_diagnostic()?;
        }
        // Confined (docs/security.md): its own user when fleet is root, no new privileges, Landlock.
        // Its sandbox images into its own podman store, as its user.
        let launch = l.clone();
        let real_node = node.clone();
        let confinement = tokio::task::spawn_blocking(move || {
            if !launch.sandboxes.is_empty() {
                super::sandbox::place(&boxed(&launch), &real_node)?;
            }
            let c = super::confine::prepare(&launch, &reads)?;
            if !launch.sandboxes.is_empty() {
                super::sandbox::import(&boxed(&launch), &c.identity)?;
            }
            Ok::<_, miette::Report>(c)
        })
        .await
        .map_err(|e| miette!("{e}"))??;
        // openclaw's scripts run `#!/usr/bin/env node`: this Node comes first.
        // Only what it needs: never fleet's caller's environment (provider keys live in the proxy alone).
        // Sandboxes: the gateway's Node beside fleet's `podman` (sandbox.rs).
        let node = if l.sandboxes.is_empty() { node } else { super::sandbox::node(&l.home) };
        let mut cmd = Command::new(node);
        cmd.arg(entry).args(["gateway", "run"]).current_dir(&l.home).env_clear().envs(passed_env());
        cmd.env("PATH", path_with(&bin_dir));
        for (k, v) in gateway_env(l) {
            cmd.env(k, v);
        }
        if !l.sandboxes.is_empty() {
            let path = format!("{}:{}", super::sandbox::bin_dir(&l.home).display(), path_with(&bin_dir));
            cmd.env("PATH", path).envs(super::sandbox::env(&l.home));
        }
        if confinement.identity.is_some() {
            let user = super::confine::user_name(l);
            cmd.env("USER", &user).env("LOGNAME", &user);
        }
        let pid = spawn_confined(cmd, &l.log, &format!("openclaw gateway {}", l.gateway), &confinement)
            .into_diagnostic()
            .wrap_err("cannot start the gateway")?;
        Ok(Handle::Process { pid })
    }

    /// Its session, then whatever of it still works in its home (workers in sessions of their own).
    async fn stop(&self, l: &Launch, handle: &Handle) -> miette::Result<()> {
        if let Some(pid) = handle.pid() {
            if !pid.stop_async(Duration::from_secs(20)).await {
                return Err(miette!("the gateway (pid {}) did not stop", pid.pid));
            }
        }
        // Its sandboxes (OpenClaw makes them again on the next turn), then whatever still works in its home.
        let launch = l.clone();
        let left = tokio::task::spawn_blocking(move || {
            let who = super::confine::identity_of(&launch);
            // Never podman as root on a gateway's store: when its user is gone, so are its sandboxes.
            let removed = match who.is_none() && super::confine::running_as_root() {
                true => Ok(()),
                false => super::sandbox::remove_containers(&boxed(&launch), &who),
            };
            (removed, crate::process::stop_all_working_in(&launch.home, Duration::from_secs(2)))
        })
        .await
        .map_err(|e| miette!("{e}"))?;
        let (removed, left) = left;
        removed?;
        if !left.is_empty() {
            let pids: Vec<String> = left.iter().map(|p| p.pid.to_string()).collect();
            return Err(miette!("processes of gateway {} still run in its home: {}", l.gateway, pids.join(", ")));
        }
        Ok(())
    }

    /// The gateway's user and lock directory go with it (its home stays).
    async fn discard(&self, l: &Launch) -> miette::Result<()> {
        let l = l.clone();
        tokio::task::spawn_blocking(move || super::confine::discard(&l)).await.map_err(|e| miette!("{e}"))?
    }

    async fn running(&self, handle: &Handle) -> bool {
        handle.pid().is_some_and(|p| p.alive())
    }

    /// Every session of fleet's working inside the gateway's home (`ownership::why_ours`): found
    /// before it listens, or when a kill landed between the spawn and the handle file (workers
    /// folded into their gateway).
    async fn strays(&self, l: &Launch) -> Vec<Handle> {
        let home = l.home.clone();
        let found = tokio::task::spawn_blocking(move || {
            let leaders = crate::process::leaders_working_in(&home);
            leaders.into_iter().filter(|p| crate::process::ownership::why_ours(*p, &home).is_some()).collect::<Vec<_>>()
        })
        .await;
        found.unwrap_or_default().into_iter().map(|pid| Handle::Process { pid }).collect()
    }
}
