//! The HTTP API, versioned under `/v1`. Every JSON response carries a `decision_id` (OPA's
//! convention): the decision's own id for decisions, a fresh id otherwise.

use crate::auth::{bearer, Human};
use crate::backend::RevokeError;
use crate::error::{json_errors, parse_body, reply, response_id, ApiError};
use crate::state::AppState;
use crate::telemetry::TraceHeaders;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use truststack_engine::event::Principals;
use truststack_engine::log::clip;
use truststack_engine::record::Record;
use truststack_engine::Request;
use truststack_engine::{
    ApprovalAnswer, Caller, DataAccess, Engine, Grant, Input, Observation, ToolCall,
};

type Shared = Arc<AppState>;
type ApiResult = Result<Response, ApiError>;

/// Every route of the API.
pub fn router(state: Shared) -> Router {
    let timeout = state.config.request_timeout.std();
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/v1/decide", post(decide))
        .route("/v1/observations", post(observe))
        .route("/v1/inputs", post(input))
        .route("/v1/grants", post(grant_task))
        .route("/v1/outcomes", post(outcome))
        .route("/v1/tools/visible", post(visible_tools))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/approvals/{id}", get(show_approval))
        .route("/v1/approvals/{id}/grant", post(grant))
        .route("/v1/approvals/{id}/refuse", post(refuse))
        .route("/v1/approvals/{id}/wait", get(wait))
        .route("/v1/approvals/{id}/cancel", post(cancel))
        .route("/v1/ledger/checkpoint", get(checkpoint))
        .route("/v1/ledger/entries", get(entries))
        .route("/v1/ledger/proofs/inclusion", get(inclusion))
        .route("/v1/ledger/proofs/consistency", get(consistency))
        .route("/v1/identities", post(issue))
        .route("/v1/identities/delegate", post(delegate))
        .route("/v1/identities/revoke", post(revoke))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/policies", get(policies))
        .route("/v1/policies/reload", post(reload))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        // Outermost, so it also sees the answers of the layers above.
        .layer(axum::middleware::map_response(move |r| {
            json_errors(r, limit)
        }))
        .with_state(Arc::clone(&state))
        // After the API's layers: the console answers HTML, and its live stream outlasts the
        // request timeout.
        .merge(crate::console::router(state))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))
}

// ---- identity of the caller ----

impl AppState {
    fn identity(&self) -> Result<&Arc<dyn crate::backend::IdentityService>, ApiError> {
        self.identity
            .as_ref()
            .ok_or_else(|| ApiError::unavailable("this server has no identity service configured"))
    }

    /// The verified agent behind a request, or, when credentials are not required, the agent
    /// the body names.
    fn caller(
        &self,
        headers: &HeaderMap,
        agent: Option<String>,
        chain: Vec<String>,
    ) -> Result<Caller, ApiError> {
        if !self.config.require_credentials {
            let agent = agent.ok_or_else(|| {
                ApiError::bad_request(
                    "`agent` is required when the server does not require credentials",
                )
            })?;
            return Ok(Caller {
                agent,
                chain,
                tools: None,
                credential_id: None,
            });
        }
        if agent.is_some() || !chain.is_empty() {
            return Err(ApiError::bad_request(
                "`agent` and `chain` come from the credential; remove them from the request body",
            ));
        }
        let token = bearer(headers).ok_or_else(|| {
            ApiError::unauthorized("missing `Authorization: Bearer <agent credential>`")
        })?;
        self.identity()?
            .agent(token)
            .map_err(|e| ApiError::unauthorized(format!("credential rejected: {e}")))
    }

