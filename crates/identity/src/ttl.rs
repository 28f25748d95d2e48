//! Lifetimes written the way people say them: `90s`, `15m`, `30min`, `1h`, `8h`, `2d`, `1h30m`.

use std::time::Duration;

/// Why a lifetime cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    /// Nothing was given.
    #[error("the lifetime is empty; write e.g. `90s`, `15m`, `1h`, `2d`")]
    Empty,
    /// A number without a unit, or a unit without a number.
    #[error(
        "lifetime `{input}`: expected numbers each followed by a unit (`s`, `m`/`min`, `h`, `d`)"
    )]
    Syntax {
        /// The rejected input.
        input: String,
    },
    /// A unit other than `s`, `sec`, `m`, `min`, `h`, `d`.
    #[error("lifetime `{input}`: unknown unit `{unit}` (use `s`, `m`/`min`, `h`, `d`)")]
    UnknownUnit {
        /// The rejected input.
        input: String,
        /// The unit.
        unit: String,
    },
    /// Zero seconds.
    #[error("lifetime `{input}` is zero; a credential must live at least one second")]
    Zero {
        /// The rejected input.
        input: String,
    },
    /// Too large to represent.
    #[error("lifetime `{input}` is too large")]
    Overflow {
        /// The rejected input.
        input: String,
    },
}

/// Parses a lifetime: one or more `<number><unit>` terms, added up.
pub fn parse_ttl(input: &str) -> Result<Duration, TtlError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(TtlError::Empty);
    }
    let syntax = || TtlError::Syntax {
        input: input.to_string(),
    };
    let overflow = || TtlError::Overflow {
        input: input.to_string(),
    };
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if number.is_empty() || unit.is_empty() {
            return Err(syntax());
        }
        let n: u64 = number.parse().map_err(|_| overflow())?;
        let scale = match unit {
            "s" | "sec" | "secs" => 1,
            "m" | "min" | "mins" => 60,
            "h" | "hr" | "hrs" => 3_600,
            "d" | "day" | "days" => 86_400,
            other => {
                return Err(TtlError::UnknownUnit {
                    input: input.to_string(),
                    unit: other.to_string(),
                })
            }
        };
        total = n
            .checked_mul(scale)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(overflow)?;
        rest = next;
    }
    if total == 0 {
        return Err(TtlError::Zero {
            input: input.to_string(),
        });
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("30min"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_ttl(" 2d "), Ok(Duration::from_secs(172_800)));
    }

    #[test]
    fn rejects() {
        assert_eq!(parse_ttl(""), Err(TtlError::Empty));
        assert!(matches!(parse_ttl("10"), Err(TtlError::Syntax { .. })));
        assert!(matches!(parse_ttl("h"), Err(TtlError::Syntax { .. })));
        assert!(matches!(parse_ttl("1 h"), Err(TtlError::Syntax { .. })));
        assert!(matches!(
            parse_ttl("3w"),
            Err(TtlError::UnknownUnit { unit, .. }) if unit == "w"
        ));
        assert!(matches!(parse_ttl("0s"), Err(TtlError::Zero { .. })));
        assert!(matches!(
            parse_ttl("99999999999999999999d"),
            Err(TtlError::Overflow { .. })
        ));
    }
}
