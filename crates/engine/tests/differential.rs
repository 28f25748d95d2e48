#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Differential test of the incremental engine against a deliberately naive reference.
//!
//! Random policies are generated as an AST, printed as policy TEXT (so the lexer, parser, checker
//! and compiler are exercised too) and compiled against a small fixed catalog. Random traces of
//! tool calls, observations and approval answers are then fed, event by event, both to the engine
//! (`Settings::replay()`, event clock) and to a reference evaluator kept in this file. The
//! reference stores the whole admitted history of every scope and rescans it for every predicate;
//! it shares no code with the engine's monitors. Every decision (verdict, enforced and shadow
//! policy ids) and every approval outcome must agree. Finally the whole trace is serialized to
//! JSONL, parsed back and replayed through a fresh engine with `replay::replay`, which must give
//! the same answers again.
//!
//! A third engine decides the calls with `Engine::decide_brief` (no explanation, the time as a
//! number): its verdicts and approval ids, its answers to the same approvals, and at the end its
//! monitor states and held calls must be exactly the full engine's.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use truststack_engine::event::format_time;
use truststack_engine::replay::{parse_trace, replay};
use truststack_engine::{
    ApprovalAnswer, ApprovalResult, DataAccess, DefaultDecision, Engine, Event, Observation,
    Processed, Settings, ToolCall, Verdict,
};
use truststack_policy::load::load_sources;
use truststack_policy::{Catalog, Source};

// ---------------------------------------------------------------------------------------------
// The fixed catalog (the TOML text is generated from this table, so the reference and the engine
// read the same facts).

struct ToolDef {
    name: &'static str,
    classes: &'static [&'static str],
    mode: Option<&'static str>,
    data_source: Option<(&'static str, &'static str)>,
    /// `(attribute, JSON pointer, classify as ip_range)`.
    attrs: &'static [(&'static str, &'static str, bool)],
}

const TOOLS: &[ToolDef] = &[
    ToolDef {
        name: "nmap_scan",
        classes: &["ScanTool", "NetTool"],
        mode: None,
        data_source: None,
        attrs: &[
            ("Target_IP_Range", "/target", true),
            ("target", "/target", false),
        ],
    },
    ToolDef {
        name: "service_probe",
        classes: &["ScanTool"],
        mode: None,
        data_source: None,
        // No `Target_IP_Range` extractor: that attribute is read from the argument of that name.
        attrs: &[("target", "/host", false)],
    },
    ToolDef {
        name: "code_review",
        classes: &["CodeAnalysisTool"],
        mode: Some("read_only"),
        data_source: None,
        attrs: &[],
    },
    ToolDef {
        name: "exploit_runner",
        classes: &["ExploitationTool", "NetTool"],
        mode: None,
        data_source: None,
        attrs: &[("Target_IP_Range", "/target", true)],
    },
    ToolDef {
        name: "prod_db_query",
        classes: &["DatabaseQuery"],
        mode: None,
        data_source: Some(("Internal_Prod_DB", "read")),
        attrs: &[],
    },
    ToolDef {
        name: "archive_writer",
        classes: &["DatabaseQuery"],
        mode: Some("write_internal"),
        data_source: Some(("Internal_Prod_DB", "write")),
        attrs: &[],
    },
    ToolDef {
        name: "http_upload",
        classes: &["DataExfiltration", "NetTool"],
        mode: Some("write_external"),
        data_source: None,
        attrs: &[("target", "/url", false)],
    },
];

fn catalog_toml() -> String {
    let mut out = String::from("[ip_ranges]\nCorp_DMZ = [\"198.51.100.0/24\"]\n");
    for t in TOOLS {
        let _ = writeln!(out, "\n[tools.{}]", t.name);
        let classes: Vec<String> = t.classes.iter().map(|c| format!("\"{c}\"")).collect();
        let _ = writeln!(out, "classes = [{}]", classes.join(", "));
        if let Some(mode) = t.mode {
            let _ = writeln!(out, "mode = \"{mode}\"");
        }
        if let Some((name, mode)) = t.data_source {
            let _ = writeln!(
                out,
                "data_source = {{ name = \"{name}\", mode = \"{mode}\" }}"
            );
        }
        for (attr, from, classify) in t.attrs {
            let classify = if *classify {
                ", classify = \"ip_range\""
            } else {
                ""
            };
            let _ = writeln!(out, "attributes.{attr} = {{ from = \"{from}\"{classify} }}");
        }
    }
    out
}

/// Names policies may use: tools, classes and `Unknown`. (A name the catalog does not list is
/// rejected when the bundle is checked, so no policy can speak of `mystery_tool` by name.)
const PATTERNS: &[&str] = &[
    "nmap_scan",
    "service_probe",
    "code_review",
    "exploit_runner",
    "prod_db_query",
    "archive_writer",
    "http_upload",
    "ScanTool",
    "NetTool",
    "CodeAnalysisTool",
    "ExploitationTool",
    "DatabaseQuery",
    "DataExfiltration",
    "Unknown",
];

/// Tools calls are made to: every catalog tool, a tool missing from the catalog, and a class
/// name used as a tool name (also missing from the catalog).
const CALL_TOOLS: &[&str] = &[
    "nmap_scan",
    "service_probe",
    "code_review",
    "exploit_runner",
    "prod_db_query",
    "archive_writer",
    "http_upload",
    "mystery_tool",
    "ScanTool",
];

const TARGETS: &[&str] = &[
    "10.0.3.7",
    "192.168.0.0/16",
    "8.8.8.8",
    "10.0.0.0/7",
    "127.0.0.1",
    "169.254.1.1",
    "198.51.100.7",
    "db.internal",
];

const SOURCES: &[(&str, &str)] = &[
    ("Internal_Prod_DB", "read"),
    ("Internal_Prod_DB", "write"),
    ("HR_Files", "read"),
];

