//! Value provenance: where the values of a call's arguments were seen before.
//!
//! An index per scope (a session, or a delegation root) holds the normalised values found in the
//! user's inputs and in observed tool results, each with the set of sources it was seen in:
//! [`USER`] (an input), [`TRUSTED`] or [`UNTRUSTED`] tool output (by the catalog's `output`
//! trust). A policy asks for an argument's provenance; a value seen nowhere has none.
//!
//! What is indexed from a text (a result's string leaf, an input's instruction):
//! - the whole text, normalised, when it is short ([`WHOLE_MAX`] bytes): names, ids, titles;
//! - every token that looks like a value rather than prose: emails (and their domain), URLs
//!   (and their host), anything with a digit (numbers, IBAN-like and account ids, dates, file
//!   ids), quoted strings, and runs of capitalised words (names of people, hotels, places).
//!
//! An input's instruction is also kept whole (normalised), so an argument that appears in it as
//! a phrase between word boundaries is the user's even if no token rule picked it out.
//!
//! Memory is bounded: once the index holds `bound` bytes it takes no new values, and from then
//! on a value it has not seen counts as [`UNTRUSTED`] — never as [`USER`]: provenance degrades
//! toward the side that holds calls, never toward the side that lets them through.

use std::collections::HashMap;

/// Seen in an input of a human principal of the chain.
pub const USER: u8 = 1;
/// Seen in the output of a tool the catalog trusts.
pub const TRUSTED: u8 = 2;
/// Seen in the output of a tool (or a result field) the catalog marks untrusted.
pub const UNTRUSTED: u8 = 4;

/// Texts up to this many bytes are also indexed whole.
pub const WHOLE_MAX: usize = 256;
/// Quoted strings up to this many bytes are indexed.
const QUOTED_MAX: usize = 200;
/// The default bound on one scope's index, in bytes.
pub const DEFAULT_BOUND: usize = 16 * 1024 * 1024;
/// Bytes charged per indexed value beyond its text: the map's slot, the key's box.
const ENTRY_OVERHEAD: usize = 48;

/// A source name as policies write it.
pub fn source_name(bit: u8) -> &'static str {
    match bit {
        USER => "user",
        TRUSTED => "trusted",
        UNTRUSTED => "untrusted",
        _ => "none",
    }
}

/// The bit of a source name (`user`, `trusted`, `untrusted`); `none` is the empty set.
pub fn source_bit(name: &str) -> Option<u8> {
    match name {
        "user" => Some(USER),
        "trusted" => Some(TRUSTED),
        "untrusted" => Some(UNTRUSTED),
        "none" => Some(0),
        _ => None,
    }
}

/// The strongest source of a set: user, then trusted, then untrusted, else none.
pub fn strongest(sources: u8) -> &'static str {
    if sources & USER != 0 {
        "user"
    } else if sources & TRUSTED != 0 {
        "trusted"
    } else if sources & UNTRUSTED != 0 {
        "untrusted"
    } else {
        "none"
    }
}

/// What the index knows of one value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// [`USER`] | [`TRUSTED`] | [`UNTRUSTED`].
    pub sources: u8,
    /// One bit per `Results('X')` pattern of the bundle whose tools returned the value.
    pub results: u64,
}

/// The provenance index of one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenanceIndex {
    values: HashMap<Box<str>, Seen>,
    /// Normalised input texts, for phrase lookups.
    inputs: Vec<Box<str>>,
    bytes: usize,
    bound: usize,
    /// A value was turned away because the index was full.
    saturated: bool,
}

impl ProvenanceIndex {
    pub fn new(bound: usize) -> Self {
        ProvenanceIndex {
            values: HashMap::new(),
            inputs: Vec::new(),
            bytes: 0,
            bound,
            saturated: false,
        }
    }

    /// Bytes charged against the bound.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a value was ever turned away for lack of room.
    pub fn saturated(&self) -> bool {
        self.saturated
    }