    /// The verified human behind a request, who must hold `role`. Without required credentials
    /// the body's `principal` stands in (local experiments only).
    fn human(
        &self,
        headers: &HeaderMap,
        role: &str,
        claimed: Option<&str>,
    ) -> Result<Human, ApiError> {
        if !self.config.require_credentials {
            let principal = claimed.ok_or_else(|| {
                ApiError::bad_request(
                    "`approver` is required when the server does not require credentials",
                )
            })?;
            return Ok(Human {
                principal: principal.to_string(),
                roles: vec![role.to_string()],
                groups: Vec::new(),
            });
        }
        let token = bearer(headers).ok_or_else(|| {
            ApiError::unauthorized("missing `Authorization: Bearer <credential>`")
        })?;
        let human = self
            .identity()?
            .human(token)
            .map_err(|e| ApiError::unauthorized(format!("credential rejected: {e}")))?;
        if !human.has_role(role) {
            return Err(ApiError::forbidden(format!(
                "{} does not hold the `{role}` role",
                human.principal
            )));
        }
        Ok(human)
    }
}

// ---- decisions and observations ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideRequest {
    #[serde(default)]
    id: Option<String>,
    tool: String,
    #[serde(default)]
    args: Value,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    chain: Vec<String>,
    /// Used only when the server runs on the event clock.
    #[serde(default)]
    time: Option<String>,
}

impl DecideRequest {
    /// The call to decide, for `caller` (identity is the caller's, never the body's).
    fn into_call(self, caller: &Caller, fresh_id: impl FnOnce() -> String) -> ToolCall {
        ToolCall {
            id: self.id.unwrap_or_else(fresh_id),
            time: self.time,
            agent: caller.agent.clone(),
            session: self.session,
            chain: caller.chain.clone(),
            tool: self.tool,
            args: self.args,
        }
    }
}

async fn decide(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let mut req: DecideRequest = parse_body(&body)?;
    // With replicas, the turn first: a credential revoked on another replica is refused here.
    let turn = state.turn().await?;
    let caller = state.caller(&headers, req.agent.take(), std::mem::take(&mut req.chain))?;
    let call = req.into_call(&caller, || response_id().replacen("r-", "c-", 1));
    // The usual path decides on this worker (microseconds, under the engine's read side so a
    // reload waits for the record to be queued), then awaits the record's durability without
    // tying up a thread.
    let engine: Arc<Engine>;
    let queued = match state.engine.try_read() {
        Some(active) => {
            engine = Arc::clone(&active);
            Some(engine.queue(Request::new(&call).for_caller(&caller)))
        }
        None => None,
    };
    let decision = match queued {
        Some(queued) => queued.durable().await,
        // A reload holds the write side while it rebuilds the engine: wait for it off the
        // async workers.
        None => {
            let st = Arc::clone(&state);
            let (caller, call) = (caller.clone(), call.clone());
            blocking(move || {
                st.engine
                    .read()
                    .queue(Request::new(&call).for_caller(&caller))
                    .wait()
            })
            .await?
        }
    };
    drop(turn);
    let verdict = decision.decision.as_str();
    state.metrics.decisions.with_label_values(&[verdict]).inc();
    for p in &decision.policies {
        state
            .metrics
            .policy_fired
            .with_label_values(&[p.id.as_str(), p.action.as_str()])
            .inc();
    }
    state
        .metrics
        .decide_latency
        .with_label_values(&[verdict])
        .observe(started.elapsed().as_secs_f64());
    state.count_pending();
    state.notify.decided(&call, &decision);
    if let Some(telemetry) = &state.telemetry {
        let record = state
            .engine()
            .bundle()
            .catalog
            .tool(&call.tool)
            .map(|t| t.record);
        telemetry.decision(
            &TraceHeaders::from_http(&headers),
            started_at,
            &call,
            &decision,
            record,
        );
    }
    Ok(Json(decision).into_response())
}

/// What a host reports about its agent's session — a result, an instruction, a task grant:
/// the engine's own event, read from the body with `agent` optional, whose agent and chain are
/// then the verified caller's, never the body's.
trait Reported: serde::de::DeserializeOwned {
    fn act_as(&mut self, caller: Caller);
}

impl Reported for Observation {
    fn act_as(&mut self, caller: Caller) {
        (self.agent, self.chain) = (caller.agent, caller.chain);
    }
}

impl Reported for Input {
    fn act_as(&mut self, caller: Caller) {
        (self.agent, self.chain) = (caller.agent, caller.chain);
    }
}

