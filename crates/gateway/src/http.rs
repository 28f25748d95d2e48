//! The Streamable HTTP transport toward clients (MCP 2025-11-25): one endpoint, `/mcp`.
//!
//! - `POST /mcp` carries one message (or, in protocol version 2025-03-26, a batch). A request
//!   is answered on an SSE stream that carries the messages related to it (progress, server
//!   requests made while serving it) and ends with its response; a client that does not accept
//!   `text/event-stream` gets `application/json` instead. Notifications and responses get
//!   `202 Accepted`.
//! - The gateway assigns `Mcp-Session-Id` on the `initialize` answer; each session has its own
//!   upstream connections (its own child process for a stdio upstream). A request of a
//!   stateless revision (2026-07-28: no `initialize`, the revision in `params._meta`) without
//!   a session gets one of its own, which ends once it is answered.
//! - `GET /mcp` opens the session's stream for messages unrelated to a request (one at a time;
//!   what arrives while none is open is kept, up to a bound, for the next one).
//! - `DELETE /mcp` ends the session.
//! - `Authorization: Bearer <token>` is resolved to the caller's identity; a session stays bound
//!   to the credential that opened it. `Origin`, when present, must be allowed.
//!
//! With an embedded engine, its approvals API (`/v1/approvals…`, as the server's) is served on
//! the same listener.

use crate::jsonrpc::{self, code, Kind, RawId};
use crate::session::{ClientSink, Route, Session};
use crate::{approvals, framing, Gateway, GatewayError};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use truststack_server::{auth::bearer, no_delay};

/// Messages kept for a GET stream that is not open yet.
const BACKLOG: usize = 1000;

struct PostStream {
    tx: mpsc::UnboundedSender<Bytes>,
    ids: Vec<RawId>,
    sse: bool,
}

#[derive(Default)]
struct Streams {
    post: HashMap<RawId, Arc<PostStream>>,
    get: Option<mpsc::UnboundedSender<Bytes>>,
    backlog: VecDeque<String>,
}

/// Routes a session's messages to the client's HTTP streams.
#[derive(Default)]
struct HttpSink {
    streams: Mutex<Streams>,
}

impl HttpSink {
    fn send_unrelated(st: &mut Streams, text: String) {
        if let Some(get) = &st.get {
            if get.send(Bytes::from(framing::sse_message(&text))).is_ok() {
                return;
            }
            st.get = None;
        }
        // No GET stream: any open SSE stream of the session will do (the client reads them all).
        if let Some(ps) = st.post.values().find(|p| p.sse && !p.tx.is_closed()) {
            if ps.tx.send(Bytes::from(framing::sse_message(&text))).is_ok() {
                return;
            }
        }
        if st.backlog.len() >= BACKLOG {
            st.backlog.pop_front();
        }
        st.backlog.push_back(text);
    }

    /// Whether the client holds one of this session's streams open (the GET stream, or a
    /// POST's answer still to come).
    fn has_open_stream(&self) -> bool {
        let st = self.streams.lock();
        st.get.as_ref().is_some_and(|g| !g.is_closed())
            || st.post.values().any(|p| !p.tx.is_closed())
    }

    fn close_all(&self) {
        let mut st = self.streams.lock();
        st.post.clear();
        st.get = None;
    }
}

impl ClientSink for HttpSink {
    fn send(&self, text: String, route: Route) {
        let mut st = self.streams.lock();
        match route {
            Route::Response(id) => match st.post.remove(&id) {
                Some(ps) => {
                    for other in &ps.ids {
                        st.post.remove(other);
                    }
                    let frame = if ps.sse {
                        framing::sse_message(&text)
                    } else {
                        text
                    };
                    let _ = ps.tx.send(Bytes::from(frame));
                }
                None => tracing::debug!(%id, "no open stream for this response; dropped"),
            },
            Route::Related(id) => {
                if let Some(ps) = st.post.get(&id).filter(|p| p.sse) {
                    if ps.tx.send(Bytes::from(framing::sse_message(&text))).is_ok() {
                        return;
                    }
                }
                HttpSink::send_unrelated(&mut st, text);
            }
            Route::Unrelated => HttpSink::send_unrelated(&mut st, text),
        }
    }
}

struct HttpSession {
    session: Arc<Session>,
    sink: Arc<HttpSink>,
    /// SHA-256 of the credential that opened the session (none: anonymous).
    credential: Option<String>,
    /// When a request last named this session, in milliseconds of [`HttpState::now_ms`].
    last_seen: AtomicU64,
}

struct HttpState {
    gateway: Arc<GatewayHandle>,
    sessions: Mutex<HashMap<String, Arc<HttpSession>>>,
    started: Instant,
}

