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

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use std::hash::BuildHasher;

/// The index's hasher: keyed per process like std's, and several times faster on short keys.
/// Indexed values come from untrusted content, so the hash must not be predictable.
type Hasher = foldhash::fast::RandomState;

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

/// One indexed value: where its text is in the index's chunks, its hash, what is known of it
/// (a [`Seen`] kept as two fields, so that an entry takes 32 bytes rather than 40: the table's
/// size is what the cache misses).
#[derive(Debug, Clone)]
struct Indexed {
    chunk: u32,
    start: u32,
    len: u32,
    sources: u8,
    hash: u64,
    results: u64,
}

const _: () = assert!(std::mem::size_of::<Indexed>() == 32);

impl Indexed {
    fn seen(&self) -> Seen {
        Seen {
            sources: self.sources,
            results: self.results,
        }
    }

    fn text<'c>(&self, chunks: &'c [String]) -> Option<&'c str> {
        let start = self.start as usize;
        chunks
            .get(self.chunk as usize)?
            .get(start..start + self.len as usize)
    }
}

/// The largest of the chunks values' texts are appended to. A value's text never moves once
/// written: one growing buffer was copied at every doubling by allocators that do not remap
/// (mimalloc, which the binary links), which halved the indexing rate.
const CHUNK: usize = 64 * 1024;
/// The first chunk's size; each next one is twice the last, up to [`CHUNK`].
const FIRST_CHUNK: usize = 256;

/// The provenance index of one scope.
///
/// The values' texts are kept one after another in chunks, and a table of entries finds them by
/// hash: indexing a new value appends it and hashes it once, with no allocation of its own. The
/// entries live in the table itself, so a lookup reads the table and then the text, no third
/// place.
#[derive(Debug, Clone)]
pub struct ProvenanceIndex {
    /// The indexed values' texts, one after another.
    chunks: Vec<String>,
    table: HashTable<Indexed>,
    hasher: Hasher,
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
            chunks: Vec::new(),
            table: HashTable::new(),
            hasher: Hasher::default(),
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
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The entry of a normalised value, if indexed.
    fn find(&self, value: &str) -> Option<&Indexed> {
        let hash = self.hasher.hash_one(value);
        self.table.find(hash, |e| {
            e.hash == hash && e.text(&self.chunks) == Some(value)
        })
    }

