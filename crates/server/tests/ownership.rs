//! What belongs to one identity stays its own, and what the ledger cannot record does not happen:
//! a sub-agent named like another agent gets none of its lease, rate limits or taint; a
//! revocation or an approval answer that cannot be recorded is not applied, and is the same after
//! a restart as the ledger says.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{example, open_config, start, TestServer};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use truststack_engine::identity::{Issuer, TrustDomain};
use truststack_server::backend::IdentityService;
use truststack_server::identity_backend::IssuerService;
use truststack_server::ServerConfig;
use truststack_testkit::assert_contains;
use truststack_testkit::write_file;

fn token(v: &Value) -> String {
    v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

/// An issuer in `dir/issuer`, its service, and an admin's credential.
fn identity(dir: &Path) -> (Arc<dyn IdentityService>, String) {
    let issuer = Issuer::init(
        &dir.join("issuer"),
        &TrustDomain::new("acme.example").unwrap(),
    )
    .unwrap();
    let service: Arc<dyn IdentityService> = Arc::new(IssuerService::new(issuer));
    let admin = token(
        &service
            .issue(&json!({"user": "user:root@acme.example", "roles": ["admin"]}))
            .unwrap(),
    );
    (service, admin)
}

/// Holds SQLite's write lock on the ledger file from another connection, as another writer or
/// a stuck disk would: the server's appends fail (after its busy timeout) until it is dropped.
struct LedgerLock {
    _held: rusqlite::Connection,
}

impl LedgerLock {
    fn take(dir: &Path) -> LedgerLock {
        let conn = rusqlite::Connection::open(dir.join("ledger.db")).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        LedgerLock { _held: conn }
    }
}

async fn decide(server: &TestServer, agent: &str, tool: &str, target: &str) -> Value {
    let (status, d) = server
        .decide(
            Some(agent),
            json!({"tool": tool, "args": {"target": target}}),
        )
        .await;
    assert_eq!(status, 200, "{d}");
    d
}

async fn records(server: &TestServer) -> Vec<Value> {
    let (status, body) = server.get("/v1/ledger/entries", None).await;
    assert_eq!(status, 200, "{body}");
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["record"].clone())
        .collect()
}

