//! `truststack ledger verify|show|proof|checkpoint|export|key|replay`: read-only views of a
//! ledger (a SQLite file, or a PostgreSQL database by `postgres://` URL); `ledger migrate`
//! copies one into another.

use crate::policy_cmd::{load_engine, Choice};
use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use truststack_engine::replay::{divergences, Replayed};
use truststack_engine::Settings;
use truststack_ledger::query::{field, parse_time, RecordFilter};
use truststack_ledger::store::StoreError;
use truststack_ledger::{
    base64_hash, Entry, Ledger, LedgerLocation, LogKey, VerifierKey, VerifyError,
};

/// Entries read per store call when walking the whole log.
const PAGE: u64 = 1024;

/// The verdicts `--decision` accepts.
const VERDICTS: [&str; 3] = ["allow", "deny", "require_approval"];

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Recompute every hash and check every checkpoint; exit 0 if all is well, 1 naming the
    /// first bad index otherwise (2 if the file cannot be read at all).
    Verify {
        /// The ledger: a SQLite file, or a postgres:// URL.
        file: LedgerLocation,
        /// The log's verifier key (`<name>+<id>+<key>`), to check checkpoints against a key
        /// you trust rather than the one the file records.
        #[arg(long, conflicts_with = "key_file")]
        key: Option<String>,
        /// A file holding the verifier key, or the log's private key file.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// List records, optionally filtered.
    Show(ShowArgs),
    /// Print inclusion or consistency proofs as JSON (hashes in base64).
    #[command(subcommand)]
    Proof(ProofCommand),
    /// Print the latest signed checkpoint (a C2SP signed note), verbatim.
    Checkpoint {
        /// The ledger: a SQLite file, or a postgres:// URL.
        file: LedgerLocation,
    },
    /// Write every entry covered by the latest checkpoint as JSON lines, each with its leaf
    /// hash and inclusion proof, then the checkpoint itself.
    Export {
        /// The ledger: a SQLite file, or a postgres:// URL.
        file: LedgerLocation,
    },
    /// Print the verifier key the ledger records (publish it; pass it to `verify --key`).
    Key {
        /// The ledger: a SQLite file, or a postgres:// URL.
        file: LedgerLocation,
    },
    /// Re-decide every recorded call under other policies and report the decisions that would
    /// change: what this policy change would have done to last week's traffic.
    #[command(after_help = "Examples:\n  \
        truststack ledger replay ledger.db --policy new.tsp --catalog catalog.toml\n  \
        truststack ledger replay ledger.db --catalog catalog.toml          # no policies at all\n\n\
        Exit status: 0 when the report was made (whether or not decisions change), 2 on bad input.")]
    Replay(ReplayArgs),
    /// Copy a ledger into an empty one: a SQLite file into a PostgreSQL database, or back.
    /// Entries keep their indexes, checkpoints their signatures; both sides are verified.
    #[command(after_help = "Examples:\n  \
        truststack ledger migrate truststack.db postgres://truststack@db.example/truststack\n  \
        truststack ledger migrate postgres://truststack@db.example/truststack copy.db\n\n\
        Stop the servers writing to FROM first: entries appended during the copy are not copied.")]
    Migrate {
        /// The ledger to copy: a SQLite file, or a postgres:// URL.
        from: LedgerLocation,
        /// The empty ledger to copy into (a SQLite file is created).
        to: LedgerLocation,
    },
}

#[derive(Args)]
pub struct ReplayArgs {
    /// The ledger: a SQLite file, or a postgres:// URL.
    file: LedgerLocation,
    /// A policy file of the candidate bundle; repeat for several (none: no policies at all).
    #[arg(long = "policy")]
    policies: Vec<PathBuf>,
    /// The tool catalog (TOML) the calls were decided with. Without it every tool is unknown.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// The decision for calls no policy fires on.
    #[arg(long, value_enum, default_value = "allow")]
    default: Choice,
    /// Whether tools missing from the catalog may be called.
    #[arg(long, value_enum, default_value = "deny")]
    unknown_tools: Choice,
    /// One JSON line per changed decision instead of a table (the summary goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    /// The ledger: a SQLite file, or a postgres:// URL.
    file: LedgerLocation,
    /// Only records of this acting agent.
    #[arg(long)]
    agent: Option<String>,
    /// Only records of this session.
    #[arg(long)]
    session: Option<String>,
    /// Only records under this delegation root (the first agent of the chain).
    #[arg(long)]
    root: Option<String>,
    /// Only records of this tool.
    #[arg(long)]
    tool: Option<String>,
    /// Only records with this decision (allow, deny, require_approval).
    #[arg(long)]
    decision: Option<String>,
    /// Only records of this kind (decision, observation, approval, policy_activation,
    /// identity_issued, identity_revoked).
    #[arg(long)]
    kind: Option<String>,
    /// Only records whose `time` is at or after this RFC 3339 timestamp.
    #[arg(long)]
    since: Option<String>,
    /// Only records whose `time` is before this RFC 3339 timestamp.
    #[arg(long)]
    until: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// One JSON line per record (the same as `--format jsonl`).
    #[arg(long, conflicts_with = "format")]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Jsonl,
}

