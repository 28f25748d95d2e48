//! Every shell transcript in README.md and docs/*.md runs here, as written, and its output is
//! compared with what the page shows, so the documentation cannot drift from the product.
//!
//! # What runs
//!
//! - In every page: each ```` ```text ```` (or ```` ```console ````) block holding lines that start
//!   with `$ `. A `$ ` line is a command (a line ending in `\` continues it, and so does the body
//!   of a here-document `<<'EOF'` … `EOF`); the lines up to the next `$ ` line are its output.
//!   Blocks without `$ ` lines (formats, grammars, config files) are not run.
//! - In the runbooks listed in [`RUNBOOKS`] (the quickstart, the Python client's page and its
//!   LangGraph and OpenAI Agents SDK pages): each ```` ```sh ```` block too, as one step; when the
//!   next block is a ```` ```text ```` block without `$ ` lines, that block is the output of the
//!   whole `sh` block, else its output is not compared. An `sh` block runs with `set -e -o
//!   pipefail`, like a script.
//! - Every other ```` ```sh ```` block is not run but checked (next section).
//!
//! So every command the pages show is run or checked: a command that runs in seconds belongs in
//! a transcript or a runbook step, where its output is compared too.
//!
//! All the steps of one page run in one `bash`, in order, in a fresh directory where `examples/`
//! and `crates/` are links to the repository's, with the `truststack` built for this test first
//! on `PATH`: a step sees the files, variables and background processes of the steps before it,
//! so a transcript must create what it uses (or use what `examples/` ships). Background processes
//! are stopped when the page ends. stdout and stderr are compared together, as a terminal shows
//! them.
//!
//! A command must exit 0, unless its output shows the failure (its first or last line starts
//! with one of [`FAILURE_LINES`], such as `error:`, the CLI's ways of saying so) or the command
//! after it reads `$?`; a command that shows a failure must fail, unless it reads `$?` itself
//! (`cmd; echo "exit $?"`).
//!
//! # What is checked without running
//!
//! The ```` ```sh ```` blocks outside the runbooks hold what takes minutes to hours or a release
//! build: benchmarks, fuzzing, the crash-cycles and AgentDojo harnesses, `bash scripts/test.sh`
//! (which runs this suite), the README's `cargo run --release -- demo` (run by its transcript).
//! So that they cannot drift either, `long_commands_name_real_targets` checks, command by command
//! (`&&`, `;` and `|` split them; `NAME=value`, `nice -n N` and `/usr/bin/time -v` in front are
//! skipped), that what each names exists:
//!
//! - `cargo bench -p P --bench B` → package P has the bench target B (`cargo metadata`); a
//!   criterion filter after `--` (`fix/`, `durable_append`, `a|b`) names a group or benchmark its
//!   source declares (`"fix"`);
//! - `cargo build`/`cargo run` `-p P` → P is a package of the workspace; `--example E`, and
//!   `target/…/examples/E` → the example exists, and every `--option` given to it is a field of
//!   its clap arguments and every bare word (`[windows]`) a string its source compares with. The
//!   examples are not run: the suite does not build them (and builds nothing in release);
//! - `cargo run --release -- SUB` → `truststack SUB --help` succeeds;
//! - `cargo test -p P --test T` → package P has the test target T;
//! - `cargo fuzz run T` → `fuzz/fuzz_targets/T.rs` exists and `fuzz/Cargo.toml` declares T;
//!   `cargo fuzz build` → `fuzz/` is a cargo-fuzz crate; `cargo install cargo-fuzz` is accepted;
//! - `bash S`, `python3 S`, `python S`, `DIR/bin/python S` → the script S exists; `DIR/bin/pip
//!   install -r F` → F exists; `python3 -m venv DIR` is accepted;
//! - `cd D` → D exists, and the rest of the line runs there;
//! - any argument under `examples/`, `crates/`, `bench/`, `clients/`, `scripts/`, `docs/` or
//!   `fuzz/` exists.
//!
//! A `truststack` command is refused there (it runs in seconds: show it in a transcript), and so
//! is any form the checker does not know: the failure says to write a transcript or to teach
//! `check_command`.
//!
//! # Matching output
//!
//! - `…` on a line by itself stands for any number of lines; `…` inside a line for any text
//!   (snapbox's `...` and `[..]`, which may also be written directly).
//! - Values that differ from run to run are replaced, in the page and in the real output alike,
//!   by a placeholder before comparing (see [`PLACEHOLDERS`]): timestamps and Unix times, `ls -l`
//!   dates, durations, decision/approval/call ids, long hex strings (hashes, session ids), ledger
//!   key ids, and base64 strings of 20 characters or more with a digit or a capital (keys,
//!   signatures, Merkle hashes, credential ids). So a page can show real values from a real run, and only their shape
//!   is checked. The run's directory is shown relative (as the page's working directory), and
//!   trailing blanks are ignored. Anything else is compared exactly: write `…` where output is
//!   abridged.
//!
//! # What the harness changes
//!
//! - `cargo run --release --` runs the `truststack` under test, and `cargo build --release` (or
//!   `cargo build`) does nothing (the test suite does not build a second binary).
//! - The ports 8181 (server), 8808 (gateway) and 4318 (OTLP receiver) become free ports chosen
//!   for the run, in commands and in output; `TRUSTSTACK_SERVER` points at the server's.
//! - `npm install … @modelcontextprotocol/server-filesystem@…` links the copy
//!   `scripts/install-peers.sh` installed into `.ci/peers/node_modules`; the project's Python
//!   environment `.venv/bin` comes first on `PATH`, and `pip install -e clients/python` puts
//!   the client's sources on `PYTHONPATH` instead of installing into it (as the client's own
//!   tests import it). A page that needs a peer asks the testkit for it first, so a missing peer
//!   fails naming the install command.
//!
//! # Adding a transcript
//!
//! Write it in a ```` ```text ```` block as a terminal shows it, run `cargo test -p truststack
//! --test docs`, and paste the real output where it differs (a failure names the page's line,
//! shows the difference and prints the real output to paste; keep `…` where you abridge). A new
//! page with a transcript gets its `#[test]` below, which
//! `every_page_with_a_transcript_is_checked` insists on. Start a server in the background with
//! its stderr in a log, then wait for it with a bounded loop that fails loudly when it died, as
//! the README's server section and the quickstart's gateway step do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use regex::{Captures, Regex};
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};
use truststack_testkit::net::free_port;
use truststack_testkit::write_file;

