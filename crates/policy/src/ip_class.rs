//! `ip_range` classification of scan targets and destinations.
//!
//! A target classifies to what it denotes, in every form the tools themselves accept:
//!
//! - an IPv4 address in any form `inet_aton(3)` reads: dotted (`8.8.8.8`), shortened (`8.8.8`,
//!   `8.8`), one integer (`134744072`), hex (`0x08080808`, `0x8.0x8.0x8.0x8`) or octal
//!   (`010.0.0.1`) parts; nmap's octet ranges and lists (`10.0.0.1-20`, `8.8.8.0-255`,
//!   `10.0.0.1,5,9`, `192.168.*.1`, `10.0.0.-`); an address range (`10.0.0.1-10.0.0.9`);
//! - an IPv6 address (zone and brackets allowed: `[fe80::1%eth0]`), IPv4-mapped ones classified
//!   as the IPv4 address they carry; a CIDR of either family;
//! - several targets separated by whitespace or commas;
//! - a hostname: `Loopback` for `localhost` and names under it, `Internal_Private` when it is
//!   one of the catalog's `[network] internal_domains` or under one, `External_Public`
//!   otherwise. Nothing is resolved: a decision never waits for DNS.
//!
//! A form that tools read differently is classified under every reading (`010.0.0.1` is
//! 10.0.0.1 to nmap and 8.0.0.1 to `inet_aton`). A range, a list or a form with several
//! readings takes the most exposed class among what it denotes: `External_Public`, then
//! `Unknown`, then the named ranges (in name order), `Internal_Private`, `Link_Local`,
//! `Loopback`. So a target that mentions a single public address is `External_Public`.
//!
//! Fail closed: a range is `Internal_Private`, `Loopback`, `Link_Local` or a named range only
//! when *all* of it lies inside that class; anything that includes a single other address is
//! `External_Public` (documentation and reserved blocks included — a policy that guards against
//! external targets should not be escaped through an unusual block). `Unknown` is left for what
//! is neither an address form nor a hostname (`8.8.8.8:53`, an empty string, a JSON object).

use ipnet::IpNet;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::ControlFlow;
use std::sync::LazyLock;

/// What the catalog says about the network: named ranges, checked before the built-in classes,
/// and the DNS domains whose hosts are internal.
#[derive(Debug, Clone, Default)]
pub struct Network {
    /// Named ranges, in name order.
    pub ranges: Vec<(String, Vec<IpNet>)>,
    /// Lower-case domains without a trailing dot: a host that is one of them or under one is
    /// `Internal_Private`.
    pub internal_domains: Vec<String>,
}

pub const EXTERNAL_PUBLIC: &str = "External_Public";
pub const INTERNAL_PRIVATE: &str = "Internal_Private";
pub const LOOPBACK: &str = "Loopback";
pub const LINK_LOCAL: &str = "Link_Local";
pub const UNKNOWN: &str = "Unknown";

/// A class, ordered by exposure (`Ord`: the greater is the more exposed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Loopback,
    LinkLocal,
    Private,
    /// The named range at this index, reversed so that the first in name order ranks highest.
    Named(std::cmp::Reverse<usize>),
    Unknown,
    External,
}

impl Class {
    fn name(self, network: &Network) -> &str {
        match self {
            Class::Loopback => LOOPBACK,
            Class::LinkLocal => LINK_LOCAL,
            Class::Private => INTERNAL_PRIVATE,
            Class::Named(std::cmp::Reverse(i)) => network
                .ranges
                .get(i)
                .map_or(UNKNOWN, |(name, _)| name.as_str()),
            Class::Unknown => UNKNOWN,
            Class::External => EXTERNAL_PUBLIC,
        }
    }
}

