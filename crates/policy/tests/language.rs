//! The policy language: the seed's policies as printed, every construct, round trips through
//! the printer, and never a panic on any input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use truststack_policy::ast::{
    Action, CallField, CmpOp, ContextField, Expr, Literal, Mode, Pattern, Pred, Quant, Target,
    Test, ValueExpr, ValueFn, ValueTest,
};
use truststack_policy::parser::parse;
use truststack_policy::{fuzz_entry, Source};

fn parse_ok(text: &str) -> Vec<truststack_policy::Policy> {
    let parsed = parse(&Source::new("t.tsp", text));
    assert!(
        parsed.diagnostics.is_empty(),
        "{text}\n{:?}",
        parsed.diagnostics
    );
    parsed.policies
}

fn condition(text: &str) -> Expr {
    let mut p = parse_ok(&format!("POLICY: ACTION: DENY IF {text}"));
    p.remove(0).condition
}

fn pred(text: &str) -> Pred {
    match condition(text) {
        Expr::Pred(p, _) => p,
        other => panic!("{text}: not a single predicate: {other:?}"),
    }
}

const SEED: &str = include_str!("../../../examples/gtg1002/policies/seed.tsp");

#[test]
fn seed_policies_parse_exactly_as_printed() {
    assert!(
        SEED.contains('’') && SEED.contains('‘'),
        "the example keeps the typographic quotes"
    );
    let parsed = parse(&Source::new("examples/gtg1002/policies/seed.tsp", SEED));
    assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
    let policies = parsed.policies;
    assert_eq!(policies.len(), 3);
    let ids: Vec<&str> = policies.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["seed#1", "seed#2", "seed#3"]);

    let p1 = &policies[0];
    assert_eq!(
        (p1.action, p1.target, p1.mode),
        (Action::Deny, Target::AgentIdentity, Mode::Enforce)
    );
    let Expr::Or(items) = &p1.condition else {
        panic!("{:?}", p1.condition)
    };
    assert!(
        matches!(&items[0], Expr::Pred(Pred::Count { pattern, op: CmpOp::Gt, n: 100, window_ms: 300_000 }, _) if pattern == "ScanTool")
    );
    assert!(
        matches!(&items[1], Expr::Pred(Pred::Field { pattern, field: CallField::Attr(a), test: Test::Cmp(CmpOp::Eq, Literal::Str(v)) }, _)
        if pattern == "ScanTool" && a == "Target_IP_Range" && v == "External_Public")
    );

    let p2 = &policies[1];
    assert_eq!(p2.action, Action::RequireHitl);
    let Expr::And(items) = &p2.condition else {
        panic!()
    };
    let names: Vec<&str> = items
        .iter()
        .map(|i| match i {
            Expr::Pred(
                Pred::Contains {
                    pattern,
                    window_ms: None,
                },
                _,
            ) => pattern.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["ScanTool", "CodeAnalysisTool", "ExploitationTool"]);

    let p3 = &policies[2];
    let Expr::And(items) = &p3.condition else {
        panic!()
    };
    assert!(
        matches!(&items[0], Expr::Pred(Pred::DataSource { source, mode: Some(m), window_ms: None }, _) if source == "Internal_Prod_DB" && m == "read")
    );
    assert!(
        matches!(&items[1], Expr::Pred(Pred::Field { pattern, field: CallField::Mode, test: Test::Cmp(CmpOp::Eq, Literal::Str(m)) }, _) if pattern == "DataExfiltration" && m == "write_external")
    );
}

#[test]
fn every_quote_style_is_a_string() {
    for q in ["'X'", "‘X’", "’X’", "\"X\"", "“X”", "”X”"] {
        assert_eq!(
            pred(&format!("Trajectory_Contains({q})")),
            Pred::Contains {
                pattern: "X".into(),
                window_ms: None
            }
        );
    }
}

