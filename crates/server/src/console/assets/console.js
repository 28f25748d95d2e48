// The console's only script. It never writes HTML: everything from the server is set as
// textContent, so a held call's data (which an attacker may have written) stays text.
"use strict";

function left(deadline) {
  const ms = Date.parse(deadline) - Date.now();
  if (Number.isNaN(ms)) return "";
  if (ms <= 0) return "deadline passed";
  const s = Math.floor(ms / 1000);
  const m = Math.floor(s / 60);
  return m > 0 ? `${m} min ${s % 60} s left` : `${s} s left`;
}

function tick() {
  for (const el of document.querySelectorAll(".countdown[data-deadline]")) {
    el.textContent = left(el.dataset.deadline);
  }
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function renderQueue(list) {
  const body = document.querySelector("#queue tbody");
  if (!body) return;
  const rows = list.map((p) => {
    const tr = document.createElement("tr");
    cell(tr, p.held_at);
    const due = cell(tr, "");
    const span = document.createElement("span");
    span.className = "countdown";
    span.dataset.deadline = p.deadline;
    due.appendChild(span);
    const link = document.createElement("a");
    link.href = p.url;
    link.textContent = p.tool;
    cell(tr, "").appendChild(link);
    cell(tr, p.agent);
    cell(tr, p.root);
    cell(tr, p.policies.join(", "));
    return tr;
  });
  body.replaceChildren(...rows);
  const status = document.getElementById("queue-status");
  if (status) status.textContent = `${list.length} call(s) held, oldest first.`;
  tick();
}

function live() {
  const queue = document.querySelector("#queue[data-live]");
  const call = document.querySelector("#call-status[data-approval]");
  if (!queue && !call) return;
  const events = new EventSource("/console/events" + (queue ? location.search : ""));
  events.addEventListener("queue", (e) => {
    let list;
    try {
      list = JSON.parse(e.data);
    } catch {
      return;
    }
    if (queue) renderQueue(list);
    if (call && !list.some((p) => p.approval_id === call.dataset.approval)) {
      call.textContent = "This call is no longer held: it was answered, expired or withdrawn.";
      call.className = "error";
      for (const b of document.querySelectorAll(".answers button")) b.disabled = true;
    }
  });
}


// ---- in-browser verification of a ledger entry (RFC 9162 inclusion, C2SP signed note) ----

const enc = new TextEncoder();

function b64(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function unb64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function same(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

// Each step is shown as it is checked; the first failure stops the verification.
class Steps {
  constructor(list) {
    this.list = list;
    list.replaceChildren();
  }
  add(ok, title, detail) {
    const li = document.createElement("li");
    li.className = ok ? "step ok" : "step failed";
    const head = document.createElement("strong");
    head.textContent = (ok ? "✓ " : "✗ ") + title;
    li.appendChild(head);
    if (detail) {
      const p = document.createElement("div");
      p.className = "detail";
      p.textContent = detail;
      li.appendChild(p);
    }
    this.list.appendChild(li);
    if (!ok) throw new Error(title);
  }
}

// RFC 9162 §2.1.3.2: the root from a leaf hash and its audit path.
async function rootFromPath(index, size, leaf, path, steps) {
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (let i = 0; i < path.length; i++) {
    const p = path[i];
    if (sn === 0) steps.add(false, "Audit path", "the path is longer than the tree allows");
    let side;
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(concat(Uint8Array.of(1), p, r));
      side = "left";
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = await sha256(concat(Uint8Array.of(1), r, p));
      side = "right";
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
    steps.add(true, `Path step ${i + 1}: sibling on the ${side}`, `sibling ${b64(p)} → node ${b64(r)}`);
  }
  if (sn !== 0) steps.add(false, "Audit path", "the path is shorter than the tree needs");
  return r;
}

// <name>+<8 hex digits>+<base64(0x01 ‖ key)>: the base64 part may itself hold '+'.
function parseVerifierKey(text, steps) {
  const t = text.trim();
  const i = t.indexOf("+");
  const j = t.indexOf("+", i + 1);
  if (i <= 0 || j !== i + 9) steps.add(false, "Verifier key", "expected <name>+<8 hex digits>+<base64 key>");
  let key;
  try {
    key = unb64(t.slice(j + 1));
  } catch {
    steps.add(false, "Verifier key", "the key is not base64");
  }
  if (key.length !== 33 || key[0] !== 1) steps.add(false, "Verifier key", "not an Ed25519 verifier key");
  return { name: t.slice(0, i), id: t.slice(i + 1, j), pub: key.slice(1) };
}

async function verifyEntry(form) {
  const steps = new Steps(document.getElementById("steps"));
  const verdict = document.getElementById("verdict");
  verdict.className = "";
  verdict.textContent = "Verifying…";
  const index = Number(form.dataset.index);
  try {
    const resp = await fetch(`/console/ledger/${index}/proof.json`, { credentials: "same-origin" });
    const proof = await resp.json();
    if (!resp.ok) steps.add(false, "Fetch the proof", proof.error || `HTTP ${resp.status}`);
    steps.add(true, "Fetched the entry, its proof and the signed checkpoint", `tree of ${proof.tree_size} entries`);

    const data = unb64(proof.data);
    let record;
    try {
      record = JSON.stringify(JSON.parse(new TextDecoder().decode(data)), null, 2);
    } catch {
      record = "(the entry's bytes are not JSON)";
    }
    document.getElementById("verified-record").textContent = record;
    const leaf = await sha256(concat(Uint8Array.of(0), data));
    steps.add(same(leaf, unb64(proof.leaf_hash)), "Leaf hash = SHA-256(0x00 ‖ entry bytes)",
      `computed ${b64(leaf)}, the log's ${proof.leaf_hash}`);

    const root = await rootFromPath(index, proof.tree_size, leaf, proof.path.map(unb64), steps);
    steps.add(same(root, unb64(proof.root_hash)), "Root recomputed from the path",
      `computed ${b64(root)}`);

    const note = proof.checkpoint || "";
    const split = note.indexOf("\n\n");
    if (split < 0) steps.add(false, "Signed checkpoint", "not a signed note");
    const text = note.slice(0, split + 1);
    const [origin, size, rootLine] = text.split("\n");
    steps.add(Number(size) === proof.tree_size && rootLine === b64(root),
      "The checkpoint commits to this tree", `origin ${origin}, size ${size}, root ${rootLine}`);

    const vkey = parseVerifierKey(document.getElementById("vkey").value, steps);
    const id = (await sha256(concat(enc.encode(vkey.name), Uint8Array.of(10, 1), vkey.pub))).slice(0, 4);
    const idHex = Array.from(id, (b) => b.toString(16).padStart(2, "0")).join("");
    steps.add(idHex === vkey.id && vkey.name === origin, "Verifier key names the log and matches its id",
      `${vkey.name}, key id ${idHex}`);

    const lines = note.slice(split + 2).split("\n").filter((l) => l.startsWith("— "));
    let sig = null;
    for (const line of lines) {
      const [name, body] = line.slice(2).split(" ");
      const bytes = unb64(body);
      if (name === vkey.name && same(bytes.slice(0, 4), id)) sig = bytes.slice(4);
    }
    if (!sig) steps.add(false, "Checkpoint signature", "no signature by this key");
    const key = await crypto.subtle.importKey("raw", vkey.pub, { name: "Ed25519" }, false, ["verify"]);
    const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, sig, enc.encode(text));
    steps.add(ok, "Ed25519 signature over the checkpoint verifies", `${sig.length}-byte signature`);

    verdict.textContent = `Verified: entry ${index} is in the log of ${proof.tree_size} entries signed by ${vkey.name}.`;
    verdict.className = "verified";
  } catch (e) {
    verdict.textContent = `NOT VERIFIED: ${e.message}`;
    verdict.className = "error";
  }
}

function verification() {
  const form = document.getElementById("verify");
  if (!form) return;
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    verifyEntry(form);
  });
  verifyEntry(form);
}

document.addEventListener("DOMContentLoaded", () => {
  tick();
  setInterval(tick, 1000);
  live();
  verification();
});
