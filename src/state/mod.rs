//! Fleet state in SQLite: resources as last applied, runs and their steps, and
//! the exclusive apply lock. Versioned schema, migrated forward on open.

mod lock;

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde_json::Value;

pub use lock::{hostname, Holder};

/// Each entry moves the schema one version forward; never edit a released one.
const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_init.sql"), include_str!("migrations/0002_lock_owner.sql")];

/// The fingerprint of a record written before a resource's first side effect: the intent to create
/// it. A record still pending when the next run plans means that create did not finish (a crash, a
/// kill, a failure): the plan creates it again, and destroy removes whatever it left behind.
pub const PENDING: &str = "pending";

/// A resource as recorded after its last successful step (or, `PENDING`, before its first one).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub address: String,
    pub kind: String,
    pub fingerprint: String,
    pub inputs: Value,
    pub outputs: Value,
    pub deps: Vec<String>,
}

impl Record {
    /// Whether this is only the intent to create the resource (see `PENDING`).
    pub fn is_pending(&self) -> bool {
        self.fingerprint == PENDING
    }

    /// The recorded inputs, read back as the kind's inputs type.
    pub fn inputs_as<T: serde::de::DeserializeOwned>(&self) -> miette::Result<T> {
        crate::resource::read_inputs(&self.inputs, &self.address)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("another apply holds the lock: {0}")]
    Locked(Holder),
    #[error("state database {path}: {source}")]
    Db { path: String, source: rusqlite::Error },
    #[error(
        "state database {path} has schema version {found}, newer than this fleet understands ({known}); upgrade fleet"
    )]
    TooNew { path: String, found: i64, known: i64 },
}

pub struct Store {
    conn: Connection,
    path: String,
}

pub use crate::clock::{format_rfc3339, now};

