//! Verifying credentials.
//!
//! In order: the token's three parts and its header are read (`alg` must be `EdDSA`, `kid` must
//! name a trusted key); the Ed25519 signature is checked (RFC 8032, with the public key
//! decompressed once when it is trusted, not per token), then `iss` and `aud`; the claims become a [`VerifiedCredential`] whose delegation chain must be consistent; then, on every
//! call, even when the token is served from the cache, `nbf`, `exp` and revocation (of the
//! credential, of any ancestor, of the holder or anyone in its chain) are checked against the
//! clock and the current revocation list.

use crate::cache::{Cache, TokenHash};
use crate::chain::{self, ChainError};
use crate::claims::Claims;
use crate::clock::{format_time, Clock, SystemClock};
use crate::credential::VerifiedCredential;
use crate::id::{Principal, UserId};
use crate::revocation::RevocationList;
use crate::tools::ToolSet;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The only signature algorithm accepted.
pub const ALGORITHM: &str = "EdDSA";
/// How many verified tokens the cache keeps by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

/// Which part of a token is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPart {
    /// The token as a whole (not three `.`-separated parts).
    Token,
    /// The JOSE header.
    Header,
    /// The claims (payload).
    Claims,
    /// The signature.
    Signature,
}

impl fmt::Display for TokenPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenPart::Token => "token",
            TokenPart::Header => "header",
            TokenPart::Claims => "claims",
            TokenPart::Signature => "signature",
        })
    }
}

/// What is wrong with a malformed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// Not base64url (without padding).
    Base64,
    /// Not JSON.
    Json,
    /// Well-formed, but not the expected shape (a missing or mistyped field, a bad identifier,
    /// a wrong length).
    Structure,
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Defect::Base64 => "is not base64url",
            Defect::Json => "is not JSON",
            Defect::Structure => "has the wrong structure",
        })
    }
}

/// Why a credential is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A part of the token cannot be read.
    #[error("malformed token: the {part} {defect}: {detail}")]
    Malformed {
        /// Which part.
        part: TokenPart,
        /// What is wrong with it.
        defect: Defect,
        /// The specifics.
        detail: String,
    },
    /// The header names another algorithm than EdDSA (`none`, `HS256`, ...).
    #[error("algorithm `{alg}` is not allowed: credentials are signed with EdDSA (Ed25519) only")]
    DisallowedAlgorithm {
        /// The header's `alg`.
        alg: String,
    },
    /// The header has no `kid`.
    #[error("the token header has no `kid`, so no issuer key can be chosen to verify it")]
    MissingKid,
    /// No trusted key has the header's `kid`.
    #[error("no trusted issuer key has kid `{kid}` (a retired key, or another issuer's)")]
    UnknownKid {
        /// The header's `kid`.
        kid: String,
    },
    /// The signature does not match: altered claims or header, or another key.
    #[error("bad signature: the token was altered after signing or was not signed by key `{kid}`")]
    BadSignature {
        /// The key it was checked against.
        kid: String,
    },
    /// `iss` is not this issuer.
    #[error("wrong issuer: expected `{expected}`, the token says `{found}`")]
    WrongIssuer {
        /// This verifier's issuer.
        expected: String,
        /// The token's `iss`.
        found: String,
    },
    /// `aud` is not this audience.
    #[error("wrong audience: expected `{expected}`, the token says `{found}`")]
    WrongAudience {
        /// This verifier's audience.
        expected: String,
        /// The token's `aud`.
        found: String,
    },
    /// Past `exp`.
    #[error("expired at {} (now {})", format_time(*.exp), format_time(*.now))]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// Before `nbf`.
    #[error("not valid before {} (now {})", format_time(*.nbf), format_time(*.now))]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// The delegation chain contradicts itself.
    #[error("inconsistent delegation chain: {0}")]
    ChainInconsistent(#[from] ChainError),
    /// The credential itself is revoked.
    #[error("credential `{jti}` is revoked")]
    Revoked {
        /// Its `jti`.
        jti: String,
    },
    /// A credential it was delegated from is revoked.
    #[error("delegated from credential `{ancestor}`, which is revoked")]
    DelegatedFromRevoked {
        /// The revoked ancestor's `jti`.
        ancestor: String,
    },
    /// The holder, or someone in its chain, is revoked.
    #[error("identity {identity} is revoked")]
    IdentityRevoked {
        /// The revoked principal.
        identity: String,
    },
}

