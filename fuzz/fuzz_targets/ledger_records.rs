//! Any bytes as a stored ledger entry: read as every reader reads it (the record, the entries
//! API's JSON and its text, the canonical-form check of `ledger verify`), and restored into an
//! engine under the GTG-1002 seed policies as a restarting server does. Must never panic, and
//! a record that reads must be readable back from the JSON it is shown as.
#![no_main]

use truststack_engine::ledger::canonical::check_canonical;
use truststack_engine::ledger::ledger::Entry;
use truststack_engine::{Engine, Record, Settings};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let entry = Entry {
        index: 0,
        data: data.to_vec(),
        leaf: truststack_engine::ledger::merkle::leaf_hash(data),
        time_us: 0,
    };
    let _ = check_canonical(data);
    if let Ok(shown) = entry.to_json() {
        let text = serde_json::to_string(&shown).expect("a JSON value serializes");
        serde_json::from_str::<serde_json::Value>(&text).expect("what the entries API shows reads back");
    }
    // Decoded as every reader decodes it, then restored as a restarting engine restores it.
    if let Ok(record) = entry.record().map(|v| Record::decode(0, &v)) {
        let engine = Engine::new(truststack_testkit::examples::gtg1002_seed().clone(), Settings::replay());
        if let Ok(record) = record {
            let _ = engine.restore(&record);
        }
    }
});
