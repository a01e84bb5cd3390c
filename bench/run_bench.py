#!/usr/bin/env python3
"""Lynkr beside claude-code-router 2.0.0 and LiteLLM proxy 1.106.2, in one interleaved run.

    python bench/run_bench.py            # full run (~15 min on 2 cores), Markdown tables on stdout
    python bench/run_bench.py --quick    # smoke run (~2 min)

What it does, all on 127.0.0.1:

1. starts ``fake_upstream.py`` (OpenAI chat + Anthropic Messages, pre-rendered answers);
2. installs the peers if missing -- ``@musistudio/claude-code-router@2.0.0`` with npm into
   ``~/.cache/lynkr/bench/ccr-2.0.0``, ``litellm[proxy]==1.106.2`` with pip into the venv
   ``~/.cache/lynkr/bench/litellm-1.106.2`` -- and starts lynkr, ccr and LiteLLM, each pointed at
   the fake's OpenAI endpoint (lynkr: ``DATABRICKS_API_BASE``, the serving-endpoints path; ccr: a
   provider on ``/v1/chat/completions``; LiteLLM: ``openai/`` model with
   ``use_chat_completions_url_for_anthropic_messages``). A peer that cannot be installed or
   started is reported as such and the others go on;
3. for each round, scenario and target (the target order rotates every round, so slow drift of
   the shared machine's load hits everyone alike): a short warm-up, then a bounded burst with
   ``load.py`` while the target's process tree CPU (utime+stime from /proc) is sampled around it;
4. a fresh lynkr holds 1,000 concurrent slow streams (per-token upstream delay), sampling RSS;
5. lynkr start-up to accepting connections (no MCP), several times;
6. prints Markdown tables and writes the raw numbers as JSON (``--out``).

Scenarios: a tiny request and a Claude-Code-sized one (~27 KB: 16 tools, ~20 KB system prompt,
generated deterministically) x (non-streaming at c=1 and c=32, 200-token streams at c=1 and c=32).
"Direct" sends the same Anthropic request straight to the fake's /v1/messages: added latency is a
target's p50 minus direct's p50 in the same round. Every stream and every answer is checked.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import load
from fake_upstream import WORDS

CACHE_DIR = os.path.expanduser("~/.cache/lynkr/bench")
CCR_VERSION = "2.0.0"
LITELLM_VERSION = "1.106.2"
CCR_DIR = os.path.join(CACHE_DIR, f"ccr-{CCR_VERSION}")
CCR_CLI = os.path.join(CCR_DIR, "node_modules", "@musistudio", "claude-code-router", "dist", "cli.js")
LITELLM_DIR = os.path.join(CACHE_DIR, f"litellm-{LITELLM_VERSION}")
LITELLM_BIN = os.path.join(LITELLM_DIR, "bin", "litellm")
CLIENT_KEY = "sk-bench-master-key"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STREAM_TOKENS = 200
SMALL_ANSWER_TOKENS = 16


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def expected_text(n: int) -> str:
    return "".join(WORDS[i % len(WORDS)] for i in range(n))


# -- request bodies --


def tiny_body(stream: bool) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": STREAM_TOKENS if stream else SMALL_ANSWER_TOKENS,
        "messages": [{"role": "user", "content": "Say hello."}],
        **({"stream": True} if stream else {}),
    }


VOCAB = (
    "file",
    "the",
    "tool",
    "use",
    "when",
    "user",
    "code",
    "must",
    "never",
    "always",
    "output",
    "command",
    "search",
    "read",
    "edit",
    "test",
    "before",
    "after",
    "path",
    "function",
    "error",
    "return",
    "task",
    "concise",
    "answer",
    "project",
    "changes",
    "commit",
    "lint",
    "run",
    "check",
    "in",
    "a",
    "to",
    "of",
    "and",
)
CC_TOOL_NAMES = (
    "Task",
    "Bash",
    "Glob",
    "Grep",
    "LS",
    "ExitPlanMode",
    "Read",
    "Edit",
    "MultiEdit",
    "Write",
    "NotebookEdit",
    "WebFetch",
    "TodoWrite",
    "WebSearch",
    "BashOutput",
    "KillShell",
)


def _prose(rng: random.Random, nbytes: int) -> str:
    words: list[str] = []
    size = 0
    while size < nbytes:
        w = rng.choice(VOCAB)
        if rng.random() < 0.08:
            w += "."
        if rng.random() < 0.02:
            w += "\n"
        words.append(w)
        size += len(w) + 1
    return " ".join(words)[:nbytes]


def cc_body(stream: bool) -> dict[str, Any]:
    """A deterministic Claude-Code-shaped request: ~27 KB, 16 tools, ~20 KB of system prompt."""
    rng = random.Random(20250929)
    tools = []
    for name in CC_TOOL_NAMES:
        props = {}
        for j in range(3):
            props[f"{name.lower()}_arg{j}"] = {
                "type": "string" if j != 2 else "number",
                "description": _prose(rng, 60),
            }
        tools.append(
            {
                "name": name,
                "description": _prose(rng, 150),
                "input_schema": {
                    "type": "object",
                    "properties": props,
                    "required": [f"{name.lower()}_arg0"],
                    "additionalProperties": False,
                    "$schema": "http://json-schema.org/draft-07/schema#",
                },
            }
        )
    system = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.0.0.bench; cc_entrypoint=cli"},
        {
            "type": "text",
            "text": "You are Claude Code, Anthropic's official CLI for Claude.",
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "text", "text": _prose(rng, 20_000), "cache_control": {"type": "ephemeral"}},
    ]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>\n" + _prose(rng, 600) + "\n</system-reminder>"},
                {
                    "type": "text",
                    "text": "Find where the retry delay is computed and explain it.",
                    "cache_control": {"type": "ephemeral"},
                },
            ],
        }
    ]
    body = {
        "model": "claude-sonnet-4-5-20250929",
        "messages": messages,
        "system": system,
        "tools": tools,
        "metadata": {"user_id": "user_bench_account__session_00000000-0000-0000-0000-000000000000"},
        "max_tokens": STREAM_TOKENS if stream else SMALL_ANSWER_TOKENS,
        "temperature": 1,
    }
    if stream:
        body["stream"] = True
    return body


TINY_HEADERS = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
CC_HEADERS = {
    **TINY_HEADERS,
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
    "user-agent": "claude-cli/2.0.0 (external, cli)",
    "x-app": "cli",
    "accept": "application/json",
    "anthropic-dangerous-direct-browser-access": "true",
    # Claude Code names its session; lynkr then appends each turn to one session record.
    "x-claude-code-session-id": "00000000-0000-4000-8000-000000000bench",
}


@dataclass
class Scenario:
    name: str
    body_kind: str  # tiny | cc
    stream: bool
    concurrency: int
    count: int
    duration_s: float

    @property
    def body(self) -> bytes:
        obj = tiny_body(self.stream) if self.body_kind == "tiny" else cc_body(self.stream)
        return json.dumps(obj, separators=(",", ":")).encode()

    @property
    def headers(self) -> dict[str, str]:
        return TINY_HEADERS if self.body_kind == "tiny" else CC_HEADERS

    @property
    def expect(self) -> str:
        return expected_text(STREAM_TOKENS if self.stream else SMALL_ANSWER_TOKENS)


def scenarios(quick: bool) -> list[Scenario]:
    d1, d32 = (1.0, 1.5) if quick else (4.0, 5.0)
    out = []
    for kind in ("tiny", "cc"):
        out += [
            Scenario(f"{kind} c=1", kind, False, 1, 400 if quick else 3000, d1),
            Scenario(f"{kind} c=32", kind, False, 32, 2000 if quick else 30000, d32),
            Scenario(f"{kind} stream c=1", kind, True, 1, 200 if quick else 1000, d1),
            Scenario(f"{kind} stream c=32", kind, True, 32, 1000 if quick else 5000, d32),
        ]
    return out


# -- processes and /proc --


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    kids = proc_children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat(5))
    return total / CLK_TCK


def mem_kib(pids: list[int], key: str) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores)."""
    with open("/proc/stat") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / CLK_TCK


