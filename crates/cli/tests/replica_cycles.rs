//! The reliability harness (`truststack_testkit::crash_cycles`) on three replicas of
//! `truststack serve` sharing one PostgreSQL database: fifty cycles, each killing one replica
//! with SIGKILL under load and restarting it while the other two go on answering.

use truststack_testkit::crash_cycles as harness;
use truststack_testkit::postgres::database;

#[test]
fn fifty_kills_of_one_replica_in_three_lose_nothing_and_stop_no_other() {
    let (db, dir) = (database(), tempfile::tempdir().unwrap());
    let report = harness::run(&harness::Options {
        cycles: 50,
        replicas: 3,
        database: Some(db.url().to_string()),
        bin: env!("CARGO_BIN_EXE_truststack").into(),
        dir: dir.path().join("run"),
        seed: 15,
        load_ms: (100, 300),
        budget: None,
        progress: false,
        log_every: 0,
    })
    .unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(report.cycles, 50, "{report}");
    assert!(
        report.allowed > 0 && report.denied > 0 && report.held > 0 && report.approvals > 0,
        "the load mixes verdicts and approvals: {report}"
    );
    assert!(
        report.answered.iter().all(|&n| n > 0),
        "every replica answers its share of the load: {report}"
    );
    eprint!("{report}");
}
