//! OpenTelemetry export: every turn of every agent sent as spans (`trace::otlp`) to an OTLP/HTTP
//! receiver (protobuf), from the trace stores, behind a cursor per agent persisted in
//! `serve/otlp-cursor.json` — resumable across restarts, and apart from ingest (it only reads).
//! An event is exported once it is 5 s old (so a turn's events have arrived); an event that
//! arrives later than that with an older time (a sender catching up after an outage) is exported
//! from the late list ingest hands over (`late`, kept on disk until sent).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;

use super::http::App;
use super::process::ExportInputs;
use crate::fleetfile::secret::SecretRef;
use crate::trace::envelope::Envelope;
use crate::trace::otlp::{request, span_of, Options};
use crate::trace::query::{Order, Query};
use crate::trace::store;

const SETTLE_MS: i64 = 5000;
const PAGE: usize = 500;

type Cursors = BTreeMap<String, (i64, String)>;

fn headers_of(e: &ExportInputs) -> Vec<(String, String)> {
    let Some(r) = e.headers.as_deref().and_then(|h| SecretRef::parse(h, std::path::Path::new("/")).ok()) else {
        return Vec::new();
    };
    match r.resolve() {
        Ok(s) => s
            .expose()
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
        Err(why) => {
            tracing::warn!("otlp headers: {why}");
            Vec::new()
        }
    }
}

/// The event that opens the span `e` closes: a turn's `message_in`, a result's `tool_call`.
fn opening(dir: &std::path::Path, e: &Envelope, page: &[(i64, Envelope)]) -> Option<(i64, Envelope)> {
    let trace = e.trace_id.clone()?;
    type Wanted = Box<dyn Fn(&Envelope) -> bool>;
    let (kind, want): (&str, Wanted) = match e.kind.as_str() {
        "message_out" | "error" => ("message_in", Box::new(|_| true)),
        "tool_result" => {
            let id = e.payload["tool_call_id"].clone();
            ("tool_call", Box::new(move |c: &Envelope| c.payload["tool_call_id"] == id))
        }
        _ => return None,
    };
    let found = page.iter().find(|(_, c)| c.kind == kind && c.trace_id.as_deref() == Some(&trace) && want(c)).cloned();
    found.or_else(|| {
        let q = Query { kinds: vec![kind.into()], trace_id: Some(trace), limit: 50, ..Query::default() };
        store::read(dir, &q).ok()?.into_iter().find(|(_, c)| want(c))
    })
}

struct Exporter {
    app: Arc<App>,
    http: reqwest::Client,
    cursor_file: PathBuf,
    cursors: Cursors,
    failing: bool,
}

impl Exporter {
    async fn send(&mut self, cfg: &ExportInputs, spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>) -> bool {
        if spans.is_empty() {
            return true;
        }
        let body = request(&self.app.fleet, cfg.project.as_deref(), spans).encode_to_vec();
        let mut req = self.http.post(&cfg.url).header("content-type", "application/x-protobuf").body(body);
        for (k, v) in headers_of(cfg) {
            req = req.header(k, v);
        }
        let outcome = match req.timeout(Duration::from_secs(10)).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("HTTP {}", r.status())),
            Err(e) => {
                let mut why = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    why.push_str(&format!(": {s}"));
                    src = s.source();
                }
                Err(why)
            }
        };
        match outcome {
            Ok(()) => {
                if self.failing {
                    tracing::info!("otlp export to {} works again", cfg.url);
                }
                self.failing = false;
                true
            }
            Err(why) => {
                if !self.failing {
                    tracing::warn!("otlp export to {}: {why}; trying again (nothing is skipped)", cfg.url);
                }
                self.failing = true;
                false
            }
        }
    }

    async fn spans(
        &self,
        dir: PathBuf,
        events: Vec<(i64, Envelope)>,
        o: Options,
    ) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        tokio::task::spawn_blocking(move || {
            events.iter().filter_map(|(ms, e)| span_of(e, *ms, opening(&dir, e, &events).as_ref(), o)).collect()
        })
        .await
        .unwrap_or_default()
    }

    async fn save(&self) {
        let (path, bytes) = (self.cursor_file.clone(), serde_json::to_vec(&self.cursors).unwrap_or_default());
        let _ = tokio::task::spawn_blocking(move || crate::fsutil::write_atomic(&path, &bytes, 0o644)).await;
    }

    /// One round: every agent's events past its cursor (settled), then the late ones.
    async fn round(&mut self, cfg: &ExportInputs) {
        let o = Options { capture_content: cfg.capture_content };
        let layout = self.app.layout();
        let agents: Vec<String> = self.app.router.view.read().expect("view").agents.keys().cloned().collect();
        let until = crate::clock::now_ms() - SETTLE_MS;
        self.app.late.raise(until);
        for agent in agents {
            let dir = layout.agent_trace(&agent);
            let after = self.cursors.get(&agent).cloned();
            let q = Query {
                since: after.as_ref().map(|(ms, _)| *ms),
                until: Some(until),
                after: after.clone(),
                order: Order::Asc,
                limit: PAGE,
                ..Query::default()
            };
            let d = dir.clone();
            let Ok(Ok(page)) = tokio::task::spawn_blocking(move || store::read(&d, &q)).await else { continue };
            let Some((ms, last)) = page.last().map(|(ms, e)| (*ms, e.id.clone())) else { continue };
            let spans = self.spans(dir, page, o).await;
            if !self.send(cfg, spans).await {
                return;
            }
            self.cursors.insert(agent, (ms, last));
            self.save().await;
        }
        let late = self.app.late.take();
        let mut keep = Vec::new();
        for (ms, e) in late {
            let Some(agent) = e.agent_name.clone() else { continue };
            let dir = layout.agent_trace(&agent);
            let spans = self.spans(dir, vec![(ms, e.clone())], o).await;
            if !self.send(cfg, spans).await {
                keep.push((ms, e));
            }
        }
        let app = self.app.clone();
        let _ = tokio::task::spawn_blocking(move || {
            app.late.put_back(keep);
            app.late.settle();
        })
        .await;
    }
}

/// The export loop: idle while the fleet declares no export.
pub async fn run(app: Arc<App>) {
    let cursor_file = app.layout().serve_dir().join("otlp-cursor.json");
    let f = cursor_file.clone();
    let cursors: Cursors = tokio::task::spawn_blocking(move || {
        std::fs::read(f).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    })
    .await
    .unwrap_or_default();
    let http = reqwest::Client::builder().no_proxy().build().unwrap_or_default();
    app.late.raise(cursors.values().map(|(ms, _)| *ms).max().unwrap_or(0));
    let mut x = Exporter { app, http, cursor_file, cursors, failing: false };
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cfg = x.app.router.view.read().expect("view").export.clone();
        if let Some(cfg) = cfg {
            x.round(&cfg).await;
        }
    }
}
