//! The `truststack` binary: argument parsing and printing over the library crates.

use clap::{Parser, Subcommand};
use std::io::IsTerminal;

/// `println!` that stops quietly when stdout is closed (`truststack demo | head`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod approvals_cmd;
mod demo;
mod gateway_cmd;
mod identity_cmd;
mod identity_service;
mod ledger_cmd;
mod policy_cmd;
mod prove_cmd;
mod serve_cmd;
mod style;

#[derive(Parser)]
#[command(
    name = "truststack",
    version,
    about = "A deterministic control plane for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the GTG-1002 campaign against TrustStack, end to end, on the embedded defaults.
    Demo(demo::DemoArgs),
    /// Check, evaluate and test policies.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// Run the enforcement server (HTTP API, approvals, ledger, identities).
    Serve(serve_cmd::ServeArgs),
    /// Answer held calls on a running server: list, show, grant, refuse.
    Approvals(approvals_cmd::ApprovalsArgs),
    /// Verify, inspect and prove the tamper-evident decision ledger.
    #[command(subcommand)]
    Ledger(ledger_cmd::LedgerCommand),
    /// Agent identities, credentials and delegation chains.
    Identity(identity_cmd::IdentityArgs),
    /// Put MCP servers behind TrustStack: a proxy (stdio or Streamable HTTP) that decides every tool call.
    Gateway(gateway_cmd::GatewayArgs),
    /// Proving ground: explore what the agents of a manifest can reach, find toxic tool combinations, prove the fix.
    Prove(prove_cmd::ProveArgs),
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Colour only for a person at a terminal: desktop MCP clients redirect a gateway's stderr
    // to a log file, where escapes are noise. https://no-color.org
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRUSTSTACK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Policy(cmd) => policy_cmd::run(cmd),
        Command::Serve(args) => serve_cmd::run(&args),
        Command::Approvals(args) => approvals_cmd::run(&args),
        Command::Ledger(cmd) => ledger_cmd::run(cmd),
        Command::Identity(args) => identity_cmd::run(&args),
        Command::Gateway(args) => gateway_cmd::run(&args),
        Command::Prove(args) => prove_cmd::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_text(&err));
            std::process::ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, each cause only once: many errors already quote their
/// cause in their own message, and `{:#}` would repeat it.
fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text += ": ";
        }
        text += &cause;
    }
    text
}
