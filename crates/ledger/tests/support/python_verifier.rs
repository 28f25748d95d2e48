//! Runs the verifier written from the specifications alone (`independent_verifier.py`, beside
//! this directory) on one input. Shared by the ledger's tests and the CLI's, which include this
//! file by path.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Writes `input` to `dir` and runs the script on it: its exit status and output. Exit 2 means
/// it could not run at all (e.g. `cryptography` missing), which fails the test.
pub fn run(input: &Value, dir: &Path) -> (i32, String) {
    // Expanded in the including crate: the ledger and the CLI are both under `crates/`.
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ledger/tests/independent_verifier.py");
    let file = dir.join("input.json");
    std::fs::write(&file, serde_json::to_vec(input).unwrap()).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(&file)
        .output()
        .expect("python3 must be installed to run the independent verifier");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(
        code, 2,
        "the independent verifier cannot run: {text}\n(CI installs it from .ci/pip-requirements.txt)"
    );
    (code, text)
}
