//! Several replicas on one real PostgreSQL database (`truststack_testkit::postgres`): every
//! guarantee one server gives holds for the fleet — limits, taint, held calls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{identity_service, open_config, start_replica, start_replica_with, TestServer};
use serde_json::{json, Value};
use truststack_engine::ledger::{verify_at, LedgerLocation};
use truststack_server::ServerConfig;
use truststack_testkit::net::JsonReply;
use truststack_testkit::postgres::{database, TestDatabase};
use truststack_testkit::{assert_contains, write_file};

const AGENT: &str = "spiffe://acme.example/agent/recon";
const USER: &str = "user:u@acme.example";

/// A server configuration over `db`'s ledger, signing with the key in `dir` (the replicas' one
/// key), with `policies`.
fn replica_config(db: &TestDatabase, dir: &std::path::Path, policies: &[&str]) -> ServerConfig {
    let mut config = open_config(policies);
    config.ledger.path = db.url().into();
    config.ledger.key = Some(dir.join("ledger.key"));
    config
}

async fn replicas(config: &ServerConfig, n: usize) -> Vec<TestServer> {
    let mut servers = Vec::new();
    for _ in 0..n {
        servers.push(start_replica(config.clone()).await);
    }
    servers
}

async fn stop_all(servers: Vec<TestServer>) {
    for s in servers {
        s.stop().await;
    }
}

/// Sends `calls` (agent, body) at once, call `i` to replica `i % replicas`; counts the allows.
async fn admitted(servers: &[TestServer], calls: Vec<Value>) -> usize {
    let tasks: Vec<_> = calls
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let server = &servers[i % servers.len()];
            let (http, url) = (server.client.clone(), format!("{}/v1/decide", server.base));
            tokio::spawn(async move { http.post(url).json(&body).json_reply().await })
        })
        .collect();
    let mut allowed = 0;
    for answer in futures::future::join_all(tasks).await {
        let answer: Value = answer.unwrap();
        match answer["decision"].as_str() {
            Some("allow") => allowed += 1,
            Some("deny") => {}
            _ => panic!("every call is decided: {answer}"),
        }
    }
    allowed
}

/// The report of `truststack ledger verify` on `db`'s ledger (from async code: the database
/// client blocks).
fn verified(db: &TestDatabase) -> truststack_engine::ledger::VerifyReport {
    tokio::task::block_in_place(|| {
        verify_at(&LedgerLocation::parse(db.url()).unwrap(), None).unwrap()
    })
}

