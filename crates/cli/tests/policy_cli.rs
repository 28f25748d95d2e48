//! `truststack policy check|eval|test` as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{root, text, truststack_from_root as truststack};
use truststack_testkit::assert_contains;
use truststack_testkit::write_file;

#[test]
fn check_accepts_the_examples() {
    let out = truststack(&[
        "policy",
        "check",
        "examples/gtg1002/policies/seed.tsp",
        "examples/gtg1002/policies/delegation-root.tsp",
        "--catalog",
        "examples/gtg1002/catalog.toml",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "ok: 6 policies in 2 file(s), 0 warning(s)"
    );
}

#[test]
fn check_rejects_a_malformed_policy_with_position_caret_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "bad.tsp",
        "POLICY: ACTION: DENY IF (Tool_Call('ScanTool').Count > 100 requests/5 mins)\n",
    );
    let out = truststack(&["policy", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_contains!(err, "error: unknown time unit `mins`");
    assert_contains!(err, "bad.tsp:1:71");
    assert_contains!(err, "^^^^ expected one of ms, s, min, h, d");
    assert_contains!(err, "hint: did you mean `min`?");
}

#[test]
fn check_reports_a_missing_file_precisely() {
    let out = truststack(&["policy", "check", "no/such/file.tsp"]);
    assert_eq!(out.status.code(), Some(2));
    assert_contains!(text(&out.stderr), "no/such/file.tsp: cannot read");
}

#[test]
fn eval_prints_one_decision_per_tool_call() {
    let out = truststack(&[
        "policy",
        "eval",
        "--policy",
        "examples/gtg1002/policies/seed.tsp",
        "--catalog",
        "examples/gtg1002/catalog.toml",
        "--trace",
        "examples/gtg1002/traces/campaign-single-agent.jsonl",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let trace =
        std::fs::read_to_string(root().join("examples/gtg1002/traces/campaign-single-agent.jsonl"))
            .unwrap();
    let calls = trace
        .lines()
        .filter(|l| l.contains("\"tool_call\""))
        .count();
    assert_eq!(lines.len(), calls, "one line per tool_call");
    let find = |id: &str| lines.iter().find(|l| l["id"] == id).unwrap().clone();
    assert_eq!(find("scan-100")["decision"], "allow");
    assert_eq!(find("scan-101")["decision"], "deny");
    assert_eq!(find("scan-101")["policies"], serde_json::json!(["seed#1"]));
    assert_eq!(find("exploit-1")["decision"], "require_approval");
    assert_eq!(find("exfil-1")["decision"], "deny");
    // The separation-of-duties refusal is reported on stderr, not mixed into the decisions.
    assert_contains!(text(&out.stderr), "separation of duties");
}

#[test]
fn eval_reports_a_malformed_trace_line_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write_file(dir.path(), "t.jsonl", "{\"type\":\"tool_call\",\"id\":\"a\",\"agent\":\"x\",\"tool\":\"read_docs\",\"time\":\"2026-01-01T00:00:00Z\"}\n{\"type\": \"tool_call\", \"id\": 7}\n");
    let out = truststack(&[
        "policy",
        "eval",
        "--policy",
        "examples/gtg1002/policies/seed.tsp",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_contains!(err, "t.jsonl:2:");
    assert_contains!(err, "not a valid event");
}

#[test]
fn test_runs_the_example_suites_and_fails_on_a_wrong_expectation() {
    let out = truststack(&[
        "policy",
        "test",
        "examples/gtg1002/tests/seed.toml",
        "examples/gtg1002/tests/delegation-root.toml",
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).lines().any(|l| l == "7 passed, 0 failed"),
        "{}",
        text(&out.stdout)
    );

    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("wrong.toml");
    let examples = root().join("examples/gtg1002");
    std::fs::write(
        &spec,
        format!(
            "catalog = {:?}\npolicies = [{:?}]\n[[case]]\nname = \"wrong\"\ntrace = {:?}\nexpect = [{{ id = \"scan-101\", decision = \"allow\" }}]\n",
            examples.join("catalog.toml"),
            examples.join("policies/seed.tsp"),
            examples.join("traces/campaign-single-agent.jsonl"),
        ),
    )
    .unwrap();
    let out = truststack(&["policy", "test", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert_contains!(stdout, "scan-101: expected allow, got deny");
    assert!(
        stdout.lines().any(|l| l == "0 passed, 1 failed"),
        "{stdout}"
    );
}
