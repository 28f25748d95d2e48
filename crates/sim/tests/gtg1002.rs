//! The GTG-1002 manifests of `examples/gtg1002`: what `truststack prove` must find in each, and
//! that `--fix` output is proved safe.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use truststack_engine::Verdict;
use truststack_sim::toxic::HolderKind;
use truststack_sim::{
    analyse, prove, remediate, Analysis, Manifest, Options, ProveOptions, Status, World,
};

use truststack_testkit::assert_contains;
use truststack_testkit::examples::gtg1002 as example;

fn world(name: &str) -> World {
    World::build(Manifest::load(&example(name)).unwrap()).unwrap()
}

fn analysis(name: &str) -> Analysis {
    analyse(&world(name), &Options::default())
}

fn status(a: &Analysis, goal: &str) -> Status {
    a.goal(goal)
        .unwrap_or_else(|| panic!("no goal {goal}"))
        .status
}

fn classes(a: &Analysis, goal: &str, kind: HolderKind) -> Vec<Vec<String>> {
    a.toxic
        .iter()
        .filter(|t| t.goal == goal && t.holder == kind)
        .map(|t| t.classes.clone())
        .collect()
}

const GOALS: [&str; 3] = [
    "gtg1002-escalation",
    "gtg1002-chain",
    "data-exfiltration:Internal_Prod_DB",
];

#[test]
fn naive_manifest_reaches_the_whole_campaign_unguarded() {
    let a = analysis("manifest-naive.toml");
    assert!(!a.safe);
    for g in GOALS {
        assert_eq!(status(&a, g), Status::Unguarded, "{g}");
        let t = a.goal(g).unwrap().trajectory.as_ref().unwrap();
        assert!(t.replay_consistent, "{g}");
        assert!(t.gates.is_empty());
        assert!(t.steps.iter().all(|s| s.decision == Verdict::Allow));
    }
    // Shortest evidence: one call per phase.
    let chain = a
        .goal("gtg1002-chain")
        .unwrap()
        .trajectory
        .as_ref()
        .unwrap();
    let tools: Vec<&str> = chain.steps.iter().map(|s| s.tool.as_str()).collect();
    assert_eq!(
        tools,
        [
            "nmap_scan",
            "code_review",
            "exploit_runner",
            "prod_db_query",
            "http_upload"
        ]
    );
    // The toxic combination of the article.
    assert_eq!(
        classes(&a, "gtg1002-escalation", HolderKind::AgentIdentity),
        vec![vec!["ScanTool", "CodeAnalysisTool", "ExploitationTool"]]
    );
    let esc = a
        .toxic
        .iter()
        .find(|t| t.goal == "gtg1002-escalation")
        .unwrap();
    assert_eq!(esc.holder_name, "operator");
    assert_eq!(
        esc.tool_sets.len(),
        2,
        "nmap_scan or service_probe: {:?}",
        esc.tool_sets
    );
    assert_eq!(
        classes(
            &a,
            "data-exfiltration:Internal_Prod_DB",
            HolderKind::AgentIdentity
        ),
        vec![vec!["DatabaseQuery", "DataExfiltration"]]
    );
}

#[test]
fn the_scan_rate_limit_only_slows_the_naive_campaign_down() {
    let a = analysis("manifest-naive.toml");
    let sweep = a.sweeps.iter().find(|s| s.tool == "nmap_scan").unwrap();
    assert_eq!(sweep.calls, 65_536);
    // 65,535 gaps of 250 ms unlimited; 655 full windows of 5 minutes plus 35 gaps limited.
    assert_eq!(sweep.unlimited_ms, 65_535.0 * 250.0);
    assert_eq!(sweep.limited_ms, Some(655.0 * 300_000.0 + 35.0 * 250.0));
    let t = a
        .goal("gtg1002-escalation")
        .unwrap()
        .time_to_goal
        .as_ref()
        .unwrap();
    assert_eq!(t.calls, 65_538);
    assert!(t.limited_ms.unwrap() > 2.0 * 86_400_000.0);
    assert!(t.unlimited_ms < 5.0 * 3_600_000.0);
    assert_eq!(t.limits[0].limit.policy, "scan-rate-limit#1");
}

