//! Runs a plan: steps in dependency order, at most `jobs` at once; a failed
//! step's dependents are skipped, independent branches go on. The core reports
//! through `Reporter`; it never prints.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::Dfs;
use tokio::task::JoinSet;

pub use crate::driver::error_chain;
use crate::driver::{Drivers, StepCtx};
use crate::plan::{Action, Plan};
use crate::resource::{Address, Desired, Kind};
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

/// The step graph: edges run from what must happen first to what waits for it.
pub fn step_graph(plan: &Plan, desired: &Desired, prior: &BTreeMap<String, Record>) -> DiGraph<usize, ()> {
    let mut g = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..plan.changes.len()).map(|i| g.add_node(i)).collect();
    let index: HashMap<&str, usize> = plan.changes.iter().enumerate().map(|(i, c)| (c.address.as_str(), i)).collect();
    for (i, c) in plan.changes.iter().enumerate() {
        if c.action == Action::Delete {
            // Whatever depended on it lets go first: dependents are deleted, and dependents that
            // stay are updated (e.g. a gateway's models patch dropping the agent), before it goes.
            // OpenClaw rejects a config.patch that races an agents.delete on the same gateway.
            // Except a key: it is revoked first of all (a key never outlives its agent's removal,
            // even when the gateway cannot be reached), so a models patch still carrying it may
            // follow; it waits only for what is deleted with it (the daemon token beside it).
            let key = key_agent(&c.address);
            for (j, other) in plan.changes.iter().enumerate() {
                if key.is_some() && other.action != Action::Delete {
                    continue;
                }
                if key.is_some() && other.address.parse::<Address>().is_ok_and(|a| a.kind() == Kind::GatewayModels) {
                    continue;
                }
                if j != i && prior.get(&other.address).is_some_and(|r| r.deps.contains(&c.address)) {
                    g.add_edge(nodes[j], nodes[i], ());
                }
            }
        } else if let Some(r) = desired.get(&c.address) {
            for dep in &r.dep_strings() {
                if let Some(&j) = index.get(dep.as_str()) {
                    // A desired dependency being deleted is a `moved` agent's old name: it leaves
                    // (and is archived) first.
                    g.add_edge(nodes[j], nodes[i], ());
                }
            }
        }
    }
    // A removed agent's key is revoked before the agent leaves its gateway (and is archived).
    for (i, c) in plan.changes.iter().enumerate() {
        let Some(agent) = key_agent(&c.address).filter(|_| c.action == Action::Delete) else { continue };
        if let Some(&j) = index.get(Address::Agent(agent).to_string().as_str()) {
            if plan.changes[j].action == Action::Delete
                && !petgraph::algo::has_path_connecting(&g, nodes[j], nodes[i], None)
            {
                g.update_edge(nodes[i], nodes[j], ());
            }
        }
    }
    // A deleted resource lets go before what it depended on changes: an agent leaving its gateway
    // is deleted before the gateway's patch drops its provider (a patch dropping the provider of an
    // agent still listed makes OpenClaw restart, and an agents.delete during that restart can keep
    // the gateway from coming back). Only where no order above says otherwise.
    for (i, c) in plan.changes.iter().enumerate() {
        let Some(rec) = prior.get(&c.address).filter(|_| c.action == Action::Delete) else { continue };
        for dep in &rec.deps {
            if let Some(&j) = index.get(dep.as_str()) {
                if matches!(plan.changes[j].action, Action::Update | Action::Replace)
                    && !petgraph::algo::has_path_connecting(&g, nodes[j], nodes[i], None)
                {
                    g.update_edge(nodes[i], nodes[j], ());
                }
            }
        }
    }
    // What a changed resource depended on before, and is changing too, goes first where that
    // agrees with the order above (an agent moving gateways leaves the old one after the old
    // gateway's patch let go of it). Records from older builds may have pointed the other way.
    for (i, c) in plan.changes.iter().enumerate() {
        let Some(rec) = prior.get(&c.address).filter(|_| c.action != Action::Delete) else { continue };
        let wanted = desired.get(&c.address).map(|r| r.dep_strings()).unwrap_or_default();
        // Deps it still has are ordered above; only the ones it let go of need a look (and a search).
        for dep in rec.deps.iter().filter(|d| !wanted.contains(d)) {
            if let Some(&j) = index.get(dep.as_str()) {
                let other = plan.changes[j].action;
                if j != i
                    && other != Action::Delete
                    && !petgraph::algo::has_path_connecting(&g, nodes[i], nodes[j], None)
                {
                    g.update_edge(nodes[j], nodes[i], ());
                }
            }
        }
    }
    g
}

