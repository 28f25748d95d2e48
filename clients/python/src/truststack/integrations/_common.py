"""What the integrations share: how a refusal is worded for the model that made the call."""

from __future__ import annotations

from ..errors import ApprovalTimeout, CallNotAllowed, TrustStackError, Unavailable


def refusal_text(tool: str, error: TrustStackError) -> str:
    """The tool result the model reads instead of the tool's output: what happened and why, so
    it can explain or change course. Names the policies and the decision id for the operator."""
    if isinstance(error, CallNotAllowed):
        d = error.decision
        policies = ", ".join(p.id for p in error.policies) or "none"
        verb = "is still awaiting approval" if isinstance(error, ApprovalTimeout) else "was not allowed"
        return (
            f"TrustStack: the call to {tool} {verb}: {error.reason} "
            f"(policies: {policies}; decision {d.decision_id})"
        )
    if isinstance(error, Unavailable):
        return f"TrustStack: the call to {tool} was not made: the decision point is unreachable ({error})"
    return f"TrustStack: the call to {tool} was not made: {error}"