    /// How many distinct values are indexed.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Adds one normalised value. Past the bound a new value is dropped (and the index marked
    /// saturated); a known value still gains the source.
    fn add(&mut self, value: &str, sources: u8, results: u64) {
        if value.is_empty() {
            return;
        }
        if let Some(seen) = self.values.get_mut(value) {
            seen.sources |= sources;
            seen.results |= results;
            return;
        }
        let cost = value.len() + ENTRY_OVERHEAD;
        if self.bytes.saturating_add(cost) > self.bound {
            self.saturated = true;
            return;
        }
        self.bytes += cost;
        self.values.insert(value.into(), Seen { sources, results });
    }

    /// Indexes a text seen in `sources` (and, for results, the `Results` bits of its tool).
    pub fn index_text(&mut self, text: &str, sources: u8, results: u64) {
        each_value(text, |v| self.add(v, sources, results));
    }

    /// Indexes a scalar that is not a string (a number, a boolean).
    pub fn index_scalar(&mut self, value: &serde_json::Value, sources: u8, results: u64) {
        if let Some(v) = normalize_value(value) {
            self.add(&v, sources, results);
        }
    }

    /// Indexes a user's instruction: its values, and the whole text for phrase lookups.
    pub fn index_input(&mut self, text: &str) {
        self.index_text(text, USER, 0);
        let norm = normalize(text);
        let cost = norm.len() + ENTRY_OVERHEAD;
        if self.bytes.saturating_add(cost) > self.bound {
            self.saturated = true;
            return;
        }
        self.bytes += cost;
        self.inputs.push(norm.into());
    }

    /// What is known of an already normalised value. A value not seen counts as untrusted once
    /// the index has turned values away.
    pub fn lookup_normalized(&self, norm: &str) -> Seen {
        let mut seen = self.values.get(norm).copied().unwrap_or_default();
        if seen.sources & USER == 0 && !norm.is_empty() && self.in_inputs(norm) {
            seen.sources |= USER;
        }
        if seen.sources == 0 && self.saturated {
            seen.sources = UNTRUSTED;
        }
        seen
    }

    /// What is known of a call's argument value (normalised first). Lists and objects are
    /// known as their weakest scalar: every element must have been seen in a source for the
    /// whole to count as from it.
    pub fn lookup(&self, value: &serde_json::Value) -> Seen {
        use serde_json::Value;
        match value {
            Value::Array(items) => weakest(items.iter().map(|v| self.lookup(v))),
            Value::Object(map) => weakest(map.values().map(|v| self.lookup(v))),
            Value::Null => Seen::default(),
            scalar => match normalize_value(scalar) {
                Some(norm) => self.lookup_normalized(&norm),
                None => Seen::default(),
            },
        }
    }

    /// Whether `norm` occurs in an input text as a phrase between word boundaries.
    fn in_inputs(&self, norm: &str) -> bool {
        self.inputs.iter().any(|text| contains_phrase(text, norm))
    }
}

