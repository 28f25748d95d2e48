//! Kill -9 cycles of `truststack serve` under mixed load, checking after every restart that
//! nothing acknowledged was lost. Real processes, real HTTP on loopback, only the public API
//! and the CLI, so the harness holds whatever the server's internals become.

mod audit;
mod load;
mod server;

use anyhow::{bail, Context};
use audit::{LedgerView, Limit};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use load::Api;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use server::Server;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The scan limit every scanner agent races against.
const LIMIT: Limit = Limit {
    calls: 20,
    window_ms: 5_000,
};

/// What to run.
pub struct Options {
    /// How many times the server is killed.
    pub cycles: u64,
    /// The `truststack` binary.
    pub bin: PathBuf,
    /// Where the config, policies and ledger live (created; must not hold a ledger yet).
    pub dir: PathBuf,
    /// Seeds the load's random choices and the moment of each kill.
    pub seed: u64,
    /// How long the load runs before each kill: uniformly in this range, in milliseconds.
    pub load_ms: (u64, u64),
    /// Start no new cycle after this long: the run then reports the cycles it did.
    pub budget: Option<Duration>,
    /// Draw a progress bar on standard error; without one, a summary line every this many
    /// cycles (none when 0).
    pub progress: bool,
    pub log_every: u64,
}

/// The figures of a run, and its failures (the run stops after the first cycle that has any).
#[derive(Default)]
pub struct Report {
    pub cycles: u64,
    pub decisions: u64,
    pub allowed: u64,
    pub denied: u64,
    pub held: u64,
    pub approvals: u64,
    pub observations: u64,
    pub reloads: u64,
    /// What every audit found, added up.
    pub found: audit::Findings,
    pub taint_lost: u64,
    pub ledger_entries: u64,
    pub elapsed: Duration,
    /// Start-up time (spawn to `/readyz` 200) of the first and of the last restart.
    pub first_start: Duration,
    pub last_start: Duration,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.found.failures.is_empty()
    }

    fn add(&mut self, f: audit::Findings) {
        self.found.absorb(f);
    }

    fn count(&mut self, acks: &load::Acks) {
        for d in &acks.decisions {
            self.decisions += 1;
            match d.verdict.as_str() {
                "allow" => self.allowed += 1,
                "deny" => self.denied += 1,
                _ => self.held += 1,
            }
        }
        self.approvals += acks.approvals.len() as u64;
        self.observations += acks.observations.len() as u64;
        self.reloads += acks.reloads.len() as u64;
    }

    fn summary(&self) -> String {
        format!(
            "acked {} · lost {} · mismatched {} · over limit {}",
            self.decisions,
            self.found.lost_decisions,
            self.found.verdict_mismatches,
            self.found.limit_violations
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_cycle = self.elapsed.as_secs_f64() / self.cycles.max(1) as f64;
        writeln!(f, "kill -9 cycles:            {}", self.cycles)?;
        writeln!(
            f,
            "decisions acknowledged:    {} (allow {}, deny {}, require_approval {})",
            self.decisions, self.allowed, self.denied, self.held
        )?;
        writeln!(f, "approval answers:          {}", self.approvals)?;
        writeln!(f, "observations recorded:     {}", self.observations)?;
        writeln!(f, "policy reloads:            {}", self.reloads)?;
        writeln!(
            f,
            "lost decisions:            {}",
            self.found.lost_decisions
        )?;
        writeln!(
            f,
            "verdict mismatches:        {}",
            self.found.verdict_mismatches
        )?;
        writeln!(
            f,
            "rate-limit violations:     {}",
            self.found.limit_violations
        )?;
        writeln!(
            f,
            "lost approvals/observations/reloads/held calls: {}/{}/{}/{}",
            self.found.lost_approvals,
            self.found.lost_observations,
            self.found.lost_reloads,
            self.found.lost_held
        )?;
        writeln!(f, "taint lost across restart: {}", self.taint_lost)?;
        writeln!(f, "ledger entries at the end: {}", self.ledger_entries)?;
        writeln!(
            f,
            "time: {:.1} s, {per_cycle:.2} s per cycle; start-up {} ms (first) → {} ms (last)",
            self.elapsed.as_secs_f64(),
            self.first_start.as_millis(),
            self.last_start.as_millis()
        )?;
        for failure in &self.found.failures {
            writeln!(f, "FAILED {failure}")?;
        }
        Ok(())
    }
}

