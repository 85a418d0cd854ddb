//! `wake.<agent>`: the first message an agent gets, once, right after its first provisioning —
//! or, for an agent just restored from an archive, the restored wake (file `wake-restored`).

use std::time::Duration;

use miette::miette;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::client::{once_key, GatewayRef};
use crate::driver::{Driver, Outputs, StepCtx};
use crate::layout::Layout;
use crate::resource::Resource;
use crate::state::Record;

/// `wake.<agent>`: whom to wake, through which gateway (the message is the resource's file, so
/// changing it never wakes anyone again).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WakeInputs {
    pub agent_id: String,
    pub gateway: GatewayRef,
}

/// `wake.<agent>`: the first message an agent gets, once, right after its first provisioning —
/// or, for an agent just restored from an archive, the restored wake (file `wake-restored`).
pub struct WakeDriver {
    pub layout: Layout,
}

/// The wake resource's files: the first-provisioning message and the restored one.
pub const WAKE_FILE: &str = "wake";
pub const WAKE_RESTORED_FILE: &str = "wake-restored";

#[async_trait::async_trait]
impl Driver for WakeDriver {
    /// Sends the wake once. Its idempotency key comes from the agent and the text, and the
    /// gateway keeps it with the message: a re-run after a crash (the message sent, the step not yet
    /// recorded) finds it in the session's history, or the gateway recognises the key, and nothing
    /// is sent twice.
    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        let w: WakeInputs = r.inputs_as()?;
        let home = self.layout.agent_home(&w.agent_id);
        let restored = crate::archive::restore::marker(&home);
        let file = if restored.is_some() { WAKE_RESTORED_FILE } else { WAKE_FILE };
        let message = r
            .files
            .iter()
            .find(|f| f.path.as_os_str() == file)
            .map(|f| String::from_utf8_lossy(&f.content).into_owned())
            .unwrap_or_default();
        // A restored wake is once per restore: the archive is part of its idempotency key.
        let keyed = match &restored {
            Some(m) => format!("{message}\n{}", m.describe()),
            None => message.clone(),
        };
        let out = self.wake(&w, &message, &keyed, ctx).await?;
        if restored.is_some() {
            crate::archive::restore::clear_marker(&home);
        }
        Ok(out)
    }
    /// A wake happens once: later changes to the message do not wake the agent again.
    async fn update(&self, _r: &Resource, prior: &Record, _ctx: &StepCtx) -> miette::Result<Outputs> {
        Ok(prior.outputs.clone())
    }
    async fn delete(&self, _prior: &Record, _ctx: &StepCtx) -> miette::Result<()> {
        Ok(())
    }
}

impl WakeDriver {
    /// Sends `message` once; `keyed` is what its idempotency key is made from.
    async fn wake(&self, w: &WakeInputs, message: &str, keyed: &str, ctx: &StepCtx) -> miette::Result<Outputs> {
        let key = once_key(&w.agent_id, keyed);
        let c = w.gateway.connect().await?;
        let timeout = Duration::from_secs(180);
        for attempt in 0..3 {
            if c.holds_message(&w.agent_id, &key).await? {
                ctx.progress("already woken (the gateway holds the message); not sent again");
                return Ok(json!({"replied": false, "key": key}));
            }
            // A run the gateway already knows by this key was started by a run of fleet that died: if
            // it ended well the message is delivered; if it was aborted with its client, it was not,
            // and it goes again under the next key of the same family.
            let run_key = if attempt == 0 { key.clone() } else { format!("{key}-{attempt}") };
            match c.chat_keyed(&w.agent_id, message, &run_key, timeout).await? {
                Some(reply) => return Ok(json!({"replied": !reply.is_empty(), "key": run_key})),
                None => {
                    let ended = c.wait_run(&run_key, timeout).await?;
                    if ended == "ok" {
                        ctx.progress("the gateway had this wake already; not run again");
                        return Ok(json!({"replied": true, "key": run_key}));
                    }
                    ctx.progress(&format!("an earlier send of this wake ended {ended}; sending it again"));
                }
            }
        }
        Err(miette!("the wake of {} did not go through after 3 attempts", w.agent_id))
    }
}
