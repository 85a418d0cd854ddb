//! `fleet bench trace`: the trace store and its ingest. Ingest over HTTP — the daemon's own
//! server, in this process, on a fresh data dir — from concurrent senders posting batches, every
//! acknowledged event counted back from the files afterwards; then reads of the newest page of
//! one agent out of a large store spread over many hourly buckets.

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use miette::{miette, IntoDiagnostic};
use serde_json::{json, Value};

use super::kit::{ms, pct};
use crate::cli::loaded::runtime;
use crate::layout::Layout;
use crate::trace::bucket::HOUR_MS;
use crate::trace::envelope::Envelope;
use crate::trace::query::Query;
use crate::trace::store::{self, Item, Writer};

pub struct TraceBench {
    pub events: usize,
    pub senders: usize,
    pub batch: usize,
    pub stored: usize,
    pub hours: usize,
}

fn event(id: String, agent: &str, ms_at: i64, i: usize) -> Value {
    let kinds = ["llm_call", "tool_call", "tool_result", "message_out"];
    json!({"v": 1, "id": id, "trace_id": format!("run-{}", i / 8), "parent_id": format!("oc:run-{}:in", i / 8),
           "created_at": crate::clock::format_rfc3339_ms(ms_at), "agent_name": agent, "kind": kinds[i % 4],
           "channel_id": "webchat", "thread_id": format!("agent:{agent}:main"), "backend_name": "openclaw",
           "model": "demo-small", "duration_ms": 120, "tokens_in": 250, "tokens_out": 40, "cost_usd": 0.0004,
           "error": null, "payload": {"tool": "read", "tool_call_id": format!("call-{i}"),
           "args": {"path": "MEMORY.md"}, "text": "a reply of ordinary length, about one sentence or two"}})
}

pub fn run(b: TraceBench) -> miette::Result<ExitCode> {
    println!(
        "fleet bench trace --events {} --senders {} --batch {} --stored {} --hours {}\n",
        b.events, b.senders, b.batch, b.stored, b.hours
    );
    let dir = tempfile::tempdir().into_diagnostic()?;
    let layout = Layout::resolve("bench", None, Some(&dir.path().join("data")));
    let rt = runtime()?;
    rt.block_on(ingest(&b, &layout))?;
    read(&b, dir.path())?;
    Ok(ExitCode::SUCCESS)
}

async fn ingest(b: &TraceBench, layout: &Layout) -> miette::Result<()> {
    let token =
        crate::litellm::resources::ensure_secret_file(&layout.serve_token(), "fleet-admin-")?.expose().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.into_diagnostic()?;
    let port = listener.local_addr().into_diagnostic()?.port();
    let cfg = crate::serve::Config {
        fleet: "bench".into(),
        data_dir: layout.data_dir.clone(),
        reply_timeout: Duration::from_secs(60),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve::run(listener, cfg, async {
        let _ = stopped.await;
    }));
    let url = format!("http://127.0.0.1:{port}/v1/trace");
    let http = reqwest::Client::new();
    // 8 agents' events (stored apart, as the daemon keeps them), all in the current hour.
    let agents: Vec<String> = (0..8).map(|i| format!("agent-{i}")).collect();
    let now = crate::clock::now_ms();
    let per_sender = b.events / b.senders;
    let latencies: Arc<Mutex<Vec<Duration>>> = Default::default();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..b.senders {
        let (http, url, token, agents, latencies) =
            (http.clone(), url.clone(), token.clone(), agents.clone(), latencies.clone());
        let batch = b.batch;
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            let mut n = 0;
            while sent < per_sender {
                let agent = &agents[(s + n) % agents.len()];
                let events: Vec<Value> = (0..batch)
                    .map(|i| event(format!("s{s}-b{n}-e{i}"), agent, now + (sent + i) as i64 % 1000, sent + i))
                    .collect();
                let body = serde_json::to_vec(&json!({"events": events})).unwrap_or_default();
                let t0 = Instant::now();
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => return Err(format!("HTTP {}: {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => return Err(e.to_string()),
                }
                latencies.lock().expect("latencies").push(t0.elapsed());
                sent += batch;
                n += 1;
            }
            Ok(sent)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.into_diagnostic()?.map_err(|e| miette!("a sender failed: {e}"))?;
    }
    let took = t.elapsed();
    let _ = stop.send(());
    let _ = server.await;
    let mut lat = latencies.lock().expect("latencies").clone();
    // Every acknowledged event is on disk: counted from the files, not from the answers.
    let mut on_disk = 0usize;
    for a in &agents {
        let q = Query { limit: usize::MAX, ..Query::default() };
        on_disk += store::read(&layout.other_trace(Some(a)), &q).into_diagnostic()?.len();
    }
    println!("ingest over HTTP: {total} events, {} senders × batches of {}", b.senders, b.batch);
    println!("  throughput: {:.0} events/s ({} total)", total as f64 / took.as_secs_f64(), ms(took));
    println!(
        "  per-event ingest latency (its batch's POST, acknowledged = committed): p50 {}  p99 {}",
        ms(pct(&mut lat, 0.5)),
        ms(pct(&mut lat, 0.99))
    );
    println!(
        "  on disk afterwards: {on_disk} of {total} acknowledged{}",
        if on_disk == total { "" } else { "  ← LOST" }
    );
    if on_disk != total {
        return Err(miette!("{} acknowledged events are not on disk", total - on_disk));
    }
    Ok(())
}

fn read(b: &TraceBench, root: &Path) -> miette::Result<()> {
    let dir = root.join("read-store");
    // Hours that are sealed (two and more hours back) and the current ones, as a live store has.
    let now = crate::clock::now_ms();
    let first_hour = (now / HOUR_MS - b.hours as i64 + 1) * HOUR_MS;
    let per_hour = b.stored / b.hours;
    let t = Instant::now();
    let mut w = Writer::new(Box::new(move || first_hour));
    for h in 0..b.hours {
        let items: Vec<Item> = (0..per_hour)
            .map(|i| {
                let at = first_hour + h as i64 * HOUR_MS + (i as i64 * HOUR_MS / per_hour as i64);
                let e: Envelope =
                    serde_json::from_value(event(format!("h{h}-e{i}"), "alice", at, i)).expect("envelope");
                Item { dir: dir.clone(), ms: at, event: e }
            })
            .collect();
        w.write(&items).into_diagnostic()?;
    }
    drop(w);
    let mut sealer = Writer::new(Box::new(crate::clock::now_ms));
    let sealed = sealer.seal_due(&dir).into_diagnostic()?.len();
    println!(
        "\nread: {} events of one agent across {} hourly buckets ({} sealed), written in {}",
        per_hour * b.hours,
        b.hours,
        sealed,
        ms(t.elapsed())
    );
    let mut times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let page = store::read(&dir, &Query { limit: 100, ..Query::default() }).into_diagnostic()?;
        times.push(t.elapsed());
        if page.len() != 100 {
            return Err(miette!("read {} events, not 100", page.len()));
        }
    }
    println!(
        "  the newest 100 (what GET …/trace and fleet trace do): median {}  max {}",
        ms(pct(&mut times, 0.5)),
        ms(pct(&mut times, 1.0))
    );
    let mut times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let q = Query {
            limit: 100,
            kinds: vec!["tool_call".into()],
            until: Some(first_hour + 24 * HOUR_MS),
            ..Query::default()
        };
        store::read(&dir, &q).into_diagnostic()?;
        times.push(t.elapsed());
    }
    println!("  100 tool_calls from a day back (filter, sealed buckets): median {}", ms(pct(&mut times, 0.5)));
    Ok(())
}
