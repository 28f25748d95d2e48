//! What of a payload (a tool's arguments or result) goes into the ledger.
//!
//! - [`PayloadMode::Full`]: the payload itself;
//! - [`PayloadMode::Hash`]: `{"sha256": "<hex of SHA-256 of its canonical JSON>"}`;
//! - [`PayloadMode::Redacted`]: `{"redacted": true, "sha256": "<hex>"}`, which also tells a
//!   reader that something was deliberately withheld.
//!
//! Either digest form commits to the payload: whoever later discloses it can be checked with
//! [`prove_disclosure`], which re-hashes the disclosed JSON canonically (so key order and
//! whitespace do not matter).

use crate::canonical::{canonicalize, CanonicalError};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// How much of a payload the ledger keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadMode {
    /// The payload as is.
    #[default]
    Full,
    /// Only the SHA-256 of its canonical JSON.
    Hash,
    /// The SHA-256, marked as redacted.
    Redacted,
}

impl FromStr for PayloadMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(PayloadMode::Full),
            "hash" => Ok(PayloadMode::Hash),
            "redacted" => Ok(PayloadMode::Redacted),
            other => Err(format!(
                "unknown payload mode {other:?} (expected full, hash or redacted)"
            )),
        }
    }
}

impl fmt::Display for PayloadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PayloadMode::Full => "full",
            PayloadMode::Hash => "hash",
            PayloadMode::Redacted => "redacted",
        })
    }
}

/// The lower-case hex SHA-256 of `payload`'s RFC 8785 canonical JSON.
pub fn payload_digest(payload: &Value) -> Result<String, CanonicalError> {
    Ok(hex::encode(Sha256::digest(canonicalize(payload)?)))
}

/// What to store for `payload` under `mode`.
pub fn stored_payload(payload: &Value, mode: PayloadMode) -> Result<Value, CanonicalError> {
    Ok(match mode {
        PayloadMode::Full => payload.clone(),
        PayloadMode::Hash => json!({"sha256": payload_digest(payload)?}),
        PayloadMode::Redacted => json!({"redacted": true, "sha256": payload_digest(payload)?}),
    })
}

/// Whether `stored` (as [`stored_payload`] produced it, under any mode) commits to `payload`:
/// a digest form must carry exactly the digest of `payload`; a full one must equal it as JSON.
pub fn prove_disclosure(payload: &Value, stored: &Value) -> bool {
    if let Some(digest) = digest_of(stored) {
        if payload_digest(payload).is_ok_and(|d| d == digest) {
            return true;
        }
    }
    match (canonicalize(payload), canonicalize(stored)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The digest of a `{"sha256": h}` or `{"redacted": true, "sha256": h}` object.
fn digest_of(stored: &Value) -> Option<&str> {
    let object: &Map<String, Value> = stored.as_object()?;
    let digest = object.get("sha256")?.as_str()?;
    let shape_ok = match object.len() {
        1 => true,
        2 => object.get("redacted") == Some(&Value::Bool(true)),
        _ => false,
    };
    shape_ok.then_some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_store_what_they_say() {
        let payload = json!({"rows": [1, 2], "table": "users"});
        assert_eq!(
            stored_payload(&payload, PayloadMode::Full).unwrap(),
            payload
        );
        // sha256 of {"rows":[1,2],"table":"users"}
        let digest = hex::encode(Sha256::digest(br#"{"rows":[1,2],"table":"users"}"#));
        assert_eq!(
            stored_payload(&payload, PayloadMode::Hash).unwrap(),
            json!({"sha256": digest})
        );
        assert_eq!(
            stored_payload(&payload, PayloadMode::Redacted).unwrap(),
            json!({"redacted": true, "sha256": digest})
        );
    }

    #[test]
    fn disclosures_are_proved_by_rehashing() {
        let payload = json!({"table": "users", "rows": [1, 2]});
        let reordered: Value =
            serde_json::from_str(r#"{ "rows": [1,2], "table": "users" }"#).unwrap();
        let other = json!({"table": "users", "rows": [1, 3]});
        for mode in [PayloadMode::Full, PayloadMode::Hash, PayloadMode::Redacted] {
            let stored = stored_payload(&payload, mode).unwrap();
            assert!(prove_disclosure(&payload, &stored), "{mode}");
            assert!(prove_disclosure(&reordered, &stored), "{mode}");
            assert!(!prove_disclosure(&other, &stored), "{mode}");
        }
        let digest = payload_digest(&payload).unwrap();
        assert!(!prove_disclosure(
            &payload,
            &json!({"sha256": digest, "note": "extra"})
        ));
    }

    #[test]
    fn modes_parse_and_print() {
        for mode in [PayloadMode::Full, PayloadMode::Hash, PayloadMode::Redacted] {
            assert_eq!(mode.to_string().parse::<PayloadMode>().unwrap(), mode);
        }
        assert!("secret".parse::<PayloadMode>().is_err());
    }
}