mod common;

/// Pages whose ```sh blocks are run too, in order, as a new user would.
const RUNBOOKS: &[&str] = &[
    "docs/quickstart.md",
    "docs/python-client.md",
    "docs/langgraph.md",
    "docs/openai-agents.md",
];

/// How long one page may take before its processes are killed and the test fails.
const PAGE_TIMEOUT: Duration = Duration::from_secs(300);

/// Ports the pages use, replaced by free ones for the run.
const DOC_PORTS: &[u16] = &[8181, 8808, 4318];

/// One step of a page: a command (or an `sh` block) and the output the page shows for it.
#[derive(Debug)]
struct Step {
    /// 1-based line of the page where the step starts.
    line: usize,
    command: String,
    /// `None`: not compared (an `sh` block without an output block).
    expected: Option<String>,
    /// An `sh` block: runs with `set -e -o pipefail`.
    script: bool,
}

fn fence_info(line: &str) -> Option<&str> {
    line.strip_prefix("```").map(str::trim)
}

/// The fenced blocks of a page's lines: each one's info string and the 0-based range of its
/// body's lines.
fn fences<'a>(lines: &[&'a str]) -> Vec<(&'a str, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = fence_info(lines[i]) else {
            i += 1;
            continue;
        };
        let start = i + 1;
        let end = (start..lines.len())
            .find(|&j| lines[j].trim_end() == "```")
            .unwrap_or(lines.len());
        out.push((info, start..end));
        i = end + 1;
    }
    out
}

/// The steps of a page, in order.
fn steps(page: &str, runbook: bool) -> Vec<Step> {
    let lines: Vec<&str> = page.lines().collect();
    let mut out = Vec::new();
    for (info, std::ops::Range { start, end }) in fences(&lines) {
        let body = &lines[start..end];
        match info {
            "text" | "console" if body.iter().any(|l| l.starts_with("$ ")) => {
                out.extend(transcript(body, start + 1));
            }
            "sh" if runbook => {
                let expected = output_block(&lines, end + 1);
                out.push(Step {
                    line: start,
                    command: body.join("\n"),
                    expected,
                    script: true,
                });
            }
            _ => {}
        }
    }
    out
}

/// The ```text block that follows line `from` (blank lines between allowed), if it is output.
fn output_block(lines: &[&str], from: usize) -> Option<String> {
    let mut j = from;
    while lines.get(j).is_some_and(|l| l.trim().is_empty()) {
        j += 1;
    }
    if fence_info(lines.get(j)?)? != "text" {
        return None;
    }
    let body: Vec<&str> = lines[j + 1..]
        .iter()
        .take_while(|l| l.trim_end() != "```")
        .copied()
        .collect();
    if body.iter().any(|l| l.starts_with("$ ")) {
        return None;
    }
    Some(body.join("\n"))
}

