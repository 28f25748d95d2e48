//! One client session: the proxy between one MCP client and its upstream servers.
//!
//! With one upstream the session is transparent: every message passes through as the text it
//! arrived as, ids untouched, except the two it acts on — `tools/call` (decided; denied and held
//! calls are answered by the gateway) and the `tools/list` result (tools the identity may never
//! call are removed). With several upstreams the session aggregates: the gateway answers
//! `initialize`, merges `tools/list`, `prompts/list` and `resources/list` with namespaced
//! names (`<upstream>__<name>`), routes each request to its upstream, and renumbers ids between
//! the client and each upstream so they cannot collide.
//!
//! Nothing here blocks: a held call waits in its own task, so other requests keep flowing.

use crate::decider::{Asker, Decider, Waited};
use crate::enforce;
use crate::identity::{CallerIdentity, IdentityResolver};
use crate::jsonrpc::{self, code, Kind, RawId, RawObject};
use crate::pinning;
use crate::upstream::{Link, UpEvent};
use crate::{Core, NAMESPACE_SEPARATOR};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use truststack_engine::{Decision, ToolCall, Verdict};
use truststack_server::telemetry::TraceHeaders;

/// The newest protocol revision the gateway speaks, which it asks for when it initializes an
/// upstream itself.
pub const LATEST_PROTOCOL_VERSION: &str = "2025-11-25";

/// Where a message for the client belongs (HTTP clients have one stream per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The answer to this client request: ends its stream.
    Response(RawId),
    /// Related to this client request (progress, a server request made while serving it).
    Related(RawId),
    /// Not related to any request.
    Unrelated,
}

/// The client side of a session.
pub trait ClientSink: Send + Sync + 'static {
    fn send(&self, text: String, route: Route);
}

/// Why a request was forwarded, i.e. what to do with its answer.
enum Purpose {
    Plain,
    Initialize,
    ToolsList,
    ToolsCall(Box<ToolCall>),
}

enum Inflight {
    /// A client request: answer the client (id `client_id`).
    Client { client_id: RawId, purpose: Purpose },
    /// A request the gateway made itself.
    Internal(oneshot::Sender<Result<String, (i64, String)>>),
    /// A request whose answer nobody needs (re-initializing a restarted server).
    Swallow,
}

/// A call waiting for an approver.
struct Held {
    wait: tokio::task::AbortHandle,
    approval_id: String,
}

/// A `tools/call` waiting for a remote decision (decided in the order the client sent them).
struct ToDecide {
    id: RawId,
    name: String,
    text: String,
    call: ToolCall,
    progress: Option<String>,
    /// The caller's W3C trace context (`params._meta`), which the decision's span continues.
    trace: TraceHeaders,
}

/// What every upstream answered to one request (see `Session::ask_every_upstream`).
#[derive(Default)]
struct Merged {
    answers: Vec<Value>,
    capabilities: serde_json::Map<String, Value>,
    instructions: Vec<String>,
    failures: Vec<String>,
}

/// Responses to a JSON-RPC batch, sent together when complete.
struct Batch {
    waiting: usize,
    first: RawId,
    responses: Vec<String>,
}

#[derive(Default)]
struct State {
    /// Requests sent upstream, by (upstream, id as the upstream saw it).
    inflight: HashMap<(usize, RawId), Inflight>,
    /// Held calls, by client id.
    held: HashMap<RawId, Held>,
    /// Progress tokens (as JSON text) of in-flight client requests.
    progress: HashMap<String, RawId>,
    /// How far the gateway's own progress notifications of a held call went, by token: the
    /// upstream's progress for the released call is shifted past it, so that progress on one
    /// token only increases, as the protocol requires.
    progress_offset: HashMap<String, f64>,
    /// Several upstreams: client request id → (upstream, upstream id).
    client_requests: HashMap<RawId, (usize, RawId)>,
    /// Several upstreams: server request id as the client sees it → (upstream, original id).
    server_requests: HashMap<RawId, (usize, RawId)>,
    /// The client's `initialize` request (one upstream) or its params (several).
    initialize: Option<String>,
    initialized: bool,
    protocol_version: Option<String>,
    restarts: HashMap<usize, u32>,
    /// Several upstreams: which upstream listed a resource URI.
    resource_owner: HashMap<String, usize>,
    batches: HashMap<RawId, Arc<Mutex<Batch>>>,
    /// Listed tools withheld because their definition is not the pinned one.
    pin_blocked: HashMap<String, pinning::Blocked>,
    /// Stateless revisions: the `_meta` of the client's last request (its revision and
    /// capabilities), which the gateway's own requests upstream carry too.
    request_meta: Option<Value>,
}

