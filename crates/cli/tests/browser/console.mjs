// The approvals console in real Chromium (Debian's, driven by playwright-core), against a real
// `truststack serve` started by crates/cli/tests/console_browser.rs, which passes:
//   BASE, CHROMIUM, NODE_MODULES, SHOTS, AGENT, APPROVER, OPERATOR (credentials).
// Exits non-zero, saying why, on the first check that fails. Screenshots go to SHOTS.
import { createRequire } from "node:module";
import fs from "node:fs";
import http from "node:http";
import assert from "node:assert/strict";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env("BASE");
const SHOTS = env("SHOTS");
const require = createRequire(env("NODE_MODULES") + "/");
const { chromium } = require("playwright-core");
const axeSource = fs.readFileSync(env("NODE_MODULES") + "/axe-core/axe.min.js", "utf8");

const PAYLOADS = {
  script: "<script>window.__pwned = 'script'</script>",
  img: "\"><img src=x onerror=\"window.__pwned = 'img'\">",
  url: "javascript:window.__pwned = 'url'",
};

const step = (s) => console.log(`step: ${s}`);

async function decide(tool, args) {
  const resp = await fetch(`${BASE}/v1/decide`, {
    method: "POST",
    headers: { authorization: `Bearer ${env("AGENT")}`, "content-type": "application/json" },
    body: JSON.stringify({ tool, args }),
  });
  assert.equal(resp.status, 200);
  return resp.json();
}

