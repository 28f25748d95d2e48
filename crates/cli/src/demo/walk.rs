//! Walk: every agent its own identity, separate from the human it acts for, with a verifiable
//! chain of command. The agents mirror the fixed design the proving ground proved: an
//! orchestrator launched by the operator, delegating to a recon and a patch sub-agent.

use super::Story;
use crate::style::Style;
use anyhow::Context;
use std::path::Path;
use std::time::Duration;
use truststack_engine::identity::issuer::{AgentRequest, DelegationRequest, UserRequest};
use truststack_engine::identity::{
    AgentId, Issuer, ToolSet, TrustDomain, UserId, VerifiedCredential,
};

pub const OPERATOR: &str = "user:operator@acme.example";
pub const ONCALL: &str = "user:oncall@acme.example";
pub const DANA: &str = "user:dana@acme.example";

/// The tools of the scenario's sub-agents (as in `manifest-fixed.toml`).
const RECON_TOOLS: &str = "nmap_scan,service_probe,code_review,http_upload";
const PATCH_TOOLS: &str = "exploit_runner,prod_db_query,run_tests";

/// The credentials the Run phase uses (signed JWTs).
pub struct Identities {
    pub orchestrator: String,
    pub recon: String,
    pub patch: String,
    pub inventory: String,
    pub operator: String,
    pub oncall: String,
}

/// Draws the chains of command of `creds` as one forest: each human at a root, the agents it
/// launched below, their delegates below them.
fn forest(creds: &[&VerifiedCredential], humans: &[(&str, String)], style: Style) -> Vec<String> {
    let mut lines = Vec::new();
    // Every credential's path from its human: [human, agent…, holder].
    let paths: Vec<(Vec<String>, &VerifiedCredential)> = creds
        .iter()
        .map(|c| {
            let mut p = c.chain_strings();
            p.push(c.subject.to_string());
            (p, *c)
        })
        .collect();
    fn walk(
        prefix: &[String],
        indent: &str,
        paths: &[(Vec<String>, &VerifiedCredential)],
        style: Style,
        lines: &mut Vec<String>,
    ) {
        let children: Vec<&(Vec<String>, &VerifiedCredential)> = paths
            .iter()
            .filter(|(p, _)| p.len() == prefix.len() + 1 && p.starts_with(prefix))
            .collect();
        for (i, (path, cred)) in children.iter().enumerate() {
            let last = i + 1 == children.len();
            let (branch, next) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            let name = path.last().map_or("", String::as_str);
            lines.push(format!(
                "{indent}{branch}{}  {}",
                style.bold(name),
                style.dim(&format!("tools: {}", cred.tools.as_slice().join(", ")))
            ));
            walk(path, &format!("{indent}{next}"), paths, style, lines);
        }
    }
    for (human, about) in humans {
        lines.push(format!("{human}  {}", style.dim(about)));
        walk(&[(*human).to_string()], "", &paths, style, &mut lines);
    }
    lines
}

