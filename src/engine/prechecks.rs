//! What a converging plan or apply checks before anything else — for the CLI and the daemon alike:
//! every secret reference it will need resolves (an unset variable fails here, at its reference,
//! not halfway through an apply), budgets that can never trigger are warned about, and so are
//! process gateways this kernel cannot confine (no Landlock); how gateways' `limits` are held; and
//! what tool sandboxes need and give up (`sandbox_checks.rs`).

use crate::fleetfile::FleetSpec;
use crate::layout::Layout;

/// Fails at the first secret reference that does not resolve; returns the warnings to show (a
/// budget on a model nobody prices).
pub fn prechecks(spec: &FleetSpec, layout: &Layout) -> miette::Result<Vec<miette::Report>> {
    crate::fleetfile::check_secrets(spec)?;
    super::sandbox_checks::tools_present(spec, &super::sandbox_checks::missing_tools(spec))?;
    Ok(unpriced_budgets(spec, layout)
        .into_iter()
        .chain(unconfined_gateways(spec))
        .chain(limits_held(spec))
        .chain(super::sandbox_checks::without_landlock(spec))
        .chain(super::sandbox_checks::shared_trust(spec))
        .collect())
}

/// How the `limits` of process gateways are held on this machine: said every plan, since it
/// depends on where fleet runs (root and cgroups, or rlimits only — CPU time not held then).
fn limits_held(spec: &FleetSpec) -> Option<miette::Report> {
    use crate::runtime::confine::{how_limited, Held};
    let limited: Vec<&crate::fleetfile::Gateway> = process_gateways(spec).filter(|g| !g.limits.is_none()).collect();
    let names = limited.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ");
    match how_limited(&limited.first()?.limits) {
        Held::Nothing => None,
        Held::Cgroups(h) => Some(miette::miette!(
            severity = miette::Severity::Advice,
            "the limits of process gateway(s) {names} are held by {}: memory (swap included), processes, CPU time",
            h.describe()
        )),
        Held::Rlimits => Some(miette::miette!(
            severity = miette::Severity::Warning,
            help = "run fleet as root on a machine with cgroups to hold all of them, or put these gateways on an Incus host",
            "the limits of process gateway(s) {names} are held by rlimits only (fleet is not root, or this machine \
             has no cgroups): memory as its data segments, processes counted for its user; `cpus` is not held"
        )),
    }
}

/// The gateways that run as processes of this machine.
fn process_gateways(spec: &FleetSpec) -> impl Iterator<Item = &crate::fleetfile::Gateway> {
    spec.gateways.iter().filter(|g| spec.runtime_of(g) == crate::fleetfile::Runtime::Process)
}

/// Process gateways on a kernel without Landlock: their agents' tools are kept from fleet's files
/// by owners and modes only (docs/security.md). Said loudly, not refused.
fn unconfined_gateways(spec: &FleetSpec) -> Option<miette::Report> {
    let names: Vec<&str> = process_gateways(spec).map(|g| g.name.as_str()).collect();
    if names.is_empty() || !crate::runtime::confine::landlock_missing() {
        return None;
    }
    Some(miette::miette!(
        severity = miette::Severity::Warning,
        help = "run fleet on a kernel with Landlock (5.13+, `lsm=…,landlock` on its command line), or put these gateways on an Incus host",
        "this kernel has no Landlock: process gateway(s) {} cannot be confined to their homes; their agents' tools \
         can read every file of this machine their user may read",
        names.join(", ")
    ))
}

/// A budget on a model nobody prices can never trigger: said, not refused.
fn unpriced_budgets(spec: &FleetSpec, layout: &Layout) -> Option<miette::Report> {
    use crate::litellm::cost_map;
    let needs_map = spec.agents.iter().any(|a| a.spend.budget.is_some())
        && spec.providers.iter().flat_map(|p| &p.models).any(|m| m.price.is_none());
    if !needs_map {
        return None;
    }
    let venv = crate::litellm::install::venv_dir(&layout.cache_dir, &spec.litellm.version);
    let map = if spec.litellm.path.is_none() { cost_map::find(&venv).and_then(|f| cost_map::load(&f)) } else { None };
    let priced = |p: &crate::fleetfile::Provider, m: &crate::fleetfile::ModelDecl| cost_map::prices(map.as_ref(), p, m);
    crate::fleetfile::spend_check::unpriced_budgets(spec, &priced).map(miette::Report::new)
}