fn malformed(part: TokenPart, defect: Defect, detail: impl fmt::Display) -> VerifyError {
    VerifyError::Malformed {
        part,
        defect,
        detail: detail.to_string(),
    }
}

fn json_malformed(part: TokenPart, e: &serde_json::Error) -> VerifyError {
    let defect = match e.classify() {
        serde_json::error::Category::Data => Defect::Structure,
        _ => Defect::Json,
    };
    malformed(part, defect, e)
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// A token's header and claims, decoded but NOT verified: for diagnostics only. Fails with
/// [`VerifyError::Malformed`] naming the part that cannot be read.
pub fn decode_unverified(token: &str) -> Result<(Value, Value), VerifyError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(malformed(
            TokenPart::Token,
            Defect::Structure,
            format!(
                "expected three base64url parts separated by `.`, found {}",
                parts.len()
            ),
        ));
    };
    let decode_json = |part: TokenPart, text: &str| -> Result<Value, VerifyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| malformed(part, Defect::Base64, e))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| json_malformed(part, &e))?;
        if !value.is_object() {
            return Err(malformed(part, Defect::Structure, "expected a JSON object"));
        }
        Ok(value)
    };
    let header = decode_json(TokenPart::Header, header)?;
    let claims = decode_json(TokenPart::Claims, claims)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| malformed(TokenPart::Signature, Defect::Base64, e))?;
    if signature.len() != ed25519_dalek::SIGNATURE_LENGTH {
        return Err(malformed(
            TokenPart::Signature,
            Defect::Structure,
            format!(
                "an Ed25519 signature is {} bytes, this one is {}",
                ed25519_dalek::SIGNATURE_LENGTH,
                signature.len()
            ),
        ));
    }
    Ok((header, claims))
}

/// Checks credentials against a set of trusted keys, an issuer, an audience, a clock and a
/// revocation list, with a bounded cache of verified tokens.
pub struct Verifier {
    issuer: String,
    audience: String,
    leeway: u64,
    clock: Arc<dyn Clock>,
    /// Decompressed once here, not on every signature check.
    keys: RwLock<HashMap<String, VerifyingKey>>,
    revocations: RwLock<RevocationList>,
    cache: Mutex<Cache>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("kids", &self.keys.read().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for tokens from `issuer` to `audience`, with no trusted key yet, the system
    /// clock, no leeway and a cache of [`DEFAULT_CACHE_CAPACITY`] tokens.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        let issuer = issuer.into();
        let audience = audience.into();
        Verifier {
            issuer,
            audience,
            leeway: 0,
            clock: Arc::new(SystemClock),
            keys: RwLock::new(HashMap::new()),
            revocations: RwLock::new(RevocationList::default()),
            cache: Mutex::new(Cache::new(DEFAULT_CACHE_CAPACITY)),
        }
    }

