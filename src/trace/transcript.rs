//! OpenClaw transcript messages (`chat.history`) → trace events with the very ids fleet's plugin
//! gives the same things, so the daemon's backstop and the plugin deduplicate into one copy
//! (docs/trace.md). Pure.
//!
//! Per run R (a message's `__openclaw.runId`; a user message belongs to the run of the next message
//! that has one, else to its `idempotencyKey` minus `:user`): `oc:R:in` the user message (or, for a
//! heartbeat run, whose user message is hidden, the first assistant message with `turnBoundary`),
//! `oc:R:llm:<n>` the n-th assistant message of the run, `oc:R:tool_call:<id>` each tool call
//! block, `oc:R:tool_result:<id>` each tool result, `oc:R:reasoning:<n>` thinking blocks,
//! `oc:R:out` the run's last assistant message that did not stop for tools.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::envelope::Envelope;

const RESULT_CAP: usize = 16 * 1024;

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn cap(s: String, n: usize) -> (String, bool) {
    if s.len() <= n {
        return (s, false);
    }
    let mut at = n;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    (s[..at].to_string(), true)
}

fn seq(m: &Value) -> i64 {
    m["__openclaw"]["seq"].as_i64().unwrap_or(0)
}

/// The run each message belongs to (None: not known yet — a user message whose run has not
/// written anything).
pub fn runs_of(messages: &[Value]) -> Vec<Option<String>> {
    let own: Vec<Option<String>> =
        messages.iter().map(|m| m["__openclaw"]["runId"].as_str().map(str::to_string)).collect();
    (0..messages.len())
        .map(|i| {
            own[i].clone().or_else(|| {
                if messages[i]["role"] != "user" {
                    return None;
                }
                let next = own[i + 1..].iter().zip(&messages[i + 1..]).find_map(|(r, m)| {
                    if m["role"] == "user" {
                        Some(None)
                    } else {
                        r.clone().map(Some)
                    }
                });
                next.flatten().or_else(|| {
                    messages[i]["idempotencyKey"].as_str().and_then(|k| k.strip_suffix(":user")).map(str::to_string)
                })
            })
        })
        .collect()
}

struct Ctx<'a> {
    agent: &'a str,
    session: &'a str,
}

impl Ctx<'_> {
    #[allow(clippy::too_many_arguments)]
    fn event(&self, run: &str, id: String, kind: &str, m: &Value, channel: Option<&str>, payload: Value) -> Envelope {
        let root = format!("oc:{run}:in");
        let ms = m["timestamp"].as_i64().unwrap_or(0);
        Envelope {
            parent_id: (id != root).then_some(root),
            trace_id: Some(run.to_string()),
            channel_id: channel.map(str::to_string),
            thread_id: Some(self.session.to_string()),
            ..Envelope::new(id, kind, self.agent, crate::clock::format_rfc3339_ms(ms), "openclaw", payload)
        }
    }
}

