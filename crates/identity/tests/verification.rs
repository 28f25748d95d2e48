//! Issuing, delegating and verifying credentials through an issuer directory, and every way a
//! credential is rejected, each with its precise error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use truststack_identity::{
    AgentId, AgentRequest, ChainError, Defect, DelegationError, DelegationRequest, Issued, Issuer,
    IssuerError, ManualClock, Principal, TokenPart, ToolSet, TrustDomain, UserId, UserRequest,
    VerifyError,
};

const T0: u64 = 1_794_560_400; // 2026-11-13T09:00:00Z
const ALICE: &str = "user:alice@acme.example";

struct Fixture {
    _dir: tempfile::TempDir,
    issuer: Issuer,
    clock: Arc<ManualClock>,
    td: TrustDomain,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomain::new("acme.example").unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let issuer = Issuer::init(dir.path(), &td)
        .unwrap()
        .with_clock(clock.clone());
    Fixture {
        _dir: dir,
        issuer,
        clock,
        td,
    }
}

impl Fixture {
    fn agent(&self, name: &str) -> AgentId {
        AgentId::new(&self.td, name).unwrap()
    }

    fn issue(&self, name: &str, tools: &str, ttl: u64) -> Issued {
        self.issuer
            .issue_agent(&AgentRequest {
                agent: self.agent(name),
                owner: UserId::parse(ALICE).unwrap(),
                tools: ToolSet::parse_list(tools).unwrap(),
                ttl: Duration::from_secs(ttl),
                audience: None,
            })
            .unwrap()
    }

    fn delegate(
        &self,
        parent: &Issued,
        name: &str,
        tools: &str,
        ttl: Option<u64>,
    ) -> Result<Issued, IssuerError> {
        self.issuer.delegate(
            &parent.token,
            &DelegationRequest {
                agent: name.to_string(),
                tools: ToolSet::parse_list(tools).unwrap(),
                ttl: ttl.map(Duration::from_secs),
            },
        )
    }

    fn signing_key(&self) -> SigningKey {
        let pem = std::fs::read_to_string(self.issuer.private_key_path()).unwrap();
        SigningKey::from_pkcs8_pem(&pem).unwrap()
    }

    fn verify(&self, token: &str) -> Result<(), VerifyError> {
        self.issuer.verify(token).map(|_| ())
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token hand-made from raw header and claims text, signed with `key`.
fn hand_sign(key: &SigningKey, header: &str, claims: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

/// The claims of a token, decoded without verification.
fn claims_of(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// The token with its claims replaced, the header and signature kept.
fn with_claims(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_vec(claims).unwrap()),
        parts[2]
    )
}

fn header_for(kid: &str) -> String {
    json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}).to_string()
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::digest([ipad.as_slice(), message].concat());
    Sha256::digest([opad.as_slice(), inner.as_slice()].concat()).to_vec()
}

#[test]
fn issue_delegate_verify() {
    let f = fixture();
    let orch = f.issue("orchestrator", "ScanTool,CodeAnalysisTool", 3600);
    let recon = f.delegate(&orch, "recon", "ScanTool", Some(600)).unwrap();
    let v = f.issuer.verify(&recon.token).unwrap();
    assert_eq!(
        v.subject.as_str(),
        "spiffe://acme.example/agent/orchestrator/recon"
    );
    assert_eq!(
        v.chain_strings(),
        [ALICE, "spiffe://acme.example/agent/orchestrator"]
    );
    assert_eq!(v.owner.as_str(), ALICE);
    assert_eq!(v.tools.as_slice(), ["ScanTool"]);
    assert_eq!(v.ancestors, std::slice::from_ref(&orch.credential.jti));
    assert_eq!(v.expires_at, T0 + 600);
    assert_eq!(v.kid, f.issuer.active_kid());
    assert_eq!(
        v.delegation_root().unwrap().as_str(),
        "spiffe://acme.example/agent/orchestrator"
    );
    assert!(v.allows_tool("nmap_scan", &["ScanTool"]));
    assert!(!v.allows_tool("semgrep", &["CodeAnalysisTool"]));
    assert_eq!(*v, recon.credential);

    // The wire form: RFC 8693 nesting, most recent delegator outermost.
    let claims = claims_of(&recon.token);
    assert_eq!(
        claims["act"],
        json!({"sub": "spiffe://acme.example/agent/orchestrator", "act": {"sub": ALICE}})
    );
    assert_eq!(claims["iss"], "spiffe://acme.example");
    assert_eq!(claims["aud"], "truststack");
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(recon.token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], f.issuer.active_kid());

    // Records for the ledger.
    assert_eq!(recon.record["kind"], "identity_issued");
    assert_eq!(
        recon.record["delegated_by"],
        "spiffe://acme.example/agent/orchestrator"
    );
    assert_eq!(
        recon.record["chain"][1],
        "spiffe://acme.example/agent/orchestrator"
    );
    assert!(orch.record.get("delegated_by").is_none());
    assert!(recon.record.get("token").is_none());
}

