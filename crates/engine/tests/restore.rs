//! Rebuilding an engine from its recorded decisions gives the same future decisions: a restart
//! does not reset a rate limit, a taint, a held call or a lease.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use parking_lot::Mutex;
use serde_json::Value;
use std::sync::Arc;
use truststack_engine::replay::{parse_trace, replay};
use truststack_engine::Processed;
use truststack_engine::{Engine, Event, Recorder, Settings};

#[derive(Default)]
struct Memory(Mutex<Vec<Value>>);

impl Recorder for Memory {
    fn record(&self, record: Value) -> truststack_engine::Recorded {
        let mut records = self.0.lock();
        records.push(record);
        Ok(Some(records.len() as u64 - 1))
    }
}

use truststack_testkit::examples::gtg1002 as example;

fn engine(policy: &str) -> Engine {
    Engine::new(
        truststack_testkit::examples::gtg1002_bundle(&[policy]),
        Settings::replay(),
    )
}

fn decisions(steps: Vec<Processed>) -> Vec<String> {
    steps
        .into_iter()
        .filter_map(|s| match s {
            Processed::Decision(d) => Some(format!("{} {}", d.call_id, d.decision.as_str())),
            Processed::Approval(a) => Some(format!("approval {:?}", a.map(|o| o.result))),
            _ => None,
        })
        .collect()
}

#[test]
fn restoring_from_records_at_any_point_gives_the_same_decisions() {
    for (policy, trace) in [
        ("policies/seed.tsp", "traces/campaign-single-agent.jsonl"),
        (
            "policies/delegation-root.tsp",
            "traces/campaign-split.jsonl",
        ),
    ] {
        let text = std::fs::read_to_string(example(trace)).unwrap();
        let events: Vec<Event> = parse_trace(trace, &text).unwrap();
        let reference = decisions(replay(&engine(policy), &events));
        for cut in [
            1,
            50,
            100,
            103,
            events.len() - 8,
            events.len() - 5,
            events.len() - 3,
        ] {
            let memory = Arc::new(Memory::default());
            let first = engine(policy).with_recorder(memory.clone());
            let mut got = decisions(replay(&first, &events[..cut]));
            drop(first);
            // "Restart": a fresh engine rebuilt from what the first one recorded.
            let second = engine(policy).with_recorder(memory.clone());
            for (index, record) in (0u64..).zip(memory.0.lock().clone()) {
                second
                    .restore(&truststack_engine::Record::decode(index, &record).unwrap())
                    .unwrap();
            }
            got.extend(decisions(replay(&second, &events[cut..])));
            assert_eq!(got, reference, "{trace}: restart after {cut} events");
        }
    }
}
