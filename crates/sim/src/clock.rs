//! The simulated clock's timestamps: RFC 3339 in UTC with milliseconds, the engine's format
//! (`2026-11-13T09:00:00.250Z`), written faster than the engine's general formatter for the
//! exploration, which builds a call for every move of every state.

use std::fmt::Write as _;

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `ms` (epoch milliseconds) as RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    let days = ms.div_euclid(86_400_000);
    let rest = ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil(days);
    let (h, mi, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use truststack_engine::event::{format_time, parse_time};

    #[test]
    fn agrees_with_the_engine() {
        for ms in [
            0,
            1_794_556_800_000,
            1_794_556_800_250,
            951_782_400_000, // 2000-02-29
            4_102_444_799_999,
            1_234_567_890_123,
        ] {
            assert_eq!(rfc3339(ms), format_time(ms), "{ms}");
            assert_eq!(parse_time(&rfc3339(ms)), Ok(ms));
        }
    }
}
