//! `truststack demo` end to end: the real binary runs Crawl (the proving ground), Walk (an
//! issuer and the agents' credentials), Run (the MCP gateway with the simulated campaign tool
//! server as a real stdio child process, agents speaking Streamable HTTP on loopback) and Audit
//! (the ledger) in a fresh directory; its JSON summary must say that every control fired where
//! it should and that no benign call was blocked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::path::Path;
use std::process::Output;

mod common;
use common::{text, truststack};
use truststack_testkit::assert_contains;

fn demo(dir: &Path, json: bool) -> Output {
    let dir = dir.to_str().unwrap();
    let mut args = vec!["demo", "--dir", dir];
    if json {
        args.push("--json");
    }
    truststack(&args)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_control_fires_where_it_should_and_the_ledger_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = demo(&dir, true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["passed"], true, "{s:#}");

    // Every expected control is there, and fired.
    let controls = s["controls"].as_array().unwrap();
    for id in [
        "naive-unguarded",
        "toxic-combination",
        "split-exploitable",
        "fix-proved",
        "fixed-safe",
        "attenuation",
        "delegation-root",
        "tools-attenuated",
        "rate-limit",
        "external-scan",
        "exploitation-held",
        "agent-approval-refused",
        "operator-approval-refused",
        "oncall-grant",
        "exfiltration-denied",
        "split-campaign-stopped",
        "benign-allowed",
        "ledger-verified",
        "inclusion-proof",
        "tamper-detected",
    ] {
        let c = controls
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("control {id} missing: {controls:#?}"));
        assert_eq!(c["passed"], true, "{c:#}");
    }
    assert!(controls.iter().all(|c| c["passed"] == true));

    // Crawl: the proving ground found the toxic combination and proved the fix.
    let crawl = &s["crawl"];
    assert_eq!(
        strings(&crawl["toxic_combination"]),
        ["ScanTool", "CodeAnalysisTool", "ExploitationTool"]
    );
    assert!(strings(&crawl["naive_unguarded"]).contains(&"gtg1002-chain".to_string()));
    assert_eq!(
        crawl["split_holder"],
        "spiffe://acme.example/agent/orchestrator"
    );
    assert_eq!(strings(&crawl["split_held_by"]), ["patch", "recon"]);
    assert_eq!(crawl["fix_proved"], true);
    assert_eq!(crawl["fixed_safe"], true);

    // Run: each seed control fired where it should.
    let run = &s["run"];
    assert_eq!(run["first_denied_scan"], 101, "{run:#}");
    assert_eq!(run["scans_allowed"], 100);
    assert_eq!(run["scans_denied"], 60);
    assert!(strings(&run["external_scan_policies"]).contains(&"seed#1".to_string()));
    let held = strings(&run["held_policies"]);
    assert!(held.contains(&"chain-of-command".to_string()), "{held:?}");
    assert!(!held.contains(&"seed#2".to_string()), "split: {held:?}");
    assert!(run["progress_notifications"].as_u64().unwrap() >= 1);
    assert_eq!(run["agent_approval_status"], 403);
    assert_eq!(run["operator_approval_status"], 403);
    assert_eq!(run["oncall_approval_status"], 200);
    assert_eq!(run["exploitation_ran"], true);
    let exfil = strings(&run["exfiltration_policies"]);
    assert!(exfil.contains(&"no-exfiltration-after-prod-read".to_string()));
    assert!(!exfil.contains(&"seed#3".to_string()), "split: {exfil:?}");
    assert_eq!(
        strings(&run["tools_visible"]["recon"]),
        ["nmap_scan", "service_probe", "code_review", "http_upload"]
    );
    assert_eq!(s["benign_calls_blocked"], 0);
    assert_eq!(run["benign_calls"], 5);
    let counts = &s["counts"];
    assert_eq!(counts["calls"], 171);
    assert_eq!(counts["held"], 1);
    assert_eq!(
        counts["denied"], 62,
        "60 scans over the limit, the public range, the upload"
    );
    assert_eq!(s["attack_steps_stopped"], 63);

    // Audit: the ledger verifies; the edit of the copy is caught at the edited entry.
    let audit = &s["audit"];
    assert_eq!(s["ledger_verified"], true);
    assert_eq!(audit["inclusion_proof_verified"], true);
    let edited = audit["edited_index"].as_u64().unwrap();
    assert_eq!(audit["exfiltration_index"].as_u64(), Some(edited));
    assert_eq!(s["tamper_detected_at"].as_u64(), Some(edited));
    assert_eq!(audit["records"]["decision"], 171);
    assert_eq!(audit["records"]["approval"], 1);
    assert!(s["elapsed_ms"].as_u64().is_some());

    // What it leaves behind for the user to explore.
    for f in [
        "crawl/naive/safety-case.html",
        "crawl/naive/manifest-naive.fixed.toml",
        "crawl/split/safety-case.md",
        "crawl/fixed/safety-case.html",
        "crawl/fixed/prove.sarif",
        "scenario/manifest-fixed.toml",
        "gateway.toml",
        "truststack.toml",
        "ledger.db",
        "ledger.key",
        "issuer/issuer.json",
        "credentials/recon.jwt",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    // The console's configuration on the demo's data loads, with its safety cases.
    let console = truststack_server::ServerConfig::load(&dir.join("truststack.toml")).unwrap();
    let cases = console.resolve(console.console.safety_cases.as_ref().unwrap());
    assert!(cases.join("safety-case.md").exists());
    assert!(console
        .resolve(&console.issuer_dir)
        .join("issuer.json")
        .exists());
    let html = std::fs::read_to_string(dir.join("crawl/fixed/safety-case.html")).unwrap();
    assert_contains!(html, "<svg", "the trajectory graph is drawn");

    // The ledger it wrote checks with the ordinary CLI; the edited copy fails at the entry.
    let ledger = dir.join("ledger.db");
    let out = truststack(&["ledger", "verify", ledger.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let tampered = dir.join("ledger-tampered.db");
    let out = truststack(&["ledger", "verify", tampered.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(said.contains(&format!("entry {edited}")), "{said}");
}

#[test]
fn the_story_is_plain_when_piped_and_replaces_an_earlier_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("story");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".truststack-demo"), "").unwrap();
    std::fs::write(dir.join("stale.txt"), "from an earlier run").unwrap();
    let out = demo(&dir, false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let story = text(&out.stdout);
    assert!(!story.contains('\u{1b}'), "no colour codes when piped");
    for needle in [
        "1. CRAWL",
        "2. WALK",
        "3. RUN",
        "4. AUDIT",
        "UNGUARDED",
        "└─ spiffe://acme.example/agent/orchestrator",
        "HELD for a human",
        "HTTP 403",
        "DENIED",
        "Summary",
        "time taken",
        "PASS",
    ] {
        assert_contains!(story, needle, "{needle}\n{story}");
    }
    assert!(
        !dir.join("stale.txt").exists(),
        "the earlier run is replaced"
    );
}

#[test]
fn a_directory_that_is_not_a_demo_run_is_never_wiped() {
    let tmp = tempfile::tempdir().unwrap();
    let foreign = tmp.path().join("mine");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "keep me").unwrap();
    let out = demo(&foreign, true);
    assert_eq!(out.status.code(), Some(2));
    assert_contains!(text(&out.stderr), "not a TrustStack demo directory");
    assert!(foreign.join("notes.txt").exists());
}

#[test]
fn help_shows_the_options_but_not_the_internal_server() {
    let out = truststack(&["demo", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(help.contains("--dir") && help.contains("--json"), "{help}");
    assert!(!help.contains("campaign-server"), "{help}");
}
