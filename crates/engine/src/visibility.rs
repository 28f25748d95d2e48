//! Which tools an identity is shown (an MCP `tools/list`, `POST /v1/tools/visible`): every
//! tool it could ever be allowed to call.
//!
//! A tool is hidden when the identity *may never* call it, whatever the arguments and whatever
//! it did before:
//!
//! - the credential's allowed tools (names or classes) do not include it;
//! - it is not in the catalog and unknown tools are denied;
//! - an enforced `DENY` policy fires on every call of it by this identity: its condition is true
//!   under three-valued logic where everything about the call's identity (agent, user, delegation
//!   root, chain, depth, session) and the tool (name, classes, catalog mode, data source) is
//!   known, and everything about the arguments and the history (counts, attributes, trajectory,
//!   taint) is unknown — e.g. `DENY IF Tool_Call('DataExfiltration')` or
//!   `DENY IF Tool_Call('http_upload') AND Agent MATCHES '*/recon-*'`;
//! - the default decision is deny and no enforced `ALLOW` or `REQUIRE_HITL` policy can fire on
//!   it (a granted approval allows a call even under a default deny).
//!
//! A tool that some history could deny (a rate limit, a taint rule) stays listed: the call is
//! decided when it is made, and a denial tells the model why.

use crate::event::{Caller, Principals};
use crate::DefaultDecision;
use truststack_policy::partial::{eval, nothing_assumed, Known, Truth};
use truststack_policy::{Action, Bundle, Mode, ToolSpec};

/// Whether the credential's allowed tools include `tool` (by name or class).
pub fn credential_allows(who: &Caller, tool: &str, spec: Option<&ToolSpec>) -> bool {
    match &who.tools {
        None => true,
        Some(allowed) => allowed.iter().any(|a| {
            a == "*" || a == tool || spec.is_some_and(|s| s.classes.iter().any(|c| c == a))
        }),
    }
}

/// Why `who` may never call `tool` in `session`, or `None` when some call of it could be
/// allowed (see the module documentation).
pub fn never_allowed(
    bundle: &Bundle,
    settings: &crate::Settings,
    who: &Caller,
    session: &str,
    tool: &str,
) -> Option<String> {
    let spec = bundle.catalog.tool(tool);
    if !credential_allows(who, tool, spec) {
        return Some("outside the credential's allowed tools".into());
    }
    if spec.is_none() && settings.unknown_tools == DefaultDecision::Deny {
        return Some("not in the catalog, and unknown tools are denied".into());
    }
    let p = Principals::of(&who.agent, Some(session), &who.chain);
    let known = Known {
        tool,
        catalog: &bundle.catalog,
        args: None,
        subject: Some(p),
    };
    let enforced = bundle
        .policies
        .iter()
        .filter(|p| p.policy.mode == Mode::Enforce);
    let mut may_allow = false;
    for cp in enforced {
        let truth = eval(&cp.policy.condition, &known, &nothing_assumed);
        match cp.policy.action {
            Action::Deny if truth == Truth::True => {
                return Some(format!("policy {} denies every call of it", cp.policy.id));
            }
            Action::Allow | Action::RequireHitl if truth != Truth::False => may_allow = true,
            _ => {}
        }
    }
    if settings.default_decision == DefaultDecision::Deny && !may_allow {
        return Some("the default is deny and no policy can allow it".into());
    }
    None
}

