//! The spine, end to end: fleet file → plan → apply, with the LiteLLM config and per-agent keys.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{env_key, sha256, walk, World};

fn quickstart() -> World {
    World::keys_only()
}

fn plan_json(w: &World) -> Value {
    let r = w.fleet(&["plan", "--json"]).ok();
    serde_json::from_str(&r.stdout).expect("plan --json is JSON")
}

/// The resource changes that are not no-ops (plan JSON, docs/plan-json.md).
fn changed(plan: &Value) -> Vec<&Value> {
    let all = plan["resource_changes"].as_array().unwrap();
    all.iter().filter(|c| c["change"]["actions"] != serde_json::json!(["no-op"])).collect()
}

/// (address, action) with Terraform's action lists named as fleet's text plan names them.
fn actions(plan: &Value) -> Vec<(String, String)> {
    changed(plan)
        .into_iter()
        .map(|c| {
            let action = match c["change"]["actions"].as_array().unwrap().as_slice() {
                [a] => a.as_str().unwrap().to_string(),
                [_, _] => "replace".to_string(),
                other => panic!("unexpected actions {other:?}"),
            };
            (c["address"].as_str().unwrap().to_string(), action)
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn keys_json(w: &World) -> Value {
    let p = w.data_dir("quickstart").join("litellm/keys.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn key_entry<'a>(keys: &'a Value, alias: &str) -> Option<&'a Value> {
    keys["keys"].as_array().unwrap().iter().find(|k| k["alias"] == alias)
}

#[test]
fn quickstart_is_valid() {
    let w = World::quickstart();
    let r = w.fleet(&["validate"]).ok();
    assert!(r.stdout.contains("quickstart: valid (2 agents, 1 gateways, 1 providers)"), "{}", r.stdout);
}

#[test]
fn apply_from_empty_then_again_changes_nothing() {
    let w = quickstart();
    let data = w.data_dir("quickstart");

    let plan = w.fleet(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "changes pending → exit 2\n{}", plan.all());
    for line in
        ["+ litellm.master-key", "+ litellm.install", "+ litellm.config", "+ litellm.proxy", "+ key.alice", "+ key.bob"]
    {
        assert!(plan.stdout.contains(line), "missing {line:?} in\n{}", plan.stdout);
    }
    assert!(plan.stdout.contains("Plan: 6 to create, 0 to update, 0 to replace, 0 to delete; 0 unchanged."));
    assert!(!data.exists(), "plan writes nothing");

    let apply = w.fleet(&["apply"]).ok();
    assert!(apply.stdout.contains("Apply complete: 6 done"), "{}", apply.stdout);
    let before = w.files(&data);
    let alice_key = env_key(&data.join("agents/alice/env"));
    assert!(alice_key.starts_with("sk-fleet-") && alice_key.len() == 9 + 64);

    // The config: one entry per model plus the default alias, scoping flags, references only.
    let config: Value = serde_json::from_slice(&before[&data.join("litellm/config.yaml")]).unwrap();
    let names: Vec<&str> =
        config["model_list"].as_array().unwrap().iter().map(|m| m["model_name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["demo-small", "demo-large", "default"]);
    assert_eq!(config["general_settings"]["custom_auth"], "fleet_auth.user_api_key_auth");
    assert_eq!(config["general_settings"]["custom_auth_run_common_checks"], true);
    assert_eq!(config["litellm_settings"]["enable_post_custom_auth_checks"], true);
    assert_eq!(config["general_settings"]["master_key"], "os.environ/LITELLM_MASTER_KEY");

    // The key file: hashes only, scoped to primary + fallbacks.
    let keys = keys_json(&w);
    let alice = key_entry(&keys, "fleet-alice").unwrap();
    assert_eq!(alice["hash"], sha256(&alice_key));
    assert_eq!(alice["models"], serde_json::json!(["demo-small", "demo-large"]));
    assert_eq!(alice["metadata"], serde_json::json!({"agent": "alice"}));

    // Secret files are private.
    use std::os::unix::fs::PermissionsExt;
    for f in ["agents/alice/env", "agents/bob/env", "litellm/master.key", "litellm/keys.json"] {
        let mode = std::fs::metadata(data.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }

    let plan = w.fleet(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(plan.stdout.contains("No changes. 6 resources up to date."), "{}", plan.stdout);
    let again = w.fleet(&["apply"]).ok();
    assert!(again.stdout.contains("No changes."), "{}", again.stdout);
    let after = w.files(&data);
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    for (path, bytes) in &before {
        assert!(after[path] == *bytes, "{} changed on a no-op apply", path.display());
    }
    assert_eq!(env_key(&data.join("agents/alice/env")), alice_key, "no key re-minted");
}

#[test]
fn a_model_change_rescopes_only_that_agents_key() {
    let w = quickstart();
    w.fleet(&["apply"]).ok();
    let data = w.data_dir("quickstart");
    let alice_key = env_key(&data.join("agents/alice/env"));
    let bob_env = std::fs::read(data.join("agents/bob/env")).unwrap();

    w.edit("fleet.kdl", "agent \"alice\" model=\"demo-small\"", "agent \"alice\" model=\"demo-large\"");
    w.edit("fleet.kdl", "fallback \"demo-large\"", "fallback \"demo-small\"");
    let plan = plan_json(&w);
    assert_eq!(actions(&plan), pairs(&[("key.alice", "update")]), "{plan:#}");
    let fields: Vec<&str> =
        changed(&plan)[0]["field_changes"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(fields, vec!["model", "models"]);
    let text = w.fleet(&["plan"]).ok().stdout;
    assert!(text.contains("~ key.alice"), "{text}");
    assert!(text.contains(r#"["demo-small","demo-large"] → ["demo-large","demo-small"]"#), "{text}");
    assert!(text.contains("1 to update") && text.contains("5 unchanged"), "{text}");

    w.fleet(&["apply"]).ok();
    assert_eq!(env_key(&data.join("agents/alice/env")), alice_key, "a scope change keeps the key");
    assert!(std::fs::read_to_string(data.join("agents/alice/env")).unwrap().contains("OPENAI_MODEL=demo-large"));
    let keys = keys_json(&w);
    assert_eq!(key_entry(&keys, "fleet-alice").unwrap()["models"], serde_json::json!(["demo-large", "demo-small"]));
    assert_eq!(std::fs::read(data.join("agents/bob/env")).unwrap(), bob_env);

    // A provider's model list is the config's business: the config updates, keys stay.
    w.edit(
        "fleet.kdl",
        "model \"demo-large\" response=",
        "model \"demo-xl\" response=\"XL.\"\n    model \"demo-large\" response=",
    );
    let plan = plan_json(&w);
    assert_eq!(actions(&plan), pairs(&[("litellm.config", "update"), ("litellm.proxy", "update")]), "{plan:#}");
}

#[test]
fn removing_an_agent_revokes_its_key() {
    let w = quickstart();
    w.fleet(&["apply"]).ok();
    let data = w.data_dir("quickstart");
    let bob_hash = sha256(&env_key(&data.join("agents/bob/env")));
    let text = w.read("fleet.kdl");
    let start = text.find("agent \"bob\"").unwrap();
    w.write("fleet.kdl", &text[..start]);

    let plan = plan_json(&w);
    assert_eq!(actions(&plan), pairs(&[("key.bob", "delete")]));
    let r = w.fleet(&["apply"]).ok();
    assert!(r.stdout.contains("- key.bob: deleted"), "{}", r.stdout);
    let keys = std::fs::read_to_string(data.join("litellm/keys.json")).unwrap();
    assert!(!keys.contains(&bob_hash) && !keys.contains("fleet-bob"), "{keys}");
    assert!(!data.join("agents/bob/env").exists(), "the revoked key's env file is gone");
    assert!(keys.contains("fleet-alice"));
    w.assert_converged();
}

#[test]
fn a_second_concurrent_apply_fails_at_once_naming_the_holder() {
    let w = quickstart();
    let mut first = w.cmd(&["apply"]).env("FLEET_DEBUG_HOLD_LOCK_MS", "20000").spawn().unwrap();
    let db = w.data_dir("quickstart").join("state.db");
    let t0 = Instant::now();
    let holder = loop {
        let held = rusqlite::Connection::open(&db)
            .ok()
            .and_then(|c| c.query_row("SELECT pid FROM apply_lock", [], |r| r.get::<_, u32>(0)).ok());
        if let Some(pid) = held {
            break pid;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the first apply never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(holder, first.id());
    let second = w.fleet(&["apply"]);
    let still_running = first.try_wait().unwrap().is_none();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(still_running, "the second apply returned while the first still held the lock");
    assert_eq!(second.code, 1, "{}", second.all());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        second.stderr.contains(&format!("another fleet apply is running: pid {holder} on host {}", host.trim())),
        "{}",
        second.stderr
    );

    // The killed holder left its lock behind: the next apply recovers it.
    let r = w.fleet(&["apply"]).ok();
    assert!(r.stdout.contains("Apply complete"), "{}", r.stdout);
}

#[test]
fn a_failed_step_names_the_resource_and_independent_work_goes_on() {
    let w = quickstart();
    let data = w.data_dir("quickstart");
    // Something in the way of bob's home: his key cannot be written.
    std::fs::create_dir_all(data.join("agents")).unwrap();
    std::fs::write(data.join("agents/bob"), "not a directory").unwrap();
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("✗ key.bob: create failed: cannot write env file"), "{}", r.stdout);
    assert!(r.stdout.contains("+ key.alice: created"), "{}", r.stdout);
    assert!(r.stdout.contains("Apply failed: 5 done, 1 failed, 0 skipped"), "{}", r.stdout);
    let plan = plan_json(&w);
    assert_eq!(actions(&plan), pairs(&[("key.bob", "create")]));
    std::fs::remove_file(data.join("agents/bob")).unwrap();
    w.fleet(&["apply"]).ok();
    w.assert_converged();
}

#[test]
fn dependents_of_a_failed_step_are_skipped() {
    let w = quickstart();
    let data = w.data_dir("quickstart");
    // The config cannot be written, so no key is minted against it.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("litellm"), "in the way").unwrap();
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("✗ litellm.master-key: create failed"), "{}", r.stdout);
    assert!(r.stdout.contains("! key.alice: skipped: depends on litellm.master-key, which failed"), "{}", r.stdout);
    assert!(
        r.stdout.contains("! litellm.config: skipped: depends on litellm.master-key, which failed"),
        "{}",
        r.stdout
    );
    assert!(!data.join("agents/alice/env").exists());
}

#[test]
fn drift_is_seen_and_repaired() {
    let w = quickstart();
    w.fleet(&["apply"]).ok();
    let data = w.data_dir("quickstart");
    let config = std::fs::read(data.join("litellm/config.yaml")).unwrap();
    let bob_key = env_key(&data.join("agents/bob/env"));
    std::fs::write(data.join("litellm/config.yaml"), "hand edited").unwrap();
    std::fs::remove_file(data.join("agents/alice/env")).unwrap();

    let text = w.fleet(&["plan"]).ok().stdout;
    assert!(
        text.contains("~ litellm.config  (") && text.contains("/litellm/config.yaml changed outside fleet)"),
        "{text}"
    );
    assert!(text.contains("-/+ key.alice"), "{text}");
    w.fleet(&["apply"]).ok();
    assert_eq!(std::fs::read(data.join("litellm/config.yaml")).unwrap(), config);
    let alice = env_key(&data.join("agents/alice/env"));
    let keys = keys_json(&w);
    assert_eq!(key_entry(&keys, "fleet-alice").unwrap()["hash"], sha256(&alice), "a new key replaced the lost one");
    assert_eq!(env_key(&data.join("agents/bob/env")), bob_key);
    w.assert_converged();
}

#[test]
fn no_secret_leaks_into_files_or_output() {
    let w = quickstart();
    let provider_secret = "sk-or-v1-THIS-IS-A-PROVIDER-SECRET-0123456789";
    w.edit(
        "fleet.kdl",
        "provider \"demo\" type=\"mock\" {",
        "provider \"or\" type=\"openrouter\" api-key=\"env:OPENROUTER_API_KEY\" { models \"openai/gpt-4o-mini\" }\n\
         provider \"demo\" type=\"mock\" {",
    );
    w.edit("fleet.kdl", "fallback \"demo-large\"", "fallback \"openai/gpt-4o-mini\"");
    let mut outputs = String::new();
    for args in [&["validate"][..], &["plan"], &["plan", "--json"], &["apply"], &["plan"], &["state"], &["graph"]] {
        let o = w.cmd(args).env("OPENROUTER_API_KEY", provider_secret).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        outputs.push_str(&String::from_utf8_lossy(&o.stdout));
        outputs.push_str(&String::from_utf8_lossy(&o.stderr));
    }
    let data = w.data_dir("quickstart");
    let config = std::fs::read_to_string(data.join("litellm/config.yaml")).unwrap();
    assert!(config.contains("os.environ/OPENROUTER_API_KEY"), "{config}");

    let alice_key = env_key(&data.join("agents/alice/env"));
    let bob_key = env_key(&data.join("agents/bob/env"));
    let master = std::fs::read_to_string(data.join("litellm/master.key")).unwrap().trim().to_string();
    assert!(
        !outputs.contains(provider_secret) && !outputs.contains(&alice_key[9..]) && !outputs.contains(&master[14..])
    );
    let mut holders: Vec<(String, String)> = Vec::new();
    walk(&data, &mut |p| {
        let bytes = std::fs::read(p).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let rel = p.strip_prefix(&data).unwrap().display().to_string();
        assert!(!text.contains(provider_secret), "provider secret in {rel}");
        for (name, key) in [("alice", &alice_key), ("bob", &bob_key), ("master", &master)] {
            if text.contains(key[9..].as_ref() as &str) {
                holders.push((name.to_string(), rel.clone()));
            }
        }
    });
    holders.sort();
    assert_eq!(
        holders,
        pairs(&[("alice", "agents/alice/env"), ("bob", "agents/bob/env"), ("master", "litellm/master.key")]),
        "each raw key lives in exactly one file"
    );
}

#[test]
fn toml_and_kdl_plan_the_same() {
    let kdl = quickstart();
    let toml = World::new();
    toml.write("souls/alice.md", &kdl.read("souls/alice.md"));
    toml.write(
        "fleet.toml",
        r#"[fleet]
name = "quickstart"
parallelism = 8

[host.local]
runtime = "process"

[litellm]
host = "local"
port = PORT
version = "1.106.2"
keys = "file"

[provider.demo]
type = "mock"
model = [
  { name = "demo-small", response = "Hello from the demo model." },
  { name = "demo-large", response = "Hello from the large demo model." },
]

[agent.alice]
model = "demo-small"
fallback = ["demo-large"]
identity = { name = "Alice", role = "Researcher", emoji = "🔬" }
soul = { file = "souls/alice.md" }
heartbeat = { every = "30m" }

[agent.bob]
model = "demo-small"
identity = { name = "Bob", role = "Writer", emoji = "✍️" }
soul = { text = "You are Bob. You write short, clear answers." }
"#,
    );
    let port = kdl.read("fleet.kdl").split("port=").nth(1).unwrap().split(' ').next().unwrap().to_string();
    toml.write("fleet.toml", &toml.read("fleet.toml").replace("PORT", &port));
    let strip = |w: &World, v: Value| v.to_string().replace(&w.root().display().to_string(), "<root>");
    assert_eq!(strip(&kdl, plan_json(&kdl)), strip(&toml, plan_json(&toml)));
}

#[test]
fn graph_is_dot_with_dependencies() {
    let w = quickstart();
    let r = w.fleet(&["graph"]).ok();
    assert!(r.stdout.starts_with("digraph \"quickstart\" {"), "{}", r.stdout);
    assert!(r.stdout.contains("\"litellm.master-key\" -> \"litellm.config\";"));
    assert!(r.stdout.contains("\"litellm.config\" -> \"key.alice\";"));
}

#[test]
fn the_fleet_file_is_found_or_its_absence_explained() {
    let w = World::new();
    let r = w.fleet(&["plan"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no fleet.kdl or fleet.toml in ."), "{}", r.stderr);
    w.example("quickstart");
    // A directory, a file, or the working directory all work.
    w.fleet(&["validate", "."]).ok();
    w.fleet(&["validate", "fleet.kdl"]).ok();
    let other = World::new();
    let r = other.fleet(&["validate", w.repo().to_str().unwrap()]).ok();
    assert!(r.stdout.contains("quickstart: valid"));
}

#[test]
fn data_dir_flag_and_file_setting_override_xdg() {
    let w = quickstart();
    let flag = w.root().join("elsewhere");
    w.fleet(&["apply", "--data-dir", flag.to_str().unwrap()]).ok();
    assert!(flag.join("state.db").exists() && flag.join("agents/alice/env").exists());
    assert!(!w.data_dir("quickstart").exists());
    // That fleet's proxy holds the port: take it down before the same fleet moves house.
    w.fleet(&["destroy", "--data-dir", flag.to_str().unwrap()]).ok();

    w.edit("fleet.kdl", "parallelism 8", "parallelism 8\n    data-dir \"../from-file\"");
    w.fleet(&["apply"]).ok();
    assert!(w.root().join("from-file/state.db").exists());
}

#[test]
fn dry_run_is_plan() {
    let w = quickstart();
    let dry = w.fleet(&["apply", "--dry-run"]).ok();
    let plan = w.fleet(&["plan"]).ok();
    assert_eq!(dry.stdout, plan.stdout);
    assert!(!w.data_dir("quickstart").exists());
}

#[test]
fn target_narrows_and_replace_forces_as_in_terraform() {
    let w = quickstart();
    w.fleet(&["apply"]).ok();
    let data = w.data_dir("quickstart");
    let (alice_key, bob_key) = (env_key(&data.join("agents/alice/env")), env_key(&data.join("agents/bob/env")));

    // Both agents change; a targeted plan and apply touch only alice.
    w.edit("fleet.kdl", "agent \"bob\" model=\"demo-small\"", "agent \"bob\" model=\"demo-large\"");
    w.edit("fleet.kdl", "agent \"alice\" model=\"demo-small\"", "agent \"alice\" model=\"demo-large\"");
    let all = plan_json(&w);
    assert_eq!(actions(&all), pairs(&[("key.alice", "update"), ("key.bob", "update")]), "{all:#}");
    let r = w.fleet(&["plan", "--json", "--target", "key.alice"]).ok();
    let targeted: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(actions(&targeted), pairs(&[("key.alice", "update")]), "{targeted:#}");
    let listed: Vec<&str> =
        targeted["resource_changes"].as_array().unwrap().iter().map(|c| c["address"].as_str().unwrap()).collect();
    assert!(
        !listed.contains(&"key.bob") && listed.contains(&"litellm.config"),
        "the target and what it needs: {listed:?}"
    );
    w.fleet(&["apply", "--target", "key.alice"]).ok();
    assert_eq!(actions(&plan_json(&w)), pairs(&[("key.bob", "update")]), "bob waits for an untargeted apply");

    // --replace re-mints alice's key even though nothing about it changed; bob's stays.
    w.fleet(&["apply"]).ok();
    let r = w.fleet(&["plan", "--json", "--replace", "key.alice"]).ok();
    let forced: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(actions(&forced), pairs(&[("key.alice", "replace")]), "{forced:#}");
    assert_eq!(changed(&forced)[0]["action_reason"], "replace_by_request");
    w.fleet(&["apply", "--replace", "key.alice"]).ok();
    assert_ne!(env_key(&data.join("agents/alice/env")), alice_key, "a new key");
    assert_eq!(env_key(&data.join("agents/bob/env")), bob_key, "bob's key is kept");
    w.assert_converged();

    // Addresses that do not parse, or name nothing, are errors that say so; nothing is applied.
    let r = w.fleet(&["apply", "--target", "key.Al ice"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("is not a resource address"), "{}", r.stderr);
    let r = w.fleet(&["apply", "--target", "key.carol"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("no resource key.carol in the fleet file or its state"), "{}", r.stderr);
    let r = w.fleet(&["apply", "--replace", "key.carol"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("cannot replace key.carol"), "{}", r.stderr);
}

#[test]
fn shell_completions_are_printed() {
    let w = quickstart();
    for shell in ["bash", "zsh", "fish"] {
        let r = w.fleet(&["completions", shell]).ok();
        assert!(
            r.stdout.contains("apply") && r.stdout.contains("target") && r.stdout.contains("completions"),
            "{shell}"
        );
    }
}

#[test]
fn an_unset_secret_fails_plan_and_apply_at_its_reference_before_anything_happens() {
    let w = quickstart();
    w.edit(
        "fleet.kdl",
        "provider \"demo\" type=\"mock\" {",
        "provider \"or\" type=\"openrouter\" api-key=\"env:FLEET_TEST_UNSET_PROVIDER_KEY\" { models \"openai/gpt-4o-mini\" }\n\
         provider \"demo\" type=\"mock\" {",
    );
    let v = w.fleet(&["validate"]).ok();
    assert!(
        v.stdout.contains("not checked (plan and apply resolve them): env:FLEET_TEST_UNSET_PROVIDER_KEY"),
        "{}",
        v.stdout
    );
    for args in [&["plan"][..], &["apply"]] {
        let r = w.cmd(args).env_remove("FLEET_TEST_UNSET_PROVIDER_KEY").output().unwrap();
        let r = crate::support::Run::from_output(r);
        assert_eq!(r.code, 1, "{args:?}: {}", r.all());
        assert!(
            r.stderr.contains("`api-key`: environment variable FLEET_TEST_UNSET_PROVIDER_KEY is not set"),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("fleet.kdl:"), "file:line:col: {}", r.stderr);
        assert!(r.stderr.contains("help: set FLEET_TEST_UNSET_PROVIDER_KEY"), "{}", r.stderr);
    }
    assert!(!w.data_dir("quickstart").exists(), "nothing was created");
}
