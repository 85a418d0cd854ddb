//! The HTTP API (docs/api.md) and the status page's login. Every handler checks who is asking
//! first (401 without a token, 403 on what the token may not touch), then the request (400 naming
//! the field, 404 for an unknown agent, 413 for a body over 1 MiB), and only then stores anything.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router as Routes};
use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::api_error::ApiError;
use super::auth::{self, Principal, Tokens};
use super::request;
use super::router::Router;
use super::status::{agent_status, heartbeat_overdue, AgentStatus, Health};
use super::store::Message;
use super::view::FleetView;

pub struct App {
    pub router: Arc<Router>,
    pub tokens: RwLock<Tokens>,
    pub health: RwLock<Health>,
    pub fleet: String,
    /// Where the fleet and the admin token are read from (`reload`).
    pub state_db: std::path::PathBuf,
    pub token_file: std::path::PathBuf,
    pub data_dir: std::path::PathBuf,
    pub traces: crate::trace::writer::TraceWriter,
    /// Accepted events the OpenTelemetry export may have passed already.
    pub late: super::late::Late,
    /// When a request last made the state be read again (`reload_soon`).
    pub last_reload: tokio::sync::Mutex<Option<std::time::Instant>>,
    /// The status page's sessions and login codes.
    pub sessions: std::sync::Mutex<super::sessions::Sessions>,
    /// Where the daemon listens: the port its proof names; whether its cookie is `Secure`
    /// (beyond loopback).
    pub port: u16,
    pub secure_cookie: bool,
    /// Open event streams, capped.
    pub streams: super::streams::Streams,
}

pub type Shared = Arc<App>;

/// What the status shows of an agent's trace.
#[derive(Debug, Clone, Default)]
struct Traced {
    today: Value,
    turns: Value,
    last_heartbeat: Option<i64>,
    /// When apply last provisioned, updated or woke it.
    last_apply: Option<i64>,
}
type Params = Query<HashMap<String, String>>;

/// The API's routes (the trace endpoints and the page add theirs, and the state, in `serve::run`).
pub fn routes() -> Routes<Shared> {
    Routes::new()
        .route("/healthz", get(|| async { Json(json!({"ok": true, "pid": std::process::id()})) }))
        .route("/v1/agents", get(agents))
        .route("/v1/status", get(status))
        .route("/v1/agents/{agent}/messages", post(post_message).get(history))
        .route("/v1/agents/{agent}/events", get(agent_events))
        .route("/v1/events", get(all_events))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see docs/api.md") })
        .layer(DefaultBodyLimit::max(request::MAX_BODY))
        // Method and path only: a query may hold the admin token (`/?token=…`), headers a bearer token.
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(
            |r: &axum::http::Request<axum::body::Body>| tracing::debug_span!("request", method = %r.method(), path = %r.uri().path()),
        ))
}

impl App {
    /// Reads the fleet (agents, their tokens) and the admin token again from the state.
    pub async fn reload(&self) {
        let p = self.state_db.clone();
        let Ok(Ok(v)) = tokio::task::spawn_blocking(move || FleetView::load(&p)).await else { return };
        let admin =
            std::fs::read_to_string(&self.token_file).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let tokens = v.tokens(admin.as_deref());
        let changed = self.tokens.read().expect("tokens").admin_hash() != tokens.admin_hash();
        if changed {
            self.sessions.lock().expect("sessions").close_all(); // a new admin token ends every session
        }
        *self.tokens.write().expect("tokens") = tokens;
        *self.router.view.write().expect("view") = v;
    }

    /// Reads the state again for a request that names something unknown (a token, an agent an
    /// apply added a moment ago) — at most once a second, whoever asks: requests that arrive while
    /// one waits share its read, so a flood of unknown tokens costs one state read a second.
    pub async fn reload_soon(&self) {
        let asked = std::time::Instant::now();
        let mut last = self.last_reload.lock().await;
        if last.is_some_and(|t| t >= asked) {
            return; // a read that started after this request asked has seen what it needs
        }
        if let Some(t) = *last {
            tokio::time::sleep(Duration::from_secs(1).saturating_sub(t.elapsed())).await;
        }
        *last = Some(std::time::Instant::now());
        self.reload().await;
    }

