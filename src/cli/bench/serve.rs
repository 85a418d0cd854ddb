//! `fleet bench serve`: the daemon under load, on a real gateway and the mock model — routing
//! overhead against `chat.send` straight to the gateway (same run), SSE fan-out, concurrent POSTs
//! (none lost, none twice), and the daemon's resident memory.

use std::collections::{BTreeMap, HashSet};

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use miette::{miette, IntoDiagnostic};
use serde_json::{json, Value};

use super::kit::{apply_in_process, free_port, gateway_fleet, ms, pct};
use crate::cli::loaded::runtime;
use crate::engine::Goal;
use crate::layout::Layout;

pub struct ServeBench {
    pub agents: usize,
    pub messages: usize,
    pub clients: usize,
    pub posts: usize,
    pub concurrency: usize,
}

/// `gateway_fleet` with the daemon declared.
fn fleet(n: usize, proxy: u16, gw: u16, serve: u16) -> String {
    format!("{}serve {{ listen \"127.0.0.1:{serve}\"; reply-timeout \"10m\" }}\n", gateway_fleet(n, proxy, gw))
}

pub fn run(b: ServeBench) -> miette::Result<ExitCode> {
    let dir = tempfile::tempdir().into_diagnostic()?;
    let file = dir.path().join("fleet.kdl");
    let (pp, gp, sp) = (free_port()?, free_port()?, free_port()?);
    std::fs::write(&file, fleet(b.agents, pp, gp, sp)).into_diagnostic()?;
    let layout = Layout::resolve("bench", None, Some(&dir.path().join("data")));
    let rt = runtime()?;
    let t = Instant::now();
    apply_in_process(&rt, &file, &layout, Goal::Converge)?;
    println!(
        "fleet bench serve --agents {} --messages {} --clients {} --posts {} --concurrency {}\n",
        b.agents, b.messages, b.clients, b.posts, b.concurrency
    );
    println!("cold apply of 1 gateway + {} agents + the daemon: {}\n", b.agents, ms(t.elapsed()));
    let result = rt.block_on(measure(&b, &layout, sp));
    let cleanup = apply_in_process(&rt, &file, &layout, Goal::Destroy);
    result?;
    cleanup?;
    Ok(ExitCode::SUCCESS)
}

