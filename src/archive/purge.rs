//! Purging archives: permanent. The directory is renamed to `<id>.purging` (no longer an archive
//! to anyone) and then removed; a purge killed in between is finished by the next one.

use std::path::Path;

use miette::{miette, IntoDiagnostic, WrapErr};

use super::listing::{Archive, ArchiveState};

/// What a purge removed (or, dry, would remove).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Purged {
    pub id: String,
    pub agent: String,
    pub files: usize,
    pub bytes: u64,
    pub conversations: usize,
}

/// The archives `--older-than` selects: finished ones archived before `cutoff_secs`.
pub fn older_than(archives: &[Archive], cutoff_secs: i64) -> Vec<&Archive> {
    archives
        .iter()
        .filter(|a| a.state == ArchiveState::Ready)
        .filter(|a| {
            a.manifest
                .as_ref()
                .and_then(|m| crate::clock::parse_rfc3339_ms(&m.archived_at))
                .is_some_and(|ms| ms.div_euclid(1000) < cutoff_secs)
        })
        .collect()
}

/// The archive `id`, if it can be purged.
pub fn by_id<'a>(archives: &'a [Archive], id: &str) -> miette::Result<&'a Archive> {
    let a = super::listing::find(archives, id)?;
    match &a.state {
        ArchiveState::Ready => Ok(a),
        ArchiveState::Partial => Err(miette!(
            help = "the agent is still recorded; the next `fleet apply` finishes the archive",
            "archive {id} is not finished"
        )),
        ArchiveState::Restoring(agent) => Err(miette!(
            help = "the next `fleet apply` finishes the restore",
            "archive {id} is being restored as agent {agent}"
        )),
    }
}

pub fn describe(a: &Archive) -> Purged {
    let m = a.manifest.as_ref();
    Purged {
        id: a.id.clone(),
        agent: a.agent().to_string(),
        files: m.map(|m| m.files.len()).unwrap_or(0),
        bytes: m.map(|m| m.bytes()).unwrap_or_else(|| super::tree::size(&a.dir)),
        conversations: m.map(|m| m.conversations).unwrap_or(0),
    }
}

/// Removes an archive for good.
pub fn purge(root: &Path, a: &Archive) -> miette::Result<Purged> {
    let what = describe(a);
    let doomed = root.join(format!("{}.purging", a.id));
    std::fs::rename(&a.dir, &doomed).into_diagnostic().wrap_err_with(|| format!("cannot take {}", a.dir.display()))?;
    super::tree::sync_dir(root);
    std::fs::remove_dir_all(&doomed)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot remove {}", doomed.display()))?;
    Ok(what)
}

/// Finishes purges a killed run left (`*.purging`).
pub fn finish_interrupted(root: &Path) {
    let Ok(rd) = std::fs::read_dir(root) else { return };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().ends_with(".purging") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