def wait_port(
    port: int, timeout: float, proc: subprocess.Popen | None = None, poll_s: float = 0.002
) -> float:
    """Seconds until 127.0.0.1:port accepts a TCP connection; raises on timeout or process exit."""
    t0 = time.perf_counter()
    while True:
        with socket.socket() as s:
            try:
                s.connect(("127.0.0.1", port))
                return time.perf_counter() - t0
            except OSError:
                pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening")
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"not listening after {timeout:g} s")
        time.sleep(poll_s)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that would reconfigure a target (lynkr keys, proxies)."""
    prefixes = (
        "LYNKR_",
        "MODEL_",
        "DATABRICKS_",
        "AZURE_",
        "PROMPT_CACHE_",
        "POLICY_",
        "MCP_",
        "WORKSPACE_",
        "WEB_",
        "SESSION_",
        "LOG_",
        "STREAM_",
        "UPSTREAM_",
        "SHUTDOWN_",
        "CIRCUIT_",
        "FALLBACK_",
        "MAX_CONCURRENT",
        "RATE_LIMIT",
        "LITELLM_",
        "OPENAI_",
        "ANTHROPIC_",
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(prefixes)
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    env.update(extra)
    return env


@dataclass
class Target:
    name: str
    label: str
    url: str = ""
    proc: subprocess.Popen | None = None
    error: str = ""
    startup_s: float | None = None
    logfile: str = ""
    extra_pids: list[int] = field(default_factory=list)

    def pids(self) -> list[int]:
        return tree(self.proc.pid) if self.proc is not None and self.proc.poll() is None else []

    def alive(self) -> bool:
        return not self.error and (self.proc is None or self.proc.poll() is None)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # its own session, started by us
                self.proc.wait(10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)


def spawn(argv: list[str], env: dict[str, str], cwd: str, logfile: str) -> subprocess.Popen:
    """Start a process in its own session (so it and its children can be stopped together), output to a file."""
    with open(logfile, "ab") as out:
        return subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )


def tail(path: str, n: int = 400) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read()[-n:].decode("utf-8", "replace").strip().replace("\n", " | ")
    except OSError:
        return ""


# -- installing and starting the targets --


def install_ccr() -> None:
    if os.path.exists(CCR_CLI):
        return
    node = shutil.which("node")
    if not node:
        raise RuntimeError("node is not installed")
    major = int(
        subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
        .stdout.strip()
        .lstrip("v")
        .split(".")[0]
    )
    if major < 20:
        raise RuntimeError(f"claude-code-router {CCR_VERSION} needs Node >= 20 (have {major})")
    os.makedirs(CCR_DIR, exist_ok=True)
    log(f"installing @musistudio/claude-code-router@{CCR_VERSION} into {CCR_DIR}")
    r = subprocess.run(
        [
            "npm",
            "install",
            "--prefix",
            CCR_DIR,
            "--no-audit",
            "--no-fund",
            f"@musistudio/claude-code-router@{CCR_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if r.returncode != 0 or not os.path.exists(CCR_CLI):
        raise RuntimeError(f"npm install failed: {(r.stderr or r.stdout)[-300:]}")


def install_litellm() -> None:
    if os.path.exists(LITELLM_BIN):
        return
    log(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_DIR} (takes a few minutes)")
    r = subprocess.run(
        [sys.executable, "-m", "venv", LITELLM_DIR], capture_output=True, text=True, timeout=300, check=False
    )
    if r.returncode != 0:
        raise RuntimeError(f"venv failed: {r.stderr[-300:]}")
    r = subprocess.run(
        [os.path.join(LITELLM_DIR, "bin", "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if r.returncode != 0 or not os.path.exists(LITELLM_BIN):
        raise RuntimeError(f"pip install failed: {(r.stderr or r.stdout)[-300:]}")


def lynkr_env(
    work: str, fake_port: int, port: int, log_level: str, name: str, **extra: str
) -> tuple[dict[str, str], str]:
    ws = os.path.join(work, name, "ws")
    os.makedirs(ws, exist_ok=True)
    os.makedirs(os.path.join(work, "no-mcp"), exist_ok=True)
    env = clean_env(
        DATABRICKS_API_BASE=f"http://127.0.0.1:{fake_port}",
        DATABRICKS_API_KEY="bench-token",
        LYNKR_HOST="127.0.0.1",
        LYNKR_PORT=str(port),
        LYNKR_INDEX_ON_START="false",
        PROMPT_CACHE_ENABLED="false",
        LYNKR_DATA_DIR=os.path.join(work, name, "data"),
        WORKSPACE_ROOT=ws,
        MCP_MANIFEST_DIRS=os.path.join(work, "no-mcp"),
        LOG_LEVEL=log_level,
        **extra,
    )
    return env, ws


def start_lynkr(
    work: str, fake_port: int, args: argparse.Namespace, name: str = "lynkr", **extra: str
) -> Target:
    t = Target(name, "lynkr")
    port = free_port()
    env, ws = lynkr_env(work, fake_port, port, args.lynkr_log_level, name, **extra)
    t.logfile = os.path.join(work, f"{name}.log")
    argv = (
        [*args.lynkr_prefix.split(), args.python, args.lynkr]
        if args.lynkr_prefix
        else [args.python, args.lynkr]
    )
    t.proc = spawn(argv, env, ws, t.logfile)
    try:
        t.startup_s = wait_port(port, 30, t.proc)
    except RuntimeError as exc:
        t.error = f"lynkr did not start: {exc}: {tail(t.logfile)}"
    t.url = f"http://127.0.0.1:{port}/v1/messages"
    return t


def start_ccr(work: str, fake_port: int) -> Target:
    t = Target("ccr", f"claude-code-router {CCR_VERSION}")
    try:
        install_ccr()
    except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
        t.error = f"not installed: {exc}"
        return t
    home = os.path.join(work, "ccr-home")
    os.makedirs(os.path.join(home, ".claude-code-router"), exist_ok=True)
    port = free_port()
    config = {
        "LOG": False,
        "HOST": "127.0.0.1",
        "PORT": port,
        "API_TIMEOUT_MS": 600000,
        "NON_INTERACTIVE_MODE": True,
        "Providers": [
            {
                "name": "fake",
                "api_base_url": f"http://127.0.0.1:{fake_port}/v1/chat/completions",
                "api_key": "bench-token",
                "models": ["fake-model"],
            }
        ],
        "Router": {"default": "fake,fake-model"},
    }
    with open(os.path.join(home, ".claude-code-router", "config.json"), "w") as fh:
        json.dump(config, fh, indent=2)
    t.logfile = os.path.join(work, "ccr.log")
    t.proc = spawn(["node", CCR_CLI, "start"], clean_env(HOME=home), home, t.logfile)
    try:
        t.startup_s = wait_port(port, 60, t.proc, 0.01)
    except RuntimeError as exc:
        t.error = f"did not start: {exc}: {tail(t.logfile)}"
    t.url = f"http://127.0.0.1:{port}/v1/messages"
    return t


def start_litellm(work: str, fake_port: int) -> Target:
    t = Target("litellm", f"LiteLLM proxy {LITELLM_VERSION}")
    try:
        install_litellm()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        t.error = f"not installed: {exc}"
        return t
    home = os.path.join(work, "litellm")
    os.makedirs(home, exist_ok=True)
    cfg = os.path.join(home, "config.yaml")
    with open(cfg, "w") as fh:
        fh.write(f"""model_list:
  - model_name: "*"
    litellm_params:
      model: openai/fake-model
      api_base: http://127.0.0.1:{fake_port}/v1
      api_key: bench-token
