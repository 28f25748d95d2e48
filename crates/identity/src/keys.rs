//! The issuer's signing keys, in a directory.
//!
//! ```text
//! keys/
//!   active-kid            the kid of the signing key
//!   <kid>.key.pem         its Ed25519 private key, PKCS#8 PEM, mode 0600
//!   <kid>.pub.pem         every public key still trusted for verification, SPKI PEM
//! ```
//!
//! A `kid` is the RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key, so it names
//! the key itself. Rotation makes a new key pair, points `active-kid` at it, and deletes the
//! old private key; the old public key stays (tokens it signed still verify) until retired.
//! The JWKS publishes every trusted public key as an RFC 8037 OKP/Ed25519 JWK.

use crate::files::{ensure_private_dir, write_atomic};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::EncodingKey;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const ACTIVE_FILE: &str = "active-kid";
const PRIVATE_SUFFIX: &str = ".key.pem";
const PUBLIC_SUFFIX: &str = ".pub.pem";

/// What went wrong with the key directory.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The private key file can be read by others than its owner.
    #[error(
        "{path}: the private key is readable by others (mode {mode:o}); run `chmod 600` on it"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file does not hold an Ed25519 key in PEM.
    #[error("{path}: not an Ed25519 {what} key in PEM: {detail}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// `private` or `public`.
        what: &'static str,
        /// The parser's complaint.
        detail: String,
    },
    /// A key file's name does not match the thumbprint of the key inside.
    #[error("{path}: the file is named for kid `{expected}` but holds the key `{found}`")]
    KidMismatch {
        /// The file.
        path: PathBuf,
        /// The kid in the name.
        expected: String,
        /// The kid of the key.
        found: String,
    },
    /// `active-kid` does not hold a kid.
    #[error("{path}: `{content}` is not a key id")]
    BadActiveKid {
        /// The file.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
    /// Retiring a key that is not there.
    #[error("no trusted key has kid `{kid}`")]
    UnknownKid {
        /// The kid.
        kid: String,
    },
    /// Retiring the signing key.
    #[error("`{kid}` is the active signing key; rotate first, then retire it")]
    RetireActive {
        /// The kid.
        kid: String,
    },
    /// Encoding a key to PEM failed.
    #[error("cannot encode the key: {detail}")]
    Encode {
        /// The encoder's complaint.
        detail: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The RFC 7638 thumbprint of an Ed25519 public key: base64url(SHA-256 of
/// `{"crv":"Ed25519","kty":"OKP","x":"<x>"}`).
pub fn kid_for(key: &VerifyingKey) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(key.as_bytes())
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The RFC 8037 JWK of an Ed25519 public key, with `kid`, `alg: EdDSA` and `use: sig`.
pub fn jwk_for(kid: &str, key: &VerifyingKey) -> Jwk {
    Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            key_id: Some(kid.to_string()),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: URL_SAFE_NO_PAD.encode(key.as_bytes()),
        }),
    }
}

fn is_kid(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The key directory: one signing key and every public key still trusted.
pub struct KeyStore {
    dir: PathBuf,
    active_kid: String,
    signing: EncodingKey,
    public: BTreeMap<String, VerifyingKey>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("dir", &self.dir)
            .field("active_kid", &self.active_kid)
            .field("trusted", &self.public.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Opens the key directory, creating it with a fresh key pair if it has no active key.
    pub fn open_or_create(dir: &Path) -> Result<Self, KeyError> {
        if !dir.join(ACTIVE_FILE).exists() {
            ensure_private_dir(dir).map_err(io_err(dir))?;
            let kid = write_new_key(dir)?;
            set_active(dir, &kid)?;
        }
        KeyStore::open(dir)
    }

    /// Opens an existing key directory.
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        let active_path = dir.join(ACTIVE_FILE);
        let content = fs::read_to_string(&active_path).map_err(io_err(&active_path))?;
        let active_kid = content.trim().to_string();
        if !is_kid(&active_kid) {
            return Err(KeyError::BadActiveKid {
                path: active_path,
                content: active_kid,
            });
        }
        let (signing_key, path) = read_private(dir, &active_kid)?;
        let der = signing_key.to_pkcs8_der().map_err(|e| KeyError::Encode {
            detail: e.to_string(),
        })?;
        let verifying = signing_key.verifying_key();
        let found = kid_for(&verifying);
        if found != active_kid {
            return Err(KeyError::KidMismatch {
                path,
                expected: active_kid,
                found,
            });
        }
        let mut public = read_public_keys(dir)?;
        public.insert(active_kid.clone(), verifying);
        Ok(KeyStore {
            dir: dir.to_path_buf(),
            active_kid,
            signing: EncodingKey::from_ed_der(der.as_bytes()),
            public,
        })
    }

    /// The kid of the signing key.
    pub fn active_kid(&self) -> &str {
        &self.active_kid
    }

    /// The file of the signing key (PKCS#8 PEM).
    pub fn private_key_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}{PRIVATE_SUFFIX}", self.active_kid))
    }

    /// Every trusted public key, by kid.
    pub fn public_keys(&self) -> &BTreeMap<String, VerifyingKey> {
        &self.public
    }

    /// The signing key, as `jsonwebtoken` takes it.
    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.signing
    }

    /// Makes a new signing key; the old public key stays trusted and the old private key is
    /// deleted. Returns the new kid.
    pub fn rotate(&mut self) -> Result<String, KeyError> {
        let old_private = self.private_key_path();
        let kid = write_new_key(&self.dir)?;
        set_active(&self.dir, &kid)?;
        match fs::remove_file(&old_private) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(KeyError::Io {
                    path: old_private,
                    source: e,
                })
            }
            _ => {}
        }
        *self = KeyStore::open(&self.dir)?;
        Ok(kid)
    }

    /// Stops trusting the public key `kid`: tokens it signed no longer verify.
    pub fn retire(&mut self, kid: &str) -> Result<(), KeyError> {
        if kid == self.active_kid {
            return Err(KeyError::RetireActive {
                kid: kid.to_string(),
            });
        }
        if !self.public.contains_key(kid) || !is_kid(kid) {
            return Err(KeyError::UnknownKid {
                kid: kid.to_string(),
            });
        }
        let path = self.dir.join(format!("{kid}{PUBLIC_SUFFIX}"));
        fs::remove_file(&path).map_err(io_err(&path))?;
        self.public.remove(kid);
        Ok(())
    }

    /// The JWKS document (RFC 7517) of every trusted public key, the signing key first.
    pub fn jwks(&self) -> JwkSet {
        let mut keys: Vec<Jwk> = self
            .public
            .get(&self.active_kid)
            .map(|k| jwk_for(&self.active_kid, k))
            .into_iter()
            .collect();
        keys.extend(
            self.public
                .iter()
                .filter(|(kid, _)| **kid != self.active_kid)
                .map(|(kid, k)| jwk_for(kid, k)),
        );
        JwkSet { keys }
    }
}

