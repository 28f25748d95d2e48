"""Measurement windows of crates/server/benches/replicas.sh, and their report.

  replicas.py measure --label L --secs S --lua decide.lua --store LEDGER --out R.json PORT:PID...
  replicas.py report R1.json R2.json ...

`measure` runs one wrk per server (the 50 connections spread over them) for S seconds and, in
the same window:

- CPU time (user + sys, /proc/PID/stat) of the servers, of the PostgreSQL backends serving the
  ledger's database (pg_stat_activity), of every postgres process, of wrk, and of the machine;
- requests sent to the database: client-to-server TCP data segments of the servers'
  connections to PostgreSQL (`ss -ti`: one a request the client flushed), by connection
  (turn lock, ledger writer, ledger reader); and group commits, counted after the window as
  the distinct commit times of the entries written in it;
- in the first half, every 50 ms, the latest signed checkpoint against the log's end, read
  from the store: checkpoint lag in entries and in time;
- in the second half, every 100 ms, GET /v1/ledger/proofs/inclusion for the newest entry of
  one of the servers (in turn), timed: the server signs a checkpoint covering the entry when
  none does, as for any client. (The proofs' checkpoints would shorten the lag, hence the
  halves.)

The latency percentiles of several wrk processes are those of the sum of their histograms
(each wrk writes its histogram, microseconds and counts), so they are exact, not averaged.
`report` prints the windows as a table, with ratios against the first.
"""

