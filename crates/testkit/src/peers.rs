//! Where the installed test peers are, checked once per test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The command that installs every test peer; named by every "peer missing" failure.
pub const INSTALL_PEERS: &str = "bash scripts/install-peers.sh";

/// The Python modules the tests import, each from the pinned `.ci/peers/requirements.txt`.
const PYTHON_MODULES: &[&str] = &[
    "mcp",
    "jwt",
    "cryptography",
    // The Python client's suite (clients/python/tests).
    "httpx",
    "pytest",
    "langgraph",
    "langchain_core",
    "agents",
    "opentelemetry.proto",
];

/// The npm packages the tests start, each from the pinned `.ci/peers/package-lock.json`.
const NPM_FILES: &[&str] = &[
    "@modelcontextprotocol/server-everything/dist/index.js",
    "@modelcontextprotocol/server-filesystem/dist/index.js",
    "@modelcontextprotocol/sdk/package.json",
    // The MCP conformance suite, and the Node.js 22 it needs (the system's may be older).
    "@modelcontextprotocol/conformance/dist/index.js",
    "node/bin/node",
    // The console's browser tests: Playwright's driver for Debian's Chromium, and the audit.
    "playwright-core/package.json",
    "axe-core/axe.min.js",
];

/// Debian's Chromium, which the console's browser tests drive.
const CHROMIUM: &str = "/usr/bin/chromium";

/// The repository's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// The project's Python interpreter (`.venv/bin/python`), with every Python test peer importable.
pub fn python() -> PathBuf {
    static PYTHON: Found = OnceLock::new();
    found(&PYTHON, find_python)
}

/// The Python of `.venv-2026`, whose `mcp` SDK speaks protocol revision 2026-07-28 (the 1.x SDK
/// of `.venv` does not).
pub fn python_2026() -> PathBuf {
    static PYTHON: Found = OnceLock::new();
    found(&PYTHON, || {
        find_env(
            ".venv-2026",
            "import mcp.types as t; assert t.LATEST_PROTOCOL_VERSION == '2026-07-28', t.LATEST_PROTOCOL_VERSION",
        )
    })
}

/// `.ci/peers/node_modules`, with every npm test peer installed.
pub fn node_modules() -> PathBuf {
    static MODULES: Found = OnceLock::new();
    found(&MODULES, find_node_modules)
}

/// A peer looked up once per test process: where it is, or why it is missing.
type Found = OnceLock<Result<PathBuf, String>>;

/// The peer `cell` holds, looked up with `find` the first time; a missing peer fails the test.
fn found(cell: &Found, find: impl FnOnce() -> Result<PathBuf, String>) -> PathBuf {
    cell.get_or_init(find)
        .clone()
        .unwrap_or_else(|why| missing(&why))
}

/// The entry script of the reference MCP server `@modelcontextprotocol/server-everything`.
pub fn everything_server() -> String {
    peer_script("@modelcontextprotocol/server-everything/dist/index.js")
}

/// The entry script of the reference MCP server `@modelcontextprotocol/server-filesystem`.
pub fn filesystem_server() -> String {
    peer_script("@modelcontextprotocol/server-filesystem/dist/index.js")
}

fn peer_script(rel: &str) -> String {
    node_modules().join(rel).display().to_string()
}

/// Debian's Chromium (`/usr/bin/chromium`), for the browser tests.
pub fn chromium() -> PathBuf {
    let path = PathBuf::from(CHROMIUM);
    if !path.exists() {
        missing(&format!(
            "no Chromium at {CHROMIUM} (Debian package `chromium`)"
        ));
    }
    path
}

fn missing(why: &str) -> ! {
    panic!("test peer missing: {why}\ninstall every test peer with `{INSTALL_PEERS}` (or run the whole suite with `bash scripts/test.sh`)")
}

fn find_python() -> Result<PathBuf, String> {
    find_env(".venv", &format!("import {}", PYTHON_MODULES.join(", ")))
}

/// The Python of the project's virtual environment `dir`, once `check` runs in it.
fn find_env(dir: &str, check: &str) -> Result<PathBuf, String> {
    let python = workspace_root().join(dir).join("bin/python");
    if !python.exists() {
        return Err(format!(
            "no project virtual environment at {}",
            python.display()
        ));
    }
    let out = Command::new(&python)
        .args(["-c", check])
        .output()
        .map_err(|e| format!("{} cannot run: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{check}` fails in {}: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(python)
}

fn find_node_modules() -> Result<PathBuf, String> {
    let modules = workspace_root().join(".ci/peers/node_modules");
    let absent: Vec<&str> = NPM_FILES
        .iter()
        .copied()
        .filter(|f| !modules.join(f).exists())
        .collect();
    if absent.is_empty() {
        Ok(modules)
    } else {
        Err(format!("{} lacks {}", modules.display(), absent.join(", ")))
    }
}

/// A command running the project's Python, with its `bin/` first on `PATH` so that a script that
/// starts `python3` itself (an MCP server named in a gateway configuration) gets the same one.
pub fn python_command() -> Command {
    let python = python();
    let bin = python.parent().map(Path::to_path_buf).unwrap_or_default();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin];
    paths.extend(std::env::split_paths(&path));
    let mut command = Command::new(&python);
    command.env(
        "PATH",
        std::env::join_paths(paths).expect("PATH entries join"),
    );
    command
}
