//! Connections to upstream MCP servers: a child process over stdio, or a Streamable HTTP
//! endpoint (POST per message, SSE or JSON answers, `Mcp-Session-Id`, the GET stream for
//! server-initiated messages, resumption with `Last-Event-ID`).
//!
//! A link sends message texts and reports everything it receives as [`UpEvent`]s on the
//! session's channel; it never interprets messages beyond what its transport requires.

use crate::config::{Target, Upstream};
use crate::framing::{read_frame, Frame, SseParser, SNIFF_BYTES};
use crate::jsonrpc::{self, code, Kind, RawId};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What an upstream link reports.
#[derive(Debug)]
pub enum UpEvent {
    /// A message from the server. `via`: the request whose HTTP response stream carried it.
    Message {
        upstream: usize,
        text: String,
        via: Option<RawId>,
    },
    /// A message over the size limit: its first bytes and length.
    Oversized {
        upstream: usize,
        prefix: Vec<u8>,
        len: usize,
        via: Option<RawId>,
    },
    /// A request that will get no answer from the server: answer it with this error.
    Failed {
        upstream: usize,
        id: RawId,
        code: i64,
        message: String,
    },
    /// The connection is gone (a stdio server exited).
    Closed {
        upstream: usize,
        generation: u64,
        reason: String,
    },
}

pub type Events = mpsc::UnboundedSender<UpEvent>;

/// A stdio child: the writer channel and the task that owns the process.
struct StdioConn {
    tx: mpsc::UnboundedSender<String>,
    /// Set when the gateway closes the server on purpose.
    closing: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for StdioConn {
    fn drop(&mut self) {
        self.reader.iter().for_each(JoinHandle::abort);
        self.writer.iter().for_each(JoinHandle::abort);
    }
}

enum State {
    Stdio(StdioConn),
    Http(Arc<HttpConn>),
    Down(String),
}

/// One upstream server of one session.
pub struct Link {
    pub index: usize,
    pub spec: Upstream,
    events: Events,
    max: usize,
    http: reqwest::Client,
    state: Mutex<State>,
    generation: Mutex<u64>,
}

impl Link {
    /// Connects (spawns a stdio server, or prepares an HTTP client).
    pub fn open(
        index: usize,
        spec: Upstream,
        events: Events,
        max: usize,
        http: &reqwest::Client,
    ) -> Link {
        let link = Link {
            index,
            spec,
            events,
            max,
            http: http.clone(),
            state: Mutex::new(State::Down("not started".into())),
            generation: Mutex::new(0),
        };
        let state = match &link.spec.target {
            Target::Stdio { .. } => {
                match spawn_stdio(index, &link.spec, link.events.clone(), max, 0) {
                    Ok(conn) => State::Stdio(conn),
                    Err(e) => State::Down(e),
                }
            }
            Target::Http { url, headers } => State::Http(link.http_conn(url, headers, 0, None)),
        };
        *link.state.lock() = state;
        link
    }

    /// A connection to the HTTP server at `url` with no session yet.
    fn http_conn(
        &self,
        url: &str,
        headers: &std::collections::BTreeMap<String, String>,
        generation: u64,
        protocol_version: Option<String>,
    ) -> Arc<HttpConn> {
        Arc::new(HttpConn {
            index: self.index,
            name: self.spec.name.clone(),
            client: self.http.clone(),
            url: url.to_string(),
            headers: headers.clone(),
            session_id: Mutex::new(None),
            protocol_version: Mutex::new(protocol_version),
            events: self.events.clone(),
            max: self.max,
            closed: AtomicBool::new(false),
            listener: Mutex::new(None),
            generation,
        })
    }

    pub fn is_stdio(&self) -> bool {
        matches!(self.spec.target, Target::Stdio { .. })
    }

    pub fn generation(&self) -> u64 {
        *self.generation.lock()
    }

