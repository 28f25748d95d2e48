"""The clients: ``Client`` (sync) and ``AsyncClient`` (asyncio), one method per operation of the
decision point's ``/v1`` API. Both send the agent's own credential; neither holds policy state.

If the server cannot be reached, ``decide`` raises ``Unavailable``; ``authorize`` turns every
failure into an exception, so a caller that runs the tool only after ``authorize`` returns fails
closed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Mapping, Sequence, TypeVar

import httpx

from . import _protocol as wire
from .errors import Cancelled, Unavailable
from .models import ApprovalOutcome, Credential, Decision

DEFAULT_TIMEOUT = 60.0
T = TypeVar("T")


def _headers(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def _unavailable(req: wire.Request[Any], error: httpx.HTTPError) -> Unavailable:
    return Unavailable(f"{req.method} {req.path}: {error}")


def _result(req: wire.Request[T], r: httpx.Response) -> T:
    """The operation's result read from the server's answer (``ApiError`` for an error status)."""
    try:
        body = r.json()
    except ValueError:
        body = None
    return req.read(wire.body_of(r.status_code, r.text, body))


class _Base:
    base_url: str
    token: str | None
    _http: httpx.Client | httpx.AsyncClient

    def __init__(
        self,
        base_url: str | None,
        token: str | None,
        timeout: float,
        http: httpx.Client | httpx.AsyncClient,
        own_http: bool,
    ):
        self.base_url, self.token = wire.resolve(base_url, token)
        self._http = http
        self._own_http = own_http
        self._timeout = timeout

    def _request(self, req: wire.Request[Any]) -> httpx.Request:
        """The HTTP request of an operation, carrying this client's credential."""
        return self._http.build_request(
            req.method,
            self.base_url + req.path,
            json=req.json,
            params=req.params,
            headers={**_headers(self.token), **req.headers},
        )

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else time.monotonic() + timeout

    @staticmethod
    def _poll_seconds(deadline: float | None, cancellable: bool) -> float | None:
        """How long the next long-poll may last, or ``None`` when the deadline has passed."""
        chunk = wire.CANCELLABLE_POLL_SECONDS if cancellable else wire.LONG_POLL_SECONDS
        if deadline is None:
            return chunk
        left = deadline - time.monotonic()
        return None if left <= 0 else min(chunk, left)


