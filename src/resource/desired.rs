//! Fleet model → desired resources. Pure: renders file contents in memory.

use serde_json::json;

use super::{Desired, FileOut, Kind, Resource};
use crate::fsutil::sha256_hex;
use crate::layout::Layout;
use crate::litellm::config;
use crate::spec::FleetSpec;

pub const MASTER_KEY: &str = "litellm.master-key";
pub const CONFIG: &str = "litellm.config";
pub const INSTALL: &str = "litellm.install";
pub const PROXY: &str = "litellm.proxy";
pub const CALLBACK_TOKEN: &str = "litellm.callback-token";

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

    // The secret files fleet mints for the proxy: the config and the proxy wait for them.
    let mut secret_deps = Vec::new();
    let master_ref = match &spec.litellm.master_key {
        Some(r) => r.to_string(),
        None => {
            let file = layout.master_key_file();
            add(Resource::new(MASTER_KEY, Kind::Secret, json!({"file": file, "prefix": "sk-fleet-admin-"}), vec![]));
            secret_deps.push(MASTER_KEY.to_string());
            format!("file:{}", file.display())
        }
    };

    let install_inputs = match &spec.litellm.path {
        Some(path) => json!({"path": path}),
        None => json!({
            "version": spec.litellm.version,
            "venv": crate::litellm::install::venv_dir(&layout.cache_dir, &spec.litellm.version),
        }),
    };
    let exe = crate::litellm::install::exe_of(&install_inputs).expect("install inputs name an executable");
    add(Resource::new(INSTALL, Kind::LitellmInstall, install_inputs, vec![]));

    let rendered = config::render(spec);
    let mut files = vec![
        FileOut { path: layout.litellm_config(), content: rendered.into_bytes(), mode: 0o644 },
        FileOut { path: layout.auth_module(), content: config::AUTH_MODULE_SOURCE.as_bytes().to_vec(), mode: 0o644 },
    ];
    if spec.litellm.callback.is_some() {
        let path = layout.litellm_dir().join(format!("{}.py", config::CALLBACK_MODULE));
        files.push(FileOut { path, content: config::CALLBACK_MODULE_SOURCE.as_bytes().to_vec(), mode: 0o644 });
    }
    let mut models: Vec<&str> =
        spec.providers.iter().flat_map(|p| p.models.iter().map(|m| m.name.value.as_str())).collect();
    models.sort();
    let backend = match spec.litellm.keys {
        crate::spec::KeyBackend::File => "file",
        crate::spec::KeyBackend::Database { .. } => "database",
    };
    let hashes: Vec<String> = files.iter().map(|f| sha256_hex(&f.content)).collect();
    let inputs = json!({
        "models": models,
        "key_backend": backend,
        "files": files.iter().zip(&hashes).map(|(f, h)| (file_name(&f.path), json!(h))).collect::<serde_json::Map<_, _>>(),
    });
    let config_digest = hashes.concat();
    add(Resource::new(CONFIG, Kind::LitellmConfig, inputs, secret_deps.clone()).with_files(files));

    let mut env = std::collections::BTreeMap::new();
    env.insert(config::MASTER_KEY_ENV.to_string(), master_ref);
    for p in &spec.providers {
        if let Some((var, r)) = config::provider_key_env(p) {
            env.insert(var, r.to_string());
        }
    }
    if let crate::spec::KeyBackend::Database { url } = &spec.litellm.keys {
        env.insert(config::DATABASE_URL_ENV.to_string(), url.to_string());
    }
    if let Some(cb) = &spec.litellm.callback {
        env.insert("FLEET_CALLBACK_URL".to_string(), format!("value:{}", cb.url));
        let token = match &cb.token {
            Some(r) => r.to_string(),
            None => {
                let file = layout.litellm_dir().join("callback.token");
                add(Resource::new(CALLBACK_TOKEN, Kind::Secret, json!({"file": file, "prefix": "fleet-cb-"}), vec![]));
                secret_deps.push(CALLBACK_TOKEN.to_string());
                format!("file:{}", file.display())
            }
        };
        env.insert("FLEET_CALLBACK_TOKEN".to_string(), token);
    }
    let proxy = json!({
        "exe": exe,
        "config": layout.litellm_config(),
        "config_sha256": sha256_hex(config_digest.as_bytes()),
        "bind": spec.litellm.bind,
        "port": spec.litellm.port,
        "log": layout.litellm_dir().join("proxy.log"),
        "pid_file": layout.litellm_dir().join("proxy.pid"),
        "env": env,
        "start_timeout_s": spec.litellm.start_timeout_s,
    });
    let mut proxy_deps = vec![INSTALL.to_string(), CONFIG.to_string()];
    proxy_deps.extend(secret_deps);
    add(Resource::new(PROXY, Kind::LitellmProxy, proxy, proxy_deps));

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
        // File keys take effect through the key file, whether the proxy runs or not; database
        // keys are minted through the running proxy.
        let dep = match spec.litellm.keys {
            crate::spec::KeyBackend::File => CONFIG,
            crate::spec::KeyBackend::Database { .. } => PROXY,
        };
        add(Resource::new(key_address(name), Kind::Key, inputs, vec![dep.to_string()]));
    }
    super::desired_openclaw::add(spec, layout, &mut out);
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
                "fleet \"q\"\nprovider \"d\" type=\"mock\" { models \"a\" \"b\" }\nagent \"alice\" model=\"a\" { fallback \"b\" }\nagent \"bob\" model=\"b\"\n".into(),
            ),
            std::path::Path::new("/x"),
        )
        .unwrap();
        let layout = Layout::resolve("q", None, Some(std::path::Path::new("/data")));
        let d = desired(&spec, &layout);
        let addrs: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(
            addrs,
            vec!["key.alice", "key.bob", "litellm.config", "litellm.install", "litellm.master-key", "litellm.proxy"]
        );
        assert_eq!(d["litellm.proxy"].deps, vec!["litellm.install", "litellm.config", "litellm.master-key"]);
        assert_eq!(d["litellm.proxy"].inputs["env"]["LITELLM_MASTER_KEY"], "file:/data/litellm/master.key");
        assert_eq!(d["key.alice"].inputs["models"], json!(["a", "b"]));
        assert_eq!(d["key.alice"].deps, vec!["litellm.config"]);
        assert_eq!(d["litellm.config"].deps, vec!["litellm.master-key"]);
        assert_eq!(d["key.bob"].inputs["env_file"], "/data/agents/bob/env");
        // Same model, same fingerprints.
        let again = desired(&spec, &layout);
        assert!(d.iter().all(|(k, r)| again[k].fingerprint == r.fingerprint));
    }
}
