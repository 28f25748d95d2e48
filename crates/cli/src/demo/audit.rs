//! Audit: the gateway's ledger afterwards, checked as an independent auditor would — with the
//! log's public key only.

use super::campaign::Outcome;
use super::Story;
use anyhow::Context;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use truststack_engine::ledger::{base64_hash, verify_file, Ledger, LogKey};
use truststack_engine::{Decision, Record, Verdict};

/// What the audit showed, for `--json`.
#[derive(Serialize, Default)]
pub struct Findings {
    pub verified: bool,
    pub entries: u64,
    /// Records by kind (`decision`, `observation`, `approval`, …).
    pub records: BTreeMap<String, u64>,
    pub checkpoint_size: u64,
    pub verifier_key: String,
    /// The exfiltration denial's entry, and whether its inclusion proof checked.
    pub exfiltration_index: Option<u64>,
    pub inclusion_proof_verified: bool,
    /// The entry edited in the copy, and where verification of the copy failed.
    pub edited_index: Option<u64>,
    pub tamper_detected_at: Option<u64>,
}

/// The policies of a decision record, `id (ACTION)`, enforced ones that fired.
fn fired(decision: &Decision) -> String {
    decision
        .policies
        .iter()
        .map(|p| {
            let lease = p
                .lease_until
                .as_deref()
                .map_or(String::new(), |l| format!(", covered by a lease until {l}"));
            format!("{} ({}{lease})", p.id, p.action.as_str())
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A record kind in words.
fn noun(kind: &str, n: u64) -> String {
    let (one, many) = match kind {
        "decision" => ("decision", "decisions"),
        "observation" => (
            "observation (a tool's result)",
            "observations (tools' results)",
        ),
        "approval" => ("approval answer", "approval answers"),
        "policy_activation" => ("policy bundle activation", "policy bundle activations"),
        "identity_issued" => ("credential issued", "credentials issued"),
        "identity_revoked" => ("revocation", "revocations"),
        "tool_pinned" => ("tool pinned on first sight", "tools pinned on first sight"),
        "tool_definition_changed" => ("changed tool definition", "changed tool definitions"),
        other => (other, other),
    };
    if n == 1 { one } else { many }.to_string()
}

pub fn run(dir: &Path, outcome: &Outcome, story: &mut Story) -> anyhow::Result<Findings> {
    story.section(
        "4. AUDIT — the tamper-evident ledger",
        "Every decision, tool call, observation and approval is a record in an RFC 6962 Merkle tree\n\
         with signed checkpoints: anyone holding the log's public key can check all of it, and no\n\
         one can edit history unnoticed.",
    );
    let st = story.style;
    let mut f = Findings::default();
    let path = &outcome.ledger;
    let key_file = path.with_extension("key");
    let key = LogKey::load(&key_file)
        .with_context(|| format!("{}: the ledger's key", key_file.display()))?
        .verifier()
        .clone();
    f.verifier_key = key.to_string();

    // 1. Verify everything against the published key.
    let report = verify_file(path, Some(&key));
    story.line(format!(
        "  $ truststack ledger verify {} --key {}\n    {}",
        path.display(),
        f.verifier_key,
        match &report {
            Ok(r) => r.to_string(),
            Err(e) => e.to_string(),
        }
    ));
    f.verified = report.is_ok();
    story.check(
        "ledger-verified",
        "audit",
        "the ledger verifies",
        f.verified,
        "every record rehashed, the Merkle tree recomputed, every checkpoint signature checked",
    );

    // 2. What it holds, and the latest signed checkpoint.
    let ledger =
        Ledger::open_read_only(path).with_context(|| format!("ledger {}", path.display()))?;
    f.entries = ledger.len();
    let entries = ledger.entries(0..ledger.len())?;
    let mut exfil = None;
    for entry in &entries {
        let record = Record::decode(entry.index, &entry.record()?)?;
        *f.records.entry(record.kind().to_string()).or_default() += 1;
        if let Record::Decision { call, decision } = record {
            if call.tool == "http_upload" && decision.decision == Verdict::Deny {
                exfil = Some((entry.clone(), call, decision));
            }
        }
    }
    story.line(format!(
        "  {} records: {}",
        f.entries,
        f.records
            .iter()
            .map(|(k, n)| format!("{n} {}", noun(k, *n)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let checkpoint = ledger
        .latest_checkpoint()
        .context("the ledger holds no signed checkpoint")?;
    f.checkpoint_size = checkpoint.checkpoint.size;
    story.line("  the latest signed checkpoint (C2SP tlog-checkpoint, Ed25519 signed note):");
    for line in checkpoint.note.lines() {
        let line = format!("    {}", st.dim(line));
        story.line(line.trim_end());
    }

    // 3. The exfiltration denial: who, on whose authority, and its inclusion proof.
    let (entry, call, decision) = exfil.context("no exfiltration denial in the ledger")?;
    f.exfiltration_index = Some(entry.index);
    let mut chain = call.chain.clone();
    chain.push(call.agent.clone());
    story.line(format!(
        "  entry {}: the exfiltration denial — who did what, on whose authority, and why:",
        entry.index
    ));
    story.line(format!(
        "    {} {} → {}",
        call.tool,
        call.args,
        st.red(decision.decision.as_str())
    ));
    story.line(format!("    chain of command: {}", chain.join(" → ")));
    story.line(format!("    policies: {}", fired(&decision)));
    story.line(format!(
        "    decision {}, policy bundle {}",
        decision.decision_id, decision.policy_hash
    ));
    let proof = ledger.inclusion_proof(entry.index, checkpoint.checkpoint.size)?;
    f.inclusion_proof_verified = proof
        .verify(&entry.leaf, &checkpoint.checkpoint.root)
        .is_ok();
    story.line(format!(
        "  its inclusion proof (RFC 9162) in the checkpoint of {} entries: leaf {}, path",
        checkpoint.checkpoint.size,
        base64_hash(&entry.leaf)
    ));
    for h in &proof.path {
        story.line(format!("    {}", st.dim(&base64_hash(h))));
    }
    story.check(
        "inclusion-proof",
        "audit",
        "the exfiltration denial is provably in the signed log",
        f.inclusion_proof_verified,
        format!(
            "leaf + {} hashes recompute the signed root {}",
            proof.path.len(),
            base64_hash(&checkpoint.checkpoint.root)
        ),
    );
    drop(ledger);

    // 4. An insider edits one record of a copy: the denial becomes an allow.
    let copy = dir.join("ledger-tampered.db");
    std::fs::copy(path, &copy)?;
    {
        let conn = rusqlite::Connection::open(&copy)?;
        let stored: String = conn.query_row(
            "SELECT record FROM entries WHERE idx = ?1",
            [entry.index],
            |r| r.get(0),
        )?;
        conn.execute(
            "UPDATE entries SET record = ?1 WHERE idx = ?2",
            rusqlite::params![
                stored.replacen("\"decision\":\"deny\"", "\"decision\":\"allow\"", 1),
                entry.index
            ],
        )?;
    }
    f.edited_index = Some(entry.index);
    let tampered = verify_file(&copy, Some(&key));
    f.tamper_detected_at = tampered.as_ref().err().and_then(|e| e.first_bad_index());
    story.line(format!(
        "  an insider edits entry {} in a copy, turning the denial into an allow:",
        entry.index
    ));
    story.line(format!(
        "  $ truststack ledger verify {} --key {}\n    {}",
        copy.display(),
        f.verifier_key,
        match &tampered {
            Ok(r) => format!("{r} (the edit went unnoticed!)"),
            Err(e) => st.red(&format!("FAILED: {e}")),
        }
    ));
    story.check(
        "tamper-detected",
        "audit",
        "editing one record is detected at the exact entry",
        f.tamper_detected_at == f.edited_index,
        format!(
            "edited entry {}, verification fails at entry {}",
            entry.index,
            f.tamper_detected_at
                .map_or("(none)".to_string(), |i| i.to_string())
        ),
    );
    Ok(f)
}
