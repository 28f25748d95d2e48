#!/usr/bin/env python3
"""A scripted MCP session with the official Python SDK client, for the gateway's end-to-end
tests. It talks to a server (or the gateway in front of it) over stdio or Streamable HTTP and
prints what it saw as one JSON document.

    py_session.py --scenario policy --stdio '["truststack", "gateway", "--config", "gw.toml", "--", "node", "everything.js"]'
    py_session.py --scenario diff --url http://127.0.0.1:3001/mcp
"""

import argparse
import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def text(result):
    return " ".join(c.text for c in result.content if c.type == "text")


async def all_pages(fetch, key):
    items, cursor = [], None
    for _ in range(100):
        page = await fetch(cursor)
        items.extend(getattr(page, key))
        cursor = page.nextCursor
        if not cursor:
            break
    return items


async def list_tools(s):
    return await all_pages(lambda c: s.list_tools(params=types.PaginatedRequestParams(cursor=c) if c else None), "tools")


async def scenario_policy(s, out):
    """Everything server under the test policies: allowed, denied, held, filtered, pass-through."""
    out["tools"] = sorted(t.name for t in await list_tools(s))
    r = await s.call_tool("echo", {"message": "hello through the gateway"})
    out["echo"] = {"isError": r.isError, "text": text(r)}
    r = await s.call_tool("get-env", {})
    out["get_env"] = {"isError": r.isError, "text": text(r), "meta": r.meta}
    progress = []

    async def on_progress(p, total, message):
        progress.append({"progress": p, "message": message})

    r = await s.call_tool("get-sum", {"a": 2, "b": 3}, progress_callback=on_progress)
    out["get_sum"] = {"isError": r.isError, "text": text(r), "progress": progress}
    res = await s.list_resources()
    out["resources"] = [dump(x) for x in res.resources[:3]]
    first = res.resources[0].uri
    out["read"] = dump(await s.read_resource(first))
    out["prompts"] = sorted(p.name for p in (await s.list_prompts()).prompts)
    out["prompt"] = dump(await s.get_prompt("simple-prompt"))


async def scenario_diff(s, out):
    """A deterministic session whose answers must be identical directly and through the gateway."""
    steps = []
    steps.append(("tools", [dump(t) for t in await list_tools(s)]))
    steps.append(("echo", dump(await s.call_tool("echo", {"message": "diff"}))))
    steps.append(("sum", dump(await s.call_tool("get-sum", {"a": 40, "b": 2}))))
    steps.append(("image", dump(await s.call_tool("get-tiny-image", {}))))
    steps.append(("annotated", dump(await s.call_tool("get-annotated-message", {"messageType": "error", "includeImage": False}))))
    steps.append(("structured", dump(await s.call_tool("get-structured-content", {"location": "New York"}))))
    steps.append(("bad-args", dump(await s.call_tool("get-sum", {"a": "x"}))))
    resources = await all_pages(lambda c: s.list_resources(params=types.PaginatedRequestParams(cursor=c) if c else None), "resources")
    steps.append(("resources", [dump(r) for r in resources]))
    steps.append(("templates", dump(await s.list_resource_templates())))
    for r in resources[:3]:
        steps.append(("read " + str(r.uri), dump(await s.read_resource(r.uri))))
    steps.append(("prompts", dump(await s.list_prompts())))
    steps.append(("simple-prompt", dump(await s.get_prompt("simple-prompt"))))
    steps.append(("args-prompt", dump(await s.get_prompt("args-prompt", {"city": "Paris", "state": "TX"}))))
    steps.append(("ping", dump(await s.send_ping())))
    try:
        await s.call_tool("no-such-tool", {})
    except Exception as e:  # an MCP error: its text is part of the comparison
        steps.append(("unknown-tool", str(e)))
    out["steps"] = steps


async def scenario_fs(s, out):
    """Filesystem server: reads allowed, writes denied and hidden."""
    out["tools"] = sorted(t.name for t in await list_tools(s))
    out["allowed_dirs"] = text(await s.call_tool(out["prefix"] + "list_allowed_directories", {}))
    r = await s.call_tool(out["prefix"] + "read_text_file", {"path": out["file"]})
    out["read"] = {"isError": r.isError, "text": text(r)}
    r = await s.call_tool(out["prefix"] + "write_file", {"path": out["file"], "content": "overwritten"})
    out["write"] = {"isError": r.isError, "text": text(r)}
    r = await s.call_tool(out["prefix"] + "list_directory", {"path": out["dir"]})
    out["list"] = {"isError": r.isError, "text": text(r)}


async def scenario_multi(s, out):
    """Everything and filesystem behind one gateway, namespaced."""
    out["tools"] = sorted(t.name for t in await list_tools(s))
    r = await s.call_tool("everything__echo", {"message": "ns"})
    out["echo"] = {"isError": r.isError, "text": text(r)}
    r = await s.call_tool("fs__read_text_file", {"path": out["file"]})
    out["read"] = {"isError": r.isError, "text": text(r)}
    r = await s.call_tool("fs__write_file", {"path": out["file"], "content": "x"})
    out["write"] = {"isError": r.isError, "text": text(r)}
    out["prompts"] = sorted(p.name for p in (await s.list_prompts()).prompts)
    out["prompt"] = dump(await s.get_prompt("everything__simple-prompt"))
    res = await s.list_resources()
    out["resource_count"] = len(res.resources)
    out["read_resource"] = dump(await s.read_resource(res.resources[0].uri))


SCENARIOS = {"policy": scenario_policy, "diff": scenario_diff, "fs": scenario_fs, "multi": scenario_multi}


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True, choices=SCENARIOS)
    ap.add_argument("--url")
    ap.add_argument("--token")
    ap.add_argument("--file", help="fs: a file to read")
    ap.add_argument("--dir", help="fs: the allowed directory")
    ap.add_argument("--prefix", default="", help="fs: tool name prefix")
    ap.add_argument("--stdio", help="the command to start, as a JSON array")
    args = ap.parse_args()
    out = {"file": args.file, "dir": args.dir, "prefix": args.prefix}
    run = SCENARIOS[args.scenario]

    async def session(read, write):
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            out["server"] = init.serverInfo.name
            out["protocol"] = init.protocolVersion
            await run(s, out)

    if args.url:
        headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
        async with streamablehttp_client(args.url, headers=headers) as (read, write, _):
            await session(read, write)
    else:
        import os
        env = dict(os.environ)
        if args.token:
            env["TRUSTSTACK_TOKEN"] = args.token
        command = json.loads(args.stdio)
        params = StdioServerParameters(command=command[0], args=command[1:], env=env)
        async with stdio_client(params, errlog=sys.stderr) as (read, write):
            await session(read, write)
    for k in ("file", "dir", "prefix"):
        out.pop(k, None)
    print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main())
