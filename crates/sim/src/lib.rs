//! The TrustStack proving ground: before an agent system ships, answer "what is the worst an
//! agent could do with the identities and tools we give it, under our policies?" — exhaustively,
//! with evidence, and with the fix proved.
//!
//! - [`manifest`]: the TOML manifest (agents, tools, delegation, catalog, policies, approvers,
//!   goals) and [`world`]: the manifest compiled for simulation.
//! - [`taxonomy`] and [`goal`]: MITRE ATT&CK tactics, the GTG-1002 phases, risk goals.
//! - [`explore`]: exhaustive exploration with the real engine deciding every call, pruned by
//!   [`abstraction`] (state equivalence); [`trajectory`]: replayable evidence.
//! - [`toxic`]: minimal tool sets per identity or orchestration that reach a goal unguarded.
//! - [`quant`]: time-to-goal under rate limits; [`montecarlo`]: stochastic agents.
//! - [`fix`]: remediation, proved in the same run; [`report`]: Markdown, HTML, JSON, SARIF.
//!
//! ```no_run
//! use truststack_sim::{prove, ProveOptions};
//! let analysis = prove(std::path::Path::new("examples/gtg1002/manifest-naive.toml"), &ProveOptions::default())?;
//! assert!(!analysis.safe);
//! # Ok::<(), truststack_sim::ProveError>(())
//! ```

pub mod abstraction;
pub mod analysis;
pub mod clock;
pub mod explore;
pub mod fix;
pub mod goal;
mod liveness;
pub mod manifest;
pub mod montecarlo;
pub mod quant;
pub mod report;
pub mod rng;
pub mod synth;
pub mod taxonomy;
pub mod toxic;
pub mod trajectory;
pub mod world;

pub use analysis::{analyse, Analysis, Options, Status};
pub use fix::{remediate, FixError, FixReport};
pub use manifest::{Manifest, ManifestError};
pub use montecarlo::McOptions;
pub use world::World;

use std::path::{Path, PathBuf};

/// Why `prove` failed.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Fix(#[from] FixError),
}

/// What `prove` does beyond the exhaustive analysis.
#[derive(Default)]
pub struct ProveOptions<'a> {
    /// Monte Carlo runs (`None`: the manifest's setting; `Some(0)`: none).
    pub runs: Option<u64>,
    /// Monte Carlo seed (`None`: the manifest's).
    pub seed: Option<u64>,
    /// Monte Carlo worker threads (`None`: every core).
    pub threads: Option<usize>,
    /// Propose and prove a fix.
    pub fix: bool,
    /// Where the fixed manifest and policies are written.
    pub fix_out: Option<PathBuf>,
    /// Told how many Monte Carlo runs are done.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

/// Loads, analyses and (if asked) fixes a manifest.
pub fn prove(path: &Path, opts: &ProveOptions) -> Result<Analysis, ProveError> {
    let world = World::build(Manifest::load(path)?)?;
    Ok(prove_world(&world, opts)?)
}

/// [`prove`] on an already compiled manifest.
pub fn prove_world(world: &World, opts: &ProveOptions) -> Result<Analysis, FixError> {
    let mut mc = McOptions::from_world(world);
    if let Some(r) = opts.runs {
        mc.runs = r;
    }
    if let Some(s) = opts.seed {
        mc.seed = s;
    }
    if let Some(t) = opts.threads {
        mc.threads = t.max(1);
    }
    let mut analysis = analyse(
        world,
        &Options {
            toxic: true,
            montecarlo: Some(mc),
            progress: opts.progress,
        },
    );
    if opts.fix {
        analysis.fix = Some(Box::new(remediate(
            world,
            &analysis,
            opts.fix_out.as_deref(),
        )?));
    }
    Ok(analysis)
}