const MODES: &[&str] = &["write_external", "read_only", "write_internal", "read"];

/// `(agent, chain)`: an orchestrator launched by u1, two of its sub-agents, and an agent of u2.
const AGENTS: &[(&str, &[&str])] = &[
    ("spiffe://t.example/agent/orch", &["user:u1"]),
    (
        "spiffe://t.example/agent/sub1",
        &["user:u1", "spiffe://t.example/agent/orch"],
    ),
    (
        "spiffe://t.example/agent/sub2",
        &["user:u1", "spiffe://t.example/agent/orch"],
    ),
    ("spiffe://t.example/agent/solo", &["user:u2"]),
];

const T0: i64 = 1_790_000_000_000;

// ---------------------------------------------------------------------------------------------
// The generated policy AST and its printing.

/// The language's comparison operators; the reference applies them on its own.
use truststack_policy::ast::CmpOp as Op;

/// Whether `a <op> b`, computed by the reference without the engine's comparison.
fn reference_holds(op: Op, a: u64, b: u64) -> bool {
    match op {
        Op::Eq => a == b,
        Op::Ne => a != b,
        Op::Lt => a < b,
        Op::Le => a <= b,
        Op::Gt => a > b,
        Op::Ge => a >= b,
    }
}

#[derive(Debug, Clone)]
enum Lit {
    S(&'static str),
    N(i64),
}

impl Lit {
    fn text(&self) -> String {
        match self {
            Lit::S(s) => format!("'{s}'"),
            Lit::N(n) => n.to_string(),
        }
    }
}

#[derive(Debug, Clone)]
enum AttrTest {
    Eq(Lit),
    Ne(Lit),
    In(Vec<Lit>),
}

#[derive(Debug, Clone)]
enum P {
    Call(&'static str),
    Count {
        pat: &'static str,
        op: Op,
        n: u64,
        window_s: i64,
    },
    Distinct {
        pat: &'static str,
        attr: &'static str,
        op: Op,
        n: u64,
        window_s: i64,
    },
    Attr {
        pat: &'static str,
        attr: &'static str,
        test: AttrTest,
    },
    Mode {
        pat: &'static str,
        mode: &'static str,
    },
    Contains {
        pat: &'static str,
        within_s: Option<i64>,
    },
    Sequence {
        steps: Vec<&'static str>,
        within_s: Option<i64>,
    },
    DataSource {
        source: &'static str,
        mode: Option<&'static str>,
        within_s: Option<i64>,
    },
    Agent(&'static str),
}

fn within_text(w: Option<i64>) -> String {
    w.map(|w| format!(" WITHIN {w}s")).unwrap_or_default()
}

impl P {
    fn text(&self) -> String {
        match self {
            P::Call(p) => format!("Tool_Call('{p}')"),
            P::Count {
                pat,
                op,
                n,
                window_s,
            } => format!(
                "Tool_Call('{pat}').Count {} {n} requests/{window_s}s",
                op.as_str()
            ),
            P::Distinct {
                pat,
                attr,
                op,
                n,
                window_s,
            } => format!(
                "Tool_Call('{pat}').Distinct('{attr}') {} {n} values/{window_s}s",
                op.as_str()
            ),
            P::Attr { pat, attr, test } => {
                let test = match test {
                    AttrTest::Eq(l) => format!("== {}", l.text()),
                    AttrTest::Ne(l) => format!("!= {}", l.text()),
                    AttrTest::In(ls) => format!(
                        "IN [{}]",
                        ls.iter().map(Lit::text).collect::<Vec<_>>().join(", ")
                    ),
                };
                format!("Tool_Call('{pat}').{attr} {test}")
            }
            P::Mode { pat, mode } => format!("Tool_Call('{pat}') == '{mode}'"),
            P::Contains { pat, within_s } => {
                format!("Trajectory_Contains('{pat}'){}", within_text(*within_s))
            }
            P::Sequence { steps, within_s } => format!(
                "Sequence({}){}",
                steps
                    .iter()
                    .map(|s| format!("'{s}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
                within_text(*within_s)
            ),
            P::DataSource {
                source,
                mode,
                within_s,
            } => format!(
                "DataSource('{source}'){}{}",
                mode.map(|m| format!(" == '{m}'")).unwrap_or_default(),
                within_text(*within_s)
            ),
            P::Agent(a) => format!("Agent == '{a}'"),
        }
    }
}

#[derive(Debug, Clone)]
enum E {
    P(P),
    Not(Box<E>),
    And(Vec<E>),
    Or(Vec<E>),
}

impl E {
    /// Prints with the fewest parentheses the grammar needs (NOT > AND > OR), so precedence is
    /// exercised too.
    fn text(&self) -> String {
        match self {
            E::P(p) => p.text(),
            E::Not(inner) => match **inner {
                E::And(_) | E::Or(_) => format!("NOT ({})", inner.text()),
                _ => format!("NOT {}", inner.text()),
            },
            E::And(items) => items
                .iter()
                .map(|i| match i {
                    E::Or(_) => format!("({})", i.text()),
                    _ => i.text(),
                })
                .collect::<Vec<_>>()
                .join(" AND "),
            E::Or(items) => items.iter().map(E::text).collect::<Vec<_>>().join(" OR "),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Deny,
    Hitl,
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Tgt {
    Agent,
    Session,
    User,
    Root,
}

const TARGETS_ALL: [Tgt; 4] = [Tgt::Agent, Tgt::Session, Tgt::User, Tgt::Root];

#[derive(Debug, Clone)]
struct Pol {
    named: bool,
    action: Act,
    target: Tgt,
    /// `TARGET: agent_identity` may be left out (it is the default).
    explicit_target: bool,
    cond: E,
    shadow: bool,
    deadline_s: Option<i64>,
}

impl Pol {
    fn id(&self, i: usize) -> String {
        if self.named {
            format!("p{i}")
        } else {
            // Unnamed policies get `<file stem>#<n>`, counting every policy of the file.
            format!("gen#{}", i + 1)
        }
    }

    fn text(&self, i: usize) -> String {
        let mut s = String::from("POLICY");
        if self.named {
            let _ = write!(s, " p{i}");
        }
        let action = match self.action {
            Act::Deny => "DENY",
            Act::Hitl => "REQUIRE_HITL",
            Act::Allow => "ALLOW",
        };
        let _ = write!(s, ": ACTION: {action}");
        if self.explicit_target || self.target != Tgt::Agent {
            let target = match self.target {
                Tgt::Agent => "agent_identity",
                Tgt::Session => "session",
                Tgt::User => "user",
                Tgt::Root => "delegation_root",
            };
            let _ = write!(s, " TARGET: {target}");
        }
        let _ = write!(s, " IF {}", self.cond.text());
        if self.shadow {
            s.push_str(" MODE: shadow");
        }
        if let Some(d) = self.deadline_s {
            let _ = write!(s, " DEADLINE: {d}s");
        }
        s.push('\n');
        s
    }
}

// ---------------------------------------------------------------------------------------------
// The generated trace.

#[derive(Debug, Clone)]
struct Args {
    target: Option<Value>,
    host: Option<Value>,
    url: Option<&'static str>,
    ip_range: Option<&'static str>,
    port: Option<Value>,
}

impl Args {
    fn json(&self) -> Value {
        let mut m = serde_json::Map::new();
        if let Some(v) = &self.target {
            m.insert("target".into(), v.clone());
        }
        if let Some(v) = &self.host {
            m.insert("host".into(), v.clone());
        }
        if let Some(v) = self.url {
            m.insert("url".into(), json!(v));
        }
        if let Some(v) = self.ip_range {
            m.insert("Target_IP_Range".into(), json!(v));
        }
        if let Some(v) = &self.port {
            m.insert("port".into(), v.clone());
        }
        Value::Object(m)
    }
}

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // test data, size is irrelevant
enum Ev {
    Call {
        dt: i64,
        agent: usize,
        session: Option<u8>,
        tool: &'static str,
        args: Args,
    },
    Observe {
        dt: i64,
        agent: usize,
        session: Option<u8>,
        sources: Vec<usize>,
    },
    /// Answers the `pick`-th call the reference holds (modulo), or, with none held, some
    /// earlier call id (which the engine must not know as pending either).
    Answer {
        dt: i64,
        pick: usize,
        by_launcher: bool,
        grant: bool,
        lease_s: Option<i64>,
        by_approval_id: bool,
    },
}

#[derive(Debug, Clone)]
struct Case {
    policies: Vec<Pol>,
    default_allow: bool,
    unknown_allow: bool,
    events: Vec<Ev>,
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn pattern() -> impl Strategy<Value = &'static str> {
    prop::sample::select(PATTERNS)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Eq),
        Just(Op::Ne),
        Just(Op::Lt),
        Just(Op::Le),
        Just(Op::Gt),
        Just(Op::Ge)
    ]
}

fn within() -> impl Strategy<Value = Option<i64>> {
    prop::option::of(1i64..=10)
}

fn lits_for(attr: &'static str) -> BoxedStrategy<Lit> {
    match attr {
        "Target_IP_Range" => prop::sample::select(vec![
            "External_Public",
            "Internal_Private",
            "Loopback",
            "Link_Local",
            "Corp_DMZ",
            "Unknown",
        ])
        .prop_map(Lit::S)
        .boxed(),
        "target" => prop_oneof![
            prop::sample::select(vec![
                "8.8.8.8",
                "10.0.3.7",
                "db.internal",
                "https://x.example/a"
            ])
            .prop_map(Lit::S),
            Just(Lit::N(7)),
        ]
        .boxed(),
        _ => prop_oneof![Just(Lit::N(22)), Just(Lit::N(80)), Just(Lit::S("22"))].boxed(),
    }
}

fn attr_pred() -> impl Strategy<Value = P> {
    (
        pattern(),
        prop::sample::select(vec!["Target_IP_Range", "target", "port"]),
    )
        .prop_flat_map(|(pat, attr)| {
            let test = prop_oneof![
                lits_for(attr).prop_map(AttrTest::Eq),
                lits_for(attr).prop_map(AttrTest::Ne),
                prop::collection::vec(lits_for(attr), 1..=3).prop_map(AttrTest::In),
            ];
            test.prop_map(move |test| P::Attr { pat, attr, test })
        })
}

fn pred() -> impl Strategy<Value = P> {
    prop_oneof![
        2 => pattern().prop_map(P::Call),
        3 => (pattern(), op(), 0u64..=4, 1i64..=10).prop_map(|(pat, op, n, window_s)| P::Count {
            pat,
            op,
            n,
            window_s
        }),
        2 => (
            pattern(),
            prop::sample::select(vec!["target", "port"]),
            op(),
            0u64..=4,
            1i64..=10
        )
            .prop_map(|(pat, attr, op, n, window_s)| P::Distinct {
                pat,
                attr,
                op,
                n,
                window_s
            }),
        2 => attr_pred(),
        1 => (pattern(), prop::sample::select(MODES)).prop_map(|(pat, mode)| P::Mode { pat, mode }),
        3 => (pattern(), within()).prop_map(|(pat, within_s)| P::Contains { pat, within_s }),
        3 => (prop::collection::vec(pattern(), 2..=3), within())
            .prop_map(|(steps, within_s)| P::Sequence { steps, within_s }),
        2 => (
            prop::sample::select(vec!["Internal_Prod_DB", "HR_Files"]),
            prop::option::of(prop::sample::select(vec!["read", "write"])),
            within()
        )
            .prop_map(|(source, mode, within_s)| P::DataSource {
                source,
                mode,
                within_s
            }),
        1 => prop::sample::select(
            AGENTS
                .iter()
                .map(|(a, _)| *a)
                .chain(["spiffe://t.example/agent/nobody"])
                .collect::<Vec<_>>()
        )
        .prop_map(P::Agent),
    ]
}

fn expr() -> impl Strategy<Value = E> {
    pred().prop_map(E::P).prop_recursive(3, 10, 3, |inner| {
        prop_oneof![
            1 => inner.clone().prop_map(|e| E::Not(Box::new(e))),
            2 => prop::collection::vec(inner.clone(), 2..=3).prop_map(E::And),
            2 => prop::collection::vec(inner, 2..=3).prop_map(E::Or),
        ]
    })
}

fn policy() -> impl Strategy<Value = Pol> {
    (
        any::<bool>(),
        prop_oneof![2 => Just(Act::Deny), 2 => Just(Act::Hitl), 1 => Just(Act::Allow)],
        prop::sample::select(TARGETS_ALL.to_vec()),
        any::<bool>(),
        expr(),
        prop::bool::weighted(0.2),
        prop::option::of(2i64..=20),
    )
        .prop_map(
            |(named, action, target, explicit_target, cond, shadow, deadline)| Pol {
                named,
                action,
                target,
                explicit_target,
                cond,
                shadow,
                // DEADLINE only makes sense (and is only accepted without a warning) on HITL.
                deadline_s: deadline.filter(|_| action == Act::Hitl),
            },
        )
}

fn json_target() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => prop::sample::select(TARGETS).prop_map(|t| json!(t)),
        1 => Just(json!(7)),
    ]
}

fn args() -> impl Strategy<Value = Args> {
    (
        prop::option::weighted(0.8, json_target()),
        prop::option::weighted(0.5, json_target()),
        prop::option::of(prop::sample::select(vec![
            "https://x.example/a",
            "https://y.example/b",
        ])),
        prop::option::weighted(
            0.3,
            prop::sample::select(vec!["External_Public", "Internal_Private"]),
        ),
        prop::option::of(prop_oneof![
            Just(json!(22)),
            Just(json!(80)),
            Just(json!("22"))
        ]),
    )
        .prop_map(|(target, host, url, ip_range, port)| Args {
            target,
            host,
            url,
            ip_range,
            port,
        })
}

fn dt() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => 1i64..3_000,
        2 => Just(0i64),
        1 => 5_000i64..30_000,
    ]
}

fn event() -> impl Strategy<Value = Ev> {
    let agent = 0..AGENTS.len();
    let session = prop::option::weighted(0.8, 0u8..3);
    prop_oneof![
        7 => (dt(), agent.clone(), session.clone(), prop::sample::select(CALL_TOOLS), args())
            .prop_map(|(dt, agent, session, tool, args)| Ev::Call {
                dt,
                agent,
                session,
                tool,
                args
            }),
        1 => (dt(), agent, session, prop::collection::vec(0..SOURCES.len(), 0..=2))
            .prop_map(|(dt, agent, session, sources)| Ev::Observe {
                dt,
                agent,
                session,
                sources
            }),
        2 => (
            dt(),
            any::<usize>(),
            prop::bool::weighted(0.25),
            prop::bool::weighted(0.7),
            prop::option::weighted(0.4, 1i64..=20),
            any::<bool>()
        )
            .prop_map(|(dt, pick, by_launcher, grant, lease_s, by_approval_id)| Ev::Answer {
                dt,
                pick,
                by_launcher,
                grant,
                lease_s,
                by_approval_id
            }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(policy(), 1..=4),
        prop::bool::weighted(0.7),
        prop::bool::weighted(0.3),
        prop::collection::vec(event(), 1..=60),
    )
        .prop_map(|(policies, default_allow, unknown_allow, events)| Case {
            policies,
            default_allow,
            unknown_allow,
            events,
        })
}

// ---------------------------------------------------------------------------------------------
// The reference evaluator: whole histories, rescanned for every predicate.

fn tool_def(tool: &str) -> Option<&'static ToolDef> {
    TOOLS.iter().find(|t| t.name == tool)
}

/// A call matches X when its tool is named X or X is one of its classes; a tool missing from
/// the catalog has the single class `Unknown`.
fn matches(tool: &str, x: &str) -> bool {
    tool == x
        || match tool_def(tool) {
            Some(def) => def.classes.contains(&x),
            None => x == "Unknown",
        }
}

/// The fixed `ip_range` classes of the targets this test generates.
fn classify(v: &Value) -> &'static str {
    // A number is an IPv4 address as one integer, the way `inet_aton` and nmap read it:
    // 7 is 0.0.0.7, which no built-in range covers, so it is public.
    if v.as_u64() == Some(7) {
        return "External_Public";
    }
    match v.as_str() {
        Some("10.0.3.7" | "192.168.0.0/16") => "Internal_Private",
        // A host name outside the catalog's internal domains (none here) is public.
        Some("8.8.8.8" | "10.0.0.0/7" | "db.internal") => "External_Public",
        Some("127.0.0.1") => "Loopback",
        Some("169.254.1.1") => "Link_Local",
        Some("198.51.100.7") => "Corp_DMZ",
        None => "Unknown",
        Some(other) => panic!("no reference class for target {other}"),
    }
}

fn attribute(tool: &str, attr: &str, args: &Value) -> Option<Value> {
    let declared = tool_def(tool).and_then(|d| d.attrs.iter().find(|(a, _, _)| *a == attr));
    match declared {
        Some((_, ptr, classify_ip)) => {
            let raw = args.pointer(ptr)?;
            Some(if *classify_ip {
                json!(classify(raw))
            } else {
                raw.clone()
            })
        }
        None => args.get(attr).cloned(),
    }
}

fn key_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn lit_eq(v: &Value, lit: &Lit) -> bool {
    match (v, lit) {
        (Value::String(s), Lit::S(l)) => s == l,
        (Value::Number(n), Lit::N(l)) => n.as_f64() == Some(*l as f64),
        (Value::String(s), Lit::N(l)) => s.trim().parse::<f64>().ok() == Some(*l as f64),
        _ => false,
    }
}

#[derive(Debug, Clone)]
struct CallRec {
    id: String,
    agent: usize,
    session: Option<String>,
    tool: &'static str,
    args: Value,
}

#[derive(Debug, Default)]
struct Hist {
    /// Admitted calls in admission order: `(time, tool, args)`.
    calls: Vec<(i64, &'static str, Value)>,
    /// Data accesses: `(time, source, mode)`.
    accesses: Vec<(i64, String, String)>,
}

#[derive(Debug)]
struct Held {
    call: CallRec,
    deadline: i64,
    /// The enforced HITL policies that held the call (not covered by a lease).
    held_by: Vec<usize>,
}

struct Reference<'a> {
    policies: &'a [Pol],
    ids: Vec<String>,
    default_allow: bool,
    unknown_allow: bool,
    hist: HashMap<(Tgt, String), Hist>,
    /// `(policy, target, scope key)` → lease end (exclusive).
    leases: HashMap<(usize, Tgt, String), i64>,
    held: Vec<Held>,
}

#[derive(Debug, PartialEq, Eq)]
struct RefDecision {
    verdict: Verdict,
    policies: Vec<String>,
    shadow: Vec<String>,
}

/// Each agent here always acts with the same chain, so its name stands for its place in the
/// chain of command; a session is one human's (two humans' sessions of one id are apart).
fn scope_key(t: Tgt, agent: usize, session: Option<&str>) -> String {
    let (name, chain) = AGENTS[agent];
    let key = match t {
        Tgt::Agent => name,
        Tgt::Session => {
            return match session {
                Some(s) => format!("{} {s}", scope_key(Tgt::User, agent, None)),
                None => name.to_string(),
            }
        }
        Tgt::User => chain
            .iter()
            .copied()
            .find(|p| p.starts_with("user:"))
            .unwrap_or(name),
        Tgt::Root => chain
            .iter()
            .copied()
            .find(|p| !p.starts_with("user:"))
            .unwrap_or(name),
    };
    key.to_string()
}

const NO_HIST: &Hist = &Hist {
    calls: Vec::new(),
    accesses: Vec::new(),
};

impl<'a> Reference<'a> {
    fn new(case: &'a Case) -> Self {
        Reference {
            policies: &case.policies,
            ids: case
                .policies
                .iter()
                .enumerate()
                .map(|(i, p)| p.id(i))
                .collect(),
            default_allow: case.default_allow,
            unknown_allow: case.unknown_allow,
            hist: HashMap::new(),
            leases: HashMap::new(),
            held: Vec::new(),
        }
    }

