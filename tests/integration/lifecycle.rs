//! The agent lifecycle around things that are already dead: destroy finishes when the gateway is
//! gone (its agents are taken out of its config on disk, keys revoked, state emptied), and fails
//! naming the gateway when fleet cannot tell whether it is gone.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::World;

const FLEET: &str = "quickstart";

fn gateway_pid(w: &World) -> i32 {
    let h: Value =
        serde_json::from_str(&std::fs::read_to_string(w.data_dir(FLEET).join("gateways/main/gateway.handle")).unwrap())
            .unwrap();
    h["handle"]["pid"]["pid"].as_u64().unwrap() as i32
}

fn keys_in_file(w: &World) -> usize {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(w.data_dir(FLEET).join("litellm/keys.json")).unwrap()).unwrap();
    v["keys"].as_array().map(|k| k.len()).unwrap_or(0)
}

#[test]
fn destroy_finishes_when_the_gateway_is_already_dead() {
    let w = World::quickstart();
    w.fleet(&["apply"]).ok();
    assert!(keys_in_file(&w) >= 2);
    let raw: Vec<String> = ["alice", "bob"]
        .iter()
        .map(|a| crate::support::env_key(&w.data_dir(FLEET).join(format!("agents/{a}/env"))))
        .collect();
    let pid = gateway_pid(&w);
    // SAFETY: kill(2) on the gateway's process group, started by this test's apply.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    crate::support::wait_gone(pid as u32, "the killed gateway");
    let r = w.fleet(&["destroy"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("Destroy complete"), "{}", r.stdout);
    // The dead gateway is not asked (no connection attempts to wait out): each agent is taken out
    // of its config on disk.
    for a in ["alice", "bob"] {
        assert!(r.stdout.contains(&format!("gateway main is not running: {a} taken out of")), "{a}: {}", r.stdout);
    }
    assert_eq!(keys_in_file(&w), 0, "every key revoked");
    // The agents are out of the stopped gateway's config, and its copies are gone: no revoked key is
    // left on disk.
    let home = w.data_dir(FLEET).join("gateways/main/home");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(home.join("openclaw.json")).unwrap()).unwrap();
    assert!(doc["agents"]["entries"].get("alice").is_none() && doc["agents"]["entries"].get("bob").is_none(), "{doc}");
    let mut leaks = Vec::new();
    crate::support::walk(&home, &mut |p| {
        let bytes = std::fs::read(p).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        if raw.iter().any(|k| text.contains(k.as_str())) {
            leaks.push(p.to_path_buf());
        }
    });
    assert!(leaks.is_empty(), "raw keys left in {leaks:?}");
    let s = w.fleet(&["state"]).ok();
    assert!(!s.stdout.contains("agent.") && !s.stdout.contains("key."), "{}", s.stdout);
}

/// A gateway that holds its port but does not answer (SIGSTOPped): removing one of its agents,
/// fleet cannot judge it gone, so the removal fails naming it; `fleet state forget` is the hand
/// repair. Destroy, which takes the gateway too, stops the hung gateway and finishes.
#[test]
fn destroy_fails_naming_a_gateway_it_cannot_judge_and_state_forget_repairs() {
    let w = World::quickstart();
    w.fleet(&["apply"]).ok();
    let pid = gateway_pid(&w);
    // SAFETY: kill(2) on the gateway's process group, started by this test's apply.
    unsafe { libc::kill(-pid, libc::SIGSTOP) };
    w.write("fleet.kdl", &without_agent(&w, "alice"));
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let all = r.all();
    assert!(all.contains("agent.alice") && all.contains("gateway main"), "{all}");
    assert!(all.contains("fleet state forget agent.alice"), "the hand repair is named: {all}");
    assert!(all.contains("Apply failed") && all.contains("apply again"), "{all}");
    let f = w.fleet(&["state", "forget", "agent.alice"]).ok();
    assert!(f.stdout.contains("forgot agent.alice"), "{}", f.stdout);
    let r = w.fleet(&["state", "forget", "agent.nobody"]);
    assert_eq!(r.code, 1, "{}", r.all());
    // The gateway is still hung: destroy takes it too, so it stops it rather than asking it.
    let r = w.fleet(&["destroy"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("gateway main goes in this run too: stopping it first"), "{}", r.stdout);
    assert!(!r.stdout.contains("to finish starting"), "a started gateway that hangs is not waited for: {}", r.stdout);
    assert_eq!(keys_in_file(&w), 0);
    // SAFETY: kill(2) with signal 0 only asks whether the process group still exists (its
    // workers may take a moment after their leader).
    let gone = (0..150).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        (unsafe { libc::kill(-pid, 0) }) != 0
    });
    assert!(gone, "the hung gateway's process group is gone");
}

