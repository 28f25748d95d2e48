//! The tool catalog: what each tool is, so policies can speak of classes, modes and data.
//!
//! ```toml
//! [ip_ranges]
//! Corp_DMZ = ["198.51.100.0/24"]
//!
//! [network]
//! internal_domains = ["corp.acme.example"]
//!
//! [tools.nmap_scan]
//! classes = ["ScanTool"]
//! tactics = ["reconnaissance"]
//! attributes.Target_IP_Range = { from = "/target", classify = "ip_range" }
//!
//! [tools.prod_db_query]
//! data_source = { name = "Internal_Prod_DB", mode = "read" }
//!
//! [tools.http_upload]
//! classes = ["DataExfiltration"]
//! mode = "write_external"
//! record = "hash"
//! ```

use crate::ip_class::{classify_value, is_dns_name, Network};
use crate::parser::parse_net;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The class every tool missing from the catalog gets.
pub const UNKNOWN_CLASS: &str = "Unknown";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{file}: {message}")]
    Toml { file: String, message: String },
    #[error("{file}: tool `{tool}`: attribute `{attr}`: `{from}` is not a JSON pointer (it must start with `/`)")]
    BadPointer {
        file: String,
        tool: String,
        attr: String,
        from: String,
    },
    #[error(
        "{file}: ip range `{name}`: `{cidr}` is not an IP network (expected e.g. '10.0.0.0/8')"
    )]
    BadRange {
        file: String,
        name: String,
        cidr: String,
    },
    #[error("{file}: tool `{tool}`: output field `{field}` is not a JSON pointer (it must start with `/`)")]
    BadOutputField {
        file: String,
        tool: String,
        field: String,
    },
    #[error("{file}: [network] internal_domains: `{domain}` is not a DNS domain (expected e.g. 'corp.acme.example': labels of letters, digits, `-` and `_`)")]
    BadDomain { file: String, domain: String },
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
}

/// How an attribute's raw value is turned into what policies compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Classifier {
    /// `External_Public`, `Internal_Private`, `Loopback`, `Link_Local`, a named range, or
    /// `Unknown` for a value that is neither an address form nor a hostname (see
    /// [`crate::ip_class`]).
    IpRange,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeSpec {
    /// A JSON pointer (RFC 6901) into the call's arguments.
    pub from: String,
    #[serde(default)]
    pub classify: Option<Classifier>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataSourceSpec {
    pub name: String,
    pub mode: String,
}

/// Whether a tool's output is content the deployment vouches for (its own records, a search
/// index it runs) or content someone else wrote (a web page, a received email, a shared file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    Trusted,
    /// The default: a tool the catalog does not vouch for is someone else's content.
    #[default]
    Untrusted,
}

impl Trust {
    /// The provenance source bit values of this output count as.
    pub fn source(self) -> u8 {
        match self {
            Trust::Trusted => crate::provenance::TRUSTED,
            Trust::Untrusted => crate::provenance::UNTRUSTED,
        }
    }
}

/// How much of a tool's arguments and results the ledger keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordMode {
    #[default]
    Full,
    Hash,
    Redacted,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub classes: Vec<String>,
    /// Risk taxonomy tags (MITRE ATT&CK tactics by name, e.g. `reconnaissance`).
    #[serde(default)]
    pub tactics: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeSpec>,
    #[serde(default)]
    pub data_source: Option<DataSourceSpec>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub record: RecordMode,
    /// The trust of the tool's output (default `untrusted`).
    #[serde(default)]
    pub output: Trust,
    /// Trust per result field: JSON pointers into the result, `*` for any list element or
    /// object member; the longest matching pointer wins over `output`.
    #[serde(default)]
    pub output_fields: BTreeMap<String, Trust>,
}

