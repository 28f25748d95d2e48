//! The local approvals endpoint: where a human answers the calls the gateway holds.
//!
//! - `GET /approvals` — the held calls, oldest first (the engine's `PendingApproval`s).
//! - `POST /approvals/{approval_id}` with `{"approver": "user:…", "grant": true, "lease": "30min"}`
//!   — answers one; the answer is the engine's `ApprovalOutcome`. The engine checks the
//!   approver: a human principal outside the call's chain of command (and in the policy's
//!   approver group when groups are configured).
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
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use truststack_engine::identity::Issuer;
use truststack_engine::{ApprovalAnswer, ApprovalError, Engine};
use truststack_server::auth::bearer;

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

/// The body of `POST /approvals/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    /// Who answers; with an issuer configured it comes from the credential (and, when given
    /// here, must match it).
    #[serde(default)]
    pub approver: Option<String>,
    pub grant: bool,
    #[serde(default)]
    pub lease: Option<String>,
}

/// The approvals routes over `engine`.
pub fn router(engine: Arc<Engine>, token: Option<String>, issuer: Option<Arc<Issuer>>) -> Router {
    Router::new()
        .route("/approvals", get(list))
        .route("/approvals/{id}", post(answer))
        .with_state(Approvals {
            engine,
            token: token.map(Arc::from),
            issuer,
        })
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
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
            Json(json!({"error": "approvers must send their credential: `Authorization: Bearer <token>`"})),
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
                "name the approver: {\"approver\": \"user:…\", \"grant\": true|false}".into(),
            )
        }
    };
    let ans = ApprovalAnswer {
        approval_id: Some(id),
        call_id: None,
        approver,
        groups,
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
                ApprovalError::Unrecorded(_) => StatusCode::SERVICE_UNAVAILABLE,
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
