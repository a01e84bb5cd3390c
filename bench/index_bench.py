#!/usr/bin/env python3
"""Benchmark: lynkr's repository index on the CPython standard library, beside ctags and raw tree-sitter.

    python bench/index_bench.py [--plain] [--queries 400] [--repeat 3] [--profile] [--json out.json]

The standard library of the running interpreter (site-packages and __pycache__ excluded) is copied
into a temporary directory, which is made a git repository (files committed) unless --plain. Each
measurement runs in a fresh child process; a sampler in this process records the peak summed RSS of
the child and all its descendants (the pool workers) from /proc, and the child's own peak comes from
getrusage. Measured, each --repeat times (the median is reported):

  ctags       `ctags -R -f <tmp> .` (Universal Ctags), all languages it knows
  raw parse   tree-sitter parse only (same grammar wheels, no queries, no SQLite) of the files lynkr
              parses with tree-sitter, in a 2-process pool (same start method as lynkr)
  full index  lynkr.RepoIndex.rebuild() into a fresh index.db (crawl, hash, parse, queries, SQLite)
  no-change   lynkr.RepoIndex.rebuild() again on the unchanged tree
  search      RepoIndex.search() latency over a few hundred queries (exact names, prefixes,
              substrings, subsequences, misses) on the built index

Times are wall clock inside the child around the measured call (interpreter start and imports
excluded); the child's total wall time is shown too. --profile adds cProfile reports of a full
index (main process, inline parse with 1 worker so the parse shows up) and of a no-change rebuild.
This is a benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

TARGETS = {"full_vs_raw": 1.5, "nochange_s": 0.3, "search_p50_ms": 5.0}


# -- the tree --


def copy_stdlib(dest: str, use_git: bool) -> str:
    src = sysconfig.get_paths()["stdlib"]
    tree = os.path.join(dest, "stdlib")
    shutil.copytree(
        src,
        tree,
        symlinks=True,
        ignore=lambda d, names: [n for n in names if n in ("site-packages", "__pycache__")],
    )
    if use_git:
        env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
        for argv in (
            ["init", "-q"],
            ["add", "-A", "-f"],
            [
                "-c",
                "user.name=bench",
                "-c",
                "user.email=bench@example.com",
                "-c",
                "commit.gpgsign=false",
                "commit",
                "-q",
                "-m",
                "stdlib",
            ],
        ):
            subprocess.run(["git", *argv], cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    return tree


# -- children: each prints one JSON line --


def _peak_self_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_full(tree: str, db: str, workers: int | None) -> dict:
    import lynkr

    index = lynkr.RepoIndex(tree, db, os.path.join(os.path.dirname(db), "data"))
    c0, t0 = time.process_time(), time.perf_counter()
    stats = index.rebuild(workers)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "seconds": seconds,
        "cpu_self_s": cpu,
        "files": stats.files,
        "parsed": stats.parsed,
        "symbols": stats.symbols,
        "refs": stats.refs,
        "parser": stats.parser,
        "errors": len(stats.errors),
        "peak_self_kib": _peak_self_kib(),
    }


_RAW_PARSER = None


def _raw_init() -> None:
    global _RAW_PARSER
    import tree_sitter
    import tree_sitter_python

    _RAW_PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_python.language()))


def _raw_parse(path: str) -> int:
    if _RAW_PARSER is None:
        _raw_init()
    with open(path, "rb") as fh:
        tree = _RAW_PARSER.parse(fh.read())
    return tree.root_node.child_count


def raw_files(tree: str) -> list[str]:
    """The files lynkr hands to tree-sitter: what its crawler lists, of a tree-sitter language, not binary or huge."""
    import lynkr

    out = []
    for rel in lynkr.list_workspace_files(tree, os.path.join(tree, ".no-data-dir")):
        language = lynkr.LANGUAGE_BY_SUFFIX.get(os.path.splitext(rel)[1].lower())
        path = os.path.join(tree, rel)
        if (
            language != "python"
            or not os.path.isfile(path)
            or os.path.getsize(path) > lynkr.INDEX_MAX_FILE_BYTES
        ):
            continue
        with open(path, "rb") as fh:
            if b"\x00" in fh.read(8192):
                continue
        out.append(path)
    return out


def child_raw(tree: str, workers: int) -> dict:
    files = raw_files(tree)
    files.sort(key=lambda p: -os.path.getsize(p))  # as lynkr does: largest first
    context = multiprocessing.get_context("spawn" if sys.platform != "linux" else "forkserver")
    c0, t0 = time.process_time(), time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        nodes = sum(pool.map(_raw_parse, files, chunksize=max(1, len(files) // (workers * 8))))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "seconds": seconds,
        "cpu_self_s": cpu,
        "files": len(files),
        "top_level_nodes": nodes,
        "peak_self_kib": _peak_self_kib(),
    }


def child_search(tree: str, db: str, queries: int, seed: int) -> dict:
    import sqlite3

    import lynkr

    con = sqlite3.connect(db)
    names = [r[0] for r in con.execute("SELECT DISTINCT name FROM symbols")]
    con.close()
    rng = random.Random(seed)
    per = max(1, queries // 5)
    qs: list[tuple[str, str]] = []
    for _ in range(per):
        n = rng.choice(names)
        qs.append(("exact", n))
        qs.append(("prefix", n[: max(2, len(n) // 2)]))
        start = rng.randrange(0, max(1, len(n) - 3))
        qs.append(("substring", n[start : start + 4]))
        qs.append(("subsequence", "".join(c for i, c in enumerate(n) if i % 2 == 0)[:6]))
        qs.append(("miss", "".join(rng.choice("qxzjvk") for _ in range(6))))
    index = lynkr.RepoIndex(tree, db, os.path.join(os.path.dirname(db), "data"))
    index.search("warmup")
    latencies: dict[str, list[float]] = {}
    for kind, q in qs:
        t0 = time.perf_counter()
        index.search(q)
        latencies.setdefault(kind, []).append((time.perf_counter() - t0) * 1000)
    every = sorted(x for v in latencies.values() for x in v)

    def pct(values: list[float], p: float) -> float:
        values = sorted(values)
        return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]

    return {
        "queries": len(every),
        "p50_ms": pct(every, 50),
        "p99_ms": pct(every, 99),
        "max_ms": every[-1],
        "by_kind_p50_ms": {k: round(pct(v, 50), 2) for k, v in latencies.items()},
        "by_kind_p99_ms": {k: round(pct(v, 99), 2) for k, v in latencies.items()},
        "peak_self_kib": _peak_self_kib(),
    }


def child_profile(tree: str, db: str, out: str) -> dict:
    import lynkr

    data = os.path.join(os.path.dirname(db), "data")
    report = io.StringIO()
    for label, workers in (("full index, inline parse (workers=1)", 1), ("no-change rebuild", None)):
        index = lynkr.RepoIndex(tree, db, data)
        prof = cProfile.Profile()
        prof.enable()
        stats = index.rebuild(workers)
        prof.disable()
        report.write(f"==== {label}: {stats.seconds} s, parsed {stats.parsed} ====\n")
        pstats.Stats(prof, stream=report).sort_stats("cumulative").print_stats(30)
        pstats.Stats(prof, stream=report).sort_stats("tottime").print_stats(25)
    with open(out, "w") as fh:
        fh.write(report.getvalue())
    return {"report": out}


CHILDREN = {"full": child_full, "raw": child_raw, "search": child_search, "profile": child_profile}


# -- the parent: run a child, sample its process tree's memory --


def _children_of(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(x) for x in fh.read().split()]
    except OSError:
        pass
    return out


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)
    except (OSError, IndexError, ValueError):
        return 0


def measure(cmd: list[str], cwd: str | None = None) -> tuple[str, int, float, int, int, float, float]:
    """Run cmd; -> (stdout, exit status, wall s, peak summed RSS of its process tree KiB, its ru_maxrss KiB,
    its own CPU s (rusage), CPU s of its descendants (sampled from /proc))."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True)
    peak = 0
    ticks: dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            pids, stack = [], [proc.pid]
            while stack:
                pid = stack.pop()
                pids.append(pid)
                stack += _children_of(pid)
            peak = max(peak, sum(_rss_kib(p) for p in pids))
            for p in pids[1:]:
                ticks[p] = max(ticks.get(p, 0), _cpu_ticks(p))
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    descendants_cpu = sum(ticks.values()) / os.sysconf("SC_CLK_TCK")
    return out, proc.returncode, wall, peak, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, descendants_cpu