/// One client session.
pub struct Session {
    pub id: String,
    core: Arc<Core>,
    identity: CallerIdentity,
    links: Vec<Arc<Link>>,
    client: Arc<dyn ClientSink>,
    multi: bool,
    state: Mutex<State>,
    seq: AtomicU64,
    closed: AtomicBool,
    pump: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The credential the session began with, re-verified before every `tools/call` so that a
    /// revocation or an expiry takes effect on the next call.
    credential: std::sync::OnceLock<(Arc<dyn IdentityResolver>, String)>,
    /// Calls for a remote decider, decided one after the other in the order they arrived.
    to_decide: Mutex<Option<mpsc::UnboundedSender<ToDecide>>>,
    decide_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct CallParams {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
    /// MCP's request metadata; the caller's W3C trace context travels in it (`traceparent`,
    /// `tracestate`), over stdio and HTTP alike.
    #[serde(default, rename = "_meta")]
    meta: Option<CallMeta>,
}

#[derive(Deserialize, Default)]
struct CallMeta {
    #[serde(default)]
    traceparent: Option<String>,
    #[serde(default)]
    tracestate: Option<String>,
}

impl Session {
    /// Opens the session's upstream links and starts relaying their messages.
    pub fn start(
        core: Arc<Core>,
        identity: CallerIdentity,
        id: String,
        client: Arc<dyn ClientSink>,
    ) -> Arc<Session> {
        let (tx, rx) = mpsc::unbounded_channel();
        let links: Vec<Arc<Link>> = core
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                Arc::new(Link::open(
                    i,
                    u.clone(),
                    tx.clone(),
                    core.limits.max_message_bytes,
                    &core.http,
                ))
            })
            .collect();
        drop(tx);
        let multi = links.len() > 1;
        let session = Arc::new(Session {
            id,
            core,
            identity,
            links,
            client,
            multi,
            state: Mutex::new(State::default()),
            seq: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            pump: Mutex::new(None),
            credential: std::sync::OnceLock::new(),
            to_decide: Mutex::new(None),
            decide_task: Mutex::new(None),
        });
        let me = Arc::clone(&session);
        *session.pump.lock() = Some(tokio::spawn(me.pump(rx)));
        session
    }

    /// Re-verifies `credential` with `resolver` before every `tools/call` of this session.
    pub fn bind_credential(&self, resolver: Arc<dyn IdentityResolver>, credential: String) {
        let _ = self.credential.set((resolver, credential));
    }

    pub fn identity(&self) -> &CallerIdentity {
        &self.identity
    }

    /// Ends the session: held calls are withdrawn (refused and recorded by the decider, so no
    /// approver grants a call nobody waits for), upstreams closed.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(t) = self.decide_task.lock().take() {
            t.abort();
        }
        let held: Vec<Held> = self.state.lock().held.drain().map(|(_, h)| h).collect();
        for h in &held {
            h.wait.abort();
            self.withdraw(&h.approval_id, "the session ended").await;
        }
        for link in &self.links {
            link.close().await;
        }
        if let Some(p) = self.pump.lock().take() {
            p.abort();
        }
    }

    /// Waits (at most `timeout`) until no client request is pending or held.
    pub async fn drain(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            let busy = {
                let st = self.state.lock();
                !st.held.is_empty()
                    || st
                        .inflight
                        .values()
                        .any(|f| !matches!(f, Inflight::Swallow))
            };
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn decider(&self) -> &Decider {
        &self.core.decider
    }

    /// The caller, as the decider needs it.
    fn asker(&self) -> Asker<'_> {
        Asker {
            identity: &self.identity,
            credential: self.credential.get().map(|(_, c)| c.as_str()),
        }
    }

    /// Withdraws a held call at the decider; failing that, the call stays held there until its
    /// deadline refuses it (nothing here would forward it).
    async fn withdraw(&self, approval_id: &str, why: &str) {
        match self.decider().cancel(self.asker(), approval_id).await {
            Ok(()) => {
                tracing::info!(session = %self.id, approval = %approval_id, "held call withdrawn: {why}")
            }
            Err(e) => {
                tracing::warn!(session = %self.id, approval = %approval_id, error = %e, "held call not withdrawn ({why})")
            }
        }
    }

    /// The negotiated protocol version, once `initialize` was answered (or, in the stateless
    /// revisions, the one the client's last request named).
    pub fn protocol_version(&self) -> Option<String> {
        self.state.lock().protocol_version.clone()
    }

    /// Whether the session speaks a stateless revision (2026-07-28 on).
    fn stateless(&self) -> bool {
        self.state
            .lock()
            .protocol_version
            .as_deref()
            .is_some_and(jsonrpc::is_stateless)
    }

    /// A result the gateway answers itself, valid in the session's revision: from 2026-07-28
    /// every result says its `resultType`.
    fn own_result(&self, id: &RawId, mut result: Value) -> String {
        if let (true, Some(fields)) = (self.stateless(), result.as_object_mut()) {
            fields.insert("resultType".into(), Value::from("complete"));
        }
        jsonrpc::result_response(id, &result)
    }

    // ---------------------------------------------------------------- client → upstream

    /// Handles one message (or batch) from the client.
    pub fn on_client(self: &Arc<Self>, text: &str) {
        if jsonrpc::is_batch(text) {
            return self.on_client_batch(text);
        }
        match jsonrpc::parse(text) {
            Ok(m) => self.on_client_message(text, m),
            Err(inv) => {
                tracing::debug!(session = %self.id, error = %inv.message, "invalid message from the client");
                let route = inv.id.clone().map_or(Route::Unrelated, Route::Response);
                self.client.send(
                    jsonrpc::error_response(inv.id.as_ref(), inv.code, &inv.message),
                    route,
                );
            }
        }
    }

    /// Why this session refuses a JSON-RPC batch: batches exist in protocol version 2025-03-26
    /// only; later versions removed them.
    pub fn batch_refusal(&self) -> Option<String> {
        let version = self.protocol_version();
        (version.as_deref() != Some("2025-03-26")).then(|| {
            format!(
                "JSON-RPC batches are not part of MCP protocol version {}",
                version.as_deref().unwrap_or("(not negotiated yet)")
            )
        })
    }

    fn on_client_batch(self: &Arc<Self>, text: &str) {
        if let Some(message) = self.batch_refusal() {
            return self.client.send(
                jsonrpc::error_response(None, code::INVALID_REQUEST, &message),
                Route::Unrelated,
            );
        }
        let elements = match jsonrpc::batch_elements(text) {
            Ok(e) if !e.is_empty() => e,
            Ok(_) => {
                return self.client.send(
                    jsonrpc::error_response(None, code::INVALID_REQUEST, "an empty batch"),
                    Route::Unrelated,
                )
            }
            Err(inv) => {
                return self.client.send(
                    jsonrpc::error_response(None, inv.code, &inv.message),
                    Route::Unrelated,
                )
            }
        };
        let mut requests = Vec::new();
        let mut errors = Vec::new();
        let mut valid = Vec::new();
        for el in &elements {
            match jsonrpc::parse(el.get()) {
                Ok(m) => {
                    if let (Kind::Request, Some(id)) = (m.kind, &m.id) {
                        requests.push(id.clone());
                    }
                    valid.push((el.get(), m));
                }
                Err(inv) => errors.push(jsonrpc::error_response(
                    inv.id.as_ref(),
                    inv.code,
                    &inv.message,
                )),
            }
        }
        if let Some(first) = requests.first() {
            let batch = Arc::new(Mutex::new(Batch {
                waiting: requests.len(),
                first: first.clone(),
                responses: errors,
            }));
            let mut st = self.state.lock();
            for id in &requests {
                st.batches.insert(id.clone(), Arc::clone(&batch));
            }
        } else if !errors.is_empty() {
            self.client
                .send(format!("[{}]", errors.join(",")), Route::Unrelated);
        }
        for (text, m) in valid {
            self.on_client_message(text, m);
        }
    }

    fn on_client_message(self: &Arc<Self>, text: &str, m: jsonrpc::Message<'_>) {
        match (m.kind, m.id.clone()) {
            (Kind::Request, Some(id)) => self.on_client_request(text, id, &m),
            (Kind::Notification, _) => self.on_client_notification(text, &m),
            (Kind::Response, Some(id)) => self.on_client_response(text, id),
            _ => {}
        }
    }

    fn on_client_request(self: &Arc<Self>, text: &str, id: RawId, m: &jsonrpc::Message<'_>) {
        let method = m.method.as_deref().unwrap_or("");
        if let Some((version, meta)) = jsonrpc::request_version(text, m.params) {
            // Stateless revisions have no `initialize`: the request says which revision it
            // speaks (and what the client can do), the gateway's own answers follow it, and
            // its own requests upstream say the same.
            let mut st = self.state.lock();
            if st.protocol_version.as_deref() != Some(version.as_str()) {
                st.protocol_version = Some(version);
            }
            st.request_meta = Some(meta);
        }
        let progress = progress_token(m.params);
        match method {
            "tools/call" => return self.tools_call(text, id, m.params, progress),
            "tools/list" if !self.multi => {
                return self.forward_request(
                    0,
                    id,
                    Cow::Borrowed(text),
                    method,
                    Purpose::ToolsList,
                    progress,
                )
            }
            "initialize" if !self.multi => {
                self.state.lock().initialize = Some(text.to_string());
                return self.forward_request(
                    0,
                    id,
                    Cow::Borrowed(text),
                    method,
                    Purpose::Initialize,
                    progress,
                );
            }
            _ if !self.multi => {
                return self.forward_request(
                    0,
                    id,
                    Cow::Borrowed(text),
                    method,
                    Purpose::Plain,
                    progress,
                )
            }
            _ => {}
        }
        // Several upstreams.
        let params = m.params.map(|p| p.get().to_string());
        match method {
            "initialize" => {
                let me = Arc::clone(self);
                tokio::spawn(async move { me.multi_initialize(id, params).await });
            }
            "server/discover" => {
                let me = Arc::clone(self);
                tokio::spawn(async move { me.multi_discover(id, params).await });
            }
            "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" => {
                let me = Arc::clone(self);
                let method = method.to_string();
                tokio::spawn(async move { me.multi_list(id, &method, params).await });
            }
            "ping" => self.respond(&id, self.own_result(&id, json!({}))),
            "logging/setLevel" => {
                for up in 0..self.links.len() {
                    self.send_internal(up, "logging/setLevel", params.as_deref());
                }
                self.respond(&id, self.own_result(&id, json!({})));
            }
            "prompts/get" => self.route_by_name(text, id, method, m.params, progress),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let uri: Option<String> = jsonrpc::param(m.params, "uri");
                self.forward_to_resource_owner(uri.as_deref(), text, id, method, progress);
            }
            "completion/complete" => {
                let r: Option<Value> = jsonrpc::param(m.params, "ref");
                match r
                    .as_ref()
                    .and_then(|r| r.get("name"))
                    .and_then(Value::as_str)
                {
                    Some(name) => match self.split_name(name) {
                        Some((up, local)) => {
                            let mut r = r.clone().unwrap_or_default();
                            r["name"] = Value::from(local);
                            let text = edit_params(text, |p| p.set_json("ref", &r));
                            self.forward_request(
                                up,
                                id,
                                Cow::Owned(text),
                                method,
                                Purpose::Plain,
                                progress,
                            );
                        }
                        None => self.respond(
                            &id,
                            jsonrpc::error_response(
                                Some(&id),
                                code::INVALID_PARAMS,
                                &format!("unknown prompt `{name}`"),
                            ),
                        ),
                    },
                    None => {
                        let uri = r
                            .as_ref()
                            .and_then(|r| r.get("uri"))
                            .and_then(Value::as_str);
                        self.forward_to_resource_owner(uri, text, id, method, progress);
                    }
                }
            }
            _ => self.forward_request(0, id, Cow::Borrowed(text), method, Purpose::Plain, progress),
        }
    }

    fn on_client_notification(self: &Arc<Self>, text: &str, m: &jsonrpc::Message<'_>) {
        let method = m.method.as_deref().unwrap_or("");
        if method == "notifications/cancelled" {
            let target: Option<Box<RawValue>> = jsonrpc::param(m.params, "requestId");
            if let Some(target) = target.map(|r| RawId::from_raw(&r)) {
                let held = self.state.lock().held.remove(&target);
                if let Some(h) = held {
                    // A held call was never sent upstream; it ends here, unanswered, as the
                    // client asked, and is refused at the decider.
                    h.wait.abort();
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        me.withdraw(&h.approval_id, "the client cancelled it").await;
                    });
                    return;
                }
                if self.multi {
                    let routed = self.state.lock().client_requests.get(&target).cloned();
                    if let Some((up, upstream_id)) = routed {
                        let text = edit_params(text, |p| {
                            p.set("requestId", jsonrpc::raw(upstream_id.0.to_string()))
                        });
                        let _ = self.links.get(up).map(|l| l.send(text, None, Some(method)));
                    }
                    return;
                }
            }
        }
        if method == "notifications/initialized" {
            self.state.lock().initialized = true;
        }
        if self.multi {
            for link in &self.links {
                let _ = link.send(text.to_string(), None, Some(method));
            }
        } else if let Err(e) = self.links[0].send(text.to_string(), None, Some(method)) {
            tracing::debug!(session = %self.id, error = %e, "notification not delivered");
        }
    }

    fn on_client_response(self: &Arc<Self>, text: &str, id: RawId) {
        if !self.multi {
            let _ = self.links[0].send(text.to_string(), None, None);
            return;
        }
        let target = self.state.lock().server_requests.remove(&id);
        match target {
            Some((up, original)) => {
                if let (Some(link), Some(text)) =
                    (self.links.get(up), jsonrpc::with_id(text, &original))
                {
                    let _ = link.send(text, None, None);
                }
            }
            None => {
                tracing::debug!(session = %self.id, %id, "response to an unknown server request")
            }
        }
    }

    /// Several upstreams: a request naming a namespaced prompt goes to its upstream, renamed.
    fn route_by_name(
        self: &Arc<Self>,
        text: &str,
        id: RawId,
        method: &str,
        params: Option<&RawValue>,
        progress: Option<String>,
    ) {
        let name: Option<String> = jsonrpc::param(params, "name");
        match name.as_deref().and_then(|n| self.split_name(n)) {
            Some((up, local)) => {
                let text = edit_params(text, |p| p.set_json("name", &Value::from(local)));
                self.forward_request(up, id, Cow::Owned(text), method, Purpose::Plain, progress);
            }
            None => self.respond(
                &id,
                jsonrpc::error_response(
                    Some(&id),
                    code::INVALID_PARAMS,
                    &format!("unknown name `{}`", name.unwrap_or_default()),
                ),
            ),
        }
    }

    /// `fs__read_file` → (the `fs` upstream, `read_file`).
    fn split_name<'a>(&self, name: &'a str) -> Option<(usize, &'a str)> {
        let (ns, local) = name.split_once(NAMESPACE_SEPARATOR)?;
        let up = self.links.iter().position(|l| l.spec.name == ns)?;
        Some((up, local))
    }

    /// Sends a client request upstream and remembers what to do with its answer.
    fn forward_request(
        self: &Arc<Self>,
        up: usize,
        client_id: RawId,
        text: Cow<'_, str>,
        method: &str,
        purpose: Purpose,
        progress: Option<String>,
    ) {
        let upstream_id = if self.multi {
            RawId::number(self.next())
        } else {
            client_id.clone()
        };
        let text = if self.multi {
            jsonrpc::with_id(&text, &upstream_id).unwrap_or_else(|| text.into_owned())
        } else {
            text.into_owned()
        };
        {
            let mut st = self.state.lock();
            if let Some(p) = progress {
                st.progress.insert(p, client_id.clone());
            }
            if self.multi {
                st.client_requests
                    .insert(client_id.clone(), (up, upstream_id.clone()));
            }
            st.inflight.insert(
                (up, upstream_id.clone()),
                Inflight::Client { client_id, purpose },
            );
        }
        let sent = match self.links.get(up) {
            Some(link) => link.send(text, Some(upstream_id.clone()), Some(method)),
            None => Err("no such upstream".into()),
        };
        if let Err(reason) = sent {
            self.fail_inflight(up, &upstream_id, code::UPSTREAM_UNAVAILABLE, &reason);
        }
    }

    /// Sends the gateway's own request; the answer is discarded.
    fn send_internal(&self, up: usize, method: &str, params: Option<&str>) {
        let id = self.internal_id();
        self.state
            .lock()
            .inflight
            .insert((up, id.clone()), Inflight::Swallow);
        let params = params
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or(json!({}));
        if let Some(link) = self.links.get(up) {
            let _ = link.send(
                jsonrpc::request(&id, method, &params),
                Some(id),
                Some(method),
            );
        }
    }

    fn internal_id(&self) -> RawId {
        let n = self.next();
        if self.multi {
            RawId::number(n)
        } else {
            // One upstream keeps the client's ids; the gateway's own stay out of their way.
            RawId(format!("\"truststack-gateway-{n}\"").into())
        }
    }

    /// Makes a request of an upstream and waits for its result.
    async fn internal_request(
        &self,
        up: usize,
        method: &str,
        params: &Value,
    ) -> Result<Box<RawValue>, (i64, String)> {
        let id = self.internal_id();
        let mut params = params.clone();
        if let (Some(meta), Some(fields)) = (
            self.state.lock().request_meta.clone(),
            params.as_object_mut(),
        ) {
            fields.entry("_meta").or_insert(meta);
        }
        let params = &params;
        let (tx, rx) = oneshot::channel();
        self.state
            .lock()
            .inflight
            .insert((up, id.clone()), Inflight::Internal(tx));
        let link = self
            .links
            .get(up)
            .ok_or((code::INTERNAL_ERROR, "no such upstream".to_string()))?;
        if let Err(reason) = link.send(
            jsonrpc::request(&id, method, params),
            Some(id.clone()),
            Some(method),
        ) {
            self.state.lock().inflight.remove(&(up, id));
            return Err((code::UPSTREAM_UNAVAILABLE, reason));
        }
        let timeout = self.core.limits.internal_timeout.std();
        let text = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err((code::INTERNAL_ERROR, "request dropped".into())),
            Err(_) => {
                self.state.lock().inflight.remove(&(up, id));
                return Err((
                    code::UPSTREAM_UNAVAILABLE,
                    format!(
                        "upstream `{}` did not answer `{method}` in time",
                        link.spec.name
                    ),
                ));
            }
        };
        result_of(&text)
    }

    /// Forwards a request about a resource to the upstream that listed its URI (the first
    /// upstream when none did).
    fn forward_to_resource_owner(
        self: &Arc<Self>,
        uri: Option<&str>,
        text: &str,
        id: RawId,
        method: &str,
        progress: Option<String>,
    ) {
        let up = uri
            .and_then(|u| self.state.lock().resource_owner.get(u).copied())
            .unwrap_or(0);
        self.forward_request(
            up,
            id,
            Cow::Borrowed(text),
            method,
            Purpose::Plain,
            progress,
        );
    }

    // ---------------------------------------------------------------- tools/call

    fn tools_call(
        self: &Arc<Self>,
        text: &str,
        id: RawId,
        params: Option<&RawValue>,
        progress: Option<String>,
    ) {
        let parsed: Option<CallParams> = params.and_then(|p| serde_json::from_str(p.get()).ok());
        let Some(CallParams {
            name,
            arguments,
            meta,
        }) = parsed
        else {
            return self.respond(
                &id,
                jsonrpc::error_response(
                    Some(&id),
                    code::INVALID_PARAMS,
                    "tools/call needs `params.name`",
                ),
            );
        };
        if let Some((resolver, credential)) = self.credential.get() {
            if let Err(e) = resolver.resolve(Some(credential)) {
                let (message, meta) = enforce::credential_denial(&name, &e.to_string());
                return self.respond(
                    &id,
                    self.own_result(&id, jsonrpc::tool_error(&message, &meta)),
                );
            }
        }
        if let Some(blocked) = self.pin_blocked(&name) {
            let (message, meta) = blocked.denial(&name);
            return self.respond(
                &id,
                self.own_result(&id, jsonrpc::tool_error(&message, &meta)),
            );
        }
        let call = ToolCall {
            id: format!("{}#{}", self.id, id.display()),
            time: None,
            agent: self.identity.agent.clone(),
            session: Some(self.id.clone()),
            chain: self.identity.chain.clone(),
            tool: name.clone(),
            args: arguments.unwrap_or_else(|| json!({})),
        };
        let meta = meta.unwrap_or_default();
        let item = ToDecide {
            id,
            name,
            text: text.to_string(),
            call,
            progress,
            trace: TraceHeaders {
                traceparent: meta.traceparent,
                tracestate: meta.tracestate,
            },
        };
        if let Err(mpsc::error::SendError(item)) = self.decision_queue().send(item) {
            let decision = crate::decider::unanswered(&item.call, "the session is closing".into());
            self.decided(item, decision);
        }
    }

    /// The session's queue of calls to decide, started on first use: one task decides them in
    /// the order the client sent them (so a rate limit admits the first calls of a burst), and
    /// awaits each decision's durability or the decision point's answer without holding a
    /// worker thread, so the session keeps answering other requests meanwhile.
    fn decision_queue(self: &Arc<Self>) -> mpsc::UnboundedSender<ToDecide> {
        let mut slot = self.to_decide.lock();
        if let Some(tx) = slot.as_ref() {
            return tx.clone();
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<ToDecide>();
        let me = Arc::clone(self);
        let task = tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                let decision = me
                    .decider()
                    .decide(me.asker(), &item.call, &item.trace)
                    .await;
                me.decided(item, decision);
            }
        });
        *self.decide_task.lock() = Some(task);
        *slot = Some(tx.clone());
        tx
    }

    /// Acts on a decision: forwards an allowed call, answers a denied one, holds the rest.
    fn decided(self: &Arc<Self>, item: ToDecide, decision: Decision) {
        let ToDecide {
            id,
            name,
            text,
            call,
            progress,
            ..
        } = item;
        let text = text.as_str();
        // The upstream and the request it gets (renamed when namespaced).
        let (up, text) = if self.multi {
            match self.split_name(&name) {
                Some((up, local)) => (
                    up,
                    Cow::Owned(edit_params(text, |p| {
                        p.set_json("name", &Value::from(local))
                    })),
                ),
                None if decision.decision == Verdict::Deny => (usize::MAX, Cow::Borrowed(text)),
                None => {
                    return self.respond(
                        &id,
                        jsonrpc::error_response(
                            Some(&id),
                            code::INVALID_PARAMS,
                            &format!("unknown tool `{name}`"),
                        ),
                    )
                }
            }
        } else {
            (0, Cow::Borrowed(text))
        };
        tracing::debug!(session = %self.id, tool = %truststack_engine::log::clip(&name), decision = decision.decision.as_str(), "tools/call");
        match decision.decision {
            Verdict::Allow => {
                let call = Box::new(ToolCall { tool: name, ..call });
                self.forward_request(
                    up,
                    id,
                    text,
                    "tools/call",
                    Purpose::ToolsCall(call),
                    progress,
                );
            }
            Verdict::Deny => {
                let (message, meta) = enforce::denial(&name, &decision);
                self.respond(
                    &id,
                    self.own_result(&id, jsonrpc::tool_error(&message, &meta)),
                );
            }
            Verdict::RequireApproval => {
                let token: Option<Box<RawValue>> = progress
                    .as_deref()
                    .and_then(|p| RawValue::from_string(p.to_string()).ok());
                self.hold(up, id, text.into_owned(), call, decision, token, progress);
            }
        }
    }

    /// Waits for an approver without blocking anything else; sends progress while waiting.
    #[allow(clippy::too_many_arguments)]
    fn hold(
        self: &Arc<Self>,
        up: usize,
        id: RawId,
        text: String,
        call: ToolCall,
        decision: Decision,
        token: Option<Box<RawValue>>,
        progress: Option<String>,
    ) {
        let me = Arc::clone(self);
        let client_id = id.clone();
        let approval = decision.approval_id.clone().unwrap_or_default();
        let mut st = self.state.lock();
        let waited = approval.clone();
        let task = tokio::spawn(async move {
            let interval = me
                .core
                .limits
                .progress_interval
                .std()
                .max(Duration::from_millis(10));
            let note = enforce::held_message(&decision);
            let mut n = 0u64;
            if let Some(t) = &token {
                me.send_progress(&client_id, t, n, &note);
            }
            let outcome = loop {
                match me.decider().wait(me.asker(), &waited, interval).await {
                    Waited::Answered(o) => break Ok(o),
                    Waited::Lost(why) => break Err(why),
                    Waited::Pending => {}
                }
                n += 1;
                if let Some(t) = &token {
                    me.send_progress(&client_id, t, n, &note);
                }
            };
            me.state.lock().held.remove(&client_id);
            match outcome {
                Ok(o) if o.decision == Verdict::Allow => {
                    tracing::info!(session = %me.id, tool = %call.tool, approval = %o.approval_id, "held call released");
                    if let (Some(p), Some(_)) = (&progress, &token) {
                        // The last notification said `n`; the upstream's start at 0 or 1.
                        let offset = (n + 1) as f64;
                        me.state.lock().progress_offset.insert(p.clone(), offset);
                    }
                    let tool = call.tool.clone();
                    let purpose = Purpose::ToolsCall(Box::new(call));
                    if up == usize::MAX {
                        let msg = format!("unknown tool `{tool}`");
                        return me.respond(
                            &client_id,
                            jsonrpc::error_response(Some(&client_id), code::INVALID_PARAMS, &msg),
                        );
                    }
                    me.forward_request(
                        up,
                        client_id,
                        Cow::Owned(text),
                        "tools/call",
                        purpose,
                        progress,
                    );
                }
                Ok(o) => {
                    let (message, meta) = enforce::refusal(&call.tool, &decision, &o);
                    me.respond(
                        &client_id,
                        me.own_result(&client_id, jsonrpc::tool_error(&message, &meta)),
                    );
                }
                Err(why) => {
                    let mut lost = decision.clone();
                    lost.reason = format!("{}; {why}", decision.reason);
                    let (message, meta) = enforce::denial(&call.tool, &lost);
                    me.respond(
                        &client_id,
                        me.own_result(&client_id, jsonrpc::tool_error(&message, &meta)),
                    );
                }
            }
        });
        st.held.insert(
            id,
            Held {
                wait: task.abort_handle(),
                approval_id: approval,
            },
        );
    }

    fn send_progress(&self, id: &RawId, token: &RawValue, n: u64, message: &str) {
        let text = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progressToken\":{},\"progress\":{n},\"message\":{}}}}}",
            token.get(),
            Value::from(message)
        );
        self.client.send(text, Route::Related(id.clone()));
    }

    /// Sends the answer to a client request (collecting batch answers).
    fn respond(&self, id: &RawId, text: String) {
        let batch = {
            let mut st = self.state.lock();
            st.client_requests.remove(id);
            st.batches.remove(id)
        };
        match batch {
            None => self.client.send(text, Route::Response(id.clone())),
            Some(batch) => {
                let mut b = batch.lock();
                b.responses.push(text);
                b.waiting = b.waiting.saturating_sub(1);
                if b.waiting == 0 {
                    let all = format!("[{}]", b.responses.join(","));
                    self.client.send(all, Route::Response(b.first.clone()));
                }
            }
        }
    }

    // ---------------------------------------------------------------- upstream → client

    async fn pump(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<UpEvent>) {
        while let Some(ev) = rx.recv().await {
            match ev {
                UpEvent::Message {
                    upstream,
                    text,
                    via,
                } => self.on_upstream(upstream, &text, via),
                UpEvent::Oversized {
                    upstream,
                    prefix,
                    len,
                    via,
                } => {
                    let max = self.core.limits.max_message_bytes;
                    let message = format!(
                        "the upstream's message of {len} bytes exceeds the gateway's limit of {max} bytes"
                    );
                    tracing::warn!(session = %self.id, upstream, "{message}");
                    let id = jsonrpc::sniff_id(&prefix).filter(|id| {
                        self.state
                            .lock()
                            .inflight
                            .contains_key(&(upstream, id.clone()))
                    });
                    match id.or(via) {
                        Some(id) => self.fail_inflight(upstream, &id, code::INTERNAL_ERROR, &message),
                        None => self.client.send(
                            jsonrpc::notification(
                                "notifications/message",
                                &json!({"level": "error", "logger": "truststack-gateway", "data": message}),
                            ),
                            Route::Unrelated,
                        ),
                    }
                }
                UpEvent::Failed {
                    upstream,
                    id,
                    code,
                    message,
                } => self.fail_inflight(upstream, &id, code, &message),
                UpEvent::Closed {
                    upstream,
                    generation,
                    reason,
                } => {
                    let me = Arc::clone(&self);
                    me.upstream_closed(upstream, generation, reason).await;
                }
            }
        }
    }

    fn on_upstream(self: &Arc<Self>, up: usize, text: &str, via: Option<RawId>) {
        if jsonrpc::is_batch(text) {
            match jsonrpc::batch_elements(text) {
                Ok(elements) => {
                    for el in elements {
                        self.on_upstream(up, el.get(), via.clone());
                    }
                }
                Err(inv) => self.upstream_invalid(up, inv),
            }
            return;
        }
        let m = match jsonrpc::parse(text) {
            Ok(m) => m,
            Err(inv) => return self.upstream_invalid(up, inv),
        };
        match (m.kind, m.id.clone()) {
            (Kind::Response, Some(id)) => {
                self.on_upstream_response(up, id, text, m.error.is_some())
            }
            (Kind::Request, Some(id)) => {
                let route = via.map_or(Route::Unrelated, Route::Related);
                if self.multi {
                    let gid =
                        RawId(format!("\"{}-{}\"", self.links[up].spec.name, self.next()).into());
                    self.state
                        .lock()
                        .server_requests
                        .insert(gid.clone(), (up, id));
                    if let Some(text) = jsonrpc::with_id(text, &gid) {
                        self.client.send(text, route);
                    }
                } else {
                    self.client.send(text.to_string(), route);
                }
            }
            (Kind::Notification, _) => {
                let method = m.method.as_deref().unwrap_or("");
                let mut route = via.map_or(Route::Unrelated, Route::Related);
                if method == "notifications/progress" {
                    let token: Option<Box<RawValue>> = jsonrpc::param(m.params, "progressToken");
                    let (client_id, offset) = token.map_or((None, None), |t| {
                        let st = self.state.lock();
                        let key = t.get().trim();
                        (
                            st.progress.get(key).cloned(),
                            st.progress_offset.get(key).copied(),
                        )
                    });
                    if let Some(client_id) = client_id {
                        route = Route::Related(client_id);
                    }
                    if let Some(offset) = offset {
                        return self.client.send(shift_progress(text, offset), route);
                    }
                }
                if self.multi && method == "notifications/cancelled" {
                    // The server withdrew one of its own requests: name it as the client knows it.
                    let target: Option<Box<RawValue>> = jsonrpc::param(m.params, "requestId");
                    let known = target.and_then(|t| {
                        let t = RawId::from_raw(&t);
                        let st = self.state.lock();
                        st.server_requests
                            .iter()
                            .find(|(_, (u, orig))| *u == up && *orig == t)
                            .map(|(gid, _)| gid.clone())
                    });
                    if let Some(gid) = known {
                        let text = edit_params(text, |p| {
                            p.set("requestId", jsonrpc::raw(gid.0.to_string()))
                        });
                        return self.client.send(text, route);
                    }
                }
                self.client.send(text.to_string(), route);
            }
            _ => {}
        }
    }

    fn upstream_invalid(&self, up: usize, inv: jsonrpc::Invalid) {
        let name = self
            .links
            .get(up)
            .map(|l| l.spec.name.clone())
            .unwrap_or_default();
        tracing::warn!(session = %self.id, upstream = %name, error = %inv.message, "invalid message from the upstream");
        let pending = inv
            .id
            .clone()
            .filter(|id| self.state.lock().inflight.contains_key(&(up, id.clone())));
        match pending {
            Some(id) => {
                let message = format!("upstream `{name}` sent an invalid answer: {}", inv.message);
                self.fail_inflight(up, &id, code::INTERNAL_ERROR, &message);
            }
            None => {
                // Tell the server, as JSON-RPC asks of a receiver.
                if let Some(link) = self.links.get(up) {
                    if link.is_stdio() {
                        let _ = link.send(
                            jsonrpc::error_response(inv.id.as_ref(), inv.code, &inv.message),
                            None,
                            None,
                        );
                    }
                }
            }
        }
    }

    fn on_upstream_response(self: &Arc<Self>, up: usize, id: RawId, text: &str, is_error: bool) {
        let entry = self.state.lock().inflight.remove(&(up, id.clone()));
        let Some(entry) = entry else {
            tracing::debug!(session = %self.id, %id, "response to no pending request");
            return;
        };
        let (client_id, purpose) = match entry {
            Inflight::Internal(tx) => {
                let _ = tx.send(Ok(text.to_string()));
                return;
            }
            Inflight::Swallow => return,
            Inflight::Client { client_id, purpose } => (client_id, purpose),
        };
        let text: Cow<str> = if self.multi {
            jsonrpc::with_id(text, &client_id).map_or(Cow::Borrowed(text), Cow::Owned)
        } else {
            Cow::Borrowed(text)
        };
        {
            let mut st = self.state.lock();
            let State {
                progress,
                progress_offset,
                ..
            } = &mut *st;
            progress.retain(|_, v| *v != client_id);
            progress_offset.retain(|token, _| progress.contains_key(token));
        }
        match purpose {
            Purpose::Plain => self.respond(&client_id, text.into_owned()),
            Purpose::Initialize => {
                let version = result_of(&text)
                    .ok()
                    .and_then(|r| serde_json::from_str::<Value>(r.get()).ok())
                    .and_then(|r| {
                        r.get("protocolVersion")
                            .and_then(Value::as_str)
                            .map(String::from)
                    });
                if let Some(v) = version {
                    self.links.iter().for_each(|l| l.set_protocol_version(&v));
                    self.state.lock().protocol_version = Some(v);
                }
                self.respond(&client_id, text.into_owned());
            }
            Purpose::ToolsList => {
                let (me, text) = (Arc::clone(self), text.into_owned());
                tokio::spawn(async move {
                    let answer = me.filter_tools_response(&client_id, text).await;
                    me.respond(&client_id, answer);
                });
            }
            Purpose::ToolsCall(call) => {
                // The result's taint and values apply before the client sees the result, so
                // the client's next call is decided knowing them.
                if !is_error {
                    self.decider().observe(self.asker(), &call, &text);
                }
                self.respond(&client_id, text.into_owned());
            }
        }
    }

    /// Answers a pending request with an error (the upstream failed it or is gone).
    fn fail_inflight(&self, up: usize, id: &RawId, code: i64, message: &str) {
        let entry = self.state.lock().inflight.remove(&(up, id.clone()));
        match entry {
            Some(Inflight::Client { client_id, .. }) => {
                self.respond(
                    &client_id,
                    jsonrpc::error_response(Some(&client_id), code, message),
                );
            }
            Some(Inflight::Internal(tx)) => {
                let _ = tx.send(Err((code, message.to_string())));
            }
            Some(Inflight::Swallow) | None => {}
        }
    }

    /// An upstream went away: its pending requests fail; a stdio server is restarted (and
    /// re-initialized with the client's `initialize`) up to the configured number of times.
    async fn upstream_closed(self: Arc<Self>, up: usize, generation: u64, reason: String) {
        let Some(link) = self.links.get(up).cloned() else {
            return;
        };
        if generation != link.generation() || self.closed.load(Ordering::SeqCst) {
            return;
        }
        let pending: Vec<RawId> = {
            let st = self.state.lock();
            st.inflight
                .keys()
                .filter(|(u, _)| *u == up)
                .map(|(_, id)| id.clone())
                .collect()
        };
        let message = format!("{reason} before answering");
        for id in &pending {
            self.fail_inflight(up, id, code::UPSTREAM_UNAVAILABLE, &message);
        }
        let (restarts, init, initialized) = {
            let mut st = self.state.lock();
            st.server_requests.retain(|_, (u, _)| *u != up);
            let n = st.restarts.entry(up).or_insert(0);
            *n += 1;
            (*n, st.initialize.clone(), st.initialized)
        };
        let max = self.core.limits.max_restarts;
        if restarts > max {
            let why = format!(
                "{reason}; not restarted (restarted {} times already)",
                restarts.saturating_sub(1)
            );
            tracing::error!(session = %self.id, upstream = %link.spec.name, "{why}");
            link.mark_down(why.clone());
            self.client.send(
                jsonrpc::notification(
                    "notifications/message",
                    &json!({"level": "error", "logger": "truststack-gateway", "data": why}),
                ),
                Route::Unrelated,
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100 * u64::from(restarts))).await;
        if let Err(e) = link.restart() {
            link.mark_down(e.clone());
            tracing::error!(session = %self.id, "{e}");
            return;
        }
        tracing::warn!(session = %self.id, upstream = %link.spec.name, restart = restarts, "upstream restarted");
        if let Some(init) = init {
            // Replay the client's initialize so the new server is in the same protocol state.
            let id = self.internal_id();
            let request = if self.multi {
                let params: Value = serde_json::from_str(&init).unwrap_or(json!({}));
                jsonrpc::request(&id, "initialize", &params)
            } else {
                jsonrpc::with_id(&init, &id).unwrap_or(init)
            };
            self.state
                .lock()
                .inflight
                .insert((up, id.clone()), Inflight::Swallow);
            let _ = link.send(request, Some(id), Some("initialize"));
            if initialized {
                let _ = link.send(
                    jsonrpc::notification("notifications/initialized", &json!({})),
                    None,
                    Some("notifications/initialized"),
                );
            }
        }
        let what = if link.is_stdio() {
            "restarted it"
        } else {
            "opened a new session"
        };
        let note =
            format!("{reason}; {what} (restart {restarts} of {max}): its session state was reset");
        self.client.send(
            jsonrpc::notification(
                "notifications/message",
                &json!({"level": "warning", "logger": "truststack-gateway", "data": note}),
            ),
            Route::Unrelated,
        );
    }

    // ---------------------------------------------------------------- tools/list

    /// One upstream: removes the tools the identity may never call from a `tools/list` answer,
    /// leaving every other byte as it was. When the decider cannot say which, the client gets
    /// an error rather than a list nobody checked.
    async fn filter_tools_response(&self, client_id: &RawId, text: String) -> String {
        let Some((mut msg, mut result, tools)) = tools_of(&text) else {
            return text;
        };
        let names: Vec<String> = tools
            .iter()
            .filter_map(|t| serde_json::from_str::<Named>(t.get()).ok().map(|n| n.name))
            .collect();
        let unpinned = self.review_pins(tools.iter().map(|t| t.get())).await;
        let mut hidden = match self.hidden(names).await {
            Ok(h) => h,
            Err(e) => return self.tools_list_error(client_id, &e),
        };
        hidden.extend(unpinned);
        // What a caller may see depends on who it is: no cache may share the list across
        // authorization contexts (stateless revisions say so in `cacheScope`).
        let shared = self.stateless()
            && result.get("cacheScope").map(|c| c.get().trim()) != Some("\"private\"");
        if hidden.is_empty() && !shared {
            return text;
        }
        let kept: Vec<Box<RawValue>> = tools
            .into_iter()
            .filter(|t| {
                serde_json::from_str::<Named>(t.get()).map_or(true, |n| !hidden.contains(&n.name))
            })
            .collect();
        result.set("tools", jsonrpc::raw(join_raw(&kept)));
        if shared {
            result.set_json("cacheScope", &Value::from("private"));
        }
        msg.set("result", result.into_raw());
        msg.to_text()
    }

    /// Checks listed tools against their pins: returns the names withheld, remembers them
    /// for `tools/call`, and records the changes.
    async fn review_pins<'a>(&self, tools: impl IntoIterator<Item = &'a str>) -> HashSet<String> {
        let pins = &self.core.pins;
        if !pins.enabled() {
            return HashSet::new();
        }
        let review = pins.review(&self.id, tools);
        let mut withheld = HashSet::new();
        {
            let mut st = self.state.lock();
            for (name, blocked) in review.verdicts {
                match blocked {
                    Some(b) => {
                        withheld.insert(name.clone());
                        st.pin_blocked.insert(name, b);
                    }
                    None => {
                        st.pin_blocked.remove(&name);
                    }
                }
            }
        }
        pins.record(review.records).await;
        withheld
    }

    /// Why a call to `tool` is refused by pinning, if it is.
    fn pin_blocked(&self, tool: &str) -> Option<pinning::Blocked> {
        if !self.core.pins.enabled() {
            return None;
        }
        let listed = self.state.lock().pin_blocked.get(tool).cloned();
        listed.or_else(|| self.core.pins.unlisted(tool))
    }

    /// The tools among `names` this identity may never call.
    async fn hidden(&self, names: Vec<String>) -> Result<HashSet<String>, String> {
        let hidden = self.decider().hidden(self.asker(), &self.id, names).await?;
        for (tool, why) in &hidden {
            tracing::debug!(session = %self.id, %tool, %why, "hidden from tools/list");
        }
        Ok(hidden.into_keys().collect())
    }

    fn tools_list_error(&self, client_id: &RawId, why: &str) -> String {
        let message = format!("no tools listed: the decision point could not say which: {why}");
        tracing::warn!(session = %self.id, "{message}");
        jsonrpc::error_response(Some(client_id), code::INTERNAL_ERROR, &message)
    }

    // ---------------------------------------------------------------- several upstreams

    /// Sends `method` to every upstream at once: their answers, their capabilities merged,
    /// their instructions each under its upstream's name, and the failures.
    async fn ask_every_upstream(&self, method: &str, params: &Value) -> Merged {
        let results = futures_util::future::join_all(
            (0..self.links.len()).map(|up| self.internal_request(up, method, params)),
        )
        .await;
        let mut merged = Merged::default();
        for (up, r) in results.into_iter().enumerate() {
            let name = &self.links[up].spec.name;
            match r.map(|raw| serde_json::from_str::<Value>(raw.get()).unwrap_or_default()) {
                Ok(v) => {
                    if let Some(Value::Object(caps)) = v.get("capabilities") {
                        merge_capabilities(&mut merged.capabilities, caps);
                    }
                    if let Some(i) = v.get("instructions").and_then(Value::as_str) {
                        merged.instructions.push(format!("[{name}] {i}"));
                    }
                    merged.answers.push(v);
                }
                Err((_, message)) => merged.failures.push(format!("{name}: {message}")),
            }
        }
        merged
    }

    async fn multi_initialize(self: Arc<Self>, id: RawId, params: Option<String>) {
        let params_value: Value = params
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or(json!({}));
        self.state.lock().initialize = Some(params_value.to_string());
        let wanted = params_value
            .get("protocolVersion")
            .and_then(Value::as_str)
            .map(String::from);
        let merged = self.ask_every_upstream("initialize", &params_value).await;
        let versions: Vec<String> = merged
            .answers
            .iter()
            .filter_map(|v| v.get("protocolVersion").and_then(Value::as_str))
            .map(String::from)
            .collect();
        let Merged {
            capabilities,
            instructions,
            failures,
            ..
        } = merged;
        if versions.is_empty() {
            let message = format!("no upstream could be initialized ({})", failures.join("; "));
            return self.respond(
                &id,
                jsonrpc::error_response(Some(&id), code::UPSTREAM_UNAVAILABLE, &message),
            );
        }
        for f in &failures {
            tracing::error!(session = %self.id, "upstream not initialized: {f}");
        }
        let version = match &wanted {
            Some(w) if versions.iter().all(|v| v == w) => w.clone(),
            _ => versions.iter().min().cloned().unwrap_or_default(),
        };
        for l in &self.links {
            l.set_protocol_version(&version);
        }
        self.state.lock().protocol_version = Some(version.clone());
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": capabilities,
            "serverInfo": {"name": "truststack-gateway", "version": env!("CARGO_PKG_VERSION")},
        });
        if !instructions.is_empty() {
            result["instructions"] = Value::from(instructions.join("\n\n"));
        }
        self.respond(&id, self.own_result(&id, result));
    }

    /// Several upstreams, stateless revisions: the gateway's own `server/discover`, from every
    /// upstream's: the revisions all of them support, their merged capabilities and
    /// instructions.
    async fn multi_discover(self: Arc<Self>, id: RawId, params: Option<String>) {
        let params: Value = params
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or(json!({}));
        let merged = self.ask_every_upstream("server/discover", &params).await;
        // The revisions every upstream that answered supports.
        let mut versions: Option<Vec<String>> = None;
        for v in &merged.answers {
            let theirs: Vec<String> = v
                .get("supportedVersions")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default();
            versions = Some(match versions {
                None => theirs,
                Some(ours) => ours.into_iter().filter(|v| theirs.contains(v)).collect(),
            });
        }
        let Merged {
            capabilities,
            instructions,
            failures,
            ..
        } = merged;
        let Some(versions) = versions else {
            let message = format!(
                "no upstream answered server/discover ({})",
                failures.join("; ")
            );
            return self.respond(
                &id,
                jsonrpc::error_response(Some(&id), code::UPSTREAM_UNAVAILABLE, &message),
            );
        };
        for f in &failures {
            tracing::error!(session = %self.id, "upstream not discovered: {f}");
        }
        let mut result = json!({
            "supportedVersions": versions,
            "capabilities": capabilities,
            "ttlMs": 0,
            "cacheScope": "private",
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "truststack-gateway", "version": env!("CARGO_PKG_VERSION")}},
        });
        if !instructions.is_empty() {
            result["instructions"] = Value::from(instructions.join("\n\n"));
        }
        // `server/discover` exists in the stateless revisions only.
        result["resultType"] = Value::from("complete");
        self.respond(&id, jsonrpc::result_response(&id, &result));
    }

    /// Every page of a list method (`key`: the result's list) of one upstream: the items,
    /// whether any page came, and the error that ended the listing, if one did.
    async fn list_pages(
        &self,
        up: usize,
        method: &str,
        key: &str,
    ) -> (Vec<Box<RawValue>>, bool, Option<(i64, String)>) {
        let mut items = Vec::new();
        let mut answered = false;
        let mut cursor: Option<String> = None;
        for _page in 0..1000 {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let result = match self.internal_request(up, method, &params).await {
                Ok(r) => r,
                Err(e) => return (items, answered, Some(e)),
            };
            answered = true;
            let Ok(obj) = RawObject::parse(result.get()) else {
                break;
            };
            let list: Vec<Box<RawValue>> = obj
                .get(key)
                .and_then(|l| serde_json::from_str(l.get()).ok())
                .unwrap_or_default();
            items.extend(list);
            cursor = obj
                .get("nextCursor")
                .and_then(|c| serde_json::from_str::<Option<String>>(c.get()).ok())
                .flatten();
            if cursor.is_none() {
                break;
            }
        }
        (items, answered, None)
    }

    /// A tool or prompt of upstream `up` under its namespaced name (`None`: it has no name).
    fn namespaced(&self, up: usize, item: &RawValue) -> Option<(String, Box<RawValue>)> {
        let mut o = RawObject::parse(item.get()).ok()?;
        let name = o
            .get("name")
            .and_then(|n| serde_json::from_str::<String>(n.get()).ok())?;
        let full = format!("{}{NAMESPACE_SEPARATOR}{name}", self.links[up].spec.name);
        o.set_json("name", &Value::from(full.clone()));
        Some((full, o.into_raw()))
    }

    /// Initializes every upstream and lists all their tools, as a client of this session would
    /// see them before any filtering (namespaced with several upstreams): what
    /// `truststack gateway pin` pins.
    pub async fn upstream_tools(&self) -> Result<Vec<Box<RawValue>>, String> {
        let params = json!({
            "protocolVersion": LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "truststack-gateway-pin", "version": env!("CARGO_PKG_VERSION")},
        });
        let mut tools = Vec::new();
        for (up, link) in self.links.iter().enumerate() {
            let name = &link.spec.name;
            let init = self
                .internal_request(up, "initialize", &params)
                .await
                .map_err(|(_, m)| format!("upstream `{name}`: initialize: {m}"))?;
            if let Some(v) = serde_json::from_str::<Value>(init.get())
                .ok()
                .and_then(|r| {
                    r.get("protocolVersion")
                        .and_then(Value::as_str)
                        .map(String::from)
                })
            {
                link.set_protocol_version(&v);
            }
            link.send(
                jsonrpc::notification("notifications/initialized", &json!({})),
                None,
                Some("notifications/initialized"),
            )
            .map_err(|e| format!("upstream `{name}`: {e}"))?;
            let (list, _, error) = self.list_pages(up, "tools/list", "tools").await;
            if let Some((_, m)) = error {
                return Err(format!("upstream `{name}`: tools/list: {m}"));
            }
            for item in list {
                if !self.multi {
                    tools.push(item);
                } else if let Some((_, item)) = self.namespaced(up, &item) {
                    tools.push(item);
                }
            }
        }
        Ok(tools)
    }

    /// Merges a list method over every upstream, all pages, namespacing tool and prompt names.
    async fn multi_list(self: Arc<Self>, id: RawId, method: &str, params: Option<String>) {
        let cursor: Option<String> = params
            .as_deref()
            .and_then(|p| serde_json::from_str::<Value>(p).ok())
            .and_then(|p| p.get("cursor").and_then(Value::as_str).map(String::from));
        if cursor.is_some() {
            let message = "invalid cursor: the gateway returns the merged list in one page";
            return self.respond(
                &id,
                jsonrpc::error_response(Some(&id), code::INVALID_PARAMS, message),
            );
        }
        let key = match method {
            "tools/list" => "tools",
            "prompts/list" => "prompts",
            "resources/list" => "resources",
            _ => "resourceTemplates",
        };
        let rename = matches!(method, "tools/list" | "prompts/list");
        let mut items: Vec<Box<RawValue>> = Vec::new();
        // The namespaced name of each renamed item, in step with `items`.
        let mut names: Vec<String> = Vec::new();
        let mut answered = false;
        let mut last_error = None;
        for up in 0..self.links.len() {
            let (list, any, error) = self.list_pages(up, method, key).await;
            answered |= any;
            if error.is_some() {
                last_error = error;
            }
            for item in list {
                if !rename {
                    if key == "resources" {
                        if let Ok(v) = serde_json::from_str::<Value>(item.get()) {
                            if let Some(uri) = v.get("uri").and_then(Value::as_str) {
                                self.state.lock().resource_owner.insert(uri.to_string(), up);
                            }
                        }
                    }
                    items.push(item);
                    continue;
                }
                if let Some((full, item)) = self.namespaced(up, &item) {
                    names.push(full);
                    items.push(item);
                }
            }
        }
        if !answered {
            if let Some((c, m)) = last_error {
                return self.respond(&id, jsonrpc::error_response(Some(&id), c, &m));
            }
        }
        if key == "tools" {
            let unpinned = self.review_pins(items.iter().map(|t| t.get())).await;
            let mut hidden = match self.hidden(names.clone()).await {
                Ok(h) => h,
                Err(e) => return self.respond(&id, self.tools_list_error(&id, &e)),
            };
            hidden.extend(unpinned);
            items = items
                .into_iter()
                .zip(&names)
                .filter(|(_, name)| !hidden.contains(*name))
                .map(|(item, _)| item)
                .collect();
        }
        let mut result = RawObject::default();
        result.set(key, jsonrpc::raw(join_raw(&items)));
        if self.stateless() {
            // Merged and filtered for this caller: fresh each time, never shared.
            result.set_json("resultType", &Value::from("complete"));
            result.set_json("ttlMs", &json!(0));
            result.set_json("cacheScope", &Value::from("private"));
        }
        self.respond(
            &id,
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{}}}",
                id.0,
                result.to_text()
            ),
        );
    }
}

