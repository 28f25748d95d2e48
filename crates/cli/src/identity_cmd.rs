//! `truststack identity init|issue|delegate|inspect|revoke|jwks|rotate|retire`: the issuer
//! directory from the command line.
//!
//! Tokens go to stdout alone (so `TOKEN=$(truststack identity issue …)` works); what was minted
//! is described on stderr.

use crate::style::Style;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use truststack_engine::identity::issuer::{AgentRequest, DelegationRequest, UserRequest};
use truststack_engine::identity::ttl::parse_ttl;
use truststack_engine::identity::verify::decode_unverified;
use truststack_engine::identity::{
    AgentId, Issuer, Principal, ToolSet, TrustDomain, UserId, VerifiedCredential,
};

#[derive(Args)]
pub struct IdentityArgs {
    /// The issuer directory (keys, `issuer.json`, revocations).
    #[arg(
        long,
        global = true,
        env = "TRUSTSTACK_ISSUER_DIR",
        default_value = ".truststack/issuer"
    )]
    dir: PathBuf,
    #[command(subcommand)]
    command: IdentityCommand,
}

#[derive(Subcommand)]
pub enum IdentityCommand {
    /// Create the issuer: an Ed25519 key pair (private key mode 0600) for a trust domain.
    Init {
        /// The SPIFFE trust domain agents live in (`spiffe://<trust-domain>/agent/<name>`).
        #[arg(long, default_value = "truststack.local")]
        trust_domain: String,
    },
    /// Mint a credential for an agent acting for a human, or for a human (approver, admin).
    #[command(after_help = "Examples:\n  \
        truststack identity issue --agent orchestrator --owner user:alice@acme.example --tools ScanTool,CodeAnalysisTool --ttl 1h\n  \
        truststack identity issue --user user:oncall@acme.example --roles approver --groups security-oncall --ttl 8h")]
    Issue(IssueArgs),
    /// Mint a narrower credential for a sub-agent from an agent's credential.
    Delegate {
        /// The parent agent's credential (`-` reads it from stdin).
        #[arg(long)]
        from: String,
        /// The sub-agent: a name placed below the parent's id (`recon` from `…/agent/orch` is
        /// `…/agent/orch/recon`), or a full `spiffe://` id below the parent's.
        #[arg(long)]
        agent: String,
        /// Its tools or classes, within the parent's (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        tools: Vec<String>,
        /// Its lifetime (default: until the parent's expiry, never later).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Decode and verify a credential; draw its chain of command as a tree. Exit 1 if it does
    /// not verify.
    Inspect {
        /// The credential (`-` reads it from stdin).
        token: String,
        /// Print the verified credential as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a credential (and everything delegated from it) or a whole identity.
    Revoke(RevokeArgs),
    /// Print the issuer's public keys as a JWKS document.
    Jwks,
    /// Make a new signing key; old public keys stay trusted for the tokens they signed.
    Rotate,
    /// Stop trusting an old public key (after `rotate`): every token it signed is rejected.
    Retire {
        /// The key id (`kid`, as `jwks` lists it). A thumbprint can begin with `-`.
        #[arg(long, allow_hyphen_values = true)]
        kid: String,
    },
}

#[derive(Args)]
pub struct IssueArgs {
    /// The agent: a name in the issuer's trust domain or a full `spiffe://` id.
    #[arg(long, conflicts_with = "user", required_unless_present = "user")]
    agent: Option<String>,
    /// The human the agent acts for (`user:<name>`).
    #[arg(long, requires = "agent")]
    owner: Option<String>,
    /// The agent's tools or tool classes (comma-separated; `*` for any).
    #[arg(long, value_delimiter = ',', requires = "agent")]
    tools: Vec<String>,
    /// A human's own credential (`user:<name>`), e.g. an approver's.
    #[arg(long)]
    user: Option<String>,
    /// The human's roles (`approver`, `admin`).
    #[arg(long, value_delimiter = ',', requires = "user")]
    roles: Vec<String>,
    /// The human's groups (e.g. `security-oncall`).
    #[arg(long, value_delimiter = ',', requires = "user")]
    groups: Vec<String>,
    /// How long the credential lives (`15min`, `1h`, `8h`; default 1h for agents, 8h for humans).
    #[arg(long)]
    ttl: Option<String>,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(false)))]
pub struct RevokeArgs {
    /// A credential id (`jti`). An id can begin with `-`.
    #[arg(long, group = "what", allow_hyphen_values = true)]
    jti: Option<String>,
    /// A credential: its `jti` is revoked.
    #[arg(long, group = "what")]
    token: Option<String>,
    /// A whole identity (agent name or id, or `user:<name>`): every credential it holds or that
    /// has it in its chain.
    #[arg(long, group = "what")]
    identity: Option<String>,
    /// Who revokes (recorded).
    #[arg(long, default_value = "user:cli")]
    by: String,
    /// Why (recorded).
    #[arg(long)]
    reason: Option<String>,
}

