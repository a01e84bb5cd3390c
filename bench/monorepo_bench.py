#!/usr/bin/env python3
"""Benchmark: lynkr's index on a monorepo-sized tree, and the whole no-change index tool call.

    python bench/monorepo_bench.py [--repeat 3] [--tree DIR] [--git] [--keep]

The interpreter's whole lib directory (the standard library and site-packages: ~60,000 files, ~30,000
of them indexed, __pycache__ excluded) is copied into a temporary directory (or --tree reuses a copy),
optionally made a git repository (--git: files committed, so lynkr lists them with git ls-files
instead of walking). Measured in this process:

  full build   RepoIndex.rebuild() into a fresh index.db
  no-change    what workspace_index_rebuild does when nothing changed: rebuild(), project_summary(),
               the CLAUDE.md check (the block is unchanged, so nothing is written); --repeat times

Targets (issue 15): the no-change call within 1 s on this tree, the full build no worse than linear
in files. This is a benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import lynkr


def copy_lib(dest: str, use_git: bool) -> str:
    src = os.path.dirname(sysconfig.get_paths()["stdlib"].rstrip("/"))  # .../lib, site-packages included
    tree = os.path.join(dest, "lib-tree")
    shutil.copytree(src, tree, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    if use_git:
        env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
        for cmd in (
            ["init", "-q"],
            ["add", "-A"],
            ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "tree"],
        ):
            subprocess.run(["git", *cmd], cwd=tree, check=True, env=env, stdout=subprocess.DEVNULL)
    return tree


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tree", help="reuse this copy instead of making one")
    ap.add_argument("--git", action="store_true", help="make the copy a git repository")
    ap.add_argument("--keep", action="store_true", help="keep the temporary tree")
    args = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix="lynkr-monorepo-")
    try:
        tree = args.tree or copy_lib(scratch, args.git)
        state = os.path.join(scratch, "state")
        os.makedirs(state)
        index = lynkr.RepoIndex(
            tree, os.path.join(state, "index.db"), state, lynkr.policy_allows(lynkr.Policy())
        )
        t0 = time.monotonic()
        stats = index.rebuild(timeout_s=3600)
        full = time.monotonic() - t0
        print(f"tree {tree}: {stats.files} files indexed, {stats.symbols} symbols, {stats.refs} references")
        print(f"full build: {full:.1f} s ({1000 * full / max(stats.files, 1):.2f} ms per file)")
        claude_md = os.path.join(tree, "CLAUDE.md")
        lynkr.write_claude_md(tree, lynkr.render_claude_md(lynkr.project_summary(index, None, ())))
        rounds = []
        for _ in range(args.repeat):
            t0 = time.monotonic()
            index.rebuild(timeout_s=3600)
            t1 = time.monotonic()
            summary = lynkr.project_summary(index, None, ())
            t2 = time.monotonic()
            lynkr.write_claude_md(tree, lynkr.render_claude_md(summary))
            t3 = time.monotonic()
            rounds.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
        for name, i in (("rebuild", 0), ("project_summary", 1), ("CLAUDE.md check", 2), ("whole call", 3)):
            values = [r[i] for r in rounds]
            print(
                f"no-change {name}: median {statistics.median(values):.3f} s "
                f"(min {min(values):.3f}, max {max(values):.3f})"
            )
        if not args.tree and os.path.exists(claude_md):
            os.unlink(claude_md)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
