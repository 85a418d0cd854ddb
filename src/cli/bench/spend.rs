//! `fleet bench spend`: what the auth module's budget check adds to a request at the real LiteLLM
//! proxy. One proxy, two agents on the same priced mock model — one without a budget (the anchor),
//! one with a budget it never reaches and a ledger holding a month of calls — requests alternated
//! between them, so both see the same proxy, machine and moment.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use miette::{miette, IntoDiagnostic};

use super::kit::{apply_in_process, free_port, ms, pct};
use crate::cli::loaded::runtime;
use crate::engine::Goal;
use crate::layout::Layout;

pub struct SpendBench {
    pub requests: usize,
    /// Ledger lines written before the run (a month of the budgeted agent's calls).
    pub history: usize,
}

fn fleet(port: u16) -> String {
    format!(
        "fleet \"bench-spend\"\nlitellm port={port}\n\
         provider \"demo\" type=\"mock\" {{ model \"priced\" input-cost=100 output-cost=150; }}\n\
         agent \"plain\" model=\"priced\"\n\
         agent \"budgeted\" model=\"priced\" {{ budget usd=1000000 per=\"month\"; }}\n"
    )
}

pub fn run(b: SpendBench) -> miette::Result<ExitCode> {
    let dir = tempfile::tempdir().into_diagnostic()?;
    let file = dir.path().join("fleet.kdl");
    let port = free_port()?;
    std::fs::write(&file, fleet(port)).into_diagnostic()?;
    let layout = Layout::resolve("bench-spend", None, Some(&dir.path().join("data")));
    // A month of history in the ledger: the auth module reads it once, then only what is new.
    let now = crate::clock::now_ms() as f64 / 1000.0;
    let mut ledger = String::new();
    for i in 0..b.history {
        let at = now - (i as f64 * 2_592_000.0 / b.history.max(1) as f64);
        ledger.push_str(&format!("{{\"id\":\"h{i}\",\"agent\":\"budgeted\",\"usd\":0.004,\"at\":{at:.3}}}\n"));
    }
    std::fs::create_dir_all(layout.litellm_dir()).into_diagnostic()?;
    std::fs::write(layout.spend_ledger(), ledger).into_diagnostic()?;
    let rt = runtime()?;
    let result = (|| -> miette::Result<()> {
        apply_in_process(&rt, &file, &layout, Goal::Converge)?;
        let key =
            |a: &str| crate::litellm::keys::read_env_key(&layout.agent_env(a)).ok_or_else(|| miette!("no key for {a}"));
        let (plain, budgeted) = (key("plain")?, key("budgeted")?);
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
        let call = |k: &str| -> miette::Result<Duration> {
            let t = Instant::now();
            let r = rt
                .block_on(
                    client
                        .post(&url)
                        .bearer_auth(k)
                        .json(&serde_json::json!({"model": "priced", "messages": [{"role": "user", "content": "hi"}]}))
                        .send(),
                )
                .into_diagnostic()?;
            let status = r.status();
            rt.block_on(r.bytes()).into_diagnostic()?;
            if !status.is_success() {
                return Err(miette!("the proxy answered {status}"));
            }
            Ok(t.elapsed())
        };
        // Warm up both paths (the first budget check reads the history).
        for _ in 0..20 {
            call(plain.expose())?;
            call(budgeted.expose())?;
        }
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for _ in 0..b.requests {
            without.push(call(plain.expose())?);
            with.push(call(budgeted.expose())?);
        }
        let (p50a, p99a) = (pct(&mut without, 0.5), pct(&mut without, 0.99));
        let (p50b, p99b) = (pct(&mut with, 0.5), pct(&mut with, 0.99));
        let added = |a: Duration, b: Duration| (b.as_secs_f64() - a.as_secs_f64()) * 1000.0;
        println!("fleet bench spend --requests {} --history {}\n", b.requests, b.history);
        println!("| agent key | p50 | p99 |");
        println!("|---|---|---|");
        println!("| no budget (anchor) | {} | {} |", ms(p50a), ms(p99a));
        println!("| budget (month window, {} ledger lines) | {} | {} |", b.history, ms(p50b), ms(p99b));
        println!("| added by the budget check | {:+.2} ms | {:+.2} ms |", added(p50a, p50b), added(p99a, p99b));
        println!(
            "\n{} requests each, alternated, sequential, to one proxy; every call priced and recorded.",
            b.requests
        );
        Ok(())
    })();
    let cleanup = apply_in_process(&rt, &file, &layout, Goal::Destroy);
    result?;
    cleanup?;
    Ok(ExitCode::SUCCESS)
}
