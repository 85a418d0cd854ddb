//! The trace endpoints: `POST /v1/trace` (ingest, idempotent by event id), `GET
//! /v1/agents/{agent}/trace` (filters, pages), `GET /v1/usage` and `GET /v1/agents/{agent}/usage`.
//! Each event of a batch is checked alone — a valid envelope, at most 256 KiB, not from the far
//! future, one its token's sender produces (`provenance.rs`) for an agent it may post for — and the
//! rest are kept: one bad event never costs the others; a 200 means every event it counts as
//! accepted is durable, and it lists the refused ones by index.

use std::collections::HashMap;
use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router as Routes};
use serde_json::{json, Value};

use super::api_error::ApiError;
use super::auth::Principal;
use super::http::{Caller, Shared};
use crate::litellm::spend;
use crate::trace::envelope::Envelope;
use crate::trace::query::{cursor_of, parse_cursor, Order, Query as TraceQuery, LIMIT_DEFAULT, LIMIT_MAX};
use crate::trace::store::{self, Item, Written};

/// A batch's limits: 1000 events, 8 MiB; an event's: 256 KiB.
pub const BATCH_MAX: usize = 1000;
pub const BODY_MAX: usize = 8 << 20;
pub const EVENT_MAX: usize = 256 << 10;

/// The trace routes (their own body limit: batches are larger than messages).
pub fn routes() -> Routes<Shared> {
    Routes::new()
        .route("/v1/trace", post(ingest).layer(DefaultBodyLimit::max(BODY_MAX)))
        .route("/v1/agents/{agent}/trace", get(read))
        .route("/v1/agents/{agent}/usage", get(agent_usage))
        .route("/v1/usage", get(usage))
}

/// `{"events": [...]}`, a bare array, or one envelope: the batch's events, not yet read as envelopes
/// (one bad event is refused alone).
pub(super) fn batch(body: &[u8]) -> Result<Vec<Value>, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("invalid_json", format!("the body is not JSON: {e}")))?;
    let list = match v {
        Value::Object(mut m) if m.contains_key("events") => match m.remove("events") {
            Some(Value::Array(a)) => a,
            _ => return Err(ApiError::bad("invalid_field", "`events` must be an array of envelopes")),
        },
        Value::Array(a) => a,
        one @ Value::Object(_) => vec![one],
        _ => return Err(ApiError::bad("invalid_body", "the body is {\"events\": [envelope, …]} or one envelope")),
    };
    if list.len() > BATCH_MAX {
        return Err(ApiError::bad(
            "batch_too_large",
            format!("{} events; a batch holds at most {BATCH_MAX}", list.len()),
        ));
    }
    Ok(list)
}

/// One event of a batch that is not kept, and why (`POST /v1/trace` answers with them).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Refused {
    index: usize,
    pub(super) code: &'static str,
    pub(super) message: String,
}

impl Refused {
    fn json(&self) -> Value {
        json!({"index": self.index, "code": self.code, "message": self.message})
    }
    /// Whether it was refused for who sent it (403) rather than for what it is (400).
    fn by_principal(&self) -> bool {
        matches!(self.code, "forbidden" | "not_its_source")
    }
}

/// Event `i` of a batch, read and checked: its envelope and time, or why it is refused.
pub(super) fn checked(i: usize, v: Value, who: &Principal, now_ms: i64) -> Result<(Envelope, i64), Refused> {
    let refused = |code, message: String| Refused { index: i, code, message: format!("events[{i}]: {message}") };
    let size = serde_json::to_vec(&v).map(|b| b.len()).unwrap_or(usize::MAX);
    if size > EVENT_MAX {
        return Err(refused("event_too_large", format!("{size} bytes; an event holds at most {EVENT_MAX}")));
    }
    let e = serde_json::from_value::<Envelope>(v)
        .map_err(|e| refused("invalid_event", format!("{e} (envelope v1: see docs/trace.md)")))?;
    let ms = e.check().map_err(|bad| Refused {
        index: i,
        code: "invalid_event",
        message: format!("events[{i}].{}: {}", bad.field, bad.why),
    })?;
    if let Some(why) = super::provenance::too_far_ahead(ms, now_ms) {
        return Err(Refused { index: i, code: "invalid_event", message: format!("events[{i}].created_at: {why}") });
    }
    if let Some(why) = super::provenance::refusal(who, &e) {
        return Err(refused("not_its_source", why));
    }
    Ok((e, ms))
}