/// The built-in classes, parsed once: classification runs on every call that reads an
/// `ip_range` attribute.
fn builtin() -> &'static [(Class, Vec<IpNet>)] {
    static CLASSES: LazyLock<Vec<(Class, Vec<IpNet>)>> = LazyLock::new(|| {
        let classes: [(Class, &[&str]); 3] = [
            (Class::Loopback, &["127.0.0.0/8", "::1/128"]),
            (Class::LinkLocal, &["169.254.0.0/16", "fe80::/10"]),
            (
                Class::Private,
                &[
                    "10.0.0.0/8",
                    "172.16.0.0/12",
                    "192.168.0.0/16",
                    "100.64.0.0/10",
                    "fc00::/7",
                ],
            ),
        ];
        classes
            .into_iter()
            .map(|(class, nets)| (class, nets.iter().filter_map(|n| n.parse().ok()).collect()))
            .collect()
    });
    &CLASSES
}

/// One thing a target denotes.
#[derive(Debug, Clone, Copy)]
enum Denoted<'t> {
    /// Every address from the first to the last, inclusive, of one family.
    Span(IpAddr, IpAddr),
    /// A hostname, without a trailing dot.
    Host(&'t str),
    /// Neither an address form nor a hostname.
    Unparsed,
}

/// Calls `f` with everything `text` denotes, under every reading, until `f` breaks; with
/// `Unparsed` if it denotes nothing at all.
fn denoted<'t>(
    text: &'t str,
    f: &mut impl FnMut(Denoted<'t>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let mut any = false;
    for token in text.split_whitespace() {
        token_denotes(token, &mut |d| {
            any = true;
            f(d)
        })?;
    }
    if any {
        ControlFlow::Continue(())
    } else {
        f(Denoted::Unparsed)
    }
}

/// One whitespace-free token: an address form; else a comma-separated list (empty pieces are
/// separators); else a hostname.
fn token_denotes<'t>(
    token: &'t str,
    f: &mut impl FnMut(Denoted<'t>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let mut found = false;
    address_denotes(token, &mut |d| {
        found = true;
        f(d)
    })?;
    if found {
        return ControlFlow::Continue(());
    }
    if token.contains(',') {
        for piece in token.split(',').filter(|p| !p.is_empty()) {
            token_denotes(piece, f)?;
        }
        return ControlFlow::Continue(());
    }
    match hostname(token) {
        Some(host) => f(Denoted::Host(host)),
        None => f(Denoted::Unparsed),
    }
}

/// The spans an address form denotes, under each reading; nothing if it is not one.
fn address_denotes<'t>(
    token: &'t str,
    f: &mut impl FnMut(Denoted<'t>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    if let Some((addr, prefix)) = token.split_once('/') {
        let Some(prefix) = decimal(prefix).and_then(|p| u8::try_from(p).ok()) else {
            return ControlFlow::Continue(());
        };
        return single_readings(addr, &mut |a| match IpNet::new(a, prefix) {
            Ok(net) => f(Denoted::Span(net.network(), net.broadcast())),
            Err(_) => ControlFlow::Continue(()),
        });
    }
    if let Some((a, b)) = token.split_once('-') {
        // `first-last`, both full addresses of one family (one reading each; `inet_aton` forms
        // of IPv4 included).
        if let (Some(a), Some(b)) = (single(a), single(b)) {
            if a.is_ipv4() == b.is_ipv4() && a <= b {
                f(Denoted::Span(a, b))?;
            }
        }
    }
    single_readings(token, &mut |a| f(Denoted::Span(a, a)))?;
    octet_ranges(token, f)
}

/// The readings of one address: IPv6 (brackets and zone allowed), or IPv4 as `inet_aton` and,
/// when it differs (leading zeros), as plain dotted decimal.
fn single_readings(text: &str, f: &mut impl FnMut(IpAddr) -> ControlFlow<()>) -> ControlFlow<()> {
    if text.contains(':') {
        return match ipv6(text) {
            Some(a) => f(a),
            None => ControlFlow::Continue(()),
        };
    }
    let aton = inet_aton(text);
    if let Some(a) = aton {
        f(IpAddr::V4(a))?;
    }
    match dotted_decimal(text) {
        Some(a) if Some(a) != aton => f(IpAddr::V4(a)),
        _ => ControlFlow::Continue(()),
    }
}

