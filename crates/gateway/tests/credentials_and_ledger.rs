//! The gateway with an issuer and a ledger configured: the agent comes from a signed credential,
//! tools outside it are refused, approvers authenticate with their own credentials, a revocation
//! made by another process takes effect on the next call and is recorded, every decision is in a
//! ledger that verifies, and a restarted gateway keeps the monitors' state.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fixture, text, Client, CATALOG, POLICIES};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use truststack_engine::identity::{
    AgentId, AgentRequest, DelegationRequest, Issuer, ToolSet, TrustDomain, UserId, UserRequest,
};
use truststack_engine::ledger::Ledger;
use truststack_gateway::{approvals, GatewayConfig};
use truststack_testkit::assert_contains;
use truststack_testkit::write_file;

struct Tokens {
    recon: String,
    recon_jti: String,
    orchestrator_jti: String,
    alice: String,
    bob: String,
    carol: String,
}

fn issue(dir: &Path) -> Tokens {
    let td = TrustDomain::new("acme.example").unwrap();
    let issuer = Issuer::init(&dir.join("issuer"), &td).unwrap();
    let orchestrator = issuer
        .issue_agent(&AgentRequest {
            agent: AgentId::new(&td, "orchestrator").unwrap(),
            owner: UserId::parse("user:alice@acme.example").unwrap(),
            tools: ToolSet::parse_list("Benign,ScanTool").unwrap(),
            ttl: Duration::from_secs(3600),
            audience: None,
        })
        .unwrap();
    let recon = issuer
        .delegate(
            &orchestrator.token,
            &DelegationRequest {
                agent: "recon".into(),
                tools: ToolSet::parse_list("ScanTool").unwrap(),
                ttl: None,
            },
        )
        .unwrap();
    let user = |name: &str, roles: &[&str]| {
        issuer
            .issue_user(&UserRequest {
                user: UserId::parse(name).unwrap(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                groups: vec![],
                ttl: Duration::from_secs(3600),
                audience: None,
            })
            .unwrap()
            .token
    };
    Tokens {
        recon_jti: recon.credential.jti.clone(),
        recon: recon.token,
        orchestrator_jti: orchestrator.credential.jti.clone(),
        alice: user("user:alice@acme.example", &["approver"]),
        bob: user("user:bob@acme.example", &["approver"]),
        carol: user("user:carol@acme.example", &[]),
    }
}

fn config(dir: &Path) -> GatewayConfig {
    std::fs::write(dir.join("catalog.toml"), CATALOG).unwrap();
    std::fs::write(dir.join("policies.tsp"), POLICIES).unwrap();
    let toml = format!(
        "policies = [\"policies.tsp\"]\ncatalog = \"catalog.toml\"\nunknown_tools = \"allow\"\n\
         [identity]\nissuer = \"issuer\"\nallow_anonymous = false\n\
         [ledger]\npath = \"ledger.db\"\n\
         [limits]\nprogress_interval = \"50ms\"\n\
         [[upstream]]\nname = \"fake\"\ncommand = [\"python3\", \"-u\", \"{}\"]\n",
        fixture("fake_server.py").display()
    );
    let path = write_file(dir, "gateway.toml", toml);
    GatewayConfig::load(&path).unwrap()
}

/// Serves the approvals endpoint of `client`'s engine, authenticating with the issuer in `dir`.
async fn approvals_endpoint(client: &Client, dir: &Path) -> String {
    let issuer = Arc::new(Issuer::open(&dir.join("issuer")).unwrap());
    let router = approvals::router(Arc::clone(&client.engine), None, Some(issuer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// `POST /v1/approvals/{id}/grant` (or `/refuse` when `body` says `"grant": false`).
async fn answer(base: &str, id: &str, token: Option<&str>, mut body: Value) -> (u16, Value) {
    let grant = body
        .as_object_mut()
        .and_then(|m| m.remove("grant"))
        .is_none_or(|g| g == json!(true));
    let verb = if grant { "grant" } else { "refuse" };
    let mut r = reqwest::Client::new()
        .post(format!("{base}/v1/approvals/{id}/{verb}"))
        .json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_credentials_authenticated_approvers_revocation_and_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = issue(dir.path());

    // A token that is not one of the issuer's is refused before the session starts.
    let forged = format!("{}x", tokens.recon);
    let gw = truststack_gateway::Gateway::from_config(config(dir.path())).unwrap();
    let (_, sink) = tokio::io::duplex(64);
    let err = gw
        .serve_stdio(tokio::io::empty(), sink, Some(&forged))
        .await
        .unwrap_err()
        .to_string();
    assert_contains!(err, "not valid");
    drop(gw);

    let mut c = Client::start(config(dir.path()), Some(&tokens.recon)).await;
    c.initialize("2025-11-25").await;
    let base = approvals_endpoint(&c, dir.path()).await;

    // The credential names ScanTool only: echo is refused before any policy is evaluated.
    let r = c.call(1, "echo", json!({"text": "hi"})).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert_contains!(text(&r), "credential");

    // A scan is held for a human; the agent and chain come from the credential.
    let id = 2;
    c.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "nmap_scan", "arguments": {"target": "10.0.0.5"}}}))
        .await;
    let pending = held(&c).await;
    let held = &pending[0];
    assert_eq!(
        held.call.agent,
        "spiffe://acme.example/agent/orchestrator/recon"
    );
    assert_eq!(
        held.call.chain,
        [
            "user:alice@acme.example",
            "spiffe://acme.example/agent/orchestrator"
        ]
    );
    let aid = held.approval_id.clone();
    let grant = json!({"grant": true});
    let (status, body) = answer(&base, &aid, None, grant.clone()).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = answer(
        &base,
        &aid,
        None,
        json!({"approver": "user:bob@acme.example", "grant": true}),
    )
    .await;
    assert_eq!(
        status, 401,
        "a name in the body is not a credential: {body}"
    );
    let (status, body) = answer(&base, &aid, Some(&tokens.recon), grant.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert_contains!(body["error"].as_str().unwrap(), "agent");
    let (status, body) = answer(&base, &aid, Some(&tokens.carol), grant.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert_contains!(body["error"].as_str().unwrap(), "approver");
    let (status, body) = answer(&base, &aid, Some(&tokens.alice), grant.clone()).await;
    assert_eq!(status, 403, "the launching human may not approve: {body}");
    let (status, body) = answer(
        &base,
        &aid,
        Some(&tokens.bob),
        json!({"approver": "user:alice@acme.example", "grant": true}),
    )
    .await;
    assert_eq!(status, 403, "the body may not name someone else: {body}");
    let (status, body) = answer(&base, &aid, Some(&tokens.bob), grant.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approver"], "user:bob@acme.example");
    let r = c.response(json!(id)).await;
    assert_eq!(text(&r), "fake called nmap_scan");

    // Revoking the orchestrator's credential in another process (the CLI) revokes what was
    // delegated from it, on the recon agent's very next call.
    let other = Issuer::open(&dir.path().join("issuer")).unwrap();
    other
        .revoke_jti(&tokens.orchestrator_jti, "user:secops@acme.example", None)
        .unwrap();
    let r = c.call(3, "nmap_scan", json!({"target": "10.0.0.6"})).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert_contains!(text(&r), "revoked");
    c.close().await;

    // Every decision and approval is in the ledger, which verifies.
    let ledger = Ledger::open_read_only(&dir.path().join("ledger.db")).unwrap();
    let kinds: Vec<String> = ledger
        .entries(0..ledger.len())
        .unwrap()
        .iter()
        .map(|e| e.record().unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("policy_activation"));
    assert!(kinds.iter().filter(|k| *k == "decision").count() >= 2);
    assert!(kinds.iter().any(|k| k == "approval"), "{kinds:?}");
    // The revocation made by the other process is in the ledger too, once.
    assert_eq!(
        kinds.iter().filter(|k| *k == "identity_revoked").count(),
        1,
        "{kinds:?}"
    );
    let records: Vec<Value> = ledger
        .entries(0..ledger.len())
        .unwrap()
        .iter()
        .map(|e| e.record().unwrap())
        .collect();
    assert!(records.iter().any(
        |r| r["credential_id"] == tokens.recon_jti || r.to_string().contains(&tokens.recon_jti)
    ));
    drop(ledger);
    let report = truststack_engine::ledger::verify_file(&dir.path().join("ledger.db"), None);
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_remembers_what_the_ledger_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = issue(dir.path());
    // A credential with Benign tools: reading the docs taints the agent, so a later echo is
    // denied, also by a gateway started afresh on the same ledger.
    let reader = reader(dir.path());
    drop(tokens);
    let mut c = Client::start(config(dir.path()), Some(&reader)).await;
    c.initialize("2025-11-25").await;
    let r = c.call(1, "echo", json!({"text": "before"})).await;
    assert_eq!(text(&r), "fake: before");
    let r = c.call(2, "read_docs", json!({})).await;
    assert_ne!(r["result"]["isError"], true, "{r}");
    c.close_released(&dir.path().join("ledger.db")).await;

    let mut c = Client::start(config(dir.path()), Some(&reader)).await;
    c.initialize("2025-11-25").await;
    let r = c.call(3, "echo", json!({"text": "after"})).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert_contains!(text(&r), "no-echo-after-docs");
    c.close().await;
}

/// The credential of an agent of Alice's allowed the Benign tools (docs and echo).
fn reader(dir: &Path) -> String {
    let td = TrustDomain::new("acme.example").unwrap();
    Issuer::open(&dir.join("issuer"))
        .unwrap()
        .issue_agent(&AgentRequest {
            agent: AgentId::new(&td, "reader").unwrap(),
            owner: UserId::parse("user:alice@acme.example").unwrap(),
            tools: ToolSet::parse_list("Benign").unwrap(),
            ttl: Duration::from_secs(3600),
            audience: None,
        })
        .unwrap()
        .token
}

/// The calls `client`'s engine holds, once it holds one.
async fn held(client: &Client) -> Vec<truststack_engine::PendingApproval> {
    for _ in 0..400 {
        let pending = client.engine.pending();
        if !pending.is_empty() {
            return pending;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no call is held");
}

/// A human credential with the `approver` role and these groups.
fn approver(dir: &Path, name: &str, groups: &[&str]) -> String {
    Issuer::open(&dir.join("issuer"))
        .unwrap()
        .issue_user(&UserRequest {
            user: UserId::parse(name).unwrap(),
            roles: vec!["approver".into()],
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ttl: Duration::from_secs(3600),
            audience: None,
        })
        .unwrap()
        .token
}

/// A policy's `APPROVERS` group binds the gateway's approvers as it binds the server's: the
/// same policy file gives the same separation of duties whichever component loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_group_binds_the_gateway_as_it_binds_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = issue(dir.path());
    let config = config(dir.path());
    let gated = POLICIES.replace(
        "REASON: \"every scan needs a human\"",
        "REASON: \"every scan needs a human\"\n  APPROVERS: security-oncall",
    );
    std::fs::write(dir.path().join("policies.tsp"), gated).unwrap();
    let oncall = approver(dir.path(), "user:oncall@acme.example", &["security-oncall"]);

    let mut c = Client::start(config, Some(&tokens.recon)).await;
    c.initialize("2025-11-25").await;
    let base = approvals_endpoint(&c, dir.path()).await;
    c.send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "nmap_scan", "arguments": {"target": "10.0.0.5"}}}))
        .await;
    let pending = held(&c).await;
    let aid = pending[0].approval_id.clone();
    assert_eq!(pending[0].approvers, ["security-oncall"]);

    // Bob holds the approver role but not the group: refused, and the call stays held.
    let (status, body) = answer(&base, &aid, Some(&tokens.bob), json!({"grant": true})).await;
    assert_eq!(status, 403, "{body}");
    assert_contains!(body["error"].as_str().unwrap(), "security-oncall");
    assert!(c.engine.is_pending(&aid));
    let (status, body) = answer(&base, &aid, Some(&oncall), json!({"grant": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approver"], "user:oncall@acme.example");
    let r = c.response(json!(1)).await;
    assert_eq!(text(&r), "fake called nmap_scan");
    c.close().await;
}

/// The catalog's `record` mode applies to the result the client received, in one place: a
/// `hash` or `redacted` result recorded by the gateway can be proved later against the result
/// disclosed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_recorded_by_the_gateway_can_be_proved_against_the_disclosed_result() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let catalog = CATALOG
        .replace(
            "[tools.echo]\nclasses = [\"Benign\"]",
            "[tools.echo]\nclasses = [\"Benign\"]\nrecord = \"redacted\"",
        )
        .replace(
            "data_source = { name = \"Internal_Docs\", mode = \"read\" }",
            "data_source = { name = \"Internal_Docs\", mode = \"read\" }\nrecord = \"hash\"",
        );
    std::fs::write(dir.path().join("catalog.toml"), catalog).unwrap();
    issue(dir.path());
    let reader = reader(dir.path());
    let mut c = Client::start(config, Some(&reader)).await;
    c.initialize("2025-11-25").await;
    let echoed = c.call(1, "echo", json!({"text": "secret"})).await;
    assert_eq!(text(&echoed), "fake: secret");
    let docs = c.call(2, "read_docs", json!({})).await;
    assert_ne!(docs["result"]["isError"], true, "{docs}");
    c.close_released(&dir.path().join("ledger.db")).await;

    let ledger = Ledger::open_read_only(&dir.path().join("ledger.db")).unwrap();
    let stored: Vec<(String, Value)> = ledger
        .entries(0..ledger.len())
        .unwrap()
        .iter()
        .map(|e| e.record().unwrap())
        .filter(|r| r["kind"] == "observation")
        .map(|r| {
            let o = &r["observation"];
            (o["tool"].as_str().unwrap().to_string(), o["result"].clone())
        })
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    for (tool, disclosed) in [("echo", &echoed["result"]), ("read_docs", &docs["result"])] {
        let (_, kept) = stored.iter().find(|(t, _)| t == tool).unwrap();
        assert!(
            !kept.to_string().contains("secret") && kept.get("content").is_none(),
            "{tool}: the ledger keeps only a digest: {kept}"
        );
        assert!(
            truststack_engine::ledger::prove_disclosure(disclosed, kept),
            "{tool}: {kept} does not commit to {disclosed}"
        );
    }
    assert_eq!(stored[0].1["redacted"], true, "{:?}", stored[0]);
}

/// While a call's decision waits for the ledger, the session still answers: the gateway awaits
/// durability instead of parking the runtime's only worker until the write is done.
#[tokio::test(flavor = "current_thread")]
async fn a_call_waiting_for_the_ledger_does_not_stall_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = issue(dir.path());
    let mut c = Client::start(config(dir.path()), Some(&tokens.recon)).await;
    c.initialize("2025-11-25").await;
    // Another connection holds the database's write lock: the decision's commit waits for it.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (locked, is_locked) = std::sync::mpsc::channel::<()>();
    let db = dir.path().join("ledger.db");
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked.send(()).unwrap();
        // Released when the session has answered meanwhile; else after a while, to report.
        let answered_meanwhile = released.recv_timeout(Duration::from_secs(8)).is_ok();
        conn.execute_batch("ROLLBACK").unwrap();
        answered_meanwhile
    });
    is_locked.recv().unwrap();
    c.send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "nmap_scan", "arguments": {"target": "8.8.8.8"}}}))
        .await;
    // A request that needs no ledger write (a tools/list may write first-seen tool pins).
    let pong = c.request(2, "ping", json!({})).await;
    assert!(pong.get("result").is_some(), "{pong}");
    let _ = release.send(());
    assert!(
        holder.join().unwrap(),
        "ping was answered only once the ledger write finished"
    );
    let r = c.response(json!(1)).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert_contains!(text(&r), "external-scan");
    c.close().await;
}
