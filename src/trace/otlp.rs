//! Trace events → OpenTelemetry spans, following the GenAI semantic conventions. Pure.
//!
//! One turn (one `trace_id`) is one OTel trace: `invoke_agent {agent}` for the turn (from its
//! `message_in` to its `message_out` or `error`), `chat {model}` per LLM call the gateway made,
//! `execute_tool {tool}` per tool call (from `tool_call` to its `tool_result`). Ids are derived
//! from the event ids (sha256), so a span sent twice is the same span, and a child can be sent
//! before its turn ends: its parent's id is known from the trace id alone. Message content and
//! tool arguments/results only with `capture_content`.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use sha2::{Digest, Sha256};

use super::envelope::Envelope;

fn digest(s: &str, n: usize) -> Vec<u8> {
    Sha256::digest(s.as_bytes())[..n].to_vec()
}

pub fn trace_id_of(trace: &str) -> Vec<u8> {
    digest(&format!("trace\0{trace}"), 16)
}

pub fn span_id_of(event_id: &str) -> Vec<u8> {
    digest(&format!("span\0{event_id}"), 8)
}

/// The id of a turn's root event (its `message_in`), as the plugin and the router name it.
pub fn root_event_id(trace: &str) -> String {
    format!("oc:{trace}:in")
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}
fn s(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}
fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

fn nanos(ms: i64) -> u64 {
    (ms.max(0) as u64) * 1_000_000
}

fn common(e: &Envelope, op: &str, out: &mut Vec<KeyValue>) {
    out.push(s("gen_ai.operation.name", op));
    if let Some(a) = &e.agent_name {
        out.push(s("gen_ai.agent.id", a));
        out.push(s("gen_ai.agent.name", a));
    }
    if let Some(t) = &e.thread_id {
        out.push(s("gen_ai.conversation.id", t));
        out.push(s("session.id", t));
    }
    if let Some(c) = &e.channel_id {
        out.push(s("fleet.channel", c));
    }
}

fn error_status(kind: &str, msg: &str) -> (Option<Status>, KeyValue) {
    (
        Some(Status { message: msg.chars().take(500).collect(), code: status::StatusCode::Error as i32 }),
        s("error.type", kind),
    )
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub capture_content: bool,
}

/// The span an event closes, if any. `ms`: the event's time. `opening`: for a turn's end, its
/// `message_in`; for a `tool_result`, its `tool_call` (each with its time), when known.
pub fn span_of(e: &Envelope, ms: i64, opening: Option<&(i64, Envelope)>, o: Options) -> Option<Span> {
    let trace = e.trace_id.as_deref()?;
    let root = root_event_id(trace);
    let parent = || span_id_of(&root);
    let mut attrs = Vec::new();
    let mut st = None;
    let content = |attrs: &mut Vec<KeyValue>, key: &str, v: &serde_json::Value| {
        if o.capture_content && !v.is_null() {
            let text = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            attrs.push(s(key, &text));
        }
    };
    let (name, span_id, parent_id, start, end, kind) = match e.kind.as_str() {
        "message_out" | "error" if e.parent_id.as_deref() == Some(root.as_str()) => {
            let agent = e.agent_name.as_deref().unwrap_or("agent");
            common(e, "invoke_agent", &mut attrs);
            let start = opening.map(|(t, _)| *t).unwrap_or(ms);
            if let Some((_, m_in)) = opening {
                content(&mut attrs, "gen_ai.input.messages", &m_in.payload["text"]);
            }
            if e.kind == "error" {
                let (x, a) =
                    error_status(e.error.as_deref().unwrap_or("error"), e.payload["text"].as_str().unwrap_or(""));
                st = x;
                attrs.push(a);
            } else {
                content(&mut attrs, "gen_ai.output.messages", &e.payload["text"]);
            }
            (format!("invoke_agent {agent}"), span_id_of(&root), Vec::new(), start, ms, span::SpanKind::Internal)
        }
        "llm_call" => {
            let model = e.model.as_deref().unwrap_or("unknown");
            common(e, "chat", &mut attrs);
            let provider = e.payload["provider"].as_str().or(e.backend_name.as_deref()).unwrap_or("unknown");
            attrs.push(s("gen_ai.provider.name", provider));
            attrs.push(s("gen_ai.request.model", model));
            attrs.push(s("gen_ai.response.model", e.payload["response_model"].as_str().unwrap_or(model)));
            if let Some(t) = e.tokens_in {
                attrs.push(i("gen_ai.usage.input_tokens", t));
            }
            if let Some(t) = e.tokens_out {
                attrs.push(i("gen_ai.usage.output_tokens", t));
            }
            if let Some(c) = e.cost_usd {
                attrs.push(kv("fleet.cost_usd", any_value::Value::DoubleValue(c)));
            }
            if let Some(err) = &e.error {
                let (x, a) = error_status(err, err);
                st = x;
                attrs.push(a);
            }
            let start = ms - e.duration_ms.unwrap_or(0);
            let parent = if e.parent_id.is_some() { parent() } else { Vec::new() };
            (format!("chat {model}"), span_id_of(&e.id), parent, start, ms, span::SpanKind::Client)
        }
        "tool_result" => {
            let tool = e.payload["tool"].as_str().unwrap_or("tool");
            common(e, "execute_tool", &mut attrs);
            attrs.push(s("gen_ai.tool.name", tool));
            if let Some(id) = e.payload["tool_call_id"].as_str() {
                attrs.push(s("gen_ai.tool.call.id", id));
            }
            if let Some((_, call)) = opening {
                content(&mut attrs, "gen_ai.tool.call.arguments", &call.payload["args"]);
            }
            content(&mut attrs, "gen_ai.tool.call.result", &e.payload["result"]);
            if e.payload["is_error"] == true {
                let (x, a) = error_status("tool_error", "the tool reported an error");
                st = x;
                attrs.push(a);
            }
            let start = opening.map(|(t, _)| *t).unwrap_or(ms - e.duration_ms.unwrap_or(0));
            (format!("execute_tool {tool}"), span_id_of(&e.id), parent(), start, ms, span::SpanKind::Internal)
        }
        _ => return None,
    };
    Some(Span {
        trace_id: trace_id_of(trace),
        span_id,
        parent_span_id: parent_id,
        name,
        kind: kind as i32,
        start_time_unix_nano: nanos(start.min(end)),
        end_time_unix_nano: nanos(end),
        attributes: attrs,
        status: st,
        ..Default::default()
    })
}