/// The fleet file without one agent's node.
fn without_agent(w: &World, name: &str) -> String {
    let text = w.read("fleet.kdl");
    let start = text.find(&format!("agent \"{name}\"")).unwrap();
    let end = start + text[start..].find("\n}\n").unwrap() + 3;
    format!("{}{}", &text[..start], &text[end..])
}

fn archives(w: &World) -> Vec<Value> {
    let r = w.fleet(&["archive", "list", "--json"]).ok();
    serde_json::from_str::<Value>(&r.stdout).unwrap().as_array().unwrap().clone()
}

/// bob leaves: his workspace (with a USER.md edited by hand), sessions, trace and conversations
/// move into an archive with a manifest, his key is refused; he comes back: everything is back
/// byte for byte, no BOOTSTRAP.md is sent, a new key works and the old one does not. Then the same
/// archive under another name (`restore=`), and a purge that leaves no byte of it.
#[test]
fn removal_archives_and_re_adding_restores_under_any_name_and_purge_removes_every_byte() {
    let w = World::quickstart();
    w.fleet(&["apply"]).ok();
    let data = w.data_dir(FLEET);
    let ws = data.join("gateways/main/home/workspaces/bob");
    let user_md = "# USER\nEdited by hand while bob was live: archive-marker-7f3a\n";
    std::fs::write(ws.join("USER.md"), user_md).unwrap();
    // As a real agent does once bootstrapped.
    let _ = std::fs::remove_file(ws.join("BOOTSTRAP.md"));
    let chat = w.fleet(&["chat", "bob", "remember the archive-marker-7f3a"]);
    assert_eq!(chat.code, 0, "{}", chat.all());
    let old_key = crate::support::env_key(&data.join("agents/bob/env"));
    let proxy = crate::proxy::Proxy::of(&w);
    assert_eq!(proxy.chat(&old_key, "demo-small").0, 200);
    let full = w.read("fleet.kdl");

    let no_bob = without_agent(&w, "bob");
    w.write("fleet.kdl", &no_bob);
    let plan = w.fleet(&["plan"]).ok();
    assert!(plan.stdout.contains("- agent.bob") && plan.stdout.contains("(archive)"), "{}", plan.stdout);
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("archived as bob-"), "{}", r.stdout);
    assert!(!ws.exists(), "the workspace moved");
    assert!(!data.join("agents/bob").exists(), "the agent's home moved");
    assert_eq!(proxy.chat(&old_key, "demo-small").0, 401, "the removed agent's key is refused");
    let list = archives(&w);
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["agent"], "bob");
    assert!(list[0]["conversations"].as_u64().unwrap() >= 2, "the chat went with him: {list:?}");
    let manifest: Value = serde_json::from_str(&w.fleet(&["archive", "show", &id]).ok().stdout).unwrap();
    assert_eq!(manifest["model"], "demo-small");
    assert_eq!(manifest["gateway"], "main");
    assert_eq!(manifest["identity"]["name"], "Bob");
    assert!(manifest["run"].as_i64().is_some());
    assert_eq!(manifest["files"]["workspace/USER.md"]["sha256"], crate::support::sha256(user_md));
    let files = manifest["files"].as_object().unwrap();
    assert!(files.keys().any(|f| f.starts_with("gateway-state/")), "sessions archived: {:?}", files.keys());
    assert!(!files.keys().any(|f| f.ends_with("/env")), "no secret archived");
    let archive_dir = data.join("archive").join(&id);
    let mut leaks = Vec::new();
    crate::support::walk(&archive_dir, &mut |p| {
        if String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).contains(&old_key) {
            leaks.push(p.to_path_buf());
        }
    });
    assert!(leaks.is_empty(), "the raw key is in {leaks:?}");
    // The next plan is clean.
    w.assert_converged();

    w.write("fleet.kdl", &full);
    let plan = w.fleet(&["plan"]).ok();
    assert!(plan.stdout.contains(&format!("(restore from archive {id})")), "{}", plan.stdout);
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains(&format!("brought back from archive {id}")), "{}", r.stdout);
    assert_eq!(std::fs::read_to_string(ws.join("USER.md")).unwrap(), user_md, "USER.md byte for byte");
    assert!(!ws.join("BOOTSTRAP.md").exists(), "BOOTSTRAP.md was not sent again");
    let new_key = crate::support::env_key(&data.join("agents/bob/env"));
    assert_ne!(new_key, old_key);
    assert_eq!(proxy.chat(&new_key, "demo-small").0, 200, "the new key works");
    assert_eq!(proxy.chat(&old_key, "demo-small").0, 401, "the old one does not");
    assert!(archives(&w).is_empty(), "the archive was taken back");
    assert!(!data.join("agents/bob/restored.json").exists(), "the restored wake went out");
    let history = w.fleet(&["chat", "bob", "are you back?"]);
    assert_eq!(history.code, 0, "{}", history.all());
    w.assert_converged();

    // bob leaves again; his archive comes back as robert.
    w.write("fleet.kdl", &no_bob);
    w.fleet(&["apply"]).ok();
    let id = archives(&w)[0]["id"].as_str().unwrap().to_string();
    let robert = format!("{no_bob}\nagent \"robert\" gateway=\"main\" model=\"demo-small\" restore=\"{id}\"\n");
    w.write("fleet.kdl", &robert);
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let rws = data.join("gateways/main/home/workspaces/robert");
    assert_eq!(std::fs::read_to_string(rws.join("USER.md")).unwrap(), user_md, "bob's USER.md, now robert's");
    assert!(archives(&w).is_empty());
    // A restore= naming no archive fails at plan time... on apply, naming it.
    w.write("fleet.kdl", &robert.replace("agent \"robert\"", "agent \"rob\"").replace(&id, "bob-20200101T000000Z"));
    let plan = w.fleet(&["plan"]);
    assert!(plan.stdout.contains("archive bob-20200101T000000Z does not exist"), "{}", plan.all());

    // robert leaves; his archive is purged: no byte of it is left anywhere in the data dir.
    w.write("fleet.kdl", &no_bob);
    w.fleet(&["apply"]).ok();
    let id = archives(&w)[0]["id"].as_str().unwrap().to_string();
    let dry = w.fleet(&["archive", "purge", &id, "--dry-run"]).ok();
    assert!(dry.stdout.contains("would remove") && data.join("archive").join(&id).exists(), "{}", dry.stdout);
    let out = w.root().join("robert.tar.zst");
    let e = w.fleet(&["archive", "export", &id, out.to_str().unwrap()]).ok();
    assert!(e.stdout.contains(&format!("wrote {}", out.display())), "{}", e.stdout);
    let manifest: Value = serde_json::from_str(&w.fleet(&["archive", "show", &id]).ok().stdout).unwrap();
    assert_exported(&out, &id, &manifest, user_md);
    // Files with the same bytes outside the archive (an empty trace bucket of another agent) are not its.
    let hash =
        |p: &std::path::Path| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(p).unwrap_or_default()));
    let mut elsewhere = std::collections::HashSet::new();
    crate::support::walk(&data, &mut |p| {
        if !p.starts_with(data.join("archive")) {
            elsewhere.insert(hash(p));
        }
    });
    let p = w.fleet(&["archive", "purge", &id]).ok();
    assert!(p.stdout.contains(&format!("removed {id}")), "{}", p.stdout);
    assert!(!data.join("archive").join(&id).exists());
    // No file the archive held is left anywhere in the data dir, and the daemon's database no longer
    // holds the conversation.
    let held: Vec<String> = manifest["files"]
        .as_object()
        .unwrap()
        .values()
        .map(|f| f["sha256"].as_str().unwrap().to_string())
        .filter(|h| !elsewhere.contains(h))
        .collect();
    assert!(held.len() >= 3, "the archive held files of its own: {manifest}");
    let mut left = Vec::new();
    crate::support::walk(&data, &mut |p| {
        let bytes = std::fs::read(p).unwrap_or_default();
        if held.contains(&hash(p)) {
            left.push(p.to_path_buf());
        }
        let name = p.file_name().unwrap().to_string_lossy();
        if name.starts_with("conversations.db") && String::from_utf8_lossy(&bytes).contains("archive-marker-7f3a") {
            left.push(p.to_path_buf());
        }
    });
    assert!(left.is_empty(), "left after the purge: {left:?}");
    let r = w.fleet(&["archive", "purge", &id]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("no archive"), "{}", r.all());
}

