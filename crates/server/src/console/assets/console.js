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

document.addEventListener("DOMContentLoaded", () => {
  tick();
  setInterval(tick, 1000);
  live();
});
