//! `truststack prove MANIFEST`: the proving ground. Exit 0 when every goal is gated or
//! unreachable, 1 otherwise, 2 for bad input.

use anyhow::Context;
use clap::{Args, ValueEnum};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use truststack_sim::manifest::{CatalogOrigin, PolicyOrigin};
use truststack_sim::report::{self, trajectory_file};
use truststack_sim::{prove_world, Analysis, Manifest, ProveOptions, World};

#[derive(Args)]
pub struct ProveArgs {
    /// The manifest (TOML): agents, their tools and delegations, catalog, policies, approvers,
    /// goals. See docs/proving-ground.md.
    manifest: PathBuf,
    /// What to print on stdout.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write every report (safety-case.md, safety-case.html, prove.json, prove.sarif), the
    /// trajectories (trajectories/*.jsonl) and, with --fix, the fixed manifest and its policies
    /// into this directory.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Propose the smallest changes that make every goal gated or unreachable, write them (with
    /// --out) and prove them in the same run.
    #[arg(long)]
    fix: bool,
    /// Monte Carlo runs (default: the manifest's `montecarlo.runs`; 0 skips Monte Carlo).
    #[arg(long)]
    runs: Option<u64>,
    /// Monte Carlo seed (default: the manifest's `montecarlo.seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// Monte Carlo worker threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A terminal summary.
    Text,
    /// The safety case as Markdown.
    Markdown,
    /// The safety case as one self-contained HTML file.
    Html,
    /// Everything, as JSON.
    Json,
    /// SARIF 2.1.0 for code-scanning UIs.
    Sarif,
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("{}: cannot write", path.display()))
}

/// Writes what `policy eval` needs for manifests with an inline catalog or inline policies, and
/// points the analysis's replay commands at it.
fn write_replay_inputs(world: &World, a: &mut Analysis, out: &Path) -> anyhow::Result<()> {
    let m = &world.manifest;
    if m.catalog_origin == CatalogOrigin::Inline {
        let p = out.join("catalog.toml");
        write(&p, &m.catalog_text)?;
        a.replay.catalog = Some(p.display().to_string());
    }
    for (i, (origin, source)) in m.policy_origins.iter().zip(&m.sources).enumerate() {
        if let PolicyOrigin::Inline(name) = origin {
            let p = out.join(format!("{name}.tsp"));
            write(&p, &source.text)?;
            if let Some(slot) = a.replay.policies.get_mut(i) {
                *slot = p.display().to_string();
            }
        }
    }
    Ok(())
}

/// The Monte Carlo progress bar: on stderr, hidden when `quiet`, when there is nothing to run
/// or when stderr is not a terminal.
pub fn monte_carlo_bar(runs: u64, quiet: bool) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(runs);
    if quiet || runs == 0 || !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "Monte Carlo {bar:40.cyan/blue} {pos}/{len} runs  {per_sec}  eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
    }
    bar
}

/// Writes every report of `analysis` into `out`: safety-case.md, safety-case.html, prove.json,
/// prove.sarif, one trajectory file per goal reached (trajectories/*.jsonl) and what replaying
/// them needs. Returns the trajectories directory, as the reports refer to it.
pub fn write_reports(world: &World, analysis: &mut Analysis, out: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    write_replay_inputs(world, analysis, out)?;
    let dir = out.join("trajectories");
    for g in &analysis.goals {
        if let Some(t) = &g.trajectory {
            write(&dir.join(trajectory_file(&g.id)), &t.jsonl())?;
        }
    }
    let trajectories = dir.display().to_string();
    let traj = Some(trajectories.as_str());
    let agent_line = |name: &str| world.manifest.agent_line(name);
    write(
        &out.join("safety-case.md"),
        &report::markdown::render(analysis, traj),
    )?;
    write(
        &out.join("safety-case.html"),
        &report::html::render(analysis, traj),
    )?;
    write(&out.join("prove.json"), &report::json(analysis))?;
    write(
        &out.join("prove.sarif"),
        &report::sarif::render(analysis, &agent_line),
    )?;
    Ok(trajectories)
}

pub fn run(args: &ProveArgs) -> anyhow::Result<ExitCode> {
    let manifest = Manifest::load(&args.manifest)?;
    let world = World::build(manifest)?;
    let runs = args.runs.unwrap_or(world.manifest.montecarlo.runs);
    let bar = monte_carlo_bar(runs, args.quiet);
    let progress = |n: u64| bar.set_position(n);
    let opts = ProveOptions {
        runs: Some(runs),
        seed: args.seed,
        threads: args.threads,
        fix: args.fix,
        fix_out: args.out.clone(),
        progress: Some(&progress),
    };
    let mut analysis = prove_world(&world, &opts)?;
    bar.finish_and_clear();

    let trajectories = match &args.out {
        Some(out) => Some(write_reports(&world, &mut analysis, out)?),
        None => None,
    };
    let traj = trajectories.as_deref();
    let agent_line = |name: &str| world.manifest.agent_line(name);
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let text = match args.format {
        Format::Text => report::text::render(&analysis, color, traj),
        Format::Markdown => report::markdown::render(&analysis, traj),
        Format::Html => report::html::render(&analysis, traj),
        Format::Json => report::json(&analysis),
        Format::Sarif => report::sarif::render(&analysis, &agent_line),
    };
    say!("{}", text.trim_end());
    if let (Some(out), Format::Text) = (&args.out, args.format) {
        say!(
            "\nReports in {}: safety-case.md, safety-case.html, prove.json, prove.sarif, trajectories/",
            out.display()
        );
    }
    Ok(if analysis.safe {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