    /// Who is asking, and whether the session cookie (not a bearer token) says so.
    fn principal_now(&self, headers: &HeaderMap) -> Option<(Principal, bool)> {
        let tokens = self.tokens.read().expect("tokens");
        let bearer = auth::bearer_of(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
        let cookie = auth::cookie_of(headers.get(header::COOKIE).and_then(|v| v.to_str().ok()));
        match bearer.and_then(|t| tokens.bearer(t)) {
            Some(p) => Some((p, false)),
            None => cookie
                .filter(|c| self.sessions.lock().expect("sessions").is_live(c, crate::clock::now_ms()))
                .map(|_| (Principal::Admin, true)),
        }
    }

    /// Who is asking: a bearer token, or the status page's session cookie (true). A token not known
    /// yet (an agent an apply added a moment ago) is looked up again in the state before it is refused.
    pub(super) async fn principal_via(&self, headers: &HeaderMap) -> Result<(Principal, bool), ApiError> {
        if let Some(p) = self.principal_now(headers) {
            return Ok(p);
        }
        if headers.contains_key(header::AUTHORIZATION) {
            // At most once a second: unknown tokens cannot make the daemon read its state faster.
            self.reload_soon().await;
        }
        self.principal_now(headers).ok_or_else(ApiError::unauthorized)
    }

    /// Who is asking (`principal_via`).
    pub async fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        self.principal_via(headers).await.map(|(p, _)| p)
    }

