//! The TrustStack decision core.
//!
//! [`Engine::decide`] answers a tool call with a [`Decision`] under a compiled policy
//! [`Bundle`](truststack_policy::Bundle): it locks the call's scopes (agent, session, user,
//! delegation root), reads every candidate policy's monitors as if the call were admitted,
//! combines the verdicts (deny > require approval > allow > default), writes the decision to the
//! [`Recorder`] and only then updates the monitors, so denied calls never count and a ledger
//! failure fails closed.

/// The ledger and identity crates, for components that depend on the engine alone.
pub use truststack_identity as identity;
pub use truststack_ledger as ledger;

pub mod decision;
pub mod engine;
pub mod event;
pub mod recorder;
pub mod replay;
pub mod settings;

pub use decision::{ApprovalOutcome, ApprovalResult, Brief, Decision, FiredPolicy, Verdict};
pub use engine::{ApprovalError, Engine, PendingApproval, Processed};
pub use event::{ApprovalAnswer, Caller, DataAccess, Event, Observation, ToolCall};
pub use recorder::{NoRecorder, Recorder};
pub use settings::{DefaultDecision, Settings, TimeSource};