    /// Adds one normalised value. Past the bound a new value is dropped (and the index marked
    /// saturated); a known value still gains the source.
    fn add(&mut self, value: &str, sources: u8, results: u64) {
        if value.is_empty() {
            return;
        }
        let hash = self.hasher.hash_one(value);
        let Self {
            chunks,
            table,
            bytes,
            bound,
            saturated,
            ..
        } = self;
        // One probe finds the value or the slot it goes in.
        let slot = match table.entry(
            hash,
            |e| e.hash == hash && e.text(chunks) == Some(value),
            |e| e.hash,
        ) {
            Entry::Occupied(mut known) => {
                let known = known.get_mut();
                known.sources |= sources;
                known.results |= results;
                return;
            }
            Entry::Vacant(slot) => slot,
        };
        let cost = value.len() + ENTRY_OVERHEAD;
        if bytes.saturating_add(cost) > *bound {
            *saturated = true;
            return;
        }
        let (capacity, used) = chunks.last().map_or((0, 0), |c| (c.capacity(), c.len()));
        if capacity - used < value.len() {
            // Each chunk twice the last, up to `CHUNK`: a session that indexes a few values
            // keeps a few hundred bytes, not a whole chunk.
            let size = (capacity * 2).clamp(FIRST_CHUNK, CHUNK).max(value.len());
            chunks.push(String::with_capacity(size));
        }
        let chunk = chunks.len() - 1;
        let Some(text) = chunks.last_mut() else {
            return;
        };
        let (Ok(chunk), Ok(start), Ok(len)) = (
            u32::try_from(chunk),
            u32::try_from(text.len()),
            u32::try_from(value.len()),
        ) else {
            *saturated = true;
            return;
        };
        text.push_str(value);
        *bytes += cost;
        slot.insert(Indexed {
            chunk,
            start,
            len,
            hash,
            sources,
            results,
        });
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
        let mut seen = self.find(norm).map(Indexed::seen).unwrap_or_default();
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
            Value::String(s) => self.lookup_normalized(&normalize_cow(s)),
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

/// Two indexes are equal when they hold the same values with the same sources (in whatever
/// order they came), the same inputs, and the same accounting.
impl PartialEq for ProvenanceIndex {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
            && self.bound == other.bound
            && self.saturated == other.saturated
            && self.inputs == other.inputs
            && self.table.len() == other.table.len()
            && self.table.iter().all(|e| {
                let theirs = e.text(&self.chunks).and_then(|v| other.find(v));
                theirs.is_some_and(|t| t.seen() == e.seen())
            })
    }
}

impl Eq for ProvenanceIndex {}

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
const fn is_wrapping(c: char) -> bool {
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

/// `char::is_whitespace` for one ASCII byte (it counts the vertical tab, unlike
/// `u8::is_ascii_whitespace`).
#[inline(always)]
const fn is_ascii_space(b: u8) -> bool {
    // Bits 9 to 13 (tab, line feed, vertical tab, form feed, carriage return) and 32 (space).
    b <= b' ' && (0x1_0000_3E00u64 >> b) & 1 == 1
}

/// Buffers reused across the values of one text, so that scanning it allocates once per
/// buffer rather than once per value.
#[derive(Default)]
struct Scratch {
    /// The normal form of the value at hand.
    norm: String,
    /// The normal form of a value derived from it (an email's domain, an URL's host).
    derived: String,
    /// Room for the steps of a normal form that rewrite it (URL and number forms).
    tmp: String,
    /// A run of capitalised words, lowercased and joined, and where each word starts in it.
    caps: String,
    caps_starts: Vec<usize>,
}

/// The normal form of a text value: trimmed of wrapping punctuation, whitespace collapsed,
/// lowercased; URLs without scheme, `www.`, default port or trailing slash; numbers in one
/// form (`1,000.50` → `1000.5`); IBAN-like ids without spaces.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    normalize_into(text, &mut out, &mut String::new());
    out
}

/// [`normalize`] borrowing the text when it already is in normal form (an argument usually is).
pub fn normalize_cow(text: &str) -> std::borrow::Cow<'_, str> {
    if is_normal(text) {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(normalize(text))
    }
}

/// A cheap, conservative test that [`normalize`] would return `s` unchanged: `true` only for
/// ASCII text with nothing to trim, collapse, lowercase or rewrite.
fn is_normal(s: &str) -> bool {
    use byte_class::{LETTER, NON_ASCII, SPACE, UPPER, WRAPPING};
    let (classes, _) = byte_class::of_str(s);
    if classes & (SPACE | NON_ASCII) == 0 {
        // One ASCII word (most arguments): lowercase, nothing to trim, and no URL or number
        // rule that would rewrite it.
        let edge = |b: Option<&u8>| b.is_some_and(|b| of_byte(*b) & WRAPPING == 0);
        return edge(s.as_bytes().first())
            && edge(s.as_bytes().last())
            && classes & UPPER == 0
            && !url_prefixed(s)
            && (classes & LETTER != 0 || is_plain_integer(s) || number_core(s).is_none());
    }
    let b = s.as_bytes();
    let edge_ok =
        |c: Option<&u8>| c.is_some_and(|c| !is_ascii_space(*c) && !is_wrapping(*c as char));
    if !s.is_ascii() || !edge_ok(b.first()) || !edge_ok(b.last()) {
        return false;
    }
    let mut prev_space = false;
    for &c in b {
        if c.is_ascii_uppercase() || (is_ascii_space(c) && (c != b' ' || prev_space)) {
            return false;
        }
        prev_space = c == b' ';
    }
    if url_prefixed(s) {
        return false;
    }
    if is_plain_integer(s) {
        return true;
    }
    number_core(s).is_none() && !(s.contains(' ') && looks_like_iban(s))
}

/// Starts as an URL the normal form rewrites: `http://`, `https://` or `www.`.
fn url_prefixed(s: &str) -> bool {
    matches!(s.as_bytes().first(), Some(b'h' | b'w'))
        && (s.starts_with("http://") || s.starts_with("https://") || s.starts_with("www."))
}

/// Digits only, no leading zero, short enough to be exact: its own normal form as a number.
fn is_plain_integer(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && (b.len() == 1 || b.first() != Some(&b'0'))
        && b.iter().all(u8::is_ascii_digit)
}

