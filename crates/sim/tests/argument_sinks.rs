//! Goals and sinks that see arguments: a data flow whose sink condition reads an argument
//! attribute (an upload URL's host, classified internal or external) is reached only through the
//! argument variants the manifest declares that meet it; a tool without declared variants may
//! send anywhere. Mistakes in the new syntax are reported with their line and column.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use truststack_engine::Verdict;
use truststack_sim::world::Move;
use truststack_sim::{
    analyse, remediate, Analysis, Manifest, ManifestError, Options, Status, World,
};
use truststack_testkit::assert_contains;

const CATALOG: &str = r#"
[catalog.network]
internal_domains = ["corp.internal"]
[catalog.tools.db]
classes = ["DatabaseQuery"]
tactics = ["collection"]
data_source = { name = "DB", mode = "read" }
[catalog.tools.upload]
classes = ["Upload"]
tactics = ["exfiltration"]
mode = "write_external"
attributes.Dest = { from = "/url" }
"#;

const INTERNAL: &str = "https://artifacts.corp.internal/x";
const EXTERNAL: &str = "https://evil.example/x";

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse(Path::new("args.toml"), &format!("{text}\n{CATALOG}"))
}

fn run(text: &str) -> Analysis {
    analyse(
        &World::build(parse(text).unwrap()).unwrap(),
        &Options::default(),
    )
}

fn manifest(variants: &[&str], goals: &str) -> String {
    let arguments = if variants.is_empty() {
        String::new()
    } else {
        let vs: Vec<String> = variants
            .iter()
            .map(|u| format!("{{ url = \"{u}\" }}"))
            .collect();
        format!("[arguments]\nupload = [{}]\n", vs.join(", "))
    };
    format!("[agents.a]\ntools = [\"db\", \"upload\"]\n{arguments}{goals}")
}

const FLOW: &str = r#"
[goals]
builtin = []
[[goals.data_flow]]
id = "db-leak"
source = "DB"
sink_where = { Dest = ["External_Public", "Unknown"] }
"#;

#[test]
fn an_upload_to_an_internal_host_is_no_leak() {
    let a = run(&manifest(&[INTERNAL], FLOW));
    assert!(a.exploration.exhaustive);
    assert_eq!(a.goal("db-leak").unwrap().status, Status::Unreachable);
    assert!(a.safe);
}

#[test]
fn an_upload_to_an_external_host_is_a_leak_and_the_evidence_shows_the_variant() {
    let a = run(&manifest(&[INTERNAL, EXTERNAL], FLOW));
    let g = a.goal("db-leak").unwrap();
    assert_eq!(g.status, Status::Unguarded);
    let t = g.trajectory.as_ref().unwrap();
    assert!(t.replay_consistent);
    let last = t.steps.last().unwrap();
    assert_eq!(last.tool, "upload");
    assert_eq!(last.args, Some(serde_json::json!({ "url": EXTERNAL })));
    assert_eq!(
        last.call_label(),
        format!("upload {{\"url\":\"{EXTERNAL}\"}}")
    );
    // The read needs no argument shown: its effect does not depend on one.
    assert_eq!(t.steps[0].args, None);
    // The trace replayed by `truststack policy eval` carries the same arguments.
    assert_contains!(t.jsonl(), EXTERNAL);
    let text = truststack_sim::report::text::render(&a, false, None);
    assert!(
        text.contains(&format!("upload {{\"url\":\"{EXTERNAL}\"}}")),
        "{text}"
    );
}

#[test]
fn a_tool_without_declared_variants_may_send_anywhere() {
    let a = run(&manifest(&[], FLOW));
    assert_eq!(a.goal("db-leak").unwrap().status, Status::Unguarded);
}

