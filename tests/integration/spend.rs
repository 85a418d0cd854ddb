//! Per-agent spend control at the real LiteLLM proxy: budgets refused with 429 and a message a
//! person understands, spend that survives a kill -9 of the proxy, budgets changed live (same
//! pid), LiteLLM's own per-key rpm limiter, and the warning for a budget that could never trigger.

use std::time::{Duration, Instant};

use crate::proxy::Proxy;
use crate::support::{env_key, free_port, World};

const FLEET: &str = "spend";

/// The mock model answers every call with 10 prompt and 20 completion tokens: at $100 and $150 per
/// million tokens a call costs $0.001 + $0.003 = $0.004.
fn fleet_file(port: u16, alice_budget: &str, carol_limits: &str) -> String {
    format!(
        "fleet \"{FLEET}\"\nlitellm port={port}\n\
         provider \"demo\" type=\"mock\" {{\n    model \"priced\" response=\"Priced.\" input-cost=100 output-cost=150\n    model \"free\"\n}}\n\
         agent \"alice\" model=\"priced\" {{ {alice_budget} }}\n\
         agent \"bob\" model=\"priced\"\n\
         agent \"carol\" model=\"priced\" {{ {carol_limits} }}\n"
    )
}

fn key(w: &World, agent: &str) -> String {
    env_key(&w.data_dir(FLEET).join(format!("agents/{agent}/env")))
}

/// Today's UTC date, as the budget message names a day window.
fn today() -> String {
    fleet::clock::format_rfc3339(fleet::clock::now_ms().div_euclid(1000))[..10].to_string()
}

