//! `truststack demo`: the GTG-1002 campaign stopped end to end with the real components, in a
//! fresh working directory.
//!
//! 1. **Crawl** — the proving ground on the naive, split and fixed manifests: the unguarded
//!    chain, the toxic combination, context splitting, the fix proposed and proved, and the
//!    safety cases written (HTML, Markdown, JSON, SARIF).
//! 2. **Walk** — an issuer, the humans (operator, on-call approver) and the agents with their
//!    delegation chain (orchestrator → recon and patch sub-agents), attenuated credentials.
//! 3. **Run** — the simulated campaign tool server (an MCP server over stdio, a child process
//!    of the gateway) behind the MCP gateway with signed credentials and a write-ahead ledger,
//!    driven over Streamable HTTP by the campaign split across sub-agents.
//! 4. **Audit** — the ledger verified, its signed checkpoint, an inclusion proof for the
//!    exfiltration denial, and an edited copy caught at the exact index.
//!
//! Exits 1 when any expected control did not fire, so the demo is also a test.

mod audit;
mod campaign;
mod campaign_server;
mod crawl;
mod mcp_client;
mod scenario;
mod walk;

use crate::style::Style;
use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct DemoArgs {
    /// Print a machine-readable summary (JSON) instead of the story.
    #[arg(long)]
    json: bool,
    /// The working directory to create; an earlier demo run there is replaced, any other
    /// non-empty directory is left alone (and the demo stops).
    #[arg(long, value_name = "DIR", default_value = "truststack-demo")]
    dir: PathBuf,
    /// Serve the simulated campaign tools over stdio (the gateway starts this as its upstream).
    #[arg(long, hide = true)]
    campaign_server: bool,
}

/// One control the demo expects to see fire (or, for benign work, not fire).
#[derive(Serialize, Clone)]
pub struct Control {
    /// A stable name for tools: `rate-limit`, `exfiltration-denied`, …
    pub id: &'static str,
    pub phase: &'static str,
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// Collects controls and tells the story (unless the output is JSON).
pub struct Story {
    pub style: Style,
    pub quiet: bool,
    pub controls: Vec<Control>,
}

impl Story {
    pub fn line(&self, text: impl AsRef<str>) {
        if !self.quiet {
            say!("{}", text.as_ref());
        }
    }

    pub fn section(&self, title: &str, subtitle: &str) {
        self.line(format!(
            "\n{}\n{}",
            self.style.bold(title),
            self.style.dim(subtitle)
        ));
    }