/// The tarball `fleet archive export` wrote, read back: every entry under `<id>/`; its
/// manifest.json is the archive's (as `archive show` gives it); it holds exactly the files the
/// manifest lists, each with the manifest's sha256 and size; among them robert's workspace
/// (bob's USER.md byte for byte), OpenClaw's sessions, and the conversations (bob's first chat,
/// as many messages as the manifest says).
fn assert_exported(tarball: &std::path::Path, id: &str, manifest: &Value, user_md: &str) {
    use std::collections::BTreeMap;
    use std::io::Read;
    let file = std::fs::File::open(tarball).unwrap();
    let mut tar = tar::Archive::new(zstd::Decoder::new(file).expect("the export is zstd"));
    // Path inside the archive -> bytes (a symlink: its target, as the manifest hashes it).
    let mut held: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut links = std::collections::BTreeSet::new();
    for entry in tar.entries().expect("the export is a tar") {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let rel = path.strip_prefix(&format!("{id}/")).unwrap_or_else(|| panic!("{path} is outside {id}/"));
        let bytes = match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular => {
                let mut b = Vec::new();
                entry.read_to_end(&mut b).unwrap();
                b
            }
            tar::EntryType::Symlink => {
                links.insert(rel.to_string());
                entry.link_name().unwrap().unwrap().to_string_lossy().into_owned().into_bytes()
            }
            other => panic!("{path}: unexpected entry type {other:?}"),
        };
        assert!(held.insert(rel.to_string(), bytes).is_none(), "{rel} twice in the export");
    }
    let inside: Value = serde_json::from_slice(&held.remove("manifest.json").expect("manifest.json in the export"))
        .expect("the exported manifest is JSON");
    assert_eq!(&inside, manifest, "the exported manifest is the archive's");
    let listed: Vec<&String> = manifest["files"].as_object().unwrap().keys().collect();
    let in_tar: Vec<&String> = held.keys().collect();
    assert_eq!(in_tar, listed, "the export holds exactly the manifest's files");
    for (rel, sum) in manifest["files"].as_object().unwrap() {
        let bytes = &held[rel];
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
        assert_eq!(
            sum["sha256"].as_str(),
            Some(sha.as_str()),
            "{rel}: the manifest's sha256 is not the exported bytes'"
        );
        let size = if links.contains(rel) { 0 } else { bytes.len() as u64 };
        assert_eq!(sum["bytes"].as_u64(), Some(size), "{rel}: the manifest's size is not the exported file's");
    }
    assert_eq!(held.get("workspace/USER.md").map(|b| b.as_slice()), Some(user_md.as_bytes()), "{:?}", held.keys());
    assert!(held.keys().any(|f| f.starts_with("gateway-state/")), "sessions exported: {:?}", held.keys());
    let conversations =
        String::from_utf8(held.get("conversations.jsonl").expect("conversations exported").clone()).unwrap();
    assert_eq!(conversations.lines().count() as u64, manifest["conversations"].as_u64().unwrap(), "{conversations}");
    assert!(conversations.contains("archive-marker-7f3a"), "bob's first chat went along: {conversations}");
}

