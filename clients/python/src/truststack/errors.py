"""Exceptions. A refusal carries the decision (or the approval's outcome) and its reasons, so the
caller can tell the agent why, and the operator can find the ledger record."""

from __future__ import annotations

from .models import ApprovalOutcome, Decision, FiredPolicy


class TrustStackError(Exception):
    """Base of every error this package raises."""


class ApiError(TrustStackError):
    """The server answered with an error status (bad request, rejected credential, ...)."""

    def __init__(self, status: int, message: str, decision_id: str | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.decision_id = decision_id


class Unavailable(TrustStackError):
    """The decision point could not be reached. Callers must treat the tool call as denied
    (fail closed); the guarded helpers of this package do."""


class CallNotAllowed(TrustStackError):
    """A tool call was not allowed. ``policies`` and ``reason`` say why."""

    decision: Decision

    @property
    def policies(self) -> tuple[FiredPolicy, ...]:
        return self.decision.policies

    @property
    def reason(self) -> str:
        return self.decision.reason


class Denied(CallNotAllowed):
    """The decision was ``deny``."""

    def __init__(self, decision: Decision):
        super().__init__(f"denied: {decision.reason}")
        self.decision = decision


class ApprovalRefused(CallNotAllowed):
    """A held call was refused, expired, or denied when granted (a DENY fired meanwhile)."""

    def __init__(self, decision: Decision, outcome: ApprovalOutcome):
        super().__init__(f"approval {outcome.result}: {outcome.reason}")
        self.decision = decision
        self.outcome = outcome

    @property
    def policies(self) -> tuple[FiredPolicy, ...]:
        return self.outcome.policies or self.decision.policies

    @property
    def reason(self) -> str:
        return self.outcome.reason


class ApprovalTimeout(CallNotAllowed):
    """A held call was still unanswered when the caller's wait ran out. The call stays held on
    the server until its deadline; waiting again with the same approval id resumes."""

    def __init__(self, decision: Decision):
        super().__init__(
            f"approval {decision.approval_id} still pending: {decision.reason}"
        )
        self.decision = decision


class Cancelled(TrustStackError):
    """A wait was cancelled by the caller (sync clients: the ``cancel`` event was set)."""
