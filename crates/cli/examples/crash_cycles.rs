//! The reliability harness: `truststack serve` killed with SIGKILL again and again under mixed
//! load (decisions, observations, approvals granted and refused, policy reloads). After every
//! restart it checks that `truststack ledger verify` passes, that every decision the server
//! acknowledged is in the ledger with the same verdict, that no scan limit was exceeded across
//! restarts, and that the server answers again. Not part of CI (one test runs three cycles).
//!
//! ```sh
//! cargo run --release -p truststack --example crash_cycles                  # 1,000 cycles
//! cargo run --release -p truststack --example crash_cycles -- --cycles 3
//! ```

use truststack_testkit::crash_cycles as harness;

use anyhow::{bail, Context};
use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "kill -9 cycles of `truststack serve` under mixed load")]
struct Args {
    /// How many times the server is killed.
    #[arg(long, default_value_t = 1000)]
    cycles: u64,
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
    eprintln!(
        "crash cycles: {} kills of {} (seed {seed}, ledger in {})",
        args.cycles,
        bin.display(),
        dir.display()
    );
    let report = harness::run(&harness::Options {
        cycles: args.cycles,
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
    Ok(ExitCode::FAILURE)
}