/// bob moves to another gateway: his workspace (with a MEMORY.md he wrote) and sessions go with him
/// instead of a fresh provisioning there, and he leaves the old gateway.
#[test]
fn an_agent_moved_to_another_gateway_keeps_its_memory() {
    let w = World::quickstart();
    let port = crate::support::free_port();
    let text = w.read("fleet.kdl");
    w.write("fleet.kdl", &format!("{text}\ngateway \"second\" host=\"local\" port={port}\n"));
    w.fleet(&["apply"]).ok();
    let data = w.data_dir(FLEET);
    let old_ws = data.join("gateways/main/home/workspaces/bob");
    let memory = "# MEMORY\nbob learned this on gateway main: move-marker-51c2\n";
    std::fs::write(old_ws.join("MEMORY.md"), memory).unwrap();
    let _ = std::fs::remove_file(old_ws.join("BOOTSTRAP.md"));
    w.edit("fleet.kdl", "agent \"bob\" gateway=\"main\"", "agent \"bob\" gateway=\"second\"");
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("bob: brought back from gateway main"), "{}", r.stdout);
    let new_ws = data.join("gateways/second/home/workspaces/bob");
    assert_eq!(std::fs::read_to_string(new_ws.join("MEMORY.md")).unwrap(), memory, "MEMORY.md came along");
    assert!(!new_ws.join("BOOTSTRAP.md").exists(), "not provisioned afresh");
    assert!(
        data.join("agents/bob/previous-sessions/main/agent/openclaw-agent.sqlite").exists(),
        "its sessions on main are kept (OpenClaw binds them to main's agent)"
    );
    assert!(!old_ws.exists(), "nothing of bob is left on main");
    assert!(!data.join("agents/bob/restored.json").exists());
    let chat = w.fleet(&["chat", "bob", "where are you?"]);
    assert_eq!(chat.code, 0, "{}", chat.all());
    w.assert_converged();
}

