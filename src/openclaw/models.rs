//! `gateway.<name>.models`: every agent of one gateway, sent as ONE `config.patch`
//! (with `baseHash`, re-read and retried when the config moved underneath) — the
//! agent's entry (id, workspace), a provider entry per agent pointing at the
//! LiteLLM proxy with that agent's own key, its primary + fallbacks, and its
//! heartbeat. New agents come into being through this patch: the gateway applies
//! it before answering, so they are listed at once, and adding ten agents costs one
//! config reload instead of ten `agents.create` calls, each a reload of its own
//! (at 50 agents: 3.2 s per create, 8.5 s per reload, measured). Nothing is sent
//! when nothing changed. What the patch holds is `agents_config.rs`.

use std::time::Duration;

use miette::{miette, IntoDiagnostic, WrapErr};
use serde_json::{json, Map, Value};

use super::agent::Listings;
use super::client::{GatewayClient, GatewayRef, PatchOutcome};
use super::config_drift::{differences, Keys};
use super::roster;
use super::rpc::RpcError;
use crate::archive::restore::Restore;
use crate::driver::{Drift, Driver, Outputs, StepCtx};
use crate::layout::Layout;
use crate::resource::Resource;
use crate::state::Record;

pub use super::agents_config::{patch, AgentIdentity, AgentModels, ModelsInputs, ToolSandbox, UNASSIGNED};
pub use super::offline::provider_id;

pub struct ModelsDriver {
    /// Shared with the agents' driver: their observing already asked the gateway.
    pub listings: std::sync::Arc<Listings>,
    /// Where agents' footprints and the archives are.
    pub layout: Layout,
}

impl ModelsDriver {
    /// Agents this patch brings to the gateway for the first time get back what they left, before
    /// the gateway sees them: a restore a killed run began, their footprint on another gateway of
    /// this fleet (a move), or their archive (`archive/restore.rs`).
    ///
    /// A fresh agent (nothing to bring back) whose workspace is not there gets fleet's files
    /// written into it first: OpenClaw refuses to seed a workspace it attested in the last 24 h and
    /// that has since disappeared ("WorkspaceVanishedError … Refusing to reseed BOOTSTRAP.md",
    /// measured after an archive or a destroy on a kept gateway home), and accepts one holding
    /// BOOTSTRAP.md. The agent's step then finds the files in place (first provisioning as ever).
    ///
    /// A gateway whose home is on another host: all of that happens in this machine's directory of
    /// the gateway, as for a local one, and what it put there is then pushed into the home there
    /// (`HomeElsewhere::send_agent_there`) and removed here. A run killed before the push finished
    /// leaves it here; the next run pushes it.
    async fn bring_back(
        &self,
        r: &Resource,
        want: &ModelsInputs,
        prior: Option<&ModelsInputs>,
        listed: &[String],
        ctx: &StepCtx,
    ) -> miette::Result<()> {
        let there = super::gateway::HomeElsewhere::of(&want.gateway.token_file)?;
        let new = want
            .agents
            .iter()
            .filter(|(id, _)| !listed.contains(id) && prior.is_none_or(|p| !p.agents.contains_key(*id)));
        for (id, a) in new {
            let (layout, gw, id2, how) =
                (self.layout.clone(), want.gateway.name.clone(), id.clone(), a.restore.clone());
            let from = tokio::task::spawn_blocking(move || bring_back_one(&layout, &gw, &id2, &how))
                .await
                .map_err(|e| miette!("{e}"))?
                .wrap_err_with(|| format!("agent {id}"))?;
            match (from, &there) {
                (Some(from), _) => ctx.progress(&format!("{id}: brought back from {from}")),
                (None, Some(there)) if there.has_workspace(id).await => {}
                (None, _) => seed(&self.layout.agent_workspace(&want.gateway.name, id), id, r)?,
            }
            // What was put in the gateway's home is its user's (a confined gateway: docs/security.md).
            let home = self.layout.gateway_home(&want.gateway.name);
            for p in [self.layout.agent_workspace(&want.gateway.name, id), home.join("state/agents").join(id)] {
                crate::process::users::own_like(&p, &home)
                    .into_diagnostic()
                    .wrap_err_with(|| format!("agent {id}: cannot give {} to its gateway", p.display()))?;
            }
            if let Some(there) = &there {
                there.send_agent_there(id).await.wrap_err_with(|| format!("agent {id}"))?;
            }
        }
        Ok(())
    }

