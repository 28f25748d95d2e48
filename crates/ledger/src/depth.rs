//! How deeply JSON may nest: one limit for everything accepted from outside, and a reader for
//! stored records that never fails on depth.
//!
//! `serde_json` refuses to read past 127 levels of nesting. A request body that nests 127 levels
//! is readable, but the record that wraps its `args` (`{"call": {"args": …}}`) is not: the
//! ledger would store an entry no reader can parse. So every JSON text the control plane accepts
//! (server request bodies, gateway JSON-RPC messages, and the `args` and `result` values the
//! engine records) is held to [`MAX_INPUT_DEPTH`], checked on the bytes before they are parsed.
//! [`MAX_RECORD_DEPTH`] leaves headroom above it for the record that wraps an input and the API
//! answer that wraps a record, and still stays well below what any JSON reader accepts.
//!
//! A ledger may still hold a deeper record (written before this limit, or by another writer);
//! [`read_record`] reads it with every subtree past [`MAX_RECORD_DEPTH`] replaced by a marker
//! string, so every reader sees the rest of the record (its kind, agent, tool, verdict) and no
//! record can stop a reader.

use serde_json::Value;

/// The deepest nesting accepted in any JSON text from outside: a request body, a JSON-RPC
/// message, a call's `args`, an observation's `result`. The outermost object or array is level 1.
pub const MAX_INPUT_DEPTH: usize = 64;

/// The deepest a stored record is read whole; deeper subtrees are replaced by
/// [`TRUNCATED_MARKER`]-prefixed strings. An input of [`MAX_INPUT_DEPTH`] inside its record (a
/// few levels) inside an API answer (a few more) stays below it, and it stays well below
/// `serde_json`'s 127.
pub const MAX_RECORD_DEPTH: usize = 96;

/// How a subtree cut by [`read_record`] reads: this, then what was cut.
pub const TRUNCATED_MARKER: &str = "<truncated: nested deeper than 96 levels>";

/// A JSON text that nests deeper than a limit, with where the limit was first crossed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "JSON nested more than {limit} levels deep at line {line} column {column} (at most {limit} are accepted)"
)]
pub struct TooDeep {
    pub limit: usize,
    /// 1-based line of the bracket that opened level `limit + 1`.
    pub line: usize,
    /// 1-based column (in bytes) of that bracket.
    pub column: usize,
}

/// A bracket outside strings: its level (the level it opens, or the level it closes; the
/// outermost is 1) and its byte offset.
enum Bracket {
    Open(usize, usize),
    Close(usize, usize),
}

/// Scans the structure of a JSON text (brackets outside strings) without parsing it, until `f`
/// returns false. Malformed text is scanned as far as it goes; the parser that follows reports
/// what is wrong with it.
fn scan(text: &[u8], mut f: impl FnMut(Bracket) -> bool) {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in text.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if !f(Bracket::Open(depth, i)) {
                    return;
                }
            }
            b'}' | b']' => {
                if !f(Bracket::Close(depth, i)) {
                    return;
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
}

/// Checks that `text` nests at most `limit` levels, in one pass over its bytes (no recursion,
/// so any size is safe to check).
pub fn check_depth(text: &[u8], limit: usize) -> Result<(), TooDeep> {
    let mut crossed = None;
    scan(text, |bracket| match bracket {
        Bracket::Open(depth, offset) if depth > limit => {
            crossed = Some(offset);
            false
        }
        _ => true,
    });
    match crossed {
        None => Ok(()),
        Some(offset) => {
            let before = text.get(..offset).unwrap_or_default();
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = before
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |p| p + 1);
            Err(TooDeep {
                limit,
                line,
                column: offset - line_start + 1,
            })
        }
    }
}

