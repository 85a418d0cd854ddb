//! The resource graph as Graphviz DOT (`fleet graph | dot -Tsvg`): every desired resource and what
//! it needs (solid edges); with a plan, what the plan changes (`+`, `~`, `-/+`, `-` before the
//! name; what it deletes added) and the order apply walks it in where that order is more than a
//! dependency (dashed, "apply order": a key revoked before its agent leaves, an agent leaving
//! before its gateway's patch drops its provider, …) — the very edges `exec` walks.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

use super::diff::{Change, Plan};
use crate::resource::Desired;

pub fn dot(fleet: &str, desired: &Desired, plan: Option<&Plan>) -> String {
    let mut out = format!("digraph {fleet:?} {{\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
    let changes: HashMap<&str, &Change> =
        plan.map(|p| p.changes.iter().map(|c| (c.address.as_str(), c)).collect()).unwrap_or_default();
    let nodes: BTreeSet<&str> = desired.keys().map(String::as_str).chain(changes.keys().copied()).collect();
    for addr in nodes {
        let _ = match changes.get(addr) {
            Some(c) => writeln!(out, "  {addr:?} [label={:?}];", format!("{} {addr}", c.action.symbol())),
            None => writeln!(out, "  {addr:?};"),
        };
    }
    let mut needs = BTreeSet::new();
    for (addr, r) in desired {
        for dep in r.dep_strings() {
            let _ = writeln!(out, "  {dep:?} -> {addr:?};");
            needs.insert((dep, addr.clone()));
        }
    }
    if let Some(p) = plan {
        for &(before, after) in &p.order {
            let (from, to) = (&p.changes[before].address, &p.changes[after].address);
            if !needs.contains(&(from.clone(), to.clone())) {
                let _ = writeln!(out, "  {from:?} -> {to:?} [style=dashed, label=\"apply order\"];");
            }
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::plan::order::tests::{carol_leaves, patch_stays, record};
    use crate::state::Record;

    /// carol leaves a gateway: the graph shows the order apply walks, not only what needs what.
    #[test]
    fn the_graph_draws_the_order_apply_walks() {
        let desired = patch_stays();
        let prior: BTreeMap<String, Record> = [
            record("agent.carol", &["gateway.main", "gateway.main.models"]),
            record("gateway.main.models", &["gateway.main", "key.carol"]),
            record("key.carol", &[]),
            record("wake.carol", &["gateway.main.models", "agent.carol"]),
        ]
        .into();
        let mut plan = carol_leaves();
        super::super::order::attach(&mut plan, &desired, &prior);
        let text = dot("demo", &desired, Some(&plan));
        assert!(text.contains("\"key.carol\" -> \"agent.carol\" [style=dashed"), "{text}");
        assert!(text.contains("\"agent.carol\" -> \"gateway.main.models\" [style=dashed"), "{text}");
        insta::assert_snapshot!(text);
    }
}