/// `tools` split into those `who` could be allowed to call in `session` and those it may never
/// call, each with why: what a `tools/list` shows and leaves out.
pub fn split(
    bundle: &Bundle,
    settings: &crate::Settings,
    who: &Caller,
    session: &str,
    tools: impl IntoIterator<Item = String>,
) -> (Vec<String>, Vec<(String, String)>) {
    let (mut visible, mut hidden) = (Vec::new(), Vec::new());
    for tool in tools {
        match never_allowed(bundle, settings, who, session, &tool) {
            None => visible.push(tool),
            Some(why) => hidden.push((tool, why)),
        }
    }
    (visible, hidden)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::Settings;
    use truststack_policy::load::load_sources;
    use truststack_policy::{Catalog, Source};

    const CATALOG: &str = r#"
        [tools.nmap_scan]
        classes = ["ScanTool"]
        attributes.Target_IP_Range = { from = "/target", classify = "ip_range" }
        [tools.http_upload]
        classes = ["DataExfiltration"]
        mode = "write_external"
        [tools.prod_db_query]
        data_source = { name = "Internal_Prod_DB", mode = "read" }
        [tools.read_docs]
        classes = ["Benign"]
    "#;

    fn bundle(policies: &str) -> Bundle {
        let catalog = Catalog::from_toml("c.toml", CATALOG).unwrap();
        load_sources(vec![Source::new("p.tsp", policies)], catalog, CATALOG)
            .unwrap_or_else(|e| panic!("{e}"))
            .bundle
    }

    fn who(agent: &str, tools: Option<&[&str]>) -> Caller {
        Caller {
            agent: agent.into(),
            chain: vec!["user:alice@acme.example".into()],
            tools: tools.map(|t| t.iter().map(|s| s.to_string()).collect()),
            credential_id: None,
        }
    }

    #[test]
    fn history_dependent_policies_keep_tools_visible() {
        let b = bundle(
            "POLICY: ACTION: DENY TARGET: agent_identity IF (Tool_Call('ScanTool').Count > 100 requests/5min) OR (Tool_Call('ScanTool').Target_IP_Range == 'External_Public')\n\
             POLICY: ACTION: DENY TARGET: agent_identity IF (DataSource('Internal_Prod_DB') == 'read') AND (Tool_Call('DataExfiltration') == 'write_external')",
        );
        let s = Settings::default();
        let w = who("spiffe://acme.example/agent/a", None);
        for tool in ["nmap_scan", "http_upload", "prod_db_query", "read_docs"] {
            assert_eq!(never_allowed(&b, &s, &w, "s", tool), None, "{tool}");
        }
        assert!(never_allowed(&b, &s, &w, "s", "mystery").is_some());
    }

    #[test]
    fn unconditional_denials_and_credentials_hide_tools() {
        let b = bundle(
            "POLICY no-upload: ACTION: DENY TARGET: agent_identity IF Tool_Call('DataExfiltration') == 'write_external' AND Agent MATCHES 'spiffe://acme.example/agent/recon-*'\n\
             POLICY shadowed: ACTION: DENY TARGET: agent_identity IF Tool_Call('read_docs') MODE: shadow",
        );
        let s = Settings::default();
        let recon = who("spiffe://acme.example/agent/recon-1", None);
        let other = who("spiffe://acme.example/agent/writer", None);
        assert!(never_allowed(&b, &s, &recon, "s", "http_upload")
            .unwrap()
            .contains("no-upload"));
        assert_eq!(never_allowed(&b, &s, &other, "s", "http_upload"), None);
        assert_eq!(never_allowed(&b, &s, &recon, "s", "read_docs"), None);
        let scoped = who("spiffe://acme.example/agent/x", Some(&["ScanTool"]));
        assert_eq!(never_allowed(&b, &s, &scoped, "s", "nmap_scan"), None);
        assert!(never_allowed(&b, &s, &scoped, "s", "read_docs").is_some());
    }

    #[test]
    fn default_deny_hides_what_no_policy_can_allow() {
        let b = bundle("POLICY ok: ACTION: ALLOW TARGET: agent_identity IF Tool_Call('Benign')");
        let s = Settings {
            default_decision: DefaultDecision::Deny,
            ..Settings::default()
        };
        let w = who("spiffe://acme.example/agent/a", None);
        assert_eq!(never_allowed(&b, &s, &w, "s", "read_docs"), None);
        assert!(never_allowed(&b, &s, &w, "s", "nmap_scan").is_some());
    }
}
