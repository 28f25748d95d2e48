//! `truststack prove` as a user runs it: exit codes, report files, the fix, and replaying a
//! reported trajectory with `truststack policy eval`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Output;

mod common;
use common::{root, text, truststack_from_root as truststack};
use truststack_testkit::assert_contains;
use truststack_testkit::write_file;

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn naive_manifest_fails_with_exit_1_and_names_the_toxic_combination() {
    let out = truststack(&[
        "prove",
        "examples/gtg1002/manifest-naive.toml",
        "--runs",
        "50",
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_contains!(stdout, "UNGUARDED   gtg1002-chain");
    assert_contains!(
        stdout,
        "{ScanTool, CodeAnalysisTool, ExploitationTool} → gtg1002-escalation"
    );
    assert_contains!(stdout, "Verdict NOT SAFE");
    // No progress bar when stderr is not a terminal.
    assert!(
        !text(&out.stderr).contains("Monte Carlo"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn split_manifest_fails_and_fixed_manifest_passes() {
    let out = truststack(&[
        "prove",
        "examples/gtg1002/manifest-split.toml",
        "--runs",
        "0",
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    assert_contains!(
        text(&out.stdout),
        "delegation root, split across patch, recon"
    );
    let out = truststack(&[
        "prove",
        "examples/gtg1002/manifest-fixed.toml",
        "--runs",
        "100",
    ]);
    assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
    assert_contains!(text(&out.stdout), "Verdict SAFE");
}

#[test]
fn bad_input_exits_2_with_a_precise_message() {
    let out = truststack(&["prove", "examples/gtg1002/no-such-manifest.toml"]);
    assert_eq!(code(&out), 2);
    let err = text(&out.stderr);
    assert_contains!(err, "no-such-manifest.toml: cannot read: No such file");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = write_file(
        dir.path(),
        "bad.toml",
        "catalog = \"../x.toml\"\n[agents.a]\ntools = \"scan\"\n",
    );
    let out = truststack(&["prove", bad.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    let err = text(&out.stderr);
    assert_contains!(err, "bad.toml: not a valid manifest: line 3");
    let catalog = root()
        .join("examples/gtg1002/catalog.toml")
        .canonicalize()
        .unwrap();
    std::fs::write(
        &bad,
        format!(
            "catalog = {:?}\n[agents.a]\ntools = [\"nmap_scan\"]\ndelegates_to = [\"b\"]\n",
            catalog.display().to_string()
        ),
    )
    .unwrap();
    let out = truststack(&["prove", bad.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert_contains!(text(&out.stderr), "agents.a.delegates_to: no agent `b`");
}

#[test]
fn a_goal_the_manifest_makes_impossible_fails_as_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = root()
        .join("examples/gtg1002/catalog.toml")
        .canonicalize()
        .unwrap();
    let m = write_file(dir.path(), "typo.toml", format!(
            "catalog = {:?}\n[agents.a]\ntools = [\"prod_db_query\", \"http_upload\"]\n[goals]\nbuiltin = []\n[[goals.data_flow]]\nid = \"prod-out\"\nsource = \"Internal_Prod_Db\"\n",
            catalog.display().to_string()
        ));
    let out = truststack(&["prove", m.to_str().unwrap(), "--runs", "0"]);
    assert_eq!(code(&out), 1, "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_contains!(stdout, "UNKNOWN");
    assert_contains!(
        stdout,
        "unknown: the manifest is wrong: no catalog tool accesses data source `Internal_Prod_Db`"
    );
}

#[test]
fn json_and_sarif_formats_are_machine_readable() {
    let out = truststack(&[
        "prove",
        "examples/gtg1002/manifest-naive.toml",
        "--runs",
        "20",
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["safe"], false);
    assert_eq!(v["goals"][0]["status"], "unguarded");
    assert_eq!(v["montecarlo"]["runs"], 20);
    let out = truststack(&[
        "prove",
        "examples/gtg1002/manifest-naive.toml",
        "--runs",
        "0",
        "--format",
        "sarif",
    ]);
    assert_eq!(code(&out), 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let results = v["runs"][0]["results"].as_array().unwrap();
    assert!(results
        .iter()
        .any(|r| r["ruleId"] == "gtg1002-chain" && r["level"] == "error"));
    let toxic = results
        .iter()
        .find(|r| r["ruleId"] == "toxic-combination")
        .unwrap();
    let loc = &toxic["locations"][0]["physicalLocation"];
    assert_eq!(
        loc["artifactLocation"]["uri"],
        "examples/gtg1002/manifest-naive.toml"
    );
    let line = loc["region"]["startLine"].as_u64().unwrap() as usize;
    let manifest =
        std::fs::read_to_string(root().join("examples/gtg1002/manifest-naive.toml")).unwrap();
    assert_eq!(manifest.lines().nth(line - 1), Some("[agents.operator]"));
}

#[test]
fn out_writes_every_report_and_trajectories_replay_with_policy_eval() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let out = truststack(&[
        "prove",
        "examples/gtg1002/manifest-fixed.toml",
        "--runs",
        "50",
        "--out",
        out_dir,
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    for f in [
        "safety-case.md",
        "safety-case.html",
        "prove.json",
        "prove.sarif",
    ] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    let html = std::fs::read_to_string(dir.path().join("safety-case.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("<style>"));
    assert!(
        !html.contains("<script") && !html.contains("src=\"http") && !html.contains("href=\"http")
    );
    // Replay the gated trajectory with `policy eval` and compare with the report.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("prove.json")).unwrap())
            .unwrap();
    let goal = report["goals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "gtg1002-escalation")
        .unwrap();
    let trace = dir.path().join("trajectories/gtg1002-escalation.jsonl");
    let out = truststack(&[
        "policy",
        "eval",
        "--policy",
        "examples/gtg1002/policies/delegation-root.tsp",
        "--catalog",
        "examples/gtg1002/catalog.toml",
        "--approvals",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decisions: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l.get("decision").is_some() && l.get("approval").is_none())
        .collect();
    let steps = goal["trajectory"]["steps"].as_array().unwrap();
    assert_eq!(decisions.len(), steps.len());
    for (d, s) in decisions.iter().zip(steps) {
        assert_eq!(d["decision"], s["decision"]);
        assert_eq!(d["policies"], s["policies"]);
    }
    let approval = lines.iter().find(|l| l.get("approval").is_some()).unwrap();
    assert_eq!(approval["result"], "granted");
}

#[test]
fn fix_writes_a_manifest_that_proves_safe() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let out = truststack(&[
        "prove",
        "examples/gtg1002/manifest-naive.toml",
        "--runs",
        "0",
        "--fix",
        "--out",
        out_dir,
    ]);
    assert_eq!(
        code(&out),
        1,
        "the input manifest is still unsafe: {}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert_contains!(stdout, "split identity `operator`");
    assert_contains!(stdout, "fixed manifest: SAFE");
    let fixed = Path::new(out_dir).join("manifest-naive.fixed.toml");
    assert!(Path::new(out_dir)
        .join("policies/remediation.tsp")
        .is_file());
    let out = truststack(&["prove", fixed.to_str().unwrap(), "--runs", "0"]);
    assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
    // The smallest fix adds policies only; the split and a human gate on the data flow are
    // alternatives, written beside it and proved in the same run.
    assert_contains!(stdout, "Alternative `split`");
    assert_contains!(stdout, "Alternative `gate`");
    for alt in ["split", "gate"] {
        let f = Path::new(out_dir).join(format!("manifest-naive.{alt}.fixed.toml"));
        let out = truststack(&["prove", f.to_str().unwrap(), "--runs", "0"]);
        assert_eq!(
            code(&out),
            0,
            "{alt}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let out = truststack(&[
        "policy",
        "check",
        Path::new(out_dir)
            .join("policies/remediation.tsp")
            .to_str()
            .unwrap(),
        "--catalog",
        "examples/gtg1002/catalog.toml",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
}
