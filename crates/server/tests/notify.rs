//! Notifications against a real local receiver: signed webhooks that verify, retries after a
//! 500, Slack and Teams messages, and a receiver that never answers holding up no decision.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{open_config, receiver, start};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::Duration;
use truststack_server::notify::{NotifyConfig, TargetConfig, TargetKind};
use truststack_testkit::assert_contains;

const KEY: &str = "a-webhook-signing-key-for-tests";

fn target(kind: TargetKind, name: &str, url: String, secret: Option<&str>) -> TargetConfig {
    TargetConfig {
        name: Some(name.into()),
        kind,
        url,
        secret_env: None,
        secret: secret.map(String::from),
    }
}

/// A webhook target signed with `KEY`.
fn webhook(name: &str, url: String) -> TargetConfig {
    target(TargetKind::Webhook, name, url, Some(KEY))
}

fn agent_call(tool: &str, agent: &str) -> Value {
    json!({"tool": tool, "args": {"target": "10.0.0.5"}, "agent": format!("spiffe://acme.example/agent/{agent}"), "chain": ["user:operator@acme.example"]})
}

/// Scan, code analysis, then exploitation by one orchestrator: the seed's trajectory policy
/// holds the last call. Gives its approval id.
async fn hold(server: &common::TestServer, agent: &str) -> String {
    for tool in ["nmap_scan", "code_review"] {
        let (status, d) = server.decide(None, agent_call(tool, agent)).await;
        assert_eq!(status, 200, "{d}");
    }
    let (_, held) = server
        .decide(None, agent_call("exploit_runner", agent))
        .await;
    assert_eq!(held["decision"], "require_approval", "{held}");
    held["approval_id"].as_str().unwrap().to_string()
}

