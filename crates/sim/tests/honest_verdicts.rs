//! Verdicts that must not claim more than was proved: a gate nobody may grant is not a gate, a
//! bound hit is unknown, waits take time, Monte Carlo agrees with the exhaustive search or says
//! why not, and a goal made impossible by a manifest mistake is not safe.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use truststack_policy::Action;
use truststack_sim::fix::Change;
use truststack_sim::{analyse, remediate, Analysis, Manifest, McOptions, Options, Status, World};

mod common;
use common::CATALOG;
use truststack_testkit::assert_contains;

fn world(text: &str) -> World {
    let m = Manifest::parse(Path::new("hand.toml"), &format!("{text}\n{CATALOG}")).unwrap();
    World::build(m).unwrap()
}

fn run(text: &str) -> Analysis {
    analyse(&world(text), &Options::default())
}

fn policies(text: &str) -> String {
    format!("policies = [{{ name = \"p\", text = '''\n{text}\n''' }}]")
}

const ESC: &str = "gtg1002-escalation";
const FLOW: &str = "data-exfiltration:DB";

fn status(a: &Analysis, goal: &str) -> Status {
    a.goal(goal).unwrap().status
}

// 1. A gate whose approvers are all in the chain of command is a deny, and is said to be one.

#[test]
fn prove_warns_about_a_gate_whose_only_approver_launched_the_agent() {
    let a = run(&format!(
        "{}\n[settings]\noperator = \"user:op@x\"\n[agents.a]\ntools = [\"scan\", \"code\", \"exploit\"]\n[approvers]\nops = [\"user:op@x\"]",
        policies("POLICY gate: ACTION: REQUIRE_HITL IF Tool_Call('exploit')\n  APPROVERS: ops")
    ));
    // A stop, not a gate: never "gated".
    assert_eq!(status(&a, ESC), Status::Unreachable);
    let w = a
        .warnings
        .iter()
        .find(|w| w.contains("no approver may grant"))
        .unwrap_or_else(|| panic!("no warning: {:?}", a.warnings));
    assert!(
        w.contains("`gate`") && w.contains("user:op@x") && w.contains("`exploit`"),
        "{w}"
    );
    assert_contains!(w, "acts as a deny");
    // The same gate with an independent approver: gated, and no warning.
    let a = run(&format!(
        "{}\n[settings]\noperator = \"user:op@x\"\n[agents.a]\ntools = [\"scan\", \"code\", \"exploit\"]\n[approvers]\nops = [\"user:op@x\", \"user:sec@x\"]",
        policies("POLICY gate: ACTION: REQUIRE_HITL IF Tool_Call('exploit')\n  APPROVERS: ops")
    ));
    assert_eq!(status(&a, ESC), Status::Gated);
    assert!(!a
        .warnings
        .iter()
        .any(|w| w.contains("no approver may grant")));
}

#[test]
fn fix_gates_with_a_group_that_has_an_eligible_approver() {
    // `a-launchers` sorts first, and its only member launched the pipeline.
    let w = world(
        "[settings]\noperator = \"user:op@x\"\n[agents.pipeline]\ntools = [\"scan\", \"code\", \"exploit\"]\n[approvers]\na-launchers = [\"user:op@x\"]\nz-security = [\"user:sec@x\"]\n[goals]\nbuiltin = [\"gtg1002-escalation\"]",
    );
    let a = analyse(&w, &Options::default());
    assert_eq!(status(&a, ESC), Status::Unguarded);
    let fix = remediate(&w, &a, None).unwrap();
    assert_contains!(fix.policy_text, "APPROVERS: 'z-security'");
    assert_eq!(status(&fix.proof, ESC), Status::Gated);
    assert!(fix.safe);
}

#[test]
fn fix_never_reports_a_gate_nobody_may_grant_as_a_gate() {
    let w = world(
        "[settings]\noperator = \"user:op@x\"\n[agents.pipeline]\ntools = [\"scan\", \"code\", \"exploit\"]\n[approvers]\ndeployers = [\"user:op@x\"]\n[goals]\nbuiltin = [\"gtg1002-escalation\"]",
    );
    let a = analyse(&w, &Options::default());
    let fix = remediate(&w, &a, None).unwrap();
    // No REQUIRE_HITL naming the ineligible group: a deny, said to be one.
    let added: Vec<(Action, String)> = fix
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::AddPolicy { action, text, .. } => Some((*action, text.clone())),
            _ => None,
        })
        .collect();
    assert!(!added.is_empty());
    assert!(added.iter().all(|(a, _)| *a == Action::Deny), "{added:?}");
    assert!(
        fix.unresolved.iter().any(|u| u
            .contains("no approver group has a member outside the chain of command")
            && u.contains("deployers")),
        "{:?}",
        fix.unresolved
    );
    assert_ne!(status(&fix.proof, ESC), Status::Gated);
}

// 2. A bound hit in the fixed manifest's proof is unknown, with the bound to raise.

