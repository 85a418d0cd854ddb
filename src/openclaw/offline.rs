//! A stopped gateway's openclaw.json, edited on disk: what a gateway that cannot be asked (it is not
//! running) would otherwise be told over its RPC. Only for a gateway fleet saw is down.

use std::path::Path;

use miette::{IntoDiagnostic, WrapErr};
use serde_json::Value;

/// The provider entry fleet gives an agent (its key, its models) in its gateway's config.
pub fn provider_id(agent: &str) -> String {
    format!("fleet-{agent}")
}

/// Takes an agent's entry and its fleet provider out of the config document.
pub fn forget_in(doc: &mut Value, id: &str) -> bool {
    let mut changed = false;
    if let Some(e) = doc.pointer_mut("/agents/entries").and_then(Value::as_object_mut) {
        changed |= e.remove(id).is_some();
    }
    if let Some(p) = doc.pointer_mut("/models/providers").and_then(Value::as_object_mut) {
        changed |= p.remove(&provider_id(id)).is_some();
    }
    changed
}

/// One edit of a config file at a time: an apply removes several agents of one stopped gateway at
/// once, and each edit reads, changes and writes back the whole file.
static EDITS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `forget_in` on a stopped gateway's openclaw.json (written back atomically, 0600).
pub fn forget_agent(config: &Path, id: &str) -> miette::Result<()> {
    let _one = EDITS.lock().unwrap_or_else(|p| p.into_inner());
    let mut doc: Value = serde_json::from_slice(&std::fs::read(config).into_diagnostic()?)
        .into_diagnostic()
        .wrap_err_with(|| format!("{} is not JSON", config.display()))?;
    if forget_in(&mut doc, id) {
        let bytes = serde_json::to_vec_pretty(&doc).into_diagnostic()?;
        crate::fsutil::write_atomic(config, &bytes, 0o600).into_diagnostic()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_that_agent_and_its_provider_go() {
        let mut doc = json!({"agents": {"entries": {"alice": {}, "bob": {}}},
            "models": {"providers": {"fleet-alice": {"apiKey": "sk-x"}, "fleet-bob": {}}}, "gateway": {"port": 1}});
        assert!(forget_in(&mut doc, "alice"));
        assert_eq!(
            doc,
            json!({"agents": {"entries": {"bob": {}}}, "models": {"providers": {"fleet-bob": {}}}, "gateway": {"port": 1}})
        );
        assert!(!forget_in(&mut doc, "alice"), "twice is a no-op");
    }
}
