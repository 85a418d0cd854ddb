//! What the executor asks of each kind of resource: look at the real thing,
//! create, update, delete. One implementation per external system.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::Reporter;
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

/// What a running step may tell the user (e.g. "pip: installing litellm…").
#[derive(Clone)]
pub struct StepCtx {
    pub address: String,
    reporter: Option<Arc<dyn Reporter>>,
}

impl StepCtx {
    pub fn new(address: &str, reporter: Arc<dyn Reporter>) -> Self {
        StepCtx { address: address.to_string(), reporter: Some(reporter) }
    }
    /// A context that reports nowhere (unit tests, benchmarks).
    pub fn silent(address: &str) -> Self {
        StepCtx { address: address.to_string(), reporter: None }
    }
    pub fn progress(&self, message: &str) {
        if let Some(r) = &self.reporter {
            r.progress(&self.address, message);
        }
    }
}

#[async_trait::async_trait]
pub trait Driver: Send + Sync {
    /// Cheap, read-only look at the real thing behind a record (files, processes, APIs).
    async fn observe(&self, _prior: &Record, _desired: &Resource) -> Drift {
        Drift::InSync
    }
    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs>;
    async fn update(&self, r: &Resource, prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs>;
    async fn delete(&self, prior: &Record, ctx: &StepCtx) -> miette::Result<()>;
}

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

    /// Observes every recorded resource that is still desired and unchanged in intent.
    pub async fn refresh(&self, prior: &BTreeMap<String, Record>, desired: &Desired) -> BTreeMap<String, Drift> {
        let mut out = BTreeMap::new();
        for (addr, rec) in prior {
            let Some(want) = desired.get(addr) else { continue };
            if let Some(d) = self.get(want.kind) {
                let drift = d.observe(rec, want).await;
                if drift != Drift::InSync {
                    out.insert(addr.clone(), drift);
                }
            }
        }
        out
    }
}