/// Writes the normal form of `text` into `out`; `tmp` is room for the rewriting steps. `true`
/// when `out` is known to be its own normal form (ASCII, copied and lowercased, and no URL,
/// number or IBAN rule rewrote it), so that normalising it again can be skipped.
fn normalize_into(text: &str, out: &mut String, tmp: &mut String) -> bool {
    let (any, all) = byte_class::of_str(text);
    if any & (byte_class::SPACE | byte_class::NON_ASCII) == 0 {
        // One ASCII word (a token, an argument): trimmed, it takes the word's shorter path.
        let (word, classes, _) = Word {
            raw: text,
            any,
            all,
        }
        .trimmed();
        return normalize_word_into(word, classes, out, tmp);
    }
    out.clear();
    let plain_edge = |b: Option<&u8>| {
        b.is_some_and(|b| b.is_ascii() && !is_ascii_space(*b) && !is_wrapping(*b as char))
    };
    let trimmed = if plain_edge(text.as_bytes().first()) && plain_edge(text.as_bytes().last()) {
        text
    } else {
        text.trim_matches(|c: char| c.is_whitespace() || is_wrapping(c))
    };
    let mut space = false;
    let single_spaces = |t: &str| {
        !t.as_bytes().windows(2).any(
            |w| matches!(w, [a, b] if is_ascii_space(*a) && (*a != b' ' || is_ascii_space(*b))),
        )
    };
    let copied = trimmed.is_ascii() && single_spaces(trimmed);
    if copied {
        // Nothing to collapse (a token, or words apart by one space; the ends are trimmed):
        // copied whole, then lowercased in place.
        out.push_str(trimmed);
        out.make_ascii_lowercase();
    } else if trimmed.is_ascii() {
        for &b in trimmed.as_bytes() {
            if is_ascii_space(b) {
                space = true;
                continue;
            }
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(b.to_ascii_lowercase() as char);
        }
    } else {
        for c in trimmed.chars() {
            if c.is_whitespace() {
                space = true;
                continue;
            }
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase());
            } else {
                out.extend(c.to_lowercase());
            }
        }
    }
    if normalize_url_into(out, tmp) || normalize_number_into(out, tmp) {
        std::mem::swap(out, tmp);
        return false;
    }
    if looks_like_iban(out) {
        out.retain(|c| c != ' ');
        return false;
    }
    copied
}

/// [`normalize_into`] for a word of ASCII text that the scan has trimmed, given its byte
/// classes: there is nothing to trim or collapse, so it is copied and lowercased, and only the
/// rules its classes allow are tried (a number has no letter, and the IBAN rule only removes
/// spaces, which a word has none of).
fn normalize_word_into(word: &str, classes: u16, out: &mut String, tmp: &mut String) -> bool {
    out.clear();
    out.push_str(word);
    if classes & byte_class::UPPER != 0 {
        out.make_ascii_lowercase();
    }
    let rewritten = normalize_url_into(out, tmp)
        || (classes & byte_class::LETTER == 0 && normalize_number_into(out, tmp));
    if rewritten {
        std::mem::swap(out, tmp);
    }
    !rewritten
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
    let mut out = String::new();
    write_number(f, &mut out);
    out
}

fn write_number(f: f64, out: &mut String) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = if f.fract() == 0.0 && f.abs() < 1e15 {
        write!(out, "{}", f as i64)
    } else {
        write!(out, "{f}")
    };
}

/// The number part of `1,000.50`, `$120`, `-3`, `12.5%` (currency and percent signs off), if
/// `s` looks like a number at all.
fn number_core(s: &str) -> Option<&str> {
    let numeric = |b: Option<&u8>| b.is_some_and(|b| matches!(b, b'0'..=b'9' | b',' | b'.' | b'-'));
    let core = if numeric(s.as_bytes().first()) && numeric(s.as_bytes().last()) {
        // No sign to strip at either end (most numbers).
        s
    } else {
        s.trim_start_matches(['$', '€', '£', '+'])
            .trim_end_matches(['%', '€', '$', '£'])
    };
    let b = core.as_bytes();
    (!b.is_empty()
        && b.iter().any(u8::is_ascii_digit)
        && b.iter()
            .all(|c| c.is_ascii_digit() || *c == b',' || *c == b'.' || *c == b'-'))
    .then_some(core)
}

