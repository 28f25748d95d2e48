//! Task grants: a session's declared task narrows what its calls may do, never widens it, and
//! survives a restart and a replay of the ledger.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::Arc;
use truststack_engine::ledger::{Ledger, LedgerConfig};
use truststack_engine::replay::divergences;
use truststack_engine::{Caller, Engine, Grant, GrantError, Request, Settings, ToolCall, Verdict};
use truststack_policy::{build_bundle, Catalog, Source};
use truststack_testkit::assert_contains;

const USER: &str = "user:alice@acme.example";
const AGENT: &str = "spiffe://acme.example/agent/assistant";

const CATALOG: &str = r#"
[tools.send_email]
classes = ["Send"]
attributes.Recipient = { from = "/recipients/*" }

[tools.send_money]
classes = ["Send", "Payment"]

[tools.read_file]
classes = ["Read"]

[tools.delete_file]
classes = ["Destructive"]
"#;

/// One policy, so a denial before policy evaluation is visible: it would fire on every payment.
const POLICY: &str = "POLICY big-payment:\n  ACTION: REQUIRE_HITL\n  TARGET: session\n  IF Tool_Call('Payment') AND Arg('/amount') > 1000\n";

fn engine() -> Engine {
    let catalog = Catalog::from_toml("catalog.toml", CATALOG).unwrap();
    let (bundle, _) = build_bundle(&[Source::new("p.tsp", POLICY)], catalog, CATALOG).unwrap();
    Engine::new(bundle, Settings::replay())
}

fn chain() -> Vec<String> {
    vec![USER.to_string()]
}

fn grant(session: &str, allow: Value) -> Grant {
    serde_json::from_value(json!({
        "time": "2026-01-01T00:00:00Z", "agent": AGENT, "session": session,
        "chain": chain(), "allow": allow,
    }))
    .unwrap()
}

fn call(id: &str, session: &str, tool: &str, args: Value) -> ToolCall {
    ToolCall {
        id: id.into(),
        time: Some("2026-01-01T00:00:01Z".into()),
        agent: AGENT.into(),
        session: Some(session.into()),
        chain: chain(),
        tool: tool.into(),
        args,
    }
}

fn caller(tools: Option<Vec<&str>>) -> Caller {
    Caller {
        agent: AGENT.into(),
        chain: chain(),
        tools: tools.map(|t| t.into_iter().map(String::from).collect()),
        credential_id: Some("cred-1".into()),
    }
}

#[test]
fn a_call_outside_the_grant_is_denied_before_policy_evaluation() {
    let e = engine();
    let declared = e
        .declare_grant(&grant(
            "s1",
            json!([{"tool": "read_file"},
                   {"tool": "send_money", "args": {"/recipient": {"one_of": ["landlord"]}, "/amount": {"max": 2000}}}]),
        ))
        .unwrap();
    let id = declared.grant_id;
    assert!(id.starts_with("g-"), "{id}");

    let d = e
        .queue(&call("c1", "s1", "read_file", json!({"path": "a"})))
        .wait();
    assert_eq!(d.decision, Verdict::Allow, "{}", d.reason);

    let d = e
        .queue(&call("c2", "s1", "delete_file", json!({"path": "a"})))
        .wait();
    assert_eq!(d.decision, Verdict::Deny);
    assert_eq!(
        d.reason,
        format!("the task grant {id} does not allow tool `delete_file` (granted: read_file, send_money)")
    );

    let d = e
        .queue(&call(
            "c3",
            "s1",
            "send_money",
            json!({"recipient": "eve", "amount": 1500}),
        ))
        .wait();
    assert_eq!(d.decision, Verdict::Deny);
    assert!(
        d.policies.is_empty(),
        "no policy was evaluated: {:?}",
        d.policies
    );
    assert_contains!(
        d.reason,
        "`/recipient` value \"eve\" is not one of the granted values"
    );

    // Within the grant, policies still decide: the grant does not allow what they hold.
    let d = e
        .queue(&call(
            "c4",
            "s1",
            "send_money",
            json!({"recipient": "Landlord", "amount": 1500}),
        ))
        .wait();
    assert_eq!(d.decision, Verdict::RequireApproval, "{}", d.reason);

    // Another session, and the same session name under another human, have no grant.
    let d = e.queue(&call("c5", "s2", "delete_file", json!({}))).wait();
    assert_eq!(d.decision, Verdict::Allow);
    let mut other = call("c6", "s1", "delete_file", json!({}));
    other.chain = vec!["user:bob@acme.example".into()];
    assert_eq!(e.queue(&other).wait().decision, Verdict::Allow);
}

