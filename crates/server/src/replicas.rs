//! Several `truststack serve` replicas on one PostgreSQL database: turns at the shared state.
//!
//! A replica's engine keeps monitor state, held calls, leases and grants in memory, and writes
//! every change to the ledger, the one log all replicas share. Before a replica changes that
//! state (a decision, an observation, an input, a grant, an approval's answer or expiry) it
//! takes the fleet's turn (a PostgreSQL advisory lock), applies the records the other replicas
//! appended since its last turn, and keeps the turn until the records of its own changes are
//! committed. So every change sees every change committed before it, whichever replica made it:
//! decisions are linearizable per scope, and across scopes too.
//!
//! The requests that arrive while a replica holds the turn share it, and their records share
//! group commits; the turn is handed on after at most [`SLICE`] when another replica waits for
//! it, so that a busy replica does not starve the others (alone, a replica keeps it). Between
//! turns, a replica follows the log every [`FOLLOW_EVERY`], so a call held here learns soon
//! that it was answered on another replica.

use crate::backend::IdentityService;
use crate::state::AppState;
use parking_lot::{Condvar, Mutex};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use truststack_engine::ledger::postgres::TurnLock;
use truststack_engine::ledger::PostgresUrl;

/// How long a replica keeps the turn while requests keep coming.
const SLICE: Duration = Duration::from_millis(20);

/// How often an idle replica reads what the others appended.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);

/// How long a replica waits after it failed to take the turn (the database is away) before
/// it tries again for the requests that came since.
const RETRY_AFTER: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Gate {
    /// Requests may enter: this replica holds the turn and has caught up.
    open: bool,
    /// Requests inside the turn.
    inside: usize,
    /// Requests waiting for the turn.
    waiting: usize,
    /// Bumped when an attempt to take the turn failed: the requests that waited for it fail.
    attempts_failed: u64,
    error: String,
    stopping: bool,
}

/// This replica's share of the fleet's turns.
pub struct Replicas {
    url: PostgresUrl,
    gate: Mutex<Gate>,
    /// Wakes the keeper: a request wants the turn, or the last one inside left.
    keeper: Condvar,
    /// Wakes the requests waiting for the turn.
    entrants: tokio::sync::Notify,
    /// Why the database last failed this replica, until it answers again (for `/readyz`).
    database: Mutex<Option<String>>,
    /// The ledger's size this replica's engine had applied when it started.
    applied_at_start: u64,
}

/// A request's place in the turn: the turn is not handed on while it is held. Hold it until
/// the request's records are committed.
pub struct Pass {
    replicas: Arc<Replicas>,
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut gate = self.replicas.gate.lock();
        gate.inside -= 1;
        if gate.inside == 0 {
            self.replicas.keeper.notify_all();
        }
    }
}

/// A request waiting for the turn (counted until it enters or gives up, even if dropped).
struct Waiting<'r> {
    replicas: &'r Replicas,
    /// `attempts_failed` when it started waiting.
    since: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut gate = self.replicas.gate.lock();
        gate.waiting -= 1;
        if gate.waiting == 0 {
            self.replicas.keeper.notify_all();
        }
    }
}

impl Replicas {
    /// Turns on the database at `url`, for an engine that applied the ledger's first
    /// `applied` records.
    pub fn new(url: PostgresUrl, applied: u64) -> Arc<Replicas> {
        Arc::new(Replicas {
            url,
            gate: Mutex::default(),
            keeper: Condvar::new(),
            entrants: tokio::sync::Notify::new(),
            database: Mutex::new(None),
            applied_at_start: applied,
        })
    }

    /// Why the database cannot be used now, if it cannot.
    pub fn database_error(&self) -> Option<String> {
        self.database.lock().clone()
    }

