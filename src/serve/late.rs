//! Accepted trace events the OpenTelemetry export may have passed already (`export`): ingest and
//! the backstop offer every newly stored event; those at or before the exporter's horizon are kept
//! here for it.

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
}

impl Late {
    /// Called by ingest for every newly stored event.
    pub fn offer(&self, ms: i64, e: &Envelope) {
        if ms <= self.horizon.load(Ordering::SeqCst) {
            self.push(ms, e.clone());
        }
    }
    pub fn push(&self, ms: i64, e: Envelope) {
        let mut v = self.events.lock().expect("late");
        if v.len() < 100_000 {
            v.push((ms, e));
        }
    }
    pub fn take(&self) -> Vec<(i64, Envelope)> {
        std::mem::take(&mut *self.events.lock().expect("late"))
    }
    pub fn raise(&self, ms: i64) {
        self.horizon.fetch_max(ms, Ordering::SeqCst);
    }
}