impl Reported for Grant {
    fn act_as(&mut self, caller: Caller) {
        (self.agent, self.chain) = (caller.agent, caller.chain);
    }
}

/// The event a host reports in `body`, with the agent and chain the body claims (which only a
/// server that does not require credentials takes). A placeholder agent stands for the caller
/// until it is known, so the body is checked before the caller, as every request's is.
fn parse_reported<T: Reported>(body: &[u8]) -> Result<(T, Option<String>, Vec<String>), ApiError> {
    let mut value: Value = parse_body(body)?;
    let Value::Object(fields) = &mut value else {
        return Err(ApiError::bad_request(
            "invalid request body: expected a JSON object",
        ));
    };
    let agent = match fields.remove("agent") {
        None => None,
        Some(Value::String(agent)) => Some(agent),
        Some(_) => return Err(ApiError::bad_request("`agent` must be a string")),
    };
    let chain: Vec<String> = match fields.remove("chain") {
        None => Vec::new(),
        Some(chain) => serde_json::from_value(chain)
            .map_err(|_| ApiError::bad_request("`chain` must be a list of principals (strings)"))?,
    };
    fields.insert("agent".into(), Value::String(String::new()));
    let event = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    Ok((event, agent, chain))
}

impl AppState {
    /// The event a host reports in `body`, attributed to the verified caller.
    fn reported<T: Reported>(&self, headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
        let (mut event, agent, chain) = parse_reported::<T>(body)?;
        event.act_as(self.caller(headers, agent, chain)?);
        Ok(event)
    }
}

async fn record_observation(state: Shared, obs: Observation) -> ApiResult {
    let _turn = state.turn().await?;
    let st = Arc::clone(&state);
    let index = blocking(move || st.engine.read().observe(&obs))
        .await?
        .map_err(|e| ApiError::unavailable(format!("observation not recorded: {e}")))?;
    Ok(reply(json!({"recorded": true, "ledger_index": index})))
}

async fn observe(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let obs: Observation = state.reported(&headers, &body)?;
    record_observation(state, obs).await
}

/// A human's instruction to an agent, reported by its host: credentialed like an observation,
/// so the agent and its chain (and so the human) come from the verified credential.
async fn input(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let input: Input = state.reported(&headers, &body)?;
    let _turn = state.turn().await?;
    let st = Arc::clone(&state);
    let index = blocking(move || st.engine.read().input(&input)).await??;
    Ok(reply(json!({"recorded": true, "ledger_index": index})))
}

/// What a session's task authorises, declared by its host: credentialed like an input, so a
/// caller declares grants only for its own sessions, on behalf of a human of its chain.
async fn grant_task(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let grant: Grant = state.reported(&headers, &body)?;
    let _turn = state.turn().await?;
    let st = Arc::clone(&state);
    let declared = blocking(move || st.engine.read().declare_grant(&grant)).await??;
    Ok(reply(json!({
        "recorded": true,
        "grant_id": declared.grant_id,
        "ledger_index": declared.ledger_index,
    })))
}

/// A call's outcome: an observation tied to the call, with the tool's data source (from the
/// catalog) as its label so taint policies see it.
async fn outcome(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let mut obs: Observation = state.reported(&headers, &body)?;
    if obs.call_id.is_none() {
        return Err(ApiError::bad_request(
            "an outcome needs the `call_id` it reports on",
        ));
    }
    if let Some(tool) = &obs.tool {
        if let Some(ds) = state
            .engine()
            .bundle()
            .catalog
            .tool(tool)
            .and_then(|t| t.data_source.clone())
        {
            if !obs
                .data_sources
                .iter()
                .any(|d| d.name == ds.name && d.mode == ds.mode)
            {
                obs.data_sources.push(DataAccess {
                    name: ds.name,
                    mode: ds.mode,
                });
            }
        }
    }
    record_observation(state, obs).await
}

/// Which of `tools` the caller could ever be allowed to call in `session` (an MCP gateway's
/// `tools/list` shows only those): see [`truststack_engine::visibility`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VisibleRequest {
    tools: Vec<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    chain: Vec<String>,
}