    fn pred(&self, p: &P, c: &CallRec, now: i64, h: &Hist) -> bool {
        let in_window = |t: i64, w_s: i64| t > now - w_s * 1000;
        let in_opt_window = |t: i64, w: Option<i64>| w.is_none_or(|w| in_window(t, w));
        match p {
            P::Call(x) => matches(c.tool, x),
            P::Count {
                pat,
                op,
                n,
                window_s,
            } => {
                if !matches(c.tool, pat) {
                    return false;
                }
                let earlier = h
                    .calls
                    .iter()
                    .filter(|(t, tool, _)| in_window(*t, *window_s) && matches(tool, pat))
                    .count() as u64;
                reference_holds(*op, earlier + 1, *n)
            }
            P::Distinct {
                pat,
                attr,
                op,
                n,
                window_s,
            } => {
                if !matches(c.tool, pat) {
                    return false;
                }
                let mut set: BTreeSet<String> = h
                    .calls
                    .iter()
                    .filter(|(t, tool, _)| in_window(*t, *window_s) && matches(tool, pat))
                    .filter_map(|(_, tool, args)| attribute(tool, attr, args))
                    .map(|v| key_of(&v))
                    .collect();
                if let Some(v) = attribute(c.tool, attr, &c.args) {
                    set.insert(key_of(&v));
                }
                reference_holds(*op, set.len() as u64, *n)
            }
            P::Attr { pat, attr, test } => {
                if !matches(c.tool, pat) {
                    return false;
                }
                let Some(v) = attribute(c.tool, attr, &c.args) else {
                    return false;
                };
                match test {
                    AttrTest::Eq(l) => lit_eq(&v, l),
                    AttrTest::Ne(l) => !lit_eq(&v, l),
                    AttrTest::In(ls) => ls.iter().any(|l| lit_eq(&v, l)),
                }
            }
            P::Mode { pat, mode } => {
                matches(c.tool, pat) && tool_def(c.tool).and_then(|d| d.mode) == Some(*mode)
            }
            P::Contains { pat, within_s } => {
                matches(c.tool, pat)
                    || h.calls
                        .iter()
                        .any(|(t, tool, _)| matches(tool, pat) && in_opt_window(*t, *within_s))
            }
            P::Sequence { steps, within_s } => {
                let seq: Vec<(i64, &str)> = h
                    .calls
                    .iter()
                    .map(|(t, tool, _)| (*t, *tool))
                    .chain(std::iter::once((now, c.tool)))
                    .collect();
                (0..seq.len()).any(|start| {
                    let (t0, tool0) = seq[start];
                    if !matches(tool0, steps[0]) || !in_opt_window(t0, *within_s) {
                        return false;
                    }
                    let mut k = 1;
                    for (_, tool) in &seq[start + 1..] {
                        if k < steps.len() && matches(tool, steps[k]) {
                            k += 1;
                        }
                    }
                    k == steps.len()
                })
            }
            P::DataSource {
                source,
                mode,
                within_s,
            } => {
                let fits = |s: &str, m: &str| s == *source && mode.is_none_or(|want| want == m);
                let current = tool_def(c.tool)
                    .and_then(|d| d.data_source)
                    .is_some_and(|(s, m)| fits(s, m));
                current
                    || h.accesses
                        .iter()
                        .any(|(t, s, m)| fits(s, m) && in_opt_window(*t, *within_s))
            }
            P::Agent(a) => AGENTS[c.agent].0 == *a,
        }
    }

