use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::driver::Drift;
use crate::resource::Desired;
use crate::state::Record;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub address: String,
    pub kind: String,
    pub action: Action,
    /// Why, when it is not just "the file says so" (drift found by observing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub fields: Vec<FieldChange>,
    /// Where it runs (`host edge, member m2`), when not on this machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub unchanged: usize,
    /// With `--target`: the addresses the plan is narrowed to (the targets and what they need).
    #[serde(skip)]
    pub scope: Option<std::collections::BTreeSet<String>>,
    /// The order apply walks `changes` in: (before, after) indices (`order::attach`).
    #[serde(skip)]
    pub order: Vec<(usize, usize)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
    pub fn count(&self, a: Action) -> usize {
        self.changes.iter().filter(|c| c.action == a).count()
    }
}

/// Where a resource runs: its host, and the cluster member its last start recorded.
fn place_of(want: &crate::resource::Resource, rec: Option<&Record>) -> Option<String> {
    let host = want.place.clone()?;
    match rec.and_then(|r| r.outputs.pointer("/handle/member")).and_then(Value::as_str) {
        Some(member) => Some(format!("{host}, member {member}")),
        None => Some(host),
    }
}

/// Compares what is wanted with what was recorded and what was observed.
pub fn diff(desired: &Desired, prior: &BTreeMap<String, Record>, drift: &BTreeMap<String, Drift>) -> Plan {
    let mut plan = Plan::default();
    for (addr, want) in desired {
        let kind = want.kind.as_str().to_string();
        let rec = prior.get(addr);
        if rec.is_none_or(Record::is_pending) {
            // Not there yet, or a create that did not finish; observing may have found what it left.
            let reason = match drift.get(addr) {
                Some(Drift::Update(why) | Drift::Replace(why)) => Some(why.clone()),
                _ if rec.is_some() => Some("a previous apply did not finish creating it".to_string()),
                _ => None,
            };
            plan.changes.push(Change {
                address: addr.clone(),
                kind,
                action: Action::Create,
                reason,
                fields: leaves("", None, Some(&want.inputs)),
                place: want.place.clone(),
            });
            continue;
        }
        let Some(rec) = rec else { continue };
        let fields = if rec.fingerprint == want.fingerprint {
            Vec::new()
        } else {
            leaves("", Some(&rec.inputs), Some(&want.inputs))
        };
        let (action, reason) = match drift.get(addr) {
            Some(Drift::Replace(why)) => (Some(Action::Replace), Some(why.clone())),
            Some(Drift::Update(why)) => (Some(Action::Update), Some(why.clone())),
            Some(Drift::InSync) | None if rec.fingerprint != want.fingerprint => (Some(Action::Update), None),
            _ => (None, None),
        };
        match action {
            Some(action) => {
                let place = place_of(want, Some(rec));
                plan.changes.push(Change { address: addr.clone(), kind, action, reason, fields, place })
            }
            None => plan.unchanged += 1,
        }
    }
    for (addr, rec) in prior {
        if !desired.contains_key(addr) {
            // An agent that leaves is archived (its workspace, sessions, trace and conversations).
            let reason = (rec.kind == crate::resource::Kind::Agent.as_str()).then(|| "archive".to_string());
            plan.changes.push(Change {
                address: addr.clone(),
                kind: rec.kind.clone(),
                action: Action::Delete,
                reason,
                fields: Vec::new(),
                place: None,
            });
        }
    }
    // A replaced resource is a new thing: what depends on it must be told (e.g. a re-minted key must
    // reach the gateway config that carries it), even when its own inputs did not change.
    let replaced: Vec<String> =
        plan.changes.iter().filter(|c| c.action == Action::Replace).map(|c| c.address.clone()).collect();
    if !replaced.is_empty() {
        for (addr, want) in desired {
            if plan.changes.iter().any(|c| &c.address == addr) || prior.get(addr).is_none_or(|r| r.is_pending()) {
                continue;
            }
            if let Some(dep) = want.dep_strings().into_iter().find(|d| replaced.contains(d)) {
                plan.unchanged -= 1;
                plan.changes.push(Change {
                    address: addr.clone(),
                    kind: want.kind.as_str().to_string(),
                    action: Action::Update,
                    reason: Some(format!("{dep} is replaced")),
                    fields: Vec::new(),
                    place: place_of(want, prior.get(addr)),
                });
            }
        }
    }
    plan.changes.sort_by(|a, b| a.address.cmp(&b.address));
    plan
}