    /// Missing agents whose id this gateway has held before (or may have: see `roster.rs`) are
    /// created through `agents.create`, which deals with the gateway's deletion journal; the patch
    /// then sets their model like everyone else's. Brand-new ids are left to the patch.
    /// A create that meets a gateway restart (one an earlier patch or deletion began; seen restoring
    /// 50 agents right after removing them) waits for the gateway to be back and asks the new process.
    async fn create_held_before(
        c: &GatewayClient,
        want: &ModelsInputs,
        listed: &[String],
        ctx: &StepCtx,
    ) -> miette::Result<()> {
        let mut fresh: Option<GatewayClient> = None;
        let mut waits = 0;
        for (id, a) in want.agents.iter().filter(|(id, _)| !listed.contains(id)) {
            if want.state_db.as_deref().is_some_and(|db| roster::never_held(db, id)) {
                continue;
            }
            ctx.progress(&format!("{id}: this gateway held it before; agents.create"));
            let got = loop {
                let now = fresh.as_ref().unwrap_or(c);
                match now.create_agent(id, &a.workspace).await {
                    Err(e) if e.during_restart() && waits < 5 => {
                        waits += 1;
                        ctx.progress("the gateway is restarting; waiting for it, then creating again");
                        fresh = Some(super::gateway::reconnect_after_restart(&want.gateway, now, ctx).await?);
                    }
                    other => break other.wrap_err_with(|| format!("agents.create {id}"))?,
                }
            };
            if got != *id {
                return Err(miette!("the gateway created agent {got} instead of {id}"));
            }
        }
        Ok(())
    }

