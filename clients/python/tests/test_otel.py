"""OpenTelemetry: `truststack serve` exports a span per decision over OTLP/HTTP (protobuf) to the
receiver the standard environment variables name, as a child of the caller's `traceparent`.
The receiver here is a loopback HTTP server decoding `ExportTraceServiceRequest`."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from conftest import Server, start, stop
from truststack import Client

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver:
    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.paths: list[str] = []
        spans, paths = self.spans, self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                paths.append(self.path)
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        spans.extend(ss.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, n: int, timeout: float = 15) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.spans) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.spans)


def attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        v = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = [x.string_value for x in v.array_value.values] if kind == "array_value" else getattr(v, kind)
    return out


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[Server, Receiver]]:
    receiver = Receiver()
    server = start(
        tmp_path,
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_SERVICE_NAME": "truststack-test",
        },
    )
    yield server, receiver
    stop(server)
    receiver.server.shutdown()


def test_decision_spans_continue_the_callers_trace(traced: tuple[Server, Receiver]) -> None:
    server, receiver = traced
    agent = Client(server.url, server.agent("orchestrator"))
    recon = agent.for_subagent("recon", ["ScanTool", "DatabaseQuery", "DataExfiltration"])
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    allowed = recon.decide("nmap_scan", {"target": "10.1.0.7"}, session="s-otel", traceparent=traceparent)
    denied = recon.decide("nmap_scan", {"target": "203.0.113.0/24"}, session="s-otel", traceparent=traceparent)
    # The production query's arguments are recorded hashed in the catalog: never in a span.
    hashed = recon.decide("prod_db_query", {"sql": "SELECT secret FROM customers"}, session="s-otel")
    spans = receiver.wait_for(3)
    assert len(spans) == 3, spans
    assert receiver.paths == ["/v1/traces"] * len(receiver.paths)
    by_call = {attrs(s)["truststack.call_id"]: s for s in spans}

    first = by_call[allowed.call_id]
    assert first.trace_id.hex() == TRACE_ID and first.parent_span_id.hex() == PARENT_ID
    a = attrs(first)
    assert a["truststack.decision"] == "allow"
    assert a["truststack.agent"] == "spiffe://acme.example/agent/orchestrator/recon"
    assert a["truststack.delegation_root"] == "spiffe://acme.example/agent/orchestrator"
    assert a["truststack.user"] == "user:operator@acme.example"
    assert a["truststack.session"] == "s-otel"
    assert a["truststack.tool"] == "nmap_scan"
    assert a["truststack.decision_id"] == allowed.decision_id
    assert "10.1.0.7" in a["truststack.args"]  # record mode `full` (the default)

    second = by_call[denied.call_id]
    assert second.trace_id.hex() == TRACE_ID and second.parent_span_id.hex() == PARENT_ID
    b = attrs(second)
    assert b["truststack.decision"] == "deny"
    assert "scan-rate-limit" in b["truststack.policy_ids"]
    assert second.status.code == 2  # STATUS_CODE_ERROR

    third = by_call[hashed.call_id]
    assert third.trace_id.hex() != TRACE_ID and not third.parent_span_id  # a new trace
    c = attrs(third)
    assert "truststack.args" not in c
    assert all("secret" not in str(v) for v in c.values())


def test_off_unless_configured(server: Server) -> None:
    """Without OTEL_EXPORTER_OTLP_* the server exports nothing (and says so at start-up)."""
    agent = Client(server.url, server.agent("orchestrator"))
    assert agent.decide("read_docs", {}).allowed
    assert "OTLP" not in (server.dir / "serve.log").read_text()
