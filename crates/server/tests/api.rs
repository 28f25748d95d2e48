//! The enforcement API over real HTTP on loopback, with a real SQLite ledger.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config_with_policy, example, open_config, start};
use serde_json::{json, Value};
use truststack_engine::replay::{parse_trace, replay};
use truststack_engine::Processed;
use truststack_engine::{Engine, Event, Settings, TimeSource};
use truststack_policy::load::load_files;
use truststack_testkit::assert_contains;
use truststack_testkit::net::JsonReply;

/// The GTG-1002 traces driven through the API give the same decisions as `policy eval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_through_the_api_match_policy_eval() {
    for (policy, trace) in [
        ("policies/seed.tsp", "traces/campaign-single-agent.jsonl"),
        (
            "policies/delegation-root.tsp",
            "traces/campaign-split.jsonl",
        ),
        ("policies/delegation-root.tsp", "traces/benign.jsonl"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = open_config(&[policy]);
        config.clock = TimeSource::Event;
        let server = start(config, dir.path(), None).await;
        let events = parse_trace(trace, &std::fs::read_to_string(example(trace)).unwrap()).unwrap();

        let loaded = load_files(&[example(policy)], Some(&example("catalog.toml"))).unwrap();
        let expected: Vec<(String, String)> =
            replay(&Engine::new(loaded.bundle, Settings::replay()), &events)
                .into_iter()
                .filter_map(|s| match s {
                    Processed::Decision(d) => {
                        Some((d.call_id.clone(), d.decision.as_str().to_string()))
                    }
                    _ => None,
                })
                .collect();

        let mut got = Vec::new();
        let mut held: std::collections::HashMap<String, String> = Default::default();
        for event in &events {
            match event {
                Event::ToolCall(c) => {
                    let (status, d) = server
                        .decide(None, json!({"id": c.id, "tool": c.tool, "args": c.args, "session": c.session, "agent": c.agent, "chain": c.chain, "time": c.time}))
                        .await;
                    assert_eq!(status, 200, "{d}");
                    assert!(d["decision_id"].as_str().unwrap().starts_with("d-"));
                    assert!(d["ledger_index"].is_u64(), "{d}");
                    if let Some(a) = d["approval_id"].as_str() {
                        held.insert(c.id.clone(), a.to_string());
                    }
                    got.push((c.id.clone(), d["decision"].as_str().unwrap().to_string()));
                }
                Event::Approval(a) => {
                    let id = &held[a.call_id.as_ref().unwrap()];
                    let verb = if a.grant { "grant" } else { "refuse" };
                    let (status, body) = server
                        .post(
                            &format!("/v1/approvals/{id}/{verb}"),
                            None,
                            json!({"approver": a.approver, "lease": a.lease, "time": a.time}),
                        )
                        .await;
                    if a.approver.starts_with("user:operator") {
                        assert_eq!(status, 403, "the launching operator cannot approve: {body}");
                        assert_contains!(body["error"].as_str().unwrap(), "separation of duties");
                    } else {
                        assert_eq!(status, 200, "{body}");
                        assert_eq!(body["result"], "granted");
                    }
                }
                Event::Observation(_) | Event::Input(_) | Event::Grant(_) => {}
            }
        }
        assert_eq!(got, expected, "{trace}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_waits_for_an_approver_and_is_then_admitted() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        open_config(&["policies/delegation-root.tsp"]),
        dir.path(),
        None,
    )
    .await;
    let chain = json!(["user:operator@acme.example"]);
    for (id, tool) in [("s", "nmap_scan"), ("c", "code_review")] {
        let (_, d) = server
            .decide(None, json!({"id": id, "tool": tool, "args": {"target": "10.0.0.1"}, "agent": "spiffe://acme.example/agent/a", "chain": chain}))
            .await;
        assert_eq!(d["decision"], "allow");
    }
    let (_, held) = server
        .decide(None, json!({"id": "x", "tool": "exploit_runner", "args": {"target": "10.0.0.1"}, "agent": "spiffe://acme.example/agent/a", "chain": chain}))
        .await;
    assert_eq!(held["decision"], "require_approval");
    let approval = held["approval_id"].as_str().unwrap().to_string();

    // The approver sees it, with the trajectory that led to it.
    let (status, list) = server
        .get("/v1/approvals?approver=user:oncall@acme.example", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["pending"][0]["approval_id"], approval.as_str());
    let (_, shown) = server
        .get(
            &format!("/v1/approvals/{approval}?approver=user:oncall@acme.example"),
            None,
        )
        .await;
    let tools: Vec<&str> = shown["trajectory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tool"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["nmap_scan", "code_review", "exploit_runner"]);
    // The seed policies read no provenance: the view says so with an empty list.
    assert_eq!(shown["provenance"], json!([]), "{shown}");

    // A client long-polls while the approver decides.
    let waiter = {
        let client = server.client.clone();
        let url = format!("{}/v1/approvals/{approval}/wait?timeout=20s", server.base);
        tokio::spawn(async move { client.get(url).json_reply().await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // The operator who launched the agent is refused...
    let (status, body) = server.grant(&approval, "user:operator@acme.example").await;
    assert_eq!(status, 403, "{body}");
    // ...a member of the policy's approver group is not.
    let (status, body) = server.grant(&approval, "user:oncall@acme.example").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "allow");
    let waited = waiter.await.unwrap();
    assert_eq!(waited["status"], "answered");
    assert_eq!(waited["outcome"]["result"], "granted");
    // An approval is used once.
    let (status, _) = server.grant(&approval, "user:oncall@acme.example").await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_turns_a_held_call_into_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = config_with_policy(
        dir.path(),
        "gate.tsp",
        "POLICY gate: ACTION: REQUIRE_HITL IF Tool_Call('ExploitationTool') DEADLINE: 1s\n",
    );
    let server = start(config, dir.path(), None).await;
    let (_, held) = server
        .decide(None, json!({"tool": "exploit_runner", "agent": "spiffe://acme.example/agent/a", "chain": ["user:u@acme.example"]}))
        .await;
    let approval = held["approval_id"].as_str().unwrap();
    let (_, waited) = server
        .get(&format!("/v1/approvals/{approval}/wait?timeout=10s"), None)
        .await;
    assert_eq!(waited["status"], "answered", "{waited}");
    assert_eq!(waited["outcome"]["result"], "expired");
    assert_eq!(waited["outcome"]["decision"], "deny");
    let (status, _) = server.grant(approval, "user:oncall@acme.example").await;
    assert_eq!(status, 404, "a late answer finds nothing to approve");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_leaves_the_old_bundle_active() {
    let dir = tempfile::tempdir().unwrap();
    let (config, policy) = config_with_policy(
        dir.path(),
        "p.tsp",
        "POLICY no-upload: ACTION: DENY IF Tool_Call('DataExfiltration')\n",
    );
    let server = start(config, dir.path(), None).await;
    let (_, before) = server.get("/v1/policies", None).await;
    let call = json!({"tool": "http_upload", "agent": "spiffe://acme.example/agent/a", "chain": ["user:u@acme.example"]});
    assert_eq!(
        server.decide(None, call.clone()).await.1["decision"],
        "deny"
    );

    std::fs::write(
        &policy,
        "POLICY no-upload: ACTION: DENY IF Tool_Call('DataExfiltration').Count > 1\n",
    )
    .unwrap();
    let (status, body) = server.post("/v1/policies/reload", None, json!({})).await;
    assert_eq!(status, 422, "{body}");
    assert_contains!(body["error"].as_str().unwrap(), "a Count needs a window");
    let (_, after) = server.get("/v1/policies", None).await;
    assert_eq!(before["policy_hash"], after["policy_hash"]);
    assert_eq!(
        server.decide(None, call.clone()).await.1["decision"],
        "deny"
    );

    // A good bundle replaces it atomically.
    std::fs::write(&policy, "POLICY uploads-limited: ACTION: DENY IF Tool_Call('DataExfiltration').Count > 5 requests/1h\n").unwrap();
    let (status, body) = server.post("/v1/policies/reload", None, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["policy_hash"], before["policy_hash"]);
    assert_eq!(server.decide(None, call).await.1["decision"], "allow");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_reset_a_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = config_with_policy(
        dir.path(),
        "p.tsp",
        "POLICY scans: ACTION: DENY IF Tool_Call('ScanTool').Count > 3 requests/1h\n",
    );
    let call = json!({"tool": "nmap_scan", "args": {"target": "10.0.0.1"}, "agent": "spiffe://acme.example/agent/a", "chain": ["user:u@acme.example"]});
    let server = start(config.clone(), dir.path(), None).await;
    for _ in 0..3 {
        assert_eq!(
            server.decide(None, call.clone()).await.1["decision"],
            "allow"
        );
    }
    server.stop().await;

    let server = start(config, dir.path(), None).await;
    let (_, d) = server.decide(None, call).await;
    assert_eq!(
        d["decision"], "deny",
        "the fourth scan in the hour is denied after a restart: {d}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_clients_never_exceed_a_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = config_with_policy(dir.path(), "p.tsp", "POLICY scans: ACTION: DENY TARGET: delegation_root IF Tool_Call('ScanTool').Count > 50 requests/1h\n");
    let server = start(config, dir.path(), None).await;
    let mut tasks = Vec::new();
    for client in 0..10 {
        let http = server.client.clone();
        let url = format!("{}/v1/decide", server.base);
        tasks.push(tokio::spawn(async move {
            let mut allowed = 0;
            for i in 0..20 {
                let body = json!({"id": format!("{client}-{i}"), "tool": "nmap_scan", "args": {"target": "10.0.0.1"},
                    "agent": format!("spiffe://acme.example/agent/recon-{client}"),
                    "chain": ["user:u@acme.example", "spiffe://acme.example/agent/orchestrator"]});
                let d: Value = http.post(&url).json(&body).json_reply().await;
                if d["decision"] == "allow" {
                    allowed += 1;
                }
            }
            allowed
        }));
    }
    let allowed: i32 = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    assert_eq!(
        allowed, 50,
        "exactly the limit is admitted across 10 racing clients"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_endpoints_prove_what_was_decided() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(open_config(&["policies/seed.tsp"]), dir.path(), None).await;
    let (_, d) = server
        .decide(None, json!({"tool": "nmap_scan", "args": {"target": "8.8.8.8"}, "agent": "spiffe://acme.example/agent/a", "chain": ["user:u@acme.example"]}))
        .await;
    assert_eq!(d["decision"], "deny");
    let index = d["ledger_index"].as_u64().unwrap();
    let (status, note) = server.get("/v1/ledger/checkpoint", None).await;
    assert_eq!(status, 200);
    let note = note.as_str().unwrap().to_string();
    assert!(note.starts_with("truststack"), "{note}");
    assert_contains!(note, "\n\n— ", "a signed note: {note}");
    let (_, proof) = server
        .get(&format!("/v1/ledger/proofs/inclusion?index={index}"), None)
        .await;
    assert_eq!(proof["leaf_index"], index);
    assert_contains!(
        proof["checkpoint"].as_str().unwrap(),
        proof["root_hash"].as_str().unwrap()
    );
    let (_, entries) = server
        .get(
            &format!("/v1/ledger/entries?start={index}&end={}", index + 1),
            None,
        )
        .await;
    assert_eq!(
        entries["entries"][0]["record"]["decision"]["decision"],
        "deny"
    );
    let (_, consistency) = server
        .get("/v1/ledger/proofs/consistency?old=1", None)
        .await;
    assert_eq!(consistency["old_size"], 1);
    let (status, err) = server
        .get("/v1/ledger/proofs/inclusion?index=999999", None)
        .await;
    assert_eq!(status, 400, "{err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = open_config(&["policies/seed.tsp"]);
    config.max_body_bytes = 4096;
    let server = start(config, dir.path(), None).await;
    assert_eq!(server.get("/healthz", None).await.0, 200);
    assert_eq!(server.get("/readyz", None).await.0, 200);
    let (_, openapi) = server.get("/openapi.json", None).await;
    assert_eq!(openapi["openapi"], "3.1.0");
    for path in [
        "/v1/decide",
        "/v1/approvals/{id}/grant",
        "/v1/ledger/proofs/inclusion",
        "/v1/policies/reload",
        "/v1/inputs",
        "/v1/grants",
        "/.well-known/jwks.json",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "{path} documented");
    }
    server
        .decide(None, json!({"tool": "read_docs", "agent": "spiffe://acme.example/agent/a", "chain": ["user:u@acme.example"]}))
        .await;
    // A user's instruction is recorded; one no human gave is refused precisely.
    let (status, body) = server
        .post("/v1/inputs", None, json!({"text": "scan the lab", "session": "s1", "agent": "spiffe://acme.example/agent/a", "chain": ["user:u@acme.example"]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["ledger_index"].is_u64(), "{body}");
    let (status, body) = server
        .post("/v1/inputs", None, json!({"text": "x", "principal": "user:other@acme.example", "agent": "spiffe://acme.example/agent/a", "chain": ["user:u@acme.example"]}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_contains!(body["error"].as_str().unwrap(), "not in the chain");
    let (_, metrics) = server.get("/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_string();
    for name in [
        "truststack_decisions_total{decision=\"allow\"} 1",
        "truststack_decide_seconds_bucket",
        "truststack_pending_approvals",
        "truststack_ledger_entries",
        "truststack_ledger_append_seconds",
    ] {
        assert_contains!(metrics, name, "{name} in\n{metrics}");
    }
    // Malformed JSON: a precise 400, not a crash.
    let resp = server
        .client
        .post(format!("{}/v1/decide", server.base))
        .body("{\"tool\": ")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_contains!(body["error"].as_str().unwrap(), "line 1 column");
    assert!(body["decision_id"].is_string());
    // Oversized bodies are refused.
    let big = json!({"tool": "read_docs", "agent": "spiffe://a/agent/b", "args": {"x": "y".repeat(10_000)}});
    let (status, _) = server.decide(None, big).await;
    assert_eq!(status, 413);
    // Unknown fields are rejected rather than silently ignored.
    let (status, body) = server
        .decide(
            None,
            json!({"tool": "read_docs", "agent": "spiffe://a/agent/b", "agnet": "x"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    server.stop().await;
}
