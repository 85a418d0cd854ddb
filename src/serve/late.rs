//! Accepted trace events the OpenTelemetry export may have passed already (`export`): ingest and
//! the backstop offer every newly stored event; those at or before the exporter's horizon are kept
//! here for it — in memory and in `serve/otlp-late.jsonl` (fsync'd), so a daemon restart does not
//! lose them for the export. Blocking: called through `spawn_blocking`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use crate::trace::envelope::Envelope;

/// Events accepted with a time at or before the exporter's horizon (what its cursors may have
/// passed already): exported from here. One may be sent twice (a span with the same id), none
/// skipped.
#[derive(Default)]
pub struct Late {
    events: Mutex<Vec<(i64, Envelope)>>,
    horizon: AtomicI64,
    file: Option<PathBuf>,
}

const MAX: usize = 100_000;

impl Late {
    /// The list kept in `file`, with what an earlier run left there.
    pub fn open(file: PathBuf) -> Late {
        let mut events = Vec::new();
        if let Ok(f) = std::fs::File::open(&file) {
            for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                // A torn last line (a crash mid-append) is skipped.
                if let Ok(e) = serde_json::from_str::<Envelope>(&line) {
                    if let Ok(ms) = e.check() {
                        events.push((ms, e));
                    }
                }
            }
        }
        Late { events: Mutex::new(events), horizon: AtomicI64::new(0), file: Some(file) }
    }

    /// Called for newly stored events: keeps those the export may have passed.
    pub fn offer_all(&self, items: &[(i64, Envelope)]) {
        let horizon = self.horizon.load(Ordering::SeqCst);
        let late: Vec<&(i64, Envelope)> = items.iter().filter(|(ms, _)| *ms <= horizon).collect();
        if late.is_empty() {
            return;
        }
        let mut v = self.events.lock().expect("late");
        if v.len() + late.len() > MAX {
            tracing::warn!("otlp export: more than {MAX} late events waiting; {} not exported", late.len());
            return;
        }
        if let Some(f) = &self.file {
            let mut buf = Vec::new();
            for (_, e) in &late {
                let _ = serde_json::to_writer(&mut buf, e);
                buf.push(b'\n');
            }
            let kept = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .and_then(|mut h| h.write_all(&buf).and_then(|()| h.sync_data()));
            if let Err(e) = kept {
                tracing::warn!("otlp export: cannot keep late events in {}: {e}", f.display());
            }
        }
        v.extend(late.into_iter().cloned());
    }

    /// What is waiting now (taken out; what fails to go is `put_back`).
    pub fn take(&self) -> Vec<(i64, Envelope)> {
        std::mem::take(&mut *self.events.lock().expect("late"))
    }

    pub fn put_back(&self, events: Vec<(i64, Envelope)>) {
        self.events.lock().expect("late").extend(events);
    }

    /// Once everything taken went out and nothing new waits, the file is emptied.
    pub fn settle(&self) {
        let v = self.events.lock().expect("late");
        if let (true, Some(f)) = (v.is_empty(), &self.file) {
            if std::fs::metadata(f).is_ok_and(|m| m.len() > 0) {
                let _ = std::fs::File::create(f).and_then(|h| h.sync_all());
            }
        }
    }

    pub fn raise(&self, ms: i64) {
        self.horizon.fetch_max(ms, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, at: &str) -> (i64, Envelope) {
        let e: Envelope = serde_json::from_value(serde_json::json!({"v": 1, "id": id, "trace_id": null,
            "created_at": at, "agent_name": "a", "kind": "lifecycle"}))
        .unwrap();
        (e.check().unwrap(), e)
    }

    #[test]
    fn late_events_survive_a_restart_until_they_went_out() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("late.jsonl");
        let l = Late::open(f.clone());
        let (old, new) = (ev("old", "2026-11-29T10:00:00Z"), ev("new", "2026-11-29T12:00:00Z"));
        l.raise(old.0 + 1);
        l.offer_all(&[old.clone(), new]);
        // A restart: the one behind the horizon is still there.
        let again = Late::open(f.clone());
        assert_eq!(again.take().iter().map(|(_, e)| e.id.as_str()).collect::<Vec<_>>(), ["old"]);
        again.settle();
        assert_eq!(std::fs::metadata(&f).unwrap().len(), 0, "emptied once nothing waits");
        assert!(Late::open(f).take().is_empty());
    }
}