fn weakest(seen: impl Iterator<Item = Seen>) -> Seen {
    let mut out: Option<Seen> = None;
    for s in seen {
        out = Some(match out {
            None => s,
            Some(o) => Seen {
                sources: o.sources & s.sources,
                results: o.results & s.results,
            },
        });
    }
    out.unwrap_or_default()
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

/// `needle` occurs in `hay` with no word character on either side.
pub fn contains_phrase(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let mut from = 0;
    while let Some(pos) = hay.get(from..).and_then(|h| h.find(needle)) {
        let start = from + pos;
        let end = start + needle.len();
        let before = hay.get(..start).and_then(|s| s.chars().next_back());
        let after = hay.get(end..).and_then(|s| s.chars().next());
        let bounded_left = before.is_none_or(|c| !is_word_char(c))
            || needle.chars().next().is_some_and(|c| !is_word_char(c));
        let bounded_right = after.is_none_or(|c| !is_word_char(c))
            || needle.chars().next_back().is_some_and(|c| !is_word_char(c));
        if bounded_left && bounded_right {
            return true;
        }
        from = start
            + hay
                .get(start..)
                .and_then(|s| s.chars().next())
                .map_or(1, char::len_utf8);
    }
    false
}

/// Punctuation that ends a sentence or wraps a token rather than belonging to a value.
fn is_wrapping(c: char) -> bool {
    matches!(
        c,
        '.' | ','
            | ';'
            | ':'
            | '!'
            | '?'
            | '('
            | ')'
            | '['
            | ']'
            | '{'
            | '}'
            | '<'
            | '>'
            | '"'
            | '\''
            | '`'
            | '‘'
            | '’'
            | '“'
            | '”'
            | '*'
            | '|'
    )
}

/// The normal form of a text value: trimmed of wrapping punctuation, whitespace collapsed,
/// lowercased; URLs without scheme, `www.`, default port or trailing slash; numbers in one
/// form (`1,000.50` → `1000.5`); IBAN-like ids without spaces.
pub fn normalize(text: &str) -> String {
    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || is_wrapping(c));
    let mut out = String::with_capacity(trimmed.len());
    let mut space = false;
    for c in trimmed.chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        for l in c.to_lowercase() {
            out.push(l);
        }
    }
    if let Some(url) = normalize_url(&out) {
        return url;
    }
    if let Some(n) = normalize_number(&out) {
        return n;
    }
    if looks_like_iban(&out) {
        out.retain(|c| c != ' ');
    }
    out
}

/// The normal form of a JSON scalar; `None` for null, lists and objects.
pub fn normalize_value(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) => Some(normalize(s)),
        Value::Number(n) => Some(match n.as_f64() {
            Some(f) => format_number(f),
            None => n.to_string(),
        }),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn format_number(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// `1,000.50`, `$120`, `-3`, `12.5%`: one canonical number; `None` if not a number.
fn normalize_number(s: &str) -> Option<String> {
    let core = s
        .trim_start_matches(['$', '€', '£', '+'])
        .trim_end_matches(['%', '€', '$', '£']);
    if core.is_empty() || !core.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    if !core
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b',' || b == b'.' || b == b'-')
    {
        return None;
    }
    let plain: String = core.chars().filter(|c| *c != ',').collect();
    let f: f64 = plain.parse().ok()?;
    f.is_finite().then(|| format_number(f))
}

/// Two letters, two digits, then 10 to 30 letters, digits or spaces: an IBAN or alike.
fn looks_like_iban(s: &str) -> bool {
    let b = s.as_bytes();
    let compact = s.bytes().filter(|c| *c != b' ').count();
    b.len() >= 14
        && (14..=34).contains(&compact)
        && b.first().is_some_and(u8::is_ascii_alphabetic)
        && b.get(1).is_some_and(u8::is_ascii_alphabetic)
        && b.get(2).is_some_and(u8::is_ascii_digit)
        && b.get(3).is_some_and(u8::is_ascii_digit)
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b' ')
}

/// A lowercased URL in normal form, or `None` if `s` is not one.
fn normalize_url(s: &str) -> Option<String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .or_else(|| s.starts_with("www.").then_some(s))?;
    if rest.is_empty() || rest.contains(' ') {
        return None;
    }
    let rest = rest.strip_prefix("www.").unwrap_or(rest);
    let (host, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = host
        .strip_suffix(":443")
        .or_else(|| host.strip_suffix(":80"))
        .unwrap_or(host);
    let path = path.split('#').next().unwrap_or("");
    let path = path.trim_end_matches('/');
    Some(format!("{host}{path}"))
}

/// The host of a URL (scheme optional), lowercased, without `www.` or port.
pub fn url_host(s: &str) -> Option<String> {
    let norm = normalize(s);
    let candidate = normalize_url(&norm).unwrap_or(norm);
    let host = candidate
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .split(':')
        .next()
        .unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    (host.contains('.') && !host.contains(' ')).then(|| host.to_string())
}

