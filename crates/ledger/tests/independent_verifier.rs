//! A verifier written from the specs in Python (`independent_verifier.py`: hashlib, base64 and
//! the `cryptography` package only) accepts the ledger's checkpoints and inclusion proofs, and
//! rejects tampered ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use truststack_testkit::independent_verifier as python_verifier;

use common::Fixture;
use serde_json::{json, Value};
use truststack_ledger::{LogKey, DEFAULT_ORIGIN};

#[test]
fn python_verifier_accepts_real_proofs_and_rejects_tampered_ones() {
    let f = Fixture::filled(37, 10);
    let ledger = truststack_ledger::Ledger::open_read_only(f.path()).unwrap();
    let checkpoint = ledger.latest_checkpoint().unwrap();
    assert_eq!(checkpoint.checkpoint.size, 37);
    let input = |index: u64| -> Value {
        let entry = ledger.entry(index).unwrap();
        json!({
            "verifier_key": ledger.verifier_key().to_string(),
            "checkpoint": checkpoint.note,
            "record": String::from_utf8(entry.data).unwrap(),
            "proof": ledger.inclusion_proof(index, 37).unwrap(),
        })
    };
    for index in [0, 1, 17, 31, 32, 36] {
        let (code, text) = python_verifier::run(&input(index), f.dir.path());
        assert_eq!(code, 0, "entry {index}: {text}");
        assert!(text.starts_with(&format!(
            "ok: entry {index} is in {DEFAULT_ORIGIN} at size 37"
        )));
    }

    let good = input(17);
    let mut tampered = Vec::new();
    // A flipped bit in a proof hash.
    let mut v = good.clone();
    let h = v["proof"]["path"][1].as_str().unwrap().to_string();
    let mut raw = base64_decode(&h);
    raw[5] ^= 0x10;
    v["proof"]["path"][1] = base64_encode(&raw).into();
    tampered.push(("flipped proof bit", v));
    // The proof of another index.
    let mut v = good.clone();
    v["proof"]["leaf_index"] = 18.into();
    tampered.push(("wrong index", v));
    // A changed record.
    let mut v = good.clone();
    v["record"] = v["record"].as_str().unwrap().replace("d-17", "d-71").into();
    tampered.push(("changed record", v));
    // A checkpoint whose root was changed (signature no longer matches).
    let mut v = good.clone();
    let note = checkpoint.note.clone();
    let root_line = note.lines().nth(2).unwrap().to_string();
    let mut root = base64_decode(&root_line);
    root[0] ^= 1;
    v["checkpoint"] = note.replace(&root_line, &base64_encode(&root)).into();
    tampered.push(("changed root", v));
    // The same checkpoint signed by another key with the same name.
    let mut v = good.clone();
    let impostor = LogKey::generate(DEFAULT_ORIGIN).unwrap();
    v["checkpoint"] = checkpoint.checkpoint.sign(&impostor).unwrap().into();
    tampered.push(("impostor signature", v));
    // A verifier key whose id does not match the key.
    let mut v = good.clone();
    let vkey = ledger.verifier_key().to_string();
    let mut parts: Vec<&str> = vkey.splitn(3, '+').collect();
    parts[1] = "00000000";
    v["verifier_key"] = parts.join("+").into();
    tampered.push(("wrong key id", v));

    for (what, v) in tampered {
        let (code, text) = python_verifier::run(&v, f.dir.path());
        assert_eq!(code, 1, "{what} was accepted: {text}");
        assert!(text.starts_with("FAILED"), "{what}: {text}");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}