impl Store {
    /// Opens (creating and migrating) the state database.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let p = path.display().to_string();
        let db = |source| StateError::Db { path: p.clone(), source };
        let conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(db)?;
        let mut store = Store { conn, path: p };
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing database without writing to it (for `plan`); None if there is none.
    pub fn open_existing_readonly(path: &Path) -> Result<Option<Self>, StateError> {
        if !path.exists() {
            return Ok(None);
        }
        let p = path.display().to_string();
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| StateError::Db { path: p.clone(), source })?;
        let store = Store { conn, path: p };
        let v = store.version()?;
        if v > MIGRATIONS.len() as i64 {
            return Err(StateError::TooNew { path: store.path, found: v, known: MIGRATIONS.len() as i64 });
        }
        Ok(Some(store))
    }

    fn err(&self, source: rusqlite::Error) -> StateError {
        StateError::Db { path: self.path.clone(), source }
    }

    fn version(&self) -> Result<i64, StateError> {
        self.conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| self.err(e))
    }

    fn migrate(&mut self) -> Result<(), StateError> {
        let known = MIGRATIONS.len() as i64;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| StateError::Db { path: self.path.clone(), source })?;
        let v: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|source| StateError::Db { path: self.path.clone(), source })?;
        if v > known {
            return Err(StateError::TooNew { path: self.path.clone(), found: v, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(v as usize) {
            tx.execute_batch(sql).map_err(|source| StateError::Db { path: self.path.clone(), source })?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(|source| StateError::Db { path: self.path.clone(), source })?;
        }
        tx.commit().map_err(|source| StateError::Db { path: self.path.clone(), source })
    }

    pub fn schema_version(&self) -> Result<i64, StateError> {
        self.version()
    }

    pub fn load(&self) -> Result<BTreeMap<String, Record>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT address, kind, fingerprint, inputs, outputs, deps FROM resources")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let inputs: String = r.get(3)?;
                let outputs: String = r.get(4)?;
                let deps: String = r.get(5)?;
                Ok(Record {
                    address: r.get(0)?,
                    kind: r.get(1)?,
                    fingerprint: r.get(2)?,
                    inputs: serde_json::from_str(&inputs).unwrap_or(Value::Null),
                    outputs: serde_json::from_str(&outputs).unwrap_or(Value::Null),
                    deps: serde_json::from_str(&deps).unwrap_or_default(),
                })
            })
            .map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let rec = row.map_err(|e| self.err(e))?;
            out.insert(rec.address.clone(), rec);
        }
        Ok(out)
    }

    pub fn put(&self, rec: &Record) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO resources (address, kind, fingerprint, inputs, outputs, deps, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(address) DO UPDATE SET kind = ?2, fingerprint = ?3, inputs = ?4, outputs = ?5,
                   deps = ?6, updated_at = ?7",
                params![
                    rec.address,
                    rec.kind,
                    rec.fingerprint,
                    rec.inputs.to_string(),
                    rec.outputs.to_string(),
                    serde_json::to_string(&rec.deps).unwrap_or_default(),
                    now()
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn remove(&self, address: &str) -> Result<(), StateError> {
        self.conn.execute("DELETE FROM resources WHERE address = ?1", [address]).map(|_| ()).map_err(|e| self.err(e))
    }

    pub fn begin_run(&self, command: &str) -> Result<i64, StateError> {
        self.conn
            .execute(
                "INSERT INTO runs (command, started_at, status, pid, host) VALUES (?1, ?2, 'running', ?3, ?4)",
                params![command, now(), std::process::id(), hostname()],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn record_step(&self, run: i64, step: &StepRow) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO steps (run_id, address, action, status, started_at, duration_ms, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![run, step.address, step.action, step.status, step.started_at, step.duration_ms, step.error],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn finish_run(&self, run: i64, status: &str) -> Result<(), StateError> {
        self.conn
            .execute("UPDATE runs SET finished_at = ?2, status = ?3 WHERE id = ?1", params![run, now(), status])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The steps one run recorded, in the order they finished.
    pub fn steps(&self, run: i64) -> Result<Vec<StepRow>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT address, action, status, started_at, duration_ms, error FROM steps WHERE run_id = ?1 ORDER BY rowid",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([run], |r| {
                Ok(StepRow {
                    address: r.get(0)?,
                    action: r.get(1)?,
                    status: r.get(2)?,
                    started_at: r.get(3)?,
                    duration_ms: r.get(4)?,
                    error: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    pub fn runs(&self, limit: usize) -> Result<Vec<RunRow>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT r.id, r.command, r.started_at, r.status,
                        (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.id),
                        (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.id AND s.status = 'failed')
                 FROM runs r ORDER BY r.id DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(RunRow {
                    id: r.get(0)?,
                    command: r.get(1)?,
                    started_at: r.get(2)?,
                    status: r.get(3)?,
                    steps: r.get(4)?,
                    failed: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Takes the apply lock, or says who holds it. A holder that is certainly dead is replaced.
    /// The returned holder's `owner` token is what releases it.
    pub fn lock(&mut self, command: &str) -> Result<Holder, StateError> {
        let me = Holder::me(command);
        let path = self.path.clone();
        let db = |source| StateError::Db { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
        let current = lock_holder(&tx).map_err(db)?;
        if let Some(holder) = current {
            if !holder.is_stale() {
                return Err(StateError::Locked(holder));
            }
            tracing::warn!("recovering a stale apply lock left by {holder}");
        }
        tx.execute(
            "INSERT OR REPLACE INTO apply_lock (id, pid, proc_start, host, started_at, command, owner)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
            params![me.pid, me.proc_start.map(|v| v as i64), me.host, me.started_at, me.command, me.owner],
        )
        .map_err(db)?;
        // Runs only begin under this lock, so any run still marked running belonged to a holder
        // that died (killed, host rebooted): close its row instead of leaving it running forever.
        tx.execute("UPDATE runs SET status = 'interrupted', finished_at = ?1 WHERE status = 'running'", params![now()])
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(me)
    }

    /// Removes the lock whoever holds it; returns the holder it removed.
    pub fn force_unlock(&self) -> Result<Option<Holder>, StateError> {
        let holder = lock_holder(&self.conn).map_err(|e| self.err(e))?;
        self.conn.execute("DELETE FROM apply_lock", []).map_err(|e| self.err(e))?;
        Ok(holder)
    }

    /// Releases the lock if the session with this owner token holds it.
    pub fn unlock(&self, owner: &str) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM apply_lock WHERE id = 1 AND owner = ?1", [owner])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

/// Who holds the apply lock, if anyone.
fn lock_holder(conn: &Connection) -> rusqlite::Result<Option<Holder>> {
    conn.query_row("SELECT pid, proc_start, host, started_at, command, owner FROM apply_lock WHERE id = 1", [], |r| {
        Ok(Holder {
            pid: r.get(0)?,
            proc_start: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
            host: r.get(2)?,
            started_at: r.get(3)?,
            command: r.get(4)?,
            owner: r.get(5)?,
        })
    })
    .optional()
}

pub struct StepRow {
    pub address: String,
    pub action: String,
    pub status: String,
    pub started_at: String,
    pub duration_ms: i64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRow {
    pub id: i64,
    pub command: String,
    pub started_at: String,
    pub status: String,
    pub steps: i64,
    pub failed: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(addr: &str) -> Record {
        Record {
            address: addr.into(),
            kind: "key".into(),
            fingerprint: "f1".into(),
            inputs: serde_json::json!({"models": ["a"]}),
            outputs: serde_json::json!({"hash": "h"}),
            deps: vec!["litellm.config".into()],
        }
    }

    #[test]
    fn records_round_trip_and_schema_is_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.db")).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        s.put(&rec("key.a")).unwrap();
        let mut r = rec("key.a");
        r.fingerprint = "f2".into();
        s.put(&r).unwrap();
        let all = s.load().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all["key.a"], r);
        s.remove("key.a").unwrap();
        assert!(s.load().unwrap().is_empty());
        drop(s);
        // Re-opening migrates nothing and keeps the version.
        let s = Store::open(&dir.path().join("state.db")).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_live_lock_is_refused_and_a_dead_one_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut a = Store::open(&path).unwrap();
        let mut b = Store::open(&path).unwrap();
        let held = a.lock("apply").unwrap();
        match b.lock("apply") {
            Err(StateError::Locked(h)) => assert_eq!(h.pid, std::process::id()),
            other => panic!("expected Locked, got {other:?}"),
        }
        b.unlock("another session's token").unwrap();
        assert!(matches!(b.lock("apply"), Err(StateError::Locked(_))), "only the holder's token releases it");
        a.unlock(&held.owner).unwrap();
        b.lock("apply").unwrap();
        // Pretend the holder died: a pid that no longer runs.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let run = b.begin_run("apply").unwrap();
        b.conn.execute("UPDATE apply_lock SET pid = ?1", [dead]).unwrap();
        a.lock("apply").expect("stale lock recovered");
        let runs = a.runs(10).unwrap();
        let dead_run = runs.iter().find(|r| r.id == run).unwrap();
        assert_eq!(dead_run.status, "interrupted", "the dead holder's run is closed");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(Store::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        assert!(matches!(Store::open(&path), Err(StateError::TooNew { found: 99, .. })));
    }
}
