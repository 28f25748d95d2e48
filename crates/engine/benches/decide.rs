#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Throughput of `Engine::queue(…).wait()` (criterion), and Cedar on the stateless part of the same
//! 100 policies, in one run. See `docs/benchmarks.md`.
//!
//! ```text
//! cargo bench -p truststack-engine --bench decide -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Every engine bench decides fresh calls (one agent, increasing times) built outside the
//! timed loop in chunks of 4096; the decisions are dropped inside it. After the criterion run
//! the ratios between benches of this run are printed.

mod common;

use common::{
    build_history, check_cedar_agrees, hundred_engine, memory_report, provenance_call,
    provenance_engine, seed_engine, CedarBaseline, Mix, Stream,
};
use criterion::{Criterion, Throughput};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};
use truststack_engine::event::{format_time, parse_time};
use truststack_engine::{engine::system_now, Engine, Settings};

const CHUNK: usize = 4096;

/// Times `iters` decisions of the stream's next calls; building the calls is not timed.
fn time_decides(engine: &Engine, stream: &mut Stream, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        let calls = stream.take(n);
        let start = Instant::now();
        for call in &calls {
            black_box(engine.queue(black_box(call)).wait());
        }
        total += start.elapsed();
        left -= n as u64;
    }
    total
}

fn bench_engine(c: &mut Criterion, name: &str, engine: &Engine, mut stream: Stream) {
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| time_decides(engine, &mut stream, iters))
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    // The seed set on the event clock: every call of the stream is admitted.
    let seed = seed_engine(Settings::replay());
    bench_engine(c, "seed", &seed, Stream::new(Mix::Seed));
    println!("seed: scope memory {}", memory_report(&seed));
    drop(seed);

    // The same stream on the system clock (the enforcement setting: the call's `time` is
    // ignored). At a million calls a second the scan limit (100/5min) fills at once, so from
    // then on the scans (2 calls in 8) are denied, with their explanation.
    let seed_sys = seed_engine(Settings::default());
    bench_engine(c, "seed_system_clock", &seed_sys, Stream::new(Mix::Seed));
    drop(seed_sys);

    // History independence: the same seed stream after 10^3 and 10^6 admitted calls of the
    // same agent (one trajectory of 10^6 s; every call checked admitted).
    for (name, n) in [("seed_after_1e3", 1_000u64), ("seed_after_1e6", 1_000_000)] {
        let engine = seed_engine(Settings::replay());
        let mut stream = Stream::new(Mix::Seed);
        let start = Instant::now();
        build_history(&engine, &mut stream, n);
        println!(
            "{name}: history of {n} admitted calls built in {:.2?}",
            start.elapsed()
        );
        bench_engine(c, name, &engine, stream);
        println!("{name}: scope memory {}", memory_report(&engine));
    }

    // 100 per-tool policies + 4 trajectory policies, event clock.
    let cedar = CedarBaseline::new();
    let (allowed, denied) = check_cedar_agrees(&cedar, 20_000);
    println!("hundred: engine and Cedar agree on 20000 calls ({allowed} allowed, {denied} denied)");
    let hundred = hundred_engine(Settings::replay());
    bench_engine(c, "hundred", &hundred, Stream::new(Mix::Hundred));
    println!("hundred: scope memory {}", memory_report(&hundred));
    drop(hundred);

    // Cedar on the same calls: requests built beforehand (Cedar's floor), and built per call
    // from the tool name and the pre-classified range.
    let mut stream = Stream::new(Mix::Hundred);
    let calls = stream.take(CHUNK);
    let requests: Vec<_> = calls.iter().map(|call| cedar.request(call)).collect();
    let classified: Vec<(String, String)> = calls
        .iter()
        .map(|call| (call.tool.clone(), cedar.range(call)))
        .collect();
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));
    group.bench_function("cedar_hundred", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % requests.len();
            black_box(cedar.is_allowed(black_box(&requests[i])))
        })
    });
    group.bench_function("cedar_hundred_with_request", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % classified.len();
            let (tool, range) = &classified[i];
            black_box(cedar.is_allowed(&cedar.request_for(black_box(tool), black_box(range))))
        })
    });
    group.finish();

    // What the clocks cost: the event clock parses the call's RFC 3339 time.
    let mut group = c.benchmark_group("clock");
    let text = format_time(common::T0_MS);
    group.bench_function("parse_time", |b| b.iter(|| parse_time(black_box(&text))));
    group.bench_function("system_now", |b| b.iter(system_now));
    group.finish();
}

