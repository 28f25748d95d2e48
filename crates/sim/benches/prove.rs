//! Proving-ground benchmarks: exhaustive analysis of the GTG-1002 manifests (target < 1 s each),
//! of a generated 20-tool, 5-agent manifest, and Monte Carlo throughput in simulated engine
//! decisions per second.
//!
//! Remediation at scale: `prove` and `prove --fix` (no Monte Carlo) of generated manifests —
//! 30 tools × 6 agents and 50 × 8 with and without time windows, 30 × 6 with goals per agent
//! identity — in the same run, so the fix is read as a ratio to plain `prove`. Peak memory needs
//! a process of its own: the `scale` example under `/usr/bin/time -v` (docs/benchmarks.md).
//!
//! `cargo bench -p truststack-sim --bench prove`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::Path;
use std::time::Duration;
use truststack_sim::explore::{explore, Search};
use truststack_sim::montecarlo::{monte_carlo, McOptions};
use truststack_sim::synth::{generate, Shape};
use truststack_sim::{analyse, prove_world, synth, Manifest, Options, ProveOptions, World};

use truststack_testkit::examples::gtg1002 as example;

fn world(name: &str) -> Option<World> {
    World::build(Manifest::load(&example(name)).ok()?).ok()
}

fn synthetic() -> Option<World> {
    World::build(Manifest::parse(Path::new("synthetic.toml"), &synth::manifest(20, 5, 7)).ok()?)
        .ok()
}

fn exhaustive(c: &mut Criterion) {
    let mut g = c.benchmark_group("exhaustive");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    for name in [
        "manifest-naive.toml",
        "manifest-split.toml",
        "manifest-fixed.toml",
    ] {
        let Some(w) = world(name) else { continue };
        // Everything `prove` does except Monte Carlo: exploration, evidence (replayed),
        // toxic combinations, time-to-goal.
        g.bench_function(format!("analyse/{name}"), |b| {
            b.iter(|| analyse(&w, &Options::default()))
        });
        // The exploration alone, to a fixpoint (no early stop).
        g.bench_function(format!("explore/{name}"), |b| {
            b.iter(|| explore(&w, &Search::full(&w)))
        });
    }
    if let Some(w) = synthetic() {
        g.sample_size(10);
        g.bench_function("analyse/synthetic-20-tools-5-agents", |b| {
            b.iter(|| analyse(&w, &Options::default()))
        });
        g.bench_function("explore/synthetic-20-tools-5-agents", |b| {
            b.iter(|| explore(&w, &Search::full(&w)))
        });
    }
    g.finish();
}

fn montecarlo(c: &mut Criterion) {
    let mut g = c.benchmark_group("montecarlo");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (label, w) in [
        ("naive", world("manifest-naive.toml")),
        ("fixed", world("manifest-fixed.toml")),
        ("synthetic", synthetic()),
    ] {
        let Some(w) = w else { continue };
        let opts = McOptions {
            runs: 4000,
            max_steps: 60,
            seed: 1,
            grant_probability: 0.1,
            threads,
        };
        let decisions = monte_carlo(&w, &opts, &|_| {}).decisions;
        g.throughput(Throughput::Elements(decisions));
        g.bench_function(format!("{label}/{threads}-threads"), |b| {
            b.iter(|| monte_carlo(&w, &opts, &|_| {}))
        });
    }
    g.finish();
}

fn remediation(c: &mut Criterion) {
    let mut g = c.benchmark_group("fix");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for (tools, agents, windows, per_identity) in [
        (30, 6, false, false),
        (30, 6, true, false),
        (50, 8, false, false),
        (50, 8, true, false),
        (30, 6, false, true),
    ] {
        let shape = Shape {
            tools,
            agents,
            seed: 7,
            windows,
            max_depth: None,
            per_identity,
        };
        let Ok(m) = Manifest::parse(Path::new("synthetic.toml"), &generate(&shape)) else {
            continue;
        };
        let Ok(w) = World::build(m) else { continue };
        let label = format!(
            "{tools}x{agents}{}{}",
            if windows { "-windows" } else { "" },
            if per_identity { "-identity" } else { "" }
        );
        for fix in [false, true] {
            let opts = ProveOptions {
                runs: Some(0),
                fix,
                ..Default::default()
            };
            g.bench_function(
                format!("{label}/{}", if fix { "prove-fix" } else { "prove" }),
                |b| b.iter(|| prove_world(&w, &opts)),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, exhaustive, montecarlo, remediation);
criterion_main!(benches);