/// `[network]`: what the catalog says about names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    /// DNS domains whose hosts are internal: a hostname target that is one of them, or under
    /// one, is `Internal_Private`; every other hostname is `External_Public`.
    #[serde(default)]
    internal_domains: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    /// Classes that policies may name though no tool here has them (a policy pack shared by
    /// deployments whose catalogs differ): naming one is then no misspelling, and it matches
    /// no call.
    #[serde(default)]
    classes: std::collections::BTreeSet<String>,
    #[serde(default)]
    ip_ranges: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    network: NetworkFile,
    #[serde(default)]
    tools: BTreeMap<String, ToolSpec>,
}

/// A parsed, validated catalog.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub tools: BTreeMap<String, ToolSpec>,
    /// Classes declared without a tool (`classes = [...]` at the top of the file).
    pub classes: std::collections::BTreeSet<String>,
    /// Named ranges and internal domains, for `ip_range` classification.
    pub network: Network,
}

impl Catalog {
    /// Parses a catalog from TOML text; `file` names it in errors.
    pub fn from_toml(file: &str, text: &str) -> Result<Catalog, CatalogError> {
        let raw: CatalogFile = toml::from_str(text).map_err(|e| CatalogError::Toml {
            file: file.to_string(),
            message: toml_message(text, &e),
        })?;
        let mut ranges = Vec::new();
        for (name, cidrs) in raw.ip_ranges {
            let mut nets = Vec::new();
            for cidr in cidrs {
                let net = parse_net(&cidr).ok_or_else(|| CatalogError::BadRange {
                    file: file.to_string(),
                    name: name.clone(),
                    cidr: cidr.clone(),
                })?;
                nets.push(net);
            }
            ranges.push((name, nets));
        }
        let mut internal_domains = Vec::new();
        for domain in raw.network.internal_domains {
            let name = domain
                .strip_suffix('.')
                .unwrap_or(&domain)
                .to_ascii_lowercase();
            if !is_dns_name(&name) {
                return Err(CatalogError::BadDomain {
                    file: file.to_string(),
                    domain,
                });
            }
            internal_domains.push(name);
        }
        for (tool, spec) in &raw.tools {
            if let Some(field) = spec.output_fields.keys().find(|f| !f.starts_with('/')) {
                return Err(CatalogError::BadOutputField {
                    file: file.to_string(),
                    tool: tool.clone(),
                    field: field.clone(),
                });
            }
            for (attr, a) in &spec.attributes {
                if !a.from.is_empty() && !a.from.starts_with('/') {
                    return Err(CatalogError::BadPointer {
                        file: file.to_string(),
                        tool: tool.clone(),
                        attr: attr.clone(),
                        from: a.from.clone(),
                    });
                }
            }
        }
        Ok(Catalog {
            tools: raw.tools,
            classes: raw.classes,
            network: Network {
                ranges,
                internal_domains,
            },
        })
    }