#[test]
fn at_the_depth_bound_only_goals_no_state_can_complete_are_unreachable() {
    // One call: the flow (read, then upload) needs two, and its scope can still complete it;
    // the escalation cannot complete anywhere (no exploitation tool), whatever the depth.
    let a = run("[settings]\nmax_depth = 1\n[agents.a]\ntools = [\"db\", \"up\", \"scan\", \"code\"]\n[goals]\nbuiltin = [\"data-exfiltration\", \"gtg1002-escalation\"]");
    assert!(!a.exploration.exhaustive);
    assert_eq!(status(&a, FLOW), Status::Unknown);
    assert_eq!(status(&a, ESC), Status::Unreachable);
}

#[test]
fn fix_says_unknown_and_which_bound_when_its_proof_hits_the_depth_bound() {
    let w = world(
        // The escalation's progress keeps states new at the bound (scan, then code, with the
        // exploit still to call: a progress that cannot complete would not count).
        "[settings]\nmax_depth = 2\n[agents.a]\ntools = [\"db\", \"up\", \"scan\", \"code\", \"exploit\"]\n[goals]\nbuiltin = [\"data-exfiltration\", \"gtg1002-escalation\"]",
    );
    let a = analyse(&w, &Options::default());
    assert_eq!(status(&a, FLOW), Status::Unguarded);
    assert_eq!(status(&a, ESC), Status::Unknown);
    let fix = remediate(&w, &a, None).unwrap();
    // The deny the fix adds stops every upload after the read, whatever the depth; the
    // escalation, which no policy stops, is still beyond the bound.
    assert_eq!(status(&fix.proof, FLOW), Status::Unreachable);
    assert_eq!(status(&fix.proof, ESC), Status::Unknown);
    assert!(!fix.safe);
    assert!(fix.unknown());
    assert!(
        !fix.unresolved
            .iter()
            .any(|u| u.contains("still reachable unguarded")),
        "{:?}",
        fix.unresolved
    );
    assert!(
        fix.unresolved
            .iter()
            .any(|u| u.contains("unknown") && u.contains("raise settings.max_depth (now 2)")),
        "{:?}",
        fix.unresolved
    );
    let text = truststack_sim::report::text::render(
        &truststack_sim::Analysis {
            fix: Some(Box::new(fix)),
            ..a
        },
        false,
        None,
    );
    assert_contains!(text, "fixed manifest: UNKNOWN");
}

// 3. Time to goal includes the waits the trajectory needs.

#[test]
fn time_to_goal_includes_waiting_out_a_taint_window() {
    let a = run(&format!(
        "{}\n[agents.a]\ntools = [\"db\", \"up\"]",
        policies(
            "POLICY t: ACTION: DENY IF DataSource('DB') == 'read' WITHIN 1h AND Tool_Call('up')"
        )
    ));
    let g = a.goal(FLOW).unwrap();
    let ttg = g.time_to_goal.as_ref().unwrap();
    assert!(ttg.unlimited_ms >= 3_600_000.0, "{ttg:?}");
    assert!(ttg.limited_ms.unwrap() >= 3_600_000.0, "{ttg:?}");
    // It matches the trajectory's own clock.
    let t = g.trajectory.as_ref().unwrap();
    assert!(
        (ttg.unlimited_ms - t.duration_ms as f64).abs() <= 250.0,
        "{ttg:?} vs {}",
        t.duration_ms
    );
}

// 4. Monte Carlo reaches what the exhaustive search reaches with untagged tools, or says why.

const UNTAGGED: &str = r#"
[catalog.tools.crm_lookup]
data_source = { name = "CRM", mode = "read" }
[catalog.tools.send_email]
mode = "write_external"
"#;

fn mc(a_text: &str, runs: u64) -> Analysis {
    let m = Manifest::parse(
        Path::new("hand.toml"),
        &format!("{a_text}\n{CATALOG}\n{UNTAGGED}"),
    )
    .unwrap();
    let w = World::build(m).unwrap();
    let mut o = McOptions::from_world(&w);
    o.runs = runs;
    o.threads = 1;
    analyse(
        &w,
        &Options {
            toxic: false,
            montecarlo: Some(o),
            progress: None,
        },
    )
}

#[test]
fn monte_carlo_calls_tools_without_a_tactic() {
    let a = mc(
        "[agents.support]\ntools = [\"crm_lookup\", \"send_email\"]\n[goals]\nbuiltin = [\"data-exfiltration\"]",
        200,
    );
    let goal = "data-exfiltration:CRM";
    assert_eq!(status(&a, goal), Status::Unguarded);
    let f = a
        .montecarlo
        .as_ref()
        .unwrap()
        .goals
        .iter()
        .find(|g| g.goal == goal)
        .unwrap();
    assert!(f.reached > 0, "{f:?}");
    assert!(f.note.is_none());
}

