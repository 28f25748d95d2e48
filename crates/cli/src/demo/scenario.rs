//! The GTG-1002 scenario of `examples/gtg1002`, embedded in the binary so the demo needs no
//! files: the catalog, the policies and the proving ground's manifests. The demo writes them
//! under `<dir>/scenario/`, where the manifests' relative paths resolve.

use anyhow::Context;
use std::path::Path;

/// `examples/gtg1002`, embedded so the demo needs no files: (path, contents).
pub fn files() -> [(&'static str, &'static str); 12] {
    [
        (
            "catalog.toml",
            include_str!("../../../../examples/gtg1002/catalog.toml"),
        ),
        (
            "policies/seed.tsp",
            include_str!("../../../../examples/gtg1002/policies/seed.tsp"),
        ),
        (
            "policies/delegation-root.tsp",
            include_str!("../../../../examples/gtg1002/policies/delegation-root.tsp"),
        ),
        (
            "policies/scan-rate-limit.tsp",
            include_str!("../../../../examples/gtg1002/policies/scan-rate-limit.tsp"),
        ),
        (
            "manifest-naive.toml",
            include_str!("../../../../examples/gtg1002/manifest-naive.toml"),
        ),
        (
            "manifest-split.toml",
            include_str!("../../../../examples/gtg1002/manifest-split.toml"),
        ),
        (
            "manifest-fixed.toml",
            include_str!("../../../../examples/gtg1002/manifest-fixed.toml"),
        ),
        (
            "traces/campaign-split.jsonl",
            include_str!("../../../../examples/gtg1002/traces/campaign-split.jsonl"),
        ),
        (
            "traces/campaign-single-agent.jsonl",
            include_str!("../../../../examples/gtg1002/traces/campaign-single-agent.jsonl"),
        ),
        (
            "traces/benign.jsonl",
            include_str!("../../../../examples/gtg1002/traces/benign.jsonl"),
        ),
        (
            "tests/seed.toml",
            include_str!("../../../../examples/gtg1002/tests/seed.toml"),
        ),
        (
            "tests/delegation-root.toml",
            include_str!("../../../../examples/gtg1002/tests/delegation-root.toml"),
        ),
    ]
}

/// Writes the scenario under `dir/scenario/`.
pub fn write(dir: &Path) -> anyhow::Result<()> {
    for (path, text) in files() {
        let p = dir.join("scenario").join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, text).with_context(|| format!("{}: cannot write", p.display()))?;
    }
    Ok(())
}
