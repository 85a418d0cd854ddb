//! `fleet serve` for real: the quickstart applied (LiteLLM mock model, a real OpenClaw gateway),
//! the daemon started by apply, spoken to over HTTP as a script or a browser would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::World;

const FLEET: &str = "quickstart";

pub struct Daemon {
    pub port: u16,
    pub admin: String,
}

impl Daemon {
    pub fn of(w: &World) -> Daemon {
        let kdl = w.read("fleet.kdl");
        let at = kdl.find("listen \"127.0.0.1:").unwrap() + "listen \"127.0.0.1:".len();
        let port: u16 = kdl[at..].split('"').next().unwrap().parse().unwrap();
        let admin = std::fs::read_to_string(w.data_dir(FLEET).join("serve/token")).unwrap().trim().to_string();
        Daemon { port, admin }
    }

    /// One HTTP/1.1 request, raw: (status, body as JSON or a string).
    fn raw(&self, request: &[u8]) -> (u16, Value) {
        let (status, _, body) = self.raw_with_head(request);
        (status, body)
    }

    /// `raw`, with the response's head (status line and headers) too.
    fn raw_with_head(&self, request: &[u8]) -> (u16, String, Value) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status: u16 = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (status, head.to_string(), serde_json::from_str(body).unwrap_or(Value::String(body.to_string())))
    }

    /// `POST /login` with `body` as the status page sends it (`origin`: its Origin header); the
    /// status, the body and the session cookie set, if any.
    pub fn sign_in(&self, body: &str, origin: &str) -> (u16, Value, Option<String>) {
        let (status, head, v) = self.raw_with_head(
            format!(
                "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nConnection: close\r\nOrigin: {origin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len(),
                p = self.port
            )
            .as_bytes(),
        );
        let cookie = head
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: fleet_session="))
            .map(|c| c.split(';').next().unwrap_or_default().to_string())
            .filter(|c| !c.is_empty());
        (status, v, cookie)
    }

    /// A request authenticated by the session cookie, from the status page itself.
    pub fn with_cookie(&self, method: &str, path: &str, cookie: &str, body: Option<&str>) -> (u16, Value) {
        let b = body.unwrap_or("");
        self.raw(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nConnection: close\r\nCookie: fleet_session={cookie}\r\nSec-Fetch-Site: same-origin\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len(),
                p = self.port
            )
            .as_bytes(),
        )
    }

    pub fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()));
        } else {
            req.push_str("\r\n");
        }
        self.raw(req.as_bytes())
    }

    pub fn post(&self, agent: &str, body: &str, wait: Option<u64>) -> (u16, Value) {
        let q = wait.map(|w| format!("?wait={w}")).unwrap_or_default();
        self.request("POST", &format!("/v1/agents/{agent}/messages{q}"), Some(&self.admin), Some(body))
    }

    fn thread(&self, agent: &str, thread: &str) -> Vec<Value> {
        let (s, v) = self.request(
            "GET",
            &format!("/v1/agents/{agent}/messages?thread={thread}&limit=1000"),
            Some(&self.admin),
            None,
        );
        assert_eq!(s, 200, "{v}");
        v["messages"].as_array().unwrap().clone()
    }

    /// Opens an event stream (with `Last-Event-ID` when given) and collects `want` events, at most
    /// `within`. Calls `then` once the stream is open.
    fn events(&self, last: Option<i64>, want: usize, within: Duration, then: impl FnOnce()) -> Vec<(i64, Value)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut req = format!(
            "GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n",
            self.admin
        );
        if let Some(l) = last {
            req.push_str(&format!("Last-Event-ID: {l}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        // The status line and headers.
        loop {
            line.clear();
            if r.read_line(&mut line).is_ok() && line == "\r\n" {
                break;
            }
        }
        then();
        let t0 = Instant::now();
        let (mut out, mut id) = (Vec::new(), None);
        while out.len() < want && t0.elapsed() < within {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => continue,
            }
            // Chunked transfer: size lines interleave; keep only the SSE fields.
            if let Some(v) = line.trim_end().strip_prefix("id:") {
                id = v.trim().parse::<i64>().ok();
            } else if let Some(d) = line.trim_end().strip_prefix("data:") {
                out.push((id.unwrap_or(-1), serde_json::from_str(d.trim()).unwrap_or(Value::Null)));
            }
        }
        out
    }
}