#[test]
fn clauses_names_and_comments() {
    let p = parse_ok(
        "# a comment\n// another\nPOLICY escalation-gate:\n  ACTION: REQUIRE_HITL  TARGET: delegation_root\n  IF Trajectory_Contains('A') # trailing\n  REASON: \"needs a human\"\n  APPROVERS: security-oncall\n  MODE: shadow\n  DEADLINE: 10min\nPOLICY 'quoted id': ACTION: ALLOW TARGET: session IF Tool_Call('read_docs')\npolicy lower: action: deny target: user if tool_call('x') and not tool_call('y') or tool_call('z')",
    );
    assert_eq!(p.len(), 3);
    assert_eq!(p[0].id, "escalation-gate");
    assert_eq!(p[0].target, Target::DelegationRoot);
    assert_eq!(p[0].reason.as_deref(), Some("needs a human"));
    assert_eq!(p[0].approvers.as_deref(), Some("security-oncall"));
    assert_eq!(p[0].mode, Mode::Shadow);
    assert_eq!(p[0].deadline_ms, Some(600_000));
    assert_eq!(
        (p[1].id.as_str(), p[1].action, p[1].target),
        ("quoted id", Action::Allow, Target::Session)
    );
    assert_eq!(p[2].target, Target::User);
    // AND binds tighter than OR; NOT tighter than AND.
    let Expr::Or(items) = &p[2].condition else {
        panic!("{:?}", p[2].condition)
    };
    assert!(matches!(&items[0], Expr::And(a) if matches!(&a[1], Expr::Not(_))));
    assert!(
        parse_ok("POLICY: ACTION: DENY IF Tool_Call('x')")[0].target == Target::AgentIdentity,
        "TARGET defaults to agent_identity"
    );
}