    fn expr(&self, e: &E, c: &CallRec, now: i64, h: &Hist) -> bool {
        match e {
            E::P(p) => self.pred(p, c, now, h),
            E::Not(inner) => !self.expr(inner, c, now, h),
            E::And(items) => items.iter().all(|i| self.expr(i, c, now, h)),
            E::Or(items) => items.iter().any(|i| self.expr(i, c, now, h)),
        }
    }

    /// Indices of the policies (enforced and shadow) whose condition holds for `c` at `now`.
    fn fired(&self, c: &CallRec, now: i64) -> Vec<usize> {
        (0..self.policies.len())
            .filter(|&i| {
                let p = &self.policies[i];
                let key = scope_key(p.target, c.agent, c.session.as_deref());
                let h = self.hist.get(&(p.target, key)).unwrap_or(NO_HIST);
                self.expr(&p.cond, c, now, h)
            })
            .collect()
    }

    fn sorted_ids(&self, idx: impl Iterator<Item = usize>) -> Vec<String> {
        let mut ids: Vec<String> = idx.map(|i| self.ids[i].clone()).collect();
        ids.sort();
        ids
    }

    fn leased(&self, pid: usize, c: &CallRec, now: i64) -> bool {
        let t = self.policies[pid].target;
        let key = scope_key(t, c.agent, c.session.as_deref());
        self.leases
            .get(&(pid, t, key))
            .is_some_and(|until| *until > now)
    }

