//! Protocol revision 2026-07-28 (stateless: no `initialize`, the revision in every request's
//! `_meta`, `resultType` in every result) through the gateway, in front of the scripted server
//! speaking it: `server/discover` is forwarded (or, with several upstreams, answered from all
//! of theirs), and every result the gateway writes itself — denials, merged lists, filtered
//! lists — is valid in that revision, over stdio and over Streamable HTTP without a session;
//! and a real client and server of that revision (the official Python SDK 2.x, which validates
//! every result) talk through it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config, config_for, fixture, sse_answer, text, Client, Http, TOKEN};
use serde_json::{json, Value};
use truststack_testkit::assert_contains;

const REVISION: &str = "2026-07-28";

/// A request of the stateless revision: its `_meta` names the revision and the client.
fn request(id: i64, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": REVISION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// A denial the gateway wrote: a complete tool result with `isError`.
fn assert_denied(r: &Value, says: &str) {
    assert_eq!(r["result"]["resultType"], "complete", "{r}");
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert_contains!(text(r), says);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stdio_upstream_speaking_2026_07_28() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::start(config(&dir, &["fake"], ""), Some(TOKEN)).await;
    // No `initialize`: discovery, then requests that each name the revision.
    c.send(request(1, "server/discover", json!({}))).await;
    let d = c.response(json!(1)).await;
    assert_eq!(d["result"]["supportedVersions"][0], REVISION, "{d}");
    assert_eq!(d["result"]["resultType"], "complete");

    c.send(request(2, "tools/list", json!({}))).await;
    let list = c.response(json!(2)).await;
    assert_eq!(list["result"]["resultType"], "complete", "{list}");
    // Filtered for this caller: no cache may share it with another.
    assert_eq!(list["result"]["cacheScope"], "private", "{list}");
    assert_eq!(list["result"]["ttlMs"], 60000);

    c.send(request(
        3,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "hi"}}),
    ))
    .await;
    let r = c.response(json!(3)).await;
    assert_eq!(r["result"]["resultType"], "complete", "{r}");
    assert_eq!(text(&r), "fake: hi");

    c.send(request(
        4,
        "tools/call",
        json!({"name": "http_upload", "arguments": {}}),
    ))
    .await;
    assert_denied(&c.response(json!(4)).await, "uploads leave the company");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_stdio_upstreams_speaking_2026_07_28() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::start(config(&dir, &["a", "b"], ""), Some(TOKEN)).await;
    c.send(request(1, "server/discover", json!({}))).await;
    let d = c.response(json!(1)).await;
    let result = &d["result"];
    assert_eq!(result["resultType"], "complete", "{d}");
    assert_eq!(result["supportedVersions"], json!([REVISION, "2025-11-25"]));
    assert_eq!(result["capabilities"]["tools"]["listChanged"], true);
    assert_eq!(
        result["instructions"],
        "[a] a instructions\n\n[b] b instructions"
    );
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "truststack-gateway"
    );

    // Merged by the gateway (with its own requests upstream in the same revision).
    c.send(request(2, "tools/list", json!({}))).await;
    let list = c.response(json!(2)).await;
    assert_eq!(list["result"]["resultType"], "complete", "{list}");
    assert_eq!(list["result"]["cacheScope"], "private");
    assert_eq!(list["result"]["ttlMs"], 0);
    assert_eq!(list["result"]["tools"].as_array().unwrap().len(), 18);
    c.send(request(3, "prompts/list", json!({}))).await;
    let prompts = c.response(json!(3)).await;
    assert_eq!(prompts["result"]["resultType"], "complete", "{prompts}");
    assert_eq!(prompts["result"]["prompts"][1]["name"], "b__brief");

    c.send(request(
        4,
        "tools/call",
        json!({"name": "a__echo", "arguments": {"text": "x"}}),
    ))
    .await;
    let r = c.response(json!(4)).await;
    assert_eq!(r["result"]["resultType"], "complete", "{r}");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_stateless_request_needs_no_session() {
    let (h, _dir) = Http::start("").await;
    for (id, body, sse) in [
        (1, request(1, "server/discover", json!({})), true),
        (2, request(2, "tools/list", json!({})), false),
        (
            3,
            request(
                3,
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "hi"}}),
            ),
            true,
        ),
        (
            4,
            request(
                4,
                "tools/call",
                json!({"name": "http_upload", "arguments": {}}),
            ),
            true,
        ),
    ] {
        let post = if sse {
            h.post(&body, Some(TOKEN))
        } else {
            // A client that takes JSON only.
            h.client
                .post(format!("{}/mcp", h.base))
                .header("accept", "application/json")
                .header("content-type", "application/json")
                .bearer_auth(TOKEN)
                .body(body.to_string())
        };
        let mut resp = post
            .header("mcp-protocol-version", REVISION)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{body}");
        // No session: the next request needs none either.
        assert!(resp.headers().get("mcp-session-id").is_none());
        let r = if sse {
            sse_answer(&mut resp, id).await
        } else {
            resp.json::<Value>().await.unwrap()
        };
        assert_eq!(r["result"]["resultType"], "complete", "{r}");
        match id {
            1 => assert_eq!(r["result"]["supportedVersions"][0], REVISION),
            2 => assert_eq!(r["result"]["cacheScope"], "private"),
            3 => assert_eq!(text(&r), "fake: hi"),
            _ => assert_denied(&r, "uploads leave the company"),
        }
    }
    // Without the revision in `_meta`, a request still needs a session.
    let r = h
        .post(
            &json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {}}),
            Some(TOKEN),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_of_2026_07_28_through_the_gateway() {
    let python = truststack_testkit::python_2026();
    let dir = tempfile::tempdir().unwrap();
    let command = json!([
        python.display().to_string(),
        fixture("sdk2026_server.py").display().to_string()
    ]);
    let mut config = config_for(dir.path(), &[format!("command = {command}")], "");
    // The SDK's client sends no credential.
    config.identity.allow_anonymous = true;
    let h = Http::serve(config).await;
    let out = tokio::process::Command::new(&python)
        .arg(fixture("sdk2026_client.py"))
        .arg(format!("{}/mcp", h.base))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps[0]["version"], REVISION, "{stdout}");
    // `http_upload` is one the identity may never call: not listed.
    assert_eq!(steps[1]["names"], json!(["echo"]), "{stdout}");
    assert_eq!(steps[2]["is_error"], false, "{stdout}");
    assert_eq!(steps[2]["text"], "echo: hi");
    assert_eq!(steps[3]["is_error"], true, "{stdout}");
    assert_contains!(
        steps[3]["text"].as_str().unwrap(),
        "uploads leave the company"
    );
}
