//! The seed policies on the GTG-1002 reference traces give exactly the expected decisions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use truststack_engine::replay::{parse_trace, replay};
use truststack_engine::Processed;
use truststack_engine::{ApprovalResult, Engine, Settings, Verdict};

use truststack_testkit::assert_contains;
use truststack_testkit::examples::gtg1002 as example;

fn engine(policy: &str) -> Engine {
    Engine::new(
        truststack_testkit::examples::gtg1002_bundle(&[policy]),
        Settings::replay(),
    )
}

struct Run {
    decisions: BTreeMap<String, (Verdict, Vec<String>)>,
    order: Vec<String>,
    approvals: Vec<Result<(String, ApprovalResult), String>>,
}

fn run(policy: &str, trace: &str) -> Run {
    let engine = engine(policy);
    let path = example(trace);
    let events = parse_trace(
        &path.display().to_string(),
        &std::fs::read_to_string(&path).unwrap(),
    )
    .unwrap();
    let mut run = Run {
        decisions: BTreeMap::new(),
        order: Vec::new(),
        approvals: Vec::new(),
    };
    for step in replay(&engine, &events) {
        match step {
            Processed::Decision(d) => {
                run.order.push(d.call_id.clone());
                run.decisions.insert(
                    d.call_id.clone(),
                    (
                        d.decision,
                        d.policies.iter().map(|p| p.id.clone()).collect(),
                    ),
                );
            }
            Processed::Approval(a) => run
                .approvals
                .push(a.map(|o| (o.call_id, o.result)).map_err(|e| e.to_string())),
            _ => {}
        }
    }
    run
}

impl Run {
    fn verdict(&self, id: &str) -> Verdict {
        self.decisions
            .get(id)
            .unwrap_or_else(|| panic!("no decision for {id}"))
            .0
    }
    fn policies(&self, id: &str) -> Vec<String> {
        self.decisions[id].1.clone()
    }
}

#[test]
fn single_agent_campaign_under_seed_policies() {
    let r = run("policies/seed.tsp", "traces/campaign-single-agent.jsonl");
    for i in 1..=100 {
        assert_eq!(
            r.verdict(&format!("scan-{i:03}")),
            Verdict::Allow,
            "scan {i} of 100 is within the limit"
        );
    }
    assert_eq!(
        r.verdict("scan-101"),
        Verdict::Deny,
        "the 101st scan in 5 minutes is denied"
    );
    assert_eq!(r.policies("scan-101"), ["seed#1"]);
    assert_eq!(
        r.verdict("probe-102"),
        Verdict::Deny,
        "a differently named ScanTool is counted too"
    );
    assert_eq!(
        r.verdict("ext-scan"),
        Verdict::Deny,
        "external-public target denied"
    );
    assert_eq!(r.policies("ext-scan"), ["seed#1"]);
    assert_eq!(
        r.verdict("scan-after-window"),
        Verdict::Allow,
        "outside the window scanning is allowed again"
    );
    assert_eq!(r.verdict("code-1"), Verdict::Allow);
    assert_eq!(
        r.verdict("exploit-1"),
        Verdict::RequireApproval,
        "Scan + CodeAnalysis + Exploitation is held"
    );
    assert_eq!(r.policies("exploit-1"), ["seed#2"]);
    let first = r.approvals[0].as_ref().unwrap_err();
    assert_contains!(
        first,
        "separation of duties",
        "the launching operator cannot approve: {first}"
    );
    assert_eq!(
        r.approvals[1],
        Ok(("exploit-1".to_string(), ApprovalResult::Granted))
    );
    assert_eq!(
        r.verdict("db-read-1"),
        Verdict::Allow,
        "covered by the on-call approver's lease"
    );
    assert_eq!(
        r.verdict("exfil-1"),
        Verdict::Deny,
        "exfiltration after a prod DB read is denied"
    );
    assert!(r.policies("exfil-1").contains(&"seed#3".to_string()));
    for id in [
        "docs-25",
        "docs-50",
        "docs-75",
        "docs-100",
        "ticket-1",
        "docs-after",
    ] {
        assert_eq!(
            r.verdict(id),
            Verdict::Allow,
            "benign call {id} stays allowed"
        );
    }
}