    /// Uses `clock` for `exp` and `nbf`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Tolerates `secs` of clock skew on `exp` and `nbf`.
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway = secs;
        self
    }

    /// Keeps at most `capacity` verified tokens (0 turns the cache off).
    pub fn with_cache_capacity(self, capacity: usize) -> Self {
        *self.cache.lock() = Cache::new(capacity);
        self
    }

    /// The issuer this verifier expects.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audience this verifier expects.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Replaces the trusted keys and empties the cache (a retired key's tokens must fail).
    pub fn set_keys<I>(&self, keys: I)
    where
        I: IntoIterator<Item = (String, VerifyingKey)>,
    {
        let keys = keys.into_iter().collect();
        let mut cache = self.cache.lock();
        *self.keys.write() = keys;
        cache.invalidate();
    }

    /// Replaces the revocation list (checked on every call, cached tokens included).
    pub fn set_revocations(&self, list: RevocationList) {
        *self.revocations.write() = list;
    }

    /// A copy of the current revocation list.
    pub fn revocations(&self) -> RevocationList {
        self.revocations.read().clone()
    }

    /// How many verified tokens the cache holds.
    pub fn cached(&self) -> usize {
        self.cache.lock().len()
    }

    /// Verifies a token: see the module documentation for what is checked.
    pub fn verify(&self, token: &str) -> Result<Arc<VerifiedCredential>, VerifyError> {
        let now = self.clock.now();
        let hash: TokenHash = Sha256::digest(token.as_bytes()).into();
        let (hit, generation) = {
            let cache = self.cache.lock();
            (cache.get(&hash), cache.generation())
        };
        if let Some(credential) = hit {
            self.check_live(&credential, now)?;
            return Ok(credential);
        }
        let credential = Arc::new(self.verify_signed(token)?);
        self.check_live(&credential, now)?;
        self.cache
            .lock()
            .insert(hash, Arc::clone(&credential), generation);
        Ok(credential)
    }

    /// Everything that does not change with time: structure, algorithm, key, signature,
    /// issuer, audience, claims, chain.
    fn verify_signed(&self, token: &str) -> Result<VerifiedCredential, VerifyError> {
        let dots = token.bytes().filter(|b| *b == b'.').count();
        if dots != 2 {
            return Err(malformed(
                TokenPart::Token,
                Defect::Structure,
                format!(
                    "expected three base64url parts separated by `.`, found {}",
                    dots + 1
                ),
            ));
        }
        let mut parts = token.splitn(3, '.');
        let header_part = parts.next().unwrap_or_default();
        let claims_part = parts.next().unwrap_or_default();
        let signature_part = parts.next().unwrap_or_default();
        let header_bytes = URL_SAFE_NO_PAD
            .decode(header_part)
            .map_err(|e| malformed(TokenPart::Header, Defect::Base64, e))?;
        let header: RawHeader = serde_json::from_slice(&header_bytes)
            .map_err(|e| json_malformed(TokenPart::Header, &e))?;
        if header.alg != ALGORITHM {
            return Err(VerifyError::DisallowedAlgorithm { alg: header.alg });
        }
        if header.crit.is_some() {
            return Err(malformed(
                TokenPart::Header,
                Defect::Structure,
                "`crit` extensions are not supported",
            ));
        }
        let kid = header.kid.ok_or(VerifyError::MissingKid)?;
        let key = *self
            .keys
            .read()
            .get(&kid)
            .ok_or_else(|| VerifyError::UnknownKid { kid: kid.clone() })?;
        let mut signature = [0u8; ed25519_dalek::SIGNATURE_LENGTH];
        match URL_SAFE_NO_PAD.decode_slice(signature_part, &mut signature) {
            Ok(ed25519_dalek::SIGNATURE_LENGTH) => {}
            // Too short, too long or not base64url: the diagnostic decoder names which.
            _ => return Err(self.unreadable(token, &kid)),
        }
        let signing_input = &token[..header_part.len() + 1 + claims_part.len()];
        // RFC 8032 verification, as JWT libraries do it (non-canonical `S` is refused). The
        // stricter check against small-order points guards against keys not honestly made;
        // every trusted key here was made by the issuer, and it would cost an extra point
        // decompression on every fresh token.
        if ed25519_dalek::Verifier::verify(
            &key,
            signing_input.as_bytes(),
            &ed25519_dalek::Signature::from_bytes(&signature),
        )
        .is_err()
        {
            return Err(self.unreadable(token, &kid));
        }
        let claims_bytes = URL_SAFE_NO_PAD
            .decode(claims_part)
            .map_err(|e| malformed(TokenPart::Claims, Defect::Base64, e))?;
        let claims: Claims = serde_json::from_slice(&claims_bytes)
            .map_err(|e| json_malformed(TokenPart::Claims, &e))?;
        if claims.iss != self.issuer {
            return Err(VerifyError::WrongIssuer {
                expected: self.issuer.clone(),
                found: claims.iss,
            });
        }
        if claims.aud != self.audience {
            return Err(VerifyError::WrongAudience {
                expected: self.audience.clone(),
                found: claims.aud,
            });
        }
        credential(claims, kid)
    }

    /// Why a token whose signature does not check out was rejected: a part that cannot be read
    /// says more than "bad signature".
    fn unreadable(&self, token: &str, kid: &str) -> VerifyError {
        match decode_unverified(token) {
            Err(e) => e,
            Ok(_) => VerifyError::BadSignature {
                kid: kid.to_string(),
            },
        }
    }

    /// What can change after a token was first verified: its lifetime and revocation.
    fn check_live(&self, c: &VerifiedCredential, now: u64) -> Result<(), VerifyError> {
        if now.saturating_add(self.leeway) < c.not_before {
            return Err(VerifyError::NotYetValid {
                nbf: c.not_before,
                now,
            });
        }
        if now >= c.expires_at.saturating_add(self.leeway) {
            return Err(VerifyError::Expired {
                exp: c.expires_at,
                now,
            });
        }
        let revoked = self.revocations.read();
        if revoked.is_jti_revoked(&c.jti) {
            return Err(VerifyError::Revoked { jti: c.jti.clone() });
        }
        if let Some(a) = c.ancestors.iter().find(|a| revoked.is_jti_revoked(a)) {
            return Err(VerifyError::DelegatedFromRevoked {
                ancestor: a.clone(),
            });
        }
        if let Some(p) = std::iter::once(&c.subject)
            .chain(&c.chain)
            .find(|p| revoked.is_identity_revoked(p.as_str()))
        {
            return Err(VerifyError::IdentityRevoked {
                identity: p.to_string(),
            });
        }
        Ok(())
    }
}