async fn visible_tools(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let mut req: VisibleRequest = parse_body(&body)?;
    let caller = state.caller(&headers, req.agent.take(), std::mem::take(&mut req.chain))?;
    let engine = state.engine();
    let bundle = engine.bundle();
    let session = req.session.as_deref().unwrap_or("");
    let (visible, hidden) = truststack_engine::visibility::split(
        &bundle,
        engine.settings(),
        &caller,
        session,
        req.tools,
    );
    let hidden: Vec<Value> = hidden
        .into_iter()
        .map(|(tool, reason)| json!({"tool": tool, "reason": reason}))
        .collect();
    Ok(reply(json!({"visible": visible, "hidden": hidden})))
}

// ---- approvals ----

#[derive(Deserialize)]
struct ApprovalFilter {
    policy: Option<String>,
    agent: Option<String>,
    root: Option<String>,
    approver: Option<String>,
}

async fn list_approvals(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(f): Query<ApprovalFilter>,
) -> ApiResult {
    state.human(&headers, "approver", f.approver.as_deref())?;
    state.caught_up().await?;
    let pending: Vec<Value> = state
        .engine()
        .pending()
        .into_iter()
        .filter(|p| {
            f.policy
                .as_ref()
                .is_none_or(|id| p.policies.iter().any(|x| &x.id == id))
        })
        .filter(|p| f.agent.as_ref().is_none_or(|a| &p.call.agent == a))
        .filter(|p| {
            f.root.as_ref().is_none_or(|r| {
                Principals::of(&p.call.agent, p.call.session.as_deref(), &p.call.chain).root == r
            })
        })
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect();
    Ok(reply(json!({"pending": pending})))
}

/// The most recent recorded decisions of the held call's orchestration: what led here.
const CONTEXT_ENTRIES: usize = 50;
/// How many of the newest ledger entries the approval view searches for them.
const CONTEXT_SCAN: u64 = 100_000;
/// Entries read per ledger call while searching.
const CONTEXT_PAGE: u64 = 512;

async fn show_approval(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    state.human(&headers, "approver", q.get("approver").map(String::as_str))?;
    Ok(reply(approval_view(&state, &id).await?))
}

