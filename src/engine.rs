//! The one pipeline behind `plan` and `apply`: desired resources, recorded
//! state, observed drift → plan → execution. Plan and apply share every line
//! up to execution, so they cannot disagree.

use std::collections::BTreeMap;
use std::sync::Arc;

use miette::{miette, IntoDiagnostic, WrapErr};

use crate::exec::driver::{Drift, Drivers};
use crate::exec::{Execution, Reporter, Summary};
use crate::layout::Layout;
use crate::litellm::keys::{FileKeyStore, KeyStore};
use crate::litellm::resources::{FilesDriver, KeyDriver, SecretFileDriver};
use crate::plan::{diff, Plan};
use crate::resource::{desired, Desired, Kind};
use crate::spec::{FleetSpec, KeyBackend};
use crate::state::{Record, StateError, Store};

/// Everything a plan was computed from, kept so apply executes exactly it.
pub struct Prepared {
    pub desired: Desired,
    pub prior: BTreeMap<String, Record>,
    pub drift: BTreeMap<String, Drift>,
    pub plan: Plan,
    pub drivers: Drivers,
}

/// `overwrite`: agent-owned workspace files (USER.md, MEMORY.md) are replaced too.
pub fn drivers(spec: &FleetSpec, layout: &Layout, overwrite: bool) -> miette::Result<Drivers> {
    let store: Arc<dyn KeyStore> = match spec.litellm.keys {
        KeyBackend::File => FileKeyStore::open(&layout.keys_file()),
        KeyBackend::Database { .. } => {
            let master = match &spec.litellm.master_key {
                Some(r) => r.to_string(),
                None => format!("file:{}", layout.master_key_file().display()),
            };
            let url = crate::resource::proxy_base_url(spec);
            Arc::new(crate::litellm::db_keys::DatabaseKeyStore::new(url.trim_end_matches("/v1"), &master))
        }
    };
    let mut d = Drivers::default();
    d.insert(Kind::Secret, Arc::new(SecretFileDriver));
    d.insert(Kind::LitellmConfig, Arc::new(FilesDriver));
    d.insert(Kind::LitellmInstall, Arc::new(crate::litellm::install::InstallDriver));
    d.insert(Kind::LitellmProxy, Arc::new(crate::litellm::proxy::ProxyDriver));
    d.insert(Kind::Key, Arc::new(KeyDriver { store }));
    d.insert(Kind::Toolchain, Arc::new(crate::openclaw::toolchain::ToolchainDriver));
    let mut runtimes: std::collections::HashMap<String, Arc<dyn crate::runtime::Runtime>> = Default::default();
    runtimes.insert("process".into(), Arc::new(crate::runtime::process::ProcessRuntime));
    runtimes.insert("incus".into(), Arc::new(crate::runtime::incus::IncusRuntime));
    d.insert(Kind::Image, Arc::new(crate::image::resources::ImageDriver { cache: layout.cache_dir.clone() }));
    d.insert(Kind::Import, Arc::new(crate::image::resources::ImportDriver));
    d.insert(Kind::Gateway, Arc::new(crate::openclaw::gateway::GatewayDriver { runtimes }));
    let listings = Arc::new(crate::openclaw::agent::Listings::default());
    d.insert(Kind::Agent, crate::openclaw::agent::driver(overwrite, listings.clone()));
    d.insert(Kind::GatewayModels, Arc::new(crate::openclaw::models::ModelsDriver { listings }));
    d.insert(Kind::Wake, Arc::new(crate::openclaw::models::WakeDriver));
    Ok(d)
}

/// Computes the plan. Reads state and observes resources; writes nothing.
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

pub async fn prepare(
    spec: &FleetSpec,
    layout: &Layout,
    store: Option<&Store>,
    goal: Goal,
    overwrite: bool,
) -> miette::Result<Prepared> {
    let desired = match goal {
        Goal::Converge => desired(spec, layout),
        Goal::Destroy => Desired::new(),
    };
    let prior = match store {
        Some(s) => s.load().into_diagnostic()?,
        None => BTreeMap::new(),
    };
    let drivers = drivers(spec, layout, overwrite)?;
    let drift = drivers.refresh(&prior, &desired).await;
    let plan = diff(&desired, &prior, &drift);
    Ok(Prepared { desired, prior, drift, plan, drivers })
}

/// Opens the state for reading only; None when the fleet was never applied.
pub fn open_readonly(layout: &Layout) -> miette::Result<Option<Store>> {
    Store::open_existing_readonly(&layout.state_db()).into_diagnostic()
}

/// Opens (creating) the data dir and state, and takes the apply lock.
pub fn open_locked(layout: &Layout, command: &str) -> miette::Result<Store> {
    crate::fsutil::create_private_dir(&layout.data_dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot create data dir {}", layout.data_dir.display()))?;
    let mut store = Store::open(&layout.state_db()).into_diagnostic()?;
    match store.lock(command) {
        Ok(_) => Ok(store),
        Err(StateError::Locked(h)) => Err(miette!(
            help = "wait for it to finish; if that process is gone for good on another host, run `fleet force-unlock`",
            "another fleet apply is running: {h}"
        )),
        Err(e) => Err(e).into_diagnostic(),
    }
}

pub async fn execute(
    p: &Prepared,
    store: &Store,
    command: &str,
    jobs: usize,
    reporter: Arc<dyn Reporter>,
) -> miette::Result<Summary> {
    let run_id = store.begin_run(command).into_diagnostic()?;
    let summary = Execution {
        plan: &p.plan,
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
    let status = if summary.success() { "ok" } else { "failed" };
    store.finish_run(run_id, status).into_diagnostic()?;
    Ok(summary)
}