fn provenance_benches(c: &mut Criterion) {
    let (_, observations) = provenance_engine(1000);
    let bytes: usize = observations
        .iter()
        .map(|o| o.result.as_ref().map_or(0, |r| r.to_string().len()))
        .sum();
    // The results indexed into a fresh session, five times: one pass takes about a tenth of a
    // second, short enough for one pass to show the machine's noise, so the median is reported.
    let mut rates = Vec::new();
    let mut indexed = None;
    for _ in 0..5 {
        let (fresh, _) = provenance_engine(0);
        let start = Instant::now();
        for o in &observations {
            fresh.observe(o).unwrap();
        }
        rates.push(bytes as f64 / 1e6 / start.elapsed().as_secs_f64());
        indexed = Some(fresh);
    }
    let engine = indexed.unwrap();
    rates.sort_by(f64::total_cmp);
    println!(
        "provenance: indexed {} observations ({:.1} MB) into 5 fresh sessions: median {:.1} MB/s, range {:.1}-{:.1} (target >= 100); session index {} bytes (bound {})",
        observations.len(),
        bytes as f64 / 1e6,
        rates[2],
        rates[0],
        rates[4],
        {
            // The session's scope key, qualified by its chain as the engine keys it.
            let chain = ["user:bench".to_string()];
            let p = truststack_engine::event::Principals::of(
                "spiffe://bench/agent/a",
                Some("s"),
                &chain,
            );
            let key = p.scope_key(truststack_policy::Target::Session);
            engine
                .scope_memory(truststack_policy::Target::Session, &key)
                .unwrap_or(0)
        },
        engine.settings().provenance_bound,
    );
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));
    let mut n = 0u64;
    group.bench_function("provenance_1000x10KB", |b| {
        b.iter(|| {
            n += 1;
            black_box(engine.queue(&provenance_call(n)).wait())
        })
    });
    group.finish();
    // Per-call percentiles, building the call outside the timed part: five rounds of 20 000
    // calls, a tenth of a second each, and the median round's p50 and p99 (a moment of the
    // machine's noise moves one round, not the median).
    let mut rounds: Vec<(f64, f64)> = (0..5u64)
        .map(|round| {
            let mut samples: Vec<u128> = (0..20_000u64)
                .map(|i| {
                    let c = provenance_call(1_000_000 + round * 20_000 + i);
                    let t = Instant::now();
                    black_box(engine.queue(&c).wait());
                    t.elapsed().as_nanos()
                })
                .collect();
            samples.sort_unstable();
            let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize] as f64 / 1e3;
            (pct(0.5), pct(0.99))
        })
        .collect();
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (p50, p99) = rounds[2];
    println!(
        "provenance decide: p50 {p50:.2} us (target <= 3), p99 {p99:.2} us (target <= 15); median of 5 rounds of 20000 calls, p50 range {:.2}-{:.2} us",
        rounds[0].0, rounds[4].0
    );
}

/// Criterion's output directory, found as criterion finds it.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // <target>/release/deps/decide-<hash>
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The estimate (ns per decision) criterion wrote for `group/id` in this run, if any.
fn estimate(group: &str, id: &str, since: SystemTime) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(id)
        .join("new/estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let pick = |k: &str| v.get(k)?.get("point_estimate")?.as_f64();
    pick("slope").or_else(|| pick("mean"))
}

fn report_ratios(since: SystemTime) {
    let e = |id: &str| estimate("decide", id, since);
    println!("\n== ratios (this run) ==");
    let line = |label: &str, num: Option<f64>, den: Option<f64>| {
        if let (Some(a), Some(b)) = (num, den) {
            println!("{label}: {:.3} ({a:.1} ns / {b:.1} ns)", a / b);
        }
    };
    line(
        "history 10^6 / 10^3 (target <= 1.2)",
        e("seed_after_1e6"),
        e("seed_after_1e3"),
    );
    line(
        "cedar / ours at 100 policies, prebuilt requests (target >= 10)",
        e("cedar_hundred"),
        e("hundred"),
    );
    line(
        "cedar / ours at 100 policies, request built per call",
        e("cedar_hundred_with_request"),
        e("hundred"),
    );
    line("100 policies / seed", e("hundred"), e("seed"));
    line(
        "provenance 1000x10KB / seed",
        e("provenance_1000x10KB"),
        e("seed"),
    );
    line(
        "seed system clock / event clock",
        e("seed_system_clock"),
        e("seed"),
    );
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    provenance_benches(&mut c);
    c.final_summary();
    report_ratios(since);
}
