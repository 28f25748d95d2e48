//! The approvals API of a gateway with an embedded engine: the same paths and JSON as
//! `truststack serve`'s (`truststack approvals --server http://<approvals listen>` works
//! against either). A gateway that asks a decision point serves none: its held calls are the
//! server's.
//!
//! - `GET /v1/approvals` — `{"pending": [...]}`, the held calls, oldest first.
//! - `GET /v1/approvals/{id}` — one held call.
//! - `POST /v1/approvals/{id}/grant` with `{"lease": "30min"?, "comment": "…"?}` and
//!   `POST /v1/approvals/{id}/refuse` — answer one; the answer is the engine's
//!   `ApprovalOutcome`. The engine checks the approver: a human principal outside the call's
//!   chain of command (and in the policy's approver group when groups are configured).
//! - `GET /v1/approvals/{id}/wait?timeout=30s` — long-poll for the answer.
//!
//! With an issuer configured (`[identity] issuer`), every request must carry a human's
//! credential (`Authorization: Bearer <token>` from `truststack identity issue --user … --roles
//! approver`): the approver is the credential's subject, with its groups, never a name in the
//! body. Without one, the approver is named in the body, and when `[approvals] token` is set
//! requests must carry that shared token (a development set-up).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use truststack_engine::identity::Issuer;
use truststack_engine::{ApprovalAnswer, Engine};
use truststack_server::auth::bearer;
use truststack_server::error::{reply, ApiError};

/// The role a human credential needs to answer held calls.
pub const APPROVER_ROLE: &str = "approver";

#[derive(Clone)]
struct Approvals {
    engine: Arc<Engine>,
    token: Option<Arc<str>>,
    issuer: Option<Arc<Issuer>>,
}

/// A verified approver.
struct Approver {
    principal: String,
    groups: Vec<String>,
}

/// The body of `POST /v1/approvals/{id}/grant|refuse` (the server's shape).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    /// Who answers; with an issuer configured it comes from the credential (and, when given
    /// here, must match it).
    #[serde(default)]
    pub approver: Option<String>,
    #[serde(default)]
    pub lease: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
}

/// The approvals routes over `engine`.
pub fn router(engine: Arc<Engine>, token: Option<String>, issuer: Option<Arc<Issuer>>) -> Router {
    Router::new()
        .route("/v1/approvals", get(list))
        .route("/v1/approvals/{id}", get(show))
        .route("/v1/approvals/{id}/grant", post(grant))
        .route("/v1/approvals/{id}/refuse", post(refuse_call))
        .route("/v1/approvals/{id}/wait", get(wait))
        .with_state(Approvals {
            engine,
            token: token.map(Arc::from),
            issuer,
        })
}

/// An error in the server's shape (`{"error": …, "decision_id": …}`).
fn refuse(status: StatusCode, message: String) -> Response {
    truststack_server::error::ApiError::new(status, message).into_response()
}

/// The approver a request's credential establishes (`None` without an issuer).
#[allow(clippy::result_large_err)] // an axum response is the natural error here
fn approver(state: &Approvals, headers: &HeaderMap) -> Result<Option<Approver>, Response> {
    let Some(issuer) = &state.issuer else {
        return Ok(None);
    };
    let Some(token) = bearer(headers) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer")],
            refuse(
                StatusCode::UNAUTHORIZED,
                "approvers must send their credential: `Authorization: Bearer <token>`".into(),
            ),
        )
            .into_response());
    };
    if let Err(e) = issuer.refresh_revocations() {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read revocations: {e}"),
        ));
    }
    let verified = issuer.verify(token).map_err(|e| {
        refuse(
            StatusCode::UNAUTHORIZED,
            format!("credential rejected: {e}"),
        )
    })?;
    if verified.subject.as_user().is_none() {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!(
                "{} is an agent's credential; a human must answer",
                verified.subject
            ),
        ));
    }
    if !verified.has_role(APPROVER_ROLE) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!(
                "{} does not hold the `{APPROVER_ROLE}` role",
                verified.subject
            ),
        ));
    }
    Ok(Some(Approver {
        principal: verified.subject.to_string(),
        groups: verified.groups.clone(),
    }))
}

