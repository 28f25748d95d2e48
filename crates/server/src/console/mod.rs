//! The approvals console at `/console/`: server-rendered HTML (maud), one embedded script and
//! one stylesheet, no build step. Approvers sign in with the same EdDSA credentials as the API;
//! answers go through the API's own approval path ([`crate::api::answer_as`]).
//!
//! Security: every page carries a strict Content-Security-Policy (scripts only from
//! `/console/assets/`, nothing inline), every state change needs the session's CSRF token, the
//! session cookie is HttpOnly and `SameSite=Strict` (and `Secure` when `public_url` is https),
//! and everything shown from a call is data: maud escapes it, and the script only ever sets
//! `textContent`.

pub mod assets;
pub mod ledger;
pub mod pages;
pub mod session;

use crate::api::{answer_as, approval_view};
use crate::auth::Human;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use session::{cookie, same_secret, set_cookie, Session, SESSION_COOKIE, SIGN_IN_COOKIE};
use std::sync::Arc;
use truststack_engine::event::Principals;
use truststack_engine::PendingApproval;
use truststack_policy::duration::Duration;

type Shared = Arc<AppState>;

/// The `[console]` section of `truststack.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console at `/console/`.
    pub enabled: bool,
    /// The server's address as approvers' browsers reach it (e.g. behind a TLS proxy:
    /// `https://truststack.example.com`): for links in notifications, and cookies are marked
    /// `Secure` when it is https.
    pub public_url: Option<String>,
    /// How long a sign-in lasts (the credential's own expiry and revocation end it sooner).
    pub session_ttl: Duration,
    /// A directory of safety cases written by `truststack prove` (relative to the config file),
    /// shown on the policies page.
    pub safety_cases: Option<std::path::PathBuf>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            public_url: None,
            session_ttl: Duration::from_ms(8 * 3600 * 1000),
            safety_cases: None,
        }
    }
}

