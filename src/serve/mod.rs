//! `fleet serve`: the resident daemon. Routes chat to agents and keeps every conversation
//! (`store`, `router`), says who is alive (`status`), serves the API and the status page
//! (`http`, `page`), knows who may do what (`auth`), and reads the fleet from its state (`view`).
//! `run(listener, config, shutdown)` is the whole server, so tests bind port 0 and stop it.
//! `process` is the `serve` resource: the daemon as a process apply starts, adopts and stops;
//! `agent_token` the agents' own tokens.

pub mod agent_token;
mod api_error;
pub mod auth;
mod backstop;
pub mod export;
mod http;
mod late;
mod listen;
mod login;
mod page;
pub mod process;
#[cfg(test)]
mod proptests;
mod provenance;
mod request;
pub mod router;
mod session;
mod sessions;
mod status;
pub mod store;
mod streams;
mod trace_api;
pub mod view;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use miette::{IntoDiagnostic, WrapErr};
use tokio::sync::broadcast;

use self::http::App;
use self::router::Router;
use self::status::GatewayHealth;
use self::view::FleetView;

/// What one daemon serves.
#[derive(Debug, Clone)]
pub struct Config {
    pub fleet: String,
    pub data_dir: PathBuf,
    pub reply_timeout: Duration,
}

impl Config {
    fn layout(&self) -> crate::layout::Layout {
        crate::layout::Layout { data_dir: self.data_dir.clone(), cache_dir: PathBuf::new() }
    }
}

fn read_admin_token(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Serves until `shutdown` resolves (then gives open requests two seconds).
pub async fn run(
    listener: tokio::net::TcpListener,
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> miette::Result<()> {
    let layout = cfg.layout();
    std::fs::create_dir_all(layout.serve_dir()).into_diagnostic().wrap_err("cannot create the daemon's directory")?;
    let db = layout.conversations_db();
    let store =
        tokio::task::spawn_blocking(move || store::Store::open(&db)).await.into_diagnostic()?.into_diagnostic()?;
    let state_db = layout.state_db();
    let view = {
        let p = state_db.clone();
        tokio::task::spawn_blocking(move || FleetView::load(&p)).await.into_diagnostic()??
    };
    let tokens = view.tokens(read_admin_token(&layout.serve_token()).as_deref());
    // Events carry cut texts (≤ 64 KiB); a stream that lags reads back from the store.
    let (events, _) = broadcast::channel(256);
    let traces = crate::trace::writer::TraceWriter::start(Box::new(crate::clock::now_ms));
    let late_file = layout.serve_dir().join("otlp-late.jsonl");
    let late = tokio::task::spawn_blocking(move || late::Late::open(late_file)).await.into_diagnostic()?;
    let router = Arc::new(
        Router::new(store::Messages::new(store), Arc::new(RwLock::new(view)), events, cfg.reply_timeout)
            .with_traces(traces.clone(), layout.clone()),
    );
    let app = Arc::new(App {
        router: router.clone(),
        tokens: RwLock::new(tokens),
        health: RwLock::new(Default::default()),
        fleet: cfg.fleet.clone(),
        state_db: layout.state_db(),
        token_file: layout.serve_token(),
        data_dir: cfg.data_dir.clone(),
        traces,
        late,
        last_reload: Default::default(),
        sessions: Default::default(),
        port: listener.local_addr().map(|a| a.port()).unwrap_or(0),
        secure_cookie: listener.local_addr().is_ok_and(|a| !a.ip().is_loopback()),
        streams: Default::default(),
    });

    let reconciled = router.reconcile().await;
    if reconciled > 0 {
        tracing::info!("delivering {reconciled} message(s) left pending by an earlier run");
    }
    let bg = [
        tokio::spawn(reload_view(app.clone())),
        tokio::spawn(poll_health(app.clone())),
        tokio::spawn(seal_traces(app.clone())),
        tokio::spawn(export::run(app.clone())),
        tokio::spawn(backstop::run(app.clone())),
    ];
    let routes = http::routes()
        .merge(trace_api::routes())
        .merge(login::routes())
        .route("/", axum::routing::get(page::page))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(listen::BODY_TIMEOUT))
        .with_state(app);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let grace = async move {
        shutdown.await;
        let _ = tx.send(());
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    tokio::select! {
        _ = listen::serve(listener, routes, async { let _ = rx.await; }) => {}
        _ = grace => {}
    }
    for t in bg {
        t.abort();
    }
    Ok(())
}

/// Reads the state again every two seconds: agents added or removed by apply, their tokens.
async fn reload_view(app: Arc<App>) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        app.reload().await;
    }
}

