//! A minimal MCP client over Streamable HTTP, as an agent runtime would speak it: one session
//! per agent, its credential as `Authorization: Bearer`, JSON answers.

use anyhow::{bail, Context};
use serde_json::{json, Value};

pub struct Session {
    http: reqwest::Client,
    url: String,
    token: String,
    id: String,
    next: u64,
}

/// What the gateway answered a `tools/call` with.
pub struct CallResult {
    pub is_error: bool,
    pub text: String,
    /// TrustStack's decision details on denials (`_meta["io.truststack/decision"]`).
    pub decision: Option<Value>,
}

impl Session {
    /// `initialize` and `notifications/initialized`.
    pub async fn open(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Session> {
        let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "truststack-demo-agent", "version": env!("CARGO_PKG_VERSION")}}});
        let resp = http
            .post(url)
            .bearer_auth(token)
            .header("accept", "application/json")
            .json(&body)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!(
                "initialize: {} {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        let id = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .context("initialize: no Mcp-Session-Id")?
            .to_string();
        let mut session = Session {
            http: http.clone(),
            url: url.to_string(),
            token: token.to_string(),
            id,
            next: 1,
        };
        session
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        Ok(session)
    }

    async fn post(&mut self, body: &Value) -> anyhow::Result<Option<Value>> {
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json")
            .header("mcp-session-id", &self.id)
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{status}: {text}");
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_str(&text).context("a JSON-RPC answer")?,
        ))
    }

    /// `tools/call`; the answer is the tool's result or TrustStack's denial.
    pub async fn call(&mut self, tool: &str, args: &Value) -> anyhow::Result<CallResult> {
        let id = self.next;
        self.next += 1;
        let answer = self
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": tool, "arguments": args}}))
            .await?
            .context("tools/call: no answer")?;
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
        })
    }
}