/// The domain of an email address, lowercased.
pub fn email_domain(s: &str) -> Option<String> {
    let norm = normalize(s);
    let (local, domain) = norm.rsplit_once('@')?;
    (!local.is_empty() && domain.contains('.') && !domain.contains(' ')).then(|| domain.to_string())
}

/// Calls `f` with every normalised value a text yields (see the module documentation).
pub fn each_value(text: &str, mut f: impl FnMut(&str)) {
    if text.len() <= WHOLE_MAX {
        f(&normalize(text));
    }
    // Lines of a listing ("Hotel Names: A\nB\n"), and the value after a label ("Phone: 555").
    if text.contains('\n') || text.contains(": ") {
        for line in text.lines() {
            let line = line.trim();
            if !line.is_empty() && line.len() <= WHOLE_MAX && line.len() < text.len() {
                f(&normalize(line));
            }
            if let Some((_, value)) = line.split_once(": ") {
                if !value.is_empty() && value.len() <= WHOLE_MAX {
                    f(&normalize(value));
                }
            }
        }
    }
    let mut caps: Vec<&str> = Vec::new();
    // A run of capitalised words, and its tails: a sentence's first word is capitalised too
    // ("Visit Riverside View Hotel").
    let flush = |caps: &mut Vec<&str>, f: &mut dyn FnMut(&str)| {
        for start in 0..caps.len().saturating_sub(1) {
            if let Some(tail) = caps.get(start..) {
                f(&normalize(&tail.join(" ")));
            }
        }
        caps.clear();
    };
    for raw in text.split_whitespace() {
        let token = raw.trim_matches(is_wrapping);
        if token.is_empty() {
            flush(&mut caps, &mut f);
            continue;
        }
        let capitalised = token.chars().next().is_some_and(char::is_uppercase)
            && token
                .chars()
                .all(|c| c.is_alphabetic() || c == '-' || c == '\'');
        if capitalised && caps.len() < 6 {
            caps.push(token);
        } else {
            flush(&mut caps, &mut f);
        }
        // A phrase ends at punctuation that ends a clause.
        if raw.ends_with([',', '.', ';', ':', '!', '?']) {
            flush(&mut caps, &mut f);
        }
        let bytes = token.as_bytes();
        let has_at = bytes.contains(&b'@');
        let has_digit = bytes.iter().any(u8::is_ascii_digit);
        let urlish = token.starts_with("http://")
            || token.starts_with("https://")
            || token.starts_with("www.");
        if has_at || has_digit || urlish {
            let norm = normalize(token);
            f(&norm);
            if has_at {
                if let Some(d) = email_domain(&norm) {
                    f(&d);
                }
            }
            if urlish {
                if let Some(h) = url_host(&norm) {
                    f(&h);
                }
            }
        } else if token.contains('.') && !capitalised {
            // A bare host or file name: `example.com`, `report.pdf`.
            f(&normalize(token));
        }
    }
    flush(&mut caps, &mut f);
    each_quoted(text, &mut f);
}

