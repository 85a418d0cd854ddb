//! LiteLLM's bundled cost map (`model_prices_and_context_window_backup.json` in the installed
//! package, what the proxy prices calls with offline): which models it has a price for. Read only
//! to warn about budgets that could never trigger.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::fleetfile::{ModelDecl, Provider, ProviderKind};

const MAP_FILE: &str = "model_prices_and_context_window_backup.json";

/// The map's file inside a venv (`lib/python3.*/site-packages/litellm/`), if installed.
pub fn find(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.flatten().map(|e| e.path().join("site-packages/litellm").join(MAP_FILE)).find(|p| p.is_file())
}

/// The names of the models the map prices (a per-token input or output cost).
pub fn load(file: &Path) -> Option<HashSet<String>> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    let priced = |v: &serde_json::Value| {
        ["input_cost_per_token", "output_cost_per_token"].iter().any(|k| v[k].as_f64().is_some_and(|c| c > 0.0))
    };
    Some(doc.as_object()?.iter().filter(|(_, v)| priced(v)).map(|(k, _)| k.clone()).collect())
}

/// Whether LiteLLM prices a declared model without a declared price: by the name it routes to
/// (`openai/gpt-4o-mini`) or the bare name. `map` None (LiteLLM not installed yet, or one fleet
/// does not manage): a real provider's model gets the benefit of the doubt, a mock's does not
/// (mock names are made up).
pub fn prices(map: Option<&HashSet<String>>, p: &Provider, m: &ModelDecl) -> bool {
    let name = &m.name.value;
    match map {
        Some(map) => {
            let prefix = super::config::route_prefix(p.kind);
            map.contains(name) || map.contains(&format!("{prefix}/{name}"))
        }
        None => p.kind != ProviderKind::Mock,
    }
}
