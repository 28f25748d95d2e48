//! The API against hostile input, over real HTTP on loopback with a real SQLite ledger: JSON
//! nested deeper than any reader reads, a ledger that already holds such a record, oversized and
//! malformed requests, and a crowd of approval waiters.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config_with_policy, start};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use truststack_engine::identity::{Issuer, TrustDomain};
use truststack_engine::ledger::{Ledger, LedgerConfig};
use truststack_server::backend::IdentityService;
use truststack_server::identity_backend::IssuerService;
use truststack_testkit::assert_contains;
use truststack_testkit::net::JsonReply;

fn nested(levels: usize) -> Value {
    let mut v = json!([]);
    for _ in 1..levels {
        v = json!([v]);
    }
    v
}

fn nested_text(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

async fn post_text(
    server: &common::TestServer,
    path: &str,
    token: Option<&str>,
    body: String,
) -> (u16, Value) {
    let req = server
        .client
        .post(format!("{}{path}", server.base))
        .header("content-type", "application/json")
        .body(body);
    common::answer(req, token).await
}

const LIMITED: &str = "POLICY scans: ACTION: DENY TARGET: agent_identity IF Tool_Call('ScanTool').Count > 2 requests/1h\n\
POLICY gate: ACTION: REQUIRE_HITL TARGET: agent_identity IF Tool_Call('ExploitationTool')\n";

const AGENT: &str = "spiffe://acme.example/agent/recon";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_nested_past_the_limit_is_refused_at_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = config_with_policy(dir.path(), "limits.tsp", LIMITED);
    let server = start(config, dir.path(), None).await;

    // The report's request: `args` nested 126 levels deep.
    let body = format!(
        r#"{{"tool":"nmap_scan","agent":"{AGENT}","chain":["user:op@acme.example"],"args":{}}}"#,
        nested_text(126)
    );
    let (status, answer) = post_text(&server, "/v1/decide", None, body).await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert_contains!(error, "more than 64 levels deep at line 1 column");
    assert!(answer["decision_id"].is_string(), "{answer}");

    let body = format!(
        r#"{{"tool":"nmap_scan","agent":"{AGENT}","chain":[],"result":{{"rows":{}}}}}"#,
        nested_text(126)
    );
    let (status, answer) = post_text(&server, "/v1/observations", None, body).await;
    assert_eq!(status, 400, "{answer}");

    // At the limit it is accepted, recorded and read back.
    let (status, d) = server
        .decide(None, json!({"tool": "nmap_scan", "agent": AGENT, "chain": ["user:op@acme.example"], "args": {"deep": nested(62)}}))
        .await;
    assert_eq!(status, 200, "{d}");
    let index = d["ledger_index"].as_u64().unwrap();
    let (status, entries) = server
        .get(
            &format!("/v1/ledger/entries?start={index}&end={}", index + 1),
            None,
        )
        .await;
    assert_eq!(status, 200, "{entries}");
    assert!(entries["entries"][0].get("truncated").is_none());
    server.stop().await;
}

