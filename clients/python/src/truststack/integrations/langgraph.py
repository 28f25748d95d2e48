"""LangGraph / LangChain: every tool call of a ``ToolNode`` is decided by TrustStack first.

    from truststack import Client
    from truststack.integrations.langgraph import ToolGuard

    guard = ToolGuard(Client())                       # TRUSTSTACK_TOKEN: the agent's credential
    tools = guard.tool_node([nmap_scan, code_review])  # a langgraph.prebuilt.ToolNode

- allowed: the tool runs; its result is reported to ``/v1/outcomes`` (an observation tied to
  the call, so taint policies see what was read);
- denied (or refused, expired, unreachable): the tool does not run; the model gets a
  ``ToolMessage`` with ``status="error"`` naming the reason and the policies;
- held: ``on_hold="wait"`` blocks until an approver answers (up to ``wait_timeout``);
  ``on_hold="interrupt"`` raises LangGraph's ``interrupt`` with the approval, so the graph stops
  and is resumed (``Command(resume=...)``) once a human has answered through the approvals API.
  The resume value is not trusted: the answer is read back from the server.

Sub-agents: ``guard.for_subagent("recon", ["ScanTool"])`` is a guard holding a credential
delegated from this guard's, narrower, in the same orchestration (delegation root).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Literal, Mapping, Sequence

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command, interrupt

from .. import _protocol as wire
from ..client import AsyncClient, Client
from ..errors import TrustStackError
from ..models import ApprovalOutcome, Decision
from ._common import refusal_text

OnHold = Literal["wait", "interrupt"]
Result = ToolMessage | Command


def _refused(call: Mapping[str, Any], error: TrustStackError) -> ToolMessage:
    return ToolMessage(
        content=refusal_text(call["name"], error),
        name=call["name"],
        tool_call_id=call["id"],
        status="error",
    )


def _result_of(result: Result) -> Any:
    """What to report as the call's outcome: the tool message's content."""
    if isinstance(result, ToolMessage):
        return result.content if isinstance(result.content, (str, list)) else str(result.content)
    return None


def _session(request: ToolCallRequest, fixed: str | None) -> str | None:
    """The session: the guard's, else the graph's ``thread_id``."""
    if fixed is not None:
        return fixed
    config = getattr(request.runtime, "config", None) or {}
    thread = (config.get("configurable") or {}).get("thread_id")
    return str(thread) if thread is not None else None


class ToolGuard:
    """Decides each tool call of a ``ToolNode`` before it runs. Give it a ``Client`` for sync
    graphs, an ``AsyncClient`` for async ones, or both."""

    def __init__(
        self,
        client: Client | None = None,
        aclient: AsyncClient | None = None,
        *,
        on_hold: OnHold = "wait",
        wait_timeout: float | None = None,
        session: str | None = None,
        report_results: bool = True,
    ):
        if client is None and aclient is None:
            client = Client()
        self.client = client
        self.aclient = aclient
        self.on_hold = on_hold
        self.wait_timeout = wait_timeout
        self.session = session
        self.report_results = report_results
        # Held decisions by tool-call id, for `interrupt`: when the graph resumes, the node runs
        # again and must not ask for a second decision on the same call.
        self._held: dict[str, Decision] = {}
        self._lock = threading.Lock()

    def tool_node(self, tools: Sequence[BaseTool | Callable[..., Any]], **kwargs: Any) -> ToolNode:
        """A ``ToolNode`` over ``tools`` whose every call goes through this guard. Without an
        ``AsyncClient``, an async graph runs the sync guard (ToolNode's fallback)."""
        return ToolNode(
            tools,
            wrap_tool_call=self.wrap,
            awrap_tool_call=self.awrap if self.aclient is not None else None,
            **kwargs,
        )

    def for_subagent(self, agent: str, tools: Sequence[str], *, ttl: str | None = None) -> "ToolGuard":
        """A guard for a sub-agent, with a credential delegated from this guard's."""
        client = self.client.for_subagent(agent, tools, ttl=ttl) if self.client else None
        aclient = None
        if self.aclient is not None:
            token = client.token if client else None
            if token is None:
                raise TrustStackError("for_subagent on an async-only guard: use afor_subagent")
            aclient = AsyncClient(self.aclient.base_url, token)
        return self._like(client, aclient)

    async def afor_subagent(
        self, agent: str, tools: Sequence[str], *, ttl: str | None = None
    ) -> "ToolGuard":
        if self.aclient is None:
            return self.for_subagent(agent, tools, ttl=ttl)
        aclient = await self.aclient.for_subagent(agent, tools, ttl=ttl)
        client = Client(aclient.base_url, aclient.token) if self.client is not None else None
        return self._like(client, aclient)

    def _like(self, client: Client | None, aclient: AsyncClient | None) -> "ToolGuard":
        return ToolGuard(
            client,
            aclient,
            on_hold=self.on_hold,
            wait_timeout=self.wait_timeout,
            session=self.session,
            report_results=self.report_results,
        )

    # ---- the held call ----

    def _take_held(self, call_id: str) -> Decision | None:
        with self._lock:
            return self._held.get(call_id)

    def _interrupt(self, decision: Decision, call: Mapping[str, Any]) -> None:
        """Stops the graph for a human; returns when the graph is resumed."""
        with self._lock:
            self._held[call["id"]] = decision
        interrupt(
            {
                "truststack": "approval_required",
                "approval_id": decision.approval_id,
                "deadline": decision.deadline,
                "tool": call["name"],
                "reason": decision.reason,
                "policies": decision.policy_ids,
            }
        )
        with self._lock:
            self._held.pop(call["id"], None)

    def _resumed_wait(self) -> float:
        """After a resume the human has answered: the answer is read back, briefly."""
        return self.wait_timeout if self.wait_timeout is not None else 5.0

    # ---- sync ----

    def wrap(self, request: ToolCallRequest, execute: Callable[[ToolCallRequest], Result]) -> Result:
        client = self.client
        call = request.tool_call
        if client is None:
            # Fail closed: an async-only guard in a sync graph runs nothing.
            return _refused(call, TrustStackError("this guard has no sync Client for a sync graph"))
        session = _session(request, self.session)
        try:
            decision = self._take_held(call["id"]) or client.decide(
                call["name"], call["args"], session=session, call_id=call["id"]
            )
            outcome: ApprovalOutcome | None = None
            if decision.held and decision.approval_id:
                if self.on_hold == "interrupt":
                    self._interrupt(decision, call)
                    outcome = client.wait(decision.approval_id, timeout=self._resumed_wait())
                else:
                    outcome = client.wait(decision.approval_id, timeout=self.wait_timeout)
            wire.settle(decision, outcome)
        except TrustStackError as e:
            return _refused(call, e)
        result = execute(request)
        if self.report_results:
            try:
                client.outcome(decision.call_id, call["name"], result=_result_of(result), session=session)
            except TrustStackError:
                # The call ran; a lost report must not turn its result into an error. The
                # decision itself is already in the ledger.
                pass
        return result

    # ---- async ----

    async def awrap(self, request: ToolCallRequest, execute: Callable[[ToolCallRequest], Any]) -> Result:
        client = self.aclient
        if client is None:
            raise TrustStackError("this ToolGuard has no AsyncClient")
        call = request.tool_call
        session = _session(request, self.session)
        try:
            decision = self._take_held(call["id"]) or await client.decide(
                call["name"], call["args"], session=session, call_id=call["id"]
            )
            outcome: ApprovalOutcome | None = None
            if decision.held and decision.approval_id:
                if self.on_hold == "interrupt":
                    self._interrupt(decision, call)
                    outcome = await client.wait(decision.approval_id, timeout=self._resumed_wait())
                else:
                    outcome = await client.wait(decision.approval_id, timeout=self.wait_timeout)
            wire.settle(decision, outcome)
        except TrustStackError as e:
            return _refused(call, e)
        result = await execute(request)
        if self.report_results:
            try:
                await client.outcome(decision.call_id, call["name"], result=_result_of(result), session=session)
            except TrustStackError:
                pass
        return result
