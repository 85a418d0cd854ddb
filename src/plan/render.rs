//! Plans as text for people and JSON for scripts. Values that look like secrets
//! are redacted here too, even though inputs are built never to hold one.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{json, Value};

use super::{Action, Change, Plan};
use crate::driver::Drift;
use crate::resource::Desired;
use crate::state::Record;

fn redact(v: &Value) -> Value {
    match v {
        Value::String(s) if looks_secret(s) => Value::String("(sensitive)".into()),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), redact(v))).collect()),
        other => other.clone(),
    }
}

fn looks_secret(s: &str) -> bool {
    s.starts_with("sk-") && s.len() >= 20 && !s.contains(char::is_whitespace)
}

fn show(v: &Option<Value>) -> String {
    match v {
        None => "(none)".into(),
        Some(v) => redact(v).to_string(),
    }
}

fn change_text(out: &mut String, c: &Change) {
    let _ = write!(out, "  {} {}", c.action.symbol(), c.address);
    if let Some(place) = &c.place {
        let _ = write!(out, " ({place})");
    }
    if let Some(why) = &c.reason {
        let _ = write!(out, "  ({why})");
    }
    out.push('\n');
    if c.action == Action::Delete {
        return;
    }
    let width = c.fields.iter().map(|f| f.path.len()).max().unwrap_or(0);
    for f in &c.fields {
        let _ = match c.action {
            Action::Create => writeln!(out, "      {:width$}  {}", f.path, show(&f.after)),
            _ => writeln!(out, "      {:width$}  {} → {}", f.path, show(&f.before), show(&f.after)),
        };
    }
}

pub fn summary(plan: &Plan) -> String {
    format!(
        "Plan: {} to create, {} to update, {} to replace, {} to delete; {} unchanged.",
        plan.count(Action::Create),
        plan.count(Action::Update),
        plan.count(Action::Replace),
        plan.count(Action::Delete),
        plan.unchanged
    )
}

pub fn text(plan: &Plan) -> String {
    if plan.is_empty() {
        return format!("No changes. {} resources up to date.\n", plan.unchanged);
    }
    let mut out = String::new();
    for c in &plan.changes {
        change_text(&mut out, c);
    }
    out.push('\n');
    out.push_str(&summary(plan));
    out.push('\n');
    out
}

/// The version of `fleet plan --json` (docs/plan-json.md). Bumped on any incompatible change.
pub const JSON_FORMAT_VERSION: &str = "1.0";

/// A value with every secret-looking string masked, and Terraform's sensitivity shape for it:
/// `true` where a value was masked, objects and arrays of those, `false` when nothing was.
fn masked(v: &Value) -> (Value, Value) {
    match v {
        Value::String(s) if looks_secret(s) => (Value::String("(sensitive)".into()), Value::Bool(true)),
        Value::Array(a) => {
            let (vals, shapes): (Vec<Value>, Vec<Value>) = a.iter().map(masked).unzip();
            let any = shapes.iter().any(|s| s != &Value::Bool(false));
            (Value::Array(vals), if any { Value::Array(shapes) } else { Value::Bool(false) })
        }
        Value::Object(o) => {
            let mut vals = serde_json::Map::new();
            let mut shape = serde_json::Map::new();
            for (k, x) in o {
                let (mv, ms) = masked(x);
                vals.insert(k.clone(), mv);
                let nothing = ms == Value::Bool(false) || ms.as_object().is_some_and(|o| o.is_empty());
                if !nothing {
                    shape.insert(k.clone(), ms);
                }
            }
            (Value::Object(vals), Value::Object(shape))
        }
        other => (other.clone(), Value::Bool(false)),
    }
}

fn actions(a: Option<Action>) -> Value {
    match a {
        None => json!(["no-op"]),
        Some(Action::Create) => json!(["create"]),
        Some(Action::Update) => json!(["update"]),
        Some(Action::Replace) => json!(["delete", "create"]),
        Some(Action::Delete) => json!(["delete"]),
    }
}