#[test]
fn split_manifest_is_still_unguarded_through_the_orchestrator() {
    let a = analysis("manifest-split.toml");
    assert!(!a.safe);
    let orchestrator = a.agents.iter().find(|x| x.name == "orchestrator").unwrap();
    assert!(orchestrator.tools.is_empty());
    for g in GOALS {
        assert_eq!(status(&a, g), Status::Unguarded, "{g}");
    }
    // The evidence uses both sub-agents, each delegated by the orchestrator.
    let t = a
        .goal("gtg1002-escalation")
        .unwrap()
        .trajectory
        .as_ref()
        .unwrap();
    let actors: std::collections::BTreeSet<&str> =
        t.steps.iter().map(|s| s.actor.as_str()).collect();
    assert_eq!(
        actors.into_iter().collect::<Vec<_>>(),
        ["orchestrator → patch", "orchestrator → recon"]
    );
    assert!(t.steps.iter().all(|s| s
        .chain
        .contains(&"spiffe://acme.example/agent/orchestrator".to_string())));
    // No single identity holds a toxic combination; the orchestration does (context splitting).
    assert!(classes(&a, "gtg1002-escalation", HolderKind::AgentIdentity).is_empty());
    assert_eq!(
        classes(&a, "gtg1002-escalation", HolderKind::DelegationRoot),
        vec![vec!["ScanTool", "CodeAnalysisTool", "ExploitationTool"]]
    );
    let root = a
        .toxic
        .iter()
        .find(|t| t.holder == HolderKind::DelegationRoot)
        .unwrap();
    assert_eq!(root.holder_name, "orchestrator");
    assert_eq!(root.held_by, ["patch", "recon"]);
}

#[test]
fn fixed_manifest_is_proved_safe() {
    let a = analysis("manifest-fixed.toml");
    assert!(
        a.safe,
        "{:?}",
        a.goals
            .iter()
            .map(|g| (&g.id, g.status))
            .collect::<Vec<_>>()
    );
    assert!(a.exploration.exhaustive);
    assert_eq!(status(&a, "gtg1002-escalation"), Status::Gated);
    assert_eq!(status(&a, "gtg1002-chain"), Status::Unreachable);
    assert_eq!(
        status(&a, "data-exfiltration:Internal_Prod_DB"),
        Status::Unreachable
    );
    let t = a
        .goal("gtg1002-escalation")
        .unwrap()
        .trajectory
        .as_ref()
        .unwrap();
    assert_eq!(t.gates, ["chain-of-command"]);
    let held = t.steps.last().unwrap();
    assert_eq!(held.decision, Verdict::RequireApproval);
    assert_eq!(
        held.approval.as_ref().unwrap().approver,
        "user:oncall@acme.example"
    );
    assert!(a.toxic.is_empty());
}

