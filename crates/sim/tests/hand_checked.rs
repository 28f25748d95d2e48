//! Small manifests whose reachable goals are known by hand: policies that make goals
//! unreachable, goals that are only gated, delegation, time windows and approvers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use truststack_engine::Verdict;
use truststack_sim::toxic::HolderKind;
use truststack_sim::{analyse, Analysis, Manifest, Options, Status, World};

mod common;
use common::CATALOG;

fn run(text: &str) -> Analysis {
    let m = Manifest::parse(Path::new("hand.toml"), &format!("{text}\n{CATALOG}")).unwrap();
    analyse(&World::build(m).unwrap(), &Options::default())
}

fn status(a: &Analysis, goal: &str) -> Status {
    a.goal(goal)
        .unwrap_or_else(|| {
            panic!(
                "no goal {goal}: {:?}",
                a.goals.iter().map(|g| &g.id).collect::<Vec<_>>()
            )
        })
        .status
}

fn calls(a: &Analysis, goal: &str) -> Vec<String> {
    a.goal(goal)
        .and_then(|g| g.trajectory.as_ref())
        .map(|t| t.steps.iter().map(|s| s.tool.clone()).collect())
        .unwrap_or_default()
}

fn policies(text: &str) -> String {
    format!("policies = [{{ name = \"p\", text = '''\n{text}\n''' }}]")
}

const ESC: &str = "gtg1002-escalation";
const FLOW: &str = "data-exfiltration:DB";
const CHAIN: &str = "gtg1002-chain";

#[test]
fn without_policies_every_goal_with_its_tools_is_unguarded_in_one_call_per_step() {
    let a = run("[agents.a]\ntools = [\"scan\", \"code\", \"exploit\", \"db\", \"up\", \"docs\"]");
    assert_eq!(status(&a, ESC), Status::Unguarded);
    assert_eq!(calls(&a, ESC), ["scan", "code", "exploit"]);
    assert_eq!(calls(&a, FLOW), ["db", "up"]);
    assert_eq!(calls(&a, CHAIN), ["scan", "code", "exploit", "db", "up"]);
    assert!(!a.safe);
}

#[test]
fn a_goal_the_tools_cannot_cover_is_unreachable() {
    let a = run("[agents.a]\ntools = [\"scan\", \"code\", \"db\", \"docs\"]");
    assert!(a.exploration.exhaustive);
    assert_eq!(status(&a, ESC), Status::Unreachable);
    assert_eq!(status(&a, FLOW), Status::Unreachable);
    assert_eq!(status(&a, CHAIN), Status::Unreachable);
    assert!(a.safe);
    assert!(a.toxic.is_empty());
}

#[test]
fn a_deny_on_a_tool_makes_every_goal_through_it_unreachable() {
    let a = run(&format!(
        "{}\n[agents.a]\ntools = [\"scan\", \"code\", \"exploit\", \"db\", \"up\"]",
        policies("POLICY no-exploit: ACTION: DENY IF Tool_Call('ExploitationTool')\nPOLICY no-up: ACTION: DENY IF Tool_Call('up')")
    ));
    assert!(a.exploration.exhaustive);
    assert_eq!(status(&a, ESC), Status::Unreachable);
    assert_eq!(status(&a, CHAIN), Status::Unreachable);
    assert_eq!(status(&a, FLOW), Status::Unreachable);
    assert!(a.safe);
}

#[test]
fn a_hitl_between_tactics_makes_the_goal_gated_only() {
    let a = run(&format!(
        "{}\n[agents.a]\ntools = [\"scan\", \"code\", \"exploit\"]\n[approvers]\noncall = [\"user:oncall@x\"]",
        policies("POLICY gate: ACTION: REQUIRE_HITL IF Tool_Call('exploit') AND Trajectory_Contains('scan')")
    ));
    assert_eq!(status(&a, ESC), Status::Gated);
    let t = a.goal(ESC).unwrap().trajectory.as_ref().unwrap();
    assert_eq!(t.gates, ["gate"]);
    let last = t.steps.last().unwrap();
    assert_eq!(last.decision, Verdict::RequireApproval);
    assert_eq!(last.approval.as_ref().unwrap().approver, "user:oncall@x");
    assert!(a.safe);
}