#[test]
fn monte_carlo_explains_a_goal_its_model_cannot_reach() {
    // The manifest's model never leaves exfiltration: it never scans.
    let a = mc(
        "[agents.a]\ntools = [\"scan\", \"code\", \"exploit\", \"up\"]\n[goals]\nbuiltin = [\"gtg1002-escalation\"]\n[montecarlo]\nstart = { exfiltration = 1.0 }",
        50,
    );
    assert_eq!(status(&a, ESC), Status::Unguarded);
    let f = &a.montecarlo.as_ref().unwrap().goals[0];
    assert_eq!(f.reached, 0);
    let note = f.note.as_ref().expect("a note");
    assert!(
        note.contains("never calls") && note.contains("`scan`"),
        "{note}"
    );
    let text = truststack_sim::report::text::render(&a, false, None);
    assert_contains!(text, note.as_str());
}

// 5. A goal made impossible by a manifest mistake is unknown, not safe.

#[test]
fn an_agent_beyond_the_delegation_depth_makes_goals_unknown_not_safe() {
    let text = |depth: usize| {
        format!(
            "[settings]\nmax_delegation_depth = {depth}\n[agents.o]\ntools = []\ndelegates_to = [\"m\"]\n[agents.m]\ntools = []\ndelegates_to = [\"a\"]\n[agents.a]\ntools = [\"scan\", \"code\", \"exploit\"]"
        )
    };
    let a = run(&text(1));
    assert_eq!(status(&a, ESC), Status::Unknown);
    let why = a.goal(ESC).unwrap().unknown_reason.as_ref().unwrap();
    assert!(
        why.contains("`a`") && why.contains("max_delegation_depth"),
        "{why}"
    );
    assert!(!a.safe);
    // With the bound raised, the real answer: unguarded.
    let a = run(&text(2));
    assert_eq!(status(&a, ESC), Status::Unguarded);
}

#[test]
fn a_goal_naming_a_data_source_no_tool_has_is_unknown_not_safe() {
    let a = run(
        "[agents.a]\ntools = [\"db\", \"up\"]\n[goals]\nbuiltin = []\n[[goals.data_flow]]\nid = \"hr-out\"\nsource = \"HR_DB\"",
    );
    assert_eq!(status(&a, "hr-out"), Status::Unknown);
    let why = a.goal("hr-out").unwrap().unknown_reason.as_ref().unwrap();
    assert!(
        why.contains("`HR_DB`") && why.contains("DB (read)"),
        "{why}"
    );
    assert!(!a.safe);
    // Spelt right, it is found.
    let a = run(
        "[agents.a]\ntools = [\"db\", \"up\"]\n[goals]\nbuiltin = []\n[[goals.data_flow]]\nid = \"db-out\"\nsource = \"DB\"",
    );
    assert_eq!(status(&a, "db-out"), Status::Unguarded);
}

// A goal counted per agent identity sees every chain an identity acts under; the engine keeps
// monitors per place in the chain of command. The fix's gate must hold the last step of an
// identity that acts under two chains whatever came before, or the earlier steps taken under one
// chain would not be seen when the last comes under the other.

#[test]
fn fix_gates_an_identity_acting_under_two_chains_of_command() {
    let w = world(
        "[settings]\noperator = \"user:op@x\"\n[agents.orch]\ntools = []\ndelegates_to = [\"worker\"]\nlaunched_by = \"user:op@x\"\n[agents.worker]\ntools = [\"scan\", \"code\", \"exploit\"]\nlaunched_by = \"user:other@x\"\n[approvers]\nsecurity = [\"user:sec@x\"]\n[goals]\nbuiltin = [\"gtg1002-escalation\"]\nscope = \"agent_identity\"",
    );
    let a = analyse(&w, &Options::default());
    assert_eq!(status(&a, ESC), Status::Unguarded);
    let fix = remediate(&w, &a, None).unwrap();
    assert!(fix.safe, "{:?}\n{}", fix.unresolved, fix.policy_text);
    assert_eq!(status(&fix.proof, ESC), Status::Gated);
    let worker = &w.manifest.agent("worker").unwrap().identity;
    assert!(
        fix.policy_text.contains(&format!("Agent IN ['{worker}']")),
        "{}",
        fix.policy_text
    );
    // Without that clause, a gate on the trajectory alone leaves the goal open: the scan and the
    // code analysis under `orch`, the exploit launched directly.
    let alone = fix
        .policy_text
        .replace(&format!(" OR (Agent IN ['{worker}'])"), "")
        .replace(&format!(" OR Agent IN ['{worker}']"), "");
    assert_ne!(alone, fix.policy_text);
    let a = analyse(
        &world(&format!(
            "{}\n[settings]\noperator = \"user:op@x\"\n[agents.orch]\ntools = []\ndelegates_to = [\"worker\"]\nlaunched_by = \"user:op@x\"\n[agents.worker]\ntools = [\"scan\", \"code\", \"exploit\"]\nlaunched_by = \"user:other@x\"\n[approvers]\nsecurity = [\"user:sec@x\"]\n[goals]\nbuiltin = [\"gtg1002-escalation\"]\nscope = \"agent_identity\"",
            policies(alone.trim_start_matches(|c| c != 'P'))
        )),
        &Options::default(),
    );
    assert_eq!(status(&a, ESC), Status::Unguarded);
}