#[test]
fn goals_sink_where_applies_to_the_built_in_data_flows() {
    let goals = "[goals]\nbuiltin = [\"data-exfiltration\"]\nsink_where = { Dest = [\"External_Public\", \"Unknown\"] }\n";
    let a = run(&manifest(&[INTERNAL], goals));
    assert_eq!(
        a.goal("data-exfiltration:DB").unwrap().status,
        Status::Unreachable
    );
    let a = run(&manifest(&[INTERNAL, EXTERNAL], goals));
    assert_eq!(
        a.goal("data-exfiltration:DB").unwrap().status,
        Status::Unguarded
    );
    // Without the condition, any upload is a leak, as before.
    let a = run(&manifest(
        &[INTERNAL],
        "[goals]\nbuiltin = [\"data-exfiltration\"]\n",
    ));
    assert_eq!(
        a.goal("data-exfiltration:DB").unwrap().status,
        Status::Unguarded
    );
}

#[test]
fn a_policy_on_the_argument_decides_per_variant() {
    // The engine sees the same argument: a deny on external uploads leaves only internal ones.
    let policies = "policies = [{ name = \"p\", text = \"POLICY no-ext: ACTION: DENY IF Tool_Call('upload') AND NOT (Url_Host(Arg('/url')) REGEX '(^|[.])corp[.]internal$')\" }]\n";
    let a = run(&format!(
        "{policies}{}",
        manifest(&[INTERNAL, EXTERNAL], FLOW)
    ));
    assert_eq!(a.goal("db-leak").unwrap().status, Status::Unreachable);
}

#[test]
fn sink_conditions_load_back_from_a_written_manifest() {
    let m = parse(&manifest(&[INTERNAL, EXTERNAL], FLOW)).unwrap();
    let written = m.to_toml(Path::new("."));
    let back = Manifest::parse(Path::new("back.toml"), &written)
        .unwrap_or_else(|e| panic!("{e}\n{written}"));
    assert_eq!(back.goals[0].kind, m.goals[0].kind);
}

/// What the engine of `world` decides for `calls` (tool, variant url or none) made in turn by
/// the one agent.
fn decide(world: &World, calls: &[(&str, Option<&str>)]) -> Vec<Verdict> {
    let engine = world.base.fork();
    calls
        .iter()
        .enumerate()
        .map(|(i, (tool, url))| {
            let t = world.tools.iter().position(|x| x.name == *tool).unwrap();
            let variant = match url {
                None => 0,
                Some(u) => world.tools[t]
                    .variants
                    .iter()
                    .position(|v| v["url"] == *u)
                    .unwrap(),
            };
            let mut call = world.untimed_call(Move {
                actor: 0,
                tool: t,
                variant,
            });
            call.id = format!("c{i}");
            engine
                .decide_brief(&call, world.manifest.settings.start_ms + i as i64 * 1000)
                .decision
        })
        .collect()
}

#[test]
fn the_fix_stops_only_the_sink_calls_the_goal_counts() {
    let w = World::build(parse(&manifest(&[INTERNAL, EXTERNAL], FLOW)).unwrap()).unwrap();
    let a = analyse(&w, &Options::default());
    assert_eq!(a.goal("db-leak").unwrap().status, Status::Unguarded);
    let dir = tempfile::tempdir().unwrap();
    let fix = remediate(&w, &a, Some(dir.path())).unwrap();
    assert!(fix.safe, "{:?}", fix.unresolved);
    assert!(fix.unresolved.is_empty(), "{:?}", fix.unresolved);
    // The deny reads the attribute the goal's sink condition reads, and exempts the internal
    // upload the manifest declares; any other destination is still denied after the read.
    let exempt = format!("NOT (Tool_Call('upload').Dest IN ['{INTERNAL}'])");
    assert!(fix.policy_text.contains(&exempt), "{}", fix.policy_text);
    let fixed = dir.path().join("args.fixed.toml");
    let fixed = World::build(Manifest::load(&fixed).unwrap()).unwrap();
    let after_read = |url| decide(&fixed, &[("db", None), ("upload", Some(url))]);
    assert_eq!(after_read(INTERNAL), [Verdict::Allow, Verdict::Allow]);
    assert_eq!(after_read(EXTERNAL), [Verdict::Allow, Verdict::Deny]);
    // The gate alternative holds the same calls, and only those.
    let gate = fix.alternatives.iter().find(|x| x.id == "gate").unwrap();
    assert!(gate.safe, "{:?}", gate.unresolved);
    assert!(gate.policy_text.contains(&exempt), "{}", gate.policy_text);
    let gated = dir.path().join("args.gate.fixed.toml");
    let gated = World::build(Manifest::load(&gated).unwrap()).unwrap();
    let after_read = |url| decide(&gated, &[("db", None), ("upload", Some(url))]);
    assert_eq!(after_read(INTERNAL), [Verdict::Allow, Verdict::Allow]);
    assert_eq!(
        after_read(EXTERNAL),
        [Verdict::Allow, Verdict::RequireApproval]
    );
}

