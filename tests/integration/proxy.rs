//! The real LiteLLM proxy, owned by fleet: started, enforcing per-agent keys,
//! restarted only when its config changes, adopted, and refused a taken port.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{env_key, wait_for, World};

pub struct Proxy {
    pub url: String,
}

impl Proxy {
    pub fn of(w: &World) -> Self {
        let text = w.read("fleet.kdl");
        let port: u16 =
            text.split("port=").nth(1).unwrap().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
        Proxy { url: format!("http://127.0.0.1:{port}") }
    }

    /// POST /v1/chat/completions as `key`; returns (status, body).
    pub fn chat(&self, key: &str, model: &str) -> (u16, Value) {
        self.chat_with(key, model, &[])
    }

    /// `chat` with request headers of the caller's.
    pub fn chat_with(&self, key: &str, model: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut req = reqwest::Client::new().post(format!("{}/v1/chat/completions", self.url));
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let r = req
                .bearer_auth(key)
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .expect("proxy reachable");
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        })
    }

    pub fn get(&self, key: &str, path: &str) -> u16 {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            reqwest::Client::new()
                .get(format!("{}{path}", self.url))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    }
}

/// Whether a process runs (a zombie awaiting its reaper does not).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
        .unwrap_or(false)
}

pub fn answer(body: &Value) -> &str {
    body["choices"][0]["message"]["content"].as_str().unwrap_or_default()
}

fn master(w: &World) -> String {
    std::fs::read_to_string(w.data_dir("quickstart").join("litellm/master.key")).unwrap().trim().to_string()
}

pub fn key_of(w: &World, agent: &str) -> String {
    env_key(&w.data_dir("quickstart").join(format!("agents/{agent}/env")))
}

/// The quickstart plus a model no agent may use.
fn world() -> World {
    let w = World::keys_only();
    w.edit(
        "fleet.kdl",
        "model \"demo-large\" response=",
        "model \"demo-xl\" response=\"XL.\"\n    model \"demo-large\" response=",
    );
    w
}

#[test]
fn the_proxy_enforces_each_agents_key() {
    let w = world();
    let r = w.fleet(&["apply"]).ok();
    assert!(r.stdout.contains("+ litellm.proxy: created"), "{}", r.stdout);
    let p = Proxy::of(&w);
    let alice = key_of(&w, "alice");

    let (code, body) = p.chat(&alice, "demo-small");
    assert_eq!((code, answer(&body)), (200, "Hello from the demo model."), "{body}");
    assert_eq!(p.chat(&alice, "demo-large").0, 200, "fallback models are in scope");
    let (code, body) = p.chat(&alice, "demo-xl");
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["error"]["type"], "key_model_access_denied");
    let made_up = format!("sk-fleet-{}", "0".repeat(64));
    assert_eq!(p.chat(&made_up, "demo-small").0, 401);
    let m = master(&w);
    assert_eq!(p.chat(&m, "demo-xl").0, 200, "the master key may use every model");
    assert_eq!(p.get(&m, "/model/info"), 200, "and admin routes");
    assert_eq!(p.get(&alice, "/model/info"), 200);

    // Revoked by removing alice from the file: refused on the next request, no restart.
    let pid = w.proxy_pid("quickstart");
    let text = w.read("fleet.kdl");
    let (a, b) = (text.find("agent \"alice\"").unwrap(), text.find("agent \"bob\"").unwrap());
    w.write("fleet.kdl", &format!("{}{}", &text[..a], &text[b..]));
    w.fleet(&["apply"]).ok();
    assert_eq!(p.chat(&alice, "demo-small").0, 401);
    assert_eq!(w.proxy_pid("quickstart"), pid);
    assert_eq!(p.chat(&key_of(&w, "bob"), "demo-small").0, 200);
}