    fn admit(&mut self, c: &CallRec, now: i64) {
        for t in TARGETS_ALL {
            let h = self
                .hist
                .entry((t, scope_key(t, c.agent, c.session.as_deref())))
                .or_default();
            h.calls.push((now, c.tool, c.args.clone()));
            if let Some((s, m)) = tool_def(c.tool).and_then(|d| d.data_source) {
                h.accesses.push((now, s.to_string(), m.to_string()));
            }
        }
    }

    fn decide(&mut self, c: &CallRec, now: i64) -> RefDecision {
        let fired = self.fired(c, now);
        let enforced: Vec<usize> = fired
            .iter()
            .copied()
            .filter(|&i| !self.policies[i].shadow)
            .collect();
        let has = |a: Act| enforced.iter().any(|&i| self.policies[i].action == a);
        let hitl: Vec<usize> = enforced
            .iter()
            .copied()
            .filter(|&i| self.policies[i].action == Act::Hitl)
            .collect();
        let unleased: Vec<usize> = hitl
            .iter()
            .copied()
            .filter(|&i| !self.leased(i, c, now))
            .collect();
        let verdict = if (tool_def(c.tool).is_none() && !self.unknown_allow) || has(Act::Deny) {
            Verdict::Deny
        } else if !unleased.is_empty() {
            Verdict::RequireApproval
        } else if has(Act::Allow) || !hitl.is_empty() || self.default_allow {
            Verdict::Allow
        } else {
            Verdict::Deny
        };
        match verdict {
            Verdict::Allow => self.admit(c, now),
            Verdict::RequireApproval => {
                let deadline_ms = unleased
                    .iter()
                    .filter_map(|&i| self.policies[i].deadline_s)
                    .min()
                    .map_or(15 * 60 * 1000, |s| s * 1000);
                self.held.push(Held {
                    call: c.clone(),
                    deadline: now + deadline_ms,
                    held_by: unleased,
                });
            }
            Verdict::Deny => {}
        }
        RefDecision {
            verdict,
            policies: self.sorted_ids(enforced.iter().copied()),
            shadow: self.sorted_ids(fired.iter().copied().filter(|&i| self.policies[i].shadow)),
        }
    }

