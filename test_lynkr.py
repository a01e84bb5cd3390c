#!/usr/bin/env python3
"""Tests for lynkr.py, run against the real proxy process over real sockets.

    python test_lynkr.py [pytest args]      # the one test command (bootstraps, then pytest -n 2)

The proxy is started as a subprocess on an ephemeral port.  The upstreams are fakes written here
that speak the true wire formats and are strict the way the real services are: the fake Databricks
serving endpoint rejects any request a real OpenAI-chat endpoint would reject (Anthropic-only
fields, misplaced ``cache_control``, empty text, orphan tool messages, ...), so a passing test
proves the proxy cleaned the request.  The fakes answer from a per-test script (JSON, SSE split at
awkward byte boundaries with delays, error statuses, disconnects, hangs) and record what they got.

Sections mirror lynkr.py: the bootstrap and the harness (fakes, proxy runner, SSE grammar
checker, fixtures), then one banner per section of lynkr.py, with its number and name and in
its order (4. Utilities ... 21. CLI), and last 22. End to end: runs of the official
``anthropic`` SDK and the real Claude Code CLI.  ``LYNKR_REQUIRE_E2E=1`` turns skips of
the end-to-end tests (missing SDK or CLI) into failures.
"""

from __future__ import annotations

# == Bootstrap ==
# Runs before any third-party import so a bare checkout can install what it needs.

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LYNKR = HERE / "lynkr.py"
# How the harness starts a serving lynkr: the same main() as `python lynkr.py`, but imported, so CPython
# compiles the 15,000-line file once into __pycache__ instead of on each of the suite's hundreds of starts
# (a script is never cached). sys.path[0] and argv[0] are what `python lynkr.py` would have. The command
# line itself (`python lynkr.py ...`) is what run_lynkr runs, and the documentation tests start it too.
SERVE_LYNKR = [sys.executable, "-c", "import sys; sys.path[0] = sys.argv.pop(1); sys.argv[0] = sys.path[0] + "
               "'/lynkr.py'; import lynkr; sys.exit(lynkr.main())", str(HERE)]
CLAUDE_VERSION = "2.1.329"
CLAUDE_DIR = Path.home() / ".cache" / "lynkr" / f"claude-code-{CLAUDE_VERSION}"
MCP_SERVER_TIME_VERSION = "2026.10.19"  # PyPI; keep in step with .ci/run
MCP_NPM_VERSION = "2026.8.31"  # @modelcontextprotocol/server-everything and server-filesystem; as in .ci/run
MCP_NPM_DIR = Path.home() / ".cache" / "lynkr" / "mcp-npm"
MCP_NPM_PACKAGES = ("server-everything", "server-filesystem")
# The ground truth of the token-count tests: Claude's published BPE (the tokenizer.json that the
# anthropic SDK shipped up to 0.37), taken from that wheel on PyPI once and cached.
CLAUDE_TOKENIZER_SDK = "0.34.2"
CLAUDE_TOKENIZER = Path.home() / ".cache" / "lynkr" / f"claude-tokenizer-{CLAUDE_TOKENIZER_SDK}.json"


def _mcp_npm_ok() -> bool:
    import json

    for pkg in MCP_NPM_PACKAGES:
        meta = MCP_NPM_DIR / "node_modules" / "@modelcontextprotocol" / pkg / "package.json"
        try:
            if json.loads(meta.read_text()).get("version") != MCP_NPM_VERSION:
                return False
        except (OSError, ValueError):
            return False
        if not os.access(MCP_NPM_DIR / "node_modules" / ".bin" / f"mcp-{pkg}", os.X_OK):
            return False
    return True


def _fetch_claude_tokenizer() -> None:
    import tempfile
    import zipfile

    with tempfile.TemporaryDirectory() as tmp:
        if subprocess.call([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                            f"anthropic=={CLAUDE_TOKENIZER_SDK}"]) != 0:
            return  # the token-count tests then skip (or fail under LYNKR_REQUIRE_E2E=1)
        wheel = next(Path(tmp).glob("anthropic-*.whl"))
        CLAUDE_TOKENIZER.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            CLAUDE_TOKENIZER.write_bytes(z.read("anthropic/tokenizer.json"))


def _bootstrap(argv: list[str]) -> int:
    if any(importlib.util.find_spec(m) is None for m in ("pytest", "xdist", "anthropic", "hypothesis", "tokenizers",
                                                           "botocore")):
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", ".[test]"], cwd=HERE)
    if not CLAUDE_TOKENIZER.is_file():
        _fetch_claude_tokenizer()
    cli_missing = not os.environ.get("LYNKR_CLAUDE_BIN") and not (CLAUDE_DIR / "node_modules/.bin/claude").exists()
    if cli_missing and shutil.which("npm"):  # a failure here only makes the CLI tests skip (or fail under CI)
        subprocess.call(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(CLAUDE_DIR),
                         f"@anthropic-ai/claude-code@{CLAUDE_VERSION}"])
    # Optional extras the tests exercise: the repo index (tree-sitter grammars) and MCP (the mcp SDK,
    # mcp-server-time from PyPI, server-everything/-filesystem from npm, cached by version).
    # A failure here only makes those tests skip (or fail under LYNKR_REQUIRE_E2E=1).
    if any(importlib.util.find_spec(m) is None for m in ("tree_sitter", "tree_sitter_python", "mcp", "mcp_server_time")):
        subprocess.call([sys.executable, "-m", "pip", "install", "-q", "-e", ".[index,mcp]",
                         f"mcp-server-time=={MCP_SERVER_TIME_VERSION}"], cwd=HERE)
    if not _mcp_npm_ok() and shutil.which("npm"):
        subprocess.call(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--save-exact",
                         "--prefix", str(MCP_NPM_DIR),
                         *(f"@modelcontextprotocol/{p}@{MCP_NPM_VERSION}" for p in MCP_NPM_PACKAGES)])
    cmd = [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", Path(__file__).name, *argv]
    return subprocess.call(cmd, cwd=HERE)


if __name__ == "__main__":
    sys.exit(_bootstrap(sys.argv[1:]))

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import copy
import dataclasses
import hashlib
import hmac
import http.client
import itertools
import json
import random
import secrets
import re
import signal
import socket
import ssl
import struct
import threading
import time
import urllib.parse
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import sqlite3
import shlex
import datetime
import math
import select
import string
import textwrap
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lynkr import (  # noqa: E402 - the pure functions under test
    ModelFacts,
    OpenAIDialect,
    ResponsesStreamDecoder,
    SSEParser,
    UpstreamUnavailable,
    _openai_error,
    anthropic_to_responses,
    encode_reasoning,
    model_facts,
    reasoning_item,
    responses_to_anthropic,
)
from lynkr import LynkrError as _LynkrError  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import botocore.auth  # noqa: E402 - test-only oracle (the test extra); lynkr never imports it
import botocore.awsrequest  # noqa: E402
import botocore.credentials  # noqa: E402
import botocore.eventstream  # noqa: E402
import botocore.session  # noqa: E402

from lynkr import (  # noqa: E402 - the pure functions under test
    AwsCredentials,
    EventStreamDecoder,
    aws_credentials,
    aws_region,
    bedrock_error,
    ProviderSpec,
    _bedrock_url,
    sigv4_authorization,
    sigv4_headers,
)


# == Harness ==
# What the tests of more than one section share. A helper that one section's tests alone use sits at
# the start of that section, or next to the tests of its sub-topic.

# -- constants and small helpers --

CLIENT_KEY = "sk-ant-client-canary-7f3a9c"  # what test clients send; must never reach an upstream
DBX_KEY = "dapi-fake-databricks-secret-51c2"
AZ_KEY = "azure-fake-foundry-secret-88d1"
REQ_ID = re.compile(r"^req_[0-9a-f]{24}$")
EPH = {"type": "ephemeral"}
DEFAULT_HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": CLIENT_KEY}


def jbytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def dig(obj: Any, path: str) -> Any:
    """dig(body, "messages.-1.content.0") -> value, or MISSING."""
    for part in path.split(".") if path else []:
        if isinstance(obj, list) and re.fullmatch(r"-?\d+", part) and -len(obj) <= int(part) < len(obj):
            obj = obj[int(part)]
        elif isinstance(obj, dict) and part in obj:
            obj = obj[part]
        else:
            return MISSING
    return obj


class _Missing:
    def __repr__(self) -> str:
        return "<MISSING>"


MISSING = _Missing()


def check_expectations(obj: Any, expect: dict[str, Any]) -> None:
    """Each key is a dig() path; a value is compared with ==, or called as a predicate if callable."""
    for path, want in expect.items():
        got = dig(obj, path)
        if callable(want) and not isinstance(want, _Missing):
            assert want(got), f"{path}: predicate failed on {got!r}\nwhole body: {json.dumps(obj)[:3000]}"
        else:
            assert got == want, f"{path}: expected {want!r}, got {got!r}\nwhole body: {json.dumps(obj)[:3000]}"


def texts(msg: dict) -> list[str]:
    c = msg.get("content")
    if isinstance(c, str):
        return [c]
    return [p.get("text") for p in c or [] if isinstance(p, dict) and p.get("type") == "text"]


def split_at(data: bytes, points) -> list[bytes]:
    pts = sorted({p for p in points if 0 < p < len(data)})
    return [data[a:b] for a, b in zip([0, *pts], [*pts, len(data)])]


def per_event(data: bytes) -> list[bytes]:
    sep = b"\r\n\r\n" if b"\r\n\r\n" in data else b"\n\n"
    return [p + sep for p in data.split(sep) if p]


def awkward_points(data: bytes) -> list[int]:
    """Split points a careless SSE parser gets wrong: mid-UTF-8, between the two newlines of an event
    separator, inside 'data:' and inside '[DONE]'."""
    pts = [i for i in range(1, len(data)) if 0x80 <= data[i] < 0xC0]  # UTF-8 continuation bytes
    pts += [i for i in range(1, len(data)) if data[i - 1 : i + 1] in (b"\n\n", b"\r\n", b"\n\r")]
    pts += [m.start() + 3 for m in re.finditer(rb"data:", data)]
    pts += [m.start() + 3 for m in re.finditer(rb"\[DONE\]", data)]
    return pts


def tiny_png(w: int = 1, h: int = 1) -> str:
    """A valid w x h greyscale PNG, base64."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\x80" * w for _ in range(h))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


PNG_B64 = tiny_png()


def ignores_all(gitignore: Path) -> bool:
    """True if the file exists and its only pattern is `*` (comments allowed)."""
    lines = gitignore.read_text().splitlines() if gitignore.is_file() else []
    return [x.strip() for x in lines if x.strip() and not x.lstrip().startswith("#")] == ["*"]


def require_e2e(what: str, ok: bool) -> None:
    if not ok:
        if os.environ.get("LYNKR_REQUIRE_E2E") == "1":
            pytest.fail(f"{what} is not available and LYNKR_REQUIRE_E2E=1")
        pytest.skip(f"{what} is not available")


def non_loopback_ip() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent; this only picks the outgoing interface
            ip = s.getsockname()[0]
        with socket.socket() as t:
            t.bind((ip, 0))
        return None if ip.startswith("127.") else ip
    except OSError:
        return None


# -- Anthropic-shaped request pieces --


def user(content: Any) -> dict:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict:
    return {"role": "assistant", "content": content}


def text(t: str, **kw: Any) -> dict:
    return {"type": "text", "text": t, **kw}


def tool_use(id: str, name: str, input: dict) -> dict:
    return {"type": "tool_use", "id": id, "name": name, "input": input}


def tool_result(id: str, content: Any, **kw: Any) -> dict:
    return {"type": "tool_result", "tool_use_id": id, "content": content, **kw}


def image_b64(data: str = PNG_B64, mt: str = "image/png") -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": mt, "data": data}}


WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
GET_WEATHER = {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER_SCHEMA}

BASH_SCHEMA = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
               "properties": {"command": {"type": "string", "description": "The command to run"},
                              "timeout": {"type": "number"}},
               "required": ["command"], "additionalProperties": False}
CC_BETAS = ("claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
            "per-turn-control-2026-07-01,mid-conversation-tool-changes-2026-07-01,"
            "thinking-token-count-2026-05-13,advanced-tool-use-2025-11-20,effort-2025-11-24")
CC_HEADERS = {"anthropic-beta": CC_BETAS, "anthropic-dangerous-direct-browser-access": "true", "x-app": "cli",
              "user-agent": "claude-cli/2.1.329 (external, sdk-cli)",
              "x-claude-code-session-id": "5b0b8f3e-2f7e-4d8e-9a51-0c7f4c1e9d11"}


def base_req(**kw: Any) -> dict:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [user("hi")]}
    body.update(kw)
    return body


def cc_body(model: str = "claude-opus-5-5", stream: bool = True, canary: str = "", messages=None) -> dict:
    """A first request shaped like Claude Code 2.1.329's (claude-code.md §3), in its key order."""
    return {
        "model": model,
        "messages": messages or [
            {"role": "system", "content": [text(f"<env>cwd: /work/project {canary}</env>")],
             "output_config": {"effort": "medium"}},
            user([text("<system-reminder>As you answer, use the context.</system-reminder>"),
                  text(f"list the files please {canary}", cache_control=EPH)]),
        ],
        "system": [text("x-anthropic-billing-header: cc_version=2.1.329.a3f; cc_entrypoint=sdk-cli;"),
                   text("You are Claude Code, Anthropic's official CLI for Claude.", cache_control=EPH),
                   text(f"You are an interactive agent. Be concise. {canary}", cache_control=EPH)],
        "tools": [{"name": "Bash", "description": "Executes a bash command", "input_schema": BASH_SCHEMA},
                  {"name": "DeferredToolPlaceholder", "description": "Deferred tools",
                   "input_schema": {"type": "object", "properties": {}}, "defer_loading": True}],
        "metadata": {"user_id": json.dumps({"device_id": "ab" * 32, "account_uuid": "",
                                            "session_id": "5b0b8f3e-2f7e-4d8e-9a51-0c7f4c1e9d11"})},
        "max_tokens": 128000,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "medium"},
        "stream": stream,
    }


# -- OpenAI chat (Databricks) response builders --


def oai_completion(text: str | None = "Hello!", tool_calls=(), finish: str = "stop", usage: dict | None = None,
                   content: Any = MISSING, **message_extra: Any) -> dict:
    msg: dict[str, Any] = {"role": "assistant", "content": text if content is MISSING else content}
    if tool_calls:
        msg["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": a if isinstance(a, str)
                                                                          else json.dumps(a)}}
                             for i, n, a in tool_calls]
    msg.update(message_extra)
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": "databricks-claude",
            "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
            "usage": usage or {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}


def oai_chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None,
              choices: bool = True) -> dict:
    c: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
                         "model": "databricks-claude"}
    c["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []
    if usage is not None:
        c["usage"] = usage
    return c


def json_frags(args: dict, n: int = 3) -> list[str]:
    s = json.dumps(args, ensure_ascii=False)
    step = max(1, len(s) // n)
    return [s[i : i + step] for i in range(0, len(s), step)]


def oai_stream(text: str | None = None, tools=(), finish: str = "stop", usage: dict | None = None,
               quirk: bool = False, interleave: bool = False, pieces: int = 3) -> list[dict]:
    """Chunks as a Databricks endpoint streams them: a role chunk, text in pieces, tool calls
    (id+name first, then argument fragments), a finish chunk, then a usage-only chunk."""
    chunks = [oai_chunk({"role": "assistant"})]
    if text:
        step = max(1, len(text) // pieces)
        chunks += [oai_chunk({"content": text[i : i + step]}) for i in range(0, len(text), step)]
    per_call = []
    for k, (cid, name, args) in enumerate(tools):
        first = {"index": k, "id": cid, "type": "function", "function": {"name": name, "arguments": "{}" if quirk else ""}}
        frags = [] if (quirk and args == {}) else json_frags(args)
        per_call.append([first] + [{"index": k, "function": {"arguments": f}} for f in frags])
    if interleave:
        order = [tc for group in itertools.zip_longest(*per_call) for tc in group if tc]
    else:
        order = [tc for group in per_call for tc in group]
    chunks += [oai_chunk({"tool_calls": [tc]}) for tc in order]
    chunks.append(oai_chunk({}, finish=finish))
    chunks.append(oai_chunk(choices=False, usage=usage or {"prompt_tokens": 21, "completion_tokens": 8,
                                                            "total_tokens": 29}))
    return chunks


def oai_sse(chunks: list[dict], done: bool = True) -> bytes:
    out = b"".join(b"data: " + jbytes(c) + b"\n\n" for c in chunks)
    return out + (b"data: [DONE]\n\n" if done else b"")


# -- Anthropic response builders --


def anth_message(content=None, *, model: str = "claude-sonnet-4-5", stop_reason: str = "end_turn",
                 usage: dict | None = None, id: str = "msg_01FAKEUPSTREAM") -> dict:
    return {"id": id, "type": "message", "role": "assistant", "model": model,
            "content": content if content is not None else [text("Hello from fake Azure")],
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": usage or {"input_tokens": 31, "output_tokens": 7, "cache_creation_input_tokens": 0,
                               "cache_read_input_tokens": 0}}


def anth_events(msg: dict) -> list[tuple[str, dict]]:
    """The SSE event list the Anthropic API would stream for msg (wire-formats.md §1.5)."""
    start = dict(msg, content=[], stop_reason=None, stop_sequence=None,
                 usage=dict(msg["usage"], output_tokens=1))
    ev: list[tuple[str, dict]] = [("message_start", {"type": "message_start", "message": start})]
    for i, b in enumerate(msg["content"]):
        if b["type"] == "text":
            cb, deltas = text(""), [{"type": "text_delta", "text": p} for p in (b["text"][:3], b["text"][3:]) if p]
        elif b["type"] == "tool_use":
            cb = dict(b, input={})
            deltas = [{"type": "input_json_delta", "partial_json": f} for f in json_frags(b["input"])]
        else:  # thinking
            cb = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": b["thinking"]},
                      {"type": "signature_delta", "signature": b["signature"]}]
        ev.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": cb}))
        ev += [("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}) for d in deltas]
        ev.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
        if i == 0:
            ev.append(("ping", {"type": "ping"}))
    ev.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": msg["stop_reason"],
                                                                    "stop_sequence": None},
                                 "usage": {"output_tokens": msg["usage"]["output_tokens"]}}))
    ev.append(("message_stop", {"type": "message_stop"}))
    return ev


def anth_sse(events: list[tuple[str, dict]], crlf: bool = False) -> bytes:
    nl = "\r\n" if crlf else "\n"
    return "".join(f"event: {e}{nl}data: {json.dumps(d, ensure_ascii=False)}{nl}{nl}" for e, d in events).encode()


def anth_error(status: int, etype: str, message: str) -> dict:
    return {"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_upstream0123"}


# -- fake upstream HTTP servers --


@dataclasses.dataclass
class Recorded:
    """One request as a fake upstream received it."""

    method: str
    target: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    raw: bytes
    peer: tuple

    @property
    def body(self) -> Any:
        try:
            return json.loads(self.raw)
        except ValueError:
            return None


@dataclasses.dataclass
class Reply:
    """What a fake sends back.  pieces=None: one Content-Length body.  pieces=[...]: a chunked body,
    each piece its own chunk and send(), `gap` seconds apart (`pauses[i]` extra before piece i)."""

    status: int = 200
    body: bytes = b""
    headers: tuple = ()
    pieces: list[bytes] | None = None
    gap: float = 0.002
    pauses: dict[int, float] = dataclasses.field(default_factory=dict)
    cut: bool = False  # drop the connection instead of sending the final chunk
    hang: float = 0.0  # wait this long before the status line
    close: bool = False


def json_reply(obj: Any, status: int = 200, headers: tuple = (), **kw: Any) -> Reply:
    return Reply(status, jbytes(obj), (("content-type", "application/json"), *headers), **kw)


def stream_reply(data: bytes, pieces: list[bytes] | None = None, **kw: Any) -> Reply:
    return Reply(200, b"", (("content-type", "text/event-stream"), ("cache-control", "no-cache")),
                 pieces=pieces if pieces is not None else per_event(data), **kw)


def dbx_error(status: int, code: str, message: str, headers: tuple = ()) -> Reply:
    return json_reply({"error_code": code, "message": message}, status, headers)


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 413: "Payload Too Large", 422: "Unprocessable Entity",
           429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout", 529: "Overloaded"}


class FakeHTTP:
    """A threaded HTTP/1.1 server on an ephemeral port (keep-alive, optional TLS) that records requests
    and answers from a script: push(Reply | callable(Recorded) -> Reply, ...), else default()."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None):
        self.sock = socket.create_server((host, 0))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.tls = tls
        self.requests: list[Recorded] = []
        self.script: deque = deque()
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.conns: list[socket.socket] = []
        self.broken = 0  # replies cut short because the peer (the proxy) closed the connection
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.script.clear()

    def push(self, *replies: Reply | Callable[[Recorded], Reply]) -> None:
        with self.lock:
            self.script.extend(replies)

    @property
    def last(self) -> Recorded:
        assert self.requests, "the fake upstream received no request"
        return self.requests[-1]

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        for c in list(self.conns):
            try:
                c.close()
            except OSError:
                pass

    # -- override points --
    def check(self, rec: Recorded) -> Reply | None:
        return None

    def default(self, rec: Recorded) -> Reply:
        return json_reply({"ok": True})

    # -- machinery --
    def respond(self, rec: Recorded) -> Reply:
        bad = self.check(rec)
        if bad is not None:
            return bad
        with self.lock:
            item = self.script.popleft() if self.script else None
        if item is None:
            return self.default(rec)
        return item(rec) if callable(item) else item

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, addr), daemon=True).start()

    def _serve(self, conn: socket.socket, addr: tuple) -> None:
        try:
            if self.tls:
                conn.settimeout(10)
                conn = self.tls.wrap_socket(conn, server_side=True)
                conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns.append(conn)
            reader = conn.makefile("rb")
            while not self.closed.is_set():
                rec = self._read_request(reader, addr)
                if rec is None:
                    break
                with self.lock:
                    self.requests.append(rec)
                if not self._send(conn, self.respond(rec), rec):
                    break
        except (OSError, ValueError, ssl.SSLError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    @staticmethod
    def _read_request(reader, addr: tuple) -> Recorded | None:
        line = reader.readline(65536)
        while line in (b"\r\n", b"\n"):
            line = reader.readline(65536)
        if not line:
            return None
        method, target, _version = line.decode("latin-1").split()
        headers: dict[str, str] = {}
        while True:
            h = reader.readline(65536)
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            k, v = k.strip().lower(), v.strip()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raw = b""
            while True:
                size = int(reader.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while reader.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                raw += reader.read(size)
                reader.readline()
        else:
            raw = reader.read(int(headers.get("content-length") or 0))
        parts = urllib.parse.urlsplit(target)
        return Recorded(method, target, parts.path, parts.query, headers, raw, addr)

    def _send(self, conn: socket.socket, r: Reply, rec: Recorded) -> bool:
        if r.hang:
            deadline = time.monotonic() + r.hang
            while time.monotonic() < deadline and not self.closed.is_set():
                time.sleep(0.02)
            if self.closed.is_set():
                return False
        close = r.close or rec.headers.get("connection", "").lower() == "close"
        head = [f"HTTP/1.1 {r.status} {REASONS.get(r.status, 'Status')}"]
        head += [f"{k}: {v}" for k, v in r.headers]
        head.append("transfer-encoding: chunked" if r.pieces is not None else f"content-length: {len(r.body)}")
        if close:
            head.append("connection: close")
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if r.pieces is None:
            conn.sendall(r.body)
            return not close
        for i, piece in enumerate(r.pieces):
            delay = r.pauses.get(i, 0.0) + (r.gap if i else 0.0)
            if delay:
                time.sleep(delay)
            if piece:
                try:
                    conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                except OSError:
                    with self.lock:
                        self.broken += 1
                    return False
        if r.cut:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return False
        conn.sendall(b"0\r\n\r\n")
        return not close


# -- what a real OpenAI-chat serving endpoint accepts; the Databricks and Azure fakes --

OAI_TOP_KEYS = {"messages", "max_tokens", "temperature", "top_p", "top_k", "stop", "n", "stream", "stream_options",
                "tools", "tool_choice", "parallel_tool_calls", "thinking", "user"}
OAI_MSG_KEYS = {"system": {"role", "content"}, "user": {"role", "content", "name"},
                "assistant": {"role", "content", "tool_calls", "name"}, "tool": {"role", "content", "tool_call_id"}}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def _has_key(obj: Any, key: str) -> bool:
    if isinstance(obj, dict):
        return key in obj or any(_has_key(v, key) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_key(v, key) for v in obj)
    return False


def _oai_content_problems(where: str, role: str, content: Any, has_calls: bool) -> list[str]:
    if content is None:
        return [] if role == "assistant" and has_calls else [f"{where}.content: must not be null"]
    if isinstance(content, str):
        return [] if content.strip() else [f"{where}.content: text content must be non-empty"]
    if not isinstance(content, list) or not content:
        return [f"{where}.content: must be a non-empty string or list of parts"]
    p = []
    for j, part in enumerate(content):
        w = f"{where}.content[{j}]"
        t = part.get("type") if isinstance(part, dict) else None
        if t == "text":
            if set(part) - {"type", "text", "cache_control"}:
                p.append(f"{w}: unexpected keys {sorted(set(part) - {'type', 'text', 'cache_control'})}")
            if not isinstance(part.get("text"), str) or not part["text"].strip():
                p.append(f"{w}: text content blocks must be non-empty")
            cc = part.get("cache_control")
            if cc is not None and (not isinstance(cc, dict) or cc.get("type") != "ephemeral"
                                   or set(cc) - {"type", "ttl"}):
                p.append(f"{w}.cache_control: invalid {cc!r}")
        elif t == "image_url" and role == "user":
            url = dig(part, "image_url.url")
            if set(part) != {"type", "image_url"} or not isinstance(url, str) or not (
                    url.startswith("data:image/") and ";base64," in url or url.startswith(("http://", "https://"))):
                p.append(f"{w}: invalid image_url part {part!r}"[:300])
        elif t == "reasoning" and role == "assistant":
            summ = part.get("summary")
            if set(part) != {"type", "summary"} or not isinstance(summ, list) or not all(
                    isinstance(s, dict) and s.get("type") == "summary_text" and isinstance(s.get("text"), str)
                    and set(s) <= {"type", "text", "signature"} for s in summ):
                p.append(f"{w}: invalid reasoning part {part!r}"[:300])
        else:
            p.append(f"{w}: content part type {t!r} is not allowed for role {role}")
    return p


def openai_violations(b: dict) -> list[str]:
    """Everything a real Databricks OpenAI-chat endpoint (Claude behind it) would reject with a 400."""
    p = [f"unknown field {k!r}" for k in b if k not in OAI_TOP_KEYS]
    msgs = b.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return p + ["messages: must be a non-empty list"]
    pending: list[str] = []
    for i, m in enumerate(msgs):
        w = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in OAI_MSG_KEYS:
            p.append(f"{w}: invalid message {m!r}"[:200])
            continue
        role = m["role"]
        if set(m) - OAI_MSG_KEYS[role]:
            p.append(f"{w}: unexpected keys {sorted(set(m) - OAI_MSG_KEYS[role])}")
        if pending and role != "tool":
            p.append(f"{w}: assistant tool_calls {pending} not followed by a tool message for each id")
            pending = []
        if role == "system" and i != 0:
            p.append(f"{w}: a system message is only allowed first")
        if role == "tool":
            tid = m.get("tool_call_id")
            if tid not in pending:
                p.append(f"{w}: tool message for {tid!r} has no preceding assistant tool call")
            else:
                pending.remove(tid)
            if not isinstance(m.get("content"), str):
                p.append(f"{w}.content: tool content must be a string")
            continue
        calls = m.get("tool_calls")
        p += _oai_content_problems(w, role, m.get("content"), bool(calls))
        if role == "assistant" and "tool_calls" in m:
            if not isinstance(calls, list) or not calls:
                p.append(f"{w}.tool_calls: must be a non-empty list")
                continue
            for j, c in enumerate(calls):
                fn = c.get("function") if isinstance(c, dict) else None
                ok = (isinstance(c, dict) and set(c) == {"id", "type", "function"} and c["type"] == "function"
                      and isinstance(c["id"], str) and TOOL_ID.match(c["id"]) and isinstance(fn, dict)
                      and set(fn) == {"name", "arguments"} and isinstance(fn["arguments"], str))
                if ok:
                    try:
                        ok = isinstance(json.loads(fn["arguments"]), dict)
                    except ValueError:
                        ok = False
                if not ok:
                    p.append(f"{w}.tool_calls[{j}]: invalid {c!r}"[:300])
                else:
                    pending.append(c["id"])
    if pending:
        p.append(f"assistant tool_calls {pending} not followed by a tool message for each id")
    names = []
    tools = b.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            p.append("tools: must be a list")
            tools = []
        for j, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not (isinstance(t, dict) and set(t) == {"type", "function"} and t["type"] == "function"
                    and isinstance(fn, dict) and set(fn) <= {"name", "description", "parameters"}
                    and isinstance(fn.get("name"), str) and TOOL_NAME.match(fn["name"])
                    and isinstance(fn.get("parameters", {}), dict)
                    and isinstance(fn.get("description", ""), str)):
                p.append(f"tools[{j}]: not a {{type:function, function:{{name,description,parameters}}}}: {t!r}"[:300])
                continue
            if _has_key(fn.get("parameters"), "$schema"):
                p.append(f"tools[{j}].function.parameters: '$schema' is not allowed")
            names.append(fn["name"])
        if len(names) != len(set(names)):
            p.append("tools: duplicate names")
    tc = b.get("tool_choice")
    forced = False
    if "tool_choice" in b:
        if not names:
            p.append("tool_choice: only allowed when tools are given")
        if tc in ("auto", "none", "required"):
            forced = tc == "required"
        elif (isinstance(tc, dict) and set(tc) == {"type", "function"} and tc["type"] == "function"
              and isinstance(tc["function"], dict) and set(tc["function"]) == {"name"}):
            forced = True
            if tc["function"]["name"] not in names:
                p.append(f"tool_choice: unknown function {tc['function']['name']!r}")
        else:
            p.append(f"tool_choice: invalid value {tc!r}")
    if "parallel_tool_calls" in b and not isinstance(b["parallel_tool_calls"], bool):
        p.append("parallel_tool_calls: must be a bool")
    mt = b.get("max_tokens")
    if "max_tokens" in b and (not isinstance(mt, int) or isinstance(mt, bool) or mt < 1):
        p.append("max_tokens: must be a positive integer")
    if "thinking" in b:
        th = b["thinking"]
        if not (isinstance(th, dict) and set(th) == {"type", "budget_tokens"} and th["type"] == "enabled"
                and isinstance(th["budget_tokens"], int)):
            p.append(f"thinking: invalid {th!r}")
        elif th["budget_tokens"] < 1024 or not isinstance(mt, int) or th["budget_tokens"] >= mt:
            p.append("thinking.budget_tokens: must be >= 1024 and less than max_tokens")
        if forced:
            p.append("thinking may not be used when tool_choice forces tool use")
    stop = b.get("stop")
    if stop is not None and not (isinstance(stop, str) or (isinstance(stop, list)
                                                           and all(isinstance(s, str) and s for s in stop))):
        p.append("stop: must be a string or list of strings")
    if "stream" in b and not isinstance(b["stream"], bool):
        p.append("stream: must be a bool")
    return p


def anthropic_violations(b: dict, count: bool = False) -> list[str]:
    """What the Anthropic Messages API (Azure Foundry, Databricks AI gateway) rejects."""
    p = []
    if not isinstance(b.get("model"), str) or not b["model"]:
        p.append("model: Field required")
    if not count and (not isinstance(b.get("max_tokens"), int) or b["max_tokens"] < 1):
        p.append("max_tokens: Field required")
    msgs = b.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return p + ["messages: Field required"]
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            p.append(f"messages.{i}.role: Input should be 'user' or 'assistant' (mid-conversation system "
                     f"messages are not supported)")
            continue
        if set(m) - {"role", "content"}:
            p.append(f"messages.{i}: Extra inputs are not permitted: {sorted(set(m) - {'role', 'content'})}")
        c = m.get("content")
        blocks = [text(c)] if isinstance(c, str) else c if isinstance(c, list) else None
        if blocks is None or (not blocks and i != len(msgs) - 1):
            p.append(f"messages.{i}.content: invalid")
            continue
        for j, blk in enumerate(blocks):
            if isinstance(blk, dict) and blk.get("type") == "text" and not (blk.get("text") or "").strip():
                p.append(f"messages.{i}.content.{j}: text content blocks must contain non-whitespace text")
    s = b.get("system")
    if s is not None and not isinstance(s, str):
        if not isinstance(s, list):
            p.append("system: invalid")
        else:
            for j, blk in enumerate(s):
                if not (isinstance(blk, dict) and blk.get("type") == "text" and (blk.get("text") or "").strip()):
                    p.append(f"system.{j}: text content blocks must contain non-whitespace text")
    return p


class FakeDatabricks(FakeHTTP):
    """Databricks model serving: POST /serving-endpoints/<name>/invocations (OpenAI chat, strict) and the
    native AI gateway POST /ai-gateway/anthropic/v1/messages[/count_tokens] (Anthropic), Bearer auth."""

    key = DBX_KEY
    ANTH = ("/ai-gateway/anthropic/v1/messages", "/ai-gateway/anthropic/v1/messages/count_tokens")

    def endpoint(self, rec: Recorded) -> str | None:
        m = re.fullmatch(r"/serving-endpoints/([^/]+)/invocations", rec.path)
        return m.group(1) if m else None

    def check(self, rec: Recorded) -> Reply | None:
        if rec.path not in self.ANTH and not self.endpoint(rec):
            return dbx_error(404, "ENDPOINT_NOT_FOUND", f"Path {rec.path} does not exist")
        if rec.method != "POST":
            return dbx_error(405, "BAD_REQUEST", "Method not allowed")
        if rec.headers.get("authorization") != f"Bearer {self.key}":
            return dbx_error(401, "UNAUTHENTICATED", "Invalid access token")
        body = rec.body
        if not isinstance(body, dict):
            return dbx_error(400, "BAD_REQUEST", "Request body is not a JSON object")
        if rec.path in self.ANTH:
            problems = anthropic_violations(body, count=rec.path.endswith("count_tokens"))
            if problems:
                return json_reply(anth_error(400, "invalid_request_error", "; ".join(problems)), 400)
            return None
        problems = openai_violations(body)
        if problems:
            return dbx_error(400, "BAD_REQUEST", "; ".join(problems))
        return None

    def default(self, rec: Recorded) -> Reply:
        body = rec.body
        if rec.path.endswith("count_tokens"):
            return json_reply({"input_tokens": 4242})
        if rec.path in self.ANTH:
            msg = anth_message([text("Hello from the Databricks AI gateway")], model=body["model"])
            return stream_reply(anth_sse(anth_events(msg))) if body.get("stream") else json_reply(msg)
        if body.get("stream"):
            return stream_reply(oai_sse(oai_stream("Hello from fake Databricks")))
        return json_reply(oai_completion("Hello from fake Databricks"))


class FakeAzure(FakeHTTP):
    """Claude in Microsoft Foundry: POST /anthropic/v1/messages[/count_tokens], x-api-key or api-key."""

    key = AZ_KEY
    PATHS = ("/anthropic/v1/messages", "/anthropic/v1/messages/count_tokens")

    def check(self, rec: Recorded) -> Reply | None:
        if rec.path not in self.PATHS or rec.method != "POST":
            return json_reply({"error": {"code": "404", "message": "Resource not found"}}, 404)
        if self.key not in (rec.headers.get("x-api-key"), rec.headers.get("api-key")):
            return json_reply(anth_error(401, "authentication_error", "invalid x-api-key"), 401)
        if not rec.headers.get("anthropic-version"):
            return json_reply(anth_error(400, "invalid_request_error", "anthropic-version: header is required"), 400)
        body = rec.body
        if not isinstance(body, dict):
            return json_reply(anth_error(400, "invalid_request_error", "body: not an object"), 400)
        problems = anthropic_violations(body, count=rec.path.endswith("count_tokens"))
        if problems:
            return json_reply(anth_error(400, "invalid_request_error", "; ".join(problems)), 400)
        return None

    def default(self, rec: Recorded) -> Reply:
        body = rec.body
        if rec.path.endswith("count_tokens"):
            return json_reply({"input_tokens": 77})
        msg = anth_message(model=body["model"])
        return stream_reply(anth_sse(anth_events(msg))) if body.get("stream") else json_reply(msg)


# -- an HTTP CONNECT proxy --


class TunnelProxy:
    """A tiny forward proxy: CONNECT host:port (tunnels to 127.0.0.1:port, whatever the host) and
    absolute-form requests (forwarded to the URL's host).  Records each request line.  refuse=True
    answers 403 to everything (to prove a request did NOT go through it)."""

    def __init__(self, refuse: bool = False):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.refuse = refuse
        self.seen: list[str] = []  # request lines
        self.heads: list[str] = []  # whole request heads, lower-cased
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(c,), daemon=True).start()

    def _handle(self, c: socket.socket) -> None:
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = c.recv(65536)
                if not data:
                    return
                buf += data
            head, rest = buf.split(b"\r\n\r\n", 1)
            first = head.split(b"\r\n", 1)[0].decode("latin-1")
            self.seen.append(first)
            self.heads.append(head.decode("latin-1").lower())
            method, target, _ = first.split()
            if self.refuse:
                c.sendall(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                return
            if method == "CONNECT":
                up = socket.create_connection(("127.0.0.1", int(target.rsplit(":", 1)[1])))
                c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                u = urllib.parse.urlsplit(target)
                up = socket.create_connection((u.hostname, u.port or 80))
                up.sendall(head + b"\r\n\r\n")
            if rest:
                up.sendall(rest)
            t = threading.Thread(target=self._pipe, args=(up, c), daemon=True)
            t.start()
            self._pipe(c, up)
            t.join(30)
        except OSError:
            pass
        finally:
            c.close()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


@pytest.fixture
def tunnel():
    made: list[TunnelProxy] = []

    def make(refuse: bool = False) -> TunnelProxy:
        made.append(TunnelProxy(refuse))
        return made[-1]

    yield make
    for t in made:
        t.close()


# -- the proxy process and an HTTP client --


@dataclasses.dataclass
class Resp:
    status: int
    headers: dict[str, str]
    data: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.data)
        except ValueError:
            raise AssertionError(f"not JSON (status {self.status}): {self.data[:500]!r}") from None

    @property
    def etype(self) -> str | None:
        return dig(self.json(), "error.type") if self.data.startswith(b"{") else None

    @property
    def emsg(self) -> str:
        return str(dig(self.json(), "error.message"))

    def events(self) -> list[tuple[str | None, Any]]:
        return parse_sse(self.data)

    def stream(self, **kw: Any) -> Stream:
        assert self.status == 200, f"status {self.status}: {self.data[:1000]!r}"
        assert self.headers.get("content-type", "").startswith("text/event-stream"), self.headers
        return assemble(self.events(), **kw)


def call(port: int, method: str, path: str, body: Any = None, headers: dict | None = None,
         timeout: float = 30, defaults: bool = True) -> Resp:
    hdrs = {**(DEFAULT_HEADERS if defaults else {}), **(headers or {})}
    hdrs = {k: v for k, v in hdrs.items() if v is not None}
    data = jbytes(body) if isinstance(body, (dict, list)) else body
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def open_stream(port: int, body: dict, path: str = "/v1/messages", headers: dict | None = None,
                timeout: float = 30) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", path, body=jbytes(body), headers={**DEFAULT_HEADERS, **(headers or {})})
    return conn, conn.getresponse()


def iter_events(resp: http.client.HTTPResponse, t0: float | None = None):
    """Yield (seconds since t0, event, data) as each SSE event arrives."""
    t0 = time.monotonic() if t0 is None else t0
    ev, datas = None, []
    while True:
        line = resp.readline()
        if not line:
            return
        s = line.decode("utf-8").rstrip("\r\n")
        if s == "":
            if ev is not None or datas:
                yield time.monotonic() - t0, ev, _sse_data("\n".join(datas)) if datas else None
            ev, datas = None, []
        elif s.startswith(":"):
            continue
        else:
            field, _, value = s.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                ev = value
            elif field == "data":
                datas.append(value)


def _sse_data(s: str) -> Any:
    try:
        return json.loads(s)
    except ValueError:
        return s


def parse_sse(data: bytes) -> list[tuple[str | None, Any]]:
    out = []
    for block in re.split(r"\r\n\r\n|\n\n|\r\r", data.decode("utf-8").replace("\r\n", "\n")):
        ev, datas = None, []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                ev = value
            elif field == "data":
                datas.append(value)
        if ev is not None or datas:
            out.append((ev, _sse_data("\n".join(datas)) if datas else None))
    return out


def read_response(f) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response from a socket file (Content-Length or chunked)."""
    status_line = f.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    status = int(status_line.split()[1])
    headers = {}
    while (h := f.readline()) not in (b"\r\n", b""):
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        body = b""
        while (size := int(f.readline().split(b";")[0], 16)) != 0:
            body += f.read(size)
            f.readline()
        f.readline()
    else:
        body = f.read(int(headers.get("content-length", 0)))
    return status, headers, body


def base_env(tmp: Path, extra: dict | None = None) -> dict[str, str]:
    """A scratch environment: no proxy variables, no provider, every data path inside tmp."""
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp / "home"), "WORKSPACE_ROOT": str(tmp),
           "LYNKR_DATA_DIR": str(tmp / "lynkr-data"), "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
           # the response cache (a later issue) would answer repeated test requests without the fake upstream
           "PROMPT_CACHE_ENABLED": "false",
           # startup indexing writes CLAUDE.md into the workspace; retries and the breaker would turn a
           # scripted upstream error into a retried success: the tests that want these turn them on
           "LYNKR_INDEX_ON_START": "false", "UPSTREAM_MAX_RETRIES": "0", "CIRCUIT_BREAKER_FAILURES": "0"}
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


class Proxy:
    """A running `python lynkr.py` with stderr (JSON log lines) drained into .lines."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lines: list[str] = []
        self.info: dict = {}
        self.ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()

    def _drain(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("msg") == "listening" and not self.ready.is_set():
                self.info = obj
                self.ready.set()

    def wait_ready(self, timeout: float = 20) -> Proxy:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            if self.proc.poll() is not None:
                time.sleep(0.1)
                raise AssertionError(f"lynkr exited with {self.proc.returncode} before listening:\n{self.stderr}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"lynkr did not log 'listening' within {timeout}s:\n{self.stderr}")
        return self

    @property
    def port(self) -> int:
        return int(self.info["port"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def logs(self) -> list[dict]:
        out = []
        for line in list(self.lines):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def wait_log(self, pred: Callable[[dict], bool], timeout: float = 5, what: str = "log line") -> dict:
        return wait_for(lambda: next((o for o in self.logs() if pred(o)), None), timeout, what)

    def call(self, method: str, path: str, body: Any = None, headers: dict | None = None, **kw: Any) -> Resp:
        return call(self.port, method, path, body, headers, **kw)

    def post(self, body: Any, path: str = "/v1/messages", headers: dict | None = None, **kw: Any) -> Resp:
        return call(self.port, "POST", path, body, headers, **kw)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def spawn(cwd: Path, env: dict, args=("--port", "0")) -> Proxy:
    proc = subprocess.Popen([*SERVE_LYNKR, *args], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return Proxy(proc)


def start_proxy(tmp: Path, extra: dict | None = None, args=("--port", "0")) -> Proxy:
    return spawn(tmp, base_env(tmp, extra), args).wait_ready()


def run_lynkr(tmp: Path, extra: dict | None = None, args=("--port", "0"), timeout: float = 15,
              env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, str(LYNKR), *args], check=False, cwd=tmp, env=env or base_env(tmp, extra),
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"lynkr {args} still running after {timeout}s (expected it to exit): "
                             f"{(e.stderr or b'')[-2000:]!r}") from None


def trust_here(tmp: Path, *files: str) -> None:
    """`lynkr trust` in tmp (HOME is tmp/home, as for every proxy the tests start): ./.env and ./lynkr.toml
    are read only once trusted."""
    r = run_lynkr(tmp, args=("trust", *files))
    assert r.returncode == 0, r.stderr


def dbx_env(fake: FakeHTTP, **kw: Any) -> dict:
    return {"DATABRICKS_API_BASE": fake.url, "DATABRICKS_API_KEY": DBX_KEY, **kw}


def az_env(fake: FakeHTTP, **kw: Any) -> dict:
    return {"MODEL_PROVIDER": "azure-anthropic", "AZURE_ANTHROPIC_ENDPOINT": f"{fake.url}/anthropic/v1/messages",
            "AZURE_ANTHROPIC_API_KEY": AZ_KEY, **kw}


@dataclasses.dataclass
class Stack:
    fake: Any
    proxy: Proxy


# -- the Anthropic SSE grammar checker --


@dataclasses.dataclass
class Stream:
    message: dict | None  # the message the events build (content with parsed tool inputs)
    error: dict | None  # the error object of a final `event: error`
    complete: bool  # saw message_stop
    pings: int
    events: list

    @property
    def content(self) -> list[dict]:
        return self.message["content"] if self.message else []

    def ok(self) -> dict:
        assert self.error is None, f"stream ended with error: {self.error}"
        assert self.complete, f"stream ended without message_stop: {self.events[-5:]}"
        return self.message


DELTA_TYPES = {"text": {"text_delta"}, "tool_use": {"input_json_delta"},
               "thinking": {"thinking_delta", "signature_delta"}}


def assemble(events: list[tuple[str | None, Any]], allow_interleave: bool = False) -> Stream:
    """Check events against the Messages streaming grammar (wire-formats.md §1.5) and build the message."""
    msg = None
    blocks: dict[int, dict] = {}
    json_parts: dict[int, list[str]] = {}
    open_: list[int] = []
    next_index, delta_seen, stopped, pings, error = 0, False, False, 0, None
    for n, (name, data) in enumerate(events):
        where = f"event #{n} ({name}: {json.dumps(data)[:200]})"
        assert error is None, f"{where} after an error event"
        assert not stopped, f"{where} after message_stop"
        assert name is not None, f"{where}: data without an event: line"
        if name == "ping":
            pings += 1
            assert data is None or data == {"type": "ping"}, where
            continue
        assert isinstance(data, dict) and data.get("type") == name, f"{where}: data.type must equal the event name"
        if name == "error":
            error = data.get("error")
            assert isinstance(error, dict) and isinstance(error.get("type"), str) and error.get("message"), where
            continue
        if name == "message_start":
            assert msg is None, f"{where}: second message_start"
            m = data["message"]
            assert str(m.get("id", "")).startswith("msg_"), where
            assert (m.get("type"), m.get("role"), m.get("content")) == ("message", "assistant", []), where
            assert m.get("stop_reason") is None, where
            msg = dict(m, content=[], usage=dict(m.get("usage") or {}))
            continue
        assert msg is not None, f"{where} before message_start"
        if name == "content_block_start":
            i = data["index"]
            assert i == next_index, f"{where}: expected index {next_index}"
            assert not delta_seen, f"{where} after message_delta"
            assert allow_interleave or not open_, f"{where}: block {open_} is still open"
            cb = data["content_block"]
            t = cb.get("type")
            assert t in DELTA_TYPES, f"{where}: unexpected block type"
            if t == "text":
                assert cb == {"type": "text", "text": ""}, where
            elif t == "tool_use":
                assert cb.get("input") == {} and TOOL_ID.match(cb.get("id", "")) and cb.get("name"), where
            else:
                assert cb.get("thinking") == "", where
            blocks[i], json_parts[i] = copy.deepcopy(cb), []
            open_.append(i)
            next_index += 1
        elif name == "content_block_delta":
            i = data["index"]
            assert i in open_, f"{where}: block {i} is not open"
            d, b = data["delta"], blocks[i]
            assert d.get("type") in DELTA_TYPES[b["type"]], f"{where}: wrong delta for a {b['type']} block"
            if d["type"] == "text_delta":
                assert isinstance(d["text"], str), where
                b["text"] += d["text"]
            elif d["type"] == "input_json_delta":
                assert isinstance(d["partial_json"], str), where
                json_parts[i].append(d["partial_json"])
            elif d["type"] == "thinking_delta":
                b["thinking"] += d["thinking"]
            else:
                b["signature"] = b.get("signature", "") + d["signature"]
        elif name == "content_block_stop":
            i = data["index"]
            assert i in open_, f"{where}: block {i} is not open"
            open_.remove(i)
            if blocks[i]["type"] == "tool_use":
                s = "".join(json_parts[i])
                try:
                    blocks[i]["input"] = json.loads(s) if s else {}
                except ValueError:
                    raise AssertionError(f"{where}: tool input JSON does not parse: {s!r}") from None
        elif name == "message_delta":
            assert not open_, f"{where}: blocks {open_} still open"
            assert "stop_reason" in data.get("delta", {}), where
            delta_seen = True
            msg["stop_reason"] = data["delta"]["stop_reason"]
            msg["stop_sequence"] = data["delta"].get("stop_sequence")
            msg["usage"].update(data.get("usage") or {})
        elif name == "message_stop":
            assert delta_seen and not open_, f"{where}: message_stop before message_delta"
            stopped = True
    if msg is not None:
        msg["content"] = [blocks[i] for i in sorted(blocks)]
    assert error is not None or stopped, f"stream ended without message_stop or error: {events[-5:]}"
    return Stream(msg, error, stopped, pings, events)


def block_summary(content: list[dict]) -> list[tuple]:
    out = []
    for b in content:
        if b["type"] == "text":
            out.append(("text", b["text"]))
        elif b["type"] == "tool_use":
            out.append(("tool_use", b["id"], b["name"], b["input"]))
        elif b["type"] == "thinking":
            out.append(("thinking", b["thinking"], b.get("signature", "")))
        else:
            out.append((b["type"],))
    return out


# -- fixtures --


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Every data path into tmp_path, and no proxy variables for in-process clients (the SDK honours them)."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    for var in ("LYNKR_DATA_DIR", "WORKSPACE_ROOT", "SESSION_DB_PATH"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))


def shared_stack(tmp_path_factory, name: str, fake: FakeHTTP, env: dict):
    """A fake and one proxy in front of it for a whole module (the fake closed if the proxy cannot start)."""
    try:
        proxy = start_proxy(tmp_path_factory.mktemp(name), env)
    except BaseException:
        fake.close()
        raise
    yield Stack(fake, proxy)
    proxy.stop()
    fake.close()


@pytest.fixture(scope="module")
def dbx_stack(tmp_path_factory):
    fake = FakeDatabricks()
    yield from shared_stack(tmp_path_factory, "dbx", fake, dbx_env(fake))


@pytest.fixture
def dbx(dbx_stack) -> Stack:
    dbx_stack.fake.reset()
    return dbx_stack


@pytest.fixture(scope="module")
def az_stack(tmp_path_factory):
    fake = FakeAzure()
    yield from shared_stack(tmp_path_factory, "az", fake, az_env(fake))


@pytest.fixture
def az(az_stack) -> Stack:
    az_stack.fake.reset()
    return az_stack


@pytest.fixture
def make_proxy(tmp_path):
    started: list[Proxy] = []

    def make(extra: dict | None = None, args=("--port", "0"), cwd: Path | None = None) -> Proxy:
        p = start_proxy(cwd or tmp_path, extra, args)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def _fake_factory(cls: type[FakeHTTP]):
    """A factory of fakes of one kind, each closed at the end of the test."""
    fakes: list[FakeHTTP] = []

    def make(**kw: Any) -> Any:
        fakes.append(cls(**kw))
        return fakes[-1]

    yield make
    for f in fakes:
        f.close()


@pytest.fixture
def new_dbx():
    yield from _fake_factory(FakeDatabricks)


@pytest.fixture
def new_az():
    yield from _fake_factory(FakeAzure)


# -- scripted multi-turn upstreams --


def result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


def dbx_tool_turns(name: str, args: dict, final: Callable[[str], str]) -> Callable[[Recorded], Reply]:
    """Databricks turn logic: no tool result yet -> call the tool; else answer using the result."""

    def respond(rec: Recorded) -> Reply:
        b = rec.body
        results = [m["content"] for m in b["messages"] if m["role"] == "tool"]
        if results:
            txt, tools, finish = final(result_text(results[-1])), (), "stop"
        else:
            txt, tools, finish = "Let me run that.", [("call_e2e_1", name, args)], "tool_calls"
        if b.get("stream"):
            return stream_reply(oai_sse(oai_stream(txt, tools=tools, finish=finish)))
        return json_reply(oai_completion(txt, tool_calls=tools, finish=finish))

    return respond


# -- the agent loop and the workspace tools: a scripted model, tools called directly --


# A scripted fake upstream plays the model: each pushed `model_turn` answers one upstream request
# (in the provider's wire format, streamed or not, as the request asks) with some text and some
# tool calls.  The proxy runs the server tools for real in a workspace under tmp_path, so every
# assertion is about real files, real SQLite rows and real HTTP exchanges.

AGENT_ENV = {"LYNKR_INDEX_ON_START": "false", "PROMPT_CACHE_ENABLED": "false"}
APP_PY = "def hello():\n    return 'hi'\n"


def model_turn(provider: str, words: str | None = None, calls: tuple = (), usage: tuple[int, int] = (21, 8),
               stop: str | None = None) -> Callable[[Recorded], Reply]:
    """One model answer: `words` then tool calls [(id, name, input)], in Databricks (OpenAI chat) or
    Anthropic format, streamed when the request asks for it."""

    def respond(rec: Recorded) -> Reply:
        streaming = bool(rec.body.get("stream"))
        if provider == "dbx":
            finish = stop or ("tool_calls" if calls else "stop")
            u = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
            if streaming:
                return stream_reply(oai_sse(oai_stream(words, tools=calls, finish=finish, usage=u)))
            return json_reply(oai_completion(words, tool_calls=calls, finish=finish, usage=u))
        content = ([text(words)] if words else []) + [tool_use(i, n, a) for i, n, a in calls]
        msg = anth_message(content, model=rec.body["model"], stop_reason=stop or ("tool_use" if calls else "end_turn"),
                           usage={"input_tokens": usage[0], "output_tokens": usage[1],
                                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
        return stream_reply(anth_sse(anth_events(msg))) if streaming else json_reply(msg)

    return respond


def results_seen(rec: Recorded) -> dict[str, str]:
    """tool_call id -> tool result text, for every tool result in an upstream request (either format)."""
    out: dict[str, str] = {}
    for m in rec.body.get("messages") or []:
        if m.get("role") == "tool":
            out[m["tool_call_id"]] = result_text(m["content"])
        elif m.get("role") == "user" and isinstance(m.get("content"), list):
            for b in m["content"]:
                if b.get("type") == "tool_result":
                    out[b["tool_use_id"]] = result_text(b.get("content") or "")
    return out


def upstream_tool_names(rec: Recorded) -> list[str]:
    return [t["function"]["name"] if t.get("type") == "function" else t["name"] for t in rec.body.get("tools") or []]


def upstream_tool_def(rec: Recorded, name: str) -> dict:
    """The schema the upstream got for a tool (OpenAI parameters or Anthropic input_schema)."""
    for t in rec.body.get("tools") or []:
        if t.get("type") == "function" and t["function"]["name"] == name:
            return t["function"].get("parameters") or {}
        if t.get("name") == name:
            return t.get("input_schema") or {}
    raise AssertionError(f"{name} not offered upstream: {upstream_tool_names(rec)}")


def reply_of(r: Resp, stream: bool) -> dict:
    """The assistant message of a /v1/messages response; a stream is checked strictly."""
    if stream:
        return r.stream().ok()
    assert r.status == 200, r.data[:2000]
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    return r.json()


def tool_call(port: int, name: str, args: Any) -> dict:
    """POST /v1/tools/{name}: always 200 with {content, is_error}."""
    r = call(port, "POST", f"/v1/tools/{name}", args)
    assert r.status == 200, r.data[:2000]
    body = r.json()
    assert set(body) == {"content", "is_error"}, body
    return body


def tool_ok(port: int, name: str, args: Any) -> str:
    body = tool_call(port, name, args)
    assert body["is_error"] is False, body
    return body["content"]


def tool_err(port: int, name: str, args: Any) -> str:
    body = tool_call(port, name, args)
    assert body["is_error"] is True, body
    return body["content"]


@dataclasses.dataclass
class AgentStack(Stack):
    env: dict
    starter: Callable[[dict], Proxy]

    def restart(self, sig: int = signal.SIGTERM) -> Proxy:
        self.proxy.stop(sig)
        self.proxy = self.starter(self.env)
        return self.proxy

    @property
    def port(self) -> int:
        return self.proxy.port


@pytest.fixture
def workspace(tmp_path) -> Path:
    ws = tmp_path / "repo"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "app.py").write_text(APP_PY)
    (ws / "notes.txt").write_text("remember the milk\n")
    return ws


@pytest.fixture
def agent(workspace, make_proxy, new_dbx, new_az):
    """agent(provider, **env) -> a fake upstream and a proxy serving `workspace`, with env on top."""

    def make(provider: str = "dbx", fake: FakeHTTP | None = None, **env: Any) -> AgentStack:
        fake = fake or (new_dbx() if provider == "dbx" else new_az())
        base = dbx_env(fake) if provider == "dbx" else az_env(fake)
        extra = {**base, **AGENT_ENV, "WORKSPACE_ROOT": str(workspace), **env}
        return AgentStack(fake, make_proxy(extra), extra, make_proxy)

    return make


PROVIDERS = ["dbx", "az"]

SEARCH_IMPLS = ["python", "ripgrep"]


# -- a local web server --


def html_reply(markup: str, status: int = 200) -> Reply:
    return Reply(status, markup.encode(), (("content-type", "text/html; charset=utf-8"),))


def redirect(location: str, status: int = 302) -> Reply:
    return Reply(status, b"", (("location", location),))


@pytest.fixture
def web_server():
    servers: list[FakeHTTP] = []

    def make(host: str = "127.0.0.1") -> FakeHTTP:
        servers.append(FakeHTTP(host=host))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


# -- prompt cache and session store --

CACHE_ON = {"PROMPT_CACHE_ENABLED": "true"}


def session_of(proxy: Proxy, sid: str) -> dict:
    r = proxy.call("GET", f"/v1/sessions/{urllib.parse.quote(sid, safe='')}")
    assert r.status == 200, r.data[:1000]
    return r.json()


# -- git workspaces --


# Every test drives a real `git` through the proxy's tools (`POST /v1/tools/{name}`, or the model via the
# agent loop) on a repository created in tmp_path, with a bare repository there as `origin`. Test
# commands are tiny scripts outside the repository that print real runners' summaries; which summary
# and exit status they give is read from a "mode" file, so one proxy can run passing and failing runs.

GW_PYTEST_PASS = """\
============================= test session starts ==============================
platform linux -- Python 3.11.7, pytest-8.3.2, pluggy-1.5.0
rootdir: /work/project
collected 4 items

tests/test_app.py ....                                                   [100%]

============================== 4 passed in 0.03s ===============================
"""
GW_PYTEST_FAIL = """\
============================= test session starts ==============================
platform linux -- Python 3.11.7, pytest-8.3.2, pluggy-1.5.0
collected 7 items

tests/test_app.py .F.ssE.                                                [100%]

=================================== FAILURES ===================================
____________________________________ test_b ____________________________________

    def test_b():
>       assert 1 == 2
E       assert 1 == 2

tests/test_app.py:5: AssertionError
=========================== short test summary info ============================
FAILED tests/test_app.py::test_b - assert 1 == 2
ERROR tests/test_app.py::test_e - RuntimeError: boom
============= 1 failed, 3 passed, 2 skipped, 1 error in 0.12s ==============
"""
GW_JEST_FAIL = """\
 PASS  src/util.test.js
 FAIL  src/app.test.js
  ● app › renders

    expect(received).toBe(expected) // Object.is equality

    Expected: 2
    Received: 1

Test Suites: 1 failed, 2 passed, 3 total
Tests:       1 failed, 2 skipped, 9 passed, 12 total
Snapshots:   0 total
Time:        1.234 s
Ran all test suites.
"""
GW_CARGO_FAIL = """\
   Compiling demo v0.1.0 (/work/project)
    Finished test [unoptimized + debuginfo] target(s) in 0.52s
     Running unittests src/lib.rs (target/debug/deps/demo-1a2b3c)

running 3 tests
test tests::adds ... ok
test tests::parses ... ok
test tests::slow ... ignored
test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

     Running tests/integration.rs (target/debug/deps/integration-4d5e6f)

running 2 tests
test it_works ... ok
test it_fails ... FAILED

failures:

---- it_fails stdout ----
thread 'it_fails' panicked at tests/integration.rs:9:5:
assertion `left == right` failed

failures:
    it_fails

test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

error: test failed, to rerun pass `--test integration`
"""
GW_GO_FAIL = """\
--- FAIL: TestParse (0.00s)
    parse_test.go:12: got 1, want 2
FAIL
exit status 1
FAIL	example.com/demo/parse	0.003s
ok  	example.com/demo/util	0.002s
ok  	example.com/demo/api	(cached)
FAIL
"""
GW_OUTPUTS = {"pass": (GW_PYTEST_PASS, 0), "fail": (GW_PYTEST_FAIL, 1), "jest": (GW_JEST_FAIL, 1),
              "cargo": (GW_CARGO_FAIL, 101), "go": (GW_GO_FAIL, 1)}
GW_RUNNER = f"""\
import pathlib, sys
OUT = {GW_OUTPUTS!r}
text, code = OUT[pathlib.Path(sys.argv[1]).read_text().strip()]
sys.stdout.write(text)
sys.exit(code)
"""


def gw_git_env() -> dict[str, str]:
    """The environment for the tests' own git commands: no user/system config, never a prompt."""
    return {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C"}


def gw_git(cwd: Path, *args: str, env: dict | None = None, check: bool = True) -> str:
    r = subprocess.run(["git", *args], cwd=cwd, env={**gw_git_env(), **(env or {})}, capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r.stdout


def gw_first_json(content: str) -> Any:
    """Tools answer `<json>` or `<json>\\n\\n<text>`: the JSON part."""
    return json.JSONDecoder().raw_decode(content)[0]


def gw_alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def gw_pids_with(needle: str) -> list[int]:
    """Live processes whose command line contains needle."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if needle in cmdline and gw_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


class GitWS:
    """tmp/repo (branch main, identity set locally, README.md + src/app.py + src/util.py committed and
    pushed) with tmp/remote.git as its bare origin; tmp/outside holds scripts, mode files and markers.
    start(**env) runs a proxy on the repo; call/ok/err drive its tools."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.repo = tmp / "repo"
        self.remote = tmp / "remote.git"
        self.out = tmp / "outside"
        self.out.mkdir()
        self.proxy: Proxy | None = None
        self.proxies: list[Proxy] = []
        gw_git(tmp, "init", "-q", "--bare", "-b", "main", str(self.remote))
        self.repo.mkdir()
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.name", "Ada Tester")
        self.git("config", "user.email", "ada@example.com")
        self.git("remote", "add", "origin", str(self.remote))
        self.write("README.md", "# demo\n")
        self.write("src/app.py", "def main():\n    return 1\n")
        self.write("src/util.py", "X = 1\n")
        self.commit_all("initial")
        self.git("push", "-q", "-u", "origin", "main")

    # -- the repository, by hand --
    def git(self, *args: str, **kw: Any) -> str:
        return gw_git(self.repo, *args, **kw)

    def write(self, rel: str, content: str) -> None:
        path = self.repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)

    def commit_all(self, message: str, env: dict | None = None) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message, env=env)
        return self.head()

    def head(self, rev: str = "HEAD") -> str:
        return self.git("rev-parse", rev).strip()

    def remote_head(self, branch: str = "main") -> str | None:
        out = gw_git(self.tmp, "--git-dir", str(self.remote), "rev-parse", "--verify", "--quiet",
                     f"refs/heads/{branch}", check=False).strip()
        return out or None

    def staged(self) -> list[str]:
        return self.git("diff", "--cached", "--name-only").split()

    # -- test commands --
    def runner(self, mode_name: str = "mode", mode: str = "pass") -> str:
        """A test command printing GW_OUTPUTS[<content of outside/mode_name>] and exiting with its status."""
        script = self.out / "runner.py"
        script.write_text(GW_RUNNER)
        self.set_mode(mode, mode_name)
        return shlex.join([sys.executable, str(script), str(self.out / mode_name)])

    def set_mode(self, mode: str, mode_name: str = "mode") -> None:
        (self.out / mode_name).write_text(mode)

    # -- the proxy --
    def start(self, **env: Any) -> Proxy:
        if self.proxy is not None:
            self.proxy.stop()
        extra = {"WORKSPACE_ROOT": str(self.repo), "LYNKR_INDEX_ON_START": "false", "PROMPT_CACHE_ENABLED": "false",
                 # the test commands are scripts in tmp/outside: the sandbox's private /tmp must show them
                 "POLICY_SANDBOX_READ": str(self.out),
                 **{k: str(v) for k, v in env.items()}}
        self.proxy = start_proxy(self.tmp, extra)
        self.proxies.append(self.proxy)
        return self.proxy

    def call(self, name: str, args: dict | None = None, timeout: float = 90) -> tuple[Any, bool]:
        assert self.proxy is not None, "start() a proxy first"
        r = self.proxy.call("POST", f"/v1/tools/{name}", args or {}, timeout=timeout)
        assert r.status == 200, f"{name}: HTTP {r.status}: {r.data[:2000]!r}"
        body = r.json()
        assert set(body) == {"content", "is_error"}, body
        return body["content"], body["is_error"]

    def ok(self, name: str, args: dict | None = None, **kw: Any) -> Any:
        content, is_error = self.call(name, args, **kw)
        assert is_error is False, f"{name} {args}: unexpected error: {content}"
        return content

    def err(self, name: str, args: dict | None = None, **kw: Any) -> str:
        content, is_error = self.call(name, args, **kw)
        assert is_error is True, f"{name} {args}: expected an error, got: {content}"
        assert isinstance(content, str) and content.strip(), content
        return content

    def run_tests(self, args: dict | None = None, **kw: Any) -> dict:
        content = self.ok("workspace_test_run", args, **kw)
        summary = gw_first_json(content)
        summary["_output"] = content
        return summary

    def close(self) -> None:
        for p in self.proxies:
            p.stop()


@pytest.fixture
def gws(tmp_path):
    ws = GitWS(tmp_path)
    yield ws
    ws.close()


# -- MCP servers --


# The servers are installed by the bootstrap (`python test_lynkr.py`) and by .ci/run: the `mcp` SDK
# (extra `mcp`) and mcp-server-time into this Python, the npm servers into ~/.cache/lynkr/mcp-npm.
# Missing ones make these tests skip, or fail under LYNKR_REQUIRE_E2E=1. Child processes are found
# through /proc (Linux). No container engine runs on the test machines, so the sandbox is covered
# by the argv that sandbox_argv builds, the placement table, and the startup checks.

MCP_NPM_BIN = Path.home() / ".cache" / "lynkr" / "mcp-npm" / "node_modules" / ".bin"
MCP_EVERYTHING = MCP_NPM_BIN / "mcp-server-everything"
MCP_FILESYSTEM = MCP_NPM_BIN / "mcp-server-filesystem"


def mcp_time_bin() -> str | None:
    """mcp-server-time next to this Python (pip installs it there), else on PATH."""
    local = Path(sys.executable).parent / "mcp-server-time"
    return str(local) if local.exists() else shutil.which("mcp-server-time")


def need_mcp(npm: bool = True) -> None:
    missing = []
    if importlib.util.find_spec("mcp") is None:
        missing.append("the mcp SDK (pip install -e '.[mcp]')")
    if mcp_time_bin() is None:
        missing.append("mcp-server-time (pip install mcp-server-time)")
    if npm:
        missing += [f"{p} (npm install --prefix ~/.cache/lynkr/mcp-npm)" for p in (MCP_EVERYTHING, MCP_FILESYSTEM)
                    if not os.access(p, os.X_OK)]
    if not Path("/proc/self/stat").exists():
        pytest.skip("the MCP process tests read /proc (Linux only)")
    require_e2e("MCP test servers: " + ", ".join(missing), not missing)


# -- reliability: fault injection and the Prometheus text format --


# Fault injection with real processes and sockets: the fakes fail on a script (statuses, hangs,
# cut streams, a port that starts listening late), the proxy runs as a subprocess with its own
# retry/breaker/limit settings (base_env turns retries and the breaker OFF: every test here says
# what it wants), and the assertions look at what the client got, what the fake saw and what
# GET /metrics says.

REL_TEXT = {"dbx": "Hello from fake Databricks", "az": "Hello from fake Azure"}


def rel_etype(status: int) -> str:
    return {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")


def rel_stamp(fake: FakeHTTP) -> FakeHTTP:
    """Record the arrival time (monotonic) of every request the fake answers in fake.stamps."""
    fake.stamps = []
    answer = fake.respond

    def respond(rec: Recorded) -> Reply:
        fake.stamps.append(time.monotonic())
        return answer(rec)

    fake.respond = respond
    return fake


def rel_move(fake: FakeHTTP, port: int) -> FakeHTTP:
    """Make a fake listen on a chosen port (a provider URL that refused connections until now)."""
    old = fake.sock
    fake.sock = socket.create_server(("127.0.0.1", port))
    fake.port = port
    try:
        old.shutdown(socket.SHUT_RDWR)  # wakes the accept thread of the ephemeral socket
    except OSError:
        pass
    old.close()
    threading.Thread(target=fake._accept, daemon=True).start()
    return fake


def rel_answer(r: Resp, stream: bool) -> str:
    assert r.status == 200, (r.status, r.data[:500])
    msg = r.stream().ok() if stream else r.json()
    return "".join(t for t in texts(msg) if t)


REL_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
REL_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


@dataclasses.dataclass
class RelMetrics:
    help: dict[str, str]
    types: dict[str, str]
    samples: list[tuple[str, dict[str, str], float]]

    def select(self, name: str, **labels: Any) -> list[tuple[dict[str, str], float]]:
        want = {k: str(v) for k, v in labels.items()}
        return [(lab, v) for n, lab, v in self.samples if n == name and all(lab.get(k) == v for k, v in want.items())]

    def get(self, name: str, **labels: Any) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
        return sum(v for _, v in self.select(name, **labels))

    def family(self, sample_name: str) -> str:
        for suffix in ("_bucket", "_sum", "_count"):
            base = sample_name.removesuffix(suffix)
            if base != sample_name and self.types.get(base) == "histogram":
                return base
        return sample_name


def rel_parse_metrics(textdata: str) -> RelMetrics:
    """Strict parse of the Prometheus text exposition format 0.0.4."""
    m = RelMetrics({}, {}, [])
    seen_samples: set[str] = set()
    for n, line in enumerate(textdata.split("\n")):
        if not line:
            continue
        where = f"line {n + 1}: {line!r}"
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert name not in m.help and doc.strip(), f"{where}: duplicate or empty HELP"
            m.help[name] = doc
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), where
            assert name not in m.types and name not in seen_samples, f"{where}: TYPE repeated or after samples"
            m.types[name] = kind
            continue
        assert not line.startswith("#"), f"{where}: unknown comment"
        sm = REL_SAMPLE.match(line)
        assert sm, f"{where}: not a sample line"
        name, raw_labels, value = sm.groups()
        labels: dict[str, str] = {}
        pos = 0
        raw_labels = raw_labels or ""
        while pos < len(raw_labels):
            lm = REL_LABEL.match(raw_labels, pos)
            assert lm, f"{where}: bad label syntax at {raw_labels[pos:]!r}"
            assert lm.group(1) not in labels, f"{where}: repeated label"
            labels[lm.group(1)] = lm.group(2).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            pos = lm.end()
        fam = m.family(name)
        assert fam in m.types, f"{where}: sample of an undeclared metric family"
        seen_samples.add(fam)
        m.samples.append((name, labels, float(value)))
    return m


def rel_scrape(proxy: Proxy) -> RelMetrics:
    r = proxy.call("GET", "/metrics", defaults=False)
    assert r.status == 200, r.data[:300]
    assert r.headers.get("content-type", "").startswith("text/plain"), r.headers
    assert "version=0.0.4" in r.headers["content-type"], r.headers
    return rel_parse_metrics(r.data.decode())


@pytest.fixture
def rel_stack(new_dbx, new_az, make_proxy):
    """rel_stack("dbx"|"az", **env) -> Stack with a fresh stamped fake and its own proxy."""

    def make(provider: str = "dbx", **env: Any) -> Stack:
        fake = rel_stamp(new_dbx() if provider == "dbx" else new_az())
        return Stack(fake, make_proxy(dbx_env(fake, **env) if provider == "dbx" else az_env(fake, **env)))

    return make


# -- the repo index --


def ix_write(root: Path, files: dict[str, str | bytes]) -> None:
    """Write files (text is dedented) under root, creating folders."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")


def ix_env(tmp: Path, ws: Path, **extra: Any) -> dict[str, Any]:
    """Workspace ws, data directory inside it, no startup indexing, no git lookup above tmp."""
    return {"WORKSPACE_ROOT": str(ws), "LYNKR_DATA_DIR": str(ws / "lynkr-state"), "LYNKR_INDEX_ON_START": "false",
            "PROMPT_CACHE_ENABLED": "false", "GIT_CEILING_DIRECTORIES": str(tmp), **extra}


def ix_tool_raw(proxy: Proxy, name: str, args: dict | None = None) -> tuple[Any, bool]:
    r = proxy.post(args or {}, path=f"/v1/tools/{name}", timeout=120)
    assert r.status == 200, f"{name}: HTTP {r.status} {r.data[:1000]!r}"
    body = r.json()
    content = body["content"]
    if isinstance(content, str):
        try:
            content = json.loads(content)
        except ValueError:
            pass
    return content, body["is_error"]


def ix_tool(proxy: Proxy, name: str, args: dict | None = None) -> Any:
    content, is_error = ix_tool_raw(proxy, name, args)
    assert not is_error, f"{name}({args}) failed: {content}"
    return content


def ix_search(proxy: Proxy, query: str, **filters: Any) -> list[dict]:
    """Symbol search results ([] for the tool's 'no matching symbols' answer)."""
    out = ix_tool(proxy, "workspace_symbol_search", {"query": query, **filters})
    if isinstance(out, str):
        assert out == "no matching symbols", out
        return []
    assert isinstance(out, list), out
    return out


# -- lynkr in-process --


def _lynkr():
    import lynkr  # pure functions and the config loader: in-process is fast

    return lynkr


# -- provider presets: one strict fake per vendor --


# One strict fake per preset, each speaking its vendor's real wire format and rejecting (with that
# vendor's error JSON and status) what the real service rejects: wrong path, missing/wrong auth,
# no `model`, unknown top-level fields, `max_tokens` for reasoning models, Gemini-hostile schema
# keywords, DeepSeek's 8192 output cap, leftover Anthropic fields.  Streams are OpenAI chunks (or
# Anthropic SSE) split at awkward byte boundaries.  The proxy runs as a subprocess configured by
# env vars alone (one preset) or by a TOML file (several providers, routes, fallbacks).

OPENAI_KEY = "sk-test-openai-secret-0a1b2c3d4e5f"
AZOAI_KEY = "azure-openai-fake-key-77c2e1"
OPENROUTER_KEY = "sk-or-v1-fake-openrouter-9d8e7f"
GEMINI_KEY = "AIzaFakeGeminiKey-3c4d5e6f7a"
ANTH_KEY = "sk-ant-api03-lynkr-upstream-4b5c6d"
ANTH_ENV_CANARY = "sk-ant-env-canary-must-not-leak-2d"  # ANTHROPIC_API_KEY in lynkr's env: never sent upstream
COMPAT_KEY = "compat-fake-key-1f2e3d"
PV_SECRETS = (CLIENT_KEY, ANTH_ENV_CANARY)
PV_USAGE = {"prompt_tokens": 1200, "completion_tokens": 34, "total_tokens": 1234,
            "prompt_tokens_details": {"cached_tokens": 1000}}
PV_ANTH_USAGE = {"input_tokens": 200, "output_tokens": 34, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 1000}
# What the OpenAI Chat Completions API accepts at the top level (openai_violations' OAI_TOP_KEYS is the
# Databricks set: no `model`, no `max_completion_tokens`, but `thinking`/`top_k`, which OpenAI rejects).
PV_OAI_KEYS = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "n", "stream",
    "stream_options", "tools", "tool_choice", "parallel_tool_calls", "user", "reasoning_effort", "response_format",
    "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "store",
    "service_tier", "prediction", "modalities", "audio", "web_search_options", "safety_identifier",
    "prompt_cache_key", "verbosity", "metadata"})

PV_REASONING_MODEL = re.compile(r"^(gpt-5|o1|o3|o4)")
# openai_violations() findings that are Databricks/Claude rules, not OpenAI-family ones
PV_NOT_OPENAI_RULES = ("a system message is only allowed first", "'$schema' is not allowed")
GEMINI_BANNED = ("$schema", "additionalProperties", "propertyNames", "uniqueItems", "deprecated", "multipleOf",
                 "patternProperties")


def pv_split(data: bytes) -> list[bytes]:
    return split_at(data, awkward_points(data))


def pv_oai_reply(rec: Recorded, text_: str | None, tools=(), finish: str = "stop", usage: dict | None = None,
                 reasoning: tuple[str, str] | None = None, prompt_filter: bool = False,
                 no_ids: bool = False) -> Reply:
    """An OpenAI chat answer to rec: chunks split at awkward bytes when it asked to stream (the usage
    chunk only with stream_options.include_usage, as OpenAI does), else one completion JSON.
    reasoning=(field, text) streams reasoning first in delta.<field> (reasoning_content | reasoning);
    prompt_filter: Azure's first chunk (no choices, only prompt_filter_results); no_ids: tool calls without ids."""
    b = rec.body
    model = b.get("model") or "deployment-model"
    usage = usage or PV_USAGE
    if b.get("stream"):
        chunks = oai_stream(text_, tools=tools, finish=finish, usage=usage)
        if reasoning:
            field, words = reasoning
            chunks[1:1] = [oai_chunk({field: words[i : i + 7]}) for i in range(0, len(words), 7)]
        if dig(b, "stream_options.include_usage") is not True:
            chunks = [c for c in chunks if c["choices"]]  # no usage chunk unless asked for
        if prompt_filter:
            chunks.insert(0, {"id": "", "object": "", "created": 0, "model": "", "choices": [],
                              "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
                                  "hate": {"filtered": False, "severity": "safe"}}}]})
        include_usage = dig(b, "stream_options.include_usage") is True
        for c in chunks:
            c["model"] = model if c["object"] else ""
            if c["object"]:  # as api.openai.com streams them
                c["system_fingerprint"] = "fp_pv0123"
                if include_usage:
                    c.setdefault("usage", None)
            if c["choices"] and c["choices"][0]["delta"].get("role") == "assistant":
                c["choices"][0]["delta"].update(content="", refusal=None)
            for tc in (c["choices"][0]["delta"].get("tool_calls") or []) if no_ids and c["choices"] else []:
                tc.pop("id", None)
        data = oai_sse(chunks)
        return stream_reply(data, pieces=pv_split(data), gap=0.001)
    extra = {reasoning[0]: reasoning[1]} if reasoning else {}
    c = oai_completion(text_, tool_calls=tools, finish=finish, usage=usage, **extra)
    c["model"] = model
    for tc in dig(c, "choices.0.message.tool_calls") if no_ids and tools else []:
        tc.pop("id", None)
    return json_reply(c)


def pv_anth_reply(rec: Recorded, content: list[dict], stop_reason: str = "end_turn") -> Reply:
    b = rec.body
    msg = anth_message(content, model=b["model"], stop_reason=stop_reason, usage=dict(PV_ANTH_USAGE),
                       id="msg_01PVUPSTREAM")
    if b.get("stream"):
        data = anth_sse(anth_events(msg))
        return stream_reply(data, pieces=pv_split(data), gap=0.001)
    return json_reply(msg)


def pv_toml(where: Path, text: str) -> Path:
    """Write ./lynkr.toml in `where` and trust it (an untrusted one is skipped: TestTrust)."""
    path = where / "lynkr.toml"
    path.write_text(text)
    trust_here(where, "lynkr.toml")
    return path

def openai_bearer_problem(fake: Any, rec: Recorded) -> Reply | None:
    """api.openai.com's answer to a missing or wrong Bearer key (chat and Responses alike)."""
    got = rec.headers.get("authorization")
    if got is None:
        return fake.error(401, "You didn't provide an API key. You need to provide your API key in an "
                               "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
    if got != f"Bearer {fake.key}":
        return fake.error(401, "Incorrect API key provided.", code="invalid_api_key")
    return None


class FakeOpenAIFamily(FakeHTTP):
    """Base of the OpenAI-chat fakes: POST {chat_path}, strict body checks, vendor error JSON."""

    label = "openai"
    key: str | None = None
    chat_path = "/v1/chat/completions"
    top_keys: frozenset | None = PV_OAI_KEYS  # None: unknown top-level keys are ignored (lenient vendor)
    keeps_cache_control = False
    reasoning_models = True  # gpt-5*/o-series reject max_tokens/temperature/top_p
    max_tokens_caps: tuple[tuple[str, int], ...] = ()  # (model prefix, most output tokens)

    @property
    def hello(self) -> str:
        return f"Hello from fake {self.label} ✓"

    # vendor-specific pieces
    def error(self, status: int, message: str, etype: str = "invalid_request_error", code: Any = None) -> Reply:
        return json_reply({"error": {"message": message, "type": etype, "param": None, "code": code}}, status)

    def path_ok(self, rec: Recorded) -> bool:
        return rec.path == self.chat_path

    def not_found(self, rec: Recorded) -> Reply:
        return self.error(404, f"Invalid URL ({rec.method} {rec.path})")

    def auth_problem(self, rec: Recorded) -> Reply | None:
        return openai_bearer_problem(self, rec)

    def model_problem(self, model: Any) -> Reply | None:
        if not isinstance(model, str) or not model:
            return self.error(400, "you must provide a model parameter")
        return None

    def problems(self, b: dict) -> list[str]:
        p: list[str] = []
        if self.top_keys is not None:
            p += [f"Unrecognized request argument supplied: {k}" for k in b if k not in self.top_keys]
        core = {k: v for k, v in b.items() if k in OAI_TOP_KEYS and (self.top_keys is None or k in self.top_keys)}
        p += [x for x in openai_violations(core) if not any(s in x for s in PV_NOT_OPENAI_RULES)]
        if not self.keeps_cache_control and (_has_key(b.get("messages"), "cache_control")
                                             or _has_key(b.get("tools"), "cache_control")):
            p.append("Unrecognized parameter 'cache_control' in a message content part or tool")
        model = str(b.get("model") or "")
        mct = b.get("max_completion_tokens")
        if "max_completion_tokens" in b and (not isinstance(mct, int) or isinstance(mct, bool) or mct < 1):
            p.append("max_completion_tokens: must be a positive integer")
        if "max_tokens" in b and "max_completion_tokens" in b:
            p.append("max_tokens and max_completion_tokens cannot both be set")
        if self.reasoning_models and PV_REASONING_MODEL.match(model):
            if "max_tokens" in b:
                p.append("Unsupported parameter: 'max_tokens' is not supported with this model. "
                         "Use 'max_completion_tokens' instead.")
            p += [f"Unsupported parameter: '{k}' is not supported with this model." for k in ("temperature", "top_p")
                  if k in b]
        for prefix, cap in self.max_tokens_caps:
            mt = b.get("max_tokens", b.get("max_completion_tokens"))
            if model.startswith(prefix) and isinstance(mt, int) and mt > cap:
                p.append(f"Invalid max_tokens value, the valid range of max_tokens is [1, {cap}]")
        if "stream_options" in b and not b.get("stream"):
            p.append("The 'stream_options' parameter is only allowed when 'stream' is enabled.")
        stop = b.get("stop")
        if isinstance(stop, list) and len(stop) > 4:
            p.append("stop: at most 4 sequences")
        return p

    def check(self, rec: Recorded) -> Reply | None:
        if rec.method != "POST" or not self.path_ok(rec):
            return self.not_found(rec)
        bad = self.auth_problem(rec)
        if bad is not None:
            return bad
        b = rec.body
        if not isinstance(b, dict):
            return self.error(400, "We could not parse the JSON body of your request.")
        bad = self.model_problem(b.get("model"))
        if bad is not None:
            return bad
        p = self.problems(b)
        return self.error(400, "; ".join(p)) if p else None

    def default(self, rec: Recorded) -> Reply:
        return pv_oai_reply(rec, self.hello)


class FakeOpenAI(FakeOpenAIFamily):
    """api.openai.com: POST /v1/chat/completions, Bearer."""

    label = "openai"
    key = OPENAI_KEY


class FakeAzureOpenAI(FakeOpenAIFamily):
    """Azure OpenAI: /openai/deployments/{dep}/chat/completions?api-version=... (dated API) or
    /openai/v1/chat/completions (v1 API, model = deployment); `api-key` header (v1 also takes Bearer)."""

    label = "azure-openai"
    key = AZOAI_KEY
    deployments = ("gpt-4o-prod", "gpt-5-prod")
    API_VERSIONS = ("2024-06-01", "2024-10-21", "2025-01-01-preview", "2025-04-01-preview")
    top_keys = PV_OAI_KEYS | {"data_sources", "user_security_context"}
    reasoning_models = False  # Azure decides by the deployed model, not by the deployment's name

    def error(self, status: int, message: str, etype: str = "invalid_request_error", code: Any = None) -> Reply:
        return json_reply({"error": {"code": code or str(status), "message": message}}, status)

    def dated(self, rec: Recorded) -> str | None:
        m = re.fullmatch(r"/openai/deployments/([^/]+)/chat/completions", rec.path)
        return m.group(1) if m else None

    def path_ok(self, rec: Recorded) -> bool:
        return self.dated(rec) is not None or rec.path == "/openai/v1/chat/completions"

    def not_found(self, rec: Recorded) -> Reply:
        return self.error(404, "Resource not found")

    def auth_problem(self, rec: Recorded) -> Reply | None:
        ok = rec.headers.get("api-key") == self.key or (
            rec.path.startswith("/openai/v1/") and rec.headers.get("authorization") == f"Bearer {self.key}")
        if not ok:
            return self.error(401, "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                                   "to provide a valid key for an active subscription and use a correct regional "
                                   "API endpoint for your resource.")
        return None

    def check(self, rec: Recorded) -> Reply | None:
        if rec.method == "POST" and self.path_ok(rec):
            version = urllib.parse.parse_qs(rec.query).get("api-version", [None])[0]
            if self.dated(rec) is not None:
                if version is None:
                    return self.error(404, "Resource not found")
                if version not in self.API_VERSIONS:
                    return self.error(400, "API version not supported", code="BadRequest")
                if self.dated(rec) not in self.deployments:
                    return self.error(404, "The API deployment for this resource does not exist. If you created "
                                           "the deployment within the last 5 minutes, please wait a moment and "
                                           "try again.", code="DeploymentNotFound")
            elif version not in (None, "preview", "latest"):
                return self.error(400, f"api-version {version!r} is not supported by the v1 API", code="BadRequest")
        return super().check(rec)

    def model_problem(self, model: Any) -> Reply | None:
        return None  # checked per surface in problems()

    def problems(self, b: dict) -> list[str]:
        p = super().problems(b)
        if "model" in b and b["model"] not in self.deployments:
            p.append(f"The model `{b['model']}` does not exist or you do not have access to it.")
        return p

    def default(self, rec: Recorded) -> Reply:
        if rec.path == "/openai/v1/chat/completions" and rec.body.get("model") not in self.deployments:
            return self.error(404, "The API deployment for this resource does not exist.", code="DeploymentNotFound")
        return pv_oai_reply(rec, self.hello, prompt_filter=True)


class FakeOpenRouter(FakeOpenAIFamily):
    """openrouter.ai: POST /api/v1/chat/completions, Bearer, vendor-prefixed model; keeps cache_control on
    content parts; ignores unknown top-level fields (it forwards extras to the model vendor)."""

    label = "openrouter"
    key = OPENROUTER_KEY
    chat_path = "/api/v1/chat/completions"
    top_keys = None
    keeps_cache_control = True
    reasoning_models = False

    def error(self, status: int, message: str, etype: str = "invalid_request_error", code: Any = None) -> Reply:
        return json_reply({"error": {"message": message, "code": status}}, status)

    def auth_problem(self, rec: Recorded) -> Reply | None:
        if rec.headers.get("authorization") != f"Bearer {self.key}":
            return self.error(401, "No auth credentials found")
        return None

    def model_problem(self, model: Any) -> Reply | None:
        if not isinstance(model, str) or "/" not in model:
            return self.error(400, f"{model!r} is not a valid model ID")
        return None


class FakeOllama(FakeOpenAIFamily):
    """Ollama's OpenAI compatibility: POST /v1/chat/completions, no auth, only pulled models."""

    label = "ollama"
    top_keys = None
    reasoning_models = False
    pulled = ("qwen2.5-coder:7b", "llama3.2", "codellama:13b")

    def not_found(self, rec: Recorded) -> Reply:
        return Reply(404, b"404 page not found", (("content-type", "text/plain"),))

    def auth_problem(self, rec: Recorded) -> Reply | None:
        return None

    def model_problem(self, model: Any) -> Reply | None:
        if not isinstance(model, str) or not model:
            return self.error(400, "model is required")
        if model not in self.pulled:
            return self.error(404, f"model '{model}' not found", etype="api_error")
        return None


def gemini_schema_problems(node: Any, where: str = "parameters") -> list[str]:
    """What Gemini rejects in a function schema, anywhere nested (property NAMES are not keywords)."""
    if not isinstance(node, dict):
        return []
    p = [f"{where}: Unknown name \"{k}\"" for k in GEMINI_BANNED if k in node]
    fmt = node.get("format")
    if fmt is not None and fmt not in ("enum", "date-time"):
        p.append(f"{where}.format: Unsupported format {fmt!r} (only 'enum' and 'date-time')")
    for k in ("properties", "$defs", "definitions"):
        if isinstance(node.get(k), dict):
            for name, sub in node[k].items():
                p += gemini_schema_problems(sub, f"{where}.{k}.{name}")
    for k in ("items", "not", "additionalProperties", "propertyNames", "contains", "if", "then", "else"):
        if isinstance(node.get(k), dict):
            p += gemini_schema_problems(node[k], f"{where}.{k}")
    for k in ("anyOf", "oneOf", "allOf", "prefixItems", "items"):
        if isinstance(node.get(k), list):
            for i, sub in enumerate(node[k]):
                p += gemini_schema_problems(sub, f"{where}.{k}[{i}]")
    return p


class FakeGemini(FakeOpenAIFamily):
    """Gemini's OpenAI compatibility: POST /v1beta/openai/chat/completions, Bearer, gemini-* models,
    strict about JSON-schema keywords in tools; errors as a JSON list of Google status objects."""

    label = "gemini"
    key = GEMINI_KEY
    chat_path = "/v1beta/openai/chat/completions"
    top_keys = PV_OAI_KEYS | {"extra_body"}
    reasoning_models = False

    def error(self, status: int, message: str, etype: str = "invalid_request_error", code: Any = None) -> Reply:
        st_ = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
               500: "INTERNAL", 503: "UNAVAILABLE"}.get(status, "UNKNOWN")
        return json_reply([{"error": {"code": status, "message": message, "status": st_}}], status)

    def auth_problem(self, rec: Recorded) -> Reply | None:
        if rec.headers.get("authorization") != f"Bearer {self.key}":
            return self.error(400, "API key not valid. Please pass a valid API key.")
        return None

    def model_problem(self, model: Any) -> Reply | None:
        if not isinstance(model, str) or not re.fullmatch(r"(models/)?gemini-[\w.\-]+", model):
            return self.error(404, f"models/{model} is not found for API version v1main, or is not supported "
                                   f"for generateContent.")
        return None

    def problems(self, b: dict) -> list[str]:
        p = super().problems(b)
        for j, t in enumerate(b.get("tools") or []):
            p += gemini_schema_problems(dig(t, "function.parameters"), f"tools[{j}].function.parameters")
        return p


class FakeOpenAICompatible(FakeOpenAIFamily):
    """A generic OpenAI-compatible server (DeepSeek-like): POST /v1/chat/completions, Bearer; deepseek*
    models take at most 8192 output tokens."""

    label = "openai-compatible"
    key = COMPAT_KEY
    top_keys = None
    reasoning_models = False
    max_tokens_caps = (("deepseek", 8192),)


class FakeAnthropic(FakeHTTP):
    """api.anthropic.com: POST /v1/messages[/count_tokens], x-api-key and anthropic-version required."""

    label = "anthropic"
    key = ANTH_KEY
    PATHS = ("/v1/messages", "/v1/messages/count_tokens")

    @property
    def hello(self) -> str:
        return "Hello from fake anthropic ✓"

    def error(self, status: int, message: str, etype: str | None = None) -> Reply:
        return json_reply(anth_error(status, etype or rel_etype(status), message), status)

    def check(self, rec: Recorded) -> Reply | None:
        if rec.path not in self.PATHS or rec.method != "POST":
            return self.error(404, "Not found", "not_found_error")
        if rec.headers.get("x-api-key") != self.key:
            return self.error(401, "invalid x-api-key", "authentication_error")
        if not rec.headers.get("anthropic-version"):
            return self.error(400, "anthropic-version: header is required", "invalid_request_error")
        b = rec.body
        if not isinstance(b, dict):
            return self.error(400, "body: Input should be an object", "invalid_request_error")
        problems = anthropic_violations(b, count=rec.path.endswith("count_tokens"))
        betas = rec.headers.get("anthropic-beta", "")
        if "context_management" in b and "context-management-" not in betas:
            problems.append("context_management: Extra inputs are not permitted (requires the context-management beta)")
        if dig(b, "output_config.effort") is not MISSING and "effort-" not in betas:
            problems.append("output_config.effort: Extra inputs are not permitted (requires the effort beta)")
        return self.error(400, "; ".join(problems), "invalid_request_error") if problems else None

    def default(self, rec: Recorded) -> Reply:
        if rec.path.endswith("count_tokens"):
            return json_reply({"input_tokens": 321})
        return pv_anth_reply(rec, [text(self.hello)])


@dataclasses.dataclass
class PresetCase:
    provider: str  # the provider's name (= the preset)
    fake: type
    env: Callable[[Any], dict]
    path: str
    query: dict[str, str]
    model: str | None  # upstream model for a Claude model name; None: the client's model name
    auth: tuple[str, str] | None
    wire: str = "openai"


PV_CASES = {
    "openai": PresetCase("openai", FakeOpenAI, lambda f: {
        "MODEL_PROVIDER": "openai", "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": f"{f.url}/v1"},
        "/v1/chat/completions", {}, "gpt-5", ("authorization", f"Bearer {OPENAI_KEY}")),
    "azure-openai": PresetCase("azure-openai", FakeAzureOpenAI, lambda f: {
        "MODEL_PROVIDER": "azure-openai", "AZURE_OPENAI_ENDPOINT": f.url, "AZURE_OPENAI_API_KEY": AZOAI_KEY,
        "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-prod"},
        "/openai/deployments/gpt-4o-prod/chat/completions", {"api-version": "2024-10-21"}, "gpt-4o-prod",
        ("api-key", AZOAI_KEY)),
    "azure-openai-v1": PresetCase("azure-openai", FakeAzureOpenAI, lambda f: {
        "MODEL_PROVIDER": "azure-openai", "AZURE_OPENAI_ENDPOINT": f.url, "AZURE_OPENAI_API_KEY": AZOAI_KEY,
        "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-prod", "AZURE_OPENAI_API_VERSION": "v1"},
        "/openai/v1/chat/completions", {}, "gpt-4o-prod", None),
    "openrouter": PresetCase("openrouter", FakeOpenRouter, lambda f: {
        "MODEL_PROVIDER": "openrouter", "OPENROUTER_API_KEY": OPENROUTER_KEY, "OPENROUTER_BASE_URL": f"{f.url}/api/v1"},
        "/api/v1/chat/completions", {}, "anthropic/claude-sonnet-4.5", ("authorization", f"Bearer {OPENROUTER_KEY}")),
    "ollama": PresetCase("ollama", FakeOllama, lambda f: {"MODEL_PROVIDER": "ollama", "OLLAMA_BASE_URL": f.url},
                         "/v1/chat/completions", {}, "qwen2.5-coder:7b", None),
    "gemini": PresetCase("gemini", FakeGemini, lambda f: {
        "MODEL_PROVIDER": "gemini", "GEMINI_API_KEY": GEMINI_KEY, "GEMINI_BASE_URL": f"{f.url}/v1beta/openai"},
        "/v1beta/openai/chat/completions", {}, "gemini-2.5-pro", ("authorization", f"Bearer {GEMINI_KEY}")),
    "openai-compatible": PresetCase("openai-compatible", FakeOpenAICompatible, lambda f: {
        "MODEL_PROVIDER": "openai-compatible", "OPENAI_COMPATIBLE_BASE_URL": f"{f.url}/v1",
        "OPENAI_COMPATIBLE_API_KEY": COMPAT_KEY},
        "/v1/chat/completions", {}, None, ("authorization", f"Bearer {COMPAT_KEY}")),
    "anthropic": PresetCase("anthropic", FakeAnthropic, lambda f: {
        "MODEL_PROVIDER": "anthropic", "LYNKR_ANTHROPIC_API_KEY": ANTH_KEY, "LYNKR_ANTHROPIC_BASE_URL": f.url,
        "ANTHROPIC_API_KEY": ANTH_ENV_CANARY},
        "/v1/messages", {}, None, ("x-api-key", ANTH_KEY), wire="anthropic"),
}


@pytest.fixture(scope="module")
def pv_stacks(tmp_path_factory):
    """pv_stacks(case) -> Stack(fake, proxy) for a PV_CASES entry, started once per module, fake reset."""
    made: dict[str, Stack] = {}

    def get(case: str) -> Stack:
        if case not in made:
            c = PV_CASES[case]
            fake = c.fake()
            try:
                proxy = start_proxy(tmp_path_factory.mktemp(f"pv-{case}"), c.env(fake))
            except BaseException:
                fake.close()
                raise
            made[case] = Stack(fake, proxy)
        made[case].fake.reset()
        return made[case]

    yield get
    for s in made.values():
        s.proxy.stop()
        s.fake.close()


def pv_diag(r: Resp, *fakes: FakeHTTP, proxy: Proxy | None = None) -> str:
    out = [f"status {r.status} headers {r.headers}\nbody {r.data[:1500]!r}"]
    for f in fakes:
        out.append(f"{type(f).__name__} saw {[(q.method, q.target) for q in f.requests]}")
    if proxy is not None:
        out.append(f"proxy stderr tail:\n{proxy.stderr[-2000:]}")
    return "\n".join(out)


def pv_no_leak(*fakes: FakeHTTP) -> None:
    for f in fakes:
        for q in f.requests:
            blob = json.dumps(q.headers) + q.raw.decode("utf-8", "replace") + q.target
            for secret in PV_SECRETS:
                assert secret not in blob, f"{type(f).__name__} received {secret!r} in {q.target} {q.headers}"


def pv_headers(r: Resp, provider: str, model: str, route: str) -> None:
    got = {k: r.headers.get(k) for k in ("x-lynkr-provider", "x-lynkr-model", "x-lynkr-route")}
    assert got == {"x-lynkr-provider": provider, "x-lynkr-model": model, "x-lynkr-route": route}, got


def pv_answer(r: Resp, stream: bool) -> dict:
    assert r.status == 200, (r.status, r.headers, r.data[:1500])
    if stream:
        return r.stream().ok()
    m = r.json()
    assert m.get("type") == "message" and m.get("role") == "assistant" and str(m.get("id", "")).startswith("msg_"), m
    assert m.get("stop_reason") in ("end_turn", "tool_use", "max_tokens", "stop_sequence"), m
    return m


def pv_text(msg: dict) -> str:
    return "".join(t for t in texts(msg) if t)


# -- several providers from a config file --

PV_OA, PV_AN, PV_LO = "oai-main", "anth-direct", "ollama-home"  # provider names in the config files
PV_KEY_ENV = {"PV_OA_KEY": OPENAI_KEY, "PV_AN_KEY": ANTH_KEY}


def pv_two_provider_toml(oa: FakeHTTP, an: FakeHTTP, router: str = "") -> str:
    return textwrap.dedent(f"""\
        # two providers at once
        [providers.{PV_OA}]
        kind = "openai"
        base_url = "{oa.url}/v1"
        api_key = "$PV_OA_KEY"

        [providers.{PV_AN}]
        kind = "anthropic"
        base_url = "{an.url}"
        api_key = "${{PV_AN_KEY}}"
        model = "claude-sonnet-4-5"

        [router]
        default = "{PV_OA},gpt-4.1"
        """) + router


def pv_route_toml(oa: FakeHTTP, an: FakeHTTP, lo: FakeHTTP) -> str:
    return textwrap.dedent(f"""\
        [providers.{PV_OA}]
        kind = "openai"
        base_url = "{oa.url}/v1"
        api_key = "$PV_OA_KEY"
        models = ["gpt-4o-mini"]

        [providers.{PV_AN}]
        kind = "anthropic"
        base_url = "{an.url}"
        api_key = "${{PV_AN_KEY}}"
        model = "claude-sonnet-4-5"

        [providers.{PV_LO}]
        kind = "ollama"
        base_url = "{lo.url}"

        [router]
        default = "{PV_OA},gpt-4.1"
        background = "{PV_LO},qwen2.5-coder:7b"
        think = "{PV_AN},claude-opus-4-1"
        long_context = "{PV_AN},claude-sonnet-4-5"
        long_context_threshold = 5000
        web_search = "{PV_AN},claude-haiku-4-5"
        """)


@dataclasses.dataclass
class RouteStack:
    oa: FakeOpenAI
    an: FakeAnthropic
    lo: FakeOllama
    proxy: Proxy

    def fake(self, provider: str) -> FakeHTTP:
        return {PV_OA: self.oa, PV_AN: self.an, PV_LO: self.lo}[provider]

    @property
    def fakes(self) -> list[FakeHTTP]:
        return [self.oa, self.an, self.lo]


@pytest.fixture(scope="module")
def pv_route_stack(tmp_path_factory):
    oa, an, lo = FakeOpenAI(), FakeAnthropic(), FakeOllama()
    tmp = tmp_path_factory.mktemp("pv-routes")
    cfg = tmp / "conf" / "routes.toml"
    cfg.parent.mkdir()
    cfg.write_text(pv_route_toml(oa, an, lo))
    try:
        proxy = start_proxy(tmp, {**PV_KEY_ENV, "MODEL_MAP": f"claude-special-*={PV_LO},codellama:13b"},
                            args=("--port", "0", "--config", str(cfg)))
    except BaseException:
        for f in (oa, an, lo):
            f.close()
        raise
    yield RouteStack(oa, an, lo, proxy)
    proxy.stop()
    for f in (oa, an, lo):
        f.close()


@pytest.fixture
def routes(pv_route_stack) -> RouteStack:
    for f in pv_route_stack.fakes:
        f.reset()
    return pv_route_stack


# -- confinement --


# Each test replays an attack from issue 14 against the real proxy (real sockets, real git repositories,
# real MCP servers) and checks the safe outcome: nothing staged or fetched, no marker file, no secret in a
# tool result, the session store or the upstream request, a closed connection, a refused start-up.

CONF_SECRETS = {"DATABRICKS_API_KEY": DBX_KEY, "LYNKR_API_KEY": "lynkr-env-canary-2222",
                "OPENAI_API_KEY": "sk-openai-env-canary-3333", "AZURE_ANTHROPIC_API_KEY": "azure-env-canary-4444"}


def conf_call(proxy: Proxy, name: str, args: dict | None = None, headers: dict | None = None,
              timeout: float = 60) -> dict:
    """POST /v1/tools/{name} with extra headers (a LYNKR_API_KEY, an Origin): the {content, is_error} body."""
    r = proxy.call("POST", f"/v1/tools/{name}", args or {}, headers=headers, timeout=timeout)
    assert r.status == 200, (name, r.status, r.data[:2000])
    body = r.json()
    assert set(body) == {"content", "is_error"}, body
    return body


# -- usage in each vendor's terms --


# OpenRouter's usage shape: prompt_tokens counts every input token, cache reads and writes included.
OR_USAGE = {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
            "prompt_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 300}}
# The same turn in Anthropic's terms: input_tokens excludes cache reads and writes.
ANTH_USAGE = {"input_tokens": 100, "output_tokens": 50, "cache_creation_input_tokens": 300,
              "cache_read_input_tokens": 600}


def oai_usage_turn(rec: Recorded, words: str, usage: dict, calls=(), dbx: bool = False) -> Reply:
    """An OpenAI-chat answer with the given usage, streamed (split at awkward bytes) when asked."""
    if not dbx:
        return pv_oai_reply(rec, words, tools=calls, finish="tool_calls" if calls else "stop", usage=usage)
    finish = "tool_calls" if calls else "stop"
    if rec.body.get("stream"):
        data = oai_sse(oai_stream(words, tools=calls, finish=finish, usage=usage))
        return stream_reply(data, pieces=pv_split(data), gap=0.001)
    return json_reply(oai_completion(words, tool_calls=calls, finish=finish, usage=usage))


def anth_usage_turn(rec: Recorded, content: list[dict], usage: dict, stop: str = "end_turn",
                    delta_usage: dict | None = None) -> Reply:
    msg = anth_message(content, model=rec.body["model"], stop_reason=stop, usage=dict(usage))
    if rec.body.get("stream"):
        events = anth_events(msg)
        if delta_usage is not None:
            events[-2][1]["usage"] = dict(delta_usage)
        data = anth_sse(events)
        return stream_reply(data, pieces=pv_split(data), gap=0.001)
    return json_reply(msg)


def usage_turn(provider: str, words: str, calls=()) -> Callable[[Recorded], Reply]:
    """A turn costing OR_USAGE (Databricks) or ANTH_USAGE (Azure): the same figures in each format."""
    def respond(rec: Recorded) -> Reply:
        if provider == "dbx":
            return oai_usage_turn(rec, words, OR_USAGE, calls, dbx=True)
        content = [text(words)] + [tool_use(i, n, a) for i, n, a in calls]
        return anth_usage_turn(rec, content, ANTH_USAGE, "tool_use" if calls else "end_turn")
    return respond


def assistant_turns(session: dict) -> list[dict]:
    return [t for t in session["turns"] if t["kind"] == "assistant"]


# -- web search: fake search services and the scripted model --

WS_TYPED = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}  # as Claude Code 2.1.329 sends it
WS_QUERY = "lynkr café proxy ✓"  # non-ASCII: split mid-character in the upstream stream, URL-encoded to the service
SRV_ID = re.compile(r"^srvtoolu_[A-Za-z0-9]+$")
RESULT_KEYS = {"type", "url", "title", "encrypted_content", "page_age"}
SEARX_HITS = [  # SearxNG's /search?format=json result records (extra fields as a real instance sends them)
    {"url": "https://lynkr.example.com/docs", "title": "Lynkr — the proxy ✓", "content": "Lynkr routes Claude Code.",
     "engine": "duckduckgo", "engines": ["duckduckgo"], "parsed_url": ["https", "lynkr.example.com", "/docs", "", "", ""],
     "template": "default.html", "positions": [1], "score": 3.0, "category": "general",
     "publishedDate": "2026-11-02T00:00:00"},
    {"url": "https://docs.example.com/cafe", "title": "Café notes", "content": "A café review.", "engine": "brave",
     "engines": ["brave"], "template": "default.html", "positions": [2], "score": 1.5, "category": "general",
     "publishedDate": None},
    {"url": "https://ads.tracker.net/x", "title": "Tracker page", "content": "Buy now.", "engine": "bing",
     "engines": ["bing"], "template": "default.html", "positions": [3], "score": 0.5, "category": "general"},
]


def ws_body(stream: bool, typed: dict | None = None, query: str = WS_QUERY, messages: list | None = None,
            model: str = "claude-opus-5-5") -> dict:
    """The shape of Claude Code 2.1.329's WebSearch sub-request (recorded by test_web_search_tool below; the
    CLI's prompt text is paraphrased): its own short system, one user text naming the query, the typed
    tool as its only tool, tool_choice auto, no thinking, no cache_control."""
    return {
        "model": model,
        "messages": messages or [user([text(f"Perform a web search for the query: {query}")])],
        "system": [text("x-anthropic-billing-header: cc_version=2.1.329.74f; cc_entrypoint=sdk-cli;"),
                   text("You are a Claude agent."),
                   text("Search the web for the caller, then summarise the results briefly.")],
        "tools": [typed or WS_TYPED],
        "tool_choice": {"type": "auto"},
        "metadata": {"user_id": json.dumps({"device_id": "cd" * 32, "account_uuid": "",
                                            "session_id": "5b0b8f3e-2f7e-4d8e-9a51-0c7f4c1e9d11"})},
        "max_tokens": 128000,
        "output_config": {"effort": "medium"},
        "stream": stream,
    }


class FakeSearx(FakeHTTP):
    """A SearxNG instance with the json format enabled: GET /search?q=..&format=json."""

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.hits: list[dict] = list(SEARX_HITS)

    def check(self, rec: Recorded) -> Reply | None:
        if rec.path != "/search" or rec.method not in ("GET", "POST"):
            return html_reply("<h1>Not Found</h1>", 404)
        q = urllib.parse.parse_qs(rec.query)
        if q.get("format") != ["json"]:
            return html_reply("<!doctype html><title>SearXNG</title><p>results as html</p>")
        if not q.get("q"):
            return json_reply({"error": "search error: no query"}, 400)
        return None

    def default(self, rec: Recorded) -> Reply:
        q = urllib.parse.parse_qs(rec.query)["q"][0]
        return json_reply({"query": q, "number_of_results": 0, "results": self.hits, "answers": [], "corrections": [],
                           "infoboxes": [], "suggestions": [], "unresponsive_engines": []})


BRAVE_KEY = "BSA-fake-brave-key-1a2b3c"
TAVILY_KEY = "tvly-fake-tavily-key-9z8y7x"
BRAVE_HITS = [{"title": "Brave hit one", "url": "https://brave-one.example.com/a", "description": "first <strong>hit</strong>",
               "page_age": "2026-10-01T00:00:00", "age": "October 1, 2026", "language": "en", "type": "search_result",
               "profile": {"name": "Example"}},
              {"title": "Brave hit two", "url": "https://brave-two.example.org/b", "description": "second hit",
               "language": "en", "type": "search_result"},
              {"title": "Brave hit three", "url": "https://brave-three.example.net/c", "description": "third hit",
               "type": "search_result"}]
TAVILY_HITS = [{"title": "Tavily hit one", "url": "https://tavily-one.example.com/x", "content": "tavily snippet one",
                "score": 0.91, "raw_content": None, "published_date": "Mon, 02 Nov 2026 10:00:00 GMT"},
               {"title": "Tavily hit two", "url": "https://tavily-two.example.org/y", "content": "tavily snippet two",
                "score": 0.55, "raw_content": None}]


class FakeBrave(FakeHTTP):
    """Brave Search API: GET /res/v1/web/search?q=..&count=N with X-Subscription-Token."""

    key = BRAVE_KEY

    def check(self, rec: Recorded) -> Reply | None:
        if rec.path != "/res/v1/web/search" or rec.method != "GET":
            return json_reply({"type": "ErrorResponse", "error": {"status": 404, "code": "NOT_FOUND",
                                                                  "detail": "Resource not found"}}, 404)
        if rec.headers.get("x-subscription-token") != self.key:
            return json_reply({"type": "ErrorResponse", "error": {
                "id": "c0ffee00-0000-4000-8000-000000000001", "status": 401, "code": "SUBSCRIPTION_TOKEN_INVALID",
                "detail": "The provided subscription token is invalid.", "meta": {"component": "authentication"}},
                "time": 1700000000}, 401)
        q = urllib.parse.parse_qs(rec.query)
        count = q.get("count", ["20"])[0]
        if not q.get("q") or not count.isdigit() or not 1 <= int(count) <= 20:
            return json_reply({"type": "ErrorResponse", "error": {"status": 422, "code": "VALIDATION",
                                                                  "detail": "Unable to validate request parameter(s)"}}, 422)
        return None

    def default(self, rec: Recorded) -> Reply:
        q = urllib.parse.parse_qs(rec.query)
        n = int(q.get("count", ["20"])[0])
        return json_reply({"type": "search", "query": {"original": q["q"][0], "more_results_available": False},
                           "mixed": {"type": "mixed", "main": []},
                           "web": {"type": "search", "results": BRAVE_HITS[:n], "family_friendly": True}})


class FakeTavily(FakeHTTP):
    """Tavily: POST /search, a JSON body, Authorization: Bearer tvly-..."""

    key = TAVILY_KEY
    FIELDS = {"query", "search_depth", "topic", "max_results", "include_domains", "exclude_domains", "include_answer",
              "include_raw_content", "include_images", "time_range", "days", "chunks_per_source", "country", "api_key"}

    def check(self, rec: Recorded) -> Reply | None:
        if rec.path != "/search" or rec.method != "POST":
            return json_reply({"detail": "Not Found"}, 404 if rec.path != "/search" else 405)
        if rec.headers.get("authorization") != f"Bearer {self.key}":
            return json_reply({"detail": {"error": "Unauthorized: missing or invalid API key."}}, 401)
        b = rec.body
        if not isinstance(b, dict) or not isinstance(b.get("query"), str) or not b["query"]:
            return json_reply({"detail": {"error": "Invalid request: query is required"}}, 400)
        bad = set(b) - self.FIELDS
        mr = b.get("max_results", 5)
        doms = [b.get(k, []) for k in ("include_domains", "exclude_domains")]
        if bad or not isinstance(mr, int) or not 0 <= mr <= 20 or not all(
                isinstance(d, list) and all(isinstance(x, str) for x in d) for d in doms):
            return json_reply({"detail": {"error": f"Invalid request: {sorted(bad) or b}"}}, 400)
        return None

    def default(self, rec: Recorded) -> Reply:
        b = rec.body
        hits = [h for h in TAVILY_HITS if not b.get("include_domains")
                or any(h["url"].split("/")[2].endswith(d) for d in b["include_domains"])]
        return json_reply({"query": b["query"], "follow_up_questions": None, "answer": None, "images": [],
                           "results": hits[: b.get("max_results", 5)], "response_time": 0.42})


def play(provider: str, rec: Recorded, words: str | None = None, calls: tuple | list = (),
         usage: tuple[int, int] = (21, 8)) -> Reply:
    """model_turn, with a streamed answer cut at awkward byte boundaries (mid-UTF-8, mid-'data:', between
    the two newlines of an event separator)."""
    reply = model_turn(provider, words, tuple(calls), usage)(rec)
    if reply.pieces is not None:
        data = b"".join(reply.pieces)
        reply.pieces, reply.gap = split_at(data, awkward_points(data)), 0.0005
    return reply


def ws_model(provider: str, rounds: list[list[tuple[str, dict]]], final: str, words: str | None = None):
    """The model: in round k (k assistant turns already in the upstream request) it calls web_search once per
    (call id, input) of rounds[k]; after the last round it answers `final`."""

    def respond(rec: Recorded) -> Reply:
        k = sum(1 for m in rec.body["messages"] if m.get("role") == "assistant")
        if k < len(rounds):
            return play(provider, rec, words, [(cid, "web_search", args) for cid, args in rounds[k]])
        return play(provider, rec, final)

    return respond


def assemble_ws(events: list[tuple[str | None, Any]]) -> Stream:
    """assemble() (the strict stream grammar) extended with the two server-tool blocks as Anthropic streams
    them: server_tool_use opens with input {} and gets its input as input_json_delta; a
    web_search_tool_result is complete in its content_block_start and gets no delta."""
    originals: dict[int, dict] = {}
    shaped = []
    for name, data in events:
        if name == "content_block_start" and isinstance(data, dict):
            cb = data.get("content_block") or {}
            if cb.get("type") == "server_tool_use":
                assert set(cb) == {"type", "id", "name", "input"} and cb["input"] == {}, cb
                originals[data["index"]] = cb
                data = {**data, "content_block": {**cb, "type": "tool_use"}}
            elif cb.get("type") == "web_search_tool_result":
                originals[data["index"]] = cb
                data = {**data, "content_block": {"type": "text", "text": ""}}
        elif name == "content_block_delta" and isinstance(data, dict):
            cb = originals.get(data.get("index"))
            assert not (cb and cb["type"] == "web_search_tool_result"), f"a delta for a web_search_tool_result: {data}"
        shaped.append((name, data))
    s = assemble(shaped)
    if s.message is not None:
        for i, cb in originals.items():
            block = s.message["content"][i]
            s.message["content"][i] = {**block, "type": "server_tool_use"} if cb["type"] == "server_tool_use" else cb
    return s


def ws_reply(r: Resp, stream: bool) -> dict:
    if stream:
        assert r.status == 200, r.data[:2000]
        assert r.headers.get("content-type", "").startswith("text/event-stream"), r.headers
        return assemble_ws(r.events()).ok()
    assert r.status == 200, r.data[:2000]
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    return r.json()


def search_pairs(msg: dict) -> list[tuple[dict, dict]]:
    """(server_tool_use, web_search_tool_result) pairs of a reply; checks they come in pairs, ids matching."""
    c = msg["content"]
    out = []
    for i, b in enumerate(c):
        if b["type"] == "server_tool_use":
            assert SRV_ID.match(b["id"]) and b["name"] == "web_search", b
            assert set(b) == {"type", "id", "name", "input"} and set(b["input"]) == {"query"}, b
            res = c[i + 1] if i + 1 < len(c) else None
            assert res and res["type"] == "web_search_tool_result" and res["tool_use_id"] == b["id"], c
            assert set(res) == {"type", "tool_use_id", "content"}, res
            out.append((b, res))
    assert len(out) == sum(b["type"] == "web_search_tool_result" for b in c), c
    assert len({u["id"] for u, _ in out}) == len(out), "server_tool_use ids must be unique"
    return out


def result_list(res: dict) -> list[dict]:
    content = res["content"]
    assert isinstance(content, list), f"expected results, got {content!r}"
    for item in content:
        assert set(item) == RESULT_KEYS and item["type"] == "web_search_result", item
        assert isinstance(item["encrypted_content"], str) and item["encrypted_content"], item
        assert item["page_age"] is None or isinstance(item["page_age"], str), item
    return content


def error_code(res: dict) -> str:
    content = res["content"]
    assert isinstance(content, dict) and set(content) == {"type", "error_code"}, content
    assert content["type"] == "web_search_tool_result_error", content
    return content["error_code"]


def seen_result(rec: Recorded, call_id: str) -> str:
    """The tool result the model got for one of its calls (either wire format)."""
    seen = results_seen(rec)
    assert call_id in seen, f"no tool result for {call_id} in {seen}"
    return seen[call_id]


def offered_tools(rec: Recorded) -> list[dict]:
    return rec.body.get("tools") or []


def assert_function_offered(rec: Recorded, provider: str) -> None:
    """web_search reached the upstream as a plain function with a required string query, never as the typed tool."""
    tools = offered_tools(rec)
    assert upstream_tool_names(rec) == ["web_search"], tools
    if provider == "dbx":
        assert tools[0]["type"] == "function", tools
    else:
        assert tools[0].get("type") in (None, "custom") and "input_schema" in tools[0], tools
    schema = upstream_tool_def(rec, "web_search")
    assert schema["required"] == ["query"] and schema["properties"]["query"]["type"] == "string", schema
    assert "web_search_20250305" not in rec.raw.decode() and "max_uses" not in rec.raw.decode()


def searx_queries(searx: FakeHTTP) -> list[dict]:
    return [urllib.parse.parse_qs(r.query) for r in searx.requests]


# -- Claude on Google Vertex AI: the fakes --

VTX_PROJECT = "lynkr-vtx-proj-4711"
VTX_REGION = "us-east5"
VMODEL = "claude-sonnet-4-5@20250929"  # the vertex preset's default, as Vertex names Claude
VTX_OPUS = "claude-opus-4-1@20250805"
VERTEX_VERSION = "vertex-2023-10-16"
STATIC_TOKEN = "ya29.static-vertex-token-canary-93fe01"

META_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
VX_PATH = re.compile(r"/v1/projects/([^/]+)/locations/([^/]+)/publishers/anthropic/models/([^/:]+):([A-Za-z]+)")
UNAUTH_MSG = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
              "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.")
VX_TEXT = "Hello from fake Vertex \u2014 \u00fcn\u00efc\u00f8d\u00e9 \u2713 \U0001f600"


def g_error(code: int, status: str, message: str, headers: tuple = ()) -> Reply:
    """Google's JSON error (google.rpc.Status), as Vertex answers auth, permission and routing failures."""
    return json_reply({"error": {"code": code, "message": message, "status": status}}, code, headers)


def vx_model(rec: Recorded) -> str:
    m = VX_PATH.fullmatch(urllib.parse.unquote(rec.path))
    return m.group(3) if m else ""


def vx_path(model: str = VMODEL, verb: str = "rawPredict", project: str = VTX_PROJECT, region: str = VTX_REGION) -> str:
    return f"/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:{verb}"


class FakeVertex(FakeHTTP):
    """Claude on Vertex AI (rawPredict / streamRawPredict / count-tokens:rawPredict), Bearer tokens only."""

    MODELS = {VMODEL, VTX_OPUS, "claude-haiku-4-5@20251001", "claude-opus-4-5@20251101"}
    COUNT_KEYS = {"model", "messages", "system", "tools", "tool_choice", "thinking", "anthropic_version"}

    def __init__(self, project: str = VTX_PROJECT, region: str = VTX_REGION, tokens=(), **kw: Any):
        super().__init__(**kw)
        self.project, self.region = project, region
        self.tokens: set[str] = set(tokens)
        self.count_answer = 4242
        self.slow_401 = 0.0  # each successive 401 waits this much longer (401s straggling in)
        self.gate_401 = 0  # hold 401s until this many requests are waiting for one (all in flight at once)
        self.n401 = 0
        self.cond = threading.Condition(self.lock)

    def allow(self, token: str) -> None:
        with self.lock:
            self.tokens.add(token)

    def revoke(self, token: str) -> None:
        with self.lock:
            self.tokens.discard(token)

    def token_of(self, rec: Recorded) -> str:
        auth = rec.headers.get("authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else ""

    def check(self, rec: Recorded) -> Reply | None:
        m = VX_PATH.fullmatch(urllib.parse.unquote(rec.path))
        if rec.method != "POST" or not m or m.group(4) not in ("rawPredict", "streamRawPredict") or rec.query:
            return g_error(404, "NOT_FOUND", f"The requested URL {rec.target} was not found on this server.")
        with self.lock:
            ok = self.token_of(rec) in self.tokens
        if not ok:
            with self.cond:
                self.n401 += 1
                k = self.n401
                self.cond.notify_all()
                self.cond.wait_for(lambda: self.n401 >= self.gate_401, timeout=5)
                hang = self.slow_401 * (k - 1)
            reply = g_error(401, "UNAUTHENTICATED", UNAUTH_MSG, (("www-authenticate", 'Bearer realm="https://accounts.google.com/"'),))
            reply.hang = hang
            return reply
        if any(CLIENT_KEY in v for v in rec.headers.values()) or "x-api-key" in rec.headers:
            return g_error(400, "INVALID_ARGUMENT", "the client's Anthropic key reached Vertex")
        project, region, model, verb = m.groups()
        if project != self.project:
            return g_error(403, "PERMISSION_DENIED", f"Permission denied on resource project {project}.")
        if region != self.region:
            return g_error(400, "FAILED_PRECONDITION", f"Location {region} is not supported for this project.")
        body = rec.body
        if not isinstance(body, dict):
            return json_reply(anth_error(400, "invalid_request_error", "body: not a JSON object"), 400)
        if model == "count-tokens":
            problems = [] if verb == "rawPredict" else [f"count-tokens supports rawPredict, not {verb}"]
            if body.get("model") not in self.MODELS:
                problems.append(f"model: {body.get('model')!r} is not a Claude model on Vertex AI (want e.g. {VMODEL})")
            if "anthropic_version" in body and body["anthropic_version"] != VERTEX_VERSION:
                problems.append("anthropic_version: must be vertex-2023-10-16")
            if set(body) - self.COUNT_KEYS:
                problems.append(f"Extra inputs are not permitted: {sorted(set(body) - self.COUNT_KEYS)}")
            problems += anthropic_violations(body, count=True)
        else:
            if model not in self.MODELS:
                return g_error(404, "NOT_FOUND", f"Publisher Model `projects/{project}/locations/{region}/publishers/"
                                                 f"anthropic/models/{model}` not found.")
            problems = []
            if "model" in body:
                problems.append("model: Extra inputs are not permitted (the model is named in the URL)")
            if body.get("anthropic_version") != VERTEX_VERSION:
                problems.append(f"anthropic_version: Input should be 'vertex-2023-10-16', got {body.get('anthropic_version')!r}")
            if (verb == "streamRawPredict") != (body.get("stream") is True):
                problems.append(f"stream: {body.get('stream')!r} does not fit {verb}")
            problems += anthropic_violations({**body, "model": model})
        if problems:
            return json_reply(anth_error(400, "invalid_request_error", "; ".join(problems)), 400)
        return None

    def default(self, rec: Recorded) -> Reply:
        model = vx_model(rec)
        if model == "count-tokens":
            return json_reply({"input_tokens": self.count_answer})
        msg = anth_message([text(VX_TEXT)], model=model, id="msg_vrtx_01FAKE")
        if rec.body.get("stream"):
            data = anth_sse(anth_events(msg))
            return stream_reply(data, pieces=split_at(data, awkward_points(data)))
        return json_reply(msg)


class FakeMetadata(FakeHTTP):
    """The GCE/GKE metadata server's token endpoint: every GET issues a fresh token, told to `vertex`."""

    def __init__(self, vertex: FakeVertex | None = None, expires_in: Any = 3599, delay: float = 0.0, **kw: Any):
        super().__init__(**kw)
        self.vertex, self.expires_in, self.delay = vertex, expires_in, delay
        self.register = True  # False: issued tokens are NOT accepted by the Vertex fake
        self.issued: list[str] = []

    def check(self, rec: Recorded) -> Reply | None:
        if rec.method != "GET" or rec.path != META_PATH:
            return Reply(404, b"Not Found\n", (("content-type", "text/plain"),))
        if rec.headers.get("metadata-flavor") != "Google":
            return Reply(403, b"Missing required header \"Metadata-Flavor\": \"Google\"\n", (("content-type", "text/html"),))
        return None

    def default(self, rec: Recorded) -> Reply:
        with self.lock:
            token = f"ya29.c.meta-token-{len(self.issued) + 1}-{os.urandom(6).hex()}"
            self.issued.append(token)
        if self.vertex is not None and self.register:
            self.vertex.allow(token)
        return json_reply({"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"},
                          hang=self.delay)

    @property
    def fetches(self) -> int:
        return len(self.issued)


def vx_env(fake: FakeHTTP | None, **kw: Any) -> dict:
    env = {"MODEL_PROVIDER": "vertex", "GOOGLE_CLOUD_PROJECT": VTX_PROJECT, "CLOUD_ML_REGION": VTX_REGION}
    if fake is not None:
        env["VERTEX_BASE_URL"] = fake.url
    env.update(kw)
    return env


@pytest.fixture
def new_vx():
    yield from _fake_factory(FakeVertex)


@pytest.fixture(scope="module")
def vx_stack(tmp_path_factory):
    fake = FakeVertex(tokens=[STATIC_TOKEN])
    yield from shared_stack(tmp_path_factory, "vx", fake, vx_env(fake, VERTEX_ACCESS_TOKEN=STATIC_TOKEN))


@pytest.fixture
def vx(vx_stack) -> Stack:
    vx_stack.fake.reset()
    return vx_stack


# -- OpenAI Responses API: the fake --

RS_ENC = "gAAAAABo" + "x" * 300  # opaque encrypted_content

RS_TOP_KEYS = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens",
    "max_tool_calls", "temperature", "top_p", "top_logprobs", "reasoning", "include", "store", "stream",
    "stream_options", "text", "metadata", "previous_response_id", "conversation", "prompt", "prompt_cache_key",
    "prompt_cache_retention", "safety_identifier", "service_tier", "truncation", "user", "background"})
RS_INCLUDABLE = frozenset({"reasoning.encrypted_content", "message.output_text.logprobs", "file_search_call.results",
                           "web_search_call.action.sources", "message.input_image.image_url",
                           "computer_call_output.output.image_url", "code_interpreter_call.outputs"})
RS_ITEM_KEYS = {
    "message": {"type", "role", "content", "id", "status"},
    "function_call": {"type", "call_id", "name", "arguments", "id", "status"},
    "function_call_output": {"type", "call_id", "output", "id", "status"},
    "reasoning": {"type", "id", "summary", "encrypted_content", "content", "status"},
}
RS_INPUT_PARTS = {"input_text": {"type", "text"}, "input_image": {"type", "image_url", "file_id", "detail"},
                  "input_file": {"type", "file_id", "file_data", "file_url", "filename"}}
RS_OUTPUT_PARTS = {"output_text": {"type", "text", "annotations", "logprobs"}, "refusal": {"type", "refusal"}}
RS_TOOL_KEYS = {"type", "name", "description", "parameters", "strict"}
RS_REASONING_MODEL = re.compile(r"^(gpt-5|o1|o3|o4|codex)")
RSH_USAGE = {"input_tokens": 1500, "input_tokens_details": {"cached_tokens": 1200}, "output_tokens": 42,
            "output_tokens_details": {"reasoning_tokens": 17}, "total_tokens": 1542}


def rs_strict_schema_problems(node: Any, where: str) -> list[str]:
    """What strict mode (structured tool calls) refuses: every object closed and every property required."""
    if not isinstance(node, dict):
        return []
    p = []
    if node.get("type") == "object" or "properties" in node:
        props = node.get("properties") or {}
        if node.get("additionalProperties") is not False:
            p.append(f"Invalid schema for function: In context={where}, 'additionalProperties' is required to be "
                     f"supplied and to be false.")
        if sorted(node.get("required") or []) != sorted(props):
            p.append(f"Invalid schema for function: In context={where}, 'required' is required to be supplied and "
                     f"to be an array including every key in properties.")
        for name, sub in props.items():
            p += rs_strict_schema_problems(sub, f"{where}.properties.{name}")
    if isinstance(node.get("items"), dict):
        p += rs_strict_schema_problems(node["items"], f"{where}.items")
    return p


def rs_split(data: bytes) -> list[bytes]:
    """Awkward split points, plus the middle of every `event:` name line."""
    return split_at(data, awkward_points(data) + [m.start() + 3 for m in re.finditer(rb"event:", data)])


def rsh_chunks(text_: str, n: int) -> list[str]:
    return [text_[i:i + n] for i in range(0, len(text_), n)] or [""]


# what a test scripts as the model's output: items without ids (the fake assigns them)
def rs_reasoning(*summary: str) -> dict:
    return {"type": "reasoning", "summary": list(summary)}


def rs_text(t: str) -> dict:
    return {"type": "message", "text": t}


def rs_call(call_id: str, name: str, args: dict) -> dict:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": json.dumps(args, ensure_ascii=False)}


class FakeResponses(FakeHTTP):
    """api.openai.com's POST /v1/responses: Bearer, OpenAI error JSON, the body checked as OpenAI does."""

    label = "openai-responses"
    key = OPENAI_KEY
    path = "/v1/responses"

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.issued: dict[str, str] = {}  # encrypted_content -> the reasoning item id it was issued with
        self.seq = itertools.count(1)

    @property
    def hello(self) -> str:
        return "Hello from fake Responses ✓"

    # -- vendor pieces --
    def error(self, status: int, message: str, etype: str = "invalid_request_error", code: Any = None,
              param: Any = None, headers: tuple = ()) -> Reply:
        return json_reply({"error": {"message": message, "type": etype, "param": param, "code": code}}, status,
                          headers)

    def path_ok(self, rec: Recorded) -> bool:
        return rec.path == self.path

    def not_found(self, rec: Recorded) -> Reply:
        return self.error(404, f"Invalid URL ({rec.method} {rec.path})")

    def auth_problem(self, rec: Recorded) -> Reply | None:
        return openai_bearer_problem(self, rec)

    def model_problem(self, model: Any) -> str | None:
        return None if isinstance(model, str) and model else "Missing required parameter: 'model'."

    def is_reasoning(self, model: str) -> bool:
        return bool(RS_REASONING_MODEL.match(model))

    # -- body validation --
    def problems(self, b: dict) -> list[str]:
        p = [f"Unknown parameter: '{k}'." for k in b if k not in RS_TOP_KEYS]
        model = str(b.get("model") or "")
        reasoning_model = self.is_reasoning(model)
        if "instructions" in b and not isinstance(b["instructions"], str):
            p.append("Invalid type for 'instructions': expected a string.")
        for k in ("store", "stream", "parallel_tool_calls"):
            if k in b and not isinstance(b[k], bool):
                p.append(f"Invalid type for '{k}': expected a boolean.")
        mot = b.get("max_output_tokens")
        if "max_output_tokens" in b and (not isinstance(mot, int) or isinstance(mot, bool) or mot < 16):
            p.append(f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got "
                     f"{mot} instead.")
        if reasoning_model:
            p += [f"Unsupported parameter: '{k}' is not supported with this model." for k in ("temperature", "top_p")
                  if k in b]
        if "reasoning" in b:
            r = b["reasoning"]
            if not reasoning_model:
                p.append("Unsupported parameter: 'reasoning.effort' is not supported with this model.")
            elif not isinstance(r, dict) or set(r) - {"effort", "summary", "generate_summary"}:
                p.append("Invalid 'reasoning': expected an object with effort and summary.")
            else:
                if r.get("effort") not in (None, "minimal", "low", "medium", "high"):
                    p.append(f"Invalid value: '{r.get('effort')}'. Supported values are: 'minimal', 'low', "
                             f"'medium', and 'high'.")
                if r.get("summary") not in (None, "auto", "concise", "detailed"):
                    p.append(f"Invalid value for 'reasoning.summary': {r.get('summary')!r}.")
        include = b.get("include", [])
        if not isinstance(include, list) or any(i not in RS_INCLUDABLE for i in include):
            p.append(f"Invalid value for 'include': {include!r}.")
        if "text" in b and not (isinstance(b["text"], dict) and isinstance(b["text"].get("format", {}), dict)):
            p.append("Invalid type for 'text': expected an object.")
        if "metadata" in b and not isinstance(b["metadata"], dict):
            p.append("Invalid type for 'metadata': expected an object.")
        p += self.tool_problems(b)
        p += self.input_problems(b)
        return p

    def tool_problems(self, b: dict) -> list[str]:
        p: list[str] = []
        tools = b.get("tools", [])
        if not isinstance(tools, list):
            return ["Invalid type for 'tools': expected an array."]
        names = []
        for j, t in enumerate(tools):
            w = f"tools[{j}]"
            if not isinstance(t, dict) or t.get("type") != "function":
                p.append(f"Invalid value for '{w}.type'.")
                continue
            if "function" in t:  # the Chat Completions shape
                p.append(f"Missing required parameter: '{w}.name'.")
                continue
            p += [f"Unknown parameter: '{w}.{k}'." for k in t if k not in RS_TOOL_KEYS]
            if not isinstance(t.get("name"), str) or not TOOL_NAME.match(t["name"]):
                p.append(f"Invalid '{w}.name': string does not match pattern. Expected a string that matches the "
                         f"pattern '^[a-zA-Z0-9_-]+$'.")
            names.append(t.get("name"))
            params = t.get("parameters")
            if not isinstance(params, dict) or params.get("type") != "object":
                p.append(f"Invalid schema for function '{t.get('name')}': schema must be a JSON Schema of "
                         f"'type: \"object\"', got 'type: \"{dig(params, 'type')}\"'.")
            elif "\\p{" in json.dumps(params):
                p.append(f"Invalid schema for function '{t.get('name')}': pattern is not a 'regex'.")
            if "strict" in t and not isinstance(t["strict"], bool):
                p.append(f"Invalid type for '{w}.strict': expected a boolean.")
            if t.get("strict") is True:
                p += rs_strict_schema_problems(params, "()")
        choice = b.get("tool_choice")
        if "tool_choice" in b:
            if not tools:
                p.append("Tool choice requires tools.")
            if isinstance(choice, dict):
                if set(choice) != {"type", "name"} or choice.get("type") != "function":
                    p.append(f"Invalid 'tool_choice': {choice!r}.")
                elif choice["name"] not in names:
                    p.append(f"Tool choice '{choice['name']}' not found in 'tools' parameter.")
            elif choice not in ("auto", "none", "required"):
                p.append(f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.")
        return p

    def content_problems(self, w: str, role: str, content: Any) -> list[str]:
        if isinstance(content, str):
            return []
        if not isinstance(content, list):
            return [f"Invalid type for '{w}.content': expected one of a string or array."]
        allowed = RS_OUTPUT_PARTS if role == "assistant" else RS_INPUT_PARTS
        p = []
        for k, part in enumerate(content):
            t = part.get("type") if isinstance(part, dict) else None
            if t not in allowed:
                p.append(f"Invalid value: '{t}'. Supported values are: {', '.join(repr(a) for a in allowed)}. "
                         f"({w}.content[{k}].type)")
                continue
            p += [f"Unknown parameter: '{w}.content[{k}].{x}'." for x in part if x not in allowed[t]]
            if t in ("input_text", "output_text") and not isinstance(part.get("text"), str):
                p.append(f"Missing required parameter: '{w}.content[{k}].text'.")
            if t == "input_image":
                url = part.get("image_url")
                if not (isinstance(url, str) and (url.startswith("data:image/") or url.startswith("https://"))):
                    p.append(f"Invalid '{w}.content[{k}].image_url'. Expected a base64-encoded data URL or URL.")
                if part.get("detail", "auto") not in ("low", "high", "auto"):
                    p.append(f"Invalid '{w}.content[{k}].detail'.")
        return p

    def input_problems(self, b: dict) -> list[str]:
        items = b.get("input")
        if isinstance(items, str):
            return []
        if not isinstance(items, list) or not items:
            return ["Missing required parameter: 'input'."]
        p: list[str] = []
        calls: list[str] = []
        answered: set[str] = set()
        store = b.get("store", True)
        for i, item in enumerate(items):
            w = f"input[{i}]"
            t = item.get("type", "message") if isinstance(item, dict) else None
            if t not in RS_ITEM_KEYS:
                p.append(f"Invalid value: '{t}'. Supported values are: 'message', 'function_call', "
                         f"'function_call_output', 'reasoning', ... ({w}.type)")
                continue
            p += [f"Unknown parameter: '{w}.{k}'." for k in item if k not in RS_ITEM_KEYS[t]]
            if t == "message":
                if item.get("role") not in ("user", "assistant", "system", "developer"):
                    p.append(f"Invalid value: '{item.get('role')}'. Supported values are: 'user', 'assistant', "
                             f"'system', and 'developer'. ({w}.role)")
                p += self.content_problems(w, item.get("role"), item.get("content"))
            elif t == "function_call":
                for k in ("call_id", "name", "arguments"):
                    if not isinstance(item.get(k), str) or not item.get(k) and k != "arguments":
                        p.append(f"Missing required parameter: '{w}.{k}'.")
                try:
                    if not isinstance(json.loads(item.get("arguments") or ""), dict):
                        raise ValueError
                except ValueError:
                    p.append(f"Invalid '{w}.arguments': expected a JSON object string.")
                if item.get("call_id") in calls:
                    p.append(f"Duplicate item found with call_id {item.get('call_id')}.")
                calls.append(item.get("call_id"))
            elif t == "function_call_output":
                cid = item.get("call_id")
                if cid not in calls:
                    p.append(f"No tool call found for function call output with call_id {cid}.")
                elif cid in answered:
                    p.append(f"Duplicate function call output for call_id {cid}.")
                answered.add(cid)
                out = item.get("output")
                if not isinstance(out, (str, list)):
                    p.append(f"Invalid type for '{w}.output': expected one of a string or array.")
            else:  # reasoning
                summary = item.get("summary")
                if not isinstance(summary, list) or any(
                        not isinstance(s, dict) or set(s) != {"type", "text"} or s.get("type") != "summary_text"
                        or not isinstance(s.get("text"), str) for s in summary):
                    p.append(f"Missing required parameter: '{w}.summary'." if summary is None else
                             f"Invalid '{w}.summary': expected an array of summary_text parts.")
                enc = item.get("encrypted_content")
                if enc is None and store is False:
                    p.append(f"Item with id '{item.get('id')}' not found. Items are not persisted when `store` is set "
                             f"to false. Try again with `store` set to true, or remove this item from your input.")
                elif enc is not None and self.issued.get(enc) != item.get("id"):
                    p.append(f"The encrypted content {str(enc)[:4]}...{str(enc)[-4:]} could not be verified. "
                             f"Reason: Encrypted content could not be decrypted or parsed.")
                nxt = items[i + 1] if i + 1 < len(items) else None
                if not isinstance(nxt, dict) or nxt.get("type") == "reasoning":
                    p.append(f"Item '{item.get('id')}' of type 'reasoning' was provided without its required "
                             f"following item.")
        p += [f"No tool output found for function call {c}." for c in calls if c not in answered]
        return p

    def check(self, rec: Recorded) -> Reply | None:
        if rec.method != "POST" or not self.path_ok(rec):
            return self.not_found(rec)
        bad = self.auth_problem(rec)
        if bad is not None:
            return bad
        b = rec.body
        if not isinstance(b, dict):
            return self.error(400, "We could not parse the JSON body of your request. (HINT: This likely means "
                                   "you aren't using your HTTP library correctly.)")
        problem = self.model_problem(b.get("model"))
        if problem:
            return self.error(400, problem, param="model")
        p = self.problems(b)
        for marker, code, param in (("could not be decrypted", "invalid_encrypted_content", None),
                                    ("'max_output_tokens': integer below", "integer_below_min_value",
                                     "max_output_tokens")):
            if any(marker in x for x in p):  # as OpenAI reports these: alone, with their own code
                return self.error(400, next(x for x in p if marker in x), code=code, param=param)
        return self.error(400, "; ".join(p)) if p else None

    def default(self, rec: Recorded) -> Reply:
        return self.answer(rec, [rs_text(self.hello)])

    # -- answers --
    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self.seq):04d}{secrets.token_hex(12)}"

    def materialize(self, rec: Recorded, script: list[dict]) -> list[dict]:
        """Scripted output -> the output items OpenAI returns (ids, statuses; encrypted_content only when
        the request asked for it with include, as OpenAI does)."""
        wants_enc = "reasoning.encrypted_content" in (rec.body.get("include") or [])
        out = []
        for s in script:
            if s["type"] == "reasoning":
                item = {"id": self._id("rs"), "type": "reasoning",
                        "summary": [{"type": "summary_text", "text": t} for t in s["summary"]]}
                if wants_enc:
                    enc = "gAAAAAB" + base64.urlsafe_b64encode(secrets.token_bytes(96)).decode()
                    self.issued[enc] = item["id"]
                    item["encrypted_content"] = enc
                out.append(item)
            elif s["type"] == "message":
                out.append({"id": self._id("msg"), "type": "message", "status": "completed", "role": "assistant",
                            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": s["text"]}]})
            else:
                out.append({"id": self._id("fc"), "type": "function_call", "status": "completed",
                            "arguments": s["arguments"], "call_id": s["call_id"], "name": s["name"]})
        return out

    def response(self, rec: Recorded, output: list[dict], status: str = "completed", usage: dict | None = None,
                 error: dict | None = None) -> dict:
        b = rec.body
        return {"id": self._id("resp"), "object": "response", "created_at": int(time.time()), "status": status,
                "background": False, "error": error, "incomplete_details": None,
                "instructions": b.get("instructions"), "max_output_tokens": b.get("max_output_tokens"),
                "model": f"{b.get('model')}-2025-08-07", "output": output,
                "parallel_tool_calls": b.get("parallel_tool_calls", True), "previous_response_id": None,
                "reasoning": {"effort": (b.get("reasoning") or {}).get("effort"),
                              "summary": (b.get("reasoning") or {}).get("summary")}, "store": b.get("store", True), "temperature": 1.0,
                "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": b.get("tool_choice", "auto"),
                "tools": b.get("tools", []), "top_p": 1.0, "truncation": "disabled",
                "usage": usage if status == "completed" else None, "user": None, "metadata": {}}

    def events(self, rec: Recorded, output: list[dict], interleave: bool = True) -> list[dict]:
        """The SSE events OpenAI streams for `output`. interleave: the argument deltas of parallel
        function calls arrive interleaved (all calls announced first)."""
        resp = self.response(rec, [], "in_progress")
        ev: list[dict] = [{"type": "response.created", "response": resp},
                          {"type": "response.in_progress", "response": resp}]
        calls = [(i, it) for i, it in enumerate(output) if it["type"] == "function_call"]
        for i, it in enumerate(output):
            if it["type"] == "reasoning":
                ev.append({"type": "response.output_item.added", "output_index": i,
                           "item": {"id": it["id"], "type": "reasoning", "summary": []}})
                for k, s in enumerate(it["summary"]):
                    ev.append({"type": "response.reasoning_summary_part.added", "item_id": it["id"], "output_index": i,
                               "summary_index": k, "part": {"type": "summary_text", "text": ""}})
                    ev += [{"type": "response.reasoning_summary_text.delta", "item_id": it["id"], "output_index": i,
                            "summary_index": k, "delta": d, "obfuscation": "x"} for d in rsh_chunks(s["text"], 6)]
                    ev.append({"type": "response.reasoning_summary_text.done", "item_id": it["id"], "output_index": i,
                               "summary_index": k, "text": s["text"]})
                    ev.append({"type": "response.reasoning_summary_part.done", "item_id": it["id"], "output_index": i,
                               "summary_index": k, "part": {"type": "summary_text", "text": s["text"]}})
                ev.append({"type": "response.output_item.done", "output_index": i, "item": it})
            elif it["type"] == "message":
                t = it["content"][0]["text"]
                ev.append({"type": "response.output_item.added", "output_index": i,
                           "item": {"id": it["id"], "type": "message", "status": "in_progress", "role": "assistant",
                                    "content": []}})
                ev.append({"type": "response.content_part.added", "item_id": it["id"], "output_index": i,
                           "content_index": 0, "part": {"type": "output_text", "annotations": [], "logprobs": [],
                                                        "text": ""}})
                ev += [{"type": "response.output_text.delta", "item_id": it["id"], "output_index": i,
                        "content_index": 0, "delta": d, "logprobs": [], "obfuscation": "y"} for d in rsh_chunks(t, 5)]
                ev.append({"type": "response.output_text.done", "item_id": it["id"], "output_index": i,
                           "content_index": 0, "text": t, "logprobs": []})
                ev.append({"type": "response.content_part.done", "item_id": it["id"], "output_index": i,
                           "content_index": 0, "part": it["content"][0]})
                ev.append({"type": "response.output_item.done", "output_index": i, "item": it})
            elif not interleave or len(calls) < 2:
                ev += self._call_added(i, it) + self._call_deltas(i, it) + self._call_done(i, it)
        if interleave and len(calls) >= 2:
            for i, it in calls:
                ev += self._call_added(i, it)
            per = [self._call_deltas(i, it) for i, it in calls]
            for k in range(max(map(len, per))):
                ev += [d[k] for d in per if k < len(d)]
            for i, it in calls:
                ev += self._call_done(i, it)
        ev.append({"type": "response.completed", "response": self.response(rec, output, usage=RSH_USAGE)})
        return ev

    @staticmethod
    def _call_added(i: int, it: dict) -> list[dict]:
        return [{"type": "response.output_item.added", "output_index": i,
                 "item": {**it, "status": "in_progress", "arguments": ""}}]

    @staticmethod
    def _call_deltas(i: int, it: dict) -> list[dict]:
        return [{"type": "response.function_call_arguments.delta", "item_id": it["id"], "output_index": i,
                 "delta": d, "obfuscation": "z"} for d in rsh_chunks(it["arguments"], 4)]

    @staticmethod
    def _call_done(i: int, it: dict) -> list[dict]:
        return [{"type": "response.function_call_arguments.done", "item_id": it["id"], "output_index": i,
                 "name": it["name"], "arguments": it["arguments"]},
                {"type": "response.output_item.done", "output_index": i, "item": it}]

    @staticmethod
    def sse(events: list[dict]) -> bytes:
        out = []
        for n, e in enumerate(events):
            e = {**e, "sequence_number": n}
            out.append(f"event: {e['type']}\ndata: {json.dumps(e, ensure_ascii=False)}\n\n")
        return "".join(out).encode()

    def answer(self, rec: Recorded, script: list[dict], interleave: bool = True, usage: dict | None = None) -> Reply:
        """The model's answer to rec: SSE split at awkward bytes when it asked to stream, else JSON."""
        output = self.materialize(rec, script)
        if rec.body.get("stream"):
            evs = self.events(rec, output, interleave)
            if usage is not None:
                evs[-1]["response"]["usage"] = usage
            data = self.sse(evs)
            return stream_reply(data, pieces=rs_split(data), gap=0.0005)
        return json_reply(self.response(rec, output, usage=usage or RSH_USAGE),
                          headers=(("x-request-id", "req_fake_rs"), ("openai-processing-ms", "12")))


class FakeAzureResponses(FakeResponses):
    """Azure OpenAI v1 Responses: POST /openai/v1/responses, `api-key` header (Bearer also taken on v1),
    model = a deployment of the resource; api-version absent or preview/latest."""

    label = "azure-openai-responses"
    key = AZOAI_KEY
    path = "/openai/v1/responses"
    deployments = ("gpt-5-prod", "gpt-4.1-prod")

    def not_found(self, rec: Recorded) -> Reply:
        return json_reply({"error": {"code": "404", "message": "Resource not found"}}, 404)

    def auth_problem(self, rec: Recorded) -> Reply | None:
        if rec.headers.get("api-key") == self.key or rec.headers.get("authorization") == f"Bearer {self.key}":
            return None
        return json_reply({"error": {"code": "401", "message": "Access denied due to invalid subscription key or "
                                     "wrong API endpoint. Make sure to provide a valid key for an active subscription "
                                     "and use a correct regional API endpoint for your resource."}}, 401)

    def check(self, rec: Recorded) -> Reply | None:
        version = urllib.parse.parse_qs(rec.query).get("api-version", [None])[0]
        if self.path_ok(rec) and version not in (None, "preview", "latest"):
            return self.error(400, f"api-version {version!r} is not supported by the v1 API", code="BadRequest")
        return super().check(rec)

    def model_problem(self, model: Any) -> str | None:
        return None  # an unknown deployment is a 404 (below)

    def respond(self, rec: Recorded) -> Reply:
        bad = self.check(rec)
        if bad is None and rec.body.get("model") not in self.deployments:
            return self.error(404, "The API deployment for this resource does not exist. If you created the "
                                   "deployment within the last 5 minutes, please wait a moment and try again.",
                              code="DeploymentNotFound")
        return super().respond(rec)


def rs_env(fake: FakeResponses, **kw: Any) -> dict:
    return {"MODEL_PROVIDER": "openai-responses", "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": f"{fake.url}/v1",
            "UPSTREAM_MAX_RETRIES": "0", **kw}


@pytest.fixture(scope="module")
def rs_stack(tmp_path_factory):
    fake = FakeResponses()
    yield from shared_stack(tmp_path_factory, "rs", fake, rs_env(fake))


@pytest.fixture
def rs(rs_stack) -> Stack:
    rs_stack.fake.reset()
    return rs_stack


# -- Claude on Amazon Bedrock: the fake --

BR_REGION = "us-west-2"
BR_KEY_ID = "AKIAFAKEBEDROCK0001"
BR_SECRET = "wJalrXUtnFEMI/K7MDENG+bedrock/secret-canary-61f0"
BR_TOKEN_KEY_ID = "ASIAFAKEBEDROCK0002"
BR_TOKEN_SECRET = "tempSecret/+canary-session-secret-77aa"
BR_SESSION_TOKEN = "FwoGZXIvYXdzEBcaDsession-token-canary/+=9c1d"

BR_INVOKE_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"  # the preset's default

BR_TEXT = "Hello from fake Bedrock \u2014 \u00fcn\u00efc\u00f8d\u00e9 \u2713 \U0001f600"
BR_VERSION = "bedrock-2023-05-31"
ES_TYPE = "application/vnd.amazon.eventstream"
INVOKE_PATH = re.compile(r"/model/([^/]+)/(invoke|invoke-with-response-stream|count-tokens)")
MSG_PATHS = ("/anthropic/v1/messages", "/anthropic/v1/messages/count_tokens")
ARN_RE = re.compile(r"arn:aws:bedrock:[a-z0-9-]+:\d{12}:(inference-profile|application-inference-profile|"
                    r"foundation-model)/[A-Za-z0-9.:_-]+")
SIG_MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS "
                "Secret Access Key and signing method. Consult the service documentation for details.")
AUTH_RE = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                     r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})")


def aws_error(status: int, kind: str, message: str, headers: tuple = ()) -> Reply:
    """An AWS JSON-protocol error: the type in x-amzn-ErrorType, the message in the body."""
    return json_reply({"message": message}, status,
                      (("x-amzn-errortype", f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
                       ("x-amzn-requestid", "5e1b5a4c-0000-4000-8000-fakebedrock00"), *headers))


# The event-stream encoder (checked against botocore's parser: TestFakeBedrockOracle and test_botocore_parses_the_test_encoder_frames).
def es_frame(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    raw = b"".join(bytes([len(n.encode())]) + n.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
                   for n, v in headers)
    prelude = struct.pack(">II", 16 + len(raw) + len(payload), len(raw))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + raw + payload
    return message + struct.pack(">I", binascii.crc32(message))


def es_chunk(event: dict) -> bytes:
    data = base64.b64encode(json.dumps(event, ensure_ascii=False).encode()).decode()
    pad = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"[: 1 + len(data) % 40]
    return es_frame([(":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")],
                    json.dumps({"bytes": data, "p": pad}).encode())


def es_exception(kind: str, message: str) -> bytes:
    return es_frame([(":exception-type", kind), (":content-type", "application/json"),
                     (":message-type", "exception")], json.dumps({"message": message}).encode())


def es_awkward_points(frames: list[bytes]) -> list[int]:
    """Cuts inside every frame: mid total-length, mid prelude CRC, mid headers, mid payload, mid message CRC."""
    pts, pos = [], 0
    for f in frames:
        total, hlen = struct.unpack(">II", f[:8])
        pts += [pos + 1, pos + 5, pos + 10, pos + 12 + hlen // 2, pos + 12 + hlen + (total - 16 - hlen) // 3,
                pos + 12 + hlen + (total - 16 - hlen) * 2 // 3, pos + total - 2]
        pos += total
    return pts


def es_events(msg: dict, metrics: bool = True) -> list[dict]:
    """The Anthropic events of msg as Bedrock streams them (message_stop with its invocation metrics)."""
    events = [dict(d) for _, d in anth_events(msg) if d["type"] != "ping"]
    if metrics:
        events[-1]["amazon-bedrock-invocationMetrics"] = {"inputTokenCount": msg["usage"]["input_tokens"],
                                                          "outputTokenCount": msg["usage"]["output_tokens"],
                                                          "invocationLatency": 812, "firstByteLatency": 301}
    return events


def es_reply(frames: list[bytes], split: str = "awkward", **kw: Any) -> Reply:
    data = b"".join(frames)
    if split == "awkward":
        pieces = split_at(data, es_awkward_points(frames))
    elif split == "frames":
        pieces = list(frames)
    elif split == "one":
        pieces = [data]
    elif split.startswith("every"):
        n = int(split[5:])
        pieces = [data[i : i + n] for i in range(0, len(data), n)]
    else:  # "seed<N>": random cut points
        rng = random.Random(int(split[4:]))
        pieces = split_at(data, rng.sample(range(1, len(data)), min(len(data) - 1, 40)))
    return Reply(200, b"", (("content-type", ES_TYPE), ("x-amzn-bedrock-content-type", "application/json"),
                            ("x-amzn-requestid", "5e1b5a4c-0000-4000-8000-fakebedrock01")),
                 pieces=pieces, gap=kw.pop("gap", 0.0005), **kw)


def br_message(content: list[dict] | None = None, stop_reason: str = "end_turn", usage: dict | None = None,
               id: str = "msg_bdrk_01FAKE") -> dict:
    return anth_message(content if content is not None else [text(BR_TEXT)], model="claude-sonnet-4-5-20250929",
                        stop_reason=stop_reason, usage=usage, id=id)


def br_answer(rec: Recorded, content: list[dict] | None = None, stop_reason: str = "end_turn",
              split: str = "awkward") -> Reply:
    """What Bedrock answers for this request's surface: InvokeModel JSON (no model) or event-stream frames;
    the Messages API's Anthropic JSON or SSE."""
    msg = br_message(content, stop_reason)
    m = INVOKE_PATH.fullmatch(rec.path)
    if m:
        if m.group(2) == "invoke-with-response-stream":
            return es_reply([es_chunk(e) for e in es_events(msg)], split)
        return json_reply({k: v for k, v in msg.items() if k != "model"})
    msg["model"] = rec.body["model"]
    if rec.body.get("stream"):
        data = anth_sse(anth_events(msg))
        return stream_reply(data, pieces=split_at(data, awkward_points(data)))
    return json_reply(msg)


class FakeBedrock(FakeHTTP):
    """bedrock-runtime InvokeModel / InvokeModelWithResponseStream / CountTokens and the Messages API
    (/anthropic/v1/messages[/count_tokens]). Every SigV4 signature is recomputed with botocore."""

    MODELS = {BR_INVOKE_ID, "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
              "anthropic.claude-3-haiku-20240307-v1:0"}

    def __init__(self, region: str = BR_REGION, keys: dict[str, tuple[str, str]] | None = None,
                 bearer: str | None = None, messages_mode: str = "mantle", **kw: Any):
        super().__init__(**kw)
        self.region = region
        self.keys = {BR_KEY_ID: (BR_SECRET, ""), BR_TOKEN_KEY_ID: (BR_TOKEN_SECRET, BR_SESSION_TOKEN)} \
            if keys is None else keys
        self.bearer = bearer  # set: only this Bedrock API key is accepted (no SigV4)
        self.messages_mode = messages_mode  # "mantle" (Anthropic body) or "runtime" (anthropic_version in body)
        self.count_answer = 4321
        self.expired: set[str] = set()  # key ids whose (temporary) credentials have expired
        self.verified: list[dict] = []  # per accepted SigV4 request: key id, signed headers

    # -- authentication --
    def _sigv4(self, rec: Recorded) -> Reply | None:
        auth = rec.headers.get("authorization", "")
        m = AUTH_RE.fullmatch(auth)
        if not m:
            return aws_error(403, "IncompleteSignatureException", f"Authorization header requires 'Credential', "
                             f"'SignedHeaders' and 'Signature' parameters. Authorization={auth[:80]}")
        key_id, day, region, service, signed, _sig = m.groups()
        if key_id in self.expired:
            return aws_error(403, "ExpiredTokenException", "The security token included in the request is expired")
        if key_id not in self.keys:
            return aws_error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        secret, token = self.keys[key_id]
        amz_date = rec.headers.get("x-amz-date", "")
        if not re.fullmatch(r"\d{8}T\d{6}Z", amz_date) or amz_date[:8] != day:
            return aws_error(403, "IncompleteSignatureException", f"bad x-amz-date {amz_date!r} for scope {day}")
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
        if abs((datetime.datetime.now(datetime.UTC) - when).total_seconds()) > 300:
            return aws_error(403, "InvalidSignatureException", "Signature expired")
        if region != self.region or service != "bedrock":
            return aws_error(403, "InvalidSignatureException", f"Credential should be scoped to a valid region "
                             f"({self.region}) and service 'bedrock', not {region}/{service}.")
        names = signed.split(";")
        if names != sorted(names) or "host" not in names or "x-amz-date" not in names:
            return aws_error(403, "InvalidSignatureException", f"SignedHeaders must be sorted and sign host and x-amz-date: {signed}")
        missing = [n for n in names if n not in rec.headers]
        if missing:
            return aws_error(403, "InvalidSignatureException", f"signed headers not in the request: {missing}")
        unsigned = [n for n in rec.headers if n.startswith("x-amz-") and n not in names]
        if unsigned:
            return aws_error(400, "InvalidSignatureException",
                             f"There were headers present in the request which were not signed: {unsigned}")
        sent_token = rec.headers.get("x-amz-security-token", "")
        if sent_token != token:
            return aws_error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        payload_hash = rec.headers.get("x-amz-content-sha256")
        if payload_hash is not None and payload_hash != hashlib.sha256(rec.raw).hexdigest():
            return aws_error(400, "InvalidSignatureException", "The provided 'x-amz-content-sha256' header does "
                             "not match what was computed.")
        # botocore, frozen at the request's own x-amz-date, over exactly the headers it says it signed
        request = botocore.awsrequest.AWSRequest(method=rec.method, url=f"http://{rec.headers['host']}{rec.target}",
                                                 headers={n: rec.headers[n] for n in names}, data=rec.raw)
        request.context["timestamp"] = amz_date
        signer = botocore.auth.SigV4Auth(botocore.credentials.Credentials(key_id, secret, token or None),
                                         "bedrock", self.region)
        canonical = signer.canonical_request(request)
        signature = signer.signature(signer.string_to_sign(request, canonical), request)
        expected = (f"AWS4-HMAC-SHA256 Credential={key_id}/{signer.credential_scope(request)}, "
                    f"SignedHeaders={signer.signed_headers(signer.headers_to_sign(request))}, Signature={signature}")
        if auth != expected:
            return aws_error(403, "InvalidSignatureException", SIG_MISMATCH)
        with self.lock:
            self.verified.append({"key": key_id, "signed": names, "target": rec.target})
        return None

    def _auth(self, rec: Recorded) -> Reply | None:
        auth = rec.headers.get("authorization", "")
        if self.bearer is not None:
            if auth != f"Bearer {self.bearer}":
                return aws_error(403, "AccessDeniedException", "Authentication failed: Please make sure your API Key is valid.")
            sig = [n for n in rec.headers if n.startswith("x-amz-")]
            return aws_error(400, "ValidationException", f"SigV4 headers beside an API key: {sig}") if sig else None
        if auth.startswith("Bearer "):
            return aws_error(403, "AccessDeniedException", "Authentication failed: Please make sure your API Key is valid.")
        return self._sigv4(rec)

    # -- body rules --
    @staticmethod
    def _invoke_problems(body: Any, model: str, count: bool = False) -> list[str]:
        if not isinstance(body, dict):
            return ["Malformed input request: body is not a JSON object"]
        p = []
        for key in ("model", "stream"):
            if key in body:
                p.append(f"#: extraneous key [{key}] is not permitted")
        if body.get("anthropic_version") != BR_VERSION:
            p.append(f"#: required key [anthropic_version] not found or wrong: {body.get('anthropic_version')!r}")
        beta = body.get("anthropic_beta")
        if beta is not None and not (isinstance(beta, list) and beta and all(isinstance(b, str) for b in beta)):
            p.append(f"#/anthropic_beta: expected a non-empty list of strings, got {beta!r}")
        p += [x for x in anthropic_violations({**body, "model": model}) if not x.startswith("model:")]
        return p

    def check(self, rec: Recorded) -> Reply | None:
        m = INVOKE_PATH.fullmatch(rec.path)
        if rec.method != "POST" or rec.query or not (m or rec.path in MSG_PATHS):
            return aws_error(404, "UnknownOperationException", f"no operation at {rec.method} {rec.target}")
        bad = self._auth(rec)
        if bad is not None:
            return bad
        if any(CLIENT_KEY in v for v in rec.headers.values()) or "x-api-key" in rec.headers:
            return aws_error(400, "ValidationException", "the client's Anthropic key reached Bedrock")
        if m:
            model = urllib.parse.unquote(m.group(1))
            if m.group(1) != urllib.parse.quote(model, safe=""):
                return aws_error(400, "ValidationException", f"model id not encoded as one path segment: {m.group(1)}")
            if model not in self.MODELS and not ARN_RE.fullmatch(model):
                return aws_error(400, "ValidationException", "The provided model identifier is invalid.")
            if rec.headers.get("content-type", "").split(";")[0] != "application/json":
                return aws_error(400, "ValidationException", f"content-type {rec.headers.get('content-type')!r}")
            if "anthropic-beta" in rec.headers or "anthropic-version" in rec.headers:
                return aws_error(400, "ValidationException", "anthropic-* headers are not InvokeModel's: betas go "
                                 "in the body's anthropic_beta")
            body = rec.body
            if m.group(2) == "count-tokens":
                try:
                    inner = json.loads(base64.b64decode(body["input"]["invokeModel"]["body"], validate=True))
                    assert set(body) == {"input"} and set(body["input"]) == {"invokeModel"}
                except (TypeError, KeyError, ValueError, AssertionError):
                    return aws_error(400, "ValidationException", f"CountTokens input malformed: {rec.raw[:200]!r}")
                problems = self._invoke_problems(inner, model, count=True)
            else:
                problems = self._invoke_problems(body, model)
            return aws_error(400, "ValidationException", "; ".join(problems)) if problems else None
        # the Messages API
        body = rec.body
        if not isinstance(body, dict):
            return json_reply(anth_error(400, "invalid_request_error", "body: not an object"), 400)
        count = rec.path.endswith("count_tokens")
        problems = anthropic_violations(body, count=count)
        if self.messages_mode == "mantle":
            if rec.headers.get("anthropic-version") != "2023-06-01":
                problems.append(f"anthropic-version: {rec.headers.get('anthropic-version')!r} is not supported "
                                "(2023-06-01)")
            if "anthropic_version" in body:
                problems.append("anthropic_version: Extra inputs are not permitted")
        elif not count and body.get("anthropic_version") != BR_VERSION:
            problems.append(f"anthropic_version: Input should be '{BR_VERSION}', got {body.get('anthropic_version')!r}")
        if "anthropic_beta" in body:
            problems.append("anthropic_beta: Extra inputs are not permitted (a header on the Messages API)")
        if problems:
            return json_reply(anth_error(400, "invalid_request_error", "; ".join(problems)), 400)
        return None

    def default(self, rec: Recorded) -> Reply:
        if rec.path.endswith("/count-tokens"):
            return json_reply({"inputTokens": self.count_answer})
        if rec.path.endswith("/count_tokens"):
            return json_reply({"input_tokens": self.count_answer})
        return br_answer(rec)

    # -- what tests read --
    def invoke_body(self, rec: Recorded | None = None) -> dict:
        rec = rec or self.last
        if rec.path.endswith("/count-tokens"):
            return json.loads(base64.b64decode(rec.body["input"]["invokeModel"]["body"]))
        return rec.body


def br_env(fake: FakeHTTP | None, **kw: Any) -> dict:
    env = {"MODEL_PROVIDER": "bedrock", "AWS_REGION": BR_REGION, "AWS_ACCESS_KEY_ID": BR_KEY_ID,
           "AWS_SECRET_ACCESS_KEY": BR_SECRET}
    if fake is not None:
        env["AWS_BEDROCK_ENDPOINT"] = fake.url
    env.update(kw)
    return env


def raw_client_bytes(port: int, body: dict, headers: dict | None = None) -> bytes:
    return call(port, "POST", "/v1/messages", body, headers).data


@pytest.fixture(scope="module")
def br_stack(tmp_path_factory):
    fake = FakeBedrock()
    yield from shared_stack(tmp_path_factory, "br", fake, br_env(fake))


@pytest.fixture
def br(br_stack) -> Stack:
    br_stack.fake.reset()
    with br_stack.fake.lock:
        br_stack.fake.verified.clear()
    return br_stack


# == 4. Utilities ==

# -- logging --


class TestLogging:
    def test_request_log_line(self, dbx):
        dbx.fake.push(json_reply(oai_completion("hi", usage={"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107,
                                                             "prompt_tokens_details": {"cached_tokens": 60}})))
        r = dbx.proxy.post(base_req(model="claude-log-test"))
        rid = r.headers["request-id"]
        line = dbx.proxy.wait_log(lambda o: o.get("msg") == "request" and o.get("request_id") == rid)
        assert {"ts", "level", "msg"} <= set(line)
        assert line["method"] == "POST" and line["path"].startswith("/v1/messages") and line["status"] == 200
        assert line["provider"] == "databricks" and line["model"] == "claude-log-test"
        assert line["upstream_model"] == "databricks-claude-sonnet-4-5"
        assert isinstance(line["latency_ms"], (int, float)) and line["latency_ms"] >= 0
        assert (line["input_tokens"], line["output_tokens"]) == (40, 7)
        assert line["stream"] is False

    def test_stream_and_error_log_lines(self, dbx):
        dbx.fake.push(stream_reply(oai_sse(oai_stream("streamed", usage={"prompt_tokens": 33, "completion_tokens": 4,
                                                                         "total_tokens": 37}))))
        r = dbx.proxy.post(base_req(stream=True))
        rid = r.headers["request-id"]
        line = dbx.proxy.wait_log(lambda o: o.get("msg") == "request" and o.get("request_id") == rid)
        assert line["stream"] is True and line["status"] == 200 and line["output_tokens"] == 4
        dbx.fake.push(dbx_error(429, "REQUEST_LIMIT_EXCEEDED", "slow down"))
        r = dbx.proxy.post(base_req())
        rid = r.headers["request-id"]
        line = dbx.proxy.wait_log(lambda o: o.get("msg") == "request" and o.get("request_id") == rid)
        assert line["status"] == 429

    def test_no_secrets_or_prompt_text_in_logs(self, new_dbx, make_proxy):
        fake = new_dbx()
        lkey = "lynkr-log-secret-77aa"
        p = make_proxy(dbx_env(fake, LYNKR_API_KEY=lkey))
        canary = "PROMPT-CANARY-5d1e"
        hdr = {"x-api-key": lkey}
        fake.push(json_reply(oai_completion(f"answer {canary}-out")))
        assert p.post(cc_body(stream=False, canary=canary), headers=hdr).status == 200
        fake.push(stream_reply(oai_sse(oai_stream(f"streamed {canary}-out", tools=[("call_1", "Bash", {"command": canary})],
                                                  finish="tool_calls"))))
        p.post(cc_body(stream=True, canary=canary), headers=hdr).stream().ok()
        fake.push(dbx_error(400, "BAD_REQUEST", "nope"))
        assert p.post(cc_body(stream=False, canary=canary), headers=hdr).status == 400
        assert p.post(cc_body(canary=canary), headers={"x-api-key": "wrong-" + lkey}).status == 401
        assert p.post(b'{"messages": "' + canary.encode(), headers=hdr).status == 400
        p.wait_log(lambda o: o.get("status") == 400 and o.get("msg") == "request" and o.get("path", "").startswith("/v1"))
        time.sleep(0.2)
        log = p.stderr
        for secret in (DBX_KEY, lkey, CLIENT_KEY, canary):
            assert secret not in log, f"{secret!r} leaked into the log:\n{log[-3000:]}"

    def test_log_bodies_opt_in(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake, LOG_BODIES="true"))
        canary = "BODY-CANARY-19f0"
        assert p.post(base_req(messages=[user(f"hello {canary}")])).status == 200
        wait_for(lambda: canary in p.stderr, 3, "the request body in the log")
        assert DBX_KEY not in p.stderr and CLIENT_KEY not in p.stderr

    def test_every_line_is_json(self, dbx):
        dbx.proxy.post(base_req())
        dbx.proxy.call("GET", "/nope")
        for line in dbx.proxy.lines:
            o = json.loads(line)
            assert {"ts", "level", "msg"} <= set(o), line

    def test_text_format(self, tmp_path):
        port = free_port()
        p = spawn(tmp_path, base_env(tmp_path, {"LOG_FORMAT": "text", "LYNKR_PORT": port}), args=())
        try:
            wait_for(lambda: any("listening" in x for x in p.lines) or p.proc.poll() is not None, 15, "listening")
            assert p.proc.poll() is None, p.stderr
            assert call(port, "GET", "/health").status == 200
            wait_for(lambda: len(p.lines) >= 2, 3, "request line")
            for line in p.lines:
                with pytest.raises(ValueError):
                    json.loads(line)
        finally:
            p.stop()


class TestConfinementLogsAndStreams:
    """Items 11, 12: no prompt text in error logs; lone surrogates never cut a stream silently."""

    def test_unhandled_error_log_has_no_prompt_text(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake))
        canary = "PROMPT-CANARY-e11a"
        # a lone surrogate in the prompt (valid JSON, not encodable as UTF-8) reached an unhandled error
        # whose log line carried the prompt
        raw = ('{"model":"claude-sonnet-4-5","max_tokens":64,'
               '"messages":[{"role":"user","content":"CANARY \\ud800 tail"}]}').replace("CANARY", canary).encode()
        for stream in (False, True):
            payload = raw if not stream else raw.replace(b'"max_tokens":64', b'"max_tokens":64,"stream":true')
            try:
                p.post(payload, headers={"x-session-id": f"conf-log-{stream}"})
            except (http.client.HTTPException, OSError):
                pass  # a cut stream is item 12's concern; here only the log matters
        wait_for(lambda: sum(1 for o in p.logs() if o.get("msg") == "request" and o.get("path") == "/v1/messages") == 2,
                 5, "both requests to be logged")
        assert p.proc.poll() is None
        assert canary not in p.stderr, [ln for ln in p.lines if canary in ln][:2]
        assert p.call("GET", "/health").status == 200

    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
    def test_upstream_lone_surrogate_is_escaped_or_an_error_and_recorded(self, agent, stream):
        st = agent("dbx")
        chunks = [oai_chunk({"role": "assistant"}), oai_chunk({"content": "before "}),
                  oai_chunk({"content": "\ud800"}), oai_chunk({"content": " after"}),
                  oai_chunk({}, finish="stop"),
                  oai_chunk(choices=False, usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})]
        sse = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        if stream:
            st.fake.push(stream_reply(sse))
        else:
            st.fake.push(Reply(200, json.dumps(oai_completion("before \ud800 after")).encode(),
                               (("content-type", "application/json"),)))
        sid = f"conf-surrogate-{stream}"
        try:
            r = st.proxy.post(base_req(stream=stream, messages=[user("say something odd")]),
                              headers={"x-session-id": sid})
        except http.client.HTTPException as exc:
            pytest.fail(f"the response was cut without an error event: {exc!r}")
        assert r.status == 200, r.data[:500]
        rid = r.headers["request-id"]
        if stream:
            events = r.events()
            s = assemble(events)  # ends with message_stop or event: error, never a silent cut
            if s.error is None:
                said = "".join(texts(s.message))
                assert said.startswith("before ") and said.endswith(" after"), said
        else:
            msg = r.json()
            said = "".join(texts(msg))
            assert said.startswith("before ") and said.endswith(" after"), said
        session = wait_for(lambda: (s_ := session_of(st.proxy, sid)) and len(s_["turns"]) >= 2 and s_, 5,
                           "the turn to be recorded")
        kinds = [(t["kind"], t.get("request_id")) for t in session["turns"]]
        assert ("assistant", rid) in kinds, kinds
        assert st.proxy.proc.poll() is None and st.proxy.call("GET", "/health").status == 200


# -- GET /metrics --


def rel_check_histograms(m: RelMetrics) -> int:
    """Every histogram series: `le` ascending ending in +Inf, cumulative counts, +Inf == _count. Returns series."""
    series = 0
    for fam, kind in m.types.items():
        if kind != "histogram":
            continue
        groups: dict[tuple, list[tuple[float, float]]] = {}
        for name, labels, value in m.samples:
            if name == fam + "_bucket":
                key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                groups.setdefault(key, []).append((float(labels["le"]), value))
        for key, buckets in groups.items():
            series += 1
            les = [le for le, _ in buckets]
            assert les == sorted(les) and len(set(les)) == len(les), f"{fam}{key}: le not ascending: {les}"
            assert les[-1] == float("inf"), f"{fam}{key}: last bucket is not +Inf"
            counts = [c for _, c in buckets]
            assert all(a <= b for a, b in itertools.pairwise(counts)), f"{fam}{key}: buckets not cumulative: {counts}"
            labels = dict(key)
            count = m.select(fam + "_count", **labels)
            total = m.select(fam + "_sum", **labels)
            assert len(count) == 1 and len(total) == 1, f"{fam}{key}: _count/_sum missing"
            assert counts[-1] == count[0][1], f"{fam}{key}: +Inf bucket {counts[-1]} != _count {count[0][1]}"
            assert total[0][1] >= 0
    return series


class TestMetrics:
    FAMILIES: ClassVar[dict[str, str]] = {
        "lynkr_requests_total": "counter", "lynkr_request_duration_seconds": "histogram",
        "lynkr_time_to_first_token_seconds": "histogram", "lynkr_upstream_duration_seconds": "histogram",
        "lynkr_tokens_total": "counter", "lynkr_prompt_cache_total": "counter", "lynkr_tool_calls_total": "counter",
        "lynkr_upstream_retries_total": "counter", "lynkr_circuit_breaker_state": "gauge",
        "lynkr_in_flight_requests": "gauge", "lynkr_in_flight_streams": "gauge",
    }

    def test_format_counters_and_histograms(self, rel_stack):
        st_ = rel_stack("dbx")
        p, fake = st_.proxy, st_.fake
        m0 = rel_scrape(p)
        for name, kind in self.FAMILIES.items():
            assert m0.types.get(name) == kind and m0.help.get(name), f"{name}: # TYPE {m0.types.get(name)}"
        assert set(m0.help) == set(m0.types)
        usage = {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107}
        fake.push(json_reply(oai_completion("one", usage=usage)), json_reply(oai_completion("two", usage=usage)),
                  stream_reply(oai_sse(oai_stream("three", usage={"prompt_tokens": 50, "completion_tokens": 3,
                                                                    "total_tokens": 53}))))
        assert p.post(base_req()).status == 200
        assert p.post(base_req()).status == 200
        assert p.post(base_req(stream=True)).stream().ok()
        assert p.post({"model": "claude-sonnet-4-5"}).status == 400
        assert p.call("GET", "/v1/models").status == 200
        assert p.call("GET", "/no/such/route").status == 404
        m = rel_scrape(p)
        msgs = {"route": "/v1/messages", "method": "POST"}
        assert m.get("lynkr_requests_total", status=200, provider="databricks", model="claude-sonnet-4-5", **msgs) == 3
        assert m.get("lynkr_requests_total", status=400, **msgs) == 1
        assert m.get("lynkr_requests_total", route="/v1/models", status=200) == 1
        assert m.get("lynkr_requests_total", status=404) == 1
        assert m.get("lynkr_tokens_total", direction="input", provider="databricks") == 250
        assert m.get("lynkr_tokens_total", direction="output", provider="databricks") == 17
        assert rel_check_histograms(m) >= 3
        assert m.get("lynkr_request_duration_seconds_count", route="/v1/messages") == 4
        assert m.get("lynkr_time_to_first_token_seconds_count") == 1
        assert m.get("lynkr_upstream_duration_seconds_count", provider="databricks") == 3
        # counters only go up, by exactly what happened
        assert p.post(base_req()).status == 200
        m2 = rel_scrape(p)
        assert m2.get("lynkr_requests_total", status=200, **msgs) == 4
        assert m2.get("lynkr_request_duration_seconds_count", route="/v1/messages") == 5
        for name, labels, value in m.samples:
            if m.types.get(m.family(name)) == "counter" or name.endswith(("_bucket", "_count", "_sum")):
                assert sum(v for n2, l2, v in m2.samples if n2 == name and l2 == labels) >= value, (name, labels)
        assert rel_check_histograms(m2) >= 3

    def test_in_flight_gauges(self, rel_stack):
        st_ = rel_stack("dbx")
        p, fake = st_.proxy, st_.fake
        fake.push(stream_reply(oai_sse(oai_stream("a slow stream of words", pieces=4)), gap=0.2))
        conn, resp = open_stream(p.port, base_req(stream=True))
        it = iter_events(resp)
        next(e for e in it if e[1] == "content_block_delta")
        m = rel_scrape(p)
        assert m.get("lynkr_in_flight_streams") == 1
        assert m.get("lynkr_in_flight_requests") == 1  # the stream; scrapes and probes never take a slot
        list(it)
        conn.close()
        wait_for(lambda: rel_scrape(p).get("lynkr_in_flight_streams") == 0, 5, "the stream gauge to drop")
        m = rel_scrape(p)
        assert m.get("lynkr_in_flight_requests") == 0
        assert m.get("lynkr_time_to_first_token_seconds_count") == 1

    def test_prompt_cache_hits_and_misses(self, rel_stack):
        st_ = rel_stack("dbx", PROMPT_CACHE_ENABLED="true")
        p, fake = st_.proxy, st_.fake
        body = base_req(messages=[user("cache me please")])
        first, second = p.post(body), p.post(body)
        assert rel_answer(first, False) == rel_answer(second, False) == REL_TEXT["dbx"]
        assert (first.headers.get("x-lynkr-cache"), second.headers.get("x-lynkr-cache")) == ("stored", "hit")
        assert len(fake.requests) == 1
        m = rel_scrape(p)
        assert (m.get("lynkr_prompt_cache_total", result="miss"), m.get("lynkr_prompt_cache_total", result="hit")) == (1, 1)

    def test_tool_calls_by_name_and_outcome(self, tmp_path, rel_stack):
        (tmp_path / "hello.txt").write_text("hello from the workspace\n")
        st_ = rel_stack("dbx", LYNKR_TOOLS="fs_read")
        p, fake = st_.proxy, st_.fake
        calls_ = [("call_ok", "fs_read", {"path": "hello.txt"}), ("call_bad", "fs_read", {"path": "missing.txt"})]
        fake.push(stream_reply(oai_sse(oai_stream("Reading.", tools=calls_, finish="tool_calls"))),
                  stream_reply(oai_sse(oai_stream("Done reading."))))
        r = p.post(base_req(messages=[user("read hello.txt and missing.txt")]))
        assert r.status == 200 and "Done reading." in "".join(texts(r.json())), r.data[:500]
        assert len(fake.requests) == 2
        m = rel_scrape(p)
        assert m.get("lynkr_tool_calls_total", tool="fs_read", outcome="ok") == 1
        assert m.get("lynkr_tool_calls_total", tool="fs_read", outcome="error") == 1

    def test_direct_tool_calls_are_counted_too(self, tmp_path, rel_stack):
        (tmp_path / "hello.txt").write_text("hello\n")
        p = rel_stack("dbx").proxy
        assert p.post({"path": "hello.txt"}, path="/v1/tools/fs_read").json()["is_error"] is False
        assert p.post({"path": "missing.txt"}, path="/v1/tools/fs_read").json()["is_error"] is True
        m = rel_scrape(p)
        assert m.get("lynkr_tool_calls_total", tool="fs_read", outcome="ok") == 1, \
            "POST /v1/tools/{name} runs a server tool but lynkr_tool_calls_total does not count it"
        assert m.get("lynkr_tool_calls_total", tool="fs_read", outcome="error") == 1


class TestConfinementMetrics:
    """Item 8: label cardinality and length are bounded."""

    def test_unique_long_model_names_do_not_grow_metrics(self, rel_stack):
        p = rel_stack("dbx").proxy
        assert p.post(base_req()).status == 200  # a known model keeps its own label
        names = [f"m{i:04d}-" + "z" * 1019 for i in range(300)]
        with ThreadPoolExecutor(8) as ex:
            statuses = list(ex.map(lambda n: p.post(base_req(model=n), timeout=30).status, names))
        assert set(statuses) == {200}, set(statuses)  # each answered, each counted under its model
        r = p.call("GET", "/metrics", defaults=False)
        assert r.status == 200 and len(r.data) < 100 * 1024, f"/metrics is {len(r.data)} bytes"
        m = rel_parse_metrics(r.data.decode())
        models = {lab["model"] for _n, lab, _v in m.samples if "model" in lab}
        assert max((len(x) for x in models), default=0) <= 256, max(models, key=len)[:80]
        assert len(models) <= 20, len(models)
        assert "other" in models, sorted(models)
        assert m.get("lynkr_requests_total", model="claude-sonnet-4-5") >= 1
        assert m.get("lynkr_requests_total", model="other") == 300


# == 5. Config ==

# -- settings, the CLI's start flags, dotenv --


class TestConfigCLI:
    def test_version(self, tmp_path):
        r = run_lynkr(tmp_path, args=("--version",))
        assert r.returncode == 0, r.stderr
        assert re.fullmatch(r"lynkr \d+\.\d+\.\d+\S*", r.stdout.strip()), r.stdout

    def test_help_lists_options(self, tmp_path):
        r = run_lynkr(tmp_path, args=("--help",))
        assert r.returncode == 0, r.stderr
        for opt in ("--port", "--host", "--env-file", "--version"):
            assert opt in r.stdout, f"{opt} missing from --help:\n{r.stdout}"

    def test_start_subcommand_serves(self, make_proxy):
        p = make_proxy(args=("start", "--port", "0"))
        assert p.call("GET", "/health").status == 200

    def test_unconfigured_proxy_starts_and_explains(self, make_proxy):
        p = make_proxy()
        h = p.call("GET", "/health")
        assert h.status == 200 and h.json()["configured"] is False, h.data
        r = p.post(base_req())
        assert r.status == 503, r.data
        assert r.etype == "api_error"
        for var in ("DATABRICKS_API_BASE", "DATABRICKS_API_KEY", "AZURE_ANTHROPIC_ENDPOINT"):
            assert var in r.emsg, r.emsg
        assert r.headers.get("x-should-retry") == "false"

    INVALID: ClassVar[list] = [
        ({"LYNKR_PORT": "abc"}, "LYNKR_PORT", ()),
        ({"LYNKR_PORT": "70000"}, "LYNKR_PORT", ()),
        ({"MODEL_PROVIDER": "nope"}, "MODEL_PROVIDER", None),
        ({"DATABRICKS_API_BASE": "not a url", "DATABRICKS_API_KEY": "k"}, "DATABRICKS_API_BASE", None),
        ({"DATABRICKS_API_BASE": "ftp://example.com", "DATABRICKS_API_KEY": "k"}, "DATABRICKS_API_BASE", None),
        ({"DATABRICKS_API_BASE": "http://127.0.0.1:9"}, "DATABRICKS_API_KEY", None),
        ({"MODEL_MAP": "garbage"}, "MODEL_MAP", None),
        ({"MODEL_MAX_TOKENS": "claude-*=lots"}, "MODEL_MAX_TOKENS", None),
        ({"MODEL_MAX_TOKENS_DEFAULT": "0"}, "MODEL_MAX_TOKENS_DEFAULT", None),
        ({"LYNKR_HOST": "0.0.0.0"}, "LYNKR_API_KEY", None),
        ({"STREAM_PING_INTERVAL_MS": "soon"}, "STREAM_PING_INTERVAL_MS", None),
        ({"UPSTREAM_READ_TIMEOUT_MS": "-1"}, "UPSTREAM_READ_TIMEOUT_MS", None),
        ({"UPSTREAM_CONNECT_TIMEOUT_MS": "x"}, "UPSTREAM_CONNECT_TIMEOUT_MS", None),
        ({"SHUTDOWN_GRACE_MS": "later"}, "SHUTDOWN_GRACE_MS", None),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT", None),
        ({"DATABRICKS_API_FORMAT": "grpc", "DATABRICKS_API_BASE": "http://127.0.0.1:9", "DATABRICKS_API_KEY": "k"},
         "DATABRICKS_API_FORMAT", None),
        ({"MODEL_PROVIDER": "azure-anthropic", "AZURE_ANTHROPIC_ENDPOINT": "nope", "AZURE_ANTHROPIC_API_KEY": "k"},
         "AZURE_ANTHROPIC_ENDPOINT", None),
        ({"MODEL_PROVIDER": "azure-anthropic", "AZURE_ANTHROPIC_ENDPOINT": "http://127.0.0.1:9/anthropic"},
         "AZURE_ANTHROPIC_API_KEY", None),
    ]

    @pytest.mark.parametrize("extra,var,args", INVALID, ids=[f"{v}={next(iter(e.values()))}" for e, v, _ in INVALID])
    def test_invalid_setting_exits_2_with_one_line(self, tmp_path, extra, var, args):
        r = run_lynkr(tmp_path, extra, args=("--port", "0") if args is None else args)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode == 2, f"exit {r.returncode}, stderr:\n{r.stderr}"
        assert len(lines) == 1 and lines[0].startswith("lynkr: "), f"want one 'lynkr: ' line, got:\n{r.stderr}"
        assert var in lines[0], lines[0]
        assert "Traceback" not in r.stderr

    def test_invalid_setting_in_dotenv_exits_2(self, tmp_path):
        (tmp_path / ".env").write_text("LYNKR_PORT=not-a-port\n")
        trust_here(tmp_path)
        r = run_lynkr(tmp_path, args=())
        assert r.returncode == 2 and "LYNKR_PORT" in r.stderr and "Traceback" not in r.stderr, r.stderr

    def test_cli_host_non_loopback_without_key_refused(self, tmp_path):
        r = run_lynkr(tmp_path, args=("--host", "0.0.0.0", "--port", "0"))
        assert r.returncode == 2, r.stderr
        assert "LYNKR_API_KEY" in r.stderr and "Traceback" not in r.stderr

    def test_dotenv_prefixed_keys_read_and_real_env_wins(self, tmp_path, new_dbx, make_proxy):
        fake = new_dbx()
        (tmp_path / ".env").write_text(
            "# lynkr settings, mixed into an app's own .env\n"
            f"DATABRICKS_API_BASE={fake.url}\n"
            f'DATABRICKS_API_KEY="{DBX_KEY}"\n'
            "MODEL_DEFAULT=from-dotenv\n"
            "MODEL_MAP=claude-special=from-dotenv-map\n"
            "\n"
            "HOST=0.0.0.0\n"
            "PORT=1\n"
            "SECRET_OF_THE_APP=do-not-read\n")
        trust_here(tmp_path)
        p = make_proxy({"MODEL_DEFAULT": "from-env"})
        assert p.info.get("url", "").startswith("http://127.0.0.1:"), p.info  # HOST= in .env is not ours
        assert p.post(base_req(model="claude-anything")).status == 200
        assert fake.endpoint(fake.last) == "from-env"  # the real environment wins
        assert p.post(base_req(model="claude-special")).status == 200
        assert fake.endpoint(fake.last) == "from-dotenv-map"  # prefixed keys are read, quotes stripped
        notice = [line for line in p.lines if "PORT" in line and "LYNKR_PORT" in line]
        assert notice, f"no notice about the ignored PORT line:\n{p.stderr}"

    def test_env_file_option(self, tmp_path, new_dbx, make_proxy):
        fake = new_dbx()
        envfile = tmp_path / "conf" / "lynkr.env"
        envfile.parent.mkdir()
        envfile.write_text(f"DATABRICKS_API_BASE={fake.url}\nDATABRICKS_API_KEY={DBX_KEY}\n")
        p = make_proxy(args=("--port", "0", "--env-file", str(envfile)))
        assert p.call("GET", "/health").json()["configured"] is True
        assert p.post(base_req()).status == 200 and len(fake.requests) == 1

    def test_lynkr_port_used(self, make_proxy):
        port = free_port()
        p = make_proxy({"LYNKR_PORT": port}, args=())
        assert p.port == port

    def test_port_from_real_env_used(self, make_proxy):
        port = free_port()
        p = make_proxy({"PORT": port}, args=())
        assert p.port == port

    def test_lynkr_port_beats_port(self, make_proxy):
        port = free_port()
        p = make_proxy({"LYNKR_PORT": port, "PORT": free_port()}, args=())
        assert p.port == port

    def test_cli_port_beats_env(self, make_proxy):
        with socket.create_server(("127.0.0.1", 0)) as busy:
            taken = busy.getsockname()[1]
            p = make_proxy({"LYNKR_PORT": taken, "PORT": taken})
            assert p.port != taken and p.call("GET", "/health").status == 200

    def test_data_dir_default_under_workspace(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        ws.mkdir()
        make_proxy({"WORKSPACE_ROOT": ws, "LYNKR_DATA_DIR": None})
        assert ignores_all(ws / ".lynkr" / ".gitignore")

    def test_data_dir_explicit(self, tmp_path, make_proxy):
        d = tmp_path / "deep" / "state"
        make_proxy({"LYNKR_DATA_DIR": d})
        assert ignores_all(d / ".gitignore")

    def test_workspace_root_defaults_to_cwd(self, tmp_path, make_proxy):
        cwd = tmp_path / "proj"
        cwd.mkdir()
        make_proxy({"WORKSPACE_ROOT": None, "LYNKR_DATA_DIR": None}, cwd=cwd)
        assert ignores_all(cwd / ".lynkr" / ".gitignore")

    def test_health_reports_provider_and_version(self, dbx, tmp_path):
        r = dbx.proxy.call("GET", "/health")
        assert r.status == 200
        h = r.json()
        assert h["status"] == "ok" and h["provider"] == "databricks" and h["configured"] is True
        ver = run_lynkr(tmp_path, args=("--version",)).stdout.split()[-1]
        assert h["version"] == ver


@pytest.mark.parametrize("name,value", [("LYNKR_INDEX_ON_START", "maybe"), ("LYNKR_CLAUDE_MD", "sometimes"),
                                        ("LYNKR_HEADER_TIMEOUT_MS", "soon"), ("LYNKR_INDEX_TIMEOUT_MS", "-5")])
def test_flags_and_durations_are_validated_at_startup(tmp_path, name, value):
    r = run_lynkr(tmp_path, env=base_env(tmp_path, {name: value}), args=("--port", "0"), timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("lynkr: ") and name in lines[0], r.stderr
    assert "Traceback" not in r.stderr


# -- the settings table and the config file (in-process) --


class TestSettingsTable:
    def test_configuration_reference_is_generated_from_the_table(self):
        lynkr = _lynkr()
        doc = (HERE / "docs" / "configuration.md").read_text(encoding="utf-8")
        assert lynkr.settings_markdown() in doc, (
            "docs/configuration.md is out of step with SETTINGS: regenerate its table with "
            "`python lynkr.py --settings-reference`")
        readme = (HERE / "README.md").read_text(encoding="utf-8")
        assert "docs/configuration.md" in readme and "docs/providers.md" in readme

    def test_help_lists_every_setting(self, tmp_path):
        lynkr = _lynkr()
        r = run_lynkr(tmp_path, args=("--help",))
        assert r.returncode == 0, r.stderr
        for s in lynkr.SETTINGS:
            assert s.name in r.stdout, s.name

    def test_settings_are_typed_and_frozen(self, tmp_path):
        lynkr = _lynkr()
        cfg = lynkr.load_config({"WORKSPACE_ROOT": str(tmp_path), "UPSTREAM_READ_TIMEOUT_MS": "2500",
                                 "LYNKR_TOOLS": "a, b*", "POLICY_GIT_ALLOW_PUSH": "yes"})
        s = cfg.settings
        assert s.upstream_read_timeout_s == 2.5 and s.lynkr_tools == ("a", "b*") and s.policy_git_allow_push is True
        assert s.model_provider == "databricks" and s.upstream_max_retries == 2
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.upstream_max_retries = 5
        fields = {f.name: f.type for f in dataclasses.fields(s)}
        assert fields["upstream_read_timeout_s"] == "float" and fields["policy_git_allow_push"] == "bool"

    @pytest.mark.parametrize("env,needle", [
        ({"UPSTREAM_MAX_RETRIES": "eleven"}, "UPSTREAM_MAX_RETRIES"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"OPENAI_BASE_URL": "ftp://x"}, "OPENAI_BASE_URL"),
        ({"MODEL_MAP": "claude-*"}, "MODEL_MAP"),
        ({"MCP_SANDBOX_PERMISSION_MODE": "maybe"}, "MCP_SANDBOX_PERMISSION_MODE"),
    ])
    def test_bad_setting_names_itself(self, tmp_path, env, needle):
        lynkr = _lynkr()
        with pytest.raises(lynkr.ConfigError) as e:
            lynkr.load_config({"WORKSPACE_ROOT": str(tmp_path), **env})
        assert needle in str(e.value)

    def test_model_map_targets_may_name_a_provider(self, tmp_path):
        lynkr = _lynkr()
        cfg = lynkr.load_config({"WORKSPACE_ROOT": str(tmp_path),
                                 "MODEL_MAP": "claude-*haiku*=local,qwen2.5-coder:7b, claude-*=dbx-endpoint"})
        assert cfg.model_map == (("claude-*haiku*", "local,qwen2.5-coder:7b"), ("claude-*", "dbx-endpoint"))

    def test_config_file_settings_rank_below_the_environment(self, tmp_path):
        lynkr = _lynkr()
        conf = tmp_path / "lynkr.toml"
        conf.write_text('[settings]\nLOG_LEVEL = "debug"\nPOLICY_MAX_STEPS = 3\nPROMPT_CACHE_ENABLED = false\n')
        cfg = lynkr.load_config({"WORKSPACE_ROOT": str(tmp_path), "POLICY_MAX_STEPS": "5"}, config_file=str(conf))
        assert cfg.log_level == "debug" and cfg.settings.policy_max_steps == 5
        assert cfg.settings.prompt_cache_enabled is False


class TestConfigFileInProcess:
    def router(self, tmp_path, text: str, env: dict | None = None):
        lynkr = _lynkr()
        conf = tmp_path / "lynkr.toml"
        conf.write_text(text)
        environ = {"WORKSPACE_ROOT": str(tmp_path), **(env or {})}
        cfg = lynkr.load_config(environ, config_file=str(conf))
        return lynkr.build_router(cfg, lynkr.HTTPClient(), lynkr.Logger("json", "error"))

    def test_the_example_config_is_valid(self, tmp_path):
        example = (HERE / "examples" / "lynkr.toml").read_text()
        r = self.router(tmp_path, example, {"DATABRICKS_TOKEN": "dapi-example", "AZURE_FOUNDRY_KEY": "az-example"})
        assert sorted(r.providers) == ["azure", "dbx", "local"]
        assert r.providers["dbx"].spec.api_key == "dapi-example"
        assert str(r.routes["background"]) == "local,qwen2.5-coder:7b"
        assert [str(t) for t in r.fallbacks["default"]] == ["azure,claude-sonnet-4-5"]
        plan = r.plan({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]})
        assert plan.route == "background" and [str(t) for t in plan.chain] == [
            "local,qwen2.5-coder:7b", "dbx,databricks-claude-haiku-4-5"]

    @pytest.mark.parametrize("text,needle", [
        ('[providers.a]\nkind = "nope"\nbase_url = "http://x"\n', "providers.a.kind"),
        ('[providers.a]\nkind = "ollama"\n[router]\ndefault = "b,m"\n', "router.default"),
        ('[providers.a]\nkind = "openai"\napi_key = "$NOT_SET_ANYWHERE"\n', "$NOT_SET_ANYWHERE"),
        ('[providers.a]\nkind = "ollama"\n[router]\ndefault = "a"\n', "router.default"),
        ('[providers.a]\nkind = "ollama"\n[router]\nthink = ",m"\n', "router.think"),
        ('[providers.a\nkind = "ollama"\n', "not valid TOML"),
        ('[providers.a]\nkind = "openai"\n', "providers.a.api_key"),
        ('[providers.a]\nkind = "openai-compatible"\n', "providers.a.base_url"),
        ('[providers.a]\nkind = "ollama"\n[settings]\nNO_SUCH = 1\n', "settings.NO_SUCH"),
        ('[providers.a]\nkind = "ollama"\n[router.fallback]\ndefault = ["zz,m"]\n', "router.fallback.default"),
    ])
    def test_bad_config_names_file_and_key(self, tmp_path, text, needle):
        lynkr = _lynkr()
        with pytest.raises(lynkr.ConfigError) as e:
            self.router(tmp_path, text)
        assert needle in str(e.value) and "lynkr.toml" in str(e.value), str(e.value)

    def test_route_order(self, tmp_path):
        r = self.router(tmp_path, '''
[providers.a]
kind = "ollama"
[providers.b]
kind = "openai-compatible"
base_url = "http://127.0.0.1:9/v1"
[router]
default = "a,dflt"
background = "b,bg"
think = "b,think"
long_context = "b,long"
long_context_threshold = 1000
web_search = "b,web"
''', {"MODEL_MAP": "mapped-*=b,mapped"})
        msgs = [{"role": "user", "content": "hi"}]
        cases = [
            ({"model": "a,explicit"}, "explicit", "a,explicit"),
            ({"model": "mapped-x"}, "map", "b,mapped"),
            ({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x" * 20000}]}, "long_context",
             "b,long"),
            ({"model": "claude-haiku-4-5", "thinking": {"type": "enabled", "budget_tokens": 2000}}, "background",
             "b,bg"),
            ({"model": "claude-opus-5-5", "tools": [{"type": "web_search_20250305", "name": "web_search"}],
              "thinking": {"type": "adaptive"}}, "web_search", "b,web"),
            ({"model": "claude-opus-5-5", "thinking": {"type": "adaptive"}}, "think", "b,think"),
            ({"model": "claude-opus-5-5", "thinking": {"type": "disabled"}}, "default", "a,dflt"),
        ]
        for req, route, first in cases:
            plan = r.plan({"messages": msgs, **req})
            assert (plan.route, str(plan.chain[0])) == (route, first), req


# -- which config file is read --


class TestConfigLocation:
    @pytest.mark.parametrize("how", ["--config", "LYNKR_CONFIG"])
    def test_named_file_beats_the_one_in_cwd(self, tmp_path, make_proxy, how):
        used, ignored, an = FakeOpenAI(), FakeOpenAI(), FakeAnthropic()
        try:
            pv_toml(tmp_path, pv_two_provider_toml(ignored, an))
            named = tmp_path / "named.toml"
            named.write_text(pv_two_provider_toml(used, an))
            extra, args = dict(PV_KEY_ENV), ("--port", "0")
            if how == "--config":
                args = (*args, "--config", str(named))
            else:
                extra["LYNKR_CONFIG"] = str(named)
            p = make_proxy(extra, args=args)
            assert p.post(base_req()).status == 200
            assert len(used.requests) == 1 and ignored.requests == []
        finally:
            for f in (used, ignored, an):
                f.close()

    @pytest.mark.parametrize("where", ["cwd", "--config", "LYNKR_CONFIG"])
    def test_two_providers_at_once(self, tmp_path, make_proxy, where):
        oa, an = FakeOpenAI(), FakeAnthropic()
        try:
            proj = tmp_path / "proj"
            proj.mkdir()
            extra, args = dict(PV_KEY_ENV), ["--port", "0"]
            cfg = proj / "lynkr.toml" if where == "cwd" else tmp_path / "elsewhere" / "my-lynkr.toml"
            cfg.parent.mkdir(exist_ok=True)
            cfg.write_text(pv_two_provider_toml(oa, an))
            if where == "cwd":
                trust_here(proj, "lynkr.toml")  # ./lynkr.toml is read once trusted (TestTrust)
            if where == "--config":
                args += ["--config", str(cfg)]
            elif where == "LYNKR_CONFIG":
                extra["LYNKR_CONFIG"] = str(cfg)
            p = make_proxy(extra, args=tuple(args), cwd=proj)
            r = p.post(base_req(model="claude-sonnet-4-5"))
            assert pv_text(pv_answer(r, False)) == oa.hello, pv_diag(r, oa, an, proxy=p)
            pv_headers(r, PV_OA, "gpt-4.1", "default")
            r = p.post(base_req(model=f"{PV_AN},claude-opus-4-1", stream=True))
            assert pv_text(pv_answer(r, True)) == an.hello, pv_diag(r, oa, an, proxy=p)
            pv_headers(r, PV_AN, "claude-opus-4-1", "explicit")
            assert len(oa.requests) == 1 and len(an.requests) == 1
            assert oa.last.headers["authorization"] == f"Bearer {OPENAI_KEY}" and an.last.headers["x-api-key"] == ANTH_KEY
            pv_no_leak(oa, an)
        finally:
            oa.close()
            an.close()


# -- files that arrive with a repository are read only once trusted --


class TestTrust:
    def test_untrusted_dotenv_and_toml_are_skipped_until_trusted(self, tmp_path, new_dbx, make_proxy):
        fake, evil = new_dbx(), new_dbx()
        # a cloned project's .env and lynkr.toml pointing lynkr (and its keys) somewhere else
        (tmp_path / ".env").write_text(f"DATABRICKS_API_BASE={evil.url}\nDATABRICKS_API_KEY={DBX_KEY}\n")
        (tmp_path / "lynkr.toml").write_text(
            f'[providers.x]\nkind = "openai-compatible"\nbase_url = "{evil.url}/v1"\napi_key = "$DATABRICKS_API_KEY"\n')
        p = make_proxy({"DATABRICKS_API_BASE": fake.url, "DATABRICKS_API_KEY": DBX_KEY})
        notices = [o.get("detail", "") for o in p.logs() if o.get("msg") == "notice"]
        assert any(".env" in n and "lynkr.py trust" in n for n in notices), notices
        assert any("lynkr.toml" in n and "lynkr.py trust" in n for n in notices), notices
        assert p.post(base_req()).status == 200
        assert len(fake.requests) == 1 and not evil.requests and p.info.get("config") is None
        p.stop()
        # trusted as they are: read
        trust_here(tmp_path)
        p = make_proxy({"DATABRICKS_API_BASE": None, "DATABRICKS_API_KEY": None})
        assert p.info.get("providers") == ["x"], p.info
        # changed after trusting: skipped again
        p.stop()
        (tmp_path / ".env").write_text(f"DATABRICKS_API_BASE={evil.url}\nDATABRICKS_API_KEY=changed\n")
        p = make_proxy({"DATABRICKS_API_BASE": fake.url, "DATABRICKS_API_KEY": DBX_KEY})
        notices = [o.get("detail", "") for o in p.logs() if o.get("msg") == "notice"]
        assert any(".env" in n and "trust" in n for n in notices), notices
        assert p.info.get("providers") == ["x"]  # lynkr.toml is unchanged: still trusted

    def test_explicit_files_count_as_trust(self, tmp_path, new_dbx, make_proxy):
        fake = new_dbx()
        env_file = tmp_path / "my.env"
        env_file.write_text(f"DATABRICKS_API_BASE={fake.url}\nDATABRICKS_API_KEY={DBX_KEY}\n")
        p = make_proxy(args=("--port", "0", "--env-file", str(env_file)))
        assert p.post(base_req()).status == 200 and len(fake.requests) == 1

    def test_trust_with_nothing_to_trust_exits_2(self, tmp_path):
        r = run_lynkr(tmp_path, args=("trust",))
        assert r.returncode == 2 and "nothing to trust" in r.stderr


# == 6. HTTP server ==


def raw_exchange(port: int, payload: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while data := s.recv(65536):
            out += data
        return out


class TestHTTPServer:
    def test_keep_alive_two_requests_one_socket(self, dbx):
        with socket.create_connection(("127.0.0.1", dbx.proxy.port), timeout=10) as s:
            f = s.makefile("rb")
            body = jbytes(base_req())
            req = (f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                   f"anthropic-version: 2023-06-01\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
            s.sendall(req)
            st1, h1, b1 = read_response(f)
            s.sendall(req)
            st2, h2, b2 = read_response(f)
        assert (st1, st2) == (200, 200), (b1, b2)
        assert h1["request-id"] != h2["request-id"]
        assert json.loads(b2)["type"] == "message"

    def test_pipelined_requests(self, dbx):
        one = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        with socket.create_connection(("127.0.0.1", dbx.proxy.port), timeout=10) as s:
            s.sendall(one + one + b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            f = s.makefile("rb")
            r1, r2 = read_response(f), read_response(f)
            line = f.readline()
        assert r1[0] == r2[0] == 200 and json.loads(r1[2])["status"] == "ok"
        assert line.startswith(b"HTTP/1.1 200")

    def test_slow_header_bytes(self, dbx):
        req = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow-client\r\nConnection: close\r\n\r\n"
        with socket.create_connection(("127.0.0.1", dbx.proxy.port), timeout=10) as s:
            for i in range(0, len(req), 3):
                s.sendall(req[i : i + 3])
                time.sleep(0.01)
            f = s.makefile("rb")
            status, _, body = read_response(f)
        assert status == 200 and json.loads(body)["status"] == "ok"

    def test_garbage_request_gets_400(self, dbx):
        out = raw_exchange(dbx.proxy.port, b"THIS IS NOT HTTP\r\n\r\n")
        assert re.match(rb"HTTP/1\.[01] 400 ", out), out[:200]

    def test_content_length_claim_over_32mib_is_413(self, dbx):
        head = (b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n" % (32 * 1024 * 1024 + 1))
        with socket.create_connection(("127.0.0.1", dbx.proxy.port), timeout=10) as s:
            s.sendall(head + b'{"model":')
            status, headers, body = read_response(s.makefile("rb"))
        assert status == 413, body
        assert json.loads(body)["error"]["type"] == "request_too_large"
        assert REQ_ID.match(headers.get("request-id", ""))

    def test_real_chunked_body_over_32mib_is_413(self, dbx):
        result: dict = {}
        with socket.create_connection(("127.0.0.1", dbx.proxy.port), timeout=20) as s:
            f = s.makefile("rb")

            def reader():
                try:
                    result["resp"] = read_response(f)
                except Exception as e:  # noqa: BLE001 - reported below
                    result["err"] = e

            t = threading.Thread(target=reader)
            t.start()
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                      b"transfer-encoding: chunked\r\n\r\n")
            piece = b"x" * (1024 * 1024)
            try:
                for _ in range(40):
                    if "resp" in result:
                        break
                    s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except OSError:
                pass
            t.join(15)
        assert "resp" in result, f"no response: {result.get('err')!r}"
        status, _, body = result["resp"]
        assert status == 413 and json.loads(body)["error"]["type"] == "request_too_large", body[:300]
        assert dbx.fake.requests == []

    def test_large_body_under_limit_ok(self, dbx):
        big = "lorem ipsum " * (2 * 1024 * 1024 // 12)
        r = dbx.proxy.post(base_req(messages=[user(big)]))
        assert r.status == 200, r.data[:500]
        assert dbx.fake.last.body["messages"][-1]["content"] == big

    def test_non_json_content_type_tolerated(self, dbx):
        r = dbx.proxy.post(jbytes(base_req()), headers={"content-type": "text/plain"})
        assert r.status == 200, r.data

    def test_head_routes(self, dbx):
        for path in ("/", "/api/hello"):
            r = dbx.proxy.call("HEAD", path)
            assert r.status == 200 and r.data == b"", (path, r.status)
            assert REQ_ID.match(r.headers.get("request-id", ""))

    def test_unknown_route_404(self, dbx):
        r = dbx.proxy.call("GET", "/v2/nothing-here")
        assert r.status == 404 and r.etype == "not_found_error"

    @pytest.mark.parametrize("method,path,allow", [("GET", "/v1/messages", "POST"), ("PUT", "/v1/messages", "POST"),
                                                   ("POST", "/health", "GET"), ("DELETE", "/v1/models", "GET"),
                                                   ("GET", "/v1/messages/count_tokens", "POST")])
    def test_wrong_method_405(self, dbx, method, path, allow):
        r = dbx.proxy.call(method, path, base_req() if method in ("PUT", "POST") else None)
        assert r.status == 405 and r.etype == "invalid_request_error", r.data
        assert allow in r.headers.get("allow", ""), r.headers

    def test_request_id_on_every_response_and_error_body(self, dbx):
        ids = set()
        for method, path, body in (("GET", "/health", None), ("POST", "/v1/messages", base_req()),
                                   ("GET", "/nope", None), ("POST", "/v1/messages", b"{bad"),
                                   ("GET", "/v1/models", None), ("POST", "/v1/messages/count_tokens", base_req())):
            r = dbx.proxy.call(method, path, body)
            rid = r.headers.get("request-id", "")
            assert REQ_ID.match(rid), (path, r.headers)
            ids.add(rid)
            if r.status >= 400:
                j = r.json()
                assert j["type"] == "error" and j["request_id"] == rid, j
        assert len(ids) == 6

    def test_query_string_ignored(self, dbx):
        r = dbx.proxy.post(base_req(), path="/v1/messages?beta=true&x=1")
        assert r.status == 200 and r.json()["type"] == "message"

    def test_50_concurrent_requests(self, dbx):
        n, delay = 50, 0.4
        dbx.fake.push(*[lambda rec: json_reply(oai_completion("slow"), hang=delay) for _ in range(n)])
        t0 = time.monotonic()
        with ThreadPoolExecutor(n) as ex:
            results = list(ex.map(lambda i: dbx.proxy.post(base_req(messages=[user(f"q{i}")])), range(n)))
        elapsed = time.monotonic() - t0
        assert [r.status for r in results] == [200] * n, [r.data[:200] for r in results if r.status != 200][:3]
        assert len({r.headers["request-id"] for r in results}) == n
        assert elapsed < n * delay / 4, f"{n} requests of {delay}s took {elapsed:.1f}s: not concurrent"
        assert sorted(dig(r.body, "messages.0.content") for r in dbx.fake.requests) == sorted(f"q{i}" for i in range(n))

    def test_many_idle_connections_do_not_block(self, dbx):
        socks = [socket.create_connection(("127.0.0.1", dbx.proxy.port), timeout=10) for _ in range(60)]
        try:
            socks[0].sendall(b"GET /h")  # one half-sent request too
            assert dbx.proxy.call("GET", "/health", timeout=5).status == 200
        finally:
            for s in socks:
                s.close()

    def test_sigterm_lets_inflight_stream_finish_then_exits_0(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake))
        data = oai_sse(oai_stream("one two three four five six seven eight", pieces=8))
        fake.push(stream_reply(data, gap=0.15))
        conn, resp = open_stream(p.port, base_req(stream=True))
        events = []
        it = iter_events(resp)
        for t, name, d in it:
            events.append((name, d))
            if name == "content_block_delta":
                break
        p.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(OSError):  # stopped accepting
            socket.create_connection(("127.0.0.1", p.port), timeout=2).close()
        events += [(name, d) for _, name, d in it]
        conn.close()
        s = assemble(events).ok()
        assert block_summary(s["content"]) == [("text", "one two three four five six seven eight")]
        assert p.proc.wait(10) == 0

    def test_sigterm_grace_deadline_cuts_long_streams(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake, SHUTDOWN_GRACE_MS=400))
        data = oai_sse(oai_stream("never finishes"))
        fake.push(stream_reply(data, pauses={3: 30}))
        conn, resp = open_stream(p.port, base_req(stream=True))
        it = iter_events(resp)
        next(e for e in it if e[1] == "content_block_delta")
        t0 = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(8) == 0
        assert time.monotonic() - t0 < 5
        conn.close()

    def test_client_disconnect_cancels_upstream(self, dbx):
        data = oai_sse(oai_stream("word " * 60, pieces=60))
        dbx.fake.push(stream_reply(data, gap=0.05))
        conn, resp = open_stream(dbx.proxy.port, base_req(stream=True))
        next(e for e in iter_events(resp) if e[1] == "content_block_delta")
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        wait_for(lambda: dbx.fake.broken, 3, "the proxy to drop the upstream stream after the client left")
        assert dbx.proxy.call("GET", "/health").status == 200

    def test_expect_100_continue(self, dbx):
        body = jbytes(base_req(messages=[user("x" * 2000)]))
        with socket.create_connection(("127.0.0.1", dbx.proxy.port), timeout=10) as s:
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                      b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(body))
            s.settimeout(0.8)  # curl waits 1 s for the 100 before sending anyway
            try:
                interim = s.recv(100)
            except TimeoutError:
                interim = b"(nothing within 0.8 s)"
            s.settimeout(10)
            assert interim.startswith(b"HTTP/1.1 100"), interim
            s.sendall(body)
            f = s.makefile("rb")
            if b"\r\n\r\n" not in interim:  # the interim response arrived in pieces: read its rest
                while f.readline() not in (b"\r\n", b""):
                    pass
            status, _, data = read_response(f)
        assert status == 200, data

    def test_chunked_request_body(self, dbx):
        body = jbytes(base_req(messages=[user("chunked upload")]))
        pieces = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in split_at(body, [5, 17, 40]))
        out = raw_exchange(dbx.proxy.port, b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                           + pieces + b"0\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200"), out[:300]
        assert dbx.fake.last.body["messages"][0]["content"] == "chunked upload"

    def test_http_1_0_client(self, dbx):
        out = raw_exchange(dbx.proxy.port, b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        head, _, body = out.partition(b"\r\n\r\n")
        assert re.match(rb"HTTP/1\.[01] 200", head) and json.loads(body)["status"] == "ok", out[:300]

    def test_sigint_idle_exits_0(self, make_proxy):
        p = make_proxy()
        assert p.stop(signal.SIGINT) == 0


# -- backpressure and slow clients --

MIB = 1024 * 1024


def rel_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/<pid>/status")


class TestBackpressure:
    def test_slow_reader_bounded_memory_and_throttled_upstream(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake))
        total = 200 * MIB
        one = b"".join(b"data: " + jbytes(oai_chunk({"content": "x" * 1000})) + b"\n\n" for _ in range(60))
        progress = {"sent": 0, "done": False}

        def pieces():
            yield b"data: " + jbytes(oai_chunk({"role": "assistant"})) + b"\n\n"
            while progress["sent"] < total:
                progress["sent"] += len(one)
                yield one
            progress["done"] = True
            yield oai_sse([oai_chunk({}, finish="stop")])

        fake.push(Reply(200, b"", (("content-type", "text/event-stream"),), pieces=pieces(), gap=0.0))
        assert p.call("GET", "/health").status == 200
        rss0 = rel_rss_kib(p.proc.pid)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.settimeout(10)
        s.connect(("127.0.0.1", p.port))
        try:
            body = jbytes(base_req(stream=True))
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                      b"anthropic-version: 2023-06-01\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            assert s.recv(4096).startswith(b"HTTP/1.1 200"), "no response head"
            # ... and the client reads nothing more.  The upstream must end up blocked in send().
            last, still_since, deadline = -1, time.monotonic(), time.monotonic() + 30
            while time.monotonic() < deadline:
                now = progress["sent"]
                if now != last:
                    last, still_since = now, time.monotonic()
                elif time.monotonic() - still_since > 1.5:
                    break
                time.sleep(0.1)
            sent = progress["sent"]
            rss1 = rel_rss_kib(p.proc.pid)
            assert not progress["done"] and time.monotonic() - still_since > 1.5, \
                f"the upstream was never throttled: {sent / MIB:.0f} MiB sent"
            assert sent < 64 * MIB, f"{sent / MIB:.0f} MiB left the upstream for a client that read ~4 KiB"
            assert (rss1 - rss0) / 1024 < 50, f"proxy RSS grew {(rss1 - rss0) / 1024:.0f} MiB for a stalled client"
        finally:
            s.close()
        wait_for(lambda: fake.broken, 10, "the proxy to drop the upstream after the client left")
        assert p.call("GET", "/health/ready").status == 200

    def test_slowloris_headers_time_out(self, rel_stack):
        p = rel_stack("dbx", LYNKR_HEADER_TIMEOUT_MS=4000).proxy
        socks = []
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            socks.append(s)
        t0 = time.monotonic()
        closed: dict[int, float] = {}
        try:
            while len(closed) < len(socks) and time.monotonic() - t0 < 20:
                for i, s in enumerate(socks):
                    if i in closed:
                        continue
                    try:
                        if select.select([s], [], [], 0)[0]:
                            data = s.recv(4096)
                            if not data or data.startswith(b"HTTP/1.1 4"):
                                closed[i] = time.monotonic() - t0
                                continue
                        s.sendall(b"a")  # one more byte of a header that never ends
                    except OSError:
                        closed[i] = time.monotonic() - t0
                if time.monotonic() - t0 < 1.5:  # meanwhile real clients are served
                    assert p.call("GET", "/health", timeout=5).status == 200
                time.sleep(1)
        finally:
            for s in socks:
                s.close()
        assert len(closed) == len(socks), f"{len(socks) - len(closed)} slowloris connections still open after 20 s"
        assert all(2.5 <= t <= 12 for t in closed.values()), sorted(closed.values())
        assert p.call("GET", "/health").status == 200


# -- header text --


class TestSmallerItems:
    def test_non_ascii_session_id_is_stored_and_fetched_back(self, dbx):
        sid = "sessão-Ωμέγα-会话"
        conn = http.client.HTTPConnection("127.0.0.1", dbx.proxy.port, timeout=10)
        try:
            headers = {**DEFAULT_HEADERS}
            body = jbytes(base_req(messages=[user("hello in unicode")]))
            conn.putrequest("POST", "/v1/messages")
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.putheader("x-session-id", sid.encode("utf-8"))
            conn.putheader("content-length", str(len(body)))
            conn.endheaders(body)
            assert conn.getresponse().status == 200
        finally:
            conn.close()
        session = session_of(dbx.proxy, sid)
        assert session["id"] == sid and session["turns"], session

    def test_unknown_charset_reads_as_utf8(self, agent, web_server):
        site = web_server()
        st = agent(WEB_SEARCH_ALLOWED_HOSTS="127.0.0.1")
        site.push(Reply(200, "<html><title>Olá</title><p>café</p></html>".encode(),
                        (("content-type", "text/html; charset=x-no-such-charset"),)))
        out = tool_ok(st.port, "web_fetch", {"url": f"{site.url}/p"})
        assert "Olá" in out and "café" in out, out


# == 7. Outbound client ==

# -- TLS, proxies, keep-alive pool --


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, Path]:
    """A throwaway CA and a server certificate for localhost / upstream.test / 127.0.0.1, via openssl."""
    if not shutil.which("openssl"):
        pytest.skip("openssl CLI not available")
    d = tmp_path_factory.mktemp("tls")
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,DNS:upstream.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Lynkr Test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                ["req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost"],
                ["x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf"]):
        subprocess.run(["openssl", *cmd], cwd=d, check=True, capture_output=True)
    return {"ca": d / "ca.pem", "cert": d / "srv.pem", "key": d / "srv.key"}


@pytest.fixture
def tls_dbx(tls_files):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_files["cert"], tls_files["key"])
    fake = FakeDatabricks(tls=ctx)
    yield fake
    fake.close()


class TestOutboundClient:
    def test_https_with_ssl_cert_file(self, tls_dbx, tls_files, make_proxy):
        p = make_proxy(dbx_env(tls_dbx, SSL_CERT_FILE=tls_files["ca"]))
        r = p.post(base_req())
        assert r.status == 200, r.data
        assert tls_dbx.last.headers["authorization"] == f"Bearer {DBX_KEY}"
        tls_dbx.push(stream_reply(oai_sse(oai_stream("over TLS"))))
        assert block_summary(p.post(base_req(stream=True)).stream().ok()["content"]) == [("text", "over TLS")]

    def test_https_untrusted_cert_is_5xx(self, tls_dbx, make_proxy):
        p = make_proxy(dbx_env(tls_dbx))
        r = p.post(base_req())
        assert 500 <= r.status < 600 and r.etype == "api_error", r.data
        assert tls_dbx.requests == []

    @pytest.mark.parametrize("var", ["HTTPS_PROXY", "https_proxy"])
    def test_https_proxy_connect(self, tls_dbx, tls_files, tunnel, make_proxy, var):
        t = tunnel()
        p = make_proxy({"DATABRICKS_API_BASE": f"https://upstream.test:{tls_dbx.port}", "DATABRICKS_API_KEY": DBX_KEY,
                        "SSL_CERT_FILE": tls_files["ca"], var: t.url})
        for stream in (False, True):
            r = p.post(base_req(stream=stream))
            assert r.status == 200, r.data
        assert t.seen and t.seen[0] == f"CONNECT upstream.test:{tls_dbx.port} HTTP/1.1", t.seen
        assert tls_dbx.last.headers["host"] in ("upstream.test", f"upstream.test:{tls_dbx.port}")

    def test_proxy_credentials(self, tls_dbx, tls_files, tunnel, make_proxy):
        t = tunnel()
        p = make_proxy({"DATABRICKS_API_BASE": f"https://upstream.test:{tls_dbx.port}", "DATABRICKS_API_KEY": DBX_KEY,
                        "SSL_CERT_FILE": tls_files["ca"], "HTTPS_PROXY": f"http://corp%5Cuser:p%40ss@127.0.0.1:{t.port}"})
        assert p.post(base_req()).status == 200
        creds = base64.b64encode(b"corp\\user:p@ss").decode().lower()
        assert f"proxy-authorization: basic {creds}" in t.heads[0], t.heads
        assert "p%40ss" not in p.stderr and "p@ss" not in p.stderr

    def test_loopback_bypasses_proxy(self, dbx_stack, tunnel, make_proxy):
        fake, t = dbx_stack.fake, tunnel(refuse=True)
        fake.reset()
        p = make_proxy(dbx_env(fake, HTTPS_PROXY=t.url, HTTP_PROXY=t.url, https_proxy=t.url, http_proxy=t.url))
        assert p.post(base_req()).status == 200
        assert t.seen == [] and len(fake.requests) == 1

    @pytest.fixture
    def remote_dbx(self, new_dbx):
        ip = non_loopback_ip()
        if not ip:
            pytest.skip("no non-loopback interface to stand in for a remote upstream")
        return new_dbx(host=ip)

    def test_http_proxy_absolute_form(self, remote_dbx, tunnel, make_proxy):
        t = tunnel()
        p = make_proxy(dbx_env(remote_dbx, HTTP_PROXY=t.url))
        assert p.post(base_req()).status == 200
        assert t.seen and t.seen[0].startswith(f"POST {remote_dbx.url}/serving-endpoints/"), t.seen

    @pytest.mark.parametrize("no_proxy", ["{ip}", "*", "example.com, {ip}", "lower:{ip}"])
    def test_no_proxy_bypass(self, remote_dbx, tunnel, make_proxy, no_proxy):
        t = tunnel(refuse=True)
        var = "no_proxy" if no_proxy.startswith("lower:") else "NO_PROXY"
        value = no_proxy.removeprefix("lower:").format(ip=remote_dbx.host)
        p = make_proxy(dbx_env(remote_dbx, HTTP_PROXY=t.url, HTTPS_PROXY=t.url, **{var: value}))
        r = p.post(base_req())
        assert r.status == 200, r.data
        assert t.seen == [] and len(remote_dbx.requests) == 1

    def test_upstream_keep_alive_pool(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake))
        for stream in (False, True, False):
            r = p.post(base_req(stream=stream))
            assert r.status == 200
            if stream:
                r.stream().ok()
            time.sleep(0.1)  # let the connection go back to the pool
        peers = [rec.peer for rec in fake.requests]
        assert len(set(peers)) == 1, f"each request used a new upstream connection: {peers}"

    def test_chunked_framing_split_anywhere_then_connection_reused(self, tmp_path, make_proxy):
        # A raw upstream: chunk sizes in upper and lower case hex, a chunk extension, a trailer, and every
        # byte of the framing sent on its own; then a second request must reuse the same connection.
        sse = oai_sse(oai_stream("chunked framing survives", pieces=3))
        parts = [sse[:7], sse[7:40], sse[40:]]
        body = b"".join(b"%X;ext=1\r\n%s\r\n" % (len(x), x) if i % 2 else b"%x\r\n%s\r\n" % (len(x), x)
                        for i, x in enumerate(parts)) + b"0\r\nX-Trailer: yes\r\n\r\n"
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        srv = socket.create_server(("127.0.0.1", 0))
        accepted: list[tuple] = []

        def serve() -> None:
            conn, peer = srv.accept()
            accepted.append(peer)
            with conn:
                for _ in range(2):
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    length = int(re.search(rb"(?i)content-length: (\d+)", data).group(1))
                    rest = data.split(b"\r\n\r\n", 1)[1]
                    while len(rest) < length:
                        rest += conn.recv(65536)
                    conn.sendall(head)
                    for i in range(len(body)):
                        conn.sendall(body[i : i + 1])
                        time.sleep(0.0005 if i % 50 == 0 else 0)

        threading.Thread(target=serve, daemon=True).start()
        port = srv.getsockname()[1]
        p = make_proxy({"DATABRICKS_API_BASE": f"http://127.0.0.1:{port}", "DATABRICKS_API_KEY": DBX_KEY})
        try:
            for _ in range(2):
                s = p.post(base_req(stream=True)).stream().ok()
                assert block_summary(s["content"]) == [("text", "chunked framing survives")]
                time.sleep(0.1)  # back to the pool
            assert len(accepted) == 1, accepted  # the second request came over the same connection
        finally:
            srv.close()

    @pytest.mark.parametrize("variant", ["exact", "bytes-past-the-length", "connection-close", "http-1.0"])
    def test_sized_body_split_anywhere_then_connection_reused(self, make_proxy, variant):
        # A Content-Length answer sent a byte at a time is read whole; the connection goes back to the
        # pool, unless the server wrote more than it announced, said `Connection: close`, or spoke
        # HTTP/1.0 (then the next request gets a new connection).
        body = json.dumps(oai_completion("sized body survives")).encode()
        status = b"HTTP/1.0 200 OK" if variant == "http-1.0" else b"HTTP/1.1 200 OK"
        close = b"connection: close\r\n" if variant == "connection-close" else b""
        head = status + b"\r\ncontent-type: application/json\r\n" + close + b"content-length: %d\r\n\r\n" % len(body)
        extra = b"JUNK" if variant == "bytes-past-the-length" else b""
        reusable = variant == "exact"
        srv = socket.create_server(("127.0.0.1", 0))
        accepted: list[tuple] = []

        def serve() -> None:
            while len(accepted) < 2:
                try:
                    conn, peer = srv.accept()
                except OSError:
                    return
                accepted.append(peer)
                with conn:
                    try:
                        for _ in range(2 if reusable or variant == "bytes-past-the-length" else 1):
                            data = b""
                            while b"\r\n\r\n" not in data:
                                chunk = conn.recv(65536)
                                if not chunk:
                                    raise ConnectionError
                                data += chunk
                            length = int(re.search(rb"(?i)content-length: (\d+)", data).group(1))
                            rest = data.split(b"\r\n\r\n", 1)[1]
                            while len(rest) < length:
                                rest += conn.recv(65536)
                            reply = head + body + extra
                            for i in range(len(reply)):
                                conn.sendall(reply[i : i + 1])
                                time.sleep(0.0005 if i % 40 == 0 else 0)
                    except (ConnectionError, OSError):
                        pass

        threading.Thread(target=serve, daemon=True).start()
        p = make_proxy({"DATABRICKS_API_BASE": f"http://127.0.0.1:{srv.getsockname()[1]}", "DATABRICKS_API_KEY": DBX_KEY})
        try:
            for _ in range(2):
                r = p.post(base_req())
                assert r.status == 200 and r.json()["content"] == [{"type": "text", "text": "sized body survives"}], r.data
                time.sleep(0.1)  # back to the pool
            assert len(accepted) == (1 if reusable else 2), accepted
        finally:
            srv.close()

    @pytest.mark.parametrize("size_line", [b"+1f", b"1_0", b"-5", b"zz", b"", b"0x10", b"1 2"])
    def test_malformed_chunk_size_is_an_upstream_error(self, make_proxy, size_line):
        # Only hex digits (with optional whitespace and extensions) make a chunk size; Python's int()
        # would also take a sign, underscores or a 0x prefix.
        sse = oai_sse(oai_stream("never delivered", pieces=2))
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        srv = socket.create_server(("127.0.0.1", 0))

        def serve() -> None:
            conn, _peer = srv.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                conn.sendall(head + size_line + b"\r\n" + sse + b"\r\n0\r\n\r\n")
                time.sleep(1)

        threading.Thread(target=serve, daemon=True).start()
        p = make_proxy({"DATABRICKS_API_BASE": f"http://127.0.0.1:{srv.getsockname()[1]}", "DATABRICKS_API_KEY": DBX_KEY})
        try:
            s = p.post(base_req(stream=True)).stream()
            assert s.error is not None and not s.complete, s.events
            assert "chunk" in json.dumps(s.error), s.error
        finally:
            srv.close()

    def test_pool_recovers_from_upstream_closing_idle_connection(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake))
        fake.push(json_reply(oai_completion("first"), close=True))
        assert p.post(base_req()).status == 200
        time.sleep(0.2)
        r = p.post(base_req())
        assert r.status == 200 and r.json()["content"][0]["text"] == "Hello from fake Databricks"


# == 8. Translation ==

# -- Anthropic request -> Databricks OpenAI chat (checked by the strict fake) --

OAI_GET_WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                    "parameters": WEATHER_SCHEMA}}

SYS = "You are terse."
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}
ROUND_TRIP = [user("weather in Paris?"), assistant([text("Checking."), tool_use("toolu_01", "get_weather", {"city": "Paris"})])]
TWO_CALLS = [user("weather in Paris and Rome?"),
             assistant([tool_use("toolu_01", "get_weather", {"city": "Paris"}),
                        tool_use("toolu_02", "get_weather", {"city": "Rome"})])]


def roles(ms: list[dict]) -> list[str]:
    return [m["role"] for m in ms]


def calls(ms: Any) -> list[tuple]:
    return [(c["id"], c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in ms]


def user_parts_after_tools(ms: list[dict]) -> list[dict]:
    """All content parts of the user messages that follow the last tool message."""
    last_tool = max(i for i, m in enumerate(ms) if m["role"] == "tool")
    out = []
    for m in ms[last_tool + 1 :]:
        assert m["role"] == "user", ms
        out += [text(m["content"])] if isinstance(m["content"], str) else m["content"]
    return out


REQUEST_CASES = [
    ("no-system-string-content", {}, {"messages": [{"role": "user", "content": "hi"}]}),
    ("system-string", {"system": SYS},
     {"messages.0.role": "system", "messages.0": lambda m: texts(m) == [SYS], "messages.1": user("hi")}),
    ("system-blocks-keep-cache-control", {"system": [text("A"), text("B", cache_control={"type": "ephemeral", "ttl": "1h"})]},
     {"messages.0": {"role": "system", "content": [text("A"), text("B", cache_control={"type": "ephemeral", "ttl": "1h"})]}}),
    ("billing-header-dropped",
     {"system": [text("x-anthropic-billing-header: cc_version=2.1.329.abc; cc_entrypoint=sdk-cli;"),
                 text("Identity", cache_control=EPH), text("Main prompt", cache_control=EPH)]},
     {"messages.0": {"role": "system", "content": [text("Identity", cache_control=EPH), text("Main prompt", cache_control=EPH)]}}),
    # mid-conversation context goes into the user turn beside it, the system prompt stays as sent
    ("system-role-entries-folded",
     {"system": SYS, "messages": [{"role": "system", "content": "ctx A"}, user("hi"), assistant("yo"),
                                  {"role": "system", "content": [text("ctx B")], "output_config": {"effort": "high"}},
                                  user("again")]},
     {"messages": lambda ms: roles(ms) == ["system", "user", "assistant", "user"],
      "messages.0": lambda m: texts(m) == [SYS], "messages.1.content": [text("ctx A"), text("hi")],
      "messages.3.content": [text("ctx B"), text("again")]}),
    ("system-role-only-no-top-level-system", {"messages": [{"role": "system", "content": "ctx"}, user("hi")]},
     {"messages": [user([text("ctx"), text("hi")])]}),
    ("system-role-after-tool-result-follows-it",
     {"tools": [GET_WEATHER], "messages": [*ROUND_TRIP, user([tool_result("toolu_01", "18C")]),
                                          {"role": "system", "content": [text("ctx", cache_control=EPH)]}]},
     {"messages": lambda ms: roles(ms) == ["user", "assistant", "tool", "user"],
      "messages.3.content": [text("ctx", cache_control=EPH)]}),
    ("system-role-empty-list", {"messages": [{"role": "system", "content": []}, user("hi")]},
     {"messages": [user("hi")]}),
    ("empty-text-dropped", {"messages": [user([text(""), text("real")])]}, {"messages": [user([text("real")])]}),
    ("message-left-empty-dropped", {"messages": [user("hi"), assistant([text("")]), user("more")]},
     {"messages": lambda ms: "assistant" not in roles(ms) and "more" in json.dumps(ms)}),
    ("user-text-cache-control-kept", {"messages": [user([text("a"), text("b", cache_control=EPH)])]},
     {"messages.0.content": [text("a"), text("b", cache_control=EPH)]}),
    ("image-base64", {"messages": [user([text("what is this"), image_b64()])]},
     {"messages.0.content": [text("what is this"),
                             {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}]}),
    ("image-url", {"messages": [user([{"type": "image", "source": {"type": "url", "url": "https://example.com/c.png"}},
                                      text("and this?")])]},
     {"messages.0.content.0": {"type": "image_url", "image_url": {"url": "https://example.com/c.png"}}}),
    ("tool-round-trip", {"tools": [GET_WEATHER], "messages": [*ROUND_TRIP, user([tool_result("toolu_01", "18C")])]},
     {"messages": lambda ms: roles(ms) == ["user", "assistant", "tool"],
      "messages.1.content": "Checking.",
      "messages.1.tool_calls": lambda c: calls(c) == [("toolu_01", "function", "get_weather", {"city": "Paris"})],
      "messages.2": {"role": "tool", "tool_call_id": "toolu_01", "content": "18C"}}),
    ("tool-result-is-error", {"tools": [GET_WEATHER],
                              "messages": [*ROUND_TRIP, user([tool_result("toolu_01", "city unknown", is_error=True)])]},
     {"messages.2.content": "[tool error] city unknown"}),
    ("tool-result-cache-control", {"tools": [GET_WEATHER],
                                   "messages": [*ROUND_TRIP, user([tool_result("toolu_01", "18C", cache_control=EPH)])]},
     {"messages.2": {"role": "tool", "tool_call_id": "toolu_01", "content": "18C"}}),
    ("several-results-in-order", {"tools": [GET_WEATHER],
                                  "messages": [*TWO_CALLS, user([tool_result("toolu_01", "18C"), tool_result("toolu_02", "25C")])]},
     {"messages": lambda ms: roles(ms) == ["user", "assistant", "tool", "tool"],
      "messages.1.content": None,
      "messages.1.tool_calls": lambda c: [x[0] for x in calls(c)] == ["toolu_01", "toolu_02"],
      "messages.2": {"role": "tool", "tool_call_id": "toolu_01", "content": "18C"},
      "messages.3": {"role": "tool", "tool_call_id": "toolu_02", "content": "25C"}}),
    ("results-then-user-text", {"tools": [GET_WEATHER],
                                "messages": [*TWO_CALLS, user([tool_result("toolu_01", "18C"), tool_result("toolu_02", "25C"),
                                                               text("now compare them")])]},
     {"messages": lambda ms: roles(ms)[:4] == ["user", "assistant", "tool", "tool"]
      and [p.get("text") for p in user_parts_after_tools(ms)] == ["now compare them"]}),
    ("tool-result-list-content", {"tools": [GET_WEATHER],
                                  "messages": [*ROUND_TRIP, user([tool_result("toolu_01", [text("line one"), text("line two")])])]},
     {"messages.2.content": lambda c: isinstance(c, str) and "line one" in c and c.index("line one") < c.index("line two")}),
    ("tool-result-image-moves-to-user", {"tools": [GET_WEATHER],
                                         "messages": [*ROUND_TRIP, user([tool_result("toolu_01", [text("see chart"), image_b64()]),
                                                                         text("what does it show?")])]},
     {"messages.2": lambda m: m["role"] == "tool" and "see chart" in m["content"],
      "messages": lambda ms: [p["type"] for p in user_parts_after_tools(ms)] == ["image_url", "text"]
      and user_parts_after_tools(ms)[0]["image_url"]["url"] == f"data:image/png;base64,{PNG_B64}"}),
    # lynkr never saw this provider sign "sig1": Claude behind it would reject it (issue 16)
    ("thinking-not-signed-here-left-out", {"messages": [user("q"), assistant([{"type": "thinking", "thinking": "hmm",
                                                                               "signature": "sig1"}, text("Answer")]),
                                                        user("more")]},
     {"messages.1.content": "Answer"}),
    ("redacted-thinking-dropped", {"messages": [user("q"), assistant([REDACTED, text("Answer")]), user("more")]},
     {"messages.1": lambda m: "redacted" not in json.dumps(m) and texts(m) == ["Answer"]}),
    ("tools-cleaned", {"tools": [{"name": "Bash", "description": "Run", "input_schema": BASH_SCHEMA, "cache_control": EPH,
                                  "strict": True},
                                 {"name": "Deferred", "description": "d", "input_schema": {"type": "object", "properties": {}},
                                  "defer_loading": True}]},
     {"tools": [{"type": "function", "function": {"name": "Bash", "description": "Run", "parameters":
                                                  {k: v for k, v in BASH_SCHEMA.items() if k != "$schema"}}},
                {"type": "function", "function": {"name": "Deferred", "description": "d",
                                                  "parameters": {"type": "object", "properties": {}}}}]}),
    ("tools-openai-form-accepted", {"tools": [OAI_GET_WEATHER]}, {"tools": [OAI_GET_WEATHER]}),
    # Databricks cannot run Anthropic's web search: lynkr runs it, offering the model a function (issue 16)
    ("server-web-search-run-by-lynkr", {"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
                                                  GET_WEATHER]},
     {"tools": lambda ts: ts[0] == OAI_GET_WEATHER and ts[1]["function"]["name"] == "web_search" and len(ts) == 2}),
    ("stop-sequences", {"stop_sequences": ["END", "STOP"]}, {"stop": ["END", "STOP"]}),
    ("sampling", {"temperature": 0.3, "top_p": 0.9, "top_k": 40}, {"temperature": 0.3, "top_p": 0.9, "top_k": 40}),
    ("max-tokens-copied", {"max_tokens": 777}, {"max_tokens": 777}),
    ("thinking-enabled-display-stripped", {"max_tokens": 8000, "thinking": {"type": "enabled", "budget_tokens": 2048,
                                                                             "display": "summarized"}},
     {"thinking": {"type": "enabled", "budget_tokens": 2048}}),
    ("thinking-adaptive", {"max_tokens": 8000, "thinking": {"type": "adaptive"}},
     {"thinking": {"type": "enabled", "budget_tokens": 4000}}),
    ("thinking-adaptive-capped", {"max_tokens": 128000, "thinking": {"type": "adaptive", "display": "omitted"}},
     {"thinking": {"type": "enabled", "budget_tokens": 31999}}),
    ("thinking-adaptive-too-small", {"max_tokens": 1500, "thinking": {"type": "adaptive"}}, {"thinking": MISSING}),
    ("thinking-disabled", {"thinking": {"type": "disabled"}}, {"thinking": MISSING}),
    ("thinking-budget-clamped", {"max_tokens": 5000, "thinking": {"type": "enabled", "budget_tokens": 10000}},
     {"thinking": lambda t: t["type"] == "enabled" and 1024 <= t["budget_tokens"] < 5000}),
    ("thinking-impossible-dropped", {"max_tokens": 1024, "thinking": {"type": "enabled", "budget_tokens": 1024}},
     {"thinking": MISSING}),
    ("thinking-dropped-when-tool-forced", {"max_tokens": 8000, "thinking": {"type": "enabled", "budget_tokens": 2048},
                                           "tools": [GET_WEATHER], "tool_choice": {"type": "any"}},
     {"thinking": MISSING, "tool_choice": "required"}),
    ("anthropic-only-fields-dropped", {"metadata": {"user_id": "u1"}, "context_management": {"edits": []},
                                       "output_config": {"effort": "high"}, "service_tier": "auto",
                                       "cache_control": EPH, "container": "c", "mcp_servers": []},
     {k: MISSING for k in ("metadata", "context_management", "output_config", "service_tier", "cache_control",
                           "container", "mcp_servers", "model")}),
    ("stream-false", {"stream": False}, {"stream": lambda v: v in (MISSING, False)}),
]
TOOL_CHOICES = [
    ({"type": "auto"}, {"tool_choice": "auto"}),
    ({"type": "any"}, {"tool_choice": "required"}),
    ({"type": "none"}, {"tool_choice": "none"}),
    ({"type": "tool", "name": "get_weather"}, {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    ({"type": "auto", "disable_parallel_tool_use": True}, {"tool_choice": "auto", "parallel_tool_calls": False}),
    ({"type": "any", "disable_parallel_tool_use": True}, {"tool_choice": "required", "parallel_tool_calls": False}),
    ({"type": "auto", "disable_parallel_tool_use": False}, {"tool_choice": "auto",
                                                            "parallel_tool_calls": lambda v: v in (MISSING, True)}),
    ("auto", {"tool_choice": "auto"}),
    ("required", {"tool_choice": "required"}),
    ("none", {"tool_choice": "none"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
]


class TestTranslationRequest:
    @pytest.mark.parametrize("patch,expect", [c[1:] for c in REQUEST_CASES], ids=[c[0] for c in REQUEST_CASES])
    def test_request_case(self, dbx, patch, expect):
        r = dbx.proxy.post(base_req(**copy.deepcopy(patch)))
        assert r.status == 200, f"{r.status} {r.data[:2000]!r}"  # a 400 here is the strict fake's verdict
        sent = dbx.fake.last.body
        assert "model" not in sent
        check_expectations(sent, expect)

    @pytest.mark.parametrize("choice,expect", TOOL_CHOICES, ids=[json.dumps(c[0]) for c in TOOL_CHOICES])
    def test_tool_choice(self, dbx, choice, expect):
        r = dbx.proxy.post(base_req(tools=[GET_WEATHER], tool_choice=choice))
        assert r.status == 200, r.data[:2000]
        check_expectations(dbx.fake.last.body, expect)

    def test_repeated_tool_lists_reach_the_upstream_exactly(self, dbx):
        # lynkr reuses the encoding of a tool list it has seen; a list that differs anywhere (here only
        # in the last tool's description, same count, same first tool) must be sent as it is now.
        def tools(note: str) -> list[dict]:
            out = [{**GET_WEATHER, "name": f"tool_{i}", "description": f"tool number {i}"} for i in range(6)]
            out[-1] = {**out[-1], "description": note, "input_schema": {**WEATHER_SCHEMA, "description": note}}
            return out

        sent = []
        for note in ("first version", "first version", "second versión ✓", "first version"):
            r = dbx.proxy.post(base_req(tools=tools(note)))
            assert r.status == 200, r.data[:500]
            sent.append(dbx.fake.last.body["tools"])
        want = [[{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                   "parameters": t["input_schema"]}} for t in tools(note)]
                for note in ("first version", "first version", "second versión ✓", "first version")]
        assert sent == want
        # Lists equal for Python (True == 1 == 1.0) but not for JSON stay apart.
        for flag in (1, True, 1.0, 1):
            listed = tools("flags")
            listed[2] = {**listed[2], "input_schema": {**WEATHER_SCHEMA, "default": flag}}
            assert dbx.proxy.post(base_req(tools=listed)).status == 200
            sent_flag = dbx.fake.last.body["tools"][2]["function"]["parameters"]["default"]
            assert sent_flag == flag and type(sent_flag) is type(flag), (flag, sent_flag)

    def test_claude_code_shaped_request(self, dbx):
        body = cc_body(stream=True)
        r = dbx.proxy.post(body, path="/v1/messages?beta=true", headers=CC_HEADERS)
        s = r.stream().ok()
        sent = dbx.fake.last
        assert sent.path == "/serving-endpoints/databricks-claude-sonnet-4-5/invocations"  # MODEL_DEFAULT
        assert sent.headers["authorization"] == f"Bearer {DBX_KEY}"
        b = sent.body
        assert b["stream"] is True and "stream_options" not in b
        assert roles(b["messages"]) == ["system", "user"]
        sys_parts = b["messages"][0]["content"]
        assert [p["text"] for p in sys_parts] == [body["system"][1]["text"], body["system"][2]["text"]]
        assert [p.get("cache_control") for p in sys_parts] == [EPH, EPH]
        # the environment context (a role:system entry) leads the user turn, not the system prompt
        assert b["messages"][1]["content"] == body["messages"][0]["content"] + body["messages"][1]["content"]
        assert [t["function"]["name"] for t in b["tools"]] == ["Bash", "DeferredToolPlaceholder"]
        # lynkr may cap max_tokens at the target's published output limit (databricks-claude-sonnet-4-5: 64000)
        assert 32000 <= b["max_tokens"] <= 128000
        assert b["thinking"] == {"type": "enabled", "budget_tokens": min(b["max_tokens"] // 2, 31999)}
        assert s["model"] == "claude-opus-5-5"
        assert block_summary(s["content"]) == [("text", "Hello from fake Databricks")]

    def test_claude_code_follow_up_turn(self, dbx):
        """Turn 2 of a Bash round trip as Claude Code sends it: thinking echoed back, tool_result with
        cache_control as the last block."""
        # turn 1: the provider thinks (signing it) and calls Bash, through lynkr
        dbx.fake.push(json_reply({"id": "chatcmpl-1", "object": "chat.completion", "model": "m", "choices": [{
            "index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": [
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "I should run ls.",
                                                   "signature": "EqQBsig"}]},
                {"type": "text", "text": "Running it."}],
                "tool_calls": [{"id": "toolu_01AbC", "type": "function",
                                "function": {"name": "Bash", "arguments": '{"command":"ls","description":"List"}'}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}}))
        first = dbx.proxy.post(cc_body(stream=False), path="/v1/messages?beta=true", headers=CC_HEADERS).json()
        assert first["content"][0] == {"type": "thinking", "thinking": "I should run ls.", "signature": "EqQBsig"}
        msgs = cc_body()["messages"] + [
            assistant(first["content"]),
            user([tool_result("toolu_01AbC", "a.txt\nb.txt", is_error=False, cache_control=EPH)])]
        r = dbx.proxy.post(cc_body(messages=msgs), path="/v1/messages?beta=true", headers=CC_HEADERS)
        r.stream().ok()
        b = dbx.fake.last.body
        assert roles(b["messages"]) == ["system", "user", "assistant", "tool"]
        a = b["messages"][2]
        assert a["content"][0] == {"type": "reasoning", "summary": [{"type": "summary_text", "text": "I should run ls.",
                                                                     "signature": "EqQBsig"}]}
        assert calls(a["tool_calls"]) == [("toolu_01AbC", "function", "Bash", {"command": "ls", "description": "List"})]
        assert b["messages"][3] == {"role": "tool", "tool_call_id": "toolu_01AbC", "content": "a.txt\nb.txt"}

    def test_model_mapping(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake, MODEL_MAP="claude-*haiku*=dbx-haiku, claude-*=dbx-sonnet", MODEL_DEFAULT="dbx-fallback"))
        for model, endpoint in (("claude-3-5-HAIKU-20241022", "dbx-haiku"), ("claude-haiku-4-5", "dbx-haiku"),
                                ("claude-opus-5-5", "dbx-sonnet"), ("gpt-4o", "dbx-fallback"), ("my-proxy-model", "dbx-fallback")):
            r = p.post(base_req(model=model))
            assert r.status == 200, r.data
            assert fake.endpoint(fake.last) == endpoint, model
            assert r.json()["model"] == model  # the client sees the name it asked for

    def test_endpoint_path_pins_everything(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake, DATABRICKS_ENDPOINT_PATH="/serving-endpoints/pinned-ep/invocations",
                               MODEL_MAP="claude-*=dbx-sonnet"))
        for model in ("claude-opus-5-5", "gpt-4o"):
            assert p.post(base_req(model=model)).status == 200
            assert fake.last.path == "/serving-endpoints/pinned-ep/invocations"

    def test_max_tokens_clamp(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake, MODEL_MAX_TOKENS="claude-*haiku*=8192,*=20000"))
        for model, asked, sent in (("claude-haiku-4-5", 32000, 8192), ("claude-opus-5-5", 128000, 20000),
                                   ("claude-opus-5-5", 100, 100)):
            assert p.post(base_req(model=model, max_tokens=asked)).status == 200
            assert fake.last.body["max_tokens"] == sent, (model, asked)
        assert p.post(cc_body(stream=False)).status == 200  # thinking budget follows the clamp
        assert fake.last.body["max_tokens"] == 20000
        assert fake.last.body["thinking"] == {"type": "enabled", "budget_tokens": 10000}


# -- Databricks OpenAI chat response -> Anthropic message --

REASONING_CONTENT = [{"type": "reasoning", "summary": [{"type": "summary_text", "text": "Think about optics.",
                                                        "signature": "EqQBsig"}]},
                     {"type": "text", "text": "Rayleigh scattering."}]
RESPONSE_CASES = [
    ("text-stop", oai_completion("Hello there"), {},
     {"content": [text("Hello there")], "stop_reason": "end_turn", "stop_sequence": None}),
    ("length", oai_completion("Truncat", finish="length"), {}, {"stop_reason": "max_tokens"}),
    ("content-filter", oai_completion("I can't", finish="content_filter"), {}, {"stop_reason": "refusal"}),
    ("tool-calls", oai_completion("Let me check.", tool_calls=[("call_1", "get_weather", {"city": "Paris"}),
                                                                ("call_2", "get_weather", {"city": "Rome"})],
                                  finish="tool_calls"), {},
     {"content": [text("Let me check."), tool_use("call_1", "get_weather", {"city": "Paris"}),
                  tool_use("call_2", "get_weather", {"city": "Rome"})], "stop_reason": "tool_use"}),
    ("function-call-finish", oai_completion(None, tool_calls=[("call_1", "get_weather", {"city": "Oslo"})],
                                            finish="function_call"), {},
     {"content": [tool_use("call_1", "get_weather", {"city": "Oslo"})], "stop_reason": "tool_use"}),
    ("null-content-no-text-block", oai_completion(None, tool_calls=[("call_1", "get_weather", {})], finish="tool_calls"),
     {}, {"content": [tool_use("call_1", "get_weather", {})]}),
    ("empty-content-no-text-block", oai_completion("", finish="stop"), {}, {"content": []}),
    ("bad-arguments-become-empty-input", oai_completion(None, tool_calls=[("call_1", "get_weather", '{"city": "Par')],
                                                        finish="tool_calls"), {},
     {"content": [tool_use("call_1", "get_weather", {})]}),
    ("stop-sequence-detected", oai_completion("The answer is 42 END"), {"stop_sequences": ["STOP", "END"]},
     {"stop_reason": "stop_sequence", "stop_sequence": "END"}),
    ("stop-without-sequence", oai_completion("The answer is 42."), {"stop_sequences": ["END"]},
     {"stop_reason": "end_turn", "stop_sequence": None}),
    ("reasoning-list", oai_completion(content=REASONING_CONTENT), {},
     {"content": [{"type": "thinking", "thinking": "Think about optics.", "signature": "EqQBsig"},
                  text("Rayleigh scattering.")]}),
    ("reasoning-content-field", oai_completion("Blue.", reasoning_content="Sky colour question."), {},
     {"content": lambda c: [b["type"] for b in c] == ["thinking", "text"] and c[0]["thinking"] == "Sky colour question."
      and c[1]["text"] == "Blue."}),
    ("usage-with-cache", oai_completion("x", usage={"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107,
                                                    "prompt_tokens_details": {"cached_tokens": 60}}), {},
     {"usage.input_tokens": 40, "usage.cache_read_input_tokens": 60, "usage.output_tokens": 7}),
    ("usage-plain", oai_completion("x", usage={"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}), {},
     {"usage.input_tokens": 12, "usage.output_tokens": 5}),
]


class TestTranslationResponse:
    @pytest.mark.parametrize("completion,patch,expect", [c[1:] for c in RESPONSE_CASES], ids=[c[0] for c in RESPONSE_CASES])
    def test_response_case(self, dbx, completion, patch, expect):
        dbx.fake.push(json_reply(completion))
        r = dbx.proxy.post(base_req(model="claude-test-model", tools=[GET_WEATHER], **patch))
        assert r.status == 200, r.data
        m = r.json()
        assert m["id"].startswith("msg_") and m["type"] == "message" and m["role"] == "assistant"
        assert m["model"] == "claude-test-model"
        assert "stop_sequence" in m and isinstance(m["usage"], dict)
        check_expectations(m, expect)

    @pytest.mark.parametrize("finish,stop", [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
                                             ("function_call", "tool_use"), ("content_filter", "refusal")])
    def test_streamed_finish_reason(self, dbx, finish, stop):
        tools = [("call_9", "get_weather", {"city": "Lima"})] if "call" in finish else ()
        dbx.fake.push(stream_reply(oai_sse(oai_stream("ok", tools=tools, finish=finish))))
        s = dbx.proxy.post(base_req(stream=True, tools=[GET_WEATHER])).stream().ok()
        assert s["stop_reason"] == stop


# -- dialects (in-process) --


class TestDialects:
    def test_gemini_schema_cleaning_keeps_property_names(self):
        lynkr = _lynkr()
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                  "additionalProperties": False,
                  "properties": {"format": {"type": "string", "format": "uri", "pattern": "^\\p{L}+$"},
                                 "when": {"type": "string", "format": "date-time"},
                                 "items": {"type": "array", "uniqueItems": True,
                                           "items": {"anyOf": [{"type": "string", "deprecated": True},
                                                               {"type": "object", "propertyNames": {}}]}}},
                  "required": ["format"]}
        out = lynkr.clean_schema(schema, "gemini")
        assert json.dumps(out).count("additionalProperties") == 0 and "$schema" not in out
        assert out["properties"]["format"] == {"type": "string"}  # the property stays, its keywords go
        assert out["properties"]["when"]["format"] == "date-time"
        inner = out["properties"]["items"]
        assert "uniqueItems" not in inner and inner["items"]["anyOf"] == [{"type": "string"}, {"type": "object"}]
        assert schema["properties"]["format"]["format"] == "uri"  # the input is not changed

    def test_bodies_per_dialect(self):
        lynkr = _lynkr()
        req = {"model": "claude-x", "max_tokens": 100, "stream": True, "temperature": 0.5, "top_k": 5,
               "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
               "messages": [{"role": "user", "content": [{"type": "text", "text": "hi",
                                                          "cache_control": {"type": "ephemeral"}}]}],
               "thinking": {"type": "enabled", "budget_tokens": 2048}}
        dbx, _ = lynkr.anthropic_to_openai(req, 4096)
        assert "model" not in dbx and "stream_options" not in dbx and dbx["thinking"]["budget_tokens"] == 2048
        assert dbx["messages"][1]["content"][0]["cache_control"] == {"type": "ephemeral"}
        oai, _ = lynkr.anthropic_to_openai(req, 4096, "gpt-5", lynkr.PRESETS["openai"].dialect,
                                           lynkr.model_facts("gpt-5"))
        assert oai["model"] == "gpt-5" and oai["max_completion_tokens"] == 4096 and "max_tokens" not in oai
        assert oai["stream_options"] == {"include_usage": True} and oai["reasoning_effort"] == "low"
        assert "temperature" not in oai and "top_k" not in oai and "thinking" not in oai
        assert oai["messages"][0] == {"role": "system", "content": "sys"} and "cache_control" not in json.dumps(oai)
        router, _ = lynkr.anthropic_to_openai(req, 4096, "anthropic/claude-sonnet-4.5",
                                              lynkr.PRESETS["openrouter"].dialect)
        assert router["reasoning"] == {"max_tokens": 2048} and "cache_control" in json.dumps(router)
        ds, _ = lynkr.anthropic_to_openai(req, 4096, "deepseek-chat", lynkr.PRESETS["openai-compatible"].dialect,
                                          lynkr.model_facts("deepseek-chat"))
        assert ds["temperature"] == 0.5 and ds["top_k"] == 5 and "thinking" not in ds
        assert lynkr.model_facts("deepseek-chat").max_output == 8192


# -- the OpenAI Responses translation (in-process) --

RS_OPENAI = OpenAIDialect(strict_tools=True)


def rs_build(req, model="gpt-4.1", dialect=RS_OPENAI, max_tokens=4096):
    req = {"model": "claude-sonnet-4-5", "max_tokens": max_tokens, **req}
    return anthropic_to_responses(req, max_tokens, model, dialect, model_facts(model))


def test_system_becomes_instructions_without_billing_block():
    body, dropped = rs_build({"system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=1; cch=abc"},
                                      {"type": "text", "text": "You are Claude Code."},
                                      {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
                           "messages": [{"role": "user", "content": "hi"}]})
    assert body["instructions"] == "You are Claude Code.\n\nBe brief."
    assert body["input"] == [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]
    assert body["model"] == "gpt-4.1" and body["max_output_tokens"] == 4096 and body["store"] is False
    assert "stream" not in body and "messages" not in body and dropped == []
    assert "instructions" not in rs_build({"system": "x-anthropic-billing-header: a", "messages": [
        {"role": "user", "content": "hi"}]})[0]


RS_PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


def test_images_become_input_image_data_urls_or_a_note():
    msg = {"role": "user", "content": [{"type": "text", "text": "what is this?"}, {"type": "image", "source": RS_PNG}]}
    body, _ = rs_build({"messages": [msg]})
    assert body["input"][0]["content"] == [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}]
    no_images = anthropic_to_responses({"messages": [msg]}, 100, "m", RS_OPENAI, ModelFacts(images=False))[0]
    assert no_images["input"][0]["content"][1]["type"] == "input_text"


def test_tool_loop_pairs_calls_and_outputs_in_order():
    messages = [
        {"role": "user", "content": "list and read"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Sure."},
            {"type": "tool_use", "id": "call_A", "name": "ls", "input": {"path": "."}},
            {"type": "tool_use", "id": "call_B", "name": "shot", "input": {}},
            {"type": "tool_use", "id": "call_C", "name": "cat", "input": {"f": "x"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_A", "content": "a.py\nb.py"},
            {"type": "tool_result", "tool_use_id": "call_B", "content": [
                {"type": "text", "text": "screenshot"}, {"type": "image", "source": RS_PNG}]},
            {"type": "tool_result", "tool_use_id": "call_gone", "content": "old", "is_error": True},
            {"type": "text", "text": "go on"}]},
        {"role": "assistant", "content": "done"},
    ]
    body, _ = rs_build({"messages": messages})
    kinds = [(i["type"], i.get("role") or i.get("call_id")) for i in body["input"]]
    assert kinds == [("message", "user"), ("message", "assistant"), ("function_call", "call_A"),
                     ("function_call", "call_B"), ("function_call", "call_C"), ("function_call_output", "call_A"),
                     ("function_call_output", "call_B"), ("function_call_output", "call_C"), ("message", "user"),
                     ("message", "assistant")]
    items = body["input"]
    assert items[1]["content"] == [{"type": "output_text", "text": "Sure."}]
    assert items[2] == {"type": "function_call", "call_id": "call_A", "name": "ls", "arguments": '{"path":"."}'}
    assert items[5] == {"type": "function_call_output", "call_id": "call_A", "output": "a.py\nb.py"}
    assert items[6]["output"] == "screenshot"
    assert items[7]["output"] == "[no result was returned]"  # every call gets an output
    follow = items[8]["content"]  # the tool result's image, the orphan result as text, then the user's text
    assert follow[0]["type"] == "input_image" and follow[0]["image_url"].startswith("data:image/png;base64,")
    assert follow[1] == {"type": "input_text", "text": "[result of tool call call_gone]\n[tool error] old"}
    assert follow[2] == {"type": "input_text", "text": "go on"}
    assert items[9] == {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "done"}]}


def test_tools_are_flat_with_explicit_strict_and_choice_mapping():
    tools = [{"name": "Read", "description": "read", "input_schema": {
                 "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                 "properties": {"p": {"type": "string", "pattern": "^\\p{L}"}}}},
             {"name": "Exact", "strict": True, "input_schema": {"type": "object", "properties": {}}},
             {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]
    body, dropped = rs_build({"messages": [{"role": "user", "content": "x"}], "tools": tools,
                           "tool_choice": {"type": "tool", "name": "Read", "disable_parallel_tool_use": True}})
    assert dropped == ["web_search (web_search_20250305)"]
    assert body["tools"] == [
        {"type": "function", "name": "Read", "parameters": {"type": "object", "properties": {"p": {"type": "string"}}},
         "description": "read", "strict": False},
        {"type": "function", "name": "Exact", "parameters": {"type": "object", "properties": {}},
         "description": "Exact", "strict": True}]
    assert body["tool_choice"] == {"type": "function", "name": "Read"} and body["parallel_tool_calls"] is False
    for kind, expected in (("auto", "auto"), ("any", "required"), ("none", "none")):
        assert rs_build({"messages": [{"role": "user", "content": "x"}], "tools": tools[:1],
                      "tool_choice": {"type": kind}})[0]["tool_choice"] == expected
    only_server, dropped = rs_build({"messages": [{"role": "user", "content": "x"}], "tools": tools[2:],
                                  "tool_choice": {"type": "auto"}})
    assert "tools" not in only_server and "tool_choice" not in only_server and len(dropped) == 1


def test_reasoning_models_get_effort_summary_encrypted_content_and_no_sampling():
    req = {"messages": [{"role": "user", "content": "think"}], "temperature": 0.5, "top_p": 0.9, "stream": True,
           "thinking": {"type": "enabled", "budget_tokens": 8000}, "stop_sequences": ["END"], "top_k": 5}
    body, _ = rs_build(req, model="gpt-5", max_tokens=32000)
    assert body["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert body["include"] == ["reasoning.encrypted_content"] and body["store"] is False and body["stream"] is True
    assert not {"temperature", "top_p", "top_k", "stop"} & body.keys()
    effort = rs_build({**req, "output_config": {"effort": "high"}}, model="gpt-5", max_tokens=32000)[0]
    assert effort["reasoning"]["effort"] == "high"
    off = rs_build({"messages": req["messages"]}, model="gpt-5")[0]  # still a reasoning model: carry its items
    assert "reasoning" not in off and off["include"] == ["reasoning.encrypted_content"]
    plain = rs_build(req, model="gpt-4.1", max_tokens=32000)[0]  # thinking dropped, sampling kept
    assert plain["temperature"] == 0.5 and plain["top_p"] == 0.9 and not {"reasoning", "include"} & plain.keys()
    effort_dialect = rs_build(req, model="my-deployment", dialect=OpenAIDialect(thinking="effort"), max_tokens=32000)[0]
    assert effort_dialect["reasoning"]["effort"] == "medium" and "temperature" not in effort_dialect


def test_structured_output_becomes_text_format():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
              "additionalProperties": False}
    body, _ = rs_build({"messages": [{"role": "user", "content": "x"}],
                     "output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert body["text"] == {"format": {"type": "json_schema", "name": "output", "schema": schema, "strict": True}}


RS_REASONING = {"type": "reasoning", "id": "rs_1", "encrypted_content": RS_ENC, "status": "completed",
             "summary": [{"type": "summary_text", "text": "**Plan**\n\nList files."},
                         {"type": "summary_text", "text": "Then read. 思考 🤔"}]}


def rs_completed(output, status="completed", incomplete=None, usage=None):
    return {"id": "resp_1", "object": "response", "status": status, "model": "gpt-5", "output": output,
            "incomplete_details": incomplete, "error": None,
            "usage": usage or {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 1000},
                               "output_tokens": 80, "output_tokens_details": {"reasoning_tokens": 40},
                               "total_tokens": 1280}}


def test_non_streaming_mapping_blocks_stop_reason_and_usage():
    output = [RS_REASONING,
              {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "Listing.", "annotations": []}]},
              {"type": "function_call", "id": "fc_1", "call_id": "call_X", "name": "ls",
               "arguments": '{"path":"."}', "status": "completed"}]
    message = responses_to_anthropic(rs_completed(output), "claude-sonnet-4-5")
    assert message["type"] == "message" and message["role"] == "assistant" and message["id"].startswith("msg_")
    assert message["model"] == "claude-sonnet-4-5" and message["stop_reason"] == "tool_use"
    thinking, text, tool = message["content"]
    assert thinking["type"] == "thinking"
    assert thinking["thinking"] == "**Plan**\n\nList files.\n\nThen read. 思考 🤔"
    assert thinking["signature"].startswith("lynkr-responses.")
    assert text == {"type": "text", "text": "Listing."}
    assert tool == {"type": "tool_use", "id": "call_X", "name": "ls", "input": {"path": "."}}
    assert message["usage"] == {"input_tokens": 200, "output_tokens": 80, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 1000}
    text_only = responses_to_anthropic(rs_completed(output[1:2]), "m")
    assert text_only["stop_reason"] == "end_turn"
    cut = responses_to_anthropic(rs_completed(output, "incomplete", {"reason": "max_output_tokens"}), "m")
    assert cut["stop_reason"] == "max_tokens"
    refusal = responses_to_anthropic(rs_completed([{"type": "message", "role": "assistant", "content": [
        {"type": "refusal", "refusal": "I can't help with that."}]}]), "m")
    assert refusal["stop_reason"] == "refusal" and refusal["content"][0]["text"] == "I can't help with that."


def test_reasoning_without_encrypted_content_is_not_replayable():
    item = {**RS_REASONING, "encrypted_content": None}
    block = responses_to_anthropic(rs_completed([item]), "m")["content"][0]
    assert block["signature"] == "" and reasoning_item(block) is None


def test_thinking_round_trip_restores_the_same_reasoning_item():
    message = responses_to_anthropic(rs_completed([RS_REASONING, {
        "type": "function_call", "call_id": "call_X", "name": "ls", "arguments": "{}"}]), "m")
    history = [{"role": "user", "content": "go"}, {"role": "assistant", "content": message["content"]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_X", "content": "ok"}]}]
    items = rs_build({"messages": history}, model="gpt-5")[0]["input"]
    assert items[1] == {key: RS_REASONING[key] for key in ("type", "id", "encrypted_content", "summary")}
    assert [i["type"] for i in items] == ["message", "reasoning", "function_call", "function_call_output"]
    # Claude's own signatures, and a reasoning item with nothing after it, are not sent
    foreign = [{"role": "user", "content": "go"}, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "t", "signature": "EqQBCkgIBRABGAIiQ..."},
        {"type": "redacted_thinking", "data": "abc"}, message["content"][0], {"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [message["content"][0]]}]
    items = rs_build({"messages": foreign})[0]["input"]
    assert [i["type"] for i in items] == ["message", "reasoning", "message"]
    tampered = {**message["content"][0], "thinking": "edited"}  # the parts cannot be split again: one part
    assert reasoning_item(tampered)["summary"] == [{"type": "summary_text", "text": "edited"}]
    assert reasoning_item({**tampered, "signature": "lynkr-responses.!!!"}) is None


def test_failed_response_raises_with_mapped_status():
    resp = {**rs_completed([]), "status": "failed",
            "error": {"code": "rate_limit_exceeded", "message": "slow down"}}
    with pytest.raises(_LynkrError) as info:
        responses_to_anthropic(resp, "m")
    assert (info.value.status, info.value.error_type) == (429, "rate_limit_error")
    assert "slow down" in info.value.message


def test_lynkr_openai_error_reads_responses_error_bodies():
    raw = json.dumps({"error": {"message": "Invalid type for 'input[3].output'", "type": "invalid_request_error",
                                "param": "input[3].output", "code": "invalid_type"}}).encode()
    exc = _openai_error(SimpleNamespace(label="OpenAI"), 400, raw, {"x-request-id": "req_1"})
    assert exc.status == 400 and exc.error_type == "invalid_request_error"
    assert exc.message == "OpenAI returned HTTP 400 invalid_type: Invalid type for 'input[3].output'"
    exc = _openai_error(SimpleNamespace(label="OpenAI"), 429, json.dumps({"error": {
        "message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}).encode(), {})
    assert exc.status == 429 and exc.error_type == "rate_limit_error"


def test_signature_encoding_is_url_safe_ascii():
    signature = encode_reasoning(RS_REASONING)
    assert signature.isascii() and "/" not in signature and "+" not in signature
    assert encode_reasoning({"id": "rs", "summary": []}) == ""


# -- truthful usage --


def usage_of(u: dict) -> tuple:
    return tuple(u.get(k) for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
                                    "output_tokens"))


def final_delta_usage(r: Resp) -> dict:
    """The usage of the stream's message_delta (after checking the whole stream's grammar)."""
    r.stream().ok()
    deltas = [d for e, d in r.events() if e == "message_delta"]
    assert len(deltas) == 1, deltas
    return deltas[0]["usage"]


def stream_usage(r: Resp) -> dict:
    """The usage a client adds up from a stream: message_start's, updated by message_delta's."""
    return r.stream().ok()["usage"]


class TestTruthfulUsage:
    @pytest.mark.parametrize("case", ["dbx", "openrouter"])
    def test_openai_cache_reads_and_writes_become_anthropic_usage(self, case, new_dbx, make_proxy):
        """prompt_tokens 1000 = 100 fresh + 600 read + 300 written: the client sees Anthropic's split,
        in the JSON answer and in the stream's final message_delta."""
        if case == "dbx":
            fake = new_dbx()
            p = make_proxy(dbx_env(fake))
        else:
            fake = FakeOpenRouter()
            try:
                p = make_proxy(PV_CASES["openrouter"].env(fake))
            except BaseException:
                fake.close()
                raise
        try:
            for stream in (False, True):
                fake.push(lambda rec: oai_usage_turn(rec, "Counted ✓.", OR_USAGE, dbx=case == "dbx"))
                r = p.post(base_req(stream=stream))
                assert r.status == 200, pv_diag(r, fake, proxy=p)
                if stream:
                    u = final_delta_usage(r)
                    assert texts(r.stream().ok()) == ["Counted ✓."]
                else:
                    u = r.json()["usage"]
                    assert texts(r.json()) == ["Counted ✓."]
                assert usage_of(u) == (100, 600, 300, 50), (stream, u)
                # nothing counted twice: the three input figures add up to the upstream's prompt_tokens
                assert u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"] == 1000
            assert len(fake.requests) == 2
            if case == "openrouter":  # the usage chunk only comes when asked for
                assert dig(fake.last.body, "stream_options.include_usage") is True
        finally:
            if case != "dbx":
                fake.close()

    def test_openai_usage_without_cache_details(self, dbx):
        """No prompt_tokens_details: all input is fresh input."""
        plain = {"prompt_tokens": 321, "completion_tokens": 12, "total_tokens": 333}
        for stream in (False, True):
            dbx.fake.push(lambda rec: oai_usage_turn(rec, "Plain.", plain, dbx=True))
            r = dbx.proxy.post(base_req(stream=stream))
            u = final_delta_usage(r) if stream else r.json()["usage"]
            assert usage_of(u) == (321, 0, 0, 12), u

    def test_anthropic_usage_passes_unchanged(self, az):
        """Azure (Anthropic format): every usage figure the upstream sent reaches the client as sent,
        message_start's input figures included."""
        upstream = {**ANTH_USAGE, "cache_creation": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 0},
                    "service_tier": "standard"}
        delta = {"input_tokens": 100, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 600,
                 "output_tokens": 50}
        az.fake.push(lambda rec: anth_usage_turn(rec, [text("Cached upstream ✓.")], upstream))
        r = az.proxy.post(base_req())
        assert r.status == 200 and r.json()["usage"] == upstream, r.data[:1000]
        az.fake.push(lambda rec: anth_usage_turn(rec, [text("Cached upstream ✓.")], upstream, delta_usage=delta))
        r = az.proxy.post(base_req(stream=True))
        msg = r.stream().ok()
        assert texts(msg) == ["Cached upstream ✓."]
        starts = [d for e, d in r.events() if e == "message_start"]
        assert starts[0]["message"]["usage"] == dict(upstream, output_tokens=1), starts[0]
        assert final_delta_usage(r) == delta

    @pytest.mark.parametrize("provider", ["dbx", "az"])
    def test_local_cache_reports_truthful_usage(self, agent, provider):
        st_ = agent(provider, **CACHE_ON)
        sid = f"cache-usage-{provider}"
        hdr = {"x-session-id": sid}
        req = base_req(messages=[user("what does the cache say?")])
        # a non-streamed miss that is stored: the upstream's usage, unchanged
        st_.fake.push(usage_turn(provider, "From upstream."))
        r = st_.proxy.post(req, headers=hdr)
        assert r.status == 200 and r.headers.get("x-lynkr-cache") == "stored", (r.headers, r.data[:500])
        assert usage_of(r.json()["usage"]) == (100, 600, 300, 50), r.json()["usage"]
        # a hit: no upstream call, all input as cache reads, same output
        for stream in (False, True):
            r = st_.proxy.post({**req, "stream": stream}, headers=hdr)
            assert r.headers.get("x-lynkr-cache") == "hit", r.headers
            u = stream_usage(r) if stream else r.json()["usage"]
            assert usage_of(u) == (0, 1000, 0, 50), u
        assert len(st_.fake.requests) == 1
        # a streamed miss: the headers went out before the answer was kept; usage unchanged
        st_.fake.push(usage_turn(provider, "Streamed from upstream."))
        r = st_.proxy.post(base_req(messages=[user("and streamed?")], stream=True),
                           headers={"x-session-id": sid + "-s"})
        assert r.headers.get("x-lynkr-cache") == "miss", r.headers
        assert usage_of(stream_usage(r)) == (100, 600, 300, 50)
        # a miss that is never kept (a client tool call)
        st_.fake.push(usage_turn(provider, "Checking.", [("call_cu1", "get_weather", {"city": "Oslo"})]))
        r = st_.proxy.post(base_req(messages=[user("weather?")], tools=[GET_WEATHER]),
                           headers={"x-session-id": sid + "-t"})
        assert r.headers.get("x-lynkr-cache") == "miss" and r.json()["stop_reason"] == "tool_use"
        assert usage_of(r.json()["usage"]) == (100, 600, 300, 50)
        assert len(st_.fake.requests) == 3
        # the session store says the same, turn by turn
        replies = assistant_turns(session_of(st_.proxy, sid))
        assert [t["cache"] for t in replies] == ["stored", "hit", "hit"], replies
        assert [usage_of(t["usage"]) for t in replies] == [(100, 600, 300, 50), (0, 1000, 0, 50), (0, 1000, 0, 50)]
        streamed = assistant_turns(session_of(st_.proxy, sid + "-s"))
        assert [t["cache"] for t in streamed] == ["stored"], streamed  # kept for reuse, as the session record says
        assert usage_of(streamed[0]["usage"]) == (100, 600, 300, 50)
        tool = assistant_turns(session_of(st_.proxy, sid + "-t"))
        assert [t["cache"] for t in tool] == ["miss"], tool


# -- thinking provenance --

THINK_ON = {"max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 2048}}
CLEAR_THINKING = {"type": "clear_thinking_20251015", "keep": "all"}
CLEAR_TOOLS = {"type": "clear_tool_uses_20250919"}


class SignsThinking:
    """Mixin for the Anthropic-format fakes: thinking signed with this fake's own secret (an HMAC of the
    thinking text), and, as Anthropic answers, a 400 for a history holding a thinking block it did not
    sign, one with an empty signature, a tool loop with thinking on whose assistant turn lost its
    thinking, or clear_thinking edits with thinking off."""

    secret: bytes = b""
    label = "?"

    def sign(self, thought: str) -> str:
        return base64.b64encode(hmac.new(self.secret, thought.encode(), hashlib.sha256).digest()).decode()

    def redacted(self, nonce: str) -> str:
        return f"{nonce}.{self.sign('redacted:' + nonce)}"

    def signing_problems(self, b: dict) -> list[str]:
        p = []
        msgs = b.get("messages") or []
        for i, m in enumerate(msgs):
            if m.get("role") != "assistant" or not isinstance(m.get("content"), list):
                continue
            for j, blk in enumerate(m["content"]):
                kind = blk.get("type") if isinstance(blk, dict) else None
                if kind == "thinking":
                    sig = blk.get("signature")
                    if not isinstance(sig, str) or not sig:
                        p.append(f"messages.{i}.content.{j}.thinking.signature: Field required")
                    elif not hmac.compare_digest(sig, self.sign(blk.get("thinking") or "")):
                        p.append(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")
                elif kind == "redacted_thinking":
                    nonce, _, mac = str(blk.get("data") or "").partition(".")
                    if not mac or not hmac.compare_digest(mac, self.sign("redacted:" + nonce)):
                        p.append(f"messages.{i}.content.{j}: Invalid `data` in `redacted_thinking` block")
        thinking_on = (b.get("thinking") or {}).get("type") in ("enabled", "adaptive")
        last = msgs[-1].get("content") if msgs else None
        if thinking_on and len(msgs) >= 2 and msgs[-2].get("role") == "assistant" and isinstance(last, list) \
                and any(x.get("type") == "tool_result" for x in last) and isinstance(msgs[-2].get("content"), list):
            first = (msgs[-2]["content"] or [{}])[0]
            if first.get("type") not in ("thinking", "redacted_thinking"):
                p.append(f"messages.{len(msgs) - 2}.content.0.type: Expected `thinking` or `redacted_thinking`, but "
                         f"found `{first.get('type')}`. When `thinking` is enabled, a final `assistant` message must "
                         "start with a thinking block.")
        edits = dig(b, "context_management.edits")
        if not thinking_on and isinstance(edits, list) and any(
                str((e or {}).get("type", "")).startswith("clear_thinking") for e in edits):
            p.append("context_management.edits: clear_thinking_20251015 requires thinking to be enabled")
        return p

    def check(self, rec: Recorded) -> Reply | None:
        bad = super().check(rec)
        if bad is not None or rec.path.endswith("count_tokens"):
            return bad
        problems = self.signing_problems(rec.body)
        return json_reply(anth_error(400, "invalid_request_error", "; ".join(problems)), 400) if problems else None

    def turn(self, thought: str | None, words: str | None = None, calls=(), redacted: str | None = None):
        """An answer: [redacted_thinking?, thinking?, text?, tool_use...], signed by this fake."""
        def respond(rec: Recorded) -> Reply:
            content: list[dict] = []
            if redacted:
                content.append({"type": "redacted_thinking", "data": self.redacted(redacted)})
            if thought:
                content.append({"type": "thinking", "thinking": thought, "signature": self.sign(thought)})
            if words:
                content.append(text(words))
            content += [tool_use(i, n, a) for i, n, a in calls]
            msg = anth_message(content, model=rec.body["model"], stop_reason="tool_use" if calls else "end_turn",
                               id=f"msg_01{self.label.upper()}SIGNED")
            if rec.body.get("stream"):
                data = anth_sse(anth_events(msg))
                return stream_reply(data, pieces=pv_split(data), gap=0.001)
            return json_reply(msg)
        return respond

    def default(self, rec: Recorded) -> Reply:
        n = len(self.requests)
        return self.turn(f"{self.label} ponders #{n} ✓", f"{self.label} answers #{n}")(rec)


class SigningAzure(SignsThinking, FakeAzure):
    def __init__(self, label: str, secret: bytes) -> None:
        super().__init__()
        self.label, self.secret = label, secret


class SigningAnthropic(SignsThinking, FakeAnthropic):
    def __init__(self, label: str, secret: bytes) -> None:
        super().__init__()
        self.label, self.secret = label, secret


class NoReasoningCompatible(FakeOpenAICompatible):
    """An OpenAI-compatible server that refuses reasoning parts in the history, as OpenAI does."""

    def problems(self, b: dict) -> list[str]:
        p = super().problems(b)
        for i, m in enumerate(b.get("messages") or []):
            for part in m.get("content") if isinstance(m.get("content"), list) else []:
                if isinstance(part, dict) and part.get("type") == "reasoning":
                    p.append(f"Invalid value: 'reasoning'. Supported values are: 'text' and 'refusal' "
                             f"(messages[{i}].content)")
        return p


@dataclasses.dataclass
class ThinkStack:
    a: SigningAzure
    b: SigningAnthropic
    o: NoReasoningCompatible
    d: FakeDatabricks
    tmp: Path
    env: dict
    proxy: Proxy

    @property
    def fakes(self) -> list[FakeHTTP]:
        return [self.a, self.b, self.o, self.d]

    def post(self, model: str, messages: list[dict], stream: bool = False, sid: str = "th", **kw: Any) -> Resp:
        body = base_req(model=model, messages=messages, stream=stream, **{**THINK_ON, **kw})
        return self.proxy.post(body, headers={"anthropic-beta": CC_BETAS, "x-session-id": sid})

    def diag(self, r: Resp) -> str:
        return pv_diag(r, *self.fakes, proxy=self.proxy)


def think_toml(a: FakeHTTP, b: FakeHTTP, o: FakeHTTP, d: FakeHTTP) -> str:
    return textwrap.dedent(f"""\
        [providers.a]
        kind = "azure-anthropic"
        base_url = "{a.url}/anthropic/v1/messages"
        api_key = "$TH_AZ_KEY"

        [providers.b]
        kind = "anthropic"
        base_url = "{b.url}"
        api_key = "$TH_AN_KEY"

        [providers.o]
        kind = "openai-compatible"
        base_url = "{o.url}/v1"
        api_key = "$TH_COMPAT_KEY"

        [providers.d]
        kind = "databricks"
        base_url = "{d.url}"
        api_key = "$TH_DBX_KEY"

        [router]
        default = "a,claude-sonnet-4-5"

        [router.fallback]
        default = ["b,claude-sonnet-4-5"]
        """)


TH_ENV = {"TH_AZ_KEY": AZ_KEY, "TH_AN_KEY": ANTH_KEY, "TH_COMPAT_KEY": COMPAT_KEY, "TH_DBX_KEY": DBX_KEY}


def _think_stack(tmp: Path) -> ThinkStack:
    a, b = SigningAzure("a", b"secret-of-a-" + os.urandom(8)), SigningAnthropic("b", b"secret-of-b-" + os.urandom(8))
    o, d = NoReasoningCompatible(), FakeDatabricks()
    pv_toml(tmp, think_toml(a, b, o, d))
    try:
        proxy = start_proxy(tmp, TH_ENV)
    except BaseException:
        for f in (a, b, o, d):
            f.close()
        raise
    return ThinkStack(a, b, o, d, tmp, TH_ENV, proxy)


@pytest.fixture(scope="module")
def think_stack(tmp_path_factory):
    s = _think_stack(tmp_path_factory.mktemp("think"))
    yield s
    s.proxy.stop()
    for f in s.fakes:
        f.close()


@pytest.fixture
def th(think_stack) -> ThinkStack:
    for f in think_stack.fakes:
        f.reset()
    return think_stack


def dbx_reasoning_turn(rec: Recorded, thought: str, words: str, signature: str | None = None) -> Reply:
    """Databricks serving Claude: reasoning as content parts (signed or not), streamed in pieces when asked."""
    summary = {"type": "summary_text", "text": thought, **({"signature": signature} if signature else {})}
    if not rec.body.get("stream"):
        part = {"type": "reasoning", "summary": [summary]}
        return json_reply(oai_completion(None, content=[part, {"type": "text", "text": words}]))
    half = len(thought) // 2
    chunks = [oai_chunk({"role": "assistant"}),
              *[oai_chunk({"content": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": t}]}]})
                for t in (thought[:half], thought[half:])]]
    if signature:
        chunks.append(oai_chunk({"content": [{"type": "reasoning", "summary": [
            {"type": "summary_text", "text": "", "signature": signature}]}]}))
    chunks += [oai_chunk({"content": words}), oai_chunk({}, finish="stop"),
               oai_chunk(choices=False, usage={"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29})]
    data = oai_sse(chunks)
    return stream_reply(data, pieces=pv_split(data), gap=0.001)


def thinking_in(rec: Recorded) -> list[dict]:
    """Every thinking/redacted_thinking block in an Anthropic-format upstream request's history."""
    return [blk for m in rec.body["messages"] if isinstance(m.get("content"), list)
            for blk in m["content"] if isinstance(blk, dict) and blk.get("type") in ("thinking", "redacted_thinking")]


def reasoning_parts_in(rec: Recorded) -> list[dict]:
    return [part for m in rec.body["messages"] if isinstance(m.get("content"), list)
            for part in m["content"] if isinstance(part, dict) and part.get("type") == "reasoning"]


def answer(r: Resp, stream: bool, st_: ThinkStack) -> dict:
    assert r.status == 200, st_.diag(r)
    return reply_of(r, stream)


class TestThinkingProvenance:
    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_thinking_goes_only_to_the_provider_that_signed_it(self, th, stream):
        t1 = f"a weighs the question ({stream}) ✓"
        th.a.push(th.a.turn(t1, "Answer one."))
        h = [user("question one")]
        m1 = answer(th.post("a,claude-sonnet-4-5", h, stream), stream, th)
        # the client gets a's thinking with its signature intact
        assert block_summary(m1["content"]) == [("thinking", t1, th.a.sign(t1)), ("text", "Answer one.")]
        # turn 2 on b: a's thinking is left out, the rest of the history is there, b answers
        t2 = f"b weighs it ({stream})"
        th.b.push(th.b.turn(t2, "Answer two."))
        h += [assistant(m1["content"]), user("question two")]
        m2 = answer(th.post("b,claude-sonnet-4-5", h, stream), stream, th)
        assert texts(m2) == ["Answer two."] and len(th.b.requests) == 1
        got = th.b.last.body["messages"]
        assert thinking_in(th.b.last) == [], got
        assert [(m["role"], m["content"] if isinstance(m["content"], str) else texts(m)) for m in got] == [
            ("user", "question one"), ("assistant", ["Answer one."]), ("user", "question two")], got
        assert th.b.last.body.get("thinking") == THINK_ON["thinking"]  # no tool loop: thinking stays on
        # turn 3 back on a: a gets its own thinking again, signature intact, and not b's
        th.a.push(th.a.turn(None, "Answer three."))
        h += [assistant(m2["content"]), user("question three")]
        m3 = answer(th.post("a,claude-sonnet-4-5", h, stream), stream, th)
        assert texts(m3) == ["Answer three."]
        assert thinking_in(th.a.last) == [{"type": "thinking", "thinking": t1, "signature": th.a.sign(t1)}]
        assert th.a.last.body["messages"][1]["content"][0]["thinking"] == t1  # in its place, before the text
        assert [len(f.requests) for f in th.fakes] == [2, 1, 0, 0]
        pv_no_leak(*th.fakes)

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_tool_loop_moved_to_another_provider_continues_without_thinking(self, th, stream):
        thought = f"I need the weather ({stream})."
        th.a.push(th.a.turn(thought, None, [("toolu_01W", "get_weather", {"city": "Oslo"})]))
        mgmt = {"edits": [CLEAR_THINKING, CLEAR_TOOLS]}
        h = [user("weather in Oslo?")]
        m1 = answer(th.post("a,claude-sonnet-4-5", h, stream, tools=[GET_WEATHER], context_management=mgmt),
                    stream, th)
        assert m1["stop_reason"] == "tool_use"
        assert [b["type"] for b in m1["content"]] == ["thinking", "tool_use"]
        h += [assistant(m1["content"]), user([tool_result("toolu_01W", "3°C, rain")])]
        # to b: no foreign thinking, and (the tool loop's turn lost its thinking) thinking off,
        # clear_thinking edits gone, the other edits kept
        th.b.push(th.b.turn(None, "It is 3°C and raining."))
        m2 = answer(th.post("b,claude-sonnet-4-5", h, stream, tools=[GET_WEATHER], context_management=mgmt),
                    stream, th)
        assert texts(m2) == ["It is 3°C and raining."]
        sent = th.b.last.body
        assert thinking_in(th.b.last) == [] and "thinking" not in sent, sent
        assert sent.get("context_management") == {"edits": [CLEAR_TOOLS]}, sent.get("context_management")
        assert [b["type"] for b in sent["messages"][1]["content"]] == ["tool_use"]
        # the same history to b with only clear_thinking edits: context_management goes entirely
        th.b.push(th.b.turn(None, "Still 3°C."))
        answer(th.post("b,claude-sonnet-4-5", h, stream, tools=[GET_WEATHER],
                       context_management={"edits": [CLEAR_THINKING]}), stream, th)
        assert "thinking" not in th.b.last.body and "context_management" not in th.b.last.body, th.b.last.body
        # to a: thinking stays on, its block leads the tool-use turn, the edits are untouched
        th.a.push(th.a.turn("Rain, then.", "It is 3°C and raining."))
        answer(th.post("a,claude-sonnet-4-5", h, stream, tools=[GET_WEATHER], context_management=mgmt), stream, th)
        sent = th.a.last.body
        assert sent.get("thinking") == THINK_ON["thinking"] and sent.get("context_management") == mgmt, sent
        assert sent["messages"][1]["content"][0] == {"type": "thinking", "thinking": thought,
                                                     "signature": th.a.sign(thought)}
        assert [len(f.requests) for f in th.fakes] == [2, 2, 0, 0]

    def test_redacted_thinking_kept_for_its_signer_only(self, th):
        th.a.push(th.a.turn("visible part", "Redacted answer.", redacted="nonce-r1"))
        h = [user("something sensitive")]
        m1 = answer(th.post("a,claude-sonnet-4-5", h), False, th)
        red = {"type": "redacted_thinking", "data": th.a.redacted("nonce-r1")}
        assert m1["content"][0] == red, m1["content"]
        h += [assistant(m1["content"]), user("go on")]
        answer(th.post("b,claude-sonnet-4-5", h), False, th)
        assert thinking_in(th.b.last) == [], th.b.last.body["messages"]
        answer(th.post("a,claude-sonnet-4-5", h), False, th)
        assert thinking_in(th.a.last) == [red, {"type": "thinking", "thinking": "visible part",
                                                "signature": th.a.sign("visible part")}]

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    @pytest.mark.parametrize("source", ["o", "d"], ids=["openai-compatible", "databricks"])
    def test_unsigned_reasoning_is_never_replayed(self, th, source, stream):
        """Reasoning from an OpenAI-format upstream without a signature comes back as a thinking block with
        an empty signature; no Anthropic-format provider, no Databricks endpoint (Claude checks signatures
        there too) and no OpenAI-format vendor gets it back."""
        # (a regression once: with no signed block at all, _thinking_for returned the request unfiltered)
        thought = f"Reasoning without a signature ({source}, {stream}) ✓."
        if source == "o":
            th.o.push(lambda rec: pv_oai_reply(rec, "Reasoned answer.", reasoning=("reasoning_content", thought)))
            model = "o,deepseek-reasoner-x"
        else:
            th.d.push(lambda rec: dbx_reasoning_turn(rec, thought, "Reasoned answer."))
            model = "d,databricks-claude-sonnet-4-5"
        h = [user("think it over")]
        m1 = answer(th.post(model, h, stream), stream, th)
        assert block_summary(m1["content"]) == [("thinking", thought, ""), ("text", "Reasoned answer.")]
        h += [assistant(m1["content"]), user("and then?")]
        for provider in ("a", "b"):
            r = th.post(f"{provider},claude-sonnet-4-5", h, stream)
            answer(r, stream, th)
            fake = getattr(th, provider)
            assert thinking_in(fake.last) == [], fake.last.body["messages"]
            assert texts(fake.last.body["messages"][1]) == ["Reasoned answer."]
        answer(th.post("o,deepseek-chat", h, stream), stream, th)
        assert reasoning_parts_in(th.o.last) == [] and thought not in th.o.last.raw.decode(), th.o.last.body
        answer(th.post("d,databricks-claude-sonnet-4-5", h, stream), stream, th)
        assert reasoning_parts_in(th.d.last) == [] and thought not in th.d.last.raw.decode(), th.d.last.body
        assert [len(f.requests) for f in th.fakes] == [1, 1, 1 + (source == "o"), 1 + (source == "d")]

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_databricks_signed_reasoning_goes_back_to_databricks_only(self, th, stream):
        """Databricks serving Claude returns signed reasoning parts: replayed to Databricks (as a reasoning
        part with its signature), left out for the Anthropic-format providers and OpenAI-format vendors."""
        thought, sig = f"dbx thought ({stream})", f"DbxSig{int(stream)}=="
        th.d.push(lambda rec: dbx_reasoning_turn(rec, thought, "Dbx answer.", sig))
        h = [user("hello dbx")]
        m1 = answer(th.post("d,databricks-claude-sonnet-4-5", h, stream), stream, th)
        assert block_summary(m1["content"]) == [("thinking", thought, sig), ("text", "Dbx answer.")]
        h += [assistant(m1["content"]), user("more")]
        answer(th.post("d,databricks-claude-sonnet-4-5", h, stream), stream, th)
        assert reasoning_parts_in(th.d.last) == [{"type": "reasoning", "summary": [
            {"type": "summary_text", "text": thought, "signature": sig}]}], th.d.last.body["messages"]
        answer(th.post("a,claude-sonnet-4-5", h, stream), stream, th)
        assert thinking_in(th.a.last) == []
        answer(th.post("o,gpt-4.1", h, stream), stream, th)
        assert reasoning_parts_in(th.o.last) == [] and thought not in th.o.last.raw.decode()

    def test_streamed_redacted_thinking_kept_for_its_signer_only(self, th):
        """A redacted_thinking block arrives whole in content_block_start; lynkr notes who made it from
        the stream as well."""
        data = th.a.redacted("nonce-s1")
        red = {"type": "redacted_thinking", "data": data}

        def respond(rec: Recorded) -> Reply:
            msg = anth_message([text("After redaction.")], model=rec.body["model"])
            ev = anth_events(msg)
            ev[1:1] = [("content_block_start", {"type": "content_block_start", "index": 0, "content_block": red}),
                       ("content_block_stop", {"type": "content_block_stop", "index": 0})]
            for name, d in ev[3:]:
                if "index" in d:
                    d["index"] += 1
            raw = anth_sse(ev)
            return stream_reply(raw, pieces=pv_split(raw), gap=0.001)

        th.a.push(respond)
        h = [user("stream something sensitive")]
        r = th.post("a,claude-sonnet-4-5", h, stream=True)
        assert r.status == 200, th.diag(r)
        events = r.events()
        assert [e for e, _ in events][-1] == "message_stop", events[-3:]
        starts = [d["content_block"] for e, d in events if e == "content_block_start"]
        assert starts == [red, text("")], starts
        h += [assistant([red, text("After redaction.")]), user("go on")]
        answer(th.post("b,claude-sonnet-4-5", h), False, th)
        assert thinking_in(th.b.last) == []
        answer(th.post("a,claude-sonnet-4-5", h), False, th)
        assert thinking_in(th.a.last) == [red]

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_fallback_provider_gets_no_foreign_thinking(self, th, stream):
        """The default route's a fails (503) and its fallback b answers: b gets none of a's thinking, and
        what b signed is b's from then on."""
        t1 = f"a before the outage ({stream})"
        th.a.push(th.a.turn(t1, "Before."))
        h = [user("first")]
        m1 = answer(th.post("claude-sonnet-4-5", h, stream), stream, th)
        assert block_summary(m1["content"])[0] == ("thinking", t1, th.a.sign(t1))
        th.a.push(json_reply(anth_error(503, "api_error", "scripted outage"), 503))
        t2 = f"b covers for a ({stream})"
        th.b.push(th.b.turn(t2, "Covered."))
        h += [assistant(m1["content"]), user("second")]
        r = th.post("claude-sonnet-4-5", h, stream)
        m2 = answer(r, stream, th)
        assert r.headers.get("x-lynkr-provider") == "b" and r.headers.get("x-lynkr-route") == "fallback", r.headers
        assert len(th.a.requests) == 2 and thinking_in(th.a.requests[1]) != []  # a itself got its own
        assert thinking_in(th.b.last) == [], th.b.last.body["messages"]
        h += [assistant(m2["content"]), user("third")]
        answer(th.post("b,claude-sonnet-4-5", h, stream), stream, th)
        assert thinking_in(th.b.last) == [{"type": "thinking", "thinking": t2, "signature": th.b.sign(t2)}]
        answer(th.post("claude-sonnet-4-5", h, stream), stream, th)
        assert thinking_in(th.a.last) == [{"type": "thinking", "thinking": t1, "signature": th.a.sign(t1)}]

    def test_unknown_signature_is_left_out_everywhere(self, th):
        """A thinking block lynkr never saw answered (pasted history, another proxy): nobody gets it, not
        even the provider whose secret would verify it."""
        forged = "a thought lynkr never relayed"
        h = [user("hi"), assistant([{"type": "thinking", "thinking": forged, "signature": th.a.sign(forged)},
                                    {"type": "thinking", "thinking": "other", "signature": "c2lnLW5ldmVyLXNlZW4="},
                                    text("Earlier answer.")]), user("continue")]
        for provider in ("a", "b"):
            answer(th.post(f"{provider},claude-sonnet-4-5", h), False, th)
            fake = getattr(th, provider)
            assert thinking_in(fake.last) == [], fake.last.body["messages"]
            assert texts(fake.last.body["messages"][1]) == ["Earlier answer."]

    def test_thinking_only_turn_is_dropped_whole(self, th):
        """An assistant turn that held only foreign thinking goes; the user turns around it still form a
        valid history (b answers 200)."""
        t1 = "only thinking here"
        th.a.push(th.a.turn(t1, None))
        h = [user("say nothing")]
        m1 = answer(th.post("a,claude-sonnet-4-5", h), False, th)
        assert [b["type"] for b in m1["content"]] == ["thinking"]
        h += [assistant(m1["content"]), user("now say something")]
        m2 = answer(th.post("b,claude-sonnet-4-5", h), False, th)
        assert texts(m2)
        got = th.b.last.body["messages"]
        assert {m["role"] for m in got} == {"user"} and thinking_in(th.b.last) == [], got
        assert [t for m in got for t in ([m["content"]] if isinstance(m["content"], str) else texts(m))] == [
            "say nothing", "now say something"], got

    def test_provenance_survives_a_restart(self, tmp_path):
        """Who signed what is kept in the session store: a new process still knows."""
        st_ = _think_stack(tmp_path)
        try:
            t1 = "remembered across restarts"
            st_.a.push(st_.a.turn(t1, "Before the restart."))
            h = [user("remember this")]
            m1 = answer(st_.post("a,claude-sonnet-4-5", h, stream=True), True, st_)
            h += [assistant(m1["content"]), user("after the restart")]
            st_.proxy.stop()
            assert st_.proxy.proc.returncode == 0
            st_.proxy = start_proxy(tmp_path, st_.env)  # same data dir: the session store remembers who signed
            answer(st_.post("a,claude-sonnet-4-5", h), False, st_)
            assert thinking_in(st_.a.last) == [{"type": "thinking", "thinking": t1, "signature": st_.a.sign(t1)}]
            answer(st_.post("b,claude-sonnet-4-5", h), False, st_)
            assert thinking_in(st_.b.last) == []
        finally:
            st_.proxy.stop()
            for f in st_.fakes:
                f.close()


# -- count_tokens: the estimate --


class TestCountTokens:
    """The estimate before any answer: fresh proxies (a shared one's answers calibrate its count)."""

    @pytest.fixture
    def dbx(self, new_dbx, make_proxy) -> Stack:
        fake = new_dbx()
        return Stack(fake, make_proxy(dbx_env(fake)))

    @pytest.fixture
    def az(self, new_az, make_proxy) -> Stack:
        fake = new_az()
        return Stack(fake, make_proxy(az_env(fake)))

    def test_azure_forwarded(self, az):
        az.fake.push(json_reply({"input_tokens": 2095}))
        body = {"model": "claude-opus-5-5", "messages": [user("hi")], "system": "s", "tools": [GET_WEATHER]}
        r = az.proxy.post(body, path="/v1/messages/count_tokens?beta=true", headers=CC_HEADERS)
        assert r.status == 200 and r.json() == {"input_tokens": 2095}
        sent = az.fake.last
        assert sent.path == "/anthropic/v1/messages/count_tokens"
        assert sent.body["model"] == "claude-sonnet-4-5" and sent.body["tools"] == [GET_WEATHER]
        assert sent.headers["x-api-key"] == AZ_KEY and sent.headers["anthropic-beta"] == CC_BETAS

    def test_azure_404_falls_back_to_estimate(self, az):
        az.fake.push(json_reply({"error": {"code": "404", "message": "Resource not found"}}, 404))
        r = az.proxy.post(base_req(messages=[user("word " * 400)]), path="/v1/messages/count_tokens")
        assert r.status == 200 and r.json()["input_tokens"] >= 400 and r.headers["x-lynkr-token-count"] == "estimated"

    def _count(self, stack: Stack, body: dict) -> int:
        r = stack.proxy.post(body, path="/v1/messages/count_tokens")
        assert r.status == 200, r.data
        j = r.json()
        assert set(j) == {"input_tokens"} and isinstance(j["input_tokens"], int)
        return j["input_tokens"]

    def test_databricks_estimate_errs_high(self, dbx):
        system = "You are a careful assistant who explains things step by step. " * 40
        prose = "Please summarise the following report about quarterly revenue and costs. " * 120
        tool_out = "drwxr-xr-x 2 root root 4096 Nov 21 06:24 some_directory_name\n" * 80
        messages = [user(prose), assistant([text("Listing."), tool_use("toolu_1", "Bash", {"command": "ls -la /srv/data"})]),
                    user([tool_result("toolu_1", tool_out)])]
        body = {"model": "claude-sonnet-4-5", "system": system, "messages": messages}
        n = self._count(dbx, body)
        chars = len(system) + len(prose) + len(tool_out) + len("Listing.") + len("ls -la /srv/data")
        assert n >= chars / 4, f"estimate {n} is below len/4 = {chars / 4:.0f}"
        assert dbx.fake.requests == []  # OpenAI-format upstreams have no count_tokens

    def test_databricks_estimate_counts_tools(self, dbx):
        body = base_req(messages=[user("hello")])
        tools = [{"name": f"tool_{i}", "description": "Does a thing with files and directories. " * 5,
                  "input_schema": BASH_SCHEMA} for i in range(10)]
        without, with_tools = self._count(dbx, body), self._count(dbx, body | {"tools": tools})
        assert with_tools - without >= len(json.dumps(tools)) / 4, (without, with_tools)

    def test_databricks_estimate_counts_images(self, dbx):
        png = tiny_png(400, 400)  # Anthropic bills w*h/750 ≈ 213 tokens
        without = self._count(dbx, base_req(messages=[user([text("what is this?")])]))
        with_img = self._count(dbx, base_req(messages=[user([text("what is this?"), image_b64(png)])]))
        assert with_img - without >= 400 * 400 / 750, (without, with_img)


# -- token counts that compaction can trust --


# The fake upstreams report as input the count of Claude's published BPE (CLAUDE_TOKENIZER) over every
# string they receive, plus what Anthropic adds (4 per message, a tool preamble, images by size), and
# cannot count on request: after ten answered requests lynkr's count_tokens must land within 5 % of
# what the upstream then reports, and never more than 2 % under it.

TC_PER_MESSAGE, TC_TOOLS, TC_IMAGE_MAX = 4, 300, 1600


@pytest.fixture(scope="module")
def claude_tokenizer():
    have = CLAUDE_TOKENIZER.is_file() and importlib.util.find_spec("tokenizers") is not None
    require_e2e(f"Claude's tokenizer ({CLAUDE_TOKENIZER}; python test_lynkr.py fetches it)", have)
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(CLAUDE_TOKENIZER))


def tc_image(data_b64: str) -> int:
    png = base64.b64decode(data_b64)
    w, h = struct.unpack(">II", png[16:24])
    return min(TC_IMAGE_MAX, math.ceil(w * h / 750))


def tc_truth(tok, body: dict) -> int:
    """What an upstream counts for a body it received: Anthropic Messages or OpenAI chat."""
    texts: list[str] = []
    images = 0

    def content(c: Any) -> None:
        nonlocal images
        if isinstance(c, str):
            texts.append(c)
            return
        for b in c or []:
            kind = b.get("type")
            if kind == "text":
                texts.append(b["text"])
            elif kind == "tool_use":
                texts.extend([b["name"], json.dumps(b["input"], ensure_ascii=False, separators=(",", ":"))])
            elif kind == "tool_result":
                content(b.get("content", ""))
            elif kind == "image":
                images += tc_image(b["source"]["data"])
            elif kind == "image_url":
                images += tc_image(b["image_url"]["url"].split(",", 1)[1])

    content(body.get("system"))
    for m in body["messages"]:
        content(m.get("content"))
        for call in m.get("tool_calls") or []:
            texts += [call["function"]["name"], call["function"]["arguments"]]
    for t in body.get("tools") or []:
        fn = t.get("function", t)
        texts += [fn["name"], fn.get("description", ""), json.dumps(fn.get("parameters", fn.get("input_schema")),
                                                                   ensure_ascii=False, separators=(",", ":"))]
    words = sum(len(e.ids) for e in tok.encode_batch([t for t in texts if t], add_special_tokens=False))
    return words + TC_PER_MESSAGE * len(body["messages"]) + TC_TOOLS * bool(body.get("tools")) + images


def tc_stdlib_texts() -> tuple[list[str], list[str]]:
    """(docstrings, source files) of the running Python's standard library: real prose and code."""
    import sysconfig

    lib = Path(sysconfig.get_paths()["stdlib"])
    docs, sources = [], []
    for path in sorted(lib.glob("*.py"))[:120]:
        src = path.read_text(encoding="utf-8", errors="replace")
        sources.append(src)
        docs += [d.strip() for d in re.findall(r'"""(.{200,3000}?)"""', src, re.S)]
    return docs, sources


def tc_corpus(seed: int, n: int) -> list[tuple[str, dict]]:
    """Varied Claude Code-like requests -- a system prompt and tools (Claude Code's alone are 10-30 K tokens;
    here ~2 K) -- with short chats, long chats, tool-heavy loops with code and JSON results, images, CJK."""
    rng = random.Random(seed)
    docs, sources = tc_stdlib_texts()
    tools = [{"name": f"tool_{i}", "description": rng.choice(docs)[:600], "input_schema": {
        "type": "object", "properties": {f"arg_{j}": {"type": rng.choice(["string", "integer", "boolean"]),
                                                      "description": rng.choice(docs)[:120]} for j in range(4)},
        "required": ["arg_0"]}} for i in range(12)]
    system = [text("You are a coding agent."), text(rng.choice(docs)[:3000]), text(rng.choice(docs)[:3000])]
    cjk = "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天数据库服务器文件代码函数变量配置问题"

    def code() -> str:
        lines = rng.choice(sources).splitlines()
        at = rng.randrange(max(1, len(lines) - 200))
        return "\n".join(f"{at + i + 1:6}\t{line}" for i, line in enumerate(lines[at:at + rng.randint(40, 200)]))

    def one(kind: str) -> dict:
        if kind == "short":
            return base_req(system=system, tools=tools[:4], messages=[user(rng.choice(docs)[:400])])
        if kind == "long":
            msgs = []
            for _ in range(rng.randint(8, 20)):
                msgs += [user(rng.choice(docs)), assistant([text(rng.choice(docs))])]
            return base_req(system=system, tools=tools[:4], messages=[*msgs, user("Summarise.")])
        if kind == "tools":
            msgs = [user("Fix the failing test.")]
            for i in range(rng.randint(3, 8)):
                result = code() if rng.random() < 0.6 else json.dumps(
                    {"files": [{"path": f"src/m{j}.py", "size": rng.randint(1, 99999)} for j in range(30)]}, indent=2)
                msgs += [assistant([text("Looking."), tool_use(f"toolu_{i:02d}", "tool_1", {"arg_0": f"src/m{i}.py"})]),
                         user([tool_result(f"toolu_{i:02d}", result)])]
            return base_req(system=system, tools=tools, messages=msgs)
        if kind == "image":
            size = rng.choice([(64, 64), (400, 300), (800, 600), (1600, 1200)])
            return base_req(system=system, tools=tools[:4],
                            messages=[user([text(rng.choice(docs)[:800]), image_b64(tiny_png(*size))])])
        return base_req(system=system, tools=tools[:4],
                        messages=[user("".join(rng.choice(cjk) for _ in range(rng.randint(800, 3000))))])

    kinds = ["short", "long", "tools", "image", "cjk"]
    return [(k, one(k)) for k in (kinds[i % len(kinds)] for i in range(n))]


def tc_stack(kind: str, tok, fake_factory, make_proxy, **env: str) -> Stack:
    """A provider that answers with the true count as its usage and cannot count on request."""
    fake = fake_factory()

    def answer(rec: Recorded) -> Reply:
        if rec.path.endswith("/count_tokens"):
            return json_reply({"error": {"code": "404", "message": "Resource not found"}}, 404)
        truth = tc_truth(tok, rec.body)
        if kind == "dbx":
            return json_reply(oai_completion("ok", usage={"prompt_tokens": truth, "completion_tokens": 1,
                                                          "total_tokens": truth + 1}))
        return json_reply(anth_message([text("ok")], model=rec.body["model"],
                                       usage={"input_tokens": truth, "output_tokens": 1}))

    fake.default = answer
    return Stack(fake, make_proxy((dbx_env if kind == "dbx" else az_env)(fake, **env)))


def tc_count(proxy: Proxy, body: dict) -> tuple[int, str]:
    r = proxy.post({k: v for k, v in body.items() if k not in ("max_tokens", "stream")}, path="/v1/messages/count_tokens")
    assert r.status == 200, r.data[:1000]
    return r.json()["input_tokens"], r.headers.get("x-lynkr-token-count", "")


def tc_answered(proxy: Proxy, n: int) -> dict:
    return wait_for(lambda: next((c for c in proxy.call("GET", "/health").json()["token_calibration"]
                                  if c["answers"] >= n), None), 10, f"{n} answers learned")


class TestTokenCalibration:
    @pytest.mark.parametrize("seed", [3, 7])
    @pytest.mark.parametrize("kind", ["dbx", "az"])
    def test_calibrated_counts_land_within_bounds(self, claude_tokenizer, new_dbx, new_az, make_proxy, kind, seed):
        """(bench/token_count_accuracy.py runs eight corpora in-process and reports the worst cases)"""
        st = tc_stack(kind, claude_tokenizer, new_dbx if kind == "dbx" else new_az, make_proxy)
        corpus = tc_corpus(seed, 30)
        before, how = tc_count(st.proxy, corpus[0][1])
        assert how == "estimated"
        for _kind, body in corpus[:10]:
            assert st.proxy.post(body).status == 200
        tc_answered(st.proxy, 10)
        ratios = []
        for name, body in corpus[10:]:
            count, how = tc_count(st.proxy, body)
            assert how == "calibrated"
            assert st.proxy.post(body).status == 200
            truth = tc_truth(claude_tokenizer, st.fake.last.body)  # what the upstream reported for it
            ratios.append((name, truth, round(count / truth, 4)))
        assert all(0.98 <= r <= 1.05 for _, _, r in ratios), [x for x in ratios if not 0.98 <= x[2] <= 1.05]
        # before any answer it erred high on the same request, not low
        assert before >= tc_truth(claude_tokenizer, st.fake.requests[0].body)

    def test_estimate_errs_high_before_any_answer(self, claude_tokenizer, new_dbx, make_proxy):
        st = tc_stack("dbx", claude_tokenizer, new_dbx, make_proxy)
        for name, body in tc_corpus(11, 10):
            count, how = tc_count(st.proxy, body)
            assert st.proxy.post(body).status == 200
            truth = tc_truth(claude_tokenizer, st.fake.last.body)
            assert how in ("estimated", "calibrated")
            if how == "estimated":
                assert truth <= count <= 1.4 * truth, (name, count, truth)

    def test_calibration_survives_a_restart(self, claude_tokenizer, new_dbx, tmp_path):
        fake = new_dbx()
        env = dbx_env(fake)
        st = tc_stack("dbx", claude_tokenizer, lambda: fake, lambda e: start_proxy(tmp_path, e))
        corpus = tc_corpus(3, 12)
        for _kind, body in corpus[:10]:
            assert st.proxy.post(body).status == 200
        learned = tc_answered(st.proxy, 10)
        count, how = tc_count(st.proxy, corpus[11][1])
        st.proxy.stop()
        again = start_proxy(tmp_path, env)
        try:
            assert [c for c in again.call("GET", "/health").json()["token_calibration"] if c["answers"] >= 10] == [learned]
            assert tc_count(again, corpus[11][1]) == (count, "calibrated")
        finally:
            again.stop()

    def test_exact_where_the_upstream_counts(self, az):
        az.fake.push(json_reply({"input_tokens": 4242}))
        r = az.proxy.post({"model": "claude-sonnet-4-5", "messages": [user("hi")]}, path="/v1/messages/count_tokens")
        assert r.json() == {"input_tokens": 4242} and r.headers["x-lynkr-token-count"] == "exact"

    def test_implausible_usage_teaches_nothing(self, claude_tokenizer, new_dbx, make_proxy):
        """A server reporting a constant (or 0) input count must not drag count_tokens down: compaction
        would never run."""
        fake = new_dbx()
        fake.default = lambda rec: json_reply(oai_completion("ok", usage={"prompt_tokens": 7, "completion_tokens": 1}))
        p = make_proxy(dbx_env(fake))
        corpus = tc_corpus(5, 12)
        for _kind, body in corpus[:10]:
            assert p.post(body).status == 200
        time.sleep(0.5)
        assert p.call("GET", "/health").json()["token_calibration"] == []
        count, how = tc_count(p, corpus[11][1])
        assert how == "estimated" and count >= tc_truth(claude_tokenizer, fake.last.body)


# == 9. Streaming ==

# -- OpenAI chunks -> Anthropic SSE --

USAGE = {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59, "prompt_tokens_details": {"cached_tokens": 20}}
STREAM_CASES = [
    ("text", oai_stream("The quick brown fox jumps."), [("text", "The quick brown fox jumps.")], "end_turn"),
    ("text-then-tool", oai_stream("Checking.", tools=[("call_1", "get_weather", {"city": "Paris"})], finish="tool_calls"),
     [("text", "Checking."), ("tool_use", "call_1", "get_weather", {"city": "Paris"})], "tool_use"),
    ("parallel-tools", oai_stream(None, tools=[("call_1", "get_weather", {"city": "Paris"}),
                                               ("call_2", "get_weather", {"city": "Rome", "unit": "C"})], finish="tool_calls"),
     [("tool_use", "call_1", "get_weather", {"city": "Paris"}),
      ("tool_use", "call_2", "get_weather", {"city": "Rome", "unit": "C"})], "tool_use"),
    ("empty-args-quirk", oai_stream(None, tools=[("call_1", "get_time", {})], finish="tool_calls", quirk=True),
     [("tool_use", "call_1", "get_time", {})], "tool_use"),
    ("leading-{}-quirk", oai_stream(None, tools=[("call_1", "get_weather", {"city": "Paris"}),
                                                 ("call_2", "get_weather", {"city": "Oslo"})], finish="tool_calls", quirk=True),
     [("tool_use", "call_1", "get_weather", {"city": "Paris"}), ("tool_use", "call_2", "get_weather", {"city": "Oslo"})],
     "tool_use"),
    ("first-chunk-without-choices", [oai_chunk(choices=False) | {"prompt_filter_results": []}, *oai_stream("Hi!")],
     [("text", "Hi!")], "end_turn"),
    ("role-chunk-with-empty-content", [oai_chunk({"role": "assistant", "content": ""}), *oai_stream("Hi!")[1:]],
     [("text", "Hi!")], "end_turn"),
    ("reasoning-list-deltas",
     [oai_chunk({"role": "assistant"}),
      oai_chunk({"content": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": "Think "}]}]}),
      oai_chunk({"content": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": "hard."}]}]}),
      oai_chunk({"content": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": "", "signature": "SiG=="}]}]}),
      oai_chunk({"content": [{"type": "text", "text": "Answer"}]}), oai_chunk({"content": " here."}),
      oai_chunk({}, finish="stop"), oai_chunk(choices=False, usage=USAGE)],
     [("thinking", "Think hard.", "SiG=="), ("text", "Answer here.")], "end_turn"),
    ("reasoning-content-deltas",
     [oai_chunk({"role": "assistant"}), oai_chunk({"reasoning_content": "Sky "}), oai_chunk({"reasoning_content": "is blue."}),
      oai_chunk({"content": "Blue."}), oai_chunk({}, finish="stop"), oai_chunk(choices=False, usage=USAGE)],
     [("thinking", "Sky is blue.", ""), ("text", "Blue.")], "end_turn"),
    ("usage-on-finish-chunk", [*oai_stream("Hi!")[:-2], oai_chunk({}, finish="stop", usage=USAGE)],
     [("text", "Hi!")], "end_turn"),
]


class TestStreaming:
    @pytest.mark.parametrize("chunks,blocks,stop", [c[1:] for c in STREAM_CASES], ids=[c[0] for c in STREAM_CASES])
    def test_stream_case(self, dbx, chunks, blocks, stop):
        dbx.fake.push(stream_reply(oai_sse(chunks)))
        r = dbx.proxy.post(base_req(model="claude-stream-model", stream=True, tools=[GET_WEATHER]))
        s = r.stream().ok()
        assert s["model"] == "claude-stream-model"
        assert block_summary(s["content"]) == blocks
        assert s["stop_reason"] == stop

    def test_usage_including_cache(self, dbx):
        dbx.fake.push(stream_reply(oai_sse(oai_stream("Hi!", usage=USAGE))))
        s = dbx.proxy.post(base_req(stream=True)).stream().ok()
        assert s["usage"]["output_tokens"] == 9
        assert s["usage"].get("input_tokens") == 30 and s["usage"].get("cache_read_input_tokens") == 20, s["usage"]

    def test_interleaved_parallel_fragments(self, dbx):
        chunks = oai_stream(None, tools=[("call_1", "get_weather", {"city": "Paris"}), ("call_2", "get_weather", {"city": "Rome"})],
                            finish="tool_calls", interleave=True)
        dbx.fake.push(stream_reply(oai_sse(chunks)))
        s = dbx.proxy.post(base_req(stream=True, tools=[GET_WEATHER])).stream(allow_interleave=True).ok()
        assert block_summary(s["content"]) == [("tool_use", "call_1", "get_weather", {"city": "Paris"}),
                                               ("tool_use", "call_2", "get_weather", {"city": "Rome"})]

    def test_stop_sequence_streamed(self, dbx):
        dbx.fake.push(stream_reply(oai_sse(oai_stream("The answer is 42 END"))))
        s = dbx.proxy.post(base_req(stream=True, stop_sequences=["END"])).stream().ok()
        assert (s["stop_reason"], s["stop_sequence"]) == ("stop_sequence", "END")

    FUZZ_TEXT = "Grüße aus Zürich — 你好, 世界 🌍🚀 ok"
    FUZZ_TOOLS: ClassVar[list] = [("call_a1", "get_weather", {"city": "Zürich", "note": "naïve café ☕"}),
                  ("call_b2", "get_weather", {"city": "東京"})]

    def _fuzz_once(self, stack: Stack, pieces_of: Callable[[bytes], list[bytes]], gap: float = 0.0) -> None:
        data = oai_sse(oai_stream(self.FUZZ_TEXT, tools=self.FUZZ_TOOLS, finish="tool_calls", quirk=True))
        stack.fake.push(stream_reply(data, pieces_of(data), gap=gap))
        s = stack.proxy.post(base_req(stream=True, tools=[GET_WEATHER])).stream().ok()
        assert block_summary(s["content"]) == [("text", self.FUZZ_TEXT)] + [("tool_use", *t) for t in self.FUZZ_TOOLS]
        assert s["stop_reason"] == "tool_use" and s["usage"]["output_tokens"] == 8

    def test_split_at_awkward_points(self, dbx):
        self._fuzz_once(dbx, lambda d: split_at(d, awkward_points(d)), gap=0.001)

    def test_split_every_byte(self, dbx):
        self._fuzz_once(dbx, lambda d: [d[i : i + 1] for i in range(len(d))])

    @pytest.mark.parametrize("seed", range(6))
    def test_split_seeded_random(self, dbx, seed):
        rnd = random.Random(seed)
        self._fuzz_once(dbx, lambda d: split_at(d, rnd.sample(range(1, len(d)), 40)), gap=0.001)

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(points=st.lists(st.integers(min_value=1, max_value=4000), max_size=30))
    def test_split_hypothesis(self, dbx_stack, points):
        dbx_stack.fake.reset()
        self._fuzz_once(dbx_stack, lambda d: split_at(d, [p % len(d) for p in points]))

    @pytest.mark.parametrize("ascii_upstream", [False, True], ids=["utf8", "ascii-escaped"])
    def test_text_tokens_with_escapes_survive(self, dbx, ascii_upstream):
        # Plain text chunks take lynkr's no-parse fast path: escapes must reach the client intact.
        tokens = ['say "hi"', "\\ back\\slash", "tab\tnew\nline", "ümlaut 🌍", "\u2028 sep", "</script>"]
        chunks = [oai_chunk({"role": "assistant", "content": tokens[0]})] + [oai_chunk({"content": t}) for t in tokens[1:]]
        chunks.append(oai_chunk(finish="stop", usage={"prompt_tokens": 3, "completion_tokens": 6}))
        data = b"".join(b"data: " + json.dumps(c, ensure_ascii=ascii_upstream).encode() + b"\n\n" for c in chunks)
        dbx.fake.push(stream_reply(data + b"data: [DONE]\n\n"))
        s = dbx.proxy.post(base_req(stream=True), headers={"x-session-id": f"escapes-{ascii_upstream}"}).stream().ok()
        assert block_summary(s["content"]) == [("text", "".join(tokens))]
        assert s["stop_reason"] == "end_turn"
        # the stored turn decodes the same literals (in bulk, when the block ends)
        stored = session_of(dbx.proxy, f"escapes-{ascii_upstream}")["turns"][-1]
        assert stored["content"] == [{"type": "text", "text": "".join(tokens)}], stored

    def test_text_fast_path_follows_changing_frames(self, dbx):
        # lynkr recognises a token chunk by the frame around its text (id, created, model...); frames that
        # change, text beside a tool call in one chunk, and a token with a raw control character all
        # take the full parse, and the answer comes out the same.
        chunks = [oai_chunk({"role": "assistant", "content": ""})]
        chunks += [oai_chunk({"content": w}) for w in ("one ", "two ", '"three" ')]
        later = [{**oai_chunk({"content": w}), "created": 1700000001} for w in ("four ", "five ")]
        mixed = oai_chunk({"content": "six", "tool_calls": [{"index": 0, "id": "call_f1", "type": "function",
                                                              "function": {"name": "get_weather", "arguments": '{"q": 1}'}}]})
        data = b"".join(b"data: " + json.dumps(c, separators=(",", ":")).encode() + b"\n\n" for c in chunks + later)
        data += b'data: ' + json.dumps(oai_chunk({"content": "tab\there "}), separators=(",", ":")).encode() + b"\n\n"
        data += b"data: " + json.dumps(mixed, separators=(",", ":")).encode() + b"\n\n"
        data += b"data: " + json.dumps(oai_chunk(finish="tool_calls"), separators=(",", ":")).encode() + b"\n\ndata: [DONE]\n\n"
        dbx.fake.push(stream_reply(data))
        s = dbx.proxy.post(base_req(stream=True, tools=[GET_WEATHER])).stream().ok()
        assert block_summary(s["content"]) == [("text", 'one two "three" four five tab\there six'),
                                               ("tool_use", "call_f1", "get_weather", {"q": 1})], s["content"]
        assert s["stop_reason"] == "tool_use"

    def test_finish_reason_beside_text_in_one_chunk(self, dbx):
        # Spaces after the colons: the text fast path must still see the finish reason.
        data = (b'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "cut sh"}, "finish_reason": null}]}\n\n'
                b'data: {"choices": [{"index": 0, "delta": {"content": "ort"}, "finish_reason": "length"}]}\n\n'
                b"data: [DONE]\n\n")
        dbx.fake.push(stream_reply(data))
        s = dbx.proxy.post(base_req(stream=True)).stream().ok()
        assert block_summary(s["content"]) == [("text", "cut short")]
        assert s["stop_reason"] == "max_tokens", s

    def test_incremental_not_buffered(self, dbx):
        chunks = oai_stream("first part, then a long pause, then the rest", pieces=4)
        dbx.fake.push(stream_reply(oai_sse(chunks), pauses={3: 1.5}))
        conn, resp = open_stream(dbx.proxy.port, base_req(stream=True))
        first_delta = None
        events = []
        for t, name, d in iter_events(resp):
            events.append((name, d))
            if name == "content_block_delta" and first_delta is None:
                first_delta = t
        conn.close()
        assembled = assemble(events).ok()
        assert first_delta is not None and first_delta < 1.0, f"first text delta only after {first_delta}s"
        assert assembled["content"][0]["text"] == "first part, then a long pause, then the rest"

    def test_pings_during_upstream_silence(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake, STREAM_PING_INTERVAL_MS=100))
        fake.push(stream_reply(oai_sse(oai_stream("before and after the pause", pieces=2)), pauses={2: 1.0}))
        conn, resp = open_stream(p.port, base_req(stream=True))
        timed = list(iter_events(resp))
        conn.close()
        s = assemble([(n, d) for _, n, d in timed]).ok()
        assert s["content"][0]["text"] == "before and after the pause"
        pings = [t for t, n, _ in timed if n == "ping"]
        assert len(pings) >= 4, f"{len(pings)} pings in a 1s silence at 100ms: {[(round(t, 2), n) for t, n, _ in timed]}"

    def test_no_pings_with_default_interval(self, dbx):
        dbx.fake.push(stream_reply(oai_sse(oai_stream("quick")), pauses={2: 0.5}))
        assert dbx.proxy.post(base_req(stream=True)).stream().pings == 0

    def test_upstream_disconnect_mid_stream(self, dbx):
        data = oai_sse(oai_stream("This will be cut off", pieces=4))
        dbx.fake.push(stream_reply(data, per_event(data)[:4], cut=True))
        s = dbx.proxy.post(base_req(stream=True), timeout=15).stream()
        assert s.error is not None and not s.complete, s.events
        assert s.error["type"] in ("api_error", "overloaded_error"), s.error

    def test_upstream_disconnect_mid_utf8(self, dbx):
        data = oai_sse(oai_stream("Zürich 🌍 is nice", pieces=2))
        cut = data.index("🌍".encode()) + 2
        dbx.fake.push(stream_reply(data, [data[:cut]], cut=True))
        s = dbx.proxy.post(base_req(stream=True), timeout=15).stream()
        assert s.error is not None and not s.complete

    def test_stream_without_done_but_finish(self, dbx):
        """Upstream closes cleanly after the usage chunk but never sends [DONE]: the message is complete."""
        dbx.fake.push(stream_reply(oai_sse(oai_stream("All here."), done=False)))
        s = dbx.proxy.post(base_req(stream=True)).stream()
        assert block_summary(s.content) == [("text", "All here.")]

    def test_stream_ending_before_finish_is_error(self, dbx):
        chunks = oai_stream("Half an ans")[:3]
        dbx.fake.push(stream_reply(oai_sse(chunks, done=False)))
        s = dbx.proxy.post(base_req(stream=True)).stream()
        assert s.error is not None and not s.complete, s.events[-3:]

    def test_json_reply_to_stream_request_still_streams(self, dbx):
        """An endpoint that ignores stream:true and answers JSON: the client still gets valid SSE."""
        dbx.fake.push(json_reply(oai_completion("Not streamed", tool_calls=[("call_1", "get_weather", {"city": "Bern"})],
                                                finish="tool_calls")))
        s = dbx.proxy.post(base_req(stream=True, tools=[GET_WEATHER])).stream().ok()
        assert block_summary(s["content"]) == [("text", "Not streamed"), ("tool_use", "call_1", "get_weather", {"city": "Bern"})]


# -- the OpenAI Responses stream (in-process) --


def rs_sse(events):
    out = []
    for seq, event in enumerate(events):
        event = {**event, "sequence_number": seq}
        out.append(f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n")
    return "".join(out).encode()


def rs_fc_item(index, call_id, name, arguments="", status="in_progress"):
    return {"type": "function_call", "id": f"fc_{index}", "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


RS_ARGS_A = '{"path": "src/ünï.py", "limit": 20}'
RS_ARGS_B = '{"pattern": "def \\\\w+\\"", "glob": "**/*.py"}'
RS_USAGE = {"input_tokens": 5000, "input_tokens_details": {"cached_tokens": 4096}, "output_tokens": 321,
         "output_tokens_details": {"reasoning_tokens": 200}, "total_tokens": 5321}


def rs_chunks(text, size):
    return [text[i:i + size] for i in range(0, len(text), size)]


def rs_stream(order="a_first"):
    """Reasoning summary (two parts) + text + two parallel function calls whose argument deltas interleave."""
    resp = {"id": "resp_9", "object": "response", "status": "in_progress", "model": "gpt-5", "output": [],
            "usage": None}
    rs_summary = [{"type": "summary_text", "text": "**Planning**\n\nI should look."},
                  {"type": "summary_text", "text": "Then grep 🔍 for defs."}]
    rs_done = {"type": "reasoning", "id": "rs_9", "summary": rs_summary, "encrypted_content": RS_ENC}
    text = "Let me check — two things at once. ✅"
    events = [{"type": "response.created", "response": resp}, {"type": "response.in_progress", "response": resp},
              {"type": "response.output_item.added", "output_index": 0,
               "item": {"type": "reasoning", "id": "rs_9", "summary": [], "encrypted_content": "partial"}}]
    for part, summary in enumerate(rs_summary):
        events.append({"type": "response.reasoning_summary_part.added", "item_id": "rs_9", "output_index": 0,
                       "summary_index": part, "part": {"type": "summary_text", "text": ""}})
        events += [{"type": "response.reasoning_summary_text.delta", "item_id": "rs_9", "output_index": 0,
                    "summary_index": part, "delta": d} for d in rs_chunks(summary["text"], 7)]
        events.append({"type": "response.reasoning_summary_text.done", "item_id": "rs_9", "output_index": 0,
                       "summary_index": part, "text": summary["text"]})
    events += [{"type": "response.output_item.done", "output_index": 0, "item": rs_done},
               {"type": "response.output_item.added", "output_index": 1,
                "item": {"type": "message", "id": "msg_9", "role": "assistant", "status": "in_progress",
                         "content": []}},
               {"type": "response.content_part.added", "item_id": "msg_9", "output_index": 1, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}]
    events += [{"type": "response.output_text.delta", "item_id": "msg_9", "output_index": 1, "content_index": 0,
                "delta": d, "logprobs": []} for d in rs_chunks(text, 5)]
    message_done = {"type": "message", "id": "msg_9", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}
    events += [{"type": "response.output_text.done", "item_id": "msg_9", "output_index": 1, "content_index": 0,
                "text": text, "logprobs": []},
               {"type": "response.output_item.done", "output_index": 1, "item": message_done},
               {"type": "response.output_item.added", "output_index": 2, "item": rs_fc_item(2, "call_A", "Read")},
               {"type": "response.output_item.added", "output_index": 3, "item": rs_fc_item(3, "call_B", "Grep")}]
    ends = {index: [{"type": "response.function_call_arguments.done", "item_id": f"fc_{index}", "output_index": index,
                     "name": name, "arguments": args},
                    {"type": "response.output_item.done", "output_index": index,
                     "item": rs_fc_item(index, call_id, name, args, "completed")}]
            for index, call_id, name, args in ((2, "call_A", "Read", RS_ARGS_A), (3, "call_B", "Grep", RS_ARGS_B))}
    a, b = rs_chunks(RS_ARGS_A, 4), rs_chunks(RS_ARGS_B, 3)
    for i in range(max(len(a), len(b))):  # interleaved argument deltas
        for index, pieces in ((2, a), (3, b)):
            if i < len(pieces):
                events.append({"type": "response.function_call_arguments.delta", "item_id": f"fc_{index}",
                               "output_index": index, "delta": pieces[i]})
        if order == "a_mid" and i == len(a) - 1:
            events += ends[2]  # A ends while B still streams: B goes live with what it has, then streams on
    events += {"a_first": ends[2] + ends[3], "b_first": ends[3] + ends[2], "a_mid": ends[3]}[order]
    output = [rs_done, message_done, rs_fc_item(2, "call_A", "Read", RS_ARGS_A, "completed"),
              rs_fc_item(3, "call_B", "Grep", RS_ARGS_B, "completed")]
    final_resp = {**resp, "status": "completed", "output": output, "usage": RS_USAGE}
    events.append({"type": "response.completed", "response": final_resp})
    return rs_sse(events), final_resp


RS_DELTA_FOR_BLOCK = {"text": {"text_delta"}, "thinking": {"thinking_delta", "signature_delta"},
                   "tool_use": {"input_json_delta"}}


def rs_check_sse(raw):
    """A small grammar checker for an Anthropic Messages stream; returns the message it describes."""
    parser = SSEParser()
    events = [(name, json.loads(data)) for name, data in parser.feed(raw) + parser.flush()]
    assert events and events[0][0] == "message_start", "message_start must come first"
    message = copy.deepcopy(events[0][1]["message"])
    assert message["content"] == [] and message["stop_reason"] is None and isinstance(message["usage"], dict)
    open_index, partial, signed, state = None, "", False, "blocks"
    for name, data in events[1:]:
        assert data["type"] == name and state != "stopped", f"{name} after message_stop"
        if name == "content_block_start":
            assert state == "blocks" and open_index is None and data["index"] == len(message["content"])
            block = data["content_block"]
            open_index, partial, signed = data["index"], "", False
            assert block["type"] in RS_DELTA_FOR_BLOCK and (block["type"] != "tool_use" or block["input"] == {})
            message["content"].append(copy.deepcopy(block))
        elif name == "content_block_delta":
            assert data["index"] == open_index, "delta outside its open block"
            block, delta = message["content"][open_index], data["delta"]
            assert delta["type"] in RS_DELTA_FOR_BLOCK[block["type"]] and not signed, "delta after the signature"
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"], signed = delta["signature"], True
            else:
                partial += delta["partial_json"]
        elif name == "content_block_stop":
            assert data["index"] == open_index
            if message["content"][open_index]["type"] == "tool_use":
                message["content"][open_index]["input"] = json.loads(partial)  # complete JSON or this fails
            open_index = None
        elif name == "message_delta":
            assert state == "blocks" and open_index is None
            assert all(isinstance(v, int) for v in data["usage"].values()) and "output_tokens" in data["usage"]
            message.update(data["delta"], usage=data["usage"])
            state = "delta"
        elif name == "message_stop":
            assert state == "delta", "message_stop without message_delta"
            state = "stopped"
        else:
            assert name == "ping", f"unexpected event {name}"
    assert state == "stopped"
    return message


def rs_decode(raw, pieces, model="claude-sonnet-4-5"):
    decoder = ResponsesStreamDecoder(model, "OpenAI")
    out = b"".join(decoder.feed(piece) for piece in pieces) + decoder.flush()
    return decoder, out


def rs_pieces(raw, seed):
    rng, at, pieces = random.Random(seed), 0, []
    while at < len(raw):
        size = rng.randint(1, 17)
        pieces.append(raw[at:at + size])
        at += size
    return pieces


@pytest.mark.parametrize("order", ["a_first", "b_first", "a_mid"])
@pytest.mark.parametrize("split", ["whole", "random0", "random1", "random2", "bytes"])
def test_stream_reasoning_text_and_interleaved_parallel_calls(order, split):
    raw, final_resp = rs_stream(order)
    pieces = {"whole": [raw], "bytes": [raw[i:i + 1] for i in range(len(raw))]}.get(split) \
        or rs_pieces(raw, int(split[-1]))
    decoder, out = rs_decode(raw, pieces)
    message = rs_check_sse(out)
    assert decoder.done and not decoder.failed and decoder.final == message
    kinds = [b["type"] for b in message["content"]]
    assert kinds == ["thinking", "text", "tool_use", "tool_use"]
    thinking, text, *tools = message["content"]
    assert thinking["thinking"] == "**Planning**\n\nI should look.\n\nThen grep 🔍 for defs."
    assert text["text"] == "Let me check — two things at once. ✅"
    by_id = {t["id"]: t for t in tools}
    assert by_id["call_A"]["name"] == "Read" and by_id["call_A"]["input"] == json.loads(RS_ARGS_A)
    assert by_id["call_B"]["name"] == "Grep" and by_id["call_B"]["input"] == json.loads(RS_ARGS_B)
    assert message["stop_reason"] == "tool_use" and message["stop_sequence"] is None
    assert message["usage"] == decoder.usage == {"input_tokens": 904, "output_tokens": 321,
                                                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4096}
    # the streamed message says what the same answer read whole says (tool order aside)
    whole = responses_to_anthropic(final_resp, "claude-sonnet-4-5")
    assert sorted(map(json.dumps, whole["content"])) == sorted(map(json.dumps, message["content"]))
    # and its thinking, sent back, is the reasoning item the stream finished with
    assert reasoning_item(thinking) == {"type": "reasoning", "id": "rs_9", "encrypted_content": RS_ENC,
                                        "summary": final_resp["output"][0]["summary"]}


def test_stream_first_call_streams_live_and_text_deltas_flow_at_once():
    raw, _ = rs_stream()
    decoder = ResponsesStreamDecoder("m", "OpenAI")
    parser = SSEParser()
    seen = []
    for piece in rs_chunks(raw, 64):
        seen += [(name, json.loads(data)) for name, data in parser.feed(decoder.feed(piece))]
        if any(e[1].get("delta", {}).get("type") == "text_delta" for e in seen):
            break
    assert seen[0][0] == "message_start" and not decoder.done  # text arrives before the stream ends
    out = rs_decode(raw, [raw])[1]
    deltas = [json.loads(d) for n, d in SSEParser().feed(out) if n == "content_block_delta"]
    live_a = [d["delta"]["partial_json"] for d in deltas if d["index"] == 2]
    assert len(live_a) > 3 and "".join(live_a) == RS_ARGS_A  # call A fragment by fragment, as it came
    raw, _ = rs_stream("a_mid")  # B is buffered behind A, then goes live and streams the rest
    deltas = [json.loads(d) for n, d in SSEParser().feed(rs_decode(raw, [raw])[1]) if n == "content_block_delta"]
    live_b = [d["delta"]["partial_json"] for d in deltas if d["index"] == 3]
    assert len(live_b) > 3 and "".join(live_b) == RS_ARGS_B and live_b[0] == RS_ARGS_B[:len(live_b[0])]


def test_stream_reasoning_without_summary_still_carries_its_item():
    events = [{"type": "response.created", "response": {"id": "r", "status": "in_progress", "output": []}},
              {"type": "response.output_item.added", "output_index": 0,
               "item": {"type": "reasoning", "id": "rs_2", "summary": []}},
              {"type": "response.output_item.done", "output_index": 0,
               "item": {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": RS_ENC}},
              {"type": "response.output_item.added", "output_index": 1,
               "item": {"type": "message", "id": "m", "role": "assistant", "content": []}},
              {"type": "response.output_text.delta", "output_index": 1, "content_index": 0, "delta": "Hi"},
              {"type": "response.incomplete", "response": {"status": "incomplete", "usage": RS_USAGE,
                                                           "incomplete_details": {"reason": "max_output_tokens"}}}]
    decoder, out = rs_decode(rs_sse(events), [rs_sse(events)])
    message = rs_check_sse(out)
    assert message == decoder.final and message["stop_reason"] == "max_tokens"
    assert message["content"][0]["thinking"] == "" and reasoning_item(message["content"][0]) == {
        "type": "reasoning", "id": "rs_2", "encrypted_content": RS_ENC, "summary": []}
    assert message["content"][1] == {"type": "text", "text": "Hi"}


def test_stream_call_never_announced_is_emitted_complete_at_its_done():
    events = [{"type": "response.created", "response": {"id": "r", "status": "in_progress", "output": []}},
              {"type": "response.function_call_arguments.delta", "output_index": 0, "item_id": "fc_0", "delta": '{"a":'},
              {"type": "response.function_call_arguments.delta", "output_index": 0, "item_id": "fc_0", "delta": "1}"},
              {"type": "response.output_item.done", "output_index": 0, "item": rs_fc_item(0, "call_Z", "T", '{"a":1}')},
              {"type": "response.completed", "response": {"status": "completed", "usage": RS_USAGE}}]
    decoder, out = rs_decode(rs_sse(events), [rs_sse(events)])
    message = rs_check_sse(out)
    assert message == decoder.final and message["stop_reason"] == "tool_use"
    assert message["content"] == [{"type": "tool_use", "id": "call_Z", "name": "T", "input": {"a": 1}}]


@pytest.mark.parametrize("code,status,error_type", [("rate_limit_exceeded", 429, "rate_limit_error"),
                                                     ("server_error", 500, "api_error"),
                                                     ("invalid_prompt", 400, "invalid_request_error"),
                                                     ("image_too_large", 400, "invalid_request_error"),
                                                     (None, 500, "api_error")])
def test_stream_failures_raise_with_mapped_status(code, status, error_type):
    start = {"type": "response.created", "response": {"id": "r", "status": "in_progress", "output": []}}
    failed = {"type": "response.failed", "response": {"id": "r", "status": "failed", "output": [],
                                                      "error": {"code": code, "message": "it broke"}}}
    error = {"type": "error", "code": code, "message": "it broke", "param": None}
    nested = {"type": "error", "error": {"type": "x", "code": code, "message": "it broke"}}
    for last in (failed, error, nested):
        decoder = ResponsesStreamDecoder("m", "OpenAI")
        assert decoder.feed(rs_sse([start])).startswith(b"event: message_start")
        with pytest.raises(_LynkrError) as info:
            decoder.feed(rs_sse([last]))
        assert (info.value.status, info.value.error_type) == (status, error_type)
        assert "it broke" in info.value.message and not decoder.done


def test_stream_cut_short_is_not_done_and_bad_json_raises():
    raw, _ = rs_stream()
    cut = raw[: raw.index(b"\n\n", len(raw) // 2) + 2]  # ends at an event boundary
    decoder, out = rs_decode(raw, [cut])
    assert out.startswith(b"event: message_start") and not decoder.done and decoder.final is None
    with pytest.raises(UpstreamUnavailable):  # ends mid-event: the pump sends `event: error` either way
        rs_decode(raw, [cut + b"data: {\"type\": \"response.output_text.delta"])
    with pytest.raises(UpstreamUnavailable):
        ResponsesStreamDecoder("m", "OpenAI").feed(b"data: {not json\n\n")


# -- Bedrock's event stream (in-process; botocore is the oracle) --


def encode_event_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream frame with string headers (type 7): the fake Bedrock's side of the wire."""
    raw = b"".join(bytes([len(n.encode())]) + n.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
                   for n, v in headers.items())
    return _aws_frame(raw, payload)


def _aws_frame(raw_headers: bytes, payload: bytes) -> bytes:
    prelude = struct.pack(">II", 16 + len(raw_headers) + len(payload), len(raw_headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + raw_headers + payload
    return message + struct.pack(">I", binascii.crc32(message))


def chunk_frame(event: dict) -> bytes:
    data = base64.b64encode(json.dumps(event).encode()).decode()
    return encode_event_frame({":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
                              json.dumps({"bytes": data, "p": "abcdefghijklmnopqrstuvwxyzABCDEFG"}).encode())


AWS_EVENTS = [
    {"type": "message_start", "message": {"id": "msg_bdrk_01", "type": "message", "role": "assistant",
                                          "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": None,
                                          "stop_sequence": None, "usage": {"input_tokens": 25, "output_tokens": 1,
                                                                           "cache_read_input_tokens": 0}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Looking — \"ü\"\n"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1,
     "content_block": {"type": "tool_use", "id": "toolu_bdrk_01", "name": "Read", "input": {}}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"file_path\""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ": \"/a.py\"}"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 41}},
    {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 25, "outputTokenCount": 41,
                                                                  "invocationLatency": 1234, "firstByteLatency": 321}},
]
AWS_STREAM = b"".join(chunk_frame(event) for event in AWS_EVENTS)


def _aws_decode(pieces) -> tuple[bytes, EventStreamDecoder]:
    decoder = EventStreamDecoder()
    out = b"".join(decoder.feed(piece) for piece in pieces) + decoder.flush()
    return out, decoder


def test_stream_becomes_anthropic_sse():
    out, decoder = _aws_decode([AWS_STREAM])
    blocks = out.decode().split("\n\n")
    assert blocks[-1] == "" and len(blocks) == len(AWS_EVENTS) + 1
    for block, event in zip(blocks, AWS_EVENTS):
        name, data = block.split("\n")
        assert name == f"event: {event['type']}"
        expected = {k: v for k, v in event.items() if k != "amazon-bedrock-invocationMetrics"}
        assert json.loads(data.removeprefix("data: ")) == expected
    assert blocks[2].endswith(json.dumps(AWS_EVENTS[2]))  # forwarded as sent, not re-encoded
    assert decoder.done and not decoder.failed and decoder.final is None
    assert decoder.usage == {"input_tokens": 25, "output_tokens": 41, "cache_read_input_tokens": 0}


def test_stream_split_at_every_byte_boundary():
    whole, _ = _aws_decode([AWS_STREAM])
    assert _aws_decode([AWS_STREAM[i : i + 1] for i in range(len(AWS_STREAM))])[0] == whole
    for cut in range(len(AWS_STREAM) + 1):
        out, decoder = _aws_decode([AWS_STREAM[:cut], AWS_STREAM[cut:]])
        assert out == whole and decoder.done, cut


def test_stream_output_is_emitted_as_soon_as_each_frame_completes():
    decoder = EventStreamDecoder()
    first = chunk_frame(AWS_EVENTS[0])
    assert decoder.feed(first[:-1]) == b""
    assert decoder.feed(first[-1:]).startswith(b"event: message_start\n")
    assert not decoder.done


def test_many_small_chunks_stay_linear():
    """10,000 text frames fed 7 bytes at a time: quadratic buffering would take far longer than this allows."""
    frame = chunk_frame(AWS_EVENTS[2])
    stream = frame * 10_000
    started = time.perf_counter()
    out, _ = _aws_decode([stream[i : i + 7] for i in range(0, len(stream), 7)])
    assert out.count(b"event: content_block_delta") == 10_000
    assert _aws_decode([stream])[0] == out  # and in one piece: consuming frames must not copy the rest each time
    assert time.perf_counter() - started < 5


def test_truncated_stream_is_not_done():
    out, decoder = _aws_decode([AWS_STREAM[:-5]])
    assert not decoder.done and out.count(b"event: ") == len(AWS_EVENTS) - 1


@pytest.mark.parametrize("offset,what", [(2, "prelude"), (9, "prelude"), (20, "message"), (-1, "message")])
def test_corrupted_crc_raises(offset, what):
    frame = bytearray(chunk_frame(AWS_EVENTS[0]))
    frame[offset] ^= 0x01
    with pytest.raises(UpstreamUnavailable, match=f"CRC check \\({what}\\)"):
        EventStreamDecoder().feed(bytes(frame))


def exception_frame(kind: str, message: str) -> bytes:
    return encode_event_frame({":exception-type": kind, ":content-type": "application/json",
                               ":message-type": "exception"}, json.dumps({"message": message}).encode())


@pytest.mark.parametrize("kind,status,error_type", [
    ("throttlingException", 429, "rate_limit_error"),
    ("serviceUnavailableException", 503, "api_error"),
    ("modelStreamErrorException", 500, "api_error"),
    ("internalServerException", 500, "api_error"),
    ("modelTimeoutException", 504, "timeout_error"),
    ("validationException", 400, "invalid_request_error"),
    ("someNewException", 500, "api_error"),
])
def test_exception_frames_raise_the_mapped_error(kind, status, error_type):
    decoder = EventStreamDecoder()
    assert decoder.feed(chunk_frame(AWS_EVENTS[0]))
    with pytest.raises(_LynkrError) as caught:
        decoder.feed(exception_frame(kind, "Too many tokens, please wait"))
    assert (caught.value.status, caught.value.error_type) == (status, error_type)
    assert caught.value.message == f"Amazon Bedrock stream failed ({kind}): Too many tokens, please wait"


def test_error_frame_uses_its_headers():
    long_message = "boom " * 60  # a string header over 255 bytes: its u16 length has two significant bytes
    frame = encode_event_frame({":message-type": "error", ":error-message": long_message,
                                ":error-code": "InternalFailure"}, b"")
    with pytest.raises(_LynkrError, match=rf"\(InternalFailure\): {long_message}$") as caught:
        EventStreamDecoder().feed(frame)
    assert caught.value.status == 500


def test_anthropic_error_event_inside_a_chunk_marks_failed():
    out, decoder = _aws_decode([chunk_frame({"type": "error", "error": {"type": "overloaded_error", "message": "x"}})])
    assert out.startswith(b"event: error\n") and decoder.failed and not decoder.done


def _botocore_messages(data: bytes):
    buffer = botocore.eventstream.EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


def test_headers_of_every_type_are_skipped_correctly():
    """Typed headers before the string ones: the decoder must step over each value's exact size."""
    typed = [(b"t", 0, b""), (b"f", 1, b""), (b"b", 2, b"\x05"), (b"s", 3, b"\x00\x07"), (b"i", 4, b"\x00" * 4),
             (b"l", 5, b"\x00" * 8), (b"by", 6, b"\x00\x03abc"), (b"ts", 8, b"\x00" * 8), (b"u", 9, b"\x11" * 16)]
    raw = b"".join(bytes([len(n)]) + n + bytes([k]) + v for n, k, v in typed)
    plain = chunk_frame(AWS_EVENTS[3])
    headers_length = struct.unpack(">I", plain[4:8])[0]
    frame = _aws_frame(raw + plain[12 : 12 + headers_length], plain[12 + headers_length : -4])
    assert EventStreamDecoder().feed(frame) == (
        b'event: content_block_stop\ndata: {"type": "content_block_stop", "index": 0}\n\n')
    [parsed] = _botocore_messages(frame)
    assert parsed.headers[":event-type"] == "chunk" and parsed.headers["t"] is True
    assert parsed.headers["by"] == b"abc" and parsed.headers["u"] == b"\x11" * 16


def test_botocore_parses_the_test_encoder_frames():
    messages = _botocore_messages(AWS_STREAM + exception_frame("throttlingException", "slow down"))
    assert len(messages) == len(AWS_EVENTS) + 1
    first = messages[0]
    assert first.headers == {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    assert json.loads(base64.b64decode(json.loads(first.payload)["bytes"])) == AWS_EVENTS[0]
    assert messages[-1].headers[":exception-type"] == "throttlingException"


# == 10. Providers ==

# -- helpers several of this section's sub-topics use --


def folded_expectation(body: dict) -> tuple[dict, list[str]]:
    """body as it should reach an Anthropic-format upstream (model aside), for cc_body-shaped requests
    (role:system entries first, then one user turn): the system entries' text blocks lead that user
    turn (issue 16: the top-level system stays as sent, so the upstream's prompt cache survives a
    changing context). Returns (expected body without model/system, the folded texts in order)."""
    exp = copy.deepcopy(body)
    folded = []
    lead = []
    for m in body["messages"]:
        if m["role"] == "system":
            blocks = [text(m["content"])] if isinstance(m["content"], str) and m["content"] else \
                [b for b in m["content"] if isinstance(m["content"], list)]
            folded += [b["text"] for b in blocks]
            lead += blocks
    rest = [m for m in exp["messages"] if m["role"] != "system"]
    first = rest[0]
    rest[0] = {**first, "content": lead + ([text(first["content"])] if isinstance(first["content"], str) else first["content"])}
    exp["messages"] = rest
    exp.pop("model")
    exp.pop("system", None)
    return exp, folded


REL_RETRY = {"UPSTREAM_MAX_RETRIES": "3", "CIRCUIT_BREAKER_FAILURES": "0"}
REL_DBX_CODES = {429: "REQUEST_LIMIT_EXCEEDED", 500: "INTERNAL_ERROR", 502: "BAD_GATEWAY",
                 503: "TEMPORARILY_UNAVAILABLE", 504: "TIMEOUT", 529: "OVERLOADED", 400: "BAD_REQUEST"}


def rel_upstream_error(provider: str, status: int, headers: tuple = (), hang: float = 0.0) -> Reply:
    """A failure in the provider's own wire format."""
    if provider == "dbx":
        r = dbx_error(status, REL_DBX_CODES.get(status, "ERROR"), f"scripted failure {status}", headers)
    else:
        r = json_reply(anth_error(status, rel_etype(status), f"scripted failure {status}"), status, headers)
    r.hang = hang
    return r


THINK = {"max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 2048}}

PV_GOOD_PROVIDERS = textwrap.dedent("""\
    [providers.good]
    kind = "openai"
    base_url = "http://127.0.0.1:9/v1"
    api_key = "sk-inline-key-for-bad-config-tests"
    """)


def pv_one_error_line(r: subprocess.CompletedProcess, fname: str, words: tuple) -> str:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2, f"exit {r.returncode}, stderr:\n{r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("lynkr: "), f"want one 'lynkr: ' line, got:\n{r.stderr}"
    assert fname in lines[0], f"the line should name the file {fname}: {lines[0]}"
    for w in words:
        assert w in lines[0], f"the line should name {w!r}: {lines[0]}"
    return lines[0]


def no_secrets(proxy: Proxy, *secrets: str) -> None:
    time.sleep(0.2)  # the last request's log line
    log = proxy.stderr
    for s in secrets:
        assert s and s not in log, f"{s!r} leaked into the log:\n{log[-3000:]}"


# -- upstream failures --

DBX_ERRORS = [
    (400, "BAD_REQUEST", 400, "invalid_request_error"),
    (401, "UNAUTHENTICATED", 401, "authentication_error"),
    (403, "PERMISSION_DENIED", 403, "permission_error"),
    (404, "RESOURCE_DOES_NOT_EXIST", 404, "not_found_error"),
    (413, "REQUEST_TOO_LARGE", 413, "request_too_large"),
    (429, "REQUEST_LIMIT_EXCEEDED", 429, "rate_limit_error"),
    (500, "INTERNAL_ERROR", 500, "api_error"),
    (502, "BAD_GATEWAY", 502, "api_error"),
    (503, "TEMPORARILY_UNAVAILABLE", 503, "api_error"),
    # Claude Code retries an overloaded_error/529 only 3 times in ~2 s but a 5xx api_error ~10 times over
    # ~3 minutes: lynkr turns an upstream 529 into a 503 api_error so sessions ride out overloads.
    (529, "OVERLOADED", 503, "api_error"),
]


class TestUpstreamFailures:
    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    @pytest.mark.parametrize("up,code,status,etype", DBX_ERRORS, ids=[str(e[0]) for e in DBX_ERRORS])
    def test_databricks_error_mapped(self, dbx, up, code, status, etype, stream):
        marker = f"upstream-says-{up}-{random.randrange(10**6)}"
        dbx.fake.push(dbx_error(up, code, marker, headers=(("retry-after", "7"),) if up == 429 else ()))
        r = dbx.proxy.post(base_req(stream=stream))
        assert r.status == status, r.data
        j = r.json()
        assert j["type"] == "error" and j["error"]["type"] == etype, j
        assert marker in j["error"]["message"] and "databricks" in j["error"]["message"].lower(), j
        assert REQ_ID.match(r.headers.get("request-id", ""))
        if up == 429:
            assert r.headers.get("retry-after") == "7"

    def test_other_4xx_by_class(self, dbx):
        dbx.fake.push(dbx_error(422, "INVALID_PARAMETER_VALUE", "bad thing"))
        r = dbx.proxy.post(base_req())
        assert 400 <= r.status < 500 and r.etype == "invalid_request_error", r.data

    def test_non_json_error_body(self, dbx):
        dbx.fake.push(Reply(502, b"<html><body>Bad Gateway</body></html>", (("content-type", "text/html"),)))
        r = dbx.proxy.post(base_req())
        assert r.status == 502 and r.etype == "api_error", r.data

    def test_invalid_json_success_body(self, dbx):
        dbx.fake.push(Reply(200, b"{not json", (("content-type", "application/json"),)))
        r = dbx.proxy.post(base_req())
        assert 500 <= r.status < 600 and r.etype == "api_error", r.data

    @pytest.mark.parametrize("provider", ["databricks", "azure"])
    def test_connection_refused_is_502(self, make_proxy, provider):
        dead = f"http://127.0.0.1:{free_port()}"
        extra = ({"DATABRICKS_API_BASE": dead, "DATABRICKS_API_KEY": DBX_KEY} if provider == "databricks" else
                 {"MODEL_PROVIDER": "azure-anthropic", "AZURE_ANTHROPIC_ENDPOINT": f"{dead}/anthropic/v1/messages",
                  "AZURE_ANTHROPIC_API_KEY": AZ_KEY})
        p = make_proxy(extra)
        for stream in (False, True):
            t0 = time.monotonic()
            r = p.post(base_req(stream=stream))
            assert time.monotonic() - t0 < 5
            assert r.status == 502 and r.etype == "api_error", r.data
            assert provider in r.emsg.lower(), r.emsg

    def test_hang_before_response_is_504(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake, UPSTREAM_READ_TIMEOUT_MS=500))
        for stream in (False, True):
            fake.push(json_reply(oai_completion("too late"), hang=4))
            t0 = time.monotonic()
            r = p.post(base_req(stream=stream))
            elapsed = time.monotonic() - t0
            assert r.status == 504 and r.etype == "timeout_error", r.data
            assert elapsed < 3, f"took {elapsed:.1f}s with a 0.5s read timeout"

    def test_hang_mid_stream_is_error_event(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake, UPSTREAM_READ_TIMEOUT_MS=500))
        fake.push(stream_reply(oai_sse(oai_stream("and then silence")), pauses={3: 4}))
        t0 = time.monotonic()
        s = p.post(base_req(stream=True)).stream()
        assert time.monotonic() - t0 < 3.5
        assert s.error is not None and not s.complete
        assert s.error["type"] in ("timeout_error", "api_error"), s.error

    def test_upstream_401_when_key_wrong(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake, DATABRICKS_API_KEY="dapi-wrong"))
        r = p.post(base_req())
        assert r.status == 401 and r.etype == "authentication_error" and "Invalid access token" in r.emsg


# -- retries before the first byte --


class TestUpstreamRetries:
    CASES: ClassVar[list] = [
        ("dbx", 429, 2, (("retry-after-ms", "400"),), True),
        ("dbx", 500, 2, (), False),
        ("dbx", 503, 1, (("retry-after", "1"),), True),
        ("dbx", 529, 2, (), True),
        ("az", 529, 1, (), False),
        ("az", 500, 2, (), True),
        ("az", 429, 1, (("retry-after-ms", "300"),), False),
    ]

    @pytest.mark.parametrize("provider,status,n,headers,stream", CASES,
                             ids=[f"{c[0]}-{c[1]}x{c[2]}-{'stream' if c[4] else 'json'}" for c in CASES])
    def test_fail_n_times_then_succeed(self, rel_stack, provider, status, n, headers, stream):
        st_ = rel_stack(provider, **REL_RETRY)
        st_.fake.push(*[rel_upstream_error(provider, status, headers) for _ in range(n)])
        before = rel_scrape(st_.proxy).get("lynkr_upstream_retries_total")
        r = st_.proxy.post(base_req(stream=stream, messages=[user("retry me")]))
        assert rel_answer(r, stream) == REL_TEXT[provider]  # one clean answer, no trace of the failures
        assert len(st_.fake.requests) == n + 1
        assert all(rec.body == st_.fake.requests[0].body for rec in st_.fake.requests), "retries must resend the same body"
        hinted = dict(headers)
        wait = float(hinted["retry-after-ms"]) / 1000 if "retry-after-ms" in hinted else float(hinted.get("retry-after", 0))
        gaps = [b - a for a, b in itertools.pairwise(st_.fake.stamps)]
        for k, gap in enumerate(gaps):  # backoff: >= 0.5 s * 2^k with jitter in [0.5, 1]; retry-after honoured
            assert gap >= max(0.25 * 2**k, wait) - 0.03, f"retry {k + 1} came {gap:.3f}s after the failure"
        assert rel_scrape(st_.proxy).get("lynkr_upstream_retries_total") - before == n
        logged = [o for o in st_.proxy.logs() if o.get("msg") == "retrying upstream"]
        assert [o.get("status") for o in logged] == [status] * n, logged

    @pytest.mark.parametrize("provider", ["dbx", "az"])
    def test_exhausted_529_reaches_client_as_retryable_503(self, rel_stack, provider):
        st_ = rel_stack(provider, UPSTREAM_MAX_RETRIES=1, CIRCUIT_BREAKER_FAILURES=0)
        st_.fake.push(rel_upstream_error(provider, 529), rel_upstream_error(provider, 529))
        r = st_.proxy.post(base_req(stream=True))
        assert r.status == 503 and r.etype == "api_error", r.data  # overloaded_error would cut Claude Code to 3 tries
        assert r.headers.get("x-should-retry") == "true"
        assert int(r.headers.get("retry-after", "0")) >= 1
        assert len(st_.fake.requests) == 2

    def test_exhausted_5xx_reaches_client(self, rel_stack):
        st_ = rel_stack("dbx", UPSTREAM_MAX_RETRIES=2, CIRCUIT_BREAKER_FAILURES=0)
        st_.fake.push(*[rel_upstream_error("dbx", 500) for _ in range(3)])
        r = st_.proxy.post(base_req())
        assert r.status == 500 and r.etype == "api_error" and "scripted failure 500" in r.emsg, r.data
        assert len(st_.fake.requests) == 3
        assert rel_scrape(st_.proxy).get("lynkr_upstream_retries_total", provider="databricks") == 2

    @pytest.mark.parametrize("status,header", [(429, ("retry-after", "5")), (503, ("retry-after-ms", "3000"))])
    def test_retry_after_over_cap_goes_to_the_client(self, rel_stack, status, header):
        st_ = rel_stack("dbx", UPSTREAM_RETRY_AFTER_MAX_MS=1000, **REL_RETRY)
        st_.fake.push(rel_upstream_error("dbx", status, (header,)))
        t0 = time.monotonic()
        r = st_.proxy.post(base_req())
        assert time.monotonic() - t0 < 1.0, "lynkr waited out a retry-after above UPSTREAM_RETRY_AFTER_MAX_MS"
        assert r.status == status and r.headers.get(header[0]) == header[1], (r.status, r.headers)
        assert len(st_.fake.requests) == 1

    def test_client_errors_are_not_retried(self, rel_stack):
        st_ = rel_stack("dbx", **REL_RETRY)
        for n, status in enumerate((400, 401, 404), 1):
            st_.fake.push(rel_upstream_error("dbx", status))
            r = st_.proxy.post(base_req(stream=n % 2 == 0))
            assert r.status == status and r.etype == rel_etype(status) and len(st_.fake.requests) == n, r.data
        assert rel_scrape(st_.proxy).get("lynkr_upstream_retries_total") == 0

    def test_hang_before_headers_is_retried(self, rel_stack):
        st_ = rel_stack("dbx", UPSTREAM_READ_TIMEOUT_MS=400, **REL_RETRY)
        st_.fake.push(json_reply(oai_completion("too late"), hang=3))
        r = st_.proxy.post(base_req())
        assert rel_answer(r, False) == REL_TEXT["dbx"]
        assert len(st_.fake.requests) == 2
        assert rel_scrape(st_.proxy).get("lynkr_upstream_retries_total") == 1

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_connection_refused_until_upstream_starts(self, new_dbx, make_proxy, stream):
        port = free_port()
        p = make_proxy({"DATABRICKS_API_BASE": f"http://127.0.0.1:{port}", "DATABRICKS_API_KEY": DBX_KEY,
                        "UPSTREAM_MAX_RETRIES": "4", "CIRCUIT_BREAKER_FAILURES": "0"})
        fakes: list[FakeHTTP] = []

        def bring_up() -> None:  # the upstream starts listening after lynkr's first attempt was refused
            p.wait_log(lambda o: o.get("msg") == "retrying upstream", 15, "a refused attempt")
            fakes.append(rel_move(new_dbx(), port))

        t = threading.Thread(target=bring_up)
        t.start()
        r = p.post(base_req(stream=stream))
        t.join(20)
        assert fakes, "lynkr never retried the refused connection"
        assert rel_answer(r, stream) == REL_TEXT["dbx"]
        assert len(fakes[0].requests) == 1
        first = next(o for o in p.logs() if o.get("msg") == "retrying upstream")
        assert first.get("status") == 502, first
        assert rel_scrape(p).get("lynkr_upstream_retries_total") >= 1


# -- a failure after the first streamed byte is never retried --


class TestMidStreamFailure:
    @staticmethod
    def scripted(provider: str, how: str) -> tuple[Reply, str]:
        """A stream that delivers some text, then is cut or goes silent; returns (reply, text delivered)."""
        if provider == "dbx":
            chunks = oai_stream("alpha beta gamma delta epsilon", pieces=5)  # role, 5 text pieces, finish, usage
            delivered = "".join(c["choices"][0]["delta"]["content"] for c in chunks[1:3])
            if how == "cut":
                return stream_reply(oai_sse(chunks[:3], done=False), cut=True), delivered
            return stream_reply(oai_sse(chunks), pauses={3: 4}), delivered
        events = anth_events(anth_message([text("alpha beta gamma")]))  # start, block start, "alp", "ha beta gamma", ...
        if how == "cut":
            return stream_reply(anth_sse(events[:3]), cut=True), "alp"
        return stream_reply(anth_sse(events), pauses={3: 4}), "alp"

    @pytest.mark.parametrize("how", ["cut", "hang"])
    @pytest.mark.parametrize("provider", ["dbx", "az"])
    def test_error_event_no_retry_no_duplicate_text(self, rel_stack, provider, how):
        st_ = rel_stack(provider, UPSTREAM_READ_TIMEOUT_MS=500, **REL_RETRY)
        reply, delivered = self.scripted(provider, how)
        st_.fake.push(reply)
        t0 = time.monotonic()
        s = st_.proxy.post(base_req(stream=True)).stream()
        assert time.monotonic() - t0 < 3.5
        assert s.error is not None and not s.complete, s.events[-3:]
        assert s.error["type"] in ("api_error", "timeout_error", "overloaded_error"), s.error
        got = "".join(b.get("text", "") for b in s.content if b["type"] == "text")
        assert got == delivered, f"client saw {got!r}; the upstream delivered {delivered!r} once"
        time.sleep(0.6)  # a (wrong) retry would arrive within the first backoff
        assert len(st_.fake.requests) == 1
        assert rel_scrape(st_.proxy).get("lynkr_upstream_retries_total") == 0


# -- circuit breaker --


class TestCircuitBreaker:
    @pytest.mark.parametrize("where", ["before-headers", "mid-stream"])
    def test_upstream_hang_times_out_and_counts(self, rel_stack, where):
        st_ = rel_stack("dbx", UPSTREAM_READ_TIMEOUT_MS=400, UPSTREAM_MAX_RETRIES=0, CIRCUIT_BREAKER_FAILURES=2,
                        CIRCUIT_BREAKER_RESET_MS=60000)
        for _ in range(2):
            if where == "before-headers":
                st_.fake.push(json_reply(oai_completion("too late"), hang=3))
            else:
                st_.fake.push(stream_reply(oai_sse(oai_stream("and then silence")), pauses={2: 3}))
            t0 = time.monotonic()
            r = st_.proxy.post(base_req(stream=where == "mid-stream"))
            assert time.monotonic() - t0 < 2.5
            if where == "before-headers":
                assert r.status == 504 and r.etype == "timeout_error", r.data
            else:
                s = r.stream()
                assert s.error is not None and s.error["type"] == "timeout_error", s.error
        t0 = time.monotonic()
        r = st_.proxy.post(base_req())
        assert time.monotonic() - t0 < 0.5
        assert r.status == 503 and r.etype == "api_error" and "circuit breaker" in r.emsg, (r.status, r.data)
        assert len(st_.fake.requests) == 2, "an open breaker must not contact the upstream"
        assert rel_scrape(st_.proxy).get("lynkr_circuit_breaker_state", provider="databricks") == 1

    def test_opens_short_circuits_probes_once_and_recovers(self, rel_stack):
        reset = 1.2
        st_ = rel_stack("dbx", UPSTREAM_MAX_RETRIES=0, CIRCUIT_BREAKER_FAILURES=3,
                        CIRCUIT_BREAKER_RESET_MS=int(reset * 1000))
        p, fake = st_.proxy, st_.fake

        def state() -> float:
            return rel_scrape(p).get("lynkr_circuit_breaker_state", provider="databricks")

        assert state() == 0 and p.call("GET", "/health/ready").status == 200
        fake.push(*[rel_upstream_error("dbx", 500) for _ in range(3)])
        assert [p.post(base_req()).status for _ in range(3)] == [500, 500, 500]
        assert state() == 1
        ready = p.call("GET", "/health/ready")
        assert ready.status == 503 and "breaker" in json.dumps(ready.json()), ready.data

        # open: answered at once, the upstream is not contacted
        for stream in (False, True):
            t0 = time.monotonic()
            r = p.post(base_req(stream=stream))
            assert time.monotonic() - t0 < 0.5
            assert r.status == 503 and r.etype == "api_error", r.data
            assert r.headers.get("x-should-retry") == "true"
            assert 1 <= int(r.headers.get("retry-after", "0")) <= math.ceil(reset), r.headers
            assert REQ_ID.match(r.headers.get("request-id", ""))
        assert len(fake.requests) == 3

        def half_open_round(probe: Reply, probe_status: int, after: float) -> None:
            time.sleep(reset + 0.1)
            n = len(fake.requests)
            fake.push(probe)
            with ThreadPoolExecutor(1) as ex:
                first = ex.submit(p.post, base_req(messages=[user("probe")]))
                wait_for(lambda: len(fake.requests) == n + 1, 5, "the probe to reach the upstream")
                assert state() == 2  # half-open while the probe is out
                others = [p.post(base_req(messages=[user(f"meanwhile {i}")]), timeout=5) for i in range(3)]
                assert [o.status for o in others] == [503] * 3, "only one probe may go through"
                assert first.result().status == probe_status
            assert len(fake.requests) == n + 1
            assert state() == after

        # a failed probe opens the breaker again ...
        half_open_round(rel_upstream_error("dbx", 500, hang=0.6), 500, 1)
        n = len(fake.requests)
        assert p.post(base_req()).status == 503 and len(fake.requests) == n
        # ... a successful one closes it
        half_open_round(json_reply(oai_completion("recovered"), hang=0.6), 200, 0)
        assert p.call("GET", "/health/ready").status == 200
        assert [rel_answer(p.post(base_req()), False) for _ in range(2)] == [REL_TEXT["dbx"]] * 2


# -- FALLBACK_PROVIDER --


class TestFailover:
    @pytest.fixture
    def pair(self, new_dbx, new_az, make_proxy):
        """pair(primary="dbx"|"az", **env) -> (proxy, primary fake, fallback fake)."""

        def make(primary: str = "dbx", **env: Any) -> tuple[Proxy, FakeHTTP, FakeHTTP]:
            dbx, az = rel_stamp(new_dbx()), rel_stamp(new_az())
            both = {**dbx_env(dbx), **az_env(az)}
            if primary == "dbx":
                both.pop("MODEL_PROVIDER")
                both.update(FALLBACK_PROVIDER="azure-anthropic", FALLBACK_MODEL_DEFAULT="claude-fallback-model")
            else:
                both.update(FALLBACK_PROVIDER="databricks", FALLBACK_MODEL_DEFAULT="databricks-fallback-endpoint")
            p = make_proxy({**both, **env})
            return (p, dbx, az) if primary == "dbx" else (p, az, dbx)

        return make

    @pytest.mark.parametrize("primary", ["dbx", "az"])
    def test_healthy_primary_answers_and_is_named(self, pair, primary):
        p, _first, second = pair(primary)
        r = p.post(base_req())
        assert rel_answer(r, False) == REL_TEXT[primary]
        assert r.headers.get("x-lynkr-provider") == ("databricks" if primary == "dbx" else "azure-anthropic")
        assert len(second.requests) == 0

    @pytest.mark.parametrize("primary,failure", [("dbx", 503), ("dbx", "refused"), ("az", 500), ("az", 529)])
    def test_primary_failure_answered_by_fallback(self, pair, primary, failure):
        env = {"DATABRICKS_API_BASE": f"http://127.0.0.1:{free_port()}"} if failure == "refused" else {}
        p, first, second = pair(primary, **env)
        fallback = "az" if primary == "dbx" else "dbx"
        for n, stream in enumerate((False, True), 1):
            if failure != "refused":
                first.push(rel_upstream_error(primary, failure))
            r = p.post(base_req(stream=stream))
            assert rel_answer(r, stream) == REL_TEXT[fallback]
            assert r.headers.get("x-lynkr-provider") == ("azure-anthropic" if fallback == "az" else "databricks")
            assert len(first.requests) == (0 if failure == "refused" else n) and len(second.requests) == n
            if fallback == "az":
                assert second.last.body["model"] == "claude-fallback-model"  # FALLBACK_MODEL_DEFAULT
            else:
                assert second.last.path == "/serving-endpoints/databricks-fallback-endpoint/invocations"
        m = rel_scrape(p)
        assert m.get("lynkr_upstream_failovers_total") == 2

    def test_open_breaker_goes_straight_to_fallback(self, pair):
        p, dbx, az = pair("dbx", CIRCUIT_BREAKER_FAILURES=1, CIRCUIT_BREAKER_RESET_MS=60000)
        dbx.push(rel_upstream_error("dbx", 500))
        assert p.post(base_req()).headers.get("x-lynkr-provider") == "azure-anthropic"
        for stream in (False, True):
            t0 = time.monotonic()
            r = p.post(base_req(stream=stream))
            assert rel_answer(r, stream) == REL_TEXT["az"]
            assert r.headers.get("x-lynkr-provider") == "azure-anthropic"
            assert time.monotonic() - t0 < 2
        assert len(dbx.requests) == 1, "the primary's breaker is open: it must not be contacted"
        assert len(az.requests) == 3
        m = rel_scrape(p)
        assert m.get("lynkr_circuit_breaker_state", provider="databricks") == 1
        assert m.get("lynkr_circuit_breaker_state", provider="azure-anthropic") == 0
        assert p.call("GET", "/health/ready").status == 200  # the fallback still serves

    def test_client_error_and_mid_stream_failure_are_not_failed_over(self, pair):
        p, dbx, az = pair("dbx")
        for status in (400, 401, 404):
            dbx.push(rel_upstream_error("dbx", status))
            r = p.post(base_req())
            assert r.status == status and r.etype == rel_etype(status), r.data
            assert r.headers.get("x-lynkr-provider") == "databricks"
        assert len(az.requests) == 0
        reply, delivered = TestMidStreamFailure.scripted("dbx", "cut")
        dbx.push(reply)
        s = p.post(base_req(stream=True)).stream()
        assert s.error is not None and "".join(b.get("text", "") for b in s.content) == delivered
        assert len(az.requests) == 0

    def test_both_failing_gives_an_anthropic_error(self, pair):
        p, dbx, az = pair("dbx")
        dbx.push(rel_upstream_error("dbx", 503))
        az.push(rel_upstream_error("az", 500))
        r = p.post(base_req())
        assert r.status >= 500 and r.json()["type"] == "error" and r.etype == "api_error", r.data
        assert len(dbx.requests) == 1 and len(az.requests) == 1

    @pytest.mark.parametrize("extra,names", [
        ({"DATABRICKS_API_BASE": "http://127.0.0.1:9", "DATABRICKS_API_KEY": DBX_KEY,
          "FALLBACK_PROVIDER": "azure-anthropic"}, ["AZURE_ANTHROPIC_ENDPOINT", "AZURE_ANTHROPIC_API_KEY"]),
        ({"MODEL_PROVIDER": "azure-anthropic", "AZURE_ANTHROPIC_ENDPOINT": "http://127.0.0.1:9/anthropic/v1/messages",
          "AZURE_ANTHROPIC_API_KEY": AZ_KEY, "FALLBACK_PROVIDER": "databricks"},
         ["DATABRICKS_API_BASE", "DATABRICKS_API_KEY"]),
        ({"DATABRICKS_API_BASE": "http://127.0.0.1:9", "DATABRICKS_API_KEY": DBX_KEY,
          "FALLBACK_PROVIDER": "azure-anthropic", "AZURE_ANTHROPIC_ENDPOINT": "http://127.0.0.1:9/anthropic"},
         ["AZURE_ANTHROPIC_API_KEY"]),
        ({"DATABRICKS_API_BASE": "http://127.0.0.1:9", "DATABRICKS_API_KEY": DBX_KEY,
          "FALLBACK_PROVIDER": "openai-somewhere"}, ["FALLBACK_PROVIDER"]),
    ], ids=["azure-missing", "databricks-missing", "azure-key-missing", "unknown"])
    def test_fallback_without_its_settings_exits_2(self, tmp_path, extra, names):
        r = run_lynkr(tmp_path, extra)
        assert r.returncode == 2, (r.returncode, r.stderr[-1000:])
        for name in names:
            assert name in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


# -- Azure (Anthropic pass-through) --


class TestAzure:
    def test_claude_code_body_forwarded(self, az):
        body = cc_body(stream=False)
        body["messages"].insert(0, {"role": "system", "content": []})  # CC sometimes sends an empty one
        body |= {"future_field": {"x": [1, 2]}, "service_tier": "auto"}
        r = az.proxy.post(body, path="/v1/messages?beta=true", headers=CC_HEADERS)
        assert r.status == 200, r.data
        sent = az.fake.last
        assert sent.path == "/anthropic/v1/messages"
        assert sent.headers["x-api-key"] == AZ_KEY and sent.headers["api-key"] == AZ_KEY
        assert sent.headers["anthropic-version"] == "2023-06-01"
        assert sent.headers["anthropic-beta"] == CC_BETAS
        assert not any(CLIENT_KEY in v for v in sent.headers.values())
        got = sent.body
        assert got["model"] == "claude-sonnet-4-5"  # MODEL_DEFAULT for azure
        exp, folded = folded_expectation(body)
        assert got["system"] == body["system"]  # billing header kept: Anthropic strips it itself
        assert [b["text"] for b in got["messages"][0]["content"][:len(folded)]] == folded
        assert 32000 <= got["max_tokens"] <= 128000  # may be capped at the deployment's output limit
        assert {k: v for k, v in got.items() if k not in ("model", "system", "max_tokens")} == \
            {k: v for k, v in exp.items() if k != "max_tokens"}

    def test_health(self, az):
        h = az.proxy.call("GET", "/health").json()
        assert h["provider"] == "azure-anthropic" and h["configured"] is True

    def test_response_json_passed_through(self, az):
        up = anth_message([{"type": "thinking", "thinking": "hm", "signature": "sig"}, text("Done."),
                           tool_use("toolu_01X", "get_weather", {"city": "Paris"})], stop_reason="tool_use")
        up["future_response_field"] = {"kept": True}
        az.fake.push(json_reply(up))
        r = az.proxy.post(base_req(tools=[GET_WEATHER]))
        assert r.status == 200
        assert {k: v for k, v in r.json().items() if k != "model"} == {k: v for k, v in up.items() if k != "model"}
        assert REQ_ID.match(r.headers["request-id"])

    def test_model_map_and_clamp(self, new_az, make_proxy):
        fake = new_az()
        p = make_proxy(az_env(fake, MODEL_MAP="claude-*haiku*=deploy-haiku,claude-*=deploy-main",
                              MODEL_MAX_TOKENS="*=16000", MODEL_DEFAULT="deploy-default"))
        for model, deploy in (("claude-haiku-4-5", "deploy-haiku"), ("claude-opus-5-5", "deploy-main"),
                              ("gpt-4o", "deploy-default")):
            assert p.post(base_req(model=model, max_tokens=64000)).status == 200
            assert (fake.last.body["model"], fake.last.body["max_tokens"]) == (deploy, 16000)
        body = base_req()
        del body["max_tokens"]
        assert p.post(body).status == 200 and fake.last.body["max_tokens"] == 4096

    def test_endpoint_as_base_url(self, new_az, make_proxy):
        fake = new_az()
        p = make_proxy(az_env(fake, AZURE_ANTHROPIC_ENDPOINT=f"{fake.url}/anthropic"))
        assert p.post(base_req()).status == 200
        assert fake.last.path == "/anthropic/v1/messages"

    def test_version_header(self, az):
        assert az.proxy.post(base_req(), headers={"anthropic-version": None}).status == 200
        assert az.fake.last.headers["anthropic-version"] == "2023-06-01"
        assert az.proxy.post(base_req(), headers={"anthropic-version": "2026-10-21"}).status == 200
        assert az.fake.last.headers["anthropic-version"] == "2026-10-21"

    def test_azure_version_setting(self, new_az, make_proxy):
        fake = new_az()
        p = make_proxy(az_env(fake, AZURE_ANTHROPIC_VERSION="2025-01-01"))
        assert p.post(base_req(), headers={"anthropic-version": None}).status == 200
        assert fake.last.headers["anthropic-version"] == "2025-01-01"

    @pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
    def test_sse_reframed_event_by_event(self, az, crlf):
        msg = anth_message([{"type": "thinking", "thinking": "Let me think", "signature": "EqSig=="},
                            text("Grüße 🌍, running it."), tool_use("toolu_01A", "Bash", {"command": "echo hi"})],
                           stop_reason="tool_use")
        up_events = anth_events(msg)
        up_events.insert(3, ("future_event_type", {"type": "future_event_type", "x": 1}))
        data = anth_sse(up_events, crlf=crlf)
        az.fake.push(stream_reply(data, split_at(data, awkward_points(data))))
        r = az.proxy.post(base_req(stream=True))
        s = r.stream().ok()
        got = [(e, d) for e, d in r.events() if e != "ping"]
        assert got == [(e, d) for e, d in up_events if e != "ping"]
        assert block_summary(s["content"]) == block_summary(msg["content"])

    @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(points=st.lists(st.integers(min_value=1, max_value=3000), max_size=25), crlf=st.booleans())
    def test_sse_split_hypothesis(self, az_stack, points, crlf):
        az_stack.fake.reset()
        msg = anth_message([text("Zürich 東京 🚀"), tool_use("toolu_01B", "get_weather", {"city": "東京"})],
                           stop_reason="tool_use")
        data = anth_sse(anth_events(msg), crlf=crlf)
        az_stack.fake.push(stream_reply(data, split_at(data, [p % len(data) for p in points])))
        s = az_stack.proxy.post(base_req(stream=True)).stream().ok()
        assert block_summary(s["content"]) == block_summary(msg["content"])

    def test_sse_incremental(self, az):
        data = anth_sse(anth_events(anth_message([text("streamed promptly")])))
        az.fake.push(stream_reply(data, pauses={3: 1.5}))
        conn, resp = open_stream(az.proxy.port, base_req(stream=True))
        timed = list(iter_events(resp))
        conn.close()
        first = next(t for t, n, _ in timed if n == "content_block_delta")
        assert first < 1.0, f"first delta only after {first:.2f}s"
        assemble([(n, d) for _, n, d in timed]).ok()

    def test_ping_injected_on_silence(self, new_az, make_proxy):
        fake = new_az()
        p = make_proxy(az_env(fake, STREAM_PING_INTERVAL_MS=100))
        events = [e for e in anth_events(anth_message()) if e[0] != "ping"]
        fake.push(stream_reply(anth_sse(events), pauses={2: 1.0}))
        s = p.post(base_req(stream=True)).stream()
        s.ok()
        assert s.pings >= 4, s.events

    def test_mid_stream_cut(self, az):
        data = anth_sse(anth_events(anth_message([text("this is cut off")])))
        az.fake.push(stream_reply(data, per_event(data)[:3], cut=True))
        s = az.proxy.post(base_req(stream=True), timeout=15).stream()
        assert s.error is not None and not s.complete

    def test_upstream_error_event_forwarded(self, az):
        events = anth_events(anth_message())[:3] + [("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                                         "message": "Overloaded"}})]
        az.fake.push(stream_reply(anth_sse(events)))
        s = az.proxy.post(base_req(stream=True)).stream()
        assert s.error == {"type": "overloaded_error", "message": "Overloaded"} and not s.complete

    AZ_ERRORS: ClassVar[list] = [
        (400, anth_error(400, "invalid_request_error", "messages.1.content.0.tool_use.id: String should match pattern"), ()),
        (400, {"type": "error", "error": {"type": "invalid_request_error", "message": "System messages not supported",
                                          "details": {"error_code": "mid_conversation_system_not_supported"}}}, ()),
        (401, anth_error(401, "authentication_error", "invalid x-api-key"), ()),
        (429, anth_error(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
         (("retry-after", "13"),)),
        (500, anth_error(500, "api_error", "Internal server error"), ()),
    ]

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    @pytest.mark.parametrize("status,body,headers", AZ_ERRORS, ids=[f"{e[0]}-{i}" for i, e in enumerate(AZ_ERRORS)])
    def test_errors_passed_through_unchanged(self, az, status, body, headers, stream):
        az.fake.push(json_reply(body, status, headers))
        r = az.proxy.post(base_req(stream=stream))
        assert r.status == status
        assert r.json() == body
        for k, v in headers:
            if k == "retry-after":
                assert r.headers.get(k) == v

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_gateway_error_bodies_become_anthropic_shaped(self, az, stream):
        """Azure's own gateway errors (not Anthropic's) reach the client as Anthropic errors, same status."""
        az.fake.push(json_reply({"error": {"code": "DeploymentNotFound",
                                           "message": "The API deployment for this resource does not exist."}}, 404))
        r = az.proxy.post(base_req(stream=stream))
        body = r.json()
        assert r.status == 404 and body["type"] == "error" and body["error"]["type"] == "not_found_error", body
        assert "The API deployment for this resource does not exist." in body["error"]["message"]

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_overloaded_becomes_retryable_503(self, az, stream):
        # The one exception to pass-through: a 529 would cut Claude Code's retry budget to ~2 s.
        az.fake.push(json_reply(anth_error(529, "overloaded_error", "Overloaded"), 529))
        r = az.proxy.post(base_req(stream=stream))
        assert r.status == 503
        assert r.etype == "api_error"
        assert "Overloaded" in r.emsg
        assert r.headers.get("x-should-retry") == "true"
        assert int(r.headers.get("retry-after", "0")) >= 1


# -- Databricks with DATABRICKS_API_FORMAT=anthropic --


class TestDatabricksAnthropicFormat:
    @pytest.fixture
    def gw(self, new_dbx, make_proxy) -> Stack:
        fake = new_dbx()
        return Stack(fake, make_proxy(dbx_env(fake, DATABRICKS_API_FORMAT="anthropic",
                                              MODEL_MAP="claude-*haiku*=databricks-claude-haiku-4-5")))

    def test_forwarded_to_ai_gateway(self, gw):
        body = cc_body(stream=True)
        s = gw.proxy.post(body, path="/v1/messages?beta=true", headers=CC_HEADERS).stream().ok()
        sent = gw.fake.last
        assert sent.path == "/ai-gateway/anthropic/v1/messages"
        assert sent.headers["authorization"] == f"Bearer {DBX_KEY}"
        assert sent.headers.get("anthropic-beta") == CC_BETAS
        assert not any(CLIENT_KEY in v for v in sent.headers.values())
        assert sent.body["model"] == "databricks-claude-sonnet-4-5"
        exp, folded = folded_expectation(body)
        assert sent.body["system"] == body["system"]
        assert sent.body["messages"] == exp["messages"] and sent.body["tools"] == body["tools"]
        assert block_summary(s["content"]) == [("text", "Hello from the Databricks AI gateway")]

    def test_model_mapped(self, gw):
        assert gw.proxy.post(base_req(model="claude-haiku-4-5")).status == 200
        assert gw.fake.last.body["model"] == "databricks-claude-haiku-4-5"

    def test_count_tokens_forwarded(self, gw):
        gw.fake.push(json_reply({"input_tokens": 31337}))
        r = gw.proxy.post(base_req(), path="/v1/messages/count_tokens")
        assert r.json() == {"input_tokens": 31337}
        assert gw.fake.last.path == "/ai-gateway/anthropic/v1/messages/count_tokens"

    def test_count_tokens_404_falls_back_to_estimate(self, gw):
        gw.fake.push(dbx_error(404, "ENDPOINT_NOT_FOUND", "no count_tokens here"))
        r = gw.proxy.post(base_req(messages=[user("word " * 400)]), path="/v1/messages/count_tokens")
        # Claude's tokenizer reads "word " as one token: 400, and an estimate with no sample errs high
        assert r.status == 200 and r.json()["input_tokens"] >= 400 and r.headers["x-lynkr-token-count"] == "estimated"


# -- presets configured by env vars alone --

PV_ANTHROPIC_ONLY = ("system", "stop_sequences", "thinking", "top_k", "context_management", "output_config",
                     "anthropic_version", "anthropic_beta")


def pv_check_openai_body(b: dict, model: str, stream: bool) -> None:
    assert b.get("model") == model, b.get("model")
    assert not set(PV_ANTHROPIC_ONLY) & set(b), f"Anthropic-only fields forwarded: {set(PV_ANTHROPIC_ONLY) & set(b)}"
    if stream:
        assert b.get("stream") is True and dig(b, "stream_options.include_usage") is True, \
            {k: b.get(k) for k in ("stream", "stream_options")}
    else:
        assert not b.get("stream"), b.get("stream")
    assert b["messages"][0]["role"] in ("system", "developer", "user"), b["messages"][0]
    names = [dig(t, "function.name") for t in b.get("tools") or []]
    assert "Bash" in names, names


def pv_tool_turn(wire: str, calls: list[tuple[str, str, dict]], words: str = "Let me look.") -> Callable:
    def respond(rec: Recorded) -> Reply:
        if wire == "anthropic":
            return pv_anth_reply(rec, [text(words)] + [tool_use(i, n, a) for i, n, a in calls], "tool_use")
        return pv_oai_reply(rec, words, tools=calls, finish="tool_calls")

    return respond


def pv_text_turn(wire: str, words: str) -> Callable:
    def respond(rec: Recorded) -> Reply:
        return pv_anth_reply(rec, [text(words)]) if wire == "anthropic" else pv_oai_reply(rec, words)

    return respond


class TestPresets:
    """Each preset from env vars alone: URL, auth, model, body shape, answer, headers, usage, tools."""

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    @pytest.mark.parametrize("case", list(PV_CASES))
    def test_claude_code_turn(self, pv_stacks, case, stream):
        c = PV_CASES[case]
        st_ = pv_stacks(case)
        body = cc_body(stream=stream)
        r = st_.proxy.post(body, path="/v1/messages?beta=true", headers=CC_HEADERS)
        assert r.status == 200, pv_diag(r, st_.fake, proxy=st_.proxy)
        msg = pv_answer(r, stream)
        assert pv_text(msg) == st_.fake.hello and msg["stop_reason"] == "end_turn", msg
        assert len(st_.fake.requests) == 1
        rec = st_.fake.last
        assert rec.path == c.path, rec.target
        q = urllib.parse.parse_qs(rec.query)
        for k, v in c.query.items():
            assert q.get(k) == [v], rec.target
        if c.auth:
            assert rec.headers.get(c.auth[0]) == c.auth[1], rec.headers
        model = c.model or body["model"]
        if c.wire == "openai":
            pv_check_openai_body(rec.body, model, stream)
            if case == "openrouter":  # cache_control is kept for OpenRouter (and only there, among these)
                assert _has_key(rec.body["messages"], "cache_control"), rec.body["messages"]
            assert msg["usage"]["input_tokens"] == 200 and msg["usage"]["output_tokens"] == 34, msg["usage"]
            assert msg["usage"].get("cache_read_input_tokens") == 1000, msg["usage"]
        else:
            assert rec.body["model"] == model and rec.headers.get("anthropic-version")
            assert dig(msg, "usage.output_tokens") == 34 and dig(msg, "usage.cache_read_input_tokens") == 1000
        pv_no_leak(st_.fake)
        pv_headers(r, c.provider, model, "default")

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    @pytest.mark.parametrize("case", list(PV_CASES))
    def test_tool_call_round_trip(self, pv_stacks, case, stream):
        c = PV_CASES[case]
        st_ = pv_stacks(case)
        args = {"command": "ls -la /work/project", "description": "List files ✓"}
        st_.fake.push(pv_tool_turn(c.wire, [("call_pv_1" if c.wire == "openai" else "toolu_pv_1", "Bash", args)]),
                      pv_text_turn(c.wire, "Two files: a.txt and b.txt ✓"))
        body = cc_body(stream=stream)
        r = st_.proxy.post(body, path="/v1/messages?beta=true", headers=CC_HEADERS)
        assert r.status == 200, pv_diag(r, st_.fake, proxy=st_.proxy)
        first = pv_answer(r, stream)
        assert first["stop_reason"] == "tool_use", first
        summary = block_summary(first["content"])
        assert [s[0] for s in summary] == ["text", "tool_use"] and summary[0][1] == "Let me look.", summary
        call_ = first["content"][1]
        assert call_["name"] == "Bash" and call_["input"] == args and TOOL_ID.match(call_["id"]), call_
        if stream:
            kinds = [d["delta"]["type"] for e, d in r.events() if e == "content_block_delta" and d["index"] == 1]
            assert kinds and set(kinds) == {"input_json_delta"}, kinds
        body2 = cc_body(stream=stream, messages=[
            *body["messages"],
            assistant(first["content"]),
            user([tool_result(call_["id"], "a.txt\nb.txt"), text("thanks")]),
        ])
        r2 = st_.proxy.post(body2, path="/v1/messages?beta=true", headers=CC_HEADERS)
        assert r2.status == 200, pv_diag(r2, st_.fake, proxy=st_.proxy)
        second = pv_answer(r2, stream)
        assert pv_text(second) == "Two files: a.txt and b.txt ✓" and second["stop_reason"] == "end_turn", second
        assert len(st_.fake.requests) == 2
        sent = st_.fake.last.body["messages"]
        if c.wire == "openai":
            asst = [m for m in sent if m["role"] == "assistant" and m.get("tool_calls")]
            assert len(asst) == 1 and len(asst[0]["tool_calls"]) == 1, sent
            tc = asst[0]["tool_calls"][0]
            assert tc["function"]["name"] == "Bash" and json.loads(tc["function"]["arguments"]) == args, tc
            tools_msgs = [m for m in sent if m["role"] == "tool"]
            assert [m["tool_call_id"] for m in tools_msgs] == [tc["id"]], sent
            assert "a.txt\nb.txt" in tools_msgs[0]["content"]
        else:
            blocks = [b for m in sent for b in (m["content"] if isinstance(m["content"], list) else [])]
            assert any(b.get("type") == "tool_use" and b.get("input") == args for b in blocks), sent
            assert any(b.get("type") == "tool_result" and b.get("tool_use_id") == call_["id"] for b in blocks), sent
        pv_no_leak(st_.fake)

    def test_minimal_request_gets_route_headers(self, pv_stacks):
        st_ = pv_stacks("ollama")
        r = st_.proxy.post(base_req(model="claude-sonnet-4-5"))
        assert pv_text(pv_answer(r, False)) == st_.fake.hello
        pv_headers(r, "ollama", "qwen2.5-coder:7b", "default")

    def test_anthropic_preset_count_tokens(self, pv_stacks):
        st_ = pv_stacks("anthropic")
        r = st_.proxy.post({"model": "claude-sonnet-4-5", "messages": [user("hello there")]},
                           path="/v1/messages/count_tokens")
        assert r.status == 200 and r.json() == {"input_tokens": 321}, pv_diag(r, st_.fake)
        assert st_.fake.last.path == "/v1/messages/count_tokens"
        assert st_.fake.last.headers.get("x-api-key") == ANTH_KEY
        pv_no_leak(st_.fake)

    def test_anthropic_key_is_lynkr_anthropic_api_key(self, pv_stacks):
        """ANTHROPIC_API_KEY is in the proxy's env (PV_CASES["anthropic"]): the fake sees only the LYNKR_ key."""
        st_ = pv_stacks("anthropic")
        for stream in (False, True):
            r = st_.proxy.post(base_req(stream=stream))
            assert pv_text(pv_answer(r, stream)) == st_.fake.hello
        assert [q.headers.get("x-api-key") for q in st_.fake.requests] == [ANTH_KEY, ANTH_KEY]
        assert all(q.headers.get("authorization") in (None, f"Bearer {ANTH_KEY}") for q in st_.fake.requests)
        pv_no_leak(st_.fake)

    def test_anthropic_api_key_alone_is_not_used(self, tmp_path, make_proxy):
        fake = FakeAnthropic()
        try:
            p = make_proxy({"MODEL_PROVIDER": "anthropic", "LYNKR_ANTHROPIC_BASE_URL": fake.url,
                            "ANTHROPIC_API_KEY": ANTH_ENV_CANARY})
            r = p.post(base_req())
            assert r.status == 503 and r.etype == "api_error", r.data
            assert "LYNKR_ANTHROPIC_API_KEY" in r.emsg, r.emsg
            assert fake.requests == []
        finally:
            fake.close()

    @pytest.mark.parametrize("preset,var", [
        ("openai", "OPENAI_API_KEY"), ("gemini", "GEMINI_API_KEY"), ("openrouter", "OPENROUTER_API_KEY"),
        ("azure-openai", "AZURE_OPENAI_API_KEY"), ("anthropic", "LYNKR_ANTHROPIC_API_KEY")])
    def test_selected_preset_without_key_starts_and_answers_503(self, make_proxy, preset, var):
        p = make_proxy({"MODEL_PROVIDER": preset})
        for stream in (False, True):
            r = p.post(base_req(stream=stream))
            assert r.status == 503 and r.etype == "api_error", (r.status, r.data)
            assert var in r.emsg, r.emsg
        assert p.call("GET", "/health").status == 200


PV_CC_FETCH = {"name": "WebFetch", "description": "Fetch a URL", "input_schema": {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
    "properties": {
        "url": {"type": "string", "format": "uri", "description": "The URL to fetch"},
        "when": {"type": "string", "format": "date-time"},
        "mode": {"type": "string", "enum": ["fast", "full"], "format": "enum"},
        "tags": {"type": "array", "items": {"type": "string", "format": "email"}, "uniqueItems": True},
        "opts": {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"},
                 "patternProperties": {"^x-": {"type": "string"}},
                 "additionalProperties": {"type": "number", "multipleOf": 0.5}},
        "old": {"type": "string", "deprecated": True},
        "nested": {"anyOf": [{"type": "object", "additionalProperties": False,
                              "properties": {"u": {"type": "string", "format": "uri-reference"}}},
                             {"type": "null"}]},
    },
    "required": ["url"]}}


class TestPresetQuirks:
    def test_gemini_tool_schemas_cleaned(self, pv_stacks):
        st_ = pv_stacks("gemini")
        body = cc_body(stream=False)
        body["tools"].append(PV_CC_FETCH)
        r = st_.proxy.post(body, path="/v1/messages?beta=true", headers=CC_HEADERS)
        assert r.status == 200, pv_diag(r, st_.fake, proxy=st_.proxy)
        tools = {dig(t, "function.name"): dig(t, "function.parameters") for t in st_.fake.last.body["tools"]}
        bash, fetch = tools["Bash"], tools["WebFetch"]
        assert gemini_schema_problems(bash) == [] and gemini_schema_problems(fetch) == []
        assert set(bash["properties"]) == {"command", "timeout"} and bash["required"] == ["command"], bash
        assert {"url", "when", "mode", "tags", "opts", "old", "nested"} <= set(fetch["properties"]), fetch
        assert fetch["required"] == ["url"], fetch
        assert fetch["properties"]["when"].get("format") == "date-time", fetch  # allowed formats survive
        assert fetch["properties"]["mode"]["enum"] == ["fast", "full"], fetch
        assert fetch["properties"]["url"]["type"] == "string" and fetch["properties"]["tags"]["items"]["type"] == "string"

    def test_gemini_keeps_a_property_named_format(self, pv_stacks):
        """`format` is a keyword only where a schema is: a tool parameter called "format" stays."""
        st_ = pv_stacks("gemini")
        tool = {"name": "Render", "description": "Render a doc", "input_schema": {
            "type": "object", "properties": {"format": {"type": "string", "enum": ["md", "html"]},
                                             "deprecated": {"type": "boolean"}},
            "required": ["format"], "additionalProperties": False}}
        r = st_.proxy.post(base_req(tools=[tool]))
        assert r.status == 200, pv_diag(r, st_.fake)
        params = dig(st_.fake.last.body, "tools.0.function.parameters")
        assert set(params["properties"]) == {"format", "deprecated"} and params["required"] == ["format"], params

    @pytest.mark.parametrize("model,reasoning,route", [
        ("claude-sonnet-4-5", True, "default"),  # the openai preset's default upstream model is gpt-5
        ("openai,gpt-5-mini", True, "explicit"),
        ("openai,o3-mini", True, "explicit"),
        ("openai,o4-mini", True, "explicit"),
        ("openai,o1", True, "explicit"),
        ("openai,gpt-4.1", False, "explicit"),
        ("openai,gpt-4o", False, "explicit"),
    ])
    def test_openai_token_limit_field_per_model(self, pv_stacks, model, reasoning, route):
        st_ = pv_stacks("openai")
        r = st_.proxy.post(base_req(model=model, max_tokens=4096, temperature=0.5, top_p=0.9))
        assert r.status == 200, pv_diag(r, st_.fake)
        b = st_.fake.last.body
        upstream = "gpt-5" if "," not in model else model.split(",", 1)[1]
        assert b["model"] == upstream
        if reasoning:
            assert b.get("max_completion_tokens") == 4096 and "max_tokens" not in b, b
            assert "temperature" not in b and "top_p" not in b, b
        else:
            assert b.get("max_tokens") == 4096 and "max_completion_tokens" not in b, b
            assert b.get("temperature") == 0.5, b
        pv_headers(r, "openai", upstream, route)

    @pytest.mark.parametrize("model,asked,sent", [("deepseek-chat", 32000, 8192), ("deepseek-reasoner", 64000, 8192),
                                                  ("deepseek-chat", 1000, 1000), ("qwen3-coder", 32000, 32000)])
    def test_deepseek_max_tokens_capped(self, pv_stacks, model, asked, sent):
        st_ = pv_stacks("openai-compatible")
        for stream in (False, True):
            r = st_.proxy.post(base_req(model=model, max_tokens=asked, stream=stream))
            assert pv_text(pv_answer(r, stream)) == st_.fake.hello, pv_diag(r, st_.fake)
            b = st_.fake.last.body
            assert b["model"] == model and b.get("max_tokens") == sent, b

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    @pytest.mark.parametrize("case,field", [("openrouter", "reasoning"), ("openai-compatible", "reasoning_content")])
    def test_reasoning_becomes_thinking(self, pv_stacks, case, field, stream):
        st_ = pv_stacks(case)
        thought = "The user wants a greeting; keep it short ✓."
        st_.fake.push(lambda rec: pv_oai_reply(rec, "Hi there!", reasoning=(field, thought)))
        msg = pv_answer(st_.proxy.post(base_req(stream=stream)), stream)
        assert block_summary(msg["content"]) == [("thinking", thought, ""), ("text", "Hi there!")], msg["content"]

    @pytest.mark.parametrize("status,etype", [(400, "invalid_request_error"), (429, "rate_limit_error"),
                                              (500, "api_error")])
    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    @pytest.mark.parametrize("case", [c for c in PV_CASES if PV_CASES[c].wire == "openai"])
    def test_vendor_error_becomes_anthropic_error(self, pv_stacks, case, status, etype, stream):
        """An error before the first byte is an HTTP error with Anthropic error JSON, also for stream:true."""
        st_ = pv_stacks(case)
        st_.fake.push(st_.fake.error(status, f"Scripted failure {status} from {case} ✓"))
        r = st_.proxy.post(base_req(stream=stream))
        assert r.status == status and r.json().get("type") == "error" and r.etype == etype, pv_diag(r, st_.fake)
        assert f"Scripted failure {status} from {case}" in r.emsg, r.emsg
        assert REQ_ID.match(r.headers.get("request-id", "")), r.headers

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_tool_call_without_id_gets_one(self, pv_stacks, stream):
        """Some Gemini-compatible paths send tool calls with no id: lynkr makes one up and keeps it consistent."""
        st_ = pv_stacks("gemini")
        st_.fake.push(lambda rec: pv_oai_reply(rec, None, tools=[("x", "get_weather", {"city": "Paris"})],
                                               finish="tool_calls", no_ids=True),
                      lambda rec: pv_oai_reply(rec, "Sunny ✓"))
        body = base_req(tools=[GET_WEATHER], messages=[user("weather in Paris?")], stream=stream)
        first = pv_answer(st_.proxy.post(body), stream)
        calls_ = [b for b in first["content"] if b["type"] == "tool_use"]
        assert len(calls_) == 1 and calls_[0]["input"] == {"city": "Paris"} and TOOL_ID.match(calls_[0]["id"]), first
        body["messages"] += [assistant(first["content"]), user([tool_result(calls_[0]["id"], "18C")])]
        r = st_.proxy.post(body)
        assert r.status == 200, pv_diag(r, st_.fake)
        assert pv_text(pv_answer(r, stream)) == "Sunny ✓"
        sent = st_.fake.last.body["messages"]
        ids = [tc["id"] for m in sent for tc in m.get("tool_calls") or []]
        assert len(ids) == 1 and [m["tool_call_id"] for m in sent if m["role"] == "tool"] == ids, sent

    def test_models_list_env_only(self, pv_stacks):
        st_ = pv_stacks("openai")
        ids = [m["id"] for m in st_.proxy.call("GET", "/v1/models?limit=1000").json()["data"]]
        assert "openai,gpt-5" in ids and any("claude" in i and "," not in i for i in ids), ids

    @pytest.mark.parametrize("case", ["openai", "gemini", "openrouter", "azure-openai"])
    def test_parallel_tool_calls_interleaved(self, pv_stacks, case):
        st_ = pv_stacks(case)
        calls_ = [("call_a", "get_weather", {"city": "Paris"}), ("call_b", "get_weather", {"city": "Tōkyō"})]

        def respond(rec: Recorded) -> Reply:
            chunks = oai_stream("Checking both.", tools=calls_, finish="tool_calls", interleave=True)
            for c in chunks:
                c["model"] = rec.body["model"]
            data = oai_sse(chunks)
            return stream_reply(data, pieces=pv_split(data), gap=0.001)

        st_.fake.push(respond)
        msg = pv_answer(st_.proxy.post(base_req(tools=[GET_WEATHER], stream=True)), True)
        got = [(b["name"], b["input"]) for b in msg["content"] if b["type"] == "tool_use"]
        assert got == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Tōkyō"})], msg["content"]
        assert msg["stop_reason"] == "tool_use"

    @pytest.mark.parametrize("case", ["openai", "gemini", "openrouter", "azure-openai", "ollama"])
    def test_image_becomes_image_url(self, pv_stacks, case):
        st_ = pv_stacks(case)
        r = st_.proxy.post(base_req(messages=[user([text("what is this?"), image_b64()])]))
        assert r.status == 200, pv_diag(r, st_.fake)
        parts = st_.fake.last.body["messages"][-1]["content"]
        urls = [dig(p_, "image_url.url") for p_ in parts if isinstance(p_, dict) and p_.get("type") == "image_url"]
        assert urls == [f"data:image/png;base64,{PNG_B64}"], parts

    @pytest.mark.parametrize("choice,want", [
        ({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}})])
    def test_tool_choice_mapped(self, pv_stacks, choice, want):
        st_ = pv_stacks("openai")
        r = st_.proxy.post(base_req(model="openai,gpt-4.1", tools=[GET_WEATHER],
                                    tool_choice=dict(choice, disable_parallel_tool_use=True)
                                    if choice["type"] != "none" else choice))
        assert r.status == 200, pv_diag(r, st_.fake)
        b = st_.fake.last.body
        assert b.get("tool_choice") == want, b
        if choice["type"] != "none":
            assert b.get("parallel_tool_calls") is False, b

    def test_anthropic_preset_error_passed_through(self, pv_stacks):
        st_ = pv_stacks("anthropic")
        err = anth_error(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit")
        st_.fake.push(json_reply(err, 429, (("retry-after", "7"),)))
        r = st_.proxy.post(base_req(stream=True))
        assert r.status == 429 and r.etype == "rate_limit_error", r.data
        assert r.emsg == err["error"]["message"] and r.headers.get("retry-after") == "7", (r.headers, r.data)

    @pytest.mark.parametrize("case,var", [
        ("openai", "OPENAI_BASE_URL"), ("openrouter", "OPENROUTER_BASE_URL"), ("ollama", "OLLAMA_BASE_URL"),
        ("gemini", "GEMINI_BASE_URL"), ("openai-compatible", "OPENAI_COMPATIBLE_BASE_URL"),
        ("azure-openai", "AZURE_OPENAI_ENDPOINT"), ("anthropic", "LYNKR_ANTHROPIC_BASE_URL")])
    def test_base_url_with_trailing_slash(self, make_proxy, case, var):
        c = PV_CASES[case]
        fake = c.fake()
        try:
            env = c.env(fake)
            env[var] += "/"
            p = make_proxy(env)
            r = p.post(base_req())
            assert r.status == 200, pv_diag(r, fake, proxy=p)
            assert fake.last.path == c.path, fake.last.target
        finally:
            fake.close()

    def test_env_fallback_provider_named_after_its_preset(self, make_proxy):
        oa, an = FakeOpenAI(), FakeAnthropic()
        try:
            p = make_proxy({**PV_CASES["openai"].env(oa), "FALLBACK_PROVIDER": "anthropic",
                            "LYNKR_ANTHROPIC_API_KEY": ANTH_KEY, "LYNKR_ANTHROPIC_BASE_URL": an.url,
                            "FALLBACK_MODEL_DEFAULT": "claude-fallback-4"})
            for n, stream in enumerate((False, True), 1):
                oa.push(oa.error(503, "The server is overloaded or not ready yet.", "server_error"))
                r = p.post(base_req(stream=stream))
                assert pv_text(pv_answer(r, stream)) == an.hello, pv_diag(r, oa, an)
                pv_headers(r, "anthropic", "claude-fallback-4", "fallback")
                assert len(oa.requests) == n and len(an.requests) == n
                assert an.last.body["model"] == "claude-fallback-4"
        finally:
            oa.close()
            an.close()

    def test_openai_compatible_without_key_sends_no_authorization(self, make_proxy):
        fake = FakeOpenAICompatible()
        fake.auth_problem = lambda rec: None  # a local server started without --api-key
        try:
            p = make_proxy({"MODEL_PROVIDER": "openai-compatible", "OPENAI_COMPATIBLE_BASE_URL": f"{fake.url}/v1"})
            r = p.post(base_req(model="local-model-7b", stream=True))
            assert pv_text(pv_answer(r, True)) == fake.hello, pv_diag(r, fake, proxy=p)
            assert "authorization" not in fake.last.headers and fake.last.body["model"] == "local-model-7b"
            pv_headers(r, "openai-compatible", "local-model-7b", "default")
            pv_no_leak(fake)
        finally:
            fake.close()

    def test_env_model_map_to_the_fallback_provider(self, make_proxy):
        """MODEL_PROVIDER + FALLBACK_PROVIDER: two env providers; a MODEL_MAP target `provider,model` picks one."""
        oa, lo = FakeOpenAI(), FakeOllama()
        try:
            p = make_proxy({**PV_CASES["openai"].env(oa), "FALLBACK_PROVIDER": "ollama", "OLLAMA_BASE_URL": lo.url,
                            "MODEL_MAP": "claude-*haiku*=ollama,llama3.2"})
            r = p.post(base_req(model="claude-haiku-4-5", stream=True))
            assert pv_text(pv_answer(r, True)) == lo.hello, pv_diag(r, oa, lo, proxy=p)
            pv_headers(r, "ollama", "llama3.2", "map")
            r = p.post(base_req(model="claude-sonnet-4-5"))
            assert pv_text(pv_answer(r, False)) == oa.hello, pv_diag(r, oa, lo, proxy=p)
            pv_headers(r, "openai", "gpt-5", "default")
            assert len(oa.requests) == 1 and len(lo.requests) == 1
        finally:
            oa.close()
            lo.close()

    def test_model_default_and_env_model_map(self, make_proxy):
        fake = FakeOllama()
        try:
            p = make_proxy({**PV_CASES["ollama"].env(fake), "MODEL_DEFAULT": "llama3.2",
                            "MODEL_MAP": "claude-*haiku*=codellama:13b"})
            r = p.post(base_req(model="claude-sonnet-4-5"))
            assert r.status == 200 and fake.last.body["model"] == "llama3.2", pv_diag(r, fake)
            pv_headers(r, "ollama", "llama3.2", "default")
            r = p.post(base_req(model="claude-haiku-4-5"))
            assert r.status == 200 and fake.last.body["model"] == "codellama:13b", pv_diag(r, fake)
            pv_headers(r, "ollama", "codellama:13b", "map")
        finally:
            fake.close()


# -- several providers from a config file --

LONG_TEXT = "lorem ipsum dolor sit amet " * 2400  # ~65 KB: far above long_context_threshold = 5000 tokens

WEB_SEARCH_TOOL = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}

ROUTE_CASES = [
    ("plain", base_req(model="claude-sonnet-4-5"), "default", PV_OA, "gpt-4.1"),
    ("opus", base_req(model="claude-opus-5-5"), "default", PV_OA, "gpt-4.1"),
    ("haiku", base_req(model="claude-haiku-4-5-20251001"), "background", PV_LO, "qwen2.5-coder:7b"),
    ("haiku-3-5", base_req(model="claude-3-5-haiku-latest"), "background", PV_LO, "qwen2.5-coder:7b"),
    ("think-enabled", base_req(**THINK), "think", PV_AN, "claude-opus-4-1"),
    ("think-adaptive", base_req(thinking={"type": "adaptive"}), "think", PV_AN, "claude-opus-4-1"),
    ("think-disabled", base_req(thinking={"type": "disabled"}), "default", PV_OA, "gpt-4.1"),
    ("long", base_req(messages=[user(LONG_TEXT)]), "long_context", PV_AN, "claude-sonnet-4-5"),
    ("web-search", base_req(tools=[WEB_SEARCH_TOOL]), "web_search", PV_AN, "claude-haiku-4-5"),
    ("explicit", base_req(model=f"{PV_LO},llama3.2"), "explicit", PV_LO, "llama3.2"),
    ("explicit-anthropic", base_req(model=f"{PV_AN},claude-3-7-sonnet-latest"), "explicit", PV_AN,
     "claude-3-7-sonnet-latest"),
    ("map", base_req(model="claude-special-7"), "map", PV_LO, "codellama:13b"),
    # precedence: explicit > map > long_context > background > web_search > think > default
    ("explicit-beats-all", base_req(model=f"{PV_OA},gpt-4o", messages=[user(LONG_TEXT)], **THINK), "explicit",
     PV_OA, "gpt-4o"),
    ("map-beats-long", base_req(model="claude-special-9", messages=[user(LONG_TEXT)]), "map", PV_LO,
     "codellama:13b"),
    ("long-beats-haiku", base_req(model="claude-haiku-4-5", messages=[user(LONG_TEXT)]), "long_context", PV_AN,
     "claude-sonnet-4-5"),
    ("haiku-beats-web-search", base_req(model="claude-haiku-4-5", tools=[WEB_SEARCH_TOOL]), "background", PV_LO,
     "qwen2.5-coder:7b"),
    ("haiku-beats-think", base_req(model="claude-haiku-4-5", **THINK), "background", PV_LO, "qwen2.5-coder:7b"),
    ("web-search-beats-think", base_req(tools=[WEB_SEARCH_TOOL], **THINK), "web_search", PV_AN, "claude-haiku-4-5"),
]


class TestRouting:
    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    @pytest.mark.parametrize("body,route,provider,model", [c[1:] for c in ROUTE_CASES], ids=[c[0] for c in ROUTE_CASES])
    def test_route_chosen_by_request_shape(self, routes, body, route, provider, model, stream):
        r = routes.proxy.post(dict(body, stream=stream))
        assert r.status == 200, pv_diag(r, *routes.fakes, proxy=routes.proxy)
        fake = routes.fake(provider)
        assert pv_text(pv_answer(r, stream)) == fake.hello
        pv_headers(r, provider, model, route)
        assert [len(f.requests) for f in routes.fakes] == [int(f is fake) for f in routes.fakes], \
            [(type(f).__name__, len(f.requests)) for f in routes.fakes]
        assert fake.last.body["model"] == model
        pv_no_leak(*routes.fakes)

    def test_long_context_threshold_is_strictly_greater(self, tmp_path, make_proxy):
        """The estimate count_tokens reports decides: == threshold stays default, threshold + 1 is long_context."""
        oa, lo = FakeOpenAI(), FakeOllama()
        try:
            pv_toml(tmp_path, textwrap.dedent(f"""\
                [providers.{PV_OA}]
                kind = "openai"
                base_url = "{oa.url}/v1"
                api_key = "$PV_OA_KEY"
                [providers.{PV_LO}]
                kind = "ollama"
                base_url = "{lo.url}"
                [router]
                default = "{PV_OA},gpt-4.1"
                long_context = "{PV_LO},llama3.2"
                long_context_threshold = 3000
                """))
            p = make_proxy(PV_KEY_ENV)

            def body(n: int) -> dict:
                return base_req(messages=[user("x" * n)])

            def count(n: int) -> int:
                r = p.post({k: v for k, v in body(n).items() if k != "max_tokens"}, path="/v1/messages/count_tokens")
                assert r.status == 200, r.data
                return r.json()["input_tokens"]

            lo_n, hi_n = 1, 100000  # smallest n whose estimate is above 3000
            assert count(hi_n) > 3000
            while lo_n < hi_n:
                mid = (lo_n + hi_n) // 2
                lo_n, hi_n = (lo_n, mid) if count(mid) > 3000 else (mid + 1, hi_n)
            assert count(hi_n - 1) == 3000 and count(hi_n) == 3001
            # (long context first: an answer from the default provider teaches its count, which the
            # threshold is compared with, so the figures above would move)
            r = p.post(body(hi_n))
            assert r.status == 200, pv_diag(r, oa, lo, proxy=p)
            pv_headers(r, PV_LO, "llama3.2", "long_context")
            r = p.post(body(hi_n - 1))
            assert r.status == 200, pv_diag(r, oa, lo, proxy=p)
            pv_headers(r, PV_OA, "gpt-4.1", "default")
        finally:
            oa.close()
            lo.close()

    def test_concurrent_streams_to_three_providers(self, routes):
        """Claude Code sends background (haiku) calls while a main turn streams: no cross-talk between providers."""
        bodies = [(base_req(stream=True, messages=[user(f"main {i}")]), routes.oa) for i in range(3)]
        bodies += [(base_req(model="claude-haiku-4-5", stream=True, messages=[user(f"bg {i}")]), routes.lo)
                   for i in range(3)]
        bodies += [(base_req(stream=True, messages=[user(f"think {i}")], **THINK), routes.an) for i in range(3)]
        for f in routes.fakes:  # each fake's own answer, streamed slowly so that the nine streams overlap
            f.push(*[lambda rec, f=f: dataclasses.replace(f.default(rec), gap=0.004)] * 3)
        with ThreadPoolExecutor(len(bodies)) as ex:
            results = list(ex.map(lambda bf: routes.proxy.post(bf[0]), bodies))
        for (body, fake), r in zip(bodies, results):
            assert pv_text(pv_answer(r, True)) == fake.hello, (body["messages"], r.headers)
        assert [len(f.requests) for f in routes.fakes] == [3, 3, 3]

    def test_unknown_provider_in_model_is_400_listing_known(self, routes):
        for stream in (False, True):
            r = routes.proxy.post(base_req(model="nope,some-model", stream=stream))
            assert r.status == 400 and r.etype == "invalid_request_error", (r.status, r.data)
            for name in (PV_OA, PV_AN, PV_LO):
                assert name in r.emsg, r.emsg
        assert all(f.requests == [] for f in routes.fakes)

    def test_models_list_has_provider_model_ids(self, routes):
        r = routes.proxy.call("GET", "/v1/models?limit=1000")
        assert r.status == 200, r.data
        ids = [m["id"] for m in r.json()["data"]]
        want = {f"{PV_OA},gpt-4.1", f"{PV_OA},gpt-4o-mini", f"{PV_OA},gpt-5", f"{PV_LO},qwen2.5-coder:7b",
                f"{PV_AN},claude-opus-4-1", f"{PV_AN},claude-sonnet-4-5", f"{PV_AN},claude-haiku-4-5"}
        assert want <= set(ids), sorted(want - set(ids))
        assert any("claude" in i and "," not in i for i in ids), ids  # the Claude aliases are still listed
        assert len(ids) == len(set(ids)), ids
        for m in r.json()["data"]:
            assert m["type"] == "model" and m.get("display_name"), m

    def test_settings_table_applies(self, tmp_path, make_proxy):
        oa, an = FakeOpenAI(), FakeAnthropic()
        try:
            pv_toml(tmp_path, pv_two_provider_toml(oa, an) + textwrap.dedent(f"""
                [settings]
                MODEL_MAP = "claude-from-settings={PV_AN},claude-opus-4-1"
                """))
            p = make_proxy(PV_KEY_ENV)
            r = p.post(base_req(model="claude-from-settings"))
            assert r.status == 200, pv_diag(r, oa, an, proxy=p)
            pv_headers(r, PV_AN, "claude-opus-4-1", "map")
            assert an.last.body["model"] == "claude-opus-4-1" and oa.requests == []
        finally:
            oa.close()
            an.close()


class TestProviderOptions:
    def test_headers_api_version_and_default_model_from_config(self, tmp_path, make_proxy):
        orr, az = FakeOpenRouter(), FakeAzureOpenAI()
        try:
            pv_toml(tmp_path, textwrap.dedent(f"""\
                [providers.router]
                kind = "openrouter"
                base_url = "$PV_OR_BASE"
                api_key = "$PV_OR_KEY"
                headers = {{HTTP-Referer = "https://lynkr.example", X-Title = "lynkr tests"}}

                [providers.corp]
                kind = "azure-openai"
                base_url = "{az.url}"
                api_key = "$PV_AZ_KEY"
                api_version = "2025-04-01-preview"
                model = "gpt-5-prod"

                [router]
                default = "router,anthropic/claude-sonnet-4.5"
                background = "corp,gpt-4o-prod"
                """))
            p = make_proxy({"PV_OR_KEY": OPENROUTER_KEY, "PV_AZ_KEY": AZOAI_KEY, "PV_OR_BASE": f"{orr.url}/api/v1"})
            r = p.post(base_req())
            assert r.status == 200, pv_diag(r, orr, az, proxy=p)
            assert orr.last.headers.get("http-referer") == "https://lynkr.example", orr.last.headers
            assert orr.last.headers.get("x-title") == "lynkr tests", orr.last.headers
            assert orr.last.body["model"] == "anthropic/claude-sonnet-4.5"
            r = p.post(base_req(model="claude-haiku-4-5", stream=True))
            assert r.status == 200, pv_diag(r, orr, az, proxy=p)
            pv_answer(r, True)
            pv_headers(r, "corp", "gpt-4o-prod", "background")
            assert az.last.path == "/openai/deployments/gpt-4o-prod/chat/completions", az.last.target
            assert urllib.parse.parse_qs(az.last.query) == {"api-version": ["2025-04-01-preview"]}, az.last.target
            assert az.last.headers.get("api-key") == AZOAI_KEY
            r = p.post(base_req(model="corp,gpt-5-prod"))
            assert r.status == 200, pv_diag(r, orr, az, proxy=p)
            assert az.last.path == "/openai/deployments/gpt-5-prod/chat/completions"
            pv_headers(r, "corp", "gpt-5-prod", "explicit")
        finally:
            orr.close()
            az.close()


class TestOriginalKindsInConfig:
    def test_databricks_both_formats_and_azure_anthropic(self, tmp_path, new_dbx, new_az, make_proxy):
        dbx, az = new_dbx(), new_az()
        pv_toml(tmp_path, textwrap.dedent(f"""\
            [providers.dbx]
            kind = "databricks"
            base_url = "{dbx.url}"
            api_key = "$PV_DBX_KEY"

            [providers.dbxgw]
            kind = "databricks"
            base_url = "{dbx.url}"
            api_key = "$PV_DBX_KEY"
            format = "anthropic"

            [providers.foundry]
            kind = "azure-anthropic"
            base_url = "{az.url}/anthropic/v1/messages"
            api_key = "$PV_AZ_KEY"

            [router]
            default = "dbx,databricks-claude-sonnet-4-5"
            think = "dbxgw,databricks-claude-opus-4-1"
            background = "foundry,claude-haiku-4-5"
            """))
        p = make_proxy({"PV_DBX_KEY": DBX_KEY, "PV_AZ_KEY": AZ_KEY})
        body = cc_body(model="claude-sonnet-4-5", stream=True)
        body.pop("thinking")
        r = p.post(body, path="/v1/messages?beta=true", headers=CC_HEADERS)
        assert pv_text(pv_answer(r, True)) == "Hello from fake Databricks", pv_diag(r, dbx, az, proxy=p)
        pv_headers(r, "dbx", "databricks-claude-sonnet-4-5", "default")
        assert dbx.last.path == "/serving-endpoints/databricks-claude-sonnet-4-5/invocations"
        assert "model" not in dbx.last.body and dbx.last.headers["authorization"] == f"Bearer {DBX_KEY}"
        r = p.post(cc_body(model="claude-sonnet-4-5"), path="/v1/messages?beta=true", headers=CC_HEADERS)
        assert pv_text(pv_answer(r, True)) == "Hello from the Databricks AI gateway", pv_diag(r, dbx, az, proxy=p)
        pv_headers(r, "dbxgw", "databricks-claude-opus-4-1", "think")
        assert dbx.last.path == "/ai-gateway/anthropic/v1/messages"
        assert dbx.last.body["model"] == "databricks-claude-opus-4-1"
        r = p.post(base_req(model="claude-haiku-4-5"))
        assert pv_text(pv_answer(r, False)) == "Hello from fake Azure", pv_diag(r, dbx, az, proxy=p)
        pv_headers(r, "foundry", "claude-haiku-4-5", "background")
        assert az.last.path == "/anthropic/v1/messages" and az.last.body["model"] == "claude-haiku-4-5"
        assert AZ_KEY in (az.last.headers.get("x-api-key"), az.last.headers.get("api-key"))
        pv_no_leak(dbx, az)


# -- fallback chains and per-provider breakers --


def pv_fallback_toml(first_url: str, second: FakeHTTP, third: FakeHTTP, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        [providers.first]
        kind = "openai"
        base_url = "{first_url}/v1"
        api_key = "$PV_OA_KEY"

        [providers.second]
        kind = "anthropic"
        base_url = "{second.url}"
        api_key = "$PV_AN_KEY"

        [providers.third]
        kind = "ollama"
        base_url = "{third.url}"

        [router]
        default = "first,gpt-4.1"
        background = "first,gpt-4.1-mini"
        think = "first,o3"

        [router.fallback]
        default = ["second,claude-sonnet-4-5", "third,qwen2.5-coder:7b"]
        think = ["third,llama3.2"]
        """) + extra


class TestFallback:
    @pytest.fixture
    def chain(self, tmp_path, make_proxy):
        """chain(**env, first_url=None) -> (proxy, first, second, third) from a lynkr.toml in cwd."""
        made: list[FakeHTTP] = []

        def make(first_url: str | None = None, **env: Any):
            first, second, third = rel_stamp(FakeOpenAI()), rel_stamp(FakeAnthropic()), rel_stamp(FakeOllama())
            made.extend((first, second, third))
            pv_toml(tmp_path, pv_fallback_toml(first_url or first.url, second, third))
            return make_proxy({**PV_KEY_ENV, **env}), first, second, third

        yield make
        for f in made:
            f.close()

    @pytest.mark.parametrize("status", [503, 500, 429])
    def test_first_fails_second_answers(self, chain, status):
        p, first, second, third = chain()
        for n, stream in enumerate((False, True), 1):
            first.push(first.error(status, f"scripted {status}", "server_error" if status >= 500 else "requests"))
            r = p.post(base_req(stream=stream))
            assert pv_text(pv_answer(r, stream)) == second.hello, pv_diag(r, first, second, third, proxy=p)
            pv_headers(r, "second", "claude-sonnet-4-5", "fallback")
            assert (len(first.requests), len(second.requests), len(third.requests)) == (n, n, 0)
            assert first.stamps[-1] < second.stamps[-1]
            assert second.last.body["model"] == "claude-sonnet-4-5"

    def test_healthy_first_is_not_a_fallback(self, chain):
        p, first, second, third = chain()
        for stream in (False, True):
            r = p.post(base_req(stream=stream))
            assert pv_text(pv_answer(r, stream)) == first.hello, pv_diag(r, first, proxy=p)
            pv_headers(r, "first", "gpt-4.1", "default")
        assert second.requests == [] and third.requests == []
        ids = {m["id"] for m in p.call("GET", "/v1/models?limit=1000").json()["data"]}
        assert {"first,gpt-4.1", "first,gpt-4.1-mini", "first,o3", "second,claude-sonnet-4-5",
                "third,qwen2.5-coder:7b", "third,llama3.2"} <= ids, sorted(ids)

    def test_all_failing_gives_an_anthropic_error(self, chain):
        p, first, second, third = chain()
        for stream in (False, True):
            first.push(first.error(500, "boom", "server_error"))
            second.push(second.error(529, "Overloaded", "overloaded_error"))
            third.push(third.error(503, "busy", "api_error"))
            r = p.post(base_req(stream=stream))
            assert r.status >= 500 and r.json().get("type") == "error" and r.etype, pv_diag(r, first, second, third)
        assert (len(first.requests), len(second.requests), len(third.requests)) == (2, 2, 2)

    def test_metrics_are_labelled_with_provider_names(self, chain):
        p, first, _second, _third = chain()
        first.push(first.error(503, "down", "server_error"))
        assert p.post(base_req()).status == 200
        assert p.post(base_req(model="claude-sonnet-4-5")).status == 200
        m = rel_scrape(p)
        for name, n in (("first", 2), ("second", 1)):
            assert m.get("lynkr_upstream_duration_seconds_count", provider=name) == n, (name, m.select(
                "lynkr_upstream_duration_seconds_count"))
        assert m.get("lynkr_upstream_duration_seconds_count", provider="third") == 0
        assert m.get("lynkr_upstream_failovers_total") == 1
        providers = {lab.get("provider") for lab, _ in m.select("lynkr_requests_total")}
        assert {"first", "second"} <= providers, providers

    def test_chain_tried_in_order(self, chain):
        p, first, second, third = chain()
        for n, stream in enumerate((False, True), 1):
            first.push(first.error(500, "boom", "server_error"))
            second.push(second.error(503, "overloaded", "overloaded_error"))
            r = p.post(base_req(stream=stream))
            assert pv_text(pv_answer(r, stream)) == third.hello, pv_diag(r, first, second, third, proxy=p)
            pv_headers(r, "third", "qwen2.5-coder:7b", "fallback")
            assert (len(first.requests), len(second.requests), len(third.requests)) == (n, n, n)
            assert first.stamps[-1] < second.stamps[-1] < third.stamps[-1]

    def test_unreachable_first_falls_back(self, chain):
        p, _first, second, third = chain(first_url=f"http://127.0.0.1:{free_port()}")
        r = p.post(base_req(stream=True))
        assert pv_text(pv_answer(r, True)) == second.hello, pv_diag(r, second, third, proxy=p)
        pv_headers(r, "second", "claude-sonnet-4-5", "fallback")

    def test_route_with_its_own_list_and_route_without(self, chain):
        p, first, second, third = chain()
        first.push(first.error(503, "down", "server_error"))
        r = p.post(base_req(**THINK))  # think has its own fallback list
        assert pv_text(pv_answer(r, False)) == third.hello, pv_diag(r, first, second, third, proxy=p)
        pv_headers(r, "third", "llama3.2", "fallback")
        assert first.last.body["model"] == "o3" and second.requests == []
        first.push(first.error(503, "down", "server_error"))
        r = p.post(base_req(model="claude-haiku-4-5"))  # background has none: the default list applies
        assert pv_text(pv_answer(r, False)) == second.hello, pv_diag(r, first, second, third, proxy=p)
        pv_headers(r, "second", "claude-sonnet-4-5", "fallback")
        assert first.last.body["model"] == "gpt-4.1-mini"

    def test_client_error_is_not_failed_over(self, chain):
        p, first, second, third = chain()
        first.push(first.error(400, "Invalid 'messages[0].content': string too long."))
        r = p.post(base_req())
        assert r.status == 400 and r.etype == "invalid_request_error", r.data
        assert "string too long" in r.emsg
        assert second.requests == [] and third.requests == []

    def test_breaker_per_provider(self, chain):
        p, first, second, third = chain(CIRCUIT_BREAKER_FAILURES=1, CIRCUIT_BREAKER_RESET_MS=60000)
        first.push(first.error(500, "boom", "server_error"))
        r = p.post(base_req())
        assert pv_text(pv_answer(r, False)) == second.hello, pv_diag(r, first, second, third, proxy=p)
        for stream in (False, True):
            t0 = time.monotonic()
            r = p.post(base_req(stream=stream))
            assert pv_text(pv_answer(r, stream)) == second.hello, pv_diag(r, first, second, third, proxy=p)
            pv_headers(r, "second", "claude-sonnet-4-5", "fallback")
            assert time.monotonic() - t0 < 2
        assert len(first.requests) == 1, "first's breaker is open: it must not be contacted"
        assert len(second.requests) == 3 and third.requests == []
        m = rel_scrape(p)
        assert m.get("lynkr_circuit_breaker_state", provider="first") == 1
        assert m.get("lynkr_circuit_breaker_state", provider="second") == 0


# -- bad configuration --

BAD_CONFIGS = [
    ("unknown-kind", PV_GOOD_PROVIDERS + '[providers.weird]\nkind = "bedrockish"\n[router]\ndefault = "good,gpt-4.1"\n',
     ("kind", "bedrockish")),
    ("missing-kind", PV_GOOD_PROVIDERS + '[providers.nokind]\nbase_url = "http://127.0.0.1:9"\n[router]\n'
                                         'default = "good,gpt-4.1"\n', ("kind",)),
    ("route-unknown-provider", PV_GOOD_PROVIDERS + '[router]\ndefault = "ghost,gpt-4.1"\n', ("default", "ghost")),
    ("background-unknown-provider", PV_GOOD_PROVIDERS + '[router]\ndefault = "good,gpt-4.1"\nbackground = "ghost,m"\n',
     ("background", "ghost")),
    ("fallback-unknown-provider", PV_GOOD_PROVIDERS + ('[router]\ndefault = "good,gpt-4.1"\n[router.fallback]\n'
                                                       'default = ["ghost,m"]\n'), ("ghost",)),
    ("unset-var", PV_GOOD_PROVIDERS.replace("sk-inline-key-for-bad-config-tests", "$PV_SURELY_UNSET_VAR")
     + '[router]\ndefault = "good,gpt-4.1"\n', ("api_key", "PV_SURELY_UNSET_VAR")),
    ("unset-var-braces", PV_GOOD_PROVIDERS.replace("sk-inline-key-for-bad-config-tests", "${PV_SURELY_UNSET_VAR}")
     + '[router]\ndefault = "good,gpt-4.1"\n', ("api_key", "PV_SURELY_UNSET_VAR")),
    ("no-comma", PV_GOOD_PROVIDERS + '[router]\ndefault = "gpt-4.1"\n', ("default",)),
    ("empty-model", PV_GOOD_PROVIDERS + '[router]\ndefault = "good,"\n', ("default",)),
    ("empty-provider", PV_GOOD_PROVIDERS + '[router]\ndefault = ",gpt-4.1"\n', ("default",)),
    ("fallback-no-comma", PV_GOOD_PROVIDERS + '[router]\ndefault = "good,gpt-4.1"\n[router.fallback]\n'
                                              'default = ["good"]\n', ("fallback",)),
    ("unknown-route", PV_GOOD_PROVIDERS + '[router]\ndefault = "good,gpt-4.1"\nthinking = "good,o3"\n', ("thinking",)),
    ("bad-threshold", PV_GOOD_PROVIDERS + '[router]\ndefault = "good,gpt-4.1"\nlong_context_threshold = "lots"\n',
     ("long_context_threshold",)),
    ("toml-syntax", PV_GOOD_PROVIDERS + '[router\ndefault = "good,gpt-4.1"\n', ()),
    ("unknown-setting", PV_GOOD_PROVIDERS + '[router]\ndefault = "good,gpt-4.1"\n[settings]\nNOT_A_LYNKR_SETTING = "1"\n',
     ("NOT_A_LYNKR_SETTING",)),
]


class TestBadConfig:
    @pytest.mark.parametrize("toml,words", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
    def test_exits_2_with_one_line(self, tmp_path, toml, words):
        pv_toml(tmp_path, toml)
        pv_one_error_line(run_lynkr(tmp_path, timeout=8), "lynkr.toml", words)

    @pytest.mark.parametrize("how", ["--config", "LYNKR_CONFIG"])
    def test_named_file_is_the_one_reported(self, tmp_path, how):
        cfg = tmp_path / "conf" / "broken-providers.toml"
        cfg.parent.mkdir()
        cfg.write_text(PV_GOOD_PROVIDERS + '[router]\ndefault = "ghost,gpt-4.1"\n')
        if how == "--config":
            r = run_lynkr(tmp_path, args=("--port", "0", "--config", str(cfg)))
        else:
            r = run_lynkr(tmp_path, {"LYNKR_CONFIG": str(cfg)})
        pv_one_error_line(r, "broken-providers.toml", ("default", "ghost"))

    def test_missing_config_file_exits_2(self, tmp_path):
        r = run_lynkr(tmp_path, args=("--port", "0", "--config", str(tmp_path / "no-such-lynkr.toml")))
        pv_one_error_line(r, "no-such-lynkr.toml", ())


# -- cost per turn --

SONNET_COST = (100 * 3 + 50 * 15 + 300 * 3.75 + 600 * 0.30) / 1e6  # list price per million tokens: 0.002355


def cost_samples(p: Proxy) -> list[tuple[dict, float]]:
    return rel_scrape(p).select("lynkr_cost_usd_total")


class TestCost:
    def test_turn_cost_from_the_list_price(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake))
        second_usage = {"prompt_tokens": 2000, "completion_tokens": 100, "total_tokens": 2100}
        second_cost = (2000 * 3 + 100 * 15) / 1e6
        fake.push(lambda rec: oai_usage_turn(rec, "First.", OR_USAGE, dbx=True),
                  lambda rec: oai_usage_turn(rec, "Second.", second_usage, dbx=True))
        hdr = {"x-session-id": "cost-list"}
        r1 = p.post(base_req(messages=[user("one")]), headers=hdr)
        assert r1.status == 200 and r1.headers.get("x-lynkr-model") == "databricks-claude-sonnet-4-5", r1.headers
        r2 = p.post(base_req(messages=[user("one"), assistant(r1.json()["content"]), user("two")], stream=True),
                    headers=hdr)
        r2.stream().ok()
        s = session_of(p, "cost-list")
        replies = assistant_turns(s)
        assert [t["cost_usd"] for t in replies] == [pytest.approx(SONNET_COST, abs=1e-9),
                                                   pytest.approx(second_cost, abs=1e-9)], replies
        assert all(t["cost_usd"] is None for t in s["turns"] if t["kind"] == "user")
        assert s["cost_usd"] == pytest.approx(SONNET_COST + second_cost, abs=1e-9)
        m = rel_scrape(p)
        # (a regression once: the family was counted but missing from METRIC_DEFINITIONS, so never shown)
        assert m.types.get("lynkr_cost_usd_total") == "counter", m.types
        assert m.get("lynkr_cost_usd_total", provider="databricks", model="databricks-claude-sonnet-4-5") == \
            pytest.approx(SONNET_COST + second_cost, abs=1e-9), cost_samples(p)

    def test_anthropic_format_turn_cost_json_and_stream(self, new_az, make_proxy):
        """Haiku 4.5 list price 1/5 (write 1.25, read 0.10): a streamed turn is charged from message_start's
        input figures and message_delta's output, like a JSON one."""
        fake = new_az()
        p = make_proxy(az_env(fake, MODEL_DEFAULT="claude-haiku-4-5"))
        haiku = (100 * 1 + 50 * 5 + 300 * 1.25 + 600 * 0.10) / 1e6
        for stream in (False, True):
            fake.push(lambda rec: anth_usage_turn(rec, [text("Priced.")], ANTH_USAGE))
            r = p.post(base_req(model="claude-haiku-4-5", stream=stream), headers={"x-session-id": f"az-cost-{stream}"})
            reply_of(r, stream)
            assert r.headers.get("x-lynkr-model") == "claude-haiku-4-5", r.headers
            provider = r.headers.get("x-lynkr-provider")
            replies = assistant_turns(session_of(p, f"az-cost-{stream}"))
            assert [t["cost_usd"] for t in replies] == [pytest.approx(haiku, abs=1e-9)], (stream, replies)
        assert rel_scrape(p).get("lynkr_cost_usd_total", provider=provider, model="claude-haiku-4-5") == \
            pytest.approx(2 * haiku, abs=1e-9), cost_samples(p)

    def test_config_prices_win_and_unknown_models_are_unpriced(self, tmp_path, new_dbx, make_proxy):
        fake = new_dbx()
        pv_toml(tmp_path, textwrap.dedent(f"""\
            [providers.dbx]
            kind = "databricks"
            base_url = "{fake.url}"
            api_key = "$PV_DBX_KEY"

            [router]
            default = "dbx,databricks-claude-sonnet-4-5"

            [prices."databricks-claude-sonnet-*"]
            input = 1
            output = 2
            cache_write = 0.5
            cache_read = 0.1

            [prices."my-llama-*"]
            input = 2
            output = 4.5
            """))
        p = make_proxy({"PV_DBX_KEY": DBX_KEY})
        cases = [("claude-sonnet-4-5", "databricks-claude-sonnet-4-5",
                  (100 * 1 + 50 * 2 + 300 * 0.5 + 600 * 0.1) / 1e6),
                 # cache prices left out default to the input price: no discount unless the table says so
                 ("dbx,my-llama-70b", "my-llama-70b", (100 * 2 + 50 * 4.5 + 300 * 2 + 600 * 2) / 1e6),
                 ("dbx,mystery-endpoint", "mystery-endpoint", None)]
        for n, (model, upstream_model, want) in enumerate(cases):
            fake.push(lambda rec: oai_usage_turn(rec, "Priced?", OR_USAGE, dbx=True))
            r = p.post(base_req(model=model), headers={"x-session-id": f"price-{n}"})
            assert r.status == 200 and r.headers.get("x-lynkr-model") == upstream_model, pv_diag(r, fake, proxy=p)
            assert fake.endpoint(fake.last) == upstream_model
            s = session_of(p, f"price-{n}")
            got = assistant_turns(s)[0]["cost_usd"]
            if want is None:
                assert got is None and s["cost_usd"] is None, s
            else:
                assert got == pytest.approx(want, abs=1e-9) and s["cost_usd"] == pytest.approx(want, abs=1e-9), s
        m = rel_scrape(p)
        assert m.get("lynkr_cost_usd_total", provider="dbx", model="databricks-claude-sonnet-4-5") == \
            pytest.approx(cases[0][2], abs=1e-9), cost_samples(p)
        assert m.get("lynkr_cost_usd_total", provider="dbx", model="my-llama-70b") == \
            pytest.approx(cases[1][2], abs=1e-9), cost_samples(p)
        assert m.select("lynkr_cost_usd_total", model="mystery-endpoint") == [], cost_samples(p)

    @pytest.mark.parametrize("table,words", [
        ('[prices."claude-*"]\ninput = "3"\noutput = 15\n', ("prices.claude-*", "input")),
        ('[prices."claude-*"]\ninput = 3\noutput = 15\ncache_reads = 0.3\n', ("prices.claude-*", "cache_reads")),
        ('[prices."claude-*"]\ninput = 3\n', ("prices.claude-*", "output")),
        ('[prices."claude-*"]\ninput = -1\noutput = 15\n', ("prices.claude-*", "input")),
        ('[prices."claude-*"]\ninput = true\noutput = 15\n', ("prices.claude-*", "input")),
    ], ids=["string-price", "unknown-key", "missing-output", "negative", "bool"])
    def test_invalid_price_table_stops_startup(self, tmp_path, table, words):
        pv_toml(tmp_path, PV_GOOD_PROVIDERS + '[router]\ndefault = "good,gpt-4.1"\n' + table)
        pv_one_error_line(run_lynkr(tmp_path, timeout=8), "lynkr.toml", words)

    def test_cache_hit_costs_nothing(self, agent):
        st_ = agent("dbx", **CACHE_ON)
        st_.fake.push(usage_turn("dbx", "Once."))
        for _ in range(2):
            st_.proxy.post(base_req(messages=[user("price me once")]), headers={"x-session-id": "hit-cost"})
        replies = assistant_turns(session_of(st_.proxy, "hit-cost"))
        assert [t["cache"] for t in replies] == ["stored", "hit"]
        assert [t["cost_usd"] for t in replies] == [pytest.approx(SONNET_COST, abs=1e-9), None], replies
        assert rel_scrape(st_.proxy).get("lynkr_cost_usd_total", model="databricks-claude-sonnet-4-5") == \
            pytest.approx(SONNET_COST, abs=1e-9)
        assert len(st_.fake.requests) == 1


# -- Claude on Google Vertex AI --


# Environment-only configuration
class TestVertexEnv:
    def test_json_answer_path_body_and_headers(self, vx):
        r = vx.proxy.post(base_req(temperature=0.5), headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
        assert r.status == 200, r.data
        assert r.json()["content"] == [text(VX_TEXT)] and r.json()["id"] == "msg_vrtx_01FAKE"
        assert r.headers.get("x-lynkr-provider") == "vertex" and r.headers.get("x-lynkr-model") == VMODEL, r.headers
        rec = vx.fake.last
        assert rec.path == vx_path(VMODEL, "rawPredict"), rec.target  # the '@' as Vertex names the model
        b = rec.body
        assert "model" not in b and b["anthropic_version"] == VERTEX_VERSION
        assert b["messages"] == [user("hi")] and b["max_tokens"] == 1024 and b["temperature"] == 0.5
        assert b.get("stream") in (False, None)
        assert rec.headers["authorization"] == f"Bearer {STATIC_TOKEN}"
        assert rec.headers.get("anthropic-beta") == "interleaved-thinking-2025-05-14"  # a header, not the body
        assert "anthropic_beta" not in b and "x-api-key" not in rec.headers

    def test_streamed_answer(self, vx):
        r = vx.proxy.post(base_req(stream=True), headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
        msg = r.stream().ok()
        assert texts(msg) == [VX_TEXT] and msg["stop_reason"] == "end_turn"
        assert r.headers.get("x-lynkr-provider") == "vertex" and r.headers.get("x-lynkr-model") == VMODEL
        rec = vx.fake.last
        assert rec.path == vx_path(VMODEL, "streamRawPredict"), rec.target
        assert rec.body["stream"] is True and "model" not in rec.body and rec.body["anthropic_version"] == VERTEX_VERSION
        assert rec.headers.get("anthropic-beta") == "interleaved-thinking-2025-05-14"

    @pytest.mark.parametrize("stream", [False, True])
    def test_claude_code_shaped_request_accepted(self, vx, stream):
        r = vx.proxy.post(cc_body(stream=stream), headers=CC_HEADERS)
        if stream:
            assert texts(r.stream().ok()) == [VX_TEXT]
        else:
            assert r.status == 200 and r.json()["content"] == [text(VX_TEXT)], r.data
        b = vx.fake.last.body
        assert "model" not in b and b["anthropic_version"] == VERTEX_VERSION
        assert b["tools"][0]["name"] == "Bash" and b["thinking"] == {"type": "adaptive", "display": "omitted"}
        assert vx.fake.last.headers.get("anthropic-beta") == CC_BETAS

    def test_model_map_picks_the_vertex_model(self, new_vx, make_proxy):
        fake = new_vx(tokens=[STATIC_TOKEN])
        p = make_proxy(vx_env(fake, VERTEX_ACCESS_TOKEN=STATIC_TOKEN, MODEL_MAP=f"claude-opus-*={VTX_OPUS}"))
        r = p.post(base_req(model="claude-opus-4-1", stream=True))
        assert texts(r.stream().ok()) == [VX_TEXT] and r.headers.get("x-lynkr-model") == VTX_OPUS
        assert fake.last.path == vx_path(VTX_OPUS, "streamRawPredict")
        assert p.post(base_req(model="claude-haiku-4-5")).status == 200
        assert fake.last.path == vx_path(VMODEL, "rawPredict")

    def test_alternate_variables(self, new_vx, make_proxy):
        other_token = "ya29.oauth-alt-token-canary-11aa"
        fake = new_vx(project="alt-proj-22", region="europe-west1", tokens=[other_token])
        p = make_proxy({"MODEL_PROVIDER": "vertex", "ANTHROPIC_VERTEX_PROJECT_ID": "alt-proj-22",
                        "VERTEX_REGION": "europe-west1", "VERTEX_BASE_URL": fake.url,
                        "GOOGLE_OAUTH_ACCESS_TOKEN": other_token})
        assert p.post(base_req()).status == 200
        assert fake.last.path == vx_path(VMODEL, "rawPredict", "alt-proj-22", "europe-west1")
        assert fake.last.headers["authorization"] == f"Bearer {other_token}"
        no_secrets(p, other_token)

    def test_primary_variables_win(self, new_vx, make_proxy):
        fake = new_vx(tokens=[STATIC_TOKEN])
        p = make_proxy(vx_env(fake, ANTHROPIC_VERTEX_PROJECT_ID="not-this-project", VERTEX_REGION="asia-east1",
                              VERTEX_ACCESS_TOKEN=STATIC_TOKEN, GOOGLE_OAUTH_ACCESS_TOKEN="ya29.not-this-one"))
        assert p.post(base_req()).status == 200
        assert fake.last.path == vx_path() and fake.last.headers["authorization"] == f"Bearer {STATIC_TOKEN}"

    @pytest.mark.parametrize("drop,named,not_named", [
        (("GOOGLE_CLOUD_PROJECT",), ("GOOGLE_CLOUD_PROJECT", "ANTHROPIC_VERTEX_PROJECT_ID"), ("CLOUD_ML_REGION",)),
        (("CLOUD_ML_REGION",), ("CLOUD_ML_REGION", "VERTEX_REGION"), ("GOOGLE_CLOUD_PROJECT",)),
        (("GOOGLE_CLOUD_PROJECT", "CLOUD_ML_REGION"),
         ("GOOGLE_CLOUD_PROJECT", "ANTHROPIC_VERTEX_PROJECT_ID", "CLOUD_ML_REGION", "VERTEX_REGION"), ()),
    ])
    def test_missing_project_or_region_starts_and_explains(self, new_vx, make_proxy, drop, named, not_named):
        fake = new_vx(tokens=[STATIC_TOKEN])
        p = make_proxy(vx_env(fake, VERTEX_ACCESS_TOKEN=STATIC_TOKEN, **{k: None for k in drop}))
        h = p.call("GET", "/health")
        assert h.status == 200 and h.json()["configured"] is False, h.data
        for stream in (False, True):
            r = p.post(base_req(stream=stream))
            assert r.status == 503 and r.etype == "api_error", r.data
            assert r.json()["type"] == "error"
            msg = r.emsg
            assert "Vertex" in msg and "not configured" in msg, msg
            for var in named:
                assert var in msg, msg
            set_part = msg.split(";")[0]  # what this provider still needs (the rest names other providers)
            for var in not_named:
                assert var not in set_part, msg
            assert r.headers.get("x-should-retry") == "false"
        assert fake.requests == []

    @pytest.mark.parametrize("region,host", [("us-east5", "us-east5-aiplatform.googleapis.com"),
                                             ("europe-west1", "europe-west1-aiplatform.googleapis.com"),
                                             ("global", "aiplatform.googleapis.com")])
    def test_default_host_from_region(self, make_proxy, tunnel, region, host):
        """Without VERTEX_BASE_URL, lynkr goes to Google's host for the region (seen as the CONNECT target of
        an HTTPS proxy that refuses everything, so nothing leaves this machine)."""
        t = tunnel(refuse=True)
        p = make_proxy(vx_env(None, CLOUD_ML_REGION=region, VERTEX_ACCESS_TOKEN=STATIC_TOKEN, HTTPS_PROXY=t.url))
        r = p.post(base_req())
        assert r.status >= 500, r.data
        assert t.seen and t.seen[0] == f"CONNECT {host}:443 HTTP/1.1", t.seen
        assert all(STATIC_TOKEN not in h for h in t.heads)  # the token travels inside TLS only


def empty_bin(tmp: Path) -> str:
    """A PATH with nothing on it (this machine has a real gcloud in /usr/bin)."""
    d = tmp / "empty-bin"
    d.mkdir(exist_ok=True)
    return str(d)


def tokens_seen(fake: FakeVertex) -> list[str]:
    return [fake.token_of(r) for r in fake.requests]


@pytest.fixture
def new_meta():
    yield from _fake_factory(FakeMetadata)


# The metadata server
class TestVertexMetadataToken:
    def stack(self, new_vx, new_meta, make_proxy, tmp_path, **meta_kw: Any) -> tuple[FakeVertex, FakeMetadata, Proxy]:
        fake = new_vx()
        meta = new_meta(vertex=fake, **meta_kw)
        p = make_proxy(vx_env(fake, GCE_METADATA_HOST=f"127.0.0.1:{meta.port}", PATH=empty_bin(tmp_path)))
        return fake, meta, p

    def test_token_fetched_once_for_several_requests(self, new_vx, new_meta, make_proxy, tmp_path):
        fake, meta, p = self.stack(new_vx, new_meta, make_proxy, tmp_path)
        assert meta.fetches == 0  # lazily: nothing before the first model call
        for stream in (False, True, False, True):
            r = p.post(base_req(stream=stream))
            if stream:
                assert texts(r.stream().ok()) == [VX_TEXT]
            else:
                assert r.status == 200, r.data
        assert meta.fetches == 1, meta.issued
        assert tokens_seen(fake) == [meta.issued[0]] * 4
        mr = meta.requests[0]
        assert mr.method == "GET" and mr.path == META_PATH and mr.headers.get("metadata-flavor") == "Google"
        no_secrets(p, *meta.issued)

    def test_token_near_expiry_is_fetched_again(self, new_vx, new_meta, make_proxy, tmp_path):
        fake, meta, p = self.stack(new_vx, new_meta, make_proxy, tmp_path, expires_in=301)
        t0 = time.monotonic()
        assert p.post(base_req()).status == 200
        assert p.post(base_req()).status == 200
        if time.monotonic() - t0 < 0.8:  # still more than 5 minutes left: reused
            assert meta.fetches == 1, meta.issued
        time.sleep(max(0.0, 1.3 - (time.monotonic() - t0)))  # now inside the 5-minute early window
        assert p.post(base_req(stream=True)).stream().ok()
        assert meta.fetches == 2, meta.issued
        assert tokens_seen(fake)[-1] == meta.issued[1]
        no_secrets(p, *meta.issued)

    def test_token_inside_the_window_is_not_reused(self, new_vx, new_meta, make_proxy, tmp_path):
        fake, meta, p = self.stack(new_vx, new_meta, make_proxy, tmp_path, expires_in=300)
        for _ in range(3):
            assert p.post(base_req()).status == 200
        assert meta.fetches == 3 and tokens_seen(fake) == meta.issued

    def test_concurrent_requests_fetch_once(self, new_vx, new_meta, make_proxy, tmp_path):
        fake, meta, p = self.stack(new_vx, new_meta, make_proxy, tmp_path, delay=0.5)
        with ThreadPoolExecutor(10) as ex:
            rs = list(ex.map(lambda i: p.post(base_req(stream=bool(i % 2))), range(10)))
        assert [r.status for r in rs] == [200] * 10, [r.data[:200] for r in rs if r.status != 200]
        assert meta.fetches == 1, meta.issued
        assert len(fake.requests) == 10 and set(tokens_seen(fake)) == {meta.issued[0]}

    def test_metadata_server_down_is_a_clear_error(self, new_vx, make_proxy, tmp_path):
        fake = new_vx()
        dead = free_port()
        p = make_proxy(vx_env(fake, GCE_METADATA_HOST=f"127.0.0.1:{dead}", PATH=empty_bin(tmp_path)))
        for stream in (False, True):
            r = p.post(base_req(stream=stream))
            assert r.status in (502, 503, 504) and r.json()["type"] == "error", r.data
            assert "metadata server" in r.emsg and f"127.0.0.1:{dead}" in r.emsg, r.emsg
        assert fake.requests == []

    def test_metadata_answer_without_token_is_a_clear_error(self, new_vx, new_meta, make_proxy, tmp_path):
        fake = new_vx()
        meta = new_meta(vertex=fake)
        meta.push(json_reply({"error": "invalid_scope"}, 400))
        p = make_proxy(vx_env(fake, GCE_METADATA_HOST=f"127.0.0.1:{meta.port}", PATH=empty_bin(tmp_path)))
        r = p.post(base_req())
        assert r.status >= 500 and "metadata server" in r.emsg and "400" in r.emsg, r.data
        assert fake.requests == []
        assert p.post(base_req()).status == 200  # the next request asks again and succeeds


# A 401 renews the token once
class TestVertex401:
    def stack(self, new_vx, new_meta, make_proxy, tmp_path):
        fake = new_vx()
        meta = new_meta(vertex=fake)
        p = make_proxy(vx_env(fake, GCE_METADATA_HOST=f"127.0.0.1:{meta.port}", PATH=empty_bin(tmp_path)))
        return fake, meta, p

    @pytest.mark.parametrize("stream", [False, True])
    def test_revoked_token_renewed_and_retried_once(self, new_vx, new_meta, make_proxy, tmp_path, stream):
        fake, meta, p = self.stack(new_vx, new_meta, make_proxy, tmp_path)
        assert p.post(base_req(stream=stream)).status == 200
        a = meta.issued[0]
        fake.revoke(a)
        r = p.post(base_req(stream=stream))
        if stream:
            assert texts(r.stream().ok()) == [VX_TEXT]
        else:
            assert r.status == 200 and r.json()["content"] == [text(VX_TEXT)], r.data
        assert meta.fetches == 2, meta.issued
        b = meta.issued[1]
        assert tokens_seen(fake) == [a, a, b]
        assert fake.requests[1].raw == fake.requests[2].raw  # the same request, retried
        assert p.post(base_req(stream=stream)).status == 200 and tokens_seen(fake)[-1] == b and meta.fetches == 2
        no_secrets(p, a, b)

    @pytest.mark.parametrize("stream", [False, True])
    def test_second_401_reaches_the_client_without_a_loop(self, new_vx, new_meta, make_proxy, tmp_path, stream):
        fake, meta, p = self.stack(new_vx, new_meta, make_proxy, tmp_path)
        assert p.post(base_req()).status == 200
        fake.revoke(meta.issued[0])
        meta.register = False  # the fresh token is refused too
        r = p.post(base_req(stream=stream))
        assert r.status == 401, r.data
        assert "invalid authentication credentials" in r.data.decode(), r.data
        assert len(fake.requests) == 3 and meta.fetches == 2, (len(fake.requests), meta.issued)
        assert tokens_seen(fake)[1:] == meta.issued[:2]
        # the next client request: one renewal again, never more
        r = p.post(base_req(stream=stream))
        assert r.status == 401 and len(fake.requests) == 5 and meta.fetches == 3, (len(fake.requests), meta.issued)
        no_secrets(p, *meta.issued)

    # (a bug once, found by these tests: Provider._request calls credentials.invalidate() on every 401, and GoogleAccessToken.inval ...)
    def test_burst_of_401s_renews_once(self, new_vx, new_meta, make_proxy, tmp_path):
        """Ten requests in flight when the token is revoked: one renewal serves them all (a 401 for a token
        that was already replaced must not throw the fresh one away)."""
        fake, meta, p = self.stack(new_vx, new_meta, make_proxy, tmp_path)
        assert p.post(base_req()).status == 200
        fake.revoke(meta.issued[0])
        fake.gate_401, fake.slow_401 = 10, 0.1  # all ten in flight with the revoked token; 401s 0.1 s apart
        with ThreadPoolExecutor(10) as ex:
            rs = list(ex.map(lambda i: p.post(base_req(stream=bool(i % 2))), range(10)))
        assert tokens_seen(fake)[1:11] == [meta.issued[0]] * 10
        assert [r.status for r in rs] == [200] * 10, [r.data[:200] for r in rs if r.status != 200]
        assert meta.fetches == 2, meta.issued

    def test_fixed_token_401_not_retried(self, new_vx, make_proxy):
        fake = new_vx()  # knows no token: VERTEX_ACCESS_TOKEN is wrong
        p = make_proxy(vx_env(fake, VERTEX_ACCESS_TOKEN=STATIC_TOKEN))
        r = p.post(base_req())
        assert r.status == 401 and len(fake.requests) == 1, r.data
        no_secrets(p, STATIC_TOKEN)

    # (a bug once, found by these tests: Vertex answers auth/permission/routing failures in Google's JSON shape ({"error": {"code", ...)
    @pytest.mark.parametrize("reply,status,etype", [
        (g_error(401, "UNAUTHENTICATED", UNAUTH_MSG), 401, "authentication_error"),
        (g_error(403, "PERMISSION_DENIED", "Permission 'aiplatform.endpoints.predict' denied on resource"), 403,
         "permission_error"),
        (g_error(404, "NOT_FOUND", "Publisher Model `claude-x@1` not found."), 404, "not_found_error"),
        (g_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model"),
         429, "rate_limit_error"),
    ], ids=["401", "403", "404", "429"])
    @pytest.mark.parametrize("stream", [False, True])
    def test_google_errors_reach_the_client_anthropic_shaped(self, vx, reply, status, etype, stream):
        vx.fake.push(reply)
        r = vx.proxy.post(base_req(stream=stream))
        assert r.status == status, r.data
        body = r.json()
        assert body.get("type") == "error", f"not an Anthropic error body: {body}"
        assert dig(body, "error.type") == etype and reply.body and dig(json.loads(reply.body), "error.message") in r.emsg

    def test_anthropic_shaped_vertex_errors_pass_through(self, vx):
        """Vertex relays Claude's own errors (bad request, overloaded) in Anthropic's shape: they pass unchanged."""
        vx.fake.push(json_reply(anth_error(400, "invalid_request_error", "messages: roles must alternate"), 400))
        r = vx.proxy.post(base_req())
        assert r.status == 400 and r.etype == "invalid_request_error" and "alternate" in r.emsg, r.data
        vx.fake.push(json_reply(anth_error(529, "overloaded_error", "Overloaded"), 529))
        r = vx.proxy.post(base_req())
        assert r.status == 503 and r.headers.get("x-should-retry") == "true", r.data


GCLOUD_TOKEN = "ya29.gcloud-printed-token-canary-5b7c"


def fake_gcloud(tmp: Path, script_body: str) -> tuple[str, Path]:
    """An executable `gcloud` in its own directory; every call appends its arguments to calls.log."""
    d = tmp / "gcloud-bin"
    d.mkdir(exist_ok=True)
    log = tmp / "gcloud-calls.log"
    g = d / "gcloud"
    g.write_text(f"#!/bin/sh\necho \"$@\" >> '{log}'\n{script_body}\n")
    g.chmod(0o755)
    return str(d), log


def on_gce() -> bool:
    with contextlib.suppress(OSError):
        return "Google" in Path("/sys/class/dmi/id/product_name").read_text()
    return False


# gcloud
class TestVertexGcloud:
    def test_gcloud_token_used_and_reused(self, new_vx, make_proxy, tmp_path):
        assert not on_gce()
        gbin, calls = fake_gcloud(tmp_path, f'[ "$1 $2" = "auth print-access-token" ] || exit 3\necho {GCLOUD_TOKEN}')
        fake = new_vx(tokens=[GCLOUD_TOKEN])
        p = make_proxy(vx_env(fake, PATH=gbin))
        for stream in (False, True, False):
            r = p.post(base_req(stream=stream))
            assert r.status == 200, r.data
        assert tokens_seen(fake) == [GCLOUD_TOKEN] * 3
        assert calls.read_text().splitlines() == ["auth print-access-token"]  # once, then reused
        no_secrets(p, GCLOUD_TOKEN)

    def test_gcloud_failure_is_named(self, new_vx, make_proxy, tmp_path):
        gbin, calls = fake_gcloud(tmp_path, "echo 'ERROR: (gcloud.auth.print-access-token) You do not currently have "
                                            "an active account selected.' >&2\nexit 1")
        fake = new_vx(tokens=[GCLOUD_TOKEN])
        p = make_proxy(vx_env(fake, PATH=gbin))
        for stream in (False, True):
            r = p.post(base_req(stream=stream))
            assert r.status >= 500 and r.json()["type"] == "error", r.data
            assert "gcloud" in r.emsg and "active account" in r.emsg, r.emsg
        assert fake.requests == []

    def test_env_token_beats_gcloud_and_metadata(self, new_vx, new_meta, make_proxy, tmp_path):
        gbin, calls = fake_gcloud(tmp_path, f"echo {GCLOUD_TOKEN}")
        fake = new_vx(tokens=[STATIC_TOKEN, GCLOUD_TOKEN])
        meta = new_meta(vertex=fake)
        p = make_proxy(vx_env(fake, PATH=gbin, VERTEX_ACCESS_TOKEN=STATIC_TOKEN, GCE_METADATA_HOST=f"127.0.0.1:{meta.port}"))
        assert p.post(base_req()).status == 200 and tokens_seen(fake) == [STATIC_TOKEN]
        assert meta.fetches == 0 and not calls.exists()

    def test_gcloud_asked_again_after_a_401(self, new_vx, make_proxy, tmp_path):
        counter = tmp_path / "gcloud-n"
        gbin, calls = fake_gcloud(tmp_path, f"n=0\n[ -f '{counter}' ] && read n < '{counter}'\nn=$((n+1))\n"
                                            f"echo $n > '{counter}'\necho ya29.gcloud-tok-$n")
        fake = new_vx(tokens=["ya29.gcloud-tok-1", "ya29.gcloud-tok-2"])
        p = make_proxy(vx_env(fake, PATH=gbin))
        assert p.post(base_req()).status == 200
        fake.revoke("ya29.gcloud-tok-1")
        assert p.post(base_req(stream=True)).stream().ok()
        assert tokens_seen(fake) == ["ya29.gcloud-tok-1", "ya29.gcloud-tok-1", "ya29.gcloud-tok-2"]
        assert calls.read_text().splitlines() == ["auth print-access-token"] * 2
        no_secrets(p, "ya29.gcloud-tok-1", "ya29.gcloud-tok-2")

    def test_metadata_beats_gcloud(self, new_vx, new_meta, make_proxy, tmp_path):
        gbin, calls = fake_gcloud(tmp_path, f"echo {GCLOUD_TOKEN}")
        fake = new_vx(tokens=[GCLOUD_TOKEN])
        meta = new_meta(vertex=fake)
        p = make_proxy(vx_env(fake, PATH=gbin, GCE_METADATA_HOST=f"127.0.0.1:{meta.port}"))
        assert p.post(base_req()).status == 200 and tokens_seen(fake) == meta.issued and meta.fetches == 1
        assert not calls.exists()


# No token source; credentials files
def google_auth_installed() -> bool:
    return subprocess.run([sys.executable, "-c", "import google.auth, google.auth.transport.requests"],
                          capture_output=True, check=False).returncode == 0


class TestVertexNoToken:
    def test_no_source_at_all(self, new_vx, make_proxy, tmp_path):
        if on_gce():
            pytest.skip("this machine is on Google Cloud: the metadata server is a token source")
        fake = new_vx()
        p = make_proxy(vx_env(fake, PATH=empty_bin(tmp_path)))  # HOME is tmp/home: no ADC file
        assert not (tmp_path / "home" / ".config" / "gcloud").exists()
        for stream in (False, True):
            r = p.post(base_req(stream=stream))
            assert r.status == 503 and r.etype == "api_error" and r.json()["type"] == "error", r.data
            for needle in ("VERTEX_ACCESS_TOKEN", "gcloud", "GOOGLE_APPLICATION_CREDENTIALS", "metadata"):
                assert needle in r.emsg, r.emsg
            assert r.headers.get("x-should-retry") == "false"
        assert fake.requests == []

    def creds_file(self, tmp_path: Path) -> Path:
        f = tmp_path / "sa.json"
        f.write_text(json.dumps({"type": "service_account", "project_id": VTX_PROJECT, "private_key_id": "abc",
                                 "private_key": "-----BEGIN PRIVATE KEY-----\nnot-a-key\n-----END PRIVATE KEY-----\n",
                                 "client_email": f"lynkr@{VTX_PROJECT}.iam.gserviceaccount.com", "client_id": "1",
                                 "token_uri": "http://127.0.0.1:9/token"}))
        return f

    def test_credentials_file(self, new_vx, make_proxy, tmp_path):
        fake = new_vx()
        f = self.creds_file(tmp_path)
        p = make_proxy(vx_env(fake, PATH=empty_bin(tmp_path), GOOGLE_APPLICATION_CREDENTIALS=str(f)))
        r = p.post(base_req())
        assert r.json()["type"] == "error", r.data
        if google_auth_installed():  # a bogus key: a clear error naming the file
            assert r.status >= 500 and str(f) in r.emsg, r.data
        else:
            assert r.status == 503 and "pip install 'lynkr[vertex]'" in r.emsg and "google-auth" in r.emsg, r.data
            assert str(f) in r.emsg and r.headers.get("x-should-retry") == "false"
        assert fake.requests == []

    def test_gcloud_application_default_file(self, new_vx, make_proxy, tmp_path):
        """~/.config/gcloud/application_default_credentials.json is used when nothing else is there."""
        fake = new_vx()
        adc = tmp_path / "home" / ".config" / "gcloud" / "application_default_credentials.json"
        adc.parent.mkdir(parents=True)
        adc.write_text(json.dumps({"type": "authorized_user", "client_id": "x", "client_secret": "y",
                                   "refresh_token": "1//bogus", "token_uri": "http://127.0.0.1:9/token"}))
        p = make_proxy(vx_env(fake, PATH=empty_bin(tmp_path)))
        r = p.post(base_req())
        assert r.status >= 500 and "application_default_credentials.json" in r.emsg, r.data
        if not google_auth_installed():
            assert "pip install 'lynkr[vertex]'" in r.emsg
        assert fake.requests == []


# count_tokens
class TestVertexCountTokens:
    def test_forwarded_to_count_tokens(self, new_vx, make_proxy):
        fake = new_vx(tokens=[STATIC_TOKEN])
        p = make_proxy(vx_env(fake, VERTEX_ACCESS_TOKEN=STATIC_TOKEN))
        body = {"model": "claude-sonnet-4-5", "system": "Be brief.", "messages": [user("count me")],
                "tools": [GET_WEATHER]}
        r = p.post(body, path="/v1/messages/count_tokens", headers={"anthropic-beta": "token-counting-2024-11-01"})
        assert r.status == 200 and r.json() == {"input_tokens": 4242}, r.data
        assert r.headers.get("x-lynkr-token-count") == "exact" and r.headers.get("x-lynkr-provider") == "vertex"
        rec = fake.last
        assert rec.path == vx_path("count-tokens", "rawPredict"), rec.target
        assert rec.body["model"] == VMODEL and rec.body["messages"] == [user("count me")]
        assert rec.body["system"] == "Be brief." and rec.body["tools"][0]["name"] == "get_weather"
        assert rec.headers["authorization"] == f"Bearer {STATIC_TOKEN}"

    def test_count_follows_model_map(self, new_vx, make_proxy):
        fake = new_vx(tokens=[STATIC_TOKEN])
        fake.count_answer = 17
        p = make_proxy(vx_env(fake, VERTEX_ACCESS_TOKEN=STATIC_TOKEN, MODEL_MAP=f"claude-opus-*={VTX_OPUS}"))
        r = p.post({"model": "claude-opus-4-1", "messages": [user("hi")]}, path="/v1/messages/count_tokens")
        assert r.status == 200 and r.json() == {"input_tokens": 17} and fake.last.body["model"] == VTX_OPUS, r.data

    def test_count_with_metadata_token(self, new_vx, new_meta, make_proxy, tmp_path):
        fake = new_vx()
        meta = new_meta(vertex=fake)
        p = make_proxy(vx_env(fake, GCE_METADATA_HOST=f"127.0.0.1:{meta.port}", PATH=empty_bin(tmp_path)))
        r = p.post({"model": "claude-sonnet-4-5", "messages": [user("hi")]}, path="/v1/messages/count_tokens")
        assert r.status == 200 and r.headers.get("x-lynkr-token-count") == "exact", r.data
        assert tokens_seen(fake) == meta.issued and meta.fetches == 1


    # (a bug once, found by these tests: Provider.count_tokens posts through Provider._post, not Provider._request, so a 401 (a rev ...)
    def test_count_renews_a_revoked_token(self, new_vx, new_meta, make_proxy, tmp_path):
        fake = new_vx()
        meta = new_meta(vertex=fake)
        p = make_proxy(vx_env(fake, GCE_METADATA_HOST=f"127.0.0.1:{meta.port}", PATH=empty_bin(tmp_path)))
        count = {"model": "claude-sonnet-4-5", "messages": [user("hi")]}
        assert p.post(count, path="/v1/messages/count_tokens").headers.get("x-lynkr-token-count") == "exact"
        fake.revoke(meta.issued[0])
        r = p.post(count, path="/v1/messages/count_tokens")
        assert r.status == 200, r.data
        assert r.headers.get("x-lynkr-token-count") == "exact" and r.json() == {"input_tokens": 4242}, \
            (r.headers.get("x-lynkr-token-count"), r.data, meta.issued)
        assert meta.fetches == 2 and tokens_seen(fake)[-1] == meta.issued[1]


# lynkr.toml
class TestVertexConfigFile:
    def test_provider_table(self, new_vx, make_proxy, tmp_path):
        fake = new_vx(project="toml-proj-9", region="global", tokens=[STATIC_TOKEN])
        conf = tmp_path / "conf.toml"
        conf.write_text(f'[providers.v]\nkind = "vertex"\nproject = "toml-proj-9"\nregion = "global"\n'
                        f'base_url = "{fake.url}"\nmodel = "{VTX_OPUS}"\n')
        p = make_proxy({"LYNKR_CONFIG": str(conf), "VERTEX_ACCESS_TOKEN": STATIC_TOKEN})
        r = p.post(base_req(stream=True))
        assert texts(r.stream().ok()) == [VX_TEXT]
        assert r.headers.get("x-lynkr-provider") == "v" and r.headers.get("x-lynkr-model") == VTX_OPUS
        assert fake.last.path == vx_path(VTX_OPUS, "streamRawPredict", "toml-proj-9", "global")
        assert p.post(base_req()).status == 200 and fake.last.path == vx_path(VTX_OPUS, "rawPredict", "toml-proj-9", "global")

    @pytest.mark.parametrize("table,needle", [
        ('[providers.v]\nkind = "vertex"\nregion = "us-east5"\n', "providers.v.project"),
        ('[providers.v]\nkind = "vertex"\nproject = "p"\n', "providers.v.region"),
        ('[providers.v]\nkind = "vertex"\nproject = 7\nregion = "us-east5"\n', "providers.v.project"),
        ('[providers.o]\nkind = "ollama"\nregion = "us-east5"\n', "providers.o.region"),
        ('[providers.o]\nkind = "openai-compatible"\nbase_url = "http://127.0.0.1:9/v1"\nproject = "p"\n',
         "providers.o.project"),
    ], ids=["no-project", "no-region", "project-not-string", "region-on-ollama", "project-on-openai"])
    def test_bad_table_exits_2(self, tmp_path, table, needle):
        conf = tmp_path / "conf.toml"
        conf.write_text(table)
        r = run_lynkr(tmp_path, {"LYNKR_CONFIG": str(conf)})
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode == 2, f"exit {r.returncode}: {r.stderr}"
        assert len(lines) == 1 and needle in lines[0] and "conf.toml" in lines[0], r.stderr
        assert "Traceback" not in r.stderr


# Tokens never reach logs
class TestVertexLogs:
    def test_no_tokens_in_debug_logs(self, new_vx, new_meta, make_proxy, tmp_path):
        fake = new_vx()
        meta = new_meta(vertex=fake)
        p = make_proxy(vx_env(fake, GCE_METADATA_HOST=f"127.0.0.1:{meta.port}", PATH=empty_bin(tmp_path),
                              LOG_LEVEL="debug"))
        assert p.post(base_req()).status == 200
        assert p.post(base_req(stream=True)).stream().ok()
        fake.revoke(meta.issued[0])  # a renewal
        assert p.post(base_req()).status == 200
        meta.register = False
        fake.revoke(meta.issued[1])  # a 401 reaching the client
        assert p.post(base_req()).status == 401
        p.post(base_req(), path="/v1/messages/count_tokens")
        assert meta.fetches >= 3
        no_secrets(p, *meta.issued)

    def test_static_token_not_in_logs_or_health(self, vx):
        assert vx.proxy.post(base_req()).status == 200
        vx.fake.push(g_error(401, "UNAUTHENTICATED", UNAUTH_MSG))
        vx.proxy.post(base_req(stream=True))
        h = vx.proxy.call("GET", "/health")
        assert STATIC_TOKEN not in h.data.decode()
        no_secrets(vx.proxy, STATIC_TOKEN)


# -- OpenAI Responses API --

RS_USAGE_ANTH = {"input_tokens": 300, "output_tokens": 42, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 1200}

SYSTEM_CC = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.329.abc; cc_entrypoint=cli; cch=00000;"},
             {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
             {"type": "text", "text": "Be brief. ✓", "cache_control": EPH}]


def rs_post(stack: Stack, body: dict, stream: bool, **kw: Any) -> Resp:
    return stack.proxy.post({**body, "stream": True} if stream else body, **kw)


# MODEL_PROVIDER=openai-responses: a text answer
class TestResponsesPreset:
    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_text_answer_usage_headers_and_request_shape(self, rs, stream):
        reply = "Bonjour — ça va? ✓ 你好"
        rs.fake.push(lambda rec: rs.fake.answer(rec, [rs_text(reply)]))
        body = base_req(system=SYSTEM_CC, messages=[user("hi there")], max_tokens=2048)
        r = rs_post(rs, body, stream)
        m = pv_answer(r, stream)
        assert [(b["type"], b.get("text")) for b in m["content"]] == [("text", reply)], m
        assert m["stop_reason"] == "end_turn" and m["model"] == "claude-sonnet-4-5"
        assert {k: m["usage"].get(k) for k in RS_USAGE_ANTH} == RS_USAGE_ANTH, m["usage"]
        assert r.headers.get("x-lynkr-provider") == "openai-responses" and r.headers.get("x-lynkr-model") == "gpt-5"
        assert REQ_ID.match(r.headers.get("request-id", "")), r.headers
        q = rs.fake.last
        assert (q.method, q.path) == ("POST", "/v1/responses")
        assert q.headers.get("authorization") == f"Bearer {OPENAI_KEY}" and "x-api-key" not in q.headers
        b = q.body
        assert b["model"] == "gpt-5"
        assert b["instructions"] == "You are Claude Code, Anthropic's official CLI for Claude.\n\nBe brief. ✓"
        assert "billing-header" not in json.dumps(b)
        assert b["input"] == [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi there"}]}]
        assert b["max_output_tokens"] == 2048 and b["store"] is False
        assert b.get("stream", False) is stream
        assert not {"messages", "system", "max_tokens", "stream_options"} & b.keys()
        pv_no_leak(rs.fake)

    def test_stream_is_incremental_not_buffered(self, rs):
        """The first text delta reaches the client while the fake still holds back the rest."""
        def respond(rec):
            r = rs.fake.answer(rec, [rs_text("first words, then more words after a long pause")])
            data = b"".join(r.pieces)
            end = data.index(b"\n\n", data.index(b"response.output_text.delta")) + 2  # first text event's end
            sizes = list(itertools.accumulate(len(x) for x in r.pieces))
            r.pauses = {next(i for i, n in enumerate(sizes) if n >= end) + 1: 1.5}
            return r

        rs.fake.push(respond)
        t0 = time.monotonic()
        conn, resp = open_stream(rs.proxy.port, base_req(stream=True))
        try:
            first_text = next(t for t, ev, data in iter_events(resp, t0)
                              if ev == "content_block_delta" and data["delta"].get("type") == "text_delta")
            rest = resp.read()
        finally:
            conn.close()
        assert first_text < 1.2, f"first text delta after {first_text:.2f}s: buffered"
        assert b"message_stop" in rest

    def test_multi_turn_history_and_images(self, rs):
        """Earlier assistant text becomes output_text, user images input_image data URLs, the system a string."""
        rs.fake.push(lambda rec: rs.fake.answer(rec, [rs_text("A grey pixel.")]))
        body = base_req(system="Describe images.", messages=[
            user("hello"), assistant([text("Hi! Send me a picture.")]),
            user([image_b64(), text("what is this?")])])
        m = pv_answer(rs.proxy.post(body), False)
        assert m["content"][0]["text"] == "A grey pixel."
        items = rs.fake.last.body["input"]
        assert rs.fake.last.body["instructions"] == "Describe images."
        assert [(i["type"], i["role"]) for i in items] == [("message", "user"), ("message", "assistant"),
                                                          ("message", "user")]
        assert items[1]["content"] == [{"type": "output_text", "text": "Hi! Send me a picture."}]
        assert items[2]["content"][0]["type"] == "input_image"
        assert items[2]["content"][0]["image_url"] == f"data:image/png;base64,{PNG_B64}"
        assert items[2]["content"][1] == {"type": "input_text", "text": "what is this?"}

    def test_claude_code_shaped_request_passes_the_strict_fake(self, rs):
        """Claude Code's first request (system turn in messages, billing block, $schema tool, adaptive thinking,
        context_management, metadata, effort): everything OpenAI would refuse is translated or left out."""
        rs.fake.push(lambda rec: rs.fake.answer(rec, [rs_text("Listing files.")]))
        st = rs.proxy.post(cc_body(canary="cnry-77"), headers=CC_HEADERS).stream()
        assert block_summary(st.ok()["content"]) == [("text", "Listing files.")]
        b = rs.fake.last.body
        assert b["model"] == "gpt-5" and b["stream"] is True and b["store"] is False
        assert "billing-header" not in json.dumps(b) and b["instructions"].startswith("You are Claude Code")
        assert "cnry-77" in json.dumps(b["input"]) or "cnry-77" in b["instructions"]
        assert [t["name"] for t in b["tools"]] == ["Bash", "DeferredToolPlaceholder"]
        assert "$schema" not in json.dumps(b["tools"])
        assert b["reasoning"] == {"effort": "medium", "summary": "auto"}
        assert b["include"] == ["reasoning.encrypted_content"]
        assert b["max_output_tokens"] == 128000

    @pytest.mark.parametrize("max_tokens", [1, 10])
    def test_tiny_max_tokens_still_accepted(self, rs, max_tokens):
        """Claude Code probes with max_tokens: 1; the Responses API refuses max_output_tokens below 16."""
        r = rs.proxy.post(base_req(max_tokens=max_tokens))
        # (a bug once, found by this test: max_output_tokens under 16 went to the Responses API as sent)
        assert r.status == 200, (r.status, r.data[:400])
        assert rs.fake.last.body["max_output_tokens"] >= 16

    def test_count_tokens_is_estimated_without_the_upstream(self, rs):
        r = rs.proxy.post(base_req(messages=[user("hello " * 50)]), path="/v1/messages/count_tokens")
        assert r.status == 200 and r.json()["input_tokens"] >= 50, r.data
        assert all(q.path == "/v1/responses" for q in rs.fake.requests)


GET_TIME = {"name": "get_time", "description": "Local time in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"},
                                                              "tz_hint": {"type": "string"}}, "required": ["city"]}}
ARGS_A = {"city": "Paris — Île-de-France"}
ARGS_B = {"city": "Tōkyō 東京", "tz_hint": "Asia/Tokyo"}
SUMMARY = ("**Planning** the lookup 🔍", "Weather and time, both at once — in parallel.")


# The tool round trip: reasoning + two parallel calls, then their results
class TestResponsesToolRoundTrip:
    TOOLS = [GET_WEATHER, GET_TIME]

    def turn1(self, stack: Stack, stream: bool) -> dict:
        stack.fake.push(lambda rec: stack.fake.answer(rec, [
            rs_reasoning(*SUMMARY), rs_call("call_W1", "get_weather", ARGS_A), rs_call("call_T2", "get_time", ARGS_B)]))
        body = base_req(max_tokens=8192, thinking={"type": "enabled", "budget_tokens": 4096}, tools=self.TOOLS,
                        messages=[user("Weather in Paris and the time in Tokyo?")])
        r = rs_post(stack, body, stream)
        m = pv_answer(r, stream)
        return m

    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
    def test_reasoning_and_parallel_calls_round_trip(self, rs, stream):
        first = self.turn1(rs, stream)
        q1 = rs.fake.last.body
        # turn 1 as the fake saw it: flat strict-explicit tools, reasoning asked with its encrypted content
        assert [(t["type"], t["name"], t["strict"]) for t in q1["tools"]] == [
            ("function", "get_weather", False), ("function", "get_time", False)]
        assert q1["tools"][0]["parameters"] == WEATHER_SCHEMA and q1["tools"][0]["description"] == "Weather for a city"
        assert q1["reasoning"]["effort"] in ("low", "medium", "high") and q1["reasoning"]["summary"] == "auto"
        assert q1["include"] == ["reasoning.encrypted_content"] and q1["store"] is False
        issued = list(rs.fake.issued.items())[-1]  # (encrypted_content, reasoning id) the fake just made
        # what the client got: thinking (signed) + two complete tool_use blocks
        assert first["stop_reason"] == "tool_use"
        kinds = [b["type"] for b in first["content"]]
        assert kinds == ["thinking", "tool_use", "tool_use"], first["content"]
        thinking = first["content"][0]
        assert thinking["thinking"] == "\n\n".join(SUMMARY)
        assert thinking["signature"].startswith("lynkr-responses.") and len(thinking["signature"]) > 40
        calls_ = {b["id"]: (b["name"], b["input"]) for b in first["content"][1:]}
        assert calls_ == {"call_W1": ("get_weather", ARGS_A), "call_T2": ("get_time", ARGS_B)}
        assert {k: first["usage"].get(k) for k in RS_USAGE_ANTH} == RS_USAGE_ANTH

        # turn 2: the assistant content as received, and both results
        rs.fake.push(lambda rec: rs.fake.answer(rec, [rs_text("Paris: 18C. Tokyo: 21:04.")]))
        body = base_req(max_tokens=8192, thinking={"type": "enabled", "budget_tokens": 4096}, tools=self.TOOLS,
                        messages=[user("Weather in Paris and the time in Tokyo?"), assistant(first["content"]),
                                  user([tool_result("call_W1", "18C and sunny"),
                                        tool_result("call_T2", [text("21:04 JST")])])])
        r = rs_post(rs, body, not stream)  # the other mode for turn 2
        second = pv_answer(r, not stream)
        assert [b.get("text") for b in second["content"]] == ["Paris: 18C. Tokyo: 21:04."], second
        assert second["stop_reason"] == "end_turn"
        items = rs.fake.last.body["input"]
        assert [i["type"] for i in items] == ["message", "reasoning", "function_call", "function_call",
                                             "function_call_output", "function_call_output"], items
        assert items[1] == {"type": "reasoning", "id": issued[1], "encrypted_content": issued[0],
                            "summary": [{"type": "summary_text", "text": s} for s in SUMMARY]}
        assert [(i["call_id"], i["name"], json.loads(i["arguments"])) for i in items[2:4]] == [
            ("call_W1", "get_weather", ARGS_A), ("call_T2", "get_time", ARGS_B)]
        assert [(i["call_id"], i["output"]) for i in items[4:]] == [("call_W1", "18C and sunny"),
                                                                   ("call_T2", "21:04 JST")]
        assert len(rs.fake.requests) == 2
        pv_no_leak(rs.fake)

    def test_thinking_signed_elsewhere_is_not_sent(self, rs):
        """Claude's own signature and a Responses reasoning item this upstream never issued (another
        account's) are left out; the fake would refuse the latter with 400 'could not be decrypted'."""
        foreign_item = {"type": "reasoning", "id": "rs_other_account_1",
                        "encrypted_content": "gAAAAABnot-issued-by-this-fake" + "x" * 64,
                        "summary": [{"type": "summary_text", "text": "someone else's thoughts"}]}
        forged = {"type": "thinking", "thinking": "someone else's thoughts", "signature": encode_reasoning(foreign_item)}
        claude_sig = {"type": "thinking", "thinking": "Claude thought this.",
                      "signature": "EqQBCkgIBRABGAIiQKmr2n0cM5QpY0s1u8N2oQmWzq4ZGlL3c0x8pZ0m0i8x"}
        body = base_req(max_tokens=8192, thinking={"type": "enabled", "budget_tokens": 4096}, tools=[GET_WEATHER],
                        messages=[user("Weather in Paris?"),
                                  assistant([claude_sig, forged, tool_use("call_X1", "get_weather", {"city": "Paris"})]),
                                  user([tool_result("call_X1", "18C")])])
        for stream in (False, True):
            rs.fake.push(lambda rec: rs.fake.answer(rec, [rs_text("Done: 18C.")]))
            m = pv_answer(rs_post(rs, body, stream), stream)
            assert m["content"][-1]["text"] == "Done: 18C.", m
            items = rs.fake.last.body["input"]
            assert [i["type"] for i in items] == ["message", "function_call", "function_call_output"], items
            assert "someone else" not in json.dumps(rs.fake.last.body)
            assert "Claude thought" not in json.dumps(rs.fake.last.body)

    def test_fake_refuses_reasoning_it_did_not_issue(self, rs):
        """The fake's own check (so the test above proves something): a forged reasoning item sent straight
        to it is a 400 'could not be decrypted'."""
        body = {"model": "gpt-5", "store": False, "include": ["reasoning.encrypted_content"], "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "reasoning", "id": "rs_x", "encrypted_content": "gAAAAABforged", "summary": []},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "yo"}]}]}
        r = call(rs.fake.port, "POST", "/v1/responses", body, {"authorization": f"Bearer {OPENAI_KEY}"},
                 defaults=False)
        assert r.status == 400 and "could not be decrypted" in r.emsg and dig(r.json(), "error.code") == \
            "invalid_encrypted_content"


# azure-openai-responses
@pytest.fixture(scope="module")
def azrs_stack(tmp_path_factory):
    fake = FakeAzureResponses()
    env = {"MODEL_PROVIDER": "azure-openai-responses", "AZURE_OPENAI_ENDPOINT": fake.url,
           "AZURE_OPENAI_API_KEY": AZOAI_KEY, "AZURE_OPENAI_DEPLOYMENT": "gpt-5-prod", "UPSTREAM_MAX_RETRIES": "0"}
    yield from shared_stack(tmp_path_factory, "azrs", fake, env)


class TestAzureResponses:
    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_path_key_header_and_deployment(self, azrs_stack, stream):
        st_ = azrs_stack
        st_.fake.reset()
        m = pv_answer(rs_post(st_, base_req(system="Be brief."), stream), stream)
        assert m["content"] == [{"type": "text", "text": st_.fake.hello}] and m["stop_reason"] == "end_turn"
        q = st_.fake.last
        assert (q.method, q.path, q.query) == ("POST", "/openai/v1/responses", "")
        assert q.headers.get("api-key") == AZOAI_KEY and "authorization" not in q.headers
        assert q.body["model"] == "gpt-5-prod" and q.body["store"] is False and q.body["instructions"] == "Be brief."
        pv_no_leak(st_.fake)

    def test_reasoning_round_trip_on_azure(self, azrs_stack):
        st_ = azrs_stack
        st_.fake.reset()
        t = TestResponsesToolRoundTrip()
        first = t.turn1(st_, True)
        assert [b["type"] for b in first["content"]] == ["thinking", "tool_use", "tool_use"]
        st_.fake.push(lambda rec: st_.fake.answer(rec, [rs_text("ok")]))
        body = base_req(max_tokens=8192, thinking={"type": "enabled", "budget_tokens": 4096}, tools=t.TOOLS,
                        messages=[user("q"), assistant(first["content"]),
                                  user([tool_result("call_W1", "a"), tool_result("call_T2", "b")])])
        assert pv_answer(rs_post(st_, body, True), True)["content"][0]["text"] == "ok"
        items = st_.fake.last.body["input"]
        assert [i["type"] for i in items][:2] == ["message", "reasoning"]
        assert items[1]["encrypted_content"] in st_.fake.issued


# Errors
class TestResponsesErrors:
    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_429_is_a_rate_limit_error_with_retry_after(self, rs, stream):
        rs.fake.push(rs.fake.error(429, "Rate limit reached for gpt-5 in organization org-x on tokens per min "
                                        "(TPM): Limit 30000, Used 30000, Requested 1200.", "rate_limit_error",
                                   "rate_limit_exceeded", headers=(("retry-after", "7"),)))
        t0 = time.monotonic()
        r = rs_post(rs, base_req(), stream)
        assert time.monotonic() - t0 < 5, "retries were not exhausted quickly"
        assert r.status == 429, (r.status, r.data[:500])
        assert r.etype == "rate_limit_error" and "Rate limit reached" in r.emsg, r.data
        assert r.headers.get("retry-after") == "7"
        assert len(rs.fake.requests) == 1  # UPSTREAM_MAX_RETRIES=0

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_400_is_invalid_request_error(self, rs, stream):
        rs.fake.push(rs.fake.error(400, "Invalid 'input[0].content[0].text': string too long.", "invalid_request_error",
                                   "string_above_max_length", param="input[0].content[0].text"))
        r = rs_post(rs, base_req(), stream)
        assert r.status == 400 and r.etype == "invalid_request_error", (r.status, r.data[:500])
        assert "string too long" in r.emsg
        assert r.headers.get("x-should-retry") == "false"

    @pytest.mark.parametrize("how", ["response.failed", "error"])
    def test_failure_mid_stream_is_an_error_event(self, rs, how):
        def respond(rec):
            out = rs.fake.materialize(rec, [rs_text("partial answer that never finishes")])
            evs = rs.fake.events(rec, out)
            at = next(i for i, e in enumerate(evs) if e["type"] == "response.output_text.delta") + 2
            if how == "response.failed":
                last = {"type": "response.failed", "response": rs.fake.response(
                    rec, [], "failed", error={"code": "server_error", "message": "The model produced invalid content."})}
            else:
                last = {"type": "error", "code": "server_error", "message": "The model produced invalid content.",
                        "param": None}
            data = rs.fake.sse(evs[:at] + [last])
            return stream_reply(data, pieces=rs_split(data), gap=0.0005)

        rs.fake.push(respond)
        r = rs_post(rs, base_req(), True)
        st = r.stream()
        assert st.error is not None and not st.complete, st.events[-3:]
        assert st.error["type"] == "api_error" and "invalid content" in st.error["message"]
        assert st.content and st.content[0]["type"] == "text" and st.content[0]["text"].startswith("parti")
        assert not any(ev == "message_stop" for ev, _ in st.events)

    def test_failed_json_response_is_an_error(self, rs):
        rs.fake.push(lambda rec: json_reply(rs.fake.response(rec, [], "failed", error={
            "code": "rate_limit_exceeded", "message": "slow down"})))
        r = rs.proxy.post(base_req())
        assert r.status == 429 and r.etype == "rate_limit_error" and "slow down" in r.emsg, r.data

    def test_wrong_key_is_an_authentication_error(self, tmp_path, make_proxy):
        fake = FakeResponses()
        try:
            p = make_proxy(rs_env(fake, OPENAI_API_KEY="sk-wrong-key-000000000"))
            r = p.post(base_req())
            assert r.status == 401 and r.etype == "authentication_error", r.data
            assert "Incorrect API key" in r.emsg
        finally:
            fake.close()


# lynkr.toml: [providers.r] kind = "openai-responses"
class TestResponsesToml:
    @pytest.fixture
    def two(self, tmp_path, make_proxy):
        r, r2 = FakeResponses(), FakeResponses()
        r2.key = "sk-second-openai-account-99"
        pv_toml(tmp_path, textwrap.dedent(f"""\
            [providers.r]
            kind = "openai-responses"
            base_url = "{r.url}/v1"
            api_key = "$RS_KEY_R"

            [providers.r2]
            kind = "openai-responses"
            base_url = "{r2.url}/v1"
            api_key = "{r2.key}"

            [router]
            default = "r2,gpt-5-mini"
            """))
        try:
            p = make_proxy({"RS_KEY_R": OPENAI_KEY})
            yield r, r2, p
        finally:
            r.close()
            r2.close()

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_explicit_route_to_a_responses_provider(self, two, stream):
        r, r2, p = two
        res = rs_post(Stack(r, p), base_req(model="r,gpt-5"), stream)
        m = pv_answer(res, stream)
        assert m["content"][0]["text"] == r.hello and m["model"] == "r,gpt-5"
        pv_headers(res, "r", "gpt-5", "explicit")
        assert len(r.requests) == 1 and r2.requests == []
        assert r.last.body["model"] == "gpt-5" and r.last.headers["authorization"] == f"Bearer {OPENAI_KEY}"
        res = rs_post(Stack(r2, p), base_req(), stream)  # the default route
        pv_headers(res, "r2", "gpt-5-mini", "default")
        assert r2.last.body["model"] == "gpt-5-mini" and r2.last.headers["authorization"] == f"Bearer {r2.key}"
        pv_no_leak(r, r2)

    def test_reasoning_from_one_account_is_not_sent_to_another(self, two):
        """r2 signs a reasoning item; the next turn routed to r leaves it out (r would refuse it), the same
        turn routed back to r2 carries it."""
        r, r2, p = two
        r2.push(lambda rec: r2.answer(rec, [rs_reasoning("Thinking on r2."), rs_call("call_Q", "get_weather",
                                                                                        {"city": "Oslo"})]))
        think = {"max_tokens": 8192, "thinking": {"type": "enabled", "budget_tokens": 4096}, "tools": [GET_WEATHER]}
        first = pv_answer(p.post(base_req(model="r2,gpt-5", stream=True, messages=[user("Oslo?")], **think)), True)
        assert [b["type"] for b in first["content"]] == ["thinking", "tool_use"]
        follow = [user("Oslo?"), assistant(first["content"]), user([tool_result("call_Q", "-3C")])]
        r.push(lambda rec: r.answer(rec, [rs_text("Cold in Oslo.")]))
        m = pv_answer(p.post(base_req(model="r,gpt-5", messages=follow, **think)), False)
        assert m["content"][-1]["text"] == "Cold in Oslo."
        assert [i["type"] for i in r.last.body["input"]] == ["message", "function_call", "function_call_output"]
        r2.push(lambda rec: r2.answer(rec, [rs_text("Cold in Oslo (r2).")]))
        m = pv_answer(p.post(base_req(model="r2,gpt-5", messages=follow, **think)), False)
        assert m["content"][-1]["text"] == "Cold in Oslo (r2)."
        assert [i["type"] for i in r2.last.body["input"]] == ["message", "reasoning", "function_call",
                                                              "function_call_output"]


# -- AWS SigV4, credentials and Bedrock HTTP errors (in-process; botocore is the oracle) --

SUITE_CREDS = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
SUITE_DATE = "20150830T123600Z"

UNRESERVED = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _suite_signature(method: str, url: str, headers: list[tuple[str, str]] = (), body: bytes = b"") -> str:
    auth = sigv4_authorization(method, url, [*headers, ("X-Amz-Date", SUITE_DATE)], hashlib.sha256(body).hexdigest(),
                               SUITE_CREDS, "us-east-1", "service", SUITE_DATE)
    return auth


# The aws-sig-v4-test-suite cases (request and expected Authorization as published in awslabs/aws-c-auth,
# tests/aws-signing-test-suite/v4/*/header-signed-request.txt).
@pytest.mark.parametrize("case,method,url,headers,signed,signature", [
    ("get-vanilla", "GET", "https://example.amazonaws.com/", [], "host;x-amz-date",
     "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    ("post-vanilla", "POST", "https://example.amazonaws.com/", [], "host;x-amz-date",
     "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    ("get-vanilla-query-order-key-case", "GET", "https://example.amazonaws.com/?Param2=value2&Param1=value1", [],
     "host;x-amz-date", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    ("get-header-value-trim", "GET", "https://example.amazonaws.com/",
     [("My-Header1", " value1"), ("My-Header2", ' "a   b   c"')], "host;my-header1;my-header2;x-amz-date",
     "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
    ("get-utf8", "GET", "https://example.amazonaws.com/\u1234", [], "host;x-amz-date",
     "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
    ("get-vanilla-utf8-query", "GET", "https://example.amazonaws.com/?\u1234=bar", [], "host;x-amz-date",
     "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"),
    ("get-unreserved", "GET", f"https://example.amazonaws.com/{UNRESERVED}", [], "host;x-amz-date",
     "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"),
    ("get-vanilla-query-unreserved", "GET", f"https://example.amazonaws.com/?{UNRESERVED}={UNRESERVED}", [],
     "host;x-amz-date", "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"),
])
def test_sigv4_published_vectors(case, method, url, headers, signed, signature):
    assert _suite_signature(method, url, headers) == (
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        f"SignedHeaders={signed}, Signature={signature}")


EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def test_sigv4_published_vector_with_session_token():
    creds = AwsCredentials(SUITE_CREDS.access_key, SUITE_CREDS.secret_key,
                           "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267")
    auth = sigv4_authorization("GET", "https://example.amazonaws.com/",
                               [("X-Amz-Date", SUITE_DATE), ("X-Amz-Security-Token", creds.session_token)],
                               EMPTY_SHA256, creds, "us-east-1", "service", SUITE_DATE)
    assert auth.endswith("SignedHeaders=host;x-amz-date;x-amz-security-token, "
                         "Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8")


SUITE_NOW = datetime.datetime(2015, 8, 30, 12, 36, 0, tzinfo=datetime.UTC)


def test_sigv4_headers_published_form_vector_signs_content_length_and_payload_hash():
    """post-x-www-form-urlencoded: the whole sigv4_headers path, x-amz-content-sha256 and content-length signed."""
    added = dict(sigv4_headers("POST", "https://example.amazonaws.com/",
                               [("Content-Type", "application/x-www-form-urlencoded"), ("Content-Length", "13")],
                               b"Param1=value1", SUITE_CREDS, "us-east-1", "service", SUITE_NOW))
    assert added == {
        "x-amz-date": SUITE_DATE,
        "x-amz-content-sha256": "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
        "authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                         "SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, "
                         "Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
    }


def bedrock_invoke_url(region: str, model: str, stream: bool) -> str:
    """The InvokeModel URL lynkr builds for a region's default endpoint (compared with botocore's)."""
    return _bedrock_url(ProviderSpec(name="b", preset="bedrock", region=region), model, stream)


def _botocore_authorization(monkeypatch, method, url, headers, payload, creds, region, service, now):
    """What botocore's SigV4Auth puts in Authorization for the same request at the same instant."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: now.replace(tzinfo=None))
    request = botocore.awsrequest.AWSRequest(method=method, url=url, headers=dict(headers), data=payload)
    boto_creds = botocore.credentials.Credentials(creds.access_key, creds.secret_key, creds.session_token or None)
    botocore.auth.SigV4Auth(boto_creds, service, region).add_auth(request)
    return request.headers


AWS_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
AWS_ARN = f"arn:aws:bedrock:eu-west-1:123456789012:inference-profile/{AWS_MODEL}"
AWS_NOW = datetime.datetime(2025, 10, 7, 9, 5, 3, tzinfo=datetime.UTC)
AWS_BODY = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
                   "messages": [{"role": "user", "content": "héllo"}]}).encode()


@pytest.mark.parametrize("method,url,headers,token", [
    ("POST", bedrock_invoke_url("us-east-1", AWS_MODEL, True),
     [("content-type", "application/json"), ("accept", "application/vnd.amazon.eventstream")], ""),
    ("POST", bedrock_invoke_url("eu-west-1", AWS_ARN, False), [("Content-Type", "application/json")], "FQoGZXIvYXdzEB"),
    ("POST", bedrock_invoke_url("us-west-2", AWS_MODEL, False),
     [("content-type", "application/json"), ("X-Custom-Thing", "  two   spaces\tand tab "),
      ("user-agent", "lynkr/0.1.0"), ("expect", "100-continue"), ("x-amzn-trace-id", "Root=1")], "tok/+="),
    ("GET", "https://bedrock.us-east-1.amazonaws.com/foundation-models?byProvider=anthropic&byOutputModality=TEXT&a=",
     [], ""),
    ("GET", "https://example.amazonaws.com:8443/a%20b/c?z=1&b=%2F&b=%20", [("X-Dup", "1"), ("x-dup", "2")], ""),
])
def test_sigv4_equals_botocore(monkeypatch, method, url, headers, token):
    creds = AwsCredentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", token)
    ours = sigv4_headers(method, url, headers, AWS_BODY, creds, "us-east-1", "bedrock", AWS_NOW)
    names = [name for name, _ in ours]
    assert names == ["x-amz-date", "x-amz-content-sha256", *(["x-amz-security-token"] if token else []), "authorization"]
    # botocore gets our x-amz-content-sha256 (SigV4Auth only adds it for S3) and adds the rest itself.
    theirs = _botocore_authorization(monkeypatch, method, url, [*headers, ours[1]], AWS_BODY, creds, "us-east-1",
                                     "bedrock", AWS_NOW)
    assert dict(ours)["authorization"] == theirs["Authorization"]
    assert dict(ours)["x-amz-date"] == theirs["X-Amz-Date"] == "20251007T090503Z"
    if token:
        assert dict(ours)["x-amz-security-token"] == theirs["X-Amz-Security-Token"] == token


def test_sigv4_double_encodes_the_path_like_botocore():
    """`:` in the model id is sent as %3A and signed as %253A: found by reading the canonical request."""
    url = bedrock_invoke_url("us-east-1", AWS_MODEL, True)
    assert "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream" in url
    request = botocore.awsrequest.AWSRequest(method="POST", url=url, headers={"X-Amz-Date": "x"}, data=b"")
    request.context["timestamp"] = "20250101T000000Z"
    canonical = botocore.auth.SigV4Auth(None, "bedrock", "us-east-1").canonical_request(request)
    assert canonical.split("\n")[1] == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%253A0/invoke-with-response-stream"


@pytest.mark.parametrize("model", [AWS_MODEL, AWS_ARN, "anthropic.claude-3-haiku-20240307-v1:0"])
def test_signing_matches_a_real_botocore_bedrock_client(monkeypatch, model):
    """End to end: botocore's own bedrock-runtime client builds the URL and signs; we sign what it signed."""
    for name in ("AWS_BEARER_TOKEN_BEDROCK", "AWS_PROFILE", "AWS_ACCESS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: AWS_NOW.replace(tzinfo=None))
    seen: dict[str, object] = {}

    def before_sign(request, **kwargs):
        seen["signed_names"] = set(request.headers.keys())

    def before_send(request, **kwargs):
        seen["request"] = request
        raise RuntimeError("captured")  # never reach the network

    session = botocore.session.get_session()
    client = session.create_client("bedrock-runtime", region_name="eu-west-1", aws_access_key_id="AKIDEXAMPLE",
                                   aws_secret_access_key="secret/key+", aws_session_token="session-token")
    client.meta.events.register("before-sign", before_sign)
    client.meta.events.register("before-send", before_send)
    with pytest.raises(RuntimeError, match="captured"):
        client.invoke_model_with_response_stream(modelId=model, body=AWS_BODY, contentType="application/json")
    request = seen["request"]
    assert request.url == bedrock_invoke_url("eu-west-1", model, True)
    headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()
               if k in seen["signed_names"]]
    creds = AwsCredentials("AKIDEXAMPLE", "secret/key+", "session-token")
    ours = sigv4_headers("POST", request.url, headers, AWS_BODY, creds, "eu-west-1", "bedrock", AWS_NOW)
    # botocore signs no x-amz-content-sha256 for Bedrock; with the same headers the signatures agree.
    without_hash = sigv4_authorization("POST", request.url, [*headers, *ours[:1], *ours[2:3]],
                                       hashlib.sha256(AWS_BODY).hexdigest(), creds, "eu-west-1", "bedrock",
                                       "20251007T090503Z")
    assert without_hash == request.headers["Authorization"].decode()
    assert "x-amz-content-sha256" in dict(ours)["authorization"]


def test_sigv4_naive_datetime_is_utc_and_aware_is_converted():
    paris = datetime.timezone(datetime.timedelta(hours=2))
    for now in (datetime.datetime(2015, 8, 30, 12, 36), datetime.datetime(2015, 8, 30, 14, 36, tzinfo=paris)):
        assert dict(sigv4_headers("GET", "https://example.amazonaws.com/", [], b"", SUITE_CREDS, "us-east-1",
                                  "service", now))["x-amz-date"] == SUITE_DATE


def _aws_write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


@pytest.fixture
def aws_home(tmp_path):
    _aws_write(tmp_path / ".aws" / "credentials", "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = FILESECRET\n"
           "[work]\naws_access_key_id = WORKKEY\naws_secret_access_key = WORKSECRET\naws_session_token = WORKTOKEN\n")
    _aws_write(tmp_path / ".aws" / "config", "[default]\nregion = eu-central-1\n[profile work]\nregion = ap-south-1\n"
           "[profile cfgonly]\naws_access_key_id = CFGKEY\naws_secret_access_key = CFGSECRET\nregion = us-west-2\n"
           "[profile half]\naws_access_key_id = HALFKEY\n")
    return tmp_path


def test_environment_beats_the_profile(aws_home):
    environ = {"HOME": str(aws_home), "AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "ENVSECRET",
               "AWS_SESSION_TOKEN": "ENVTOKEN", "AWS_PROFILE": "work"}
    assert aws_credentials(environ) == AwsCredentials("ENVKEY", "ENVSECRET", "ENVTOKEN", "environment")


def test_default_profile_from_the_credentials_file(aws_home):
    creds = aws_credentials({"HOME": str(aws_home)})
    assert (creds.access_key, creds.secret_key, creds.session_token) == ("FILEKEY", "FILESECRET", "")
    assert creds.source == f"{aws_home}/.aws/credentials [default]"
    assert aws_region({"HOME": str(aws_home)}) == "eu-central-1"


def test_aws_profile_selects_a_section_and_its_region(aws_home):
    environ = {"HOME": str(aws_home), "AWS_PROFILE": "work"}
    creds = aws_credentials(environ)
    assert (creds.access_key, creds.secret_key, creds.session_token) == ("WORKKEY", "WORKSECRET", "WORKTOKEN")
    assert aws_region(environ) == "ap-south-1"


def test_config_file_profile_section_holds_keys_too(aws_home):
    environ = {"HOME": str(aws_home), "AWS_PROFILE": "cfgonly"}
    creds = aws_credentials(environ)
    assert (creds.access_key, creds.secret_key) == ("CFGKEY", "CFGSECRET")
    assert creds.source == f"{aws_home}/.aws/config [profile cfgonly]"
    assert aws_region(environ) == "us-west-2"


def test_region_variables_beat_the_profile(aws_home):
    environ = {"HOME": str(aws_home), "AWS_DEFAULT_REGION": "sa-east-1"}
    assert aws_region(environ) == "sa-east-1"
    assert aws_region({**environ, "AWS_REGION": "ca-central-1"}) == "ca-central-1"


def test_explicit_file_locations(tmp_path):
    creds_file = _aws_write(tmp_path / "c.ini", "[x]\naws_access_key_id = K\naws_secret_access_key = S\n")
    config_file = _aws_write(tmp_path / "g.ini", "[profile x]\nregion = us-east-2\n")
    environ = {"HOME": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": creds_file, "AWS_CONFIG_FILE": config_file,
               "AWS_PROFILE": "x"}
    assert aws_credentials(environ).access_key == "K"
    assert aws_region(environ) == "us-east-2"


def test_nothing_configured_is_none(tmp_path):
    assert aws_credentials({"HOME": str(tmp_path)}) is None
    assert aws_region({"HOME": str(tmp_path)}) == ""


def test_half_set_pairs_are_errors(aws_home):
    with pytest.raises(ValueError, match="AWS_ACCESS_KEY_ID is set in the environment but AWS_SECRET_ACCESS_KEY"):
        aws_credentials({"HOME": str(aws_home), "AWS_ACCESS_KEY_ID": "K"})
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY is set in the environment but AWS_ACCESS_KEY_ID"):
        aws_credentials({"HOME": str(aws_home), "AWS_SECRET_ACCESS_KEY": "S"})
    with pytest.raises(ValueError, match=r"aws_access_key_id is set in .*config \[profile half\]"):
        aws_credentials({"HOME": str(aws_home), "AWS_PROFILE": "half"})


def test_a_named_profile_that_does_not_exist_is_an_error(aws_home):
    with pytest.raises(ValueError, match="'nope'"):
        aws_credentials({"HOME": str(aws_home), "AWS_PROFILE": "nope"})


@pytest.mark.parametrize("status,error_header,body,out_status,out_type", [
    (429, "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/", {"message": "Too many requests"},
     429, "rate_limit_error"),
    (400, "ValidationException", {"message": "max_tokens: 200000 > 64000"}, 400, "invalid_request_error"),
    (403, "AccessDeniedException:http://internal.amazon.com/coral/com.amazon.coral.service/",
     {"Message": "You don't have access to the model"}, 403, "permission_error"),
    (403, "UnrecognizedClientException", {"message": "The security token included in the request is invalid."},
     401, "authentication_error"),
    (403, "ExpiredTokenException", {"message": "The security token included in the request is expired"},
     401, "authentication_error"),
    (404, "ResourceNotFoundException", {"message": "Model not found"}, 404, "not_found_error"),
    (429, "ServiceQuotaExceededException", {"message": "quota"}, 429, "rate_limit_error"),
    (429, "ModelNotReadyException", {"message": "not ready"}, 503, "api_error"),
    (503, "ServiceUnavailableException", {"message": "unavailable"}, 503, "api_error"),
    (408, "ModelTimeoutException", {"message": "timed out"}, 504, "timeout_error"),
    (500, "InternalServerException", {"message": "oops"}, 500, "api_error"),
])
def test_bedrock_http_errors(status, error_header, body, out_status, out_type):
    error = bedrock_error(status, json.dumps(body).encode(), {"x-amzn-errortype": error_header,
                                                               "retry-after": "3"})
    kind = error_header.split(":")[0]
    message = body.get("message") or body.get("Message")
    assert (error.status, error.error_type) == (out_status, out_type)
    assert error.message == f"Amazon Bedrock returned HTTP {status} {kind}: {message}"
    assert error.headers == {"retry-after": "3"}


def test_bedrock_http_error_without_the_header_uses_the_body_type_or_the_status():
    error = bedrock_error(400, b'{"__type": "com.amazon.coral.validate#ValidationException", "message": "bad"}', {})
    assert (error.status, error.message) == (400, "Amazon Bedrock returned HTTP 400 ValidationException: bad")
    error = bedrock_error(502, b"<html>Bad Gateway</html>", {"X-Amzn-ErrorType": ""})
    assert (error.status, error.error_type, error.message) == (
        502, "api_error", "Amazon Bedrock returned HTTP 502 error: <html>Bad Gateway</html>")


# -- Claude on Amazon Bedrock --

BR_ARN = f"arn:aws:bedrock:{BR_REGION}:123456789012:application-inference-profile/a1b2c3d4e5f6"


@pytest.fixture
def new_br():
    yield from _fake_factory(FakeBedrock)


# The fake itself agrees with botocore (so a green test means AWS would have accepted lynkr's request).
class TestFakeBedrockOracle:
    def test_encoder_frames_parse_with_botocore(self):
        msg = br_message([text("a\u00fc\n"), tool_use("toolu_bdrk_X1", "Bash", {"command": "ls"})], "tool_use")
        frames = [es_chunk(e) for e in es_events(msg)] + [es_exception("throttlingException", "slow")]
        buf = botocore.eventstream.EventStreamBuffer()
        for piece in split_at(b"".join(frames), es_awkward_points(frames)):
            buf.add_data(piece)
        parsed = list(buf)
        assert len(parsed) == len(frames)
        for p, event in zip(parsed[:-1], es_events(msg)):
            assert p.headers == {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
            assert json.loads(base64.b64decode(json.loads(p.payload)["bytes"])) == event
        assert parsed[-1].headers[":exception-type"] == "throttlingException"

    @pytest.mark.parametrize("token", [None, BR_SESSION_TOKEN])
    def test_a_real_botocore_client_is_accepted_and_parses_the_stream(self, new_br, token):
        """botocore signs and the fake verifies; the fake's event stream is read by botocore's own parser."""
        fake = new_br()
        key, secret = (BR_TOKEN_KEY_ID, BR_TOKEN_SECRET) if token else (BR_KEY_ID, BR_SECRET)
        client = botocore.session.get_session().create_client(
            "bedrock-runtime", region_name=BR_REGION, endpoint_url=fake.url, aws_access_key_id=key,
            aws_secret_access_key=secret, aws_session_token=token)
        body = json.dumps({"anthropic_version": BR_VERSION, "max_tokens": 50, "messages": [user("hi \u00fc")]})
        out = client.invoke_model(modelId=BR_ARN, body=body, contentType="application/json")
        assert json.loads(out["body"].read())["content"] == [text(BR_TEXT)]
        out = client.invoke_model_with_response_stream(modelId=BR_INVOKE_ID, body=body, contentType="application/json")
        events = [json.loads(e["chunk"]["bytes"]) for e in out["body"]]  # botocore decoded the base64
        assert [e["type"] for e in events][0] == "message_start" and events[-1]["type"] == "message_stop"
        assert len(fake.verified) == 2 and all(v["key"] == key for v in fake.verified)
        if token:
            assert "x-amz-security-token" in fake.verified[0]["signed"]

    def test_tampering_is_refused(self, new_br):
        """A wrong secret, a changed body: the fake answers InvalidSignatureException as AWS does."""
        fake = new_br()
        body = json.dumps({"anthropic_version": BR_VERSION, "max_tokens": 5, "messages": [user("hi")]}).encode()
        client = botocore.session.get_session().create_client(
            "bedrock-runtime", region_name=BR_REGION, endpoint_url=fake.url, aws_access_key_id=BR_KEY_ID,
            aws_secret_access_key="not-the-secret")
        with pytest.raises(client.exceptions.ClientError, match="signature we calculated does not match"):
            client.invoke_model(modelId=BR_INVOKE_ID, body=body, contentType="application/json")
        assert fake.verified == []


def botocore_request(op: str, model: str, endpoint: str, body: bytes = b"{}", region: str = BR_REGION,
                     token: str | None = None) -> botocore.awsrequest.AWSPreparedRequest:
    """The request botocore's own bedrock-runtime client would send (captured before the network)."""
    seen: dict[str, Any] = {}

    def before_send(request, **kwargs):
        seen["request"] = request
        raise RuntimeError("captured")

    client = botocore.session.get_session().create_client(
        "bedrock-runtime", region_name=region, endpoint_url=endpoint, aws_access_key_id=BR_KEY_ID,
        aws_secret_access_key=BR_SECRET, aws_session_token=token)
    client.meta.events.register("before-send", before_send)
    with pytest.raises(RuntimeError, match="captured"):
        getattr(client, op)(modelId=model, body=body, contentType="application/json")
    return seen["request"]


def diag(r: Resp, fake: FakeHTTP, proxy: Proxy | None = None) -> str:
    last = fake.requests[-1] if fake.requests else None
    return (f"client got {r.status}: {r.data[:1500]!r}\nfake last: {last and last.target} "
            f"{last and dict(last.headers)} {last and last.raw[:800]!r}\n" + (proxy.stderr[-2500:] if proxy else ""))


# Environment: access keys, InvokeModel, JSON and event-stream, signature verified
class TestBedrockEnvKeys:
    def test_json_answer_cross_region_id(self, br):
        r = br.proxy.post(base_req(temperature=0.25), headers={"anthropic-beta": "interleaved-thinking-2025-05-14,"
                                                                                  "context-1m-2025-08-07"})
        assert r.status == 200, diag(r, br.fake, br.proxy)
        assert r.json()["content"] == [text(BR_TEXT)] and r.json()["id"] == "msg_bdrk_01FAKE"
        assert isinstance(r.json().get("model"), str) and r.json()["model"], r.json()  # Bedrock named none
        assert r.headers.get("x-lynkr-provider") == "bedrock" and r.headers.get("x-lynkr-model") == BR_INVOKE_ID
        rec = br.fake.last
        assert rec.path == urllib.parse.urlsplit(botocore_request("invoke_model", BR_INVOKE_ID, br.fake.url).url).path
        assert rec.path == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
        b = rec.body
        assert "model" not in b and "stream" not in b and b["anthropic_version"] == BR_VERSION
        assert b["anthropic_beta"] == ["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"]
        assert b["messages"] == [user("hi")] and b["max_tokens"] == 1024 and b["temperature"] == 0.25
        assert "anthropic-beta" not in rec.headers and "anthropic-version" not in rec.headers
        [v] = br.fake.verified
        assert v["key"] == BR_KEY_ID and {"host", "x-amz-date", "x-amz-content-sha256", "content-type"} <= set(v["signed"])
        assert "x-amz-security-token" not in rec.headers

    def test_streamed_answer_cross_region_id(self, br):
        r = br.proxy.post(base_req(stream=True))
        msg = r.stream().ok()
        assert texts(msg) == [BR_TEXT] and msg["stop_reason"] == "end_turn", diag(r, br.fake, br.proxy)
        rec = br.fake.last
        want = botocore_request("invoke_model_with_response_stream", BR_INVOKE_ID, br.fake.url)
        assert rec.path == urllib.parse.urlsplit(want.url).path
        assert rec.path.endswith("-v1%3A0/invoke-with-response-stream")
        assert "stream" not in rec.body and "model" not in rec.body
        assert len(br.fake.verified) == 1
        # one Accept, naming what this operation answers (on InvokeModel it names the body's type)
        assert rec.headers.get("accept") == "application/vnd.amazon.eventstream"

    @pytest.mark.parametrize("stream", [False, True])
    def test_arn_model_id_is_one_encoded_segment(self, new_br, make_proxy, stream):
        fake = new_br()
        p = make_proxy(br_env(fake, MODEL_MAP=f"claude-opus-*={BR_ARN}"))
        r = p.post(base_req(model="claude-opus-4-1", stream=stream))
        if stream:
            assert texts(r.stream().ok()) == [BR_TEXT], diag(r, fake, p)
        else:
            assert r.status == 200 and r.json()["content"] == [text(BR_TEXT)], diag(r, fake, p)
        op = "invoke_model_with_response_stream" if stream else "invoke_model"
        want = urllib.parse.urlsplit(botocore_request(op, BR_ARN, fake.url).url).path
        assert fake.last.path == want, (fake.last.path, want)
        assert "%2F" in want and "%3A" in want  # the ARN's '/' and ':' stay inside the segment
        assert r.headers.get("x-lynkr-model") == BR_ARN and len(fake.verified) == 1

    def test_session_token_is_sent_and_signed(self, new_br, make_proxy):
        fake = new_br()
        p = make_proxy(br_env(fake, AWS_ACCESS_KEY_ID=BR_TOKEN_KEY_ID, AWS_SECRET_ACCESS_KEY=BR_TOKEN_SECRET,
                              AWS_SESSION_TOKEN=BR_SESSION_TOKEN))
        for stream in (False, True):
            r = p.post(base_req(stream=stream))
            assert r.status == 200, diag(r, fake, p)
            assert fake.last.headers.get("x-amz-security-token") == BR_SESSION_TOKEN
        assert len(fake.verified) == 2
        assert all("x-amz-security-token" in v["signed"] and v["key"] == BR_TOKEN_KEY_ID for v in fake.verified)

    @pytest.mark.parametrize("stream", [False, True])
    def test_wrong_secret_is_an_authentication_error(self, new_br, make_proxy, stream):
        """The fake really checks: a wrong secret gets InvalidSignatureException, which the client sees as 401."""
        fake = new_br()
        p = make_proxy(br_env(fake, AWS_SECRET_ACCESS_KEY="wrong/secret+value"))
        r = p.post(base_req(stream=stream))
        assert r.status == 401 and r.etype == "authentication_error", diag(r, fake, p)
        assert "signature" in r.emsg.lower() and r.headers.get("x-should-retry") == "false", r.emsg
        assert fake.verified == [] and len(fake.requests) == 1

    def test_wrong_region_scope_refused(self, new_br, make_proxy):
        fake = new_br(region="eu-central-1")
        p = make_proxy(br_env(fake))
        r = p.post(base_req())
        assert r.status == 401 and r.etype == "authentication_error", diag(r, fake, p)

    def test_claude_code_shaped_request(self, br):
        r = br.proxy.post(cc_body(stream=True), headers=CC_HEADERS)
        assert texts(r.stream().ok()) == [BR_TEXT], diag(r, br.fake, br.proxy)
        b = br.fake.last.body
        assert b["anthropic_beta"] == CC_BETAS.split(",") and "anthropic-beta" not in br.fake.last.headers
        assert b["tools"][0]["name"] == "Bash" and "model" not in b and "stream" not in b


# Credentials from a profile; bad and missing configuration
def write_aws_files(home: Path, credentials: str, config: str) -> None:
    (home / ".aws").mkdir(parents=True, exist_ok=True)
    (home / ".aws" / "credentials").write_text(credentials)
    (home / ".aws" / "config").write_text(config)


PROFILE_KEY, PROFILE_SECRET = "AKIAPROFILEWORK0003", "profile/work+secret-canary-2b4d"


class TestBedrockProfile:
    def test_profile_keys_and_region(self, new_br, make_proxy, tmp_path):
        fake = new_br(region="ap-southeast-2", keys={PROFILE_KEY: (PROFILE_SECRET, "")})
        write_aws_files(tmp_path / "home",
                        "[default]\naws_access_key_id = AKIADEFAULTNOTTHIS\naws_secret_access_key = nope\n"
                        f"[work]\naws_access_key_id = {PROFILE_KEY}\naws_secret_access_key = {PROFILE_SECRET}\n",
                        "[default]\nregion = us-east-1\n[profile work]\nregion = ap-southeast-2\n")
        p = make_proxy({"MODEL_PROVIDER": "bedrock", "AWS_PROFILE": "work", "AWS_BEDROCK_ENDPOINT": fake.url})
        for stream in (False, True):
            r = p.post(base_req(stream=stream))
            assert r.status == 200, diag(r, fake, p)
        assert [v["key"] for v in fake.verified] == [PROFILE_KEY, PROFILE_KEY]
        assert "/ap-southeast-2/bedrock/aws4_request" in fake.last.headers["authorization"]

    def test_profile_in_lynkr_toml(self, new_br, make_proxy, tmp_path):
        fake = new_br(region="eu-west-3", keys={PROFILE_KEY: (PROFILE_SECRET, BR_SESSION_TOKEN)})
        write_aws_files(tmp_path / "home", f"[work]\naws_access_key_id = {PROFILE_KEY}\naws_secret_access_key = "
                        f"{PROFILE_SECRET}\naws_session_token = {BR_SESSION_TOKEN}\n", "")
        pv_toml(tmp_path, textwrap.dedent(f"""\
            [providers.b]
            kind = "bedrock"
            region = "eu-west-3"
            profile = "work"
            base_url = "{fake.url}"

            [router]
            default = "b,{BR_INVOKE_ID}"
            """))
        p = make_proxy()
        r = p.post(base_req(stream=True))
        assert texts(r.stream().ok()) == [BR_TEXT], diag(r, fake, p)
        assert fake.verified[0]["key"] == PROFILE_KEY and "x-amz-security-token" in fake.verified[0]["signed"]

    @pytest.mark.parametrize("where", ["AWS_DEFAULT_REGION", "default-profile-config"])
    def test_region_from_default_region_or_default_profile(self, new_br, make_proxy, tmp_path, where):
        fake = new_br(region="ca-central-1")
        extra = {"AWS_REGION": None}
        if where == "AWS_DEFAULT_REGION":
            extra["AWS_DEFAULT_REGION"] = "ca-central-1"
        else:
            write_aws_files(tmp_path / "home", "", "[default]\nregion = ca-central-1\n")
        p = make_proxy(br_env(fake, **extra))
        r = p.post(base_req())
        assert r.status == 200, diag(r, fake, p)
        assert "/ca-central-1/bedrock/aws4_request" in fake.last.headers["authorization"]

    # (a bug once, found by this test: lynkr.py:5376 (Provider._request) re-reads credentials (AwsAuth.invalidate, lynk ...)
    def test_rotated_profile_credentials_reread_after_expired_token(self, new_br, make_proxy, tmp_path):
        new_key, new_secret, new_token = "ASIAROTATEDKEY00004", "rotated/secret+canary-5e5e", "rotated-token-canary-6f6f"
        fake = new_br(keys={PROFILE_KEY: (PROFILE_SECRET, BR_SESSION_TOKEN)})
        home = tmp_path / "home"
        write_aws_files(home, f"[work]\naws_access_key_id = {PROFILE_KEY}\naws_secret_access_key = {PROFILE_SECRET}\n"
                        f"aws_session_token = {BR_SESSION_TOKEN}\n", f"[profile work]\nregion = {BR_REGION}\n")
        p = make_proxy({"MODEL_PROVIDER": "bedrock", "AWS_PROFILE": "work", "AWS_BEDROCK_ENDPOINT": fake.url})
        assert p.post(base_req()).status == 200
        # `aws sso login` / a credential process wrote fresh temporary credentials; the old ones expired
        write_aws_files(home, f"[work]\naws_access_key_id = {new_key}\naws_secret_access_key = {new_secret}\n"
                        f"aws_session_token = {new_token}\n", f"[profile work]\nregion = {BR_REGION}\n")
        fake.keys, fake.expired = {new_key: (new_secret, new_token)}, {PROFILE_KEY}
        r = p.post(base_req(stream=True))
        assert r.status == 200, diag(r, fake, p)
        assert texts(r.stream().ok()) == [BR_TEXT]
        assert fake.verified[-1]["key"] == new_key

    @pytest.mark.parametrize("extra,names", [
        ({"AWS_ACCESS_KEY_ID": BR_KEY_ID}, ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")),
        ({"AWS_SECRET_ACCESS_KEY": BR_SECRET}, ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")),
        ({"AWS_PROFILE": "nosuchprofile"}, ("nosuchprofile",)),
    ])
    def test_half_set_or_unknown_exits_2_with_one_line(self, tmp_path, extra, names):
        r = run_lynkr(tmp_path, {"MODEL_PROVIDER": "bedrock", "AWS_REGION": BR_REGION, **extra})
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("lynkr: "), r.stderr
        assert all(n in lines[0] for n in names) and BR_SECRET not in r.stderr, lines
        assert "Traceback" not in r.stderr

    def test_nothing_configured_starts_and_explains(self, make_proxy):
        p = make_proxy({"MODEL_PROVIDER": "bedrock"})
        assert p.call("GET", "/health").json()["configured"] is False
        for stream in (False, True):
            r = p.post(base_req(stream=stream))
            assert r.status == 503 and r.etype == "api_error", r.data
            for var in ("AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                        "AWS_BEARER_TOKEN_BEDROCK"):
                assert var in r.emsg, r.emsg
            assert r.headers.get("x-should-retry") == "false"


BR_BEARER = "ABSKQmVkcm9ja0FQSUtleS1jYW5hcnktYmVhcmVyLTQ0ZTI="


# A Bedrock API key (bearer)
class TestBedrockBearer:
    @pytest.mark.parametrize("stream", [False, True])
    def test_bearer_token_no_sigv4(self, new_br, make_proxy, stream):
        fake = new_br(bearer=BR_BEARER)
        p = make_proxy(br_env(fake, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None,
                              AWS_BEARER_TOKEN_BEDROCK=BR_BEARER))
        r = p.post(base_req(stream=stream))
        if stream:
            assert texts(r.stream().ok()) == [BR_TEXT], diag(r, fake, p)
        else:
            assert r.status == 200, diag(r, fake, p)
        rec = fake.last
        assert rec.headers["authorization"] == f"Bearer {BR_BEARER}"
        assert not [h for h in rec.headers if h.startswith("x-amz-")], rec.headers

    def test_bearer_wins_over_keys_and_table_api_key(self, new_br, make_proxy, tmp_path):
        fake = new_br(bearer="ABSK-from-the-table-canary")
        pv_toml(tmp_path, textwrap.dedent(f"""\
            [providers.b]
            kind = "bedrock"
            region = "{BR_REGION}"
            api_key = "$MY_BEDROCK_KEY"
            base_url = "{fake.url}"

            [router]
            default = "b,{BR_INVOKE_ID}"
            """))
        p = make_proxy({"MY_BEDROCK_KEY": "ABSK-from-the-table-canary", "AWS_ACCESS_KEY_ID": BR_KEY_ID,
                        "AWS_SECRET_ACCESS_KEY": BR_SECRET})
        r = p.post(base_req())
        assert r.status == 200, diag(r, fake, p)
        assert fake.last.headers["authorization"] == "Bearer ABSK-from-the-table-canary"

    def test_wrong_bearer_is_403_permission(self, new_br, make_proxy):
        fake = new_br(bearer=BR_BEARER)
        p = make_proxy(br_env(fake, AWS_BEARER_TOKEN_BEDROCK="ABSK-wrong"))
        r = p.post(base_req())
        assert r.status == 403 and r.etype == "permission_error", diag(r, fake, p)


BR_OPUS = "claude-opus-4-7"  # a Messages-API model name


# The Messages API surfaces
class TestBedrockMessagesSurface:
    @pytest.mark.parametrize("how", ["model-name", "BEDROCK_SURFACE"])
    def test_messages_surface_sse_passes_through(self, new_br, make_proxy, how):
        fake = new_br()
        env = br_env(fake, MODEL_MAP=f"claude-opus-*={BR_OPUS}") if how == "model-name" else \
            br_env(fake, BEDROCK_SURFACE="messages", MODEL_DEFAULT=BR_INVOKE_ID)
        want_model = BR_OPUS if how == "model-name" else BR_INVOKE_ID
        p = make_proxy(env)
        msg = br_message([text("Opus on the Messages API \u2713"), tool_use("toolu_bdrk_M1", "Read", {"file_path": "/a"})],
                         "tool_use")
        msg["model"] = want_model
        sse = anth_sse(anth_events(msg))
        fake.push(stream_reply(sse, pieces=split_at(sse, awkward_points(sse))))
        r = p.post(base_req(model="claude-opus-4-1", stream=True), headers={"anthropic-version": "2023-06-01",
                                                                            "anthropic-beta": "effort-2025-11-24"})
        got = r.stream().ok()
        assert r.status == 200, diag(r, fake, p)
        assert [e for e in r.events() if e[0] != "ping"] == [e for e in parse_sse(sse) if e[0] != "ping"], \
            "events changed on the way"
        assert block_summary(got["content"]) == block_summary(msg["content"])
        rec = fake.last
        assert rec.path == "/anthropic/v1/messages" and rec.body["model"] == want_model and rec.body["stream"] is True
        assert rec.headers.get("anthropic-version") == "2023-06-01" and "anthropic_version" not in rec.body
        assert rec.headers.get("anthropic-beta") == "effort-2025-11-24" and "anthropic_beta" not in rec.body
        assert len(fake.verified) == 1  # SigV4 on this surface too
        r = p.post(base_req(model="claude-opus-4-1"))
        assert r.status == 200 and r.json()["content"] == [text(BR_TEXT)] and r.json()["model"] == want_model, r.data

    def test_newer_client_version_is_sent_as_2023_06_01(self, new_br, make_proxy):
        fake = new_br()
        p = make_proxy(br_env(fake, MODEL_MAP=f"claude-opus-*={BR_OPUS}"))
        r = p.post(base_req(model="claude-opus-4-1"), headers={"anthropic-version": "2026-01-01"})
        assert r.status == 200, diag(r, fake, p)
        assert fake.last.headers.get("anthropic-version") == "2023-06-01"

    def test_runtime_messages_via_toml_surfaces(self, new_br, make_proxy, tmp_path):
        fake = new_br(messages_mode="runtime")
        pv_toml(tmp_path, textwrap.dedent(f"""\
            [providers.b]
            kind = "bedrock"
            region = "{BR_REGION}"
            base_url = "{fake.url}"
            surfaces = {{"claude-opus-*" = "runtime-messages"}}

            [router]
            default = "b,{BR_OPUS}"
            """))
        p = make_proxy({"AWS_ACCESS_KEY_ID": BR_KEY_ID, "AWS_SECRET_ACCESS_KEY": BR_SECRET})
        r = p.post(base_req(stream=True), headers={"anthropic-beta": "effort-2025-11-24"})
        assert texts(r.stream().ok()) == [BR_TEXT], diag(r, fake, p)
        rec = fake.last
        assert rec.path == "/anthropic/v1/messages" and rec.body["model"] == BR_OPUS
        assert rec.body["anthropic_version"] == BR_VERSION and rec.body["stream"] is True
        r = p.post(base_req(model=f"b,{BR_INVOKE_ID}"))  # a model the table does not name: InvokeModel
        assert r.status == 200, diag(r, fake, p)
        assert fake.last.path == f"/model/{urllib.parse.quote(BR_INVOKE_ID, safe='')}/invoke"
        assert len(fake.verified) == 2


# Stream fidelity
FIDELITY_MSG = br_message(
    [text("Let me check \u2014 \"quoted\" \u00fc\n\U0001f600 done."),
     tool_use("toolu_bdrk_01AbC", "Bash", {"command": "ls -la /tmp && echo \u00fc", "description": "List"}),
     tool_use("toolu_bdrk_02DeF", "Read", {"file_path": "/work/a.py"})],
    "tool_use", usage={"input_tokens": 1234, "output_tokens": 87, "cache_creation_input_tokens": 11,
                       "cache_read_input_tokens": 900})
SPLITS = ["awkward", "frames", "one", "every1", "every7", "every13", "seed1", "seed2", "seed3"]


# Failures
def frames_of(msg: dict) -> list[bytes]:
    return [es_chunk(e) for e in es_events(msg)]


class TestBedrockStreamFidelity:
    def test_same_stream_whatever_the_split(self, br):
        frames = [es_chunk(e) for e in es_events(FIDELITY_MSG)]
        seen = []
        for split in SPLITS:
            br.fake.push(es_reply(frames, split, gap=0.0))
            r = br.proxy.post(base_req(stream=True), timeout=60)
            s = r.stream()
            msg = s.ok()
            assert b"amazon-bedrock-invocationMetrics" not in r.data and b"invocationLatency" not in r.data, split
            assert block_summary(msg["content"]) == block_summary(FIDELITY_MSG["content"]), split
            assert msg["stop_reason"] == "tool_use" and msg["usage"]["output_tokens"] == 87, msg["usage"]
            assert msg["usage"]["input_tokens"] == 1234 and msg["usage"]["cache_read_input_tokens"] == 900
            seen.append([e for e in s.events if e[0] != "ping"])
        assert all(events == seen[0] for events in seen)
        expected = [(e["type"], {k: v for k, v in e.items() if k != "amazon-bedrock-invocationMetrics"})
                    for e in es_events(FIDELITY_MSG)]
        assert seen[0] == expected
        assert len(br.fake.verified) == len(SPLITS)

    def test_events_are_relayed_as_frames_arrive(self, br):
        """The first text reaches the client while Bedrock still holds the rest back."""
        frames = [es_chunk(e) for e in es_events(FIDELITY_MSG)]
        br.fake.push(es_reply(frames, "awkward", pauses={len(split_at(b"".join(frames[:3]),
                                                                      es_awkward_points(frames[:3]))) + 1: 1.5}))
        conn, resp = open_stream(br.proxy.port, base_req(stream=True))
        try:
            t0 = time.monotonic()
            first_delta = next(t for t, ev, _ in iter_events(resp, t0) if ev == "content_block_delta")
            assert first_delta < 1.2, f"first delta after {first_delta:.2f}s: buffered"
        finally:
            conn.close()

    def test_pings_during_bedrock_silence(self, new_br, make_proxy):
        fake = new_br()
        p = make_proxy(br_env(fake, STREAM_PING_INTERVAL_MS="100"))
        frames = frames_of(FIDELITY_MSG)
        fake.push(es_reply(frames, "frames", pauses={4: 0.7}))
        s = p.post(base_req(stream=True)).stream()
        assert block_summary(s.ok()["content"]) == block_summary(FIDELITY_MSG["content"]) and s.pings >= 2, s.pings

    def test_sdk_reads_the_stream(self, br):
        require_e2e("the anthropic Python SDK", importlib.util.find_spec("anthropic") is not None)
        import anthropic

        client = anthropic.Anthropic(base_url=br.proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
        frames = [es_chunk(e) for e in es_events(FIDELITY_MSG)]
        br.fake.push(es_reply(frames, "every5", gap=0.0))
        with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=[user("hi")]) as s:
            final = s.get_final_message()
        assert final.stop_reason == "tool_use" and final.usage.output_tokens == 87
        assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
        assert final.content[1].input == FIDELITY_MSG["content"][1]["input"]


class TestBedrockFailures:
    @pytest.mark.parametrize("where", ["payload", "prelude", "message-crc"])
    def test_corrupted_crc_mid_stream_is_error_event(self, br, where):
        frames = frames_of(FIDELITY_MSG)
        bad = bytearray(frames[4])
        offset = {"payload": len(bad) - 20, "prelude": 6, "message-crc": len(bad) - 1}[where]
        bad[offset] ^= 0x40
        frames[4] = bytes(bad)
        br.fake.push(es_reply(frames, "awkward"))
        r = br.proxy.post(base_req(stream=True))
        assert r.status == 200, r.data
        s = r.stream()
        assert not s.complete and s.error is not None, s.events[-3:]
        assert s.events[-1][0] == "error" and b"message_stop" not in r.data
        assert s.error["type"] == "api_error" and "crc" in s.error["message"].lower(), s.error
        assert texts(s.message)[0].startswith("Let me")  # what came before the broken frame was relayed

    @pytest.mark.parametrize("stream_opened", [False, True])
    def test_throttling_as_first_frame_is_http_429(self, br, stream_opened):
        br.fake.push(es_reply([es_exception("throttlingException", "Too many tokens, please wait before trying again.")],
                              "every3" if stream_opened else "one"))
        r = br.proxy.post(base_req(stream=True))
        assert r.status == 429 and r.etype == "rate_limit_error", r.data
        assert "Too many tokens" in r.emsg and r.headers.get("content-type", "").startswith("application/json")

    def test_throttling_as_http_429_is_retried(self, new_br, make_proxy):
        """The reference: the same throttling as an HTTP 429 is retried (UPSTREAM_MAX_RETRIES), re-signed."""
        fake = new_br()
        p = make_proxy(br_env(fake, UPSTREAM_MAX_RETRIES="2"))
        fake.push(aws_error(429, "ThrottlingException", "Too many requests"))
        r = p.post(base_req(stream=True))
        assert texts(r.stream().ok()) == [BR_TEXT], diag(r, fake, p)
        assert len(fake.requests) == 2 and len(fake.verified) == 2

    # (a bug once, found by this test: lynkr.py:5262-5277 (Provider._primed) raises the first-frame exception outside t ...)
    def test_throttling_first_frame_is_retried(self, new_br, make_proxy):
        """BUG: an exception frame before any event is raised by Provider._primed after _request has returned
        (lynkr.py open_stream/_primed), so it skips the retry loop that UPSTREAM_MAX_RETRIES promises for a
        429 "before any byte reached the client": the client gets 429 after one upstream attempt."""
        fake = new_br()
        p = make_proxy(br_env(fake, UPSTREAM_MAX_RETRIES="2"))
        fake.push(es_reply([es_exception("throttlingException", "Too many tokens")], "one"))
        r = p.post(base_req(stream=True))
        assert texts(r.stream().ok()) == [BR_TEXT], diag(r, fake, p)
        assert len(fake.requests) == 2 and len(fake.verified) == 2  # re-signed, and verified again

    def test_exception_after_text_is_error_event(self, br):
        frames = frames_of(FIDELITY_MSG)[:3] + [es_exception("throttlingException", "Too many tokens mid-way")]
        br.fake.push(es_reply(frames, "awkward"))
        r = br.proxy.post(base_req(stream=True))
        assert r.status == 200
        s = r.stream()
        assert not s.complete and s.error["type"] == "rate_limit_error", s.events[-3:]
        assert "Too many tokens mid-way" in s.error["message"] and b"message_stop" not in r.data

    def test_stream_cut_short_is_error_event(self, br):
        frames = frames_of(FIDELITY_MSG)
        data = b"".join(frames)
        br.fake.push(es_reply([data[: len(data) - 30]], "one"))
        r = br.proxy.post(base_req(stream=True))
        s = r.stream()
        assert not s.complete and s.error is not None and b"message_stop" not in r.data

    @pytest.mark.parametrize("stream", [False, True])
    @pytest.mark.parametrize("status,kind,msg_,out,etype,retry", [
        (429, "ThrottlingException", "Too many requests, please wait before trying again.", 429, "rate_limit_error", None),
        (400, "ValidationException", "max_tokens: 999999 > 64000, which is the maximum", 400,
         "invalid_request_error", "false"),
        (403, "AccessDeniedException", "You don't have access to the model with the specified model ID.", 403,
         "permission_error", "false"),
        (404, "ResourceNotFoundException", "Model use case details have not been submitted.", 404,
         "not_found_error", "false"),
        (503, "ServiceUnavailableException", "Bedrock is unable to process your request.", 503, "api_error", None),
    ])
    def test_http_errors_mapped(self, br, stream, status, kind, msg_, out, etype, retry):
        br.fake.push(aws_error(status, kind, msg_, (("retry-after", "2"),) if status == 429 else ()))
        r = br.proxy.post(base_req(stream=stream))
        assert r.status == out and r.etype == etype, r.data
        assert msg_ in r.emsg and kind in r.emsg, r.emsg
        if retry:
            assert r.headers.get("x-should-retry") == retry, r.headers
        if status == 429:
            assert r.headers.get("retry-after") == "2", r.headers
        assert len(br.fake.requests) == 1


# count_tokens
class TestBedrockCountTokens:
    def test_count_tokens_invoke_surface_exact(self, br):
        body = {"model": "claude-sonnet-4-5", "messages": [user("count me \u00fc")], "system": "be brief",
                "tools": [GET_WEATHER]}
        r = br.proxy.post(body, "/v1/messages/count_tokens", headers={"anthropic-beta": "token-counting-2024-11-01"})
        assert r.status == 200 and r.json() == {"input_tokens": 4321}, diag(r, br.fake, br.proxy)
        assert r.headers.get("x-lynkr-token-count") == "exact", r.headers
        rec = br.fake.last
        assert rec.path == f"/model/{urllib.parse.quote(BR_INVOKE_ID, safe='')}/count-tokens"
        inner = br.fake.invoke_body(rec)
        assert inner["anthropic_version"] == BR_VERSION and inner["messages"] == [user("count me \u00fc")]
        assert inner["system"] == "be brief" and inner["tools"][0]["name"] == "get_weather"
        assert "model" not in inner and "stream" not in inner and inner["max_tokens"] >= 1
        assert len(br.fake.verified) == 1

    def test_count_tokens_messages_surface(self, new_br, make_proxy):
        fake = new_br()
        p = make_proxy(br_env(fake, MODEL_MAP=f"claude-opus-*={BR_OPUS}"))
        r = p.post({"model": "claude-opus-4-1", "messages": [user("hello")]}, "/v1/messages/count_tokens")
        assert r.status == 200 and r.json() == {"input_tokens": 4321}, diag(r, fake, p)
        assert r.headers.get("x-lynkr-token-count") == "exact"
        assert fake.last.path == "/anthropic/v1/messages/count_tokens" and fake.last.body["model"] == BR_OPUS


# Secrets stay out of the logs
class TestBedrockSecrets:
    def test_no_secret_in_logs(self, new_br, make_proxy, tmp_path):
        fake = new_br()
        p = make_proxy(br_env(fake, AWS_ACCESS_KEY_ID=BR_TOKEN_KEY_ID, AWS_SECRET_ACCESS_KEY=BR_TOKEN_SECRET,
                              AWS_SESSION_TOKEN=BR_SESSION_TOKEN, LOG_LEVEL="debug"))
        assert p.post(base_req()).status == 200
        assert texts(p.post(base_req(stream=True)).stream().ok()) == [BR_TEXT]
        fake.push(aws_error(403, "AccessDeniedException", "denied"))
        assert p.post(base_req()).status == 403
        assert p.post(base_req(), "/v1/messages/count_tokens").status == 200
        sig = fake.requests[0].headers["authorization"].rsplit("=", 1)[1]
        no_secrets(p, BR_TOKEN_SECRET, BR_SESSION_TOKEN, sig)
        wrong = make_proxy(br_env(fake, AWS_SECRET_ACCESS_KEY="wrong-secret-canary-0a0a", LOG_LEVEL="debug"))
        assert wrong.post(base_req()).status == 401
        no_secrets(wrong, "wrong-secret-canary-0a0a")

    def test_no_bearer_in_logs(self, new_br, make_proxy):
        fake = new_br(bearer=BR_BEARER)
        p = make_proxy(br_env(fake, AWS_BEARER_TOKEN_BEDROCK=BR_BEARER, LOG_LEVEL="debug"))
        assert p.post(base_req()).status == 200
        fake.bearer = "something-else"
        assert p.post(base_req(stream=True)).status == 403
        no_secrets(p, BR_BEARER)

    def test_doctor_and_health_show_no_secrets(self, new_br, tmp_path):
        fake = new_br()
        env = br_env(fake, AWS_ACCESS_KEY_ID=BR_TOKEN_KEY_ID, AWS_SECRET_ACCESS_KEY=BR_TOKEN_SECRET,
                     AWS_SESSION_TOKEN=BR_SESSION_TOKEN)
        r = run_lynkr(tmp_path, env, args=("doctor",), timeout=30)
        for s in (BR_TOKEN_SECRET, BR_SESSION_TOKEN):
            assert s not in r.stdout + r.stderr, (r.stdout, r.stderr)
        assert fake.verified, f"doctor made no signed request: {r.stdout}\n{r.stderr}"


# == 11. Stores ==

# -- session store --


def turn_summary(session: dict) -> list[tuple[str, str, str]]:
    """(kind, role, text of the content) per stored turn."""
    return [(t["kind"], t["role"], result_text(t["content"])) for t in session["turns"]]


class TestSessionStore:
    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_transcript_appends_each_message_once(self, agent, tmp_path, provider):
        st = agent(provider)
        sid = f"demo-{provider}"
        hdr = {"x-session-id": sid}
        st.fake.push(model_turn(provider, "Hello there.", usage=(11, 3)), model_turn(provider, "More here."),
                     model_turn(provider, "Again here."))
        history = [user([text("hi", cache_control=EPH)])]
        r1 = st.proxy.post(base_req(messages=history), headers=hdr)
        m1 = r1.json()
        history = [user("hi"), assistant(m1["content"]), user([text("more", cache_control=EPH)])]  # markers move
        r2 = st.proxy.post(base_req(messages=history, stream=True), headers=hdr)
        m2 = r2.stream().ok()
        history = [user([text("hi", cache_control=EPH)]), assistant(m1["content"]), user("more"),
                   assistant(m2["content"]), user("again")]
        r3 = st.proxy.post(base_req(messages=history), headers=hdr)
        assert r3.status == 200
        s = session_of(st.proxy, sid)
        assert turn_summary(s) == [("user", "user", "hi"), ("assistant", "assistant", "Hello there."),
                                   ("user", "user", "more"), ("assistant", "assistant", "More here."),
                                   ("user", "user", "again"), ("assistant", "assistant", "Again here.")]
        assert s["id"] == sid and s["created_at"] <= s["updated_at"]
        replies = [t for t in s["turns"] if t["kind"] == "assistant"]
        assert [t["request_id"] for t in replies] == [r.headers["request-id"] for r in (r1, r2, r3)]
        assert all(t["model"] == "claude-sonnet-4-5" and t["cache"] == "bypass" for t in replies), replies
        assert replies[0]["usage"]["input_tokens"] == 11 and replies[0]["usage"]["output_tokens"] == 3
        assert all(t["model"] is None and t["usage"] is None for t in s["turns"] if t["kind"] == "user")
        assert all(isinstance(t["created_at"], (int, float)) for t in s["turns"])
        listed = {x["id"]: x for x in st.proxy.call("GET", "/v1/sessions").json()["data"]}
        assert listed[sid]["turns"] == 6 and listed[sid]["updated_at"] == s["updated_at"]
        line = st.proxy.wait_log(lambda o: o.get("request_id") == r3.headers["request-id"] and o.get("msg") == "request")
        assert line["session_id"] == sid

    def test_session_id_sources(self, agent):
        st = agent()
        cc = st.proxy.post(base_req(messages=[user("from claude code")]),
                           headers={"X-Claude-Code-Session-Id": "cc-session-1"})
        both = st.proxy.post(base_req(messages=[user("explicit wins")]),
                             headers={"x-session-id": "explicit-1", "x-claude-code-session-id": "cc-session-1"})
        anon = [st.proxy.post(base_req(messages=[user(f"anonymous {i}")])) for i in range(2)]
        assert [r.status for r in (cc, both, *anon)] == [200] * 4
        assert turn_summary(session_of(st.proxy, "cc-session-1"))[0] == ("user", "user", "from claude code")
        assert len(session_of(st.proxy, "cc-session-1")["turns"]) == 2
        assert turn_summary(session_of(st.proxy, "explicit-1"))[0] == ("user", "user", "explicit wins")
        ids = []
        for r in anon:
            line = st.proxy.wait_log(lambda o, r=r: o.get("request_id") == r.headers["request-id"] and o.get("msg") == "request")
            ids.append(line["session_id"])
        assert all(i.startswith("sess_") for i in ids) and len(set(ids)) == 2, ids
        for i, sid in enumerate(ids):
            assert turn_summary(session_of(st.proxy, sid))[0] == ("user", "user", f"anonymous {i}")
        data = st.proxy.call("GET", "/v1/sessions").json()["data"]
        assert {"cc-session-1", "explicit-1", *ids} == {x["id"] for x in data}
        assert data[0]["id"] == ids[-1]  # newest first
        assert [x["id"] for x in st.proxy.call("GET", "/v1/sessions?limit=1").json()["data"]] == [ids[-1]]
        assert st.proxy.call("GET", "/v1/sessions?limit=lots").status == 400
        missing = st.proxy.call("GET", "/v1/sessions/no-such-session")
        assert missing.status == 404 and missing.etype == "not_found_error"

    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_server_tool_turns_recorded(self, agent, provider):
        st = agent(provider, LYNKR_TOOLS="fs_read")
        st.fake.push(model_turn(provider, "Reading.", [("call_z1", "fs_read", {"path": "notes.txt"})]),
                     model_turn(provider, "Milk."))
        st.proxy.post(base_req(messages=[user("read notes")], stream=True), headers={"x-session-id": "tools-1"}).stream().ok()
        s = session_of(st.proxy, "tools-1")
        kinds = [(t["kind"], t["role"]) for t in s["turns"]]
        assert kinds == [("user", "user"), ("server_tool", "assistant"), ("server_tool", "user"),
                         ("assistant", "assistant")], kinds
        use = [b for b in s["turns"][1]["content"] if b["type"] == "tool_use"]
        assert [(u["id"], u["name"], u["input"]) for u in use] == [("call_z1", "fs_read", {"path": "notes.txt"})]
        [res] = s["turns"][2]["content"]
        assert res["type"] == "tool_result" and res["tool_use_id"] == "call_z1" and res["is_error"] is False
        assert result_text(res["content"]) == "remember the milk\n"
        final = s["turns"][3]
        assert texts({"content": final["content"]})[0] == "Reading." and texts({"content": final["content"]})[-1] == "Milk."
        assert final["usage"]["output_tokens"] == 16  # both rounds

    def test_cache_status_recorded(self, agent):
        st = agent(**CACHE_ON)
        for _ in range(2):
            st.proxy.post(base_req(messages=[user("cache me")]), headers={"x-session-id": "cache-1"})
        replies = [t for t in session_of(st.proxy, "cache-1")["turns"] if t["kind"] == "assistant"]
        assert [t["cache"] for t in replies] == ["stored", "hit"]
        assert replies[1]["usage"]["cache_read_input_tokens"] > 0

    def test_transcripts_survive_restart(self, agent, tmp_path):
        st = agent()
        for i in range(3):
            st.proxy.post(base_req(messages=[user(f"keep {i}")]), headers={"x-session-id": f"keep-{i}"})
        before = st.proxy.call("GET", "/v1/sessions").json()
        detail = session_of(st.proxy, "keep-1")
        assert (tmp_path / "lynkr-data" / "sessions.db").is_file()
        st.restart()
        assert st.proxy.call("GET", "/v1/sessions").json() == before
        assert session_of(st.proxy, "keep-1") == detail
        # the restarted proxy keeps appending to the same transcript, without duplicates
        st.proxy.post(base_req(messages=[user("keep 1"), assistant(detail["turns"][1]["content"]), user("next")]),
                      headers={"x-session-id": "keep-1"})
        assert [t[2] for t in turn_summary(session_of(st.proxy, "keep-1"))] == [
            "keep 1", "Hello from fake Databricks", "next", "Hello from fake Databricks"]

    @pytest.mark.parametrize("mode", ["json", "stream", "agent-loop"])
    def test_sigkill_right_after_response_keeps_turn(self, agent, mode):
        st = agent(LYNKR_TOOLS="fs_read" if mode == "agent-loop" else "mcp_*")
        if mode == "agent-loop":
            st.fake.push(model_turn("dbx", None, [("call_k9", "fs_read", {"path": "notes.txt"})]),
                         model_turn("dbx", "Killed after this."))
        else:
            st.fake.push(model_turn("dbx", "Killed after this."))
        stream = mode != "json"
        r = st.proxy.post(base_req(messages=[user("last words")], stream=stream), headers={"x-session-id": "kill-1"})
        assert texts(reply_of(r, stream))[-1] == "Killed after this."
        st.restart(signal.SIGKILL)
        s = session_of(st.proxy, "kill-1")
        assert (s["turns"][0]["kind"], result_text(s["turns"][0]["content"])) == ("user", "last words")
        assert s["turns"][-1]["kind"] == "assistant"
        assert texts({"content": s["turns"][-1]["content"]})[-1] == "Killed after this."
        assert s["turns"][-1]["request_id"] == r.headers["request-id"]

    def test_database_location_and_mode(self, agent, tmp_path):
        db = tmp_path / "elsewhere" / "store" / "lynkr.sqlite"
        st = agent(SESSION_DB_PATH=str(db))
        st.proxy.post(base_req(), headers={"x-session-id": "where-1"})
        assert db.is_file() and not (tmp_path / "lynkr-data" / "sessions.db").exists()
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            rows = conn.execute("SELECT kind FROM turns WHERE session_id = 'where-1' ORDER BY id").fetchall()
        assert [r[0] for r in rows] == ["user", "assistant"]

    def test_concurrent_sessions_each_recorded_once(self, agent):
        # Writes that arrive together share one commit (group commit); every turn lands once, in order.
        st = agent()
        sessions = [f"many-{i}" for i in range(24)]

        def converse(sid: str) -> list[str]:
            history: list[dict] = []
            ids = []
            for turn in range(3):
                ask = f"{sid} turn {turn}"
                r = call(st.proxy.port, "POST", "/v1/messages", base_req(messages=[*history, user(ask)], stream=turn == 1),
                         {"x-session-id": sid}, timeout=30)
                reply = r.stream().ok() if turn == 1 else r.json()
                assert r.status == 200, reply
                history += [user(ask), assistant(reply["content"])]
                ids.append(r.headers["request-id"])
            return ids

        with concurrent.futures.ThreadPoolExecutor(len(sessions)) as pool:
            request_ids = dict(zip(sessions, pool.map(converse, sessions)))
        for sid in sessions:
            s = session_of(st.proxy, sid)
            assert [(kind, said) for kind, _role, said in turn_summary(s)] == [
                ("user", f"{sid} turn 0"), ("assistant", "Hello from fake Databricks"),
                ("user", f"{sid} turn 1"), ("assistant", "Hello from fake Databricks"),
                ("user", f"{sid} turn 2"), ("assistant", "Hello from fake Databricks")], (sid, turn_summary(s))
            assert [t["request_id"] for t in s["turns"] if t["kind"] == "assistant"] == request_ids[sid]

    def test_two_processes_share_one_session_store(self, agent):
        # Two lynkr processes on one SESSION_DB_PATH: each batch takes SQLite's write lock up front
        # (waiting for the other process) instead of failing when the other committed in between.
        st = agent()
        other = st.starter(st.env)
        sessions = [(proxy, f"shared-{n}-{i}") for n, proxy in enumerate((st.proxy, other)) for i in range(8)]

        def converse(item: tuple[Proxy, str]) -> None:
            proxy, sid = item
            history: list[dict] = []
            for turn in range(4):
                r = proxy.post(base_req(messages=[*history, user(f"{sid} {turn}")]), headers={"x-session-id": sid})
                assert r.status == 200, r.data[:300]
                history += [user(f"{sid} {turn}"), assistant(r.json()["content"])]

        with concurrent.futures.ThreadPoolExecutor(len(sessions)) as pool:
            list(pool.map(converse, sessions))
        for proxy in (st.proxy, other):
            assert not any(o.get("msg") == "session store write failed" for o in proxy.logs()), proxy.logs()[-5:]
        for _proxy, sid in sessions:
            turns = session_of(st.proxy, sid)["turns"]
            assert [t["kind"] for t in turns] == ["user", "assistant"] * 4, (sid, turn_summary({"turns": turns}))

    def test_group_commit_isolates_a_failing_write(self, tmp_path):
        import lynkr  # the store on its own: a real SQLite file and its writer thread

        store = lynkr.Store(str(tmp_path / "group.db"))
        insert = "INSERT INTO tasks (title, created_at, updated_at) VALUES (?, 0, 0)"
        gate = threading.Event()

        def held(db: sqlite3.Connection) -> str:
            gate.wait(10)  # keeps the writer busy so the writes below queue up into one batch
            db.execute(insert, ("first",))
            return "first"

        def good(db: sqlite3.Connection, i: int) -> int:
            db.execute(insert, (f"task {i}",))
            return i

        def bad(db: sqlite3.Connection) -> None:
            db.execute(insert, ("doomed",))
            raise sqlite3.IntegrityError("this write fails after inserting")

        async def scenario() -> list[Any]:
            first = asyncio.ensure_future(store.write(held))
            await asyncio.sleep(0.1)
            queued = [asyncio.ensure_future(store.write(good, i)) for i in range(3)]
            queued.append(asyncio.ensure_future(store.write(bad)))
            queued += [asyncio.ensure_future(store.write(good, i)) for i in range(3, 6)]
            await asyncio.sleep(0.1)
            assert not any(f.done() for f in queued), "a write finished before the batch before it was committed"
            gate.set()
            return await asyncio.gather(first, *queued, return_exceptions=True)

        try:
            results = asyncio.run(scenario())
        finally:
            store.close()
        assert results[:4] == ["first", 0, 1, 2] and results[5:] == [3, 4, 5], results
        assert isinstance(results[4], sqlite3.IntegrityError), results
        with sqlite3.connect(tmp_path / "group.db") as db:
            titles = [row[0] for row in db.execute("SELECT title FROM tasks ORDER BY id")]
        assert titles == ["first", "task 0", "task 1", "task 2", "task 3", "task 4", "task 5"], titles


# == 12. Cache ==

# -- prompt cache --


class TestPromptCache:
    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_hit_and_miss(self, agent, provider):
        st = agent(provider, **CACHE_ON)
        st.fake.push(model_turn(provider, "Cached answer.", usage=(120, 9)))
        req = base_req(messages=[user("what is 2+2?")])
        first = st.proxy.post(req)
        # A miss kept for reuse says so, and its usage is the upstream's own (issue 16: the local cache
        # no longer reports the input as cache creation, which mispriced every turn).
        assert first.status == 200 and first.headers.get("x-lynkr-cache") == "stored"
        m1 = first.json()
        assert (m1["usage"]["input_tokens"], m1["usage"]["cache_creation_input_tokens"],
                m1["usage"]["cache_read_input_tokens"]) == (120, 0, 0), m1["usage"]
        assert m1["usage"]["output_tokens"] == 9
        second = st.proxy.post(req)
        assert second.headers.get("x-lynkr-cache") == "hit" and len(st.fake.requests) == 1
        m2 = second.json()
        assert m2["content"] == m1["content"] == [text("Cached answer.")] and m2["stop_reason"] == "end_turn"
        assert m2["id"] != m1["id"] and m2["id"].startswith("msg_") and m2["model"] == "claude-sonnet-4-5"
        assert (m2["usage"]["input_tokens"], m2["usage"]["cache_creation_input_tokens"],
                m2["usage"]["cache_read_input_tokens"], m2["usage"]["output_tokens"]) == (0, 0, 120, 9), m2["usage"]
        third = st.proxy.post({**req, "stream": True})  # a streamed request served from a JSON answer
        assert third.headers.get("x-lynkr-cache") == "hit" and len(st.fake.requests) == 1
        m3 = third.stream().ok()
        assert m3["content"] == m1["content"] and m3["usage"]["cache_read_input_tokens"] == 120
        st.fake.push(model_turn(provider, "Different."))
        other = st.proxy.post(base_req(messages=[user("what is 3+3?")]))
        assert other.headers.get("x-lynkr-cache") == "stored" and len(st.fake.requests) == 2

    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_streamed_miss_then_json_hit(self, agent, provider):
        st = agent(provider, **CACHE_ON)
        st.fake.push(model_turn(provider, "Streamed once.", usage=(40, 4)))
        req = base_req(messages=[user("stream me")], stream=True)
        r1 = st.proxy.post(req)
        assert r1.headers.get("x-lynkr-cache") == "miss"
        m1 = r1.stream().ok()
        r2 = st.proxy.post({**req, "stream": False})
        assert r2.headers.get("x-lynkr-cache") == "hit" and len(st.fake.requests) == 1
        assert r2.json()["content"] == m1["content"] == [text("Streamed once.")]
        assert r2.json()["usage"]["cache_read_input_tokens"] == 40

    def test_expiry(self, agent):
        st = agent(PROMPT_CACHE_TTL_MS="1000", **CACHE_ON)
        req = base_req(messages=[user("short-lived")])
        st.fake.push(model_turn("dbx", "v1"), model_turn("dbx", "v2"))
        assert texts(st.proxy.post(req).json()) == ["v1"]
        hit = st.proxy.post(req)
        assert hit.headers["x-lynkr-cache"] == "hit" and texts(hit.json()) == ["v1"]
        time.sleep(1.3)
        expired = st.proxy.post(req)
        assert expired.headers["x-lynkr-cache"] == "stored" and texts(expired.json()) == ["v2"]
        assert len(st.fake.requests) == 2

    def test_eviction_lru(self, agent):
        st = agent(PROMPT_CACHE_MAX_ENTRIES="1", **CACHE_ON)
        a, b = base_req(messages=[user("A")]), base_req(messages=[user("B")])
        for req in (a, b, a, a):
            st.proxy.post(req)
        assert len(st.fake.requests) == 3  # B pushed A out; A's second answer is then cached
        st2 = agent(PROMPT_CACHE_MAX_ENTRIES="2", **CACHE_ON)
        c = base_req(messages=[user("C")])
        statuses = [st2.proxy.post(req).headers["x-lynkr-cache"] for req in (a, b, a, c, a, b)]
        assert statuses == ["stored", "stored", "hit", "stored", "hit", "stored"]  # A was used last, so C evicted B
        assert len(st2.fake.requests) == 4

    def test_same_target_model_shares_entries(self, agent):
        st = agent(MODEL_MAP="claude-alias-*=databricks-claude-shared", **CACHE_ON)
        st.proxy.post(base_req(model="claude-alias-one"))
        r = st.proxy.post(base_req(model="claude-alias-two"))
        assert r.headers["x-lynkr-cache"] == "hit" and r.json()["model"] == "claude-alias-two"
        assert len(st.fake.requests) == 1

    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_key_ignores_billing_metadata_markers_and_stream(self, agent, provider):
        st = agent(provider, **CACHE_ON)
        st.fake.push(model_turn(provider, "Claude Code answer."))
        body = cc_body(stream=True)
        assert st.proxy.post(body).headers["x-lynkr-cache"] == "miss"
        same = copy.deepcopy(body)
        same["system"][0]["text"] = "x-anthropic-billing-header: cc_version=2.1.329.f00; cc_entrypoint=sdk-cli;"
        same["metadata"] = {"user_id": json.dumps({"device_id": "cd" * 32, "session_id": "another-session"})}
        same["system"][1].pop("cache_control")
        same["messages"][1]["content"][1].pop("cache_control")
        same["messages"][1]["content"][0]["cache_control"] = EPH
        r = st.proxy.post(same, headers={"x-claude-code-session-id": "another-session"})
        assert r.headers["x-lynkr-cache"] == "hit", r.headers
        assert texts(r.stream().ok()) == ["Claude Code answer."]
        r = st.proxy.post({**same, "stream": False})
        assert r.headers["x-lynkr-cache"] == "hit" and texts(r.json()) == ["Claude Code answer."]
        assert len(st.fake.requests) == 1
        # what the model would see differently is a different key
        changes = [lambda b: b["system"][2].update(text="You are a different agent."),
                   lambda b: b.update(max_tokens=1000), lambda b: b.update(temperature=0.2),
                   lambda b: b["tools"].append(GET_WEATHER),
                   lambda b: b["messages"][1]["content"][1].update(text="list the files, please")]
        for n, change in enumerate(changes, 2):
            other = copy.deepcopy(body)
            change(other)
            if "temperature" in other:
                other.pop("thinking")  # Claude rejects temperature with thinking
            st.fake.push(model_turn(provider, f"variant {n}"))
            r = st.proxy.post(other)
            assert r.headers["x-lynkr-cache"] == "miss" and len(st.fake.requests) == n, n
            r.stream().ok()

    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_never_stores_server_tool_turns(self, agent, workspace, provider, stream):
        st = agent(provider, LYNKR_TOOLS="fs_write", **CACHE_ON)
        req = base_req(messages=[user("write the stamp")], stream=stream)
        for n in (1, 2):
            st.fake.push(model_turn(provider, None, [(f"call_c{n}", "fs_write", {"path": "stamp.txt", "content": str(n)})]),
                         model_turn(provider, "Written."))
            r = st.proxy.post(req)
            assert r.headers["x-lynkr-cache"] == "miss"
            assert texts(reply_of(r, stream))[-1] == "Written."
            assert (workspace / "stamp.txt").read_text() == str(n) and len(st.fake.requests) == 2 * n
        # the same offer without a tool call is a final answer, and is stored
        st.fake.push(model_turn(provider, "No tools needed."))
        plain = {**req, "messages": [user("just answer")]}
        # a JSON answer's headers go out after it was stored; a stream's went out before
        assert st.proxy.post(plain).headers["x-lynkr-cache"] == ("miss" if stream else "stored")
        hit = st.proxy.post(plain)
        assert hit.headers["x-lynkr-cache"] == "hit" and texts(reply_of(hit, stream)) == ["No tools needed."]
        assert len(st.fake.requests) == 5

    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_never_stores_client_tool_use_or_errors(self, agent, provider, stream):
        st = agent(provider, **CACHE_ON)
        req = base_req(tools=[GET_WEATHER], messages=[user("weather in Oslo?")], stream=stream)
        for n in (1, 2):
            st.fake.push(model_turn(provider, "Checking.", [(f"call_o{n}", "get_weather", {"city": "Oslo"})]))
            msg = reply_of(st.proxy.post(req), stream)
            assert msg["stop_reason"] == "tool_use" and msg["content"][-1]["id"] == f"call_o{n}"
        assert len(st.fake.requests) == 2
        err = dbx_error(400, "BAD_REQUEST", "nope") if provider == "dbx" else \
            json_reply(anth_error(400, "invalid_request_error", "nope"), 400)
        st.fake.push(err)
        bad = {**req, "messages": [user("fail please")]}
        assert st.proxy.post(bad).status == 400
        st.fake.push(model_turn(provider, "Fine now."))
        assert st.proxy.post(bad).headers["x-lynkr-cache"] == ("miss" if stream else "stored")
        assert len(st.fake.requests) == 4

    def test_disabled(self, agent):
        st = agent()  # AGENT_ENV turns the cache off
        for _ in range(2):
            r = st.proxy.post(base_req())
            assert r.status == 200 and "x-lynkr-cache" not in r.headers
        assert len(st.fake.requests) == 2


# == 13. Policy ==

# -- paths: every way out of WORKSPACE_ROOT, with real symlinks --

SECRET = "ZEBRA-secret"


def build_escape_tree(top: Path) -> Path:
    """top/repo is the workspace; every file reachable only by escaping holds SECRET."""
    repo, outside, evil = top / "repo", top / "outside", top / "repo-evil"
    for d in (repo / "src", repo / "sub", repo / ".git", repo / "certs", repo / "a", repo / "state", outside, evil):
        d.mkdir(parents=True, exist_ok=True)
    (repo / "src" / "app.py").write_text("print('ZEBRA-ok')\n")
    files = {repo / ".env": "env", repo / ".ENV": "ENV", repo / "sub" / ".env.local": "local",
             repo / ".git" / "config": "git", repo / "certs" / "server.pem": "pem",
             repo / "state" / "diary.txt": "state", outside / "secret.txt": "outside", evil / "secret.txt": "evil"}
    for path, tag in files.items():
        path.write_text(f"{SECRET}-{tag}\n")
    (repo / "linkdir").symlink_to(outside, target_is_directory=True)
    (repo / "linkfile.txt").symlink_to(outside / "secret.txt")
    (repo / "a" / "b").symlink_to("../../outside", target_is_directory=True)
    (repo / "notes.txt").symlink_to(".env")  # a harmless name for a blocked file
    (repo / "inner-link").symlink_to("src", target_is_directory=True)  # stays inside: allowed
    return repo


# (case id, path template, what the denial must say); {T} is the folder holding repo/
FILE_ESCAPES = [
    ("dotdot", "../outside/secret.txt", "is outside WORKSPACE_ROOT"),
    ("dotdot-deep", "src/../../outside/secret.txt", "is outside WORKSPACE_ROOT"),
    ("absolute", "{T}/outside/secret.txt", "is outside WORKSPACE_ROOT"),
    ("sibling-prefix", "{T}/repo-evil/secret.txt", "is outside WORKSPACE_ROOT"),
    ("sibling-prefix-rel", "../repo-evil/secret.txt", "is outside WORKSPACE_ROOT"),
    ("symlink-dir", "linkdir/secret.txt", "leads outside WORKSPACE_ROOT through a symlink"),
    ("symlink-file", "linkfile.txt", "leads outside WORKSPACE_ROOT through a symlink"),
    ("symlink-nested", "a/b/secret.txt", "leads outside WORKSPACE_ROOT through a symlink"),
    ("dotenv", ".env", "is blocked by POLICY_FILE_BLOCKED_PATHS (.env)"),
    ("dotenv-upper", ".ENV", "is blocked by POLICY_FILE_BLOCKED_PATHS"),
    ("dotenv-variant", "sub/.env.local", "is blocked by POLICY_FILE_BLOCKED_PATHS (.env.*)"),
    ("git-config", ".git/config", "is blocked by POLICY_FILE_BLOCKED_PATHS (.git)"),
    ("git-config-absolute", "{T}/repo/.git/config", "is blocked by POLICY_FILE_BLOCKED_PATHS (.git)"),
    ("pem", "certs/server.pem", "is blocked by POLICY_FILE_BLOCKED_PATHS (*.pem)"),
    ("symlink-to-dotenv", "notes.txt", "is blocked by POLICY_FILE_BLOCKED_PATHS (.env)"),
    ("data-dir", "state/diary.txt", "LYNKR_DATA_DIR"),
    ("session-db", "state/sessions.db", "LYNKR_DATA_DIR"),
]
DIR_ESCAPES = [
    ("dotdot", "..", "is outside WORKSPACE_ROOT"),
    ("absolute", "{T}/outside", "is outside WORKSPACE_ROOT"),
    ("sibling-prefix", "{T}/repo-evil", "is outside WORKSPACE_ROOT"),
    ("sibling-prefix-rel", "../repo-evil", "is outside WORKSPACE_ROOT"),
    ("symlink-dir", "linkdir", "leads outside WORKSPACE_ROOT through a symlink"),
    ("symlink-nested", "a/b", "leads outside WORKSPACE_ROOT through a symlink"),
    ("git", ".git", "is blocked by POLICY_FILE_BLOCKED_PATHS (.git)"),
    ("git-upper", ".GIT", "is blocked by POLICY_FILE_BLOCKED_PATHS"),
    ("data-dir", "state", "LYNKR_DATA_DIR"),
]


def snapshot(top: Path) -> dict[str, bytes]:
    """Every regular file under top (symlinks not followed), to prove a refused call changed nothing."""
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*"))
            if p.is_file() and not p.is_symlink() and "state" not in p.parts}


@pytest.fixture(scope="class", params=SEARCH_IMPLS)
def escape_ws(request, tmp_path_factory):
    """One proxy over an escape-test tree; `python` runs with a PATH that has no rg, `ripgrep` needs rg."""
    if request.param == "ripgrep":
        require_e2e("ripgrep (rg): apt-get install ripgrep", shutil.which("rg") is not None)
    top = tmp_path_factory.mktemp("escape")
    repo = build_escape_tree(top)
    nobin = top / "empty-bin"
    nobin.mkdir()
    env = {**AGENT_ENV, "WORKSPACE_ROOT": str(repo), "LYNKR_DATA_DIR": str(repo / "state")}
    if request.param == "python":
        env["PATH"] = str(nobin)
    proxy = start_proxy(top, env)
    yield top, proxy
    proxy.stop()


class TestPathPolicy:
    @staticmethod
    def denied(port: int, name: str, args: dict, want: str) -> str:
        msg = tool_err(port, name, args)
        assert msg.startswith("denied: ") and want in msg, f"{name} {args}: {msg}"
        assert SECRET not in msg
        return msg

    @pytest.mark.parametrize("case,path,want", FILE_ESCAPES, ids=[c[0] for c in FILE_ESCAPES])
    def test_read(self, escape_ws, case, path, want):
        top, proxy = escape_ws
        self.denied(proxy.port, "fs_read", {"path": path.format(T=top)}, want)

    def test_read_outside_system_file(self, escape_ws):
        _top, proxy = escape_ws
        self.denied(proxy.port, "fs_read", {"path": "/etc/passwd"}, "is outside WORKSPACE_ROOT")

    @pytest.mark.parametrize("case,path,want", FILE_ESCAPES, ids=[c[0] for c in FILE_ESCAPES])
    def test_write(self, escape_ws, case, path, want):
        top, proxy = escape_ws
        before = snapshot(top)
        self.denied(proxy.port, "fs_write", {"path": path.format(T=top), "content": "pwned"}, want)
        assert snapshot(top) == before

    @pytest.mark.parametrize("case,path,want", DIR_ESCAPES, ids=[c[0] for c in DIR_ESCAPES])
    def test_write_new_file_below(self, escape_ws, case, path, want):
        top, proxy = escape_ws
        before = snapshot(top)
        self.denied(proxy.port, "fs_write", {"path": path.format(T=top) + "/new-dir/new.txt", "content": "x"}, want)
        assert snapshot(top) == before and not list(top.rglob("new-dir"))

    @pytest.mark.parametrize("case,path,want", FILE_ESCAPES, ids=[c[0] for c in FILE_ESCAPES])
    def test_patch(self, escape_ws, case, path, want):
        top, proxy = escape_ws
        before = snapshot(top)
        p = path.format(T=top)
        target = (Path(p) if p.startswith("/") else top / "repo" / p).resolve()
        first = target.read_text().splitlines()[0] if target.suffix != ".db" else "x"  # a hunk that would apply
        patch = f"--- a/{p}\n+++ b/{p}\n@@ -1 +1 @@\n-{first}\n+pwned\n"
        self.denied(proxy.port, "edit_patch", {"patch": patch}, want)
        assert snapshot(top) == before

    @pytest.mark.parametrize("case,path,want", DIR_ESCAPES, ids=[c[0] for c in DIR_ESCAPES])
    def test_patch_creating_file_below(self, escape_ws, case, path, want):
        top, proxy = escape_ws
        before = snapshot(top)
        p = path.format(T=top) + "/created.txt"
        self.denied(proxy.port, "edit_patch", {"patch": f"--- /dev/null\n+++ b/{p}\n@@ -0,0 +1 @@\n+pwned\n"}, want)
        assert snapshot(top) == before and not list(top.rglob("created.txt"))

    @pytest.mark.parametrize("case,path,want", DIR_ESCAPES, ids=[c[0] for c in DIR_ESCAPES])
    def test_list(self, escape_ws, case, path, want):
        top, proxy = escape_ws
        self.denied(proxy.port, "fs_list", {"path": path.format(T=top)}, want)
        self.denied(proxy.port, "fs_list", {"path": path.format(T=top), "recursive": True}, want)

    @pytest.mark.parametrize("case,path,want", DIR_ESCAPES + FILE_ESCAPES,
                             ids=[f"dir-{c[0]}" for c in DIR_ESCAPES] + [f"file-{c[0]}" for c in FILE_ESCAPES])
    def test_search(self, escape_ws, case, path, want):
        top, proxy = escape_ws
        self.denied(proxy.port, "workspace_search", {"query": "ZEBRA", "path": path.format(T=top)}, want)

    def test_root_listing_and_search_leave_out_what_is_refused(self, escape_ws):
        _top, proxy = escape_ws
        listing = tool_ok(proxy.port, "fs_list", {"recursive": True}).splitlines()
        for forbidden in (".env", ".ENV", "sub/.env.local", ".git/", ".git/config", "certs/server.pem", "notes.txt",
                          "linkfile.txt", "linkdir/", "linkdir/secret.txt", "a/b/", "a/b/secret.txt", "state/",
                          "state/diary.txt"):
            assert forbidden not in listing, listing
        assert {"src/", "src/app.py", "a/", "sub/"} <= set(listing), listing
        assert not any(e.startswith(("inner-link/", "state")) and e != "inner-link/" for e in listing), listing
        assert tool_ok(proxy.port, "fs_list", {"glob": "**"}).count(SECRET) == 0
        for args in ({"query": "ZEBRA"}, {"query": "zebra-.*", "regex": True}, {"query": "ZEBRA", "glob": "*"}):
            assert tool_ok(proxy.port, "workspace_search", args) == "src/app.py:1:print('ZEBRA-ok')", args

    def test_allowed_paths_still_work(self, escape_ws):
        top, proxy = escape_ws
        for p in ("src/app.py", "src/../src/app.py", f"{top}/repo/src/app.py", "inner-link/app.py", "./src//app.py"):
            assert tool_ok(proxy.port, "fs_read", {"path": p}) == "print('ZEBRA-ok')\n", p
        assert tool_ok(proxy.port, "fs_list", {"path": "inner-link"}).endswith("app.py")


# -- blocked paths across whole-tree git tools and the index --


class TestBlockedPathsEverywhere:
    def test_whole_tree_git_tools_never_touch_blocked_files(self, gws):
        gws.write("src/.ENV", "API_TOKEN=canary-7f3a\n")  # untracked; case differs from the default .env pattern
        gws.write("src/keys/server.pem", "-----BEGIN PRIVATE KEY-----\ncanary\n")
        gws.write("src/app.py", "def main():\n    return 2\n")
        gws.start()
        status = json.loads(gws.ok("workspace_git_status"))
        listed = json.dumps(status)
        assert "src/app.py" in listed and ".ENV" not in listed and "server.pem" not in listed, status
        diff = gws.ok("workspace_git_diff")
        assert "return 2" in diff and "canary" not in diff, diff
        gws.ok("workspace_git_stage", {"all": True})
        assert gws.staged() == ["src/app.py"]
        assert gws.ok("workspace_git_commit", {"message": "update app"}).startswith("committed")
        committed = gws.git("show", "--name-only", "--format=", "HEAD").split()
        assert committed == ["src/app.py"]
        review = json.loads(gws.ok("workspace_diff_review", {"from_ref": "HEAD~1"}))
        assert [f["path"] for f in review["files"]] == ["src/app.py"], review

    def test_test_gate_tree_matches_stage_all_when_blocked_files_exist(self, gws):
        gws.write(".env", "SECRET=1\n")  # untracked and blocked: neither tested content nor committed
        gws.write("src/app.py", "def main():\n    return 3\n")
        gws.start(POLICY_GIT_REQUIRE_TESTS="true", WORKSPACE_TEST_COMMAND=gws.runner())
        assert gws.run_tests()["passed"] is True
        gws.ok("workspace_git_stage", {"all": True})
        assert gws.ok("workspace_git_commit", {"message": "tested change"}).startswith("committed")

    def test_index_never_reads_blocked_files(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        ix_write(ws, {"app.py": "def visible_function():\n    return 1\n",
                      "config/.env.py": "def leaked_secret_loader():\n    return 'x'\n",
                      "secrets/id_rsa_helper.py": "def another_leak():\n    return 2\n"})
        proxy = make_proxy(ix_env(tmp_path, ws))
        stats = ix_tool(proxy, "workspace_index_rebuild")
        assert stats["files"] == 1, stats
        assert ix_search(proxy, "visible_function")
        assert ix_search(proxy, "leaked_secret_loader") == [] and ix_search(proxy, "another_leak") == []


# -- web targets that are not globally routable --


class TestConfinementWeb:
    """Item 7: web targets that are not globally routable are refused before connecting."""

    @pytest.mark.parametrize("url,address", [("http://100.64.0.1/", "100.64.0.1"),
                                             ("http://100.127.255.254:8080/x", "100.127.255.254"),
                                             ("http://[2002:7f00:1::]/", "2002:7f00:1::"),
                                             ("http://[fec0::1]/", "fec0::1"),
                                             ("http://[::ffff:127.0.0.1]/", "127.0.0.1"),
                                             # refused as reserved before the fix (::/8): must stay refused
                                             ("http://[::127.0.0.1]/", "127.0.0.1"),
                                             ("http://[64:ff9b:1::a00:1]/", "64:ff9b:1::a00:1")],  # local NAT64
                             ids=["shared-100.64", "shared-top", "6to4-loopback", "site-local", "v4-mapped-loopback",
                                  "v4-compatible-loopback", "local-use-nat64"])
    def test_not_globally_routable_refused_before_connecting(self, agent, web_server, url, address):
        # Any connection lynkr would open for web_fetch goes through HTTP_PROXY: a tripwire that records it.
        tripwire = web_server()
        st = agent(HTTP_PROXY=tripwire.url, LYNKR_TOOLS="*")
        t0 = time.monotonic()
        err = tool_err(st.port, "web_fetch", {"url": url})
        assert time.monotonic() - t0 < 5, "refusing should not wait on a connection"
        assert address in err and re.search(r"not\b.{0,12}\bglobally routable", err), err
        assert not re.search(r"cannot connect|unreachable|timed out|refused the connection", err, re.I), err
        assert tripwire.requests == [], f"lynkr connected for {url}: {tripwire.requests[0].target}"

    def test_search_endpoint_redirect_to_shared_address_refused(self, agent, web_server):
        tripwire, searx = web_server(), web_server()
        st = agent(HTTP_PROXY=tripwire.url, WEB_SEARCH_ENDPOINT=f"{searx.url}/search", LYNKR_TOOLS="*")
        searx.push(redirect("http://100.64.0.1/internal"))
        err = tool_err(st.port, "web_search", {"query": "anything"})
        assert "100.64.0.1" in err and re.search(r"not\b.{0,12}\bglobally routable", err), err
        assert tripwire.requests == [] and [r.path for r in searx.requests] == ["/search"]

    def test_allowlisted_shared_address_is_fetched(self, agent, web_server):
        tripwire = web_server()
        tripwire.push(html_reply("<p>allowlisted page</p>"))
        st = agent(HTTP_PROXY=tripwire.url, WEB_SEARCH_ALLOWED_HOSTS="100.64.0.1", LYNKR_TOOLS="*")
        out = tool_ok(st.port, "web_fetch", {"url": "http://100.64.0.1/page"})
        assert out.endswith("allowlisted page"), out
        assert [r.target for r in tripwire.requests] == ["http://100.64.0.1/page"]


# == 14. Tools ==

# -- exposure and workspace tools --


class TestToolExposure:
    def test_tools_route_lists_schemas(self, agent):
        st = agent(POLICY_DISALLOWED_TOOLS="workspace_task*")
        r = st.proxy.call("GET", "/v1/tools")
        assert r.status == 200
        tools = {t["name"]: t for t in r.json()["data"]}
        for name in ("fs_read", "fs_write", "fs_list", "edit_patch", "workspace_search", "workspace_task_create",
                     "workspace_tasks_list", "workspace_task_update", "workspace_task_set_status",
                     "workspace_task_delete", "web_fetch", "web_search"):
            t = tools[name]
            assert t["description"] and t["input_schema"]["type"] == "object", t
            assert t["enabled"] is (not name.startswith("workspace_task")), t
        assert tools["fs_read"]["input_schema"]["required"] == ["path"]
        assert call(st.port, "POST", "/v1/tools/no_such_tool", {}).status == 404
        bad = call(st.port, "POST", "/v1/tools/fs_read", [1, 2])
        assert bad.status == 400 and bad.etype == "invalid_request_error"

    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_lynkr_tools_glob_reaches_claude_code_requests(self, agent, provider):
        st = agent(provider, LYNKR_TOOLS="workspace_task*,fs_l?st")
        st.fake.push(model_turn(provider, "hi"))
        st.proxy.post(cc_body(stream=True)).stream().ok()
        names = upstream_tool_names(st.fake.last)
        assert sorted(n for n in names if n in ("fs_list", "fs_read") or n.startswith("workspace_")) == [
            "fs_list", "workspace_task_create", "workspace_task_delete", "workspace_task_set_status",
            "workspace_task_update", "workspace_tasks_list"], names
        assert "Bash" in names  # Claude Code's own tools still go up

    def test_default_offers_no_server_tools_and_never_runs_unoffered(self, agent, workspace):
        st = agent("dbx")  # LYNKR_TOOLS defaults to mcp_*
        st.fake.push(model_turn("dbx", None, [("call_u1", "fs_write", {"path": "nope.txt", "content": "x"})]))
        msg = reply_of(st.proxy.post(base_req(tools=[GET_WEATHER])), False)
        assert upstream_tool_names(st.fake.last) == ["get_weather"]
        # not offered, so not lynkr's: the call goes back to the client untouched
        assert msg["stop_reason"] == "tool_use" and msg["content"][-1]["name"] == "fs_write"
        assert not (workspace / "nope.txt").exists()

    @pytest.mark.parametrize("form", ["anthropic", "openai", "anthropic-with-client-schema"])
    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_client_lists_server_tool_by_name(self, agent, provider, form):
        entry = {"anthropic": {"name": "fs_read"},
                 "openai": {"type": "function", "function": {"name": "fs_read"}},
                 "anthropic-with-client-schema": {"name": "fs_read", "description": "whatever",
                                                  "input_schema": {"type": "object", "properties": {"x": {}}}}}[form]
        st = agent(provider)
        st.fake.push(model_turn(provider, None, [("call_n1", "fs_read", {"path": "notes.txt", "start_line": 1})]),
                     model_turn(provider, "It says milk."))
        msg = reply_of(st.proxy.post(base_req(tools=[entry, GET_WEATHER], stream=True)), True)
        first = st.fake.requests[0]
        assert sorted(upstream_tool_names(first)) == ["fs_read", "get_weather"]
        schema = upstream_tool_def(first, "fs_read")
        assert set(schema["properties"]) == {"path", "start_line", "end_line", "line_numbers"}, schema
        assert results_seen(st.fake.last) == {"call_n1": "remember the milk\n"}
        assert texts(msg)[-1] == "It says milk."

    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_disallowed_tool_never_offered_never_run(self, agent, workspace, provider):
        st = agent(provider, LYNKR_TOOLS="fs_*", POLICY_DISALLOWED_TOOLS="fs_write,edit_*")
        st.fake.push(model_turn(provider, None, [("call_d1", "fs_write", {"path": "pwn.txt", "content": "x"})]))
        msg = reply_of(st.proxy.post(base_req(tools=[{"name": "edit_patch"}], tool_choice={"type": "auto"})), False)
        names = upstream_tool_names(st.fake.last)
        assert "fs_read" in names and "fs_write" not in names, names
        if "edit_patch" in names:  # a bare name the policy removed is at most a schemaless client tool
            assert "patch" not in json.dumps(upstream_tool_def(st.fake.last, "edit_patch"))
        assert not (workspace / "pwn.txt").exists()
        assert msg["stop_reason"] == "tool_use" and msg["content"][-1]["name"] == "fs_write"
        denial = tool_err(st.port, "fs_write", {"path": "pwn.txt", "content": "x"})
        assert denial == "denied: tool fs_write is disabled by POLICY_DISALLOWED_TOOLS (fs_write)", denial
        assert "POLICY_DISALLOWED_TOOLS" in tool_err(st.port, "edit_patch", {"patch": "x"})
        assert not (workspace / "pwn.txt").exists()

    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_policy_denial_same_for_model_and_direct_call(self, agent, workspace, provider):
        (workspace / ".env").write_text("TOKEN=hunter2\n")
        st = agent(provider, LYNKR_TOOLS="fs_read")
        st.fake.push(model_turn(provider, None, [("call_p1", "fs_read", {"path": ".env"})]), model_turn(provider, "Blocked."))
        msg = reply_of(st.proxy.post(base_req()), False)
        model_saw = results_seen(st.fake.last)["call_p1"]
        direct = tool_err(st.port, "fs_read", {"path": ".env"})
        assert direct == "denied: .env is blocked by POLICY_FILE_BLOCKED_PATHS (.env)"
        # the OpenAI tool message has no is_error flag, so the translation marks the text instead
        assert model_saw == ("[tool error] " if provider == "dbx" else "") + direct, model_saw
        if provider == "az":
            assert st.fake.last.body["messages"][-1]["content"][0]["is_error"] is True
        assert "hunter2" not in json.dumps(msg) and "hunter2" not in st.fake.last.raw.decode()

    def test_direct_call_schema_errors_name_the_field(self, agent):
        st = agent()
        assert tool_err(st.port, "fs_read", {}) == "invalid input: input.path: required"
        assert "input.start_line: must be >= 1" in tool_err(st.port, "fs_read", {"path": "notes.txt", "start_line": 0})
        assert "input.path: expected string" in tool_err(st.port, "fs_read", {"path": 7})
        assert "input.colour: unknown field" in tool_err(st.port, "fs_list", {"colour": "red"})
        assert "input.max_entries: must be <= 10000" in tool_err(st.port, "fs_list", {"max_entries": 10001})
        assert "input.status: must be one of" in tool_err(st.port, "workspace_tasks_list", {"status": "someday"})
        assert "input.query: must not be empty" in tool_err(st.port, "workspace_search", {"query": ""})
        # an empty body is {} (and so a missing required field, not an HTTP error)
        empty = call(st.port, "POST", "/v1/tools/fs_read", b"")
        assert empty.status == 200 and empty.json() == {"content": "invalid input: input.path: required", "is_error": True}

    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_typed_web_search_not_captured(self, agent, provider):
        st = agent(provider, LYNKR_TOOLS="web_search,fs_read")
        typed = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
        st.fake.push(model_turn(provider, "hello"))
        body = cc_body(stream=True)
        body["tools"] = [typed, *body["tools"]]
        r = st.proxy.post(body)
        r.stream().ok()
        sent = st.fake.last
        names = upstream_tool_names(sent)
        assert "fs_read" in names and "Bash" in names
        # Neither upstream runs Anthropic's server tools: lynkr runs the search itself (issue 16), offering
        # the model one web_search function in place of the typed tool -- never two tools of one name.
        assert names.count("web_search") == 1
        assert upstream_tool_def(sent, "web_search")["required"] == ["query"]
        assert "web_search_20250305" not in sent.raw.decode()


class TestWorkspaceTools:
    def test_edit_patch_is_atomic_across_files(self, agent, workspace):
        st = agent()
        (workspace / "a.txt").write_text("one\ntwo\nthree\n")
        (workspace / "b.txt").write_text("alpha\nbeta\n")
        good_a = "--- a/a.txt\n+++ b/a.txt\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n"
        bad_b = "--- a/b.txt\n+++ b/b.txt\n@@ -1,2 +1,2 @@\n alpha\n-gamma\n+GAMMA\n"
        err = tool_err(st.port, "edit_patch", {"patch": good_a + bad_b})
        assert "b.txt" in err and "does not match" in err, err
        assert (workspace / "a.txt").read_text() == "one\ntwo\nthree\n"
        assert (workspace / "b.txt").read_text() == "alpha\nbeta\n"
        # two hunks in one file, the second wrong: neither applies
        (workspace / "long.txt").write_text("".join(f"line {i}\n" for i in range(1, 21)))
        two = ("--- a/long.txt\n+++ b/long.txt\n@@ -2,1 +2,1 @@\n-line 2\n+LINE 2\n"
               "@@ -15,1 +15,1 @@\n-line 99\n+LINE 99\n")
        assert "does not match" in tool_err(st.port, "edit_patch", {"patch": two})
        assert "LINE" not in (workspace / "long.txt").read_text()
        # a refused second file stops the whole patch too
        (workspace / ".env").write_text("K=V\n")
        blocked = good_a + "--- a/.env\n+++ b/.env\n@@ -1 +1 @@\n-K=V\n+K=W\n"
        assert "POLICY_FILE_BLOCKED_PATHS" in tool_err(st.port, "edit_patch", {"patch": blocked})
        assert (workspace / "a.txt").read_text() == "one\ntwo\nthree\n" and (workspace / ".env").read_text() == "K=V\n"
        # and the good part alone applies
        assert tool_ok(st.port, "edit_patch", {"patch": good_a}) == "patched a.txt"
        assert (workspace / "a.txt").read_text() == "one\nTWO\nthree\n"

    def test_edit_patch_creates_and_deletes_files(self, agent, workspace):
        st = agent()
        (workspace / "old.txt").write_text("bye\nnow\n")
        (workspace / "keep.py").write_text("x = 1\ny = 2\n")
        patch = ("diff --git a/new/dir/made.txt b/new/dir/made.txt\nnew file mode 100644\nindex 0000000..e69de29\n"
                 "--- /dev/null\n+++ b/new/dir/made.txt\n@@ -0,0 +1,2 @@\n+hello\n+world\n"
                 "diff --git a/old.txt b/old.txt\ndeleted file mode 100644\n"
                 "--- a/old.txt\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-bye\n-now\n"
                 "--- a/keep.py\n+++ b/keep.py\n@@ -1,2 +1,3 @@\n x = 1\n+z = 3\n y = 2\n")
        out = tool_ok(st.port, "edit_patch", {"patch": patch})
        assert "new/dir/made.txt" in out and "old.txt (deleted)" in out and "keep.py" in out, out
        assert (workspace / "new" / "dir" / "made.txt").read_text() == "hello\nworld\n"
        assert not (workspace / "old.txt").exists()
        assert (workspace / "keep.py").read_text() == "x = 1\nz = 3\ny = 2\n"
        # creating a file that exists, or deleting one that does not, changes nothing
        again = "--- /dev/null\n+++ b/keep.py\n@@ -0,0 +1 @@\n+clobber\n"
        assert "already exists" in tool_err(st.port, "edit_patch", {"patch": again})
        gone = "--- a/old.txt\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-bye\n-now\n"
        assert "old.txt" in tool_err(st.port, "edit_patch", {"patch": gone})
        assert (workspace / "keep.py").read_text() == "x = 1\nz = 3\ny = 2\n"
        assert "unified diff" in tool_err(st.port, "edit_patch", {"patch": "just some words"})

    def test_read_write_list(self, agent, workspace):
        st = agent()
        (workspace / "lines.txt").write_text("".join(f"L{i}\n" for i in range(1, 8)))
        assert tool_ok(st.port, "fs_read", {"path": "lines.txt", "start_line": 3, "end_line": 4}) == "L3\nL4\n"
        assert tool_ok(st.port, "fs_read", {"path": "lines.txt", "start_line": 6, "line_numbers": True}) == "6\tL6\n7\tL7\n"
        assert "past the end" in tool_err(st.port, "fs_read", {"path": "lines.txt", "start_line": 99})
        assert "no such file" in tool_err(st.port, "fs_read", {"path": "missing.txt"})
        (workspace / "bin.dat").write_bytes(b"\x00\x01\x02binary")
        assert "binary" in tool_err(st.port, "fs_read", {"path": "bin.dat"})
        script = workspace / "run.sh"
        script.write_text("old\n")
        script.chmod(0o755)
        assert tool_ok(st.port, "fs_write", {"path": "run.sh", "content": "#!/bin/sh\necho new\n"}) == "wrote 19 bytes to run.sh"
        assert script.read_text() == "#!/bin/sh\necho new\n" and script.stat().st_mode & 0o777 == 0o755
        tool_ok(st.port, "fs_write", {"path": "deep/er/file.py", "content": "pass\n"})
        assert (workspace / "deep" / "er" / "file.py").read_text() == "pass\n"
        assert not [p for p in workspace.rglob(".lynkr-*")]  # no temp files left behind
        assert tool_ok(st.port, "fs_list", {"glob": "*.py", "recursive": True}).splitlines() == ["deep/er/file.py",
                                                                                                 "src/app.py"]
        top = tool_ok(st.port, "fs_list", {}).splitlines()
        assert {"src/", "deep/", "notes.txt", "lines.txt"} <= set(top) and "src/app.py" not in top, top

    def test_default_data_dir_is_private(self, agent, workspace):
        st = agent(LYNKR_DATA_DIR=None)  # default: <WORKSPACE_ROOT>/.lynkr
        data = workspace / ".lynkr"
        assert (data / "sessions.db").is_file() and ignores_all(data / ".gitignore")
        for path in (".lynkr/sessions.db", ".lynkr/.gitignore", f"{data}/sessions.db", "src/../.lynkr/sessions.db"):
            assert "LYNKR_DATA_DIR" in tool_err(st.port, "fs_read", {"path": path}), path
        assert "LYNKR_DATA_DIR" in tool_err(st.port, "fs_write", {"path": ".lynkr/sessions.db", "content": "x"})
        assert "LYNKR_DATA_DIR" in tool_err(st.port, "fs_list", {"path": ".lynkr"})
        assert "LYNKR_DATA_DIR" in tool_err(st.port, "workspace_search", {"query": "x", "path": ".lynkr"})
        assert ".lynkr" not in tool_ok(st.port, "fs_list", {"recursive": True})
        assert (data / "sessions.db").stat().st_size > 0

    def test_session_db_folder_is_private(self, agent, workspace):
        db_dir = workspace / "private-db"
        st = agent(SESSION_DB_PATH=str(db_dir / "store.db"))
        (db_dir / "other.txt").write_text("next to the database\n")
        for path in ("private-db/store.db", "private-db/store.db-wal", "private-db/other.txt"):
            err = tool_err(st.port, "fs_read", {"path": path})
            assert err.startswith("denied: ") and "SESSION_DB_PATH" in err, (path, err)
        assert tool_err(st.port, "fs_write", {"path": "private-db/store.db", "content": "x"}).startswith("denied: ")
        assert tool_err(st.port, "fs_list", {"path": "private-db"}).startswith("denied: ")
        assert "private-db" not in tool_ok(st.port, "fs_list", {"recursive": True})

    @pytest.mark.parametrize("impl", SEARCH_IMPLS)
    def test_search_query_is_never_an_option(self, agent, workspace, tmp_path, impl):
        if impl == "ripgrep":
            require_e2e("ripgrep (rg): apt-get install ripgrep", shutil.which("rg") is not None)
            st = agent()
        else:
            (tmp_path / "no-rg").mkdir()
            st = agent(PATH=str(tmp_path / "no-rg"))
        (workspace / "flags.txt").write_text("use --pre=/bin/sh here\nrun -e with care\n--files\nplain\n")
        marker = tmp_path / "pre-ran"
        (workspace / "pre.sh").write_text(f"#!/bin/sh\ntouch {marker}\ncat \"$1\"\n")
        (workspace / "pre.sh").chmod(0o755)
        assert tool_ok(st.port, "workspace_search", {"query": f"--pre={workspace}/pre.sh"}) == "no matches"
        assert not marker.exists()
        assert tool_ok(st.port, "workspace_search", {"query": "--pre=/bin/sh"}) == "flags.txt:1:use --pre=/bin/sh here"
        assert tool_ok(st.port, "workspace_search", {"query": "-e"}) == "flags.txt:2:run -e with care"
        assert tool_ok(st.port, "workspace_search", {"query": "--files"}) == "flags.txt:3:--files"
        assert tool_ok(st.port, "workspace_search", {"query": "-", "path": "flags.txt", "max_results": 2}) == (
            "flags.txt:1:use --pre=/bin/sh here\nflags.txt:2:run -e with care\n[stopped at max_results=2]")
        # literal by default, regex on request, case-insensitive unless asked
        assert tool_ok(st.port, "workspace_search", {"query": "return 'HI'"}) == "src/app.py:2:    return 'hi'"
        assert tool_ok(st.port, "workspace_search", {"query": "return 'HI'", "case_sensitive": True}) == "no matches"
        assert tool_ok(st.port, "workspace_search", {"query": "re.urn"}) == "no matches"
        assert tool_ok(st.port, "workspace_search", {"query": "^def h", "regex": True}) == "src/app.py:1:def hello():"
        assert "invalid regex" in tool_err(st.port, "workspace_search", {"query": "(", "regex": True})
        assert tool_ok(st.port, "workspace_search", {"query": "milk", "glob": "*.py"}) == "no matches"
        assert not marker.exists()
        # proof of which engine ran: ripgrep skips hidden files, the pure-Python search reads them
        (workspace / ".dotfile.txt").write_text("only-in-dotfile\n")
        found = tool_ok(st.port, "workspace_search", {"query": "only-in-dotfile"})
        assert found == ("no matches" if impl == "ripgrep" else ".dotfile.txt:1:only-in-dotfile"), found

    def test_tasks_crud_persist_across_restart(self, agent):
        st = agent()
        a = json.loads(tool_ok(st.port, "workspace_task_create", {"title": "write tests", "priority": "high"}))
        b = json.loads(tool_ok(st.port, "workspace_task_create", {"title": "ship", "description": "after tests"}))
        c = json.loads(tool_ok(st.port, "workspace_task_create", {"title": "drop me", "status": "blocked"}))
        assert set(a) == {"id", "title", "description", "status", "priority", "created_at", "updated_at"}
        assert (a["status"], a["priority"], b["priority"], c["status"]) == ("todo", "high", "medium", "blocked")
        assert len({a["id"], b["id"], c["id"]}) == 3
        upd = json.loads(tool_ok(st.port, "workspace_task_update", {"id": b["id"], "title": "ship it", "priority": "low"}))
        assert (upd["title"], upd["description"], upd["priority"]) == ("ship it", "after tests", "low")
        assert upd["updated_at"] >= upd["created_at"]
        done = json.loads(tool_ok(st.port, "workspace_task_set_status", {"id": a["id"], "status": "done"}))
        assert done["status"] == "done" and done["title"] == "write tests"
        deleted = json.loads(tool_ok(st.port, "workspace_task_delete", {"id": c["id"]}))
        assert deleted == {"deleted": c}
        assert "no task with id" in tool_err(st.port, "workspace_task_delete", {"id": c["id"]})
        assert "no task with id" in tool_err(st.port, "workspace_task_set_status", {"id": 9999, "status": "done"})
        assert "input.status: must be one of" in tool_err(st.port, "workspace_task_set_status", {"id": a["id"],
                                                                                                 "status": "nope"})
        before = json.loads(tool_ok(st.port, "workspace_tasks_list", {}))
        st.restart()
        after = json.loads(tool_ok(st.port, "workspace_tasks_list", {}))
        assert after == before and [t["title"] for t in after] == ["write tests", "ship it"]
        assert [t["id"] for t in json.loads(tool_ok(st.port, "workspace_tasks_list", {"status": "done"}))] == [a["id"]]
        assert json.loads(tool_ok(st.port, "workspace_tasks_list", {"status": "blocked"})) == []

    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_model_drives_tasks(self, agent, provider):
        st = agent(provider, LYNKR_TOOLS="workspace_task*")
        st.fake.push(model_turn(provider, None, [("call_k1", "workspace_task_create", {"title": "from the model"})]),
                     model_turn(provider, None, [("call_k2", "workspace_tasks_list", {})]),
                     model_turn(provider, "One task."))
        msg = reply_of(st.proxy.post(base_req(stream=True)), True)
        listed = json.loads(results_seen(st.fake.last)["call_k2"])
        assert [t["title"] for t in listed] == ["from the model"] and texts(msg)[-1] == "One task."
        assert json.loads(tool_ok(st.port, "workspace_tasks_list", {})) == listed


# -- web tools against a local HTTP server --

PAGE = ("<!doctype html><html><head><title>Lynkr &amp; friends</title><style>body{color:red}</style>"
        "<script>var hidden = 'SCRIPT-TEXT';</script></head><body><nav>menu-chrome</nav>"
        "<h1>Heading</h1><p>First   paragraph with <b>bold</b> &lt;tags&gt;.</p><ul><li>one</li><li>two</li></ul>"
        "<noscript>NOSCRIPT-TEXT</noscript><p>Caf\u00e9 ends here.</p></body></html>")


class TestWebTools:
    def test_fetch_allowlisted_converts_html(self, agent, web_server):
        site = web_server()
        st = agent(WEB_SEARCH_ALLOWED_HOSTS="127.0.0.1")
        site.push(html_reply(PAGE))
        out = tool_ok(st.port, "web_fetch", {"url": f"{site.url}/page?x=1"})
        head, _, body = out.partition("\n\n")
        assert head == f"URL: {site.url}/page?x=1\nTitle: Lynkr & friends", out
        for want in ("Heading", "First paragraph with bold <tags>.", "one", "two", "Café ends here."):
            assert want in body, out
        for gone in ("SCRIPT-TEXT", "color:red", "NOSCRIPT-TEXT", "menu-chrome", "<p>", "<li>"):
            assert gone not in out, out
        assert [r.path for r in site.requests] == ["/page"] and site.last.method == "GET"

    def test_fetch_by_name_connects_to_the_checked_address_with_the_name_as_host(self, agent, web_server):
        # The web tools resolve and check a name, then connect to an address they checked (no second
        # lookup that could answer differently); the request still names the host. localhost may
        # resolve to ::1 first while the site listens on 127.0.0.1 only: every checked address is tried.
        site = web_server()
        st = agent(WEB_SEARCH_ALLOWED_HOSTS="localhost")
        site.push(html_reply("<p>by name</p>"))
        out = tool_ok(st.port, "web_fetch", {"url": f"http://localhost:{site.port}/named"})
        assert out == f"URL: http://localhost:{site.port}/named\n\nby name", out
        assert site.last.headers["host"] == f"localhost:{site.port}", site.last.headers
        # Pinned connections are not pooled (a resolver that rotates its answers would otherwise leave
        # an idle socket behind per fetch): the next fetch opens its own.
        site.push(html_reply("<p>again</p>"))
        assert tool_ok(st.port, "web_fetch", {"url": f"http://localhost:{site.port}/again"}).endswith("again")
        assert len({rec.peer for rec in site.requests}) == 2, [rec.peer for rec in site.requests]

    def test_fetch_refused_without_allowlist(self, agent, web_server):
        site = web_server()
        st = agent()
        err = tool_err(st.port, "web_fetch", {"url": f"{site.url}/"})
        assert err.startswith("denied: ") and "127.0.0.1" in err and "WEB_SEARCH_ALLOWED_HOSTS" in err, err
        err = tool_err(st.port, "web_fetch", {"url": "http://169.254.169.254/latest/meta-data/"})
        assert err.startswith("denied: ") and "169.254.169.254" in err and "WEB_SEARCH_ALLOWED_HOSTS" in err, err
        st2 = agent(WEB_SEARCH_ALLOWED_HOSTS="docs.example.com,*.example.org")
        err = tool_err(st2.port, "web_fetch", {"url": f"{site.url}/"})
        assert err == "denied: host 127.0.0.1 is not in WEB_SEARCH_ALLOWED_HOSTS", err
        assert site.requests == []
        assert "only http(s)" in tool_err(st.port, "web_fetch", {"url": "file:///etc/passwd"})

    @pytest.mark.parametrize("target", ["second-loopback", "link-local", "other-port-name"])
    def test_redirect_to_forbidden_address_refused(self, agent, web_server, target):
        site = web_server()
        if target == "second-loopback":
            try:
                hidden = web_server("127.0.0.2")
            except OSError:
                pytest.skip("cannot bind 127.0.0.2 here")
            location = f"{hidden.url}/internal"
        elif target == "link-local":
            hidden, location = None, "http://169.254.169.254/latest/meta-data/iam"
        else:
            hidden = web_server()
            location = f"http://localhost:{hidden.port}/internal"  # same machine, a name not on the list
        st = agent(WEB_SEARCH_ALLOWED_HOSTS="127.0.0.1")
        site.push(redirect(location))
        err = tool_err(st.port, "web_fetch", {"url": f"{site.url}/start"})
        assert err.startswith("denied: ") and "WEB_SEARCH_ALLOWED_HOSTS" in err, err
        assert [r.path for r in site.requests] == ["/start"]
        if hidden is not None:
            assert hidden.requests == []

    def test_redirect_within_allowlist_followed(self, agent, web_server):
        site = web_server()
        st = agent(WEB_SEARCH_ALLOWED_HOSTS="127.0.0.1")
        site.push(redirect("/hop2", 301), redirect(f"{site.url}/final", 307), html_reply("<p>arrived</p>"))
        out = tool_ok(st.port, "web_fetch", {"url": f"{site.url}/hop1"})
        assert out == f"URL: {site.url}/final\n\narrived", out
        site.push(*[redirect("/loop")] * 10)
        assert "too many redirects" in tool_err(st.port, "web_fetch", {"url": f"{site.url}/loop"})
        site.push(html_reply("<p>gone</p>", 404))
        assert "HTTP 404" in tool_err(st.port, "web_fetch", {"url": f"{site.url}/missing"})

    def test_fetch_size_caps(self, agent, web_server):
        site = web_server()
        st = agent(WEB_SEARCH_ALLOWED_HOSTS="127.0.0.1", WEB_FETCH_MAX_BYTES="2048")
        big = "A" * 50000 + "END-MARKER"
        site.push(Reply(200, big.encode(), (("content-type", "text/plain"),)))
        out = tool_ok(st.port, "web_fetch", {"url": f"{site.url}/big.txt"})
        assert "END-MARKER" not in out and out.count("A") <= 2048, len(out)
        site.push(Reply(200, ("word " * 1000).encode(), (("content-type", "text/plain"),)))
        out = tool_ok(st.port, "web_fetch", {"url": f"{site.url}/words.txt", "max_chars": 100})
        assert out.endswith("\n[truncated at 100 characters]"), out[-200:]
        assert out.partition("\n\n")[2].count("word") <= 20

    def test_web_search_searxng(self, agent, web_server):
        searx = web_server()
        st = agent(WEB_SEARCH_ENDPOINT=f"{searx.url}/search?safesearch=1")  # trusted without any allowlist
        results = [{"title": f"Result {i}", "url": f"https://example.com/{i}", "content": f"snippet {i}",
                    "engine": "fake", "score": 1.0} for i in range(5)]
        searx.push(json_reply({"query": "lynkr proxy", "results": results}))
        out = json.loads(tool_ok(st.port, "web_search", {"query": "lynkr proxy & more", "max_results": 3}))
        assert out == [{"title": f"Result {i}", "url": f"https://example.com/{i}", "snippet": f"snippet {i}"}
                       for i in range(3)]
        q = urllib.parse.parse_qs(searx.last.query)
        assert searx.last.path == "/search" and q == {"safesearch": ["1"], "q": ["lynkr proxy & more"], "format": ["json"]}
        searx.push(json_reply({"results": []}))
        assert tool_ok(st.port, "web_search", {"query": "nothing"}) == "no results"
        searx.push(html_reply("<p>not json</p>"))
        assert "format=json" in tool_err(st.port, "web_search", {"query": "html"})
        # a redirect from the trusted endpoint is checked like any other URL
        searx.push(redirect("http://169.254.169.254/latest"))
        assert tool_err(st.port, "web_search", {"query": "x"}).startswith("denied: ")

    def test_web_search_needs_endpoint(self, agent):
        st = agent()
        assert "WEB_SEARCH_ENDPOINT" in tool_err(st.port, "web_search", {"query": "anything"})

    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_model_fetches_a_page(self, agent, web_server, provider):
        site = web_server()
        site.push(html_reply(PAGE))
        st = agent(provider, LYNKR_TOOLS="web_fetch", WEB_SEARCH_ALLOWED_HOSTS="127.0.0.1")
        st.fake.push(model_turn(provider, None, [("call_w1", "web_fetch", {"url": f"{site.url}/doc"})]),
                     model_turn(provider, "The page is about Lynkr."))
        msg = reply_of(st.proxy.post(base_req(stream=True)), True)
        got = results_seen(st.fake.last)["call_w1"]
        assert got.startswith(f"URL: {site.url}/doc\nTitle: Lynkr & friends") and "SCRIPT-TEXT" not in got
        assert texts(msg)[-1] == "The page is about Lynkr."


# -- Brave Search and Tavily, chosen by WEB_SEARCH_PROVIDER or by which key is set --


def one_search(proxy: Proxy, fake: FakeHTTP, provider: str = "dbx", typed: dict | None = None,
               stream: bool = False) -> tuple[dict, str]:
    """One search turn through lynkr: (the client's reply, the search result text the model read)."""
    cid = "call_svc" if provider == "dbx" else "toolu_svc"
    fake.reset()
    fake.push(*[ws_model(provider, [[(cid, {"query": "lynkr search"})]], "Done.")] * 2)
    msg = ws_reply(proxy.post(ws_body(stream, typed=typed)), stream)
    assert texts(msg) == ["Done."], msg
    return msg, seen_result(fake.last, cid)


class TestSearchServices:
    @pytest.mark.parametrize("how", ["explicit", "auto-brave-key-wins"])
    def test_brave(self, make_proxy, new_dbx, how):
        brave = FakeBrave()
        try:
            fake = new_dbx()
            env = {**dbx_env(fake), "WEB_SEARCH_ENDPOINT": f"{brave.url}/res/v1/web/search", "BRAVE_API_KEY": BRAVE_KEY,
                   "WEB_SEARCH_MAX_RESULTS": "2"}
            env.update({"WEB_SEARCH_PROVIDER": "brave"} if how == "explicit" else {"TAVILY_API_KEY": TAVILY_KEY})
            proxy = make_proxy(env)
            msg, read = one_search(proxy, fake, stream=how == "explicit")
            [(_, res)] = search_pairs(msg)
            assert [(x["title"], x["url"], x["page_age"]) for x in result_list(res)] == [
                ("Brave hit one", "https://brave-one.example.com/a", "2026-10-01T00:00:00"),
                ("Brave hit two", "https://brave-two.example.org/b", None)]
            assert "first <strong>hit</strong>" in read or "first hit" in read, read
            rec = brave.last
            assert rec.method == "GET" and rec.headers["x-subscription-token"] == BRAVE_KEY
            assert urllib.parse.parse_qs(rec.query) == {"q": ["lynkr search"], "count": ["2"]}
            assert TAVILY_KEY not in json.dumps(rec.headers) and DBX_KEY not in json.dumps(rec.headers)
            # A key Brave refuses (401) is an "unavailable" result, not an HTTP error.
            brave.key = "BSA-rotated-key"
            msg, read = one_search(proxy, fake)
            [(_, res)] = search_pairs(msg)
            assert error_code(res) == "unavailable" and "401" in read, read
        finally:
            brave.close()

    @pytest.mark.parametrize("how", ["explicit", "auto-only-tavily-key"])
    def test_tavily(self, make_proxy, new_az, how):
        tavily = FakeTavily()
        try:
            fake = new_az()
            env = {**az_env(fake), "WEB_SEARCH_ENDPOINT": f"{tavily.url}/search", "TAVILY_API_KEY": TAVILY_KEY}
            if how == "explicit":
                env.update(WEB_SEARCH_PROVIDER="tavily", BRAVE_API_KEY=BRAVE_KEY)
            proxy = make_proxy(env)
            msg, read = one_search(proxy, fake, "az", stream=how == "explicit")
            [(_, res)] = search_pairs(msg)
            assert [(x["title"], x["url"], x["page_age"]) for x in result_list(res)] == [
                ("Tavily hit one", "https://tavily-one.example.com/x", "Mon, 02 Nov 2026 10:00:00 GMT"),
                ("Tavily hit two", "https://tavily-two.example.org/y", None)]
            assert "tavily snippet one" in read and "https://tavily-two.example.org/y" in read, read
            rec = tavily.last
            assert rec.method == "POST" and rec.headers["authorization"] == f"Bearer {TAVILY_KEY}"
            assert rec.headers.get("content-type", "").startswith("application/json")
            assert rec.body == {"query": "lynkr search", "max_results": 8}, rec.body
            # The domain lists reach Tavily in its own fields (and still filter what comes back).
            typed = {**WS_TYPED, "allowed_domains": ["tavily-one.example.com"], "blocked_domains": ["spam.example"]}
            msg, _ = one_search(proxy, fake, "az", typed=typed)
            [(_, res)] = search_pairs(msg)
            assert [x["url"] for x in result_list(res)] == ["https://tavily-one.example.com/x"]
            body = tavily.last.body
            assert body["include_domains"] == ["tavily-one.example.com"] and body["exclude_domains"] == ["spam.example"]
            assert body["query"] == "lynkr search" and isinstance(body["max_results"], int) and body["max_results"] >= 8
        finally:
            tavily.close()

    @pytest.mark.parametrize("service,setting", [("brave", "BRAVE_API_KEY"), ("tavily", "TAVILY_API_KEY")])
    def test_missing_key_is_unavailable_and_logged(self, make_proxy, new_dbx, service, setting):
        svc = FakeBrave() if service == "brave" else FakeTavily()
        try:
            fake = new_dbx()
            proxy = make_proxy({**dbx_env(fake), "WEB_SEARCH_PROVIDER": service, "WEB_SEARCH_ENDPOINT": svc.url})
            msg, read = one_search(proxy, fake)
            [(_, res)] = search_pairs(msg)
            assert error_code(res) == "unavailable"
            assert setting in read, read
            assert svc.requests == [], "no request without a key"
            proxy.wait_log(lambda o: o.get("msg") == "web search failed" and setting in str(o.get("error")))
        finally:
            svc.close()


# -- a timed-out call changes nothing afterwards --


class TestToolTimeouts:
    def test_timed_out_edit_never_lands_later(self, make_proxy, tmp_path):
        big = "".join(f"line {i}\n" for i in range(80_000))
        (tmp_path / "big.txt").write_text(big)
        hunks = "".join(f"@@ -{i},1 +{i},1 @@\n-line {i - 1}\n+LINE {i - 1}\n" for i in range(1, 80_000, 97))
        patch = "--- a/big.txt\n+++ b/big.txt\n" + hunks
        p = make_proxy({"LYNKR_TOOLS": "*", "LYNKR_TOOL_TIMEOUT_MS": "1"})
        body = tool_call(p.port, "edit_patch", {"patch": patch})
        assert body["is_error"] is True and "timed out" in json.dumps(body), body
        time.sleep(3)  # long enough for the abandoned thread to finish its work
        assert (tmp_path / "big.txt").read_text() == big, "the timed-out edit was written after all"
        assert not list(tmp_path.glob(".lynkr-*.tmp"))

    def test_writes_refused_once_cancelled_and_rollback_allowed(self, tmp_path):
        import lynkr

        paths = lynkr.WorkspacePaths(str(tmp_path), lynkr.Policy())
        cancelled = threading.Event()

        def handler(_ctx: Any, _args: dict) -> str:
            paths.write_bytes("a.txt", b"one")
            cancelled.set()
            with pytest.raises(lynkr.ToolFailed, match="timed out"):
                paths.write_bytes("b.txt", b"two")
            paths.write_bytes("a.txt", b"restored", rollback=True)
            return "done"

        assert lynkr._run_blocking(handler, None, {}, cancelled) == "done"
        assert (tmp_path / "a.txt").read_bytes() == b"restored" and not (tmp_path / "b.txt").exists()


# -- bounded work (regex, globs, special files) --


def no_rg_path(tmp: Path) -> str:
    """A PATH with git and python but no ripgrep: the pure-Python search backend runs."""
    bin_dir = tmp / "bin-no-rg"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("git", "python3", "bwrap"):
        found = shutil.which(tool)
        if found and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


class TestBoundedWork:
    @pytest.mark.parametrize("impl", SEARCH_IMPLS)
    def test_catastrophic_regex_does_not_freeze_the_server(self, make_proxy, tmp_path, impl):
        if impl == "ripgrep":
            require_e2e("ripgrep (rg): apt-get install ripgrep", shutil.which("rg") is not None)
        (tmp_path / "victim.txt").write_text("a" * 26 + "!\n")
        extra = {"LYNKR_TOOLS": "*"}
        if impl == "python":
            extra["PATH"] = no_rg_path(tmp_path)
        p = make_proxy(extra)
        with ThreadPoolExecutor(1) as pool:
            search = pool.submit(tool_call, p.port, "workspace_search", {"query": "(a+)+$", "regex": True})
            time.sleep(0.3)
            worst = 0.0
            while not search.done():
                t0 = time.monotonic()
                assert p.call("GET", "/health", timeout=10).status == 200
                worst = max(worst, time.monotonic() - t0)
                time.sleep(0.1)
            body = search.result(timeout=60)
        assert worst < 1.0, f"/health took {worst:.2f} s while the regex ran"
        assert "victim.txt" not in json.dumps(body) or body["is_error"] is False  # no match: (a+)+$ needs the end

    def test_pathological_glob_is_fast(self, make_proxy, tmp_path):
        deep = tmp_path / ("a" * 60)
        deep.mkdir()
        (deep / ("a" * 120)).write_text("x")
        p = make_proxy({"LYNKR_TOOLS": "*"})
        t0 = time.monotonic()
        out = tool_ok(p.port, "fs_list", {"glob": "**/*a*a*a*a*a*a*a*a*a*a*a*a*b", "recursive": True})
        assert time.monotonic() - t0 < 3 and out == "(no entries)", out

    def test_fifo_never_blocks_reads_or_searches(self, make_proxy, tmp_path):
        os.mkfifo(tmp_path / "pipe.txt")
        (tmp_path / "real.txt").write_text("needle here\n")
        p = make_proxy({"LYNKR_TOOLS": "*", "PATH": no_rg_path(tmp_path)})
        t0 = time.monotonic()
        assert "not a regular file" in tool_err(p.port, "fs_read", {"path": "pipe.txt"})
        assert "real.txt:1:needle here" in tool_ok(p.port, "workspace_search", {"query": "needle"})
        assert "real.txt" in tool_ok(p.port, "workspace_search", {"query": "need.e", "regex": True})
        assert time.monotonic() - t0 < 10


# -- check-then-use races --

RENAME_EXCHANGE = 2


def _renameat2():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        pytest.skip("renameat2 is not available in this libc")
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


class TestRaces:
    def test_swapping_a_folder_for_a_symlink_never_leads_out(self, make_proxy, tmp_path):
        renameat2 = _renameat2()
        ws, outside = tmp_path / "ws", tmp_path / "outside"
        (ws / "d").mkdir(parents=True)
        outside.mkdir()
        (ws / "d" / "f.txt").write_text("inside\n")
        (outside / "f.txt").write_text("OUTSIDE SECRET\n")
        (ws / "swap").symlink_to(outside)  # exchanged with the folder d, back and forth
        p = make_proxy({"LYNKR_TOOLS": "*", "WORKSPACE_ROOT": str(ws), "LYNKR_DATA_DIR": str(tmp_path / "state")},
                       cwd=ws)
        stop = threading.Event()
        swaps = 0

        def swapper() -> None:
            nonlocal swaps
            a, b = str(ws / "d").encode(), str(ws / "swap").encode()
            while not stop.is_set():
                if renameat2(-100, a, -100, b, RENAME_EXCHANGE) == 0:  # AT_FDCWD
                    swaps += 1

        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        leaked, written_outside = [], []
        try:
            deadline = time.monotonic() + 5
            n = 0
            while time.monotonic() < deadline and n < 250:
                n += 1
                body = tool_call(p.port, "fs_read", {"path": "d/f.txt"})
                if "OUTSIDE" in json.dumps(body):
                    leaked.append(body)
                tool_call(p.port, "fs_write", {"path": f"d/new-{n}.txt", "content": "x"})
                written_outside += [f.name for f in outside.iterdir() if f.name != "f.txt"]
        finally:
            stop.set()
            thread.join(5)
        assert swaps > 100, swaps  # the race really ran
        assert not leaked, f"{len(leaked)} of {n} reads returned the outside file"
        assert not written_outside and sorted(f.name for f in outside.iterdir()) == ["f.txt"], written_outside


# -- generated paths, pathspecs and symlink layouts never reach outside the root --

PATH_PARTS = st.sampled_from(["..", ".", "", "d", "link", "out", ".env", ".git", ":(top)", ":(glob)**", "*", "?",
                              "[a]", "~", "f.txt", "sub", "\x00", " ", "D", "%2e%2e", "\\", "-rf", ".lynkr"])


class TestGeneratedEscapes:
    @pytest.fixture(scope="class")
    def layout(self, tmp_path_factory):
        import lynkr

        top = tmp_path_factory.mktemp("gen")
        root, outside = top / "root", top / "outside"
        for d in (root / "d" / "sub", outside / "d"):
            d.mkdir(parents=True)
        (outside / "f.txt").write_text("OUTSIDE")
        (outside / "d" / "f.txt").write_text("OUTSIDE")
        (root / "f.txt").write_text("inside")
        (root / "d" / "f.txt").write_text("inside")
        (root / ".env").write_text("SECRET=1")
        (root / "link").symlink_to(outside)  # a folder link that leads out
        (root / "d" / "out").symlink_to(outside / "f.txt")  # a file link that leads out
        (root / "d" / "sub" / "f.txt").symlink_to(root / "f.txt")  # one that stays inside
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        cfg = lynkr.load_config({"WORKSPACE_ROOT": str(root), "LYNKR_DATA_DIR": str(top / "state")})
        policy = lynkr.Policy.from_config(cfg)
        paths = lynkr.WorkspacePaths(str(root), policy)
        ctx = lynkr.ToolContext(cfg, policy, paths, None, None, lynkr.Logger("json", "error"))
        return lynkr, ctx, root, outside

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(parts=st.lists(PATH_PARTS, min_size=1, max_size=5), absolute=st.booleans())
    def test_no_byte_outside_is_read_or_written(self, layout, parts, absolute):
        lynkr, ctx, root, outside = layout
        path = ("/" if absolute else "") + "/".join(parts)
        before = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}
        try:
            _real, rel = ctx.paths.resolve(path, allow_root=False)
        except (lynkr.ToolDenied, lynkr.ToolFailed):
            return
        with contextlib.suppress(lynkr.ToolDenied, lynkr.ToolFailed, OSError):
            assert b"OUTSIDE" not in ctx.paths.read_bytes(rel, 1000), path
        with contextlib.suppress(lynkr.ToolDenied, lynkr.ToolFailed, OSError):
            ctx.paths.write_bytes(rel, b"written")
        after = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}
        assert after == before, path
        assert (root / ".env").read_text() == "SECRET=1"

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(parts=st.lists(PATH_PARTS, min_size=1, max_size=4))
    def test_pathspecs_are_literal_and_confined(self, layout, parts):
        lynkr, ctx, root, _outside = layout
        path = "/".join(parts)
        try:
            specs = lynkr.repo_paths(ctx, [path])
        except (lynkr.ToolDenied, lynkr.ToolFailed):
            return
        assert all(s.startswith((":(literal)", ":(exclude")) for s in specs), specs
        listed = lynkr.git(ctx, "ls-files", "--others", "--cached", "--", *specs, check=False).split("\n")
        for name in filter(None, listed):  # (a symlink is listed as itself: git keeps the link, not its target)
            full = os.path.abspath(root / name)
            assert full.startswith(str(root) + os.sep), (path, name)
            assert ".env" not in name.split("/"), (path, name)


# -- edit_patch changes only the lines its hunks touch --

PATCH_ONE_LINE = "--- a/f.txt\n+++ b/f.txt\n@@ -2,3 +2,3 @@\n b\n-c\n+C\n d\n"


class TestPatchKeepsFiles:
    @pytest.mark.parametrize("before,after", [
        (b"a\r\nb\r\nc\r\nd\r\n", b"a\r\nb\r\nC\r\nd\r\n"),                      # CRLF stays CRLF
        (b"a\nb\r\nc\r\nd\n", b"a\nb\r\nC\r\nd\n"),                              # mixed: each line keeps its own
        (b"a\nb\nc\nd", b"a\nb\nC\nd"),                                          # no final newline stays so
        (b"\xef\xbb\xbfa\nb\nc\nd\n", b"\xef\xbb\xbfa\nb\nC\nd\n"),              # UTF-8 BOM kept
        (b"a\x0cx\nb\nc\nd\n", b"a\x0cx\nb\nC\nd\n"),                            # a form feed is not a line break
        ("a\u2028y\nb\nc\nd\n".encode(), "a\u2028y\nb\nC\nd\n".encode()),        # nor U+2028
        ("a\u0085z\nb\nc\nd\n".encode(), "a\u0085z\nb\nC\nd\n".encode()),        # nor U+0085
        (b"a\xe9\nb\nc\nd\n", b"a\xe9\nb\nC\nd\n"),                              # Latin-1 bytes kept as they are
    ], ids=["crlf", "mixed", "no-final-newline", "bom", "form-feed", "u2028", "u0085", "latin1"])
    def test_only_the_touched_line_changes(self, make_proxy, tmp_path, before, after):
        (tmp_path / "f.txt").write_bytes(before)
        p = make_proxy({"LYNKR_TOOLS": "*"})
        assert "patched f.txt" in tool_ok(p.port, "edit_patch", {"patch": PATCH_ONE_LINE})
        assert (tmp_path / "f.txt").read_bytes() == after


# == 15. Git and tests ==

# -- helpers several of this section's sub-topics use --

GW_STUCK = """\
import os, pathlib, subprocess, sys, time
child = subprocess.Popen(["sleep", "30"])
pathlib.Path(sys.argv[1]).write_text(f"{os.getpid()} {child.pid}")
print("stuck test started", flush=True)
time.sleep(30)
"""


# -- git workflow, review, release notes, test harness, policy gates --


class TestGitTools:
    def test_status_diff_stage_unstage_commit_log_branches(self, gws):
        gws.start()
        status = json.loads(gws.ok("workspace_git_status"))
        assert status == {"branch": "main...origin/main", "staged": [], "unstaged": [], "untracked": [],
                          "clean": True}

        gws.write("src/app.py", "def main():\n    return 2\n\n\ndef extra():\n    return 3\n")
        gws.write("docs/new.md", "hello\n")
        (gws.repo / "src/util.py").unlink()
        status = json.loads(gws.ok("workspace_git_status"))
        assert status["clean"] is False and status["staged"] == []
        assert sorted(status["unstaged"]) == ["D src/util.py", "M src/app.py"]
        assert status["untracked"] == ["docs/new.md"]

        diff = gws.ok("workspace_git_diff")
        head = gw_first_json(diff)
        by_path = {f["path"]: f for f in head["files"]}
        assert by_path["src/app.py"] == {"path": "src/app.py", "status": "M", "binary": False, "insertions": 5,
                                         "deletions": 1}
        assert by_path["src/util.py"]["status"] == "D" and by_path["src/util.py"]["deletions"] == 1
        assert head["stats"] == {"files": 2, "insertions": 5, "deletions": 2}
        assert "+def extra():" in diff and "-    return 1" in diff and "docs/new.md" not in diff  # untracked
        only_app = gw_first_json(gws.ok("workspace_git_diff", {"paths": ["src/app.py"]}))
        assert [f["path"] for f in only_app["files"]] == ["src/app.py"]

        assert "src/app.py" in gws.ok("workspace_git_stage", {"paths": ["src/app.py", "docs/new.md"]})
        assert gws.staged() == ["docs/new.md", "src/app.py"]
        status = json.loads(gws.ok("workspace_git_status"))
        assert sorted(status["staged"]) == ["A docs/new.md", "M src/app.py"] and status["unstaged"] == ["D src/util.py"]
        staged = gw_first_json(gws.ok("workspace_git_diff", {"staged": True}))
        assert sorted(f["path"] for f in staged["files"]) == ["docs/new.md", "src/app.py"]
        assert {f["path"]: f["status"] for f in staged["files"]}["docs/new.md"] == "A"

        gws.ok("workspace_git_unstage", {"paths": ["docs/new.md"]})
        assert gws.staged() == ["src/app.py"]
        assert (gws.repo / "docs/new.md").read_text() == "hello\n"  # unstaging keeps the file

        before = gws.head()
        out = gws.ok("workspace_git_commit", {"message": "feat(app): return two\n\nLonger body line."})
        assert "feat(app): return two" in out
        assert gws.git("rev-parse", "HEAD~1").strip() == before
        assert gws.git("log", "-1", "--format=%an <%ae>|%s|%b").strip() == \
            "Ada Tester <ada@example.com>|feat(app): return two|Longer body line."
        assert gws.staged() == [] and gws.git("status", "--porcelain", "-uall").splitlines() == [" D src/util.py",
                                                                                       "?? docs/new.md"]
        assert "nothing is staged" in gws.err("workspace_git_commit", {"message": "empty"})
        assert gws.head() != before and gws.git("rev-parse", "HEAD~1").strip() == before

        gws.git("branch", "feature/x", before)
        branches = json.loads(gws.ok("workspace_git_branches"))
        assert {b["name"]: (b["current"], b["subject"]) for b in branches} == {
            "main": (True, "feat(app): return two"), "feature/x": (False, "initial")}
        assert {b["name"]: b["commit"] for b in branches}["feature/x"] == before[:len(branches[0]["commit"])]

        log = json.loads(gws.ok("workspace_git_log"))
        assert [c["subject"] for c in log] == ["feat(app): return two", "initial"]
        assert log[0]["commit"] == gws.head() and log[0]["author"] == "Ada Tester" and "T" in log[0]["date"]
        assert [c["subject"] for c in json.loads(gws.ok("workspace_git_log", {"max_count": 1}))] == [
            "feat(app): return two"]
        assert [c["subject"] for c in json.loads(gws.ok("workspace_git_log", {"ref": "feature/x"}))] == ["initial"]
        assert [c["subject"] for c in json.loads(gws.ok("workspace_git_log", {"path": "README.md"}))] == ["initial"]
        assert "does not exist" in gws.err("workspace_git_log", {"ref": "no-such-branch"})

        between = gw_first_json(gws.ok("workspace_git_diff", {"from_ref": "feature/x", "to_ref": "main"}))
        assert [(f["path"], f["status"]) for f in between["files"]] == [("src/app.py", "M")]

    def test_commit_and_pull_denied_by_policy_change_nothing(self, gws):
        gws.start(POLICY_GIT_ALLOW_COMMIT="false", POLICY_GIT_ALLOW_PULL="false")
        gws.write("src/app.py", "changed\n")
        gws.ok("workspace_git_stage", {"paths": ["src/app.py"]})
        before = gws.head()
        msg = gws.err("workspace_git_commit", {"message": "nope"})
        assert "POLICY_GIT_ALLOW_COMMIT" in msg
        assert gws.head() == before and gws.staged() == ["src/app.py"]
        assert "POLICY_GIT_ALLOW_PULL" in gws.err("workspace_git_pull")
        assert "POLICY_GIT_ALLOW_PUSH" in gws.err("workspace_git_push")  # the default

    def test_push_denied_by_default_then_allowed(self, gws):
        gws.write("src/app.py", "def main():\n    return 42\n")
        local = gws.commit_all("fix: the answer")
        pushed_before = gws.remote_head()
        assert pushed_before != local

        gws.start()
        msg = gws.err("workspace_git_push")
        assert msg.startswith("denied") and "POLICY_GIT_ALLOW_PUSH" in msg
        assert gws.remote_head() == pushed_before

        gws.start(POLICY_GIT_ALLOW_PUSH="true")
        gws.ok("workspace_git_push")
        assert gws.remote_head() == local
        assert gw_git(gws.tmp, "--git-dir", str(gws.remote), "log", "-1", "--format=%s", "main").strip() == \
            "fix: the answer"
        status = json.loads(gws.ok("workspace_git_status"))
        assert status["branch"] == "main...origin/main"  # not ahead any more

        gws.git("switch", "-q", "-c", "feature/y")
        gws.write("y.txt", "y\n")
        feature = gws.commit_all("feat: y")
        gws.ok("workspace_git_push", {"remote": "origin", "branch": "feature/y", "set_upstream": True})
        assert gws.remote_head("feature/y") == feature
        assert gws.git("rev-parse", "--abbrev-ref", "feature/y@{upstream}").strip() == "origin/feature/y"
        gws.err("workspace_git_push", {"remote": "nowhere"})  # a plain name that is no remote: git's own error
        assert gws.remote_head() == local  # main untouched by the branch push

    def test_pull_fast_forwards_and_never_merges(self, gws):
        other = gws.tmp / "other"
        gw_git(gws.tmp, "clone", "-q", str(gws.remote), str(other))
        gw_git(other, "config", "user.name", "Bo Other")
        gw_git(other, "config", "user.email", "bo@example.com")
        (other / "from_other.txt").write_text("hi from the other clone\n")
        gw_git(other, "add", "-A")
        gw_git(other, "commit", "-q", "-m", "feat: from the other clone")
        gw_git(other, "push", "-q", "origin", "main")
        theirs = gw_git(other, "rev-parse", "HEAD").strip()

        gws.start()
        gws.ok("workspace_git_pull")
        assert gws.head() == theirs
        assert (gws.repo / "from_other.txt").read_text() == "hi from the other clone\n"

        # diverged: local and remote both have a new commit -> refused, no merge commit, nothing changed
        gws.write("local.txt", "mine\n")
        mine = gws.commit_all("feat: local work")
        (other / "from_other.txt").write_text("second\n")
        gw_git(other, "commit", "-q", "-am", "fix: second from the other clone")
        gw_git(other, "push", "-q", "origin", "main")
        gws.err("workspace_git_pull", {"remote": "origin", "branch": "main"})
        assert gws.head() == mine
        assert gws.git("rev-list", "--merges", "HEAD").strip() == ""
        assert (gws.repo / "from_other.txt").read_text() == "hi from the other clone\n"
        assert gws.git("status", "--porcelain").strip() == ""

    def test_option_injection_is_refused_or_taken_as_plain_names(self, gws):
        marker = gws.out / "pwned"
        gws.write("-n", "a file whose name looks like an option\n")
        gws.write("src/app.py", "modified, not staged\n")
        gws.git("branch", "side")
        gws.start(POLICY_GIT_ALLOW_PUSH="true")
        pushed = gws.remote_head()
        head = gws.head()

        # paths: always after `--`, so option-looking names are names
        gws.err("workspace_git_stage", {"paths": [f"--output={marker}"]})
        gws.err("workspace_git_stage", {"paths": ["-A"]})  # not `git add -A`
        gws.err("workspace_git_stage", {"paths": ["-c", f"core.pager=touch {marker}"]})
        assert gws.staged() == []
        gws.ok("workspace_git_stage", {"paths": ["-n"]})  # a real file named -n, not --dry-run
        assert gws.staged() == ["-n"]
        gws.ok("workspace_git_unstage", {"paths": ["-n"]})
        assert gws.staged() == []
        for args in ({"paths": [f"--output={marker}"]}, {"paths": ["--cached", "-p"]}):
            content, _is_error = gws.call("workspace_git_diff", args)
            assert "src/app.py" not in content, content  # the pathspec matched nothing; no option applied
        content, _is_error = gws.call("workspace_git_log", {"path": f"--output={marker}"})
        assert "initial" not in content

        # refs and names: shape-checked, never passed where git could read them as options
        hostile_refs = [f"--output={marker}", "-c", f"-c core.pager=touch {marker}", "HEAD;rm -rf .", "HEAD;rm",
                        "--all", "-p", "$(touch x)", "main..side", "HEAD --output=x"]
        for ref in hostile_refs:
            for tool_name, key in (("workspace_git_log", "ref"), ("workspace_git_diff", "from_ref"),
                                   ("workspace_git_diff", "to_ref"), ("workspace_diff_review", "from_ref"),
                                   ("workspace_release_notes", "from_ref"), ("workspace_release_notes", "to_ref")):
                msg = gws.err(tool_name, {key: ref})
                assert "not a valid" in msg or "does not exist" in msg, (tool_name, key, ref, msg)
        hostile_names = [f"--upload-pack=touch {marker}", f"--receive-pack=touch {marker}", "--mirror", "-f",
                         "main:refs/heads/evil", "+main", f"ext::sh -c touch% {marker}", "origin;touch x",
                         "-c core.sshCommand=touch x"]
        for name in hostile_names:
            for tool_name in ("workspace_git_push", "workspace_git_pull"):
                gws.err(tool_name, {"remote": name})
                gws.err(tool_name, {"branch": name})

        # a commit message that looks like an option is just the message
        gws.ok("workspace_git_stage", {"paths": ["-n"]})
        gws.ok("workspace_git_commit", {"message": "--amend"})
        assert gws.git("log", "-1", "--format=%s").strip() == "--amend"
        assert gws.head("HEAD~1") == head  # a new commit, nothing amended

        assert not marker.exists() and not (gws.repo / "x").exists() and not (gws.tmp / "x").exists()
        assert not list(gws.out.glob("pwned*")) and not any(p.name.startswith("core.pager") for p in gws.repo.iterdir())
        assert gws.remote_head() == pushed and gws.remote_head("evil") is None
        assert gws.git("branch", "--list", "evil").strip() == ""
        assert (gws.repo / "src/app.py").read_text() == "modified, not staged\n"

    def test_nothing_waits_on_a_terminal_and_git_timeouts_kill_everything(self, gws):
        class AuthWall(FakeHTTP):  # a smart-HTTP remote that wants credentials
            def default(self, rec: Recorded) -> Reply:
                return Reply(401, b"Authentication required\n",
                             (("www-authenticate", 'Basic realm="git"'), ("content-type", "text/plain")))

        class Hanging(FakeHTTP):  # accepts the connection, never answers
            def default(self, rec: Recorded) -> Reply:
                return Reply(200, b"", hang=120)

        wall, hanging = AuthWall(), Hanging()
        try:
            gws.git("remote", "add", "locked", f"{wall.url}/x.git")
            gws.git("remote", "add", "closed", f"http://127.0.0.1:{free_port()}/x.git")
            gws.git("remote", "add", "stuck", f"{hanging.url}/x.git")
            gws.start(POLICY_GIT_ALLOW_PUSH="true", LYNKR_GIT_TIMEOUT_MS="30000")
            messages = {}
            for remote in ("locked", "closed"):
                for tool_name in ("workspace_git_push", "workspace_git_pull"):
                    t0 = time.monotonic()
                    msg = gws.err(tool_name, {"remote": remote, "branch": "main"}, timeout=60)
                    took = time.monotonic() - t0
                    assert took < 15, f"{tool_name} to {remote} took {took:.1f}s (waited on something): {msg}"
                    assert "timed out" not in msg, msg
                    messages[tool_name, remote] = msg
            assert wall.requests, "git never reached the credential-protected remote"
            assert "terminal prompts disabled" in messages["workspace_git_push", "locked"], messages
            assert "connect" in messages["workspace_git_push", "closed"].lower(), messages

            gws.start(POLICY_GIT_ALLOW_PUSH="true", LYNKR_GIT_TIMEOUT_MS="2500")

            t0 = time.monotonic()
            msg = gws.err("workspace_git_push", {"remote": "stuck"}, timeout=60)
            took = time.monotonic() - t0
            assert "timed out" in msg and "LYNKR_GIT_TIMEOUT_MS" in msg, msg
            assert 2.0 < took < 20, took
            wait_for(lambda: not gw_pids_with(hanging.url), 10, "git's helper processes to be gone")
        finally:
            wall.close()
            hanging.close()
        assert gws.remote_head() == gws.head()  # nothing half-pushed anywhere


class TestGitTestGate:
    def test_commit_gate_follows_exactly_what_was_tested(self, gws):
        gws.start(POLICY_GIT_REQUIRE_TESTS="true", WORKSPACE_TEST_COMMAND=gws.runner())
        head = gws.head()

        # before any run: blocked, nothing changed
        gws.write("src/app.py", "def main():\n    return 2\n")
        gws.ok("workspace_git_stage", {"paths": ["src/app.py"]})
        msg = gws.err("workspace_git_commit", {"message": "fix: two"})
        assert msg.startswith("denied") and "POLICY_GIT_REQUIRE_TESTS" in msg
        assert gws.head() == head and gws.staged() == ["src/app.py"]

        # a passing run on exactly the staged content opens it
        run = gws.run_tests()
        assert run["passed"] is True and run["exit_code"] == 0
        assert run["tree_id"] == gws.git("write-tree").strip()
        gws.ok("workspace_git_commit", {"message": "fix: two"})
        assert gws.head("HEAD~1") == head
        head = gws.head()

        # tested, then edited and the edit staged: blocked again until the new content is tested
        gws.write("src/app.py", "def main():\n    return 3\n")
        gws.ok("workspace_git_stage", {"paths": ["src/app.py"]})
        assert gws.run_tests()["passed"] is True
        gws.write("src/app.py", "def main():\n    return 4  # after the run\n")
        gws.ok("workspace_git_stage", {"paths": ["src/app.py"]})
        assert "POLICY_GIT_REQUIRE_TESTS" in gws.err("workspace_git_commit", {"message": "fix: four"})
        assert gws.head() == head
        assert gws.run_tests()["passed"] is True
        gws.ok("workspace_git_commit", {"message": "fix: four"})
        head = gws.head()

        # two files changed and tested together; committing only one of them is not what was tested
        gws.write("src/app.py", "def main():\n    return 5\n")
        gws.write("src/util.py", "X = 5\n")
        assert gws.run_tests()["passed"] is True
        gws.ok("workspace_git_stage", {"paths": ["src/app.py"]})
        assert "POLICY_GIT_REQUIRE_TESTS" in gws.err("workspace_git_commit", {"message": "half"})
        assert gws.head() == head and gws.staged() == ["src/app.py"]
        gws.ok("workspace_git_stage", {"paths": ["src/util.py"]})
        gws.ok("workspace_git_commit", {"message": "feat: five"})
        assert gws.git("show", "--name-only", "--format=", "HEAD").split() == ["src/app.py", "src/util.py"]
        head = gws.head()

        # a failing run keeps it closed
        gws.set_mode("fail")
        gws.write("src/app.py", "def main():\n    return 6\n")
        gws.ok("workspace_git_stage", {"all": True})
        run = gws.run_tests()
        assert run["passed"] is False and run["exit_code"] == 1
        assert "POLICY_GIT_REQUIRE_TESTS" in gws.err("workspace_git_commit", {"message": "fix: six"})
        assert gws.head() == head
        gws.set_mode("pass")
        assert gws.run_tests()["passed"] is True
        gws.ok("workspace_git_commit", {"message": "fix: six"})
        assert gws.head("HEAD~1") == head

    def test_push_gate_needs_a_passing_run_on_heads_content(self, gws):
        gws.start(POLICY_GIT_REQUIRE_TESTS="true", POLICY_GIT_ALLOW_PUSH="true", WORKSPACE_TEST_COMMAND=gws.runner())
        pushed = gws.remote_head()
        gws.write("src/app.py", "def main():\n    return 7\n")
        local = gws.commit_all("fix: seven (committed by hand, never tested)")

        msg = gws.err("workspace_git_push")
        assert msg.startswith("denied") and "POLICY_GIT_REQUIRE_TESTS" in msg
        assert gws.remote_head() == pushed

        gws.set_mode("fail")
        assert gws.run_tests()["passed"] is False
        assert "POLICY_GIT_REQUIRE_TESTS" in gws.err("workspace_git_push")
        assert gws.remote_head() == pushed

        # a passing run on other content (an uncommitted edit) does not cover HEAD
        gws.set_mode("pass")
        gws.write("src/app.py", "def main():\n    return 8  # not committed\n")
        assert gws.run_tests()["passed"] is True
        assert "POLICY_GIT_REQUIRE_TESTS" in gws.err("workspace_git_push")
        gws.git("checkout", "-q", "--", "src/app.py")

        assert gws.run_tests()["passed"] is True
        gws.ok("workspace_git_push")
        assert gws.remote_head() == local

    def test_only_runs_of_the_gate_command_count(self, gws):
        gate = gws.runner("gate-mode", "pass")
        other = gws.runner("other-mode", "pass")
        assert gate != other
        gws.start(POLICY_GIT_REQUIRE_TESTS="true", POLICY_GIT_TEST_COMMAND=gate, WORKSPACE_TEST_COMMAND=other)
        gws.write("src/app.py", "def main():\n    return 9\n")
        gws.ok("workspace_git_stage", {"all": True})
        head = gws.head()

        run = gws.run_tests()  # WORKSPACE_TEST_COMMAND
        assert run["command"] == other and run["passed"] is True
        msg = gws.err("workspace_git_commit", {"message": "fix: nine"})
        assert "POLICY_GIT_REQUIRE_TESTS" in msg and gate in msg
        assert gws.head() == head

        gws.set_mode("fail", "gate-mode")
        run = gws.run_tests({"gate": True})
        assert run["command"] == gate and run["passed"] is False
        gws.err("workspace_git_commit", {"message": "fix: nine"})

        gws.set_mode("pass", "gate-mode")
        assert gws.run_tests({"gate": True})["passed"] is True
        gws.ok("workspace_git_commit", {"message": "fix: nine"})
        assert gws.head("HEAD~1") == head
        history = json.loads(gws.ok("workspace_test_history"))
        assert [(r["command"], r["passed"]) for r in history] == [(gate, True), (gate, False), (other, True)]

    @pytest.mark.parametrize(("files", "expected"), [
        ({"package.json": '{"name": "d", "scripts": {"test": "jest"}}'}, "npm test"),
        ({"go.mod": "module example.com/d\n\ngo 1.22\n"}, "go test ./..."),
        ({"Cargo.toml": '[package]\nname = "d"\nversion = "0.1.0"\n'}, "cargo test"),
        ({"package.json": '{"name": "no-test-script"}'}, "python -m pytest"),
        ({}, "python -m pytest"),
    ])
    def test_gate_names_the_detected_default_command(self, gws, files, expected):
        for rel, content in files.items():
            gws.write(rel, content)
        if files:
            gws.commit_all("project files")
        gws.start(POLICY_GIT_REQUIRE_TESTS="true")
        gws.write("src/app.py", "changed\n")
        gws.ok("workspace_git_stage", {"all": True})
        assert f"`{expected}`" in gws.err("workspace_git_commit", {"message": "x"})

    def test_a_test_run_leaves_the_users_index_alone(self, gws):
        gws.write(".gitignore", "*.log\n")
        gws.commit_all("ignore logs")
        gws.write("src/app.py", "def main():\n    return 10\n")
        gws.git("add", "src/app.py")
        gws.write("src/app.py", "def main():\n    return 11  # partly staged\n")
        gws.write("src/util.py", "X = 11\n")  # unstaged
        gws.write("notes.txt", "untracked\n")
        gws.write("build.log", "ignored\n")
        before = (gws.git("ls-files", "--stage"), gws.git("status", "--porcelain"), gws.git("diff", "--cached"),
                  gws.git("write-tree").strip())

        gws.start(WORKSPACE_TEST_COMMAND=gws.runner())
        run = gws.run_tests()
        after = (gws.git("ls-files", "--stage"), gws.git("status", "--porcelain"), gws.git("diff", "--cached"),
                 gws.git("write-tree").strip())
        assert after == before
        assert run["tree_id"] != before[3]  # the whole working tree, not the index

        tree = run["tree_id"]
        files = gws.git("ls-tree", "-r", "--name-only", tree).split()
        assert sorted(files) == [".gitignore", "README.md", "notes.txt", "src/app.py", "src/util.py"]
        assert gws.git("show", f"{tree}:src/app.py") == "def main():\n    return 11  # partly staged\n"
        assert gws.git("show", f"{tree}:src/util.py") == "X = 11\n"
        # the same tree the user gets by staging everything
        gws.git("add", "-A")
        assert gws.git("write-tree").strip() == tree


class TestReviewAndReleaseNotes:
    def test_diff_review_flags_risks(self, gws):
        gws.write("old.py", "def legacy():\n    pass\n")
        gws.write("package-lock.json", '{"lockfileVersion": 3, "packages": {}}\n')
        gws.commit_all("baseline")
        base = gws.head()
        gws.git("rm", "-q", "old.py")
        gws.write("package-lock.json", '{"lockfileVersion": 3, "packages": {"": {"name": "demo"}}}\n')
        gws.write(".github/workflows/ci.yml", "on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n")
        gws.write("db/migrations/0002_add_users.sql", "CREATE TABLE users (id INTEGER PRIMARY KEY);\n")
        gws.write("src/config.py", 'REGION = "eu-west-1"\nAWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"\n')
        gws.write("src/big.py", "".join(f"VALUE_{i} = {i}\n" for i in range(600)))
        gws.git("add", "-A")
        gws.start()

        review = json.loads(gws.ok("workspace_diff_review", {"staged": True}))
        risks = {(r["kind"], r["path"]) for r in review["risks"]}
        assert risks == {("deleted_file", "old.py"), ("lockfile", "package-lock.json"),
                         ("ci_config", ".github/workflows/ci.yml"), ("migration", "db/migrations/0002_add_users.sql"),
                         ("possible_secret", "src/config.py"), ("large_change", "src/big.py")}
        secret = next(r for r in review["risks"] if r["kind"] == "possible_secret")
        assert "AWS" in secret["detail"] and "AKIAIOSFODNN7EXAMPLE" not in json.dumps(review["risks"])
        assert "600" in next(r for r in review["risks"] if r["kind"] == "large_change")["detail"]
        assert review["totals"] == {"files": 6, "insertions": 600 + 4 + 1 + 2 + 1, "deletions": 2 + 1}
        assert {f["path"]: f["status"] for f in review["files"]}["old.py"] == "D"
        assert {"Python", "SQL", "YAML", "JSON"} <= set(review["languages"])
        assert review["tests_touched"] is False and review["test_files"] == []

        # the same change between refs gives the same findings, deterministically
        gws.git("commit", "-q", "-m", "risky")
        by_refs = json.loads(gws.ok("workspace_diff_review", {"from_ref": base, "to_ref": "HEAD"}))
        assert by_refs == review == json.loads(gws.ok("workspace_diff_review", {"from_ref": base, "to_ref": "HEAD"}))

        # an ordinary change with tests: no risks, tests touched
        gws.write("src/app.py", "def main():\n    return 12\n")
        gws.write("tests/test_app.py", "from src.app import main\n\n\ndef test_main():\n    assert main() == 12\n")
        gws.git("add", "-A")
        calm = json.loads(gws.ok("workspace_diff_review", {"staged": True}))
        assert calm["risks"] == [] and calm["tests_touched"] is True and calm["test_files"] == ["tests/test_app.py"]
        # unstaged working-tree review of only the source file: tests not touched
        gws.git("commit", "-q", "-m", "calm")
        gws.write("src/app.py", "def main():\n    return 13\n")
        wt = json.loads(gws.ok("workspace_diff_review"))
        assert [f["path"] for f in wt["files"]] == ["src/app.py"] and wt["tests_touched"] is False

    def test_release_notes_conventional_history_since_last_tag(self, gws):
        def commit(path: str, message: str, author: str) -> str:
            gws.write(path, f"{message}\n{time.monotonic_ns()}\n")
            first = author.split()[0].lower()
            return gws.commit_all(message, env={"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": f"{first}@example.com"})

        commit("CHANGELOG.md", "chore: prepare 0.1.0", "Alice Doe")
        gws.git("tag", "-a", "v0.1.0", "-m", "v0.1.0")
        api = commit("src/api.py", "feat(api): add /v2/items endpoint", "Alice Doe")
        commit("src/cli.py", "fix(cli): handle an empty config", "Bob Roe")
        commit("setup.cfg", "feat!: drop Python 3.8 support", "Alice Doe")
        gws.write("src/parser.py", "strict\n")
        gws.commit_all("fix(parser): reject NUL bytes\n\nBREAKING CHANGE: parse() now raises ValueError",
                       env={"GIT_AUTHOR_NAME": "Carol Poe", "GIT_AUTHOR_EMAIL": "carol@example.com"})
        docs = commit("docs/gate.md", "docs: document the test gate", "Bob Roe")
        commit("src/index.py", "perf(index): cache tree ids", "Alice Doe")
        gws.git("switch", "-q", "-c", "topic")
        commit("tests/test_gate.py", "test(core): cover the gate", "Carol Poe")
        gws.git("switch", "-q", "main")
        commit("README.md", "Update README", "Dave Moe")
        gws.git("merge", "-q", "--no-ff", "-m", "Merge branch 'topic'", "topic")
        gws.start()

        notes = gws.ok("workspace_release_notes")
        assert notes.startswith("# Release notes: v0.1.0 → HEAD")
        assert "8 commits by 4 authors." in notes
        assert "prepare 0.1.0" not in notes and "Merge branch" not in notes
        sections = {s.split("\n", 1)[0]: s for s in notes.split("\n## ")[1:]}
        assert set(sections) == {"⚠ Breaking changes", "Features (2)", "Bug fixes (2)", "Performance (1)",
                                 "Documentation (1)", "Tests (1)", "Other changes (1)", "Authors"}, list(sections)
        assert "feat!: drop Python 3.8 support" in sections["⚠ Breaking changes"]
        assert "fix(parser): reject NUL bytes" in sections["⚠ Breaking changes"]
        assert "cli" not in sections["⚠ Breaking changes"]
        assert f"- **api:** add /v2/items endpoint ({api[:7]}, Alice Doe)" in sections["Features (2)"]
        assert "drop Python 3.8 support" in sections["Features (2)"]
        assert "**cli:** handle an empty config" in sections["Bug fixes (2)"]
        assert "**parser:** reject NUL bytes" in sections["Bug fixes (2)"]
        assert "**index:** cache tree ids" in sections["Performance (1)"]
        assert f"document the test gate ({docs[:7]}, Bob Roe)" in sections["Documentation (1)"]
        assert "**core:** cover the gate" in sections["Tests (1)"]
        assert "Update README" in sections["Other changes (1)"]
        authors = sections["Authors"].splitlines()[1:]
        assert authors[0] == "- Alice Doe (3)" and sorted(authors[1:]) == ["- Bob Roe (2)", "- Carol Poe (2)",
                                                                          "- Dave Moe (1)"]
        order = [notes.index(f"## {t}") for t in ("Features", "Bug fixes", "Performance", "Documentation",
                                                   "Other changes", "Authors")]
        assert order == sorted(order)

        # an explicit range
        ranged = gws.ok("workspace_release_notes", {"from_ref": api, "to_ref": docs})
        assert ranged.startswith(f"# Release notes: {api} → {docs}") and "4 commits by 3 authors." in ranged
        assert "add /v2/items" not in ranged and "perf" not in ranged and "document the test gate" in ranged

    def test_release_notes_non_conventional_history_grouped_by_area(self, gws):
        gws.write("src/parser.py", "v1\n")
        gws.commit_all("Speed up the parser", env={"GIT_AUTHOR_NAME": "Eve Area"})
        gws.write("docs/guide.md", "guide\n")
        gws.commit_all("Fix a typo in the guide")
        gws.write("src/parser.py", "v2\n")
        gws.commit_all("Tweak the parser again", env={"GIT_AUTHOR_NAME": "Eve Area"})
        gws.write("setup.cfg", "[metadata]\n")
        gws.commit_all("Bump the version")
        gws.write("docs/other.md", "x\n")
        gws.write("src/more.py", "x\n")
        gws.commit_all("Touch two areas")
        gws.start()

        notes = gws.ok("workspace_release_notes")  # no tag: the whole history
        assert notes.startswith("# Release notes: start → HEAD")
        assert "6 commits by 2 authors." in notes
        sections = {s.split("\n", 1)[0]: s for s in notes.split("\n## ")[1:]}
        assert set(sections) == {"src (2)", "docs (1)", "(root) (1)", "Across the tree (2)", "Authors"}, list(sections)
        assert "Speed up the parser" in sections["src (2)"] and "Tweak the parser again" in sections["src (2)"]
        assert "Fix a typo in the guide" in sections["docs (1)"] and "Bump the version" in sections["(root) (1)"]
        assert "initial" in sections["Across the tree (2)"] and "Touch two areas" in sections["Across the tree (2)"]
        assert "Features" not in notes and "Other changes" not in notes
        assert sections["Authors"].splitlines()[1:] == ["- Ada Tester (4)", "- Eve Area (2)"]


class TestTestHarness:
    def test_counts_parsed_from_common_runners(self, gws):
        gws.start(WORKSPACE_TEST_COMMAND=gws.runner())
        expected = {
            "pass": (0, True, {"passed": 4}),
            "fail": (1, False, {"passed": 3, "failed": 1, "skipped": 2, "errors": 1}),
            "jest": (1, False, {"passed": 9, "failed": 1, "skipped": 2}),
            "cargo": (101, False, {"passed": 3, "failed": 1, "skipped": 1}),
            "go": (1, False, {"packages_passed": 2, "packages_failed": 1}),
        }
        for mode, (code, passed, counts) in expected.items():
            gws.set_mode(mode)
            run = gws.run_tests()
            assert (run["exit_code"], run["passed"], run["counts"]) == (code, passed, counts), (mode, run)
            assert run["timed_out"] is False and run["duration_ms"] >= 0
            assert GW_OUTPUTS[mode][0].strip().splitlines()[-1] in run["_output"]  # the output's tail is kept
            assert "no coverage files configured (WORKSPACE_TEST_COVERAGE_FILES)" in run["notes"]

    def test_coverage_formats_and_a_missing_file(self, gws):
        gws.write("coverage/coverage-summary.json", json.dumps({
            "total": {"lines": {"total": 40, "covered": 35, "skipped": 0, "pct": 87.5},
                      "statements": {"total": 44, "covered": 36, "skipped": 0, "pct": 81.81},
                      "functions": {"total": 10, "covered": 9, "skipped": 0, "pct": 90},
                      "branches": {"total": 8, "covered": 4, "skipped": 0, "pct": 50}},
            "/work/project/src/app.js": {"lines": {"total": 40, "covered": 35, "skipped": 0, "pct": 87.5}}}))
        gws.write("coverage.json", json.dumps({
            "meta": {"format": 3, "version": "7.6.1", "timestamp": "2025-01-01T00:00:00", "branch_coverage": False,
                     "show_contexts": False},
            "files": {"src/app.py": {"executed_lines": [1, 2], "summary": {"covered_lines": 2, "num_statements": 2,
                                                                            "percent_covered": 100.0}}},
            "totals": {"covered_lines": 79, "num_statements": 87, "percent_covered": 90.80459770114942,
                       "percent_covered_display": "91", "missing_lines": 8, "excluded_lines": 0}}))
        gws.write("lcov.info", "TN:\nSF:src/a.js\nFN:1,f\nFNDA:1,f\nFNF:1\nFNH:1\nDA:1,1\nDA:2,0\nLF:10\nLH:8\n"
                               "end_of_record\nTN:\nSF:src/b.js\nDA:1,1\nLF:30\nLH:15\nend_of_record\n")
        files = ["coverage/coverage-summary.json", "coverage.json", "lcov.info", "coverage/missing.json"]
        gws.start(WORKSPACE_TEST_COMMAND=gws.runner(), WORKSPACE_TEST_COVERAGE_FILES=",".join(files))
        content, is_error = gws.call("workspace_test_run")
        assert is_error is False, content
        run = gw_first_json(content)
        assert run["passed"] is True
        cov = {os.path.relpath(c["file"], gws.repo): c for c in run["coverage"]}
        assert set(cov) == set(files)
        read = {f: (c.get("format"), c.get("line_percent")) for f, c in cov.items() if not c.get("missing")}
        assert read == {"coverage/coverage-summary.json": ("istanbul", 87.5), "coverage.json": ("coverage.py", 90.8),
                        "lcov.info": ("lcov", 57.5)}
        missing = cov["coverage/missing.json"]
        assert missing.get("missing") is True and "line_percent" not in missing and "error" not in missing
        notes = " ".join(run["notes"])
        assert "missing.json not found" in notes and "WORKSPACE_TEST_COVERAGE_FILES" in notes
        assert "coverage.json not found" not in notes
        stored = json.loads(gws.ok("workspace_test_history"))[0]["coverage"]
        assert stored == run["coverage"]

    def test_a_stuck_test_command_times_out_and_leaves_nothing_behind(self, gws):
        script = gws.out / "stuck.py"
        script.write_text(GW_STUCK)
        pids_file = gws.out / "pids"
        # on the host: this checks the process-group kill with host pids (TestSandbox covers the sandbox)
        gws.start(WORKSPACE_TEST_COMMAND=shlex.join([sys.executable, str(script), str(pids_file)]),
                  WORKSPACE_TEST_TIMEOUT_MS="1500", POLICY_SANDBOX="none")
        t0 = time.monotonic()
        run = gws.run_tests(timeout=60)
        took = time.monotonic() - t0
        assert 1.4 < took < 20, took
        assert run["timed_out"] is True and run["passed"] is False and run["exit_code"] != 0
        assert any("timed out" in n and "WORKSPACE_TEST_TIMEOUT_MS" in n for n in run["notes"]), run["notes"]
        assert "stuck test started" in run["_output"]
        pids = [int(p) for p in pids_file.read_text().split()]
        assert len(pids) == 2
        wait_for(lambda: not any(gw_alive(p) for p in pids), 10, "the test command and its child to be gone")
        summary = json.loads(gws.ok("workspace_test_summary"))
        assert summary["latest"]["timed_out"] is True and summary["trend"] == ["fail"]

    def test_history_and_summary_show_the_trend(self, gws):
        command = gws.runner()
        gws.start(WORKSPACE_TEST_COMMAND=command)
        empty = json.loads(gws.ok("workspace_test_summary"))
        assert empty["latest"] is None and "no test runs" in empty["note"]
        assert json.loads(gws.ok("workspace_test_history")) == []

        ids = []
        for mode in ("pass", "fail", "pass", "fail", "pass"):
            gws.set_mode(mode)
            ids.append(gws.run_tests()["id"])
        assert ids == sorted(ids) and len(set(ids)) == 5

        history = json.loads(gws.ok("workspace_test_history"))
        assert [r["id"] for r in history] == ids[::-1]
        assert [r["passed"] for r in history] == [True, False, True, False, True]
        assert history[1]["counts"] == {"passed": 3, "failed": 1, "skipped": 2, "errors": 1}
        assert {r["command"] for r in history} == {command}
        assert [r["id"] for r in json.loads(gws.ok("workspace_test_history", {"limit": 2}))] == ids[:-3:-1]
        assert "limit" in gws.err("workspace_test_history", {"limit": 0})

        summary = json.loads(gws.ok("workspace_test_summary"))
        assert summary["latest"]["id"] == ids[-1] and summary["latest"]["passed"] is True
        assert summary["trend"] == ["pass", "fail", "pass", "fail", "pass"]
        assert summary["recent_pass_rate"] == 0.6
        assert len(summary["durations_ms"]) == 5 and all(d >= 0 for d in summary["durations_ms"])

        # runs survive a restart (they are stored in SQLite under LYNKR_DATA_DIR)
        gws.start(WORKSPACE_TEST_COMMAND=gws.runner(mode="fail"))
        assert gws.run_tests()["passed"] is False
        summary = json.loads(gws.ok("workspace_test_summary"))
        assert summary["trend"] == ["pass", "fail", "pass", "fail", "pass", "fail"]
        assert summary["recent_pass_rate"] == 0.5


class TestGitToolsFromTheModel:
    def test_model_initiated_calls_meet_the_same_policies(self, gws, new_dbx):
        fake = new_dbx()
        calls_wanted = [("call_status", "workspace_git_status", {}),
                        ("call_commit", "workspace_git_commit", {"message": "feat: model commit"}),
                        ("call_push", "workspace_git_push", {})]

        def respond(rec: Recorded) -> Reply:
            results = {m["tool_call_id"]: m["content"] for m in rec.body["messages"] if m["role"] == "tool"}
            if results:
                txt, tools, finish = f"Tried {len(results)} git tools.", (), "stop"
            else:
                txt, tools, finish = "Checking the repository.", calls_wanted, "tool_calls"
            if rec.body.get("stream"):
                return stream_reply(oai_sse(oai_stream(txt, tools=tools, finish=finish)))
            return json_reply(oai_completion(txt, tool_calls=tools, finish=finish))

        fake.push(respond, respond)
        gws.write("src/app.py", "def main():\n    return 14\n")
        ahead = gws.commit_all("fix: fourteen (local only)")
        gws.write("src/util.py", "X = 14\n")
        gws.git("add", "src/util.py")
        gws.write("notes.txt", "untracked\n")
        pushed = gws.remote_head()
        gws.start(**dbx_env(fake, LYNKR_TOOLS="workspace_git_*", POLICY_GIT_REQUIRE_TESTS="true",
                            WORKSPACE_TEST_COMMAND=gws.runner()))

        r = gws.proxy.post(base_req(messages=[user("commit and push my work")]), timeout=90)
        assert r.status == 200, r.data[:2000]
        reply = r.json()
        assert reply["stop_reason"] == "end_turn"
        assert len(fake.requests) == 2
        offered = {t["function"]["name"] for t in fake.requests[0].body["tools"]}
        assert {"workspace_git_status", "workspace_git_commit", "workspace_git_push", "workspace_git_log"} <= offered
        assert not offered & {"workspace_test_run", "workspace_diff_review", "workspace_release_notes"}

        results = {m["tool_call_id"]: m["content"] for m in fake.requests[1].body["messages"] if m["role"] == "tool"}
        status = json.loads(results["call_status"])
        assert status["branch"] == "main...origin/main [ahead 1]"
        assert status["staged"] == ["M src/util.py"] and status["untracked"] == ["notes.txt"]
        assert results["call_commit"].startswith("[tool error] denied: POLICY_GIT_REQUIRE_TESTS")
        assert results["call_push"] == "[tool error] denied: git push is not allowed; " \
                                       "set POLICY_GIT_ALLOW_PUSH=true to allow it"
        shown = "\n".join(texts(reply))
        assert "workspace_git_push {} (error)" in shown and "POLICY_GIT_ALLOW_PUSH" in shown
        assert gws.head() == ahead and gws.remote_head() == pushed and gws.staged() == ["src/util.py"]

        # the direct path gives the very same answers
        assert "[tool error] " + gws.err("workspace_git_push") == results["call_push"]
        assert "[tool error] " + gws.err("workspace_git_commit", {"message": "feat: model commit"}) == \
            results["call_commit"]
        assert gws.head() == ahead and gws.remote_head() == pushed

    def test_ai_review_and_ai_summary_ask_the_configured_model(self, gws, new_dbx):
        gws.write("src/app.py", "def main():\n    return 15  # the reviewed line\n")
        gws.git("add", "-A")
        gws.start()  # no provider configured: the deterministic part still works, the AI part says why not
        assert "risks" in json.loads(gws.ok("workspace_diff_review", {"staged": True}))
        assert "provider" in gws.err("workspace_diff_review", {"staged": True, "ai_review": True})
        assert "provider" in gws.err("workspace_release_notes", {"ai_summary": True})

        fake = new_dbx()
        fake.push(json_reply(oai_completion("Small, safe change; add a test for main().")),
                  json_reply(oai_completion("This release tunes the app's return value.")))
        gws.start(**dbx_env(fake))
        review = json.loads(gws.ok("workspace_diff_review", {"staged": True, "ai_review": True}))
        assert review["ai_review"] == "Small, safe change; add a test for main()."
        assert review["files"][0]["path"] == "src/app.py" and review["tests_touched"] is False
        prompt = json.dumps(fake.requests[0].body["messages"])
        assert "the reviewed line" in prompt and "tests_touched" in prompt  # the diff and the summary

        gws.git("commit", "-q", "-m", "fix(app): fifteen")
        notes = gws.ok("workspace_release_notes", {"ai_summary": True})
        assert "This release tunes the app's return value." in notes
        assert notes.index("This release tunes") < notes.index("## ") and "**app:** fifteen" in notes
        assert "**app:** fifteen" in fake.requests[1].body["messages"][0]["content"]
        assert len(fake.requests) == 2


# -- the test-run sandbox (bubblewrap, podman) --

SANDBOX_PROBE = """\
import json, os, pathlib, socket, sys
out = {"env": dict(os.environ)}
target = pathlib.Path(sys.argv[1])
try:
    target.write_text("escaped")
    out["outside_write"] = "written"
except OSError as exc:
    out["outside_write"] = type(exc).__name__
pathlib.Path("inside-marker.txt").write_text("ok")
out["ssh_listing"] = sorted(os.listdir(os.path.expanduser("~/.ssh"))) if os.path.isdir(os.path.expanduser("~/.ssh")) else None
out["state_listing"] = sorted(os.listdir(".lynkr")) if os.path.isdir(".lynkr") else None
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=2).close()
    out["network"] = "connected"
except OSError as exc:
    out["network"] = type(exc).__name__
print("SANDBOX-PROBE " + json.dumps(out))
print("1 passed")
"""


class TestSandbox:
    """Test runs execute the model's code: under bubblewrap it cannot write outside the workspace, read
    credential files or lynkr's state, reach the network, or keep running after a timeout."""

    @pytest.fixture
    def sandboxed(self, gws):
        require_e2e("bubblewrap (bwrap): apt-get install bubblewrap", shutil.which("bwrap") is not None)
        home = gws.tmp / "home"
        (home / ".ssh").mkdir(parents=True, exist_ok=True)
        (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY MATERIAL")
        listener = socket.create_server(("127.0.0.1", 0))
        script = gws.out / "probe.py"
        script.write_text(SANDBOX_PROBE)
        target = gws.out / "escaped.txt"
        cmd = shlex.join([sys.executable, str(script), str(target), str(listener.getsockname()[1])])
        yield gws, cmd, target, home
        listener.close()

    @staticmethod
    def probe(run: dict) -> dict:
        line = next(l for l in run["_output"].splitlines() if l.startswith("SANDBOX-PROBE "))
        return json.loads(line[len("SANDBOX-PROBE "):])

    def test_bwrap_confines_a_test_run(self, sandboxed):
        gws, cmd, target, _home = sandboxed
        gws.start(WORKSPACE_TEST_COMMAND=cmd, POLICY_SANDBOX="bwrap", DATABRICKS_API_KEY="dapi-SECRET-VALUE",
                  DATABRICKS_API_BASE="http://127.0.0.1:9", OPENAI_API_KEY="sk-SECRET-VALUE",
                  AZURE_ANTHROPIC_API_KEY="az-SECRET-VALUE", AZURE_ANTHROPIC_ENDPOINT="http://127.0.0.1:9/anthropic",
                  MY_TOOL_VAR="passed-on", LYNKR_SUBPROCESS_ENV="MY_TOOL_VAR",
                  LYNKR_DATA_DIR=str(gws.repo / ".lynkr"))  # lynkr's state inside the workspace, as by default
        run = gws.run_tests()
        probe = self.probe(run)
        assert run["passed"] is True, run
        assert probe["outside_write"] != "written" and not target.exists(), probe["outside_write"]
        assert (gws.repo / "inside-marker.txt").read_text() == "ok"  # the workspace stays writable
        assert probe["ssh_listing"] == [], probe["ssh_listing"]  # credential folders are empty inside
        assert probe["state_listing"] in (None, []), probe["state_listing"]  # lynkr's state is hidden
        assert probe["network"] != "connected", probe["network"]
        env = probe["env"]
        assert env.get("MY_TOOL_VAR") == "passed-on" and env.get("PATH")
        leaked = [k for k, v in env.items() if "SECRET-VALUE" in v]
        assert not leaked, leaked
        sessions = json.loads(gws.proxy.call("GET", "/v1/sessions").data)
        assert "SECRET-VALUE" not in json.dumps(sessions)
        notice = gws.proxy.wait_log(lambda o: "bubblewrap" in str(o.get("detail", "")), what="sandbox notice")
        assert "POLICY_SANDBOX" in notice["detail"]

    def test_network_when_allowed(self, sandboxed):
        gws, cmd, _target, _home = sandboxed
        gws.start(WORKSPACE_TEST_COMMAND=cmd, POLICY_SANDBOX="bwrap", POLICY_SANDBOX_NETWORK="true")
        assert self.probe(gws.run_tests())["network"] == "connected"

    def test_host_run_when_asked(self, sandboxed):
        gws, cmd, target, _home = sandboxed
        gws.start(WORKSPACE_TEST_COMMAND=cmd, POLICY_SANDBOX="none", OPENAI_API_KEY="sk-SECRET-VALUE")
        probe = self.probe(gws.run_tests())
        assert probe["outside_write"] == "written" and target.read_text() == "escaped"
        assert probe["ssh_listing"] == ["id_ed25519"]
        assert not [k for k, v in probe["env"].items() if "SECRET-VALUE" in v]  # the environment is scrubbed anyway

    def test_a_stuck_sandboxed_run_is_killed(self, sandboxed):
        gws, _cmd, _target, _home = sandboxed
        script = gws.out / "stuck.py"
        script.write_text(GW_STUCK)
        gws.start(WORKSPACE_TEST_COMMAND=shlex.join([sys.executable, str(script), "pids.txt"]),
                  WORKSPACE_TEST_TIMEOUT_MS="1500", POLICY_SANDBOX="bwrap")
        t0 = time.monotonic()
        run = gws.run_tests(timeout=60)
        assert run["timed_out"] is True and 1.4 < time.monotonic() - t0 < 20
        assert "stuck test started" in run["_output"]
        # nothing of it is left: no process whose command line names the script
        def leftovers() -> list[str]:
            found = []
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    with contextlib.suppress(OSError):
                        if str(script).encode() in (proc / "cmdline").read_bytes():
                            found.append(proc.name)
            return found
        wait_for(lambda: not leftovers(), 10, "the sandboxed test command to be gone")

    def test_a_sandbox_that_cannot_start_stops_startup(self, tmp_path):
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for tool in ("git", "python3"):
            found = shutil.which(tool)
            if found:
                (bin_dir / tool).symlink_to(found)
        env = base_env(tmp_path, {"POLICY_SANDBOX": "bwrap", "PATH": str(bin_dir)})
        r = run_lynkr(tmp_path, env=env)
        assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
        lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
        assert len(lines) == 1 and "POLICY_SANDBOX" in lines[0] and "bubblewrap" in lines[0], r.stderr
        # auto on the same machine starts, and says test runs are on the host
        p = spawn(tmp_path, {**env, "POLICY_SANDBOX": "auto"}).wait_ready()
        try:
            notice = p.wait_log(lambda o: "on the host" in str(o.get("detail", "")), what="host notice")
            assert "bubblewrap" in notice["detail"]
        finally:
            p.stop()


class TestPodmanSandbox:
    """POLICY_SANDBOX=podman: test runs in a container of POLICY_SANDBOX_IMAGE. .ci/run builds the image
    (Debian's minbase with python3, via debootstrap) and names it in LYNKR_TEST_PODMAN_IMAGE."""

    @pytest.fixture
    def podman_env(self):
        image = os.environ.get("LYNKR_TEST_PODMAN_IMAGE", "")
        require_e2e("podman and a test image (LYNKR_TEST_PODMAN_IMAGE, built by .ci/run)",
                    bool(image) and shutil.which("podman") is not None)
        env = {"POLICY_SANDBOX": "podman", "POLICY_SANDBOX_IMAGE": image}
        if os.environ.get("CONTAINERS_CONF"):
            env["CONTAINERS_CONF"] = os.environ["CONTAINERS_CONF"]
        return env

    def test_a_test_run_is_confined_to_its_container(self, gws, podman_env):
        probe = "import os, pathlib, sys\n" \
                f"t = pathlib.Path({str(gws.out / 'escaped.txt')!r})\n" \
                "try:\n    t.write_text('x'); print('OUTSIDE-WRITE ok')\nexcept OSError as e:\n" \
                "    print('OUTSIDE-WRITE', type(e).__name__)\n" \
                "pathlib.Path('inside.txt').write_text('ok')\n" \
                f"print('HOME-SSH', os.path.exists({str(gws.tmp / 'home' / '.ssh' / 'id_ed25519')!r}))\n" \
                "print('SECRET', any('SECRET-VALUE' in v for v in os.environ.values()))\n" \
                "print('1 passed')\n"
        gws.write("probe.py", probe)
        (gws.tmp / "home" / ".ssh").mkdir(parents=True, exist_ok=True)
        (gws.tmp / "home" / ".ssh" / "id_ed25519").write_text("PRIVATE KEY")
        gws.start(WORKSPACE_TEST_COMMAND="python3 probe.py", OPENAI_API_KEY="sk-SECRET-VALUE", **podman_env)
        run = gws.run_tests()
        out = run["_output"]
        assert run["passed"] is True, out
        assert "OUTSIDE-WRITE ok" not in out and not (gws.out / "escaped.txt").exists(), out
        assert (gws.repo / "inside.txt").read_text() == "ok"
        assert "HOME-SSH False" in out and "SECRET False" in out, out
        left = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True,
                              env={**os.environ}).stdout
        assert "lynkr-test-" not in left, left

    def test_a_stuck_container_is_removed_on_timeout(self, gws, podman_env):
        gws.write("stuck.py", "import time\nprint('stuck test started', flush=True)\ntime.sleep(60)\n")
        gws.start(WORKSPACE_TEST_COMMAND="python3 stuck.py", WORKSPACE_TEST_TIMEOUT_MS="3000", **podman_env)
        run = gws.run_tests(timeout=90)
        assert run["timed_out"] is True, run
        wait_for(lambda: "lynkr-test-" not in subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"],
                                                              capture_output=True, text=True).stdout,
                 20, "the container to be removed")

    def test_missing_image_stops_startup(self, tmp_path, podman_env):
        r = run_lynkr(tmp_path, {**podman_env, "POLICY_SANDBOX_IMAGE": "lynkr-no-such-image:0"})
        assert r.returncode == 2 and "POLICY_SANDBOX_IMAGE" in r.stderr, r.stderr


# -- what the gate counts, and runners the workspace cannot replace --

FOOLING_CONFTEST = """\
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    outcome.get_result().outcome = "passed"  # every failure reported as a pass
"""


class TestGateAndRunners:
    @staticmethod
    def pytest_cmd() -> str:
        return shlex.join([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"])

    def test_ignored_files_cannot_open_the_gate(self, gws):
        gws.write("tests/test_app.py", "import sys\nsys.path.insert(0, 'src')\nfrom app import main\n\n\n"
                                       "def test_main():\n    assert main() == 2\n")
        gws.commit_all("a failing test")
        gws.write(".gitignore", "conftest.py\n__pycache__/\n")
        gws.write("conftest.py", FOOLING_CONFTEST)  # ignored: the commit will never hold it
        gws.write("src/util.py", "X = 2\n")
        # on the worktree the ignored conftest.py turns the failure into a pass (the attack is real) ...
        gws.start(WORKSPACE_TEST_COMMAND=self.pytest_cmd())
        gws.ok("workspace_git_stage", {"paths": ["src/util.py", ".gitignore"]})
        fooled = gws.run_tests()
        assert fooled["passed"] is True and fooled["checkout"] == "worktree", fooled
        # ... but the gate runs the tested tree in a clean checkout, where it fails, and stays shut
        gws.start(WORKSPACE_TEST_COMMAND=self.pytest_cmd(), POLICY_GIT_REQUIRE_TESTS="true")
        run = gws.run_tests()
        assert run["checkout"] == "clean" and run["passed"] is False, run
        assert "assert 1 == 2" in run["_output"]
        denied = gws.err("workspace_git_commit", {"message": "sneak it in"})
        assert "POLICY_GIT_REQUIRE_TESTS" in denied
        # a real fix, tested in the clean checkout, opens it for exactly that content
        gws.write("src/app.py", "def main():\n    return 2\n")
        gws.ok("workspace_git_stage", {"paths": ["src/app.py"]})
        run = gws.run_tests()
        assert run["checkout"] == "clean" and run["passed"] is True, run
        assert gws.ok("workspace_git_commit", {"message": "fix main"}).startswith("committed")
        assert "conftest.py" not in gws.git("show", "--name-only", "--format=", "HEAD")

    def test_a_workspace_pytest_py_does_not_replace_pytest(self, gws):
        marker = gws.repo / "shadow-ran.txt"
        gws.write("pytest.py", f"open({str(marker)!r}, 'w').write('x')\nprint('1 passed')\n")
        gws.write("mypkg/__init__.py", "VALUE = 41\n")  # the project's own package, imported by its tests
        gws.write("tests/test_pkg.py", "import mypkg\n\n\ndef test_value():\n    assert mypkg.VALUE + 1 == 42\n")
        gws.start(WORKSPACE_TEST_COMMAND=self.pytest_cmd())
        run = gws.run_tests()
        assert run["passed"] is True and run["counts"].get("passed") == 1, run
        assert not marker.exists(), "the workspace's pytest.py ran instead of pytest"
        assert "test_pkg.py" in run["_output"] or "1 passed in" in run["_output"], run["_output"][-500:]


# -- confinement: git pathspecs, remotes, subprocess environments, hooks --

CONF_GLOB_REFUSED = re.compile(r"not accepted", re.I)


def conf_glob_refused(msg: str) -> None:
    assert CONF_GLOB_REFUSED.search(msg) and re.search(r"glob|magic|pathspec", msg, re.I), msg


class TestConfinementGitPathspecs:
    """Item 1: the path check sees a literal string; git must get a literal pathspec."""

    def _secrets(self, gws: GitWS) -> None:
        gws.write(".env", "API_TOKEN=env-canary-9d2e\n")  # untracked, blocked by default
        gws.write("src/server.pem", "-----BEGIN PRIVATE KEY-----\npem-canary-77b1\n")

    @pytest.mark.parametrize("spec", [".e*", "*", ":(glob)**", ":(icase).ENV", "src/*", ".en[v]", ":!README.md",
                                      "?env"])
    def test_globs_and_magic_are_refused_and_nothing_is_staged(self, gws, spec):
        self._secrets(gws)
        gws.write("src/app.py", "def main():\n    return 2\n")
        gws.start()
        msg = gws.err("workspace_git_stage", {"paths": [spec]})
        conf_glob_refused(msg)
        assert gws.staged() == [], f"{spec!r} staged {gws.staged()}"
        # one magic entry spoils the whole call: nothing of the literal neighbour is staged either
        gws.err("workspace_git_stage", {"paths": ["src/app.py", spec]})
        assert gws.staged() == []
        assert gws.git("diff", "--cached") == ""

    def test_folders_stage_their_files_but_never_blocked_ones(self, gws):
        self._secrets(gws)
        gws.write("src/.env", "NESTED=nested-env-canary-31aa\n")
        gws.write("src/conf/.ENV", "UPPER=upper-env-canary-8b8b\n")  # the blocked-path match ignores case
        gws.write("src/keys/id.PEM", "-----BEGIN PRIVATE KEY-----\nupper-pem-canary\n")
        gws.write("src/app.py", "def main():\n    return 3\n")
        gws.write("src/new.py", "Y = 2\n")
        gws.write("docs/guide.md", "guide\n")
        gws.start()
        gws.ok("workspace_git_stage", {"paths": ["src"]})
        assert gws.staged() == ["src/app.py", "src/new.py"]
        gws.ok("workspace_git_stage", {"paths": ["."]})
        assert gws.staged() == ["docs/guide.md", "src/app.py", "src/new.py"]
        cached = gws.git("diff", "--cached")
        assert "canary" not in cached, cached
        staged_diff = gws.ok("workspace_git_diff", {"staged": True})
        assert "canary" not in staged_diff

    def test_diff_log_unstage_obey_the_same_rules(self, gws):
        gws.write(".env", "API_TOKEN=old\n")
        gws.git("add", "-f", ".env")  # tracked by hand (a project that committed one): the model must not read it
        gws.git("commit", "-q", "-m", "env")
        gws.write(".env", "API_TOKEN=diff-canary-5c3f\n")
        gws.write("src/app.py", "def main():\n    return 4\n")
        gws.git("add", "src/app.py")
        gws.start()
        for spec in (".e*", "*", ":(icase).ENV", ":(glob)**"):
            for args in ({"paths": [spec]}, {"paths": [spec], "staged": True}):
                content, is_error = gws.call("workspace_git_diff", args)
                assert is_error is True, (args, content)
                conf_glob_refused(content)
                assert "diff-canary" not in content
            content, is_error = gws.call("workspace_git_log", {"path": spec})
            assert is_error is True, (spec, content)
            conf_glob_refused(content)
            content, is_error = gws.call("workspace_git_unstage", {"paths": [spec]})
            assert is_error is True, (spec, content)
            conf_glob_refused(content)
            assert gws.staged() == ["src/app.py"]
        # literal names still work
        assert "return 4" in gws.ok("workspace_git_diff", {"paths": ["src/app.py"], "staged": True})
        gws.ok("workspace_git_unstage", {"paths": ["src/app.py"]})
        assert gws.staged() == []

    def test_workspace_in_a_subfolder_never_reaches_the_rest_of_the_repo(self, gws):
        gws.write("parent_secret.txt", "parent-canary-0\n")
        gws.commit_all("parent file")
        gws.write("parent_secret.txt", "parent-canary-8e41\n")  # modified, outside the workspace
        gws.write("new_parent.txt", "parent-canary-new\n")  # untracked, outside the workspace
        gws.write("sub/inner.py", "Z = 1\n")
        proxy = start_proxy(gws.tmp, {"WORKSPACE_ROOT": str(gws.repo / "sub"), "LYNKR_INDEX_ON_START": "false"})
        gws.proxies.append(proxy)
        gws.proxy = proxy
        for spec in (":(top)parent_secret.txt", ":/parent_secret.txt", ":(top)*", ":(top,literal)parent_secret.txt",
                     "../parent_secret.txt", str(gws.repo / "parent_secret.txt")):
            content, is_error = gws.call("workspace_git_stage", {"paths": [spec]})
            assert is_error is True, (spec, content)
            assert gws.staged() == [], (spec, gws.staged())
            content, _ = gws.call("workspace_git_diff", {"paths": [spec]})
            assert "parent-canary" not in content, (spec, content)
        for args in ({"paths": ["."]}, {"all": True}):
            gws.ok("workspace_git_stage", args)
            assert gws.staged() == ["sub/inner.py"], (args, gws.staged())
        for args in ({}, {"staged": True}, {"paths": ["."]}, {"from_ref": "HEAD~1", "to_ref": "HEAD"}):
            content, _ = gws.call("workspace_git_diff", args)
            assert "parent-canary" not in content, (args, content)
        content, _ = gws.call("workspace_diff_review", {"from_ref": "HEAD~1"})
        assert "parent_secret" not in content and "parent-canary" not in content, content


class TestConfinementGitRemotes:
    """Item 2: a remote is a name `git remote` lists, never a path (a symlink out of the workspace)."""

    def _outside_repos(self, gws: GitWS) -> tuple[Path, Path, str]:
        elsewhere = gws.tmp / "elsewhere"
        other = elsewhere / "otherrepo"
        other.mkdir(parents=True)
        gw_git(other, "init", "-q", "-b", "main")
        gw_git(other, "config", "user.name", "Eve")
        gw_git(other, "config", "user.email", "eve@example.com")
        (other / "loot.txt").write_text("outside-canary-4f0d\n")
        gw_git(other, "add", "-A")
        gw_git(other, "commit", "-q", "-m", "outside commit")
        bare = elsewhere / "otherbare.git"
        gw_git(gws.tmp, "init", "-q", "--bare", "-b", "main", str(bare))
        (gws.repo / "linkout").symlink_to(elsewhere, target_is_directory=True)
        return other, bare, gw_git(other, "rev-parse", "HEAD").strip()

    def test_pull_and_push_by_path_are_refused_and_touch_nothing(self, gws):
        other, bare, outside_sha = self._outside_repos(gws)
        gws.write("src/app.py", "def main():\n    return 5\n")
        local = gws.commit_all("local work")
        gws.start(POLICY_GIT_ALLOW_PUSH="true")
        for remote in ("linkout/otherrepo", "linkout/otherrepo/.git", "./linkout/otherrepo", str(other),
                       f"file://{other}"):
            content, is_error = gws.call("workspace_git_pull", {"remote": remote})
            assert is_error is True, (remote, content)
            assert "outside-canary" not in content, (remote, content)
            if remote.startswith("linkout/"):  # a well-formed name that is no remote: the answer lists the real ones
                assert "origin" in content, (remote, content)
        fetched = subprocess.run(["git", "cat-file", "-e", outside_sha], cwd=gws.repo, env=gw_git_env(),
                                 capture_output=True, timeout=30)
        assert fetched.returncode != 0, "an outside repository's commit was fetched"
        assert not (gws.repo / ".git" / "FETCH_HEAD").exists() or outside_sha not in \
            (gws.repo / ".git" / "FETCH_HEAD").read_text()
        assert gws.head() == local and not (gws.repo / "loot.txt").exists()
        for remote in ("linkout/otherbare.git", str(bare)):
            content, is_error = gws.call("workspace_git_push", {"remote": remote, "branch": "main"})
            assert is_error is True, (remote, content)
            if remote.startswith("linkout/"):
                assert "origin" in content, (remote, content)
        assert gw_git(gws.tmp, "--git-dir", str(bare), "for-each-ref").strip() == "", "a push wrote outside"
        # the configured remote still works both ways
        gws.ok("workspace_git_push", {"remote": "origin", "branch": "main"})
        assert gws.remote_head() == local
        gws.ok("workspace_git_pull", {"remote": "origin"})
        assert gws.head() == local


CONF_ENV_DUMP = """\
import json, os
print("ENV " + json.dumps(dict(os.environ)))
print("============================== 1 passed in 0.01s ===============================")
"""


def conf_executable(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(0o755)
    return path


class TestConfinementSubprocessEnv:
    """Item 3: programs run by tools get an allowlisted environment."""

    def test_test_runs_and_hooks_never_see_keys(self, gws, new_dbx):
        fake = new_dbx()
        hook_env_file = gws.repo / ".git" / "hook-env.json"  # inside: a sandbox may keep the rest read-only
        script = gws.out / "envdump.py"
        script.write_text(CONF_ENV_DUMP)
        conf_executable(gws.repo / ".git" / "hooks" / "post-commit",
                        f"#!{sys.executable}\nimport json, os, pathlib\n"
                        f"pathlib.Path({str(hook_env_file)!r}).write_text(json.dumps(dict(os.environ)))\n")
        lkey = CONF_SECRETS["LYNKR_API_KEY"]
        hdr = {"x-api-key": lkey}
        gws.start(**CONF_SECRETS, DATABRICKS_API_BASE=fake.url, MY_VAR="my-var-passes-5555", OTHER_VAR="other-6666",
                  LYNKR_SUBPROCESS_ENV="MY_VAR", POLICY_GIT_ALLOW_HOOKS="true", LYNKR_TOOLS="*",
                  WORKSPACE_TEST_COMMAND=shlex.join([sys.executable, str(script)]))
        p = gws.proxy
        body = conf_call(p, "workspace_test_run", {}, hdr)
        assert body["is_error"] is False, body
        dumped = [ln[4:] for ln in body["content"].splitlines() if ln.startswith("ENV {")]
        assert len(dumped) == 1, body["content"][-3000:]
        seen = json.loads(dumped[0])
        for name, value in CONF_SECRETS.items():
            assert name not in seen and value not in json.dumps(seen), f"{name} reached the test command"
            assert value not in json.dumps(body), f"{name} is in the tool result"
        assert seen.get("MY_VAR") == "my-var-passes-5555", sorted(seen)
        assert "OTHER_VAR" not in seen, "a variable nobody allowed reached the test command"
        assert seen.get("PATH") and seen.get("HOME"), sorted(seen)  # what programs need still arrives
        assert not any(k.startswith(("LYNKR_", "DATABRICKS_", "AZURE_", "OPENAI_", "WORKSPACE_", "MODEL_"))
                       for k in seen), sorted(seen)

        # the same run through the model: neither the upstream nor the session store gets a key
        fake.push(model_turn("dbx", None, [("call_env", "workspace_test_run", {})]), model_turn("dbx", "Tests ran."))
        sid = "conf-env-session"
        r = p.post(base_req(messages=[user("run the tests")]), headers={**hdr, "x-session-id": sid}, timeout=90)
        assert r.status == 200, r.data[:2000]
        assert "ENV {" in results_seen(fake.last)["call_env"], "the tool result did not reach the model"
        stored = p.call("GET", f"/v1/sessions/{sid}", headers=hdr)
        assert stored.status == 200, stored.data[:500]
        for value in CONF_SECRETS.values():
            for rec in fake.requests:
                assert value.encode() not in rec.raw, f"{value} sent upstream in a tool result"
            assert value.encode() not in stored.data, f"{value} stored in the session"

        # git hooks (allowed here) get the same scrubbed environment
        gws.write("src/app.py", "def main():\n    return 6\n")
        assert conf_call(p, "workspace_git_stage", {"paths": ["src/app.py"]}, hdr)["is_error"] is False
        commit = conf_call(p, "workspace_git_commit", {"message": "hooked"}, hdr)
        assert commit["is_error"] is False, commit
        hook_seen = json.loads(hook_env_file.read_text())
        for name, value in CONF_SECRETS.items():
            assert value not in json.dumps(hook_seen), f"{name} reached a git hook"
        assert hook_seen.get("MY_VAR") == "my-var-passes-5555" and "PATH" in hook_seen


CONF_MARKER_HOOK = """#!/bin/sh
echo {what} >> "{marker}"
exit 0
"""


class TestConfinementGitHooks:
    """Item 4: tool-driven git runs no hook or fsmonitor the model can write, and no implicit bare repo."""

    def test_hooks_path_into_the_workspace_is_not_run_unless_allowed(self, gws):
        marker = gws.repo / ".git" / "hook-ran"  # inside: hooks may one day run in the sandbox
        for hook in ("pre-commit", "commit-msg", "post-commit"):
            conf_executable(gws.repo / ".githooks" / hook, CONF_MARKER_HOOK.format(what=hook, marker=marker))
        gws.git("config", "core.hooksPath", ".githooks")
        gws.write("src/app.py", "def main():\n    return 7\n")
        gws.git("add", "src/app.py")
        before = gws.head()
        gws.start()
        assert gws.ok("workspace_git_commit", {"message": "no hooks"}).startswith("committed")
        assert gws.head("HEAD~1") == before
        assert not marker.exists(), "a hook under core.hooksPath ran"
        gws.write("src/app.py", "def main():\n    return 8\n")
        gws.git("add", "src/app.py")
        gws.start(POLICY_GIT_ALLOW_HOOKS="true")
        assert gws.ok("workspace_git_commit", {"message": "with hooks"}).startswith("committed")
        ran = marker.read_text().split() if marker.exists() else []
        assert "post-commit" in ran, f"POLICY_GIT_ALLOW_HOOKS=true: the hooks should run: {ran}"
        assert "pre-commit" in ran, f"POLICY_GIT_ALLOW_HOOKS=true: pre-commit did not run (commit --no-verify?): {ran}"

    @staticmethod
    def _bare_layout(ws: Path, marker: Path) -> None:
        """What fs_write alone can lay out in the workspace root: a repository git discovers as bare, whose
        config names a worktree and an fsmonitor command (run through the shell)."""
        ws.mkdir(exist_ok=True)
        (ws / "HEAD").write_text("ref: refs/heads/main\n")
        (ws / "objects" / "info").mkdir(parents=True)
        (ws / "refs" / "heads").mkdir(parents=True)
        (ws / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tworktree = .\n"
                                   f'\tfsmonitor = "echo fsmonitor >> {marker}; false"\n')
        (ws / "app.py").write_text("def visible():\n    return 1\n")
        assert not (ws / ".git").exists()
        probe = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=ws, env=gw_git_env(),
                               capture_output=True, text=True, timeout=30)
        assert probe.stdout.strip() == "true", f"git does not discover the layout: {probe.stderr}"

    def test_implicit_bare_repository_in_the_workspace_is_refused(self, tmp_path, make_proxy):
        ws, marker = tmp_path / "ws", tmp_path / "fsmonitor-ran"
        self._bare_layout(ws, marker)
        p = make_proxy({"WORKSPACE_ROOT": str(ws), "LYNKR_TOOLS": "*"})
        for name in ("workspace_git_status", "workspace_git_diff", "workspace_git_log", "workspace_git_branches"):
            body = conf_call(p, name)
            assert body["is_error"] is True, (name, body)
            assert "app.py" not in body["content"], body
        assert not marker.exists(), "git ran the fsmonitor of a repository laid out in the workspace"

    def test_index_never_runs_git_config_from_a_workspace_layout(self, tmp_path, make_proxy):
        # Issue 14 also names "the index's use of git": start-up indexing and workspace_index_rebuild.
        ws, marker = tmp_path / "ws", tmp_path / "fsmonitor-ran"
        self._bare_layout(ws, marker)
        p = make_proxy({"WORKSPACE_ROOT": str(ws), "LYNKR_TOOLS": "*", "LYNKR_INDEX_ON_START": "true"})
        for name in ("workspace_index_rebuild", "project_summary"):
            conf_call(p, name)
        time.sleep(0.3)
        ran = marker.read_text().split() if marker.exists() else []
        assert ran == [], f"the index's git ran the workspace's fsmonitor command {len(ran)} times"


# == 16. Indexer ==

# -- repo index, symbols and references, project summary, CLAUDE.md --


# Every test builds a real workspace in tmp_path (a git repository where the test is about git), starts
# the proxy on it and drives the index through POST /v1/tools/{name} (or `lynkr index`). The proxy's
# data directory lives inside the workspace on purpose: it must never show up in the index.

IX_GIT_ID = ["-c", "user.name=Lynkr Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]


def ix_git(ws: Path, *args: str) -> str:
    proc = subprocess.run(["git", *IX_GIT_ID, *args], cwd=ws, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"git {args}: {proc.stderr}"
    return proc.stdout


def ix_defs(proxy: Proxy, name: str, **filters: Any) -> list[dict]:
    """Exact-name matches only."""
    return [r for r in ix_search(proxy, name, **filters) if r["name"] == name]


def ix_languages(summary: dict) -> dict[str, int]:
    return {lang["language"]: lang["files"] for lang in summary["languages"]}


def ix_claude_block(ws: Path) -> str:
    text = (ws / "CLAUDE.md").read_text(encoding="utf-8")
    begin = text.index("<!-- lynkr:begin")
    end = text.index("<!-- lynkr:end generated -->")
    return text[begin:end]


IX_TS_PROJECT = {
    # formatPrice is defined in src/util.ts and imported by src/a.ts and src/b.ts (and used in util.ts itself).
    "src/util.ts": """
        export function formatPrice(n: number): string {
          return `$${n.toFixed(2)}`;
        }

        export class Cart {
          items: number[] = [];
          total(): string {
            return formatPrice(this.items.reduce((a, b) => a + b, 0));
          }
        }
        """,
    "src/a.ts": """
        import { formatPrice } from "./util";

        export function showA(x: number): string {
          return formatPrice(x);
        }
        """,
    "src/b.ts": """
        import { formatPrice, Cart } from './util';

        const cart = new Cart();
        console.log(formatPrice(3), cart.total());
        """,
    # The same name defined independently, used locally and by a file that imports only this module.
    "lib/other.ts": """
        export function formatPrice(n: number): string {
          return String(n);
        }

        export function useLocal(): string {
          return formatPrice(1);
        }
        """,
    "lib/third.ts": """
        import { useLocal, formatPrice } from "./other";

        export const z = () => useLocal() + formatPrice(2);
        """,
}


class TestIndexer:
    def test_rebuild_then_search_ranks_exact_prefix_substring_subsequence(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        ix_write(ws, {
            "pkg/loading.py": """
                def load(path):
                    return open(path).read()

                def loader():
                    return load

                def load_a():
                    return 1

                def load_b():
                    return 2

                def reload():
                    return load("x")

                def lookup_and_dump():
                    return 3

                class LoadBalancer:
                    def pick(self):
                        return 0
                """,
            # References make the lower-ranked matches the most used: rank must still win over use count,
            # and among equal ranks the more referenced symbol comes first.
            "app/main.py": """
                from pkg.loading import lookup_and_dump, reload, load_a, load_b

                def run():
                    lookup_and_dump(); lookup_and_dump(); lookup_and_dump(); lookup_and_dump()
                    reload(); reload(); reload()
                    load_b(); load_b(); load_b()
                    load_a()
                """,
            "web/load.ts": """
                export function loadPage(url: string): void {
                  fetch(url);
                }
                """,
            "unrelated.py": """
                def nothing_matches_here():
                    pass
                """,
        })
        proxy = make_proxy(ix_env(tmp_path, ws))
        stats = ix_tool(proxy, "workspace_index_rebuild")
        assert stats["files"] == 4 and stats["parsed"] == 4 and stats["deleted"] == 0, stats
        assert stats["symbols"] >= 10 and stats["parser"] == "tree-sitter", stats
        assert isinstance(stats["seconds"], (int, float)) and not stats["errors"], stats

        results = ix_search(proxy, "load")
        names = [r["name"] for r in results]
        by_name = {r["name"]: r for r in results}
        assert "nothing_matches_here" not in names
        assert names[0] == "load" and by_name["load"]["match"] == "exact", results
        assert by_name["load"]["file"] == "pkg/loading.py" and by_name["load"]["line"] == 1
        assert by_name["load"]["kind"] == "function" and by_name["load"]["language"] == "python"
        for name, match in (("loader", "prefix"), ("load_a", "prefix"), ("load_b", "prefix"), ("loadPage", "prefix"),
                            ("LoadBalancer", "prefix"), ("reload", "substring"), ("lookup_and_dump", "subsequence")):
            assert by_name[name]["match"] == match, (name, by_name.get(name))
        ranks = [("exact", "prefix", "substring", "subsequence").index(r["match"]) for r in results]
        assert ranks == sorted(ranks), [(r["name"], r["match"]) for r in results]
        # Ties (same rank, same length) are broken by how often the name is referenced.
        assert by_name["load_b"]["references"] > by_name["load_a"]["references"] > by_name["loader"]["references"]
        assert names.index("load_b") < names.index("load_a") < names.index("loader"), names
        assert by_name["lookup_and_dump"]["references"] > by_name["load_b"]["references"]  # still ranked last

        # Filters: kind, language, path.
        assert [r["name"] for r in ix_search(proxy, "load", kind="class")] == ["LoadBalancer"]
        ts = ix_search(proxy, "load", language="typescript")
        assert [(r["name"], r["file"]) for r in ts] == [("loadPage", "web/load.ts")]
        under_app = ix_search(proxy, "run", path="app/")
        assert [(r["name"], r["file"]) for r in under_app] == [("run", "app/main.py")]
        assert ix_search(proxy, "load", path="app/") == []
        assert {r["file"] for r in ix_search(proxy, "load", path="pkg/*.py")} == {"pkg/loading.py"}
        assert len(ix_search(proxy, "load", limit=2)) == 2
        # A method is found with its class as container.
        pick = ix_defs(proxy, "pick")
        assert [(p["kind"], p["container"]) for p in pick] == [("method", "LoadBalancer")]
        # No match at all: a clear answer, not an error.
        assert ix_search(proxy, "zzzqqq") == []
        # Python references resolve through `from pkg.loading import ...`.
        refs = ix_tool(proxy, "workspace_symbol_references", {"name": "load_b"})
        assert refs["definition"]["file"] == "pkg/loading.py" and set(refs["references"]) == {"app/main.py"}, refs
        assert {u["line"] for u in refs["references"]["app/main.py"]} == {1, 6}, refs
        assert {u["enclosing"] for u in refs["references"]["app/main.py"] if u["line"] == 6} == {"run"}, refs

    def test_deleted_files_leave_index_search_summary_and_claude_md(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        ix_write(ws, {
            "app.py": """
                from legacy.old import obsolete_thing

                def main():
                    obsolete_thing(); obsolete_thing(); obsolete_thing()
                """,
            "worker.py": """
                from legacy.old import obsolete_thing

                def work():
                    return obsolete_thing()
                """,
            "legacy/old.py": """
                def obsolete_thing():
                    return 42
                """,
            "legacy/more.py": """
                def also_old():
                    return 1
                """,
            "tools/tool.go": """
                package main

                func GoHelper() int { return 1 }
                """,
        })
        proxy = make_proxy(ix_env(tmp_path, ws))
        first = ix_tool(proxy, "workspace_index_rebuild")
        assert first["files"] == 5, first
        assert [d["file"] for d in ix_defs(proxy, "obsolete_thing")] == ["legacy/old.py"]
        summary = ix_tool(proxy, "project_summary")
        assert ix_languages(summary) == {"python": 4, "go": 1}, summary["languages"]
        block = ix_claude_block(ws)
        assert "legacy/" in block and "legacy/old.py" in block and "go (" in block, block

        (ws / "legacy/old.py").unlink()
        (ws / "legacy/more.py").unlink()
        (ws / "legacy").rmdir()
        (ws / "tools/tool.go").unlink()
        second = ix_tool(proxy, "workspace_index_rebuild")
        # app.py and worker.py remain; the CLAUDE.md the first rebuild wrote is not indexed.
        assert second["deleted"] == 3 and second["parsed"] == 0 and second["files"] == 2, second
        assert ix_search(proxy, "obsolete_thing") == []
        assert ix_search(proxy, "also_old") == []
        assert ix_search(proxy, "GoHelper") == []
        assert ix_tool(proxy, "workspace_goto_definition", {"name": "obsolete_thing"})["definitions"] == []
        refs = ix_tool(proxy, "workspace_symbol_references", {"name": "obsolete_thing"})
        assert refs["definition"] is None, refs
        summary = ix_tool(proxy, "project_summary")
        assert ix_languages(summary) == {"python": 2}, summary["languages"]  # CLAUDE.md is not indexed
        assert summary["files"] == 2
        assert all(not f["file"].startswith("legacy/") for f in summary["most_referenced_files"])
        block = ix_claude_block(ws)
        assert "legacy" not in block and "go (" not in block and "tools/" not in block, block

    def test_search_limit_with_a_popular_name_and_subsequence_order(self, tmp_path, make_proxy):
        # A name defined in many files fills the answer with its first definitions (file order) and
        # nothing else; subsequence matches need the query's characters in order, popular first.
        ws = tmp_path / "ws"
        files = {f"svc/s{i:02}.py": f"class S{i:02}:\n    def handle(self):\n        return {i}\n" for i in range(12)}
        files["tasks.py"] = ("def make_task():\n    return 1\n\ndef take_mask():\n    return 2\n\n"
                             "def mark_it():\n    return 3\n\ndef run():\n    return make_task() + mark_it() + mark_it()\n")
        ix_write(ws, files)
        proxy = make_proxy(ix_env(tmp_path, ws, LYNKR_CLAUDE_MD="false"))
        ix_tool(proxy, "workspace_index_rebuild")
        top = ix_search(proxy, "handle", limit=5)
        assert [(r["name"], r["file"], r["match"]) for r in top] == [("handle", f"svc/s{i:02}.py", "exact") for i in range(5)], top
        # "mkt": make_task and mark_it hold m, k, t in that order; take_mask holds them, not in order.
        found = ix_search(proxy, "mkt")
        assert [(r["name"], r["match"]) for r in found] == [("mark_it", "subsequence"), ("make_task", "subsequence")], found
        assert ix_search(proxy, "mk€") == []  # a character no name has

    def test_incremental_rebuild_parses_only_changed_files(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        # Enough files that the first build takes the process-pool path.
        files: dict[str, str | bytes] = {f"pkg/mod_{i:03}.py": f"def func_{i:03}(x):\n    return x + {i}\n"
                                         for i in range(90)}
        files["pkg/edited.py"] = "def before_edit():\n    return 1\n"
        files["README.md"] = "# demo\n"
        ix_write(ws, files)
        # Without CLAUDE.md upkeep, so the file lynkr writes does not count as a change.
        proxy = make_proxy(ix_env(tmp_path, ws, LYNKR_CLAUDE_MD="false"))
        first = ix_tool(proxy, "workspace_index_rebuild")
        assert "claude_md" not in first and not (ws / "CLAUDE.md").exists(), first
        assert first["files"] == 92 and first["parsed"] == 92 and not first["errors"], first
        assert first["symbols"] == 91, first
        assert [d["file"] for d in ix_defs(proxy, "func_057")] == ["pkg/mod_057.py"]

        again = ix_tool(proxy, "workspace_index_rebuild")
        assert (again["files"], again["parsed"], again["deleted"]) == (92, 0, 0), again

        # New mtimes, same bytes: nothing to parse.
        for i in range(0, 90, 9):
            path = ws / f"pkg/mod_{i:03}.py"
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        touched = ix_tool(proxy, "workspace_index_rebuild")
        assert (touched["files"], touched["parsed"], touched["deleted"]) == (92, 0, 0), touched
        assert ix_tool(proxy, "workspace_index_rebuild")["parsed"] == 0  # the new mtimes were recorded

        edited = ws / "pkg/edited.py"
        edited.write_text("def after_edit():\n    return 2\n")
        st = edited.stat()
        os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns + 7_000_000_000))
        one = ix_tool(proxy, "workspace_index_rebuild")
        assert (one["files"], one["parsed"], one["deleted"]) == (92, 1, 0), one
        assert ix_search(proxy, "before_edit") == []
        assert [d["file"] for d in ix_defs(proxy, "after_edit")] == ["pkg/edited.py"]
        assert one["symbols"] == 91

    @pytest.mark.parametrize("threaded", [True, False], ids=["threaded-caller", "single-threaded-caller"])
    def test_pool_workers_from_a_program_on_stdin(self, tmp_path, threaded):
        # lynkr used from a program read on stdin. A threaded caller (like the server) gets workers from
        # the fork server, which cannot re-import that __main__: they die, and the rebuild still indexes
        # every file, in the calling process. A single-threaded caller forks its workers: nothing to
        # re-import, no worker fails.
        ws = tmp_path / "ws"
        ix_write(ws, {f"pkg/m{i:02}.py": f"def fn_{i:02}():\n    return {i}\n" for i in range(70)})
        program = (f"import sys, threading, time\nsys.path.insert(0, {str(HERE)!r})\nimport lynkr\n"
                   + ("threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n" if threaded else "")
                   + f"index = lynkr.RepoIndex({str(ws)!r}, {str(tmp_path / 'state' / 'index.db')!r}, {str(tmp_path / 'state')!r})\n"
                   "stats = index.rebuild(workers=2)\nprint('RESULT', stats.parsed, stats.symbols, len(stats.errors))\n")
        run = subprocess.run([sys.executable, "-"], input=program, capture_output=True, text=True, timeout=120,
                             cwd=tmp_path, env={**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)}, check=False)
        assert run.returncode == 0, run.stderr[-2000:]
        assert "RESULT 70 70 0" in run.stdout, (run.stdout, run.stderr[-2000:])
        assert ("Traceback" in run.stderr) == threaded, run.stderr[-2000:]

    def test_bulk_build_restores_indexes_and_keeps_references(self, tmp_path, make_proxy):
        # A first build of many files writes without secondary indexes and rebuilds them at the end;
        # references (one row per file and name) expand back to every use with its enclosing symbol.
        ws = tmp_path / "ws"
        files = {f"pkg/user_{i:03}.py": (f"from pkg.core import shared_helper\n\n\nclass User{i:03}:\n"
                                         f"    def run(self):\n        shared_helper({i})\n        return shared_helper({i} + 1)\n")
                 for i in range(80)}
        files["pkg/core.py"] = "def shared_helper(x):\n    return x\n"
        files["pkg/__init__.py"] = ""
        ix_write(ws, files)
        proxy = make_proxy(ix_env(tmp_path, ws, LYNKR_CLAUDE_MD="false"))
        built = ix_tool(proxy, "workspace_index_rebuild")
        assert built["parsed"] == 82 and not built["errors"], built
        assert built["refs"] == 240, built  # 80 files x (import specifier + two calls)
        db = sqlite3.connect(ws / "lynkr-state" / "index.db")
        try:
            index_names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'"
                                                         " AND sql IS NOT NULL")}
            plan = " ".join(str(row) for row in db.execute("EXPLAIN QUERY PLAN SELECT spots FROM refs WHERE name = 'x'"))
        finally:
            db.close()
        assert {"symbols_file", "symbols_name_exact", "refs_name", "refs_file", "imports_file",
                "imports_resolved"} <= index_names, index_names
        assert "refs_name" in plan, plan
        refs = ix_tool(proxy, "workspace_symbol_references", {"name": "shared_helper"})
        assert refs["definition"]["file"] == "pkg/core.py", refs
        assert len(refs["references"]) == 80 and refs["reference_count"] == 240, refs["reference_count"]
        uses = refs["references"]["pkg/user_042.py"]
        assert [(u["line"], u["column"]) for u in uses] == [(1, 22), (6, 9), (7, 16)], uses
        assert [u["enclosing"] for u in uses] == [None, "run", "run"], uses
        top = ix_search(proxy, "shared_helper")[0]
        assert top["references"] == 240 and top["file"] == "pkg/core.py", top

    def test_two_threads_upgrading_one_index_at_once(self, tmp_path):
        # At start-up the background rebuild and the first index tool call can open an old index.db at
        # the same moment: one migrates, the other waits and finds the work done.
        import lynkr

        for trial in range(5):
            state = tmp_path / f"state{trial}"
            state.mkdir()
            db = sqlite3.connect(state / "index.db")
            db.execute("PRAGMA journal_mode=WAL")
            lynkr.apply_migrations(db, [lynkr._m001_index, lynkr._m002_exact_names, lynkr._m003_grouped_refs])
            db.executemany("INSERT INTO refs VALUES ('f.py', ?, 1, '1:1')", [(f"n{i}",) for i in range(5000)])
            db.commit()
            db.close()
            index = lynkr.RepoIndex(str(tmp_path), str(state / "index.db"), str(state))
            barrier = threading.Barrier(2)
            errors: list[BaseException] = []

            def open_index(index: Any = index, barrier: threading.Barrier = barrier, errors: list = errors) -> None:
                barrier.wait()
                try:
                    index.connect().close()
                except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                    errors.append(exc)

            threads = [threading.Thread(target=open_index) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert errors == [], errors
            db = sqlite3.connect(state / "index.db")
            try:
                recorded = [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name")]
                columns = {r[1]: r[2] for r in db.execute("PRAGMA table_info(refs)")}
                assert db.execute("SELECT COUNT(*) FROM refs").fetchone() == (0,)
            finally:
                db.close()
            assert recorded == ["m001_index", "m002_exact_names", "m003_grouped_refs", "m004_packed_spots",
                                "m005_import_names"], recorded
            assert columns["spots"] == "BLOB", columns

    def test_positions_written_as_text_by_an_older_lynkr_still_read(self, tmp_path, make_proxy):
        # An older lynkr sharing index.db writes "line:col" text into the packed column: references
        # read both forms.
        ws = tmp_path / "ws"
        ix_write(ws, {"a.py": "def alpha():\n    return 1\n", "b.py": "from a import alpha\n\ndef beta():\n    return alpha()\n"})
        proxy = make_proxy(ix_env(tmp_path, ws, LYNKR_CLAUDE_MD="false"))
        ix_tool(proxy, "workspace_index_rebuild")
        packed = ix_tool(proxy, "workspace_symbol_references", {"name": "alpha"})["references"]
        assert packed == {"b.py": [{"line": 1, "column": 15, "enclosing": None},
                                   {"line": 4, "column": 12, "enclosing": "beta"}]}, packed
        db = sqlite3.connect(ws / "lynkr-state" / "index.db")
        try:
            db.execute("UPDATE refs SET spots = '4:12 1:15' WHERE name = 'alpha'")
            db.commit()
        finally:
            db.close()
        assert ix_tool(proxy, "workspace_symbol_references", {"name": "alpha"})["references"] == packed

    def test_a_failing_migration_leaves_the_schema_as_it_was(self, tmp_path):
        import lynkr

        db = sqlite3.connect(tmp_path / "index.db")
        try:
            lynkr.apply_migrations(db, [lynkr._m001_index])
            db.execute("INSERT INTO refs VALUES ('a.py', 'x', 1, 2, NULL)")
            db.commit()

            def _m002_breaks_halfway(conn: sqlite3.Connection) -> None:
                conn.execute("DROP TABLE refs")
                raise RuntimeError("interrupted after the drop")

            with pytest.raises(RuntimeError, match="interrupted"):
                lynkr.apply_migrations(db, [lynkr._m001_index, _m002_breaks_halfway])
            assert db.execute("SELECT name, line FROM refs").fetchall() == [("x", 1)]  # the drop was undone
            assert [r[0] for r in db.execute("SELECT name FROM _migrations")] == ["m001_index"]
        finally:
            db.close()

    @pytest.mark.parametrize("schema", ["one-row-per-use", "text-spots"])
    def test_index_from_an_older_schema_is_rebuilt_in_full(self, tmp_path, make_proxy, schema):
        # An index.db written before references were grouped (one row per use), or with positions as
        # "line:col" text, migrates to the current schema and is re-parsed, instead of mixing old rows
        # with new ones.
        ws = tmp_path / "ws"
        ix_write(ws, {"a.py": "def alpha():\n    return beta()\n", "b.py": "from a import alpha\n\ndef beta():\n    return alpha()\n"})
        state = ws / "lynkr-state"
        state.mkdir()
        import lynkr  # the catalog as the earlier migrations left it

        db = sqlite3.connect(state / "index.db")
        grouped_refs = schema == "text-spots"
        lynkr.apply_migrations(db, [lynkr._m001_index, lynkr._m002_exact_names]
                               + ([lynkr._m003_grouped_refs] if grouped_refs else []))
        for rel in ("a.py", "b.py"):  # the catalog says both files are indexed and unchanged
            st = (ws / rel).stat()
            db.execute("INSERT INTO files VALUES (?, 'python', ?, ?, 'old', 2, 'tree-sitter')", (rel, st.st_size, st.st_mtime_ns))
        db.execute("INSERT INTO symbols (file, name, kind, line, col, signature) VALUES ('a.py', 'stale_name', 'function', 1, 5, '')")
        if grouped_refs:
            db.execute("INSERT INTO refs VALUES ('b.py', 'alpha', 2, '4:12 1:15')")
        else:
            db.execute("INSERT INTO refs VALUES ('b.py', 'alpha', 4, 12, 'beta')")
        db.commit()
        db.close()
        proxy = make_proxy(ix_env(tmp_path, ws, LYNKR_CLAUDE_MD="false"))
        rebuilt = ix_tool(proxy, "workspace_index_rebuild")
        assert rebuilt["parsed"] == 2 and not rebuilt["errors"], rebuilt
        assert ix_search(proxy, "stale_name") == []
        refs = ix_tool(proxy, "workspace_symbol_references", {"name": "alpha"})
        assert refs["references"] == {"b.py": [{"line": 1, "column": 15, "enclosing": None},
                                               {"line": 4, "column": 12, "enclosing": "beta"}]}, refs
        db = sqlite3.connect(state / "index.db")
        try:
            spots = db.execute("SELECT typeof(spots) FROM refs WHERE name = 'alpha'").fetchall()
        finally:
            db.close()
        assert spots == [("blob",)], spots

    def test_typescript_references_follow_imports_not_names(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        ix_write(ws, IX_TS_PROJECT)
        proxy = make_proxy(ix_env(tmp_path, ws))
        ix_tool(proxy, "workspace_index_rebuild")

        refs = ix_tool(proxy, "workspace_symbol_references", {"name": "formatPrice", "file": "src/util.ts"})
        check_expectations(refs, {"definition.file": "src/util.ts", "definition.line": 1,
                                  "definition.kind": "function", "name": "formatPrice"})
        grouped = refs["references"]
        # Only the files that import it from src/util.ts; not the defining file, not the unrelated definition,
        # not a file that imports the unrelated module.
        assert set(grouped) == {"src/a.ts", "src/b.ts"}, grouped
        a_lines = {u["line"] for u in grouped["src/a.ts"]}
        b_lines = {u["line"] for u in grouped["src/b.ts"]}
        assert 4 in a_lines and a_lines <= {1, 4}, grouped["src/a.ts"]  # the call (and the import specifier)
        assert 4 in b_lines and b_lines <= {1, 4}, grouped["src/b.ts"]
        call_in_a = next(u for u in grouped["src/a.ts"] if u["line"] == 4)
        assert call_in_a["column"] == 10 and call_in_a["enclosing"] == "showA", call_in_a
        assert refs["reference_count"] == sum(len(v) for v in grouped.values())

        # From the other side: lib/other.ts's formatPrice is used by lib/third.ts (which imports it) only.
        other = ix_tool(proxy, "workspace_symbol_references", {"name": "formatPrice", "file": "lib/other.ts"})
        assert other["definition"]["file"] == "lib/other.ts" and other["definition"]["line"] == 1, other
        assert set(other["references"]) == {"lib/third.ts"}, other
        assert 3 in {u["line"] for u in other["references"]["lib/third.ts"]}, other

        # Cart: used (new Cart) only in src/b.ts.
        cart = ix_tool(proxy, "workspace_symbol_references", {"name": "Cart"})
        assert cart["definition"]["file"] == "src/util.ts" and cart["definition"]["kind"] == "class", cart
        assert set(cart["references"]) == {"src/b.ts"}, cart

        # Go to definition from a position: the imported definition first, the local one in lib/other.ts.
        got = ix_tool(proxy, "workspace_goto_definition", {"file": "src/b.ts", "line": 4, "column": 14})
        assert got["name"] == "formatPrice" and got["definitions"][0]["file"] == "src/util.ts", got
        got = ix_tool(proxy, "workspace_goto_definition", {"file": "lib/other.ts", "line": 6, "column": 12})
        assert got["name"] == "formatPrice" and got["definitions"][0]["file"] == "lib/other.ts", got
        got = ix_tool(proxy, "workspace_goto_definition", {"name": "showA"})
        assert [(d["file"], d["line"]) for d in got["definitions"]] == [("src/a.ts", 3)], got
        bad, is_error = ix_tool_raw(proxy, "workspace_goto_definition", {"file": "src/a.ts", "line": 99})
        assert is_error and "99" in str(bad), bad

    def test_symbols_kinds_and_containers_per_language(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        ix_write(ws, {
            "py/shapes.py": """
                class Shape:
                    def area(self):
                        return 0

                def make_shape():
                    return Shape()

                async def fetch_shape():
                    return None
                """,
            "js/widget.js": """
                class Widget {
                  render() { return jsHelper(); }
                }
                function jsHelper() { return 1; }
                const jsArrow = () => 2;
                const jsLeft = (a) => a, jsRight = function (b) { return b; };
                """,
            "ui/Header.tsx": """
                import React from "react";

                interface HeaderProps { title: string }

                export function Header({ title }: HeaderProps) { return <h1>{title}</h1>; }

                export const Footer = () => <Header title="x" />;

                class TsxStore { loadAll(): void {} }
                """,
            "go/counter.go": """
                package main

                type GoCounter struct { n int }

                func (c *GoCounter) Inc() { c.n++ }

                func NewGoCounter() *GoCounter { return &GoCounter{} }
                """,
            "rs/lib.rs": """
                pub struct RsCounter { n: u32 }

                impl RsCounter {
                    pub fn bump(&mut self) { self.n += 1; }
                }

                pub trait RsShape { fn describe(&self) -> String { String::new() } }

                pub fn rs_free() {}
                """,
            "java/Account.java": """
                package bank;

                public class Account {
                    private int balance;
                    public void deposit(int amount) { balance += amount; }
                }
                """,
            "rb/invoice.rb": """
                module Billing
                  class Invoice
                    def total
                      compute
                    end
                  end
                end
                """,
        })
        proxy = make_proxy(ix_env(tmp_path, ws))
        stats = ix_tool(proxy, "workspace_index_rebuild")
        assert stats["parser"] == "tree-sitter" and not stats["errors"], stats
        expected = [
            # (name, language, kind, container, file, line)
            ("Shape", "python", "class", None, "py/shapes.py", 1),
            ("area", "python", "method", "Shape", "py/shapes.py", 2),
            ("make_shape", "python", "function", None, "py/shapes.py", 5),
            ("fetch_shape", "python", "function", None, "py/shapes.py", 8),
            ("Widget", "javascript", "class", None, "js/widget.js", 1),
            ("render", "javascript", "method", "Widget", "js/widget.js", 2),
            ("jsHelper", "javascript", "function", None, "js/widget.js", 4),
            ("jsArrow", "javascript", "function", None, "js/widget.js", 5),
            # Two declarators of one declaration share its range: siblings, not containers.
            ("jsLeft", "javascript", "function", None, "js/widget.js", 6),
            ("jsRight", "javascript", "function", None, "js/widget.js", 6),
            ("HeaderProps", "tsx", "interface", None, "ui/Header.tsx", 3),
            ("Header", "tsx", "function", None, "ui/Header.tsx", 5),
            ("Footer", "tsx", "function", None, "ui/Header.tsx", 7),
            ("TsxStore", "tsx", "class", None, "ui/Header.tsx", 9),
            ("loadAll", "tsx", "method", "TsxStore", "ui/Header.tsx", 9),
            ("GoCounter", "go", "type", None, "go/counter.go", 3),
            ("Inc", "go", "method", "GoCounter", "go/counter.go", 5),
            ("NewGoCounter", "go", "function", None, "go/counter.go", 7),
            ("RsCounter", "rust", "struct", None, "rs/lib.rs", 1),
            ("bump", "rust", "method", "RsCounter", "rs/lib.rs", 4),
            ("RsShape", "rust", "trait", None, "rs/lib.rs", 7),
            ("rs_free", "rust", "function", None, "rs/lib.rs", 9),
            ("Account", "java", "class", None, "java/Account.java", 3),
            ("deposit", "java", "method", "Account", "java/Account.java", 5),
            ("Billing", "ruby", "module", None, "rb/invoice.rb", 1),
            ("Invoice", "ruby", "class", "Billing", "rb/invoice.rb", 2),
            ("total", "ruby", "method", "Invoice", "rb/invoice.rb", 3),
        ]
        problems = []
        for name, language, kind, container, file, line in expected:
            found = [(d["kind"], d["container"], d["file"], d["line"]) for d in ix_defs(proxy, name, language=language)]
            if found != [(kind, container, file, line)]:
                problems.append(f"{language} {name}: expected {(kind, container, file, line)}, got {found}")
        assert not problems, "\n".join(problems)
        # The signature is the definition's source line.
        deposit = ix_defs(proxy, "deposit")[0]
        assert deposit["signature"] == "public void deposit(int amount) { balance += amount; }", deposit
        summary = ix_tool(proxy, "project_summary")
        assert ix_languages(summary) == {"python": 1, "javascript": 1, "tsx": 1, "go": 1, "rust": 1, "java": 1,
                                         "ruby": 1}, summary["languages"]
        assert summary["parser"] == "tree-sitter"

    def test_elixir_and_lua_use_the_regex_fallback(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        ix_write(ws, {
            "lib/greeter.ex": """
                defmodule Greeter do
                  def hello(name) do
                    IO.puts("hi " <> name)
                  end

                  defp whisper(name), do: String.downcase(name)
                end
                """,
            "scripts/math.lua": """
                local function add(a, b)
                  return a + b
                end

                function sub(a, b)
                  return add(a, -b)
                end
                """,
            # Not valid code in any language: must not break the build.
            "lib/broken.ex": "defmodule do do do (((\n\x7f\ufffd def\n",
            "app.py": "def py_side():\n    return 1\n",
        })
        proxy = make_proxy(ix_env(tmp_path, ws))
        stats = ix_tool(proxy, "workspace_index_rebuild")
        assert stats["files"] == 4 and not stats["errors"], stats
        assert [(d["kind"], d["file"], d["line"], d["language"]) for d in ix_defs(proxy, "Greeter")] == [
            ("module", "lib/greeter.ex", 1, "elixir")]
        assert [(d["kind"], d["file"], d["line"]) for d in ix_defs(proxy, "hello")] == [("function", "lib/greeter.ex", 2)]
        assert [d["line"] for d in ix_defs(proxy, "whisper")] == [6]
        assert [(d["kind"], d["file"], d["line"], d["language"]) for d in ix_defs(proxy, "add")] == [
            ("function", "scripts/math.lua", 1, "lua")]
        assert [d["line"] for d in ix_defs(proxy, "sub", language="lua")] == [5]
        assert ix_defs(proxy, "py_side")[0]["language"] == "python"
        languages = ix_languages(ix_tool(proxy, "project_summary"))
        assert languages == {"elixir": 2, "lua": 1, "python": 1}, languages

    def test_without_tree_sitter_everything_uses_the_regex_fallback(self, tmp_path, make_proxy):
        shim = tmp_path / "no-tree-sitter"
        ix_write(shim, {"tree_sitter.py": 'raise ImportError("tree_sitter hidden by the test")\n'})
        check = subprocess.run([sys.executable, "-c", "import tree_sitter"], env={**os.environ, "PYTHONPATH": str(shim)},
                               capture_output=True, text=True, timeout=30)
        assert check.returncode != 0 and "hidden by the test" in check.stderr  # the shim really hides it
        ws = tmp_path / "ws"
        ix_write(ws, {
            "py/app.py": """
                class Service:
                    def handle(self):
                        return py_helper()

                def py_helper():
                    return 1
                """,
            "ts/util.ts": """
                export function tsFormat(n: number): string { return String(n); }
                export interface TsShape { w: number }
                """,
            "js/w.js": "function jsThing() { return 1; }\n",
            "go/main.go": "package main\n\nfunc GoMain() {}\n\ntype GoBox struct{}\n",
            "rs/lib.rs": "pub fn rs_go() {}\npub struct RsBox;\n",
            "rb/x.rb": "class RbThing\n  def rb_call\n  end\nend\n",
            "ex/y.ex": "defmodule ExMod do\n  def ex_fun, do: 1\nend\n",
        })
        proxy = make_proxy(ix_env(tmp_path, ws, PYTHONPATH=str(shim)))
        stats = ix_tool(proxy, "workspace_index_rebuild")
        assert stats["parser"] == "regex" and stats["files"] == 7 and not stats["errors"], stats
        expected = {"Service": "py/app.py", "handle": "py/app.py", "py_helper": "py/app.py", "tsFormat": "ts/util.ts",
                    "TsShape": "ts/util.ts", "jsThing": "js/w.js", "GoMain": "go/main.go", "GoBox": "go/main.go",
                    "rs_go": "rs/lib.rs", "RsBox": "rs/lib.rs", "RbThing": "rb/x.rb", "rb_call": "rb/x.rb",
                    "ExMod": "ex/y.ex", "ex_fun": "ex/y.ex"}
        missing = {name: file for name, file in expected.items() if [d["file"] for d in ix_defs(proxy, name)] != [file]}
        assert not missing, missing
        assert ix_defs(proxy, "Service")[0]["kind"] == "class"
        assert ix_defs(proxy, "py_helper")[0]["kind"] == "function"
        summary = ix_tool(proxy, "project_summary")
        assert summary["parser"].startswith("regex"), summary["parser"]
        assert summary["symbols"] >= len(expected)
        got = ix_tool(proxy, "workspace_goto_definition", {"file": "py/app.py", "line": 3, "column": 17})
        assert got["name"] == "py_helper" and got["definitions"][0]["line"] == 5, got

    def test_git_crawl_honours_gitignore_and_includes_untracked(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        ix_write(ws, {
            ".gitignore": "generated/\n*.gen.py\nsecrets.py\n",
            "src/tracked.py": "def tracked_symbol():\n    return 1\n",
            "src/also_tracked.py": "def second_tracked():\n    return 2\n",
        })
        ix_git(ws, "init", "-q")
        ix_git(ws, "add", "-A")
        ix_git(ws, "commit", "-q", "-m", "initial")
        ix_write(ws, {
            "src/untracked_new.py": "def untracked_symbol():\n    return 3\n",
            "generated/out.py": "def ignored_generated():\n    return 4\n",
            "src/schema.gen.py": "def ignored_by_glob():\n    return 5\n",
            "secrets.py": "def ignored_secret():\n    return 6\n",
            "node_modules/dep/index.js": "function inNodeModules() {}\n",
        })
        (ws / "src/also_tracked.py").unlink()  # deleted in the worktree, still in git's index
        proxy = make_proxy(ix_env(tmp_path, ws))
        stats = ix_tool(proxy, "workspace_index_rebuild")
        assert not stats["errors"], stats
        assert [d["file"] for d in ix_defs(proxy, "tracked_symbol")] == ["src/tracked.py"]
        assert [d["file"] for d in ix_defs(proxy, "untracked_symbol")] == ["src/untracked_new.py"]
        for name in ("ignored_generated", "ignored_by_glob", "ignored_secret", "inNodeModules", "second_tracked"):
            assert ix_search(proxy, name) == [], name
        summary = ix_tool(proxy, "project_summary")
        dirs = dict(summary["key_directories"])
        assert "generated" not in dirs and "node_modules" not in dirs and "lynkr-state" not in dirs, dirs
        # .gitignore, src/tracked.py, src/untracked_new.py (+ CLAUDE.md the rebuild wrote is not there yet).
        assert stats["files"] == 3, stats

    def test_plain_folder_crawl_skips_vendor_and_build_folders(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        ix_write(ws, {
            ".gitignore": "# local ignores\nscratch/\n*.tmp.py\n",
            "src/keep.py": "def kept_symbol():\n    return 1\n",
            "src/deep/nested/keep2.ts": "export function keptTs(): void {}\n",
            "node_modules/left-pad/index.js": "function leftPadInModules() {}\n",
            "build/lib/copy.py": "def in_build_dir():\n    pass\n",
            "dist/bundle.js": "function inDist() {}\n",
            "target/debug/x.rs": "fn in_target() {}\n",
            ".venv/lib/site.py": "def in_venv():\n    pass\n",
            "vendor/github.com/x/y.go": "package y\nfunc InVendor() {}\n",
            "__pycache__/keep.cpython-312.py": "def in_pycache():\n    pass\n",
            "scratch/notes.py": "def in_scratch():\n    pass\n",
            "src/draft.tmp.py": "def in_tmp_glob():\n    pass\n",
        })
        proxy = make_proxy(ix_env(tmp_path, ws))
        stats = ix_tool(proxy, "workspace_index_rebuild")
        assert not stats["errors"], stats
        assert [d["file"] for d in ix_defs(proxy, "kept_symbol")] == ["src/keep.py"]
        assert [d["file"] for d in ix_defs(proxy, "keptTs")] == ["src/deep/nested/keep2.ts"]
        for name in ("leftPadInModules", "in_build_dir", "inDist", "in_target", "in_venv", "InVendor", "in_pycache",
                     "in_scratch", "in_tmp_glob"):
            assert ix_search(proxy, name) == [], name
        assert stats["files"] == 3, stats  # .gitignore and the two kept sources

    def test_binaries_and_oversized_files_are_skipped(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        ix_write(ws, {
            "src/ok.py": "def normal_symbol():\n    return 1\n",
            # Looks like code, but a NUL byte early marks it binary.
            "src/blob.py": b"def in_binary_file():\n    return 1\n\x00\x01\x02" + bytes(range(256)) * 8,
            "assets/logo.png": base64.b64decode(PNG_B64),
            # Over the 1 MiB cap (generated or data): skipped even though it is text.
            "src/huge.py": "def in_huge_file():\n    pass\n" + "# filler line for size\n" * 46_000,
        })
        assert (ws / "src/huge.py").stat().st_size > 1024 * 1024
        proxy = make_proxy(ix_env(tmp_path, ws))
        stats = ix_tool(proxy, "workspace_index_rebuild")
        assert stats["files"] == 1 and not stats["errors"], stats
        assert [d["file"] for d in ix_defs(proxy, "normal_symbol")] == ["src/ok.py"]
        assert ix_search(proxy, "in_binary_file") == [] and ix_search(proxy, "in_huge_file") == []
        summary = ix_tool(proxy, "project_summary")
        assert summary["files"] == 1 and ix_languages(summary) == {"python": 1}, summary
        # Still skipped on the next (incremental) rebuild; the CLAUDE.md the first one wrote is never indexed
        # (its generated block would otherwise count itself and change on every rebuild).
        again = ix_tool(proxy, "workspace_index_rebuild")
        assert again["files"] == 1 and again["parsed"] == 0, again
        assert ix_search(proxy, "in_binary_file") == [] and ix_search(proxy, "in_huge_file") == []

    @pytest.mark.parametrize("use_git", [True, False], ids=["git", "plain"])
    def test_lynkr_data_dir_is_never_indexed(self, tmp_path, make_proxy, use_git):
        ws = tmp_path / "ws"
        ix_write(ws, {"src/app.py": "def app_symbol():\n    return 1\n"})
        if use_git:
            ix_git(ws, "init", "-q")
        proxy = make_proxy(ix_env(tmp_path, ws, LYNKR_DATA_DIR=str(ws / "state")))
        # lynkr's own files plus something that looks like code, as if a tool had left it there.
        ix_write(ws, {"state/leaked.py": "def leaked_from_data_dir():\n    return 1\n"})
        ix_tool(proxy, "workspace_test_history")  # make sure the session store exists in the data dir
        assert any((ws / "state").iterdir())
        stats = ix_tool(proxy, "workspace_index_rebuild")
        assert stats["files"] == 1, stats  # src/app.py only
        assert ix_search(proxy, "leaked_from_data_dir") == []
        assert [d["file"] for d in ix_defs(proxy, "app_symbol")] == ["src/app.py"]
        summary = ix_tool(proxy, "project_summary")
        assert [d for d, _n in summary["key_directories"]] == ["src"], summary["key_directories"]
        assert "state" not in ix_claude_block(ws)

    def test_project_summary_latest_test_run_and_coverage_note(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        ix_write(ws, {
            "calc.py": "def add(a, b):\n    return a + b\n",
            "run_tests.py": """
                import sys
                print("collected 4 items")
                print("3 passed, 1 failed in 0.02s")
                sys.exit(1)
                """,
        })
        proxy = make_proxy(ix_env(tmp_path, ws, WORKSPACE_TEST_COMMAND="python run_tests.py",
                                  WORKSPACE_TEST_COVERAGE_FILES="coverage.json"))
        before = ix_tool(proxy, "project_summary")
        assert before["latest_test_run"] is None, before
        assert "coverage.json" in before["coverage_note"] and "missing" in before["coverage_note"], before

        run = ix_tool(proxy, "workspace_test_run")
        assert isinstance(run, str) and "3 passed, 1 failed" in run  # summary JSON + output
        summary = ix_tool(proxy, "project_summary")
        check_expectations(summary, {"latest_test_run.command": "python run_tests.py",
                                     "latest_test_run.passed": False, "latest_test_run.exit_code": 1,
                                     "latest_test_run.counts.passed": 3, "latest_test_run.counts.failed": 1})
        assert "coverage.json" in summary["coverage_note"]
        ix_tool(proxy, "workspace_index_rebuild")
        block = ix_claude_block(ws)
        assert "coverage.json" in block, block

        # A newer passing run with coverage written: the summary shows the newest run and no coverage note.
        ix_write(ws, {"run_tests.py": """
            import json
            json.dump({"totals": {"percent_covered": 87.5}}, open("coverage.json", "w"))
            print("4 passed in 0.01s")
            """})
        ix_tool(proxy, "workspace_test_run")
        summary = ix_tool(proxy, "project_summary")
        check_expectations(summary, {"latest_test_run.passed": True, "latest_test_run.exit_code": 0,
                                     "latest_test_run.counts.passed": 4, "coverage_note": None})
        assert summary["latest_test_run"]["id"] > 1

    def test_project_summary_without_coverage_configured_says_so(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        ix_write(ws, {"main.py": "def main():\n    pass\n"})
        proxy = make_proxy(ix_env(tmp_path, ws))
        summary = ix_tool(proxy, "project_summary")  # builds the index on first use
        assert summary["files"] == 1 and summary["symbols"] == 1, summary
        assert summary["latest_test_run"] is None
        assert "WORKSPACE_TEST_COVERAGE_FILES" in summary["coverage_note"], summary["coverage_note"]

    def test_frameworks_and_tooling_from_manifests_in_subfolders(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        files: dict[str, str | bytes] = {f"docs/page_{i:02}.md": f"# page {i}\n" for i in range(40)}
        files.update({
            "apps/web/package.json": json.dumps({
                "name": "web", "private": True,
                "scripts": {"dev": "next dev", "build": "next build", "test": "jest", "lint": "eslint ."},
                "dependencies": {"react": "^18.2.0", "next": "14.1.0", "express": "^4.18.2"},
                "devDependencies": {"eslint": "^8.56.0", "prettier": "^3.2.0", "jest": "^29.7.0"},
            }, indent=2),
            "services/api/pyproject.toml": """
                [project]
                name = "api"
                version = "0.1.0"
                dependencies = [
                    "Django>=4.2,<5",
                    "requests",
                ]

                [project.optional-dependencies]
                test = ["pytest>=8.0", "pytest-cov"]

                [tool.ruff]
                line-length = 100

                [tool.pytest.ini_options]
                testpaths = ["tests"]
                """,
            "services/worker/requirements.txt": "flask==3.0.0\ncelery>=5\n# comment\n",
            "tools/cli/go.mod": """
                module example.com/cli

                go 1.22

                require (
                	github.com/spf13/cobra v1.8.0
                	github.com/gin-gonic/gin v1.9.1
                )
                """,
            "crates/core/Cargo.toml": """
                [package]
                name = "core"
                version = "0.1.0"
                edition = "2021"

                [dependencies]
                tokio = { version = "1", features = ["full"] }
                serde = "1.0"
                """,
            "ruby/shop/Gemfile": """
                source "https://rubygems.org"
                gem "rails", "~> 7.1"
                group :test do
                  gem "rspec-rails"
                  gem 'rspec'
                end
                gem "rubocop", require: false
                """,
        })
        ix_write(ws, files)
        proxy = make_proxy(ix_env(tmp_path, ws))
        ix_tool(proxy, "workspace_index_rebuild")
        summary = ix_tool(proxy, "project_summary")
        want_frameworks = {"React", "Next.js", "Express", "Django", "pytest", "Flask", "Celery", "Cobra", "Gin", "Tokio",
                           "Serde", "Rails", "RSpec"}
        assert want_frameworks <= set(summary["frameworks"]), sorted(want_frameworks - set(summary["frameworks"]))
        assert {"ESLint", "Prettier", "ruff", "RuboCop"} <= set(summary["lint_and_style"]), summary["lint_and_style"]
        assert {"apps/web/package.json", "services/api/pyproject.toml", "services/worker/requirements.txt",
                "tools/cli/go.mod", "crates/core/Cargo.toml", "ruby/shop/Gemfile"} <= set(summary["manifests"])
        commands = summary["commands"]
        assert "test" in commands and "build" in commands, commands
        block = ix_claude_block(ws)
        for label in ("React", "Next.js", "Django", "Rails", "ESLint", "ruff"):
            assert label in block, (label, block)

    def test_commands_detected_from_package_json_then_makefile(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        ix_write(ws, {
            "package.json": json.dumps({"name": "x", "scripts": {"test": "vitest run", "build": "vite build",
                                                                 "lint": "eslint src"},
                                        "devDependencies": {"vitest": "^1.0.0", "vite": "^5.0.0"}}),
            "src/index.js": "export function start() {}\n",
        })
        proxy = make_proxy(ix_env(tmp_path, ws))
        ix_tool(proxy, "workspace_index_rebuild")
        summary = ix_tool(proxy, "project_summary")
        check_expectations(summary, {"commands.test": "npm test", "commands.build": "npm run build",
                                     "commands.lint": "npm run lint"})
        assert {"Vitest", "Vite"} <= set(summary["frameworks"])
        block = ix_claude_block(ws)
        assert "`npm test`" in block and "`npm run build`" in block, block

        (ws / "package.json").unlink()
        ix_write(ws, {"Makefile": "CC=cc\n\nbuild: main.o\n\t$(CC) -o app main.o\n\ntest: build\n\t./run-tests\n\n"
                                  "lint:\n\tclang-tidy main.c\n\n.PHONY: build test lint\n",
                      "main.c": "int main(void) { return 0; }\n"})
        ix_tool(proxy, "workspace_index_rebuild")
        summary = ix_tool(proxy, "project_summary")
        check_expectations(summary, {"commands.test": "make test", "commands.build": "make build",
                                     "commands.lint": "make lint"})
        assert "Vitest" not in summary["frameworks"]
        block = ix_claude_block(ws)
        assert "`make test`" in block and "npm" not in block, block

    def test_claude_md_created_then_hand_written_text_kept_byte_for_byte(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        ix_write(ws, {"core/engine.py": "def run_engine():\n    return 1\n"})
        proxy = make_proxy(ix_env(tmp_path, ws))
        claude = ws / "CLAUDE.md"
        assert not claude.exists()
        result = ix_tool(proxy, "workspace_index_rebuild")
        assert result["claude_md"] == "CLAUDE.md" and claude.is_file(), result
        created = claude.read_text(encoding="utf-8")
        assert created.count("<!-- lynkr:begin") == 1 and created.count("<!-- lynkr:end generated -->") == 1
        assert "python" in ix_claude_block(ws) and "core/" in ix_claude_block(ws)
        # No workspace change: the block settles (the first rebuild after creation also indexes CLAUDE.md itself).
        ix_tool(proxy, "workspace_index_rebuild")
        settled = claude.read_bytes()
        ix_tool(proxy, "workspace_index_rebuild")
        assert claude.read_bytes() == settled

        # A person edits around the block (CRLF, non-ASCII, no final newline); lynkr regenerates the block only.
        text = claude.read_bytes()
        begin = text.index(b"<!-- lynkr:begin")
        end = text.index(b"<!-- lynkr:end generated -->") + len(b"<!-- lynkr:end generated -->")
        head = "# Our project\r\n\r\nRules: tabs \u2192 never. Caf\u00e9 ✓\r\n\r\n".encode()
        tail = "\n\n## Hand-written after\r\n- keep me exactly   \n\u00a0trailing".encode()
        claude.write_bytes(head + text[begin:end] + tail)
        ix_write(ws, {"newdir/feature.go": "package feature\n\nfunc Feature() {}\n"})
        ix_tool(proxy, "workspace_index_rebuild")
        regenerated = claude.read_bytes()
        assert regenerated.startswith(head + b"<!-- lynkr:begin"), regenerated[:300]
        assert regenerated.endswith(b"<!-- lynkr:end generated -->" + tail), regenerated[-300:]
        assert "newdir/" in ix_claude_block(ws) and "go (" in ix_claude_block(ws)
        assert regenerated.count(b"<!-- lynkr:begin") == 1

    def test_claude_md_without_block_gets_it_appended(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        original = "# Team notes\n\nAlways run `make check` before pushing.\n\n- second rule: \u00fcber-careful\n"
        ix_write(ws, {"app.py": "def app():\n    pass\n"})
        (ws / "CLAUDE.md").write_text(original, encoding="utf-8")
        proxy = make_proxy(ix_env(tmp_path, ws))
        ix_tool(proxy, "workspace_index_rebuild")
        content = (ws / "CLAUDE.md").read_text(encoding="utf-8")
        assert content.startswith(original), content
        rest = content[len(original):]
        assert rest.lstrip("\n").startswith("<!-- lynkr:begin"), rest
        assert content.rstrip("\n").endswith("<!-- lynkr:end generated -->")
        # A second rebuild does not append another block.
        ix_write(ws, {"more.py": "def more():\n    pass\n"})
        ix_tool(proxy, "workspace_index_rebuild")
        again = (ws / "CLAUDE.md").read_text(encoding="utf-8")
        assert again.startswith(original) and again.count("<!-- lynkr:begin") == 1, again

    def test_index_on_start_writes_claude_md_after_readiness(self, tmp_path, make_proxy):
        ws = tmp_path / "ws"
        files: dict[str, str | bytes] = {f"src/m{i:03}.py": f"def start_sym_{i:03}():\n    return {i}\n"
                                         for i in range(150)}
        files["CLAUDE.md"] = "Hand-written intro.\n"
        ix_write(ws, files)
        proxy = make_proxy(ix_env(tmp_path, ws, LYNKR_INDEX_ON_START="true"))
        # Ready and answering before (or while) the index is built.
        assert proxy.call("GET", "/v1/tools").status == 200
        done = proxy.wait_log(lambda o: o.get("msg") in ("index updated", "index update failed"), timeout=60,
                              what="the startup index")
        assert done["msg"] == "index updated", done
        messages = [o.get("msg") for o in proxy.logs()]
        assert messages.index("listening") < messages.index("index updated"), messages
        content = (ws / "CLAUDE.md").read_text(encoding="utf-8")
        assert content.startswith("Hand-written intro.\n") and "<!-- lynkr:begin" in content, content
        assert "src/" in ix_claude_block(ws)
        # The startup rebuild built the index the tools use.
        assert [d["file"] for d in ix_defs(proxy, "start_sym_042")] == ["src/m042.py"]

    @pytest.mark.parametrize("files", [3, 90], ids=["inline", "process-pool"])
    def test_index_timeout_stops_the_rebuild_and_keeps_its_progress(self, tmp_path, make_proxy, files):
        # Past LYNKR_INDEX_TIMEOUT_MS the rebuild stops and says so; what it finished is kept (each
        # file whole), everything indexed before still answers, and the next rebuild goes on from there.
        ws = tmp_path / "ws"
        ix_write(ws, {"old/kept.py": "def kept_symbol():\n    return 1\n"})
        first = make_proxy(ix_env(tmp_path, ws, LYNKR_CLAUDE_MD="false"))
        assert ix_tool(first, "workspace_index_rebuild")["parsed"] == 1
        first.stop()
        ix_write(ws, {f"new/m{i:03}.py": "".join(f"def new_{i:03}_{k}(x):\n    return x + {k}\n" for k in range(40))
                      for i in range(files)})
        p = make_proxy(ix_env(tmp_path, ws, LYNKR_CLAUDE_MD="false", LYNKR_INDEX_TIMEOUT_MS="1"))
        text, is_error = ix_tool_raw(p, "workspace_index_rebuild")
        assert is_error and "LYNKR_INDEX_TIMEOUT_MS" in str(text) and "the next rebuild goes on" in str(text), text
        assert [d["file"] for d in ix_defs(p, "kept_symbol")] == ["old/kept.py"]
        p.stop()
        env = base_env(tmp_path, ix_env(tmp_path, ws, LYNKR_INDEX_TIMEOUT_MS="1"))
        cli = run_lynkr(tmp_path, env=env, args=("index",), timeout=60)
        assert cli.returncode == 1 and "LYNKR_INDEX_TIMEOUT_MS" in cli.stderr, (cli.returncode, cli.stderr[-500:])
        db = sqlite3.connect(ws / "lynkr-state" / "index.db")
        try:
            kept = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            db.close()
        done = make_proxy(ix_env(tmp_path, ws, LYNKR_CLAUDE_MD="false"))
        rest = ix_tool(done, "workspace_index_rebuild")
        assert rest["files"] == files + 1 and rest["parsed"] == files + 1 - kept, (rest, kept)
        assert rest["symbols"] == 1 + 40 * files, rest
        assert [d["file"] for d in ix_defs(done, f"new_{files - 1:03}_39")] == [f"new/m{files - 1:03}.py"]

    def test_shutdown_stops_a_running_startup_rebuild(self, tmp_path, make_proxy):
        # SIGTERM while the start-up index of a large tree is being built: lynkr exits promptly (the
        # rebuild stops) instead of finishing the parse first; what it finished is kept, consistent,
        # and the next rebuild parses only the rest.
        import sysconfig

        ws = tmp_path / "ws"
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        for src in sorted(stdlib.rglob("*.py")):
            rel = src.relative_to(stdlib)
            if rel.parts[0] in ("site-packages", "test", "idlelib") or "__pycache__" in rel.parts:
                continue
            dest = ws / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        p = make_proxy(ix_env(tmp_path, ws, LYNKR_INDEX_ON_START="true", LYNKR_CLAUDE_MD="false"))
        time.sleep(1.0)  # the rebuild is under way (a full parse of this tree takes several seconds)
        assert not any(o.get("msg") in ("index updated", "index update failed") for o in p.logs()), \
            "the tree was indexed too fast to test shutdown during a rebuild"
        started = time.monotonic()
        assert p.stop() == 0
        took = time.monotonic() - started
        assert took < 5, f"shutdown waited {took:.1f} s for the rebuild"
        db = sqlite3.connect(ws / "lynkr-state" / "index.db")
        try:
            kept = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            assert {"symbols_file", "symbols_name_exact", "refs_name", "refs_file"} <= indexes, indexes
        finally:
            db.close()
        again = make_proxy(ix_env(tmp_path, ws, LYNKR_CLAUDE_MD="false"))
        rest = ix_tool(again, "workspace_index_rebuild")
        assert not rest["errors"] and rest["parsed"] == rest["files"] - kept, (rest, kept)

    def test_cli_index_prints_summary_and_exits_zero(self, tmp_path):
        ws = tmp_path / "ws"
        ix_write(ws, {
            "pyproject.toml": '[project]\nname = "demo"\ndependencies = ["fastapi>=0.110"]\n\n[tool.pytest.ini_options]\n',
            "demo/api.py": "def serve():\n    return 1\n\nclass Api:\n    def get(self):\n        return serve()\n",
        })
        env = base_env(tmp_path, ix_env(tmp_path, ws))
        first = run_lynkr(tmp_path, env=env, args=("index",), timeout=60)
        assert first.returncode == 0, first.stderr
        head, _, rest = first.stdout.partition("\n")
        assert re.match(r"indexed 2 files \(2 parsed, 0 removed\) in [\d.]+ s: 3 symbols, \d+ references "
                        r"\[tree-sitter\]$", head), first.stdout[:500]
        summary = json.loads(rest)
        assert summary["files"] == 2 and summary["symbols"] == 3, summary
        assert "FastAPI" in summary["frameworks"] and summary["commands"]["test"] == "python -m pytest", summary
        assert (ws / "CLAUDE.md").is_file() and "FastAPI" in ix_claude_block(ws)
        # The next run is incremental: nothing changed (CLAUDE.md, written by the first run, is not indexed).
        second = run_lynkr(tmp_path, env=env, args=("index",), timeout=60)
        assert second.returncode == 0, second.stderr
        assert second.stdout.startswith("indexed 2 files (0 parsed, 0 removed)"), second.stdout[:300]


# -- references --


class TestReferencesPerDefinition:
    def test_each_definition_with_its_own_references(self, make_proxy, tmp_path):
        files = {
            "src/util.ts": "export function formatPrice(n: number): string {\n  return '$' + n;\n}\n",
            "src/app.ts": "import { formatPrice } from './util';\nconsole.log(formatPrice(1));\n",
            "src/other.ts": "import { formatPrice } from './util';\nexport const x = formatPrice(2);\n",
            "legacy/money.ts": "export function formatPrice(n: number): string {\n  return n.toFixed(2);\n}\n",
        }
        ix_write(tmp_path, files)
        p = make_proxy({"LYNKR_TOOLS": "*"})
        tool_ok(p.port, "workspace_index_rebuild", {})
        out = json.loads(tool_ok(p.port, "workspace_symbol_references", {"name": "formatPrice"}))
        by_file = {d["file"]: d for d in out["definitions"]}
        assert set(by_file) == {"src/util.ts", "legacy/money.ts"}, out
        assert sorted(by_file["src/util.ts"]["references"]) == ["src/app.ts", "src/other.ts"]
        assert by_file["legacy/money.ts"]["references"] == {}
        assert out["definition"]["file"] == "src/util.ts" and len(out["references"]) == 2  # the most referenced first
        narrowed = json.loads(tool_ok(p.port, "workspace_symbol_references",
                                      {"name": "formatPrice", "file": "legacy/money.ts"}))
        assert [d["file"] for d in narrowed["definitions"]] == ["legacy/money.ts"] and narrowed["reference_count"] == 0


class TestPythonReferencesThroughModules:
    """Uses of a module's function through the module, as the standard library writes them, under a
    Lib/ folder as in a CPython checkout."""

    def test_module_attribute_uses_are_found(self, make_proxy, tmp_path):
        files = {
            "Lib/urllib/__init__.py": "",
            "Lib/urllib/request.py": "def urlopen(url):\n    return url\n",
            "Lib/a.py": "import urllib.request\nurllib.request.urlopen('x')\n",
            "Lib/b.py": "from urllib import request\nrequest.urlopen('x')\n",
            "Lib/c.py": "import urllib.request as ur\nur.urlopen('x')\n",
            "Lib/d.py": "from urllib.request import urlopen\nopener = urlopen\n",
            "Lib/e.py": "import urllib.request\n\ndef urlopen(u):\n    return urllib.request.urlopen(u)\n",
            "Lib/unrelated.py": "def urlopen(u):\n    return u\n\nurlopen(1)\n",
            "Lib/noimport.py": "x = 1\n",
        }
        ix_write(tmp_path, files)
        p = make_proxy({"LYNKR_TOOLS": "*"})
        tool_ok(p.port, "workspace_index_rebuild", {})
        out = json.loads(tool_ok(p.port, "workspace_symbol_references",
                                 {"name": "urlopen", "file": "Lib/urllib/request.py"}))
        found = set(out["references"])
        assert {"Lib/a.py", "Lib/b.py", "Lib/c.py", "Lib/d.py", "Lib/e.py"} <= found, found
        assert "Lib/unrelated.py" not in found and "Lib/noimport.py" not in found, found


# -- nothing is read through a symlink that leads out --


class TestIndexConfinement:
    def test_symlinks_out_are_neither_indexed_nor_copied_into_claude_md(self, make_proxy, tmp_path):
        ws, outside = tmp_path / "ws", tmp_path / "outside"
        ws.mkdir()
        outside.mkdir()
        (outside / "secret.py").write_text("def outside_secret_fn():\n    return 'OUTSIDE-CODE'\n")
        (outside / "package.json").write_text(json.dumps({"name": "outside-pkg", "scripts": {"test": "echo X"},
                                                          "dependencies": {"outside-only-dep": "1.0.0"}}))
        (outside / "notes.md").write_text("OUTSIDE-NOTES must never be copied into the workspace\n")
        (ws / "app.py").write_text("def inside_fn():\n    return 1\n")
        (ws / "leak.py").symlink_to(outside / "secret.py")
        (ws / "package.json").symlink_to(outside / "package.json")
        (ws / "CLAUDE.md").symlink_to(outside / "notes.md")
        p = make_proxy({"LYNKR_TOOLS": "*", "WORKSPACE_ROOT": str(ws), "LYNKR_DATA_DIR": str(tmp_path / "state")},
                       cwd=ws)
        result = json.loads(tool_ok(p.port, "workspace_index_rebuild", {}))
        assert "symlink" in result.get("claude_md_error", ""), result
        found = tool_ok(p.port, "workspace_symbol_search", {"query": "outside_secret_fn"})
        assert "leak.py" not in found and "outside_secret_fn" not in found.replace('"query"', ""), found
        assert "inside_fn" in tool_ok(p.port, "workspace_symbol_search", {"query": "inside_fn"})
        assert (ws / "CLAUDE.md").is_symlink()
        assert (outside / "notes.md").read_text().startswith("OUTSIDE-NOTES")
        assert "outside-only-dep" not in json.dumps(result) and "outside-pkg" not in json.dumps(result)
        assert not list(ws.glob("*.md.*")) and not list(ws.glob(".lynkr-*"))


# -- lynkr's CLAUDE.md never dirties the user's repository --


class TestClaudeMdStaysOutOfTheWay:
    def test_gate_flow_with_startup_indexing(self, gws):
        assert not (gws.repo / "CLAUDE.md").exists()
        p = gws.start(LYNKR_INDEX_ON_START="true", POLICY_GIT_REQUIRE_TESTS="true", POLICY_GIT_ALLOW_PUSH="true",
                      WORKSPACE_TEST_COMMAND=gws.runner())
        wait_for(lambda: (gws.repo / "CLAUDE.md").exists(), 30, "the generated CLAUDE.md")
        assert "CLAUDE.md" not in gws.git("status", "--porcelain", "--untracked-files=all"), "lynkr dirtied the repo"
        gws.write("src/app.py", "def main():\n    return 2\n")
        gws.ok("workspace_git_stage", {"paths": ["src/app.py"]})
        run = gws.run_tests()
        assert run["passed"] is True and run["checkout"] == "clean", run
        assert gws.ok("workspace_git_commit", {"message": "change main"}).startswith("committed")
        assert gws.git("show", "--name-only", "--format=", "HEAD").split() == ["src/app.py"]
        assert "pushed" in gws.ok("workspace_git_push", {}) or gws.remote_head() == gws.head()
        assert gws.git("status", "--porcelain").strip() == ""
        # the user can still adopt it
        gws.git("add", "-f", "CLAUDE.md")
        assert "CLAUDE.md" in gws.staged()
        assert p.proc.poll() is None

    def test_tracked_claude_md_with_the_users_edits_is_left_alone(self, gws):
        gws.write("CLAUDE.md", "# Notes\n")
        gws.commit_all("add CLAUDE.md")
        gws.write("CLAUDE.md", "# Notes\n\nmy unsaved thoughts\n")
        gws.start(LYNKR_TOOLS="*")
        result = json.loads(gws.ok("workspace_index_rebuild", {}))
        assert "uncommitted changes" in result.get("claude_md_error", ""), result
        assert (gws.repo / "CLAUDE.md").read_text() == "# Notes\n\nmy unsaved thoughts\n"
        gws.git("checkout", "--", "CLAUDE.md")  # committed as it was: now lynkr may add its block
        result = json.loads(gws.ok("workspace_index_rebuild", {}))
        assert "claude_md_error" not in result and "lynkr" in (gws.repo / "CLAUDE.md").read_text().lower()


# == 17. MCP ==

# -- helpers several of this section's sub-topics use --


def mcp_env(manifest: Path | None = None, **kw: Any) -> dict:
    """Proxy settings for MCP tests: wait for servers before listening (they are fast, the machine may not be)."""
    env = {"LYNKR_INDEX_ON_START": "false", "MCP_READY_WAIT_MS": "30000", "SHUTDOWN_GRACE_MS": "2000",
           # these tests keep manifests in tmp_path, which is also WORKSPACE_ROOT (the confinement tests say no)
           "MCP_ALLOW_WORKSPACE_MANIFEST": "true"}
    if manifest is not None:
        env["MCP_SERVER_MANIFEST"] = str(manifest)
    env.update({k: str(v) for k, v in kw.items()})
    return env


def write_manifest(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def mcp_call(proxy: Proxy, name: str, args: dict | None = None, timeout: float = 60) -> dict:
    r = proxy.call("POST", f"/v1/tools/{name}", args if args is not None else {}, timeout=timeout)
    assert r.status == 200, (r.status, r.data[:2000])
    body = r.json()
    assert set(body) == {"content", "is_error"}, body
    return body


def mcp_text(body: dict) -> str:
    return result_text(body["content"])


def mcp_servers(proxy: Proxy) -> dict[str, dict]:
    body = mcp_call(proxy, "workspace_mcp_servers")
    assert body["is_error"] is False, body
    return {s["name"]: s for s in json.loads(mcp_text(body))["servers"]}


def proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state) of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry)] = (int(fields[1]), fields[0])
    return table


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def descendants(pid: int) -> dict[int, str]:
    """Live (non-zombie) descendants of pid -> their command lines."""
    table = proc_table()
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, state) in table.items():
            if ppid == parent and child not in found and state != "Z":
                found[child] = cmdline(child)
                frontier.append(child)
    return found


def server_pids(proxy: Proxy, needle: str) -> list[int]:
    return [p for p, cmd in descendants(proxy.proc.pid).items() if needle in cmd]


# -- real servers: mcp-server-time from PyPI, server-everything and server-filesystem from npm --


@pytest.fixture(scope="module")
def everything_http(tmp_path_factory):
    """server-everything over streamable HTTP on a free port: (url, process)."""
    if not os.access(MCP_EVERYTHING, os.X_OK):
        yield None
        return
    port = free_port()
    log = (tmp_path_factory.mktemp("everything-http") / "server.log").open("wb")
    proc = subprocess.Popen([str(MCP_EVERYTHING), "streamableHttp"], env={**os.environ, "PORT": str(port)},
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return proc.poll() is not None  # ends the wait; checked below

    wait_for(listening, 30, "server-everything streamableHttp to listen")
    assert proc.poll() is None, f"server-everything streamableHttp exited: {Path(log.name).read_text()[-2000:]}"
    yield f"http://127.0.0.1:{port}/mcp"
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (OSError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="module")
def mcp_stack(tmp_path_factory, everything_http):
    """One proxy with four real servers from a Claude Code style .mcp.json (stdio + {"type": "http"})."""
    need_mcp()
    base = tmp_path_factory.mktemp("mcp-stack")
    fs_root = base / "fs-root"
    (fs_root / "sub").mkdir(parents=True)
    (fs_root / "notes.txt").write_text("MCP filesystem canary 4b1d\nsecond line\n")
    (fs_root / "sub" / "deep.txt").write_text("deep\n")
    manifest = write_manifest(base / "claude" / ".mcp.json", {"mcpServers": {
        "time": {"command": mcp_time_bin()},
        "everything": {"command": str(MCP_EVERYTHING), "args": [], "env": {"LYNKR_TEST_MARKER": "from-manifest"}},
        "fs": {"command": str(MCP_FILESYSTEM), "args": ["${FS_TEST_ROOT}"]},  # ${VAR} as Claude Code expands it
        "every-http": {"type": "http", "url": everything_http},
    }})
    fake = FakeDatabricks()
    proxy = start_proxy(base, {**dbx_env(fake), **mcp_env(manifest, MCP_CALL_TIMEOUT_MS=3000,
                                                           POLICY_DISALLOWED_TOOLS="mcp_time_convert_time",
                                                           FS_TEST_ROOT=fs_root)})
    stack = Stack(fake, proxy)
    stack.manifest, stack.fs_root = manifest, fs_root  # type: ignore[attr-defined]
    yield stack
    proxy.stop()
    fake.close()


@pytest.fixture
def mstack(mcp_stack) -> Stack:
    mcp_stack.fake.reset()
    return mcp_stack


class TestMCPServers:
    def test_servers_start_before_listening_and_are_listed(self, mstack):
        p = mstack.proxy
        logs = p.logs()
        listening = next(i for i, o in enumerate(logs) if o.get("msg") == "listening")
        ready = {o["server"]: i for i, o in enumerate(logs) if o.get("msg") == "MCP server ready"}
        assert set(ready) == {"time", "everything", "fs", "every-http"}, p.stderr[-3000:]
        assert all(i < listening for i in ready.values()), "servers should be ready before 'listening' (MCP_READY_WAIT_MS)"
        assert any(o.get("msg", "").startswith("MCP sandbox inactive") for o in logs), "the host-mode note is missing"
        servers = mcp_servers(p)
        assert {n: (s["status"], s["transport"], s["placement"], s["restarts"]) for n, s in servers.items()} == {
            "time": ("ready", "stdio", "host", 0), "everything": ("ready", "stdio", "host", 0),
            "fs": ("ready", "stdio", "host", 0), "every-http": ("ready", "http", "remote", 0)}
        assert all(s["source"] == str(mstack.manifest) for s in servers.values())
        tools = {t["name"]: t for t in servers["time"]["tools"]}
        assert set(tools) == {"mcp_time_get_current_time", "mcp_time_convert_time"}
        assert tools["mcp_time_get_current_time"]["server_tool"] == "get_current_time"
        assert "timezone" in tools["mcp_time_get_current_time"]["description"]
        assert {"mcp_every-http_echo", "mcp_every-http_get-tiny-image"} <= {t["name"] for t in servers["every-http"]["tools"]}
        assert {"mcp_fs_read_text_file", "mcp_fs_list_directory"} <= {t["name"] for t in servers["fs"]["tools"]}

    def test_get_tools_shows_mcp_tools_with_server_schema(self, mstack):
        r = mstack.proxy.call("GET", "/v1/tools")
        assert r.status == 200, r.data[:500]
        tools = {t["name"]: t for t in r.json()["data"]}
        for name in ("mcp_time_get_current_time", "mcp_everything_echo", "mcp_everything_get-tiny-image",
                     "mcp_fs_read_text_file", "mcp_every-http_echo", "workspace_mcp_servers", "workspace_mcp_call"):
            assert name in tools, sorted(tools)
        assert all(TOOL_NAME.match(n) for n in tools), [n for n in tools if not TOOL_NAME.match(n)]
        t = tools["mcp_time_get_current_time"]
        assert t["enabled"] is True
        assert t["input_schema"]["type"] == "object"
        assert t["input_schema"]["required"] == ["timezone"]
        assert t["input_schema"]["properties"]["timezone"]["type"] == "string"
        assert "IANA" in t["input_schema"]["properties"]["timezone"]["description"]
        assert "Get current time in a specific timezone" in t["description"] and "time" in t["description"]
        echo = tools["mcp_everything_echo"]
        assert echo["input_schema"]["properties"]["message"]["type"] == "string"
        assert echo["input_schema"]["required"] == ["message"]
        assert "Echoes back the input" in echo["description"]
        assert tools["mcp_every-http_echo"]["input_schema"]["properties"] == echo["input_schema"]["properties"]
        assert tools["mcp_everything_get-sum"]["input_schema"]["required"] == ["a", "b"]
        assert tools["mcp_time_convert_time"]["enabled"] is False  # POLICY_DISALLOWED_TOOLS

    def test_time_server_call(self, mstack):
        body = mcp_call(mstack.proxy, "mcp_time_get_current_time", {"timezone": "UTC"})
        assert body["is_error"] is False, body
        assert body["content"][0]["type"] == "text"
        data = json.loads(body["content"][0]["text"])
        assert data["timezone"] == "UTC"
        when = datetime.datetime.fromisoformat(data["datetime"])
        now = datetime.datetime.now(datetime.timezone.utc)
        assert abs((when - now).total_seconds()) < 300, (when, now)

    def test_error_result_from_server(self, mstack):
        body = mcp_call(mstack.proxy, "mcp_time_get_current_time", {"timezone": "Not/AZone"})
        assert body["is_error"] is True, body
        assert "Not/AZone" in mcp_text(body)
        # the server's own refusal, not a transport failure: the next call works
        assert mcp_call(mstack.proxy, "mcp_time_get_current_time", {"timezone": "Europe/Paris"})["is_error"] is False

    def test_schema_checked_before_the_server_is_called(self, mstack):
        body = mcp_call(mstack.proxy, "mcp_everything_get-sum", {"a": 1})
        assert body["is_error"] is True and "b" in mcp_text(body), body

    @pytest.mark.parametrize("server", ["everything", "every-http"])
    def test_everything_stdio_and_streamable_http(self, mstack, server):
        body = mcp_call(mstack.proxy, f"mcp_{server}_echo", {"message": f"hello over {server} ✓"})
        assert body == {"content": [{"type": "text", "text": f"Echo: hello over {server} ✓"}], "is_error": False}
        body = mcp_call(mstack.proxy, f"mcp_{server}_get-sum", {"a": 2, "b": 40})
        assert body["is_error"] is False and "42" in mcp_text(body), body

    @pytest.mark.parametrize("server", ["everything", "every-http"])
    def test_image_result_becomes_anthropic_image_block(self, mstack, server):
        body = mcp_call(mstack.proxy, f"mcp_{server}_get-tiny-image")
        assert body["is_error"] is False, body
        images = [b for b in body["content"] if b["type"] == "image"]
        assert len(images) == 1, body["content"]
        src = images[0]["source"]
        assert set(images[0]) == {"type", "source"}
        assert src["type"] == "base64" and src["media_type"] == "image/png"
        assert base64.b64decode(src["data"]).startswith(b"\x89PNG\r\n\x1a\n")
        assert all(b["type"] in ("text", "image") for b in body["content"])

    def test_structured_content(self, mstack):
        body = mcp_call(mstack.proxy, "mcp_everything_get-structured-content", {"location": "Chicago"})
        assert body["is_error"] is False, body
        parsed = [json.loads(b["text"]) for b in body["content"] if b["type"] == "text" and b["text"].startswith("{")]
        assert any({"temperature", "conditions", "humidity"} <= set(d) for d in parsed), body
        # server-filesystem answers text *and* structuredContent {"content": ...}: both reach the model
        body = mcp_call(mstack.proxy, "mcp_fs_read_text_file", {"path": str(mstack.fs_root / "notes.txt")})
        assert body["is_error"] is False, body
        texts_ = [b["text"] for b in body["content"] if b["type"] == "text"]
        assert "MCP filesystem canary 4b1d\nsecond line\n" in texts_, texts_
        assert {"content": "MCP filesystem canary 4b1d\nsecond line\n"} in [
            json.loads(t) for t in texts_ if t.startswith("{")], texts_

    def test_filesystem_server_on_a_temp_dir(self, mstack):
        root = mstack.fs_root
        listing = mcp_text(mcp_call(mstack.proxy, "mcp_fs_list_directory", {"path": str(root)}))
        assert "[FILE] notes.txt" in listing and "[DIR] sub" in listing, listing
        deep = mcp_call(mstack.proxy, "mcp_fs_read_text_file", {"path": str(root / "sub" / "deep.txt")})
        assert deep["is_error"] is False and "deep\n" in mcp_text(deep)
        outside = mcp_call(mstack.proxy, "mcp_fs_read_text_file", {"path": "/etc/hostname"})
        assert outside["is_error"] is True, outside
        assert "denied" in mcp_text(outside).lower() or "outside" in mcp_text(outside).lower(), outside

    def test_manifest_env_reaches_the_server(self, mstack):
        body = mcp_call(mstack.proxy, "mcp_everything_get-env")
        assert body["is_error"] is False
        assert "from-manifest" in mcp_text(body) and "LYNKR_TEST_MARKER" in mcp_text(body)

    def test_hung_call_hits_mcp_call_timeout(self, mstack):
        t0 = time.monotonic()
        body = mcp_call(mstack.proxy, "mcp_everything_trigger-long-running-operation", {"duration": 30, "steps": 1})
        took = time.monotonic() - t0
        assert body["is_error"] is True, body
        assert "timed out" in mcp_text(body) and "MCP_CALL_TIMEOUT_MS" in mcp_text(body), body
        assert 2.5 < took < 20, took  # MCP_CALL_TIMEOUT_MS=3000, not LYNKR_TOOL_TIMEOUT_MS (120 s)
        # the session survives a timed-out call
        assert mcp_call(mstack.proxy, "mcp_everything_echo", {"message": "still here"})["content"][0]["text"] == \
            "Echo: still here"
        assert mcp_servers(mstack.proxy)["everything"]["status"] == "ready"

    def test_workspace_mcp_call(self, mstack):
        p = mstack.proxy
        body = mcp_call(p, "workspace_mcp_call", {"server": "everything", "tool": "get-sum", "arguments": {"a": 7, "b": 5}})
        assert body["is_error"] is False and "12" in mcp_text(body), body
        body = mcp_call(p, "workspace_mcp_call", {"server": "every-http", "tool": "echo", "arguments": {"message": "x"}})
        assert body["content"] == [{"type": "text", "text": "Echo: x"}], body
        body = mcp_call(p, "workspace_mcp_call", {"server": "time", "tool": "get_current_time",
                                                  "arguments": {"timezone": "Asia/Tokyo"}})
        assert body["is_error"] is False and json.loads(mcp_text(body))["timezone"] == "Asia/Tokyo"
        body = mcp_call(p, "workspace_mcp_call", {"server": "nope", "tool": "echo"})
        assert body["is_error"] is True and "nope" in mcp_text(body), body
        body = mcp_call(p, "workspace_mcp_call", {"server": "everything", "tool": "no-such-tool"})
        assert body["is_error"] is True and "no-such-tool" in mcp_text(body), body
        body = mcp_call(p, "workspace_mcp_call", {"server": "time", "tool": "get_current_time",
                                                  "arguments": {"timezone": "Bad/Zone"}})
        assert body["is_error"] is True and "Bad/Zone" in mcp_text(body), body

    def test_policy_disallowed_mcp_tool(self, mstack):
        p = mstack.proxy
        body = mcp_call(p, "mcp_time_convert_time",
                        {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Europe/Paris"})
        assert body["is_error"] is True and "POLICY_DISALLOWED_TOOLS" in mcp_text(body), body
        # workspace_mcp_call is no way around the policy
        body = mcp_call(p, "workspace_mcp_call", {"server": "time", "tool": "convert_time", "arguments": {
            "source_timezone": "UTC", "time": "12:00", "target_timezone": "Europe/Paris"}})
        assert body["is_error"] is True and "POLICY_DISALLOWED_TOOLS" in mcp_text(body), body

    def test_server_stderr_logged_with_server_name(self, mstack):
        p = mstack.proxy
        line = p.wait_log(lambda o: o.get("msg") == "mcp server stderr" and o.get("server") == "everything")
        assert "STDIO" in line["line"], line
        line = p.wait_log(lambda o: o.get("msg") == "mcp server stderr" and o.get("server") == "fs")
        assert line["line"].strip(), line

    @pytest.mark.parametrize("stream", [False, True])
    def test_model_turn_calls_mcp_tool(self, mstack, stream):
        fake, p = mstack.fake, mstack.proxy
        fake.push(*[dbx_tool_turns("mcp_time_get_current_time", {"timezone": "UTC"},
                                   lambda r: f"The time server said: {json.loads(r)['timezone']} {json.loads(r)['datetime'][:4]}")] * 2)
        r = p.post(base_req(stream=stream, messages=[user("What time is it in UTC?")]), timeout=60)
        assert r.status == 200, r.data[:2000]
        msg = r.stream().ok() if stream else r.json()
        year = str(datetime.datetime.now(datetime.timezone.utc).year)
        assert any(f"The time server said: UTC {year}" in t for t in texts(msg)), msg
        assert len(fake.requests) == 2, [q.body for q in fake.requests]
        first, second = fake.requests[0].body, fake.requests[1].body
        offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
        # LYNKR_TOOLS defaults to mcp_*: every MCP tool is offered, minus the disallowed one
        assert "mcp_time_get_current_time" in offered and "mcp_everything_echo" in offered
        assert "mcp_time_convert_time" not in offered
        assert not any(n.startswith("workspace_") for n in offered), sorted(offered)
        assert offered["mcp_time_get_current_time"]["parameters"]["properties"]["timezone"]["type"] == "string"
        results = [m for m in second["messages"] if m["role"] == "tool"]
        assert len(results) == 1 and results[0]["tool_call_id"] == "call_e2e_1"
        assert json.loads(results[0]["content"])["timezone"] == "UTC", results[0]


class TestMCPDiscovery:
    def test_manifest_dirs_formats_and_broken_manifest(self, make_proxy, tmp_path):
        """MCP_MANIFEST_DIRS split on ; : and , (all three in one value), every manifest shape, a broken one skipped."""
        need_mcp()
        d1, d2, d3, d4 = (tmp_path / n for n in ("mcp-a", "mcp b", "mcp-c", "mcp-d"))
        missing = tmp_path / "does-not-exist"
        write_manifest(d1 / "servers.json", {"servers": [
            {"name": "alpha", "command": str(MCP_EVERYTHING), "args": [], "env": {}, "transport": "stdio"}]})
        write_manifest(d2 / "list.json", [{"name": "beta", "command": str(MCP_EVERYTHING), "cwd": str(tmp_path)}])
        broken = write_manifest(d3 / "broken.json", '{"servers": [ {"name": "gamma", ')
        write_manifest(d3 / "no-command.json", {"servers": [{"name": "delta"}]})
        write_manifest(d3 / "ignored.txt", {"servers": [{"name": "epsilon", "command": "false"}]})
        write_manifest(d4 / "claude.json", {"mcpServers": {"zeta": {"command": str(MCP_EVERYTHING), "args": []}}})
        # Claude Code runs the workspace's own .mcp.json itself: lynkr must not read it unasked
        write_manifest(tmp_path / ".mcp.json", {"mcpServers": {"wsonly": {"command": str(MCP_EVERYTHING)}}})
        dirs = f"{d1};{d2}:{d3},{d4};{missing}"
        p = make_proxy(mcp_env(MCP_MANIFEST_DIRS=dirs))
        servers = mcp_servers(p)
        assert set(servers) == {"alpha", "beta", "zeta"}, servers
        assert {s["status"] for s in servers.values()} == {"ready"}, servers
        assert servers["alpha"]["source"] == str(d1 / "servers.json")
        assert servers["beta"]["source"] == str(d2 / "list.json")
        assert servers["zeta"]["source"] == str(d4 / "claude.json")
        skipped = {o["path"]: o for o in p.logs() if o.get("msg") == "skipping MCP manifest"}
        assert str(broken) in skipped, p.stderr[-3000:]
        assert skipped[str(broken)].get("reason"), skipped
        assert str(d3 / "no-command.json") in skipped and "delta" in skipped[str(d3 / "no-command.json")]["reason"]
        for name in ("alpha", "beta", "zeta"):
            assert mcp_call(p, f"mcp_{name}_echo", {"message": name})["content"][0]["text"] == f"Echo: {name}"
        names = {t["name"] for t in p.call("GET", "/v1/tools").json()["data"]}
        assert not any(n.startswith("mcp_wsonly_") for n in names)

    def test_default_manifest_dir_is_claude_mcp(self, make_proxy, tmp_path):
        need_mcp(npm=True)
        write_manifest(tmp_path / "home" / ".claude" / "mcp" / "ev.json",
                       {"servers": [{"name": "ev", "command": str(MCP_EVERYTHING)}]})
        p = make_proxy(mcp_env())  # MCP_MANIFEST_DIRS unset: ~/.claude/mcp (HOME is tmp/home)
        assert mcp_servers(p)["ev"]["status"] == "ready"

    def test_no_manifest_means_no_mcp(self, make_proxy, tmp_path):
        p = make_proxy(mcp_env())
        body = mcp_call(p, "workspace_mcp_servers")
        assert json.loads(mcp_text(body))["servers"] == []
        body = mcp_call(p, "workspace_mcp_call", {"server": "time", "tool": "get_current_time"})
        assert body["is_error"] is True and "MCP_SERVER_MANIFEST" in mcp_text(body), body
        assert not any("MCP sandbox" in o.get("msg", "") for o in p.logs())

    def test_tool_names_sanitised(self):
        import lynkr  # pure function

        assert lynkr.mcp_tool_name("my.server", "do thing/now") == "mcp_my_server_do_thing_now"
        assert lynkr.mcp_tool_name("every-http", "get-sum") == "mcp_every-http_get-sum"
        long_a = lynkr.mcp_tool_name("s" * 40, "t" * 40 + "a")
        long_b = lynkr.mcp_tool_name("s" * 40, "t" * 40 + "b")
        assert len(long_a) <= 64 and len(long_b) <= 64 and long_a != long_b
        assert TOOL_NAME.match(long_a) and TOOL_NAME.match(long_b)


def mcp_wait_status(proxy: Proxy, name: str, pred: Callable[[dict], bool], timeout: float = 30, what: str = "") -> dict:
    return wait_for(lambda: (s := mcp_servers(proxy).get(name)) and pred(s) and s, timeout,
                    what or f"MCP server {name} to reach the expected status")


def alive(pids) -> dict[int, str]:
    table = proc_table()
    return {p: cmdline(p) for p in pids if p in table and table[p][1] != "Z"}


def reap_strays(pids) -> None:
    """Teardown for tests that expect no orphans: kill (by pid) what a failing proxy left behind."""
    for p in alive(pids):
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


class TestMCPLifecycle:
    LIST_CHANGING_SERVER = """
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("listchange")


@server.tool()
async def add_feature(ctx: Context) -> str:
    \"\"\"Register a new tool, then tell the client its tool list changed.\"\"\"
    def feature_tool(x: int) -> int:
        \"\"\"Doubles x.\"\"\"
        return 2 * x

    server.add_tool(feature_tool, name="feature_tool")
    await ctx.session.send_tool_list_changed()
    return "added"


if __name__ == "__main__":
    server.run("stdio")
"""

    def test_tools_relisted_on_list_changed(self, make_proxy, tmp_path):
        need_mcp(npm=False)
        script = tmp_path / "list_changing_server.py"
        script.write_text(self.LIST_CHANGING_SERVER)  # a real MCP server built on the SDK's own server API
        manifest = write_manifest(tmp_path / "m.json", {"servers": [{"name": "lc", "command": sys.executable,
                                                                     "args": [str(script)]}]})
        p = make_proxy(mcp_env(manifest))
        names = lambda: {t["name"] for t in p.call("GET", "/v1/tools").json()["data"]}  # noqa: E731
        assert "mcp_lc_add_feature" in names() and "mcp_lc_feature_tool" not in names()
        assert mcp_call(p, "mcp_lc_add_feature")["is_error"] is False
        wait_for(lambda: "mcp_lc_feature_tool" in names(), 15, "the new tool to be listed after list_changed")
        body = mcp_call(p, "mcp_lc_feature_tool", {"x": 21})
        assert body["is_error"] is False and mcp_text(body).startswith("42"), body

    def test_killed_server_restarts_and_errors_meanwhile(self, make_proxy, tmp_path):
        need_mcp()
        manifest = write_manifest(tmp_path / "m.json", {"servers": [{"name": "ev", "command": str(MCP_EVERYTHING)}]})
        p = make_proxy(mcp_env(manifest))
        assert mcp_call(p, "mcp_ev_echo", {"message": "before"})["is_error"] is False
        pids = server_pids(p, "mcp-server-everything")
        assert len(pids) == 1, descendants(p.proc.pid)
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: not alive(pids), 10, "the killed server to die")
        body = mcp_call(p, "mcp_ev_echo", {"message": "meanwhile"})
        assert body["is_error"] is True, body
        assert "MCP server ev" in mcp_text(body), body
        status = mcp_wait_status(p, "ev", lambda s: s["status"] == "ready" and s["restarts"] >= 1, 40)
        assert status["tools"], status
        p.wait_log(lambda o: o.get("msg") == "MCP server down; restarting" and o.get("server") == "ev")
        body = mcp_call(p, "mcp_ev_echo", {"message": "after"})
        assert body == {"content": [{"type": "text", "text": "Echo: after"}], "is_error": False}, body
        new = server_pids(p, "mcp-server-everything")
        assert len(new) == 1 and new != pids

    def test_shutdown_leaves_no_child_processes(self, tmp_path):
        need_mcp()
        (tmp_path / "fsroot").mkdir()
        manifest = write_manifest(tmp_path / "m.json", {"mcpServers": {
            "time": {"command": mcp_time_bin()}, "everything": {"command": str(MCP_EVERYTHING)},
            "fs": {"command": str(MCP_FILESYSTEM), "args": [str(tmp_path / "fsroot")]}}})
        p = start_proxy(tmp_path, mcp_env(manifest))
        kids = descendants(p.proc.pid)
        try:
            assert {s["status"] for s in mcp_servers(p).values()} == {"ready"}
            assert len(kids) >= 3 and all(any(n in c for c in kids.values())
                                          for n in ("mcp-server-time", "mcp-server-everything", "mcp-server-filesystem"))
            p.proc.send_signal(signal.SIGTERM)
            rc = p.proc.wait(20)
            assert rc == 0, p.stderr[-3000:]
            assert wait_for(lambda: not alive(kids), 5, f"MCP servers to exit: {alive(kids)}") is True
            assert p.logs()[-1].get("msg") == "stopped"
        finally:
            p.stop()
            reap_strays(kids)

    def test_ready_wait_is_bounded_and_shutdown_stops_a_server_stuck_starting(self, tmp_path):
        need_mcp(npm=False)
        manifest = write_manifest(tmp_path / "m.json", {"servers": [
            {"name": "stuck", "command": sys.executable, "args": ["-c", "import time; time.sleep(90)"]},
            {"name": "time", "command": mcp_time_bin()}]})
        t0 = time.monotonic()
        p = start_proxy(tmp_path, mcp_env(manifest, MCP_READY_WAIT_MS=1500, MCP_STARTUP_TIMEOUT_MS=60000))
        took = time.monotonic() - t0
        kids: dict[int, str] = {}
        try:
            assert took < 15, f"listening took {took:.1f}s with MCP_READY_WAIT_MS=1500"
            assert mcp_servers(p)["stuck"]["status"] == "starting"
            body = mcp_call(p, "workspace_mcp_call", {"server": "stuck", "tool": "anything"})
            assert body["is_error"] is True and "stuck" in mcp_text(body) and "starting" in mcp_text(body), body
            mcp_wait_status(p, "time", lambda s: s["status"] == "ready")
            kids = wait_for(lambda: (d := descendants(p.proc.pid)) and len(d) >= 2 and d, 10, "both servers to run")
            t1 = time.monotonic()
            p.proc.send_signal(signal.SIGTERM)
            try:
                rc = p.proc.wait(20)
            except subprocess.TimeoutExpired:
                rc = None
            assert rc == 0, f"lynkr did not exit within 20 s of SIGTERM (rc={rc}); children: {alive(kids)}"
            assert time.monotonic() - t1 < 20
            assert wait_for(lambda: not alive(kids), 5, f"MCP servers to exit: {alive(kids)}") is True
        finally:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(10)
            reap_strays(kids)

    def test_sigterm_while_waiting_for_servers_leaves_no_children(self, tmp_path):
        need_mcp(npm=False)
        manifest = write_manifest(tmp_path / "m.json", {"servers": [
            {"name": "stuck", "command": sys.executable, "args": ["-c", "import time; time.sleep(90)"]}]})
        p = spawn(tmp_path, base_env(tmp_path, mcp_env(manifest, MCP_READY_WAIT_MS=60000)))
        kids: dict[int, str] = {}
        try:
            kids = wait_for(lambda: descendants(p.proc.pid), 20, "the MCP server process to start")
            assert not p.ready.is_set()
            p.proc.send_signal(signal.SIGTERM)
            p.proc.wait(20)  # exit code aside (the default SIGTERM action is acceptable this early) ...
            # ... the servers it started must not outlive it
            assert wait_for(lambda: not alive(kids), 5, f"MCP servers to exit after lynkr ({p.proc.returncode}): "
                            f"{alive(kids)}") is True
        finally:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(10)
            reap_strays(kids)

    def test_missing_sdk_is_reported(self, tmp_path):
        """With a manifest but no `mcp` package the proxy still serves and says what to install."""
        need_mcp(npm=False)
        manifest = write_manifest(tmp_path / "m.json", {"servers": [{"name": "time", "command": mcp_time_bin()}]})
        shadow = tmp_path / "shadow"
        (shadow / "mcp").mkdir(parents=True)
        (shadow / "mcp" / "__init__.py").write_text("raise ImportError('mcp hidden by the test')\n")
        p = start_proxy(tmp_path, mcp_env(manifest, PYTHONPATH=shadow))
        try:
            line = p.wait_log(lambda o: "mcp package is missing" in o.get("msg", ""))
            assert "lynkr[mcp]" in line["msg"]
            assert mcp_servers(p)["time"]["status"] == "unavailable"
            assert not descendants(p.proc.pid)
        finally:
            p.stop()


MCP_PLACEMENT = [
    # (image set, mode, allow, deny) -> {server: placement}
    (False, "auto", (), (), {"alpha": "host", "beta": "host"}),
    (False, "auto", (), ("b*",), {"alpha": "host", "beta": "refused"}),
    (False, "require", ("al*",), (), {"alpha": "host", "beta": "refused"}),
    (False, "require", (), (), {"alpha": "refused", "beta": "refused"}),
    (False, "deny", ("*",), (), {"alpha": "refused", "beta": "refused"}),
    (True, "auto", (), (), {"alpha": "sandbox", "beta": "sandbox"}),
    (True, "auto", ("alpha",), (), {"alpha": "host", "beta": "sandbox"}),
    (True, "require", ("alpha",), ("alpha",), {"alpha": "sandbox", "beta": "sandbox"}),
    (True, "deny", ("alpha",), (), {"alpha": "sandbox", "beta": "sandbox"}),
]


class TestMCPSandbox:
    def _settings(self, **kw: Any):
        import lynkr  # SandboxSettings and sandbox_argv are pure

        return lynkr, lynkr.SandboxSettings(**{"image": "ghcr.io/example/mcp:1", **kw})

    def _argv(self, spec_kw: dict | None = None, **kw: Any) -> list[str]:
        lynkr, settings = self._settings(**kw)
        spec = lynkr.MCPServerSpec(**{"name": "time", "command": "mcp-server-time", "args": ["--local-timezone", "UTC"],
                                      **(spec_kw or {})})
        return lynkr.sandbox_argv(spec, settings, "/srv/work space", "lynkr-mcp-time-abcd")

    @staticmethod
    def _opt(argv: list[str], flag: str) -> list[str]:
        """Values of every `flag value` pair before the `--` that ends runtime options."""
        head = argv[: argv.index("--")]
        return [head[i + 1] for i, a in enumerate(head[:-1]) if a == flag]

    def test_default_argv(self):
        argv = self._argv()
        assert argv[:4] == ["docker", "run", "-i", "--rm"]
        assert self._opt(argv, "--name") == ["lynkr-mcp-time-abcd"]
        assert self._opt(argv, "--network") == ["none"]
        assert self._opt(argv, "--cap-drop") == ["ALL"]
        assert self._opt(argv, "--security-opt") == ["no-new-privileges"]
        assert self._opt(argv, "--memory") == ["512m"]
        assert self._opt(argv, "--cpus") == ["1"]
        assert self._opt(argv, "--pids-limit") == ["256"]
        assert self._opt(argv, "-v") == ["/srv/work space:/workspace:ro"]
        assert self._opt(argv, "-w") == ["/workspace"]
        assert self._opt(argv, "-e") == []
        assert argv[argv.index("--"):] == ["--", "ghcr.io/example/mcp:1", "mcp-server-time", "--local-timezone", "UTC"]
        assert "--privileged" not in argv

    def test_networking_writable_limits_and_podman(self):
        argv = self._argv(runtime="podman", allow_networking=True, workspace_writable=True, memory="1g", cpus="0.5",
                          pids_limit=64)
        assert argv[0] == "podman"
        assert self._opt(argv, "--network") == ["bridge"]
        assert self._opt(argv, "-v") == ["/srv/work space:/workspace:rw"]
        assert (self._opt(argv, "--memory"), self._opt(argv, "--cpus"), self._opt(argv, "--pids-limit")) == (
            ["1g"], ["0.5"], ["64"])
        assert self._opt(argv, "--cap-drop") == ["ALL"]
        argv = self._argv(runtime="/opt/bin/docker")
        assert argv[0] == "/opt/bin/docker"

    def test_env_passthrough_allowlist_and_server_env(self, monkeypatch):
        monkeypatch.setenv("MCP_TEST_TOKEN", "tok-123")
        monkeypatch.setenv("NOT_PASSED", "secret-should-stay")
        monkeypatch.delenv("UNSET_VAR", raising=False)
        argv = self._argv({"env": {"TZ": "UTC"}}, env_passthrough=("MCP_TEST_TOKEN", "UNSET_VAR"))
        envs = self._opt(argv, "-e")
        assert "MCP_TEST_TOKEN=tok-123" in envs and "TZ=UTC" in envs
        assert not any(e.startswith(("UNSET_VAR", "NOT_PASSED")) for e in envs), envs
        assert "secret-should-stay" not in " ".join(argv)

    def test_extra_mounts(self):
        argv = self._argv(extra_mounts=("/data/cache:/cache", "/srv/out:/out:rw", "/etc/ssl:/etc/ssl:ro"))
        assert self._opt(argv, "-v") == ["/srv/work space:/workspace:ro", "/data/cache:/cache:ro", "/srv/out:/out:rw",
                                         "/etc/ssl:/etc/ssl:ro"]

    @pytest.mark.parametrize("image,mode,allow,deny,expect", MCP_PLACEMENT)
    def test_placement(self, image, mode, allow, deny, expect):
        _, s = self._settings(image="img" if image else "", permission_mode=mode, permission_allow=allow,
                              permission_deny=deny)
        assert {n: s.placement(n) for n in expect} == expect
        _, off = self._settings(enabled=False, permission_mode=mode, permission_allow=allow, permission_deny=deny)
        assert not off.active  # MCP_SANDBOX_ENABLED=false: an image alone does not sandbox

    @pytest.mark.parametrize("extra,names", [
        ({"MCP_SANDBOX_IMAGE": "ghcr.io/x/y:1", "MCP_SANDBOX_RUNTIME": "/nonexistent/bin/docker"}, "MCP_SANDBOX_RUNTIME"),
        ({"MCP_SANDBOX_IMAGE": "ghcr.io/x/y:1", "MCP_SANDBOX_RUNTIME": "dockerish"}, "MCP_SANDBOX_RUNTIME"),
        ({"MCP_SANDBOX_PERMISSION_MODE": "sometimes"}, "MCP_SANDBOX_PERMISSION_MODE"),
        ({"MCP_SANDBOX_EXTRA_MOUNTS": "relative:/x"}, "MCP_SANDBOX_EXTRA_MOUNTS"),
    ])
    def test_bad_sandbox_config_is_a_startup_error(self, tmp_path, extra, names):
        manifest = write_manifest(tmp_path / "m.json", {"servers": [{"name": "time", "command": "mcp-server-time"}]})
        r = run_lynkr(tmp_path, mcp_env(manifest, **extra))
        assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and names in lines[0] and lines[0].startswith("lynkr: "), r.stderr

    @pytest.mark.parametrize("mode,allow,deny,expect", [
        ("deny", "", "", {"alpha": "refused", "beta": "refused"}),
        ("require", "al*", "", {"alpha": "ready", "beta": "refused"}),
        ("auto", "", "beta", {"alpha": "ready", "beta": "refused"}),
    ])
    def test_permission_mode_without_image(self, make_proxy, tmp_path, mode, allow, deny, expect):
        need_mcp()
        manifest = write_manifest(tmp_path / "m.json", {"servers": [
            {"name": "alpha", "command": str(MCP_EVERYTHING)}, {"name": "beta", "command": str(MCP_EVERYTHING)}]})
        p = make_proxy(mcp_env(manifest, MCP_SANDBOX_PERMISSION_MODE=mode, MCP_SANDBOX_PERMISSION_ALLOW=allow,
                               MCP_SANDBOX_PERMISSION_DENY=deny))
        servers = mcp_servers(p)
        assert {n: s["status"] for n, s in servers.items()} == expect, servers
        names = {t["name"] for t in p.call("GET", "/v1/tools").json()["data"]}
        for name, status in expect.items():
            if status == "refused":
                s = servers[name]
                assert s["placement"] == "refused" and s["tools"] == []
                assert "MCP_SANDBOX_PERMISSION_MODE" in s["error"] and "MCP_SANDBOX_IMAGE" in s["error"], s
                assert not any(n.startswith(f"mcp_{name}_") for n in names)
                body = mcp_call(p, "workspace_mcp_call", {"server": name, "tool": "echo", "arguments": {"message": "x"}})
                assert body["is_error"] is True and "refused" in mcp_text(body), body
                p.wait_log(lambda o, n=name: o.get("msg") == "MCP server refused" and o.get("server") == n)
            else:
                assert mcp_call(p, f"mcp_{name}_echo", {"message": "ok"})["content"][0]["text"] == "Echo: ok"
        running = sum("mcp-server-everything" in c for c in descendants(p.proc.pid).values())
        assert running == sum(s == "ready" for s in expect.values())

    def test_image_set_never_falls_back_to_the_host(self, make_proxy, tmp_path):
        """With MCP_SANDBOX_IMAGE set, the server runs through the container runtime or not at all. Only
        the docker *client* is needed: no engine runs here, so the container start fails and is retried."""
        need_mcp(npm=False)
        docker = shutil.which("docker") or shutil.which("podman")
        if docker is None:
            pytest.skip("no docker or podman client on PATH")
        manifest = write_manifest(tmp_path / "m.json", {"servers": [{"name": "time", "command": "mcp-server-time"}]})
        p = make_proxy(mcp_env(manifest, MCP_SANDBOX_IMAGE="lynkr-test-no-such-image:0", MCP_SANDBOX_RUNTIME=docker,
                               MCP_READY_WAIT_MS=500, MCP_STARTUP_TIMEOUT_MS=5000))
        s = mcp_servers(p)["time"]
        assert s["placement"] == "sandbox", s
        assert s["status"] != "ready" and s["tools"] == [], s
        kids = descendants(p.proc.pid).values()
        assert not any("mcp-server-time" in c and not c.startswith(docker) for c in kids), kids
        body = mcp_call(p, "workspace_mcp_servers")
        assert json.loads(mcp_text(body))["sandbox_active"] is True
        # what the runtime said (no engine here: "Cannot connect to the Docker daemon") is logged under the server
        line = p.wait_log(lambda o: o.get("msg") == "mcp server stderr" and o.get("server") == "time", 20)
        assert any(w in line["line"].lower() for w in ("docker", "podman", "error")), line


    def test_container_client_finds_its_engine_through_docker_host(self, make_proxy, tmp_path):
        """The SDK starts stdio servers with a minimal environment; the container client still gets
        DOCKER_HOST (a remote or rootless engine). The docker client names the socket it tried."""
        need_mcp(npm=False)
        docker = shutil.which("docker")
        if docker is None:
            pytest.skip("no docker client on PATH")
        socket_path = tmp_path / "lynkr-test-engine.sock"
        manifest = write_manifest(tmp_path / "m.json", {"servers": [{"name": "time", "command": "mcp-server-time"}]})
        p = make_proxy(mcp_env(manifest, MCP_SANDBOX_IMAGE="lynkr-test-no-such-image:0", MCP_SANDBOX_RUNTIME=docker,
                               MCP_READY_WAIT_MS=500, MCP_STARTUP_TIMEOUT_MS=5000, DOCKER_HOST=f"unix://{socket_path}"))
        line = p.wait_log(lambda o: o.get("msg") == "mcp server stderr" and o.get("server") == "time"
                          and str(socket_path) in o.get("line", ""), 20)
        assert "lynkr-test-engine.sock" in line["line"], line


# -- stdio servers in bubblewrap (MCP_SANDBOX_RUNTIME=bwrap) --


class TestMCPBubblewrap:
    def test_server_runs_confined(self, make_proxy, tmp_path):
        need_mcp()
        require_e2e("bubblewrap (bwrap): apt-get install bubblewrap", shutil.which("bwrap") is not None)
        home = tmp_path / "home"
        (home / ".ssh").mkdir(parents=True, exist_ok=True)
        (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY MATERIAL")
        (tmp_path / "readme.txt").write_text("workspace file\n")
        manifest = write_manifest(tmp_path.parent / f"{tmp_path.name}-mcp.json", {"mcpServers": {
            "fs": {"command": str(MCP_FILESYSTEM), "args": ["/"]},
            "time": {"command": mcp_time_bin(), "args": ["--local-timezone", "UTC"]}}})
        p = make_proxy(mcp_env(manifest, MCP_SANDBOX_RUNTIME="bwrap", LYNKR_TOOLS="*"))
        servers = mcp_servers(p)
        assert {s["placement"] for s in servers.values()} == {"sandbox"}, servers
        assert {s["status"] for s in servers.values()} == {"ready"}, servers
        body = mcp_call(p, "mcp_time_get_current_time", {"timezone": "UTC"})
        assert body["is_error"] is False and "UTC" in mcp_text(body), body
        inside = mcp_call(p, "mcp_fs_read_text_file", {"path": str(tmp_path / "readme.txt")})
        assert "workspace file" in mcp_text(inside), inside  # the workspace is readable
        secret = mcp_call(p, "mcp_fs_read_text_file", {"path": str(home / ".ssh" / "id_ed25519")})
        assert "PRIVATE KEY" not in mcp_text(secret), secret  # credential folders are hidden
        write = mcp_call(p, "mcp_fs_write_file", {"path": str(tmp_path / "new.txt"), "content": "x"})
        assert write["is_error"] is True or not (tmp_path / "new.txt").exists()  # read-only by default
        assert not (tmp_path / "new.txt").exists()
        outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
        mcp_call(p, "mcp_fs_write_file", {"path": str(outside), "content": "x"})
        assert not outside.exists()  # nothing else of the host is writable


# -- confinement: manifests in the workspace, tool-name collisions --


class TestConfinementMCP:
    """Items 9, 10: manifests in the workspace, tool-name collisions."""

    TINY_SERVER = """\
import sys
from mcp.server.mcpserver import MCPServer

server_name, tool_name = sys.argv[1], sys.argv[2]
app = MCPServer(server_name)


def answer() -> str:
    return f"answered by {server_name}/{tool_name}"


app.add_tool(answer, name=tool_name, description="a tiny test tool")
app.run("stdio")
"""

    def _tiny(self, tmp_path: Path) -> Path:
        require_e2e("the mcp SDK (pip install -e '.[mcp]')", importlib.util.find_spec("mcp") is not None)
        script = tmp_path / "tiny_mcp_server.py"
        script.write_text(self.TINY_SERVER)
        return script

    def _entry(self, script: Path, server: str, tool_name: str) -> dict:
        return {"command": sys.executable, "args": [str(script), server, tool_name]}

    def test_manifest_inside_the_workspace_is_refused_at_startup(self, tmp_path):
        manifest = write_manifest(tmp_path / "mcp.json", {"mcpServers": {}})
        env = mcp_env(manifest)
        env.pop("MCP_ALLOW_WORKSPACE_MANIFEST", None)  # WORKSPACE_ROOT is tmp_path: no opt-in here
        r = run_lynkr(tmp_path, env, timeout=30)
        assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "MCP_SERVER_MANIFEST" in lines[0] and "MCP_ALLOW_WORKSPACE_MANIFEST" in lines[0], \
            r.stderr
        assert "Traceback" not in r.stderr
        nested = write_manifest(tmp_path / ".claude" / "servers.json", {"mcpServers": {}})
        env["MCP_SERVER_MANIFEST"] = str(nested)
        r = run_lynkr(tmp_path, env, timeout=30)
        assert r.returncode == 2 and "MCP_ALLOW_WORKSPACE_MANIFEST" in r.stderr, (r.returncode, r.stderr[-2000:])
        # a path outside that is a symlink to the workspace's file (or through a symlinked folder) is the same file
        outside = tmp_path.parent / f"{tmp_path.name}-outside"
        outside.mkdir()
        (outside / "mcp.json").symlink_to(manifest)
        (outside / "cfg").symlink_to(tmp_path / ".claude", target_is_directory=True)
        for path in (outside / "mcp.json", outside / "cfg" / "servers.json"):
            env["MCP_SERVER_MANIFEST"] = str(path)
            r = run_lynkr(tmp_path, env, timeout=30)
            assert r.returncode == 2 and "MCP_ALLOW_WORKSPACE_MANIFEST" in r.stderr, \
                (path, r.returncode, r.stderr[-2000:])

    def test_manifest_dirs_inside_the_workspace_start_nothing(self, tmp_path):
        script = self._tiny(tmp_path)
        write_manifest(tmp_path / "mcpdir" / "servers.json",
                       {"mcpServers": {"planted": self._entry(script, "planted", "t")}})
        env = mcp_env(MCP_MANIFEST_DIRS=tmp_path / "mcpdir")
        env.pop("MCP_ALLOW_WORKSPACE_MANIFEST", None)
        proxy = spawn(tmp_path, base_env(tmp_path, env))
        try:
            wait_for(lambda: proxy.ready.is_set() or proxy.proc.poll() is not None, 30, "lynkr to listen or exit")
            if proxy.proc.poll() is None:  # started: the planted server must not have been
                assert "planted" not in mcp_servers(proxy), mcp_servers(proxy)
                assert not server_pids(proxy, str(script))
            else:
                assert proxy.proc.returncode == 2 and "MCP_ALLOW_WORKSPACE_MANIFEST" in proxy.stderr, \
                    proxy.stderr[-2000:]
        finally:
            proxy.stop()
        assert not gw_pids_with(str(script))

    def test_mcp_servers_get_a_scrubbed_environment(self, tmp_path, make_proxy):
        # issue 14: programs lynkr launches (MCP servers too) never get its settings or provider keys
        script = self._tiny(tmp_path)
        script.write_text(self.TINY_SERVER.replace('return f"answered by {server_name}/{tool_name}"',
                                                   'import json, os\n    return json.dumps(dict(os.environ))'))
        ws = tmp_path / "ws"
        ws.mkdir()
        entry = {**self._entry(script, "envsrv", "env"), "env": {"FROM_MANIFEST": "manifest-value"}}
        manifest = write_manifest(tmp_path / "cfg" / "m.json", {"mcpServers": {"envsrv": entry}})
        lkey = CONF_SECRETS["LYNKR_API_KEY"]
        p = make_proxy(mcp_env(manifest, WORKSPACE_ROOT=ws, **CONF_SECRETS, DATABRICKS_API_BASE="http://127.0.0.1:9"))
        body = conf_call(p, "mcp_envsrv_env", {}, {"x-api-key": lkey})
        assert body["is_error"] is False, body
        seen = json.dumps(body)
        for name, value in CONF_SECRETS.items():
            assert value not in seen, f"{name} reached an MCP server"
        assert "manifest-value" in seen and "PATH" in seen  # what the manifest sets still arrives

    def test_allowed_workspace_manifest_is_blocked_for_file_tools(self, tmp_path, make_proxy):
        script = self._tiny(tmp_path)
        original = json.dumps({"mcpServers": {"tiny": self._entry(script, "tiny", "ping")}})
        manifest = write_manifest(tmp_path / "mcp.json", original)
        p = make_proxy(mcp_env(manifest, MCP_ALLOW_WORKSPACE_MANIFEST="true", LYNKR_TOOLS="*"))
        assert mcp_servers(p)["tiny"]["status"] == "ready"
        evil = json.dumps({"mcpServers": {"evil": {"command": "sh", "args": ["-c", f"touch {tmp_path}/owned"]}}})
        for path in ("mcp.json", "./mcp.json", str(manifest), "sub/../mcp.json"):
            body = conf_call(p, "fs_write", {"path": path, "content": evil})
            assert body["is_error"] is True, (path, body)
            assert manifest.read_text() == original, f"fs_write through {path!r} rewrote the manifest"
        body = conf_call(p, "fs_read", {"path": "mcp.json"})
        assert body["is_error"] is True, body
        assert "tiny_mcp" not in body["content"] and "mcpServers" not in body["content"], body
        assert manifest.read_text() == original and not (tmp_path / "owned").exists()

    @pytest.mark.parametrize("first,second,tool_name", [
        (("alpha_beta", "gamma"), ("alpha", "beta_gamma"), "mcp_alpha_beta_gamma"),  # a_b + c, a + b_c
        (("my.srv", "ping"), ("my_srv", "ping"), "mcp_my_srv_ping"),  # names equal once sanitised
    ], ids=["split-at-underscore", "sanitised-server-name"])
    def test_colliding_tool_names_refuse_startup(self, tmp_path, make_proxy, first, second, tool_name):
        script = self._tiny(tmp_path)
        ws = tmp_path / "ws"  # manifests outside the workspace: only the collision is wrong
        ws.mkdir()
        # alone, the first server starts and offers the tool: the script and manifest are sound
        solo = write_manifest(tmp_path / "cfg" / "solo.json", {"mcpServers": {first[0]: self._entry(script, *first)}})
        p = make_proxy(mcp_env(solo, WORKSPACE_ROOT=ws))
        assert f"answered by {first[0]}/{first[1]}" in mcp_text(mcp_call(p, tool_name))
        p.stop()
        wait_for(lambda: not gw_pids_with(str(script)), 10, "the solo server to exit")
        both = write_manifest(tmp_path / "cfg" / "both.json", {"mcpServers": {
            first[0]: self._entry(script, *first), second[0]: self._entry(script, *second)}})
        r = run_lynkr(tmp_path, mcp_env(both, WORKSPACE_ROOT=ws), timeout=40)
        assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
        assert "Traceback" not in r.stderr

        def names_both(line: str) -> bool:  # each server by its own name, not as a piece of the tool name
            cleaned = line.replace(tool_name, "")
            return (re.search(rf"(?<![\w.]){re.escape(first[0])}(?![\w.])", cleaned) is not None
                    and re.search(rf"(?<![\w.]){re.escape(second[0])}(?![\w.])", cleaned) is not None)

        named = [ln for ln in r.stderr.splitlines() if names_both(ln)]
        assert len(named) == 1, f"one line should name both servers:\n{r.stderr[-3000:]}"
        wait_for(lambda: not gw_pids_with(str(script)), 10, "no MCP server left running after the refused start")


# == 18. Orchestrator ==

# -- agent loop --


def activity_blocks(msg: dict) -> list[str]:
    return [t for t in texts(msg) if t.startswith("[lynkr ran server tool ")]


class TestAgentLoop:
    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_multi_round_loop(self, agent, provider, stream):
        st = agent(provider, LYNKR_TOOLS="fs_*")
        st.fake.push(model_turn(provider, "Let me look.", [("call_r1", "fs_list", {"path": "src"})], usage=(100, 10)),
                     model_turn(provider, "Now the file.", [("call_r2", "fs_read", {"path": "src/app.py",
                                                                                    "line_numbers": True})],
                                usage=(200, 20)),
                     model_turn(provider, "It defines hello().", usage=(300, 30)))
        r = st.proxy.post(base_req(messages=[user("what is in src?")], tools=[GET_WEATHER], stream=stream))
        msg = reply_of(r, stream)
        assert len(st.fake.requests) == 3, [x.body for x in st.fake.requests]
        assert all(x.body.get("stream") is True for x in st.fake.requests)  # the loop always streams upstream
        assert results_seen(st.fake.requests[1]) == {"call_r1": "src/app.py"}
        assert results_seen(st.fake.requests[2])["call_r2"] == "1\tdef hello():\n2\t    return 'hi'\n"
        summary = block_summary(msg["content"])
        assert [b[0] for b in summary] == ["text"] * 5, summary
        t = texts(msg)
        assert (t[0], t[2], t[4]) == ("Let me look.", "Now the file.", "It defines hello().")
        assert t[1] == '[lynkr ran server tool fs_list {"path":"src"}]\nsrc/app.py', t[1]
        assert t[3].startswith('[lynkr ran server tool fs_read {"path":"src/app.py","line_numbers":true}]\n'), t[3]
        assert "2\t    return 'hi'" in t[3]
        assert not any(b["type"] == "tool_use" for b in msg["content"])  # server calls stay hidden
        assert msg["stop_reason"] == "end_turn" and msg["model"] == "claude-sonnet-4-5"
        assert (msg["usage"]["input_tokens"], msg["usage"]["output_tokens"]) == (600, 60), msg["usage"]
        # every round offered both the client tool and the injected server tools, with lynkr's schema
        for rec in st.fake.requests:
            assert {"get_weather", "fs_read", "fs_write", "fs_list"} <= set(upstream_tool_names(rec))
            assert "start_line" in upstream_tool_def(rec, "fs_read")["properties"]

    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_stream_events_across_rounds(self, agent, provider):
        """Strict look at the wire: one message_start, indices 0..n-1 without gaps, one message_delta."""
        st = agent(provider, LYNKR_TOOLS="fs_read")
        st.fake.push(model_turn(provider, "Reading.", [("call_s1", "fs_read", {"path": "notes.txt"})], usage=(50, 5)),
                     model_turn(provider, "Done reading.", usage=(70, 7)))
        r = st.proxy.post(base_req(stream=True))
        s = r.stream()
        msg = s.ok()
        names = [e for e, _ in s.events if e != "ping"]
        assert names.count("message_start") == 1 and names.count("message_delta") == 1
        assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
        starts = [d["index"] for e, d in s.events if e == "content_block_start"]
        assert starts == list(range(len(msg["content"]))) == [0, 1, 2], starts
        assert texts(msg)[1].endswith("\nremember the milk\n")
        delta = next(d for e, d in s.events if e == "message_delta")
        assert delta["usage"]["input_tokens"] == 120 and delta["usage"]["output_tokens"] == 12, delta

    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_activity_record_off(self, agent, provider):
        st = agent(provider, LYNKR_TOOLS="fs_read", LYNKR_SHOW_TOOL_ACTIVITY="false")
        st.fake.push(model_turn(provider, "Reading.", [("call_q1", "fs_read", {"path": "notes.txt"})]),
                     model_turn(provider, "The note says milk."))
        msg = reply_of(st.proxy.post(base_req(stream=True)), True)
        assert block_summary(msg["content"]) == [("text", "Reading."), ("text", "The note says milk.")]
        assert results_seen(st.fake.last)["call_q1"] == "remember the milk\n"  # the tool still ran

    def test_activity_record_truncated(self, agent, workspace):
        (workspace / "big.txt").write_text("x" * 5000)
        st = agent("dbx", LYNKR_TOOLS="fs_read", LYNKR_TOOL_ACTIVITY_MAX_CHARS="100")
        st.fake.push(model_turn("dbx", None, [("call_b1", "fs_read", {"path": "big.txt"})]), model_turn("dbx", "ok"))
        msg = reply_of(st.proxy.post(base_req()), False)
        [rec] = activity_blocks(msg)
        assert rec.endswith("\n" + "x" * 100 + "\n[… 4900 more characters]"), rec[-200:]
        assert results_seen(st.fake.last)["call_b1"] == "x" * 5000  # the model still got all of it

    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_mixed_server_and_client_calls(self, agent, workspace, provider, stream):
        st = agent(provider, LYNKR_TOOLS="fs_write")
        st.fake.push(model_turn(provider, "Both at once.", [("call_m1", "fs_write", {"path": "out/w.txt", "content": "W"}),
                                                            ("call_m2", "get_weather", {"city": "Paris"})]))
        history = [user("write and check the weather")]
        msg = reply_of(st.proxy.post(base_req(messages=history, tools=[GET_WEATHER], stream=stream)), stream)
        assert (workspace / "out" / "w.txt").read_text() == "W"
        assert msg["stop_reason"] == "tool_use"
        uses = [b for b in msg["content"] if b["type"] == "tool_use"]
        assert [(u["id"], u["name"], u["input"]) for u in uses] == [("call_m2", "get_weather", {"city": "Paris"})]
        assert len(activity_blocks(msg)) == 1 and "wrote 1 bytes to out/w.txt" in activity_blocks(msg)[0]
        assert len(st.fake.requests) == 1
        # The client answers its own tool; the conversation it sends back must be valid upstream.
        st.fake.push(model_turn(provider, "Paris is sunny and the file is written."))
        history += [assistant(msg["content"]), user([tool_result("call_m2", "sunny")])]
        r2 = reply_of(st.proxy.post(base_req(messages=history, tools=[GET_WEATHER], stream=stream)), stream)
        assert texts(r2)[-1] == "Paris is sunny and the file is written.", r2
        sent = st.fake.last
        assert results_seen(sent) == {"call_m2": "sunny"}  # only the client's own result: no orphan server ids
        if provider == "az":
            msgs = sent.body["messages"]
            prev_ids = {b["id"] for b in msgs[-2]["content"] if b["type"] == "tool_use"}
            assert prev_ids == {b["tool_use_id"] for b in msgs[-1]["content"] if b["type"] == "tool_result"}

    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_max_steps(self, agent, provider, stream):
        st = agent(provider, LYNKR_TOOLS="fs_list", POLICY_MAX_STEPS="2")
        again = model_turn(provider, "Again.", [("call_x", "fs_list", {})])
        st.fake.push(again, again, again)
        r = st.proxy.post(base_req(stream=stream))
        msg = reply_of(r, stream)
        assert r.status == 200 and len(st.fake.requests) == 2
        assert msg["stop_reason"] == "end_turn"
        note = texts(msg)[-1]
        assert note.startswith("lynkr stopped this turn: POLICY_MAX_STEPS=2 model rounds reached"), note

    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_max_tool_calls(self, agent, workspace, provider, stream):
        st = agent(provider, LYNKR_TOOLS="fs_write", POLICY_MAX_TOOL_CALLS="2")
        st.fake.push(model_turn(provider, "Three files.", [(f"call_t{i}", "fs_write", {"path": f"t{i}.txt", "content": "x"})
                                                           for i in range(3)]),
                     model_turn(provider, "should not be asked"))
        r = st.proxy.post(base_req(stream=stream))
        msg = reply_of(r, stream)
        assert r.status == 200 and len(st.fake.requests) == 1
        assert sorted(p.name for p in workspace.glob("t*.txt")) == ["t0.txt", "t1.txt"]
        assert msg["stop_reason"] == "end_turn"
        assert "lynkr stopped this turn: POLICY_MAX_TOOL_CALLS=2 server tool calls reached" in texts(msg)[-1]

    @pytest.mark.parametrize("choice", [{"type": "tool", "name": "fs_list"},
                                        {"type": "function", "function": {"name": "fs_list"}}], ids=["anthropic", "openai"])
    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_forced_server_tool_runs_once(self, agent, provider, choice):
        st = agent(provider)  # default LYNKR_TOOLS: only tool_choice offers fs_list
        st.fake.push(model_turn(provider, None, [("call_f1", "fs_list", {})]),
                     model_turn(provider, "Listed."))
        msg = reply_of(st.proxy.post(base_req(tool_choice=choice, stream=True)), True)
        first, second = st.fake.requests
        assert upstream_tool_names(first) == ["fs_list"]
        if provider == "dbx":
            assert first.body["tool_choice"] == {"type": "function", "function": {"name": "fs_list"}}
            assert second.body["tool_choice"] == "auto"
        else:
            assert first.body["tool_choice"] == {"type": "tool", "name": "fs_list"}
            assert second.body["tool_choice"] == {"type": "auto"}
        assert "notes.txt" in results_seen(second)["call_f1"] and "src/" in results_seen(second)["call_f1"]
        assert texts(msg)[-1] == "Listed."

    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_upstream_failure_in_a_later_round(self, agent, provider, stream):
        st = agent(provider, LYNKR_TOOLS="fs_read")
        err = dbx_error(400, "BAD_REQUEST", "round two refused") if provider == "dbx" else \
            json_reply(anth_error(400, "invalid_request_error", "round two refused"), 400)
        st.fake.push(model_turn(provider, "First round.", [("call_e1", "fs_read", {"path": "notes.txt"})]), err)
        r = st.proxy.post(base_req(stream=stream))
        if stream:
            s = r.stream()
            assert s.error is not None and "round two refused" in s.error["message"], s.events[-3:]
            assert texts(s.message)[0] == "First round."  # what already streamed stays valid
        else:
            assert r.status == 400 and r.etype == "invalid_request_error" and "round two refused" in r.emsg, r.data
        assert len(st.fake.requests) == 2

    def test_pings_while_a_slow_tool_runs(self, agent, web_server):
        site = web_server()
        site.push(Reply(200, b"slow page", (("content-type", "text/plain"),), hang=1.2))
        st = agent(LYNKR_TOOLS="web_fetch", WEB_SEARCH_ALLOWED_HOSTS="127.0.0.1", STREAM_PING_INTERVAL_MS="200")
        st.fake.push(model_turn("dbx", "Fetching.", [("call_sl", "web_fetch", {"url": f"{site.url}/slow"})]),
                     model_turn("dbx", "Fetched."))
        s = st.proxy.post(base_req(stream=True)).stream()
        assert texts(s.ok())[-1] == "Fetched."
        names = [e for e, _ in s.events]
        first_stop = names.index("content_block_stop")  # "Fetching." is out before the tool starts
        between = names[first_stop:names.index("content_block_start", first_stop)]
        assert between.count("ping") >= 3, names
        assert results_seen(st.fake.last)["call_sl"].endswith("slow page")

    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_bad_tool_input_is_error_result(self, agent, provider):
        st = agent(provider, LYNKR_TOOLS="fs_read")
        st.fake.push(model_turn(provider, None, [("call_v1", "fs_read", {"path": "notes.txt", "start_line": 0}),
                                                 ("call_v2", "fs_read", {"file": "notes.txt"})]),
                     model_turn(provider, "Sorry."))
        r = st.proxy.post(base_req())
        msg = reply_of(r, False)
        seen = results_seen(st.fake.last)
        assert "input.start_line: must be >= 1" in seen["call_v1"], seen
        assert "input.path: required" in seen["call_v2"] and "input.file: unknown field" in seen["call_v2"], seen
        assert texts(msg)[-1] == "Sorry." and len(activity_blocks(msg)) == 1
        assert activity_blocks(msg)[0].count("(error)]") == 2
        if provider == "az":
            errs = [b.get("is_error") for b in st.fake.last.body["messages"][-1]["content"]]
            assert errs == [True, True]


# -- web search run by lynkr (Claude Code's WebSearch on upstreams without server tools) --


class StrictAzure(FakeAzure):
    """A Foundry deployment without Anthropic's server tools: a typed server tool, or server_tool_use /
    web_search_tool_result blocks in the history, are a 400 (as on a vendor that does not run them)."""

    def check(self, rec: Recorded) -> Reply | None:
        bad = super().check(rec)
        if bad is not None:
            return bad
        b = rec.body
        problems = [f"tools.{i}: type {t.get('type')!r} is not supported on this deployment"
                    for i, t in enumerate(b.get("tools") or []) if t.get("type") not in (None, "custom")]
        problems += [f"messages.{i}.content.{j}: block type {blk.get('type')!r} is not supported on this deployment"
                     for i, m in enumerate(b["messages"]) if isinstance(m.get("content"), list)
                     for j, blk in enumerate(m["content"])
                     if blk.get("type") in ("server_tool_use", "web_search_tool_result")]
        return json_reply(anth_error(400, "invalid_request_error", "; ".join(problems)), 400) if problems else None


@pytest.fixture(scope="module")
def searx_mod():
    s = FakeSearx()
    yield s
    s.close()


@pytest.fixture(scope="module")
def ws_stacks(tmp_path_factory, searx_mod):
    """ws_stacks("dbx" | "az") -> Stack(fake model, proxy) with WEB_SEARCH_ENDPOINT at the SearxNG fake."""
    made: dict[str, Stack] = {}

    def get(provider: str) -> Stack:
        if provider not in made:
            fake = FakeDatabricks() if provider == "dbx" else StrictAzure()
            env = {**(dbx_env(fake) if provider == "dbx" else az_env(fake)),
                   "WEB_SEARCH_ENDPOINT": f"{searx_mod.url}/search"}
            try:
                made[provider] = Stack(fake, start_proxy(tmp_path_factory.mktemp(f"ws-{provider}"), env))
            except BaseException:
                fake.close()
                raise
        made[provider].fake.reset()
        return made[provider]

    yield get
    for s in made.values():
        s.proxy.stop()
        s.fake.close()


@pytest.fixture
def ws(ws_stacks, searx_mod):
    searx_mod.reset()
    searx_mod.hits = list(SEARX_HITS)
    return ws_stacks


class TestWebSearchEmulation:
    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_search_then_answer(self, ws, searx_mod, provider, stream):
        st = ws(provider)
        st.fake.push(*[ws_model(provider, [[("call_ws_1", {"query": WS_QUERY})]], "Lynkr is a proxy ✓ [1].")] * 2)
        msg = ws_reply(st.proxy.post(ws_body(stream), headers=CC_HEADERS), stream)

        # What the client sees is what Anthropic sends: the search, its results, then the model's text.
        assert [b["type"] for b in msg["content"]] == ["server_tool_use", "web_search_tool_result", "text"], msg
        [(use, res)] = search_pairs(msg)
        assert use["input"] == {"query": WS_QUERY}
        results = result_list(res)
        assert [(x["title"], x["url"]) for x in results] == [(h["title"], h["url"]) for h in SEARX_HITS]
        assert [x["page_age"] for x in results] == ["2026-11-02T00:00:00", None, None]
        assert msg["content"][2] == {"type": "text", "text": "Lynkr is a proxy ✓ [1]."}
        assert msg["stop_reason"] == "end_turn" and msg["model"] == "claude-opus-5-5"
        assert msg["usage"]["server_tool_use"] == {"web_search_requests": 1}, msg["usage"]
        assert (msg["usage"]["input_tokens"], msg["usage"]["output_tokens"]) == (42, 16), msg["usage"]

        # The service got the query once, URL-encoded.
        assert searx_queries(searx_mod) == [{"q": [WS_QUERY], "format": ["json"]}]
        assert searx_mod.last.method == "GET"

        # Round 1: a web_search function in place of the typed tool; round 2: the results as a tool result.
        first, second = st.fake.requests
        assert_function_offered(first, provider)
        assert_function_offered(second, provider)
        if provider == "dbx":
            assert first.body.get("tool_choice") in (None, "auto"), first.body.get("tool_choice")
            tool_msgs = [m for m in second.body["messages"] if m["role"] == "tool"]
            assert [m["tool_call_id"] for m in tool_msgs] == ["call_ws_1"] and isinstance(tool_msgs[0]["content"], str)
        else:
            assert first.body.get("tool_choice") in (None, {"type": "auto"}), first.body.get("tool_choice")
        read = seen_result(second, "call_ws_1")
        for hit in SEARX_HITS:
            assert hit["title"] in read and hit["url"] in read and hit["content"] in read, read
        assert "srvtoolu_" not in json.dumps(second.body), "the model must never see the client-side ids"

    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_max_uses_exceeded_is_a_result(self, ws, searx_mod, provider):
        # Sequential on Databricks (a second round calls again), parallel on Azure (two calls in one round).
        if provider == "dbx":
            rounds, stream = [[("call_a", {"query": "first"})], [("call_b", {"query": "second"})]], True
        else:
            rounds, stream = [[("call_a", {"query": "first"}), ("call_b", {"query": "second"})]], False
        script = ws_model(provider, rounds, "Answered from one search.")
        st = ws(provider)
        st.fake.push(*[script] * (len(rounds) + 1))
        msg = ws_reply(st.proxy.post(ws_body(stream, typed={**WS_TYPED, "max_uses": 1})), stream)
        assert [b["type"] for b in msg["content"]] == ["server_tool_use", "web_search_tool_result"] * 2 + ["text"], msg
        (u1, r1), (u2, r2) = search_pairs(msg)
        assert (u1["input"], u2["input"]) == ({"query": "first"}, {"query": "second"})
        assert len(result_list(r1)) == 3
        assert error_code(r2) == "max_uses_exceeded"
        assert [q["q"] for q in searx_queries(searx_mod)] == [["first"]], "only one search may reach the service"
        assert msg["usage"]["server_tool_use"] == {"web_search_requests": 1}, msg["usage"]
        last = st.fake.last
        assert SEARX_HITS[0]["url"] in seen_result(last, "call_a")
        assert "max_uses_exceeded" in seen_result(last, "call_b")
        assert SEARX_HITS[0]["url"] not in seen_result(last, "call_b")

    def test_searches_count_against_the_tool_call_limit(self, new_dbx, make_proxy, searx_mod):
        """A client that sends no max_uses (not Claude Code) cannot let a model search without end: each
        search counts toward POLICY_MAX_TOOL_CALLS like any server tool."""
        searx_mod.reset()
        searx_mod.hits = list(SEARX_HITS)
        fake = new_dbx()
        p = make_proxy({**dbx_env(fake), "WEB_SEARCH_ENDPOINT": f"{searx_mod.url}/search",
                        "POLICY_MAX_TOOL_CALLS": "2"})
        calls = [(f"call_{n}", {"query": f"q{n}"}) for n in range(5)]
        fake.push(*[ws_model("dbx", [calls], "Done searching.")] * 2)
        typed = {k: v for k, v in WS_TYPED.items() if k != "max_uses"}
        msg = ws_reply(p.post(ws_body(False, typed=typed)), False)
        codes = [error_code(res) if not isinstance(res["content"], list) else "ok" for _, res in search_pairs(msg)]
        assert codes == ["ok", "ok", "max_uses_exceeded", "max_uses_exceeded", "max_uses_exceeded"], codes
        assert len(searx_queries(searx_mod)) == 2 and texts(msg) == ["Done searching."]

    def test_bad_queries_are_results_not_http_errors(self, ws, searx_mod):
        st = ws("dbx")
        st.fake.push(*[ws_model("dbx", [[("call_empty", {"query": "   "}), ("call_long", {"query": "x" * 501}),
                                          ("call_none", {})]], "No search worked.")] * 2)
        msg = ws_reply(st.proxy.post(ws_body(True)), True)
        pairs = search_pairs(msg)
        assert [error_code(res) for _, res in pairs] == ["invalid_tool_input", "query_too_long", "invalid_tool_input"]
        assert texts(msg) == ["No search worked."]
        assert searx_mod.requests == []
        assert dig(msg, "usage.server_tool_use.web_search_requests") in (MISSING, 0), msg["usage"]

    @pytest.mark.parametrize("lists", ["allowed", "blocked"])
    def test_domain_lists_filter_results(self, ws, searx_mod, lists):
        typed = ({**WS_TYPED, "allowed_domains": ["example.com"]} if lists == "allowed"
                 else {**WS_TYPED, "blocked_domains": ["tracker.net", "docs.example.com"]})
        want = (["https://lynkr.example.com/docs", "https://docs.example.com/cafe"] if lists == "allowed"
                else ["https://lynkr.example.com/docs"])
        st = ws("az")
        st.fake.push(*[ws_model("az", [[("toolu_dom", {"query": "domains"})]], "Filtered.")] * 2)
        msg = ws_reply(st.proxy.post(ws_body(True, typed=typed)), True)
        [(_, res)] = search_pairs(msg)
        assert [x["url"] for x in result_list(res)] == want
        read = seen_result(st.fake.last, "toolu_dom")
        assert all(u in read for u in want) and "ads.tracker.net" not in read, read
        if lists == "blocked":
            assert "docs.example.com" not in read, read
        assert len(searx_mod.requests) == 1

    def test_service_answering_500_is_unavailable(self, ws, searx_mod):
        searx_mod.push(json_reply({"error": "engine crashed"}, 500))
        st = ws("az")
        st.fake.push(*[ws_model("az", [[("toolu_500", {"query": "down"})]], "The search service is down.")] * 2)
        r = st.proxy.post(ws_body(False))
        assert r.status == 200, r.data[:2000]
        msg = ws_reply(r, False)
        [(_, res)] = search_pairs(msg)
        assert error_code(res) == "unavailable"
        assert texts(msg) == ["The search service is down."]
        read = seen_result(st.fake.last, "toolu_500")
        assert "unavailable" in read and "500" in read, read
        assert len(searx_mod.requests) == 1
        st.proxy.wait_log(lambda o: o.get("msg") == "web search failed" and "500" in str(o.get("error")))

    def test_service_refusing_connections_is_unavailable(self, make_proxy, new_dbx):
        fake = new_dbx()
        proxy = make_proxy({**dbx_env(fake), "WEB_SEARCH_ENDPOINT": f"http://127.0.0.1:{free_port()}/search"})
        fake.push(*[ws_model("dbx", [[("call_refused", {"query": "down"})]], "Searching failed.")] * 2)
        r = proxy.post(ws_body(True))
        msg = ws_reply(r, True)
        assert r.status == 200
        [(_, res)] = search_pairs(msg)
        assert error_code(res) == "unavailable"
        assert texts(msg) == ["Searching failed."]
        assert "unavailable" in seen_result(fake.last, "call_refused")
        proxy.wait_log(lambda o: o.get("msg") == "web search failed" and "SearxNG" in str(o.get("error")))

    def test_count_tokens_counts_what_messages_sends(self, ws):
        # count_tokens counts what /v1/messages sends: the web_search function, earlier searches as text
        st = ws("az")
        use = {"type": "server_tool_use", "id": "srvtoolu_01Count", "name": "web_search", "input": {"query": "count"}}
        res = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01Count", "content": [
            {"type": "web_search_result", "url": "https://count.example.com/", "title": "Count page",
             "encrypted_content": "EqgfOpaqueCount", "page_age": None}]}
        body = ws_body(False, messages=[user([text("search count")]), assistant([use, res, text("Counted.")]),
                                        user([text("again")])])
        del body["stream"], body["max_tokens"]
        r = st.proxy.post(body, path="/v1/messages/count_tokens")
        assert r.status == 200, r.data[:2000]
        sent = st.fake.last
        assert sent.path.endswith("/count_tokens")
        assert "server_tool_use" not in sent.raw.decode() and "Count page" in sent.raw.decode(), sent.body["messages"]
        assert_function_offered(sent, "az")
        assert r.json() == {"input_tokens": 77}, r.json()

    # -- later turns: earlier searches in the history reach a strict upstream as text --

    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_history_blocks_reach_upstream_as_text(self, ws, searx_mod, provider):
        st = ws(provider)
        st.fake.push(*[ws_model(provider, [[("call_h1", {"query": WS_QUERY})]], "Found three pages.")] * 2)
        first = ws_reply(st.proxy.post(ws_body(False)), False)  # a real lynkr search, sent back as Claude Code would
        search_pairs(first)
        anth_use = {"type": "server_tool_use", "id": "srvtoolu_01AnthropicOrigin", "name": "web_search",
                    "input": {"query": "anthropic origin"}}
        anth_res = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01AnthropicOrigin", "content": [
            {"type": "web_search_result", "url": "https://origin.example.net/page", "title": "Origin result",
             "encrypted_content": "EqgfCioIARgBIiQ3YTAwMjY1Mi1mZjM5LTQ1NGUtODgxNC1kNjNjNTk1ZWI3Y2ESDGFi",
             "page_age": "April 30, 2025"}]}
        err_use = {"type": "server_tool_use", "id": "srvtoolu_01Again", "name": "web_search", "input": {"query": "again"}}
        err_res = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01Again",
                   "content": {"type": "web_search_tool_result_error", "error_code": "max_uses_exceeded"}}
        history = [user([text(f"Perform a web search for the query: {WS_QUERY}")]),
                   assistant(first["content"]),
                   user([text("And the origin?")]),
                   assistant([anth_use, anth_res, err_use, err_res, text("One more search was refused.")]),
                   user([text("Which page mentions a café?")])]
        st.fake.reset()
        searx_mod.reset()
        st.fake.push(lambda rec: play(provider, rec, "The café notes page."))
        msg = ws_reply(st.proxy.post(ws_body(True, messages=history)), True)
        assert [b["type"] for b in msg["content"]] == ["text"] and texts(msg) == ["The café notes page."]
        assert searx_mod.requests == [] and len(st.fake.requests) == 1
        sent = st.fake.last.body
        raw = json.dumps(sent, ensure_ascii=False)
        assert "server_tool_use" not in raw and "web_search_tool_result" not in raw and "srvtoolu_" not in raw, raw[:3000]
        assistants = [m for m in sent["messages"] if m["role"] == "assistant"]
        assert len(assistants) == 2, sent["messages"]
        if provider == "dbx":
            assert all(isinstance(m["content"], str) and "tool_calls" not in m for m in assistants), assistants
            said = [m["content"] for m in assistants]
        else:
            assert all({b["type"] for b in m["content"]} == {"text"} for m in assistants), assistants
            said = ["\n".join(b["text"] for b in m["content"]) for m in assistants]
        for hit in SEARX_HITS:  # the titles and URLs lynkr found, and the snippets it kept for later turns
            assert hit["title"] in said[0] and hit["url"] in said[0] and hit["content"] in said[0], said[0]
        assert WS_QUERY in said[0] and "Found three pages." in said[0], said[0]
        assert "Origin result" in said[1] and "https://origin.example.net/page" in said[1], said[1]
        assert "anthropic origin" in said[1] and "max_uses_exceeded" in said[1], said[1]
        assert "EqgfCioIARgB" not in said[1] and "One more search was refused." in said[1], said[1]


# -- the anthropic preset runs web search itself: the typed tool goes through untouched --


def anthropic_search_message(model: str) -> dict:
    return {"id": "msg_01ANTHSEARCH", "type": "message", "role": "assistant", "model": model, "content": [
        {"type": "server_tool_use", "id": "srvtoolu_01Upstream", "name": "web_search", "input": {"query": "upstream"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01Upstream", "content": [
            {"type": "web_search_result", "url": "https://anthropic-ran.example.com/", "title": "Anthropic ran this",
             "encrypted_content": "EqgfCioIARgBIiQ3YTAw-upstream-opaque", "page_age": "1 day ago"}]},
        text("Anthropic searched.")],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 40, "output_tokens": 9, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "server_tool_use": {"web_search_requests": 1}}}


def anthropic_search_sse(msg: dict) -> bytes:
    """The events api.anthropic.com streams for a web search turn."""
    ev = [("message_start", {"type": "message_start", "message": dict(msg, content=[], stop_reason=None,
                                                                      usage=dict(msg["usage"], output_tokens=1))})]
    use, res, words = msg["content"]
    ev += [("content_block_start", {"type": "content_block_start", "index": 0, "content_block": dict(use, input={})}),
           ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
               "type": "input_json_delta", "partial_json": json.dumps(use["input"])}}),
           ("content_block_stop", {"type": "content_block_stop", "index": 0}),
           ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": res}),
           ("content_block_stop", {"type": "content_block_stop", "index": 1}),
           ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": text("")}),
           ("content_block_delta", {"type": "content_block_delta", "index": 2, "delta": {
               "type": "text_delta", "text": words["text"]}}),
           ("content_block_stop", {"type": "content_block_stop", "index": 2}),
           ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                              "usage": {"output_tokens": 9, "server_tool_use": {"web_search_requests": 1}}}),
           ("message_stop", {"type": "message_stop"})]
    return anth_sse(ev)


class TestAnthropicPresetRunsSearch:
    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
    def test_typed_tool_passes_through(self, make_proxy, stream):
        searx = FakeSearx()
        fake = FakeAnthropic()
        try:
            proxy = make_proxy({"MODEL_PROVIDER": "anthropic", "LYNKR_ANTHROPIC_API_KEY": ANTH_KEY,
                                "LYNKR_ANTHROPIC_BASE_URL": fake.url, "WEB_SEARCH_ENDPOINT": f"{searx.url}/search"})

            def respond(rec: Recorded) -> Reply:
                m = anthropic_search_message(rec.body["model"])
                if rec.body.get("stream"):
                    data = anthropic_search_sse(m)
                    return stream_reply(data, split_at(data, awkward_points(data)), gap=0.0005)
                return json_reply(m)

            fake.push(respond)
            typed = {**WS_TYPED, "max_uses": 3, "allowed_domains": ["example.com"]}
            earlier = [{"type": "server_tool_use", "id": "srvtoolu_01Earlier", "name": "web_search",
                        "input": {"query": "earlier"}},
                       {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01Earlier", "content": [
                           {"type": "web_search_result", "url": "https://example.com/e", "title": "Earlier",
                            "encrypted_content": "EqgfOpaqueEarlier", "page_age": None}]},
                       text("Earlier answer.")]
            history = [user([text("search earlier")]), assistant(earlier), user([text("search again")])]
            body = ws_body(stream, typed=typed, messages=history)
            msg = ws_reply(proxy.post(body, headers=CC_HEADERS), stream)
            want = anthropic_search_message(msg["model"])
            assert msg["content"] == want["content"], msg
            assert msg["usage"].get("server_tool_use") == {"web_search_requests": 1}, msg["usage"]
            sent = fake.last.body
            assert sent["tools"] == [typed], sent["tools"]  # the typed tool, unchanged: Anthropic runs it
            assert sent.get("tool_choice") == {"type": "auto"}
            assert sent["messages"][1] == assistant(earlier), "history blocks must reach Anthropic as blocks"
            assert len(fake.requests) == 1 and searx.requests == [], "lynkr must not search for the anthropic preset"
        finally:
            searx.close()
            fake.close()


# == 19. API routes ==

# -- helpers several of this section's sub-topics use --


def rel_raw_call(port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"",
                 source: str = "127.0.0.1", timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One request from a chosen loopback source address (127.0.0.x), connection: close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as s:
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
                f"Content-Length: {len(body)}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        return read_response(s.makefile("rb"))


# -- API key, Host and Origin checks --


class TestSecurity:
    LKEY = "lynkr-local-key-3e9d"

    @pytest.fixture
    def keyed(self, new_dbx, make_proxy) -> Stack:
        fake = new_dbx()
        return Stack(fake, make_proxy(dbx_env(fake, LYNKR_API_KEY=self.LKEY)))

    @pytest.mark.parametrize("headers", [{"x-api-key": None}, {"x-api-key": "wrong"},
                                         {"x-api-key": None, "authorization": "Bearer wrong"},
                                         {"x-api-key": None, "authorization": LKEY}],
                             ids=["missing", "wrong-x-api-key", "wrong-bearer", "bearer-without-scheme"])
    def test_missing_or_wrong_key_401(self, keyed, headers):
        assert keyed.proxy.call("HEAD", "/", headers=headers).status == 401
        for method, path, body in (("POST", "/v1/messages", base_req()), ("GET", "/health", None),
                                   ("GET", "/v1/models", None), ("POST", "/v1/messages/count_tokens", base_req())):
            r = keyed.proxy.call(method, path, body, headers)
            assert r.status == 401 and r.etype == "authentication_error", (path, r.status, r.data)
            assert REQ_ID.match(r.headers.get("request-id", ""))
        assert keyed.fake.requests == []

    @pytest.mark.parametrize("headers", [{"x-api-key": LKEY}, {"x-api-key": None, "authorization": f"Bearer {LKEY}"}],
                             ids=["x-api-key", "bearer"])
    def test_key_accepted_and_not_forwarded(self, keyed, headers):
        r = keyed.proxy.post(base_req(), headers=headers)
        assert r.status == 200, r.data
        sent = keyed.fake.last.headers
        assert sent["authorization"] == f"Bearer {DBX_KEY}"
        assert "x-api-key" not in sent
        assert not any(self.LKEY in v or CLIENT_KEY in v for v in sent.values()), sent

    def test_client_key_never_forwarded_to_databricks(self, dbx):
        assert dbx.proxy.post(base_req(), headers={"authorization": f"Bearer {CLIENT_KEY}"}).status == 200
        sent = dbx.fake.last.headers
        assert not any(CLIENT_KEY in v for v in sent.values()), sent

    @pytest.mark.parametrize("host", ["evil.example.com", "evil.example.com:80", "127.0.0.1.evil.example.com",
                                      "192.0.2.99:8080", "localhost.evil.example.com"])
    def test_foreign_host_403(self, dbx, host):
        r = dbx.proxy.post(base_req(), headers={"host": host})
        assert r.status == 403 and r.etype == "permission_error", (host, r.status, r.data)
        assert dbx.fake.requests == []

    @pytest.mark.parametrize("host", ["localhost", "localhost:1234", "127.0.0.1", "127.0.0.2:9", "[::1]:8080"])
    def test_loopback_hosts_ok(self, dbx, host):
        assert dbx.proxy.call("GET", "/health", headers={"host": host}).status == 200

    def test_allowed_hosts(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake, LYNKR_ALLOWED_HOSTS="my.box.internal, other.internal"))
        assert p.call("GET", "/health", headers={"host": "my.box.internal:443"}).status == 200
        assert p.call("GET", "/health", headers={"host": "other.internal"}).status == 200
        assert p.call("GET", "/health", headers={"host": "evil.example.com"}).status == 403

    @pytest.mark.parametrize("origin", ["https://evil.example.com", "http://evil.example.com:8080", "null",
                                        "http://localhost.evil.example.com"])
    def test_foreign_origin_403(self, dbx, origin):
        r = dbx.proxy.post(base_req(), headers={"origin": origin})
        assert r.status == 403 and r.etype == "permission_error", (origin, r.status, r.data)
        assert dbx.fake.requests == []

    @pytest.mark.parametrize("origin", ["http://localhost:5173", "http://127.0.0.1:3000", "http://[::1]"])
    def test_other_loopback_origin_refused(self, dbx, origin):
        # any local dev server's page is not lynkr: it may not call it (it could write files through the tools)
        r = dbx.proxy.post(base_req(), headers={"origin": origin})
        assert r.status == 403 and r.etype == "permission_error", (origin, r.status, r.data)

    def test_own_origin_and_listed_origins_ok(self, dbx, make_proxy, new_dbx):
        assert dbx.proxy.post(base_req(), headers={"origin": f"http://127.0.0.1:{dbx.proxy.port}"}).status == 200
        fake = new_dbx()
        p = make_proxy({**dbx_env(fake), "LYNKR_ALLOWED_ORIGINS": "http://localhost:5173"})
        assert p.post(base_req(), headers={"origin": "http://localhost:5173"}).status == 200
        assert p.post(base_req(), headers={"origin": "http://localhost:5174"}).status == 403

    def test_non_loopback_bind_with_key(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake, LYNKR_API_KEY=self.LKEY), args=("--host", "0.0.0.0", "--port", "0"))
        assert p.call("GET", "/health").status == 401
        assert p.call("GET", "/health", headers={"x-api-key": self.LKEY}).status == 200
        ip = non_loopback_ip()
        if ip:  # bound to all interfaces: a request by the machine's address is not a foreign Host
            r = p.call("GET", "/health", headers={"x-api-key": self.LKEY, "host": f"{ip}:{p.port}"})
            assert r.status == 200, r.data


class TestConfinementHTTP:
    """Items 5, 6, 13, 14: request framing, origins, header limit, rate limit identity."""

    @pytest.mark.parametrize("order", ["cl-first", "te-first", "te-uppercase"])
    def test_content_length_with_transfer_encoding_is_400_and_closes(self, dbx, order):
        smuggled = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        body = jbytes(base_req())
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        cl, te = b"content-length: %d\r\n" % len(chunked), b"transfer-encoding: chunked\r\n"
        framing = {"cl-first": cl + te, "te-first": te + cl,
                   "te-uppercase": b"Transfer-Encoding: CHUNKED\r\n" + cl}[order]
        head = (b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                b"anthropic-version: 2023-06-01\r\n" + framing + b"\r\n")
        with socket.create_connection(("127.0.0.1", dbx.proxy.port), timeout=10) as s:
            s.sendall(head + chunked)
            f = s.makefile("rb")
            status, _headers, data = read_response(f)
            time.sleep(0.2)
            try:
                s.sendall(smuggled)  # a second request on the same connection
            except OSError:
                pass
            s.settimeout(5)
            try:
                rest = f.read()
            except (TimeoutError, OSError) as exc:
                rest = f"(no EOF: {exc!r})".encode()
        assert status == 400 and json.loads(data)["error"]["type"] == "invalid_request_error", (status, data)
        assert rest == b"", f"the connection stayed open and answered again: {rest[:300]!r}"
        assert dbx.fake.requests == []

    @pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1:5173", "http://[::1]:8080",
                                        "http://localhost", "http://127.0.0.2"])
    def test_foreign_loopback_origin_cannot_write(self, tmp_path, make_proxy, origin):
        p = make_proxy({"LYNKR_TOOLS": "*"})
        r = p.call("POST", "/v1/tools/fs_write", {"path": "pwned.txt", "content": "from a web page"},
                   headers={"origin": origin})
        assert r.status == 403 and r.etype == "permission_error", (origin, r.status, r.data[:300])
        assert not (tmp_path / "pwned.txt").exists()
        assert p.call("POST", "/v1/tools/fs_read", {"path": "pwned.txt"}, headers={"origin": origin}).status == 403
        assert p.call("GET", "/v1/sessions", headers={"origin": origin}).status == 403  # transcripts

    def test_own_origin_no_origin_and_allowlisted_origin(self, tmp_path, make_proxy):
        p = make_proxy({"LYNKR_TOOLS": "*"})
        own = f"http://127.0.0.1:{p.port}"
        written = conf_call(p, "fs_write", {"path": "own.txt", "content": "dashboard"}, {"origin": own})
        assert written["is_error"] is False, written
        assert (tmp_path / "own.txt").read_text() == "dashboard"
        assert conf_call(p, "fs_write", {"path": "cli.txt", "content": "curl"})["is_error"] is False  # no Origin
        r = p.call("POST", "/v1/tools/fs_write", {"path": "near.txt", "content": "no"},
                   headers={"origin": f"http://127.0.0.1:{p.port + 1}"})  # the next port: another local server
        assert r.status == 403 and r.etype == "permission_error", r.data[:300]
        assert not (tmp_path / "near.txt").exists()
        assert (tmp_path / "cli.txt").read_text() == "curl"
        q = make_proxy({"LYNKR_TOOLS": "*", "LYNKR_ALLOWED_ORIGINS": "http://localhost:3000"})
        assert conf_call(q, "fs_write", {"path": "dev.txt", "content": "dev"},
                         {"origin": "http://localhost:3000"})["is_error"] is False
        r = q.call("POST", "/v1/tools/fs_write", {"path": "dev2.txt", "content": "no"},
                   headers={"origin": "http://localhost:3001"})
        assert r.status == 403 and r.etype == "permission_error", r.data[:300]
        assert not (tmp_path / "dev2.txt").exists()

    @pytest.mark.parametrize("shape", ["one-header", "many-headers"])
    @pytest.mark.parametrize("pieces", [False, True], ids=["one-write", "4k-writes"])
    @pytest.mark.parametrize("kib,ok", [(60, True), (70, False), (100, False)])
    def test_header_limit_is_64_kib(self, dbx, kib, ok, pieces, shape):
        if shape == "one-header":
            pads = f"X-Pad: {'x' * (kib * 1024)}\r\n"
        else:  # 1 KiB lines: the limit is on the whole head, not one field
            pads = "".join(f"X-Pad-{i:03d}: {'y' * (1024 - 14)}\r\n" for i in range(kib))
        req = (f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{pads}Connection: close\r\n\r\n").encode()
        out = b""
        with socket.create_connection(("127.0.0.1", dbx.proxy.port), timeout=10) as s:
            try:
                for i in range(0, len(req), 4096 if pieces else len(req)):
                    if select.select([s], [], [], 0)[0]:
                        break  # answered mid-head: stop sending (more bytes could make the close a reset)
                    s.sendall(req[i : i + (4096 if pieces else len(req))])
                    if pieces:
                        time.sleep(0.002)
            except OSError:  # refused mid-head: the answer is already waiting
                pass
            try:
                while data := s.recv(65536):
                    out += data
            except ConnectionResetError:
                pass
        status = int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.") else None
        if ok:
            assert status == 200, out[:300]
        else:
            assert status in (431, 400), out[:300]

    def test_varying_client_key_does_not_escape_the_rate_limit(self, rel_stack):
        st_ = rel_stack("dbx", RATE_LIMIT_REQUESTS_PER_MIN=2)
        p = st_.proxy
        body = jbytes(base_req())
        statuses = []
        for i in range(3):
            hdrs = {"content-type": "application/json", "anthropic-version": "2023-06-01",
                    "x-api-key": f"made-up-key-{i}"}
            statuses.append(rel_raw_call(p.port, "POST", "/v1/messages", hdrs, body)[0])
        assert statuses == [200, 200, 429], statuses
        bearer = {"content-type": "application/json", "authorization": "Bearer yet-another-made-up-key"}
        assert rel_raw_call(p.port, "POST", "/v1/messages", bearer, body)[0] == 429
        assert len(st_.fake.requests) == 2


# -- models, bad input --


class TestRoutes:
    def test_models_list(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake, MODEL_MAP="claude-custom-1=dbx-a,claude-*haiku*=dbx-h,claude-*=dbx-b"))
        r = p.call("GET", "/v1/models")
        assert r.status == 200
        j = r.json()
        ids = [m["id"] for m in j["data"]]
        assert ids and all("claude" in i.lower() for i in ids), ids
        assert "claude-custom-1" in ids and not any("*" in i for i in ids), ids
        for m in j["data"]:
            assert m["type"] == "model" and m["display_name"] and re.match(r"\d{4}-\d\d-\d\dT", m["created_at"]), m
        assert j["first_id"] == ids[0] and j["last_id"] == ids[-1] and j["has_more"] is False
        assert len(ids) == len(set(ids)) and len(ids) >= 2, ids
        page = p.call("GET", "/v1/models?limit=1").json()
        assert [m["id"] for m in page["data"]] == ids[:1] and page["has_more"] is True
        nxt = p.call("GET", f"/v1/models?limit=1000&after_id={ids[0]}").json()
        assert [m["id"] for m in nxt["data"]] == ids[1:]
        prev = p.call("GET", f"/v1/models?before_id={ids[-1]}").json()
        assert [m["id"] for m in prev["data"]] == ids[:-1]

    BAD: ClassVar[list] = [
        ("malformed-json", b'{"model": "claude", ', ("json",)),
        ("empty-body", b"", ("json", "body")),
        ("body-is-array", [base_req()], ("object", "body")),
        ("messages-missing", {"model": "claude-x", "max_tokens": 10}, ("messages",)),
        ("messages-not-list", base_req(messages={"role": "user"}), ("messages",)),
        ("messages-empty", base_req(messages=[]), ("messages",)),
        ("message-not-object", base_req(messages=["hi"]), ("messages",)),
        ("bad-role", base_req(messages=[{"role": "robot", "content": "hi"}]), ("role",)),
        ("content-int", base_req(messages=[user(42)]), ("content",)),
        ("content-block-not-object", base_req(messages=[user([42])]), ("content",)),
        ("model-missing", {"max_tokens": 10, "messages": [user("hi")]}, ("model",)),
        ("model-not-string", base_req(model=7), ("model",)),
        ("max-tokens-zero", base_req(max_tokens=0), ("max_tokens",)),
        ("max-tokens-negative", base_req(max_tokens=-5), ("max_tokens",)),
        ("max-tokens-string", base_req(max_tokens="100"), ("max_tokens",)),
        ("max-tokens-float", base_req(max_tokens=1.5), ("max_tokens",)),
        ("max-tokens-bool", base_req(max_tokens=True), ("max_tokens",)),
        ("stream-not-bool", base_req(stream="yes"), ("stream",)),
        ("tools-not-list", base_req(tools={"name": "x"}), ("tools",)),
        ("system-not-text", base_req(system=5), ("system",)),
    ]

    @pytest.mark.parametrize("body,words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
    def test_bad_input_400_names_field(self, dbx, body, words):
        r = dbx.proxy.post(body)
        assert r.status == 400, (r.status, r.data)
        assert r.etype == "invalid_request_error"
        assert any(w in r.emsg.lower() for w in words), f"message should name {words}: {r.emsg}"
        assert dbx.fake.requests == []

    def test_bad_input_count_tokens(self, dbx):
        r = dbx.proxy.post({"model": "claude-x"}, path="/v1/messages/count_tokens")
        assert r.status == 400 and r.etype == "invalid_request_error" and "messages" in r.emsg

    def test_unknown_fields_tolerated_and_not_forwarded(self, dbx):
        r = dbx.proxy.post(base_req(some_future_field={"a": 1}, container="c1", mcp_servers=[]))
        assert r.status == 200, r.data
        assert not {"some_future_field", "container", "mcp_servers"} & set(dbx.fake.last.body)

    def test_missing_max_tokens_gets_default(self, dbx):
        body = base_req()
        del body["max_tokens"]
        assert dbx.proxy.post(body).status == 200
        assert dbx.fake.last.body["max_tokens"] == 4096

    def test_missing_max_tokens_custom_default(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake, MODEL_MAX_TOKENS_DEFAULT=1234))
        body = base_req()
        del body["max_tokens"]
        assert p.post(body).status == 200
        assert fake.last.body["max_tokens"] == 1234


# -- bodies that parse but must still get a 400, never a 500 --


class TestBadBodies:
    @pytest.mark.parametrize("raw,needle", [
        (b'{"model":"m","max_tokens":Infinity,"messages":[{"role":"user","content":"hi"}]}', "Infinity"),
        (b'{"model":"m","max_tokens":5,"temperature":NaN,"messages":[{"role":"user","content":"hi"}]}', "NaN"),
        (b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"\\ud800"}]}', None),
    ], ids=["infinity", "nan", "lone-surrogate"])
    def test_never_a_500(self, dbx, raw, needle):
        r = dbx.proxy.post(raw)
        assert r.status in (200, 400), (r.status, r.data[:500])
        if needle:
            assert r.status == 400 and r.etype == "invalid_request_error" and needle in r.emsg, r.data

    @pytest.mark.parametrize("depth", [900, 976, 977, 990])
    def test_deeply_nested_tool_input(self, dbx, depth):
        nested = '{"k":' * depth + '"leaf"' + "}" * depth  # written by hand: json.dumps cannot nest this deep
        body = base_req(messages=[user("x"), assistant([tool_use("toolu_1", "Bash", {"v": "NESTED"})]),
                                  user([tool_result("toolu_1", "ok")])])
        raw = jbytes(body).replace(b'"NESTED"', nested.encode())
        r = dbx.proxy.post(raw)
        assert r.status in (200, 400), (r.status, r.data[:300])
        if r.status == 400:
            assert r.etype == "invalid_request_error" and "nest" in r.emsg, r.data

    def test_task_sizes_are_bounded(self, make_proxy):
        p = make_proxy({"LYNKR_TOOLS": "*"})
        err = tool_err(p.port, "workspace_task_create", {"title": "t" * 100_000})
        assert "too long" in err and "500" in err
        err = tool_err(p.port, "workspace_task_create", {"title": "ok", "description": "d" * 10_000_000})
        assert "too long" in err
        assert json.loads(tool_ok(p.port, "workspace_task_create", {"title": "a real task"}))["title"] == "a real task"


# -- load shedding, rate limit, health probes --


class TestLoadShedding:
    def test_burst_over_concurrency_limit_is_refused_at_once(self, rel_stack):
        st_ = rel_stack("dbx", MAX_CONCURRENT_REQUESTS=2)
        p, fake = st_.proxy, st_.fake
        words = "slow stream number one two three four five six"
        for _ in range(2):
            fake.push(stream_reply(oai_sse(oai_stream(words, pieces=8)), gap=0.25))
        with ThreadPoolExecutor(12) as ex:
            admitted = [ex.submit(p.post, base_req(stream=True, messages=[user(f"admitted {i}")]), timeout=30)
                        for i in range(2)]
            wait_for(lambda: len(fake.requests) == 2 or any(f.done() for f in admitted), 10, "two admitted streams")
            assert len(fake.requests) == 2, f"MAX_CONCURRENT_REQUESTS=2 admitted only {len(fake.requests)}: " + \
                ", ".join(f"{f.result().status} {f.result().data[:200]!r}" for f in admitted if f.done())

            def burst(i: int) -> tuple[Resp, float]:
                t0 = time.monotonic()
                return p.post(base_req(messages=[user(f"burst {i}")]), timeout=10), time.monotonic() - t0

            shed = list(ex.map(burst, range(8)))
            # probes and metrics are never refused, even at the limit
            assert p.call("GET", "/health/live").status == 200
            metrics = rel_scrape(p)
            assert not any(f.done() for f in admitted), "the burst outlived the admitted streams: not a burst"
            for r, took in shed:
                assert r.status == 503 and r.etype == "api_error", (r.status, r.data[:300])
                assert took < 1.0, f"an overload answer took {took:.2f}s: queued instead of shed"
                assert int(r.headers.get("retry-after", "0")) >= 1 and r.headers.get("x-should-retry") == "true"
            assert metrics.get("lynkr_rejected_requests_total", reason="concurrency") == 8
            assert metrics.get("lynkr_in_flight_streams") == 2
            for f in admitted:
                assert rel_answer(f.result(), True) == words
        assert len(fake.requests) == 2, "a shed request reached the upstream"
        assert rel_answer(p.post(base_req()), False) == REL_TEXT["dbx"]  # capacity is back

    def test_rate_limit_keys_on_the_verified_identity(self, rel_stack, make_proxy, new_dbx):
        st_ = rel_stack("dbx", RATE_LIMIT_REQUESTS_PER_MIN=3)
        p, fake = st_.proxy, st_.fake
        # no LYNKR_API_KEY: an x-api-key is a header anyone can vary; the address decides
        varying = [p.post(base_req(), headers={"x-api-key": f"made-up-{n}"}) for n in range(4)]
        assert [r.status for r in varying] == [200, 200, 200, 429], [r.status for r in varying]
        r = varying[-1]
        assert r.etype == "rate_limit_error" and "RATE_LIMIT_REQUESTS_PER_MIN" in r.emsg
        assert REQ_ID.match(r.json().get("request_id", ""))
        assert 1 <= int(r.headers["retry-after"]) <= 21, r.headers  # 3/min: one request every 20 s
        assert len(fake.requests) == 3
        assert all(p.call("GET", path).status == 200 for path in ("/health/live", "/health/ready", "/metrics") * 3)
        assert rel_scrape(p).get("lynkr_rejected_requests_total", reason="rate_limit") == 1
        # with LYNKR_API_KEY the verified key is the client: x-api-key and Bearer are the same client
        keyed = make_proxy({**dbx_env(new_dbx()), "RATE_LIMIT_REQUESTS_PER_MIN": "2", "LYNKR_API_KEY": "the-key",
                            "UPSTREAM_MAX_RETRIES": "0"})
        assert keyed.post(base_req(), headers={"x-api-key": "the-key"}).status == 200
        assert keyed.post(base_req(), headers={"x-api-key": None, "authorization": "Bearer the-key"}).status == 200
        assert keyed.post(base_req(), headers={"x-api-key": "the-key"}).status == 429
        assert keyed.post(base_req(), headers={"x-api-key": "wrong"}).status == 401  # never reaches the limiter

    def test_rate_limit_per_address_without_key(self, rel_stack):
        st_ = rel_stack("dbx", RATE_LIMIT_REQUESTS_PER_MIN=2)
        p = st_.proxy
        hdrs = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
        body = jbytes(base_req())
        assert [rel_raw_call(p.port, "POST", "/v1/messages", hdrs, body)[0] for _ in range(2)] == [200, 200]
        status, headers, data = rel_raw_call(p.port, "POST", "/v1/messages", hdrs, body)
        assert status == 429 and json.loads(data)["error"]["type"] == "rate_limit_error", data
        assert int(headers["retry-after"]) >= 1
        other = "127.0.0.2"  # another client address on the loopback network
        assert [rel_raw_call(p.port, "POST", "/v1/messages", hdrs, body, source=other)[0] for _ in range(3)] == \
            [200, 200, 429]


class TestHealthProbes:
    def test_live_and_ready_when_configured(self, rel_stack):
        p = rel_stack("dbx").proxy
        live, ready = p.call("GET", "/health/live"), p.call("GET", "/health/ready")
        assert live.status == 200 and live.json()["status"] == "live"
        assert ready.status == 200 and ready.json()["ready"] is True, ready.data

    def test_not_ready_without_provider(self, make_proxy):
        p = make_proxy()
        assert p.call("GET", "/health/live").status == 200
        ready = p.call("GET", "/health/ready")
        assert ready.status == 503 and ready.json()["ready"] is False
        assert "provider" in ready.json()["reason"], ready.data


# -- property-based fuzz against one live proxy --

REL_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)
REL_TEXT_BLOCK = st.builds(lambda t: {"type": "text", "text": t}, st.text(max_size=30))
REL_BLOCK = st.one_of(
    REL_TEXT_BLOCK,
    st.builds(lambda d, mt: {"type": "image", "source": {"type": "base64", "media_type": mt, "data": d}},
              st.sampled_from([PNG_B64, "", "!!not-base64"]), st.sampled_from(["image/png", "image/gif", "text/plain"])),
    st.builds(lambda i, n, inp: {"type": "tool_use", "id": i, "name": n, "input": inp},
              st.text(max_size=10), st.sampled_from(["get_weather", "fs_read", "", "Bash"]), REL_JSON),
    st.builds(lambda i, c, e: {"type": "tool_result", "tool_use_id": i, "content": c, "is_error": e},
              st.text(max_size=10), st.one_of(st.text(max_size=20), st.lists(REL_TEXT_BLOCK, max_size=3), REL_JSON),
              st.one_of(st.booleans(), REL_JSON)),
    st.builds(lambda t, s: {"type": "thinking", "thinking": t, "signature": s}, st.text(max_size=20), st.text(max_size=10)),
    st.dictionaries(st.sampled_from(["type", "text", "id", "name", "input", "content", "source", "cache_control"]),
                    REL_JSON, max_size=4),
    REL_JSON,
)
REL_MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]),
                           "content": st.one_of(st.text(max_size=40), st.lists(REL_BLOCK, max_size=4))}),
    st.fixed_dictionaries({"role": st.one_of(st.sampled_from(["system", "tool", "developer", ""]), REL_JSON),
                           "content": REL_JSON}),
    REL_JSON,
)
REL_TOOL = st.one_of(
    st.fixed_dictionaries({"name": st.one_of(st.sampled_from(["get_weather", "Bash", "fs_read"]), st.text(max_size=12)),
                           "description": st.text(max_size=20),
                           "input_schema": st.one_of(st.just(WEATHER_SCHEMA), st.just(BASH_SCHEMA), REL_JSON)}),
    st.fixed_dictionaries({"type": st.sampled_from(["web_search_20250305", "bash_20250124", "custom"]),
                           "name": st.sampled_from(["web_search", "bash", "x"])}),
    REL_JSON,
)
REL_FIELDS = [  # (key, strategy, chance in 10 of being present)
    ("model", st.one_of(st.sampled_from(["claude-sonnet-4-5", "claude-opus-5-5", "claude-haiku-4-5"]), REL_JSON), 9),
    ("max_tokens", st.one_of(st.integers(-10, 300000), REL_JSON), 8),
    ("messages", st.one_of(st.lists(REL_MESSAGE, min_size=1, max_size=5), REL_JSON), 9),
    ("stream", st.one_of(st.booleans(), REL_JSON), 5),
    ("system", st.one_of(st.text(max_size=30), st.lists(REL_BLOCK, max_size=3), REL_JSON), 3),
    ("tools", st.one_of(st.lists(REL_TOOL, max_size=3), REL_JSON), 3),
    ("tool_choice", st.one_of(st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"},
                                               {"type": "tool", "name": "get_weather"},
                                               {"type": "tool", "name": "fs_read"}]), REL_JSON), 2),
    ("thinking", st.one_of(st.builds(lambda b: {"type": "enabled", "budget_tokens": b}, st.integers(-5, 200000)),
                           st.just({"type": "adaptive"}), REL_JSON), 2),
    ("temperature", st.one_of(st.floats(), REL_JSON), 2),
    ("top_k", REL_JSON, 1),
    ("top_p", REL_JSON, 1),
    ("stop_sequences", st.one_of(st.lists(st.text(max_size=5), max_size=3), REL_JSON), 2),
    ("metadata", REL_JSON, 2),
    ("output_config", REL_JSON, 1),
    ("context_management", REL_JSON, 1),
    ("container", REL_JSON, 1),
]


@st.composite
def rel_bodies(draw) -> dict:
    body = {}
    for key, strategy, chance in REL_FIELDS:
        if draw(st.integers(0, 9)) < chance:
            body[key] = draw(strategy)
    return body


REL_RAW_BODY = st.one_of(
    rel_bodies().map(jbytes),
    rel_bodies().map(jbytes),
    rel_bodies().map(lambda b: jbytes(b)[: len(jbytes(b)) // 2]),  # truncated JSON
    REL_JSON.map(jbytes),
    st.binary(max_size=200),
    st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),  # deep nesting
    st.integers(1, 100_000).map(lambda n: b'{"messages":' * n + b"1" + b"}" * n),
    # values that parse but trip later steps: lone surrogates, NaN/Infinity literals, huge integers,
    # and a valid request whose tool input nests near the parser's limit
    st.sampled_from(["\\ud800", "\\udfff", "a\\ud83d", "\\ud83d\\ude00"]).map(
        lambda t: b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"' + t.encode() + b'"}]}'),
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"9" * 5000]).map(
        lambda v: b'{"model":"m","max_tokens":' + v + b',"messages":[{"role":"user","content":"hi"}]}'),
    st.integers(900, 1000).map(
        lambda n: b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"assistant",'
                  b'"content":[{"type":"tool_use","id":"t1","name":"Bash","input":{"v":' + b'{"k":' * n + b'1'
                  + b"}" * n + b'}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1",'
                  b'"content":"ok"}]}]}'),
)
REL_RESERVED = {"host", "content-length", "transfer-encoding", "connection", "expect", "te", "upgrade", "trailer"}
REL_HDR_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
                        max_size=60).map(str.strip)
REL_HEADERS = st.dictionaries(
    st.one_of(st.sampled_from(["anthropic-version", "anthropic-beta", "content-type", "x-api-key", "authorization",
                               "x-session-id", "x-claude-code-session-id", "accept", "accept-encoding", "origin",
                               "user-agent", "x-stainless-retry-count", "anthropic-dangerous-direct-browser-access"]),
              st.text(alphabet=string.ascii_lowercase + string.digits + "-_", min_size=1, max_size=20)
              .filter(lambda n: n not in REL_RESERVED)),
    REL_HDR_VALUE, max_size=6)


@pytest.fixture(scope="module")
def rel_fuzz_stack(tmp_path_factory):
    fake = FakeDatabricks()
    yield from shared_stack(tmp_path_factory, "fuzz", fake, dbx_env(fake))


class TestFuzzLiveProxy:
    @given(method=st.sampled_from(["POST"] * 6 + ["GET", "PUT"]),
           path=st.sampled_from(["/v1/messages", "/v1/messages?beta=true", "/v1/messages/count_tokens",
                                 "/v1/messages/", "/v1/complete"]),
           host=st.sampled_from(["127.0.0.1", "localhost:1", "evil.example", "[::1]"]),
           headers=REL_HEADERS, body=REL_RAW_BODY)
    @settings(max_examples=250, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def test_never_500_hang_or_silent_drop(self, rel_fuzz_stack, method, path, host, headers, body):
        p = rel_fuzz_stack.proxy
        head = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        with socket.create_connection(("127.0.0.1", p.port), timeout=20) as s:
            s.sendall(raw)
            f = s.makefile("rb")
            try:
                first = f.peek(1) if hasattr(f, "peek") else b"x"
            except TimeoutError:
                pytest.fail(f"no answer within 20 s (a hang) to {raw[:400]!r}")
            assert first, f"connection dropped without an answer to {raw[:400]!r}"
            status, rhdrs, data = read_response(f)
        where = f"{status} for {raw[:600]!r}: {data[:400]!r}"
        assert status < 500, where
        if status >= 400:
            j = json.loads(data)
            assert j["type"] == "error" and isinstance(j["error"]["type"], str) and j["error"]["message"], where
            assert REQ_ID.match(rhdrs.get("request-id", "")), where
        elif "text/event-stream" in rhdrs.get("content-type", ""):
            assemble(parse_sse(data)).ok()
        else:
            j = json.loads(data)
            assert j.get("type") == "message" or isinstance(j.get("input_tokens"), int), where


# == 20. App lifecycle ==

# -- SIGTERM and SIGKILL --


class TestShutdown:
    def test_sigterm_mid_stream(self, rel_stack):
        st_ = rel_stack("dbx")
        p, fake = st_.proxy, st_.fake
        idle = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)  # a keep-alive connection, left idle
        idle.request("GET", "/health")
        assert idle.getresponse().read() and idle.sock is not None
        words = "one two three four five six seven eight"
        fake.push(stream_reply(oai_sse(oai_stream(words, pieces=8)), gap=0.2))
        conn, resp = open_stream(p.port, base_req(stream=True))
        it = iter_events(resp)
        events = []
        for _, name, d in it:
            events.append((name, d))
            if name == "content_block_delta":
                break
        p.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        p.wait_log(lambda o: o.get("msg") == "shutting down", 2, "'shutting down'")
        assert time.monotonic() - t0 < 1.0

        def attempt(method: str, path: str, body: Any = None) -> str:
            try:
                r = call(p.port, method, path, body, timeout=5)
            except (ConnectionRefusedError, http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                return "refused"
            return str(r.status)

        ready = attempt("GET", "/health/ready")
        assert ready in ("refused", "503"), f"/health/ready during drain: {ready}"
        new = attempt("POST", "/v1/messages", base_req())
        assert new in ("refused", "503"), f"a new request was served during drain: {new}"
        idle.sock.settimeout(3)
        try:
            leftover = idle.sock.recv(1024)
        except (ConnectionResetError, TimeoutError) as exc:
            leftover = repr(exc).encode()
        assert leftover == b"", f"the idle keep-alive connection was not closed at once: {leftover!r}"
        events += [(name, d) for _, name, d in it]
        conn.close()
        assert block_summary(assemble(events).ok()["content"]) == [("text", words)]
        assert p.proc.wait(10) == 0
        assert len(fake.requests) == 1
        assert any(o.get("msg") == "stopped" for o in p.logs())

    def test_sigkill_mid_write_keeps_every_acknowledged_turn(self, tmp_path, make_proxy):
        class EchoDbx(FakeDatabricks):
            def default(self, rec: Recorded) -> Reply:
                last = rec.body["messages"][-1]["content"]
                words = f"reply to {last}"
                if rec.body.get("stream"):
                    return stream_reply(oai_sse(oai_stream(words, pieces=4)), gap=0.001)
                return json_reply(oai_completion(words))

        fake = EchoDbx()
        try:
            env = {**dbx_env(fake), "LYNKR_DATA_DIR": str(tmp_path / "data")}
            p = make_proxy(env)
            acked: dict[str, list[str]] = {f"kill-{k}": [] for k in range(4)}
            stop = threading.Event()

            def client(session: str) -> None:
                history: list[dict] = []
                i = 0
                while not stop.is_set():
                    ask = f"{session} question {i}"
                    body = base_req(messages=[*history, user(ask)], stream=i % 2 == 0)
                    try:
                        r = call(p.port, "POST", "/v1/messages", body, {"x-session-id": session}, timeout=10)
                        reply = r.stream().ok() if body["stream"] else r.json()
                        assert r.status == 200 and reply.get("stop_reason")
                    except (OSError, AssertionError, ValueError, http.client.HTTPException):  # lynkr died: not acked
                        return
                    acked[session].append(f"reply to {ask}")
                    history += [user(ask), assistant([text(f"reply to {ask}")])]
                    i += 1

            threads = [threading.Thread(target=client, args=(s,)) for s in acked]
            for t in threads:
                t.start()
            wait_for(lambda: all(len(v) >= 4 for v in acked.values()), 30, "turns to be written")
            p.proc.kill()  # SIGKILL while the four clients keep writing
            stop.set()
            for t in threads:
                t.join(15)
            assert p.proc.wait(5) == -signal.SIGKILL
            p2 = make_proxy(env)
            for session, replies in acked.items():
                r = p2.call("GET", f"/v1/sessions/{session}")
                assert r.status == 200, (session, r.data[:300])
                stored = [result_text(t["content"]) for t in r.json()["turns"]
                          if t["kind"] == "assistant" and t["model"] is not None]
                assert stored[: len(replies)] == replies, f"{session}: acknowledged turns missing or reordered"
                assert len(stored) <= len(replies) + 1, f"{session}: more replies than requests: {stored}"
                asked = [result_text(t["content"]) for t in r.json()["turns"] if t["kind"] == "user"]
                assert asked[: len(replies)] == [x.removeprefix("reply to ") for x in replies]
            db = sqlite3.connect(tmp_path / "data" / "sessions.db")
            try:
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            finally:
                db.close()
        finally:
            fake.close()


# == 21. CLI ==

# -- doctor --


class TestDoctor:
    def doctor(self, tmp_path: Path, oa_url: str, an_url: str) -> subprocess.CompletedProcess:
        cfg = tmp_path / "doctor.toml"
        cfg.write_text(textwrap.dedent(f"""\
            [providers.{PV_OA}]
            kind = "openai"
            base_url = "{oa_url}/v1"
            api_key = "$PV_OA_KEY"

            [providers.{PV_AN}]
            kind = "anthropic"
            base_url = "{an_url}"
            api_key = "$PV_AN_KEY"
            model = "claude-sonnet-4-5"

            [router]
            default = "{PV_OA},gpt-4.1"
            think = "{PV_AN},claude-opus-4-1"
            """))
        return run_lynkr(tmp_path, {**PV_KEY_ENV, "UPSTREAM_READ_TIMEOUT_MS": 1500},
                         args=("doctor", "--config", str(cfg)), timeout=30)

    @staticmethod
    def output(r: subprocess.CompletedProcess) -> str:
        out = r.stdout + r.stderr
        for key in (OPENAI_KEY, ANTH_KEY):
            assert key not in out, f"doctor printed a whole key:\n{out}"
        return out

    def test_all_providers_answer(self, tmp_path):
        oa, an = FakeOpenAI(), FakeAnthropic()
        try:
            r = self.doctor(tmp_path, oa.url, an.url)
            out = self.output(r)
            assert r.returncode == 0, out
            for name in (PV_OA, PV_AN):
                assert name in out, out
            for key in (OPENAI_KEY, ANTH_KEY):  # masked like `sk-t…(N chars)`
                assert f"{key[:4]}…" in out or f"{key[:4]}..." in out, out
            assert "OK" in out and "FAIL" not in out, out
            assert "default" in out and "think" in out, out  # the routes are listed
            assert oa.url in out and an.url in out, out  # base URLs
            assert "openai" in out and "anthropic" in out, out  # kinds / presets
            assert len(oa.requests) == 1 and len(an.requests) == 1, out
            oab, anb = oa.last.body, an.last.body
            assert oab["model"] == "gpt-5" and oab.get("max_completion_tokens") == 1, oab  # the preset's default model
            assert anb["model"] == "claude-sonnet-4-5" and anb.get("max_tokens") == 1, anb
        finally:
            oa.close()
            an.close()

    @pytest.mark.parametrize("failure", ["closed", "erroring", "unauthorized", "hanging"])
    def test_one_provider_failing_exits_1(self, tmp_path, failure):
        oa, an = FakeOpenAI(), FakeAnthropic()
        try:
            an_url = an.url
            if failure == "closed":
                an_url = f"http://127.0.0.1:{free_port()}"
            elif failure == "erroring":
                an.default = lambda rec: an.error(500, "Internal server error", "api_error")
            elif failure == "unauthorized":
                an.key = "sk-ant-some-other-key"
            else:
                an.default = lambda rec: Reply(200, b"{}", (("content-type", "application/json"),), hang=60)
            t0 = time.monotonic()
            r = self.doctor(tmp_path, oa.url, an_url)
            out = self.output(r)
            assert r.returncode == 1, out
            assert "FAIL" in out and "OK" in out, out
            fail_lines = [x for x in out.splitlines() if "FAIL" in x]
            assert any(PV_AN in x for x in fail_lines) and not any(PV_OA in x for x in fail_lines), out
            assert time.monotonic() - t0 < 25
        finally:
            oa.close()
            an.close()

    def test_env_only_preset_without_key_fails(self, tmp_path):
        r = run_lynkr(tmp_path, {"MODEL_PROVIDER": "openai", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
                      args=("doctor",), timeout=30)
        out = r.stdout + r.stderr
        assert r.returncode == 1 and "FAIL" in out and "OPENAI_API_KEY" in out, out

    def test_env_only_preset(self, tmp_path):
        oa = FakeOpenAI()
        try:
            r = run_lynkr(tmp_path, PV_CASES["openai"].env(oa), args=("doctor",), timeout=30)
            out = self.output(r)
            assert r.returncode == 0 and "openai" in out and OPENAI_KEY[:4] in out, out
            assert len(oa.requests) == 1
        finally:
            oa.close()


# == 22. End to end ==

# -- helpers several of this section's sub-topics use --


def az_tool_turns(name: str, args: dict, final: Callable[[str], str]) -> Callable[[Recorded], Reply]:
    def respond(rec: Recorded) -> Reply:
        b = rec.body
        last = b["messages"][-1]["content"]
        results = [blk for blk in last if blk.get("type") == "tool_result"] if isinstance(last, list) else []
        if results:
            msg = anth_message([text(final(result_text(results[-1]["content"])))], model=b["model"])
        else:
            msg = anth_message([text("Let me run that."), tool_use("toolu_01E2E", name, args)], model=b["model"],
                               stop_reason="tool_use")
        return stream_reply(anth_sse(anth_events(msg))) if b.get("stream") else json_reply(msg)

    return respond


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def sdk_weather_round_trip(client: Any, mode: str, result: str, **kw: Any) -> tuple[Any, Any]:
    """The anthropic SDK's two-turn get_weather round trip through lynkr (messages.create, or messages.stream
    with its text deltas checked against the final message): turn 1 must call get_weather for Paris, turn
    2 sends `result` back. Returns both final messages."""

    def turn(messages: list[dict]) -> Any:
        args = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "tools": [GET_WEATHER], "messages": messages, **kw}
        if mode == "create":
            return client.messages.create(**args)
        with client.messages.stream(**args) as s:
            pieces = list(s.text_stream)
            final = s.get_final_message()
        assert "".join(pieces) == "".join(b.text for b in final.content if b.type == "text")
        return final

    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = turn(messages)
    calls_ = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use" and [(c.name, c.input) for c in calls_] == [("get_weather", {"city": "Paris"})]
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls_[0].id, "content": result}]}]
    return first, turn(messages)


def claude_bin() -> str | None:
    for c in (os.environ.get("LYNKR_CLAUDE_BIN"), str(CLAUDE_DIR / "node_modules/.bin/claude"), shutil.which("claude")):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def pv_claude(claude: str, proxy: Proxy, tmp: Path, prompt: str, model: str | None = None,
              tools: str | None = "Bash") -> dict:
    home = tmp / "claude-home"
    home.mkdir(exist_ok=True)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "ANTHROPIC_BASE_URL": proxy.url,
           "ANTHROPIC_API_KEY": CLIENT_KEY, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
           "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1", "CLAUDE_CODE_MAX_RETRIES": "1"}
    cmd = [claude, "--bare", "--no-session-persistence", "--output-format", "json",
           *(["--tools", tools, "--allowedTools", tools] if tools else []),
           *(["--model", model] if model else []), "-p", prompt]
    p = subprocess.run(cmd, check=False, cwd=tmp, env=env, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    diag = f"exit {p.returncode}\nstdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}\nproxy:\n{proxy.stderr[-3000:]}"
    assert p.returncode == 0, diag
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out.get("is_error") is False, diag
    return out


# -- Databricks and Azure: the official anthropic SDK and the real Claude Code CLI --

TURNS = {"dbx": dbx_tool_turns, "az": az_tool_turns}


class TestAnthropicSDK:
    @pytest.fixture
    def sdk(self):
        require_e2e("the anthropic Python SDK", importlib.util.find_spec("anthropic") is not None)
        import anthropic

        return anthropic

    @pytest.mark.parametrize("mode", ["create", "stream"])
    @pytest.mark.parametrize("provider", ["dbx", "az"])
    def test_tool_round_trip(self, sdk, request, provider, mode):
        stack: Stack = request.getfixturevalue(provider)
        responder = TURNS[provider]("get_weather", {"city": "Paris"}, lambda out: f"It is {out} in Paris.")
        stack.fake.push(responder, responder)
        client = sdk.Anthropic(base_url=stack.proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
        first, second = sdk_weather_round_trip(client, mode, "18C and sunny")
        assert first.model == "claude-sonnet-4-5"
        assert second.stop_reason == "end_turn"
        assert [b.type for b in second.content] == ["text"] and second.content[0].text == "It is 18C and sunny in Paris."
        assert second.usage.output_tokens > 0
        assert len(stack.fake.requests) == 2

    @pytest.mark.parametrize("provider", ["dbx", "az"])
    def test_sdk_sees_typed_errors(self, sdk, request, provider):
        stack: Stack = request.getfixturevalue(provider)
        stack.fake.push(dbx_error(429, "REQUEST_LIMIT_EXCEEDED", "slow down") if provider == "dbx" else
                        json_reply(anth_error(429, "rate_limit_error", "slow down"), 429, (("retry-after", "3"),)))
        client = sdk.Anthropic(base_url=stack.proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
        with pytest.raises(sdk.RateLimitError) as ei:
            client.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        assert ei.value.status_code == 429 and "slow down" in str(ei.value)
        assert REQ_ID.match(ei.value.response.headers.get("request-id", "")) or provider == "az"

    def test_count_tokens_and_models(self, sdk, new_dbx, make_proxy):
        fake = new_dbx()  # a fresh proxy: a shared one's answers would calibrate the count
        dbx = Stack(fake, make_proxy(dbx_env(fake)))
        client = sdk.Anthropic(base_url=dbx.proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
        n = client.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hello " * 100}])
        assert n.input_tokens >= 101  # one token per "hello ", plus the turn; an estimate errs high
        models = client.models.list()
        assert models.data and all("claude" in m.id for m in models.data)


class TestClaudeCodeCLI:
    @pytest.fixture
    def claude(self) -> str:
        b = claude_bin()
        require_e2e(f"the Claude Code CLI {CLAUDE_VERSION}", b is not None)
        return b

    def run(self, claude: str, proxy: Proxy, tmp: Path, prompt: str) -> dict:
        home = tmp / "claude-home"
        home.mkdir(exist_ok=True)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "ANTHROPIC_BASE_URL": proxy.url,
               "ANTHROPIC_API_KEY": CLIENT_KEY, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
               "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
               "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1", "CLAUDE_CODE_MAX_RETRIES": "1"}
        cmd = [claude, "--bare", "--no-session-persistence", "--output-format", "json", "--tools", "Bash",
               "--allowedTools", "Bash", "-p", prompt]
        p = subprocess.run(cmd, check=False, cwd=tmp, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        diag = f"exit {p.returncode}\nstdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}\nproxy:\n{proxy.stderr[-3000:]}"
        assert p.returncode == 0, diag
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert out.get("is_error") is False, diag
        return out

    @pytest.mark.parametrize("provider", ["dbx", "az"])
    def test_text_turn(self, claude, request, tmp_path, provider):
        stack: Stack = request.getfixturevalue(provider)
        reply = f"Hello from {provider} through lynkr"
        if provider == "dbx":
            stack.fake.push(lambda rec: stream_reply(oai_sse(oai_stream(reply))))
        else:
            stack.fake.push(lambda rec: stream_reply(anth_sse(anth_events(anth_message([text(reply)], model=rec.body["model"])))))
        out = self.run(claude, stack.proxy, tmp_path, "say hello")
        assert out["result"] == reply and out["num_turns"] == 1
        assert len(stack.fake.requests) == 1 and stack.fake.last.body.get("stream") is True

    @pytest.mark.parametrize("provider", ["dbx", "az"])
    def test_bash_tool_round_trip(self, claude, request, tmp_path, provider):
        stack: Stack = request.getfixturevalue(provider)
        responder = TURNS[provider]("Bash", {"command": "echo hello-from-tool", "description": "Print a marker"},
                                    lambda out: f"The command printed: {out.strip()}")
        stack.fake.push(responder, responder)
        out = self.run(claude, stack.proxy, tmp_path, "run echo hello-from-tool")
        assert out["num_turns"] == 2 and out["result"] == "The command printed: hello-from-tool", out
        assert len(stack.fake.requests) == 2
        last = stack.fake.last.body
        if provider == "dbx":
            assert [m for m in last["messages"] if m["role"] == "tool"][-1]["content"].strip() == "hello-from-tool"
        else:
            assert "hello-from-tool" in json.dumps(last["messages"][-1])


# -- the real Claude Code CLI with server tools and the prompt cache --


class TestClaudeCodeServerTools:
    @pytest.fixture
    def claude(self) -> str:
        b = claude_bin()
        require_e2e(f"the Claude Code CLI {CLAUDE_VERSION}", b is not None)
        return b

    @pytest.mark.parametrize("provider", PROVIDERS)
    def test_injected_server_tool_then_client_bash(self, claude, agent, workspace, provider):
        marker = f"MARKER-{random.randrange(10**9)}"
        (workspace / "notes.txt").write_text(f"the code word is {marker}\n")
        st = agent(provider, LYNKR_TOOLS="fs_read")

        def respond(rec: Recorded) -> Reply:
            seen = results_seen(rec)
            if "call_cli_bash" in seen:
                return model_turn(provider, f"Bash said: {seen['call_cli_bash'].strip()}")(rec)
            if "call_cli_read" in seen:
                word = re.search(r"MARKER-\d+", seen["call_cli_read"])
                cmd = f"echo {word.group(0) if word else 'NOTHING'}-seen"
                return model_turn(provider, "Now I will echo it.",
                                  [("call_cli_bash", "Bash", {"command": cmd, "description": "Echo the word"})])(rec)
            return model_turn(provider, "Let me read the notes.", [("call_cli_read", "fs_read", {"path": "notes.txt"})])(rec)

        st.fake.push(respond, respond, respond)
        out = TestClaudeCodeCLI().run(claude, st.proxy, workspace, "read notes.txt and echo the code word")
        assert out["result"] == f"Bash said: {marker}-seen", out
        assert len(st.fake.requests) == 3, [upstream_tool_names(r) for r in st.fake.requests]
        first, second, third = st.fake.requests
        assert {"Bash", "fs_read"} <= set(upstream_tool_names(first))  # injected into Claude Code's own request
        assert results_seen(second) == {"call_cli_read": f"the code word is {marker}\n"}
        assert results_seen(third)["call_cli_bash"].strip() == f"{marker}-seen"
        # The CLI kept the activity record in its history, so the next turn still knows what fs_read found.
        history = json.dumps(third.body["messages"], ensure_ascii=False)
        assert "[lynkr ran server tool fs_read" in history and f"the code word is {marker}" in history

    def test_identical_runs_second_from_cache(self, claude, agent, workspace):
        st = agent("dbx", **CACHE_ON)
        st.fake.push(model_turn("dbx", "The answer is 42."))
        first = TestClaudeCodeCLI().run(claude, st.proxy, workspace, "what is the answer?")
        assert first["result"] == "The answer is 42." and len(st.fake.requests) == 1
        second = TestClaudeCodeCLI().run(claude, st.proxy, workspace, "what is the answer?")
        assert second["result"] == first["result"], second
        assert len(st.fake.requests) == 1, "the second identical Claude Code run reached the upstream"
        hits = [o for o in st.proxy.logs() if o.get("msg") == "request" and o.get("path", "").startswith("/v1/messages")
                and o.get("cache") == "hit"]
        assert len(hits) == 1, [o for o in st.proxy.logs() if o.get("msg") == "request"]


# -- the real Claude Code CLI rides out an upstream outage --


def rel_log_epoch(line: dict) -> float:
    return datetime.datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


class TestClaudeCodeOutage:
    # The issue's acceptance: a 60 s outage. Nothing listens at first, then the endpoint answers 503.
    REFUSED_S = 20.0
    DOWN_S = 60.0

    def test_cli_completes_after_upstream_returns(self, tmp_path, new_dbx, make_proxy):
        claude = claude_bin()
        require_e2e(f"the Claude Code CLI {CLAUDE_VERSION}", claude is not None)
        port = free_port()
        # Reliability settings at their defaults: this is what a user gets.
        p = make_proxy({"DATABRICKS_API_BASE": f"http://127.0.0.1:{port}", "DATABRICKS_API_KEY": DBX_KEY,
                        "UPSTREAM_MAX_RETRIES": None, "CIRCUIT_BREAKER_FAILURES": None})
        reply = "Back online through lynkr"
        seen: list[tuple[float, int]] = []
        t0 = time.monotonic()

        def respond(rec: Recorded) -> Reply:
            t = time.monotonic() - t0
            if t < self.DOWN_S:
                seen.append((t, 503))
                return dbx_error(503, "TEMPORARILY_UNAVAILABLE", "the serving endpoint is scaling up")
            seen.append((t, 200))
            return stream_reply(oai_sse(oai_stream(reply))) if rec.body.get("stream") else \
                json_reply(oai_completion(reply))

        def come_back() -> None:
            time.sleep(max(0.0, t0 + self.REFUSED_S - time.monotonic()))
            fake = rel_move(new_dbx(), port)
            fake.default = respond

        threading.Thread(target=come_back, daemon=True).start()
        home = tmp_path / "claude-home"
        home.mkdir()
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "ANTHROPIC_BASE_URL": p.url,
               "ANTHROPIC_API_KEY": CLIENT_KEY, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
               "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
               "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1"}  # CLAUDE_CODE_MAX_RETRIES left at its default
        wall0 = time.time() - (time.monotonic() - t0)
        cmd = [claude, "--bare", "--no-session-persistence", "--output-format", "json", "--tools", "Bash",
               "-p", "say hello"]
        run = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
                             stdin=subprocess.DEVNULL)
        took = time.monotonic() - t0
        attempts = [(round(rel_log_epoch(o) - wall0 - o.get("latency_ms", 0) / 1000, 2), o.get("status"))
                    for o in p.logs() if o.get("msg") == "request" and o.get("path", "").startswith("/v1/messages")]
        upstream = [(round(t, 2), s) for t, s in seen]
        timing = f"CLI finished after {took:.1f}s; CLI attempts (start s, status): {attempts}; upstream: {upstream}"
        print(timing)
        diag = f"{timing}\nexit {run.returncode}\nstdout: {run.stdout[-2000:]}\nstderr: {run.stderr[-2000:]}"
        assert run.returncode == 0, diag
        out = json.loads(run.stdout.strip().splitlines()[-1])
        assert out.get("is_error") is False and out["result"] == reply, diag
        assert seen and seen[-1][1] == 200 and seen[0][0] >= self.REFUSED_S, diag
        assert len(attempts) >= 2 and attempts[-1][1] == 200 and all(s >= 500 for _, s in attempts[:-1]), diag
        assert took - self.DOWN_S < 45, f"the CLI needed {took - self.DOWN_S:.0f}s to finish once the upstream was back"


# -- presets and config-file providers --


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
class TestProvidersSDK:
    def test_streams_through_two_providers(self, routes):
        require_e2e("the anthropic Python SDK", importlib.util.find_spec("anthropic") is not None)
        import anthropic

        client = anthropic.Anthropic(base_url=routes.proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
        for model, fake in ((f"{PV_OA},gpt-4.1", routes.oa), (f"{PV_AN},claude-opus-4-1", routes.an)):
            with client.messages.stream(model=model, max_tokens=256, tools=[GET_WEATHER],
                                        messages=[{"role": "user", "content": "hello"}]) as s:
                pieces = list(s.text_stream)
                final = s.get_final_message()
                headers = s.response.headers
            assert "".join(pieces) == fake.hello and final.content[0].text == fake.hello
            assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
            assert headers.get("x-lynkr-provider") == model.split(",")[0]
            assert headers.get("x-lynkr-route") == "explicit"
            assert fake.last.body["model"] == model.split(",", 1)[1] and fake.last.body["stream"] is True
        assert len(routes.oa.requests) == 1 and len(routes.an.requests) == 1 and routes.lo.requests == []
        pv_no_leak(*routes.fakes)


class TestProvidersClaudeCode:
    @pytest.fixture
    def claude(self) -> str:
        b = claude_bin()
        require_e2e(f"the Claude Code CLI {CLAUDE_VERSION}", b is not None)
        return b

    def test_bash_round_trip_through_openai_preset(self, claude, pv_stacks, tmp_path):
        st_ = pv_stacks("openai")

        def respond(rec: Recorded) -> Reply:
            results = [m["content"] for m in rec.body["messages"] if m["role"] == "tool"]
            if results:
                return pv_oai_reply(rec, f"The command printed: {result_text(results[-1]).strip()}")
            return pv_oai_reply(rec, "Let me run that.", finish="tool_calls", tools=[
                ("call_cc_1", "Bash", {"command": "echo hello-from-tool", "description": "Print a marker"})])

        st_.fake.push(respond, respond)
        out = pv_claude(claude, st_.proxy, tmp_path, "run echo hello-from-tool")
        assert out["num_turns"] == 2 and out["result"] == "The command printed: hello-from-tool", out
        assert len(st_.fake.requests) == 2
        for q in st_.fake.requests:
            assert q.path == "/v1/chat/completions" and q.body["model"] == "gpt-5" and q.body["stream"] is True
            assert "max_tokens" not in q.body and q.body.get("max_completion_tokens")
        tool_msgs = [m for m in st_.fake.last.body["messages"] if m["role"] == "tool"]
        assert tool_msgs and tool_msgs[-1]["content"].strip() == "hello-from-tool", tool_msgs
        pv_no_leak(st_.fake)

    def test_model_flag_picks_the_provider(self, claude, routes, tmp_path):
        out = pv_claude(claude, routes.proxy, tmp_path, "say hello", model=f"{PV_AN},claude-opus-4-1")
        assert out["result"] == routes.an.hello and out["num_turns"] == 1, out
        assert len(routes.an.requests) == 1 and routes.oa.requests == [] and routes.lo.requests == []
        assert routes.an.last.body["model"] == "claude-opus-4-1"
        out = pv_claude(claude, routes.proxy, tmp_path, "say hello", model=f"{PV_OA},gpt-4.1")
        assert out["result"] == routes.oa.hello, out
        assert len(routes.oa.requests) == 1 and routes.oa.last.body["model"] == "gpt-4.1"
        pv_no_leak(*routes.fakes)

    def test_real_tool_schemas_reach_gemini_cleaned(self, claude, pv_stacks, tmp_path):
        """Claude Code's own default tool set (its real JSON schemas) through the gemini preset's strict fake."""
        st_ = pv_stacks("gemini")
        out = pv_claude(claude, st_.proxy, tmp_path, "say hello", tools=None)
        assert out["result"] == st_.fake.hello and out["num_turns"] == 1, out
        b = st_.fake.last.body
        params = {dig(t, "function.name"): dig(t, "function.parameters") for t in b["tools"]}
        assert {"Bash", "Read", "Edit"} <= set(params), sorted(params)  # --bare's default set
        assert all(gemini_schema_problems(v) == [] for v in params.values())
        assert "command" in params["Bash"]["properties"] and "command" in params["Bash"]["required"], params["Bash"]
        pv_no_leak(st_.fake)

    def test_bash_round_trip_through_anthropic_preset(self, claude, pv_stacks, tmp_path):
        st_ = pv_stacks("anthropic")
        responder = az_tool_turns("Bash", {"command": "echo hello-from-tool", "description": "Print a marker"},
                                  lambda out: f"The command printed: {out.strip()}")
        st_.fake.push(responder, responder)
        out = pv_claude(claude, st_.proxy, tmp_path, "run echo hello-from-tool")
        assert out["num_turns"] == 2 and out["result"] == "The command printed: hello-from-tool", out
        assert [q.headers.get("x-api-key") for q in st_.fake.requests] == [ANTH_KEY, ANTH_KEY]
        assert "hello-from-tool" in json.dumps(st_.fake.last.body["messages"][-1])
        pv_no_leak(st_.fake)

    def test_haiku_model_goes_to_the_background_route(self, claude, routes, tmp_path):
        """claude-haiku-4-5 comes with thinking enabled: background beats think; Bash round trip through Ollama."""
        def respond(rec: Recorded) -> Reply:
            results = [m["content"] for m in rec.body["messages"] if m["role"] == "tool"]
            if results:
                return pv_oai_reply(rec, f"The command printed: {result_text(results[-1]).strip()}")
            return pv_oai_reply(rec, None, finish="tool_calls", tools=[
                ("call_bg_1", "Bash", {"command": "echo hello-from-tool", "description": "Print a marker"})])

        routes.lo.push(respond, respond)
        out = pv_claude(claude, routes.proxy, tmp_path, "run echo hello-from-tool", model="claude-haiku-4-5")
        assert out["num_turns"] == 2 and out["result"] == "The command printed: hello-from-tool", out
        assert len(routes.lo.requests) == 2 and routes.oa.requests == [] and routes.an.requests == []
        assert all(q.body["model"] == "qwen2.5-coder:7b" for q in routes.lo.requests)
        assert routes.lo.requests[0].body.get("thinking") is None


# -- the real Claude Code CLI's WebSearch tool through lynkr to Databricks --


class TestClaudeCodeWebSearch:
    def test_web_search_tool(self, make_proxy, new_dbx, tmp_path):
        claude = claude_bin()
        require_e2e(f"the Claude Code CLI {CLAUDE_VERSION}", claude is not None)
        searx = FakeSearx()
        try:
            self._run(claude, searx, make_proxy, new_dbx, tmp_path)
        finally:
            searx.close()

    def _run(self, claude: str, searx: FakeSearx, make_proxy, new_dbx, tmp_path) -> None:
        query = "lynkr e2e query"
        searx.hits = [{"url": "https://e2e.example.com/found", "title": "E2E Found Page", "content": "e2e snippet",
                       "engine": "duckduckgo", "category": "general", "publishedDate": None},
                      {"url": "https://elsewhere.example.org/no", "title": "Elsewhere Page", "content": "filtered out",
                       "engine": "duckduckgo", "category": "general", "publishedDate": None}]
        fake = new_dbx()
        proxy = make_proxy({**dbx_env(fake), "WEB_SEARCH_ENDPOINT": f"{searx.url}/search", "LOG_BODIES": "true"})
        summary = "SUB-SUMMARY-7c1 (no titles here)"

        def respond(rec: Recorded) -> Reply:
            names = upstream_tool_names(rec)
            tool_msgs = [m for m in rec.body["messages"] if m["role"] == "tool"]
            if "WebSearch" in names:  # the main conversation
                if not tool_msgs:
                    schema = upstream_tool_def(rec, "WebSearch")
                    assert "query" in schema.get("properties", {}), schema
                    return play("dbx", rec, "Searching.", [("call_main_ws", "WebSearch", {
                        "query": query, "allowed_domains": ["e2e.example.com"]})])
                return play("dbx", rec, "Main turn done.")
            if names == ["web_search"]:  # the CLI's web-search sub-request, the typed tool replaced
                if not tool_msgs:
                    return play("dbx", rec, None, [("call_sub_ws", "web_search", {"query": query})])
                return play("dbx", rec, summary)
            return json_reply({"error_code": "BAD_REQUEST", "message": f"unexpected tools {names}"}, 400)

        fake.push(*[respond] * 4)
        home = tmp_path / "claude-home"
        home.mkdir()
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "ANTHROPIC_BASE_URL": proxy.url,
               "ANTHROPIC_API_KEY": CLIENT_KEY, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
               "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
               "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1", "CLAUDE_CODE_MAX_RETRIES": "1"}
        # Not --bare: WebSearch is left out there. With the default tools it is deferred behind ToolSearch;
        # --tools WebSearch offers it directly.
        cmd = [claude, "--no-session-persistence", "--output-format", "json", "--tools", "WebSearch",
               "--allowedTools", "WebSearch", "-p", "search the web for lynkr"]
        p = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90,
                           stdin=subprocess.DEVNULL)
        diag = (f"exit {p.returncode}\nstdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}\n"
                f"upstream tools: {[upstream_tool_names(r) for r in fake.requests]}\nproxy:\n{proxy.stderr[-4000:]}")
        assert p.returncode == 0, diag
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert out.get("is_error") is False and out["result"] == "Main turn done.", diag
        assert [upstream_tool_names(r) for r in fake.requests][1:3] == [["web_search"], ["web_search"]], diag
        assert len(fake.requests) == 4, diag
        main1, sub1, sub2, main2 = fake.requests
        assert "WebSearch" in upstream_tool_names(main1) and "WebSearch" in upstream_tool_names(main2)
        assert_function_offered(sub1, "dbx")
        assert searx_queries(searx) == [{"q": [query], "format": ["json"]}]
        assert "E2E Found Page" in seen_result(sub2, "call_sub_ws")
        # WebSearch's tool_result, built by the CLI from lynkr's web_search_tool_result block: its links come
        # from that block (the sub-request's model text named no title or URL).
        result = seen_result(main2, "call_main_ws")
        assert "E2E Found Page" in result and "https://e2e.example.com/found" in result, result
        assert "Elsewhere Page" not in result and "Elsewhere Page" not in seen_result(sub2, "call_sub_ws"), result
        assert summary in result, result
        # The sub-request as the CLI sent it (LOG_BODIES logs the client's body).
        bodies = [json.loads(o["body"]) for o in proxy.logs() if o.get("msg") == "request" and o.get("body")]
        subs = [b for b in bodies if any(t.get("type") == "web_search_20250305" for t in b.get("tools") or [])]
        assert len(subs) == 1, [list(b) for b in bodies]
        sub = subs[0]
        assert sub["tools"] == [{"type": "web_search_20250305", "name": "web_search", "max_uses": 8,
                                 "allowed_domains": ["e2e.example.com"]}], sub["tools"]
        assert sub["tool_choice"] == {"type": "auto"} and "thinking" not in sub, {k: sub[k] for k in sub if k != "system"}
        assert sub["model"] == bodies[0]["model"] and query in json.dumps(sub["messages"])
        # The CLI counted the search from lynkr's usage.server_tool_use (the sub-request's, in modelUsage).
        assert sum(m.get("webSearchRequests", 0) for m in out["modelUsage"].values()) == 1, out["modelUsage"]


# -- recordings of real Claude Code requests, replayed to every preset --


# Each scenario runs the real CLI (default tools, not --bare, so the system blocks, the ~12 tools with
# the deferred-tool placeholder, role:"system" context messages and the newer top-level fields all
# appear) through lynkr to a FakeAzure that plays the model from a script and records every upstream
# request.  LOG_BODIES=true makes lynkr log the raw client body too, so each upstream request is
# paired with the body exactly as the CLI sent it (before lynkr folds role:"system" messages into
# `system` and re-serialises).  MODEL_MAP maps each known Claude name to itself, so the upstream
# `model` is the CLI's (the azure preset would otherwise send its default model).

CC_REC_MODELS = ("claude-opus-5-5", "claude-sonnet-5", "claude-haiku-5", "claude-opus-4-6", "claude-sonnet-4-6",
                 "claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5")
CC_REC_ROUNDS = 10  # tool_loop: Bash rounds before the final answer
CC_REC_SIGNATURE = "EqgBCkgIBxABGAIiQFakeSignatureForLynkrRecordings0123456789abcdefABCDEF+/=="
CC_REC_THINKING = "The user wants the marker printed; Bash can echo it."
CC_REC_MCP_TOOL = "mcp__time__get_current_time"
CC_REC_SUBAGENT_TASK = "SUBAGENT-TASK-5c1e: run `echo sub-marker` with Bash and report what it printed."


@dataclasses.dataclass
class CCRequest:
    """One /v1/messages request of a recorded Claude Code run."""

    body: dict  # as the fake upstream got it (lynkr's azure-anthropic pass-through)
    beta: str | None  # the anthropic-beta header the upstream got (the CLI's, forwarded)
    headers: dict[str, str]  # every upstream header (lower-case names)
    client: dict | None  # the body exactly as the CLI sent it (from lynkr's LOG_BODIES log), when paired
    agent: str = "main"  # "main" or "subagent": which conversation the scripted model answered


class CCRun(list):
    """The CCRequests of one scenario, in arrival order, plus how the CLI run ended."""

    def __init__(self, requests: list[CCRequest], result: dict, seconds: float, stderr: str, proxy_log: str):
        super().__init__(requests)
        self.result, self.seconds, self.stderr, self.proxy_log = result, seconds, stderr, proxy_log

    @property
    def bodies(self) -> list[dict]:
        return [r.body for r in self]

    @property
    def betas(self) -> list[str | None]:
        return [r.beta for r in self]


def cc_last_block(body: dict) -> Any:
    """The last content block of the last message (a string content counts as one text block)."""
    c = body["messages"][-1]["content"]
    return text(c) if isinstance(c, str) else (c[-1] if c else None)


def cc_tool_results(body: dict) -> list[dict]:
    return [b for m in body["messages"] if m["role"] == "user" and isinstance(m["content"], list)
            for b in m["content"] if b.get("type") == "tool_result"]


def cc_tool_uses(body: dict) -> list[dict]:
    return [b for m in body["messages"] if m["role"] == "assistant" and isinstance(m["content"], list)
            for b in m["content"] if b.get("type") == "tool_use"]


def cc_first_user_text(body: dict) -> str:
    m = next(m for m in body["messages"] if m["role"] == "user")
    return m["content"] if isinstance(m["content"], str) else "\n".join(
        b.get("text", "") for b in m["content"] if b.get("type") == "text")


CC_REC_MSG_IDS = itertools.count(1)


def cc_turn(rec: Recorded, content: list[dict], stop: str) -> Reply:
    """A scripted model answer in the Anthropic format, streamed when asked (the CLI always asks).  Every
    answer gets its own message id: the CLI merges answers that share an id into one assistant turn."""
    msg = anth_message(content, model=rec.body["model"], stop_reason=stop, id=f"msg_01REC{next(CC_REC_MSG_IDS):08d}",
                       usage={"input_tokens": 40, "output_tokens": 9, "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": 0})
    return stream_reply(anth_sse(anth_events(msg))) if rec.body.get("stream") else json_reply(msg)


def cc_bash(n: int, command: str, desc: str) -> dict:
    return tool_use(f"toolu_01REC{n:04d}", "Bash", {"command": command, "description": desc})


# The scripted models: each looks only at the request, so a CLI retry gets the same answer.
def cc_script_tool_loop(rec: Recorded) -> tuple[Reply, str]:
    done = len(cc_tool_results(rec.body))
    if done < CC_REC_ROUNDS:
        n = done + 1
        call = cc_bash(n, f"echo round-{n}", f"Print round {n}")
        return cc_turn(rec, [text(f"Round {n}."), call], "tool_use"), "main"
    return cc_turn(rec, [text(f"All {CC_REC_ROUNDS} rounds ran.")], "end_turn"), "main"


def cc_script_thinking(rec: Recorded) -> tuple[Reply, str]:
    if not cc_tool_results(rec.body):
        content = [{"type": "thinking", "thinking": CC_REC_THINKING, "signature": CC_REC_SIGNATURE},
                   cc_bash(1, "echo thought-marker", "Print a marker")]
        return cc_turn(rec, content, "tool_use"), "main"
    return cc_turn(rec, [text("The command printed thought-marker.")], "end_turn"), "main"


def cc_script_subagent(rec: Recorded) -> tuple[Reply, str]:
    if "SUBAGENT-TASK-5c1e" in cc_first_user_text(rec.body):  # the subagent's own conversation
        if not cc_tool_results(rec.body):
            return cc_turn(rec, [cc_bash(101, "echo sub-marker", "Print the subagent marker")], "tool_use"), "subagent"
        return cc_turn(rec, [text("The subagent saw: sub-marker")], "end_turn"), "subagent"
    if not cc_tool_results(rec.body):
        call = tool_use("toolu_01RECAGENT", "Agent", {"description": "Echo a marker", "prompt": CC_REC_SUBAGENT_TASK,
                                                      "subagent_type": "general-purpose", "run_in_background": False})
        return cc_turn(rec, [text("Delegating."), call], "tool_use"), "main"
    return cc_turn(rec, [text("The subagent reported sub-marker.")], "end_turn"), "main"


def cc_script_mcp(rec: Recorded) -> tuple[Reply, str]:
    """Default settings defer MCP tools: load the tool with ToolSearch, call it, finish."""
    done = len(cc_tool_results(rec.body))
    if done == 0:
        call = tool_use("toolu_01RECSEARCH", "ToolSearch", {"query": f"select:{CC_REC_MCP_TOOL}", "max_results": 5})
        return cc_turn(rec, [text("Loading the time tool."), call], "tool_use"), "main"
    if done == 1:
        call = tool_use("toolu_01RECMCP", CC_REC_MCP_TOOL, {"timezone": "UTC"})
        return cc_turn(rec, [text("Checking the clock."), call], "tool_use"), "main"
    return cc_turn(rec, [text("The time server answered.")], "end_turn"), "main"


def cc_script_mcp_eager(rec: Recorded) -> tuple[Reply, str]:
    """ENABLE_TOOL_SEARCH=false: the MCP tools are offered from the first request; call one, finish."""
    if not cc_tool_results(rec.body):
        call = tool_use("toolu_01RECMCP", CC_REC_MCP_TOOL, {"timezone": "UTC"})
        return cc_turn(rec, [text("Checking the clock."), call], "tool_use"), "main"
    return cc_turn(rec, [text("The time server answered.")], "end_turn"), "main"


def cc_env(proxy: Proxy, home: Path) -> dict[str, str]:
    """TestClaudeCodeCLI.run's environment."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "ANTHROPIC_BASE_URL": proxy.url,
            "ANTHROPIC_API_KEY": CLIENT_KEY, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1", "CLAUDE_CODE_MAX_RETRIES": "1"}


def cc_record(claude: str, tmp: Path, script: Callable[[Recorded], tuple[Reply, str]], prompt: str,
              args: tuple = (), env: dict | None = None, timeout: float = 30) -> CCRun:
    """Run `claude -p prompt` (default tools, not --bare) through lynkr to a scripted FakeAzure; return
    every upstream request with its anthropic-beta and the client body it came from."""
    fake = FakeAzure()
    agents: dict[int, str] = {}

    def respond(rec: Recorded) -> Reply:
        reply, agent = script(rec)
        agents[id(rec)] = agent
        return reply

    fake.default = respond  # every request goes to the script (FakeAzure.check still guards the wire format)
    mapping = ",".join(f"{m}={m}" for m in CC_REC_MODELS)
    proxy = start_proxy(tmp, az_env(fake, LOG_BODIES="true", MODEL_MAP=mapping))
    try:
        home, work = tmp / "claude-home", tmp / "work"
        home.mkdir(exist_ok=True)
        work.mkdir(exist_ok=True)
        cmd = [claude, "--no-session-persistence", "--output-format", "json", *args, "-p", prompt]
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, check=False, cwd=work, env={**cc_env(proxy, home), **(env or {})},
                               capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, out, err = "timeout", e.stdout or "", e.stderr or ""
            out, err = (x.decode(errors="replace") if isinstance(x, bytes) else x for x in (out, err))
        seconds = time.monotonic() - t0
        # the "request" log line is written after the answer ends: wait until there is one per request
        want = len(fake.requests)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: len([o for o in proxy.logs() if o.get("msg") == "request" and o.get("body")]) >= want, 3)
        diag = (f"exit {rc} after {seconds:.1f}s\nstdout: {out[-3000:]}\nstderr: {err[-3000:]}\n"
                f"upstream requests: {len(fake.requests)}\nproxy:\n{proxy.stderr[-3000:]}")
        assert rc == 0, diag
        result = json.loads(out.strip().splitlines()[-1])
        assert result.get("is_error") is False, diag
        clients = []
        for o in proxy.logs():
            if o.get("msg") == "request" and o.get("body"):
                with contextlib.suppress(ValueError):
                    clients.append(json.loads(o["body"]))
        reqs = []
        clients = [c for c in clients if isinstance(c, dict) and isinstance(c.get("messages"), list)]
        for rec in list(fake.requests):
            body = rec.body
            # the client body whose last non-system message ends as the upstream's does (lynkr moves
            # role:system context into the user turns, so whole messages can differ)
            client = next((c for c in clients if cc_same_turn(c, body)), None)
            if client is not None:
                clients.remove(client)
            reqs.append(CCRequest(body, rec.headers.get("anthropic-beta"), dict(rec.headers), client,
                                  agents.get(id(rec), "main")))
        return CCRun(reqs, result, seconds, err, proxy.stderr)
    finally:
        proxy.stop()
        fake.close()


def cc_same_turn(client: dict, body: dict) -> bool:
    """Whether an upstream body came from this client body: every block of each client message is in
    the upstream's message (lynkr adds the role:system context to the user turns beside it)."""
    ours = [m for m in client["messages"] if m.get("role") != "system"]
    if len(ours) != len(body["messages"]) or not ours:
        return False

    def blocks(m: dict) -> list[str]:
        c = m["content"]
        return [json.dumps(b, sort_keys=True) for b in ([text(c)] if isinstance(c, str) else c)]

    return all(set(blocks(a)) <= set(blocks(b)) for a, b in zip(ours, body["messages"]))


def cc_mcp_config(tmp: Path) -> Path:
    cfg = tmp / "mcp.json"
    cfg.write_text(json.dumps({"mcpServers": {"time": {"type": "stdio", "command": mcp_time_bin(),
                                                       "args": ["--local-timezone", "UTC"], "env": {}}}}))
    return cfg


CC_SCENARIOS: dict[str, Callable[[str, Path], CCRun]] = {
    "tool_loop": lambda claude, tmp: cc_record(
        claude, tmp, cc_script_tool_loop, f"Run echo round-N for N = 1..{CC_REC_ROUNDS}, one command per turn.",
        ("--allowedTools", "Bash")),
    "thinking": lambda claude, tmp: cc_record(
        claude, tmp, cc_script_thinking, "Think, then run echo thought-marker.",
        ("--model", "claude-sonnet-4-5", "--allowedTools", "Bash")),
    "subagent": lambda claude, tmp: cc_record(
        claude, tmp, cc_script_subagent, "Ask a subagent to run echo sub-marker and tell me what it printed.",
        ("--allowedTools", "Bash,Agent")),
    "mcp": lambda claude, tmp: cc_record(
        claude, tmp, cc_script_mcp, "What time is it in UTC? Use the time server.",
        ("--mcp-config", str(cc_mcp_config(tmp)), "--strict-mcp-config", "--allowedTools", f"Bash,{CC_REC_MCP_TOOL}")),
    "mcp_eager": lambda claude, tmp: cc_record(
        claude, tmp, cc_script_mcp_eager, "What time is it in UTC? Use the time server.",
        ("--mcp-config", str(cc_mcp_config(tmp)), "--strict-mcp-config", "--allowedTools", f"Bash,{CC_REC_MCP_TOOL}"),
        env={"ENABLE_TOOL_SEARCH": "false"}),
}


@pytest.fixture(scope="session")
def cc_recordings(tmp_path_factory) -> dict[str, CCRun]:
    """scenario -> CCRun (a list of CCRequest: .body, .beta, .headers, .client, .agent; plus .result, the
    CLI's JSON output, and .seconds).  Scenarios: tool_loop, thinking, subagent, mcp, mcp_eager (the
    mcp ones are left out when mcp-server-time is not installed)."""
    claude = claude_bin()
    require_e2e(f"the Claude Code CLI {CLAUDE_VERSION}", claude is not None)
    runs: dict[str, CCRun] = {}
    failures = []
    for name, scenario in CC_SCENARIOS.items():
        if name.startswith("mcp") and mcp_time_bin() is None:
            require_e2e("mcp-server-time (pip install mcp-server-time)", False)
            continue
        try:
            runs[name] = scenario(claude, tmp_path_factory.mktemp(f"cc-rec-{name}"))
        except AssertionError as e:
            failures.append(f"[{name}] {e}")
    assert not failures, "Claude Code recording failed:\n" + "\n\n".join(failures)
    return runs


class TestClaudeCodeRecordings:
    """The recordings have the shape the scripts asked for: proof that cc_recordings works."""

    def test_tool_loop(self, cc_recordings):
        run = cc_recordings["tool_loop"]
        assert len(run) == CC_REC_ROUNDS + 1 and run.result["num_turns"] == CC_REC_ROUNDS + 1, run.result
        assert run.result["result"] == f"All {CC_REC_ROUNDS} rounds ran."
        first = run[0].body
        assert first["model"] == "claude-opus-5-5" and first["stream"] is True and first["max_tokens"] == 128000
        assert first["thinking"]["type"] == "adaptive" and first["output_config"].get("effort")
        assert first["context_management"]["edits"]
        assert any(t.get("defer_loading") is True for t in first["tools"]) and len(first["tools"]) >= 10
        assert sum(1 for b in first["system"] if b.get("cache_control")) >= 2
        assert all(r.beta and "claude-code-20250219" in r.beta and "effort-2025-11-24" in r.beta for r in run)
        for n, r in enumerate(run[1:], 1):
            last = cc_last_block(r.body)
            assert last["type"] == "tool_result" and last.get("cache_control") == EPH, (n, last)
            assert result_text(last["content"]).strip() == f"round-{n}", last
            assert last["tool_use_id"] == f"toolu_01REC{n:04d}"
            # one assistant turn and one tool_result message per round, the older ones without breakpoints
            turns = [m for m in r.body["messages"] if m["role"] == "assistant"]
            assert len(turns) == n and all(len(cc_tool_uses({"messages": [m]})) == 1 for m in turns)
            older = [b for b in cc_tool_results(r.body) if b is not last]
            assert len(older) == n - 1 and not any(b.get("cache_control") for b in older)
        assert all(r.client is not None for r in run), "every upstream body pairs with the CLI's own body"
        # what lynkr folds away: the CLI's role:"system" context message, with a message-level output_config
        sys_msgs = [m for m in run[0].client["messages"] if m["role"] == "system"]
        assert sys_msgs and "output_config" in sys_msgs[0]
        assert not any(m["role"] == "system" for r in run for m in r.body["messages"])

    def test_thinking_signature_round_trip(self, cc_recordings):
        run = cc_recordings["thinking"]
        assert len(run) == 2, run.betas
        first, second = run[0].body, run[1].body
        assert first["model"] == "claude-sonnet-4-5" and first["thinking"]["type"] == "enabled"
        assert first["thinking"]["budget_tokens"] > 0 and "output_config" not in first
        assert "effort-2025-11-24" not in run[0].beta
        echoed = [m for m in second["messages"] if m["role"] == "assistant"][-1]["content"]
        assert [b["type"] for b in echoed] == ["thinking", "tool_use"], echoed
        assert echoed[0]["signature"] == CC_REC_SIGNATURE and echoed[0]["thinking"] == CC_REC_THINKING
        last = cc_last_block(second)
        assert last["type"] == "tool_result" and last.get("cache_control") == EPH
        assert result_text(last["content"]).startswith("thought-marker")

    def test_subagent_requests(self, cc_recordings):
        run = cc_recordings["subagent"]
        main = [r for r in run if r.agent == "main"]
        sub = [r for r in run if r.agent == "subagent"]
        assert len(main) == 2 and len(sub) == 2, [(r.agent, len(r.body["messages"])) for r in run]
        assert "Agent" in [t["name"] for t in main[0].body["tools"]]
        assert {r.body["metadata"]["user_id"] for r in run} and all(r.beta for r in sub)
        agent_result = cc_last_block(main[1].body)
        assert agent_result["type"] == "tool_result" and agent_result["tool_use_id"] == "toolu_01RECAGENT"
        assert "sub-marker" in json.dumps(agent_result["content"])
        sub_result = cc_tool_results(sub[1].body)[-1]
        assert "sub-marker" in result_text(sub_result["content"])
        assert run.index(sub[1]) < run.index(main[1])  # the parent waited for its foreground subagent
        assert run.result["result"] == "The subagent reported sub-marker."

    def test_mcp_tool_loaded_by_tool_search(self, cc_recordings):
        need_mcp(npm=False)
        run = cc_recordings["mcp"]
        assert len(run) == 3 and run.result["result"] == "The time server answered.", run.result
        names = [[t["name"] for t in r.body["tools"]] for r in run]
        assert CC_REC_MCP_TOOL not in names[0]  # deferred: only named in the context text at first
        # named in the environment context (a role:system message, which lynkr puts in the user turn)
        assert CC_REC_MCP_TOOL in json.dumps(run[0].client["messages"])
        for r in run[1:]:
            tool = next(t for t in r.body["tools"] if t["name"] == CC_REC_MCP_TOOL)
            assert tool.get("defer_loading") is True and tool["input_schema"]["required"] == ["timezone"]
        loaded = cc_tool_results(run[1].body)[-1]
        assert loaded["tool_use_id"] == "toolu_01RECSEARCH"
        assert {"type": "tool_reference", "tool_name": CC_REC_MCP_TOOL} in loaded["content"], loaded
        res = cc_last_block(run[2].body)
        assert res["type"] == "tool_result" and res["tool_use_id"] == "toolu_01RECMCP" and not res.get("is_error"), res
        assert '"timezone":"UTC"' in result_text(res["content"]).replace(" ", "")

    def test_mcp_tools_offered_up_front(self, cc_recordings):
        need_mcp(npm=False)
        run = cc_recordings["mcp_eager"]
        assert len(run) == 2 and run.result["result"] == "The time server answered.", run.result
        tools = {t["name"]: t for t in run[0].body["tools"]}
        assert {"mcp__time__get_current_time", "mcp__time__convert_time"} <= set(tools), sorted(tools)
        assert not any(t.get("defer_loading") for t in tools.values()) and "ToolSearch" not in tools
        assert "advanced-tool-use" not in run[0].beta
        res = cc_last_block(run[1].body)
        assert res["type"] == "tool_result" and res["tool_use_id"] == "toolu_01RECMCP" and not res.get("is_error"), res


# The bodies the real CLI sent (cc_recordings) go through lynkr to each preset's strict fake: every
# one is accepted (no field the vendor refuses, no field without its beta), and Claude Code's cache
# breakpoints stay effective: on the last message where the vendor takes markers on it, moved to the
# nearest text it accepts where it does not, and nowhere for vendors that cache by prefix on their own.

REPLAY_CASES = ("dbx", "az", *PV_CASES)
MARKER_VENDORS = ("dbx", "openrouter")  # OpenAI-format vendors that honour cache_control on content parts


def replay_stack(request, case: str) -> Stack:
    if case in ("dbx", "az"):
        stack = request.getfixturevalue(case)
        stack.fake.reset()
        return stack
    return request.getfixturevalue("pv_stacks")(case)


def markers(obj: Any, path: str = "") -> list[str]:
    """Paths of every cache_control in a body."""
    if isinstance(obj, dict):
        return [*([path] if "cache_control" in obj else []),
                *(p for k, v in obj.items() if k != "cache_control" for p in markers(v, f"{path}.{k}"))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in markers(v, f"{path}[{i}]")]
    return []


def last_accepted_text(messages: list[dict]) -> dict | None:
    """The last text part of a system/user/assistant message (where OpenAI-format vendors take markers)."""
    for m in reversed(messages):
        if m["role"] in ("system", "user", "assistant") and isinstance(m.get("content"), list):
            parts = [p for p in m["content"] if p.get("type") == "text"]
            if parts:
                return parts[-1]
        if m["role"] != "tool" and isinstance(m.get("content"), str) and m["content"]:
            return None  # a plain string holds no marker: the nearest text had none
    return None


class TestClaudeCodeReplay:
    @pytest.mark.parametrize("case", REPLAY_CASES)
    def test_tool_loop_breakpoints(self, cc_recordings, request, case):
        run = cc_recordings["tool_loop"]
        assert len(run) == CC_REC_ROUNDS + 1
        stack = replay_stack(request, case)
        for n, rec in enumerate(run):
            body = copy.deepcopy(rec.client or rec.body)
            headers = {"anthropic-beta": rec.beta} if rec.beta else {}
            r = stack.proxy.post(body, headers=headers)
            assert r.status == 200, (case, n, r.status, r.data[:1500])
            r.stream().ok()
            sent = stack.fake.last.body
            found = markers(sent)
            if case in ("az", "anthropic"):  # Anthropic format: every marker as the client placed it
                assert cc_last_block(sent)["cache_control"] == cc_last_block(body)["cache_control"], (n, found)
                assert len(found) == len(markers(body)) <= 4
            elif case in MARKER_VENDORS:
                if n:  # the newest tool_result is a tool message (a string): its marker moved before it
                    assert sent["messages"][-1]["role"] == "tool" and isinstance(sent["messages"][-1]["content"], str)
                target = last_accepted_text(sent["messages"])
                assert target is not None and target.get("cache_control") == EPH, (n, found)
                assert 1 <= len(found) <= 4, found
            else:  # OpenAI, Gemini, Ollama...: they cache by prefix themselves; a marker would be refused
                assert found == [], (n, found)

    @pytest.mark.parametrize("scenario", ["tool_loop", "thinking", "subagent", "mcp", "mcp_eager"])
    @pytest.mark.parametrize("case", REPLAY_CASES)
    def test_recorded_requests_accepted(self, cc_recordings, request, case, scenario):
        """Newer fields (context_management, output_config, adaptive thinking, defer_loading, role:system
        context, MCP tools): passed with their betas to Anthropic-format upstreams, translated or left out
        elsewhere -- never a 400."""
        stack = replay_stack(request, case)
        for n, rec in enumerate(cc_recordings[scenario]):
            body = copy.deepcopy(rec.client or rec.body)
            r = stack.proxy.post(body, headers={"anthropic-beta": rec.beta} if rec.beta else {})
            assert r.status == 200, (case, scenario, n, r.status, r.data[:1500])
            r.stream().ok()
            sent, got = stack.fake.last, stack.fake.last.body
            if case in ("az", "anthropic"):
                foreign = scenario == "thinking" and n > 0  # signed by the recording's upstream, not this one
                for field in ("context_management", "output_config", "thinking", "metadata"):
                    if field in body and not (foreign and field in ("thinking", "context_management")):
                        assert got.get(field) == body[field], field
                if foreign:  # its tool loop lost its thinking: it continues with thinking off
                    assert "thinking" not in got and "context_management" not in got
                    assert not [b for m in got["messages"] if isinstance(m["content"], list) for b in m["content"]
                                if b.get("type") in ("thinking", "redacted_thinking")]
                if foreign:  # its field left out, so is its beta -- never one of the pair alone
                    assert sent.headers.get("anthropic-beta") == ",".join(
                        b for b in rec.beta.split(",") if not b.startswith("context-management-"))
                else:
                    assert sent.headers.get("anthropic-beta") == rec.beta
                deferred = {t["name"] for t in body.get("tools") or [] if t.get("defer_loading")}
                assert deferred == {t["name"] for t in got.get("tools") or [] if t.get("defer_loading")}
            else:
                raw = sent.raw.decode()
                for field in ("context_management", "defer_loading", "output_config", "metadata"):
                    assert f'"{field}"' not in raw, field
                if body.get("output_config", {}).get("effort") and case == "openai":  # gpt-5: a reasoning model
                    assert got.get("reasoning_effort") == body["output_config"]["effort"], got.get("reasoning_effort")

    @pytest.mark.parametrize("case", ["dbx", "openrouter", "openai", "az"])
    def test_automatic_cache_control(self, request, case):
        """A top-level cache_control (Anthropic's automatic caching) lands on the last text where markers are
        taken, passes through on Anthropic-format upstreams, and is left out elsewhere; ttl is kept."""
        stack = replay_stack(request, case)
        marker = {"type": "ephemeral", "ttl": "1h"}
        body = base_req(messages=[user("first"), assistant([text("ok")]), user([text("second"), image_b64()])],
                        cache_control=marker)
        r = stack.proxy.post(body)
        assert r.status == 200, r.data[:1500]
        sent = stack.fake.last.body
        if case == "az":
            assert sent["cache_control"] == marker
        elif case in MARKER_VENDORS:
            last = sent["messages"][-1]["content"]
            assert [p.get("cache_control") for p in last] == [marker, None], last  # on the text, not the image
            assert "cache_control" not in sent
        else:
            assert markers(sent) == []

    def test_image_marker_moves_to_the_text_before_it(self, dbx):
        body = base_req(messages=[user([text("look at this"), image_b64() | {"cache_control": EPH}])])
        r = dbx.proxy.post(body)
        assert r.status == 200, r.data[:1500]
        parts = dbx.fake.last.body["messages"][-1]["content"]
        assert parts[0] == {"type": "text", "text": "look at this", "cache_control": EPH}
        assert "cache_control" not in parts[1]


# -- Claude on Google Vertex AI --


def vx_tool_turns(name: str, args: dict, final: Callable[[str], str]) -> Callable[[Recorded], Reply]:
    """Vertex turn logic (the model from the URL): no tool result yet -> call the tool; else answer."""

    def respond(rec: Recorded) -> Reply:
        b, model = rec.body, vx_model(rec)
        last = b["messages"][-1]["content"]
        results = [blk for blk in last if blk.get("type") == "tool_result"] if isinstance(last, list) else []
        if results:
            msg = anth_message([text(final(result_text(results[-1]["content"])))], model=model)
        else:
            msg = anth_message([text("Let me run that."), tool_use("toolu_01VRTX", name, args)], model=model,
                               stop_reason="tool_use")
        if b.get("stream"):
            data = anth_sse(anth_events(msg))
            return stream_reply(data, pieces=split_at(data, awkward_points(data)))
        return json_reply(msg)

    return respond


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
class TestVertexEndToEnd:
    @pytest.mark.parametrize("mode", ["create", "stream"])
    def test_sdk_tool_round_trip(self, vx, mode):
        require_e2e("the anthropic Python SDK", importlib.util.find_spec("anthropic") is not None)
        import anthropic

        responder = vx_tool_turns("get_weather", {"city": "Paris"}, lambda out: f"It is {out} in Paris.")
        vx.fake.push(responder, responder)
        client = anthropic.Anthropic(base_url=vx.proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
        first, second = sdk_weather_round_trip(client, mode, "18C and sunny")
        assert first.model == VMODEL
        assert second.stop_reason == "end_turn" and second.content[0].text == "It is 18C and sunny in Paris."
        verb = "streamRawPredict" if mode == "stream" else "rawPredict"
        assert [r.path for r in vx.fake.requests] == [vx_path(VMODEL, verb)] * 2

    def test_sdk_count_tokens(self, new_vx, make_proxy):
        require_e2e("the anthropic Python SDK", importlib.util.find_spec("anthropic") is not None)
        import anthropic

        fake = new_vx(tokens=[STATIC_TOKEN])
        p = make_proxy(vx_env(fake, VERTEX_ACCESS_TOKEN=STATIC_TOKEN))
        client = anthropic.Anthropic(base_url=p.url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
        n = client.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
        assert n.input_tokens == 4242

    def test_claude_code_bash_round_trip(self, vx, tmp_path):
        claude = claude_bin()
        require_e2e(f"the Claude Code CLI {CLAUDE_VERSION}", claude is not None)
        responder = vx_tool_turns("Bash", {"command": "echo hello-from-vertex", "description": "Print a marker"},
                                  lambda out: f"The command printed: {out.strip()}")
        vx.fake.push(responder, responder)
        out = TestClaudeCodeCLI.run(None, claude, vx.proxy, tmp_path, "run echo hello-from-vertex")
        assert out["num_turns"] == 2 and out["result"] == "The command printed: hello-from-vertex", out
        main = [r for r in vx.fake.requests if vx_model(r) != "count-tokens"]
        assert len(main) == 2 and all(r.path == vx_path(VMODEL, "streamRawPredict") for r in main)
        assert "hello-from-vertex" in json.dumps(main[-1].body["messages"][-1])
        assert all(r.headers["authorization"] == f"Bearer {STATIC_TOKEN}" for r in vx.fake.requests)


# -- OpenAI Responses API --


def rs_inputs(rec: Recorded, kind: str) -> list[dict]:
    return [i for i in rec.body["input"] if i.get("type") == kind]


def rs_final_text(script_text: Callable[[list[dict]], str | None], name: str, args: dict,
                  fake: FakeResponses, reasoning: tuple[str, ...] = ()) -> Callable[[Recorded], Reply]:
    """Turn logic of a one-tool agent: no function_call_output yet -> (reasoning +) call the tool; else text."""

    def respond(rec: Recorded) -> Reply:
        outputs = rs_inputs(rec, "function_call_output")
        if outputs:
            return fake.answer(rec, [rs_text(script_text(outputs))])
        return fake.answer(rec, ([rs_reasoning(*reasoning)] if reasoning else []) + [rs_call("call_e2e_1", name, args)])

    return respond


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
class TestResponsesSDK:
    @pytest.mark.parametrize("mode", ["stream", "create"])
    def test_sdk_tool_round_trip_with_thinking(self, rs, mode):
        require_e2e("the anthropic Python SDK", importlib.util.find_spec("anthropic") is not None)
        import anthropic

        responder = rs_final_text(lambda outs: f"It is {outs[-1]['output']} in Paris.", "get_weather",
                                  {"city": "Paris"}, rs.fake, reasoning=("Need the weather ☁️.",))
        rs.fake.push(responder, responder)
        client = anthropic.Anthropic(base_url=rs.proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
        first, second = sdk_weather_round_trip(client, mode, "18C and sunny", max_tokens=8192,
                                               thinking={"type": "enabled", "budget_tokens": 4096})
        assert [b.type for b in first.content] == ["thinking", "tool_use"]
        assert first.content[0].thinking == "Need the weather ☁️." and first.content[0].signature
        assert first.content[1].input == {"city": "Paris"} and first.usage.cache_read_input_tokens == 1200
        assert second.stop_reason == "end_turn" and second.content[-1].text == "It is 18C and sunny in Paris."
        items = rs.fake.last.body["input"]
        assert [i["type"] for i in items] == ["message", "reasoning", "function_call", "function_call_output"]
        assert items[1]["encrypted_content"] in rs.fake.issued
        assert len(rs.fake.requests) == 2

    def test_sdk_sees_rate_limit_error(self, rs):
        require_e2e("the anthropic Python SDK", importlib.util.find_spec("anthropic") is not None)
        import anthropic

        rs.fake.push(rs.fake.error(429, "slow down", "rate_limit_error", "rate_limit_exceeded",
                                   headers=(("retry-after", "3"),)))
        client = anthropic.Anthropic(base_url=rs.proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
        with pytest.raises(anthropic.RateLimitError) as ei:
            with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                                        messages=[{"role": "user", "content": "hi"}]) as s:
                s.get_final_message()
        assert ei.value.status_code == 429 and "slow down" in str(ei.value)


class TestResponsesClaudeCode:
    @pytest.fixture
    def claude(self) -> str:
        b = claude_bin()
        require_e2e(f"the Claude Code CLI {CLAUDE_VERSION}", b is not None)
        return b

    def test_bash_round_trip(self, claude, rs, tmp_path):
        responder = rs_final_text(lambda outs: f"The command printed: {outs[-1]['output'].strip()}", "Bash",
                                  {"command": "echo hello-from-tool", "description": "Print a marker"}, rs.fake,
                                  reasoning=("I will run the command.",))
        rs.fake.push(responder, responder)
        out = pv_claude(claude, rs.proxy, tmp_path, "run echo hello-from-tool")
        assert out["num_turns"] == 2 and out["result"] == "The command printed: hello-from-tool", out
        assert len(rs.fake.requests) == 2, [q.body.get("input") for q in rs.fake.requests]
        for q in rs.fake.requests:
            assert q.path == "/v1/responses" and q.body["model"] == "gpt-5" and q.body["stream"] is True
            assert q.body["store"] is False and "Bash" in [t["name"] for t in q.body["tools"]]
            assert "billing-header" not in json.dumps(q.body)
        outs = rs_inputs(rs.fake.last, "function_call_output")
        assert [o["output"].strip() for o in outs] == ["hello-from-tool"], outs
        assert outs[0]["call_id"] == "call_e2e_1"
        calls_ = rs_inputs(rs.fake.last, "function_call")
        assert [(c["name"], json.loads(c["arguments"])["command"]) for c in calls_] == [("Bash", "echo hello-from-tool")]
        # Claude Code sent the thinking block back: the reasoning item this fake issued, before the call
        kinds = [i["type"] for i in rs.fake.last.body["input"]]
        assert kinds.index("reasoning") == kinds.index("function_call") - 1, kinds
        assert rs_inputs(rs.fake.last, "reasoning")[0]["encrypted_content"] in rs.fake.issued
        pv_no_leak(rs.fake)


# -- Claude on Amazon Bedrock --


def br_tool_turns(name: str, args: dict, final: Callable[[str], str]) -> Callable[[Recorded], Reply]:
    """No tool result yet -> call the tool (InvokeModel answer); else the final text."""

    def respond(rec: Recorded) -> Reply:
        b = rec.body
        last = b["messages"][-1]["content"]
        results = [blk for blk in last if blk.get("type") == "tool_result"] if isinstance(last, list) else []
        if results:
            return br_answer(rec, [text(final(result_text(results[-1]["content"])))])
        return br_answer(rec, [text("Let me run that."), tool_use("toolu_bdrk_CC01", name, args)], "tool_use")

    return respond


class TestBedrockEndToEnd:
    def test_sdk_tool_round_trip_streaming(self, br):
        require_e2e("the anthropic Python SDK", importlib.util.find_spec("anthropic") is not None)
        import anthropic

        responder = br_tool_turns("get_weather", {"city": "Paris"}, lambda out: f"It is {out} in Paris.")
        br.fake.push(responder, responder)
        client = anthropic.Anthropic(base_url=br.proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
        _first, second = sdk_weather_round_trip(client, "stream", "18C", max_tokens=512)
        assert second.content[0].text == "It is 18C in Paris." and second.stop_reason == "end_turn"
        assert [INVOKE_PATH.fullmatch(r.path).group(2) for r in br.fake.requests] == ["invoke-with-response-stream"] * 2
        assert len(br.fake.verified) == 2

    def test_sdk_sees_typed_throttling(self, br):
        require_e2e("the anthropic Python SDK", importlib.util.find_spec("anthropic") is not None)
        import anthropic

        br.fake.push(es_reply([es_exception("throttlingException", "slow down please")], "one"))
        client = anthropic.Anthropic(base_url=br.proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
        with pytest.raises(anthropic.RateLimitError, match="slow down please"):
            with client.messages.stream(model="claude-sonnet-4-5", max_tokens=10, messages=[user("hi")]) as s:
                s.get_final_message()

    def test_claude_code_bash_round_trip(self, br, tmp_path):
        b = claude_bin()
        require_e2e(f"the Claude Code CLI {CLAUDE_VERSION}", b is not None)
        responder = br_tool_turns("Bash", {"command": "echo hello-from-bedrock-tool", "description": "Print a marker"},
                                  lambda out: f"The command printed: {out.strip()}")
        br.fake.push(responder, responder)
        out = TestClaudeCodeCLI.run(None, b, br.proxy, tmp_path, "run echo hello-from-bedrock-tool")
        assert out["num_turns"] == 2 and out["result"] == "The command printed: hello-from-bedrock-tool", out
        assert len(br.fake.requests) == 2 and len(br.fake.verified) == 2
        for rec in br.fake.requests:
            assert rec.path.endswith("/invoke-with-response-stream") and "anthropic_beta" in rec.body
