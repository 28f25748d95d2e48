//! Who is calling: a credential (the `TRUSTSTACK_TOKEN` of a stdio gateway, the
//! `Authorization: Bearer` token of an HTTP request) becomes a [`CallerIdentity`] through an
//! [`IdentityResolver`].
//!
//! Two resolvers ship: [`CredentialResolver`] verifies the signed credentials (JWTs) of an
//! issuer directory (`truststack identity init`), so the agent, its delegation chain and its
//! tools come from the issuer's signature; [`StaticResolver`] maps tokens listed in the
//! configuration to identities (for development), and serves anonymous callers only where the
//! configuration allows it. With an issuer configured, a token that is not a credential of that
//! issuer falls through to the static list.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use truststack_engine::identity::Issuer;
use truststack_engine::{Caller, Recorder};

/// The verified identity a call is decided for: the engine's caller, so a decision needs no
/// conversion (in configuration, `chain`, `tools` and `credential_id` may be left out).
pub type CallerIdentity = Caller;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("no credential was presented and this gateway does not allow anonymous callers (set TRUSTSTACK_TOKEN for stdio, `Authorization: Bearer` for HTTP)")]
    Missing,
    #[error("the credential is not valid: {0}")]
    Invalid(String),
}

/// Turns a presented credential (or its absence) into a verified identity.
pub trait IdentityResolver: Send + Sync {
    fn resolve(&self, credential: Option<&str>) -> Result<CallerIdentity, IdentityError>;
}

/// One token of a [`StaticResolver`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// The token itself (for development), or
    #[serde(default)]
    pub token: Option<String>,
    /// its SHA-256 in hex (so the configuration holds no secret).
    #[serde(default)]
    pub token_sha256: Option<String>,
    #[serde(flatten)]
    pub identity: CallerIdentity,
}

/// Identities from configuration: a fixed list of tokens, and optionally an anonymous identity.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticResolver {
    /// An issuer directory whose signed credentials are verified (by [`CredentialResolver`]).
    #[serde(default)]
    pub issuer: Option<PathBuf>,
    /// Whether a caller without a credential is served, as `anonymous`.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// The identity of callers without a credential (when allowed).
    #[serde(default)]
    pub anonymous: Option<CallerIdentity>,
    #[serde(default)]
    pub tokens: Vec<StaticToken>,
}

/// The identity anonymous callers get when the configuration allows them but names none.
pub fn default_anonymous() -> CallerIdentity {
    CallerIdentity {
        agent: "spiffe://truststack.local/agent/anonymous".into(),
        chain: vec!["user:anonymous".into()],
        tools: None,
        credential_id: None,
    }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Compares two strings in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl IdentityResolver for StaticResolver {
    fn resolve(&self, credential: Option<&str>) -> Result<CallerIdentity, IdentityError> {
        let Some(token) = credential.map(str::trim).filter(|t| !t.is_empty()) else {
            return if self.allow_anonymous {
                Ok(self.anonymous.clone().unwrap_or_else(default_anonymous))
            } else {
                Err(IdentityError::Missing)
            };
        };
        let digest = sha256_hex(token);
        for t in &self.tokens {
            let hit = t.token.as_deref().is_some_and(|x| same(x, token))
                || t.token_sha256
                    .as_deref()
                    .is_some_and(|h| same(&h.to_ascii_lowercase(), &digest));
            if hit {
                let mut id = t.identity.clone();
                if id.credential_id.is_none() {
                    id.credential_id = Some(format!("sha256:{}", digest.get(..16).unwrap_or("")));
                }
                return Ok(id);
            }
        }
        Err(IdentityError::Invalid("unknown token".into()))
    }
}

/// Identities for a gateway that asks a decision point: the credential is passed on as it was
/// presented and verified there, on every call; the gateway never names an agent for a caller
/// that presented one. A caller without a credential is served only where the configuration
/// allows anonymous callers, as its anonymous identity (which only a server that does not
/// require credentials accepts).
pub struct RemoteResolver {
    config: StaticResolver,
}

impl RemoteResolver {
    pub fn new(config: StaticResolver) -> Self {
        RemoteResolver { config }
    }
}

impl IdentityResolver for RemoteResolver {
    fn resolve(&self, credential: Option<&str>) -> Result<CallerIdentity, IdentityError> {
        match credential.map(str::trim).filter(|t| !t.is_empty()) {
            // What the credential says is the decision point's to establish; the gateway only
            // labels the session for its logs.
            Some(token) => {
                let digest = sha256_hex(token);
                let short = digest.get(..16).unwrap_or("");
                Ok(CallerIdentity {
                    agent: format!("credential:sha256:{short}"),
                    chain: Vec::new(),
                    tools: None,
                    credential_id: Some(format!("sha256:{short}")),
                })
            }
            None => self.config.resolve(None),
        }
    }
}

/// Verifies signed credentials of one issuer; other tokens go to the static list.
pub struct CredentialResolver {
    issuer: Arc<Issuer>,
    fallback: StaticResolver,
    /// Where revocations made by other processes are recorded (the gateway's ledger).
    revocation_log: Option<RevocationLog>,
}

/// Writes each revocation of the issuer's list to a recorder once: revocations made elsewhere
/// (`truststack identity revoke`) become ledger records when the gateway notices them.
pub struct RevocationLog {
    recorder: Arc<dyn Recorder>,
    recorded: parking_lot::Mutex<std::collections::HashSet<String>>,
}

impl RevocationLog {
    /// `already`: the `identity_revoked` records the ledger holds, so none is written twice.
    pub fn new<'a>(
        recorder: Arc<dyn Recorder>,
        already: impl IntoIterator<Item = &'a Value>,
    ) -> Self {
        let recorded = already
            .into_iter()
            .filter(|r| r.get("kind").and_then(Value::as_str) == Some("identity_revoked"))
            .map(ToString::to_string)
            .collect();
        RevocationLog {
            recorder,
            recorded: parking_lot::Mutex::new(recorded),
        }
    }

    /// Records the revocations of `issuer`'s list not recorded yet.
    pub fn sync(&self, issuer: &Issuer) -> Result<(), truststack_engine::WriteError> {
        let mut recorded = self.recorded.lock();
        for record in issuer.verifier().revocations().records() {
            let key = record.to_string();
            if !recorded.contains(&key) {
                self.recorder.record(record)?;
                recorded.insert(key);
            }
        }
        Ok(())
    }
}