#[test]
fn an_ip_range_attribute_is_compared_by_its_class() {
    // With `classify = "ip_range"` the attribute's value is already its class: an upload to an
    // internal host is no leak, and the fix exempts the class.
    let catalog = CATALOG.replace(
        "attributes.Dest = { from = \"/url\" }",
        "attributes.Dest = { from = \"/host\", classify = \"ip_range\" }",
    );
    let text = "[agents.a]\ntools = [\"db\", \"upload\"]\n[arguments]\nupload = [{ host = \"10.0.0.7\" }, { host = \"203.0.113.9\" }]\n";
    let m = Manifest::parse(Path::new("args.toml"), &format!("{text}{FLOW}\n{catalog}")).unwrap();
    let w = World::build(m).unwrap();
    let a = analyse(&w, &Options::default());
    let g = a.goal("db-leak").unwrap();
    assert_eq!(g.status, Status::Unguarded);
    let last = g
        .trajectory
        .as_ref()
        .unwrap()
        .steps
        .last()
        .cloned()
        .unwrap();
    assert_eq!(
        last.args,
        Some(serde_json::json!({ "host": "203.0.113.9" }))
    );
    let fix = remediate(&w, &a, None).unwrap();
    assert!(fix.safe, "{:?}", fix.unresolved);
    assert_contains!(
        fix.policy_text,
        "NOT (Tool_Call('upload').Dest IN ['Internal_Private'])"
    );
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn mistakes_are_reported_with_line_and_column() {
    // A misspelt attribute.
    let e = error(&manifest(
        &[INTERNAL],
        "[goals]\nbuiltin = []\n[[goals.data_flow]]\nid = \"x\"\nsource = \"DB\"\nsink_where = { Dst = [\"External_Public\"] }\n",
    ));
    assert!(
        e.starts_with("args.toml: line 10, column 16: goals.data_flow `x`.sink_where: `Dst` is no catalog attribute"),
        "{e}"
    );
    assert_contains!(e, "did you mean `Dest`?");
    // No value.
    let e = error(&manifest(
        &[INTERNAL],
        "[goals]\nbuiltin = []\nsink_where = { Dest = [] }\n",
    ));
    assert!(
        e.starts_with(
            "args.toml: line 7, column 23: goals.sink_where.Dest: expected at least one value"
        ),
        "{e}"
    );
    // A value that is no list: the TOML layer reports it.
    let e = error(&manifest(
        &[INTERNAL],
        "[goals]\nsink_where = { Dest = \"External_Public\" }\n",
    ));
    assert!(
        e.starts_with("args.toml: not a valid manifest: line 6, column 23"),
        "{e}"
    );
    // Argument variants for a tool that does not exist, and variants that are no tables.
    let e =
        error("[agents.a]\ntools = [\"db\", \"upload\"]\n[arguments]\nuplod = [{ url = \"x\" }]\n");
    assert!(
        e.starts_with("args.toml: line 4, column 9: arguments.uplod: no tool or class `uplod` in the catalog (did you mean `upload`?)"),
        "{e}"
    );
    let e =
        error("[agents.a]\ntools = [\"db\", \"upload\"]\n[arguments]\nupload = [\"https://x\"]\n");
    assert!(
        e.starts_with("args.toml: line 4, column 10: arguments.upload: expected a non-empty list"),
        "{e}"
    );
}
