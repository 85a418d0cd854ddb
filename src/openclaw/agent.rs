//! `agent.<name>`: an agent in its gateway — brought into being by its gateway's
//! models patch (`models.rs`), listed before its files are touched — and its
//! workspace files kept in line: changed files re-sent, unchanged ones not,
//! agent-owned ones (USER.md, MEMORY.md) only when missing, BOOTSTRAP.md only at
//! the first provisioning.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use miette::{miette, WrapErr};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::client::{FileState, GatewayClient, GatewayRef};
use super::workspace::{AGENT_OWNED, FIRST_ONLY};
use crate::archive::restore::{marker, Restore};
use crate::archive::{About, Footprint};
use crate::driver::{Drift, Driver, Outputs, StepCtx};
use crate::fsutil::sha256_hex;
use crate::layout::Layout;
use crate::resource::Resource;
use crate::state::Record;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInputs {
    pub id: String,
    pub gateway: GatewayRef,
    /// The same directory on this machine (for observing hand edits).
    pub workspace_host: Option<PathBuf>,
    /// File name → sha256 of the content fleet wants there.
    pub files: BTreeMap<String, String>,
    /// What its archive's manifest will say of it (model, host, identity).
    #[serde(default)]
    pub about: About,
    /// How it comes back when an archive of it exists (`fresh`, `restore=`).
    #[serde(default, skip_serializing_if = "Restore::is_newest")]
    pub restore: Restore,
}

pub struct AgentDriver {
    /// `--overwrite`: replace agent-owned files too.
    pub overwrite: bool,
    listings: Arc<Listings>,
    /// Where its footprint and the archives are.
    layout: Layout,
}

/// Gateway URL → the agents it listed, and when: a plan observes every agent of a gateway and then
/// its models patch, many at once, and one `agents.list` on one connection answers for all of them
/// (the observers of one gateway wait for the one asking instead of each opening a connection).
#[derive(Default)]
pub struct Listings(Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Listing>>>>>);

/// When a gateway was asked, and the agent ids it listed (None: it could not be asked).
type Listing = (Instant, Option<Vec<String>>);

/// How long one `agents.list` answers for observing a gateway's agents.
const LISTING_FRESH: Duration = Duration::from_secs(2);

impl Listings {
    /// The ids the gateway lists (None when it cannot be asked), one RPC per gateway per plan.
    pub async fn of(&self, g: &GatewayRef) -> Option<Vec<String>> {
        let slot = self.0.lock().expect("listing").entry(g.url.clone()).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some((at, ids)) = slot.as_ref() {
            if at.elapsed() < LISTING_FRESH {
                return ids.clone();
            }
        }
        let ids = g.listed_now().await;
        *slot = Some((Instant::now(), ids.clone()));
        ids
    }
}

fn content_of(r: &Resource, name: &str) -> Option<String> {
    r.files.iter().find(|f| f.path.as_os_str() == name).map(|f| String::from_utf8_lossy(&f.content).into_owned())
}

