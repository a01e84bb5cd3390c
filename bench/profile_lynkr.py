#!/usr/bin/env python3
"""Profile lynkr under one benchmark scenario: cProfile (main thread) or py-spy (all threads).

    python bench/profile_lynkr.py --scenario "tiny c=32"                 # cProfile, top 40 by tottime
    python bench/profile_lynkr.py --scenario "cc stream c=32" --sort cumtime
    python bench/profile_lynkr.py --scenario "tiny stream c=32" --py-spy /tmp/lynkr.speedscope.json
    python bench/profile_lynkr.py --scenario "tiny stream c=32" --py-spy /tmp/p.txt --py-spy-format raw  # summary
    python bench/profile_lynkr.py --scenario "cc c=32" --plain --lynkr /tmp/lynkr_variant.py   # A/B a change

Starts the fake upstream and one lynkr (same settings as run_bench.py), warms up, runs the
scenario's load (bounded by --count and --duration), stops lynkr with SIGTERM so the profile is
written, and prints the hottest functions. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import shutil
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import load
import run_bench as rb

# Run inside the profiled interpreter: lynkr's main() under cProfile, stats dumped on exit.
WRAPPER = r"""
import cProfile, runpy, sys
out, path = sys.argv[1], sys.argv[2]
sys.argv = [path]
prof = cProfile.Profile()
prof.enable()
try:
    runpy.run_path(path, run_name="__main__")
except SystemExit:
    pass
finally:
    prof.disable()
    prof.dump_stats(out)
"""


def summarize_raw(path: str, top: int) -> str:
    """Collapsed py-spy stacks -> self and inclusive sample shares per function."""
    self_n: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    with open(path) as fh:
        for line in fh:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(n)
            total += count
            frames = stack.split(";")
            self_n[frames[-1]] = self_n.get(frames[-1], 0) + count
            for f in set(frames):
                incl[f] = incl.get(f, 0) + count
    out = [f"{total} samples", "", "self %  function"]
    out += [f"{100 * c / total:5.1f}  {f}" for f, c in sorted(self_n.items(), key=lambda x: -x[1])[:top]]
    out += ["", "inclusive %  function (lynkr.py only)"]
    out += [
        f"{100 * c / total:5.1f}  {f}"
        for f, c in sorted(incl.items(), key=lambda x: -x[1])
        if "lynkr.py" in f
    ][:top]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--scenario", default="tiny c=32", help="a run_bench.py scenario name, e.g. 'cc stream c=32'"
    )
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--py-spy", default="", help="record with py-spy instead of cProfile, to this file")
    p.add_argument(
        "--py-spy-format", default="speedscope", help="speedscope | raw (collapsed stacks) | flamegraph"
    )
    p.add_argument(
        "--gil", action="store_true", help="py-spy: only samples holding the GIL (drops idle-thread noise)"
    )
    p.add_argument(
        "--plain", action="store_true", help="no profiler: just report req/s and lynkr CPU per request"
    )
    p.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumtime)")
    p.add_argument("--top", type=int, default=40)
    p.add_argument(
        "--delay-ms", type=int, default=0, help="upstream delay between streamed tokens (slow streams)"
    )
    p.add_argument("-c", "--concurrency", type=int, default=0, help="override the scenario's concurrency")
    p.add_argument("--lynkr", default=os.path.join(rb.REPO, "lynkr.py"))
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    sc = next((s for s in rb.scenarios(False) if s.name == args.scenario), None)
    if sc is None:
        print(f"unknown scenario {args.scenario!r}; one of: {', '.join(s.name for s in rb.scenarios(False))}")
        return 2
    if args.concurrency:
        sc.concurrency = args.concurrency
    work = tempfile.mkdtemp(prefix="lynkr-prof-")
    port_file = os.path.join(work, "fake.port")
    fake = rb.spawn(
        [
            sys.executable,
            os.path.join(HERE, "fake_upstream.py"),
            "--port-file",
            port_file,
            "--max-runtime-s",
            "900",
        ],
        rb.clean_env(),
        work,
        os.path.join(work, "fake.log"),
    )
    lynkr = None
    try:
        for _ in range(500):
            if os.path.exists(port_file):
                break
            time.sleep(0.02)
        with open(port_file) as fh:
            fake_port = int(fh.read())
        port = rb.free_port()
        extra = {"MODEL_DEFAULT": f"slow-d{args.delay_ms}"} if args.delay_ms else {}
        env, ws = rb.lynkr_env(work, fake_port, port, args.log_level, "lynkr", **extra)
        prof_out = os.path.join(work, "lynkr.prof")
        if args.plain:
            argv = [sys.executable, args.lynkr]
        elif args.py_spy:
            argv = [
                "py-spy",
                "record",
                "-o",
                args.py_spy,
                "--format",
                args.py_spy_format,
                "--rate",
                "250",
                "--threads",
                *(["--gil"] if args.gil else []),
                "--",
                sys.executable,
                args.lynkr,
            ]
        else:
            argv = [sys.executable, "-c", WRAPPER, prof_out, args.lynkr]
        logfile = os.path.join(work, "lynkr.log")
        lynkr = rb.spawn(argv, env, ws, logfile)
        rb.wait_port(port, 60, lynkr)
        url = f"http://127.0.0.1:{port}/v1/messages"

        async def drive() -> load.Result:
            await load.run_load(
                url,
                sc.body,
                sc.headers,
                concurrency=sc.concurrency,
                count=sc.concurrency,
                duration_s=2,
                stream=sc.stream,
                expect_text=sc.expect,
                keep_bodies=0,
            )
            return await load.run_load(
                url,
                sc.body,
                sc.headers,
                concurrency=sc.concurrency,
                count=args.count,
                duration_s=args.duration,
                stream=sc.stream,
                expect_text=sc.expect,
            )

        rss0 = rb.mem_kib(rb.tree(lynkr.pid), "VmRSS") / 1024
        cpu0 = rb.cpu_seconds(rb.tree(lynkr.pid))
        res = asyncio.run(drive())
        cpu1 = rb.cpu_seconds(rb.tree(lynkr.pid))
        s = res.summary()
        print(
            f"{sc.name}: {s['ok']} ok, {s['errors']} errors, {s['invalid']} invalid, {s['rps']:.1f}/s, "
            f"p50 {s['p50_ms']:.2f} ms, lynkr CPU{'' if args.plain else ' incl. profiler'} "
            f"{1000 * (cpu1 - cpu0) / max(1, s['ok']):.2f} ms/req, peak RSS (VmHWM) "
            f"{rb.mem_kib(rb.tree(lynkr.pid), 'VmHWM') / 1024:.1f} MiB (RSS {rss0:.1f} MiB before the load)"
        )
        # SIGINT reaches the profiled lynkr through py-spy too; lynkr shuts down and the profile is written.
        os.killpg(lynkr.pid, signal.SIGINT)
        lynkr.wait(60)
        if args.plain:
            pass
        elif args.py_spy:
            print(f"py-spy profile: {args.py_spy}")
            if args.py_spy_format == "raw":
                print(summarize_raw(args.py_spy, args.top))
        else:
            stats = pstats.Stats(prof_out)
            stats.sort_stats(args.sort).print_stats(args.top)
    finally:
        if lynkr is not None and lynkr.poll() is None:
            os.killpg(lynkr.pid, signal.SIGKILL)
        fake.terminate()
        fake.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
