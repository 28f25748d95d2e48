//! Crawl: the proving ground, before anything is deployed. The three designs of the scenario —
//! one agent holding every tool, the naive split into sub-agents, and the fixed design — are
//! explored exhaustively (and by Monte Carlo) with the real policy engine deciding every call.

use super::Story;
use crate::prove_cmd::{monte_carlo_bar, write_reports};
use serde::Serialize;
use std::path::Path;
use truststack_sim::quant::human_duration;
use truststack_sim::report::change_line;
use truststack_sim::toxic::HolderKind;
use truststack_sim::{prove_world, Analysis, Manifest, ProveOptions, Status, World};

/// The GTG-1002 escalation: the toxic combination of tool classes.
const TOXIC: [&str; 3] = ["ScanTool", "CodeAnalysisTool", "ExploitationTool"];

/// What the proving ground found, for `--json`.
#[derive(Serialize, Default)]
pub struct Findings {
    /// Goals the naive design reaches without a human gate.
    pub naive_unguarded: Vec<String>,
    /// The toxic combination in the naive design: its classes and the identity holding them.
    pub toxic_combination: Vec<String>,
    pub toxic_holder: String,
    /// In the split design: the orchestration through which the goals are reached, and the
    /// sub-agents that hold the tools.
    pub split_holder: String,
    pub split_held_by: Vec<String>,
    /// The remediation proposed for the naive design, and whether it was proved safe.
    pub fix: Vec<String>,
    pub fix_proved: bool,
    pub fixed_safe: bool,
    /// The safety cases written (HTML).
    pub safety_cases: Vec<String>,
}

/// Proves one manifest of the scenario and writes its reports to `crawl/<name>/`.
fn prove(
    dir: &Path,
    manifest: &str,
    name: &str,
    fix: bool,
    quiet: bool,
) -> anyhow::Result<Analysis> {
    let world = World::build(Manifest::load(&dir.join("scenario").join(manifest))?)?;
    let out = dir.join("crawl").join(name);
    let runs = world.manifest.montecarlo.runs;
    let bar = monte_carlo_bar(runs, quiet);
    let progress = |n: u64| bar.set_position(n);
    let mut analysis = prove_world(
        &world,
        &ProveOptions {
            fix,
            fix_out: fix.then(|| out.clone()),
            progress: Some(&progress),
            ..ProveOptions::default()
        },
    )?;
    bar.finish_and_clear();
    write_reports(&world, &mut analysis, &out)?;
    Ok(analysis)
}

fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn design(story: &Story, label: &str, a: &Analysis) {
    let st = story.style;
    let mc = a.montecarlo.as_ref().map_or(String::new(), |m| {
        format!(", {} Monte Carlo adversaries", grouped(m.runs))
    });
    story.line(format!("\n  {} {}", st.bold(label), st.bold(&a.name)));
    story.line(st.dim(&format!(
        "    {} states explored exhaustively, {} engine decisions{mc}",
        grouped(a.exploration.states as u64),
        grouped(a.exploration.decisions as u64),
    )));
    for g in &a.goals {
        let (mark, word) = match g.status {
            Status::Unguarded => (st.red("✗"), st.red("UNGUARDED  ")),
            Status::Gated => (st.green("✓"), st.green("human gate ")),
            Status::Unreachable => (st.green("✓"), st.green("unreachable")),
            Status::Unknown => (st.yellow("?"), st.yellow("unknown    ")),
        };
        let path = g.trajectory.as_ref().map_or(String::new(), |t| {
            t.steps
                .iter()
                .map(|s| s.tool.as_str())
                .collect::<Vec<_>>()
                .join(" → ")
        });
        let line = format!("    {mark} {:<36} {word} {}", g.id, st.dim(&path));
        story.line(line.trim_end());
    }
}