/// One export request: the fleet as the resource (`service.name` = "fleet", `fleet.name`).
pub fn request(fleet: &str, project: Option<&str>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    let mut attributes = vec![s("service.name", "fleet"), s("fleet.name", fleet)];
    if let Some(p) = project {
        attributes.push(s("openinference.project.name", p));
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes, ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "fleet".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(id: &str, kind: &str, parent: Option<&str>, payload: serde_json::Value) -> Envelope {
        serde_json::from_value(json!({
            "v": 1, "id": id, "trace_id": "run1", "parent_id": parent, "created_at": "2026-11-29T14:00:00Z",
            "agent_name": "alice", "kind": kind, "thread_id": "agent:alice:main", "backend_name": "openclaw",
            "model": "m1", "duration_ms": 40, "tokens_in": 5, "tokens_out": 7, "payload": payload
        }))
        .unwrap()
    }

    fn attr<'a>(sp: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        sp.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_turn_is_a_root_with_chat_and_tool_children() {
        let o = Options { capture_content: false };
        let root_in = (1000, ev("oc:run1:in", "message_in", None, json!({"text": "secret question"})));
        let out = ev("oc:run1:out", "message_out", Some("oc:run1:in"), json!({"text": "secret answer"}));
        let root = span_of(&out, 5000, Some(&root_in), o).unwrap();
        assert_eq!(root.name, "invoke_agent alice");
        assert!(root.parent_span_id.is_empty());
        assert_eq!((root.start_time_unix_nano, root.end_time_unix_nano), (1_000_000_000, 5_000_000_000));
        assert!(attr(&root, "gen_ai.input.messages").is_none(), "no content unless asked");

        let call = ev("c1", "llm_call", Some("oc:run1:in"), json!({"provider": "litellm"}));
        let chat = span_of(&call, 2000, None, o).unwrap();
        assert_eq!(chat.name, "chat m1");
        assert_eq!(chat.parent_span_id, root.span_id);
        assert_eq!(chat.trace_id, root.trace_id);
        assert_eq!(attr(&chat, "gen_ai.usage.input_tokens"), Some(&any_value::Value::IntValue(5)));
        assert_eq!(chat.start_time_unix_nano, 1_960_000_000);

        let tc = (
            2100,
            ev("t1", "tool_call", Some("oc:run1:in"), json!({"tool": "read", "tool_call_id": "x", "args": {"p": 1}})),
        );
        let tr =
            ev("t1r", "tool_result", Some("oc:run1:in"), json!({"tool": "read", "tool_call_id": "x", "result": "ok"}));
        let tool = span_of(&tr, 2300, Some(&tc), Options { capture_content: true }).unwrap();
        assert_eq!(tool.name, "execute_tool read");
        assert_eq!(tool.parent_span_id, root.span_id);
        assert_eq!(tool.start_time_unix_nano, 2_100_000_000);
        assert_eq!(attr(&tool, "gen_ai.tool.call.id"), Some(&any_value::Value::StringValue("x".into())));
        assert!(attr(&tool, "gen_ai.tool.call.arguments").is_some());
        // Nothing else closes a span.
        assert!(span_of(&tc.1, 2100, None, o).is_none());
        assert!(span_of(&root_in.1, 1000, None, o).is_none());
    }
}