litellm_settings:
  use_chat_completions_url_for_anthropic_messages: true
""")
    port = free_port()
    t.logfile = os.path.join(work, "litellm.log")
    env = clean_env(HOME=home, LITELLM_MASTER_KEY=CLIENT_KEY, LITELLM_LOCAL_MODEL_COST_MAP="True")
    t.proc = spawn(
        [LITELLM_BIN, "--config", cfg, "--host", "127.0.0.1", "--port", str(port)], env, home, t.logfile
    )
    try:
        t.startup_s = wait_port(port, 180, t.proc, 0.02)
    except RuntimeError as exc:
        t.error = f"did not start: {exc}: {tail(t.logfile)}"
    t.url = f"http://127.0.0.1:{port}/v1/messages"
    return t


# -- measuring --


@dataclass
class Burst:
    target: str
    scenario: str
    round: int
    summary: dict[str, Any]
    cpu_s: float
    foreign_cores: float
    latencies: list[float]
    ttfts: list[float]


async def measure(target: Target, sc: Scenario, rnd: int, ours: list[int], warmup: bool) -> Burst:
    body = sc.body
    if warmup:
        await load.run_load(
            target.url,
            body,
            sc.headers,
            concurrency=sc.concurrency,
            count=max(20, sc.concurrency * 4),
            duration_s=0.5,
            stream=sc.stream,
            expect_text=sc.expect,
            timeout_s=60,
            keep_bodies=0,
        )
    pids = target.pids()
    all_ours = [*ours, *pids]
    cpu0, busy0, ours0, t0 = cpu_seconds(pids), machine_busy_s(), cpu_seconds(all_ours), time.perf_counter()
    res = await load.run_load(
        target.url,
        body,
        sc.headers,
        concurrency=sc.concurrency,
        count=sc.count,
        duration_s=sc.duration_s,
        stream=sc.stream,
        expect_text=sc.expect,
        timeout_s=60,
    )
    cpu1, busy1, ours1, t1 = cpu_seconds(pids), machine_busy_s(), cpu_seconds(all_ours), time.perf_counter()
    # Cores kept busy by processes other than ours (other users of the shared machine) meanwhile.
    foreign = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / max(t1 - t0, 1e-6)
    return Burst(
        target.name,
        sc.name,
        rnd,
        res.summary(),
        cpu1 - cpu0 if pids else float("nan"),
        foreign,
        res.latencies,
        res.ttfts,
    )


async def slow_streams(work: str, fake_port: int, args: argparse.Namespace) -> dict[str, Any]:
    """A fresh lynkr holds N concurrent streams whose upstream waits between tokens."""
    n, tokens, delay_ms = args.slow_streams, args.slow_tokens, args.slow_delay_ms
    t = start_lynkr(work, fake_port, args, name="lynkr-slow", MODEL_DEFAULT=f"slow-d{delay_ms}")
    out: dict[str, Any] = {"streams": n, "tokens": tokens, "delay_ms": delay_ms}
    if t.error:
        out["error"] = t.error
        return out
    try:
        pid = t.proc.pid
        rss_before = mem_kib([pid], "VmRSS")
        peak_sample = 0
        sampling = True

        async def sampler() -> None:
            nonlocal peak_sample
            while sampling:
                peak_sample = max(peak_sample, mem_kib([pid], "VmRSS"))
                await asyncio.sleep(0.1)

        task = asyncio.ensure_future(sampler())
        body = json.dumps({**tiny_body(True), "max_tokens": tokens}).encode()
        cpu0 = cpu_seconds([pid])
        res = await load.run_load(
            t.url,
            body,
            TINY_HEADERS,
            concurrency=n,
            count=n,
            duration_s=tokens * delay_ms / 1000 * 4 + 60,
            timeout_s=tokens * delay_ms / 1000 * 4 + 60,
            stream=True,
            expect_text=expected_text(tokens),
            connect_timeout_s=60,
        )
        cpu1 = cpu_seconds([pid])
        sampling = False
        await task
        s = res.summary()
        out.update(
            ok=s["ok"],
            errors=s["errors"],
            invalid=s["invalid"],
            first_error=s["first_error"],
            max_open=s["max_open"],
            total_p50_ms=s["p50_ms"],
            total_p99_ms=s["p99_ms"],
            ttft_p50_ms=s["ttft_p50_ms"],
            ttft_p99_ms=s["ttft_p99_ms"],
            wall_s=s["wall_s"],
            rss_before_mib=rss_before / 1024,
            rss_peak_sample_mib=peak_sample / 1024,
            vmhwm_mib=mem_kib([pid], "VmHWM") / 1024,
            cpu_ms_per_stream=1000 * (cpu1 - cpu0) / max(1, s["ok"]),
            upstream=fake_stats(fake_port),
        )
    finally:
        t.stop()
    return out


def fake_stats(port: int) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(b"GET /stats HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def startup_times(work: str, fake_port: int, args: argparse.Namespace, n: int) -> list[float]:
    times = []
    for _i in range(n):
        t = start_lynkr(work, fake_port, args, name="lynkr-start")
        try:
            if t.error:
                raise RuntimeError(t.error)
            times.append(t.startup_s or float("nan"))
        finally:
            t.stop()
    return times


# -- reporting --


def med(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def fmt(v: Any, digits: int = 2, suffix: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}{suffix}"
        return f"{v:.{digits}f}{suffix}"
    return f"{v}{suffix}"


def aggregate(bursts: list[Burst], target: str, scenario: str) -> dict[str, Any]:
    bs = [b for b in bursts if b.target == target and b.scenario == scenario]
    if not bs:
        return {}
    ok = sum(b.summary["ok"] for b in bs)
    lat = sorted(x for b in bs for x in b.latencies)
    ttft = sorted(x for b in bs for x in b.ttfts)
    return {
        "ok": ok,
        "errors": sum(b.summary["errors"] for b in bs),
        "invalid": sum(b.summary["invalid"] for b in bs),
        "first_error": next((b.summary["first_error"] for b in bs if b.summary["first_error"]), ""),
        "rps": med([b.summary["rps"] for b in bs]),
        "p50_ms": med([b.summary["p50_ms"] for b in bs]),
        "p99_ms": load.pct(lat, 99) * 1000,
        "ttft_p50_ms": med([b.summary["ttft_p50_ms"] for b in bs]) if ttft else float("nan"),
        "ttft_p99_ms": load.pct(ttft, 99) * 1000 if ttft else float("nan"),
        "cpu_ms": 1000 * sum(b.cpu_s for b in bs) / ok if ok else float("nan"),
        "foreign_cores": med([b.foreign_cores for b in bs]),
        "rounds": {b.round: b.summary["p50_ms"] for b in bs},
    }


def added(bursts: list[Burst], target: str, scenario: str, key: str) -> float:
    """Median over rounds of (target - direct) for one per-round statistic."""
    diffs = []
    for b in bursts:
        if b.target != target or b.scenario != scenario:
            continue
        d = next(
            (x for x in bursts if x.target == "direct" and x.scenario == scenario and x.round == b.round),
            None,
        )
        if d is not None:
            diffs.append(b.summary[key] - d.summary[key])
    return med(diffs)


def added_p99(bursts: list[Burst], target: str, scenario: str) -> float:
    t, d = aggregate(bursts, target, scenario), aggregate(bursts, "direct", scenario)
    return t.get("p99_ms", float("nan")) - d.get("p99_ms", float("nan")) if t and d else float("nan")


def report(
    targets: list[Target],
    bursts: list[Burst],
    slow: dict[str, Any],
    starts: list[float],
    rss: dict[str, dict[str, float]],
    meta: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    lines: list[str] = []
    names = [t.name for t in targets]
    label = {t.name: t.label for t in targets}
    errors = {t.name: t.error for t in targets if t.error}
    lines.append(f"lynkr at commit {meta['lynkr']}")
    lines.append("")
    lines.append(
        f"Machine: {meta['machine']}; rounds: {meta['rounds']}; foreign CPU load during bursts "
        f"(other processes, cores busy, median): {meta['foreign_cores']:.2f}; load average before/after: "
        f"{meta['load_before']} / {meta['load_after']}"
    )
    lines.append("")
    for t in targets:
        if t.error:
            lines.append(f"- **{t.label}: not measured** — {t.error}")
    if errors:
        lines.append("")
    for kind, title in (
        ("tiny", "Tiny request (~100 B, 16-token answer)"),
        ("cc", "Claude-Code-sized request (~27 KB: 16 tools, 20 KB system; 16-token answer)"),
    ):
        lines += [
            f"### {title}",
            "",
            (
                "| target | p50 c=1 (ms) | added p50 c=1 | added p99 c=1 | req/s c=32 | p50 c=32 (ms) | "
                "CPU ms/req (c=32) | errors/invalid |"
            ),
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in names:
            if name in errors:
                lines.append(f"| {label[name]} | not measured | | | | | | |")
                continue
            a1, a32 = aggregate(bursts, name, f"{kind} c=1"), aggregate(bursts, name, f"{kind} c=32")
            if not a1:
                continue
            is_direct = name == "direct"
            lines.append(
                f"| {label[name]} | {fmt(a1['p50_ms'])} | {'—' if is_direct else fmt(added(bursts, name, f'{kind} c=1', 'p50_ms'), 2, ' ms')} | "
                f"{'—' if is_direct else fmt(added_p99(bursts, name, f'{kind} c=1'), 2, ' ms')} | {fmt(a32.get('rps'), 0)} | "
                f"{fmt(a32.get('p50_ms'))} | {'—' if is_direct else fmt(a32.get('cpu_ms'))} | "
                f"{a1['errors'] + a32.get('errors', 0)}/{a1['invalid'] + a32.get('invalid', 0)} |"
            )
        lines += [
            "",
            f"200-token streams, {title.split(' (')[0].lower()}:",
            "",
            (
                "| target | TTFT p50 c=1 | total p50 c=1 | added total c=1 | TTFT p50 c=32 | total p50 c=32 | "
                "streams/s c=32 | CPU ms/stream (c=32) | errors/invalid |"
            ),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name in names:
            if name in errors:
                lines.append(f"| {label[name]} | not measured | | | | | | | |")
                continue
            s1, s32 = (
                aggregate(bursts, name, f"{kind} stream c=1"),
                aggregate(bursts, name, f"{kind} stream c=32"),
            )
            if not s1:
                continue
            is_direct = name == "direct"
            lines.append(
                f"| {label[name]} | {fmt(s1['ttft_p50_ms'], 2, ' ms')} | {fmt(s1['p50_ms'], 2, ' ms')} | "
                f"{'—' if is_direct else fmt(added(bursts, name, f'{kind} stream c=1', 'p50_ms'), 2, ' ms')} | "
                f"{fmt(s32.get('ttft_p50_ms'), 1, ' ms')} | {fmt(s32.get('p50_ms'), 1, ' ms')} | {fmt(s32.get('rps'), 0)} | "
                f"{'—' if is_direct else fmt(s32.get('cpu_ms'))} | "
                f"{s1['errors'] + s32.get('errors', 0)}/{s1['invalid'] + s32.get('invalid', 0)} |"
            )
        lines.append("")
    lines += [
        "### Memory and start-up",
        "",
        "| target | peak RSS, VmHWM (MiB) | RSS at end (MiB) | start-up to accepting connections |",
        "|---|---|---|---|",
    ]
    for t in targets:
        if t.name == "direct":
            continue
        if t.name in errors:
            lines.append(f"| {t.label} | not measured | | |")
            continue
        r = rss.get(t.name, {})
        st = (
            f"{fmt(med(starts), 3)} s (median of {len(starts)}; min {fmt(min(starts), 3)} s)"
            if t.name == "lynkr" and starts
            else fmt(t.startup_s, 2, " s")
        )
        lines.append(f"| {t.label} | {fmt(r.get('hwm'), 1)} | {fmt(r.get('rss'), 1)} | {st} |")
    lines.append("")
    if slow:
        if slow.get("error"):
            lines.append(f"Slow streams: {slow['error']}")
        else:
            lines += [
                (
                    f"### {slow['streams']} concurrent slow streams through lynkr "
                    f"({slow['tokens']} tokens, {slow['delay_ms']} ms between tokens)"
                ),
                "",
                (
                    "| completed | errors | invalid | max open at once (client / upstream) | total p50 / p99 | "
                    "TTFT p50 / p99 | peak RSS (VmHWM) | RSS before | CPU ms/stream |"
                ),
                "|---|---|---|---|---|---|---|---|---|",
                (
                    f"| {slow['ok']} | {slow['errors']} | {slow['invalid']} | {slow['max_open']} / "
                    f"{slow['upstream'].get('max_streams_open')} | {fmt(slow['total_p50_ms'], 0, ' ms')} / "
                    f"{fmt(slow['total_p99_ms'], 0, ' ms')} | {fmt(slow['ttft_p50_ms'], 0, ' ms')} / "
                    f"{fmt(slow['ttft_p99_ms'], 0, ' ms')} | {fmt(slow['vmhwm_mib'], 1)} MiB | "
                    f"{fmt(slow['rss_before_mib'], 1)} MiB | {fmt(slow['cpu_ms_per_stream'])} |"
                ),
                "",
            ]
            if slow.get("first_error"):
                lines += [f"First failure: `{slow['first_error'][:200]}`", ""]
    verdicts = targets_table(bursts, slow, starts, rss, errors)
    lines += verdicts
    raw = {
        "meta": meta,
        "errors": errors,
        "slow": slow,
        "startup_s": starts,
        "rss_mib": rss,
        "aggregates": {
            f"{n} | {s}": aggregate(bursts, n, s) for n in names for s in {b.scenario for b in bursts}
        },
        "bursts": [{**b.__dict__, "latencies": None, "ttfts": None} for b in bursts],
    }
    return "\n".join(lines), raw


def targets_table(
    bursts: list[Burst],
    slow: dict[str, Any],
    starts: list[float],
    rss: dict[str, dict[str, float]],
    errors: dict[str, str],
) -> list[str]:
    def agg(name: str, sc: str, key: str) -> float:
        return aggregate(bursts, name, sc).get(key, float("nan")) if name not in errors else float("nan")

    def ratio(sc: str) -> float:
        return agg("lynkr", sc, "rps") / agg("ccr", sc, "rps")

    rows = []

    def row(what: str, goal: str, value: float, ok: bool, unit: str = "") -> None:
        verdict = "—" if math.isnan(value) else ("met" if ok else "**missed**")
        rows.append(f"| {what} | {goal} | {fmt(value, 2, unit)} | {verdict} |")

    v = added(bursts, "lynkr", "tiny c=1", "p50_ms")
    row("tiny: added p50 at c=1", "≤ 0.5 ms", v, v <= 0.5, " ms")
    v = ratio("tiny c=32")
    row("tiny: req/s at c=32 vs claude-code-router", "≥ 2×", v, v >= 2, "×")
    v = agg("lynkr", "cc c=32", "cpu_ms")
    row("CC-sized: CPU per request", "≤ 1 ms", v, v <= 1, " ms")
    v = ratio("cc c=32")
    row("CC-sized: req/s at c=32 vs claude-code-router", "≥ 5×", v, v >= 5, "×")
    for kind in ("tiny", "cc"):
        v = added(bursts, "lynkr", f"{kind} stream c=1", "p50_ms")
        row(f"{kind} 200-token stream: added total p50 at c=1", "≤ 1 ms", v, v <= 1, " ms")
        v = agg("lynkr", f"{kind} stream c=32", "cpu_ms")
        row(f"{kind} 200-token stream: CPU per stream", "≤ 1.5 ms", v, v <= 1.5, " ms")
        v = ratio(f"{kind} stream c=32")
        row(f"{kind} 200-token stream: streams/s at c=32 vs claude-code-router", "≥ 2×", v, v >= 2, "×")
    inv = sum(b.summary["invalid"] + b.summary["errors"] for b in bursts if b.target == "lynkr")
    row("every lynkr stream/answer valid (invalid + errors)", "0", float(inv), inv == 0)
    v = rss.get("lynkr", {}).get("hwm", float("nan"))
    row("peak RSS over all c=1/c=32 runs", "≤ 60 MiB", v, v <= 60, " MiB")
    if slow and not slow.get("error"):
        v = slow["vmhwm_mib"]
        dropped = slow["streams"] - slow["ok"] + slow["invalid"]
        row(f"{slow['streams']} slow streams: peak RSS", "≤ 150 MiB", v, v <= 150, " MiB")
        row(f"{slow['streams']} slow streams: dropped or invalid", "0", float(dropped), dropped == 0)
    v = med(starts)
    row("start-up to accepting connections (no MCP)", "≤ 0.3 s", v, v <= 0.3, " s")
    return [
        "### lynkr against the targets of issue 7",
        "",
        "| target | goal | measured | verdict |",
        "|---|---|---|---|",
        *rows,
        "",
    ]


# -- main --


def run_meta(args: argparse.Namespace, work: str) -> dict[str, Any]:
    """What was measured: lynkr's commit and a snapshot of lynkr.py that every lynkr of the run uses."""

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", REPO, *argv], capture_output=True, text=True, check=False
        ).stdout.strip()

    dirty = " (lynkr.py modified)" if git("status", "--porcelain", "lynkr.py") else ""
    meta: dict[str, Any] = {
        "lynkr": git("log", "-1", "--format=%h %s")[:60] + dirty,
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "machine": f"{os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}, Python {sys.version.split()[0]}",
    }
    # lynkr.py may be edited while a run goes on: every lynkr of this run starts from one copy.
    snapshot = os.path.join(work, "lynkr.py")
    shutil.copyfile(args.lynkr, snapshot)
    with open(snapshot, "rb") as fh:
        meta["lynkr"] += f", sha256 {hashlib.sha256(fh.read()).hexdigest()[:12]}"
    args.lynkr = snapshot
    return meta


