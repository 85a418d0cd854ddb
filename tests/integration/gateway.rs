//! OpenClaw gateways and agents, for real: the quickstart on the process runtime,
//! provisioned over the gateway's RPC, answering through LiteLLM's mock model.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{env_key, free_port, World};

/// The methods fleet called over the RPC during one command, from FLEET_RPC_TRACE.
struct Trace(PathBuf);

impl Trace {
    fn new(w: &World, name: &str) -> Self {
        Trace(w.root().join(format!("rpc-{name}.log")))
    }
    fn methods(&self) -> Vec<String> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect()
    }
    fn count(&self, method: &str) -> usize {
        self.methods().iter().filter(|m| *m == method).count()
    }
    fn mutating(&self) -> Vec<String> {
        const READ: [&str; 5] = ["health", "agents.list", "config.get", "agents.files.get", "agents.files.list"];
        self.methods().into_iter().filter(|m| !READ.contains(&m.as_str())).collect()
    }
}

fn apply_traced(w: &World, t: &Trace) -> crate::support::Run {
    let o = w.cmd(&["apply"]).env("FLEET_RPC_TRACE", &t.0).output().unwrap();
    let r = crate::support::Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    r.ok()
}

fn gateway_pid(w: &World, gw: &str) -> u32 {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(w.data_dir("quickstart").join(format!("gateways/{gw}/gateway.handle"))).unwrap(),
    )
    .unwrap();
    v["handle"]["pid"]["pid"].as_u64().unwrap() as u32
}

fn workspace(w: &World, agent: &str) -> PathBuf {
    w.data_dir("quickstart").join(format!("gateways/main/home/workspaces/{agent}"))
}

/// One RPC call straight to the quickstart's gateway, as an operator would make it in OpenClaw's own UI.
fn call_gateway(w: &World, method: &str, params: serde_json::Value) -> serde_json::Value {
    let gw = w.data_dir("quickstart").join("gateways/main");
    let token = std::fs::read_to_string(gw.join("token")).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gw.join("home/openclaw.json")).unwrap()).unwrap();
    let url = format!("ws://127.0.0.1:{}", config["gateway"]["port"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = fleet::openclaw::rpc::Client::connect(&url, token.trim()).await.unwrap();
        c.call(method, params, Duration::from_secs(120)).await.unwrap()
    })
}

/// `agents.delete` behind fleet's back.
fn delete_by_hand(w: &World, agent: &str) {
    call_gateway(w, "agents.delete", serde_json::json!({"agentId": agent, "deleteFiles": false}));
}

/// The gateway's own `agents.list`.
fn list_agents(w: &World) -> Vec<serde_json::Value> {
    call_gateway(w, "agents.list", serde_json::json!({}))["agents"].as_array().unwrap().clone()
}

/// The wakes OpenClaw holds in an agent's main session (`chat.history`): the idempotency keys of
/// its user messages that fleet sent once (`fleet-…`; chat turns carry random hex run ids).
fn wakes(w: &World, agent: &str) -> Vec<String> {
    let params = serde_json::json!({"sessionKey": format!("agent:{agent}:main"), "agentId": agent, "limit": 1000});
    call_gateway(w, "chat.history", params)["messages"]
        .as_array()
        .expect("chat.history has messages")
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["idempotencyKey"].as_str().filter(|k| k.starts_with("fleet-")).map(str::to_string))
        .collect()
}

fn chat(w: &World, agent: &str) -> String {
    w.fleet(&["chat", agent, "hi"]).ok().stdout.trim().to_string()
}

const CAROL: &str = "agent \"carol\" gateway=\"main\" model=\"demo-large\"\n\nagent \"bob\"";

