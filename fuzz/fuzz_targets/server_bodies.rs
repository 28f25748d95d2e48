//! Any bytes as the body of every server request (decide, observation, outcome, approval
//! answers, identities): parsed and validated as the handlers do, and the decide and observation
//! requests that parse decided and recorded by an engine under the GTG-1002 seed policies.
//! Must never panic.
#![no_main]

use truststack_engine::{Engine, Settings};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let engine = Engine::new(truststack_testkit::examples::gtg1002_seed().clone(), Settings::replay());
    truststack_server::api::fuzz_bodies(&engine, data);
});
