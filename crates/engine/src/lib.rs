//! The TrustStack decision core.
//!
//! [`Engine::queue`] answers a tool call ([`Request`]: the call, maybe the verified caller it
//! is made for, maybe a simulated time) with a [`Decision`] under a compiled policy
//! [`Bundle`](truststack_policy::Bundle): it locks the call's scopes (agent, session, user,
//! delegation root), reads every candidate policy's monitors as if the call were admitted,
//! combines the verdicts (deny > require approval > allow > default), hands the decision to the
//! [`Recorder`], updates the monitors of an allowed call and releases the locks. The decision
//! comes back as a [`Queued`]: it may be returned only once its record is durable (`.wait()`
//! blocks for that, `.durable().await` awaits it without tying up a thread), and a ledger
//! failure turns it into a denial (fail closed). [`Engine::decide_brief`] is the proving
//! ground's form: the same verdict and state effects without building the explanation.

/// The ledger and identity crates, for components that depend on the engine alone.
pub use truststack_identity as identity;
pub use truststack_ledger as ledger;

pub mod decision;
pub mod engine;
pub mod event;
pub mod grant;
pub mod log;
pub mod record;
pub mod recorder;
pub mod replay;
pub mod settings;
pub mod visibility;

pub use decision::{ApprovalOutcome, ApprovalResult, Brief, Decision, FiredPolicy, Verdict};
pub use engine::{
    ApprovalError, ArgumentSource, Engine, InputError, ObservationError, PendingApproval,
    Processed, Queued, Request,
};
pub use event::{ApprovalAnswer, Caller, DataAccess, Event, Input, Observation, ToolCall};
pub use grant::{Allowance, Constraint, Declared, Grant, GrantError};
pub use record::{Record, RecordError};
pub use recorder::{NoRecorder, Recorded, Recorder, Recording, WriteError};
pub use settings::{DefaultDecision, Settings, TimeSource};
