#!/usr/bin/env python3
"""Ground truth for lynkr's Python cross-file references, from the `ast` module.

    python bench/python_refs_recall.py --tree DIR [--lynkr path/to/lynkr.py] [--db index.db]
                                      [--seed 0] [--count 20] [--min-files 3] [--func urllib.request.urlopen ...]
                                      [--no-reexports] [--package-root Lib] [--json out.json]

For a module-level function f of module M (defined in M's file), a file *uses* M.f when it holds
at least one of (imports anywhere in the file, function-local ones included; shadowing is ignored):

  * `import M` / `import M.sub` (binds the dotted path) and an attribute chain `M.f`
  * `import M as y` and `y.f`
  * `from P import m [as y]` where P.m is the module M (relative imports resolved) and `y.f`
  * `from M import f [as g]` (the import names it; later `g(...)`/`g` uses are the same file)
  * `from M import *` and a name `f` read in the file

With re-exports (default): a module R that does `from M import f` / `from M import *` at its top
level exposes R.f as the same function, so uses of R.f count too (transitively; `asyncio.run`
is `asyncio.runners.run`). Uses are calls and any other reads (`g = M.f`, `map(M.f, xs)`).

The defining file itself is not counted (lynkr reports uses in other files). Lynkr's answer is
`RepoIndex.references(f, def_file)["references"]`'s files. Per function: ground-truth files, lynkr's
files, recall, precision against the ground truth, and "unmentioned": reported files whose text
does not contain the name at all (must be 0). Functions are picked at random (fixed seed) among
public module-level functions of non-test modules that at least --min-files files use.
"""

from __future__ import annotations

import argparse
import ast
import collections
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

TEST_PARTS = {"test", "tests", "idle_test"}


PACKAGE_ROOT = ""  # --package-root: the folder module names are relative to ("Lib" in a CPython checkout)


def module_name(rel: str) -> str:
    if PACKAGE_ROOT and rel.startswith(PACKAGE_ROOT + "/"):
        rel = rel[len(PACKAGE_ROOT) + 1 :]
    stem = rel[:-3] if rel.endswith(".py") else rel[:-4]
    parts = stem.split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


class FileInfo:
    __slots__ = (
        "chains",
        "is_pkg",
        "module",
        "module_aliases",
        "name_imports",
        "names",
        "reexport_stars",
        "reexports",
        "rel",
        "star_imports",
        "text",
        "top_defs",
    )

    def __init__(self, rel: str) -> None:
        self.rel = rel
        self.module = module_name(rel)
        self.is_pkg = rel.endswith(("__init__.py", "__init__.pyi"))
        self.module_aliases: dict[str, set[str]] = collections.defaultdict(set)  # expression -> modules
        self.name_imports: set[tuple[str, str]] = (
            set()
        )  # (module, name) imported by `from module import name`
        self.star_imports: set[str] = set()
        self.chains: set[str] = set()  # dotted attribute chains read ("a.b.c", "a.b")
        self.names: set[str] = set()  # plain names read
        self.top_defs: set[str] = set()  # public module-level functions
        self.reexports: set[tuple[str, str]] = set()  # top-level `from M import f` -> (M, f)
        self.reexport_stars: set[str] = set()


def absolute_module(info: FileInfo, level: int, module: str | None) -> str:
    if not level:
        return module or ""
    package = info.module.split(".") if info.is_pkg else info.module.split(".")[:-1]
    if level > 1:
        package = package[: len(package) - (level - 1)]
    base = ".".join(package)
    if module:
        return f"{base}.{module}" if base else module
    return base