#[test]
fn every_predicate_and_test() {
    let cases: &[(&str, Pred)] = &[
        (
            "Tool_Call('X')",
            Pred::Call {
                pattern: "X".into(),
            },
        ),
        (
            "Tool_Call('X').Count >= 3 calls/30s",
            Pred::Count {
                pattern: "X".into(),
                op: CmpOp::Ge,
                n: 3,
                window_ms: 30_000,
            },
        ),
        (
            "Tool_Call('X').Count > 10 /1h",
            Pred::Count {
                pattern: "X".into(),
                op: CmpOp::Gt,
                n: 10,
                window_ms: 3_600_000,
            },
        ),
        (
            "Tool_Call('X').Count > 10 requests/min",
            Pred::Count {
                pattern: "X".into(),
                op: CmpOp::Gt,
                n: 10,
                window_ms: 60_000,
            },
        ),
        (
            "Tool_Call('X').Count < 2 requests/500ms",
            Pred::Count {
                pattern: "X".into(),
                op: CmpOp::Lt,
                n: 2,
                window_ms: 500,
            },
        ),
        (
            "Tool_Call('ScanTool').Distinct('target') > 20 values/10min",
            Pred::Distinct {
                pattern: "ScanTool".into(),
                attr: "target".into(),
                op: CmpOp::Gt,
                n: 20,
                window_ms: 600_000,
            },
        ),
        (
            "Tool_Call('ScanTool').Distinct('target').Count > 20 /2d",
            Pred::Distinct {
                pattern: "ScanTool".into(),
                attr: "target".into(),
                op: CmpOp::Gt,
                n: 20,
                window_ms: 172_800_000,
            },
        ),
        (
            "Tool_Call('X').size <= 1.5",
            Pred::Field {
                pattern: "X".into(),
                field: CallField::Attr("size".into()),
                test: Test::Cmp(CmpOp::Le, Literal::Num(1.5)),
            },
        ),
        (
            "Tool_Call('X').env != 'prod'",
            Pred::Field {
                pattern: "X".into(),
                field: CallField::Attr("env".into()),
                test: Test::Cmp(CmpOp::Ne, Literal::Str("prod".into())),
            },
        ),
        (
            "Tool_Call('X').env IN ['prod', 'staging']",
            Pred::Field {
                pattern: "X".into(),
                field: CallField::Attr("env".into()),
                test: Test::In(vec![
                    Literal::Str("prod".into()),
                    Literal::Str("staging".into()),
                ]),
            },
        ),
        (
            "Tool_Call('X').env NOT IN ['dev']",
            Pred::Field {
                pattern: "X".into(),
                field: CallField::Attr("env".into()),
                test: Test::NotIn(vec![Literal::Str("dev".into())]),
            },
        ),
        (
            "Tool_Call('X').url MATCHES 'https://*.acme.example/*'",
            Pred::Field {
                pattern: "X".into(),
                field: CallField::Attr("url".into()),
                test: Test::Matches("https://*.acme.example/*".into()),
            },
        ),
        (
            "Tool_Call('X').path STARTS_WITH '/etc/'",
            Pred::Field {
                pattern: "X".into(),
                field: CallField::Attr("path".into()),
                test: Test::StartsWith("/etc/".into()),
            },
        ),
        (
            "Tool_Call('X').target IN_CIDR ['10.0.0.0/8', '192.168.1.7']",
            Pred::Field {
                pattern: "X".into(),
                field: CallField::Attr("target".into()),
                test: Test::InCidr(vec![
                    "10.0.0.0/8".parse().unwrap(),
                    "192.168.1.7/32".parse().unwrap(),
                ]),
            },
        ),
        (
            "Tool_Call('X') == 'write_external'",
            Pred::Field {
                pattern: "X".into(),
                field: CallField::Mode,
                test: Test::Cmp(CmpOp::Eq, Literal::Str("write_external".into())),
            },
        ),
        (
            "Trajectory_Contains('X') WITHIN 10min",
            Pred::Contains {
                pattern: "X".into(),
                window_ms: Some(600_000),
            },
        ),
        (
            "Sequence('A', 'B', 'C')",
            Pred::Sequence {
                steps: vec!["A".into(), "B".into(), "C".into()],
                window_ms: None,
            },
        ),
        (
            "Sequence('A', 'B') WITHIN 1h",
            Pred::Sequence {
                steps: vec!["A".into(), "B".into()],
                window_ms: Some(3_600_000),
            },
        ),
        (
            "DataSource('D')",
            Pred::DataSource {
                source: "D".into(),
                mode: None,
                window_ms: None,
            },
        ),
        (
            "DataSource('D') == 'read' WITHIN 1d",
            Pred::DataSource {
                source: "D".into(),
                mode: Some("read".into()),
                window_ms: Some(86_400_000),
            },
        ),
        (
            "Chain_Contains('user:bob')",
            Pred::ChainContains {
                principal: "user:bob".into(),
            },
        ),
        (
            "Agent MATCHES 'spiffe://acme.example/agent/recon-*'",
            Pred::Context {
                field: ContextField::Agent,
                test: Test::Matches("spiffe://acme.example/agent/recon-*".into()),
            },
        ),
        (
            "User == 'user:alice'",
            Pred::Context {
                field: ContextField::User,
                test: Test::Cmp(CmpOp::Eq, Literal::Str("user:alice".into())),
            },
        ),
        (
            "Session STARTS_WITH 'ci-'",
            Pred::Context {
                field: ContextField::Session,
                test: Test::StartsWith("ci-".into()),
            },
        ),
        (
            "Root == 'spiffe://a/agent/o'",
            Pred::Context {
                field: ContextField::Root,
                test: Test::Cmp(CmpOp::Eq, Literal::Str("spiffe://a/agent/o".into())),
            },
        ),
        (
            "Tool IN ['a', 'b']",
            Pred::Context {
                field: ContextField::Tool,
                test: Test::In(vec![Literal::Str("a".into()), Literal::Str("b".into())]),
            },
        ),
        (
            "Depth > 2",
            Pred::Context {
                field: ContextField::Depth,
                test: Test::Cmp(CmpOp::Gt, Literal::Num(2.0)),
            },
        ),
        (
            "Arg('/recipient') FROM 'user'",
            Pred::Value {
                quant: Quant::Any,
                value: ValueExpr::Arg("/recipient".into()),
                test: ValueTest::From(vec!["user".into()]),
            },
        ),
        (
            "ALL Arg('/recipients/*') FROM ['user', 'trusted']",
            Pred::Value {
                quant: Quant::All,
                value: ValueExpr::Arg("/recipients/*".into()),
                test: ValueTest::From(vec!["user".into(), "trusted".into()]),
            },
        ),
        (
            "Provenance(Arg('/iban')) == 'untrusted'",
            Pred::Value {
                quant: Quant::Any,
                value: ValueExpr::Call(
                    ValueFn::Provenance,
                    Box::new(ValueExpr::Arg("/iban".into())),
                ),
                test: ValueTest::Test(Test::Cmp(CmpOp::Eq, Literal::Str("untrusted".into()))),
            },
        ),
        (
            "Arg('/hotel') IN Results('search_hotels', 'HotelSearch')",
            Pred::Value {
                quant: Quant::Any,
                value: ValueExpr::Arg("/hotel".into()),
                test: ValueTest::InResults(vec!["search_hotels".into(), "HotelSearch".into()]),
            },
        ),
        (
            "ALL Email_Domain(Arg('Recipient')) IN ['acme.example']",
            Pred::Value {
                quant: Quant::All,
                value: ValueExpr::Call(
                    ValueFn::EmailDomain,
                    Box::new(ValueExpr::Arg("Recipient".into())),
                ),
                test: ValueTest::Test(Test::In(vec![Literal::Str("acme.example".into())])),
            },
        ),
        (
            "Url_Host(Arg('/url')) MATCHES '*.acme.example'",
            Pred::Value {
                quant: Quant::Any,
                value: ValueExpr::Call(ValueFn::UrlHost, Box::new(ValueExpr::Arg("/url".into()))),
                test: ValueTest::Test(Test::Matches("*.acme.example".into())),
            },
        ),
        (
            "Length(Arg('/body')) > 2000",
            Pred::Value {
                quant: Quant::Any,
                value: ValueExpr::Call(ValueFn::Length, Box::new(ValueExpr::Arg("/body".into()))),
                test: ValueTest::Test(Test::Cmp(CmpOp::Gt, Literal::Num(2000.0))),
            },
        ),
        (
            "Arg('/amount') >= 1000.5",
            Pred::Value {
                quant: Quant::Any,
                value: ValueExpr::Arg("/amount".into()),
                test: ValueTest::Test(Test::Cmp(CmpOp::Ge, Literal::Num(1000.5))),
            },
        ),
        (
            "Lower(Arg('/to')) REGEX '^[a-z.]+@acme[.]example$'",
            Pred::Value {
                quant: Quant::Any,
                value: ValueExpr::Call(ValueFn::Lower, Box::new(ValueExpr::Arg("/to".into()))),
                test: ValueTest::Test(Test::Regex(Pattern(
                    regex::Regex::new("^[a-z.]+@acme[.]example$").unwrap(),
                ))),
            },
        ),
        (
            "Tokens(Arg('/body')) IN Results('ReadsPersonal')",
            Pred::Value {
                quant: Quant::Any,
                value: ValueExpr::Call(ValueFn::Tokens, Box::new(ValueExpr::Arg("/body".into()))),
                test: ValueTest::InResults(vec!["ReadsPersonal".into()]),
            },
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&pred(text), want, "{text}");
        // The printer writes what the parser reads.
        assert_eq!(&pred(&want.to_string()), want, "printed: {want}");
    }
}