fn assert_fix_is_safe(name: &str) {
    let w = world(name);
    let a = analyse(&w, &Options::default());
    // In memory.
    let fix = remediate(&w, &a, None).unwrap();
    assert!(
        fix.safe,
        "{name}: {:#?}",
        fix.proof
            .goals
            .iter()
            .map(|g| (&g.id, g.status))
            .collect::<Vec<_>>()
    );
    assert!(fix.proof.safe);
    assert!(fix.unresolved.is_empty(), "{:?}", fix.unresolved);
    // Written, loaded back from disk and proved again.
    let dir = tempfile::tempdir().unwrap();
    let fix = remediate(&w, &a, Some(dir.path())).unwrap();
    assert!(fix.safe);
    let stem = name.trim_end_matches(".toml");
    let fixed = dir.path().join(format!("{stem}.fixed.toml"));
    assert!(fix
        .written
        .iter()
        .any(|p| p.ends_with(&format!("{stem}.fixed.toml"))));
    let again = prove(
        &fixed,
        &ProveOptions {
            runs: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(again.safe, "{}", std::fs::read_to_string(&fixed).unwrap());
}

#[test]
fn fix_of_the_naive_manifest_adds_policies_first_and_offers_the_split_as_a_proved_alternative() {
    assert_fix_is_safe("manifest-naive.toml");
    let w = world("manifest-naive.toml");
    let a = analyse(&w, &Options::default());
    let fix = remediate(&w, &a, None).unwrap();
    // The smallest change that proves safe: policies, no split.
    assert!(fix
        .changes
        .iter()
        .all(|c| !matches!(c, truststack_sim::fix::Change::SplitIdentity { .. })));
    assert_contains!(fix.policy_text, "TARGET: delegation_root");
    // The split is offered as an alternative, proved in the same run.
    let alt = fix
        .alternatives
        .iter()
        .find(|x| x.id == "split")
        .expect("a split alternative");
    assert!(alt.safe, "{alt:#?}");
    let split = alt
        .changes
        .iter()
        .find_map(|c| match c {
            truststack_sim::fix::Change::SplitIdentity { parts, .. } => Some(parts.clone()),
            _ => None,
        })
        .expect("a split");
    assert_eq!(split.len(), 2);
    for p in &split {
        let t = &p.tools;
        let all3 = ["code_review", "exploit_runner"]
            .iter()
            .all(|x| t.iter().any(|y| y == x))
            && t.iter().any(|y| y == "nmap_scan" || y == "service_probe");
        assert!(!all3, "{p:?} still holds the toxic combination");
    }
    // Splitting alone is defeated by a shared orchestrator: the split still gates the root.
    assert_contains!(alt.policy_text, "TARGET: delegation_root");
    assert!(alt.shared_orchestrator.as_ref().unwrap().safe);
    // The data flow is denied; a human gate is offered instead, and proved.
    let gate = fix
        .alternatives
        .iter()
        .find(|x| x.id == "gate")
        .expect("a gate alternative");
    assert!(gate.safe, "{gate:#?}");
    assert_contains!(gate.policy_text, "REQUIRE_HITL");
    assert!(gate.statuses.values().any(|s| *s == Status::Gated));
}

#[test]
fn fix_of_the_split_manifest_gates_the_orchestration_and_is_proved_safe() {
    assert_fix_is_safe("manifest-split.toml");
}

#[test]
fn gtg1002_analyses_terminate_fast() {
    for name in [
        "manifest-naive.toml",
        "manifest-split.toml",
        "manifest-fixed.toml",
    ] {
        let w = world(name);
        let started = std::time::Instant::now();
        let _ = analyse(&w, &Options::default());
        // The benchmark measures release builds (well under 1 s); debug builds are slower.
        assert!(
            started.elapsed().as_secs_f64() < 10.0,
            "{name}: {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn monte_carlo_is_deterministic_given_a_seed() {
    let w = world("manifest-fixed.toml");
    let run = |threads| {
        let mut o = truststack_sim::McOptions::from_world(&w);
        o.runs = 300;
        o.seed = 42;
        o.threads = threads;
        truststack_sim::montecarlo::monte_carlo(&w, &o, &|_| {})
    };
    let (a, b) = (run(1), run(2));
    assert_eq!(a.decisions, b.decisions);
    for (x, y) in a.goals.iter().zip(&b.goals) {
        assert_eq!((x.reached, x.unguarded), (y.reached, y.unguarded));
        assert_eq!(
            x.steps.as_ref().map(|s| s.mean),
            y.steps.as_ref().map(|s| s.mean)
        );
    }
    // Gated goals are reached only through grants; the other two never.
    let esc = &a.goals[0];
    assert!(esc.reached > 0 && esc.unguarded == 0);
    assert!(a.goals[1..].iter().all(|g| g.reached == 0));
}

/// Monte Carlo decides with `Engine::decide_brief`: on random walks through every GTG-1002
/// manifest (grants included, leases with `approval_lease`) it must give `decide`'s verdicts,
/// approval ids and answers, and leave the same monitor states and held calls.
#[test]
fn brief_decisions_are_the_engines_decisions() {
    for name in [
        "manifest-naive.toml",
        "manifest-split.toml",
        "manifest-fixed.toml",
    ] {
        let mut manifest = Manifest::load(&example(name)).unwrap();
        for lease in [None, Some(60_000)] {
            manifest.settings.approval_lease_ms = lease;
            let w = World::build(manifest.clone()).unwrap();
            for seed in 0..20 {
                let mut rng = truststack_sim::rng::Rng::for_run(seed, 0);
                let (full, brief) = (w.base.fork(), w.base.fork());
                let mut now = w.manifest.settings.start_ms;
                for step in 0..200 {
                    let mv = w.moves[rng.below(w.moves.len())];
                    let call = w.call(mv, now, format!("c{step}"));
                    let d = full.queue(&call).wait();
                    let b = brief.decide_brief(&call, now);
                    assert_eq!(
                        (b.decision, &b.approval_id),
                        (d.decision, &d.approval_id),
                        "{name}, seed {seed}, step {step}"
                    );
                    if d.decision == Verdict::RequireApproval && rng.unit() < 0.5 {
                        let lease = lease.map(|ms| format!("{ms}ms"));
                        assert_eq!(
                            w.grant(&full, &d.approval_id, lease.clone(), now),
                            w.grant(&brief, &d.approval_id, lease, now),
                            "{name}, seed {seed}, step {step}"
                        );
                    }
                    now += rng.exponential(250.0).round().max(1.0) as i64;
                }
                assert_eq!(full.snapshot(), brief.snapshot(), "{name}, seed {seed}");
                assert_eq!(
                    serde_json::to_value(full.pending()).unwrap(),
                    serde_json::to_value(brief.pending()).unwrap(),
                    "{name}, seed {seed}"
                );
            }
        }
    }
}
