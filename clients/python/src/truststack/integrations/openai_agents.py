"""OpenAI Agents SDK: TrustStack as a tool guardrail pair on function tools.

    from truststack import AsyncClient
    from truststack.integrations.openai_agents import TrustStackGuardrails

    guard = TrustStackGuardrails(AsyncClient())        # TRUSTSTACK_TOKEN: the agent's credential
    agent = Agent(name="recon", tools=guard.protect([nmap_scan, code_review]))

- the input guardrail asks for a decision before the tool runs: allowed → the tool runs;
  denied (or refused, expired, unreachable) → the tool does not run and the model reads a
  refusal naming the reason and the policies (``reject_content``); held → waits for the
  approver (up to ``wait_timeout``), then runs or is refused;
- the output guardrail reports the tool's result to ``/v1/outcomes``, tied to the call.

Sub-agents: ``await guard.for_subagent("recon", ["ScanTool"])`` holds a credential delegated
from this one, narrower, in the same delegation root.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from agents import FunctionTool
from agents.tool_guardrails import (
    ToolGuardrailFunctionOutput,
    ToolInputGuardrail,
    ToolInputGuardrailData,
    ToolOutputGuardrail,
    ToolOutputGuardrailData,
)

from ..client import AsyncClient
from ..errors import TrustStackError
from ._common import refusal_text


class TrustStackGuardrails:
    """A tool input guardrail (decide) and output guardrail (report), sharing one client."""

    def __init__(
        self,
        client: AsyncClient | None = None,
        *,
        session: str | None = None,
        wait_timeout: float | None = None,
        report_results: bool = True,
    ):
        self.client = client or AsyncClient()
        self.session = session
        self.wait_timeout = wait_timeout
        self.report_results = report_results
        # The decision's call id by the SDK's tool call id, for the outcome report.
        self._calls: dict[str, str] = {}
        self.input = ToolInputGuardrail(guardrail_function=self._decide, name="truststack")
        self.output = ToolOutputGuardrail(guardrail_function=self._report, name="truststack")

    def protect(self, tools: Sequence[FunctionTool]) -> list[FunctionTool]:
        """Adds both guardrails to each tool (in place) and returns the tools."""
        for t in tools:
            t.tool_input_guardrails = [*(t.tool_input_guardrails or []), self.input]
            if self.report_results:
                t.tool_output_guardrails = [*(t.tool_output_guardrails or []), self.output]
        return list(tools)

    async def for_subagent(
        self, agent: str, tools: Sequence[str], *, ttl: str | None = None
    ) -> "TrustStackGuardrails":
        """Guardrails for a sub-agent, holding a credential delegated from this one."""
        return TrustStackGuardrails(
            await self.client.for_subagent(agent, tools, ttl=ttl),
            session=self.session,
            wait_timeout=self.wait_timeout,
            report_results=self.report_results,
        )

    async def _decide(self, data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        ctx = data.context
        try:
            args = json.loads(ctx.tool_arguments or "{}")
        except ValueError as e:
            # Arguments the model garbled are not decided on guesswork: refused.
            return ToolGuardrailFunctionOutput.reject_content(
                f"TrustStack: the call to {ctx.tool_name} was not made: its arguments are not JSON ({e})"
            )
        try:
            decision = await self.client.authorize(
                ctx.tool_name,
                args if isinstance(args, dict) else {"value": args},
                session=self.session,
                call_id=ctx.tool_call_id,
                wait=self.wait_timeout,
            )
        except TrustStackError as e:
            return ToolGuardrailFunctionOutput.reject_content(refusal_text(ctx.tool_name, e), output_info=e)
        self._calls[ctx.tool_call_id] = decision.call_id
        return ToolGuardrailFunctionOutput.allow(output_info=decision)

    async def _report(self, data: ToolOutputGuardrailData) -> ToolGuardrailFunctionOutput:
        ctx = data.context
        call_id = self._calls.pop(ctx.tool_call_id, None)
        if call_id is not None:
            result: Any = data.output
            if not isinstance(result, (str, int, float, bool, list, dict, type(None))):
                result = str(result)
            try:
                await self.client.outcome(call_id, ctx.tool_name, result=result, session=self.session)
            except TrustStackError:
                # The call ran and its decision is in the ledger; a lost report must not turn the
                # tool's result into an error.
                pass
        return ToolGuardrailFunctionOutput.allow()