function watch(page, problems) {
  page.on("dialog", (d) => {
    problems.push(`a dialog opened: ${d.message()}`);
    d.dismiss();
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`${r.status()} for ${r.url()}`);
  });
  page.on("console", (m) => {
    // A blocked inline script would show here as a CSP violation: nothing may even try.
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
}

async function shot(page, name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

// axe-core evaluated through the DevTools protocol (an injected <script> would be refused by
// the console's CSP, as it should be).
async function audit(page, what) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(
    bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target).join(", ")})`),
    [],
    `${what}: serious accessibility violations`,
  );
  console.log(`axe ${what}: ${result.violations.length} violation(s), none serious`);
}

// Presses Tab until `selector` has the focus: the page is usable without a mouse.
async function tabTo(page, selector, max = 60) {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector)) return;
  }
  throw new Error(`${selector} cannot be reached with Tab`);
}

async function signIn(page, credential, name) {
  await page.goto(`${BASE}/console/`);
  await page.waitForURL(/\/console\/sign-in$/);
  if (name) await audit(page, "sign-in page");
  await tabTo(page, "#credential");
  await page.keyboard.insertText(credential);
  await tabTo(page, "button[type=submit]");
  if (name) await shot(page, name);
  await page.keyboard.press("Enter");
  await page.waitForURL(/\/console\/approvals$/);
}

// A test server in front of the real one that serves a tampered entry: the record's bytes say
// "refused" where the ledger says "granted"; hashes, path and checkpoint are passed unchanged.
function tamperingProxy() {
  const target = new URL(BASE);
  const server = http.createServer((req, res) => {
    const upstream = http.request(
      { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers },
      (up) => {
        if (!req.url.endsWith("/proof.json")) {
          res.writeHead(up.statusCode, up.headers);
          up.pipe(res);
          return;
        }
        const chunks = [];
        up.on("data", (c) => chunks.push(c));
        up.on("end", () => {
          const proof = JSON.parse(Buffer.concat(chunks).toString());
          const bytes = Buffer.from(proof.data, "base64").toString().replace('"granted"', '"refused"');
          proof.data = Buffer.from(bytes).toString("base64");
          const body = JSON.stringify(proof);
          res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
          res.end(body);
        });
      },
    );
    req.pipe(upstream);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

const browser = await chromium.launch({ executablePath: env("CHROMIUM"), args: ["--no-sandbox"] });
const problems = [];
try {
  const approver = await browser.newContext();
  const page = await approver.newPage();
  watch(page, problems);

  step("sign in as an approver, by keyboard");
  await signIn(page, env("APPROVER"), "01-sign-in");
  await shot(page, "02-queue-empty");

  step("the agent's escalation is held and appears in the queue live");
  await decide("nmap_scan", { target: "10.0.0.5" });
  await decide("code_review", { repo: "git.acme.example/payments" });
  const held = await decide("exploit_runner", { target: "10.0.0.5", payload: PAYLOADS.script, note: PAYLOADS.img, callback: PAYLOADS.url });
  assert.equal(held.decision, "require_approval", JSON.stringify(held));
  const id = held.approval_id;
  // The agent waits on its call, as an enforcement point does.
  const waiting = fetch(`${BASE}/v1/approvals/${id}/wait?timeout=50s`, {
    headers: { authorization: `Bearer ${env("AGENT")}` },
  }).then((r) => r.json());
  const link = `#queue a[href="/console/approvals/${id}"]`;
  await page.waitForSelector(link, { timeout: 20000 });
  await shot(page, "03-queue-live");
  await audit(page, "queue");

  step("a human in the call's chain sees it but cannot answer it");
  const operator = await browser.newContext();
  const opPage = await operator.newPage();
  watch(opPage, problems);
  await signIn(opPage, env("OPERATOR"));
  await opPage.goto(`${BASE}/console/approvals/${id}`);
  await opPage.waitForSelector("text=Separation of duties");
  assert.equal(await opPage.locator("form[action$='/grant']").count(), 0);
  await shot(opPage, "04-separation-of-duties");
  await operator.close();

  step("open the call by keyboard: chain, arguments as text, monitor values");
  await tabTo(page, link);
  await page.keyboard.press("Enter");
  await page.waitForURL(new RegExp(`/console/approvals/${id}$`));
  const chain = await page.locator("ol.chain").innerText();
  assert.match(chain, /user:operator@acme\.example/);
  assert.match(chain, /agent\/orchestrator/);
  const args = await page.locator("pre.args").innerText();
  // The arguments are JSON text: each payload is there as a JSON string.
  for (const p of Object.values(PAYLOADS)) {
    assert.ok(args.includes(JSON.stringify(p).slice(1, -1)), `argument shown as text: ${p}`);
  }
  assert.equal(await page.locator("main img").count(), 0, "no element made from the arguments");
  assert.equal(await page.locator("main script").count(), 0);
  assert.match(await page.locator("ul.monitors").innerText(), /Trajectory_Contains.*✓/s);
  assert.equal(await page.evaluate(() => window.__pwned), undefined, "a payload ran");
  await shot(page, "05-call");
  await audit(page, "call page");

  step("grant with a lease, by keyboard");
  await tabTo(page, "#lease");
  await page.keyboard.insertText("10min");
  await tabTo(page, "#grant-comment");
  await page.keyboard.insertText("escalation checked with the red team lead");
  await tabTo(page, "button.grant");
  await page.keyboard.press("Enter");
  await page.waitForSelector("text=Granted: the call proceeds.");
  await shot(page, "06-granted");
  const waited = await waiting;
  assert.equal(waited.status, "answered", JSON.stringify(waited));
  assert.equal(waited.outcome.result, "granted");
  assert.ok(waited.outcome.lease_until, "a lease was granted");
  const index = waited.outcome.ledger_index;

  step(`the ledger page verifies entry ${index} in the browser`);
  await page.goto(`${BASE}/console/ledger`);
  await shot(page, "07-ledger");
  await page.goto(`${BASE}/console/ledger/${index}`);
  await page.waitForSelector("#verdict.verified, #verdict.error", { timeout: 20000 });
  assert.equal(
    await page.locator("#verdict").getAttribute("class"),
    "verified",
    `${await page.locator("#verdict").innerText()}\n${await page.locator("#steps").innerText()}`,
  );
  assert.match(await page.locator("#verified-record").innerText(), /"result": "granted"/);
  await audit(page, "ledger entry page");
  const steps = await page.locator("#steps li.ok").count();
  assert.ok(steps >= 6, `each step shown (${steps})`);
  await shot(page, "08-ledger-verified");

  step("a tampered entry from a test server fails visibly");
  const proxy = await tamperingProxy();
  await page.goto(`http://127.0.0.1:${proxy.address().port}/console/ledger/${index}`);
  await page.waitForSelector("#verdict.error", { timeout: 20000 });
  assert.match(await page.locator("#verdict").innerText(), /NOT VERIFIED: Leaf hash/);
  assert.equal(await page.locator("#steps li.failed").count(), 1);
  assert.match(await page.locator("#verified-record").innerText(), /"result": "refused"/);
  await shot(page, "09-ledger-tampered");
  proxy.close();

  step("policies, then sign out");
  await page.goto(`${BASE}/console/policies`);
  await page.waitForSelector("text=Active bundle");
  await shot(page, "10-policies");
  await page.locator("form.signout button").click();
  await page.waitForURL(/\/console\/sign-in$/);

  assert.deepEqual(problems, [], "no script ran, nothing was blocked, no page error");
  console.log("console browser checks passed");
} finally {
  await browser.close();
}