static HEREDOC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"<<-?\s*['"]?([A-Za-z_][A-Za-z0-9_]*)['"]?"#).unwrap());

/// The steps of one ```text transcript whose first line is page line `first_line`.
fn transcript(body: &[&str], first_line: usize) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let Some(first) = body[i].strip_prefix("$ ") else {
            // Output before the first command of a block: nothing runs it; keep it visible.
            if let Some(step) = out.last_mut() {
                let expected = step.expected.get_or_insert_with(String::new);
                if !expected.is_empty() {
                    expected.push('\n');
                }
                expected.push_str(body[i]);
            }
            i += 1;
            continue;
        };
        let line = first_line + i;
        let mut command = first.to_string();
        let mut last = first;
        i += 1;
        while last.ends_with('\\') && i < body.len() {
            command.push('\n');
            command.push_str(body[i]);
            last = body[i];
            i += 1;
        }
        if let Some(word) = HEREDOC.captures(&command).map(|c| c[1].to_string()) {
            while i < body.len() {
                command.push('\n');
                command.push_str(body[i]);
                i += 1;
                if body[i - 1].trim() == word {
                    break;
                }
            }
        }
        let mut expected = Vec::new();
        while i < body.len() && !body[i].starts_with("$ ") {
            expected.push(body[i]);
            i += 1;
        }
        out.push(Step {
            line,
            command,
            expected: Some(expected.join("\n")),
            script: false,
        });
    }
    out
}

/// What varies from run to run, and the placeholder it becomes on both sides.
const PLACEHOLDERS: &[(&str, &str)] = &[
    // RFC 3339 timestamps.
    (
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
        "[TIME]",
    ),
    // Unix times (JWT `iat`, `exp`, revocation times), 2023 to 2033.
    (r"\b1[7-9]\d{8}\b", "[EPOCH]"),
    // `ls -l` modification dates.
    (r"\b[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}\b", "[DATE]"),
    // Decision, approval, call and response ids: `d-1a211bbbdd0-1`.
    (r"\b[acdr]-[0-9a-f]{10,12}-\d+\b", "[ID]"),
    // Hashes and session ids.
    (r"\b[0-9a-f]{32,}\b", "[HEX]"),
    // Ledger key ids in verifier keys: `truststack.local/ledger+685dc0a8`.
    (r"/ledger\+[0-9a-f]{8}\b", "/ledger+[KEYID]"),
    // Durations measured or counted down: `(0.7 ms)`, `2.05s`, `(in 59m 59s)`.
    (
        r"\b\d+h \d+m\b|\b\d+m \d+s\b|\b\d+(\.\d+)? ?(ms|µs|s)\b",
        "[DUR]",
    ),
];

static PLACEHOLDER_RES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    PLACEHOLDERS
        .iter()
        .map(|(re, with)| (Regex::new(re).unwrap(), *with))
        .collect()
});

/// Base64 and base64url runs; replaced only when they hold a digit or a capital, so that long
/// hyphenated names (`no-exfiltration-after-prod-read`) stay compared.
static BASE64: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/_-]{20,}={0,2}").unwrap());

fn placeholders(text: &str) -> String {
    let mut text = text.to_string();
    for (re, with) in PLACEHOLDER_RES.iter() {
        text = re.replace_all(&text, *with).into_owned();
    }
    BASE64
        .replace_all(&text, |c: &Captures| {
            let s = &c[0];
            if s.chars()
                .any(|ch| ch.is_ascii_digit() || ch.is_ascii_uppercase())
            {
                "[B64]".to_string()
            } else {
                s.to_string()
            }
        })
        .into_owned()
}

/// The page's `…` as snapbox's wildcards.
fn wildcards(expected: &str) -> String {
    expected
        .lines()
        .map(|l| {
            if l.trim() == "…" {
                "...".to_string()
            } else {
                l.replace('…', "[..]")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Ports of the page → ports of this run.
fn with_ports(text: &str, ports: &[(u16, u16)]) -> String {
    let mut text = text.to_string();
    for (from, to) in ports {
        text = text.replace(&from.to_string(), &to.to_string());
    }
    text
}

/// The harness's prelude: the substitutions described in the module documentation.
fn prelude(root: &Path, bin_dir: &Path, server_port: u16) -> String {
    let peers = root.join(".ci/peers/node_modules");
    let venv = root.join(".venv/bin");
    let install = truststack_testkit::INSTALL_PEERS;
    format!(
        r#"export PATH={bin}:{venv}:"$PATH" NO_COLOR=1 TRUSTSTACK_SERVER=http://127.0.0.1:{server_port} TMPDIR="$PWD/../tmp"
mkdir -p "$TMPDIR"
unset TRUSTSTACK_TOKEN TRUSTSTACK_ISSUER_DIR
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
cargo() {{
  case "$*" in
    "build" | "build --release") ;;
    "run --release -- "*) shift 3; truststack "$@" ;;
    *) command cargo "$@" ;;
  esac
}}
npm() {{
  case "$*" in
    "install "*"@modelcontextprotocol/server-filesystem"*)
      if [ ! -x {peers}/.bin/mcp-server-filesystem ]; then
        echo "the npm peers are missing: run {install}" >&2; return 1
      fi
      local prefix=.; [ "$2" = --silent ] && [ "$3" = --prefix ] && prefix=$4
      mkdir -p "$prefix" && ln -sfn {peers} "$prefix/node_modules" ;;
    *) command npm "$@" ;;
  esac
}}
pip() {{
  case "$*" in
    "install -e clients/python") export PYTHONPATH={client}${{PYTHONPATH:+:$PYTHONPATH}} ;;
    *) command pip "$@" ;;
  esac
}}
__rc=0
__set_rc() {{ return "$1"; }}
"#,
        bin = sh_quote(bin_dir),
        venv = sh_quote(&venv),
        peers = sh_quote(&peers),
        client = sh_quote(&root.join("clients/python/src")),
    )
}

fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// How the CLI says a command failed, on the first or the last line of its output.
const FAILURE_LINES: &[&str] = &["error:", "FAILED", "NOT VALID", "Verdict NOT SAFE"];

/// Whether the shown output says the command failed.
fn shows_failure(expected: &str) -> bool {
    let mut lines = expected.lines().map(str::trim).filter(|l| !l.is_empty());
    let (first, last) = (lines.next(), lines.next_back());
    [first, last]
        .into_iter()
        .flatten()
        .any(|l| FAILURE_LINES.iter().any(|p| l.starts_with(p)))
}

/// Trailing blanks are not visible in a page, so they are not compared.
fn trim_lines(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs every step of one page and returns the failures, described.
fn run_page(rel: &str) -> Vec<String> {
    let root = truststack_testkit::workspace_root();
    let page = std::fs::read_to_string(root.join(rel)).unwrap();
    let steps = steps(&page, RUNBOOKS.contains(&rel));
    assert!(!steps.is_empty(), "{rel}: no transcript found");

    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("work");
    let outs = work.path().join("out");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&outs).unwrap();
    for link in ["examples", "crates"] {
        std::os::unix::fs::symlink(root.join(link), dir.join(link)).unwrap();
    }
    let ports: Vec<(u16, u16)> = DOC_PORTS.iter().map(|&p| (p, free_port())).collect();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_truststack"));
    let mut script = prelude(&root, bin.parent().unwrap(), ports[0].1);
    for (n, step) in steps.iter().enumerate() {
        let out = outs.join(n.to_string());
        let command = with_ports(&step.command, &ports);
        let (on, off) = if step.script {
            ("set -e -o pipefail\n", "\nset +e +o pipefail")
        } else {
            ("", "")
        };
        let _ = write!(
            script,
            "\n# {rel}:{line}\n__set_rc \"$__rc\"\n{on}{{\n{command}\n}} > {out} 2>&1 < /dev/null\n__rc=$?{off}\necho \"$__rc\" > {out}.rc\n",
            line = step.line,
            out = sh_quote(&out),
        );
    }
    let script_path = write_file(work.path(), "page.sh", &script);

    let mut child = Command::new("bash")
        .arg(&script_path)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let timed_out = loop {
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        if started.elapsed() > PAGE_TIMEOUT {
            break true;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever the page left running (a server, an MCP peer it started) goes with it.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let output = child.wait_with_output().unwrap();

    let mut failures = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        let out = outs.join(n.to_string());
        let where_ = format!("{rel}:{}", step.line);
        let Ok(rc) = std::fs::read_to_string(out.with_extension("rc")) else {
            let actual = std::fs::read_to_string(&out).unwrap_or_default();
            failures.push(format!(
                "{where_}: the step did not finish ({}){}\n--- its output:\n{actual}\n--- the shell's stderr:\n{}",
                if timed_out { format!("the page took more than {PAGE_TIMEOUT:?}") } else { format!("the shell exited {}", output.status) },
                if step.script { ", a command of the sh block failed" } else { "" },
                String::from_utf8_lossy(&output.stderr),
            ));
            break;
        };
        let rc: i32 = rc.trim().parse().unwrap();
        let raw = std::fs::read_to_string(&out).unwrap();
        // The run's own directory is shown as the page's working directory.
        let actual = with_ports(
            &raw.replace(&format!("{}/", dir.display()), ""),
            &ports.iter().map(|&(a, b)| (b, a)).collect::<Vec<_>>(),
        );
        let next_reads_status = steps
            .get(n + 1)
            .is_some_and(|s| !s.script && s.command.contains("$?"));
        let shown_failure = step.expected.as_deref().is_some_and(shows_failure);
        if rc != 0 && !shown_failure && !next_reads_status {
            failures.push(format!(
                "{where_}: `{}` exited {rc}; its output:\n{raw}",
                step.command
            ));
            continue;
        }
        if rc == 0 && shown_failure && !step.command.contains("$?") {
            failures.push(format!(
                "{where_}: `{}` exited 0, but the page shows a failure; its output:\n{raw}",
                step.command
            ));
            continue;
        }
        let Some(expected) = &step.expected else {
            continue;
        };
        let expected = wildcards(&placeholders(&trim_lines(expected)));
        let compared = placeholders(&trim_lines(&actual));
        if let Err(e) = snapbox::Assert::new().normalize_paths(false).try_eq(
            Some(&where_),
            compared.into(),
            expected.into(),
        ) {
            failures.push(format!(
                "{where_}: `{}`\n{e}\n--- the real output, to paste:\n{actual_raw}\n--- end",
                step.command,
                actual_raw = actual.trim_end(),
            ));
        }
    }
    failures
}

fn check(rel: &str) {
    let failures = run_page(rel);
    assert!(
        failures.is_empty(),
        "{} step(s) of {rel} do not run as written:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn readme() {
    check("README.md");
}

#[test]
fn quickstart() {
    truststack_testkit::node_modules();
    check("docs/quickstart.md");
}

#[test]
fn gateway() {
    // The page pins the tools of the Python example server.
    truststack_testkit::python();
    check("docs/gateway.md");
}

#[test]
fn identity() {
    check("docs/identity.md");
}

#[test]
fn ledger() {
    // The page runs the independent Python verifier.
    truststack_testkit::python();
    check("docs/ledger.md");
}

#[test]
fn policy_language() {
    check("docs/policy-language.md");
}

#[test]
fn proving_ground() {
    check("docs/proving-ground.md");
}

#[test]
fn server() {
    check("docs/server.md");
}

#[test]
fn python_client() {
    // The page runs a script against the client, with the project's Python.
    truststack_testkit::python();
    check("docs/python-client.md");
}

#[test]
fn langgraph() {
    // The page runs a LangGraph graph (scripted model) against the client.
    truststack_testkit::python();
    check("docs/langgraph.md");
}

#[test]
fn openai_agents() {
    // The page runs OpenAI Agents SDK agents (scripted models) against the client.
    truststack_testkit::python();
    check("docs/openai-agents.md");
}

#[test]
fn opentelemetry() {
    // The page's OTLP receiver is Python, with the `opentelemetry-proto` package.
    truststack_testkit::python();
    check("docs/opentelemetry.md");
}

#[test]
fn benchmarks() {
    check("docs/benchmarks.md");
}

/// Every page with a transcript has its test above, so a new page cannot be missed.
#[test]
fn every_page_with_a_transcript_is_checked() {
    let checked = [
        "README.md",
        "docs/quickstart.md",
        "docs/gateway.md",
        "docs/identity.md",
        "docs/ledger.md",
        "docs/policy-language.md",
        "docs/proving-ground.md",
        "docs/server.md",
        "docs/python-client.md",
        "docs/langgraph.md",
        "docs/openai-agents.md",
        "docs/benchmarks.md",
        "docs/opentelemetry.md",
    ];
    let root = common::root();
    for page in pages(&root) {
        let text = std::fs::read_to_string(root.join(&page)).unwrap();
        let runs = !steps(&text, RUNBOOKS.contains(&page.as_str())).is_empty();
        assert_eq!(
            runs,
            checked.contains(&page.as_str()),
            "{page}: a page with a transcript needs a test in crates/cli/tests/docs.rs (and one without none)"
        );
    }
}

#[test]
fn parses_transcripts() {
    let page = "intro\n```text\n$ echo a \\\n    b\na b\n$ cat > f <<'EOF'\nx\nEOF\n$ true\n```\n```sh\necho hi\n```\n\n```text\nhi\n```\n";
    let steps = steps(page, true);
    let got: Vec<(usize, &str, Option<&str>, bool)> = steps
        .iter()
        .map(|s| (s.line, s.command.as_str(), s.expected.as_deref(), s.script))
        .collect();
    assert_eq!(
        got,
        [
            (3, "echo a \\\n    b", Some("a b"), false),
            (6, "cat > f <<'EOF'\nx\nEOF", Some(""), false),
            (9, "true", Some(""), false),
            (11, "echo hi", Some("hi"), true),
        ]
    );
}

#[test]
fn placeholders_cover_what_varies_and_keep_names() {
    assert_eq!(
        placeholders("a-1a211bbc7cb-4 at 2026-11-25T08:19:08.779Z (in 59m 59s), took 0.7 ms"),
        "[ID] at [TIME] (in [DUR]), took [DUR]"
    );
    assert_eq!(
        placeholders(
            "truststack.local/ledger+685dc0a8+AVveW4hoMVhu9XXDNYtvDPLmRMxRrf9GQFGpblvtQoP4"
        ),
        "truststack.local/ledger+[KEYID][B64]"
    );
    assert_eq!(
        placeholders("policy no-exfiltration-after-prod-read"),
        "policy no-exfiltration-after-prod-read"
    );
    assert_eq!(wildcards("a…b\n  …\nc"), "a[..]b\n...\nc");
}

// ---------------------------------------------------------------------------------------------
// The commands the suite does not run: checked for what they name.

/// The ```` ```sh ```` blocks the suite does not run (every one outside [`RUNBOOKS`]): each
/// command, its continuation lines joined, with its 1-based page line.
fn unrun_commands(page: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = page.lines().collect();
    let mut out = Vec::new();
    for (info, std::ops::Range { start, end }) in fences(&lines) {
        if info == "sh" {
            let mut j = start;
            while j < end {
                let line = j + 1;
                let mut command = lines[j].trim_end().to_string();
                j += 1;
                while command.ends_with('\\') && j < end {
                    command.pop();
                    command.push(' ');
                    command.push_str(lines[j].trim());
                    j += 1;
                }
                // A here-document's body is data, not commands.
                if let Some(word) = HEREDOC.captures(&command).map(|c| c[1].to_string()) {
                    while j < end && lines[j].trim() != word {
                        j += 1;
                    }
                    j += 1;
                }
                let trimmed = command.trim();
                if !trimmed.is_empty() && !trimmed.starts_with('#') {
                    out.push((line, trimmed.to_string()));
                }
            }
        }
    }
    out
}

/// A command line as the shell splits it: simple commands (split at `&&`, `||`, `;` and `|`),
/// each a list of words with their quotes removed; redirections and a trailing comment dropped.
fn simple_commands(line: &str) -> Vec<Vec<String>> {
    let mut commands = vec![Vec::new()];
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    let mut redirect = false;
    let end_word =
        |word: &mut Option<String>, commands: &mut Vec<Vec<String>>, redirect: &mut bool| {
            if let Some(w) = word.take() {
                if std::mem::take(redirect) {
                    return;
                }
                commands.last_mut().unwrap().push(w);
            }
        };
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let w = word.get_or_insert_with(String::new);
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    w.push(q);
                }
            }
            '\\' => {
                if let Some(next) = chars.next() {
                    word.get_or_insert_with(String::new).push(next);
                }
            }
            '#' if word.is_none() => break,
            ' ' | '\t' => end_word(&mut word, &mut commands, &mut redirect),
            '&' | '|' | ';' => {
                end_word(&mut word, &mut commands, &mut redirect);
                if chars.peek() == Some(&c) {
                    chars.next();
                }
                commands.push(Vec::new());
            }
            '>' | '<' => {
                // `2>`: the descriptor is part of the redirection.
                if word
                    .as_deref()
                    .is_some_and(|w| w.chars().all(|d| d.is_ascii_digit()))
                {
                    word = None;
                }
                end_word(&mut word, &mut commands, &mut redirect);
                while chars.peek().is_some_and(|&n| n == '>' || n == '&') {
                    chars.next();
                }
                redirect = true;
            }
            _ => word.get_or_insert_with(String::new).push(c),
        }
    }
    end_word(&mut word, &mut commands, &mut redirect);
    commands.retain(|c| !c.is_empty());
    commands
}