/// Keeps every event of the batch it may (`checked`, then where the token may post), refuses the
/// rest one by one: `200 {"accepted", "duplicates", "refused": [{index, code, message}]}`; when none
/// is kept, the first refusal is the error (403 when it is the token's, 400 otherwise) and
/// `refused` lists them all.
pub async fn ingest(
    State(app): State<Shared>,
    Caller(who): Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError::of_body(r, BODY_MAX))?;
    let now = crate::clock::now_ms();
    let mut refused = Vec::new();
    let mut events = Vec::new();
    for (i, v) in batch(&body)?.into_iter().enumerate() {
        match checked(i, v, &who, now) {
            Ok(e) => events.push((i, e)),
            Err(r) => refused.push(r),
        }
    }
    let mut reloaded = false;
    let mut items = Vec::with_capacity(events.len());
    for (i, (e, ms)) in events {
        let mut dir = app.trace_dir(&who, e.agent_name.as_deref(), reloaded);
        if dir.is_none() && !reloaded {
            // An agent (or a gateway's agent) an apply added a moment ago.
            app.reload_soon().await;
            reloaded = true;
            dir = app.trace_dir(&who, e.agent_name.as_deref(), reloaded);
        }
        match dir {
            Some(dir) => items.push(Item { dir, ms, event: e }),
            None => refused.push(Refused {
                index: i,
                code: "forbidden",
                message: format!(
                    "events[{i}]: this token may not post events of agent {:?}",
                    e.agent_name.as_deref().unwrap_or("(none)")
                ),
            }),
        }
    }
    refused.sort_by_key(|r| r.index);
    let listed: Vec<Value> = refused.iter().map(Refused::json).collect();
    if items.is_empty() {
        if let Some(first) = refused.first() {
            let status =
                if refused.iter().any(Refused::by_principal) { StatusCode::FORBIDDEN } else { StatusCode::BAD_REQUEST };
            let body = json!({"error": {"code": first.code, "message": first.message}, "accepted": 0, "duplicates": 0, "refused": listed});
            return Ok((status, Json(body)).into_response());
        }
    }
    let n = items.len();
    let offered: Vec<(i64, Envelope)> = items.iter().map(|it| (it.ms, it.event.clone())).collect();
    let written = app.traces.write(items).await.map_err(|e| {
        tracing::error!("{e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the trace store could not keep this batch; nothing was acknowledged: send it again",
        )
    })?;
    let dup = written.iter().filter(|w| **w == Written::Duplicate).count();
    let fresh: Vec<(i64, Envelope)> =
        offered.into_iter().zip(&written).filter(|(_, w)| **w != Written::Duplicate).map(|(o, _)| o).collect();
    let a = app.clone();
    let _ = tokio::task::spawn_blocking(move || a.late.offer_all(&fresh)).await;
    Ok(Json(json!({"accepted": n, "duplicates": dup, "refused": listed})).into_response())
}

/// `since`/`until`: an RFC 3339 time, or a duration back from now (`90s`, `15m`, `1h`, `2d`).
pub fn when(name: &'static str, s: Option<&String>, now_ms: i64) -> Result<Option<i64>, ApiError> {
    let Some(s) = s else { return Ok(None) };
    match crate::trace::query::instant_or_ago(s, now_ms) {
        Some(ms) => Ok(Some(ms)),
        None => Err(ApiError::bad(
            "invalid_time",
            format!("`{name}` is an RFC 3339 time (2026-11-29T14:00:00Z) or a duration ago (90s, 15m, 1h, 2d)"),
        )),
    }
}