#[test]
fn a_new_key_works_at_once_without_a_restart_and_config_changes_restart() {
    let w = world();
    w.fleet(&["apply"]).ok();
    let p = Proxy::of(&w);
    let pid = w.proxy_pid("quickstart");

    w.edit("fleet.kdl", "agent \"bob\"", "agent \"carol\" model=\"demo-xl\"\nagent \"bob\"");
    let r = w.fleet(&["apply"]).ok();
    assert!(r.stdout.contains("+ key.carol: created"), "{}", r.stdout);
    assert!(!r.stdout.contains("litellm.proxy"), "the proxy is not touched: {}", r.stdout);
    let (code, body) = p.chat(&key_of(&w, "carol"), "demo-xl");
    assert_eq!((code, answer(&body)), (200, "XL."), "{body}");
    assert_eq!(w.proxy_pid("quickstart"), pid);

    // A provider's models change the rendered config: restart, and the new model is served.
    w.edit(
        "fleet.kdl",
        "model \"demo-xl\" response=\"XL.\"",
        "model \"demo-xl\" response=\"XL.\"\n    model \"demo-new\" response=\"New.\"",
    );
    let r = w.fleet(&["apply"]).ok();
    assert!(r.stdout.contains("~ litellm.proxy: updated"), "{}", r.stdout);
    let new_pid = w.proxy_pid("quickstart");
    assert_ne!(new_pid, pid);
    assert_eq!(answer(&p.chat(&master(&w), "demo-new").1), "New.");

    // Nothing changed: nothing restarts.
    let r = w.fleet(&["apply"]).ok();
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);
    assert_eq!(w.proxy_pid("quickstart"), new_pid);
}

#[test]
fn a_killed_proxy_is_restarted_and_a_taken_port_is_refused() {
    let w = world();
    w.fleet(&["apply"]).ok();
    let pid = w.proxy_pid("quickstart");
    // SAFETY: killing the proxy this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for(Duration::from_secs(60), &format!("the killed proxy (pid {pid}) to be gone"), || {
        (!running(pid)).then_some(())
    });
    let plan = w.fleet(&["plan"]).ok();
    assert!(
        plan.stdout.contains(&format!("~ litellm.proxy  (the proxy (pid {pid}) is not running)")),
        "{}",
        plan.stdout
    );
    w.fleet(&["apply"]).ok();
    assert_ne!(w.proxy_pid("quickstart"), pid);
    let p = Proxy::of(&w);
    assert_eq!(p.chat(&key_of(&w, "alice"), "demo-small").0, 200);

    // A second fleet pointed at the same port fails clearly, naming who holds it.
    let other = World::keys_only();
    other.edit("fleet.kdl", "fleet \"quickstart\"", "fleet \"second\"");
    let text = other.read("fleet.kdl");
    let own = text.split("port=").nth(1).unwrap().split(' ').next().unwrap().to_string();
    other.edit("fleet.kdl", &format!("port={own}"), &format!("port={}", p.url.rsplit(':').next().unwrap()));
    let r = other.fleet(&["apply"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let holder = w.proxy_pid("quickstart");
    assert!(r.stdout.contains("✗ litellm.proxy: create failed: port"), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("is already in use by pid {holder} (")), "{}", r.stdout);
    assert!(r.stdout.contains("+ key.alice: created"), "independent work went on: {}", r.stdout);
}

#[test]
fn a_proxy_that_never_gets_ready_fails_with_its_log() {
    let w = World::keys_only();
    // An executable that writes to its log and exits: what a broken install looks like.
    let fake = w.write("bin/litellm", "#!/bin/sh\necho 'litellm: cannot import name Router' >&2\nexit 3\n");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    w.edit("fleet.kdl", "keys \"file\"", "keys \"file\"\n    path \"bin/litellm\"");
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("✗ litellm.proxy: create failed: the proxy exited during start"), "{}", r.stdout);
    assert!(r.stdout.contains("cannot import name Router"), "the log tail is shown: {}", r.stdout);
}

#[test]
fn destroy_stops_the_proxy_and_revokes_everything() {
    let w = world();
    w.fleet(&["apply"]).ok();
    let pid = w.proxy_pid("quickstart");
    let plan = w.fleet(&["destroy", "--dry-run"]).ok();
    assert!(plan.stdout.contains("- litellm.proxy") && plan.stdout.contains("- key.alice"), "{}", plan.stdout);
    let r = w.fleet(&["destroy"]).ok();
    assert!(r.stdout.contains("Destroy complete: 6 done"), "{}", r.stdout);
    assert!(!running(pid), "proxy stopped");
    let data = w.data_dir("quickstart");
    assert!(!data.join("agents/alice/env").exists() && !data.join("litellm/config.yaml").exists());
    assert!(!std::fs::read_to_string(data.join("litellm/keys.json")).unwrap().contains("fleet-"));
}

type Events = std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>;

