//! The local approvals endpoint: where a human answers the calls the gateway holds.
//!
//! - `GET /approvals` — the held calls, oldest first (the engine's `PendingApproval`s).
//! - `POST /approvals/{approval_id}` with `{"approver": "user:…", "grant": true, "lease": "30min"}`
//!   — answers one; the answer is the engine's `ApprovalOutcome`. The engine checks the
//!   approver: a human principal outside the call's chain of command (and in the policy's
//!   approver group when groups are configured).
//!
//! When a token is configured, requests must carry `Authorization: Bearer <token>`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use truststack_engine::{ApprovalAnswer, ApprovalError, Engine};

#[derive(Clone)]
struct Approvals {
    engine: Arc<Engine>,
    token: Option<Arc<str>>,
}

/// The body of `POST /approvals/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    pub approver: String,
    pub grant: bool,
    #[serde(default)]
    pub lease: Option<String>,
}

/// The approvals routes over `engine`.
pub fn router(engine: Arc<Engine>, token: Option<String>) -> Router {
    Router::new()
        .route("/approvals", get(list))
        .route("/approvals/{id}", post(answer))
        .with_state(Approvals {
            engine,
            token: token.map(Arc::from),
        })
}

#[allow(clippy::result_large_err)] // an axum response is the natural error here
fn authorized(state: &Approvals, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(&**token) {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer")],
            Json(json!({"error": "the approvals endpoint needs `Authorization: Bearer <token>`"})),
        )
            .into_response())
    }
}

async fn list(State(state): State<Approvals>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    Json(state.engine.pending()).into_response()
}

async fn answer(
    State(state): State<Approvals>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let body: AnswerBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("expected {{\"approver\": \"user:…\", \"grant\": true|false, \"lease\": \"30min\"?}}: {e}")})),
            )
                .into_response()
        }
    };
    let ans = ApprovalAnswer {
        approval_id: Some(id),
        call_id: None,
        approver: body.approver,
        groups: Vec::new(),
        grant: body.grant,
        lease: body.lease,
        time: None,
    };
    let engine = Arc::clone(&state.engine);
    let result = tokio::task::spawn_blocking(move || engine.answer(&ans)).await;
    match result {
        Ok(Ok(outcome)) => Json(outcome).into_response(),
        Ok(Err(e)) => {
            let status = match e {
                ApprovalError::Unknown(_) => StatusCode::NOT_FOUND,
                ApprovalError::NotHuman(_)
                | ApprovalError::InChain { .. }
                | ApprovalError::NotInGroup { .. } => StatusCode::FORBIDDEN,
                ApprovalError::Unnamed | ApprovalError::Invalid(_) => StatusCode::BAD_REQUEST,
            };
            (status, Json(json!({"error": e.to_string()}))).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}
