//! Traces for real: the quickstart applied (LiteLLM mock model, a real OpenClaw gateway, the
//! daemon), turns routed through the daemon and calls made straight to the proxy, read back
//! through the trace API; the daemon killed under a burst of senders and stopped while agents
//! keep calling their models.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::proxy::{key_of, Proxy};
use crate::serve::{agent_token, Daemon};
use crate::support::{wait_for, wait_until, Upstream, World};

const FLEET: &str = "quickstart";

/// Every event of an agent's trace, oldest first (all pages), through the API.
pub fn trace_of(d: &Daemon, agent: &str, filter: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let c = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let (s, v) = d.request(
            "GET",
            &format!("/v1/agents/{agent}/trace?order=asc&limit=1000{filter}{c}"),
            Some(&d.admin),
            None,
        );
        assert_eq!(s, 200, "{v}");
        out.extend(v["events"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => return out,
        }
    }
}

fn kinds(events: &[Value]) -> BTreeSet<String> {
    events.iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect()
}

fn event(id: &str, agent: &str, kind: &str) -> Value {
    // Now: an event hours old lands in a sealed bucket's late file (a fixed time here made these tests
    // depend on the hour they ran at).
    let now = fleet::clock::format_rfc3339_ms(fleet::clock::now_ms());
    json!({"v": 1, "id": id, "trace_id": "t-test", "parent_id": null, "created_at": now,
           "agent_name": agent, "kind": kind, "channel_id": null, "thread_id": null, "backend_name": "test",
           "model": null, "duration_ms": null, "tokens_in": null, "tokens_out": null, "cost_usd": null,
           "error": null, "payload": {}})
}

/// How many times each event whose id passes `want` is kept, counted in the store's files
/// themselves (not through the deduplicating read) wherever the daemon may keep an event: every
/// agent's trace (`agents/<agent>/trace/`) and the trace of events of no agent of the fleet
/// (`serve/trace/<agent>/`); in each, the hourly databases (`<stem>.db`), their fallback files
/// (`<stem>.jsonl`) and late files (`<stem>.late.jsonl`). An event kept in a database and again in
/// a fallback file counts twice.
fn stored_copies(w: &World, want: impl Fn(&str) -> bool) -> BTreeMap<String, usize> {
    let data = w.data_dir(FLEET);
    let subdirs = |d: std::path::PathBuf| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()
    };
    let mut dirs: Vec<std::path::PathBuf> = subdirs(data.join("agents")).into_iter().map(|a| a.join("trace")).collect();
    dirs.extend(subdirs(data.join("serve/trace")));
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for dir in dirs {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if name.ends_with(".db") {
                let db = rusqlite::Connection::open_with_flags(&p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                db.busy_timeout(Duration::from_secs(10)).unwrap();
                // A bucket the writer has just created holds no table yet, and no event.
                let tables: i64 = db
                    .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'events'", [], |r| r.get(0))
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                if tables == 0 {
                    continue;
                }
                let mut st = db.prepare("SELECT id FROM events").unwrap();
                for id in st.query_map([], |r| r.get::<_, String>(0)).unwrap() {
                    let id = id.unwrap();
                    if want(&id) {
                        *copies.entry(id).or_default() += 1;
                    }
                }
            } else if name.ends_with(".jsonl") {
                // Fallback (`<stem>.jsonl`) and late (`<stem>.late.jsonl`) files: one event a line. A
                // torn last line (a crash mid-append, never acknowledged, skipped by reads) holds none.
                let text = std::fs::read_to_string(&p).unwrap();
                let complete = text.rfind('\n').map(|at| &text[..at]).unwrap_or_default();
                for line in complete.lines() {
                    let v: Value =
                        serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {e}: {line}", p.display()));
                    let id = v["id"].as_str().unwrap();
                    if want(id) {
                        *copies.entry(id.to_string()).or_default() += 1;
                    }
                }
            }
        }
    }
    copies
}

