//! Copying a ledger from one store to another (a SQLite file to a PostgreSQL database, or
//! back): every entry at its index with its stored subtree hashes, every signed checkpoint, and
//! the verifier key. Nothing is recomputed or re-signed, so the copy verifies against the same
//! key with the same checkpoints.
//!
//! The source is verified before anything is copied (a ledger that does not verify is evidence
//! to keep where it is), the target must be empty, and the copy is verified after: it must have
//! the source's entries, checkpoints and root.

use crate::location::LedgerLocation;
use crate::store::{LedgerStore, StoreError};
use crate::verify::{verify, VerifyError, VerifyReport};

/// Entries copied per transaction.
const CHUNK: usize = 8192;

/// Why a ledger was not copied.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{from} and {to} are the same ledger")]
    Same { from: String, to: String },
    #[error("{location}: {source}")]
    Open {
        location: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("{location} does not verify, so it was not copied: {source}")]
    SourceInvalid {
        location: String,
        #[source]
        source: VerifyError,
    },
    #[error(
        "{location} is not empty (entries: {entries}, checkpoints: {checkpoints}, verifier key: \
         {key}): a ledger is copied into an empty one only"
    )]
    TargetNotEmpty {
        location: String,
        entries: u64,
        checkpoints: usize,
        key: &'static str,
    },
    #[error(
        "{location}: the copy stopped after {copied} of {total} entries: {source}; remove the \
         partial copy before trying again"
    )]
    Interrupted {
        location: String,
        copied: u64,
        total: u64,
        #[source]
        source: Box<StoreError>,
    },
    #[error("the copy in {location} does not verify: {source}")]
    CopyInvalid {
        location: String,
        #[source]
        source: VerifyError,
    },
    #[error("the copy in {location} differs from the source: {copy} (source: {source_report})")]
    CopyDiffers {
        location: String,
        copy: String,
        source_report: String,
    },
}

/// What was copied: the source's verification and the copy's (the same entries, checkpoints
/// and root).
#[derive(Debug)]
pub struct Migrated {
    pub source: VerifyReport,
    pub copy: VerifyReport,
}

/// Copies the ledger at `from` into the empty ledger at `to` (see the module documentation).
/// Writers to `from` should be stopped first: what they append during the copy is not copied.
pub fn migrate(from: &LedgerLocation, to: &LedgerLocation) -> Result<Migrated, MigrateError> {
    if from == to {
        return Err(MigrateError::Same {
            from: from.to_string(),
            to: to.to_string(),
        });
    }
    let source_store = from.open_read_only().map_err(opened(from))?;
    let source =
        verify(source_store.as_ref(), None).map_err(|source| MigrateError::SourceInvalid {
            location: from.to_string(),
            source,
        })?;
    let mut target = to.open_writable().map_err(opened(to))?;
    check_empty(target.as_ref(), to)?;
    let total = source.entries;
    copy(source_store.as_ref(), target.as_mut(), total).map_err(|(copied, source)| {
        MigrateError::Interrupted {
            location: to.to_string(),
            copied,
            total,
            source: Box::new(source),
        }
    })?;
    drop(target);
    let copy_store = to.open_read_only().map_err(opened(to))?;
    let copy = verify(copy_store.as_ref(), Some(&source.key)).map_err(|source| {
        MigrateError::CopyInvalid {
            location: to.to_string(),
            source,
        }
    })?;
    let summary = |r: &VerifyReport| (r.entries, r.checkpoints, r.root);
    if summary(&copy) != summary(&source) {
        return Err(MigrateError::CopyDiffers {
            location: to.to_string(),
            copy: copy.to_string(),
            source_report: source.to_string(),
        });
    }
    Ok(Migrated { source, copy })
}

/// The error of a store at `location` that cannot be opened or read.
fn opened(location: &LedgerLocation) -> impl FnOnce(StoreError) -> MigrateError {
    let location = location.to_string();
    move |source| MigrateError::Open {
        location,
        source: Box::new(source),
    }
}

fn check_empty(target: &dyn LedgerStore, to: &LedgerLocation) -> Result<(), MigrateError> {
    let read = || -> Result<_, StoreError> {
        Ok((
            target.size()?,
            target.checkpoints()?.len(),
            target.verifier_key()?.is_some(),
        ))
    };
    let (entries, checkpoints, has_key) = read().map_err(opened(to))?;
    if entries > 0 || checkpoints > 0 || has_key {
        return Err(MigrateError::TargetNotEmpty {
            location: to.to_string(),
            entries,
            checkpoints,
            key: if has_key { "yes" } else { "no" },
        });
    }
    Ok(())
}

/// Copies the key, the first `total` entries and the checkpoints of at most that size; on
/// failure, how many entries were copied.
fn copy(
    source: &dyn LedgerStore,
    target: &mut dyn LedgerStore,
    total: u64,
) -> Result<(), (u64, StoreError)> {
    let mut copied = 0;
    if let Some(key) = source.verifier_key().map_err(|e| (copied, e))? {
        target.set_verifier_key(&key).map_err(|e| (copied, e))?;
    }
    while copied < total {
        let want = usize::try_from(total - copied).map_or(CHUNK, |left| left.min(CHUNK));
        let chunk = source.scan(copied, want).map_err(|e| (copied, e))?;
        // Verified just before: contiguous from 0. A writer racing the copy shows here.
        if chunk.first().map(|e| e.index) != Some(copied) {
            return Err((copied, StoreError::MissingEntry { index: copied }));
        }
        target.append(&chunk, None).map_err(|e| (copied, e))?;
        copied += chunk.len() as u64;
    }
    for checkpoint in source.checkpoints().map_err(|e| (copied, e))? {
        if checkpoint.size <= total {
            target
                .append(&[], Some(&checkpoint))
                .map_err(|e| (copied, e))?;
        }
    }
    Ok(())
}