def chain_of(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def analyse(root: str, rel: str, modules: set[str]) -> FileInfo | None:
    path = os.path.join(root, rel)
    try:
        with open(path, "rb") as fh:
            source = fh.read()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=rel)
    except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
        return None
    info = FileInfo(rel)
    info.text = source.decode("utf-8", "replace")
    top_level = set(map(id, tree.body))
    for stmt in tree.body:
        for node in [stmt] + (
            list(ast.iter_child_nodes(stmt)) if isinstance(stmt, (ast.If, ast.Try)) else []
        ):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                info.top_defs.add(node.name)
    # top-level incl. inside top-level if/try blocks
    top_nodes = set()
    for stmt in tree.body:
        top_nodes.add(id(stmt))
        if isinstance(stmt, (ast.If, ast.Try)):
            for sub in ast.walk(stmt):
                if isinstance(sub, ast.ImportFrom):
                    top_nodes.add(id(sub))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    info.module_aliases[alias.asname].add(alias.name)
                else:
                    parts = alias.name.split(".")
                    for i in range(1, len(parts) + 1):
                        prefix = ".".join(parts[:i])
                        info.module_aliases[prefix].add(prefix)
        elif isinstance(node, ast.ImportFrom):
            base = absolute_module(info, node.level, node.module)
            for alias in node.names:
                if alias.name == "*":
                    info.star_imports.add(base)
                    if id(node) in top_nodes:
                        info.reexport_stars.add(base)
                    continue
                bound = alias.asname or alias.name
                sub = f"{base}.{alias.name}" if base else alias.name
                if sub in modules:
                    info.module_aliases[bound].add(sub)
                info.name_imports.add((base, alias.name))
                if id(node) in top_nodes:
                    info.reexports.add((base, alias.name))
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            chain = chain_of(node)
            if chain:
                info.chains.add(chain)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            info.names.add(node.id)
    del top_level
    return info


class GroundTruth:
    def __init__(self, root: str, files: list[str], reexports: bool = True) -> None:
        self.root = root
        rels = [f for f in files if f.endswith((".py", ".pyi"))]
        self.modules = {module_name(r): r for r in rels if r.endswith(".py")}
        modset = set(self.modules)
        self.infos: dict[str, FileInfo] = {}
        for rel in rels:
            info = analyse(root, rel, modset)
            if info is not None:
                self.infos[rel] = info
        self.by_module = {i.module: i for i in self.infos.values() if i.rel.endswith(".py")}
        self.follow_reexports = reexports

    def equivalents(self, module: str, name: str) -> set[tuple[str, str]]:
        """(module, name) pairs that denote the same function: re-exports, transitively."""
        found = {(module, name)}
        if not self.follow_reexports:
            return found
        changed = True
        while changed:
            changed = False
            for info in self.by_module.values():
                key = (info.module, name)
                if key in found:
                    continue
                if any((m, name) in found for m, n in info.reexports if n == name) or (
                    not name.startswith("_") and any((m, name) in found for m in info.reexport_stars)
                ):
                    found.add(key)
                    changed = True
        return found

    def users(self, module: str, name: str) -> set[str]:
        def_file = self.modules[module]
        pairs = self.equivalents(module, name)
        mods = {m for m, _ in pairs}
        out = set()
        for rel, info in self.infos.items():
            if rel == def_file:
                continue
            if any(p in info.name_imports for p in pairs):
                out.add(rel)
                continue
            if name in info.names and info.star_imports & mods:
                out.add(rel)
                continue
            for alias, targets in info.module_aliases.items():
                if targets & mods and f"{alias}.{name}" in info.chains:
                    out.add(rel)
                    break
        return out

    def candidates(self) -> list[tuple[str, str]]:
        out = []
        for module, rel in sorted(self.modules.items()):
            info = self.infos.get(rel)
            if info is None or TEST_PARTS & set(rel.split("/")) or rel.split("/")[-1].startswith("test_"):
                continue
            if module.endswith("__main__"):
                continue
            out += [(module, f) for f in sorted(info.top_defs)]
        return out