fn trace_query(q: &HashMap<String, String>) -> Result<TraceQuery, ApiError> {
    let now = crate::clock::now_ms();
    let kinds: Vec<String> =
        q.get("kind").map(|k| k.split(',').map(str::trim).map(str::to_string).collect()).unwrap_or_default();
    if let Some(k) = kinds.iter().find(|k| !crate::trace::envelope::KINDS.contains(&k.as_str())) {
        return Err(ApiError::bad(
            "invalid_kind",
            format!("`kind` {k:?} is not one of {}", crate::trace::envelope::KINDS.join(", ")),
        ));
    }
    let limit = match q.get("limit") {
        None => LIMIT_DEFAULT,
        Some(l) => l
            .parse()
            .ok()
            .filter(|n| (1..=LIMIT_MAX).contains(n))
            .ok_or_else(|| ApiError::bad("invalid_limit", format!("`limit` is 1–{LIMIT_MAX}")))?,
    };
    let order = match q.get("order").map(String::as_str) {
        None | Some("desc") => Order::Desc,
        Some("asc") => Order::Asc,
        Some(_) => return Err(ApiError::bad("invalid_order", "`order` is asc or desc")),
    };
    let after = match q.get("cursor") {
        None => None,
        Some(c) => Some(
            parse_cursor(c)
                .ok_or_else(|| ApiError::bad("invalid_cursor", "`cursor` is a next_cursor from an earlier page"))?,
        ),
    };
    Ok(TraceQuery {
        kinds,
        since: when("since", q.get("since"), now)?,
        until: when("until", q.get("until"), now)?,
        thread: q.get("thread").cloned(),
        trace_id: q.get("trace_id").cloned(),
        channel: q.get("channel").cloned(),
        limit,
        order,
        after,
    })
}

pub async fn read(
    State(app): State<Shared>,
    Caller(who): Caller,
    Path(agent): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let agent = app.agent(&who, &agent).await?.to_string();
    let tq = trace_query(&q)?;
    let dir = app.layout().agent_trace(&agent);
    let limit = tq.limit;
    let page = tokio::task::spawn_blocking(move || store::read(&dir, &tq))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let next = (page.len() == limit).then(|| page.last().map(|(ms, e)| cursor_of(*ms, &e.id))).flatten();
    let events: Vec<Envelope> = page.into_iter().map(|(_, e)| e).collect();
    Ok(Json(json!({"agent": agent, "events": events, "next_cursor": next})))
}

/// Usage rows of the agents `who` may see, since/until.
async fn usage_of(app: &Shared, agents: Vec<String>, q: &HashMap<String, String>) -> Result<Vec<Value>, ApiError> {
    let now = crate::clock::now_ms();
    let since = when("since", q.get("since"), now)?;
    let until = when("until", q.get("until"), now)?;
    let layout = app.layout();
    let dirs: Vec<(String, PathBuf)> = agents.into_iter().map(|a| (a.clone(), layout.agent_trace(&a))).collect();
    let rows = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, store::TraceError> {
        let mut out = Vec::new();
        for (agent, dir) in dirs {
            for r in store::usage(&dir, since, until)? {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["agent"] = json!(agent);
                out.push(v);
            }
        }
        Ok(out)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(rows)
}

/// `GET /v1/usage?since=&until=`: calls, tokens and cost per agent, model and UTC day (admin: every
/// agent; an agent: itself).
pub async fn usage(
    State(app): State<Shared>,
    Caller(who): Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let agents: Vec<String> =
        app.router.view.read().expect("view").agents.keys().filter(|a| who.may_touch(a)).cloned().collect();
    if agents.is_empty() && !matches!(who, Principal::Admin | Principal::Agent(_)) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this token may only post trace events"));
    }
    let mut budgets = standings(&app).await?;
    budgets.retain(|a, _| agents.contains(a));
    Ok(Json(json!({"rows": usage_of(&app, agents, &q).await?, "budgets": budgets})))
}

