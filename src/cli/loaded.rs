//! What every command starts from: the fleet file found and loaded, its data dir resolved, and
//! a tokio runtime for the async core.

use std::path::Path;

use miette::miette;

use crate::fleetfile::{self, FleetSpec};
use crate::layout::Layout;

/// A loaded fleet file and where its data lives.
pub struct Loaded {
    pub spec: FleetSpec,
    pub layout: Layout,
}

pub fn load(path: Option<&Path>, data_dir: Option<&Path>) -> miette::Result<Loaded> {
    let file = fleetfile::locate(path).map_err(|e| miette!("{e}"))?;
    let spec = fleetfile::load(&file)?;
    let layout = Layout::resolve(&spec.name, spec.data_dir.as_deref(), data_dir);
    Ok(Loaded { spec, layout })
}

pub fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    use miette::IntoDiagnostic;
    tokio::runtime::Builder::new_multi_thread().enable_all().build().into_diagnostic()
}
