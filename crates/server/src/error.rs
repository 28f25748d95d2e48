//! API errors: a status and a precise message, as JSON.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use truststack_engine::engine::ApprovalError;
use truststack_engine::ledger::depth::{check_depth, MAX_INPUT_DEPTH};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

/// How an approval that was not applied answers over HTTP, wherever the approvals API is served
/// (the server, an embedded gateway).
impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> Self {
        let status = match e {
            ApprovalError::Unknown(_) => StatusCode::NOT_FOUND,
            ApprovalError::Unnamed | ApprovalError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApprovalError::Unrecorded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApprovalError::NotHuman(_)
            | ApprovalError::InChain { .. }
            | ApprovalError::NotInGroup { .. }
            | ApprovalError::NotCaller { .. } => StatusCode::FORBIDDEN,
        };
        ApiError::new(status, e.to_string())
    }
}

/// An input the caller got wrong is its to fix (400); one the ledger could not keep is ours (503).
impl From<truststack_engine::InputError> for ApiError {
    fn from(e: truststack_engine::InputError) -> Self {
        let status = match e {
            truststack_engine::InputError::Invalid(_) => StatusCode::BAD_REQUEST,
            truststack_engine::InputError::Ledger(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

/// As for an input: a bad grant is the caller's (400), an unrecorded one ours (503).
impl From<truststack_engine::GrantError> for ApiError {
    fn from(e: truststack_engine::GrantError) -> Self {
        let status = match e {
            truststack_engine::GrantError::Invalid(_) => StatusCode::BAD_REQUEST,
            truststack_engine::GrantError::Ledger(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
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
static RESPONSES: AtomicU64 = AtomicU64::new(0);

/// `<prefix>-<time, hex>-<n>`: unique in this process.
fn fresh_id(prefix: &str, counter: &AtomicU64) -> String {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}-{n}", truststack_engine::engine::system_now())
}

/// A fresh id for an answer that is not a decision (`r-<time>-<n>`).
pub fn response_id() -> String {
    fresh_id("r", &RESPONSES)
}

/// A JSON answer of the API: an object gets a `decision_id` (a fresh one unless it has one),
/// as every answer of `truststack serve` and of a gateway's approvals API does.
pub fn reply(mut body: serde_json::Value) -> Response {
    if let serde_json::Value::Object(map) = &mut body {
        map.entry("decision_id")
            .or_insert_with(|| serde_json::Value::String(response_id()));
    }
    axum::Json(body).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let id = fresh_id("e", &ERRORS);
        tracing::debug!(status = %self.status, error = %truststack_engine::log::clip(&self.message), "request failed");
        (
            self.status,
            axum::Json(json!({"error": self.message, "decision_id": id})),
        )
            .into_response()
    }
}

/// Parses a JSON body with a precise error (line, column, what was expected). A body nested
/// deeper than [`MAX_INPUT_DEPTH`] is refused before it is parsed: what it carries would end up
/// in a ledger record that readers could not read back.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    check_depth(body, MAX_INPUT_DEPTH)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid request body at line {} column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

/// Errors made outside the handlers come from axum and tower as plain text (an oversized body,
/// a query string that does not parse, a timeout, an unknown route or method). Every error
/// answer of the API is JSON with a `decision_id`, so they are rewritten here, keeping their
/// status and their message.
pub async fn json_errors(response: Response, max_body_bytes: usize) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("request body larger than {max_body_bytes} bytes (max_body_bytes)")
        }
        StatusCode::REQUEST_TIMEOUT => "the request took longer than request_timeout".into(),
        _ if text.is_empty() => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
        _ => text,
    };
    let mut out = ApiError::new(status, message).into_response();
    if let Some(allow) = parts.headers.get(axum::http::header::ALLOW) {
        out.headers_mut()
            .insert(axum::http::header::ALLOW, allow.clone());
    }
    out
}
