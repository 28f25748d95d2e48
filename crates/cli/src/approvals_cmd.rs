//! `truststack approvals list|show|grant|refuse`: the on-call engineer's client of a running
//! `truststack serve`.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Args)]
pub struct ApprovalsArgs {
    /// The server's base URL.
    #[arg(
        long,
        env = "TRUSTSTACK_SERVER",
        default_value = "http://127.0.0.1:8181",
        global = true
    )]
    server: String,
    /// The approver's credential (a token, `@file`, or `-` for stdin).
    #[arg(long, env = "TRUSTSTACK_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print raw JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ApprovalsCommand,
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// Held calls waiting for a human.
    List {
        #[arg(long)]
        policy: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        root: Option<String>,
    },
    /// One held call with the trajectory that led to it.
    Show { id: String },
    /// Grant a held call, once or with a lease (`--lease 30min`).
    Grant {
        id: String,
        #[arg(long)]
        lease: Option<String>,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Refuse a held call.
    Refuse {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

/// Reads a credential given inline, as `@file`, or `-` for stdin.
pub fn read_token(arg: &str) -> anyhow::Result<String> {
    let token = if arg == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the token from stdin")?
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("reading the token from {path}"))?
    } else {
        arg.to_string()
    };
    Ok(token.trim().to_string())
}

fn request(
    args: &ApprovalsArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let url = format!("{}{path}", args.server.trim_end_matches('/'));
    let client = reqwest::blocking::Client::new();
    let mut req = client.request(method, &url);
    if let Some(token) = &args.token {
        req = req.bearer_auth(read_token(token)?);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let value: Value = resp
        .json()
        .with_context(|| format!("{url}: the answer is not JSON"))?;
    if !status.is_success() {
        bail!(
            "{url}: {status}: {}",
            value["error"].as_str().unwrap_or("unknown error")
        );
    }
    Ok(value)
}

pub fn run(args: &ApprovalsArgs) -> anyhow::Result<ExitCode> {
    let out = match &args.command {
        ApprovalsCommand::List {
            policy,
            agent,
            root,
        } => {
            let mut query = Vec::new();
            for (k, v) in [("policy", policy), ("agent", agent), ("root", root)] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", urlencode(v)));
                }
            }
            let path = if query.is_empty() {
                "/v1/approvals".to_string()
            } else {
                format!("/v1/approvals?{}", query.join("&"))
            };
            let value = request(args, reqwest::Method::GET, &path, None)?;
            if !args.json {
                print_pending(&value);
                return Ok(ExitCode::SUCCESS);
            }
            value
        }
        ApprovalsCommand::Show { id } => {
            let value = request(
                args,
                reqwest::Method::GET,
                &format!("/v1/approvals/{}", urlencode(id)),
                None,
            )?;
            if !args.json {
                print_held(&value);
                return Ok(ExitCode::SUCCESS);
            }
            value
        }
        ApprovalsCommand::Grant { id, lease, comment } => request(
            args,
            reqwest::Method::POST,
            &format!("/v1/approvals/{}/grant", urlencode(id)),
            Some(json!({"lease": lease, "comment": comment})),
        )?,
        ApprovalsCommand::Refuse { id, comment } => request(
            args,
            reqwest::Method::POST,
            &format!("/v1/approvals/{}/refuse", urlencode(id)),
            Some(json!({"comment": comment})),
        )?,
    };
    say!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

fn print_pending(value: &Value) {
    let pending = value["pending"].as_array().cloned().unwrap_or_default();
    if pending.is_empty() {
        say!("no calls are waiting for approval");
        return;
    }
    say!(
        "{:<28} {:<18} {:<44} {:<24} {}",
        "APPROVAL",
        "TOOL",
        "AGENT",
        "DEADLINE",
        "POLICIES"
    );
    for p in pending {
        let policies: Vec<&str> = p["policies"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["id"].as_str()).collect())
            .unwrap_or_default();
        say!(
            "{:<28} {:<18} {:<44} {:<24} {}",
            p["approval_id"].as_str().unwrap_or(""),
            p["call"]["tool"].as_str().unwrap_or(""),
            p["call"]["agent"].as_str().unwrap_or(""),
            p["deadline"].as_str().unwrap_or(""),
            policies.join(",")
        );
    }
}

/// One held call for an approver's terminal: what, who on whose authority, why, and what the
/// orchestration did before.
fn print_held(v: &Value) {
    let call = &v["call"];
    let text = |x: &Value| x.as_str().unwrap_or("-").to_string();
    say!("approval   {}", text(&v["approval_id"]));
    say!("tool       {}  {}", text(&call["tool"]), call["args"]);
    say!("agent      {}", text(&call["agent"]));
    let chain: Vec<String> = call["chain"]
        .as_array()
        .map(|c| c.iter().map(text).collect())
        .unwrap_or_default();
    say!("chain      {}", chain.join(" → "));
    say!(
        "held at    {}   deadline {}",
        text(&v["held_at"]),
        text(&v["deadline"])
    );
    for p in v["policies"].as_array().into_iter().flatten() {
        say!(
            "policy     {} ({}): {}",
            text(&p["id"]),
            text(&p["action"]),
            p["reason"].as_str().unwrap_or("")
        );
        for (monitor, value) in p["monitors"].as_object().into_iter().flatten() {
            say!("             {monitor} = {value}");
        }
    }
    let approvers: Vec<String> = v["approvers"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    if !approvers.is_empty() {
        say!("approvers  {}", approvers.join(", "));
    }
    let trajectory = v["trajectory"].as_array().cloned().unwrap_or_default();
    if !trajectory.is_empty() {
        say!("\nthe orchestration's recent calls (from the ledger):");
        for t in trajectory {
            say!(
                "  {:>6}  {:<24}  {:<44}  {:<18}  {}",
                t["ledger_index"].as_u64().unwrap_or_default(),
                text(&t["time"]),
                text(&t["agent"]),
                text(&t["tool"]),
                text(&t["decision"])
            );
        }
    }
}

use truststack_gateway::decider::encode as urlencode;