    /// Sends one message. `id`: the request id (for errors on failure); `method`: the method of
    /// a request or notification.
    pub fn send(
        &self,
        text: String,
        id: Option<RawId>,
        method: Option<&str>,
    ) -> Result<(), String> {
        let state = self.state.lock();
        match &*state {
            State::Stdio(conn) => conn
                .tx
                .send(text)
                .map_err(|_| format!("upstream `{}` is not running", self.spec.name)),
            State::Http(conn) => {
                let conn = Arc::clone(conn);
                let initialized = method == Some("notifications/initialized");
                tokio::spawn(conn.post(text, id, initialized));
                Ok(())
            }
            State::Down(reason) => Err(reason.clone()),
        }
    }

    /// Tells an HTTP link the negotiated protocol version (for `MCP-Protocol-Version`).
    pub fn set_protocol_version(&self, version: &str) {
        if let State::Http(conn) = &*self.state.lock() {
            *conn.protocol_version.lock() = Some(version.to_string());
        }
    }

    /// Starts a stdio server again after it exited, or forgets an HTTP server's session that
    /// it ended (the next `initialize` opens a new one); returns the new generation.
    pub fn restart(&self) -> Result<u64, String> {
        let mut generation = self.generation.lock();
        *generation += 1;
        let next = match &self.spec.target {
            Target::Stdio { .. } => State::Stdio(spawn_stdio(
                self.index,
                &self.spec,
                self.events.clone(),
                self.max,
                *generation,
            )?),
            Target::Http { url, headers } => {
                let version = match &*self.state.lock() {
                    State::Http(old) => {
                        old.stop();
                        old.protocol_version.lock().clone()
                    }
                    _ => None,
                };
                State::Http(self.http_conn(url, headers, *generation, version))
            }
        };
        *self.state.lock() = next;
        Ok(*generation)
    }

    /// Marks the link down: further messages fail with `reason`.
    pub fn mark_down(&self, reason: String) {
        *self.state.lock() = State::Down(reason);
    }

    /// Ends the connection: closes a stdio server's input (and stops it if it lingers), ends an
    /// HTTP session with DELETE.
    pub async fn close(&self) {
        let state = std::mem::replace(&mut *self.state.lock(), State::Down("closed".into()));
        match state {
            State::Stdio(mut conn) => {
                conn.closing.store(true, Ordering::SeqCst);
                let (writer, reader) = (conn.writer.take(), conn.reader.take());
                // Closing the server's input asks it to exit.
                drop(conn);
                if let Some(writer) = writer {
                    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
                }
                // The reader task owns the child; it ends when the child exits. Give it a
                // moment, then the child is killed on drop.
                if let Some(reader) = reader {
                    let abort = reader.abort_handle();
                    if tokio::time::timeout(Duration::from_secs(2), reader)
                        .await
                        .is_err()
                    {
                        abort.abort();
                    }
                }
            }
            State::Http(conn) => conn.close().await,
            State::Down(_) => {}
        }
    }
}

fn spawn_stdio(
    index: usize,
    spec: &Upstream,
    events: Events,
    max: usize,
    generation: u64,
) -> Result<StdioConn, String> {
    let Target::Stdio {
        program,
        args,
        env,
        cwd,
    } = &spec.target
    else {
        return Err("not a stdio upstream".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("upstream `{}`: cannot start `{program}`: {e}", spec.name))?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(format!("upstream `{}`: no pipes to `{program}`", spec.name));
    };
    tracing::info!(upstream = %spec.name, pid = ?child.id(), "started `{program}`");
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let closing = Arc::new(AtomicBool::new(false));
    let closing_seen = Arc::clone(&closing);
    let name = spec.name.clone();
    let writer = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(8192);
        while let Some(first) = rx.recv().await {
            buf.clear();
            push_line(&mut buf, &first);
            while let Ok(more) = rx.try_recv() {
                push_line(&mut buf, &more);
            }
            if let Err(e) = stdin.write_all(&buf).await {
                tracing::debug!(upstream = %name, error = %e, "cannot write to the server");
                break;
            }
            if stdin.flush().await.is_err() {
                break;
            }
        }
    });
    let name = spec.name.clone();
    let reader = tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(64 * 1024, stdout);
        let reason = loop {
            match read_frame(&mut reader, max).await {
                Ok(Frame::Line(text)) => {
                    let _ = events.send(UpEvent::Message {
                        upstream: index,
                        text,
                        via: None,
                    });
                }
                Ok(Frame::NotUtf8) => {
                    let _ = events.send(UpEvent::Message {
                        upstream: index,
                        text: "\u{fffd}".into(),
                        via: None,
                    });
                }
                Ok(Frame::TooLong { prefix, len }) => {
                    let _ = events.send(UpEvent::Oversized {
                        upstream: index,
                        prefix,
                        len,
                        via: None,
                    });
                }
                Ok(Frame::Eof) => break "closed its output".to_string(),
                Err(e) => break format!("read error: {e}"),
            }
        };
        let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => {
                let _ = child.start_kill();
                "killed after it closed its output".to_string()
            }
        };
        if closing_seen.load(Ordering::SeqCst) {
            tracing::debug!(upstream = %name, %status, "upstream server ended");
        } else {
            tracing::warn!(upstream = %name, %status, "upstream server ended ({reason})");
        }
        let _ = events.send(UpEvent::Closed {
            upstream: index,
            generation,
            reason: format!("upstream `{name}` exited ({status})"),
        });
    });
    Ok(StdioConn {
        tx,
        closing,
        reader: Some(reader),
        writer: Some(writer),
    })
}

