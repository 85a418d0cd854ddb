//! The daemon's conversations: SQLite in the data dir (`serve/conversations.db`), apart from
//! `state.db` so a busy daemon never waits on apply's lock. WAL, `synchronous=FULL`: a message
//! is acknowledged only once it is committed. Versioned schema, migrated forward on open, as the
//! state store does. Calls block briefly; async callers go through `Messages` (spawn_blocking).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_messages.sql")];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Agent,
    System,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Agent => "agent",
            Role::System => "system",
        }
    }
    fn parse(s: &str) -> Role {
        match s {
            "user" => Role::User,
            "agent" => Role::Agent,
            _ => Role::System,
        }
    }
}

/// One stored message, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub seq: i64,
    pub id: String,
    pub agent: String,
    pub thread: String,
    pub role: Role,
    #[serde(rename = "from", skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// User messages: `pending` until answered, then `done`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub created_at: String,
}

#[derive(Debug, thiserror::Error)]
#[error("conversations database {path}: {source}")]
pub struct StoreError {
    path: String,
    source: rusqlite::Error,
}

pub struct Store {
    conn: Connection,
    path: String,
}

const COLUMNS: &str = "seq, id, agent, thread, role, sender, text, reply_to, state, created_at";

fn row(r: &rusqlite::Row) -> rusqlite::Result<Message> {
    Ok(Message {
        seq: r.get(0)?,
        id: r.get(1)?,
        agent: r.get(2)?,
        thread: r.get(3)?,
        role: Role::parse(&r.get::<_, String>(4)?),
        sender: r.get(5)?,
        text: r.get(6)?,
        reply_to: r.get(7)?,
        state: r.get(8)?,
        created_at: r.get(9)?,
    })
}

