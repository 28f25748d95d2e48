//! Durations in policies: `500ms`, `30s`, `5min`, `1h`, `2d`.
//!
//! The unit set is deliberately small and unambiguous (`m` could be minutes or months); near
//! misses such as `mins` or `minutes` get a hint rather than a guess.

/// The accepted units and their length in milliseconds.
pub const UNITS: [(&str, i64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("min", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Milliseconds per unit, or `None` for an unknown unit.
pub fn unit_ms(unit: &str) -> Option<i64> {
    UNITS.iter().find(|(u, _)| *u == unit).map(|(_, ms)| *ms)
}

/// A suggestion for a unit that is not accepted.
pub fn unit_hint(unit: &str) -> Option<&'static str> {
    let lower = unit.to_ascii_lowercase();
    let hint = match lower.as_str() {
        "m" | "mn" | "mins" | "minute" | "minutes" | "mi" => "min",
        "sec" | "secs" | "second" | "seconds" | "sek" => "s",
        "msec" | "msecs" | "millis" | "milliseconds" => "ms",
        "hr" | "hrs" | "hour" | "hours" => "h",
        "day" | "days" => "d",
        _ => {
            return crate::diagnostic::closest(&lower, UNITS.iter().map(|(u, _)| *u))
                .filter(|c| *c != lower)
        }
    };
    Some(hint)
}

/// Parses `5min`, `30 s`, `1h` (a whole "number unit" string) into milliseconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: expected a whole number then a unit"))?;
    let unit = unit.trim();
    let ms = unit_ms(unit).ok_or_else(|| match unit_hint(unit) {
        Some(h) => format!("unknown time unit `{unit}` in `{text}`: did you mean `{h}`?"),
        None => format!("unknown time unit `{unit}` in `{text}`: expected ms, s, min, h or d"),
    })?;
    n.checked_mul(ms)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("duration `{text}` must be positive and at most ~292 million years"))
}

/// Formats milliseconds in the largest unit that divides them.
pub fn format_duration(ms: i64) -> String {
    for (unit, len) in UNITS.iter().rev() {
        if ms % len == 0 && ms != 0 {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}

/// A duration as every configuration writes it (`approval_deadline = "15min"`), parsed once
/// when the file is read: a bad one is an error at its line and column, never at first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    ms: i64,
}

impl Duration {
    /// `ms` milliseconds (positive).
    pub const fn from_ms(ms: i64) -> Duration {
        Duration { ms }
    }

    pub const fn ms(self) -> i64 {
        self.ms
    }

    pub fn std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.ms.unsigned_abs())
    }
}

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(text: &str) -> Result<Duration, String> {
        parse_duration(text).map(Duration::from_ms)
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_duration(self.ms))
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
