//! State equivalence for the exhaustive exploration: when do two engine states decide every
//! future call alike, so one of them need not be explored?
//!
//! An engine snapshot holds absolute timestamps, so no two states on different clocks are ever
//! equal. The abstraction keeps only what the policies can observe:
//!
//! - **Ages, not times.** A monitor reads a time only through "is it inside a window
//!   `(now − W, now]`". A time is replaced by its age `now − t`; an age at least as large as every
//!   window of its kind becomes *old* (it can never be inside a window again); a monitor kind no
//!   `WITHIN` clause uses (`Trajectory_Contains('X')` alone, `DataSource('D')` alone) keeps only
//!   presence.
//! - **Far ages by order only.** With `r` calls of `step` left, a time whose every window still
//!   open ends more than `(r + 1)·step` away cannot leave a window through calls; only a wait can
//!   expire it, and waits go to window ends. Such a *far* time is encoded by the windows it is in
//!   and the rank of their ends among all far window ends (the order in which waits expire them),
//!   not by its exact age. This is what lets a search with `WITHIN` windows reach a fixpoint. It
//!   may miss an attack that needs two far entries to expire a precise number of steps apart.
//! - **Expired entries dropped.** Ring and distinct-count entries outside their window are never
//!   counted again, and they are evicted before any entry still inside it, so they are dropped.
//! - **Counts that cannot matter within the budget.** A `Count`/`Distinct` comparison read on a
//!   ring holding `c` entries, with `r` calls left on the trajectory, sees a value in `1..=c+r+1`.
//!   When every comparison any policy makes on rings of that scope and window is constant over
//!   that range, the ring's contents cannot change a decision before the depth bound, and the ring
//!   is abstracted away. (This is where rate limits leave the exhaustive search: a limit of 100
//!   scans per 5 minutes cannot fire on a trajectory of 16 calls. Time-to-goal handles it.)
//! - Empty scopes (a scope the engine created for a denied call) equal absent ones.
//!
//! Two states with equal keys decide every sequence of calls alike for the rest of the budget of
//! the first one found (breadth-first order finds every state first at its smallest depth); waits
//! are explored from the representative kept.

use crate::world::Lease;
use std::collections::BTreeSet;
use truststack_policy::ast::{CmpOp, Pred};
use truststack_policy::monitor::{MonitorSpec, MonitorState};
use truststack_policy::{Bundle, Target};

#[derive(Debug, Clone)]
enum Kind {
    /// The provenance index: the proving ground evaluates predicates that read it as unknown
    /// (see `Bundle::provenance_unknown`), so its contents never change a decision.
    Provenance,
    Last,
    Taint,
    Sequence,
    Ring {
        window: i64,
        thresholds: Vec<(CmpOp, u64)>,
    },
    Distinct {
        window: i64,
        thresholds: Vec<(CmpOp, u64)>,
    },
}

/// What the policies of a bundle can observe of monitor states.
#[derive(Debug, Clone)]
pub struct Abstraction {
    /// Per target, per monitor: the windows through which predicates read its times (`Last`,
    /// `Taint` and `Sequence` monitors; empty: presence only).
    windows: [Vec<Vec<i64>>; 4],
    kinds: [Vec<Kind>; 4],
}

/// A monitor as the policy text names it, to line the compiled layout up with the predicates
/// that read each monitor (the compiled layout names tools by private symbols).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Named {
    Ring(String, i64),
    Distinct(String, String, i64),
    Last(String),
    Sequence(Vec<String>),
    Taint(String, Option<String>),
}