#[test]
fn the_quickstart_converges_answers_and_stays_put() {
    let w = World::quickstart();
    let first = Trace::new(&w, "first");
    let r = apply_traced(&w, &first);
    for line in
        ["+ gateway.main: created", "+ agent.alice: created", "+ gateway.main.models: created", "+ wake.alice: created"]
    {
        assert!(r.stdout.contains(line), "{line} missing in\n{}", r.stdout);
    }
    // Both agents come into being through the one config.patch, not through agents.create.
    assert_eq!(first.count("config.patch"), 1, "one config.patch per gateway per run");
    assert_eq!(first.count("agents.create"), 0, "{:?}", first.methods());

    // A crash between sending a wake and recording it (simulated: the record dropped) does not wake
    // anyone twice: the re-run finds the message in the gateway's session and sends nothing. What
    // OpenClaw holds says so: alice's session has her one wake before and after, under the key
    // fleet recorded.
    let woken = wakes(&w, "alice");
    assert_eq!(woken.len(), 1, "the first apply woke alice once: {woken:?}");
    let db = rusqlite::Connection::open(w.data_dir("quickstart").join("state.db")).unwrap();
    assert_eq!(db.execute("DELETE FROM resources WHERE address = 'wake.alice'", []).unwrap(), 1);
    drop(db);
    let r = w.fleet(&["apply"]).ok();
    assert!(r.stdout.contains("+ wake.alice: created"), "{}", r.stdout);
    assert!(r.stdout.contains("wake.alice: already woken"), "{}", r.stdout);
    assert_eq!(wakes(&w, "alice"), woken, "alice was not woken a second time");
    let db = rusqlite::Connection::open(w.data_dir("quickstart").join("state.db")).unwrap();
    let outputs: String =
        db.query_row("SELECT outputs FROM resources WHERE address = 'wake.alice'", [], |r| r.get(0)).unwrap();
    let key = serde_json::from_str::<serde_json::Value>(&outputs).unwrap()["key"].as_str().unwrap().to_string();
    assert!(woken[0].starts_with(&key), "the wake recorded ({key}) is the one the session holds: {woken:?}");

    // The end-to-end proof: alice answers, through LiteLLM, with her own key.
    assert_eq!(chat(&w, "alice"), "Hello from the demo model.");
    let log = std::fs::read_to_string(w.data_dir("quickstart").join("litellm/proxy.log")).unwrap();
    assert!(log.contains("fleet_auth: accepted key fleet-alice for /v1/chat/completions"), "alice's key was not used");
    let alice_key = env_key(&w.data_dir("quickstart").join("agents/alice/env"));
    assert!(!log.contains(&alice_key[9..]), "the raw key never reaches the log");

    // The gateway's own config carries what the file says of alice: heartbeat with its prompt, and
    // her identity, which OpenClaw then reports (its UIs and channels call her Alice, not "alice").
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(w.data_dir("quickstart").join("gateways/main/home/openclaw.json")).unwrap(),
    )
    .unwrap();
    let alice = &config["agents"]["entries"]["alice"];
    assert_eq!(alice["heartbeat"]["every"], "30m", "{alice:#}");
    assert_eq!(alice["heartbeat"]["prompt"], "Check your notes; reply HEARTBEAT_OK if nothing needs you.", "{alice:#}");
    assert_eq!(alice["identity"]["name"], "Alice", "{alice:#}");
    assert_eq!(alice["identity"]["emoji"], "🔬", "{alice:#}");
    let listed = list_agents(&w);
    let alice = listed.iter().find(|a| a["id"] == "alice").unwrap();
    assert_eq!(alice["identity"]["name"], "Alice", "agents.list: {alice:#}");
    assert_eq!(alice["identity"]["emoji"], "🔬", "agents.list: {alice:#}");

    // Second apply: no mutating RPC at all, gateway untouched.
    let pid = gateway_pid(&w, "main");
    let second = Trace::new(&w, "second");
    let r = apply_traced(&w, &second);
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);
    assert_eq!(second.mutating(), Vec::<String>::new(), "all calls: {:?}", second.methods());
    assert_eq!(gateway_pid(&w, "main"), pid);

    // A new SOUL: exactly one files.set. USER.md edited by hand: kept.
    std::fs::write(workspace(&w, "alice").join("USER.md"), "# USER.md\nMy human likes tea.\n").unwrap();
    w.write("souls/alice.md", "# Alice\n\nYou are Alice, now terser than ever.\n");
    let soul = Trace::new(&w, "soul");
    let r = apply_traced(&w, &soul);
    assert!(r.stdout.contains("~ agent.alice"), "{}", r.stdout);
    assert_eq!(soul.mutating(), vec!["agents.files.set"], "all calls: {:?}", soul.methods());
    let on_disk = std::fs::read_to_string(workspace(&w, "alice").join("SOUL.md")).unwrap();
    assert!(on_disk.contains("terser than ever"));
    assert_eq!(
        std::fs::read_to_string(workspace(&w, "alice").join("USER.md")).unwrap(),
        "# USER.md\nMy human likes tea.\n"
    );

    // A third agent: created by the one config.patch, no restart.
    w.edit("fleet.kdl", "agent \"bob\"", CAROL);
    let third = Trace::new(&w, "third");
    apply_traced(&w, &third);
    assert_eq!(third.count("config.patch"), 1, "{:?}", third.methods());
    assert_eq!(third.count("agents.create"), 0, "{:?}", third.methods());
    assert_eq!(gateway_pid(&w, "main"), pid, "adding an agent does not restart the gateway");
    assert_eq!(chat(&w, "carol"), "Hello from the large demo model.");

    // Kill the gateway: the plan sees it, apply restarts it, the agents answer again.
    // SAFETY: killing the gateway process group this test started.
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    crate::support::wait_gone(pid, "the killed gateway");
    let plan = w.fleet(&["plan"]).ok();
    assert!(plan.stdout.contains("~ gateway.main  (gateway main is not running)"), "{}", plan.stdout);
    w.fleet(&["apply"]).ok();
    assert_ne!(gateway_pid(&w, "main"), pid);
    assert_eq!(chat(&w, "alice"), "Hello from the demo model.");
    assert_eq!(chat(&w, "bob"), "Hello from the demo model.");

    // Bob deleted by hand, behind fleet's back: the plan sees it, apply brings him back.
    delete_by_hand(&w, "bob");
    let plan = w.fleet(&["plan"]).ok();
    for line in
        ["~ agent.bob  (agent bob is missing from gateway main)", "~ gateway.main.models  (agent bob is missing"]
    {
        assert!(plan.stdout.contains(line), "{line} missing in\n{}", plan.stdout);
    }
    w.fleet(&["apply"]).ok();
    assert_eq!(chat(&w, "bob"), "Hello from the demo model.");
    let r = w.fleet(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "one apply converges:\n{}", r.stdout);

    // Bob's model taken out of the config by hand: still listed, a new session of his would answer
    // through OpenClaw's default provider, which has no key (seen once in the hosts test: "No
    // route-compatible authentication source is configured for openai"). The plan sees it; apply
    // puts it back.
    let bob_model = |w: &World| {
        call_gateway(w, "config.get", serde_json::json!({}))["config"]["agents"]["entries"]["bob"]["model"].clone()
    };
    let hash = call_gateway(&w, "config.get", serde_json::json!({}))["hash"].clone();
    let raw = serde_json::json!({"agents": {"entries": {"bob": {"model": null}}}}).to_string();
    let replace = ["agents.entries.bob.model.fallbacks"];
    call_gateway(
        &w,
        "config.patch",
        serde_json::json!({"raw": raw, "baseHash": hash, "replacePaths": replace, "note": "by hand"}),
    );
    assert_eq!(bob_model(&w), serde_json::Value::Null);
    let plan = w.fleet(&["plan"]).ok();
    let line = "~ gateway.main.models  (gateway main's config differs from fleet's at agents.entries.bob.model)";
    assert!(plan.stdout.contains(line), "{line} missing in\n{}", plan.stdout);
    w.fleet(&["apply"]).ok();
    assert_eq!(bob_model(&w)["primary"], "fleet-bob/demo-small");
    assert_eq!(chat(&w, "bob"), "Hello from the demo model.");
    let r = w.fleet(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "one apply converges:\n{}", r.stdout);

    // Removing an agent removes it from its gateway; its files go into an archive.
    let text = w.read("fleet.kdl");
    let (a, b) = (text.find("agent \"carol\"").unwrap(), text.find("agent \"bob\"").unwrap());
    w.write("fleet.kdl", &format!("{}{}", &text[..a], &text[b..]));
    let r = w.fleet(&["apply"]).ok();
    assert!(r.stdout.contains("- agent.carol: deleted") && r.stdout.contains("- key.carol: deleted"), "{}", r.stdout);
    assert!(!workspace(&w, "carol").exists(), "the workspace moved into the archive");
    let archived = w.fleet(&["archive", "list", "--json"]).ok();
    assert!(archived.stdout.contains("\"agent\": \"carol\""), "{}", archived.stdout);
    // Purged, carol comes back fresh below: OpenClaw's attestation of her vanished workspace (kept
    // 24 h) must not stop it.
    let r = w.fleet(&["archive", "purge", "--all"]).ok();
    assert!(r.stdout.contains("removed carol-"), "{}", r.stdout);
    let r = w.fleet(&["chat", "carol", "hi"]);
    assert_eq!(r.code, 1);

    // Carol comes back: the gateway takes the same id again (after agents.delete's tombstone).
    w.edit("fleet.kdl", "agent \"bob\"", CAROL);
    w.fleet(&["apply"]).ok();
    assert_eq!(chat(&w, "carol"), "Hello from the large demo model.");

    let r = w.fleet(&["destroy"]).ok();
    assert!(r.stdout.contains("Destroy complete"), "{}", r.stdout);
}

