//! Leases: an approver's grant that waves a REQUIRE_HITL policy through for a scope until it
//! expires.

use super::{Engine, PendingApproval};
use crate::event::Principals;
use truststack_policy::{Action, Target};

/// A lease: `(policy id, target, scope key)`.
pub(super) type LeaseKey = (String, Target, Box<str>);

impl Engine {
    /// Until when an approver's lease waves a REQUIRE_HITL policy through for this call's scope.
    pub(super) fn hitl_lease(
        &self,
        policy: &truststack_policy::Policy,
        p: &Principals,
        now: i64,
    ) -> Option<i64> {
        if policy.action != Action::RequireHitl {
            return None;
        }
        let leases = self.leases.lock();
        // Most engines never see a lease: spare the key's allocations.
        if leases.is_empty() {
            return None;
        }
        let key = (
            policy.id.clone(),
            policy.target,
            p.scope_key(policy.target).into(),
        );
        leases.get(&key).copied().filter(|until| *until > now)
    }

    pub(super) fn add_leases(&self, pending: &PendingApproval, until: i64) {
        let bundle = self.bundle();
        let call = &pending.call;
        let p = Principals::of(&call.agent, call.session.as_deref(), &call.chain);
        let mut leases = self.leases.lock();
        // Only the policies that held the call: one already under a lease did not, and must not
        // have that lease replaced by this grant's.
        for f in pending
            .policies
            .iter()
            .filter(|f| f.action == Action::RequireHitl && f.lease_until.is_none())
        {
            if let Some(cp) = bundle.policy(&f.id) {
                let target = cp.policy.target;
                leases.insert((f.id.clone(), target, p.scope_key(target).into()), until);
            }
        }
    }
}
