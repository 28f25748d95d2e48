//! The shipped example scenarios, as tests and benchmarks load them.

use std::path::PathBuf;
use truststack_policy::Bundle;

/// A file of the GTG-1002 reference scenario (`examples/gtg1002/<rel>`).
pub fn gtg1002(rel: &str) -> PathBuf {
    crate::workspace_root().join("examples/gtg1002").join(rel)
}

/// A file of the prompt-injection scenario (`examples/prompt-injection/<rel>`).
pub fn prompt_injection(rel: &str) -> PathBuf {
    crate::workspace_root()
        .join("examples/prompt-injection")
        .join(rel)
}

/// The GTG-1002 policy files `policies` (relative to the scenario) compiled with its catalog.
pub fn gtg1002_bundle(policies: &[&str]) -> Bundle {
    let files: Vec<PathBuf> = policies.iter().map(|p| gtg1002(p)).collect();
    truststack_policy::load::load_files(&files, Some(&gtg1002("catalog.toml")))
        .unwrap_or_else(|e| panic!("the GTG-1002 example does not load: {e}"))
        .bundle
}

/// The GTG-1002 seed policies with their catalog, compiled once per process (fuzz targets and
/// benchmarks build an engine from it per input).
pub fn gtg1002_seed() -> &'static Bundle {
    static SEED: std::sync::OnceLock<Bundle> = std::sync::OnceLock::new();
    SEED.get_or_init(|| gtg1002_bundle(&["policies/seed.tsp"]))
}
