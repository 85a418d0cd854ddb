//! `fleet bench removal`: removing (archiving) most of a gateway's agents in one apply — today each
//! removal is its own `agents.delete`, and OpenClaw serialises them, each a full config reload —
//! against the batched path measured straight on the gateway: one `config.patch` that drops every
//! removed agent's entry and provider at once.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use miette::{miette, IntoDiagnostic};
use serde_json::{json, Map, Value};

use super::bench_kit::{apply_in_process, free_port, gateway_fleet, ms};
use super::loaded::runtime;
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
        std::fs::write(&file, &all).into_diagnostic()?;
        let t = Instant::now();
        apply_in_process(&rt, &file, &layout, Goal::Converge)?;
        let cold = t.elapsed();
        println!("fleet bench removal --agents {} --remove {}\n", b.agents, b.remove);
        println!("| measurement | time |");
        println!("|---|---|");
        println!("| cold apply, 1 gateway + {} agents (context) | {} |", b.agents, ms(cold));

        // The batched path, on the gateway itself: one patch dropping every removed agent's entry
        // and provider; timed until the gateway lists only the kept agents and answers health.
        let removed: Vec<String> = (b.agents - b.remove..b.agents).map(|i| format!("agent-{i:03}")).collect();
        // OpenClaw refuses a write that shrinks its config below half ("size-drop"): halve until it
        // passes, and count the patches.
        let t = Instant::now();
        let mut patches = 0;
        rt.block_on(async {
            let c = gref.connect().await?;
            let mut parts: Vec<&[String]> = vec![&removed];
            while let Some(ids) = parts.pop() {
                let (mut entries, mut providers) = (Map::new(), Map::new());
                for id in ids {
                    entries.insert(id.clone(), Value::Null);
                    providers.insert(crate::openclaw::models::provider_id(id), Value::Null);
                }
                let raw = json!({"agents": {"entries": entries}, "models": {"providers": providers}});
                let replace: Vec<String> = ids
                    .iter()
                    .map(|id| format!("models.providers.{}.models", crate::openclaw::models::provider_id(id)))
                    .collect();
                match c.patch_config(&raw, &replace, "fleet bench removal", &|_: &str| {}).await {
                    Err(e) if e.message_contains("size-drop") && ids.len() > 1 => {
                        let (a, b) = ids.split_at(ids.len() / 2);
                        parts.push(b);
                        parts.push(a);
                    }
                    Err(e) => return Err(miette!("{e}")),
                    Ok(_) => patches += 1,
                }
            }
            Ok::<(), miette::Report>(())
        })?;
        let patched = t.elapsed();
        while listed(&rt)? != b.agents - b.remove {
            if t.elapsed() > Duration::from_secs(300) {
                return Err(miette!("the gateway still lists the removed agents 300 s after the patch"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let gone = t.elapsed();
        let healthy = rt.block_on(async { gref.connect().await?.healthy().await.map_err(|e| miette!("{e}")) })?;

        println!(
            "| batched: config.patch dropping the {} entries ({patches} patches: OpenClaw's size-drop guard) → answered / gateway lists only the kept | {} / {} (healthy after: {healthy}) |",
            b.remove,
            ms(patched),
            ms(gone)
        );
        // What the batched path leaves in the gateway's own state: agents.delete's cleanup (deletion
        // journal, per-agent databases, session store, cron jobs) never ran for these ids.
        let db = crate::openclaw::roster::state_db(&layout.gateway_home("main").join("state"));
        let held = removed.iter().filter(|id| !crate::openclaw::roster::never_held(&db, id)).count();
        println!("| batched: removed ids the gateway's state database still registers | {held} of {} |", b.remove);
        // Re-adding them over what the batched path left: through agents.create (held before).
        std::fs::write(&file, &all).into_diagnostic()?;
        let t = Instant::now();
        let readd = apply_in_process(&rt, &file, &layout, Goal::Converge);
        println!(
            "| re-add them after the batched removal (apply) | {} ({}) |",
            ms(t.elapsed()),
            match &readd {
                Ok(_) => "converged".to_string(),
                Err(e) => format!("failed: {e}"),
            }
        );
        readd?;
        // Today's path: one apply, each removed agent `agents.delete`d, then archived.
        std::fs::write(&file, &kept).into_diagnostic()?;
        let t = Instant::now();
        apply_in_process(&rt, &file, &layout, Goal::Converge)?;
        let removal = t.elapsed();
        let archived = std::fs::read_dir(layout.archive_dir()).into_diagnostic()?.count();
        let left = listed(&rt)?;
        println!(
            "| **remove {} of {} in one apply (agents.delete each, archived)** | **{}** ({} archived, {} left listed) |",
            b.remove,
            b.agents,
            ms(removal),
            archived,
            left
        );

        // Back: re-adding restores each from its archive.
        std::fs::write(&file, &all).into_diagnostic()?;
        let t = Instant::now();
        apply_in_process(&rt, &file, &layout, Goal::Converge)?;
        let restore = t.elapsed();
        println!("| re-add them (restored from their archives) | {} |", ms(restore));

        Ok(())
    })();
    let cleanup = apply_in_process(&rt, &file, &layout, Goal::Destroy);
    result?;
    cleanup?;
    Ok(ExitCode::SUCCESS)
}