    fn observe(&mut self, agent: usize, session: Option<&str>, sources: &[usize], now: i64) {
        for t in TARGETS_ALL {
            let h = self
                .hist
                .entry((t, scope_key(t, agent, session)))
                .or_default();
            for &s in sources {
                let (name, mode) = SOURCES[s];
                h.accesses.push((now, name.to_string(), mode.to_string()));
            }
        }
    }

    /// `Err(())` when the answer is not applied (no such held call, or a forbidden approver);
    /// otherwise the result and, for grants, the enforced policies that fired at approval time.
    fn answer(
        &mut self,
        call_id: &str,
        approver: &str,
        grant: bool,
        lease_s: Option<i64>,
        now: i64,
    ) -> Result<(ApprovalResult, Vec<String>), ()> {
        let idx = self
            .held
            .iter()
            .position(|h| h.call.id == call_id)
            .ok_or(())?;
        if now > self.held[idx].deadline {
            self.held.remove(idx);
            return Ok((ApprovalResult::Expired, Vec::new()));
        }
        let (agent, chain) = AGENTS[self.held[idx].call.agent];
        if approver == agent || chain.contains(&approver) {
            return Err(());
        }
        let held = self.held.remove(idx);
        if !grant {
            return Ok((ApprovalResult::Refused, Vec::new()));
        }
        let c = &held.call;
        let enforced: Vec<usize> = self
            .fired(c, now)
            .into_iter()
            .filter(|&i| !self.policies[i].shadow)
            .collect();
        let ids = self.sorted_ids(enforced.iter().copied());
        if enforced
            .iter()
            .any(|&i| self.policies[i].action == Act::Deny)
        {
            return Ok((ApprovalResult::GrantedButDenied, ids));
        }
        self.admit(c, now);
        if let Some(lease) = lease_s {
            for &pid in &held.held_by {
                let t = self.policies[pid].target;
                let key = scope_key(t, c.agent, c.session.as_deref());
                self.leases.insert((pid, t, key), now + lease * 1000);
            }
        }
        Ok((ApprovalResult::Granted, ids))
    }
}

// ---------------------------------------------------------------------------------------------
// Running a case.

fn policy_text(case: &Case) -> String {
    case.policies
        .iter()
        .enumerate()
        .map(|(i, p)| p.text(i))
        .collect()
}

fn build_engine(case: &Case, text: &str) -> Engine {
    let catalog_text = catalog_toml();
    let catalog = Catalog::from_toml("catalog.toml", &catalog_text).unwrap();
    let loaded = load_sources(vec![Source::new("gen.tsp", text)], catalog, &catalog_text)
        .unwrap_or_else(|e| panic!("generated policies do not compile:\n{text}\n{e}"));
    let settings = Settings {
        default_decision: if case.default_allow {
            DefaultDecision::Allow
        } else {
            DefaultDecision::Deny
        },
        unknown_tools: if case.unknown_allow {
            DefaultDecision::Allow
        } else {
            DefaultDecision::Deny
        },
        ..Settings::replay()
    };
    Engine::new(loaded.bundle, settings)
}

/// What one event produced, in a form both sides can be compared on.
#[derive(Debug, PartialEq)]
enum Seen {
    Decision(Verdict, Vec<String>),
    Approval(Result<ApprovalResult, ()>),
    Observation,
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let text = policy_text(case);
    let engine = build_engine(case, &text);
    let brief = build_engine(case, &text);
    let mut reference = Reference::new(case);
    let mut now = T0;
    let mut events: Vec<Event> = Vec::new();
    let mut seen: Vec<Seen> = Vec::new();
    let mut calls: Vec<String> = Vec::new();
    let mut approval_ids: HashMap<String, String> = HashMap::new();
    let session_name = |s: Option<u8>| s.map(|s| format!("s{s}"));
    for (step, ev) in case.events.iter().enumerate() {
        let ctx = || format!("event {step} ({ev:?}) under\n{text}");
        match ev {
            Ev::Call {
                dt,
                agent,
                session,
                tool,
                args,
            } => {
                now += dt;
                let rec = CallRec {
                    id: format!("c{step}"),
                    agent: *agent,
                    session: session_name(*session),
                    tool,
                    args: args.json(),
                };
                let call = ToolCall {
                    id: rec.id.clone(),
                    time: Some(format_time(now)),
                    agent: AGENTS[*agent].0.to_string(),
                    session: rec.session.clone(),
                    chain: AGENTS[*agent].1.iter().map(|s| s.to_string()).collect(),
                    tool: tool.to_string(),
                    args: rec.args.clone(),
                };
                let b = brief.decide_brief(&call, now);
                let event = Event::ToolCall(call);
                let Processed::Decision(d) = engine.process(&event) else {
                    panic!("a tool call gives a decision")
                };
                prop_assert_eq!(
                    (b.decision, &b.approval_id),
                    (d.decision, &d.approval_id),
                    "decide_brief (left) and decide (right) disagree on {}",
                    ctx()
                );
                let want = reference.decide(&rec, now);
                let got = RefDecision {
                    verdict: d.decision,
                    policies: sorted(d.policies.iter().map(|p| p.id.clone()).collect()),
                    shadow: sorted(d.shadow.iter().map(|p| p.id.clone()).collect()),
                };
                prop_assert_eq!(
                    &got,
                    &want,
                    "engine (left) and reference (right) disagree on {}; engine reason: {}",
                    ctx(),
                    d.reason
                );
                if let Some(a) = &d.approval_id {
                    approval_ids.insert(rec.id.clone(), a.clone());
                }
                calls.push(rec.id);
                seen.push(Seen::Decision(got.verdict, got.policies));
                events.push(event);
            }
            Ev::Observe {
                dt,
                agent,
                session,
                sources,
            } => {
                now += dt;
                let event = Event::Observation(Observation {
                    id: Some(format!("o{step}")),
                    time: Some(format_time(now)),
                    agent: AGENTS[*agent].0.to_string(),
                    session: session_name(*session),
                    chain: AGENTS[*agent].1.iter().map(|s| s.to_string()).collect(),
                    call_id: None,
                    tool: None,
                    data_sources: sources
                        .iter()
                        .map(|&s| DataAccess {
                            name: SOURCES[s].0.to_string(),
                            mode: SOURCES[s].1.to_string(),
                        })
                        .collect(),
                    result: None,
                });
                let Processed::Observation(r) = engine.process(&event) else {
                    panic!("an observation gives an observation result")
                };
                let Processed::Observation(_) = brief.process(&event) else {
                    panic!("an observation gives an observation result")
                };
                prop_assert!(r.is_ok(), "observation rejected: {:?}", r);
                let session = session_name(*session);
                reference.observe(*agent, session.as_deref(), sources, now);
                seen.push(Seen::Observation);
                events.push(event);
            }
            Ev::Answer {
                dt,
                pick,
                by_launcher,
                grant,
                lease_s,
                by_approval_id,
            } => {
                now += dt;
                let call_id = if reference.held.is_empty() {
                    if calls.is_empty() {
                        "nothing-held".to_string()
                    } else {
                        calls[pick % calls.len()].clone()
                    }
                } else {
                    reference.held[pick % reference.held.len()].call.id.clone()
                };
                let approver = if *by_launcher {
                    "user:u1"
                } else {
                    "user:approver"
                };
                let approval_id = if *by_approval_id {
                    approval_ids.get(&call_id).cloned()
                } else {
                    None
                };
                let event = Event::Approval(ApprovalAnswer {
                    call_id: approval_id.is_none().then(|| call_id.clone()),
                    approval_id,
                    approver: approver.to_string(),
                    groups: Vec::new(),
                    grant: *grant,
                    lease: lease_s.map(|s| format!("{s}s")),
                    time: Some(format_time(now)),
                });
                let Processed::Approval(r) = engine.process(&event) else {
                    panic!("an approval gives an approval result")
                };
                let Processed::Approval(b) = brief.process(&event) else {
                    panic!("an approval gives an approval result")
                };
                prop_assert_eq!(
                    b.as_ref().map_err(ToString::to_string),
                    r.as_ref().map_err(ToString::to_string),
                    "after decide_brief (left) and decide (right), answers differ at {}",
                    ctx()
                );
                let want = reference.answer(&call_id, approver, *grant, *lease_s, now);
                let got = match &r {
                    Ok(o) => match o.result {
                        ApprovalResult::Granted | ApprovalResult::GrantedButDenied => Ok((
                            o.result,
                            sorted(o.policies.iter().map(|p| p.id.clone()).collect()),
                        )),
                        other => Ok((other, Vec::new())),
                    },
                    Err(_) => Err(()),
                };
                prop_assert_eq!(
                    &got,
                    &want,
                    "engine (left) and reference (right) disagree on the answer for {} at {}; \
                     engine said {:?}",
                    call_id,
                    ctx(),
                    r
                );
                if let Ok(o) = &r {
                    let admitted = o.result == ApprovalResult::Granted;
                    prop_assert_eq!(o.decision == Verdict::Allow, admitted);
                }
                seen.push(Seen::Approval(got.map(|g| g.0)));
                events.push(event);
            }
        }
    }