/// Per monitor of each target, the windows its predicates read it through — or `None` when the
/// compiled layout does not line up with the predicates (then every monitor of a kind is read
/// through every window of that kind, as if one predicate read them all).
fn per_monitor(bundle: &Bundle) -> Option<[Vec<Vec<i64>>; 4]> {
    let mut out: [Vec<Vec<i64>>; 4] = Default::default();
    for (ti, slot) in out.iter_mut().enumerate() {
        let target = Target::ALL[ti];
        // The compiler creates monitors in this order: policies in bundle order, predicates
        // left to right, equal monitors once.
        let mut named: Vec<(Named, BTreeSet<i64>)> = Vec::new();
        for cp in bundle.policies.iter().filter(|c| c.policy.target == target) {
            cp.policy.condition.predicates().into_iter().for_each(|p| {
                let (n, w) = match p {
                    Pred::Count {
                        pattern, window_ms, ..
                    } => (Named::Ring(pattern.clone(), *window_ms), None),
                    Pred::Distinct {
                        pattern,
                        attr,
                        window_ms,
                        ..
                    } => (
                        Named::Distinct(pattern.clone(), attr.clone(), *window_ms),
                        None,
                    ),
                    Pred::Contains { pattern, window_ms } => {
                        (Named::Last(pattern.clone()), *window_ms)
                    }
                    Pred::Sequence { steps, window_ms } => {
                        (Named::Sequence(steps.clone()), *window_ms)
                    }
                    Pred::DataSource {
                        source,
                        mode,
                        window_ms,
                    } => (Named::Taint(source.clone(), mode.clone()), *window_ms),
                    _ => return,
                };
                let i = match named.iter().position(|(x, _)| *x == n) {
                    Some(i) => i,
                    None => {
                        named.push((n, BTreeSet::new()));
                        named.len() - 1
                    }
                };
                if let (Some(w), Some(entry)) = (w, named.get_mut(i)) {
                    entry.1.insert(w);
                }
            });
        }
        let specs = bundle.monitor_specs(target);
        let mut names = named.into_iter();
        // Symbols and names must correspond one to one.
        let mut by_sym: std::collections::HashMap<u32, String> = Default::default();
        let mut by_name: std::collections::HashMap<String, u32> = Default::default();
        let mut same = |sym: u32, name: &str| {
            let a = by_sym.entry(sym).or_insert_with(|| name.to_string()) == name;
            let b = *by_name.entry(name.to_string()).or_insert(sym) == sym;
            a && b
        };
        for (spec, _) in specs {
            if *spec == MonitorSpec::Provenance {
                slot.push(Vec::new());
                continue;
            }
            let (n, windows) = names.next()?;
            let ok = match (spec, &n) {
                (MonitorSpec::Ring { pattern, window_ms }, Named::Ring(p, w)) => {
                    window_ms == w && same(*pattern, p)
                }
                (
                    MonitorSpec::Distinct {
                        pattern,
                        attr,
                        window_ms,
                    },
                    Named::Distinct(p, a, w),
                ) => window_ms == w && attr == a && same(*pattern, p),
                (MonitorSpec::Last { pattern }, Named::Last(p)) => same(*pattern, p),
                (MonitorSpec::Sequence { steps }, Named::Sequence(names)) => {
                    steps.len() == names.len() && steps.iter().zip(names).all(|(s, n)| same(*s, n))
                }
                (MonitorSpec::Taint { source, mode }, Named::Taint(s, m)) => {
                    source == s && mode == m
                }
                _ => false,
            };
            if !ok {
                return None;
            }
            slot.push(windows.into_iter().collect());
        }
        if names.next().is_some() {
            return None;
        }
    }
    Some(out)
}

/// Whether `count op n` has the same truth for every count in `1..=hi`.
fn constant(op: CmpOp, n: u64, hi: u64) -> bool {
    match op {
        CmpOp::Eq | CmpOp::Ne => n == 0 || n > hi,
        _ => op.holds_u64(1, n) == op.holds_u64(hi, n),
    }
}

/// Encodes monitor times at one state. A time read through windows is *near* when one of the
/// windows it is still inside ends within the calls left (`remaining × step`): its exact age is
/// kept. A *far* time cannot leave any window through calls alone, only through a wait; it is
/// encoded by the windows it is inside and the rank of each of their ends among the ends of all
/// far times, which is what decides the order in which waits expire them.
struct Encoder {
    now: i64,
    horizon: i64,
    far_ends: Vec<i64>,
}

impl Encoder {
    fn new(
        a: &Abstraction,
        snapshot: &[(Target, String, Vec<MonitorState>)],
        now: i64,
        remaining: usize,
        step: i64,
    ) -> Encoder {
        let horizon = step.saturating_mul(remaining as i64 + 1);
        let mut enc = Encoder {
            now,
            horizon,
            far_ends: Vec::new(),
        };
        let mut ends = Vec::new();
        a.visit_times(snapshot, now, remaining, &mut |t, windows| {
            if let Some(active) = enc.far(t, windows) {
                ends.extend(active.iter().map(|w| t + **w));
            }
        });
        ends.sort_unstable();
        ends.dedup();
        enc.far_ends = ends;
        enc
    }

