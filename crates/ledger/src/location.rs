//! Where a ledger lives: a SQLite file (a path) or a PostgreSQL database (a `postgres://…` or
//! `postgresql://…` URL). One parser for every place a ledger is named: the command line, the
//! `[ledger]` table of a configuration file, tests.
//!
//! A URL may carry a password; [`LedgerLocation`]'s `Display` never shows it.

use crate::postgres::PostgresStore;
use crate::sqlite::SqliteStore;
use crate::store::{LedgerStore, StoreError};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A writable ledger's stores: the writer's, and the one its reads go through.
pub(crate) type WriterAndReader = (Box<dyn LedgerStore>, Box<dyn LedgerStore>);

/// The URL schemes that name a PostgreSQL ledger.
const POSTGRES_SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// A ledger's storage.
#[derive(Clone, PartialEq, Eq)]
pub enum LedgerLocation {
    /// One SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by connection URL.
    Postgres(PostgresUrl),
}

/// A PostgreSQL connection URL, checked when parsed. Shown (`Display`, `Debug`) without its
/// password.
#[derive(Clone)]
pub struct PostgresUrl {
    url: String,
    /// Boxed: the settings are large, and a location is mostly a path.
    config: Box<postgres::Config>,
}

/// Why a ledger location is not usable.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("the ledger location is empty: give a file path or a postgres:// URL")]
    Empty,
    #[error("{url}: not a valid PostgreSQL connection URL: {reason}")]
    BadUrl { url: String, reason: String },
}

impl PostgresUrl {
    /// Parses a `postgres://` or `postgresql://` URL.
    pub fn parse(url: &str) -> Result<Self, LocationError> {
        let config = postgres::Config::from_str(url).map_err(|e| LocationError::BadUrl {
            url: redact(url),
            reason: crate::postgres::describe(&e),
        })?;
        Ok(PostgresUrl {
            url: url.to_string(),
            config: Box::new(config),
        })
    }

    /// The connection settings.
    pub fn config(&self) -> &postgres::Config {
        &self.config
    }

    /// The URL as given, password included: only for connecting (never for messages).
    pub fn secret_url(&self) -> &str {
        &self.url
    }
}

impl PartialEq for PostgresUrl {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url
    }
}

impl Eq for PostgresUrl {}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// `url` with the password of its user info and of a `password=` parameter replaced by `***`.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, hosts)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{hosts}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect::<Vec<_>>()
                .join("&");
            format!("{path}?{query}")
        }
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

impl LedgerLocation {
    /// A `postgres://` or `postgresql://` URL names a PostgreSQL ledger; anything else is the
    /// path of a SQLite file.
    pub fn parse(text: &str) -> Result<Self, LocationError> {
        if text.is_empty() {
            return Err(LocationError::Empty);
        }
        if POSTGRES_SCHEMES
            .iter()
            .any(|scheme| text.starts_with(scheme))
        {
            return Ok(LedgerLocation::Postgres(PostgresUrl::parse(text)?));
        }
        Ok(LedgerLocation::Sqlite(PathBuf::from(text)))
    }

    /// The location of a path as written in a file or on a command line: a URL when it is one.
    pub fn from_path(path: &Path) -> Result<Self, LocationError> {
        match path.to_str() {
            Some(text) => LedgerLocation::parse(text),
            None => Ok(LedgerLocation::Sqlite(path.to_path_buf())),
        }
    }

    /// Opens the store for writing: the writer's view and a reader's.
    pub(crate) fn open_for_writing(&self) -> Result<WriterAndReader, StoreError> {
        Ok(match self {
            LedgerLocation::Sqlite(path) => (
                Box::new(SqliteStore::open(path)?),
                Box::new(SqliteStore::open_reader(path)?),
            ),
            LedgerLocation::Postgres(url) => (
                Box::new(PostgresStore::open(url)?),
                Box::new(PostgresStore::open_read_only(url)?),
            ),
        })
    }

    /// Opens an existing ledger's store read-only.
    pub fn open_read_only(&self) -> Result<Box<dyn LedgerStore>, StoreError> {
        Ok(match self {
            LedgerLocation::Sqlite(path) => {
                Box::new(SqliteStore::open_read_only(path)?.with_mmap())
            }
            LedgerLocation::Postgres(url) => Box::new(PostgresStore::open_read_only(url)?),
        })
    }

    /// Opens the store for writing, creating it if needed (what `ledger migrate` copies into).
    pub fn open_writable(&self) -> Result<Box<dyn LedgerStore>, StoreError> {
        Ok(match self {
            LedgerLocation::Sqlite(path) => Box::new(SqliteStore::open(path)?),
            LedgerLocation::Postgres(url) => Box::new(PostgresStore::open(url)?),
        })
    }
}

impl FromStr for LedgerLocation {
    type Err = LocationError;
    fn from_str(text: &str) -> Result<Self, LocationError> {
        LedgerLocation::parse(text)
    }
}

impl fmt::Display for LedgerLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerLocation::Sqlite(path) => write!(f, "{}", path.display()),
            LedgerLocation::Postgres(url) => write!(f, "{url}"),
        }
    }
}

impl fmt::Debug for LedgerLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerLocation::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
            LedgerLocation::Postgres(url) => write!(f, "Postgres({url})"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_and_urls() {
        assert_eq!(
            LedgerLocation::parse("ledger.db").unwrap(),
            LedgerLocation::Sqlite("ledger.db".into())
        );
        assert_eq!(
            LedgerLocation::parse("./postgres://x").unwrap(),
            LedgerLocation::Sqlite("./postgres://x".into())
        );
        for url in [
            "postgres://ts@db.example:5433/ledger",
            "postgresql://ts@db.example/ledger?connect_timeout=5",
        ] {
            let parsed = LedgerLocation::parse(url).unwrap();
            assert!(matches!(parsed, LedgerLocation::Postgres(_)), "{url}");
            assert_eq!(parsed.to_string(), url);
        }
        // As libpq reads them: the scheme is lower case.
        assert_eq!(
            LedgerLocation::parse("POSTGRES://x").unwrap(),
            LedgerLocation::Sqlite("POSTGRES://x".into())
        );
        assert!(matches!(
            LedgerLocation::parse(""),
            Err(LocationError::Empty)
        ));
    }

    #[test]
    fn passwords_are_never_shown() {
        let url = "postgres://ts:s3cret@db.example:5432/ledger?sslmode=disable&password=other";
        let parsed = LedgerLocation::parse(url).unwrap();
        let shown = format!("{parsed} {parsed:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("other"),
            "{shown}"
        );
        assert_eq!(
            parsed.to_string(),
            "postgres://ts:***@db.example:5432/ledger?sslmode=disable&password=***"
        );
        let err = LedgerLocation::parse("postgres://ts:s3cret@db.example:notaport/ledger")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("postgres://ts:***@db.example:notaport/ledger: "),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }
}