impl CredentialResolver {
    pub fn new(issuer: Arc<Issuer>, fallback: StaticResolver) -> Self {
        CredentialResolver {
            issuer,
            fallback,
            revocation_log: None,
        }
    }

    /// Records revocations in `log` as they are noticed (and those not recorded yet, now).
    pub fn with_revocation_log(
        mut self,
        log: RevocationLog,
    ) -> Result<Self, truststack_engine::WriteError> {
        log.sync(&self.issuer)?;
        self.revocation_log = Some(log);
        Ok(self)
    }
}

/// Whether `token` has the shape of a JWT (three base64url parts), so that its rejection by the
/// issuer is the answer rather than a reason to try the static list.
fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

impl IdentityResolver for CredentialResolver {
    fn resolve(&self, credential: Option<&str>) -> Result<CallerIdentity, IdentityError> {
        let Some(token) = credential.map(str::trim).filter(|t| looks_like_jwt(t)) else {
            return self.fallback.resolve(credential);
        };
        // Revocations written by another process take effect on the next call.
        let changed = self
            .issuer
            .refresh_revocations()
            .map_err(|e| IdentityError::Invalid(format!("cannot read revocations: {e}")))?;
        if let (true, Some(log)) = (changed, &self.revocation_log) {
            // Fail closed: a revocation that cannot be recorded refuses the call.
            log.sync(&self.issuer)
                .map_err(|e| IdentityError::Invalid(format!("cannot record a revocation: {e}")))?;
        }
        let verified = self
            .issuer
            .verify(token)
            .map_err(|e| IdentityError::Invalid(e.to_string()))?;
        Caller::from_credential(&verified).map_err(IdentityError::Invalid)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn resolver() -> StaticResolver {
        toml::from_str(
            r#"
            allow_anonymous = false
            [[tokens]]
            token = "dev-token"
            agent = "spiffe://acme.example/agent/recon"
            chain = ["user:alice@acme.example"]
            tools = ["ScanTool"]
            [[tokens]]
            token_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            agent = "spiffe://acme.example/agent/empty"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn tokens_map_to_identities() {
        let r = resolver();
        let id = r.resolve(Some("dev-token")).unwrap();
        assert_eq!(id.agent, "spiffe://acme.example/agent/recon");
        assert_eq!(id.tools.as_deref(), Some(&["ScanTool".to_string()][..]));
        assert!(id.credential_id.unwrap().starts_with("sha256:"));
        assert_eq!(
            r.resolve(Some("nope")),
            Err(IdentityError::Invalid("unknown token".into()))
        );
    }

    #[test]
    fn anonymous_only_when_allowed() {
        let mut r = resolver();
        assert_eq!(r.resolve(None), Err(IdentityError::Missing));
        r.allow_anonymous = true;
        assert_eq!(r.resolve(Some("  ")).unwrap(), default_anonymous());
    }
}
