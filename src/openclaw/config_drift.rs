//! Whether a gateway's config still holds what fleet's last models patch wrote into it: each
//! agent's entry (workspace, model, fallbacks, heartbeat, identity), its provider (the proxy's URL,
//! a key, its models) and `main` pointing nowhere. Compared against the gateway's file when its
//! home is on this machine (each key must be the agent's own), or against the config as
//! `config.get` gives it (keys redacted: a key only has to be there). Models are compared by id
//! (OpenClaw fills their entries in with its defaults). Pure but for reading the agents' env files:
//! the caller reads the config.

use serde_json::{json, Value};

use super::agents_config::{document, AgentModels, ModelsInputs};
use crate::litellm::keys::read_env_key;

/// How the agents' keys are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Each must be the agent's own (its env file's): the config read from the gateway's file.
    Exact,
    /// Each must be there: the config as `config.get` gives it, keys redacted.
    Present,
}

/// The paths (`agents.entries.erin.model.primary`) where `config` differs from what fleet wrote,
/// in the document's (alphabetical) order; empty when it holds all of it. Never a value: a path
/// names what differs.
pub fn differences(config: &Value, want: &ModelsInputs, keys: Keys) -> Vec<String> {
    let key = |_: &str, a: &AgentModels| {
        let own = (keys == Keys::Exact).then(|| read_env_key(&a.env_file)).flatten();
        Ok(own.map_or(json!(KEY_PRESENT), |k| json!(k.expose())))
    };
    let Ok((doc, _)) = document(want, None, &key) else { return Vec::new() };
    let mut out = Vec::new();
    compare(&doc, Some(config), "", &mut out);
    out
}

/// Stands for "a key is set" where fleet would write one.
const KEY_PRESENT: &str = "\u{0}fleet: a key";

