//! The LiteLLM proxy config, rendered from the fleet model. Pure: no I/O.
//!
//! - one `model_list` entry per model a provider declares, with a stable `model_info.id`;
//! - a `default` alias to the fleet's default model (`litellm { default-model … }`, else the
//!   first declared model) unless a model is itself called `default`; agent keys are never
//!   scoped to it, so it serves admin and smoke-test calls only;
//! - provider API keys and the master key as `os.environ/NAME` references, never values;
//! - fleet's `custom_auth` module and both flags that make LiteLLM enforce per-key models.

use serde_json::{json, Map, Value};

use crate::fleetfile::secret::SecretRef;
use crate::fleetfile::{FleetSpec, KeyBackend, ModelDecl, Provider, ProviderKind};

pub const MASTER_KEY_ENV: &str = "LITELLM_MASTER_KEY";
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";
pub const AUTH_MODULE: &str = "fleet_auth";
pub const AUTH_MODULE_SOURCE: &str = include_str!("fleet_auth.py");
pub const DEFAULT_ALIAS: &str = "default";
pub const CALLBACK_MODULE: &str = "fleet_callback";
pub const CALLBACK_MODULE_SOURCE: &str = include_str!("fleet_callback.py");

/// The environment variable the proxy reads a provider's key from, and where its value comes from.
pub fn provider_key_env(p: &Provider) -> Option<(String, SecretRef)> {
    let r = p.api_key.clone()?.value;
    let var = match &r {
        SecretRef::Env(name) => name.clone(),
        SecretRef::File(_) => format!("FLEET_PROVIDER_{}_API_KEY", env_word(&p.name.value)),
    };
    Some((var, r))
}

fn env_word(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// The LiteLLM provider prefix a provider's models are routed with (`openai/<model>`).
pub fn route_prefix(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible | ProviderKind::Mock => "openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::OpenRouter => "openrouter",
        ProviderKind::Ollama => "ollama",
    }
}

fn litellm_params(p: &Provider, m: &ModelDecl) -> Value {
    let (model, response) = (m.name.value.as_str(), m.response.as_deref());
    let mut params = Map::new();
    let prefix = route_prefix(p.kind);
    params.insert("model".into(), json!(format!("{prefix}/{model}")));
    match provider_key_env(p) {
        Some((var, _)) => {
            params.insert("api_key".into(), json!(format!("os.environ/{var}")));
        }
        // A local OpenAI-style server that asks for no key: LiteLLM's OpenAI client still needs one
        // to build a request (without it every call fails before it is sent).
        None if p.kind == ProviderKind::OpenAiCompatible => {
            params.insert("api_key".into(), json!("no-key"));
        }
        None => {}
    }
    match (p.kind, &p.url) {
        (_, Some(url)) => {
            params.insert("api_base".into(), json!(url));
        }
        (ProviderKind::Ollama, None) => {
            params.insert("api_base".into(), json!("http://127.0.0.1:11434"));
        }
        _ => {}
    }
    if p.kind == ProviderKind::Mock {
        let text = response.unwrap_or(crate::fleetfile::model::DEFAULT_MOCK_RESPONSE);
        params.insert("mock_response".into(), json!(text));
    }
    if let Some(price) = m.price {
        // The fleet file says USD per million tokens; LiteLLM wants USD per token.
        params.insert("input_cost_per_token".into(), json!(price.input_per_mtok / 1e6));
        params.insert("output_cost_per_token".into(), json!(price.output_per_mtok / 1e6));
    }
    Value::Object(params)
}

