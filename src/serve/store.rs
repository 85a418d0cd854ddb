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
    /// Only on an event whose text was cut (`for_event`): the full text's length in bytes (read it
    /// whole with `GET /v1/agents/{agent}/messages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_bytes: Option<i64>,
}

/// An event carries at most this many characters of a message's text (≤ 64 KiB): a stream holds
/// events, and a stalled client must not make the daemon hold megabytes for it.
pub const EVENT_TEXT_CHARS: usize = 16_384;
/// What one page of an event stream's backlog may hold of (cut) message text (at least one message).
pub const PAGE_BYTES: usize = 64 * 1024;
/// The same for a history page (`GET …/messages`): fewer messages than `limit` when they are large.
pub const HISTORY_PAGE_BYTES: usize = 8 * 1024 * 1024;

impl Message {
    /// The message as an event carries it: its text cut to `EVENT_TEXT_CHARS`, and then
    /// `text_bytes` says how long it is whole.
    pub fn for_event(mut self) -> Message {
        if let Some((at, _)) = self.text.char_indices().nth(EVENT_TEXT_CHARS) {
            self.text_bytes = Some(self.text.len() as i64);
            self.text.truncate(at);
        }
        self
    }
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
        text_bytes: None,
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

    pub fn by_id(&self, id: &str) -> Result<Option<Message>, StoreError> {
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
        let tail = "FROM messages WHERE agent = ?1 AND thread = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4";
        let p = params![agent, thread, after.unwrap_or(0), limit as i64];
        let Some(last) = self.page_end(tail, p, HISTORY_PAGE_BYTES, None)? else { return Ok(Vec::new()) };
        self.select(
            "WHERE agent = ?1 AND thread = ?2 AND seq > ?3 AND seq <= ?4 ORDER BY seq",
            params![agent, thread, after.unwrap_or(0), last],
        )
    }

    /// Whether the thread has a message after `seq` (a history page cut by size has more).
    pub fn has_after(&self, agent: &str, thread: &str, seq: i64) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM messages WHERE agent = ?1 AND thread = ?2 AND seq > ?3)",
                params![agent, thread, seq],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// The last seq of a page: the rows of `tail` (`FROM … ORDER BY seq LIMIT …`) while their text
    /// (each counted up to `each` bytes) fits `max_bytes` — and at least the first.
    fn page_end(
        &self,
        tail: &str,
        p: impl rusqlite::Params,
        max_bytes: usize,
        each: Option<usize>,
    ) -> Result<Option<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT seq, length(CAST(text AS BLOB)) {tail}"))
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map(p, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))).map_err(|e| self.err(e))?;
        let (mut total, mut last) = (0usize, None);
        for (i, r) in rows.enumerate() {
            let (seq, len) = r.map_err(|e| self.err(e))?;
            let len = len.max(0) as usize;
            total += each.map_or(len, |e| len.min(e));
            if i > 0 && total > max_bytes {
                break;
            }
            last = Some(seq);
        }
        Ok(last)
    }

    /// Every message after event id `seq`, of one agent or all, oldest first, as events carry them
    /// (`Message::for_event`): one page of an event stream's backlog — at most `limit` messages and
    /// `PAGE_BYTES` of (cut) text. Never loads more of a message's text than an event carries.
    pub fn events_since(&self, seq: i64, agent: Option<&str>, limit: usize) -> Result<Vec<Message>, StoreError> {
        let each = Some(EVENT_TEXT_CHARS * 4);
        let a = agent.unwrap_or("");
        let filter = if agent.is_some() { "agent = ?2" } else { "?2 = ?2" };
        let tail = format!("FROM messages WHERE seq > ?1 AND {filter} ORDER BY seq LIMIT ?3");
        let Some(last) = self.page_end(&tail, params![seq, a, limit as i64], PAGE_BYTES, each)? else {
            return Ok(Vec::new());
        };
        let cols = COLUMNS.replace(", text,", &format!(", substr(text, 1, {}),", EVENT_TEXT_CHARS + 1));
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {cols}, length(CAST(text AS BLOB)) FROM messages WHERE seq > ?1 AND {filter} AND seq <= ?3 ORDER BY seq"
            ))
            .map_err(|e| self.err(e))?;
        let rows =
            stmt.query_map(params![seq, a, last], |r| Ok((row(r)?, r.get::<_, i64>(10)?))).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (m, full) = r.map_err(|e| self.err(e))?;
            // Read one character past the cut: `for_event` sees the text was longer.
            let mut m = m.for_event();
            if m.text_bytes.is_some() {
                m.text_bytes = Some(full);
            }
            out.push(m);
        }
        Ok(out)
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
    fn an_event_page_holds_cut_texts_within_its_bound() {
        let (_d, s) = store();
        let big = "é".repeat(100_000); // 200,000 bytes, 2-byte characters
        for i in 0..10 {
            s.add_user(if i % 2 == 0 { "alice" } else { "bob" }, "main", None, &big).unwrap();
        }
        s.add_user("alice", "main", None, "small").unwrap();
        // Each cut to 16,384 characters (32 KiB here), counted up to 64 KiB each against a 64 KiB
        // page: one big message a page.
        let page = s.events_since(0, None, 1000).unwrap();
        assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [1]);
        assert_eq!(page[0].text.chars().count(), EVENT_TEXT_CHARS);
        assert_eq!(page[0].text_bytes, Some(200_000));
        assert_eq!(s.events_since(8, Some("alice"), 1000).unwrap().iter().map(|m| m.seq).collect::<Vec<_>>(), [9]);
        let last = s.events_since(9, Some("alice"), 1000).unwrap();
        assert_eq!(
            (last[0].seq, last[0].text.as_str(), last[0].text_bytes),
            (11, "small", None),
            "a short text is whole"
        );
        for _ in 0..3 {
            s.add_user("dave", "main", None, "short").unwrap();
        }
        assert_eq!(s.events_since(11, None, 1000).unwrap().len(), 3, "small ones share a page");
        assert_eq!(s.events_since(11, None, 2).unwrap().len(), 2, "the count bound too");
        assert!(s.events_since(14, None, 100).unwrap().is_empty());
        // History is whole, paged by bytes: 8 MiB holds 41 of these, not 1000.
        for _ in 0..50 {
            s.add_user("carol", "main", None, &big).unwrap();
        }
        let h = s.history("carol", "main", None, 1000).unwrap();
        assert_eq!(h.len(), HISTORY_PAGE_BYTES / 200_000);
        assert!(h.iter().all(|m| m.text == big && m.text_bytes.is_none()));
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
        assert_eq!(s.events_since(0, None, 10).unwrap().len(), 3);
        assert_eq!(s.events_since(a1.seq, Some("alice"), 10).unwrap(), vec![a2.clone()]);
        assert_eq!(s.events_since(b1.seq, None, 10).unwrap(), vec![a2]);
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
