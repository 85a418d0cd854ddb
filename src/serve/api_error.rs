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
