//! Open event streams (`/v1/events`, `/v1/agents/{a}/events`), capped per principal and overall
//! (issue 24): a stalled client holds a connection and what it has not read yet, so their number
//! is what bounds the daemon's memory. A slot is given back when its stream ends (the client went
//! away: noticed at the next write, a keep-alive at most 15 s later).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::auth::Principal;

/// Streams open at once, all principals together.
pub const MAX_STREAMS: usize = 64;
/// Streams open at once for one principal (the admin's status page tabs and tools; one agent).
pub const MAX_PER_PRINCIPAL: usize = 16;

#[derive(Default, Clone, Debug)]
pub struct Streams(Arc<Mutex<HashMap<String, usize>>>);

/// One open stream's place; dropping it gives the place back.
#[derive(Debug)]
pub struct Slot {
    streams: Streams,
    key: String,
}

fn key_of(who: &Principal) -> String {
    match who {
        Principal::Admin => "admin".into(),
        Principal::Agent(a) => format!("agent:{a}"),
        Principal::Callback => "callback".into(),
        Principal::Gateway(g) => format!("gateway:{g}"),
    }
}

impl Streams {
    /// A place for one more stream of `who`, or why there is none.
    pub fn take(&self, who: &Principal) -> Result<Slot, String> {
        let key = key_of(who);
        let mut open = self.0.lock().expect("streams");
        let total: usize = open.values().sum();
        let mine = open.get(&key).copied().unwrap_or(0);
        if mine >= MAX_PER_PRINCIPAL {
            return Err(format!(
                "this token has {mine} event streams open already (at most {MAX_PER_PRINCIPAL}); close one"
            ));
        }
        if total >= MAX_STREAMS {
            return Err(format!("the daemon has {total} event streams open (at most {MAX_STREAMS}); try again later"));
        }
        *open.entry(key.clone()).or_default() += 1;
        Ok(Slot { streams: self.clone(), key })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.0.lock().expect("streams").values().sum()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.0.lock().expect("streams");
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_capped_per_principal_and_overall_and_given_back() {
        let s = Streams::default();
        let alice = Principal::Agent("alice".into());
        let held: Vec<Slot> = (0..MAX_PER_PRINCIPAL).map(|_| s.take(&alice).unwrap()).collect();
        assert!(s.take(&alice).unwrap_err().contains("at most 16"));
        drop(held);
        assert_eq!(s.open(), 0, "given back on drop");
        let mut all = Vec::new();
        for i in 0..MAX_STREAMS {
            all.push(s.take(&Principal::Agent(format!("a{}", i % 8))).unwrap());
        }
        assert!(s.take(&Principal::Admin).unwrap_err().contains("at most 64"));
        all.pop();
        assert!(s.take(&Principal::Admin).is_ok());
    }
}