fn rows(w: &World) -> i64 {
    let db = rusqlite::Connection::open(w.data_dir(FLEET).join("serve/conversations.db")).unwrap();
    db.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)).unwrap()
}

pub fn agent_token(w: &World, agent: &str) -> String {
    let env = std::fs::read_to_string(w.data_dir(FLEET).join(format!("agents/{agent}/env"))).unwrap();
    env.lines().find_map(|l| l.strip_prefix("FLEET_TOKEN=")).unwrap().to_string()
}

/// One quickstart with its daemon, applied once, for every daemon check that would otherwise pay
/// its own cold start (proxy, gateway, two agents' first turns, daemon): the phases run in this
/// order, each on what the one before left converged, and each says its name and time.
#[test]
fn the_daemon_routes_chat_refuses_bad_requests_serves_its_page_traces_survives_kills_and_reports_a_dead_gateway() {
    let w = World::quickstart();
    w.fleet(&["apply"]).ok();
    crate::support::phase("routes chat, keeps threads, streams events", || {
        the_daemon_routes_chat_keeps_threads_and_streams_events(&w)
    });
    crate::support::phase("bad requests get their status and store nothing", || {
        bad_requests_get_their_status_and_store_nothing(&w)
    });
    crate::support::phase("slow clients are cut off, event streams are capped", || {
        slow_clients_are_cut_off_and_event_streams_capped(&w)
    });
    crate::support::phase("the status page logs in, lists the agents and chats (headless Chromium)", || {
        crate::page::the_status_page_logs_in_lists_the_agents_and_chats(&w)
    });
    crate::support::phase("a routed turn is traced; ingest checks every batch", || {
        crate::trace::a_routed_turn_is_traced_and_ingest_checks_every_batch(&w)
    });
    crate::support::phase("a daemon killed while a reply is pending loses nothing", || {
        a_daemon_killed_while_a_reply_is_pending_loses_nothing(&w)
    });
    crate::support::phase("no acknowledged trace event is lost when the daemon dies", || {
        crate::trace::no_acknowledged_event_is_lost_when_the_daemon_dies(&w)
    });
    crate::support::phase("a dead gateway gives a system reply and shows offline", || {
        a_dead_gateway_gives_a_system_reply_and_shows_offline(&w)
    });
}

/// (status, code) of every row of docs/api.md's error table, up to the row naming `until`.
fn documented_errors(until: &str) -> Vec<(u16, String)> {
    let doc = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md")).unwrap();
    let mut out = Vec::new();
    for line in doc.lines().skip_while(|l| !l.starts_with("| 400 |")) {
        if line.contains(&format!("`{until}`")) || !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let status: u16 = cells[1].parse().unwrap();
        for code in cells[2].split('`').skip(1).step_by(2) {
            out.push((status, code.to_string()));
        }
    }
    out
}

fn roles(msgs: &[Value]) -> Vec<String> {
    msgs.iter().map(|m| m["role"].as_str().unwrap().to_string()).collect()
}

