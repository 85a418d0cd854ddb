//! LiteLLM → resources: the secrets fleet mints for the proxy, its config, its install,
//! the proxy process, and one key per agent. Pure.

use std::collections::BTreeMap;

use serde_json::json;

use crate::fleetfile::{FleetSpec, KeyBackend, Spend};
use crate::fsutil::sha256_hex;
use crate::layout::Layout;
use crate::litellm::config;
use crate::litellm::install::InstallInputs;
use crate::litellm::proxy::ProxyInputs;
use crate::litellm::resources::{ConfigInputs, KeyInputs, SecretInputs};
use crate::resource::{add as put, Address, Desired, FileOut, Resource};

pub fn key_alias(agent: &str) -> String {
    format!("fleet-{agent}")
}

/// The URL agents on this machine use to reach the proxy.
pub fn proxy_base_url(spec: &FleetSpec) -> String {
    format!("{}/v1", crate::netaddr::http_url(&spec.litellm.bind, spec.litellm.port))
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// What the key carries for the auth module: the agent's name, and its budget and limits when it
/// has them (an agent without spend control keeps the bare `{"agent"}` it always had).
fn key_metadata(agent: &str, spend: &Spend) -> BTreeMap<String, serde_json::Value> {
    let mut md = BTreeMap::from([("agent".to_string(), json!(agent))]);
    if let Some(b) = spend.budget {
        md.insert("budget".into(), json!({"usd": b.usd, "per": b.per.as_str()}));
    }
    if spend.rpm.is_some() || spend.tpm.is_some() {
        let mut l = serde_json::Map::new();
        l.extend(spend.rpm.map(|v| ("rpm".to_string(), json!(v))));
        l.extend(spend.tpm.map(|v| ("tpm".to_string(), json!(v))));
        md.insert("limits".into(), serde_json::Value::Object(l));
    }
    md
}

pub fn add(spec: &FleetSpec, layout: &Layout, out: &mut Desired) {
    // The secret files fleet mints for the proxy: the config and the proxy wait for them.
    let mut secret_deps = Vec::new();
    let master_ref = match &spec.litellm.master_key {
        Some(r) => r.to_string(),
        None => {
            let file = layout.master_key_file();
            let inputs = SecretInputs { file: file.clone(), prefix: "sk-fleet-admin-".into() };
            put(out, Resource::new(Address::MasterKey, &inputs, vec![]));
            secret_deps.push(Address::MasterKey);
            format!("file:{}", file.display())
        }
    };

    let install = match &spec.litellm.path {
        Some(path) => InstallInputs::Path { path: path.clone() },
        None => InstallInputs::Venv {
            version: spec.litellm.version.clone(),
            venv: crate::litellm::install::venv_dir(&layout.cache_dir, &spec.litellm.version),
        },
    };
    let exe = install.exe();
    put(out, Resource::new(Address::LitellmInstall, &install, vec![]));

    let rendered = config::render(spec);
    let mut files = vec![
        FileOut { path: layout.litellm_config(), content: rendered.into_bytes(), mode: 0o644 },
        FileOut { path: layout.auth_module(), content: config::AUTH_MODULE_SOURCE.as_bytes().to_vec(), mode: 0o644 },
    ];
    if spec.litellm.callback.is_some() {
        let path = layout.litellm_dir().join(format!("{}.py", config::CALLBACK_MODULE));
        files.push(FileOut { path, content: config::CALLBACK_MODULE_SOURCE.as_bytes().to_vec(), mode: 0o644 });
    }
    let mut models: Vec<String> =
        spec.providers.iter().flat_map(|p| p.models.iter().map(|m| m.name.value.clone())).collect();
    models.sort();
    let key_backend = match spec.litellm.keys {
        KeyBackend::File => "file",
        KeyBackend::Database { .. } => "database",
    };
    let hashes: Vec<String> = files.iter().map(|f| sha256_hex(&f.content)).collect();
    let inputs = ConfigInputs {
        models,
        key_backend: key_backend.into(),
        files: files.iter().zip(&hashes).map(|(f, h)| (file_name(&f.path), h.clone())).collect(),
    };
    let config_digest = hashes.concat();
    put(out, Resource::new(Address::LitellmConfig, &inputs, secret_deps.clone()).with_files(files));

    let mut env = BTreeMap::new();
    env.insert(config::MASTER_KEY_ENV.to_string(), master_ref);
    for p in &spec.providers {
        if let Some((var, r)) = config::provider_key_env(p) {
            env.insert(var, r.to_string());
        }
    }
    if let KeyBackend::Database { url } = &spec.litellm.keys {
        env.insert(config::DATABASE_URL_ENV.to_string(), url.to_string());
    }
    if let Some(cb) = &spec.litellm.callback {
        env.insert("FLEET_CALLBACK_URL".to_string(), format!("value:{}", cb.url));
        let token = match &cb.token {
            Some(r) => r.to_string(),
            None => {
                let file = layout.litellm_dir().join("callback.token");
                let inputs = SecretInputs { file: file.clone(), prefix: "fleet-cb-".into() };
                put(out, Resource::new(Address::CallbackToken, &inputs, vec![]));
                secret_deps.push(Address::CallbackToken);
                format!("file:{}", file.display())
            }
        };
        env.insert("FLEET_CALLBACK_TOKEN".to_string(), token);
    }
    let proxy = ProxyInputs {
        exe,
        config: layout.litellm_config(),
        config_sha256: sha256_hex(config_digest.as_bytes()),
        bind: spec.litellm.bind.clone(),
        port: spec.litellm.port,
        log: layout.litellm_dir().join("proxy.log"),
        pid_file: layout.litellm_dir().join("proxy.pid"),
        env,
        start_timeout_s: spec.litellm.start_timeout_s,
    };
    let mut proxy_deps = vec![Address::LitellmInstall, Address::LitellmConfig];
    proxy_deps.extend(secret_deps);
    put(out, Resource::new(Address::LitellmProxy, &proxy, proxy_deps));

    let base_url = proxy_base_url(spec);
    for a in &spec.agents {
        let name = &a.name.value;
        let inputs = KeyInputs {
            alias: key_alias(name),
            models: a.models(),
            metadata: key_metadata(name, &a.spend),
            env_file: layout.agent_env(name),
            base_url: base_url.clone(),
            model: a.model.value.clone(),
        };
        // File keys take effect through the key file, whether the proxy runs or not; database
        // keys are minted through the running proxy.
        let dep = match spec.litellm.keys {
            KeyBackend::File => Address::LitellmConfig,
            KeyBackend::Database { .. } => Address::LitellmProxy,
        };
        put(out, Resource::new(Address::Key(name.clone()), &inputs, vec![dep]));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::fleetfile::{parse, SourceFile};
    use crate::layout::Layout;
    use crate::resource::Address;

    #[test]
    fn quickstart_shape() {
        let spec = parse(
            SourceFile::new(
                "fleet.kdl",
                "fleet \"q\"\nprovider \"d\" type=\"mock\" { models \"a\" \"b\" }\nagent \"alice\" model=\"a\" { fallback \"b\" }\nagent \"bob\" model=\"b\"\n".into(),
            ),
            std::path::Path::new("/x"),
        )
        .unwrap();
        let layout = Layout::resolve("q", None, Some(std::path::Path::new("/data")));
        let d = crate::desired::desired(&spec, &layout).unwrap();
        let addrs: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(
            addrs,
            vec!["key.alice", "key.bob", "litellm.config", "litellm.install", "litellm.master-key", "litellm.proxy"]
        );
        assert_eq!(d["litellm.proxy"].deps, vec![Address::LitellmInstall, Address::LitellmConfig, Address::MasterKey]);
        assert_eq!(d["litellm.proxy"].inputs["env"]["LITELLM_MASTER_KEY"], "file:/data/litellm/master.key");
        assert_eq!(d["key.alice"].inputs["models"], json!(["a", "b"]));
        assert_eq!(d["key.alice"].deps, vec![Address::LitellmConfig]);
        assert_eq!(d["litellm.config"].deps, vec![Address::MasterKey]);
        assert_eq!(d["key.bob"].inputs["env_file"], "/data/agents/bob/env");
        // Same model, same fingerprints.
        let again = crate::desired::desired(&spec, &layout).unwrap();
        assert!(d.iter().all(|(k, r)| again[k].fingerprint == r.fingerprint));
    }
}
