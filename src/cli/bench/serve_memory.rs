//! `fleet bench serve --stalled N [--big-messages M --message-kb K]`: the daemon's memory with event-stream clients that read
//! nothing (issue 24). A fresh fleet (one process gateway, a few agents, the daemon); 1 MB messages
//! stored; then N clients open `/v1/events?after=0` (a replay of everything) with the admin's and
//! the agents' tokens in turn, read the status line and stop reading; more 1 MB messages arrive
//! while they stall (each answered before the next). The daemon's RSS is sampled throughout: before the clients (the anchor, same
//! run), its peak with them (VmRSS sampled, and the kernel's high-water mark VmHWM).

use std::time::{Duration, Instant};

use miette::IntoDiagnostic;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::kit::{apply_in_process, free_port, gateway_fleet};
use crate::cli::loaded::runtime;
use crate::engine::Goal;
use crate::layout::Layout;

pub struct StalledBench {
    pub agents: usize,
    pub clients: usize,
    /// 1 MB messages stored before the clients come, and as many again while they stall.
    pub messages: usize,
    pub message_kb: usize,
}

pub fn run(b: StalledBench) -> miette::Result<std::process::ExitCode> {
    let dir = tempfile::tempdir().into_diagnostic()?;
    let file = dir.path().join("fleet.kdl");
    let (pp, gp, sp) = (free_port()?, free_port()?, free_port()?);
    let text =
        format!("{}serve {{ listen \"127.0.0.1:{sp}\"; reply-timeout \"10m\" }}\n", gateway_fleet(b.agents, pp, gp));
    std::fs::write(&file, text).into_diagnostic()?;
    let layout = Layout::resolve("bench", None, Some(&dir.path().join("data")));
    let rt = runtime()?;
    apply_in_process(&rt, &file, &layout, Goal::Converge)?;
    println!(
        "fleet bench serve --stalled {} --big-messages {} --message-kb {} --agents {}\n",
        b.clients, b.messages, b.message_kb, b.agents
    );
    let result = rt.block_on(measure(&b, &layout, sp));
    let cleanup = apply_in_process(&rt, &file, &layout, Goal::Destroy);
    result?;
    cleanup?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// (VmRSS, VmHWM) of a process, in KiB.
fn memory_kib(pid: u64) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Waits (at most 5 minutes) until `n` messages are answered (by the agent or the daemon).
async fn answered(layout: &Layout, n: usize) {
    let db = layout.conversations_db();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(300) {
        let db = db.clone();
        let done = tokio::task::spawn_blocking(move || {
            let c = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
            c.query_row("SELECT COUNT(*) FROM messages WHERE role != 'user'", [], |r| r.get::<_, i64>(0)).ok()
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(0);
        if done as usize >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

async fn measure(b: &StalledBench, layout: &Layout, port: u16) -> miette::Result<()> {
    let url = format!("http://127.0.0.1:{port}");
    let admin = std::fs::read_to_string(layout.serve_token()).into_diagnostic()?.trim().to_string();
    let pid = super::serve::serve_pid(layout)?;
    let agents: Vec<String> = (0..b.agents).map(|i| format!("agent-{i:03}")).collect();
    let mut tokens = vec![(admin.clone(), "/v1/events?after=0".to_string())];
    for a in &agents {
        let env = std::fs::read_to_string(layout.data_dir.join("agents").join(a).join("env")).into_diagnostic()?;
        if let Some(t) = env.lines().find_map(|l| l.strip_prefix("FLEET_TOKEN=")) {
            tokens.push((t.to_string(), format!("/v1/agents/{a}/events?after=0")));
        }
    }
    let http = reqwest::Client::new();
    let text = "x".repeat(b.message_kb * 1000);
    // `wait`: until the answer is stored (one message in flight at a time).
    let post = |i: usize, wait: bool| {
        let (http, url, admin, text) = (http.clone(), url.clone(), admin.clone(), text.clone());
        let agent = agents[i % agents.len()].clone();
        async move {
            let r = http
                .post(format!("{url}/v1/agents/{agent}/messages{}", if wait { "?wait=120" } else { "" }))
                .bearer_auth(&admin)
                .json(&serde_json::json!({"text": text, "thread": format!("big-{i}")}))
                .send()
                .await
                .into_diagnostic()?;
            miette::ensure!(r.status().is_success(), "POST {}: {}", r.status(), r.text().await.unwrap_or_default());
            Ok::<(), miette::Report>(())
        }
    };
    for i in 0..b.messages {
        post(i, false).await?;
    }
    answered(layout, b.messages).await;
    let (before, _) = memory_kib(pid);

    // The stalled clients: each reads its status line, then nothing.
    let mut held = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..b.clients {
        let (token, path) = &tokens[i % tokens.len()];
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.into_diagnostic()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes())
            .await
            .into_diagnostic()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.into_diagnostic()?;
        match &head[9..12] {
            b"200" => accepted += 1,
            b"429" => refused += 1,
            other => miette::bail!("stream {i}: HTTP {}", String::from_utf8_lossy(other)),
        }
        held.push(s);
    }
    let mut peak = before;
    let sample = |peak: &mut u64| {
        let (rss, _) = memory_kib(pid);
        *peak = (*peak).max(rss);
    };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        sample(&mut peak);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let replay_peak = peak;
    // More big messages while they stall, one after another: the live path.
    for i in 0..b.messages {
        post(b.messages + i, true).await?;
        sample(&mut peak);
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        sample(&mut peak);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (after, hwm) = memory_kib(pid);
    drop(held);
    println!(
        "{} stalled clients ({accepted} streams accepted, {refused} refused: 429 too_many_streams), {} messages of {} KB \
         stored before and {} more while they stalled:",
        b.clients,
        b.messages,
        b.message_kb,
        b.messages
    );
    println!("  daemon RSS before the clients (anchor): {}", mib(before));
    println!("  daemon RSS, peak while they replay:     {}", mib(replay_peak));
    println!("  daemon RSS, peak sampled with them:     {} (goal ≤ 64 MiB)", mib(peak));
    println!("  daemon RSS at the end:                   {}", mib(after));
    println!("  daemon VmHWM (the kernel's high-water mark, whole life): {}", mib(hwm));
    println!("  peak / anchor: {:.2}", peak as f64 / before.max(1) as f64);
    Ok(())
}