fn compare(want: &Value, have: Option<&Value>, path: &str, out: &mut Vec<String>) {
    let at = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    let have = have.filter(|h| !h.is_null());
    match (want, have) {
        (Value::Null, None) => {}
        (Value::Null, Some(_)) => out.push(path.to_string()),
        (Value::Object(w), Some(Value::Object(h))) => {
            for (k, v) in w {
                compare(v, h.get(k), &at(k), out);
            }
        }
        // Nothing there where fleet wrote something (an object of nulls only deletes: it is in place).
        (Value::Object(w), None) if w.values().all(Value::is_null) => {}
        (Value::String(k), Some(Value::String(h))) if k == KEY_PRESENT => {
            if h.is_empty() {
                out.push(path.to_string());
            }
        }
        (Value::Array(w), Some(Value::Array(h))) if w.iter().all(|x| x.get("id").is_some()) => {
            let ids = |a: &[Value]| a.iter().map(|x| x.get("id").cloned().unwrap_or_default()).collect::<Vec<_>>();
            if ids(w) != ids(h) {
                out.push(path.to_string());
            }
        }
        (w, Some(h)) if w == h => {}
        _ => out.push(path.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::openclaw::agents_config::AgentIdentity;
    use crate::openclaw::client::GatewayRef;

    fn inputs() -> ModelsInputs {
        let agent = |models: &[&str], heartbeat: Option<&str>| AgentModels {
            workspace: "/w/alice".into(),
            models: models.iter().map(|m| m.to_string()).collect(),
            primary: models[0].to_string(),
            fallbacks: models[1..].iter().map(|m| m.to_string()).collect(),
            heartbeat: heartbeat.map(str::to_string),
            heartbeat_prompt: None,
            identity: Some(AgentIdentity { name: Some("Alice".into()), emoji: None, theme: None }),
            env_file: "/nowhere".into(),
            restore: Default::default(),
            sandbox: None,
        };
        ModelsInputs {
            gateway: GatewayRef { name: "main".into(), url: "ws://x".into(), token_file: "/t".into() },
            base_url: "http://127.0.0.1:4000/v1".into(),
            agents: BTreeMap::from([
                ("alice".to_string(), agent(&["small", "large"], Some("30m"))),
                ("bob".to_string(), agent(&["small"], None)),
            ]),
            state_db: None,
        }
    }

    /// The config as `config.get` gave it after fleet's patch (measured on 2026.9.6, trimmed).
    fn as_gateway_has_it() -> Value {
        let model = |id: &str| json!({"id": id, "name": id, "reasoning": false, "maxTokens": 8192});
        json!({
            "agents": {
                "ownership": "explicit",
                "defaults": {"systemAgent": {"agentId": "main"}, "heartbeat": {"agentId": "main"}, "maxConcurrent": 8},
                "entries": {
                    "main": {"workspace": "/h/state/workspace", "model": {"primary": "fleet-unassigned/none", "fallbacks": []}},
                    "alice": {"name": "alice", "workspace": "/w/alice",
                        "model": {"primary": "fleet-alice/small", "fallbacks": ["fleet-alice/large"]},
                        "heartbeat": {"every": "30m"}, "identity": {"name": "Alice"}},
                    "bob": {"name": "bob", "workspace": "/w/alice",
                        "model": {"primary": "fleet-bob/small", "fallbacks": []}, "identity": {"name": "Alice"}},
                }
            },
            "models": {"providers": {
                "fleet-alice": {"baseUrl": "http://127.0.0.1:4000/v1", "apiKey": "__OPENCLAW_REDACTED__",
                    "api": "openai-completions", "models": [model("small"), model("large")]},
                "fleet-bob": {"baseUrl": "http://127.0.0.1:4000/v1", "apiKey": "__OPENCLAW_REDACTED__",
                    "api": "openai-completions", "models": [model("small")]},
            }},
            "talk": {"agentId": "main"},
            "gateway": {"port": 1},
        })
    }

    #[test]
    fn a_config_holding_what_fleet_wrote_has_no_differences() {
        assert_eq!(differences(&as_gateway_has_it(), &inputs(), Keys::Present), Vec::<String>::new());
    }

    #[test]
    fn an_agent_without_its_model_or_provider_or_key_differs_by_path() {
        let mut c = as_gateway_has_it();
        c["agents"]["entries"]["bob"].as_object_mut().unwrap().remove("model");
        c["models"]["providers"]["fleet-alice"]["apiKey"] = json!("");
        c["models"]["providers"]["fleet-alice"]["models"].as_array_mut().unwrap().pop();
        c["agents"]["entries"]["main"]["model"]["primary"] = json!("openai/gpt-5");
        c["agents"]["entries"]["alice"]["heartbeat"] = Value::Null;
        assert_eq!(
            differences(&c, &inputs(), Keys::Present),
            [
                "agents.entries.alice.heartbeat",
                "agents.entries.bob.model",
                "agents.entries.main.model.primary",
                "models.providers.fleet-alice.apiKey",
                "models.providers.fleet-alice.models",
            ]
        );
    }

    #[test]
    fn a_lost_config_differs_at_its_roots_and_a_removed_setting_must_stay_removed() {
        assert_eq!(
            differences(&json!({"gateway": {"port": 1}}), &inputs(), Keys::Present),
            ["agents", "models", "talk"]
        );
        let mut c = as_gateway_has_it();
        c["agents"]["entries"]["bob"]["heartbeat"] = json!({"every": "5m"});
        assert_eq!(differences(&c, &inputs(), Keys::Present), ["agents.entries.bob.heartbeat"]);
    }

    #[test]
    fn against_its_file_each_key_must_be_the_agents_own() {
        use crate::litellm::keys::{mint_raw, AgentEnv, KEY_PREFIX};
        let dir = tempfile::tempdir().unwrap();
        let mut want = inputs();
        let mut c = as_gateway_has_it();
        for (id, a) in want.agents.iter_mut() {
            a.env_file = dir.path().join(id).join("env");
            let key = mint_raw(KEY_PREFIX);
            AgentEnv { agent: id, base_url: "u", model: "m", key: &key }.write(&a.env_file).unwrap();
            c["models"]["providers"][format!("fleet-{id}")]["apiKey"] = json!(key.expose());
        }
        assert_eq!(differences(&c, &want, Keys::Exact), Vec::<String>::new());
        c["models"]["providers"]["fleet-bob"]["apiKey"] = c["models"]["providers"]["fleet-alice"]["apiKey"].clone();
        assert_eq!(differences(&c, &want, Keys::Exact), ["models.providers.fleet-bob.apiKey"]);
    }
}