/// Leaf-level differences between two JSON values; arrays compare whole.
fn leaves(path: &str, before: Option<&Value>, after: Option<&Value>) -> Vec<FieldChange> {
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().flat_map(|k| leaves(&join(path, k), b.get(k), a.get(k))).collect()
        }
        (None, Some(Value::Object(a))) => a.iter().flat_map(|(k, v)| leaves(&join(path, k), None, Some(v))).collect(),
        (Some(Value::Object(b)), None) => b.iter().flat_map(|(k, v)| leaves(&join(path, k), Some(v), None)).collect(),
        (b, a) if b == a => Vec::new(),
        (b, a) => vec![FieldChange { path: path.to_string(), before: b.cloned(), after: a.cloned() }],
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{Address, Resource};
    use serde_json::json;

    fn want(addr: &str, inputs: Value) -> Resource {
        Resource::new(addr.parse().unwrap(), &inputs, vec![])
    }

    fn rec(r: &Resource) -> Record {
        Record {
            address: r.address.to_string(),
            kind: r.kind.as_str().into(),
            fingerprint: r.fingerprint.clone(),
            inputs: r.inputs.clone(),
            outputs: json!({}),
            deps: vec![],
        }
    }

    #[test]
    fn create_update_delete_and_unchanged() {
        let a = want("key.a", json!({"models": ["x"], "alias": "fleet-a"}));
        let b_old = want("key.b", json!({"models": ["x"], "alias": "fleet-b"}));
        let b_new = want("key.b", json!({"models": ["y"], "alias": "fleet-b"}));
        let c = want("key.c", json!({}));
        let desired: Desired = [(a.address.to_string(), a.clone()), (b_new.address.to_string(), b_new.clone())].into();
        let prior: BTreeMap<_, _> = [("key.b".to_string(), rec(&b_old)), ("key.c".to_string(), rec(&c))].into();
        let plan = diff(&desired, &prior, &BTreeMap::new());
        let got: Vec<(&str, Action)> = plan.changes.iter().map(|c| (c.address.as_str(), c.action)).collect();
        assert_eq!(got, vec![("key.a", Action::Create), ("key.b", Action::Update), ("key.c", Action::Delete)]);
        assert_eq!(
            plan.changes[1].fields,
            vec![FieldChange { path: "models".into(), before: Some(json!(["x"])), after: Some(json!(["y"])) }]
        );
        let converged: BTreeMap<_, _> = [("key.a".to_string(), rec(&a)), ("key.b".to_string(), rec(&b_new))].into();
        let plan = diff(&desired, &converged, &BTreeMap::new());
        assert!(plan.is_empty());
        assert_eq!(plan.unchanged, 2);
    }

    #[test]
    fn dependents_of_a_replaced_resource_are_updated() {
        let key = want("key.a", json!({"models": ["x"]}));
        let mut patch = Resource::new(Address::GatewayModels("g".into()), &json!({}), vec![Address::Key("a".into())]);
        patch.fingerprint = "same".into();
        let desired: Desired =
            [(key.address.to_string(), key.clone()), (patch.address.to_string(), patch.clone())].into();
        let prior: BTreeMap<_, _> = [("key.a".to_string(), rec(&key)), (patch.address.to_string(), rec(&patch))].into();
        let drift: BTreeMap<_, _> = [("key.a".to_string(), Drift::Replace("env file missing".into()))].into();
        let plan = diff(&desired, &prior, &drift);
        let got: Vec<(&str, Action, Option<&str>)> =
            plan.changes.iter().map(|c| (c.address.as_str(), c.action, c.reason.as_deref())).collect();
        assert_eq!(
            got,
            vec![
                ("gateway.g.models", Action::Update, Some("key.a is replaced")),
                ("key.a", Action::Replace, Some("env file missing"))
            ]
        );
        assert_eq!(plan.unchanged, 0);
    }

    #[test]
    fn drift_turns_a_no_op_into_a_repair() {
        let a = want("key.a", json!({"models": ["x"]}));
        let desired: Desired = [(a.address.to_string(), a.clone())].into();
        let prior: BTreeMap<_, _> = [("key.a".to_string(), rec(&a))].into();
        let drift: BTreeMap<_, _> = [("key.a".to_string(), Drift::Replace("env file missing".into()))].into();
        let plan = diff(&desired, &prior, &drift);
        assert_eq!(plan.changes[0].action, Action::Replace);
        assert_eq!(plan.changes[0].reason.as_deref(), Some("env file missing"));
        assert!(plan.changes[0].fields.is_empty());
    }
}