/// A gateway went down or came back: a `lifecycle` event in the trace of each of its agents.
async fn gateway_changed(app: &App, gateway: &str, up: bool, problem: Option<&str>) {
    let agents = app.router.view.read().expect("view").agents_of(gateway);
    let now = crate::clock::now_ms();
    let phase = if up { "gateway_up" } else { "gateway_down" };
    let layout = app.layout();
    let items: Vec<crate::trace::store::Item> = agents
        .into_iter()
        .filter_map(|a| {
            let event: crate::trace::envelope::Envelope = serde_json::from_value(serde_json::json!({
                "v": 1, "id": format!("fleet:{gateway}:{phase}:{now}:{a}"), "trace_id": null,
                "created_at": crate::clock::format_rfc3339_ms(now), "agent_name": a, "kind": "lifecycle",
                "channel_id": "daemon", "backend_name": "fleet", "error": problem,
                "payload": {"phase": phase, "gateway": gateway, "problem": problem},
            }))
            .ok()?;
            Some(crate::trace::store::Item { dir: layout.agent_trace(&a), ms: now, event })
        })
        .collect();
    if let Err(e) = app.traces.write(items).await {
        tracing::warn!("lifecycle events of gateway {gateway}: {e}");
    }
}

/// Seals the trace buckets whose time has come: at start, then every five minutes.
async fn seal_traces(app: Arc<App>) {
    loop {
        let layout = app.layout();
        let mut dirs: Vec<PathBuf> =
            app.router.view.read().expect("view").agents.keys().map(|a| layout.agent_trace(a)).collect();
        let others = layout.serve_dir().join("trace");
        let more = tokio::task::spawn_blocking(move || -> Vec<PathBuf> {
            std::fs::read_dir(others).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default()
        });
        dirs.extend(more.await.unwrap_or_default());
        app.traces.seal(dirs);
        tokio::time::sleep(Duration::from_secs(300)).await;
    }
}

/// Asks every gateway, every five seconds, whether it is healthy and which agents it lists.
async fn poll_health(app: Arc<App>) {
    loop {
        let gateways: Vec<_> = app.router.view.read().expect("view").gateways.values().cloned().collect();
        for g in gateways {
            let h = match app.router.client(&g.gref).await {
                Err(why) => GatewayHealth { problem: Some(why), ..Default::default() },
                Ok(c) => {
                    let healthy = c.healthy().await;
                    let listed = c.agent_ids().await;
                    match (healthy, listed) {
                        (Ok(true), Ok(listed)) => GatewayHealth {
                            healthy: true,
                            listed,
                            version: c.server_version().to_string(),
                            ..Default::default()
                        },
                        (Ok(false), _) => {
                            GatewayHealth { problem: Some("reports itself unhealthy".into()), ..Default::default() }
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            GatewayHealth { problem: Some(e.to_string()), ..Default::default() }
                        }
                    }
                }
            };
            let h = GatewayHealth { checked_at: crate::clock::now(), ..h };
            let was = app.health.read().expect("health").get(&g.name).map(|o| o.healthy);
            if was.is_some_and(|w| w != h.healthy) {
                gateway_changed(&app, &g.name, h.healthy, h.problem.as_deref()).await;
            }
            app.health.write().expect("health").insert(g.name.clone(), h);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