def start_fake(work: str, args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    port_file = os.path.join(work, "fake.port")
    fake = spawn(
        [
            sys.executable,
            os.path.join(HERE, "fake_upstream.py"),
            "--port-file",
            port_file,
            "--max-runtime-s",
            str(args.max_runtime_s),
        ],
        clean_env(),
        work,
        os.path.join(work, "fake.log"),
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(port_file):
        if time.monotonic() > deadline or fake.poll() is not None:
            stop_process(fake)
            raise RuntimeError("fake upstream did not start: " + tail(os.path.join(work, "fake.log")))
        time.sleep(0.02)
    with open(port_file) as fh:
        return fake, int(fh.read())


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def write_json(path: str, obj: Any) -> None:
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1, default=str)


async def run(
    args: argparse.Namespace, work: str, meta: dict[str, Any], fake: subprocess.Popen, fake_port: int
) -> int:
    targets: list[Target] = []
    try:
        direct = Target("direct", "direct to fake upstream", url=f"http://127.0.0.1:{fake_port}/v1/messages")
        wanted = args.targets.split(",")
        targets.append(direct)
        if "lynkr" in wanted:
            targets.append(start_lynkr(work, fake_port, args))
        if "ccr" in wanted:
            targets.append(start_ccr(work, fake_port))
        if "litellm" in wanted:
            targets.append(start_litellm(work, fake_port))
        for t in targets:
            log(f"{t.label}: " + (t.error or f"up at {t.url} (start-up {fmt(t.startup_s, 2)} s)"))
        ours = [os.getpid(), fake.pid]
        bursts: list[Burst] = []
        scs = scenarios(args.quick)
        if args.scenarios:
            scs = [s for s in scs if s.name in args.scenarios.split(",")]
        live = [t for t in targets if t.alive()]
        # JIT warm-up (Node, and Python's own caches): every target sees every scenario before round 1.
        for t in live:
            for sc in scs:
                try:
                    await load.run_load(
                        t.url,
                        sc.body,
                        sc.headers,
                        concurrency=sc.concurrency,
                        count=min(sc.count, 300),
                        duration_s=args.warmup_s,
                        stream=sc.stream,
                        timeout_s=60,
                        keep_bodies=0,
                    )
                except (load.LoadError, OSError) as exc:
                    log(f"  warm-up of {t.name} on {sc.name} failed: {exc}")
            log(f"  warmed up {t.name}")
        for rnd in range(args.rounds):
            log(f"round {rnd + 1}/{args.rounds}, load average {os.getloadavg()[0]:.2f}")
            for sc in scs:
                order = live[rnd % len(live) :] + live[: rnd % len(live)]
                for t in order:
                    if not t.alive():
                        if not t.error:
                            t.error = f"exited during the run: {tail(t.logfile)}"
                        continue
                    try:
                        b = await measure(t, sc, rnd, ours, warmup=True)
                    except (load.LoadError, OSError) as exc:
                        log(f"  {sc.name:>16} {t.name:>8}: failed: {exc}")
                        continue
                    bursts.append(b)
                    s = b.summary
                    log(
                        f"  {sc.name:>16} {t.name:>8}: {s['ok']:>6} ok {s['errors']} err {s['invalid']} inv "
                        f"{s['rps']:8.1f}/s p50 {s['p50_ms']:7.2f} ms ttft {s['ttft_p50_ms']:7.2f} ms "
                        f"cpu {1000 * b.cpu_s / max(1, s['ok']):.2f} ms/req  other load {b.foreign_cores:.2f}"
                    )
        rss = {
            t.name: {"hwm": mem_kib(t.pids(), "VmHWM") / 1024, "rss": mem_kib(t.pids(), "VmRSS") / 1024}
            for t in targets
            if t.name != "direct" and t.alive()
        }
        for t in targets:
            if t.name != "direct":
                t.stop()
        slow: dict[str, Any] = {}
        if args.slow_streams and "lynkr" in wanted:
            log(f"{args.slow_streams} slow streams through a fresh lynkr")
            slow = await slow_streams(work, fake_port, args)
            log(f"  slow streams: {json.dumps(slow)}")
        starts: list[float] = []
        if "lynkr" in wanted and args.startups:
            starts = startup_times(work, fake_port, args, args.startups)
            log(f"  lynkr start-up: {[round(s, 3) for s in starts]}")
        meta.update(
            rounds=args.rounds,
            quick=args.quick,
            load_after=" ".join(f"{x:.2f}" for x in os.getloadavg()),
            foreign_cores=med([b.foreign_cores for b in bursts]),
            command=" ".join(sys.argv),
        )
        text, raw = report(targets, bursts, slow, starts, rss, meta)
        print(text)
        if args.out:
            write_json(args.out, raw)
            log(f"raw numbers in {args.out}")
    finally:
        for t in targets:
            t.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="short smoke run: 1 round, short bursts, 200 slow streams"
    )
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, quick 1)")
    p.add_argument("--targets", default="lynkr,ccr,litellm", help="comma list of lynkr, ccr, litellm")
    p.add_argument(
        "--scenarios", default="", help="only these scenarios (comma list of names, e.g. 'tiny c=32')"
    )
    p.add_argument(
        "--slow-streams", type=int, default=None, help="concurrent slow streams (default 1000, quick 200)"
    )
    p.add_argument("--slow-tokens", type=int, default=30)
    p.add_argument("--slow-delay-ms", type=int, default=200)
    p.add_argument("--startups", type=int, default=7, help="lynkr start-up measurements")
    p.add_argument("--lynkr", default=os.path.join(REPO, "lynkr.py"))
    p.add_argument("--python", default=sys.executable, help="interpreter for lynkr")
    p.add_argument("--lynkr-prefix", default="", help="command prefix for lynkr (e.g. a profiler)")
    p.add_argument("--lynkr-log-level", default="info", help="LOG_LEVEL for lynkr (its log goes to a file)")
    p.add_argument(
        "--warmup-s",
        type=float,
        default=None,
        help="warm-up per target and scenario (default 1.5, quick 0.3)",
    )
    p.add_argument("--out", default="", help="write raw numbers as JSON here")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary directory (logs, configs)")
    p.add_argument(
        "--max-runtime-s", type=float, default=3600, help="the fake upstream exits after this long"
    )
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.warmup_s is None:
        args.warmup_s = 0.3 if args.quick else 1.5
    if args.slow_streams is None:
        args.slow_streams = 200 if args.quick else 1000
    from fake_upstream import _raise_nofile

    _raise_nofile()  # 1,000 streams need more than the default 1,024 descriptors here too
    work = tempfile.mkdtemp(prefix="lynkr-bench-")
    log(f"work dir {work}")
    try:
        meta = run_meta(args, work)
        fake, fake_port = start_fake(work, args)
        try:
            return asyncio.run(run(args, work, meta, fake, fake_port))
        finally:
            stop_process(fake)
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