/// Renders the diagnostics of `text` the way `truststack policy check` prints them.
fn diagnostics(name: &str, text: &str, catalog: &truststack_policy::Catalog) -> String {
    let sources = [Source::new(name, text)];
    let (_, report) = truststack_policy::parse_and_check(&sources, catalog);
    report.render(&sources)
}

#[test]
fn golden_diagnostics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let catalog_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/gtg1002/catalog.toml");
    let catalog = truststack_policy::Catalog::load(&catalog_path).unwrap();
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tsp"))
    {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = format!("golden/{}", path.file_name().unwrap().to_string_lossy());
        let got = diagnostics(&name, &text, &catalog);
        let expected_path = path.with_extension("txt");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&expected_path, &got).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        assert_eq!(
            got,
            expected,
            "{} (run with UPDATE_GOLDEN=1 to accept)",
            path.display()
        );
        assert!(
            !got.is_empty(),
            "{}: a golden case must produce a diagnostic",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} golden cases");
}

// ---- property tests ----

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "ScanTool",
        "CodeAnalysisTool",
        "nmap_scan",
        "http_upload",
        "Unknown",
        "x",
    ])
    .prop_map(String::from)
}

fn window() -> impl Strategy<Value = i64> {
    prop::sample::select(vec![
        500i64, 1_000, 30_000, 60_000, 300_000, 3_600_000, 86_400_000,
    ])
}