#[test]
fn a_gate_nobody_may_grant_is_a_stop() {
    // The only approver is the operator, who is in the chain of command of every call.
    let a = run(&format!(
        "{}\n[settings]\noperator = \"user:op@x\"\n[agents.a]\ntools = [\"scan\", \"code\", \"exploit\"]\n[approvers]\nops = [\"user:op@x\"]",
        policies("POLICY gate: ACTION: REQUIRE_HITL IF Tool_Call('exploit')")
    ));
    assert_eq!(status(&a, ESC), Status::Unreachable);
    // A policy naming a group the manifest does not list can never be granted either.
    let a = run(&format!(
        "{}\n[agents.a]\ntools = [\"scan\", \"code\", \"exploit\"]\n[approvers]\noncall = [\"user:oncall@x\"]",
        policies("POLICY gate: ACTION: REQUIRE_HITL IF Tool_Call('exploit')\n  APPROVERS: nobody")
    ));
    assert_eq!(status(&a, ESC), Status::Unreachable);
    assert!(
        a.warnings
            .iter()
            .any(|w| w.contains("can never be granted")),
        "{:?}",
        a.warnings
    );
}

#[test]
fn separate_top_level_agents_do_not_share_an_orchestration() {
    let agents = "[agents.a]\ntools = [\"scan\", \"code\"]\n[agents.b]\ntools = [\"exploit\"]";
    let a = run(agents);
    assert_eq!(status(&a, ESC), Status::Unreachable);
    // ... unless one orchestrator delegates to both,
    let a = run(&format!(
        "{agents}\n[agents.o]\ntools = []\ndelegates_to = [\"a\", \"b\"]"
    ));
    assert_eq!(status(&a, ESC), Status::Unguarded);
    assert_eq!(
        a.toxic
            .iter()
            .find(|t| t.holder == HolderKind::DelegationRoot)
            .unwrap()
            .held_by,
        ["a", "b"]
    );
    // ... or the goal is scoped to the human who launches both.
    let a = run(&format!("{agents}\n[goals]\nscope = \"user\""));
    assert_eq!(status(&a, ESC), Status::Unguarded);
}

#[test]
fn per_agent_policies_miss_a_split_campaign_but_delegation_root_ones_do_not() {
    let agents = "[agents.o]\ntools = []\ndelegates_to = [\"a\", \"b\"]\n[agents.a]\ntools = [\"scan\", \"code\"]\n[agents.b]\ntools = [\"exploit\"]";
    let gate = |target: &str| {
        policies(&format!(
            "POLICY g: ACTION: REQUIRE_HITL TARGET: {target} IF Trajectory_Contains('scan') AND Trajectory_Contains('code') AND Trajectory_Contains('exploit')"
        ))
    };
    let a = run(&format!("{}\n{agents}", gate("agent_identity")));
    assert_eq!(status(&a, ESC), Status::Unguarded);
    let a = run(&format!("{}\n{agents}", gate("delegation_root")));
    assert_eq!(status(&a, ESC), Status::Gated);
}

#[test]
fn taint_that_expires_is_waited_out() {
    let a = run(&format!(
        "{}\n[agents.a]\ntools = [\"db\", \"up\"]",
        policies(
            "POLICY t: ACTION: DENY IF DataSource('DB') == 'read' WITHIN 1h AND Tool_Call('up')"
        )
    ));
    assert_eq!(status(&a, FLOW), Status::Unguarded);
    let t = a.goal(FLOW).unwrap().trajectory.as_ref().unwrap();
    assert_eq!(calls(&a, FLOW), ["db", "up"]);
    assert!(t.steps[1].waited_ms.is_some());
    assert!(t.duration_ms >= 3_600_000, "{}", t.duration_ms);
    // Without waiting, the same manifest is safe.
    let a = run(&format!(
        "{}\n[settings]\nwaits = false\n[agents.a]\ntools = [\"db\", \"up\"]",
        policies(
            "POLICY t: ACTION: DENY IF DataSource('DB') == 'read' WITHIN 1h AND Tool_Call('up')"
        )
    ));
    assert_eq!(status(&a, FLOW), Status::Unreachable);
}

