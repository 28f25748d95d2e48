//! `truststack ledger …` end to end: the real binary on real SQLite ledgers written by
//! `policy eval --ledger` from the GTG-1002 campaign under the seed policies — verified,
//! queried, proved (the proofs are checked here and by the independent Python verifier),
//! exported, replayed under other policies, and tampered with.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use std::path::Path;
use truststack_ledger::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use truststack_ledger::{Checkpoint, Hash, VerifierKey};

mod common;
use common::{ok, refused, stderr, stdout, truststack};
use truststack_testkit::assert_contains;
use truststack_testkit::independent_verifier as python_verifier;
use truststack_testkit::write_file;

/// Entries of the campaign ledger: the policy activation, 114 decisions, 1 approval.
const ENTRIES: u64 = 116;
/// The decision to deny the exfiltration (`exfil-1`).
const EXFIL: u64 = 114;

fn example(rel: &str) -> String {
    truststack_testkit::examples::gtg1002(rel)
        .display()
        .to_string()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn hash(b64: &Value) -> Hash {
    B64.decode(b64.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn hashes(list: &Value) -> Vec<Hash> {
    list.as_array().unwrap().iter().map(hash).collect()
}

/// Records `trace` under `policy` into the ledger `db` (created, or appended to), through
/// `policy eval --ledger`, which signs a checkpoint when it ends.
fn record(db: &Path, policy: &str, trace: &str) {
    ok(&truststack(&[
        "policy",
        "eval",
        "--policy",
        &example(policy),
        "--catalog",
        &example("catalog.toml"),
        "--trace",
        &example(trace),
        "--ledger",
        db.to_str().unwrap(),
    ]));
}

/// The campaign decided under the seed policies, recorded in `dir/campaign.db`.
fn campaign_ledger(dir: &Path) -> String {
    let db = dir.join("campaign.db");
    record(
        &db,
        "policies/seed.tsp",
        "traces/campaign-single-agent.jsonl",
    );
    db.display().to_string()
}

fn published_key(db: &str) -> VerifierKey {
    VerifierKey::parse(ok(&truststack(&["ledger", "key", db])).trim()).unwrap()
}

#[test]
fn verify_checks_against_the_recorded_or_a_trusted_key() {
    let tmp = tempfile::tempdir().unwrap();
    let db = campaign_ledger(tmp.path());

    let verified = ok(&truststack(&["ledger", "verify", &db]));
    assert!(
        verified.starts_with(&format!(
            "ok: {ENTRIES} entries, 1 checkpoint verified, root "
        )),
        "{verified}"
    );
    assert_contains!(verified, "as recorded in the ledger");

    // Against the published key, given as text, in a file, or as the log's private key file.
    let key = published_key(&db).to_string();
    let trusted = ok(&truststack(&["ledger", "verify", &db, "--key", &key]));
    assert!(!trusted.contains("as recorded"), "{trusted}");
    let key_file = write_file(tmp.path(), "published.key", format!("{key}\n"));
    ok(&truststack(&[
        "ledger",
        "verify",
        &db,
        "--key-file",
        key_file.to_str().unwrap(),
    ]));
    let private = tmp.path().join("campaign.key");
    ok(&truststack(&[
        "ledger",
        "verify",
        &db,
        "--key-file",
        private.to_str().unwrap(),
    ]));

    // Another log's key: the checkpoints are not this key's, exit 1.
    let other = tmp.path().join("other.db");
    record(&other, "policies/seed.tsp", "traces/benign.jsonl");
    let foreign = published_key(other.to_str().unwrap()).to_string();
    let out = truststack(&["ledger", "verify", &db, "--key", &foreign]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with("FAILED: the ledger records key"),
        "{}",
        stdout(&out)
    );

    refused(
        &truststack(&["ledger", "verify", &db, "--key", "not-a-key"]),
        "--key: malformed verifier key",
    );
}

#[test]
fn show_filters_records_as_a_table_and_as_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let db = campaign_ledger(tmp.path());

    let denied = ok(&truststack(&[
        "ledger",
        "show",
        &db,
        "--decision",
        "deny",
        "--format",
        "jsonl",
    ]));
    let lines: Vec<Value> = denied.lines().map(json).collect();
    let ids: Vec<&str> = lines
        .iter()
        .map(|v| v["record"]["call"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ext-scan", "scan-101", "probe-102", "exfil-1"]);
    let indices: Vec<u64> = lines.iter().map(|v| v["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, [53, 106, 107, EXFIL]);
    // Each line is the entry: index, record, leaf hash (of the record's canonical bytes),
    // commit time.
    let exfil = &lines[3];
    assert_eq!(exfil["record"]["decision"]["decision"], "deny");
    let canonical = truststack_ledger::canonical::canonicalize(&exfil["record"]).unwrap();
    assert_eq!(hash(&exfil["leaf_hash"]), leaf_hash(&canonical));
    assert!(exfil["committed"].as_str().unwrap().ends_with('Z'));
    // `--json` is `--format jsonl`.
    assert_eq!(
        ok(&truststack(&[
            "ledger",
            "show",
            &db,
            "--decision",
            "deny",
            "--json"
        ])),
        denied
    );

    // The table: a header, then one row per record, columns aligned.
    let table = ok(&truststack(&[
        "ledger",
        "show",
        &db,
        "--tool",
        "http_upload",
    ]));
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 2, "{table}");
    let header: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["index", "time", "kind", "decision", "agent", "tool", "call", "session"]
    );
    let row: Vec<&str> = rows[1].split_whitespace().collect();
    assert_eq!(
        row,
        [
            "114",
            "2026-11-13T09:07:01.000Z",
            "decision",
            "deny",
            "spiffe://acme.example/agent/claude-ops",
            "http_upload",
            "exfil-1",
            "s-campaign"
        ]
    );
    assert_eq!(rows[0].find("agent"), rows[1].find("spiffe://"), "{table}");

    // The approval answer, by kind; a time window; an agent; a delegation root.
    let approval = ok(&truststack(&["ledger", "show", &db, "--kind", "approval"]));
    assert_contains!(approval.lines().nth(1).unwrap(), "exploit-1");
    assert_eq!(approval.lines().count(), 2, "{approval}");
    let window = ok(&truststack(&[
        "ledger",
        "show",
        &db,
        "--since",
        "2026-11-13T09:06:00Z",
        "--until",
        "2026-11-13T09:07:01Z",
        "--json",
    ]));
    let window: Vec<u64> = window
        .lines()
        .map(|l| json(l)["index"].as_u64().unwrap())
        .collect();
    assert_eq!(window, [110, 111, 112, 113]);
    let agent = "spiffe://acme.example/agent/claude-ops";
    for filter in ["--agent", "--root"] {
        let mine = ok(&truststack(&[
            "ledger", "show", &db, filter, agent, "--json",
        ]));
        assert_eq!(mine.lines().count(), 114, "{filter}");
    }
    let none = truststack(&["ledger", "show", &db, "--agent", "spiffe://x/agent/nobody"]);
    assert_eq!(ok(&none).lines().count(), 1, "the header alone");
    assert_contains!(stderr(&none), "no record matches");

    refused(
        &truststack(&["ledger", "show", &db, "--decision", "denied"]),
        "--decision \"denied\": expected one of allow, deny, require_approval",
    );
    let out = truststack(&["ledger", "show", &db, "--since", "yesterday"]);
    refused(&out, "--since: \"yesterday\" is not an RFC 3339 timestamp");
    assert_eq!(
        stderr(&out).matches("could not be parsed").count(),
        1,
        "each cause once: {}",
        stderr(&out)
    );
}

#[test]
fn an_inclusion_proof_verifies_against_the_signed_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let db = campaign_ledger(tmp.path());
    let key = published_key(&db);

    let out = truststack(&[
        "ledger",
        "proof",
        "inclusion",
        &db,
        "--index",
        &EXFIL.to_string(),
    ]);
    let proof = json(&ok(&out));
    assert_eq!(proof["leaf_index"], EXFIL);
    assert_eq!(proof["tree_size"], ENTRIES, "the latest checkpoint's size");
    // The record is the exfiltration denial, in its canonical bytes, which hash to the leaf.
    let record = proof["record"].as_str().unwrap();
    assert_eq!(json(record)["decision"]["call_id"], "exfil-1");
    let leaf = leaf_hash(record.as_bytes());
    assert_eq!(leaf, hash(&proof["leaf_hash"]));
    // The path leads to the root, which the checkpoint signs.
    let root = hash(&proof["root_hash"]);
    verify_inclusion(EXFIL, ENTRIES, &leaf, &hashes(&proof["path"]), &root).unwrap();
    let signed = Checkpoint::open(proof["checkpoint"].as_str().unwrap(), &key).unwrap();
    assert_eq!((signed.size, signed.root), (ENTRIES, root));

    // The auditor's check, sharing no code with TrustStack: the proof output plus the key
    // published out of band.
    let mut input = proof.clone();
    input["verifier_key"] = json!(key.to_string());
    input["proof"] = proof.clone();
    let (code, text) = python_verifier::run(&input, tmp.path());
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        text.trim(),
        format!("ok: entry {EXFIL} is in truststack.local/ledger at size {ENTRIES}")
    );
    // The same proof for an edited record fails there.
    input["record"] = json!(record.replacen("\"deny\"", "\"allow\"", 1));
    let (code, text) = python_verifier::run(&input, tmp.path());
    assert_eq!(code, 1, "{text}");

    // A size no checkpoint has: the proof still verifies against its (unsigned) root.
    let out = truststack(&[
        "ledger",
        "proof",
        "inclusion",
        &db,
        "--index",
        "3",
        "--size",
        "7",
    ]);
    let small = json(&ok(&out));
    assert!(small.get("checkpoint").is_none());
    assert_contains!(stderr(&out), "no signed checkpoint has size 7");
    verify_inclusion(
        3,
        7,
        &hash(&small["leaf_hash"]),
        &hashes(&small["path"]),
        &hash(&small["root_hash"]),
    )
    .unwrap();

    refused(
        &truststack(&["ledger", "proof", "inclusion", &db, "--index", "116"]),
        "--index 116: the log has 116 entries",
    );
    refused(
        &truststack(&[
            "ledger",
            "proof",
            "inclusion",
            &db,
            "--index",
            "9",
            "--size",
            "9",
        ]),
        "the size must exceed the index",
    );
    refused(
        &truststack(&[
            "ledger",
            "proof",
            "inclusion",
            &db,
            "--index",
            "1",
            "--size",
            "500",
        ]),
        "tree size 500 is beyond the end of the log",
    );
}

#[test]
fn a_consistency_proof_links_successive_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let db = campaign_ledger(tmp.path());
    // A second run appends the benign traffic and signs a second checkpoint.
    record(Path::new(&db), "policies/seed.tsp", "traces/benign.jsonl");
    let verified = ok(&truststack(&["ledger", "verify", &db]));
    assert_contains!(verified, "2 checkpoints verified");
    let key = published_key(&db);

    let proof = json(&ok(&truststack(&[
        "ledger",
        "proof",
        "consistency",
        &db,
        "--old",
        &ENTRIES.to_string(),
    ])));
    let new_size = proof["new_size"].as_u64().unwrap();
    assert!(new_size > ENTRIES);
    let old = Checkpoint::open(proof["old_checkpoint"].as_str().unwrap(), &key).unwrap();
    let new = Checkpoint::open(proof["new_checkpoint"].as_str().unwrap(), &key).unwrap();
    assert_eq!((old.size, new.size), (ENTRIES, new_size));
    assert_eq!(old.root, hash(&proof["old_root"]));
    assert_eq!(new.root, hash(&proof["new_root"]));
    verify_consistency(
        ENTRIES,
        new_size,
        &hashes(&proof["path"]),
        &old.root,
        &new.root,
    )
    .unwrap();
    // Any earlier size is consistent too (no checkpoint there: the root is computed).
    let early = json(&ok(&truststack(&[
        "ledger",
        "proof",
        "consistency",
        &db,
        "--old",
        "10",
        "--new",
        "50",
    ])));
    assert!(early.get("old_checkpoint").is_none());
    verify_consistency(
        10,
        50,
        &hashes(&early["path"]),
        &hash(&early["old_root"]),
        &hash(&early["new_root"]),
    )
    .unwrap();

    refused(
        &truststack(&[
            "ledger",
            "proof",
            "consistency",
            &db,
            "--old",
            "50",
            "--new",
            "10",
        ]),
        "--old 50 is larger than --new 10",
    );
}

#[test]
fn the_checkpoint_is_a_signed_note_and_the_export_proves_every_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let db = campaign_ledger(tmp.path());
    let key = published_key(&db);

    let note = ok(&truststack(&["ledger", "checkpoint", &db]));
    let lines: Vec<&str> = note.lines().collect();
    assert_eq!(lines.len(), 5, "{note}");
    assert_eq!(lines[0], "truststack.local/ledger");
    assert_eq!(lines[1], ENTRIES.to_string());
    assert_eq!(lines[3], "");
    assert!(lines[4].starts_with("— truststack.local/ledger "), "{note}");
    let checkpoint = Checkpoint::open(&note, &key).unwrap();
    assert_eq!(B64.encode(checkpoint.root), lines[2]);

    let export = ok(&truststack(&["ledger", "export", &db]));
    let lines: Vec<Value> = export.lines().map(json).collect();
    assert_eq!(
        lines.len() as u64,
        ENTRIES + 1,
        "the entries, then the checkpoint"
    );
    let last = lines.last().unwrap();
    assert_eq!(last["checkpoint"], note);
    assert_eq!(last["tree_size"], ENTRIES);
    assert_eq!(last["verifier_key"], key.to_string());
    for (i, line) in lines[..lines.len() - 1].iter().enumerate() {
        assert_eq!(line["index"], i);
        let canonical = truststack_ledger::canonical::canonicalize(&line["record"]).unwrap();
        let leaf = leaf_hash(&canonical);
        assert_eq!(leaf, hash(&line["leaf_hash"]), "entry {i}");
        verify_inclusion(
            i as u64,
            ENTRIES,
            &leaf,
            &hashes(&line["inclusion_proof"]),
            &checkpoint.root,
        )
        .unwrap_or_else(|e| panic!("entry {i}: {e}"));
    }
    assert_eq!(lines[0]["record"]["kind"], "policy_activation");
}

