//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519, byte-compatible with
//! `golang.org/x/mod/sumdb/note`.
//!
//! A signed note is a text ending in a newline, a blank line, then signature lines
//! `— <key name> <base64(key id ‖ signature)>`, where the key id is the first four bytes
//! (big-endian) of `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte Ed25519 public key)`.
//!
//! Keys have the string forms of the Go package:
//! - verifier key: `<name>+<key id, 8 hex digits>+<base64(0x01 ‖ public key)>`;
//! - signer key: `PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ 32-byte seed)>`.
//!
//! The ledger's key file holds the signer key string and a newline, with mode 0600.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write as _;
use std::path::Path;

/// The signature type byte of Ed25519 in signed notes.
pub const ALG_ED25519: u8 = 0x01;

const SIGNATURE_PREFIX: &str = "— ";

/// Why a key or a note was rejected.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error("invalid key name {0:?}: it must be non-empty UTF-8 without spaces or '+'")]
    InvalidName(String),
    #[error("malformed verifier key {0:?}: expected <name>+<8 hex digits>+<base64 key>")]
    MalformedVerifierKey(String),
    #[error("malformed signer key: expected PRIVATE+KEY+<name>+<8 hex digits>+<base64 key>")]
    MalformedSignerKey,
    #[error("key algorithm {0:#04x} is not Ed25519 (0x01)")]
    UnknownAlgorithm(u8),
    #[error("key id {found:08x} does not match the key (expected {expected:08x})")]
    KeyIdMismatch { found: u32, expected: u32 },
    #[error("invalid Ed25519 public key: {0}")]
    InvalidPublicKey(#[source] ed25519_dalek::SignatureError),
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    #[error("invalid signature by {key}")]
    BadSignature { key: String },
    #[error("not signed by {expected} (signatures by: {found})")]
    NotSignedBy { expected: String, found: String },
    #[error("key file {path}: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is accessible by other users (mode {mode:o}); it must be 0600")]
    KeyFilePermissions { path: String, mode: u32 },
    #[error("key file {path}: {source}")]
    KeyFileContents {
        path: String,
        #[source]
        source: Box<NoteError>,
    },
    #[error("key file {path} holds the key of {found:?}, not of {expected:?}")]
    KeyNameMismatch {
        path: String,
        found: String,
        expected: String,
    },
}

/// Checks the key-name rules of the spec: non-empty, no Unicode spaces, no `+`.
pub fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::InvalidName(name.to_string()));
    }
    Ok(())
}

/// The key id of an Ed25519 key: `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[..4]`, big-endian.
pub fn key_id(name: &str, public_key: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public_key.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// A named Ed25519 public key that checks note signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl VerifierKey {
    /// The verifier for `key` under `name`.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(VerifierKey {
            name: name.to_string(),
            id: key_id(name, &key),
            key,
        })
    }

    /// Parses `<name>+<hex8 key id>+<base64(0x01 ‖ public key)>`, checking the key id.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let malformed = || NoteError::MalformedVerifierKey(text.to_string());
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed());
        };
        check_name(name)?;
        let id = parse_key_id(id).ok_or_else(malformed)?;
        let key = B64.decode(key).map_err(|_| malformed())?;
        let public = decode_typed_key(&key).ok_or_else(malformed)??;
        let public = VerifyingKey::from_bytes(&public).map_err(NoteError::InvalidPublicKey)?;
        let verifier = VerifierKey::new(name, public)?;
        if verifier.id != id {
            return Err(NoteError::KeyIdMismatch {
                found: id,
                expected: verifier.id,
            });
        }
        Ok(verifier)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// `<name>+<hex8 key id>`: how error messages name this key.
    pub fn label(&self) -> String {
        format!("{}+{:08x}", self.name, self.id)
    }

    /// Checks a signed note: returns its text when a signature line with this key's name and id
    /// verifies. Signatures by other keys are ignored (as the spec requires); a signature that
    /// claims this key but does not verify rejects the note.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        if note.chars().any(|c| c < ' ' && c != '\n') {
            return Err(NoteError::Malformed("control character"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let (text, rest) = note.split_at(split + 1);
        let sigs = rest.strip_prefix('\n').unwrap_or(rest);
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::Malformed(
                "signature block must end in a newline",
            ));
        }
        let mut found = Vec::new();
        for line in sigs.lines() {
            let line = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or(NoteError::Malformed(
                    "signature line does not start with an em dash",
                ))?;
            let (name, b64) = line
                .split_once(' ')
                .ok_or(NoteError::Malformed("signature line has no signature"))?;
            check_name(name)?;
            let sig = B64
                .decode(b64)
                .map_err(|_| NoteError::Malformed("signature is not base64"))?;
            let (Some(id), Some(sig)) = (sig.get(..4), sig.get(4..)) else {
                return Err(NoteError::Malformed("signature is too short"));
            };
            let id = u32::from_be_bytes(id.try_into().unwrap_or_default());
            if name != self.name || id != self.id {
                found.push(format!("{name}+{id:08x}"));
                continue;
            }
            let bad = || NoteError::BadSignature { key: self.label() };
            let sig = Signature::from_slice(sig).map_err(|_| bad())?;
            self.key
                .verify_strict(text.as_bytes(), &sig)
                .map_err(|_| bad())?;
            return Ok(text);
        }
        Err(NoteError::NotSignedBy {
            expected: self.label(),
            found: if found.is_empty() {
                "none".to_string()
            } else {
                found.join(", ")
            },
        })
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = Vec::with_capacity(33);
        key.push(ALG_ED25519);
        key.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, B64.encode(key))
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl std::str::FromStr for VerifierKey {
    type Err = NoteError;
    fn from_str(s: &str) -> Result<Self, NoteError> {
        VerifierKey::parse(s)
    }
}

