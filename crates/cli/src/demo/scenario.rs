//! The embedded GTG-1002 scenario, and the demo's Crawl (proving ground) and Walk (identities).

use super::Story;
use crate::identity_cmd::chain_tree;
use anyhow::Context;
use std::path::Path;
use std::time::Duration;
use truststack_engine::identity::issuer::{AgentRequest, DelegationRequest, UserRequest};
use truststack_engine::identity::{AgentId, Issuer, ToolSet, TrustDomain, UserId};
use truststack_sim::report::{self, change_line};
use truststack_sim::{prove_world, Analysis, Manifest, ProveOptions, Status, World};

/// `examples/gtg1002`, embedded so the demo needs no files: (path, contents).
pub fn files() -> [(&'static str, &'static str); 8] {
    [
        (
            "catalog.toml",
            include_str!("../../../../examples/gtg1002/catalog.toml"),
        ),
        (
            "policies/seed.tsp",
            include_str!("../../../../examples/gtg1002/policies/seed.tsp"),
        ),
        (
            "policies/delegation-root.tsp",
            include_str!("../../../../examples/gtg1002/policies/delegation-root.tsp"),
        ),
        (
            "policies/scan-rate-limit.tsp",
            include_str!("../../../../examples/gtg1002/policies/scan-rate-limit.tsp"),
        ),
        (
            "manifest-naive.toml",
            include_str!("../../../../examples/gtg1002/manifest-naive.toml"),
        ),
        (
            "manifest-split.toml",
            include_str!("../../../../examples/gtg1002/manifest-split.toml"),
        ),
        (
            "manifest-fixed.toml",
            include_str!("../../../../examples/gtg1002/manifest-fixed.toml"),
        ),
        (
            "traces/campaign-split.jsonl",
            include_str!("../../../../examples/gtg1002/traces/campaign-split.jsonl"),
        ),
    ]
}

/// Writes the scenario under `dir/scenario/`.
pub fn write(dir: &Path) -> anyhow::Result<()> {
    for (path, text) in files() {
        let p = dir.join("scenario").join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, text).with_context(|| format!("{}: cannot write", p.display()))?;
    }
    Ok(())
}

const TOXIC: [&str; 3] = ["ScanTool", "CodeAnalysisTool", "ExploitationTool"];

fn analyse(dir: &Path, manifest: &str, fix: bool) -> anyhow::Result<(World, Analysis)> {
    let path = dir.join("scenario").join(manifest);
    let world = World::build(Manifest::load(&path)?)?;
    let analysis = prove_world(
        &world,
        &ProveOptions {
            runs: Some(0),
            fix,
            fix_out: fix.then(|| dir.join("crawl/fixed")),
            ..ProveOptions::default()
        },
    )?;
    Ok((world, analysis))
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Unguarded => "UNGUARDED",
        Status::Gated => "gated by a human",
        Status::Unreachable => "unreachable",
        Status::Unknown => "unknown",
    }
}

fn goals(story: &Story, a: &Analysis) {
    for g in &a.goals {
        let word = status_word(g.status);
        let word = if g.status == Status::Unguarded {
            story.style.red(word)
        } else {
            story.style.green(word)
        };
        let path = g
            .trajectory
            .as_ref()
            .map(|t| {
                t.steps
                    .iter()
                    .map(|s| s.tool.as_str())
                    .collect::<Vec<_>>()
                    .join(" → ")
            })
            .unwrap_or_default();
        story.line(format!(
            "    {:<36} {word}  {}",
            g.id,
            story.style.dim(&path)
        ));
    }
}