import argparse
import http.client
import json
import os
import re
import sqlite3
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds of a live process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def processes(name):
    """CPU seconds of every process called `name`, by pid."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != name:
                    continue
        except OSError:
            continue
        seconds = cpu_seconds(entry)
        if seconds is not None:
            found[int(entry)] = seconds
    return found


def grown(before, after):
    """CPU seconds spent between two snapshots, by processes alive at the second (a process
    started in between counts from zero)."""
    return sum(s - before.get(pid, 0.0) for pid, s in after.items())


def machine():
    """(busy, total) jiffies of all cores since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Psql:
    """One psql session, fed a query at a time: sampling costs no new connection."""

    def __init__(self, url):
        self.proc = subprocess.Popen(
            ["psql", "-X", "-A", "-t", "-q", "-F", "|", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.pid = int(self.rows("SELECT pg_backend_pid()")[0][0])

    def rows(self, sql):
        self.proc.stdin.write(sql + ";\n\\echo ~end~\n")
        self.proc.stdin.flush()
        out = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"psql ended while answering: {sql}")
            line = line.rstrip("\n")
            if line == "~end~":
                return out
            if line:
                out.append(line.split("|"))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


# The log's end and the latest signed checkpoint, in SQL that SQLite and PostgreSQL both read.
END_SQL = """SELECT (SELECT idx FROM entries ORDER BY idx DESC LIMIT 1),
 (SELECT time FROM entries ORDER BY idx DESC LIMIT 1),
 (SELECT size FROM checkpoints ORDER BY seq DESC LIMIT 1),
 (SELECT time FROM checkpoints ORDER BY seq DESC LIMIT 1)"""


class Store:
    """The ledger's store, read beside the servers."""

    def __init__(self, location):
        self.postgres = location.startswith(("postgres://", "postgresql://"))
        if self.postgres:
            self.psql = Psql(location)
            self.port = re.search(r"@[^/:]*:(\d+)", location)
            self.port = int(self.port.group(1)) if self.port else 5432
        else:
            self.db = sqlite3.connect(f"file:{location}?mode=ro", uri=True)

    def end(self):
        """(log size, time of its last commit, latest checkpoint's size, its time), times in µs."""
        if self.postgres:
            row = self.psql.rows(END_SQL)[0]
        else:
            row = self.db.execute(END_SQL).fetchone()
        last, last_time, size, signed = (None if v in ("", None) else int(v) for v in row)
        return (0 if last is None else last + 1), last_time, size or 0, signed

    def backends(self):
        """The servers' sessions with the ledger's database: pid by client port, and each
        session's start and last statement."""
        if not self.postgres:
            return {}
        rows = self.psql.rows(
            "SELECT client_port, pid, extract(epoch FROM backend_start), "
            "replace(left(query, 40), '|', ' ') FROM pg_stat_activity "
            f"WHERE datname = current_database() AND pid <> {self.psql.pid} "
            "AND client_port IS NOT NULL"
        )
        return {int(r[0]): (int(r[1]), float(r[2]), r[3]) for r in rows}

    def others(self):
        """Transactions of the server's other databases (PostgreSQL's statistics trail them by
        up to a second): a check that nothing else used the database server meanwhile."""
        if not self.postgres:
            return 0
        rows = self.psql.rows(
            "SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database "
            "WHERE datname IS NOT NULL AND datname <> current_database()"
        )
        return int(rows[0][0])

    def commits(self, start, end):
        """Group commits that wrote entries [start, end): the entries of one commit share its
        time."""
        sql = f"SELECT count(DISTINCT time) FROM entries WHERE idx >= {start} AND idx < {end}"
        if self.postgres:
            return int(self.psql.rows(sql)[0][0])
        return self.db.execute(sql).fetchone()[0]


def segments(store, pids):
    """Client-to-server TCP data segments of each connection from `pids` to the database:
    (server pid, client port) -> segments."""
    if not store.postgres:
        return {}
    out = subprocess.run(
        ["ss", "-tinpH", "state", "established", f"( dport = :{store.port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {}
    owner = None
    for line in out.splitlines():
        if not line.startswith(("\t", " ")):
            m = re.search(r'users:\(\("[^"]*",pid=(\d+)', line)
            local = line.split()[2]
            owner = (int(m.group(1)), int(local.rsplit(":", 1)[1])) if m else None
        elif owner and owner[0] in pids:
            m = re.search(r"data_segs_out:(\d+)", line)
            found[owner] = int(m.group(1)) if m else 0
    return found


def snapshot(store, pids):
    """The counters a window is measured by, read at its start and at its end."""
    pg_all = processes("postgres")
    backends = store.backends()
    busy, total = machine()
    return {
        "own": {pid: cpu_seconds(pid) or 0.0 for pid in pids},
        "pg_all": pg_all,
        "backends": backends,
        "pg_ours": {pid: pg_all.get(pid, 0.0) for pid, _, _ in backends.values()},
        "segs": segments(store, pids),
        "others": store.others(),
        "size": store.end()[0],
        "busy": busy,
        "total": total,
    }


def roles(backends, connections):
    """Each server connection's part: the turn lock (its statements are advisory locks), then
    the ledger's writer and reader, which the server opens in that order."""
    by_server = {}
    for pid, port in connections:
        if port in backends:
            by_server.setdefault(pid, []).append((port, backends[port]))
    named = {}
    for pid, conns in by_server.items():
        rest = []
        for port, (_, _, query) in conns:
            if "advisory" in query:
                named[(pid, port)] = "turn"
            else:
                rest.append((port, backends[port][1]))
        for (port, _), role in zip(sorted(rest, key=lambda c: c[1]), ("writer", "reader")):
            named[(pid, port)] = role
    return named


def percentile(histogram, p):
    """The smallest latency (µs) with at least p % of the requests at or below it."""
    total = sum(histogram.values())
    want = total * p / 100
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= want:
            return value
    return 0


def wrk_result(path):
    text = open(path).read()
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)\b", text)
    requests = int(m.group(1))
    seconds = float(m.group(2)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(3)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "requests": requests,
        "seconds": seconds,
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


def get(conn, path):
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def measure(args):
    servers = [tuple(int(x) for x in s.split(":")) for s in args.servers]
    pids = {pid for _, pid in servers}
    store = Store(args.store)
    probes = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for port, _ in servers]
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]

    before = snapshot(store, pids)

    # One wrk per server; the connections spread evenly (the first ones take the remainder).
    n = len(servers)
    runs = []
    t0 = time.monotonic()
    for i, (port, _) in enumerate(servers):
        conns = args.connections // n + (1 if i < args.connections % n else 0)
        out = f"{args.out}.wrk{i}"
        env = dict(os.environ, WRK_HISTOGRAM=f"{out}.hist")
        with open(out, "w") as stdout:
            proc = subprocess.Popen(
                ["wrk", "-t1", f"-c{conns}", f"-d{args.secs}s", "--latency", "-s", args.lua,
                 f"http://127.0.0.1:{port}/v1/decide"],
                stdout=stdout,
                env=env,
            )
        runs.append((proc, out, conns))

    lag = []
    proofs = []
    proof_failures = []
    probe = 0
    half = t0 + args.secs / 2
    end = t0 + args.secs
    while time.monotonic() < end - 0.2:
        now = time.monotonic()
        if now < half:
            size, last_time, signed_size, signed_time = store.end()
            if signed_time is not None and last_time is not None:
                lag.append((size - signed_size, (last_time - signed_time) / 1000))
            time.sleep(max(0.0, now + 0.05 - time.monotonic()))
        else:
            conn = probes[probe % n]
            probe += 1
            try:
                status, body = get(conn, "/v1/ledger/entries?start=0&end=0")
                size = json.loads(body)["size"] if status == 200 else 0
                if size > 0:
                    started = time.perf_counter()
                    status, body = get(conn, f"/v1/ledger/proofs/inclusion?index={size - 1}")
                    took = (time.perf_counter() - started) * 1000
                    if status == 200:
                        proofs.append(took)
                    else:
                        proof_failures.append(f"{status} {body[:200]!r}")
            except (OSError, http.client.HTTPException) as e:
                proof_failures.append(repr(e))
                conn.close()
            time.sleep(max(0.0, now + 0.1 - time.monotonic()))

    # The window ends when the load does (wrk then takes a while to write its histogram).
    time.sleep(max(0.0, end + 0.1 - time.monotonic()))
    after = snapshot(store, pids)
    wrk_cpu = sum(cpu_seconds(proc.pid) or 0.0 for proc, _, _ in runs)
    for proc, _, _ in runs:
        proc.wait()

    wrks = [wrk_result(out) for _, out, _ in runs]
    histogram = {}
    for _, out, _ in runs:
        with open(f"{out}.hist") as f:
            for line in f:
                value, count = (int(float(v)) for v in line.split())
                histogram[value] = histogram.get(value, 0) + count
    decisions = sum(w["requests"] - w["non2xx"] for w in wrks)
    named = roles(after["backends"], after["segs"])
    by_role = {}
    for key, count in after["segs"].items():
        role = named.get(key, "other")
        by_role[role] = by_role.get(role, 0) + count - before["segs"].get(key, 0)

    result = {
        "label": args.label,
        "replicas": n,
        "postgres": store.postgres,
        "secs": args.secs,
        "connections": [c for _, _, c in runs],
        "load_before": load,
        "decisions": decisions,
        "rate": sum((w["requests"] - w["non2xx"]) / w["seconds"] for w in wrks),
        "non2xx": sum(w["non2xx"] for w in wrks),
        "socket_errors": sum(w["socket_errors"] for w in wrks),
        "p50_us": percentile(histogram, 50),
        "p99_us": percentile(histogram, 99),
        "ledger_entries": after["size"] - before["size"],
        "cpu": {
            "servers": sum(after["own"].values()) - sum(before["own"].values()),
            "postgres_backends": grown(before["pg_ours"], after["pg_ours"]),
            "postgres_all": grown(before["pg_all"], after["pg_all"]),
            "wrk": wrk_cpu,
            "machine": (after["busy"] - before["busy"]) / TICK,
            "machine_capacity": (after["total"] - before["total"]) / TICK,
        },
        "db_requests": by_role,
        "group_commits": store.commits(before["size"], after["size"]),
        "other_db_transactions": after["others"] - before["others"],
        "lag_entries": sorted(e for e, _ in lag),
        "lag_ms": sorted(t for _, t in lag),
        "proof_ms": sorted(proofs),
        "proof_failures": proof_failures,
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(summary_line(result))
    if store.postgres:
        store.psql.close()


def at(values, p):
    """The p-th percentile of sorted values (nearest rank), or None."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, round(len(values) * p / 100 + 0.5) - 1))]


def fmt_ms(us):
    return f"{us / 1000:.2f} ms"


def summary_line(r):
    return (f"{r['label']:<26} {r['rate']:9.0f} decisions/s  p50 {fmt_ms(r['p50_us'])}"
            f"  p99 {fmt_ms(r['p99_us'])}  ({r['decisions']} decisions, {r['non2xx']} not 2xx,"
            f" {r['socket_errors']} socket errors)")


# Requests a turn sends to the database: two statements (take the lock, release it), each
# sent unprepared as the client library does (parse, then execute, then an unawaited close).
REQUESTS_PER_TURN = 6


def report(paths):
    results = [json.load(open(p)) for p in paths]
    base = results[0]
    print(f"\n{os.cpu_count()} cores. Per decision: CPU (user + sys) of the servers and of the "
          "database's backends; requests sent to the database by connection.")
    print("| configuration | decisions/s | vs baseline | p50 | p99 | CPU per decision: servers + "
          "database = total | vs baseline | database requests per decision: turn + writer + "
          "reader | decisions per group commit | decisions per turn | inclusion proof p50 / p99 "
          "| checkpoint lag p50 / max |")
    print("|---" * 12 + "|")
    base_cpu = (base["cpu"]["servers"] + base["cpu"]["postgres_backends"]) / base["decisions"]
    for r in results:
        d = max(r["decisions"], 1)
        cpu = r["cpu"]
        server = cpu["servers"] / d * 1e6
        db = cpu["postgres_backends"] / d * 1e6
        req = r["db_requests"]
        cells = [
            r["label"],
            f"{r['rate']:.0f}",
            f"{r['rate'] / base['rate']:.2f}",
            fmt_ms(r["p50_us"]),
            fmt_ms(r["p99_us"]),
            f"{server:.0f} + {db:.0f} = {server + db:.0f} µs",
            f"{(server + db) / 1e6 / base_cpu:.2f}",
        ]
        if r["postgres"]:
            parts = " + ".join(f"{req.get(k, 0) / d:.2f}" for k in ("turn", "writer", "reader"))
            other = f" + {req['other'] / d:.2f} unattributed" if req.get("other") else ""
            cells.append(f"{sum(req.values()) / d:.2f} = {parts}{other}")
        else:
            cells.append("—")
        cells.append(f"{r['ledger_entries'] / max(r['group_commits'], 1):.1f}")
        turns = req.get("turn", 0) / REQUESTS_PER_TURN
        cells.append(f"≈ {d / turns:.0f}" if turns else "—")
        proof = r["proof_ms"]
        cells.append(f"{at(proof, 50):.1f} / {at(proof, 99):.1f} ms ({len(proof)} proofs)"
                     if proof else "—")
        lag_e, lag_t = r["lag_entries"], r["lag_ms"]
        cells.append(f"{at(lag_e, 50)} / {lag_e[-1]} entries, {at(lag_t, 50):.0f} / "
                     f"{lag_t[-1]:.0f} ms" if lag_e else "—")
        print("| " + " | ".join(cells) + " |")
    print("\nEach window, CPU seconds (machine: busy, of its capacity):")
    for r in results:
        c = r["cpu"]
        print(f"  {r['label']}: servers {c['servers']:.2f}, postgres backends "
              f"{c['postgres_backends']:.2f}, all postgres processes {c['postgres_all']:.2f}, wrk "
              f"{c['wrk']:.2f}, machine {c['machine']:.2f} of {c['machine_capacity']:.2f}; load "
              f"before {' '.join(r['load_before'])}; {r['decisions']} decisions, "
              f"{r['ledger_entries']} ledger entries in {r['group_commits']} group commits; "
              f"{r['non2xx']} answers not 2xx, {r['socket_errors']} socket errors; other "
              f"databases' transactions {r['other_db_transactions']}")
        if r["proof_failures"]:
            print(f"    inclusion proofs failed: {len(r['proof_failures'])}, e.g. "
                  f"{r['proof_failures'][0]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--label", required=True)
    m.add_argument("--secs", type=int, required=True)
    m.add_argument("--lua", required=True)
    m.add_argument("--store", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--connections", type=int, default=50)
    m.add_argument("servers", nargs="+", help="PORT:PID of each server")
    r = sub.add_parser("report")
    r.add_argument("results", nargs="+")
    args = parser.parse_args()
    if args.command == "measure":
        measure(args)
    else:
        report(args.results)


if __name__ == "__main__":
    sys.exit(main())