/// Writes the canonical form of a number (`1,000.50` → `1000.5`) into `out`; `false` (and
/// `out` unspecified) if `s` is not a number.
fn normalize_number_into(s: &str, out: &mut String) -> bool {
    let Some(core) = number_core(s) else {
        return false;
    };
    out.clear();
    if is_plain_integer(core) {
        out.push_str(core);
        return true;
    }
    if let Some((int, frac)) = core.split_once('.') {
        // At most 15 digits convert to a double and back unchanged, so the shortest form that
        // `f64`'s Display prints is the decimal itself, without its redundant zeros.
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit());
        if digits(int) && digits(frac) && int.len() + frac.len() <= 15 {
            let int = int.trim_start_matches('0');
            let frac = frac.trim_end_matches('0');
            out.push_str(if int.is_empty() { "0" } else { int });
            if !frac.is_empty() {
                out.push('.');
                out.push_str(frac);
            }
            return true;
        }
    }
    // A minus sign anywhere but first (commas aside), as in `12-34`, is no number.
    if core
        .bytes()
        .filter(|b| *b != b',')
        .skip(1)
        .any(|b| b == b'-')
    {
        return false;
    }
    let parsed = if core.contains(',') {
        out.extend(core.chars().filter(|c| *c != ','));
        let f = out.parse::<f64>();
        out.clear();
        f
    } else {
        core.parse::<f64>()
    };
    match parsed {
        Ok(f) if f.is_finite() => {
            write_number(f, out);
            true
        }
        _ => false,
    }
}

/// Two letters, two digits, then 10 to 30 letters, digits or spaces: an IBAN or alike.
fn looks_like_iban(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 14
        && b.first().is_some_and(u8::is_ascii_alphabetic)
        && b.get(1).is_some_and(u8::is_ascii_alphabetic)
        && b.get(2).is_some_and(u8::is_ascii_digit)
        && b.get(3).is_some_and(u8::is_ascii_digit)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b' ')
        && (14..=34).contains(&b.iter().filter(|c| **c != b' ').count())
}

/// Writes the normal form of a lowercased URL into `out`; `false` (and `out` unspecified) if
/// `s` is not one.
fn normalize_url_into(s: &str, out: &mut String) -> bool {
    if !url_prefixed(s) {
        return false;
    }
    // A `www.` URL keeps its `www.` until the scheme is off (it is taken off below).
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    if rest.is_empty() || rest.as_bytes().contains(&b' ') {
        return false;
    }
    let rest = rest.strip_prefix("www.").unwrap_or(rest);
    // The delimiters are ASCII, so their byte positions split the text between characters.
    let at = rest
        .bytes()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (Some(host), Some(path)) = (rest.get(..at), rest.get(at..)) else {
        return false;
    };
    let host = host
        .strip_suffix(":443")
        .or_else(|| host.strip_suffix(":80"))
        .unwrap_or(host);
    let path = path.split_once('#').map_or(path, |(path, _)| path);
    let path = path.trim_end_matches('/');
    out.clear();
    out.push_str(host);
    out.push_str(path);
    true
}

/// The host of a URL (scheme optional), lowercased, without `www.` or port.
pub fn url_host(s: &str) -> Option<String> {
    let mut sc = Scratch::default();
    host_in(s, &mut sc.derived, &mut sc.tmp).map(str::to_string)
}

/// [`url_host`] in `out` (with `tmp` as room).
fn host_in<'o>(s: &str, out: &'o mut String, tmp: &mut String) -> Option<&'o str> {
    normalize_into(s, out, tmp);
    if normalize_url_into(out, tmp) {
        std::mem::swap(out, tmp);
    }
    let candidate: &'o str = out;
    // Up to the path, query, fragment or port; after the user.
    let end = candidate
        .bytes()
        .position(|b| matches!(b, b'/' | b'?' | b'#' | b':'))
        .unwrap_or(candidate.len());
    let host = candidate.get(..end)?;
    let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
    (host.contains('.') && !host.contains(' ')).then_some(host)
}

/// The domain of an email address, lowercased.
pub fn email_domain(s: &str) -> Option<String> {
    let mut sc = Scratch::default();
    domain_in(s, &mut sc.derived, &mut sc.tmp).map(str::to_string)
}

