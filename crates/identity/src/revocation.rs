//! Revocation: of one credential (by `jti`) or of a whole identity (an agent or a human).
//!
//! A revoked `jti` rejects that credential and every credential delegated from it (each
//! credential names its ancestors' `jti`s). A revoked identity rejects every credential held by
//! it or with it anywhere in the delegation chain: revoking a human revokes every agent acting
//! for them. The list lives in the issuer directory as `revocations.json`, replaced atomically.

use crate::clock::format_time;
use crate::files::write_atomic;
use crate::id::Principal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

const FORMAT_VERSION: u32 = 1;
/// The longest `jti` accepted for revocation, in bytes.
pub const MAX_JTI_LEN: usize = 256;

/// What went wrong with the revocation list.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file is not a revocation list.
    #[error("{path}: not a revocation list: {detail}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        detail: String,
    },
    /// The file was written by a newer version.
    #[error("{path}: revocation list format version {found} is not supported (expected {FORMAT_VERSION})")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// An empty or overlong `jti`.
    #[error("`{jti}` is not a credential id (1 to {MAX_JTI_LEN} bytes)")]
    BadJti {
        /// The rejected id.
        jti: String,
    },
    /// Revoked already.
    #[error("{what} `{id}` was already revoked at {when} by {by}")]
    AlreadyRevoked {
        /// `credential` or `identity`.
        what: &'static str,
        /// The id.
        id: String,
        /// When (RFC 3339).
        when: String,
        /// By whom.
        by: String,
    },
}

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// One credential, by `jti`.
    Jti,
    /// An identity: an agent or a human.
    Identity,
}

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// What kind of id `id` is.
    pub kind: RevocationKind,
    /// The `jti`, or the principal.
    pub id: String,
    /// When (seconds since the epoch).
    pub revoked_at: u64,
    /// Who revoked it.
    pub by: String,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Revocation {
    /// The revocation an `identity_revoked` ledger record says was made (`None` for any other
    /// record): how a process learns of a revocation another one recorded.
    pub fn from_record(record: &Value) -> Option<Revocation> {
        if record.get("kind")?.as_str()? != "identity_revoked" {
            return None;
        }
        let text = |key: &str| record.get(key).and_then(Value::as_str);
        let (kind, id) = match (text("jti"), text("identity")) {
            (Some(jti), None) => (RevocationKind::Jti, jti),
            (None, Some(identity)) => (RevocationKind::Identity, identity),
            _ => return None,
        };
        Some(Revocation {
            kind,
            id: id.to_string(),
            revoked_at: record.get("revoked_at")?.as_u64()?,
            by: text("by")?.to_string(),
            reason: text("reason").map(String::from),
        })
    }

    /// The `identity_revoked` ledger record: who revoked what, when, and why.
    pub fn record(&self) -> Value {
        let mut record = json!({
            "kind": "identity_revoked",
            "by": self.by,
            "time": format_time(self.revoked_at),
            "revoked_at": self.revoked_at,
        });
        if let Value::Object(map) = &mut record {
            let key = match self.kind {
                RevocationKind::Jti => "jti",
                RevocationKind::Identity => "identity",
            };
            map.insert(key.into(), Value::String(self.id.clone()));
            if let Some(reason) = &self.reason {
                map.insert("reason".into(), Value::String(reason.clone()));
            }
        }
        record
    }
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    revocations: Vec<Revocation>,
}

/// The revoked credentials and identities.
#[derive(Debug, Clone, Default)]
pub struct RevocationList {
    entries: Vec<Revocation>,
    jtis: HashSet<String>,
    identities: HashSet<String>,
}