async fn measure(b: &ServeBench, layout: &Layout, port: u16) -> miette::Result<()> {
    let url = format!("http://127.0.0.1:{port}");
    let token = std::fs::read_to_string(layout.serve_token()).into_diagnostic()?.trim().to_string();
    let http = reqwest::Client::new();
    let (h, u, tk) = (http.clone(), url.clone(), token.clone());
    let post = move |agent: String, text: String, wait: bool| {
        let (http, url, token) = (h.clone(), u.clone(), tk.clone());
        async move {
            let q = if wait { "?wait=120" } else { "" };
            let r = http
                .post(format!("{url}/v1/agents/{agent}/messages{q}"))
                .bearer_auth(&token)
                .json(&json!({"text": text}))
                .send()
                .await
                .into_diagnostic()?;
            let status = r.status().as_u16();
            let v: Value = r.json().await.into_diagnostic()?;
            Ok::<_, miette::Report>((status, v))
        }
    };

    // 1. Routing overhead: the same messages through the daemon and straight through chat.send,
    // interleaved, to one agent's main session.
    let gref = crate::openclaw::client::GatewayRef {
        name: "main".into(),
        url: format!("ws://127.0.0.1:{}", gateway_port(layout)?),
        token_file: layout.gateway_token("main"),
    };
    let gw = gref.connect().await?;
    let (mut via, mut direct) = (Vec::new(), Vec::new());
    for i in 0..b.messages {
        let t = Instant::now();
        let (s, v) = post("agent-000".into(), format!("overhead {i}"), true).await?;
        if s != 200 || v["role"] != "agent" {
            return Err(miette!("routing: {s} {v}"));
        }
        via.push(t.elapsed());
        let t = Instant::now();
        gw.chat("agent-000", &format!("direct {i}"), Duration::from_secs(120)).await?;
        direct.push(t.elapsed());
    }
    let (v50, v99, d50, d99) = (pct(&mut via, 0.5), pct(&mut via, 0.99), pct(&mut direct, 0.5), pct(&mut direct, 0.99));
    println!("| measurement | p50 | p99 |");
    println!("|---|---|---|");
    println!("| {} messages through the daemon (`POST …?wait`) | {} | {} |", b.messages, ms(v50), ms(v99));
    println!("| the same straight through the gateway (`chat.send`, one connection) | {} | {} |", ms(d50), ms(d99));
    println!(
        "| daemon overhead (difference) | {:+.1} ms | {:+.1} ms |",
        v50.as_secs_f64() * 1e3 - d50.as_secs_f64() * 1e3,
        v99.as_secs_f64() * 1e3 - d99.as_secs_f64() * 1e3
    );

    // 2. SSE fan-out: `clients` streams; every one must see every event of the burst below.
    let received: Arc<Mutex<Vec<BTreeMap<String, Instant>>>> = Arc::new(Mutex::new(vec![BTreeMap::new(); b.clients]));
    let mut streams = Vec::new();
    for c in 0..b.clients {
        let r = http.get(format!("{url}/v1/events")).bearer_auth(&token).send().await.into_diagnostic()?;
        let received = received.clone();
        streams.push(tokio::spawn(async move {
            let mut body = r.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(at) = buf.find("\n\n") {
                    let ev: String = buf.drain(..at + 2).collect();
                    if let Some(data) = ev.lines().find_map(|l| l.strip_prefix("data:")) {
                        if let Ok(m) = serde_json::from_str::<Value>(data.trim()) {
                            let id = m["id"].as_str().unwrap_or_default().to_string();
                            received.lock().expect("received")[c].insert(id, Instant::now());
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 3. `posts` POSTs from `concurrency` clients at once, over every agent.
    let sent: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t_posts = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..b.concurrency {
        let (sent, next, post) = (sent.clone(), next.clone(), post.clone());
        let (agents, posts) = (b.agents, b.posts);
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= posts {
                    return Ok::<_, miette::Report>(());
                }
                let t = Instant::now();
                let (s, v) = post(format!("agent-{:03}", i % agents), format!("load {i}"), false).await?;
                if s != 202 {
                    return Err(miette!("POST {i}: {s} {v}"));
                }
                sent.lock().expect("sent").push((v["id"].as_str().unwrap_or_default().to_string(), t));
            }
        }));
    }
    for w in workers {
        w.await.into_diagnostic()??;
    }
    let acked = t_posts.elapsed();
    // Every POST answered (agent or system) — read from the daemon's own store.
    let db = layout.conversations_db();
    let t0 = Instant::now();
    let (users, answered) = loop {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).into_diagnostic()?;
        let users: i64 = conn
            .query_row("SELECT COUNT(*) FROM messages WHERE role='user' AND text LIKE 'load %'", [], |r| r.get(0))
            .into_diagnostic()?;
        let answered: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM messages a JOIN messages u ON a.reply_to = u.id WHERE u.text LIKE 'load %'",
                [],
                |r| r.get(0),
            )
            .into_diagnostic()?;
        if answered >= b.posts as i64 || t0.elapsed() > Duration::from_secs(1800) {
            break (users, answered);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let all_answered = t_posts.elapsed();
    let sent = sent.lock().expect("sent").clone();
    let ids: HashSet<&String> = sent.iter().map(|(id, _)| id).collect();
    let system: i64 = {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).into_diagnostic()?;
        conn.query_row("SELECT COUNT(*) FROM messages a JOIN messages u ON a.reply_to = u.id WHERE u.text LIKE 'load %' AND a.role = 'system'", [], |r| r.get(0))
            .into_diagnostic()?
    };
    let why: Vec<(String, i64)> = {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).into_diagnostic()?;
        let mut stmt = conn
            .prepare("SELECT substr(a.text, 1, 160), COUNT(*) FROM messages a JOIN messages u ON a.reply_to = u.id WHERE u.text LIKE 'load %' AND a.role = 'system' GROUP BY 1 ORDER BY 2 DESC LIMIT 3")
            .into_diagnostic()?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).into_diagnostic()?;
        rows.collect::<Result<_, _>>().into_diagnostic()?
    };
    println!("\n{} POSTs from {} concurrent clients over {} agents:", b.posts, b.concurrency, b.agents);
    println!("- acknowledged (202) in {} ({:.0} POSTs/s)", ms(acked), b.posts as f64 / acked.as_secs_f64());
    println!(
        "- stored: {users} user messages for {} acknowledged ids ({} distinct): lost {}, duplicated {}",
        sent.len(),
        ids.len(),
        b.posts as i64 - users.min(b.posts as i64),
        (users - ids.len() as i64).max(0)
    );
    println!("- answered: {answered} ({system} of them system messages), all within {}", ms(all_answered));
    for (text, n) in why {
        println!("  - {n}× {text}");
    }

    // The fan-out: for each posted message's user event, how long after its POST each client had it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = received.lock().expect("received").clone();
    let mut lat = Vec::new();
    let mut missing = 0usize;
    for (id, t) in &sent {
        for c in &got {
            match c.get(id) {
                Some(at) => lat.push(at.saturating_duration_since(*t)),
                None => missing += 1,
            }
        }
    }
    let every = got.iter().map(|c| c.len()).min().unwrap_or(0);
    println!(
        "\nSSE fan-out to {} clients: {} deliveries of the {} user events, {missing} missing; every client saw ≥ {every} events \
         (user + answers); POST sent → event at a client: p50 {}, p99 {}",
        b.clients,
        lat.len(),
        sent.len(),
        ms(pct(&mut lat.clone(), 0.5)),
        ms(pct(&mut lat, 0.99))
    );
    for s in streams {
        s.abort();
    }

    // 4. Resident memory, idle after all that.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = serve_pid(layout)?;
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .into_diagnostic()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    let total: i64 = {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).into_diagnostic()?;
        conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)).into_diagnostic()?
    };
    println!("\ndaemon RSS, {} agents idle, {total} messages stored: {rss} (goal ≤ 30 MiB)", b.agents);
    Ok(())
}

fn gateway_port(layout: &Layout) -> miette::Result<u64> {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(layout.gateway_home("main").join("openclaw.json")).into_diagnostic()?,
    )
    .into_diagnostic()?;
    v["gateway"]["port"].as_u64().ok_or_else(|| miette!("no gateway port"))
}

pub(super) fn serve_pid(layout: &Layout) -> miette::Result<u64> {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(layout.serve_dir().join("serve.pid")).into_diagnostic()?)
            .into_diagnostic()?;
    v["pid"]["pid"].as_u64().ok_or_else(|| miette!("no daemon pid"))
}
