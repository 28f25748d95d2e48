//! Kill -9 cycles of `truststack serve` under mixed load, checking after every restart that
//! nothing acknowledged was lost. Real processes, real HTTP on loopback, only the public API,
//! the CLI and the ledger's reader, so the harness holds whatever the server's internals become.
//!
//! One server on a SQLite file, or several replicas on one PostgreSQL database: then the load
//! goes to every replica in turn, each cycle kills one of them (in turn) and restarts it while
//! the others go on answering, and no request to those others may fail.

mod audit;
mod load;
mod server;

use anyhow::{bail, Context};
use audit::{LedgerView, Limit, Source};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use load::{Api, Fleet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use server::Server;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use truststack_ledger::LedgerLocation;

/// The scan limit every scanner agent races against.
const LIMIT: Limit = Limit {
    calls: 20,
    window_ms: 5_000,
};

/// What to run.
pub struct Options {
    /// How many times a server is killed.
    pub cycles: u64,
    /// How many `truststack serve` processes share the ledger (more than one needs
    /// `database`); each cycle kills the next one.
    pub replicas: usize,
    /// The ledger's PostgreSQL database (a `postgres://` URL, of an empty database) instead of
    /// a SQLite file in `dir`.
    pub database: Option<String>,
    /// The `truststack` binary.
    pub bin: PathBuf,
    /// Where the config, policies, signing key and SQLite ledger live (created; must not hold
    /// a ledger yet).
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
    pub replicas: usize,
    /// 200 answers per replica, over the run.
    pub answered: Vec<u64>,
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
            "acked {} · lost {} · mismatched {} · over limit {} · failed requests {}",
            self.decisions,
            self.found.lost_decisions,
            self.found.verdict_mismatches,
            self.found.limit_violations,
            self.found.failed_requests
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_cycle = self.elapsed.as_secs_f64() / self.cycles.max(1) as f64;
        writeln!(f, "kill -9 cycles:            {}", self.cycles)?;
        if self.replicas > 1 {
            let answered: Vec<String> = self.answered.iter().map(u64::to_string).collect();
            writeln!(
                f,
                "replicas:                  {} (requests answered: {})",
                self.replicas,
                answered.join(" / ")
            )?;
        }
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
        writeln!(
            f,
            "failed requests:           {} (no answer from a server not killed, or not 200)",
            self.found.failed_requests
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

/// The server's config, with the ledger at `ledger` (a file or a URL): an OS-chosen loopback
/// port, credentials off (the load names its agents), a checkpoint every 100 records, and
/// deadlines longer than any run. Every replica runs with the same one.
fn config_text(ledger: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
policies = ["policies.tsp"]
catalog = "catalog.toml"
require_credentials = false
approval_deadline = "7d"

[ledger]
path = {}
key = "ledger.key"
checkpoint_every = 100
"#,
        Value::from(ledger)
    )
}

/// Runs the cycles. `Err` only when the harness itself cannot run; failed checks are in the
/// report.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let n = options.replicas;
    if n == 0 || (n > 1 && options.database.is_none()) {
        bail!("{n} replicas: one server runs on a SQLite file, several need a PostgreSQL database");
    }
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("{}: cannot create", options.dir.display()))?;
    let ledger = match &options.database {
        Some(url) => url.clone(),
        None => options.dir.join("ledger.db").display().to_string(),
    };
    let location = LedgerLocation::parse(&ledger)?;
    let occupied = match &location {
        LedgerLocation::Sqlite(db) => db.exists(),
        // A database without the ledger's tables cannot be opened: it is empty.
        LedgerLocation::Postgres(_) => {
            truststack_ledger::Ledger::open_read_only_at(&location).is_ok_and(|l| !l.is_empty())
        }
    };
    if occupied {
        bail!("{location}: a ledger is already there; give an empty one");
    }
    let config = options.dir.join("truststack.toml");
    std::fs::write(&config, config_text(&ledger))?;
    std::fs::write(options.dir.join("catalog.toml"), CATALOG)?;
    let policies = options.dir.join("policies.tsp");
    write_policies(&policies, false)?;
    let key = options.dir.join("ledger.key");

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
    let mut report = Report {
        replicas: n,
        answered: vec![0; n],
        ..Report::default()
    };
    let mut acks = load::Acks::default();
    let started = Instant::now();
    // One after another: the first creates the signing key the others share.
    let mut servers = Vec::new();
    for replica in 0..n {
        match Server::start(&options.bin, &config, &http) {
            Ok(server) => servers.push(server),
            Err(e) => {
                report
                    .found
                    .failures
                    .push(format!("server {replica} does not start: {e:#}"));
                return Ok(report);
            }
        }
    }
    for cycle in 0..options.cycles {
        if options.budget.is_some_and(|b| started.elapsed() >= b) {
            break;
        }
        let victim = (cycle % n as u64) as usize;
        let fleet = Arc::new(Fleet::new(
            servers.iter().map(|s| s.base.clone()).collect(),
            victim,
        ));
        let api = Api {
            http: http.clone(),
            fleet: Arc::clone(&fleet),
            pinned: None,
        };
        let mut next = load::Acks::default();
        // Taint is state too: the previous analyst, tainted before the kill, stays refused by
        // the server restarted since.
        if cycle > 0 && acks.analyst_tainted {
            let agent = load::analyst(cycle - 1);
            let call = format!("taint-probe-{cycle}");
            let restarted = ((cycle - 1) % n as u64) as usize;
            match api.on(restarted).decide(
                &call,
                &agent,
                "http_upload",
                json!({"url": "https://x.example/"}),
            ) {
                Some(ack) if ack.verdict == "deny" => next.decisions.push(ack),
                answer => {
                    report.taint_lost += 1;
                    report.found.failures.push(format!(
                        "cycle {cycle}: {agent} read Internal_Prod_DB before the kill, yet its upload {call} was answered {answer:?} by server {restarted}, restarted since"
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
        servers[victim].kill()?;
        report.cycles += 1;
        // With others left to answer, the killed replica comes back under load; a server alone
        // comes back after its ledger is verified, as after a crash.
        let restarted = if n > 1 {
            let restarted = restart(options, &config, &http, cycle, victim, &mut report);
            if let Some(server) = &restarted {
                fleet.moved(victim, server.base.clone());
            }
            Some(restarted)
        } else {
            None
        };
        stop.store(true, Ordering::Relaxed);
        let Ok(cycle_acks) = workers.join() else {
            bail!("cycle {cycle}: a load thread panicked");
        };
        next.merge(cycle_acks);
        report.count(&next);
        for (total, answered) in report.answered.iter_mut().zip(fleet.answered()) {
            *total += answered;
        }
        let (failed, described) = fleet.failures();
        report.found.failed_requests += failed;
        report
            .found
            .failures
            .extend(described.into_iter().map(|f| format!("cycle {cycle}: {f}")));
        acks = next;

        // The ledger as the killed process left it, as an auditor would check it.
        let verify = Command::new(&options.bin)
            .args(["ledger", "verify", &ledger, "--key-file"])
            .arg(&key)
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
        let restarted = match restarted {
            Some(restarted) => restarted,
            None => restart(options, &config, &http, cycle, victim, &mut report),
        };
        let Some(server) = restarted else { break };
        servers[victim] = server;

        // Read back what the cycle left: through the restarted server when it is alone on its
        // ledger, else from the database.
        let source = match &location {
            LedgerLocation::Sqlite(_) => Source::Api {
                http: &http,
                base: &servers[victim].base,
            },
            LedgerLocation::Postgres(_) => Source::Ledger(&location),
        };
        if let Err(e) = view.read_new(&source) {
            report.found.failures.push(format!(
                "cycle {cycle}: reading the ledger back after the restart: {e:#}"
            ));
            break;
        }
        report.add(view.check(cycle, &acks));
        bar.set_position(report.cycles);
        bar.set_message(report.summary());
        if !options.progress
            && options.log_every > 0
            && report.cycles.is_multiple_of(options.log_every)
        {
            eprintln!(
                "{} cycles in {:.0} s: {}",
                report.cycles,
                started.elapsed().as_secs_f64(),
                report.summary()
            );
        }
        if !report.passed() {
            break;
        }
    }
    bar.finish_and_clear();
    report.ledger_entries = view.size();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Starts the killed server `victim` again, timing its start-up; `None` when it does not
/// answer (the report says why).
fn restart(
    options: &Options,
    config: &Path,
    http: &reqwest::blocking::Client,
    cycle: u64,
    victim: usize,
    report: &mut Report,
) -> Option<Server> {
    let t0 = Instant::now();
    match Server::start(&options.bin, config, http) {
        Ok(server) => {
            let took = t0.elapsed();
            if cycle == 0 {
                report.first_start = took;
            }
            report.last_start = took;
            Some(server)
        }
        Err(e) => {
            report.found.failures.push(format!(
                "cycle {cycle}: server {victim} does not answer again after the kill: {e:#}"
            ));
            None
        }
    }
}
