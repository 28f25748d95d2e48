//! Properties over generated manifests:
//! - every reported trajectory, replayed through the engine exactly as `truststack policy eval`
//!   does (its JSONL parsed by `parse_trace`, run by `truststack_engine::replay::replay` with
//!   eval's settings), gives the reported decisions and reaches its goal;
//! - the state-equivalence pruning loses nothing: a brute-force enumeration of every call
//!   sequence (no merging at all) finds exactly the same goals unguarded, gated or unreached.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use std::path::Path;
use truststack_engine::replay::{parse_trace, replay};
use truststack_engine::Processed;
use truststack_engine::{ApprovalResult, Engine, Verdict};
use truststack_sim::world::Move;
use truststack_sim::{analyse, Manifest, Options, Status, World};

mod common;
use common::CATALOG;

const TOOLS: [&str; 6] = ["scan", "code", "exploit", "db", "up", "docs"];
const NAMES: [&str; 8] = [
    "scan",
    "code",
    "exploit",
    "db",
    "up",
    "docs",
    "ScanTool",
    "DataExfiltration",
];
const TARGETS: [&str; 3] = ["agent_identity", "delegation_root", "user"];

fn policy(kind: u8, x: usize, y: usize, t: usize) -> String {
    let (x, y, t) = (NAMES[x % 8], NAMES[y % 8], TARGETS[t % 3]);
    match kind % 9 {
        0 => format!("ACTION: DENY TARGET: {t} IF Tool_Call('{x}')"),
        1 => format!("ACTION: REQUIRE_HITL TARGET: {t} IF Tool_Call('{x}') AND Trajectory_Contains('{y}')"),
        2 => format!("ACTION: DENY TARGET: {t} IF DataSource('DB') == 'read' AND Tool_Call('{x}')"),
        3 => format!("ACTION: DENY TARGET: {t} IF Tool_Call('{x}').Count > 1 requests/1min"),
        4 => format!("ACTION: REQUIRE_HITL TARGET: {t} IF Sequence('{x}', '{y}')"),
        5 => format!("ACTION: DENY TARGET: {t} IF DataSource('DB') WITHIN 10min AND Tool_Call('{x}')"),
        6 => format!("ACTION: REQUIRE_HITL TARGET: {t} IF Trajectory_Contains('{x}') WITHIN 5min AND Tool_Call('{y}')"),
        7 => format!("ACTION: DENY TARGET: {t} IF Tool_Call('{x}') AND NOT Trajectory_Contains('{y}')"),
        _ => format!("ACTION: ALLOW TARGET: {t} IF Tool_Call('{x}')"),
    }
}

#[derive(Debug, Clone)]
struct Spec {
    agents: Vec<Vec<usize>>,
    delegations: Vec<(usize, usize)>,
    policies: Vec<(u8, usize, usize, usize)>,
    default_deny: bool,
    lease: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec(prop::collection::vec(0..6usize, 0..4), 1..4),
        prop::collection::vec((0..3usize, 0..3usize), 0..3),
        prop::collection::vec((0..9u8, 0..8usize, 0..8usize, 0..3usize), 0..4),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(agents, delegations, policies, default_deny, lease)| Spec {
                agents,
                delegations,
                policies,
                default_deny,
                lease,
            },
        )
}

