#!/usr/bin/env python3
"""Benchmark: the index through the tool route (HTTP), on a copy of the CPython standard library.

    python bench/tool_route_bench.py [--queries 300]

Starts `python lynkr.py` on the copy (LYNKR_TOOLS=*, start-up indexing off), then over HTTP: one
workspace_index_rebuild (the full build), three more (nothing changed: rebuild, project summary,
CLAUDE.md check), and --queries workspace_symbol_search calls with names, prefixes, misses and
subsequences; prints the wall times and the search latency percentiles. Targets (issue 15): the
no-change call within 0.3 s, search p50 within 5 ms. A benchmark, not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

LYNKR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lynkr.py")
WORDS = [
    "urlopen",
    "open",
    "get",
    "__init__",
    "Thread",
    "parse",
    "json",
    "loads",
    "dump",
    "main",
    "run",
    "Path",
    "read",
    "xyzzy",
    "gtd",
    "http",
    "Request",
    "socket",
    "fmt",
    "enc",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix="lynkr-toolroute-")
    tree = os.path.join(scratch, "stdlib")
    shutil.copytree(
        sysconfig.get_paths()["stdlib"], tree, ignore=shutil.ignore_patterns("__pycache__", "site-packages")
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": scratch,
        "WORKSPACE_ROOT": tree,
        "LOG_FORMAT": "json",
        "LYNKR_DATA_DIR": os.path.join(scratch, "state"),
        "LYNKR_TOOLS": "*",
        "LYNKR_INDEX_ON_START": "false",
    }
    proc = subprocess.Popen(
        [sys.executable, LYNKR, "--port", "0"],
        env=env,
        cwd=tree,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = None
        assert proc.stderr is not None
        for line in proc.stderr:
            if '"listening"' in line:
                port = json.loads(line)["port"]
                break
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()

        def call(name: str, body: dict) -> bytes:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            conn.request("POST", f"/v1/tools/{name}", json.dumps(body), {"content-type": "application/json"})
            data = conn.getresponse().read()
            conn.close()
            return data

        t0 = time.monotonic()
        call("workspace_index_rebuild", {})
        print(f"full build through the tool: {time.monotonic() - t0:.2f} s")
        rounds = []
        for _ in range(3):
            t0 = time.monotonic()
            call("workspace_index_rebuild", {})
            rounds.append(time.monotonic() - t0)
        print("no-change call through the tool: " + ", ".join(f"{r:.3f} s" for r in rounds))
        rnd = random.Random(1)
        latencies = []
        for _ in range(args.queries):
            t0 = time.perf_counter()
            call("workspace_symbol_search", {"query": rnd.choice(WORDS)})
            latencies.append((time.perf_counter() - t0) * 1000)
        latencies.sort()
        n = len(latencies)
        print(
            f"workspace_symbol_search through the tool: p50 {latencies[n // 2]:.2f} ms, "
            f"p90 {latencies[int(n * 0.9)]:.2f} ms, p99 {latencies[int(n * 0.99)]:.2f} ms"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
