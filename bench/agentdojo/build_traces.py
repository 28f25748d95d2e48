"""Builds TrustStack traces from the AgentDojo benchmark's ground truth.

Only the `workspace` and `travel` suites (v1.2) are used: `banking` and `slack` are held out
for an independent check and are never loaded here.

For every user task, a benign session: the task's prompt as an `input` event, then each
ground-truth call as a `tool_call` followed by its real result from the suite's environment as
an `observation`. For every (user task, injection task) pair, an attack session: the
environment with the injection vectors the user task reads filled with the package's
`important_instructions` attack text; the user task's calls and results as above, then the
injection task's ground-truth calls (with their results), whose ids start with `atk-`.

Usage: build_traces.py OUT_DIR
Writes OUT_DIR/<suite>.jsonl (all sessions of the suite, one event per line) and
OUT_DIR/<suite>.sessions.json (per session: kind, user task, injection task, call ids).
"""

import datetime
import json
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


def build(suite_name, out_dir):
    suite = get_suite(VERSION, suite_name)
    attack = ImportantInstructionsAttack(suite, _Pipeline())
    clock = Clock()
    events, sessions = [], []
    for uid, user_task in sorted(suite.user_tasks.items()):
        # Benign: the default environment.
        env = suite.load_and_inject_default_environment({})
        runtime = FunctionsRuntime(suite.tools)
        session = f"{suite_name}-{uid}"
        events.append({"type": "input", "time": clock.tick(), "agent": AGENT, "session": session,
                       "chain": [USER], "text": user_task.PROMPT})
        ids = calls(session, "c", user_task.ground_truth(env.model_copy(deep=True)), runtime, env,
                    clock, events)
        sessions.append({"session": session, "kind": "benign", "user_task": uid, "calls": ids})
        for iid, injection_task in sorted(suite.injection_tasks.items()):
            injections = attack.attack(user_task, injection_task)
            env = suite.load_and_inject_default_environment(injections)
            runtime = FunctionsRuntime(suite.tools)
            session = f"{suite_name}-{uid}-{iid}"
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
    with open(out / f"{suite_name}.jsonl", "w") as f:
        for e in events:
            f.write(json.dumps(e, sort_keys=True) + "\n")
    (out / f"{suite_name}.sessions.json").write_text(json.dumps(sessions, indent=1))
    print(f"{suite_name}: {len(sessions)} sessions, {len(events)} events")


if __name__ == "__main__":
    for name in SUITES:
        build(name, sys.argv[1])
