//! One agent's trace on disk: a directory (`<agent home>/trace/`) of hourly buckets.
//!
//! - `<YYYYMMDDTHH>.db`: SQLite (WAL, `synchronous=FULL`), one row per event, `INSERT OR IGNORE` by
//!   id — a write returns only once committed.
//! - `<stem>.jsonl`: when the bucket's database cannot be written, the events are appended here
//!   (fsync'd) instead: nothing is silently dropped.
//! - `<stem>.late.jsonl`: events for a bucket already sealed.
//! - sealing (two hours after the hour ended): WAL checkpointed, journal back to DELETE, file made
//!   read-only. Reads merge the three files and deduplicate by event id.
//!
//! Blocking: called from the trace writer's own thread or from `spawn_blocking`.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{params_from_iter, Connection, OpenFlags};

use super::bucket::{classify, FileKind, Hour};
use super::envelope::Envelope;
use super::query::{Order, Query};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS events (
    id TEXT NOT NULL UNIQUE,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    trace_id TEXT,
    thread_id TEXT,
    backend TEXT,
    model TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    cost_usd REAL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (ts, id);";

/// One event ready to be written: where, when, and the envelope.
#[derive(Debug, Clone)]
pub struct Item {
    pub dir: PathBuf,
    pub ms: i64,
    pub event: Envelope,
}

/// What became of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    New,
    Duplicate,
    /// Kept, but not in the bucket database (its fallback or late file).
    Aside,
}

#[derive(Debug, thiserror::Error)]
#[error("trace {path}: {why}")]
pub struct TraceError {
    pub path: String,
    pub why: String,
}

fn err(path: &Path, why: impl std::fmt::Display) -> TraceError {
    TraceError { path: path.display().to_string(), why: why.to_string() }
}

fn open_rw(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")?;
    c.execute_batch(SCHEMA)?;
    Ok(c)
}

/// Appends lines and fsyncs them (and, for a new file, its directory).
fn append_lines(path: &Path, events: &[&Envelope]) -> std::io::Result<()> {
    let new = !path.exists();
    let mut buf = Vec::new();
    for e in events {
        serde_json::to_writer(&mut buf, e).map_err(std::io::Error::other)?;
        buf.push(b'\n');
    }
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(&buf)?;
    f.sync_data()?;
    if new {
        if let Some(d) = path.parent() {
            File::open(d)?.sync_all()?;
        }
    }
    Ok(())
}

/// The writing side: keeps bucket databases open between batches (a few dozen at most).
pub struct Writer {
    open: HashMap<(PathBuf, Hour), Connection>,
    clock: Box<dyn Fn() -> i64 + Send>,
}

const OPEN_MAX: usize = 64;

impl Writer {
    pub fn new(clock: Box<dyn Fn() -> i64 + Send>) -> Writer {
        Writer { open: HashMap::new(), clock }
    }

    fn conn(&mut self, dir: &Path, hour: Hour) -> rusqlite::Result<&mut Connection> {
        let key = (dir.to_path_buf(), hour);
        if !self.open.contains_key(&key) {
            if self.open.len() >= OPEN_MAX {
                self.open.clear();
            }
            std::fs::create_dir_all(dir).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            let c = open_rw(&dir.join(hour.db_name()))?;
            self.open.insert(key.clone(), c);
        }
        Ok(self.open.get_mut(&key).expect("inserted above"))
    }

