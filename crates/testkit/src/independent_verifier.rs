//! Runs the verifier written from the specifications alone
//! (`crates/ledger/tests/independent_verifier.py`) on one input, with the project's Python.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Writes `input` to `dir` and runs the script on it: its exit status and output. Exit 2 means
/// it could not run at all, which fails the test.
pub fn run(input: &Value, dir: &Path) -> (i32, String) {
    let script = crate::workspace_root().join("crates/ledger/tests/independent_verifier.py");
    let file = dir.join("input.json");
    std::fs::write(&file, serde_json::to_vec(input).unwrap()).unwrap();
    let out = Command::new(crate::python())
        .arg(&script)
        .arg(&file)
        .output()
        .expect("the project's Python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(code, 2, "the independent verifier cannot run: {text}");
    (code, text)
}