/// The agent whose key `address` is, if it is a key.
fn key_agent(address: &str) -> Option<String> {
    match address.parse::<Address>() {
        Ok(Address::Key(agent)) => Some(agent),
        _ => None,
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
        let graph = step_graph(self.plan, self.desired, self.prior);
        let n = self.plan.changes.len();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Change;
    use crate::resource::{Address, Resource};
    use serde_json::Value;

    fn change(address: &str, action: Action) -> Change {
        Change { address: address.into(), kind: "x".into(), action, reason: None, fields: vec![], place: None }
    }

    fn record(address: &str, deps: &[&str]) -> (String, Record) {
        let r = Record {
            address: address.into(),
            kind: "x".into(),
            fingerprint: String::new(),
            inputs: Value::Null,
            outputs: Value::Null,
            deps: deps.iter().map(|d| d.to_string()).collect(),
        };
        (address.into(), r)
    }

    fn before(g: &DiGraph<usize, ()>, a: usize, b: usize) -> bool {
        petgraph::algo::has_path_connecting(g, NodeIndex::new(a), NodeIndex::new(b), None)
    }

    #[test]
    fn a_moved_resource_waits_for_what_it_left_unless_that_would_loop() {
        // bob moves from gateway a to b: a's patch drops him before his step leaves a.
        let plan = Plan {
            changes: vec![
                change("agent.bob", Action::Update),
                change("gateway.a.models", Action::Update),
                change("gateway.b.models", Action::Update),
            ],
            ..Plan::default()
        };
        let prior: BTreeMap<String, Record> = [
            record("agent.bob", &["gateway.a", "gateway.a.models"]),
            record("gateway.a.models", &["gateway.a"]),
            // An older build's record pointing the other way: the desired order wins.
            record("gateway.b.models", &["gateway.b", "agent.bob"]),
        ]
        .into();
        let res = |a: &str, deps: &[&str]| {
            let deps = deps.iter().map(|d| d.parse().unwrap()).collect();
            (a.to_string(), Resource::new(a.parse().unwrap(), &Value::Null, deps))
        };
        let desired: Desired = [
            res("agent.bob", &["gateway.b", "gateway.b.models"]),
            res("gateway.a.models", &["gateway.a"]),
            res("gateway.b.models", &["gateway.b"]),
        ]
        .into();
        let g = step_graph(&plan, &desired, &prior);
        assert!(before(&g, 2, 0), "desired: b's patch creates him first");
        assert!(before(&g, 1, 0), "prior: a's patch lets go of him before he leaves a");
        assert!(petgraph::algo::toposort(&g, None).is_ok(), "the older record's edge is dropped, not looped");
    }

    /// carol leaves: her agent, key and wake go; the gateway's models patch stays, minus carol.
    fn carol_leaves() -> Plan {
        Plan {
            changes: vec![
                change("agent.carol", Action::Delete),
                change("gateway.main.models", Action::Update),
                change("key.carol", Action::Delete),
                change("wake.carol", Action::Delete),
            ],
            ..Plan::default()
        }
    }

    /// What stays desired when carol leaves: the gateway's models patch.
    fn patch_stays() -> Desired {
        [(
            "gateway.main.models".to_string(),
            Resource::new(Address::GatewayModels("main".into()), &Value::Null, vec![Address::Gateway("main".into())]),
        )]
        .into()
    }

    #[test]
    fn a_removed_agent_leaves_before_its_gateways_patch_drops_its_provider() {
        let plan = carol_leaves();
        let prior: BTreeMap<String, Record> = [
            record("agent.carol", &["gateway.main", "gateway.main.models"]),
            record("gateway.main.models", &["gateway.main", "litellm.proxy", "key.carol"]),
            record("key.carol", &["litellm.config"]),
            record("wake.carol", &["gateway.main.models", "agent.carol"]),
        ]
        .into();
        let g = step_graph(&plan, &patch_stays(), &prior);
        assert!(before(&g, 0, 1), "agents.delete before the patch that drops carol's provider");
        assert!(before(&g, 2, 0), "her key is revoked first of all, before she leaves her gateway");
        assert!(before(&g, 3, 0), "the wake goes before the agent");
        assert!(petgraph::algo::toposort(&g, None).is_ok());
    }

    #[test]
    fn what_depended_on_a_deleted_resource_lets_go_first() {
        let plan = carol_leaves();
        let prior: BTreeMap<String, Record> = [
            record("agent.carol", &["gateway.main", "key.carol"]),
            record("gateway.main.models", &["gateway.main", "agent.carol", "key.carol"]),
            record("key.carol", &[]),
            record("wake.carol", &["gateway.main.models", "agent.carol"]),
        ]
        .into();
        let g = step_graph(&plan, &patch_stays(), &prior);
        assert!(before(&g, 1, 0), "the models patch drops carol before agents.delete");
        assert!(before(&g, 1, 2), "her agent, whose old record names the key, goes between the patch and the key");
        assert!(before(&g, 3, 0), "the wake goes before the agent");
        assert!(!before(&g, 0, 1), "no cycle");
        assert!(petgraph::algo::toposort(&g, None).is_ok());
    }
}