/// [`email_domain`] in `out` (with `tmp` as room).
fn domain_in<'o>(s: &str, out: &'o mut String, tmp: &mut String) -> Option<&'o str> {
    normalize_into(s, out, tmp);
    domain_of(out)
}

/// The domain of an email address already in normal form.
fn domain_of(norm: &str) -> Option<&str> {
    let (local, domain) = norm.rsplit_once('@')?;
    (!local.is_empty() && domain.contains('.') && !domain.contains(' ')).then_some(domain)
}

/// What the scan needs to know of a byte, one table lookup per byte: the classes of a word's
/// bytes, or-ed and and-ed together, answer the per-word questions (an `@`, a digit, only
/// letters) without another pass over the word.
mod byte_class {
    /// ASCII whitespace, as `char::is_whitespace` has it.
    pub const SPACE: u16 = 1;
    /// A byte of a character outside ASCII.
    pub const NON_ASCII: u16 = 1 << 1;
    pub const DIGIT: u16 = 1 << 2;
    pub const AT: u16 = 1 << 3;
    pub const DOT: u16 = 1 << 4;
    /// May be part of a capitalised word: a letter, `-` or `'`.
    pub const NAME: u16 = 1 << 5;
    pub const UPPER: u16 = 1 << 6;
    /// Wrapping punctuation (see `is_wrapping`).
    pub const WRAPPING: u16 = 1 << 7;
    /// Ends a clause: `,` `.` `;` `:` `!` `?`.
    pub const CLAUSE_END: u16 = 1 << 8;
    pub const LETTER: u16 = 1 << 9;
    /// A straight quote, single or double: the text may hold quoted strings.
    pub const QUOTE: u16 = 1 << 10;

    const fn of(b: u8) -> u16 {
        if b >= 0x80 {
            return NON_ASCII;
        }
        let mut class = 0;
        if super::is_ascii_space(b) {
            class |= SPACE;
        }
        if b.is_ascii_digit() {
            class |= DIGIT;
        }
        if b.is_ascii_alphabetic() {
            class |= LETTER | NAME;
        }
        if b.is_ascii_uppercase() {
            class |= UPPER;
        }
        if super::is_wrapping(b as char) {
            class |= WRAPPING;
        }
        match b {
            b'@' => class |= AT,
            b'.' => class |= DOT | CLAUSE_END,
            b'-' => class |= NAME,
            b'\'' => class |= NAME | QUOTE,
            b'"' => class |= QUOTE,
            b',' | b';' | b':' | b'!' | b'?' => class |= CLAUSE_END,
            _ => {}
        }
        class
    }

    pub static TABLE: [u16; 256] = {
        let mut table = [0; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = of(b as u8);
            b += 1;
        }
        table
    };

    #[inline(always)]
    pub fn of_byte(b: u8) -> u16 {
        TABLE[b as usize]
    }

    /// The classes of every byte of `s`, or-ed (what some byte is) and and-ed (what all are).
    pub fn of_str(s: &str) -> (u16, u16) {
        s.bytes().fold((0, u16::MAX), |(any, all), b| {
            (any | of_byte(b), all & of_byte(b))
        })
    }
}

use byte_class::of_byte;

/// One word of a text (as `str::split_whitespace` has it), with its bytes' classes.
struct Word<'t> {
    raw: &'t str,
    any: u16,
    all: u16,
}

impl<'t> Word<'t> {
    /// The word without wrapping punctuation at its ends, and that part's classes.
    fn trimmed(&self) -> (&'t str, u16, u16) {
        let edge = |b: Option<&u8>| b.map_or(0, |b| of_byte(*b));
        let bytes = self.raw.as_bytes();
        let edges = edge(bytes.first()) | edge(bytes.last());
        if edges & (byte_class::WRAPPING | byte_class::NON_ASCII) == 0 {
            return (self.raw, self.any, self.all);
        }
        let token = self.raw.trim_matches(is_wrapping);
        let (any, all) = byte_class::of_str(token);
        (token, any, all)
    }
}

/// The words of a text, one table lookup per byte where the text is ASCII.
struct Words<'t> {
    text: &'t str,
    pos: usize,
}

