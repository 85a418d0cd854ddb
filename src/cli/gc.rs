//! `fleet gc [--dry-run] [--json]`: inventory → destroy each orphan by id → inventory again → exit 1
//! unless nothing is left.

use std::path::Path;
use std::process::ExitCode;

use miette::IntoDiagnostic;
use serde_json::json;

use super::loaded::{load, runtime};
use crate::engine::Session;
use crate::fleetfile::Runtime;
use crate::gc::inventory::IncusAt;
use crate::gc::{inventory, orphans, Orphan, Recorded};

pub fn gc(path: Option<&Path>, data_dir: Option<&Path>, dry_run: bool, as_json: bool) -> miette::Result<ExitCode> {
    let l = load(path, data_dir)?;
    // Under the apply lock (a dry run only reads).
    let session = if dry_run { Session::read_only(&l.layout)? } else { Session::open(&l.layout, "gc")? };
    let records = match session.store() {
        Some(s) => s.load().into_diagnostic()?,
        None => Default::default(),
    };
    let recorded = Recorded::from_records(records.values());
    let gateways = inventory::gateway_refs(records.values());
    // Incus is asked only when the fleet has (or had) an Incus host.
    let mut remotes: Vec<IncusAt> = l
        .spec
        .hosts
        .iter()
        .filter(|h| h.runtime == Runtime::Incus)
        .map(|h| IncusAt {
            remote: h.remote_name().map(str::to_string),
            config: h.is_remote().then(|| h.incus_config.clone().unwrap_or_else(|| l.layout.incus_config_dir())),
        })
        .collect();
    if !recorded.instances.is_empty() && !remotes.contains(&IncusAt::default()) {
        remotes.push(IncusAt::default());
    }
    remotes.sort();
    remotes.dedup();
    let rt = runtime()?;
    let fleet = l.spec.name.clone();
    let take = || rt.block_on(inventory::take(&l.layout, &fleet, &gateways, &remotes));
    let first = take();
    let found = orphans(&first, &recorded);
    if !as_json {
        for n in &first.notes {
            println!("note: {n}");
        }
        if found.is_empty() {
            println!("No orphans: everything fleet finds for {fleet} is in its state or its archives.");
        } else {
            println!("Orphans of {fleet} (found, not in state, not archived):");
            for o in &found {
                println!("  - orphan {}", o.describe());
            }
        }
    }
    if dry_run {
        if as_json {
            let v = json!({"dry_run": true, "orphans": found, "notes": first.notes});
            println!("{}", serde_json::to_string_pretty(&v).into_diagnostic()?);
        } else if !found.is_empty() {
            println!("\n{} to collect; `fleet gc` collects them.", found.len());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut done = Vec::new();
    for o in &found {
        let r = rt.block_on(crate::gc::collect::destroy(&l.layout, &gateways, o));
        if !as_json {
            match &r {
                Ok(what) => println!("  - orphan {}: {what}", o.describe()),
                Err(e) => println!("  ✗ orphan {}: {}", o.describe(), crate::driver::error_chain(e)),
            }
        }
        done.push(json!({"orphan": o, "ok": r.is_ok(), "result": match &r {
            Ok(w) => w.clone(),
            Err(e) => crate::driver::error_chain(e),
        }}));
    }
    // Verify: a second inventory must find nothing.
    let second = take();
    let left: Vec<Orphan> = orphans(&second, &recorded);
    if as_json {
        let v = json!({"dry_run": false, "orphans": found, "collected": done, "left": left, "notes": second.notes});
        println!("{}", serde_json::to_string_pretty(&v).into_diagnostic()?);
    } else if left.is_empty() {
        println!("\ngc complete: {} collected; a second inventory finds no orphan.", found.len());
    } else {
        println!("\ngc failed: a second inventory still finds {}:", left.len());
        for o in &left {
            println!("  - orphan {}", o.describe());
        }
    }
    Ok(if left.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