fn parse_key_id(hex8: &str) -> Option<u32> {
    if hex8.len() != 8 || !hex8.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex8, 16).ok()
}

/// `0x01 ‖ 32 bytes` → the 32 bytes.
fn decode_typed_key(key: &[u8]) -> Option<Result<[u8; 32], NoteError>> {
    let (&alg, rest) = key.split_first()?;
    if alg != ALG_ED25519 {
        return Some(Err(NoteError::UnknownAlgorithm(alg)));
    }
    Some(Ok(rest.try_into().ok()?))
}

/// A named Ed25519 signing key: the ledger's log key.
pub struct LogKey {
    signing: SigningKey,
    verifier: VerifierKey,
}

impl LogKey {
    /// A fresh random key named `name`.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        LogKey::from_signing_key(name, SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The key with this 32-byte Ed25519 seed (RFC 8032 private key).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        LogKey::from_signing_key(name, SigningKey::from_bytes(seed))
    }

    fn from_signing_key(name: &str, signing: SigningKey) -> Result<Self, NoteError> {
        let verifier = VerifierKey::new(name, signing.verifying_key())?;
        Ok(LogKey { signing, verifier })
    }

    /// Parses a signer key `PRIVATE+KEY+<name>+<hex8 key id>+<base64(0x01 ‖ seed)>`, checking
    /// that the key id matches the derived public key.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let text = text.trim_end_matches('\n');
        let mut parts = text.splitn(5, '+');
        let (Some("PRIVATE"), Some("KEY"), Some(name), Some(id), Some(key)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(NoteError::MalformedSignerKey);
        };
        check_name(name)?;
        let id = parse_key_id(id).ok_or(NoteError::MalformedSignerKey)?;
        let key = B64.decode(key).map_err(|_| NoteError::MalformedSignerKey)?;
        let seed = decode_typed_key(&key).ok_or(NoteError::MalformedSignerKey)??;
        let log_key = LogKey::from_seed(name, &seed)?;
        if log_key.verifier.id != id {
            return Err(NoteError::KeyIdMismatch {
                found: id,
                expected: log_key.verifier.id,
            });
        }
        Ok(log_key)
    }

    /// The signer key string (secret): `PRIVATE+KEY+<name>+<hex8>+<base64(0x01 ‖ seed)>`.
    pub fn to_signer_string(&self) -> String {
        let mut key = Vec::with_capacity(33);
        key.push(ALG_ED25519);
        key.extend_from_slice(self.signing.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.verifier.name,
            self.verifier.id,
            B64.encode(key)
        )
    }

    /// The key name (the checkpoint origin).
    pub fn name(&self) -> &str {
        self.verifier.name()
    }

    /// The public half, to give to verifiers.
    pub fn verifier(&self) -> &VerifierKey {
        &self.verifier
    }

    /// Signs `text` (which must end in a newline) and returns the signed note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') {
            return Err(NoteError::Malformed("note text must end in a newline"));
        }
        if text.chars().any(|c| c < ' ' && c != '\n') {
            return Err(NoteError::Malformed("control character"));
        }
        let sig = self.signing.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.verifier.id.to_be_bytes());
        blob.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n{SIGNATURE_PREFIX}{} {}\n",
            self.verifier.name,
            B64.encode(blob)
        ))
    }

    /// Reads a key file: one signer key string, optionally followed by a newline. On Unix the
    /// file must not be accessible by group or others.
    pub fn load(path: &Path) -> Result<Self, NoteError> {
        let shown = path.display().to_string();
        let io = |source| NoteError::KeyFile {
            path: shown.clone(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(NoteError::KeyFilePermissions {
                    path: shown,
                    mode: mode & 0o777,
                });
            }
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        LogKey::parse(&text).map_err(|e| NoteError::KeyFileContents {
            path: shown.clone(),
            source: Box::new(e),
        })
    }

    /// Creates a new key named `name` in a new file (mode 0600; fails if the file exists).
    /// The file appears atomically, complete or not at all: the key is written to a temporary
    /// file beside it, synced, then linked into place.
    pub fn create(path: &Path, name: &str) -> Result<Self, NoteError> {
        let key = LogKey::generate(name)?;
        let io = |source| NoteError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp_name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let written = options.open(&tmp).and_then(|mut file| {
            file.write_all(format!("{}\n", key.to_signer_string()).as_bytes())?;
            file.sync_all()
        });
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        linked.map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(key)
    }

    /// Loads the key file at `path`, or creates it with a new key when it does not exist; the
    /// key must be named `name`.
    pub fn load_or_create(path: &Path, name: &str) -> Result<Self, NoteError> {
        let key = match LogKey::create(path, name) {
            Err(NoteError::KeyFile { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                LogKey::load(path)?
            }
            other => other?,
        };
        if key.name() != name {
            return Err(NoteError::KeyNameMismatch {
                path: path.display().to_string(),
                found: key.name().to_string(),
                expected: name.to_string(),
            });
        }
        Ok(key)
    }
}

impl fmt::Debug for LogKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogKey({})", self.verifier.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example keys and note of golang.org/x/mod/sumdb/note (note_test.go, TestSign and
    // TestNewVerifier; https://github.com/golang/mod/blob/master/sumdb/note/note_test.go).
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const NOTE: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n\
                        \n\
                        — PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn go_reference_keys_and_note() {
        let signer = LogKey::parse(SKEY).unwrap();
        assert_eq!(signer.to_signer_string(), SKEY);
        assert_eq!(signer.verifier().to_string(), VKEY);
        assert_eq!(signer.verifier().id(), 0xc74f20a3);
        assert_eq!(signer.sign(TEXT).unwrap(), NOTE);
        let verifier = VerifierKey::parse(VKEY).unwrap();
        assert_eq!(verifier.open(NOTE).unwrap(), TEXT);
    }

    #[test]
    fn mangled_keys_are_rejected() {
        let b = VKEY.as_bytes();
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] = m[i].wrapping_add(1);
            if let Ok(s) = std::str::from_utf8(&m) {
                assert!(VerifierKey::parse(s).is_err(), "{s}");
            }
        }
        assert!(VerifierKey::parse("PeterNeumann+c74f20a3").is_err());
        assert!(LogKey::parse(&SKEY.replace("c74f20a3", "c74f20a4")).is_err());
        assert!(LogKey::parse(&SKEY.replace("PRIVATE", "PUBLIC")).is_err());
    }

    #[test]
    fn tampered_or_foreign_notes_are_rejected() {
        let v = VerifierKey::parse(VKEY).unwrap();
        assert!(matches!(
            v.open(&NOTE.replace("cryptography", "cryptographY")),
            Err(NoteError::BadSignature { .. })
        ));
        let other = LogKey::generate("PeterNeumann").unwrap();
        let foreign = other.sign(TEXT).unwrap();
        let err = v.open(&foreign).unwrap_err();
        assert!(matches!(err, NoteError::NotSignedBy { .. }), "{err}");
        assert!(err.to_string().contains("PeterNeumann+c74f20a3"), "{err}");
        assert!(v.open(TEXT).is_err());
        // Unknown signatures are ignored when a known one verifies.
        let both = format!("{}{}", foreign, &NOTE[TEXT.len() + 1..]);
        assert_eq!(v.open(&both).unwrap(), TEXT);
    }

    #[test]
    fn key_file_round_trip_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.key");
        let k = LogKey::load_or_create(&path, "example.com/log").unwrap();
        let again = LogKey::load_or_create(&path, "example.com/log").unwrap();
        assert_eq!(k.verifier(), again.verifier());
        assert!(matches!(
            LogKey::load_or_create(&path, "example.com/other"),
            Err(NoteError::KeyNameMismatch { .. })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                LogKey::load(&path),
                Err(NoteError::KeyFilePermissions { mode: 0o644, .. })
            ));
        }
    }
}