    /// Waits (at most two minutes) until the gateway has finished the agent deletions it journaled
    /// (`roster::unfinished_deletions`): a deletion still under way — e.g. one a killed run sent —
    /// and a patch that makes the gateway restart must not overlap.
    async fn wait_for_deletions(db: &std::path::Path, ctx: &StepCtx) {
        let t0 = std::time::Instant::now();
        let mut said = false;
        while t0.elapsed() < Duration::from_secs(120) {
            let path = db.to_path_buf();
            let pending = tokio::task::spawn_blocking(move || roster::unfinished_deletions(&path)).await.ok().flatten();
            match pending {
                Some(ids) if !ids.is_empty() => {
                    if !said {
                        ctx.progress(&format!("waiting for the gateway to finish deleting {}", ids.join(", ")));
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                _ => return,
            }
        }
    }

    async fn send(&self, r: &Resource, prior: Option<&Record>, ctx: &StepCtx) -> miette::Result<Outputs> {
        let want: ModelsInputs = r.inputs_as()?;
        let old = prior.and_then(|p| p.inputs_as::<ModelsInputs>().ok());
        let (raw, replace) = patch(&want, old.as_ref())?;
        let c = want.gateway.connect().await?;
        let listed = c.agent_ids().await?;
        self.bring_back(r, &want, old.as_ref(), &listed, ctx).await?;
        Self::create_held_before(&c, &want, &listed, ctx).await?;
        if let Some(db) = &want.state_db {
            Self::wait_for_deletions(db, ctx).await;
        }
        let say = |m: &str| ctx.progress(m);
        let mut c = c;
        let mut waits = 0;
        let (outcome, boot) = loop {
            match c.patch_config(&raw, &replace, "fleet apply", &say).await {
                // A restart under way (the agents' deletions, or an earlier patch, began it): wait for
                // the gateway to be back, then patch the process there now.
                Err(e) if e.during_restart() && waits < 5 => {
                    waits += 1;
                    ctx.progress("the gateway is restarting; waiting for it, then patching again");
                    c = super::gateway::reconnect_after_restart(&want.gateway, &c, ctx).await?;
                }
                // Many agents removed at once (their entries already gone with agents.delete): dropping
                // all their providers in one write shrinks the config past OpenClaw's "size-drop" guard.
                // Drop them in parts first; what is left of the patch is then small.
                Err(e) if e.message_contains("size-drop") => {
                    let gone: Vec<&String> = old
                        .as_ref()
                        .map(|o| o.agents.keys().filter(|id| !want.agents.contains_key(*id)).collect())
                        .unwrap_or_default();
                    if gone.is_empty() {
                        return Err(e.into());
                    }
                    drop_in_parts(&want.gateway, gone, ctx).await?;
                    // The parts may have restarted the gateway: the rest goes to the process there now.
                    c = want.gateway.connect().await?;
                    break (c.patch_config(&raw, &replace, "fleet apply", &say).await?, c.boot_id().to_string());
                }
                other => break (other?, c.boot_id().to_string()),
            }
        };
        match outcome {
            PatchOutcome::Applied { noop, changed } => Ok(json!({"noop": noop, "changed": changed, "restart": false})),
            PatchOutcome::Restarting => {
                // The agents' steps come next: they must talk to the restarted gateway, not the leaving one.
                ctx.progress("the gateway restarts to apply this change; waiting for it");
                super::gateway::await_restart(&want.gateway, &boot, ctx).await?;
                Ok(json!({"noop": false, "changed": Value::Null, "restart": true}))
            }
            PatchOutcome::Conflict => Err(miette!(
                "the config of gateway {} kept changing underneath the patch; apply again",
                want.gateway.name
            )),
        }
    }
}

#[async_trait::async_trait]
impl Driver for ModelsDriver {
    /// An agent the gateway no longer lists (deleted by hand, or its gateway's state lost) is
    /// drift: the patch brings it back. A gateway that cannot be reached is its own step's concern.
    ///
    /// So is a config that no longer holds what the last patch wrote (an agent's model, its
    /// provider, `main` pointing nowhere — edited by hand, or lost): an agent listed without its
    /// model would answer through OpenClaw's default provider, with no key.
    async fn observe(&self, prior: &Record, _desired: &Resource) -> Drift {
        let Ok(old) = prior.inputs_as::<ModelsInputs>() else {
            return Drift::Update("unreadable record".into());
        };
        let Some(listed) = self.listings.of(&old.gateway).await else { return Drift::InSync };
        let missing: Vec<&str> = old.agents.keys().filter(|id| !listed.contains(id)).map(String::as_str).collect();
        let name = &old.gateway.name;
        match missing.as_slice() {
            [] => {}
            [one] => return Drift::Update(format!("agent {one} is missing from gateway {name}")),
            many => return Drift::Update(format!("agents {} are missing from gateway {name}", many.join(", "))),
        }
        // Its file when the home is here (the real keys, compared), else the gateway's word (keys
        // redacted: only their presence is compared).
        let (config, keys) = match super::gateway::config_here(&old.gateway.token_file) {
            Some(file) => {
                let read = tokio::fs::read(&file).await.ok().and_then(|b| serde_json::from_slice(&b).ok());
                (read, Keys::Exact)
            }
            None => (old.gateway.config_now().await, Keys::Present),
        };
        let Some(config) = config else { return Drift::InSync };
        match differences(&config, &old, keys).as_slice() {
            [] => Drift::InSync,
            [one] => Drift::Update(format!("gateway {name}'s config differs from fleet's at {one}")),
            [one, rest @ ..] => Drift::Update(format!(
                "gateway {name}'s config differs from fleet's at {one} (and {} more)",
                rest.len()
            )),
        }
    }

    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        self.send(r, None, ctx).await
    }
    async fn update(&self, r: &Resource, prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        self.send(r, Some(prior), ctx).await
    }
    /// Removes the providers fleet added (the agents themselves are deleted by their own steps).
    async fn delete(&self, prior: &Record, ctx: &StepCtx) -> miette::Result<()> {
        let old: ModelsInputs = prior.inputs_as()?;
        // A gateway this run deletes was stopped by its agents' steps: what is left of their
        // providers is taken out of its config on disk. One that stays is asked (and one that is
        // down has nothing to say).
        if ctx.deletes(&crate::resource::Address::Gateway(old.gateway.name.clone()).to_string()) {
            if let Some(config) = super::gateway::config_if_down(&old.gateway.token_file).await {
                let ids: Vec<String> = old.agents.keys().cloned().collect();
                return tokio::task::spawn_blocking(move || {
                    ids.iter().try_for_each(|id| super::offline::forget_agent(&config, id))
                })
                .await
                .map_err(|e| miette!("{e}"))?;
            }
        }
        if old.gateway.connect().await.is_err() {
            return Ok(());
        }
        drop_in_parts(&old.gateway, old.agents.keys().collect(), ctx).await
    }
}

/// Removes these agents' providers. OpenClaw refuses a write that shrinks its config below half
/// ("size-drop"), which dropping many providers at once does once the agents' entries are gone:
/// halve until it passes. A part may make the gateway restart (or meet a restart the agents'
/// deletions began): the next part waits for the gateway to be back and talks to the new process
/// (measured: "config.patch unavailable during gateway restart" failed a 12-of-16 removal).
async fn drop_in_parts(gref: &GatewayRef, ids: Vec<&String>, ctx: &StepCtx) -> miette::Result<()> {
    let mut chunks: Vec<Vec<&String>> = vec![ids];
    let mut restarts = 0;
    while let Some(ids) = chunks.pop() {
        let c = gref.connect().await?;
        match drop_providers(&c, &ids, ctx).await {
            Err(e) if e.message_contains("size-drop") && ids.len() > 1 => {
                ctx.progress("the gateway refuses to lose half its config at once; removing in smaller parts");
                let (a, b) = ids.split_at(ids.len() / 2);
                chunks.push(b.to_vec());
                chunks.push(a.to_vec());
            }
            // Refused while restarting, or restarting while it answered (the connection closed
            // before the answer: the part may be in or not; sent again, it changes nothing more).
            Err(e) if (e.during_restart() || matches!(e, RpcError::Closed)) && restarts < 5 => {
                restarts += 1;
                ctx.progress("the gateway is restarting; waiting for it before the next part");
                super::gateway::await_restart(gref, c.boot_id(), ctx).await?;
                chunks.push(ids);
            }
            Err(e) => return Err(e.into()),
            Ok(PatchOutcome::Restarting) => {
                ctx.progress("the gateway restarts to apply this part; waiting for it");
                super::gateway::await_restart(gref, c.boot_id(), ctx).await?;
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Writes a fresh agent's workspace files (the models resource's `<agent>/<file>`) into a workspace
/// that does not exist yet.
fn seed(workspace: &std::path::Path, id: &str, r: &Resource) -> miette::Result<()> {
    if workspace.exists() {
        return Ok(());
    }
    for f in r.files.iter().filter(|f| f.path.starts_with(id)) {
        let Ok(name) = f.path.strip_prefix(id) else { continue };
        crate::fsutil::write_atomic(&workspace.join(name), &f.content, f.mode)
            .map_err(|e| miette!("cannot seed {}: {e}", workspace.join(name).display()))?;
    }
    Ok(())
}

/// What `bring_back` does for one agent; returns where its footprint came from.
fn bring_back_one(layout: &Layout, gateway: &str, agent: &str, how: &Restore) -> miette::Result<Option<String>> {
    use crate::archive::{listing, restore, Footprint};
    let fp = Footprint::of(layout, gateway, agent);
    let root = layout.archive_dir();
    let begun = listing::restoring(&crate::archive::list(&root), agent).is_some();
    if !begun && *how != Restore::Fresh && !fp.workspace.exists() {
        // Moved here from another gateway of this fleet: its workspace comes along.
        let others = std::fs::read_dir(layout.data_dir.join("gateways")).into_iter().flatten().flatten();
        for other in others.map(|e| e.file_name().to_string_lossy().into_owned()).filter(|g| g != gateway) {
            let old = Footprint::of(layout, &other, agent);
            if old.workspace.is_dir() {
                // The workspace only: OpenClaw's session database stays until the old gateway has let
                // go of the agent (the agent's step moves it then, into the agent's home).
                crate::archive::move_into(&old.workspace, &fp.workspace)?;
                let m = restore::Restored { archive: None, moved_from: Some(other.clone()), at: crate::clock::now() };
                restore::write_marker(&fp.home, &m)?;
                return Ok(Some(m.describe()));
            }
        }
    }
    Ok(restore::restore(&root, &fp, how)?.map(|id| format!("archive {id}")))
}

/// One patch removing these agents' provider entries.
async fn drop_providers(c: &GatewayClient, ids: &[&String], ctx: &StepCtx) -> Result<PatchOutcome, RpcError> {
    let providers: Map<String, Value> = ids.iter().map(|id| (provider_id(id), Value::Null)).collect();
    let replace: Vec<String> = ids.iter().map(|id| format!("models.providers.{}.models", provider_id(id))).collect();
    let raw = json!({"models": {"providers": providers}});
    c.patch_config(&raw, &replace, "fleet destroy", &|m: &str| ctx.progress(m)).await
}