#[test]
fn replay_reports_the_decisions_another_bundle_would_change() {
    let tmp = tempfile::tempdir().unwrap();
    let db = campaign_ledger(tmp.path());
    let catalog = example("catalog.toml");

    // Under the policies it was recorded with, nothing changes.
    let same = truststack(&[
        "ledger",
        "replay",
        &db,
        "--policy",
        &example("policies/seed.tsp"),
        "--catalog",
        &catalog,
    ]);
    let text = ok(&same);
    assert!(
        text.starts_with("0 of 114 recorded calls would be decided differently under "),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "no table: {text}");

    // With no policies at all, every step the seed stopped goes through.
    let out = truststack(&["ledger", "replay", &db, "--catalog", &catalog, "--json"]);
    let changed: Vec<Value> = ok(&out).lines().map(json).collect();
    let ids: Vec<&str> = changed
        .iter()
        .map(|d| d["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["ext-scan", "scan-101", "probe-102", "exploit-1", "exfil-1"]
    );
    assert!(changed.iter().all(|d| d["replayed"] == "allow"));
    let exfil = &changed[4];
    assert_eq!(exfil["ledger_index"], EXFIL);
    assert_eq!(exfil["recorded"], "deny");
    assert_eq!(exfil["recorded_policies"], json!(["seed#2", "seed#3"]));
    assert!(
        exfil["recorded_reason"]
            .as_str()
            .unwrap()
            .starts_with("denied by policy seed#3"),
        "{exfil}"
    );
    assert!(!exfil["reason"].as_str().unwrap().is_empty(), "{exfil}");
    assert_contains!(
        stderr(&out),
        "5 of 114 recorded calls would be decided differently under no policies"
    );

    // The table: one row per changed call, then the summary.
    let table = ok(&truststack(&[
        "ledger",
        "replay",
        &db,
        "--policy",
        &example("policies/scan-rate-limit.tsp"),
        "--catalog",
        &catalog,
    ]));
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows[0].starts_with("index  time"), "{table}");
    assert_contains!(rows[0], "recorded → replayed", "{table}");
    assert!(
        rows[1].starts_with("  111  2026-11-13T09:06:01.000Z")
            && rows[1].contains("exploit_runner")
            && rows[1].contains("require_approval → allow")
            && rows[1].contains("seed#2 → -"),
        "{table}"
    );
    assert!(
        rows[2].starts_with("  114  ")
            && rows[2].contains("http_upload")
            && rows[2].contains("deny → allow")
            && rows[2].contains("seed#2,seed#3 → -"),
        "{table}"
    );
    assert!(
        rows[3].starts_with("2 of 114 recorded calls would be decided differently under ")
            && rows[3].contains("scan-rate-limit.tsp (bundle sha256:"),
        "{table}"
    );

    // The delegation-root bundle stops the same steps of this single-agent campaign.
    let out = ok(&truststack(&[
        "ledger",
        "replay",
        &db,
        "--policy",
        &example("policies/delegation-root.tsp"),
        "--catalog",
        &catalog,
    ]));
    assert!(out.starts_with("0 of 114"), "{out}");

    // Without the catalog every tool is unknown, and said so.
    let out = truststack(&["ledger", "replay", &db, "--json"]);
    ok(&out);
    assert_contains!(stderr(&out), "warning: no --catalog");
    let first = json(stdout(&out).lines().next().unwrap());
    assert_eq!(first["replayed"], "deny");
    assert_contains!(first["reason"].as_str().unwrap(), "not in the catalog");

    refused(
        &truststack(&["ledger", "replay", &db, "--policy", "no-such.tsp"]),
        "no-such.tsp",
    );
    let bad = write_file(tmp.path(), "bad.tsp", "POLICY oops: ACTION: MAYBE\n");
    refused(
        &truststack(&["ledger", "replay", &db, "--policy", bad.to_str().unwrap()]),
        "error(s) in the policies",
    );
    refused(
        &truststack(&["ledger", "replay", "no-such.db", "--catalog", &catalog]),
        "no-such.db",
    );
}