#[test]
fn a_grant_never_widens_the_credential() {
    let e = engine();
    e.declare_grant(&grant("s1", json!([{"tool": "*"}])))
        .unwrap();
    let d = e
        .queue(
            Request::new(&call("c1", "s1", "send_email", json!({})))
                .for_caller(&caller(Some(vec!["Read"]))),
        )
        .wait();
    assert_eq!(d.decision, Verdict::Deny);
    assert!(
        d.reason.starts_with("the credential cred-1"),
        "{}",
        d.reason
    );
    let d = e
        .queue(
            Request::new(&call("c2", "s1", "read_file", json!({})))
                .for_caller(&caller(Some(vec!["Read"]))),
        )
        .wait();
    assert_eq!(d.decision, Verdict::Allow);
}

#[test]
fn a_second_grant_narrows_the_session_further() {
    let e = engine();
    let first = e
        .declare_grant(&grant(
            "s1",
            json!([{"tool": "Send"}, {"tool": "read_file"}]),
        ))
        .unwrap()
        .grant_id;
    let second = e
        .declare_grant(&grant(
            "s1",
            json!([{"tool": "send_email"}, {"tool": "delete_file"}]),
        ))
        .unwrap()
        .grant_id;
    let decide = |id: &str, tool: &str| e.queue(&call(id, "s1", tool, json!({}))).wait();
    assert_eq!(decide("c1", "send_email").decision, Verdict::Allow);
    let d = decide("c2", "read_file");
    assert_eq!(d.decision, Verdict::Deny);
    assert!(d.reason.contains(&second), "{}", d.reason);
    let d = decide("c3", "delete_file");
    assert_eq!(d.decision, Verdict::Deny);
    assert!(d.reason.contains(&first), "{}", d.reason);
}

#[test]
fn only_a_human_of_the_chain_declares_a_grant() {
    let e = engine();
    let mut g = grant("s1", json!([]));
    g.chain = vec!["spiffe://acme.example/agent/orchestrator".into()];
    let err = e.declare_grant(&g).unwrap_err();
    assert!(matches!(err, GrantError::Invalid(_)), "{err}");
    assert_contains!(err.to_string(), "names no human");

    let mut g = grant("s1", json!([]));
    g.principal = Some("user:mallory@acme.example".into());
    assert_contains!(
        e.declare_grant(&g).unwrap_err().to_string(),
        "not in the chain"
    );

    let mut g = grant("s1", json!([]));
    g.principal = Some(AGENT.into());
    assert_contains!(
        e.declare_grant(&g).unwrap_err().to_string(),
        "not a human principal"
    );

    // Nothing of the refused grants applies.
    assert_eq!(
        e.queue(&call("c1", "s1", "read_file", json!({})))
            .wait()
            .decision,
        Verdict::Allow
    );
}

#[test]
fn a_grant_survives_a_restart_and_a_replay_of_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let config = LedgerConfig::new(dir.path().join("log.key"));
    let db = dir.path().join("ledger.db");
    let calls = [
        call("c1", "s1", "read_file", json!({})),
        call(
            "c2",
            "s1",
            "send_email",
            json!({"recipients": ["bob@acme.example"]}),
        ),
        call(
            "c3",
            "s1",
            "send_email",
            json!({"recipients": ["eve@evil.example"]}),
        ),
        call("c4", "s2", "delete_file", json!({})),
    ];
    let (declared, before) = {
        let ledger = Arc::new(Ledger::open(&db, &config).unwrap());
        let e = engine().with_recorder(ledger.clone());
        let declared = e
            .declare_grant(&grant(
                "s1",
                json!([{"tool": "read_file"}, {"tool": "Send", "args": {"Recipient": {"one_of": ["bob@acme.example"]}}}]),
            ))
            .unwrap();
        let record = ledger
            .entry(declared.ledger_index.unwrap())
            .unwrap()
            .record()
            .unwrap();
        assert_eq!(record["kind"], "grant");
        assert_eq!(record["grant"]["id"], declared.grant_id.as_str());
        let before: Vec<Verdict> = calls.iter().map(|c| e.queue(c).wait().decision).collect();
        (declared, before)
    };
    assert_eq!(
        before,
        [
            Verdict::Allow,
            Verdict::Allow,
            Verdict::Deny,
            Verdict::Allow
        ]
    );

    let ledger = Ledger::open(&db, &config).unwrap();
    let records = ledger.records().unwrap();

    // Restart: a fresh engine restored from the ledger keeps the grant in force.
    let restarted = engine();
    for (i, r) in (0u64..).zip(&records) {
        restarted
            .restore(&truststack_engine::Record::decode(i, r).unwrap())
            .unwrap();
    }
    let d = restarted
        .queue(&call("c5", "s1", "delete_file", json!({})))
        .wait();
    assert_eq!(d.decision, Verdict::Deny);
    assert!(d.reason.contains(&declared.grant_id), "{}", d.reason);
    let after: Vec<Verdict> = calls
        .iter()
        .map(|c| restarted.queue(c).wait().decision)
        .collect();
    assert_eq!(after, before);

    // Replay re-declares the grant and re-decides every call identically.
    let indexed: Vec<(u64, Value)> = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i as u64, r))
        .collect();
    let replayed = divergences(&engine(), &indexed);
    assert_eq!(replayed.calls, calls.len());
    assert!(
        replayed.divergences.is_empty(),
        "{:?}",
        replayed.divergences
    );
    assert!(replayed.unreadable.is_empty(), "{:?}", replayed.unreadable);
    // Without the grant's record, the denied call would diverge: the replay did use it.
    let without: Vec<(u64, Value)> = indexed
        .into_iter()
        .filter(|(_, r)| r["kind"] != "grant")
        .collect();
    let changed = divergences(&engine(), &without).divergences;
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].call_id, "c3");
}

