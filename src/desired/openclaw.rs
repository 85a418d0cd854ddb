//! Gateways and agents → resources: the toolchain, a token and a process (or container)
//! per gateway, an agent per agent, one models patch per gateway, and a wake per agent.
//! Pure.

use std::collections::BTreeMap;
use std::path::Path;

use super::image::{self, ImageUse};
use super::litellm::proxy_base_url;
use crate::archive::restore::Restore;
use crate::archive::About;
use crate::fleetfile::{Agent, FleetSpec, Gateway, Runtime};
use crate::fsutil::sha256_hex;
use crate::layout::Layout;
use crate::litellm::resources::SecretInputs;
use crate::netaddr::connect_host;
use crate::openclaw::agent::AgentInputs;
use crate::openclaw::client::GatewayRef;
use crate::openclaw::gateway::GatewayInputs;
use crate::openclaw::models::{AgentIdentity, AgentModels, ModelsInputs, ToolSandbox};
use crate::openclaw::roster;
use crate::openclaw::toolchain::Toolchain;
use crate::openclaw::wake::{WakeInputs, WAKE_FILE, WAKE_RESTORED_FILE};
use crate::openclaw::workspace;
use crate::resource::{add as put, Address, Desired, FileOut, Resource};
use crate::runtime::{Container, Launch};

/// Seconds a gateway gets to answer `health` (12.6–28 s measured on 2 cores).
pub const GATEWAY_START_TIMEOUT_S: u64 = 180;

/// The first message after a restore (`wake-restored` overrides it).
pub fn default_wake_restored(name: &str) -> String {
    format!(
        "Hello {name}. fleet has just restored you from an archive: your workspace, memory and sessions are as you \
         left them. Read MEMORY.md and your workspace files, then say in one line where you left off."
    )
}

/// How an agent comes back when an archive of it exists.
fn restore_of(a: &Agent) -> Restore {
    match (&a.restore, a.fresh, &a.moved_from) {
        (Some(id), _, _) => Restore::From(id.value.clone()),
        (None, true, _) => Restore::Fresh,
        (None, false, Some(old)) => Restore::Agent(old.clone()),
        (None, false, None) => Restore::Newest,
    }
}

/// What an archive's manifest says of the agent.
fn about(spec: &FleetSpec, g: &Gateway, a: &Agent) -> About {
    let i = &a.identity;
    let identity = [("name", &i.name), ("role", &i.role), ("emoji", &i.emoji), ("vibe", &i.vibe)]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
        .collect();
    About {
        gateway: g.name.value.clone(),
        host: g.host.value.clone(),
        runtime: spec.runtime_of(g).as_str().into(),
        model: a.model.value.clone(),
        identity,
    }
}

pub fn default_wake(name: &str) -> String {
    format!(
        "Hello {name}. fleet has just provisioned you: read your workspace files, then introduce yourself in one line."
    )
}

/// What the gateway is launched with: where its home is, how it runs.
fn launch(
    spec: &FleetSpec,
    layout: &Layout,
    g: &Gateway,
    image: Option<&ImageUse>,
    sandboxes: Vec<crate::runtime::sandbox::SandboxImage>,
) -> Launch {
    let gw = &g.name.value;
    let runtime = spec.runtime_of(g);
    let host = spec.hosts.iter().find(|h| h.name.value == g.host.value);
    let container = match (runtime, &g.image, host) {
        (Runtime::Incus, Some(img_name), Some(host)) if host.is_remote() => {
            // Another machine: the proxy and the daemon are reached on the addresses they bind here
            // (validation made sure those are not loopback).
            let mut forward = vec![spec.litellm.port];
            let mut forward_to = BTreeMap::from([(spec.litellm.port, connect_host(&spec.litellm.bind).to_string())]);
            if let Some(sv) = &spec.serve {
                forward.push(sv.port);
                forward_to.insert(sv.port, connect_host(&sv.bind).to_string());
            }
            Some(Container {
                name: format!("fleet-{}-{gw}", spec.name),
                image: img_name.value.clone(),
                remote: host.remote_name().map(str::to_string),
                forward,
                forward_to,
                incus_config: Some(host.incus_config.clone().unwrap_or_else(|| layout.incus_config_dir())),
                listen: g.listen.clone(),
                listen_on_member: !g.listen_written,
                target: g.target.clone(),
            })
        }
        (Runtime::Incus, Some(img_name), Some(host)) => {
            let mut forward = if spec.litellm.host.value == host.name.value { vec![spec.litellm.port] } else { vec![] };
            // The daemon runs on this machine: a container here reaches its trace ingest the same way.
            if let Some(sv) = &spec.serve {
                forward.push(sv.port);
            }
            let forward_to = forward
                .iter()
                .filter_map(|p| {
                    let bind = if *p == spec.litellm.port { &spec.litellm.bind } else { &spec.serve.as_ref()?.bind };
                    let to = connect_host(bind);
                    (to != "127.0.0.1").then(|| (*p, to.to_string()))
                })
                .collect();
            Some(Container {
                name: format!("fleet-{}-{gw}", spec.name),
                image: img_name.value.clone(),
                remote: host.remote.clone(),
                forward,
                forward_to,
                incus_config: None,
                listen: None,
                listen_on_member: false,
                target: None,
            })
        }
        _ => None,
    };
    let image_root = image.and_then(|i| i.root.clone());
    let toolchain = (runtime == Runtime::Process && image_root.is_none())
        .then(|| Toolchain::new(&layout.cache_dir, &spec.openclaw.node, &spec.openclaw.version));
    Launch {
        gateway: gw.clone(),
        home: layout.gateway_home(gw),
        port: g.port,
        log: layout.gateway_log(gw),
        toolchain,
        image_root,
        container,
        limits: g.limits,
        sandboxes,
    }
}

