//! The one pipeline behind `plan`, `apply` and `destroy` (and, later, the daemon): an
//! engine `Session` opens the fleet's state — taking the apply lock when it will change
//! anything, released when the session is dropped, on every path — computes the plan
//! from desired resources, recorded state and observed drift, and executes exactly it.
//! Plan and apply share every line up to execution, so they cannot disagree.

mod drivers;
mod prechecks;
mod sandbox_checks;

use std::collections::BTreeMap;
use std::sync::Arc;

use miette::{miette, IntoDiagnostic, WrapErr};

pub use drivers::drivers;
pub use prechecks::prechecks;

use crate::driver::{Drift, Drivers};
use crate::exec::{Cancel, Execution, Reporter, Summary};
use crate::fleetfile::FleetSpec;
use crate::layout::Layout;
use crate::plan::{diff, Plan};
use crate::resource::{Address, Desired};
use crate::state::{Record, StateError, Store};

/// Everything a plan was computed from, kept so apply executes exactly it.
pub struct Prepared {
    pub desired: Desired,
    pub prior: BTreeMap<String, Record>,
    /// What observing found to differ from the records (shown as `resource_drift` in plan JSON).
    pub drift: BTreeMap<String, Drift>,
    pub plan: Plan,
    pub drivers: Drivers,
}

/// What a run aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Make the real fleet match the file.
    Converge,
    /// Remove everything the state records (keys revoked, processes stopped, files removed).
    Destroy,
}

impl Goal {
    /// The command name runs are recorded under.
    pub fn command(self) -> &'static str {
        match self {
            Goal::Converge => "apply",
            Goal::Destroy => "destroy",
        }
    }
}

/// How to plan beyond the goal.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Agent-owned workspace files (USER.md, MEMORY.md) are replaced too.
    pub overwrite: bool,
    /// `--target`: only these resources and what they depend on (or, when deleted, what depends on them).
    pub targets: Vec<Address>,
    /// `--replace`: these resources are deleted and created anew even when nothing changed.
    pub replace: Vec<Address>,
}

/// One engine session over a fleet's state. Locked sessions hold the apply lock until dropped.
pub struct Session {
    store: Option<Store>,
    /// Where applied steps leave `lifecycle` events in agents' traces (a locked session only).
    layout: Option<Layout>,
    /// The lock's owner token, when this session holds it.
    owner: Option<String>,
    command: String,
}

impl Session {
    /// Opens (creating) the data dir and state, and takes the apply lock for `command`.
    pub fn open(layout: &Layout, command: &str) -> miette::Result<Session> {
        crate::fsutil::create_private_dir(&layout.data_dir)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot create data dir {}", layout.data_dir.display()))?;
        let mut store = Store::open(&layout.state_db()).into_diagnostic()?;
        crate::fsutil::close_data_dir(&layout.data_dir);
        match store.lock(command) {
            Ok(me) => Ok(Session {
                store: Some(store),
                layout: Some(layout.clone()),
                owner: Some(me.owner),
                command: command.to_string(),
            }),
            Err(StateError::Locked(h)) => Err(miette!(
                help =
                    "wait for it to finish; if that process is gone for good on another host, run `fleet force-unlock`",
                "another fleet apply is running: {h}"
            )),
            Err(e) => Err(e).into_diagnostic(),
        }
    }

    /// Opens the state for reading only, without the lock (for `plan`); a fleet never applied
    /// has no state and plans from nothing.
    pub fn read_only(layout: &Layout) -> miette::Result<Session> {
        let store = Store::open_existing_readonly(&layout.state_db()).into_diagnostic()?;
        Ok(Session { store, layout: None, owner: None, command: "plan".into() })
    }

    /// The lock's owner token, when this session holds the lock (for releasing it from a signal
    /// handler that ends the process).
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// The state this session reads (None: never applied, read-only).
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Computes the plan. Reads state and observes resources; writes nothing.
    pub async fn plan(
        &self,
        spec: &FleetSpec,
        layout: &Layout,
        goal: Goal,
        opts: &Options,
    ) -> miette::Result<Prepared> {
        let desired = match goal {
            Goal::Converge => crate::desired::desired(spec, layout)?,
            Goal::Destroy => Desired::new(),
        };
        self.plan_with(desired, drivers(spec, layout, opts.overwrite), opts).await
    }

