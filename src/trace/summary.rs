//! What the status page shows of an agent's trace: its last turns (what came in, which tools ran,
//! what went out) from a page of its newest events. Pure.

use serde::Serialize;

use super::envelope::Envelope;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Turn {
    pub trace_id: String,
    pub at: String,
    pub channel: Option<String>,
    pub text_in: Option<String>,
    pub text_out: Option<String>,
    pub tools: Vec<String>,
    pub llm_calls: usize,
    pub error: Option<String>,
}

fn cut(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// The newest `n` turns among `events` (any order), newest first. A turn is the events of one
/// `trace_id` that has a `message_in`.
pub fn last_turns(events: &[Envelope], n: usize) -> Vec<Turn> {
    let mut roots: Vec<&Envelope> = events.iter().filter(|e| e.kind == "message_in" && e.trace_id.is_some()).collect();
    roots.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    roots.dedup_by(|a, b| a.trace_id == b.trace_id);
    roots
        .into_iter()
        .take(n)
        .map(|root| {
            let t = root.trace_id.clone().unwrap_or_default();
            let mine: Vec<&Envelope> = events.iter().filter(|e| e.trace_id.as_deref() == Some(t.as_str())).collect();
            let mut tools: Vec<String> = Vec::new();
            for e in mine.iter().filter(|e| e.kind == "tool_call") {
                tools.push(e.payload["tool"].as_str().unwrap_or("?").to_string());
            }
            let out = mine.iter().find(|e| e.kind == "message_out");
            let error = mine.iter().find(|e| e.kind == "error").map(|e| {
                e.payload["text"]
                    .as_str()
                    .or(e.payload["message"].as_str())
                    .or(e.error.as_deref())
                    .unwrap_or("error")
                    .to_string()
            });
            Turn {
                trace_id: t.clone(),
                at: root.created_at.clone(),
                channel: root.channel_id.clone(),
                text_in: root.payload["text"].as_str().map(|s| cut(s, 120)),
                text_out: out.and_then(|e| e.payload["text"].as_str()).map(|s| cut(s, 160)),
                tools,
                llm_calls: mine
                    .iter()
                    .filter(|e| e.kind == "llm_call" && e.backend_name.as_deref() != Some("litellm"))
                    .count(),
                error: error.map(|s| cut(&s, 160)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(id: &str, trace: &str, kind: &str, at: &str, payload: serde_json::Value) -> Envelope {
        serde_json::from_value(json!({"v": 1, "id": id, "trace_id": trace, "created_at": at, "agent_name": "alice",
            "kind": kind, "backend_name": "openclaw", "payload": payload}))
        .unwrap()
    }

    #[test]
    fn turns_gather_their_tools_newest_first() {
        let events = vec![
            ev("a-in", "a", "message_in", "2026-11-29T10:00:00Z", json!({"text": "first"})),
            ev("a-t", "a", "tool_call", "2026-11-29T10:00:01Z", json!({"tool": "read"})),
            ev("a-l", "a", "llm_call", "2026-11-29T10:00:02Z", json!({})),
            ev("a-out", "a", "message_out", "2026-11-29T10:00:03Z", json!({"text": "done"})),
            ev("b-in", "b", "message_in", "2026-11-29T11:00:00Z", json!({"text": "second"})),
            ev("b-err", "b", "error", "2026-11-29T11:00:01Z", json!({"text": "no reply"})),
            ev("c-t", "c", "tool_call", "2026-11-29T12:00:00Z", json!({"tool": "orphan"})),
        ];
        let t = last_turns(&events, 5);
        assert_eq!(t.len(), 2, "a trace without its message_in is no turn");
        assert_eq!((t[0].trace_id.as_str(), t[0].error.as_deref()), ("b", Some("no reply")));
        assert_eq!(
            (t[1].tools.clone(), t[1].llm_calls, t[1].text_out.as_deref()),
            (vec!["read".to_string()], 1, Some("done"))
        );
        assert_eq!(last_turns(&events, 1).len(), 1);
    }
}