/// Writes a fresh key pair; returns its kid.
fn write_new_key(dir: &Path) -> Result<String, KeyError> {
    let signing = SigningKey::generate(&mut rand::rngs::OsRng);
    let verifying = signing.verifying_key();
    let kid = kid_for(&verifying);
    let encode = |e: &dyn std::fmt::Display| KeyError::Encode {
        detail: e.to_string(),
    };
    // PKCS#8 v1 (RFC 8410 §7, no embedded public key): the form OpenSSL and Python's
    // `cryptography` write and read.
    let private_pem = KeypairBytes {
        secret_key: signing.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| encode(&e))?;
    let public_pem = verifying
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| encode(&e))?;
    let public_path = dir.join(format!("{kid}{PUBLIC_SUFFIX}"));
    write_atomic(&public_path, public_pem.as_bytes(), 0o644).map_err(io_err(&public_path))?;
    let private_path = dir.join(format!("{kid}{PRIVATE_SUFFIX}"));
    write_atomic(&private_path, private_pem.as_bytes(), 0o600).map_err(io_err(&private_path))?;
    Ok(kid)
}

fn set_active(dir: &Path, kid: &str) -> Result<(), KeyError> {
    let path = dir.join(ACTIVE_FILE);
    write_atomic(&path, format!("{kid}\n").as_bytes(), 0o644).map_err(io_err(&path))
}

fn read_private(dir: &Path, kid: &str) -> Result<(SigningKey, PathBuf), KeyError> {
    let path = dir.join(format!("{kid}{PRIVATE_SUFFIX}"));
    #[cfg(unix)]
    {
        let mode = crate::files::mode_of(&path).map_err(io_err(&path))?;
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecurePermissions { path, mode });
        }
    }
    let pem = fs::read_to_string(&path).map_err(io_err(&path))?;
    let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::BadKey {
        path: path.clone(),
        what: "private",
        detail: e.to_string(),
    })?;
    Ok((key, path))
}

fn read_public_keys(dir: &Path) -> Result<BTreeMap<String, VerifyingKey>, KeyError> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let Some(kid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(PUBLIC_SUFFIX))
            .map(str::to_string)
        else {
            continue;
        };
        let pem = fs::read_to_string(&path).map_err(io_err(&path))?;
        let key = VerifyingKey::from_public_key_pem(&pem).map_err(|e| KeyError::BadKey {
            path: path.clone(),
            what: "public",
            detail: e.to_string(),
        })?;
        let found = kid_for(&key);
        if found != kid {
            return Err(KeyError::KidMismatch {
                path,
                expected: kid,
                found,
            });
        }
        out.insert(kid, key);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn create_rotate_retire() {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        let mut store = KeyStore::open_or_create(&keys_dir).unwrap();
        let first = store.active_kid().to_string();
        assert!(is_kid(&first));
        #[cfg(unix)]
        assert_eq!(
            crate::files::mode_of(&store.private_key_path()).unwrap(),
            0o600
        );
        assert_eq!(
            KeyStore::open_or_create(&keys_dir).unwrap().active_kid(),
            first
        );

        let second = store.rotate().unwrap();
        assert_ne!(first, second);
        assert_eq!(store.public_keys().len(), 2);
        assert!(!keys_dir.join(format!("{first}{PRIVATE_SUFFIX}")).exists());
        let jwks = store.jwks();
        assert_eq!(jwks.keys.len(), 2);
        assert_eq!(jwks.keys[0].common.key_id.as_deref(), Some(second.as_str()));

        assert!(matches!(
            store.retire(&second),
            Err(KeyError::RetireActive { .. })
        ));
        assert!(matches!(
            store.retire("nope"),
            Err(KeyError::UnknownKid { .. })
        ));
        store.retire(&first).unwrap();
        assert_eq!(KeyStore::open(&keys_dir).unwrap().public_keys().len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_world_readable_private_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open_or_create(dir.path()).unwrap();
        fs::set_permissions(store.private_key_path(), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            KeyStore::open(dir.path()),
            Err(KeyError::InsecurePermissions { mode: 0o644, .. })
        ));
    }

    #[test]
    fn jwk_shape_and_thumbprint() {
        // RFC 8037 appendix A.1/A.3: the thumbprint of the example Ed25519 key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let key = VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
        assert_eq!(kid_for(&key), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        let jwk = serde_json::to_value(jwk_for("k", &key)).unwrap();
        assert_eq!(
            jwk,
            serde_json::json!({"kty": "OKP", "crv": "Ed25519",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                "kid": "k", "alg": "EdDSA", "use": "sig"})
        );
    }
}
