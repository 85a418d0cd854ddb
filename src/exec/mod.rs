//! Runs a plan: steps in dependency order, at most `jobs` at once; a failed
//! step's dependents are skipped, independent branches go on. The core reports
//! through `Reporter`; it never prints.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::Dfs;
use tokio::task::JoinSet;

pub use crate::driver::error_chain;
use crate::driver::{Drivers, StepCtx};
use crate::plan::{Action, Plan};
use crate::resource::Desired;
use crate::state::{format_rfc3339, Record, StepRow, Store, PENDING};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    Failed(String),
    Skipped(String),
}

#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub address: String,
    pub action: Action,
    pub status: Status,
    pub elapsed: Duration,
}

pub trait Reporter: Send + Sync {
    fn started(&self, address: &str, action: Action);
    /// A long step's news (install progress, waiting for readiness…).
    fn progress(&self, _address: &str, _message: &str) {}
    fn finished(&self, outcome: &StepOutcome);
}

#[derive(Debug, Default)]
pub struct Summary {
    pub outcomes: Vec<StepOutcome>,
    /// The run was asked to stop (Ctrl-C, SIGTERM): steps not yet started were skipped.
    pub cancelled: bool,
}

impl Summary {
    fn count(&self, f: impl Fn(&Status) -> bool) -> usize {
        self.outcomes.iter().filter(|o| f(&o.status)).count()
    }
    pub fn ok(&self) -> usize {
        self.count(|s| *s == Status::Ok)
    }
    pub fn failed(&self) -> usize {
        self.count(|s| matches!(s, Status::Failed(_)))
    }
    pub fn skipped(&self) -> usize {
        self.count(|s| matches!(s, Status::Skipped(_)))
    }
    pub fn success(&self) -> bool {
        self.failed() == 0 && self.skipped() == 0
    }
}

/// Asks a run to stop starting steps (Ctrl-C, SIGTERM); the steps already running finish.
#[derive(Clone, Default)]
pub struct Cancel(Arc<std::sync::atomic::AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

pub struct Execution<'a> {
    pub plan: &'a Plan,
    pub cancel: Cancel,
    pub desired: &'a Desired,
    pub prior: &'a BTreeMap<String, Record>,
    pub drivers: &'a Drivers,
    pub store: &'a Store,
    pub run_id: i64,
    pub jobs: usize,
    pub reporter: Arc<dyn Reporter>,
}

enum Done {
    Wrote(Record),
    Removed,
}

