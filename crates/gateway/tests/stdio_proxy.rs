//! The gateway over stdio, in front of a scripted MCP server running as a child process:
//! pass-through, decisions, held calls, filtering, namespacing, batches and robustness.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config, text, Client, AGENT, TOKEN};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use truststack_testkit::assert_contains;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_pass_through_byte_for_byte_with_ids_preserved() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::start(config(&dir, &["fake"], ""), Some(TOKEN)).await;
    let init = c.initialize("2025-11-25").await;
    assert_eq!(init["result"]["serverInfo"]["name"], "fake");
    // The server's exact bytes (key order, spacing, number format, escapes) reach the client.
    c.send_raw(r#"{"jsonrpc":"2.0","id":"a\"b","method":"fixture/verbatim"}"#)
        .await;
    let line = c.line().await;
    assert_eq!(
        line,
        r#"{"result": {"z": 1.50, "a": [1,  2], "s": "\u00e9"},   "id": "a\"b", "jsonrpc": "2.0"}"#
    );
    // Unknown methods and their errors pass through too.
    let r = c.request(7, "no/such/method", json!({})).await;
    assert_eq!(r["error"]["code"], -32601);
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_name_the_policy_and_are_never_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::start(config(&dir, &["fake"], ""), Some(TOKEN)).await;
    c.initialize("2025-11-25").await;
    let r = c
        .call(1, "http_upload", json!({"url": "https://x.example"}))
        .await;
    assert_eq!(r["result"]["isError"], true);
    let t = text(&r);
    assert!(
        t.contains("no-upload") && t.contains("uploads leave the company"),
        "{t}"
    );
    assert_eq!(
        r["result"]["_meta"]["io.truststack/decision"]["policies"][0],
        "no-upload"
    );
    // An allowed call reaches the server.
    let r = c.call(2, "echo", json!({"text": "hi"})).await;
    assert_eq!(text(&r), "fake: hi");
    assert_eq!(r["result"]["isError"], false);
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_list_hides_what_the_identity_may_never_call_on_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::start(config(&dir, &["fake"], ""), Some(TOKEN)).await;
    c.initialize("2025-11-25").await;
    let names = |v: &Value| -> Vec<String> {
        v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    let p1 = c.request(1, "tools/list", json!({})).await;
    assert_eq!(p1["result"]["nextCursor"], "page2");
    let p2 = c.request(2, "tools/list", json!({"cursor": "page2"})).await;
    let all: Vec<String> = names(&p1).into_iter().chain(names(&p2)).collect();
    assert!(!all.contains(&"http_upload".to_string()), "{all:?}");
    assert!(
        all.contains(&"nmap_scan".to_string()) && all.contains(&"echo".to_string()),
        "{all:?}"
    );
    assert_eq!(all.len(), 8);
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_limit_the_tools_listed_and_called() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[[tokens]]\ntoken = \"narrow\"\nagent = \"spiffe://test.example/agent/narrow\"\nchain = [\"user:alice@test.example\"]\ntools = [\"Benign\"]\n";
    let mut cfg = config(&dir, &["fake"], "");
    let more: truststack_gateway::StaticResolver = toml::from_str(extra).unwrap();
    cfg.identity.tokens.extend(more.tokens);
    let mut c = Client::start(cfg, Some("narrow")).await;
    c.initialize("2025-11-25").await;
    let p1 = c.request(1, "tools/list", json!({})).await;
    let p2 = c.request(2, "tools/list", json!({"cursor": "page2"})).await;
    let mut names: Vec<&str> = p1["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["result"]["tools"].as_array().unwrap())
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["echo", "read_docs"]);
    let r = c.call(3, "crash", json!({})).await;
    assert_contains!(text(&r), "does not allow tool `crash`");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_waits_without_blocking_others_and_runs_when_granted() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::start(config(&dir, &["fake"], ""), Some(TOKEN)).await;
    c.initialize("2025-11-25").await;
    c.send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "nmap_scan", "arguments": {"target": "10.0.0.1"}, "_meta": {"progressToken": "tok-1"}}}))
        .await;
    // Progress arrives while the call is held, and other requests are answered meanwhile.
    let p = c.until(|v| v["method"] == "notifications/progress").await;
    assert_eq!(p["params"]["progressToken"], "tok-1");
    assert_contains!(p["params"]["message"].as_str().unwrap(), "scan-needs-human");
    let r = c.call(2, "echo", json!({"text": "meanwhile"})).await;
    assert_eq!(text(&r), "fake: meanwhile");
    // The agent's own operator cannot approve; someone else can.
    assert_contains!(
        c.answer("user:alice@test.example", true).await.unwrap_err(),
        "separation of duties"
    );
    let outcome = c.answer("user:bob@test.example", true).await.unwrap();
    assert_eq!(outcome.decision, truststack_engine::Verdict::Allow);
    let r = c.response(json!(1)).await;
    assert_eq!(text(&r), "fake called nmap_scan");
    let progress: Vec<&Value> = c
        .seen
        .iter()
        .filter(|v| v["method"] == "notifications/progress")
        .collect();
    let values: Vec<i64> = progress
        .iter()
        .map(|v| v["params"]["progress"].as_i64().unwrap())
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] < w[1]),
        "progress increases: {values:?}"
    );
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_cancelled_held_call_is_never_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::start(config(&dir, &["fake"], ""), Some(TOKEN)).await;
    c.initialize("2025-11-25").await;
    c.send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "nmap_scan", "arguments": {"target": "10.0.0.2"}}}))
        .await;
    c.answer("user:bob@test.example", false).await.unwrap();
    let r = c.response(json!(1)).await;
    assert_eq!(r["result"]["isError"], true);
    assert_contains!(text(&r), "refused by user:bob@test.example");
    // A held call the client cancels ends without an answer, and is withdrawn from the
    // approvals queue: nobody can grant it any more.
    c.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "nmap_scan", "arguments": {"target": "10.0.0.3"}}}))
        .await;
    let mut held = Vec::new();
    for _ in 0..200 {
        held = c.engine.pending();
        if !held.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let approval = held.first().expect("the scan is held").approval_id.clone();
    c.send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2, "reason": "user"}}))
        .await;
    let r = c.call(3, "echo", json!({"text": "after"})).await;
    assert_eq!(text(&r), "fake: after");
    assert!(c.seen.iter().all(|v| v["id"] != 2), "{:?}", c.seen);
    let outcome = c
        .engine
        .wait_outcome(&approval, Duration::from_secs(5))
        .expect("the cancellation is an outcome");
    assert_eq!(outcome.result, truststack_engine::ApprovalResult::Cancelled);
    assert!(c.engine.pending().is_empty());
    let late = c.answer("user:bob@test.example", true).await;
    assert!(
        late.is_err(),
        "a cancelled call cannot be granted: {late:?}"
    );
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_pipelined() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::start(config(&dir, &["fake"], ""), Some(TOKEN)).await;
    c.initialize("2025-11-25").await;
    let started = Instant::now();
    for i in 1..=5 {
        c.send(json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "sleep", "arguments": {"ms": 400}}}))
            .await;
    }
    c.send(json!({"jsonrpc": "2.0", "id": 99, "method": "ping"}))
        .await;
    // The ping overtakes the slow calls.
    let first = c.until(|v| v.get("id").is_some()).await;
    assert_eq!(first["id"], 99);
    for i in 1..=5 {
        c.response(json!(i)).await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_from_the_client_get_json_rpc_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::start(config(&dir, &["fake"], ""), Some(TOKEN)).await;
    c.initialize("2025-11-25").await;
    c.send_raw("{this is not json").await;
    let e = c.until(|v| v.get("error").is_some()).await;
    assert_eq!(e["error"]["code"], -32700);
    assert_eq!(e["id"], Value::Null);
    c.send_raw(r#"{"jsonrpc":"2.0","id":5}"#).await;
    let e = c.until(|v| v.get("error").is_some()).await;
    assert_eq!(e["error"]["code"], -32600);
    assert_eq!(e["id"], 5);
    c.send_raw(r#"{"jsonrpc":"1.0","id":6,"method":"ping"}"#)
        .await;
    let e = c.response(json!(6)).await;
    assert_eq!(e["error"]["code"], -32600);
    c.send_raw(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}"#)
        .await;
    let e = c.response(json!(7)).await;
    assert_eq!(e["error"]["code"], -32602);
    // A batch is an error in protocol versions without batches.
    c.send_raw(r#"[{"jsonrpc":"2.0","id":8,"method":"ping"}]"#)
        .await;
    let e = c.until(|v| v.get("error").is_some()).await;
    assert_eq!(e["error"]["code"], -32600);
    // The session goes on.
    let r = c.call(9, "echo", json!({"text": "still here"})).await;
    assert_eq!(text(&r), "fake: still here");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_work_in_the_protocol_version_that_has_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::start(config(&dir, &["fake"], ""), Some(TOKEN)).await;
    let init = c.initialize("2025-03-26").await;
    assert_eq!(init["result"]["protocolVersion"], "2025-03-26");
    c.send_raw(
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"http_upload","arguments":{}}},{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"b"}}},{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}]"#,
    )
    .await;
    let line = c.line().await;
    let v: Value = serde_json::from_str(&line).unwrap();
    let arr = v.as_array().expect("one array for the batch");
    assert_eq!(arr.len(), 3);
    let by_id = |id: i64| arr.iter().find(|r| r["id"] == id).unwrap();
    assert_eq!(by_id(1)["result"], json!({}));
    assert_eq!(by_id(2)["result"]["isError"], true);
    assert_eq!(text(by_id(3)), "fake: b");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_mid_session_fails_its_requests_and_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::start(config(&dir, &["fake"], ""), Some(TOKEN)).await;
    c.initialize("2025-11-25").await;
    let r = c.call(1, "crash", json!({})).await;
    assert_eq!(r["error"]["code"], -32001);
    assert_contains!(r["error"]["message"].as_str().unwrap(), "exited");
    let note = c.until(|v| v["method"] == "notifications/message").await;
    assert_contains!(note["params"]["data"].as_str().unwrap(), "restarted");
    // The restarted server was re-initialized and serves calls.
    let r = c.call(2, "echo", json!({"text": "again"})).await;
    assert_eq!(text(&r), "fake: again");
    // Once the restarts are used up (max_restarts = 1), the gateway reports it clearly.
    let r = c.call(3, "crash", json!({})).await;
    assert_eq!(r["error"]["code"], -32001);
    let note = c
        .until(|v| v["method"] == "notifications/message" && v["params"]["level"] == "error")
        .await;
    assert_contains!(note["params"]["data"].as_str().unwrap(), "not restarted");
    let r = c.call(4, "echo", json!({"text": "gone"})).await;
    assert_eq!(r["error"]["code"], -32001);
    assert_contains!(r["error"]["message"].as_str().unwrap(), "not restarted");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_messages_from_either_side_are_contained() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::start(config(&dir, &["fake"], ""), Some(TOKEN)).await;
    c.initialize("2025-11-25").await;
    // From the client: over the 64 KiB limit, answered with an error for its id.
    let big = "y".repeat(70_000);
    c.send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": big}}}))
        .await;
    let e = c.response(json!(1)).await;
    assert_eq!(e["error"]["code"], -32600);
    assert_contains!(e["error"]["message"].as_str().unwrap(), "exceeds");
    // From the server: its oversized answer becomes an error for that request.
    let e = c.call(2, "huge", json!({"bytes": 100_000})).await;
    assert_eq!(e["error"]["code"], -32603);
    assert_contains!(e["error"]["message"].as_str().unwrap(), "exceeds");
    // A line of garbage from the server is dropped; the answer after it arrives.
    let r = c.call(3, "garbage", json!({})).await;
    assert_eq!(text(&r), "after garbage");
    // A response that is JSON but not JSON-RPC fails its request.
    let e = c.call(4, "bad_answer", json!({})).await;
    assert_eq!(e["error"]["code"], -32603);
    let r = c.call(5, "echo", json!({"text": "ok"})).await;
    assert_eq!(text(&r), "fake: ok");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_credential_is_refused_and_anonymous_needs_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::start(config(&dir, &["fake"], ""), Some("wrong")).await;
    let err = tokio::time::timeout(Duration::from_secs(5), c.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_contains!(err, "not valid");
    let c = Client::start(config(&dir, &["fake"], ""), None).await;
    let err = tokio::time::timeout(Duration::from_secs(5), c.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_contains!(err, "anonymous");
    let mut cfg = config(&dir, &["fake"], "");
    cfg.identity.allow_anonymous = true;
    let mut c = Client::start(cfg, None).await;
    c.initialize("2025-11-25").await;
    let r = c.call(1, "echo", json!({"text": "anon"})).await;
    assert_eq!(text(&r), "fake: anon");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_upstreams_are_namespaced_and_routed() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::start(config(&dir, &["alpha", "beta"], ""), Some(TOKEN)).await;
    let init = c.initialize("2025-11-25").await;
    assert_eq!(init["result"]["serverInfo"]["name"], "truststack-gateway");
    assert_eq!(init["result"]["capabilities"]["tools"]["listChanged"], true);
    let list = c.request(1, "tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"alpha__echo") && names.contains(&"beta__echo"),
        "{names:?}"
    );
    assert_eq!(
        names.len(),
        18,
        "all pages of both, nothing hidden by name: {names:?}"
    );
    assert!(list["result"].get("nextCursor").is_none());
    let r = c.call(2, "beta__echo", json!({"text": "routed"})).await;
    assert_eq!(text(&r), "beta: routed");
    let r = c.call(3, "alpha__echo", json!({"text": "routed"})).await;
    assert_eq!(text(&r), "alpha: routed");
    let r = c.call(4, "gamma__echo", json!({})).await;
    assert_eq!(r["error"]["code"], -32602);
    let prompts = c.request(5, "prompts/list", json!({})).await;
    assert_eq!(prompts["result"]["prompts"].as_array().unwrap().len(), 2);
    let p = c
        .request(6, "prompts/get", json!({"name": "beta__brief"}))
        .await;
    assert_eq!(
        p["result"]["messages"][0]["content"]["text"],
        "beta prompt brief"
    );
    let res = c.request(7, "resources/list", json!({})).await;
    assert_eq!(res["result"]["resources"].as_array().unwrap().len(), 2);
    let r = c
        .request(8, "resources/read", json!({"uri": "fake://beta/readme"}))
        .await;
    assert_eq!(r["result"]["contents"][0]["text"], "beta says hi");
    assert_eq!(c.request(9, "ping", json!({})).await["result"], json!({}));
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_requests_reach_the_client_and_its_answers_go_back() {
    for upstreams in [&["fake"][..], &["alpha", "beta"][..]] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Client::start(config(&dir, upstreams, ""), Some(TOKEN)).await;
        c.initialize("2025-11-25").await;
        // `fixture/ask` (an unknown method: the first upstream) asks the client for its roots.
        c.send(json!({"jsonrpc": "2.0", "id": 1, "method": "fixture/ask"}))
            .await;
        let ask = c.until(|v| v["method"] == "roots/list").await;
        c.send(json!({"jsonrpc": "2.0", "id": ask["id"], "result": {"roots": [{"uri": "file:///tmp"}]}}))
            .await;
        let r = c.response(json!(1)).await;
        assert_eq!(
            r["result"]["client_said"]["roots"][0]["uri"], "file:///tmp",
            "{upstreams:?}: {r}"
        );
        c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_results_become_observations_that_taint() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::start(config(&dir, &["fake"], ""), Some(TOKEN)).await;
    c.initialize("2025-11-25").await;
    let r = c.call(1, "echo", json!({"text": "before"})).await;
    assert_eq!(text(&r), "fake: before");
    let r = c.call(2, "read_docs", json!({"page": "x"})).await;
    assert_eq!(text(&r), "fake called read_docs");
    // Reading the docs (catalog data source Internal_Docs) taints this agent's trajectory.
    let r = c.call(3, "echo", json!({"text": "after"})).await;
    assert_eq!(r["result"]["isError"], true);
    assert_contains!(text(&r), "no-echo-after-docs");
    // The agent's scope, keyed by the agent under its chain of command.
    assert!(c
        .engine
        .snapshot()
        .iter()
        .any(|(_, key, _)| key.ends_with(AGENT)));
    c.close().await;
}
