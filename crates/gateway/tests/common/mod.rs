//! Shared test harness: a gateway served in-process over a pipe or Streamable HTTP, in front of
//! the scripted server `fixtures/fake_server.py` (real child processes).
#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{
    AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines, ReadHalf, WriteHalf,
};
use truststack_engine::{ApprovalAnswer, Engine};
use truststack_gateway::framing::SseParser;
use truststack_gateway::{Gateway, GatewayConfig};
use truststack_testkit::write_file;

pub const CATALOG: &str = r#"
[tools.echo]
classes = ["Benign"]
[tools.nmap_scan]
classes = ["ScanTool"]
attributes.Target_IP_Range = { from = "/target", classify = "ip_range" }
[tools.http_upload]
classes = ["DataExfiltration"]
mode = "write_external"
[tools.read_docs]
classes = ["Benign"]
data_source = { name = "Internal_Docs", mode = "read" }
"#;

pub const POLICIES: &str = r#"
POLICY no-upload:
  ACTION: DENY
  TARGET: agent_identity
  IF Tool_Call('DataExfiltration')
  REASON: "uploads leave the company"

POLICY external-scan:
  ACTION: DENY
  TARGET: agent_identity
  IF Tool_Call('ScanTool').Target_IP_Range == 'External_Public'
  REASON: "scans stay inside our network"

POLICY no-echo-after-docs:
  ACTION: DENY
  TARGET: agent_identity
  IF DataSource('Internal_Docs') == 'read' AND Tool_Call('echo')
  REASON: "nothing is echoed after reading the docs"

POLICY scan-needs-human:
  ACTION: REQUIRE_HITL
  TARGET: agent_identity
  IF Tool_Call('ScanTool')
  REASON: "every scan needs a human"
"#;

pub const TOKEN: &str = "test-token";
pub const AGENT: &str = "spiffe://test.example/agent/a";

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A gateway configuration with the test policies and `upstreams` (name, FAKE_NAME) of the
/// scripted server; `extra` is appended to the TOML.
pub fn config(dir: &tempfile::TempDir, upstreams: &[&str], extra: &str) -> GatewayConfig {
    let bodies: Vec<String> = upstreams
        .iter()
        .map(|name| {
            format!(
                "name = \"{name}\"\ncommand = [\"python3\", \"-u\", \"{}\"]\nenv = {{ FAKE_NAME = \"{name}\" }}",
                fixture("fake_server.py").display()
            )
        })
        .collect();
    config_for(dir.path(), &bodies, extra)
}

/// A gateway configuration with the test policies, catalog and tokens and the given
/// `[[upstream]]` bodies; `extra` is appended to the top-level TOML.
pub fn config_for(dir: &std::path::Path, upstreams: &[String], extra: &str) -> GatewayConfig {
    std::fs::write(dir.join("catalog.toml"), CATALOG).unwrap();
    std::fs::write(dir.join("policies.tsp"), POLICIES).unwrap();
    let mut toml = format!(
        "policies = [\"policies.tsp\"]\ncatalog = \"catalog.toml\"\nunknown_tools = \"allow\"\n{extra}\n\
         [identity]\nallow_anonymous = false\n\
         [[identity.tokens]]\ntoken = \"{TOKEN}\"\nagent = \"{AGENT}\"\nchain = [\"user:alice@test.example\"]\n\
         [limits]\nmax_message_bytes = 65536\nprogress_interval = \"50ms\"\nmax_restarts = 1\n"
    );
    for body in upstreams {
        toml.push_str(&format!("[[upstream]]\n{body}\n"));
    }
    let path = write_file(dir, "gateway.toml", toml);
    GatewayConfig::load(&path).unwrap()
}

/// A client talking newline-delimited JSON-RPC to a gateway served in this process.
pub struct Client {
    pub writer: WriteHalf<DuplexStream>,
    pub lines: Lines<BufReader<ReadHalf<DuplexStream>>>,
    /// Messages read while waiting for others.
    pub seen: Vec<Value>,
    pub engine: Arc<Engine>,
    pub task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Client {
    pub async fn start(config: GatewayConfig, token: Option<&str>) -> Client {
        let gateway = Arc::new(Gateway::from_config(config).unwrap());
        gateway.spawn_expiry(Duration::from_millis(50));
        let engine = Arc::clone(gateway.engine().expect("an embedded engine"));
        let (client_end, gateway_end) = tokio::io::duplex(1 << 20);
        let (gr, gw) = tokio::io::split(gateway_end);
        let token = token.map(String::from);
        let task = tokio::spawn(async move {
            gateway
                .serve_stdio(gr, gw, token.as_deref())
                .await
                .map_err(|e| e.to_string())
        });
        let (cr, cw) = tokio::io::split(client_end);
        Client {
            writer: cw,
            lines: BufReader::new(cr).lines(),
            seen: Vec::new(),
            engine,
            task,
        }
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).await.unwrap();
        self.writer.write_all(b"\n").await.unwrap();
        self.writer.flush().await.unwrap();
    }

    pub async fn send(&mut self, v: Value) {
        self.send_raw(&v.to_string()).await;
    }

