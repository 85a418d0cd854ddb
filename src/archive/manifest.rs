//! `manifest.json`: what an archive holds and where it came from.

use std::collections::BTreeMap;
use std::path::Path;

use miette::{IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};

use super::tree::FileSum;

/// What fleet knew of the agent when it was archived (from its record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct About {
    pub gateway: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub runtime: String,
    #[serde(default)]
    pub model: String,
    /// name, role, emoji, vibe as the fleet file gave them.
    #[serde(default)]
    pub identity: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub id: String,
    pub agent: String,
    #[serde(flatten)]
    pub about: About,
    /// RFC 3339, UTC.
    pub archived_at: String,
    /// The apply run that archived it (`fleet state` lists runs).
    pub run: Option<i64>,
    /// Every file, by its path inside the archive.
    pub files: BTreeMap<String, FileSum>,
    /// Messages of the agent's conversations with the daemon (`conversations.jsonl`).
    pub conversations: usize,
    /// What was deliberately left out.
    pub not_kept: Vec<String>,
}

pub const FILE: &str = "manifest.json";

impl Manifest {
    pub fn read(dir: &Path) -> miette::Result<Manifest> {
        let p = dir.join(FILE);
        let bytes = std::fs::read(&p).into_diagnostic().wrap_err_with(|| format!("cannot read {}", p.display()))?;
        serde_json::from_slice(&bytes).into_diagnostic().wrap_err_with(|| format!("unreadable {}", p.display()))
    }
    pub fn write(&self, dir: &Path) -> miette::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("a manifest serialises");
        let p = dir.join(FILE);
        crate::fsutil::write_atomic(&p, &bytes, 0o600)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write {}", p.display()))
    }
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.bytes).sum()
    }
}
