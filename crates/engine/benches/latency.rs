#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Per-call latency of `Engine::queue(…).wait()`: p50 / p99 / p99.9 per scenario, and the memory of the
//! agent's scope state. A plain `main`, not criterion. See `docs/benchmarks.md`.
//!
//! ```text
//! cargo bench -p truststack-engine --bench latency
//! ```
//!
//! Each call is built first (untimed), then `decide` is timed alone with `Instant` (the
//! decision is dropped after the clock stops); the 200 000 samples of a scenario go into a
//! vector that is sorted for the percentiles. 20 000 untimed calls warm each engine first.

mod common;

use common::{
    build_history, hundred_engine, memory_report, seed_engine, CedarBaseline, Mix, Stream,
};
use std::hint::black_box;
use std::time::Instant;
use truststack_engine::{Engine, Settings};

const CALLS: usize = 200_000;
const WARMUP: usize = 20_000;

struct Stats {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

impl Stats {
    fn of(mut ns: Vec<u64>) -> Stats {
        ns.sort_unstable();
        let at = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)];
        Stats {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: *ns.last().unwrap(),
            mean: ns.iter().sum::<u64>() as f64 / ns.len() as f64,
        }
    }
}

fn us(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1000.0)
}

fn print_row(name: &str, s: &Stats, memory: &str) {
    println!(
        "{name:<22} {:>9} {:>9} {:>9} {:>9} {:>9}  {memory}",
        us(s.p50),
        us(s.p99),
        us(s.p999),
        us(s.max),
        format!("{:.2}", s.mean / 1000.0),
    );
}

fn engine_latency(engine: &Engine, stream: &mut Stream) -> Stats {
    for _ in 0..WARMUP {
        black_box(engine.queue(&stream.next_call()).wait());
    }
    let mut ns = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let call = stream.next_call();
        let start = Instant::now();
        let decision = engine.queue(black_box(&call)).wait();
        let elapsed = start.elapsed();
        black_box(decision);
        ns.push(elapsed.as_nanos() as u64);
    }
    Stats::of(ns)
}

fn scenario(name: &str, engine: &Engine, mut stream: Stream) -> Stats {
    let stats = engine_latency(engine, &mut stream);
    print_row(name, &stats, &memory_report(engine));
    stats
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to configure.
    println!("{CALLS} timed calls per scenario (after {WARMUP} untimed), one agent; times in µs\n");
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9}  scope memory (monitor state of the agent's scopes)",
        "scenario", "p50", "p99", "p99.9", "max", "mean"
    );

    let seed = scenario(
        "seed",
        &seed_engine(Settings::replay()),
        Stream::new(Mix::Seed),
    );
    scenario(
        "seed_system_clock",
        &seed_engine(Settings::default()),
        Stream::new(Mix::Seed),
    );

    let mut history = Vec::new();
    for (name, n) in [("seed_after_1e3", 1_000u64), ("seed_after_1e6", 1_000_000)] {
        let engine = seed_engine(Settings::replay());
        let mut stream = Stream::new(Mix::Seed);
        build_history(&engine, &mut stream, n);
        history.push(scenario(name, &engine, stream));
    }

    let hundred = scenario(
        "hundred",
        &hundred_engine(Settings::replay()),
        Stream::new(Mix::Hundred),
    );

    // Cedar on the same calls, requests built beforehand (untimed).
    let cedar = CedarBaseline::new();
    let mut stream = Stream::new(Mix::Hundred);
    let requests: Vec<_> = (0..CALLS)
        .map(|_| cedar.request(&stream.next_call()))
        .collect();
    for r in requests.iter().take(WARMUP) {
        black_box(cedar.is_allowed(r));
    }
    let mut ns = Vec::with_capacity(CALLS);
    for r in &requests {
        let start = Instant::now();
        let allowed = cedar.is_allowed(black_box(r));
        ns.push(start.elapsed().as_nanos() as u64);
        black_box(allowed);
    }
    let cedar_stats = Stats::of(ns);
    print_row("cedar_hundred", &cedar_stats, "(stateless)");

    println!("\n== against targets and baselines (this run) ==");
    let ok = |b: bool| if b { "met" } else { "MISSED" };
    println!(
        "seed p50 {} µs (target <= 2: {}), p99 {} µs (target <= 10: {})",
        us(seed.p50),
        ok(seed.p50 <= 2_000),
        us(seed.p99),
        ok(seed.p99 <= 10_000)
    );
    if let [h3, h6] = &history[..] {
        println!(
            "history 10^6 / 10^3: p50 {:.3}, p99 {:.3}, mean {:.3} (target <= 1.2)",
            h6.p50 as f64 / h3.p50 as f64,
            h6.p99 as f64 / h3.p99 as f64,
            h6.mean / h3.mean
        );
    }
    println!(
        "cedar / ours at 100 policies: p50 {:.2}, p99 {:.2}, mean {:.2}",
        cedar_stats.p50 as f64 / hundred.p50 as f64,
        cedar_stats.p99 as f64 / hundred.p99 as f64,
        cedar_stats.mean / hundred.mean
    );
}