def load_lynkr(path: str):
    spec = importlib.util.spec_from_file_location("lynkr", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["lynkr"] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", required=True, help="a copy of the standard library (or any Python tree)")
    ap.add_argument("--lynkr", default="/work/main/lynkr.py")
    ap.add_argument("--db", help="index.db to (re)build; default: a fresh temporary one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--min-files", type=int, default=3)
    ap.add_argument(
        "--func", action="append", default=[], help="module.function, e.g. urllib.request.urlopen"
    )
    ap.add_argument("--no-reexports", action="store_true")
    ap.add_argument("--package-root", default="", help='folder holding the top-level modules, e.g. "Lib"')
    ap.add_argument("--json")
    ap.add_argument("-v", "--verbose", action="store_true", help="list missed and extra files")
    args = ap.parse_args()

    global PACKAGE_ROOT
    PACKAGE_ROOT = args.package_root.strip("/")
    lynkr = load_lynkr(args.lynkr)
    root = os.path.realpath(args.tree)
    scratch = tempfile.mkdtemp(prefix="refs-gt-")
    db = args.db or os.path.join(scratch, "index.db")
    index = lynkr.RepoIndex(root, db, os.path.join(scratch, "data"))
    started = time.monotonic()
    stats = index.rebuild()
    build_s = time.monotonic() - started
    files = lynkr.list_workspace_files(root, os.path.join(scratch, "data"))
    gt = GroundTruth(root, files, reexports=not args.no_reexports)

    targets = []
    for spec in args.func:
        module, _, name = spec.rpartition(".")
        targets.append((module, name))
    if not args.func or args.count:
        rng = random.Random(args.seed)
        pool = gt.candidates()
        rng.shuffle(pool)
        picked = 0
        for module, name in pool:
            if picked >= args.count or (args.func and not args.count):
                break
            if (module, name) in targets or len(gt.users(module, name)) < args.min_files:
                continue
            targets.append((module, name))
            picked += 1

    rows = []
    for module, name in targets:
        def_file = gt.modules[module]
        truth = gt.users(module, name)
        answer = index.references(name, def_file)
        reported = set(answer.get("references") or {})
        hit = truth & reported
        unmentioned = sorted(
            r
            for r in reported
            if name not in (gt.infos[r].text if r in gt.infos else Path(root, r).read_text(errors="replace"))
        )
        rows.append(
            {
                "function": f"{module}.{name}",
                "file": def_file,
                "truth": len(truth),
                "reported": len(reported),
                "hit": len(hit),
                "recall": len(hit) / len(truth) if truth else 1.0,
                "precision": len(hit) / len(reported) if reported else 1.0,
                "missed": sorted(truth - reported),
                "extra": sorted(reported - truth),
                "unmentioned": unmentioned,
            }
        )
    print(f"build: {build_s:.2f} s ({stats.files} files, {stats.symbols} symbols, {stats.refs} refs)")
    print(f"{'function':48} {'truth':>5} {'found':>5} {'hit':>4} {'recall':>7} {'prec':>6} unmentioned")
    for r in rows:
        print(
            f"{r['function']:48} {r['truth']:5} {r['reported']:5} {r['hit']:4} {r['recall']:7.1%} "
            f"{r['precision']:6.1%} {len(r['unmentioned'])}"
        )
        if args.verbose:
            for m in r["missed"]:
                print(f"      missed {m}")
            for e in r["extra"]:
                print(f"      extra  {e}")
    total_truth = sum(r["truth"] for r in rows)
    total_hit = sum(r["hit"] for r in rows)
    total_rep = sum(r["reported"] for r in rows)
    mean_recall = sum(r["recall"] for r in rows) / len(rows) if rows else 1.0
    print(
        f"overall: recall {total_hit}/{total_truth} = {total_hit / max(total_truth, 1):.1%} (mean per function "
        f"{mean_recall:.1%}), precision {total_hit}/{total_rep} = {total_hit / max(total_rep, 1):.1%}, "
        f"unmentioned files {sum(len(r['unmentioned']) for r in rows)}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"build_s": build_s, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