/// The workspace's packages, as `cargo metadata` describes them.
struct Workspace {
    /// Every target: (package, kind, target name, source path).
    targets: Vec<(String, String, String, PathBuf)>,
}

impl Workspace {
    fn load(root: &Path) -> Workspace {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "metadata",
                "--offline",
                "--no-deps",
                "--format-version",
                "1",
            ])
            .current_dir(root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo metadata: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut targets = Vec::new();
        for package in meta["packages"].as_array().unwrap() {
            let name = package["name"].as_str().unwrap();
            for target in package["targets"].as_array().unwrap() {
                for kind in target["kind"].as_array().unwrap() {
                    targets.push((
                        name.to_string(),
                        kind.as_str().unwrap().to_string(),
                        target["name"].as_str().unwrap().to_string(),
                        PathBuf::from(target["src_path"].as_str().unwrap()),
                    ));
                }
            }
        }
        Workspace { targets }
    }

    fn has_package(&self, package: &str) -> bool {
        self.targets.iter().any(|(p, ..)| p == package)
    }

    /// The source of `package`'s target `name` of `kind` (any package when `None`).
    fn target(&self, package: Option<&str>, kind: &str, name: &str) -> Result<&Path, String> {
        self.targets
            .iter()
            .find(|(p, k, n, _)| package.is_none_or(|want| p == want) && k == kind && n == name)
            .map(|(.., src)| src.as_path())
            .ok_or_else(|| match package {
                Some(p) => format!("package `{p}` has no {kind} `{name}`"),
                None => format!("no package of the workspace has an {kind} `{name}`"),
            })
    }
}