/// An OpenClaw-like process (the toolchain's Node) started in its own session, working in `dir`
/// (as a gateway started by hand would).
fn stray_in(dir: &std::path::Path) -> std::process::Child {
    let node = std::fs::read_dir(crate::support::shared_cache().join("fleet/node"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("bin/node"))
        .find(|p| p.is_file())
        .expect("the toolchain's Node in the cache");
    in_own_session(std::process::Command::new(node).args(["-e", "setTimeout(() => {}, 600000)"]), dir)
}

/// `cmd` started in its own session, working in `dir`.
fn in_own_session(cmd: &mut std::process::Command, dir: &std::path::Path) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(dir).unwrap();
    let c = cmd.current_dir(dir).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    // SAFETY: setsid(2) in the child before exec; touches no memory of the parent.
    unsafe {
        c.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    c.spawn().unwrap()
}

fn alive(child: &mut std::process::Child) -> bool {
    child.try_wait().unwrap().is_none()
}

/// gc: a process started by hand in the fleet's data dir, a key-file entry with no agent, an agent
/// added to the gateway by hand (and the workspace OpenClaw made for it) are found, destroyed and
/// verified gone; another fleet's process is left alone; the fleet itself stays converged.
#[test]
fn gc_finds_and_removes_what_fleet_forgot_and_leaves_another_fleets_things_alone() {
    let w = World::quickstart();
    w.fleet(&["apply"]).ok();
    let data = w.data_dir(FLEET);
    let dry: Value = serde_json::from_str(&w.fleet(&["gc", "--dry-run", "--json"]).ok().stdout).unwrap();
    assert_eq!(dry["orphans"], serde_json::json!([]), "a converged fleet has nothing to collect: {dry}");

    let mut ours = stray_in(&data.join("gateways/main/home"));
    let mut theirs = stray_in(&w.xdg_data().join("fleet/other/gateways/main/home"));
    // An operator's program sitting in the gateway's home, its OLDPWD in the data dir: there, not fleet's.
    let home = data.join("gateways/main/home");
    let mut sitting = in_own_session(std::process::Command::new("sleep").arg("600").env("OLDPWD", &data), &home);
    let keys_path = data.join("litellm/keys.json");
    let mut keys: Value = serde_json::from_str(&std::fs::read_to_string(&keys_path).unwrap()).unwrap();
    let ghost = fleet::litellm::keys::mint_raw(fleet::litellm::keys::KEY_PREFIX);
    keys["keys"].as_array_mut().unwrap().push(serde_json::json!({
        "hash": fleet::litellm::keys::hash_key(ghost.expose()), "alias": "fleet-ghost",
        "models": ["demo-small"], "metadata": {}
    }));
    std::fs::write(&keys_path, serde_json::to_string(&keys).unwrap()).unwrap();
    let proxy = crate::proxy::Proxy::of(&w);
    assert_eq!(proxy.chat(ghost.expose(), "demo-small").0, 200, "the hand-made key works before gc");
    let text = w.read("fleet.kdl");
    let port: u16 = text
        .split("gateway \"main\" host=\"local\" port=")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let gref = fleet::openclaw::client::GatewayRef {
        name: "main".into(),
        url: format!("ws://127.0.0.1:{port}"),
        token_file: data.join("gateways/main/token"),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = gref.connect().await.unwrap();
        c.create_agent("byhand", &data.join("gateways/main/home/workspaces/byhand")).await.unwrap();
        // The gateway reloads its config after agents.create: the agent exists once it is listed.
        let t0 = Instant::now();
        loop {
            let listed = match gref.connect().await {
                Ok(c) => c.agent_ids().await.unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            if listed.iter().any(|a| a == "byhand") || t0.elapsed() > Duration::from_secs(90) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });

    let dry: Value = serde_json::from_str(&w.fleet(&["gc", "--dry-run", "--json"]).ok().stdout).unwrap();
    let mut kinds: Vec<String> =
        dry["orphans"].as_array().unwrap().iter().map(|o| format!("{} {}", o["kind"], o)).collect();
    kinds.push(format!("notes: {}", dry["notes"]));
    let has = |k: &str, field: &str, v: &str| {
        dry["orphans"].as_array().unwrap().iter().any(|o| o["kind"] == k && o[field].as_str() == Some(v))
    };
    assert!(
        dry["orphans"].as_array().unwrap().iter().any(|o| o["kind"] == "process" && o["pid"] == ours.id()),
        "{kinds:?}"
    );
    assert!(has("key", "alias", "fleet-ghost"), "{kinds:?}");
    assert!(has("gateway_agent", "agent", "byhand"), "{kinds:?}");
    assert!(!has("gateway_agent", "agent", "main"), "OpenClaw's own main agent is never an orphan");
    assert!(
        !dry["orphans"].as_array().unwrap().iter().any(|o| o["kind"] == "process" && o["pid"] == theirs.id()),
        "another fleet's process is not ours: {kinds:?}"
    );
    let found = dry["orphans"].as_array().unwrap().iter().find(|o| o["kind"] == "process" && o["pid"] == ours.id());
    assert!(found.is_some_and(|o| o["why"].as_str().is_some_and(|w| w.contains("OpenClaw"))), "gc says why: {kinds:?}");
    assert!(
        !dry["orphans"].as_array().unwrap().iter().any(|o| o["kind"] == "process" && o["pid"] == sitting.id()),
        "a program merely sitting in the data dir is not the fleet's: {kinds:?}"
    );
    assert!(alive(&mut ours), "a dry run touches nothing");

    let r = w.fleet(&["gc"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("a second inventory finds no orphan"), "{}", r.stdout);
    let t0 = Instant::now();
    while alive(&mut ours) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(&mut ours), "the stray process was stopped");
    assert!(alive(&mut theirs), "another fleet's process is left alone");
    assert!(alive(&mut sitting), "the program sitting in the data dir is left alone");
    assert_eq!(proxy.chat(ghost.expose(), "demo-small").0, 401, "the hand-made key is revoked");
    let listed = rt.block_on(async { gref.connect().await.unwrap().agent_ids().await.unwrap() });
    assert!(!listed.contains(&"byhand".to_string()) && listed.contains(&"alice".to_string()), "{listed:?}");
    assert!(!data.join("gateways/main/home/workspaces/byhand").exists(), "its workspace was archived");
    assert_eq!(w.fleet(&["plan", "--detailed-exitcode"]).code, 0, "the fleet itself is untouched");
    let dry: Value = serde_json::from_str(&w.fleet(&["gc", "--dry-run", "--json"]).ok().stdout).unwrap();
    assert_eq!(dry["orphans"], serde_json::json!([]));
    // Not even destroy, which stops whatever of the fleet's still works in a gateway's home.
    w.fleet(&["destroy"]).ok();
    assert!(alive(&mut sitting), "destroy stopped a program that merely sat in the gateway's home");
    for c in [&mut theirs, &mut sitting] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// `moved from="agent.bob" to="agent.robin"`: bob is renamed — his workspace (with a hand-edited
/// USER.md) becomes robin's, a new key for robin, bob's refused; the block can stay in the file.
#[test]
fn a_moved_block_renames_an_agent_and_keeps_its_workspace() {
    let w = World::quickstart();
    w.fleet(&["apply"]).ok();
    let data = w.data_dir(FLEET);
    let user_md = "# USER\nWritten while he was bob: rename-marker-90ab\n";
    std::fs::write(data.join("gateways/main/home/workspaces/bob/USER.md"), user_md).unwrap();
    let bob_key = crate::support::env_key(&data.join("agents/bob/env"));
    w.edit("fleet.kdl", "agent \"bob\"", "moved from=\"agent.bob\" to=\"agent.robin\"\nagent \"robin\"");
    let plan = w.fleet(&["plan"]).ok();
    assert!(
        plan.stdout.contains("- agent.bob") && plan.stdout.contains("+ agent.robin  (moved from agent.bob"),
        "{}",
        plan.stdout
    );
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let ws = data.join("gateways/main/home/workspaces/robin");
    assert_eq!(std::fs::read_to_string(ws.join("USER.md")).unwrap(), user_md, "bob's USER.md is robin's");
    assert!(archives(&w).is_empty(), "the archive bob's removal made went to robin: {:?}", archives(&w));
    let proxy = crate::proxy::Proxy::of(&w);
    assert_eq!(proxy.chat(&bob_key, "demo-small").0, 401, "bob's key is revoked");
    let robin_key = crate::support::env_key(&data.join("agents/robin/env"));
    assert_eq!(proxy.chat(&robin_key, "demo-small").0, 200);
    let chat = w.fleet(&["chat", "robin", "who are you?"]);
    assert_eq!(chat.code, 0, "{}", chat.all());
    assert_eq!(w.fleet(&["plan", "--detailed-exitcode"]).code, 0, "the moved block stays; nothing to do");
}

/// Removing most of a gateway's agents in one apply: their providers leave the gateway's config in
/// parts (one write dropping them all shrinks the config past OpenClaw's "size-drop" guard, which
/// refused it — found by `fleet bench removal`), every one is archived, and the plan is empty after.
#[test]
fn removing_most_of_a_gateways_agents_in_one_apply_converges() {
    let w = World::new();
    let (proxy, gw) = (crate::support::free_port(), crate::support::free_port());
    let file = |n: usize| {
        let mut s = format!(
            "fleet \"many\" {{ parallelism 8; }}\nlitellm port={proxy}\n\
             provider \"demo\" type=\"mock\" {{ model \"demo-small\" response=\"Hello.\"; }}\n\
             gateway \"main\" port={gw}\n"
        );
        for i in 0..n {
            s.push_str(&format!("agent \"a{i:02}\" model=\"demo-small\"\n"));
        }
        s
    };
    w.write("fleet.kdl", &file(16));
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{}", r.all());
    w.write("fleet.kdl", &file(2));
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{}{}", r.failures(), r.all());
    let archived = std::fs::read_dir(w.data_dir("many").join("archive")).unwrap().count();
    assert_eq!(archived, 14, "every removed agent is archived");
    let r = w.fleet(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = w.fleet(&["chat", "a01", "hi"]);
    assert_eq!(r.stdout.trim(), "Hello.", "{}", r.all());
    // Destroy takes the gateway too: it is stopped first and its agents leave its config on disk
    // (no agents.delete each), archived all the same.
    let r = w.fleet(&["destroy"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("gateway main goes in this run too: stopping it first"), "{}", r.stdout);
    assert!(r.stdout.contains("a01 taken out of"), "{}", r.stdout);
    let archived = std::fs::read_dir(w.data_dir("many").join("archive")).unwrap().count();
    assert_eq!(archived, 16, "the two left were archived by destroy too");
}
