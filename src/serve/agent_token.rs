//! `serve.token.<agent>`: the agent's own token for the daemon, minted once and written into its
//! env file as `FLEET_URL` and `FLEET_TOKEN` (0600) next to its LiteLLM key. State keeps only the
//! token's sha256, which is what the daemon checks against. It lets the agent read and write its
//! own conversations and nothing else.

use std::path::PathBuf;

use miette::miette;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::driver::{Drift, Driver, Outputs, StepCtx};
use crate::litellm::keys::{hash_key, mint_raw, read_env_var, set_serve_lines};
use crate::resource::Resource;
use crate::state::Record;

pub const TOKEN_PREFIX: &str = "fleet-agent-";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentTokenInputs {
    pub agent: String,
    pub env_file: PathBuf,
    /// The daemon as the agent reaches it.
    pub url: String,
}

pub struct AgentTokenDriver;

impl AgentTokenDriver {
    /// Keeps the token the env file holds when it is the recorded one (or there is no record);
    /// mints one otherwise.
    fn converge(t: &AgentTokenInputs, recorded: Option<&str>) -> miette::Result<Outputs> {
        if !t.env_file.exists() {
            return Err(miette!("{} does not exist (the agent's key step writes it)", t.env_file.display()));
        }
        let have =
            read_env_var(&t.env_file, "FLEET_TOKEN").filter(|tok| recorded.is_none_or(|h| h == hash_key(tok.expose())));
        let token = have.unwrap_or_else(|| mint_raw(TOKEN_PREFIX));
        set_serve_lines(&t.env_file, Some((&t.url, &token)))?;
        Ok(json!({"sha256": hash_key(token.expose())}))
    }
}

#[async_trait::async_trait]
impl Driver for AgentTokenDriver {
    async fn observe(&self, prior: &Record, _desired: &Resource) -> Drift {
        let Ok(t) = prior.inputs_as::<AgentTokenInputs>() else { return Drift::Update("unreadable record".into()) };
        let recorded = prior.outputs.get("sha256").and_then(Value::as_str).unwrap_or_default();
        match read_env_var(&t.env_file, "FLEET_TOKEN") {
            None => Drift::Update(format!("{} has no FLEET_TOKEN; a new token will be minted", t.env_file.display())),
            Some(tok) if hash_key(tok.expose()) != recorded => Drift::Update(format!(
                "{} holds a FLEET_TOKEN fleet did not mint; a new one will be minted",
                t.env_file.display()
            )),
            Some(_)
                if read_env_var(&t.env_file, "FLEET_URL").map(|u| u.expose().to_string()) != Some(t.url.clone()) =>
            {
                Drift::Update(format!("FLEET_URL in {} changed outside fleet", t.env_file.display()))
            }
            Some(_) => Drift::InSync,
        }
    }

    async fn create(&self, r: &Resource, _ctx: &StepCtx) -> miette::Result<Outputs> {
        Self::converge(&r.inputs_as()?, None)
    }

    async fn update(&self, r: &Resource, prior: &Record, _ctx: &StepCtx) -> miette::Result<Outputs> {
        Self::converge(&r.inputs_as()?, prior.outputs.get("sha256").and_then(Value::as_str))
    }

    /// Removes the lines; the daemon stops accepting the token once the record is gone.
    async fn delete(&self, prior: &Record, _ctx: &StepCtx) -> miette::Result<()> {
        let t: AgentTokenInputs = prior.inputs_as()?;
        if t.env_file.exists() {
            set_serve_lines(&t.env_file, None)?;
        }
        Ok(())
    }
}
