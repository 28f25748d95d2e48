//! What made a policy fire: each of its predicates with its value for the call.
//!
//! An explanation is kept as the evaluation left it (truths, counts, the argument values with
//! their sources) and becomes JSON only when it is written: a decision is explained on every
//! call, and building JSON objects for it cost more than deciding.
//!
//! Its JSON form is an object from each predicate's text to `true`/`false` (a predicate with no
//! value to show) or `{"holds": …, "value": …}`; a value predicate's `value` lists its values,
//! each as `{"value": …, "from": "user" | "trusted" | "untrusted" | "none"}` where the test read
//! the provenance index. Predicates are in the order of their text.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Each predicate of a fired policy, by its text, with its value for the call.
#[derive(Debug, Clone, Default)]
pub struct Explanation(Vec<(Arc<str>, Explained)>);

/// One predicate's value for the call.
#[derive(Debug, Clone)]
pub enum Explained {
    /// Whether a predicate with no value to show held.
    Holds(bool),
    /// Whether it held, and the value behind it (a count, an attribute).
    Value { holds: bool, value: Value },
    /// A value predicate: whether it held, and each of its values with its strongest source
    /// where the test read the provenance index.
    Values {
        holds: bool,
        values: Vec<(Value, Option<&'static str>)>,
    },
    /// Read back from JSON (a recorded decision), as it was written.
    Json(Value),
}

impl Explanation {
    /// The predicates in the order of their text; of two with the same text (the same
    /// predicate, so the same value), the last is kept.
    pub fn new(mut atoms: Vec<(Arc<str>, Explained)>) -> Explanation {
        atoms.sort_by(|a, b| a.0.cmp(&b.0));
        atoms.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        Explanation(atoms)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Explained)> {
        self.0.iter().map(|(label, e)| (&**label, e))
    }

    pub fn get(&self, label: &str) -> Option<&Explained> {
        self.iter().find(|(l, _)| *l == label).map(|(_, e)| e)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Explained {
    /// Whether the predicate held.
    pub fn holds(&self) -> bool {
        match self {
            Explained::Holds(holds)
            | Explained::Value { holds, .. }
            | Explained::Values { holds, .. } => *holds,
            Explained::Json(Value::Bool(holds)) => *holds,
            Explained::Json(v) => v.get("holds") == Some(&Value::Bool(true)),
        }
    }

    /// The number behind the predicate (a count), if its value is one.
    pub fn number(&self) -> Option<&serde_json::Number> {
        match self {
            Explained::Value {
                value: Value::Number(n),
                ..
            } => Some(n),
            Explained::Json(v) => v.get("value").and_then(|v| match v {
                Value::Number(n) => Some(n),
                _ => None,
            }),
            _ => None,
        }
    }

    /// The JSON form.
    pub fn to_value(&self) -> Value {
        match self {
            Explained::Json(v) => v.clone(),
            other => serde_json::to_value(other).unwrap_or(Value::Null),
        }
    }
}

/// Two explanations are equal when their JSON forms are.
impl PartialEq for Explained {
    fn eq(&self, other: &Self) -> bool {
        self.to_value() == other.to_value()
    }
}

impl PartialEq for Explanation {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .zip(other.iter())
                .all(|((la, a), (lb, b))| la == lb && a == b)
    }
}

impl Serialize for Explanation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (label, e) in self.iter() {
            map.serialize_entry(label, e)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Explanation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, Value>::deserialize(d)?;
        Ok(Explanation(
            map.into_iter()
                .map(|(label, v)| (Arc::from(label), Explained::Json(v)))
                .collect(),
        ))
    }
}

impl Serialize for Explained {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Explained::Holds(holds) => s.serialize_bool(*holds),
            Explained::Value { holds, value } => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("holds", holds)?;
                map.serialize_entry("value", value)?;
                map.end()
            }
            Explained::Values { holds, values } => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("holds", holds)?;
                map.serialize_entry("value", &Sourced(values))?;
                map.end()
            }
            Explained::Json(v) => v.serialize(s),
        }
    }
}

/// A value predicate's values, each with its source where it has one.
struct Sourced<'a>(&'a [(Value, Option<&'static str>)]);

impl Serialize for Sourced<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (value, from) in self.0 {
            match from {
                Some(from) => seq.serialize_element(&ValueFrom { value, from })?,
                None => seq.serialize_element(value)?,
            }
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct ValueFrom<'a> {
    value: &'a Value,
    from: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Explanation {
        Explanation::new(vec![
            ("b".into(), Explained::Holds(true)),
            (
                "a".into(),
                Explained::Value {
                    holds: true,
                    value: json!(101),
                },
            ),
            (
                "c".into(),
                Explained::Values {
                    holds: false,
                    values: vec![(json!("x@y.example"), Some("untrusted")), (json!(3), None)],
                },
            ),
            ("b".into(), Explained::Holds(false)),
        ])
    }

    #[test]
    fn the_json_form_is_ordered_by_text_and_keeps_the_last_of_equal_texts() {
        let text = serde_json::to_string(&sample()).unwrap();
        assert_eq!(
            text,
            r#"{"a":{"holds":true,"value":101},"b":false,"c":{"holds":false,"value":[{"value":"x@y.example","from":"untrusted"},3]}}"#
        );
        // Each predicate's own JSON form is the one the whole writes.
        let each: serde_json::Map<String, Value> = sample()
            .iter()
            .map(|(label, e)| (label.to_string(), e.to_value()))
            .collect();
        assert_eq!(serde_json::to_value(sample()).unwrap(), Value::Object(each));
    }

    #[test]
    fn read_back_it_equals_what_was_written_and_answers_the_same() {
        let written = sample();
        let read: Explanation =
            serde_json::from_str(&serde_json::to_string(&written).unwrap()).unwrap();
        assert_eq!(read, written);
        for ((_, a), (_, b)) in read.iter().zip(written.iter()) {
            assert_eq!(a.holds(), b.holds());
            assert_eq!(a.number(), b.number());
        }
        assert_eq!(read.get("a").and_then(Explained::number), Some(&101.into()));
    }
}