class Client(_Base):
    """A synchronous client.

    ``token`` defaults to ``$TRUSTSTACK_TOKEN`` and ``base_url`` to ``$TRUSTSTACK_URL`` (else
    ``http://127.0.0.1:8181``). An agent's client carries the agent's credential; an approver's
    client the approver's.
    """

    _http: httpx.Client

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        http: httpx.Client | None = None,
    ):
        super().__init__(
            base_url, token, timeout, http or httpx.Client(timeout=timeout), http is None
        )

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, req: wire.Request[T]) -> T:
        try:
            r = self._http.send(self._request(req))
        except httpx.HTTPError as e:
            raise _unavailable(req, e) from e
        return _result(req, r)

    # ---- agents ----

    def decide(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        session: str | None = None,
        call_id: str | None = None,
        traceparent: str | None = None,
    ) -> Decision:
        """Asks for a decision on a tool call. Returns it whatever it is (see ``authorize``)."""
        return self._send(wire.decide(tool, args, session, call_id, traceparent))

    def authorize(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        session: str | None = None,
        call_id: str | None = None,
        traceparent: str | None = None,
        wait: float | None = None,
        cancel: threading.Event | None = None,
    ) -> Decision:
        """Decides, waits for the approval of a held call (up to ``wait`` seconds, forever when
        ``None``), and returns the decision only if the call may run. Raises ``Denied``,
        ``ApprovalRefused``, ``ApprovalTimeout``, ``Cancelled`` or ``Unavailable`` otherwise.
        A held call whose wait is cancelled is withdrawn: nobody runs it, so nobody may grant
        it."""
        decision = self.decide(
            tool, args, session=session, call_id=call_id, traceparent=traceparent
        )
        outcome = None
        if decision.held and decision.approval_id:
            try:
                outcome = self.wait(decision.approval_id, timeout=wait, cancel=cancel)
            except Cancelled:
                self.withdraw(decision.approval_id)
                raise
        return wire.settle(decision, outcome)

    def wait(
        self,
        approval_id: str,
        *,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
    ) -> ApprovalOutcome | None:
        """Waits for a held call's answer: the outcome, or ``None`` if ``timeout`` seconds pass
        first. Setting ``cancel`` (from another thread) stops the wait with ``Cancelled``."""
        deadline = self._deadline(timeout)
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"wait for approval {approval_id} cancelled")
            seconds = self._poll_seconds(deadline, cancel is not None)
            if seconds is None:
                return None
            outcome = self._send(wire.wait(approval_id, seconds))
            if outcome is not None:
                return outcome

    def withdraw(self, approval_id: str) -> None:
        """Withdraws one of this agent's held calls (``POST /v1/approvals/{id}/cancel``): it is
        refused and recorded as cancelled, and no approver can grant it any more."""
        self._send(wire.withdraw(approval_id))

    def observe(
        self,
        *,
        call_id: str | None = None,
        tool: str | None = None,
        result: Any = None,
        session: str | None = None,
        data_sources: Sequence[Mapping[str, str]] | None = None,
    ) -> int | None:
        """Reports a tool's result or a data access (``{"name", "mode"}``); the ledger index."""
        return self._send(
            wire.observation("/v1/observations", call_id, tool, result, session, data_sources)
        )

    def outcome(
        self,
        call_id: str,
        tool: str,
        *,
        result: Any = None,
        session: str | None = None,
        data_sources: Sequence[Mapping[str, str]] | None = None,
    ) -> int | None:
        """Reports a call's outcome; the server adds the tool's catalog data source as taint."""
        return self._send(
            wire.observation("/v1/outcomes", call_id, tool, result, session, data_sources)
        )

    def input(
        self,
        text: str,
        *,
        values: Mapping[str, Any] | None = None,
        session: str | None = None,
        principal: str | None = None,
        input_id: str | None = None,
    ) -> int | None:
        """Reports what a human of this agent's chain asked it (the user's intent), so policies
        can tell the values the user gave from values injected by content; the ledger index.
        ``principal`` defaults to the human at the head of the credential's chain."""
        return self._send(wire.user_input(text, values, session, principal, input_id))

    def grant_task(
        self,
        allow: Sequence[Mapping[str, Any]],
        *,
        session: str | None = None,
        principal: str | None = None,
        grant_id: str | None = None,
    ) -> str:
        """Declares what the session's task authorises: ``allow`` lists ``{"tool", "args"}``
        entries (a tool or class, and constraints by argument: ``one_of``, ``min``, ``max``,
        ``pattern``). Calls of the session outside it are denied; a second grant narrows the
        session further. For a human of this credential's chain (``principal``, default its
        head); the grant's id."""
        return self._send(wire.task_grant(allow, session, principal, grant_id))

    def delegate(self, agent: str, tools: Sequence[str], *, ttl: str | None = None) -> Credential:
        """Mints a narrower credential for a sub-agent from this client's credential."""
        return self._send(wire.delegate(agent, tools, ttl))

    def for_subagent(
        self, agent: str, tools: Sequence[str], *, ttl: str | None = None
    ) -> "Client":
        """A client for a sub-agent, holding a credential delegated from this one (sharing this
        client's connection pool)."""
        cred = self.delegate(agent, tools, ttl=ttl)
        return Client(self.base_url, cred.token, timeout=self._timeout, http=self._http)

    # ---- approvers ----

    def approvals(
        self, *, policy: str | None = None, agent: str | None = None, root: str | None = None
    ) -> list[dict[str, Any]]:
        """The held calls (approver credential)."""
        return self._send(wire.approvals(policy, agent, root))

    def approval(self, approval_id: str) -> dict[str, Any]:
        """One held call, with its policies and the orchestration's recent trajectory."""
        return self._send(wire.approval(approval_id))

    def grant(
        self, approval_id: str, *, lease: str | None = None, comment: str | None = None
    ) -> ApprovalOutcome:
        return self._send(wire.answer(approval_id, True, lease, comment))

    def refuse(self, approval_id: str, *, comment: str | None = None) -> ApprovalOutcome:
        return self._send(wire.answer(approval_id, False, None, comment))