#[test]
fn direct_agent_credential_chain_is_the_human() {
    let f = fixture();
    let orch = f.issue("orchestrator", "*", 3600);
    let v = f.issuer.verify(&orch.token).unwrap();
    assert_eq!(v.chain_strings(), [ALICE]);
    assert!(v.ancestors.is_empty());
    assert_eq!(
        v.delegation_root().unwrap().as_str(),
        "spiffe://acme.example/agent/orchestrator"
    );
    assert!(v.allows_tool("anything", &[] as &[&str]));
}

#[test]
fn human_credentials_carry_roles_and_groups() {
    let f = fixture();
    let bob = f
        .issuer
        .issue_user(&UserRequest {
            user: UserId::parse("user:bob@acme.example").unwrap(),
            roles: vec!["approver".into()],
            groups: vec!["oncall".into()],
            ttl: Duration::from_secs(8 * 3600),
            audience: None,
        })
        .unwrap();
    let v = f.issuer.verify(&bob.token).unwrap();
    assert!(matches!(v.subject, Principal::User(_)));
    assert!(v.chain.is_empty());
    assert!(v.has_role("approver"));
    assert!(!v.has_role("admin"));
    assert!(v.in_group("oncall"));
    assert!(v.agent().is_none());
    assert!(v.delegation_root().is_none());
    assert!(claims_of(&bob.token).get("act").is_none());
    // A human's credential cannot be delegated.
    let err = f.delegate(&bob, "recon", "", None).unwrap_err();
    assert!(matches!(
        err,
        IssuerError::Delegation(DelegationError::ParentNotAgent { .. })
    ));
    assert!(matches!(
        f.issuer.issue_user(&UserRequest {
            user: UserId::parse("user:bob").unwrap(),
            roles: vec!["a b".into()],
            groups: vec![],
            ttl: Duration::from_secs(60),
            audience: None,
        }),
        Err(IssuerError::BadLabel { what: "role", .. })
    ));
}

#[test]
fn rejects_wrong_signature_with_the_same_kid() {
    let f = fixture();
    let orch = f.issue("orchestrator", "ScanTool", 3600);
    let other = SigningKey::from_bytes(&[7u8; 32]);
    let claims = serde_json::to_string(&claims_of(&orch.token)).unwrap();
    let forged = hand_sign(&other, &header_for(&f.issuer.active_kid()), &claims);
    assert_eq!(
        f.verify(&forged),
        Err(VerifyError::BadSignature {
            kid: f.issuer.active_kid()
        })
    );
}

