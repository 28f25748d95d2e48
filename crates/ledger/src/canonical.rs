//! Record canonicalization: every record is stored as its RFC 8785 (JSON Canonicalization
//! Scheme) serialization, so the same JSON value always has the same bytes and the same leaf hash.
//!
//! [`canonicalize`] produces the bytes; [`check_canonical`] decides whether stored bytes are
//! exactly the canonical form of the JSON they hold. Both sit on every append or every verified
//! entry, so both have a fast path for what records almost always hold (strings, safe integers,
//! booleans, null, objects and arrays) and leave everything else to `serde_json_canonicalizer`,
//! which is authoritative: [`canonicalize`] writes such values directly (numbers other than
//! integers of magnitude at most 2^53 need the ECMAScript number formatting, so a value holding
//! one is serialized by the crate instead), and the check first runs a single-pass scanner that
//! accepts only forms it can prove canonical without re-serializing (sorted unique keys, minimal
//! string escapes, small integers, no whitespace); anything else — floats, large numbers, escaped
//! keys, or bytes that are simply wrong — is decided by parsing and re-canonicalizing.

use serde_json::Value;
use std::cmp::Ordering;
use std::io::Write as _;

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
    let mut bytes = Vec::with_capacity(512);
    if write_canonical(value, 0, &mut bytes) {
        // Canonical by construction (and no deeper than a verifier's parser reads), so the
        // check below, a third of the cost, is left to the values the crate serializes.
        return Ok(bytes);
    }
    bytes = serde_json_canonicalizer::to_vec(value).map_err(CanonicalError::Serialize)?;
    check_canonical(&bytes)?;
    Ok(bytes)
}

/// The largest integer magnitude an IEEE double holds exactly: integers up to it are written as
/// their decimal digits by RFC 8785 (ECMAScript `Number.prototype.toString`), as by Rust.
const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// Appends the canonical form of `value` to `out`; false (leaving `out` partly written) when the
/// value holds a number other than an integer of magnitude at most 2^53, or nests deeper than
/// [`MAX_DEPTH`], which `serde_json_canonicalizer` must decide.
fn write_canonical(value: &Value, depth: usize, out: &mut Vec<u8>) -> bool {
    match value {
        Value::Null => out.write_all(b"null").is_ok(),
        Value::Bool(true) => out.write_all(b"true").is_ok(),
        Value::Bool(false) => out.write_all(b"false").is_ok(),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) if u <= MAX_EXACT_INTEGER => write!(out, "{u}").is_ok(),
            (_, Some(i)) if i.unsigned_abs() <= MAX_EXACT_INTEGER => write!(out, "{i}").is_ok(),
            _ => false,
        },
        Value::String(s) => {
            write_string(s, out);
            true
        }
        _ if depth >= MAX_DEPTH => false,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !write_canonical(item, depth + 1, out) {
                    return false;
                }
            }
            out.push(b']');
            true
        }
        Value::Object(map) => {
            // The map usually iterates in code-point order already, which is the canonical
            // order unless keys hold characters beyond U+E000; sort only when it is not.
            let sorted = map
                .keys()
                .zip(map.keys().skip(1))
                .all(|(a, b)| utf16_order(a, b) == Ordering::Less);
            if sorted {
                write_members(map.iter(), depth, out)
            } else {
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                members.sort_by(|a, b| utf16_order(a.0, b.0));
                write_members(members.into_iter(), depth, out)
            }
        }
    }
}

/// Appends `{"key":value,...}` of members already in canonical order (see [`write_canonical`]).
fn write_members<'a>(
    members: impl Iterator<Item = (&'a String, &'a Value)>,
    depth: usize,
    out: &mut Vec<u8>,
) -> bool {
    out.push(b'{');
    for (i, (key, item)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        if !write_canonical(item, depth + 1, out) {
            return false;
        }
    }
    out.push(b'}');
    true
}

