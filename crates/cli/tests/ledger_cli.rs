//! `truststack ledger …` end to end: a ledger written by `policy eval --ledger` from the
//! GTG-1002 campaign, then verified, queried, proved, exported, replayed under other policies,
//! and tampered with.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/gtg1002")
        .join(rel)
        .display()
        .to_string()
}

fn truststack(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_truststack"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The campaign decided under the seed policies, recorded in `dir/campaign.db`.
fn campaign_ledger(dir: &Path) -> String {
    let db = dir.join("campaign.db").display().to_string();
    ok(&truststack(&[
        "policy",
        "eval",
        "--policy",
        &example("policies/seed.tsp"),
        "--catalog",
        &example("catalog.toml"),
        "--trace",
        &example("traces/campaign-single-agent.jsonl"),
        "--ledger",
        &db,
    ]));
    db
}

#[test]
fn verify_show_prove_export_and_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let db = campaign_ledger(tmp.path());

    let verified = ok(&truststack(&["ledger", "verify", &db]));
    assert!(verified.starts_with("ok: 116 entries"), "{verified}");

    // Filters: the denied decisions, as JSON lines.
    let denied = ok(&truststack(&[
        "ledger",
        "show",
        &db,
        "--decision",
        "deny",
        "--format",
        "jsonl",
    ]));
    let ids: Vec<String> = denied
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            v["record"]["call"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        ["ext-scan", "scan-101", "probe-102", "exfil-1"],
        "{denied}"
    );
    let table = ok(&truststack(&[
        "ledger",
        "show",
        &db,
        "--tool",
        "http_upload",
    ]));
    assert!(
        table.contains("deny") && table.contains("http_upload"),
        "{table}"
    );

    // An inclusion proof for the exfiltration denial, and a consistency proof.
    let exfil: Value = serde_json::from_str(denied.lines().last().unwrap()).unwrap();
    let index = exfil["index"].as_u64().unwrap().to_string();
    let proof: Value = serde_json::from_str(&ok(&truststack(&[
        "ledger",
        "proof",
        "inclusion",
        &db,
        "--index",
        &index,
    ])))
    .unwrap();
    assert_eq!(proof["tree_size"], 116);
    assert!(!proof["path"].as_array().unwrap().is_empty());
    let consistency: Value = serde_json::from_str(&ok(&truststack(&[
        "ledger",
        "proof",
        "consistency",
        &db,
        "--old",
        "10",
    ])))
    .unwrap();
    assert_eq!(consistency["old_size"], 10);

    let checkpoint = ok(&truststack(&["ledger", "checkpoint", &db]));
    let lines: Vec<&str> = checkpoint.lines().collect();
    assert_eq!(lines[0], "truststack.local/ledger");
    assert_eq!(lines[1], "116");
    assert!(
        lines[4].starts_with("— truststack.local/ledger "),
        "{checkpoint}"
    );

    let export = ok(&truststack(&["ledger", "export", &db]));
    assert_eq!(
        export.lines().count(),
        117,
        "116 entries, then the checkpoint"
    );

    // Replays: no policies would have let every stopped step through; the delegation-root
    // bundle stops the same steps.
    let out = truststack(&[
        "ledger",
        "replay",
        &db,
        "--catalog",
        &example("catalog.toml"),
        "--json",
    ]);
    let changed: Vec<Value> = ok(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = changed
        .iter()
        .map(|d| d["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["ext-scan", "scan-101", "probe-102", "exploit-1", "exfil-1"]
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("5 of 114 recorded call(s)"));
    let out = truststack(&[
        "ledger",
        "replay",
        &db,
        "--policy",
        &example("policies/delegation-root.tsp"),
        "--catalog",
        &example("catalog.toml"),
    ]);
    assert_eq!(ok(&out), "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 of 114"));
}

#[test]
fn an_edited_record_is_named_at_its_index() {
    let tmp = tempfile::tempdir().unwrap();
    let db = campaign_ledger(tmp.path());
    let copy = tmp.path().join("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    {
        let conn = rusqlite::Connection::open(&copy).unwrap();
        let record: String = conn
            .query_row("SELECT record FROM entries WHERE idx = 114", [], |r| {
                r.get(0)
            })
            .unwrap();
        let edited = record.replacen("\"deny\"", "\"allow\"", 1);
        assert_ne!(record, edited);
        conn.execute("UPDATE entries SET record = ?1 WHERE idx = 114", [&edited])
            .unwrap();
    }
    let out = truststack(&["ledger", "verify", copy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("114"), "{text}");
    // The original still verifies.
    ok(&truststack(&["ledger", "verify", &db]));
}

#[test]
fn bad_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.db");
    let out = truststack(&["ledger", "verify", missing.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let junk = tmp.path().join("junk.db");
    std::fs::write(&junk, b"not a database at all").unwrap();
    let out = truststack(&["ledger", "verify", junk.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!out.stderr.is_empty() || !out.stdout.is_empty());
}