impl<'t> Words<'t> {
    /// Whether the character at byte `i` (outside ASCII) is whitespace, and its length.
    #[cold]
    fn non_ascii_at(&self, i: usize) -> (bool, usize) {
        match self.text.get(i..).and_then(|s| s.chars().next()) {
            Some(c) => (c.is_whitespace(), c.len_utf8()),
            None => (false, 1),
        }
    }
}

impl<'t> Iterator for Words<'t> {
    type Item = Word<'t>;

    #[inline(always)]
    fn next(&mut self) -> Option<Word<'t>> {
        use byte_class::{NON_ASCII, SPACE};
        let bytes = self.text.as_bytes();
        let mut i = self.pos;
        while let Some(&b) = bytes.get(i) {
            let class = of_byte(b);
            if class & SPACE != 0 {
                i += 1;
            } else if class & NON_ASCII == 0 {
                break;
            } else {
                let (space, n) = self.non_ascii_at(i);
                if !space {
                    break;
                }
                i += n;
            }
        }
        let start = i;
        let (mut any, mut all) = (0, u16::MAX);
        while let Some(&b) = bytes.get(i) {
            let class = of_byte(b);
            if class & (SPACE | NON_ASCII) == 0 {
                any |= class;
                all &= class;
                i += 1;
            } else if class & SPACE != 0 {
                break;
            } else {
                let (space, n) = self.non_ascii_at(i);
                if space {
                    break;
                }
                any |= NON_ASCII;
                all &= NON_ASCII;
                i += n;
            }
        }
        self.pos = i;
        if i == start {
            return None;
        }
        Some(Word {
            raw: self.text.get(start..i)?,
            any,
            all,
        })
    }
}

/// Whether a text has lines or labels (`Phone: 555`) to index apart.
fn has_lines_or_labels(text: &str) -> bool {
    let b = text.as_bytes();
    memchr::memchr2_iter(b'\n', b':', b)
        .any(|i| b.get(i) == Some(&b'\n') || b.get(i + 1) == Some(&b' '))
}