/// A trace sink: records each event POSTed (`{"events": [...]}`) with its Authorization header.
fn sink(rt: &tokio::runtime::Runtime) -> (u16, Events, tokio::sync::oneshot::Sender<()>) {
    sink_on(rt, 0, Default::default())
}

fn sink_on(rt: &tokio::runtime::Runtime, port: u16, events: Events) -> (u16, Events, tokio::sync::oneshot::Sender<()>) {
    use axum::{extract::State, http::HeaderMap, routing::post, Json, Router};
    let app = Router::new()
        .route(
            "/v1/events",
            post(|State(ev): State<Events>, h: HeaderMap, Json(v): Json<Value>| async move {
                let auth = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                for e in v["events"].as_array().cloned().unwrap_or_default() {
                    ev.lock().unwrap().push((auth.clone(), e));
                }
                "ok"
            }),
        )
        .with_state(events.clone());
    let listener = rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", port))).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    rt.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                rx.await.ok();
            })
            .await
            .unwrap();
    });
    (port, events, tx)
}

/// Waits (at most 60 s: the proxy's callback retries with backoff) until the sink's events pass
/// `done`; fails saying what it waited for and what the sink got.
#[track_caller]
fn wait_for_events(events: &Events, what: &str, done: impl Fn(&[(String, Value)]) -> bool) -> Vec<(String, Value)> {
    let got = crate::support::wait_until(Duration::from_secs(60), || {
        let ev = events.lock().unwrap().clone();
        done(&ev).then_some(ev)
    });
    got.unwrap_or_else(|| {
        let ev = events.lock().unwrap().clone();
        let brief: Vec<String> =
            ev.iter().map(|(_, e)| format!("{} {} {}", e["agent_name"], e["model"], e["id"])).collect();
        panic!("waited 60 s for {what}; the sink got {} events: {brief:?}", ev.len())
    })
}

/// The events of `agent`'s calls to `model`.
fn calls_of<'a>(ev: &'a [(String, Value)], agent: &str, model: &str) -> Vec<&'a Value> {
    ev.iter().map(|(_, e)| e).filter(|e| e["agent_name"] == agent && e["model"] == model).collect()
}

