//! `fleet chat AGENT MESSAGE`: one message through the agent's gateway, the final reply printed.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use miette::{miette, IntoDiagnostic};

use super::load;
use crate::openclaw::agent::{chat, GatewayRef};

pub fn run(
    path: Option<&Path>,
    data_dir: Option<&Path>,
    agent: &str,
    message: &str,
    timeout: u64,
) -> miette::Result<ExitCode> {
    let l = load(path, data_dir)?;
    let known: Vec<&str> = l.spec.agents.iter().map(|a| a.name.value.as_str()).collect();
    if !known.contains(&agent) {
        return Err(miette!(
            help = crate::spec::diagnostic::choices_help(agent, &known),
            "no agent {agent:?} in fleet {}",
            l.spec.name
        ));
    }
    let desired = crate::resource::desired(&l.spec, &l.layout);
    let r = desired.get(&format!("agent.{agent}")).ok_or_else(|| miette!("agent {agent} has no gateway"))?;
    let gw: GatewayRef = serde_json::from_value(r.inputs["gateway"].clone()).into_diagnostic()?;
    let reply = super::runtime()?.block_on(async {
        let c = gw.connect().await?;
        chat(&c, agent, message, Duration::from_secs(timeout)).await
    })?;
    println!("{reply}");
    Ok(ExitCode::SUCCESS)
}
