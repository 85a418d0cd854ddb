//! Agents: each on its gateway (the only one, or the one given) with a model a provider offers, its
//! fallbacks likewise, the fleet's spend defaults where it sets none; then `moved` blocks (a rename
//! keeps the agent's archive), and budgets only where fleet's own key file enforces them.

use super::names::Index;
use crate::fleetfile::decode::AgentRaw;
use crate::fleetfile::model::*;
use crate::syntax::diagnostic::{did_you_mean, Problem, Problems};

pub fn agents(
    p: &mut Problems,
    idx: &Index,
    agents: Vec<AgentRaw>,
    gateways: &[Gateway],
    spend_default: Spend,
) -> Vec<Agent> {
    let syntax = idx.syntax;
    let gw_names: Vec<&str> = gateways.iter().map(|g| g.name.value.as_str()).collect();

    let mut agent_out = Vec::new();
    for a in agents {
        let gateway = match a.gateway {
            Some(g) => {
                idx.check_ref(p, &g, "gateway", &gw_names);
                g
            }
            None if gateways.len() == 1 => Spanned::new(gateways[0].name.value.clone(), a.name.span),
            None if a.gateway_attempted || idx.any_broken("gateway") => Spanned::new(String::new(), a.name.span),
            // A fleet without gateways only mints keys (for agents that run elsewhere).
            None if gateways.is_empty() => Spanned::new(String::new(), a.name.span),
            None => {
                p.push(
                    Problem::new(
                        format!("agent {:?} needs a `gateway`: the fleet has several", a.name.value),
                        a.name.span,
                        "which gateway?",
                    )
                    .help(format!(
                        "add `{}`, one of: {}",
                        syntax.assign("gateway", "\"…\""),
                        gw_names.join(", ")
                    )),
                );
                Spanned::new(String::new(), a.name.span)
            }
        };
        let Some(model) = a.model else {
            if !a.model_attempted {
                let offered = if idx.model_names.is_empty() {
                    "no provider offers any yet".to_string()
                } else {
                    format!("offered: {}", idx.model_names.join(", "))
                };
                p.push(
                    Problem::new(format!("agent {:?} needs a `model`", a.name.value), a.name.span, "model missing")
                        .help(format!("add `{}`; {offered}", syntax.assign("model", "\"…\""))),
                );
            }
            continue;
        };
        idx.check_model(p, &model, "primary");
        for f in &a.rest.fallbacks {
            idx.check_model(p, f, "fallback");
        }
        let spend = a.rest.spend.or(spend_default);
        agent_out.push(Agent { gateway, model, spend, ..a.rest });
    }
    agent_out
}

/// `moved from="agent.a" to="agent.b"`: the agent it becomes must be declared, once, and not also
/// `fresh` or restored; the old one must be gone from the file.
pub fn moved(p: &mut Problems, agent_out: &mut [Agent], moved: &[(Spanned<String>, Spanned<String>)]) {
    for (from, to) in moved {
        if agent_out.iter().any(|a| a.name.value == from.value) {
            p.push(
                Problem::new(
                    format!("agent {:?} is moved, but still declared", from.value),
                    from.span,
                    "still declared",
                )
                .help(format!("a move renames it: take `agent {:?}` out of the file", from.value)),
            );
            continue;
        }
        if moved.iter().filter(|(_, t)| t.value == to.value).count() > 1 {
            p.push(
                Problem::new(format!("two agents are moved to {:?}", to.value), to.span, "moved twice")
                    .help("keep one"),
            );
            continue;
        }
        let names: Vec<String> = agent_out.iter().map(|a| a.name.value.clone()).collect();
        let Some(a) = agent_out.iter_mut().find(|a| a.name.value == to.value) else {
            let hint = match did_you_mean(&to.value, names.iter().map(String::as_str)) {
                Some(s) => format!("did you mean {s:?}?"),
                None => "declare the agent it becomes".to_string(),
            };
            p.push(
                Problem::new(
                    format!("moved to agent {:?}, which the file does not declare", to.value),
                    to.span,
                    "no such agent",
                )
                .help(hint),
            );
            continue;
        };
        if a.fresh || a.restore.is_some() {
            p.push(
                Problem::new(
                    format!("agent {:?} is moved from {:?} and also says `fresh` or `restore`", to.value, from.value),
                    to.span,
                    "which one?",
                )
                .help("a move brings the old agent's archive; drop `fresh`/`restore` or the `moved` block"),
            );
            continue;
        }
        a.moved_from = Some(from.value.clone());
    }
}

/// Budgets and limits live in fleet's key file, which its auth module reads: a database key backend
/// does not enforce them.
pub fn budgets_need_file_keys(p: &mut Problems, litellm: &Litellm, agents: &[Agent]) {
    if let KeyBackend::Database { .. } = litellm.keys {
        // Budgets and limits live in fleet's key file, which its auth module reads.
        for a in agents.iter().filter(|a| !a.spend.is_empty()) {
            let span = a.spend.budget.map(|b| b.span).unwrap_or(a.name.span);
            p.push(
                Problem::new(
                    format!("agent {:?} has a budget or limits, which the database key backend does not enforce", a.name.value),
                    span,
                    "not enforced",
                )
                .help("fleet enforces budgets and limits with its file key backend: drop `keys` from `litellm`, or drop the budget"),
            );
        }
    }
}
