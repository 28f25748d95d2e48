"""OpenTelemetry in the MCP gateway: a `tools/call` whose `params._meta` carries a W3C
`traceparent` is decided in a span of that trace, exported over OTLP to the receiver the
standard environment variables name. The gateway runs over stdio in front of the simulated
campaign tool server (`truststack demo --campaign-server`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import SCENARIO, TRUST_DOMAIN, binary
from test_otel import PARENT_ID, TRACE_ID, Receiver, attrs


def rpc(proc: subprocess.Popen[bytes], message: dict) -> dict | None:
    assert proc.stdin and proc.stdout
    proc.stdin.write((json.dumps(message) + "\n").encode())
    proc.stdin.flush()
    if "id" not in message:
        return None
    while True:
        line = proc.stdout.readline()
        assert line, "the gateway closed its output"
        reply = json.loads(line)
        if reply.get("id") == message["id"]:
            return reply


def test_gateway_decision_spans_continue_the_meta_traceparent(tmp_path: Path) -> None:
    receiver = Receiver()
    issuer = tmp_path / "issuer"
    env = {**os.environ, "TRUSTSTACK_ISSUER_DIR": str(issuer)}
    subprocess.run([str(binary()), "identity", "init", "--trust-domain", TRUST_DOMAIN], env=env, check=True, capture_output=True)
    token = subprocess.run(
        [str(binary()), "identity", "issue", "--agent", "recon", "--owner", "user:operator@acme.example", "--tools", "*"],
        env=env, check=True, capture_output=True,
    ).stdout.decode().strip()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""policies = ["{SCENARIO}/policies/delegation-root.tsp"]
catalog = "{SCENARIO}/catalog.toml"
[identity]
issuer = "{issuer}"
[[upstream]]
name = "gtg1002"
command = ["{binary()}", "demo", "--campaign-server"]
"""
    )
    proc = subprocess.Popen(
        [str(binary()), "gateway", "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "gateway.log", "wb"),
        env={
            **os.environ,
            "TRUSTSTACK_TOKEN": token,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        },
    )
    try:
        init = rpc(proc, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
        assert init and "result" in init, init
        rpc(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
        denied = rpc(proc, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "nmap_scan", "arguments": {"target": "203.0.113.0/24"},
            "_meta": {"traceparent": traceparent}}})
        assert denied and denied["result"]["isError"], denied
        allowed = rpc(proc, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "nmap_scan", "arguments": {"target": "10.1.0.7"}}})
        assert allowed and not allowed["result"].get("isError"), allowed
        spans = receiver.wait_for(2)
    finally:
        # End of input ends a stdio gateway (and flushes its spans).
        assert proc.stdin
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        receiver.server.shutdown()
    assert len(spans) == 2, (tmp_path / "gateway.log").read_text()
    by_decision = {attrs(s)["truststack.decision"]: s for s in spans}
    deny = by_decision["deny"]
    assert deny.trace_id.hex() == TRACE_ID and deny.parent_span_id.hex() == PARENT_ID
    a = attrs(deny)
    assert a["truststack.agent"] == "spiffe://acme.example/agent/recon"
    assert "scan-rate-limit" in a["truststack.policy_ids"]
    assert a["truststack.tool"] == "nmap_scan"
    allow = by_decision["allow"]
    assert allow.trace_id.hex() != TRACE_ID and not allow.parent_span_id
