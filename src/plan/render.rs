//! Plans as text for people and JSON for scripts. Values that look like secrets
//! are redacted here too, even though inputs are built never to hold one.

use std::fmt::Write;

use serde_json::{json, Value};

use super::{Action, Change, Plan};

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

pub fn json(plan: &Plan, fleet: &str) -> Value {
    let changes: Vec<Value> = plan
        .changes
        .iter()
        .map(|c| {
            let mut v = serde_json::to_value(c).expect("plan serialises");
            v["fields"] = redact(&v["fields"]);
            v
        })
        .collect();
    json!({
        "format_version": 1,
        "fleet": fleet,
        "changes": changes,
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
            }],
            unchanged: 0,
        };
        let t = text(&plan);
        assert!(!t.contains("0123456789"), "{t}");
        assert!(t.contains("(sensitive)"));
        assert!(!json(&plan, "f").to_string().contains("0123456789"));
    }
}
