//! Where the gateway's decisions come from.
//!
//! - [`Decider::Embedded`]: an engine inside this process. Its monitor state, held calls and
//!   ledger belong to this one process: another gateway (another MCP server of the same client)
//!   sees none of it.
//! - [`Decider::Remote`]: a decision point (`truststack serve`) asked over its public `/v1` API
//!   with the agent's own credential. The gateway keeps no policy state; every enforcement
//!   point that asks the same server shares its rate limits, trajectories, taint, approvals
//!   and ledger.
//!
//! Both fail closed: a decision point that cannot be reached, answers with an error, or does
//! not answer within the configured timeout denies the call with the reason. No call is ever
//! forwarded without an `allow` from the decider.

use crate::enforce::Enforcer;
use crate::identity::CallerIdentity;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use truststack_engine::{ApprovalOutcome, Decision, ToolCall, Verdict};
use truststack_server::telemetry::TraceHeaders;

/// The gateway's source of decisions.
pub enum Decider {
    Embedded(Enforcer),
    Remote(Remote),
}

/// The result of waiting on a held call for a while.
/// Why a held call could not be withdrawn.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error(transparent)]
    Engine(#[from] truststack_engine::ApprovalError),
    #[error("the engine's worker stopped: {0}")]
    Stopped(#[from] tokio::task::JoinError),
    /// The decision point over HTTP failed or refused, in its words.
    #[error("{0}")]
    Remote(String),
}

#[derive(Debug)]
pub enum Waited {
    /// An approver answered (or the deadline passed, or the call was cancelled).
    Answered(ApprovalOutcome),
    /// Still held.
    Pending,
    /// The decider no longer knows the call, or cannot be asked: deny with this reason.
    Lost(String),
}

/// Who a decision is for: the identity the gateway established, and the credential it was
/// presented with (which a remote decider verifies itself).
#[derive(Clone, Copy)]
pub struct Asker<'a> {
    pub identity: &'a CallerIdentity,
    pub credential: Option<&'a str>,
}

impl Decider {
    /// Decides a call; `trace` is the caller's W3C trace context, which an embedded engine's
    /// decision span continues. Never blocks an async worker: the embedded engine awaits its
    /// record's durability, the remote one its answer.
    pub async fn decide(&self, who: Asker<'_>, call: &ToolCall, trace: &TraceHeaders) -> Decision {
        match self {
            Decider::Embedded(e) => e.decide(who.identity, call, trace).await,
            Decider::Remote(r) => r.decide(who, call).await,
        }
    }

    /// Waits at most `timeout` for the answer to a held call.
    pub async fn wait(&self, who: Asker<'_>, approval_id: &str, timeout: Duration) -> Waited {
        match self {
            Decider::Embedded(e) => {
                let engine = Arc::clone(e.engine());
                let id = approval_id.to_string();
                let started = std::time::Instant::now();
                let got = tokio::task::spawn_blocking(move || engine.wait_outcome(&id, timeout))
                    .await
                    .ok()
                    .flatten();
                match got {
                    Some(o) => Waited::Answered(o),
                    None if started.elapsed() < timeout / 2
                        && !e.engine().is_pending(approval_id) =>
                    {
                        Waited::Lost("the approval is no longer pending".into())
                    }
                    None => Waited::Pending,
                }
            }
            Decider::Remote(r) => r.wait(who, approval_id, timeout).await,
        }
    }

    /// Withdraws a held call whose client cancelled it or went away: it is refused and
    /// recorded, so no approver can grant a call nobody waits for.
    pub async fn cancel(&self, who: Asker<'_>, approval_id: &str) -> Result<(), CancelError> {
        match self {
            Decider::Embedded(e) => {
                let engine = Arc::clone(e.engine());
                let (id, caller) = (approval_id.to_string(), who.identity.clone());
                tokio::task::spawn_blocking(move || engine.cancel(&id, &caller, None)).await??;
                Ok(())
            }
            Decider::Remote(r) => r.cancel(who, approval_id).await,
        }
    }

    /// Reports an allowed call's result (`result_text`: the JSON-RPC response). An embedded
    /// engine applies it to its scopes at once and writes its record in the background.
    pub fn observe(&self, who: Asker<'_>, call: &ToolCall, result_text: &str) {
        match self {
            Decider::Embedded(e) => e.observe(call, result_text),
            Decider::Remote(r) => r.observe(who, call, result_text),
        }
    }

    /// The tools among `tools` that `who` may never call in `session`, each with why (see
    /// [`truststack_engine::visibility`]): what `tools/list` leaves out. A remote decider is
    /// asked (`POST /v1/tools/visible`), since the policies are its own.
    pub async fn hidden(
        &self,
        who: Asker<'_>,
        session: &str,
        tools: Vec<String>,
    ) -> Result<HashMap<String, String>, String> {
        match self {
            Decider::Embedded(e) => {
                Ok(e.hidden(who.identity, session, tools).into_iter().collect())
            }
            Decider::Remote(r) => r.hidden(who, session, tools).await,
        }
    }