/// Issue 14, defect 2, as reported: fred's `victim` is held on `exploit_runner` and granted a
/// 30-minute lease; mallory's `orch` delegates to "victim" and calls `exploit_runner`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_agent_named_like_another_agent_gets_none_of_its_lease_limits_or_taint() {
    let dir = tempfile::tempdir().unwrap();
    let (service, admin) = identity(dir.path());
    // The seed's per-agent policies, and a tight per-agent scan limit to see counts apart.
    let burst = write_file(dir.path(), "burst.tsp", "POLICY scan-burst: ACTION: DENY TARGET: agent_identity IF Tool_Call('ScanTool').Count > 2 requests/1h\n");
    let mut config = open_config(&["policies/seed.tsp"]);
    config.policies.push(burst);
    config.require_credentials = true;
    let server = start(config, dir.path(), Some(service)).await;
    let issue = |body: Value| {
        let server = &server;
        let admin = admin.clone();
        async move {
            let (status, body) = server.post("/v1/identities", Some(&admin), body).await;
            assert_eq!(status, 200, "{body}");
            token(&body)
        }
    };
    let victim = issue(json!({"agent": "victim", "owner": "user:fred@acme.example",
        "tools": ["nmap_scan", "code_review", "exploit_runner", "http_upload"]}))
    .await;
    let orch = issue(
        json!({"agent": "orch", "owner": "user:mallory@acme.example",
        "tools": ["nmap_scan", "code_review", "exploit_runner"]}),
    )
    .await;
    let oncall = issue(json!({"user": "user:oncall@acme.example", "roles": ["approver"]})).await;

    // fred's victim is held on exploit_runner; an approver grants it a 30-minute lease.
    assert_eq!(
        decide(&server, &victim, "nmap_scan", "10.0.0.1").await["decision"],
        "allow"
    );
    assert_eq!(
        decide(&server, &victim, "code_review", "svc").await["decision"],
        "allow"
    );
    let held = decide(&server, &victim, "exploit_runner", "10.0.0.5").await;
    assert_eq!(held["decision"], "require_approval", "{held}");
    let grant = format!(
        "/v1/approvals/{}/grant",
        held["approval_id"].as_str().unwrap()
    );
    let (status, body) = server
        .post(&grant, Some(&oncall), json!({"lease": "30min"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let leased = decide(&server, &victim, "exploit_runner", "10.0.0.6").await;
    assert_eq!(leased["decision"], "allow");
    assert_eq!(leased["reason"], "allowed under an approver's lease");

    // mallory's orch asks for "victim": it gets its own sub-agent, below orch.
    let (status, squatter) = server
        .post(
            "/v1/identities/delegate",
            Some(&orch),
            json!({"agent": "victim", "tools": ["nmap_scan", "code_review", "exploit_runner"]}),
        )
        .await;
    assert_eq!(status, 200, "{squatter}");
    assert_eq!(
        squatter["credential"]["subject"],
        "spiffe://acme.example/agent/orch/victim"
    );
    assert_eq!(squatter["credential"]["owner"], "user:mallory@acme.example");
    let squatter = token(&squatter);
    // Nor can it name fred's agent in full.
    let (status, body) = server
        .post(
            "/v1/identities/delegate",
            Some(&orch),
            json!({"agent": "spiffe://acme.example/agent/victim", "tools": ["exploit_runner"]}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_contains!(body["error"].as_str().unwrap(), "is not below");

    // The same escalation by mallory's sub-agent is held for a human of its own: no lease.
    let d = decide(&server, &squatter, "exploit_runner", "10.0.0.5").await;
    assert_ne!(d["reason"], "allowed under an approver's lease", "{d}");
    assert!(d["policies"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["lease_until"].is_null()));
    assert_eq!(
        decide(&server, &squatter, "nmap_scan", "10.0.0.1").await["decision"],
        "allow"
    );
    // Its own trajectory completes the escalation: held for a human, as fred's was.
    let d = decide(&server, &squatter, "code_review", "svc").await;
    assert_eq!(d["decision"], "require_approval", "{d}");

    // Its scans count against its own limit, not fred's: fred's agent has one scan of 2.
    assert_eq!(
        decide(&server, &squatter, "nmap_scan", "10.0.0.2").await["decision"],
        "allow"
    );
    assert_eq!(
        decide(&server, &victim, "nmap_scan", "10.0.0.2").await["decision"],
        "allow",
        "fred's second scan is within his agent's limit"
    );
    assert_eq!(
        decide(&server, &victim, "nmap_scan", "10.0.0.3").await["decision"],
        "deny",
        "fred's third scan is over it"
    );

    // Its taint is its own: it read production data, fred's agent may still upload.
    let (status, body) = server
        .post(
            "/v1/observations",
            Some(&squatter),
            json!({"data_sources": [{"name": "Internal_Prod_DB", "mode": "read"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, d) = server
        .decide(
            Some(&victim),
            json!({"tool": "http_upload", "args": {"url": "https://backup.example/x"}}),
        )
        .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["decision"], "allow", "{d}");

    // The ledger tells the two apart: who acted, on whose authority.
    let squatter_calls: Vec<Value> = records(&server)
        .await
        .into_iter()
        .filter(|r| r["kind"] == "decision")
        .filter(|r| r["call"]["agent"] == "spiffe://acme.example/agent/orch/victim")
        .collect();
    assert_eq!(squatter_calls.len(), 4);
    assert_eq!(
        squatter_calls[0]["call"]["chain"],
        json!([
            "user:mallory@acme.example",
            "spiffe://acme.example/agent/orch"
        ])
    );
    server.stop().await;
}

/// Issue 14, defect 4: a revocation the ledger cannot record is not made, and can be retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_the_ledger_cannot_record_is_not_applied_and_a_retry_works() {
    let dir = tempfile::tempdir().unwrap();
    let (service, admin) = identity(dir.path());
    let mut config = open_config(&["policies/seed.tsp"]);
    config.require_credentials = true;
    let server = start(config, dir.path(), Some(service)).await;
    let (_, agent) = server
        .post(
            "/v1/identities",
            Some(&admin),
            json!({"agent": "a", "owner": "user:u@acme.example", "tools": ["nmap_scan"]}),
        )
        .await;
    let agent = token(&agent);
    let list = dir.path().join("issuer/revocations.json");
    let (status, body) = server
        .post(
            "/v1/identities/revoke",
            Some(&admin),
            json!({"jti": "some-other-credential"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let before = std::fs::read(&list).unwrap();

    let lock = LedgerLock::take(dir.path());
    let (status, body) = server
        .post("/v1/identities/revoke", Some(&admin), json!({"agent": "a"}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_contains!(body["error"].as_str().unwrap(), "not applied");
    assert_eq!(std::fs::read(&list).unwrap(), before, "nothing was changed");
    drop(lock);

    // The credential still works: the revocation did not happen.
    assert_eq!(
        decide(&server, &agent, "nmap_scan", "10.0.0.1").await["decision"],
        "allow"
    );
    let (status, body) = server
        .post("/v1/identities/revoke", Some(&admin), json!({"agent": "a"}))
        .await;
    assert_eq!(status, 200, "the retry is not `already revoked`: {body}");
    let index = body["ledger_index"].as_u64().unwrap();
    let recorded = records(&server).await;
    assert_eq!(
        recorded[usize::try_from(index).unwrap()]["identity"],
        "spiffe://acme.example/agent/a"
    );
    assert_eq!(
        recorded
            .iter()
            .filter(|r| r["kind"] == "identity_revoked")
            .count(),
        2
    );
    let (status, body) = server
        .decide(
            Some(&agent),
            json!({"tool": "nmap_scan", "args": {"target": "10.0.0.1"}}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    server.stop().await;
}

fn held_config() -> ServerConfig {
    let mut config = open_config(&["policies/seed.tsp"]);
    config.catalog = Some(example("catalog.toml"));
    config
}

async fn pending(server: &TestServer) -> Vec<String> {
    let (status, body) = server
        .get("/v1/approvals?approver=user:oncall@acme.example", None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["approval_id"].as_str().unwrap().to_string())
        .collect()
}

/// Issue 14, defect 6: an answer the ledger cannot record leaves the call held, in memory as in
/// the ledger, before and after a restart; once the ledger is writable it can be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_ledger_cannot_record_leaves_the_call_held_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(held_config(), dir.path(), None).await;
    let who = json!({"agent": "spiffe://acme.example/agent/a", "chain": ["user:u@acme.example"]});
    let call = |tool: &str| {
        let mut c = who.clone();
        c["tool"] = json!(tool);
        c["args"] = json!({"target": "10.0.0.5"});
        c
    };
    for tool in ["nmap_scan", "code_review"] {
        assert_eq!(server.decide(None, call(tool)).await.1["decision"], "allow");
    }
    let (_, held) = server.decide(None, call("exploit_runner")).await;
    assert_eq!(held["decision"], "require_approval", "{held}");
    let id = held["approval_id"].as_str().unwrap().to_string();
    let answer = json!({"approver": "user:oncall@acme.example"});

    let lock = LedgerLock::take(dir.path());
    for verb in ["grant", "refuse"] {
        let (status, body) = server
            .post(&format!("/v1/approvals/{id}/{verb}"), None, answer.clone())
            .await;
        assert_eq!(status, 503, "{verb}: {body}");
        assert_contains!(body["error"].as_str().unwrap(), "stays held");
    }
    drop(lock);
    assert_eq!(
        pending(&server).await,
        std::slice::from_ref(&id),
        "still held"
    );
    server.stop().await;

    let server = start(held_config(), dir.path(), None).await;
    assert_eq!(
        pending(&server).await,
        std::slice::from_ref(&id),
        "held after a restart, as the ledger says"
    );
    let (status, body) = server
        .post(&format!("/v1/approvals/{id}/grant"), None, answer)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "granted");
    server.stop().await;

    let server = start(held_config(), dir.path(), None).await;
    assert!(pending(&server).await.is_empty(), "answered for good");
    let answers = records(&server)
        .await
        .into_iter()
        .filter(|r| r["kind"] == "approval")
        .count();
    assert_eq!(answers, 1, "one answer recorded: the one applied");
    server.stop().await;
}