    /// The agent a request names, checked: a valid name, one the principal may touch, in the fleet
    /// (read again from the state before an agent is called unknown: apply may have just added it).
    pub(super) async fn agent<'a>(&self, who: &Principal, name: &'a str) -> Result<&'a str, ApiError> {
        let name = request::agent_name(name)?;
        if !who.may_touch(name) {
            return Err(ApiError::forbidden(name));
        }
        let known = || self.router.view.read().expect("view").agents.contains_key(name);
        if !known() {
            self.reload().await;
            if !known() {
                return Err(ApiError::unknown_agent(name));
            }
        }
        Ok(name)
    }

    pub fn layout(&self) -> crate::layout::Layout {
        crate::layout::Layout { data_dir: self.data_dir.clone(), cache_dir: std::path::PathBuf::new() }
    }

    /// Where an event of `agent` posted by `who` is kept; None: `who` may not post it (or, before
    /// the state was read again, the agent is not known yet).
    pub fn trace_dir(&self, who: &Principal, agent: Option<&str>, reloaded: bool) -> Option<std::path::PathBuf> {
        let view = self.router.view.read().expect("view");
        match (who, agent) {
            (_, Some(a)) if view.agents.contains_key(a) => {
                let allowed = match who {
                    Principal::Admin | Principal::Callback => true,
                    Principal::Agent(x) => x == a,
                    Principal::Gateway(g) => view.agents[a].gateway == *g,
                };
                allowed.then(|| self.layout().agent_trace(a))
            }
            // Events of no agent of this fleet (OpenClaw's own `main`, an agent removed since) are kept
            // apart, never in an agent's trace; a sender is not left retrying them forever.
            (Principal::Admin | Principal::Callback | Principal::Gateway(_), _) if reloaded || agent.is_none() => {
                Some(self.layout().other_trace(agent))
            }
            _ => None,
        }
    }

    /// Per agent: today's (UTC) calls, tokens and cost as the proxy priced them, and its last turns.
    async fn trace_summaries(&self, agents: Vec<String>) -> std::collections::BTreeMap<String, Traced> {
        let layout = self.layout();
        tokio::task::spawn_blocking(move || {
            let now = crate::clock::now_ms();
            let midnight = now - now.rem_euclid(86_400_000);
            let mut out = std::collections::BTreeMap::new();
            for a in agents {
                let dir = layout.agent_trace(&a);
                let rows = crate::trace::store::usage(&dir, Some(midnight), None).unwrap_or_default();
                let today = json!({
                    "calls": rows.iter().map(|r| r.calls).sum::<i64>(),
                    "tokens_in": rows.iter().map(|r| r.tokens_in).sum::<i64>(),
                    "tokens_out": rows.iter().map(|r| r.tokens_out).sum::<i64>(),
                    "cost_usd": rows.iter().map(|r| r.cost_usd).sum::<f64>(),
                });
                let q = crate::trace::query::Query { limit: 300, ..Default::default() };
                let events: Vec<_> =
                    crate::trace::store::read(&dir, &q).unwrap_or_default().into_iter().map(|(_, e)| e).collect();
                let turns = serde_json::to_value(crate::trace::summary::last_turns(&events, 3)).unwrap_or_default();
                let newest = |channel: &str| {
                    let q =
                        crate::trace::query::Query { channel: Some(channel.into()), limit: 1, ..Default::default() };
                    crate::trace::store::read(&dir, &q).ok().and_then(|v| v.first().map(|(ms, _)| *ms))
                };
                out.insert(
                    a,
                    Traced { today, turns, last_heartbeat: newest("heartbeat"), last_apply: newest("apply") },
                );
            }
            out
        })
        .await
        .unwrap_or_default()
    }

    /// Every agent with its status, model, gateway, host and last activity.
    pub async fn agents_json(&self, who: &Principal) -> Result<Vec<Value>, ApiError> {
        let latest = self.router.messages.with(|s| s.latest_per_agent()).await.map_err(ApiError::internal)?;
        let replied = self.router.messages.with(|s| s.agents_answered()).await.map_err(ApiError::internal)?;
        let view = self.router.view.read().expect("view").clone();
        let health = self.health.read().expect("health").clone();
        let names: Vec<String> = view.agents.keys().filter(|a| who.may_touch(a)).cloned().collect();
        let traces = self.trace_summaries(names).await;
        Ok(view
            .agents
            .values()
            .filter(|a| who.may_touch(&a.name))
            .map(|a| {
                let t = traces.get(&a.name).cloned().unwrap_or_default();
                let mut status = agent_status(health.get(&a.gateway), a, replied.contains(&a.name));
                let silent =
                    heartbeat_overdue(a.heartbeat.as_deref(), t.last_heartbeat, t.last_apply, crate::clock::now_ms());
                if status == AgentStatus::Online && silent.is_some() {
                    status = AgentStatus::Offline;
                }
                let last = latest.iter().find(|m| m.agent == a.name);
                let host = view.gateways.get(&a.gateway).map(|g| g.host.clone()).unwrap_or_default();
                json!({
                    "name": a.name,
                    "model": a.model,
                    "gateway": a.gateway,
                    "host": host,
                    "heartbeat": a.heartbeat,
                    "status": status,
                    "silent": silent,
                    "last_heartbeat": t.last_heartbeat.map(crate::clock::format_rfc3339_ms),
                    "last_activity": last.map(|m| m.created_at.clone()),
                    "last_message": last,
                    "today": t.today,
                    "turns": t.turns,
                })
            })
            .collect())
    }
}

/// Who is asking, as a handler takes it: the request's bearer token or the status page's session
/// cookie (`App::principal`). A handler that takes a `Caller` answers 401 before it runs when the
/// caller is nobody.
pub struct Caller(pub Principal);

impl axum::extract::FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, app: &Shared) -> Result<Self, ApiError> {
        let (who, by_cookie) = app.principal_via(&parts.headers).await?;
        if let Some(why) = super::session::cross_site_write(&parts.method, &parts.headers).filter(|_| by_cookie) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "cross_site", why));
        }
        Ok(Caller(who))
    }
}

async fn agents(State(app): State<Shared>, Caller(who): Caller) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"agents": app.agents_json(&who).await?})))
}

