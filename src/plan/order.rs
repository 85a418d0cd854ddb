//! The order apply walks a plan in — edges from what must happen first to what waits for it —
//! decided here, with the plan, so that `fleet graph` draws the order apply really uses and `exec`
//! only walks it: the desired dependencies, and the rules a removal needs on OpenClaw (a deleted
//! resource's dependents let go first; a removed agent's key is revoked first of all; an agent
//! leaves its gateway before the patch that drops its provider; what a changed resource let go of
//! changes first).

use std::collections::{BTreeMap, HashMap};

use petgraph::graph::{DiGraph, NodeIndex};

use super::diff::{Action, Plan};
use crate::resource::{Address, Desired, Kind};
use crate::state::Record;

/// Sets `plan.order`: the step graph's edges, as (before, after) indices into `plan.changes`.
pub fn attach(plan: &mut Plan, desired: &Desired, prior: &BTreeMap<String, Record>) {
    let g = step_graph(plan, desired, prior);
    plan.order = g.edge_indices().filter_map(|e| g.edge_endpoints(e)).map(|(a, b)| (a.index(), b.index())).collect();
    plan.order.sort_unstable();
}

/// The step graph: edges run from what must happen first to what waits for it.
fn step_graph(plan: &Plan, desired: &Desired, prior: &BTreeMap<String, Record>) -> DiGraph<usize, ()> {
    let mut g = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..plan.changes.len()).map(|i| g.add_node(i)).collect();
    let index: HashMap<&str, usize> = plan.changes.iter().enumerate().map(|(i, c)| (c.address.as_str(), i)).collect();
    for (i, c) in plan.changes.iter().enumerate() {
        if c.action == Action::Delete {
            // Whatever depended on it lets go first: dependents are deleted, and dependents that
            // stay are updated (e.g. a gateway's models patch dropping the agent), before it goes.
            // OpenClaw rejects a config.patch that races an agents.delete on the same gateway.
            // Except a key: it is revoked first of all (a key never outlives its agent's removal,
            // even when the gateway cannot be reached), so a models patch still carrying it may
            // follow; it waits only for what is deleted with it (the daemon token beside it).
            let key = key_agent(&c.address);
            for (j, other) in plan.changes.iter().enumerate() {
                if key.is_some() && other.action != Action::Delete {
                    continue;
                }
                if key.is_some() && other.address.parse::<Address>().is_ok_and(|a| a.kind() == Kind::GatewayModels) {
                    continue;
                }
                if j != i && prior.get(&other.address).is_some_and(|r| r.deps.contains(&c.address)) {
                    g.add_edge(nodes[j], nodes[i], ());
                }
            }
        } else if let Some(r) = desired.get(&c.address) {
            for dep in &r.dep_strings() {
                if let Some(&j) = index.get(dep.as_str()) {
                    // A desired dependency being deleted is a `moved` agent's old name: it leaves
                    // (and is archived) first.
                    g.add_edge(nodes[j], nodes[i], ());
                }
            }
        }
    }
    // A removed agent's key is revoked before the agent leaves its gateway (and is archived).
    for (i, c) in plan.changes.iter().enumerate() {
        let Some(agent) = key_agent(&c.address).filter(|_| c.action == Action::Delete) else { continue };
        if let Some(&j) = index.get(Address::Agent(agent).to_string().as_str()) {
            if plan.changes[j].action == Action::Delete
                && !petgraph::algo::has_path_connecting(&g, nodes[j], nodes[i], None)
            {
                g.update_edge(nodes[i], nodes[j], ());
            }
        }
    }
    // A deleted resource lets go before what it depended on changes: an agent leaving its gateway
    // is deleted before the gateway's patch drops its provider (a patch dropping the provider of an
    // agent still listed makes OpenClaw restart, and an agents.delete during that restart can keep
    // the gateway from coming back). Only where no order above says otherwise.
    for (i, c) in plan.changes.iter().enumerate() {
        let Some(rec) = prior.get(&c.address).filter(|_| c.action == Action::Delete) else { continue };
        for dep in &rec.deps {
            if let Some(&j) = index.get(dep.as_str()) {
                if matches!(plan.changes[j].action, Action::Update | Action::Replace)
                    && !petgraph::algo::has_path_connecting(&g, nodes[j], nodes[i], None)
                {
                    g.update_edge(nodes[i], nodes[j], ());
                }
            }
        }
    }
    // What a changed resource depended on before, and is changing too, goes first where that
    // agrees with the order above (an agent moving gateways leaves the old one after the old
    // gateway's patch let go of it). Records from older builds may have pointed the other way.
    for (i, c) in plan.changes.iter().enumerate() {
        let Some(rec) = prior.get(&c.address).filter(|_| c.action != Action::Delete) else { continue };
        let wanted = desired.get(&c.address).map(|r| r.dep_strings()).unwrap_or_default();
        // Deps it still has are ordered above; only the ones it let go of need a look (and a search).
        for dep in rec.deps.iter().filter(|d| !wanted.contains(d)) {
            if let Some(&j) = index.get(dep.as_str()) {
                let other = plan.changes[j].action;
                if j != i
                    && other != Action::Delete
                    && !petgraph::algo::has_path_connecting(&g, nodes[i], nodes[j], None)
                {
                    g.update_edge(nodes[j], nodes[i], ());
                }
            }
        }
    }
    g
}