fn push_line(buf: &mut Vec<u8>, text: &str) {
    buf.extend_from_slice(jsonrpc::one_line(text).as_bytes());
    buf.push(b'\n');
}

/// A Streamable HTTP upstream session.
pub struct HttpConn {
    index: usize,
    name: String,
    client: reqwest::Client,
    url: String,
    headers: std::collections::BTreeMap<String, String>,
    session_id: Mutex<Option<String>>,
    protocol_version: Mutex<Option<String>>,
    events: Events,
    max: usize,
    closed: AtomicBool,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// The link's generation this session belongs to (see [`Link::restart`]).
    generation: u64,
}

/// How an SSE stream ended.
struct StreamEnd {
    answered: bool,
    last_event_id: Option<String>,
    retry_ms: Option<u64>,
}

impl HttpConn {
    fn request(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        let mut req = self.client.request(method, &self.url);
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(s) = &*self.session_id.lock() {
            req = req.header("mcp-session-id", s.as_str());
        }
        if let Some(v) = &*self.protocol_version.lock() {
            req = req.header("mcp-protocol-version", v.as_str());
        }
        req
    }

    fn fail(&self, id: Option<RawId>, code: i64, message: String) {
        match id {
            Some(id) => {
                let _ = self.events.send(UpEvent::Failed {
                    upstream: self.index,
                    id,
                    code,
                    message,
                });
            }
            None => tracing::warn!(upstream = %self.name, "{message}"),
        }
    }