/// The fleet, its gateways (healthy?, version, agent count), every agent, the last runs (admin only).
async fn status(State(app): State<Shared>, Caller(who): Caller) -> Result<Json<Value>, ApiError> {
    if who != Principal::Admin {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "the fleet's status needs the admin token"));
    }
    let agents = app.agents_json(&who).await?;
    let view = app.router.view.read().expect("view").clone();
    let health = app.health.read().expect("health").clone();
    let gateways: Vec<Value> = view
        .gateways_by_host()
        .into_iter()
        .flat_map(|(_, gws)| gws)
        .map(|g| {
            let h = health.get(&g.name);
            json!({
                "name": g.name,
                "host": g.host,
                "member": g.member,
                "healthy": h.is_some_and(|h| h.healthy),
                "version": h.map(|h| h.version.clone()).filter(|v| !v.is_empty()).unwrap_or_else(|| g.version.clone()),
                "agents": view.agents.values().filter(|a| a.gateway == g.name).count(),
                "problem": h.and_then(|h| h.problem.clone()),
            })
        })
        .collect();
    Ok(Json(json!({"fleet": app.fleet, "gateways": gateways, "agents": agents, "runs": view.runs})))
}

async fn post_message(
    State(app): State<Shared>,
    Caller(who): Caller,
    Path(agent): Path<String>,
    Query(q): Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let agent = app.agent(&who, &agent).await?.to_string();
    let body = body.map_err(|r| ApiError::of_body(r, request::MAX_BODY))?;
    let wait = request::wait_secs(q.get("wait").map(String::as_str))?;
    let m = request::new_message(&body)?;
    let from = m.from.clone().or_else(|| match &who {
        Principal::Agent(a) => Some(format!("agent:{a}")),
        _ => None,
    });
    let mut answers = app.router.events.subscribe();
    let (a, t) = (agent.clone(), m.thread.clone());
    let stored = app
        .router
        .messages
        .with(move |s| s.add_user(&a, &t, from.as_deref(), &m.text))
        .await
        .map_err(ApiError::internal)?;
    // Committed: from here on the message is acknowledged, and delivered whatever happens.
    let _ = app.router.events.send(stored.clone().for_event());
    tokio::spawn(app.router.clone().deliver(stored.clone()));
    let accepted = || (StatusCode::ACCEPTED, Json(json!({"id": stored.id, "thread": stored.thread}))).into_response();
    let Some(secs) = wait else { return Ok(accepted()) };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, answers.recv()).await {
            Err(_) => return Ok(accepted()),
            Ok(Ok(m)) if m.reply_to.as_deref() == Some(stored.id.as_str()) && m.text_bytes.is_none() => {
                return Ok(Json(m).into_response())
            }
            // The answer, cut for events: the whole of it from the store.
            Ok(Ok(m)) if m.reply_to.as_deref() == Some(stored.id.as_str()) => {
                let id = stored.id.clone();
                let found = app.router.messages.with(move |s| s.answer_of(&id)).await.map_err(ApiError::internal)?;
                return Ok(Json(found.unwrap_or(m)).into_response());
            }
            Ok(Ok(_)) => {}
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                let id = stored.id.clone();
                let found = app.router.messages.with(move |s| s.answer_of(&id)).await.map_err(ApiError::internal)?;
                if let Some(m) = found {
                    return Ok(Json(m).into_response());
                }
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => return Ok(accepted()),
        }
    }
}

/// `GET …/messages?thread=&after=&limit=`: a thread, oldest first; `after` is a message id.
async fn history(
    State(app): State<Shared>,
    Caller(who): Caller,
    Path(agent): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let agent = app.agent(&who, &agent).await?.to_string();
    let thread = request::thread_id(q.get("thread").map(String::as_str).unwrap_or("main"))?.to_string();
    let limit = request::limit(q.get("limit").map(String::as_str))?;
    let after = match q.get("after") {
        None => None,
        Some(id) => {
            let id = id.clone();
            let seq = app.router.messages.with(move |s| s.seq_of(&id)).await.map_err(ApiError::internal)?;
            Some(seq.ok_or_else(|| ApiError::bad("unknown_message", "`after` names no stored message"))?)
        }
    };
    let (a, t) = (agent, thread.clone());
    // A page holds `limit` messages, or fewer when they are large (Store::history); `more` either way.
    let (msgs, more) = app
        .router
        .messages
        .with(move |s| {
            let mut msgs = s.history(&a, &t, after, limit + 1)?;
            if msgs.len() > limit {
                msgs.truncate(limit);
                return Ok((msgs, true));
            }
            let more = match msgs.last() {
                Some(m) => s.has_after(&a, &t, m.seq)?,
                None => false,
            };
            Ok((msgs, more))
        })
        .await
        .map_err(ApiError::internal)?;
    let next = if more { msgs.last().map(|m| m.id.clone()) } else { None };
    Ok(Json(json!({"thread": thread, "messages": msgs, "next_after": next})))
}

