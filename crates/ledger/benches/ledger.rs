//! Ledger benchmarks: durable appends (group commit vs. one fsync per record, from threads that
//! block on `append` and from async tasks that await `submit`, beside the SQLite store alone
//! committing ideal batches: the ceiling of this disk), full verification, proof generation and
//! verification, and canonicalization against the reference crate.
//!
//! Run: `cargo bench -p truststack-ledger -- --warm-up-time 1 --measurement-time 3`.
//! The verification and proof fixtures (`LEDGER_BENCH_ENTRIES`, default 1,000,000 entries) are
//! built once per run in a temporary directory. The allocator is mimalloc, as in the
//! `truststack` binary that runs the ledger.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::Rng;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use truststack_ledger::canonical::{canonicalize, check_canonical};
use truststack_ledger::merkle::{leaf_hash, verify_inclusion, Frontier};
use truststack_ledger::sqlite::SqliteStore;
use truststack_ledger::store::{LedgerStore, StoredEntry};
use truststack_ledger::{verify_file, Ledger, LedgerConfig};

/// A decision record of the size the engine writes (about 400 bytes).
fn record(i: u64) -> Value {
    json!({
        "kind": "decision",
        "call": {"id": format!("c-{i}"), "agent": "spiffe://acme.example/agent/recon",
                 "session": "s-42", "tool": "nmap_scan", "time": "2026-11-13T09:00:00.250Z",
                 "chain": ["user:alice@acme.example", "spiffe://acme.example/agent/orchestrator"],
                 "args": {"target": "10.0.3.0/24", "ports": [22, 80, 443]}},
        "decision": {"decision": "allow", "decision_id": format!("d-{i:016x}"),
                     "call_id": format!("c-{i}"), "policies": [], "reason": "no policy applies",
                     "policy_hash": "sha256:9f86d081884c7d659a2feb1b",
                     "time": "2026-11-13T09:00:00.251Z"}
    })
}

fn fresh_ledger(dir: &tempfile::TempDir) -> Ledger {
    let config = LedgerConfig {
        checkpoint_every: 10_000,
        ..LedgerConfig::new(dir.path().join("log.key"))
    };
    Ledger::open(&dir.path().join("ledger.db"), &config).unwrap()
}

/// Appends `total` records from up to `threads` threads, each calling `append` (one record at
/// a time) or `append_batch` of `batch` records; returns the elapsed time.
fn concurrent_appends(ledger: &Arc<Ledger>, threads: u64, total: u64, batch: u64) -> Duration {
    let threads = threads.min(total).max(1);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let ledger = Arc::clone(ledger);
            let mine = total / threads + u64::from(t < total % threads);
            s.spawn(move || {
                let mut i = 0;
                while i < mine {
                    let n = batch.min(mine - i);
                    if n == 1 {
                        ledger.append(&record(t << 32 | i)).unwrap();
                    } else {
                        let rs: Vec<Value> = (i..i + n).map(|k| record(t << 32 | k)).collect();
                        ledger.append_batch(&rs).unwrap();
                    }
                    i += n;
                }
            });
        }
    });
    started.elapsed()
}