#[test]
fn a_budget_refuses_the_call_that_would_pass_it_survives_a_proxy_kill_and_changes_live() {
    let w = World::new();
    let port = free_port();
    w.write("fleet.kdl", &fleet_file(port, "budget usd=0.01 per=\"day\"", ""));
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.stderr.contains("no price is known"), "the model is priced: {}", r.stderr);
    let p = Proxy { url: format!("http://127.0.0.1:{port}") };
    let (alice, bob) = (key(&w, "alice"), key(&w, "bob"));

    for n in 1..=2 {
        let (status, body) = p.chat(&alice, "priced");
        assert_eq!(status, 200, "call {n}: {body}");
    }
    // The ledger outlives the proxy: kill -9 it, apply starts it again, the spend is still there.
    let pid = w.proxy_pid(FLEET);
    // SAFETY: kill(2) on the proxy's process group, which this test's fleet started.
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("litellm.proxy"), "the killed proxy is started again: {}", r.stdout);
    let pid = w.proxy_pid(FLEET);

    let (status, body) = p.chat(&alice, "priced");
    assert_eq!(status, 429, "$0.008 spent, the next call (≈$0.004) would pass $0.01: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    let want = format!(
        "Out of budget: alice has spent $0.008 of $0.01 for {}, and its next call (about $0.004, as its last) would pass it; resets at 00:00 UTC",
        today()
    );
    assert_eq!(message, want, "{body}");
    assert_eq!(body["error"]["type"], "budget_exceeded", "{body}");
    for n in 1..=3 {
        assert_eq!(p.chat(&bob, "priced").0, 200, "bob has no budget (call {n})");
    }

    // Raised in the file: the key file changes, the next call passes, the proxy is not restarted.
    w.write("fleet.kdl", &fleet_file(port, "budget usd=0.013 per=\"day\"", ""));
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("~ key.alice"), "{}", r.stdout);
    assert_eq!(p.chat(&alice, "priced").0, 200, "$0.008 + $0.004 fits $0.013");
    assert_eq!(w.proxy_pid(FLEET), pid, "a budget change needs no restart");
    let (status, body) = p.chat(&alice, "priced");
    assert_eq!(status, 429, "$0.012 spent of $0.013: {body}");

    // Removing the budget removes the limit.
    w.write("fleet.kdl", &fleet_file(port, "", ""));
    assert_eq!(w.fleet(&["apply"]).code, 0);
    assert_eq!(p.chat(&alice, "priced").0, 200, "no budget, no refusal");
    assert_eq!(w.proxy_pid(FLEET), pid);
    let plan = w.fleet(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.all());

    // The ledger: one line per priced call (2 + 1 + 1 + bob's 3), no raw key in it.
    let ledger = std::fs::read_to_string(w.data_dir(FLEET).join("litellm/spend.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = ledger.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |a: &str| lines.iter().filter(|l| l["agent"] == a).count();
    assert_eq!((of("alice"), of("bob")), (4, 3), "{ledger}");
    assert!(!ledger.contains("sk-"), "no key in the ledger");
}

#[test]
fn an_rpm_limit_refuses_the_fourth_call_in_a_minute_and_lets_it_through_after() {
    let w = World::new();
    let port = free_port();
    w.write("fleet.kdl", &fleet_file(port, "", "limits rpm=3"));
    assert_eq!(w.fleet(&["apply"]).code, 0);
    let p = Proxy { url: format!("http://127.0.0.1:{port}") };
    let carol = key(&w, "carol");
    let t0 = Instant::now();
    for n in 1..=3 {
        assert_eq!(p.chat(&carol, "priced").0, 200, "call {n}");
    }
    let (status, body) = p.chat(&carol, "priced");
    assert_eq!(status, 429, "{body}");
    assert_eq!(p.chat(&key(&w, "bob"), "priced").0, 200, "bob has no limit");
    // LiteLLM's window is a minute: after it, calls pass again.
    let mut passed = false;
    while t0.elapsed() < Duration::from_secs(130) && !passed {
        std::thread::sleep(Duration::from_secs(5));
        passed = p.chat(&carol, "priced").0 == 200;
    }
    assert!(passed, "carol's calls still refused {} s after her first", t0.elapsed().as_secs());
}

#[test]
fn a_budget_on_a_model_without_a_price_is_a_plan_warning() {
    let w = World::new();
    let port = free_port();
    let text = fleet_file(port, "budget usd=1 per=\"week\"", "")
        .replace("agent \"alice\" model=\"priced\"", "agent \"alice\" model=\"free\"");
    w.write("fleet.kdl", &text);
    let r = w.fleet(&["plan"]);
    assert_eq!(r.code, 0, "a warning refuses nothing: {}", r.all());
    assert!(
        r.stderr.contains("no price is known for model \"free\", so the budget of alice can never trigger"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("model \"free\" input-cost=0.15"), "the fix: {}", r.stderr);
    assert!(r.stdout.contains("+ key.alice"), "{}", r.stdout);
}

#[test]
fn a_chat_refused_for_budget_ends_in_a_system_message_and_a_budget_error_in_the_trace() {
    use crate::serve::Daemon;
    let w = World::quickstart();
    // OpenClaw's prompts are thousands of tokens: bob's wake at apply (the first call of his window,
    // always let through) costs far more than his $0.006, so his next call is refused.
    w.edit(
        "fleet.kdl",
        "response=\"Hello from the demo model.\"",
        "response=\"Hello from the demo model.\" input-cost=100 output-cost=150",
    );
    w.edit("fleet.kdl", "soul \"You are Bob.", "budget usd=0.006 per=\"month\"\n    soul \"You are Bob.");
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let d = Daemon::of(&w);
    let (s, reply) = d.post("bob", r#"{"text":"one more"}"#, Some(120));
    assert_eq!(s, 200, "{reply}");
    assert_eq!(reply["role"], "system", "{reply}");
    let text = reply["text"].as_str().unwrap_or_default();
    // OpenClaw calls it a billing error (and does not retry it); the daemon says fleet's words.
    assert!(text.starts_with("bob's run failed: Out of budget: bob has spent $"), "{reply}");
    assert!(text.contains(" of $0.006 for "), "{reply}");
    // The usage endpoint shows the standing.
    let (s, v) = d.request("GET", "/v1/agents/bob/usage", Some(&d.admin), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["budget"]["budget_usd"].as_f64(), v["budget"]["refused"].as_bool()),
        (Some(0.006), Some(true)),
        "{v}"
    );
    assert!(v["budget"]["spent_usd"].as_f64().unwrap() > 0.006, "{v}");
    // The status page shows bob's spend bar, full and red; alice has none.
    let (s, page) = d.request("GET", "/", Some(&d.admin), None);
    assert_eq!(s, 200);
    let page = page.as_str().unwrap_or_default().to_string();
    assert_eq!(page.matches("data-budget").count(), 1, "one budgeted agent");
    assert!(page.contains("<div class=\"budget over\" data-budget"), "bob's bar shows the refusal");
    assert!(page.contains(" of $0.006 · "), "the figures under the bar");
    // alice has no budget: answered.
    let (s, reply) = d.post("alice", r#"{"text":"hi"}"#, Some(120));
    assert_eq!((s, reply["role"].as_str()), (200, Some("agent")), "{reply}");
    // The proxy's callback reported the refusal as an error event of kind budget.
    let t0 = Instant::now();
    let mut found = Vec::new();
    while t0.elapsed() < Duration::from_secs(30) && found.is_empty() {
        found = crate::trace::trace_of(&d, "bob", "&kind=error");
        found.retain(|e| e["payload"]["kind"] == "budget");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!found.is_empty(), "no budget error event in bob's trace");
    assert!(found[0]["payload"]["message"].as_str().unwrap_or_default().contains("bob has spent"), "{found:?}");
}
