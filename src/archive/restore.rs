//! Restoring an archive under an agent's name: the archive is renamed to
//! `<id>.restoring-<agent>` (so no other restore takes it), its pieces move back into place, its
//! conversations go back into the daemon's database, a marker tells the agent's first steps that
//! this is a restore, and the emptied archive is removed. A run killed anywhere in between is
//! finished by the next one (found by the `.restoring-<agent>` name).

use std::path::{Path, PathBuf};

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};

use super::footprint::Footprint;
use super::tree::{move_into, sync_dir};

/// `<agent home>/previous-sessions/<agent>/`: OpenClaw's sessions of an agent restored under another name.
pub const PREVIOUS_SESSIONS: &str = "previous-sessions";

/// `<agent home>/restored.json`: the agent's footprint was brought back (from an archive, or from
/// the gateway it moved away from) and it has not been provisioned and woken since.
pub const MARKER: &str = "restored.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// The archive id, when it came from one.
    #[serde(default)]
    pub archive: Option<String>,
    /// The gateway it moved from, when it did.
    #[serde(default)]
    pub moved_from: Option<String>,
    pub at: String,
}

impl Restored {
    pub fn describe(&self) -> String {
        match (&self.archive, &self.moved_from) {
            (Some(a), _) => format!("archive {a}"),
            (None, Some(g)) => format!("gateway {g}"),
            (None, None) => "an earlier footprint".into(),
        }
    }
}

/// How an agent that has an archive comes back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Restore {
    /// From the newest archive of its own name, if any (the default).
    #[default]
    Newest,
    /// Provisioned afresh, archives untouched (`fresh=#true`).
    Fresh,
    /// From this archive (`restore="alice-20261129T070000Z"`), under any name.
    From(String),
    /// From the newest archive of this other agent (`moved from="agent.<it>"`): the removal of the
    /// old name in the same apply makes it.
    Agent(String),
}

impl Restore {
    pub fn is_newest(&self) -> bool {
        *self == Restore::Newest
    }
    fn named(&self) -> Option<&str> {
        match self {
            Restore::From(id) => Some(id),
            _ => None,
        }
    }
}

/// The archive `agent` would be restored from now: one a killed run began restoring, or the one
/// `how` picks. Err: the named archive does not exist.
pub fn planned(root: &Path, agent: &str, how: &Restore) -> Result<Option<String>, String> {
    let archives = super::list(root);
    // A restore begun is finished whatever the file says now: part of the agent is back already.
    if let Some(a) = super::listing::restoring(&archives, agent) {
        return Ok(Some(a.id.clone()));
    }
    if *how == Restore::Fresh {
        return Ok(None);
    }
    if let Restore::Agent(old) = how {
        return Ok(super::listing::pick(&archives, old, None).map(|a| a.id.clone()));
    }
    match (super::listing::pick(&archives, agent, how.named()), how.named()) {
        (Some(a), _) => Ok(Some(a.id.clone())),
        (None, Some(id)) => Err(format!("archive {id} does not exist (`fleet archive list` shows what there is)")),
        (None, None) => Ok(None),
    }
}

/// Restores what `how` picks into `fp`. Returns the archive restored, if any.
pub fn restore(root: &Path, fp: &Footprint, how: &Restore) -> miette::Result<Option<String>> {
    let Some(id) = planned(root, &fp.agent, how).map_err(|e| miette!("agent {}: {e}", fp.agent))? else {
        return Ok(None);
    };
    let work = root.join(format!("{id}.restoring-{}", fp.agent));
    if !work.exists() {
        let from = root.join(&id);
        std::fs::rename(&from, &work).into_diagnostic().wrap_err_with(|| format!("cannot take {}", from.display()))?;
        sync_dir(root);
    }
    // OpenClaw's agent database is bound to the id it was made for ("belongs to agent bob;
    // requested agent robert", measured): under another name it is kept in the agent's home,
    // beside its trace, and not given to the gateway.
    let was = super::manifest::Manifest::read(&work)
        .map(|m| m.agent)
        .ok()
        .or_else(|| super::id::agent_of(&id).map(String::from));
    let renamed = was.as_deref().filter(|w| *w != fp.agent);
    for (name, live) in fp.pieces() {
        match renamed {
            Some(old) if name == super::footprint::PIECES[1] => {
                move_into(&work.join(name), &fp.home.join(PREVIOUS_SESSIONS).join(old))?
            }
            _ => move_into(&work.join(name), live)?,
        }
    }
    super::conversations::put_back(&fp.conversations, &fp.agent, &work)?;
    let marker = Restored { archive: Some(id.clone()), moved_from: None, at: crate::clock::now() };
    write_marker(&fp.home, &marker)?;
    std::fs::remove_dir_all(&work).into_diagnostic().wrap_err_with(|| format!("cannot remove {}", work.display()))?;
    sync_dir(root);
    Ok(Some(id))
}

fn marker_path(home: &Path) -> PathBuf {
    home.join(MARKER)
}

pub fn write_marker(home: &Path, m: &Restored) -> miette::Result<()> {
    let p = marker_path(home);
    crate::fsutil::write_atomic(&p, &serde_json::to_vec(m).expect("serialises"), 0o600)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", p.display()))
}

