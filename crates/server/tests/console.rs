//! The console's HTTP-level security against a real server with credentials required: the
//! Content-Security-Policy, who may sign in, CSRF on every state change, arguments shown as
//! data, separation of duties, and the same approval path as the API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::{identity_service, open_config, start, TestServer};
use serde_json::{json, Value};
use sha2::Digest as _;
use truststack_testkit::assert_contains;
use truststack_testkit::net::JsonReply;

fn base64_decode(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A browser-like client that follows no redirects (the test looks at each answer).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of hidden input `csrf` in a page.
fn csrf_of(page: &str) -> String {
    let at = page.find(r#"name="csrf" value=""#).expect("a csrf field") + 19;
    page[at..].split('"').next().unwrap().to_string()
}

/// The `name=value` part of a Set-Cookie for `name`.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// Signs in with `credential`; gives the answer to the sign-in POST.
async fn sign_in(server: &TestServer, credential: &str) -> reqwest::Response {
    let c = client();
    let form = c
        .get(format!("{}/console/sign-in", server.base))
        .send()
        .await
        .unwrap();
    let pre = set_cookie(&form, "truststack_console_signin").unwrap();
    let pre = pre.split(';').next().unwrap().to_string();
    let csrf = csrf_of(&form.text().await.unwrap());
    c.post(format!("{}/console/sign-in", server.base))
        .header("cookie", pre)
        .form(&[("credential", credential), ("csrf", &csrf)])
        .send()
        .await
        .unwrap()
}

/// Signs in and gives the session cookie (`name=value`).
async fn session(server: &TestServer, credential: &str) -> String {
    let resp = sign_in(server, credential).await;
    assert_eq!(resp.status(), 303, "sign-in should redirect to the queue");
    let cookie = set_cookie(&resp, "truststack_console").unwrap();
    assert_contains!(cookie, "HttpOnly");
    assert_contains!(cookie, "SameSite=Strict");
    assert_contains!(cookie, "Path=/console");
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP: no Secure flag: {cookie}"
    );
    cookie.split(';').next().unwrap().to_string()
}

async fn page(server: &TestServer, cookie: &str, path: &str) -> (u16, String) {
    let resp = client()
        .get(format!("{}{path}", server.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

async fn post_form(
    server: &TestServer,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let resp = client()
        .post(format!("{}{path}", server.base))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

const SCRIPT: &str = "<script>document.title='pwned'</script>";
const IMG: &str = "\"><img src=x onerror=alert(1)>";
const JS_URL: &str = "javascript:alert(1)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_approvers_only_and_answers_through_the_api_path() {
    let dir = tempfile::tempdir().unwrap();
    let (service, admin) = identity_service(dir.path());
    let mut config = open_config(&["policies/delegation-root.tsp"]);
    config.require_credentials = true;
    let server = start(config, dir.path(), Some(service)).await;
    let token = |v: (u16, Value)| v.1["token"].as_str().unwrap().to_string();
    let orch = token(server.post("/v1/identities", Some(&admin), json!({"agent": "orchestrator", "owner": "user:operator@acme.example", "tools": ["ScanTool", "CodeAnalysisTool", "ExploitationTool"], "ttl": "1h"})).await);
    // The operator who launched the orchestrator is an approver, but in the call's chain.
    let operator = token(server.post("/v1/identities", Some(&admin), json!({"user": "user:operator@acme.example", "roles": ["approver"], "groups": ["security-oncall"]})).await);
    let oncall = token(server.post("/v1/identities", Some(&admin), json!({"user": "user:oncall@acme.example", "roles": ["approver"], "groups": ["security-oncall"]})).await);
    let viewer = token(
        server
            .post(
                "/v1/identities",
                Some(&admin),
                json!({"user": "user:intern@acme.example"}),
            )
            .await,
    );

    // Every console answer carries the strict policy; the script is served from the console.
    let resp = client()
        .get(format!("{}/console/sign-in", server.base))
        .send()
        .await
        .unwrap();
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert_contains!(csp, "script-src 'self'");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_contains!(csp, "frame-ancestors 'none'");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let js = client()
        .get(format!("{}/console/assets/console.js", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(!js.text().await.unwrap().contains("innerHTML"));

    // Not signed in: sent to the sign-in page.
    let (status, _) = page(&server, "", "/console/approvals").await;
    assert_eq!(status, 303);

    // An agent's credential, a human without the roles, or a forged one cannot sign in.
    let resp = sign_in(&server, &orch).await;
    assert_eq!(resp.status(), 401);
    assert!(set_cookie(&resp, "truststack_console").is_none());
    assert_contains!(
        resp.text().await.unwrap(),
        "credential: only approvers and administrators can sign in"
    );
    let resp = sign_in(&server, &viewer).await;
    assert_eq!(resp.status(), 403);
    let resp = sign_in(&server, "eyJhbGciOiJFZERTQSJ9.e30.AAAA").await;
    assert_eq!(resp.status(), 401);
    // A sign-in without the form's token (a cross-site form) is refused.
    let resp = client()
        .post(format!("{}/console/sign-in", server.base))
        .form(&[("credential", oncall.as_str()), ("csrf", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // Hold a call whose arguments try to run script in an approver's browser.
    for tool in ["nmap_scan", "code_review"] {
        server
            .decide(
                Some(&orch),
                json!({"tool": tool, "args": {"target": "10.0.0.5"}}),
            )
            .await;
    }
    let (_, held) = server
        .decide(Some(&orch), json!({"tool": "exploit_runner", "args": {"target": "10.0.0.5", "payload": SCRIPT, "note": IMG, "link": JS_URL}}))
        .await;
    assert_eq!(held["decision"], "require_approval", "{held}");
    let approval = held["approval_id"].as_str().unwrap().to_string();
    let call_path = format!("/console/approvals/{approval}");

    let me = session(&server, &oncall).await;
    let (status, queue) = page(&server, &me, "/console/approvals").await;
    assert_eq!(status, 200);
    assert!(queue.contains(&call_path), "the held call is in the queue");
    assert_contains!(queue, "exploit_runner");
    let (status, filtered) = page(&server, &me, "/console/approvals?policy=scan-rate-limit").await;
    assert_eq!(status, 200);
    assert!(!filtered.contains(&call_path), "filtered out by policy");
    let (_, by_root) = page(
        &server,
        &me,
        "/console/approvals?root=spiffe%3A%2F%2Facme.example%2Fagent%2Forchestrator",
    )
    .await;
    assert!(by_root.contains(&call_path), "kept by its delegation root");

    // The call page: chain, policy with monitor values, arguments as inert text.
    let (status, call) = page(&server, &me, &call_path).await;
    assert_eq!(status, 200);
    assert_contains!(call, "user:operator@acme.example", "the chain");
    assert_contains!(call, "chain-of-command");
    assert_contains!(call, "✓", "monitor values shown");
    assert!(
        !call.contains("<script>document"),
        "script tag in arguments escaped"
    );
    assert!(!call.contains("<img src=x"), "markup in arguments escaped");
    assert_contains!(call, "&lt;script&gt;", "shown as text");
    assert!(!call.contains("href=\"javascript:"), "no javascript: link");
    assert_eq!(
        call.matches("<script").count(),
        1,
        "only the console's own script"
    );

    // A state change without the session's token is refused and changes nothing.
    let (status, _) = post_form(
        &server,
        &me,
        &format!("{call_path}/grant"),
        &[("lease", "10min")],
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = post_form(
        &server,
        &me,
        &format!("{call_path}/grant"),
        &[("csrf", "not-the-token")],
    )
    .await;
    assert_eq!(status, 403);
    // The right token in a request the browser labels cross-site is refused too.
    let resp = client()
        .post(format!("{}{call_path}/refuse", server.base))
        .header("cookie", &me)
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf_of(&call).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let (status, _) = page(&server, &me, &call_path).await;
    assert_eq!(status, 200, "still held");

    // The operator, in the call's chain, sees it but cannot grant it.
    let operator_session = session(&server, &operator).await;
    let (status, seen) = page(&server, &operator_session, &call_path).await;
    assert_eq!(status, 200);
    assert_contains!(seen, "Separation of duties", "said on the page");
    assert!(
        !seen.contains(&format!("{call_path}/grant")),
        "no grant form"
    );
    let csrf = csrf_of(&seen);
    let (status, body) = post_form(
        &server,
        &operator_session,
        &format!("{call_path}/grant"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_contains!(body, "separation of duties");

    // The live queue's first event lists the held call.
    let mut sse = client()
        .get(format!("{}/console/events", server.base))
        .header("cookie", &me)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let chunk = String::from_utf8(sse.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(chunk.starts_with("event: queue"), "{chunk}");
    assert!(chunk.contains(&approval), "{chunk}");
    drop(sse);

    // The agent waits on its call; the on-call engineer grants it with a lease in the console.
    let wait = {
        let (c, url, orch) = (
            server.client.clone(),
            format!("{}/v1/approvals/{approval}/wait?timeout=30s", server.base),
            orch.clone(),
        );
        tokio::spawn(async move { c.get(url).bearer_auth(orch).json_reply().await })
    };
    let csrf = csrf_of(&call);
    let (status, body) = post_form(
        &server,
        &me,
        &format!("{call_path}/grant"),
        &[
            ("csrf", &csrf),
            ("lease", "10min"),
            ("comment", "checked with the team"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_contains!(body, "Granted");
    let waited = wait.await.unwrap();
    assert_eq!(waited["status"], "answered", "{waited}");
    assert_eq!(waited["outcome"]["result"], "granted");
    assert_eq!(waited["outcome"]["approver"], "user:oncall@acme.example");
    assert!(waited["outcome"]["lease_until"].is_string());
    let (status, gone) = page(&server, &me, &call_path).await;
    assert_eq!(status, 404);
    assert_contains!(gone, "not held: it was answered");
    assert_contains!(
        gone,
        "Granted: the call proceeds.",
        "what became of it: {gone}"
    );
    assert_contains!(gone, "user:oncall@acme.example");

    // The ledger browser: the checkpoint and its key, the entry of the grant, and what the
    // browser verifies: bytes that hash to the entry's leaf.
    let index = waited["outcome"]["ledger_index"].as_u64().unwrap();
    let (status, ledger) = page(&server, &me, "/console/ledger?decision=allow").await;
    assert_eq!(status, 200);
    assert_contains!(ledger, "Verifier key");
    assert!(
        ledger.contains(&format!("/console/ledger/{index}")),
        "the grant is listed"
    );
    let (status, _) = page(&server, &me, &format!("/console/ledger/{index}")).await;
    assert_eq!(status, 200);
    let (status, proof) = page(&server, &me, &format!("/console/ledger/{index}/proof.json")).await;
    assert_eq!(status, 200);
    let proof: Value = serde_json::from_str(&proof).unwrap();
    let data = base64_decode(proof["data"].as_str().unwrap());
    let leaf = sha2::Sha256::digest([&[0u8][..], &data].concat());
    assert_eq!(base64_encode(&leaf), proof["leaf_hash"].as_str().unwrap());
    assert_contains!(proof["checkpoint"].as_str().unwrap(), "\n\n— ");
    assert!(proof["verifier_key"].is_string());
    let (status, _) = page(&server, "", &format!("/console/ledger/{index}/proof.json")).await;
    assert_eq!(status, 401, "signed in only");
    let (status, policies) = page(&server, &me, "/console/policies").await;
    assert_eq!(status, 200);
    assert!(policies.contains("chain-of-command") && policies.contains("sha256:"));

    // Sign-out needs the token too, then ends the session.
    let (_, queue) = page(&server, &me, "/console/approvals").await;
    let (status, _) = post_form(&server, &me, "/console/sign-out", &[]).await;
    assert_eq!(status, 403);
    let (status, _) = post_form(
        &server,
        &me,
        "/console/sign-out",
        &[("csrf", &csrf_of(&queue))],
    )
    .await;
    assert_eq!(status, 303);
    let (status, _) = page(&server, &me, "/console/approvals").await;
    assert_eq!(status, 303, "signed out");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_call_is_shown_as_expired_and_cannot_be_granted() {
    let dir = tempfile::tempdir().unwrap();
    let (service, admin) = identity_service(dir.path());
    // A policy without its own DEADLINE, so the server's (1s) applies.
    let text = "POLICY hold-exploits:\n  ACTION: REQUIRE_HITL\n  TARGET: session\n  IF Trajectory_Contains('ExploitationTool')\n";
    let (mut config, _) = common::config_with_policy(dir.path(), "hold.tsp", text);
    config.require_credentials = true;
    config.approval_deadline = "1s".parse().unwrap();
    let server = start(config, dir.path(), Some(service)).await;
    let token = |v: (u16, Value)| v.1["token"].as_str().unwrap().to_string();
    let agent = token(server.post("/v1/identities", Some(&admin), json!({"agent": "solo", "owner": "user:operator@acme.example", "tools": ["ExploitationTool"]})).await);
    let oncall = token(
        server
            .post(
                "/v1/identities",
                Some(&admin),
                json!({"user": "user:oncall@acme.example", "roles": ["approver"]}),
            )
            .await,
    );
    let (_, held) = server
        .decide(
            Some(&agent),
            json!({"tool": "exploit_runner", "args": {"target": "10.0.0.5"}}),
        )
        .await;
    let approval = held["approval_id"].as_str().unwrap().to_string();
    let call_path = format!("/console/approvals/{approval}");
    let me = session(&server, &oncall).await;
    let (_, call) = page(&server, &me, &call_path).await;
    let csrf = csrf_of(&call);
    // Past the deadline the sweep refuses the call; the page then says so.
    let expired = async {
        loop {
            let (status, body) = page(&server, &me, &call_path).await;
            if status == 404 {
                return body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let body = tokio::time::timeout(std::time::Duration::from_secs(30), expired)
        .await
        .expect("the held call expires");
    assert_contains!(body, "Expired: the deadline passed");
    assert_contains!(body, "deadline", "answered by the deadline: {body}");
    let (status, body) = post_form(
        &server,
        &me,
        &format!("{call_path}/grant"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 404, "an expired call cannot be granted: {body}");
    server.stop().await;
}