fn the_daemon_routes_chat_keeps_threads_and_streams_events(w: &World) {
    let d = Daemon::of(w);
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(w.data_dir(FLEET).join(p)).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode("serve/token"), 0o600);
    assert_eq!(mode("agents/alice/env"), 0o600);

    // Who may do what.
    let (s, v) = d.request("GET", "/v1/agents", None, None);
    assert_eq!((s, v["error"]["code"].as_str()), (401, Some("unauthorized")), "{v}");
    let alice = agent_token(w, "alice");
    let (s, v) = d.request("GET", "/v1/agents/bob/messages", Some(&alice), None);
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("forbidden")), "{v}");
    let (s, v) = d.request("GET", "/v1/agents", Some(&alice), None);
    assert_eq!(s, 200);
    let names: Vec<&str> = v["agents"].as_array().unwrap().iter().filter_map(|a| a["name"].as_str()).collect();
    assert_eq!(names, ["alice"], "an agent's token sees that agent only");
    let db = rusqlite::Connection::open(w.data_dir(FLEET).join("state.db")).unwrap();
    let stored: String =
        db.query_row("SELECT outputs FROM resources WHERE address = 'serve.token.alice'", [], |r| r.get(0)).unwrap();
    assert!(!stored.contains(&alice), "state holds the token's hash only");

    // A message, answered by the mock model through LiteLLM and OpenClaw.
    let (s, reply) = d.post("alice", r#"{"text":"hi there","from":"ops"}"#, Some(60));
    assert_eq!(s, 200, "{reply}");
    assert_eq!(reply["role"], "agent");
    assert_eq!(reply["text"], "Hello from the demo model.");
    let main = d.thread("alice", "main");
    assert_eq!(roles(&main), ["user", "agent"]);
    assert_eq!(main[0]["from"], "ops");
    assert_eq!(main[1]["reply_to"], main[0]["id"]);
    // An agent writes to its own conversation with its own token.
    let (s, v) =
        d.request("POST", "/v1/agents/alice/messages?wait=60", Some(&alice), Some(r#"{"text":"note to self"}"#));
    assert_eq!(s, 200, "{v}");

    // Threads: another session of the same agent; `fleet chat --thread` continues it.
    let (s, v) = d.post("bob", r#"{"text":"first","thread":"ops-1"}"#, Some(60));
    assert_eq!((s, v["role"].as_str()), (200, Some("agent")), "{v}");
    let r = w.fleet(&["chat", "bob", "second", "--thread", "ops-1"]).ok();
    assert_eq!(r.stdout.trim(), "Hello from the demo model.");
    assert_eq!(roles(&d.thread("bob", "ops-1")), ["user", "agent", "user", "agent"]);
    assert!(d.thread("bob", "main").iter().all(|m| m["thread"] == "main"));

    // Events: a client sees the message and its reply; reconnecting with Last-Event-ID it gets
    // exactly what it missed.
    let seen = d.events(None, 2, Duration::from_secs(90), || {
        let (s, v) = d.post("bob", r#"{"text":"streamed"}"#, None);
        assert_eq!(s, 202, "{v}");
        assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    });
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0].1["role"].as_str(), seen[0].1["text"].as_str()), (Some("user"), Some("streamed")));
    assert_eq!(seen[1].1["role"], "agent");
    assert!(seen[0].0 < seen[1].0);
    let again = d.events(Some(seen[0].0), 1, Duration::from_secs(10), || {});
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, seen[1].0, "only what was missed");

    // Status: both agents online.
    let r = w.fleet(&["status", "--json"]).ok();
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let st: Vec<(&str, &str)> = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["status"].as_str().unwrap()))
        .collect();
    assert_eq!(st, [("alice", "online"), ("bob", "online")], "{v}");
    assert_eq!(v["gateways"][0]["healthy"], true);

    // A converged fleet with its daemon stays converged.
    let r = w.fleet(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.all());
}

