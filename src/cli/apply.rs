//! `plan`, `apply`, `destroy`, `state`, `force-unlock`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use miette::IntoDiagnostic;

use super::loaded::{load, runtime};
use super::progress;
use crate::engine::{Goal, Options, Session};
use crate::plan::render;

/// What `plan`, `apply` and `destroy` were asked, beyond the file.
pub struct Request<'a> {
    pub path: Option<&'a Path>,
    pub data_dir: Option<&'a Path>,
    pub goal: Goal,
    pub opts: Options,
}

pub fn plan(r: Request, json: bool, detailed: bool) -> miette::Result<ExitCode> {
    let l = load(r.path, r.data_dir)?;
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

pub fn apply(r: Request, jobs: Option<usize>) -> miette::Result<ExitCode> {
    let t0 = Instant::now();
    let l = load(r.path, r.data_dir)?;
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
    let summary = rt.block_on(session.apply(&p, jobs, reporter))?;
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let secs = t0.elapsed().as_secs_f64();
    if summary.success() {
        let verb = match r.goal {
            Goal::Converge => "Apply",
            Goal::Destroy => "Destroy",
        };
        println!("\n{verb} complete: {} done in {secs:.2} s.", summary.ok());
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "\nApply failed: {} done, {} failed, {} skipped ({secs:.2} s). Fix the causes above and apply again; finished steps are kept.",
            summary.ok(),
            summary.failed(),
            summary.skipped()
        );
        Ok(ExitCode::from(1))
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
