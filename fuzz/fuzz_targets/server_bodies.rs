//! Any bytes as the body of every server request (decide, observation, outcome, approval
//! answers, identities): parsed and validated as the handlers do, and the decide and observation
//! requests that parse decided and recorded by an engine under the GTG-1002 seed policies.
//! Must never panic.
#![no_main]

use std::sync::OnceLock;
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
    let engine = Engine::new(bundle().clone(), Settings::replay());
    truststack_server::api::fuzz_bodies(&engine, data);
});
