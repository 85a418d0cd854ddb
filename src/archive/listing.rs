//! What the archive directory holds: finished archives, and work a killed run left.

use std::path::{Path, PathBuf};

use super::manifest::Manifest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveState {
    /// Finished: manifest written, final name.
    Ready,
    /// An archive a killed run was writing (`<id>.partial`); the agent is still recorded, and the
    /// next apply finishes it.
    Partial,
    /// A restore a killed run began (`<id>.restoring-<agent>`); the next apply finishes it.
    Restoring(String),
}

#[derive(Debug, Clone)]
pub struct Archive {
    pub id: String,
    pub dir: PathBuf,
    pub state: ArchiveState,
    /// None for a partial archive (its manifest comes last) or an unreadable one.
    pub manifest: Option<Manifest>,
}

impl Archive {
    /// The agent it holds, from the manifest or else the id.
    pub fn agent(&self) -> &str {
        self.manifest.as_ref().map(|m| m.agent.as_str()).or_else(|| super::id::agent_of(&self.id)).unwrap_or("")
    }
}

/// Every archive under `root`, oldest first (by id: agent, then time, so grouped by agent).
pub fn list(root: &Path) -> Vec<Archive> {
    let Ok(rd) = std::fs::read_dir(root) else { return Vec::new() };
    let mut out: Vec<Archive> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (id, state) = if let Some(id) = name.strip_suffix(".partial") {
                (id.to_string(), ArchiveState::Partial)
            } else if let Some((id, agent)) = name.split_once(".restoring-") {
                (id.to_string(), ArchiveState::Restoring(agent.to_string()))
            } else {
                (name.clone(), ArchiveState::Ready)
            };
            super::id::agent_of(&id)?;
            let manifest = Manifest::read(&e.path()).ok();
            Some(Archive { id, dir: e.path(), state, manifest })
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The finished archive an agent is restored from: `named`, or else the newest of its own name.
pub fn pick<'a>(archives: &'a [Archive], agent: &str, named: Option<&str>) -> Option<&'a Archive> {
    let ready = archives.iter().filter(|a| a.state == ArchiveState::Ready && a.manifest.is_some());
    match named {
        Some(id) => ready.into_iter().find(|a| a.id == id),
        None => ready.filter(|a| a.agent() == agent).max_by(|a, b| a.id.cmp(&b.id)),
    }
}

/// A restore into `agent` that a killed run began.
pub fn restoring<'a>(archives: &'a [Archive], agent: &str) -> Option<&'a Archive> {
    archives.iter().find(|a| a.state == ArchiveState::Restoring(agent.to_string()))
}

/// An archive of `agent` that a killed run was writing.
pub fn partial<'a>(archives: &'a [Archive], agent: &str) -> Option<&'a Archive> {
    archives.iter().find(|a| a.state == ArchiveState::Partial && super::id::agent_of(&a.id) == Some(agent))
}

/// The archive `id`, or an error listing the ones there are.
pub fn find<'a>(archives: &'a [Archive], id: &str) -> miette::Result<&'a Archive> {
    archives.iter().find(|a| a.id == id).ok_or_else(|| {
        let known: Vec<&str> = archives.iter().map(|a| a.id.as_str()).collect();
        let help = if known.is_empty() {
            "there are no archives".to_string()
        } else {
            format!("archives: {}", known.join(", "))
        };
        miette::miette!(help = help, "no archive {id}")
    })
}
