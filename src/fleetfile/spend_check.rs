//! Budgets that could never trigger: an agent with a budget whose model has no known price (no
//! declared `input-cost`/`output-cost`, and not in LiteLLM's cost map) would be let through
//! forever — a plan-time warning, not silence. Pure: what LiteLLM prices is the caller's answer.

use super::diagnostic::{Problem, Problems, SpecError, Syntax};
use super::model::{FleetSpec, ModelDecl, Provider};

/// One warning per unpriced model that a budget depends on, naming the agents; None when every
/// budget can trigger. `priced`: whether LiteLLM prices the model without a declared price.
pub fn unpriced_budgets(spec: &FleetSpec, priced: &dyn Fn(&Provider, &ModelDecl) -> bool) -> Option<SpecError> {
    let syntax = if spec.source.name.ends_with(".toml") { Syntax::Toml } else { Syntax::Kdl };
    let mut problems = Problems::new(syntax);
    for p in &spec.providers {
        for m in p.models.iter().filter(|m| m.price.is_none() && !priced(p, m)) {
            let budgeted: Vec<_> =
                spec.agents.iter().filter(|a| a.spend.budget.is_some() && a.models().contains(&m.name.value)).collect();
            let Some(first) = budgeted.first() else { continue };
            let names: Vec<&str> = budgeted.iter().map(|a| a.name.value.as_str()).collect();
            let budget = first.spend.budget.expect("filtered on a budget");
            let example = syntax.pick(
                "model \"NAME\" input-cost=0.15 output-cost=0.6",
                "models = [{ name = \"NAME\", input-cost = 0.15, output-cost = 0.6 }]",
            );
            problems.push(
                Problem::new(
                    format!(
                        "no price is known for model {:?}, so the budget of {} can never trigger on its calls",
                        m.name.value,
                        names.join(", ")
                    ),
                    m.name.span,
                    "no price",
                )
                .also(budget.span, "budget here")
                .help(format!(
                    "declare what it costs, in USD per million tokens: `{}`",
                    example.replace("NAME", &m.name.value)
                )),
            );
        }
    }
    (!problems.is_empty()).then(|| problems.into_warning_report(&spec.source))
}
