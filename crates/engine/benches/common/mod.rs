//! Fixtures shared by the `decide` (criterion) and `latency` benches: the engines under test,
//! the call streams, the 100-policy bundle and its Cedar counterpart.
//!
//! Every stream is for one agent (`AGENT`, in session `SESSION`, delegated by
//! `user:alice` → `ORCHESTRATOR`), so all its calls land in the same scopes. Streams carry
//! increasing RFC 3339 times: on the event clock (`Settings::replay()`) the engine reads them,
//! which lets a stream fix its rate and so its verdicts; on the system clock they are ignored.
#![allow(dead_code)]

use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicySet, Request};
use serde_json::json;
use std::str::FromStr;
use truststack_engine::event::format_time;
use truststack_engine::{Engine, Settings, ToolCall, Verdict};
use truststack_policy::ip_class::{classify_str, Network};
use truststack_policy::load::{load_files, load_sources};
use truststack_policy::{Catalog, Source};

pub const AGENT: &str = "spiffe://corp.example/agent/recon-1";
pub const ORCHESTRATOR: &str = "spiffe://corp.example/agent/orchestrator";
pub const SESSION: &str = "s-7f3a";
/// 2026-01-01T00:00:00Z: where every stream's clock starts.
pub const T0_MS: i64 = 1_767_225_600_000;

/// Tools of the 100-policy bundle; each has one policy about it.
pub const TOOLS: usize = 100;
/// Classes of the 100 tools (tool k has class `CLASSES[k % len]`).
const CLASSES: [&str; 5] = ["Recon", "Analysis", "Benign", "Ops", "Build"];

use truststack_testkit::examples::gtg1002 as example;

/// The three seed policies of `examples/gtg1002` on the example catalog.
pub fn seed_engine(settings: Settings) -> Engine {
    let loaded = load_files(
        &[example("policies/seed.tsp")],
        Some(&example("catalog.toml")),
    )
    .expect("seed bundle");
    assert_eq!(loaded.bundle.policies.len(), 3);
    Engine::new(loaded.bundle, settings)
}

/// The generated catalog: `tool_0` … `tool_99`, each with a class and a classified
/// `Target_IP_Range` attribute, plus four tools the trajectory policies speak about (never
/// called by the streams, so those policies are evaluated on every call but never fire).
pub fn hundred_catalog() -> String {
    let mut toml = String::from("[ip_ranges]\nCorp_DMZ = [\"198.51.100.0/24\"]\n\n");
    for k in 0..TOOLS {
        toml.push_str(&format!(
            "[tools.tool_{k}]\nclasses = [\"{}\"]\n\
             attributes.Target_IP_Range = {{ from = \"/target\", classify = \"ip_range\" }}\n\n",
            CLASSES[k % CLASSES.len()]
        ));
    }
    toml.push_str(
        "[tools.exploit_runner]\nclasses = [\"Exploit\"]\n\n\
         [tools.credential_dump]\nclasses = [\"Credential\"]\n\n\
         [tools.prod_db_query]\nclasses = [\"Collection\"]\n\
         data_source = { name = \"Internal_Prod_DB\", mode = \"read\" }\n\n\
         [tools.http_upload]\nclasses = [\"Exfil\"]\nmode = \"write_external\"\n",
    );
    toml
}

/// 100 per-tool policies (`p0` … `p99`) and 4 trajectory policies over three scopes.
pub fn hundred_policies() -> String {
    let mut text = String::new();
    for k in 0..TOOLS {
        text.push_str(&format!(
            "POLICY p{k}: ACTION: DENY TARGET: agent_identity IF \
             Tool_Call('tool_{k}').Target_IP_Range == 'External_Public' \
             OR Tool_Call('tool_{k}').Count > 1000 requests/5min\n"
        ));
    }
    text.push_str(
        "POLICY t-sequence: ACTION: REQUIRE_HITL TARGET: delegation_root \
           IF Sequence('Recon', 'Analysis', 'Exploit') WITHIN 1h\n\
         POLICY t-contains: ACTION: REQUIRE_HITL TARGET: agent_identity \
           IF Trajectory_Contains('Recon') AND Trajectory_Contains('Analysis') \
           AND Trajectory_Contains('Exploit')\n\
         POLICY t-taint: ACTION: DENY TARGET: session \
           IF DataSource('Internal_Prod_DB') == 'read' AND Tool_Call('Exfil')\n\
         POLICY t-ranges: ACTION: DENY TARGET: delegation_root \
           IF Tool_Call('Recon').Distinct('Target_IP_Range') > 3 values/10min\n",
    );
    text
}

