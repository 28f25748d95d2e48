//! `truststack identity …` end to end: the real binary on a real issuer directory — init,
//! issue, delegate (attenuation only), inspect (the chain of command as a tree), revoke,
//! JWKS, rotate and retire.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::{ok, refused, stderr};
use truststack_testkit::assert_contains;

/// The binary with the issuer directory under `dir`.
fn in_issuer(dir: &Path) -> Command {
    let mut command = common::cli();
    command.env("TRUSTSTACK_ISSUER_DIR", dir.join("issuer"));
    command
}

fn truststack(dir: &Path, args: &[&str]) -> Output {
    in_issuer(dir).args(args).output().unwrap()
}

/// `truststack identity inspect -` with `token` on stdin.
fn inspect_stdin(dir: &Path, token: &str) -> Output {
    let mut child = in_issuer(dir)
        .args(["identity", "inspect", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// An agent credential for `agent`, acting for `owner`, with `tools`.
fn issue(dir: &Path, agent: &str, owner: &str, tools: &str) -> String {
    ok(&truststack(
        dir,
        &[
            "identity", "issue", "--agent", agent, "--owner", owner, "--tools", tools,
        ],
    ))
    .trim()
    .to_string()
}

#[test]
fn init_issue_delegate_inspect_revoke_and_jwks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let init = ok(&truststack(
        dir,
        &["identity", "init", "--trust-domain", "acme.example"],
    ));
    assert!(
        init.starts_with("issuer spiffe://acme.example created in "),
        "{init}"
    );
    // Again: the same issuer, said so.
    let again = ok(&truststack(
        dir,
        &["identity", "init", "--trust-domain", "acme.example"],
    ));
    assert_contains!(again, "already exists in");
    // The private key is readable by its owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let keys = dir.join("issuer/keys");
        let key = std::fs::read_dir(&keys)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".key.pem"))
            .unwrap();
        assert_eq!(
            std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    let orch = ok(&truststack(
        dir,
        &[
            "identity",
            "issue",
            "--agent",
            "orchestrator",
            "--owner",
            "user:alice@acme.example",
            "--tools",
            "ScanTool,CodeAnalysisTool",
            "--ttl",
            "1h",
        ],
    ));
    let orch = orch.trim();
    assert_eq!(orch.split('.').count(), 3, "stdout is the token alone");
    assert_eq!(orch.lines().count(), 1);
    let recon = ok(&truststack(
        dir,
        &[
            "identity", "delegate", "--from", orch, "--agent", "recon", "--tools", "ScanTool",
        ],
    ));
    let recon = recon.trim();
    // The delegation is described on stderr.
    let described = stderr(&truststack(
        dir,
        &[
            "identity", "delegate", "--from", orch, "--agent", "scout", "--tools", "ScanTool",
        ],
    ));
    assert_contains!(
        described,
        "chain      user:alice@acme.example → spiffe://acme.example/agent/orchestrator"
    );

    // Widening is refused with the reason.
    let wide = truststack(
        dir,
        &[
            "identity",
            "delegate",
            "--from",
            recon,
            "--agent",
            "x",
            "--tools",
            "ExploitationTool",
        ],
    );
    refused(&wide, "widens the tools");
    let longer = truststack(
        dir,
        &[
            "identity", "delegate", "--from", recon, "--agent", "x", "--tools", "ScanTool",
            "--ttl", "2h",
        ],
    );
    refused(&longer, "extends the expiry");
    // Another agent's id, outside recon's subtree: refused (a name is placed below recon).
    let other = truststack(
        dir,
        &[
            "identity",
            "delegate",
            "--from",
            recon,
            "--agent",
            "spiffe://acme.example/agent/orchestrator",
            "--tools",
            "ScanTool",
        ],
    );
    refused(
        &other,
        "is not below spiffe://acme.example/agent/orchestrator/recon",
    );

    // The chain of command, drawn as a tree.
    let shown = ok(&truststack(dir, &["identity", "inspect", recon]));
    assert!(shown.starts_with("valid"), "{shown}");
    assert_contains!(
        shown,
        "user:alice@acme.example  (the human in command)\n\
             └─ spiffe://acme.example/agent/orchestrator\n   \
             └─ spiffe://acme.example/agent/orchestrator/recon  tools: ScanTool"
    );
    let json: Value = serde_json::from_str(&ok(&truststack(
        dir,
        &["identity", "inspect", "--json", recon],
    )))
    .unwrap();
    assert_eq!(
        json["subject"],
        "spiffe://acme.example/agent/orchestrator/recon"
    );
    assert_eq!(
        json["chain"],
        serde_json::json!([
            "user:alice@acme.example",
            "spiffe://acme.example/agent/orchestrator"
        ])
    );
    assert_eq!(json["tools"], serde_json::json!(["ScanTool"]));
    // `-` reads the token from stdin.
    // The same report, but for the relative times (`(0s ago)`), which move with the clock.
    let piped = ok(&inspect_stdin(dir, recon));
    let fixed = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split(" (").next().unwrap_or(l).to_string())
            .collect()
    };
    assert_eq!(fixed(&piped), fixed(&shown));

    // Humans get roles and groups.
    let approver = ok(&truststack(
        dir,
        &[
            "identity",
            "issue",
            "--user",
            "user:oncall@acme.example",
            "--roles",
            "approver",
            "--groups",
            "security-oncall",
        ],
    ));
    let shown = ok(&truststack(dir, &["identity", "inspect", approver.trim()]));
    assert_contains!(shown, "roles      approver");
    assert_contains!(shown, "groups     security-oncall");
    assert!(
        !shown.contains("chain of command"),
        "a human has none: {shown}"
    );
    // A human's credential cannot be delegated.
    let out = truststack(
        dir,
        &[
            "identity",
            "delegate",
            "--from",
            approver.trim(),
            "--agent",
            "x",
            "--tools",
            "ScanTool",
        ],
    );
    refused(&out, "only agent credentials can be delegated");

    // Revoking the orchestrator's credential revokes what was delegated from it.
    let record: Value = serde_json::from_str(&ok(&truststack(
        dir,
        &[
            "identity",
            "revoke",
            "--token",
            orch,
            "--by",
            "user:secops@acme.example",
            "--reason",
            "campaign detected",
        ],
    )))
    .unwrap();
    assert_eq!(record["by"], "user:secops@acme.example");
    assert_eq!(record["kind"], "identity_revoked");
    assert_eq!(record["reason"], "campaign detected");
    let after = truststack(dir, &["identity", "inspect", recon]);
    assert_eq!(after.status.code(), Some(1));
    let text = String::from_utf8_lossy(&after.stdout);
    assert!(
        text.starts_with("NOT VALID: delegated from credential")
            && text.contains("which is revoked"),
        "{text}"
    );
    // What it said is still shown, decoded without verification.
    assert_contains!(text, "decoded without verification");
    assert_contains!(
        text,
        "\"sub\": \"spiffe://acme.example/agent/orchestrator/recon\""
    );
    // Twice is refused, naming the first.
    let twice = truststack(dir, &["identity", "revoke", "--token", orch]);
    assert_eq!(twice.status.code(), Some(2));
    assert!(
        stderr(&twice).contains("already revoked")
            && stderr(&twice).contains("user:secops@acme.example"),
        "{}",
        stderr(&twice)
    );

    // A forged token is named as such.
    let mut forged = recon.to_string();
    forged.pop();
    forged.push(if recon.ends_with('A') { 'B' } else { 'A' });
    let bad = truststack(dir, &["identity", "inspect", &forged]);
    assert_ne!(bad.status.code(), Some(0));

    let jwks: Value = serde_json::from_str(&ok(&truststack(dir, &["identity", "jwks"]))).unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    ok(&truststack(dir, &["identity", "rotate"]));
    let jwks: Value = serde_json::from_str(&ok(&truststack(dir, &["identity", "jwks"]))).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
}

