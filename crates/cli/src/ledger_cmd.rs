//! `truststack ledger verify|show|proof|checkpoint|export|key|replay`: read-only views of a
//! ledger file.

use crate::policy_cmd::{load_engine, Choice};
use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use truststack_engine::replay::divergences;
use truststack_engine::Settings;
use truststack_ledger::query::{field, parse_time, RecordFilter};
use truststack_ledger::{base64_hash, Entry, Ledger, LogKey, VerifierKey};

/// Entries read per store call when walking the whole log.
const PAGE: u64 = 1024;

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Recompute every hash and check every checkpoint; exit 0 if all is well, 1 naming the
    /// first bad index otherwise.
    Verify {
        /// The ledger file.
        file: PathBuf,
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
        /// The ledger file.
        file: PathBuf,
    },
    /// Write every entry covered by the latest checkpoint as JSON lines, each with its leaf
    /// hash and inclusion proof, then the checkpoint itself.
    Export {
        /// The ledger file.
        file: PathBuf,
    },
    /// Print the verifier key the ledger records (publish it; pass it to `verify --key`).
    Key {
        /// The ledger file.
        file: PathBuf,
    },
    /// Re-decide every recorded call under other policies and report the decisions that would
    /// change: what this policy change would have done to last week's traffic.
    Replay(ReplayArgs),
}

#[derive(Args)]
pub struct ReplayArgs {
    /// The ledger file.
    file: PathBuf,
    /// A policy file of the candidate bundle; repeat for several (none: no policies at all).
    #[arg(long = "policy")]
    policies: Vec<PathBuf>,
    /// The tool catalog (TOML).
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// The decision for calls no policy fires on.
    #[arg(long, value_enum, default_value = "allow")]
    default: Choice,
    /// Whether tools missing from the catalog may be called.
    #[arg(long, value_enum, default_value = "deny")]
    unknown_tools: Choice,
    /// One JSON line per changed decision instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    /// The ledger file.
    file: PathBuf,
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
    /// Only records of this kind (tool_call, decision, observation, approval, ...).
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
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Jsonl,
}