/// How many levels a value nests (a scalar is 0, `[]` is 1), without recursion.
pub fn value_depth(value: &Value) -> usize {
    let mut deepest = 0;
    // Only containers go on the stack: a scalar is as deep as the container that holds it.
    let nested = |v: &&Value| matches!(v, Value::Array(_) | Value::Object(_));
    let mut stack: Vec<(&Value, usize)> = Vec::new();
    if nested(&value) {
        stack.push((value, 0));
    }
    while let Some((v, depth)) = stack.pop() {
        deepest = deepest.max(depth + 1);
        match v {
            Value::Array(items) => {
                stack.extend(items.iter().filter(nested).map(|x| (x, depth + 1)));
            }
            Value::Object(map) => {
                stack.extend(map.values().filter(nested).map(|x| (x, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Checks a value already parsed (an argument built in memory) against `limit`.
pub fn check_value_depth(value: &Value, limit: usize) -> Result<(), usize> {
    match value_depth(value) {
        d if d > limit => Err(d),
        _ => Ok(()),
    }
}

/// A stored record as read: the value, and whether parts of it nested too deep to be kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRecord {
    pub value: Value,
    /// How many subtrees past [`MAX_RECORD_DEPTH`] were replaced by a marker (0: read whole).
    pub truncated: usize,
}

/// Reads a stored record. Subtrees nested deeper than [`MAX_RECORD_DEPTH`] are replaced by the
/// string [`TRUNCATED_MARKER`] (the stored bytes, and so the leaf hash, are unchanged), so a
/// record is never unreadable for its depth; only bytes that are not JSON fail.
pub fn read_record(data: &[u8]) -> Result<ReadRecord, serde_json::Error> {
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    let mut open_at = 0usize;
    scan(data, |bracket| {
        match bracket {
            Bracket::Open(depth, offset) if depth == MAX_RECORD_DEPTH + 1 => open_at = offset,
            Bracket::Close(depth, offset) if depth == MAX_RECORD_DEPTH + 1 => {
                cuts.push((open_at, offset + 1));
            }
            _ => {}
        }
        true
    });
    if cuts.is_empty() {
        return Ok(ReadRecord {
            value: serde_json::from_slice(data)?,
            truncated: 0,
        });
    }
    let marker = format!("\"{TRUNCATED_MARKER}\"");
    let mut text = Vec::with_capacity(data.len());
    let mut from = 0;
    for (start, end) in &cuts {
        text.extend_from_slice(data.get(from..*start).unwrap_or_default());
        text.extend_from_slice(marker.as_bytes());
        from = *end;
    }
    text.extend_from_slice(data.get(from..).unwrap_or_default());
    Ok(ReadRecord {
        value: serde_json::from_slice(&text)?,
        truncated: cuts.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn counts_levels_outside_strings_only() {
        assert_eq!(check_depth(br#"{"a":"[[[[[[","b":[1]}"#, 2), Ok(()));
        assert_eq!(
            check_depth(br#"{"a":"\"[[[","b":[[1]]}"#, 2).map_err(|e| e.column),
            Err(19)
        );
        assert_eq!(check_depth(nested(64).as_bytes(), MAX_INPUT_DEPTH), Ok(()));
        let e = check_depth(format!("{{\n \"args\": {}}}", nested(126)).as_bytes(), 64);
        assert_eq!(
            e,
            Err(TooDeep {
                limit: 64,
                line: 2,
                column: 73
            })
        );
    }

    #[test]
    fn value_depth_matches_the_text() {
        let v: Value = serde_json::from_str(&format!(r#"{{"a": {}}}"#, nested(30))).unwrap();
        assert_eq!(value_depth(&v), 31);
        assert_eq!(value_depth(&Value::Null), 0);
        assert_eq!(check_value_depth(&v, 30), Err(31));
    }

    #[test]
    fn a_deep_record_reads_with_its_deep_part_replaced() {
        let text = format!(
            r#"{{"call":{{"args":{},"tool":"nmap_scan"}},"kind":"decision"}}"#,
            nested(200)
        );
        assert!(serde_json::from_str::<Value>(&text).is_err());
        let read = read_record(text.as_bytes()).unwrap();
        assert_eq!(read.truncated, 1);
        assert_eq!(read.value["kind"], "decision");
        assert_eq!(read.value["call"]["tool"], "nmap_scan");
        assert_eq!(value_depth(&read.value), MAX_RECORD_DEPTH);
        assert!(serde_json::to_string(&read.value)
            .unwrap()
            .contains(TRUNCATED_MARKER));
    }

    #[test]
    fn the_marker_names_the_limit() {
        assert!(TRUNCATED_MARKER.contains(&MAX_RECORD_DEPTH.to_string()));
    }

    #[test]
    fn a_shallow_record_reads_whole() {
        let read = read_record(br#"{"kind":"x","s":"]]]}}}"}"#).unwrap();
        assert_eq!(read.truncated, 0);
        assert_eq!(read.value["s"], "]]]}}}");
        assert!(read_record(b"{not json").is_err());
    }

    proptest! {
        /// Whatever the bytes, reading never panics, and a record that reads is never deeper
        /// than the readers' limit.
        #[test]
        fn read_record_never_fails_on_depth(levels in 0usize..400, tail in "[\\[\\]{}\":a,1 ]{0,40}") {
            let text = format!("{{\"k\":{}{}}}", nested(levels), tail);
            if let Ok(read) = read_record(text.as_bytes()) {
                prop_assert!(value_depth(&read.value) <= MAX_RECORD_DEPTH);
            }
            let _ = check_depth(text.as_bytes(), MAX_INPUT_DEPTH);
        }

        #[test]
        fn check_depth_agrees_with_value_depth(levels in 1usize..120) {
            let text = format!("{{\"k\":{}}}", nested(levels));
            let v: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(check_depth(text.as_bytes(), MAX_INPUT_DEPTH).is_ok(), value_depth(&v) <= MAX_INPUT_DEPTH);
        }
    }
}
