#!/usr/bin/env python3
"""Replays the GTG-1002 campaign through the TrustStack MCP gateway with the official MCP Python
SDK client, and checks that every control fires at the gateway.

The calls of ../traces/campaign-single-agent.jsonl are made in order, as fast as the gateway
answers (the campaign ran at several operations per second). The escalation is held: this
script then plays the humans, through the gateway's approvals endpoint: the operator who
launched the agent tries to approve it (refused: separation of duties), then the on-call
engineer grants it with a 30-minute lease.

    # stdio: the script starts the gateway, which starts server.py
    python3 replay.py --truststack ../../../target/release/truststack
    # Streamable HTTP: a gateway already listening (see gateway.toml)
    python3 replay.py --url http://127.0.0.1:8808/mcp

Exit status 0 when every expected decision happened, 1 otherwise. `--json` prints a summary.
"""

import argparse
import asyncio
import json
import os
import sys
import urllib.request
from pathlib import Path

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client

HERE = Path(__file__).resolve().parent
TRACE = HERE.parent / "traces" / "campaign-single-agent.jsonl"
TOKEN = "gtg1002-demo-token"

# What must happen at the gateway (everything else must be allowed).
EXPECT = {
    "ext-scan": ("deny", "seed#1"),  # external target
    "scan-101": ("deny", "seed#1"),  # the 101st scan in 5 minutes
    "probe-102": ("deny", "seed#1"),
    # In the trace this scan comes 5 minutes later; replayed in real time the window has not
    # passed, so the rate limit still denies it.
    "scan-after-window": ("deny", "seed#1"),
    "exploit-1": ("held", "seed#2"),  # scan + code analysis + exploitation: a human decides
    "exfil-1": ("deny", "seed#3"),  # production data read, then an external upload
}


def calls():
    for line in TRACE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        ev = json.loads(line)
        if ev.get("type") == "tool_call":
            yield ev["id"], ev["tool"], ev.get("args", {})


def http_json(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


async def approver(approvals_url, log):
    """Waits for the held call, then answers it as two humans."""
    for _ in range(400):
        status, listed = await asyncio.to_thread(http_json, "GET", f"{approvals_url}/v1/approvals")
        pending = listed.get("pending") if status == 200 and isinstance(listed, dict) else None
        if pending:
            break
        await asyncio.sleep(0.05)
    else:
        log.append({"approval": "nothing was held"})
        return
    held = pending[0]
    aid = held["approval_id"]
    log.append({"held": held["call"]["tool"], "approval_id": aid, "policies": [p["id"] for p in held["policies"]]})
    status, body = await asyncio.to_thread(
        http_json, "POST", f"{approvals_url}/v1/approvals/{aid}/grant", {"approver": "user:operator@acme.example"}
    )
    log.append({"approver": "user:operator@acme.example", "status": status, "answer": body})
    status, body = await asyncio.to_thread(
        http_json,
        "POST",
        f"{approvals_url}/v1/approvals/{aid}/grant",
        {"approver": "user:oncall@acme.example", "lease": "30min"},
    )
    log.append({"approver": "user:oncall@acme.example", "status": status, "answer": body})


def text_of(result):
    return " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def replay(session, approvals_url, quiet):
    results = []
    approvals_log = []
    progress = []
    await session.initialize()
    tools = await session.list_tools()
    listed = sorted(t.name for t in tools.tools)
    for cid, tool, args in calls():
        task = None
        if EXPECT.get(cid, ("",))[0] == "held":
            task = asyncio.create_task(approver(approvals_url, approvals_log))

        async def on_progress(p, total, message, cid=cid):
            progress.append({"call": cid, "progress": p, "message": message})

        r = await session.call_tool(tool, args, progress_callback=on_progress)
        if task:
            await task
        text = text_of(r)
        outcome = "deny" if r.isError else "allow"
        results.append({"id": cid, "tool": tool, "outcome": outcome, "text": text})
        if not quiet:
            mark = "✗" if r.isError else "✓"
            print(f"  {mark} {cid:<18} {tool:<15} {text[:150]}")
    return listed, results, approvals_log, progress


def check(results, approvals_log, progress):
    failures = []
    by_id = {r["id"]: r for r in results}
    for cid, r in by_id.items():
        want, policy = EXPECT.get(cid, ("allow", None))
        if want == "held":
            ok = r["outcome"] == "allow" and any(p["call"] == cid for p in progress)
            grants = [a for a in approvals_log if a.get("approver") == "user:oncall@acme.example"]
            refusals = [a for a in approvals_log if a.get("approver") == "user:operator@acme.example"]
            ok = ok and grants and grants[0]["status"] == 200 and refusals and refusals[0]["status"] == 403
            if not ok:
                failures.append(f"{cid}: expected held, operator refused, on-call granted, then allowed; got {r}, {approvals_log}")
        elif r["outcome"] != want or (policy and policy not in r["text"]):
            failures.append(f"{cid}: expected {want} ({policy}), got {r['outcome']}: {r['text']}")
    return failures


async def main():
    ap = argparse.ArgumentParser(description="Replay the GTG-1002 campaign through the TrustStack MCP gateway.")
    ap.add_argument("--truststack", default="truststack", help="the truststack binary (stdio mode)")
    ap.add_argument("--config", default=str(HERE / "gateway.toml"), help="the gateway configuration (stdio mode)")
    ap.add_argument("--approvals", default="http://127.0.0.1:7391", help="the gateway's approvals API (/v1/approvals)")
    ap.add_argument("--url", help="a running gateway's Streamable HTTP endpoint (instead of starting one)")
    ap.add_argument("--token", default=TOKEN, help="the agent's credential")
    ap.add_argument("--json", action="store_true", help="print a JSON summary")
    args = ap.parse_args()
    quiet = args.json
    approvals_url = args.approvals.rstrip("/")
    if args.url:
        transport = streamablehttp_client(args.url, headers={"Authorization": f"Bearer {args.token}"})
        async with transport as (read, write, _):
            async with ClientSession(read, write) as session:
                out = await replay(session, approvals_url, quiet)
    else:
        port = approvals_url.rsplit(":", 1)[-1]
        params = StdioServerParameters(
            command=args.truststack,
            args=["gateway", "--config", args.config, "--approvals-listen", f"127.0.0.1:{port}"],
            env={**os.environ, "TRUSTSTACK_TOKEN": args.token},
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                out = await replay(session, approvals_url, quiet)
    listed, results, approvals_log, progress = out
    failures = check(results, approvals_log, progress)
    summary = {
        "tools_listed": listed,
        "calls": len(results),
        "allowed": sum(r["outcome"] == "allow" for r in results),
        "denied": sum(r["outcome"] == "deny" for r in results),
        "decisions": {cid: next(r for r in results if r["id"] == cid) for cid in EXPECT},
        "approvals": approvals_log,
        "progress_notifications": len(progress),
        "failures": failures,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"\n{summary['calls']} calls: {summary['allowed']} allowed, {summary['denied']} denied; "
              f"{summary['progress_notifications']} progress notifications while held")
        for a in approvals_log:
            if "approver" in a:
                detail = a["answer"].get("reason") or a["answer"].get("error")
                print(f"  approval by {a['approver']}: HTTP {a['status']}: {detail}")
        for f in failures:
            print(f"FAILED: {f}")
        print("all controls fired at the gateway" if not failures else f"{len(failures)} expectation(s) failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    asyncio.run(main())