/// A `tools/list` answer split into the message, its result and the result's tools.
fn tools_of(text: &str) -> Option<(RawObject, RawObject, Vec<Box<RawValue>>)> {
    let msg = RawObject::parse(text).ok()?;
    let result = RawObject::parse(msg.get("result")?.get()).ok()?;
    let tools = serde_json::from_str(result.get("tools")?.get()).ok()?;
    Some((msg, result, tools))
}

/// `[a,b,c]` from raw values.
fn join_raw(items: &[Box<RawValue>]) -> String {
    let mut s = String::from("[");
    for (i, t) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(t.get());
    }
    s.push(']');
    s
}

/// The result of a response text, or its error.
fn result_of(text: &str) -> Result<Box<RawValue>, (i64, String)> {
    let obj = RawObject::parse(text).map_err(|e| (code::INTERNAL_ERROR, e.to_string()))?;
    if let Some(err) = obj.get("error") {
        let v: Value = serde_json::from_str(err.get()).unwrap_or_default();
        return Err((
            v.get("code")
                .and_then(Value::as_i64)
                .unwrap_or(code::INTERNAL_ERROR),
            v.get("message")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_string(),
        ));
    }
    obj.get("result").map(|r| r.to_owned()).ok_or((
        code::INTERNAL_ERROR,
        "a response without result".to_string(),
    ))
}

