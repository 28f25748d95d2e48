//! JSON-RPC 2.0 at the level a transparent proxy needs: classify a message (request,
//! notification, response) without re-modelling it, edit one field of an object while keeping
//! every other byte, and build the few messages the gateway writes itself (errors, denials,
//! progress).
//!
//! Messages are carried as their original text. Only the messages the gateway acts on are
//! re-assembled, and then only at the level it edits: `RawObject` keeps every other member as
//! the exact text it arrived as, in its original order.

use crate::framing::SNIFF_BYTES;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::fmt;
use truststack_engine::ledger::depth::{check_depth, MAX_INPUT_DEPTH};

/// JSON-RPC error codes the gateway uses.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Implementation-defined: the upstream server is unavailable (exited, unreachable).
    pub const UPSTREAM_UNAVAILABLE: i64 = -32001;
    /// Implementation-defined: a message exceeds the configured size limit.
    pub const MESSAGE_TOO_LARGE: i64 = -32002;
}

/// A JSON-RPC id exactly as written (`7`, `"c-1"`): the key under which in-flight requests are
/// tracked, and the text echoed back in responses, so ids are preserved byte for byte.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct RawId(pub Box<str>);

impl RawId {
    pub fn from_raw(raw: &RawValue) -> RawId {
        RawId(raw.get().trim().into())
    }

    /// A numeric id the gateway allocates itself.
    pub fn number(n: u64) -> RawId {
        RawId(n.to_string().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a JSON value (for messages built with `json!`).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// A readable form for call ids and logs: strings without their quotes.
    pub fn display(&self) -> String {
        match serde_json::from_str::<Value>(&self.0) {
            Ok(Value::String(s)) => s,
            _ => self.0.to_string(),
        }
    }
}

impl fmt::Display for RawId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
}

/// A classified message, borrowing from its text.
#[derive(Debug)]
pub struct Message<'a> {
    pub kind: Kind,
    pub id: Option<RawId>,
    pub method: Option<Cow<'a, str>>,
    pub params: Option<&'a RawValue>,
    /// The `error` member of an error response.
    pub error: Option<&'a RawValue>,
}

/// Why a text is not a JSON-RPC message: the error to answer with.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub code: i64,
    pub message: String,
    /// The id of the offending message, when it could be read.
    pub id: Option<RawId>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

/// A member that is present, even as `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Whether the text is a JSON array (a JSON-RPC batch).
pub fn is_batch(text: &str) -> bool {
    text.trim_start().starts_with('[')
}

/// The elements of a batch, as raw texts.
pub fn batch_elements(text: &str) -> Result<Vec<&RawValue>, Invalid> {
    within_depth(text)?;
    serde_json::from_str::<Vec<&RawValue>>(text).map_err(|e| Invalid {
        code: if e.is_data() {
            code::INVALID_REQUEST
        } else {
            code::PARSE_ERROR
        },
        message: format!("not a JSON-RPC batch: {e}"),
        id: None,
    })
}

/// Classifies one message (not a batch).
pub fn parse(text: &str) -> Result<Message<'_>, Invalid> {
    within_depth(text)?;
    let env: Envelope = match serde_json::from_str(text) {
        Ok(env) => env,
        Err(e) if e.is_data() => {
            return Err(Invalid {
                code: code::INVALID_REQUEST,
                message: format!("not a JSON-RPC 2.0 message: {e}"),
                id: salvage_id(text),
            })
        }
        Err(e) => {
            return Err(Invalid {
                code: code::PARSE_ERROR,
                message: format!("parse error: {e}"),
                id: None,
            })
        }
    };
    let invalid = |message: &str, id: Option<RawId>| Invalid {
        code: code::INVALID_REQUEST,
        message: message.to_string(),
        id,
    };
    let id = match env.id {
        None => None,
        Some(raw) => {
            let t = raw.get().trim_start();
            let ok = t.starts_with('"')
                || t.starts_with('-')
                || t.starts_with(|c: char| c.is_ascii_digit());
            if !ok {
                return Err(invalid("`id` must be a string or a number", None));
            }
            Some(RawId::from_raw(raw))
        }
    };
    if env.jsonrpc.as_deref() != Some("2.0") {
        return Err(invalid("`jsonrpc` must be \"2.0\"", id));
    }
    match (&env.method, &id, env.result.is_some(), env.error.is_some()) {
        (Some(_), _, false, false) => Ok(Message {
            kind: if id.is_some() {
                Kind::Request
            } else {
                Kind::Notification
            },
            id,
            method: env.method,
            params: env.params,
            error: None,
        }),
        (None, Some(_), true, false) | (None, Some(_), false, true) => Ok(Message {
            kind: Kind::Response,
            id,
            method: None,
            params: None,
            error: env.error,
        }),
        (Some(_), _, _, _) => Err(invalid("a request must not carry `result` or `error`", id)),
        (None, None, _, _) => Err(invalid(
            "a message needs `method` (request, notification) or `id` (response)",
            None,
        )),
        (None, Some(_), _, _) => Err(invalid(
            "a response carries exactly one of `result` and `error`",
            id,
        )),
    }
}