    /// The next line from the gateway, raw.
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("the gateway answered in time")
            .unwrap()
            .expect("the gateway's output is open")
    }

    /// Reads until a message satisfies `pred` (others are kept in `seen`).
    pub async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.seen.iter().position(&pred) {
            return self.seen.remove(i);
        }
        loop {
            let line = self.line().await;
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON from the gateway: {line}: {e}"));
            if pred(&v) {
                return v;
            }
            self.seen.push(v);
        }
    }

    pub async fn response(&mut self, id: Value) -> Value {
        self.until(|v| v.get("id") == Some(&id) && v.get("method").is_none())
            .await
    }

    pub async fn request(&mut self, id: i64, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.response(json!(id)).await
    }

    pub async fn initialize(&mut self, version: &str) -> Value {
        let r = self
            .request(
                0,
                "initialize",
                json!({"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}),
            )
            .await;
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        r
    }

    pub async fn call(&mut self, id: i64, tool: &str, args: Value) -> Value {
        self.request(id, "tools/call", json!({"name": tool, "arguments": args}))
            .await
    }

    /// Answers the oldest held call.
    pub async fn answer(
        &self,
        approver: &str,
        grant: bool,
    ) -> Result<truststack_engine::ApprovalOutcome, String> {
        let mut pending = Vec::new();
        for _ in 0..400 {
            pending = self.engine.pending();
            if !pending.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let p = pending.first().ok_or("nothing held")?;
        self.engine
            .answer(&ApprovalAnswer {
                approval_id: Some(p.approval_id.clone()),
                call_id: None,
                approver: approver.into(),
                groups: vec![],
                grant,
                lease: None,
                time: None,
            })
            .map_err(|e| e.to_string())
    }

    pub async fn close(mut self) {
        self.writer.shutdown().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }

    /// Closes, then waits until nothing holds the engine, and the ledger at `ledger` has no
    /// writer, any more: a session's tasks may hold them a moment longer. A gateway started
    /// again on the same ledger waits for this, as a new process would wait for the old one to
    /// exit.
    pub async fn close_released(self, ledger: &std::path::Path) {
        let mut lock = ledger.as_os_str().to_owned();
        lock.push(".lock");
        let released = || std::fs::File::open(&lock).is_ok_and(|f| f.try_lock().is_ok());
        let engine = Arc::downgrade(&self.engine);
        let Client {
            mut writer,
            task,
            engine: held,
            ..
        } = self;
        drop(held);
        writer.shutdown().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while engine.strong_count() > 0 || !released() {
            assert!(
                std::time::Instant::now() < until,
                "the closed gateway still holds its engine or its ledger's writer lock"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The text of a tool result.
pub fn text(v: &Value) -> String {
    v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A client of a gateway served over Streamable HTTP in this process.
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
    pub session: Option<String>,
}

/// Reads an SSE stream of its own until the answer to request `id`.
pub async fn sse_answer(resp: &mut reqwest::Response, id: impl Into<Value>) -> Value {
    let id = id.into();
    sse_until(resp, &mut SseParser::new(1 << 20), &mut Vec::new(), |v| {
        v["id"] == id
    })
    .await
}

/// Reads SSE messages from a response until one satisfies `pred`.
pub async fn sse_until(
    resp: &mut reqwest::Response,
    parser: &mut SseParser,
    seen: &mut Vec<Value>,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    if let Some(i) = seen.iter().position(&pred) {
        return seen.remove(i);
    }
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
            .await
            .expect("an SSE event in time")
            .unwrap()
            .expect("the stream is open");
        for ev in parser.feed(&chunk) {
            if ev.data.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&ev.data).unwrap();
            if pred(&v) {
                return v;
            }
            seen.push(v);
        }
    }
}

impl Http {
    /// A gateway in front of the scripted server, `extra` added to its configuration.
    pub async fn start(extra: &str) -> (Http, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let http = Http::serve(config(&dir, &["fake"], extra)).await;
        (http, dir)
    }

    pub async fn serve(config: GatewayConfig) -> Http {
        let gateway = Arc::new(Gateway::from_config(config).unwrap());
        gateway.spawn_expiry(Duration::from_millis(50));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { gateway.serve_http(listener).await });
        Http {
            base,
            client: reqwest::Client::new(),
            session: None,
        }
    }

    pub fn post(&self, body: &Value, token: Option<&str>) -> reqwest::RequestBuilder {
        let mut r = self
            .client
            .post(format!("{}/mcp", self.base))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(s) = &self.session {
            r = r.header("mcp-session-id", s);
        }
        r
    }

    /// POSTs a request and returns its answer (read from the SSE stream).
    pub async fn rpc(&self, body: Value) -> Value {
        let mut resp = self.post(&body, Some(TOKEN)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{body}");
        sse_answer(&mut resp, body["id"].clone()).await
    }

    /// Opens a session; the answer to `initialize`.
    pub async fn initialize(&mut self) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
        let mut resp = self.post(&body, Some(TOKEN)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        self.session = Some(
            resp.headers()["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        let init = sse_answer(&mut resp, 0).await;
        let r = self
            .post(
                &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                Some(TOKEN),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        init
    }
}