/// `params._meta.progressToken` as JSON text.
fn progress_token(params: Option<&RawValue>) -> Option<String> {
    let p = params?;
    if !p.get().contains("progressToken") {
        return None;
    }
    let meta: Value = jsonrpc::param(Some(p), "_meta")?;
    meta.get("progressToken").map(Value::to_string)
}

/// Edits the `params` object of a message, keeping everything else verbatim.
/// A `notifications/progress` with `progress` (and `total`, when given) raised by `offset`.
fn shift_progress(text: &str, offset: f64) -> String {
    edit_params(text, |p| {
        for field in ["progress", "total"] {
            let value = p
                .get(field)
                .and_then(|v| serde_json::from_str::<f64>(v.get()).ok());
            if let Some(v) = value {
                let shifted = v + offset;
                // Whole numbers stay integers (`5`, not `5.0`), as the upstream wrote them.
                let shifted = if shifted.fract() == 0.0 && shifted.abs() < 9.0e15 {
                    json!(shifted as i64)
                } else {
                    json!(shifted)
                };
                p.set_json(field, &shifted);
            }
        }
    })
}

fn edit_params(text: &str, edit: impl FnOnce(&mut RawObject)) -> String {
    let Ok(mut msg) = RawObject::parse(text) else {
        return text.to_string();
    };
    let mut params = msg
        .get("params")
        .and_then(|p| RawObject::parse(p.get()).ok())
        .unwrap_or_default();
    edit(&mut params);
    msg.set("params", params.into_raw());
    msg.to_text()
}

/// Unions server capabilities (`{"tools": {"listChanged": true}}`, ...).
fn merge_capabilities(
    into: &mut serde_json::Map<String, Value>,
    from: &serde_json::Map<String, Value>,
) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => {
                for (bk, bv) in b {
                    let merged = match (a.get(bk), bv) {
                        (Some(Value::Bool(x)), Value::Bool(y)) => Value::Bool(*x || *y),
                        (Some(existing), _) => existing.clone(),
                        (None, _) => bv.clone(),
                    };
                    a.insert(bk.clone(), merged);
                }
            }
            (Some(_), _) => {}
            (None, _) => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}