/// Where agent `a`'s tools run: its sandbox, with the tag of its image in its gateway's store.
fn tool_sandbox(spec: &FleetSpec, images: &[crate::runtime::sandbox::SandboxImage], a: &Agent) -> Option<ToolSandbox> {
    let s = spec.sandbox_of(a)?;
    let image = images.iter().find(|i| i.name == s.image)?;
    Some(ToolSandbox { mode: s.mode, image: image.tag(), workspace: s.workspace, network: s.network })
}

/// How fleet (and `fleet chat`, and the daemon) reaches a gateway: the URL its runtime gives.
pub fn gateway_ref(spec: &FleetSpec, layout: &Layout, g: &Gateway) -> GatewayRef {
    let l = launch(spec, layout, g, None, Vec::new());
    GatewayRef {
        name: g.name.value.clone(),
        url: crate::runtime::by_kind::of(spec.runtime_of(g)).url(&l),
        token_file: layout.gateway_token(&g.name.value),
    }
}

/// The identity as OpenClaw's own `agents set-identity --from-identity` would put it in the
/// config (`name`, `emoji`, and `theme` from the vibe); the role stays in IDENTITY.md, since
/// the config's identity object takes no other keys.
fn identity(a: &Agent) -> Option<AgentIdentity> {
    let i = &a.identity;
    (i.name.is_some() || i.emoji.is_some() || i.vibe.is_some()).then(|| AgentIdentity {
        name: i.name.clone(),
        emoji: i.emoji.clone(),
        theme: i.vibe.clone(),
    })
}

