//! Tests on values as a policy author reads them: `MATCHES` ignores the case of ASCII letters,
//! and a list value (the recipients of a mail) passes a test only when every element does, while
//! `!=`, `NOT IN` and `NOT (…)` hold when some element fails — so an allow-list cannot be widened
//! by adding one outside element, and a deny written over what is allowed catches it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{json, Value};
use truststack_policy::ast::{Expr, Pred, Test};
use truststack_policy::compile::test_value;
use truststack_policy::parser::parse;
use truststack_policy::Source;

/// The test of `Tool_Call('send_email').to <test>`.
fn test(text: &str) -> Test {
    let source = Source::new(
        "t.tsp",
        format!("POLICY: ACTION: DENY IF Tool_Call('send_email').to {text}"),
    );
    let mut parsed = parse(&source);
    assert!(
        parsed.diagnostics.is_empty(),
        "{text}: {:?}",
        parsed.diagnostics
    );
    match parsed.policies.remove(0).condition {
        Expr::Pred(Pred::Field { test, .. }, _) => test,
        other => panic!("{text}: {other:?}"),
    }
}

fn holds(t: &str, value: Value) -> bool {
    test_value(&test(t), Some(&value))
}

#[test]
fn matches_ignores_the_case_of_ascii_letters() {
    let ours = "MATCHES '*@acme.example'";
    assert!(holds(ours, json!("boss@acme.example")));
    assert!(holds(ours, json!("Boss@ACME.EXAMPLE")));
    assert!(!holds(ours, json!("boss@acme.example.evil")));
    assert!(holds(
        "MATCHES '*@ACME.example'",
        json!("boss@acme.EXAMPLE")
    ));
    // `==`, `IN` and `STARTS_WITH` compare exactly.
    assert!(!holds("== 'boss@acme.example'", json!("Boss@acme.example")));
    assert!(!holds("STARTS_WITH 'boss'", json!("Boss@acme.example")));
}

#[test]
fn a_list_passes_a_test_when_every_element_does() {
    let ours = "MATCHES '*@acme.example'";
    // The allow-list direction: every recipient must be ours.
    assert!(holds(ours, json!(["boss@acme.example"])));
    assert!(holds(
        ours,
        json!(["boss@acme.example", "Ops@Acme.Example"])
    ));
    assert!(!holds(
        ours,
        json!(["boss@acme.example", "drop@evil.example"])
    ));
    // Nested lists are flattened, and an empty list passes nothing, like a missing value.
    assert!(holds(ours, json!([["a@acme.example"], "b@acme.example"])));
    assert!(!holds(ours, json!([])));
    assert!(!holds("!= 'x'", json!([])));
    assert!(!holds("NOT IN ['x']", json!([])));

    assert!(holds(
        "IN ['a@acme.example', 'b@acme.example']",
        json!(["a@acme.example", "b@acme.example"])
    ));
    assert!(!holds(
        "IN ['a@acme.example']",
        json!(["a@acme.example", "c@acme.example"])
    ));
    assert!(holds(
        "STARTS_WITH 'https://'",
        json!(["https://a", "https://b"])
    ));
    assert!(holds(
        "IN_CIDR '10.0.0.0/8'",
        json!(["10.0.0.1", "10.2.0.0/16"])
    ));
    assert!(!holds(
        "IN_CIDR '10.0.0.0/8'",
        json!(["10.0.0.1", "8.8.8.8"])
    ));
    assert!(holds("> 3", json!([4, 5])));
    assert!(!holds("> 3", json!([4, 2])));
}

#[test]
fn negated_tests_hold_when_some_element_fails() {
    // The deny direction: some recipient is not on the list.
    assert!(holds(
        "NOT IN ['a@acme.example']",
        json!(["a@acme.example", "x@evil.example"])
    ));
    assert!(!holds(
        "NOT IN ['a@acme.example']",
        json!(["a@acme.example"])
    ));
    assert!(holds(
        "!= 'a@acme.example'",
        json!(["a@acme.example", "b@acme.example"])
    ));
    assert!(!holds(
        "!= 'a@acme.example'",
        json!(["a@acme.example", "a@acme.example"])
    ));
}

proptest! {
    /// Over any list of addresses, `!=` and `NOT IN` are exactly the negations of `==` and
    /// `IN`, and a positive test holds iff it holds for every element alone.
    #[test]
    fn list_semantics_agree_with_the_elements(
        users in proptest::collection::vec("[a-cA-C]{1,2}@(acme|ACME|evil)\\.example", 1..5),
    ) {
        let list = json!(users);
        for (positive, negative) in [
            ("== 'a@acme.example'", "!= 'a@acme.example'"),
            ("IN ['a@acme.example', 'b@acme.example']", "NOT IN ['a@acme.example', 'b@acme.example']"),
        ] {
            prop_assert_eq!(holds(negative, list.clone()), !holds(positive, list.clone()));
        }
        for t in ["MATCHES '*@acme.example'", "== 'a@acme.example'", "STARTS_WITH 'a'"] {
            let each = users.iter().all(|u| holds(t, json!(u)));
            prop_assert_eq!(holds(t, list.clone()), each);
        }
    }
}