/// Runs a test's servers and clients on a runtime of their own; the test's database is made
/// and dropped outside it (its client blocks).
fn run(test: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

fn scan(id: String, agent: &str, chain: &[&str]) -> Value {
    json!({"id": id, "tool": "nmap_scan", "args": {"target": "10.0.0.1"}, "agent": agent, "chain": chain})
}

#[test]
fn three_replicas_admit_exactly_the_limit_of_one_agent() {
    let (db, dir) = (database(), tempfile::tempdir().unwrap());
    run(async {
        let policy = write_file(
            dir.path(),
            "limit.tsp",
            "POLICY scans: ACTION: DENY IF Tool_Call('ScanTool').Count > 100 requests/5min\n",
        );
        let mut config = replica_config(&db, dir.path(), &[]);
        config.policies = vec![policy];
        let servers = replicas(&config, 3).await;
        let calls = (0..300)
            .map(|i| scan(format!("c{i}"), AGENT, &[USER]))
            .collect();
        assert_eq!(
            admitted(&servers, calls).await,
            100,
            "exactly the limit across three replicas"
        );
        stop_all(servers).await;
        let report = verified(&db);
        assert_eq!(
            report.entries,
            300 + 3,
            "300 decisions and 3 activations: {report:?}"
        );
    });
}

#[test]
fn a_delegation_root_limit_holds_for_agents_on_different_replicas() {
    let (db, dir) = (database(), tempfile::tempdir().unwrap());
    run(async {
        let policy = write_file(
            dir.path(),
            "limit.tsp",
            "POLICY scans: ACTION: DENY TARGET: delegation_root \
             IF Tool_Call('ScanTool').Count > 100 requests/5min\n",
        );
        let mut config = replica_config(&db, dir.path(), &[]);
        config.policies = vec![policy];
        let servers = replicas(&config, 3).await;
        let orchestrator = "spiffe://acme.example/agent/orchestrator";
        // Sub-agent `i % 3` always asks replica `i % 3`: each replica sees one of them alone.
        let calls = (0..300)
            .map(|i| {
                let agent = format!("spiffe://acme.example/agent/recon-{}", i % 3);
                scan(format!("c{i}"), &agent, &[USER, orchestrator])
            })
            .collect();
        assert_eq!(admitted(&servers, calls).await, 100);
        stop_all(servers).await;
    });
}

#[test]
fn a_taint_set_on_one_replica_denies_the_exfiltration_on_another() {
    let (db, dir) = (database(), tempfile::tempdir().unwrap());
    run(async {
        let config = replica_config(&db, dir.path(), &["policies/seed.tsp"]);
        let servers = replicas(&config, 2).await;
        let upload = json!({"tool": "http_upload", "args": {"url": "https://backup.example/x"}, "agent": AGENT, "chain": [USER]});
        let (status, d) = servers[1].decide(None, upload.clone()).await;
        assert_eq!(
            (status, d["decision"].as_str()),
            (200, Some("allow")),
            "{d}"
        );

        let (status, body) = servers[0]
            .post(
                "/v1/observations",
                None,
                json!({"agent": AGENT, "chain": [USER], "data_sources": [{"name": "Internal_Prod_DB", "mode": "read"}]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, d) = servers[1].decide(None, upload).await;
        assert_eq!(status, 200, "{d}");
        assert_eq!(d["decision"], "deny", "the taint read on A holds on B: {d}");
        stop_all(servers).await;
    });
}

#[test]
fn a_call_held_on_one_replica_is_granted_on_another_and_runs() {
    let (db, dir) = (database(), tempfile::tempdir().unwrap());
    run(async {
        let config = replica_config(&db, dir.path(), &["policies/seed.tsp"]);
        let servers = replicas(&config, 3).await;
        let (a, c) = (&servers[0], &servers[2]);
        for (tool, server) in [("nmap_scan", a), ("code_review", &servers[1])] {
            let (_, d) = server
                .decide(None, json!({"tool": tool, "args": {"target": "10.0.0.1"}, "agent": AGENT, "chain": [USER]}))
                .await;
            assert_eq!(d["decision"], "allow", "{d}");
        }
        let (_, held) = a
            .decide(None, json!({"id": "x", "tool": "exploit_runner", "args": {"target": "10.0.0.1"}, "agent": AGENT, "chain": [USER]}))
            .await;
        assert_eq!(held["decision"], "require_approval", "{held}");
        let approval = held["approval_id"].as_str().unwrap().to_string();

        // The agent waits on A while the approver answers on C.
        let waiter = {
            let url = format!("{}/v1/approvals/{approval}/wait?timeout=20s", a.base);
            let client = a.client.clone();
            tokio::spawn(async move { client.get(url).json_reply().await })
        };
        let (status, listed) = c
            .get("/v1/approvals?approver=user:oncall@acme.example", None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            listed["pending"][0]["approval_id"],
            approval.as_str(),
            "{listed}"
        );
        let (status, body) = c.grant(&approval, "user:oncall@acme.example").await;
        assert_eq!(status, 200, "{body}");
        let waited: Value = waiter.await.unwrap();
        assert_eq!(waited["status"], "answered", "{waited}");
        assert_eq!(waited["outcome"]["result"], "granted", "{waited}");
        // Used once, fleet-wide: B cannot grant it again.
        let (status, _) = servers[1]
            .grant(&approval, "user:oncall@acme.example")
            .await;
        assert_eq!(status, 404);
        stop_all(servers).await;
    });
}

#[test]
fn a_replica_that_loses_the_database_fails_closed_and_recovers_without_a_restart() {
    let (db, dir) = (database(), tempfile::tempdir().unwrap());
    run(async {
        let config = replica_config(&db, dir.path(), &["policies/seed.tsp"]);
        let server = start_replica(config).await;
        let call = |id: &str| scan(id.into(), AGENT, &[USER]);
        assert_eq!(
            server.decide(None, call("before")).await.1["decision"],
            "allow"
        );
        assert_eq!(server.get("/readyz", None).await, (200, json!("ready")));

        // The database refuses every connection, and drops those it had.
        let admin =
            |sql: String| tokio::task::block_in_place(|| db.admin().batch_execute(&sql).unwrap());
        admin(format!(
            "ALTER DATABASE \"{0}\" ALLOW_CONNECTIONS false; \
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{0}' AND pid <> pg_backend_pid()",
            db.name()
        ));
        let (status, body) = server.decide(None, call("during")).await;
        assert_eq!(status, 503, "no decision without the database: {body}");
        assert_contains!(body.to_string(), "failing closed");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (status, body) = server.get("/readyz", None).await;
            if status == 503 {
                assert_contains!(body.to_string(), "the shared database is unavailable");
                break;
            }
            assert!(
                std::time::Instant::now() < until,
                "/readyz still says {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }

        // It comes back: the same process decides again, and its log verifies.
        admin(format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true",
            db.name()
        ));
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (status, d) = server.decide(None, call("after")).await;
            if status == 200 {
                assert_eq!(d["decision"], "allow", "{d}");
                break;
            }
            assert!(std::time::Instant::now() < until, "still refused: {d}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(server.get("/readyz", None).await, (200, json!("ready")));
        server.stop().await;
        let report = verified(&db);
        assert!(report.entries >= 3, "{report:?}");
    });
}

#[test]
fn a_credential_revoked_on_one_replica_is_refused_by_another_with_its_own_issuer_files() {
    let (db, dir) = (database(), tempfile::tempdir().unwrap());
    let (issuer_a, admin) = identity_service(dir.path());
    let agent = issuer_a
        .issue(&json!({"agent": "recon", "owner": USER, "tools": ["*"]}))
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    // Replica B has a copy of the issuer's directory, not a share of it.
    let copy = dir.path().join("issuer-b");
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(dir.path().join("issuer"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(copied.success());
    let issuer_b: std::sync::Arc<dyn truststack_server::backend::IdentityService> =
        std::sync::Arc::new(truststack_server::identity_backend::IssuerService::new(
            truststack_engine::identity::Issuer::open(&copy).unwrap(),
        ));
    let mut config = replica_config(&db, dir.path(), &["policies/seed.tsp"]);
    config.require_credentials = true;
    run(async {
        let a = start_replica_with(config.clone(), Some(issuer_a)).await;
        let b = start_replica_with(config, Some(issuer_b)).await;
        let call = json!({"tool": "read_docs", "args": {"page": "intro"}});
        let (status, d) = b.decide(Some(&agent), call.clone()).await;
        assert_eq!(
            (status, d["decision"].as_str()),
            (200, Some("allow")),
            "{d}"
        );

        let (status, body) = a
            .post(
                "/v1/identities/revoke",
                Some(&admin),
                json!({"agent": "spiffe://acme.example/agent/recon", "reason": "compromised"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = b.decide(Some(&agent), call).await;
        assert_eq!(status, 401, "revoked on A, refused on B at once: {body}");
        assert_contains!(body.to_string(), "revoked");
        a.stop().await;
        b.stop().await;
    });
}