#[test]
fn context_split_campaign_evades_agent_scope_and_is_stopped_at_delegation_root() {
    let seed = run("policies/seed.tsp", "traces/campaign-split.jsonl");
    for id in &seed.order {
        assert_eq!(
            seed.verdict(id),
            Verdict::Allow,
            "{id}: per-agent policies see nothing wrong"
        );
    }
    let root = run(
        "policies/delegation-root.tsp",
        "traces/campaign-split.jsonl",
    );
    let scans: Vec<&String> = root
        .order
        .iter()
        .filter(|id| id.starts_with("split-scan-"))
        .collect();
    let allowed = scans
        .iter()
        .filter(|id| root.verdict(id) == Verdict::Allow)
        .count();
    assert_eq!(
        allowed, 100,
        "the orchestration as a whole gets 100 scans per 5 minutes"
    );
    assert_eq!(root.verdict("split-scan-101"), Verdict::Deny);
    assert_eq!(root.verdict("split-exploit-1"), Verdict::RequireApproval);
    assert_contains!(
        root.approvals[0].as_ref().unwrap_err(),
        "separation of duties"
    );
    assert_eq!(
        root.approvals[1],
        Ok(("split-exploit-1".to_string(), ApprovalResult::Granted))
    );
    assert_eq!(
        root.verdict("split-exfil"),
        Verdict::Deny,
        "the courier is tainted by the collector's read"
    );
    assert!(root
        .policies("split-exfil")
        .contains(&"no-exfiltration-after-prod-read".to_string()));
}

#[test]
fn benign_work_stays_allowed_under_every_policy_set() {
    for policy in ["policies/seed.tsp", "policies/delegation-root.tsp"] {
        let r = run(policy, "traces/benign.jsonl");
        for id in &r.order {
            assert_eq!(r.verdict(id), Verdict::Allow, "{policy}: benign call {id}");
        }
        assert_eq!(
            r.verdict("b-upload-1"),
            Verdict::Allow,
            "an identity that never read prod data may upload"
        );
    }
}

/// Issue 14, defect 8: the seed's External_Public scan rule holds for every way of writing a
/// public target that nmap accepts, and still allows the internal ones.
#[test]
fn the_seed_scan_rule_cannot_be_walked_around_by_writing_the_target_another_way() {
    let engine = engine("policies/seed.tsp");
    let decide = |i: usize, target: serde_json::Value| {
        let call: truststack_engine::ToolCall = serde_json::from_value(serde_json::json!({
            "id": format!("c-{i}"), "time": "2026-11-13T09:00:00Z",
            "agent": "spiffe://acme.example/agent/recon", "chain": ["user:alice@acme.example"],
            "tool": "nmap_scan", "args": {"target": target},
        }))
        .unwrap();
        engine.queue(&call).wait()
    };
    let external = [
        "dns.google",
        "134744072",
        "0x08080808",
        "10.0.0.1,8.8.8.8",
        "8.8.8.0-255",
        "8.8.8.8/32",
        "8.8.8",
        "010.0.0.1",
        "10.0.0.1 8.8.8.8",
        "2001:4860:4860::8888",
    ];
    for (i, target) in external.iter().enumerate() {
        let d = decide(i, serde_json::json!(target));
        assert_eq!(d.decision, Verdict::Deny, "{target}: {}", d.reason);
    }
    let d = decide(100, serde_json::json!(134744072));
    assert_eq!(d.decision, Verdict::Deny, "a JSON number: {}", d.reason);
    for (i, target) in [
        "10.0.0.1-20",
        "10.0.0.1,5,9",
        "167772161",
        "db.corp.acme.example",
    ]
    .iter()
    .enumerate()
    {
        let d = decide(200 + i, serde_json::json!(target));
        assert_eq!(d.decision, Verdict::Allow, "{target}: {}", d.reason);
    }
}
