//! The normal forms and the value scan as first written, one allocation per value: the
//! reference the single-pass scan in the parent module is checked against.
#![allow(clippy::unwrap_used)]

// What counts as wrapping punctuation is a definition, not the scan under test: shared.
use super::{is_wrapping, WHOLE_MAX};

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

/// A lowercased URL in normal form, or `None` if `s` is not one. The URL form itself did not
/// change with the single-pass scan: shared.
fn normalize_url(s: &str) -> Option<String> {
    let mut out = String::new();
    super::normalize_url_into(s, &mut out).then_some(out)
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

/// Strings between matching quotes, normalised. Finding the quotes did not change with the
/// single-pass scan: shared.
fn each_quoted(text: &str, f: &mut impl FnMut(&str)) {
    super::each_quoted(text, &mut |inner| f(&normalize(inner)));
}
