#!/usr/bin/env python3
"""CPU of the PostgreSQL writer per recorded turn (issue 20): `record_turn` run the way the writer
thread runs it (batches of 16, one commit each), on one connection, with no event loop around it.

    python bench/pg_writer_bench.py postgresql://postgres@127.0.0.1:5432/scratch [--turns 2000]

The database must exist (its tables are created); each run writes new sessions into it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import psycopg

import lynkr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("url")
    ap.add_argument("--turns", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args(argv)
    raw = psycopg.connect(args.url)
    lynkr.apply_pg_migrations(raw)
    db = lynkr.PgConnection(raw)
    run = uuid.uuid4().hex[:8]
    reply = {
        "role": "assistant",
        "content": [{"type": "text", "text": "hello there"}],
        "usage": {"input_tokens": 3},
    }
    turns = [
        lynkr.TurnRecord(
            f"bench-{run}-{i}",
            f"req_{run}_{i}",
            "m",
            [{"role": "user", "content": "Say hello."}],
            reply=reply,
            provider="p",
            cost_usd=0.001,
        )
        for i in range(args.turns)
    ]
    t0, w0 = time.process_time(), time.perf_counter()
    for start in range(0, len(turns), args.batch):
        for turn in turns[start : start + args.batch]:
            lynkr.record_turn(db, turn)
        raw.commit()
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    print(
        f"{args.turns} turns: {1000 * cpu / args.turns:.3f} ms CPU and {1000 * wall / args.turns:.3f} ms wall per turn"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
