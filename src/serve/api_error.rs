//! The API's errors: a status and a JSON body `{"error": {"code", "message"}}` naming the problem.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a token is needed: `Authorization: Bearer <token>` (the admin token is in <data dir>/serve/token)",
        )
    }
    pub fn forbidden(agent: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", format!("this token may not touch agent {agent:?}"))
    }
    pub fn unknown_agent(agent: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "unknown_agent", format!("no agent {agent:?} in this fleet"))
    }
    /// A body that could not be read: over `max` bytes (413), not sent in time (408), or broken.
    pub fn of_body(r: axum::extract::rejection::BytesRejection, max: usize) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the body is over {max} bytes"));
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&r);
        while let Some(e) = cause {
            if e.is::<tower_http::timeout::TimeoutError>() {
                return Self::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!("the body did not arrive within {} s", super::listen::BODY_TIMEOUT.as_secs()),
                );
            }
            cause = e.source();
        }
        Self::new(r.status(), "invalid_body", r.body_text())
    }
    pub fn internal(what: impl std::fmt::Display) -> Self {
        tracing::error!("{what}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the daemon could not store this; nothing was kept")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut r = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        r
    }
}