/// Calls `f` with every normalised value a text yields (see the module documentation).
///
/// One pass over the words, with the normal forms written into buffers reused for the whole
/// text: the values and their order are those of the first version (kept in
/// `provenance/reference.rs` and checked against it), without an allocation per value.
pub fn each_value(text: &str, mut f: impl FnMut(&str)) {
    use byte_class::{AT, CLAUSE_END, DIGIT, DOT, NAME, NON_ASCII, QUOTE, UPPER};
    let mut sc = Scratch::default();
    let Scratch {
        norm,
        derived,
        tmp,
        caps,
        caps_starts,
    } = &mut sc;
    let emit = |s: &str, norm: &mut String, tmp: &mut String, f: &mut dyn FnMut(&str)| {
        normalize_into(s, norm, tmp);
        f(norm);
    };
    if text.len() <= WHOLE_MAX {
        emit(text, norm, tmp, &mut f);
    }
    // Lines of a listing ("Hotel Names: A\nB\n"), and the value after a label ("Phone: 555").
    if has_lines_or_labels(text) {
        for line in text.lines() {
            let line = line.trim();
            if !line.is_empty() && line.len() <= WHOLE_MAX && line.len() < text.len() {
                emit(line, norm, tmp, &mut f);
            }
            if let Some((_, value)) = line.split_once(": ") {
                if !value.is_empty() && value.len() <= WHOLE_MAX {
                    emit(value, norm, tmp, &mut f);
                }
            }
        }
    }
    // A run of capitalised words, and its tails: a sentence's first word is capitalised too
    // ("Visit Riverside View Hotel"). The words are trimmed and hold letters, `-` and `'`
    // only, so the normal form of a tail is its words lowercased and joined by one space: the
    // run is lowercased once and each tail is a suffix of it.
    let flush = |caps: &mut String, starts: &mut Vec<usize>, f: &mut dyn FnMut(&str)| {
        if starts.len() > 1 {
            for &start in starts.iter().take(starts.len() - 1) {
                if let Some(tail) = caps.get(start..) {
                    f(tail);
                }
            }
        }
        caps.clear();
        starts.clear();
    };
    let mut text_classes = 0;
    for word in (Words { text, pos: 0 }) {
        text_classes |= word.any;
        let (token, any, all) = word.trimmed();
        if token.is_empty() {
            flush(caps, caps_starts, &mut f);
            continue;
        }
        let ascii = any & NON_ASCII == 0;
        let capitalised = if ascii {
            token
                .as_bytes()
                .first()
                .is_some_and(|b| of_byte(*b) & UPPER != 0)
                && all & NAME != 0
        } else {
            token.chars().next().is_some_and(char::is_uppercase)
                && token
                    .chars()
                    .all(|c| c.is_alphabetic() || c == '-' || c == '\'')
        };
        if capitalised && caps_starts.len() < 6 {
            if !caps.is_empty() {
                caps.push(' ');
            }
            let start = caps.len();
            caps_starts.push(start);
            if ascii {
                caps.push_str(token);
                if let Some(added) = caps.get_mut(start..) {
                    added.make_ascii_lowercase();
                }
            } else {
                for c in token.chars() {
                    caps.extend(c.to_lowercase());
                }
            }
        } else {
            flush(caps, caps_starts, &mut f);
        }
        // A phrase ends at punctuation that ends a clause.
        if word
            .raw
            .as_bytes()
            .last()
            .is_some_and(|b| of_byte(*b) & CLAUSE_END != 0)
        {
            flush(caps, caps_starts, &mut f);
        }
        let (has_at, has_digit) = (any & AT != 0, any & DIGIT != 0);
        let urlish = url_prefixed(token);
        let normalize_token = |norm: &mut String, tmp: &mut String| {
            if ascii {
                normalize_word_into(token, any, norm, tmp)
            } else {
                normalize_into(token, norm, tmp)
            }
        };
        if has_at || has_digit || urlish {
            let settled = normalize_token(norm, tmp);
            f(norm);
            if has_at {
                let domain = if settled {
                    domain_of(norm)
                } else {
                    domain_in(norm, derived, tmp)
                };
                if let Some(d) = domain {
                    f(d);
                }
            }
            if urlish {
                if let Some(h) = host_in(norm, derived, tmp) {
                    f(h);
                }
            }
        } else if any & DOT != 0 && !capitalised {
            // A bare host or file name: `example.com`, `report.pdf`.
            normalize_token(norm, tmp);
            f(norm);
        }
    }
    flush(caps, caps_starts, &mut f);
    // Only a text with a quote in it has quoted strings (`“` is outside ASCII).
    if text_classes & (QUOTE | NON_ASCII) != 0 {
        each_quoted(text, &mut |s| emit(s, norm, tmp, &mut f));
    }
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
                f(inner);
            }
            rest = after.get(j + close.len_utf8()..).unwrap_or("");
        }
    }
}

