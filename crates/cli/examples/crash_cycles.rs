//! The reliability harness: `truststack serve` killed with SIGKILL again and again under mixed
//! load (decisions, observations, approvals granted and refused, policy reloads). After every
//! restart it checks that `truststack ledger verify` passes, that every decision the server
//! acknowledged is in the ledger with the same verdict, that no scan limit was exceeded across
//! restarts, and that the server answers again. With `--replicas N`, N servers share one
//! PostgreSQL database: each cycle kills one and restarts it while the others answer, and no
//! request to those others may fail. Not part of CI: tests run it for three cycles, and for
//! fifty on three replicas.
//!
//! ```sh
//! cargo run --release -p truststack --example crash_cycles                  # 1,000 cycles
//! cargo run --release -p truststack --example crash_cycles -- --cycles 3
//! cargo run --release -p truststack --example crash_cycles -- --replicas 3  # on PostgreSQL
//! ```

use truststack_testkit::crash_cycles as harness;
use truststack_testkit::postgres::TestDatabase;

use anyhow::{bail, Context};
use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "kill -9 cycles of `truststack serve` under mixed load")]
struct Args {
    /// How many times a server is killed.
    #[arg(long, default_value_t = 1000)]
    cycles: u64,
    /// How many servers share the ledger, a PostgreSQL database when more than one; each
    /// cycle kills the next.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// The ledger's PostgreSQL database, empty (default with --replicas above 1: a new
    /// database on the tests' server, see `truststack_testkit::postgres`, dropped when the
    /// run passes).
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// The `truststack` binary (default: built by cargo beside this example).
    #[arg(long, env = "TRUSTSTACK_BIN")]
    bin: Option<PathBuf>,
    /// Where to keep the config and the ledger (default: a temporary directory, removed when
    /// the run passes).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seeds the load and the moments of the kills (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Shortest load before a kill, in milliseconds.
    #[arg(long, default_value_t = 100)]
    min_load_ms: u64,
    /// Longest load before a kill, in milliseconds.
    #[arg(long, default_value_t = 800)]
    max_load_ms: u64,
    /// Start no new cycle after this many minutes (the report says how many ran).
    #[arg(long)]
    minutes: Option<u64>,
}

/// The `truststack` binary of the same profile, rebuilt by cargo when this runs under `cargo
/// run` (so the harness never kills a stale build).
fn default_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|examples| examples.parent())
        .context("cannot locate the target directory from this example's path")?;
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = std::process::Command::new(cargo);
        build.args([
            "build",
            "--locked",
            "-p",
            "truststack",
            "--bin",
            "truststack",
        ]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        if !build.status()?.success() {
            bail!("building the truststack binary failed");
        }
    }
    let bin = profile_dir.join("truststack");
    if !bin.exists() {
        bail!(
            "{}: not built; run `cargo build --release -p truststack` or pass --bin",
            bin.display()
        );
    }
    Ok(bin)
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.min_load_ms > args.max_load_ms {
        bail!(
            "--min-load-ms {} is above --max-load-ms {}",
            args.min_load_ms,
            args.max_load_ms
        );
    }
    let bin = match args.bin {
        Some(bin) => bin,
        None => default_bin()?,
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    });
    let temp = tempfile::tempdir()?;
    let dir = args.dir.unwrap_or_else(|| temp.path().join("run"));
    let made: Option<TestDatabase> =
        (args.replicas > 1 && args.database.is_none()).then(truststack_testkit::postgres::database);
    let database = args
        .database
        .or_else(|| made.as_ref().map(|db| db.url().to_string()));
    let ledger = match &database {
        Some(url) => truststack_ledger::LedgerLocation::parse(url)?.to_string(),
        None => dir.join("ledger.db").display().to_string(),
    };
    eprintln!(
        "crash cycles: {} kills of {} (seed {seed}, {} server(s), ledger {ledger}, files in {})",
        args.cycles,
        bin.display(),
        args.replicas,
        dir.display()
    );
    let report = harness::run(&harness::Options {
        cycles: args.cycles,
        replicas: args.replicas,
        database,
        bin,
        dir: dir.clone(),
        seed,
        load_ms: (args.min_load_ms, args.max_load_ms),
        budget: args.minutes.map(|m| std::time::Duration::from_secs(m * 60)),
        progress: std::io::stderr().is_terminal(),
        log_every: 25,
    })?;
    print!("{report}");
    if report.passed() {
        return Ok(ExitCode::SUCCESS);
    }
    // Keep the evidence: the ledger the failure is about.
    let _kept = temp.keep();
    eprintln!("the run's files are kept in {}", dir.display());
    if let Some(db) = made {
        eprintln!(
            "its ledger stays in the database {} of the tests' PostgreSQL server, unless that \
             was a throwaway cluster (pass --database to choose where)",
            db.name()
        );
        std::mem::forget(db);
    }
    Ok(ExitCode::FAILURE)
}
