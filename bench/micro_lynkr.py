#!/usr/bin/env python3
"""Micro-benchmarks of lynkr's per-request pure functions on the benchmark bodies (no sockets).

    python bench/micro_lynkr.py            # µs per call for the tiny and the Claude-Code-sized body
    python bench/micro_lynkr.py --lynkr /tmp/lynkr_before.py   # the same steps on another copy (A/B)

Imports lynkr.py from the repo and times, per body: JSON parse, validation, server-tool
selection, OpenAI translation, upstream serialization, answer translation, the session-store
write (an in-memory SQLite), ids, the access-log line and the stream translator on a 200-token
answer. Numbers are best-of-5 means of process CPU time, so a busy machine inflates them little.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import importlib.util

import run_bench as rb
from fake_upstream import render_openai


def load_lynkr(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("lynkr", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["lynkr"] = module
    spec.loader.exec_module(module)
    return module


LYNKR_PATH = (
    sys.argv[sys.argv.index("--lynkr") + 1]
    if "--lynkr" in sys.argv
    else os.path.join(os.path.dirname(HERE), "lynkr.py")
)
lynkr = load_lynkr(LYNKR_PATH)


def bench(fn: Callable[[], Any], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n)
    return best * 1e6


def stream_payload(n_tokens: int) -> bytes:
    """The fake's OpenAI SSE body (de-chunked) for an n-token answer."""
    r = render_openai("fake-model", n_tokens, True)
    out = b""
    for piece in (r.first, *r.tokens, r.tail):
        while piece:
            size_end = piece.index(b"\r\n")
            size = int(piece[:size_end], 16)
            if size == 0:
                break
            out += piece[size_end + 2 : size_end + 2 + size]
            piece = piece[size_end + 2 + size + 2 :]
    return out


def body_steps(kind: str, app: Any, db: sqlite3.Connection) -> list[tuple[str, float]]:
    """µs per call of each per-request step for one body."""
    orch = app.orchestrator
    raw = json.dumps(
        rb.tiny_body(False) if kind == "tiny" else rb.cc_body(False), separators=(",", ":")
    ).encode()
    http_req = lynkr.Request("POST", "/v1/messages", {}, {"host": "127.0.0.1"}, raw, "127.0.0.1:1")
    req = lynkr.validate_messages_request(json.loads(raw), 4096)
    up = orch.upstream_request(req, orch.select_server_tools(req))
    oai, _ = lynkr.anthropic_to_openai({**up, "stream": False}, 16)
    answer = json.loads(render_openai("fake-model", 16, False).whole.split(b"\r\n\r\n", 1)[1])
    message = lynkr.openai_to_anthropic(answer, "claude", [])
    n = 2000 if kind == "tiny" else 300
    counter = iter(range(10**9))

    def store() -> None:
        turn = lynkr.TurnRecord(
            f"sess_{next(counter)}", "req_x", req["model"], req["messages"], reply=message
        )
        lynkr.record_turn(db, turn)

    items = [
        ("json.loads(request body)", lambda: json.loads(raw)),
        (
            "validate_messages_request (incl. json.loads)",
            lambda: lynkr.validate_messages_request(json.loads(raw), 4096),
        ),
        ("Orchestrator.select_server_tools", lambda: orch.select_server_tools(req)),
        ("anthropic_to_openai", lambda: lynkr.anthropic_to_openai({**up, "stream": False}, 16)),
        ("json_bytes(upstream body)", lambda: lynkr.json_bytes(oai)),
        (
            "json.dumps(upstream body, ensure_ascii=True)",
            lambda: json.dumps(oai, separators=(",", ":")).encode(),
        ),
        (
            "openai_to_anthropic + json_bytes(answer)",
            lambda: lynkr.json_bytes(lynkr.openai_to_anthropic(answer, "claude", [])),
        ),
        ("record_turn (new session, :memory:)", store),
        ("message_hash x messages", lambda: [lynkr.message_hash(m) for m in req["messages"]]),
        ("new_id('req_')", lambda: lynkr.new_id("req_")),
        ("App.access_log line", lambda: app.access_log(http_req, 200, time.monotonic())),
        *(
            [
                (
                    "Router.plan + cache_target (routing, per request)",
                    lambda: (app.provider.plan(req), app.provider.cache_target(req)),
                )
            ]
            if hasattr(app.provider, "plan")
            else []
        ),
        (
            "METRICS.inc (6 labels)",
            lambda: lynkr.METRICS.inc(
                "lynkr_requests_total",
                route="/v1/messages",
                method="POST",
                status=200,
                provider="databricks",
                model="claude",
            ),
        ),
    ]
    return [(name, bench(fn, n)) for name, fn in items]


def main() -> int:
    work = tempfile.mkdtemp(prefix="lynkr-micro-")
    open(os.path.join(work, "empty.env"), "w").close()
    cfg = lynkr.load_config(
        environ={
            "DATABRICKS_API_BASE": "http://127.0.0.1:9",
            "DATABRICKS_API_KEY": "x",
            "PROMPT_CACHE_ENABLED": "false",
            "WORKSPACE_ROOT": work,
            "MCP_MANIFEST_DIRS": work,
        },
        env_file=os.path.join(work, "empty.env"),
    )
    log = lynkr.Logger("json", "info", io.StringIO())
    app = lynkr.build_app(cfg, log)
    db = sqlite3.connect(":memory:")
    lynkr.apply_migrations(db)
    rows = []
    for kind in ("tiny", "cc"):
        rows += [(kind, name, us) for name, us in body_steps(kind, app, db)]
    payload = stream_payload(200)
    provider = app.provider

    def translate_stream() -> bytes:
        if hasattr(lynkr, "OpenAIStreamDecoder"):  # since providers became data: the decoder the pump feeds
            decoder = lynkr.OpenAIStreamDecoder("claude", [], "Databricks")
            return decoder.feed(payload) + decoder.flush()
        translator = lynkr.OpenAIStreamTranslator("claude", [])
        parser = lynkr.SSEParser()
        out = b"".join(provider._on_event(data, translator) for _, data in parser.feed(payload))
        return out + translator.finish()

    def capture_parse() -> None:
        lynkr.sse_to_message(sse_bytes)

    sse_bytes = translate_stream()
    rows.append(
        (
            "stream",
            "OpenAI stream decoder (SSEParser + translator), 200 tokens in one chunk",
            bench(translate_stream, 200),
        )
    )
    rows.append(("stream", "sse_to_message (turn capture), 200 tokens", bench(capture_parse, 200)))
    shutil.rmtree(work, ignore_errors=True)
    print(f"lynkr: {LYNKR_PATH}")
    print("| body | step | µs per call |\n|---|---|---|")
    for kind, name, us in rows:
        print(f"| {kind} | {name} | {us:,.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
