//! Interoperability with PyJWT: a TrustStack token verifies in Python against the JWKS, and a
//! token PyJWT signs with the issuer's PEM key verifies in TrustStack. Runs `tests/interop.py`;
//! fails, naming the install command, when the project's Python environment lacks PyJWT.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use truststack_identity::{
    AgentId, AgentRequest, Claims, DelegationRequest, Issuer, Principal, ToolSet, TrustDomain,
    UserId, VerifyError,
};
use truststack_testkit::assert_contains;
use truststack_testkit::write_file;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop.py")
}

fn python(args: &[&str]) -> Output {
    Command::new(truststack_testkit::python())
        .arg(script())
        .args(args)
        .output()
        .expect("the project's Python runs")
}

fn setup() -> (tempfile::TempDir, Issuer, TrustDomain) {
    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomain::new("acme.example").unwrap();
    let issuer = Issuer::init(&dir.path().join("issuer"), &td).unwrap();
    (dir, issuer, td)
}

#[test]
fn pyjwt_verifies_a_truststack_token_against_the_jwks() {
    let (dir, issuer, td) = setup();
    let orch = issuer
        .issue_agent(&AgentRequest {
            agent: AgentId::new(&td, "orchestrator").unwrap(),
            owner: UserId::parse("user:alice@acme.example").unwrap(),
            tools: ToolSet::parse_list("ScanTool,CodeAnalysisTool").unwrap(),
            ttl: Duration::from_secs(3600),
            audience: None,
        })
        .unwrap();
    // Rotate so the JWKS holds two keys and the token's kid is not the first.
    issuer.rotate().unwrap();
    let recon = issuer
        .delegate(
            &orch.token,
            &DelegationRequest {
                agent: "recon".into(),
                tools: ToolSet::parse_list("ScanTool").unwrap(),
                ttl: Some(Duration::from_secs(600)),
            },
        )
        .unwrap();
    let jwks = write_file(dir.path(), "jwks.json", issuer.jwks().to_string());

    for (issued, kid) in [
        (&orch, &orch.credential.kid),
        (&recon, &recon.credential.kid),
    ] {
        let token = write_file(dir.path(), "token.txt", &issued.token);
        let out = python(&[
            "verify",
            "--jwks",
            jwks.to_str().unwrap(),
            "--token",
            token.to_str().unwrap(),
            "--issuer",
            "spiffe://acme.example",
            "--audience",
            "truststack",
        ]);
        assert!(
            out.status.success(),
            "PyJWT rejected a TrustStack token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(printed["header"]["alg"], "EdDSA");
        assert_eq!(printed["header"]["kid"], kid.as_str());
        let claims: Claims = serde_json::from_value(printed["claims"].clone()).unwrap();
        assert_eq!(claims, issued.credential.to_claims());
    }

    // PyJWT sees the same RFC 8693 nesting.
    let token = write_file(dir.path(), "token.txt", &recon.token);
    let out = python(&[
        "verify",
        "--jwks",
        jwks.to_str().unwrap(),
        "--token",
        token.to_str().unwrap(),
        "--issuer",
        "spiffe://acme.example",
        "--audience",
        "truststack",
    ]);
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed["claims"]["act"],
        json!({"sub": "spiffe://acme.example/agent/orchestrator",
               "act": {"sub": "user:alice@acme.example"}})
    );

    // And PyJWT rejects a tampered one, or the wrong audience.
    let mut parts: Vec<String> = recon.token.split('.').map(str::to_string).collect();
    let mut claims = recon.credential.to_claims();
    claims.tools = vec!["*".into()];
    parts[1] = base64_url(&serde_json::to_vec(&claims).unwrap());
    std::fs::write(&token, parts.join(".")).unwrap();
    let out = python(&[
        "verify",
        "--jwks",
        jwks.to_str().unwrap(),
        "--token",
        token.to_str().unwrap(),
        "--issuer",
        "spiffe://acme.example",
        "--audience",
        "truststack",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_contains!(
        String::from_utf8_lossy(&out.stderr),
        "InvalidSignatureError"
    );
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn truststack_accepts_a_token_pyjwt_signed_with_the_issuer_key() {
    let (dir, issuer, td) = setup();
    let parent = issuer
        .issue_agent(&AgentRequest {
            agent: AgentId::new(&td, "orchestrator").unwrap(),
            owner: UserId::parse("user:alice@acme.example").unwrap(),
            tools: ToolSet::parse_list("ScanTool").unwrap(),
            ttl: Duration::from_secs(3600),
            audience: None,
        })
        .unwrap();
    let mut claims = parent.credential.to_claims();
    claims.sub = "spiffe://acme.example/agent/orchestrator/recon".into();
    claims.jti = "pyjwt-1".into();
    claims.act = truststack_identity::Actor::from_chain(&[
        Principal::parse("user:alice@acme.example").unwrap(),
        Principal::parse("spiffe://acme.example/agent/orchestrator").unwrap(),
    ]);
    claims.ancestors = vec![parent.credential.jti.clone()];
    let claims_path = write_file(
        dir.path(),
        "claims.json",
        serde_json::to_vec(&claims).unwrap(),
    );
    let kid = issuer.active_kid();
    let sign = |kid: &str| {
        // `--kid=…`: a thumbprint can begin with `-`, which argparse would read as an option.
        let kid = format!("--kid={kid}");
        let out = python(&[
            "sign",
            "--key",
            issuer.private_key_path().to_str().unwrap(),
            &kid,
            "--claims",
            claims_path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "PyJWT could not sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };

    let token = sign(&kid);
    let v = issuer.verify(&token).unwrap();
    assert_eq!(
        v.subject.as_str(),
        "spiffe://acme.example/agent/orchestrator/recon"
    );
    assert_eq!(
        v.chain_strings(),
        [
            "user:alice@acme.example",
            "spiffe://acme.example/agent/orchestrator"
        ]
    );
    assert_eq!(v.jti, "pyjwt-1");
    assert_eq!(v.kid, kid);

    // The same key under a kid TrustStack does not know is refused; so is a revoked ancestor.
    assert!(matches!(
        issuer.verify(&sign("not-our-kid")),
        Err(VerifyError::UnknownKid { .. })
    ));
    issuer
        .revoke_jti(&parent.credential.jti, "user:admin", None)
        .unwrap();
    assert!(matches!(
        issuer.verify(&token),
        Err(VerifyError::DelegatedFromRevoked { .. })
    ));
}