/// The value of option `name` (`-p P`, `--bench B`) among `words`.
fn option<'a>(words: &'a [String], names: &[&str]) -> Option<&'a str> {
    words
        .iter()
        .position(|w| names.contains(&w.as_str()))
        .and_then(|i| words.get(i + 1))
        .map(String::as_str)
}

/// What follows `--` in a cargo command: the arguments of the program it runs.
fn program_args(words: &[String]) -> &[String] {
    words
        .iter()
        .position(|w| w == "--")
        .map_or(&[][..], |i| &words[i + 1..])
}

/// Every `--flag` (but `--help`) given to an example is a field of its clap arguments, and every
/// bare word it takes (`[windows]`) one its source compares with.
fn example_accepts(src: &Path, args: &[String]) -> Result<(), String> {
    let source = std::fs::read_to_string(src).unwrap();
    let mut args = args.iter().peekable();
    while let Some(arg) = args.next() {
        if let Some(flag) = arg.strip_prefix("--") {
            let field = format!("{}:", flag.replace('-', "_"));
            if flag != "help" && !source.contains(&field) {
                return Err(format!("{} has no option `{arg}`", src.display()));
            }
            // Its value.
            if args.peek().is_some_and(|v| !v.starts_with('-')) {
                args.next();
            }
        } else {
            let word = arg.trim_start_matches('[').trim_end_matches(']');
            if word.chars().all(|c| c.is_ascii_lowercase())
                && !source.contains(&format!("\"{word}\""))
            {
                return Err(format!("{} does not read the word `{word}`", src.display()));
            }
        }
    }
    Ok(())
}