/// One address, under its first reading (for the ends of `first-last`).
fn single(text: &str) -> Option<IpAddr> {
    let mut found = None;
    let _ = single_readings(text, &mut |a| {
        found = Some(a);
        ControlFlow::Break(())
    });
    found
}

fn ipv6(text: &str) -> Option<IpAddr> {
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let text = text.split_once('%').map_or(text, |(a, _zone)| a);
    let a: Ipv6Addr = text.parse().ok()?;
    // An IPv4-mapped address reaches the IPv4 address it carries.
    Some(match a.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(a),
    })
}

/// A decimal number of at most 10 digits.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// One part of an `inet_aton` address: `0x` hex, `0` octal, or decimal.
fn aton_part(text: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            (hex, 16)
        } else if let Some(octal) = text.strip_prefix('0').filter(|rest| !rest.is_empty()) {
            (octal, 8)
        } else {
            (text, 10)
        };
    if digits.is_empty() || digits.len() > 32 || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits.trim_start_matches('0'), radix)
        .ok()
        .or_else(|| digits.bytes().all(|b| b == b'0').then_some(0))
}

/// IPv4 as `inet_aton(3)` reads it: `a.b.c.d`, `a.b.c` (c: 16 bits), `a.b` (b: 24 bits) or `a`
/// (32 bits), each part decimal, `0x` hex or `0`-prefixed octal.
fn inet_aton(text: &str) -> Option<Ipv4Addr> {
    let mut parts = [0u64; 4];
    let mut n = 0;
    for part in text.split('.') {
        *parts.get_mut(n)? = aton_part(part)?;
        n += 1;
    }
    let (head, last) = (parts.get(..n - 1)?, *parts.get(n - 1)?);
    if head.iter().any(|p| *p > 0xff) || last >= 1u64 << (8 * (5 - n)) {
        return None;
    }
    let value = head
        .iter()
        .enumerate()
        .fold(last, |acc, (i, p)| acc | (p << (8 * (3 - i))));
    Some(Ipv4Addr::from(u32::try_from(value).ok()?))
}

/// Four dotted decimal parts, leading zeros read as decimal (nmap's reading).
fn dotted_decimal(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut n = 0;
    for part in text.split('.') {
        *octets.get_mut(n)? = u8::try_from(decimal(part)?).ok()?;
        n += 1;
    }
    (n == 4).then(|| Ipv4Addr::from(octets))
}

/// Octet ranges per part before the rest are folded into one span (a bound on the work an
/// adversarial target can cause; folding only widens, so it errs towards `External_Public`).
const MAX_RANGES: usize = 8;

/// One part of an nmap octet pattern: `*`, or a comma list of `n`, `n-m`, `-m`, `n-`, `-`.
fn octet_part(text: &str) -> Option<([(u8, u8); MAX_RANGES], usize)> {
    let mut out = [(0u8, 0u8); MAX_RANGES];
    let mut n = 0;
    let mut push = |lo: u8, hi: u8| {
        if lo > hi {
            return false;
        }
        match out.get_mut(n) {
            Some(slot) => {
                *slot = (lo, hi);
                n += 1;
            }
            None => {
                // Fold into the span of all so far.
                let (first, last) = out
                    .iter()
                    .fold((lo, hi), |(a, b), (x, y)| (a.min(*x), b.max(*y)));
                out = [(first, last); MAX_RANGES];
                n = 1;
            }
        }
        true
    };
    let octet = |t: &str| decimal(t).and_then(|v| u8::try_from(v).ok());
    if text == "*" {
        push(0, 255);
        return Some((out, 1));
    }
    for element in text.split(',') {
        let ok = match element.split_once('-') {
            Some((lo, hi)) => {
                let lo = if lo.is_empty() { Some(0) } else { octet(lo) };
                let hi = if hi.is_empty() { Some(255) } else { octet(hi) };
                match (lo, hi) {
                    (Some(lo), Some(hi)) => push(lo, hi),
                    _ => false,
                }
            }
            None => octet(element).is_some_and(|v| push(v, v)),
        };
        if !ok {
            return None;
        }
    }
    (n > 0).then_some((out, n))
}

