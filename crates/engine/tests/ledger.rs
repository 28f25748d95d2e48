//! Decisions are written ahead to a real SQLite ledger; a ledger that cannot be written fails
//! closed; the ledger can be replayed under another policy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use truststack_engine::ledger::{verify_file, Ledger, LedgerConfig};
use truststack_engine::replay::{divergences, parse_trace, replay};
use truststack_engine::Processed;
use truststack_engine::{Engine, Request, Settings, ToolCall, Verdict};

use truststack_testkit::assert_contains;
use truststack_testkit::examples::gtg1002 as example;

fn bundle(policy: &str) -> truststack_policy::Bundle {
    truststack_testkit::examples::gtg1002_bundle(&[policy])
}

fn campaign() -> Vec<truststack_engine::Event> {
    let path = example("traces/campaign-single-agent.jsonl");
    parse_trace("campaign", &std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The seed policies on the event clock, writing ahead to a new SQLite ledger in `dir`.
fn seed_engine_on_ledger(dir: &tempfile::TempDir) -> (PathBuf, Arc<Ledger>, Engine) {
    let db = dir.path().join("ledger.db");
    let ledger =
        Arc::new(Ledger::open(&db, &LedgerConfig::new(dir.path().join("log.key"))).unwrap());
    let engine =
        Engine::new(bundle("policies/seed.tsp"), Settings::replay()).with_recorder(ledger.clone());
    (db, ledger, engine)
}

#[test]
fn every_decision_is_durable_before_it_is_returned() {
    let dir = tempfile::tempdir().unwrap();
    let (db, ledger, engine) = seed_engine_on_ledger(&dir);
    let steps = replay(&engine, &campaign());
    let mut last_index = None;
    for step in &steps {
        if let Processed::Decision(d) = step {
            let index = d
                .ledger_index
                .expect("every decision names its ledger entry");
            let entry = ledger.entry(index).unwrap().record().unwrap();
            assert_eq!(entry["kind"], "decision");
            assert_eq!(entry["call"]["id"], d.call_id.as_str());
            assert_eq!(entry["decision"]["decision"], d.decision.as_str());
            assert_eq!(entry["decision"]["policy_hash"], d.policy_hash.as_str());
            assert_eq!(
                entry["call"]["chain"][0], "user:operator@acme.example",
                "the chain of command is recorded"
            );
            assert!(last_index < Some(index));
            last_index = Some(index);
        }
    }
    // Approvals (granted and refused) are records too; the refused self-approval is not, since
    // it never reached a held call's decision.
    let approvals = (0..ledger.len())
        .filter(|i| ledger.entry(*i).unwrap().record().unwrap()["kind"] == "approval")
        .count();
    assert_eq!(approvals, 1);
    // The catalog says prod_db_query arguments are recorded as a hash only.
    let db_read = (0..ledger.len())
        .map(|i| ledger.entry(i).unwrap().record().unwrap())
        .find(|r| r["call"]["id"] == "db-read-1")
        .unwrap();
    assert!(db_read["call"]["args"]["sha256"].is_string(), "{db_read}");
    assert!(
        !db_read.to_string().contains("SELECT"),
        "the query text is not in the ledger"
    );
    drop(engine);
    ledger.checkpoint().unwrap();
    drop(ledger);
    verify_file(&db, None).unwrap();
}

#[test]
fn a_ledger_that_cannot_be_written_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    drop(Ledger::open(&db, &LedgerConfig::new(dir.path().join("log.key"))).unwrap());
    let read_only = Arc::new(Ledger::open_read_only(&db).unwrap());
    let engine =
        Engine::new(bundle("policies/seed.tsp"), Settings::default()).with_recorder(read_only);
    let call = ToolCall {
        id: "c-1".into(),
        time: None,
        agent: "spiffe://acme.example/agent/a".into(),
        session: None,
        chain: vec!["user:alice@acme.example".into()],
        tool: "read_docs".into(),
        args: serde_json::json!({}),
    };
    let d = engine.queue(&call).wait();
    assert_eq!(
        d.decision,
        Verdict::Deny,
        "a benign call is denied when it cannot be recorded"
    );
    assert_contains!(d.reason, "ledger unavailable");
    assert_eq!(d.ledger_index, None);
}

#[test]
fn replaying_the_ledger_under_another_bundle_reports_what_would_change() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(
        Ledger::open(
            &dir.path().join("l.db"),
            &LedgerConfig::new(dir.path().join("k")),
        )
        .unwrap(),
    );
    let engine =
        Engine::new(bundle("policies/seed.tsp"), Settings::replay()).with_recorder(ledger.clone());
    replay(&engine, &campaign());
    let records: Vec<(u64, serde_json::Value)> = (0..ledger.len())
        .map(|i| (i, ledger.entry(i).unwrap().record().unwrap()))
        .collect();

    // The same bundle re-decides every call the same way.
    let same = Engine::new(bundle("policies/seed.tsp"), Settings::replay());
    let same = divergences(&same, &records);
    assert_eq!(same.calls, 114);
    assert!(same.divergences.is_empty(), "{:?}", same.divergences);
    assert!(same.unreadable.is_empty(), "{:?}", same.unreadable);

    // With no policies at all, every stopped step would have gone through.
    let none = Engine::new(
        truststack_policy::Bundle::compile(vec![], Default::default(), "sha256:none".into()),
        Settings {
            unknown_tools: truststack_engine::DefaultDecision::Allow,
            ..Settings::replay()
        },
    );
    let diff = divergences(&none, &records).divergences;
    let changed: Vec<&str> = diff.iter().map(|d| d.call_id.as_str()).collect();
    assert_eq!(
        changed,
        ["ext-scan", "scan-101", "probe-102", "exploit-1", "exfil-1"]
    );
    assert!(diff.iter().all(|d| d.replayed == Verdict::Allow));
}