/// The agent whose key `address` is, if it is a key.
fn key_agent(address: &str) -> Option<String> {
    match address.parse::<Address>() {
        Ok(Address::Key(agent)) => Some(agent),
        _ => None,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::plan::Change;
    use crate::resource::Resource;
    use serde_json::Value;

    fn change(address: &str, action: Action) -> Change {
        Change { address: address.into(), kind: "x".into(), action, reason: None, fields: vec![], place: None }
    }

    pub(in crate::plan) fn record(address: &str, deps: &[&str]) -> (String, Record) {
        let r = Record {
            address: address.into(),
            kind: "x".into(),
            fingerprint: String::new(),
            inputs: Value::Null,
            outputs: Value::Null,
            deps: deps.iter().map(|d| d.to_string()).collect(),
        };
        (address.into(), r)
    }

    fn before(g: &DiGraph<usize, ()>, a: usize, b: usize) -> bool {
        petgraph::algo::has_path_connecting(g, NodeIndex::new(a), NodeIndex::new(b), None)
    }

    #[test]
    fn a_moved_resource_waits_for_what_it_left_unless_that_would_loop() {
        // bob moves from gateway a to b: a's patch drops him before his step leaves a.
        let plan = Plan {
            changes: vec![
                change("agent.bob", Action::Update),
                change("gateway.a.models", Action::Update),
                change("gateway.b.models", Action::Update),
            ],
            ..Plan::default()
        };
        let prior: BTreeMap<String, Record> = [
            record("agent.bob", &["gateway.a", "gateway.a.models"]),
            record("gateway.a.models", &["gateway.a"]),
            // An older build's record pointing the other way: the desired order wins.
            record("gateway.b.models", &["gateway.b", "agent.bob"]),
        ]
        .into();
        let res = |a: &str, deps: &[&str]| {
            let deps = deps.iter().map(|d| d.parse().unwrap()).collect();
            (a.to_string(), Resource::new(a.parse().unwrap(), &Value::Null, deps))
        };
        let desired: Desired = [
            res("agent.bob", &["gateway.b", "gateway.b.models"]),
            res("gateway.a.models", &["gateway.a"]),
            res("gateway.b.models", &["gateway.b"]),
        ]
        .into();
        let g = step_graph(&plan, &desired, &prior);
        assert!(before(&g, 2, 0), "desired: b's patch creates him first");
        assert!(before(&g, 1, 0), "prior: a's patch lets go of him before he leaves a");
        assert!(petgraph::algo::toposort(&g, None).is_ok(), "the older record's edge is dropped, not looped");
    }

    /// carol leaves: her agent, key and wake go; the gateway's models patch stays, minus carol.
    pub(in crate::plan) fn carol_leaves() -> Plan {
        Plan {
            changes: vec![
                change("agent.carol", Action::Delete),
                change("gateway.main.models", Action::Update),
                change("key.carol", Action::Delete),
                change("wake.carol", Action::Delete),
            ],
            ..Plan::default()
        }
    }

    /// What stays desired when carol leaves: the gateway's models patch.
    pub(in crate::plan) fn patch_stays() -> Desired {
        [(
            "gateway.main.models".to_string(),
            Resource::new(Address::GatewayModels("main".into()), &Value::Null, vec![Address::Gateway("main".into())]),
        )]
        .into()
    }

    #[test]
    fn a_removed_agent_leaves_before_its_gateways_patch_drops_its_provider() {
        let plan = carol_leaves();
        let prior: BTreeMap<String, Record> = [
            record("agent.carol", &["gateway.main", "gateway.main.models"]),
            record("gateway.main.models", &["gateway.main", "litellm.proxy", "key.carol"]),
            record("key.carol", &["litellm.config"]),
            record("wake.carol", &["gateway.main.models", "agent.carol"]),
        ]
        .into();
        let g = step_graph(&plan, &patch_stays(), &prior);
        assert!(before(&g, 0, 1), "agents.delete before the patch that drops carol's provider");
        assert!(before(&g, 2, 0), "her key is revoked first of all, before she leaves her gateway");
        assert!(before(&g, 3, 0), "the wake goes before the agent");
        assert!(petgraph::algo::toposort(&g, None).is_ok());
    }

    #[test]
    fn what_depended_on_a_deleted_resource_lets_go_first() {
        let plan = carol_leaves();
        let prior: BTreeMap<String, Record> = [
            record("agent.carol", &["gateway.main", "key.carol"]),
            record("gateway.main.models", &["gateway.main", "agent.carol", "key.carol"]),
            record("key.carol", &[]),
            record("wake.carol", &["gateway.main.models", "agent.carol"]),
        ]
        .into();
        let g = step_graph(&plan, &patch_stays(), &prior);
        assert!(before(&g, 1, 0), "the models patch drops carol before agents.delete");
        assert!(before(&g, 1, 2), "her agent, whose old record names the key, goes between the patch and the key");
        assert!(before(&g, 3, 0), "the wake goes before the agent");
        assert!(!before(&g, 0, 1), "no cycle");
        assert!(petgraph::algo::toposort(&g, None).is_ok());
    }
}