/// nmap's octet ranges: four parts, each an octet pattern; the boxes they span.
fn octet_ranges<'t>(
    text: &'t str,
    f: &mut impl FnMut(Denoted<'t>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    // A plain address has been read already; only ranges, lists and wildcards are new here.
    if !text.contains(['-', ',', '*']) {
        return ControlFlow::Continue(());
    }
    let mut parts = [([(0u8, 0u8); MAX_RANGES], 0usize); 4];
    let mut n = 0;
    for part in text.split('.') {
        let Some(slot) = parts.get_mut(n) else {
            return ControlFlow::Continue(());
        };
        match octet_part(part) {
            Some(p) => *slot = p,
            None => return ControlFlow::Continue(()),
        }
        n += 1;
    }
    if n != 4 {
        return ControlFlow::Continue(());
    }
    let [a, b, c, d] = parts;
    let ranges = |p: &([(u8, u8); MAX_RANGES], usize)| p.0.into_iter().take(p.1);
    for ra in ranges(&a) {
        for rb in ranges(&b) {
            for rc in ranges(&c) {
                for rd in ranges(&d) {
                    // A box's span: exact when only the last varying part is a range, wider
                    // otherwise (never narrower).
                    let first = Ipv4Addr::new(ra.0, rb.0, rc.0, rd.0);
                    let last = Ipv4Addr::new(ra.1, rb.1, rc.1, rd.1);
                    f(Denoted::Span(IpAddr::V4(first), IpAddr::V4(last)))?;
                }
            }
        }
    }
    ControlFlow::Continue(())
}

/// A hostname (RFC 1123 labels, `_` allowed, an optional trailing dot; `host/prefix` as nmap
/// takes it), without its trailing dot.
fn hostname(token: &str) -> Option<&str> {
    let host = match token.split_once('/') {
        Some((host, prefix)) => {
            decimal(prefix).filter(|p| *p <= 32)?;
            host
        }
        None => token,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    is_dns_name(host).then_some(host)
}

/// Whether `name` (no trailing dot) is a DNS name: 1 to 253 bytes of labels of 1 to 63 letters,
/// digits, `-` and `_`.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Whether `host` is `domain` or a name under it (ASCII case-insensitive).
fn within_domain(host: &str, domain: &str) -> bool {
    let n = host.len();
    let d = domain.len();
    if n == d {
        return host.eq_ignore_ascii_case(domain);
    }
    n > d
        && host.as_bytes().get(n - d - 1) == Some(&b'.')
        && host
            .get(n - d..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(domain))
}

fn covers(net: &IpNet, first: IpAddr, last: IpAddr) -> bool {
    net.contains(&first) && net.contains(&last)
}

fn class_of(d: Denoted<'_>, network: &Network) -> Class {
    match d {
        Denoted::Span(first, last) => {
            for (i, (_, nets)) in network.ranges.iter().enumerate() {
                if nets.iter().any(|n| covers(n, first, last)) {
                    return Class::Named(std::cmp::Reverse(i));
                }
            }
            for (class, nets) in builtin() {
                if nets.iter().any(|n| covers(n, first, last)) {
                    return *class;
                }
            }
            Class::External
        }
        Denoted::Host(host) => {
            if within_domain(host, "localhost") {
                Class::Loopback
            } else if network
                .internal_domains
                .iter()
                .any(|d| within_domain(host, d))
            {
                Class::Private
            } else {
                Class::External
            }
        }
        Denoted::Unparsed => Class::Unknown,
    }
}

/// The most exposed class of what `text` denotes.
fn class_str(text: &str, network: &Network) -> Class {
    let mut worst = Class::Loopback;
    let _ = denoted(text, &mut |d| {
        worst = worst.max(class_of(d, network));
        if worst == Class::External {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    worst
}

fn class_value(value: &Value, network: &Network) -> Class {
    match value {
        Value::String(s) => class_str(s, network),
        // A number is an IPv4 address to the tools that take one (`134744072`).
        Value::Number(n) => match n.as_u64().and_then(|v| u32::try_from(v).ok()) {
            Some(v) => {
                let a = IpAddr::V4(Ipv4Addr::from(v));
                class_of(Denoted::Span(a, a), network)
            }
            None => Class::Unknown,
        },
        Value::Array(items) if !items.is_empty() => {
            let mut worst = Class::Loopback;
            for item in items {
                worst = worst.max(class_value(item, network));
                if worst == Class::External {
                    break;
                }
            }
            worst
        }
        _ => Class::Unknown,
    }
}

/// The class of one target string.
pub fn classify_str<'a>(text: &str, network: &'a Network) -> &'a str {
    class_str(text, network).name(network)
}

/// The class of a JSON value: a string of targets, a number (an IPv4 address as one integer),
/// or an array of them (the most exposed member's class).
pub fn classify_value<'a>(value: &Value, network: &'a Network) -> &'a str {
    class_value(value, network).name(network)
}