#[allow(clippy::result_large_err)] // an axum response is the natural error here
fn authorized(state: &Approvals, headers: &HeaderMap) -> Result<(), Response> {
    if state.issuer.is_some() {
        return approver(state, headers).map(|_| ());
    }
    let Some(token) = &state.token else {
        return Ok(());
    };
    if bearer(headers) == Some(&**token) {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer")],
            refuse(
                StatusCode::UNAUTHORIZED,
                "the approvals API needs `Authorization: Bearer <token>`".into(),
            ),
        )
            .into_response())
    }
}

async fn list(State(state): State<Approvals>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    reply(json!({"pending": state.engine.pending()}))
}

async fn show(
    State(state): State<Approvals>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    match state
        .engine
        .pending()
        .into_iter()
        .find(|p| p.approval_id == id)
    {
        Some(p) => reply(json!(p)),
        None => refuse(StatusCode::NOT_FOUND, format!("no pending approval {id}")),
    }
}

async fn grant(
    State(state): State<Approvals>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    answer(state, id, headers, body, true).await
}

async fn refuse_call(
    State(state): State<Approvals>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    answer(state, id, headers, body, false).await
}

/// Long-poll: the outcome once the held call is answered, or `pending` after `timeout`
/// (default 30s, at most 60s).
async fn wait(
    State(state): State<Approvals>,
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let timeout = match q
        .get("timeout")
        .map(|t| truststack_policy::duration::parse_duration(t))
    {
        Some(Ok(ms)) => Duration::from_millis(ms.unsigned_abs()),
        Some(Err(e)) => return refuse(StatusCode::BAD_REQUEST, e),
        None => Duration::from_secs(30),
    }
    .min(Duration::from_secs(60));
    let known = state.engine.is_pending(&id);
    let (engine, waited) = (Arc::clone(&state.engine), id.clone());
    match tokio::task::spawn_blocking(move || engine.wait_outcome(&waited, timeout)).await {
        Ok(Some(o)) => reply(json!({"status": "answered", "outcome": o})),
        Ok(None) if known => reply(json!({"status": "pending", "approval_id": id})),
        Ok(None) => refuse(
            StatusCode::NOT_FOUND,
            format!("no pending or recently answered approval {id}"),
        ),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn answer(
    state: Approvals,
    id: String,
    headers: HeaderMap,
    body: axum::body::Bytes,
    grant: bool,
) -> Response {
    // With an issuer, `approver` authenticates; without, the shared token (if any) does.
    let verified = match approver(&state, &headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if verified.is_none() {
        if let Err(r) = authorized(&state, &headers) {
            return r;
        }
    }
    let body: AnswerBody = if body.is_empty() {
        AnswerBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("invalid request body at line {} column {}: expected {{\"lease\": \"30min\"?, \"comment\": \"…\"?, \"approver\": \"user:…\"?}}: {e}", e.line(), e.column()),
                )
            }
        }
    };
    let (approver, groups) = match (verified, body.approver) {
        (Some(v), Some(named)) if named != v.principal => {
            return refuse(
                StatusCode::FORBIDDEN,
                format!("the credential is {}'s, not {named}'s", v.principal),
            )
        }
        (Some(v), _) => (v.principal, v.groups),
        (None, Some(named)) => (named, Vec::new()),
        (None, None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "`approver` is required when approvers do not present credentials".into(),
            )
        }
    };
    if let Some(comment) = &body.comment {
        tracing::info!(approval = %id, %approver, %comment, "approval comment");
    }
    let ans = ApprovalAnswer {
        approval_id: Some(id),
        call_id: None,
        approver,
        groups,
        grant,
        lease: body.lease,
        time: None,
    };
    let engine = Arc::clone(&state.engine);
    let result = tokio::task::spawn_blocking(move || engine.answer(&ans)).await;
    match result {
        Ok(Ok(outcome)) => reply(json!(outcome)),
        Ok(Err(e)) => {
            let e = ApiError::from(e);
            refuse(e.status, e.message)
        }
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
