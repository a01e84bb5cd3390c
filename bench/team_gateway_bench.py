#!/usr/bin/env python3
"""The team gateway's costs (issue 20): the PostgreSQL store against SQLite, and two instances behind
nginx against one.

    python bench/team_gateway_bench.py            # ~4 min on 2 cores: Markdown tables on stdout
    python bench/team_gateway_bench.py --quick    # smoke run (~1 min)

All on 127.0.0.1, with ``fake_upstream.py`` as the model:

1. a private PostgreSQL cluster (Debian's postgresql; initdb in a temporary directory, run as the
   ``postgres`` user when we are root; ``--database-url`` uses an existing database instead);
2. **store overhead**: one lynkr on SQLite and one on PostgreSQL (``LYNKR_DATABASE_URL``), interleaved
   rounds of the same closed-loop load (tiny non-streaming requests at c=32, each a new session, so
   every answer writes a session, two turns and a ledger row). Per round: each lynkr's CPU per request
   (utime+stime of its process tree, from /proc) and its p50/p99; added p50 is PostgreSQL's minus
   SQLite's in the same round;
3. **scale-out**: one PostgreSQL-backed lynkr addressed directly, against nginx round robin over two
   of them (``examples/nginx-team-gateway.conf``'s proxy settings), same load: requests per second.
   Everything shares the same two cores (load client, nginx, PostgreSQL, the fake upstream), so this
   measures what a second instance costs and gives on one machine, not what a second host would add.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import load
from run_bench import (
    SMALL_ANSWER_TOKENS,
    Target,
    clean_env,
    cpu_seconds,
    expected_text,
    free_port,
    lynkr_env,
    spawn,
    start_fake,
    stop_process,
    tail,
    tiny_body,
    wait_port,
)

LYNKR = os.path.join(os.path.dirname(HERE), "lynkr.py")
PG_BIN_DIRS = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# -- PostgreSQL and nginx --


def as_postgres(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def start_postgres(work: str) -> tuple[str, str]:
    """(database URL, data dir) of a private cluster with a `bench` database."""
    bin_dir = next((d for d in PG_BIN_DIRS if os.path.exists(os.path.join(d, "initdb"))), None)
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql), or pass --database-url")
    pg = os.path.join(work, "pg")
    os.makedirs(pg)
    if os.geteuid() == 0:
        shutil.chown(pg, "postgres")
    data, port = os.path.join(pg, "data"), free_port()
    subprocess.run(
        as_postgres([f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {pg} -c listen_addresses=127.0.0.1 -c max_connections=200"
    subprocess.run(
        as_postgres([f"{bin_dir}/pg_ctl", "-D", data, "-o", opts, "-l", f"{pg}/log", "-w", "start"]),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-qc", "CREATE DATABASE bench"],
        check=True,
        capture_output=True,
    )
    return f"postgresql://postgres@127.0.0.1:{port}/bench", f"{bin_dir}|{data}"


def stop_postgres(handle: str) -> None:
    bin_dir, data = handle.split("|")
    subprocess.run(as_postgres([f"{bin_dir}/pg_ctl", "-D", data, "-m", "fast", "stop"]), capture_output=True)


def start_nginx(work: str, ports: list[int]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    prefix = os.path.join(work, "nginx")
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in ports)
    conf = f"""
