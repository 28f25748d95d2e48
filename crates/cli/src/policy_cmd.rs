//! `truststack policy check|eval|test`.

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use truststack_engine::replay::{parse_trace, replay, EvalLine};
use truststack_engine::Processed;
use truststack_engine::{DefaultDecision, Engine, Settings, TimeSource, Verdict};
use truststack_policy::load::{load_files, read, LoadError};
use truststack_policy::{parse_and_check, Catalog, Source};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Parse and check policy files; exit 0 when valid, 1 with diagnostics otherwise.
    Check {
        /// Policy files (`.tsp`); each may hold many policies.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Check tool, class and data-source names against this catalog.
        #[arg(long)]
        catalog: Option<PathBuf>,
    },
    /// Replay a JSONL trace on its own clock and print one JSON decision per tool call.
    Eval(EvalArgs),
    /// Run policy unit tests: traces with expected decisions (TOML files).
    Test {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Args)]
pub struct EvalArgs {
    /// A policy file; repeat for several.
    #[arg(long = "policy", required = true)]
    policies: Vec<PathBuf>,
    /// The tool catalog (TOML).
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// The trace: one event per line (tool_call, observation, approval).
    #[arg(long)]
    trace: PathBuf,
    /// The decision for calls no policy fires on.
    #[arg(long, value_enum, default_value = "allow")]
    default: Choice,
    /// Whether tools missing from the catalog may be called.
    #[arg(long, value_enum, default_value = "deny")]
    unknown_tools: Choice,
    /// Also print one line per approval answer (`{"approval": ...}`).
    #[arg(long)]
    approvals: bool,
    /// Include each fired policy's monitor values.
    #[arg(long)]
    explain: bool,
    /// Write every decision, observation and approval ahead to this ledger (created if absent;
    /// its signing key is the same path with `.key`), as the server would.
    #[arg(long)]
    ledger: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Choice {
    Allow,
    Deny,
}

impl From<Choice> for DefaultDecision {
    fn from(c: Choice) -> Self {
        match c {
            Choice::Allow => DefaultDecision::Allow,
            Choice::Deny => DefaultDecision::Deny,
        }
    }
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { files, catalog } => check(&files, catalog.as_deref()),
        PolicyCommand::Eval(args) => eval(&args),
        PolicyCommand::Test { files } => test(&files),
    }
}