/// The quickstart's gateway `main`, as the test reaches it over its RPC.
fn main_gateway(w: &World) -> fleet::openclaw::client::GatewayRef {
    let kdl = w.read("fleet.kdl");
    let at = kdl.find("gateway \"main\" host=\"local\" port=").unwrap() + "gateway \"main\" host=\"local\" port=".len();
    let port: u16 = kdl[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
    fleet::openclaw::client::GatewayRef {
        name: "main".into(),
        url: format!("ws://127.0.0.1:{port}"),
        token_file: w.data_dir(FLEET).join("gateways/main/token"),
    }
}

/// Whether the plugin on gateway `main` has every event it spooled acknowledged by the daemon: its
/// offset (`trace-spool.offset`) is at the spool's end, so it has nothing left to send or resend.
fn plugin_spool_acknowledged(w: &World) -> bool {
    let dir = w.data_dir(FLEET).join("gateways/main/home/.fleet");
    let size = std::fs::metadata(dir.join("trace-spool.jsonl")).map(|m| m.len()).unwrap_or(0);
    let offset = std::fs::read_to_string(dir.join("trace-spool.offset"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["offset"].as_u64());
    offset.unwrap_or(0) == size
}

/// Whether the daemon's transcript backstop has read session `session` of `agent` to its end: it
/// holds a cursor for it (`serve/transcript-cursors.json`), and the gateway, asked from that cursor,
/// has no message past it. (Each pull stores its events before it advances the cursor.)
fn backstop_read_to_the_end(
    w: &World,
    gateway: &fleet::openclaw::client::GatewayRef,
    agent: &str,
    session: &str,
) -> bool {
    let file = w.data_dir(FLEET).join("serve/transcript-cursors.json");
    let cursors: Value = std::fs::read(file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
    let Some(cursor) = cursors[format!("{agent}\u{0}{session}")].as_str() else { return false };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let delta = rt.block_on(async {
        let c = gateway.connect().await.ok()?;
        let params = json!({"sessionKey": session, "agentId": agent, "cursor": cursor});
        c.rpc().call("chat.history", params, Duration::from_secs(30)).await.ok()
    });
    delta.is_some_and(|v| v["kind"] == "delta" && v["messages"].as_array().is_some_and(|m| m.is_empty()))
}

/// The proxy's `llm_call` events in the callback's spool past its acknowledged offset: what it
/// holds and has not delivered yet.
pub(crate) fn callback_unacknowledged(w: &World) -> Vec<Value> {
    let dir = w.data_dir(FLEET).join("litellm");
    let spool = std::fs::read(dir.join("callback-spool.jsonl")).unwrap_or_default();
    let offset: usize = std::fs::read_to_string(dir.join("callback-spool.jsonl.offset"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .filter(|n| *n <= spool.len())
        .unwrap_or(0);
    let rest = String::from_utf8_lossy(&spool[offset..]).into_owned();
    let complete = rest.rfind('\n').map(|at| &rest[..at]).unwrap_or_default().to_string();
    complete.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
}

/// A phase of the daemon's shared fleet (serve.rs), before any phase posts `t-test` events.
/// Its turn goes to a thread of its own (a session of its own in OpenClaw), as in a fleet where it
/// is the first turn: the phases before it talked to alice's main session.
pub fn a_routed_turn_is_traced_and_ingest_checks_every_batch(w: &World) {
    let d = Daemon::of(w);
    let (s, reply) = d.post("alice", r#"{"text":"hi there","thread":"traced"}"#, Some(120));
    assert_eq!(
        (s, reply["role"].as_str(), reply["text"].as_str()),
        (200, Some("agent"), Some("Hello from the demo model.")),
        "{reply}"
    );
    let msg = reply["reply_to"].as_str().unwrap().to_string();

    // The router's message_in / message_out and the proxy's llm_call, one turn.
    let events = wait_until(Duration::from_secs(120), || {
        let ev = trace_of(&d, "alice", "");
        let answered = ev.iter().any(|e| e["kind"] == "message_out" && e["trace_id"] == msg.as_str());
        let called = ev.iter().any(|e| e["kind"] == "llm_call" && e["backend_name"] == "litellm");
        (answered && called).then_some(ev)
    })
    .unwrap_or_else(|| {
        panic!(
            "waited 120 s for turn {msg}'s message_out and a proxy llm_call in alice's trace: {}",
            brief(&trace_of(&d, "alice", ""))
        )
    });
    let root = format!("oc:{msg}:in");
    // (The wake apply sent at provisioning is a turn too, with its own run id.)
    let m_in =
        events.iter().find(|e| e["id"] == root.as_str()).unwrap_or_else(|| panic!("{root} in {}", brief(&events)));
    assert_eq!((m_in["id"].as_str(), m_in["trace_id"].as_str()), (Some(root.as_str()), Some(msg.as_str())));
    let out = events.iter().find(|e| e["kind"] == "message_out" && e["trace_id"] == msg.as_str()).unwrap();
    assert_eq!(
        (out["parent_id"].as_str(), out["payload"]["text"].as_str()),
        (Some(root.as_str()), Some("Hello from the demo model."))
    );
    let call = events.iter().find(|e| e["kind"] == "llm_call" && e["backend_name"] == "litellm").unwrap();
    assert_eq!((call["agent_name"].as_str(), call["model"].as_str()), (Some("alice"), Some("demo-small")), "{call}");
    assert!(call["tokens_in"].as_i64().unwrap_or(0) > 0, "{call}");
    // Bob was woken at apply: his trace holds events (apply's own lifecycle events at least), his only.
    let bobs = wait_for(Duration::from_secs(120), "events in bob's trace (woken at apply)", || {
        Some(trace_of(&d, "bob", "")).filter(|ev| !ev.is_empty())
    });
    assert!(bobs.iter().all(|e| e["agent_name"] == "bob"), "bob's trace holds bob's events only: {}", brief(&bobs));

    // Filters and pages.
    let only = trace_of(&d, "alice", "&kind=message_in,message_out");
    assert_eq!(kinds(&only), ["message_in", "message_out"].map(String::from).into());
    let (s, v) = d.request("GET", "/v1/agents/alice/trace?limit=1", Some(&d.admin), None);
    assert_eq!((s, v["events"].as_array().unwrap().len()), (200, 1), "{v}");
    let next = v["next_cursor"].as_str().unwrap();
    let (s, v2) = d.request("GET", &format!("/v1/agents/alice/trace?limit=1&cursor={next}"), Some(&d.admin), None);
    assert_eq!(s, 200);
    assert_ne!(v["events"][0]["id"], v2["events"][0]["id"], "the cursor continues");
    for (q, code) in [
        ("kind=chat", "invalid_kind"),
        ("since=soon", "invalid_time"),
        ("limit=0", "invalid_limit"),
        ("cursor=x", "invalid_cursor"),
    ] {
        let (s, v) = d.request("GET", &format!("/v1/agents/alice/trace?{q}"), Some(&d.admin), None);
        assert_eq!((s, v["error"]["code"].as_str()), (400, Some(code)), "{q}: {v}");
    }

    // Ingest: one bad envelope is refused alone, by its index; the rest of its batch is kept.
    let mut bad = event("t-bad-0", "alice", "lifecycle");
    bad["kind"] = json!("chat");
    let body = json!({"events": [event("t-ok-0", "alice", "lifecycle"), bad]}).to_string();
    let (s, v) = d.request("POST", "/v1/trace", Some(&d.admin), Some(&body));
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(
        (v["refused"][0]["index"].as_u64(), v["refused"][0]["code"].as_str()),
        (Some(1), Some("invalid_event")),
        "{v}"
    );
    assert!(v["refused"][0]["message"].as_str().unwrap().starts_with("events[1].kind"), "{v}");
    let kept: Vec<Value> = trace_of(&d, "alice", "&trace_id=t-test");
    assert_eq!(kept.iter().map(|e| e["id"].as_str().unwrap()).collect::<Vec<_>>(), ["t-ok-0"], "the good one is kept");
    let (s, v) = d.request("POST", "/v1/trace", Some(&d.admin), Some("{\"events\": 3}"));
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_field")), "{v}");
    // A batch of bad events only: the first refusal is the error, every one listed.
    let body = json!({"events": [{"v": 1}, {"v": 2}]}).to_string();
    let (s, v) = d.request("POST", "/v1/trace", Some(&d.admin), Some(&body));
    assert_eq!(
        (s, v["error"]["code"].as_str(), v["refused"].as_array().map(Vec::len)),
        (400, Some("invalid_event"), Some(2)),
        "{v}"
    );
    // An event over 256 KiB (inside an 8 MiB body) is refused, not stored.
    let mut huge = event("t-huge", "alice", "lifecycle");
    huge["payload"] = json!({"blob": "x".repeat(7 << 20)});
    let (s, v) = d.request("POST", "/v1/trace", Some(&d.admin), Some(&json!({"events": [huge]}).to_string()));
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("event_too_large")), "{v}");

    // Who may post what: each token only what its sender produces, for the agents it may.
    let alice = agent_token(w, "alice");
    let from = |id: &str, agent: &str, kind: &str, source: &str| {
        let mut e = event(id, agent, kind);
        e["backend_name"] = json!(source);
        json!({"events": [e]}).to_string()
    };
    let (s, v) = d.request("POST", "/v1/trace", None, Some(&from("t-1", "alice", "tool_call", "test")));
    assert_eq!(s, 401, "{v}");
    let (s, v) = d.request("POST", "/v1/trace", Some(&alice), Some(&from("t-2", "bob", "tool_call", "test")));
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("forbidden")), "an agent posts only its own: {v}");
    let (s, v) = d.request("POST", "/v1/trace", Some(&alice), Some(&from("t-3", "alice", "tool_call", "test")));
    assert_eq!((s, v["accepted"].as_u64(), v["duplicates"].as_u64()), (200, Some(1), Some(0)), "{v}");
    let (s, v) = d.request("POST", "/v1/trace", Some(&alice), Some(&from("t-3", "alice", "tool_call", "test")));
    assert_eq!((s, v["duplicates"].as_u64()), (200, Some(1)), "a resend is a duplicate: {v}");
    let gw = std::fs::read_to_string(w.data_dir(FLEET).join("gateways/main/token")).unwrap().trim().to_string();
    let (s, v) = d.request("POST", "/v1/trace", Some(&gw), Some(&from("t-4", "bob", "lifecycle", "openclaw")));
    assert_eq!(s, 200, "a gateway posts its agents' events: {v}");
    let (s, _) = d.request("GET", "/v1/agents/bob/trace", Some(&gw), None);
    assert_eq!(s, 403, "a gateway's token reads nothing");
    let cb = std::fs::read_to_string(w.data_dir(FLEET).join("litellm/callback.token")).unwrap().trim().to_string();
    let (s, v) = d.request("POST", "/v1/trace", Some(&cb), Some(&from("t-5", "alice", "llm_call", "litellm")));
    assert_eq!(s, 200, "the callback posts any agent's calls: {v}");
    // Forgeries (issue 24): each refused for its sender, nothing stored.
    let mut priced = event("t-forged-call", "bob", "llm_call");
    priced["backend_name"] = json!("litellm");
    priced["cost_usd"] = json!(12345);
    let priced = json!({"events": [priced]}).to_string();
    let mut future = event("t-forged-beat", "bob", "lifecycle");
    future["backend_name"] = json!("openclaw");
    future["created_at"] = json!("2099-01-01T00:00:00Z");
    future["payload"] = json!({"event": "heartbeat"});
    for (who, token, body, want) in [
        ("a gateway: a call priced as the proxy's", &gw, priced.clone(), (403, "not_its_source")),
        (
            "an agent: a call priced as the proxy's",
            &alice,
            priced.replace("\"bob\"", "\"alice\""),
            (403, "not_its_source"),
        ),
        (
            "an agent: a lifecycle event",
            &alice,
            from("t-forged-life", "alice", "lifecycle", "test"),
            (403, "not_its_source"),
        ),
        (
            "an agent: an event as openclaw",
            &alice,
            from("t-forged-oc", "alice", "message_out", "openclaw"),
            (403, "not_its_source"),
        ),
        (
            "the callback: a lifecycle event",
            &cb,
            from("t-forged-cb", "alice", "lifecycle", "litellm"),
            (403, "not_its_source"),
        ),
        (
            "a gateway: a heartbeat dated 2099",
            &gw,
            json!({"events": [future.clone()]}).to_string(),
            (400, "invalid_event"),
        ),
    ] {
        let (s, v) = d.request("POST", "/v1/trace", Some(token), Some(&body));
        assert_eq!((s, v["error"]["code"].as_str()), (want.0, Some(want.1)), "{who}: {v}");
    }
    let (s, _) = d.request("GET", "/v1/agents/alice/trace", Some(&alice), None);
    assert_eq!(s, 200, "an agent reads its own trace");
    let (s, _) = d.request("GET", "/v1/agents/bob/trace", Some(&alice), None);
    assert_eq!(s, 403, "and no other");
    let ids: Vec<String> =
        trace_of(&d, "alice", "&trace_id=t-test").iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["t-ok-0", "t-3", "t-5"], "{ids:?}");
    let bobs: Vec<String> =
        trace_of(&d, "bob", "&trace_id=t-test").iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(bobs, ["t-4"], "no forgery of bob's is kept: {bobs:?}");

    // Usage: the proxy's priced calls per agent.
    // alice's calls in a `/v1/usage` answer.
    let calls_of_alice = |v: &Value| -> i64 {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["agent"] == "alice")
            .map(|r| r["calls"].as_i64().unwrap())
            .sum()
    };
    let (s, v) = d.request("GET", "/v1/usage?since=1d", Some(&d.admin), None);
    assert_eq!(s, 200, "{v}");
    let alice_calls = calls_of_alice(&v);
    assert!(alice_calls >= 1, "{v}");

    // A caller's call id names nothing (issue 24): an oversized one and a reused one both leave
    // calls under fleet's own ids, each its own event; a short one is kept as `caller_call_id`.
    let key = crate::support::env_key(&w.data_dir(FLEET).join("agents/alice/env"));
    let proxy = crate::proxy::Proxy::of(w);
    // (LiteLLM takes a caller's id up to 256 characters; the envelope's ids are at most 200.)
    let long = format!("fleet-test-long-{}", "x".repeat(224));
    assert_eq!(proxy.chat_with(&key, "demo-small", &[("x-litellm-call-id", &long)]).0, 200);
    for _ in 0..2 {
        assert_eq!(proxy.chat_with(&key, "demo-small", &[("x-litellm-call-id", "fleet-test-reused")]).0, 200);
    }
    let calls = |v: &[Value]| -> Vec<Value> { v.iter().filter(|e| e["kind"] == "llm_call").cloned().collect() };
    let reused = wait_until(Duration::from_secs(60), || {
        let found: Vec<Value> = calls(&trace_of(&d, "alice", ""))
            .into_iter()
            .filter(|e| e["payload"]["caller_call_id"] == "fleet-test-reused")
            .collect();
        (found.len() >= 2).then_some(found)
    })
    .expect("both calls with one caller id in alice's trace");
    assert_eq!(reused.len(), 2, "{reused:?}");
    assert_ne!(reused[0]["trace_id"], reused[1]["trace_id"], "two calls, two fleet ids: {reused:?}");
    assert!(reused.iter().all(|e| e["trace_id"].as_str().is_some_and(|t| t.starts_with("fleet-") && t.len() < 64)));
    let all = calls(&trace_of(&d, "alice", ""));
    assert!(all.iter().all(|e| e["trace_id"] != long.as_str()), "the long caller id names no trace");

    // One bad event costs no other (issue 24): a call for a model whose name is longer than an
    // envelope's field (any key holder can ask for one) is refused by the proxy, and its event by the
    // daemon (`invalid_event`, the model); the callback keeps that event, with why, in its
    // dead-letter file (`fleet trace alice --rejected` shows it), and the call right after it is kept.
    let long_model = format!("no-such-model-{}", "m".repeat(240));
    assert_ne!(proxy.chat(&key, &long_model).0, 200);
    assert_eq!(proxy.chat_with(&key, "demo-small", &[("x-litellm-call-id", "fleet-test-after-long")]).0, 200);
    let rejected = w.data_dir(FLEET).join("litellm/callback-rejected.jsonl");
    let dead = wait_until(Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&rejected).ok()?;
        let kept = calls(&trace_of(&d, "alice", ""))
            .into_iter()
            .any(|e| e["payload"]["caller_call_id"] == "fleet-test-after-long");
        let line = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["event"]["model"] == long_model.as_str())?;
        kept.then_some(line)
    })
    .unwrap_or_else(|| panic!("the long model's event in {} and the next call's in alice's trace", rejected.display()));
    assert_eq!((dead["code"].as_str(), dead["sender"].as_str()), (Some("invalid_event"), Some("litellm")), "{dead}");
    assert!(dead["message"].as_str().unwrap_or("").contains("model"), "{dead}");
    let r = w.fleet(&["trace", "alice", "--rejected"]).ok();
    assert!(r.stdout.contains("invalid_event") && r.stdout.contains("model"), "{}", r.stdout);

    // `fleet trace --follow` prints what arrives — also an event older than what it printed last.
    let mut follow = Reaped(
        w.cmd(&["trace", "alice", "--follow", "--json", "--kind", "lifecycle"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = follow.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The follower prints an event (with its id) within `within`, or the test fails saying so.
    let printed = |id: &str, what: &str, within: Duration| {
        let t0 = Instant::now();
        while let Some(left) = within.checked_sub(t0.elapsed()) {
            let Ok(line) = rx.recv_timeout(left) else { break };
            if serde_json::from_str::<Value>(&line).is_ok_and(|v| v["id"] == id) {
                return;
            }
        }
        panic!("waited {} s for `fleet trace --follow` to print {what} ({id})", within.as_secs());
    };
    // First an event of now, printed: the follower runs and has printed something this recent.
    let first_ms = fleet::clock::now_ms();
    let mut first = event("t-follow-first", "alice", "lifecycle");
    first["created_at"] = json!(fleet::clock::format_rfc3339_ms(first_ms));
    let (s, v) = d.request("POST", "/v1/trace", Some(&d.admin), Some(&json!({"events": [first]}).to_string()));
    assert_eq!(s, 200, "{v}");
    printed("t-follow-first", "the event of now", Duration::from_secs(60));
    // Then one 20 s older than that, arriving after it: printed too.
    let mut late = event("t-follow", "alice", "lifecycle");
    late["created_at"] = json!(fleet::clock::format_rfc3339_ms(first_ms - 20_000));
    let (s, v) = d.request("POST", "/v1/trace", Some(&d.admin), Some(&json!({"events": [late]}).to_string()));
    assert_eq!(s, 200, "{v}");
    printed("t-follow", "the late event, 20 s older than the one it printed last", Duration::from_secs(60));
    drop(follow);

    // The CLI reads the same store (and works while the daemon is down).
    let r = w.fleet(&["trace", "alice", "--json", "--kind", "message_in"]).ok();
    let lines: Vec<Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().all(|l| l["kind"] == "message_in"), "{}", r.stdout);
    assert!(lines.iter().any(|l| l["id"].as_str() == Some(root.as_str())), "{}", r.stdout);
    let r = w.fleet(&["trace", "alice"]).ok();
    assert!(r.stdout.contains("llm_call") && r.stdout.contains("demo-small"), "{}", r.stdout);
    let r = w.fleet(&["trace", "alice", "--kind", "chat"]);
    assert_ne!(r.code, 0);
    let r = w.fleet(&["usage", "--json"]).ok();
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let row = v["rows"].as_array().unwrap().iter().find(|r| r["key"] == "alice").cloned().unwrap();
    // The same figures as the API (read before and after: the wake's call may still be arriving).
    let (_, later) = d.request("GET", "/v1/usage?since=1d", Some(&d.admin), None);
    let later = calls_of_alice(&later);
    let cli = row["calls"].as_i64().unwrap();
    assert!(alice_calls <= cli && cli <= later, "API {alice_calls} ≤ CLI {cli} ≤ API {later}: {v}");
}

/// A child process killed and reaped when dropped, also when the test fails before it is done.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Four senders post batches while the daemon is SIGKILLed five times (apply restarts it); every
/// event a sender got a 2xx for is stored exactly once. Then the daemon is stopped while alice
/// calls her model straight through the proxy: the calls succeed, and once the daemon is back
/// every `llm_call` arrives.
/// A phase of the daemon's shared fleet (serve.rs).
pub fn no_acknowledged_event_is_lost_when_the_daemon_dies(w: &World) {
    let d = Arc::new(Daemon::of(w));
    let acked: Arc<Mutex<BTreeSet<String>>> = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|s| {
            let (d, acked, stop) = (d.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut batch_no = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let ids: Vec<String> = (0..50).map(|i| format!("burst-{s}-{batch_no}-{i}")).collect();
                    let body =
                        json!({"events": ids.iter().map(|id| event(id, "alice", "tool_call")).collect::<Vec<_>>()})
                            .to_string();
                    // Like the plugin and the callback: a batch is sent again until acknowledged.
                    loop {
                        let ok =
                            std::panic::catch_unwind(|| d.request("POST", "/v1/trace", Some(&d.admin), Some(&body)))
                                .map(|(s, _)| s == 200)
                                .unwrap_or(false);
                        if ok {
                            acked.lock().unwrap().extend(ids.iter().cloned());
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    batch_no += 1;
                }
            })
        })
        .collect();
    for delay_ms in [200u64, 450, 700, 1100, 1600] {
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: kill(2) on the daemon this test's apply started.
        unsafe { libc::kill(crate::support::serve_pid(&w.data_dir(FLEET)), libc::SIGKILL) };
        w.fleet(&["apply"]).ok();
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in senders {
        s.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 200, "the senders got through between kills: {}", acked.len());
    // Exactly once: copies in the store's files themselves (every database, fallback and late file
    // of every trace directory), not through the deduplicating read.
    let burst = |w: &World| stored_copies(w, |id| id.starts_with("burst-"));
    let copies = burst(w);
    let missing: Vec<&String> = acked.iter().filter(|id| !copies.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n != 1).take(5).collect();
    assert!(twice.is_empty(), "every event stored once; kept more often: {twice:?}");
    eprintln!("{} events acknowledged across 5 kills, all stored once", acked.len());

    // The daemon is down while alice works: the proxy keeps answering; her calls arrive later.
    // Her calls through the proxy since `t0` with `model`, as the daemon has them (the wake's call
    // at apply came before).
    let calls = |d: &Daemon, t0: i64, model: &str| -> Vec<Value> {
        trace_of(d, "alice", "&kind=llm_call")
            .into_iter()
            .filter(|e| {
                e["backend_name"] == "litellm"
                    && e["model"] == model
                    && e["created_at"].as_str().and_then(fleet::clock::parse_rfc3339_ms).is_some_and(|ms| ms >= t0)
            })
            .collect()
    };
    // SAFETY: as above.
    unsafe { libc::kill(crate::support::serve_pid(&w.data_dir(FLEET)), libc::SIGKILL) };
    let t0 = fleet::clock::now_ms();
    let p = Proxy::of(w);
    let key = key_of(w, "alice");
    for _ in 0..5 {
        assert_eq!(p.chat(&key, "demo-small").0, 200, "the proxy answers without the daemon");
    }
    wait_for(
        Duration::from_secs(60),
        "the proxy's callback to hold alice's 5 calls, undelivered, in its spool",
        || {
            let held = callback_unacknowledged(w)
                .into_iter()
                .filter(|e| {
                    e["agent_name"] == "alice"
                        && e["model"] == "demo-small"
                        && e["created_at"].as_str().and_then(fleet::clock::parse_rfc3339_ms).is_some_and(|ms| ms >= t0)
                })
                .count();
            (held >= 5).then_some(())
        },
    );
    w.fleet(&["apply"]).ok();
    wait_until(Duration::from_secs(120), || (calls(&d, t0, "demo-small").len() >= 5).then_some(())).unwrap_or_else(
        || {
            panic!(
                "waited 120 s for the 5 calls made while the daemon was down: {}",
                brief(&calls(&d, t0, "demo-small"))
            )
        },
    );
    // One call more, after them: the callback sends its spool oldest first, so once this one is
    // stored, nothing spooled before it is still on its way — the count is final.
    assert_eq!(p.chat(&key, "demo-large").0, 200);
    let after = wait_for(Duration::from_secs(120), "the call made after the daemon came back", || {
        let c = calls(&d, t0, "demo-large");
        (!c.is_empty()).then_some(c)
    });
    let during = calls(&d, t0, "demo-small");
    assert_eq!(
        (during.len(), after.len()),
        (5, 1),
        "every call made while the daemon was down arrives, once: {}",
        brief(&during)
    );
    let ids: BTreeSet<String> = during.iter().chain(&after).map(|e| e["id"].as_str().unwrap().to_string()).collect();
    let kept = stored_copies(w, |id| ids.contains(id));
    assert!(ids.iter().all(|id| kept.get(id) == Some(&1)), "each call stored once: {kept:?}");
    // The burst's events too, now that the daemon has been killed and restarted once more.
    let now = burst(w);
    let changed: Vec<_> = now
        .iter()
        .filter(|(id, n)| copies.get(*id) != Some(*n))
        .chain(copies.iter().filter(|(id, _)| !now.contains_key(*id)))
        .take(5)
        .collect();
    assert!(changed.is_empty(), "the burst's events are still each stored once; changed: {changed:?}");
}

/// Every event of one turn: one trace id, every event but the root pointing at the root.
fn turn(events: &[Value], trace: &str) -> Vec<Value> {
    events.iter().filter(|e| e["trace_id"] == trace).cloned().collect()
}

/// A trace in one line per event (a failure's message must stay short: CI keeps only part of it).
fn brief(events: &[Value]) -> String {
    let line = |e: &Value| {
        let s = |k: &str| e[k].as_str().unwrap_or("-").to_string();
        format!("{} {} {} {} {}", s("ts"), s("kind"), s("backend_name"), s("channel_id"), s("trace_id"))
    };
    format!("{} events:\n{}", events.len(), events.iter().map(line).collect::<Vec<_>>().join("\n"))
}

fn count(events: &[Value], kind: &str, backend: &str) -> usize {
    events.iter().filter(|e| e["kind"] == kind && e["backend_name"] == backend).count()
}

/// The gateway's plugin: a chat turn with a tool call, and a heartbeat run (woken over the RPC),
/// each reconstructed from alice's trace; the proxy's llm_calls beside them.
/// The quickstart with alice on the scripted tool-calling model, its daemon and plugin, applied
/// once for two phases: what the plugin traces, then what survives the daemon's deaths.
#[test]
fn the_plugin_traces_tool_calls_and_heartbeats_and_its_events_survive_daemon_kills() {
    let w = World::quickstart();
    let up = Upstream::start("tool_upstream.py");
    w.edit(
        "fleet.kdl",
        "provider \"demo\" type=\"mock\" {",
        &format!(
            "provider \"scripted\" type=\"openai-compatible\" url=\"http://127.0.0.1:{}/v1\" {{\n    model \"tool-model\"\n}}\n\nprovider \"demo\" type=\"mock\" {{",
            up.1
        ),
    );
    w.edit(
        "fleet.kdl",
        "agent \"alice\" gateway=\"main\" model=\"demo-small\"",
        "agent \"alice\" gateway=\"main\" model=\"tool-model\"",
    );
    w.fleet(&["apply"]).ok();
    crate::support::phase("the plugin traces tool calls of chat turns and heartbeats", || {
        the_plugin_traces_tool_calls_of_chat_turns_and_heartbeats(&w)
    });
    crate::support::phase("the plugin's events survive daemon kills during turns", || {
        the_plugins_events_survive_daemon_kills_during_turns(&w)
    });
    drop(up);
}

fn the_plugin_traces_tool_calls_of_chat_turns_and_heartbeats(w: &World) {
    let d = Daemon::of(w);
    let (s, reply) = d.post("alice", r#"{"text":"check your status"}"#, Some(120));
    assert_eq!((s, reply["role"].as_str()), (200, Some("agent")), "{reply}");
    assert!(reply["text"].as_str().unwrap().starts_with("Done"), "{reply}");
    let msg = reply["reply_to"].as_str().unwrap().to_string();
    let root = format!("oc:{msg}:in");

    let events = wait_until(Duration::from_secs(120), || {
        let ev = turn(&trace_of(&d, "alice", ""), &msg);
        (count(&ev, "tool_result", "openclaw") >= 1
            && count(&ev, "llm_call", "openclaw") >= 2
            && count(&ev, "message_out", "openclaw") + count(&ev, "message_out", "fleet") >= 1)
            .then_some(ev)
    })
    .unwrap_or_else(|| {
        panic!(
            "waited 120 s for turn {msg}'s tool_result, two plugin llm_calls and message_out: {}",
            brief(&trace_of(&d, "alice", ""))
        )
    });
    let k = kinds(&events);
    for want in ["message_in", "llm_call", "tool_call", "tool_result", "message_out"] {
        assert!(k.contains(want), "{want} missing from {k:?}");
    }
    assert!(count(&events, "llm_call", "openclaw") >= 2, "two model calls around the tool: {}", brief(&events));
    for e in &events {
        if e["id"] == root.as_str() {
            assert!(e["parent_id"].is_null());
        } else {
            assert_eq!(e["parent_id"].as_str(), Some(root.as_str()), "{e}");
        }
    }
    let call = events.iter().find(|e| e["kind"] == "tool_call").unwrap();
    let result = events.iter().find(|e| e["kind"] == "tool_result").unwrap();
    assert_eq!(call["payload"]["tool_call_id"], result["payload"]["tool_call_id"]);
    assert!(call["payload"]["tool"].as_str().is_some(), "{call}");
    let llm = events.iter().find(|e| e["kind"] == "llm_call").unwrap();
    assert_eq!(llm["model"].as_str().map(|m| m.ends_with("tool-model")), Some(true), "{llm}");
    // The plugin's spool holds what agents said: its owner's only.
    {
        use std::os::unix::fs::PermissionsExt;
        let spool = w.data_dir(FLEET).join("gateways/main/home/.fleet/trace-spool.jsonl");
        let mode = std::fs::metadata(&spool).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", spool.display());
    }
    // The proxy saw the same two calls, with their tokens.
    let proxied =
        trace_of(&d, "alice", "&kind=llm_call").into_iter().filter(|e| e["backend_name"] == "litellm").count();
    assert!(proxied >= 2, "the proxy's llm_call events: {proxied}");

    // The status: today's calls and the last turns with their tools (API and page).
    let (s, v) = d.request("GET", "/v1/agents", Some(&d.admin), None);
    assert_eq!(s, 200);
    let a = v["agents"].as_array().unwrap().iter().find(|a| a["name"] == "alice").unwrap().clone();
    assert!(a["today"]["calls"].as_i64().unwrap() >= 2, "{a}");
    assert_eq!(a["turns"][0]["trace_id"].as_str(), Some(msg.as_str()), "{a}");
    assert!(!a["turns"][0]["tools"].as_array().unwrap().is_empty(), "{a}");
    let (s, page) = d.request("GET", "/", Some(&d.admin), None);
    let page = page.as_str().unwrap_or_default().to_string();
    assert!(s == 200 && page.contains("data-turn") && page.contains("⚙") && page.contains("today: "), "{page}");

    // A heartbeat run: hidden from plain RPC clients, seen by the plugin with its tool call.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let gw_port: u16 = {
        let kdl = w.read("fleet.kdl");
        let at =
            kdl.find("gateway \"main\" host=\"local\" port=").unwrap() + "gateway \"main\" host=\"local\" port=".len();
        kdl[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    let gref = fleet::openclaw::client::GatewayRef {
        name: "main".into(),
        url: format!("ws://127.0.0.1:{gw_port}"),
        token_file: w.data_dir(FLEET).join("gateways/main/token"),
    };
    // OpenClaw may skip a wake it finds the agent busy for ("background-work", "duplicate"): the
    // test wakes it again, three times at most — what is under test is the plugin's record of the
    // heartbeat run, not OpenClaw's wake scheduling.
    let wake = || {
        rt.block_on(async {
            let c = gref.connect().await.unwrap();
            c.rpc()
                .call(
                    "wake",
                    json!({"mode": "now", "text": "heartbeat check", "sessionKey": "agent:alice:main", "agentId": "alice"}),
                    Duration::from_secs(30),
                )
                .await
                .unwrap()
        })
    };
    // Each wake that OpenClaw runs is a heartbeat run of its own (trace id = its runId): the test
    // takes the first run that is complete, whichever wake started it.
    let heartbeat = || {
        let ev = trace_of(&d, "alice", "");
        let hb: Vec<Value> = ev.iter().filter(|e| e["channel_id"] == "heartbeat").cloned().collect();
        let mut runs: Vec<&str> = hb.iter().filter_map(|e| e["trace_id"].as_str()).collect();
        runs.dedup();
        runs.into_iter().find_map(|t| {
            let run: Vec<Value> = hb.iter().filter(|e| e["trace_id"] == t).cloned().collect();
            (run.iter().any(|e| e["kind"] == "tool_result") && run.iter().any(|e| e["kind"] == "message_out"))
                .then_some((hb.clone(), run))
        })
    };
    let mut woken = vec![];
    let hb = (0..3)
        .find_map(|_| {
            woken.push(wake());
            wait_until(Duration::from_secs(60), heartbeat)
        })
        .unwrap_or_else(|| {
            let log = std::fs::read_to_string(w.data_dir(FLEET).join("gateways/main/gateway.log")).unwrap_or_default();
            let tail: String =
                log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            panic!(
                "no heartbeat run after 3 wakes ({woken:?}); gateway log:\n{tail}\ntrace: {}",
                brief(&trace_of(&d, "alice", ""))
            )
        });
    let (all_hb, hb) = hb;
    // Every heartbeat event, of whichever run, carries its run's id as trace id and hangs under
    // that run's root: one trace per run, never one mixed.
    for e in &all_hb {
        let t = e["trace_id"].as_str().unwrap();
        assert!(e["id"].as_str().unwrap().starts_with(&format!("oc:{t}:")), "{e}");
        if e["kind"] != "message_in" {
            assert_eq!(e["parent_id"].as_str(), Some(format!("oc:{t}:in").as_str()), "{e}");
        }
    }
    let k = kinds(&hb);
    for want in ["message_in", "llm_call", "tool_call", "tool_result", "message_out"] {
        assert!(k.contains(want), "the heartbeat run lacks {want}: {}", brief(&hb));
    }
    let (_, v) = d.request("GET", "/v1/agents", Some(&d.admin), None);
    let a = v["agents"].as_array().unwrap().iter().find(|a| a["name"] == "alice").unwrap().clone();
    assert!(a["last_heartbeat"].as_str().is_some() && a["silent"].is_null(), "{a}");
    let (s, v) = d.request("GET", "/v1/agents/alice/trace?channel=heartbeat&limit=1000", Some(&d.admin), None);
    assert_eq!(s, 200);
    assert!(v["events"].as_array().unwrap().iter().all(|e| e["channel_id"] == "heartbeat"), "{v}");
    let r = w.fleet(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.all());
}

/// Arize Phoenix, a real OpenTelemetry receiver (installed by tests/run-all.sh), offline on
/// loopback with a fresh database.
struct Phoenix {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Phoenix {
    fn start() -> Phoenix {
        let exe = std::env::var("FLEET_TEST_PHOENIX")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| crate::support::shared_cache().join("fleet/tools/phoenix-20.26.1/bin/phoenix"));
        assert!(exe.exists(), "{} is missing: tests/run-all.sh installs Arize Phoenix", exe.display());
        let dir = tempfile::tempdir().unwrap();
        let (port, grpc) = (crate::support::free_port(), crate::support::free_port());
        let log = std::fs::File::create(dir.path().join("phoenix.log")).unwrap();
        let child = std::process::Command::new(exe)
            .arg("serve")
            .env("PHOENIX_WORKING_DIR", dir.path())
            .env("PHOENIX_HOST", "127.0.0.1")
            .env("PHOENIX_PORT", port.to_string())
            .env("PHOENIX_GRPC_PORT", grpc.to_string())
            .env("PHOENIX_TELEMETRY_ENABLED", "false")
            // Otherwise it fetches a sandbox binary from GitHub before it is ready.
            .env("PHOENIX_ALLOW_EXTERNAL_RESOURCES", "false")
            .env("PHOENIX_ALLOWED_SANDBOX_PROVIDERS", "NONE")
            .env("PHOENIX_DISABLE_AGENT_ASSISTANT", "true")
            .env("PHOENIX_ENABLE_AUTH", "false")
            .env("PHOENIX_LOG_MIGRATIONS", "false")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = Phoenix { child, port, _dir: dir };
        let ready = wait_until(Duration::from_secs(90), || (p.get("/readyz").0 == 200).then_some(()));
        assert!(
            ready.is_some(),
            "phoenix not ready: {}",
            std::fs::read_to_string(p._dir.path().join("phoenix.log")).unwrap_or_default()
        );
        p
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            match reqwest::Client::new().get(format!("http://127.0.0.1:{}{path}", self.port)).send().await {
                Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
                Err(_) => (0, Value::Null),
            }
        })
    }
}

impl Drop for Phoenix {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `trace { otlp … }`: a chat turn with a tool call shows up in Phoenix as `invoke_agent alice`
/// with `chat` and `execute_tool` children, GenAI attributes filled.
#[test]
fn turns_are_exported_to_phoenix_as_genai_spans() {
    let phoenix = Phoenix::start();
    let w = World::quickstart();
    let up = Upstream::start("tool_upstream.py");
    w.edit(
        "fleet.kdl",
        "provider \"demo\" type=\"mock\" {",
        &format!(
            "provider \"scripted\" type=\"openai-compatible\" url=\"http://127.0.0.1:{}/v1\" {{\n    model \"tool-model\"\n}}\n\nprovider \"demo\" type=\"mock\" {{",
            up.1
        ),
    );
    w.edit(
        "fleet.kdl",
        "agent \"alice\" gateway=\"main\" model=\"demo-small\"",
        "agent \"alice\" gateway=\"main\" model=\"tool-model\"",
    );
    let kdl = w.read("fleet.kdl");
    w.write(
        "fleet.kdl",
        &format!(
            "{kdl}\ntrace {{\n    otlp \"http://127.0.0.1:{}/v1/traces\"\n    project \"fleet-test\"\n}}\n",
            phoenix.port
        ),
    );
    w.fleet(&["apply"]).ok();
    let d = Daemon::of(&w);
    let (s, reply) = d.post("alice", r#"{"text":"check your status"}"#, Some(120));
    assert_eq!((s, reply["role"].as_str()), (200, Some("agent")), "{reply}");
    let msg = reply["reply_to"].as_str().unwrap().to_string();
    let trace_hex = &crate::support::sha256(&format!("trace\0{msg}"))[..32];

    let spans = wait_until(Duration::from_secs(60), || {
        let (s, v) = phoenix.get(&format!("/v1/projects/fleet-test/spans?limit=1000&trace_id={trace_hex}"));
        let spans = v["data"].as_array().cloned().unwrap_or_default();
        let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
        let done = s == 200
            && names.contains(&"invoke_agent alice")
            && names.iter().filter(|n| n.starts_with("chat ")).count() >= 2
            && names.iter().any(|n| n.starts_with("execute_tool "));
        done.then_some(spans)
    })
    .unwrap_or_else(|| panic!("spans of {trace_hex}: {}", phoenix.get("/v1/projects/fleet-test/spans?limit=100").1));
    let root = spans.iter().find(|s| s["name"] == "invoke_agent alice").unwrap();
    assert!(root["parent_id"].is_null(), "{root}");
    let root_id = root["context"]["span_id"].as_str().unwrap();
    assert_eq!(root["attributes"]["gen_ai.agent.name"], "alice", "{root}");
    assert_eq!(root["attributes"]["gen_ai.operation.name"], "invoke_agent");
    assert!(root["attributes"]["session.id"].as_str().is_some_and(|s| s.contains("alice")), "{root}");
    for child in spans.iter().filter(|s| s["name"] != "invoke_agent alice") {
        assert_eq!(child["parent_id"].as_str(), Some(root_id), "{child}");
    }
    let chat = spans.iter().find(|s| s["name"].as_str().is_some_and(|n| n.starts_with("chat "))).unwrap();
    assert_eq!(chat["attributes"]["gen_ai.operation.name"], "chat");
    assert!(chat["attributes"]["gen_ai.request.model"].as_str().is_some(), "{chat}");
    let tool = spans.iter().find(|s| s["name"].as_str().is_some_and(|n| n.starts_with("execute_tool "))).unwrap();
    assert!(
        tool["attributes"]["gen_ai.tool.name"].as_str().is_some()
            && tool["attributes"]["gen_ai.tool.call.id"].as_str().is_some(),
        "{tool}"
    );
    assert!(tool["attributes"].get("gen_ai.tool.call.arguments").is_none(), "no content without capture-content");
}

/// The transcript backstop: turns a gateway ran before the daemon (and its plugin) existed are
/// read back from the gateway's transcript, with the plugin's ids.
#[test]
fn turns_from_before_the_daemon_are_read_back_from_the_transcript() {
    let w = World::quickstart();
    let up = Upstream::start("tool_upstream.py");
    w.edit(
        "fleet.kdl",
        "provider \"demo\" type=\"mock\" {",
        &format!(
            "provider \"scripted\" type=\"openai-compatible\" url=\"http://127.0.0.1:{}/v1\" {{\n    model \"tool-model\"\n}}\n\nprovider \"demo\" type=\"mock\" {{",
            up.1
        ),
    );
    w.edit(
        "fleet.kdl",
        "agent \"alice\" gateway=\"main\" model=\"demo-small\"",
        "agent \"alice\" gateway=\"main\" model=\"tool-model\"",
    );
    let with_daemon = w.read("fleet.kdl");
    let at = with_daemon.find("\n// The resident daemon").unwrap();
    w.write("fleet.kdl", &with_daemon[..at + 1]);
    w.fleet(&["apply"]).ok();
    // Straight through the gateway: no daemon, no plugin.
    let r = w.fleet(&["chat", "alice", "before the daemon"]).ok();
    assert!(r.stdout.starts_with("Done"), "{}", r.all());
    // Apply's own lifecycle events (provisioned, woken) are there; nothing of the turn is.
    let r = w.fleet(&["trace", "alice", "--json"]).ok();
    assert!(r.stdout.lines().all(|l| l.contains("\"kind\":\"lifecycle\"")), "{}", r.stdout);
    assert!(r.stdout.contains("provisioned") && r.stdout.contains("woken"), "{}", r.stdout);

    w.write("fleet.kdl", &with_daemon);
    w.fleet(&["apply"]).ok();
    let d = Daemon::of(&w);
    let events = wait_until(Duration::from_secs(120), || {
        let ev = trace_of(&d, "alice", "");
        let m_in = ev.iter().find(|e| e["kind"] == "message_in" && e["payload"]["text"] == "before the daemon")?;
        let trace = m_in["trace_id"].as_str()?.to_string();
        let turn = turn(&ev, &trace);
        (kinds(&turn).len() >= 5).then_some(turn)
    })
    .unwrap_or_else(|| {
        panic!(
            "waited 120 s for the backstop to read back the turn \"before the daemon\" (5 kinds): {}",
            brief(&trace_of(&d, "alice", ""))
        )
    });
    let trace = events[0]["trace_id"].as_str().unwrap().to_string();
    let k = kinds(&events);
    for want in ["message_in", "llm_call", "tool_call", "tool_result", "message_out"] {
        assert!(k.contains(want), "{want} missing from {k:?}");
    }
    let call = events.iter().find(|e| e["kind"] == "tool_call").unwrap();
    let id = call["payload"]["tool_call_id"].as_str().unwrap();
    assert_eq!(call["id"].as_str(), Some(format!("oc:{trace}:tool_call:{id}").as_str()), "the plugin's id");
    let llm = events.iter().find(|e| e["kind"] == "llm_call").unwrap();
    assert!(llm["tokens_in"].as_i64().unwrap_or(0) > 0, "{llm}");

    // A turn now: the plugin and the backstop both see it; the store keeps one copy of each event.
    let (s, reply) = d.post("alice", r#"{"text":"after the daemon"}"#, Some(120));
    assert_eq!(s, 200, "{reply}");
    let msg = reply["reply_to"].as_str().unwrap().to_string();
    let want = [("message_in", 1), ("tool_call", 1), ("tool_result", 1), ("message_out", 1)];
    // The turn arrives: every kind at least as often as it should be, and the plugin's last event of
    // the run (lifecycle end: it spools that after all the others, and ships in order).
    let end = format!("oc:{msg}:lifecycle:end");
    let arrived = wait_until(Duration::from_secs(120), || {
        let now = turn(&trace_of(&d, "alice", ""), &msg);
        let all = want.iter().all(|(kind, n)| now.iter().filter(|e| e["kind"] == *kind).count() >= *n)
            && count(&now, "llm_call", "openclaw") >= 2;
        (all && now.iter().any(|e| e["id"] == end.as_str())).then_some(now)
    })
    .unwrap_or_else(|| {
        panic!("waited 120 s for turn {msg} with {end}: {}", brief(&turn(&trace_of(&d, "alice", ""), &msg)))
    });
    // Both sources have had their say: the plugin has nothing left to (re)send, and the backstop has
    // read the turn's session to its end (it stores what it read before it moves its cursor).
    let session = arrived.iter().find(|e| e["id"] == end.as_str()).unwrap()["thread_id"].as_str().unwrap().to_string();
    let gateway = main_gateway(&w);
    wait_for(
        Duration::from_secs(120),
        &format!("the plugin's spool acknowledged and the backstop's cursor at the end of {session}"),
        || (plugin_spool_acknowledged(&w) && backstop_read_to_the_end(&w, &gateway, "alice", &session)).then_some(()),
    );
    let now = turn(&trace_of(&d, "alice", ""), &msg);
    // Both sources name the same things alike, so each is kept once (a different id would show twice).
    for (kind, n) in want {
        assert_eq!(now.iter().filter(|e| e["kind"] == kind).count(), n, "{kind}: {}", brief(&now));
    }
    assert_eq!(count(&now, "llm_call", "openclaw"), 2, "{}", brief(&now));
}

/// Real turns while the daemon is SIGKILLed three times: every run's plugin-only events
/// (lifecycle start and end) and its tool call arrive, each stored exactly once.
fn the_plugins_events_survive_daemon_kills_during_turns(w: &World) {
    let d = Daemon::of(w);
    let gw_port: u16 = {
        let kdl = w.read("fleet.kdl");
        let at =
            kdl.find("gateway \"main\" host=\"local\" port=").unwrap() + "gateway \"main\" host=\"local\" port=".len();
        kdl[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    let token_file = w.data_dir(FLEET).join("gateways/main/token");
    // Turns straight to the gateway (not through the daemon, which is being killed).
    let turns = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let gref = fleet::openclaw::client::GatewayRef {
                name: "main".into(),
                url: format!("ws://127.0.0.1:{gw_port}"),
                token_file,
            };
            let c = gref.connect().await.unwrap();
            let mut runs = Vec::new();
            for i in 0..8 {
                let key = format!("killrun-{i}");
                c.chat_keyed("alice", &format!("turn {i}"), &key, Duration::from_secs(120)).await.unwrap();
                runs.push(key);
            }
            runs
        })
    });
    for delay in [1500u64, 2500, 3500] {
        std::thread::sleep(Duration::from_millis(delay));
        // SAFETY: kill(2) on the daemon this test's apply started.
        unsafe { libc::kill(crate::support::serve_pid(&w.data_dir(FLEET)), libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(500));
        w.fleet(&["apply"]).ok();
    }
    let runs = turns.join().unwrap();
    let want: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            [
                format!("oc:{r}:lifecycle:start"),
                format!("oc:{r}:lifecycle:end"),
                format!("oc:{r}:in"),
                format!("oc:{r}:out"),
            ]
        })
        .collect();
    let got = wait_until(Duration::from_secs(120), || {
        let ids: BTreeSet<String> =
            trace_of(&d, "alice", "").iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
        want.iter().all(|w| ids.contains(w)).then_some(ids)
    });
    let ids = got.unwrap_or_else(|| {
        let ids: BTreeSet<String> =
            trace_of(&d, "alice", "").iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
        panic!(
            "waited 120 s for every run's lifecycle start/end, in and out; missing: {:?}",
            want.iter().filter(|w| !ids.contains(*w)).collect::<Vec<_>>()
        )
    });
    for r in &runs {
        assert!(ids.iter().any(|i| i.starts_with(&format!("oc:{r}:tool_call:"))), "{r}: no tool call");
    }
    // Exactly once, once both senders are done: the plugin has nothing left to resend and the
    // backstop has read alice's session to its end. Copies in the store's files themselves (every
    // database, fallback and late file of every trace directory).
    let gateway = main_gateway(w);
    wait_for(
        Duration::from_secs(120),
        "the plugin's spool acknowledged and the backstop's cursor at the end of agent:alice:main",
        || {
            (plugin_spool_acknowledged(w) && backstop_read_to_the_end(w, &gateway, "alice", "agent:alice:main"))
                .then_some(())
        },
    );
    let copies = stored_copies(w, |id| id.starts_with("oc:killrun-"));
    assert!(want.iter().all(|id| copies.contains_key(id)), "{copies:?}");
    assert!(copies.values().all(|n| *n == 1), "{:?}", copies.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>());
    eprintln!("{} events of {} runs across 3 daemon kills, each stored once", copies.len(), runs.len());
}
