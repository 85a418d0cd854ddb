//! What a gateway's own state database says about an agent id — read only, to pick
//! the way a missing agent is brought into being.
//!
//! A brand-new id can be created by the gateway's config patch (one reload for any
//! number of agents). An id the gateway has held before must go through
//! `agents.create`: `agents.delete` leaves a deletion journal entry, and an entry
//! re-added by `config.patch` over it makes the gateway refuse the agent ("agent
//! database is unavailable while agent carol is deleted") and fail its own restart.
//! The journal is not visible over the RPC, so fleet reads the gateway's SQLite
//! (`$OPENCLAW_STATE_DIR/state/openclaw.sqlite`, OpenClaw 2026.9.6) and takes the
//! fast path only when that file positively knows nothing of the id.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

/// The gateway's state database under its `OPENCLAW_STATE_DIR`.
pub fn state_db(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("state/openclaw.sqlite")
}

/// True only when the database is readable, has both tables, and neither names `id`: the id
/// was never registered with this gateway and never deleted from it. Any doubt (no file, other
/// schema, locked, a remote gateway) is false, which sends the agent through `agents.create`.
pub fn never_held(db: &Path, id: &str) -> bool {
    let query = || -> rusqlite::Result<bool> {
        let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        c.busy_timeout(Duration::from_secs(2))?;
        let hit: Option<i64> = c
            .query_row(
                "SELECT 1 FROM agent_deletion_journal WHERE agent_id = ?1
                 UNION ALL SELECT 1 FROM agent_databases WHERE agent_id = ?1 LIMIT 1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(hit.is_none())
    };
    db.is_file() && query().unwrap_or(false)
}

/// The agents whose deletion the gateway has journaled and not finished cleaning up (None when the
/// database cannot be read). A config change that makes the gateway restart while one is pending can
/// make the restart fail ("agent database is unavailable while agent X is deleted") and the gateway
/// not come back, so patches wait for these to finish.
pub fn unfinished_deletions(db: &Path) -> Option<Vec<String>> {
    let query = || -> rusqlite::Result<Vec<String>> {
        let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        c.busy_timeout(Duration::from_secs(2))?;
        let mut stmt = c.prepare("SELECT agent_id FROM agent_deletion_journal WHERE cleanup_completed = 0")?;
        let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(ids)
    };
    if !db.is_file() {
        return None;
    }
    query().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway_db(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("openclaw.sqlite");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE agent_deletion_journal (agent_id TEXT PRIMARY KEY, cleanup_completed INTEGER);
             CREATE TABLE agent_databases (agent_id TEXT, path TEXT);
             INSERT INTO agent_databases VALUES ('alice', 'agents/alice/agent/openclaw-agent.sqlite');
             INSERT INTO agent_deletion_journal VALUES ('carol', 1);
             INSERT INTO agent_deletion_journal VALUES ('dora', 0);",
        )
        .unwrap();
        path
    }

    #[test]
    fn only_an_id_the_gateway_never_held_takes_the_patch_path() {
        let dir = tempfile::tempdir().unwrap();
        let db = gateway_db(dir.path());
        assert!(never_held(&db, "dave"));
        assert!(!never_held(&db, "alice"), "registered");
        assert!(!never_held(&db, "carol"), "deleted: a journal entry");
        assert_eq!(unfinished_deletions(&db), Some(vec!["dora".to_string()]), "dora's cleanup is not done");
    }

    #[test]
    fn doubt_means_agents_create() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!never_held(&dir.path().join("missing.sqlite"), "dave"), "no database (e.g. a remote gateway)");
        let other = dir.path().join("other.sqlite");
        Connection::open(&other).unwrap().execute_batch("CREATE TABLE x (y)").unwrap();
        assert!(!never_held(&other, "dave"), "another schema");
    }
}
