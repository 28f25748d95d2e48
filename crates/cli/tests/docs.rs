//! Every shell transcript in README.md and docs/*.md runs here, as written, and its output is
//! compared with what the page shows, so the documentation cannot drift from the product.
//!
//! # What runs
//!
//! - In every page: each ```` ```text ```` (or ```` ```console ````) block holding lines that start
//!   with `$ `. A `$ ` line is a command (a line ending in `\` continues it, and so does the body
//!   of a here-document `<<'EOF'` … `EOF`); the lines up to the next `$ ` line are its output.
//!   Blocks without `$ ` lines (formats, grammars, config files) are not run.
//! - In the runbooks listed in [`RUNBOOKS`] (the quickstart): each ```` ```sh ```` block too, as
//!   one step; when the next block is a ```` ```text ```` block without `$ ` lines, that block is
//!   the output of the whole `sh` block, else its output is not compared. An `sh` block runs
//!   with `set -e -o pipefail`, like a script.
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
//! - `cargo run --release --` runs the `truststack` under test, and `cargo build --release` does
//!   nothing (the test suite does not build a second, release binary).
//! - The ports 8181 (server) and 8808 (gateway) become free ports chosen for the run, in commands
//!   and in output; `TRUSTSTACK_SERVER` points at the server's.
//! - `npm install … @modelcontextprotocol/server-filesystem@…` links the copy
//!   `scripts/install-peers.sh` installed into `.ci/peers/node_modules`; the project's Python
//!   environment `.venv/bin` comes first on `PATH`. A page that needs a peer asks the testkit for
//!   it first, so a missing peer fails naming the install command.
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

mod common;

/// Pages whose ```sh blocks are run too, in order, as a new user would.
const RUNBOOKS: &[&str] = &["docs/quickstart.md"];

/// How long one page may take before its processes are killed and the test fails.
const PAGE_TIMEOUT: Duration = Duration::from_secs(300);

/// Ports the pages use, replaced by free ones for the run.
const DOC_PORTS: &[u16] = &[8181, 8808];

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

/// The steps of a page, in order.
fn steps(page: &str, runbook: bool) -> Vec<Step> {
    let lines: Vec<&str> = page.lines().collect();
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
        i = end + 1;
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    "build --release") ;;
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
__rc=0
__set_rc() {{ return "$1"; }}
"#,
        bin = sh_quote(bin_dir),
        venv = sh_quote(&venv),
        peers = sh_quote(&peers),
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
    let script_path = work.path().join("page.sh");
    std::fs::write(&script_path, &script).unwrap();

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

/// Every page with a transcript has its test above, so a new page cannot be missed.
#[test]
fn every_page_with_a_transcript_is_checked() {
    let checked = [
        "README.md",
        "docs/quickstart.md",
        "docs/identity.md",
        "docs/ledger.md",
        "docs/policy-language.md",
    ];
    let root = common::root();
    let mut pages = vec!["README.md".to_string()];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            pages.push(format!("docs/{name}"));
        }
    }
    for page in pages {
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