fn manifest(s: &Spec, waits: bool, depth: usize) -> Manifest {
    let mut text = String::new();
    let pols: Vec<String> = s
        .policies
        .iter()
        .enumerate()
        .map(|(i, (k, x, y, t))| format!("POLICY p{i}: {}", policy(*k, *x, *y, *t)))
        .collect();
    text.push_str(&format!(
        "policies = [{{ name = \"gen\", text = '''\n{}\n''' }}]\n",
        pols.join("\n")
    ));
    text.push_str(&format!(
        "[settings]\nmax_depth = {depth}\nwaits = {waits}\nstep = \"20s\"\ndefault_decision = \"{}\"\n{}",
        if s.default_deny { "deny" } else { "allow" },
        if s.lease { "approval_lease = \"2min\"\n" } else { "" }
    ));
    text.push_str("[approvers]\noncall = [\"user:oncall@x\"]\n");
    let n = s.agents.len();
    for (i, tools) in s.agents.iter().enumerate() {
        let mut ts: Vec<&str> = tools.iter().map(|t| TOOLS[*t]).collect();
        ts.sort();
        ts.dedup();
        let ds: Vec<String> = s
            .delegations
            .iter()
            .filter(|(a, b)| *a % n == i && *b % n != i)
            .map(|(_, b)| format!("\"a{}\"", b % n))
            .collect();
        text.push_str(&format!(
            "[agents.a{i}]\ntools = [{}]\ndelegates_to = [{}]\n{}",
            ts.iter()
                .map(|t| format!("\"{t}\""))
                .collect::<Vec<_>>()
                .join(", "),
            ds.join(", "),
            if i == 0 {
                "launched_by = \"user:op@x\"\n"
            } else {
                ""
            }
        ));
    }
    text.push_str(CATALOG);
    Manifest::parse(Path::new("gen.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// (unguarded, gated) reachability of every goal by brute force: every sequence of moves up to
/// `depth`, each held call both refused and granted, no state merging.
fn brute(world: &World, depth: usize) -> Vec<(bool, bool)> {
    let mut out = vec![(false, false); world.goals.len()];
    let step = world.manifest.settings.step_ms;
    let lease = world.manifest.settings.approval_lease_ms;
    #[allow(clippy::too_many_arguments)]
    fn go(
        world: &World,
        engine: &Engine,
        progress: &[u8],
        now: i64,
        gated: bool,
        left: usize,
        k: usize,
        step: i64,
        lease: Option<i64>,
        out: &mut Vec<(bool, bool)>,
    ) {
        if left == 0 {
            return;
        }
        for &mv in &world.moves {
            let e = engine.fork();
            let call = world.call(mv, now, format!("c{k}"));
            let d = e.queue(&call).wait();
            let mut branches: Vec<(Engine, bool, bool)> = Vec::new();
            match d.decision {
                Verdict::Allow => branches.push((e, true, gated)),
                Verdict::Deny => branches.push((e, false, gated)),
                Verdict::RequireApproval => {
                    let g = e.fork();
                    let lease = lease.map(truststack_policy::duration::format_duration);
                    if let Some((_, o)) = world.grant(&g, &d.approval_id, lease, now) {
                        branches.push((g, o.decision == Verdict::Allow, true));
                    }
                    branches.push((e, false, gated));
                }
            }
            for (e, admitted, gated) in branches {
                let mut p = progress.to_vec();
                let mut done = Vec::new();
                if admitted {
                    world.advance(&mut p, mv, &mut done);
                }
                for g in done {
                    if gated {
                        out[g].1 = true;
                    } else {
                        out[g].0 = true;
                    }
                }
                go(
                    world,
                    &e,
                    &p,
                    now + step,
                    gated,
                    left - 1,
                    k + 1,
                    step,
                    lease,
                    out,
                );
            }
        }
    }
    let start = world.manifest.settings.start_ms;
    go(
        world,
        &world.base.fork(),
        &vec![0; world.progress_len],
        start,
        false,
        depth,
        1,
        step,
        lease,
        &mut out,
    );
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn trajectories_replay_through_policy_eval_with_the_reported_decisions(s in spec()) {
        let world = World::build(manifest(&s, true, 8)).unwrap();
        let a = analyse(&world, &Options { toxic: false, ..Options::default() });
        for (g, goal) in a.goals.iter().enumerate() {
            let Some(t) = &goal.trajectory else {
                prop_assert!(matches!(goal.status, Status::Unreachable | Status::Unknown));
                continue;
            };
            prop_assert!(t.replay_consistent, "{}", goal.id);
            prop_assert_eq!(goal.status == Status::Gated, t.steps.iter().any(|s| s.approval.is_some()));
            // Replay exactly as `truststack policy eval` does.
            let events = parse_trace("trajectory.jsonl", &t.jsonl()).unwrap();
            let engine = Engine::new((*world.base.bundle()).clone(), world.eval_settings());
            let mut k = 0usize;
            let mut progress = vec![0u8; world.progress_len];
            let mut done = Vec::new();
            let mut admitted_moves = Vec::new();
            for step in replay(&engine, &events) {
                match step {
                    Processed::Decision(d) => {
                        let reported = &t.steps[k];
                        prop_assert_eq!(d.decision, reported.decision);
                        let ids: Vec<String> = d.policies.iter().map(|p| p.id.clone()).collect();
                        prop_assert_eq!(&ids, &reported.policies);
                        if d.decision == Verdict::Allow {
                            admitted_moves.push(k);
                        }
                        k += 1;
                    }
                    Processed::Approval(r) => {
                        let o = r.unwrap();
                        prop_assert_eq!(o.result, ApprovalResult::Granted);
                        prop_assert!(t.steps[k - 1].approval.is_some());
                        admitted_moves.push(k - 1);
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(k, t.steps.len());
            // The admitted calls reach the goal.
            for i in admitted_moves {
                let s = &t.steps[i];
                let actor = world.actors.iter().position(|x| x.label == s.actor).unwrap();
                let tool = world.tools.iter().position(|x| x.name == s.tool).unwrap();
                // The generated manifests declare no argument variants: variant 0 is `{}`.
                world.advance(&mut progress, Move { actor, tool, variant: 0 }, &mut done);
            }
            prop_assert!(done.contains(&g), "{} not reached by its trajectory", goal.id);
        }
    }

    #[test]
    fn pruning_finds_exactly_what_brute_force_finds(s in spec()) {
        let depth = 4;
        let world = World::build(manifest(&s, false, depth)).unwrap();
        prop_assume!(world.moves.len() <= 7);
        let a = analyse(&world, &Options { toxic: false, ..Options::default() });
        let truth = brute(&world, depth);
        for (g, goal) in a.goals.iter().enumerate() {
            let expected = match truth[g] {
                (true, _) => Status::Unguarded,
                (false, true) => Status::Gated,
                (false, false) if a.exploration.exhaustive => Status::Unreachable,
                // At the depth bound the search may also settle a goal no remaining state can
                // complete (checked against deeper plain searches in reduction_prop.rs).
                (false, false) if goal.status == Status::Unreachable => Status::Unreachable,
                (false, false) => Status::Unknown,
            };
            prop_assert_eq!(goal.status, expected, "goal {}", goal.id);
        }
    }
}