/// Appends `total` records from `tasks` async appenders on a two-worker runtime, each
/// awaiting its record's durability ([`Ledger::submit`]) before it submits the next one.
fn async_appends(
    runtime: &tokio::runtime::Runtime,
    ledger: &Arc<Ledger>,
    tasks: u64,
    total: u64,
) -> Duration {
    let tasks = tasks.min(total).max(1);
    let started = Instant::now();
    runtime.block_on(async {
        let mut handles = Vec::new();
        for t in 0..tasks {
            let ledger = Arc::clone(ledger);
            let mine = total / tasks + u64::from(t < total % tasks);
            handles.push(tokio::spawn(async move {
                for i in 0..mine {
                    ledger.submit(&record(t << 32 | i)).unwrap().await.unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
    });
    started.elapsed()
}

/// Commits `total` entries to `store` in batches of `batch`, with their Merkle nodes; returns the
/// time spent in the store.
fn store_appends(
    store: &mut SqliteStore,
    frontier: &mut Frontier,
    total: u64,
    batch: u64,
) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut done = 0;
    while done < total {
        let n = batch.min(total - done);
        let entries: Vec<StoredEntry> = (0..n)
            .map(|_| {
                let index = frontier.size();
                let data = canonicalize(&record(index)).unwrap();
                let leaf = leaf_hash(&data);
                let mut nodes = Vec::new();
                frontier.push(leaf, &mut nodes);
                StoredEntry {
                    index,
                    data,
                    leaf,
                    time_us: 0,
                    nodes,
                }
            })
            .collect();
        let started = Instant::now();
        store.append(&entries, None).unwrap();
        elapsed += started.elapsed();
        done += n;
    }
    elapsed
}

fn appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_append");
    g.throughput(Throughput::Elements(1));
    for (name, threads, batch) in [
        ("one_fsync_per_record_1_thread", 1, 1),
        ("group_commit_8_threads", 8, 1),
        ("group_commit_64_threads", 64, 1),
        ("group_commit_256_threads", 256, 1),
        ("group_commit_8_threads_batches_of_64", 8, 64),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(fresh_ledger(&dir));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| concurrent_appends(&ledger, threads, iters, batch));
        });
    }
    // The ceiling this disk puts on any appender: the SQLite store alone committing batches of
    // 1024 prepared entries from one thread (records are canonicalized and hashed outside the
    // timed part; no queue, no replies).
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("ledger.db")).unwrap();
    let mut frontier = Frontier::new();
    g.bench_function("store_alone_batches_of_1024", |b| {
        b.iter_custom(|iters| store_appends(&mut store, &mut frontier, iters, 1024));
    });
    drop(store);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    for tasks in [64, 1024] {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(fresh_ledger(&dir));
        g.bench_function(format!("group_commit_{tasks}_async_appenders"), |b| {
            b.iter_custom(|iters| async_appends(&runtime, &ledger, tasks, iters));
        });
    }
    g.finish();
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    entries: u64,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let entries: u64 = std::env::var("LEDGER_BENCH_ENTRIES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.db");
        let started = Instant::now();
        {
            let ledger = fresh_ledger(&dir);
            let mut i = 0;
            while i < entries {
                let n = 16_384.min(entries - i);
                let rs: Vec<Value> = (i..i + n).map(record).collect();
                ledger.append_batch(&rs).unwrap();
                i += n;
            }
            ledger.checkpoint().unwrap();
        }
        eprintln!(
            "fixture: {entries} entries written in {:.1?} ({} MB)",
            started.elapsed(),
            std::fs::metadata(&db).map(|m| m.len() >> 20).unwrap_or(0)
        );
        Fixture {
            _dir: dir,
            db,
            entries,
        }
    })
}

fn verification(c: &mut Criterion) {
    let f = fixture();
    let mut g = c.benchmark_group("verify");
    g.sample_size(10);
    g.throughput(Throughput::Elements(f.entries));
    g.bench_function(format!("whole_ledger_{}_entries", f.entries), |b| {
        b.iter(|| {
            let report = verify_file(&f.db, None).unwrap();
            assert_eq!(report.entries, f.entries);
        });
    });
    g.finish();
}

fn proofs(c: &mut Criterion) {
    let f = fixture();
    let ledger = Ledger::open_read_only(&f.db).unwrap();
    let size = ledger.len();
    let root = ledger.root();
    let mut g = c.benchmark_group("proof");
    let mut rng = rand::thread_rng();
    g.bench_function(format!("inclusion_generate_{size}"), |b| {
        b.iter_batched(
            || rng.gen_range(0..size),
            |i| ledger.inclusion_proof(i, size).unwrap(),
            BatchSize::SmallInput,
        );
    });
    let samples: Vec<_> = (0..1024)
        .map(|_| {
            let i = rng.gen_range(0..size);
            (
                ledger.entry(i).unwrap().leaf,
                ledger.inclusion_proof(i, size).unwrap(),
            )
        })
        .collect();
    let mut k = 0;
    g.bench_function(format!("inclusion_verify_{size}"), |b| {
        b.iter(|| {
            let (leaf, proof) = &samples[k % samples.len()];
            k += 1;
            verify_inclusion(proof.leaf_index, size, leaf, &proof.path, &root).unwrap();
        });
    });
    g.bench_function(format!("consistency_generate_{size}"), |b| {
        b.iter_batched(
            || rng.gen_range(1..size),
            |old| ledger.consistency_proof(old, size).unwrap(),
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

/// RFC 8785 canonicalization of the decision record, against `serde_json_canonicalizer` on the
/// same value (the reference, and what `canonicalize` falls back to), and the canonical-form
/// check a verifier runs on every entry.
fn canonicalization(c: &mut Criterion) {
    let value = record(7);
    let bytes = canonicalize(&value).unwrap();
    let mut g = c.benchmark_group("canonical");
    g.bench_function("canonicalize_decision_record", |b| {
        b.iter(|| canonicalize(std::hint::black_box(&value)).unwrap());
    });
    g.bench_function("reference_serde_json_canonicalizer", |b| {
        b.iter(|| serde_json_canonicalizer::to_vec(std::hint::black_box(&value)).unwrap());
    });
    g.bench_function("check_canonical_decision_record", |b| {
        b.iter(|| check_canonical(std::hint::black_box(&bytes)).unwrap());
    });
    g.finish();
}

criterion_group!(benches, appends, verification, proofs, canonicalization);
criterion_main!(benches);