/// A held call with the recent trajectory of its orchestration from the ledger: what the API
/// and the console show an approver.
pub(crate) async fn approval_view(state: &Shared, id: &str) -> Result<Value, ApiError> {
    state.caught_up().await?;
    let pending = state
        .engine()
        .pending()
        .into_iter()
        .find(|p| p.approval_id == id)
        .ok_or_else(|| ApiError::not_found(format!("no pending approval {}", clip(id))))?;
    let call = pending.call.clone();
    let st = Arc::clone(state);
    let trajectory = blocking(move || {
        let root = Principals::of(&call.agent, call.session.as_deref(), &call.chain)
            .root
            .to_string();
        // Newest first, a page at a time, back at most CONTEXT_SCAN entries: the view costs
        // the same however long the ledger has grown.
        let mut found = Vec::new();
        let mut end = st.ledger.size();
        let floor = end.saturating_sub(CONTEXT_SCAN);
        while end > floor && found.len() < CONTEXT_ENTRIES {
            let start = end.saturating_sub(CONTEXT_PAGE).max(floor);
            for entry in st.ledger.entries(start, end)?.iter().rev() {
                let index = entry["index"].as_u64().unwrap_or_default();
                let Ok(Record::Decision { call, decision }) =
                    Record::decode(index, &entry["record"])
                else {
                    continue;
                };
                if Principals::of(&call.agent, None, &call.chain).root != root {
                    continue;
                }
                found.push(json!({
                    "ledger_index": index, "call_id": call.id, "agent": call.agent,
                    "tool": call.tool, "decision": decision.decision, "time": decision.time,
                }));
                if found.len() == CONTEXT_ENTRIES {
                    break;
                }
            }
            end = start;
        }
        found.reverse();
        let matching = found;
        Ok::<_, truststack_engine::ledger::LedgerError>(matching)
    })
    .await?;
    let mut body = serde_json::to_value(&pending).map_err(|e| ApiError::internal(e.to_string()))?;
    body["provenance"] = json!(state.engine().argument_provenance(&pending.call));
    // Without the ledger the held call is still shown, saying why its context is missing.
    match trajectory {
        Ok(list) => body["trajectory"] = Value::Array(list),
        Err(e) => {
            body["trajectory"] = Value::Array(Vec::new());
            body["trajectory_error"] = json!(format!("the ledger could not be read: {e}"));
        }
    }
    Ok(body)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AnswerRequest {
    #[serde(default)]
    lease: Option<String>,
    /// Only when the server does not require credentials.
    #[serde(default)]
    approver: Option<String>,
    #[serde(default)]
    comment: Option<String>,
    /// Used only when the server runs on the event clock.
    #[serde(default)]
    time: Option<String>,
}

async fn answer(
    state: Shared,
    headers: HeaderMap,
    id: String,
    body: Bytes,
    grant: bool,
) -> ApiResult {
    let req: AnswerRequest = if body.is_empty() {
        AnswerRequest::default()
    } else {
        parse_body(&body)?
    };
    let human = state.human(&headers, "approver", req.approver.as_deref())?;
    let outcome = answer_as(&state, human, id, grant, req.lease, req.comment, req.time).await?;
    let body = serde_json::to_value(&outcome).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(reply(body))
}

/// Grants or refuses held call `id` as the verified `human`: the one path for the API and the
/// console. The engine checks separation of duties and approver groups.
pub(crate) async fn answer_as(
    state: &Shared,
    human: Human,
    id: String,
    grant: bool,
    lease: Option<String>,
    comment: Option<String>,
    time: Option<String>,
) -> Result<truststack_engine::ApprovalOutcome, ApiError> {
    if let Some(comment) = &comment {
        tracing::info!(approval = %clip(&id), approver = %human.principal, comment = %clip(comment), "approval comment");
    }
    let ans = ApprovalAnswer {
        approval_id: Some(id),
        call_id: None,
        approver: human.principal,
        groups: human.groups,
        grant,
        lease,
        time,
    };
    let turn = state.turn().await?;
    let st = Arc::clone(state);
    let outcome = blocking(move || st.engine.read().answer(&ans)).await??;
    drop(turn);
    state.count_pending();
    state.notify.answered(&outcome);
    Ok(outcome)
}

async fn grant(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    answer(state, headers, id, body, true).await
}

async fn refuse(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    answer(state, headers, id, body, false).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    /// Only when the server does not require credentials.
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    chain: Vec<String>,
    /// Used only when the server runs on the event clock.
    #[serde(default)]
    time: Option<String>,
}

/// The caller withdraws its own held call (its client cancelled the request or ended the
/// session at an enforcement point): refused, recorded, and no longer grantable. Only the agent
/// that made the call, with the same chain, may cancel it.
async fn cancel(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: CancelRequest = if body.is_empty() {
        CancelRequest::default()
    } else {
        parse_body(&body)?
    };
    let caller = state.caller(&headers, req.agent, req.chain)?;
    let turn = state.turn().await?;
    let st = Arc::clone(&state);
    let outcome =
        blocking(move || st.engine.read().cancel(&id, &caller, req.time.as_deref())).await??;
    drop(turn);
    state.count_pending();
    state.notify.answered(&outcome);
    let body = serde_json::to_value(&outcome).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(reply(body))
}

#[derive(Deserialize)]
struct WaitQuery {
    timeout: Option<String>,
}

impl AppState {
    /// Who asks to wait on approval `id`: an approver, or the agent whose call it holds. Returns
    /// the principal the wait counts against. Without required credentials anyone may wait
    /// (local experiments), all counted as one caller.
    fn waiter(&self, headers: &HeaderMap, engine: &Engine, id: &str) -> Result<String, ApiError> {
        let unknown = || {
            ApiError::not_found(format!(
                "no pending or recently answered approval {}",
                clip(id)
            ))
        };
        if !self.config.require_credentials {
            engine.approval_agent(id).ok_or_else(unknown)?;
            return Ok("anonymous".into());
        }
        let token = bearer(headers).ok_or_else(|| {
            ApiError::unauthorized(
                "waiting on an approval needs `Authorization: Bearer` with the credential of \
                 the agent whose call it holds, or of an approver",
            )
        })?;
        let identity = self.identity()?;
        let principal = match identity.human(token) {
            Ok(human) if human.has_role("approver") => {
                return {
                    engine.approval_agent(id).ok_or_else(unknown)?;
                    Ok(human.principal)
                }
            }
            Ok(human) => {
                return Err(ApiError::forbidden(format!(
                    "{} does not hold the `approver` role",
                    human.principal
                )))
            }
            Err(_) => {
                identity
                    .agent(token)
                    .map_err(|e| ApiError::unauthorized(format!("credential rejected: {e}")))?
                    .agent
            }
        };
        let agent = engine.approval_agent(id).ok_or_else(unknown)?;
        if agent != principal {
            return Err(ApiError::forbidden(format!(
                "approval {} holds a call of another agent: only that agent or an approver may \
                 wait on it",
                clip(id)
            )));
        }
        Ok(principal)
    }
}

/// Long-poll until the held call is answered or `timeout` (default 30s, capped below the
/// request timeout) passes. A waiter holds no thread: it awaits the engine's notification. It
/// is counted against its caller's share of open waits while it waits, and ends at once, as
/// `pending`, when the server starts shutting down.
async fn wait(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult {
    let cap = state
        .config
        .request_timeout
        .std()
        .saturating_sub(Duration::from_secs(1));
    let timeout = match &q.timeout {
        Some(t) => truststack_policy::duration::parse_duration(t)
            .map(|ms| Duration::from_millis(ms.unsigned_abs()))
            .map_err(|e| ApiError::bad_request(format!("timeout: {e}")))?,
        None => Duration::from_secs(30),
    }
    .min(cap);
    state.caught_up().await?;
    let engine = state.engine();
    let caller = state.waiter(&headers, &engine, &id)?;
    let _slot = state.waiters.enter(&caller)?;
    let mut stopping = state.stopping.subscribe();
    let outcome = tokio::select! {
        waited = tokio::time::timeout(timeout, engine.outcome(&id)) => match waited {
            Ok(Some(outcome)) => Some(outcome),
            Ok(None) => {
                return Err(ApiError::not_found(format!(
                    "no pending or recently answered approval {}",
                    clip(&id)
                )))
            }
            Err(_) => None,
        },
        _ = stopping.wait_for(|stop| *stop) => None,
    };
    match outcome {
        Some(o) => {
            let body = serde_json::to_value(&o).map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(reply(json!({"status": "answered", "outcome": body})))
        }
        None => Ok(reply(json!({"status": "pending", "approval_id": id}))),
    }
}

// ---- ledger ----

/// A proof or entry asked of a part of the log that does not exist is the caller's mistake
/// (400); anything else is the ledger failing (503).
fn ledger_error(e: truststack_engine::ledger::LedgerError) -> ApiError {
    use truststack_engine::ledger::store::StoreError;
    use truststack_engine::ledger::LedgerError as E;
    match e {
        E::Proof(_)
        | E::Store(StoreError::Merkle(_))
        | E::NoSuchEntry { .. }
        | E::SizeBeyondLog { .. } => ApiError::bad_request(e.to_string()),
        e => ApiError::unavailable(e.to_string()),
    }
}

async fn checkpoint(State(state): State<Shared>) -> ApiResult {
    let st = Arc::clone(&state);
    let note = blocking(move || st.ledger.checkpoint())
        .await?
        .map_err(ledger_error)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}

#[derive(Deserialize)]
struct Range {
    start: Option<u64>,
    end: Option<u64>,
}

/// Most entries one request returns.
const MAX_ENTRIES: u64 = 1000;

async fn entries(State(state): State<Shared>, Query(r): Query<Range>) -> ApiResult {
    let len = state.ledger.size();
    let start = r.start.unwrap_or(0);
    let end = r
        .end
        .unwrap_or(len)
        .min(len)
        .min(start.saturating_add(MAX_ENTRIES));
    if start > end {
        return Err(ApiError::bad_request(format!(
            "start {start} is past end {end} (ledger has {len} entries)"
        )));
    }
    let st = Arc::clone(&state);
    let list = blocking(move || st.ledger.entries(start, end))
        .await?
        .map_err(ledger_error)?;
    Ok(reply(
        json!({"start": start, "end": end, "size": len, "entries": list}),
    ))
}

#[derive(Deserialize)]
struct InclusionQuery {
    index: u64,
    size: Option<u64>,
}

async fn inclusion(State(state): State<Shared>, Query(q): Query<InclusionQuery>) -> ApiResult {
    ledger_read(state, move |ledger| ledger.inclusion_proof(q.index, q.size)).await
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    old: u64,
    new: Option<u64>,
}

async fn consistency(State(state): State<Shared>, Query(q): Query<ConsistencyQuery>) -> ApiResult {
    ledger_read(state, move |ledger| ledger.consistency_proof(q.old, q.new)).await
}

/// A read of the ledger, off the async workers, as the JSON answer.
async fn ledger_read<T: Serialize + Send + 'static>(
    state: Shared,
    read: impl FnOnce(
            &dyn crate::backend::LedgerBackend,
        ) -> Result<T, truststack_engine::ledger::LedgerError>
        + Send
        + 'static,
) -> ApiResult {
    let value = blocking(move || read(state.ledger.as_ref()))
        .await?
        .map_err(ledger_error)?;
    Ok(reply(json!(value)))
}

// ---- identities ----

/// `POST /v1/identities`: an agent (`agent`, `owner`, `tools`) or a human (`user`, `roles`,
/// `groups`) credential. Unknown fields are refused, not ignored: a misspelt `roles` must not
/// issue a credential without them silently.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    /// A list of strings, or one comma-separated string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tools: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    roles: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    groups: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct DelegateRequest {
    agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tools: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Parses an identity request strictly, then hands it to the identity service as JSON.
fn identity_request<T: serde::de::DeserializeOwned + Serialize>(
    body: &[u8],
) -> Result<Value, ApiError> {
    let req: T = parse_body(body)?;
    serde_json::to_value(&req).map_err(|e| ApiError::internal(e.to_string()))
}

async fn issue(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    state.human(&headers, "admin", Some("user:local-admin"))?;
    let req = identity_request::<IssueRequest>(&body)?;
    let issued = state
        .identity()?
        .issue(&req)
        .map_err(|e| issue_error(e, ApiError::bad_request))?;
    Ok(reply(recorded(&state, issued)?))
}

async fn delegate(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let token = bearer(&headers).ok_or_else(|| {
        ApiError::unauthorized(
            "delegation needs the parent's credential as `Authorization: Bearer`",
        )
    })?;
    let req = identity_request::<DelegateRequest>(&body)?;
    let issued = state
        .identity()?
        .delegate(token, &req)
        .map_err(|e| issue_error(e, ApiError::forbidden))?;
    Ok(reply(recorded(&state, issued)?))
}

async fn revoke(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let admin = state.human(&headers, "admin", Some("user:local-admin"))?;
    let mut req = identity_request::<RevokeRequest>(&body)?;
    if let Value::Object(map) = &mut req {
        map.insert("by".into(), Value::String(admin.principal));
    }
    // Recorded first, then applied: a revocation the ledger cannot take is not made at all.
    let _turn = state.turn().await?;
    let mut index = None;
    let record = state
        .identity()?
        .revoke(&req, &mut |record| {
            let i = state
                .ledger
                .append(record.clone())
                .map_err(|e| format!("ledger unavailable: {e}"))?;
            index = Some(i);
            Ok(i)
        })
        .map_err(|e| match e {
            RevokeError::Refused(e) => ApiError::bad_request(e),
            RevokeError::Unavailable(e) => ApiError::unavailable(e),
        })?;
    Ok(reply(json!({"revoked": record, "ledger_index": index})))
}

/// Identity events go to the ledger like every decision: who was given what authority.
/// Takes the `record` out of an issuance answer and appends it.
fn recorded(state: &AppState, mut issued: Value) -> Result<Value, ApiError> {
    let record = issued
        .get_mut("record")
        .map(Value::take)
        .unwrap_or(Value::Null);
    let index = append_record(state, record)?;
    issued["ledger_index"] = json!(index);
    if let Value::Object(map) = &mut issued {
        map.remove("record");
    }
    Ok(issued)
}

/// A request the issuer could not serve: the caller's mistake (400), the issuer's refusal
/// (`refused`: 400 for an issue, 403 for a delegation), or the issuer's files failing (503).
fn issue_error(e: crate::backend::IssueError, refused: fn(String) -> ApiError) -> ApiError {
    use crate::backend::IssueError;
    use truststack_engine::identity::IssuerError;
    match e {
        IssueError::Issuer(e @ IssuerError::Io { .. }) => ApiError::unavailable(e.to_string()),
        IssueError::Issuer(e) => refused(e.to_string()),
        e => ApiError::bad_request(e.to_string()),
    }
}

fn append_record(state: &AppState, record: Value) -> Result<u64, ApiError> {
    state
        .ledger
        .append(record)
        .map_err(|e| ApiError::unavailable(format!("ledger unavailable: {e}")))
}

async fn jwks(State(state): State<Shared>) -> ApiResult {
    Ok(Json(state.identity()?.jwks()).into_response())
}

// ---- policies ----

async fn policies(State(state): State<Shared>) -> ApiResult {
    let bundle = state.engine().bundle();
    let list: Vec<Value> = bundle
        .policies
        .iter()
        .map(|p| {
            let p = &p.policy;
            json!({"id": p.id, "action": p.action, "target": p.target, "mode": p.mode, "source": &*p.source, "reason": p.reason, "text": p.text})
        })
        .collect();
    Ok(reply(json!({"policy_hash": bundle.hash, "policies": list})))
}

async fn reload(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    let admin = state.human(&headers, "admin", Some("user:local-admin"))?;
    let _turn = state.turn().await?;
    let st = Arc::clone(&state);
    let by = admin.principal.clone();
    let result = blocking(move || st.reload(&by)).await?;
    match result {
        Ok(body) => Ok(reply(body)),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("bundle rejected, the active bundle is unchanged:\n{e}"),
        )),
    }
}

