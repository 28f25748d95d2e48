"""What goes on the wire, shared by the sync and the async client: each operation is a request
built here that carries how its answer is read, so the two clients cannot drift apart."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar

from .errors import ApiError, ApprovalRefused, ApprovalTimeout, Denied
from .models import ApprovalOutcome, Credential, Decision

DEFAULT_URL = "http://127.0.0.1:8181"
TOKEN_ENV = "TRUSTSTACK_TOKEN"
URL_ENV = "TRUSTSTACK_URL"
# One long-poll of a held call lasts at most this long; a longer wait polls again. Below the
# server's default request timeout (60 s), which caps it anyway.
LONG_POLL_SECONDS = 25.0
# With a cancel event (sync clients), polls are this short so a cancel is seen quickly.
CANCELLABLE_POLL_SECONDS = 0.5


T = TypeVar("T")


def _ledger_index(body: Mapping[str, Any]) -> int | None:
    return body.get("ledger_index")


def _nothing(body: Any) -> None:
    return None


@dataclass
class Request(Generic[T]):
    """One operation: what to send, and ``read``, which turns the JSON answer into its result."""

    method: str
    path: str
    read: Callable[[Any], T]
    json: Any = None
    params: Mapping[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def resolve(base_url: str | None, token: str | None) -> tuple[str, str | None]:
    """The server and the credential: explicit values first, then ``TRUSTSTACK_URL`` and
    ``TRUSTSTACK_TOKEN``."""
    url = base_url or os.environ.get(URL_ENV) or DEFAULT_URL
    return url.rstrip("/"), token if token is not None else os.environ.get(TOKEN_ENV)


def trace_headers(traceparent: str | None) -> dict[str, str]:
    """The W3C trace context to send: the one given, else the active OpenTelemetry span's when
    the ``opentelemetry`` API is installed, else none."""
    if traceparent:
        return {"traceparent": traceparent}
    if _inject is None:
        return {}
    carrier: dict[str, str] = {}
    _inject(carrier)
    return carrier


try:  # optional: propagate the caller's trace when it uses OpenTelemetry
    from opentelemetry.propagate import inject as _inject
except ImportError:  # pragma: no cover - depends on the environment
    _inject = None


def decide(
    tool: str,
    args: Mapping[str, Any] | None,
    session: str | None,
    call_id: str | None,
    traceparent: str | None,
) -> Request[Decision]:
    body: dict[str, Any] = {"tool": tool, "args": dict(args or {})}
    if session is not None:
        body["session"] = session
    if call_id is not None:
        body["id"] = call_id
    return Request(
        "POST", "/v1/decide", Decision.from_json, json=body, headers=trace_headers(traceparent)
    )


def observation(
    path: str,
    call_id: str | None,
    tool: str | None,
    result: Any,
    session: str | None,
    data_sources: Sequence[Mapping[str, str]] | None,
) -> Request[int | None]:
    body: dict[str, Any] = {}
    for key, value in (
        ("call_id", call_id),
        ("tool", tool),
        ("session", session),
        ("result", result),
    ):
        if value is not None:
            body[key] = value
    if data_sources:
        body["data_sources"] = [dict(d) for d in data_sources]
    return Request("POST", path, _ledger_index, json=body)


def user_input(
    text: str,
    values: Mapping[str, Any] | None,
    session: str | None,
    principal: str | None,
    input_id: str | None,
) -> Request[int | None]:
    body: dict[str, Any] = {"text": text}
    for key, value in (("session", session), ("principal", principal), ("id", input_id)):
        if value is not None:
            body[key] = value
    if values:
        body["values"] = dict(values)
    return Request("POST", "/v1/inputs", _ledger_index, json=body)


def task_grant(
    allow: Sequence[Mapping[str, Any]],
    session: str | None,
    principal: str | None,
    grant_id: str | None,
) -> Request[str]:
    body: dict[str, Any] = {"allow": [dict(entry) for entry in allow]}
    for key, value in (("session", session), ("principal", principal), ("id", grant_id)):
        if value is not None:
            body[key] = value
    return Request("POST", "/v1/grants", lambda answer: str(answer["grant_id"]), json=body)


def wait(approval_id: str, seconds: float) -> Request[ApprovalOutcome | None]:
    """One long-poll: the answer, or ``None`` while the call is still pending."""
    ms = max(1, int(seconds * 1000))
    return Request(
        "GET", f"/v1/approvals/{approval_id}/wait", _wait_answer, params={"timeout": f"{ms}ms"}
    )


def withdraw(approval_id: str) -> Request[None]:
    return Request("POST", f"/v1/approvals/{approval_id}/cancel", _nothing, json={})


def answer(
    approval_id: str, grant: bool, lease: str | None, comment: str | None
) -> Request[ApprovalOutcome]:
    body: dict[str, Any] = {}
    if lease is not None:
        body["lease"] = lease
    if comment is not None:
        body["comment"] = comment
    verb = "grant" if grant else "refuse"
    return Request(
        "POST", f"/v1/approvals/{approval_id}/{verb}", ApprovalOutcome.from_json, json=body
    )


def approvals(
    policy: str | None, agent: str | None, root: str | None
) -> Request[list[dict[str, Any]]]:
    params = {k: v for k, v in (("policy", policy), ("agent", agent), ("root", root)) if v}
    return Request("GET", "/v1/approvals", lambda answer: list(answer["pending"]), params=params)


def approval(approval_id: str) -> Request[dict[str, Any]]:
    return Request("GET", f"/v1/approvals/{approval_id}", dict)


def delegate(agent: str, tools: Sequence[str], ttl: str | None) -> Request[Credential]:
    body: dict[str, Any] = {"agent": agent, "tools": list(tools)}
    if ttl is not None:
        body["ttl"] = ttl
    return Request("POST", "/v1/identities/delegate", Credential.from_json, json=body)


def body_of(status: int, text: str, json_body: Any) -> Any:
    """The JSON answer, or ``ApiError`` with the server's message for an error status."""
    if status >= 400:
        message = text
        decision_id = None
        if isinstance(json_body, Mapping):
            message = str(json_body.get("error", text))
            decision_id = json_body.get("decision_id")
        raise ApiError(status, message, decision_id)
    return json_body


def _wait_answer(body: Mapping[str, Any]) -> ApprovalOutcome | None:
    if body.get("status") == "answered":
        return ApprovalOutcome.from_json(body["outcome"])
    return None


def settle(decision: Decision, outcome: ApprovalOutcome | None) -> Decision:
    """The end of ``authorize``: the decision when allowed, else the exception that says why."""
    if decision.denied:
        raise Denied(decision)
    if decision.held:
        if outcome is None:
            raise ApprovalTimeout(decision)
        if not outcome.allowed:
            raise ApprovalRefused(decision, outcome)
    return decision