#[test]
fn every_call_is_reported_as_an_llm_call_event_and_a_dead_sink_costs_nothing_and_loses_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (port, events, stop) = sink(&rt);
    let w = world();
    w.edit(
        "fleet.kdl",
        "keys \"file\"",
        &format!("keys \"file\"\n    callback-url \"http://127.0.0.1:{port}/v1/events\""),
    );
    let r = w.fleet(&["apply"]).ok();
    assert!(r.stdout.contains("+ litellm.callback-token: created"), "{}", r.stdout);
    let token = std::fs::read_to_string(w.data_dir("quickstart").join("litellm/callback.token")).unwrap();
    let p = Proxy::of(&w);
    let (alice, bob) = (key_of(&w, "alice"), key_of(&w, "bob"));

    assert_eq!(p.chat(&alice, "demo-small").0, 200);
    assert_eq!(p.chat(&bob, "demo-small").0, 200);
    assert_eq!(p.chat(&alice, "demo-xl").0, 403);
    let agents = |ev: &[(String, Value)]| -> Vec<(String, String, bool)> {
        ev.iter()
            .map(|(_, e)| {
                (
                    e["agent_name"].as_str().unwrap_or("?").to_string(),
                    e["model"].as_str().unwrap_or("?").to_string(),
                    e["error"].is_null(),
                )
            })
            .collect()
    };
    wait_for_events(&events, "an event of each of the 3 calls", |ev| ev.len() >= 3);
    // One call more, after them (alice's to demo-large, her fallback: the marker): the callback
    // sends its spool oldest first, so once the marker is in, whatever the first three calls
    // produced is in too.
    assert_eq!(p.chat(&alice, "demo-large").0, 200);
    let ev = wait_for_events(&events, "the event of the call after the first three", |ev| {
        !calls_of(ev, "alice", "demo-large").is_empty()
    });
    let mut got = agents(&ev);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("alice".to_string(), "demo-large".to_string(), true),
            ("alice".to_string(), "demo-small".to_string(), true),
            ("alice".to_string(), "demo-xl".to_string(), false),
            ("bob".to_string(), "demo-small".to_string(), true),
        ],
        "one event per call, with the right agent"
    );
    for (auth, e) in &ev {
        assert_eq!(auth, &format!("Bearer {}", token.trim()));
        assert_eq!(
            (e["v"].as_u64(), e["kind"].as_str(), e["backend_name"].as_str()),
            (Some(1), Some("llm_call"), Some("litellm"))
        );
        let text = e.to_string();
        assert!(!text.contains(&alice[9..]) && !text.contains(&bob[9..]), "no raw key in {text}");
    }
    let ok = ev.iter().find(|(_, e)| e["error"].is_null()).unwrap();
    assert!(ok.1["tokens_in"].as_u64().is_some() && ok.1["duration_ms"].as_u64().is_some(), "{}", ok.1);

    // The sink goes away: calls still succeed, and their events wait in the spool.
    stop.send(()).unwrap();
    wait_for(Duration::from_secs(60), "the sink to stop listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err().then_some(())
    });
    for _ in 0..3 {
        let (code, body) = p.chat(&alice, "demo-small");
        assert_eq!((code, answer(&body)), (200, "Hello from the demo model."));
    }
    let data = w.data_dir("quickstart").join("litellm");
    // What the callback has spooled past the offset the sink acknowledged: alice's calls to demo-small.
    let kept = || -> usize {
        crate::trace::callback_unacknowledged(&w)
            .into_iter()
            .filter(|e| e["agent_name"] == "alice" && e["model"] == "demo-small")
            .count()
    };
    wait_for(
        Duration::from_secs(60),
        &format!("the 3 calls' events kept, undelivered, in {}", data.join("callback-spool.jsonl").display()),
        || (kept() >= 3).then_some(()),
    );
    // It comes back on the same address: every kept event arrives, once, oldest first.
    let (_, events, _stop) = sink_on(&rt, port, events);
    wait_for_events(&events, "the 3 events kept during the outage", |ev| {
        calls_of(ev, "alice", "demo-small").len() >= 4
    });
    // The marker again, after them: once it is in, nothing kept before it is still on its way.
    assert_eq!(p.chat(&alice, "demo-large").0, 200);
    let ev = wait_for_events(&events, "the event of the call after the outage", |ev| {
        calls_of(ev, "alice", "demo-large").len() >= 2
    });
    let mut ids: Vec<&str> = ev.iter().map(|(_, e)| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        (ev.len(), calls_of(&ev, "alice", "demo-small").len()),
        (8, 4),
        "four calls before, three during and one after the outage: {:?}",
        agents(&ev)
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8, "no event twice");
    drop(rt);
}

#[test]
fn no_key_leaks_into_the_config_the_log_or_the_output() {
    let w = world();
    let secret = "sk-or-v1-PROVIDER-SECRET-FOR-THE-PROXY-TEST-42";
    w.edit(
        "fleet.kdl",
        "provider \"demo\" type=\"mock\" {",
        "provider \"or\" type=\"openrouter\" api-key=\"env:OPENROUTER_API_KEY\" { models \"openai/gpt-4o-mini\" }\nprovider \"demo\" type=\"mock\" {",
    );
    let run = |args: &[&str]| {
        let o = w.cmd(args).env("OPENROUTER_API_KEY", secret).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    let mut out = run(&["apply"]);
    let p = Proxy::of(&w);
    let alice = key_of(&w, "alice");
    assert_eq!(p.chat(&alice, "demo-small").0, 200);
    assert_eq!(p.chat(&alice, "demo-xl").0, 403);
    assert_eq!(p.chat(&format!("sk-fleet-{}", "1".repeat(64)), "demo-small").0, 401);
    out.push_str(&run(&["plan"]));
    out.push_str(&run(&["state"]));
    let data = w.data_dir("quickstart");
    let config = std::fs::read_to_string(data.join("litellm/config.yaml")).unwrap();
    let log = std::fs::read_to_string(data.join("litellm/proxy.log")).unwrap();
    let master = master(&w);
    for (name, text) in [("config", &config), ("log", &log), ("output", &out)] {
        assert!(!text.contains(secret), "provider key in the {name}");
        assert!(!text.contains(&alice[9..]), "alice's key in the {name}");
        assert!(!text.contains(&master[14..]), "the master key in the {name}");
    }
    // The secret did reach the proxy, through its environment.
    let pid = w.proxy_pid("quickstart");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(String::from_utf8_lossy(&environ).contains(&format!("OPENROUTER_API_KEY={secret}")));
}
