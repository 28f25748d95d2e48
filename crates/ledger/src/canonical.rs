//! Record canonicalization: every record is stored as its RFC 8785 (JSON Canonicalization
//! Scheme) serialization, so the same JSON value always has the same bytes and the same leaf hash.
//!
//! [`canonicalize`] produces the bytes (via `serde_json_canonicalizer`); [`check_canonical`]
//! decides whether stored bytes are exactly the canonical form of the JSON they hold. Verifying a
//! million records must be fast, so the check first runs a single-pass scanner that accepts only
//! forms it can prove canonical without re-serializing (sorted unique keys, minimal string escapes,
//! small integers, no whitespace); anything else — floats, large numbers, escaped keys, or bytes
//! that are simply wrong — is decided by parsing and re-canonicalizing, which is authoritative.

use serde_json::Value;

/// The deepest nesting a record may have: the limit of `serde_json`'s parser, so every record
/// that can be appended can also be parsed back by a verifier.
pub const MAX_DEPTH: usize = 128;

/// Why bytes are not (or a value cannot become) a canonical record.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    #[error("cannot serialize the record as JSON: {0}")]
    Serialize(#[source] serde_json::Error),
    #[error("not UTF-8: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("not in RFC 8785 canonical form: first difference at byte {offset}")]
    NotCanonical { offset: usize },
}

/// The RFC 8785 canonical bytes of `value`.
///
/// Fails only if the result could not be read back (nesting deeper than [`MAX_DEPTH`]), so
/// whatever this returns passes [`check_canonical`].
pub fn canonicalize(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let bytes = serde_json_canonicalizer::to_vec(value).map_err(CanonicalError::Serialize)?;
    check_canonical(&bytes)?;
    Ok(bytes)
}

/// Checks that `bytes` are valid UTF-8 JSON in exactly the RFC 8785 form of the value they hold.
pub fn check_canonical(bytes: &[u8]) -> Result<(), CanonicalError> {
    let text = std::str::from_utf8(bytes)?;
    if certainly_canonical(text) {
        return Ok(());
    }
    let value: Value = serde_json::from_str(text).map_err(CanonicalError::NotJson)?;
    let canonical = serde_json_canonicalizer::to_vec(&value).map_err(CanonicalError::Serialize)?;
    if canonical == bytes {
        return Ok(());
    }
    let offset = canonical
        .iter()
        .zip(bytes)
        .position(|(a, b)| a != b)
        .unwrap_or(canonical.len().min(bytes.len()));
    Err(CanonicalError::NotCanonical { offset })
}

/// True only when `text` is certainly canonical; false means "decide the slow way".
fn certainly_canonical(text: &str) -> bool {
    let mut s = Scanner { text, pos: 0 };
    s.value(0) && s.pos == text.len()
}

struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &str) -> bool {
        if self.text.as_bytes().get(self.pos..self.pos + word.len()) == Some(word.as_bytes()) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'{') => depth < MAX_DEPTH && self.object(depth + 1),
            Some(b'[') => depth < MAX_DEPTH && self.array(depth + 1),
            Some(b'"') => self.string().is_some(),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.integer(),
            _ => false,
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.pos += 1;
        if self.eat(b']') {
            return true;
        }
        loop {
            if !self.value(depth) {
                return false;
            }
            if self.eat(b']') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.pos += 1;
        if self.eat(b'}') {
            return true;
        }
        let mut previous: Option<&'a str> = None;
        loop {
            let Some(key) = self.string() else {
                return false;
            };
            // Escaped keys would need decoding before comparison: leave them to the slow path.
            if key.contains('\\') {
                return false;
            }
            if let Some(prev) = previous {
                // RFC 8785 §3.2.3: keys sorted by their UTF-16 code units, and unique.
                if prev.encode_utf16().cmp(key.encode_utf16()) != std::cmp::Ordering::Less {
                    return false;
                }
            }
            previous = Some(key);
            if !self.eat(b':') || !self.value(depth) {
                return false;
            }
            if self.eat(b'}') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    /// A string with only the escapes RFC 8785 requires; returns its raw contents.
    fn string(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.pos;
        loop {
            match self.peek()? {
                b'"' => {
                    let raw = self.text.get(start..self.pos)?;
                    self.pos += 1;
                    return Some(raw);
                }
                b'\\' => {
                    self.pos += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
                        b'u' => {
                            let hex = self.text.as_bytes().get(self.pos + 1..self.pos + 5)?;
                            // Only control characters without a short form are written as \u00xx,
                            // in lower-case hex.
                            let ok = matches!(hex, [b'0', b'0', b'0' | b'1', low]
                                if low.is_ascii_digit() || (b'a'..=b'f').contains(low))
                                && !matches!(hex, [_, _, b'0', b'8' | b'9' | b'a' | b'c' | b'd']);
                            if !ok {
                                return None;
                            }
                            self.pos += 5;
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                _ => self.pos += 1,
            }
        }
    }

    /// An integer of at most 15 digits (so exactly representable and printed as written), not
    /// `-0`; anything else is left to the slow path.
    fn integer(&mut self) -> bool {
        let negative = self.eat(b'-');
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        let digits = self.pos - start;
        let leading_zero = self.text.as_bytes().get(start) == Some(&b'0');
        if digits == 0 || digits > 15 || (leading_zero && (digits > 1 || negative)) {
            return false;
        }
        !matches!(self.peek(), Some(b'.' | b'e' | b'E'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_sorts_keys_and_strips_whitespace() {
        let v: Value =
            serde_json::from_str(r#"{"b": 1, "a": [true, null, "x\n"], "c": 1.50}"#).unwrap();
        let bytes = canonicalize(&v).unwrap();
        assert_eq!(bytes, br#"{"a":[true,null,"x\n"],"b":1,"c":1.5}"#);
        check_canonical(&bytes).unwrap();
    }

    #[test]
    fn fast_path_accepts_common_records() {
        for text in [
            r#"{"agent":"spiffe://a/agent/x","chain":["user:alice"],"kind":"tool_call","n":-12}"#,
            r#"{"a":"\u001f\b\t","b":{"c":[]},"d":0}"#,
            r#"[]"#,
            r#""é€😀""#,
        ] {
            assert!(certainly_canonical(text), "{text}");
            check_canonical(text.as_bytes()).unwrap();
        }
    }

    #[test]
    fn non_canonical_forms_are_rejected() {
        for text in [
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a": 1}"#,
            r#"{"a":1.0}"#,
            r#"{"a":1e2}"#,
            r#"{"a":-0}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a":"\/"}"#,
            r#"{"a":"\u000a"}"#,
            r#"{"a":"\u001F"}"#,
            r#"{"a":12345678901234567890}"#,
            " {}",
        ] {
            assert!(!certainly_canonical(text), "{text}");
            assert!(
                matches!(
                    check_canonical(text.as_bytes()),
                    Err(CanonicalError::NotCanonical { .. })
                ),
                "{text}"
            );
        }
        assert!(matches!(
            check_canonical(b"{\"a\":"),
            Err(CanonicalError::NotJson(_))
        ));
        assert!(matches!(
            check_canonical(b"\"\xff\""),
            Err(CanonicalError::NotUtf8(_))
        ));
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // U+FF61 sorts before U+1F600 by code point (and in UTF-8), after it in UTF-16 code units.
        let v = json!({"\u{1F600}": 1, "\u{FF61}": 2});
        let bytes = canonicalize(&v).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "{\"\u{1F600}\":1,\"\u{FF61}\":2}"
        );
    }

    #[test]
    fn slow_path_decides_floats_and_big_numbers() {
        check_canonical(br#"{"a":1.5,"b":1e+30,"c":9007199254740993}"#).unwrap_err();
        check_canonical(br#"{"a":1.5,"b":1e+30}"#).unwrap();
        check_canonical(canonicalize(&json!({"n": u64::MAX})).unwrap().as_slice()).unwrap();
    }

    #[test]
    fn records_nested_too_deep_are_refused() {
        let mut v = json!(1);
        for _ in 0..MAX_DEPTH + 1 {
            v = json!([v]);
        }
        assert!(canonicalize(&v).is_err());
    }
}