impl Execution<'_> {
    pub async fn run(self) -> Summary {
        let n = self.plan.changes.len();
        let mut graph: DiGraph<usize, ()> = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..n).map(|i| graph.add_node(i)).collect();
        for &(before, after) in &self.plan.order {
            graph.add_edge(nodes[before], nodes[after], ());
        }
        let mut indegree: Vec<usize> =
            (0..n).map(|i| graph.neighbors_directed(NodeIndex::new(i), petgraph::Incoming).count()).collect();
        let mut blocked = vec![false; n];
        let mut ready: VecDeque<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut running: JoinSet<(usize, Instant, Result<Done, String>)> = JoinSet::new();
        let mut summary = Summary::default();
        let jobs = self.jobs.max(1);
        // What this run deletes, told to every step (one set for the run).
        let leaving: Arc<std::collections::BTreeSet<String>> = Arc::new(
            self.plan.changes.iter().filter(|c| c.action == Action::Delete).map(|c| c.address.clone()).collect(),
        );

        loop {
            while running.len() < jobs && !self.cancel.is_cancelled() {
                let Some(i) = ready.pop_front() else { break };
                let change = &self.plan.changes[i];
                self.reporter.started(&change.address, change.action);
                // Intent before the side effect: a create is recorded as pending first, so a crash
                // mid-create leaves a record that the next plan re-creates and destroy removes.
                let intent = self.record_intent(i);
                let task = self.task(i, leaving.clone());
                let task = async move {
                    intent?;
                    task.await
                };
                running.spawn(async move {
                    let t0 = Instant::now();
                    // A panicking driver fails its own step, not the run.
                    let res = tokio::spawn(task).await.unwrap_or_else(|e| Err(format!("internal error: {e}")));
                    (i, t0, res)
                });
            }
            let Some(joined) = running.join_next().await else { break };
            let Ok((i, t0, res)) = joined else { continue };
            let change = &self.plan.changes[i];
            let res = res.and_then(|done| {
                match done {
                    Done::Wrote(rec) => self.store.put(&rec),
                    Done::Removed => self.store.remove(&change.address),
                }
                .map_err(|e| format!("the step succeeded but its state could not be saved: {e}"))
            });
            let status = match res {
                Ok(()) => Status::Ok,
                Err(msg) => Status::Failed(msg),
            };
            let outcome =
                StepOutcome { address: change.address.clone(), action: change.action, status, elapsed: t0.elapsed() };
            self.record(&outcome);
            self.reporter.finished(&outcome);
            let failed = outcome.status != Status::Ok;
            summary.outcomes.push(outcome);
            if failed {
                let mut dfs = Dfs::new(&graph, NodeIndex::new(i));
                dfs.next(&graph);
                while let Some(d) = dfs.next(&graph) {
                    let j = d.index();
                    if !blocked[j] {
                        blocked[j] = true;
                        let c = &self.plan.changes[j];
                        let o = StepOutcome {
                            address: c.address.clone(),
                            action: c.action,
                            status: Status::Skipped(format!("depends on {}, which failed", change.address)),
                            elapsed: Duration::ZERO,
                        };
                        self.record(&o);
                        self.reporter.finished(&o);
                        summary.outcomes.push(o);
                    }
                }
            } else {
                for s in graph.neighbors_directed(NodeIndex::new(i), petgraph::Outgoing) {
                    let j = s.index();
                    indegree[j] -= 1;
                    if indegree[j] == 0 && !blocked[j] {
                        ready.push_back(j);
                    }
                }
            }
        }
        // Asked to stop: what never started is reported, and nothing else happens.
        if self.cancel.is_cancelled() {
            summary.cancelled = true;
            let done: std::collections::HashSet<&str> = summary.outcomes.iter().map(|o| o.address.as_str()).collect();
            let mut skipped = Vec::new();
            for c in self.plan.changes.iter().filter(|c| !done.contains(c.address.as_str())) {
                skipped.push(StepOutcome {
                    address: c.address.clone(),
                    action: c.action,
                    status: Status::Skipped("cancelled".into()),
                    elapsed: Duration::ZERO,
                });
            }
            for o in skipped {
                self.record(&o);
                self.reporter.finished(&o);
                summary.outcomes.push(o);
            }
        }
        summary
    }

    /// For a create: the pending record (see `state::PENDING`), written before the driver runs.
    fn record_intent(&self, i: usize) -> Result<(), String> {
        let change = &self.plan.changes[i];
        let Some(want) = self.desired.get(&change.address).filter(|_| change.action == Action::Create) else {
            return Ok(());
        };
        let pending = Record {
            address: change.address.clone(),
            kind: want.kind.as_str().into(),
            fingerprint: PENDING.into(),
            inputs: want.inputs.clone(),
            outputs: serde_json::json!({}),
            deps: want.dep_strings(),
        };
        self.store.put(&pending).map_err(|e| format!("cannot record the intent to create it: {e}"))
    }

    fn record(&self, o: &StepOutcome) {
        let (status, error) = match &o.status {
            Status::Ok => ("ok", None),
            Status::Failed(e) => ("failed", Some(e.clone())),
            Status::Skipped(e) => ("skipped", Some(e.clone())),
        };
        let row = StepRow {
            address: o.address.clone(),
            action: o.action.as_str().into(),
            status: status.into(),
            // Recorded when the step ends: its start is that moment minus its duration.
            started_at: format_rfc3339(
                std::time::SystemTime::now()
                    .checked_sub(o.elapsed)
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs() as i64),
            ),
            duration_ms: o.elapsed.as_millis() as i64,
            error,
        };
        if let Err(e) = self.store.record_step(self.run_id, &row) {
            tracing::warn!("cannot record step {}: {e}", o.address);
        }
    }

    /// The work of step `i`, owning everything it needs.
    fn task(
        &self,
        i: usize,
        leaving: Arc<std::collections::BTreeSet<String>>,
    ) -> impl std::future::Future<Output = Result<Done, String>> + Send + 'static {
        let change = self.plan.changes[i].clone();
        let want = self.desired.get(&change.address).cloned();
        let prior = self.prior.get(&change.address).cloned();
        let driver = match (&want, &prior) {
            (Some(w), _) => self.drivers.get(w.kind).cloned(),
            (None, Some(p)) => self.drivers.for_record(p).cloned(),
            _ => None,
        };
        let reporter = self.reporter.clone();
        let ctx = StepCtx::new(&change.address, Arc::new(move |addr: &str, m: &str| reporter.progress(addr, m)))
            .in_run(self.run_id)
            .leaving(leaving);
        async move {
            let driver = driver.ok_or_else(|| format!("no driver for {} in this version of fleet", change.kind))?;
            let wrote = |r: &crate::resource::Resource, outputs| {
                Done::Wrote(Record {
                    address: r.address.to_string(),
                    kind: r.kind.as_str().into(),
                    fingerprint: r.fingerprint.clone(),
                    inputs: r.inputs.clone(),
                    outputs,
                    deps: r.dep_strings(),
                })
            };
            let res = match (change.action, want, prior) {
                (Action::Create, Some(w), _) => driver.create(&w, &ctx).await.map(|o| wrote(&w, o)),
                (Action::Update, Some(w), Some(p)) => driver.update(&w, &p, &ctx).await.map(|o| wrote(&w, o)),
                (Action::Replace, Some(w), Some(p)) => match driver.delete(&p, &ctx).await {
                    Ok(()) => driver.create(&w, &ctx).await.map(|o| wrote(&w, o)),
                    Err(e) => Err(e),
                },
                (Action::Delete, _, Some(p)) => driver.delete(&p, &ctx).await.map(|()| Done::Removed),
                _ => return Err("inconsistent plan step".to_string()),
            };
            res.map_err(|e| error_chain(&e))
        }
    }
}
