//! What the planner, the executor and the daemon ask of each kind of resource: look
//! at the real thing, create, update, delete. One implementation per external system;
//! the core (plan, exec) sees only this interface.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::resource::{Desired, Kind, Resource};
use crate::state::Record;

/// What `observe` found behind a recorded resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    InSync,
    /// Changed outside fleet; an update puts it back.
    Update(String),
    /// Gone or unrecoverable; it must be made anew.
    Replace(String),
}

pub type Outputs = Value;

/// One line per cause: "cannot write key file …: Permission denied".
pub fn error_chain(e: &miette::Report) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}

/// Where a running step's news goes: (address, message).
pub type ProgressFn = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// What a running step may tell the user (e.g. "pip: installing litellm…").
#[derive(Clone)]
pub struct StepCtx {
    pub address: String,
    /// The apply run this step belongs to (what an archive's manifest names).
    pub run: Option<i64>,
    progress: Option<ProgressFn>,
    /// The addresses this run deletes (a step may do less when what it belongs to goes too).
    leaving: Arc<std::collections::BTreeSet<String>>,
}

impl StepCtx {
    pub fn new(address: &str, progress: ProgressFn) -> Self {
        StepCtx { address: address.to_string(), run: None, progress: Some(progress), leaving: Arc::default() }
    }
    pub fn in_run(mut self, run: i64) -> Self {
        self.run = Some(run);
        self
    }
    /// Tells the step which addresses this run deletes.
    pub fn leaving(mut self, leaving: Arc<std::collections::BTreeSet<String>>) -> Self {
        self.leaving = leaving;
        self
    }
    /// Whether this run deletes `address` too.
    pub fn deletes(&self, address: &str) -> bool {
        self.leaving.contains(address)
    }
    /// A context that reports nowhere (unit tests, benchmarks).
    pub fn silent(address: &str) -> Self {
        StepCtx { address: address.to_string(), run: None, progress: None, leaving: Arc::default() }
    }
    pub fn progress(&self, message: &str) {
        if let Some(p) = &self.progress {
            p(&self.address, message);
        }
    }
}

#[async_trait::async_trait]
pub trait Driver: Send + Sync {
    /// Cheap, read-only look at the real thing behind a record (files, processes, APIs).
    async fn observe(&self, _prior: &Record, _desired: &Resource) -> Drift {
        Drift::InSync
    }
    /// A look for what an unrecorded (or unfinished) resource left running — a process started
    /// just before a crash; its create adopts or replaces it. Says what it found, for the plan.
    async fn observe_unrecorded(&self, _desired: &Resource) -> Option<String> {
        None
    }
    /// After an apply: what the record's outputs should say now, when a step of another resource
    /// changed what this one's record describes (a gateway that a models patch made restart, and
    /// that was started again, has a new pid). None: the record stands.
    async fn refreshed(&self, _rec: &Record) -> Option<Outputs> {
        None
    }
    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs>;
    async fn update(&self, r: &Resource, prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs>;
    async fn delete(&self, prior: &Record, ctx: &StepCtx) -> miette::Result<()>;
}

/// Something installed into fleet's cache and shared by every fleet on the machine (the LiteLLM
/// venv, Node + openclaw, image files): create and update both make sure it is there, and
/// removing it from one fleet removes nothing, since another fleet may use it.
#[async_trait::async_trait]
pub trait CacheInstall: Send + Sync {
    /// Whether what the record names is still in the cache.
    fn observe_cached(&self, prior: &Record) -> Drift;
    async fn ensure(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs>;
}

#[async_trait::async_trait]
impl<T: CacheInstall> Driver for T {
    async fn observe(&self, prior: &Record, _desired: &Resource) -> Drift {
        self.observe_cached(prior)
    }
    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        self.ensure(r, ctx).await
    }
    async fn update(&self, r: &Resource, _prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        self.ensure(r, ctx).await
    }
    /// Shared through the cache with other fleets: nothing to remove.
    async fn delete(&self, _prior: &Record, _ctx: &StepCtx) -> miette::Result<()> {
        Ok(())
    }
}

/// How many resources a plan observes at once.
const OBSERVE_AT_ONCE: usize = 16;

#[derive(Default, Clone)]
pub struct Drivers(HashMap<Kind, Arc<dyn Driver>>);

impl Drivers {
    pub fn insert(&mut self, kind: Kind, d: Arc<dyn Driver>) {
        self.0.insert(kind, d);
    }
    pub fn get(&self, kind: Kind) -> Option<&Arc<dyn Driver>> {
        self.0.get(&kind)
    }
    pub fn for_record(&self, rec: &Record) -> Option<&Arc<dyn Driver>> {
        Kind::parse(&rec.kind).and_then(|k| self.get(k))
    }

    /// Brings recorded outputs up to date after an apply (`Driver::refreshed`), several at once.
    pub async fn refresh_outputs(&self, records: BTreeMap<String, Record>) -> Vec<Record> {
        use futures_util::StreamExt;
        futures_util::stream::iter(records.into_values().filter(|r| !r.is_pending()))
            .map(|mut rec| async move {
                let d = self.for_record(&rec)?;
                let outputs = d.refreshed(&rec).await.filter(|o| *o != rec.outputs)?;
                rec.outputs = outputs;
                Some(rec)
            })
            .buffer_unordered(OBSERVE_AT_ONCE)
            .filter_map(|r| async move { r })
            .collect()
            .await
    }

    /// Observes every desired resource: a recorded one for drift, an unrecorded (or unfinished)
    /// one for what a crashed run may have left of it. Several at once (observing only reads):
    /// a no-op plan over hosts, containers and gateways waits on one round trip per resource.
    pub async fn refresh(&self, prior: &BTreeMap<String, Record>, desired: &Desired) -> BTreeMap<String, Drift> {
        use futures_util::StreamExt;
        futures_util::stream::iter(desired.iter())
            .map(|(addr, want)| async move {
                let d = self.get(want.kind)?;
                let drift = match prior.get(addr).filter(|r| !r.is_pending()) {
                    Some(rec) => d.observe(rec, want).await,
                    None => Drift::Update(d.observe_unrecorded(want).await?),
                };
                (drift != Drift::InSync).then(|| (addr.clone(), drift))
            })
            .buffer_unordered(OBSERVE_AT_ONCE)
            .filter_map(|r| async move { r })
            .collect()
            .await
    }
}