fn check(files: &[PathBuf], catalog: Option<&Path>) -> anyhow::Result<ExitCode> {
    let catalog = match catalog {
        Some(path) => Catalog::load(path)?,
        None => Catalog::default(),
    };
    let mut sources = Vec::new();
    for f in files {
        sources.push(Source::new(f.display().to_string(), read(f)?));
    }
    let (policies, report) = parse_and_check(&sources, &catalog);
    let rendered = report.render(&sources);
    if !rendered.is_empty() {
        eprintln!("{rendered}");
    }
    let errors = report
        .diagnostics
        .iter()
        .filter(|(_, d)| d.is_error())
        .count();
    let warnings = report.diagnostics.len() - errors;
    if errors > 0 {
        eprintln!("{errors} error(s), {warnings} warning(s)");
        return Ok(ExitCode::from(1));
    }
    say!(
        "ok: {} polic{} in {} file(s), {warnings} warning(s)",
        policies.len(),
        if policies.len() == 1 { "y" } else { "ies" },
        files.len()
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn load_engine(
    policies: &[PathBuf],
    catalog: Option<&Path>,
    settings: Settings,
) -> anyhow::Result<Engine> {
    let loaded = match load_files(policies, catalog) {
        Ok(l) => l,
        Err(LoadError::Invalid { rendered, errors }) => {
            eprintln!("{rendered}");
            bail!("{errors} error(s) in the policies");
        }
        Err(e) => return Err(e.into()),
    };
    let warnings = loaded.render_warnings();
    if !warnings.is_empty() {
        eprintln!("{warnings}");
    }
    Ok(Engine::new(loaded.bundle, settings))
}

fn eval(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings {
        default_decision: args.default.into(),
        unknown_tools: args.unknown_tools.into(),
        ..Settings::replay()
    };
    let mut engine = load_engine(&args.policies, args.catalog.as_deref(), settings)?;
    let ledger = match &args.ledger {
        Some(path) => {
            let ledger = truststack_engine::ledger::Ledger::open(
                path,
                &truststack_engine::ledger::LedgerConfig::new(path.with_extension("key")),
            )
            .with_context(|| format!("ledger {}", path.display()))?;
            let ledger = std::sync::Arc::new(ledger);
            let sources: Vec<(String, usize)> = args
                .policies
                .iter()
                .map(|p| {
                    let bytes = std::fs::metadata(p).map_or(0, |m| m.len());
                    (
                        p.display().to_string(),
                        usize::try_from(bytes).unwrap_or(usize::MAX),
                    )
                })
                .collect();
            ledger.append(&engine.activation_record(&sources))?;
            engine = engine.with_recorder(ledger.clone());
            Some(ledger)
        }
        None => None,
    };
    let text = read(&args.trace)?;
    let events = parse_trace(&args.trace.display().to_string(), &text)?;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    for step in replay(&engine, &events) {
        let line = match step {
            Processed::Decision(d) if args.explain => serde_json::to_string(&d)?,
            Processed::Decision(d) => serde_json::to_string(&EvalLine::from(&d))?,
            Processed::Approval(Ok(o)) if args.approvals => serde_json::json!({
                "approval": o.call_id, "approver": o.approver, "result": o.result,
                "decision": o.decision, "reason": o.reason,
            })
            .to_string(),
            Processed::Approval(Err(e)) => {
                eprintln!("approval not applied: {e}");
                if !args.approvals {
                    continue;
                }
                serde_json::json!({"approval_error": e.to_string()}).to_string()
            }
            Processed::Observation(Err(e)) => {
                eprintln!("observation not applied: {e}");
                continue;
            }
            Processed::Input(Err(e)) => {
                eprintln!("input not applied: {e}");
                continue;
            }
            Processed::Grant(Err(e)) => {
                eprintln!("grant not applied: {e}");
                continue;
            }
            _ => continue,
        };
        writeln!(out, "{line}")?;
    }
    if let Some(ledger) = ledger {
        // A signed checkpoint over everything this run recorded.
        ledger.checkpoint()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A policy test file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    catalog: Option<PathBuf>,
    policies: Vec<PathBuf>,
    #[serde(default)]
    settings: TestSettings,
    #[serde(rename = "case")]
    cases: Vec<TestCase>,
}

/// A test file's `[settings]`: the engine settings `truststack.toml` and `gateway.toml` write,
/// with the same names and defaults. Tests always run on the events' clock.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSettings {
    #[serde(default)]
    default_decision: DefaultDecision,
    #[serde(default = "deny")]
    unknown_tools: DefaultDecision,
    #[serde(default = "fifteen_minutes")]
    approval_deadline: truststack_policy::duration::Duration,
    #[serde(default)]
    approver_groups: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default = "default_provenance_bound")]
    provenance_bound: usize,
    #[serde(default)]
    input_record: truststack_policy::RecordMode,
}

impl Default for TestSettings {
    fn default() -> Self {
        TestSettings {
            default_decision: DefaultDecision::default(),
            unknown_tools: deny(),
            approval_deadline: fifteen_minutes(),
            approver_groups: Default::default(),
            provenance_bound: default_provenance_bound(),
            input_record: Default::default(),
        }
    }
}

fn deny() -> DefaultDecision {
    DefaultDecision::Deny
}

fn fifteen_minutes() -> truststack_policy::duration::Duration {
    truststack_policy::duration::Duration::from_ms(15 * 60 * 1000)
}