/// A copy of the ledger `db` with `sql` applied to it.
fn tampered(db: &str, name: &str, sql: &str) -> String {
    let copy = Path::new(db).with_file_name(name);
    std::fs::copy(db, &copy).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    conn.execute_batch(sql).unwrap();
    copy.display().to_string()
}

fn fails(db: &str) -> String {
    let out = truststack(&["ledger", "verify", db]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn tampering_is_named_at_its_index() {
    let tmp = tempfile::tempdir().unwrap();
    let db = campaign_ledger(tmp.path());
    let record: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            &format!("SELECT record FROM entries WHERE idx = {EXFIL}"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    let edited = record.replacen("\"deny\"", "\"allow\"", 1);
    assert_ne!(record, edited);
    let sql_text = edited.replace('\'', "''");

    // The exfiltration denial turned into an allow.
    let copy = tampered(
        &db,
        "edited.db",
        &format!("UPDATE entries SET record = '{sql_text}' WHERE idx = {EXFIL};"),
    );
    assert_eq!(
        fails(&copy).trim(),
        format!("FAILED: entry {EXFIL}: stored record does not hash to its leaf")
    );

    // The same edit with its leaf hash recomputed: the stored tree node over it disagrees.
    let leaf = hex(&leaf_hash(edited.as_bytes()));
    let copy = tampered(
        &db,
        "rehashed.db",
        &format!("UPDATE entries SET record = '{sql_text}', leaf = X'{leaf}' WHERE idx = {EXFIL};"),
    );
    let text = fails(&copy);
    assert!(
        text.starts_with("FAILED: entries 114..=115: stored tree node"),
        "{text}"
    );

    // A deleted entry, and a truncated log.
    let copy = tampered(&db, "deleted.db", "DELETE FROM entries WHERE idx = 60;");
    assert_eq!(
        fails(&copy).trim(),
        "FAILED: entry 60 missing: indices jump from 59 to 61"
    );
    let copy = tampered(&db, "truncated.db", "DELETE FROM entries WHERE idx >= 100;");
    assert_contains!(
        fails(&copy),
        "the log has only 100 entries; entries 100..116 are missing",
        "truncation"
    );

    // The original still verifies.
    ok(&truststack(&["ledger", "verify", &db]));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn bad_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.db");
    let missing = missing.to_str().unwrap();
    refused(&truststack(&["ledger", "verify", missing]), "no such file");
    refused(&truststack(&["ledger", "show", missing]), "no such file");
    refused(
        &truststack(&["ledger", "checkpoint", missing]),
        "no such file",
    );
    let junk = write_file(tmp.path(), "junk.db", b"not a database at all");
    let out = truststack(&["ledger", "show", junk.to_str().unwrap()]);
    refused(&out, "junk.db");
    // A file that is not a ledger does not verify.
    let out = truststack(&["ledger", "verify", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("FAILED: cannot read the ledger"));
}

/// What every read-only command prints for ledger `db`: the same for a copy, wherever it is.
fn views(db: &str) -> Vec<String> {
    let catalog = example("catalog.toml");
    let policy = example("policies/seed.tsp");
    [
        vec!["ledger", "key", db],
        vec!["ledger", "checkpoint", db],
        vec!["ledger", "show", db],
        vec!["ledger", "show", db, "--json", "--decision", "deny"],
        vec!["ledger", "export", db],
        vec!["ledger", "proof", "inclusion", db, "--index", "114"],
        vec!["ledger", "proof", "consistency", db, "--old", "7"],
        vec![
            "ledger",
            "replay",
            db,
            "--policy",
            &policy,
            "--catalog",
            &catalog,
        ],
    ]
    .iter()
    .map(|args| ok(&truststack(args)))
    .collect()
}

#[test]
fn a_ledger_migrates_to_postgres_and_back_and_reads_the_same_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let db = campaign_ledger(tmp.path());
    let pg = truststack_testkit::postgres::database();
    let url = pg.url();

    let out = ok(&truststack(&["ledger", "migrate", &db, url]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("copied {db} to {url}"));
    let verified = ok(&truststack(&["ledger", "verify", &db]));
    assert_eq!(lines[1], format!("source {}", verified.trim()));
    // The copy is checked against the source's key, not the key it records.
    assert_eq!(
        lines[2],
        format!(
            "copy   {}",
            verified.trim().replace(", as recorded in the ledger", "")
        )
    );

    // The PostgreSQL ledger verifies against the published key, and reads as the file does.
    let key = published_key(&db).to_string();
    let on_postgres = ok(&truststack(&["ledger", "verify", url, "--key", &key]));
    assert!(
        on_postgres.starts_with(&format!(
            "ok: {ENTRIES} entries, 1 checkpoint verified, root "
        )),
        "{on_postgres}"
    );
    let expected = views(&db);
    assert_eq!(views(url), expected);

    // And back, into a new file.
    let back = tmp.path().join("back.db");
    let back = back.to_str().unwrap();
    ok(&truststack(&["ledger", "migrate", url, back]));
    ok(&truststack(&["ledger", "verify", back, "--key", &key]));
    assert_eq!(views(back), expected);

    // Neither copy is overwritten: a target must be empty.
    let out = truststack(&["ledger", "migrate", &db, url]);
    refused(
        &out,
        &format!(
            "{url} is not empty (entries: {ENTRIES}, checkpoints: 1, verifier key: yes): a \
             ledger is copied into an empty one only"
        ),
    );
    refused(
        &truststack(&["ledger", "migrate", url, back]),
        &format!("{back} is not empty"),
    );
    refused(
        &truststack(&["ledger", "migrate", &db, &db]),
        "are the same ledger",
    );
}

#[test]
fn a_tampered_postgres_ledger_fails_verification_at_its_index_and_is_not_migrated() {
    let tmp = tempfile::tempdir().unwrap();
    let db = campaign_ledger(tmp.path());
    let pg = truststack_testkit::postgres::database();
    ok(&truststack(&["ledger", "migrate", &db, pg.url()]));

    // The exfiltration denial turned into an allow, in its row.
    pg.connect()
        .batch_execute(&format!(
            "UPDATE entries SET record = regexp_replace(record, '\"deny\"', '\"allow\"') \
             WHERE idx = {EXFIL}"
        ))
        .unwrap();
    assert_eq!(
        fails(pg.url()).trim(),
        format!("FAILED: entry {EXFIL}: stored record does not hash to its leaf")
    );
    // Rehashed: the stored tree disagrees.
    pg.connect()
        .batch_execute(&format!(
            "UPDATE entries SET leaf = sha256('\\x00'::bytea || convert_to(record, 'UTF8')) \
             WHERE idx = {EXFIL}"
        ))
        .unwrap();
    assert!(
        fails(pg.url()).starts_with("FAILED: entries 114..=115: stored tree node"),
        "{}",
        fails(pg.url())
    );

    // Evidence stays where it is: a ledger that does not verify is not copied.
    let copy = tmp.path().join("copy.db");
    refused(
        &truststack(&["ledger", "migrate", pg.url(), copy.to_str().unwrap()]),
        &format!(
            "{} does not verify, so it was not copied: entries 114..=115",
            pg.url()
        ),
    );
}

#[test]
fn a_postgres_url_is_named_without_its_password() {
    let port = truststack_testkit::net::free_port();
    let url = format!("postgres://ts:s3cret@127.0.0.1:{port}/ledger");
    for args in [
        vec!["ledger", "verify", &url],
        vec!["ledger", "show", &url],
        vec!["ledger", "migrate", &url, "copy.db"],
    ] {
        // Like a missing file: bad input (exit 2), not a ledger that failed verification.
        let out = truststack(&args);
        refused(
            &out,
            &format!(
                "postgres://ts:***@127.0.0.1:{port}/ledger: error connecting to server: \
                 Connection refused"
            ),
        );
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!text.contains("s3cret"), "{text}");
    }
    refused(
        &truststack(&["ledger", "show", "postgres://ts:s3cret@host:port/ledger"]),
        "postgres://ts:***@host:port/ledger: not a valid PostgreSQL connection URL: invalid \
         connection string: invalid value for option `port`",
    );
}