fn bad_requests_get_their_status_and_store_nothing(w: &World) {
    let d = Daemon::of(w);
    let before = rows(w);
    let huge = format!(r#"{{"text":"{}"}}"#, "x".repeat(1 << 20));
    let a = d.admin.clone();
    let alice = agent_token(w, "alice");
    let post = |path: &str, body: &str| d.request("POST", path, Some(&a), Some(body));
    let own = format!("http://127.0.0.1:{}", d.port);
    let (s, v, cookie) = d.sign_in(&json!({"token": a}).to_string(), &own);
    assert_eq!(s, 200, "{v}");
    let cookie = cookie.expect("a session cookie");
    let mut cases: Vec<(&str, (u16, Value), u16, &str)> = vec![
        ("bad JSON", post("/v1/agents/alice/messages", "{"), 400, "invalid_json"),
        ("not an object", post("/v1/agents/alice/messages", "[1]"), 400, "invalid_body"),
        ("no text", post("/v1/agents/alice/messages", "{}"), 400, "missing_field"),
        ("text a number", post("/v1/agents/alice/messages", r#"{"text":5}"#), 400, "invalid_field"),
        ("empty text", post("/v1/agents/alice/messages", r#"{"text":"   "}"#), 400, "empty_text"),
        ("unknown field", post("/v1/agents/alice/messages", r#"{"text":"x","admin":true}"#), 400, "unknown_field"),
        ("bad thread", post("/v1/agents/alice/messages", r#"{"text":"x","thread":"a b"}"#), 400, "invalid_thread"),
        ("thread traversal", post("/v1/agents/alice/messages", r#"{"text":"x","thread":"../../etc"}"#), 400, "invalid_thread"),
        ("thread a list", post("/v1/agents/alice/messages", r#"{"text":"x","thread":[]}"#), 400, "invalid_field"),
        ("header injection in from", post("/v1/agents/alice/messages", r#"{"text":"x","from":"a\r\nX-Evil: 1"}"#), 400, "invalid_field"),
        ("huge body", post("/v1/agents/alice/messages", &huge), 413, "body_too_large"),
        ("unknown agent", post("/v1/agents/carol/messages", r#"{"text":"x"}"#), 404, "unknown_agent"),
        ("agent traversal", post("/v1/agents/..%2F..%2Fetc/messages", r#"{"text":"x"}"#), 400, "invalid_agent"),
        ("agent upper case", post("/v1/agents/ALICE/messages", r#"{"text":"x"}"#), 400, "invalid_agent"),
        ("bad wait", post("/v1/agents/alice/messages?wait=forever", r#"{"text":"x"}"#), 400, "invalid_wait"),
        ("wait too long", post("/v1/agents/alice/messages?wait=100000", r#"{"text":"x"}"#), 400, "invalid_wait"),
        ("bad limit", d.request("GET", "/v1/agents/alice/messages?limit=0", Some(&a), None), 400, "invalid_limit"),
        ("unknown after", d.request("GET", "/v1/agents/alice/messages?after=msg_nope", Some(&a), None), 400, "unknown_message"),
        ("bad event id", d.raw(format!("GET /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {a}\r\nLast-Event-ID: abc\r\n\r\n").as_bytes()), 400, "invalid_event_id"),
        ("wrong token", d.request("POST", "/v1/agents/alice/messages", Some("fleet-admin-nope"), Some(r#"{"text":"x"}"#)), 401, "unauthorized"),
        ("another agent's token", d.request("POST", "/v1/agents/bob/messages", Some(&alice), Some(r#"{"text":"x"}"#)), 403, "forbidden"),
        ("no such endpoint", d.request("GET", "/v1/nothing", Some(&a), None), 404, "not_found"),
        // The session cookie from a page on another port of this machine (issue 24: it was accepted, 202).
        ("a cookie write from another origin", d.raw(format!("POST /v1/agents/alice/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nCookie: fleet_session={}\r\nOrigin: http://127.0.0.1:1\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n{{\"text\":\"x\"}}", cookie).as_bytes()), 403, "cross_site"),
        // A valid bearer token is what authenticates (no ambient credential): the cookie beside it and
        // the foreign origin do not matter — the body's own error comes back.
        ("a bearer write with a cookie from another origin", d.raw(format!("POST /v1/agents/alice/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {a}\r\nCookie: fleet_session={}\r\nOrigin: http://127.0.0.1:1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}", cookie).as_bytes()), 400, "missing_field"),
        // A bearer token that is not one, beside the cookie: the cookie authenticates, so it is checked.
        ("a wrong bearer beside the cookie from another origin", d.raw(format!("POST /v1/agents/alice/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer nope\r\nCookie: fleet_session={}\r\nOrigin: http://127.0.0.1:1\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{{\"text\":\"x\"}}", cookie).as_bytes()), 403, "cross_site"),
        ("a cookie write that is not JSON", d.raw(format!("POST /v1/agents/alice/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nCookie: fleet_session={}\r\nSec-Fetch-Site: same-origin\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n{{\"text\":\"x\"}}", cookie).as_bytes()), 403, "cross_site"),
    ];
    let (_, _, other_cookie) = d.sign_in(&json!({"token": a}).to_string(), &own);
    assert_ne!(other_cookie.as_deref(), Some(cookie.as_str()), "each sign-in opens its own random session");
    cases.extend([
        (
            "a sign-in from another origin",
            {
                let (s, v, c) = d.sign_in(&json!({"token": a}).to_string(), "http://127.0.0.1:1");
                assert!(c.is_none());
                (s, v)
            },
            403,
            "cross_site",
        ),
        (
            "a sign-in with a wrong token",
            {
                let (s, v, c) = d.sign_in(r#"{"token":"fleet-admin-nope"}"#, &own);
                assert!(c.is_none());
                (s, v)
            },
            401,
            "unauthorized",
        ),
        (
            "a sign-in with a made-up code",
            {
                let (s, v, c) = d.sign_in(r#"{"code":"abc"}"#, &own);
                assert!(c.is_none());
                (s, v)
            },
            401,
            "unauthorized",
        ),
        (
            "a sign-in with neither",
            {
                let (s, v, _) = d.sign_in("{}", &own);
                (s, v)
            },
            400,
            "missing_field",
        ),
        (
            "a login code for the session cookie",
            d.with_cookie("POST", "/v1/login-codes", &cookie, None),
            403,
            "forbidden",
        ),
        ("a login code for an agent", d.request("POST", "/v1/login-codes", Some(&alice), None), 403, "forbidden"),
        ("a proof of a short nonce", d.request("GET", "/v1/prove?nonce=abc", None, None), 400, "invalid_nonce"),
    ]);
    for (what, (status, body), want, code) in &cases {
        assert_eq!(*status, *want, "{what}: {body}");
        assert_eq!(body["error"]["code"].as_str(), Some(*code), "{what}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
    }
    // Every error docs/api.md documents for the messages and events API is produced above (the
    // trace API's own codes are checked in trace.rs), each with the status the table gives it.
    let documented = documented_errors("invalid_event");
    assert!(documented.len() >= 15, "the error table of docs/api.md was not read: {documented:?}");
    for (status, code) in &documented {
        let hit = cases.iter().any(|(_, (s, b), _, _)| s == status && b["error"]["code"].as_str() == Some(code));
        assert!(hit, "docs/api.md documents {status} {code}: no request above produced it");
    }
    assert_eq!(rows(w), before, "a refused request stores nothing");

    // The web session (issue 24): the session reads; the admin token in a URL signs no one in;
    // a one-time code signs in once; sign-out ends the session at the daemon.
    assert_eq!(d.with_cookie("GET", "/v1/status", &cookie, None).0, 200);
    let (s, head, _) =
        d.raw_with_head(format!("GET /?token={a} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
    assert_eq!(s, 400, "the old login link is refused");
    assert!(!head.to_ascii_lowercase().contains("set-cookie"), "{head}");
    let (s, v) = d.request("POST", "/v1/login-codes", Some(&a), None);
    assert_eq!(s, 200, "{v}");
    let code = v["code"].as_str().unwrap().to_string();
    assert_eq!(v["path"].as_str().unwrap(), format!("/login#code={code}"), "the code rides in the fragment");
    let (s, _, by_code) = d.sign_in(&json!({"code": code}).to_string(), &own);
    assert_eq!(s, 200);
    let by_code = by_code.expect("a session for the code");
    assert_eq!(d.sign_in(&json!({"code": code}).to_string(), &own).0, 401, "a code signs in once");
    assert_eq!(d.with_cookie("POST", "/logout", &by_code, Some("{}")).0, 200);
    assert_eq!(d.with_cookie("GET", "/v1/status", &by_code, None).0, 401, "signed out at the daemon");
    assert_eq!(d.with_cookie("GET", "/v1/status", &cookie, None).0, 200, "other sessions go on");
    let (s, v) = d.request("GET", "/healthz", None, None);
    assert_eq!((s, v["ok"].as_bool()), (200, Some(true)));
}

/// kill -9 of the daemon at several points between a POST and its reply: the next apply starts it
/// again, and every thread ends with the reply or a system message; nothing acknowledged is lost.
fn a_daemon_killed_while_a_reply_is_pending_loses_nothing(w: &World) {
    let d = Daemon::of(w);
    let serve_pid = || crate::support::serve_pid(&w.data_dir(FLEET)) as u32;
    let mut acknowledged = Vec::new();
    for (i, delay_ms) in [0u64, 50, 300, 1000, 2500].into_iter().enumerate() {
        let thread = format!("kill-{i}");
        let (s, v) = d.post("alice", &format!(r#"{{"text":"hello {i}","thread":"{thread}"}}"#), None);
        assert_eq!(s, 202, "{v}");
        acknowledged.push((thread, v["id"].as_str().unwrap().to_string()));
        std::thread::sleep(Duration::from_millis(delay_ms));
        let killed = serve_pid();
        // SAFETY: kill(2) on the daemon this test's apply started.
        unsafe { libc::kill(killed as i32, libc::SIGKILL) };
        let r = w.fleet(&["apply"]).ok();
        let started = serve_pid();
        assert_ne!(started, killed, "apply recorded a new daemon");
        assert!(
            r.stdout.contains(&format!("serve: started pid {started}")),
            "apply restarts the daemon (pid {started}): {}",
            r.stdout
        );
        assert!(std::path::Path::new(&format!("/proc/{started}")).exists(), "the new daemon runs");
    }
    // Every message acknowledged before a kill is there, and answered.
    let t0 = Instant::now();
    for (thread, id) in &acknowledged {
        let msgs = loop {
            let msgs = d.thread("alice", thread);
            if msgs.len() >= 2 || t0.elapsed() > Duration::from_secs(120) {
                break msgs;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        assert_eq!(msgs[0]["id"].as_str(), Some(id.as_str()), "{thread}: {msgs:?}");
        assert_eq!(msgs.len(), 2, "{thread}: one answer, no more: {msgs:?}");
        // The agent's own reply: the gateway ran the turn (or runs it when the new daemon
        // delivers the pending message again, under the same idempotency key) and the daemon
        // collects it; a `system` "reply lost" here would be a reply the daemon dropped.
        let answer = &msgs[1];
        assert_eq!(answer["reply_to"].as_str(), Some(id.as_str()));
        assert_eq!(
            (answer["role"].as_str(), answer["text"].as_str()),
            (Some("agent"), Some("Hello from the demo model.")),
            "{thread}: the pending reply was lost: {answer}"
        );
    }
}

/// A gateway killed under the daemon: its agents' messages get a system reply, the status says
/// offline; apply brings the gateway back and the next message is answered.
fn a_dead_gateway_gives_a_system_reply_and_shows_offline(w: &World) {
    let d = Daemon::of(w);
    let (s, v) = d.post("alice", r#"{"text":"before"}"#, Some(60));
    assert_eq!((s, v["role"].as_str()), (200, Some("agent")), "{v}");
    let handle: Value =
        serde_json::from_str(&std::fs::read_to_string(w.data_dir(FLEET).join("gateways/main/gateway.handle")).unwrap())
            .unwrap();
    let pid = handle["handle"]["pid"]["pid"].as_u64().unwrap() as i32;
    // SAFETY: kill(2) on the gateway's process group, started by this test's apply.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    crate::support::wait_gone(pid as u32, "the killed gateway");
    // Within the wait: 200 (a 202 would mean no answer came in 60 s).
    let (s, v) = d.post("alice", r#"{"text":"anyone there?"}"#, Some(60));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["role"], "system", "{v}");
    assert!(v["text"].as_str().unwrap().contains("unreachable"), "{v}");
    // The status follows within a few polls.
    let t0 = Instant::now();
    let offline = loop {
        let v: Value = serde_json::from_str(&w.fleet(&["status", "--json"]).ok().stdout).unwrap();
        let st = v["agents"][0]["status"].as_str().unwrap_or_default().to_string();
        if st == "offline" || t0.elapsed() > Duration::from_secs(30) {
            break (st, v);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(offline.0, "offline", "{}", offline.1);
    assert_eq!(offline.1["gateways"][0]["healthy"], false);
    w.fleet(&["apply"]).ok();
    let (s, v) = d.post("alice", r#"{"text":"back?"}"#, Some(60));
    assert_eq!((s, v["role"].as_str()), (200, Some("agent")), "{v}");
}

/// Issue 24: `fleet status` and `fleet chat` sent the admin token to whatever answered
/// `{"ok":true}` on the serve port (a fake server captured it). Now the CLI asks the process there
/// to prove it holds the token (`/v1/prove`) and, when it cannot, stops without sending it.
#[test]
fn the_cli_sends_the_admin_token_only_to_a_daemon_that_proves_it_holds_it() {
    let w = World::quickstart();
    let kdl = w.read("fleet.kdl");
    let at = kdl.find("listen \"127.0.0.1:").unwrap() + "listen \"127.0.0.1:".len();
    let port: u16 = kdl[at..].split('"').next().unwrap().parse().unwrap();
    // The token an earlier apply minted (the impostor does not know it).
    let token = "fleet-admin-0123456789abcdef0123456789abcdef";
    let serve = w.data_dir(FLEET).join("serve");
    std::fs::create_dir_all(&serve).unwrap();
    std::fs::write(serve.join("token"), token).unwrap();

    // The impostor: answers every request as the daemon's health check does, and keeps what it got.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let kept = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 8192];
            let n = c.read(&mut buf).unwrap_or(0);
            kept.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            let body = r#"{"ok":true,"pid":1,"proof":"00"}"#;
            let _ = c.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    .as_bytes(),
            );
        }
    });

    let status = w.fleet(&["status"]);
    assert_ne!(status.code, 0, "{}", status.all());
    assert!(status.stderr.contains("is not fleet quickstart's daemon"), "{}", status.stderr);
    let chat = w.fleet(&["chat", "alice", "hello"]);
    assert_ne!(chat.code, 0, "{}", chat.all());
    assert!(chat.stderr.contains("is not fleet quickstart's daemon"), "{}", chat.stderr);
    let got = seen.lock().unwrap().clone();
    assert!(got.contains("GET /v1/prove?nonce="), "the CLI asked for the proof: {got}");
    assert!(!got.contains(token), "the admin token never reached the impostor:\n{got}");
    assert!(!got.to_ascii_lowercase().contains("authorization"), "no credential at all:\n{got}");
}

/// Issue 24: a half-sent request stayed open indefinitely and event streams were uncapped. Now a
/// request's head must arrive within 10 s (an idle connection is closed too), its body within 30 s
/// (408 `body_timeout`), and one token holds at most 16 event streams (429 `too_many_streams`),
/// given back when the client goes away.
fn slow_clients_are_cut_off_and_event_streams_capped(w: &World) {
    let d = Daemon::of(w);
    let port = d.port;
    let admin = d.admin.clone();
    // Closed by the daemon: what the client reads until the connection ends (None: still open
    // after 60 s).
    let until_closed = move |send: String| {
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            s.write_all(send.as_bytes()).unwrap();
            let mut out = Vec::new();
            match s.read_to_end(&mut out) {
                Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(String::new()),
                Err(_) => None,
            }
        })
    };
    let idle = until_closed(String::new());
    let half_head = until_closed("GET /v1/status HTTP/1.1\r\nHost: x\r\n".into());
    let half_body = until_closed(format!(
        "POST /v1/agents/alice/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"te"
    ));

    // Streams: alice's token opens 16, the 17th is refused; they come back once the clients go.
    let alice = agent_token(w, "alice");
    let open_stream = || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(
            format!("GET /v1/agents/alice/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut head = String::new();
        let mut r = BufReader::new(s.try_clone().unwrap());
        r.read_line(&mut head).unwrap();
        (head, s, r)
    };
    let held: Vec<_> = (0..16).map(|_| open_stream()).collect();
    assert!(held.iter().all(|(h, _, _)| h.contains(" 200 ")), "{:?}", held.iter().map(|h| &h.0).collect::<Vec<_>>());
    let (head, _, mut r) = open_stream();
    assert!(head.contains(" 429 "), "the 17th stream of one token: {head}");
    let mut rest = String::new();
    let _ = r.read_to_string(&mut rest);
    assert!(rest.contains("too_many_streams"), "{rest}");
    let (s, _) = d.request("GET", "/v1/agents/alice/messages", Some(&alice), None);
    assert_eq!(s, 200, "the token itself still works");
    drop(held);
    let again = crate::support::wait_until(Duration::from_secs(40), || {
        let (head, ..) = open_stream();
        head.contains(" 200 ").then_some(())
    });
    assert!(again.is_some(), "the slots came back once their clients went away");

    let idle = idle.join().unwrap();
    assert!(idle.is_some(), "an idle connection is closed by the daemon");
    let half_head = half_head.join().unwrap();
    assert!(half_head.is_some(), "a half-sent head is closed by the daemon");
    let half_body = half_body.join().unwrap().expect("a half-sent body is answered and closed");
    assert!(half_body.contains(" 408 ") && half_body.contains("body_timeout"), "{half_body}");
}
