//! Any bytes as a policy file: parse, check, render diagnostics, compile. Must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    truststack_policy::fuzz_entry(data);
});
