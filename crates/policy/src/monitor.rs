//! Incremental monitors: the bounded per-scope state that lets every predicate be decided in
//! O(1) in the length of the history.
//!
//! | predicate | monitor | state |
//! |---|---|---|
//! | `Trajectory_Contains('X') [WITHIN W]` | [`MonitorSpec::Last`] | time of the last admitted X |
//! | `Tool_Call('X').Count > N / W` | [`MonitorSpec::Ring`] | the last N+1 admitted X times |
//! | `Tool_Call('X').Distinct('a') > N / W` | [`MonitorSpec::Distinct`] | the N+1 most recent values |
//! | `Sequence('A','B','C') [WITHIN W]` | [`MonitorSpec::Sequence`] | per prefix, the latest start |
//! | `DataSource('D') == 'm' [WITHIN W]` | [`MonitorSpec::Taint`] | time of the last access |
//! | `Arg(..) FROM 's'`, `Provenance(..)`, `IN Results(..)` | [`MonitorSpec::Provenance`] | the value index, bounded in bytes |
//!
//! Every monitor is read *tentatively* (as if the call being decided were admitted) and updated
//! only when a call is admitted, so denied calls never count.

use crate::compile::Sym;
use crate::provenance::ProvenanceIndex;
use std::collections::VecDeque;

pub type MonitorId = usize;

/// What a monitor watches. Equal specs share one state per scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MonitorSpec {
    Last {
        pattern: Sym,
    },
    Ring {
        pattern: Sym,
        window_ms: i64,
    },
    Distinct {
        pattern: Sym,
        attr: String,
        window_ms: i64,
    },
    Sequence {
        steps: Vec<Sym>,
    },
    Taint {
        source: String,
        mode: Option<String>,
    },
    /// The scope's value provenance index (inputs and observed results, not calls).
    Provenance,
}

/// The state of one monitor in one scope. Sizes are bounded by the policies, never by history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorState {
    Last(Option<i64>),
    /// Admitted times, oldest first, at most `capacity` of them.
    Ring {
        times: VecDeque<i64>,
        capacity: usize,
    },
    /// `(value, last time seen)`, at most `capacity` of them.
    Distinct {
        seen: Vec<(Box<str>, i64)>,
        capacity: usize,
    },
    /// `starts[k]`: the latest start time of a match of the first k+1 steps.
    Sequence(Vec<Option<i64>>),
    Taint(Option<i64>),
    Provenance(Box<ProvenanceIndex>),
}

impl MonitorState {
    /// The empty state for a spec; `capacity` is N+1 for the largest N any policy compares with.
    pub fn new(spec: &MonitorSpec, capacity: usize) -> Self {
        match spec {
            MonitorSpec::Last { .. } => MonitorState::Last(None),
            MonitorSpec::Ring { .. } => MonitorState::Ring {
                times: VecDeque::with_capacity(capacity.min(1024)),
                capacity,
            },
            MonitorSpec::Distinct { .. } => MonitorState::Distinct {
                seen: Vec::new(),
                capacity,
            },
            MonitorSpec::Sequence { steps } => MonitorState::Sequence(vec![None; steps.len()]),
            MonitorSpec::Taint { .. } => MonitorState::Taint(None),
            MonitorSpec::Provenance => {
                MonitorState::Provenance(Box::new(ProvenanceIndex::new(capacity)))
            }
        }
    }

    /// Approximate heap and inline bytes held by this state.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + match self {
                MonitorState::Ring { times, .. } => times.capacity() * 8,
                MonitorState::Distinct { seen, .. } => seen
                    .iter()
                    .map(|(v, _)| v.len() + std::mem::size_of::<(Box<str>, i64)>())
                    .sum(),
                MonitorState::Sequence(s) => s.capacity() * std::mem::size_of::<Option<i64>>(),
                MonitorState::Last(_) | MonitorState::Taint(_) => 0,
                MonitorState::Provenance(index) => index.bytes(),
            }
    }

    /// Admitted X calls in `(now - window, now]`, counting up to the ring's capacity.
    pub fn ring_count(&self, now: i64, window_ms: i64) -> u64 {
        match self {
            MonitorState::Ring { times, .. } => {
                let cutoff = now.saturating_sub(window_ms);
                (times.len() - times.partition_point(|t| *t <= cutoff)) as u64
            }
            _ => 0,
        }
    }

    /// Distinct values in `(now - window, now]`, with `current` (the call being decided) counted.
    pub fn distinct_count(&self, now: i64, window_ms: i64, current: Option<&str>) -> u64 {
        match self {
            MonitorState::Distinct { seen, .. } => {
                let cutoff = now.saturating_sub(window_ms);
                let others = seen
                    .iter()
                    .filter(|(v, t)| *t > cutoff && Some(&**v) != current)
                    .count() as u64;
                others + u64::from(current.is_some())
            }
            _ => 0,
        }
    }

    pub fn last_time(&self) -> Option<i64> {
        match self {
            MonitorState::Last(t) | MonitorState::Taint(t) => *t,
            _ => None,
        }
    }

    /// The latest start of a complete match if the call being decided (matching `matches[k]`
    /// for step k) were admitted.
    pub fn sequence_start(&self, matches: impl Fn(usize) -> bool) -> Option<i64> {
        let MonitorState::Sequence(starts) = self else {
            return None;
        };
        let n = starts.len();
        let done = starts.last().copied().flatten();
        let by_current = match n.checked_sub(2).and_then(|i| starts.get(i)) {
            Some(Some(prefix_start)) if matches(n - 1) => Some(*prefix_start),
            _ => None,
        };
        done.max(by_current)
    }

    /// Records an admitted event at `now`. For sequences `matches(k)` says whether the event
    /// matches step k; for distinct counts `value` is the event's attribute value.
    pub fn admit(&mut self, now: i64, matches: impl Fn(usize) -> bool, value: Option<&str>) {
        match self {
            MonitorState::Last(t) | MonitorState::Taint(t) => {
                *t = Some(t.map_or(now, |t| t.max(now)))
            }
            MonitorState::Ring { times, capacity } => {
                let now = times.back().map_or(now, |last| now.max(*last));
                if times.len() >= *capacity {
                    times.pop_front();
                }
                if *capacity > 0 {
                    times.push_back(now);
                }
            }
            MonitorState::Distinct { seen, capacity } => {
                let Some(value) = value else { return };
                if let Some(slot) = seen.iter_mut().find(|(v, _)| &**v == value) {
                    slot.1 = slot.1.max(now);
                    return;
                }
                if seen.len() >= *capacity {
                    if let Some((oldest, _)) = seen.iter().enumerate().min_by_key(|(_, (_, t))| *t)
                    {
                        seen.swap_remove(oldest);
                    }
                }
                if *capacity > 0 {
                    seen.push((value.into(), now));
                }
            }
            MonitorState::Provenance(_) => {}
            MonitorState::Sequence(starts) => {
                for k in (1..starts.len()).rev() {
                    if matches(k) {
                        if let Some(Some(prev)) = starts.get(k - 1).copied() {
                            if let Some(slot) = starts.get_mut(k) {
                                *slot = Some(slot.map_or(prev, |s| s.max(prev)));
                            }
                        }
                    }
                }
                if matches(0) {
                    if let Some(first) = starts.first_mut() {
                        *first = Some(first.map_or(now, |s| s.max(now)));
                    }
                }
            }
        }
    }
}
