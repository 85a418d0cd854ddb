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
    let t0 = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let t0 = Instant::now();
    let r = w.fleet(&["destroy"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("Destroy complete"), "{}", r.stdout);
    assert!(t0.elapsed() < Duration::from_secs(60), "no 30 s waits on a dead gateway: {:?}", t0.elapsed());
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

/// A gateway that holds its port but does not answer (SIGSTOPped): fleet cannot judge it gone, so
/// the removal fails naming it; `fleet state forget` is the hand repair, and then destroy finishes.
#[test]
fn destroy_fails_naming_a_gateway_it_cannot_judge_and_state_forget_repairs() {
    let w = World::quickstart();
    w.fleet(&["apply"]).ok();
    let pid = gateway_pid(&w);
    // SAFETY: kill(2) on the gateway's process group, started by this test's apply.
    unsafe { libc::kill(-pid, libc::SIGSTOP) };
    let r = w.fleet(&["destroy"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let all = r.all();
    assert!(all.contains("agent.alice") && all.contains("gateway main"), "{all}");
    assert!(all.contains("fleet state forget agent.alice"), "the hand repair is named: {all}");
    assert!(all.contains("Destroy failed") && all.contains("destroy again"), "{all}");
    for a in ["alice", "bob"] {
        let f = w.fleet(&["state", "forget", &format!("agent.{a}")]).ok();
        assert!(f.stdout.contains(&format!("forgot agent.{a}")), "{}", f.stdout);
    }
    let r = w.fleet(&["state", "forget", "agent.nobody"]);
    assert_eq!(r.code, 1, "{}", r.all());
    // SAFETY: as above: let it go on, so destroy can stop it.
    unsafe { libc::kill(-pid, libc::SIGCONT) };
    let r = w.fleet(&["destroy"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(keys_in_file(&w), 0);
}