def run_child(args: list[str]) -> dict:
    """Run `index_bench.py _child ...`; return its JSON plus wall time and peak memory."""
    out, rc, wall, peak_tree, _maxrss, _cpu, descendants_cpu = measure(
        [sys.executable, __file__, "_child", *args]
    )
    if rc != 0:
        raise SystemExit(f"child {args} failed with {rc}")
    result = json.loads(out.strip().splitlines()[-1])
    if "cpu_self_s" in result:  # CPU of the measured call: the child's own, plus its pool processes'
        result["cpu_s"] = result.pop("cpu_self_s") + descendants_cpu
    result["child_wall_s"] = wall
    result["peak_tree_rss_mib"] = round(peak_tree / 1024, 1)
    result["peak_self_rss_mib"] = round(result.pop("peak_self_kib", 0) / 1024, 1)
    return result


def run_ctags(tree: str, scratch: str) -> dict:
    tags = os.path.join(scratch, "tags")
    _out, rc, wall, peak_tree, maxrss, cpu, _d = measure(["ctags", "-R", "-f", tags, "."], cwd=tree)
    with open(tags, encoding="utf-8", errors="replace") as fh:
        symbols = sum(1 for line in fh if not line.startswith("!_TAG_"))
    os.unlink(tags)
    return {
        "seconds": wall,
        "cpu_s": cpu,
        "symbols": symbols,
        "rc": rc,
        "peak_tree_rss_mib": round(max(peak_tree, maxrss) / 1024, 1),
    }


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, *rest = sys.argv[2:]
        fn = CHILDREN[kind]
        typed = [int(x) if x.lstrip("-").isdigit() else (None if x == "None" else x) for x in rest]
        print(json.dumps(fn(*typed)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--plain", action="store_true", help="do not git-init the copy (walk crawl instead of git ls-files)"
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; medians are reported")
    ap.add_argument("--queries", type=int, default=400, help="symbol searches for the latency figures")
    ap.add_argument(
        "--workers", type=int, default=2, help="processes for the raw parse (lynkr uses os.cpu_count())"
    )
    ap.add_argument(
        "--profile", metavar="FILE", help="write cProfile reports of a full and a no-change rebuild"
    )
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary tree")
    args = ap.parse_args()

    scratch = tempfile.mkdtemp(prefix="lynkr-index-bench-")
    try:
        tree = copy_stdlib(scratch, not args.plain)
        n_files = sum(len(f) for _d, _s, f in os.walk(tree) if ".git" not in _d.split(os.sep))
        print(
            f"tree: {tree} ({n_files} files, {'git repository' if not args.plain else 'plain folder'}), "
            f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        results: dict = {
            "tree_files": n_files,
            "git": not args.plain,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        }
        ctags = [run_ctags(tree, scratch) for _ in range(args.repeat)] if shutil.which("ctags") else []
        raw = [run_child(["raw", tree, str(args.workers)]) for _ in range(args.repeat)]
        full, nochange = [], []
        for i in range(args.repeat):
            db = os.path.join(scratch, f"run{i}", "index.db")
            os.makedirs(os.path.dirname(db))
            full.append(run_child(["full", tree, db, "None"]))
            nochange.append(run_child(["full", tree, db, "None"]))
        search = run_child(
            ["search", tree, os.path.join(scratch, "run0", "index.db"), str(args.queries), "7"]
        )
        results.update(ctags=ctags, raw=raw, full=full, nochange=nochange, search=search)

        def line(label: str, runs: list[dict], files_key: str, symbols: str) -> None:
            s = median_of(runs, "seconds")
            files = runs[0][files_key]
            runs_text = ", ".join(format(r["seconds"], ".3f") for r in runs)
            cpu = median_of(runs, "cpu_s")
            print(
                f"{label:<22} {s:8.3f} s  cpu {cpu:7.2f} s  {files / s:9.0f} files/s  {symbols:>30}  "
                f"peak RSS {max(r['peak_tree_rss_mib'] for r in runs):7.1f} MiB   (runs: {runs_text})"
            )

        print()
        if ctags:
            for r in ctags:
                r["files"] = n_files
            line("ctags -R", ctags, "files", f"{ctags[0]['symbols']} tags")
        line(f"raw parse ({args.workers} procs)", raw, "files", f"{raw[0]['files']} .py parsed")
        line("lynkr full index", full, "files", f"{full[0]['symbols']} symbols, {full[0]['refs']} refs")
        line("lynkr no-change", nochange, "files", f"parsed {nochange[0]['parsed']}")
        print(
            f"  full index: {full[0]['files']} files indexed, {full[0]['parsed']} parsed, parser "
            f"{full[0]['parser']}, {full[0]['errors']} errors; main-process peak RSS "
            f"{max(r['peak_self_rss_mib'] for r in full)} MiB; child wall incl. start-up "
            f"{median_of(full, 'child_wall_s'):.2f} s"
        )
        print(
            f"symbol search          p50 {search['p50_ms']:.2f} ms  p99 {search['p99_ms']:.2f} ms  "
            f"max {search['max_ms']:.2f} ms over {search['queries']} queries"
        )
        print(f"  p50 by kind: {search['by_kind_p50_ms']}")
        print(f"  p99 by kind: {search['by_kind_p99_ms']}")
        ratio = median_of(full, "seconds") / median_of(raw, "seconds")
        verdicts = {
            "full index / raw parse": (ratio, TARGETS["full_vs_raw"], "x"),
            "no-change rebuild": (median_of(nochange, "seconds"), TARGETS["nochange_s"], " s"),
            "search p50": (search["p50_ms"], TARGETS["search_p50_ms"], " ms"),
        }
        print(
            f"\nload average at the end: {os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[1]:.1f} (5 min)"
        )
        for name, (got, target, unit) in verdicts.items():
            status = "met" if got <= target else f"MISSED by {got / target:.2f}x"
            print(f"target {name:<24} {got:8.2f}{unit} (target < {target}{unit}): {status}")
        cpu_ratio = median_of(full, "cpu_s") / median_of(raw, "cpu_s")
        print(
            f"  (CPU-time ratio full index / raw parse: {cpu_ratio:.2f}x; CPU time is less sensitive to other load)"
        )
        results["ratio_full_vs_raw"] = ratio
        results["cpu_ratio_full_vs_raw"] = cpu_ratio
        if args.profile:
            db = os.path.join(scratch, "profile", "index.db")
            os.makedirs(os.path.dirname(db))
            run_child(["profile", tree, db, os.path.abspath(args.profile)])
            print(f"\ncProfile reports: {args.profile}")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=2)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"kept {scratch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