/// What the HTTP handlers need of the gateway.
struct GatewayHandle {
    core: Arc<crate::Core>,
    resolver: Arc<dyn crate::IdentityResolver>,
    origins: Vec<String>,
}

fn rpc_error(status: StatusCode, id: Option<&RawId>, code: i64, message: &str) -> Response {
    let mut r = (status, jsonrpc::error_response(id, code, message)).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn digest(token: Option<&str>) -> Option<String> {
    token.map(|t| hex::encode(Sha256::digest(t.as_bytes())))
}

fn origin_allowed(origins: &[String], headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if !origins.is_empty() {
        return origins.iter().any(|o| o == origin || o == "*");
    }
    let host = origin.split_once("://").map_or(origin, |(_, h)| h);
    ["localhost", "127.0.0.1", "[::1]"].iter().any(|h| {
        host == *h
            || host
                .strip_prefix(h)
                .is_some_and(|rest| rest.starts_with(':'))
    })
}

/// The MCP revisions that have the Streamable HTTP transport.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];

/// After `initialize`, a request's `MCP-Protocol-Version` (when present; absent means
/// 2025-03-26) must be a revision the transport knows: the specification answers an invalid or
/// unsupported one with 400 Bad Request. Another supported revision than the session's is
/// served, as the reference servers serve it (the conformance suite sends 2025-03-26 on a
/// session that negotiated 2025-11-25); messages keep the session's revision.
fn check_protocol_version(headers: &HeaderMap) -> Result<(), String> {
    let Some(value) = headers.get("mcp-protocol-version") else {
        return Ok(());
    };
    let Ok(version) = value.to_str() else {
        return Err("Bad Request: MCP-Protocol-Version is not text".into());
    };
    if !PROTOCOL_VERSIONS.contains(&version) {
        return Err(format!(
            "Bad Request: unsupported MCP-Protocol-Version {:?} (supported: {})",
            version.chars().take(32).collect::<String>(),
            PROTOCOL_VERSIONS.join(", ")
        ));
    }
    Ok(())
}

fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream") || a.contains("*/*"))
}

impl HttpState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn idle_timeout_ms(&self) -> u64 {
        self.gateway
            .core
            .limits
            .session_idle_timeout
            .ms()
            .unsigned_abs()
    }

    /// Ends the sessions idle for longer than `session_idle_timeout`: removed (a request naming
    /// one gets 404, so its client starts over), streams closed, held calls withdrawn, upstream
    /// ended. Returns how many.
    async fn expire_idle(&self) -> usize {
        let (now, limit) = (self.now_ms(), self.idle_timeout_ms());
        let idle: Vec<Arc<HttpSession>> = {
            let mut sessions = self.sessions.lock();
            let ids: Vec<String> = sessions
                .iter()
                .filter(|(_, s)| {
                    now.saturating_sub(s.last_seen.load(Ordering::Relaxed)) >= limit
                        && !s.sink.has_open_stream()
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        for s in &idle {
            s.sink.close_all();
            s.session.close().await;
            tracing::info!(session = %s.session.id, idle_ms = limit, "HTTP session ended: idle");
        }
        idle.len()
    }

    /// The session a request names, checked against its credential.
    #[allow(clippy::result_large_err)] // an axum response is the natural error here
    fn session(&self, headers: &HeaderMap) -> Result<Arc<HttpSession>, Response> {
        let Some(sid) = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) else {
            return Err(rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                code::INVALID_REQUEST,
                "Bad Request: no Mcp-Session-Id header (only `initialize` may come without one)",
            ));
        };
        let Some(s) = self.sessions.lock().get(sid).cloned() else {
            return Err(rpc_error(
                StatusCode::NOT_FOUND,
                None,
                code::INVALID_REQUEST,
                "Session not found: start a new one with `initialize`",
            ));
        };
        if digest(bearer(headers)) != s.credential {
            return Err(rpc_error(
                StatusCode::FORBIDDEN,
                None,
                code::INVALID_REQUEST,
                "this session belongs to another credential",
            ));
        }
        if let Err(message) = check_protocol_version(headers) {
            return Err(rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                code::INVALID_REQUEST,
                &message,
            ));
        }
        s.last_seen.store(self.now_ms(), Ordering::Relaxed);
        Ok(s)
    }
}

fn sse_response(rx: mpsc::UnboundedReceiver<Bytes>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        tokio::select! {
            m = rx.recv() => m.map(|b| (Ok::<Bytes, Infallible>(b), rx)),
            () = tokio::time::sleep(Duration::from_secs(15)) => {
                Some((Ok(Bytes::from_static(b": keepalive\n\n")), rx))
            }
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    r
}

async fn handle_post(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let gw = &state.gateway;
    if !origin_allowed(&gw.origins, &headers) {
        return rpc_error(
            StatusCode::FORBIDDEN,
            None,
            code::INVALID_REQUEST,
            "Origin not allowed",
        );
    }
    let max = gw.core.limits.max_message_bytes;
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => {
            let message = format!("message exceeds the gateway's limit of {max} bytes");
            return rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                code::INVALID_REQUEST,
                &message,
            );
        }
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            code::PARSE_ERROR,
            "parse error: not UTF-8",
        );
    };
    // What the message is: the request ids that need an answer on this exchange.
    let batch = jsonrpc::is_batch(text);
    let mut requests: Vec<RawId> = Vec::new();
    let mut is_initialize = false;
    // A request of a stateless revision (2026-07-28 on) comes without `initialize` or session:
    // it gets a session of its own, which ends once it is answered.
    let mut stateless = false;
    if batch {
        match jsonrpc::batch_elements(text) {
            Ok(els) => {
                for el in els {
                    if let Ok(m) = jsonrpc::parse(el.get()) {
                        if let (Kind::Request, Some(id)) = (m.kind, m.id) {
                            requests.push(id);
                        }
                    }
                }
            }
            Err(inv) => return rpc_error(StatusCode::BAD_REQUEST, None, inv.code, &inv.message),
        }
    } else {
        match jsonrpc::parse(text) {
            Ok(m) => {
                is_initialize =
                    m.kind == Kind::Request && m.method.as_deref() == Some("initialize");
                stateless = m.kind == Kind::Request
                    && jsonrpc::request_version(text, m.params)
                        .is_some_and(|(v, _)| jsonrpc::is_stateless(&v));
                if let (Kind::Request, Some(id)) = (m.kind, m.id) {
                    requests.push(id);
                }
            }
            Err(inv) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    inv.id.as_ref(),
                    inv.code,
                    &inv.message,
                )
            }
        }
    }
    let token = bearer(&headers);
    let opens = headers.get("mcp-session-id").is_none() && (is_initialize || stateless);
    let (hs, new_session) = if opens {
        let identity = match gw.resolver.resolve(token) {
            Ok(i) => i,
            Err(e) => {
                let mut r = rpc_error(
                    StatusCode::UNAUTHORIZED,
                    requests.first(),
                    code::INVALID_REQUEST,
                    &e.to_string(),
                );
                r.headers_mut()
                    .insert("www-authenticate", HeaderValue::from_static("Bearer"));
                return r;
            }
        };
        let max = gw.core.limits.max_sessions;
        if state.sessions.lock().len() >= max {
            state.expire_idle().await;
        }
        if state.sessions.lock().len() >= max {
            let message = format!(
                "too many sessions: this gateway serves at most {max} at once; end one (DELETE) \
                 or retry once one has been idle for {}",
                gw.core.limits.session_idle_timeout
            );
            return rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                requests.first(),
                code::INTERNAL_ERROR,
                &message,
            );
        }
        let sink = Arc::new(HttpSink::default());
        let id = crate::new_session_id();
        tracing::info!(session = %id, agent = %identity.agent, "HTTP session started");
        let session = Session::start(
            Arc::clone(&gw.core),
            identity,
            id.clone(),
            Arc::clone(&sink) as Arc<dyn ClientSink>,
        );
        if let Some(t) = token {
            session.bind_credential(Arc::clone(&gw.resolver), t.to_string());
        }
        let hs = Arc::new(HttpSession {
            session,
            sink,
            credential: digest(token),
            last_seen: AtomicU64::new(state.now_ms()),
        });
        state.sessions.lock().insert(id.clone(), Arc::clone(&hs));
        (hs, Some(id))
    } else {
        match state.session(&headers) {
            Ok(s) => (s, None),
            Err(r) => return r,
        }
    };
    if batch {
        // Answered here: the refusal has no id (`null`), so no request of this exchange would
        // ever be answered on the stream.
        if let Some(message) = hs.session.batch_refusal() {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                code::INVALID_REQUEST,
                &message,
            );
        }
    }
    if requests.is_empty() {
        hs.session.on_client(text);
        return StatusCode::ACCEPTED.into_response();
    }
    let sse = accepts_sse(&headers);
    let (tx, rx) = mpsc::unbounded_channel();
    {
        let ps = Arc::new(PostStream {
            tx,
            ids: requests.clone(),
            sse,
        });
        let mut st = hs.sink.streams.lock();
        for id in &requests {
            st.post.insert(id.clone(), Arc::clone(&ps));
        }
    }
    hs.session.on_client(text);
    let rx = match (&new_session, stateless) {
        (Some(id), true) => ephemeral(&state, &hs, id.clone(), rx),
        _ => rx,
    };
    let mut response = if sse {
        sse_response(rx)
    } else {
        let mut rx = rx;
        match rx.recv().await {
            Some(body) => {
                let mut r = Response::new(Body::from(body));
                r.headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/json"));
                r
            }
            None => rpc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                requests.first(),
                code::INTERNAL_ERROR,
                "the session ended before answering",
            ),
        }
    };
    if let (Some(id), false) = (new_session, stateless) {
        if let Ok(v) = HeaderValue::from_str(&id) {
            response.headers_mut().insert("mcp-session-id", v);
        }
    }
    response
}

/// The stream of a request's own session (stateless revisions): once its answer is through,
/// the session ends, and its upstream with it.
fn ephemeral(
    state: &Arc<HttpState>,
    hs: &Arc<HttpSession>,
    id: String,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) -> mpsc::UnboundedReceiver<Bytes> {
    let (tx, out) = mpsc::unbounded_channel();
    let (state, hs) = (Arc::clone(state), Arc::clone(hs));
    tokio::spawn(async move {
        // The stream's sender goes with the answer.
        while let Some(b) = rx.recv().await {
            let _ = tx.send(b);
        }
        drop(tx);
        state.sessions.lock().remove(&id);
        hs.session.close().await;
    });
    out
}

async fn handle_get(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if !origin_allowed(&state.gateway.origins, &headers) {
        return rpc_error(
            StatusCode::FORBIDDEN,
            None,
            code::INVALID_REQUEST,
            "Origin not allowed",
        );
    }
    if !accepts_sse(&headers) {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            None,
            code::INVALID_REQUEST,
            "the GET stream needs `Accept: text/event-stream`",
        );
    }
    let hs = match state.session(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    {
        let mut st = hs.sink.streams.lock();
        if st.get.as_ref().is_some_and(|g| !g.is_closed()) {
            return rpc_error(
                StatusCode::CONFLICT,
                None,
                code::INVALID_REQUEST,
                "Conflict: this session's GET stream is already open",
            );
        }
        for text in st.backlog.drain(..) {
            let _ = tx.send(Bytes::from(framing::sse_message(&text)));
        }
        st.get = Some(tx);
    }
    sse_response(rx)
}

async fn handle_delete(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let hs = match state.session(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    state.sessions.lock().remove(&hs.session.id);
    hs.sink.close_all();
    hs.session.close().await;
    tracing::info!(session = %hs.session.id, "HTTP session ended by the client");
    StatusCode::OK.into_response()
}

/// Ends idle sessions now and then, for as long as the app lives.
async fn expire_idle_sessions(state: std::sync::Weak<HttpState>) {
    let period = match state.upgrade() {
        Some(s) => Duration::from_millis((s.idle_timeout_ms() / 4).clamp(10, 30_000)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(state) = state.upgrade() else {
            return;
        };
        state.expire_idle().await;
    }
}

impl Gateway {
    /// The Streamable HTTP app: `/mcp` and, with an embedded engine, its approvals API.
    pub fn http_router(&self) -> Router {
        let state = Arc::new(HttpState {
            gateway: Arc::new(GatewayHandle {
                core: Arc::clone(self.core()),
                resolver: Arc::clone(self.resolver()),
                origins: self.config().allowed_origins.clone(),
            }),
            sessions: Mutex::new(HashMap::new()),
            started: Instant::now(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(expire_idle_sessions(Arc::downgrade(&state)));
        }
        Router::new()
            .route(
                "/mcp",
                post(handle_post).get(handle_get).delete(handle_delete),
            )
            .with_state(state)
            .merge(self.approvals_router().unwrap_or_default())
    }

    /// The approvals API of the embedded engine (`None` when a decision point decides: its
    /// held calls are answered there).
    pub fn approvals_router(&self) -> Option<Router> {
        Some(approvals::router(
            Arc::clone(self.engine()?),
            self.config().approvals.token.clone(),
            self.issuer().cloned(),
        ))
    }

    /// Serves Streamable HTTP on `listener` until the process ends.
    pub async fn serve_http(&self, listener: tokio::net::TcpListener) -> Result<(), GatewayError> {
        let app = self.http_router();
        axum::serve(no_delay(listener), app)
            .await
            .map_err(|source| GatewayError::Io {
                what: "HTTP server".into(),
                source,
            })
    }

    /// Serves only the approvals API on `listener`.
    pub async fn serve_approvals(
        &self,
        listener: tokio::net::TcpListener,
    ) -> Result<(), GatewayError> {
        axum::serve(
            no_delay(listener),
            self.approvals_router().unwrap_or_default(),
        )
        .await
        .map_err(|source| GatewayError::Io {
            what: "approvals endpoint".into(),
            source,
        })
    }
}
