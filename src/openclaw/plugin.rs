//! `fleet-trace`, fleet's own OpenClaw plugin (JavaScript under `plugin/`, shipped inside fleet's
//! binary): written into each gateway's home, enabled by the gateway's settings, covered by the
//! gateway's inputs (a new plugin restarts the gateway). It turns every run of every agent —
//! chat, heartbeat, any channel — into trace events, spools them in the home and ships them to the
//! daemon's `POST /v1/trace` with the gateway's own token (docs/trace.md).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::fsutil::sha256_hex;

pub const ID: &str = "fleet-trace";

const FILES: &[(&str, &str)] = &[
    ("index.js", include_str!("plugin/index.js")),
    ("openclaw.plugin.json", include_str!("plugin/openclaw.plugin.json")),
    ("package.json", include_str!("plugin/package.json")),
];

/// What this build's plugin is: a new one restarts the gateways that load it.
pub fn digest() -> String {
    let all: Vec<u8> = FILES.iter().flat_map(|(n, c)| [n.as_bytes(), b"\0", c.as_bytes(), b"\0"].concat()).collect();
    sha256_hex(&all)
}

/// Where the plugin lives in a gateway home.
pub fn dir(home: &Path) -> PathBuf {
    home.join(".fleet/plugins").join(ID)
}

/// The plugin's files, as they go into a gateway home (paths relative to it).
pub fn files() -> Vec<crate::runtime::HomeFile> {
    FILES
        .iter()
        .map(|(name, content)| crate::runtime::HomeFile {
            path: dir(Path::new("")).join(name),
            content: content.as_bytes().to_vec(),
            mode: 0o644,
        })
        .collect()
}

/// The gateway's `plugins` settings: load fleet-trace from the home (as the gateway sees it),
/// let it see conversations, ship to `url`.
pub fn settings(home_inside: &Path, url: &str) -> Value {
    json!({
        "load": {"paths": [dir(home_inside)]},
        "entries": {ID: {"enabled": true, "hooks": {"allowConversationAccess": true}, "config": {"url": url}}},
    })
}

/// Takes fleet's plugin out of an openclaw.json (its entry and its load path), leaving the rest.
pub fn unload(config: &mut Value) {
    let Some(plugins) = config.get_mut("plugins").and_then(Value::as_object_mut) else { return };
    if let Some(entries) = plugins.get_mut("entries").and_then(Value::as_object_mut) {
        entries.remove(ID);
    }
    if let Some(paths) = plugins.get_mut("load").and_then(|l| l.get_mut("paths")).and_then(Value::as_array_mut) {
        let ours = format!(".fleet/plugins/{ID}");
        paths.retain(|p| !p.as_str().is_some_and(|p| p.ends_with(&ours)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_files_go_under_the_homes_plugin_dir() {
        let files = files();
        assert_eq!(files.len(), FILES.len());
        let manifest = files.iter().find(|f| f.path.ends_with("openclaw.plugin.json")).unwrap();
        assert_eq!(manifest.path, dir(Path::new("")).join("openclaw.plugin.json"));
        let manifest: Value = serde_json::from_slice(&manifest.content).unwrap();
        assert_eq!(manifest["id"], ID);
        assert!(files.iter().all(|f| f.path.is_relative() && f.mode == 0o644));
        assert_eq!(digest().len(), 64);
    }

    #[test]
    fn unload_takes_out_only_fleets_plugin() {
        let mut c = json!({"plugins": settings(Path::new("/root"), "http://x/v1/trace"), "gateway": {"port": 1}});
        c["plugins"]["entries"]["other"] = json!({"enabled": true});
        c["plugins"]["load"]["paths"].as_array_mut().unwrap().push(json!("/opt/other"));
        unload(&mut c);
        assert_eq!(c["plugins"]["entries"], json!({"other": {"enabled": true}}));
        assert_eq!(c["plugins"]["load"]["paths"], json!(["/opt/other"]));
        assert_eq!(c["gateway"]["port"], 1);
    }
}