    /// Reads and parses a catalog file.
    pub fn load(path: &std::path::Path) -> Result<Catalog, CatalogError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
            file: file.clone(),
            source,
        })?;
        Catalog::from_toml(&file, &text)
    }

    pub fn tool(&self, name: &str) -> Option<&ToolSpec> {
        self.tools.get(name)
    }

    /// Every name a policy may use for a tool: tool names and classes.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools
            .iter()
            .flat_map(|(name, spec)| {
                std::iter::once(name.as_str()).chain(spec.classes.iter().map(String::as_str))
            })
            .chain(self.classes.iter().map(String::as_str))
            .chain(std::iter::once(UNKNOWN_CLASS))
    }

    /// Every value of attribute or argument `arg` of a call: a JSON pointer (`/recipients/*`)
    /// selects from the arguments; a name reads the tool's catalog attribute of that name
    /// (its pointer may hold `*` too), or else the argument of that name.
    pub fn arg_values(&self, tool: Option<&ToolSpec>, arg: &str, args: &Value) -> Vec<Value> {
        self.arg_values_in(tool, arg, args)
            .into_iter()
            .map(Cow::into_owned)
            .collect()
    }

    /// [`Catalog::arg_values`] borrowing from the arguments where a value is not classified
    /// (a decision reads them without copying them).
    pub fn arg_values_in<'v>(
        &self,
        tool: Option<&ToolSpec>,
        arg: &str,
        args: &'v Value,
    ) -> Vec<Cow<'v, Value>> {
        let mut out = Vec::new();
        if arg.starts_with('/') {
            each_selected(args, arg, &mut |v| out.push(Cow::Borrowed(v)));
            return out;
        }
        match tool.and_then(|t| t.attributes.get(arg)) {
            Some(spec) => each_selected(args, &spec.from, &mut |raw| {
                out.push(match spec.classify {
                    Some(Classifier::IpRange) => Cow::Owned(Value::String(
                        classify_value(raw, &self.network).to_string(),
                    )),
                    None => Cow::Borrowed(raw),
                })
            }),
            None => out.extend(member(args, arg).map(Cow::Borrowed)),
        }
        out
    }

    /// Every data source the catalog knows.
    pub fn data_sources(&self) -> impl Iterator<Item = &str> {
        self.tools
            .values()
            .filter_map(|s| s.data_source.as_ref().map(|d| d.name.as_str()))
    }

    /// The value of attribute `attr` of a call to `tool` with `args`: the catalog's extractor if
    /// the tool declares one, else the argument of that name. `None` when absent.
    pub fn attribute(&self, tool: Option<&ToolSpec>, attr: &str, args: &Value) -> Option<Value> {
        match tool.and_then(|t| t.attributes.get(attr)) {
            Some(spec) => {
                let raw = pointer(args, &spec.from)?;
                Some(match spec.classify {
                    Some(Classifier::IpRange) => {
                        Value::String(classify_value(raw, &self.network).to_string())
                    }
                    None => raw.clone(),
                })
            }
            None => member(args, attr).cloned(),
        }
    }
}

/// Every value a pointer selects, where a `*` token stands for every element of a list or
/// member of an object (`/recipients/*`). Without `*` it is [`pointer`]'s one value.
pub fn select<'v>(args: &'v Value, from: &str) -> Vec<&'v Value> {
    let mut out = Vec::new();
    each_selected(args, from, &mut |v| out.push(v));
    out
}

/// Calls `f` with each value [`select`] gives, in the same order, without building the lists
/// of the values each token reaches (a decision selects arguments for every value predicate).
pub fn each_selected<'v>(args: &'v Value, from: &str, f: &mut impl FnMut(&'v Value)) {
    let b = from.as_bytes();
    let wildcard = b.iter().enumerate().any(|(i, &c)| {
        c == b'*'
            && (i == 0 || b.get(i - 1) == Some(&b'/'))
            && b.get(i + 1).is_none_or(|&n| n == b'/')
    });
    if !wildcard {
        if let Some(v) = pointer(args, from) {
            f(v);
        }
        return;
    }
    // As `split('/').skip(1)`: the text before the first `/` is not a token.
    select_tokens(args, first_token(from).1, f);
}

/// The first token of a pointer's path (after its `/`) and the rest of the path, from its next
/// `/` on. Pointers are short: a byte loop finds the `/` faster than a general search.
fn first_token(path: &str) -> (&str, &str) {
    path.split_at(path.bytes().position(|c| c == b'/').unwrap_or(path.len()))
}

/// The values `tokens` (`/a/*/b`, or empty for `v` itself) reach from `v`.
fn select_tokens<'v>(v: &'v Value, tokens: &str, f: &mut impl FnMut(&'v Value)) {
    let Some(rest) = tokens.strip_prefix('/') else {
        f(v);
        return;
    };
    let (token, tail) = first_token(rest);
    match (token, v) {
        ("*", Value::Array(items)) => items.iter().for_each(|i| select_tokens(i, tail, f)),
        ("*", Value::Object(map)) => map.values().for_each(|i| select_tokens(i, tail, f)),
        (t, v) => {
            // Unescaped only when it holds an escape: most tokens do not.
            let t: Cow<str> = if t.contains('~') {
                t.replace("~1", "/").replace("~0", "~").into()
            } else {
                t.into()
            };
            let child = match v {
                Value::Object(_) => member(v, &t),
                Value::Array(items) => t.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            if let Some(child) = child {
                select_tokens(child, tail, f);
            }
        }
    }
}

/// `args.pointer(from)`, without serde_json's fresh `String` for every token: attributes are
/// read on every call, through objects, with pointers that escape nothing.
fn pointer<'v>(args: &'v Value, from: &str) -> Option<&'v Value> {
    let Some(mut path) = from
        .strip_prefix('/')
        .filter(|p| !p.bytes().any(|c| c == b'~'))
    else {
        return args.pointer(from);
    };
    let mut value = args;
    loop {
        let (token, rest) = first_token(path);
        match value {
            Value::Object(_) => value = member(value, token)?,
            _ => return args.pointer(from),
        }
        match rest.strip_prefix('/') {
            Some(rest) => path = rest,
            None => return Some(value),
        }
    }
}