/// Whether every address `target` denotes, under every reading, lies inside one of `nets` (for
/// `IN_CIDR`). A hostname, or anything that is not an address, is inside none.
pub fn within_any(target: &str, nets: &[IpNet]) -> bool {
    let flow = denoted(target, &mut |d| match d {
        Denoted::Span(first, last) if nets.iter().any(|n| covers(n, first, last)) => {
            ControlFlow::Continue(())
        }
        _ => ControlFlow::Break(()),
    });
    flow.is_continue()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn network() -> Network {
        Network {
            ranges: vec![("Corp_DMZ".into(), vec!["198.51.100.0/24".parse().unwrap()])],
            internal_domains: vec!["corp.acme.example".into()],
        }
    }

    #[test]
    fn classes() {
        let network = network();
        let c = |s: &str| classify_str(s, &network).to_string();
        assert_eq!(c("10.0.3.0/24"), INTERNAL_PRIVATE);
        assert_eq!(c("10.0.3.7"), INTERNAL_PRIVATE);
        assert_eq!(c("192.168.1.1"), INTERNAL_PRIVATE);
        assert_eq!(c("fd12::1"), INTERNAL_PRIVATE);
        assert_eq!(c("127.0.0.1"), LOOPBACK);
        assert_eq!(c("::1"), LOOPBACK);
        assert_eq!(c("169.254.1.1"), LINK_LOCAL);
        assert_eq!(c("8.8.8.8"), EXTERNAL_PUBLIC);
        assert_eq!(c("8.8.8.8/32"), EXTERNAL_PUBLIC);
        assert_eq!(c("203.0.113.0/24"), EXTERNAL_PUBLIC);
        assert_eq!(c("0.0.0.0/0"), EXTERNAL_PUBLIC);
        assert_eq!(c("10.0.0.0/7"), EXTERNAL_PUBLIC, "spans 11.0.0.0/8");
        assert_eq!(c("10.0.0.1-10.0.0.9"), INTERNAL_PRIVATE);
        assert_eq!(c("10.255.255.255-11.0.0.0"), EXTERNAL_PUBLIC);
        assert_eq!(c("198.51.100.7"), "Corp_DMZ");
        assert_eq!(c("8.8.8.8:53"), UNKNOWN);
        assert_eq!(c(""), UNKNOWN);
        assert_eq!(c("  "), UNKNOWN);
    }

    /// Issue 14, defect 8: each of these walked around the seed's External_Public rule.
    #[test]
    fn every_form_the_tools_accept_classifies_to_what_it_denotes() {
        let network = network();
        let c = |s: &str| classify_str(s, &network).to_string();
        for external in [
            "dns.google",
            "dns.google.",
            "scanme.nmap.org/24",
            "134744072",
            "0x08080808",
            "0x8.0x8.0x8.0x8",
            "010.0.0.1",
            // 10.0.0.1 to inet_aton, 12.0.0.1 to nmap: the more exposed reading.
            "012.0.0.1",
            "8.8.8",
            "8.526344",
            "10.0.0.1,8.8.8.8",
            "10.0.0.1 8.8.8.8",
            "10.0.0.1\t8.8.8.8",
            "8.8.8.0-255",
            "8.8.8.*",
            "10.0.0.1-20,8.8.8.8",
            "10,8.0.0.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "[2001:db8::1]",
            "fe80::1,8.8.8.8",
            "db.corp.acme.example.evil.example",
            "corp.acme.example.evil",
            "notcorp.acme.example",
        ] {
            assert_eq!(c(external), EXTERNAL_PUBLIC, "{external}");
        }
        for (target, class) in [
            ("10.0.0.1-20", INTERNAL_PRIVATE),
            ("10.0.0.1,5,9", INTERNAL_PRIVATE),
            ("10.0.0.-", INTERNAL_PRIVATE),
            ("10.0.*.1", INTERNAL_PRIVATE),
            ("167772161", INTERNAL_PRIVATE),
            ("0x0a000001", INTERNAL_PRIVATE),
            ("10.1", INTERNAL_PRIVATE),
            ("127.1", LOOPBACK),
            ("0x7f000001", LOOPBACK),
            ("::ffff:127.0.0.1", LOOPBACK),
            ("[fe80::1%eth0]", LINK_LOCAL),
            ("localhost", LOOPBACK),
            ("db.corp.acme.example", INTERNAL_PRIVATE),
            ("DB.Corp.Acme.Example.", INTERNAL_PRIVATE),
            ("corp.acme.example", INTERNAL_PRIVATE),
            ("10.0.0.1 db.corp.acme.example", INTERNAL_PRIVATE),
            // The most exposed class of a list: a named range ranks above the private classes.
            ("10.0.0.1,198.51.100.7", "Corp_DMZ"),
            ("127.0.0.1 10.0.0.1", INTERNAL_PRIVATE),
            ("10.0.0.1 8.8.8.8:53", UNKNOWN),
        ] {
            assert_eq!(c(target), class, "{target}");
        }
        let v = |j: Value| classify_value(&j, &network).to_string();
        assert_eq!(v(serde_json::json!(134744072)), EXTERNAL_PUBLIC);
        assert_eq!(v(serde_json::json!(167772161)), INTERNAL_PRIVATE);
        assert_eq!(
            v(serde_json::json!(["10.0.0.1", "8.8.8.8"])),
            EXTERNAL_PUBLIC
        );
        assert_eq!(
            v(serde_json::json!(["10.0.0.1", "10.0.0.2"])),
            INTERNAL_PRIVATE
        );
        assert_eq!(
            v(serde_json::json!(["10.0.0.1", "127.0.0.1"])),
            INTERNAL_PRIVATE
        );
        assert_eq!(
            v(serde_json::json!(["10.0.0.1", "dns.google"])),
            EXTERNAL_PUBLIC
        );
        assert_eq!(v(serde_json::json!(["10.0.0.1", {}])), UNKNOWN);
        assert_eq!(v(serde_json::json!([])), UNKNOWN);
        assert_eq!(v(serde_json::json!(-1)), UNKNOWN);
        assert_eq!(v(serde_json::json!(4294967296u64)), UNKNOWN);
    }

    #[test]
    fn in_cidr_holds_only_when_every_reading_is_inside() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        for inside in [
            "10.0.0.1",
            "167772161",
            "0xa000001",
            "10.0.0.1-20",
            "10.0.0.1,10.9.9.9",
            "10.1",
        ] {
            assert!(within_any(inside, &nets), "{inside}");
        }
        for outside in [
            "8.8.8.8",
            "010.0.0.1",
            // 10.0.0.1 to inet_aton, 12.0.0.1 to nmap: the more exposed reading.
            "012.0.0.1",
            "10.0.0.1,8.8.8.8",
            "10.0.0.1 8.8.8.8",
            "db.corp.acme.example",
            "",
            "x:y",
        ] {
            assert!(!within_any(outside, &nets), "{outside}");
        }
    }

    #[test]
    fn adversarial_patterns_stay_bounded() {
        let network = network();
        let list: Vec<String> = (0..=255).map(|i| i.to_string()).collect();
        let part = list.join(",");
        let target = format!("10.{part}.{part}.{part}");
        assert_eq!(classify_str(&target, &network), INTERNAL_PRIVATE);
        let target = format!("{part}.{part}.{part}.{part}");
        assert_eq!(classify_str(&target, &network), EXTERNAL_PUBLIC);
    }

    /// Every IPv4 written as dotted decimal, one integer, hex, dotted hex, octal and shortened.
    fn forms(a: Ipv4Addr) -> Vec<String> {
        let [o1, o2, o3, o4] = a.octets();
        let v = u32::from(a);
        vec![
            a.to_string(),
            v.to_string(),
            format!("0x{v:08x}"),
            format!("0X{v:X}"),
            format!("0{v:o}"),
            format!("0x{o1:x}.0x{o2:x}.0x{o3:x}.0x{o4:x}"),
            format!("{o1}.{o2}.{}", (u32::from(o3) << 8) | u32::from(o4)),
            format!("{o1}.{}", v & 0x00ff_ffff),
            format!("{a}/32"),
            format!("::ffff:{a}"),
        ]
    }

    proptest! {
        #[test]
        fn every_form_of_an_address_classifies_alike(bits in any::<u32>()) {
            let network = network();
            let a = Ipv4Addr::from(bits);
            let expected = class_str(&a.to_string(), &network);
            for form in forms(a) {
                prop_assert_eq!(class_str(&form, &network), expected, "{}", form);
                prop_assert_eq!(inet_aton(&form).map_or(a, |x| x), a, "{}", form);
            }
            // Dotted octal is another address to nmap (decimal parts): never less exposed.
            let [o1, o2, o3, o4] = a.octets();
            let octal = format!("0{o1:o}.0{o2:o}.0{o3:o}.0{o4:o}");
            prop_assert_eq!(inet_aton(&octal), Some(a));
            prop_assert!(class_str(&octal, &network) >= expected, "{}", octal);
        }

        #[test]
        fn a_list_takes_its_most_exposed_member(a in any::<u32>(), b in any::<u32>(), sep in prop::sample::select(vec![",", " ", " , ", "\n"])) {
            let network = network();
            let (a, b) = (Ipv4Addr::from(a).to_string(), Ipv4Addr::from(b).to_string());
            let list = format!("{a}{sep}{b}");
            let ca = class_str(&a, &network);
            let cb = class_str(&b, &network);
            prop_assert_eq!(class_str(&list, &network), ca.max(cb), "{}", list);
        }

        #[test]
        fn a_range_is_never_less_exposed_than_an_address_in_it(a in any::<u32>(), lo in 0u8..=255, len in 0u8..=255) {
            let network = network();
            let [o1, o2, o3, _] = Ipv4Addr::from(a).octets();
            let hi = lo.saturating_add(len);
            let range = format!("{o1}.{o2}.{o3}.{lo}-{hi}");
            let class = class_str(&range, &network);
            for last in [lo, hi, lo / 2 + hi / 2] {
                let member = Ipv4Addr::new(o1, o2, o3, last.clamp(lo, hi)).to_string();
                prop_assert!(class >= class_str(&member, &network), "{} vs {}", range, member);
            }
        }

        #[test]
        fn classification_never_panics(text in "\\PC{0,40}") {
            let network = network();
            let _ = classify_str(&text, &network);
            let _ = within_any(&text, &[]);
        }
    }
}
