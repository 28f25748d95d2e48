//! The reliability harness (`truststack_testkit::crash_cycles`, run long by the
//! `crash_cycles` example) with three kill -9 cycles, so it cannot
//! rot between its long runs.

use truststack_testkit::crash_cycles as harness;

#[test]
fn three_kill_cycles_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let report = harness::run(&harness::Options {
        cycles: 3,
        replicas: 1,
        database: None,
        bin: env!("CARGO_BIN_EXE_truststack").into(),
        dir: dir.path().join("run"),
        seed: 14,
        load_ms: (300, 600),
        budget: None,
        progress: false,
        log_every: 0,
    })
    .unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(report.cycles, 3, "{report}");
    assert!(
        report.allowed > 0 && report.denied > 0 && report.held > 0 && report.approvals > 0,
        "the load mixes verdicts and approvals: {report}"
    );
}