#[test]
fn errors_name_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = truststack(dir, &["identity", "jwks"]);
    refused(
        &out,
        "no issuer here; create one with `truststack identity init",
    );
    let issuer_dir = dir.join("issuer").display().to_string();
    assert_eq!(
        stderr(&out).matches(&issuer_dir).count(),
        2,
        "the directory, and the command that creates it: {}",
        stderr(&out)
    );
    ok(&truststack(dir, &["identity", "init"]));
    // Another trust domain for the same directory is refused.
    let out = truststack(dir, &["identity", "init", "--trust-domain", "acme.example"]);
    refused(&out, "already exists for trust domain `truststack.local`");
    let out = truststack(
        dir,
        &[
            "identity", "issue", "--agent", "a", "--owner", "alice", "--tools", "X",
        ],
    );
    refused(&out, "--owner");
    let out = truststack(
        dir,
        &[
            "identity", "issue", "--agent", "a", "--owner", "user:a", "--tools", "X", "--ttl",
            "5 mins",
        ],
    );
    refused(&out, "--ttl");
    let out = truststack(dir, &["identity", "inspect", "not-a-token"]);
    refused(&out, "three");
    // A rejected parent is named once, with its cause once.
    let out = truststack(
        dir,
        &[
            "identity",
            "delegate",
            "--from",
            "not-a-token",
            "--agent",
            "x",
            "--tools",
            "X",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: the parent credential is rejected: malformed token"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stderr(&out).matches("malformed token").count(),
        1,
        "{}",
        stderr(&out)
    );
    // Revoke needs to know what.
    let out = truststack(dir, &["identity", "revoke"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn revoking_a_human_revokes_the_agents_acting_for_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(&truststack(dir, &["identity", "init"]));
    let alice = issue(dir, "orchestrator", "user:alice", "ScanTool");
    let bob = issue(dir, "helper", "user:bob", "ScanTool");
    let out = truststack(
        dir,
        &[
            "identity",
            "revoke",
            "--identity",
            "user:alice",
            "--by",
            "user:admin",
        ],
    );
    let record: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(record["identity"], "user:alice");
    assert!(
        stderr(&out).starts_with("revoked user:alice: "),
        "{}",
        stderr(&out)
    );
    let after = truststack(dir, &["identity", "inspect", &alice]);
    assert_eq!(after.status.code(), Some(1));
    ok(&truststack(dir, &["identity", "inspect", &bob]));
    // No new credential for her, or on her behalf.
    let out = truststack(
        dir,
        &[
            "identity",
            "issue",
            "--agent",
            "x",
            "--owner",
            "user:alice",
            "--tools",
            "ScanTool",
        ],
    );
    refused(&out, "is revoked");
    // A bare name is an agent of the trust domain.
    let record: Value = serde_json::from_str(&ok(&truststack(
        dir,
        &["identity", "revoke", "--identity", "helper"],
    )))
    .unwrap();
    assert_eq!(record["identity"], "spiffe://truststack.local/agent/helper");
    assert_eq!(
        truststack(dir, &["identity", "inspect", &bob])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn a_retired_key_no_longer_verifies_what_it_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(&truststack(dir, &["identity", "init"]));
    let old = issue(dir, "orchestrator", "user:alice", "*");
    let jwks: Value = serde_json::from_str(&ok(&truststack(dir, &["identity", "jwks"]))).unwrap();
    let old_kid = jwks["keys"][0]["kid"].as_str().unwrap().to_string();
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");

    let rotated = ok(&truststack(dir, &["identity", "rotate"]));
    assert!(rotated.starts_with("new signing key "), "{rotated}");
    let new = issue(dir, "recon", "user:alice", "ScanTool");
    let shown = ok(&truststack(dir, &["identity", "inspect", &old]));
    assert!(shown.contains(&old_kid), "{shown}");

    // The active key cannot be retired; the old one can.
    let active = ok(&truststack(dir, &["identity", "inspect", "--json", &new]));
    let active: Value = serde_json::from_str(&active).unwrap();
    let out = truststack(
        dir,
        &[
            "identity",
            "retire",
            "--kid",
            active["kid"].as_str().unwrap(),
        ],
    );
    refused(&out, "active signing key");
    let retired = ok(&truststack(dir, &["identity", "retire", "--kid", &old_kid]));
    assert_contains!(retired, "retired");
    let out = truststack(dir, &["identity", "inspect", &old]);
    assert_eq!(out.status.code(), Some(1));
    assert_contains!(
        String::from_utf8_lossy(&out.stdout),
        "no trusted issuer key has kid"
    );
    ok(&truststack(dir, &["identity", "inspect", &new]));
    let jwks: Value = serde_json::from_str(&ok(&truststack(dir, &["identity", "jwks"]))).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
}