#[test]
fn a_gateway_that_never_gets_healthy_fails_alone() {
    let w = World::quickstart();
    // A second gateway whose config OpenClaw rejects: it exits at start.
    let broken_port = free_port();
    w.edit("fleet.kdl", "agent \"bob\" gateway=\"main\"", "agent \"bob\" gateway=\"broken\"");
    w.edit(
        "fleet.kdl",
        "gateway \"main\"",
        &format!("gateway \"broken\" host=\"local\" port={broken_port}\ngateway \"main\""),
    );
    let home = w.data_dir("quickstart").join("gateways/broken/home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("openclaw.json"), r#"{"thisKeyDoesNotExist": true}"#).unwrap();

    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("✗ gateway.broken: create failed: the gateway exited during start; last lines of"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("! agent.bob: skipped: depends on gateway.broken, which failed"), "{}", r.stdout);
    assert!(r.stdout.contains("+ agent.alice: created") && r.stdout.contains("+ wake.alice: created"), "{}", r.stdout);
    assert_eq!(chat(&w, "alice"), "Hello from the demo model.");

    // Mended, the gateway starts and bob lives there.
    std::fs::write(home.join("openclaw.json"), "{}").unwrap();
    w.fleet(&["apply"]).ok();
    assert_eq!(chat(&w, "bob"), "Hello from the demo model.");
    let broken = fleet::openclaw::client::GatewayRef {
        name: "broken".into(),
        url: format!("ws://127.0.0.1:{broken_port}"),
        token_file: w.data_dir("quickstart").join("gateways/broken/token"),
    };
    let listed = |g: &fleet::openclaw::client::GatewayRef| {
        tokio::runtime::Runtime::new().unwrap().block_on(g.listed_now()).unwrap()
    };
    assert!(listed(&broken).contains(&"bob".to_string()));

    // Bob moves to main: provisioned there, then removed from the gateway he left.
    w.edit("fleet.kdl", "agent \"bob\" gateway=\"broken\"", "agent \"bob\" gateway=\"main\"");
    let r = w.fleet(&["apply"]).ok();
    assert!(r.stdout.contains("removed from gateway broken"), "{}", r.stdout);
    assert_eq!(chat(&w, "bob"), "Hello from the demo model.");
    assert!(!listed(&broken).contains(&"bob".to_string()), "bob left the old gateway");
    let r = w.fleet(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "one apply converges:\n{}", r.stdout);
}

/// Every process in the session `leader` leads (the gateway and the workers it forks).
fn session_members(leader: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Some(f) = fleet::process::stat_fields(pid) else { continue };
        if f.get(fleet::process::STAT_SESSION).and_then(|s| s.parse::<u32>().ok()) == Some(leader) {
            out.push(pid);
        }
    }
    out
}

