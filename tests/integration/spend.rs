//! Per-agent spend control at the real LiteLLM proxy: budgets refused with 429 and a message a
//! person understands, spend that survives a kill -9 of the proxy, budgets changed live (same
//! pid), LiteLLM's own per-key rpm and tpm limiters, and the warning for a budget that could never
//! trigger.

use std::time::{Duration, Instant};

use crate::proxy::Proxy;
use crate::support::{env_key, free_port, sha256, World};

const FLEET: &str = "spend";

/// The mock model answers every call with 10 prompt and 20 completion tokens: at $100 and $150 per
/// million tokens a call costs $0.001 + $0.003 = $0.004. `alice` and `carol` are what goes in those
/// agents' blocks (a `budget`, `limits`); bob never has either.
fn fleet_file(port: u16, alice: &str, carol: &str) -> String {
    format!(
        "fleet \"{FLEET}\"\nlitellm port={port}\n\
         provider \"demo\" type=\"mock\" {{\n    model \"priced\" response=\"Priced.\" input-cost=100 output-cost=150\n    model \"free\"\n}}\n\
         agent \"alice\" model=\"priced\" {{ {alice} }}\n\
         agent \"bob\" model=\"priced\"\n\
         agent \"carol\" model=\"priced\" {{ {carol} }}\n"
    )
}

fn key(w: &World, agent: &str) -> String {
    env_key(&w.data_dir(FLEET).join(format!("agents/{agent}/env")))
}

/// The UTC date at `ms` (epoch milliseconds), as the budget message names a day window.
fn utc_day(ms: i64) -> String {
    fleet::clock::format_rfc3339(ms.div_euclid(1000))[..10].to_string()
}

/// A day budget's spend resets at 00:00 UTC: a run that crossed it would see alice's spend drop to
/// nothing half-way through. Started within `margin` of midnight, the test waits until just past it
/// (at most `margin`, on a few runs a day) so that it runs inside one day window.
fn clear_of_utc_midnight(margin: Duration) {
    const DAY_MS: i64 = 86_400_000;
    let to_midnight = DAY_MS - fleet::clock::now_ms().rem_euclid(DAY_MS);
    if to_midnight < margin.as_millis() as i64 {
        eprintln!("{to_midnight} ms to 00:00 UTC: waiting for the new day window before starting");
        std::thread::sleep(Duration::from_millis(to_midnight as u64 + 1_000));
    }
}