    /// The windows `t` is still inside, when it is far from all their ends.
    fn far<'w>(&self, t: i64, windows: &'w [i64]) -> Option<Vec<&'w i64>> {
        let age = self.now.saturating_sub(t);
        let active: Vec<&i64> = windows.iter().filter(|w| age < **w).collect();
        (!active.is_empty() && active.iter().all(|w| **w - age > self.horizon)).then_some(active)
    }

    fn time(&self, t: Option<i64>, windows: &[i64], out: &mut Vec<u8>) {
        let Some(t) = t else {
            push(out, 0);
            return;
        };
        if windows.is_empty() {
            push(out, 1);
            return;
        }
        let age = self.now.saturating_sub(t);
        if windows.iter().all(|w| age >= *w) {
            push(out, 2);
            return;
        }
        match self.far(t, windows) {
            Some(active) => {
                push(out, -1000 - active.len() as i64);
                for w in active {
                    let rank = self.far_ends.partition_point(|e| *e < t + w);
                    push(out, rank as i64);
                }
            }
            None => push(out, 3 + age),
        }
    }
}

fn push(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

impl Abstraction {
    pub fn new(bundle: &Bundle) -> Abstraction {
        Self::build(bundle, true)
    }

    fn build(bundle: &Bundle, per_monitor_windows: bool) -> Abstraction {
        let mut contains = BTreeSet::new();
        let mut taint = BTreeSet::new();
        let mut sequence = BTreeSet::new();
        let mut counts: Vec<(Target, i64, CmpOp, u64)> = Vec::new();
        let mut distincts: Vec<(Target, i64, CmpOp, u64)> = Vec::new();
        for cp in &bundle.policies {
            let target = cp.policy.target;
            cp.policy
                .condition
                .predicates()
                .into_iter()
                .for_each(|p| match p {
                    Pred::Contains {
                        window_ms: Some(w), ..
                    } => {
                        contains.insert(*w);
                    }
                    Pred::DataSource {
                        window_ms: Some(w), ..
                    } => {
                        taint.insert(*w);
                    }
                    Pred::Sequence {
                        window_ms: Some(w), ..
                    } => {
                        sequence.insert(*w);
                    }
                    Pred::Count {
                        op, n, window_ms, ..
                    } => counts.push((target, *window_ms, *op, *n)),
                    Pred::Distinct {
                        op, n, window_ms, ..
                    } => distincts.push((target, *window_ms, *op, *n)),
                    _ => {}
                });
        }
        let kinds = std::array::from_fn(|i| {
            let target = Target::ALL[i];
            let thresholds = |list: &[(Target, i64, CmpOp, u64)], window: i64| {
                list.iter()
                    .filter(|(t, w, _, _)| *t == target && *w == window)
                    .map(|(_, _, op, n)| (*op, *n))
                    .collect::<Vec<_>>()
            };
            bundle
                .monitor_specs(target)
                .iter()
                .map(|(spec, _)| match spec {
                    MonitorSpec::Provenance => Kind::Provenance,
                    MonitorSpec::Last { .. } => Kind::Last,
                    MonitorSpec::Taint { .. } => Kind::Taint,
                    MonitorSpec::Sequence { .. } => Kind::Sequence,
                    MonitorSpec::Ring { window_ms, .. } => Kind::Ring {
                        window: *window_ms,
                        thresholds: thresholds(&counts, *window_ms),
                    },
                    MonitorSpec::Distinct { window_ms, .. } => Kind::Distinct {
                        window: *window_ms,
                        thresholds: thresholds(&distincts, *window_ms),
                    },
                })
                .collect()
        });
        let windows = per_monitor_windows
            .then(|| per_monitor(bundle))
            .flatten()
            .unwrap_or_else(|| Self::per_kind(bundle, [contains, taint, sequence]));
        Abstraction { windows, kinds }
    }

    /// The same bundle without the per-monitor windows: every `Last`, `Taint` or `Sequence`
    /// monitor read through every window any predicate of its kind uses (the finer abstraction
    /// the reduction is checked against).
    pub fn per_kind_only(bundle: &Bundle) -> Abstraction {
        Self::build(bundle, false)
    }

    fn per_kind(
        bundle: &Bundle,
        [contains, taint, sequence]: [BTreeSet<i64>; 3],
    ) -> [Vec<Vec<i64>>; 4] {
        std::array::from_fn(|i| {
            bundle
                .monitor_specs(Target::ALL[i])
                .iter()
                .map(|(spec, _)| match spec {
                    MonitorSpec::Last { .. } => contains.iter().copied().collect(),
                    MonitorSpec::Taint { .. } => taint.iter().copied().collect(),
                    MonitorSpec::Sequence { .. } => sequence.iter().copied().collect(),
                    _ => Vec::new(),
                })
                .collect()
        })
    }

    fn windows_of(&self, target: Target, monitor: usize) -> &[i64] {
        self.windows[target.index()]
            .get(monitor)
            .map_or(&[], Vec::as_slice)
    }

    /// Whether any predicate reads a window at all (else waiting never changes a decision).
    pub fn has_windows(&self) -> bool {
        self.windows.iter().flatten().any(|w| !w.is_empty())
            || self
                .kinds
                .iter()
                .flatten()
                .any(|k| matches!(k, Kind::Ring { .. } | Kind::Distinct { .. }))
    }

    fn relevant(thresholds: &[(CmpOp, u64)], in_window: usize, remaining: usize) -> bool {
        let hi = (in_window + remaining + 1) as u64;
        !thresholds.iter().all(|(op, n)| constant(*op, *n, hi))
    }

    /// Appends the canonical form of a snapshot at `now`, with `remaining` calls of `step` ms
    /// left on the trajectory.
    pub fn key(
        &self,
        snapshot: &[(Target, String, Vec<MonitorState>)],
        now: i64,
        remaining: usize,
        step: i64,
        out: &mut Vec<u8>,
    ) {
        let enc = Encoder::new(self, snapshot, now, remaining, step);
        let mut scope = Vec::new();
        for (target, key, states) in snapshot {
            scope.clear();
            let kinds = &self.kinds[target.index()];
            let mut empty = true;
            for (i, state) in states.iter().enumerate() {
                let windows = self.windows_of(*target, i);
                match (state, kinds.get(i)) {
                    (MonitorState::Last(t), _) | (MonitorState::Taint(t), _) => {
                        empty &= t.is_none();
                        enc.time(*t, windows, &mut scope);
                    }
                    (MonitorState::Sequence(starts), _) => {
                        for t in starts {
                            empty &= t.is_none();
                            enc.time(*t, windows, &mut scope);
                        }
                    }
                    (MonitorState::Ring { times, .. }, Some(Kind::Ring { window, thresholds })) => {
                        let cutoff = now.saturating_sub(*window);
                        let live: Vec<i64> =
                            times.iter().filter(|t| **t > cutoff).copied().collect();
                        if Self::relevant(thresholds, live.len(), remaining) {
                            push(&mut scope, -1 - live.len() as i64);
                            for t in &live {
                                enc.time(Some(*t), std::slice::from_ref(window), &mut scope);
                            }
                            empty &= live.is_empty();
                        } else {
                            push(&mut scope, -1);
                        }
                    }
                    (
                        MonitorState::Distinct { seen, .. },
                        Some(Kind::Distinct { window, thresholds }),
                    ) => {
                        let cutoff = now.saturating_sub(*window);
                        let mut live: Vec<(&str, i64)> = seen
                            .iter()
                            .filter(|(_, t)| *t > cutoff)
                            .map(|(v, t)| (&**v, *t))
                            .collect();
                        if Self::relevant(thresholds, live.len(), remaining) {
                            live.sort();
                            push(&mut scope, -1 - live.len() as i64);
                            for (v, t) in live {
                                push(&mut scope, v.len() as i64);
                                scope.extend_from_slice(v.as_bytes());
                                enc.time(Some(t), std::slice::from_ref(window), &mut scope);
                            }
                            empty = false;
                        } else {
                            push(&mut scope, -1);
                        }
                    }
                    (MonitorState::Provenance(_), Some(Kind::Provenance)) => {}
                    // A layout this abstraction does not know: keep everything.
                    (other, _) => {
                        empty = false;
                        scope.extend_from_slice(format!("{other:?}").as_bytes());
                    }
                }
            }
            if empty {
                continue;
            }
            push(out, target.index() as i64);
            push(out, key.len() as i64);
            out.extend_from_slice(key.as_bytes());
            push(out, scope.len() as i64);
            out.extend_from_slice(&scope);
        }
        push(out, -7);
    }

    /// Appends the canonical form of the approvers' leases still running at `now`.
    pub fn lease_key(leases: &[Lease], now: i64, out: &mut Vec<u8>) {
        let mut live: Vec<(&str, usize, &str, i64)> = leases
            .iter()
            .filter(|l| l.until > now)
            .map(|l| {
                (
                    l.policy.as_str(),
                    l.target.index(),
                    l.scope.as_str(),
                    l.until - now,
                )
            })
            .collect();
        live.sort();
        for (p, t, s, left) in live {
            push(out, p.len() as i64);
            out.extend_from_slice(p.as_bytes());
            push(out, t as i64);
            push(out, s.len() as i64);
            out.extend_from_slice(s.as_bytes());
            push(out, left);
        }
        push(out, -9);
    }

    /// Every time a window reads, with the windows it is read through.
    fn visit_times(
        &self,
        snapshot: &[(Target, String, Vec<MonitorState>)],
        now: i64,
        remaining: usize,
        f: &mut impl FnMut(i64, &[i64]),
    ) {
        for (target, _, states) in snapshot {
            let kinds = &self.kinds[target.index()];
            for (i, state) in states.iter().enumerate() {
                let windows = self.windows_of(*target, i);
                match (state, kinds.get(i)) {
                    (MonitorState::Last(Some(t)), _) | (MonitorState::Taint(Some(t)), _) => {
                        f(*t, windows)
                    }
                    (MonitorState::Sequence(starts), _) => {
                        for t in starts.iter().flatten() {
                            f(*t, windows);
                        }
                    }
                    (MonitorState::Ring { times, .. }, Some(Kind::Ring { window, thresholds })) => {
                        let cutoff = now.saturating_sub(*window);
                        let live = times.iter().filter(|t| **t > cutoff).count();
                        if Self::relevant(thresholds, live, remaining) {
                            for t in times.iter().filter(|t| **t > cutoff) {
                                f(*t, std::slice::from_ref(window));
                            }
                        }
                    }
                    (
                        MonitorState::Distinct { seen, .. },
                        Some(Kind::Distinct { window, thresholds }),
                    ) => {
                        let cutoff = now.saturating_sub(*window);
                        let live = seen.iter().filter(|(_, t)| *t > cutoff).count();
                        if Self::relevant(thresholds, live, remaining) {
                            for (_, t) in seen.iter().filter(|(_, t)| *t > cutoff) {
                                f(*t, std::slice::from_ref(window));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// How long the adversary could wait from `now` until some monitor entry leaves a window
    /// some predicate reads: every such moment, ascending. Waiting less changes nothing a
    /// policy can see; waiting longer is a later candidate.
    pub fn waits(
        &self,
        snapshot: &[(Target, String, Vec<MonitorState>)],
        now: i64,
        remaining: usize,
    ) -> Vec<i64> {
        let mut out = BTreeSet::new();
        self.visit_times(snapshot, now, remaining, &mut |t, windows| {
            let age = now.saturating_sub(t);
            for w in windows {
                if age < *w {
                    out.insert(*w - age);
                }
            }
        });
        out.into_iter().filter(|w| *w > 0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constancy_of_comparisons() {
        assert!(constant(CmpOp::Gt, 100, 17));
        assert!(!constant(CmpOp::Gt, 3, 17));
        assert!(constant(CmpOp::Lt, 0, 5));
        assert!(!constant(CmpOp::Lt, 3, 5));
        assert!(constant(CmpOp::Eq, 9, 5));
        assert!(!constant(CmpOp::Eq, 5, 5));
        assert!(constant(CmpOp::Ge, 1, 5));
    }
}