    fn insert(&mut self, dir: &Path, hour: Hour, items: &[&Item]) -> rusqlite::Result<Vec<Written>> {
        let c = self.conn(dir, hour)?;
        let tx = c.transaction()?;
        let mut out = Vec::with_capacity(items.len());
        {
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO events (id, ts, kind, trace_id, thread_id, backend, model, tokens_in, \
                 tokens_out, cost_usd, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for it in items {
                let e = &it.event;
                let body =
                    serde_json::to_string(e).map_err(|x| rusqlite::Error::ToSqlConversionFailure(Box::new(x)))?;
                let n = st.execute(rusqlite::params![
                    e.id,
                    it.ms,
                    e.kind,
                    e.trace_id,
                    e.thread_id,
                    e.backend_name,
                    e.model,
                    e.tokens_in,
                    e.tokens_out,
                    e.cost_usd,
                    body
                ])?;
                out.push(if n == 1 { Written::New } else { Written::Duplicate });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Writes a batch; returns, in order, what became of each item. An error only when an event
    /// could be kept nowhere (then nothing of that bucket is acknowledged).
    pub fn write(&mut self, items: &[Item]) -> Result<Vec<Written>, TraceError> {
        let now = (self.clock)();
        let mut groups: Vec<((PathBuf, Hour), Vec<usize>)> = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let key = (it.dir.clone(), Hour::of(it.ms));
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(i),
                None => groups.push((key, vec![i])),
            }
        }
        let mut out = vec![Written::New; items.len()];
        for ((dir, hour), idx) in groups {
            let group: Vec<&Item> = idx.iter().map(|&i| &items[i]).collect();
            let results =
                if hour.sealed_at(now) {
                    let fresh: Vec<&Envelope> =
                        group.iter().filter(|it| !in_sealed(&dir, hour, &it.event.id)).map(|it| &it.event).collect();
                    if !fresh.is_empty() {
                        std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
                        let late = dir.join(hour.late_name());
                        append_lines(&late, &fresh).map_err(|e| err(&late, e))?;
                    }
                    group
                        .iter()
                        .map(|it| {
                            if fresh.iter().any(|f| f.id == it.event.id) {
                                Written::Aside
                            } else {
                                Written::Duplicate
                            }
                        })
                        .collect()
                } else {
                    match self.insert(&dir, hour, &group) {
                        Ok(r) => r,
                        Err(e) => {
                            self.open.remove(&(dir.clone(), hour));
                            let fallback = dir.join(hour.fallback_name());
                            tracing::warn!(
                                "trace bucket {} not writable ({e}); events kept in {}",
                                hour.db_name(),
                                fallback.display()
                            );
                            let events: Vec<&Envelope> = group.iter().map(|it| &it.event).collect();
                            std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
                            append_lines(&fallback, &events).map_err(|e| err(&fallback, e))?;
                            vec![Written::Aside; group.len()]
                        }
                    }
                };
            for (i, w) in idx.into_iter().zip(results) {
                out[i] = w;
            }
        }
        Ok(out)
    }

    /// Seals every bucket of `dir` whose time has come (and closes it here). Safe to repeat.
    pub fn seal_due(&mut self, dir: &Path) -> Result<Vec<Hour>, TraceError> {
        let now = (self.clock)();
        let mut sealed = Vec::new();
        for (hour, kind, path) in list(dir)? {
            if kind != FileKind::Db || !hour.sealed_at(now) {
                continue;
            }
            let meta = std::fs::metadata(&path).map_err(|e| err(&path, e))?;
            if meta.permissions().mode() & 0o222 == 0 {
                continue;
            }
            self.open.remove(&(dir.to_path_buf(), hour));
            let c = Connection::open(&path).map_err(|e| err(&path, e))?;
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;")
                .map_err(|e| err(&path, e))?;
            drop(c);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).map_err(|e| err(&path, e))?;
            sealed.push(hour);
        }
        Ok(sealed)
    }
}

fn in_sealed(dir: &Path, hour: Hour, id: &str) -> bool {
    let path = dir.join(hour.db_name());
    let Ok(c) = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY) else { return false };
    c.query_row("SELECT 1 FROM events WHERE id = ?1", [id], |_| Ok(())).is_ok()
}

/// The bucket files of a trace directory (none when it does not exist).
pub fn list(dir: &Path) -> Result<Vec<(Hour, FileKind, PathBuf)>, TraceError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let name = entry.file_name();
        if let Some((h, k)) = name.to_str().and_then(classify) {
            out.push((h, k, entry.path()));
        }
    }
    out.sort_by_key(|(h, k, _)| (*h, *k as u8));
    Ok(out)
}

fn read_jsonl(path: &Path, q: &Query, out: &mut Vec<(i64, Envelope)>) -> Result<(), TraceError> {
    let f = File::open(path).map_err(|e| err(path, e))?;
    for line in BufReader::new(f).lines() {
        let line = line.map_err(|e| err(path, e))?;
        // A torn last line (a crash mid-append, never acknowledged) is skipped.
        let Ok(e) = serde_json::from_str::<Envelope>(&line) else { continue };
        let Ok(ms) = e.check() else { continue };
        if q.matches(ms, &e) {
            out.push((ms, e));
        }
    }
    Ok(())
}

