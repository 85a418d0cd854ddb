//! `fleet chat AGENT MESSAGE`: one message through the agent's gateway, the final reply printed.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use miette::miette;

use super::loaded::{load, runtime};

pub fn run(
    path: Option<&Path>,
    data_dir: Option<&Path>,
    agent: &str,
    message: &str,
    timeout: u64,
) -> miette::Result<ExitCode> {
    let l = load(path, data_dir)?;
    let known: Vec<&str> = l.spec.agents.iter().map(|a| a.name.value.as_str()).collect();
    let Some(a) = l.spec.agents.iter().find(|a| a.name.value == agent) else {
        return Err(miette!(
            help = crate::fleetfile::diagnostic::choices_help(agent, &known),
            "no agent {agent:?} in fleet {}",
            l.spec.name
        ));
    };
    let g = l
        .spec
        .gateways
        .iter()
        .find(|g| g.name.value == a.gateway.value)
        .ok_or_else(|| miette!("agent {agent} has no gateway"))?;
    let gw = crate::desired::gateway_ref(&l.spec, &l.layout, g);
    let reply = runtime()?.block_on(async {
        let c = gw.connect().await?;
        c.chat(agent, message, Duration::from_secs(timeout)).await
    })?;
    println!("{reply}");
    Ok(ExitCode::SUCCESS)
}
