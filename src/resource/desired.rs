//! Fleet model → desired resources. Pure: renders file contents in memory.

use serde_json::json;

use super::{Desired, FileOut, Kind, Resource};
use crate::fsutil::sha256_hex;
use crate::layout::Layout;
use crate::litellm::config;
use crate::spec::FleetSpec;

pub const MASTER_KEY: &str = "litellm.master-key";
pub const CONFIG: &str = "litellm.config";

pub fn key_address(agent: &str) -> String {
    format!("key.{agent}")
}

pub fn key_alias(agent: &str) -> String {
    format!("fleet-{agent}")
}

/// The URL agents on this machine use to reach the proxy.
pub fn proxy_base_url(spec: &FleetSpec) -> String {
    let host = match spec.litellm.bind.as_str() {
        "0.0.0.0" | "::" | "" => "127.0.0.1",
        other => other,
    };
    format!("http://{host}:{}/v1", spec.litellm.port)
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

pub fn desired(spec: &FleetSpec, layout: &Layout) -> Desired {
    let mut out = Desired::new();
    let mut add = |r: Resource| {
        out.insert(r.address.clone(), r);
    };

    let mut config_deps = Vec::new();
    if spec.litellm.master_key.is_none() {
        let file = layout.master_key_file();
        add(Resource::new(MASTER_KEY, Kind::LitellmMasterKey, json!({"file": file}), vec![]));
        config_deps.push(MASTER_KEY.to_string());
    }

    let rendered = config::render(spec);
    let files = vec![
        FileOut { path: layout.litellm_config(), content: rendered.into_bytes(), mode: 0o644 },
        FileOut { path: layout.auth_module(), content: config::AUTH_MODULE_SOURCE.as_bytes().to_vec(), mode: 0o644 },
    ];
    let mut models: Vec<&str> =
        spec.providers.iter().flat_map(|p| p.models.iter().map(|m| m.name.value.as_str())).collect();
    models.sort();
    let backend = match spec.litellm.keys {
        crate::spec::KeyBackend::File => "file",
        crate::spec::KeyBackend::Database { .. } => "database",
    };
    let inputs = json!({
        "models": models,
        "key_backend": backend,
        "files": files.iter().map(|f| (file_name(&f.path), json!(sha256_hex(&f.content)))).collect::<serde_json::Map<_, _>>(),
    });
    add(Resource::new(CONFIG, Kind::LitellmConfig, inputs, config_deps).with_files(files));

    let base_url = proxy_base_url(spec);
    for a in &spec.agents {
        let name = &a.name.value;
        let inputs = json!({
            "alias": key_alias(name),
            "models": a.models(),
            "metadata": {"agent": name},
            "env_file": layout.agent_env(name),
            "base_url": base_url,
            "model": a.model.value,
        });
        add(Resource::new(key_address(name), Kind::Key, inputs, vec![CONFIG.to_string()]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse, SourceFile};

    #[test]
    fn quickstart_shape() {
        let spec = parse(
            SourceFile::new(
                "fleet.kdl",
                "fleet \"q\"\nprovider \"d\" type=\"mock\" { models \"a\" \"b\" }\ngateway \"main\"\nagent \"alice\" model=\"a\" { fallback \"b\" }\nagent \"bob\" model=\"b\"\n".into(),
            ),
            std::path::Path::new("/x"),
        )
        .unwrap();
        let layout = Layout::resolve("q", None, Some(std::path::Path::new("/data")));
        let d = desired(&spec, &layout);
        let addrs: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(addrs, vec!["key.alice", "key.bob", "litellm.config", "litellm.master-key"]);
        assert_eq!(d["key.alice"].inputs["models"], json!(["a", "b"]));
        assert_eq!(d["key.alice"].deps, vec!["litellm.config"]);
        assert_eq!(d["litellm.config"].deps, vec!["litellm.master-key"]);
        assert_eq!(d["key.bob"].inputs["env_file"], "/data/agents/bob/env");
        // Same model, same fingerprints.
        let again = desired(&spec, &layout);
        assert!(d.iter().all(|(k, r)| again[k].fingerprint == r.fingerprint));
    }
}
