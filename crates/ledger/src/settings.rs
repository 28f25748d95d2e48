//! The `[ledger]` table of a configuration file: the same names and defaults in `truststack
//! serve` and `truststack gateway`.
//!
//! ```toml
//! [ledger]
//! path = "truststack.db"             # one SQLite file (WAL), created on first use,
//!                                    # or a postgres:// URL (a PostgreSQL database)
//! key = "truststack.key"             # default: the path with the extension .key
//!                                    # (required with a postgres:// URL)
//! origin = "truststack.local/ledger" # the checkpoint origin and key name
//! checkpoint_every = 1000            # sign a checkpoint every N records (and on demand)
//! ```

use crate::ledger::{Ledger, LedgerConfig, LedgerError, DEFAULT_CHECKPOINT_EVERY, DEFAULT_ORIGIN};
use crate::location::{LedgerLocation, LocationError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where decisions are written ahead, and how the log is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    /// The SQLite file, or a `postgres://` / `postgresql://` URL.
    pub path: PathBuf,
    /// The checkpoint signing key (Ed25519, created on first use, mode 0600). Default: `path`
    /// with the extension `.key`; a PostgreSQL ledger names it (every replica signs with it).
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

/// Why the `[ledger]` table does not name a usable ledger.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("[ledger] path: {0}")]
    Location(#[from] LocationError),
    #[error(
        "[ledger] path is the PostgreSQL database {location}: set `key` to the checkpoint \
         signing key's file (every replica signs with the same key)"
    )]
    NoKey { location: String },
}

impl LedgerSettings {
    /// Where the ledger is: `path` as a file, or as a PostgreSQL URL.
    pub fn location(&self) -> Result<LedgerLocation, LocationError> {
        LedgerLocation::from_path(&self.path)
    }

    /// The signing key's file.
    pub fn key_file(&self) -> Result<PathBuf, SettingsError> {
        if let Some(key) = &self.key {
            return Ok(key.clone());
        }
        match self.location()? {
            LedgerLocation::Sqlite(path) => Ok(path.with_extension("key")),
            LedgerLocation::Postgres(url) => Err(SettingsError::NoKey {
                location: url.to_string(),
            }),
        }
    }

    /// Makes relative paths relative to `base` (the configuration file's directory).
    pub fn resolve(&mut self, base: &Path) {
        let is_file = matches!(self.location(), Ok(LedgerLocation::Sqlite(_)));
        if is_file && self.path.is_relative() {
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
        let location = self.location().map_err(SettingsError::from)?;
        // Replicas sharing a database: an auditor sees the log signed at least every second
        // while it grows, however the appends are spread over the replicas.
        let shared = matches!(location, LedgerLocation::Postgres(_));
        Ledger::open_at(
            &location,
            &LedgerConfig {
                key_file: self.key_file()?,
                origin: self.origin.clone(),
                checkpoint_every: self.checkpoint_every,
                checkpoint_interval_us: shared.then_some(1_000_000),
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
        assert_eq!(s.key_file().unwrap(), PathBuf::from("l.key"));
        assert_eq!(s.checkpoint_every, DEFAULT_CHECKPOINT_EVERY);
        s.resolve(Path::new("/etc/ts"));
        assert_eq!(s.key_file().unwrap(), PathBuf::from("/etc/ts/l.key"));
        let e = toml::from_str::<LedgerSettings>("pathh = \"x\"").unwrap_err();
        assert!(e.to_string().contains("unknown field `pathh`"), "{e}");
    }

    #[test]
    fn a_postgres_ledger_is_not_a_relative_path_and_names_its_key() {
        let mut s: LedgerSettings =
            toml::from_str("path = \"postgres://ts:pw@db.example/ledger\"").unwrap();
        s.resolve(Path::new("/etc/ts"));
        assert!(matches!(s.location().unwrap(), LedgerLocation::Postgres(_)));
        let e = s.key_file().unwrap_err().to_string();
        assert!(
            e.starts_with("[ledger] path is the PostgreSQL database postgres://ts:***@db.example/ledger: set `key`"),
            "{e}"
        );
        s.key = Some("ledger.key".into());
        s.resolve(Path::new("/etc/ts"));
        assert_eq!(s.key_file().unwrap(), PathBuf::from("/etc/ts/ledger.key"));
    }
}