impl AgentDriver {
    /// Waits until the gateway lists the agent. Its gateway's models patch (a dependency) put the
    /// entry into the config, and the gateway answers that patch only once it is applied, so this
    /// is normally the first look; an agent not listed within a minute is an error.
    async fn wait_listed(c: &GatewayClient, a: &AgentInputs, ctx: &StepCtx) -> miette::Result<()> {
        let t0 = Instant::now();
        let mut said = false;
        while !c.agent_ids().await?.contains(&a.id) {
            if t0.elapsed() > Duration::from_secs(60) {
                return Err(miette!(
                    "agent {} is not listed by gateway {} although its config entry was sent; see the gateway's log",
                    a.id,
                    a.gateway.name
                ));
            }
            if !said {
                ctx.progress("waiting until the gateway lists it");
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Sends the files that differ. `first`: this is the agent's first provisioning.
    async fn sync_files(
        &self,
        c: &GatewayClient,
        a: &AgentInputs,
        r: &Resource,
        first: bool,
    ) -> miette::Result<Vec<String>> {
        let mut sent = Vec::new();
        for (name, want_hash) in &a.files {
            let owned = AGENT_OWNED.contains(&name.as_str());
            if FIRST_ONLY.contains(&name.as_str()) && !first {
                continue;
            }
            let have = match c.file(&a.id, name).await? {
                FileState::Missing => None,
                FileState::Present { hash } => Some(hash),
            };
            let replace = first || self.overwrite || !owned;
            let send = match &have {
                None => true,
                Some(h) => replace && h != want_hash,
            };
            if !send {
                continue;
            }
            let content = content_of(r, name).ok_or_else(|| miette!("no content for {name}"))?;
            // Compare-and-swap: a file edited since we read it is not clobbered silently.
            c.set_file(&a.id, name, &content, have.as_deref()).await.wrap_err_with(|| name.clone())?;
            sent.push(name.clone());
        }
        Ok(sent)
    }

    /// `first`: the agent's first provisioning (BOOTSTRAP.md goes only then).
    async fn provision(&self, r: &Resource, first: bool, ctx: &StepCtx) -> miette::Result<Outputs> {
        let a: AgentInputs = r.inputs_as()?;
        let c = a.gateway.connect().await?;
        Self::wait_listed(&c, &a, ctx).await?;
        let sent = self.sync_files(&c, &a, r, first).await?;
        if !sent.is_empty() {
            ctx.progress(&format!("sent {}", sent.join(", ")));
        }
        Ok(json!({"agent_id": a.id, "created": first}))
    }
}

#[async_trait::async_trait]
impl Driver for AgentDriver {
    async fn observe(&self, prior: &Record, _desired: &Resource) -> Drift {
        let Ok(a) = prior.inputs_as::<AgentInputs>() else {
            return Drift::Update("unreadable record".into());
        };
        // Files fleet owns, edited by hand in the workspace: read here when it is on this machine,
        // asked of the gateway otherwise (a gateway that cannot be asked is its own step's drift).
        let owned =
            a.files.iter().filter(|(n, _)| !AGENT_OWNED.contains(&n.as_str()) && !FIRST_ONLY.contains(&n.as_str()));
        let remote = match &a.workspace_host {
            Some(_) => None,
            None => a.gateway.try_connect(Duration::from_secs(5)).await,
        };
        for (name, hash) in owned {
            let now = match (&a.workspace_host, &remote) {
                (Some(dir), _) => std::fs::read(dir.join(name)).ok().map(|b| sha256_hex(&b)),
                (None, Some(c)) => match c.file(&a.id, name).await {
                    Ok(FileState::Present { hash }) => Some(hash),
                    _ => None,
                },
                (None, None) => break,
            };
            if now.as_deref() != Some(hash.as_str()) {
                return Drift::Update(format!("{name} differs in the workspace"));
            }
        }
        // Deleted behind fleet's back: its gateway's patch brings it back, then this step re-checks
        // its files (agents.create rewrites IDENTITY.md). An unreachable gateway is its own drift.
        match self.listings.of(&a.gateway).await {
            Some(ids) if !ids.contains(&a.id) => {
                Drift::Update(format!("agent {} is missing from gateway {}", a.id, a.gateway.name))
            }
            _ => Drift::InSync,
        }
    }

    /// An agent about to come back from an archive (or one a killed run began restoring) says so.
    async fn observe_unrecorded(&self, desired: &Resource) -> Option<String> {
        let a: AgentInputs = desired.inputs_as().ok()?;
        let root = self.layout.archive_dir();
        match crate::archive::restore::planned(&root, &a.id, &a.restore) {
            Ok(Some(id)) => Some(format!("restore from archive {id}")),
            Ok(None) => match &a.restore {
                Restore::Agent(old) => {
                    Some(format!("moved from agent.{old}: restored from the archive its removal makes"))
                }
                _ => None,
            },
            Err(e) => Some(format!("restore fails: {e}")),
        }
    }

    /// The first provisioning — unless the agent was just restored from an archive (its models
    /// step put its footprint back): then its own files stay as it left them and BOOTSTRAP.md is
    /// not sent again.
    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        let a: AgentInputs = r.inputs_as()?;
        match marker(&self.layout.agent_home(&a.id)) {
            Some(m) => {
                ctx.progress(&format!("brought back from {}: its own files kept, no BOOTSTRAP.md", m.describe()));
                let mut out = self.provision(r, false, ctx).await?;
                out["restored_from"] = json!(m.describe());
                Ok(out)
            }
            None => self.provision(r, true, ctx).await,
        }
    }

    /// An agent moved to another gateway is provisioned there (with the workspace its new gateway's
    /// models step carried over, when both homes are on this machine; afresh otherwise), then removed
    /// from the old one
    /// (whose patch, ordered before this step, has already dropped its provider).
    async fn update(&self, r: &Resource, prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        let old = prior.inputs_as::<AgentInputs>().ok();
        let new: AgentInputs = r.inputs_as()?;
        let moved_from = old.filter(|o| o.gateway.place() != new.gateway.place());
        // Its new gateway's models step carried its footprint over when it was on this machine.
        let home = self.layout.agent_home(&new.id);
        let carried = moved_from.is_some() && marker(&home).is_some();
        let out = self.provision(r, moved_from.is_some() && !carried, ctx).await?;
        if carried {
            ctx.progress("its workspace and sessions came with it");
            crate::archive::restore::clear_marker(&home);
        }
        if let Some(old) = moved_from {
            match remove(&old, ctx).await {
                Ok(()) => {
                    ctx.progress(&format!("removed from gateway {}", old.gateway.name));
                    if carried {
                        self.keep_sessions(&old, &new.id, ctx);
                    }
                }
                // A gateway that is gone or broken cannot hold it back from its new one.
                Err(e) => ctx.progress(&format!(
                    "could not remove it from gateway {}: {}",
                    old.gateway.name,
                    crate::driver::error_chain(&e)
                )),
            }
        }
        Ok(out)
    }

    /// Removes the agent from its gateway, then archives what is left of it on this machine
    /// (workspace, sessions, trace, conversations) under `<data dir>/archive/`. Until both are done
    /// the agent stays recorded, and a run killed in between is finished by the next one.
    async fn delete(&self, prior: &Record, ctx: &StepCtx) -> miette::Result<()> {
        let a: AgentInputs = prior.inputs_as()?;
        remove(&a, ctx).await?;
        if a.workspace_host.is_none() {
            if let Some(there) = super::gateway::HomeElsewhere::of(&a.gateway.token_file)? {
                there.bring_agent_here(&a.id).await?;
            }
        }
        let fp = Footprint::of(&self.layout, &a.gateway.name, &a.id);
        let (root, about, run) = (self.layout.archive_dir(), a.about.clone(), ctx.run);
        let now = crate::clock::now_ms().div_euclid(1000);
        let id = tokio::task::spawn_blocking(move || crate::archive::take::archive(&root, &fp, &about, run, now))
            .await
            .map_err(|e| miette!("{e}"))?
            .wrap_err_with(|| {
                format!("agent {} left its gateway but could not be archived; run the same command again", a.id)
            })?;
        match id {
            Some(id) => ctx.progress(&format!("archived as {id}")),
            None => ctx.progress("nothing of it left to archive"),
        }
        Ok(())
    }
}

/// `agents.delete` with its files kept; an agent already gone is fine; a gateway restarting (a
/// patch of this or a killed run) is waited for and asked again. A gateway that is not
/// running (destroy after it died; or stopped here because the same run deletes it) is not asked:
/// the agent is taken out of its config on disk, which is what the gateway would read when
/// started again.
async fn remove(a: &AgentInputs, ctx: &StepCtx) -> miette::Result<()> {
    if ctx.deletes(&crate::resource::Address::Gateway(a.gateway.name.clone()).to_string()) {
        super::gateway::stop_as_it_goes(&a.gateway.token_file, ctx).await;
    }
    if let Some(config) = super::gateway::config_if_down(&a.gateway.token_file).await {
        let (file, id) = (config.clone(), a.id.clone());
        tokio::task::spawn_blocking(move || super::offline::forget_agent(&file, &id))
            .await
            .map_err(|e| miette!("{e}"))??;
        ctx.progress(&format!(
            "gateway {} is not running: {} taken out of {} instead",
            a.gateway.name,
            a.id,
            config.display()
        ));
        return Ok(());
    }
    let c = a.gateway.connect().await.map_err(|e| {
        e.wrap_err(format!(
            "cannot remove agent {} (fleet cannot tell whether gateway {} is gone for good); start it and run \
             again, or `fleet state forget agent.{}` if it is",
            a.id, a.gateway.name, a.id
        ))
    })?;
    let (mut c, mut waits) = (c, 0);
    loop {
        match c.delete_agent(&a.id).await {
            Err(e) if e.during_restart() && waits < 5 => {
                waits += 1;
                ctx.progress("the gateway is restarting; waiting for it, then deleting again");
                c = super::gateway::reconnect_after_restart(&a.gateway, &c, ctx).await?;
            }
            other => return Ok(other?),
        }
    }
}

impl AgentDriver {
    /// OpenClaw's session database of an agent that moved, from its old gateway's home into the
    /// agent's home (`previous-sessions/<gateway>/`): OpenClaw binds it to the gateway's agent it was
    /// made for, and `agents.delete` has just closed its sessions there.
    fn keep_sessions(&self, old: &AgentInputs, id: &str, ctx: &StepCtx) {
        let from = self.layout.agent_gateway_state(&old.gateway.name, id);
        let to = self.layout.agent_home(id).join(crate::archive::restore::PREVIOUS_SESSIONS).join(&old.gateway.name);
        match crate::archive::move_into(&from, &to) {
            Ok(()) if to.exists() => {
                ctx.progress(&format!("its sessions on {} kept in {}", old.gateway.name, to.display()))
            }
            Ok(()) => {}
            Err(e) => {
                ctx.progress(&format!("its sessions stay in {}: {}", from.display(), crate::driver::error_chain(&e)))
            }
        }
    }
}

pub fn driver(overwrite: bool, listings: Arc<Listings>, layout: Layout) -> Arc<AgentDriver> {
    Arc::new(AgentDriver { overwrite, listings, layout })
}