impl RevocationList {
    /// Loads a list; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<Self, RevocationError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RevocationList::default()),
            Err(source) => {
                return Err(RevocationError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let file: File = serde_json::from_str(&text).map_err(|e| RevocationError::Format {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        if file.version != FORMAT_VERSION {
            return Err(RevocationError::Version {
                path: path.to_path_buf(),
                found: file.version,
            });
        }
        let mut list = RevocationList::default();
        for r in file.revocations {
            list.insert(r);
        }
        Ok(list)
    }

    /// Writes the list atomically.
    pub fn save(&self, path: &Path) -> Result<(), RevocationError> {
        let file = File {
            version: FORMAT_VERSION,
            revocations: self.entries.clone(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| RevocationError::Format {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        bytes.push(b'\n');
        write_atomic(path, &bytes, 0o644).map_err(|source| RevocationError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    fn insert(&mut self, r: Revocation) {
        match r.kind {
            RevocationKind::Jti => self.jtis.insert(r.id.clone()),
            RevocationKind::Identity => self.identities.insert(r.id.clone()),
        };
        self.entries.push(r);
    }

    fn already(&self, kind: RevocationKind, id: &str) -> Result<(), RevocationError> {
        match self.entries.iter().find(|r| r.kind == kind && r.id == id) {
            Some(r) => Err(RevocationError::AlreadyRevoked {
                what: match kind {
                    RevocationKind::Jti => "credential",
                    RevocationKind::Identity => "identity",
                },
                id: id.to_string(),
                when: format_time(r.revoked_at),
                by: r.by.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Revokes one credential (and so everything delegated from it).
    pub fn revoke_jti(
        &mut self,
        jti: &str,
        by: &str,
        reason: Option<String>,
        now: u64,
    ) -> Result<Revocation, RevocationError> {
        if jti.is_empty() || jti.len() > MAX_JTI_LEN {
            return Err(RevocationError::BadJti {
                jti: jti.to_string(),
            });
        }
        self.already(RevocationKind::Jti, jti)?;
        let r = Revocation {
            kind: RevocationKind::Jti,
            id: jti.to_string(),
            revoked_at: now,
            by: by.to_string(),
            reason,
        };
        self.insert(r.clone());
        Ok(r)
    }

    /// Revokes an identity: every credential it holds or that has it in its chain.
    pub fn revoke_identity(
        &mut self,
        identity: &Principal,
        by: &str,
        reason: Option<String>,
        now: u64,
    ) -> Result<Revocation, RevocationError> {
        self.already(RevocationKind::Identity, identity.as_str())?;
        let r = Revocation {
            kind: RevocationKind::Identity,
            id: identity.to_string(),
            revoked_at: now,
            by: by.to_string(),
            reason,
        };
        self.insert(r.clone());
        Ok(r)
    }

    /// Adds a revocation made elsewhere; `false` if the list has it already.
    pub fn learn(&mut self, r: Revocation) -> bool {
        if self.already(r.kind, &r.id).is_err() {
            return false;
        }
        self.insert(r);
        true
    }

    /// Whether the credential `jti` is revoked (by itself, not through an ancestor).
    pub fn is_jti_revoked(&self, jti: &str) -> bool {
        self.jtis.contains(jti)
    }

    /// Whether the identity is revoked.
    pub fn is_identity_revoked(&self, identity: &str) -> bool {
        self.identities.contains(identity)
    }

    /// Every revocation, oldest first.
    pub fn entries(&self) -> &[Revocation] {
        &self.entries
    }

    /// The `identity_revoked` records of every revocation, oldest first.
    pub fn records(&self) -> Vec<Value> {
        self.entries.iter().map(Revocation::record).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn revoke_save_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revocations.json");
        let mut list = RevocationList::load(&path).unwrap();
        assert!(list.entries().is_empty());
        let r = list
            .revoke_jti("j1", "user:admin", Some("leaked".into()), 1_794_560_400)
            .unwrap();
        assert_eq!(
            r.record(),
            json!({"kind": "identity_revoked", "by": "user:admin", "jti": "j1",
                "time": "2026-11-13T09:00:00Z", "revoked_at": 1_794_560_400u64, "reason": "leaked"})
        );
        let agent = Principal::parse("spiffe://acme.example/agent/recon").unwrap();
        list.revoke_identity(&agent, "user:admin", None, 5).unwrap();
        assert!(matches!(
            list.revoke_jti("j1", "user:admin", None, 6),
            Err(RevocationError::AlreadyRevoked { .. })
        ));
        assert!(matches!(
            list.revoke_jti("", "user:admin", None, 6),
            Err(RevocationError::BadJti { .. })
        ));
        list.save(&path).unwrap();
        let back = RevocationList::load(&path).unwrap();
        assert!(back.is_jti_revoked("j1"));
        assert!(back.is_identity_revoked(agent.as_str()));
        assert!(!back.is_jti_revoked("j2"));
        assert_eq!(back.entries(), list.entries());
        assert_eq!(back.records().len(), 2);
        assert_eq!(back.records()[1]["identity"], agent.as_str());
    }

    #[test]
    fn rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revocations.json");
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            RevocationList::load(&path),
            Err(RevocationError::Format { .. })
        ));
        std::fs::write(&path, r#"{"version": 9, "revocations": []}"#).unwrap();
        assert!(matches!(
            RevocationList::load(&path),
            Err(RevocationError::Version { found: 9, .. })
        ));
    }
}