pub fn hundred_engine(settings: Settings) -> Engine {
    let catalog_text = hundred_catalog();
    let catalog = Catalog::from_toml("bench-catalog.toml", &catalog_text).expect("catalog");
    let loaded = load_sources(
        vec![Source::new("bench.tsp", hundred_policies())],
        catalog,
        &catalog_text,
    )
    .unwrap_or_else(|e| panic!("100-policy bundle: {e}"));
    assert_eq!(loaded.bundle.policies.len(), TOOLS + 4);
    Engine::new(loaded.bundle, settings)
}

/// Which calls a stream makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// The seed scenario, a cycle of 8: 2 internal scans, 2 code analyses, 4 benign calls.
    /// One call a second: 75 scans per 5 min, under the seed's limit of 100, so on the event
    /// clock every call is admitted.
    Seed,
    /// Calls spread over the 100 tools (stride 37), one every 10 ms (each tool about once a
    /// second: far under its 1000/5min limit); every 10th call targets a public address and is
    /// denied by that tool's policy.
    Hundred,
}

impl Mix {
    pub fn step_ms(self) -> i64 {
        match self {
            Mix::Seed => 1_000,
            Mix::Hundred => 10,
        }
    }
}

/// An endless stream of calls of one agent with increasing times.
pub struct Stream {
    mix: Mix,
    i: u64,
    chain: Vec<String>,
}

impl Stream {
    pub fn new(mix: Mix) -> Self {
        Stream {
            mix,
            i: 0,
            chain: vec!["user:alice".into(), ORCHESTRATOR.into()],
        }
    }

    /// How many calls the stream has made.
    pub fn position(&self) -> u64 {
        self.i
    }

    /// The tool and arguments of call `i`.
    fn call_of(mix: Mix, i: u64) -> (String, serde_json::Value) {
        let a = i % 251;
        let b = (i / 251) % 256;
        match mix {
            Mix::Seed => match i % 8 {
                0 => (
                    "nmap_scan".into(),
                    json!({"target": format!("10.{a}.{b}.0/24")}),
                ),
                1 | 6 => ("read_docs".into(), json!({"page": format!("runbook-{a}")})),
                2 | 7 => (
                    "code_review".into(),
                    json!({"repo": format!("git.corp.example/svc-{a}")}),
                ),
                3 => (
                    "create_ticket".into(),
                    json!({"title": format!("finding {i}")}),
                ),
                4 => (
                    "service_probe".into(),
                    json!({"host": format!("10.{b}.{a}.7")}),
                ),
                _ => ("run_tests".into(), json!({"repo": format!("svc-{a}")})),
            },
            Mix::Hundred => {
                let k = (i * 37) % TOOLS as u64;
                let target = if i % 10 == 3 {
                    format!("203.0.113.{}", a % 256)
                } else {
                    format!("10.{k}.{b}.{a}")
                };
                (format!("tool_{k}"), json!({ "target": target }))
            }
        }
    }

    pub fn next_call(&mut self) -> ToolCall {
        let i = self.i;
        self.i += 1;
        let (tool, args) = Self::call_of(self.mix, i);
        ToolCall {
            id: format!("c-{i}"),
            time: Some(format_time(T0_MS + i as i64 * self.mix.step_ms())),
            agent: AGENT.into(),
            session: Some(SESSION.into()),
            chain: self.chain.clone(),
            tool,
            args,
        }
    }

    /// The next `n` calls.
    pub fn take(&mut self, n: usize) -> Vec<ToolCall> {
        (0..n).map(|_| self.next_call()).collect()
    }
}