/// The member `key` of an object (`None` for any other value). JSON objects keep their members
/// in order in a map hashed with SipHash: a few comparisons find a key in a small object
/// faster than hashing it.
pub fn member<'v>(object: &'v Value, key: &str) -> Option<&'v Value> {
    const SCAN_MAX: usize = 8;
    let map = object.as_object()?;
    if map.len() > SCAN_MAX {
        return map.get(key);
    }
    map.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
}

/// A TOML error as `line L, column C: message`.
/// A TOML error as `line L, column C: message` (shared by every TOML format of ours).
pub fn toml_message(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().to_string();
    match err.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or("");
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {col}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::{pointer, select};
    use serde_json::json;
    use serde_json::Value;

    #[test]
    fn pointer_agrees_with_serde_json() {
        let args = json!({
            "target": "10.0.0.1",
            "net": {"hosts": ["a", {"ip": "b"}], "a/b": 1, "m~n": 2, "": 3},
            "list": [1, 2, 3]
        });
        for from in [
            "",
            "/",
            "/target",
            "/missing",
            "/net/hosts",
            "/net/hosts/1/ip",
            "/net/hosts/01",
            "/net/a~1b",
            "/net/m~0n",
            "/net/",
            "/list/2",
            "/list/x",
            "/target/x",
            "target",
        ] {
            assert_eq!(pointer(&args, from), args.pointer(from), "{from}");
        }
    }

    /// `select` as its definition reads: a `*` token is every element or member, any other
    /// token a member or an index; without a `*` token, serde_json's pointer.
    fn select_by_definition<'v>(args: &'v Value, from: &str) -> Vec<&'v Value> {
        if !from.split('/').any(|t| t == "*") {
            return args.pointer(from).into_iter().collect();
        }
        let mut current = vec![args];
        for token in from.split('/').skip(1) {
            let token = token.replace("~1", "/").replace("~0", "~");
            current = current
                .into_iter()
                .flat_map(|v| match (token.as_str(), v) {
                    ("*", Value::Array(items)) => items.iter().collect(),
                    ("*", Value::Object(map)) => map.values().collect(),
                    (t, Value::Object(map)) => map.get(t).into_iter().collect(),
                    (t, Value::Array(items)) => t
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| items.get(i))
                        .into_iter()
                        .collect(),
                    _ => Vec::new(),
                })
                .collect();
        }
        current
    }

    #[test]
    fn select_agrees_with_its_definition() {
        let args = json!({
            "to": ["a@x.example", "b@y.example"],
            "net": {"hosts": [{"ip": "1"}, {"ip": "2"}, {"name": "n"}], "a/b": [4], "*": 5},
            "m": {"k": {"v": 1}, "l": {"v": 2}},
            "": [6]
        });
        for from in [
            "",
            "*",
            "/*",
            "x/*",
            "/to/*",
            "/to/*/x",
            "/net/hosts/*/ip",
            "/net/*",
            "/net/*/*",
            "/net/a~1b/*",
            "/m/*/v",
            "/*/*",
            "/**",
            "/a*",
            "/to/1",
            "/to/*/",
            "//*",
            "/net/~0",
            "/to/+1/*",
            "/to/01",
        ] {
            assert_eq!(
                select(&args, from),
                select_by_definition(&args, from),
                "{from}"
            );
        }
    }
}