/// The harness's policies: a scan limit, an approval gate, a taint rule; the second bundle
/// adds a shadow policy, so reloads switch between two hashes.
pub fn write_policies(path: &Path, second: bool) -> std::io::Result<()> {
    let mut text = format!(
        "POLICY scan-limit: ACTION: DENY TARGET: agent_identity IF Tool_Call('ScanTool').Count > {} requests/{}ms\n\
         POLICY exploit-gate: ACTION: REQUIRE_HITL IF Tool_Call('ExploitationTool')\n\
         POLICY no-exfil-after-prod-read: ACTION: DENY IF DataSource('Internal_Prod_DB') == 'read' AND Tool_Call('DataExfiltration')\n",
        LIMIT.calls, LIMIT.window_ms
    );
    if second {
        text.push_str("POLICY docs-trial: ACTION: DENY IF Tool_Call('read_docs') MODE: shadow\n");
    }
    // Written aside and renamed, so a reload never reads half a file.
    let tmp = path.with_extension("tsp.new");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

const CATALOG: &str = r#"[tools.nmap_scan]
classes = ["ScanTool"]

[tools.exploit_runner]
classes = ["ExploitationTool"]

[tools.http_upload]
classes = ["DataExfiltration"]
mode = "write_external"

[tools.prod_db_query]
classes = ["DatabaseQuery"]
data_source = { name = "Internal_Prod_DB", mode = "read" }

[tools.read_docs]
classes = ["Benign"]
"#;

/// The server's config: an OS-chosen loopback port, credentials off (the load names its
/// agents), a checkpoint every 100 records, and deadlines longer than any run.
const CONFIG: &str = r#"listen = "127.0.0.1:0"
policies = ["policies.tsp"]
catalog = "catalog.toml"
require_credentials = false
approval_deadline = "7d"

[ledger]
path = "ledger.db"
key = "ledger.key"
checkpoint_every = 100
"#;

/// Runs the cycles. `Err` only when the harness itself cannot run; failed checks are in the
/// report.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("{}: cannot create", options.dir.display()))?;
    let db = options.dir.join("ledger.db");
    if db.exists() {
        bail!(
            "{}: a ledger is already there; give an empty directory",
            db.display()
        );
    }
    let config = options.dir.join("truststack.toml");
    std::fs::write(&config, CONFIG)?;
    std::fs::write(options.dir.join("catalog.toml"), CATALOG)?;
    let policies = options.dir.join("policies.tsp");
    write_policies(&policies, false)?;

    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let bar = ProgressBar::new(options.cycles);
    if options.progress {
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {pos}/{len} cycles  {msg}  [{elapsed_precise}, eta {eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }

    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut view = LedgerView::new(LIMIT);
    let mut report = Report::default();
    let mut acks = load::Acks::default();
    let started = Instant::now();
    for cycle in 0..=options.cycles {
        // Restart, and read back what the killed process left.
        let t0 = Instant::now();
        let server = match Server::start(&options.bin, &config, &http) {
            Ok(server) => server,
            Err(e) => {
                report.found.failures.push(format!(
                    "cycle {cycle}: the server does not answer again after the kill: {e:#}"
                ));
                break;
            }
        };
        let took = t0.elapsed();
        if cycle == 1 {
            report.first_start = took;
        }
        report.last_start = took;
        if let Err(e) = view.read_new(&http, &server.base) {
            report.found.failures.push(format!(
                "cycle {cycle}: reading the ledger back through the restarted server: {e:#}"
            ));
            break;
        }
        if cycle > 0 {
            report.add(view.check(cycle - 1, &acks));
        }
        let out_of_time = options.budget.is_some_and(|b| started.elapsed() >= b);
        if !report.passed() || cycle == options.cycles || out_of_time {
            break;
        }

        let api = Api {
            http: http.clone(),
            base: server.base.clone(),
        };
        let mut next = load::Acks::default();
        // Taint is state too: the previous analyst, tainted before the kill, stays refused.
        if cycle > 0 && acks.analyst_tainted {
            let agent = load::analyst(cycle - 1);
            let call = format!("taint-probe-{cycle}");
            match api.decide(
                &call,
                &agent,
                "http_upload",
                json!({"url": "https://x.example/"}),
            ) {
                Some(ack) if ack.verdict == "deny" => next.decisions.push(ack),
                answer => {
                    report.taint_lost += 1;
                    report.found.failures.push(format!(
                        "cycle {cycle}: {agent} read Internal_Prod_DB before the kill, yet its upload {call} was answered {answer:?}"
                    ));
                    break;
                }
            }
        }
        // Held calls the previous cycle left unanswered, unless the ledger answered them.
        let pending = acks
            .held
            .iter()
            .filter(|id| !view.outcomes.contains_key(*id))
            .cloned()
            .collect();

        let stop = Arc::new(AtomicBool::new(false));
        let load_for = Duration::from_millis(rng.gen_range(options.load_ms.0..=options.load_ms.1));
        let seed = rng.gen();
        let workers = {
            let (api, stop, policies) = (api.clone(), Arc::clone(&stop), policies.clone());
            std::thread::spawn(move || load::run(&api, cycle, seed, &stop, pending, &policies))
        };
        std::thread::sleep(load_for);
        server.kill()?;
        stop.store(true, Ordering::Relaxed);
        let Ok(cycle_acks) = workers.join() else {
            bail!("cycle {cycle}: a load thread panicked");
        };
        next.merge(cycle_acks);
        report.count(&next);
        acks = next;

        // The killed process's ledger, as an auditor would check it.
        let verify = Command::new(&options.bin)
            .args(["ledger", "verify"])
            .arg(&db)
            .env("NO_COLOR", "1")
            .output()
            .context("running `truststack ledger verify`")?;
        if !verify.status.success() {
            report.found.failures.push(format!(
                "cycle {cycle}: `truststack ledger verify` failed after the kill: {}{}",
                String::from_utf8_lossy(&verify.stdout),
                String::from_utf8_lossy(&verify.stderr)
            ));
            break;
        }
        report.cycles += 1;
        bar.set_position(report.cycles);
        bar.set_message(report.summary());
        if !options.progress && options.log_every > 0 && report.cycles % options.log_every == 0 {
            eprintln!(
                "{} cycles in {:.0} s: {}",
                report.cycles,
                started.elapsed().as_secs_f64(),
                report.summary()
            );
        }
    }
    bar.finish_and_clear();
    report.ledger_entries = view.size();
    report.elapsed = started.elapsed();
    Ok(report)
}