/// Decides `n` calls of `stream` (the prior history of a scope) and checks they were all
/// admitted: the history is one long trajectory of the agent.
pub fn build_history(engine: &Engine, stream: &mut Stream, n: u64) {
    for _ in 0..n {
        let call = stream.next_call();
        let d = engine.queue(&call).wait();
        assert_eq!(
            d.decision,
            Verdict::Allow,
            "history call {} ({}) not admitted: {}",
            call.id,
            call.tool,
            d.reason
        );
    }
}

/// The Cedar counterpart of the per-tool policies' stateless part (`Target_IP_Range ==
/// 'External_Public'`), plus a permit-all for the default allow. The target's range is
/// classified before Cedar sees it (by our classifier, outside any timing), so Cedar only
/// compares strings: the comparison favours Cedar.
pub struct CedarBaseline {
    pub authorizer: Authorizer,
    pub policies: PolicySet,
    pub entities: Entities,
    principal: EntityUid,
    action: EntityUid,
    tool_type: cedar_policy::EntityTypeName,
    ranges: Network,
}

impl CedarBaseline {
    pub fn new() -> Self {
        let mut text = String::new();
        for k in 0..TOOLS {
            text.push_str(&format!(
                "@id(\"p{k}\")\nforbid(principal, action == Action::\"call\", \
                 resource == Tool::\"tool_{k}\") \
                 when {{ context.target_range == \"External_Public\" }};\n"
            ));
        }
        text.push_str("@id(\"default-allow\")\npermit(principal, action, resource);\n");
        let policies = PolicySet::from_str(&text).expect("cedar policies");
        let catalog =
            Catalog::from_toml("bench-catalog.toml", &hundred_catalog()).expect("catalog");
        CedarBaseline {
            authorizer: Authorizer::new(),
            policies,
            entities: Entities::empty(),
            principal: EntityUid::from_str(&format!("Agent::\"{AGENT}\"")).expect("principal"),
            action: EntityUid::from_str("Action::\"call\"").expect("action"),
            tool_type: "Tool".parse().expect("type"),
            ranges: catalog.network,
        }
    }

    /// The Cedar request for one of our calls (target pre-classified).
    pub fn request(&self, call: &ToolCall) -> Request {
        self.request_for(&call.tool, &self.range(call))
    }

    /// The class of a call's target, as the catalog's `ip_range` classifier gives it.
    pub fn range(&self, call: &ToolCall) -> String {
        let target = call
            .args
            .get("target")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        classify_str(target, &self.ranges).to_string()
    }

    /// The Cedar request for a tool name and an already classified range.
    pub fn request_for(&self, tool: &str, range: &str) -> Request {
        let resource = EntityUid::from_type_name_and_id(
            self.tool_type.clone(),
            cedar_policy::EntityId::new(tool),
        );
        let context = Context::from_pairs([(
            "target_range".to_string(),
            cedar_policy::RestrictedExpression::new_string(range.to_string()),
        )])
        .expect("context");
        Request::new(
            self.principal.clone(),
            self.action.clone(),
            resource,
            context,
            None,
        )
        .expect("request")
    }

    pub fn is_allowed(&self, request: &Request) -> bool {
        self.authorizer
            .is_authorized(request, &self.policies, &self.entities)
            .decision()
            == cedar_policy::Decision::Allow
    }
}

/// Checks that Cedar and the engine agree on the verdict of `n` calls of the 100-policy stream
/// (the trajectory policies never fire on it, the count limits are never reached). Uses a fresh
/// engine so the measured engines keep their own clocks.
pub fn check_cedar_agrees(cedar: &CedarBaseline, n: usize) -> (usize, usize) {
    let engine = hundred_engine(Settings::replay());
    let mut stream = Stream::new(Mix::Hundred);
    let (mut allowed, mut denied) = (0, 0);
    for _ in 0..n {
        let call = stream.next_call();
        let ours = engine.queue(&call).wait().decision;
        let theirs = cedar.is_allowed(&cedar.request(&call));
        assert_eq!(
            ours == Verdict::Allow,
            theirs,
            "verdicts differ on {} {}",
            call.tool,
            call.args
        );
        assert_ne!(ours, Verdict::RequireApproval);
        if theirs {
            allowed += 1;
        } else {
            denied += 1;
        }
    }
    (allowed, denied)
}