/// Recomputes the signature as a receiver would, from the documented recipe (not the server's
/// function): HMAC-SHA256 over "<timestamp>.<body>", hex, prefixed `v1=`.
fn signature_verifies(headers: &axum::http::HeaderMap, body: &[u8]) -> bool {
    let ts = headers["truststack-timestamp"].to_str().unwrap();
    let sig = headers["truststack-signature"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    let want = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    want == sig && ts.parse::<u64>().unwrap().abs_diff(now) < 300
}

fn metric(text: &str, name: &str, labels: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && labels.split(',').all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_and_answered_calls_are_notified_signed_and_retried_after_a_500() {
    let receiver = receiver::start().await;
    // The webhook's first delivery is answered 500: it must come again, and be counted.
    receiver.fail("hook", 1);
    let dir = tempfile::tempdir().unwrap();
    let mut config = open_config(&["policies/delegation-root.tsp"]);
    config.console.public_url = Some("https://truststack.example.com".into());
    config.notify = NotifyConfig {
        targets: vec![
            webhook("hooks", format!("{}/hook", receiver.base)),
            target(
                TargetKind::Slack,
                "slack",
                format!("{}/slack", receiver.base),
                None,
            ),
            target(
                TargetKind::Teams,
                "teams",
                format!("{}/teams", receiver.base),
                None,
            ),
        ],
        backoff: "20ms".parse().unwrap(),
        ..NotifyConfig::default()
    };
    let server = start(config, dir.path(), None).await;
    let approval = hold(&server, "orchestrator").await;
    let link = format!("https://truststack.example.com/console/approvals/{approval}");

    let bounded = |f| tokio::time::timeout(Duration::from_secs(30), f);
    // The webhook's first delivery failed; the retry arrives.
    let hooks = bounded(receiver.until("hook", 2)).await.unwrap();
    let (first, second) = (&hooks[0], &hooks[1]);
    assert_eq!(
        first.0["truststack-event-id"], second.0["truststack-event-id"],
        "a retry carries the same event id"
    );
    for (headers, body) in [first, second] {
        assert!(
            signature_verifies(headers, body),
            "signature does not verify"
        );
    }
    let mut tampered = second.1.to_vec();
    tampered[0] = b' ';
    assert!(!signature_verifies(&second.0, &tampered));
    let event: Value = serde_json::from_slice(&second.1).unwrap();
    assert_eq!(event["type"], "approval.held", "{event}");
    assert_eq!(event["approval_id"], approval.as_str());
    assert_eq!(event["tool"], "exploit_runner");
    assert_eq!(event["agent"], "spiffe://acme.example/agent/orchestrator");
    assert_eq!(event["policies"], json!(["chain-of-command"]));
    assert_eq!(event["url"], link.as_str());
    assert!(event["deadline"].is_string(), "{event}");

    let slack = bounded(receiver.until("slack", 1)).await.unwrap();
    let slack: Value = serde_json::from_slice(&slack[0].1).unwrap();
    let text = slack["text"].as_str().unwrap();
    assert!(text.contains(&format!("<{link}|")), "{text}");
    assert_contains!(text, "Held for approval: exploit_runner");
    let teams = bounded(receiver.until("teams", 1)).await.unwrap();
    let teams: Value = serde_json::from_slice(&teams[0].1).unwrap();
    let card = &teams["attachments"][0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["actions"][0]["url"], link.as_str());

    // The answer is notified too, with who answered.
    let (status, body) = server
        .post(
            &format!("/v1/approvals/{approval}/grant"),
            None,
            json!({"approver": "user:oncall@acme.example", "lease": "10min"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let hooks = bounded(receiver.until("hook", 3)).await.unwrap();
    let answered: Value = serde_json::from_slice(&hooks[2].1).unwrap();
    assert!(signature_verifies(&hooks[2].0, &hooks[2].1));
    assert_eq!(answered["type"], "approval.answered", "{answered}");
    assert_eq!(answered["result"], "granted");
    assert_eq!(answered["approver"], "user:oncall@acme.example");
    assert_eq!(answered["tool"], "exploit_runner");
    assert!(answered["lease_until"].is_string(), "{answered}");

    // The receiver has the third delivery before its sender has counted it: read the metrics
    // until the count arrives (bounded).
    let attempts = "truststack_notify_attempts_total";
    let delivered = r#"outcome="delivered",target="hooks""#;
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (_, metrics) = server.get("/metrics", None).await;
        let metrics = metrics.as_str().unwrap().to_string();
        if metric(&metrics, attempts, delivered) >= 2 || std::time::Instant::now() > until {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        metric(&metrics, attempts, r#"outcome="failed",target="hooks""#),
        1,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, attempts, delivered), 2, "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_holds_up_no_decision() {
    let receiver = receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = open_config(&["policies/delegation-root.tsp"]);
    config.notify = NotifyConfig {
        targets: vec![webhook("dead", format!("{}/hang", receiver.base))],
        // One delivery at a time and two queued: the rest are dropped, and counted.
        concurrency: 1,
        queue: 2,
        timeout: "1h".parse().unwrap(),
        ..NotifyConfig::default()
    };
    let server = start(config, dir.path(), None).await;

    // Twelve orchestrations each get a call held (and their answers are notified too) while the
    // receiver holds the first delivery open and never answers. Every decision and every answer
    // still comes back: the bound only stops a hung test.
    let all = async {
        for n in 0..12 {
            let approval = hold(&server, &format!("orchestrator-{n}")).await;
            let (status, body) = server
                .post(
                    &format!("/v1/approvals/{approval}/refuse"),
                    None,
                    json!({"approver": "user:oncall@acme.example"}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["result"], "refused");
        }
    };
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("decisions were held up by a dead receiver");
    // The receiver really was hanging on a delivery meanwhile.
    assert_eq!(receiver.to("hang").len(), 1);
    let (_, metrics) = server.get("/metrics", None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metric(
            metrics,
            "truststack_notify_deliveries_total",
            r#"result="dropped",target="dead""#
        ) > 0,
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_call_is_notified_as_expired() {
    let receiver = receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A policy without its own DEADLINE, so the server's (1s) applies.
    let text = "POLICY hold-exploits:\n  ACTION: REQUIRE_HITL\n  TARGET: session\n  IF Trajectory_Contains('ExploitationTool')\n";
    let (mut config, _) = common::config_with_policy(dir.path(), "hold.tsp", text);
    config.approval_deadline = "1s".parse().unwrap();
    config.notify = NotifyConfig {
        targets: vec![webhook("hooks", format!("{}/hook", receiver.base))],
        ..NotifyConfig::default()
    };
    let server = start(config, dir.path(), None).await;
    let (_, held) = server
        .decide(None, agent_call("exploit_runner", "solo"))
        .await;
    assert_eq!(held["decision"], "require_approval", "{held}");
    // Held, then (the deadline passing, the expiry sweep refusing it) expired.
    let hooks = tokio::time::timeout(Duration::from_secs(30), receiver.until("hook", 2))
        .await
        .unwrap();
    let expired: Value = serde_json::from_slice(&hooks[1].1).unwrap();
    assert!(signature_verifies(&hooks[1].0, &hooks[1].1));
    assert_eq!(expired["type"], "approval.expired", "{expired}");
    assert_eq!(expired["approval_id"], held["approval_id"]);
    assert_eq!(expired["tool"], "exploit_runner");
    assert!(expired.get("approver").is_none(), "{expired}");
    server.stop().await;
}
