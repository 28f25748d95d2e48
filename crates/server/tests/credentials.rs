//! The API with credentials required (the default): identity comes only from verified tokens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{identity_service, open_config, start};
use serde_json::json;
use truststack_testkit::assert_contains;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_comes_from_the_credential_and_approvals_from_approvers() {
    let dir = tempfile::tempdir().unwrap();
    let (service, admin) = identity_service(dir.path());
    let mut config = open_config(&["policies/delegation-root.tsp"]);
    config.require_credentials = true;
    let server = start(config, dir.path(), Some(service)).await;

    // Issue an orchestrator for the operator, and delegate a narrower credential to recon.
    let (status, orch) = server
        .post("/v1/identities", Some(&admin), json!({"agent": "orchestrator", "owner": "user:operator@acme.example", "tools": ["ScanTool", "CodeAnalysisTool", "ExploitationTool"], "ttl": "1h"}))
        .await;
    assert_eq!(status, 200, "{orch}");
    assert!(orch["ledger_index"].is_u64(), "issuance is a ledger record");
    let orch = orch["token"].as_str().unwrap().to_string();
    let recon = server
        .issued(
            "/v1/identities/delegate",
            Some(&orch),
            json!({"agent": "recon", "tools": ["ScanTool"]}),
        )
        .await;
    let (status, wider) = server
        .post(
            "/v1/identities/delegate",
            Some(&recon),
            json!({"agent": "sneaky", "tools": ["ScanTool", "ExploitationTool"]}),
        )
        .await;
    assert_eq!(status, 403, "a delegation cannot widen tools: {wider}");

    // No credential, or an identity claimed in the body: refused.
    let (status, _) = server.decide(None, json!({"tool": "nmap_scan"})).await;
    assert_eq!(status, 401);
    let (status, body) = server
        .decide(
            Some(&recon),
            json!({"tool": "nmap_scan", "agent": "spiffe://acme.example/agent/admin"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // The agent and chain come from the token.
    let (status, d) = server
        .decide(
            Some(&recon),
            json!({"id": "s1", "tool": "nmap_scan", "args": {"target": "10.0.0.1"}}),
        )
        .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["decision"], "allow");
    let (_, entries) = server
        .get(
            &format!(
                "/v1/ledger/entries?start={}&end={}",
                d["ledger_index"],
                d["ledger_index"].as_u64().unwrap() + 1
            ),
            None,
        )
        .await;
    let call = &entries["entries"][0]["record"]["call"];
    assert_eq!(
        call["agent"],
        "spiffe://acme.example/agent/orchestrator/recon"
    );
    assert_eq!(
        call["chain"],
        json!([
            "user:operator@acme.example",
            "spiffe://acme.example/agent/orchestrator"
        ])
    );

    // A tool outside the credential is denied before any policy.
    let (_, d) = server
        .decide(Some(&recon), json!({"tool": "exploit_runner", "args": {}}))
        .await;
    assert_eq!(d["decision"], "deny");
    assert_contains!(
        d["reason"].as_str().unwrap(),
        "does not allow tool `exploit_runner`"
    );

    // The orchestration's escalation is held.
    server
        .decide(Some(&orch), json!({"tool": "code_review"}))
        .await;
    let (_, held) = server
        .decide(
            Some(&orch),
            json!({"tool": "exploit_runner", "args": {"target": "10.0.0.1"}}),
        )
        .await;
    assert_eq!(held["decision"], "require_approval", "{held}");
    let approval = held["approval_id"].as_str().unwrap();

    let operator = server.issued("/v1/identities", Some(&admin), json!({"user": "user:operator@acme.example", "roles": ["approver"], "groups": ["security-oncall"]})).await;
    let outsider = server
        .issued(
            "/v1/identities",
            Some(&admin),
            json!({"user": "user:dev@acme.example", "roles": ["approver"]}),
        )
        .await;
    let no_role = server
        .issued(
            "/v1/identities",
            Some(&admin),
            json!({"user": "user:intern@acme.example", "groups": ["security-oncall"]}),
        )
        .await;
    let oncall = server.issued("/v1/identities", Some(&admin), json!({"user": "user:oncall@acme.example", "roles": ["approver"], "groups": ["security-oncall"]})).await;

    let grant = format!("/v1/approvals/{approval}/grant");
    let (status, body) = server.post(&grant, Some(&orch), json!({})).await;
    assert_eq!(status, 401, "an agent cannot approve: {body}");
    let (status, body) = server.post(&grant, Some(&no_role), json!({})).await;
    assert_eq!(status, 403, "no approver role: {body}");
    let (status, body) = server.post(&grant, Some(&operator), json!({})).await;
    assert_eq!(status, 403, "{body}");
    assert_contains!(body["error"].as_str().unwrap(), "separation of duties");
    let (status, body) = server.post(&grant, Some(&outsider), json!({})).await;
    assert_eq!(status, 403, "{body}");
    assert_contains!(
        body["error"].as_str().unwrap(),
        "security-oncall",
        "not in the policy's approver group: {body}"
    );
    let (status, body) = server
        .post(&grant, Some(&oncall), json!({"lease": "10min"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approver"], "user:oncall@acme.example");
    assert_eq!(body["result"], "granted");

    // Revoking the orchestrator cuts off what was delegated from it, on the next call.
    let (status, body) = server
        .post(
            "/v1/identities/revoke",
            Some(&admin),
            json!({"agent": "orchestrator"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .decide(
            Some(&recon),
            json!({"tool": "nmap_scan", "args": {"target": "10.0.0.2"}}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_contains!(body["error"].as_str().unwrap(), "revoked");

    let (_, jwks) = server.get("/.well-known/jwks.json", None).await;
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_grant_narrows_the_callers_own_session_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (service, admin) = identity_service(dir.path());
    let mut config = open_config(&["policies/delegation-root.tsp"]);
    config.require_credentials = true;
    let server = start(config.clone(), dir.path(), Some(service.clone())).await;
    let agent = server
        .issued("/v1/identities", Some(&admin), json!({"agent": "auditor", "owner": "user:operator@acme.example", "tools": ["ScanTool", "CodeAnalysisTool"], "ttl": "1h"}))
        .await;

    // The task: scan the lab range, nothing else. Declared by the host with the agent's
    // credential, for the human at the head of its chain.
    let (status, granted) = server
        .post(
            "/v1/grants",
            Some(&agent),
            json!({"id": "g-lab-scan", "session": "job-1", "allow": [
                {"tool": "ScanTool", "args": {"/target": {"pattern": "10\\.0\\.3\\.[0-9]+"}}}]}),
        )
        .await;
    assert_eq!(status, 200, "{granted}");
    assert_eq!(granted["grant_id"], "g-lab-scan");
    assert!(granted["ledger_index"].is_u64(), "{granted}");

    // Identity comes from the credential, and only a human of its chain grants.
    let (status, body) = server
        .post(
            "/v1/grants",
            Some(&agent),
            json!({"session": "job-1", "allow": [], "agent": "spiffe://acme.example/agent/other"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .post(
            "/v1/grants",
            Some(&agent),
            json!({"session": "job-1", "allow": [], "principal": "user:mallory@acme.example"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_contains!(body["error"].as_str().unwrap(), "not in the chain");
    let (status, body) = server
        .post("/v1/grants", Some(&agent), json!({"session": "job-1", "allow": [{"tool": "ScanTool", "args": {"/target": {"pattern": "("}}}]}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_contains!(body["error"].as_str().unwrap(), "bad grant");
    let (status, _) = server
        .post("/v1/grants", None, json!({"session": "job-1", "allow": []}))
        .await;
    assert_eq!(status, 401);

    let decide = |session: &str, tool: &str, target: &str| json!({"session": session, "tool": tool, "args": {"target": target}});
    let (_, d) = server
        .decide(Some(&agent), decide("job-1", "nmap_scan", "10.0.3.7"))
        .await;
    assert_eq!(d["decision"], "allow", "{d}");
    let (_, d) = server
        .decide(Some(&agent), decide("job-1", "nmap_scan", "10.0.9.1"))
        .await;
    assert_eq!(d["decision"], "deny", "{d}");
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.contains("g-lab-scan") && reason.contains("`/target` value \"10.0.9.1\""),
        "{reason}"
    );
    assert_eq!(d["policies"], json!([]), "denied before policy evaluation");
    let (_, d) = server
        .decide(Some(&agent), decide("job-1", "code_review", "repo"))
        .await;
    assert_eq!(d["decision"], "deny", "{d}");
    assert_contains!(
        d["reason"].as_str().unwrap(),
        "does not allow tool `code_review`"
    );
    // Another session of the same agent has no grant.
    let (_, d) = server
        .decide(Some(&agent), decide("job-2", "code_review", "repo"))
        .await;
    assert_eq!(d["decision"], "allow", "{d}");
    server.stop().await;

    // A restart restores the grant from the ledger.
    let server = start(config, dir.path(), Some(service)).await;
    let (_, d) = server
        .decide(Some(&agent), decide("job-1", "code_review", "repo"))
        .await;
    assert_eq!(d["decision"], "deny", "{d}");
    assert_contains!(d["reason"].as_str().unwrap(), "g-lab-scan");
    server.stop().await;
}
