#!/usr/bin/env python3
"""What the dashboard's bookkeeping costs per request, and what its JSON routes cost to build (issue 19).

    python bench/dashboard_bench.py

Feeds Dashboard.start/finish 20,000 Claude-Code-like model calls in-process (process CPU time), then
times the two routes the page polls every two seconds, series() (60 minutes) and requests() (500 kept).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lynkr

N = 20_000


def request(i: int) -> lynkr.Request:
    req = lynkr.Request("POST", "/v1/messages", {}, {}, b"", "127.0.0.1:1", request_id=f"req_{i}")
    req.route = "/v1/messages"
    req.log.update(
        session_id=f"sess_{i % 7}",
        provider="databricks",
        upstream_model=f"databricks-claude-sonnet-4-{i % 3}",
        stream=True,
        ttft_ms=12.0,
        usage={"input_tokens": 30_000, "output_tokens": 400, "cache_read_input_tokens": 28_000},
        cache="miss",
        cost_usd=0.0123,
    )
    return req


def main() -> None:
    dashboard = lynkr.Dashboard()
    reqs = [request(i) for i in range(N)]
    t = time.process_time()
    for req in reqs:
        dashboard.start(req)
        dashboard.finish(req, 200, 0.8)
    per_request = (time.process_time() - t) / N * 1e6
    rows = []
    for name, fn in (
        ("series() (60 minutes)", dashboard.series),
        ("requests() (500 kept)", dashboard.requests),
    ):
        t = time.process_time()
        for _ in range(200):
            fn()
        rows.append((name, (time.process_time() - t) / 200 * 1e6))
    print(f"{'what':<40} {'µs CPU':>8}")
    print(f"{'start + finish, per model call':<40} {per_request:>8.2f}")
    for name, us in rows:
        print(f"{name:<40} {us:>8.0f}")


if __name__ == "__main__":
    main()
