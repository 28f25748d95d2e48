//! `truststack demo`: the GTG-1002 campaign stopped end to end with the real components, in a
//! fresh working directory.
//!
//! 1. **Crawl** — the proving ground on the naive, split and fixed manifests, with the fix
//!    proposed and proved, and the HTML safety case written.
//! 2. **Walk** — an issuer, the humans (operator, on-call approver) and the agents with their
//!    delegation chain (orchestrator → recon and patch sub-agents).
//! 3. **Run** — the simulated campaign tool server behind the MCP gateway (signed credentials,
//!    write-ahead ledger), driven over Streamable HTTP by the campaign split across sub-agents.
//! 4. **Audit** — the ledger verified, its signed checkpoint, an inclusion proof for the
//!    exfiltration denial, and an edited copy caught at the exact index.
//!
//! Exits 1 when any expected control did not fire, so the demo is also a test.

mod campaign;
mod campaign_server;
mod mcp_client;
mod scenario;

use crate::style::Style;
use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct DemoArgs {
    /// Print a machine-readable summary instead of the story.
    #[arg(long)]
    json: bool,
    /// The working directory to create (replaced if it holds an earlier demo run).
    #[arg(long, default_value = "truststack-demo")]
    dir: PathBuf,
    /// Serve the simulated campaign tools over stdio (the gateway starts this as its upstream).
    #[arg(long, hide = true)]
    campaign_server: bool,
}

/// One control the demo expects to see fire (or, for benign work, not fire).
#[derive(Serialize, Clone)]
pub struct Control {
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
            "\n{}  {}",
            self.style.bold(title),
            self.style.dim(subtitle)
        ));
    }

    pub fn check(
        &mut self,
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
        self.line(format!("  {mark} {name}: {}", self.style.dim(&detail)));
        self.controls.push(Control {
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
    controls: Vec<Control>,
    elapsed_ms: u128,
}

/// Creates `dir` afresh; refuses to remove a directory that is not an earlier demo run.
fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    let marker = dir.join(".truststack-demo");
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
    story.line(
        story
            .style
            .bold("TrustStack — the GTG-1002 campaign, stopped end to end"),
    );
    story.line(format!(
        "An AI agent ran most of an intrusion by itself, split into steps that each looked harmless.\n\
         Working directory: {}",
        dir.display()
    ));

    scenario::crawl(&dir, &mut story)?;
    let identities = scenario::walk(&dir, &mut story)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(campaign::run(&dir, &identities, &mut story))?;
    // Every task holding the gateway (and with it the ledger) ends with the runtime.
    drop(runtime);
    let audit = campaign::audit(&dir, &outcome, &mut story)?;

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

fn tell_summary(story: &Story, s: &Summary) {
    let st = story.style;
    story.line(format!("\n{}", st.bold("Summary")));
    let row = |k: &str, v: String| story.line(format!("  {k:<30}{v:>10}"));
    row("calls seen at the gateway", s.counts.calls.to_string());
    row("allowed", s.counts.allowed.to_string());
    row("held for a human", s.counts.held.to_string());
    row("denied", s.counts.denied.to_string());
    row("attack steps stopped", s.attack_steps_stopped.to_string());
    row("benign calls blocked", s.benign_calls_blocked.to_string());
    row(
        "campaign pace (calls/s)",
        format!("{:.0}", s.calls_per_second),
    );
    row(
        "ledger verified",
        if s.ledger_verified { "yes" } else { "NO" }.to_string(),
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
        story.line(format!(
            "\n{} Every control fired. Explore {}: the safety case (crawl/*.html), the issuer, gateway.toml and ledger.db;\n\
             try `truststack ledger show {}/ledger.db`.",
            st.green("PASS"),
            s.dir,
            s.dir
        ));
    } else {
        for c in s.controls.iter().filter(|c| !c.passed) {
            story.line(format!("{} {}: {}", st.red("FAILED"), c.name, c.detail));
        }
    }
}
