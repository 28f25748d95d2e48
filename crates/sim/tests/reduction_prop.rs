//! The search's reductions (forgotten goal progress, liveness that reads the policies, goals
//! settled at the depth bound or once no state can reach them, per-monitor windows,
//! interchangeable tools explored once) against the plain search, on generated manifests with
//! and without policies of the kinds `--fix` adds: the same goals are reached unguarded, with
//! shortest witnesses of the same length, the same goals only through a gate; a goal the reduced
//! search settles as unreachable is not reached by the plain search either, even given more
//! depth.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use std::path::Path;
use truststack_sim::explore::{explore, Explored, Search};
use truststack_sim::synth::{generate, Shape};
use truststack_sim::{Manifest, World};

/// Policies added to the generated ones (bit k of a mask selects the k-th): a deny after a
/// source read and a gate on a last step after an earlier one, as `--fix` writes them, and
/// policies the liveness must not over-read — a taint kept per identity while goals are kept
/// per orchestration, a negated history, a gate on one chain of command only.
const EXTRA: [&str; 5] = [
    "POLICY x-flow-root: ACTION: DENY TARGET: delegation_root IF DataSource('DB_B') == 'read' AND Tool_Call('Egress')",
    "POLICY x-flow-id: ACTION: DENY TARGET: agent_identity IF DataSource('DB_A') AND Tool_Call('Egress')",
    "POLICY x-gate: ACTION: REQUIRE_HITL TARGET: delegation_root IF Tool_Call('Exploit') AND Trajectory_Contains('Analysis')",
    "POLICY x-collect: ACTION: DENY TARGET: agent_identity IF Tool_Call('Collect') AND Trajectory_Contains('Exploit') AND NOT Trajectory_Contains('Creds')",
    "POLICY x-other: ACTION: REQUIRE_HITL TARGET: user IF Tool_Call('Egress') AND Chain_Contains('user:other@synthetic.example')",
];

fn world(shape: &Shape, extra: u8) -> World {
    let mut text = generate(shape);
    let added: String = EXTRA
        .iter()
        .enumerate()
        .filter(|(k, _)| extra & (1 << k) != 0)
        .map(|(_, p)| format!("\n{p}"))
        .collect();
    // The generated policies end their inline text.
    let end = text.find("\n'''").unwrap();
    text.insert_str(end, &added);
    World::build(Manifest::parse(Path::new("synthetic.toml"), &text).unwrap()).unwrap()
}

fn run(world: &World, reduce: bool, max_depth: usize) -> Explored {
    let mut search = Search::full(world);
    // From the start, or never: small manifests would otherwise stay within the plain budget.
    search.reduce = reduce.then_some(0);
    search.max_depth = max_depth;
    search.max_states = 2_000_000;
    explore(world, &search)
}

fn check(shape: &Shape, extra: u8) -> Result<(), TestCaseError> {
    compare(&world(shape, extra)).map(|_| ())
}

/// The reduced and the plain search of `world` agree; returns both.
fn compare(world: &World) -> Result<(Explored, Explored), TestCaseError> {
    let depth = world.manifest.settings.max_depth;
    let reduced = run(world, true, depth);
    let plain = run(world, false, depth);
    prop_assert!(
        reduced.bound_kind.is_none()
            || reduced
                .bound
                .as_deref()
                .is_some_and(|b| b.starts_with("depth"))
    );
    prop_assert!(
        !plain.exhaustive || reduced.exhaustive || reduced.decided,
        "the reduced search reaches its fixpoint, or decides every goal, no later"
    );
    let mut deeper: Option<Explored> = None;
    for (g, goal) in world.goals.iter().enumerate() {
        let (r, p) = (&reduced.witnesses[g], &plain.witnesses[g]);
        prop_assert_eq!(
            r.unguarded.as_ref().map(Vec::len),
            p.unguarded.as_ref().map(Vec::len),
            "goal {} unguarded",
            goal.id
        );
        if p.unguarded.is_none() {
            prop_assert_eq!(
                r.gated.as_ref().map(Vec::len),
                p.gated.as_ref().map(Vec::len),
                "goal {} gated",
                goal.id
            );
        }
        if plain.settled[g] {
            prop_assert!(
                reduced.settled[g],
                "goal {}: settled by the plain search only",
                goal.id
            );
        }
        if reduced.settled[g] && r.unguarded.is_none() && r.gated.is_none() && !plain.exhaustive {
            // Settled at the depth bound or before it: the plain search, given more depth,
            // agrees.
            let d = deeper.get_or_insert_with(|| run(world, false, depth + 2));
            prop_assert!(
                d.witnesses[g].unguarded.is_none() && d.witnesses[g].gated.is_none(),
                "goal {} settled unreachable at depth {depth}, reached at depth {}",
                goal.id,
                depth + 2
            );
        }
    }
    Ok((reduced, plain))
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        10..13usize,
        2..4usize,
        any::<u64>(),
        any::<bool>(),
        3..5usize,
        any::<bool>(),
    )
        .prop_map(
            |(tools, agents, seed, windows, depth, per_identity)| Shape {
                tools,
                agents,
                seed,
                windows,
                max_depth: Some(depth),
                per_identity,
            },
        )
}

fn extra() -> impl Strategy<Value = u8> {
    0..(1u8 << EXTRA.len())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn reduced_and_plain_searches_agree(s in shape(), extra in extra()) {
        check(&s, extra)?;
    }
}

/// Shapes where every reduction applies: tools with equal catalog entries, goals per identity
/// that most identities cannot complete, monitors read with and without windows.
#[test]
fn reductions_apply_and_agree_on_wider_shapes() {
    for (tools, agents, windows, per_identity) in [
        (12, 3, true, true),
        (12, 3, false, true),
        (12, 3, true, false),
    ] {
        let shape = Shape {
            tools,
            agents,
            seed: 7,
            windows,
            max_depth: Some(4),
            per_identity,
        };
        check(&shape, 0).unwrap_or_else(|e| panic!("{shape:?}: {e}"));
        let w = world(&shape, 0);
        let all = w.moves.len();
        assert!(
            w.representatives(&w.moves).len() < all,
            "{shape:?}: no interchangeable tools"
        );
    }
}

/// With the policies `--fix` writes (a deny after the source read, a gate on the last step
/// after the earlier ones), the reduced search decides every goal before its depth bound — it
/// reads in the policies that no state left can reach a goal — and agrees with the plain
/// search, which explores every state to the bound.
#[test]
fn policies_that_stop_every_way_decide_the_search_early() {
    for (windows, per_identity) in [(true, false), (false, false), (true, true), (false, true)] {
        let shape = Shape {
            tools: 12,
            agents: 3,
            seed: 7,
            windows,
            max_depth: Some(5),
            per_identity,
        };
        let (reduced, plain) =
            compare(&world(&shape, 0b111)).unwrap_or_else(|e| panic!("{shape:?}: {e}"));
        assert!(reduced.decided, "{shape:?}: not decided before the bound");
        assert!(
            reduced.states < plain.states,
            "{shape:?}: {} states reduced, {} plain",
            reduced.states,
            plain.states
        );
    }
}