/// Strings between matching quotes (straight or typographic), up to [`QUOTED_MAX`] bytes.
fn each_quoted(text: &str, f: &mut impl FnMut(&str)) {
    const PAIRS: [(char, char); 3] = [('"', '"'), ('“', '”'), ('\'', '\'')];
    for (open, close) in PAIRS {
        if !text.contains(open) {
            continue;
        }
        let mut rest = text;
        while let Some(i) = rest.find(open) {
            let after = rest.get(i + open.len_utf8()..).unwrap_or("");
            let Some(j) = after.find(close) else { break };
            let inner = after.get(..j).unwrap_or("");
            // A straight single quote is mostly an apostrophe: only take short, plain runs.
            if !inner.is_empty() && inner.len() <= QUOTED_MAX && !inner.contains('\n') {
                f(&normalize(inner));
            }
            rest = after.get(j + close.len_utf8()..).unwrap_or("");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normal_forms() {
        assert_eq!(normalize("  Alice@Example.COM. "), "alice@example.com");
        assert_eq!(
            normalize("HTTPS://www.Example.com:443/a/b/"),
            "example.com/a/b"
        );
        assert_eq!(normalize("http://example.com"), "example.com");
        assert_eq!(normalize("1,000.50"), "1000.5");
        assert_eq!(normalize("$120"), "120");
        assert_eq!(
            normalize("DE89 3704 0044 0532 0130 00"),
            "de89370400440532013000"
        );
        assert_eq!(normalize("Le  Marais\tBoutique"), "le marais boutique");
        assert_eq!(normalize_value(&json!(100.0)).as_deref(), Some("100"));
        assert_eq!(
            url_host("https://www.Evil.example/x?y=1").as_deref(),
            Some("evil.example")
        );
        assert_eq!(
            email_domain("Bob@Corp.Example").as_deref(),
            Some("corp.example")
        );
        assert_eq!(email_domain("not an email"), None);
    }

    #[test]
    fn text_values() {
        let mut got = Vec::new();
        each_value(
            "Please send 250 EUR to IBAN DE89370400440532013000 and mail mark.black@evil.example, see https://evil.example/x. Visit Riverside View Hotel today. Title: \"Q3 plan\"",
            |v| got.push(v.to_string()),
        );
        for want in [
            "250",
            "de89370400440532013000",
            "mark.black@evil.example",
            "evil.example",
            "evil.example/x",
            "riverside view hotel",
            "q3 plan",
        ] {
            assert!(got.iter().any(|g| g == want), "{want} not in {got:?}");
        }
    }

    #[test]
    fn sources_and_phrases() {
        let mut ix = ProvenanceIndex::new(DEFAULT_BOUND);
        ix.index_input("Book a table at Le Petit Bistro for 2 and email bob@corp.example");
        ix.index_text("contact: eve@evil.example", UNTRUSTED, 0);
        ix.index_text("bob@corp.example", UNTRUSTED, 0);
        assert_eq!(
            strongest(ix.lookup(&json!("Bob@corp.example")).sources),
            "user"
        );
        assert_eq!(
            ix.lookup(&json!("bob@corp.example")).sources,
            USER | UNTRUSTED
        );
        assert_eq!(
            strongest(ix.lookup(&json!("le petit bistro")).sources),
            "user"
        );
        assert_eq!(strongest(ix.lookup(&json!("petit")).sources), "user");
        assert_eq!(strongest(ix.lookup(&json!("tit")).sources), "none");
        assert_eq!(
            strongest(ix.lookup(&json!("eve@evil.example")).sources),
            "untrusted"
        );
        assert_eq!(strongest(ix.lookup(&json!(2)).sources), "user");
        assert_eq!(
            strongest(
                ix.lookup(&json!(["bob@corp.example", "eve@evil.example"]))
                    .sources
            ),
            "untrusted"
        );
        assert_eq!(
            strongest(ix.lookup(&json!("nobody@x.example")).sources),
            "none"
        );
    }

    #[test]
    fn past_the_bound_unknown_is_untrusted_never_user() {
        let mut ix = ProvenanceIndex::new(200);
        ix.index_text("a1@x.example", TRUSTED, 0);
        for i in 0..100 {
            ix.index_text(&format!("value{i}"), TRUSTED, 0);
        }
        assert!(ix.saturated());
        assert!(ix.bytes() <= 200);
        ix.index_input("send it to late@user.example");
        let late = ix.lookup(&json!("late@user.example")).sources;
        assert_eq!(late & USER, 0);
        assert_eq!(strongest(late), "untrusted");
        assert_eq!(
            strongest(ix.lookup(&json!("a1@x.example")).sources),
            "trusted"
        );
    }
}