/// Crawl: what could the agents do, before anything is deployed?
pub fn run(dir: &Path, story: &mut Story) -> anyhow::Result<Findings> {
    story.section(
        "1. CRAWL — the proving ground",
        "Before deployment: every order in which the agents could call their tools, each call decided\n\
         by the real policy engine, against the GTG-1002 kill chain (MITRE ATT&CK tactics).",
    );
    let st = story.style;
    let quiet = story.quiet;
    let mut f = Findings::default();

    // A. The naive design.
    let naive = prove(dir, "manifest-naive.toml", "naive", true, quiet)?;
    design(story, "A.", &naive);
    f.naive_unguarded = naive
        .goals
        .iter()
        .filter(|g| g.status == Status::Unguarded)
        .map(|g| g.id.clone())
        .collect();
    let toxic = naive.toxic.iter().find(|t| {
        t.classes.len() == TOXIC.len() && TOXIC.iter().all(|c| t.classes.iter().any(|x| x == c))
    });
    if let Some(t) = toxic {
        f.toxic_combination = t.classes.clone();
        f.toxic_holder = t.holder_identity.clone();
        story.line(format!(
            "    {} toxic combination {{{}}}, all held by one identity: {}",
            st.red("⚠"),
            t.classes.join(", "),
            t.holder_identity
        ));
    }
    if let Some(s) = naive.sweeps.first() {
        story.line(format!(
            "    the scan rate limit only slows it down: a /16 sweep ({} scans) takes {} instead of {}",
            grouped(s.calls),
            s.limited_ms.map_or("forever".into(), human_duration),
            human_duration(s.unlimited_ms)
        ));
    }
    if let Some(g) = naive
        .montecarlo
        .as_ref()
        .and_then(|m| m.goals.iter().find(|g| g.goal == "gtg1002-chain"))
    {
        story.line(format!(
            "    random adversaries completed the whole chain unguarded in {:.1}% of the runs",
            g.unguarded_rate * 100.0
        ));
    }
    story.check(
        "naive-unguarded",
        "crawl",
        "the naive design reaches the whole GTG-1002 chain without a human gate",
        naive.goal("gtg1002-chain").map(|g| g.status) == Some(Status::Unguarded),
        "found before deployment, with the shortest trajectory as evidence",
    );
    story.check(
        "toxic-combination",
        "crawl",
        "the toxic tool combination is found",
        toxic.is_some(),
        format!(
            "{{{}}} held by {}",
            TOXIC.join(", "),
            toxic.map_or("no identity", |t| t.holder_identity.as_str())
        ),
    );

    // B. The naive split: context splitting.
    let split = prove(dir, "manifest-split.toml", "split", false, quiet)?;
    design(story, "B.", &split);
    let through = split
        .toxic
        .iter()
        .find(|t| t.holder == HolderKind::DelegationRoot && t.held_by.len() > 1);
    if let Some(t) = through {
        f.split_holder = t.holder_identity.clone();
        f.split_held_by = t.held_by.clone();
        story.line(format!(
            "    {} no single sub-agent holds {{{}}}, but the orchestration does: {} through {}",
            st.red("⚠"),
            t.classes.join(", "),
            t.holder_identity,
            t.held_by.join(" and ")
        ));
    }
    story.check(
        "split-exploitable",
        "crawl",
        "splitting the work across sub-agents is still exploitable through the orchestrator",
        !split.safe && through.is_some(),
        "per-agent policies see each sub-agent alone: context splitting",
    );

    // The remediation, proposed and proved in the same run.
    let fix = naive.fix.as_deref();
    story.line(format!(
        "\n    {}",
        st.bold("Remediation the proving ground proposes for design A, proved in the same run:")
    ));
    for c in fix.map(|x| x.changes.as_slice()).unwrap_or_default() {
        let line = change_line(c);
        story.line(format!("    • {line}"));
        f.fix.push(line);
    }
    // The alternatives, each proved too: the article's identity split among them.
    for alt in fix.map(|x| x.alternatives.as_slice()).unwrap_or_default() {
        story.line(format!(
            "    alternative `{}` ({}): {}",
            alt.id,
            if alt.safe { "proved safe" } else { "NOT safe" },
            alt.title
        ));
        for c in alt.changes.iter().filter(|c| {
            matches!(c, truststack_sim::fix::Change::SplitIdentity { .. })
                || fix.is_some_and(|x| !x.changes.iter().any(|p| change_line(p) == change_line(c)))
        }) {
            story.line(format!("      ◦ {}", change_line(c)));
        }
    }
    f.fix_proved = fix.is_some_and(|x| x.safe);
    story.check(
        "fix-proved",
        "crawl",
        "the remediation is proved: every goal gated or unreachable",
        f.fix_proved,
        format!(
            "fixed manifest and policies in {}",
            dir.join("crawl/naive").display()
        ),
    );

    // C. The fixed design.
    let fixed = prove(dir, "manifest-fixed.toml", "fixed", false, quiet)?;
    design(story, "C.", &fixed);
    f.fixed_safe = fixed.safe;
    story.check(
        "fixed-safe",
        "crawl",
        "the fixed design is proved safe",
        fixed.safe,
        "the seed policies at TARGET: delegation_root; the escalation needs security on-call",
    );
    for name in ["naive", "split", "fixed"] {
        f.safety_cases.push(
            dir.join("crawl")
                .join(name)
                .join("safety-case.html")
                .display()
                .to_string(),
        );
    }
    story.line(format!(
        "\n    safety cases for the security review: {}",
        dir.join("crawl/{naive,split,fixed}/safety-case.html")
            .display()
    ));
    Ok(f)
}
