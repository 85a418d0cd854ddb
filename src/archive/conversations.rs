//! An agent's conversations with the daemon, moved between the daemon's database
//! (`serve/conversations.db`, table `messages`) and an archive's `conversations.jsonl`.
//! Rows are copied column by column as the table has them, so this file does not restate the
//! daemon's schema; `seq` (the daemon's event number) is given anew on the way back.

use std::path::Path;

use miette::{IntoDiagnostic, WrapErr};
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use serde_json::{Map, Value};

pub const FILE: &str = "conversations.jsonl";

fn open(db: &Path) -> miette::Result<Option<Connection>> {
    if !db.exists() {
        return Ok(None);
    }
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot open {}", db.display()))?;
    c.busy_timeout(std::time::Duration::from_secs(10)).into_diagnostic()?;
    c.pragma_update(None, "synchronous", "FULL").into_diagnostic()?;
    c.pragma_update(None, "secure_delete", "ON").into_diagnostic()?;
    Ok(Some(c))
}

fn to_json(v: Sql) -> Value {
    match v {
        Sql::Null => Value::Null,
        Sql::Integer(i) => Value::from(i),
        Sql::Real(f) => Value::from(f),
        Sql::Text(s) => Value::from(s),
        Sql::Blob(b) => Value::from(hex::encode(b)),
    }
}

fn to_sql(v: &Value) -> Sql {
    match v {
        Value::Null => Sql::Null,
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Number(n) => n.as_i64().map(Sql::Integer).unwrap_or_else(|| Sql::Real(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => Sql::Text(s.clone()),
        other => Sql::Text(other.to_string()),
    }
}

/// The rows already in an archive's file (a run killed after writing it).
fn read_file(path: &Path) -> miette::Result<Vec<Map<String, Value>>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).into_diagnostic().wrap_err_with(|| format!("cannot read {}", path.display())),
    }
}

/// Moves `agent`'s messages from the daemon's database into `dir/conversations.jsonl`: the file is
/// written (fsync'd) with every message, then the rows are deleted, in one write transaction.
/// Returns how many messages the archive holds.
pub fn take(db: &Path, agent: &str, dir: &Path) -> miette::Result<usize> {
    let path = dir.join(FILE);
    let mut rows = read_file(&path)?;
    let Some(mut c) = open(db)? else { return Ok(rows.len()) };
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).into_diagnostic()?;
    let fresh: Vec<Map<String, Value>> = {
        let mut st = tx.prepare("SELECT * FROM messages WHERE agent = ?1 ORDER BY seq").into_diagnostic()?;
        let names: Vec<String> = st.column_names().iter().map(|s| s.to_string()).collect();
        let got = st
            .query_map([agent], |r| {
                let mut m = Map::new();
                for (i, n) in names.iter().enumerate() {
                    m.insert(n.clone(), to_json(r.get::<_, Sql>(i)?));
                }
                Ok(m)
            })
            .into_diagnostic()?
            .collect::<Result<Vec<_>, _>>()
            .into_diagnostic()?;
        got
    };
    if fresh.is_empty() {
        return Ok(rows.len());
    }
    let have: std::collections::HashSet<Value> = rows.iter().filter_map(|r| r.get("id").cloned()).collect();
    rows.extend(fresh.into_iter().filter(|r| r.get("id").is_none_or(|id| !have.contains(id))));
    let text: String = rows.iter().map(|r| format!("{}\n", Value::Object(r.clone()))).collect();
    crate::fsutil::write_atomic(&path, text.as_bytes(), 0o600)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", path.display()))?;
    tx.execute("DELETE FROM messages WHERE agent = ?1", [agent]).into_diagnostic()?;
    tx.commit().into_diagnostic()?;
    // The text leaves the database's files too (freed pages zeroed, the log folded in), so a purge
    // of the archive is the end of it. A checkpoint a reader holds back is finished by a later one.
    let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    Ok(rows.len())
}

/// Puts an archive's messages back under `agent` (inserting what is not there, by message id),
/// then removes the file. A daemon that never ran here gets its database when it starts: the file
/// then stays until a later apply finds the database.
pub fn put_back(db: &Path, agent: &str, dir: &Path) -> miette::Result<usize> {
    let path = dir.join(FILE);
    let rows = read_file(&path)?;
    if rows.is_empty() {
        let _ = std::fs::remove_file(&path);
        return Ok(0);
    }
    let Some(mut c) = open(db)? else {
        return Err(miette::miette!(
            "the daemon's database {} is missing: start `fleet serve` (declare `serve`) and apply again, \
             or restore with fresh conversations by deleting {}",
            db.display(),
            path.display()
        ));
    };
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).into_diagnostic()?;
    let mut n = 0;
    for row in &rows {
        let cols: Vec<&String> = row.keys().filter(|k| k.as_str() != "seq").collect();
        let sql = format!(
            "INSERT OR IGNORE INTO messages ({}) VALUES ({})",
            cols.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", "),
            (1..=cols.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
        );
        let values: Vec<Sql> = cols
            .iter()
            .map(|c| if c.as_str() == "agent" { Sql::Text(agent.into()) } else { to_sql(&row[*c]) })
            .collect();
        n += tx.execute(&sql, rusqlite::params_from_iter(values)).into_diagnostic()?;
    }
    tx.commit().into_diagnostic()?;
    std::fs::remove_file(&path).into_diagnostic()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("c.db");
        let c = Connection::open(&p).unwrap();
        c.execute_batch(
            "CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, agent TEXT NOT NULL,
             thread TEXT NOT NULL, text TEXT NOT NULL, reply_to TEXT);
             INSERT INTO messages (id, agent, thread, text) VALUES ('m1', 'bob', 'main', 'hi'), ('m2', 'eve', 'main', 'yo'),
               ('m3', 'bob', 'x', 'there');",
        )
        .unwrap();
        p
    }

    fn ids(p: &Path, agent: &str) -> Vec<String> {
        let c = Connection::open(p).unwrap();
        let mut st = c.prepare("SELECT id FROM messages WHERE agent = ?1 ORDER BY seq").unwrap();
        st.query_map([agent], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn messages_move_out_and_back_under_any_name_once() {
        let d = tempfile::tempdir().unwrap();
        let p = db(d.path());
        let arch = d.path().join("a");
        std::fs::create_dir_all(&arch).unwrap();
        assert_eq!(take(&p, "bob", &arch).unwrap(), 2);
        assert!(ids(&p, "bob").is_empty());
        assert_eq!(ids(&p, "eve"), ["m2"]);
        // Again (a killed run): the file keeps what it had.
        assert_eq!(take(&p, "bob", &arch).unwrap(), 2);
        assert_eq!(put_back(&p, "robert", &arch).unwrap(), 2);
        assert_eq!(ids(&p, "robert"), ["m1", "m3"]);
        assert!(!arch.join(FILE).exists());
        assert_eq!(put_back(&p, "robert", &arch).unwrap(), 0);
    }
}