/// Each budgeted agent's spend against its budget now, as the proxy's auth module judges it.
async fn standings(app: &Shared) -> Result<std::collections::BTreeMap<String, spend::Standing>, ApiError> {
    let layout = app.layout();
    let now = crate::clock::now_ms().div_euclid(1000);
    tokio::task::spawn_blocking(move || spend::standings(&layout.keys_file(), &layout.spend_ledger(), now))
        .await
        .map_err(ApiError::internal)
}

pub async fn agent_usage(
    State(app): State<Shared>,
    Caller(who): Caller,
    Path(agent): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let agent = app.agent(&who, &agent).await?.to_string();
    let budget = standings(&app).await?.remove(&agent);
    Ok(Json(json!({"agent": agent.clone(), "rows": usage_of(&app, vec![agent], &q).await?, "budget": budget})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_an_object_with_events_an_array_or_one_envelope() {
        let one = r#"{"v":1,"id":"a","trace_id":null,"created_at":"2026-11-29T14:00:00Z","agent_name":"alice","kind":"lifecycle"}"#;
        assert_eq!(batch(format!(r#"{{"events":[{one}]}}"#).as_bytes()).unwrap().len(), 1);
        assert_eq!(batch(format!("[{one},{one}]").as_bytes()).unwrap().len(), 2);
        assert_eq!(batch(one.as_bytes()).unwrap().len(), 1);
        assert_eq!(batch(b"7").unwrap_err().code, "invalid_body");
        assert_eq!(batch(br#"{"events": 3}"#).unwrap_err().code, "invalid_field");
    }

    #[test]
    fn each_event_is_refused_alone_and_says_why() {
        let now = crate::clock::parse_rfc3339_ms("2026-12-07T12:00:00Z").unwrap();
        let ev = |at: &str, kind: &str, source: &str| json!({"v": 1, "id": "a", "trace_id": null, "created_at": at, "agent_name": "bob", "kind": kind, "backend_name": source});
        let gw = Principal::Gateway("g".into());
        assert!(checked(0, ev("2026-12-07T12:01:00Z", "lifecycle", "openclaw"), &gw, now).is_ok());
        let r = checked(3, json!({"v": 1}), &gw, now).unwrap_err();
        assert_eq!((r.index, r.code), (3, "invalid_event"));
        assert!(r.message.starts_with("events[3]: missing field"), "{}", r.message);
        let r = checked(1, ev("2099-01-01T00:00:00Z", "lifecycle", "openclaw"), &gw, now).unwrap_err();
        assert_eq!(r.code, "invalid_event");
        assert!(r.message.starts_with("events[1].created_at:") && r.message.contains("ahead"), "{}", r.message);
        let r = checked(2, ev("2026-12-07T12:00:00Z", "llm_call", "litellm"), &gw, now).unwrap_err();
        assert_eq!(r.code, "not_its_source", "{}", r.message);
        assert!(r.by_principal());
        let mut big = ev("2026-12-07T12:00:00Z", "tool_result", "openclaw");
        big["payload"] = json!({"result": "x".repeat(EVENT_MAX)});
        assert_eq!(checked(4, big, &gw, now).unwrap_err().code, "event_too_large");
    }

    #[test]
    fn times_are_instants_or_durations_ago() {
        let now = 10_000_000;
        assert_eq!(when("since", Some(&"1h".to_string()), now).unwrap(), Some(now - 3_600_000));
        assert_eq!(when("since", Some(&"1970-01-01T00:00:01Z".to_string()), now).unwrap(), Some(1000));
        assert_eq!(when("since", Some(&"soon".to_string()), now).unwrap_err().code, "invalid_time");
        assert_eq!(when("since", None, now).unwrap(), None);
    }
}
