"""Builds TrustStack traces from the AgentDojo benchmark's ground truth.

Only the `workspace` and `travel` suites (v1.2) are used: `banking` and `slack` are held out
for an independent check and are never loaded here.

For every user task, a benign session: the task's prompt as an `input` event, then each
ground-truth call as a `tool_call` followed by its real result from the suite's environment as
an `observation`. For every (user task, injection task) pair, an attack session: the
environment with the injection vectors the user task reads filled with the package's
`important_instructions` attack text; the user task's calls and results as above, then the
injection task's ground-truth calls (with their results), whose ids start with `atk-`.

With task grants: the same sessions, each with a `grant` event right after its input, derived
from the USER task alone, as a host could before the run (never from the injection task):
- the tools the grant allows are the tools of the user task's ground-truth calls in the default
  (uninjected) environment;
- an argument of one of those tools is constrained to `one_of` its ground-truth values when, in
  every ground-truth call of that tool, every value of the argument (each element of a list)
  is a string of at least 3 characters, or a number, that the user's prompt states verbatim
  (case and spacing aside); other arguments are left free.

Usage: build_traces.py OUT_DIR
Writes OUT_DIR/<suite>.jsonl (all sessions of the suite, one event per line),
OUT_DIR/<suite>.grants.jsonl (the same with task grants) and OUT_DIR/<suite>.sessions.json
(per session: kind, user task, injection task, call ids).
"""

import datetime
import json
import re
import sys
from pathlib import Path

from agentdojo.attacks.important_instructions_attacks import ImportantInstructionsAttack
from agentdojo.functions_runtime import FunctionsRuntime
from agentdojo.task_suite.load_suites import get_suite
from pydantic import BaseModel

SUITES = ("workspace", "travel")  # never banking or slack: held out
VERSION = "v1.2"
USER = "user:emma.johnson@bluesparrowtech.example"
AGENT = "spiffe://agentdojo.example/agent/assistant"


class _Pipeline:
    """What the attack reads of the attacked pipeline: its model's name."""

    name = "gpt-4o-2024-05-13"


def to_json(value):
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_json(v) for v in value]
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class Clock:
    def __init__(self):
        self.t = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)

    def tick(self):
        self.t += datetime.timedelta(seconds=1)
        return self.t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def calls(session, prefix, gt, runtime, env, clock, out):
    ids = []
    for i, call in enumerate(gt):
        args = to_json(dict(call.args))
        cid = f"{prefix}-{session}-{i}"
        ids.append(cid)
        out.append({"type": "tool_call", "id": cid, "time": clock.tick(), "agent": AGENT,
                    "session": session, "chain": [USER], "tool": call.function, "args": args})
        result, error = runtime.run_function(env, call.function, dict(call.args))
        obs = {"type": "observation", "time": clock.tick(), "agent": AGENT, "session": session,
               "chain": [USER], "call_id": cid, "tool": call.function,
               "result": to_json(result) if error is None else {"error": error}}
        out.append(obs)
    return ids


def stated(value, prompt):
    """Whether the user's prompt (spacing collapsed, lowercased) states `value` verbatim: a
    string of at least 3 characters, or a number standing alone."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        text = " ".join(value.split()).lower()
        return len(text) >= 3 and text in prompt
    if isinstance(value, (int, float)):
        return re.search(rf"(?<![\w.]){re.escape(str(value))}(?![\w])", prompt) is not None
    return False


def task_grant(session, prompt, gt):
    """The grant a host could declare for a user task: see the module documentation."""
    prompt = " ".join(prompt.split()).lower()
    by_tool = {}
    for call in gt:
        by_tool.setdefault(call.function, []).append(to_json(dict(call.args)))
    allow = []
    for tool, calls in sorted(by_tool.items()):
        args = {}
        for name in sorted(set.intersection(*(set(c) for c in calls))):
            values = []
            for c in calls:
                v = c[name]
                values.extend(v if isinstance(v, list) else [v])
            if values and all(stated(v, prompt) for v in values):
                args["/" + name] = {"one_of": sorted(set(values), key=str)}
        allow.append({"tool": tool, "args": args} if args else {"tool": tool})
    return {"type": "grant", "agent": AGENT, "session": session, "chain": [USER],
            "allow": allow}


def build(suite_name, out_dir):
    suite = get_suite(VERSION, suite_name)
    attack = ImportantInstructionsAttack(suite, _Pipeline())
    clock = Clock()
    events, sessions = [], []
    # session -> its grant, inserted after the session's input in the grants trace.
    grants = {}
    for uid, user_task in sorted(suite.user_tasks.items()):
        # Benign: the default environment.
        env = suite.load_and_inject_default_environment({})
        runtime = FunctionsRuntime(suite.tools)
        gt = user_task.ground_truth(env.model_copy(deep=True))
        session = f"{suite_name}-{uid}"
        grants[session] = task_grant(session, user_task.PROMPT, gt)
        events.append({"type": "input", "time": clock.tick(), "agent": AGENT, "session": session,
                       "chain": [USER], "text": user_task.PROMPT})
        ids = calls(session, "c", gt, runtime, env, clock, events)
        sessions.append({"session": session, "kind": "benign", "user_task": uid, "calls": ids})
        for iid, injection_task in sorted(suite.injection_tasks.items()):
            injections = attack.attack(user_task, injection_task)
            env = suite.load_and_inject_default_environment(injections)
            runtime = FunctionsRuntime(suite.tools)
            session = f"{suite_name}-{uid}-{iid}"
            grants[session] = task_grant(session, user_task.PROMPT, gt)
            events.append({"type": "input", "time": clock.tick(), "agent": AGENT,
                           "session": session, "chain": [USER], "text": user_task.PROMPT})
            user_ids = calls(session, "c", user_task.ground_truth(env.model_copy(deep=True)),
                             runtime, env, clock, events)
            attacker_ids = calls(session, "atk", injection_task.ground_truth(
                env.model_copy(deep=True)), runtime, env, clock, events)
            sessions.append({"session": session, "kind": "attack", "user_task": uid,
                             "injection_task": iid, "injected": bool(injections),
                             "calls": user_ids, "attacker_calls": attacker_ids})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{suite_name}.jsonl", "w") as f, \
            open(out / f"{suite_name}.grants.jsonl", "w") as g:
        for e in events:
            line = json.dumps(e, sort_keys=True) + "\n"
            f.write(line)
            g.write(line)
            if e["type"] == "input":
                g.write(json.dumps({**grants[e["session"]], "time": e["time"]},
                                   sort_keys=True) + "\n")
    (out / f"{suite_name}.sessions.json").write_text(json.dumps(sessions, indent=1))
    print(f"{suite_name}: {len(sessions)} sessions, {len(events)} events")


if __name__ == "__main__":
    for name in SUITES:
        build(name, sys.argv[1])
