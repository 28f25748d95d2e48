//! One `prove` (or `prove --fix`) of a generated manifest, timed, for measuring time and memory
//! with `/usr/bin/time -v` (criterion cannot report a process's peak memory):
//!
//! `cargo run --release -p truststack-sim --example scale -- TOOLS AGENTS [windows] [identity] [depth=N] [fix] [states]`
//!
//! `states` (with `fix`): afterwards, untimed, how the reduced search `--fix` runs explores
//! each fixed manifest (the fix's and every alternative's).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use truststack_sim::analysis::goal_search;
use truststack_sim::explore::explore;
use truststack_sim::synth::{generate, Shape};
use truststack_sim::{prove_world, Manifest, ProveOptions, Status, World};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let shape = Shape {
        tools: num(0, 30),
        agents: num(1, 6),
        seed: 7,
        windows: args.iter().any(|a| a == "windows"),
        max_depth: args
            .iter()
            .find_map(|a| a.strip_prefix("depth=").and_then(|d| d.parse().ok())),
        per_identity: args.iter().any(|a| a == "identity"),
    };
    let fix = args.iter().any(|a| a == "fix");
    let states = args.iter().any(|a| a == "states");
    let text = generate(&shape);
    let world = World::build(Manifest::parse(Path::new("synthetic.toml"), &text).unwrap()).unwrap();
    let started = std::time::Instant::now();
    let a = prove_world(
        &world,
        &ProveOptions {
            runs: Some(0),
            fix,
            ..Default::default()
        },
    )
    .unwrap();
    let count = |s| a.goals.iter().filter(|g| g.status == s).count();
    println!(
        "{shape:?} fix={fix}: {:.2} s; states {}, depth {}, exhaustive {}, decided {}; unguarded {} gated {} unreachable {} unknown {}{}",
        started.elapsed().as_secs_f64(),
        a.exploration.states,
        a.exploration.depth,
        a.exploration.exhaustive,
        a.exploration.decided,
        count(Status::Unguarded),
        count(Status::Gated),
        count(Status::Unreachable),
        count(Status::Unknown),
        a.fix
            .as_ref()
            .map(|f| format!(
                "; fix safe {} (alternatives: {})",
                f.safe,
                f.alternatives
                    .iter()
                    .map(|x| format!("{} {}", x.id, x.safe))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .unwrap_or_default()
    );
    let Some(f) = a.fix.as_ref().filter(|_| states) else {
        return;
    };
    let fixed = std::iter::once(("fix", &f.manifest_text)).chain(
        f.alternatives
            .iter()
            .map(|x| (x.id.as_str(), &x.manifest_text)),
    );
    for (id, text) in fixed {
        let w = World::build(Manifest::parse(Path::new("fixed.toml"), text).unwrap()).unwrap();

        let mut search = goal_search(&w);
        search.reduce = Some(0);
        let e = explore(&w, &search);
        println!(
            "  {id}: states {}, depth {}, exhaustive {}, decided {}, bound {:?}",
            e.states, e.depth, e.exhaustive, e.decided, e.bound
        );
    }
}