async fn all_events(
    State(app): State<Shared>,
    Caller(who): Caller,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let scope = match &who {
        Principal::Admin => None,
        Principal::Agent(a) => Some(a.clone()),
        Principal::Callback | Principal::Gateway(_) => {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this token may only post trace events"))
        }
    };
    events(app, &who, scope, &headers, &q).await
}

async fn agent_events(
    State(app): State<Shared>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(agent): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let agent = app.agent(&who, &agent).await?.to_string();
    events(app, &who, Some(agent), &headers, &q).await
}

/// Server-Sent Events: every message stored after the client's `Last-Event-ID` (or `?after=`, an
/// event id), then each new one as it is stored. `id:` is the message's `seq`. The backlog is read
/// a bounded page at a time (`Store::events_since`), an event's text is cut (`Message::for_event`),
/// and streams are capped (`streams`): a client that
/// reads nothing holds one page and one event, not the store.
async fn events(
    app: Shared,
    who: &Principal,
    agent: Option<String>,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let slot =
        app.streams.take(who).map_err(|why| ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_streams", why))?;
    // Subscribed before the backlog (or the newest id) is read: nothing stored in between is
    // missed (duplicates are skipped by seq).
    let rx = app.router.events.subscribe();
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| q.get("after").cloned())
        .map(|s| s.trim().parse::<i64>().map_err(|_| ApiError::bad("invalid_event_id", "an event id is a number")))
        .transpose()?;
    // A client that names no event gets what is stored from now on; one that does, everything after it.
    let last = match last {
        Some(l) => l,
        None => app.router.messages.with(|s| s.latest_seq()).await.map_err(ApiError::internal)?,
    };
    Ok(Sse::new(event_stream(app, agent, last, rx, slot))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

struct Cursor {
    app: Shared,
    agent: Option<String>,
    last: i64,
    backlog: std::collections::VecDeque<Message>,
    rx: broadcast::Receiver<Message>,
    /// The backlog must be read from the store (at the start, and after the live feed lagged).
    refill: bool,
    /// This stream's place among the open ones.
    _slot: super::streams::Slot,
}

fn event_stream(
    app: Shared,
    agent: Option<String>,
    last: i64,
    rx: broadcast::Receiver<Message>,
    slot: super::streams::Slot,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let c = Cursor { app, agent, last, backlog: Default::default(), rx, refill: true, _slot: slot };
    futures_util::stream::unfold(c, |mut c| async move {
        loop {
            if c.refill {
                let (after, agent) = (c.last, c.agent.clone());
                let rows =
                    c.app.router.messages.with(move |s| s.events_since(after, agent.as_deref(), 1000)).await.ok()?;
                c.refill = !rows.is_empty(); // the next page, once this one is sent
                c.backlog.extend(rows);
            }
            if let Some(m) = c.backlog.pop_front() {
                if m.seq > c.last {
                    c.last = m.seq;
                    return Some((Ok(sse(&m)), c));
                }
                continue;
            }
            match c.rx.recv().await {
                // Messages are committed in seq order but published by many tasks, so they can reach
                // the channel out of order: anything but the next seq is read back from the store.
                Ok(m) if m.seq > c.last + 1 => c.refill = true,
                Ok(m) if m.seq > c.last && c.agent.as_ref().is_none_or(|a| *a == m.agent) => {
                    c.last = m.seq;
                    return Some((Ok(sse(&m)), c));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => c.refill = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

fn sse(m: &Message) -> Event {
    Event::default().id(m.seq.to_string()).event("message").data(serde_json::to_string(m).unwrap_or_default())
}