pub fn add(spec: &FleetSpec, layout: &Layout, recipes: &BTreeMap<String, String>, out: &mut Desired) {
    for g in &spec.gateways {
        let gw = &g.name.value;
        let runtime = spec.runtime_of(g);
        let host = spec.hosts.iter().find(|h| h.name.value == g.host.value);
        let image = host.and_then(|h| image::add(spec, layout, recipes, g, h, out));
        let (sandboxes, sandbox_deps) = match host {
            Some(h) if runtime == Runtime::Process => image::sandboxes(spec, layout, recipes, g, h, out),
            _ => (Vec::new(), Vec::new()),
        };
        let launch = launch(spec, layout, g, image.as_ref(), sandboxes);
        let rt = crate::runtime::by_kind::of(runtime);
        let home = launch.home.clone();
        // Where the gateway sees its own home: the same path for a process, /root in a container.
        let home_inside = rt.home_inside(&launch);
        // Only a gateway whose home is on this machine has a state database fleet can read.
        let home_here = launch.container.as_ref().is_none_or(|c| c.remote.is_none());

        let token_addr = Address::GatewayToken(gw.clone());
        let token_file = layout.gateway_token(gw);
        let token = SecretInputs { file: token_file.clone(), prefix: "fleet-gw-".into() };
        put(out, Resource::new(token_addr.clone(), &token, vec![]));

        let mut settings = serde_json::json!({
            "gateway": {"mode": "local", "port": g.port, "bind": "loopback", "auth": {"mode": "token"}},
            "update": {"checkOnStart": false},
            "logging": {"file": home_inside.join("logs/openclaw.log")},
        });
        // On another host: served over TLS, with the certificate fleet mints and pins at its start.
        if launch.over_tls() {
            settings["gateway"]["tls"] = crate::openclaw::gateway_tls::settings(&home_inside);
        }
        // With a daemon, every run of every agent is traced by fleet's plugin, shipped to it.
        // A container reaches the proxy and the daemon on its own loopback (forwarded ports).
        let in_container = launch.container.is_some();
        let plugin = spec.serve.as_ref().map(|sv| {
            let url = match in_container {
                true => format!("http://127.0.0.1:{}/v1/trace", sv.port),
                false => format!("{}/v1/trace", sv.url()),
            };
            settings["plugins"] = crate::openclaw::plugin::settings(&home_inside, &url);
            crate::openclaw::plugin::digest()
        });
        let mut deps = vec![token_addr];
        deps.extend(image.as_ref().map(|i| i.import.clone()));
        deps.extend(sandbox_deps);
        // On another machine: nothing of it can work while its host cannot be reached.
        deps.extend(host.filter(|h| h.is_remote()).map(|h| Address::Host(h.name.value.clone())));
        if launch.toolchain.is_some() {
            let toolchain = launch.toolchain.clone().expect("checked");
            put(out, Resource::new(Address::Toolchain, &toolchain, vec![]));
            deps.push(Address::Toolchain);
        }
        let gref = GatewayRef { name: gw.clone(), url: rt.url(&launch), token_file: token_file.clone() };
        if !launch.sandboxes.is_empty() {
            // Elevated exec would run an agent's command outside its sandbox: never on such a gateway.
            settings["tools"] = serde_json::json!({"elevated": {"enabled": false}});
        }
        let sandbox_images = launch.sandboxes.clone();
        let inputs = GatewayInputs {
            launch,
            runtime: runtime.as_str().into(),
            token_file,
            settings,
            start_timeout_s: GATEWAY_START_TIMEOUT_S,
            image: image.and_then(|i| i.source),
            plugin,
        };
        let place = host.filter(|h| h.is_remote()).map(|h| format!("host {}", h.name.value));
        put(out, Resource::new(Address::Gateway(gw.clone()), &inputs, deps).placed(place));

        let models_addr = Address::GatewayModels(gw.clone());
        let mut models = BTreeMap::new();
        let mut models_deps = vec![Address::Gateway(gw.clone()), Address::LitellmProxy];
        let mut seeds: Vec<FileOut> = Vec::new();
        for a in spec.agents.iter().filter(|a| a.gateway.value == *gw) {
            let id = a.name.value.clone();
            let files = workspace::render(&spec.name, a);
            let inputs = AgentInputs {
                id: id.clone(),
                gateway: gref.clone(),
                workspace_host: home_here.then(|| home.join("workspaces").join(&id)),
                files: files.iter().map(|(n, c)| (n.clone(), sha256_hex(c.as_bytes()))).collect(),
                about: about(spec, g, a),
                restore: restore_of(a),
            };
            let file_outs: Vec<FileOut> = files
                .into_iter()
                .map(|(n, c)| FileOut { path: n.into(), content: c.into_bytes(), mode: 0o644 })
                .collect();
            // The models step seeds a fresh agent's workspace with them (see `ModelsDriver::bring_back`).
            seeds.extend(file_outs.iter().map(|f| FileOut { path: Path::new(&id).join(&f.path), ..f.clone() }));
            let agent_addr = Address::Agent(id.clone());
            // The models patch brings the agent into being; its files follow.
            let agent_deps = vec![Address::Gateway(gw.clone()), models_addr.clone()];
            put(out, Resource::new(agent_addr.clone(), &inputs, agent_deps).with_files(file_outs));
            models_deps.push(Address::Key(id.clone()));
            // Renamed (`moved`): the old name leaves (and is archived) before this patch restores it here.
            models_deps.extend(a.moved_from.iter().map(|old| Address::Agent(old.clone())));
            models.insert(
                id.clone(),
                AgentModels {
                    workspace: home_inside.join("workspaces").join(&id),
                    models: a.models(),
                    primary: a.model.value.clone(),
                    fallbacks: a.fallbacks.iter().map(|f| f.value.clone()).collect(),
                    heartbeat: a.heartbeat.as_ref().map(|h| h.every.clone()),
                    heartbeat_prompt: a.heartbeat.as_ref().and_then(|h| h.prompt.clone()),
                    identity: identity(a),
                    env_file: layout.agent_env(&id),
                    restore: restore_of(a),
                    sandbox: tool_sandbox(spec, &sandbox_images, a),
                },
            );
            let shown = a.identity.name.as_deref().unwrap_or(&id);
            let message = a.wake.clone().unwrap_or_else(|| default_wake(shown));
            let restored = a.wake_restored.clone().unwrap_or_else(|| default_wake_restored(shown));
            let wake = WakeInputs { agent_id: id.clone(), gateway: gref.clone() };
            let file =
                |path: &str, text: String| FileOut { path: path.into(), content: text.into_bytes(), mode: 0o644 };
            put(
                out,
                Resource::new(Address::Wake(id.clone()), &wake, vec![models_addr.clone(), agent_addr])
                    .with_files(vec![file(WAKE_FILE, message), file(WAKE_RESTORED_FILE, restored)]),
            );
        }
        if !models.is_empty() {
            let state_db = home_here.then(|| roster::state_db(&home.join("state")));
            let base_url = match in_container {
                true => format!("http://127.0.0.1:{}/v1", spec.litellm.port),
                false => proxy_base_url(spec),
            };
            let inputs = ModelsInputs { gateway: gref, base_url, agents: models, state_db };
            put(out, Resource::new(models_addr, &inputs, models_deps).with_files(seeds));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::fleetfile::{parse, SourceFile};
    use crate::layout::Layout;
    use crate::resource::Address;

    fn addrs(v: &[&str]) -> Vec<Address> {
        v.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_gateway_brings_its_token_toolchain_agents_one_models_patch_and_wakes() {
        let spec = parse(
            SourceFile::new(
                "fleet.kdl",
                "fleet \"q\"\nprovider \"d\" type=\"mock\" { models \"a\" \"b\" }\ngateway \"main\"\nagent \"alice\" model=\"a\" { fallback \"b\"; heartbeat every=\"30m\" prompt=\"Check the queue.\"; identity name=\"Alice\" emoji=\"🔬\" }\nagent \"bob\" model=\"b\"\n".into(),
            ),
            std::path::Path::new("/x"),
        )
        .unwrap();
        let layout = Layout::resolve("q", None, Some(std::path::Path::new("/data")));
        let d = crate::desired::desired(&spec, &layout).unwrap();
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
        assert_eq!(models.inputs["agents"]["alice"]["heartbeat_prompt"], "Check the queue.");
        assert_eq!(models.inputs["agents"]["alice"]["identity"]["name"], "Alice");
        assert_eq!(models.inputs["agents"]["alice"]["identity"]["emoji"], "🔬");
        assert!(models.inputs["agents"]["bob"].get("identity").is_none(), "no identity, nothing sent");
        for dep in addrs(&["gateway.main", "litellm.proxy", "key.alice", "key.bob"]) {
            assert!(models.deps.contains(&dep), "{dep}");
        }
        assert_eq!(
            d["agent.alice"].deps,
            addrs(&["gateway.main", "gateway.main.models"]),
            "the patch creates the agent"
        );
        assert_eq!(d["gateway.main"].deps, addrs(&["gateway.main.token", "openclaw.toolchain"]));
        assert_eq!(models.inputs["agents"]["alice"]["workspace"], "/data/gateways/main/home/workspaces/alice");
        assert_eq!(models.inputs["gateway"]["url"], format!("ws://127.0.0.1:{}", spec.gateways[0].port));
        assert!(d["agent.alice"].files.iter().any(|f| f.path.as_os_str() == "BOOTSTRAP.md"));
        // The wake message is not an input: changing it never re-wakes anyone.
        assert!(d["wake.alice"].inputs.get("message").is_none());
        assert!(d["gateway.main"].inputs["settings"]["gateway"].get("tls").is_none(), "on loopback, in clear");
    }

    #[test]
    fn a_gateway_on_another_host_is_served_over_tls_from_its_home() {
        let text = "fleet \"q\"\nhost \"local\" runtime=\"process\"\n\
            host \"edge\" runtime=\"incus\" address=\"https://10.0.0.2\" trust-token=\"env:T\" arch=\"amd64\"\n\
            litellm host=\"local\" bind=\"10.0.0.1\"\nimage \"base\" { url \"http://127.0.0.1:1/i.tar.gz\" arch=\"amd64\" sha256=\"{}\"; }\n\
            provider \"d\" type=\"mock\" { model \"a\"; }\n\
            gateway \"far\" host=\"edge\" image=\"base\" port=18800\nagent \"alice\" gateway=\"far\" model=\"a\"\n";
        let text = text.replace("{}", &"ab".repeat(32));
        let spec = parse(SourceFile::new("fleet.kdl", text), std::path::Path::new("/x")).unwrap();
        let layout = Layout::resolve("q", None, Some(std::path::Path::new("/data")));
        let d = crate::desired::desired(&spec, &layout).unwrap();
        let tls = &d["gateway.far"].inputs["settings"]["gateway"]["tls"];
        assert_eq!(tls["enabled"], true, "{tls}");
        assert_eq!(tls["autoGenerate"], false);
        assert_eq!(tls["certPath"], "/root/tls/gateway-cert.pem", "the container's own home");
        assert_eq!(d["agent.alice"].inputs["gateway"]["url"], "wss://10.0.0.2:18800");
    }
}