    /// Waits for this replica's turn; fails (closed) when it cannot be had.
    pub async fn enter(self: &Arc<Self>) -> Result<Pass, String> {
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            let notified = self.entrants.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut gate = self.gate.lock();
                if gate.stopping {
                    return Err("the server is stopping".into());
                }
                if gate.open {
                    gate.inside += 1;
                    drop(gate);
                    drop(waiting);
                    return Ok(Pass {
                        replicas: Arc::clone(self),
                    });
                }
                match &waiting {
                    Some(w) if w.since != gate.attempts_failed => return Err(gate.error.clone()),
                    Some(_) => {}
                    None => {
                        gate.waiting += 1;
                        waiting = Some(Waiting {
                            replicas: self,
                            since: gate.attempts_failed,
                        });
                        self.keeper.notify_all();
                    }
                }
            }
            notified.await;
        }
    }

    /// Starts the thread that takes the turns for this replica's requests and follows the log
    /// between them. It stops with [`Replicas::stop`], or when the server's state is gone.
    pub fn start(self: &Arc<Self>, state: &Arc<AppState>) -> std::io::Result<()> {
        let replicas = Arc::clone(self);
        let state = Arc::downgrade(state);
        std::thread::Builder::new()
            .name("replica-turns".into())
            .spawn(move || replicas.keep(&state))
            .map(|_| ())
    }

    /// Ends the turns: waiting requests fail, and the thread stops.
    pub fn stop(&self) {
        self.gate.lock().stopping = true;
        self.keeper.notify_all();
        self.entrants.notify_waiters();
    }

    fn keep(&self, state: &Weak<AppState>) {
        let mut lock = TurnLock::new(&self.url);
        let mut log = Follower {
            applied: self.applied_at_start,
            failed_appends: state.upgrade().map_or(0, |s| s.ledger.failed_appends()),
            stale: false,
        };
        // Whether this replica still holds the turn from its last slice.
        let mut holding = false;
        loop {
            let wanted = {
                let mut gate = self.gate.lock();
                if gate.waiting == 0 && !gate.stopping {
                    self.keeper.wait_for(&mut gate, FOLLOW_EVERY);
                }
                if gate.stopping {
                    if holding {
                        lock.release();
                    }
                    return;
                }
                gate.waiting > 0
            };
            if holding && (!wanted || log.stale) {
                lock.release();
                holding = false;
            }
            if !holding && !wanted {
                // Nothing to decide here: apply what the others appended, without a turn.
                let Some(state) = state.upgrade() else { return };
                let followed = log.follow(&state);
                self.report(followed);
                continue;
            }
            // A turn kept since the last slice needs no catching up: no other replica appended.
            if !holding && !self.take_turn(&mut lock, &mut log, state) {
                continue;
            }
            self.hold_turn();
            if let Some(state) = state.upgrade() {
                log.turn_ended(&state);
            }
            holding = self.keep_turn(&mut lock);
        }
    }

    /// Takes the turn and applies what the others appended. When either fails, the requests
    /// waiting for the turn fail with the reason, and it returns `false` after a pause.
    fn take_turn(&self, lock: &mut TurnLock, log: &mut Follower, state: &Weak<AppState>) -> bool {
        let taken = lock.acquire().map_err(|e| e.to_string()).and_then(|()| {
            let Some(state) = state.upgrade() else {
                return Err("the server is stopping".to_string());
            };
            log.follow(&state)
        });
        self.report(taken.clone());
        let Err(error) = taken else {
            return true;
        };
        lock.release();
        tracing::warn!(%error, "cannot take this replica's turn: requests are refused");
        {
            let mut gate = self.gate.lock();
            gate.attempts_failed += 1;
            gate.error = format!("the shared database is unavailable: {error}");
        }
        self.entrants.notify_waiters();
        std::thread::sleep(RETRY_AFTER);
        false
    }

    /// After a slice: keeps the turn when requests are still waiting here and no other replica
    /// waits for it; otherwise hands it on (and returns `false`).
    fn keep_turn(&self, lock: &mut TurnLock) -> bool {
        let wanted = self.gate.lock().waiting > 0;
        if wanted && matches!(lock.others_waiting(), Ok(false)) {
            return true;
        }
        lock.release();
        false
    }

    /// Lets requests in until none is left or the slice is over, then waits for those inside
    /// to finish (their records committed).
    fn hold_turn(&self) {
        let opened = Instant::now();
        let mut gate = self.gate.lock();
        gate.open = true;
        self.entrants.notify_waiters();
        while gate.inside > 0 || gate.waiting > 0 {
            let left = SLICE.saturating_sub(opened.elapsed());
            if left.is_zero() {
                break;
            }
            self.keeper.wait_for(&mut gate, left);
        }
        gate.open = false;
        while gate.inside > 0 {
            self.keeper.wait(&mut gate);
        }
    }

    fn report(&self, outcome: Result<(), String>) {
        let mut database = self.database.lock();
        match outcome {
            Ok(()) => {
                if database.take().is_some() {
                    tracing::info!("the shared database answers again");
                }
            }
            Err(e) => *database = Some(e),
        }
    }
}

/// What this replica's engine has applied of the shared log.
struct Follower {
    /// Every record below this index is in the engine's state.
    applied: u64,
    /// The ledger's count of failed appends after the last turn.
    failed_appends: u64,
    /// A write failed during a turn: the engine may hold what the log does not, so it is
    /// rebuilt from the log before it decides again.
    stale: bool,
}

impl Follower {
    /// Applies the records appended since the engine last applied one (all of them, into a
    /// new engine, when a failed write left this one stale), and takes up the revocations
    /// among the new ones.
    fn follow(&mut self, state: &AppState) -> Result<(), String> {
        let size = state.ledger.follow().map_err(|e| e.to_string())?;
        if !self.stale && size <= self.applied {
            return Ok(());
        }
        let from = if self.stale { 0 } else { self.applied };
        let records = state
            .ledger
            .records_in(from, size)
            .map_err(|e| e.to_string())?;
        let new = usize::try_from(self.applied.saturating_sub(from)).unwrap_or(usize::MAX);
        learn_revocations(
            state.identity.as_deref(),
            records.get(new..).unwrap_or_default(),
        )?;
        if self.stale {
            let rebuilt = state.engine().rebuilt(&records);
            *state.engine.write() = Arc::new(rebuilt);
            tracing::info!(
                records = records.len(),
                "engine state rebuilt from the shared ledger after a failed write"
            );
            self.stale = false;
        } else {
            state.engine().catch_up(from, &records);
        }
        self.applied = size;
        state.count_pending();
        Ok(())
    }

    /// After a turn: its records are committed (or failed, and the engine is stale).
    fn turn_ended(&mut self, state: &AppState) {
        let failed = state.ledger.failed_appends();
        if failed != self.failed_appends {
            self.failed_appends = failed;
            self.stale = true;
        }
        self.applied = state.ledger.size();
    }
}

/// Puts revocations the other replicas recorded in force here: a revoked credential is refused
/// by every replica, whether or not they share the issuer's directory. One that cannot be kept
/// stops the catch-up (and so this replica's decisions) until it can.
pub(crate) fn learn_revocations(
    identity: Option<&dyn IdentityService>,
    records: &[serde_json::Value],
) -> Result<(), String> {
    let Some(identity) = identity else {
        return Ok(());
    };
    for record in records {
        if record.get("kind").and_then(serde_json::Value::as_str) == Some("identity_revoked") {
            identity
                .learn_revocation(record)
                .map_err(|e| format!("cannot take up a revocation: {e}"))?;
        }
    }
    Ok(())
}