/// The benchmark groups a criterion filter selects are named in the bench's source: `fix/`
/// and `durable_append` need `"fix"` and `"durable_append"` (alternatives `a|b` each).
fn bench_filters(src: &Path, args: &[String]) -> Result<(), String> {
    let source = std::fs::read_to_string(src).unwrap();
    let mut words = args.iter().peekable();
    while let Some(arg) = words.next() {
        if arg.starts_with('-') {
            // The value of a criterion option (`--warm-up-time 1`).
            if words.peek().is_some_and(|v| v.parse::<f64>().is_ok()) {
                words.next();
            }
            continue;
        }
        for filter in arg.split('|') {
            let group = filter.split('/').next().unwrap_or(filter);
            if !source.contains(&format!("\"{group}")) {
                return Err(format!(
                    "{} names no benchmark `{group}` (the filter `{arg}`)",
                    src.display()
                ));
            }
        }
    }
    Ok(())
}

/// Checks one simple command of an unrun `sh` block; `cwd` is where the line runs, relative to
/// the repository (a `cd` moves it).
fn check_command(
    ws: &Workspace,
    root: &Path,
    cwd: &mut PathBuf,
    words: &[String],
) -> Result<(), String> {
    // Variables set for the command, and the wrappers that only change how it runs.
    let mut w: &[String] = words;
    loop {
        match w {
            [first, rest @ ..] if first.contains('=') && !first.starts_with('-') => w = rest,
            [nice, n, _, rest @ ..] if nice == "nice" && n == "-n" => w = rest,
            [time, v, rest @ ..] if time == "/usr/bin/time" && v == "-v" => w = rest,
            _ => break,
        }
    }
    let exists = |p: &str| -> Result<(), String> {
        if root.join(&*cwd).join(p).exists() {
            Ok(())
        } else {
            Err(format!("`{p}` does not exist"))
        }
    };
    // Paths into the repository, wherever they appear, exist.
    const TOP: &[&str] = &[
        "examples/",
        "crates/",
        "bench/",
        "clients/",
        "scripts/",
        "docs/",
        "fuzz/",
    ];
    for arg in w.iter().skip(1) {
        if TOP.iter().any(|t| arg.starts_with(t)) {
            exists(arg)?;
        }
    }
    let words: Vec<&str> = w.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["cd", dir] => {
            exists(dir)?;
            cwd.push(dir);
            Ok(())
        }
        ["cargo", "install", "cargo-fuzz"] => Ok(()),
        ["cargo", "fuzz", rest @ ..] => {
            let fuzz = if cwd.ends_with("fuzz") {
                root.join(&*cwd)
            } else {
                root.join(&*cwd).join("fuzz")
            };
            let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml"))
                .map_err(|e| format!("{}: {e}", fuzz.join("Cargo.toml").display()))?;
            if !manifest.contains("cargo-fuzz = true") {
                return Err(format!("{} is not a cargo-fuzz crate", fuzz.display()));
            }
            match rest {
                ["build", opts @ ..] if opts.iter().all(|o| o.starts_with('-')) => Ok(()),
                ["run", args @ ..] => {
                    let target = args
                        .iter()
                        .find(|a| !a.starts_with('-'))
                        .ok_or("`cargo fuzz run` names no target")?;
                    if !fuzz.join(format!("fuzz_targets/{target}.rs")).exists() {
                        return Err(format!("no fuzz/fuzz_targets/{target}.rs"));
                    }
                    if !manifest.contains(&format!("name = \"{target}\"")) {
                        return Err(format!("fuzz/Cargo.toml declares no target `{target}`"));
                    }
                    Ok(())
                }
                _ => Err("a `cargo fuzz` form the checker does not know".to_string()),
            }
        }
        ["cargo", "bench", ..] => {
            let package = option(w, &["-p", "--package"]).ok_or("`cargo bench` without -p")?;
            let bench = option(w, &["--bench"]).ok_or("`cargo bench` without --bench")?;
            let src = ws.target(Some(package), "bench", bench)?;
            bench_filters(src, program_args(w))
        }
        ["cargo", "test", ..] => {
            let package = option(w, &["-p", "--package"]).ok_or("`cargo test` without -p")?;
            let test = option(w, &["--test"]).ok_or("`cargo test` without --test")?;
            ws.target(Some(package), "test", test).map(drop)
        }
        ["cargo", "build" | "run", ..] => {
            let package = option(w, &["-p", "--package"]);
            if let Some(p) = package {
                if !ws.has_package(p) {
                    return Err(format!("no package `{p}` in the workspace"));
                }
            }
            if let Some(example) = option(w, &["--example"]) {
                let src = ws.target(package, "example", example)?;
                return example_accepts(src, program_args(w));
            }
            // `cargo run --release -- SUBCOMMAND …`: the CLI has that subcommand.
            match (words[1], program_args(w).first()) {
                ("run", Some(sub)) => truststack_has(sub),
                ("build", None) => Ok(()),
                _ => Err("a `cargo` form the checker does not know".to_string()),
            }
        }
        ["truststack", ..] => Err(
            "a `truststack` command runs in seconds: show it in a ```text transcript".to_string(),
        ),
        ["python3", "-m", "venv", _] => Ok(()),
        [pip, "install", "-r", file] if pip.ends_with("/bin/pip") => exists(file),
        ["bash" | "python" | "python3", script, ..] => exists(script),
        [python, script, ..] if python.ends_with("/bin/python") => exists(script),
        [program, ..] if program.starts_with("target/") => {
            let example = program
                .rsplit_once("/examples/")
                .map(|(_, e)| e)
                .ok_or_else(|| format!("`{program}` is not an example cargo builds"))?;
            let src = ws.target(None, "example", example)?;
            example_accepts(src, &w[1..])
        }
        _ => Err("a command form the checker does not know".to_string()),
    }
}