/// A ledger that already holds a record nested deeper than readers read (written before the
/// limit existed, straight through the ledger API) no longer stops anything: the server starts,
/// reloads, lists the entry (saying it was cut), shows it in an approval's trajectory, and
/// still counts the call it records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_deep_record_in_the_ledger_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = config_with_policy(dir.path(), "limits.tsp", LIMITED);

    // One real allowed scan, to copy its record.
    let server = start(config.clone(), dir.path(), None).await;
    let (_, d) = server
        .decide(None, json!({"id": "scan-1", "tool": "nmap_scan", "agent": AGENT, "chain": ["user:op@acme.example"], "args": {"target": "10.0.0.1"}}))
        .await;
    assert_eq!(d["decision"], "allow", "{d}");
    let first = d["ledger_index"].as_u64().unwrap();
    server.stop().await;

    let deep_index = {
        let ledger = Ledger::open(
            &dir.path().join("ledger.db"),
            &LedgerConfig::new(dir.path().join("ledger.key")),
        )
        .unwrap();
        let mut record = ledger.entry(first).unwrap().record().unwrap();
        record["call"]["id"] = json!("scan-deep");
        // What the server wrote before the limit, for the report's 126-deep `args`: a record
        // 128 levels deep, one more than serde_json reads.
        record["call"]["args"] = nested(126);
        let index = ledger.append(&record).unwrap();
        let raw = ledger.entry(index).unwrap();
        assert!(
            serde_json::from_slice::<Value>(&raw.data).is_err(),
            "deeper than serde_json reads"
        );
        index
    };

    // It starts, and the deep record counts: two scans are in the window, the third is over.
    let server = start(config, dir.path(), None).await;
    let (status, d) = server
        .decide(None, json!({"tool": "nmap_scan", "agent": AGENT, "chain": ["user:op@acme.example"], "args": {"target": "10.0.0.2"}}))
        .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(
        d["decision"], "deny",
        "the over-deep call still counts: {d}"
    );

    let (status, body) = server.post("/v1/policies/reload", None, json!({})).await;
    assert_eq!(status, 200, "{body}");

    let (status, entries) = server.get("/v1/ledger/entries", None).await;
    assert_eq!(status, 200, "{entries}");
    let entry = &entries["entries"][usize::try_from(deep_index).unwrap()];
    assert_eq!(entry["truncated"], 1, "{entry}");
    assert_eq!(entry["record"]["call"]["tool"], "nmap_scan");

    let (_, held) = server
        .decide(
            None,
            json!({"tool": "exploit_runner", "agent": AGENT, "chain": ["user:op@acme.example"]}),
        )
        .await;
    let approval = held["approval_id"].as_str().unwrap();
    let (status, shown) = server
        .get(
            &format!("/v1/approvals/{approval}?approver=user:oncall@acme.example"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{shown}");
    let ids: Vec<&str> = shown["trajectory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["call_id"].as_str().unwrap_or(""))
        .collect();
    assert!(ids.contains(&"scan-deep"), "{shown}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_with_a_decision_id() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = config_with_policy(dir.path(), "limits.tsp", LIMITED);
    config.max_body_bytes = 4096;
    let server = start(config, dir.path(), None).await;

    let big = format!(r#"{{"tool":"{}"}}"#, "x".repeat(10_000));
    let (status, answer) = post_text(&server, "/v1/decide", None, big).await;
    assert_eq!(status, 413, "{answer}");
    assert_contains!(answer["error"].as_str().unwrap(), "4096 bytes");
    assert!(answer["decision_id"].is_string(), "{answer}");

    for path in [
        "/v1/ledger/entries?start=abc",
        "/v1/ledger/proofs/inclusion?index=-1",
        "/v1/no-such-thing",
    ] {
        let (status, answer) = server.get(path, None).await;
        assert!((400..500).contains(&status), "{path}: {status}");
        assert!(answer["error"].is_string(), "{path}: {answer}");
        assert!(answer["decision_id"].is_string(), "{path}: {answer}");
    }
    let (status, answer) = server.get("/v1/ledger/entries?start=abc", None).await;
    assert_eq!(status, 400);
    assert_contains!(answer["error"].as_str().unwrap(), "start");
    server.stop().await;
}

struct Credentials {
    service: Arc<dyn IdentityService>,
    admin: String,
    approver: String,
}

fn credentials(dir: &std::path::Path) -> Credentials {
    let issuer = Issuer::init(
        &dir.join("issuer"),
        &TrustDomain::new("acme.example").unwrap(),
    )
    .unwrap();
    let service: Arc<dyn IdentityService> = Arc::new(IssuerService::new(issuer));
    let token = |req: Value| {
        service.issue(&req).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let admin = token(json!({"user": "user:root@acme.example", "roles": ["admin"]}));
    let approver = token(json!({"user": "user:oncall@acme.example", "roles": ["approver"]}));
    Credentials {
        service,
        admin,
        approver,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_requests_refuse_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path());
    let (mut config, _) = config_with_policy(dir.path(), "limits.tsp", LIMITED);
    config.require_credentials = true;
    let server = start(config, dir.path(), Some(Arc::clone(&creds.service))).await;
    let admin = Some(creds.admin.as_str());

    let (status, answer) = server
        .post(
            "/v1/identities",
            admin,
            json!({"user": "user:x@acme.example", "roles": ["admin"], "bogus": 1}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("unknown field `bogus`") && error.contains("line 1"),
        "{error}"
    );
    let (status, answer) = server
        .post(
            "/v1/identities/revoke",
            admin,
            json!({"jti": "x", "everything": true}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let (status, orch) = server
        .post(
            "/v1/identities",
            admin,
            json!({"agent": "orch", "owner": "user:op@acme.example", "tools": ["ScanTool"]}),
        )
        .await;
    assert_eq!(status, 200, "{orch}");
    let (status, answer) = server
        .post(
            "/v1/identities/delegate",
            orch["token"].as_str(),
            json!({"agent": "sub", "tools": ["ScanTool"], "roles": ["admin"]}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    server.stop().await;
}

/// Approval waits need a credential (the held call's agent, or an approver), are bounded per
/// caller, hold no thread (a crowd of them does not slow a grant down), and end at once when
/// the server shuts down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_waits_are_authorised_bounded_and_end_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path());
    let agent_token = |name: &str| {
        creds
            .service
            .issue(&json!({"agent": name, "owner": "user:op@acme.example", "tools": ["exploit_runner", "nmap_scan"]}))
            .unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let recon = agent_token("recon");
    let other = agent_token("other");
    let (mut config, _) = config_with_policy(dir.path(), "limits.tsp", LIMITED);
    config.require_credentials = true;
    config.max_waits_per_caller = 8;
    config.max_waits = 200;
    let server = start(config, dir.path(), Some(Arc::clone(&creds.service))).await;

    let (status, held) = server
        .decide(Some(&recon), json!({"tool": "exploit_runner"}))
        .await;
    assert_eq!(status, 200, "{held}");
    let approval = held["approval_id"].as_str().unwrap().to_string();
    let wait_path = format!("/v1/approvals/{approval}/wait?timeout=50s");

    // 600 anonymous waiters are turned away at once.
    let started = Instant::now();
    let anonymous: Vec<_> = (0..600)
        .map(|_| {
            let (client, url) = (server.client.clone(), format!("{}{wait_path}", server.base));
            tokio::spawn(async move { client.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    for w in anonymous {
        assert_eq!(w.await.unwrap(), 401);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let (status, answer) = server.get(&wait_path, Some(&other)).await;
    assert_eq!(status, 403, "another agent may not wait on it: {answer}");

    // The agent itself and approvers may wait, each up to its share.
    let spawn_wait = |token: String| {
        let (client, url) = (server.client.clone(), format!("{}{wait_path}", server.base));
        tokio::spawn(async move { client.get(url).bearer_auth(token).status_reply().await })
    };
    let mut waiters: Vec<_> = (0..8).map(|_| spawn_wait(recon.clone())).collect();
    waiters.extend((0..8).map(|_| spawn_wait(creds.approver.clone())));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, answer) = server.get(&wait_path, Some(&recon)).await;
    assert_eq!(status, 429, "past the caller's share: {answer}");
    assert!(answer["decision_id"].is_string());

    // A grant is not slowed down by them, and wakes them all.
    let started = Instant::now();
    let (status, granted) = server
        .post(
            &format!("/v1/approvals/{approval}/grant"),
            Some(&creds.approver),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{granted}");
    for w in waiters {
        let (status, body) = w.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "answered", "{body}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Slots are given back when the waits end.
    let (status, body) = server.get(&wait_path, Some(&recon)).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("answered")),
        "{body}"
    );

    // Shutdown ends the waits at once instead of draining them for 50 s.
    let (_, held) = server
        .decide(Some(&recon), json!({"tool": "exploit_runner"}))
        .await;
    let approval = held["approval_id"].as_str().unwrap().to_string();
    let wait_path = format!("/v1/approvals/{approval}/wait?timeout=50s");
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let (client, url, token) = (
                server.client.clone(),
                format!("{}{wait_path}", server.base),
                creds.approver.clone(),
            );
            tokio::spawn(async move { client.get(url).bearer_auth(token).json_reply().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    for w in waiters {
        assert_eq!(w.await.unwrap()["status"], "pending");
    }
}