    /// Sends what is still on its way to the decider (outcome reports), before the gateway
    /// stops. An embedded engine records outcomes as they come.
    pub async fn flush(&self) {
        if let Decider::Remote(r) = self {
            r.flush().await;
        }
    }

    /// The embedded enforcer, if decisions are made in this process.
    pub fn embedded(&self) -> Option<&Enforcer> {
        match self {
            Decider::Embedded(e) => Some(e),
            Decider::Remote(_) => None,
        }
    }
}

/// A decision point reached over HTTP: `POST /v1/decide`, `POST /v1/outcomes`,
/// `GET /v1/approvals/{id}/wait`, `POST /v1/approvals/{id}/cancel`.
pub struct Remote {
    base: String,
    http: reqwest::Client,
    timeout: Duration,
    /// Outcome reports still on their way, so that a gateway that stops sends them first.
    reports: parking_lot::Mutex<tokio::task::JoinSet<()>>,
    /// Per agent and session, the outcome reports in flight hold a read lock that the session's
    /// next decision write-locks first: the result an agent acted on is in the decision
    /// point's provenance index before its next call is decided, whatever the timing.
    in_flight: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
}

#[derive(Deserialize)]
struct WaitAnswer {
    status: String,
    #[serde(default)]
    outcome: Option<ApprovalOutcome>,
}

impl Remote {
    /// A client of the decision point at `url`. Connections are kept alive and reused (one
    /// pool per gateway process); `timeout` bounds every request but the long polls of held
    /// calls, which get `timeout` on top of the time they ask the server to wait.
    pub fn new(url: &str, timeout: Duration) -> Result<Remote, String> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Remote {
            base: url.trim_end_matches('/').to_string(),
            http,
            timeout,
            reports: parking_lot::Mutex::new(tokio::task::JoinSet::new()),
            in_flight: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// A request carrying the agent's credential; without one, the body names the agent (a
    /// server that requires credentials refuses that).
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        who: Asker<'_>,
        mut body: Option<Value>,
    ) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        match who.credential {
            Some(token) => req = req.bearer_auth(token),
            None => {
                if let Some(Value::Object(map)) = &mut body {
                    map.insert("agent".into(), Value::from(who.identity.agent.clone()));
                    map.insert("chain".into(), json!(who.identity.chain));
                }
            }
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        req
    }

