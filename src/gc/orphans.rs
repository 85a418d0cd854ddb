//! What the inventory found that the state does not record. Pure.

use serde::Serialize;

use super::inventory::{Inventory, Recorded};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Orphan {
    /// A process (session leader) working in the data dir that no record names.
    /// `why`: what makes it one of fleet's (`process::ownership::why_ours`).
    Process { pid: u32, start: u64, command: String, why: String },
    /// A key-file entry of no recorded key.
    Key { alias: String },
    /// An agent a gateway lists that no record names (OpenClaw's own `main` excepted).
    GatewayAgent { gateway: String, agent: String },
    /// A workspace in a gateway's home of no recorded agent of that gateway; `with_home`: the
    /// agent's home (trace) is nobody's either and goes into the same archive.
    Workspace { gateway: String, agent: String, with_home: bool },
    /// An agent home (trace) of no recorded agent or key.
    AgentHome { agent: String },
    /// A gateway directory of no recorded gateway.
    GatewayDir { gateway: String },
    /// An Incus instance labelled for this fleet that no record names.
    Instance {
        remote: Option<String>,
        name: String,
        /// The client config that knows `remote` (fleet's own, for a host it enrolled).
        #[serde(skip)]
        config: Option<std::path::PathBuf>,
    },
}

impl Orphan {
    /// How a plan line names it: `- orphan process 1234 (node …)`.
    pub fn describe(&self) -> String {
        match self {
            Orphan::Process { pid, command, why, .. } => format!("process {pid} ({command}): {why}"),
            Orphan::Key { alias } => format!("key {alias} (key file entry)"),
            Orphan::GatewayAgent { gateway, agent } => format!("agent {agent} in gateway {gateway}"),
            Orphan::Workspace { gateway, agent, .. } => format!("workspace of {agent} in gateway {gateway} (archived)"),
            Orphan::AgentHome { agent } => format!("home of agent {agent} (archived)"),
            Orphan::GatewayDir { gateway } => format!("gateway directory {gateway}"),
            Orphan::Instance { remote, name, .. } => match remote {
                Some(r) => format!("instance {r}:{name}"),
                None => format!("instance {name}"),
            },
        }
    }
}

/// Everything found that `rec` does not account for. The order is the order of destruction:
/// processes first (nothing keeps writing), then gateway agents, keys, footprints, directories.
pub fn orphans(found: &Inventory, rec: &Recorded) -> Vec<Orphan> {
    let mut out = Vec::new();
    for p in &found.processes {
        if !rec.pids.iter().any(|r| r.0 == p.pid && r.1 == p.start) {
            out.push(Orphan::Process { pid: p.pid, start: p.start, command: p.command.clone(), why: p.why.clone() });
        }
    }
    for i in &found.instances {
        if !rec.instances.contains(&i.1) {
            out.push(Orphan::Instance { remote: i.0.remote.clone(), name: i.1.clone(), config: i.0.config.clone() });
        }
    }
    for (gateway, agents) in &found.gateway_agents {
        for a in agents.iter().filter(|a| a.as_str() != "main") {
            if !rec.agents.iter().any(|(g, id)| g == gateway && id == a) {
                out.push(Orphan::GatewayAgent { gateway: gateway.clone(), agent: a.clone() });
            }
        }
    }
    for alias in &found.key_aliases {
        if !rec.key_aliases.contains(alias) {
            out.push(Orphan::Key { alias: alias.clone() });
        }
    }
    let owned = |agent: &str| rec.agents.iter().any(|(_, id)| id == agent) || rec.key_agents.iter().any(|a| a == agent);
    for (gateway, agent) in &found.workspaces {
        if !rec.agents.iter().any(|(g, id)| g == gateway && id == agent) {
            out.push(Orphan::Workspace { gateway: gateway.clone(), agent: agent.clone(), with_home: !owned(agent) });
        }
    }
    for agent in &found.agent_homes {
        let in_a_workspace =
            out.iter().any(|o| matches!(o, Orphan::Workspace { agent: a, with_home: true, .. } if a == agent));
        if !owned(agent) && !in_a_workspace {
            out.push(Orphan::AgentHome { agent: agent.clone() });
        }
    }
    for gateway in &found.gateway_dirs {
        if !rec.gateways.contains(gateway) {
            out.push(Orphan::GatewayDir { gateway: gateway.clone() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gc::inventory::Proc;

    #[test]
    fn what_no_record_names_is_an_orphan_and_main_never_is() {
        let found = Inventory {
            processes: vec![
                Proc { pid: 10, start: 1, command: "node gateway".into(), why: "an OpenClaw process".into() },
                Proc { pid: 11, start: 5, command: "litellm".into(), why: "the LiteLLM proxy".into() },
            ],
            key_aliases: vec!["fleet-alice".into(), "fleet-ghost".into()],
            gateway_agents: vec![("main".into(), vec!["main".into(), "alice".into(), "byhand".into()])],
            workspaces: vec![("main".into(), "alice".into()), ("main".into(), "old".into())],
            agent_homes: vec!["alice".into(), "old".into(), "keysonly".into(), "lost".into()],
            gateway_dirs: vec!["main".into(), "gone".into()],
            instances: vec![(Default::default(), "fleet-q-main".into()), (Default::default(), "fleet-q-stray".into())],
            notes: vec![],
        };
        let rec = Recorded {
            pids: vec![(11, 5)],
            key_aliases: vec!["fleet-alice".into(), "fleet-keysonly".into()],
            key_agents: vec!["alice".into(), "keysonly".into()],
            agents: vec![("main".into(), "alice".into())],
            gateways: vec!["main".into()],
            instances: vec!["fleet-q-main".into()],
        };
        let got: Vec<String> = orphans(&found, &rec).iter().map(Orphan::describe).collect();
        assert_eq!(
            got,
            [
                "process 10 (node gateway): an OpenClaw process",
                "instance fleet-q-stray",
                "agent byhand in gateway main",
                "key fleet-ghost (key file entry)",
                "workspace of old in gateway main (archived)",
                "home of agent lost (archived)",
                "gateway directory gone",
            ]
        );
    }
}