/// Bytes of monitor state held for the agent in each scope kind the bundle uses.
pub fn memory_report(engine: &Engine) -> String {
    use truststack_policy::Target;
    let keys = [
        (Target::AgentIdentity, AGENT),
        (Target::Session, SESSION),
        (Target::User, "user:alice"),
        (Target::DelegationRoot, ORCHESTRATOR),
    ];
    let mut parts = Vec::new();
    let mut total = 0;
    for (target, key) in keys {
        if let Some(bytes) = engine.scope_memory(target, key) {
            total += bytes;
            parts.push(format!("{}={bytes} B", target.as_str()));
        }
    }
    format!("{} (total {total} B)", parts.join(", "))
}

/// A session with `n` observed results of ~10 KB each (prose with emails, amounts, ids and
/// names, as mail bodies hold) under a pack whose policies read provenance.
pub fn provenance_engine(n: usize) -> (Engine, Vec<truststack_engine::Observation>) {
    let catalog = r#"
[tools.send_email]
classes = ["Send"]
attributes.Recipient = { from = "/recipients/*" }
output = "trusted"
[tools.read_inbox]
output = "untrusted"
output_fields = { "/*/sender" = "trusted" }
"#;
    let policies = r#"
POLICY recipient: ACTION: DENY TARGET: session
  IF Tool_Call('Send') AND Provenance(Arg('Recipient')) IN ['untrusted', 'none']
POLICY subject: ACTION: DENY TARGET: session
  IF Tool_Call('Send') AND Arg('/subject') FROM 'untrusted' AND NOT (Arg('/subject') FROM 'user')
POLICY known: ACTION: REQUIRE_HITL TARGET: session
  IF Tool_Call('Send') AND NOT (ALL Arg('/recipients/*') IN Results('read_inbox'))
"#;
    let sources = [Source::new("p.tsp", policies)];
    let catalog_parsed = Catalog::from_toml("c.toml", catalog).unwrap();
    let bundle = truststack_policy::build_bundle(&sources, catalog_parsed, catalog)
        .unwrap()
        .0;
    let engine = Engine::new(bundle, Settings::replay());
    let observations = (0..n)
        .map(|i| {
            let mut body = String::with_capacity(10_240);
            let mut k = 0;
            while body.len() < 10_000 {
                body.push_str(&format!(
                    "Dear Team, invoice {i}-{k} of EUR {}.{:02} is due; contact person{k}.{i}@corp{}.example or see https://portal.example/inv/{i}/{k}. Project Blue Harbor status is fine and the rest of this line is ordinary prose. ",
                    (i * 31 + k) % 9000, k % 100, k % 50
                ));
                k += 1;
            }
            truststack_engine::Observation {
                id: None,
                time: Some(format_time(T0_MS + i as i64)),
                agent: "spiffe://bench/agent/a".into(),
                session: Some("s".into()),
                chain: vec!["user:bench".into()],
                call_id: None,
                tool: Some("read_inbox".into()),
                data_sources: Vec::new(),
                result: Some(json!([{"sender": format!("boss{i}@corp.example"), "body": body}])),
            }
        })
        .collect();
    (engine, observations)
}

/// The `i`-th `send_email` of the provenance session: one recipient seen in an untrusted body
/// (or not at all, past the indexed results), one trusted sender; a subject from the bodies.
pub fn provenance_call(i: u64) -> ToolCall {
    ToolCall {
        id: format!("p{i}"),
        time: Some(format_time(T0_MS + 10_000 + i as i64)),
        agent: "spiffe://bench/agent/a".into(),
        session: Some("s".into()),
        chain: vec!["user:bench".into()],
        tool: "send_email".into(),
        args: json!({
            "recipients": [format!("person{}.{}@corp{}.example", i % 40, i % 1000, i % 40 % 50), "boss7@corp.example"],
            "subject": "Project Blue Harbor"
        }),
    }
}