/// Refuses a message nested deeper than the control plane accepts anywhere
/// ([`MAX_INPUT_DEPTH`]), before it is parsed: its arguments or result would end up in a ledger
/// record that readers could not read back. Checked on every message, from clients and from
/// upstream servers alike.
fn within_depth(text: &str) -> Result<(), Invalid> {
    check_depth(text.as_bytes(), MAX_INPUT_DEPTH).map_err(|e| Invalid {
        code: code::INVALID_REQUEST,
        message: format!("message refused: {e}"),
        id: sniff_id(
            text.as_bytes()
                .get(..SNIFF_BYTES)
                .unwrap_or(text.as_bytes()),
        ),
    })
}

/// Best effort: the `id` of a message that is JSON but not valid JSON-RPC.
fn salvage_id(text: &str) -> Option<RawId> {
    let v: Value = serde_json::from_str(text).ok()?;
    match v.get("id")? {
        id @ (Value::String(_) | Value::Number(_)) => Some(RawId(id.to_string().into())),
        _ => None,
    }
}

/// Best effort on a prefix of a message too large to parse: the id it names, when its `id`
/// member comes early (`{"jsonrpc":"2.0","id":7,...`), so the request can get its error.
pub fn sniff_id(prefix: &[u8]) -> Option<RawId> {
    let text = String::from_utf8_lossy(prefix);
    let at = text.find("\"id\"")?;
    let rest = text
        .get(at + 4..)?
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    if let Some(body) = rest.strip_prefix('"') {
        let mut end = None;
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end?;
        return Some(RawId(format!("\"{}\"", body.get(..end)?).into()));
    }
    let n: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    (!n.is_empty()).then(|| RawId(n.into()))
}

/// A JSON object kept as its members' raw texts, in order: editing one member leaves the others
/// exactly as they were.
#[derive(Debug, Clone, Default)]
pub struct RawObject {
    pub members: Vec<(String, Box<RawValue>)>,
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push((k, v));
                }
                Ok(RawObject { members })
            }
        }
        d.deserialize_map(V)
    }
}

impl RawObject {
    pub fn parse(text: &str) -> Result<RawObject, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| &**v)
    }

    /// Replaces a member in place (or appends it).
    pub fn set(&mut self, key: &str, value: Box<RawValue>) {
        match self.members.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.members.push((key.to_string(), value)),
        }
    }

    pub fn set_json(&mut self, key: &str, value: &Value) {
        if let Ok(raw) = serde_json::value::to_raw_value(value) {
            self.set(key, raw);
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.members.retain(|(k, _)| k != key);
    }

    /// The object's text: edited members re-serialized, the rest verbatim.
    pub fn to_text(&self) -> String {
        let len = self
            .members
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>()
            + 2;
        let mut out = String::with_capacity(len);
        out.push('{');
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).unwrap_or_else(|_| "\"\"".into()));
            out.push(':');
            out.push_str(v.get());
        }
        out.push('}');
        out
    }

    pub fn into_raw(self) -> Box<RawValue> {
        RawValue::from_string(self.to_text()).unwrap_or_else(|_| raw_null())
    }
}

/// `null` as a raw value.
pub fn raw_null() -> Box<RawValue> {
    serde_json::value::to_raw_value(&Value::Null).unwrap_or_else(|_| Box::<RawValue>::default())
}

/// A raw value from text the gateway produced.
pub fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).unwrap_or_else(|_| raw_null())
}

/// Rewrites the `id` of a message (used where ids are remapped between several upstreams).
pub fn with_id(text: &str, id: &RawId) -> Option<String> {
    let mut obj = RawObject::parse(text).ok()?;
    obj.set("id", raw(id.0.to_string()));
    Some(obj.to_text())
}

/// One line for a newline-delimited transport: JSON text cannot hold a raw newline inside a
/// string, so any newline is insignificant whitespace and becomes a space.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if text.contains(['\n', '\r']) {
        Cow::Owned(text.replace(['\n', '\r'], " "))
    } else {
        Cow::Borrowed(text)
    }
}

/// An error response.
pub fn error_response(id: Option<&RawId>, code: i64, message: &str) -> String {
    let id = id.map_or_else(|| "null".to_string(), |id| id.0.to_string());
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"error\":{}}}",
        json!({"code": code, "message": message})
    )
}

/// A successful response with a result the gateway built.
pub fn result_response(id: &RawId, result: &Value) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{result}}}",
        id.0
    )
}

/// A request the gateway sends itself.
pub fn request(id: &RawId, method: &str, params: &Value) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":{},\"params\":{params}}}",
        id.0,
        Value::from(method)
    )
}

