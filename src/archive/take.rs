//! Archiving an agent: its footprint moved into `<root>/<agent>-<ts>.partial/`, the conversations
//! taken out of the daemon's database, the manifest written, and the directory renamed to its
//! final name. A run killed anywhere in between is finished by the next one (the `.partial`
//! directory is found again by the agent's name).

use std::path::Path;

use miette::{IntoDiagnostic, WrapErr};

use super::footprint::Footprint;
use super::manifest::{About, Manifest};
use super::tree::{move_into, sums, sync_dir};

/// Archives what is left of `fp` on this machine. Returns the archive's id, or None when nothing
/// of the agent was left to archive (a run that finished the archive before it was killed).
pub fn archive(
    root: &Path,
    fp: &Footprint,
    about: &About,
    run: Option<i64>,
    now_secs: i64,
) -> miette::Result<Option<String>> {
    // The env file holds the agent's key and daemon token: never archived.
    match std::fs::remove_file(fp.env_file()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).into_diagnostic().wrap_err_with(|| format!("cannot remove {}", fp.env_file().display()))
        }
        _ => {}
    }
    let archives = super::list(root);
    let (id, dir) = match super::listing::partial(&archives, &fp.agent) {
        Some(a) => (a.id.clone(), a.dir.clone()),
        None => {
            let anything = fp.pieces().iter().any(|(_, p)| non_empty(p)) || has_rows(&fp.conversations, &fp.agent);
            if !anything {
                // Nothing left behind but empty directories.
                for (_, p) in fp.pieces() {
                    let _ = std::fs::remove_dir_all(p);
                }
                return Ok(None);
            }
            let mut secs = now_secs;
            let id = loop {
                let id = super::id::archive_id(&fp.agent, secs);
                if archives.iter().all(|a| a.id != id) {
                    break id;
                }
                secs += 1;
            };
            let dir = root.join(format!("{id}.partial"));
            crate::fsutil::create_private_dir(&dir)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot create {}", dir.display()))?;
            sync_dir(root);
            (id, dir)
        }
    };
    for (name, live) in fp.pieces() {
        move_into(live, &dir.join(name))?;
    }
    sync_dir(&dir);
    let conversations = super::conversations::take(&fp.conversations, &fp.agent, &dir)?;
    let manifest = Manifest {
        version: 1,
        id: id.clone(),
        agent: fp.agent.clone(),
        about: about.clone(),
        archived_at: crate::clock::format_rfc3339(now_secs),
        run,
        files: sums(&dir)?,
        conversations,
        not_kept: vec!["env file (the agent's LiteLLM key and daemon token, revoked; a restore mints new ones)".into()],
    };
    manifest.write(&dir)?;
    let done = root.join(&id);
    std::fs::rename(&dir, &done).into_diagnostic().wrap_err_with(|| format!("cannot rename {}", dir.display()))?;
    sync_dir(root);
    Ok(Some(id))
}

fn non_empty(p: &Path) -> bool {
    std::fs::read_dir(p).is_ok_and(|mut rd| rd.next().is_some())
}

fn has_rows(db: &Path, agent: &str) -> bool {
    if !db.exists() {
        return false;
    }
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT EXISTS(SELECT 1 FROM messages WHERE agent = ?1)", [agent], |r| r.get(0)))
        .unwrap_or(false)
}
