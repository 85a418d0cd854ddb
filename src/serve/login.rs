//! Signing in and out of the status page, and the daemon proving itself to the CLI (issue 24).
//!
//! - `GET /login`: a form for the admin token; opened as `/login#code=…` (the link `fleet status
//!   --login` prints) it signs in with the one-time code by itself. The fragment never leaves the
//!   browser: neither the code nor the token is in any request line or log.
//! - `POST /login` `{"token"}` or `{"code"}` (JSON, from the page itself): a new random session,
//!   its cookie set.
//! - `POST /logout`: ends the session (cookie-authenticated: from the page itself, JSON).
//! - `POST /v1/login-codes` (admin bearer token): a one-time code, good for two minutes.
//! - `GET /v1/prove?nonce=…` (no token): the daemon's HMAC of the nonce under the admin token,
//!   bound to the fleet and the port (`auth::proof`); the CLI checks it before it sends the token.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router as Routes};
use serde_json::{json, Value};

use super::api_error::ApiError;
use super::auth::{self, Principal};
use super::http::Shared;
use super::sessions;

pub fn routes() -> Routes<Shared> {
    Routes::new()
        .route("/login", get(form).post(sign_in))
        .route("/logout", post(sign_out))
        .route("/v1/login-codes", post(login_code))
        .route("/v1/prove", get(prove))
}

async fn form() -> Response {
    Html(super::page::sign_in("Sign in to see this fleet.")).into_response()
}

fn with_cookie(mut r: Response, cookie: String) -> Response {
    if let Ok(v) = cookie.parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /login`: the admin token or a one-time code, for a session.
async fn sign_in(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    // A sign-in from another page would sign the browser into this daemon behind its user's back.
    if let Some(why) = super::session::cross_site_write(&Method::POST, &headers) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "cross_site", why));
    }
    let m = super::request::json_object(&body)?;
    if let Some(k) = m.keys().find(|k| !matches!(k.as_str(), "token" | "code")) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_field",
            format!("unknown field {k:?}: send token or code"),
        ));
    }
    let now = crate::clock::now_ms();
    let ok = match (m.get("token"), m.get("code")) {
        (Some(Value::String(t)), None) => app.tokens.read().expect("tokens").is_admin(t),
        (None, Some(Value::String(c))) => app.sessions.lock().expect("sessions").redeem(c, now),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_field",
                "send {\"token\": <admin token>} or {\"code\": <one-time code>}",
            ))
        }
    };
    if !ok {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "that is not this fleet's admin token, or the code was used or expired (`fleet status --login` prints a new one)",
        ));
    }
    let value = app.sessions.lock().expect("sessions").open(now);
    Ok(with_cookie(Json(json!({"ok": true})).into_response(), sessions::cookie(&value, app.secure_cookie)))
}

/// `POST /logout`: ends this browser's session.
async fn sign_out(State(app): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let cookie = auth::cookie_of(headers.get(header::COOKIE).and_then(|v| v.to_str().ok()));
    let Some(value) = cookie.filter(|c| app.sessions.lock().expect("sessions").is_live(c, crate::clock::now_ms()))
    else {
        return Err(ApiError::unauthorized());
    };
    if let Some(why) = super::session::cross_site_write(&Method::POST, &headers) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "cross_site", why));
    }
    app.sessions.lock().expect("sessions").close(value, crate::clock::now_ms());
    Ok(with_cookie(Json(json!({"ok": true})).into_response(), sessions::cleared_cookie(app.secure_cookie)))
}

/// `POST /v1/login-codes`: a one-time sign-in code, for the admin's bearer token only.
async fn login_code(State(app): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    match app.principal_via(&headers).await? {
        (Principal::Admin, false) => {}
        _ => {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "only the admin token may mint login codes"))
        }
    }
    let code = app.sessions.lock().expect("sessions").mint_code(crate::clock::now_ms());
    Ok(Json(json!({"code": code, "path": format!("/login#code={code}"), "expires_in_s": sessions::CODE_TTL_MS / 1000}))
        .into_response())
}

/// `GET /v1/prove?nonce=…`.
async fn prove(
    State(app): State<Shared>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let nonce = q.get("nonce").map(String::as_str).unwrap_or("");
    if !(32..=128).contains(&nonce.len()) || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_nonce", "nonce: 32 to 128 hex digits"));
    }
    let Some(token) = tokio::fs::read_to_string(&app.token_file).await.ok().map(|t| t.trim().to_string()) else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the daemon has no admin token yet"));
    };
    Ok(Json(json!({"fleet": app.fleet, "proof": auth::proof(&token, &app.fleet, app.port, nonce)})).into_response())
}
