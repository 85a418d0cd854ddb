//! `gateway.<name>.models`: every agent of one gateway, sent as ONE `config.patch`
//! (with `baseHash`, re-read and retried when the config moved underneath) — the
//! agent's entry (id, workspace), a provider entry per agent pointing at the
//! LiteLLM proxy with that agent's own key, its primary + fallbacks, and its
//! heartbeat. New agents come into being through this patch: the gateway applies
//! it before answering, so they are listed at once, and adding ten agents costs one
//! config reload instead of ten `agents.create` calls, each a reload of its own
//! (at 50 agents: 3.2 s per create, 8.5 s per reload, measured). Nothing is sent
//! when nothing changed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::agent::{list_ids, GatewayRef, Listings};
use super::roster;
use super::rpc::{Client, RpcError};
use crate::exec::driver::{Drift, Driver, Outputs, StepCtx};
use crate::litellm::keys::read_env_key;
use crate::resource::Resource;
use crate::state::Record;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentModels {
    /// The agent's workspace as the gateway sees it.
    pub workspace: PathBuf,
    pub models: Vec<String>,
    pub primary: String,
    pub fallbacks: Vec<String>,
    pub heartbeat: Option<String>,
    /// The agent's env file, holding its key (read at apply time; never in state).
    pub env_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelsInputs {
    pub gateway: GatewayRef,
    /// The LiteLLM proxy as the gateway reaches it.
    pub base_url: String,
    pub agents: BTreeMap<String, AgentModels>,
    /// The gateway's state database on this machine (`roster.rs`); None when the gateway's home is
    /// not on this machine (an Incus remote).
    #[serde(default)]
    pub state_db: Option<PathBuf>,
}

pub fn provider_id(agent: &str) -> String {
    format!("fleet-{agent}")
}

/// Where agents without a model of their own (OpenClaw's `main`) point: nowhere usable, so they
/// never borrow another agent's key.
pub const UNASSIGNED: &str = "fleet-unassigned/none";

/// The merge patch: wanted entries, plus nulls deleting what `prior` had and `want` no longer does.
pub fn patch(want: &ModelsInputs, prior: Option<&ModelsInputs>) -> miette::Result<(Value, Vec<String>)> {
    let mut providers = Map::new();
    let mut entries = Map::new();
    let mut replace = Vec::new();
    for (id, a) in &want.agents {
        let key =
            read_env_key(&a.env_file).ok_or_else(|| miette!("no key in {} for agent {id}", a.env_file.display()))?;
        let pid = provider_id(id);
        let models: Vec<Value> = a.models.iter().map(|m| json!({"id": m, "name": m})).collect();
        providers.insert(
            pid.clone(),
            json!({"baseUrl": want.base_url, "apiKey": key.expose(), "api": "openai-completions", "models": models}),
        );
        replace.push(format!("models.providers.{pid}.models"));
        // The same entry `agents.create` writes (name = id, so the id is exactly fleet's).
        let mut entry = json!({"name": id, "workspace": a.workspace, "model": {
            "primary": format!("{pid}/{}", a.primary),
            "fallbacks": a.fallbacks.iter().map(|f| format!("{pid}/{f}")).collect::<Vec<_>>(),
        }});
        entry["heartbeat"] = match &a.heartbeat {
            Some(every) => json!({"every": every}),
            None => Value::Null,
        };
        entries.insert(id.clone(), entry);
    }
    if let Some(prior) = prior {
        for id in prior.agents.keys().filter(|id| !want.agents.contains_key(*id)) {
            providers.insert(provider_id(id), Value::Null);
            // The gateway refuses to drop array entries unless told the path is meant to be replaced.
            replace.push(format!("models.providers.{}.models", provider_id(id)));
        }
    }
    entries.insert("main".into(), json!({"model": {"primary": UNASSIGNED, "fallbacks": []}}));
    // What `agents.create` writes when a gateway gets its second agent; a multi-agent roster is
    // refused without `ownership: "explicit"`, and `main` stays the system agent.
    let agents = json!({
        "ownership": "explicit",
        "defaults": {"systemAgent": {"agentId": "main"}, "heartbeat": {"agentId": "main"}},
        "entries": entries,
    });
    Ok((json!({"models": {"providers": providers}, "agents": agents, "talk": {"agentId": "main"}}), replace))
}

pub struct ModelsDriver {
    /// Shared with the agents' driver: their observing already asked the gateway.
    pub listings: std::sync::Arc<Listings>,
}

impl ModelsDriver {
    /// Missing agents whose id this gateway has held before (or may have: see `roster.rs`) are
    /// created through `agents.create`, which deals with the gateway's deletion journal; the patch
    /// then sets their model like everyone else's. Brand-new ids are left to the patch.
    async fn create_held_before(c: &Client, want: &ModelsInputs, ctx: &StepCtx) -> miette::Result<()> {
        let listed = list_ids(c).await?;
        for (id, a) in want.agents.iter().filter(|(id, _)| !listed.contains(id)) {
            if want.state_db.as_deref().is_some_and(|db| roster::never_held(db, id)) {
                continue;
            }
            ctx.progress(&format!("{id}: this gateway held it before; agents.create"));
            let params = json!({"name": id, "workspace": a.workspace});
            match c.call("agents.create", params, Duration::from_secs(180)).await {
                Ok(v) if v["agentId"] != id.as_str() => {
                    return Err(miette!("the gateway created agent {} instead of {id}", v["agentId"]));
                }
                Ok(_) => {}
                Err(e) if e.message_contains("already exists") => {}
                Err(e) => return Err(miette!("agents.create {id}: {e}")),
            }
        }
        Ok(())
    }

    async fn send(r: &Resource, prior: Option<&Record>, ctx: &StepCtx) -> miette::Result<Outputs> {
        let want: ModelsInputs =
            serde_json::from_value(r.inputs.clone()).into_diagnostic().wrap_err("models inputs")?;
        let old = prior.and_then(|p| serde_json::from_value::<ModelsInputs>(p.inputs.clone()).ok());
        let (raw, replace) = patch(&want, old.as_ref())?;
        let c = want.gateway.connect().await?;
        Self::create_held_before(&c, &want, ctx).await?;
        let v = patch_config(&c, &raw, &replace, "fleet apply", ctx).await.map_err(|e| miette!("{e}"))?;
        let restart = v.pointer("/sentinel/payload/stats/requiresRestart") == Some(&json!(true));
        if restart {
            // The agents' steps come next: they must talk to the restarted gateway, not the leaving one.
            ctx.progress("the gateway restarts to apply this change; waiting for it");
            wait_restarted(&want.gateway, &c.boot_id).await?;
        }
        Ok(json!({"noop": v["noop"] == true, "changed": v["changedPaths"], "restart": restart}))
    }
}

/// `config.get` for the base hash, then `config.patch`: re-read and sent again when the config
/// moved underneath (twice at most), and after the wait the gateway names when its rate limit
/// (30 patches per 60 s) is hit. "Persisted, but a recovery restart is required" is success.
async fn patch_config(
    c: &Client,
    raw: &Value,
    replace: &[String],
    note: &str,
    ctx: &StepCtx,
) -> Result<Value, RpcError> {
    let mut moved = 0;
    let mut limited = 0;
    loop {
        let current = c.req("config.get", json!({})).await?;
        let base = current["hash"].as_str().unwrap_or_default();
        let params = json!({"raw": raw.to_string(), "baseHash": base, "replacePaths": replace, "note": note});
        match c.call("config.patch", params, Duration::from_secs(60)).await {
            Err(e) if e.message_contains("config changed since last load") && moved < 2 => {
                moved += 1;
                ctx.progress("the config moved underneath; re-reading it");
            }
            Err(e) if rate_limit_wait(&e).is_some() && limited < 3 => {
                limited += 1;
                let wait = rate_limit_wait(&e).unwrap_or_default();
                ctx.progress(&format!("config.patch rate limit: waiting {} s", wait.as_secs()));
                tokio::time::sleep(wait).await;
            }
            // The change is in; OpenClaw restarts itself to finish applying it (seen when a reload
            // raced its cron monitor). Reported as a restarting patch: `send` waits for the new boot.
            Err(e) if e.message_contains("config.patch persisted") => {
                ctx.progress("persisted; the gateway restarts itself to finish applying it");
                return Ok(json!({"sentinel": {"payload": {"stats": {"requiresRestart": true}}}}));
            }
            other => return other,
        }
    }
}

/// Waits (up to two minutes) until the gateway answers `health` from a new boot.
async fn wait_restarted(g: &GatewayRef, old_boot: &str) -> miette::Result<()> {
    let t0 = std::time::Instant::now();
    if old_boot.is_empty() {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    while t0.elapsed() < Duration::from_secs(120) {
        if let Some(c) = g.try_connect(Duration::from_secs(5)).await {
            let healthy = c.call("health", json!({}), Duration::from_secs(10)).await.is_ok_and(|h| h["ok"] == true);
            // (A gateway that does not say its boot id is taken back once healthy.)
            if (old_boot.is_empty() || c.boot_id != old_boot) && healthy {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(miette!("gateway {} did not come back within 120 s after restarting to apply the patch", g.name))
}

/// "rate limit exceeded for config.patch; retry after 22s" → 22 s (capped at a minute).
fn rate_limit_wait(e: &RpcError) -> Option<Duration> {
    let RpcError::Remote { message, .. } = e else { return None };
    let rest = message.split("rate limit exceeded").nth(1)?.split("retry after ").nth(1)?;
    let secs: u64 = rest.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()?;
    Some(Duration::from_secs(secs.clamp(1, 60)))
}

#[async_trait::async_trait]
impl Driver for ModelsDriver {
    /// An agent the gateway no longer lists (deleted by hand, or its gateway's state lost) is
    /// drift: the patch brings it back. A gateway that cannot be reached is its own step's concern.
    async fn observe(&self, prior: &Record, _desired: &Resource) -> Drift {
        let Ok(old) = serde_json::from_value::<ModelsInputs>(prior.inputs.clone()) else {
            return Drift::Update("unreadable record".into());
        };
        let Some(listed) = self.listings.of(&old.gateway).await else { return Drift::InSync };
        let missing: Vec<&str> = old.agents.keys().filter(|id| !listed.contains(id)).map(String::as_str).collect();
        match missing.as_slice() {
            [] => Drift::InSync,
            [one] => Drift::Update(format!("agent {one} is missing from gateway {}", old.gateway.name)),
            many => Drift::Update(format!("agents {} are missing from gateway {}", many.join(", "), old.gateway.name)),
        }
    }

    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        Self::send(r, None, ctx).await
    }
    async fn update(&self, r: &Resource, prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        Self::send(r, Some(prior), ctx).await
    }
    /// Removes the providers fleet added (the agents themselves are deleted by their own steps).
    async fn delete(&self, prior: &Record, ctx: &StepCtx) -> miette::Result<()> {
        let old: ModelsInputs = serde_json::from_value(prior.inputs.clone()).into_diagnostic()?;
        let Ok(c) = old.gateway.connect().await else { return Ok(()) };
        // OpenClaw refuses a write that shrinks its config below half ("size-drop"), which dropping
        // every provider at once does once the agents' entries are gone: halve until it passes.
        let mut chunks: Vec<Vec<&String>> = vec![old.agents.keys().collect()];
        while let Some(ids) = chunks.pop() {
            match drop_providers(&c, &ids, ctx).await {
                Err(e) if e.message_contains("size-drop") && ids.len() > 1 => {
                    ctx.progress("the gateway refuses to lose half its config at once; removing in smaller parts");
                    let (a, b) = ids.split_at(ids.len() / 2);
                    chunks.push(b.to_vec());
                    chunks.push(a.to_vec());
                }
                other => other.map_err(|e| miette!("{e}"))?,
            }
        }
        Ok(())
    }
}

/// One patch removing these agents' provider entries.
async fn drop_providers(c: &Client, ids: &[&String], ctx: &StepCtx) -> Result<(), RpcError> {
    let providers: Map<String, Value> = ids.iter().map(|id| (provider_id(id), Value::Null)).collect();
    let replace: Vec<String> = ids.iter().map(|id| format!("models.providers.{}.models", provider_id(id))).collect();
    let raw = json!({"models": {"providers": providers}});
    patch_config(c, &raw, &replace, "fleet destroy", ctx).await.map(drop)
}

/// `wake.<agent>`: the first message an agent gets, once, right after its first provisioning.
pub struct WakeDriver;

#[async_trait::async_trait]
impl Driver for WakeDriver {
    async fn create(&self, r: &Resource, _ctx: &StepCtx) -> miette::Result<Outputs> {
        let gw: GatewayRef = serde_json::from_value(r.inputs["gateway"].clone()).into_diagnostic()?;
        let id = r.inputs["agent_id"].as_str().ok_or_else(|| miette!("no agent id"))?;
        let message = r.files.first().map(|f| String::from_utf8_lossy(&f.content).into_owned()).unwrap_or_default();
        let c = gw.connect().await?;
        let reply = super::agent::chat(&c, id, &message, Duration::from_secs(180)).await?;
        Ok(json!({"replied": !reply.is_empty()}))
    }
    /// A wake happens once: later changes to the message do not wake the agent again.
    async fn update(&self, _r: &Resource, prior: &Record, _ctx: &StepCtx) -> miette::Result<Outputs> {
        Ok(prior.outputs.clone())
    }
    async fn delete(&self, _prior: &Record, _ctx: &StepCtx) -> miette::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::litellm::keys::{mint_raw, AgentEnv, KEY_PREFIX};

    fn agent(dir: &std::path::Path, name: &str, heartbeat: Option<&str>) -> AgentModels {
        let env_file = dir.join(name).join("env");
        let key = mint_raw(KEY_PREFIX);
        AgentEnv { agent: name, base_url: "u", model: "m", key: &key }.write(&env_file).unwrap();
        AgentModels {
            workspace: dir.join("workspaces").join(name),
            models: vec!["m".into(), "n".into()],
            primary: "m".into(),
            fallbacks: vec!["n".into()],
            heartbeat: heartbeat.map(str::to_string),
            env_file,
        }
    }

    #[test]
    fn one_patch_carries_every_agent_and_deletes_the_departed() {
        let dir = tempfile::tempdir().unwrap();
        let gateway = GatewayRef { name: "g".into(), url: "ws://x".into(), token_file: dir.path().join("t") };
        let old = ModelsInputs {
            gateway: gateway.clone(),
            base_url: "http://127.0.0.1:4000/v1".into(),
            agents: [
                ("alice".to_string(), agent(dir.path(), "alice", Some("30m"))),
                ("bob".to_string(), agent(dir.path(), "bob", None)),
            ]
            .into(),
            state_db: None,
        };
        let mut new = old.clone();
        new.agents.remove("bob");
        let (raw, replace) = patch(&new, Some(&old)).unwrap();
        let alice_key = read_env_key(&dir.path().join("alice/env")).unwrap();
        assert_eq!(raw["models"]["providers"]["fleet-alice"]["apiKey"], alice_key.expose());
        assert_eq!(raw["models"]["providers"]["fleet-alice"]["baseUrl"], "http://127.0.0.1:4000/v1");
        assert_eq!(raw["agents"]["entries"]["alice"]["model"]["primary"], "fleet-alice/m");
        assert_eq!(raw["agents"]["entries"]["alice"]["model"]["fallbacks"], json!(["fleet-alice/n"]));
        assert_eq!(raw["agents"]["entries"]["alice"]["heartbeat"]["every"], "30m");
        assert_eq!(raw["agents"]["entries"]["alice"]["name"], "alice", "the entry creates the agent with fleet's id");
        assert_eq!(raw["agents"]["entries"]["alice"]["workspace"], json!(dir.path().join("workspaces/alice")));
        assert!(raw["agents"]["entries"].get("bob").is_none(), "bob's entry is left to agents.delete");
        assert_eq!(raw["models"]["providers"]["fleet-bob"], Value::Null, "bob's provider is removed");
        assert_eq!(raw["agents"]["entries"]["main"]["model"]["primary"], UNASSIGNED);
        assert_eq!(raw["agents"]["ownership"], "explicit", "a multi-agent roster needs it");
        assert!(replace.contains(&"models.providers.fleet-bob.models".to_string()));
        assert!(replace.contains(&"models.providers.fleet-alice.models".to_string()));
    }

    #[test]
    fn the_rate_limit_says_how_long_to_wait() {
        let e = |m: &str| RpcError::Remote {
            method: "config.patch".into(),
            code: "UNAVAILABLE".into(),
            message: m.into(),
            details: Value::Null,
        };
        let wait = rate_limit_wait(&e("rate limit exceeded for config.patch; retry after 22s"));
        assert_eq!(wait, Some(Duration::from_secs(22)));
        assert_eq!(
            rate_limit_wait(&e("rate limit exceeded for config.patch; retry after 300s")),
            Some(Duration::from_secs(60))
        );
        assert_eq!(rate_limit_wait(&e("Error: Config write rejected: openclaw.json (size-drop:2102->1017)")), None);
    }

    #[test]
    fn a_missing_key_is_an_error_naming_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = agent(dir.path(), "alice", None);
        a.env_file = dir.path().join("nope/env");
        let gateway = GatewayRef { name: "g".into(), url: "ws://x".into(), token_file: dir.path().join("t") };
        let inputs =
            ModelsInputs { gateway, base_url: "u".into(), agents: [("alice".to_string(), a)].into(), state_db: None };
        assert!(patch(&inputs, None).unwrap_err().to_string().contains("for agent alice"));
    }
}