    prop_assert_eq!(
        brief.snapshot(),
        engine.snapshot(),
        "decide_brief (left) and decide (right) leave different monitor states"
    );
    prop_assert_eq!(
        serde_json::to_value(brief.pending()).unwrap(),
        serde_json::to_value(engine.pending()).unwrap(),
        "decide_brief (left) and decide (right) leave different held calls"
    );

    // The same trace as JSONL, parsed back and replayed through a fresh engine: same answers.
    let jsonl: String = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    let parsed = parse_trace("trace.jsonl", &jsonl).unwrap();
    prop_assert_eq!(&parsed, &events);
    let fresh = build_engine(case, &text);
    let replayed: Vec<Seen> = replay(&fresh, &parsed)
        .into_iter()
        .map(|s| match s {
            Processed::Decision(d) => Seen::Decision(
                d.decision,
                sorted(d.policies.iter().map(|p| p.id.clone()).collect()),
            ),
            Processed::Approval(r) => Seen::Approval(r.map(|o| o.result).map_err(|_| ())),
            _ => Seen::Observation,
        })
        .collect();
    prop_assert_eq!(
        replayed,
        seen,
        "replay::replay differs from event-by-event processing"
    );
    Ok(())
}

/// 256 cases unless `PROPTEST_CASES` says otherwise (`PROPTEST_RNG_SEED` pins the seed).
fn config() -> ProptestConfig {
    let defaults = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            defaults.cases
        } else {
            256
        },
        failure_persistence: None,
        ..defaults
    }
}