/// RFC 8032 §5.1.7: S must be below the group order L. A signature with L added to S satisfies
/// the verification equation yet is a second encoding (malleability); it is refused.
#[test]
fn rejects_a_malleated_signature() {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let f = fixture();
    let orch = f.issue("orchestrator", "ScanTool", 3600);
    assert!(f.verify(&orch.token).is_ok());
    let (signed, signature) = orch.token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    // S (little-endian, bytes 32..64) + L: S < L < 2^253, so the sum fits in 32 bytes.
    let mut carry = 0u16;
    for (s, l) in sig[32..].iter_mut().zip(L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    let malleated = format!("{signed}.{}", b64(&sig));
    // A different token (the cache is keyed by its hash): the signature is checked again.
    assert_eq!(
        f.verify(&malleated),
        Err(VerifyError::BadSignature {
            kid: f.issuer.active_kid()
        })
    );
}

#[test]
fn rejects_unknown_and_missing_kid() {
    let f = fixture();
    let orch = f.issue("orchestrator", "ScanTool", 3600);
    let claims = serde_json::to_string(&claims_of(&orch.token)).unwrap();
    let other = SigningKey::from_bytes(&[7u8; 32]);
    let token = hand_sign(&other, &header_for("someone-elses-key"), &claims);
    assert_eq!(
        f.verify(&token),
        Err(VerifyError::UnknownKid {
            kid: "someone-elses-key".into()
        })
    );
    let token = hand_sign(&f.signing_key(), r#"{"alg":"EdDSA"}"#, &claims);
    assert_eq!(f.verify(&token), Err(VerifyError::MissingKid));
}

#[test]
fn rejects_alg_none() {
    let f = fixture();
    let orch = f.issue("orchestrator", "ScanTool", 3600);
    let header = json!({"alg": "none", "typ": "JWT", "kid": f.issuer.active_kid()});
    let claims = claims_of(&orch.token);
    for signature in ["", "AAAA"] {
        let token = format!(
            "{}.{}.{signature}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        assert_eq!(
            f.verify(&token),
            Err(VerifyError::DisallowedAlgorithm { alg: "none".into() })
        );
    }
}

#[test]
fn rejects_hs256_keyed_with_the_public_key() {
    // Algorithm confusion: an attacker who knows the public key "signs" with HMAC, using the
    // public key as the secret, hoping the verifier feeds the same bytes to HMAC.
    let f = fixture();
    let orch = f.issue("orchestrator", "ScanTool", 3600);
    let public = f.signing_key().verifying_key();
    let jwks = f.issuer.jwks();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_string();
    let pem_path = f
        .issuer
        .private_key_path()
        .to_string_lossy()
        .replace(".key.pem", ".pub.pem");
    let pem = std::fs::read(pem_path).unwrap();
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": f.issuer.active_kid()}).to_string();
    let claims = claims_of(&orch.token).to_string();
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    for secret in [public.as_bytes().to_vec(), x.into_bytes(), pem] {
        let token = format!("{input}.{}", b64(&hmac_sha256(&secret, input.as_bytes())));
        assert_eq!(
            f.verify(&token),
            Err(VerifyError::DisallowedAlgorithm {
                alg: "HS256".into()
            })
        );
    }
}

#[test]
fn rejects_expired_and_not_yet_valid() {
    let f = fixture();
    let orch = f.issue("orchestrator", "ScanTool", 60);
    f.clock.set(T0 + 59);
    assert!(f.verify(&orch.token).is_ok());
    f.clock.set(T0 + 60);
    assert_eq!(
        f.verify(&orch.token),
        Err(VerifyError::Expired {
            exp: T0 + 60,
            now: T0 + 60
        })
    );

    // Minted by a clock ahead of the verifier's.
    let f = fixture();
    let ahead = Issuer::open(f.issuer.dir())
        .unwrap()
        .with_clock(Arc::new(ManualClock::new(T0 + 1000)));
    let early = ahead
        .issue_agent(&AgentRequest {
            agent: f.agent("orchestrator"),
            owner: UserId::parse(ALICE).unwrap(),
            tools: ToolSet::parse_list("ScanTool").unwrap(),
            ttl: Duration::from_secs(3600),
            audience: None,
        })
        .unwrap();
    assert_eq!(
        f.verify(&early.token),
        Err(VerifyError::NotYetValid {
            nbf: T0 + 1000,
            now: T0
        })
    );
    f.clock.set(T0 + 1000);
    assert!(f.verify(&early.token).is_ok());
}

#[test]
fn rejects_wrong_audience_and_issuer() {
    let f = fixture();
    let other = f
        .issuer
        .issue_agent(&AgentRequest {
            agent: f.agent("orchestrator"),
            owner: UserId::parse(ALICE).unwrap(),
            tools: ToolSet::parse_list("ScanTool").unwrap(),
            ttl: Duration::from_secs(3600),
            audience: Some("billing".into()),
        })
        .unwrap();
    assert_eq!(
        f.verify(&other.token),
        Err(VerifyError::WrongAudience {
            expected: "truststack".into(),
            found: "billing".into()
        })
    );
    let mut claims = claims_of(&other.token);
    claims["aud"] = json!("truststack");
    claims["iss"] = json!("spiffe://evil.example");
    let token = hand_sign(
        &f.signing_key(),
        &header_for(&f.issuer.active_kid()),
        &claims.to_string(),
    );
    assert_eq!(
        f.verify(&token),
        Err(VerifyError::WrongIssuer {
            expected: "spiffe://acme.example".into(),
            found: "spiffe://evil.example".into()
        })
    );
}

fn assert_malformed(result: Result<(), VerifyError>, part: TokenPart, defect: Defect) {
    match result {
        Err(VerifyError::Malformed {
            part: p, defect: d, ..
        }) if p == part && d == defect => {}
        other => panic!("expected malformed {part} ({defect}), got {other:?}"),
    }
}

#[test]
fn rejects_malformed_tokens_naming_the_part() {
    let f = fixture();
    let orch = f.issue("orchestrator", "ScanTool", 3600);
    let parts: Vec<&str> = orch.token.split('.').collect();
    let kid = f.issuer.active_kid();
    let key = f.signing_key();

    assert_malformed(f.verify("not-a-jwt"), TokenPart::Token, Defect::Structure);
    assert_malformed(
        f.verify(&format!("{}.{}", parts[0], parts[1])),
        TokenPart::Token,
        Defect::Structure,
    );
    assert_malformed(
        f.verify(&format!("%%%.{}.{}", parts[1], parts[2])),
        TokenPart::Header,
        Defect::Base64,
    );
    assert_malformed(
        f.verify(&format!("{}.{}.{}", b64(b"{\"alg\":"), parts[1], parts[2])),
        TokenPart::Header,
        Defect::Json,
    );
    assert_malformed(
        f.verify(&format!(
            "{}.{}.{}",
            b64(b"{\"kid\":\"x\"}"),
            parts[1],
            parts[2]
        )),
        TokenPart::Header,
        Defect::Structure,
    );
    assert_malformed(
        f.verify(&format!("{}.%%%.{}", parts[0], parts[2])),
        TokenPart::Claims,
        Defect::Base64,
    );
    assert_malformed(
        f.verify(&format!("{}.{}.%%%", parts[0], parts[1])),
        TokenPart::Signature,
        Defect::Base64,
    );
    assert_malformed(
        f.verify(&format!("{}.{}.{}", parts[0], parts[1], b64(&[0u8; 10]))),
        TokenPart::Signature,
        Defect::Structure,
    );
    // Correctly signed, but the claims are not JSON, or JSON of the wrong shape.
    assert_malformed(
        f.verify(&hand_sign(&key, &header_for(&kid), "{\"sub\": ")),
        TokenPart::Claims,
        Defect::Json,
    );
    let mut claims = claims_of(&orch.token);
    claims.as_object_mut().unwrap().remove("owner");
    assert_malformed(
        f.verify(&hand_sign(&key, &header_for(&kid), &claims.to_string())),
        TokenPart::Claims,
        Defect::Structure,
    );
    let mut claims = claims_of(&orch.token);
    claims["sub"] = json!("spiffe://acme.example/agent/../root");
    assert_malformed(
        f.verify(&hand_sign(&key, &header_for(&kid), &claims.to_string())),
        TokenPart::Claims,
        Defect::Structure,
    );
}

#[test]
fn refuses_delegations_that_widen() {
    let f = fixture();
    let orch = f.issue("orchestrator", "ScanTool,CodeAnalysisTool", 3600);
    match f.delegate(&orch, "recon", "ScanTool,ExploitationTool", None) {
        Err(IssuerError::Delegation(DelegationError::WidensTools {
            not_covered,
            parent,
        })) => {
            assert_eq!(not_covered, ["ExploitationTool"]);
            assert_eq!(parent, ["CodeAnalysisTool", "ScanTool"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        f.delegate(&orch, "recon", "*", None),
        Err(IssuerError::Delegation(DelegationError::WidensTools { .. }))
    ));
    assert_eq!(
        f.delegate(&orch, "recon", "ScanTool", Some(3601))
            .unwrap_err()
            .to_string(),
        DelegationError::ExtendsExpiry {
            requested: T0 + 3601,
            parent: T0 + 3600
        }
        .to_string()
    );
    // Later in the parent's life, the same ttl reaches past its expiry.
    f.clock.set(T0 + 3000);
    assert!(matches!(
        f.delegate(&orch, "recon", "ScanTool", Some(601)),
        Err(IssuerError::Delegation(
            DelegationError::ExtendsExpiry { .. }
        ))
    ));
    let recon = f.delegate(&orch, "recon", "ScanTool", None).unwrap();
    assert_eq!(recon.credential.expires_at, T0 + 3600);
    // A sub-agent's id lies below its delegator's: a bare name is placed there, so the same
    // name from another parent is another identity, and no loop can be formed.
    assert_eq!(
        recon.credential.subject.as_str(),
        "spiffe://acme.example/agent/orchestrator/recon"
    );
    let again = f.delegate(&recon, "recon", "ScanTool", None).unwrap();
    assert_eq!(
        again.credential.subject.as_str(),
        "spiffe://acme.example/agent/orchestrator/recon/recon"
    );
    // A full id is taken only below the parent: not the parent, an ancestor, a sibling, another
    // orchestration's agent or another trust domain's.
    for other in [
        "spiffe://acme.example/agent/orchestrator/recon",
        "spiffe://acme.example/agent/orchestrator",
        "spiffe://acme.example/agent/orchestrator/patch",
        "spiffe://acme.example/agent/victim",
        "spiffe://acme.example/agent/orchestrator/reconx",
        "spiffe://other.example/agent/orchestrator/recon/x",
    ] {
        assert!(
            matches!(
                f.delegate(&recon, other, "ScanTool", None),
                Err(IssuerError::Delegation(
                    DelegationError::NotUnderParent { .. }
                ))
            ),
            "{other}"
        );
    }
    let below = f
        .delegate(
            &recon,
            "spiffe://acme.example/agent/orchestrator/recon/helper",
            "ScanTool",
            None,
        )
        .unwrap();
    assert_eq!(
        below.credential.subject.as_str(),
        "spiffe://acme.example/agent/orchestrator/recon/helper"
    );
    assert!(matches!(
        f.delegate(&recon, "../victim", "ScanTool", None),
        Err(IssuerError::Delegation(DelegationError::BadName { .. }))
    ));
    // A `*` parent may hand out anything, `*` included.
    let root = f.issue("root", "*", 3600);
    assert!(f.delegate(&root, "any", "*", None).is_ok());
}

#[test]
fn rejects_an_edited_act_chain() {
    let f = fixture();
    let orch = f.issue("orchestrator", "ScanTool", 3600);
    let recon = f.delegate(&orch, "recon", "ScanTool", None).unwrap();
    let mut claims = claims_of(&recon.token);
    claims["act"]["sub"] = json!("spiffe://acme.example/agent/trusted-admin-bot");
    assert_eq!(
        f.verify(&with_claims(&recon.token, &claims)),
        Err(VerifyError::BadSignature {
            kid: f.issuer.active_kid()
        })
    );
    let mut claims = claims_of(&recon.token);
    claims["act"] = json!({"sub": ALICE});
    assert!(matches!(
        f.verify(&with_claims(&recon.token, &claims)),
        Err(VerifyError::BadSignature { .. })
    ));
}

#[test]
fn rejects_inconsistent_chains_even_when_signed() {
    let f = fixture();
    let orch = f.issue("orchestrator", "ScanTool", 3600);
    let key = f.signing_key();
    let kid = f.issuer.active_kid();
    let sign = |claims: &Value| hand_sign(&key, &header_for(&kid), &claims.to_string());

    let mut claims = claims_of(&orch.token);
    claims["act"] =
        json!({"sub": "spiffe://acme.example/agent/orchestrator", "act": {"sub": ALICE}});
    claims["ancestors"] = json!(["x"]);
    assert!(matches!(
        f.verify(&sign(&claims)),
        Err(VerifyError::ChainInconsistent(
            ChainError::SubjectInOwnChain { .. }
        ))
    ));
    let mut claims = claims_of(&orch.token);
    claims["owner"] = json!("user:mallory");
    assert!(matches!(
        f.verify(&sign(&claims)),
        Err(VerifyError::ChainInconsistent(
            ChainError::OwnerNotRoot { .. }
        ))
    ));
    let mut claims = claims_of(&orch.token);
    claims.as_object_mut().unwrap().remove("act");
    assert!(matches!(
        f.verify(&sign(&claims)),
        Err(VerifyError::ChainInconsistent(ChainError::Missing { .. }))
    ));
}

#[test]
fn rejects_revoked_credentials_and_their_descendants() {
    let f = fixture();
    let orch = f.issue("orchestrator", "ScanTool", 3600);
    let recon = f.delegate(&orch, "recon", "ScanTool", None).unwrap();
    let probe = f.delegate(&recon, "probe", "ScanTool", None).unwrap();
    assert!(f.verify(&probe.token).is_ok());

    let r = f
        .issuer
        .revoke_jti(&recon.credential.jti, "user:admin", Some("leaked".into()))
        .unwrap();
    assert_eq!(r.record()["kind"], "identity_revoked");
    assert_eq!(r.record()["jti"], recon.credential.jti.as_str());
    assert_eq!(r.record()["by"], "user:admin");
    assert_eq!(
        f.verify(&recon.token),
        Err(VerifyError::Revoked {
            jti: recon.credential.jti.clone()
        })
    );
    assert_eq!(
        f.verify(&probe.token),
        Err(VerifyError::DelegatedFromRevoked {
            ancestor: recon.credential.jti.clone()
        })
    );
    assert!(f.verify(&orch.token).is_ok());
    // A revoked credential cannot delegate either.
    assert!(matches!(
        f.delegate(&recon, "other", "ScanTool", None),
        Err(IssuerError::Parent(VerifyError::Revoked { .. }))
    ));
    // The revocation is on disk.
    let reopened = Issuer::open(f.issuer.dir())
        .unwrap()
        .with_clock(f.clock.clone());
    assert!(matches!(
        reopened.verify(&recon.token),
        Err(VerifyError::Revoked { .. })
    ));
}

#[test]
fn revoking_an_identity_revokes_everything_under_it() {
    let f = fixture();
    let orch = f.issue("orchestrator", "ScanTool", 3600);
    let recon = f.delegate(&orch, "recon", "ScanTool", None).unwrap();
    let who = Principal::Agent(f.agent("orchestrator"));
    let r = f.issuer.revoke_identity(&who, "user:admin", None).unwrap();
    assert_eq!(r.record()["identity"], who.as_str());
    for token in [&orch.token, &recon.token] {
        assert_eq!(
            f.verify(token),
            Err(VerifyError::IdentityRevoked {
                identity: who.to_string()
            })
        );
    }
    assert!(matches!(
        f.issuer.issue_agent(&AgentRequest {
            agent: f.agent("orchestrator"),
            owner: UserId::parse(ALICE).unwrap(),
            tools: ToolSet::default(),
            ttl: Duration::from_secs(60),
            audience: None,
        }),
        Err(IssuerError::IdentityRevoked { .. })
    ));
    // Revoking the human revokes every agent acting for them.
    let other = f.issue("other", "ScanTool", 3600);
    f.issuer
        .revoke_identity(&Principal::parse(ALICE).unwrap(), "user:admin", None)
        .unwrap();
    assert_eq!(
        f.verify(&other.token),
        Err(VerifyError::IdentityRevoked {
            identity: ALICE.into()
        })
    );
}

#[test]
fn cached_tokens_are_still_checked_for_revocation_and_expiry() {
    let f = fixture();
    let orch = f.issue("orchestrator", "ScanTool", 3600);
    let recon = f.delegate(&orch, "recon", "ScanTool", Some(120)).unwrap();
    // `delegate` verified the parent: it is in the cache already.
    assert_eq!(f.issuer.verifier().cached(), 1);
    assert!(f.verify(&orch.token).is_ok());
    assert!(f.verify(&recon.token).is_ok());
    assert!(f.verify(&recon.token).is_ok());
    assert_eq!(f.issuer.verifier().cached(), 2);

    f.issuer
        .revoke_jti(&orch.credential.jti, "user:admin", None)
        .unwrap();
    assert!(matches!(
        f.verify(&orch.token),
        Err(VerifyError::Revoked { .. })
    ));
    assert!(matches!(
        f.verify(&recon.token),
        Err(VerifyError::DelegatedFromRevoked { .. })
    ));

    let other = f.issue("other", "ScanTool", 60);
    assert!(f.verify(&other.token).is_ok());
    f.clock.advance(60);
    assert!(matches!(
        f.verify(&other.token),
        Err(VerifyError::Expired { .. })
    ));
}

#[test]
fn the_cache_is_bounded() {
    let f = fixture();
    let verifier = truststack_identity::Verifier::new("spiffe://acme.example", "truststack")
        .with_clock(f.clock.clone())
        .with_cache_capacity(2);
    let keys = truststack_identity::KeyStore::open(&f.issuer.dir().join("keys")).unwrap();
    verifier.set_keys(keys.public_keys().clone());
    for name in ["a", "b", "c"] {
        let t = f.issue(name, "ScanTool", 3600);
        assert!(verifier.verify(&t.token).is_ok());
    }
    assert_eq!(verifier.cached(), 2);
    let off = truststack_identity::Verifier::new("spiffe://acme.example", "truststack")
        .with_clock(f.clock.clone())
        .with_cache_capacity(0);
    off.set_keys(keys.public_keys().clone());
    assert!(off.verify(&f.issue("d", "", 60).token).is_ok());
    assert_eq!(off.cached(), 0);
}

#[test]
fn rotation_keeps_old_tokens_until_the_key_is_retired() {
    let f = fixture();
    let old_kid = f.issuer.active_kid();
    let before = f.issue("orchestrator", "ScanTool", 3600);
    assert!(f.verify(&before.token).is_ok());
    let new_kid = f.issuer.rotate().unwrap();
    assert_ne!(old_kid, new_kid);
    let after = f.issue("orchestrator", "ScanTool", 3600);
    assert_eq!(after.credential.kid, new_kid);
    assert!(f.verify(&before.token).is_ok());
    assert!(f.verify(&after.token).is_ok());
    let jwks = f.issuer.jwks();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [new_kid.as_str(), old_kid.as_str()]);

    f.issuer.retire_key(&old_kid).unwrap();
    assert_eq!(
        f.verify(&before.token),
        Err(VerifyError::UnknownKid { kid: old_kid })
    );
    assert!(f.verify(&after.token).is_ok());
}

#[test]
fn init_is_idempotent_per_trust_domain() {
    let f = fixture();
    let again = Issuer::init(f.issuer.dir(), &f.td).unwrap();
    assert_eq!(again.active_kid(), f.issuer.active_kid());
    assert!(matches!(
        Issuer::init(f.issuer.dir(), &TrustDomain::new("other.example").unwrap()),
        Err(IssuerError::TrustDomainMismatch { .. })
    ));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        Issuer::open(empty.path()),
        Err(IssuerError::NotInitialized { .. })
    ));
}
