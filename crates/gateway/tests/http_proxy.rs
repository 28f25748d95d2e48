//! The gateway's Streamable HTTP side, driven with raw HTTP: sessions, SSE streams, the GET
//! stream, credentials, the approvals endpoint and errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{sse_answer, sse_until, Http, TOKEN};
use serde_json::{json, Value};
use truststack_gateway::framing::SseParser;
use truststack_testkit::assert_contains;
use truststack_testkit::net::JsonReply;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_calls_denials_and_a_held_call_released_over_http() {
    let (mut h, _dir) = Http::start("").await;
    assert_eq!(h.initialize().await["result"]["serverInfo"]["name"], "fake");
    let r = h.rpc(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}})).await;
    assert_eq!(r["result"]["content"][0]["text"], "fake: hi");
    let r = h.rpc(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "http_upload", "arguments": {}}})).await;
    assert_eq!(r["result"]["isError"], true);
    assert_contains!(
        r["result"]["content"][0]["text"].as_str().unwrap(),
        "no-upload"
    );

    // A held call: its stream carries progress, other requests are answered meanwhile, and an
    // approval through the endpoint releases it.
    let held = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "nmap_scan", "arguments": {"target": "10.1.1.1"}, "_meta": {"progressToken": 77}}});
    let mut stream = h.post(&held, Some(TOKEN)).send().await.unwrap();
    let mut parser = SseParser::new(1 << 20);
    let mut seen = Vec::new();
    let p = sse_until(&mut stream, &mut parser, &mut seen, |v| {
        v["method"] == "notifications/progress"
    })
    .await;
    assert_eq!(p["params"]["progressToken"], 77);
    let r = h
        .rpc(json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}))
        .await;
    assert_eq!(r["result"], json!({}));
    let listed: Value = h
        .client
        .get(format!("{}/v1/approvals", h.base))
        .json_reply()
        .await;
    let pending = listed["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["call"]["tool"], "nmap_scan");
    // The server's shape: every answer carries a `decision_id`.
    assert!(listed["decision_id"].is_string(), "{listed}");
    let aid = pending[0]["approval_id"].as_str().unwrap();
    let url = format!("{}/v1/approvals/{aid}/grant", h.base);
    let r = h
        .client
        .post(&url)
        .json(&json!({"approver": "user:alice@test.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the agent's own operator may not approve");
    let r = h
        .client
        .post(&url)
        .json(&json!({"approver": "user:bob@test.example", "lease": "5min"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["result"], "granted");
    let r = sse_until(&mut stream, &mut parser, &mut seen, |v| v["id"] == 3).await;
    assert_eq!(r["result"]["content"][0]["text"], "fake called nmap_scan");
    // Under the lease, the next scan is not held.
    let r = h.rpc(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "nmap_scan", "arguments": {"target": "10.1.1.2"}}})).await;
    assert_eq!(r["result"]["content"][0]["text"], "fake called nmap_scan");
    let r = h
        .client
        .post(&url)
        .json(&json!({"approver": "user:bob@test.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // DELETE ends the session.
    let del = h
        .client
        .delete(format!("{}/mcp", h.base))
        .bearer_auth(TOKEN)
        .header("mcp-session-id", h.session.clone().unwrap());
    assert_eq!(del.send().await.unwrap().status(), 200);
    let r = h
        .post(
            &json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}),
            Some(TOKEN),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_get_stream_carries_server_requests_and_json_only_clients_get_json() {
    let (mut h, _dir) = Http::start("").await;
    h.initialize().await;
    let mut get = h
        .client
        .get(format!("{}/mcp", h.base))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", h.session.clone().unwrap())
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    // A second GET stream for the same session is refused.
    let again = h
        .client
        .get(format!("{}/mcp", h.base))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", h.session.clone().unwrap())
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let mut ask = h
        .post(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "fixture/ask"}),
            Some(TOKEN),
        )
        .send()
        .await
        .unwrap();
    let mut gp = SseParser::new(1 << 20);
    let req = sse_until(&mut get, &mut gp, &mut Vec::new(), |v| {
        v["method"] == "roots/list"
    })
    .await;
    let answer = json!({"jsonrpc": "2.0", "id": req["id"], "result": {"roots": []}});
    assert_eq!(
        h.post(&answer, Some(TOKEN)).send().await.unwrap().status(),
        202
    );
    let r = sse_answer(&mut ask, 1).await;
    assert_eq!(r["result"]["client_said"], json!({"roots": []}));

    let r = h
        .client
        .post(format!("{}/mcp", h.base))
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .header("mcp-session-id", h.session.clone().unwrap())
        .bearer_auth(TOKEN)
        .body(json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"jsonrpc": "2.0", "id": 2, "result": {}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_credentials_sizes_and_origins() {
    let (mut h, _dir) = Http::start("").await;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    // No credential, a wrong one.
    let r = h.post(&init, None).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        h.post(&init, Some("nope")).send().await.unwrap().status(),
        401
    );
    // No session id on a non-initialize request; an unknown one.
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    assert_eq!(
        h.post(&ping, Some(TOKEN)).send().await.unwrap().status(),
        400
    );
    h.session = Some("feedface".into());
    assert_eq!(
        h.post(&ping, Some(TOKEN)).send().await.unwrap().status(),
        404
    );
    h.session = None;
    h.initialize().await;
    // Another credential may not use this session.
    let mut cfg_token = h.post(&ping, Some("someone-else")).send().await.unwrap();
    assert_eq!(cfg_token.status(), 403);
    let _ = cfg_token.chunk().await;
    // An unknown protocol revision: 400, as the specification requires; any supported one is
    // served (the negotiated one, and another, as the reference servers do).
    let r = h
        .post(&ping, Some(TOKEN))
        .header("mcp-protocol-version", "1999-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert_contains!(message, "unsupported MCP-Protocol-Version");
    for version in ["2025-11-25", "2025-03-26"] {
        let mut r = h
            .post(&ping, Some(TOKEN))
            .header("mcp-protocol-version", version)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{version}");
        let _ = r.chunk().await;
    }
    // Malformed JSON, invalid JSON-RPC, oversized bodies.
    let bad = h
        .client
        .post(format!("{}/mcp", h.base))
        .header("content-type", "application/json")
        .header("mcp-session-id", h.session.clone().unwrap())
        .bearer_auth(TOKEN);
    let r = bad.try_clone().unwrap().body("{oops").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32700);
    let r = bad
        .try_clone()
        .unwrap()
        .body(r#"{"jsonrpc":"2.0","id":3}"#)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32600);
    assert_eq!(v["id"], 3);
    let r = bad
        .try_clone()
        .unwrap()
        .body("x".repeat(70_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // A browser page from elsewhere is refused.
    let r = h
        .post(&ping, Some(TOKEN))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let mut r = h
        .post(&ping, Some(TOKEN))
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = sse_answer(&mut r, 1).await;
    assert_eq!(v["result"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approvals_api_can_require_a_token() {
    let (h, _dir) = Http::start("[approvals]\ntoken = \"approver-secret\"\n").await;
    let r = h
        .client
        .get(format!("{}/v1/approvals", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = h
        .client
        .get(format!("{}/v1/approvals", h.base))
        .bearer_auth("approver-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = h
        .client
        .post(format!("{}/v1/approvals/a-1/grant", h.base))
        .bearer_auth("approver-secret")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