    /// The plan for a desired set, observed through `drivers`.
    pub async fn plan_with(&self, desired: Desired, drivers: Drivers, opts: &Options) -> miette::Result<Prepared> {
        let prior = match &self.store {
            Some(s) => s.load().into_diagnostic()?,
            None => BTreeMap::new(),
        };
        let mut drift = drivers.refresh(&prior, &desired).await;
        for a in &opts.replace {
            let addr = a.to_string();
            if !desired.contains_key(&addr) {
                return Err(miette!("cannot replace {addr}: the fleet file does not declare it"));
            }
            if prior.contains_key(&addr) {
                drift.insert(addr, Drift::Replace("replacement requested with --replace".into()));
            }
        }
        let mut plan = diff(&desired, &prior, &drift);
        if !opts.targets.is_empty() {
            plan = crate::plan::target::select(plan, &desired, &prior, &opts.targets)?;
        }
        crate::plan::order::attach(&mut plan, &desired, &prior);
        Ok(Prepared { desired, prior, drift, plan, drivers })
    }

    /// Executes a plan this session computed: at most `jobs` steps at once, each recorded.
    pub async fn apply(&self, p: &Prepared, jobs: usize, reporter: Arc<dyn Reporter>) -> miette::Result<Summary> {
        self.apply_until(p, jobs, reporter, Cancel::default()).await
    }

    /// `apply`, stopping to start steps once `cancel` is set; the run is then recorded `cancelled`.
    pub async fn apply_until(
        &self,
        p: &Prepared,
        jobs: usize,
        reporter: Arc<dyn Reporter>,
        cancel: Cancel,
    ) -> miette::Result<Summary> {
        let store = match (&self.store, &self.owner) {
            (Some(s), Some(_)) => s,
            _ => return Err(miette!("internal error: apply needs a locked session")),
        };
        let run_id = store.begin_run(&self.command).into_diagnostic()?;
        let summary = Execution {
            plan: &p.plan,
            cancel,
            desired: &p.desired,
            prior: &p.prior,
            drivers: &p.drivers,
            store,
            run_id,
            jobs,
            reporter,
        }
        .run()
        .await;
        // Records another step made stale (a gateway its models step started again): best effort —
        // a record left stale is observed as drift by the next plan.
        if let Ok(records) = store.load() {
            for rec in p.drivers.refresh_outputs(records).await {
                if let Err(e) = store.put(&rec) {
                    tracing::warn!("cannot record the new outputs of {}: {e}", rec.address);
                }
            }
        }
        self.record_lifecycle(run_id, &summary).await;
        let status = match (summary.cancelled, summary.success()) {
            (true, _) => "cancelled",
            (false, true) => "ok",
            (false, false) => "failed",
        };
        store.finish_run(run_id, status).into_diagnostic()?;
        Ok(summary)
    }
}

impl Session {
    /// `lifecycle` events (provisioned, updated, removed, woken) in the traces of the agents this
    /// run's steps touched. Best effort: the run itself is already recorded.
    async fn record_lifecycle(&self, run_id: i64, summary: &Summary) {
        let Some(layout) = self.layout.clone() else { return };
        let now = crate::clock::now_ms();
        let items: Vec<crate::trace::store::Item> = summary
            .outcomes
            .iter()
            .filter(|o| o.status == crate::exec::Status::Ok)
            .filter_map(|o| crate::trace::lifecycle::event(run_id, &o.address, o.action.as_str(), now))
            .filter(|(_, e)| {
                e.payload["phase"] != "removed" || layout.agent_home(e.agent_name.as_deref().unwrap_or("")).exists()
            })
            .map(|(agent, event)| crate::trace::store::Item { dir: layout.agent_trace(&agent), ms: now, event })
            .collect();
        if items.is_empty() {
            return;
        }
        let r = tokio::task::spawn_blocking(move || {
            crate::trace::store::Writer::new(Box::new(crate::clock::now_ms)).write(&items).map(drop)
        })
        .await;
        if let Ok(Err(e)) = r {
            tracing::warn!("lifecycle events: {e}");
        }
    }
}

impl Drop for Session {
    /// Releases the apply lock whatever happened: a failed plan, a failed step, an error
    /// returned early with `?`, a panic unwinding through.
    fn drop(&mut self) {
        if let (Some(store), Some(owner)) = (&self.store, &self.owner) {
            if let Err(e) = store.unlock(owner) {
                tracing::warn!("cannot release the apply lock: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
