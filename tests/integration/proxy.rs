//! The real LiteLLM proxy, owned by fleet: started, enforcing per-agent keys,
//! restarted only when its config changes, adopted, and refused a taken port.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{env_key, World};

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
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{}/v1/chat/completions", self.url))
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

fn key_of(w: &World, agent: &str) -> String {
    env_key(&w.data_dir("quickstart").join(format!("agents/{agent}/env")))
}

/// The quickstart plus a model no agent may use.
fn world() -> World {
    let w = World::quickstart();
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
    std::thread::sleep(Duration::from_millis(300));
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
    let other = World::new();
    other.example("quickstart");
    other.edit("fleet.kdl", "fleet \"quickstart\"", "fleet \"second\"");
    other.edit("fleet.kdl", "port=4000", &format!("port={}", p.url.rsplit(':').next().unwrap()));
    let r = other.fleet(&["apply"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let holder = w.proxy_pid("quickstart");
    assert!(r.stdout.contains("✗ litellm.proxy: create failed: port"), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("is already in use by pid {holder} (")), "{}", r.stdout);
    assert!(r.stdout.contains("+ key.alice: created"), "independent work went on: {}", r.stdout);
}

#[test]
fn a_proxy_that_never_gets_ready_fails_with_its_log() {
    let w = World::quickstart();
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
    assert!(r.stdout.contains("Apply complete: 6 done"), "{}", r.stdout);
    assert!(!running(pid), "proxy stopped");
    let data = w.data_dir("quickstart");
    assert!(!data.join("agents/alice/env").exists() && !data.join("litellm/config.yaml").exists());
    assert!(!std::fs::read_to_string(data.join("litellm/keys.json")).unwrap().contains("fleet-"));
}
