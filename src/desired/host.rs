//! Hosts on other machines → `host.<name>`: an Incus remote fleet enrols (`address=` with a
//! `trust-token=`) or one already in the client config (`remote=`), checked and pinned.

use crate::fleetfile::{Arch, FleetSpec};
use crate::layout::Layout;
use crate::resource::{add as put, Address, Desired, Resource};
use crate::runtime::incus_host::HostInputs;

pub fn add(spec: &FleetSpec, layout: &Layout, out: &mut Desired) {
    for h in spec.hosts.iter().filter(|h| h.is_remote()) {
        let Some(remote) = h.remote_name() else { continue };
        let inputs = HostInputs {
            host: h.name.value.clone(),
            remote: remote.to_string(),
            config_dir: h.incus_config.clone().unwrap_or_else(|| layout.incus_config_dir()),
            address: h.address.as_ref().map(|a| a.value.clone()),
            trust_token: h.trust_token.as_ref().map(|t| t.value.to_string()),
            // Checked against what the host reports, written out or not: its gateways get images of it.
            arch: Some(incus_arch(h.arch).to_string()),
        };
        put(out, Resource::new(Address::Host(h.name.value.clone()), &inputs, vec![]));
    }
}

/// The architecture as Incus reports it in `/1.0` (`environment.architectures`).
fn incus_arch(a: Arch) -> &'static str {
    match a {
        Arch::Amd64 => "x86_64",
        Arch::Arm64 => "aarch64",
    }
}
