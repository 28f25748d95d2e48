//! Any bytes as a JSONL trace, replayed under the GTG-1002 seed policies. Must never panic.
#![no_main]

use truststack_engine::replay::{parse_trace, replay};
use truststack_engine::{Engine, Settings};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(events) = parse_trace("fuzz.jsonl", &text) {
        let engine = Engine::new(truststack_testkit::examples::gtg1002_seed().clone(), Settings::replay());
        let _ = replay(&engine, &events);
    }
});