#[derive(Subcommand)]
pub enum ProofCommand {
    /// Prove that entry INDEX is in the tree of the first SIZE entries. The output carries the
    /// record's canonical JSON and, when SIZE is a checkpoint's, the signed checkpoint: with
    /// the log's published key, that is all an independent verifier needs.
    Inclusion {
        /// The ledger: a SQLite file, or a postgres:// URL.
        file: LedgerLocation,
        #[arg(long)]
        index: u64,
        /// The tree size (default: the latest checkpoint's, if it covers the entry; else the
        /// whole log).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Prove that the tree of the first OLD entries is a prefix of the tree of the first NEW.
    Consistency {
        /// The ledger: a SQLite file, or a postgres:// URL.
        file: LedgerLocation,
        #[arg(long)]
        old: u64,
        /// The newer tree size (default: the latest checkpoint's, if it is at least OLD; else
        /// the whole log).
        #[arg(long)]
        new: Option<u64>,
    },
}

pub fn run(cmd: LedgerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LedgerCommand::Verify {
            file,
            key,
            key_file,
        } => verify(&file, key.as_deref(), key_file.as_deref()),
        LedgerCommand::Show(args) => show(&args),
        LedgerCommand::Replay(args) => replay(&args),
        LedgerCommand::Proof(ProofCommand::Inclusion { file, index, size }) => {
            inclusion(&file, index, size)
        }
        LedgerCommand::Proof(ProofCommand::Consistency { file, old, new }) => {
            consistency(&file, old, new)
        }
        LedgerCommand::Checkpoint { file } => {
            let ledger = open(&file)?;
            let Some(c) = ledger.latest_checkpoint() else {
                bail!(
                    "{file} has no checkpoint yet (one is signed every `checkpoint_every` records \
                     and when a `policy eval --ledger` run ends)"
                );
            };
            if ledger.len() > c.checkpoint.size {
                eprintln!(
                    "note: the log has {} entries; entries {}.. are newer than this checkpoint",
                    ledger.len(),
                    c.checkpoint.size
                );
            }
            say!("{}", c.note.strip_suffix('\n').unwrap_or(&c.note));
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Export { file } => export(&file),
        LedgerCommand::Migrate { from, to } => migrate(&from, &to),
        LedgerCommand::Key { file } => {
            say!("{}", open(&file)?.verifier_key());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open(file: &LedgerLocation) -> anyhow::Result<Ledger> {
    Ledger::open_read_only_at(file).with_context(|| format!("cannot open {file}"))
}

fn print_json(value: &Value) -> anyhow::Result<ExitCode> {
    say!("{}", serde_json::to_string_pretty(value)?);
    Ok(ExitCode::SUCCESS)
}

/// The signed note of the stored checkpoint of exactly `size` entries, if there is one.
fn checkpoint_at(ledger: &Ledger, size: u64) -> anyhow::Result<Option<String>> {
    Ok(ledger
        .checkpoints()?
        .into_iter()
        .rev()
        .find(|c| c.checkpoint.size == size)
        .map(|c| c.note))
}

fn inclusion(file: &LedgerLocation, index: u64, size: Option<u64>) -> anyhow::Result<ExitCode> {
    let ledger = open(file)?;
    if index >= ledger.len() {
        bail!(
            "--index {index}: the log has {} entries (0..{})",
            ledger.len(),
            ledger.len()
        );
    }
    let size = size.unwrap_or_else(|| {
        ledger
            .latest_checkpoint()
            .map(|c| c.checkpoint.size)
            .filter(|&s| s > index)
            .unwrap_or(ledger.len())
    });
    if index >= size {
        bail!("--index {index} is not in a tree of --size {size}: the size must exceed the index");
    }
    let checkpoint = checkpoint_at(&ledger, size)?;
    if checkpoint.is_none() {
        eprintln!(
            "note: no signed checkpoint has size {size}; the root below is computed, not signed"
        );
    }
    let mut out = serde_json::to_value(ledger.inclusion_view(index, size)?)?;
    out["record"] = json!(String::from_utf8_lossy(&ledger.entry(index)?.data));
    if let Some(note) = checkpoint {
        out["checkpoint"] = json!(note);
    }
    print_json(&out)
}

fn consistency(file: &LedgerLocation, old: u64, new: Option<u64>) -> anyhow::Result<ExitCode> {
    let ledger = open(file)?;
    if old > ledger.len() {
        bail!("--old {old}: the log has only {} entries", ledger.len());
    }
    let new = new.unwrap_or_else(|| {
        ledger
            .latest_checkpoint()
            .map(|c| c.checkpoint.size)
            .filter(|&s| s >= old)
            .unwrap_or(ledger.len())
    });
    if old > new {
        bail!("--old {old} is larger than --new {new}: a log only grows");
    }
    let mut out = serde_json::to_value(ledger.consistency_view(old, new)?)?;
    if let Some(note) = checkpoint_at(&ledger, old)? {
        out["old_checkpoint"] = json!(note);
    }
    if let Some(note) = checkpoint_at(&ledger, new)? {
        out["new_checkpoint"] = json!(note);
    }
    print_json(&out)
}

fn trusted_key(key: Option<&str>, key_file: Option<&Path>) -> anyhow::Result<Option<VerifierKey>> {
    if let Some(k) = key {
        return Ok(Some(
            VerifierKey::parse(k.trim()).map_err(|e| anyhow::anyhow!("--key: {e}"))?,
        ));
    }
    let Some(path) = key_file else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text.starts_with("PRIVATE+KEY+") {
        return Ok(Some(LogKey::load(path)?.verifier().clone()));
    }
    Ok(Some(VerifierKey::parse(text.trim()).map_err(|e| {
        anyhow::anyhow!("--key-file {}: {e}", path.display())
    })?))
}

fn verify(
    file: &LedgerLocation,
    key: Option<&str>,
    key_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let trusted = trusted_key(key, key_file)?;
    if let LedgerLocation::Sqlite(path) = file {
        if !path.is_file() {
            bail!("{}: no such file", path.display());
        }
    }
    match truststack_ledger::verify_at(file, trusted.as_ref()) {
        Ok(report) => {
            say!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        // An unreachable database, like a missing file, is not a ledger that failed: exit 2.
        Err(VerifyError::Open(err @ StoreError::PostgresOpen { .. })) => Err(err.into()),
        Err(err) => {
            say!("FAILED: {err}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Calls `visit` for every entry, in order, a page at a time.
fn for_each_entry(
    ledger: &Ledger,
    end: u64,
    mut visit: impl FnMut(Entry) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut start = 0;
    while start < end {
        let stop = end.min(start + PAGE);
        for entry in ledger.entries(start..stop)? {
            visit(entry)?;
        }
        start = stop;
    }
    Ok(())
}

/// Prints rows under a header, each column as wide as its widest cell; the first column is
/// right-aligned (indices), the last is not padded.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
            if i == 0 {
                out += &pad;
                out += cell;
            } else if i + 1 == widths.len() {
                out += "  ";
                out += cell;
            } else {
                out += "  ";
                out += cell;
                out += &pad;
            }
        }
        out
    };
    say!("{}", line(&mut header.iter().copied()));
    for row in rows {
        say!("{}", line(&mut row.iter().map(String::as_str)));
    }
}

fn replay(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings {
        default_decision: args.default.into(),
        unknown_tools: args.unknown_tools.into(),
        ..Settings::replay()
    };
    let ledger = open(&args.file)?;
    let engine = load_engine(&args.policies, args.catalog.as_deref(), settings)?;
    if args.catalog.is_none() && matches!(args.unknown_tools, Choice::Deny) {
        eprintln!(
            "warning: no --catalog: every tool is unknown to the replay, and unknown tools are \
             denied; give the catalog the calls were decided with"
        );
    }
    let mut records = Vec::new();
    for_each_entry(&ledger, ledger.len(), |entry| {
        let record = entry
            .record()
            .unwrap_or_else(|e| truststack_ledger::ledger::unreadable_record(entry.index, &e));
        records.push((entry.index, record));
        Ok(())
    })?;
    let Replayed {
        calls,
        divergences: changes,
        unreadable,
    } = divergences(&engine, &records);
    for e in &unreadable {
        eprintln!("warning: not replayed: {e}");
    }

    if args.json {
        for d in &changes {
            say!("{}", serde_json::to_string(d)?);
        }
    } else if !changes.is_empty() {
        let list = |ids: &[String]| {
            if ids.is_empty() {
                "-".to_string()
            } else {
                ids.join(",")
            }
        };
        let rows: Vec<Vec<String>> = changes
            .iter()
            .map(|d| {
                vec![
                    d.ledger_index.to_string(),
                    d.time.clone(),
                    d.agent.clone(),
                    d.tool.clone(),
                    format!("{} → {}", d.recorded.as_str(), d.replayed.as_str()),
                    format!(
                        "{} → {}",
                        list(&d.recorded_policies),
                        list(&d.replayed_policies)
                    ),
                    d.reason.clone(),
                ]
            })
            .collect();
        print_table(
            &[
                "index",
                "time",
                "agent",
                "tool",
                "recorded → replayed",
                "policies",
                "reason now",
            ],
            &rows,
        );
    }
    let summary = format!(
        "{} of {calls} recorded call{} would be decided differently under {} (bundle {})",
        changes.len(),
        if calls == 1 { "" } else { "s" },
        if args.policies.is_empty() {
            "no policies".to_string()
        } else {
            args.policies
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
        engine.bundle().hash
    );
    if args.json {
        eprintln!("{summary}");
    } else {
        say!("{summary}");
    }
    if unreadable.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        // An answer that left records out is not the answer: say so in the exit status too.
        eprintln!(
            "{} ledger entr{} could not be read as records and were not replayed",
            unreadable.len(),
            if unreadable.len() == 1 { "y" } else { "ies" }
        );
        Ok(ExitCode::from(1))
    }
}

fn show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    if let Some(d) = &args.decision {
        if !VERDICTS.contains(&d.as_str()) {
            bail!("--decision {d:?}: expected one of {}", VERDICTS.join(", "));
        }
    }
    let time_arg = |flag: &str, text: &Option<String>| {
        text.as_deref()
            .map(|t| parse_time(t).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
            .transpose()
    };
    let filter = RecordFilter {
        agent: args.agent.clone(),
        session: args.session.clone(),
        root: args.root.clone(),
        tool: args.tool.clone(),
        decision: args.decision.clone(),
        kind: args.kind.clone(),
        since: time_arg("--since", &args.since)?,
        until: time_arg("--until", &args.until)?,
    };
    let ledger = open(&args.file)?;
    let jsonl = args.json || matches!(args.format, Format::Jsonl);
    let mut rows = Vec::new();
    let mut matched = 0u64;
    for_each_entry(&ledger, ledger.len(), |entry| {
        let record = entry
            .record()
            .with_context(|| format!("entry {} is not JSON", entry.index))?;
        if !filter.matches(&record) {
            return Ok(());
        }
        matched += 1;
        if jsonl {
            say!("{}", serde_json::to_string(&entry.to_json()?)?);
            return Ok(());
        }
        let text = |name: &str| {
            field(&record, name)
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_string()
        };
        rows.push(vec![
            entry.index.to_string(),
            text("time"),
            text("kind"),
            text("decision"),
            text("agent"),
            text("tool"),
            text("call_id"),
            text("session"),
        ]);
        Ok(())
    })?;
    if !jsonl {
        print_table(
            &[
                "index", "time", "kind", "decision", "agent", "tool", "call", "session",
            ],
            &rows,
        );
    }
    if matched == 0 {
        eprintln!("no record matches ({} records in the log)", ledger.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn migrate(from: &LedgerLocation, to: &LedgerLocation) -> anyhow::Result<ExitCode> {
    let migrated = truststack_ledger::migrate::migrate(from, to)?;
    say!("copied {from} to {to}");
    say!("source {}", migrated.source);
    say!("copy   {}", migrated.copy);
    Ok(ExitCode::SUCCESS)
}

fn export(file: &LedgerLocation) -> anyhow::Result<ExitCode> {
    let ledger = open(file)?;
    let Some(checkpoint) = ledger.latest_checkpoint() else {
        bail!("{file} has no checkpoint to prove entries against");
    };
    let size = checkpoint.checkpoint.size;
    if ledger.len() > size {
        eprintln!(
            "note: entries {size}..{} are newer than the latest checkpoint and are not exported",
            ledger.len()
        );
    }
    for_each_entry(&ledger, size, |entry| {
        let proof = ledger.inclusion_proof(entry.index, size)?;
        let mut line = entry.to_json()?;
        line["inclusion_proof"] = json!(proof.path.iter().map(base64_hash).collect::<Vec<_>>());
        say!("{}", serde_json::to_string(&line)?);
        Ok(())
    })?;
    say!(
        "{}",
        serde_json::to_string(&json!({
            "checkpoint": checkpoint.note,
            "tree_size": size,
            "root": base64_hash(&checkpoint.checkpoint.root),
            "verifier_key": ledger.verifier_key().to_string(),
        }))?
    );
    Ok(ExitCode::SUCCESS)
}
