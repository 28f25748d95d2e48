"""The client against a real server: decisions, errors carrying reasons, holds with timeout and
cancellation, approvals with separation of duties, delegation, the credential from the
environment."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from conftest import ONCALL, OPERATOR, Server, first_held
from truststack import (
    ApiError,
    ApprovalRefused,
    ApprovalTimeout,
    AsyncClient,
    Cancelled,
    Client,
    Denied,
    Unavailable,
)


def hold_exploitation(agent: Client) -> str:
    """Scan, code analysis, exploitation in one orchestration: the exploitation is held."""
    assert agent.decide("nmap_scan", {"target": "10.1.0.7"}).allowed
    assert agent.decide("code_review", {"repo": "svc-billing"}).allowed
    held = agent.decide("exploit_runner", {"target": "10.1.0.7", "payload": "cve-2026-0001"})
    assert held.held, held
    assert "chain-of-command" in held.policy_ids
    assert held.approval_id
    return held.approval_id


def test_decide_and_deny_carry_reasons(server: Server) -> None:
    with Client(server.url, server.agent("orchestrator")) as agent:
        d = agent.decide("nmap_scan", {"target": "10.1.0.1"}, session="s-1", call_id="c-1")
        assert d.allowed and d.call_id == "c-1" and d.ledger_index is not None
        with pytest.raises(Denied) as e:
            agent.authorize("nmap_scan", {"target": "203.0.113.0/24"})
        assert "scan-rate-limit" in [p.id for p in e.value.policies]
        assert e.value.decision.denied
        assert e.value.reason
        # Unknown tools are denied by the server's default.
        assert agent.decide("format_disk", {}).denied


def test_credential_from_environment(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTSTACK_TOKEN", server.agent("orchestrator"))
    monkeypatch.setenv("TRUSTSTACK_URL", server.url)
    with Client() as agent:
        assert agent.decide("read_docs", {"page": "vpn"}).allowed
    monkeypatch.delenv("TRUSTSTACK_TOKEN")
    with Client() as anonymous, pytest.raises(ApiError) as e:
        anonymous.decide("read_docs", {})
    assert e.value.status == 401 and "Bearer" in e.value.message


def test_unreachable_server_raises_unavailable(server: Server) -> None:
    with Client("http://127.0.0.1:9", "t") as agent, pytest.raises(Unavailable):
        agent.authorize("read_docs", {})


def test_held_call_granted_by_an_approver_outside_the_chain(server: Server) -> None:
    agent = Client(server.url, server.agent("orchestrator"))
    operator = Client(server.url, server.human(OPERATOR))
    oncall = Client(server.url, server.human(ONCALL))
    approval_id = hold_exploitation(agent)
    assert [p["approval_id"] for p in oncall.approvals()] == [approval_id]
    assert oncall.approval(approval_id)["trajectory"]
    # The operator who launched the orchestration may not wave it through.
    with pytest.raises(ApiError) as e:
        operator.grant(approval_id)
    assert e.value.status == 403
    # Nor may the agent itself.
    with pytest.raises(ApiError) as e:
        agent.grant(approval_id)
    assert e.value.status in (401, 403)
    threading.Timer(0.3, lambda: oncall.grant(approval_id, lease="30min")).start()
    outcome = agent.wait(approval_id, timeout=10)
    assert outcome is not None and outcome.allowed and outcome.approver == ONCALL


def test_authorize_waits_then_raises_on_refusal(server: Server) -> None:
    agent = Client(server.url, server.agent("orchestrator"))
    oncall = Client(server.url, server.human(ONCALL))
    assert agent.decide("nmap_scan", {"target": "10.1.0.7"}).allowed
    assert agent.decide("code_review", {"repo": "r"}).allowed

    def refuse_when_held() -> None:
        held = first_held(oncall, 10)
        if held is not None:
            oncall.refuse(held["approval_id"], comment="no")

    t = threading.Thread(target=refuse_when_held)
    t.start()
    with pytest.raises(ApprovalRefused) as e:
        agent.authorize("exploit_runner", {"target": "10.1.0.7"}, wait=10)
    t.join()
    assert e.value.outcome.result == "refused"
    assert "chain-of-command" in [p.id for p in e.value.policies]


def test_wait_timeout_and_cancellation(server: Server) -> None:
    agent = Client(server.url, server.agent("orchestrator"))
    approval_id = hold_exploitation(agent)
    started = time.monotonic()
    assert agent.wait(approval_id, timeout=0.3) is None
    assert time.monotonic() - started < 5
    with pytest.raises(ApprovalTimeout) as e:
        agent.authorize("exploit_runner", {"target": "10.1.0.8"}, wait=0.2)
    assert e.value.decision.held
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        agent.wait(approval_id, cancel=cancel)
    assert time.monotonic() - started < 3
    # A cancelled wait leaves the call held; a cancelled authorize withdraws it.
    oncall = Client(server.url, server.human(ONCALL))
    held = {p["approval_id"] for p in oncall.approvals()}
    assert approval_id in held
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(Cancelled):
        agent.authorize("exploit_runner", {"target": "10.1.0.9"}, cancel=cancel)
    assert {p["approval_id"] for p in oncall.approvals()} == held


def test_delegation_narrows_and_shares_the_delegation_root(server: Server) -> None:
    orchestrator = Client(server.url, server.agent("orchestrator"))
    recon = orchestrator.for_subagent("recon", ["ScanTool"])
    cred = orchestrator.delegate("patch", ["ExploitationTool"])
    assert cred.agent == "spiffe://acme.example/agent/orchestrator/patch"
    assert recon.decide("nmap_scan", {"target": "10.1.0.7"}).allowed
    # Outside the delegated tools: denied before any policy.
    assert recon.decide("http_upload", {"url": "https://x.example"}).denied
    # A sub-agent cannot widen its own credential.
    with pytest.raises(ApiError) as e:
        recon.delegate("helper", ["DataExfiltration"])
    assert e.value.status == 403
    # Context splitting: scan by recon, code analysis by the orchestrator, exploitation by a
    # third sub-agent: one delegation root, so the exploitation is held.
    assert orchestrator.decide("code_review", {"repo": "r"}).allowed
    patch = Client(server.url, cred.token)
    assert patch.decide("exploit_runner", {"target": "10.1.0.7"}).held


def test_observations_and_outcomes_feed_taint(server: Server) -> None:
    agent = Client(server.url, server.agent("orchestrator"))
    d = agent.decide("prod_db_query", {"sql": "SELECT 1"})
    assert d.allowed
    assert agent.outcome(d.call_id, "prod_db_query", result={"rows": 1}) is not None
    assert agent.observe(tool="read_docs", result="ok") is not None
    with pytest.raises(Denied) as e:
        agent.authorize("http_upload", {"url": "https://drop.example.net/u", "file": "x"})
    assert "no-exfiltration-after-prod-read" in [p.id for p in e.value.policies]


def test_async_client(server: Server) -> None:
    token = server.agent("orchestrator")
    oncall = Client(server.url, server.human(ONCALL))

    async def run() -> None:
        async with AsyncClient(server.url, token) as agent:
            assert (await agent.decide("nmap_scan", {"target": "10.1.0.7"})).allowed
            assert (await agent.decide("code_review", {"repo": "r"})).allowed
            sub = await agent.for_subagent("patch", ["ExploitationTool"])
            task = asyncio.create_task(sub.authorize("exploit_runner", {"target": "10.1.0.7"}))
            # Cancellation: a waiting task is cancelled like any asyncio task.
            other = asyncio.create_task(sub.authorize("exploit_runner", {"target": "10.1.0.9"}))
            for _ in range(200):
                if len(oncall.approvals()) == 2:
                    break
                await asyncio.sleep(0.02)
            other.cancel()
            with pytest.raises(asyncio.CancelledError):
                await other
            # The cancelled task's held call was withdrawn.
            assert len(oncall.approvals()) == 1
            first = next(
                p for p in oncall.approvals() if p["call"]["args"]["target"] == "10.1.0.7"
            )
            await asyncio.to_thread(oncall.grant, first["approval_id"])
            decision = await asyncio.wait_for(task, 10)
            assert decision.held  # the decision that was held, now granted
            await sub.aclose()

    asyncio.run(run())


def test_the_users_input_is_recorded_and_must_come_from_the_chain(server: Server) -> None:
    agent = Client(server.url, server.agent("orchestrator"))
    first = agent.input(
        "scan 10.1.0.7, then review svc-billing",
        values={"target": "10.1.0.7"},
        session="s-input",
    )
    assert isinstance(first, int)

    async def run() -> int | None:
        async with AsyncClient(server.url, server.agent("orchestrator")) as a:
            return await a.input("and open a ticket", session="s-input")

    second = asyncio.run(run())
    assert isinstance(second, int) and second > first
    # Only a human of the agent's own chain gives it instructions.
    with pytest.raises(ApiError) as e:
        agent.input("wire the money", principal="user:mallory@evil.example", session="s-input")
    assert e.value.status == 400


def test_a_task_grant_narrows_the_session(server: Server) -> None:
    agent = Client(server.url, server.agent("orchestrator"))
    granted = agent.grant_task(
        [{"tool": "ScanTool", "args": {"/target": {"one_of": ["10.1.0.7"]}}},
         {"tool": "read_docs"}],
        session="s-grant",
    )
    assert granted.startswith("g-")
    assert agent.decide("nmap_scan", {"target": "10.1.0.7"}, session="s-grant").allowed
    d = agent.decide("nmap_scan", {"target": "10.1.0.8"}, session="s-grant")
    assert d.denied and granted in d.reason and "`/target`" in d.reason
    with pytest.raises(Denied) as e:
        agent.authorize("code_review", {"repo": "svc-billing"}, session="s-grant")
    assert "does not allow tool `code_review`" in e.value.reason
    # Other sessions are untouched.
    assert agent.decide("code_review", {"repo": "svc-billing"}, session="s-other").allowed

    async def run() -> str:
        async with AsyncClient(server.url, server.agent("orchestrator")) as a:
            return await a.grant_task([{"tool": "read_docs"}], session="s-grant", grant_id="g-docs")

    assert asyncio.run(run()) == "g-docs"
    # The second grant narrows the session further: scanning is no longer in both.
    d = agent.decide("nmap_scan", {"target": "10.1.0.7"}, session="s-grant")
    assert d.denied and "g-docs" in d.reason
    with pytest.raises(ApiError) as bad:
        agent.grant_task([], principal="user:mallory@evil.example", session="s-grant")
    assert bad.value.status == 400
    assert any(e["record"]["kind"] == "grant" for e in server.ledger())
