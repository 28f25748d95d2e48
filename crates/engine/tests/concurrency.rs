#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Decisions are linearizable under concurrency (DESIGN.md, "Concurrency"): many threads racing
//! one shared `Engine` on the system clock get exactly the answers some serial order of their
//! calls would get. Two concurrent calls can never both take the last slot of a rate limit, and
//! two calls that complete a pattern together cannot both slip past it.
//!
//! Beyond counting verdicts, the tests read a shadow policy's monitor value (`Count >= 1`, which
//! always fires) from every decision: in a serial order the admitted calls of a scope see the
//! counts 1, 2, 3, … exactly once each, so the values the racing threads saw must be exactly that
//! permutation.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use truststack_engine::{
    ApprovalAnswer, ApprovalResult, Decision, Engine, Settings, ToolCall, Verdict,
};
use truststack_policy::load::load_sources;
use truststack_policy::{Catalog, Source};
use truststack_testkit::assert_contains;

const CATALOG: &str = r#"
[tools.nmap_scan]
classes = ["ScanTool"]
attributes.target = { from = "/target" }

[tools.exploit_runner]
classes = ["ExploitationTool"]

[tools.read_docs]
classes = ["Benign"]
"#;

fn engine(policies: &str) -> Arc<Engine> {
    let catalog = Catalog::from_toml("catalog.toml", CATALOG).unwrap();
    let loaded = load_sources(
        vec![Source::new("concurrency.tsp", policies)],
        catalog,
        CATALOG,
    )
    .unwrap();
    // The system clock: enforcement, not replay. Every test finishes far inside its windows.
    Arc::new(Engine::new(loaded.bundle, Settings::default()))
}

fn call(id: String, agent: &str, chain: &[&str], tool: &str) -> ToolCall {
    ToolCall {
        id,
        time: None,
        agent: agent.to_string(),
        session: Some(format!("session-of-{agent}")),
        chain: chain.iter().map(|s| s.to_string()).collect(),
        tool: tool.to_string(),
        args: json!({"target": "10.0.0.1"}),
    }
}

/// The value of the one monitor of a shadow policy that fired on the decision.
fn probe(d: &Decision, policy: &str) -> Option<u64> {
    let fired = d.shadow.iter().find(|p| p.id == policy)?;
    let (_, v) = fired.monitors.iter().next()?;
    v.number()?.as_u64()
}

fn agent(name: &str) -> String {
    format!("spiffe://t.example/agent/{name}")
}

