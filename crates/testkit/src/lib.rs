//! Support shared by TrustStack's tests and benchmarks (never shipped).
//!
//! The tests talk to real peers: the official MCP servers and SDK clients from npm, the Python
//! `mcp` SDK, PyJWT and `cryptography`, and PostgreSQL ([`postgres`]). `bash scripts/install-peers.sh` installs them into the
//! project (`.ci/peers/node_modules`, the virtual environments `.venv` and `.venv-2026`, the
//! latter with the SDK of protocol revision 2026-07-28); `bash scripts/test.sh`
//! installs them and runs the whole suite. A test whose peer is missing fails here, naming that
//! command: it never passes by skipping.

// A failed lookup is a failed test: panicking with the install command is the point.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub mod crash_cycles;
pub mod examples;
pub mod independent_verifier;
pub mod net;
pub mod peers;
pub mod postgres;

/// Writes `contents` to `name` in `dir`; the file's path.
pub fn write_file(
    dir: impl AsRef<std::path::Path>,
    name: impl AsRef<std::path::Path>,
    contents: impl AsRef<[u8]>,
) -> std::path::PathBuf {
    let path = dir.as_ref().join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

pub use peers::{
    chromium, everything_server, filesystem_server, node_modules, python, python_2026,
    python_command, workspace_root, INSTALL_PEERS,
};

/// Asserts that a text contains a pattern; on failure prints both, and an optional message.
///
/// `assert_contains!(stderr, "bad.tsp:1:71")`, `assert_contains!(body, "x", "after {n} calls")`.
#[macro_export]
macro_rules! assert_contains {
    ($text:expr, $pattern:expr $(,)?) => {{
        let text: &str = &$text;
        let pattern = $pattern;
        assert!(
            text.contains(pattern),
            "expected {:?} in:\n{}",
            pattern,
            text
        );
    }};
    ($text:expr, $pattern:expr, $($message:tt)+) => {{
        let text: &str = &$text;
        let pattern = $pattern;
        assert!(
            text.contains(pattern),
            "{}: expected {:?} in:\n{}",
            format_args!($($message)+),
            pattern,
            text
        );
    }};
}