#[derive(Subcommand)]
pub enum ProofCommand {
    /// Prove that entry INDEX is in the tree of the first SIZE entries.
    Inclusion {
        /// The ledger file.
        file: PathBuf,
        #[arg(long)]
        index: u64,
        /// The tree size (default: the whole log).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Prove that the tree of the first OLD entries is a prefix of the tree of the first NEW.
    Consistency {
        /// The ledger file.
        file: PathBuf,
        #[arg(long)]
        old: u64,
        /// The newer tree size (default: the whole log).
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
            let ledger = open(&file)?;
            let size = size.unwrap_or(ledger.len());
            let proof = ledger.inclusion_proof(index, size)?;
            let leaf = ledger.entry(index)?.leaf;
            let out = json!({
                "leaf_index": proof.leaf_index,
                "tree_size": proof.tree_size,
                "leaf_hash": base64_hash(&leaf),
                "root": base64_hash(&ledger.root_at(size)?),
                "path": proof.path.iter().map(base64_hash).collect::<Vec<_>>(),
            });
            print_json(&out)
        }
        LedgerCommand::Proof(ProofCommand::Consistency { file, old, new }) => {
            let ledger = open(&file)?;
            let new = new.unwrap_or(ledger.len());
            let proof = ledger.consistency_proof(old, new)?;
            let out = json!({
                "old_size": proof.old_size,
                "new_size": proof.new_size,
                "old_root": base64_hash(&ledger.root_at(old)?),
                "new_root": base64_hash(&ledger.root_at(new)?),
                "path": proof.path.iter().map(base64_hash).collect::<Vec<_>>(),
            });
            print_json(&out)
        }
        LedgerCommand::Checkpoint { file } => {
            let ledger = open(&file)?;
            let Some(c) = ledger.latest_checkpoint() else {
                bail!("{} has no checkpoint yet", file.display());
            };
            say!("{}", c.note.strip_suffix('\n').unwrap_or(&c.note));
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Export { file } => export(&file),
        LedgerCommand::Key { file } => {
            say!("{}", open(&file)?.verifier_key());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open(file: &Path) -> anyhow::Result<Ledger> {
    Ledger::open_read_only(file).with_context(|| format!("cannot open {}", file.display()))
}

fn print_json(value: &Value) -> anyhow::Result<ExitCode> {
    say!("{}", serde_json::to_string_pretty(value)?);
    Ok(ExitCode::SUCCESS)
}

fn trusted_key(key: Option<&str>, key_file: Option<&Path>) -> anyhow::Result<Option<VerifierKey>> {
    if let Some(k) = key {
        return Ok(Some(VerifierKey::parse(k)?));
    }
    let Some(path) = key_file else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text.starts_with("PRIVATE+KEY+") {
        return Ok(Some(LogKey::load(path)?.verifier().clone()));
    }
    Ok(Some(VerifierKey::parse(text.trim())?))
}

fn verify(file: &Path, key: Option<&str>, key_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let trusted = trusted_key(key, key_file)?;
    match truststack_ledger::verify_file(file, trusted.as_ref()) {
        Ok(report) => {
            say!("{report}");
            Ok(ExitCode::SUCCESS)
        }
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

fn replay(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings {
        default_decision: args.default.into(),
        unknown_tools: args.unknown_tools.into(),
        ..Settings::replay()
    };
    let engine = load_engine(&args.policies, args.catalog.as_deref(), settings)?;
    let ledger = open(&args.file)?;
    let mut records = Vec::new();
    for_each_entry(&ledger, ledger.len(), |entry| {
        records.push((entry.index, entry.record()?));
        Ok(())
    })?;
    let (calls, changed) = divergences(&engine, &records);
    if args.json {
        for d in &changed {
            println!("{}", serde_json::to_string(d)?);
        }
    } else {
        if !changed.is_empty() {
            println!(
                "{:>7}  {:<24}  {:<38}  {:<16}  {:<35}  policies now",
                "index", "time", "agent", "tool", "recorded → replayed"
            );
        }
        for d in &changed {
            println!(
                "{:>7}  {:<24}  {:<38}  {:<16}  {:<35}  {}",
                d.ledger_index,
                d.time,
                d.agent,
                d.tool,
                format!("{} → {}", d.recorded.as_str(), d.replayed.as_str()),
                if d.replayed_policies.is_empty() {
                    "-".to_string()
                } else {
                    d.replayed_policies.join(", ")
                }
            );
        }
    }
    eprintln!(
        "{} of {calls} recorded call(s) would be decided differently under {} (bundle {})",
        changed.len(),
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
    Ok(ExitCode::SUCCESS)
}

fn show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let filter = RecordFilter {
        agent: args.agent.clone(),
        session: args.session.clone(),
        root: args.root.clone(),
        tool: args.tool.clone(),
        decision: args.decision.clone(),
        kind: args.kind.clone(),
        since: args.since.as_deref().map(parse_time).transpose()?,
        until: args.until.as_deref().map(parse_time).transpose()?,
    };
    let ledger = open(&args.file)?;
    if matches!(args.format, Format::Table) {
        say!(
            "{:>7}  {:<24}  {:<12}  {:<16}  {:<36}  {:<18}  session",
            "index",
            "time",
            "kind",
            "decision",
            "agent",
            "tool"
        );
    }
    for_each_entry(&ledger, ledger.len(), |entry| {
        let record = entry
            .record()
            .with_context(|| format!("entry {} is not JSON", entry.index))?;
        if !filter.matches(&record) {
            return Ok(());
        }
        match args.format {
            Format::Jsonl => say!("{}", serde_json::to_string(&entry.to_json()?)?),
            Format::Table => {
                let text = |name: &str| field(&record, name).and_then(Value::as_str).unwrap_or("-");
                say!(
                    "{:>7}  {:<24}  {:<12}  {:<16}  {:<36}  {:<18}  {}",
                    entry.index,
                    text("time"),
                    text("kind"),
                    text("decision"),
                    text("agent"),
                    text("tool"),
                    text("session")
                );
            }
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn export(file: &Path) -> anyhow::Result<ExitCode> {
    let ledger = open(file)?;
    let Some(checkpoint) = ledger.latest_checkpoint() else {
        bail!(
            "{} has no checkpoint to prove entries against",
            file.display()
        );
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
