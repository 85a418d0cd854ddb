//! `fleet bench removal`: removing (archiving) most of a gateway's agents in one apply — each
//! removal is its own `agents.delete` — and, straight on a fresh gateway, whether a batched path
//! exists (one `config.patch` dropping every removed agent's entry) and what one `agents.delete`
//! costs alone, one after another and all at once.

use std::process::ExitCode;
use std::time::Instant;

use miette::{miette, IntoDiagnostic};
use serde_json::{json, Map, Value};

use super::kit::{apply_in_process, free_port, gateway_fleet, ms};
use crate::cli::loaded::runtime;
use crate::engine::Goal;
use crate::layout::Layout;
use crate::openclaw::client::GatewayRef;

pub struct RemovalBench {
    pub agents: usize,
    pub remove: usize,
}

pub fn run(b: RemovalBench) -> miette::Result<ExitCode> {
    if b.remove >= b.agents {
        return Err(miette!("--remove must be below --agents (a gateway keeps at least one agent here)"));
    }
    let dir = tempfile::tempdir().into_diagnostic()?;
    let file = dir.path().join("fleet.kdl");
    let (proxy_port, gw_port) = (free_port()?, free_port()?);
    let all = gateway_fleet(b.agents, proxy_port, gw_port);
    let kept = gateway_fleet(b.agents - b.remove, proxy_port, gw_port);
    let layout = Layout::resolve("bench", None, Some(&dir.path().join("data")));
    let rt = runtime()?;
    let gref = GatewayRef {
        name: "main".into(),
        url: format!("ws://127.0.0.1:{gw_port}"),
        token_file: layout.data_dir.join("gateways/main/token"),
    };
    let listed = |rt: &tokio::runtime::Runtime| -> miette::Result<usize> {
        rt.block_on(async { gref.connect().await?.agent_ids().await.map_err(|e| miette!("{e}")) })
            .map(|ids| ids.iter().filter(|i| i.starts_with("agent-")).count())
    };
    let result = (|| -> miette::Result<()> {
        println!("fleet bench removal --agents {} --remove {}\n", b.agents, b.remove);
        println!("| measurement | time |");
        println!("|---|---|");
        std::fs::write(&file, &all).into_diagnostic()?;
        let t = Instant::now();
        apply_in_process(&rt, &file, &layout, Goal::Converge)?;
        println!("| cold apply, 1 gateway + {} agents (context) | {} |", b.agents, ms(t.elapsed()));

        // Today's path: one apply, each removed agent `agents.delete`d (in parallel steps), archived.
        std::fs::write(&file, &kept).into_diagnostic()?;
        let t = Instant::now();
        apply_in_process(&rt, &file, &layout, Goal::Converge)?;
        let removal = t.elapsed();
        let archived = std::fs::read_dir(layout.archive_dir()).into_diagnostic()?.count();
        println!(
            "| **remove {} of {} in one apply (agents.delete each, archived)** | **{}** ({} archived, {} left listed; {} per agent) |",
            b.remove,
            b.agents,
            ms(removal),
            archived,
            listed(&rt)?,
            ms(removal / b.remove as u32)
        );

        // The gateway alone, from a fresh cold apply: is there a batched path, and what does one
        // agents.delete cost when nothing else runs?
        apply_in_process(&rt, &file, &layout, Goal::Destroy)?;
        std::fs::write(&file, &all).into_diagnostic()?;
        apply_in_process(&rt, &file, &layout, Goal::Converge)?;
        let removed: Vec<String> = (b.agents - b.remove..b.agents).map(|i| format!("agent-{i:03}")).collect();
        let (serial, parallel) = removed.split_at(removed.len() / 2);
        rt.block_on(async {
            let c = gref.connect().await?;
            // One config change for all of them: the entries dropped by config.patch.
            let entries: Map<String, Value> = removed.iter().map(|id| (id.clone(), Value::Null)).collect();
            let raw = json!({"agents": {"entries": entries}});
            // Array paths under the dropped entries must be named, or OpenClaw refuses for that first.
            let replace: Vec<String> =
                removed.iter().map(|id| format!("agents.entries.{id}.model.fallbacks")).collect();
            let t = Instant::now();
            let answer = match c.patch_config(&raw, &replace, "fleet bench removal", &|_: &str| {}).await {
                Ok(_) => "accepted".to_string(),
                Err(e) => format!("refused: {e}"),
            };
            println!(
                "| batched: one config.patch dropping the {} entries | {} — {answer} |",
                removed.len(),
                ms(t.elapsed())
            );
            let row = |how: &str, n: usize, d: std::time::Duration| {
                let each = ms(d / n.max(1) as u32);
                println!("| agents.delete ×{n} {how}, straight on the gateway | {} ({each} per agent) |", ms(d));
            };
            let t = Instant::now();
            for id in serial {
                c.delete_agent(id).await.map_err(|e| miette!("agents.delete {id}: {e}"))?;
            }
            row("one after another", serial.len(), t.elapsed());
            let t = Instant::now();
            let calls = parallel.iter().map(|id| c.delete_agent(id));
            for (id, r) in parallel.iter().zip(futures_util::future::join_all(calls).await) {
                r.map_err(|e| miette!("agents.delete {id}: {e}"))?;
            }
            row("all at once", parallel.len(), t.elapsed());
            Ok::<(), miette::Report>(())
        })?;
        println!("| left listed after the direct deletes | {} of {} |", listed(&rt)?, b.agents);
        Ok(())
    })();
    let cleanup = apply_in_process(&rt, &file, &layout, Goal::Destroy);
    result?;
    cleanup?;
    Ok(ExitCode::SUCCESS)
}