/// Appends `s` as a JSON string escaped as RFC 8785 §3.2.2.2 asks: `"`, `\\` and the control
/// characters only, with the short forms where JSON has them and `\u00xx` in lower case
/// otherwise. The runs between them, most of a record, are copied whole.
fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut rest = s.as_bytes();
    loop {
        let plain = plain_len(rest);
        out.extend_from_slice(&rest[..plain]);
        let Some((&special, after)) = rest[plain..].split_first() else {
            break;
        };
        match special {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            c => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xf)],
            ]),
        }
        rest = after;
    }
    out.push(b'"');
}

/// The order of RFC 8785 §3.2.3: by UTF-16 code units. UTF-8 bytes sort by code point, which
/// agrees unless the first characters that differ are one of U+E000..=U+FFFF and one beyond
/// U+FFFF (a surrogate pair in UTF-16): only then does the first differing byte, a lead byte, reach
/// 0xEE.
fn utf16_order(a: &str, b: &str) -> Ordering {
    match a.bytes().zip(b.bytes()).find(|(x, y)| x != y) {
        Some((x, y)) if x.max(y) >= 0xEE => a.encode_utf16().cmp(b.encode_utf16()),
        Some((x, y)) => x.cmp(&y),
        None => a.len().cmp(&b.len()),
    }
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

/// The length of the prefix of `bytes` that a JSON string holds as it is: up to the first `"`,
/// `\\` or control character. Eight bytes at a time (this is most of the time a verifier spends
/// checking records): a byte of `w` is flagged in `(w - k) & !w & 0x80…` when it is below `k`,
/// and the lowest flag is always a true one (a false flag needs a borrow from a true one below).
fn plain_len(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |w: u64, k: u8| w.wrapping_sub(ONES * u64::from(k)) & !w & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    let mut len = 0;
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let w = u64::from_le_bytes(word);
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let special = below(w, 0x20) | below(quote, 1) | below(backslash, 1);
        if special != 0 {
            return len + (special.trailing_zeros() / 8) as usize;
        }
        len += 8;
    }
    let rest = chunks.remainder();
    len + rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(rest.len())
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
                if utf16_order(prev, key) != Ordering::Less {
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
            self.pos += plain_len(self.text.as_bytes().get(self.pos..)?);
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
                _ => return None,
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

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        // Keys and strings mix ASCII, control characters, and characters on both sides of the
        // UTF-16 / code point ordering difference.
        let text = "[a-c\\u{0}-\\u{1f}\"\\\\/\\u{7f}é\\u{ff61}\\u{1f600}]{0,4}";
        let key = "[a\\n\\u{ff61}\\u{1f600}]{0,3}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-(1i64 << 54)..(1i64 << 54)).prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(key, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn strings_are_escaped_as_the_reference_escapes_them(
            s in "[a-z\\u{0}-\\u{1f}\"\\\\/\\u{7f}é\\u{2028}\\u{ff61}\\u{1f600}]{0,40}",
            any_text in proptest::prelude::any::<String>(),
        ) {
            for text in [s, any_text] {
                let mut ours = Vec::new();
                write_string(&text, &mut ours);
                let reference = serde_json_canonicalizer::to_vec(&Value::String(text)).unwrap();
                proptest::prop_assert_eq!(ours, reference);
            }
        }

        #[test]
        fn plain_len_stops_at_the_first_special_byte(
            bytes in proptest::collection::vec(proptest::sample::select(
                vec![b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xff],
            ), 0..40),
        ) {
            let expected = bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(bytes.len());
            proptest::prop_assert_eq!(plain_len(&bytes), expected);
        }

        #[test]
        fn fast_path_agrees_with_the_reference(value in json_value()) {
            let reference = serde_json_canonicalizer::to_vec(&value).unwrap();
            proptest::prop_assert_eq!(canonicalize(&value).unwrap(), reference);
        }
    }

    #[test]
    fn records_nested_as_deep_as_allowed_read_back() {
        let mut v = json!(1);
        for _ in 0..MAX_DEPTH {
            v = json!([v]);
        }
        let bytes = canonicalize(&v).unwrap();
        check_canonical(&bytes).unwrap();
        let mut v = json!(1);
        for _ in 0..MAX_DEPTH / 2 {
            v = json!({"a": [v]});
        }
        let bytes = canonicalize(&v).unwrap();
        check_canonical(&bytes).unwrap();
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