    async fn post(self: Arc<Self>, text: String, id: Option<RawId>, initialized: bool) {
        let req = self
            .request(reqwest::Method::POST)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(text);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return self.fail(
                    id,
                    code::UPSTREAM_UNAVAILABLE,
                    format!("upstream `{}` is unreachable: {e}", self.name),
                )
            }
        };
        if let Some(sid) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            let new_session = {
                let mut current = self.session_id.lock();
                let new = current.as_deref() != Some(sid);
                if new {
                    *current = Some(sid.to_string());
                }
                new
            };
            if new_session {
                // The GET stream before the client hears of the session: a server may send
                // its first requests (roots, sampling, elicitation) as soon as it reads
                // `notifications/initialized`, and drops what it has no stream for.
                let (ready, opened) = tokio::sync::oneshot::channel();
                self.start_listener(Some(ready));
                let _ = tokio::time::timeout(Duration::from_secs(2), opened).await;
            }
        }
        let status = resp.status();
        if status == reqwest::StatusCode::ACCEPTED {
            if initialized {
                // A server without sessions: the GET stream opens now.
                self.start_listener(None);
            }
            return;
        }
        let is_sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if status.is_success() && is_sse {
            let mut end = self.read_sse(resp, id.as_ref()).await;
            let mut attempts = 0;
            while !end.answered && id.is_some() && end.last_event_id.is_some() && attempts < 5 {
                // The server closed the connection before answering: poll the stream again.
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(
                    end.retry_ms.unwrap_or(100).min(10_000),
                ))
                .await;
                let last = end.last_event_id.clone().unwrap_or_default();
                let resumed = self
                    .request(reqwest::Method::GET)
                    .header("accept", "text/event-stream")
                    .header("last-event-id", last.as_str())
                    .send()
                    .await;
                match resumed {
                    Ok(r) if r.status().is_success() => {
                        let next = self.read_sse(r, id.as_ref()).await;
                        end = StreamEnd {
                            answered: next.answered,
                            last_event_id: next.last_event_id.or(end.last_event_id),
                            retry_ms: next.retry_ms.or(end.retry_ms),
                        };
                    }
                    _ => break,
                }
            }
            if !end.answered && id.is_some() && !self.closed.load(Ordering::Relaxed) {
                self.fail(
                    id,
                    code::UPSTREAM_UNAVAILABLE,
                    format!(
                        "upstream `{}` closed its response stream before answering",
                        self.name
                    ),
                );
            }
            return;
        }
        let body = match read_limited(resp, self.max).await {
            Ok(body) => body,
            Err(Oversize { prefix, len }) => {
                let _ = self.events.send(UpEvent::Oversized {
                    upstream: self.index,
                    prefix,
                    len,
                    via: id,
                });
                return;
            }
        };
        if status.is_success() {
            if !body.trim().is_empty() {
                let _ = self.events.send(UpEvent::Message {
                    upstream: self.index,
                    text: body,
                    via: id,
                });
            }
            return;
        }
        // An HTTP error: pass on a JSON-RPC error the server wrote for this request, else make
        // one that says what happened.
        if let (Some(want), Ok(m)) = (&id, jsonrpc::parse(&body)) {
            if m.kind == Kind::Response && m.id.as_ref() == Some(want) {
                let _ = self.events.send(UpEvent::Message {
                    upstream: self.index,
                    text: body,
                    via: id,
                });
                return;
            }
        }
        let snippet: String = body.chars().take(300).collect();
        // The server no longer knows the session (it restarted, or expired it): 404 as the
        // transport specification says, or 400 naming the session or saying it is not
        // initialized, as some servers answer (the TypeScript SDK's, for a session id it never
        // issued). The request was not served; the session is opened again.
        let session_gone = self.session_id.lock().is_some()
            && (status == reqwest::StatusCode::NOT_FOUND
                || (status == reqwest::StatusCode::BAD_REQUEST && {
                    let body = body.to_ascii_lowercase();
                    body.contains("session") || body.contains("not initialized")
                }));
        if session_gone {
            let reason = format!(
                "upstream `{}` ended the session (HTTP {})",
                self.name,
                status.as_u16()
            );
            self.fail(id, code::UPSTREAM_UNAVAILABLE, reason.clone());
            if !self.closed.swap(true, Ordering::SeqCst) {
                let _ = self.events.send(UpEvent::Closed {
                    upstream: self.index,
                    generation: self.generation,
                    reason,
                });
            }
            return;
        }
        let message = format!("upstream `{}` answered HTTP {status}: {snippet}", self.name);
        self.fail(id, code::UPSTREAM_UNAVAILABLE, message);
    }

    /// Reads an SSE response, reporting each message; tells whether the answer to `want` came.
    async fn read_sse(&self, mut resp: reqwest::Response, want: Option<&RawId>) -> StreamEnd {
        let mut parser = SseParser::new(self.max);
        let mut end = StreamEnd {
            answered: false,
            last_event_id: None,
            retry_ms: None,
        };
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(upstream = %self.name, error = %e, "SSE stream broke");
                    break;
                }
            };
            for ev in parser.feed(&chunk) {
                if ev.id.is_some() {
                    end.last_event_id.clone_from(&ev.id);
                }
                if ev.retry_ms.is_some() {
                    end.retry_ms = ev.retry_ms;
                }
                if ev.too_long {
                    let prefix = ev.data.into_bytes();
                    if let Some(w) = want {
                        if jsonrpc::sniff_id(&prefix).as_ref() == Some(w) {
                            end.answered = true;
                        }
                    }
                    let _ = self.events.send(UpEvent::Oversized {
                        upstream: self.index,
                        len: prefix.len().max(self.max + 1),
                        prefix: prefix.into_iter().take(SNIFF_BYTES).collect(),
                        via: want.cloned(),
                    });
                    continue;
                }
                if ev.data.trim().is_empty() {
                    continue;
                }
                if let Some(w) = want {
                    if let Ok(m) = jsonrpc::parse(&ev.data) {
                        if m.kind == Kind::Response && m.id.as_ref() == Some(w) {
                            end.answered = true;
                        }
                    }
                }
                let _ = self.events.send(UpEvent::Message {
                    upstream: self.index,
                    text: ev.data,
                    via: want.cloned(),
                });
            }
            if end.answered && want.is_some() {
                // The answer is in; the server should end the stream, but need not be waited for.
                break;
            }
        }
        end
    }

    /// Opens the GET stream for server-initiated messages (once), reconnecting as the server
    /// asks, until the session closes. `ready` is told once the first attempt was answered
    /// (the server then has the stream, or has said it offers none).
    fn start_listener(self: &Arc<Self>, ready: Option<tokio::sync::oneshot::Sender<()>>) {
        let mut slot = self.listener.lock();
        if slot.is_some() || self.closed.load(Ordering::Relaxed) {
            return;
        }
        let me = Arc::clone(self);
        let mut ready = ready;
        *slot = Some(tokio::spawn(async move {
            let mut last: Option<String> = None;
            let mut failures = 0u32;
            while !me.closed.load(Ordering::Relaxed) && failures < 5 {
                let mut req = me
                    .request(reqwest::Method::GET)
                    .header("accept", "text/event-stream");
                if let Some(l) = &last {
                    req = req.header("last-event-id", l.as_str());
                }
                let resp = req.send().await;
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                let resp = match resp {
                    Ok(r) => r,
                    Err(_) => {
                        failures += 1;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                if resp.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED {
                    tracing::debug!(upstream = %me.name, "no GET stream (405)");
                    return;
                }
                if !resp.status().is_success() {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                failures = 0;
                let end = me.read_sse(resp, None).await;
                if end.last_event_id.is_some() {
                    last = end.last_event_id;
                }
                tokio::time::sleep(Duration::from_millis(
                    end.retry_ms.unwrap_or(1000).min(30_000),
                ))
                .await;
            }
        }));
    }

    /// Stops listening, without ending the session (the server already did).
    fn stop(&self) {
        self.closed.store(true, Ordering::Relaxed);
        if let Some(task) = self.listener.lock().take() {
            task.abort();
        }
    }

    async fn close(&self) {
        self.stop();
        if self.session_id.lock().is_some() {
            let req = self
                .request(reqwest::Method::DELETE)
                .timeout(Duration::from_secs(2));
            let _ = req.send().await;
        }
    }
}

struct Oversize {
    prefix: Vec<u8>,
    len: usize,
}

async fn read_limited(mut resp: reqwest::Response, max: usize) -> Result<String, Oversize> {
    let mut body = Vec::new();
    let mut len = 0usize;
    while let Ok(Some(chunk)) = resp.chunk().await {
        len += chunk.len();
        if len > max {
            if body.len() < SNIFF_BYTES {
                body.extend_from_slice(&chunk);
            }
            body.truncate(SNIFF_BYTES);
            while let Ok(Some(c)) = resp.chunk().await {
                len += c.len();
            }
            return Err(Oversize { prefix: body, len });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}
