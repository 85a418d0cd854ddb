//! What fleet could have created for this fleet, as it is now, and what the state records.

use std::path::Path;

use serde_json::Value;

use crate::layout::Layout;
use crate::openclaw::agent::AgentInputs;
use crate::openclaw::client::GatewayRef;
use crate::resource::Address;
use crate::state::Record;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub start: u64,
    pub command: String,
    /// Why it is one of fleet's (`process::ownership::why_ours`).
    pub why: String,
}

/// Everything found, whoever it belongs to.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Session leaders of processes working in the data dir.
    pub processes: Vec<Proc>,
    pub key_aliases: Vec<String>,
    /// (gateway, the agent ids it lists), for every recorded gateway that answered.
    pub gateway_agents: Vec<(String, Vec<String>)>,
    /// (gateway, agent) of every workspace directory.
    pub workspaces: Vec<(String, String)>,
    pub agent_homes: Vec<String>,
    pub gateway_dirs: Vec<String>,
    /// (where, name) of Incus instances labelled `user.fleet.fleet=<fleet>`.
    pub instances: Vec<(IncusAt, String)>,
    /// What could not be looked at, and why.
    pub notes: Vec<String>,
}

/// What the state accounts for.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// (pid, start) of every recorded process.
    pub pids: Vec<(u32, u64)>,
    pub key_aliases: Vec<String>,
    /// Agents that have a key (and so a home with an env file).
    pub key_agents: Vec<String>,
    /// (gateway, agent id) of recorded agents.
    pub agents: Vec<(String, String)>,
    pub gateways: Vec<String>,
    pub instances: Vec<String>,
}

/// Every `{"pid": N, "start": T}` inside a record's outputs.
fn pids_in(v: &Value, out: &mut Vec<(u32, u64)>) {
    match v {
        Value::Object(m) => {
            if let (Some(p), Some(s)) = (m.get("pid").and_then(Value::as_u64), m.get("start").and_then(Value::as_u64)) {
                out.push((p as u32, s));
            }
            m.values().for_each(|x| pids_in(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| pids_in(x, out)),
        _ => {}
    }
}

impl Recorded {
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a Record>) -> Recorded {
        let mut r = Recorded::default();
        for rec in records {
            pids_in(&rec.outputs, &mut r.pids);
            match rec.address.parse::<Address>() {
                Ok(Address::Key(agent)) => {
                    if let Some(alias) = rec.inputs.get("alias").and_then(Value::as_str) {
                        r.key_aliases.push(alias.to_string());
                    }
                    r.key_agents.push(agent);
                }
                Ok(Address::Agent(_)) => {
                    if let Ok(a) = rec.inputs_as::<AgentInputs>() {
                        r.agents.push((a.gateway.name, a.id));
                    }
                }
                Ok(Address::Gateway(gw)) => {
                    r.gateways.push(gw);
                    if let Some(c) = rec.outputs.pointer("/handle/container").and_then(Value::as_str) {
                        r.instances.push(c.to_string());
                    }
                }
                _ => {}
            }
        }
        r
    }
}

/// The gateways the state can reach (from its agents' and models patches' records).
pub fn gateway_refs<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<GatewayRef> {
    let mut out: Vec<GatewayRef> = Vec::new();
    for rec in records {
        let g = match rec.kind.as_str() {
            "agent" | "gateway.models" | "wake" => rec.inputs.get("gateway").cloned(),
            _ => None,
        };
        if let Some(g) = g.and_then(|g| serde_json::from_value::<GatewayRef>(g).ok()) {
            if !out.iter().any(|o| o.name == g.name) {
                out.push(g);
            }
        }
    }
    out
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Takes the inventory: the data dir, the key file, every reachable gateway, Incus.
pub async fn take(layout: &Layout, fleet: &str, gateways: &[GatewayRef], remotes: &[IncusAt]) -> Inventory {
    let mut inv = Inventory::default();
    let data = layout.data_dir.clone();
    inv.processes = tokio::task::spawn_blocking(move || {
        // Only fleet's: a process merely sitting in the data dir is not this fleet's to stop.
        crate::process::leaders_working_in(&data)
            .into_iter()
            .filter_map(|p| {
                let why = crate::process::ownership::why_ours(p, &data)?;
                Some(Proc { pid: p.pid, start: p.start, command: p.cmdline().chars().take(120).collect(), why })
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    match crate::litellm::keyfile::KeyFile::load(&layout.keys_file()) {
        Ok(f) => inv.key_aliases = f.aliases(),
        Err(e) => inv.notes.push(e),
    }
    for g in gateways {
        // Patient: a gateway reloading its config (an agent just added by hand) answers in seconds.
        let listed = match g.connect_within(std::time::Duration::from_secs(20)).await {
            Ok(c) => c.agent_ids().await.map_err(|e| e.to_string()),
            Err(e) => Err(crate::driver::error_chain(&e)),
        };
        match listed {
            Ok(ids) => inv.gateway_agents.push((g.name.clone(), ids)),
            Err(e) => inv.notes.push(format!("gateway {}: its agents were not inventoried ({e})", g.name)),
        }
    }
    let gw_root = layout.data_dir.join("gateways");
    inv.gateway_dirs = dir_names(&gw_root);
    for gw in &inv.gateway_dirs {
        for a in dir_names(&layout.gateway_home(gw).join("workspaces")) {
            inv.workspaces.push((gw.clone(), a));
        }
    }
    inv.agent_homes = dir_names(&layout.data_dir.join("agents"));
    for remote in remotes {
        match instances(remote, fleet).await {
            Ok(names) => inv.instances.extend(names.into_iter().map(|n| (remote.clone(), n))),
            Err(e) => inv.notes.push(e),
        }
    }
    inv
}

/// An incusd: a remote (the local daemon when None) of a client config (the caller's default when None).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct IncusAt {
    pub remote: Option<String>,
    pub config: Option<std::path::PathBuf>,
}

/// Instances on `at` labelled for `fleet`.
async fn instances(at: &IncusAt, fleet: &str) -> Result<Vec<String>, String> {
    let remote = &at.remote;
    let target = match remote {
        Some(r) => format!("{r}:"),
        None => String::new(),
    };
    let out = crate::runtime::incus_cli::incus_in(at.config.as_deref(), &["list", &target, "--format", "json"])
        .await
        .map_err(|e| {
        format!(
            "Incus{}: not inventoried ({})",
            remote.as_deref().map(|r| format!(" {r}")).unwrap_or_default(),
            crate::driver::error_chain(&e)
        )
    })?;
    let list: Vec<Value> = serde_json::from_str(&out).map_err(|e| format!("incus list: {e}"))?;
    Ok(list
        .iter()
        .filter(|i| i.pointer("/config/user.fleet.fleet").and_then(Value::as_str) == Some(fleet))
        .filter_map(|i| i["name"].as_str().map(str::to_string))
        .collect())
}