#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// A scan of a text, as `each_value` and the reference's have it.
    type Scan = fn(&str, &mut dyn FnMut(&str));

    fn scan(text: &str, each: Scan) -> Vec<String> {
        let mut got = Vec::new();
        each(text, &mut |v| got.push(v.to_string()));
        got
    }

    #[test]
    fn a_small_index_holds_little_and_a_large_one_grows_in_chunks_that_stay() {
        let held = |ix: &ProvenanceIndex| ix.chunks.iter().map(String::capacity).sum::<usize>();
        let mut ix = ProvenanceIndex::new(DEFAULT_BOUND);
        ix.index_text("mail anna@example.com about invoice 4711", UNTRUSTED, 0);
        assert!(
            held(&ix) < 1024,
            "{} bytes held for three values",
            held(&ix)
        );
        let first = ix.chunks.first().map(|c| c.as_ptr());
        for i in 0..20_000 {
            ix.index_text(&format!("id-{i}-{i}"), UNTRUSTED, 0);
        }
        assert!(ix.chunks.iter().all(|c| c.capacity() <= CHUNK));
        assert!(ix.chunks.len() > 2);
        assert_eq!(
            ix.chunks.first().map(|c| c.as_ptr()),
            first,
            "a chunk moved"
        );
        assert_eq!(ix.lookup(&json!("anna@example.com")).sources, UNTRUSTED);
        assert_eq!(ix.lookup(&json!("id-19999-19999")).sources, UNTRUSTED);
    }

    /// Texts built from the pieces the scan treats specially: words in both cases (also
    /// outside ASCII), emails, URLs, numbers, IBANs, quotes, wrapping punctuation and every
    /// kind of whitespace.
    fn texts() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("Riverside".to_string()),
            Just("View".to_string()),
            Just("ÉCOLE".to_string()),
            Just("Σίσυφος".to_string()),
            Just("İstanbul".to_string()),
            Just("\u{212A}elvin".to_string()),
            Just("O'Brien".to_string()),
            Just("Jean-Luc".to_string()),
            Just("mark.black@Evil.example".to_string()),
            Just("https://www.Example.com:443/a/b/".to_string()),
            Just("http://x.example/p?q=1#frag".to_string()),
            Just("www.host.example".to_string()),
            Just("HTTP://WWW.Host.Example/A/./".to_string()),
            Just("report.pdf".to_string()),
            Just("$1,000.50".to_string()),
            Just("0042".to_string()),
            Just("12345678901234567890".to_string()),
            Just("-3".to_string()),
            Just("12.5%".to_string()),
            Just("DE89 3704 0044 0532 0130 00".to_string()),
            Just("GB29NWBK60161331926819".to_string()),
            Just("Title: \"Q3 plan\"".to_string()),
            Just("“quoted”".to_string()),
            Just("'single'".to_string()),
            "[ -~]{0,12}",
            "[a-zA-Z0-9@.:/,'\"()-]{1,10}",
            "[\\PC]{0,6}",
        ];
        let sep = prop_oneof![
            Just(" "),
            Just("  "),
            Just("\t"),
            Just("\n"),
            Just("\x0B"),
            Just("\r\n"),
            Just("\u{a0}"),
            Just("\u{2003}"),
            Just("\u{85}"),
            Just(": "),
            Just(", "),
            Just(". "),
            Just(""),
        ];
        prop::collection::vec((piece, sep), 0..40).prop_map(|parts| {
            parts
                .into_iter()
                .map(|(p, s)| format!("{p}{s}"))
                .collect::<String>()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The single-pass scan yields the values of the first version, in the same order (the
        /// order decides what a full index keeps).
        #[test]
        fn scan_matches_the_reference(text in texts()) {
            prop_assert_eq!(
                scan(&text, |t, f| each_value(t, f)),
                scan(&text, |t, f| reference::each_value(t, f))
            );
        }

        #[test]
        fn scan_matches_the_reference_on_any_text(text in "[\\PC\t\n\x0B\u{a0}\u{2003}‘’“”]{0,300}") {
            prop_assert_eq!(
                scan(&text, |t, f| each_value(t, f)),
                scan(&text, |t, f| reference::each_value(t, f))
            );
        }

        /// Normal forms, hosts and domains are those of the first version; a text found already
        /// normal is.
        #[test]
        fn numbers_match_the_reference(n in "[-+$£]?[0-9,-]{0,9}[.]?[0-9-]{0,9}[%€]?", f in any::<f64>()) {
            prop_assert_eq!(normalize(&n), reference::normalize(&n));
            let shown = format!("{f}");
            prop_assert_eq!(normalize(&shown), reference::normalize(&shown));
        }

        /// A word the scan trimmed normalises as the first version has any text, and one
        /// reported settled is its own normal form.
        #[test]
        fn a_word_normalises_as_any_text(word in "[!-~]{1,24}") {
            let word = word.trim_matches(is_wrapping);
            prop_assume!(!word.is_empty());
            let (classes, _) = byte_class::of_str(word);
            let (mut out, mut tmp) = (String::new(), String::new());
            let settled = normalize_word_into(word, classes, &mut out, &mut tmp);
            prop_assert_eq!(&out, &reference::normalize(word));
            if settled {
                prop_assert_eq!(reference::normalize(&out), out.clone());
            }
            if is_normal(word) {
                prop_assert_eq!(out.as_str(), word);
            }
        }

        #[test]
        fn normal_forms_match_the_reference(text in texts()) {
            for s in std::iter::once(text.as_str()).chain(text.split_whitespace()) {
                let norm = normalize(s);
                prop_assert_eq!(&norm, &reference::normalize(s));
                prop_assert_eq!(url_host(s), reference::url_host(s));
                prop_assert_eq!(email_domain(s), reference::email_domain(s));
                if is_normal(s) {
                    prop_assert_eq!(&norm, s);
                }
                let cow = normalize_cow(s);
                prop_assert_eq!(cow.as_ref(), norm.as_str());
            }
        }
    }

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
