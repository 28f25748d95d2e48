//! The `[ledger]` table of a configuration file: the same names and defaults in `truststack
//! serve` and `truststack gateway`.
//!
//! ```toml
//! [ledger]
//! path = "truststack.db"             # one SQLite file (WAL), created on first use
//! key = "truststack.key"             # default: the path with the extension .key
//! origin = "truststack.local/ledger" # the checkpoint origin and key name
//! checkpoint_every = 1000            # sign a checkpoint every N records (and on demand)
//! ```

use crate::ledger::{Ledger, LedgerConfig, LedgerError, DEFAULT_CHECKPOINT_EVERY, DEFAULT_ORIGIN};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where decisions are written ahead, and how the log is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    /// The SQLite file.
    pub path: PathBuf,
    /// The checkpoint signing key (Ed25519, created on first use, mode 0600). Default: `path`
    /// with the extension `.key`.
    pub key: Option<PathBuf>,
    /// The checkpoint origin, which is also the key's name.
    pub origin: String,
    /// Sign a checkpoint every this many records (0: only on demand and at shutdown).
    pub checkpoint_every: u64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            path: "truststack.db".into(),
            key: None,
            origin: DEFAULT_ORIGIN.into(),
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
        }
    }
}

impl LedgerSettings {
    /// The signing key's file.
    pub fn key_file(&self) -> PathBuf {
        self.key
            .clone()
            .unwrap_or_else(|| self.path.with_extension("key"))
    }

    /// Makes relative paths relative to `base` (the configuration file's directory).
    pub fn resolve(&mut self, base: &Path) {
        if self.path.is_relative() {
            self.path = base.join(&self.path);
        }
        if let Some(key) = &mut self.key {
            if key.is_relative() {
                *key = base.join(&*key);
            }
        }
    }

    /// Opens (or creates) the ledger these settings describe, for appending.
    pub fn open(&self) -> Result<Ledger, LedgerError> {
        Ledger::open(
            &self.path,
            &LedgerConfig {
                key_file: self.key_file(),
                origin: self.origin.clone(),
                checkpoint_every: self.checkpoint_every,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_and_resolution() {
        let mut s: LedgerSettings = toml::from_str("path = \"l.db\"").unwrap();
        assert_eq!(s.key_file(), PathBuf::from("l.key"));
        assert_eq!(s.checkpoint_every, DEFAULT_CHECKPOINT_EVERY);
        s.resolve(Path::new("/etc/ts"));
        assert_eq!(s.key_file(), PathBuf::from("/etc/ts/l.key"));
        let e = toml::from_str::<LedgerSettings>("pathh = \"x\"").unwrap_err();
        assert!(e.to_string().contains("unknown field `pathh`"), "{e}");
    }
}