worker_processes 1;
error_log {prefix}/logs/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    upstream lynkr {{
{servers}        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 64m;
        location / {{
            proxy_pass http://lynkr;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 900s;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""
    path = os.path.join(prefix, "nginx.conf")
    with open(path, "w") as fh:
        fh.write(conf)
    proc = spawn(
        ["nginx", "-p", prefix, "-c", path, "-g", "daemon off;"], clean_env(), prefix, f"{prefix}/out.log"
    )
    wait_port(port, 10, proc)
    return proc, port


# -- lynkr --


def start_lynkr(work: str, name: str, fake_port: int, **extra: str) -> Target:
    port = free_port()
    env, ws = lynkr_env(work, fake_port, port, "warning", name, **extra)  # run_bench's lynkr, on its port
    t = Target(name, name)
    t.logfile = os.path.join(work, f"{name}.log")
    t.proc = spawn([sys.executable, LYNKR], env, ws, t.logfile)
    try:
        t.startup_s = wait_port(port, 30, t.proc)
    except RuntimeError as exc:
        raise SystemExit(f"{name} did not start: {exc}: {tail(t.logfile)}") from None
    t.url = f"http://127.0.0.1:{port}/v1/messages"
    return t


BODY = json.dumps(tiny_body(False), separators=(",", ":")).encode()
EXPECT = expected_text(SMALL_ANSWER_TOKENS)


async def burst(url: str, pids: list[int], concurrency: int, count: int, duration_s: float) -> dict[str, Any]:
    await load.run_load(
        url, BODY, concurrency=concurrency, count=concurrency * 4, duration_s=0.5, keep_bodies=0
    )  # warm-up
    cpu0 = cpu_seconds(pids)
    res = await load.run_load(
        url,
        BODY,
        concurrency=concurrency,
        count=count,
        duration_s=duration_s,
        expect_text=EXPECT,
        timeout_s=60,
    )
    cpu = cpu_seconds(pids) - cpu0
    s = res.summary()
    if s["errors"] or s["invalid"]:
        raise SystemExit(f"{url}: {s['errors']} errors, {s['invalid']} invalid: {s['first_error']}")
    return {**s, "cpu_ms_per_req": 1000 * cpu / max(res.ok, 1), "latencies": sorted(res.latencies)}


def p(values: list[float], q: float) -> float:
    return load.pct(values, q) * 1000


async def run(args: argparse.Namespace) -> int:
    work = tempfile.mkdtemp(prefix="lynkr-team-bench-")
    if os.geteuid() == 0:
        os.chmod(work, 0o755)
    pg_handle = ""
    started: list[Any] = []
    try:
        fake, fake_port = start_fake(work, argparse.Namespace(max_runtime_s=3600))
        started.append(fake)
        url = args.database_url
        if not url:
            url, pg_handle = start_postgres(work)
        log(f"database {url}")
        rounds, count, duration = (2, 1500, 2.0) if args.quick else (args.rounds, 6000, 5.0)
        c = args.concurrency

        # 2. store overhead
        sqlite = start_lynkr(work, "lynkr-sqlite", fake_port)
        pg = start_lynkr(work, "lynkr-postgres", fake_port, LYNKR_DATABASE_URL=url)
        started += [sqlite, pg]
        per: dict[str, list[dict[str, Any]]] = {"sqlite": [], "postgres": []}
        for rnd in range(rounds):
            order = [("sqlite", sqlite), ("postgres", pg)]
            for label, target in order if rnd % 2 == 0 else order[::-1]:
                b = await burst(target.url, target.pids(), c, count, duration)
                per[label].append(b)
                log(f"round {rnd + 1} {label}: {b['rps']:.0f} rps, p50 {p(b['latencies'], 50):.2f} ms")
        sqlite.stop()
        pg.stop()

        # 3. scale-out
        second = start_lynkr(work, "lynkr-postgres-2", fake_port, LYNKR_DATABASE_URL=url)
        first = start_lynkr(work, "lynkr-postgres-1", fake_port, LYNKR_DATABASE_URL=url)
        started += [first, second]
        nginx, nginx_port = start_nginx(
            work, [int(first.url.split(":")[2].split("/")[0]), int(second.url.split(":")[2].split("/")[0])]
        )
        started.append(nginx)
        lb_url = f"http://127.0.0.1:{nginx_port}/v1/messages"
        scale: dict[str, list[dict[str, Any]]] = {"one": [], "two": []}
        for rnd in range(rounds):
            order = [("one", first.url, first.pids()), ("two", lb_url, first.pids() + second.pids())]
            for label, target_url, pids in order if rnd % 2 == 0 else order[::-1]:
                b = await burst(target_url, pids, c, count, duration)
                scale[label].append(b)
                log(f"round {rnd + 1} {label} instance(s): {b['rps']:.0f} rps")

        print(report(per, scale, c, rounds, args))
        return 0
    finally:
        for proc in started:
            if isinstance(proc, Target):
                proc.stop()
            else:
                stop_process(proc)
        if pg_handle:
            stop_postgres(pg_handle)
        shutil.rmtree(work, ignore_errors=True)


def report(
    per: dict[str, list[dict[str, Any]]],
    scale: dict[str, list[dict[str, Any]]],
    c: int,
    rounds: int,
    args: argparse.Namespace,
) -> str:
    med = statistics.median
    lines = [
        f"### PostgreSQL store against SQLite (tiny non-streaming requests, c={c}, {rounds} interleaved rounds)",
        "",
        "| store | req/s | lynkr CPU ms/req | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for label in ("sqlite", "postgres"):
        runs = per[label]
        lines.append(
            f"| {label} | {med(r['rps'] for r in runs):.0f} | {med(r['cpu_ms_per_req'] for r in runs):.2f} | "
            f"{med(p(r['latencies'], 50) for r in runs):.2f} | {med(p(r['latencies'], 99) for r in runs):.2f} |"
        )
    added = [
        p(b["latencies"], 50) - p(a["latencies"], 50)
        for a, b in zip(per["sqlite"], per["postgres"], strict=True)
    ]
    cpu = [
        b["cpu_ms_per_req"] - a["cpu_ms_per_req"] for a, b in zip(per["sqlite"], per["postgres"], strict=True)
    ]
    lines += [
        "",
        f"PostgreSQL minus SQLite, per round: added p50 {', '.join(f'{x:+.2f}' for x in added)} ms; "
        f"CPU {', '.join(f'{x:+.3f}' for x in cpu)} ms/req (lynkr's own process; PostgreSQL's server CPU is not in it).",
        "",
        f"### Two instances behind nginx against one (PostgreSQL store, c={c})",
        "",
        "| target | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for label, name in (("one", "one lynkr, direct"), ("two", "nginx -> two lynkr")):
        runs = scale[label]
        lines.append(
            f"| {name} | {med(r['rps'] for r in runs):.0f} | {med(p(r['latencies'], 50) for r in runs):.2f} | "
            f"{med(p(r['latencies'], 99) for r in runs):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument(
        "--database-url", default="", help="an existing empty database instead of a private cluster"
    )
    return asyncio.run(run(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