#[test]
fn queued_decisions_count_at_once_and_settle_in_ledger_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ledger, engine) = seed_engine_on_ledger(&dir);
    let caller = truststack_engine::Caller {
        agent: "spiffe://acme.example/agent/recon".into(),
        chain: vec!["user:alice@acme.example".into()],
        tools: Some(vec!["ScanTool".into()]),
        credential_id: Some("jti-1".into()),
    };
    let scan = |i: usize, tool: &str| ToolCall {
        id: format!("scan-{i}"),
        time: Some(format!("2026-11-13T09:00:{:02}.{:03}Z", i / 1000, i % 1000)),
        agent: String::new(),
        session: None,
        chain: vec![],
        tool: tool.into(),
        args: serde_json::json!({"target": "10.0.3.7"}),
    };
    // Every decision is made and queued before any record is durable: the rate limit still
    // holds, since an allowed call counts as soon as it is queued.
    let mut queued: Vec<_> = (0..101)
        .map(|i| engine.queue(Request::new(&scan(i, "nmap_scan")).for_caller(&caller)))
        .collect();
    // A tool outside the credential is denied before policy evaluation, and recorded too.
    queued.push(engine.queue(Request::new(&scan(101, "http_upload")).for_caller(&caller)));
    let decisions: Vec<_> = queued
        .into_iter()
        .map(|q| futures_executor::block_on(q.durable()))
        .collect();
    let allowed = decisions
        .iter()
        .filter(|d| d.decision == Verdict::Allow)
        .count();
    assert_eq!(allowed, 100, "the 101st scan in five minutes is denied");
    assert_eq!(decisions[100].decision, Verdict::Deny);
    assert_contains!(decisions[101].reason, "does not allow tool `http_upload`");
    for (i, d) in decisions.iter().enumerate() {
        let index = d.ledger_index.expect("durable before it is returned");
        assert_eq!(
            index, i as u64,
            "the ledger keeps the order of the decisions"
        );
        let entry = ledger.entry(index).unwrap().record().unwrap();
        assert_eq!(entry["call"]["id"], d.call_id.as_str());
        assert_eq!(entry["call"]["agent"], caller.agent.as_str());
    }
}

/// Restoring an engine and replaying a ledger read it through one decoder: a record that is
/// not valid is reported by both with its index and why, and neither drops it silently; the
/// records around it still count.
#[test]
fn readers_of_a_ledger_agree_on_a_record_that_is_not_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ledger, engine) = seed_engine_on_ledger(&dir);
    let events = campaign();
    replay(&engine, &events[..20]);
    drop(engine);
    // A decision record without its decision, as a faulty writer might leave one.
    let bad = ledger
        .append(&serde_json::json!({"kind": "decision", "call": {"id": "c", "agent": "a", "tool": "t", "args": {}}}))
        .unwrap();
    let records: Vec<(u64, serde_json::Value)> = (0..ledger.len())
        .map(|i| (i, ledger.entry(i).unwrap().record().unwrap()))
        .collect();

    let replayed = divergences(
        &Engine::new(bundle("policies/seed.tsp"), Settings::replay()),
        &records,
    );
    assert_eq!(replayed.unreadable.len(), 1, "{:?}", replayed.unreadable);
    let error = &replayed.unreadable[0];
    assert_eq!(error.index(), bad);
    let text = error.to_string();
    assert!(
        text.contains(&format!("ledger entry {bad}")) && text.contains("missing field `decision`"),
        "{text}"
    );
    assert!(replayed.calls > 0 && replayed.divergences.is_empty());

    // Restoring from the same entries: the same error, and the others restored.
    let decoded = truststack_engine::Record::decode(bad, &records[bad as usize].1);
    assert_eq!(decoded.unwrap_err(), *error);
    let values: Vec<serde_json::Value> = records.into_iter().map(|(_, r)| r).collect();
    let restored = Engine::new(bundle("policies/seed.tsp"), Settings::replay())
        .resume(ledger.clone(), &values, &[])
        .unwrap();
    assert!(!restored.snapshot().is_empty());
}
