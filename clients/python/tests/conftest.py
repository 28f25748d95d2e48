"""A real `truststack serve` per test module, with the GTG-1002 scenario's catalog and policies
and credentials minted by the real issuer (`truststack identity`); the scenario's tools, for the
framework integrations to guard.

The binary is `$TRUSTSTACK_BIN` (the Rust test that runs this suite sets it), else the debug
build under `target/`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import httpx
import pytest

if TYPE_CHECKING:
    from truststack import Client

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "clients" / "python" / "src"))
SCENARIO = ROOT / "examples" / "gtg1002"
TRUST_DOMAIN = "acme.example"
OPERATOR = "user:operator@acme.example"
ONCALL = "user:oncall@acme.example"


def binary() -> Path:
    explicit = os.environ.get("TRUSTSTACK_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = target / "debug" / "truststack"
    if not path.exists():
        pytest.fail(f"{path} is missing: build it with `cargo build -p truststack-cli`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    dir: Path
    process: subprocess.Popen[bytes]
    issuer: Path

    def identity(self, *args: str) -> str:
        """Runs `truststack identity ARGS` against this server's issuer; the token."""
        out = subprocess.run(
            [str(binary()), "identity", *args],
            env={**os.environ, "TRUSTSTACK_ISSUER_DIR": str(self.issuer)},
            capture_output=True,
            check=True,
        )
        return out.stdout.decode().strip()

    def agent(self, name: str, tools: str = "*", owner: str = OPERATOR) -> str:
        return self.identity("issue", "--agent", name, "--owner", owner, "--tools", tools)

    def human(self, user: str, roles: str = "approver", groups: str = "security-oncall") -> str:
        return self.identity("issue", "--user", user, "--roles", roles, "--groups", groups)

    def ledger(self) -> list[dict]:
        r = httpx.get(f"{self.url}/v1/ledger/entries", params={"start": 0, "end": 100000})
        r.raise_for_status()
        return r.json()["entries"]

    def observed_calls(self) -> set[str | None]:
        """The call ids the ledger's observations are tied to."""
        return {
            e["record"]["observation"].get("call_id")
            for e in self.ledger()
            if e["record"].get("kind") == "observation"
        }


def start(tmp: Path, extra_env: dict[str, str] | None = None, config_extra: str = "") -> Server:
    issuer = tmp / "issuer"
    subprocess.run(
        [str(binary()), "identity", "init", "--trust-domain", TRUST_DOMAIN],
        env={**os.environ, "TRUSTSTACK_ISSUER_DIR": str(issuer)},
        capture_output=True,
        check=True,
    )
    port = free_port()
    config = tmp / "truststack.toml"
    config.write_text(
        f"""listen = "127.0.0.1:{port}"
policies = ["{SCENARIO}/policies/seed.tsp", "{SCENARIO}/policies/delegation-root.tsp"]
catalog = "{SCENARIO}/catalog.toml"
issuer_dir = "issuer"
trust_domain = "{TRUST_DOMAIN}"
request_timeout = "30s"
{config_extra}
[approver_groups]
security-oncall = ["{ONCALL}", "{OPERATOR}"]

[ledger]
path = "ledger.db"
"""
    )
    log = open(tmp / "serve.log", "wb")
    process = subprocess.Popen(
        [str(binary()), "serve", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(extra_env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"truststack serve exited: {(tmp / 'serve.log').read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("truststack serve did not become healthy in 30s")
        time.sleep(0.05)
    return Server(url=url, dir=tmp, process=process, issuer=issuer)


def stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A fresh server per test: every test starts from an empty ledger and empty monitors."""
    s = start(tmp_path)
    yield s
    stop(s)


def first_held(approver: Client, seconds: float) -> dict[str, Any] | None:
    """The first held call ``approver`` sees within ``seconds``, or ``None``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pending = approver.approvals()
        if pending:
            return pending[0]
        time.sleep(0.02)
    return None


# What the scenario's tools ran: a tool body appends here only when a guard let it run.
RAN: list[str] = []


def nmap_scan(target: str) -> str:
    """Network scan of a host or range."""
    RAN.append(f"nmap_scan {target}")
    return f"{target}: 22/tcp open"


def code_review(repo: str) -> str:
    """Static analysis of a repository."""
    RAN.append(f"code_review {repo}")
    return f"{repo}: CVE-2026-0001 in the upload handler"


def exploit_runner(target: str, payload: str) -> str:
    """Runs a payload against a target."""
    RAN.append(f"exploit_runner {target}")
    return f"{target}: shell as svc-billing"


def prod_db_query(sql: str) -> str:
    """Read-only query against the production database."""
    RAN.append("prod_db_query")
    return "customers: 48213 rows"


def http_upload(url: str, file: str) -> str:
    """Uploads a file to an external URL."""
    RAN.append(f"http_upload {url}")
    return "uploaded"


# The tools in this order, for a framework's decorator to wrap (`map(tool, CAMPAIGN_TOOLS)`).
CAMPAIGN_TOOLS = (nmap_scan, code_review, exploit_runner, prod_db_query, http_upload)
