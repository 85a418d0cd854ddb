//! `lifecycle` trace events of what apply did to an agent: provisioned (its `agent.<name>` step
//! created it), updated, removed, woken (its first message sent). One id per run and step, so
//! writing them again is harmless. Pure.

use serde_json::json;

use super::envelope::Envelope;

/// The phase an applied step means for its agent, if any: (agent, phase).
pub fn phase_of(address: &str, action: &str) -> Option<(String, &'static str)> {
    if let Some(agent) = address.strip_prefix("agent.") {
        let phase = match action {
            "create" => "provisioned",
            "update" | "replace" => "updated",
            "delete" => "removed",
            _ => return None,
        };
        return Some((agent.to_string(), phase));
    }
    let agent = address.strip_prefix("wake.")?;
    (action == "create").then(|| (agent.to_string(), "woken"))
}

/// The event of one applied step (`run`: the apply run's id; `at`: UTC ms).
pub fn event(run: i64, address: &str, action: &str, at_ms: i64) -> Option<(String, Envelope)> {
    let (agent, phase) = phase_of(address, action)?;
    let e = Envelope {
        trace_id: Some(format!("apply-run-{run}")),
        channel_id: Some("apply".into()),
        ..Envelope::new(
            format!("fleet:run-{run}:{address}:{action}"),
            "lifecycle",
            &agent,
            crate::clock::format_rfc3339_ms(at_ms),
            "fleet",
            json!({"phase": phase, "run": run, "address": address}),
        )
    };
    Some((agent, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_and_wake_steps_are_phases_others_are_not() {
        assert_eq!(phase_of("agent.alice", "create"), Some(("alice".into(), "provisioned")));
        assert_eq!(phase_of("agent.alice", "delete"), Some(("alice".into(), "removed")));
        assert_eq!(phase_of("wake.alice", "create"), Some(("alice".into(), "woken")));
        assert_eq!(phase_of("key.alice", "create"), None);
        let (a, e) = event(7, "agent.bob", "update", 0).unwrap();
        assert_eq!((a.as_str(), e.id.as_str(), e.check().is_ok()), ("bob", "fleet:run-7:agent.bob:update", true));
    }
}