/// The marker of a restore not yet followed by a wake.
pub fn marker(home: &Path) -> Option<Restored> {
    std::fs::read(marker_path(home)).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

/// The agent has been woken after its restore.
pub fn clear_marker(home: &Path) {
    let _ = std::fs::remove_file(marker_path(home));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{list, About, ArchiveState};

    fn footprint(root: &Path, agent: &str) -> Footprint {
        Footprint {
            agent: agent.into(),
            workspace: root.join("gw/workspaces").join(agent),
            gateway_state: root.join("gw/state/agents").join(agent),
            home: root.join("agents").join(agent),
            conversations: root.join("serve/conversations.db"),
        }
    }

    fn live(fp: &Footprint) {
        std::fs::create_dir_all(&fp.workspace).unwrap();
        std::fs::write(fp.workspace.join("USER.md"), "edited by hand").unwrap();
        std::fs::create_dir_all(fp.gateway_state.join("agent")).unwrap();
        std::fs::write(fp.gateway_state.join("agent/openclaw-agent.sqlite"), "sessions").unwrap();
        std::fs::create_dir_all(fp.home.join("trace")).unwrap();
        std::fs::write(fp.home.join("trace/20261129T07.db"), "trace").unwrap();
        std::fs::write(fp.home.join("env"), "OPENAI_API_KEY=sk-secret\n").unwrap();
    }

    #[test]
    fn an_agent_goes_into_an_archive_and_comes_back_byte_for_byte_without_its_secrets() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("archive");
        let bob = footprint(d.path(), "bob");
        live(&bob);
        let about = About { gateway: "gw".into(), model: "m".into(), ..About::default() };
        let id = crate::archive::take::archive(&root, &bob, &about, Some(7), 1_796_022_000).unwrap().unwrap();
        assert_eq!(id, "bob-20261130T070000Z");
        assert!(!bob.workspace.exists() && !bob.home.exists() && !bob.gateway_state.exists());
        let a = &list(&root)[0];
        assert_eq!(a.state, ArchiveState::Ready);
        let m = a.manifest.as_ref().unwrap();
        assert_eq!(m.run, Some(7));
        assert_eq!(m.files["workspace/USER.md"].sha256, crate::fsutil::sha256_hex(b"edited by hand"));
        assert!(m.files.keys().all(|f| !f.ends_with("env")), "no secret archived: {:?}", m.files.keys());
        // Archiving again finds nothing left: no second archive.
        assert_eq!(crate::archive::take::archive(&root, &bob, &about, None, 1_796_022_001).unwrap(), None);
        assert_eq!(planned(&root, "bob", &Restore::Fresh), Ok(None));
        assert_eq!(planned(&root, "bob", &Restore::Newest), Ok(Some(id.clone())));
        assert!(planned(&root, "bob", &Restore::From("bob-20200101T000000Z".into())).is_err());
        // Under another name, by id.
        let rob = footprint(d.path(), "rob");
        std::fs::create_dir_all(&rob.home).unwrap();
        std::fs::write(rob.env_file(), "OPENAI_API_KEY=sk-new\n").unwrap();
        let got = restore(&root, &rob, &Restore::From(id.clone())).unwrap();
        assert_eq!(got.as_deref(), Some(id.as_str()));
        assert_eq!(std::fs::read(rob.workspace.join("USER.md")).unwrap(), b"edited by hand");
        assert_eq!(std::fs::read(rob.home.join("trace/20261129T07.db")).unwrap(), b"trace");
        assert!(!rob.gateway_state.exists(), "OpenClaw's database is bound to bob's id");
        assert!(rob.home.join("previous-sessions/bob/agent/openclaw-agent.sqlite").exists());
        assert_eq!(std::fs::read(rob.env_file()).unwrap(), b"OPENAI_API_KEY=sk-new\n", "the new env file stays");
        assert_eq!(marker(&rob.home).unwrap().archive, Some(id));
        assert!(list(&root).is_empty());
    }

    #[test]
    fn a_killed_archive_or_restore_is_finished_by_the_next_run() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("archive");
        let bob = footprint(d.path(), "bob");
        live(&bob);
        // Killed after the workspace moved: the partial archive is found again and finished.
        let partial = root.join("bob-20261130T070000Z.partial");
        std::fs::create_dir_all(&partial).unwrap();
        std::fs::rename(&bob.workspace, partial.join("workspace")).unwrap();
        assert_eq!(list(&root)[0].state, ArchiveState::Partial);
        assert_eq!(planned(&root, "bob", &Restore::Newest), Ok(None), "a partial archive is not restored");
        let id = crate::archive::take::archive(&root, &bob, &About::default(), None, 1_796_100_000).unwrap().unwrap();
        assert_eq!(id, "bob-20261130T070000Z", "the partial archive's id is kept");
        let m = list(&root)[0].manifest.clone().unwrap();
        assert!(m.files.contains_key("workspace/USER.md") && m.files.contains_key("home/trace/20261129T07.db"));
        // Killed after the archive was taken and the workspace moved back.
        let work = root.join(format!("{id}.restoring-bob"));
        std::fs::rename(root.join(&id), &work).unwrap();
        std::fs::rename(work.join("workspace"), &bob.workspace).unwrap();
        assert_eq!(planned(&root, "bob", &Restore::Fresh), Ok(Some(id.clone())), "a restore begun is finished");
        restore(&root, &bob, &Restore::Newest).unwrap();
        assert!(bob.gateway_state.join("agent/openclaw-agent.sqlite").exists());
        assert_eq!(std::fs::read(bob.workspace.join("USER.md")).unwrap(), b"edited by hand");
        assert!(list(&root).is_empty());
    }
}