class AsyncClient(_Base):
    """The asyncio client: the same operations as ``Client``, awaited. Cancelling the task that
    awaits ``wait`` or ``authorize`` cancels the wait (the held call stays held on the server)."""

    _http: httpx.AsyncClient

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        http: httpx.AsyncClient | None = None,
    ):
        super().__init__(
            base_url, token, timeout, http or httpx.AsyncClient(timeout=timeout), http is None
        )

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, req: wire.Request[T]) -> T:
        try:
            r = await self._http.send(self._request(req))
        except httpx.HTTPError as e:
            raise _unavailable(req, e) from e
        return _result(req, r)

    async def decide(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        session: str | None = None,
        call_id: str | None = None,
        traceparent: str | None = None,
    ) -> Decision:
        return await self._send(wire.decide(tool, args, session, call_id, traceparent))

    async def authorize(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        session: str | None = None,
        call_id: str | None = None,
        traceparent: str | None = None,
        wait: float | None = None,
    ) -> Decision:
        deciding = asyncio.ensure_future(
            self.decide(tool, args, session=session, call_id=call_id, traceparent=traceparent)
        )
        try:
            decision = await asyncio.shield(deciding)
        except asyncio.CancelledError:
            # Cancelled while the decision was on its way: the server may hold the call all
            # the same, so it is withdrawn once the decision arrives.
            decision = await deciding
            if decision.held and decision.approval_id:
                await asyncio.shield(self.withdraw(decision.approval_id))
            raise
        outcome = None
        if decision.held and decision.approval_id:
            try:
                outcome = await self.wait(decision.approval_id, timeout=wait)
            except asyncio.CancelledError:
                # Withdrawn even as the task ends: nobody runs it, so nobody may grant it.
                await asyncio.shield(self.withdraw(decision.approval_id))
                raise
        return wire.settle(decision, outcome)

    async def wait(
        self, approval_id: str, *, timeout: float | None = None
    ) -> ApprovalOutcome | None:
        deadline = self._deadline(timeout)
        while True:
            seconds = self._poll_seconds(deadline, False)
            if seconds is None:
                return None
            outcome = await self._send(wire.wait(approval_id, seconds))
            if outcome is not None:
                return outcome

    async def withdraw(self, approval_id: str) -> None:
        await self._send(wire.withdraw(approval_id))

    async def observe(
        self,
        *,
        call_id: str | None = None,
        tool: str | None = None,
        result: Any = None,
        session: str | None = None,
        data_sources: Sequence[Mapping[str, str]] | None = None,
    ) -> int | None:
        return await self._send(
            wire.observation("/v1/observations", call_id, tool, result, session, data_sources)
        )

    async def outcome(
        self,
        call_id: str,
        tool: str,
        *,
        result: Any = None,
        session: str | None = None,
        data_sources: Sequence[Mapping[str, str]] | None = None,
    ) -> int | None:
        return await self._send(
            wire.observation("/v1/outcomes", call_id, tool, result, session, data_sources)
        )

    async def input(
        self,
        text: str,
        *,
        values: Mapping[str, Any] | None = None,
        session: str | None = None,
        principal: str | None = None,
        input_id: str | None = None,
    ) -> int | None:
        return await self._send(wire.user_input(text, values, session, principal, input_id))

    async def grant_task(
        self,
        allow: Sequence[Mapping[str, Any]],
        *,
        session: str | None = None,
        principal: str | None = None,
        grant_id: str | None = None,
    ) -> str:
        return await self._send(wire.task_grant(allow, session, principal, grant_id))

    async def delegate(
        self, agent: str, tools: Sequence[str], *, ttl: str | None = None
    ) -> Credential:
        return await self._send(wire.delegate(agent, tools, ttl))

    async def for_subagent(
        self, agent: str, tools: Sequence[str], *, ttl: str | None = None
    ) -> "AsyncClient":
        cred = await self.delegate(agent, tools, ttl=ttl)
        return AsyncClient(self.base_url, cred.token, timeout=self._timeout, http=self._http)

    async def approvals(
        self, *, policy: str | None = None, agent: str | None = None, root: str | None = None
    ) -> list[dict[str, Any]]:
        return await self._send(wire.approvals(policy, agent, root))

    async def approval(self, approval_id: str) -> dict[str, Any]:
        return await self._send(wire.approval(approval_id))

    async def grant(
        self, approval_id: str, *, lease: str | None = None, comment: str | None = None
    ) -> ApprovalOutcome:
        return await self._send(wire.answer(approval_id, True, lease, comment))

    async def refuse(self, approval_id: str, *, comment: str | None = None) -> ApprovalOutcome:
        return await self._send(wire.answer(approval_id, False, None, comment))