/// Claims (signature checked) to a credential: identifiers parsed, chain checked.
fn credential(claims: Claims, kid: String) -> Result<VerifiedCredential, VerifyError> {
    let bad = |claim: &str, e: &dyn fmt::Display| {
        malformed(
            TokenPart::Claims,
            Defect::Structure,
            format!("claim `{claim}`: {e}"),
        )
    };
    let subject = Principal::parse(&claims.sub).map_err(|e| bad("sub", &e))?;
    let owner = UserId::parse(&claims.owner).map_err(|e| bad("owner", &e))?;
    let mut chain = Vec::new();
    let mut path = String::from("act");
    let mut level = claims.act.as_ref();
    while let Some(actor) = level {
        chain.push(Principal::parse(&actor.sub).map_err(|e| bad(&format!("{path}.sub"), &e))?);
        path.push_str(".act");
        level = actor.act.as_deref();
    }
    chain.reverse();
    let tools = ToolSet::new(claims.tools).map_err(|e| bad("tools", &e))?;
    chain::check(&subject, &chain, &owner, &claims.jti, &claims.ancestors)?;
    Ok(VerifiedCredential {
        subject,
        chain,
        owner,
        tools,
        roles: claims.roles,
        groups: claims.groups,
        jti: claims.jti,
        ancestors: claims.ancestors,
        issuer: claims.iss,
        audience: claims.aud,
        issued_at: claims.iat,
        not_before: claims.nbf,
        expires_at: claims.exp,
        kid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_unverified_names_the_part() {
        let m = |t: &str| match decode_unverified(t) {
            Err(VerifyError::Malformed { part, defect, .. }) => Some((part, defect)),
            _ => None,
        };
        assert_eq!(m("a.b"), Some((TokenPart::Token, Defect::Structure)));
        assert_eq!(m("!!.e30.AA"), Some((TokenPart::Header, Defect::Base64)));
        // "{" is not JSON; "[]" is JSON but not an object.
        assert_eq!(m("ew.e30.AA"), Some((TokenPart::Header, Defect::Json)));
        assert_eq!(
            m("W10.e30.AA"),
            Some((TokenPart::Header, Defect::Structure))
        );
        assert_eq!(m("e30.!!.AA"), Some((TokenPart::Claims, Defect::Base64)));
        assert_eq!(
            m("e30.e30.!!"),
            Some((TokenPart::Signature, Defect::Base64))
        );
        assert_eq!(
            m("e30.e30.AA"),
            Some((TokenPart::Signature, Defect::Structure))
        );
    }
}