// ---- operations ----

async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no endpoint {method} {}; see /openapi.json",
        clip(uri.path())
    ))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Shared>) -> Response {
    if !state.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    match state.replicas.as_ref().and_then(|r| r.database_error()) {
        None => "ready".into_response(),
        Some(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the shared database is unavailable: {e}"),
        )
            .into_response(),
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// The body half of the API for the fuzz target: `body` parsed as every request the API takes,
/// and the decide and observation requests that parse run through `engine` as the handlers run
/// them (with the body's agent, as when credentials are not required). Give an engine that
/// records nowhere. Must never panic.
pub fn fuzz_bodies(engine: &Engine, body: &[u8]) {
    if let Ok(mut req) = parse_body::<DecideRequest>(body) {
        let caller = Caller {
            agent: req.agent.take().unwrap_or_default(),
            chain: std::mem::take(&mut req.chain),
            tools: None,
            credential_id: None,
        };
        let call = req.into_call(&caller, || "c-fuzz".into());
        let _ = engine.queue(Request::new(&call).for_caller(&caller)).wait();
    }
    if let Ok((mut obs, agent, chain)) = parse_reported::<Observation>(body) {
        obs.act_as(Caller {
            agent: agent.unwrap_or_default(),
            chain,
            tools: None,
            credential_id: None,
        });
        let _ = engine.observe(&obs);
    }
    let _ = parse_reported::<Input>(body);
    let _ = parse_reported::<Grant>(body);
    let _ = parse_body::<AnswerRequest>(body);
    let _ = identity_request::<IssueRequest>(body);
    let _ = identity_request::<DelegateRequest>(body);
    let _ = identity_request::<RevokeRequest>(body);
}
