//! Gateways and agents → resources: the toolchain, a token and a process (or
//! container) per gateway, an agent per agent, one models patch per gateway, and
//! a wake per agent. Pure.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::desired::{key_address, proxy_base_url, PROXY};
use super::{Desired, FileOut, Kind, Resource};
use crate::fsutil::sha256_hex;
use crate::layout::Layout;
use crate::openclaw::agent::GatewayRef;
use crate::openclaw::models::{AgentModels, ModelsInputs};
use crate::openclaw::roster;
use crate::openclaw::toolchain::Toolchain;
use crate::openclaw::workspace;
use crate::runtime::{Container, Launch};
use crate::spec::{FleetSpec, Runtime};

pub const TOOLCHAIN: &str = "openclaw.toolchain";
/// Seconds a gateway gets to answer `health` (12.6–28 s measured on 2 cores).
pub const GATEWAY_START_TIMEOUT_S: u64 = 180;

pub fn gateway_address(gw: &str) -> String {
    format!("gateway.{gw}")
}

pub fn default_wake(name: &str) -> String {
    format!(
        "Hello {name}. fleet has just provisioned you: read your workspace files, then introduce yourself in one line."
    )
}

pub fn add(spec: &FleetSpec, layout: &Layout, out: &mut Desired) {
    let mut put = |r: Resource| {
        out.insert(r.address.clone(), r);
    };
    let runtime_of = |host: &str| spec.hosts.iter().find(|h| h.name.value == host).map(|h| h.runtime);
    let toolchain = Toolchain::new(&layout.cache_dir, &spec.openclaw.node, &spec.openclaw.version);
    // Process gateways run the cached toolchain, unless they name an image: then its own Node + openclaw.
    if spec.gateways.iter().any(|g| runtime_of(&g.host.value) == Some(Runtime::Process) && g.image.is_none()) {
        put(Resource::new(TOOLCHAIN, Kind::Toolchain, json!(toolchain), vec![]));
    }

    let mut imported = std::collections::BTreeSet::new();
    for g in &spec.gateways {
        let gw = &g.name.value;
        let runtime = runtime_of(&g.host.value).unwrap_or(Runtime::Process);
        let home = layout.gateway_home(gw);
        let host = spec.hosts.iter().find(|h| h.name.value == g.host.value);
        let remote = host.and_then(|h| h.remote.clone());
        let mut container = None;
        let mut image_deps = Vec::new();
        let mut image_root = None;
        let mut image_source = Value::Null;
        if let (Some(img_name), Some(host)) = (&g.image, host) {
            let img = spec.images.iter().find(|i| i.name.value == img_name.value);
            let arch = host.arch;
            let image_addr = format!("image.{}[{}]", img_name.value, arch.as_str());
            let file;
            let source;
            let inputs = match img.and_then(|i| i.urls.get(&arch)) {
                Some(u) => {
                    file = layout.cache_dir.join("images/fetched").join(format!("{}.tar.gz", u.sha256));
                    source = json!(u.sha256);
                    json!({"name": img_name.value, "arch": arch.as_str(), "url": u.url, "sha256": u.sha256, "file": file})
                }
                None => {
                    let recipe = img.and_then(|i| i.recipe.as_ref()).map(|r| r.value.clone()).unwrap_or_default();
                    let fingerprint = img.and_then(|i| i.recipe_fingerprint.clone());
                    source = json!(fingerprint);
                    let stem = format!("{}-{}", img_name.value, arch.as_str());
                    file = layout.cache_dir.join("images/out").join(&stem).join(format!("{stem}.tar.gz"));
                    json!({"name": img_name.value, "arch": arch.as_str(), "recipe": recipe, "recipe_fingerprint": fingerprint, "file": file})
                }
            };
            let import_addr = format!("import.{}@{}", img_name.value, host.name.value);
            // What the image is (its sha256, or its recipe's fingerprint): a new one re-imports.
            let mut import =
                json!({"image": image_addr, "file": file, "alias": img_name.value, "remote": remote, "source": source});
            if runtime == Runtime::Process {
                let store = layout.image_store(&host.name.value, &img_name.value);
                image_root = Some(store.join("rootfs"));
                import["store"] = json!(store);
            }
            if imported.insert(import_addr.clone()) {
                put(Resource::new(&image_addr, Kind::Image, inputs, vec![]));
                put(Resource::new(&import_addr, Kind::Import, import, vec![image_addr.clone()]));
            }
            image_deps.push(import_addr);
            // A new image restarts the gateways running it.
            image_source = source;
        }
        if let (Runtime::Incus, Some(img_name), Some(host)) = (runtime, &g.image, host) {
            let forward = if spec.litellm.host.value == host.name.value { vec![spec.litellm.port] } else { vec![] };
            container = Some(Container {
                name: format!("fleet-{}-{gw}", spec.name),
                image: img_name.value.clone(),
                remote: remote.clone(),
                forward,
            });
        }
        // Only a gateway whose home is on this machine has a state database fleet can read.
        let home_here = container.as_ref().is_none_or(|c| c.remote.is_none());
        let launch = Launch {
            gateway: gw.clone(),
            home: home.clone(),
            port: g.port,
            log: layout.gateway_log(gw),
            toolchain: (runtime == Runtime::Process && image_root.is_none()).then(|| toolchain.clone()),
            image_root,
            container,
        };
        let token_addr = format!("gateway.{gw}.token");
        let token_file = layout.gateway_token(gw);
        put(Resource::new(&token_addr, Kind::Secret, json!({"file": token_file, "prefix": "fleet-gw-"}), vec![]));
        // Where the gateway sees its home: the same path for a process, /root in a container.
        let home_inside = if runtime == Runtime::Incus { std::path::PathBuf::from("/root") } else { home.clone() };
        let settings = json!({
            "gateway": {"mode": "local", "port": g.port, "bind": "loopback", "auth": {"mode": "token"}},
            "update": {"checkOnStart": false},
            "logging": {"file": home_inside.join("logs/openclaw.log")},
        });
        let mut deps = vec![token_addr];
        deps.extend(image_deps);
        if launch.toolchain.is_some() {
            deps.push(TOOLCHAIN.to_string());
        }
        let mut inputs = json!({
            "launch": launch,
            "runtime": runtime.as_str(),
            "token_file": token_file,
            "settings": settings,
            "start_timeout_s": GATEWAY_START_TIMEOUT_S,
        });
        if !image_source.is_null() {
            inputs["image"] = image_source;
        }
        put(Resource::new(gateway_address(gw), Kind::Gateway, inputs, deps));

        let gref = GatewayRef {
            name: gw.clone(),
            url: format!("ws://127.0.0.1:{}", g.port),
            token_file: layout.gateway_token(gw),
        };
        let mut models = BTreeMap::new();
        let mut models_deps = vec![gateway_address(gw), PROXY.to_string()];
        for a in spec.agents.iter().filter(|a| a.gateway.value == *gw) {
            let id = a.name.value.clone();
            let files = workspace::render(&spec.name, a);
            let workspace_host = home.join("workspaces").join(&id);
            let workspace = home_inside.join("workspaces").join(&id);
            let inputs = json!({
                "id": id,
                "gateway": gref,
                "workspace_host": workspace_host,
                "files": files.iter().map(|(n, c)| (n.clone(), sha256_hex(c.as_bytes()))).collect::<BTreeMap<_, _>>(),
            });
            let file_outs = files
                .into_iter()
                .map(|(n, c)| FileOut { path: n.into(), content: c.into_bytes(), mode: 0o644 })
                .collect();
            let agent_addr = format!("agent.{id}");
            // The models patch brings the agent into being; its files follow.
            let agent_deps = vec![gateway_address(gw), format!("gateway.{gw}.models")];
            put(Resource::new(&agent_addr, Kind::Agent, inputs, agent_deps).with_files(file_outs));
            models_deps.push(key_address(&id));
            models.insert(
                id.clone(),
                AgentModels {
                    workspace,
                    models: a.models(),
                    primary: a.model.value.clone(),
                    fallbacks: a.fallbacks.iter().map(|f| f.value.clone()).collect(),
                    heartbeat: a.heartbeat.as_ref().map(|h| h.every.clone()),
                    env_file: layout.agent_env(&id),
                },
            );
            let message = a.wake.clone().unwrap_or_else(|| default_wake(a.identity.name.as_deref().unwrap_or(&id)));
            put(Resource::new(
                format!("wake.{id}"),
                Kind::Wake,
                json!({"agent_id": id, "gateway": gref}),
                vec![format!("gateway.{gw}.models"), agent_addr],
            )
            .with_files(vec![FileOut { path: "wake".into(), content: message.into_bytes(), mode: 0o644 }]));
        }
        if !models.is_empty() {
            let state_db = home_here.then(|| roster::state_db(&home.join("state")));
            let inputs =
                ModelsInputs { gateway: gref.clone(), base_url: proxy_base_url(spec), agents: models, state_db };
            put(Resource::new(format!("gateway.{gw}.models"), Kind::GatewayModels, json!(inputs), models_deps));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::layout::Layout;
    use crate::spec::{parse, SourceFile};

    #[test]
    fn a_gateway_brings_its_token_toolchain_agents_one_models_patch_and_wakes() {
        let spec = parse(
            SourceFile::new(
                "fleet.kdl",
                "fleet \"q\"\nprovider \"d\" type=\"mock\" { models \"a\" \"b\" }\ngateway \"main\"\nagent \"alice\" model=\"a\" { fallback \"b\"; heartbeat every=\"30m\" }\nagent \"bob\" model=\"b\"\n".into(),
            ),
            std::path::Path::new("/x"),
        )
        .unwrap();
        let layout = Layout::resolve("q", None, Some(std::path::Path::new("/data")));
        let d = super::super::desired(&spec, &layout);
        for addr in [
            "openclaw.toolchain",
            "gateway.main.token",
            "gateway.main",
            "agent.alice",
            "agent.bob",
            "gateway.main.models",
            "wake.alice",
            "wake.bob",
        ] {
            assert!(d.contains_key(addr), "{addr} missing");
        }
        let models = &d["gateway.main.models"];
        assert_eq!(models.inputs["agents"]["alice"]["fallbacks"], serde_json::json!(["b"]));
        assert_eq!(models.inputs["agents"]["alice"]["heartbeat"], "30m");
        for dep in ["gateway.main", "litellm.proxy", "key.alice", "key.bob"] {
            assert!(models.deps.contains(&dep.to_string()), "{dep}");
        }
        assert_eq!(d["agent.alice"].deps, vec!["gateway.main", "gateway.main.models"], "the patch creates the agent");
        assert_eq!(d["gateway.main"].deps, vec!["gateway.main.token", "openclaw.toolchain"]);
        assert_eq!(models.inputs["agents"]["alice"]["workspace"], "/data/gateways/main/home/workspaces/alice");
        assert!(d["agent.alice"].files.iter().any(|f| f.path.as_os_str() == "BOOTSTRAP.md"));
        // The wake message is not an input: changing it never re-wakes anyone.
        assert!(d["wake.alice"].inputs.get("message").is_none());
    }
}
