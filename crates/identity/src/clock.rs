//! Time, in whole seconds since the Unix epoch (the unit of JWT `exp`, `nbf`, `iat`).
//!
//! Enforcement uses the system clock; tests, replays and simulations use a [`ManualClock`] so
//! that expiry is reproducible.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock stopped at `now`.
    pub fn new(now: u64) -> Self {
        ManualClock(AtomicU64::new(now))
    }

    /// Sets the time.
    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the time forward by `secs`.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// RFC 3339 UTC (`2026-11-13T09:00:00Z`) for records and display; the plain number of seconds
/// if the time is beyond what RFC 3339 can write.
pub fn format_time(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_and_format() {
        let c = ManualClock::new(1_794_560_400);
        c.advance(10);
        assert_eq!(c.now(), 1_794_560_410);
        assert_eq!(format_time(1_794_560_400), "2026-11-13T09:00:00Z");
        assert_eq!(format_time(u64::MAX), u64::MAX.to_string());
        assert!(SystemClock.now() > 1_700_000_000);
    }
}