fn op() -> impl Strategy<Value = CmpOp> {
    prop::sample::select(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ])
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        "[a-zA-Z0-9_:/.* -]{0,12}".prop_map(Literal::Str),
        (0u32..10_000).prop_map(|n| Literal::Num(f64::from(n))),
    ]
}

fn test_strategy() -> impl Strategy<Value = Test> {
    prop_oneof![
        (op(), literal()).prop_map(|(o, l)| Test::Cmp(o, l)),
        prop::collection::vec(literal(), 0..3).prop_map(Test::In),
        prop::collection::vec(literal(), 0..3).prop_map(Test::NotIn),
        "[a-z*?/.]{0,10}".prop_map(Test::Matches),
        "[a-z/]{0,10}".prop_map(Test::StartsWith),
        Just(Test::InCidr(vec!["10.0.0.0/8".parse().unwrap()])),
        "[a-z]{1,6}[+*]?".prop_map(|r| Test::Regex(Pattern(regex::Regex::new(&r).unwrap()))),
    ]
}

fn value_strategy() -> impl Strategy<Value = ValueExpr> {
    let arg = prop_oneof!["/[a-z]{1,6}(/[*])?", "[A-Z][a-z_]{1,8}"].prop_map(ValueExpr::Arg);
    arg.prop_recursive(2, 4, 1, |inner| {
        (prop::sample::select(ValueFn::ALL.to_vec()), inner)
            .prop_map(|(f, v)| ValueExpr::Call(f, Box::new(v)))
    })
}

fn value_test_strategy() -> impl Strategy<Value = ValueTest> {
    prop_oneof![
        test_strategy().prop_map(ValueTest::Test),
        prop::collection::vec(
            prop::sample::select(vec!["user", "trusted", "untrusted", "none"]),
            1..3
        )
        .prop_map(|v| ValueTest::From(v.into_iter().map(String::from).collect())),
        prop::collection::vec(name(), 1..3).prop_map(ValueTest::InResults),
    ]
}

fn pred_strategy() -> impl Strategy<Value = Pred> {
    prop_oneof![
        name().prop_map(|pattern| Pred::Call { pattern }),
        (name(), op(), 0u64..200, window()).prop_map(|(pattern, op, n, window_ms)| Pred::Count {
            pattern,
            op,
            n,
            window_ms
        }),
        (name(), "[a-z_]{1,8}", op(), 0u64..50, window()).prop_map(
            |(pattern, attr, op, n, window_ms)| Pred::Distinct {
                pattern,
                attr,
                op,
                n,
                window_ms
            }
        ),
        (name(), "[A-Za-z][A-Za-z_]{0,8}", test_strategy())
            .prop_filter(
                "member names Count and Distinct are reserved",
                |(_, a, _)| !a.eq_ignore_ascii_case("count") && !a.eq_ignore_ascii_case("distinct")
            )
            .prop_map(|(pattern, a, test)| Pred::Field {
                pattern,
                field: CallField::Attr(a),
                test
            }),
        (name(), test_strategy()).prop_map(|(pattern, test)| Pred::Field {
            pattern,
            field: CallField::Mode,
            test
        }),
        (name(), prop::option::of(window()))
            .prop_map(|(pattern, window_ms)| Pred::Contains { pattern, window_ms }),
        (
            prop::collection::vec(name(), 2..4),
            prop::option::of(window())
        )
            .prop_map(|(steps, window_ms)| Pred::Sequence { steps, window_ms }),
        (
            "[A-Za-z_]{1,10}",
            prop::option::of(prop::sample::select(vec!["read", "write"])),
            prop::option::of(window())
        )
            .prop_map(|(source, mode, window_ms)| Pred::DataSource {
                source,
                mode: mode.map(String::from),
                window_ms
            }),
        "user:[a-z]{1,6}".prop_map(|principal| Pred::ChainContains { principal }),
        (
            prop::sample::select(vec![
                ContextField::Agent,
                ContextField::User,
                ContextField::Session,
                ContextField::Root,
                ContextField::Tool,
                ContextField::Depth
            ]),
            test_strategy()
        )
            .prop_map(|(field, test)| Pred::Context { field, test }),
        (
            prop::sample::select(vec![Quant::Any, Quant::All]),
            value_strategy(),
            value_test_strategy()
        )
            .prop_map(|(quant, value, test)| Pred::Value { quant, value, test }),
    ]
}

