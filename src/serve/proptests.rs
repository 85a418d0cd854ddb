//! Bad API bodies and trace envelopes at scale (issue 24, item 9): 100,000 generated cases each —
//! message bodies (JSON of every shape, and bytes that are not JSON), trace batches of envelopes
//! with every field of every type and size, from every kind of sender — and none panics; every
//! refusal is one of the codes docs/api.md documents, with the status it gives.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::auth::Principal;

/// (status, code) of every row of docs/api.md's error table (read once).
fn documented() -> &'static [(u16, String)] {
    static TABLE: std::sync::OnceLock<Vec<(u16, String)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(read_table)
}

fn read_table() -> Vec<(u16, String)> {
    let doc = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md")).unwrap();
    let mut out = Vec::new();
    for line in doc.lines().skip_while(|l| !l.starts_with("| 400 |")).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Ok(status) = cells[1].parse::<u16>() else { continue };
        for code in cells[2].split(',') {
            out.push((status, code.trim().trim_matches('`').to_string()));
        }
    }
    assert!(out.len() > 20, "the error table of docs/api.md was not read");
    out
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop::collection::vec(any::<char>(), 0..12).prop_map(|c| Value::from(c.into_iter().collect::<String>())),
        prop::sample::select(vec!["", " ", "main", "a b", "../x", "alice", "x\r\nY: 1", "2026-12-07T15:00:00Z"])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(vec!["text", "thread", "from", "x", "events"]), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// A message body: a generated object with the API's fields (or others), any JSON, or raw bytes.
fn message_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            prop::option::of(json_value()),
            prop::option::of(json_value()),
            prop::option::of(json_value()),
            prop::option::of(json_value())
        )
            .prop_map(|(text, thread, from, extra)| {
                let mut m = serde_json::Map::new();
                for (k, v) in [("text", text), ("thread", thread), ("from", from), ("other", extra)] {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                }
                serde_json::to_vec(&Value::Object(m)).unwrap()
            }),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

const KINDS: &[&str] =
    &["message_in", "message_out", "llm_call", "tool_call", "tool_result", "reasoning", "error", "lifecycle", "x"];

/// An envelope, most fields right, each one possibly wrong (type, size, value).
fn envelope() -> impl Strategy<Value = Value> {
    let id = prop_oneof![Just(json!("e1")), Just(json!("x".repeat(201))), Just(json!("")), json_value(),];
    let at = prop_oneof![
        Just(json!("2026-12-07T15:00:00Z")),
        Just(json!("2099-01-01T00:00:00Z")),
        Just(json!("1970-01-01T00:00:00Z")),
        Just(json!("yesterday")),
        json_value(),
    ];
    let agent =
        prop_oneof![Just(json!("alice")), Just(json!("Alice")), Just(json!("bob")), Just(Value::Null), json_value()];
    let big = prop_oneof![
        500 => Just(Value::Null),
        1 => Just(json!({"text": "y".repeat(300 * 1024)})),
        500 => json_value(),
    ];
    (
        id,
        at,
        agent,
        prop::sample::select(KINDS),
        prop::sample::select(vec!["litellm", "openclaw", "fleet", "test", ""]),
        big,
        prop::option::of(json_value()),
        any::<i64>(),
    )
        .prop_map(|(id, at, agent, kind, backend, payload, cost, v)| {
            json!({"v": if v % 7 == 0 { json!(v) } else { json!(1) }, "id": id, "trace_id": null, "created_at": at,
                   "agent_name": agent, "kind": kind, "backend_name": backend, "cost_usd": cost, "payload": payload})
        })
}

fn principal() -> impl Strategy<Value = Principal> {
    prop_oneof![
        Just(Principal::Admin),
        Just(Principal::Callback),
        Just(Principal::Gateway("main".into())),
        Just(Principal::Agent("alice".into())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_message_body_panics_and_every_refusal_is_documented(body in message_body(), wait in any::<Option<String>>()) {
        let known = documented();
        for e in [super::request::new_message(&body).err(), super::request::wait_secs(wait.as_deref()).err(),
                  super::request::limit(wait.as_deref()).err()].into_iter().flatten() {
            prop_assert!(known.iter().any(|(s, c)| *s == e.status.as_u16() && c == e.code), "{} {} undocumented", e.status, e.code);
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn no_trace_batch_panics_and_every_refusal_is_documented(
        events in prop::collection::vec(envelope(), 0..4),
        shape in 0u8..3,
        who in principal(),
    ) {
        let known = documented();
        let body = match shape {
            0 => json!({"events": events}),
            1 => Value::Array(events),
            _ => events.into_iter().next().unwrap_or(json!(5)),
        };
        let now = crate::clock::parse_rfc3339_ms("2026-12-07T15:00:00Z").unwrap();
        match super::trace_api::batch(&serde_json::to_vec(&body).unwrap()) {
            Err(e) => prop_assert!(known.iter().any(|(s, c)| *s == e.status.as_u16() && c == e.code), "{} {}", e.status, e.code),
            Ok(list) => {
                for (i, v) in list.into_iter().enumerate() {
                    if let Err(r) = super::trace_api::checked(i, v, &who, now) {
                        prop_assert!(known.iter().any(|(_, c)| c == r.code), "{} undocumented", r.code);
                        prop_assert!(r.message.starts_with(&format!("events[{i}]")), "{}", r.message);
                    }
                }
            }
        }
    }
}