/// The policy every console answer carries: no inline script or style, nothing from elsewhere,
/// no framing, forms only to the console itself.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router(state: Shared) -> Router {
    if !state.config.console.enabled {
        return Router::new();
    }
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(home))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/approvals", get(queue))
        .route("/console/approvals/{id}", get(call_page))
        .route("/console/approvals/{id}/grant", post(grant))
        .route("/console/approvals/{id}/refuse", post(refuse))
        .route("/console/events", get(events))
        .route("/console/ledger", get(ledger::list))
        .route("/console/ledger/{index}", get(ledger::entry))
        .route("/console/ledger/{index}/proof.json", get(ledger::proof))
        .route("/console/policies", get(ledger::policies))
        .route("/console/safety-cases/{name}", get(ledger::safety_case))
        .route("/console/assets/{name}", get(asset))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn asset(Path(name): Path<String>) -> Response {
    match assets::get(&name) {
        Some((body, kind)) => (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

fn secure(state: &AppState) -> bool {
    state
        .config
        .console
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
}

/// Who is looking: a live session whose credential still verifies as a human with the
/// approver or admin role.
pub struct Viewer {
    pub session_id: String,
    pub session: Session,
    pub human: Human,
}

impl Viewer {
    pub fn can_answer(&self) -> bool {
        self.human.has_role("approver")
    }
}

fn viewer(state: &AppState, headers: &HeaderMap) -> Option<Viewer> {
    let id = cookie(headers, SESSION_COOKIE)?;
    let session = state.sessions.get(id)?;
    let human = state.identity.as_ref()?.human(&session.token).ok()?;
    if !(human.has_role("approver") || human.has_role("admin")) {
        return None;
    }
    Some(Viewer {
        session_id: id.to_string(),
        session,
        human,
    })
}

fn to_sign_in() -> Response {
    Redirect::to("/console/sign-in").into_response()
}

/// A page with a status.
fn page(status: StatusCode, markup: maud::Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

async fn home(State(state): State<Shared>, headers: HeaderMap) -> Response {
    if viewer(&state, &headers).is_some() {
        Redirect::to("/console/approvals").into_response()
    } else {
        to_sign_in()
    }
}

async fn sign_in_page(State(state): State<Shared>, headers: HeaderMap) -> Response {
    if viewer(&state, &headers).is_some() {
        return Redirect::to("/console/approvals").into_response();
    }
    sign_in_form(&state, StatusCode::OK, None)
}

/// The sign-in form, with a fresh token in the form and in a cookie (double submit): a
/// cross-site page cannot sign a browser in under someone else's credential.
fn sign_in_form(state: &AppState, status: StatusCode, error: Option<&str>) -> Response {
    let token = session::random_token();
    let mut response = page(status, pages::sign_in(&token, error, configured(state)));
    if let Ok(v) = HeaderValue::from_str(&set_cookie(
        SIGN_IN_COOKIE,
        &token,
        std::time::Duration::from_secs(3600),
        secure(state),
    )) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

fn configured(state: &AppState) -> bool {
    state.identity.is_some() && state.config.require_credentials
}

#[derive(Deserialize)]
struct SignInForm {
    credential: String,
    csrf: String,
}

async fn sign_in(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same_secret(expected, &form.csrf) {
        return forbidden_csrf();
    }
    let Some(identity) = state.identity.as_ref().filter(|_| configured(&state)) else {
        return sign_in_form(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("this server does not verify credentials, so the console cannot sign anyone in"),
        );
    };
    let token = form.credential.trim().to_string();
    let human = match identity.human(&token) {
        Ok(h) => h,
        Err(e) => {
            let message = if identity.agent(&token).is_ok() {
                "this is an agent's credential: only approvers and administrators can sign in"
                    .to_string()
            } else {
                format!("credential rejected: {e}")
            };
            return sign_in_form(&state, StatusCode::UNAUTHORIZED, Some(&message));
        }
    };
    if !(human.has_role("approver") || human.has_role("admin")) {
        return sign_in_form(
            &state,
            StatusCode::FORBIDDEN,
            Some(&format!(
                "{} holds neither the `approver` nor the `admin` role",
                human.principal
            )),
        );
    }
    tracing::info!(principal = %human.principal, "console sign-in");
    let id = state.sessions.open(token);
    let mut response = Redirect::to("/console/approvals").into_response();
    let cookies = [
        set_cookie(SESSION_COOKIE, &id, state.sessions.ttl(), secure(&state)),
        set_cookie(
            SIGN_IN_COOKIE,
            "",
            std::time::Duration::ZERO,
            secure(&state),
        ),
    ];
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

fn forbidden_csrf() -> Response {
    page(
        StatusCode::FORBIDDEN,
        pages::message(
            "Refused",
            "This form did not carry the console's token (a cross-site request, or an old page). \
             Nothing was changed. Reload the page and try again.",
        ),
    )
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Why a state change was refused.
enum Refused {
    /// No live session: sign in.
    SignedOut,
    /// The session's CSRF token is missing or wrong, or the request is cross-site.
    Csrf,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::SignedOut => to_sign_in(),
            Refused::Csrf => forbidden_csrf(),
        }
    }
}

/// The viewer of a state change, if its form carries the session's CSRF token. A request a
/// browser labels cross-site is refused whatever it carries.
fn changer(state: &AppState, headers: &HeaderMap, csrf: &str) -> Result<Viewer, Refused> {
    let Some(viewer) = viewer(state, headers) else {
        return Err(Refused::SignedOut);
    };
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site");
    if cross_site || !same_secret(&viewer.session.csrf, csrf) {
        return Err(Refused::Csrf);
    }
    Ok(viewer)
}

async fn sign_out(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let viewer = match changer(&state, &headers, &form.csrf) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    state.sessions.close(&viewer.session_id);
    let mut response = Redirect::to("/console/sign-in").into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(
        SESSION_COOKIE,
        "",
        std::time::Duration::ZERO,
        secure(&state),
    )) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// The queue's filters (empty fields are no filter).
#[derive(Deserialize, Default, Clone)]
pub struct QueueFilter {
    #[serde(default)]
    pub policy: String,
    #[serde(default)]
    pub agent: String,
    #[serde(default)]
    pub root: String,
}

impl QueueFilter {
    fn keeps(&self, p: &PendingApproval) -> bool {
        (self.policy.is_empty() || p.policies.iter().any(|x| x.id == self.policy))
            && (self.agent.is_empty() || p.call.agent == self.agent)
            && (self.root.is_empty() || root_of(p) == self.root)
    }
}

pub fn root_of(p: &PendingApproval) -> &str {
    Principals::of(&p.call.agent, p.call.session.as_deref(), &p.call.chain).root
}

/// Held calls that pass `filter`, oldest first.
fn held(state: &AppState, filter: &QueueFilter) -> Vec<PendingApproval> {
    state
        .engine()
        .pending()
        .into_iter()
        .filter(|p| filter.keeps(p))
        .collect()
}

async fn queue(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(filter): Query<QueueFilter>,
) -> Response {
    let Some(viewer) = viewer(&state, &headers) else {
        return to_sign_in();
    };
    let list = held(&state, &filter);
    page(StatusCode::OK, pages::queue(&viewer, &list, &filter))
}

async fn call_page(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(viewer) = viewer(&state, &headers) else {
        return to_sign_in();
    };
    match held_call(&state, &id).await {
        Ok((pending, view)) => page(StatusCode::OK, pages::call(&viewer, &pending, &view, None)),
        Err(e) => {
            let outcome = recent_outcome(&state, &id).await;
            page(
                e.status,
                pages::gone(&viewer, &id, &e.message, outcome.as_ref()),
            )
        }
    }
}

/// What became of approval `id`, if it was answered (granted, refused, expired, withdrawn)
/// recently enough for the engine to remember.
async fn recent_outcome(state: &Shared, id: &str) -> Option<truststack_engine::ApprovalOutcome> {
    let engine = state.engine();
    // Answers at once for a resolved approval; the bound covers one being resolved right now.
    tokio::time::timeout(std::time::Duration::from_millis(200), engine.outcome(id))
        .await
        .ok()
        .flatten()
}

async fn held_call(state: &Shared, id: &str) -> Result<(PendingApproval, Value), ApiError> {
    let gone =
        || ApiError::not_found("this call is not held: it was answered, expired or withdrawn");
    let view = approval_view(state, id).await.map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            gone()
        } else {
            e
        }
    })?;
    let pending = state
        .engine()
        .pending()
        .into_iter()
        .find(|p| p.approval_id == id)
        .ok_or_else(gone)?;
    Ok((pending, view))
}

#[derive(Deserialize)]
struct AnswerForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lease: String,
    #[serde(default)]
    comment: String,
}

async fn grant(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<AnswerForm>,
) -> Response {
    answer(state, headers, id, form, true).await
}

async fn refuse(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<AnswerForm>,
) -> Response {
    answer(state, headers, id, form, false).await
}

async fn answer(
    state: Shared,
    headers: HeaderMap,
    id: String,
    form: AnswerForm,
    grant: bool,
) -> Response {
    let viewer = match changer(&state, &headers, &form.csrf) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if !viewer.can_answer() {
        return page(
            StatusCode::FORBIDDEN,
            pages::message(
                "Refused",
                &format!(
                    "{} does not hold the `approver` role",
                    viewer.human.principal
                ),
            ),
        );
    }
    let nonempty = |s: String| {
        let s = s.trim().to_string();
        (!s.is_empty()).then_some(s)
    };
    let lease = if grant { nonempty(form.lease) } else { None };
    // Kept to show the call again if the answer is refused.
    let before = held_call(&state, &id).await.ok();
    match answer_as(
        &state,
        viewer.human.clone(),
        id.clone(),
        grant,
        lease,
        nonempty(form.comment),
        None,
    )
    .await
    {
        Ok(outcome) => page(StatusCode::OK, pages::answered(&viewer, &outcome)),
        Err(e) => match before {
            Some((pending, view)) => page(
                e.status,
                pages::call(&viewer, &pending, &view, Some(&e.message)),
            ),
            None => {
                let outcome = recent_outcome(&state, &id).await;
                page(
                    e.status,
                    pages::gone(&viewer, &id, &e.message, outcome.as_ref()),
                )
            }
        },
    }
}

/// The live queue: a `queue` event with the filtered held calls now, then after every change.
async fn events(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(filter): Query<QueueFilter>,
) -> Response {
    let Some(viewer) = viewer(&state, &headers) else {
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    };
    let changes = state.notify.subscribe();
    let stopping = state.stopping.subscribe();
    let start = (state, viewer.session_id, filter, changes, stopping, true);
    let stream = futures_util::stream::unfold(
        start,
        |(state, session, filter, mut changes, mut stopping, first)| async move {
            if !first {
                tokio::select! {
                    changed = changes.changed() => changed.ok()?,
                    _ = stopping.wait_for(|s| *s) => return None,
                }
            }
            // The stream ends with its session (signed out, expired) or its credential
            // (expired, revoked), as a page load would.
            let live = state.sessions.get(&session)?;
            state.identity.as_ref()?.human(&live.token).ok()?;
            let list: Vec<Value> = held(&state, &filter).iter().map(queue_row).collect();
            let event = SseEvent::default()
                .event("queue")
                .data(Value::Array(list).to_string());
            Some((
                Ok::<_, std::convert::Infallible>(event),
                (state, session, filter, changes, stopping, false),
            ))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// One row of the queue as the script renders it (as text, never as HTML).
pub fn queue_row(p: &PendingApproval) -> Value {
    json!({
        "approval_id": p.approval_id,
        "url": format!("/console/approvals/{}", crate::notify::percent_encode(&p.approval_id)),
        "held_at": p.held_at,
        "deadline": p.deadline,
        "agent": p.call.agent,
        "tool": p.call.tool,
        "root": root_of(p),
        "policies": p.policies.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
    })
}