/// The config as a JSON value (JSON is valid YAML; LiteLLM reads it as such).
pub fn render_value(spec: &FleetSpec) -> Value {
    let mut list = Vec::new();
    let mut first: Option<(&Provider, &ModelDecl)> = None;
    let mut wanted_default = None;
    for p in &spec.providers {
        for m in &p.models {
            list.push(json!({
                "model_name": m.name.value,
                "litellm_params": litellm_params(p, m),
                "model_info": {"id": format!("fleet-{}-{}", p.name.value, m.name.value)},
            }));
            first.get_or_insert((p, m));
            if spec.litellm.default_model.as_ref().is_some_and(|d| d.value == m.name.value) {
                wanted_default = Some((p, m));
            }
        }
    }
    let has_own_default = spec.providers.iter().flat_map(|p| &p.models).any(|m| m.name.value == DEFAULT_ALIAS);
    if let (Some((p, m)), false) = (wanted_default.or(first), has_own_default) {
        list.push(json!({
            "model_name": DEFAULT_ALIAS,
            "litellm_params": litellm_params(p, m),
            "model_info": {"id": "fleet-default"},
        }));
    }
    let mut general = json!({"master_key": format!("os.environ/{MASTER_KEY_ENV}")});
    match &spec.litellm.keys {
        KeyBackend::File => {
            general["custom_auth"] = json!(format!("{AUTH_MODULE}.user_api_key_auth"));
            general["custom_auth_run_common_checks"] = json!(true);
        }
        KeyBackend::Database { .. } => {
            general["database_url"] = json!(format!("os.environ/{DATABASE_URL_ENV}"));
        }
    }
    let mut settings = json!({"drop_params": true});
    if spec.litellm.keys == KeyBackend::File {
        settings["enable_post_custom_auth_checks"] = json!(true);
    }
    let mut callbacks = Vec::new();
    if spec.litellm.keys == KeyBackend::File {
        // Spend per agent, into the ledger the auth module checks budgets against.
        callbacks.push(format!("{AUTH_MODULE}.spend"));
    }
    if spec.litellm.callback.is_some() {
        callbacks.push(format!("{CALLBACK_MODULE}.handler"));
    }
    if !callbacks.is_empty() {
        settings["callbacks"] = json!(callbacks);
    }
    json!({
        "model_list": list,
        "general_settings": general,
        "litellm_settings": settings,
    })
}

pub fn render(spec: &FleetSpec) -> String {
    let mut s = serde_json::to_string_pretty(&render_value(spec)).expect("JSON values always serialise");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleetfile::{parse, SourceFile};

    fn spec(text: &str) -> FleetSpec {
        parse(SourceFile::new("fleet.kdl", text.into()), std::path::Path::new("/x")).unwrap()
    }

    #[test]
    fn renders_models_default_alias_and_scoping_flags() {
        let s = spec(
            r#"fleet "t"
provider "demo" type="mock" { model "demo-small" response="Hi." }
provider "or" type="openrouter" api-key="env:OPENROUTER_API_KEY" { models "openai/gpt-4o-mini" }
provider "local" type="openai-compatible" url="http://127.0.0.1:8000/v1" api-key="file:secrets/local" { models "qwen" }
"#,
        );
        let v = render_value(&s);
        let names: Vec<&str> =
            v["model_list"].as_array().unwrap().iter().map(|m| m["model_name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["demo-small", "openai/gpt-4o-mini", "qwen", "default"]);
        assert_eq!(v["model_list"][0]["litellm_params"]["mock_response"], "Hi.");
        assert_eq!(v["model_list"][1]["litellm_params"]["model"], "openrouter/openai/gpt-4o-mini");
        assert_eq!(v["model_list"][1]["litellm_params"]["api_key"], "os.environ/OPENROUTER_API_KEY");
        assert_eq!(v["model_list"][2]["litellm_params"]["api_key"], "os.environ/FLEET_PROVIDER_LOCAL_API_KEY");
        assert_eq!(v["model_list"][2]["litellm_params"]["api_base"], "http://127.0.0.1:8000/v1");
        assert_eq!(v["model_list"][3]["litellm_params"]["model"], "openai/demo-small");
        assert_eq!(v["general_settings"]["custom_auth"], "fleet_auth.user_api_key_auth");
        assert_eq!(v["general_settings"]["custom_auth_run_common_checks"], true);
        assert_eq!(v["litellm_settings"]["enable_post_custom_auth_checks"], true);
        assert_eq!(v["general_settings"]["master_key"], "os.environ/LITELLM_MASTER_KEY");
    }

    #[test]
    fn default_model_is_honoured_and_a_real_default_model_wins() {
        let s =
            spec("fleet \"t\"\nlitellm { default-model \"b\" }\nprovider \"d\" type=\"mock\" { models \"a\" \"b\" }\n");
        let v = render_value(&s);
        assert_eq!(v["model_list"][2]["litellm_params"]["model"], "openai/b");
        let s = spec("fleet \"t\"\nprovider \"d\" type=\"mock\" { models \"a\" \"default\" }\n");
        assert_eq!(render_value(&s)["model_list"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn rendering_is_deterministic() {
        let text = "fleet \"t\"\nprovider \"d\" type=\"mock\" { models \"a\" \"b\" }\n";
        assert_eq!(render(&spec(text)), render(&spec(text)));
    }
}
