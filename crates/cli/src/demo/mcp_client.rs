//! A minimal MCP client over Streamable HTTP, as an agent runtime speaks it: one session per
//! agent, its credential as `Authorization: Bearer`, `Accept: application/json,
//! text/event-stream`, answers read from JSON bodies or SSE streams (with the progress
//! notifications the gateway sends while a call is held for a human).

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;
use truststack_gateway::framing::SseParser;

/// The protocol version the demo's agents speak.
const PROTOCOL_VERSION: &str = "2025-11-25";
/// The largest SSE event the client reads.
const MAX_EVENT: usize = 1 << 20;
/// How long the client waits for a stream to end after its answer.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Session {
    http: reqwest::Client,
    url: String,
    token: String,
    id: Option<String>,
    next: u64,
}

/// What the gateway answered a `tools/call` with.
pub struct CallResult {
    pub is_error: bool,
    pub text: String,
    /// TrustStack's decision on denials (`_meta["io.truststack/decision"]`).
    pub decision: Option<Value>,
    /// The progress messages received before the answer (a held call's "waiting for an
    /// approver").
    pub progress: Vec<String>,
}

impl CallResult {
    /// The ids of the policies behind a denial.
    pub fn policies(&self) -> Vec<String> {
        self.decision
            .as_ref()
            .and_then(|d| d["policies"].as_array())
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p.as_str().or_else(|| p["id"].as_str()))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Why the call was denied (or the tool's text).
    pub fn reason(&self) -> String {
        self.decision
            .as_ref()
            .and_then(|d| d["reason"].as_str())
            .unwrap_or(&self.text)
            .to_string()
    }
}

impl Session {
    /// `initialize` and `notifications/initialized`.
    pub async fn open(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Session> {
        let mut session = Session {
            http: http.clone(),
            url: url.to_string(),
            token: token.to_string(),
            id: None,
            next: 0,
        };
        let (answer, _) = session
            .request(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "truststack-demo-agent", "version": env!("CARGO_PKG_VERSION")},
                }),
                None,
            )
            .await?;
        if answer.get("error").is_some() {
            bail!("initialize: {}", answer["error"]);
        }
        session
            .id
            .as_ref()
            .context("initialize: no Mcp-Session-Id")?;
        session
            .notify(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        Ok(session)
    }

    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .json(body);
        if let Some(id) = &self.id {
            r = r
                .header("mcp-session-id", id)
                .header("mcp-protocol-version", PROTOCOL_VERSION);
        }
        r
    }

    async fn notify(&self, body: Value) -> anyhow::Result<()> {
        let resp = self.post(&body).send().await?;
        if !resp.status().is_success() {
            bail!("{}: {}", body["method"], resp.status());
        }
        Ok(())
    }

    /// Sends one request and reads its answer from a JSON body or an SSE stream. With
    /// `progress`, asks for progress notifications, sends their messages there as they arrive,
    /// and returns them with the answer.
    async fn request(
        &mut self,
        method: &str,
        mut params: Value,
        progress: Option<&UnboundedSender<String>>,
    ) -> anyhow::Result<(Value, Vec<String>)> {
        let id = self.next;
        self.next += 1;
        if progress.is_some() {
            params["_meta"] = json!({"progressToken": format!("p-{id}")});
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let mut resp = self.post(&body).send().await?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("{method}: {status} {text}");
        }
        if let Some(sid) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            self.id = Some(sid.to_string());
        }
        let sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if !sse {
            let text = resp.text().await?;
            let answer =
                serde_json::from_str(&text).with_context(|| format!("{method}: a JSON answer"))?;
            return Ok((answer, Vec::new()));
        }
        let mut parser = SseParser::new(MAX_EVENT);
        let mut seen = Vec::new();
        let mut answer = None;
        while let Some(chunk) = resp.chunk().await? {
            for event in parser.feed(&chunk) {
                let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
                    continue;
                };
                if message["id"] == json!(id)
                    && (message.get("result").is_some() || message.get("error").is_some())
                {
                    answer = Some(message);
                } else if message["method"] == "notifications/progress" {
                    let text = message["params"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if let Some(tx) = progress {
                        let _ = tx.send(text.clone());
                    }
                    seen.push(text);
                }
            }
            if answer.is_some() {
                break;
            }
        }
        if let Some(answer) = answer {
            // The stream ends with the answer: read it to its end so that the connection can
            // carry the next request.
            let _ = tokio::time::timeout(DRAIN, async {
                while let Ok(Some(_)) = resp.chunk().await {}
            })
            .await;
            return Ok((answer, seen));
        }
        bail!("{method}: the stream ended before the answer")
    }

    /// `tools/list`: the names of the tools this agent is shown.
    pub async fn list_tools(&mut self) -> anyhow::Result<Vec<String>> {
        let (answer, _) = self.request("tools/list", json!({}), None).await?;
        if let Some(e) = answer.get("error") {
            bail!("tools/list: JSON-RPC error {e}");
        }
        Ok(answer["result"]["tools"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| t["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `tools/call`; the answer is the tool's result or TrustStack's denial. With `progress`,
    /// asks for progress notifications and sends their messages there as they arrive.
    pub async fn call(
        &mut self,
        tool: &str,
        args: &Value,
        progress: Option<&UnboundedSender<String>>,
    ) -> anyhow::Result<CallResult> {
        let (answer, progress) = self
            .request(
                "tools/call",
                json!({"name": tool, "arguments": args}),
                progress,
            )
            .await?;
        if let Some(e) = answer.get("error") {
            bail!("tools/call {tool}: JSON-RPC error {e}");
        }
        let result = &answer["result"];
        Ok(CallResult {
            is_error: result["isError"] == true,
            text: result["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            decision: result["_meta"].get("io.truststack/decision").cloned(),
            progress,
        })
    }

    /// Ends the session (`DELETE`), which stops its upstream server.
    pub async fn close(self) -> anyhow::Result<()> {
        let Some(id) = &self.id else {
            return Ok(());
        };
        self.http
            .delete(&self.url)
            .bearer_auth(&self.token)
            .header("mcp-session-id", id)
            .send()
            .await?;
        Ok(())
    }
}
