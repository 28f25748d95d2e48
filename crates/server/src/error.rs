//! API errors: a status and a precise message, as JSON.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, m)
    }
}

static ERRORS: AtomicU64 = AtomicU64::new(0);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let id = format!(
            "e-{:x}-{}",
            truststack_engine::engine::system_now(),
            ERRORS.fetch_add(1, Ordering::Relaxed)
        );
        tracing::debug!(status = %self.status, error = %self.message, "request failed");
        (
            self.status,
            axum::Json(json!({"error": self.message, "decision_id": id})),
        )
            .into_response()
    }
}

/// Parses a JSON body with a precise error (line, column, what was expected).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid request body at line {} column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}
