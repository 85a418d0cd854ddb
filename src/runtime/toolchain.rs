//! The Node + openclaw a process gateway runs from fleet's cache: which versions, where they
//! are. Installing them is `openclaw::toolchain`'s job.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::process::path_with;

/// The npm that installs openclaw (11.19.1 verified; its `--allow-scripts` flag is refused for
/// `--prefix` installs, so the allow-list goes in package.json).
pub const NPM_VERSION: &str = "11.19.1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Toolchain {
    pub node: String,
    pub openclaw: String,
    pub npm: String,
    pub node_dir: PathBuf,
    pub npm_dir: PathBuf,
    pub openclaw_dir: PathBuf,
}

impl Toolchain {
    pub fn new(cache: &Path, node: &str, openclaw: &str) -> Self {
        Toolchain {
            node: node.to_string(),
            openclaw: openclaw.to_string(),
            npm: NPM_VERSION.to_string(),
            node_dir: cache.join("node").join(node),
            npm_dir: cache.join("npm").join(NPM_VERSION),
            openclaw_dir: cache.join("openclaw").join(openclaw),
        }
    }
    pub fn node_bin(&self) -> PathBuf {
        self.node_dir.join("bin/node")
    }
    pub fn entry(&self) -> PathBuf {
        self.openclaw_dir.join("node_modules/openclaw/openclaw.mjs")
    }
    pub fn openclaw_installed(&self) -> bool {
        std::fs::read(self.openclaw_dir.join("node_modules/openclaw/package.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v["version"] == self.openclaw.as_str())
            && self.entry().is_file()
    }
    pub fn ready(&self) -> bool {
        self.node_bin().is_file() && self.openclaw_installed()
    }
    /// PATH with this Node first (openclaw's scripts run `#!/usr/bin/env node`).
    pub fn path_env(&self) -> String {
        path_with(&self.node_dir.join("bin"))
    }
}
