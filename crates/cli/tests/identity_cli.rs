//! `truststack identity …` end to end: the real binary on a real issuer directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn truststack(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_truststack"))
        .args(args)
        .env("TRUSTSTACK_ISSUER_DIR", dir.join("issuer"))
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

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn init_issue_delegate_inspect_revoke_and_jwks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let init = ok(&truststack(
        dir,
        &["identity", "init", "--trust-domain", "acme.example"],
    ));
    assert!(init.contains("spiffe://acme.example"), "{init}");
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
    let recon = ok(&truststack(
        dir,
        &[
            "identity", "delegate", "--from", orch, "--agent", "recon", "--tools", "ScanTool",
        ],
    ));
    let recon = recon.trim();

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
    assert_eq!(wide.status.code(), Some(2));
    assert!(
        stderr(&wide).contains("widens the tools"),
        "{}",
        stderr(&wide)
    );
    let longer = truststack(
        dir,
        &[
            "identity", "delegate", "--from", recon, "--agent", "x", "--tools", "ScanTool",
            "--ttl", "2h",
        ],
    );
    assert_eq!(longer.status.code(), Some(2), "{}", stderr(&longer));

    // The chain of command, drawn as a tree.
    let shown = ok(&truststack(dir, &["identity", "inspect", recon]));
    assert!(shown.starts_with("valid"), "{shown}");
    assert!(
        shown.contains(
            "user:alice@acme.example  (the human in command)\n\
             └─ spiffe://acme.example/agent/orchestrator\n   \
             └─ spiffe://acme.example/agent/recon  tools: ScanTool"
        ),
        "{shown}"
    );
    let json: Value = serde_json::from_str(&ok(&truststack(
        dir,
        &["identity", "inspect", "--json", recon],
    )))
    .unwrap();
    assert_eq!(json["subject"], "spiffe://acme.example/agent/recon");

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
    assert!(shown.contains("roles      approver"), "{shown}");

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
    let after = truststack(dir, &["identity", "inspect", recon]);
    assert_eq!(after.status.code(), Some(1));
    let text = String::from_utf8_lossy(&after.stdout);
    assert!(
        text.contains("NOT VALID") && text.contains("revoked"),
        "{text}"
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
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("issuer"), "{}", stderr(&out));
    ok(&truststack(dir, &["identity", "init"]));
    let out = truststack(
        dir,
        &[
            "identity", "issue", "--agent", "a", "--owner", "alice", "--tools", "X",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--owner"), "{}", stderr(&out));
    let out = truststack(
        dir,
        &[
            "identity", "issue", "--agent", "a", "--owner", "user:a", "--tools", "X", "--ttl",
            "5 mins",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--ttl"), "{}", stderr(&out));
    let out = truststack(dir, &["identity", "inspect", "not-a-token"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("three"), "{}", stderr(&out));
}