fn environ(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default()).replace('\0', "\n")
}

#[test]
fn processes_get_only_the_environment_they_need() {
    let w = World::quickstart();
    // A provider whose key comes from fleet's environment (never called: no agent uses its model).
    w.edit(
        "fleet.kdl",
        "gateway \"main\"",
        "provider \"canary\" type=\"openrouter\" api-key=\"env:FLEET_TEST_PROVIDER_KEY\" { models \"openai/gpt-4o-mini\"; }\ngateway \"main\"",
    );
    let provider_key = format!("sk-or-canary-{}", std::process::id());
    let other_secret = format!("other-canary-{}", std::process::id());
    let o = w
        .cmd(&["apply"])
        .env("FLEET_TEST_PROVIDER_KEY", &provider_key)
        .env("SOME_UNRELATED_TOKEN", &other_secret)
        .output()
        .unwrap();
    let r = crate::support::Run::from_output(o).ok();
    assert!(r.stdout.contains("+ gateway.main: created"), "{}", r.stdout);

    let gateway = session_members(gateway_pid(&w, "main"));
    assert!(!gateway.is_empty());
    for pid in &gateway {
        let env = environ(*pid);
        assert!(!env.contains(&provider_key), "the provider key reached gateway process {pid}");
        assert!(!env.contains(&other_secret), "fleet's caller's environment reached gateway process {pid}");
        assert!(env.contains("OPENCLAW_STATE_DIR="), "pid {pid} is a gateway process: {env}");
    }
    let proxy = session_members(w.proxy_pid("quickstart"));
    assert!(!proxy.is_empty());
    let proxy_env = environ(w.proxy_pid("quickstart"));
    assert!(proxy_env.contains(&format!("FLEET_TEST_PROVIDER_KEY={provider_key}")), "the proxy holds its provider key");
    for pid in proxy {
        assert!(!environ(pid).contains(&other_secret), "fleet's caller's environment reached proxy process {pid}");
    }
    w.fleet(&["destroy"]).ok();
}
