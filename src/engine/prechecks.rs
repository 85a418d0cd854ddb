//! What a converging plan or apply checks before anything else — for the CLI and the daemon alike:
//! every secret reference it will need resolves (an unset variable fails here, at its reference,
//! not halfway through an apply), and budgets that can never trigger are warned about.

use crate::fleetfile::FleetSpec;
use crate::layout::Layout;

/// Fails at the first secret reference that does not resolve; returns the warnings to show (a
/// budget on a model nobody prices).
pub fn prechecks(spec: &FleetSpec, layout: &Layout) -> miette::Result<Vec<miette::Report>> {
    crate::fleetfile::check_secrets(spec)?;
    Ok(unpriced_budgets(spec, layout).into_iter().collect())
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