fn read_db(path: &Path, q: &Query, out: &mut Vec<(i64, Envelope)>) -> Result<(), TraceError> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| err(path, e))?;
    c.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| err(path, e))?;
    let mut sql = String::from("SELECT ts, body FROM events WHERE 1=1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(s) = q.since {
        sql.push_str(" AND ts >= ?");
        args.push(s.into());
    }
    if let Some(u) = q.until {
        sql.push_str(" AND ts < ?");
        args.push(u.into());
    }
    if let Some((ms, id)) = &q.after {
        sql.push_str(if q.order == Order::Asc { " AND (ts, id) > (?, ?)" } else { " AND (ts, id) < (?, ?)" });
        args.push((*ms).into());
        args.push(id.clone().into());
    }
    if !q.kinds.is_empty() {
        sql.push_str(&format!(" AND kind IN ({})", vec!["?"; q.kinds.len()].join(",")));
        args.extend(q.kinds.iter().map(|k| k.clone().into()));
    }
    if let Some(t) = &q.thread {
        sql.push_str(" AND thread_id = ?");
        args.push(t.clone().into());
    }
    if let Some(t) = &q.trace_id {
        sql.push_str(" AND trace_id = ?");
        args.push(t.clone().into());
    }
    if let Some(c) = &q.channel {
        sql.push_str(" AND json_extract(body, '$.channel_id') = ?");
        args.push(c.clone().into());
    }
    sql.push_str(if q.order == Order::Asc { " ORDER BY ts, id" } else { " ORDER BY ts DESC, id DESC" });
    sql.push_str(&format!(" LIMIT {}", q.limit.clamp(1, i64::MAX as usize)));
    let mut st = match c.prepare(&sql) {
        Ok(st) => st,
        // A bucket its writer is creating this instant (the file is there, its table not yet):
        // it holds no event yet. Found by the suite: a read at that instant answered 500.
        Err(e) if e.to_string().contains("no such table") => return Ok(()),
        Err(e) => return Err(err(path, e)),
    };
    let rows = st
        .query_map(params_from_iter(args), |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .map_err(|e| err(path, e))?;
    for row in rows {
        let (ms, body) = row.map_err(|e| err(path, e))?;
        if let Ok(e) = serde_json::from_str::<Envelope>(&body) {
            out.push((ms, e));
        }
    }
    Ok(())
}

/// Reads a page of one trace directory: merges each bucket's database, fallback and late files,
/// deduplicates by id, walks buckets in the query's order and stops once the page is full.
pub fn read(dir: &Path, q: &Query) -> Result<Vec<(i64, Envelope)>, TraceError> {
    let files = list(dir)?;
    let mut hours: Vec<Hour> = files.iter().map(|(h, _, _)| *h).collect();
    hours.dedup();
    if q.order == Order::Desc {
        hours.reverse();
    }
    let mut seen = HashSet::new();
    let mut page: Vec<(i64, Envelope)> = Vec::new();
    for h in hours {
        if q.since.is_some_and(|s| h.end_ms() <= s) || q.until.is_some_and(|u| h.start_ms() >= u) {
            continue;
        }
        if let Some((ms, _)) = &q.after {
            let behind = if q.order == Order::Asc { h.end_ms() <= *ms } else { h.start_ms() > *ms };
            if behind {
                continue;
            }
        }
        let mut got = Vec::new();
        for (_, kind, path) in files.iter().filter(|(fh, _, _)| *fh == h) {
            match kind {
                FileKind::Db => read_db(path, q, &mut got)?,
                FileKind::Fallback | FileKind::Late => read_jsonl(path, q, &mut got)?,
            }
        }
        got.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
        if q.order == Order::Desc {
            got.reverse();
        }
        for (ms, e) in got {
            if seen.insert(e.id.clone()) {
                page.push((ms, e));
                if page.len() >= q.limit {
                    return Ok(page);
                }
            }
        }
    }
    Ok(page)
}

/// Usage per (day, model) of one trace directory: `llm_call` events priced by the proxy.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct UsageRow {
    pub day: String,
    pub model: Option<String>,
    pub calls: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
}