#[test]
fn a_tight_rate_limit_is_waited_out_and_a_closed_one_makes_the_goal_unreachable() {
    let two = |policy: &str| {
        format!(
            "{}\n[agents.a]\ntools = [\"scan\"]\n[goals]\nbuiltin = []\n[[goals.sequence]]\nid = \"two-scans\"\nsteps = [\"reconnaissance\", \"reconnaissance\"]",
            policies(policy)
        )
    };
    // One scan per minute: the second scan needs a wait.
    let a = run(&two(
        "POLICY r: ACTION: DENY IF Tool_Call('scan').Count > 1 requests/1min",
    ));
    assert_eq!(status(&a, "two-scans"), Status::Unguarded);
    let t = a.goal("two-scans").unwrap().trajectory.as_ref().unwrap();
    assert!(t.duration_ms >= 60_000, "{}", t.duration_ms);
    assert!(t.steps[1].waited_ms.is_some());
    // No scan allowed at all: unreachable, exhaustively.
    let a = run(&two(
        "POLICY r: ACTION: DENY IF Tool_Call('scan').Count >= 1 requests/1min",
    ));
    assert_eq!(status(&a, "two-scans"), Status::Unreachable);
    assert!(a.exploration.exhaustive);
    // A loose limit cannot fire within the depth bound: the ring is abstracted away, and the
    // search still reaches a fixpoint.
    let a = run(&two(
        "POLICY r: ACTION: DENY IF Tool_Call('scan').Count > 100 requests/5min",
    ));
    assert_eq!(status(&a, "two-scans"), Status::Unguarded);
    assert_eq!(
        a.goal("two-scans")
            .unwrap()
            .trajectory
            .as_ref()
            .unwrap()
            .duration_ms,
        250
    );
}

#[test]
fn default_deny_admits_only_what_policies_allow() {
    let a = run(&format!(
        "{}\n[settings]\ndefault_decision = \"deny\"\n[agents.a]\ntools = [\"scan\", \"code\", \"exploit\", \"db\", \"up\"]",
        policies("POLICY a: ACTION: ALLOW IF Tool_Call('scan') OR Tool_Call('code') OR Tool_Call('db')\nPOLICY b: ACTION: ALLOW IF Tool_Call('up') AND NOT DataSource('DB')")
    ));
    assert_eq!(status(&a, ESC), Status::Unreachable);
    assert_eq!(status(&a, FLOW), Status::Unreachable);
    assert!(a.replay.flags.contains(&"--default deny".to_string()));
}

#[test]
fn an_enabling_call_is_part_of_the_toxic_combination() {
    // Uploads are allowed only after reading the docs: the docs tool enables the data flow.
    let a = run(&format!(
        "{}\n[agents.a]\ntools = [\"db\", \"up\", \"docs\"]",
        policies("POLICY d: ACTION: DENY IF Tool_Call('up') AND NOT Trajectory_Contains('docs')")
    ));
    assert_eq!(status(&a, FLOW), Status::Unguarded);
    let t = a.toxic.iter().find(|t| t.goal == FLOW).unwrap();
    assert_eq!(t.tool_sets, [vec!["db", "up", "docs"]]);
}

#[test]
fn a_lease_lets_later_calls_through_after_one_grant() {
    let text = |lease: &str| {
        format!(
            "{}\n[settings]\n{lease}\n[agents.a]\ntools = [\"scan\", \"code\", \"exploit\", \"db\", \"up\"]",
            policies("POLICY g: ACTION: REQUIRE_HITL IF Trajectory_Contains('ExploitationTool')")
        )
    };
    let a = run(&text("approval_lease = \"1h\""));
    let t = a.goal(CHAIN).unwrap().trajectory.as_ref().unwrap();
    assert_eq!(status(&a, CHAIN), Status::Gated);
    assert_eq!(t.steps.iter().filter(|s| s.approval.is_some()).count(), 1);
    let a = run(&text(""));
    let t = a.goal(CHAIN).unwrap().trajectory.as_ref().unwrap();
    assert_eq!(t.steps.iter().filter(|s| s.approval.is_some()).count(), 3);
}

#[test]
fn unknown_tools_are_flagged_and_denied() {
    let a = run("[agents.a]\ntools = [\"scan\", \"code\", \"mystery\"]");
    assert!(a
        .warnings
        .iter()
        .any(|w| w.contains("`mystery` is not in the catalog")));
}
