//! `fleet chat AGENT MESSAGE`: one message to an agent, its reply printed. Through the daemon
//! when it runs (the conversation is kept, `--thread` continues one); straight through the
//! agent's gateway otherwise.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use miette::miette;

use super::loaded::{load, runtime};
use super::serve::Daemon;

pub fn run(
    path: Option<&Path>,
    data_dir: Option<&Path>,
    agent: &str,
    message: &str,
    thread: &str,
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
    runtime()?.block_on(async {
        if let Some(d) = Daemon::find(&l.spec, &l.layout).await? {
            let m = d.chat(agent, thread, message, timeout).await?;
            return match m["role"].as_str() {
                Some("agent") => {
                    println!("{}", m["text"].as_str().unwrap_or_default());
                    Ok(ExitCode::SUCCESS)
                }
                Some(_) => Err(miette!("{}", m["text"].as_str().unwrap_or("no reply"))),
                None => Err(miette!("no reply within {timeout} s (the daemon keeps waiting; see `fleet status`)")),
            };
        }
        if thread != "main" {
            return Err(miette!("threads are kept by the daemon, and it is not running (declare `serve` and apply)"));
        }
        let c = gw.connect().await?;
        let reply = c.chat(agent, message, Duration::from_secs(timeout)).await?;
        println!("{reply}");
        Ok(ExitCode::SUCCESS)
    })
}
