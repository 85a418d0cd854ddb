//! `plan`, `apply`, `destroy`, `state`, `force-unlock`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use miette::{miette, IntoDiagnostic};

use super::loaded::{load, runtime};
use super::progress;
use crate::engine::{Goal, Options, Session};
use crate::exec::Cancel;
use crate::plan::render;

/// What `plan`, `apply` and `destroy` were asked, beyond the file.
pub struct Request<'a> {
    pub path: Option<&'a Path>,
    pub data_dir: Option<&'a Path>,
    pub goal: Goal,
    pub opts: Options,
}

/// Before anything else, a converging plan or apply runs the engine's pre-checks (every secret
/// reference resolves); their warnings go to stderr.
fn load_for(r: &Request) -> miette::Result<super::loaded::Loaded> {
    let l = load(r.path, r.data_dir)?;
    if r.goal == Goal::Converge {
        for w in crate::engine::prechecks(&l.spec, &l.layout)? {
            eprintln!("{w:?}");
        }
    }
    Ok(l)
}

pub fn plan(r: Request, json: bool, detailed: bool) -> miette::Result<ExitCode> {
    let l = load_for(&r)?;
    let session = Session::read_only(&l.layout)?;
    let p = runtime()?.block_on(session.plan(&l.spec, &l.layout, r.goal, &r.opts))?;
    if json {
        let doc = render::json(&p.plan, &p.desired, &p.prior, &p.drift, &l.spec.name);
        println!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?);
    } else {
        print!("{}", render::text(&p.plan));
    }
    Ok(if detailed && !p.plan.is_empty() { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

/// `fleet graph`: what the file declares and what needs what, and — planned as `fleet plan` would —
/// what a run would change and the order apply would walk it in. A fleet that cannot be planned
/// (a secret not set here) is drawn from the file alone, saying why.
pub fn graph(path: Option<&Path>, data_dir: Option<&Path>) -> miette::Result<ExitCode> {
    let l = load(path, data_dir)?;
    let planned = Session::read_only(&l.layout)
        .and_then(|session| runtime()?.block_on(session.plan(&l.spec, &l.layout, Goal::Converge, &Options::default())));
    match planned {
        Ok(p) => print!("{}", crate::plan::dot::dot(&l.spec.name, &p.desired, Some(&p.plan))),
        Err(e) => {
            eprintln!("(not planned: {}; drawn from the file alone)", crate::exec::error_chain(&e));
            let d = crate::desired::desired(&l.spec, &l.layout)?;
            print!("{}", crate::plan::dot::dot(&l.spec.name, &d, None));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn apply(r: Request, jobs: Option<usize>) -> miette::Result<ExitCode> {
    let t0 = Instant::now();
    let l = load_for(&r)?;
    let session = Session::open(&l.layout, r.goal.command())?;
    if let Some(ms) = std::env::var("FLEET_DEBUG_HOLD_LOCK_MS").ok().and_then(|v| v.parse().ok()) {
        // For tests of the lock: keep it held for a while.
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let rt = runtime()?;
    let p = rt.block_on(session.plan(&l.spec, &l.layout, r.goal, &r.opts))?;
    print!("{}", render::text(&p.plan));
    if p.plan.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let jobs = jobs.unwrap_or(l.spec.parallelism);
    println!("\nApplying {} changes, up to {jobs} at once:", p.plan.changes.len());
    let (reporter, bar) = progress::reporter(p.plan.changes.len());
    let cancel = Cancel::default();
    rt.spawn(watch_signals(cancel.clone(), l.layout.state_db(), session.owner().map(str::to_string)));
    let summary = rt.block_on(session.apply_until(&p, jobs, reporter, cancel))?;
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let secs = t0.elapsed().as_secs_f64();
    if summary.cancelled {
        println!(
            "\nCancelled: {} done, {} failed, {} not started ({secs:.2} s). Finished steps are kept; apply again to go on.",
            summary.ok(),
            summary.failed(),
            summary.skipped()
        );
        return Ok(ExitCode::from(130));
    }
    if summary.success() {
        let verb = match r.goal {
            Goal::Converge => "Apply",
            Goal::Destroy => "Destroy",
        };
        println!("\n{verb} complete: {} done in {secs:.2} s.", summary.ok());
        Ok(ExitCode::SUCCESS)
    } else {
        let (verb, again) = match r.goal {
            Goal::Converge => ("Apply", "apply"),
            Goal::Destroy => ("Destroy", "destroy"),
        };
        println!(
            "\n{verb} failed: {} done, {} failed, {} skipped ({secs:.2} s). Fix the causes above and {again} again; finished steps are kept.",
            summary.ok(),
            summary.failed(),
            summary.skipped()
        );
        Ok(ExitCode::from(1))
    }
}

/// Ctrl-C or SIGTERM during an apply: the first stops new steps from starting (running ones finish,
/// the run is recorded `cancelled`, exit 130); a second stops at once. Even then nothing is left
/// untracked: every create was recorded as pending before it began, and every process fleet starts
/// is in its handle or pid file from the moment it exists. The lock is released on the way out.
async fn watch_signals(cancel: Cancel, state_db: std::path::PathBuf, owner: Option<String>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return;
    };
    let mut first = true;
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if first {
            first = false;
            cancel.cancel();
            eprintln!("\ncancelling: no new step starts, running ones finish (Ctrl-C again to stop at once)");
            continue;
        }
        if let (Ok(store), Some(owner)) = (crate::state::Store::open(&state_db), &owner) {
            let _ = store.unlock(owner);
        }
        eprintln!("stopped at once; the next apply takes over from here");
        std::process::exit(130);
    }
}

pub fn state(path: Option<&Path>, data_dir: Option<&Path>) -> miette::Result<ExitCode> {
    let l = load(path, data_dir)?;
    let session = Session::read_only(&l.layout)?;
    let Some(store) = session.store() else {
        println!("{}: never applied (no state in {})", l.spec.name, l.layout.data_dir.display());
        return Ok(ExitCode::SUCCESS);
    };
    println!("data dir: {}", l.layout.data_dir.display());
    println!("schema:   v{}", store.schema_version().into_diagnostic()?);
    println!("\nresources:");
    for (addr, rec) in store.load().into_diagnostic()? {
        println!("  {addr:40} {}", &rec.fingerprint[..12]);
    }
    println!("\nrecent runs:");
    for r in store.runs(10).into_diagnostic()? {
        println!(
            "  #{:<4} {} {:8} {:6} {} steps, {} failed",
            r.id, r.started_at, r.command, r.status, r.steps, r.failed
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `fleet state forget ADDRESS`: removes one record, under the apply lock.
pub fn forget(
    path: Option<&Path>,
    data_dir: Option<&Path>,
    address: &crate::resource::Address,
) -> miette::Result<ExitCode> {
    let l = load(path, data_dir)?;
    if !l.layout.state_db().exists() {
        return Err(miette!("{}: never applied (no state in {})", l.spec.name, l.layout.data_dir.display()));
    }
    let session = Session::open(&l.layout, "state forget")?;
    let store = session.store().ok_or_else(|| miette!("no state"))?;
    let records = store.load().into_diagnostic()?;
    let addr = address.to_string();
    if !records.contains_key(&addr) {
        let known: Vec<&String> = records.keys().collect();
        return Err(miette!(
            help = format!("recorded: {}", known.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")),
            "{addr} is not in the state of fleet {}",
            l.spec.name
        ));
    }
    store.remove(&addr).into_diagnostic()?;
    println!("forgot {addr}: fleet no longer manages it; nothing was stopped or deleted (the next plan creates it again if the file still declares it)");
    Ok(ExitCode::SUCCESS)
}

pub fn force_unlock(path: Option<&Path>, data_dir: Option<&Path>) -> miette::Result<ExitCode> {
    let l = load(path, data_dir)?;
    if !l.layout.state_db().exists() {
        println!("no state, no lock");
        return Ok(ExitCode::SUCCESS);
    }
    let store = crate::state::Store::open(&l.layout.state_db()).into_diagnostic()?;
    match store.force_unlock().into_diagnostic()? {
        Some(h) => println!("removed the lock held by {h}"),
        None => println!("the lock was not held"),
    }
    Ok(ExitCode::SUCCESS)
}