/// A notification the gateway sends itself.
pub fn notification(method: &str, params: &Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

/// A `CallToolResult` with `isError: true`: how a denial reaches the model, as a tool result it
/// can read rather than a protocol error.
pub fn tool_error(text: &str, meta: &Value) -> Value {
    json!({
        "content": [{"type": "text", "text": text}],
        "isError": true,
        "_meta": meta,
    })
}

/// The first protocol revision without the `initialize` handshake: every request carries its
/// revision in `_meta` ([`REQUEST_VERSION_KEY`]) and every result its `resultType`.
pub const STATELESS_VERSION: &str = "2026-07-28";

/// Where a request of the stateless revisions names its protocol revision, in `params._meta`.
pub const REQUEST_VERSION_KEY: &str = "io.modelcontextprotocol/protocolVersion";

/// Whether `version` is a stateless revision (revisions are dates: they sort as text).
pub fn is_stateless(version: &str) -> bool {
    version >= STATELESS_VERSION
}

/// The protocol revision a request names in `params._meta` (stateless revisions), with that
/// `_meta`.
pub fn request_version(text: &str, params: Option<&RawValue>) -> Option<(String, Value)> {
    if !text.contains(REQUEST_VERSION_KEY) {
        return None;
    }
    let meta: Value = param(params, "_meta")?;
    let version = meta.get(REQUEST_VERSION_KEY)?.as_str()?.to_string();
    Some((version, meta))
}

/// Reads `params.<key>` of a request as a typed value.
pub fn param<T: for<'de> Deserialize<'de>>(params: Option<&RawValue>, key: &str) -> Option<T> {
    let obj = RawObject::parse(params?.get()).ok()?;
    serde_json::from_str(obj.get(key)?.get()).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        let m = parse(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#)
            .unwrap();
        assert_eq!(m.kind, Kind::Request);
        assert_eq!(m.id.unwrap().as_str(), "7");
        assert_eq!(m.method.as_deref(), Some("tools/call"));
        let m = parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(m.kind, Kind::Notification);
        let m = parse(r#"{"jsonrpc":"2.0","id":"a\"b","result":{}}"#).unwrap();
        assert_eq!(m.kind, Kind::Response);
        assert_eq!(m.id.unwrap().as_str(), r#""a\"b""#);
        let m = parse(r#"{"jsonrpc":"2.0","id":1,"result":null}"#).unwrap();
        assert_eq!(m.kind, Kind::Response);
    }

    #[test]
    fn rejects_malformed_messages_with_the_right_code() {
        assert_eq!(parse("{not json").unwrap_err().code, code::PARSE_ERROR);
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":1}"#).unwrap_err().code,
            code::INVALID_REQUEST
        );
        let e = parse(r#"{"jsonrpc":"1.0","id":4,"method":"x"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_REQUEST);
        assert_eq!(e.id.unwrap().as_str(), "4");
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#)
                .unwrap_err()
                .code,
            code::INVALID_REQUEST
        );
        assert_eq!(parse("[1,2]").unwrap_err().code, code::INVALID_REQUEST);
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","method":7}"#).unwrap_err().code,
            code::INVALID_REQUEST
        );
    }

    #[test]
    fn raw_object_edits_one_member_and_keeps_the_rest_verbatim() {
        let text = r#"{"z":1.50,"name":"a","b":{"k":  [1, 2]}}"#;
        let mut o = RawObject::parse(text).unwrap();
        o.set_json("name", &json!("fs__a"));
        assert_eq!(
            o.to_text(),
            r#"{"z":1.50,"name":"fs__a","b":{"k":  [1, 2]}}"#
        );
    }

    #[test]
    fn sniffs_ids_of_oversized_messages() {
        assert_eq!(
            sniff_id(br#"{"jsonrpc":"2.0","id":42,"result":{"#)
                .unwrap()
                .as_str(),
            "42"
        );
        assert_eq!(
            sniff_id(br#"{"id":"c-\"1","jsonrpc""#).unwrap().as_str(),
            r#""c-\"1""#
        );
        assert!(sniff_id(br#"{"jsonrpc":"2.0","result""#).is_none());
    }

    #[test]
    fn one_line_keeps_json_meaning() {
        let pretty = "{\n  \"a\": \"x\"\r\n}";
        let line = one_line(pretty);
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v, json!({"a": "x"}));
    }

    #[test]
    fn a_message_nested_past_the_limit_is_refused_with_its_id() {
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"x","arguments":{{"a":{}{}}}}}}}"#,
            "[".repeat(126),
            "]".repeat(126)
        );
        let e = parse(&deep).unwrap_err();
        assert_eq!(e.code, code::INVALID_REQUEST);
        assert_eq!(e.id.as_ref().map(RawId::as_str), Some("7"));
        assert!(e.message.contains("more than 64 levels"), "{}", e.message);
        let batch = format!("[{deep}]");
        assert!(batch_elements(&batch).is_err());
    }
}