#[test]
fn a_budget_refuses_the_call_that_would_pass_it_survives_a_proxy_kill_and_changes_live() {
    clear_of_utc_midnight(Duration::from_secs(180));
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

    let before = fleet::clock::now_ms();
    let (status, body) = p.chat(&alice, "priced");
    let after = fleet::clock::now_ms();
    assert_eq!(status, 429, "$0.008 spent, the next call (≈$0.004) would pass $0.01: {body}");
    // The window is the UTC day the proxy checked the call in: the day at the moment before the
    // call or the one after it (they differ only when the call straddles midnight).
    let message = body["error"]["message"].as_str().unwrap_or_default();
    let want = |day: &str| {
        format!(
            "Out of budget: alice has spent $0.008 of $0.01 for {day}, and its next call (about $0.004, as its last) would pass it; resets at 00:00 UTC"
        )
    };
    let days = [utc_day(before), utc_day(after)];
    assert!(
        days.iter().any(|day| message == want(day)),
        "the refusal names the day window of the call ({}):\n  got:  {message}\n  want: {}",
        days.join(" or "),
        want(&days[0])
    );
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

/// One call as an attacker makes it: `call_id` as its `x-litellm-call-id`, `max_tokens` 20; returns
/// the status, the body and the price the proxy put on it (`x-litellm-response-cost`).
async fn priced_call(client: &reqwest::Client, url: &str, key: &str, call_id: &str) -> (u16, serde_json::Value, f64) {
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-litellm-call-id", call_id)
        .json(
            &serde_json::json!({"model": "priced", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("proxy reachable");
    let status = r.status().as_u16();
    let cost = r.headers().get("x-litellm-response-cost").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0.0);
    (status, r.json().await.unwrap_or_default(), cost)
}

/// A `priced_call`'s price when it passed; None when the budget refused it (any other answer fails).
fn passed((status, body, cost): &(u16, serde_json::Value, f64)) -> Option<f64> {
    match status {
        200 => Some(*cost),
        429 => {
            assert_eq!(body["error"]["type"], "budget_exceeded", "{body}");
            None
        }
        _ => panic!("{status} {body}"),
    }
}

/// The ledger's calls of `agent`: (lines, USD summed).
fn ledger_of(w: &World, agent: &str) -> (usize, f64) {
    let text = std::fs::read_to_string(w.data_dir(FLEET).join("litellm/spend.jsonl")).unwrap_or_default();
    let mine: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["agent"] == agent)
        .map(|l| l["usd"].as_f64().unwrap())
        .collect();
    (mine.len(), mine.iter().sum())
}

/// Issue 24: a caller's call id counted each call once, so 8 calls with one id all passed a budget
/// of 3; and nothing held parallel calls back. Now the ledger's id is fleet's and every call holds
/// what it may cost ($0.0043 here: its prompt at the input price, max_tokens at the output price)
/// before it runs. alice: 8 calls one after another, all with one call id; carol: 20 at once, one
/// call id. The budget, $0.013, fits 3 holds (3 calls of $0.004).
#[test]
fn a_reused_call_id_and_twenty_parallel_calls_stay_within_a_budget_of_three_calls() {
    clear_of_utc_midnight(Duration::from_secs(180));
    let w = World::new();
    let port = free_port();
    let budget = "budget usd=0.013 per=\"day\"";
    w.write("fleet.kdl", &fleet_file(port, budget, budget));
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let url = format!("http://127.0.0.1:{port}");
    let (alice, carol) = (key(&w, "alice"), key(&w, "carol"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let client = reqwest::Client::new();

    // One after another, one call id.
    let serial: Vec<f64> =
        (0..8).filter_map(|_| passed(&rt.block_on(priced_call(&client, &url, &alice, "same-id")))).collect();
    assert_eq!(serial.len(), 3, "3 calls of $0.004 fit $0.013, the 4th would pass it: {serial:?}");
    let (lines, usd) = ledger_of(&w, "alice");
    assert_eq!(lines, 3, "one ledger line per call, whatever the caller's id");
    assert!(
        (usd - serial.iter().sum::<f64>()).abs() < 1e-9,
        "the ledger sums to what the proxy priced: {usd} vs {serial:?}"
    );

    // Twenty at once, one call id.
    let answers = rt.block_on(async {
        let calls = (0..20).map(|_| priced_call(&client, &url, &carol, "same-id"));
        futures_util::future::join_all(calls).await
    });
    let wave: Vec<f64> = answers.iter().filter_map(passed).collect();
    assert!((1..=3).contains(&wave.len()), "at most 3 of 20 parallel calls pass a budget of 3: {}", wave.len());
    // What the wave's calls held is given back once they are priced: calls one after another pass
    // until the budget holds exactly 3 calls, never more.
    let after: Vec<f64> =
        (0..4).filter_map(|_| passed(&rt.block_on(priced_call(&client, &url, &carol, "same-id")))).collect();
    assert_eq!(wave.len() + after.len(), 3, "the wave's holds were given back: {wave:?} then {after:?}");
    let (lines, usd) = ledger_of(&w, "carol");
    let priced: f64 = wave.iter().chain(&after).sum();
    assert_eq!(lines, 3);
    assert!((usd - priced).abs() < 1e-9, "the ledger sums to what the proxy priced: {usd} vs {priced}");
    assert!(usd <= 0.013 + 1e-9, "within the budget: {usd}");
}

/// The status and the error message of a call refused by LiteLLM's per-key limiter (or "" when the call
/// was not refused).
fn refusal(r: &(u16, serde_json::Value)) -> (u16, String) {
    (r.0, if r.0 == 200 { String::new() } else { r.1["error"]["message"].as_str().unwrap_or_default().to_string() })
}

/// One applied fleet (one proxy start) for both of LiteLLM's per-key limiters: carol has `rpm=3`,
/// alice `tpm=20` (one mock call uses 30 tokens, so her first call takes her over), bob neither.
#[test]
fn rpm_and_tpm_limits_refuse_past_the_limit_pass_again_after_the_minute_and_spare_other_agents() {
    let w = World::new();
    let port = free_port();
    w.write("fleet.kdl", &fleet_file(port, "limits tpm=20", "limits rpm=3"));
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let p = Proxy { url: format!("http://127.0.0.1:{port}") };
    let (alice, bob, carol) = (key(&w, "alice"), key(&w, "bob"), key(&w, "carol"));

    // rpm: LiteLLM counts a request when it arrives, so the 4th of a minute is refused.
    let t0 = Instant::now();
    for n in 1..=3 {
        let (status, body) = p.chat(&carol, "priced");
        assert_eq!(status, 200, "carol's call {n} of 3 allowed a minute: {body}");
    }
    let (status, message) = refusal(&p.chat(&carol, "priced"));
    assert_eq!(status, 429, "carol's 4th call in a minute, rpm=3: {message}");
    assert!(message.contains("Limit type: requests"), "the refusal names the rpm limit: {message}");
    assert!(message.contains(&sha256(&carol)), "carol's own key is limited (by its hash): {message}");
    let (status, body) = p.chat(&bob, "priced");
    assert_eq!(status, 200, "bob has no limit: {body}");

    // tpm: LiteLLM checks a call's estimated tokens on arrival (the prompt's and a quarter of the
    // limit for the answer) and counts its real ones once answered: alice's first call fits, and its
    // 30 tokens take her over her 20; a later one in the same minute is refused.
    let (status, body) = p.chat(&alice, "priced");
    assert_eq!(status, 200, "alice's first call, no tokens counted yet: {body}");
    let t_alice = Instant::now();
    let deadline = Duration::from_secs(30);
    let mut last = (200, String::new());
    while t_alice.elapsed() < deadline && last.0 == 200 {
        std::thread::sleep(Duration::from_millis(200));
        last = refusal(&p.chat(&alice, "priced"));
    }
    let (status, message) = last;
    assert_eq!(
        status,
        429,
        "alice still let through {} s after her first 30 tokens (tpm=20): {message}",
        deadline.as_secs()
    );
    assert!(message.contains("Limit type: tokens"), "the refusal names the tpm limit: {message}");
    assert!(message.contains(&sha256(&alice)), "alice's own key is limited (by its hash): {message}");
    for n in 1..=3 {
        let (status, body) = p.chat(&bob, "priced");
        assert_eq!(status, 200, "bob has no limit (call {n} after alice's refusal): {body}");
    }

    // LiteLLM's windows are a minute: after it, both pass again.
    let (mut carol_passed, mut alice_passed) = (false, false);
    while t0.elapsed() < Duration::from_secs(150) && !(carol_passed && alice_passed) {
        std::thread::sleep(Duration::from_secs(5));
        carol_passed = carol_passed || p.chat(&carol, "priced").0 == 200;
        alice_passed = alice_passed || p.chat(&alice, "priced").0 == 200;
    }
    assert!(
        carol_passed && alice_passed,
        "still refused {} s after the limits' first calls: carol (rpm) {}, alice (tpm) {}",
        t0.elapsed().as_secs(),
        if carol_passed { "passed again" } else { "refused" },
        if alice_passed { "passed again" } else { "refused" }
    );
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