/// Walk: the issuer, the humans, the agents and their delegation chain.
pub fn run(dir: &Path, story: &mut Story) -> anyhow::Result<Identities> {
    story.section(
        "2. WALK — identities and the chain of command",
        "Every agent gets its own signed credential (an EdDSA JWT), separate from the human it acts\n\
         for. A sub-agent's credential carries the whole delegation chain (RFC 8693 `act`) and at\n\
         most its parent's tools; the gateway takes identity from the credential, never from the agent.",
    );
    let st = story.style;
    let td = TrustDomain::new("acme.example")?;
    let issuer = Issuer::init(&dir.join("issuer"), &td)?;
    let hour = Duration::from_secs(3600);
    let agent = |name: &str, owner: &str, tools: &str| -> anyhow::Result<_> {
        Ok(issuer.issue_agent(&AgentRequest {
            agent: AgentId::new(&td, name)?,
            owner: UserId::parse(owner)?,
            tools: ToolSet::parse_list(tools)?,
            ttl: hour,
            audience: None,
        })?)
    };
    let human = |name: &str, roles: &[&str], groups: &[&str]| -> anyhow::Result<_> {
        Ok(issuer.issue_user(&UserRequest {
            user: UserId::parse(name)?,
            roles: roles.iter().map(ToString::to_string).collect(),
            groups: groups.iter().map(ToString::to_string).collect(),
            ttl: hour,
            audience: None,
        })?)
    };
    let delegate = |from: &str, name: &str, tools: &str| -> anyhow::Result<_> {
        Ok(issuer.delegate(
            from,
            &DelegationRequest {
                agent: name.to_string(),
                tools: ToolSet::parse_list(tools)?,
                ttl: None,
            },
        )?)
    };
    // The operator is on the approvers' rota too: only separation of duties stops them from
    // approving what their own agents do.
    let operator = human(OPERATOR, &["approver"], &["security-oncall"])?;
    let oncall = human(ONCALL, &["approver"], &["security-oncall"])?;
    let orchestrator = agent(
        "orchestrator",
        OPERATOR,
        &format!("read_docs,{RECON_TOOLS},{PATCH_TOOLS}"),
    )?;
    let recon = delegate(&orchestrator.token, "recon", RECON_TOOLS)?;
    let patch = delegate(&orchestrator.token, "patch", PATCH_TOOLS)?;
    let inventory = agent(
        "inventory",
        DANA,
        "nmap_scan,read_docs,create_ticket,run_tests",
    )?;

    story.line(format!(
        "  issuer {} — keys and revocations in {}",
        issuer.config().issuer,
        dir.join("issuer").display()
    ));
    let tree = forest(
        &[
            &orchestrator.credential,
            &recon.credential,
            &patch.credential,
            &inventory.credential,
        ],
        &[
            (
                OPERATOR,
                "human · launches the campaign's agents · roles approver · groups security-oncall"
                    .into(),
            ),
            (
                ONCALL,
                "human · the on-call security engineer · roles approver · groups security-oncall"
                    .into(),
            ),
            (
                DANA,
                "human · runs the IT inventory agent (benign work)".into(),
            ),
        ],
        st,
    );
    for line in tree {
        story.line(format!("    {line}"));
    }

    let creds = dir.join("credentials");
    std::fs::create_dir_all(&creds)?;
    for (name, token) in [
        ("operator", &operator.token),
        ("oncall", &oncall.token),
        ("orchestrator", &orchestrator.token),
        ("recon", &recon.token),
        ("patch", &patch.token),
        ("inventory", &inventory.token),
    ] {
        let path = creds.join(format!("{name}.jwt"));
        std::fs::write(&path, format!("{token}\n"))
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    story.line(st.dim(&format!(
        "    credentials in {}; try `truststack identity --dir {} inspect - < {}`",
        creds.display(),
        dir.join("issuer").display(),
        creds.join("recon.jwt").display()
    )));

    let widened = delegate(&recon.token, "recon-helper", "exploit_runner");
    story.check(
        "attenuation",
        "walk",
        "a sub-agent cannot hand out more than it holds",
        widened.is_err(),
        widened.err().map_or(
            "recon delegated exploit_runner to a helper: the delegation was issued".into(),
            |e| format!("recon → recon-helper with exploit_runner: {e:#}"),
        ),
    );
    let root = recon
        .credential
        .delegation_root()
        .map(ToString::to_string)
        .unwrap_or_default();
    let same_root =
        patch.credential.delegation_root().map(ToString::to_string) == Some(root.clone());
    story.check(
        "delegation-root",
        "walk",
        "both sub-agents answer to one delegation root, the orchestrator",
        same_root && root.ends_with("/agent/orchestrator"),
        format!(
            "TARGET: delegation_root policies see recon and patch as one orchestration ({root})"
        ),
    );
    Ok(Identities {
        orchestrator: orchestrator.token,
        recon: recon.token,
        patch: patch.token,
        inventory: inventory.token,
        operator: operator.token,
        oncall: oncall.token,
    })
}
