//! Checkpoints in the C2SP `tlog-checkpoint` format (<https://c2sp.org/tlog-checkpoint>):
//! the note text
//!
//! ```text
//! <origin>
//! <tree size, decimal, no leading zeroes>
//! <base64 of the RFC 6962 root hash>
//! ```
//!
//! (each line ending in `\n`), signed as a [signed note](crate::note) by the log key, whose
//! name is the origin. This log writes no extension lines and accepts none.

use crate::merkle::Hash;
use crate::note::{check_name, LogKey, NoteError, VerifierKey};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

/// Why a checkpoint could not be produced, parsed or trusted.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error("checkpoint origin is {found:?}, expected {expected:?}")]
    WrongOrigin { found: String, expected: String },
    #[error(transparent)]
    Note(#[from] NoteError),
}

/// A tree head: which log, how many entries, and the root over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity; also the name of the key that signs it.
    pub origin: String,
    /// The number of entries.
    pub size: u64,
    /// The RFC 6962 root of the first `size` entries.
    pub root: Hash,
}

impl Checkpoint {
    /// The note text: origin, size and base64 root, each followed by a newline.
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a note text strictly: exactly three lines in the canonical form `to_text` writes.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let bad = |what: &str| CheckpointError::Malformed(what.to_string());
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("text must end in a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root), None) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("expected exactly three lines: origin, size, root hash"));
        };
        check_name(origin)
            .map_err(|_| bad("origin must be non-empty and contain no spaces or '+'"))?;
        let canonical_size = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size = size
            .parse::<u64>()
            .ok()
            .filter(|_| canonical_size)
            .ok_or_else(|| bad(&format!("tree size {size:?} is not a decimal number")))?;
        let root_bytes = B64
            .decode(root)
            .map_err(|_| bad(&format!("root hash {root:?} is not base64")))?;
        let root_hash: Hash = root_bytes
            .try_into()
            .map_err(|_| bad("root hash is not 32 bytes"))?;
        let checkpoint = Checkpoint {
            origin: origin.to_string(),
            size,
            root: root_hash,
        };
        if checkpoint.to_text() != text {
            return Err(bad("root hash is not in canonical base64"));
        }
        Ok(checkpoint)
    }

    /// Signs the checkpoint with the log key (named like the origin); returns the signed note.
    pub fn sign(&self, key: &LogKey) -> Result<String, CheckpointError> {
        if key.name() != self.origin {
            return Err(CheckpointError::WrongOrigin {
                found: self.origin.clone(),
                expected: key.name().to_string(),
            });
        }
        Ok(key.sign(&self.to_text())?)
    }

    /// Checks a signed checkpoint note against the log's verifier key and returns the checkpoint;
    /// its origin must be the key name.
    pub fn open(note: &str, key: &VerifierKey) -> Result<Self, CheckpointError> {
        let checkpoint = Checkpoint::parse(key.open(note)?)?;
        if checkpoint.origin != key.name() {
            return Err(CheckpointError::WrongOrigin {
                found: checkpoint.origin,
                expected: key.name().to_string(),
            });
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_parses() {
        // The example of c2sp.org/tlog-checkpoint.
        let text =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let c = Checkpoint::parse(text).unwrap();
        assert_eq!(c.origin, "example.com/behind-the-sofa");
        assert_eq!(c.size, 20852163);
        assert_eq!(c.to_text(), text);
    }

    #[test]
    fn malformed_texts_are_rejected() {
        let root = B64.encode([7u8; 32]);
        for text in [
            format!("o\n01\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n1\n{root}"),
            format!("o\n1\n{root}\next\n"),
            format!("o o\n1\n{root}\n"),
            format!("\n1\n{root}\n"),
            "o\n1\nAAAA\n".to_string(),
            format!("o\n1\n{}\n", root.trim_end_matches('=')),
        ] {
            assert!(Checkpoint::parse(&text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn signed_checkpoint_round_trip() {
        let key = LogKey::generate("example.com/log").unwrap();
        let c = Checkpoint {
            origin: "example.com/log".into(),
            size: 3,
            root: [9; 32],
        };
        let note = c.sign(&key).unwrap();
        assert_eq!(Checkpoint::open(&note, key.verifier()).unwrap(), c);
        let other = LogKey::generate("example.com/other").unwrap();
        assert!(Checkpoint::open(&note, other.verifier()).is_err());
        assert!(c.sign(&other).is_err());
    }
}