/// Crawl: what could the agents do, before anything is deployed?
pub fn crawl(dir: &Path, story: &mut Story) -> anyhow::Result<()> {
    story.section(
        "1. Crawl — the proving ground",
        "every order in which the agents could call their tools, decided by the real engine",
    );
    std::fs::create_dir_all(dir.join("crawl"))?;

    let (_, naive) = analyse(dir, "manifest-naive.toml", true)?;
    story.line(format!(
        "  {} ({} states explored)",
        naive.name, naive.exploration.states
    ));
    goals(story, &naive);
    let toxic = naive.toxic.iter().find(|t| {
        t.classes.len() == TOXIC.len() && TOXIC.iter().all(|c| t.classes.iter().any(|x| x == c))
    });
    story.check(
        "crawl",
        "the naive design reaches the GTG-1002 chain unguarded",
        naive.goal("gtg1002-chain").map(|g| g.status) == Some(Status::Unguarded),
        "one identity holds scan, code analysis, exploitation, the prod DB and the uploader",
    );
    story.check(
        "crawl",
        "toxic combination found",
        toxic.is_some(),
        format!(
            "{{{}}} on {}",
            TOXIC.join(", "),
            toxic.map_or("no identity", |t| t.holder_identity.as_str())
        ),
    );
    std::fs::write(
        dir.join("crawl/safety-case-naive.html"),
        report::html::render(&naive, None),
    )?;

    let (_, split) = analyse(dir, "manifest-split.toml", false)?;
    story.line(format!("\n  {}", split.name));
    goals(story, &split);
    story.check(
        "crawl",
        "splitting into ReconAgent and PatchAgent is still exploitable through the orchestrator",
        !split.safe,
        "per-agent policies see each sub-agent alone: context splitting",
    );

    if let Some(fix) = &naive.fix {
        story.line(format!(
            "\n  {}",
            story
                .style
                .bold("Remediation proposed for the naive design:")
        ));
        for c in &fix.changes {
            story.line(format!("    • {}", change_line(c)));
        }
        story.check(
            "crawl",
            "the remediation is proved safe in the same run",
            fix.safe,
            format!(
                "fixed manifest and policies written to {}",
                dir.join("crawl/fixed").display()
            ),
        );
    } else {
        story.check(
            "crawl",
            "the remediation is proved safe in the same run",
            false,
            "no fix proposed",
        );
    }

    let (_, fixed) = analyse(dir, "manifest-fixed.toml", false)?;
    story.line(format!("\n  {}", fixed.name));
    goals(story, &fixed);
    let html = dir.join("crawl/safety-case.html");
    std::fs::write(&html, report::html::render(&fixed, None))?;
    story.check(
        "crawl",
        "the fixed design is proved safe",
        fixed.safe,
        format!(
            "every goal gated or unreachable; safety case: {}",
            html.display()
        ),
    );
    Ok(())
}

/// The credentials the Run phase uses.
pub struct Identities {
    pub orchestrator: String,
    pub recon: String,
    pub patch: String,
    pub inventory: String,
    pub operator: String,
    pub oncall: String,
}

/// Walk: every agent its own identity, with a verifiable chain of command back to a human.
pub fn walk(dir: &Path, story: &mut Story) -> anyhow::Result<Identities> {
    story.section(
        "2. Walk — identities and the chain of command",
        "signed credentials (EdDSA JWTs) with RFC 8693 delegation chains",
    );
    let td = TrustDomain::new("acme.example")?;
    let issuer = Issuer::init(&dir.join("issuer"), &td)?;
    let hour = Duration::from_secs(3600);
    let agent = |name: &str, owner: &str, tools: &str| -> anyhow::Result<String> {
        Ok(issuer
            .issue_agent(&AgentRequest {
                agent: AgentId::new(&td, name)?,
                owner: UserId::parse(owner)?,
                tools: ToolSet::parse_list(tools)?,
                ttl: hour,
                audience: None,
            })?
            .token)
    };
    let human = |name: &str, roles: &[&str], groups: &[&str]| -> anyhow::Result<String> {
        Ok(issuer
            .issue_user(&UserRequest {
                user: UserId::parse(name)?,
                roles: roles.iter().map(ToString::to_string).collect(),
                groups: groups.iter().map(ToString::to_string).collect(),
                ttl: hour,
                audience: None,
            })?
            .token)
    };
    let delegate = |from: &str, name: &str, tools: &str| -> anyhow::Result<_> {
        Ok(issuer.delegate(
            from,
            &DelegationRequest {
                agent: AgentId::new(&td, name)?,
                tools: ToolSet::parse_list(tools)?,
                ttl: None,
            },
        )?)
    };
    let operator = human("user:operator@acme.example", &["approver"], &[])?;
    let oncall = human(
        "user:oncall@acme.example",
        &["approver"],
        &["security-oncall"],
    )?;
    let orchestrator = agent(
        "orchestrator",
        "user:operator@acme.example",
        "ScanTool,CodeAnalysisTool,ExploitationTool,DatabaseQuery,DataExfiltration,Benign",
    )?;
    let recon = delegate(&orchestrator, "recon", "ScanTool")?;
    let patch = delegate(&orchestrator, "patch", "CodeAnalysisTool,ExploitationTool")?;
    let inventory = agent("inventory", "user:dana@acme.example", "ScanTool,Benign")?;
    story.line(format!(
        "  issuer {} in {}",
        issuer.config().issuer,
        dir.join("issuer").display()
    ));
    story.line("  humans: user:operator@acme.example (launches the agents), user:oncall@acme.example (approver, security-oncall)");
    story.line("  chain of command of the recon and patch sub-agents:");
    for tree in [&recon.credential, &patch.credential] {
        for line in chain_tree(tree, story.style).lines() {
            story.line(format!("    {line}"));
        }
    }
    let widened = delegate(&recon.token, "recon-helper", "ExploitationTool");
    story.check(
        "walk",
        "a sub-agent cannot delegate more than it holds",
        widened.is_err(),
        widened
            .err()
            .map_or("the widening delegation was issued".into(), |e| {
                e.to_string()
            }),
    );
    Ok(Identities {
        orchestrator,
        recon: recon.token,
        patch: patch.token,
        inventory,
        operator,
        oncall,
    })
}
