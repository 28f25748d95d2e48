#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The provenance session of the `decide` bench as a plain program, for instruction counts:
//! index `RESULTS` observed results, then decide `DECISIONS` calls. See `docs/benchmarks.md`.
//!
//! ```text
//! cargo bench -p truststack-engine --bench provenance_count --no-run
//! valgrind --tool=callgrind target/release/deps/provenance_count-<hash> 100 5000
//! ```
//!
//! The calls are built before the first decision, so the decisions' instructions are those of
//! `Engine::queue` and the indexing's those of `Engine::observe`.

mod common;

use common::{provenance_call, provenance_engine};
use std::hint::black_box;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let results: usize = args.next().map_or(100, |a| a.parse().unwrap());
    let decisions: u64 = args.next().map_or(5000, |a| a.parse().unwrap());
    let (engine, observations) = provenance_engine(results);
    let bytes: usize = observations
        .iter()
        .map(|o| o.result.as_ref().map_or(0, |r| r.to_string().len()))
        .sum();
    for o in &observations {
        engine.observe(o).unwrap();
    }
    let calls: Vec<_> = (0..decisions).map(provenance_call).collect();
    let mut denied = 0;
    for call in &calls {
        let d = black_box(engine.queue(black_box(call)).wait());
        denied += usize::from(d.decision == truststack_engine::Verdict::Deny);
    }
    println!(
        "indexed {results} results ({bytes} bytes), decided {decisions} calls ({denied} denied)"
    );
}
