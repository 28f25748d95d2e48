//! Bounds on approval long-polls: how many may wait at once, per caller and in all.
//!
//! A waiter holds no thread (it awaits the engine's notification), but each still holds a
//! connection and a task; without a bound, one caller could open thousands. A caller past its
//! share, or any caller once the server's total is reached, is answered 429 at once.

use crate::error::ApiError;
use axum::http::StatusCode;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// Who waits, and how many.
pub struct Waiters {
    per_caller: usize,
    total: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    all: usize,
    by_caller: HashMap<String, usize>,
}

/// One admitted waiter: dropping it (the request ends, however it ends) frees its place.
pub struct WaitSlot {
    waiters: Arc<Waiters>,
    caller: String,
}

impl Waiters {
    pub fn new(per_caller: usize, total: usize) -> Arc<Self> {
        Arc::new(Waiters {
            per_caller,
            total,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Admits one more waiter for `caller` (a principal), or refuses with 429.
    pub fn enter(self: &Arc<Self>, caller: &str) -> Result<WaitSlot, ApiError> {
        let mut counts = self.counts.lock();
        let mine = counts.by_caller.get(caller).copied().unwrap_or(0);
        if mine >= self.per_caller {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{} already has {mine} approval waits open (at most {} per caller)",
                    truststack_engine::log::clip(caller),
                    self.per_caller
                ),
            ));
        }
        if counts.all >= self.total {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "the server already has {} approval waits open (at most {})",
                    counts.all, self.total
                ),
            ));
        }
        counts.all += 1;
        *counts.by_caller.entry(caller.to_string()).or_default() += 1;
        Ok(WaitSlot {
            waiters: Arc::clone(self),
            caller: caller.to_string(),
        })
    }

    /// How many wait now.
    pub fn open(&self) -> usize {
        self.counts.lock().all
    }
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut counts = self.waiters.counts.lock();
        counts.all = counts.all.saturating_sub(1);
        if let Some(n) = counts.by_caller.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_caller.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_caller_and_total_bounds_hold_and_free_on_drop() {
        let w = Waiters::new(2, 3);
        let a1 = w.enter("a").unwrap();
        let _a2 = w.enter("a").unwrap();
        assert_eq!(
            w.enter("a").err().unwrap().status,
            StatusCode::TOO_MANY_REQUESTS
        );
        let _b1 = w.enter("b").unwrap();
        let e = w.enter("c").err().unwrap();
        assert!(e.message.contains("at most 3"), "{}", e.message);
        drop(a1);
        assert_eq!(w.open(), 2);
        let _c1 = w.enter("c").unwrap();
    }
}
