//! The search's reductions (forgotten goal progress, goals settled at the depth bound,
//! per-monitor windows, interchangeable tools explored once) against the plain search, on
//! generated manifests: the same goals are reached unguarded, with shortest witnesses of the same
//! length, the same goals only through a gate; a goal the reduced search settles as unreachable
//! at the depth bound is not reached by the plain search either, even given more depth.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use std::path::Path;
use truststack_sim::explore::{explore, Explored, Search};
use truststack_sim::synth::{generate, Shape};
use truststack_sim::{Manifest, World};

fn world(shape: &Shape) -> World {
    let text = generate(shape);
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

fn check(shape: &Shape) -> Result<(), TestCaseError> {
    let world = world(shape);
    let depth = world.manifest.settings.max_depth;
    let reduced = run(&world, true, depth);
    let plain = run(&world, false, depth);
    prop_assert!(
        reduced.bound_kind.is_none()
            || reduced
                .bound
                .as_deref()
                .is_some_and(|b| b.starts_with("depth"))
    );
    prop_assert!(
        !plain.exhaustive || reduced.exhaustive,
        "the reduced search reaches its fixpoint no later"
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
            // Settled at the depth bound: the plain search, given more depth, agrees.
            let d = deeper.get_or_insert_with(|| run(&world, false, depth + 2));
            prop_assert!(
                d.witnesses[g].unguarded.is_none() && d.witnesses[g].gated.is_none(),
                "goal {} settled unreachable at depth {depth}, reached at depth {}",
                goal.id,
                depth + 2
            );
        }
    }
    Ok(())
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn reduced_and_plain_searches_agree(s in shape()) {
        check(&s)?;
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
        check(&shape).unwrap_or_else(|e| panic!("{shape:?}: {e}"));
        let w = world(&shape);
        let all = w.moves.len();
        assert!(
            w.representatives(&w.moves).len() < all,
            "{shape:?}: no interchangeable tools"
        );
    }
}