/// Why, as a code policy tools can match (Terraform's where one fits), next to the words.
fn reason_code(c: &Change, drifted: bool) -> Option<&'static str> {
    let why = c.reason.as_deref()?;
    Some(match c.action {
        _ if why.contains("--replace") => "replace_by_request",
        Action::Update if why.ends_with(" is replaced") => "update_because_dependency_replaced",
        Action::Replace if drifted => "replace_because_drifted",
        Action::Update if drifted => "update_because_drifted",
        _ => "other",
    })
}

/// The plan in the shape of Terraform's plan JSON: every resource in `resource_changes` (no-ops
/// included), `before`/`after` inputs with secrets masked and listed in `*_sensitive`, and
/// `resource_drift` for what observing found changed outside fleet.
pub fn json(
    plan: &Plan,
    desired: &Desired,
    prior: &BTreeMap<String, Record>,
    drift: &BTreeMap<String, Drift>,
    fleet: &str,
) -> Value {
    let by_addr: BTreeMap<&str, &Change> = plan.changes.iter().map(|c| (c.address.as_str(), c)).collect();
    let mut addrs: Vec<&str> = desired.keys().map(String::as_str).collect();
    addrs.extend(by_addr.keys().filter(|a| !desired.contains_key(**a)));
    addrs.sort();
    addrs.dedup();
    let mut changes = Vec::new();
    for addr in addrs {
        let change = by_addr.get(addr);
        // Outside a --target selection, resources are not part of the plan.
        if plan.scope.as_ref().is_some_and(|s| !s.contains(addr)) {
            continue;
        }
        let kind =
            desired.get(addr).map(|r| r.kind.as_str().to_string()).or_else(|| prior.get(addr).map(|r| r.kind.clone()));
        let before = prior.get(addr).map(|r| &r.inputs);
        let after = match change.map(|c| c.action) {
            Some(Action::Delete) => None,
            _ => desired.get(addr).map(|r| &r.inputs),
        };
        let (before, before_sensitive) = before.map(masked).unwrap_or((Value::Null, Value::Bool(false)));
        let (after, after_sensitive) = after.map(masked).unwrap_or((Value::Null, Value::Bool(false)));
        let mut rc = json!({
            "address": addr,
            "mode": "managed",
            "type": kind,
            "change": {
                "actions": actions(change.map(|c| c.action)),
                "before": before,
                "after": after,
                "before_sensitive": before_sensitive,
                "after_sensitive": after_sensitive,
            },
        });
        if let Some(c) = change {
            // fleet's own addition for updates: the leaf-level differences the text plan shows.
            if matches!(c.action, Action::Update | Action::Replace) {
                rc["field_changes"] = redact(&serde_json::to_value(&c.fields).expect("fields serialise"));
            }
            if let Some(code) = reason_code(c, drift.contains_key(addr)) {
                rc["action_reason"] = json!(code);
                rc["reason"] = json!(c.reason);
            }
            // fleet's own addition: where it runs, when not on this machine.
            if let Some(place) = &c.place {
                rc["place"] = json!(place);
            }
        }
        changes.push(rc);
    }
    let drifted: Vec<Value> = drift
        .iter()
        .map(|(addr, d)| {
            let (action, why) = match d {
                Drift::Update(w) => ("update", w.as_str()),
                Drift::Replace(w) => ("replace", w.as_str()),
                Drift::InSync => ("no-op", ""),
            };
            json!({
                "address": addr,
                "type": prior.get(addr).map(|r| r.kind.clone()),
                "reason": why,
                "repair": action,
            })
        })
        .collect();
    json!({
        "format_version": JSON_FORMAT_VERSION,
        "fleet_version": env!("CARGO_PKG_VERSION"),
        "fleet": fleet,
        "resource_changes": changes,
        "resource_drift": drifted,
        "summary": {
            "create": plan.count(Action::Create),
            "update": plan.count(Action::Update),
            "replace": plan.count(Action::Replace),
            "delete": plan.count(Action::Delete),
            "unchanged": plan.unchanged,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::FieldChange;

    #[test]
    fn where_a_change_runs_is_named_beside_it() {
        let change = |place: Option<&str>| Change {
            address: "gateway.far".into(),
            kind: "gateway".into(),
            action: Action::Update,
            reason: Some("gateway far is not running".into()),
            fields: vec![],
            place: place.map(str::to_string),
        };
        let plan = Plan { changes: vec![change(Some("host site, member m2")), change(None)], ..Plan::default() };
        let t = text(&plan);
        assert!(t.contains("  ~ gateway.far (host site, member m2)  (gateway far is not running)\n"), "{t}");
        assert!(t.contains("  ~ gateway.far  (gateway far is not running)\n"), "{t}");
    }

    #[test]
    fn secrets_never_print() {
        let plan = Plan {
            changes: vec![Change {
                address: "key.a".into(),
                kind: "key".into(),
                action: Action::Update,
                reason: None,
                fields: vec![FieldChange {
                    path: "token".into(),
                    before: Some(json!("sk-fleet-0123456789abcdef0123")),
                    after: Some(json!(["sk-live-0123456789abcdef0123"])),
                }],
                place: None,
            }],
            ..Plan::default()
        };
        let t = text(&plan);
        assert!(!t.contains("0123456789"), "{t}");
        assert!(t.contains("(sensitive)"));
        let desired = Desired::new();
        let prior: BTreeMap<String, Record> = [(
            "key.a".to_string(),
            Record {
                address: "key.a".into(),
                kind: "key".into(),
                fingerprint: String::new(),
                inputs: json!({"token": "sk-fleet-0123456789abcdef0123", "models": ["x"]}),
                outputs: json!({}),
                deps: vec![],
            },
        )]
        .into();
        let doc = json(&plan, &desired, &prior, &BTreeMap::new(), "f");
        assert!(!doc.to_string().contains("0123456789"), "{doc}");
        assert_eq!(doc["resource_changes"][0]["change"]["before_sensitive"], json!({"token": true}));
        assert_eq!(doc["resource_changes"][0]["change"]["before"]["models"], json!(["x"]));
    }
}

#[cfg(test)]
mod json_format {
    //! The plan JSON's shape, pinned (docs/plan-json.md): a fleet with a gateway and two agents,
    //! against a state where one key's scope changed, one agent left and one key drifted.

    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use serde_json::json;

    use crate::driver::Drift;
    use crate::fleetfile::{parse, SourceFile};
    use crate::layout::Layout;
    use crate::plan::diff;
    use crate::state::Record;

    const FLEET: &str = r#"fleet "demo"
litellm port=4100
provider "demo" type="mock" { model "demo-small"; model "demo-large"; }
gateway "main" port=18800
agent "alice" model="demo-small" { fallback "demo-large"; heartbeat every="30m" prompt="Check in."; identity name="Alice" emoji="🔬"; }
agent "bob" model="demo-large"
"#;

    #[test]
    fn plan_json_is_terraform_shaped() {
        let spec = parse(SourceFile::new("fleet.kdl", FLEET.into()), Path::new("/repo")).unwrap();
        let layout = Layout { data_dir: PathBuf::from("/data"), cache_dir: PathBuf::from("/cache") };
        let desired = crate::desired::desired(&spec, &layout).unwrap();
        let mut prior: BTreeMap<String, Record> = desired
            .iter()
            .map(|(a, r)| {
                let rec = Record {
                    address: a.clone(),
                    kind: r.kind.as_str().into(),
                    fingerprint: r.fingerprint.clone(),
                    inputs: r.inputs.clone(),
                    outputs: json!({}),
                    deps: r.dep_strings(),
                };
                (a.clone(), rec)
            })
            .filter(|(a, _)| !a.starts_with("gateway.main") && !a.starts_with("wake.") && !a.starts_with("agent."))
            .collect();
        let alice = prior.get_mut("key.alice").unwrap();
        alice.inputs["models"] = json!(["demo-small"]);
        alice.fingerprint = "old".into();
        let mut carol = prior["key.bob"].clone();
        carol.address = "key.carol".into();
        carol.inputs["alias"] = json!("fleet-carol");
        prior.insert("key.carol".into(), carol);
        let drift: BTreeMap<String, Drift> =
            [("key.bob".to_string(), Drift::Replace("/data/agents/bob/env is missing".into()))].into();
        let plan = diff(&desired, &prior, &drift);
        let mut doc = super::json(&plan, &desired, &prior, &drift, "demo");
        doc["fleet_version"] = json!("[version]");
        insta::assert_json_snapshot!(doc);
    }
}