fn expr_strategy() -> impl Strategy<Value = Expr> {
    let leaf = pred_strategy().prop_map(|p| Expr::Pred(p, Default::default()));
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
            inner.prop_map(|e| Expr::Not(Box::new(e))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Printing a policy and parsing it back gives the same policy.
    #[test]
    fn print_parse_round_trip(expr in expr_strategy(), action in prop::sample::select(vec![Action::Deny, Action::RequireHitl, Action::Allow]),
                              target in prop::sample::select(Target::ALL.to_vec()), shadow in any::<bool>(), reason in prop::option::of("[a-zA-Z ,.]{0,20}")) {
        let text = format!(
            "POLICY p-1:\n  ACTION: {}\n  TARGET: {}\n  IF {expr}\n{}{}",
            action.as_str(),
            target.as_str(),
            reason.as_ref().map(|r| format!("  REASON: '{r}'\n")).unwrap_or_default(),
            if shadow { "  MODE: shadow\n" } else { "" },
        );
        let first = parse(&Source::new("a.tsp", text.as_str()));
        prop_assert!(first.diagnostics.is_empty(), "{}\n{:?}", text, first.diagnostics);
        let printed = first.policies[0].to_string();
        let second = parse(&Source::new("b.tsp", printed.as_str()));
        prop_assert!(second.diagnostics.is_empty(), "{}\n{:?}", printed, second.diagnostics);
        prop_assert_eq!(second.policies[0].to_string(), printed);
        prop_assert_eq!(second.policies[0].action, action);
        prop_assert_eq!(second.policies[0].target, target);
    }

    /// Arbitrary bytes never panic the parser, checker, renderer or compiler.
    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400)) {
        fuzz_entry(&data);
    }

    /// Token soup built from the language's own words never panics either, and every
    /// diagnostic points inside the text.
    #[test]
    fn token_soup_never_panics(words in prop::collection::vec(prop::sample::select(vec![
        "POLICY", "ACTION", ":", "DENY", "REQUIRE_HITL", "TARGET", "agent_identity", "IF", "(", ")", "AND", "OR", "NOT",
        "Tool_Call", "'ScanTool'", "’X’", "‘", ".", "Count", ">", "100", "requests", "/", "5min", "5", "mins", "WITHIN",
        "Sequence", ",", "DataSource", "==", "IN", "[", "]", "Distinct", "\"", "#", "\n", "REASON", "MODE", "shadow", "é", "∀",
    ]), 0..60)) {
        let text = words.join(" ");
        fuzz_entry(text.as_bytes());
        let parsed = parse(&Source::new("soup.tsp", text.as_str()));
        for d in parsed.diagnostics {
            prop_assert!(d.span.start <= text.len() && d.span.end <= text.len());
        }
    }
}

/// Every policy example in docs/policy-language.md parses without errors against the example
/// catalog, so the documentation cannot drift from the language.
#[test]
fn documented_examples_parse() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/policy-language.md"),
    )
    .unwrap();
    let catalog_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/gtg1002/catalog.toml");
    let catalog = truststack_policy::Catalog::load(&catalog_path).unwrap();
    let mut blocks = 0;
    for block in doc.split("```text\n").skip(1) {
        let body = block.split("```").next().unwrap();
        if !body.trim_start().starts_with("POLICY") && !body.trim_start().starts_with('#') {
            continue;
        }
        let sources = [Source::new("doc.tsp", body)];
        let (policies, report) = truststack_policy::parse_and_check(&sources, &catalog);
        assert!(!report.has_errors(), "{body}\n{}", report.render(&sources));
        assert!(!policies.is_empty());
        blocks += 1;
    }
    assert!(blocks >= 3, "found {blocks} policy blocks");
}
