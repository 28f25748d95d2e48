// A scripted MCP session with the official TypeScript SDK client, for the gateway's end-to-end
// tests (run with NODE_PATH=.ci/peers/node_modules). Prints what it saw as one JSON document.
//
//   node ts_session.cjs --stdio '["truststack","gateway","--config","gw.toml","--","node","everything.js"]' --token T
//   node ts_session.cjs --url http://127.0.0.1:8808/mcp --token T
"use strict";

const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");

function arg(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const text = (r) => (r.content || []).filter((c) => c.type === "text").map((c) => c.text).join(" ");

async function main() {
  const token = arg("--token");
  let transport;
  if (arg("--url")) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    transport = new StreamableHTTPClientTransport(new URL(arg("--url")), { requestInit: { headers } });
  } else {
    const command = JSON.parse(arg("--stdio"));
    const env = { ...process.env };
    if (token) env.TRUSTSTACK_TOKEN = token;
    transport = new StdioClientTransport({ command: command[0], args: command.slice(1), env, stderr: "inherit" });
  }
  const client = new Client({ name: "truststack-e2e-ts", version: "1.0.0" });
  await client.connect(transport);
  const out = { server: client.getServerVersion().name };

  const tools = [];
  let cursor;
  do {
    const page = await client.listTools(cursor ? { cursor } : {});
    tools.push(...page.tools.map((t) => t.name));
    cursor = page.nextCursor;
  } while (cursor);
  out.tools = tools.sort();

  let r = await client.callTool({ name: "echo", arguments: { message: "from typescript" } });
  out.echo = { isError: !!r.isError, text: text(r) };
  r = await client.callTool({ name: "get-env", arguments: {} });
  out.get_env = { isError: !!r.isError, text: text(r) };
  const progress = [];
  r = await client.callTool({ name: "get-sum", arguments: { a: 20, b: 22 } }, undefined, {
    onprogress: (p) => progress.push(p),
    timeout: 60000,
  });
  out.get_sum = { isError: !!r.isError, text: text(r), progress: progress.length };

  const resources = await client.listResources();
  out.resource_count = resources.resources.length;
  const read = await client.readResource({ uri: resources.resources[0].uri });
  out.read_uri = read.contents[0].uri;
  out.prompts = (await client.listPrompts()).prompts.map((p) => p.name).sort();
  const prompt = await client.getPrompt({ name: "args-prompt", arguments: { city: "Lyon" } });
  out.prompt = prompt.messages[0].content.text;

  await client.close();
  process.stdout.write(JSON.stringify(out, null, 1) + "\n");
}

main().catch((e) => {
  process.stderr.write(`ts_session: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