/// A fresh public message id.
pub fn message_id() -> String {
    format!("msg_{}", crate::fsutil::random_hex(12))
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let p = path.display().to_string();
        let err = |source| StoreError { path: p.clone(), source };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        let mut s = Store { conn, path: p };
        s.migrate()?;
        Ok(s)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError { path: self.path.clone(), source }
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let v: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(v.max(0) as usize) {
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn by_id(&self, id: &str) -> Result<Option<Message>, StoreError> {
        self.conn
            .query_row(&format!("SELECT {COLUMNS} FROM messages WHERE id = ?1"), [id], row)
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Stores a user message, `pending` until answered.
    pub fn add_user(&self, agent: &str, thread: &str, from: Option<&str>, text: &str) -> Result<Message, StoreError> {
        let id = message_id();
        self.conn
            .execute(
                "INSERT INTO messages (id, agent, thread, role, sender, text, state, created_at)
                 VALUES (?1, ?2, ?3, 'user', ?4, ?5, 'pending', ?6)",
                params![id, agent, thread, from, text, crate::clock::now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.by_id(&id)?.expect("just inserted"))
    }

    /// Stores the answer to a user message (the agent's reply, or a system message saying why there
    /// is none) and marks the message done, in one transaction. A message already answered keeps its
    /// first answer, which is returned (`false`: nothing new was stored).
    pub fn answer(&mut self, user_id: &str, role: Role, text: &str) -> Result<(Message, bool), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let existing = tx
            .query_row(&format!("SELECT {COLUMNS} FROM messages WHERE reply_to = ?1"), [user_id], row)
            .optional()
            .map_err(err)?;
        if let Some(m) = existing {
            return Ok((m, false));
        }
        let (agent, thread): (String, String) = tx
            .query_row("SELECT agent, thread FROM messages WHERE id = ?1 AND role = 'user'", [user_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(err)?;
        let id = message_id();
        tx.execute(
            "INSERT INTO messages (id, agent, thread, role, text, reply_to, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id, agent, thread, role.as_str(), text, user_id, crate::clock::now()],
        )
        .map_err(err)?;
        tx.execute("UPDATE messages SET state = 'done' WHERE id = ?1", [user_id]).map_err(err)?;
        let m = tx.query_row(&format!("SELECT {COLUMNS} FROM messages WHERE id = ?1"), [&id], row).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok((m, true))
    }

    /// The answer stored for a user message, if any.
    pub fn answer_of(&self, user_id: &str) -> Result<Option<Message>, StoreError> {
        Ok(self.select("WHERE reply_to = ?1", params![user_id])?.into_iter().next())
    }

    /// The agents that have answered through the daemon at least once.
    pub fn agents_answered(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT agent FROM messages WHERE role = 'agent'")
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<String>, _>>().map_err(|e| self.err(e))
    }

    /// User messages still waiting for an answer, oldest first.
    pub fn pending(&self) -> Result<Vec<Message>, StoreError> {
        self.select("WHERE state = 'pending' ORDER BY seq", params![])
    }

    /// A thread, oldest first: messages after `after` (a message id), at most `limit`.
    pub fn history(
        &self,
        agent: &str,
        thread: &str,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.select(
            "WHERE agent = ?1 AND thread = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
            params![agent, thread, after.unwrap_or(0), limit as i64],
        )
    }

    /// Every message after event id `seq`, of one agent or all, oldest first (SSE replay).
    pub fn since(&self, seq: i64, agent: Option<&str>, limit: usize) -> Result<Vec<Message>, StoreError> {
        match agent {
            Some(a) => {
                self.select("WHERE seq > ?1 AND agent = ?2 ORDER BY seq LIMIT ?3", params![seq, a, limit as i64])
            }
            None => self.select("WHERE seq > ?1 ORDER BY seq LIMIT ?2", params![seq, limit as i64]),
        }
    }

    /// The sequence number of a message id (for `after=<id>`).
    pub fn seq_of(&self, id: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.by_id(id)?.map(|m| m.seq))
    }

    /// Each agent's latest message.
    pub fn latest_per_agent(&self) -> Result<Vec<Message>, StoreError> {
        self.select("WHERE seq IN (SELECT MAX(seq) FROM messages GROUP BY agent) ORDER BY agent", params![])
    }

    /// The newest event id (0 when nothing is stored).
    pub fn latest_seq(&self) -> Result<i64, StoreError> {
        self.conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM messages", [], |r| r.get(0)).map_err(|e| self.err(e))
    }

    pub fn count(&self) -> Result<i64, StoreError> {
        self.conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)).map_err(|e| self.err(e))
    }

    fn select(&self, tail: &str, p: impl rusqlite::Params) -> Result<Vec<Message>, StoreError> {
        let mut stmt =
            self.conn.prepare_cached(&format!("SELECT {COLUMNS} FROM messages {tail}")).map_err(|e| self.err(e))?;
        let rows = stmt.query_map(p, row).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

/// The store for async code: one connection behind a mutex, each call on the blocking pool.
#[derive(Clone)]
pub struct Messages(Arc<Mutex<Store>>);

impl Messages {
    pub fn new(store: Store) -> Self {
        Messages(Arc::new(Mutex::new(store)))
    }

    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut s)
        })
        .await
        .expect("store task panicked")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("c.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn a_message_is_answered_once_and_leaves_pending() {
        let (_d, mut s) = store();
        let m = s.add_user("alice", "main", Some("ops"), "hi").unwrap();
        assert_eq!(s.pending().unwrap(), vec![m.clone()]);
        let (a, new) = s.answer(&m.id, Role::Agent, "hello").unwrap();
        assert!(new);
        let (b, again) = s.answer(&m.id, Role::System, "lost").unwrap();
        assert!(!again, "the second answer is not stored");
        assert_eq!(a, b);
        assert!(s.pending().unwrap().is_empty());
        let h = s.history("alice", "main", None, 10).unwrap();
        assert_eq!(h.iter().map(|m| m.role).collect::<Vec<_>>(), vec![Role::User, Role::Agent]);
        assert_eq!(h[1].reply_to.as_deref(), Some(m.id.as_str()));
    }

    #[test]
    fn answering_an_unknown_message_stores_nothing() {
        let (_d, mut s) = store();
        assert!(s.answer("msg_nope", Role::Agent, "x").is_err());
        assert_eq!(s.count().unwrap(), 0);
    }

    #[test]
    fn history_and_replay_are_ordered_and_scoped() {
        let (_d, s) = store();
        let a1 = s.add_user("alice", "main", None, "1").unwrap();
        let b1 = s.add_user("bob", "main", None, "2").unwrap();
        let a2 = s.add_user("alice", "other", None, "3").unwrap();
        assert_eq!(s.since(0, None, 10).unwrap().len(), 3);
        assert_eq!(s.since(a1.seq, Some("alice"), 10).unwrap(), vec![a2.clone()]);
        assert_eq!(s.since(b1.seq, None, 10).unwrap(), vec![a2]);
        assert_eq!(s.history("alice", "main", None, 10).unwrap(), vec![a1.clone()]);
        assert!(s.history("alice", "main", Some(a1.seq), 10).unwrap().is_empty());
    }

    #[test]
    fn a_reopened_store_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.db");
        let id = Store::open(&p).unwrap().add_user("alice", "main", None, "kept").unwrap().id;
        let s = Store::open(&p).unwrap();
        assert_eq!(s.pending().unwrap()[0].id, id);
    }
}
