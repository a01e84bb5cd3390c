#!/usr/bin/env python3
"""The figures lynkr.py's comments rest on, measured today (bench/README.md, "Figures behind the code").

    python bench/figures.py              # the table (~40 s on 2 shared cores)
    python bench/figures.py --reps 9     # more repetitions per figure (medians either way)

Figures that go stale do not live in lynkr.py's docstrings; its comments point here. One row per
measured quantity, numbered after the README's table:

1. `upstream_json` (the upstream body, tools cache keyed by marshal bytes): marshal.dumps of the
   Claude-Code-sized tool list against encoding it; the function on the 27 KB body with the cache
   hit and cold; ASCII against UTF-8 json.dumps of that body.
2. `UpstreamResponse` (section 7): the CPU per HTTP chunk of h11 decoding a 200-token chunked stream
   (an h11.Connection client fed the fake upstream's bytes) against lynkr's own decoder
   (`UpstreamResponse.aiter_bytes`, driven in an event loop over an in-memory reader).
3. / 7. `raw_token_estimate` (and `_learn_tokens`, which runs it per sampled answer): 50, 200 and
   1000 KB Claude-Code-like requests (the benchmark's system prompt and 16 tools, then Read
   tool loops over this interpreter's standard library sources).
4. `_common_prefix` (session store): hashing a 100 KB and a 1 MB history message by message against
   the shortcut (first message and last one already seen).
5. `INDEX_POOL_THRESHOLD`: a fresh process starts the index's process pool the way `RepoIndex._parse`
   does, until its first task returns, for each start method lynkr uses.
6. the mcp SDK import: `python -c "import mcp"` minus `python -c pass`, fresh processes.
8. `return_freed_memory`: lynkr.py's size, tracemalloc's peak around compile(), and the RSS of a
   fresh interpreter that compiles it (and then calls malloc_trim) against one that only reads it.
9. `_most_referenced_files`: not run (bench/monorepo_bench.py takes minutes); cited from
   bench/README.md.

In-process figures are the median over --reps repetitions of process CPU time per call (the
machine's other load inflates them little); subprocess figures are wall-clock medians.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import marshal
import os
import random
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import h11
import run_bench as rb
from fake_upstream import SSE_HEAD, render_openai


def import_lynkr() -> Any:
    """lynkr.py is edited while benchmarks run: a half-written file is retried for a few seconds."""
    for attempt in range(10):
        try:
            import lynkr

            return lynkr
        except (SyntaxError, ImportError, NameError, AttributeError):
            if attempt == 9:
                raise
            sys.modules.pop("lynkr", None)
            time.sleep(2)
    raise AssertionError


lynkr = import_lynkr()
LYNKR_PATH = Path(lynkr.__file__).resolve()
ROWS: list[tuple[str, str, str, str, str]] = []  # (number, figure, value, unit, how)


def row(num: str, figure: str, value: float | str, unit: str, how: str) -> None:
    if isinstance(value, float):
        value = f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    ROWS.append((num, figure, str(value), unit, how))
    print(f"  {num:<4} {figure:<52} {value:>9} {unit}", file=sys.stderr, flush=True)


def cpu_us(fn: Callable[[], Any], n: int, reps: int) -> float:
    """Median over `reps` of the process CPU per call, µs."""
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        times.append((time.process_time() - t0) / n)
    return statistics.median(times) * 1e6


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# -- Claude-Code-like requests ---------------------------------------------------------------------


def stdlib_sources() -> list[tuple[str, str]]:
    """(name, text) of the standard library's top-level modules, sorted: real code, deterministic
    for a given Python."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(lib.glob("*.py")):
        try:
            out.append((path.name, path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue
    return out


SOURCES = stdlib_sources()


def tool_loop(target_bytes: int, seed: int = 7) -> list[dict[str, Any]]:
    """Messages of a Claude Code tool loop (assistant text + Read tool_use, user tool_result with the
    file as `cat -n` shows it, up to 8 KB) adding up to about `target_bytes` of compact JSON."""
    rng = random.Random(seed)
    messages: list[dict[str, Any]] = []
    size, i = 0, 0
    while size < target_bytes:
        name, text = SOURCES[(i * 7) % len(SOURCES)]
        tool_id = f"toolu_bench{i:014d}"
        assistant = {
            "role": "assistant",
            "content": [
                {"type": "text", "text": rb._prose(rng, 160)},
                {"type": "tool_use", "id": tool_id, "name": "Read", "input": {"file_path": f"/repo/{name}"}},
            ],
        }
        size += len(compact(assistant)) + 1
        numbered = "".join(f"{n:>6}\t{line}\n" for n, line in enumerate(text.splitlines()[:200], 1))
        numbered = numbered[: max(200, min(8000, target_bytes - size - 120))]
        user = {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": numbered}],
        }
        size += len(compact(user)) + 1
        messages += (assistant, user)
        i += 1
    return messages


def cc_request(target_bytes: int) -> dict[str, Any]:
    """The benchmark's Claude-Code-sized body (run_bench.cc_body: ~20 KB system prompt, 16 tools)
    grown to about `target_bytes` by a tool loop."""
    body = rb.cc_body(False)
    base = len(compact(body))
    first = body["messages"]
    body["messages"] = first + tool_loop(target_bytes - base)
    return body


# -- 1. upstream_json ------------------------------------------------------------------------------


def fig_upstream_json(reps: int) -> None:
    oai, _ = lynkr.anthropic_to_openai({**rb.cc_body(False), "stream": False}, 16)
    tools = oai["tools"]
    tools_kb = len(compact(tools)) / 1000
    n = 2000
    row(
        "1a",
        f"marshal.dumps({len(tools)} tools, {tools_kb:.1f} KB of JSON)",
        cpu_us(lambda: marshal.dumps(tools), n, reps),
        "µs",
        "the cache key upstream_json computes",
    )
    row(
        "1b",
        "json.dumps(the same tools).encode()",
        cpu_us(lambda: compact(tools), n // 4, reps),
        "µs",
        "ASCII, compact separators: what a miss encodes",
    )
    body_kb = len(lynkr.upstream_json(oai)) / 1000
    hit = cpu_us(lambda: lynkr.upstream_json(oai), n // 4, reps)
    cache = lynkr._ENCODED_TOOLS

    def cold() -> bytes:
        cache.clear()
        return lynkr.upstream_json(oai)

    miss = cpu_us(cold, n // 4, reps)
    row(
        "1c",
        f"upstream_json({body_kb:.1f} KB OpenAI body), tools cached",
        hit,
        "µs",
        "run_bench.cc_body through anthropic_to_openai (the Databricks body)",
    )
    row(
        "1d",
        "upstream_json, same body, cache cleared each call",
        miss,
        "µs",
        f"hit saves {(1 - hit / miss) * 100:.0f} %",
    )
    ascii_ = cpu_us(lambda: compact(oai), n // 4, reps)
    utf8 = cpu_us(lambda: json.dumps(oai, ensure_ascii=False, separators=(",", ":")).encode(), n // 4, reps)
    row("1e", "json.dumps(body) ASCII (ensure_ascii=True).encode()", ascii_, "µs", "the whole body, no cache")
    row(
        "1f",
        "json.dumps(body, ensure_ascii=False).encode() (UTF-8)",
        utf8,
        "µs",
        f"ASCII is {(1 - ascii_ / utf8) * 100:.0f} % cheaper (lynkr.json_bytes is this UTF-8 path)",
    )


# -- 2. chunked upstream bodies --------------------------------------------------------------------


def h11_client_after_head() -> h11.Connection:
    conn = h11.Connection(h11.CLIENT)
    conn.send(
        h11.Request(
            method="POST",
            target="/v1/chat/completions",
            headers=[("host", "upstream"), ("content-length", "0")],
        )
    )
    conn.send(h11.EndOfMessage())
    conn.receive_data(SSE_HEAD)
    assert isinstance(conn.next_event(), h11.Response)
    return conn


def h11_decode(conn: h11.Connection, reads: list[bytes]) -> int:
    """What lynkr did before its own decoder: receive each read, take the events it completes."""
    got = 0
    for data in reads:
        conn.receive_data(data)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Data):
                got += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return got
    raise AssertionError("stream did not end")


class _Reads:
    """An asyncio.StreamReader stand-in returning one prepared read per call, without waiting."""

    def __init__(self, reads: list[bytes]) -> None:
        self._reads = iter(reads)

    async def read(self, _size: int) -> bytes:
        return next(self._reads, b"")


class _Conn:
    def __init__(self, reads: list[bytes]) -> None:
        self.h11 = h11_client_after_head()
        self.reader = _Reads(reads)

    def close(self) -> None:
        pass


class _Client:
    def _pool(self, _key: Any, _conn: Any) -> None:
        pass


HEADERS = {"content-type": "text/event-stream", "transfer-encoding": "chunked"}


async def lynkr_decode(streams: int, reads: list[bytes], expect: int) -> float:
    """CPU seconds for `streams` bodies through UpstreamResponse.aiter_bytes (the chunked path)."""
    conns = [_Conn(reads) for _ in range(streams)]
    client = _Client()
    t0 = time.process_time()
    for conn in conns:
        response = lynkr.UpstreamResponse(
            client, ("http", "upstream", 80, ()), conn, 200, HEADERS, 60.0, "bench"
        )
        got = 0
        async for chunk in response.aiter_bytes():
            got += len(chunk)
        assert got == expect, (got, expect)
    return time.process_time() - t0


async def read_loop(streams: int, reads: list[bytes]) -> float:
    """The same reads through lynkr's read_with_timeout and nothing else: the asyncio share."""
    readers = [_Reads(reads) for _ in range(streams)]
    t0 = time.process_time()
    for reader in readers:
        for _ in reads:
            await lynkr.read_with_timeout(reader, lynkr.READ_CHUNK_BYTES, 60.0)
    return time.process_time() - t0


def fig_chunked(reps: int) -> None:
    rendered = render_openai("fake-model", 200, True)
    chunks = [rendered.first, *rendered.tokens, rendered.tail]  # each one HTTP chunk; the tail ends the body
    n_chunks = len(chunks)  # data chunks; the zero-size last chunk rides in the tail's read
    expect = h11_decode(h11_client_after_head(), chunks)
    streams = 40
    for label, reads in (("one read per chunk", chunks), ("all in one read", [b"".join(chunks)])):
        h11_times, own_times, loop_times = [], [], []
        for _ in range(reps):
            conns = [h11_client_after_head() for _ in range(streams)]
            t0 = time.process_time()
            for conn in conns:
                assert h11_decode(conn, reads) == expect
            h11_times.append(time.process_time() - t0)
            own_times.append(asyncio.run(lynkr_decode(streams, reads, expect)))
            loop_times.append(asyncio.run(read_loop(streams, reads)))
        per = 1e6 / (streams * n_chunks)
        h11_us = statistics.median(h11_times) * per
        own_us = statistics.median(own_times) * per
        loop_us = statistics.median(loop_times) * per
        a, b = ("a", "b") if len(reads) > 1 else ("c", "d")
        row(
            f"2{a}",
            f"h11 chunked decoding, per chunk ({label})",
            h11_us,
            "µs",
            f"an h11 client fed a 200-token OpenAI stream ({n_chunks} chunks, fake_upstream's bytes); "
            "receive_data + next_event only",
        )
        row(
            f"2{b}",
            f"lynkr UpstreamResponse.aiter_bytes, per chunk ({label})",
            own_us,
            "µs",
            f"the same bytes in an event loop; {loop_us:.2f} µs of it is the awaited read (read_with_timeout), "
            f"{own_us - loop_us:.2f} µs the decoding ({h11_us / max(own_us - loop_us, 1e-3):.1f}x less than h11)",
        )


# -- 3/7. raw_token_estimate -----------------------------------------------------------------------


def fig_estimate(reps: int) -> None:
    for kb, n in ((50, 20), (200, 6), (1000, 2)):
        body = lynkr.fold_system_messages(cc_request(kb * 1000))
        size_kb = len(compact(body)) / 1000
        lynkr.raw_token_estimate(body)  # the tool list's features are kept after the first request
        us = cpu_us(lambda body=body: lynkr.raw_token_estimate(body), n, reps)
        row(
            f"3{'abc'[(50, 200, 1000).index(kb)]}",
            f"raw_token_estimate, {size_kb:.0f} KB Claude-Code-like request",
            us / 1000,
            "ms",
            f"{us / size_kb:.1f} µs per KB ({len(body['messages'])} messages, tools' features cached)",
        )
        if kb == 200:
            per_kb_200 = us / size_kb
    row(
        "7",
        "_learn_tokens: estimate CPU per KB of request",
        per_kb_200,
        "µs/KB",
        "= 3b per KB (one estimate per sampled answer)",
    )


# -- 4. history prefix -----------------------------------------------------------------------------


def fig_history(reps: int) -> None:
    for label, size, n in (("100 KB", 100_000, 10), ("1 MB", 1_000_000, 2)):
        history = rb.cc_body(False)["messages"] + tool_loop(size - 900, seed=11)
        real_kb = len(compact(history)) / 1000
        seen = [lynkr.message_hash(m) for m in history]
        grown = [*history, {"role": "assistant", "content": [{"type": "text", "text": "Done."}]}]
        assert lynkr._common_prefix(seen, grown) == len(history)
        full = cpu_us(lambda history=history: [lynkr.message_hash(m) for m in history], n, reps)
        short = cpu_us(lambda seen=seen, grown=grown: lynkr._common_prefix(seen, grown), 200, reps)
        key = "a" if size < 500_000 else "b"
        row(
            f"4{key}",
            f"hash every message of a {label} history ({len(history)} msgs)",
            full / 1000,
            "ms",
            f"message_hash per message; {full / real_kb * 100 / 1000:.2f} ms per 100 KB",
        )
        row(
            f"4{key}'",
            f"_common_prefix shortcut, same {label} history + 1",
            short,
            "µs",
            f"the history only grew: hashes its first and last-seen message "
            f"({len(compact(history[0])) / 1000:.1f} + {len(compact(history[-1])) / 1000:.1f} KB), whatever its length",
        )


# -- 5. process pool start -------------------------------------------------------------------------

POOL_CHILD = r"""
import concurrent.futures, importlib.util, multiprocessing, os, sys, time
import lynkr  # the child runs in the folder holding lynkr.py, as `python -m lynkr` must
mode = sys.argv[1]
main = sys.modules["__main__"]
if mode == "fork":
    context = multiprocessing.get_context("fork")
else:
    context = multiprocessing.get_context("forkserver")
    if mode == "module":  # as under python -m lynkr: each worker re-runs the module as __mp_main__
        main.__spec__ = importlib.util.find_spec("lynkr")
    elif mode == "script":  # as under python lynkr.py: each worker re-runs the script as __mp_main__
        main.__file__ = lynkr.__file__
    # as RepoIndex._parse: ["__main__"], plus lynkr's own name when it is not __main__
    context.set_forkserver_preload(["__main__"] + (["lynkr"] if mode == "console" else []))
out = []
for _ in range(2):  # the first pool of a process starts the fork server; a later one reuses it
    t0 = time.perf_counter()
    pool = concurrent.futures.ProcessPoolExecutor(os.cpu_count() or 1, mp_context=context)
    pool.submit(os.getpid).result()
    out.append(time.perf_counter() - t0)
    pool.shutdown(wait=True)
print(*out)
"""


def fig_pool(reps: int) -> None:
    modes = (
        ("fork", "fork (`lynkr index`: one thread)"),
        ("console", "forkserver, `lynkr` console script"),
        ("module", "forkserver, `python -m lynkr`"),
        ("script", "forkserver, `python lynkr.py`"),
    )
    times: dict[str, list[list[float]]] = {m: [] for m, _ in modes}
    for _ in range(reps):
        for mode, _ in modes:  # interleaved: drift of the machine's load hits every mode alike
            out = subprocess.run(
                [sys.executable, "-c", POOL_CHILD, mode],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            times[mode].append([float(x) for x in out.stdout.split()[-2:]])
    for i, (mode, label) in enumerate(modes):
        first = statistics.median(t[0] for t in times[mode])
        again = statistics.median(t[1] for t in times[mode])
        row(
            f"5{'abcd'[i]}",
            f"pool start to first result, {label}",
            first,
            "s",
            f"a fresh process's first pool (wall); a second pool in the same process: {again:.3f} s",
        )


# -- 6. mcp import ---------------------------------------------------------------------------------


def fig_mcp(reps: int) -> None:
    wall: dict[str, list[float]] = {"pass": [], "import mcp": []}
    cpu: dict[str, list[float]] = {"pass": [], "import mcp": []}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(reps):
            for code in wall:
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", code], cwd=cwd, check=True, capture_output=True)
                wall[code].append(time.perf_counter() - t0)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[code].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    try:
        from importlib.metadata import version

        ver = version("mcp")
    except Exception:  # noqa: BLE001 - only a label
        ver = "?"

    def med(d: dict[str, list[float]], code: str) -> float:
        return statistics.median(d[code])

    row(
        "6",
        f"import mcp (SDK {ver}), fresh interpreter",
        med(wall, "import mcp") - med(wall, "pass"),
        "s",
        f"wall median {med(wall, 'import mcp'):.3f} s minus bare start {med(wall, 'pass'):.3f} s; "
        f"CPU {med(cpu, 'import mcp') - med(cpu, 'pass'):.3f} s",
    )


# -- 8. compiling lynkr.py -------------------------------------------------------------------------

RSS_CHILD = r"""
import ctypes, gc, sys
path, mode = sys.argv[1], sys.argv[2]
source = open(path, encoding="utf-8").read()
if mode != "read":
    code = compile(source, path, "exec")
    gc.collect()
    if mode == "trim":
        ctypes.CDLL(None).malloc_trim(0)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(int(status["VmHWM"].split()[0]), int(status["VmRSS"].split()[0]))
"""


def fig_compile(reps: int) -> None:
    source = LYNKR_PATH.read_text(encoding="utf-8")
    size_kb = len(source.encode()) / 1000
    row("8a", "lynkr.py size", size_kb, "KB", f"{source.count(chr(10)):,} lines")
    peaks, walls = [], []
    for _ in range(max(3, reps // 2)):
        gc.collect()
        t0 = time.process_time()
        compile(source, str(LYNKR_PATH), "exec")
        walls.append(time.process_time() - t0)
        gc.collect()
        tracemalloc.start()
        compile(source, str(LYNKR_PATH), "exec")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    row(
        "8b",
        "compile(lynkr.py): peak traced memory",
        statistics.median(peaks) / 2**20,
        "MiB",
        "tracemalloc around compile(source, 'lynkr.py', 'exec')",
    )
    row(
        "8c",
        "compile(lynkr.py): time",
        statistics.median(walls),
        "s",
        "CPU, median (paid by every `python lynkr.py` start: a script gets no .pyc)",
    )
    rss: dict[str, list[tuple[int, int]]] = {"read": [], "compile": [], "trim": []}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(max(3, reps // 2)):
            for mode in rss:
                out = subprocess.run(
                    [sys.executable, "-c", RSS_CHILD, str(LYNKR_PATH), mode],
                    cwd=cwd,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=True,
                )
                hwm, now = (int(x) for x in out.stdout.split())
                rss[mode].append((hwm, now))

    def med(mode: str, i: int) -> float:
        return statistics.median(x[i] for x in rss[mode]) / 1024

    row(
        "8d",
        "fresh interpreter compiling lynkr.py: peak RSS",
        med("compile", 0) - med("read", 0),
        "MiB",
        f"VmHWM {med('compile', 0):.1f} MiB minus {med('read', 0):.1f} MiB for one that only reads the source",
    )
    row(
        "8e",
        "  RSS kept after compiling (code object alive)",
        med("compile", 1) - med("read", 1),
        "MiB",
        f"VmRSS {med('compile', 1):.1f} vs {med('read', 1):.1f} MiB; after malloc_trim(0) "
        f"{med('trim', 1):.1f} MiB (+{med('trim', 1) - med('read', 1):.1f})",
    )


# -- 9. cited --------------------------------------------------------------------------------------


def fig_monorepo() -> None:
    row(
        "9",
        "project_summary, 30,662-file tree (no change)",
        "0.15",
        "s",
        "cited, not run: bench/README.md, monorepo_bench.py 2026-12-03 (busy; 0.07 s quiet; > 60 s before)",
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=7, help="repetitions per figure (median; default 7)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args()
    reps = max(1, args.reps)
    started = time.perf_counter()
    load = os.getloadavg()[0]
    print(
        f"lynkr.py {LYNKR_PATH.stat().st_size / 1000:.0f} KB, Python {sys.version.split()[0]}, h11 "
        f"{h11.__version__}, {os.cpu_count()} CPUs, load average {load:.2f}; measuring...",
        file=sys.stderr,
    )
    fig_upstream_json(reps)
    fig_chunked(reps)
    fig_estimate(reps)
    fig_history(reps)
    fig_pool(max(3, reps // 2))
    fig_mcp(max(3, reps - 2))
    fig_compile(reps)
    fig_monorepo()
    width = max(len(r[1]) for r in ROWS)
    print(f"{'fig':<5} {'figure':<{width}} {'value':>9}  {'unit':<6} how measured")
    for num, figure, value, unit, how in ROWS:
        print(f"{num:<5} {figure:<{width}} {value:>9}  {unit:<6} {how}")
    print(
        f"\n{time.perf_counter() - started:.0f} s; load average {load:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [dict(zip(("fig", "figure", "value", "unit", "how"), r, strict=True)) for r in ROWS],
                indent=1,
                ensure_ascii=False,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