fn default_provenance_bound() -> usize {
    truststack_policy::provenance::DEFAULT_BOUND
}

impl TestSettings {
    fn engine(&self) -> Settings {
        Settings {
            default_decision: self.default_decision,
            unknown_tools: self.unknown_tools,
            approval_deadline_ms: self.approval_deadline.ms(),
            time_source: TimeSource::Event,
            approver_groups: self.approver_groups.clone(),
            provenance_bound: self.provenance_bound,
            input_record: self.input_record,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    /// A JSONL trace file (relative to the test file) ...
    #[serde(default)]
    trace: Option<PathBuf>,
    /// ... or the events inline, as JSONL text.
    #[serde(default)]
    events: Option<String>,
    #[serde(default)]
    expect: Vec<Expectation>,
    /// The decision every call not listed in `expect` must get.
    #[serde(default)]
    otherwise: Option<Verdict>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectation {
    id: String,
    decision: Verdict,
    /// When given, exactly these policies must fire (in any order).
    #[serde(default)]
    policies: Option<Vec<String>>,
}

fn test(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in files {
        let text = read(file)?;
        let spec: TestFile = toml::from_str(&text)
            .with_context(|| format!("{}: not a policy test file", file.display()))?;
        let dir = file.parent().unwrap_or(Path::new("."));
        let policies: Vec<PathBuf> = spec.policies.iter().map(|p| dir.join(p)).collect();
        let catalog = spec.catalog.as_ref().map(|c| dir.join(c));
        for case in &spec.cases {
            let settings = spec.settings.engine();
            let engine = load_engine(&policies, catalog.as_deref(), settings)?;
            let (name, events_text) = match (&case.trace, &case.events) {
                (Some(t), None) => {
                    let path = dir.join(t);
                    (path.display().to_string(), read(&path)?)
                }
                (None, Some(e)) => (format!("{} [{}]", file.display(), case.name), e.clone()),
                _ => bail!(
                    "{}: case `{}` needs exactly one of `trace` and `events`",
                    file.display(),
                    case.name
                ),
            };
            let events = parse_trace(&name, &events_text)?;
            let mut got: BTreeMap<String, EvalLine> = BTreeMap::new();
            for step in replay(&engine, &events) {
                if let Processed::Decision(d) = step {
                    got.insert(d.call_id.clone(), EvalLine::from(&d));
                }
            }
            let failures = compare(case, &got);
            if failures.is_empty() {
                passed += 1;
                say!("PASS {}: {}", file.display(), case.name);
            } else {
                failed += 1;
                say!("FAIL {}: {}", file.display(), case.name);
                for f in failures {
                    say!("    {f}");
                }
            }
        }
    }
    say!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn compare(case: &TestCase, got: &BTreeMap<String, EvalLine>) -> Vec<String> {
    let mut failures = Vec::new();
    for e in &case.expect {
        let Some(line) = got.get(&e.id) else {
            failures.push(format!("{}: no tool_call with this id in the trace", e.id));
            continue;
        };
        if line.decision != e.decision {
            failures.push(format!(
                "{}: expected {}, got {} ({})",
                e.id,
                e.decision.as_str(),
                line.decision.as_str(),
                line.reason
            ));
        }
        if let Some(want) = &e.policies {
            let (mut want, mut have) = (want.clone(), line.policies.clone());
            want.sort();
            have.sort();
            if want != have {
                failures.push(format!(
                    "{}: expected policies {want:?}, got {have:?}",
                    e.id
                ));
            }
        }
    }
    if let Some(otherwise) = case.otherwise {
        for (id, line) in got {
            if !case.expect.iter().any(|e| &e.id == id) && line.decision != otherwise {
                failures.push(format!(
                    "{id}: expected {} (otherwise), got {} ({})",
                    otherwise.as_str(),
                    line.decision.as_str(),
                    line.reason
                ));
            }
        }
    }
    failures
}