const TOOLS: [&str; 4] = ["send_email", "send_money", "read_file", "delete_file"];
const NAMES: [&str; 8] = [
    "send_email",
    "send_money",
    "read_file",
    "delete_file",
    "Send",
    "Payment",
    "Read",
    "*",
];

fn arb_allowance() -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(NAMES.to_vec()),
        proptest::option::of(proptest::collection::vec(0u8..4, 0..3)),
        proptest::option::of((0i64..50, 0i64..50)),
    )
        .prop_map(|(tool, one_of, range)| {
            let mut args = serde_json::Map::new();
            if let Some(values) = one_of {
                args.insert(
                    "/to".into(),
                    json!({"one_of": values.iter().map(|v| format!("p{v}")).collect::<Vec<_>>()}),
                );
            }
            if let Some((a, b)) = range {
                args.insert("/amount".into(), json!({"min": a.min(b), "max": a.max(b)}));
            }
            json!({"tool": tool, "args": args})
        })
}

fn arb_grant() -> impl Strategy<Value = Value> {
    proptest::collection::vec(arb_allowance(), 0..4).prop_map(Value::Array)
}

fn arb_call() -> impl Strategy<Value = (String, Value)> {
    (
        proptest::sample::select(TOOLS.to_vec()),
        proptest::option::of(0u8..4),
        proptest::option::of(0i64..50),
    )
        .prop_map(|(tool, to, amount)| {
            let mut args = serde_json::Map::new();
            if let Some(to) = to {
                args.insert("to".into(), json!(format!("P{to}")));
            }
            if let Some(amount) = amount {
                args.insert("amount".into(), json!(amount));
            }
            (tool.to_string(), Value::Object(args))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the grants, a call the credential refuses is refused; and each grant added to a
    /// session can only turn allowed calls into refused ones.
    #[test]
    fn grants_never_widen_and_narrow_monotonically(
        credential in proptest::option::of(proptest::sample::subsequence(NAMES.to_vec(), 0..4)),
        grants in proptest::collection::vec(arb_grant(), 1..4),
        calls in proptest::collection::vec(arb_call(), 1..12),
    ) {
        let caller = caller(credential.clone());
        let e = engine();
        let verdicts = |e: &Engine, round: usize| -> Vec<Verdict> {
            calls.iter().enumerate().map(|(i, (tool, args))| {
                // Amounts stay under the policy's bound: every verdict is the grant's or the
                // credential's.
                e.queue(Request::new(&call(&format!("c{round}-{i}"), "s", tool, args.clone())).for_caller(&caller)).wait().decision
            }).collect()
        };
        let bare = verdicts(&e, 0);
        for (i, v) in bare.iter().enumerate() {
            let credential_allows = credential.as_ref().is_none_or(|c| {
                let classes: &[&str] = match calls[i].0.as_str() {
                    "send_email" => &["Send"],
                    "send_money" => &["Send", "Payment"],
                    "read_file" => &["Read"],
                    _ => &["Destructive"],
                };
                c.iter().any(|a| *a == "*" || *a == calls[i].0 || classes.contains(a))
            });
            prop_assert_eq!(*v == Verdict::Allow, credential_allows);
        }
        let mut previous = bare;
        for (round, g) in grants.iter().enumerate() {
            e.declare_grant(&grant("s", g.clone())).unwrap();
            let now = verdicts(&e, round + 1);
            for (before, after) in previous.iter().zip(&now) {
                prop_assert!(*before == Verdict::Allow || *after == Verdict::Deny,
                    "a grant widened the session: {before:?} -> {after:?}");
            }
            previous = now;
        }
    }
}