/// 8 threads × 500 scans race one agent's `Count > 100 requests/5min` (six threads) and a
/// second agent's (two threads): each agent gets exactly 100 calls admitted, never more, and the
/// admitted calls saw the counts 1..=100 exactly once each.
#[test]
fn agent_rate_limit_admits_exactly_the_limit_under_contention() {
    let engine = engine(
        "POLICY rate: ACTION: DENY TARGET: agent_identity \
           IF Tool_Call('ScanTool').Count > 100 requests/5min\n\
         POLICY position: ACTION: ALLOW MODE: shadow TARGET: agent_identity \
           IF Tool_Call('ScanTool').Count >= 1 requests/5min\n",
    );
    const THREADS: usize = 8;
    const CALLS: usize = 500;
    let started = Instant::now();
    let barrier = Barrier::new(THREADS);
    let results: Vec<(usize, Decision)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let engine = Arc::clone(&engine);
                let barrier = &barrier;
                s.spawn(move || {
                    let who = usize::from(t >= 6);
                    let name = agent(if who == 0 { "recon" } else { "other" });
                    barrier.wait();
                    (0..CALLS)
                        .map(|i| {
                            let c = call(format!("t{t}-{i}"), &name, &["user:u1"], "nmap_scan");
                            (who, engine.queue(&c).wait())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "the test must stay inside the 5 minute window"
    );
    assert_eq!(results.len(), THREADS * CALLS);
    for who in 0..2 {
        let mine: Vec<&Decision> = results
            .iter()
            .filter(|(w, _)| *w == who)
            .map(|(_, d)| d)
            .collect();
        let mut admitted: Vec<u64> = mine
            .iter()
            .filter(|d| d.decision == Verdict::Allow)
            .map(|d| probe(d, "position").unwrap())
            .collect();
        admitted.sort_unstable();
        assert_eq!(
            admitted,
            (1..=100).collect::<Vec<u64>>(),
            "agent {who}: exactly 100 admitted, each at its own position in a serial order"
        );
        for d in mine.iter().filter(|d| d.decision != Verdict::Allow) {
            assert_eq!(d.decision, Verdict::Deny);
            assert_eq!(d.policy_ids(), ["rate"]);
            assert_eq!(
                probe(d, "position"),
                Some(101),
                "a denied call saw a full window"
            );
        }
    }
}

/// Sub-agents of one orchestrator share its delegation root's rate limit; each also has its own
/// per-agent limit. Six agents of root A (the orchestrator itself and five sub-agents, 10 calls
/// each at most) race for A's 50; two sub-agents of root B share B's limit, which their own
/// limits never let them reach. Exactly 50 and exactly 20 are admitted, no agent gets more than
/// 10, and the admitted calls of each root saw the root counts 1..=N exactly once each.
#[test]
fn delegation_root_limit_is_shared_by_racing_sub_agents() {
    let engine = engine(
        "POLICY root-rate: ACTION: DENY TARGET: delegation_root \
           IF Tool_Call('ScanTool').Count > 50 requests/5min\n\
         POLICY agent-rate: ACTION: DENY TARGET: agent_identity \
           IF Tool_Call('ScanTool').Count > 10 requests/5min\n\
         POLICY root-position: ACTION: ALLOW MODE: shadow TARGET: delegation_root \
           IF Tool_Call('ScanTool').Count >= 1 requests/5min\n",
    );
    let orch_a = agent("orch-a");
    let orch_b = agent("orch-b");
    // (agent, chain, root)
    let mut actors: Vec<(String, Vec<String>, &str)> =
        vec![(orch_a.clone(), vec!["user:u1".into()], "A")];
    for i in 0..5 {
        actors.push((
            agent(&format!("a-sub{i}")),
            vec!["user:u1".into(), orch_a.clone()],
            "A",
        ));
    }
    for i in 0..2 {
        actors.push((
            agent(&format!("b-sub{i}")),
            vec!["user:u2".into(), orch_b.clone()],
            "B",
        ));
    }
    const CALLS: usize = 300;
    let barrier = Barrier::new(actors.len());
    let results: Vec<(String, &str, Decision)> = std::thread::scope(|s| {
        let handles: Vec<_> = actors
            .iter()
            .map(|(name, chain, root)| {
                let engine = Arc::clone(&engine);
                let barrier = &barrier;
                s.spawn(move || {
                    let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
                    barrier.wait();
                    (0..CALLS)
                        .map(|i| {
                            let c = call(format!("{name}-{i}"), name, &chain, "nmap_scan");
                            (name.clone(), *root, engine.queue(&c).wait())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut per_agent: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_root: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (name, root, d) in &results {
        match d.decision {
            Verdict::Allow => {
                *per_agent.entry(name).or_default() += 1;
                per_root
                    .entry(root)
                    .or_default()
                    .push(probe(d, "root-position").unwrap());
            }
            Verdict::Deny => {
                let ids = d.policy_ids();
                assert!(
                    ids.contains(&"root-rate") || ids.contains(&"agent-rate"),
                    "{name}: denied by a rate limit, not {ids:?}"
                );
            }
            Verdict::RequireApproval => panic!("nothing here holds a call"),
        }
    }
    for (name, n) in &per_agent {
        assert!(*n <= 10, "{name} got {n} scans past its own limit of 10");
    }
    for (root, want) in [("A", 50u64), ("B", 20)] {
        let mut seen = per_root.remove(root).unwrap_or_default();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=want).collect::<Vec<u64>>(),
            "root {root}: exactly {want} admitted, each at its own position in a serial order"
        );
    }
    assert_eq!(
        per_agent.get(orch_b.as_str()),
        None,
        "B's orchestrator made no call"
    );
}

/// Mixed workload: in each round, two scanners, an exploiter and a bystander, all sub-agents of
/// one fresh orchestrator, decide at the same moment under
/// `REQUIRE_HITL TARGET: delegation_root IF Trajectory_Contains('ScanTool') AND
/// Trajectory_Contains('ExploitationTool')`. Serially, either the exploit comes first (allowed,
/// and then both scans are held) or some scan does (then the exploit is held and both scans are
/// allowed, since a held exploit is not in the trajectory): exactly one of those two outcomes per
/// round, never "everybody allowed". A shadow `Sequence('ScanTool', 'ExploitationTool')` tells
/// whether a scan was admitted before the exploit, and must agree with the exploit's verdict.
#[test]
fn pattern_race_across_sub_agents_matches_a_serial_order() {
    let engine = engine(
        "POLICY pair: ACTION: REQUIRE_HITL TARGET: delegation_root \
           IF Trajectory_Contains('ScanTool') AND Trajectory_Contains('ExploitationTool')\n\
         POLICY scan-then-exploit: ACTION: ALLOW MODE: shadow TARGET: delegation_root \
           IF Sequence('ScanTool', 'ExploitationTool')\n",
    );
    const ROUNDS: usize = 150;
    const ROLES: [(&str, &str); 4] = [
        ("scanner-1", "nmap_scan"),
        ("scanner-2", "nmap_scan"),
        ("exploiter", "exploit_runner"),
        ("bystander", "read_docs"),
    ];
    let barrier = Barrier::new(ROLES.len());
    // rounds[r][role]
    let per_role: Vec<Vec<Decision>> = std::thread::scope(|s| {
        let handles: Vec<_> = ROLES
            .iter()
            .map(|(role, tool)| {
                let engine = Arc::clone(&engine);
                let barrier = &barrier;
                s.spawn(move || {
                    let name = agent(role);
                    (0..ROUNDS)
                        .map(|r| {
                            let orch = agent(&format!("orch-{r}"));
                            let c = call(format!("{role}-{r}"), &name, &["user:u1", &orch], tool);
                            barrier.wait();
                            engine.queue(&c).wait()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (mut exploit_first, mut scan_first) = (0, 0);
    #[allow(clippy::needless_range_loop)] // r indexes four parallel per-role vectors
    for r in 0..ROUNDS {
        let [s1, s2, exploit, bystander] = [0, 1, 2, 3].map(|i| &per_role[i][r]);
        assert_eq!(bystander.decision, Verdict::Allow);
        let order = exploit.shadow.iter().any(|p| p.id == "scan-then-exploit");
        for s in [s1, s2] {
            assert!(
                s.shadow.is_empty(),
                "a scan never completes scan-then-exploit"
            );
        }
        match exploit.decision {
            Verdict::Allow => {
                exploit_first += 1;
                assert!(
                    !order,
                    "round {r}: exploit allowed, yet a scan was admitted before it"
                );
                for s in [s1, s2] {
                    assert_eq!(
                        s.decision,
                        Verdict::RequireApproval,
                        "round {r}: the exploit was admitted first, so every scan completes the pair"
                    );
                    assert_eq!(s.policy_ids(), ["pair"]);
                }
            }
            Verdict::RequireApproval => {
                scan_first += 1;
                assert!(
                    order,
                    "round {r}: exploit held, so a scan was admitted before it"
                );
                assert_eq!(exploit.policy_ids(), ["pair"]);
                for s in [s1, s2] {
                    assert_eq!(
                        s.decision,
                        Verdict::Allow,
                        "round {r}: a held exploit is not in the trajectory"
                    );
                }
            }
            Verdict::Deny => panic!("round {r}: nothing here denies"),
        }
    }
    assert_eq!(exploit_first + scan_first, ROUNDS);
    assert_eq!(
        engine.pending().len(),
        exploit_first * 2 + scan_first,
        "every held call is pending exactly once"
    );
}

/// Many approvers answer the same held calls at once: each held call is resolved exactly once
/// (one answer applies, every other gets an error), and the grants then count against a
/// rate limit exactly as serial grants would: of 40 held exploits granted concurrently under
/// `Count > 25 requests/5min`, exactly 25 are admitted and 15 are granted-but-denied.
#[test]
fn concurrent_answers_resolve_each_held_call_once() {
    let engine = engine(
        "POLICY gate: ACTION: REQUIRE_HITL IF Tool_Call('ExploitationTool')\n\
         POLICY cap: ACTION: DENY IF Tool_Call('ExploitationTool').Count > 25 requests/5min\n",
    );
    const HELD: usize = 40;
    const APPROVERS: usize = 6;
    let name = agent("exploiter");
    for i in 0..HELD {
        let d = engine
            .queue(&call(
                format!("x{i}"),
                &name,
                &["user:u1"],
                "exploit_runner",
            ))
            .wait();
        assert_eq!(d.decision, Verdict::RequireApproval, "x{i}");
    }
    let barrier = Barrier::new(APPROVERS);
    let outcomes: Vec<(usize, Result<ApprovalResult, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..APPROVERS)
            .map(|a| {
                let engine = Arc::clone(&engine);
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    // Each approver walks the held calls from a different starting point.
                    (0..HELD)
                        .map(|k| {
                            let i = (k + a * 7) % HELD;
                            let answer = ApprovalAnswer {
                                approval_id: None,
                                call_id: Some(format!("x{i}")),
                                approver: format!("user:approver{a}"),
                                groups: Vec::new(),
                                grant: true,
                                lease: None,
                                time: None,
                            };
                            let r = engine
                                .answer(&answer)
                                .map(|o| o.result)
                                .map_err(|e| e.to_string());
                            (i, r)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut applied: BTreeMap<usize, ApprovalResult> = BTreeMap::new();
    for (i, r) in outcomes {
        match r {
            Ok(result) => assert!(
                applied.insert(i, result).is_none(),
                "x{i} was resolved twice"
            ),
            Err(e) => assert_contains!(e, "no pending approval", "x{i}: {e}"),
        }
    }
    assert_eq!(applied.len(), HELD, "every held call resolved once");
    let granted = applied
        .values()
        .filter(|r| **r == ApprovalResult::Granted)
        .count();
    let denied = applied
        .values()
        .filter(|r| **r == ApprovalResult::GrantedButDenied)
        .count();
    assert_eq!((granted, denied), (25, HELD - 25));
    assert!(engine.pending().is_empty());
    // The window is full: the next exploit is denied outright, without a human being asked.
    let d = engine
        .queue(&call(
            "x-next".into(),
            &name,
            &["user:u1"],
            "exploit_runner",
        ))
        .wait();
    assert_eq!(d.decision, Verdict::Deny);
    assert!(d.policy_ids().contains(&"cap"));
}

/// Keeps an approval's record from being durable until the test lets it through.
struct GatedApprovals {
    entered: std::sync::mpsc::SyncSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl truststack_engine::Recorder for GatedApprovals {
    fn record(&self, record: Value) -> truststack_engine::Recorded {
        if record["kind"] == "approval" {
            self.entered.send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
        Ok(None)
    }
}

#[test]
fn a_held_call_being_answered_is_still_awaited_until_its_outcome_is_recorded() {
    let (entered, answering) = std::sync::mpsc::sync_channel(1);
    let (release, released) = std::sync::mpsc::sync_channel(1);
    let catalog = Catalog::from_toml("catalog.toml", CATALOG).unwrap();
    let policies = "POLICY gate: ACTION: REQUIRE_HITL IF Tool_Call('ExploitationTool')\n";
    let loaded = load_sources(vec![Source::new("gate.tsp", policies)], catalog, CATALOG).unwrap();
    let engine = Arc::new(
        Engine::new(loaded.bundle, Settings::default()).with_recorder(Arc::new(GatedApprovals {
            entered,
            release: std::sync::Mutex::new(released),
        })),
    );
    let name = agent("exploiter");
    let held = engine
        .queue(&call("x".into(), &name, &["user:u1"], "exploit_runner"))
        .wait();
    let approval = held.approval_id.unwrap();
    std::thread::scope(|s| {
        let answerer = s.spawn(|| {
            engine.answer(&ApprovalAnswer {
                approval_id: Some(approval.clone()),
                call_id: None,
                approver: "user:oncall".into(),
                groups: Vec::new(),
                grant: true,
                lease: None,
                time: None,
            })
        });
        // The answer has taken the call off the held list and is writing its outcome.
        answering.recv().unwrap();
        assert!(engine.pending().is_empty());
        assert!(
            engine.is_pending(&approval),
            "an approval whose outcome is being recorded is still awaited"
        );
        // A waiter whose wait times out now is told nothing yet, not that the call is lost.
        assert!(engine
            .wait_outcome(&approval, Duration::from_millis(20))
            .is_none());
        assert!(engine.is_pending(&approval));
        let waiter = s.spawn(|| engine.wait_outcome(&approval, Duration::from_secs(30)));
        release.send(()).unwrap();
        let outcome = waiter.join().unwrap().expect("the waiter gets the outcome");
        assert_eq!(outcome.result, ApprovalResult::Granted);
        assert_eq!(
            answerer.join().unwrap().unwrap().result,
            ApprovalResult::Granted
        );
    });
    assert!(!engine.is_pending(&approval));
}