pub fn run(args: &IdentityArgs) -> anyhow::Result<ExitCode> {
    // Every issuer error names the file or directory it is about.
    let open = || Issuer::open(&args.dir);
    match &args.command {
        IdentityCommand::Init { trust_domain } => {
            let td = TrustDomain::new(trust_domain)
                .map_err(|e| anyhow::anyhow!("--trust-domain: {e}"))?;
            let existed = args.dir.join("issuer.json").exists();
            let issuer = Issuer::init(&args.dir, &td)?;
            say!(
                "issuer {} {} {} (key {}, private key {})",
                issuer.config().issuer,
                if existed {
                    "already exists in"
                } else {
                    "created in"
                },
                args.dir.display(),
                issuer.active_kid(),
                issuer.private_key_path().display()
            );
        }
        IdentityCommand::Issue(a) => {
            let issuer = open()?;
            let issued = issue(&issuer, a)?;
            eprintln!("{}", describe(&issued.credential));
            say!("{}", issued.token);
        }
        IdentityCommand::Delegate {
            from,
            agent,
            tools,
            ttl,
        } => {
            let issuer = open()?;
            let issued = issuer.delegate(
                &token_arg(from)?,
                &DelegationRequest {
                    agent: agent.clone(),
                    tools: ToolSet::new(tools).map_err(|e| anyhow::anyhow!("--tools: {e}"))?,
                    ttl: ttl.as_deref().map(ttl_arg).transpose()?,
                },
            )?;
            eprintln!("{}", describe(&issued.credential));
            say!("{}", issued.token);
        }
        IdentityCommand::Inspect { token, json } => {
            let issuer = open()?;
            return inspect(&issuer, &token_arg(token)?, *json);
        }
        IdentityCommand::Revoke(r) => {
            let issuer = open()?;
            let revocation = if let Some(identity) = &r.identity {
                let p = Principal::expand(identity, &issuer.config().trust_domain)
                    .map_err(|e| anyhow::anyhow!("--identity: {e}"))?;
                let revocation = issuer.revoke_identity(&p, &r.by, r.reason.clone())?;
                eprintln!(
                    "revoked {p}: every credential it holds, and every one with it in its \
                     chain, is rejected from now on"
                );
                revocation
            } else {
                let jti = match (&r.jti, &r.token) {
                    (Some(j), _) => j.clone(),
                    (None, Some(t)) => {
                        let (_, claims) = decode_unverified(&token_arg(t)?)?;
                        match claims.get("jti").and_then(|j| j.as_str()) {
                            Some(j) => j.to_string(),
                            None => bail!("the token has no `jti` claim"),
                        }
                    }
                    (None, None) => bail!("give --jti, --token or --identity"),
                };
                let revocation = issuer.revoke_jti(&jti, &r.by, r.reason.clone())?;
                eprintln!(
                    "revoked credential {jti}: it, and every credential delegated from it, is \
                     rejected from now on"
                );
                revocation
            };
            say!("{}", serde_json::to_string(&revocation.record())?);
        }
        IdentityCommand::Jwks => {
            let issuer = open()?;
            say!("{}", serde_json::to_string_pretty(&issuer.jwks())?);
        }
        IdentityCommand::Rotate => {
            let issuer = open()?;
            let kid = issuer.rotate()?;
            say!(
                "new signing key {kid}; earlier keys still verify the tokens they signed \
                 (`identity retire --kid KID` stops trusting one)"
            );
        }
        IdentityCommand::Retire { kid } => {
            let issuer = open()?;
            issuer.retire_key(kid)?;
            say!("key {kid} retired: the tokens it signed are rejected from now on");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn issue(
    issuer: &Issuer,
    a: &IssueArgs,
) -> anyhow::Result<truststack_engine::identity::issuer::Issued> {
    let td = &issuer.config().trust_domain;
    if let Some(agent) = &a.agent {
        let Some(owner) = &a.owner else {
            bail!("an agent acts for a human: give --owner user:<name>");
        };
        if a.tools.is_empty() {
            bail!("give the agent's tools: --tools ScanTool,CodeAnalysisTool (or `*` for any)");
        }
        return Ok(issuer.issue_agent(&AgentRequest {
            agent: AgentId::expand(agent, td).map_err(|e| anyhow::anyhow!("--agent: {e}"))?,
            owner: UserId::parse(owner).map_err(|e| anyhow::anyhow!("--owner: {e}"))?,
            tools: ToolSet::new(&a.tools).map_err(|e| anyhow::anyhow!("--tools: {e}"))?,
            ttl: ttl_arg(a.ttl.as_deref().unwrap_or("1h"))?,
            audience: None,
        })?);
    }
    let Some(user) = &a.user else {
        bail!("give --agent NAME --owner user:<name> --tools …, or --user user:<name>");
    };
    Ok(issuer.issue_user(&UserRequest {
        user: UserId::parse(user).map_err(|e| anyhow::anyhow!("--user: {e}"))?,
        roles: a.roles.clone(),
        groups: a.groups.clone(),
        ttl: ttl_arg(a.ttl.as_deref().unwrap_or("8h"))?,
        audience: None,
    })?)
}

fn ttl_arg(text: &str) -> anyhow::Result<Duration> {
    parse_ttl(text).map_err(|e| anyhow::anyhow!("--ttl: {e}"))
}

/// A token argument, or stdin for `-`.
fn token_arg(arg: &str) -> anyhow::Result<String> {
    if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the token from stdin")?;
        return Ok(text.trim().to_string());
    }
    Ok(arg.trim().to_string())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2026-11-25T09:00:00Z (in 59m 58s)`.
fn when(at: u64) -> String {
    let stamp = truststack_engine::event::format_time(i64::try_from(at).unwrap_or(i64::MAX) * 1000);
    let stamp = stamp.trim_end_matches(".000Z").to_string() + "Z";
    let now = now();
    let d = at.abs_diff(now);
    let rel = match d {
        d if d >= 86_400 => format!("{}d {}h", d / 86_400, d % 86_400 / 3600),
        d if d >= 3600 => format!("{}h {}m", d / 3600, d % 3600 / 60),
        d if d >= 60 => format!("{}m {}s", d / 60, d % 60),
        d => format!("{d}s"),
    };
    if at > now {
        format!("{stamp} (in {rel})")
    } else {
        format!("{stamp} ({rel} ago)")
    }
}

/// One line per fact of a freshly minted credential (stderr).
fn describe(c: &VerifiedCredential) -> String {
    let mut out = format!("issued {} (jti {})", c.subject, c.jti);
    if c.agent().is_some() {
        out += &format!(
            "\n  acts for   {}\n  tools      {}",
            c.owner,
            c.tools.as_slice().join(", ")
        );
        if !c.chain.is_empty() {
            out += &format!("\n  chain      {}", c.chain_strings().join(" → "));
        }
    } else {
        out += &format!(
            "\n  roles      {}\n  groups     {}",
            list_or_none(&c.roles),
            list_or_none(&c.groups)
        );
    }
    out + &format!("\n  expires    {}", when(c.expires_at))
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

/// The chain of command as a tree: the human at the root, each delegating agent below, the
/// holder last.
pub fn chain_tree(c: &VerifiedCredential, style: Style) -> String {
    let mut nodes: Vec<String> = c.chain_strings();
    nodes.push(c.subject.to_string());
    let mut out = String::new();
    for (depth, node) in nodes.iter().enumerate() {
        let last = depth + 1 == nodes.len();
        let label = if last {
            format!(
                "{}  tools: {}",
                style.bold(node),
                c.tools.as_slice().join(", ")
            )
        } else if depth == 0 {
            format!("{node}  (the human in command)")
        } else {
            node.clone()
        };
        if depth == 0 {
            out += &label;
        } else {
            out += &format!("\n{}└─ {label}", "   ".repeat(depth - 1));
        }
    }
    out
}

fn inspect(issuer: &Issuer, token: &str, json: bool) -> anyhow::Result<ExitCode> {
    let style = Style::detect();
    let (header, claims) = decode_unverified(token)?;
    issuer.refresh_revocations()?;
    match issuer.verify(token) {
        Ok(c) => {
            if json {
                say!("{}", serde_json::to_string_pretty(&*c)?);
                return Ok(ExitCode::SUCCESS);
            }
            say!(
                "{} signed by {} (key {}), audience {}",
                style.green("valid"),
                c.issuer,
                c.kid,
                c.audience
            );
            say!("  jti        {}", c.jti);
            say!("  issued     {}", when(c.issued_at));
            say!("  expires    {}", when(c.expires_at));
            if c.agent().is_some() {
                say!("  owner      {}", c.owner);
                if let Some(root) = c.delegation_root() {
                    say!("  root       {root}  (TARGET: delegation_root scopes by this)");
                }
            } else {
                say!("  roles      {}", list_or_none(&c.roles));
                say!("  groups     {}", list_or_none(&c.groups));
            }
            if !c.ancestors.is_empty() {
                say!("  delegated from credentials {}", c.ancestors.join(" → "));
            }
            // A human's own credential (an approver's) has no chain of command and no tools.
            if c.agent().is_some() {
                say!("\nchain of command\n{}", chain_tree(&c, style));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            say!("{} {e}", style.red("NOT VALID:"));
            say!(
                "\ndecoded without verification:\nheader {}\nclaims {}",
                serde_json::to_string_pretty(&header)?,
                serde_json::to_string_pretty(&claims)?
            );
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        identity: IdentityArgs,
    }

    /// Key ids and credential ids are base64url: one in 64 begins with `-`.
    #[test]
    fn ids_that_begin_with_a_hyphen_are_values() {
        let cli = Cli::try_parse_from(["t", "retire", "--kid", "-Hx3"]).expect("parses");
        assert!(
            matches!(cli.identity.command, IdentityCommand::Retire { ref kid } if kid == "-Hx3")
        );
        let cli = Cli::try_parse_from(["t", "revoke", "--jti", "-a_b"]).expect("parses");
        let IdentityCommand::Revoke(revoke) = cli.identity.command else {
            panic!("not a revoke");
        };
        assert_eq!(revoke.jti.as_deref(), Some("-a_b"));
    }
}