    pub fn check(
        &mut self,
        id: &'static str,
        phase: &'static str,
        name: impl Into<String>,
        passed: bool,
        detail: impl Into<String>,
    ) {
        let (name, detail) = (name.into(), detail.into());
        let mark = if passed {
            self.style.green("✓ control")
        } else {
            self.style.red("✗ CONTROL FAILED")
        };
        self.line(format!("  {mark}  {name}"));
        if !detail.is_empty() {
            self.line(format!("             {}", self.style.dim(&detail)));
        }
        self.controls.push(Control {
            id,
            phase,
            name,
            passed,
            detail,
        });
    }
}

#[derive(Serialize)]
struct Summary {
    passed: bool,
    dir: String,
    counts: campaign::Counts,
    attack_steps_stopped: usize,
    benign_calls_blocked: usize,
    calls_per_second: f64,
    ledger_verified: bool,
    tamper_detected_at: Option<u64>,
    crawl: crawl::Findings,
    run: campaign::Findings,
    audit: audit::Findings,
    controls: Vec<Control>,
    elapsed_ms: u128,
}

/// The file that marks a directory as a demo run, so that only such a directory is ever wiped.
const MARKER: &str = ".truststack-demo";

/// Creates `dir` afresh; refuses to remove a directory that is not an earlier demo run.
fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    let marker = dir.join(MARKER);
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("{}: cannot read", dir.display()))?
            .next()
            .is_none();
        if !empty && !marker.exists() {
            bail!(
                "{} exists and is not a TrustStack demo directory; choose another with --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("{}: cannot remove the earlier run", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    std::fs::write(&marker, "a `truststack demo` working directory\n")?;
    Ok(())
}

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    if args.campaign_server {
        campaign_server::serve()?;
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    fresh_dir(&args.dir)?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("{}: cannot resolve", args.dir.display()))?;
    scenario::write(&dir)?;
    let mut story = Story {
        style: Style::detect(),
        quiet: args.json,
        controls: Vec::new(),
    };
    let st = story.style;
    story.line(st.bold("TrustStack — the GTG-1002 campaign, replayed against the Trust Stack"));
    story.line(
        "In GTG-1002 an AI agent ran most of an intrusion by itself, at several operations per\n\
         second, split into steps that each looked harmless: reconnaissance, vulnerability\n\
         discovery, exploitation, then data theft. Here is the same campaign against TrustStack.",
    );
    story.line(st.dim(&format!("working directory: {}", dir.display())));

    let crawl = crawl::run(&dir, &mut story)?;
    let identities = walk::run(&dir, &mut story)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(campaign::run(&dir, &identities, &mut story));
    // Every task holding the gateway (and with it the ledger) ends with the runtime, and the
    // ledger signs a final checkpoint as it closes.
    drop(runtime);
    let outcome = outcome?;
    let audit = audit::run(&dir, &outcome, &mut story)?;
    console_config(&dir)?;

    let passed = story.controls.iter().all(|c| c.passed);
    let summary = Summary {
        passed,
        dir: dir.display().to_string(),
        attack_steps_stopped: outcome.counts.attack_stopped,
        benign_calls_blocked: outcome.counts.benign_blocked,
        calls_per_second: outcome.calls_per_second,
        counts: outcome.counts,
        ledger_verified: audit.verified,
        tamper_detected_at: audit.tamper_detected_at,
        crawl,
        run: outcome.findings,
        audit,
        controls: story.controls.clone(),
        elapsed_ms: started.elapsed().as_millis(),
    };
    if args.json {
        say!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        tell_summary(&story, &summary);
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `truststack.toml`: the decision point over the demo's policies, issuer and ledger, so its
/// console shows what the demo did (and holds new calls for the on-call approver).
fn console_config(dir: &Path) -> anyhow::Result<()> {
    let text = "# The decision point on the demo's data, with its approvals console:\n\
         #   truststack serve --config truststack.toml\n\
         # then open http://127.0.0.1:8181/console/ and sign in with credentials/oncall.jwt.\n\
         policies = [\"scenario/policies/seed.tsp\", \"scenario/policies/delegation-root.tsp\"]\n\
         catalog = \"scenario/catalog.toml\"\n\
         issuer_dir = \"issuer\"\ntrust_domain = \"acme.example\"\n\n\
         [ledger]\npath = \"ledger.db\"\n\n\
         # The proving ground's safety case of the fixed manifest, on the console's policies page.\n\
         [console]\nsafety_cases = \"crawl/fixed\"\n";
    let path = dir.join("truststack.toml");
    std::fs::write(&path, text).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

fn tell_summary(story: &Story, s: &Summary) {
    let st = story.style;
    story.line(format!("\n{}", st.bold("Summary")));
    let row = |k: &str, v: String| story.line(format!("  {k:<34}{v:>10}"));
    row("tool calls seen at the gateway", s.counts.calls.to_string());
    row("  allowed", s.counts.allowed.to_string());
    row("  held for a human", s.counts.held.to_string());
    row("  denied", s.counts.denied.to_string());
    row(
        "attack steps stopped or held",
        s.attack_steps_stopped.to_string(),
    );
    row("benign calls blocked", s.benign_calls_blocked.to_string());
    row(
        "campaign pace (calls per second)",
        format!("{:.0}", s.calls_per_second),
    );
    row(
        "ledger verified",
        if s.ledger_verified { "yes" } else { "NO" }.to_string(),
    );
    row(
        "tampering detected at entry",
        s.tamper_detected_at
            .map_or("NO".to_string(), |i| i.to_string()),
    );
    row(
        "controls fired as expected",
        format!(
            "{}/{}",
            s.controls.iter().filter(|c| c.passed).count(),
            s.controls.len()
        ),
    );
    row(
        "time taken",
        format!("{:.1}s", s.elapsed_ms as f64 / 1000.0),
    );
    if s.passed {
        let dir = Path::new(&s.dir);
        story.line(format!(
            "\n{} every control fired. What the demo left in {}:",
            st.green("PASS"),
            s.dir
        ));
        for (what, about) in [
            (
                "crawl/*/safety-case.html".to_string(),
                "the proving ground's safety cases (also .md, .json, .sarif)".to_string(),
            ),
            (
                "issuer/, credentials/".to_string(),
                "the credential issuer, and the humans' and agents' signed credentials".to_string(),
            ),
            (
                "gateway.toml".to_string(),
                format!(
                    "the gateway: `truststack gateway --config {} --listen 127.0.0.1:8808`",
                    dir.join("gateway.toml").display()
                ),
            ),
            (
                "truststack.toml".to_string(),
                format!(
                    "the console on this data: `truststack serve --config {}`, then open \
                     http://127.0.0.1:8181/console/ and sign in with credentials/oncall.jwt",
                    dir.join("truststack.toml").display()
                ),
            ),
            (
                "ledger.db".to_string(),
                format!(
                    "the decision ledger: `truststack ledger show {}`",
                    dir.join("ledger.db").display()
                ),
            ),
            (
                "scenario/".to_string(),
                format!(
                    "catalog, policies, manifests, traces: `truststack policy test {}/*.toml`",
                    dir.join("scenario/tests").display()
                ),
            ),
        ] {
            story.line(format!("  {what:<26}{}", st.dim(&about)));
        }
    } else {
        for c in s.controls.iter().filter(|c| !c.passed) {
            story.line(format!("{} {}: {}", st.red("FAILED"), c.name, c.detail));
        }
    }
}
