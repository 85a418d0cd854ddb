//! `fleet bench plugin`: what fleet's trace plugin costs inside the gateway — the wall time of the
//! same mock-model turns (`chat.send` straight to the gateway, one connection) on a fleet without a
//! daemon (no plugin) and on the same fleet with one (the plugin loaded, shipping every event).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use miette::{miette, IntoDiagnostic};

use super::kit::{apply_in_process, free_port, gateway_fleet, ms, pct};
use crate::cli::loaded::runtime;
use crate::engine::Goal;
use crate::layout::Layout;
use crate::trace::query::Query;

/// Applies a one-agent fleet (with the daemon when `traced`), times `turns` turns, destroys it.
fn measure(turns: usize, traced: bool) -> miette::Result<(Duration, Vec<Duration>, usize)> {
    let dir = tempfile::tempdir().into_diagnostic()?;
    let file = dir.path().join("fleet.kdl");
    let (pp, gp, sp) = (free_port()?, free_port()?, free_port()?);
    let mut text = gateway_fleet(1, pp, gp);
    if traced {
        text.push_str(&format!("serve {{ listen \"127.0.0.1:{sp}\" }}\n"));
    }
    std::fs::write(&file, text).into_diagnostic()?;
    let layout = Layout::resolve("bench", None, Some(&dir.path().join("data")));
    let rt = runtime()?;
    apply_in_process(&rt, &file, &layout, Goal::Converge)?;
    let result = rt.block_on(async {
        let gref = crate::openclaw::client::GatewayRef {
            name: "main".into(),
            url: format!("ws://127.0.0.1:{gp}"),
            token_file: layout.gateway_token("main"),
        };
        let gw = gref.connect().await?;
        gw.chat("agent-000", "warm up", Duration::from_secs(120)).await?;
        let mut each = Vec::new();
        let t = Instant::now();
        for i in 0..turns {
            let t = Instant::now();
            gw.chat("agent-000", &format!("turn {i}"), Duration::from_secs(120)).await?;
            each.push(t.elapsed());
        }
        Ok::<_, miette::Report>((t.elapsed(), each))
    });
    // What the plugin shipped (the daemon's store): proof it ran.
    std::thread::sleep(Duration::from_secs(2));
    let stored =
        crate::trace::store::read(&layout.agent_trace("agent-000"), &Query { limit: usize::MAX, ..Query::default() })
            .map(|v| v.iter().filter(|(_, e)| e.backend_name.as_deref() == Some("openclaw")).count())
            .unwrap_or(0);
    let cleanup = apply_in_process(&rt, &file, &layout, Goal::Destroy);
    let (total, each) = result?;
    cleanup?;
    Ok((total, each, stored))
}

pub fn run(turns: usize) -> miette::Result<ExitCode> {
    println!("fleet bench plugin --turns {turns}\n");
    let (plain, mut p_each, p_events) = measure(turns, false)?;
    let (traced, mut t_each, t_events) = measure(turns, true)?;
    if p_events != 0 || t_events == 0 {
        return Err(miette!("the plugin should run only in the second fleet: {p_events} / {t_events} events"));
    }
    println!("| {turns} mock-model turns, chat.send straight to the gateway | total | p50 | p99 |");
    println!("|---|---|---|---|");
    println!(
        "| without the plugin (no daemon) | {} | {} | {} |",
        ms(plain),
        ms(pct(&mut p_each, 0.5)),
        ms(pct(&mut p_each, 0.99))
    );
    println!(
        "| with the plugin (daemon declared; {t_events} events shipped) | {} | {} | {} |",
        ms(traced),
        ms(pct(&mut t_each, 0.5)),
        ms(pct(&mut t_each, 0.99))
    );
    println!("| ratio (with / without) | {:.2} | | |", traced.as_secs_f64() / plain.as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