proptest! {
    #![proptest_config(config())]

    /// The incremental engine decides every call and answer exactly as the naive reference.
    #[test]
    fn engine_agrees_with_naive_reference(case in case()) {
        run_case(&case)?;
    }
}

/// The generated catalog parses, and a few hand-written cases pin the reference itself, so a
/// bug shared by both sides of the differential test would still have to get past these.
#[test]
fn reference_sanity() {
    let catalog_text = catalog_toml();
    let catalog = Catalog::from_toml("catalog.toml", &catalog_text).unwrap();
    assert_eq!(catalog.tools.len(), TOOLS.len());
    assert!(matches("nmap_scan", "NetTool"));
    assert!(matches("mystery_tool", "Unknown"));
    assert!(matches("mystery_tool", "mystery_tool"));
    assert!(matches("ScanTool", "ScanTool"));
    assert!(!matches("ScanTool", "NetTool"));
    assert_eq!(
        attribute(
            "nmap_scan",
            "Target_IP_Range",
            &json!({"target": "8.8.8.8"})
        ),
        Some(json!("External_Public"))
    );
    assert_eq!(
        attribute(
            "service_probe",
            "Target_IP_Range",
            &json!({"target": "8.8.8.8", "Target_IP_Range": "Internal_Private"})
        ),
        Some(json!("Internal_Private"))
    );
    assert_eq!(scope_key(Tgt::Root, 1, None), AGENTS[0].0);
    assert_eq!(scope_key(Tgt::Root, 0, None), AGENTS[0].0);
    assert_eq!(scope_key(Tgt::User, 3, Some("s1")), "user:u2");
    assert_eq!(scope_key(Tgt::Session, 3, None), AGENTS[3].0);

    // Sequence('ScanTool', 'NetTool'): one nmap_scan cannot serve both steps, two can.
    let case = Case {
        policies: vec![Pol {
            named: true,
            action: Act::Deny,
            target: Tgt::Root,
            explicit_target: true,
            cond: E::P(P::Sequence {
                steps: vec!["ScanTool", "NetTool"],
                within_s: Some(5),
            }),
            shadow: false,
            deadline_s: None,
        }],
        default_allow: true,
        unknown_allow: false,
        events: Vec::new(),
    };
    let mut r = Reference::new(&case);
    let scan = |id: &str, agent| CallRec {
        id: id.into(),
        agent,
        session: None,
        tool: "nmap_scan",
        args: json!({}),
    };
    assert_eq!(r.decide(&scan("a", 1), T0).verdict, Verdict::Allow);
    assert_eq!(r.decide(&scan("b", 2), T0 + 4_999).verdict, Verdict::Deny);
    assert_eq!(r.decide(&scan("c", 2), T0 + 5_000).verdict, Verdict::Allow);
}
