//! The trace event, envelope v1: the field list is fixed (docs/trace.md); senders are the
//! gateway plugin, the proxy's callback, the daemon's router and apply. Checking an envelope is
//! pure: it names the field that is wrong.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::parse_rfc3339_ms;

pub const KINDS: &[&str] =
    &["message_in", "message_out", "llm_call", "tool_call", "tool_result", "reasoning", "error", "lifecycle"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u32,
    pub id: String,
    pub trace_id: Option<String>,
    #[serde(default)]
    pub parent_id: Option<String>,
    pub created_at: String,
    pub agent_name: Option<String>,
    pub kind: String,
    #[serde(default)]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub thread_id: Option<String>,
    #[serde(default)]
    pub backend_name: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub duration_ms: Option<i64>,
    #[serde(default)]
    pub tokens_in: Option<i64>,
    #[serde(default)]
    pub tokens_out: Option<i64>,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub payload: Value,
}

/// What is wrong with one envelope: the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub why: String,
}

const ID_MAX: usize = 200;
const TEXT_MAX: usize = 4096;
/// An envelope's serialized size limit; payloads carry tool results (truncated by senders).
pub const EVENT_MAX_BYTES: usize = 256 * 1024;

/// An agent name as fleet's files use it: it becomes a directory name.
pub fn is_agent_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
        && !s.starts_with('-')
}

fn short(field: &'static str, v: &Option<String>, max: usize) -> Result<(), Invalid> {
    match v {
        Some(s) if s.len() > max => Err(Invalid { field, why: format!("longer than {max} bytes") }),
        Some(s) if s.is_empty() => Err(Invalid { field, why: "empty (use null)".into() }),
        _ => Ok(()),
    }
}

fn not_negative(field: &'static str, v: Option<i64>) -> Result<(), Invalid> {
    match v {
        Some(n) if n < 0 => Err(Invalid { field, why: format!("{n} is negative") }),
        _ => Ok(()),
    }
}

impl Envelope {
    /// An event of `kind` by `agent` at `created_at`, sent by `backend`, every optional field
    /// empty: senders set what applies (`Envelope { trace_id: …, ..Envelope::new(…) }`).
    pub fn new(id: String, kind: &str, agent: &str, created_at: String, backend: &str, payload: Value) -> Envelope {
        Envelope {
            v: 1,
            id,
            trace_id: None,
            parent_id: None,
            created_at,
            agent_name: Some(agent.to_string()),
            kind: kind.to_string(),
            channel_id: None,
            thread_id: None,
            backend_name: Some(backend.to_string()),
            model: None,
            duration_ms: None,
            tokens_in: None,
            tokens_out: None,
            cost_usd: None,
            error: None,
            payload,
        }
    }

    /// Checks the envelope; returns its time in UTC milliseconds.
    pub fn check(&self) -> Result<i64, Invalid> {
        if self.v != 1 {
            return Err(Invalid { field: "v", why: format!("version {} is not 1", self.v) });
        }
        if self.id.is_empty() || self.id.len() > ID_MAX || self.id.chars().any(char::is_control) {
            return Err(Invalid { field: "id", why: format!("must be 1–{ID_MAX} printable characters") });
        }
        if !KINDS.contains(&self.kind.as_str()) {
            return Err(Invalid { field: "kind", why: format!("{:?} is not one of {}", self.kind, KINDS.join(", ")) });
        }
        let ms = parse_rfc3339_ms(&self.created_at).ok_or_else(|| Invalid {
            field: "created_at",
            why: format!("{:?} is not an RFC 3339 time (2026-11-29T14:59:59.999Z)", self.created_at),
        })?;
        if let Some(a) = &self.agent_name {
            if !is_agent_name(a) {
                return Err(Invalid { field: "agent_name", why: format!("{a:?} is not an agent name") });
            }
        }
        short("trace_id", &self.trace_id, ID_MAX)?;
        short("parent_id", &self.parent_id, ID_MAX)?;
        short("channel_id", &self.channel_id, ID_MAX)?;
        short("thread_id", &self.thread_id, TEXT_MAX)?;
        short("backend_name", &self.backend_name, ID_MAX)?;
        short("model", &self.model, ID_MAX)?;
        short("error", &self.error, TEXT_MAX)?;
        not_negative("duration_ms", self.duration_ms)?;
        not_negative("tokens_in", self.tokens_in)?;
        not_negative("tokens_out", self.tokens_out)?;
        if let Some(c) = self.cost_usd {
            if !c.is_finite() || c < 0.0 {
                return Err(Invalid { field: "cost_usd", why: format!("{c} is not a cost") });
            }
        }
        if !(self.payload.is_object() || self.payload.is_null()) {
            return Err(Invalid { field: "payload", why: "must be an object or null".into() });
        }
        Ok(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub fn sample() -> Envelope {
        serde_json::from_value(json!({
            "v": 1, "id": "e1", "trace_id": "r1", "parent_id": null, "created_at": "2026-11-29T14:59:59.999Z",
            "agent_name": "alice", "kind": "llm_call", "channel_id": null, "thread_id": "main",
            "backend_name": "litellm", "model": "mock", "duration_ms": 12, "tokens_in": 3, "tokens_out": 4,
            "cost_usd": 0.001, "error": null, "payload": {}
        }))
        .unwrap()
    }

    #[test]
    fn a_good_envelope_gives_its_time() {
        assert_eq!(sample().check(), Ok(1_795_964_399_999));
    }

    #[test]
    fn each_bad_field_is_named() {
        type Breaker = Box<dyn Fn(&mut Envelope)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("v", Box::new(|e| e.v = 2)),
            ("id", Box::new(|e| e.id.clear())),
            ("kind", Box::new(|e| e.kind = "chat".into())),
            ("created_at", Box::new(|e| e.created_at = "now".into())),
            ("agent_name", Box::new(|e| e.agent_name = Some("../etc".into()))),
            ("tokens_in", Box::new(|e| e.tokens_in = Some(-1))),
            ("cost_usd", Box::new(|e| e.cost_usd = Some(f64::NAN))),
            ("payload", Box::new(|e| e.payload = json!([1]))),
            ("trace_id", Box::new(|e| e.trace_id = Some(String::new()))),
        ];
        for (field, break_it) in cases {
            let mut e = sample();
            break_it(&mut e);
            assert_eq!(e.check().unwrap_err().field, field);
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["extra"] = json!(1);
        assert!(serde_json::from_value::<Envelope>(v).is_err());
    }
}
