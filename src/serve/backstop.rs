//! The transcript backstop: what fleet's plugin did not ship (a gateway that ran before the plugin
//! was enabled, events a crash took from its 100 ms queue) is read back from the gateways'
//! transcripts. Per (agent, session) the daemon keeps `chat.history`'s `deltaCursor`
//! (`serve/transcript-cursors.json`, survives restarts of both) and pulls what is new: at
//! connect (every session `sessions.list` names), and when `session.message` / `sessions.changed`
//! says a session moved. Messages become events with the plugin's ids (`trace::transcript`), so
//! the store keeps one copy of each.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::http::App;
use super::view::GatewayView;
use crate::openclaw::client::GatewayClient;
use crate::trace::store::Item;
use crate::trace::transcript::events_of;

const CALL: Duration = Duration::from_secs(30);
/// Pages of 200 read back from a session the daemon has no cursor for (newest first).
const TAIL_PAGES: usize = 10;

type Key = (String, String);

#[derive(Default)]
pub struct Cursors {
    map: Mutex<BTreeMap<String, String>>,
    file: PathBuf,
}

fn key_str(k: &Key) -> String {
    format!("{}\u{0}{}", k.0, k.1)
}

impl Cursors {
    fn load(file: PathBuf) -> Cursors {
        let map = std::fs::read(&file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Cursors { map: Mutex::new(map), file }
    }
    fn get(&self, k: &Key) -> Option<String> {
        self.map.lock().expect("cursors").get(&key_str(k)).cloned()
    }
    async fn set(&self, k: &Key, cursor: &str) {
        let bytes = {
            let mut m = self.map.lock().expect("cursors");
            m.insert(key_str(k), cursor.to_string());
            serde_json::to_vec(&*m).unwrap_or_default()
        };
        let f = self.file.clone();
        let _ = tokio::task::spawn_blocking(move || crate::fsutil::write_atomic(&f, &bytes, 0o600)).await;
    }
}

/// One gateway's watch, stopped when dropped (a gateway gone from the fleet, the daemon stopping).
struct Watch(tokio::task::JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches every gateway of the fleet (one task each, started as gateways appear).
pub async fn run(app: Arc<App>) {
    let file = app.layout().serve_dir().join("transcript-cursors.json");
    let Ok(cursors) = tokio::task::spawn_blocking(move || Cursors::load(file)).await else { return };
    let cursors = Arc::new(cursors);
    let mut watching: HashMap<String, Watch> = HashMap::new();
    loop {
        let gateways: Vec<GatewayView> = app.router.view.read().expect("view").gateways.values().cloned().collect();
        let names: BTreeSet<String> = gateways.iter().map(|g| g.name.clone()).collect();
        watching.retain(|name, w| names.contains(name) && !w.0.is_finished());
        for g in gateways {
            if !watching.contains_key(&g.name) {
                let name = g.name.clone();
                watching.insert(name, Watch(tokio::spawn(watch(app.clone(), cursors.clone(), g))));
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// One gateway: connect (again after every break), subscribe, sweep, then pull what moves.
async fn watch(app: Arc<App>, cursors: Arc<Cursors>, g: GatewayView) {
    loop {
        let Ok(c) = g.gref.connect_within(Duration::from_secs(5)).await else {
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        };
        let mut events = c.events();
        if c.rpc().call("sessions.subscribe", json!({}), CALL).await.is_err() {
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        }
        for k in sessions(&app, &c, &g.name).await {
            pull(&app, &cursors, &c, &k).await;
        }
        let mut dirty: BTreeSet<Key> = BTreeSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(ev) => {
                        let moved = ev.name == "session.message"
                            || (ev.name == "sessions.changed"
                                && matches!(ev.payload["phase"].as_str(), Some("end" | "message")));
                        let (agent, key) = (ev.payload["agentId"].as_str(), ev.payload["sessionKey"].as_str());
                        if let (true, Some(a), Some(k)) = (moved, agent, key) {
                            dirty.insert((a.to_string(), k.to_string()));
                        }
                    }
                    Err(RecvError::Lagged(_)) => dirty.extend(sessions(&app, &c, &g.name).await),
                    Err(RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    for k in std::mem::take(&mut dirty) {
                        pull(&app, &cursors, &c, &k).await;
                    }
                    if c.is_closed() {
                        break;
                    }
                }
            }
        }
    }
}

/// Every session of this gateway's agents (`sessions.list`, all pages).
async fn sessions(app: &App, c: &GatewayClient, gateway: &str) -> Vec<Key> {
    let ours: BTreeSet<String> = app.router.view.read().expect("view").agents_of(gateway).into_iter().collect();
    let mut out = Vec::new();
    let mut offset = 0;
    for _ in 0..100 {
        let Ok(v) = c.rpc().call("sessions.list", json!({"limit": 100, "offset": offset}), CALL).await else { break };
        for s in v["sessions"].as_array().into_iter().flatten() {
            if let (Some(a), Some(k)) = (s["agentId"].as_str(), s["key"].as_str()) {
                if ours.contains(a) {
                    out.push((a.to_string(), k.to_string()));
                }
            }
        }
        match (v["hasMore"] == true, v["nextOffset"].as_u64()) {
            (true, Some(n)) if n as usize > offset => offset = n as usize,
            _ => break,
        }
    }
    out
}

/// The newest messages of a session, page by page back (at most `pages`), and the cursor after them.
async fn tail(c: &GatewayClient, k: &Key, pages: usize) -> Option<(Vec<Value>, Option<String>)> {
    let mut messages = Vec::new();
    let mut cursor = None;
    let mut offset = 0u64;
    for _ in 0..pages {
        let params = json!({"sessionKey": k.1, "agentId": k.0, "limit": 200, "offset": offset, "maxChars": 100000});
        let v = c.rpc().call("chat.history", params, CALL).await.ok()?;
        if offset == 0 {
            cursor = v["deltaCursor"].as_str().map(str::to_string);
        }
        messages.extend(v["messages"].as_array().cloned().unwrap_or_default());
        match (v["hasMore"] == true, v["nextOffset"].as_u64()) {
            (true, Some(n)) if n > offset => offset = n,
            _ => break,
        }
    }
    Some((messages, cursor))
}

/// Pulls what is new in one session into its agent's trace; the cursor advances once it is stored.
async fn pull(app: &Arc<App>, cursors: &Cursors, c: &GatewayClient, k: &Key) {
    let known = app.router.view.read().expect("view").agents.contains_key(&k.0);
    if !known {
        return;
    }
    let delta = match cursors.get(k) {
        Some(cur) => {
            let params = json!({"sessionKey": k.1, "agentId": k.0, "cursor": cur});
            match c.rpc().call("chat.history", params, CALL).await {
                Ok(v) if v["kind"] == "delta" => {
                    let msgs: Vec<Value> =
                        v["messages"].as_array().into_iter().flatten().map(|m| m["message"].clone()).collect();
                    Some((msgs, v["deltaCursor"].as_str().map(str::to_string)))
                }
                Ok(_) => None, // reset: read the tail again
                Err(_) => return,
            }
        }
        None => None,
    };
    let (mut messages, cursor) = match delta {
        Some(d) => d,
        None => match tail(c, k, TAIL_PAGES).await {
            Some(t) => t,
            None => return,
        },
    };
    // A delta that starts inside a run: its earlier messages, from the tail, give exact ids.
    let runs = crate::trace::transcript::runs_of(&messages);
    let starts_inside =
        messages.first().is_some_and(|m| m["role"] != "user" && m["__openclaw"]["turnBoundary"] != true);
    if starts_inside && runs.first().is_some_and(Option::is_some) {
        if let Some((more, _)) = tail(c, k, 1).await {
            let have: BTreeSet<String> =
                messages.iter().filter_map(|m| m["__openclaw"]["id"].as_str().map(str::to_string)).collect();
            messages.extend(
                more.into_iter().filter(|m| m["__openclaw"]["id"].as_str().is_some_and(|id| !have.contains(id))),
            );
        }
    }
    let events = events_of(&k.0, &k.1, &messages);
    let dir = app.layout().agent_trace(&k.0);
    let items: Vec<Item> =
        events.into_iter().filter_map(|e| e.check().ok().map(|ms| Item { dir: dir.clone(), ms, event: e })).collect();
    if !items.is_empty() {
        let offered: Vec<_> = items.iter().map(|it| (it.ms, it.event.clone())).collect();
        match app.traces.write(items).await {
            Ok(written) => {
                let fresh: Vec<_> = offered
                    .into_iter()
                    .zip(written)
                    .filter(|(_, w)| *w != crate::trace::store::Written::Duplicate)
                    .map(|(o, _)| o)
                    .collect();
                let a = app.clone();
                let _ = tokio::task::spawn_blocking(move || a.late.offer_all(&fresh)).await;
            }
            Err(e) => {
                tracing::warn!("transcript of {} {}: {e}", k.0, k.1);
                return;
            }
        }
    }
    // A user message whose run has written nothing yet: read it again next time.
    let last_unresolved = {
        let mut sorted = messages.clone();
        sorted.sort_by_key(|m| m["__openclaw"]["seq"].as_i64().unwrap_or(0));
        let runs = crate::trace::transcript::runs_of(&sorted);
        sorted.last().is_some_and(|m| m["role"] == "user") && runs.last().is_some_and(Option::is_none)
    };
    if let (Some(cur), false) = (cursor, last_unresolved) {
        cursors.set(k, &cur).await;
    }
}
