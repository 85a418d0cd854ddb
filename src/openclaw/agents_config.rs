//! What fleet writes into a gateway's config for its agents — each agent's entry (workspace, model,
//! fallbacks, heartbeat, identity), its provider (the proxy's URL, its own key, its models), `main`
//! pointing nowhere — as the inputs of the `gateway.<name>.models` step and the merge patch they
//! make. Pure but for reading each agent's key from its env file (`patch`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use miette::miette;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::client::GatewayRef;
use crate::archive::restore::Restore;
use crate::litellm::keys::read_env_key;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentModels {
    /// The agent's workspace as the gateway sees it.
    pub workspace: PathBuf,
    pub models: Vec<String>,
    pub primary: String,
    pub fallbacks: Vec<String>,
    /// How often the heartbeat runs (`30m`), as OpenClaw takes it.
    pub heartbeat: Option<String>,
    /// The heartbeat's own prompt (`heartbeat prompt="…"`), instead of OpenClaw's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_prompt: Option<String>,
    /// How OpenClaw's own UIs and channels name and show the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<AgentIdentity>,
    /// The agent's env file, holding its key (read at apply time; never in state).
    pub env_file: PathBuf,
    /// How it comes back when it is new to this gateway and an archive of it exists.
    #[serde(default, skip_serializing_if = "Restore::is_newest")]
    pub restore: Restore,
    /// Where its tools run: a podman sandbox (runtime/sandbox.rs), or its gateway's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<ToolSandbox>,
}

/// An agent's sandbox as OpenClaw takes it (`agents.entries.<id>.sandbox`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolSandbox {
    pub mode: crate::fleetfile::SandboxMode,
    /// The image's tag in the gateway's podman store.
    pub image: String,
    pub workspace: String,
    pub network: String,
}

/// The fleet file's sandbox network as podman takes it: `outbound` is slirp4netns without the
/// host's loopback.
fn podman_network(network: &str) -> String {
    match network {
        "outbound" => "slirp4netns:allow_host_loopback=false".to_string(),
        other => other.to_string(),
    }
}

impl ToolSandbox {
    /// One sandbox per agent (scope `agent`), podman, the workspace mounted as declared, no network,
    /// a read-only root, every capability dropped (OpenClaw adds no-new-privileges and `--init`).
    fn config(&self) -> Value {
        json!({
            "mode": self.mode.as_str(),
            "backend": "podman",
            "scope": "agent",
            "workspaceAccess": self.workspace,
            "docker": {"image": self.image, "network": podman_network(&self.network), "readOnlyRoot": true, "capDrop": ["ALL"]},
        })
    }
}

/// `agents.entries.<id>.identity`, the keys OpenClaw's config takes (its schema is strict: name,
/// theme, emoji, avatar), as `openclaw agents set-identity` writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<String>,
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

use super::offline::provider_id;

/// Where agents without a model of their own (OpenClaw's `main`) point: nowhere usable, so they
/// never borrow another agent's key.
pub const UNASSIGNED: &str = "fleet-unassigned/none";

/// The merge patch: wanted entries, plus nulls deleting what `prior` had and `want` no longer does.
pub fn patch(want: &ModelsInputs, prior: Option<&ModelsInputs>) -> miette::Result<(Value, Vec<String>)> {
    document(want, prior, &|id, a| {
        let key =
            read_env_key(&a.env_file).ok_or_else(|| miette!("no key in {} for agent {id}", a.env_file.display()))?;
        Ok(json!(key.expose()))
    })
}

/// What fleet writes into a gateway's config for its agents, each provider's `apiKey` given by `key`.
pub fn document(
    want: &ModelsInputs,
    prior: Option<&ModelsInputs>,
    key: &dyn Fn(&str, &AgentModels) -> miette::Result<Value>,
) -> miette::Result<(Value, Vec<String>)> {
    let mut providers = Map::new();
    let mut entries = Map::new();
    let mut replace = Vec::new();
    for (id, a) in &want.agents {
        let pid = provider_id(id);
        let models: Vec<Value> = a.models.iter().map(|m| json!({"id": m, "name": m})).collect();
        providers.insert(
            pid.clone(),
            json!({"baseUrl": want.base_url, "apiKey": key(id, a)?, "api": "openai-completions", "models": models}),
        );
        replace.push(format!("models.providers.{pid}.models"));
        // The same entry `agents.create` writes (name = id, so the id is exactly fleet's).
        let mut entry = json!({"name": id, "workspace": a.workspace, "model": {
            "primary": format!("{pid}/{}", a.primary),
            "fallbacks": a.fallbacks.iter().map(|f| format!("{pid}/{f}")).collect::<Vec<_>>(),
        }});
        entry["heartbeat"] = match &a.heartbeat {
            // The prompt key is always sent (null when unset) so removing it from the file removes it.
            Some(every) => json!({"every": every, "prompt": a.heartbeat_prompt}),
            None => Value::Null,
        };
        // Null removes an identity fleet set before; a merge patch keeps what is not named.
        entry["identity"] = match &a.identity {
            Some(i) => json!({"name": i.name, "emoji": i.emoji, "theme": i.theme}),
            None => Value::Null,
        };
        // Null takes a sandbox fleet set before away (its tools then run in the gateway again).
        entry["sandbox"] = a.sandbox.as_ref().map_or(Value::Null, ToolSandbox::config);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::litellm::keys::read_env_key;
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
            heartbeat_prompt: heartbeat.map(|_| "Check the queue.".to_string()),
            identity: None,
            env_file,
            restore: Restore::Newest,
            sandbox: None,
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
        assert_eq!(raw["agents"]["entries"]["alice"]["heartbeat"]["prompt"], "Check the queue.");
        assert_eq!(raw["agents"]["entries"]["alice"]["identity"], Value::Null, "no identity: none kept");
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
    fn a_sandbox_is_written_for_podman_without_network_and_taken_away_with_null() {
        let dir = tempfile::tempdir().unwrap();
        let gateway = GatewayRef { name: "g".into(), url: "ws://x".into(), token_file: dir.path().join("t") };
        let mut a = agent(dir.path(), "alice", None);
        a.sandbox = Some(ToolSandbox {
            mode: crate::fleetfile::SandboxMode::All,
            image: "localhost/fleet-sandbox-sb:0123".into(),
            workspace: "rw".into(),
            network: "none".into(),
        });
        let b = agent(dir.path(), "bob", None);
        let agents = [("alice".to_string(), a), ("bob".to_string(), b)].into();
        let inputs = ModelsInputs { gateway, base_url: "u".into(), agents, state_db: None };
        let (raw, _) = patch(&inputs, None).unwrap();
        let sb = &raw["agents"]["entries"]["alice"]["sandbox"];
        assert_eq!(sb["mode"], "all");
        assert_eq!(sb["backend"], "podman");
        assert_eq!(sb["scope"], "agent");
        assert_eq!(sb["workspaceAccess"], "rw");
        assert_eq!(sb["docker"]["image"], "localhost/fleet-sandbox-sb:0123");
        assert_eq!(sb["docker"]["network"], "none");
        assert_eq!(sb["docker"]["capDrop"], json!(["ALL"]));
        assert_eq!(sb["docker"]["readOnlyRoot"], true);
        assert_eq!(raw["agents"]["entries"]["bob"]["sandbox"], Value::Null, "none declared: none kept");
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
