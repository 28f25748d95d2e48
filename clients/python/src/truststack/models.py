"""The answers of the decision point, as typed values.

Each keeps the JSON it was read from in ``raw``, so a field the server adds later is not lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

Verdict = Literal["allow", "deny", "require_approval"]
ApprovalResult = Literal["granted", "granted_but_denied", "refused", "expired"]


@dataclass(frozen=True)
class FiredPolicy:
    """A policy that fired on a call: its id, action (``DENY``, ``REQUIRE_HITL``) and reason."""

    id: str
    action: str
    reason: str | None = None
    mode: str | None = None
    monitors: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "FiredPolicy":
        return cls(
            id=str(body.get("id", "")),
            action=str(body.get("action", "")),
            reason=body.get("reason"),
            mode=body.get("mode"),
            monitors=body.get("monitors") or {},
        )


def _policies(body: Mapping[str, Any]) -> tuple[FiredPolicy, ...]:
    return tuple(FiredPolicy.from_json(p) for p in body.get("policies") or [])


@dataclass(frozen=True)
class Decision:
    """The decision on one tool call (``POST /v1/decide``)."""

    decision: Verdict
    decision_id: str
    call_id: str
    reason: str
    policies: tuple[FiredPolicy, ...] = ()
    approval_id: str | None = None
    deadline: str | None = None
    ledger_index: int | None = None
    policy_hash: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Decision":
        return cls(
            decision=body["decision"],
            decision_id=str(body.get("decision_id", "")),
            call_id=str(body.get("call_id", "")),
            reason=str(body.get("reason", "")),
            policies=_policies(body),
            approval_id=body.get("approval_id"),
            deadline=body.get("deadline"),
            ledger_index=body.get("ledger_index"),
            policy_hash=body.get("policy_hash"),
            raw=body,
        )

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"

    @property
    def denied(self) -> bool:
        return self.decision == "deny"

    @property
    def held(self) -> bool:
        return self.decision == "require_approval"

    @property
    def policy_ids(self) -> list[str]:
        return [p.id for p in self.policies]


@dataclass(frozen=True)
class ApprovalOutcome:
    """How a held call was answered, and the call's final decision."""

    approval_id: str
    call_id: str
    approver: str
    result: ApprovalResult
    decision: Verdict
    reason: str
    policies: tuple[FiredPolicy, ...] = ()
    lease_until: str | None = None
    ledger_index: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "ApprovalOutcome":
        return cls(
            approval_id=str(body.get("approval_id", "")),
            call_id=str(body.get("call_id", "")),
            approver=str(body.get("approver", "")),
            result=body["result"],
            decision=body["decision"],
            reason=str(body.get("reason", "")),
            policies=_policies(body),
            lease_until=body.get("lease_until"),
            ledger_index=body.get("ledger_index"),
            raw=body,
        )

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"


@dataclass(frozen=True)
class Credential:
    """A credential minted by the server: the bearer token and what it says."""

    token: str
    agent: str | None
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)
    ledger_index: int | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Credential":
        cred = body.get("credential") or {}
        return cls(
            token=str(body["token"]),
            agent=cred.get("subject") if isinstance(cred, Mapping) else None,
            claims=cred if isinstance(cred, Mapping) else {},
            ledger_index=body.get("ledger_index"),
        )