/// `truststack SUB --help` exits 0.
fn truststack_has(sub: &str) -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_truststack"))
        .args([sub, "--help"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`truststack {sub} --help` fails: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The commands too long for the suite (benchmarks, fuzzing, the crash-cycles and AgentDojo
/// harnesses, the whole test suite) still name what exists; see the module documentation.
#[test]
fn long_commands_name_real_targets() {
    let root = truststack_testkit::workspace_root();
    let ws = Workspace::load(&root);
    let mut failures = Vec::new();
    let mut checked = 0;
    for page in pages(&root) {
        if RUNBOOKS.contains(&page.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(root.join(&page)).unwrap();
        for (line, command) in unrun_commands(&text) {
            let mut cwd = PathBuf::new();
            for words in simple_commands(&command) {
                checked += 1;
                if let Err(why) = check_command(&ws, &root, &mut cwd, &words) {
                    let why = why.replace(&format!("{}/", root.display()), "");
                    failures.push(format!(
                        "{page}:{line}: `{command}`: {why}\n  (a command that runs in seconds belongs in a ```text transcript; \
                         a longer one the checker does not know: teach `check_command` in crates/cli/tests/docs.rs)"
                    ));
                    break;
                }
            }
        }
    }
    assert!(checked > 0, "no sh block found");
    assert!(
        failures.is_empty(),
        "{} command(s) name what does not exist:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// README.md and every page of docs/.
fn pages(root: &Path) -> Vec<String> {
    let mut pages = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

#[test]
fn finds_the_commands_of_sh_blocks() {
    let page = "```sh\ncargo bench -p a \\\n  --bench b   # why\n\n# a comment\ncat > f <<'EOF'\nnot a command\nEOF\nbash x.sh\n```\n```text\n$ echo\n```\n";
    assert_eq!(
        unrun_commands(page),
        [
            (2, "cargo bench -p a  --bench b   # why".to_string()),
            (6, "cat > f <<'EOF'".to_string()),
            (9, "bash x.sh".to_string()),
        ]
    );
}

#[test]
fn splits_commands_as_the_shell_does() {
    assert_eq!(
        simple_commands(
            "cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run x -- -max_total_time=60   # a 'comment'"
        ),
        [
            vec!["cd", "fuzz"],
            vec![
                "RUSTC_BOOTSTRAP=1",
                "cargo",
                "fuzz",
                "run",
                "x",
                "--",
                "-max_total_time=60"
            ],
        ]
    );
    assert_eq!(
        simple_commands(
            "truststack prove 'a b.toml' --format sarif > prove.sarif 2> err; echo \"#x\""
        ),
        [
            vec!["truststack", "prove", "a b.toml", "--format", "sarif"],
            vec!["echo", "#x"],
        ]
    );
}
