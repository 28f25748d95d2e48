//! Any bytes as a stored ledger entry: read as every reader reads it (the record, the entries
//! API's JSON and its text, the canonical-form check of `ledger verify`), and restored into an
//! engine under the GTG-1002 seed policies as a restarting server does. Must never panic, and
//! a record that reads must be readable back from the JSON it is shown as.
#![no_main]

use std::sync::OnceLock;
use truststack_engine::ledger::canonical::check_canonical;
use truststack_engine::ledger::ledger::Entry;
use truststack_engine::{Engine, Settings};
use truststack_policy::load::load_sources;
use truststack_policy::{Catalog, Source};

const CATALOG: &str = include_str!("../../examples/gtg1002/catalog.toml");
const SEED: &str = include_str!("../../examples/gtg1002/policies/seed.tsp");

fn bundle() -> &'static truststack_policy::Bundle {
    static BUNDLE: OnceLock<truststack_policy::Bundle> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let catalog = Catalog::from_toml("catalog.toml", CATALOG).expect("embedded catalog");
        load_sources(vec![Source::new("seed.tsp", SEED)], catalog, CATALOG)
            .expect("embedded policies")
            .bundle
    })
}

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
    if let Ok(record) = entry.record() {
        let engine = Engine::new(bundle().clone(), Settings::replay());
        let _ = engine.restore(&record);
    }
});