pub fn usage(dir: &Path, since: Option<i64>, until: Option<i64>) -> Result<Vec<UsageRow>, TraceError> {
    let q = Query {
        kinds: vec!["llm_call".into()],
        since,
        until,
        limit: usize::MAX,
        order: Order::Asc,
        ..Query::default()
    };
    let mut rows: Vec<UsageRow> = Vec::new();
    let files = list(dir)?;
    let mut seen = HashSet::new();
    for (h, kind, path) in &files {
        if since.is_some_and(|s| h.end_ms() <= s) || until.is_some_and(|u| h.start_ms() >= u) {
            continue;
        }
        let mut got = Vec::new();
        match kind {
            FileKind::Db => read_db(path, &q, &mut got)?,
            _ => read_jsonl(path, &q, &mut got)?,
        }
        for (ms, e) in got {
            // The proxy prices every call; the gateway's own view of the same call is not counted twice.
            if e.backend_name.as_deref() != Some("litellm") || !seen.insert(e.id.clone()) {
                continue;
            }
            let day = crate::clock::format_rfc3339(ms / 1000)[..10].to_string();
            let row = match rows.iter_mut().find(|r| r.day == day && r.model == e.model) {
                Some(r) => r,
                None => {
                    rows.push(UsageRow { day, model: e.model.clone(), ..UsageRow::default() });
                    rows.last_mut().expect("pushed")
                }
            };
            row.calls += 1;
            row.tokens_in += e.tokens_in.unwrap_or(0);
            row.tokens_out += e.tokens_out.unwrap_or(0);
            row.cost_usd += e.cost_usd.unwrap_or(0.0);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{format_rfc3339_ms, parse_rfc3339_ms};
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    fn ev(id: &str, at: &str, kind: &str) -> Envelope {
        serde_json::from_value(serde_json::json!({
            "v": 1, "id": id, "trace_id": "t", "created_at": at, "agent_name": "alice", "kind": kind,
            "backend_name": "litellm", "model": "m", "tokens_in": 2, "tokens_out": 3, "cost_usd": 0.5, "payload": {}
        }))
        .unwrap()
    }

    fn item(dir: &Path, e: Envelope) -> Item {
        Item { dir: dir.to_path_buf(), ms: e.check().unwrap(), event: e }
    }

    fn clock_at(at: &str) -> (Arc<AtomicI64>, Box<dyn Fn() -> i64 + Send>) {
        let now = Arc::new(AtomicI64::new(parse_rfc3339_ms(at).unwrap()));
        let n = now.clone();
        (now, Box::new(move || n.load(Ordering::SeqCst)))
    }

    fn ids(page: &[(i64, Envelope)]) -> Vec<&str> {
        page.iter().map(|(_, e)| e.id.as_str()).collect()
    }

    #[test]
    fn an_event_is_routed_by_its_time_not_the_write_time() {
        let d = tempfile::tempdir().unwrap();
        let (_, clock) = clock_at("2026-11-29T15:00:00.001Z");
        let mut w = Writer::new(clock);
        let r = w.write(&[item(d.path(), ev("a", "2026-11-29T14:59:59.999Z", "llm_call"))]).unwrap();
        assert_eq!(r, vec![Written::New]);
        assert!(d.path().join("20261129T14.db").exists());
        assert!(!d.path().join("20261129T15.db").exists());
    }

    #[test]
    fn a_bucket_being_created_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        // The file exists, its schema not yet: what a reader sees between the writer's open and
        // its CREATE TABLE.
        let hour = Hour::of(parse_rfc3339_ms("2026-11-29T14:00:00.000Z").unwrap());
        std::fs::write(dir.path().join(hour.db_name()), b"").unwrap();
        let page = read(dir.path(), &Query { limit: 10, ..Query::default() }).unwrap();
        assert!(page.is_empty());
    }

    #[test]
    fn a_second_write_of_an_id_is_a_duplicate_and_reads_show_it_once() {
        let d = tempfile::tempdir().unwrap();
        let (_, clock) = clock_at("2026-11-29T15:00:00Z");
        let mut w = Writer::new(clock);
        let e = ev("a", "2026-11-29T14:00:00Z", "llm_call");
        assert_eq!(w.write(&[item(d.path(), e.clone())]).unwrap(), vec![Written::New]);
        assert_eq!(w.write(&[item(d.path(), e.clone()), item(d.path(), e)]).unwrap(), vec![Written::Duplicate; 2]);
        let q = Query { limit: 10, ..Query::default() };
        assert_eq!(ids(&read(d.path(), &q).unwrap()), vec!["a"]);
    }

    #[test]
    fn late_events_go_beside_a_sealed_bucket_and_are_read_back() {
        let d = tempfile::tempdir().unwrap();
        let (now, clock) = clock_at("2026-11-29T14:30:00Z");
        let mut w = Writer::new(clock);
        w.write(&[item(d.path(), ev("a", "2026-11-29T14:10:00Z", "llm_call"))]).unwrap();
        now.store(parse_rfc3339_ms("2026-11-29T17:00:00Z").unwrap(), Ordering::SeqCst);
        assert_eq!(w.seal_due(d.path()).unwrap().len(), 1);
        let db = d.path().join("20261129T14.db");
        assert_eq!(std::fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o444);
        assert!(!d.path().join("20261129T14.db-wal").exists());
        // Late, and a resend of one already sealed in: the first kept aside, the second a duplicate.
        let r = w
            .write(&[
                item(d.path(), ev("late", "2026-11-29T14:20:00Z", "tool_call")),
                item(d.path(), ev("a", "2026-11-29T14:10:00Z", "llm_call")),
            ])
            .unwrap();
        assert_eq!(r, vec![Written::Aside, Written::Duplicate]);
        assert!(d.path().join("20261129T14.late.jsonl").exists());
        let q = Query { limit: 10, order: Order::Asc, ..Query::default() };
        assert_eq!(ids(&read(d.path(), &q).unwrap()), vec!["a", "late"]);
        assert_eq!(w.seal_due(d.path()).unwrap().len(), 0, "sealing twice is a no-op");
    }

    #[test]
    fn an_unwritable_bucket_falls_back_to_jsonl() {
        let d = tempfile::tempdir().unwrap();
        let (_, clock) = clock_at("2026-11-29T14:30:00Z");
        let mut w = Writer::new(clock);
        // A directory where the database should be: SQLite cannot open it.
        std::fs::create_dir_all(d.path().join("20261129T14.db")).unwrap();
        let r = w.write(&[item(d.path(), ev("a", "2026-11-29T14:10:00Z", "llm_call"))]).unwrap();
        assert_eq!(r, vec![Written::Aside]);
        let q = Query { limit: 10, ..Query::default() };
        // The bogus .db entry is a directory: reading it fails loudly rather than hiding events.
        std::fs::remove_dir(d.path().join("20261129T14.db")).unwrap();
        assert_eq!(ids(&read(d.path(), &q).unwrap()), vec!["a"]);
    }

    #[test]
    fn pages_walk_buckets_newest_first_and_continue_from_the_cursor() {
        let d = tempfile::tempdir().unwrap();
        let (_, clock) = clock_at("2026-11-29T20:00:00Z");
        let mut w = Writer::new(clock);
        let base = parse_rfc3339_ms("2026-11-29T15:00:00Z").unwrap();
        let items: Vec<Item> = (0..30)
            .map(|i| item(d.path(), ev(&format!("e{i:02}"), &format_rfc3339_ms(base + i * 600_000), "llm_call")))
            .collect();
        w.write(&items).unwrap();
        assert_eq!(list(d.path()).unwrap().len(), 5);
        let mut q = Query { limit: 4, ..Query::default() };
        let p1 = read(d.path(), &q).unwrap();
        assert_eq!(ids(&p1), vec!["e29", "e28", "e27", "e26"]);
        let (ms, e) = p1.last().unwrap();
        q.after = Some((*ms, e.id.clone()));
        assert_eq!(ids(&read(d.path(), &q).unwrap()), vec!["e25", "e24", "e23", "e22"]);
        let q = Query { limit: 3, order: Order::Asc, since: Some(base + 6 * 600_000), ..Query::default() };
        assert_eq!(ids(&read(d.path(), &q).unwrap()), vec!["e06", "e07", "e08"]);
        let rows = usage(d.path(), None, None).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].calls, rows[0].tokens_in, rows[0].cost_usd), (30, 60, 15.0));
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("20261129T14.late.jsonl");
        let good = serde_json::to_string(&ev("a", "2026-11-29T14:10:00Z", "llm_call")).unwrap();
        std::fs::write(&p, format!("{good}\n{{\"v\":1,\"id\":\"b")).unwrap();
        assert_eq!(ids(&read(d.path(), &Query { limit: 10, ..Query::default() }).unwrap()), vec!["a"]);
    }
}