/// The trace events of `messages` (one session's, any order; whole runs give exact ids).
pub fn events_of(agent: &str, session: &str, messages: &[Value]) -> Vec<Envelope> {
    let mut messages: Vec<Value> = messages.to_vec();
    messages.sort_by_key(seq);
    let runs = runs_of(&messages);
    let cx = Ctx { agent, session };
    let has_user: std::collections::HashSet<&str> =
        messages.iter().zip(&runs).filter(|(m, _)| m["role"] == "user").filter_map(|(_, r)| r.as_deref()).collect();
    let heartbeat: std::collections::HashSet<String> = messages
        .iter()
        .zip(&runs)
        .filter(|(m, r)| m["__openclaw"]["turnBoundary"] == true && r.as_deref().is_some_and(|r| !has_user.contains(r)))
        .filter_map(|(_, r)| r.clone())
        .collect();
    let mut n: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (m, run) in messages.iter().zip(&runs) {
        let Some(run) = run.as_deref() else { continue };
        let channel = heartbeat.contains(run).then_some("heartbeat");
        match m["role"].as_str() {
            Some("user") => {
                out.push(cx.event(
                    run,
                    format!("oc:{run}:in"),
                    "message_in",
                    m,
                    channel,
                    json!({"text": text_of(&m["content"])}),
                ));
            }
            Some("assistant") => {
                let k = n.entry(run.to_string()).or_default();
                *k += 1;
                let k = *k;
                if k == 1 && heartbeat.contains(run) {
                    out.push(cx.event(run, format!("oc:{run}:in"), "message_in", m, channel, json!({"text": null})));
                }
                let stop = m["stopReason"].as_str().unwrap_or_default();
                let usage = &m["usage"];
                let mut call = cx.event(
                    run,
                    format!("oc:{run}:llm:{k}"),
                    "llm_call",
                    m,
                    channel,
                    json!({"provider": m["provider"], "model": m["model"],
                           "usage": {"input": usage["input"], "output": usage["output"]},
                           "stop_reason": if stop == "toolUse" { "tool_calls" } else { stop }}),
                );
                call.model = m["model"].as_str().map(str::to_string);
                call.tokens_in = usage["input"].as_i64();
                call.tokens_out = usage["output"].as_i64();
                out.push(call);
                for b in m["content"].as_array().into_iter().flatten() {
                    match b["type"].as_str() {
                        Some("toolCall") => {
                            let id = b["id"].as_str().unwrap_or_default();
                            out.push(cx.event(
                                run,
                                format!("oc:{run}:tool_call:{id}"),
                                "tool_call",
                                m,
                                channel,
                                json!({"tool": b["name"], "tool_call_id": id, "args": b["arguments"]}),
                            ));
                        }
                        Some("thinking") => out.push(cx.event(
                            run,
                            format!("oc:{run}:reasoning:{k}"),
                            "reasoning",
                            m,
                            channel,
                            json!({"text": b["thinking"]}),
                        )),
                        _ => {}
                    }
                }
                if stop != "toolUse" {
                    let payload = json!({"text": text_of(&m["content"]), "stop_reason": stop});
                    out.push(cx.event(run, format!("oc:{run}:out"), "message_out", m, channel, payload));
                }
            }
            Some("toolResult") => {
                let id = m["toolCallId"].as_str().unwrap_or_default();
                let (result, truncated) = cap(text_of(&m["content"]), RESULT_CAP);
                let mut payload = json!({"tool": m["toolName"], "tool_call_id": id, "result": result, "is_error": m["isError"] == true});
                if truncated {
                    payload["truncated"] = json!(true);
                }
                let mut e = cx.event(run, format!("oc:{run}:tool_result:{id}"), "tool_result", m, channel, payload);
                if m["isError"] == true {
                    e.error = Some("tool_error".into());
                }
                out.push(e);
            }
            _ => {}
        }
    }
    // The run's answer is its last assistant message that did not stop for tools: keep one `out`.
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<Envelope> = out.into_iter().rev().filter(|e| seen.insert(e.id.clone())).collect();
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn() -> Vec<Value> {
        vec![
            json!({"role": "user", "content": "check status", "timestamp": 1000, "idempotencyKey": "R:user",
                   "__openclaw": {"id": "u1", "seq": 1}}),
            json!({"role": "assistant", "content": [{"type": "toolCall", "id": "call_1", "name": "read", "arguments": {"path": "AGENTS.md"}}],
                   "provider": "lab", "model": "m1", "usage": {"input": 101, "output": 7}, "stopReason": "toolUse",
                   "timestamp": 2000, "__openclaw": {"runId": "R", "id": "a1", "seq": 2}}),
            json!({"role": "toolResult", "toolCallId": "call_1", "toolName": "read", "content": [{"type": "text", "text": "# AGENTS"}],
                   "isError": false, "timestamp": 2100, "__openclaw": {"runId": "R", "id": "t1", "seq": 3}}),
            json!({"role": "assistant", "content": [{"type": "text", "text": "Done."}], "provider": "lab", "model": "m1",
                   "usage": {"input": 102, "output": 7}, "stopReason": "stop", "timestamp": 2300,
                   "__openclaw": {"runId": "R", "id": "a2", "seq": 4}}),
        ]
    }

    fn ids(v: &[Envelope]) -> Vec<&str> {
        v.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn a_tool_turn_gets_the_plugins_ids() {
        let mut msgs = turn();
        msgs.reverse(); // any order
        let ev = events_of("alice", "agent:alice:main", &msgs);
        assert_eq!(
            ids(&ev),
            ["oc:R:in", "oc:R:llm:1", "oc:R:tool_call:call_1", "oc:R:tool_result:call_1", "oc:R:llm:2", "oc:R:out"]
        );
        assert!(ev.iter().all(|e| e.trace_id.as_deref() == Some("R") && e.check().is_ok()));
        assert!(ev[1..].iter().all(|e| e.parent_id.as_deref() == Some("oc:R:in")));
        assert_eq!(ev[5].payload["text"], "Done.");
        assert_eq!((ev[1].tokens_in, ev[1].tokens_out), (Some(101), Some(7)));
        assert_eq!(ev[3].payload["result"], "# AGENTS");
    }

    #[test]
    fn a_heartbeat_run_has_a_root_without_a_user_message() {
        let msgs = vec![json!({"role": "assistant", "content": [{"type": "text", "text": "ok"}], "stopReason": "stop",
            "timestamp": 5, "__openclaw": {"runId": "H", "id": "x", "seq": 9, "turnBoundary": true}})];
        let ev = events_of("alice", "agent:alice:main", &msgs);
        assert_eq!(ids(&ev), ["oc:H:in", "oc:H:llm:1", "oc:H:out"]);
        assert!(ev.iter().all(|e| e.channel_id.as_deref() == Some("heartbeat")));
    }

    #[test]
    fn a_user_message_finds_its_run() {
        let msgs = turn();
        assert_eq!(runs_of(&msgs)[0].as_deref(), Some("R"));
        let alone =
            vec![json!({"role": "user", "content": "hi", "idempotencyKey": "K:user", "__openclaw": {"seq": 1}})];
        assert_eq!(runs_of(&alone)[0].as_deref(), Some("K"));
        let unknown = vec![json!({"role": "user", "content": "hi", "__openclaw": {"seq": 1}})];
        assert_eq!(runs_of(&unknown)[0], None);
    }
}
