//! The tools a credential may call, and the attenuation order between tool sets.
//!
//! A credential lists tool names or tool classes (as the catalog defines them), or `*` for any
//! tool. A listed string covers exactly the same string; `*` covers everything, `*` included.
//! A child's set is within its parent's when every entry of the child is covered by the parent.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The entry that allows any tool.
pub const ANY_TOOL: &str = "*";
/// The longest tool name or class, in bytes.
pub const MAX_TOOL_LEN: usize = 256;

/// Why a tool list is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// An empty entry (`ScanTool,,CodeAnalysisTool`).
    #[error("a tool name is empty")]
    Empty,
    /// An entry longer than 256 bytes.
    #[error("tool name `{name}` is {len} bytes long; at most {MAX_TOOL_LEN} are allowed")]
    TooLong {
        /// The start of the entry.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Whitespace, a control character or a comma in an entry.
    #[error("tool name `{name}`: character {ch:?} is not allowed (no whitespace, control characters or commas)")]
    BadChar {
        /// The entry.
        name: String,
        /// The offending character.
        ch: char,
    },
}

/// A set of tool names or classes, sorted and without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct ToolSet(Vec<String>);

impl ToolSet {
    /// Validates and normalizes a list of tool names or classes.
    pub fn new<I, S>(tools: I) -> Result<Self, ToolError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out = Vec::new();
        for tool in tools {
            let tool = tool.into();
            check_tool(&tool)?;
            out.push(tool);
        }
        out.sort();
        out.dedup();
        Ok(ToolSet(out))
    }

    /// Parses a comma-separated list (`ScanTool,CodeAnalysisTool`); spaces around entries are
    /// ignored; an empty string is the empty set.
    pub fn parse_list(list: &str) -> Result<Self, ToolError> {
        if list.trim().is_empty() {
            return Ok(ToolSet::default());
        }
        ToolSet::new(list.split(',').map(str::trim))
    }

    /// Whether `*` is listed.
    pub fn is_any(&self) -> bool {
        self.0.iter().any(|t| t == ANY_TOOL)
    }

    /// Whether this set covers the entry `tool` (the same string, or `*`).
    pub fn covers(&self, tool: &str) -> bool {
        self.is_any() || self.0.binary_search_by(|t| t.as_str().cmp(tool)).is_ok()
    }

    /// The entries of `other` this set does not cover (empty: `other` is within this set).
    pub fn uncovered<'a>(&self, other: &'a ToolSet) -> Vec<&'a str> {
        other
            .0
            .iter()
            .map(String::as_str)
            .filter(|t| !self.covers(t))
            .collect()
    }

    /// Whether every entry of `self` is covered by `parent`.
    pub fn is_within(&self, parent: &ToolSet) -> bool {
        parent.uncovered(self).is_empty()
    }

    /// Whether a call to the tool `name`, of the catalog classes `classes`, is allowed: the set
    /// lists `*`, the name, or one of the classes.
    pub fn allows<S: AsRef<str>>(&self, name: &str, classes: &[S]) -> bool {
        self.covers(name) || classes.iter().any(|c| self.covers(c.as_ref()))
    }

    /// The entries, sorted.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Whether the set is empty (no tool is allowed).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn check_tool(tool: &str) -> Result<(), ToolError> {
    if tool.is_empty() {
        return Err(ToolError::Empty);
    }
    if tool.len() > MAX_TOOL_LEN {
        return Err(ToolError::TooLong {
            name: tool.chars().take(32).collect(),
            len: tool.len(),
        });
    }
    if let Some(ch) = tool
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == ',')
    {
        return Err(ToolError::BadChar {
            name: tool.to_string(),
            ch,
        });
    }
    Ok(())
}

impl TryFrom<Vec<String>> for ToolSet {
    type Error = ToolError;
    fn try_from(v: Vec<String>) -> Result<Self, ToolError> {
        ToolSet::new(v)
    }
}

impl From<ToolSet> for Vec<String> {
    fn from(t: ToolSet) -> Vec<String> {
        t.0
    }
}

impl fmt::Display for ToolSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn covering() {
        let parent = ToolSet::parse_list("ScanTool, CodeAnalysisTool").unwrap();
        let child = ToolSet::parse_list("ScanTool").unwrap();
        assert!(child.is_within(&parent));
        assert!(!parent.is_within(&child));
        let any = ToolSet::parse_list("*").unwrap();
        assert!(parent.is_within(&any));
        assert!(any.is_within(&any));
        assert_eq!(parent.uncovered(&any), vec!["*"]);
        assert!(ToolSet::default().is_within(&ToolSet::default()));
    }

    #[test]
    fn allows_by_name_or_class() {
        let t = ToolSet::parse_list("ScanTool,prod_db_query").unwrap();
        assert!(t.allows("nmap_scan", &["ScanTool"]));
        assert!(t.allows("prod_db_query", &[] as &[&str]));
        assert!(!t.allows("http_upload", &["DataExfiltration"]));
        assert!(ToolSet::parse_list("*")
            .unwrap()
            .allows("anything", &[] as &[&str]));
    }

    #[test]
    fn normalizes_and_validates() {
        let t = ToolSet::parse_list("b,a,b").unwrap();
        assert_eq!(t.as_slice(), ["a", "b"]);
        assert_eq!(t.to_string(), "a,b");
        assert!(ToolSet::parse_list("").unwrap().is_empty());
        assert_eq!(ToolSet::parse_list("a,,b"), Err(ToolError::Empty));
        assert!(matches!(
            ToolSet::new(["a b"]),
            Err(ToolError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            ToolSet::new(["x".repeat(300)]),
            Err(ToolError::TooLong { len: 300, .. })
        ));
    }
}