    /// Sends a request and reads its JSON answer; any failure is a sentence for a denial.
    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Value, String> {
        let what = &self.base;
        let resp = match tokio::time::timeout(timeout, req.send()).await {
            Err(_) => {
                return Err(format!(
                    "the decision point {what} did not answer within {}",
                    show(timeout)
                ))
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(format!(
                    "the decision point {what} is unreachable: {}",
                    root_cause(&e)
                ))
            }
            Ok(Err(e)) => {
                return Err(format!(
                    "the decision point {what} failed: {}",
                    root_cause(&e)
                ))
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let body = match tokio::time::timeout(timeout, resp.bytes()).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                return Err(format!(
                    "the decision point {what} failed: {}",
                    root_cause(&e)
                ))
            }
            Err(_) => {
                return Err(format!(
                    "the decision point {what} did not answer within {}",
                    show(timeout)
                ))
            }
        };
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            format!("the decision point {what} answered {status} with no JSON: {e}")
        })?;
        if !status.is_success() {
            let error = value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            return Err(format!(
                "the decision point {what} refused the request ({status}): {error}"
            ));
        }
        Ok(value)
    }

    /// The key of `call`'s session among the outcome reports in flight.
    fn session_key(who: Asker<'_>, call: &ToolCall) -> String {
        format!(
            "{}\n{}",
            who.identity.agent,
            call.session.as_deref().unwrap_or_default()
        )
    }

    /// Waits (at most the decider timeout, as the reports do) for the outcome reports of
    /// `call`'s session still in flight.
    async fn settle_session(&self, who: Asker<'_>, call: &ToolCall) {
        let lock = self
            .in_flight
            .lock()
            .get(&Self::session_key(who, call))
            .cloned();
        if let Some(lock) = lock {
            if tokio::time::timeout(self.timeout, lock.write())
                .await
                .is_err()
            {
                tracing::warn!(call = %call.id, "deciding before an earlier outcome was reported");
            }
        }
    }

    async fn decide(&self, who: Asker<'_>, call: &ToolCall) -> Decision {
        self.settle_session(who, call).await;
        let body =
            json!({"id": call.id, "tool": call.tool, "args": call.args, "session": call.session});
        let req = self.request(reqwest::Method::POST, "/v1/decide", who, Some(body));
        let answer = self.exchange(req, self.timeout).await.and_then(|v| {
            serde_json::from_value::<Decision>(v).map_err(|e| {
                format!(
                    "the decision point {} answered something that is not a decision: {e}",
                    self.base
                )
            })
        });
        match answer {
            Ok(d) if d.decision == Verdict::RequireApproval && d.approval_id.is_none() => {
                unanswered(
                    call,
                    "the decision point held the call without an approval id".into(),
                )
            }
            Ok(d) => d,
            Err(reason) => {
                tracing::warn!(call = %call.id, %reason, "denied: no decision");
                unanswered(call, reason)
            }
        }
    }

    async fn wait(&self, who: Asker<'_>, approval_id: &str, timeout: Duration) -> Waited {
        let path = format!(
            "/v1/approvals/{}/wait?timeout={}ms",
            encode(approval_id),
            timeout.as_millis().max(1)
        );
        let req = self.request(reqwest::Method::GET, &path, who, None);
        match self.exchange(req, timeout + self.timeout).await {
            Ok(v) => match serde_json::from_value::<WaitAnswer>(v) {
                Ok(WaitAnswer {
                    outcome: Some(o), ..
                }) => Waited::Answered(o),
                Ok(WaitAnswer { status, .. }) if status == "pending" => Waited::Pending,
                Ok(WaitAnswer { status, .. }) => Waited::Lost(format!(
                    "the decision point answered the wait with status `{status}`"
                )),
                Err(e) => Waited::Lost(format!(
                    "the decision point answered the wait with something unexpected: {e}"
                )),
            },
            Err(reason) => Waited::Lost(reason),
        }
    }

    async fn hidden(
        &self,
        who: Asker<'_>,
        session: &str,
        tools: Vec<String>,
    ) -> Result<HashMap<String, String>, String> {
        #[derive(Deserialize)]
        struct Hidden {
            tool: String,
            reason: String,
        }
        #[derive(Deserialize)]
        struct Answer {
            hidden: Vec<Hidden>,
        }
        let body = json!({"tools": tools, "session": session});
        let req = self.request(reqwest::Method::POST, "/v1/tools/visible", who, Some(body));
        let answer = self.exchange(req, self.timeout).await?;
        let answer: Answer = serde_json::from_value(answer)
            .map_err(|e| format!("{} answered /v1/tools/visible with {e}", self.base))?;
        Ok(answer
            .hidden
            .into_iter()
            .map(|h| (h.tool, h.reason))
            .collect())
    }

    async fn cancel(&self, who: Asker<'_>, approval_id: &str) -> Result<(), CancelError> {
        let path = format!("/v1/approvals/{}/cancel", encode(approval_id));
        let req = self.request(reqwest::Method::POST, &path, who, Some(json!({})));
        self.exchange(req, self.timeout)
            .await
            .map(|_| ())
            .map_err(CancelError::Remote)
    }

    /// Reports the outcome in the background: the answer is already on its way to the client,
    /// and the catalog's data source was applied when the call was admitted.
    fn observe(&self, who: Asker<'_>, call: &ToolCall, result_text: &str) {
        let result = serde_json::from_str::<Value>(result_text)
            .ok()
            .and_then(|mut v| v.get_mut("result").map(Value::take));
        let body = json!({"call_id": call.id, "tool": call.tool, "session": call.session, "result": result});
        let req = self.request(reqwest::Method::POST, "/v1/outcomes", who, Some(body));
        let (timeout, call_id, base) = (self.timeout, call.id.clone(), self.base.clone());
        let lock = {
            let mut in_flight = self.in_flight.lock();
            // Sessions with no report in flight are forgotten (only the map holds their lock).
            in_flight.retain(|_, lock| Arc::strong_count(lock) > 1);
            Arc::clone(in_flight.entry(Self::session_key(who, call)).or_default())
        };
        // Taken before `observe` returns, so the session's next decision waits for the report.
        let held = Arc::clone(&lock).try_read_owned().ok();
        let send = async move {
            let _in_flight = match held {
                Some(guard) => guard,
                None => lock.read_owned().await,
            };
            let Ok(Ok(resp)) = tokio::time::timeout(timeout, req.send()).await else {
                tracing::warn!(call = %call_id, "outcome not reported: {base} did not answer");
                return;
            };
            if !resp.status().is_success() {
                tracing::warn!(call = %call_id, status = %resp.status(), "outcome not recorded by {base}");
            }
        };
        let mut reports = self.reports.lock();
        while reports.try_join_next().is_some() {}
        reports.spawn(send);
    }

    /// Waits (at most the decider timeout) for the outcome reports still on their way.
    async fn flush(&self) {
        let mut reports = std::mem::take(&mut *self.reports.lock());
        let drained = async { while reports.join_next().await.is_some() {} };
        if tokio::time::timeout(self.timeout, drained).await.is_err() {
            tracing::warn!("outcome reports to {} still unsent at shutdown", self.base);
        }
    }
}

/// The denial for a call no decider decided.
pub fn unanswered(call: &ToolCall, reason: String) -> Decision {
    let now = truststack_engine::engine::system_now();
    Decision::denied(
        &call.id,
        format!("unanswered-{now:x}"),
        reason,
        String::new(),
        now,
    )
}

/// The innermost cause of an HTTP error ("connection refused" rather than "error sending
/// request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn show(d: Duration) -> String {
    truststack_policy::duration::format_duration(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Percent-encodes a path component (every byte but RFC 3986's unreserved characters).
pub fn encode(s: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, RESERVED).to_string()
}
