//! Which runtime a host's `runtime=` names.

use super::incus::IncusRuntime;
use super::process::ProcessRuntime;
use super::Runtime;

/// The runtime a host names.
pub fn of(kind: crate::fleetfile::Runtime) -> &'static dyn Runtime {
    match kind {
        crate::fleetfile::Runtime::Process => &ProcessRuntime,
        crate::fleetfile::Runtime::Incus => &IncusRuntime,
    }
}

/// The runtime recorded by name (`process`, `incus`); None for one this build does not know.
pub fn by_name(name: &str) -> Option<&'static dyn Runtime> {
    match name {
        "process" => Some(of(crate::fleetfile::Runtime::Process)),
        "incus" => Some(of(crate::fleetfile::Runtime::Incus)),
        _ => None,
    }
}
