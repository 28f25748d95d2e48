//! `truststack demo` end to end: the real binary runs Crawl, Walk, Run (the MCP gateway, a real
//! stdio upstream, Streamable HTTP on loopback) and Audit in a fresh directory, and its JSON
//! summary says every control fired.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::process::Command;

fn demo(dir: &std::path::Path, json: bool) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_truststack"));
    c.arg("demo").arg("--dir").arg(dir);
    if json {
        c.arg("--json");
    }
    c.output().unwrap()
}

#[test]
fn every_control_fires_and_the_ledger_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = demo(&dir, true);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["passed"], true, "{s:#}");
    assert_eq!(s["benign_calls_blocked"], 0);
    assert_eq!(s["ledger_verified"], true);
    assert!(s["tamper_detected_at"].as_u64().is_some());
    let controls = s["controls"].as_array().unwrap();
    let fired = |phase: &str, needle: &str| {
        controls.iter().any(|c| {
            c["phase"] == phase
                && c["name"].as_str().unwrap().contains(needle)
                && c["passed"] == true
        })
    };
    for (phase, needle) in [
        ("crawl", "GTG-1002 chain unguarded"),
        ("crawl", "toxic combination"),
        ("crawl", "still exploitable through the orchestrator"),
        ("crawl", "remediation is proved safe"),
        ("crawl", "fixed design is proved safe"),
        ("walk", "cannot delegate more"),
        ("run", "rate limit"),
        ("run", "external scan is denied"),
        ("run", "held for a human"),
        ("run", "operator's own approval is refused"),
        ("run", "on-call approver"),
        ("run", "exfiltration after the production DB read is denied"),
        ("run", "benign work"),
        ("audit", "provably in the signed log"),
        ("audit", "ledger verifies"),
        ("audit", "exact index"),
    ] {
        assert!(fired(phase, needle), "{phase}: {needle}\n{controls:#?}");
    }
    assert!(controls.iter().all(|c| c["passed"] == true));
    let counts = &s["counts"];
    assert_eq!(counts["held"], 1);
    assert_eq!(
        counts["denied"], 62,
        "60 scans over the limit, the public range, the upload"
    );
    // What it leaves behind for the user to explore.
    for f in [
        "crawl/safety-case.html",
        "gateway.toml",
        "ledger.db",
        "issuer/issuer.json",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let html = std::fs::read_to_string(dir.join("crawl/safety-case.html")).unwrap();
    assert!(html.contains("<svg"), "the trajectory graph is drawn");

    // A second run replaces the first.
    let again = demo(&dir, true);
    assert!(again.status.success());
}

#[test]
fn the_story_is_plain_when_piped_and_refuses_foreign_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let out = demo(&tmp.path().join("story"), false);
    assert!(out.status.success());
    let story = String::from_utf8(out.stdout).unwrap();
    assert!(!story.contains('\u{1b}'), "no colour codes when piped");
    for needle in [
        "1. Crawl", "2. Walk", "3. Run", "4. Audit", "DENIED", "Summary", "PASS",
    ] {
        assert!(story.contains(needle), "{needle}");
    }
    // A directory that is not a demo run is never wiped.
    let foreign = tmp.path().join("mine");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "keep me").unwrap();
    let out = demo(&foreign, true);
    assert_eq!(out.status.code(), Some(2));
    assert!(foreign.join("notes.txt").exists());
}
