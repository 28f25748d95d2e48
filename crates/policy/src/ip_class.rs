//! `ip_range` classification of scan targets and destinations.
//!
//! Fail closed: a range is `Internal_Private`, `Loopback`, `Link_Local` or a named range only
//! when *all* of it lies inside that class; anything that includes a single other address is
//! `External_Public` (documentation and reserved blocks included — a policy that guards against
//! external targets should not be escaped through an unusual block).

use ipnet::IpNet;
use serde_json::Value;
use std::net::IpAddr;
use std::sync::LazyLock;

/// Named ranges from the catalog, checked before the built-in classes, in order.
#[derive(Debug, Clone, Default)]
pub struct NamedRanges(pub Vec<(String, Vec<IpNet>)>);

pub const EXTERNAL_PUBLIC: &str = "External_Public";
pub const INTERNAL_PRIVATE: &str = "Internal_Private";
pub const LOOPBACK: &str = "Loopback";
pub const LINK_LOCAL: &str = "Link_Local";
pub const UNKNOWN: &str = "Unknown";

/// The built-in classes, parsed once: classification runs on every call that reads an
/// `ip_range` attribute.
fn builtin() -> &'static [(&'static str, Vec<IpNet>)] {
    static CLASSES: LazyLock<Vec<(&'static str, Vec<IpNet>)>> = LazyLock::new(|| {
        let classes: [(&str, &[&str]); 3] = [
            (LOOPBACK, &["127.0.0.0/8", "::1/128"]),
            (LINK_LOCAL, &["169.254.0.0/16", "fe80::/10"]),
            (
                INTERNAL_PRIVATE,
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

/// The span of addresses a target denotes: an address, a CIDR, or `first-last`.
fn parse_target(text: &str) -> Option<(IpAddr, IpAddr)> {
    let text = text.trim();
    // Only a CIDR has a `/`; trying the (slow) CIDR parser on everything else is wasted.
    if text.contains('/') {
        if let Ok(net) = text.parse::<IpNet>() {
            return Some((net.network(), net.broadcast()));
        }
    }
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Some((addr, addr));
    }
    let (a, b) = text.split_once('-')?;
    let (a, b): (IpAddr, IpAddr) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a.is_ipv4() == b.is_ipv4() && a <= b).then_some((a, b))
}

fn covers(net: &IpNet, (first, last): (IpAddr, IpAddr)) -> bool {
    net.contains(&first) && net.contains(&last)
}

/// The class of one target string.
pub fn classify_str<'a>(text: &str, named: &'a NamedRanges) -> &'a str {
    let Some(range) = parse_target(text) else {
        return UNKNOWN;
    };
    for (name, nets) in &named.0 {
        if nets.iter().any(|n| covers(n, range)) {
            return name;
        }
    }
    for (class, nets) in builtin() {
        if nets.iter().any(|n| covers(n, range)) {
            return class;
        }
    }
    EXTERNAL_PUBLIC
}

/// The class of a JSON value: a string target, or an array of them. Any external member makes
/// the whole external; members of different other classes, or none at all, make it `Unknown`.
pub fn classify_value<'a>(value: &Value, named: &'a NamedRanges) -> &'a str {
    match value {
        Value::String(s) => classify_str(s, named),
        Value::Array(items) => {
            let classes: Vec<&str> = items.iter().map(|i| classify_value(i, named)).collect();
            if classes.contains(&EXTERNAL_PUBLIC) {
                EXTERNAL_PUBLIC
            } else {
                match classes.split_first() {
                    Some((first, rest)) if rest.iter().all(|c| c == first) => first,
                    _ => UNKNOWN,
                }
            }
        }
        _ => UNKNOWN,
    }
}

/// Whether every address `target` denotes lies inside one of `nets` (for `IN_CIDR`).
pub fn within_any(target: &str, nets: &[IpNet]) -> bool {
    parse_target(target).is_some_and(|range| nets.iter().any(|n| covers(n, range)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let named = NamedRanges(vec![(
            "Corp_DMZ".into(),
            vec!["198.51.100.0/24".parse().unwrap()],
        )]);
        let c = |s: &str| classify_str(s, &named).to_string();
        assert_eq!(c("10.0.3.0/24"), INTERNAL_PRIVATE);
        assert_eq!(c("10.0.3.7"), INTERNAL_PRIVATE);
        assert_eq!(c("192.168.1.1"), INTERNAL_PRIVATE);
        assert_eq!(c("fd12::1"), INTERNAL_PRIVATE);
        assert_eq!(c("127.0.0.1"), LOOPBACK);
        assert_eq!(c("::1"), LOOPBACK);
        assert_eq!(c("169.254.1.1"), LINK_LOCAL);
        assert_eq!(c("8.8.8.8"), EXTERNAL_PUBLIC);
        assert_eq!(c("203.0.113.0/24"), EXTERNAL_PUBLIC);
        assert_eq!(c("0.0.0.0/0"), EXTERNAL_PUBLIC);
        assert_eq!(c("10.0.0.0/7"), EXTERNAL_PUBLIC, "spans 11.0.0.0/8");
        assert_eq!(c("10.0.0.1-10.0.0.9"), INTERNAL_PRIVATE);
        assert_eq!(c("10.255.255.255-11.0.0.0"), EXTERNAL_PUBLIC);
        assert_eq!(c("198.51.100.7"), "Corp_DMZ");
        assert_eq!(c("db.internal"), UNKNOWN);
        let v = |j: Value| classify_value(&j, &named).to_string();
        assert_eq!(
            v(serde_json::json!(["10.0.0.1", "8.8.8.8"])),
            EXTERNAL_PUBLIC
        );
        assert_eq!(
            v(serde_json::json!(["10.0.0.1", "10.0.0.2"])),
            INTERNAL_PRIVATE
        );
        assert_eq!(v(serde_json::json!(["10.0.0.1", "x"])), UNKNOWN);
        assert_eq!(v(serde_json::json!(7)), UNKNOWN);
    }
}
