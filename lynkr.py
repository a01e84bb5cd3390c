#!/usr/bin/env python3
# /// script
# requires-python = ">=3.11"
# dependencies = ["h11>=0.16"]
# ///
"""Lynkr: a self-hosted Anthropic Messages API backend for the Claude Code CLI, in one file.

Point the unmodified Claude Code CLI (or an Anthropic SDK, or curl) at it with
``ANTHROPIC_BASE_URL=http://127.0.0.1:8080`` and it forwards every ``/v1/messages``
call -- streaming or not, with tools -- to the model providers you have, several at once:

* ``databricks`` (default): a Databricks model-serving endpoint, translated losslessly to and
  from the OpenAI chat format, or passed through natively with ``DATABRICKS_API_FORMAT=anthropic``;
* ``azure-anthropic`` (Claude on Azure / Microsoft Foundry) and ``anthropic``: Messages pass-through;
* ``bedrock`` (Claude on Amazon Bedrock: InvokeModel or the Messages API, SigV4) and ``vertex``
  (Claude on Google Vertex AI): Anthropic Messages with the cloud's URL, signing and stream format;
* ``openai``, ``azure-openai``, ``openrouter``, ``ollama``, ``gemini`` and ``openai-compatible``
  servers (vLLM, llama.cpp, LM Studio): Chat Completions, translated both ways;
  ``openai-responses`` (and Azure's): OpenAI's Responses API, translated both ways.

Providers are rows of a table (PRESETS, section 10); ``lynkr.toml`` names several and the routes
between them (Claude Code's background, thinking, long-context and web-search requests, fallbacks).

Start it with ``python lynkr.py`` (needs only ``h11``), ``pipx run lynkr.py``, or the ``lynkr``
console script. ``python lynkr.py --help`` lists the options; every setting is documented in the
``SETTINGS`` table of section 5 (and, generated from it, in docs/configuration.md).

Sections (``grep -n '^# == ' lynkr.py`` prints this map; each section uses only those above it):

    0. Header          docstring, version, imports
    1. Constants       limits and defaults, each with its reason
    2. Errors          one LynkrError family -> Anthropic error JSON
    3. Core types      Config, Request, Response
    4. Utilities       JSON, ids, SSE encode/parse, logging
    5. Config          SETTINGS table: environment + .env + lynkr.toml -> typed, frozen Settings
    6. HTTP server     asyncio + h11: keep-alive, limits, backpressure, graceful shutdown
    7. Outbound client pooled h11 connections over asyncio (+TLS, +CONNECT proxy), streaming bodies
    8. Translation     pure functions: request validation, Anthropic <-> OpenAI chat, token estimate
    9. Streaming       incremental upstream stream -> Anthropic SSE state machines; the decoders
   10. Providers       PRESETS and KINDS tables, one Provider with one stream pump, the Router
   11. Stores          SQLite (one writer thread, WAL, numbered migrations): sessions, tasks
   12. Cache           prompt fingerprint -> LRU + TTL answers
   13. Policy          every gate in one place: tools, paths, web hosts, limits
   14. Tools           TOOLS registry + @tool: files, patches, search, tasks, web
   15. Git and tests   git workflow tools, diff review, release notes, test harness, commit gate
   16. Indexer         incremental SQLite index: tree-sitter symbols/references (regex fallback), CLAUDE.md
   17. MCP             manifests, server lifecycles (+ container sandbox), tools registered into TOOLS
   18. Orchestrator    the agent loop: provider <-> tools <-> policy <-> stores <-> cache
   19. API routes      ROUTES registry; the one place errors become responses
   20. App lifecycle   wiring, signals, startup and shutdown
   21. CLI             main(argv), `lynkr index`, `lynkr doctor`, and the __main__ guard
"""

# == 0. Header ==

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import binascii
import bisect
import collections
import concurrent.futures
import configparser
import contextlib
import dataclasses
import datetime
import enum
import errno
import fnmatch
import functools
import gc
import hashlib
import hmac
import html.parser
import http
import ipaddress
import json
import marshal
import math
import os
import posixpath
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import ssl
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import traceback
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

try:  # h11 is the one required dependency; main() explains how to install it when missing.
    import h11
except ImportError:  # pragma: no cover - exercised by the packaging check in .ci/run
    h11 = None  # type: ignore[assignment]

__version__ = "0.1.0"

# == 1. Constants ==

# Anthropic's own limit for Messages and count_tokens; Claude Code prints "max 32MB" on a 413.
MAX_REQUEST_BODY_BYTES = 32 * 1024 * 1024
# Request line + headers; Claude Code's are ~2 KB, 64 KiB leaves room for big cookies/tokens.
MAX_HEADER_BYTES = 64 * 1024
# A client must finish sending a request head within this (slowloris protection).
HEADER_READ_TIMEOUT_S = 30.0
# Idle keep-alive connections are closed after this; clients reconnect transparently.
KEEPALIVE_IDLE_TIMEOUT_S = 75.0
# A request body must keep arriving; a stalled upload is dropped after this much silence.
BODY_READ_TIMEOUT_S = 60.0
# Socket read size: large enough for a 50 KB Claude Code body in one read.
READ_CHUNK_BYTES = 64 * 1024
# Idle pooled upstream connections per origin; more are simply closed after use.
MAX_IDLE_UPSTREAM_CONNECTIONS = 32
# Idle pooled upstream connections older than this are not reused (servers drop them ~60 s).
UPSTREAM_IDLE_REUSE_S = 50.0
# Upstream error bodies are read up to this size for mapping (the rest is not interesting).
MAX_UPSTREAM_ERROR_BYTES = 1024 * 1024
# Non-streaming upstream answers larger than this are refused rather than buffered without bound.
MAX_UPSTREAM_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_TOKENS = 4096
ANTHROPIC_VERSION_DEFAULT = "2023-06-01"
# Extended thinking needs at least this budget (Anthropic's documented minimum).
MIN_THINKING_BUDGET = 1024
# Tool schemas are cleaned recursively for some vendors; deeper nesting than this is left as sent.
MAX_SCHEMA_DEPTH = 64
# Claude Code's largest explicit budget; adaptive thinking is mapped to at most this.
MAX_ADAPTIVE_THINKING_BUDGET = 31999
# Token estimate: Anthropic bills an image ceil(width x height / 750) tokens, at most ~1,600 (1092x1092);
# an image whose size cannot be read (a URL, a PDF page) counts the maximum, to err high.
ESTIMATE_IMAGE_MAX_TOKENS = 1600
ESTIMATE_TOKENS_PER_MESSAGE = 4  # role and turn markers
ESTIMATE_TOOLS_PREAMBLE = 300  # the tool-use instructions an upstream adds when tools are offered
# Claude Code's first system block changes on every request; it is metadata, not prompt.
BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"
# .env files, git internals and private keys stay out of reach of the model's file tools.
DEFAULT_FILE_BLOCKED_PATHS_TEXT = ".env,.env.*,.git,*.pem,id_rsa*"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
# Model ids /v1/models lists by default: Claude Code keeps only ids containing "claude".
KNOWN_CLAUDE_MODELS = (
    ("claude-opus-5-5", "Claude Opus 5.5"),
    ("claude-sonnet-5", "Claude Sonnet 5"),
    ("claude-haiku-5", "Claude Haiku 5"),
    ("claude-opus-4-6", "Claude Opus 4.6"),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6"),
    ("claude-opus-4-5", "Claude Opus 4.5"),
    ("claude-sonnet-4-5", "Claude Sonnet 4.5"),
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
)
MODELS_CREATED_AT = "2025-01-01T00:00:00Z"
# Published output limits, matched on the upstream target after MODEL_MAX_TOKENS: without them,
# Claude Code's max_tokens of 128000 is a 400 from every model that allows 64000 or 32000.
BUILTIN_MAX_OUTPUT_TOKENS = (
    ("*claude-3-5-haiku*", 8192),
    ("*claude-3-5-sonnet*", 8192),
    ("*claude-3-7-sonnet*", 64000),
    ("*claude-opus-4-1*", 32000),
    ("*claude-opus-4", 32000),
    ("*claude-opus-4-5*", 64000),
    ("*claude-sonnet-4*", 64000),
    ("*claude-haiku-4-5*", 64000),
)

# == 2. Errors ==

# HTTP status -> Anthropic error type (wire-formats.md 1.6); other 4xx/5xx fall back by class.
STATUS_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


# The status an error type stands for when only the type survived (an SSE `error` event).
ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 503,
}


def error_type_for_status(status: int) -> str:
    if status in STATUS_ERROR_TYPES:
        return STATUS_ERROR_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


class LynkrError(Exception):
    """Every failure a client can see. Converted to Anthropic error JSON in one place (section 11)."""

    status = 500
    error_type = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
        raw_body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
            self.error_type = error_type or error_type_for_status(status)
        if error_type is not None:
            self.error_type = error_type
        self.headers = dict(headers or {})
        # An upstream's own error body, passed through unchanged (Claude Code matches its wording).
        self.raw_body = raw_body


class InvalidRequest(LynkrError):
    status, error_type = 400, "invalid_request_error"


class AuthenticationFailed(LynkrError):
    status, error_type = 401, "authentication_error"


class PermissionDenied(LynkrError):
    status, error_type = 403, "permission_error"


class NotFound(LynkrError):
    status, error_type = 404, "not_found_error"


class MethodNotAllowed(LynkrError):
    status, error_type = 405, "invalid_request_error"


class RequestTooLarge(LynkrError):
    status, error_type = 413, "request_too_large"


class UpstreamUnavailable(LynkrError):
    status, error_type = 502, "api_error"


class UpstreamTimeout(LynkrError):
    status, error_type = 504, "timeout_error"


class NotConfigured(LynkrError):
    status, error_type = 503, "api_error"


class StoreUnavailable(LynkrError):
    """The shared database cannot be reached, or its write queue is full: an honest 503 the client
    retries, never a lost turn."""

    status, error_type = 503, "api_error"

    def __init__(self, message: str, retry_after_s: int = 2, reason: str = "") -> None:
        super().__init__(message, headers={"retry-after": str(retry_after_s), "x-should-retry": "true"})
        self.reason = reason or message  # the database's own words, for a startup line


class ConfigError(Exception):
    """A setting that is present but invalid: startup stops with one line naming it."""


def error_body(error_type: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return body


# == 3. Core types ==


@dataclass
class Config:
    """What the server needs, resolved once at startup (section 5). `settings` holds every setting typed."""

    settings: Any = None  # a Settings (section 5): every setting by its lower-case name, parsed
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workspace_root: str = "."
    data_dir: str = ".lynkr"
    session_db_path: str = ""
    api_key: str = ""
    allowed_hosts: tuple[str, ...] = ()
    model_map: tuple[tuple[str, str], ...] = ()
    model_max_tokens: tuple[tuple[str, int], ...] = ()
    max_tokens_default: int = DEFAULT_MAX_TOKENS
    log_format: str = "json"
    log_level: str = "info"
    log_bodies: bool = False
    stream_ping_interval_s: float = 15.0
    upstream_connect_timeout_s: float = 10.0
    upstream_read_timeout_s: float = 600.0
    shutdown_grace_s: float = 10.0
    # The config file (lynkr.toml / --config / LYNKR_CONFIG), when one was read: its provider tables
    # ($VARs expanded) and router table, validated by the provider section.
    config_file: str = ""
    providers_table: dict[str, Any] = field(default_factory=dict)
    router_table: dict[str, Any] = field(default_factory=dict)
    prices_table: dict[str, Any] = field(default_factory=dict)  # [prices."glob"]: per-model price overrides
    # Notices found while loading (e.g. an ignored PORT line in .env), logged once at startup.
    notices: list[str] = field(default_factory=list)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    client: str
    request_id: str = ""
    # Filled in by handlers for the access log: provider, model, tokens, ...
    log: dict[str, Any] = field(default_factory=dict)
    # Extra response headers handlers want sent (upstream rate-limit headers, cache status, ...)
    reply_headers: dict[str, str] = field(default_factory=dict)
    # Path parameters of templated routes (`/v1/tools/{name}` -> {"name": ...}).
    params: dict[str, str] = field(default_factory=dict)
    route: str = ""  # the matched route template (a bounded metrics label, unlike the raw path)
    counted: bool = False  # holds a MAX_CONCURRENT_REQUESTS slot until its response is finished
    # Set by a provider whose stream translator knows the final message, so it need not be re-parsed.
    reply_builder: Callable[[], dict[str, Any] | None] | None = None
    owner: str | None = None  # the personal key it came with: charged, limited, owns its sessions
    admin: bool = False  # it came with LYNKR_ADMIN_KEY
    finished: bool = False  # accounted for (metrics, the access log, its concurrency slot): once


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # When set, the body is streamed chunk by chunk (chunked transfer encoding).
    stream: AsyncIterator[bytes] | None = None
    # Awaited once the exchange is over however it ended -- also when the client left before the
    # headers went out, so the stream never started and its own cleanup never ran.
    on_done: Callable[[], Awaitable[None]] | None = None


# == 4. Utilities ==


def json_dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# JSON may escape a lone surrogate (`"\ud800"`); decoded, it is a str that UTF-8 cannot encode. In JSON
# text such a character can only sit inside a string literal, so escaping it again keeps the JSON valid
# and the text as it was. Only the rare failing encode pays for the search.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def escape_surrogates(json_text: str) -> str:
    return LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json_text)


def utf8_json(json_text: str) -> bytes:
    try:
        return json_text.encode()
    except UnicodeEncodeError:
        return escape_surrogates(json_text).encode()


def storable_json(obj: Any) -> str:
    """JSON text SQLite can store (its driver encodes UTF-8 strictly)."""
    text = json_dumps(obj)
    try:
        text.encode()
    except UnicodeEncodeError:
        return escape_surrogates(text)
    return text


def json_bytes(obj: Any) -> bytes:
    return utf8_json(json_dumps(obj))


_ENCODED_TOOLS: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()


def upstream_json(body: dict[str, Any]) -> bytes:
    """The upstream request body as ASCII JSON (the C encoder's fast path, cheaper than UTF-8).

    Claude Code sends the same tool list on every request, and encoding it is over half the cost of
    the body. The last few encoded lists are kept, keyed by the list's marshal bytes (far cheaper than
    encoding; unlike ==, they tell true from 1 and 1 from 1.0), and an equal list is spliced in as
    bytes, at the end. (The costs: bench/README.md, Figures behind the code.)"""
    tools = body.get("tools")
    key = None
    if isinstance(tools, list) and len(tools) >= 4:
        with contextlib.suppress(ValueError):  # ValueError: not plain JSON data
            key = marshal.dumps(tools)
    if key is None:
        return json.dumps(body, separators=(",", ":")).encode()
    encoded = _ENCODED_TOOLS.get(key)
    if encoded is not None:
        _ENCODED_TOOLS.move_to_end(key)
    else:
        encoded = _ENCODED_TOOLS[key] = json.dumps(tools, separators=(",", ":")).encode()
        if len(_ENCODED_TOOLS) > 8:
            _ENCODED_TOOLS.popitem(last=False)
    rest = json.dumps({k: v for k, v in body.items() if k != "tools"}, separators=(",", ":")).encode()
    return rest[:-1] + (b',"tools":' if len(rest) > 2 else b'"tools":') + encoded + b"}"


# Ids name requests, messages and sessions. A session id decides whose transcript a turn joins, so ids
# must not be predictable from earlier ones (a seeded PRNG's are): they come from os.urandom, drawn in
# batches because one system call per id was a measurable share of a tiny request.
_ID_POOL = bytearray()
_ID_POOL_BYTES = 4096


def new_id(prefix: str, nbytes: int = 12) -> str:
    global _ID_POOL
    if len(_ID_POOL) < nbytes:
        _ID_POOL = bytearray(os.urandom(_ID_POOL_BYTES))
    chunk = _ID_POOL[-nbytes:]
    del _ID_POOL[-nbytes:]
    return prefix + chunk.hex()


def error_log_fields(exc: BaseException, with_content: bool = False) -> dict[str, str]:
    """What an unexpected exception may put in the log: its type and where it was raised. Its message
    can quote request content (a UnicodeEncodeError holds the whole prompt), so only with LOG_BODIES."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].name} line {frames[-1].lineno}" if frames else "?"
    fields = {"error": type(exc).__name__, "where": where}
    if with_content:
        fields["detail"] = repr(exc)[:4000]
    return fields


def header_safe(value: str) -> str:
    """A header value h11 can send: printable ASCII as it is, anything else escaped."""
    if value.isascii() and value.isprintable():
        return value
    return "".join(c if " " <= c <= "~" else f"\\u{ord(c):04x}" for c in value)


def json_response(status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, [("content-type", "application/json"), *headers], json_bytes(obj))


def sse_event(event: str, data: dict[str, Any]) -> bytes:
    return utf8_json(f"event: {event}\ndata: {json_dumps(data)}\n\n")


PING_EVENT = b'event: ping\ndata: {"type":"ping"}\n\n'
TEXT_DELTA_EVENT = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"text_delta","text":%s}}\n\n'
)


class SSEParser:
    """Incremental Server-Sent Events parser, robust to input split at any byte.

    feed() returns complete events as (event_name, data_text). LF, CRLF and CR line endings,
    multi-line data, comments, and events without an `event:` line (name "message") are handled.
    Line endings are normalised to LF on the way in (a CR at the very end of a chunk waits for the
    next one: it may be half of a CRLF), then whole events are cut at blank lines.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk, self._pending_cr = chunk[:-1], True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk
        if b"\n\n" not in buffer:
            self._buffer = buffer
            return []
        *blocks, self._buffer = buffer.split(b"\n\n")
        events = []
        for block in blocks:
            event = self._parse_block(block)
            if event is not None:
                events.append(event)
        return events

    @staticmethod
    def _parse_block(block: bytes) -> tuple[str, str] | None:
        if block.startswith(b"data: ") and b"\n" not in block:  # most events: one data line
            return "message", block[6:].decode("utf-8", errors="replace")
        name, data = "", []
        for raw_line in block.split(b"\n"):
            if not raw_line or raw_line.startswith(b":"):
                continue
            field_name, _, value = raw_line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if field_name == b"data":
                data.append(value.decode("utf-8", errors="replace"))
            elif field_name == b"event":
                name = value.decode("utf-8", errors="replace")
        if not data and not name:
            return None
        return name or "message", "\n".join(data)

    def flush(self) -> list[tuple[str, str]]:
        """The event left at end of stream without a final blank line."""
        self._pending_cr = False
        buffer, self._buffer = self._buffer, b""
        event = self._parse_block(buffer.strip(b"\n")) if buffer.strip() else None
        return [event] if event is not None else []


LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Logger:
    """One line per event on stderr: JSON by default, `key=value` text with LOG_FORMAT=text."""

    def __init__(self, fmt: str = "json", level: str = "info", stream: Any = None) -> None:
        self.fmt = fmt
        self.threshold = LOG_LEVELS.get(level, 20)
        self.stream = stream or sys.stderr

    def log(self, level: str, msg: str, **fields: Any) -> None:
        if LOG_LEVELS.get(level, 20) < self.threshold:
            return
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
        if self.fmt == "text":
            parts = [ts, level.upper(), msg] + [f"{k}={v}" for k, v in fields.items() if v is not None]
            line = " ".join(str(p) for p in parts)
        else:
            line = json_dumps({"ts": ts, "level": level, "msg": msg, **fields})
        try:
            try:
                self.stream.write(line + "\n")
            except UnicodeEncodeError:  # a lone surrogate from a client or upstream: keep the line, escaped
                self.stream.write(escape_surrogates(line) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed: logging must never take the proxy down
            pass

    def debug(self, msg: str, **f: Any) -> None:
        self.log("debug", msg, **f)

    def info(self, msg: str, **f: Any) -> None:
        self.log("info", msg, **f)

    def warning(self, msg: str, **f: Any) -> None:
        self.log("warning", msg, **f)

    def error(self, msg: str, **f: Any) -> None:
        self.log("error", msg, **f)


# name -> (type, help, histogram buckets). Label values are bounded: routes, statuses, providers,
# models and tool names are all finite sets in practice.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
METRIC_DEFINITIONS: dict[str, tuple[str, str, tuple[float, ...]]] = {
    "lynkr_requests_total": ("counter", "HTTP requests answered, by route, status, provider and model.", ()),
    "lynkr_request_duration_seconds": (
        "histogram",
        "Time from request to last byte, by route.",
        LATENCY_BUCKETS,
    ),
    "lynkr_time_to_first_token_seconds": (
        "histogram",
        "Time from request to the first streamed content delta.",
        LATENCY_BUCKETS,
    ),
    "lynkr_upstream_duration_seconds": (
        "histogram",
        "Time until the upstream answered with headers, by provider.",
        LATENCY_BUCKETS,
    ),
    "lynkr_tokens_total": (
        "counter",
        "Tokens reported by the upstream, by direction, provider and model.",
        (),
    ),
    "lynkr_prompt_cache_total": ("counter", "Prompt cache lookups, by result (hit, miss).", ()),
    "lynkr_cost_usd_total": (
        "counter",
        "US dollars the answered requests cost (price table x the upstream's usage), "
        "by provider and upstream model.",
        (),
    ),
    "lynkr_tool_calls_total": ("counter", "Server tool calls, by tool and outcome (ok, error).", ()),
    "lynkr_upstream_retries_total": (
        "counter",
        "Upstream attempts retried before any byte reached the client.",
        (),
    ),
    "lynkr_upstream_failovers_total": ("counter", "Requests answered by FALLBACK_PROVIDER.", ()),
    "lynkr_circuit_breaker_state": (
        "gauge",
        "Breaker state per provider: 0 closed, 1 open, 2 half-open.",
        (),
    ),
    "lynkr_in_flight_requests": ("gauge", "Requests being handled now.", ()),
    "lynkr_in_flight_streams": ("gauge", "SSE responses being streamed now.", ()),
    "lynkr_rejected_requests_total": ("counter", "Requests refused to protect the proxy, by reason.", ()),
}


# Prometheus label bounds (see Metrics._bounded): enough for every real model, route and tool name.
METRIC_LABEL_MAX_CHARS = 80
METRIC_LABEL_MAX_VALUES = 200
METRIC_KEY_CACHE_MAX = 20000


class Metrics:
    """A tiny Prometheus registry: counters, gauges and fixed-bucket histograms with labels."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.histograms: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}
        # (name, labels as passed) -> the sorted key: a few updates per request skip the sort.
        self._keys: dict[tuple[Any, ...], tuple[str, tuple[tuple[str, str], ...]]] = {}
        self._label_values: dict[str, set[str]] = {}  # label name -> the values admitted so far

    def _bounded(self, label: str, value: Any) -> str:
        """Label values are capped in length and in number per label: a client sending a new 1 MB model
        name per request must not grow /metrics (or this registry) without bound."""
        text = str(value)[:METRIC_LABEL_MAX_CHARS]
        seen = self._label_values.setdefault(label, set())
        if text not in seen:
            if len(seen) >= METRIC_LABEL_MAX_VALUES:
                return "other"
            seen.add(text)
        return text

    def _key(self, name: str, labels: dict[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
        raw: tuple[Any, ...] | None = (name, *labels.items())
        try:
            key = self._keys.get(raw)
        except TypeError:  # an unhashable label value: not remembered, sorted every time
            raw, key = None, None
        if key is None:
            key = (name, tuple(sorted((k, self._bounded(k, v)) for k, v in labels.items())))
            if raw is not None and len(self._keys) < METRIC_KEY_CACHE_MAX:
                self._keys[raw] = key
        return key

    def inc(self, name: str, value: float = 1.0, **labels: Any) -> None:
        key = self._key(name, labels)
        self.values[key] = self.values.get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: Any) -> None:
        self.values[self._key(name, labels)] = value

    def observe(self, name: str, value: float, **labels: Any) -> None:
        buckets = METRIC_DEFINITIONS[name][2]
        key = self._key(name, labels)
        counts = self.histograms.get(key)
        if counts is None:
            counts = self.histograms[key] = [0.0] * (len(buckets) + 2)  # buckets..., +Inf, sum
        index = bisect.bisect_left(buckets, value)
        counts[index] += 1
        counts[-1] += value

    def render(self) -> str:
        def fmt(labels: tuple[tuple[str, str], ...], extra: tuple[tuple[str, str], ...] = ()) -> str:
            pairs = labels + extra
            if not pairs:
                return ""
            escaped = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, v in pairs)
            return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(pairs, escaped, strict=False)) + "}"

        def num(value: float) -> str:  # exact: a counter past a million must not print as 1.23457e+06
            return str(int(value)) if float(value).is_integer() else repr(float(value))

        lines: list[str] = []
        for name, (kind, help_text, buckets) in METRIC_DEFINITIONS.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            if kind == "histogram":
                for (metric, labels), counts in sorted(self.histograms.items()):
                    if metric != name:
                        continue
                    running = 0.0
                    for bound, count in zip(buckets, counts, strict=False):
                        running += count
                        lines.append(
                            f"{name}_bucket{fmt(labels, (('le', repr(float(bound))),))} {num(running)}"
                        )
                    running += counts[len(buckets)]
                    lines.append(f"{name}_bucket{fmt(labels, (('le', '+Inf'),))} {num(running)}")
                    lines.append(f"{name}_sum{fmt(labels)} {counts[-1]:.6f}")
                    lines.append(f"{name}_count{fmt(labels)} {num(running)}")
            else:
                for (metric, labels), value in sorted(self.values.items()):
                    if metric == name:
                        lines.append(f"{name}{fmt(labels)} {num(value)}")
        return "\n".join(lines) + "\n"


METRICS = Metrics()


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host_port(value: str) -> str:
    """Host part of a Host header / authority (`[::1]:8080` -> `::1`, `a.b:80` -> `a.b`)."""
    value = value.strip()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


if hasattr(asyncio, "timeout"):  # 3.11+: a timer on the current task, no extra task per read

    async def read_with_timeout(reader: asyncio.StreamReader, size: int, timeout: float) -> bytes:
        async with asyncio.timeout(timeout):
            return await reader.read(size)

else:  # pragma: no cover - Python 3.10

    async def read_with_timeout(reader: asyncio.StreamReader, size: int, timeout: float) -> bytes:
        return await asyncio.wait_for(reader.read(size), timeout)


def read_regular_file(path: str, limit: int = -1, dir_fd: int | None = None) -> bytes:
    """A workspace file's bytes, never through a symlink at its last component and never from a FIFO,
    socket or device (OSError otherwise; EINVAL for a special file): what the index, CLAUDE.md and
    summaries read arrives with a repository, and a linked package.json or .py could copy an outside
    file into their output."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return fh.read(limit)


def parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false (got {value!r})")


# == 5. Config ==
#
# One table (SETTINGS) names every setting: its environment name, default, parser and help. The
# environment, then ./.env, then the config file's [settings] table (lower precedence in that order)
# are read once into a frozen, typed Settings object; `--help` and docs/configuration.md come from
# the same table. A setting that is present but invalid stops startup with one line naming it.
# Millisecond settings (`*_MS`) are held in seconds, under the name ending `_s`.


def split_csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def parse_url_setting(name: str, value: str) -> str:
    value = value.strip()
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        raise ConfigError(f"{name} must be an http(s) URL such as https://host.example.com (got {value!r})")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"{name} has an invalid port (got {value!r})") from None
    return value.rstrip("/")


def parse_int_setting(name: str, value: str, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number (got {value!r})") from None
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ConfigError(f"{name} must be {bounds} (got {number})")
    return number


def parse_glob_pairs(name: str, value: str) -> list[tuple[str, str]]:
    pairs = []
    for item in re.split(r"[,\n]", value):
        item = item.strip()
        if not item:
            continue
        glob, sep, target = item.partition("=")
        if not sep or not glob.strip() or not target.strip():
            raise ConfigError(f"{name} must be a comma list of glob=value pairs (bad entry {item!r})")
        pairs.append((glob.strip().lower(), target.strip()))
    return pairs


def parse_model_map(name: str, value: str) -> tuple[tuple[str, str], ...]:
    """glob=target pairs; a target may be `provider,model`, so an entry ends where the next glob= starts."""
    pairs = []
    for item in re.split(r"[,\n]\s*(?=[^,=\n]+=)", value.strip()) if value.strip() else []:
        glob, sep, target = item.strip().partition("=")
        if not sep or not glob.strip() or not target.strip() or "\n" in target:
            raise ConfigError(f"{name} must be a comma list of glob=value pairs (bad entry {item.strip()!r})")
        pairs.append((glob.strip().lower(), target.strip()))
    return tuple(pairs)


def parse_shell_words(name: str, value: str) -> str:
    """A command line set by the operator: split like a shell would (it is run without one)."""
    try:
        shlex.split(value)
    except ValueError as exc:
        raise ConfigError(f"{name} is not a valid command line ({exc}): {value!r}") from None
    return value.strip()


# Parsers: (setting name, text) -> typed value. Each names the setting in its ConfigError.
def _text(name: str, value: str) -> str:
    return value.strip()


def _lower(name: str, value: str) -> str:
    return value.strip().lower()


def _whole(minimum: int = 0, maximum: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, value: str) -> int:
        return parse_int_setting(name, value, minimum, maximum)

    parse.result_type = "int"  # type: ignore[attr-defined]
    return parse


def _millis(minimum: int = 0) -> Callable[[str, str], float]:
    def parse(name: str, value: str) -> float:
        return parse_int_setting(name, value, minimum) / 1000

    parse.result_type = "float"  # type: ignore[attr-defined]
    return parse


def _choice(*options: str) -> Callable[[str, str], str]:
    def parse(name: str, value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in options:
            raise ConfigError(f"{name} must be {', '.join(options[:-1])} or {options[-1]} (got {value!r})")
        return lowered

    parse.result_type = "str"  # type: ignore[attr-defined]
    return parse


def _url(name: str, value: str) -> str:
    return parse_url_setting(name, value) if value.strip() else ""


def _url_or_path(name: str, value: str) -> str:
    value = value.strip()
    return parse_url_setting(name, value) if "://" in value else value


def _database_url(name: str, value: str) -> str:
    """A PostgreSQL URL, checked here so that a typo is one line at startup (never echoing the URL,
    which may hold a password)."""
    value = value.strip()
    if not value:
        return value
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{name} must be a postgresql://user:password@host:port/database URL (or empty)")
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise ConfigError(f"{name} has a port that is not a number") from None
    if re.search(r"%(?![0-9A-Fa-f]{2})", value):
        raise ConfigError(
            f"{name} has a % not followed by two hex digits (percent-encode a password's %, as %25)"
        )
    return value


def _port(name: str, value: str) -> int | None:
    return parse_int_setting(name, value, 0, 65535) if value.strip() else None


def _words(name: str, value: str) -> tuple[str, ...]:
    return split_csv(value)


def _hosts(name: str, value: str) -> tuple[str, ...]:
    return tuple(h.lower() for h in split_csv(value))


def _caps(name: str, value: str) -> tuple[tuple[str, int], ...]:
    return tuple((g, parse_int_setting(name, n, 1)) for g, n in parse_glob_pairs(name, value))


# What each parser returns: the field types of Settings.
PARSER_TYPES: dict[Any, str] = {
    _text: "str",
    _lower: "str",
    _url: "str",
    _url_or_path: "str",
    _database_url: "str",
    _port: "int | None",
    _words: "tuple[str, ...]",
    _hosts: "tuple[str, ...]",
    parse_bool: "bool",
    parse_shell_words: "str",
    parse_model_map: "tuple[tuple[str, str], ...]",
    _caps: "tuple[tuple[str, int], ...]",
}


@dataclass(frozen=True)
class Setting:
    name: str  # the environment variable
    default: str
    help: str
    parse: Callable[[str, str], Any] = _text
    secret: bool = False  # never printed, not even by `lynkr doctor`

    @property
    def attr(self) -> str:
        lowered = self.name.lower()
        return lowered[:-3] + "_s" if lowered.endswith("_ms") else lowered


S = Setting
SETTINGS: tuple[Setting, ...] = (
    # -- server and access --
    S(
        "LYNKR_HOST",
        DEFAULT_HOST,
        "Address to bind. Anything but loopback requires LYNKR_API_KEY (or LYNKR_TRUSTED_NETWORK).",
    ),
    S(
        "LYNKR_PORT",
        "",
        f"Port to listen on (else PORT from the real environment, else {DEFAULT_PORT}).",
        _port,
    ),
    S(
        "LYNKR_API_KEY",
        "",
        "Client key required on every request (x-api-key or Authorization: Bearer).",
        secret=True,
    ),
    S(
        "LYNKR_ADMIN_KEY",
        "",
        "Key for the admin routes (/admin/keys, /admin/usage): create and revoke personal keys, read usage.",
        secret=True,
    ),
    S(
        "LYNKR_KEYS",
        "optional",
        "Personal keys (lynkr keys create): off | optional (a personal key is charged and limited when sent) | "
        "required (every request needs one; the team gateway).",
        _choice("off", "optional", "required"),
    ),
    S(
        "LYNKR_TRUSTED_NETWORK",
        "false",
        "Serve a non-loopback LYNKR_HOST without LYNKR_API_KEY. Only where nothing untrusted can reach the "
        "port: e.g. a container whose port is published on the host's loopback alone.",
        parse_bool,
    ),
    S("LYNKR_ALLOWED_HOSTS", "", "Extra Host names accepted besides loopback (comma list).", _hosts),
    S(
        "LYNKR_ALLOWED_ORIGINS",
        "",
        "Browser origins besides lynkr's own whose pages may call it, e.g. "
        "http://localhost:3000 (comma list).",
        _words,
    ),
    S(
        "LYNKR_CONFIG",
        "",
        "Config file with several providers and routes (default ./lynkr.toml when present).",
    ),
    S("LYNKR_DATA_DIR", "", "State directory (SQLite files); default <WORKSPACE_ROOT>/.lynkr/."),
    S("SESSION_DB_PATH", "", "Session store file; default sessions.db in LYNKR_DATA_DIR."),
    S(
        "LYNKR_DATABASE_URL",
        "",
        "PostgreSQL for every store instead of SESSION_DB_PATH (postgresql://user:password@host:port/db; "
        "the postgres extra): instances sharing it share sessions, tasks, keys, usage and limits.",
        _database_url,
        secret=True,
    ),
    S(
        "LYNKR_WRITE_QUEUE_MAX",
        "10000",
        "With LYNKR_DATABASE_URL: writes waiting for the database above which new requests get 503 with "
        "retry-after (a turn already answered is never dropped).",
        _whole(1),
    ),
    S("WORKSPACE_ROOT", "", "The workspace lynkr serves; default the current directory."),
    # -- the provider from the environment alone (lynkr.toml describes several) --
    S(
        "MODEL_PROVIDER",
        "databricks",
        "databricks | azure-anthropic | anthropic | bedrock | vertex | openai | "
        "openai-responses | azure-openai | azure-openai-responses | openrouter | ollama | gemini | openai-compatible.",
        _lower,
    ),
    S(
        "MODEL_DEFAULT",
        "",
        "Upstream model/endpoint for names MODEL_MAP does not match (default: the preset's).",
    ),
    S(
        "MODEL_MAP",
        "",
        "Comma list of glob=target (first match wins), e.g. claude-*haiku*=my-haiku; a target may "
        "be provider,model.",
        parse_model_map,
    ),
    S(
        "MODEL_MAX_TOKENS",
        "",
        "Comma list of glob=N caps on max_tokens, matched on the client's model name or the upstream model.",
        _caps,
    ),
    S(
        "MODEL_MAX_TOKENS_DEFAULT",
        str(DEFAULT_MAX_TOKENS),
        "max_tokens for requests that omit it.",
        _whole(1),
    ),
    S("DATABRICKS_API_BASE", "", "Workspace URL, e.g. https://adb-123.azuredatabricks.net.", _url),
    S("DATABRICKS_API_KEY", "", "Personal access token or OAuth token (sent as Bearer).", secret=True),
    S(
        "DATABRICKS_ENDPOINT_PATH",
        "",
        "Pin one path for every model, e.g. /serving-endpoints/x/invocations.",
        _url_or_path,
    ),
    S(
        "DATABRICKS_API_FORMAT",
        "openai",
        "openai (serving endpoints) | anthropic (AI Gateway pass-through).",
        _choice("openai", "anthropic"),
    ),
    S(
        "AZURE_ANTHROPIC_ENDPOINT",
        "",
        "https://<resource>.services.ai.azure.com/anthropic/v1/messages.",
        _url,
    ),
    S("AZURE_ANTHROPIC_API_KEY", "", "Foundry API key (sent as x-api-key and api-key).", secret=True),
    S(
        "AZURE_ANTHROPIC_VERSION",
        ANTHROPIC_VERSION_DEFAULT,
        "anthropic-version when the client sends none (every Anthropic-format provider).",
    ),
    S(
        "LYNKR_ANTHROPIC_API_KEY",
        "",
        "Anthropic's API key for MODEL_PROVIDER=anthropic (ANTHROPIC_API_KEY is the "
        "Claude Code client's and is never read).",
        secret=True,
    ),
    S("LYNKR_ANTHROPIC_BASE_URL", "", "Anthropic-format endpoint (default https://api.anthropic.com).", _url),
    S("OPENAI_API_KEY", "", "OpenAI key (MODEL_PROVIDER=openai).", secret=True),
    S("OPENAI_BASE_URL", "", "OpenAI API base (default https://api.openai.com/v1).", _url),
    S(
        "AZURE_OPENAI_ENDPOINT",
        "",
        "https://<resource>.openai.azure.com (MODEL_PROVIDER=azure-openai).",
        _url,
    ),
    S("AZURE_OPENAI_API_KEY", "", "Azure OpenAI key (sent as api-key).", secret=True),
    S(
        "AZURE_OPENAI_API_VERSION",
        "",
        "api-version query value (default 2024-10-21; v1 for the v1 API).",
        _text,
    ),
    S("AZURE_OPENAI_DEPLOYMENT", "", "Deployment that answers (the default upstream model)."),
    S("OPENROUTER_API_KEY", "", "OpenRouter key (MODEL_PROVIDER=openrouter).", secret=True),
    S("OPENROUTER_BASE_URL", "", "OpenRouter API base (default https://openrouter.ai/api/v1).", _url),
    S("OLLAMA_BASE_URL", "", "Ollama server (default http://127.0.0.1:11434; MODEL_PROVIDER=ollama).", _url),
    S("GEMINI_API_KEY", "", "Gemini API key (MODEL_PROVIDER=gemini).", secret=True),
    S(
        "GEMINI_BASE_URL",
        "",
        "Gemini's OpenAI-compatible base (default https://generativelanguage.googleapis.com/v1beta/openai).",
        _url,
    ),
    S(
        "OPENAI_COMPATIBLE_BASE_URL",
        "",
        "Any OpenAI-compatible server: vLLM, llama.cpp, LM Studio "
        "(MODEL_PROVIDER=openai-compatible), e.g. http://127.0.0.1:8000/v1.",
        _url,
    ),
    S("OPENAI_COMPATIBLE_API_KEY", "", "Its key, when it asks for one.", secret=True),
    S(
        "GOOGLE_CLOUD_PROJECT",
        "",
        "Google Cloud project of Claude on Vertex AI (MODEL_PROVIDER=vertex).",
        _text,
    ),
    S(
        "ANTHROPIC_VERTEX_PROJECT_ID",
        "",
        "The same, as Claude Code names it (when GOOGLE_CLOUD_PROJECT is unset).",
        _text,
    ),
    S(
        "CLOUD_ML_REGION",
        "",
        "Vertex AI region, e.g. us-east5 or global (Claude Code's name; VERTEX_REGION too).",
        _text,
    ),
    S("VERTEX_REGION", "", "Vertex AI region (when CLOUD_ML_REGION is unset).", _text),
    S(
        "VERTEX_BASE_URL",
        "",
        "Vertex endpoint override (a private endpoint, a test); default from the region.",
        _url,
    ),
    S(
        "VERTEX_ACCESS_TOKEN",
        "",
        "A Google OAuth access token for Vertex (else GOOGLE_OAUTH_ACCESS_TOKEN, the "
        "metadata server, gcloud, or GOOGLE_APPLICATION_CREDENTIALS).",
        secret=True,
    ),
    S(
        "GOOGLE_OAUTH_ACCESS_TOKEN",
        "",
        "A Google OAuth access token (when VERTEX_ACCESS_TOKEN is unset).",
        secret=True,
    ),
    S(
        "GCE_METADATA_HOST",
        "",
        "The GCE/GKE metadata server's address (as Google's libraries take it).",
        _text,
    ),
    S(
        "GOOGLE_APPLICATION_CREDENTIALS",
        "",
        "A service-account or user credentials file for Vertex (needs the "
        "vertex extra: pip install 'lynkr[vertex]').",
        _text,
    ),
    S(
        "AWS_REGION",
        "",
        "AWS region of Amazon Bedrock (MODEL_PROVIDER=bedrock; else AWS_DEFAULT_REGION, the profile's).",
        _text,
    ),
    S("AWS_DEFAULT_REGION", "", "AWS region when AWS_REGION is unset.", _text),
    S("AWS_ACCESS_KEY_ID", "", "AWS access key for SigV4 (else the profile's, from ~/.aws).", secret=True),
    S("AWS_SECRET_ACCESS_KEY", "", "Its secret.", secret=True),
    S("AWS_SESSION_TOKEN", "", "A temporary credential's session token.", secret=True),
    S("AWS_PROFILE", "", "Profile of ~/.aws/credentials and ~/.aws/config (default: default).", _text),
    S("AWS_SHARED_CREDENTIALS_FILE", "", "The shared credentials file (default ~/.aws/credentials).", _text),
    S("AWS_CONFIG_FILE", "", "The AWS config file (default ~/.aws/config).", _text),
    S(
        "AWS_BEARER_TOKEN_BEDROCK",
        "",
        "A Bedrock API key: sent as a bearer token instead of a SigV4 signature.",
        secret=True,
    ),
    S("AWS_BEDROCK_ENDPOINT", "", "Bedrock endpoint override (a VPC endpoint, a test).", _url),
    S(
        "BEDROCK_SURFACE",
        "auto",
        "Which Bedrock API serves Claude: invoke (InvokeModel, ARN-versioned models), messages "
        "(the Messages API on bedrock-mantle), runtime-messages (the Messages API on bedrock-runtime), or auto (invoke "
        "for anthropic.* ids and ARNs, else messages).",
        _choice("auto", "invoke", "messages", "runtime-messages"),
    ),
    S(
        "FALLBACK_PROVIDER",
        "",
        "A second preset (its own variables set) used when the first fails or its breaker is open.",
        _lower,
    ),
    S(
        "FALLBACK_MODEL_DEFAULT",
        "",
        "Upstream model for the fallback provider (default: that preset's default).",
    ),
    # -- upstream behaviour --
    S("STREAM_PING_INTERVAL_MS", "15000", "Send an SSE ping after this much upstream silence.", _millis(1)),
    S("UPSTREAM_CONNECT_TIMEOUT_MS", "10000", "Upstream TCP+TLS connect timeout.", _millis(1)),
    S("UPSTREAM_READ_TIMEOUT_MS", "600000", "Longest upstream silence before timeout_error.", _millis(1)),
    S(
        "UPSTREAM_MAX_RETRIES",
        "2",
        "Retries of 429/5xx/529/connection failures before any byte reached the client.",
        _whole(0, 10),
    ),
    S(
        "UPSTREAM_RETRY_AFTER_MAX_MS",
        "10000",
        "Longest upstream retry-after lynkr waits out itself (longer ones go to the client).",
        _millis(0),
    ),
    S(
        "CIRCUIT_BREAKER_FAILURES",
        "5",
        "Consecutive upstream failures that open a provider's breaker (0 disables it).",
        _whole(0),
    ),
    S(
        "CIRCUIT_BREAKER_RESET_MS",
        "30000",
        "How long an open breaker answers at once before one probe is let through.",
        _millis(1),
    ),
    S("SHUTDOWN_GRACE_MS", "10000", "On SIGTERM, how long in-flight requests may finish.", _millis(0)),
    S("PROMPT_CACHE_ENABLED", "true", "Answer identical final prompts from the local cache.", parse_bool),
    S("PROMPT_CACHE_TTL_MS", "300000", "How long a cached answer stays valid.", _millis(0)),
    S("PROMPT_CACHE_MAX_ENTRIES", "64", "Cache size; least recently used answers are evicted.", _whole(0)),
    S(
        "PROMPT_CACHE_BACKEND",
        "memory",
        "memory (this process) | postgres (a table in LYNKR_DATABASE_URL: an answer one instance stored is "
        "a hit on every other).",
        _choice("memory", "postgres"),
    ),
    # -- server tools and policy --
    S(
        "LYNKR_TOOLS",
        "mcp_*",
        "Server tools offered on every request (comma list of names or globs).",
        _words,
    ),
    S(
        "LYNKR_SHOW_TOOL_ACTIVITY",
        "true",
        "Append a text record of each server tool call to the reply.",
        parse_bool,
    ),
    S("LYNKR_TOOL_ACTIVITY_MAX_CHARS", "2000", "Longest tool result kept in that record.", _whole(0)),
    S("LYNKR_TOOL_TIMEOUT_MS", "120000", "Longest a server tool may run.", _millis(1)),
    S("POLICY_MAX_STEPS", "8", "Model rounds per request when server tools run.", _whole(1)),
    S("POLICY_MAX_TOOL_CALLS", "32", "Server tool calls per request.", _whole(1)),
    S(
        "POLICY_DISALLOWED_TOOLS",
        "",
        "Server tools that may never run (comma list of names or globs).",
        _words,
    ),
    S(
        "POLICY_FILE_BLOCKED_PATHS",
        DEFAULT_FILE_BLOCKED_PATHS_TEXT,
        "Paths tools may not read or write (globs; a pattern without '/' matches any path component).",
        _words,
    ),
    S(
        "WEB_SEARCH_PROVIDER",
        "auto",
        "Search service behind web_search and Claude Code's WebSearch: searxng | brave | "
        "tavily | auto (brave with BRAVE_API_KEY, else tavily with TAVILY_API_KEY, else searxng).",
        _choice("auto", "searxng", "brave", "tavily"),
    ),
    S(
        "WEB_SEARCH_ENDPOINT",
        "",
        "The search service's URL: required for SearxNG (e.g. http://127.0.0.1:8888/search); "
        "overrides Brave's or Tavily's API URL (a proxy, a test).",
        _url,
    ),
    S("BRAVE_API_KEY", "", "Brave Search API key (WEB_SEARCH_PROVIDER=brave).", secret=True),
    S("TAVILY_API_KEY", "", "Tavily API key (WEB_SEARCH_PROVIDER=tavily).", secret=True),
    S(
        "WEB_SEARCH_MAX_RESULTS",
        "8",
        "Results per search Claude Code's WebSearch gets when lynkr runs it.",
        _whole(1),
    ),
    S(
        "WEB_SEARCH_ALLOWED_HOSTS",
        "",
        "If set, the only hosts web tools may reach (globs); also admits private ones.",
        _hosts,
    ),
    S("WEB_FETCH_MAX_BYTES", "2097152", "Largest page web_fetch downloads.", _whole(1024)),
    S("LYNKR_GIT_TIMEOUT_MS", "120000", "Longest a git command may run.", _millis(1)),
    S(
        "POLICY_GIT_ALLOW_HOOKS",
        "false",
        "Let tool-driven git run the repository's hooks and fsmonitor (off: the "
        "model can write hook bodies that core.hooksPath points to).",
        parse_bool,
    ),
    S(
        "LYNKR_SUBPROCESS_ENV",
        "",
        "Variables passed to programs tools run (tests, git) besides PATH, HOME, USER, "
        "locale, TERM, TZ and TMPDIR (comma list of names); lynkr's own settings and keys never are.",
        _words,
    ),
    S("POLICY_GIT_ALLOW_PUSH", "false", "Allow workspace_git_push.", parse_bool),
    S("POLICY_GIT_ALLOW_PULL", "true", "Allow workspace_git_pull.", parse_bool),
    S("POLICY_GIT_ALLOW_COMMIT", "true", "Allow workspace_git_commit.", parse_bool),
    S(
        "POLICY_GIT_REQUIRE_TESTS",
        "false",
        "Commit/push only content that a passing test run saw exactly.",
        parse_bool,
    ),
    S(
        "POLICY_GIT_TEST_COMMAND",
        "",
        "The test command the gate counts (else WORKSPACE_TEST_COMMAND, else detected).",
        parse_shell_words,
    ),
    S(
        "WORKSPACE_TEST_COMMAND",
        "",
        "Test command (run without a shell); default detected: pytest, npm test, ...",
        parse_shell_words,
    ),
    S(
        "POLICY_GIT_TEST_DEPENDENCY_DIRS",
        "node_modules,.venv,venv",
        "Folders of the workspace linked into the "
        "gate's clean checkout (dependencies the commit does not hold).",
        _words,
    ),
    S("WORKSPACE_TEST_TIMEOUT_MS", "600000", "Longest a test run may take.", _millis(1)),
    S(
        "POLICY_SANDBOX",
        "auto",
        "Where test runs execute: bwrap (bubblewrap: only the workspace writable, secrets "
        "and lynkr's state hidden, no network), podman (a container of POLICY_SANDBOX_IMAGE), none (on the host), or "
        "auto (bwrap when it works, said at start-up).",
        _choice("auto", "bwrap", "podman", "none"),
    ),
    S(
        "POLICY_SANDBOX_IMAGE",
        "",
        "The image test runs use with POLICY_SANDBOX=podman (it holds the project's "
        "toolchain; the workspace is mounted at its own path).",
    ),
    S("POLICY_SANDBOX_NETWORK", "false", "Give sandboxed test runs the network.", parse_bool),
    S(
        "POLICY_SANDBOX_HIDE",
        "",
        "More host paths sandboxed runs must not see (comma list; ~ is your home).",
        _words,
    ),
    S(
        "POLICY_SANDBOX_READ",
        "",
        "Paths under /tmp (or hidden ones) sandboxed runs may still read, e.g. a "
        "toolchain (comma list); the sandbox's /tmp is private otherwise.",
        _words,
    ),
    S(
        "WORKSPACE_TEST_COVERAGE_FILES",
        "",
        "Coverage reports to read (comma list): Istanbul JSON, coverage.py JSON, lcov.",
        _words,
    ),
    # -- MCP --
    S("MCP_SERVER_MANIFEST", "", "One MCP manifest file (also accepts Claude Code's .mcp.json)."),
    S(
        "MCP_MANIFEST_DIRS",
        "~/.claude/mcp",
        "Folders whose *.json files are MCP manifests (separated by ; : or ,).",
    ),
    S(
        "MCP_ALLOW_WORKSPACE_MANIFEST",
        "false",
        "Accept MCP manifests inside WORKSPACE_ROOT (the model can write "
        "there; the file tools still may not touch them).",
        parse_bool,
    ),
    S("MCP_CALL_TIMEOUT_MS", "60000", "Longest one MCP tool call may take.", _millis(1)),
    S(
        "MCP_STARTUP_TIMEOUT_MS",
        "30000",
        "Longest an MCP server may take to start and initialize.",
        _millis(1),
    ),
    S(
        "MCP_READY_WAIT_MS",
        "3000",
        "How long startup waits for MCP servers before accepting requests.",
        _millis(0),
    ),
    S(
        "MCP_SANDBOX_ENABLED",
        "true",
        "Run stdio MCP servers in a container when MCP_SANDBOX_IMAGE is set.",
        parse_bool,
    ),
    S("MCP_SANDBOX_IMAGE", "", "Container image for sandboxed MCP servers (unset: servers run on the host)."),
    S(
        "MCP_SANDBOX_RUNTIME",
        "docker",
        "docker | podman | an absolute path (with MCP_SANDBOX_IMAGE), or bwrap "
        "(bubblewrap: no image; the host read-only, as for test runs).",
    ),
    S("MCP_SANDBOX_ALLOW_NETWORKING", "false", "Give sandboxed servers a network.", parse_bool),
    S(
        "MCP_SANDBOX_WORKSPACE_WRITABLE",
        "false",
        "Mount the workspace read-write (default read-only at /workspace).",
        parse_bool,
    ),
    S("MCP_SANDBOX_MEMORY", "512m", "Memory limit per sandboxed server."),
    S("MCP_SANDBOX_CPUS", "1", "CPU limit per sandboxed server."),
    S("MCP_SANDBOX_PIDS_LIMIT", "256", "Process limit per sandboxed server.", _whole(1)),
    S(
        "MCP_SANDBOX_ENV_PASSTHROUGH",
        "",
        "Environment variables passed into the sandbox (comma list).",
        _words,
    ),
    S(
        "MCP_SANDBOX_EXTRA_MOUNTS",
        "",
        "Extra mounts, comma list of /host:/container[:ro|rw] (default ro).",
        _words,
    ),
    S(
        "MCP_SANDBOX_PERMISSION_MODE",
        "auto",
        "auto | require | deny: which servers may run unsandboxed.",
        _choice("auto", "require", "deny"),
    ),
    S("MCP_SANDBOX_PERMISSION_ALLOW", "", "Servers (globs) allowed to run unsandboxed.", _words),
    S("MCP_SANDBOX_PERMISSION_DENY", "", "Servers (globs) never allowed to run unsandboxed.", _words),
    # -- index --
    S(
        "LYNKR_INDEX_ON_START",
        "true",
        "Update the repository index and CLAUDE.md in the background at startup.",
        parse_bool,
    ),
    S(
        "LYNKR_CLAUDE_MD",
        "true",
        "Maintain a generated block in WORKSPACE_ROOT/CLAUDE.md on each index rebuild.",
        parse_bool,
    ),
    S(
        "LYNKR_INDEX_TIMEOUT_MS",
        "600000",
        "Longest an index rebuild may take; then it stops, keeping its progress.",
        _millis(1),
    ),
    # -- operations --
    S(
        "LYNKR_HEADER_TIMEOUT_MS",
        str(int(HEADER_READ_TIMEOUT_S * 1000)),
        "A client must send a request's headers within this (slowloris protection).",
        _millis(100),
    ),
    S(
        "MAX_CONCURRENT_REQUESTS",
        "2048",
        "Requests handled at once; more are refused at once with retry-after.",
        _whole(1),
    ),
    S(
        "RATE_LIMIT_REQUESTS_PER_MIN",
        "0",
        "Per-client request limit (by the verified LYNKR_API_KEY, else the client's address); 0 = off.",
        _whole(0),
    ),
    S("LOG_FORMAT", "json", "json | text.", _choice("json", "text")),
    S("LOG_LEVEL", "info", "debug | info | warning | error.", _choice(*LOG_LEVELS)),
    S("LOG_BODIES", "false", "Log request bodies (prompts!). Keys are never logged.", parse_bool),
)
del S
SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}
# The typed, frozen object every component reads (`cfg.settings.upstream_max_retries`), built from the table.
Settings = dataclasses.make_dataclass(
    "Settings",
    [(s.attr, getattr(s.parse, "result_type", None) or PARSER_TYPES[s.parse]) for s in SETTINGS],
    frozen=True,
)


def read_dotenv(path: str) -> tuple[dict[str, str], list[str]]:
    """Parse a .env file (KEY=VALUE, optional `export`, quotes, # comments). Returns lynkr's keys only."""
    values: dict[str, str] = {}
    notices: list[str] = []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return values, notices
    except OSError as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            continue
        if value[:1] in ("'", '"') and value[-1:] == value[:1] and len(value) >= 2:
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if key in ("PORT", "HOST"):
            notices.append(f"{path}: ignoring {key}= (it belongs to your app); use LYNKR_{key} for lynkr")
            continue
        if key in SETTINGS_BY_NAME:
            values[key] = value
    return values, notices


ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_env_references(value: Any, where: str, environ: dict[str, str]) -> Any:
    """ "$NAME" / "${NAME}" in a config file's strings read the environment: secrets stay out of the file."""
    if isinstance(value, dict):
        return {k: expand_env_references(v, f"{where}.{k}", environ) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env_references(v, f"{where}[{i}]", environ) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        found = environ.get(name, "")
        if not found:
            raise ConfigError(f"{where}: ${name} is not set (export {name}=..., or put it in .env)")
        return found

    return ENV_REFERENCE.sub(lookup, value)


def read_config_file(path: str, environ: dict[str, str]) -> dict[str, Any]:
    """lynkr.toml -> {"providers": {...}, "router": {...}, "settings": {NAME: text}}, $VARs expanded."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (--config / LYNKR_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in data:
        if key not in ("providers", "router", "settings", "prices"):
            raise ConfigError(
                f"{path}: {key}: unknown table (use [providers.NAME], [router], [settings], "
                '[prices."MODEL-GLOB"])'
            )
    for key in ("providers", "router", "settings", "prices"):
        if not isinstance(data.get(key, {}), dict):
            raise ConfigError(f"{path}: {key}: expected a table")
    providers = data.get("providers", {})
    for name, table in providers.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: providers.{name}: expected a table ([providers.{name}])")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(f"{path}: providers.{name}: names use letters, digits, '_', '-' and '.' only")
    settings: dict[str, str] = {}
    for key, value in data.get("settings", {}).items():
        name = key.upper()
        if name not in SETTINGS_BY_NAME:
            raise ConfigError(f"{path}: settings.{key}: unknown setting (python lynkr.py --help lists them)")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list):
            value = ",".join(str(v) for v in value)
        settings[name] = str(value)
    return {
        "providers": expand_env_references(providers, f"{path}: providers", environ),
        "router": data.get("router", {}),
        "settings": expand_env_references(settings, f"{path}: settings", environ),
        "prices": data.get("prices", {}),
    }


# -- trust: what arrives with a repository must not reconfigure lynkr --
#
# A .env or lynkr.toml in the working folder is part of the project a user cloned: it could send
# prompts and keys elsewhere (a base URL, "$OPENAI_API_KEY" as another provider's key) or name
# programs to run. Like direnv, lynkr reads such a file only once the user trusted its exact content
# (`lynkr trust`: path and SHA-256 in ~/.config/lynkr/trusted.json); an explicit --env-file or
# --config / LYNKR_CONFIG is trust too. An untrusted file is skipped with one notice saying how.


def trust_store(environ: dict[str, str]) -> str:
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".config"
    )
    return os.path.join(base, "lynkr", "trusted.json")


def file_digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def read_trusted(environ: dict[str, str]) -> dict[str, str]:
    try:
        with open(trust_store(environ), encoding="utf-8") as fh:
            data = json.load(fh)
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def is_trusted(path: str, environ: dict[str, str]) -> bool:
    real = os.path.realpath(path)
    try:
        return read_trusted(environ).get(real) == file_digest(real)
    except OSError:
        return False


def trust_files(paths: Iterable[str], environ: dict[str, str]) -> list[str]:
    """Record each file's content as trusted; returns what was recorded (`lynkr trust`)."""
    trusted = read_trusted(environ)
    done = []
    for path in paths:
        real = os.path.realpath(path)
        trusted[real] = file_digest(real)
        done.append(real)
    store = trust_store(environ)
    os.makedirs(os.path.dirname(store), mode=0o700, exist_ok=True)
    tmp = store + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(trusted, fh, indent=1, sort_keys=True)
    os.replace(tmp, store)
    return done


UNTRUSTED_NOTICE = (
    "skipped {path}: lynkr reads a {kind} from the working folder only once you trust its content "
    "(it could send prompts and keys elsewhere); run `python lynkr.py trust` to accept it, or pass "
    "{flag}"
)


def load_config(
    environ: dict[str, str] | None = None,
    env_file: str | None = None,
    cli_host: str | None = None,
    cli_port: int | None = None,
    config_file: str | None = None,
) -> Config:
    """Environment + .env + config file -> validated Config. Raises ConfigError naming the bad setting."""
    real_env = dict(os.environ if environ is None else environ)
    explicit_file = env_file is not None
    dotenv_path = env_file or os.path.join(os.getcwd(), ".env")
    if explicit_file and not os.path.isfile(dotenv_path):
        raise ConfigError(f"--env-file {dotenv_path} does not exist")
    skipped: list[str] = []
    if not explicit_file and os.path.isfile(dotenv_path) and not is_trusted(dotenv_path, real_env):
        skipped.append(UNTRUSTED_NOTICE.format(path=dotenv_path, kind=".env", flag="--env-file PATH"))
        dotenv, notices = {}, []
    else:
        dotenv, notices = read_dotenv(dotenv_path)
    notices += skipped
    layered = {**dotenv, **{k: v for k, v in real_env.items() if k in SETTINGS_BY_NAME}}
    config_path = config_file or layered.get("LYNKR_CONFIG", "").strip()
    local_toml = os.path.join(os.getcwd(), "lynkr.toml")
    if not config_path and os.path.isfile(local_toml):
        if is_trusted(local_toml, real_env):
            config_path = local_toml
        else:
            notices.append(UNTRUSTED_NOTICE.format(path=local_toml, kind="lynkr.toml", flag="--config PATH"))
    file_data: dict[str, Any] = {"providers": {}, "router": {}, "settings": {}, "prices": {}}
    if config_path:
        file_data = read_config_file(config_path, {**dotenv, **real_env})
    merged = {**file_data["settings"], **layered}
    values = {}
    for setting in SETTINGS:
        text = merged.get(setting.name, "")
        values[setting.attr] = setting.parse(setting.name, text if text.strip() else setting.default)
    s = Settings(**values)

    cfg = Config(
        settings=s,
        notices=notices,
        config_file=config_path,
        providers_table=file_data["providers"],
        router_table=file_data["router"],
        prices_table=file_data["prices"],
    )
    cfg.host = cli_host or s.lynkr_host
    if cli_port is not None:
        cfg.port = cli_port
    elif s.lynkr_port is not None:
        cfg.port = s.lynkr_port
    elif real_env.get("PORT", "").strip():
        cfg.port = parse_int_setting("PORT", real_env["PORT"], 0, 65535)
    cfg.api_key = s.lynkr_api_key
    cfg.allowed_hosts = s.lynkr_allowed_hosts
    keys_required = s.lynkr_keys == "required"
    if (
        not is_loopback_host(cfg.host)
        and not cfg.api_key
        and not s.lynkr_trusted_network
        and not keys_required
    ):
        raise ConfigError(
            f"LYNKR_API_KEY must be set to bind {cfg.host} (not loopback): clients then send it as x-api-key "
            "(or, on a network only trusted clients reach, LYNKR_TRUSTED_NETWORK=true)"
        )
    # Resolved once, here: every confinement check compares real paths against this one.
    cfg.workspace_root = os.path.realpath(s.workspace_root or os.getcwd())
    if not os.path.isdir(cfg.workspace_root):
        raise ConfigError(f"WORKSPACE_ROOT must be an existing directory (got {cfg.workspace_root!r})")
    cfg.data_dir = os.path.abspath(s.lynkr_data_dir or os.path.join(cfg.workspace_root, ".lynkr"))
    cfg.session_db_path = s.session_db_path or os.path.join(cfg.data_dir, "sessions.db")
    if s.prompt_cache_backend == "postgres" and not s.lynkr_database_url:
        raise ConfigError("PROMPT_CACHE_BACKEND=postgres needs LYNKR_DATABASE_URL (the database it shares)")
    cfg.model_map = s.model_map
    cfg.model_max_tokens = s.model_max_tokens
    cfg.max_tokens_default = s.model_max_tokens_default
    cfg.log_format, cfg.log_level, cfg.log_bodies = s.log_format, s.log_level, s.log_bodies
    cfg.stream_ping_interval_s = s.stream_ping_interval_s
    cfg.upstream_connect_timeout_s = s.upstream_connect_timeout_s
    cfg.upstream_read_timeout_s = s.upstream_read_timeout_s
    cfg.shutdown_grace_s = s.shutdown_grace_s
    return cfg


def prepare_data_dir(path: str) -> None:
    """Create the state directory with a `*` .gitignore so it is never committed or indexed."""
    os.makedirs(path, exist_ok=True)
    ignore = os.path.join(path, ".gitignore")
    if not os.path.exists(ignore):
        with open(ignore, "w", encoding="utf-8") as fh:
            fh.write("# lynkr state: never commit\n*\n")


# == 6. HTTP server ==
#
# Theory of operation: one asyncio task per connection drives an h11 server connection.
# A request head must arrive within HEADER_READ_TIMEOUT_S of its first byte (an idle keep-alive
# connection waits KEEPALIVE_IDLE_TIMEOUT_S for that first byte). The body is read whole, up to
# MAX_REQUEST_BODY_BYTES (a declared Content-Length over it is refused before reading). The
# handler never raises: it returns a Response, whose body is either bytes or an async iterator;
# each streamed chunk is written and drained before the next is pulled, so a slow client slows
# the upstream read instead of growing a buffer. On shutdown idle connections close at once and
# busy ones get a grace period.

Handler = Callable[[Request], Awaitable[Response]]
ErrorResponder = Callable[[int, str, str], Response]


def _reason_phrase(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Overloaded" if status == 529 else b""


class _ReadTimeout(Exception):
    pass


@dataclass
class _ConnectionState:
    busy: bool = False


def _header_text(raw: bytes) -> str:
    """Header values as clients mean them: UTF-8 (an x-session-id in Greek stays Greek and can be fetched
    back by name), else Latin-1 as HTTP/1.1 defines."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class HTTPServer:
    def __init__(
        self,
        handler: Handler,
        error_responder: ErrorResponder,
        log: Logger,
        header_timeout_s: float = HEADER_READ_TIMEOUT_S,
    ) -> None:
        self.header_timeout_s = header_timeout_s
        self.handler = handler
        self.error_responder = error_responder  # (status, type, message) -> Response, for protocol errors
        self.log = log
        self.draining = False
        self._server: asyncio.base_events.Server | None = None
        self._connections: dict[asyncio.Task[Any], _ConnectionState] = {}

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(
            self._on_connect, host, port, limit=READ_CHUNK_BYTES, backlog=1024
        )
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting; close idle connections now; give busy ones `grace_s` to finish."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for task, state in list(self._connections.items()):
            if not state.busy:
                task.cancel()
        deadline = time.monotonic() + grace_s
        while self._connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            for task, state in list(self._connections.items()):
                if not state.busy:
                    task.cancel()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        state = _ConnectionState()
        self._connections[task] = state
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        try:
            await self._serve(reader, writer, state, client)
        except (ConnectionError, asyncio.CancelledError, _ReadTimeout, TimeoutError):
            pass
        except Exception as exc:  # noqa: BLE001 -- a bug: log it once, drop only this connection
            self.log.error("connection failed", client=client, **error_log_fields(exc))
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _receive(self, conn: h11.Connection, reader: asyncio.StreamReader, timeout: float) -> None:
        try:
            data = await read_with_timeout(reader, READ_CHUNK_BYTES, timeout)
        except TimeoutError:
            raise _ReadTimeout() from None
        conn.receive_data(data)

    async def _next_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        deadline: float | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if deadline is None:
                    # Idle until the first byte of a request, then the head has a hard deadline.
                    await self._receive(conn, reader, KEEPALIVE_IDLE_TIMEOUT_S)
                    deadline = time.monotonic() + self.header_timeout_s
                else:
                    await self._receive(conn, reader, max(0.0, deadline - time.monotonic()))
                continue
            return event

    async def _read_body(self, conn: h11.Connection, reader: asyncio.StreamReader) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                await self._receive(conn, reader, BODY_READ_TIMEOUT_S)
            elif isinstance(event, h11.Data):
                total += len(event.data)
                if total > MAX_REQUEST_BODY_BYTES:
                    raise RequestTooLarge(f"request body exceeds {MAX_REQUEST_BODY_BYTES} bytes (32 MiB)")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:  # ConnectionClosed mid-body
                return None

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _ConnectionState, client: str
    ) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        while not self.draining:
            state.busy = False
            try:
                event = await self._next_request(conn, reader)
            except h11.RemoteProtocolError as exc:
                await self._send_protocol_error(conn, writer, exc.error_status_hint or 400, str(exc))
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed
            state.busy = True
            head_bytes = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
            if (
                head_bytes > MAX_HEADER_BYTES
            ):  # h11 checks only while the head is incomplete: one big read passes
                await self._send_protocol_error(
                    conn, writer, 431, f"request head exceeds {MAX_HEADER_BYTES} bytes"
                )
                return
            request = self._make_request(event, client)
            if "transfer-encoding" in request.headers and "content-length" in request.headers:
                # RFC 9112 6.1: a front proxy and lynkr could frame this body differently (request smuggling).
                await self._send_protocol_error(
                    conn, writer, 400, "both Content-Length and Transfer-Encoding"
                )
                return
            try:
                declared = int(request.headers.get("content-length", "0") or 0)
            except ValueError:
                declared = 0
            try:
                if declared > MAX_REQUEST_BODY_BYTES:
                    raise RequestTooLarge(f"request body exceeds {MAX_REQUEST_BODY_BYTES} bytes (32 MiB)")
                if conn.they_are_waiting_for_100_continue:  # curl waits a second for this before large bodies
                    writer.write(
                        conn.send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
                    )
                body = await self._read_body(conn, reader)
            except RequestTooLarge as exc:
                await self._send(
                    conn, writer, request, self.error_responder(413, exc.error_type, exc.message)
                )
                return  # the rest of the body is unread: this connection cannot be reused
            except h11.RemoteProtocolError as exc:
                await self._send_protocol_error(conn, writer, exc.error_status_hint or 400, str(exc))
                return
            if body is None:
                return
            request.body = body
            response = await self.handler(request)
            await self._send(conn, writer, request, response)
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
            else:
                return

    @staticmethod
    def _make_request(event: Any, client: str) -> Request:
        headers: dict[str, str] = {}
        for raw_name, raw_value in event.headers:
            name, value = raw_name.decode("latin-1"), _header_text(raw_value)
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        target = urllib.parse.urlsplit(event.target.decode("latin-1"))
        query = dict(urllib.parse.parse_qsl(target.query, keep_blank_values=True))
        return Request(event.method.decode("ascii").upper(), target.path or "/", query, headers, b"", client)

    async def _send_protocol_error(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response = self.error_responder(
            status, error_type_for_status(status), f"malformed HTTP request: {message}"
        )
        response.headers.append(
            ("connection", "close")
        )  # the connection ends here: its framing is not trusted
        request = Request("GET", "/", {}, {}, b"", "")
        try:
            await self._send(conn, writer, request, response)
        except (h11.LocalProtocolError, ConnectionError):
            pass

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: Request, response: Response
    ) -> None:
        headers = list(response.headers)
        if self.draining:
            headers.append(("connection", "close"))
        if response.stream is None:
            headers.append(("content-length", str(len(response.body))))
            out = conn.send(
                h11.Response(
                    status_code=response.status, headers=headers, reason=_reason_phrase(response.status)
                )
            )
            if request.method != "HEAD" and response.body:
                out += conn.send(h11.Data(data=response.body))
            out += conn.send(h11.EndOfMessage())
            writer.write(out)
            await writer.drain()
            return
        stream = response.stream
        try:
            writer.write(
                conn.send(
                    h11.Response(
                        status_code=response.status, headers=headers, reason=_reason_phrase(response.status)
                    )
                )
            )
            await writer.drain()
            async for chunk in stream:
                if chunk:
                    writer.write(conn.send(h11.Data(data=chunk)))
                    await writer.drain()  # backpressure: a slow client slows the upstream read
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
            if response.on_done is not None:
                await response.on_done()


# == 7. Outbound client ==
#
# Theory of operation: h11 client connections over asyncio streams, pooled per origin
# (scheme, host, port). A connection goes back to the pool only when both sides of the exchange
# reached DONE; a pooled connection that the server closed is detected when reused and the
# request is retried once on a fresh connection (nothing was received, so nothing is duplicated
# from the client's point of view). TLS uses the system CAs (SSL_CERT_FILE/SSL_CERT_DIR honoured
# by OpenSSL). HTTPS_PROXY tunnels with CONNECT, HTTP_PROXY uses absolute-form targets, NO_PROXY
# and loopback targets bypass. Library errors become UpstreamUnavailable/UpstreamTimeout here.


class _UpstreamConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = time.monotonic()

    def usable(self) -> bool:
        return (
            not self.writer.transport.is_closing()
            and not self.reader.at_eof()
            and time.monotonic() - self.idle_since < UPSTREAM_IDLE_REUSE_S
        )

    def close(self) -> None:
        self.writer.close()


@dataclass
class ProxySettings:
    https: str = ""
    http: str = ""
    no_proxy: tuple[str, ...] = ()

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> ProxySettings:
        def pick(name: str) -> str:
            return environ.get(name) or environ.get(name.lower()) or ""

        no_proxy = tuple(h.strip().lower() for h in pick("NO_PROXY").split(",") if h.strip())
        return cls(pick("HTTPS_PROXY"), pick("HTTP_PROXY"), no_proxy)

    def proxy_for(self, scheme: str, host: str) -> str:
        proxy = self.https if scheme == "https" else self.http
        if not proxy or is_loopback_host(host) or self.bypassed(host):
            return ""
        return proxy

    def bypassed(self, host: str) -> bool:
        host = host.lower().strip("[]")
        for entry in self.no_proxy:
            if entry == "*":
                return True
            entry = entry.strip("[]")
            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                    return True
                continue
            except ValueError:
                pass
            entry = entry.lstrip(".").split(":")[0]
            if host == entry or host.endswith("." + entry):
                return True
        return False


CHUNK_HEAD = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")


# (scheme, host, port, addresses to connect to or ()): a connection pinned to checked addresses is
# never handed to a request that resolved the name itself, nor the other way round.
PoolKey = tuple[str, str, int, tuple[str, ...]]


class UpstreamResponse:
    """Status and headers of an upstream answer; the body is read incrementally."""

    def __init__(
        self,
        client: HTTPClient,
        key: PoolKey,
        conn: _UpstreamConnection,
        status: int,
        headers: dict[str, str],
        read_timeout: float,
        origin: str,
        has_body: bool = True,
    ) -> None:
        self._client = client
        self._key = key
        self._conn: _UpstreamConnection | None = conn
        self.status = status
        self.headers = headers
        self.read_timeout = read_timeout
        self.origin = origin
        # A chunked body is decoded here rather than by h11: a streaming upstream sends one HTTP chunk
        # per token, and h11's pure-Python framing of each costs more than the token
        # (bench/README.md, Figures behind the code).
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        # So is a Content-Length body (most JSON answers): h11 already checked the header's syntax.
        length = headers.get("content-length", "")
        self.length = int(length) if has_body and not self.chunked and length.isdigit() else None
        # Whether the socket may serve another request once the body is read (h11 decides this
        # itself for the bodies it reads; these two are read without it).
        self.keep_alive = (
            conn.h11.their_http_version == b"1.1" and "close" not in headers.get("connection", "").lower()
        )

    async def _read_more(
        self, conn: _UpstreamConnection, tick: float | None, silent: float
    ) -> tuple[bytes | None, float]:
        """(bytes read, 0.0), or (None, longer silence) when `tick` seconds passed without data.
        Raises UpstreamTimeout once the silence reaches UPSTREAM_READ_TIMEOUT_MS."""
        wait = self.read_timeout - silent if tick is None else min(tick, self.read_timeout - silent)
        try:
            return await read_with_timeout(conn.reader, READ_CHUNK_BYTES, wait), 0.0
        except TimeoutError:  # before OSError: TimeoutError is one
            silent += wait
            if silent >= self.read_timeout:
                self._discard()
                raise UpstreamTimeout(
                    f"upstream {self.origin} sent nothing for {self.read_timeout:g} s "
                    "(UPSTREAM_READ_TIMEOUT_MS)"
                ) from None
            return None, silent
        except (ConnectionError, OSError) as exc:
            self._discard()
            raise UpstreamUnavailable(f"upstream {self.origin} broke off the response: {exc}") from None

    async def _aiter_chunked(
        self, conn: _UpstreamConnection, tick: float | None
    ) -> AsyncIterator[bytes | None]:
        """Chunked transfer decoding straight from the socket buffer (RFC 9112 section 7.1)."""
        buffer = bytearray(conn.h11.trailing_data[0])  # what h11 read past the response head
        silent = 0.0
        remaining = -1  # bytes left in the current chunk; -1: a size line comes next; -2: its CRLF
        while True:
            out = []
            pos = 0  # parsed up to here; the buffer is trimmed once per read, not once per chunk
            while True:
                if remaining > 0:
                    take = min(remaining, len(buffer) - pos)
                    if not take:
                        break
                    out.append(buffer[pos : pos + take])
                    pos += take
                    remaining -= take
                    if remaining:
                        break
                    remaining = -2
                if remaining == -2:
                    if len(buffer) - pos < 2:
                        break
                    if buffer[pos : pos + 2] != b"\r\n":
                        self._discard()
                        raise UpstreamUnavailable(f"upstream {self.origin} sent a malformed chunked body")
                    pos += 2
                    remaining = -1
                head = CHUNK_HEAD.match(buffer, pos)  # the size line; extensions are allowed, ignored
                if head is None:
                    line_end = buffer.find(b"\r\n", pos)
                    if line_end != -1 or len(buffer) - pos > MAX_HEADER_BYTES:
                        self._discard()
                        raise UpstreamUnavailable(f"upstream {self.origin} sent a malformed chunk size")
                    break  # the size line is not complete yet
                size = int(head.group(1), 16)
                if size == 0:  # last chunk: then optional trailers, then an empty line
                    line_end = head.end() - 2
                    end = (
                        buffer.find(b"\r\n\r\n", line_end)
                        if buffer[line_end + 2 : line_end + 4] != b"\r\n"
                        else line_end
                    )
                    if end == -1:
                        break
                    leftover = buffer[end + 4 :]
                    if out:
                        yield b"".join(out)
                    self._release_manual(conn, reusable=not leftover and self.keep_alive)
                    return
                pos = head.end()
                end = pos + size
                if end + 2 <= len(buffer) and buffer[end] == 13 and buffer[end + 1] == 10:
                    out.append(buffer[pos:end])  # the common case: the whole chunk is here
                    pos = end + 2
                    continue
                remaining = size  # a chunk cut by the read: the states above take it from here
            if pos:
                del buffer[:pos]
            if out:
                yield b"".join(out)
            data, silent = await self._read_more(conn, tick, silent)
            if data is None:
                yield None
                continue
            if not data:
                self._discard()
                raise UpstreamUnavailable(f"upstream {self.origin} broke off the response mid-body")
            buffer += data

    async def _aiter_sized(
        self, conn: _UpstreamConnection, tick: float | None, left: int
    ) -> AsyncIterator[bytes | None]:
        """A Content-Length body straight from the socket buffer."""
        data = bytes(conn.h11.trailing_data[0])  # what h11 read past the response head
        silent = 0.0
        while True:
            if data:
                piece = data[:left]
                left -= len(piece)
                yield piece
                if left == 0:
                    # more bytes than announced: a broken server, the socket is not trusted again
                    self._release_manual(conn, reusable=len(data) == len(piece) and self.keep_alive)
                    return
            elif left == 0:
                self._release_manual(conn, reusable=self.keep_alive)
                return
            data, silent = await self._read_more(conn, tick, silent)
            if data is None:
                yield None
                data = b""
            elif not data:
                self._discard()
                raise UpstreamUnavailable(f"upstream {self.origin} broke off the response mid-body")

    def _release_manual(self, conn: _UpstreamConnection, reusable: bool) -> None:
        """After a body decoded without h11: a fresh h11 state for the next request on this socket."""
        self._conn = None
        if reusable:
            conn.h11 = h11.Connection(h11.CLIENT)
            self._client._pool(self._key, conn)
        else:
            conn.close()

    async def aiter_bytes(self, tick: float | None = None) -> AsyncIterator[bytes | None]:
        """Yield body bytes as they arrive; with `tick`, also None after each `tick` s of silence (the
        caller sends a ping). Data that arrived together is yielded together. Raises
        UpstreamTimeout after UPSTREAM_READ_TIMEOUT_MS of silence, UpstreamUnavailable when cut."""
        conn = self._conn
        if conn is None:
            return
        if self.chunked:
            async for item in self._aiter_chunked(conn, tick):
                yield item
            return
        if self.length is not None:
            async for item in self._aiter_sized(conn, tick, self.length):
                yield item
            return
        silent = 0.0
        pending: list[bytes] = []
        while True:
            try:
                event = conn.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._discard()
                raise UpstreamUnavailable(f"upstream {self.origin} broke off the response: {exc}") from None
            if isinstance(event, h11.Data):
                pending.append(bytes(event.data))
                continue
            if pending and event is h11.NEED_DATA:
                yield b"".join(pending) if len(pending) > 1 else pending[0]
                pending = []
            if event is h11.NEED_DATA:
                data, silent = await self._read_more(conn, tick, silent)
                if data is None:
                    yield None
                else:
                    conn.h11.receive_data(data)
                continue
            if pending:
                yield b"".join(pending)
                pending = []
            if isinstance(event, h11.EndOfMessage):
                self._release()
            else:  # ConnectionClosed
                self._discard()
            return

    async def read(self, limit: int = MAX_UPSTREAM_BODY_BYTES) -> bytes:
        chunks, total = [], 0
        async for chunk in self.aiter_bytes():
            total += len(chunk)
            if total > limit:
                await self.aclose()
                raise UpstreamUnavailable(f"upstream {self.origin} answer exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_prefix(self, limit: int) -> bytes:
        """At most `limit` bytes of the body; a longer body is cut there and the connection dropped."""
        chunks, total = [], 0
        async for chunk in self.aiter_bytes():
            chunks.append(chunk)
            total += len(chunk)
            if total >= limit:
                await self.aclose()
                break
        return b"".join(chunks)[:limit]

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._release(self._key, conn)

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def aclose(self) -> None:
        """Abandon an unfinished body: the connection cannot be reused."""
        self._discard()


class HTTPClient:
    def __init__(self, proxies: ProxySettings | None = None) -> None:
        self.proxies = proxies or ProxySettings()
        self._pools: dict[PoolKey, list[_UpstreamConnection]] = {}
        self._ssl_context: ssl.SSLContext | None = None

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()  # honours SSL_CERT_FILE / SSL_CERT_DIR
        return self._ssl_context

    async def request(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 600.0,
        connect_to: tuple[str, ...] = (),
    ) -> UpstreamResponse:
        """`connect_to`: IP addresses to connect to, in order, instead of resolving the URL's host again
        (the web tools pass the addresses they checked: no DNS-rebinding window). The Host header and
        TLS certificate checks still use the name. Through a proxy, the proxy resolves."""
        parts = urllib.parse.urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        key = (scheme, host, port, connect_to)
        origin = f"{host}:{port}"
        proxy = self.proxies.proxy_for(scheme, host)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        if proxy and scheme == "http":
            target = url  # absolute-form through a plain HTTP proxy
        default_port = 443 if scheme == "https" else 80
        host_header = host if port == default_port else f"{host}:{port}"
        if ":" in host:
            host_header = f"[{host}]" if port == default_port else f"[{host}]:{port}"
        all_headers = [
            ("host", host_header),
            ("user-agent", f"lynkr/{__version__}"),
            ("accept-encoding", "identity"),  # we do not decompress; h11 does not either
            ("content-length", str(len(body))),
            *headers,
        ]
        for attempt in range(2):
            conn, reused = await self._acquire(key, proxy, connect_timeout, origin)
            try:
                head = conn.h11.send(h11.Request(method=method, target=target, headers=all_headers))
                if body:
                    conn.h11.send(h11.Data(data=body))  # h11's bookkeeping; the bytes are body itself
                conn.h11.send(h11.EndOfMessage())
                if len(body) < 65536:
                    conn.writer.write(head + body)  # one send for a small request
                else:
                    conn.writer.write(head)
                    conn.writer.write(body)
                await conn.writer.drain()
                event = await self._read_head(conn, read_timeout)
            except TimeoutError:
                conn.close()
                raise UpstreamTimeout(
                    f"upstream {origin} did not answer within {read_timeout:g} s (UPSTREAM_READ_TIMEOUT_MS)"
                ) from None
            except (h11.RemoteProtocolError, h11.LocalProtocolError, ConnectionError, OSError) as exc:
                conn.close()
                if reused and attempt == 0:
                    continue  # a stale keep-alive connection; the server never saw a full request
                raise UpstreamUnavailable(
                    f"upstream {origin} closed the connection: {exc or type(exc).__name__}"
                ) from None
            resp_headers: dict[str, str] = {}
            for raw_name, raw_value in event.headers:
                name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
                resp_headers[name] = f"{resp_headers[name]}, {value}" if name in resp_headers else value
            return UpstreamResponse(
                self,
                key,
                conn,
                event.status_code,
                resp_headers,
                read_timeout,
                origin,
                has_body=method != "HEAD" and event.status_code not in (204, 304),
            )
        raise UpstreamUnavailable(f"upstream {origin} unreachable")  # pragma: no cover - loop always returns

    @staticmethod
    async def _read_head(conn: _UpstreamConnection, read_timeout: float) -> Any:
        while True:
            event = conn.h11.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(conn.reader.read(READ_CHUNK_BYTES), read_timeout)
                conn.h11.receive_data(data)
            elif isinstance(event, h11.Response):
                return event
            elif isinstance(event, h11.InformationalResponse):
                continue
            else:
                raise ConnectionError("connection closed before a response")

    async def _acquire(
        self, key: PoolKey, proxy: str, timeout: float, origin: str
    ) -> tuple[_UpstreamConnection, bool]:
        pool = self._pools.get(key, [])
        while pool:
            conn = pool.pop()
            if conn.usable():
                return conn, True
            conn.close()
        scheme, host, port, connect_to = key
        ctx = self.ssl_context() if scheme == "https" else None
        try:
            if not proxy:
                addresses = connect_to or (host,)
                for i, address in enumerate(addresses):
                    try:
                        reader, writer = await asyncio.wait_for(
                            asyncio.open_connection(
                                address,
                                port,
                                ssl=ctx,
                                server_hostname=host if ctx else None,
                                limit=READ_CHUNK_BYTES,
                            ),
                            timeout,
                        )
                        break
                    except OSError:
                        if i == len(addresses) - 1:
                            raise
            elif ctx is not None:
                sock = await asyncio.wait_for(self._tunnel(proxy, host, port), timeout)
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=host, limit=READ_CHUNK_BYTES),
                    timeout,
                )
            else:
                pparts = urllib.parse.urlsplit(proxy)
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(pparts.hostname, pparts.port or 80, limit=READ_CHUNK_BYTES),
                    timeout,
                )
        except TimeoutError:
            raise UpstreamTimeout(
                f"connecting to {origin} timed out after {timeout:g} s (UPSTREAM_CONNECT_TIMEOUT_MS)"
            ) from None
        except ssl.SSLError as exc:
            raise UpstreamUnavailable(
                f"TLS with {origin} failed: {exc.reason or exc} (see SSL_CERT_FILE)"
            ) from None
        except OSError as exc:
            via = f" via proxy {urllib.parse.urlsplit(proxy).netloc}" if proxy else ""
            raise UpstreamUnavailable(f"cannot connect to {origin}{via}: {exc.strerror or exc}") from None
        return _UpstreamConnection(reader, writer), False

    @staticmethod
    async def _tunnel(proxy: str, host: str, port: int) -> socket.socket:
        """Open a CONNECT tunnel through an HTTP proxy; returns the raw socket for TLS."""
        loop = asyncio.get_running_loop()
        pparts = urllib.parse.urlsplit(proxy)
        phost, pport = pparts.hostname or "", pparts.port or 8080
        infos = await loop.getaddrinfo(phost, pport, type=socket.SOCK_STREAM)
        family, socktype, proto, _, addr = infos[0]
        sock = socket.socket(family, socktype, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
            if pparts.username:
                import base64  # only proxies with credentials need it

                creds = (
                    f"{urllib.parse.unquote(pparts.username)}:{urllib.parse.unquote(pparts.password or '')}"
                )
                lines.append("Proxy-Authorization: Basic " + base64.b64encode(creds.encode()).decode())
            await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk or len(head) > MAX_HEADER_BYTES:
                    raise ConnectionError("proxy closed the connection during CONNECT")
                head += chunk
            status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            fields = status_line.split()
            if len(fields) < 2 or fields[1] != "200":
                raise ConnectionError(f"proxy refused CONNECT {authority}: {status_line}")
        except BaseException:
            sock.close()
            raise
        return sock

    def _release(self, key: PoolKey, conn: _UpstreamConnection) -> None:
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            self._pool(key, conn)
        else:
            conn.close()

    def _pool(self, key: PoolKey, conn: _UpstreamConnection) -> None:
        if key[3]:  # pinned to checked addresses (web tools): rare, and DNS rotation would make every
            conn.close()  # fetch a new key whose idle connection nobody asks for again
            return
        conn.idle_since = time.monotonic()
        pool = self._pools.setdefault(key, [])
        if len(pool) < MAX_IDLE_UPSTREAM_CONNECTIONS:
            pool.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for pool in self._pools.values():
            for conn in pool:
                conn.close()
        self._pools.clear()


# == 8. Translation ==
#
# Pure functions, no I/O. Requests are validated once into a normal form (Anthropic shape, tools
# and tool_choice in Anthropic form even when the client used OpenAI's), then each provider
# builds its upstream body from that. OpenAI-chat translation follows wire-formats.md section 4.

MESSAGE_ROLES = ("user", "assistant", "system")
TOOL_ID_PATTERN = re.compile(r"[^A-Za-z0-9_-]")
# The four usage counters every Anthropic message carries, zero until the upstream says otherwise.
EMPTY_USAGE = {
    "input_tokens": 0,
    "output_tokens": 0,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}


def message_envelope(
    message_id: str,
    model: str,
    content: list[dict[str, Any]] | None = None,
    stop_reason: str | None = None,
    stop_sequence: str | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The one way lynkr builds an Anthropic message: a complete reply, or (no content and no stop
    reason yet) the start of one that a stream's message_start carries."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [] if content is None else content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": dict(EMPTY_USAGE) if usage is None else usage,
    }


def _field_error(path: str, expected: str, value: Any) -> InvalidRequest:
    got = type(value).__name__ if value is not None else "null"
    return InvalidRequest(f"{path}: expected {expected}, got {got}")


def _normalize_tool(tool: Any, index: int) -> dict[str, Any]:
    """Accept Anthropic tools and OpenAI `{"type":"function","function":{...}}` tools."""
    path = f"tools.{index}"
    if not isinstance(tool, dict):
        raise _field_error(path, "an object", tool)
    if tool.get("type") == "function" and isinstance(tool.get("function"), dict):
        fn = tool["function"]
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidRequest(f"{path}.function.name: required string")
        out = {
            "name": fn["name"],
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            out["description"] = fn["description"]
        return out
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise InvalidRequest(f"{path}.name: required string")
    if tool.get("type") in (None, "custom"):
        schema = tool.get("input_schema")
        if schema is not None and not isinstance(schema, dict):
            raise _field_error(f"{path}.input_schema", "an object", schema)
    return tool  # custom tools and typed server tools (e.g. web_search_20250305) as sent


def is_server_typed_tool(tool: dict[str, Any]) -> bool:
    return tool.get("type") not in (None, "custom")


def _normalize_tool_choice(choice: Any) -> dict[str, Any] | None:
    """Anthropic forms pass; OpenAI forms ("auto", "required", "none", {"type":"function",...}) convert."""
    if choice is None:
        return None
    if isinstance(choice, str):
        mapped = {"auto": "auto", "required": "any", "any": "any", "none": "none"}.get(choice)
        if mapped is None:
            raise InvalidRequest(f"tool_choice: unknown value {choice!r} (auto, any, none, or a tool)")
        return {"type": mapped}
    if not isinstance(choice, dict):
        raise _field_error("tool_choice", "an object", choice)
    kind = choice.get("type")
    if kind == "function":
        name = (
            (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        )
        name = name or choice.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("tool_choice.function.name: required string")
        return {"type": "tool", "name": name}
    if kind == "required":
        return {**choice, "type": "any"}
    if kind not in ("auto", "any", "tool", "none"):
        raise InvalidRequest(f"tool_choice.type: unknown value {kind!r} (auto, any, tool, none)")
    if kind == "tool" and (not isinstance(choice.get("name"), str) or not choice["name"]):
        raise InvalidRequest("tool_choice.name: required string when type is tool")
    return choice


def _validate_content(path: str, content: Any) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _field_error(path, "a string or a list of content blocks", content)
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            raise _field_error(f"{path}.{i}", "a content block object", block)
        kind = block.get("type")
        if not isinstance(kind, str):
            raise InvalidRequest(f"{path}.{i}.type: required string")
        if kind == "text" and not isinstance(block.get("text"), str):
            raise _field_error(f"{path}.{i}.text", "a string", block.get("text"))
        if kind == "tool_use" and (
            not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str)
        ):
            raise InvalidRequest(f"{path}.{i}: tool_use needs string id and name")
        if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
            raise InvalidRequest(f"{path}.{i}.tool_use_id: required string")


def validate_messages_request(
    body: Any, default_max_tokens: int, *, count_only: bool = False
) -> dict[str, Any]:
    """Check an incoming /v1/messages body; returns a normalized shallow copy. Unknown fields pass."""
    if not isinstance(body, dict):
        raise _field_error("body", "a JSON object", body)
    req = dict(body)
    model = req.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("model: required string")
    if not model.isprintable() or LONE_SURROGATE.search(model):
        raise InvalidRequest("model: printable characters only")  # it is logged, charged and stored
    messages = req.get("messages")
    if not isinstance(messages, list):
        raise (
            _field_error("messages", "a list", messages)
            if "messages" in req
            else InvalidRequest("messages: field required")
        )
    if not messages:
        raise InvalidRequest("messages: at least one message is required")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _field_error(f"messages.{i}", "an object", msg)
        if msg.get("role") not in MESSAGE_ROLES:
            raise InvalidRequest(
                f"messages.{i}.role: expected 'user' or 'assistant', got {msg.get('role')!r}"
            )
        if "content" not in msg:
            raise InvalidRequest(f"messages.{i}.content: field required")
        _validate_content(f"messages.{i}.content", msg["content"])
    if not count_only:
        if req.get("max_tokens") is None:
            req["max_tokens"] = default_max_tokens
        max_tokens = req["max_tokens"]
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidRequest(f"max_tokens: expected a positive integer, got {max_tokens!r}")
        if "stream" in req and req["stream"] is not None and not isinstance(req["stream"], bool):
            raise _field_error("stream", "a boolean", req["stream"])
    system = req.get("system")
    if system is not None:
        if isinstance(system, list):
            for i, block in enumerate(system):
                if (
                    not isinstance(block, dict)
                    or block.get("type") != "text"
                    or not isinstance(block.get("text"), str)
                ):
                    raise InvalidRequest(f"system.{i}: expected a text block")
        elif not isinstance(system, str):
            raise _field_error("system", "a string or a list of text blocks", system)
    if req.get("tools") is not None:
        if not isinstance(req["tools"], list):
            raise _field_error("tools", "a list", req["tools"])
        req["tools"] = [_normalize_tool(t, i) for i, t in enumerate(req["tools"])]
    if "tool_choice" in req:
        req["tool_choice"] = _normalize_tool_choice(req["tool_choice"])
        if req["tool_choice"] is None:
            del req["tool_choice"]
    stops = req.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise _field_error("stop_sequences", "a list of strings", stops)
    for name in ("temperature", "top_p"):
        value = req.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _field_error(name, "a number", value)
    top_k = req.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)):
        raise _field_error("top_k", "an integer", top_k)
    thinking = req.get("thinking")
    if thinking is not None and (not isinstance(thinking, dict) or not isinstance(thinking.get("type"), str)):
        raise InvalidRequest("thinking: expected an object with a type (enabled, adaptive, disabled)")
    return req


# -- Model mapping --


class ModelRouter:
    """MODEL_MAP globs (first match wins) -> upstream target (a model, or `provider,model`); MODEL_MAX_TOKENS caps."""

    def __init__(self, model_map: Iterable[tuple[str, str]], caps: Iterable[tuple[str, int]]) -> None:
        self.model_map = tuple(model_map)
        self.caps = tuple(caps)

    def mapped(self, model: str) -> str | None:
        lowered = model.lower()
        for glob, target in self.model_map:
            if fnmatch.fnmatchcase(lowered, glob):
                return target
        return None

    def clamp_max_tokens(self, model: str, max_tokens: int, target: str) -> int:
        """MODEL_MAX_TOKENS globs match the client's model name or the upstream target; then the
        built-in output limits of known Claude models apply to the target (Claude Code asks up to 128000)."""
        target = target.lower()
        for glob, cap in self.caps:
            if fnmatch.fnmatchcase(model.lower(), glob) or fnmatch.fnmatchcase(target, glob):
                return min(max_tokens, cap)
        for glob, cap in BUILTIN_MAX_OUTPUT_TOKENS:
            if fnmatch.fnmatchcase(target, glob):
                return min(max_tokens, cap)
        return max_tokens

    def advertised_models(self) -> list[tuple[str, str]]:
        """Names clients may send: the known Claude ids plus literal MODEL_MAP keys."""
        models = list(KNOWN_CLAUDE_MODELS)
        seen = {m for m, _ in models}
        for glob, _target in self.model_map:
            if not any(ch in glob for ch in "*?[") and glob not in seen:
                models.append((glob, glob))
                seen.add(glob)
        return models


# -- Anthropic -> Anthropic (pass-through upstreams) --


def _text_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [b for b in content or [] if isinstance(b, dict) and b.get("type") == "text" and b.get("text")]


def fold_system_messages(req: dict[str, Any]) -> dict[str, Any]:
    """Mid-conversation `role:"system"` entries (Claude Code's environment context; upstreams refuse
    them) become text in the user turn beside them -- where Claude Code itself puts that context when
    an upstream refuses it -- with their cache_control. Not into the top-level system: that would
    change the system prompt, and so void the upstream's whole prompt cache, whenever the context does."""
    if not any(m.get("role") == "system" for m in req["messages"]):
        return req
    messages: list[dict[str, Any]] = []
    waiting: list[dict[str, Any]] = []  # context seen after an assistant turn, for the next user turn
    for msg in req["messages"]:
        if msg.get("role") == "system":
            blocks = _text_blocks(msg.get("content"))
            if messages and messages[-1].get("role") == "user":
                messages[-1] = {**messages[-1], "content": _text_blocks_of(messages[-1]["content"]) + blocks}
            else:
                waiting += blocks
            continue
        if waiting and msg.get("role") == "user":
            content = _text_blocks_of(msg["content"])
            # tool results must lead a user turn: the context goes after them
            leads = any(b.get("type") == "tool_result" for b in content if isinstance(b, dict))
            msg = {**msg, "content": content + waiting if leads else waiting + content}
            waiting = []
        elif waiting:
            messages.append({"role": "user", "content": waiting})
            waiting = []
        messages.append(msg)
    if not messages:
        raise InvalidRequest("messages: at least one user or assistant message is required")
    if waiting:
        messages.append({"role": "user", "content": waiting})
    return {**req, "messages": messages}


def _text_blocks_of(content: Any) -> list[Any]:
    """Message content as a list of blocks (a string becomes one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content or [])


# -- Anthropic -> OpenAI chat --


def sanitize_tool_id(tool_id: str) -> str:
    return TOOL_ID_PATTERN.sub("_", tool_id) or new_id("toolu_")


def _image_url(source: dict[str, Any]) -> str:
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if source.get("type") == "url":
        return str(source.get("url", ""))
    raise InvalidRequest(f"image source type {source.get('type')!r} is not supported by this provider")


def _text_part(text: str, block: dict[str, Any]) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": text}
    if isinstance(block.get("cache_control"), dict):
        part["cache_control"] = block["cache_control"]  # Databricks keeps it on content parts for Claude
    return part


def _document_text(block: dict[str, Any]) -> str:
    source = block.get("source") or {}
    kind = source.get("type")
    if kind == "text":
        text = str(source.get("data", ""))
    elif kind == "content":
        inner = source.get("content")
        text = inner if isinstance(inner, str) else "\n".join(b.get("text", "") for b in _text_blocks(inner))
    else:
        raise InvalidRequest(
            f"document blocks with a {kind!r} source (e.g. PDF) cannot be sent in the OpenAI chat format; "
            "use DATABRICKS_API_FORMAT=anthropic or send the text"
        )
    title = block.get("title")
    return f"{title}\n\n{text}" if title else text


def _user_parts(block: dict[str, Any]) -> list[dict[str, Any]]:
    """One Anthropic user block (not tool_result) -> OpenAI content parts."""
    kind = block.get("type")
    if kind == "text":
        return [_text_part(block["text"], block)] if block["text"] else []
    if kind == "image":
        part: dict[str, Any] = {
            "type": "image_url",
            "image_url": {"url": _image_url(block.get("source") or {})},
        }
        if isinstance(block.get("cache_control"), dict):
            part["cache_control"] = block["cache_control"]  # moved to a text part by settle_cache_markers
        return [part]
    if kind == "document":
        text = _document_text(block)
        return [_text_part(text, block)] if text else []
    if kind in ("thinking", "redacted_thinking"):
        return []
    # Blocks this format has no slot for (search results, tool references, ...) travel as JSON text.
    return [{"type": "text", "text": json_dumps(block)}]


def _tool_result_to_openai(block: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """tool_result -> (text for the `tool` message, image parts to move into a user message)."""
    content = block.get("content")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for inner in content:
            if not isinstance(inner, dict):
                continue
            if inner.get("type") == "image":
                images.append(
                    {"type": "image_url", "image_url": {"url": _image_url(inner.get("source") or {})}}
                )
            else:
                texts.extend(p["text"] for p in _user_parts(inner) if p.get("type") == "text")
    text = "\n".join(t for t in texts if t)
    if block.get("is_error"):
        text = f"[tool error] {text}" if text else "[tool error]"
    return text or "(no output)", images


LYNKR_SEARCH_CONTENT = "lynkr1."  # prefix of the encrypted_content lynkr writes when it runs a web search


def search_result_content(snippet: str) -> str:
    """The opaque `encrypted_content` of a search result lynkr ran: the snippet, so a later turn on an
    upstream without server tools still reads what was found."""
    return (
        LYNKR_SEARCH_CONTENT + base64.urlsafe_b64encode(utf8_json(json_dumps({"snippet": snippet}))).decode()
    )


def _search_snippet(result: dict[str, Any]) -> str:
    content = result.get("encrypted_content")
    if isinstance(content, str) and content.startswith(LYNKR_SEARCH_CONTENT):
        with contextlib.suppress(ValueError, TypeError, binascii.Error):
            return str(
                json.loads(base64.urlsafe_b64decode(content[len(LYNKR_SEARCH_CONTENT) :])).get("snippet")
                or ""
            )
    return ""


def server_block_text(block: dict[str, Any]) -> str | None:
    """A web search's blocks as text, for an upstream that does not run server tools (it would refuse
    them): what was searched and found stays in the conversation."""
    kind = block.get("type")
    if kind == "server_tool_use":
        return f"[web search: {json_dumps(block.get('input') or {})}]"
    if kind != "web_search_tool_result":
        return None
    content = block.get("content")
    if not isinstance(content, list):
        return f"[web search failed: {(content or {}).get('error_code', 'unknown') if isinstance(content, dict) else content}]"
    lines = []
    for result in content:
        if isinstance(result, dict):
            snippet = _search_snippet(result)
            lines.append(
                f"- {result.get('title', '')} <{result.get('url', '')}>" + (f": {snippet}" if snippet else "")
            )
    return "[web search results]\n" + "\n".join(lines) if lines else "[web search: no results]"


def server_blocks_as_text(content: Any) -> Any:
    if not isinstance(content, list) or not any(
        isinstance(b, dict) and b.get("type") in ("server_tool_use", "web_search_tool_result")
        for b in content
    ):
        return content
    return [
        {"type": "text", "text": t}
        if (t := server_block_text(b) if isinstance(b, dict) else None) is not None
        else b
        for b in content
    ]


def _assistant_to_openai(content: Any, reasoning_parts: bool = True) -> dict[str, Any] | None:
    if isinstance(content, str):
        return {"role": "assistant", "content": content} if content else None
    texts: list[str] = []
    reasoning: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            texts.append(block["text"])
        elif kind in ("server_tool_use", "web_search_tool_result"):
            texts.append(server_block_text(block) or "")
        elif kind == "thinking" and block.get("thinking") and reasoning_parts:
            item = {"type": "summary_text", "text": block["thinking"]}
            if block.get("signature"):
                item["signature"] = block["signature"]
            reasoning.append(item)
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": sanitize_tool_id(block["id"]),
                    "type": "function",
                    "function": {"name": block["name"], "arguments": json_dumps(block.get("input") or {})},
                }
            )
    text = "\n".join(texts)
    msg: dict[str, Any] = {"role": "assistant"}
    if reasoning:
        parts: list[dict[str, Any]] = [{"type": "reasoning", "summary": reasoning}]
        if text:
            parts.append({"type": "text", "text": text})
        msg["content"] = parts
    else:
        msg["content"] = text or None
    if tool_calls:
        msg["tool_calls"] = tool_calls
    if msg["content"] is None and not tool_calls:
        return None
    return msg


def _openai_system_parts(req: dict[str, Any]) -> list[dict[str, Any]]:
    system = req.get("system")
    blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system or [])
    if blocks and blocks[0].get("text", "").startswith(BILLING_HEADER_PREFIX):
        blocks = blocks[1:]  # changes on every request: it would defeat upstream prompt caching
    return [_text_part(b["text"], b) for b in blocks if b.get("text")]


def anthropic_messages_to_openai(req: dict[str, Any], reasoning_parts: bool = True) -> list[dict[str, Any]]:
    """req has been through fold_system_messages. reasoning_parts: replay thinking as `reasoning` content
    parts (Databricks serving Claude takes them back with their signatures); other vendors have no slot
    for it, so it is left out."""
    out: list[dict[str, Any]] = []
    system_parts = _openai_system_parts(req)
    if system_parts:
        out.append({"role": "system", "content": system_parts})
    pending_calls: list[str] = []  # ids of the last assistant turn's calls still owed a result

    def settle_pending() -> None:
        # Every tool call needs a result before the next turn, or OpenAI-format servers answer 400.
        for call_id in pending_calls:
            out.append({"role": "tool", "tool_call_id": call_id, "content": "[no result was returned]"})
        pending_calls.clear()

    for msg in req["messages"]:
        role, content = msg["role"], msg["content"]
        if role == "system":
            continue
        if role == "assistant":
            settle_pending()
            converted = _assistant_to_openai(content, reasoning_parts)
            if converted is not None:
                out.append(converted)
                pending_calls.extend(c["id"] for c in converted.get("tool_calls", []))
            continue
        if isinstance(content, str):
            settle_pending()
            if content:
                out.append({"role": "user", "content": content})
            continue
        parts: list[dict[str, Any]] = []
        for block in content:
            if block.get("type") == "tool_result":
                call_id = sanitize_tool_id(block["tool_use_id"])
                text, images = _tool_result_to_openai(block)
                if call_id in pending_calls:
                    pending_calls.remove(call_id)
                    marker = block.get("cache_control")
                    # Claude Code's last breakpoint sits on the newest tool_result: settle_cache_markers
                    # moves it where the vendor takes it (or _adapt_parts drops it).
                    out.append(
                        {
                            "role": "tool",
                            "tool_call_id": call_id,
                            "content": [{"type": "text", "text": text, "cache_control": marker}]
                            if isinstance(marker, dict)
                            else text,
                        }
                    )
                else:  # a result whose call is gone (e.g. after compaction) stays readable as text
                    parts.append({"type": "text", "text": f"[result of tool call {call_id}]\n{text}"})
                parts.extend(images)
            else:
                parts.extend(_user_parts(block))
        if parts:
            settle_pending()
            out.append({"role": "user", "content": parts})
    settle_pending()
    return out


# -- Vendor dialects and per-model facts (OpenAI-format upstreams) --


@dataclass(frozen=True)
class OpenAIDialect:
    """How one vendor's Chat Completions surface differs from the common shape (data, not if-chains)."""

    model_in_body: bool = True  # Databricks serving endpoints name the model in the URL instead
    stream_usage: bool = True  # stream_options.include_usage: without it a stream carries no usage
    cache_markers: bool = (
        False  # keep cache_control on content parts (Databricks and OpenRouter serving Claude)
    )
    # roles whose text parts take a marker (tool messages are strings; their marker moves before them)
    marker_roles: frozenset[str] = frozenset({"system", "user", "assistant"})
    thinking: str = (
        ""  # "anthropic" (the object, Databricks) | "openrouter" (reasoning) | "effort" | "" (drop)
    )
    schema: str = "openai"  # tool schema cleaner: a key of SCHEMA_DIALECTS
    top_k: bool = False  # OpenAI refuses top_k; Databricks (Claude), OpenRouter and vLLM take it
    strict_tools: bool = False  # function.strict (OpenAI's structured tool calls); others refuse the key


@dataclass(frozen=True)
class ModelFacts:
    """What one upstream model accepts, matched by glob on its name (MODEL_FACTS)."""

    max_output: int = 0  # the vendor's output cap (0: none known)
    max_tokens_field: str = "max_tokens"  # OpenAI reasoning models reject it for max_completion_tokens
    sampling: bool = True  # False: temperature/top_p/top_k are refused (reasoning models)
    reasoning: str = ""  # overrides the dialect's thinking mapping ("effort" for OpenAI reasoning models)
    schema: str = ""  # overrides the dialect's schema cleaner (Gemini models behind any vendor)
    tools: bool = True  # False: tools are dropped (logged) instead of earning a 400
    images: bool = True  # False: images become a short text note


DEFAULT_MODEL_FACTS = ModelFacts()
# First match wins, on the upstream model name lower-cased (vendor prefixes such as "openai/" included).
MODEL_FACTS: tuple[tuple[str, ModelFacts], ...] = (
    ("*deepseek-reasoner*", ModelFacts(max_output=8192, sampling=False, tools=False, images=False)),
    ("*deepseek*", ModelFacts(max_output=8192, images=False)),
    ("*gpt-5*", ModelFacts(max_tokens_field="max_completion_tokens", sampling=False, reasoning="effort")),
    ("o[1-9]*", ModelFacts(max_tokens_field="max_completion_tokens", sampling=False, reasoning="effort")),
    ("*/o[1-9]*", ModelFacts(max_tokens_field="max_completion_tokens", sampling=False, reasoning="effort")),
    ("*gemini*", ModelFacts(schema="gemini")),
)


@functools.lru_cache(maxsize=256)
def model_facts(model: str) -> ModelFacts:
    lowered = model.lower()
    for glob, facts in MODEL_FACTS:
        if fnmatch.fnmatchcase(lowered, glob):
            return facts
    return DEFAULT_MODEL_FACTS


# Schema keywords each dialect refuses. Claude Code's schemas carry "$schema" (refused by most),
# regex "pattern"s with \p{..} classes (OpenAI: "is not a 'regex'"), and Gemini accepts only a
# small OpenAPI subset. Only keywords are removed, never property names.
SCHEMA_DIALECTS: dict[str, frozenset[str]] = {
    "databricks": frozenset({"$schema"}),
    "openai": frozenset({"$schema", "pattern"}),
    "gemini": frozenset(
        {
            "$schema",
            "pattern",
            "additionalProperties",
            "propertyNames",
            "uniqueItems",
            "deprecated",
            "multipleOf",
            "patternProperties",
            "$id",
            "$comment",
            "examples",
            "const",
            "contentEncoding",
            "contentMediaType",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "minContains",
            "maxContains",
            "unevaluatedProperties",
            "unevaluatedItems",
            "dependentRequired",
            "dependentSchemas",
            "if",
            "then",
            "else",
        }
    ),
}
GEMINI_STRING_FORMATS = frozenset({"enum", "date-time"})
_SCHEMA_MAPS = ("properties", "$defs", "definitions")  # name -> schema: names are data, not keywords
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "not", "contains", "additionalItems")


def clean_schema(schema: Any, dialect: str, depth: int = 0) -> Any:
    """A copy of a JSON schema without the keywords the dialect refuses (recursively)."""
    if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
        return schema
    refused = SCHEMA_DIALECTS[dialect]
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in refused:
            continue
        if key == "format" and dialect == "gemini" and value not in GEMINI_STRING_FORMATS:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            value = {name: clean_schema(sub, dialect, depth + 1) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            value = [clean_schema(sub, dialect, depth + 1) for sub in value]
        elif key in _SCHEMA_ONE:
            value = clean_schema(value, dialect, depth + 1)
        out[key] = value
    return out


DATABRICKS_DIALECT = OpenAIDialect(
    model_in_body=False,
    stream_usage=False,
    cache_markers=True,
    thinking="anthropic",
    schema="databricks",
    top_k=True,
)


def _adapt_parts(content: Any, keep_markers: bool, images: bool) -> Any:
    """Content parts for a vendor without cache markers (stripped; all-text parts become one string,
    which every OpenAI-compatible server takes) or a model without image input (a text note)."""
    if not isinstance(content, list):
        return content
    parts = []
    for part in content:
        if not keep_markers and "cache_control" in part:
            part = {k: v for k, v in part.items() if k != "cache_control"}
        if not images and part.get("type") == "image_url":
            part = {"type": "text", "text": "[an image was omitted: this model does not accept images]"}
        parts.append(part)
    if not keep_markers and all(p.get("type") == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def settle_cache_markers(
    messages: list[dict[str, Any]],
    automatic: Any = None,
    roles: frozenset[str] = frozenset({"system", "user", "assistant"}),
) -> None:
    """Vendors that honour Anthropic's cache_control on content parts take it on the text parts of some
    roles only (tool messages are plain strings). A marker anywhere else -- an image, a tool result --
    moves to the nearest accepted text before it: caching a little less rather than nothing. A
    top-level (automatic) marker lands on the last accepted text, as Anthropic places it."""
    last_text: tuple[dict[str, Any], int] | None = None

    def land(marker: dict[str, Any]) -> None:
        if last_text is None:
            return  # nothing before it can hold it
        message, at = last_text
        if isinstance(message["content"], str):
            message["content"] = [{"type": "text", "text": message["content"]}]
        message["content"][at] = {**message["content"][at], "cache_control": marker}

    for message in messages:
        content = message.get("content")
        accepted = message.get("role") in roles
        if isinstance(content, str):
            if content and accepted:
                last_text = (message, 0)
            continue
        if not isinstance(content, list):
            continue
        for at, part in enumerate(content):
            if part.get("type") == "text" and accepted:
                last_text = (message, at)
            elif "cache_control" in part:
                content[at] = {k: v for k, v in part.items() if k != "cache_control"}
                if isinstance(part["cache_control"], dict):
                    land(part["cache_control"])
        if not accepted and all(p.get("type") == "text" for p in content):
            message["content"] = "\n\n".join(p["text"] for p in content)
    if isinstance(automatic, dict):
        land(automatic)


def carry_breakpoint(messages: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """lynkr's own tool loop appends rounds after the client's last message: its cache breakpoint moves
    to the newest tool_result (as Claude Code moves it), keeping the cached prefix growing without ever
    exceeding Anthropic's four breakpoints. Replaces messages[-1]; returns the results to append."""
    content = messages[-1].get("content") if messages else None
    if (
        not results
        or not isinstance(content, list)
        or not content
        or not isinstance(content[-1], dict)
        or not isinstance(content[-1].get("cache_control"), dict)
    ):
        return results
    marker = content[-1]["cache_control"]
    messages[-1] = {
        **messages[-1],
        "content": [*content[:-1], {k: v for k, v in content[-1].items() if k != "cache_control"}],
    }
    return [*results[:-1], {**results[-1], "cache_control": marker}]


def _openai_schema(schema: dict[str, Any], schema_dialect: str) -> dict[str, Any]:
    if schema_dialect == "databricks":  # only a top-level $schema to drop: no walk (the hot path)
        schema = dict(schema)
        schema.pop("$schema", None)
        return schema
    return clean_schema(schema, schema_dialect)


def _openai_tool(
    tool: dict[str, Any], schema_dialect: str = "databricks", strict: bool = False
) -> dict[str, Any]:
    schema = _openai_schema(tool.get("input_schema") or {"type": "object", "properties": {}}, schema_dialect)
    fn: dict[str, Any] = {"name": tool["name"], "parameters": schema}
    fn["description"] = tool.get("description") or tool["name"]
    if strict and tool.get("strict") is True:
        fn["strict"] = True
    return {"type": "function", "function": fn}


def response_format(
    req: dict[str, Any], dialect: OpenAIDialect, schema_dialect: str
) -> dict[str, Any] | None:
    """Anthropic structured output (output_config.format, or the older top-level output_format) ->
    OpenAI's response_format."""
    config = req.get("output_config") if isinstance(req.get("output_config"), dict) else {}
    wanted = config.get("format") or req.get("output_format")
    if (
        not isinstance(wanted, dict)
        or wanted.get("type") != "json_schema"
        or not isinstance(wanted.get("schema"), dict)
    ):
        return None
    spec: dict[str, Any] = {"name": "output", "schema": _openai_schema(wanted["schema"], schema_dialect)}
    if dialect.strict_tools:
        spec["strict"] = True
    return {"type": "json_schema", "json_schema": spec}


# What becomes of each Anthropic request field on an OpenAI-format upstream (the Anthropic-format kinds
# pass every field, and the client's anthropic-beta, as sent: a field never travels without its beta).
# "carried" fields are translated by anthropic_to_openai; the rest are left out with a debug log,
# never a 400 the client cannot recover from.
OPENAI_FIELD_FATE: dict[str, str] = {
    **dict.fromkeys(
        (
            "model",
            "messages",
            "system",
            "max_tokens",
            "stream",
            "tools",
            "tool_choice",
            "stop_sequences",
            "temperature",
            "top_p",
            "top_k",
        ),
        "carried",
    ),
    "thinking": "carried as the vendor's reasoning setting (adaptive: a budget)",
    "output_config": "carried: effort -> reasoning_effort, format -> response_format",
    "output_format": "carried as response_format",
    "cache_control": "carried as a marker on the last text where the vendor takes markers",
    "metadata": "left out: the client's user id stays with lynkr",
    "context_management": "left out: no counterpart (thinking and tool results are not cleared upstream)",
    "service_tier": "left out: Anthropic's tiers mean nothing to this vendor",
    "container": "left out: no counterpart",
    "mcp_servers": "left out: lynkr's own MCP tools are offered instead",
}


TOOL_CHOICE_TO_OPENAI: dict[str, Callable[[dict[str, Any]], Any]] = {
    "auto": lambda c: "auto",
    "any": lambda c: "required",
    "none": lambda c: "none",
    "tool": lambda c: {"type": "function", "function": {"name": c["name"]}},
}


def offer_tools(
    body: dict[str, Any],
    req: dict[str, Any],
    facts: ModelFacts,
    dialect: OpenAIDialect,
    convert: Callable[[dict[str, Any], str, bool], dict[str, Any]],
    choices: dict[str, Callable[[dict[str, Any]], Any]],
) -> list[str]:
    """The request's tools and tool_choice in an OpenAI-format body (chat or Responses, by `convert` and
    `choices`); returns the tools left out (typed server tools; every tool for a model without tools)."""
    schema = facts.schema or dialect.schema
    dropped: list[str] = []
    tools = []
    for tool in req.get("tools") or []:
        if is_server_typed_tool(tool) or not facts.tools:
            dropped.append(f"{tool.get('name')} ({tool.get('type') or 'function'})")
        else:
            tools.append(convert(tool, schema, dialect.strict_tools))
    choice = req.get("tool_choice")
    if tools:
        body["tools"] = tools
        if choice:
            body["tool_choice"] = choices[choice["type"]](choice)
            if choice.get("disable_parallel_tool_use"):
                body["parallel_tool_calls"] = False
    return dropped


def thinking_budget(req: dict[str, Any], max_tokens: int) -> int:
    """The token budget a request's thinking asks for (0: off), kept below max_tokens."""
    thinking = req.get("thinking") or {}
    kind = thinking.get("type")
    choice = (req.get("tool_choice") or {}).get("type")
    if kind not in ("enabled", "adaptive") or choice in ("any", "tool"):
        return 0  # thinking cannot be combined with a forced tool
    if kind == "adaptive":
        budget = min(max_tokens // 2, MAX_ADAPTIVE_THINKING_BUDGET)
    else:
        budget = thinking.get("budget_tokens")
        budget = (
            min(budget, max_tokens - 1) if isinstance(budget, int) and not isinstance(budget, bool) else 0
        )
    return budget if budget >= MIN_THINKING_BUDGET else 0


def openai_thinking(req: dict[str, Any], max_tokens: int) -> dict[str, Any] | None:
    """Anthropic thinking -> the object Databricks accepts (enabled + budget below max_tokens)."""
    budget = thinking_budget(req, max_tokens)
    return {"type": "enabled", "budget_tokens": budget} if budget else None


def reasoning_effort(req: dict[str, Any], max_tokens: int) -> str | None:
    """Anthropic thinking (or Claude Code's output_config.effort) -> OpenAI's reasoning_effort."""
    budget = thinking_budget(req, max_tokens)
    if not budget:
        return None
    effort = (
        (req.get("output_config") or {}).get("effort") if isinstance(req.get("output_config"), dict) else None
    )
    if effort in ("low", "medium", "high"):
        return effort
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


# thinking style -> (body field, value builder); "" drops thinking (the vendor has no way to ask).
THINKING_TO_OPENAI: dict[str, tuple[str, Callable[[dict[str, Any], int], Any]]] = {
    "anthropic": ("thinking", openai_thinking),
    "effort": ("reasoning_effort", reasoning_effort),
    "openrouter": (
        "reasoning",
        lambda req, mt: {"max_tokens": b} if (b := thinking_budget(req, mt)) else None,
    ),
}


def anthropic_to_openai(
    req: dict[str, Any],
    max_tokens: int,
    model: str = "",
    dialect: OpenAIDialect = DATABRICKS_DIALECT,
    facts: ModelFacts = DEFAULT_MODEL_FACTS,
) -> tuple[dict[str, Any], list[str]]:
    """Build an OpenAI chat body for one vendor and model. Returns (body, names of tools dropped)."""
    messages = anthropic_messages_to_openai(req, dialect.thinking == "anthropic")
    if dialect.cache_markers:
        settle_cache_markers(messages, req.get("cache_control"), dialect.marker_roles)
    if not dialect.cache_markers or not facts.images:
        for msg in messages:
            msg["content"] = _adapt_parts(msg.get("content"), dialect.cache_markers, facts.images)
    body: dict[str, Any] = {"model": model} if dialect.model_in_body else {}
    body["messages"] = messages
    body[facts.max_tokens_field] = max_tokens
    schema = facts.schema or dialect.schema
    dropped = offer_tools(body, req, facts, dialect, _openai_tool, TOOL_CHOICE_TO_OPENAI)
    if req.get("stop_sequences"):
        body["stop"] = list(req["stop_sequences"])
    if facts.sampling:
        for name in ("temperature", "top_p", "top_k") if dialect.top_k else ("temperature", "top_p"):
            if req.get(name) is not None:
                body[name] = req[name]
    style = facts.reasoning or dialect.thinking
    if style in THINKING_TO_OPENAI:
        field_name, build = THINKING_TO_OPENAI[style]
        value = build(req, max_tokens)
        if value:
            body[field_name] = value
            body.pop(
                "temperature", None
            )  # reasoning models (and Claude with thinking) refuse sampling settings
            body.pop("top_k", None)
    structured = response_format(req, dialect, schema)
    if structured is not None:
        body["response_format"] = structured
    if req.get("stream"):
        body["stream"] = True
        if dialect.stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body, dropped


# -- OpenAI chat -> Anthropic --

FINISH_REASON_TO_STOP_REASON = {
    "stop": "end_turn",
    "end_turn": "end_turn",
    "length": "max_tokens",
    "max_tokens": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "tool_use": "tool_use",
    "content_filter": "refusal",
}


def openai_usage_to_anthropic(usage: dict[str, Any] | None) -> dict[str, int]:
    """The upstream's own figures in Anthropic's terms: OpenAI's prompt_tokens counts every input token,
    cache reads (prompt_tokens_details.cached_tokens) and writes (OpenRouter's cache_write_tokens;
    Databricks serving Claude names them as Anthropic does) included; Anthropic's input_tokens excludes both."""
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    if not isinstance(details, dict):
        details = {}
    cached = int(details.get("cached_tokens") or usage.get("cache_read_input_tokens") or 0)
    created = int(details.get("cache_write_tokens") or usage.get("cache_creation_input_tokens") or 0)
    return {
        "input_tokens": max(prompt - cached - created, 0) if "prompt_tokens" in usage else prompt,
        "output_tokens": int(usage.get("completion_tokens") or usage.get("output_tokens") or 0),
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": cached,
    }


def stop_reason_for(
    finish_reason: Any, has_tool_calls: bool, text: str, stops: list[str]
) -> tuple[str, str | None]:
    if has_tool_calls:
        return "tool_use", None
    reason = FINISH_REASON_TO_STOP_REASON.get(str(finish_reason or "stop"), "end_turn")
    if reason == "end_turn":
        for stop in stops or []:
            if stop and text.endswith(stop):
                return "stop_sequence", stop
    return reason, None


def parse_tool_arguments(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def openai_to_anthropic(resp: dict[str, Any], model: str, stops: list[str] | None = None) -> dict[str, Any]:
    choices = resp.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    blocks: list[dict[str, Any]] = []
    # vLLM, llama.cpp and DeepSeek name it reasoning_content, OpenRouter and Ollama reasoning.
    reasoning_text = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning_text, str) and reasoning_text:
        blocks.append({"type": "thinking", "thinking": reasoning_text, "signature": ""})
    content = message.get("content")
    texts: list[str] = []
    if isinstance(content, str) and content:
        texts.append(content)
        blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "reasoning":
                for item in part.get("summary") or []:
                    blocks.append(
                        {
                            "type": "thinking",
                            "thinking": item.get("text", ""),
                            "signature": item.get("signature", ""),
                        }
                    )
            elif part.get("type") == "text" and part.get("text"):
                texts.append(part["text"])
                blocks.append({"type": "text", "text": part["text"]})
    tool_calls = message.get("tool_calls") or []
    for call in tool_calls:
        fn = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": sanitize_tool_id(str(call.get("id") or "")) if call.get("id") else new_id("toolu_"),
                "name": fn.get("name", ""),
                "input": parse_tool_arguments(fn.get("arguments")),
            }
        )
    stop_reason, stop_sequence = stop_reason_for(
        choice.get("finish_reason"), bool(tool_calls), "".join(texts), stops or []
    )
    return message_envelope(
        new_id("msg_"),
        model,
        blocks,
        stop_reason,
        stop_sequence,
        openai_usage_to_anthropic(resp.get("usage")),
    )


# -- Anthropic <-> OpenAI Responses (the openai-responses kind) --

# A reasoning item travels back as the signature of the thinking block made from it: with store: false the
# upstream keeps nothing, so the next turn must hand back the item itself (id + encrypted_content).
RESPONSES_SIGNATURE = "lynkr-responses."
RESPONSES_MIN_OUTPUT_TOKENS = (
    16  # the Responses API refuses less; Claude Code probes a model with max_tokens 1
)
SUMMARY_JOIN = "\n\n"  # between reasoning summary parts in one thinking block
NO_RESULT = "[no result was returned]"
IMAGE_OMITTED = "[an image was omitted: this model does not accept images]"

# Chat content part (from _user_parts/_tool_result_to_openai) -> Responses input content part.
CHAT_PART_TO_INPUT = {
    "text": lambda p, images: {"type": "input_text", "text": p["text"]},
    "image_url": lambda p, images: (
        {"type": "input_image", "image_url": p["image_url"]["url"], "detail": "auto"}
        if images
        else {"type": "input_text", "text": IMAGE_OMITTED}
    ),
}

TOOL_CHOICE_TO_RESPONSES = {
    "auto": lambda c: "auto",
    "any": lambda c: "required",
    "none": lambda c: "none",
    "tool": lambda c: {"type": "function", "name": c["name"]},  # flat, unlike chat's {"function": {...}}
}


def encode_reasoning(item: dict[str, Any]) -> str:
    """A reasoning item -> thinking signature ("" when it cannot be replayed: no encrypted_content).
    `cuts` (summary part lengths) lets the joined thinking text split back into the same parts."""
    if not item.get("id") or not item.get("encrypted_content"):
        return ""
    cuts = [len(s.get("text") or "") for s in item.get("summary") or [] if isinstance(s, dict)]
    payload = {"id": item["id"], "encrypted_content": item["encrypted_content"], "cuts": cuts}
    return RESPONSES_SIGNATURE + base64.urlsafe_b64encode(utf8_json(json_dumps(payload))).decode()


def _split_summary(text: str, cuts: Any) -> list[str]:
    if isinstance(cuts, list) and cuts and all(isinstance(c, int) and c >= 0 for c in cuts):
        parts, at = [], 0
        for cut in cuts:
            parts.append(text[at : at + cut])
            at += cut + len(SUMMARY_JOIN)
        if SUMMARY_JOIN.join(parts) == text:
            return parts
    return [text] if text else []


def reasoning_item(block: dict[str, Any]) -> dict[str, Any] | None:
    """A thinking block we made from a reasoning item -> that item again; None for any other thinking."""
    signature = block.get("signature")
    if block.get("type") != "thinking" or not str(signature).startswith(RESPONSES_SIGNATURE):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(str(signature)[len(RESPONSES_SIGNATURE) :]))
    except ValueError:  # binascii.Error and UnicodeDecodeError included
        return None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), str) for k in ("id", "encrypted_content")
    ):
        return None
    summary = _split_summary(str(block.get("thinking") or ""), data.get("cuts"))
    return {
        "type": "reasoning",
        "id": data["id"],
        "encrypted_content": data["encrypted_content"],
        "summary": [{"type": "summary_text", "text": t} for t in summary],
    }


def _assistant_items(content: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for block in _text_blocks_of(content):
        kind = block.get("type")
        text = block.get("text") if kind == "text" else server_block_text(block)
        if text:
            part = {"type": "output_text", "text": text}
            if items and items[-1]["type"] == "message":
                items[-1]["content"].append(part)
            else:
                items.append({"type": "message", "role": "assistant", "content": [part]})
        elif kind == "thinking" and (item := reasoning_item(block)) is not None:
            items.append(item)
        elif kind == "tool_use":
            items.append(
                {
                    "type": "function_call",
                    "call_id": sanitize_tool_id(block["id"]),
                    "name": block["name"],
                    "arguments": json_dumps(block.get("input") or {}),
                }
            )
    while items and items[-1]["type"] == "reasoning":
        items.pop()  # the API refuses a reasoning item without the item that followed it
    return items


def _call_output(call_id: str, text: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": text}


def responses_input(messages: list[dict[str, Any]], images: bool = True) -> list[dict[str, Any]]:
    """Messages (after fold_system_messages) -> Responses input items, as anthropic_messages_to_openai does."""
    items: list[dict[str, Any]] = []
    pending: list[str] = []  # the last assistant turn's calls still owed an output (else the API answers 400)

    def settle() -> None:
        items.extend(_call_output(call_id, NO_RESULT) for call_id in pending)
        pending.clear()

    for msg in messages:
        if msg["role"] == "assistant":
            settle()
            turn = _assistant_items(msg["content"])
            items.extend(turn)
            pending.extend(i["call_id"] for i in turn if i["type"] == "function_call")
            continue
        if msg["role"] != "user":
            continue
        parts: list[dict[str, Any]] = []
        for block in _text_blocks_of(msg["content"]):
            if block.get("type") != "tool_result":
                parts.extend(_user_parts(block))
                continue
            call_id = sanitize_tool_id(block["tool_use_id"])
            text, pictures = _tool_result_to_openai(block)
            if call_id in pending:
                pending.remove(call_id)
                items.append(_call_output(call_id, text))
            else:  # its call is gone (e.g. after compaction): keep it readable
                parts.append({"type": "text", "text": f"[result of tool call {call_id}]\n{text}"})
            parts.extend(pictures)  # tool-result images follow in a user message
        if parts:
            settle()
            items.append(
                {
                    "type": "message",
                    "role": "user",
                    "content": [CHAT_PART_TO_INPUT[p["type"]](p, images) for p in parts],
                }
            )
    settle()
    return items


def _function_tool(tool: dict[str, Any], schema_dialect: str, strict: bool) -> dict[str, Any]:
    fn = _openai_tool(tool, schema_dialect, strict)["function"]
    # strict is always explicit: when omitted, Responses makes a schema strict if it can (all properties required)
    return {"type": "function", **fn, "strict": fn.get("strict", False)}


def anthropic_to_responses(
    req: dict[str, Any], max_tokens: int, model: str, dialect: OpenAIDialect, facts: ModelFacts
) -> tuple[dict[str, Any], list[str]]:
    """Build a Responses body for one model. Returns (body, names of tools dropped). Stateless: store is
    false and reasoning travels in the thinking signatures. stop_sequences and top_k have no counterpart."""
    body: dict[str, Any] = {"model": model}
    instructions = SUMMARY_JOIN.join(p["text"] for p in _openai_system_parts(req))
    if instructions:
        body["instructions"] = instructions
    body["input"] = responses_input(req["messages"], facts.images)
    body["max_output_tokens"] = max(max_tokens, RESPONSES_MIN_OUTPUT_TOKENS)
    schema = facts.schema or dialect.schema
    dropped = offer_tools(body, req, facts, dialect, _function_tool, TOOL_CHOICE_TO_RESPONSES)
    if facts.sampling:
        body.update({name: req[name] for name in ("temperature", "top_p") if req.get(name) is not None})
    effort = reasoning_effort(req, max_tokens) if (facts.reasoning or dialect.thinking) == "effort" else None
    if effort:
        body["reasoning"] = {"effort": effort, "summary": "auto"}
        body.pop("temperature", None)  # reasoning refuses sampling settings
        body.pop("top_p", None)
    if effort or facts.reasoning == "effort":
        body["include"] = ["reasoning.encrypted_content"]  # the only way to carry reasoning with store: false
    body["store"] = False
    structured = response_format(req, dialect, schema)
    if structured is not None:
        body["text"] = {"format": {"type": "json_schema", **structured["json_schema"]}}
    if req.get("stream"):
        body["stream"] = True
    return body, dropped


# -- Responses -> Anthropic --

# Responses error codes (ResponseError.code, the `error` event's code) -> HTTP status for the client.
ERROR_CODE_STATUS = {
    "rate_limit_exceeded": 429,
    "server_error": 500,
    "invalid_prompt": 400,
    "vector_store_timeout": 504,
    "context_length_exceeded": 400,
}
INCOMPLETE_STOP_REASON = {"max_output_tokens": "max_tokens", "content_filter": "refusal"}


def responses_failure(error: Any, label: str) -> LynkrError:
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or "")
    status = (
        ERROR_CODE_STATUS.get(code)
        or ERROR_TYPE_STATUS.get(str(error.get("type") or ""))
        or (400 if code.startswith("invalid_") or "image" in code else 500)
    )  # the image_* codes are the client's
    return LynkrError(
        f"{label} failed{f' ({code})' if code else ''}: {error.get('message') or 'no message'}", status=status
    )


def responses_usage(usage: Any) -> dict[str, int]:
    """Responses counts cached (and cache-written) tokens inside input_tokens; Anthropic does not."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("input_tokens_details") if isinstance(usage.get("input_tokens_details"), dict) else {}
    cached, written = int(details.get("cached_tokens") or 0), int(details.get("cache_write_tokens") or 0)
    return {
        "input_tokens": max(int(usage.get("input_tokens") or 0) - cached - written, 0),
        "output_tokens": int(usage.get("output_tokens") or 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
    }


def responses_stop_reason(incomplete: Any, has_calls: bool, refused: bool) -> str:
    if incomplete in INCOMPLETE_STOP_REASON:  # a call cut off by the limit is no call to run
        return INCOMPLETE_STOP_REASON[incomplete]
    return "tool_use" if has_calls else "refusal" if refused else "end_turn"


def _incomplete_reason(resp: dict[str, Any]) -> Any:
    return (
        (resp.get("incomplete_details") or {}).get("reason") if resp.get("status") == "incomplete" else None
    )


def _thinking_blocks(item: dict[str, Any]) -> list[dict[str, Any]]:
    text = SUMMARY_JOIN.join(s.get("text") or "" for s in item.get("summary") or [] if isinstance(s, dict))
    signature = encode_reasoning(item)
    return [{"type": "thinking", "thinking": text, "signature": signature}] if text or signature else []


def _message_blocks(item: dict[str, Any]) -> list[dict[str, Any]]:
    texts = [p.get("text") or p.get("refusal") for p in item.get("content") or [] if isinstance(p, dict)]
    return [{"type": "text", "text": t} for t in texts if t]


def _tool_blocks(item: dict[str, Any]) -> list[dict[str, Any]]:
    call_id = item.get("call_id")
    return [
        {
            "type": "tool_use",
            "id": sanitize_tool_id(str(call_id)) if call_id else new_id("toolu_"),
            "name": item.get("name") or "",
            "input": parse_tool_arguments(item.get("arguments")),
        }
    ]


OUTPUT_ITEM_TO_BLOCKS = {
    "reasoning": _thinking_blocks,
    "message": _message_blocks,
    "function_call": _tool_blocks,
}


def responses_to_anthropic(
    resp: dict[str, Any], model: str, label: str = "OpenAI Responses"
) -> dict[str, Any]:
    if resp.get("status") == "failed" or isinstance(resp.get("error"), dict):
        raise responses_failure(resp.get("error"), label)
    output = [item for item in resp.get("output") or [] if isinstance(item, dict)]
    blocks = [b for item in output for b in OUTPUT_ITEM_TO_BLOCKS.get(item.get("type"), lambda i: [])(item)]
    refused = any(
        p.get("type") == "refusal"
        for i in output
        if i.get("type") == "message"
        for p in i.get("content") or []
        if isinstance(p, dict)
    )
    stop = responses_stop_reason(
        _incomplete_reason(resp), any(b["type"] == "tool_use" for b in blocks), refused
    )
    return message_envelope(new_id("msg_"), model, blocks, stop, None, responses_usage(resp.get("usage")))


# -- Responses SSE -> Anthropic SSE (a decoder: lynkr section 9's interface) --


# -- Thinking provenance: a signature is valid only where it was made --
#
# Claude Code resends every earlier thinking block with its signature, and a user may switch
# providers mid-session (/model, a route, a fallback). An upstream rejects a signature it did not
# make, and reasoning from an OpenAI-format upstream has none. So each request carries only the
# thinking blocks the upstream it goes to signed itself (lynkr remembers who signed what, section 11).

THINKING_BLOCKS = ("thinking", "redacted_thinking")


def signature_key(block: dict[str, Any]) -> str | None:
    """What a thinking block is remembered by: a hash of its signature (of its data when redacted)."""
    value = block.get("signature") if block.get("type") == "thinking" else block.get("data")
    return (
        hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        if isinstance(value, str) and value
        else None
    )


def thinking_keys(messages: Iterable[dict[str, Any]]) -> list[str]:
    keys = []
    for message in messages:
        content = message.get("content")
        if message.get("role") == "assistant" and isinstance(content, list):
            keys += [
                k
                for b in content
                if isinstance(b, dict) and b.get("type") in THINKING_BLOCKS and (k := signature_key(b))
            ]
    return keys


def _in_tool_loop(messages: list[dict[str, Any]]) -> int:
    """Index of the assistant message whose tool calls the last user message answers (-1: none).
    Anthropic requires that message to keep its thinking while thinking is on."""
    if len(messages) < 2 or messages[-1].get("role") != "user" or messages[-2].get("role") != "assistant":
        return -1
    last = messages[-1].get("content")
    answers = isinstance(last, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in last
    )
    return len(messages) - 2 if answers else -1


def keep_signed_thinking(
    req: dict[str, Any], signed_here: Callable[[str], bool]
) -> tuple[dict[str, Any], int, bool]:
    """The request with only the thinking blocks `signed_here` vouches for.
    Returns (request, blocks dropped, whether thinking had to be turned off): a tool loop whose
    assistant turn lost its thinking cannot continue with thinking on, so it continues without."""
    messages = req["messages"]
    dropped = 0
    out: list[dict[str, Any]] = []
    loop_at = _in_tool_loop(messages)
    loop_lost = False
    for index, message in enumerate(messages):
        content = message.get("content")
        if (
            message.get("role") != "assistant"
            or not isinstance(content, list)
            or not any(isinstance(b, dict) and b.get("type") in THINKING_BLOCKS for b in content)
        ):
            out.append(message)
            continue
        kept = [
            b
            for b in content
            if not (isinstance(b, dict) and b.get("type") in THINKING_BLOCKS)
            or ((key := signature_key(b)) is not None and signed_here(key))
        ]
        if len(kept) == len(content):
            out.append(message)
            continue
        dropped += len(content) - len(kept)
        if index == loop_at and not any(
            b.get("type") in THINKING_BLOCKS for b in kept if isinstance(b, dict)
        ):
            loop_lost = True
        if kept:  # a turn that was only thinking goes; Anthropic joins the user turns around it
            out.append({**message, "content": kept})
    if not dropped:
        return req, 0, False
    result = {**req, "messages": out}
    thinking_on = (req.get("thinking") or {}).get("type") in ("enabled", "adaptive")
    if not (loop_lost and thinking_on):
        return result, dropped, False
    result.pop("thinking", None)
    management = result.get("context_management")
    if isinstance(management, dict) and isinstance(management.get("edits"), list):
        # clearing thinking needs thinking on: keep the other edits
        edits = [
            e for e in management["edits"] if not str((e or {}).get("type", "")).startswith("clear_thinking")
        ]
        if edits:
            result["context_management"] = {**management, "edits": edits}
        else:
            result.pop("context_management")
    return result, dropped, True


# -- Token estimate (count_tokens where the upstream cannot count) --
#
# A BPE tokenizer first cuts text into runs (a word, a number, a run of punctuation or whitespace)
# and most runs become one token, so counting runs tracks a real tokenizer across prose, code, JSON
# and CJK far better than counting bytes (bench/token_count_accuracy.py measures both against Claude's
# published BPE on each content type). The counting runs at C speed: each
# byte is mapped to a class bit with bytes.translate, 64 KiB at a time becomes one big int, and run
# starts and continuations are counted with shifts, masks and int.bit_count(). The weights were
# fitted (non-negative least squares on relative error) against that tokenizer; the answered requests
# then calibrate them per provider and model (TokenCalibration, below).

# Class bits per ASCII byte: 1 letter, 2 upper case, 4 digit, 8 punctuation/symbol, 16 whitespace,
# 32 newline/tab. UTF-8 lead bytes of symbols and emoji count as punctuation; every other byte
# (continuations, the \0 between strings) has no bit and ends every run.
_CLASS_BITS = bytes(
    (1 | 2 * chr(b).isupper())
    if chr(b).isalpha()
    else 4
    if chr(b).isdigit()
    else 16
    if b == 32
    else 48
    if chr(b) in "\n\t\r\v\f"
    else 8
    if 33 <= b <= 126
    else 0
    for b in range(128)
) + bytes(8 if b in (0xE2, 0xEE, 0xEF, 0xF0, 0xF1, 0xF2, 0xF3, 0xF4) else 0 for b in range(128, 256))
# Non-ASCII characters by their UTF-8 lead byte: Latin/Greek, Cyrillic, other scripts, symbols, kana,
# Han, Hangul, fullwidth/emoji (a tokenizer spends very different counts on each).
_SCRIPT_BITS = bytes(
    next(
        (
            1 << bit
            for lo, hi, bit in (
                (0xC2, 0xCF, 0),
                (0xD0, 0xD3, 1),
                (0xD4, 0xE1, 2),
                (0xE2, 0xE2, 3),
                (0xE3, 0xE3, 4),
                (0xE4, 0xE9, 5),
                (0xEA, 0xED, 6),
                (0xEE, 0xF4, 7),
            )
            if lo <= b <= hi
        ),
        0,
    )
    for b in range(256)
)
_RUN_CHUNK = 1 << 16
_BYTE_MASKS = [int.from_bytes(b"\x01" * _RUN_CHUNK, "little") << bit for bit in range(8)]
# Tokens per feature: lower-case runs, upper-case runs, upper-case continuations, digit runs, digits
# past a run's third, punctuation runs, punctuation continuations, whitespace runs of 2+, newline
# runs, lower-case letters past a run's twelfth (a BPE splits a long run: without this a 100 KB run
# of one letter would count as one token); then non-ASCII characters per script (_SCRIPT_BITS order).
TEXT_TOKEN_WEIGHTS = (
    0.979,
    0.914,
    0.248,
    1.306,
    0.31,
    0.844,
    0.15,
    0.533,
    0.757,
    0.25,
    0.276,
    0.938,
    1.5,
    0.123,
    1.357,
    1.021,
    1.689,
    0.252,
)


def text_token_features(texts: list[str]) -> list[int]:
    data = "\0".join(texts).encode("utf-8", "surrogatepass")
    classes = data.translate(_CLASS_BITS)
    letter, upper, digit, punct, space, newline = _BYTE_MASKS[:6]
    counts = [0] * 10
    for offset in range(0, len(classes), _RUN_CHUNK):
        x = int.from_bytes(classes[offset : offset + _RUN_CHUNK], "little")
        prev = x << 8  # each byte's bits moved onto the next byte
        same = x & prev  # the bit is set on the previous byte too
        start = x ^ same  # the first byte of a run
        lower = (x ^ (x >> 1)) & letter  # a letter without the upper-case bit
        same3 = same & (same << 8)
        run2 = lower & (lower << 8)  # lower-case letters ending a run of 2, then 4, 8, 12, 13 (by doubling)
        run4 = run2 & (run2 << 16)
        long_lower = run4 & (run4 << 32) & (run4 << 64) & (lower << 96)
        counts = [
            c + n
            for c, n in zip(
                counts,
                (
                    (lower ^ (lower & (lower << 8))).bit_count(),
                    (start & upper).bit_count(),
                    (same & upper).bit_count(),
                    (start & digit).bit_count(),
                    (same3 & (same3 << 8) & digit).bit_count(),
                    (start & punct).bit_count(),
                    (same & punct).bit_count(),
                    ((same ^ (same & (prev << 8))) & space).bit_count(),
                    (start & newline).bit_count(),
                    long_lower.bit_count(),
                ),
                strict=False,
            )
        ]
    scripts = [0] * 8
    if not data.isascii():
        marks = data.translate(_SCRIPT_BITS)
        for offset in range(0, len(marks), _RUN_CHUNK):
            x = int.from_bytes(marks[offset : offset + _RUN_CHUNK], "little")
            scripts = [c + (x & mask).bit_count() for c, mask in zip(scripts, _BYTE_MASKS, strict=False)]
    return counts + scripts


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a PNG, GIF, WebP or JPEG; None when unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        kind = data[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if kind == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + (bits >> 14 & 0x3FFF)
        if kind == b"VP8 ":
            return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(
                data[28:30], "little"
            ) & 0x3FFF
    if data[:2] == b"\xff\xd8":  # JPEG: walk the segments to the first start-of-frame
        at = 2
        while at + 9 <= len(data) and data[at] == 0xFF:
            marker = data[at + 1]
            if marker == 0xFF:  # fill byte
                at += 1
            elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                return int.from_bytes(data[at + 7 : at + 9], "big"), int.from_bytes(
                    data[at + 5 : at + 7], "big"
                )
            else:
                at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


def image_tokens(block: dict[str, Any]) -> int:
    source = block.get("source") or {}
    data = source.get("data") if source.get("type") == "base64" else None
    size = None
    for prefix in (
        (64, 4096, 131072) if isinstance(data, str) else ()
    ):  # a JPEG's frame may follow a big EXIF block
        try:
            size = image_size(base64.b64decode(data[:prefix]))
        except (binascii.Error, ValueError):
            break
        if size or prefix >= len(data):
            break
    if not size:
        return ESTIMATE_IMAGE_MAX_TOKENS
    return min(ESTIMATE_IMAGE_MAX_TOKENS, max(1, math.ceil(size[0] * size[1] / 750)))


def _tokenized_text(content: Any, texts: list[str]) -> int:
    """Append the strings of `content` an upstream tokenizes; return the tokens of its images."""
    if isinstance(content, str):
        texts.append(content)
        return 0
    images = 0
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "thinking":
            texts.append(block.get("thinking") or "")
        elif kind in ("tool_use", "server_tool_use"):
            texts += (block.get("name") or "", json_dumps(block.get("input", {})))
        elif kind == "tool_result" or str(kind).endswith("_tool_result"):
            images += _tokenized_text(block.get("content", ""), texts)
        elif kind == "image":
            images += image_tokens(block)
        elif kind == "document":
            source = block.get("source") or {}
            if source.get("type") == "text":
                texts.append(source.get("data") or "")
            elif source.get("type") == "content":
                images += _tokenized_text(source.get("content"), texts)
            else:
                images += 2 * ESTIMATE_IMAGE_MAX_TOKENS  # a PDF: unknown, err high
    return images


_TOOL_FEATURES: collections.OrderedDict[bytes, list[int]] = (
    collections.OrderedDict()
)  # marshal(tools) -> features


def _tool_features(tools: list[Any]) -> list[int]:
    """Features of a tool list, kept for the next request: Claude Code sends the same ~30 KB of tool
    definitions every turn (features add up: a \0 between strings ends every run)."""
    try:
        key = marshal.dumps(tools)
    except ValueError:
        key = b""
    found = _TOOL_FEATURES.get(key) if key else None
    if found is not None:
        return found
    texts: list[str] = []
    for tool in tools:
        if isinstance(tool, dict):
            schema = tool.get("input_schema", tool)
            texts += (tool.get("name") or "", tool.get("description") or "", json_dumps(schema))
    found = text_token_features([t for t in texts if t])
    if key:
        _TOOL_FEATURES[key] = found
        while len(_TOOL_FEATURES) > 32:
            _TOOL_FEATURES.popitem(last=False)
    return found


def raw_token_estimate(req: dict[str, Any]) -> float:
    """The uncalibrated estimate of a request's input tokens (milliseconds for a long conversation: run
    it off the event loop; bench/README.md, Figures behind the code)."""
    texts: list[str] = []
    images = _tokenized_text(req.get("system"), texts)
    messages = req.get("messages") or []
    for message in messages:
        if isinstance(message, dict):
            images += _tokenized_text(message.get("content"), texts)
    tools = req.get("tools") or []
    features = text_token_features([t for t in texts if t])
    if tools:
        features = [a + b for a, b in zip(features, _tool_features(tools), strict=False)]
    weighted = sum(w * n for w, n in zip(TEXT_TOKEN_WEIGHTS, features, strict=False))
    return (
        weighted
        + images
        + ESTIMATE_TOKENS_PER_MESSAGE * len(messages)
        + ESTIMATE_TOOLS_PREAMBLE * bool(tools)
    )


# Upstream/estimate ratios a real tokenizer can produce (others are not learned), and the least share
# of the estimate a calibrated count may report.
PLAUSIBLE_TOKEN_RATIO = (0.4, 2.5)
CALIBRATION_FLOOR = 0.7


@dataclass(frozen=True)
class TokenCalibration:
    """What one provider and model's answers taught about the estimate: a fit of
    upstream = a * estimate + b (least squares on relative error, old samples fading), and a safety
    margin of one residual standard deviation (at least 1.75 %). Before any sample it errs high
    (x 1.25). Immutable: each answer makes a new one, so the event loop reads a consistent state."""

    n: float = 0.0  # the sums of the fit: weights, u = 1/estimate, u^2, r = upstream/estimate, u*r, r^2
    su: float = 0.0
    suu: float = 0.0
    sr: float = 0.0
    sur: float = 0.0
    srr: float = 0.0
    answers: float = 0.0  # how many answers taught it (for operators: /health)

    PRIOR_FACTOR: ClassVar[float] = 1.25  # before any sample: err high (an undercount breaks compaction)
    DECAY: ClassVar[float] = 0.97  # each sample fades by this per later one (~33 samples of memory)
    PRIOR_WEIGHT: ClassVar[float] = 0.01  # pseudo-samples pulling a toward PRIOR_FACTOR
    PRIOR_B: ClassVar[float] = 1e-6  # ridge on b (in units of u^2: one sample of ~1000 tokens)
    PRIOR_SD: ClassVar[float] = 0.03  # prior residual deviation, worth PRIOR_N samples
    PRIOR_N: ClassVar[float] = 2.0
    MIN_MARGIN: ClassVar[float] = (
        0.0175  # bench/token_count_accuracy.py: the least that never undercounts 2 %
    )
    SMALL: ClassVar[float] = 200.0  # a request of this many estimated tokens counts as half a sample

    @property
    def samples(self) -> float:
        return self.n

    def learned(self, estimate: float, upstream: int) -> TokenCalibration:
        if (
            estimate <= 0
            or upstream <= 0
            or not PLAUSIBLE_TOKEN_RATIO[0] <= upstream / estimate <= PLAUSIBLE_TOKEN_RATIO[1]
        ):
            return self  # a usage figure no tokenizer explains (a server reporting 0 or a constant): not a lesson
        u, r = 1.0 / estimate, upstream / estimate
        w = estimate / (estimate + self.SMALL)  # small requests are noisy: they count less
        d = self.DECAY
        return TokenCalibration(
            self.n * d + w,
            self.su * d + w * u,
            self.suu * d + w * u * u,
            self.sr * d + w * r,
            self.sur * d + w * u * r,
            self.srr * d + w * r * r,
            self.answers + 1,
        )

    def fit(self) -> tuple[float, float, float]:
        """(a, b, margin)."""
        if self.n <= 0:
            return self.PRIOR_FACTOR, 0.0, 0.0
        s11, s12, s22 = self.n + self.PRIOR_WEIGHT, self.su, self.suu + self.PRIOR_B
        t1, t2 = self.sr + self.PRIOR_WEIGHT * self.PRIOR_FACTOR, self.sur
        det = s11 * s22 - s12 * s12
        a, b = (t1 * s22 - t2 * s12) / det, (s11 * t2 - s12 * t1) / det
        rss = (
            self.srr
            - 2 * a * self.sr
            - 2 * b * self.sur
            + a * a * self.n
            + 2 * a * b * self.su
            + b * b * self.suu
        )
        var = (max(rss, 0.0) + self.PRIOR_N * self.PRIOR_SD**2) / (self.n + self.PRIOR_N)
        return a, b, max(self.MIN_MARGIN, var**0.5)

    def describe(self) -> dict[str, Any]:
        a, b, margin = self.fit()
        return {"answers": int(self.answers), "factor": round(a + margin, 4), "offset": round(b, 1)}

    def count(self, estimate: float) -> int:
        """The calibrated count, rounded up; a negative intercept never sinks a small request, and no
        fit takes it below CALIBRATION_FLOOR of the estimate (an undercount is the harmful error)."""
        a, b, margin = self.fit()
        fitted = estimate * (a + margin) + max(b, -0.02 * estimate)
        return max(1, math.ceil(max(fitted, CALIBRATION_FLOOR * estimate)))


# == 9. Streaming ==
#
# Theory of operation: an upstream body is an async iterator of byte chunks split anywhere.
# UpstreamResponse.aiter_bytes(tick=...) yields None during upstream silence (turned into `ping`s).
# SSEParser (section 4) cuts events out of the bytes; a translator turns each event into
# Anthropic SSE bytes at once, so every upstream chunk is written before the next is read.
# A stream that fails after its 200 ends with `event: error`, never with a fake message_stop.


def error_event(exc: LynkrError) -> bytes:
    return sse_event("error", {"type": "error", "error": {"type": exc.error_type, "message": exc.message}})


def message_start_event(message_id: str, model: str, usage: dict[str, Any]) -> bytes:
    return sse_event(
        "message_start",
        {"type": "message_start", "message": message_envelope(message_id, model, usage=usage)},
    )


MESSAGE_STOP_EVENT = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def message_end_events(stop_reason: str | None, stop_sequence: str | None, usage: dict[str, Any]) -> bytes:
    """message_delta (the stop reason, the final usage) and message_stop: how every stream ends well."""
    return (
        sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage,
            },
        )
        + MESSAGE_STOP_EVENT
    )


class BlockKind(enum.Enum):
    """The kind of content block a stream translator has open (Anthropic blocks are sequential: one at a time)."""

    TEXT = "text"
    THINKING = "thinking"
    TOOL = "tool"


# Module-level names for the members: a translator checks its open block on every token, and looking a
# member up on its Enum class costs several times a global lookup.
TEXT_BLOCK, THINKING_BLOCK, TOOL_BLOCK = BlockKind.TEXT, BlockKind.THINKING, BlockKind.TOOL


# A chunk carrying only a non-empty text delta (anything else takes the general path).
# The literal must be a valid JSON string (no raw control characters, only JSON's escapes): it is
# forwarded to the client as it is and decoded in bulk when the block ends.
JSON_TEXT_LITERAL = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})+"'
JSON_TEXT_LITERAL_EXACT = re.compile(JSON_TEXT_LITERAL)
PLAIN_TEXT_CHUNK = re.compile(
    r'"delta":\s*\{\s*(?:"role":\s*"assistant",\s*)?"content":\s*(' + JSON_TEXT_LITERAL + r")\s*\}"
)
# Anything that needs the full parse: tool calls, reasoning, usage, errors, a finish reason, no choices.
SLOW_CHUNK = re.compile(r'"(?:tool_calls|reasoning|usage|error)|"finish_reason":\s*"|"choices":\s*\[\s*\]')


class OpenAIStreamTranslator:
    """OpenAI chat.completion.chunk objects -> Anthropic SSE bytes, one chunk at a time.

    Anthropic blocks are strictly sequential (start, deltas, stop), OpenAI tool calls may
    interleave by `index`. So the first tool call streams live, fragment by fragment; fragments of
    any other call are buffered and emitted, each as a complete block, when the live call must end
    (other content, finish_reason or end of stream). A lone "{}" arguments fragment before or after
    the real ones (a known Databricks quirk) is not double counted.
    """

    def __init__(self, model: str, stops: list[str] | None = None) -> None:
        self.model = model
        self.stops = stops or []
        self.message_id = new_id("msg_")
        self.started = False
        self.finished = False
        self.next_index = 0
        self.open_kind: BlockKind | None = None
        self.live_tool: dict[str, Any] | None = None
        self.tools: dict[Any, dict[str, Any]] = {}  # OpenAI index/id -> call state
        self.buffered: list[dict[str, Any]] = []  # calls waiting for the live one to end, in order
        self.unnamed: list[dict[str, Any]] = []  # calls whose name has not arrived yet
        self.finish_reason: str | None = None
        self.usage: dict[str, int] = openai_usage_to_anthropic(None)
        self.text_tail = ""
        self.literals: list[str] = []  # JSON string literals of the open text block, not yet decoded
        # (text before, text after) the literal in the last plain text chunk: an upstream repeats the
        # same frame (id, model, index...) around every token, so the next one is recognised by it.
        self.plain_frame: tuple[str, str] | None = None
        self.blocks: list[dict[str, Any]] = []  # the message being streamed, for the turn record
        self.final: dict[str, Any] | None = None

    # -- event helpers --
    def start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return message_start_event(self.message_id, self.model, dict(self.usage))

    def _decode_literals(self) -> None:
        """Append the text block's pending literals to it: one C-speed parse instead of one per token."""
        if self.literals:
            self.blocks[-1]["text"] += "".join(json.loads("[" + ",".join(self.literals) + "]"))
            self.literals.clear()

    def _close_open(self) -> bytes:
        """End the open block; then emit every buffered tool call as a complete block."""
        self._decode_literals()
        out = b""
        if self.open_kind is not None:
            live = self.live_tool
            if self.open_kind is TOOL_BLOCK and live is not None and live["held_empty"] and not live["args"]:
                out += self._json_delta(self.next_index - 1, "{}")
            if self.open_kind is TOOL_BLOCK and live is not None:
                self.blocks[-1]["input"] = parse_tool_arguments(live["args"] or "{}")
            out += sse_event(
                "content_block_stop", {"type": "content_block_stop", "index": self.next_index - 1}
            )
            self.open_kind, self.live_tool = None, None
        for call in self.buffered:
            out += self._block_start(self._tool_block(call))
            self.blocks[-1]["input"] = parse_tool_arguments(call["args"] or "{}")
            out += self._json_delta(self.next_index - 1, call["args"] or "{}")
            out += sse_event(
                "content_block_stop", {"type": "content_block_stop", "index": self.next_index - 1}
            )
            call["done"] = True
        self.buffered.clear()
        return out

    def _block_start(self, block: dict[str, Any]) -> bytes:
        self.blocks.append(dict(block))
        out = sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": self.next_index, "content_block": block},
        )
        self.next_index += 1
        return out

    def _open(self, kind: BlockKind, block: dict[str, Any]) -> bytes:
        out = self._close_open() + self._block_start(block)
        self.open_kind = kind
        return out

    @staticmethod
    def _tool_block(call: dict[str, Any]) -> dict[str, Any]:
        return {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}

    @staticmethod
    def _json_delta(index: int, fragment: str) -> bytes:
        return sse_event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": fragment},
            },
        )

    def _text(self, text: str) -> bytes:
        out = b"" if self.open_kind is TEXT_BLOCK else self._open(TEXT_BLOCK, {"type": "text", "text": ""})
        self._decode_literals()
        self.blocks[-1]["text"] += text
        if self.stops:  # only needed to tell a stop sequence from a natural end
            self.text_tail = (self.text_tail + text)[-256:]
        # The hot path of every stream: the same bytes sse_event() would build, without the dicts.
        return out + TEXT_DELTA_EVENT % (self.next_index - 1, utf8_json(json_dumps(text)))

    def text_literal(self, literal: str) -> bytes:
        """A text delta whose JSON string literal (quotes included) came straight from upstream."""
        out = b"" if self.started and self.open_kind is TEXT_BLOCK else self.start()
        if self.open_kind is not TEXT_BLOCK:
            out += self._open(TEXT_BLOCK, {"type": "text", "text": ""})
        if self.stops:  # the tail is needed now: decode as we go
            self.text_tail = (self.text_tail + json.loads(literal))[-256:]
        self.literals.append(literal)
        return out + TEXT_DELTA_EVENT % (self.next_index - 1, literal.encode())

    def _thinking(self, text: str, signature: str = "") -> bytes:
        out = b""
        if self.open_kind is not THINKING_BLOCK:
            out += self._open(THINKING_BLOCK, {"type": "thinking", "thinking": "", "signature": ""})
        index = self.next_index - 1
        if text:
            self.blocks[-1]["thinking"] += text
            out += sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "thinking_delta", "thinking": text},
                },
            )
        if signature:
            self.blocks[-1]["signature"] = signature
            out += sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "signature_delta", "signature": signature},
                },
            )
        return out

    @staticmethod
    def _accept_fragment(call: dict[str, Any], fragment: str) -> bool:
        """Append a fragment unless it is the "{}" quirk; True when it was appended."""
        if fragment == "{}":
            if not call["args"]:
                call["held_empty"] = True
                return False
            try:
                json.loads(call["args"])
                return False  # already a complete object: a trailing "{}" would double count
            except ValueError:
                pass
        call["args"] += fragment
        return True

    def _schedule(self, call: dict[str, Any]) -> bytes:
        """A named call streams live, or waits (buffered) while another call streams."""
        if self.open_kind is TOOL_BLOCK:
            self.buffered.append(call)  # another call is streaming: this one waits its turn
            return b""
        out = self._open(TOOL_BLOCK, self._tool_block(call))
        self.live_tool = call
        if call["args"]:  # what arrived before its name
            out += self._json_delta(self.next_index - 1, call["args"])
        return out

    def _tool_fragment(self, part: dict[str, Any]) -> bytes:
        fn = part.get("function") or {}
        key = part.get("index")
        if key is None:
            key = part.get("id") or len(self.tools)
        call = self.tools.get(key)
        out = b""
        if call is None:
            call_id = part.get("id")
            call = {
                "id": sanitize_tool_id(str(call_id)) if call_id else new_id("toolu_"),
                "name": fn.get("name") or "",
                "args": "",
                "held_empty": False,
                "done": False,
            }
            self.tools[key] = call
            if call["name"]:
                out += self._schedule(call)
            else:
                self.unnamed.append(call)  # a tool_use block needs its name: its arguments wait with it
        elif fn.get("name") and not call["name"]:
            call["name"] = fn["name"]
            if call in self.unnamed:
                self.unnamed.remove(call)
                out += self._schedule(call)
        fragment = fn.get("arguments")
        if isinstance(fragment, dict):
            fragment = json_dumps(fragment)
        if not fragment or call["done"] or not self._accept_fragment(call, fragment):
            return out
        if call is self.live_tool:
            out += self._json_delta(self.next_index - 1, fragment)
        return out

    # -- public --
    def feed(self, chunk: dict[str, Any]) -> bytes:
        if isinstance(chunk.get("usage"), dict):
            self.usage = openai_usage_to_anthropic(chunk["usage"])
        out = self.start()
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out += self._thinking(reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                out += self._text(content)
            elif isinstance(content, list):
                for part in content:
                    if not isinstance(part, dict):
                        continue
                    if part.get("type") == "reasoning":
                        for item in part.get("summary") or []:
                            out += self._thinking(item.get("text") or "", item.get("signature") or "")
                    elif part.get("type") == "text" and part.get("text"):
                        out += self._text(part["text"])
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    out += self._tool_fragment(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                out += self._close_open()
        return out

    def finish(self) -> bytes:
        """message_delta + message_stop (after [DONE], or EOF following a finish_reason)."""
        if self.finished:
            return b""
        self.finished = True
        self.buffered += self.unnamed  # never named: sent complete all the same, nothing is lost
        self.unnamed.clear()
        out = self.start() + self._close_open()
        stop_reason, stop_sequence = stop_reason_for(
            self.finish_reason, bool(self.tools), self.text_tail, self.stops
        )
        self.final = message_envelope(
            self.message_id, self.model, self.blocks, stop_reason, stop_sequence, dict(self.usage)
        )
        return out + message_end_events(stop_reason, stop_sequence, dict(self.usage))


# -- Anthropic SSE: the one reader, the message it describes, the relay --


# The events that carry usage, and the ones AnthropicEvents notes (usage, the end, an upstream error).
USAGE_EVENTS = frozenset({"message_start", "message_delta"})
NOTED_EVENTS = USAGE_EVENTS | {"message_stop", "error"}


class AnthropicEvents:
    """The one reader of Anthropic SSE: bytes split anywhere -> (name, data text, parsed event). The
    relay, the message accumulator and the agent loop's round relay all read through it, and it notes
    what each of them needs: `done` at message_stop, `failed` at an upstream `event: error`, `usage` as
    reported so far. `parse` names the events whose JSON is decoded (a relay passes the others on as
    text, never parsed); None decodes them all. The event is None when it is not a JSON object."""

    def __init__(self, parse: frozenset[str] | None = None) -> None:
        self.sse = SSEParser()
        self.parse = parse
        self.done = False
        self.failed = False
        self.usage: dict[str, int] = {}

    def flush(self) -> list[tuple[str, str, dict[str, Any] | None]]:
        """The event left at the end of the stream without its blank line."""
        return self.feed(b"", at_end=True)

    def feed(self, chunk: bytes, at_end: bool = False) -> list[tuple[str, str, dict[str, Any] | None]]:
        out: list[tuple[str, str, dict[str, Any] | None]] = []
        parse = self.parse
        # One loop and no call per event (a stream is an event per token; see bench/micro_lynkr.py).
        for name, data in self.sse.flush() if at_end else self.sse.feed(chunk):
            event = None
            if parse is None or name in parse:
                try:
                    event = json.loads(data)
                except ValueError:
                    pass
                if type(event) is not dict:
                    event = None
            if name in NOTED_EVENTS:  # most events are deltas: the check keeps them on the short path
                self.note(name, event)
            out.append((name, data, event))
        return out

    def note(self, name: str, event: dict[str, Any] | None) -> None:
        """What one event tells about the stream (also fed directly by decoders that unwrap Anthropic
        events from another framing, such as Bedrock's event stream)."""
        if name == "message_stop":
            self.done = True
        elif name == "error":
            self.failed = True
        elif name in USAGE_EVENTS and event is not None:
            holder = event.get("message") if name == "message_start" else event
            usage = holder.get("usage") if isinstance(holder, dict) else None
            if isinstance(usage, dict):
                self.usage.update({k: v for k, v in usage.items() if isinstance(v, int)})


class MessageAccumulator:
    """Parsed Anthropic stream events -> the complete message they describe (handlers by event name,
    deltas by delta type)."""

    def __init__(self) -> None:
        self.message = message_envelope("", "", usage={})
        self.blocks: dict[int, dict[str, Any]] = {}
        self.partial_json: dict[int, str] = {}
        self.error: dict[str, Any] | None = None

    def feed(self, name: str, event: dict[str, Any]) -> None:
        if name == "content_block_delta":  # nearly every event: handled inline (see bench/micro_lynkr.py)
            block = self.blocks.get(event.get("index", -1))
            delta = event.get("delta") or {}
            kind = delta.get("type")
            if kind == "text_delta" and block is not None:
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif block is not None:
                self._other_delta(block, event.get("index", -1), kind, delta)
            return
        handler = self.HANDLERS.get(name)
        if handler is not None:
            handler(self, event)

    def result(self) -> dict[str, Any]:
        return {**self.message, "content": [self.blocks[i] for i in sorted(self.blocks)]}

    def _message_start(self, event: dict[str, Any]) -> None:
        start = event.get("message") or {}
        for key in ("id", "model"):
            if start.get(key):
                self.message[key] = start[key]
        self.message["usage"] = dict(start.get("usage") or {})

    def _block_start(self, event: dict[str, Any]) -> None:
        index = event.get("index", len(self.blocks))
        block = dict(event.get("content_block") or {})
        if block.get("type") in ("tool_use", "server_tool_use"):
            self.partial_json[index] = ""
        self.blocks[index] = block

    def _other_delta(self, block: dict[str, Any], index: int, kind: Any, delta: dict[str, Any]) -> None:
        field = APPENDED_DELTAS.get(kind)
        if field is not None:
            block[field] = block.get(field, "") + delta.get(field, "")
        elif kind == "input_json_delta":
            self.partial_json[index] = self.partial_json.get(index, "") + delta.get("partial_json", "")
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature", "")
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def _block_stop(self, event: dict[str, Any]) -> None:
        index = event.get("index", -1)
        if index in self.partial_json and index in self.blocks:
            self.blocks[index]["input"] = parse_tool_arguments(self.partial_json.pop(index) or "{}")

    def _message_delta(self, event: dict[str, Any]) -> None:
        delta = event.get("delta") or {}
        self.message["stop_reason"] = delta.get("stop_reason", self.message["stop_reason"])
        self.message["stop_sequence"] = delta.get("stop_sequence")
        self.message["usage"].update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})

    def _error(self, event: dict[str, Any]) -> None:
        self.error = event.get("error") or {}

    HANDLERS: ClassVar[dict[str, Callable[[MessageAccumulator, dict[str, Any]], None]]] = {
        "message_start": _message_start,
        "content_block_start": _block_start,
        "content_block_stop": _block_stop,
        "message_delta": _message_delta,
        "error": _error,
    }


# Delta type -> the block field its text is appended to.
APPENDED_DELTAS = {"text_delta": "text", "thinking_delta": "thinking"}


def sse_to_message(data: bytes) -> MessageAccumulator:
    events = AnthropicEvents()
    acc = MessageAccumulator()
    for name, _, event in events.feed(data) + events.flush():
        if event is not None:
            acc.feed(name, event)
    return acc


class AnthropicStreamRelay:
    """Anthropic SSE from upstream -> re-framed event by event (LF endings), usage noted for the log.
    A decoder (see below): `done` at message_stop, `failed` at an upstream `event: error`."""

    final = None  # the bytes pass through as they are; the orchestrator re-parses them when it must

    def __init__(self) -> None:
        self.events = AnthropicEvents(parse=USAGE_EVENTS)

    done = property(lambda self: self.events.done)
    failed = property(lambda self: self.events.failed)
    usage = property(lambda self: self.events.usage)

    def feed(self, chunk: bytes) -> bytes:
        events = self.events.feed(chunk)
        if len(events) == 1:  # an upstream's usual chunk, one event: no list to build and join
            name, data, _ = events[0]
            return f"event: {name}\ndata: {data}\n\n".encode()
        return b"".join([f"event: {name}\ndata: {data}\n\n".encode() for name, data, _ in events])

    def flush(self) -> bytes:
        return b"".join(
            [f"event: {name}\ndata: {data}\n\n".encode() for name, data, _ in self.events.flush()]
        )


# -- Decoders: one per wire format, one interface for the pump (section 10) --
#
# feed(chunk) -> Anthropic SSE bytes for whatever the chunk completed; flush() at the upstream's EOF;
# `done` once the message is complete, `failed` once the upstream itself sent an error event;
# `usage` as reported so far; `final` the complete message when the decoder built it (else None,
# and whoever needs it re-parses the bytes).


class OpenAIStreamDecoder:
    """OpenAI chat SSE (`data: {chunk}` ... `data: [DONE]`) -> Anthropic SSE, with the byte-level fast path."""

    failed = False

    def __init__(self, model: str, stops: list[str] | None, label: str) -> None:
        self.parser = SSEParser()
        self.translator = OpenAIStreamTranslator(model, stops)
        self.label = label

    @property
    def done(self) -> bool:
        return self.translator.finished

    @property
    def usage(self) -> dict[str, int]:
        return self.translator.usage

    @property
    def final(self) -> dict[str, Any] | None:
        return self.translator.final

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._on_event(data) for _, data in self.parser.feed(chunk))

    def flush(self) -> bytes:
        translator = self.translator
        if translator.finished:
            return b""
        out = b"".join(self._on_event(data) for _, data in self.parser.flush())
        if not translator.finished and translator.finish_reason is not None:
            out += translator.finish()  # a finish_reason without [DONE]: complete all the same
        return out

    def _on_event(self, data: str) -> bytes:
        translator = self.translator
        data = data.strip()
        if not data or translator.finished:
            return b""
        if data == "[DONE]":
            return translator.finish()
        # Fast path for the chunk most streams are made of, one text token and nothing else: its JSON
        # string literal goes into the Anthropic event as it is, without a parse and a re-encode.
        frame = translator.plain_frame
        if frame is not None and data.startswith(frame[0]) and data.endswith(frame[1]):
            # Same frame as a chunk checked below, so only the literal needs checking.
            literal = data[len(frame[0]) : len(data) - len(frame[1])]
            if JSON_TEXT_LITERAL_EXACT.fullmatch(literal):
                return translator.text_literal(literal)
        if data.count('"content":') == 1 and SLOW_CHUNK.search(data) is None:
            match = PLAIN_TEXT_CHUNK.search(data)
            if match is not None:
                translator.plain_frame = (data[: match.start(1)], data[match.end(1) :])
                return translator.text_literal(match.group(1))
        try:
            obj = json.loads(data)
        except ValueError:
            raise UpstreamUnavailable(
                f"{self.label} sent invalid JSON in its stream: {data[:200]!r}"
            ) from None
        if not isinstance(obj, dict):
            return b""
        if "error" in obj or "error_code" in obj:
            message, code = error_message_from_body(data.encode())
            raise LynkrError(
                f"{self.label} stream failed{f' ({code})' if code else ''}: {message}", status=500
            )
        return translator.feed(obj)


# Responses event type -> handler; message_start goes out before the first. Everything else (in_progress,
# content_part.*, the *.done of texts and summaries, hosted tools' progress) adds nothing.
RESPONSES_EVENTS = {
    "response.created": "_created",
    "response.output_item.added": "_item_added",
    "response.output_text.delta": "_text",
    "response.refusal.delta": "_refusal",
    "response.reasoning_summary_text.delta": "_summary",
    "response.function_call_arguments.delta": "_args",
    "response.function_call_arguments.done": "_args_done",
    "response.output_item.done": "_item_done",
    "response.completed": "_complete",
    "response.incomplete": "_complete",
    "response.failed": "_failed",
    "error": "_error",
}


class ResponsesStreamDecoder:
    """Responses SSE -> Anthropic SSE, event by event. Anthropic blocks are strictly sequential, Responses
    items are keyed by output_index: the first function call streams live; a call whose deltas interleave
    with it waits (buffered) and is emitted complete once the live one ends -- or goes live itself then, if
    still streaming. Upstream failures raise LynkrError (the pump sends `event: error`), so `failed` stays False."""

    failed = False

    def __init__(self, model: str, label: str) -> None:
        self.parser = SSEParser()
        self.model, self.label = model, label
        self.message_id = new_id("msg_")
        self.started = self.done = self.refused = False
        self.blocks: list[dict[str, Any]] = []  # the message so far; the open block is the last
        self.open: tuple[Any, BlockKind] | None = None  # (output_index, kind) of the open block
        self.part = 0  # summary_index of the open thinking block
        self.seen: set[Any] = set()  # output indexes that got a block
        self.calls: dict[Any, dict[str, Any]] = {}  # output_index -> {"id", "name", "args", "done", "closed"}
        self.waiting: list[dict[str, Any]] = []  # calls held back while another block is open, in order
        self.usage = responses_usage(None)
        self.final: dict[str, Any] | None = None

    # -- the decoder interface --
    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._event(name, data) for name, data in self.parser.feed(chunk))

    def flush(self) -> bytes:
        return b"".join(self._event(name, data) for name, data in self.parser.flush())

    def _event(self, name: str, data: str) -> bytes:
        data = data.strip()
        if self.done or not data or data == "[DONE]":
            return b""
        try:
            event = json.loads(data)
        except ValueError:
            raise UpstreamUnavailable(
                f"{self.label} sent invalid JSON in its stream: {data[:200]!r}"
            ) from None
        handler = RESPONSES_EVENTS.get(event.get("type") or name) if isinstance(event, dict) else None
        if handler is None:
            return b""
        out = b"" if handler in ("_failed", "_error") else self._start()  # those two raise
        return out + getattr(self, handler)(event)

    # -- Anthropic events --
    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return message_start_event(self.message_id, self.model, dict(self.usage))

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse_event(
            "content_block_delta",
            {"type": "content_block_delta", "index": len(self.blocks) - 1, "delta": delta},
        )

    def _begin(self, key: Any, kind: BlockKind, block: dict[str, Any]) -> bytes:
        self.blocks.append(block)
        self.open = (key, kind)
        self.seen.add(key)
        return sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": len(self.blocks) - 1, "content_block": dict(block)},
        )

    def _end(self) -> bytes:
        """End the open block (a tool's input is parsed once, here)."""
        if self.open is None:
            return b""
        key, kind = self.open
        if kind is TOOL_BLOCK:
            self.calls[key]["closed"] = True
            self.blocks[-1]["input"] = parse_tool_arguments(self.calls[key]["args"] or "{}")
        self.open = None
        return sse_event("content_block_stop", {"type": "content_block_stop", "index": len(self.blocks) - 1})

    def _switch(self, key: Any, kind: BlockKind, block: dict[str, Any]) -> bytes:
        return self._end() + self._drain() + self._begin(key, kind, block)

    def _begin_call(self, key: Any, call: dict[str, Any]) -> bytes:
        call["id"] = call["id"] or new_id("toolu_")
        return self._begin(
            key, TOOL_BLOCK, {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}
        )

    def _drain(self, promote: bool = False, everything: bool = False) -> bytes:
        """Emit the waiting calls that are complete; then (promote) let the first still streaming go live."""
        out = b""
        for call in [c for c in self.waiting if c["done"] or everything]:
            self.waiting.remove(call)
            out += (
                self._begin_call(call["key"], call)
                + self._delta({"type": "input_json_delta", "partial_json": call["args"] or "{}"})
                + self._end()
            )
        if promote and self.waiting and self.open is None:
            call = self.waiting.pop(0)
            out += self._begin_call(call["key"], call)
            if call["args"]:
                out += self._delta({"type": "input_json_delta", "partial_json": call["args"]})
        return out

    def _complete(self, event: dict[str, Any]) -> bytes:
        """response.completed / response.incomplete: the last blocks, usage, stop reason, message_stop."""
        response = event.get("response") if isinstance(event.get("response"), dict) else {}
        out = self._end() + self._drain(everything=True)
        self.usage = responses_usage(response.get("usage"))
        stop = responses_stop_reason(
            _incomplete_reason(response), any(b["type"] == "tool_use" for b in self.blocks), self.refused
        )
        self.final = message_envelope(self.message_id, self.model, self.blocks, stop, None, dict(self.usage))
        self.done = True
        return out + message_end_events(stop, None, dict(self.usage))

    # -- Responses events --
    def _created(self, event: dict[str, Any]) -> bytes:
        return b""  # message_start (sent before any handled event) is all it means

    def _call(self, key: Any, item: dict[str, Any]) -> dict[str, Any]:
        if key not in self.calls:
            call_id = item.get("call_id")
            self.calls[key] = {
                "key": key,
                "id": sanitize_tool_id(str(call_id)) if call_id else "",
                "name": item.get("name") or "",
                "args": "",
                "done": False,
                "closed": False,
            }
        return self.calls[key]

    def _item_added(self, event: dict[str, Any]) -> bytes:
        item, key = event.get("item") or {}, event.get("output_index")
        if item.get("type") != "function_call":
            return b""  # message and reasoning blocks open at their first delta
        call = self._call(key, item)
        if call in self.waiting or key in self.seen:
            return b""  # announced twice
        if self.open is not None and self.open[1] is TOOL_BLOCK:
            self.waiting.append(call)
            return b""
        return self._end() + self._drain() + self._begin_call(key, call)

    def _text(self, event: dict[str, Any]) -> bytes:
        key, text = event.get("output_index"), event.get("delta") or ""
        out = (
            b""
            if self.open == (key, TEXT_BLOCK)
            else self._switch(key, TEXT_BLOCK, {"type": "text", "text": ""})
        )
        self.blocks[-1]["text"] += text
        return out + (self._delta({"type": "text_delta", "text": text}) if text else b"")

    def _refusal(self, event: dict[str, Any]) -> bytes:
        self.refused = True
        return self._text(event)

    def _summary(self, event: dict[str, Any]) -> bytes:
        key, text, part = event.get("output_index"), event.get("delta") or "", event.get("summary_index") or 0
        out = b""
        if self.open != (key, THINKING_BLOCK):
            out = self._switch(key, THINKING_BLOCK, {"type": "thinking", "thinking": "", "signature": ""})
            self.part = part
        elif part != self.part:
            self.part, text = part, SUMMARY_JOIN + text
        self.blocks[-1]["thinking"] += text
        return out + (self._delta({"type": "thinking_delta", "thinking": text}) if text else b"")

    def _args(self, event: dict[str, Any]) -> bytes:
        key, fragment = event.get("output_index"), event.get("delta") or ""
        call = self.calls.get(key)
        if call is None:  # never announced: wait for its name and id
            call = self._call(key, {})
            self.waiting.append(call)
        if call["done"] or call["closed"] or not fragment:
            return b""
        call["args"] += fragment
        live = self.open == (key, TOOL_BLOCK)
        return self._delta({"type": "input_json_delta", "partial_json": fragment}) if live else b""

    def _args_done(self, event: dict[str, Any]) -> bytes:
        return self._call_done(event.get("output_index"), event)  # has the item's name and arguments

    def _call_done(self, key: Any, item: dict[str, Any]) -> bytes:
        call = self.calls.get(key)
        if call is None:
            call = self._call(key, item)
            self.waiting.append(call)
        call["name"] = call["name"] or item.get("name") or ""
        call["id"] = call["id"] or (sanitize_tool_id(str(item["call_id"])) if item.get("call_id") else "")
        out, arguments, live = b"", item.get("arguments"), self.open == (key, TOOL_BLOCK)
        if not call["done"] and not call["closed"] and isinstance(arguments, str):
            if not live:
                call["args"] = arguments
            elif arguments.startswith(call["args"]) and arguments != call["args"]:  # deltas were missed
                out += self._delta(
                    {"type": "input_json_delta", "partial_json": arguments[len(call["args"]) :]}
                )
                call["args"] = arguments
        call["done"] = True
        if live or self.open is None:
            out += self._end() + self._drain(promote=True)
        return out

    def _item_done(self, event: dict[str, Any]) -> bytes:
        item, key = event.get("item") or {}, event.get("output_index")
        kind = item.get("type")
        if kind == "function_call":
            return self._call_done(key, item)
        if kind == "message" and self.open == (key, TEXT_BLOCK):
            return self._end() + self._drain(promote=True)
        if kind != "reasoning":
            return b""
        out, signature = b"", encode_reasoning(item)
        if self.open != (key, THINKING_BLOCK):
            if key in self.seen or not (blocks := _thinking_blocks(item)):
                return b""  # its block was cut short by another item: the signature has no place left
            out = self._switch(key, THINKING_BLOCK, {"type": "thinking", "thinking": "", "signature": ""})
            if blocks[0]["thinking"]:
                self.blocks[-1]["thinking"] = blocks[0]["thinking"]
                out += self._delta({"type": "thinking_delta", "thinking": blocks[0]["thinking"]})
        if signature:
            self.blocks[-1]["signature"] = signature
            out += self._delta({"type": "signature_delta", "signature": signature})
        return out + self._end() + self._drain(promote=True)

    def _failed(self, event: dict[str, Any]) -> bytes:
        raise responses_failure((event.get("response") or {}).get("error"), f"{self.label} stream")

    def _error(self, event: dict[str, Any]) -> bytes:
        # The documented event carries code/message at the top level; some servers nest them under "error".
        raise responses_failure(
            event.get("error") if isinstance(event.get("error"), dict) else event, f"{self.label} stream"
        )


# -- Bedrock errors: HTTP answers and exception frames share one table --

# Bedrock's error type (x-amzn-ErrorType, `:exception-type`), lower-cased -> the status lynkr answers with.
BEDROCK_ERROR_STATUS = {
    "throttlingexception": 429,
    "servicequotaexceededexception": 429,
    "validationexception": 400,
    "accessdeniedexception": 403,
    "unrecognizedclientexception": 401,
    "expiredtokenexception": 401,
    "invalidsignatureexception": 401,
    "incompletesignatureexception": 401,
    "missingauthenticationtokenexception": 401,
    "resourcenotfoundexception": 404,
    "modelnotreadyexception": 503,
    "serviceunavailableexception": 503,
    "modeltimeoutexception": 504,
    "internalserverexception": 500,
    "modelstreamerrorexception": 500,
    "modelerrorexception": 500,
}


# -- The event-stream decoder (application/vnd.amazon.eventstream) --

# Header value sizes by type byte; 6 (bytes) and 7 (string) carry a u16 length instead.
EVENT_HEADER_VALUE_SIZES = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
# A frame is prelude (total length, headers length, CRC: 12 bytes), headers, payload, CRC (4 bytes).
MAX_EVENT_FRAME_BYTES = 24 * 1024 * 1024  # botocore's payload limit: anything bigger is a broken stream


def event_stream_headers(raw: bytes) -> dict[str, Any]:
    """Header name -> value: str for strings, bool for booleans, the raw bytes for the rest (not needed)."""
    headers: dict[str, Any] = {}
    pos = 0
    while pos < len(raw):
        end = pos + 1 + raw[pos]
        name, kind = raw[pos + 1 : end].decode(), raw[end]
        pos = end + 1
        if kind in (6, 7):
            size, pos = int.from_bytes(raw[pos : pos + 2], "big"), pos + 2
        else:
            size = EVENT_HEADER_VALUE_SIZES[kind]
        value = raw[pos : pos + size]
        if kind == 7:
            headers[name] = value.decode()
        else:
            headers[name] = (kind == 0) if kind < 2 else value
        pos += size
    return headers


def bedrock_stream_error(headers: dict[str, Any], payload: bytes) -> LynkrError:
    """An exception or error frame: what Bedrock would have answered with over HTTP."""
    kind = str(headers.get(":exception-type") or headers.get(":error-code") or "error")
    try:
        message = json.loads(payload).get("message") or ""
    except (ValueError, AttributeError):
        message = ""
    message = message or str(headers.get(":error-message") or payload.decode("utf-8", "replace")[:500])
    status = BEDROCK_ERROR_STATUS.get(kind.lower(), 500)
    return LynkrError(f"Amazon Bedrock stream failed ({kind}): {message}", status=status)


class EventStreamDecoder:
    """Bedrock InvokeModelWithResponseStream frames -> Anthropic SSE. Each `chunk` event carries one Anthropic
    stream event (base64 JSON), forwarded as sent; the bytes may be split anywhere between frames."""

    final = None  # as for AnthropicStreamRelay: whoever needs the message re-parses the SSE bytes

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.events = AnthropicEvents()  # only its notes: the frames carry the events already parsed

    done = property(lambda self: self.events.done)
    failed = property(lambda self: self.events.failed)
    usage = property(lambda self: self.events.usage)

    def feed(self, chunk: bytes) -> bytes:
        buffer = self.buffer
        buffer.extend(chunk)
        out: list[bytes] = []
        pos = 0
        while len(buffer) - pos >= 12:
            total, headers_length, prelude_crc = struct.unpack_from(">III", buffer, pos)
            if binascii.crc32(buffer[pos : pos + 8]) != prelude_crc:
                raise UpstreamUnavailable("Bedrock stream frame failed its CRC check (prelude)")
            if not 16 + headers_length <= total <= MAX_EVENT_FRAME_BYTES:
                raise UpstreamUnavailable(f"Bedrock sent an event-stream frame of impossible size {total}")
            if len(buffer) - pos < total:
                break
            frame = bytes(buffer[pos : pos + total])
            if binascii.crc32(frame[:-4]) != int.from_bytes(frame[-4:], "big"):
                raise UpstreamUnavailable("Bedrock stream frame failed its CRC check (message)")
            out.append(self._frame(frame[12 : 12 + headers_length], frame[12 + headers_length : -4]))
            pos += total
        del buffer[:pos]  # once per feed, and it moves only the unfinished frame: linear in the stream
        return b"".join(out)

    def flush(self) -> bytes:
        return b""  # a partial frame at EOF is an incomplete stream; the pump reports it when `done` is False

    def _frame(self, raw_headers: bytes, payload: bytes) -> bytes:
        try:
            headers = event_stream_headers(raw_headers)
        except (IndexError, KeyError, UnicodeDecodeError):
            raise UpstreamUnavailable("Bedrock sent an event-stream frame with malformed headers") from None
        message_type = headers.get(":message-type")
        if message_type in ("exception", "error"):
            raise bedrock_stream_error(headers, payload)
        if message_type != "event" or headers.get(":event-type") != "chunk":
            return b""  # other events (none today) carry nothing for the client
        try:
            text = base64.b64decode(json.loads(payload)["bytes"]).decode()
            event = json.loads(text)
            name = event["type"]
        except (ValueError, KeyError, TypeError):  # binascii.Error and UnicodeDecodeError are ValueErrors
            raise UpstreamUnavailable(f"Bedrock sent an unreadable stream chunk: {payload[:200]!r}") from None
        return self._event(name, event, text)

    def _event(self, name: str, event: dict[str, Any], text: str) -> bytes:
        self.events.note(name, event if isinstance(event, dict) else None)
        if name == "message_stop":
            event.pop("amazon-bedrock-invocationMetrics", None)  # Bedrock's own billing note, not Anthropic's
            return sse_event(name, event)
        if "\n" in text or "\r" in text:  # pretty-printed JSON would end the SSE event early
            return sse_event(name, event)
        return f"event: {name}\ndata: {text}\n\n".encode()


def error_message_from_body(raw: bytes) -> tuple[str, str]:
    """(message, code) from an upstream error body in Databricks, OpenAI, Ollama or Anthropic shape."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace").strip()[:500] or "(empty body)", ""
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        obj = obj[0]  # Gemini's compatibility layer wraps its error in a list
    if not isinstance(obj, dict):
        return str(obj)[:500], ""
    err = obj.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err), str(
            err.get("code") or err.get("type") or err.get("status") or ""
        )
    return str(obj.get("message") or err or obj)[:2000], str(obj.get("error_code") or "")


def decode_json_answer(raw: bytes, label: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except ValueError:
        raise UpstreamUnavailable(f"{label} answered with invalid JSON") from None
    if not isinstance(obj, dict):
        raise UpstreamUnavailable(f"{label} answered with an unexpected JSON value")
    return obj


async def _single_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def block_events(index: int, block: dict[str, Any]) -> bytes:
    """One complete content block as its start, delta and stop events (tool input as input_json_delta:
    Claude Code ignores input put in the start event)."""
    kind = block.get("type")
    if kind == "text":
        start, deltas = {"type": "text", "text": ""}, [{"type": "text_delta", "text": block.get("text", "")}]
    elif kind in ("tool_use", "server_tool_use"):
        start = {"type": kind, "id": block.get("id"), "name": block.get("name"), "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": json_dumps(block.get("input") or {})}]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": block.get("thinking", "")}]
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
    else:  # redacted_thinking, web_search_tool_result, ...: complete in their start event
        start, deltas = block, []
    out = [
        sse_event(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
        )
    ]
    out += [
        sse_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        for delta in deltas
    ]
    out.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return b"".join(out)


def message_to_sse(message: dict[str, Any]) -> bytes:
    """A complete Anthropic message -> the equivalent SSE event sequence (for JSON-only upstreams)."""
    usage = dict(message.get("usage") or {})
    out = [
        sse_event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    **{
                        k: v
                        for k, v in message.items()
                        if k not in ("content", "stop_reason", "stop_sequence")
                    },
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage,
                },
            },
        )
    ]
    out += [block_events(index, block) for index, block in enumerate(message.get("content") or [])]
    out.append(message_end_events(message.get("stop_reason"), message.get("stop_sequence"), usage))
    return b"".join(out)


async def errors_as_events(
    events: AsyncIterator[bytes], on_error: Callable[[LynkrError], None] | None = None
) -> AsyncIterator[bytes]:
    """A stream whose 200 is already sent reports a later failure in-band: `event: error`, then its end."""
    try:
        async for chunk in events:
            yield chunk
    except LynkrError as exc:
        if on_error is not None:
            on_error(exc)
        yield error_event(exc)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


class RoundRelay:
    """The client's one continuous stream over an agent loop's rounds (section 18). Each round's upstream
    Anthropic stream is passed on with one message_start for the whole turn (the turn's id and model),
    block indices numbered on across rounds, and the tool_use blocks lynkr runs itself (`held`) kept from
    the client; the round's complete message accumulates beside it. An upstream `event: error` is
    passed on and marks the round `failed`."""

    def __init__(self, message_id: str, model: str, held: Collection[str]) -> None:
        self.message_id, self.model, self.held = message_id, model, held
        self.started = False
        self.next_index = 0  # the client's index of the next block
        self.new_round()

    def new_round(self) -> None:
        self.events = AnthropicEvents()
        self.acc = MessageAccumulator()
        self.index_map: dict[Any, int | None] = {}  # upstream index -> client index (None: held back)

    @property
    def failed(self) -> bool:
        return self.acc.error is not None

    def message(self) -> dict[str, Any]:
        """The round's message as the upstream sent it, held blocks included."""
        return self.acc.result()

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for name, _, event in self.events.feed(chunk):
            if name == "ping":
                out.append(PING_EVENT)
            elif event is not None:
                self.acc.feed(name, event)
                relay = self.RELAYED.get(name)
                if relay is not None:
                    out.append(relay(self, name, event))
        return b"".join(out)

    def block(self, block: dict[str, Any]) -> bytes:
        """A complete block of lynkr's own (a tool-activity note, a web search and its results)."""
        self.next_index += 1
        return block_events(self.next_index - 1, block)

    def _start(self, name: str, event: dict[str, Any]) -> bytes:
        if self.started:
            return b""
        self.started = True
        usage = (event.get("message") or {}).get("usage") or dict(EMPTY_USAGE)
        return message_start_event(self.message_id, self.model, usage)

    def _block_start(self, name: str, event: dict[str, Any]) -> bytes:
        block = event.get("content_block") or {}
        if block.get("type") == "tool_use" and block.get("name") in self.held:
            self.index_map[event.get("index")] = None
            return b""
        self.index_map[event.get("index")] = self.next_index
        self.next_index += 1
        return sse_event(name, {**event, "index": self.next_index - 1})

    def _block_event(self, name: str, event: dict[str, Any]) -> bytes:
        client_index = self.index_map.get(event.get("index"))
        return b"" if client_index is None else sse_event(name, {**event, "index": client_index})

    def _error(self, name: str, event: dict[str, Any]) -> bytes:
        return sse_event("error", event)

    # message_delta and message_stop are the turn's, not a round's: the loop sends them at its end.
    RELAYED: ClassVar[dict[str, Callable[[RoundRelay, str, dict[str, Any]], bytes]]] = {
        "message_start": _start,
        "content_block_start": _block_start,
        "content_block_delta": _block_event,
        "content_block_stop": _block_event,
        "error": _error,
    }


# == 10. Providers ==
#
# Theory of operation. A provider is a row of data, not a class: a *preset* (PRESETS) names a
# vendor's URL shape, auth header, default model and quirks, and picks a *kind* (KINDS) -- the wire
# format: how an Anthropic body becomes the upstream request, how an upstream error and JSON answer
# read, which decoder (section 9) turns its stream into Anthropic SSE. Every kind shares one
# Provider with one retry loop and circuit breaker, and one pump (`Provider.pump`) for pings,
# truncation, the breaker outcome, `event: error` and usage. The Router holds several providers at
# once and picks one per request: explicit `provider,model` names, MODEL_MAP, then Claude Code
# request shapes (long context, background, web search, thinking), then the default; a fallback
# chain is tried in order before the first byte. Upstream failures become LynkrErrors here.

SSE_HEADERS = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
]
# Upstream response headers a client may act on (retry pacing, rate limits).
FORWARDED_RESPONSE_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry")
# Upstream answers worth another attempt (before any byte went to the client).
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
RETRY_BASE_DELAY_S = 0.5  # first backoff; doubles per attempt, with jitter
ROUTE_NAMES = ("default", "background", "think", "long_context", "web_search")
# `lynkr doctor` gives each provider this long to answer its one-token request.
DOCTOR_TIMEOUT_S = 20.0


def forwarded_headers(headers: dict[str, str]) -> dict[str, str]:
    picked = {name: headers[name] for name in FORWARDED_RESPONSE_HEADERS if name in headers}
    picked.update({k: v for k, v in headers.items() if k.startswith("anthropic-ratelimit-")})
    return picked


def mask_secret(secret: str) -> str:
    """Enough of a key to tell two apart, never enough to use: `dapi…(36 chars)`."""
    if not secret:
        return "(none)"
    return f"{secret[:4]}…({len(secret)} chars)" if len(secret) >= 12 else f"…({len(secret)} chars)"


class BreakerState(enum.IntEnum):
    """A circuit breaker's state; the value is what the lynkr_circuit_breaker_state gauge shows."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2

    @property
    def label(self) -> str:  # as /health shows it
        return self.name.lower().replace("_", "-")


class CircuitBreaker:
    """closed -> (N consecutive failures) -> open -> (reset time) -> half-open: one probe decides."""

    def __init__(
        self, name: str, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.threshold = failures
        self.reset_s = reset_s
        self.clock = clock
        self.failures = 0
        self.opened_at = 0.0
        self.probing = False
        self._set(BreakerState.CLOSED)

    def _set(self, state: BreakerState) -> None:
        self.state = state
        METRICS.set("lynkr_circuit_breaker_state", int(state), provider=self.name)

    def retry_in(self) -> float:
        return max(0.0, self.opened_at + self.reset_s - self.clock())

    def is_open(self) -> bool:
        return self.state is BreakerState.OPEN and self.retry_in() > 0

    def allow(self) -> bool:
        if self.threshold <= 0 or self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and self.retry_in() <= 0:
            self._set(BreakerState.HALF_OPEN)
            self.probing = False
        if self.state is BreakerState.HALF_OPEN and not self.probing:
            self.probing = True  # exactly one request probes; the others still answer at once
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.probing = False
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def failure(self) -> None:
        self.failures += 1
        self.probing = False
        if self.threshold > 0 and (self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold):
            self.opened_at = self.clock()
            self._set(BreakerState.OPEN)


def retry_after_seconds(headers: dict[str, str]) -> float | None:
    """retry-after-ms (SDK extension) or retry-after in seconds; HTTP dates are not used by these APIs."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


# -- Provider settings and vendor presets --


@dataclass(frozen=True)
class ProviderSpec:
    """One configured upstream, as the config file or the environment describe it."""

    name: str  # what routes, `provider,model` names, headers, metrics and logs call it
    preset: str  # a key of PRESETS
    base_url: str = ""
    api_key: str = ""
    model: str = ""  # default upstream model ("" -> the preset's, else the client's model name)
    api_version: str = ""  # Azure OpenAI api-version; anthropic-version for Anthropic-format kinds
    headers: tuple[tuple[str, str], ...] = ()  # extra headers on every upstream request
    models: tuple[str, ...] = ()  # more upstream models to advertise in /v1/models
    endpoint_path: str = ""  # Databricks: one pinned path for every model
    region: str = ""  # cloud kinds: Vertex location, AWS region
    project: str = ""  # Vertex: the Google Cloud project
    profile: str = ""  # Bedrock: the AWS profile (else AWS_PROFILE)
    surfaces: tuple[tuple[str, str], ...] = ()  # Bedrock: (model glob, surface), first match wins
    source: str = "environment"  # where it was defined, for error messages
    missing: str = ""  # settings still to be set before it can be used ("" when usable)


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def _pinned_or(spec: ProviderSpec, default: str) -> str:
    pinned = spec.endpoint_path
    if pinned:
        return pinned if "://" in pinned else _join(spec.base_url, pinned)
    return default


def _azure_openai_url(spec: ProviderSpec, model: str) -> str:
    if spec.api_version.lower() == "v1":  # the v1 API: one path, the deployment named in the body
        return _join(spec.base_url, "/openai/v1/chat/completions")
    deployment = urllib.parse.quote(model, safe="")
    version = urllib.parse.quote(spec.api_version, safe="")
    return _join(spec.base_url, f"/openai/deployments/{deployment}/chat/completions?api-version={version}")


def _bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")] if key else []


# -- Cloud credentials: what a request carries when a static key does not do --

GOOGLE_TOKEN_EARLY_S = 300.0  # a token is refreshed this long before it expires
GCLOUD_TOKEN_LIFETIME_S = 3300.0  # gcloud prints no expiry; its tokens live an hour
GOOGLE_METADATA_DEFAULT = "metadata.google.internal"
GOOGLE_ADC_FILE = os.path.join("~", ".config", "gcloud", "application_default_credentials.json")
GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def on_google_cloud() -> bool:
    """A GCE/GKE machine says so in its DMI product name; elsewhere the metadata server is not asked."""
    with (
        contextlib.suppress(OSError),
        open("/sys/class/dmi/id/product_name", encoding="ascii", errors="replace") as fh,
    ):
        return "Google" in fh.read()
    return False


class GoogleAccessToken:
    """A Vertex AI access token from the first source that has one, in Google's order: VERTEX_ACCESS_TOKEN /
    GOOGLE_OAUTH_ACCESS_TOKEN, the GCE/GKE metadata server, `gcloud auth print-access-token`, a
    credentials file (GOOGLE_APPLICATION_CREDENTIALS or gcloud's application-default file, through the
    optional google-auth package). Reused until GOOGLE_TOKEN_EARLY_S before it expires, fetched again
    at once after a 401 (invalidate). Tokens never reach logs."""

    def __init__(self, settings: Any, client: HTTPClient, label: str) -> None:
        self.static = settings.vertex_access_token or settings.google_oauth_access_token
        self.metadata_host = settings.gce_metadata_host
        self.credentials_file = settings.google_application_credentials
        self.client = client
        self.label = label
        self.token = ""
        self.expires = 0.0
        self.fetched_at = 0.0
        self.lock = asyncio.Lock()

    def invalidate(self, sent_at: float) -> bool:
        """Forget the token a request sent at `sent_at` was refused with -- unless a newer one was fetched
        since (a burst of 401s renews once). False when nothing fresher can be had (a fixed token)."""
        if self.fetched_at <= sent_at:
            self.token, self.expires = "", 0.0
        return not self.static

    async def headers(
        self, method: str, url: str, headers: list[tuple[str, str]], payload: bytes
    ) -> list[tuple[str, str]]:
        if self.static:
            return [("authorization", f"Bearer {self.static}")]
        async with self.lock:  # many requests at once after expiry: one fetch
            if not self.token or time.monotonic() >= self.expires - GOOGLE_TOKEN_EARLY_S:
                self.token, lifetime = await self._fetch()
                self.fetched_at = time.monotonic()
                self.expires = self.fetched_at + lifetime
        return [("authorization", f"Bearer {self.token}")]

    async def _fetch(self) -> tuple[str, float]:
        tried = []
        if self.metadata_host or on_google_cloud():
            return await self._from_metadata(self.metadata_host or GOOGLE_METADATA_DEFAULT)
        tried.append("the metadata server (not on Google Cloud; GCE_METADATA_HOST unset)")
        gcloud = shutil.which("gcloud")
        if gcloud:
            return await asyncio.get_running_loop().run_in_executor(None, self._from_gcloud, gcloud)
        tried.append("gcloud (not on PATH)")
        path = self.credentials_file or os.path.expanduser(GOOGLE_ADC_FILE)
        if self.credentials_file or os.path.isfile(path):
            return await asyncio.get_running_loop().run_in_executor(None, self._from_file, path)
        raise NotConfigured(
            f"{self.label}: no Google access token: set VERTEX_ACCESS_TOKEN, or run on Google Cloud, "
            f"or install gcloud and log in, or set GOOGLE_APPLICATION_CREDENTIALS (tried: "
            f"{'; '.join(tried)})",
            headers={"x-should-retry": "false"},
        )

    async def _from_metadata(self, host: str) -> tuple[str, float]:
        url = f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
        try:
            resp = await self.client.request(
                "GET", url, [("metadata-flavor", "Google")], connect_timeout=3, read_timeout=10
            )
            raw = await resp.read(64 * 1024)
            answer = json.loads(raw) if resp.status == 200 else {}
        except (LynkrError, ValueError) as exc:
            raise UpstreamUnavailable(
                f"{self.label}: the metadata server at {host} gave no token: {getattr(exc, 'message', exc)}"
            ) from None
        token, lifetime = answer.get("access_token"), answer.get("expires_in")
        if not isinstance(token, str) or not token:
            raise UpstreamUnavailable(
                f"{self.label}: the metadata server at {host} answered HTTP {resp.status} without a token"
            )
        return token, float(lifetime) if isinstance(lifetime, (int, float)) else GCLOUD_TOKEN_LIFETIME_S

    def _from_gcloud(self, gcloud: str) -> tuple[str, float]:
        try:
            done = subprocess.run(
                [gcloud, "auth", "print-access-token"],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UpstreamUnavailable(f"{self.label}: gcloud auth print-access-token failed: {exc}") from None
        token = done.stdout.strip()
        if done.returncode != 0 or not token or "\n" in token:
            raise UpstreamUnavailable(
                f"{self.label}: gcloud auth print-access-token exited {done.returncode}: "
                f"{done.stderr.strip()[-300:]}"
            )
        return token, GCLOUD_TOKEN_LIFETIME_S

    def _from_file(self, path: str) -> tuple[str, float]:
        try:  # lazily: an optional extra, needed only for credentials files
            import google.auth
            import google.auth.transport.requests
        except ImportError:
            raise NotConfigured(
                f"{self.label}: a credentials file ({path}) needs the google-auth package: "
                "pip install 'lynkr[vertex]'",
                headers={"x-should-retry": "false"},
            ) from None
        try:
            creds, _project = google.auth.load_credentials_from_file(path, scopes=[GOOGLE_SCOPE])
            creds.refresh(google.auth.transport.requests.Request())
        except Exception as exc:  # noqa: BLE001 -- google-auth raises its own family; the message says what failed
            raise UpstreamUnavailable(
                f"{self.label}: the credentials in {path} gave no token: {exc}"
            ) from None
        expiry = getattr(creds, "expiry", None)
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # google-auth's expiry is naive UTC
        lifetime = (expiry - now).total_seconds() if expiry else GCLOUD_TOKEN_LIFETIME_S
        return creds.token, max(lifetime, 60.0)


# -- AWS credentials: environment, then the shared credentials file, then the config file --


@dataclass(frozen=True)
class AwsCredentials:
    access_key: str
    secret_key: str
    session_token: str = ""
    source: str = ""  # where they came from, for `lynkr doctor` and error messages


def _aws_file(environ: dict[str, str], variable: str, default: str) -> str:
    """The file a variable names, or the default under HOME; `~` expands against environ, not os.environ."""
    path = environ.get(variable) or default
    return environ.get("HOME", "") + path[1:] if path.startswith("~") else path


def _profile_section(path: str, section: str) -> dict[str, str] | None:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")  # a missing file reads as empty
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot parse {path}: {exc}") from None
    return dict(parser[section]) if parser.has_section(section) else None


def _credential_pair(
    key_id: str, secret: str, token: str, names: tuple[str, str], where: str, source: str
) -> AwsCredentials | None:
    """Both halves or neither: one without the other is a mistake worth stopping for."""
    if key_id and secret:
        return AwsCredentials(key_id, secret, token, source)
    if key_id or secret:
        present, missing = names if key_id else names[::-1]
        raise ValueError(f"{present} is set{where} but {missing} is not")
    return None


def _profile_sections(environ: dict[str, str]) -> list[tuple[str, dict[str, str] | None]]:
    """(source, keys) of the profile in the credentials file ([NAME]), then the config file ([profile NAME])."""
    profile = environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE") or "default"
    credentials = _aws_file(environ, "AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
    config = _aws_file(environ, "AWS_CONFIG_FILE", "~/.aws/config")
    config_section = "default" if profile == "default" else f"profile {profile}"
    sections = [
        (f"{credentials} [{profile}]", _profile_section(credentials, profile)),
        (f"{config} [{config_section}]", _profile_section(config, config_section)),
    ]
    if profile != "default" and all(keys is None for _, keys in sections):
        raise ValueError(
            f"AWS_PROFILE names profile {profile!r}, which neither {credentials} nor {config} has"
        )
    return sections


def aws_credentials(environ: dict[str, str]) -> AwsCredentials | None:
    """The static credentials botocore would find first; None when there are none (SSO, roles: not here)."""
    found = _credential_pair(
        environ.get("AWS_ACCESS_KEY_ID", ""),
        environ.get("AWS_SECRET_ACCESS_KEY", ""),
        environ.get("AWS_SESSION_TOKEN", ""),
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
        " in the environment",
        "environment",
    )
    for source, keys in [] if found else _profile_sections(environ):
        keys = keys or {}
        found = _credential_pair(
            keys.get("aws_access_key_id", ""),
            keys.get("aws_secret_access_key", ""),
            keys.get("aws_session_token", ""),
            ("aws_access_key_id", "aws_secret_access_key"),
            f" in {source}",
            source,
        )
        if found:
            break
    return found


def aws_region(environ: dict[str, str]) -> str:
    """AWS_REGION, AWS_DEFAULT_REGION, then the profile's `region` in the config file; "" when none."""
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    profile = environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE") or "default"
    config = _aws_file(environ, "AWS_CONFIG_FILE", "~/.aws/config")
    keys = _profile_section(config, "default" if profile == "default" else f"profile {profile}") or {}
    return keys.get("region", "").strip()


# -- Signature Version 4 (what botocore's SigV4Auth does for every service but S3) --

# Headers a proxy or the connection may change on the way: botocore leaves them out, and so do we.
SIGV4_UNSIGNED_HEADERS = frozenset(
    {
        "authorization",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _url_host(parts: urllib.parse.SplitResult) -> str:
    """The Host header lynkr's client sends for this URL: lower-case, the port only when not the default."""
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    default_port = 443 if parts.scheme == "https" else 80
    return host if parts.port in (None, default_port) else f"{host}:{parts.port}"


def _canonical_query(query: str) -> str:
    """Each name and value percent-encoded once (decoded first, so an encoded URL is not encoded twice), sorted."""

    def encode(text: str) -> str:
        return urllib.parse.quote(urllib.parse.unquote(text), safe="-_.~")

    pairs = sorted(
        (encode(name), encode(value))
        for name, _, value in (pair.partition("=") for pair in query.split("&") if pair)
    )
    return "&".join(f"{name}={value}" for name, value in pairs)


def sigv4_authorization(
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    payload_hash: str,
    creds: AwsCredentials,
    region: str,
    service: str,
    amz_date: str,
) -> str:
    """The Authorization header for a request whose headers (x-amz-date included) are all given."""
    parts = urllib.parse.urlsplit(url)
    signed: dict[str, list[str]] = {}
    for name, value in headers:
        if name.lower() not in SIGV4_UNSIGNED_HEADERS:
            signed.setdefault(name.lower(), []).append(" ".join(value.split()))
    signed.setdefault("host", [_url_host(parts)])
    names = sorted(signed)
    canonical = "\n".join(
        [
            method.upper(),
            # The path as sent, encoded again: `%3A` in a Bedrock model id is signed as `%253A` (not S3's rule).
            urllib.parse.quote(parts.path or "/", safe="/~"),
            _canonical_query(parts.query),
            "".join(f"{name}:{','.join(signed[name])}\n" for name in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    string_to_sign = (
        f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    )
    key = ("AWS4" + creds.secret_key).encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, SignedHeaders={';'.join(names)}, "
        f"Signature={signature}"
    )


def sigv4_headers(
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    payload: bytes,
    creds: AwsCredentials,
    region: str,
    service: str,
    now: datetime.datetime,
) -> list[tuple[str, str]]:
    """The headers to add to a request so AWS accepts it: every given header and the host are signed."""
    amz_date = (now if now.tzinfo is None else now.astimezone(datetime.UTC)).strftime("%Y%m%dT%H%M%SZ")
    payload_hash = hashlib.sha256(payload).hexdigest()
    added = [("x-amz-date", amz_date), ("x-amz-content-sha256", payload_hash)]
    if creds.session_token:
        added.append(("x-amz-security-token", creds.session_token))
    authorization = sigv4_authorization(
        method, url, [*headers, *added], payload_hash, creds, region, service, amz_date
    )
    return [*added, ("authorization", authorization)]


def bedrock_error(status: int, raw: bytes, headers: dict[str, str]) -> LynkrError:
    """An HTTP error from Bedrock: its type from x-amzn-ErrorType (or the body's __type), its message from the body."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    kind = next((v for k, v in headers.items() if k.lower() == "x-amzn-errortype"), "") or str(
        body.get("__type", "")
    )
    kind = kind.split(":")[0].rpartition("#")[2]  # "ThrottlingException:http://..." or "com.amazon...#Type"
    message = str(
        body.get("message")
        or body.get("Message")
        or raw.decode("utf-8", "replace").strip()[:500]
        or "(empty body)"
    )
    status_out = BEDROCK_ERROR_STATUS.get(kind.lower(), status if 400 <= status <= 599 else 502)
    return LynkrError(
        f"Amazon Bedrock returned HTTP {status} {kind or 'error'}: {message}",
        status=status_out,
        headers=forwarded_headers(headers),
    )


def _vertex_host(spec: ProviderSpec) -> str:
    if spec.base_url:
        return spec.base_url
    return (
        "https://aiplatform.googleapis.com"
        if spec.region == "global"
        else f"https://{spec.region}-aiplatform.googleapis.com"
    )


def _vertex_url(spec: ProviderSpec, model: str, verb: str = "rawPredict") -> str:
    project, region = urllib.parse.quote(spec.project, safe=""), urllib.parse.quote(spec.region, safe="")
    return _join(
        _vertex_host(spec),
        f"/v1/projects/{project}/locations/{region}/publishers/anthropic/models/"
        f"{urllib.parse.quote(model, safe='@')}:{verb}",
    )


def _vertex_env(s: Any) -> tuple[dict[str, Any], list[str]]:
    project = s.google_cloud_project or s.anthropic_vertex_project_id
    region = s.cloud_ml_region or s.vertex_region
    missing = [
        name
        for name, value in (
            ("GOOGLE_CLOUD_PROJECT (or ANTHROPIC_VERTEX_PROJECT_ID)", project),
            ("CLOUD_ML_REGION (or VERTEX_REGION)", region),
        )
        if not value
    ]
    return {
        "project": project,
        "region": region,
        "base_url": s.vertex_base_url,
        "api_version": s.azure_anthropic_version,
    }, missing


# Bedrock serves Claude on two surfaces: InvokeModel (ARN-versioned and cross-region ids, event-stream
# answers) and the Messages API (newer models; on bedrock-mantle, or on bedrock-runtime). First match wins,
# after a provider's own `surfaces` and BEDROCK_SURFACE.
BEDROCK_SURFACES: tuple[tuple[str, str], ...] = (
    ("arn:*", "invoke"),
    ("*anthropic.claude*", "invoke"),
    ("*", "messages"),
)
BEDROCK_SIGNING_SERVICE = "bedrock"


def bedrock_surface(spec: ProviderSpec, model: str) -> str:
    return next(
        surface for glob, surface in (*spec.surfaces, *BEDROCK_SURFACES) if fnmatch.fnmatchcase(model, glob)
    )


def _bedrock_base(spec: ProviderSpec, surface: str) -> str:
    if spec.base_url:
        return spec.base_url
    return (
        f"https://bedrock-mantle.{spec.region}.api.aws"
        if surface == "messages"
        else f"https://bedrock-runtime.{spec.region}.amazonaws.com"
    )


def _bedrock_url(spec: ProviderSpec, model: str, stream: bool) -> str:
    surface = bedrock_surface(spec, model)
    if surface != "invoke":
        return _join(_bedrock_base(spec, surface), "/anthropic/v1/messages")
    # the model id is one path segment: `:` and `/` (in an ARN) percent-encoded, as botocore does
    action = "invoke-with-response-stream" if stream else "invoke"
    return _join(_bedrock_base(spec, surface), f"/model/{urllib.parse.quote(model, safe='')}/{action}")


def aws_environ(settings: Any, profile: str = "") -> dict[str, str]:
    """The AWS variables lynkr read (environment, .env, lynkr.toml) in the names AWS tools use."""
    names = (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
    )
    environ = {name: getattr(settings, name.lower()) for name in names if getattr(settings, name.lower())}
    if profile:
        environ["AWS_PROFILE"] = profile
    environ["HOME"] = os.environ.get("HOME") or os.path.expanduser("~")
    return environ


class AwsAuth:
    """What authorizes a Bedrock request: a Bedrock API key as a bearer token, else a SigV4 signature
    over the exact bytes sent (credentials from the environment, else the profile files)."""

    def __init__(self, provider: Any) -> None:
        spec, settings = provider.spec, provider.cfg.settings
        self.bearer = spec.api_key or settings.aws_bearer_token_bedrock
        self.environ = aws_environ(settings, spec.profile)
        self.region = spec.region
        self.label = provider.label
        try:
            self.creds = None if self.bearer else aws_credentials(self.environ)
        except ValueError as exc:  # a half-set key pair, a profile that does not exist
            raise ConfigError(f"{self.label}: {exc}") from None

    def invalidate(self, sent_at: float) -> bool:
        """Read the credentials again (a profile refreshed by `aws sso login`); True when they changed."""
        if self.bearer:
            return False
        fresh = aws_credentials(self.environ)
        changed = fresh != self.creds
        self.creds = fresh
        return changed

    async def headers(
        self, method: str, url: str, headers: list[tuple[str, str]], payload: bytes
    ) -> list[tuple[str, str]]:
        if self.bearer:
            return [("authorization", f"Bearer {self.bearer}")]
        if self.creds is None:
            raise NotConfigured(
                f"{self.label}: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or AWS_PROFILE (~/.aws/credentials), or AWS_BEARER_TOKEN_BEDROCK",
                headers={"x-should-retry": "false"},
            )
        return sigv4_headers(
            method,
            url,
            headers,
            payload,
            self.creds,
            self.region,
            BEDROCK_SIGNING_SERVICE,
            datetime.datetime.now(datetime.UTC),
        )


def _bedrock_env(s: Any) -> tuple[dict[str, Any], list[str]]:
    environ = aws_environ(s)
    try:
        region = aws_region(environ)
        creds = None if s.aws_bearer_token_bedrock else aws_credentials(environ)
    except (
        ValueError
    ) as exc:  # a half-set pair or a profile that does not exist: a setting present but invalid
        raise ConfigError(str(exc)) from None
    missing = []
    if not region:
        missing.append("AWS_REGION (or AWS_DEFAULT_REGION, or a region in the AWS profile)")
    if not s.aws_bearer_token_bedrock and creds is None:
        missing.append(
            "AWS credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or "
            "AWS_BEARER_TOKEN_BEDROCK)"
        )
    surfaces = (("*", s.bedrock_surface),) if s.bedrock_surface != "auto" else ()
    return {
        "region": region,
        "base_url": s.aws_bedrock_endpoint,
        "api_key": s.aws_bearer_token_bedrock,
        "surfaces": surfaces,
        "api_version": BEDROCK_MESSAGES_VERSION,
    }, missing


@dataclass(frozen=True)
class Preset:
    """A vendor: its kind, where requests go, how they authenticate, and the settings that configure it
    from the environment alone (MODEL_PROVIDER=<preset>)."""

    kind: str  # a key of KINDS
    label: str
    url: Callable[[ProviderSpec, str], str]  # (spec, upstream model) -> URL of the Messages/chat call
    auth: Callable[[str], list[tuple[str, str]]]
    base_env: str  # the base URL (or endpoint) variable
    key_env: str = ""  # the key variable ("" when the vendor needs none)
    base_default: str = ""  # "" when the user must name the endpoint
    default_model: str = ""  # "" sends the client's model name
    key_required: bool = True
    dialect: OpenAIDialect = OpenAIDialect()
    model_env: str = ""  # a variable naming the default model (Azure OpenAI's deployment)
    version_env: str = ""
    version_default: str = ""
    server_tools: bool = False  # runs Anthropic's server tools itself (web search); elsewhere lynkr runs them
    stream_url: Callable[[ProviderSpec, str], str] | None = (
        None  # when streaming goes elsewhere (Vertex, Bedrock)
    )
    count_url: Callable[[ProviderSpec, str], str] | None = (
        None  # the upstream's own token count (Anthropic-like)
    )
    # (provider) -> what signs or authorizes each request when a static key cannot (a cloud token, SigV4)
    credentials: Callable[[Any], Any] | None = None
    # (settings) -> (ProviderSpec fields, variables still missing) for presets a base URL and key do not describe
    from_env: Callable[[Any], tuple[dict[str, Any], list[str]]] | None = None
    needs: str = ""  # what to set, when it is not a base URL and a key


PRESETS: dict[str, Preset] = {
    "databricks": Preset(
        "openai",
        "Databricks",
        lambda s, m: _pinned_or(
            s, _join(s.base_url, f"/serving-endpoints/{urllib.parse.quote(m, safe='')}/invocations")
        ),
        _bearer,
        "DATABRICKS_API_BASE",
        "DATABRICKS_API_KEY",
        default_model="databricks-claude-sonnet-4-5",
        dialect=DATABRICKS_DIALECT,
    ),
    # Databricks AI Gateway's native Anthropic surface (DATABRICKS_API_FORMAT=anthropic): lossless for Claude.
    "databricks-anthropic": Preset(
        "anthropic",
        "Databricks",
        lambda s, m: _pinned_or(s, _join(s.base_url, "/ai-gateway/anthropic/v1/messages")),
        _bearer,
        "DATABRICKS_API_BASE",
        "DATABRICKS_API_KEY",
        default_model="databricks-claude-sonnet-4-5",
    ),
    "azure-anthropic": Preset(
        "anthropic",
        "Azure Anthropic",
        lambda s, m: s.base_url if s.base_url.endswith("/v1/messages") else _join(s.base_url, "/v1/messages"),
        # The SDK sends api-key, LiteLLM and Microsoft samples x-api-key: both are accepted.
        lambda k: [("x-api-key", k), ("api-key", k)],
        "AZURE_ANTHROPIC_ENDPOINT",
        "AZURE_ANTHROPIC_API_KEY",
        default_model="claude-sonnet-4-5",
    ),
    "anthropic": Preset(
        "anthropic",
        "Anthropic",
        lambda s, m: _join(s.base_url, "/v1/messages"),
        lambda k: [("x-api-key", k)],
        "LYNKR_ANTHROPIC_BASE_URL",
        "LYNKR_ANTHROPIC_API_KEY",
        base_default="https://api.anthropic.com",
        server_tools=True,
    ),
    # Claude on Amazon Bedrock: InvokeModel (event-stream) or the Messages API, per model; SigV4 or an API key.
    "bedrock": Preset(
        "bedrock",
        "Amazon Bedrock",
        lambda s, m: _bedrock_url(s, m, False),
        lambda k: [],
        "AWS_BEDROCK_ENDPOINT",
        key_required=False,
        default_model="us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        stream_url=lambda s, m: _bedrock_url(s, m, True),
        credentials=AwsAuth,
        from_env=_bedrock_env,
        needs="AWS_REGION and AWS credentials or AWS_BEARER_TOKEN_BEDROCK",
    ),
    # Claude on Google Vertex AI: Anthropic Messages with the model in the URL, a Google access token.
    "vertex": Preset(
        "vertex",
        "Vertex AI",
        _vertex_url,
        lambda k: [],
        "VERTEX_BASE_URL",
        key_required=False,
        default_model="claude-sonnet-4-5@20250929",
        stream_url=lambda s, m: _vertex_url(s, m, "streamRawPredict"),
        count_url=lambda s, m: _vertex_url(s, "count-tokens"),
        credentials=lambda p: GoogleAccessToken(p.cfg.settings, p.client, p.label),
        from_env=_vertex_env,
        needs="GOOGLE_CLOUD_PROJECT and CLOUD_ML_REGION; a token from gcloud, the metadata server or VERTEX_ACCESS_TOKEN",
    ),
    "openai": Preset(
        "openai",
        "OpenAI",
        lambda s, m: _join(s.base_url, "/chat/completions"),
        _bearer,
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        base_default="https://api.openai.com/v1",
        default_model="gpt-5",
        dialect=OpenAIDialect(strict_tools=True),
    ),
    # OpenAI's Responses API (its newest coding models are served there only), stateless (store: false)
    "openai-responses": Preset(
        "openai-responses",
        "OpenAI Responses",
        lambda s, m: _join(s.base_url, "/responses"),
        _bearer,
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        base_default="https://api.openai.com/v1",
        default_model="gpt-5",
        dialect=OpenAIDialect(strict_tools=True, thinking="effort"),
    ),
    "azure-openai-responses": Preset(
        "openai-responses",
        "Azure OpenAI Responses",
        lambda s, m: _join(s.base_url, "/openai/v1/responses"),
        lambda k: [("api-key", k)],
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_API_KEY",
        model_env="AZURE_OPENAI_DEPLOYMENT",
        dialect=OpenAIDialect(strict_tools=True),
    ),
    "azure-openai": Preset(
        "openai",
        "Azure OpenAI",
        _azure_openai_url,
        lambda k: [("api-key", k)],
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_API_KEY",
        model_env="AZURE_OPENAI_DEPLOYMENT",
        version_env="AZURE_OPENAI_API_VERSION",
        version_default="2024-10-21",
        dialect=OpenAIDialect(strict_tools=True),
    ),
    "openrouter": Preset(
        "openai",
        "OpenRouter",
        lambda s, m: _join(s.base_url, "/chat/completions"),
        _bearer,
        "OPENROUTER_BASE_URL",
        "OPENROUTER_API_KEY",
        base_default="https://openrouter.ai/api/v1",
        default_model="anthropic/claude-sonnet-4.5",
        dialect=OpenAIDialect(cache_markers=True, thinking="openrouter", top_k=True),
    ),
    "ollama": Preset(
        "openai",
        "Ollama",
        lambda s, m: _join(s.base_url, "/v1/chat/completions"),
        _bearer,
        "OLLAMA_BASE_URL",
        base_default="http://127.0.0.1:11434",
        default_model="qwen2.5-coder:7b",
        key_required=False,
    ),
    "gemini": Preset(
        "openai",
        "Gemini",
        lambda s, m: _join(s.base_url, "/chat/completions"),
        _bearer,
        "GEMINI_BASE_URL",
        "GEMINI_API_KEY",
        base_default="https://generativelanguage.googleapis.com/v1beta/openai",
        default_model="gemini-2.5-pro",
        dialect=OpenAIDialect(schema="gemini", thinking="effort"),
    ),
    # vLLM, llama.cpp's llama-server, LM Studio, LocalAI...: the key only when the server asks for one.
    "openai-compatible": Preset(
        "openai",
        "OpenAI-compatible server",
        lambda s, m: _join(s.base_url, "/chat/completions"),
        _bearer,
        "OPENAI_COMPATIBLE_BASE_URL",
        "OPENAI_COMPATIBLE_API_KEY",
        key_required=False,
        dialect=OpenAIDialect(top_k=True),
    ),
}
# Names a config file's `kind` may use: the presets, plus the two kinds by their wire format.
KIND_ALIASES = {"openai-chat": "openai-compatible", "anthropic-messages": "anthropic"}


def provider_env_spec(
    preset_name: str, settings: Any, name: str | None = None, model: str = ""
) -> ProviderSpec:
    """The provider MODEL_PROVIDER (or FALLBACK_PROVIDER) names, from the environment alone."""
    if preset_name == "databricks" and settings.databricks_api_format == "anthropic":
        preset_name_used = "databricks-anthropic"
    else:
        preset_name_used = preset_name
    preset = PRESETS[preset_name_used]
    if preset.from_env is not None:
        fields, missing_vars = preset.from_env(settings)
        return ProviderSpec(
            name=name or preset_name,
            preset=preset_name_used,
            model=model or fields.pop("model", ""),
            missing=" and ".join(missing_vars),
            **fields,
        )
    base_raw = getattr(settings, preset.base_env.lower())
    key = getattr(settings, preset.key_env.lower()) if preset.key_env else ""
    if not preset.base_default and bool(base_raw) != bool(key) and preset.key_required:
        if not base_raw:
            raise ConfigError(
                f"{preset.base_env} must be set when {preset.key_env} is (e.g. https://host.example.com)"
            )
        raise ConfigError(f"{preset.key_env} must be set when {preset.base_env} is")
    missing = [
        var
        for var, needed in (
            (preset.base_env, not (base_raw or preset.base_default)),
            (preset.key_env, preset.key_required and not key),
        )
        if needed
    ]
    version = getattr(settings, preset.version_env.lower()) if preset.version_env else ""
    if preset.kind == "anthropic":
        version = settings.azure_anthropic_version
    default_model = model or (getattr(settings, preset.model_env.lower()) if preset.model_env else "")
    if preset.model_env and not default_model and not model and not missing:
        missing.append(f"{preset.model_env} (or MODEL_DEFAULT)")
    return ProviderSpec(
        name=name or preset_name,
        preset=preset_name_used,
        base_url=base_raw or preset.base_default,
        api_key=key,
        model=default_model,
        api_version=version or preset.version_default,
        endpoint_path=settings.databricks_endpoint_path if preset_name == "databricks" else "",
        missing=" and ".join(missing),
    )


# -- Kinds: the wire formats --


@dataclass(frozen=True)
class Kind:
    """One wire format: request building, error and answer reading, stream decoding."""

    build: Callable[
        [Provider, dict[str, Any], str, int, bool, Request], tuple[list[tuple[str, str]], dict[str, Any]]
    ]
    error: Callable[[Provider, int, bytes, dict[str, str]], LynkrError]
    read: Callable[[Provider, bytes, dict[str, Any]], tuple[dict[str, Any], bytes | None]]
    decoder: Callable[[Provider, dict[str, Any], str], Any]  # (provider, request, response content type)
    # the upstream's own token count when it is not Anthropic's count_tokens ((provider, request, model) -> count)
    count: Callable[[Provider, dict[str, Any], str], Awaitable[int | None]] | None = None


def _log_dropped(p: Provider, http_req: Request, dropped: list[str]) -> None:
    if dropped:
        p.log.info(
            "dropped server tools the upstream cannot run",
            request_id=http_req.request_id,
            tools=dropped,
            provider=p.name,
        )


def _openai_build(
    p: Provider, req: dict[str, Any], model: str, max_tokens: int, stream: bool, http_req: Request
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    body, dropped = anthropic_to_openai(
        {**req, "stream": stream}, max_tokens, model, p.preset.dialect, model_facts(model)
    )
    _log_dropped(p, http_req, dropped)
    left_out = [k for k in req if not OPENAI_FIELD_FATE.get(k, "").startswith("carried")]
    if left_out:
        p.log.debug(
            "fields an OpenAI-format upstream has no counterpart for were left out",
            request_id=http_req.request_id,
            provider=p.name,
            fields=left_out,
        )
    return [], body


def _openai_error(p: Provider, status: int, raw: bytes, headers: dict[str, str]) -> LynkrError:
    message, code = error_message_from_body(raw)
    extra = forwarded_headers(headers)
    if status in (400, 401, 403, 404, 413) and "x-should-retry" not in extra:
        extra["x-should-retry"] = "false"  # retrying cannot fix these; spare Claude Code its 3-minute loop
    status_out = status if 400 <= status <= 599 else 502
    detail = f" {code}" if code else ""
    return LynkrError(
        f"{p.label} returned HTTP {status}{detail}: {message}", status=status_out, headers=extra
    )


def _openai_read(p: Provider, raw: bytes, req: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    obj = decode_json_answer(raw, p.label)
    if "error" in obj and not obj.get("choices"):
        message, code = error_message_from_body(raw)
        raise LynkrError(f"{p.label} failed{f' ({code})' if code else ''}: {message}", status=502)
    return openai_to_anthropic(obj, req["model"], list(req.get("stop_sequences") or [])), None


# Betas that exist for one request field: when lynkr leaves the field out (a tool loop continued with
# thinking off loses context_management), the beta goes too -- never one of a pair without the other.
BETA_FIELDS = {"context-management-": "context_management"}


def betas_for(body: dict[str, Any], betas: str) -> str:
    named = [b for b in (b.strip() for b in betas.split(",")) if b]
    kept = [
        b
        for b in named
        if not any(b.startswith(prefix) and field not in body for prefix, field in BETA_FIELDS.items())
    ]
    return betas if len(kept) == len(named) else ",".join(kept)  # unchanged: as the client wrote it


def _anthropic_messages(p: Provider, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if p.preset.server_tools:
        return messages
    # earlier web searches lynkr ran: an upstream without server tools would refuse their blocks
    return [
        m
        if m.get("role") != "assistant" or (text := server_blocks_as_text(m["content"])) is m["content"]
        else {**m, "content": text}
        for m in messages
    ]


def _responses_build(
    p: Provider, req: dict[str, Any], model: str, max_tokens: int, stream: bool, http_req: Request
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    body, dropped = anthropic_to_responses(
        {**req, "stream": stream}, max_tokens, model, p.preset.dialect, model_facts(model)
    )
    _log_dropped(p, http_req, dropped)
    return [], body


def _responses_read(p: Provider, raw: bytes, req: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    return responses_to_anthropic(decode_json_answer(raw, p.label), req["model"], p.label), None


def _anthropic_build(
    p: Provider, req: dict[str, Any], model: str, max_tokens: int, stream: bool, http_req: Request
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    body = {
        **req,
        "model": model,
        "max_tokens": max_tokens,
        "messages": _anthropic_messages(p, req["messages"]),
    }
    thinking = body.get("thinking")
    if (
        isinstance(thinking, dict)
        and isinstance(thinking.get("budget_tokens"), int)
        and thinking["budget_tokens"] >= max_tokens
    ):
        # A budget must stay below max_tokens; clamping max_tokens must not turn the request into a 400.
        if max_tokens - 1 >= MIN_THINKING_BUDGET:
            body["thinking"] = {**thinking, "budget_tokens": max_tokens - 1}
        else:
            body.pop("thinking")
    body["stream"] = stream
    return p.anthropic_headers(http_req, body), body


VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"


def _vertex_build(
    p: Provider, req: dict[str, Any], model: str, max_tokens: int, stream: bool, http_req: Request
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Anthropic Messages for Vertex: the model moves into the URL, the API version into the body."""
    headers, body = _anthropic_build(p, req, model, max_tokens, stream, http_req)
    body.pop("model", None)
    body["anthropic_version"] = VERTEX_ANTHROPIC_VERSION
    return [h for h in headers if h[0] != "anthropic-version"], body


BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
BEDROCK_MESSAGES_VERSION = "2023-06-01"  # what the Messages surface accepts (newer SDK defaults are refused)
EVENT_STREAM_TYPE = "application/vnd.amazon.eventstream"


def _bedrock_build(
    p: Provider, req: dict[str, Any], model: str, max_tokens: int, stream: bool, http_req: Request
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """One Anthropic body, shaped for the surface that serves this model (bedrock_surface)."""
    headers, body = _anthropic_build(p, req, model, max_tokens, stream, http_req)
    surface = bedrock_surface(p.spec, model)
    if surface == "messages":  # the Messages API on bedrock-mantle: Anthropic's own shape
        return [(n, BEDROCK_MESSAGES_VERSION if n == "anthropic-version" else v) for n, v in headers], body
    body["anthropic_version"] = BEDROCK_ANTHROPIC_VERSION
    kept = [h for h in headers if h[0] != "anthropic-version"]
    if surface == "runtime-messages":
        return kept, body
    # InvokeModel: the model is in the URL, the stream is the URL's choice, betas are a body list; its
    # answers are JSON, or event-stream frames (an HTTP Accept names the inference body's type there)
    betas = [b.strip() for b in dict(kept).get("anthropic-beta", "").split(",") if b.strip()]
    body.pop("model", None)
    body.pop("stream", None)
    if betas:
        body["anthropic_beta"] = betas
    accept = ("accept", EVENT_STREAM_TYPE if stream else "application/json")
    return [*(h for h in kept if h[0] != "anthropic-beta"), accept], body


def _bedrock_error(p: Provider, status: int, raw: bytes, headers: dict[str, str]) -> LynkrError:
    """The Messages surface answers Anthropic errors; InvokeModel answers AWS ones (x-amzn-ErrorType)."""
    with contextlib.suppress(ValueError):
        obj = json.loads(raw)
        if isinstance(obj, dict) and obj.get("type") == "error":
            return _anthropic_error(p, status, raw, headers)
    error = bedrock_error(status, raw, headers)
    if error.status in (400, 401, 403, 404):
        error.headers.setdefault("x-should-retry", "false")
    return error


def _bedrock_read(p: Provider, raw: bytes, req: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    message = decode_json_answer(raw, p.label)
    if message.get("model"):
        return message, raw
    return {**message, "model": req["model"]}, None  # InvokeModel's answer names no model


async def _bedrock_count(p: Provider, req: dict[str, Any], model: str) -> int | None:
    """Bedrock's CountTokens operation (InvokeModel surfaces: the invoke body, base64, inside `input`); the
    Messages surface counts at /anthropic/v1/messages/count_tokens."""
    http_req = Request("POST", "", {}, {}, b"", "")
    headers, body = _bedrock_build(
        p,
        {**req, "max_tokens": req.get("max_tokens") or 1},
        model,
        int(req.get("max_tokens") or 1),
        False,
        http_req,
    )
    surface = bedrock_surface(p.spec, model)
    if surface == "messages":
        body = {
            k: v
            for k, v in body.items()
            if k in ("model", "messages", "system", "tools", "tool_choice", "thinking")
        }
        url = _bedrock_url(p.spec, model, False) + "/count_tokens"
        read: Callable[[Any], Any] = lambda obj: obj.get("input_tokens")
    else:
        body.pop("anthropic_beta", None)
        invoke = base64.b64encode(upstream_json(body)).decode()
        body = {"input": {"invokeModel": {"body": invoke}}}
        url = _join(
            _bedrock_base(p.spec, "invoke"), f"/model/{urllib.parse.quote(model, safe='')}/count-tokens"
        )
        read = lambda obj: obj.get("inputTokens")
    resp, _renewed = await p.post_renewing(url, headers, body, False)
    raw = await resp.read(MAX_UPSTREAM_ERROR_BYTES)
    if resp.status != 200:
        p.log.info("Bedrock CountTokens unavailable; estimating", status=resp.status, provider=p.name)
        return None
    with contextlib.suppress(ValueError, AttributeError):
        count = read(json.loads(raw))
        if isinstance(count, int):
            return count
    return None


def _anthropic_error(p: Provider, status: int, raw: bytes, headers: dict[str, str]) -> LynkrError:
    message, code = error_message_from_body(raw)
    try:  # an Anthropic error body passes unchanged (Claude Code matches its wording); a gateway's own
        obj = json.loads(raw)  # (Google's, Azure's) becomes lynkr's Anthropic-shaped one
        passthrough = (
            raw
            if isinstance(obj, dict) and obj.get("type") == "error" and isinstance(obj.get("error"), dict)
            else None
        )
    except ValueError:
        passthrough = None
    status_out = status if 400 <= status <= 599 else 502
    error = LynkrError(
        f"{p.label}: {message}", status=status_out, headers=forwarded_headers(headers), raw_body=passthrough
    )
    if code == "overloaded_error":  # the body's type decides how Claude Code retries, whatever the status
        error.error_type = code
    return error


def _anthropic_read(p: Provider, raw: bytes, req: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    return decode_json_answer(raw, p.label), raw  # the upstream's own bytes pass unchanged


ANTHROPIC_FORMAT_KINDS = frozenset(
    {"anthropic", "vertex", "bedrock"}
)  # Claude's own format: signatures, count
KINDS: dict[str, Kind] = {
    "openai": Kind(
        _openai_build,
        _openai_error,
        _openai_read,
        lambda p, req, ct: OpenAIStreamDecoder(req["model"], list(req.get("stop_sequences") or []), p.label),
    ),
    "anthropic": Kind(
        _anthropic_build, _anthropic_error, _anthropic_read, lambda p, req, ct: AnthropicStreamRelay()
    ),
    "vertex": Kind(
        _vertex_build, _anthropic_error, _anthropic_read, lambda p, req, ct: AnthropicStreamRelay()
    ),
    # OpenAI's Responses API: its error envelope is Chat Completions' ({"error": {...}})
    "openai-responses": Kind(
        _responses_build,
        _openai_error,
        _responses_read,
        lambda p, req, ct: ResponsesStreamDecoder(req["model"], p.label),
    ),
    # Amazon Bedrock: InvokeModel streams AWS event-stream frames, its Messages API streams Anthropic SSE
    "bedrock": Kind(
        _bedrock_build,
        _bedrock_error,
        _bedrock_read,
        lambda p, req, ct: EventStreamDecoder() if EVENT_STREAM_TYPE in ct else AnthropicStreamRelay(),
        count=_bedrock_count,
    ),
}


# -- One provider: retries, breaker, the pump --


class FirstFrameError(Exception):
    """A stream that failed in its first frame: nothing reached the client, so it may be retried."""

    def __init__(self, error: LynkrError) -> None:
        super().__init__(error.message)
        self.error = error


class Provider:
    """One configured upstream (a ProviderSpec with its preset and kind) and its own breaker."""

    def __init__(self, spec: ProviderSpec, cfg: Config, client: HTTPClient, log: Logger) -> None:
        self.spec = spec
        self.name = spec.name
        self.preset = PRESETS[spec.preset]
        self.kind = KINDS[self.preset.kind]
        self.label = (
            self.preset.label
            if spec.name in (spec.preset, "databricks")
            else f"{self.preset.label} '{spec.name}'"
        )
        self.cfg = cfg
        self.client = client
        self.log = log
        self.configured = not spec.missing
        self.default_model = spec.model or self.preset.default_model
        s = cfg.settings
        self.max_retries = s.upstream_max_retries
        self.retry_after_cap_s = s.upstream_retry_after_max_s
        self.breaker = CircuitBreaker(self.name, s.circuit_breaker_failures, s.circuit_breaker_reset_s)
        self.auth = [*self.preset.auth(spec.api_key), *spec.headers]
        # Whether the upstream verifies thinking signatures (Claude behind it): only its own go there.
        # (a Responses reasoning item is valid only for the account that made it, like a signature)
        self.checks_signatures = (
            self.preset.kind in ANTHROPIC_FORMAT_KINDS
            or self.preset.kind == "openai-responses"
            or self.preset.dialect.thinking == "anthropic"
        )
        self.credentials = self.preset.credentials(self) if self.preset.credentials is not None else None

    def model_for(self, requested: str, client_model: str) -> str:
        """The upstream model: the route's or map's, else this provider's default, else the client's."""
        return requested or self.default_model or client_model

    def not_configured(self) -> NotConfigured:
        others = ""
        if self.spec.source == "environment":  # name the other choices too: the default may not be theirs
            others = (
                "; or choose another provider with MODEL_PROVIDER: "
                + ", ".join(
                    f"{name} ({p.needs or ' and '.join(v for v in (p.base_env if not p.base_default else '', p.key_env) if v)})"
                    for name, p in PRESETS.items()
                    if name not in (self.spec.preset, "databricks-anthropic")
                    and (p.key_env or not p.base_default)
                )
                + ", ollama (OLLAMA_BASE_URL, optional); or describe several "
            )
            others += "in lynkr.toml"
        return NotConfigured(
            f"lynkr's provider '{self.name}' ({self.label}) is not configured: set {self.spec.missing}{others}; "
            "then restart lynkr",
            headers={"x-should-retry": "false"},
        )

    def anthropic_headers(
        self, http_req: Request, body: dict[str, Any] | None = None
    ) -> list[tuple[str, str]]:
        version = (
            http_req.headers.get("anthropic-version") or self.spec.api_version or ANTHROPIC_VERSION_DEFAULT
        )
        headers = [*self.auth, ("anthropic-version", version)]
        betas = http_req.headers.get("anthropic-beta", "")
        if betas and body is not None:
            betas = betas_for(body, betas)
        if betas:
            headers.append(("anthropic-beta", betas))
        for name, value in headers[len(self.auth) :]:
            if not value.isascii():  # header values travel as ASCII; the client's are passed on as sent
                raise InvalidRequest(f"{name}: the header value must be ASCII")
        return headers

    # -- calls --
    async def _call(
        self, req: dict[str, Any], http_req: Request, stream: bool, model: str, max_tokens: int
    ) -> UpstreamResponse:
        if not self.configured:
            raise self.not_configured()
        headers, body = self.kind.build(self, fold_system_messages(req), model, max_tokens, stream, http_req)
        if not headers:
            headers = self.auth
        url_of = self.preset.stream_url if stream and self.preset.stream_url is not None else self.preset.url
        resp = await self._request(url_of(self.spec, model), headers, body, stream, http_req)
        http_req.reply_headers.update(forwarded_headers(resp.headers))
        return resp

    async def complete(
        self, req: dict[str, Any], http_req: Request, model: str, max_tokens: int
    ) -> tuple[dict[str, Any], bytes | None]:
        """Non-streaming call: (Anthropic message, the upstream's own bytes when they can pass unchanged)."""
        resp = await self._call(req, http_req, False, model, max_tokens)
        message, raw = self.kind.read(self, await resp.read(), req)
        http_req.log.update(usage=message.get("usage"))
        return message, raw

    async def open_stream(
        self, req: dict[str, Any], http_req: Request, model: str, max_tokens: int
    ) -> AsyncIterator[bytes]:
        """Start the upstream call (raising LynkrError before any byte) and return Anthropic SSE bytes.
        A stream whose first frame is an error (Bedrock's throttling) is retried like an HTTP error."""
        attempt = 0
        while True:
            try:
                return await self._open_stream(req, http_req, model, max_tokens)
            except FirstFrameError as exc:
                error = exc.error
                delay = min(RETRY_BASE_DELAY_S * (2**attempt), 8.0) * (0.5 + random.random() / 2)
                if (
                    error.status not in RETRYABLE_STATUSES
                    or attempt >= self.max_retries
                    or not self.breaker.allow()
                ):
                    raise self._client_facing(error) from None
                attempt += 1
                METRICS.inc("lynkr_upstream_retries_total", provider=self.name)
                self.log.info(
                    "retrying upstream",
                    request_id=http_req.request_id,
                    provider=self.name,
                    attempt=attempt,
                    status=error.status,
                    delay_s=round(delay, 3),
                )
                await asyncio.sleep(delay)

    async def _open_stream(
        self, req: dict[str, Any], http_req: Request, model: str, max_tokens: int
    ) -> AsyncIterator[bytes]:
        resp = await self._call(req, http_req, True, model, max_tokens)
        content_type = resp.headers.get("content-type", "text/event-stream")
        if "text/event-stream" not in content_type and EVENT_STREAM_TYPE not in content_type:
            # The upstream ignored stream:true; still give the client a valid SSE stream.
            message, _raw = self.kind.read(self, await resp.read(), req)
            http_req.log.update(usage=message.get("usage"))
            return _single_chunk(message_to_sse(message))
        decoder = self.kind.decoder(self, req, content_type)
        if isinstance(decoder, EventStreamDecoder):
            return await self._primed(resp, decoder, http_req)
        if isinstance(decoder, (OpenAIStreamDecoder, ResponsesStreamDecoder)):
            http_req.reply_builder = lambda: decoder.final  # the translator kept the message: no re-parse
        return self.pump(resp, decoder, http_req)

    async def _primed(self, resp: UpstreamResponse, decoder: Any, http_req: Request) -> AsyncIterator[bytes]:
        """Read until the first event: an exception frame there (Bedrock's throttling) is still an HTTP
        error the client can retry, not an `event: error` after a 200."""
        first = b""
        chunks = resp.aiter_bytes(tick=self.cfg.stream_ping_interval_s)
        try:
            while not first:
                chunk = await chunks.__anext__()
                if chunk is not None:
                    first = decoder.feed(chunk)
        except StopAsyncIteration:
            pass
        except LynkrError as exc:
            await resp.aclose()
            self.stream_outcome(exc)
            raise FirstFrameError(self.named(exc)) from None

        async def rest() -> AsyncIterator[bytes]:
            yield first
            async for out in self.pump(resp, decoder, http_req, chunks):
                yield out

        return rest()

    async def pump(
        self,
        resp: UpstreamResponse,
        decoder: Any,
        http_req: Request,
        chunks: AsyncIterator[bytes | None] | None = None,
    ) -> AsyncIterator[bytes]:
        """The one stream loop for every kind: upstream bytes -> decoder -> client, pings during silence,
        `event: error` (never a fake message_stop) when the upstream fails or stops short."""
        try:
            async for chunk in chunks or resp.aiter_bytes(tick=self.cfg.stream_ping_interval_s):
                if chunk is None:
                    if decoder.done:
                        break  # the message is complete and the upstream lingers: we have everything
                    yield PING_EVENT
                    continue
                out = decoder.feed(chunk)
                if out:
                    yield out
            out = decoder.flush()
            if not decoder.done and not decoder.failed:
                raise_after = UpstreamUnavailable(
                    f"{self.label} ended the stream before the response was complete"
                )
                self.stream_outcome(raise_after)
                http_req.log.update(stream_error=raise_after.error_type)
                yield out + error_event(raise_after)
                return
            if decoder.failed:  # the upstream's own `event: error`, passed on after the 200
                http_req.log.setdefault("stream_error", "upstream_error")
            self.stream_outcome(LynkrError("upstream stream error", status=500) if decoder.failed else None)
            if out:
                yield out
        except LynkrError as exc:
            http_req.log.update(stream_error=exc.error_type)
            self.stream_outcome(exc)
            yield error_event(self.named(exc))
        finally:
            await resp.aclose()
            http_req.log.update(usage=decoder.usage)

    async def count_tokens(self, req: dict[str, Any], http_req: Request, model: str) -> int | None:
        """The upstream's own count (Anthropic-format upstreams); None when it cannot count."""
        if self.preset.kind not in ANTHROPIC_FORMAT_KINDS or not self.configured:
            return None
        if self.kind.count is not None:
            try:
                return await self.kind.count(self, fold_system_messages(req), model)
            except LynkrError as exc:
                self.log.info(
                    "upstream count failed; estimating",
                    request_id=http_req.request_id,
                    error=exc.message,
                    provider=self.name,
                )
                return None
        body = fold_system_messages(req)
        body = {
            k: v for k, v in body.items() if k in ("messages", "system", "tools", "tool_choice", "thinking")
        }
        body["model"] = model
        body["messages"] = _anthropic_messages(self, body["messages"])
        try:
            count_url = self.preset.count_url
            url = (
                count_url(self.spec, model)
                if count_url
                else self.preset.url(self.spec, model) + "/count_tokens"
            )
            resp, _renewed = await self.post_renewing(url, self.anthropic_headers(http_req), body, False)
            raw = await resp.read(MAX_UPSTREAM_ERROR_BYTES)
            if resp.status == 200:
                count = json.loads(raw).get("input_tokens")
                if isinstance(count, int):
                    return count
            self.log.info(
                "upstream count_tokens unavailable; estimating",
                request_id=http_req.request_id,
                status=resp.status,
                provider=self.name,
            )
        except (LynkrError, ValueError, AttributeError) as exc:
            self.log.info(
                "upstream count_tokens failed; estimating",
                request_id=http_req.request_id,
                error=str(exc),
                provider=self.name,
            )
        return None

    # -- retries and the breaker --
    async def _request(
        self, url: str, headers: list[tuple[str, str]], body: dict[str, Any], stream: bool, http_req: Request
    ) -> UpstreamResponse:
        """POST with retries and the circuit breaker; returns a 200 response or raises the mapped error.

        Every retry happens before a byte reaches the client, so a retried request can never show up
        twice. Statuses are chosen for Claude Code, which retries a 5xx ~10 times over ~3 minutes but
        an overloaded_error/529 only 3 times: an upstream 529 reaches the client as a 503 api_error.
        """
        if not self.breaker.allow():
            wait = max(1, math.ceil(self.breaker.retry_in()))
            raise LynkrError(
                f"{self.label} ({self.name}) is failing: circuit breaker open after "
                f"{self.breaker.failures} consecutive failures; next attempt in {wait} s "
                "(CIRCUIT_BREAKER_RESET_MS)",
                status=503,
                error_type="api_error",
                headers={"retry-after": str(wait), "x-should-retry": "true"},
            )
        attempt = 0
        renewed = False
        while True:
            started = time.monotonic()
            retry_after = None
            try:
                resp, renewed_now = await self.post_renewing(url, headers, body, stream, renew=not renewed)
                renewed = renewed or renewed_now
                METRICS.observe(
                    "lynkr_upstream_duration_seconds", time.monotonic() - started, provider=self.name
                )
                if resp.status == 200:
                    if not stream:  # a stream's health is known at its end (see stream_outcome)
                        self.breaker.success()
                    return resp
                error = self.kind.error(self, resp.status, await self._read_error(resp), resp.headers)
                retry_after = retry_after_seconds(resp.headers)
                if resp.status not in RETRYABLE_STATUSES:
                    if resp.status < 500:
                        self.breaker.success()  # the upstream is healthy; the request was refused
                    raise error
            except LynkrError as exc:
                if exc.status not in RETRYABLE_STATUSES and not isinstance(
                    exc, (UpstreamUnavailable, UpstreamTimeout)
                ):
                    raise
                error = exc
            if error.status != 429:
                self.breaker.failure()
            delay = min(RETRY_BASE_DELAY_S * (2**attempt), 8.0) * (0.5 + random.random() / 2)
            if retry_after is not None:
                delay = max(delay, retry_after)
            if attempt >= self.max_retries or delay > self.retry_after_cap_s or not self.breaker.allow():
                raise self._client_facing(error)
            attempt += 1
            METRICS.inc("lynkr_upstream_retries_total", provider=self.name)
            self.log.info(
                "retrying upstream",
                request_id=http_req.request_id,
                provider=self.name,
                attempt=attempt,
                status=error.status,
                delay_s=round(delay, 3),
            )
            await asyncio.sleep(delay)

    def stream_outcome(self, error: LynkrError | None) -> None:
        """A stream that died mid-body (hang, cut) counts against the upstream like a failed request."""
        if error is None:
            self.breaker.success()
        elif isinstance(error, (UpstreamTimeout, UpstreamUnavailable)) or error.status >= 500:
            self.breaker.failure()

    def _client_facing(self, error: LynkrError) -> LynkrError:
        if error.status == 529 or error.error_type == "overloaded_error":
            headers = {**error.headers, "x-should-retry": "true"}
            headers.setdefault("retry-after", "5")
            return LynkrError(
                f"{self.label} ({self.name}) is overloaded: {error.message}",
                status=503,
                error_type="api_error",
                headers=headers,
            )
        return error

    async def post_renewing(
        self, url: str, headers: list[tuple[str, str]], body: dict[str, Any], stream: bool, renew: bool = True
    ) -> tuple[UpstreamResponse, bool]:
        """POST; a cloud credential the upstream refused (a Google token: 401; rotated AWS keys: 403) is
        renewed and the request sent once more. Returns (response, whether it was renewed)."""
        sent_at = time.monotonic()
        resp = await self._post(url, headers, body, stream)
        if (
            not renew
            or resp.status not in (401, 403)
            or self.credentials is None
            or not self.credentials.invalidate(sent_at)
        ):
            return resp, False
        await self._read_error(resp)
        return await self._post(url, headers, body, stream), True

    async def _post(
        self,
        url: str,
        headers: list[tuple[str, str]],
        body: dict[str, Any],
        stream: bool,
        timeout: float | None = None,
    ) -> UpstreamResponse:
        defaults = [
            ("content-type", "application/json"),
            ("accept", "text/event-stream" if stream else "application/json"),
        ]
        given = {name for name, _ in headers}
        headers = [*(h for h in defaults if h[0] not in given), *headers]  # a kind may name its own accept
        payload = upstream_json(body)
        try:
            if self.credentials is not None:  # a cloud token or a signature over exactly these bytes
                headers += await self.credentials.headers("POST", url, headers, payload)
            return await self.client.request(
                "POST",
                url,
                headers,
                payload,
                connect_timeout=self.cfg.upstream_connect_timeout_s,
                read_timeout=timeout or self.cfg.upstream_read_timeout_s,
            )
        except LynkrError as exc:
            raise self.named(exc) from None

    def named(self, exc: LynkrError) -> LynkrError:
        """Say which provider failed: 'cannot connect to 10.0.0.5:443' alone leaves users guessing."""
        if not exc.message.startswith(self.label):
            exc.message = f"{self.label} ({self.name}): {exc.message}"
        return exc

    async def _read_error(self, resp: UpstreamResponse) -> bytes:
        try:
            return await resp.read(MAX_UPSTREAM_ERROR_BYTES)
        except LynkrError:
            return b""

    def describe(self) -> dict[str, Any]:
        """What `lynkr doctor` and /health show: never the key itself."""
        return {
            "name": self.name,
            "preset": self.spec.preset,
            "kind": self.preset.kind,
            "base_url": self.spec.base_url,
            "key": mask_secret(self.spec.api_key),
            "default_model": self.default_model or "(the client's model)",
            "configured": self.configured,
            "missing": self.spec.missing,
            "breaker": self.breaker.state.label,
        }


# -- Prices: what an answer cost --


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens, as the vendor bills them."""

    input: float
    output: float
    cache_write: float  # 5-minute cache writes (Anthropic: 1.25 x input)
    cache_read: float
    cache_write_1h: float = 0.0  # 1-hour writes (Anthropic: 2 x input); 0: the cache_write price

    def cost(self, usage: dict[str, Any]) -> float:
        def n(value: Any) -> int:
            return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

        written = n(usage.get("cache_creation_input_tokens"))
        split = usage.get("cache_creation") if isinstance(usage.get("cache_creation"), dict) else {}
        written_1h = min(n(split.get("ephemeral_1h_input_tokens")), written)
        dollars = (
            n(usage.get("input_tokens")) * self.input
            + n(usage.get("output_tokens")) * self.output
            + (written - written_1h) * self.cache_write
            + n(usage.get("cache_read_input_tokens")) * self.cache_read
            + written_1h * (self.cache_write_1h or self.cache_write)
        )
        return dollars / 1_000_000


def _claude_price(input_price: float, output_price: float) -> Price:
    return Price(input_price, output_price, input_price * 1.25, input_price * 0.1, input_price * 2)


# List prices (USD per million tokens) when this table was written; a config file's [prices."glob"]
# rows come first and win -- the user's bill is the truth. Globs match the upstream model's name
# lower-cased with '.' as '-' (so "anthropic/claude-sonnet-4.5" and "databricks-claude-sonnet-4-5" meet);
# first match wins. A model no row matches has no cost figure (null), never a guessed one.
PRICES: tuple[tuple[str, Price], ...] = (
    ("*claude-opus-4-[5-9]*", _claude_price(5, 25)),
    ("*claude-opus-[5-9]*", _claude_price(5, 25)),
    ("*claude-opus-4*", _claude_price(15, 75)),
    ("*claude-3-opus*", _claude_price(15, 75)),
    ("*claude-sonnet*", _claude_price(3, 15)),
    ("*claude-3-[57]-sonnet*", _claude_price(3, 15)),
    ("*claude-haiku-[4-9]*", _claude_price(1, 5)),
    ("*claude-3-5-haiku*", _claude_price(0.8, 4)),
    ("*claude-3-haiku*", _claude_price(0.25, 1.25)),
    ("*gpt-5*-nano*", Price(0.05, 0.4, 0.05, 0.005)),
    ("*gpt-5*-mini*", Price(0.25, 2, 0.25, 0.025)),
    ("*gpt-5*", Price(1.25, 10, 1.25, 0.125)),
    ("*gpt-4-1-nano*", Price(0.1, 0.4, 0.1, 0.025)),
    ("*gpt-4-1-mini*", Price(0.4, 1.6, 0.4, 0.1)),
    ("*gpt-4-1*", Price(2, 8, 2, 0.5)),
    ("*gpt-4o-mini*", Price(0.15, 0.6, 0.15, 0.075)),
    ("*gpt-4o*", Price(2.5, 10, 2.5, 1.25)),
    ("*gemini-2-5-pro*", Price(1.25, 10, 1.25, 0.31)),
    ("*gemini-2-5-flash*", Price(0.3, 2.5, 0.3, 0.075)),
    ("*deepseek*", Price(0.28, 0.42, 0.28, 0.028)),
)
PRICE_FIELDS = ("input", "output", "cache_write", "cache_read", "cache_write_1h")


class PriceBook:
    """Model name -> Price (config rows, then PRICES); cost() of a usage figure, None when unpriced."""

    def __init__(self, rows: Iterable[tuple[str, Price]] = ()) -> None:
        self.rows = (*rows, *PRICES)
        self.price_of = functools.lru_cache(maxsize=512)(self._lookup)

    def _lookup(self, model: str) -> Price | None:
        name = model.lower().replace(".", "-")
        return next((price for glob, price in self.rows if fnmatch.fnmatchcase(name, glob)), None)

    def cost(self, model: str, usage: dict[str, Any]) -> float | None:
        price = self.price_of(model) if model else None
        return None if price is None else round(price.cost(usage), 8)


def price_book(cfg: Config) -> PriceBook:
    """[prices."glob"] tables of the config file: input and output required, the cache prices default
    to the input price (no discount unless the table says so)."""
    rows = []
    for glob, table in cfg.prices_table.items():
        where = f"{cfg.config_file}: prices.{glob}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table with input and output (USD per million tokens)")
        unknown = sorted(set(table) - set(PRICE_FIELDS))
        if unknown:
            raise ConfigError(f"{where}: {unknown[0]}: unknown key (use {', '.join(PRICE_FIELDS)})")
        values = {}
        for key, value in table.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
                raise ConfigError(
                    f"{where}: {key}: expected a number of US dollars per million tokens, got {value!r}"
                )
            values[key] = float(value)
        for key in ("input", "output"):
            if key not in values:
                raise ConfigError(f"{where}: {key} is required (USD per million tokens)")
        values.setdefault("cache_write", values["input"])
        values.setdefault("cache_read", values["input"])
        rows.append((glob.lower().replace(".", "-"), Price(**values)))
    return PriceBook(rows)


# -- The router: several providers, Claude Code-aware routes, fallback chains --


@dataclass(frozen=True)
class RouteTarget:
    provider: str
    model: str = ""  # "" -> the provider's default model, else the client's model name

    def __str__(self) -> str:
        return f"{self.provider},{self.model}" if self.model else self.provider


def parse_route_target(text: str, where: str) -> RouteTarget:
    """`provider,model`, both named."""
    provider, sep, model = text.partition(",")
    if not sep or not provider.strip() or not model.strip():
        raise ConfigError(
            f'{where}: expected "provider,model" (e.g. "dbx,databricks-claude-sonnet-4-5"), got {text!r}'
        )
    return RouteTarget(provider.strip(), model.strip())


@dataclass(frozen=True)
class RoutePlan:
    route: str
    chain: tuple[RouteTarget, ...]


class Router:
    """Picks the provider and model for each request and walks the fallback chain. Quacks like a
    provider for the orchestrator (open_stream, complete, count_tokens)."""

    def __init__(
        self,
        providers: dict[str, Provider],
        routes: dict[str, RouteTarget],
        fallbacks: dict[str, tuple[RouteTarget, ...]],
        cfg: Config,
        log: Logger,
        long_context_threshold: int = 60000,
    ) -> None:
        self.providers = providers
        self.routes = routes
        self.fallbacks = fallbacks
        self.log = log
        self.models = ModelRouter(cfg.model_map, cfg.model_max_tokens)
        self.long_context_threshold = long_context_threshold
        self.default = providers[routes["default"].provider]
        self.name, self.label = self.default.name, self.default.label
        # Set by the orchestrator: adapts a request's history to the provider it is about to reach
        # (the thinking it may receive). Keeps this section free of the stores.
        self.prepare: Callable[[Provider, dict[str, Any], Request], Awaitable[dict[str, Any]]] | None = None
        # (provider, model) -> what its answers taught about the token estimate (loaded from the store)
        self.calibrations: dict[tuple[str, str], TokenCalibration] = {}
        self.estimator = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="lynkr-tokens"
        )
        self._routing_counts: collections.deque[tuple[dict[str, Any], int]] = collections.deque(maxlen=8)

    @property
    def configured(self) -> bool:
        return self.default.configured

    def _provider(self, name: str) -> Provider:
        provider = self.providers.get(name)
        if provider is None:
            raise InvalidRequest(
                f"model names an unknown provider {name!r}: known providers are "
                f"{', '.join(sorted(self.providers))} (write the model as provider,model)"
            )
        return provider

    def plan(self, req: dict[str, Any]) -> RoutePlan:
        """The route a request takes and the targets to try, in order."""
        model = req["model"]
        if "," in model:
            target = parse_explicit(model)
            self._provider(target.provider)
            return RoutePlan("explicit", (target,))
        mapped = self.models.mapped(model)
        if mapped is not None:
            primary = parse_explicit(mapped) if "," in mapped else RouteTarget(self.default.name, mapped)
            route = "map"
        else:
            route = self.shape_route(req)
            primary = self.routes[route]
        chain = (primary, *self.fallbacks.get(route, self.fallbacks.get("default", ())))
        return RoutePlan(route, tuple(dict.fromkeys(chain)))

    def shape_route(self, req: dict[str, Any]) -> str:
        """What Claude Code is asking for, by the request's shape; only routes that are set count."""
        routes = self.routes
        if "long_context" in routes and self.routing_count(req) > self.long_context_threshold:
            return "long_context"
        if "background" in routes and "haiku" in req["model"].lower():
            return "background"
        if "web_search" in routes and any(
            str(t.get("type", "")).startswith("web_search") for t in req.get("tools") or []
        ):
            return "web_search"
        if "think" in routes and (req.get("thinking") or {}).get("type") in ("enabled", "adaptive"):
            return "think"
        return "default"

    def runs_server_tools(self, req: dict[str, Any]) -> bool:
        """Whether the provider this request goes to first runs Anthropic's server tools itself."""
        return self._provider(self.plan(req).chain[0].provider).preset.server_tools

    def cache_target(self, req: dict[str, Any]) -> str:
        """What the prompt cache keys on: the first provider and model the request would reach."""
        target = self.plan(req).chain[0]
        provider = self._provider(target.provider)
        return f"{provider.name},{provider.model_for(target.model, req['model'])}"

    def clamp(self, provider: Provider, client_model: str, model: str, max_tokens: int) -> int:
        max_tokens = self.models.clamp_max_tokens(client_model, max_tokens, model)
        if provider.preset.kind in ("openai", "openai-responses"):
            cap = model_facts(model).max_output
            if cap:
                max_tokens = min(max_tokens, cap)
        return max_tokens

    async def _attempt(self, method: str, req: dict[str, Any], http_req: Request) -> Any:
        plan = self.plan(req)
        last: LynkrError | None = None
        for position, target in enumerate(plan.chain):
            provider = self._provider(target.provider)
            model = provider.model_for(target.model, req["model"])
            route = plan.route if position == 0 else "fallback"
            http_req.log.update(provider=provider.name, model=req["model"], upstream_model=model, route=route)
            http_req.reply_headers.update(
                {"x-lynkr-provider": provider.name, "x-lynkr-model": model, "x-lynkr-route": route}
            )
            http_req.reply_builder = None
            try:
                sent = req if self.prepare is None else await self.prepare(provider, req, http_req)
                return await getattr(provider, method)(
                    sent, http_req, model, self.clamp(provider, req["model"], model, req["max_tokens"])
                )
            except LynkrError as exc:
                if (exc.status < 500 and exc.status != 429) or position == len(plan.chain) - 1:
                    raise
                last = exc
                following = plan.chain[position + 1].provider
                self.log.warning(
                    "provider failed; trying the next in the fallback chain",
                    request_id=http_req.request_id,
                    failed=provider.name,
                    next=following,
                    error=exc.message[:300],
                )
                METRICS.inc("lynkr_upstream_failovers_total", provider=following)
        raise last or NotConfigured("no provider to try")  # pragma: no cover - the chain is never empty

    async def open_stream(self, req: dict[str, Any], http_req: Request) -> AsyncIterator[bytes]:
        return await self._attempt("open_stream", req, http_req)

    async def complete(self, req: dict[str, Any], http_req: Request) -> tuple[dict[str, Any], bytes | None]:
        return await self._attempt("complete", req, http_req)

    async def count_tokens(self, req: dict[str, Any], http_req: Request) -> int:
        """The upstream's count where it can count (`x-lynkr-token-count: exact`); elsewhere the estimate,
        scaled by what this provider and model's answers taught (`calibrated`), or erring high before any
        answer (`estimated`)."""
        target = self.plan(req).chain[0]
        provider = self._provider(target.provider)
        model = provider.model_for(target.model, req["model"])
        http_req.reply_headers.update({"x-lynkr-provider": provider.name, "x-lynkr-model": model})
        if self.prepare is not None:
            req = await self.prepare(provider, req, http_req)
        exact = await provider.count_tokens(req, http_req, model)
        if exact is not None:
            http_req.reply_headers["x-lynkr-token-count"] = "exact"
            return exact
        raw = await self.estimate(req)
        calibration = self.calibrations.get((provider.name, model), TokenCalibration())
        http_req.reply_headers["x-lynkr-token-count"] = "calibrated" if calibration.samples else "estimated"
        return calibration.count(raw)

    def routing_count(self, req: dict[str, Any]) -> int:
        """The count count_tokens would report for the default route (what the long-context threshold
        is compared with). On the event loop -- only when a long_context route is set -- and kept for
        the few times one request is planned."""
        for seen, count in self._routing_counts:
            if seen is req:
                return count
        default = self.routes["default"]
        provider = self._provider(default.provider)
        key = (provider.name, provider.model_for(default.model, req["model"]))
        count = self.calibrations.get(key, TokenCalibration()).count(raw_token_estimate(req))
        self._routing_counts.append((req, count))
        return count

    async def estimate(self, req: dict[str, Any]) -> float:
        """raw_token_estimate on a thread of its own (milliseconds for a long conversation)."""
        return await asyncio.get_running_loop().run_in_executor(self.estimator, raw_token_estimate, req)

    def advertised_models(self) -> list[tuple[str, str]]:
        """The known Claude ids, literal MODEL_MAP names, and every `provider,model` that can be routed."""
        models = self.models.advertised_models()
        seen = {m for m, _ in models}
        ids: list[str] = []
        for provider in self.providers.values():
            ids += [f"{provider.name},{m}" for m in (provider.default_model, *provider.spec.models) if m]
        for target in (*self.routes.values(), *(t for chain in self.fallbacks.values() for t in chain)):
            if target.model:
                ids.append(f"{target.provider},{target.model}")
        for model_id in ids:
            if model_id not in seen:
                seen.add(model_id)
                models.append((model_id, model_id))
        return models

    def breakers_all_open(self) -> bool:
        return all(p.breaker.is_open() for p in self.providers.values())


def parse_explicit(model: str) -> RouteTarget:
    provider, _sep, name = model.partition(",")
    if not provider.strip() or not name.strip():
        raise InvalidRequest(f"model {model!r}: expected provider,model (both named), e.g. dbx,my-endpoint")
    return RouteTarget(provider.strip(), name.strip())


CLOUD_TABLE_KEYS = {
    "vertex": ("project", "region"),
    "bedrock": ("region",),
}  # what a [providers.X] table must name


def _expand_provider_table(name: str, table: dict[str, Any], file: str, settings: Any) -> ProviderSpec:
    """One [providers.NAME] table -> a ProviderSpec, every mistake named by file and key."""
    where = f"{file}: providers.{name}"
    known = {
        "kind",
        "base_url",
        "api_key",
        "model",
        "api_version",
        "headers",
        "models",
        "format",
        "endpoint_path",
        "region",
        "project",
        "profile",
        "surfaces",
    }
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (use {', '.join(sorted(known))})")
    kind = table.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"{where}.kind: required: one of {', '.join(sorted(p for p in PRESETS))}")
    preset_name = KIND_ALIASES.get(kind, kind)
    if preset_name not in PRESETS:
        raise ConfigError(
            f"{where}.kind: unknown kind {kind!r} (use one of {', '.join(sorted([*PRESETS, *KIND_ALIASES]))})"
        )
    fmt = table.get("format", "")
    if fmt:
        if preset_name != "databricks" or fmt not in ("openai", "anthropic"):
            raise ConfigError(
                f'{where}.format: only a databricks provider takes format, "openai" or "anthropic"'
            )
        if fmt == "anthropic":
            preset_name = "databricks-anthropic"
    preset = PRESETS[preset_name]
    for key in ("base_url", "api_key", "model", "api_version", "endpoint_path", "region", "project"):
        if key in table and not isinstance(table[key], str):
            raise ConfigError(f"{where}.{key}: expected a string")
    for key in CLOUD_TABLE_KEYS.get(preset_name, ()):
        if not table.get(key):
            raise ConfigError(f"{where}.{key}: required for kind {kind!r}")
    for key in ("region", "project"):
        if table.get(key) and key not in CLOUD_TABLE_KEYS.get(preset_name, ()):
            raise ConfigError(f"{where}.{key}: only a cloud provider (vertex, bedrock) takes {key}")
    base_url = table.get("base_url") or preset.base_default
    if not base_url and preset.from_env is None:  # cloud kinds build their URL from the region
        raise ConfigError(f'{where}.base_url: required for kind {kind!r} (e.g. "https://host.example.com")')
    base_url = parse_url_setting(f"{where}.base_url", base_url) if base_url else ""
    api_key = table.get("api_key", "")
    if preset.key_required and not api_key:
        raise ConfigError(
            f'{where}.api_key: required for kind {kind!r} (e.g. api_key = "${preset.key_env or "API_KEY"}")'
        )
    headers = table.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f'{where}.headers: expected a table of header = "value"')
    models = table.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ConfigError(f"{where}.models: expected a list of model names")
    version = table.get("api_version", "") or (
        settings.azure_anthropic_version if preset.kind in ANTHROPIC_FORMAT_KINDS else preset.version_default
    )
    model = table.get("model", "")
    if preset.model_env and not model:
        raise ConfigError(f"{where}.model: required for kind {kind!r} (the deployment name)")
    surfaces = table.get("surfaces", {})
    if surfaces and preset_name != "bedrock":
        raise ConfigError(f"{where}.surfaces: only a bedrock provider takes surfaces")
    if not isinstance(surfaces, dict) or not all(
        v in ("invoke", "messages", "runtime-messages") for v in surfaces.values()
    ):
        raise ConfigError(
            f'{where}.surfaces: expected a table of "model glob" = "invoke" | "messages" | "runtime-messages"'
        )
    if table.get("profile") and preset_name != "bedrock":
        raise ConfigError(f"{where}.profile: only a bedrock provider takes profile")
    return ProviderSpec(
        name=name,
        preset=preset_name,
        base_url=base_url,
        api_key=api_key,
        model=model,
        api_version=version,
        headers=tuple((k.lower(), v) for k, v in headers.items()),
        models=tuple(models),
        endpoint_path=table.get("endpoint_path", ""),
        source=file,
        region=table.get("region", ""),
        project=table.get("project", ""),
        profile=str(table.get("profile", "")),
        surfaces=tuple(surfaces.items()),
    )


def _router_from_file(
    cfg: Config, providers: dict[str, Provider]
) -> tuple[dict[str, RouteTarget], dict[str, tuple[RouteTarget, ...]], int]:
    file, table = cfg.config_file, dict(cfg.router_table)
    routes: dict[str, RouteTarget] = {}
    fallbacks: dict[str, tuple[RouteTarget, ...]] = {}
    threshold = table.pop("long_context_threshold", 60000)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ConfigError(
            f"{file}: router.long_context_threshold: expected a positive whole number of tokens"
        )
    fallback_table = table.pop("fallback", {})
    if not isinstance(fallback_table, dict):
        raise ConfigError(f'{file}: router.fallback: expected a table of route = ["provider,model", ...]')

    def checked(text: Any, where: str) -> RouteTarget:
        if not isinstance(text, str):
            raise ConfigError(f'{where}: expected "provider,model"')
        target = parse_route_target(text, where)
        if target.provider not in providers:
            raise ConfigError(
                f"{where}: unknown provider {target.provider!r} (defined: "
                f"{', '.join(sorted(providers)) or 'none'}; add a [providers.{target.provider}] table)"
            )
        return target

    for key, value in table.items():
        if key not in ROUTE_NAMES:
            raise ConfigError(
                f"{file}: router.{key}: unknown route (use {', '.join(ROUTE_NAMES)}, "
                "long_context_threshold or fallback)"
            )
        routes[key] = checked(value, f"{file}: router.{key}")
    for key, value in fallback_table.items():
        if key not in ROUTE_NAMES:
            raise ConfigError(f"{file}: router.fallback.{key}: unknown route (use {', '.join(ROUTE_NAMES)})")
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f'{file}: router.fallback.{key}: expected a list of "provider,model"')
        fallbacks[key] = tuple(checked(v, f"{file}: router.fallback.{key}") for v in value)
    if "default" not in routes:
        if len(providers) != 1:
            raise ConfigError(
                f"{file}: router.default: required when there are several providers "
                '(e.g. default = "name,model")'
            )
        routes["default"] = RouteTarget(next(iter(providers)))
    return routes, fallbacks, threshold


def build_router(cfg: Config, client: HTTPClient, log: Logger) -> Router:
    """Providers and routes from the config file, else from the environment alone (MODEL_PROVIDER,
    FALLBACK_PROVIDER). Raises ConfigError naming the file and key, or the variable."""
    s = cfg.settings
    if cfg.providers_table:
        specs = [
            _expand_provider_table(name, table, cfg.config_file, s)
            for name, table in cfg.providers_table.items()
        ]
        providers = {spec.name: Provider(spec, cfg, client, log) for spec in specs}
        routes, fallbacks, threshold = _router_from_file(cfg, providers)
        return Router(providers, routes, fallbacks, cfg, log, threshold)
    if cfg.router_table:
        raise ConfigError(f"{cfg.config_file}: router: needs at least one [providers.NAME] table")
    for variable, preset_name in (
        ("MODEL_PROVIDER", s.model_provider),
        ("FALLBACK_PROVIDER", s.fallback_provider),
    ):
        if preset_name and preset_name not in ENV_PRESETS:
            raise ConfigError(
                f"{variable} must be one of {', '.join(ENV_PRESETS)} (got {preset_name!r}); "
                "several providers at once come from a config file (lynkr.toml)"
            )
    primary = provider_env_spec(s.model_provider, s, model=s.model_default)
    providers = {primary.name: Provider(primary, cfg, client, log)}
    fallbacks: dict[str, tuple[RouteTarget, ...]] = {}
    if s.fallback_provider:
        if s.fallback_provider == s.model_provider:
            raise ConfigError(
                f"FALLBACK_PROVIDER must be another of {', '.join(ENV_PRESETS)} (got {s.fallback_provider!r})"
            )
        fallback = provider_env_spec(s.fallback_provider, s, model=s.fallback_model_default)
        if fallback.missing:
            raise ConfigError(
                f"FALLBACK_PROVIDER={s.fallback_provider} needs its own settings ({fallback.missing})"
            )
        providers[fallback.name] = Provider(fallback, cfg, client, log)
        # MODEL_MAP targets belong to the primary; the fallback answers with its own default model.
        fallbacks["default"] = (RouteTarget(fallback.name),)
    return Router(providers, {"default": RouteTarget(primary.name)}, fallbacks, cfg, log)


async def check_provider(provider: Provider, timeout_s: float = DOCTOR_TIMEOUT_S) -> tuple[bool, str]:
    """`lynkr doctor`: one one-token request, with a timeout. (ok, what happened)."""
    if not provider.configured:
        return False, f"not configured: set {provider.spec.missing}"
    model = provider.default_model or "claude-sonnet-4-5"
    req = {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}
    http_req = Request("POST", "/v1/messages", {}, {}, b"", "doctor", request_id=new_id("req_"))
    started = time.monotonic()
    try:
        message, _raw = await asyncio.wait_for(provider.complete(req, http_req, model, 1), timeout_s)
    except TimeoutError:
        return False, f"no answer within {timeout_s:g} s"
    except LynkrError as exc:
        return False, f"HTTP {exc.status} {exc.error_type}: {exc.message[:300]}"
    ms = (time.monotonic() - started) * 1000
    return (
        True,
        f"answered in {ms:.0f} ms (model {message.get('model') or model}, stop {message.get('stop_reason')})",
    )


ENV_PRESETS = tuple(name for name in PRESETS if name != "databricks-anthropic")


# == 11. Stores ==
#
# One SQLite file (SESSION_DB_PATH) holds sessions, turns and tasks. Every statement runs on one
# dedicated thread, so the event loop never blocks and writes never contend; WAL with
# synchronous=NORMAL survives a killed process with every committed turn. Migrations are numbered
# functions whose names are recorded once applied (the simonw/llm pattern).


def _m001_sessions(db: sqlite3.Connection) -> None:
    run_script(
        db,
        """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            history TEXT NOT NULL DEFAULT '[]'   -- hashes of the client-visible messages seen, in order
        );
        CREATE TABLE turns (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            kind TEXT NOT NULL,                  -- user | assistant | server_tool
            role TEXT NOT NULL,
            content TEXT NOT NULL,               -- JSON
            model TEXT,
            usage TEXT,                          -- JSON
            cache TEXT,                          -- hit | miss | bypass
            request_id TEXT
        );
        CREATE INDEX turns_by_session ON turns(session_id, id);
    """,
    )


def _m002_tasks(db: sqlite3.Connection) -> None:
    run_script(
        db,
        """
        CREATE TABLE tasks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            title TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'todo',
            priority TEXT NOT NULL DEFAULT 'medium',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
    """,
    )


def _m003_test_runs(db: sqlite3.Connection) -> None:
    run_script(
        db,
        """
        CREATE TABLE test_runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            command TEXT NOT NULL,
            started_at REAL NOT NULL,
            duration_ms INTEGER NOT NULL,
            exit_code INTEGER NOT NULL,
            passed INTEGER NOT NULL,
            timed_out INTEGER NOT NULL,
            counts TEXT NOT NULL,                -- JSON
            coverage TEXT NOT NULL,              -- JSON list
            output_tail TEXT NOT NULL,
            tree_id TEXT NOT NULL                -- git tree of the working tree the run saw ('' outside git)
        );
        CREATE INDEX test_runs_gate ON test_runs(command, passed, tree_id);
    """,
    )


def _m004_turn_provider(db: sqlite3.Connection) -> None:
    # Which provider answered each assistant turn (several serve one lynkr since providers became data).
    db.execute("ALTER TABLE turns ADD COLUMN provider TEXT")


def _m005_test_run_checkout(db: sqlite3.Connection) -> None:
    # Where a run executed: 'worktree' (the workspace as it is) or 'clean' (a checkout of exactly the
    # tree it tested, which is what the commit gate counts since ignored files could decide a worktree run).
    db.execute("ALTER TABLE test_runs ADD COLUMN checkout TEXT NOT NULL DEFAULT 'worktree'")


def _m006_turn_cost(db: sqlite3.Connection) -> None:
    # What each answered turn cost in US dollars (the price table times the upstream's own usage).
    db.execute("ALTER TABLE turns ADD COLUMN cost_usd REAL")


def _m007_thinking_signatures(db: sqlite3.Connection) -> None:
    # Which provider signed each thinking block lynkr relayed (signature_key -> provider name), so a
    # resent history reaches another provider without blocks it would reject.
    run_script(
        db,
        """
        CREATE TABLE thinking_signatures (
            key TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            created_at REAL NOT NULL
        );
    """,
    )


def _m008_token_calibration(db: sqlite3.Connection) -> None:
    # What each provider and model's answers taught about the token estimate (TokenCalibration's sums).
    run_script(
        db,
        """
        CREATE TABLE token_calibration (
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            state TEXT NOT NULL,                 -- JSON list of the fit's sums
            updated_at REAL NOT NULL,
            PRIMARY KEY (provider, model)
        );
    """,
    )


def _m009_keys_and_usage(db: sqlite3.Connection) -> None:
    # Personal keys (stored hashed: a key is shown once), the usage ledger each answered request is
    # charged to, and which key a session belongs to.
    run_script(
        db,
        """
        CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
            key_hash TEXT NOT NULL UNIQUE,       -- sha256 of the key (256 random bits: no slow hash needed)
            prefix TEXT NOT NULL,                -- its first characters, to recognise it in a list
            created_at REAL NOT NULL,
            revoked_at REAL,
            budget_usd REAL,                     -- NULL: no budget
            budget_period TEXT,                  -- day | week | month
            models TEXT NOT NULL DEFAULT '[]',   -- JSON list of globs; empty: every model
            rpm INTEGER                          -- requests per minute; NULL: no limit
        );
        CREATE TABLE usage (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            key_name TEXT,                       -- NULL: the shared key, or none
            provider TEXT,
            model TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cache_read_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL,
            request_id TEXT,
            session_id TEXT
        );
        CREATE INDEX usage_by_key ON usage(key_name, at);
        CREATE INDEX usage_by_time ON usage(at);
        ALTER TABLE sessions ADD COLUMN owner TEXT;
    """,
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _m001_sessions,
    _m002_tasks,
    _m003_test_runs,
    _m004_turn_provider,
    _m005_test_run_checkout,
    _m006_turn_cost,
    _m007_thinking_signatures,
    _m008_token_calibration,
    _m009_keys_and_usage,
]


def run_script(db: sqlite3.Connection, script: str) -> None:
    """Run several statements inside the caller's transaction (executescript would commit it first)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""
    if statement.strip():
        db.execute(statement)


def apply_migrations(
    db: sqlite3.Connection, migrations: Iterable[Callable[[sqlite3.Connection], None]] = ()
) -> None:
    """Run the numbered migrations not yet recorded in `_migrations` (default: the session store's).
    Each runs in its own BEGIN IMMEDIATE transaction, DDL included: a thread or process migrating the
    same file at the same moment waits for it, then finds it recorded and skips it; a migration that
    fails or is interrupted leaves nothing half done (a dropped table without its replacement)."""
    migrations = migrations or MIGRATIONS
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    applied = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    for migration in migrations:
        name = migration.__name__.lstrip("_")
        if name in applied:
            continue
        if db.in_transaction:
            db.commit()
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone() is None:
                migration(db)
                db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
            db.commit()
        except BaseException:
            db.rollback()
            raise


def settle_writes(
    batch: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]],
    done: asyncio.Future[list[tuple[bool, Any]]],
) -> None:
    """Each awaiter of a committed batch gets its write's outcome (all of them the batch's own error,
    when the batch failed as a whole)."""
    error = done.exception() if not done.cancelled() else asyncio.CancelledError()
    outcomes = done.result() if error is None else [(False, error)] * len(batch)
    for (_fn, _args, future), (ok, value) in zip(batch, outcomes, strict=False):
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class Store:
    """SQLite behind a single worker thread: `await store.run(fn, *args)` runs fn(db, *args) there.

    `await store.write(fn, *args)` is for the hot path (a turn per answer): writes that arrive while
    the thread is busy are queued and committed together in one transaction (group commit), each in
    its own savepoint so one failure loses only its own rows. Every awaiter resumes after the commit
    that holds its rows, so durability is the same as a commit per write at a fraction of the cost."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lynkr-sqlite")
        self._db: sqlite3.Connection | None = None
        self._queued: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []
        self._writing = False  # read and set on the event loop's thread only

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
            # Writes append at the end of each table: the hot pages are few. The default 2 MiB page
            # cache was 3 % of the gateway's memory under load.
            db.execute("PRAGMA cache_size=-256")
            apply_migrations(db)
            self._db = db
        return self._db

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return fn(self._connection(), *args)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn, args)

    async def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(db, *args) inside a shared transaction (fn must not commit); its result once committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((fn, args, future))
        if not self._writing:
            self._next_batch()
        return await future

    def _next_batch(self) -> None:
        batch, self._queued = self._queued, []
        self._writing = bool(batch)
        if not batch:
            return
        try:
            done = asyncio.get_running_loop().run_in_executor(self._executor, self._write_batch, batch)
        except RuntimeError:  # closed (shutdown): the awaiters hear so instead of waiting forever
            self._writing = False
            for _fn, _args, future in batch:
                if not future.done():
                    future.set_exception(sqlite3.ProgrammingError("the session store is closed"))
            return
        done.add_done_callback(lambda f: self._batch_written(batch, f))

    def _write_batch(
        self, batch: list[tuple[Callable[..., Any], tuple[Any, ...], Any]]
    ) -> list[tuple[bool, Any]]:
        db = self._connection()
        outcomes: list[tuple[bool, Any]] = []
        # IMMEDIATE: take the write lock now (waiting busy_timeout for another process's writer). A
        # deferred transaction that reads first fails at its first write if another connection
        # committed in between, and would fail the whole batch.
        db.execute("BEGIN IMMEDIATE")
        try:
            for fn, args, _future in batch:
                db.execute("SAVEPOINT one_write")
                try:
                    outcomes.append((True, fn(db, *args)))
                    db.execute("RELEASE one_write")
                except Exception as exc:  # noqa: BLE001 - handed to that write's awaiter
                    db.execute("ROLLBACK TO one_write")
                    db.execute("RELEASE one_write")
                    outcomes.append((False, exc))
            db.commit()
        except BaseException:
            db.rollback()
            raise
        return outcomes

    def _batch_written(
        self,
        batch: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]],
        done: asyncio.Future[list[tuple[bool, Any]]],
    ) -> None:
        settle_writes(batch, done)
        self._next_batch()

    # The calls PostgresStore has too: a local file is never away, and its writes are awaited.
    shared = False
    backlogged = False

    def describe(self) -> dict[str, Any]:
        return {"backend": "sqlite"}

    async def change(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A write whose caller waits for its outcome (an admin's key): here, one more write."""
        return await self.write(fn, *args)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """From a thread outside the event loop: fn(db, *args), waited for."""
        return self._executor.submit(self._call, fn, args).result()

    async def drain(self, timeout_s: float = 0.0) -> None:
        return None

    def close(self) -> None:
        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        self._executor.submit(_close).result(timeout=10)
        self._executor.shutdown(wait=True)


# -- PostgreSQL: the shared store (LYNKR_DATABASE_URL) --
#
# The store's functions are written once, against sqlite3's calls (execute, executemany, `with db:`,
# rowcount); PgConnection gives psycopg the same face, and the few statements whose SQL differs look
# their dialect up. PostgreSQL has its own migration list, recorded in its own `_migrations` table.


@dataclass(frozen=True)
class Dialect:
    name: str
    usage_day: str  # the UTC day of `usage.at` as YYYY-MM-DD
    returning_id: bool  # INSERT ... RETURNING id (psycopg has no lastrowid)


LEDGER_INSERT = (
    "INSERT INTO usage (at, key_name, provider, model, input_tokens, output_tokens, cache_read_tokens,"
    " cache_write_tokens, cost_usd, request_id, session_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SQLITE_DIALECT = Dialect("sqlite", "strftime('%Y-%m-%d', at, 'unixepoch')", False)
POSTGRES_DIALECT = Dialect("postgres", "to_char(to_timestamp(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')", True)


def dialect_of(db: Any) -> Dialect:
    return getattr(db, "dialect", SQLITE_DIALECT)


def insert_returning_id(db: Any, sql: str, params: tuple[Any, ...]) -> int:
    if dialect_of(db).returning_id:
        return int(db.execute(sql + " RETURNING id", params).fetchone()[0])
    return int(db.execute(sql, params).lastrowid or 0)


# Today's schema in one step (the SQLite list's m001-m009), then PostgreSQL's own additions. Times are
# DOUBLE PRECISION: PostgreSQL's REAL is 4 bytes and would round a timestamp to minutes.
PG_MIGRATIONS: list[tuple[str, str]] = [
    (
        "m001_schema",
        """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            history TEXT NOT NULL DEFAULT '[]',
            owner TEXT
        );
        CREATE TABLE turns (
            id BIGSERIAL PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            created_at DOUBLE PRECISION NOT NULL,
            kind TEXT NOT NULL,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            model TEXT,
            usage TEXT,
            cache TEXT,
            request_id TEXT,
            provider TEXT,
            cost_usd DOUBLE PRECISION
        );
        CREATE INDEX turns_by_session ON turns(session_id, id);
        CREATE INDEX turns_by_request ON turns(request_id);
        CREATE TABLE tasks (
            id BIGSERIAL PRIMARY KEY,
            title TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'todo',
            priority TEXT NOT NULL DEFAULT 'medium',
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        );
        CREATE TABLE test_runs (
            id BIGSERIAL PRIMARY KEY,
            command TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            duration_ms BIGINT NOT NULL,
            exit_code INTEGER NOT NULL,
            passed INTEGER NOT NULL,
            timed_out INTEGER NOT NULL,
            counts TEXT NOT NULL,
            coverage TEXT NOT NULL,
            output_tail TEXT NOT NULL,
            tree_id TEXT NOT NULL,
            checkout TEXT NOT NULL DEFAULT 'worktree'
        );
        CREATE INDEX test_runs_gate ON test_runs(command, passed, tree_id);
        CREATE TABLE thinking_signatures (
            key TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        );
        CREATE TABLE token_calibration (
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            state TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (provider, model)
        );
        CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
            key_hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION,
            budget_usd DOUBLE PRECISION,
            budget_period TEXT,
            models TEXT NOT NULL DEFAULT '[]',
            rpm INTEGER
        );
        CREATE TABLE usage (
            id BIGSERIAL PRIMARY KEY,
            at DOUBLE PRECISION NOT NULL,
            key_name TEXT,
            provider TEXT,
            model TEXT,
            input_tokens BIGINT NOT NULL DEFAULT 0,
            output_tokens BIGINT NOT NULL DEFAULT 0,
            cache_read_tokens BIGINT NOT NULL DEFAULT 0,
            cache_write_tokens BIGINT NOT NULL DEFAULT 0,
            cost_usd DOUBLE PRECISION,
            request_id TEXT UNIQUE,             -- a batch retried after a lost commit reply charges once
            session_id TEXT
        );
        CREATE INDEX usage_by_key ON usage(key_name, at);
        CREATE INDEX usage_by_time ON usage(at);
        """,
    ),
    (
        # The response cache every instance shares (PROMPT_CACHE_BACKEND=postgres).
        "m002_prompt_cache",
        """
        CREATE TABLE prompt_cache (
            key TEXT PRIMARY KEY,
            message TEXT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            used_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX prompt_cache_lru ON prompt_cache(used_at);
        """,
    ),
    (
        # Each personal key's requests in the last minute, so an rpm limit holds across instances.
        "m003_key_requests",
        """
        CREATE TABLE key_requests (key_name TEXT NOT NULL, at DOUBLE PRECISION NOT NULL);
        CREATE INDEX key_requests_by_key ON key_requests(key_name, at);
        """,
    ),
]
PG_MIGRATION_LOCK = 0x6C796E6B72  # "lynkr": the advisory lock instances migrating together queue on


def import_psycopg() -> Any:
    try:
        import psycopg  # optional: only LYNKR_DATABASE_URL needs it
    except ImportError as exc:
        raise ConfigError(
            "LYNKR_DATABASE_URL needs psycopg 3: pip install 'psycopg[binary]' (from a checkout: pip install '.[postgres]')"
        ) from exc
    return psycopg


def error_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


URL_SECRET_PARAMS = re.compile(r"(?i)(^|&)((?:ssl)?password|passfile)=[^&]*")


def redact_url(url: str) -> str:
    """The URL with its password replaced (in the user part or as a query parameter), for messages and
    logs. Never fails: it runs on URLs that failed to parse elsewhere."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostport = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = userinfo.split(":", 1)[0] + ":***@" + hostport
    query = URL_SECRET_PARAMS.sub(r"\1\2=***", parts.query)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def scrub_url_secrets(text: str, url: str) -> str:
    """text with the URL's password taken out, however a library quoted it back."""
    parts = urllib.parse.urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    found = [userinfo.split(":", 1)[1]] if ":" in userinfo else []
    found += [m.group(0).split("=", 1)[1] for m in URL_SECRET_PARAMS.finditer(parts.query)]
    for secret in [*found, *(urllib.parse.unquote(f) for f in found)]:
        if secret:
            text = text.replace(secret, "***")
    return text


@functools.lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """sqlite3's qmark SQL as psycopg's format SQL: ? -> %s, and every literal % doubled (quoted
    literals keep their question marks). Made for the store's own statements: no comments, no
    double-quoted identifiers, no $$ or E'' strings (a ? in those would be taken for a parameter)."""

    def swap(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "?":
            return "%s"
        return text.replace("%", "%%")

    return re.sub(r"'[^']*'|\?|%", swap, sql)


class PgConnection:
    """A psycopg connection with the sqlite3 calls the store's functions make."""

    dialect = POSTGRES_DIALECT

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.answered = 0  # statements the server answered (or a commit sent)

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        cursor = self.raw.execute(pg_sql(sql), tuple(params))
        self.answered += 1
        return cursor

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> Any:
        cursor = self.raw.cursor()
        cursor.executemany(pg_sql(sql), [tuple(r) for r in rows])
        return cursor

    def commit(self) -> None:
        self.answered += 1  # from here a lost reply may hide a commit that was done
        self.raw.commit()

    def rollback(self) -> None:
        self.raw.rollback()

    def __enter__(self) -> PgConnection:  # `with db:` commits or rolls back, as sqlite3's does
        return self

    def __exit__(self, kind: Any, _value: Any, _tb: Any) -> None:
        if kind is None:
            self.commit()
        else:
            self.raw.rollback()


def apply_pg_migrations(raw: Any) -> None:
    """The migrations not yet recorded, in one transaction under an advisory lock: instances starting
    together queue, and the later ones find everything applied."""
    with raw.transaction():
        raw.execute("SELECT pg_advisory_xact_lock(%s)", (PG_MIGRATION_LOCK,))
        raw.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        applied = {row[0] for row in raw.execute("SELECT name FROM _migrations")}
        for name, script in PG_MIGRATIONS:
            if name not in applied:
                raw.execute(script)
                raw.execute("INSERT INTO _migrations VALUES (%s, %s)", (name, time.time()))


class StallWatch:
    """Connections in the middle of a call, each with the time it must be done by. One that overruns has
    its socket shut down, so the thread blocked on it gets an error at once: a database that stopped
    answering behind something that still acknowledges TCP (a frozen proxy or pooler) never trips the
    kernel's timeouts, and a thread would wait for it forever."""

    def __init__(self, tick_s: float = 0.25) -> None:
        self.tick_s = tick_s
        self._due: dict[int, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self, raw: Any, limit_s: float) -> None:
        with self._lock:
            self._due[id(raw)] = (time.monotonic() + limit_s, raw)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="lynkr-pg-watch", daemon=True)
                self._thread.start()

    def disarm(self, raw: Any) -> None:
        with self._lock:
            self._due.pop(id(raw), None)

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(self.tick_s):
            now = time.monotonic()
            with self._lock:
                late = [raw for due, raw in self._due.values() if due <= now]
                for raw in late:
                    self._due.pop(id(raw), None)
            for raw in late:
                with contextlib.suppress(Exception):
                    stuck = socket.socket(fileno=os.dup(raw.pgconn.socket))
                    try:
                        stuck.shutdown(socket.SHUT_RDWR)
                    finally:
                        stuck.close()


class OneWriteFailed(Exception):
    """A write of an optimistic batch failed: the batch runs again with a savepoint per write."""


PG_CONNECT_TIMEOUT_S = 5
PG_PROBE_EVERY_S = (
    5  # while reads cannot reach the database, one tries again this often; the rest fail at once
)
PG_IO_TIMEOUT_S = 10  # a read (a batch: twice this) unanswered this long: the database is away
PG_WRITE_BATCH = 256  # writes per transaction
PG_READERS = 4  # reader threads (and connections) per instance
PG_DRAIN_S = 10.0  # at shutdown, how long queued writes may wait for an absent database
# How long an answer waits for its turn's write (normally a millisecond or two): the next request of
# the conversation, on any instance, then finds it and its charge. While the database is away the
# answer goes out after this and the write lands later.
PG_ACK_WAIT_S = 0.5
PG_RETRY_STATES = frozenset({"40P01", "40001"})  # deadlock, serialization failure: retry the batch
PG_MAX_COLLISIONS = 100


class PostgresStore:
    """The store in PostgreSQL, for instances that share it. Same calls as Store:

    - `await run(fn, *args)`: fn(db, *args) on one of PG_READERS threads, each with its own connection,
      committed when fn returns. A database that cannot be reached is StoreUnavailable (503, retry).
    - `write(fn, *args)`: queued at once (a future of the result, once committed). One writer thread
      commits the queue in batches; while the database is away it keeps the batch and retries, so a
      turn already answered lands when the database is back. `backlogged` (LYNKR_WRITE_QUEUE_MAX
      writes waiting) makes new requests answer 503 before any upstream call, instead of dropping one.
      The orchestrator does not wait for a turn's write: the answer goes out meanwhile."""

    shared = True

    def __init__(self, url: str, queue_max: int = 10000, log: Logger | None = None) -> None:
        self.psycopg = import_psycopg()
        self.url, self.queue_max, self.log = url, queue_max, log
        self.shown_url = redact_url(url)
        self._readers = concurrent.futures.ThreadPoolExecutor(PG_READERS, thread_name_prefix="lynkr-pg-read")
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lynkr-pg-write")
        self._local = threading.local()
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self._write_conn: Any = None
        self._connections: list[Any] = []  # every connection opened, closed by close()
        self._connections_lock = threading.Lock()
        self.watch = StallWatch()
        self.reads_away = False  # the last read could not reach the database
        self._probing = False
        self._next_probe = -math.inf
        self._probe_lock = threading.Lock()
        self._unavailable_logged = -math.inf
        self._queued: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []
        self._writing = False  # event loop thread only
        self.pending = 0  # writes accepted and not yet committed
        self.away_since: float | None = None  # when the writer last lost the database
        self._give_up_at = math.inf  # set by drain(): retries stop at this monotonic time

    @property
    def backlogged(self) -> bool:
        return self.pending >= self.queue_max

    def describe(self) -> dict[str, Any]:
        away = self.away_since
        return {
            "backend": "postgres",
            "pending_writes": self.pending,
            "away_s": round(time.monotonic() - away, 1) if away is not None else None,
        }

    # -- connections --
    def _connect(self) -> Any:
        raw = self.psycopg.connect(
            self.url,
            connect_timeout=PG_CONNECT_TIMEOUT_S,
            application_name="lynkr",
            autocommit=False,
            # A database that stops answering (a host gone, a network cut) is found out in seconds,
            # not after the kernel's quarter of an hour.
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            tcp_user_timeout=PG_IO_TIMEOUT_S * 1000,
        )
        with self._connections_lock:
            self._connections = [c for c in self._connections if not c.closed]
            self._connections.append(raw)
        if not self._migrated:
            with self._migrate_lock:
                if not self._migrated:
                    apply_pg_migrations(raw)
                    self._migrated = True
        return raw

    def _lost(self, exc: BaseException, raw: Any) -> bool:
        """Whether exc means the connection is gone (as opposed to one statement failing)."""
        return isinstance(exc, self.psycopg.OperationalError | self.psycopg.InterfaceError) and (
            raw is None or raw.closed or raw.broken
        )

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        """Clients hear that the database is away, never its host, port or role; the log has the why."""
        reason = error_line(exc)
        now = time.monotonic()
        if (
            self._migrated and self.log is not None and now - self._unavailable_logged > 10
        ):  # startup: one line
            self._unavailable_logged = now
            self.log.warning("the database cannot be reached", error=reason)
        return StoreUnavailable("the database cannot be reached right now; retry shortly", reason=reason)

    # -- reads (and small writes whose caller waits) --
    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        # While the database is away one read at a time finds out whether it is back; the others
        # answer at once instead of each waiting out its own timeout.
        with self._probe_lock:
            probing = self.reads_away
            if probing and (self._probing or time.monotonic() < self._next_probe):
                raise StoreUnavailable("the database cannot be reached right now; retry shortly")
            self._probing = self._probing or probing
        try:
            result = self._call_once(fn, args)
        except StoreUnavailable:
            self.reads_away = True
            self._next_probe = time.monotonic() + PG_PROBE_EVERY_S
            raise
        finally:
            if probing:
                self._probing = False
        self.reads_away = False
        return result

    def _call_once(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        # A connection the database dropped (a restart) is only found out when used: one fresh try.
        for attempt in (1, 2):
            raw, db, began = getattr(self._local, "conn", None), None, time.monotonic()
            try:
                if raw is None or raw.closed:
                    raw = self._local.conn = self._connect()
                db = PgConnection(raw)
                self.watch.arm(raw, PG_IO_TIMEOUT_S)
                result = fn(db, *args)
                db.commit()
                return result
            except self.psycopg.Error as exc:
                if not self._lost(exc, raw):
                    with contextlib.suppress(Exception):
                        raw.rollback()
                    raise
                with contextlib.suppress(Exception):
                    raw is not None and raw.close()
                self._local.conn = None
                # Again only on a connection found dead at its first statement: after that the work may
                # have been done (a commit whose reply was lost) and must not be done twice.
                # (A connection that stalled until the watch cut it is no idle casualty: no second wait.)
                if attempt == 2 or db is None or db.answered or time.monotonic() - began > 1:
                    raise self.unavailable(exc) from None
            except BaseException:
                if raw is not None and not raw.closed:
                    with contextlib.suppress(Exception):
                        raw.rollback()
                raise
            finally:
                if raw is not None:
                    self.watch.disarm(raw)
        raise AssertionError("unreachable")

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._call, fn, args)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """From a thread outside the event loop: fn(db, *args), waited for."""
        return self._readers.submit(self._call, fn, args).result()

    async def change(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A write whose caller waits for its outcome (an admin's key): its own transaction, and a 503
        at once while the database is away rather than a wait in the queue."""
        return await self.run(fn, *args)

    # -- the write queue --
    def write(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((fn, args, future))
        self.pending += 1
        future.add_done_callback(self._landed)
        if not self._writing:
            self._next_batch()
        return future

    def _landed(self, future: asyncio.Future[Any]) -> None:
        self.pending -= 1
        if not future.cancelled() and future.exception() is not None and self.log is not None:
            self.log.error("a write to the database failed", error=error_line(future.exception()))

    def _next_batch(self) -> None:
        batch, self._queued = self._queued[:PG_WRITE_BATCH], self._queued[PG_WRITE_BATCH:]
        self._writing = bool(batch)
        if not batch:
            return
        try:
            done = asyncio.get_running_loop().run_in_executor(self._writer, self._write_batch, batch)
        except RuntimeError:  # the writer is shut down: the awaiters hear so
            self._writing = False
            for _fn, _args, future in batch:
                if not future.done():
                    future.set_exception(StoreUnavailable("the store is closed"))
            return
        done.add_done_callback(lambda f: self._batch_written(batch, f))

    def _write_batch(
        self, batch: list[tuple[Callable[..., Any], tuple[Any, ...], Any]]
    ) -> list[tuple[bool, Any]]:
        delay, collisions, isolate = 0.05, 0, False
        while True:
            raw = self._write_conn
            try:
                if raw is None or raw.closed:
                    raw = self._write_conn = self._connect()
                self.watch.arm(raw, PG_IO_TIMEOUT_S * 2 + len(batch) * 0.05)
                try:
                    outcomes = self._apply(PgConnection(raw), batch, isolate)
                    raw.commit()
                finally:
                    self.watch.disarm(raw)
                if self.away_since is not None and self.log is not None:
                    self.log.info("the database is back", away_s=round(time.monotonic() - self.away_since, 1))
                self.away_since = None
                return outcomes
            except OneWriteFailed:
                raw.rollback()
                isolate = True  # again, each write in its own savepoint: only the failing one fails
                continue
            except self.psycopg.Error as exc:
                if not self._lost(exc, raw):
                    with contextlib.suppress(Exception):
                        raw.rollback()  # the next batch starts clean
                    if exc.sqlstate in PG_RETRY_STATES and collisions < PG_MAX_COLLISIONS:
                        collisions += 1
                        time.sleep(random.uniform(0.005, 0.05) * collisions)  # apart, then again
                        continue
                    raise
                with contextlib.suppress(Exception):
                    raw is not None and raw.close()
                self._write_conn = None
                if self.away_since is None:
                    self.away_since = time.monotonic()
                    if self.log is not None:
                        self.log.warning(
                            "the database is away; writes wait and retry",
                            pending=self.pending,
                            error=error_line(exc),
                        )
                if time.monotonic() >= self._give_up_at:
                    raise self.unavailable(exc) from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    @staticmethod
    def _apply(
        db: PgConnection, batch: list[tuple[Callable[..., Any], tuple[Any, ...], Any]], isolate: bool
    ) -> list[tuple[bool, Any]]:
        """The batch's writes in the open transaction. Optimistically without savepoints (two round
        trips a write saved); `isolate` (after a write failed) gives each its own."""
        outcomes: list[tuple[bool, Any]] = []
        for fn, args, _future in batch:
            if isolate:
                db.execute("SAVEPOINT one_write")
            try:
                outcomes.append((True, fn(db, *args)))
                if isolate:
                    db.execute("RELEASE SAVEPOINT one_write")
            except Exception as exc:
                # The connection, or a deadlock with another instance's batch (each locks the sessions
                # it records, in its own order): not this write's fault, the whole batch is retried.
                if db.raw.broken or getattr(exc, "sqlstate", None) in PG_RETRY_STATES:
                    raise
                if not isolate:
                    raise OneWriteFailed from exc
                db.execute("ROLLBACK TO SAVEPOINT one_write")
                db.execute("RELEASE SAVEPOINT one_write")
                outcomes.append((False, exc))
        return outcomes

    def _batch_written(
        self,
        batch: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]],
        done: asyncio.Future[list[tuple[bool, Any]]],
    ) -> None:
        settle_writes(batch, done)
        self._next_batch()

    async def drain(self, timeout_s: float = PG_DRAIN_S) -> None:
        """At shutdown: let queued writes land, waiting at most timeout_s for an absent database."""
        self._give_up_at = time.monotonic() + timeout_s
        deadline = time.monotonic() + timeout_s + PG_CONNECT_TIMEOUT_S + 1
        while (self._writing or self._queued) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.pending and self.log is not None:
            self.log.error("writes lost at shutdown: the database stayed away", writes=self.pending)

    def close(self) -> None:
        self.watch.stop()
        self._readers.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        with self._connections_lock:
            for raw in self._connections:
                with contextlib.suppress(Exception):
                    raw.close()
            self._connections.clear()


def open_store(cfg: Config, log: Logger | None = None) -> Store | PostgresStore:
    """The configured store: PostgreSQL when LYNKR_DATABASE_URL is set, else the SQLite file."""
    url = cfg.settings.lynkr_database_url
    if url:
        return PostgresStore(url, cfg.settings.lynkr_write_queue_max, log)
    return Store(cfg.session_db_path)


def message_hash(message: dict[str, Any]) -> str:
    """A stable identity for a message as clients echo it (cache_control markers move between turns)."""
    content = message.get("content")
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
    clean = [
        {k: v for k, v in b.items() if k != "cache_control"} if isinstance(b, dict) else b for b in blocks
    ]
    canonical = json.dumps(
        {"role": message.get("role"), "content": clean}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(utf8_json(canonical)).hexdigest()[:32]


def _common_prefix(seen: list[str], messages: list[dict[str, Any]]) -> int:
    """How many leading messages the session already holds.

    Clients resend the whole history every turn, and hashing all of it every time grows with the
    history (bench/README.md, Figures behind the code). A history that only grew is recognised by
    hashing its first message and the last one
    already seen (plus the count); anything else (compaction, an edited turn) falls back to
    comparing every message."""
    n = min(len(seen), len(messages))
    if n == 0:
        return 0
    if message_hash(messages[0]) == seen[0] and message_hash(messages[n - 1]) == seen[n - 1]:
        return n
    common = 0
    while common < n and seen[common] == message_hash(messages[common]):
        common += 1
    return common


@dataclass
class TurnRecord:
    """What one /v1/messages exchange adds to a session."""

    session_id: str
    request_id: str
    model: str
    messages: list[dict[str, Any]]  # the client's full history as sent
    server_turns: list[dict[str, Any]] = field(
        default_factory=list
    )  # assistant/user messages the client never saw
    reply: dict[str, Any] | None = None  # the client-visible assistant message
    usage: dict[str, Any] | None = None
    cache: str = "bypass"  # hit | miss | stored (a miss kept for reuse) | bypass
    provider: str | None = None  # the provider that answered (None: a cache hit, or no answer)
    cost_usd: float | None = None  # None: a cache hit, an unpriced model, or no answer
    signed: list[str] = field(default_factory=list)  # signature_keys of the thinking the provider returned
    sent: dict[str, Any] | None = None  # the request as one upstream call answered it (None: a tool loop)
    request_log: dict[str, Any] = field(
        default_factory=dict
    )  # the request's log fields: the router notes the provider
    owner: str | None = None  # the personal key the request came with (None: the shared key, or none)
    started_at: float = field(default_factory=time.time)  # when the request came in
    answered_at: float = 0.0  # when the answer went out (the ledger's time: a queued write lands later)


LEDGER_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


TURN_COLUMNS = (
    "session_id, created_at, kind, role, content, model, usage, cache, request_id, provider, cost_usd"
)
SESSION_UPDATE = "UPDATE sessions SET updated_at = ?, history = ? WHERE id = ?"


def storable_text(text: str) -> str:
    """A client's string as both stores can keep it: no NUL (PostgreSQL refuses it), lone surrogates
    escaped (UTF-8 cannot encode them)."""
    return escape_surrogates(text.replace("\x00", "\\u0000"))


def _open_session(db: Any, turn: TurnRecord, now: float) -> tuple[str, str | None, bool, bool, float]:
    """(history JSON, owner, created now, this request recorded already, last updated), the session's
    row created if new and locked until commit. PostgreSQL: one round trip, which also finds a retried
    batch's turn (its commit's reply lost with the connection); SQLite's writer is alone, never retries."""
    if dialect_of(db).name == "postgres":
        return db.execute(
            "INSERT INTO sessions (id, created_at, updated_at, history, owner) VALUES (?, ?, ?, '[]', ?)"
            " ON CONFLICT (id) DO UPDATE SET id = excluded.id RETURNING history, owner, xmax = 0,"
            " EXISTS (SELECT 1 FROM turns WHERE request_id = ? AND session_id = ?), updated_at",
            (turn.session_id, now, now, turn.owner, turn.request_id, turn.session_id),
        ).fetchone()
    created = (
        db.execute(
            "INSERT INTO sessions (id, created_at, updated_at, history, owner) VALUES (?, ?, ?, '[]', ?)"
            " ON CONFLICT (id) DO NOTHING",
            (turn.session_id, now, now, turn.owner),
        ).rowcount
        == 1
    )
    seen_json, owner, updated_at = db.execute(
        "SELECT history, owner, updated_at FROM sessions WHERE id = ?", (turn.session_id,)
    ).fetchone()
    return seen_json, owner, created, False, updated_at


@functools.lru_cache(maxsize=64)
def _pg_turn_statement(charged: bool, moved: bool, rows: int) -> str:
    """The rest of a turn's write as one PostgreSQL statement (data-modifying CTEs): its ledger row, the
    session's new history, its turns. Each round trip costs the writer ~80 us of CPU."""
    parts = [("charged", LEDGER_INSERT + " ON CONFLICT DO NOTHING")] if charged else []
    if moved:
        parts.append(("moved", SESSION_UPDATE))
    last = f"INSERT INTO turns ({TURN_COLUMNS}) VALUES " + ", ".join(["(" + ", ".join("?" * 11) + ")"] * rows)
    if not rows:
        last = parts.pop()[1]
    if not parts:
        return last
    return "WITH " + ", ".join(f"{name} AS ({sql})" for name, sql in parts) + " " + last


def _write_turn(
    db: Any,
    charge: tuple[Any, ...] | None,
    history: list[str] | None,
    session_id: str,
    rows: list[tuple[Any, ...]],
    now: float = 0.0,
) -> None:
    moved = (max(time.time(), now), storable_json(history), session_id) if history is not None else None
    if dialect_of(db).name == "postgres":
        if charge or moved or rows:
            params = [*(charge or ()), *(moved or ()), *(v for row in rows for v in row)]
            db.execute(_pg_turn_statement(charge is not None, moved is not None, len(rows)), params)
        return
    if charge is not None:
        db.execute(LEDGER_INSERT, charge)
    if moved is not None:
        db.execute(SESSION_UPDATE, moved)
    if rows:
        db.executemany(f"INSERT INTO turns ({TURN_COLUMNS}) VALUES ({', '.join('?' * 11)})", rows)


def _charge_row(turn: TurnRecord, at: float) -> tuple[Any, ...] | None:
    """The ledger row of an answer an upstream gave, or of what it generated before the stream was
    abandoned (None for a cache hit or no answer)."""
    if turn.cache == "hit" or (turn.reply is None and not turn.usage):
        return None
    usage = turn.usage or (turn.reply or {}).get("usage") or {}
    counts = [usage.get(k) if isinstance(usage.get(k), int) else 0 for k in LEDGER_USAGE_KEYS]
    model = storable_text(str(turn.request_log.get("upstream_model") or turn.model))
    return (at, turn.owner, turn.provider, model, *counts, turn.cost_usd, turn.request_id, turn.session_id)


def record_turn(db: Any, turn: TurnRecord) -> int:
    """Append only what this session has not seen yet, in the caller's transaction (Store.write);
    returns how many turns were written.

    The session's row is locked first (PostgreSQL; SQLite's writer is already alone), so instances
    recording the same conversation take turns. The reply counts as part of the history it extends:
    when a later request of the conversation, answered by another instance while this write waited,
    has already recorded this exchange from its resent history, nothing is written twice. Every answer
    an upstream gave is charged to its key in the usage ledger, recorded in the transcript or not."""
    now = turn.answered_at or time.time()
    seen_json, owner, created, recorded, updated_at = _open_session(db, turn, now)
    if turn.signed and turn.provider:
        db.executemany(
            "INSERT INTO thinking_signatures (key, provider, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET provider = excluded.provider, created_at = excluded.created_at",
            [(key, turn.provider, now) for key in turn.signed],
        )
    charge = _charge_row(turn, now)
    seen: list[str] = json.loads(seen_json)
    sequence = [*turn.messages, turn.reply] if turn.reply is not None else turn.messages
    common = _common_prefix(seen, sequence)
    foreign = not created and owner != turn.owner  # another key's session (a race the request check missed)
    # recorded: a batch retried after its commit's reply was lost. A history that already goes on past
    # this exchange, written since this request came in: a later request of the conversation, answered
    # elsewhere, recorded it (the same before it came in is a client going back: recorded again).
    late = common == len(sequence) < len(seen) and updated_at > turn.started_at
    if foreign or recorded or late:
        _write_turn(db, charge, None, turn.session_id, [])
        return 0
    common = min(common, len(turn.messages))
    history = seen[:common] + [message_hash(m) for m in turn.messages[common:]]
    rows: list[tuple[Any, ...]] = []
    first = (turn.session_id, now)
    for message in turn.messages[common:]:
        kind = "user" if message.get("role") != "assistant" else "assistant"
        content = storable_json(message.get("content"))
        rows.append(
            (*first, kind, message.get("role"), content, None, None, None, turn.request_id, None, None)
        )
    model = storable_text(turn.model)
    for message in turn.server_turns:
        content = storable_json(message.get("content"))
        rows.append(
            (
                *first,
                "server_tool",
                message.get("role"),
                content,
                model,
                None,
                None,
                turn.request_id,
                turn.provider,
                None,
            )
        )
    if turn.reply is not None:
        usage_json = storable_json(turn.usage or turn.reply.get("usage") or {})
        content = storable_json(turn.reply.get("content"))
        reply = (content, model, usage_json, turn.cache, turn.request_id, turn.provider, turn.cost_usd)
        rows.append((*first, "assistant", "assistant", *reply))
        history.append(message_hash(turn.reply))
    _write_turn(db, charge, history, turn.session_id, rows, now)
    return len(rows)


def record_charge(db: Any, turn: TurnRecord) -> None:
    """The ledger row alone, for a turn whose transcript could not be stored: no answer goes uncharged."""
    _write_turn(db, _charge_row(turn, turn.answered_at or time.time()), None, turn.session_id, [])


# -- personal keys and the usage ledger --

KEY_PREFIX = "lk-"  # personal keys look like lk-<43 url-safe characters>
BUDGET_PERIODS = ("day", "week", "month")


@dataclass(frozen=True)
class PersonalKey:
    name: str
    key_hash: str
    prefix: str
    created_at: float
    revoked_at: float | None = None
    budget_usd: float | None = None
    budget_period: str | None = None
    models: tuple[str, ...] = ()
    rpm: int | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prefix": self.prefix,
            "created_at": self.created_at,
            "revoked": self.revoked_at is not None,
            "budget": f"{self.budget_usd:g}/{self.budget_period}" if self.budget_usd is not None else None,
            "models": list(self.models),
            "rpm": self.rpm,
        }


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def period_start(period: str, now: float) -> tuple[float, float]:
    """(start, next start) of the UTC day, ISO week (Monday) or month holding `now`."""
    day = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    if period == "day":
        start, end = day, day + datetime.timedelta(days=1)
    elif period == "week":
        start = day - datetime.timedelta(days=day.weekday())
        end = start + datetime.timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = (start + datetime.timedelta(days=32)).replace(day=1)
    return start.timestamp(), end.timestamp()


def create_key(
    db: sqlite3.Connection,
    name: str,
    budget: tuple[float, str] | None = None,
    models: tuple[str, ...] = (),
    rpm: int | None = None,
) -> str:
    """A new personal key; returns the key itself (only its hash is kept: it is shown this once)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    inserted = db.execute(  # two admins on two instances at once: one name, one key
        "INSERT INTO api_keys (name, key_hash, prefix, created_at, budget_usd, budget_period, models, rpm)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        (
            name,
            key_hash(key),
            key[:10],
            time.time(),
            *(budget or (None, None)),
            json_dumps(list(models)),
            rpm,
        ),
    ).rowcount
    if inserted != 1:
        raise InvalidRequest(f"a key named {name!r} exists already (revoked keys keep their name)")
    return key


def revoke_key(db: sqlite3.Connection, name: str) -> bool:
    return (
        db.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (time.time(), name)
        ).rowcount
        == 1
    )


def load_keys(db: sqlite3.Connection) -> list[PersonalKey]:
    rows = db.execute(
        "SELECT name, key_hash, prefix, created_at, revoked_at, budget_usd, budget_period, models, rpm"
        " FROM api_keys ORDER BY name"
    )
    return [PersonalKey(*row[:7], tuple(json.loads(row[7] or "[]")), row[8]) for row in rows]


def spent_since(db: Any, name: str, since: float) -> float:
    row = db.execute(
        "SELECT COALESCE(SUM(cost_usd), 0) FROM usage WHERE key_name = ? AND at >= ?", (name, since)
    ).fetchone()
    return float(row[0] or 0.0)


def take_request_slot(db: Any, name: str, rpm: int) -> float | None:
    """A key's requests-per-minute window in the shared database (PostgreSQL: the key's advisory lock
    makes instances check and count one at a time, on the database's clock, so that instances whose
    clocks differ share one minute). None: counted; else seconds until a slot frees."""
    (now,) = db.execute(
        "SELECT pg_advisory_xact_lock(hashtext(?)), EXTRACT(EPOCH FROM clock_timestamp())::float8",
        ("lynkr-rpm:" + name,),
    ).fetchone()[1:]
    db.execute("DELETE FROM key_requests WHERE key_name = ? AND at <= ?", (name, now - 60))
    count, oldest = db.execute(
        "SELECT COUNT(*), MIN(at) FROM key_requests WHERE key_name = ?", (name,)
    ).fetchone()
    if count >= rpm:
        return float(oldest) + 60 - now
    db.execute("INSERT INTO key_requests (key_name, at) VALUES (?, ?)", (name, now))
    return None


def session_owner(db: sqlite3.Connection, session_id: str) -> tuple[bool, str | None]:
    """(the session exists, the key it belongs to)."""
    row = db.execute("SELECT owner FROM sessions WHERE id = ?", (session_id,)).fetchone()
    return (row is not None, row[0] if row else None)


def total(column: str) -> str:
    """SUM that is 0 over no rows, in SQL both backends run (SQLite's TOTAL is its own)."""
    return f"COALESCE(SUM({column}), 0)"


# `lynkr usage --by X` -> the SQL expression rows are grouped by
USAGE_GROUPS = {
    "key": "COALESCE(key_name, '(shared)')",
    "model": "COALESCE(model, '?')",
    "provider": "COALESCE(provider, '?')",
    "day": "{day}",  # the dialect's (Dialect.usage_day)
}


def usage_report(
    db: sqlite3.Connection, by: str, since: float, owner: str | None = None
) -> list[dict[str, Any]]:
    """Requests, tokens and cost since `since`, grouped `by` (USAGE_GROUPS); only `owner`'s when named."""
    group = USAGE_GROUPS[by].format(day=dialect_of(db).usage_day)
    mine = " AND key_name = ?" if owner is not None else ""
    rows = db.execute(
        f"SELECT {group} AS g, COUNT(*), {total('input_tokens')}, {total('output_tokens')},"
        f" {total('cache_read_tokens')}, {total('cache_write_tokens')}, {total('cost_usd')}"
        f" FROM usage WHERE at >= ?{mine} GROUP BY g ORDER BY g",
        (since, *([owner] if owner is not None else [])),
    )
    return [
        {
            by: g,
            "requests": n,
            "input_tokens": int(i),
            "output_tokens": int(o),
            "cache_read_tokens": int(cr),
            "cache_write_tokens": int(cw),
            "cost_usd": round(float(c), 6),
        }
        for g, n, i, o, cr, cw, c in rows
    ]


def save_calibration(
    db: sqlite3.Connection, provider: str, model: str, calibration: TokenCalibration
) -> None:
    db.execute(
        "INSERT INTO token_calibration (provider, model, state, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (provider, model) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        (provider, model, json.dumps(dataclasses.astuple(calibration)), time.time()),
    )


def load_calibrations(db: sqlite3.Connection) -> dict[tuple[str, str], TokenCalibration]:
    found = {}
    for provider, model, state in db.execute("SELECT provider, model, state FROM token_calibration"):
        with contextlib.suppress(ValueError, TypeError):
            found[(provider, model)] = TokenCalibration(*(float(x) for x in json.loads(state)))
    return found


def signers_of(db: sqlite3.Connection, keys: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
        part = keys[start : start + 500]
        found.update(
            db.execute(
                f"SELECT key, provider FROM thinking_signatures WHERE key IN ({','.join('?' * len(part))})",
                part,
            ).fetchall()
        )
    return found


class SignatureBook:
    """signature_key -> the provider that signed it: recent ones in memory (LRU), all in the store."""

    def __init__(self, store: Store, max_entries: int = 100_000) -> None:
        self.store = store
        self.max_entries = max_entries
        self.known: collections.OrderedDict[str, str] = collections.OrderedDict()

    def note(self, keys: Iterable[str], provider: str) -> None:
        for key in keys:
            self.known[key] = provider
            self.known.move_to_end(key)
        while len(self.known) > self.max_entries:
            self.known.popitem(last=False)

    async def signers(self, keys: list[str]) -> dict[str, str]:
        found = {k: self.known[k] for k in keys if k in self.known}
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing:
            try:
                loaded = await self.store.run(signers_of, missing)
            except StoreUnavailable:  # unknown signers: their thinking is left out, the request goes on
                return found
            for key, provider in loaded.items():
                self.note((key,), provider)
            found.update(loaded)
        return found


def list_sessions(db: sqlite3.Connection, limit: int, owner: str | None = None) -> list[dict[str, Any]]:
    """The latest sessions; only `owner`'s when one is named."""
    where = "WHERE s.owner = ?" if owner is not None else ""
    cursor = db.execute(
        "SELECT s.id, s.created_at, s.updated_at, COUNT(t.id), SUM(t.cost_usd) FROM sessions s"
        f" LEFT JOIN turns t ON t.session_id = s.id {where} GROUP BY s.id ORDER BY s.updated_at DESC LIMIT ?",
        (*([owner] if owner is not None else []), limit),
    )
    return [
        {
            "id": r[0],
            "created_at": r[1],
            "updated_at": r[2],
            "turns": r[3],
            "cost_usd": round(r[4], 8) if r[4] else r[4],
        }
        for r in cursor
    ]


def get_session(db: sqlite3.Connection, session_id: str) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT id, created_at, updated_at, owner FROM sessions WHERE id = ?", (session_id,)
    ).fetchone()
    if row is None:
        return None
    turns = [
        {
            "kind": r[0],
            "role": r[1],
            "content": json.loads(r[2]),
            "model": r[3],
            "usage": json.loads(r[4]) if r[4] else None,
            "cache": r[5],
            "request_id": r[6],
            "created_at": r[7],
            "provider": r[8],
            "cost_usd": r[9],
        }
        for r in db.execute(
            "SELECT kind, role, content, model, usage, cache, request_id, created_at, provider, cost_usd"
            " FROM turns WHERE session_id = ? ORDER BY id",
            (session_id,),
        )
    ]
    costs = [t["cost_usd"] for t in turns if t["cost_usd"] is not None]
    return {
        "id": row[0],
        "created_at": row[1],
        "updated_at": row[2],
        "owner": row[3],
        "cost_usd": round(sum(costs), 8) if costs else None,
        "turns": turns,
    }


# == 12. Cache ==
#
# A prompt fingerprint -> final answer, in an OrderedDict kept in LRU order with a TTL per entry.
# The key is the canonical request after model mapping; Claude Code's billing block (new on every
# request), metadata, stream and cache_control markers are left out so identical prompts match.

CACHE_KEY_FIELDS = (
    "system",
    "messages",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "max_tokens",
    "thinking",
    "output_config",
)


def _without_cache_control(blocks: Any) -> Any:
    """cache_control sits on top-level blocks (system, message content, tool_result, tools): a
    shallow pass is enough, and far cheaper than walking a 50 KB request recursively."""
    if not isinstance(blocks, list):
        return blocks
    return [
        {k: v for k, v in b.items() if k != "cache_control"}
        if isinstance(b, dict) and "cache_control" in b
        else b
        for b in blocks
    ]


def prompt_fingerprint(req: dict[str, Any], target_model: str) -> str:
    canonical: dict[str, Any] = {"model": target_model}
    for name in CACHE_KEY_FIELDS:
        if req.get(name) is not None:
            canonical[name] = req[name]
    system = canonical.get("system")
    if (
        isinstance(system, list)
        and system
        and str(system[0].get("text", "")).startswith(BILLING_HEADER_PREFIX)
    ):
        system = system[1:]
    if system is not None:
        canonical["system"] = _without_cache_control(system)
    if "tools" in canonical:
        canonical["tools"] = _without_cache_control(canonical["tools"])
    canonical["messages"] = [
        {**m, "content": _without_cache_control(m["content"])} if isinstance(m.get("content"), list) else m
        for m in canonical["messages"]
    ]
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(utf8_json(text)).hexdigest()


class PromptCache:
    def __init__(
        self, enabled: bool, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.enabled = enabled and max_entries > 0
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: collections.OrderedDict[str, tuple[float, dict[str, Any]]] = collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        expires, message = entry
        if self.clock() >= expires:
            del self._entries[key]  # expired entries never answer
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return message

    def put(self, key: str, message: dict[str, Any], expires_at: float | None = None) -> None:
        """expires_at: an entry's own expiry (one another instance stored); default a TTL from now."""
        self._entries[key] = (self.clock() + self.ttl_s if expires_at is None else expires_at, message)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    # The orchestrator's calls: the shared cache below answers them from the database as well.
    async def lookup(self, key: str) -> dict[str, Any] | None:
        return self.get(key)

    def keep(self, key: str, message: dict[str, Any]) -> None:
        self.put(key, message)


def cache_fetch(db: Any, key: str, now: float) -> tuple[dict[str, Any], float] | None:
    row = db.execute(
        "SELECT message, expires_at FROM prompt_cache WHERE key = ? AND expires_at > ?", (key, now)
    ).fetchone()
    if row is None:
        return None
    db.execute(
        "UPDATE prompt_cache SET used_at = ? WHERE key = ?", (now, key)
    )  # least recently used: not this
    return json.loads(row[0]), float(row[1])


def cache_store(
    db: Any, key: str, message_json: str, now: float, expires_at: float, max_entries: int
) -> None:
    db.execute(
        "INSERT INTO prompt_cache (key, message, expires_at, used_at) VALUES (?, ?, ?, ?) ON CONFLICT (key)"
        " DO UPDATE SET message = excluded.message, expires_at = excluded.expires_at, used_at = excluded.used_at",
        (key, message_json, expires_at, now),
    )
    db.execute("DELETE FROM prompt_cache WHERE expires_at <= ?", (now,))
    db.execute(
        "DELETE FROM prompt_cache WHERE key IN (SELECT key FROM prompt_cache ORDER BY used_at DESC OFFSET ?)",
        (max_entries,),
    )


class SharedPromptCache(PromptCache):
    """PROMPT_CACHE_BACKEND=postgres: the entries live in the shared database (expiry and the LRU bound
    kept there), so an answer one instance stored is a hit on every other. This process keeps the
    entries it has seen in front (an entry never changes until it expires, so a copy cannot go stale);
    a database that cannot be reached makes a lookup a miss, never an error."""

    def __init__(
        self, store: PostgresStore, ttl_s: float, max_entries: int, log: Logger | None = None
    ) -> None:
        super().__init__(True, ttl_s, max_entries, clock=time.time)
        self.store, self.log = store, log

    async def lookup(self, key: str) -> dict[str, Any] | None:
        local = self.get(key)
        if local is not None:
            return local
        try:
            found = await self.store.run(cache_fetch, key, self.clock())
        except StoreUnavailable:
            return None
        if found is None:
            return None
        message, expires_at = found
        self.put(key, message, expires_at)
        self.misses -= 1  # the local miss above was a hit after all
        self.hits += 1
        return message

    def keep(self, key: str, message: dict[str, Any]) -> None:
        self.put(key, message)
        if self.store.backlogged:
            return  # a cache entry is the first thing to go when writes queue up
        now = self.clock()
        self.store.write(cache_store, key, json_dumps(message), now, now + self.ttl_s, self.max_entries)


def cached_reply(message: dict[str, Any], model: str) -> dict[str, Any]:
    """A stored answer re-served: new id, the client's model name, all input counted as cache reads."""
    usage = dict(message.get("usage") or {})
    total_input = sum(
        int(usage.get(k) or 0)
        for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )
    usage.update(input_tokens=0, cache_creation_input_tokens=0, cache_read_input_tokens=total_input)
    return {**message, "id": new_id("msg_"), "model": model, "usage": usage}


# == 13. Policy ==
#
# Every gate in one place, read from the environment once. A denial is a ToolDenied whose message
# names the variable to change; the tool layer turns it into an is_error tool result, identically
# for model-initiated and direct (POST /v1/tools/{name}) calls.

DEFAULT_FILE_BLOCKED_PATHS = DEFAULT_FILE_BLOCKED_PATHS_TEXT


class ToolDenied(Exception):
    """A policy said no. The message names the variable that would allow it."""


class ToolFailed(Exception):
    """A tool could not do what was asked (bad path, missing file, ...): an is_error result."""


@functools.lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _glob_tokens(pattern: str) -> tuple[tuple[str, str], ...]:
    tokens, i = [], 0
    while i < len(pattern):
        for text, kind in (("**/", "deep/"), ("**", "deep"), ("*", "star"), ("?", "one")):
            if pattern.startswith(text, i):
                tokens.append((kind, ""))
                i += len(text)
                break
        else:
            tokens.append(("lit", pattern[i]))
            i += 1
    return tuple(tokens)


def _glob_nfa_match(path: str, tokens: tuple[tuple[str, str], ...]) -> bool:
    """The glob as a set of positions advanced one character at a time: time is len(path) x len(tokens),
    never exponential (a regex of `*a*a*a*a*b` backtracks exponentially on a long name of a's).
    State i: before token i; state -1 - i: inside a `**/` at token i (it must end with a slash)."""
    end = len(tokens)

    def closure(states: set[int]) -> set[int]:
        todo, seen = list(states), set(states)
        while todo:
            i = todo.pop()
            if 0 <= i < end and tokens[i][0] in ("star", "deep", "deep/") and i + 1 not in seen:
                seen.add(i + 1)
                todo.append(i + 1)
        return seen

    states = closure({0})
    for ch in path:
        following: set[int] = set()
        for i in states:
            if i < 0:  # inside `**/`: any character; a slash may end it
                following.add(i)
                if ch == "/":
                    following.add(-1 - i + 1)
                continue
            if i == end:
                continue
            kind, literal = tokens[i]
            if kind == "lit":
                if ch == literal:
                    following.add(i + 1)
            elif kind == "one":
                if ch != "/":
                    following.add(i + 1)
            elif kind == "star":
                if ch != "/":
                    following.add(i)
            elif kind == "deep":
                following.add(i)
            else:  # "deep/"
                following.add(-1 - i)
                if ch == "/":
                    following.add(i + 1)
        if not following:
            return False
        states = closure(following)
    return end in states


# Globs with more wildcards than this are matched by the automaton instead of a backtracking regex.
GLOB_REGEX_MAX_WILDCARDS = 2


def glob_match(path: str, pattern: str) -> bool:
    """Path globs as git and ripgrep read them: `*` stays within a folder, `**/` spans folders.
    A pattern without '/' matches the file name anywhere."""
    if "/" not in pattern:
        name = posixpath.basename(path)
        if pattern.count("*") > GLOB_REGEX_MAX_WILDCARDS:
            return _glob_nfa_match(name, _glob_tokens(pattern.replace("**", "*")))
        return fnmatch.fnmatchcase(name, pattern)
    pattern = pattern.lstrip("/")
    if pattern.count("*") > GLOB_REGEX_MAX_WILDCARDS:
        return _glob_nfa_match(path, _glob_tokens(pattern))
    return bool(_glob_regex(pattern).match(path))


NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def non_global_address(address: str) -> str:
    """Why an address is not a public Internet host ("" when it is). IPv6 forms that carry an IPv4
    address (mapped, 6to4, Teredo, NAT64) are judged by that address too: http://[2002:7f00:1::]/ is
    127.0.0.1. Shared address space (100.64.0.0/10), site-local and reserved ranges are not global."""
    ip = ipaddress.ip_address(address.split("%")[0])
    candidates: list[Any] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        candidates += [v4 for v4 in (ip.ipv4_mapped, ip.sixtofour) if v4 is not None]
        candidates += list(ip.teredo or ())
        if any(ip in prefix for prefix in NAT64_PREFIXES):
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    for candidate in candidates:
        # is_global alone is not enough: Python counts some reserved IPv6 ranges (::/8, which holds the
        # old IPv4-compatible ::127.0.0.1) as global.
        if not candidate.is_global or candidate.is_multicast or candidate.is_reserved:
            return f"{candidate} is not a global unicast address"
        if isinstance(candidate, ipaddress.IPv6Address) and candidate.is_site_local:
            return f"{candidate} is site-local"
    return ""


def search_provider(s: Any) -> str:
    if s.web_search_provider != "auto":
        return s.web_search_provider
    return "brave" if s.brave_api_key else "tavily" if s.tavily_api_key else "searxng"


@dataclass
class Policy:
    max_steps: int = 8
    max_tool_calls: int = 32
    disallowed_tools: tuple[str, ...] = ()
    file_blocked_paths: tuple[str, ...] = split_csv(DEFAULT_FILE_BLOCKED_PATHS)
    web_allowed_hosts: tuple[str, ...] = ()
    web_search_endpoint: str = ""
    web_search_provider: str = "searxng"  # resolved from "auto" at start-up
    web_search_key: str = ""  # the chosen service's key (Brave, Tavily)
    web_search_max_results: int = 8
    web_fetch_max_bytes: int = 2 * 1024 * 1024
    tool_timeout_s: float = 120.0
    git_allow_push: bool = False
    git_allow_pull: bool = True
    git_allow_commit: bool = True
    git_require_tests: bool = False
    git_test_command: str = ""
    git_timeout_s: float = 120.0
    workspace_test_command: str = ""
    test_timeout_s: float = 600.0
    coverage_files: tuple[str, ...] = ()
    git_allow_hooks: bool = False
    subprocess_env: tuple[str, ...] = ()  # operator-added names passed to programs tools run
    sandbox: str = "none"  # bwrap | podman | none: resolved at start-up from POLICY_SANDBOX (resolve_sandbox)
    sandbox_image: str = ""
    sandbox_network: bool = False
    sandbox_hide: tuple[str, ...] = ()
    sandbox_read: tuple[str, ...] = ()
    git_test_dependency_dirs: tuple[str, ...] = ("node_modules", ".venv", "venv")

    @classmethod
    def from_config(cls, cfg: Config) -> Policy:
        s = cfg.settings
        return cls(
            max_steps=s.policy_max_steps,
            max_tool_calls=s.policy_max_tool_calls,
            disallowed_tools=s.policy_disallowed_tools,
            file_blocked_paths=s.policy_file_blocked_paths,
            web_allowed_hosts=s.web_search_allowed_hosts,
            web_search_endpoint=s.web_search_endpoint,
            web_search_provider=search_provider(s),
            web_search_key={"brave": s.brave_api_key, "tavily": s.tavily_api_key}.get(search_provider(s), ""),
            web_search_max_results=s.web_search_max_results,
            web_fetch_max_bytes=s.web_fetch_max_bytes,
            tool_timeout_s=s.lynkr_tool_timeout_s,
            git_allow_push=s.policy_git_allow_push,
            git_allow_pull=s.policy_git_allow_pull,
            git_allow_commit=s.policy_git_allow_commit,
            git_require_tests=s.policy_git_require_tests,
            git_test_command=s.policy_git_test_command,
            git_timeout_s=s.lynkr_git_timeout_s,
            workspace_test_command=s.workspace_test_command,
            test_timeout_s=s.workspace_test_timeout_s,
            coverage_files=s.workspace_test_coverage_files,
            git_allow_hooks=s.policy_git_allow_hooks,
            subprocess_env=s.lynkr_subprocess_env,
            sandbox=s.policy_sandbox,
            sandbox_network=s.policy_sandbox_network,
            sandbox_hide=s.policy_sandbox_hide,
            sandbox_read=s.policy_sandbox_read,
            sandbox_image=s.policy_sandbox_image,
            git_test_dependency_dirs=s.policy_git_test_dependency_dirs,
        )

    GIT_GATES: ClassVar[dict[str, tuple[str, str]]] = {  # action -> (attribute, variable that allows it)
        "push": ("git_allow_push", "POLICY_GIT_ALLOW_PUSH"),
        "pull": ("git_allow_pull", "POLICY_GIT_ALLOW_PULL"),
        "commit": ("git_allow_commit", "POLICY_GIT_ALLOW_COMMIT"),
    }

    def check_git(self, action: str) -> None:
        attribute, variable = self.GIT_GATES[action]
        if not getattr(self, attribute):
            raise ToolDenied(f"git {action} is not allowed; set {variable}=true to allow it")

    def check_tool(self, name: str) -> None:
        for glob in self.disallowed_tools:
            if fnmatch.fnmatchcase(name, glob):
                raise ToolDenied(f"tool {name} is disabled by POLICY_DISALLOWED_TOOLS ({glob})")

    def check_path(self, rel_path: str) -> None:
        """rel_path is POSIX, relative to the workspace. A pattern without '/' matches any path component.
        Matching ignores case: on a case-insensitive filesystem `.ENV` is `.env`."""
        lowered = rel_path.lower()
        prefilter, by_component, by_path = self._blocked_matchers
        if prefilter is not None and prefilter.search(lowered):
            parts = [p for p in lowered.split("/") if p and p != "."]
            for pattern, regex in by_component:  # the exact check, component by component
                if any(regex.match(part) for part in parts):
                    raise ToolDenied(f"{rel_path} is blocked by POLICY_FILE_BLOCKED_PATHS ({pattern})")
        for pattern in by_path:
            if glob_match(lowered, pattern.lower()) or glob_match(lowered, pattern.lower() + "/**"):
                raise ToolDenied(f"{rel_path} is blocked by POLICY_FILE_BLOCKED_PATHS ({pattern})")

    @functools.cached_property
    def _blocked_matchers(
        self,
    ) -> tuple[re.Pattern[str] | None, list[tuple[str, re.Pattern[str]]], list[str]]:
        """The blocked-path patterns compiled once: a monorepo's walk checks every path against them. One
        unanchored search over the whole path rules out nearly every path at C speed (a component that
        matches a pattern is a substring the pattern's regex finds); only then are components checked."""
        patterns = [p.strip("/") for p in self.file_blocked_paths if p.strip("/")]
        by_component = [(p, re.compile(fnmatch.translate(p.lower()))) for p in patterns if "/" not in p]
        # For a search, a pattern's leading and trailing `*` add nothing ("*.pem" is found as ".pem"),
        # and without them the alternation is a near-literal scan.
        cores = [fnmatch.translate(p.lower().strip("*")).removesuffix("\\Z") for p, _regex in by_component]
        prefilter = re.compile("|".join(f"(?:{core})" for core in cores)) if by_component else None
        return prefilter, by_component, [p for p in patterns if "/" in p]

    def host_allowlisted(self, host: str) -> bool:
        host = host.lower().strip("[]")
        return any(fnmatch.fnmatchcase(host, pattern) for pattern in self.web_allowed_hosts)

    def check_web_target(self, host: str, addresses: list[str]) -> None:
        """Allowlist (when set) and no private/loopback/link-local address unless allowlisted."""
        if self.host_allowlisted(host):
            return
        if self.web_allowed_hosts:
            raise ToolDenied(f"host {host} is not in WEB_SEARCH_ALLOWED_HOSTS")
        for address in addresses:
            blocked = non_global_address(address)
            if blocked:
                raise ToolDenied(
                    f"host {host} resolves to {address}, which is not globally routable ({blocked}); "
                    "add it to WEB_SEARCH_ALLOWED_HOSTS to allow it"
                )


# == 14. Tools ==
#
# TOOLS maps a name to a ToolSpec (description, JSON schema, handler). `run_tool` is the one entry
# point for model-initiated and direct calls: policy first, then schema validation, then the
# handler (blocking handlers on a worker thread), and every failure becomes an is_error result.
# Workspace paths go through `WorkspacePaths.resolve`, which refuses `..`, absolute paths
# outside the root, symlinks leading out and sibling prefixes (/repo-evil for /repo).

JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def schema_errors(schema: dict[str, Any], value: Any, path: str = "input") -> list[str]:
    """A small JSON Schema subset: type, enum, required, properties, additionalProperties, items,
    minimum/maximum, minLength. Enough for tool inputs; each error names the field."""
    errors: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(JSON_TYPES.get(k, lambda v: True)(value) for k in kinds):
            return [
                f"{path}: expected {' or '.join(kinds)}, got {type(value).__name__ if value is not None else 'null'}"
            ]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: must be one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name not in value:
                errors.append(f"{path}.{name}: required")
        for name, item in value.items():
            if name in props:
                errors.extend(schema_errors(props[name], item, f"{path}.{name}"))
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}.{name}: unknown field")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors.extend(schema_errors(schema["items"], item, f"{path}.{i}"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: must be <= {schema['maximum']}")
    if isinstance(value, str) and "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{path}: must not be empty" if schema["minLength"] == 1 else f"{path}: too short")
    if isinstance(value, str) and "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: too long ({len(value)} characters; at most {schema['maxLength']})")
    return errors


@dataclass
class ToolSpec:
    name: str
    description: str
    input_schema: dict[str, Any]
    handler: Callable[..., Any]
    blocking: bool = True  # run on a worker thread (file/SQLite/subprocess work)
    timeout_setting: str | None = None  # a CONFIG_KEYS name (ms) overriding LYNKR_TOOL_TIMEOUT_MS

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


TOOLS: dict[str, ToolSpec] = {}


def tool(
    name: str,
    description: str,
    properties: dict[str, Any],
    required: Iterable[str] = (),
    *,
    blocking: bool = True,
    timeout_setting: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a server-side tool. The handler gets (ctx: ToolContext, args: dict)."""
    schema = {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        TOOLS[name] = ToolSpec(name, description, schema, fn, blocking, timeout_setting)
        return fn

    return register


@dataclass
class ToolResult:
    content: Any  # str, or a list of Anthropic content blocks
    is_error: bool = False

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(
            b.get("text", "") for b in self.content if isinstance(b, dict) and b.get("type") == "text"
        )


# A blocking tool runs on a thread that a timeout cannot stop. So each call carries an event, set when
# the caller gave up; the workspace writers check it before changing anything, and an edit that was
# already under way is rolled back instead of landing after the model was told it failed.
_TOOL_CALL = threading.local()
TOOL_THREADS = 16


def _run_blocking(
    handler: Callable[..., Any], ctx: Any, args: dict[str, Any], cancelled: threading.Event
) -> Any:
    _TOOL_CALL.cancelled = cancelled
    try:
        return handler(ctx, args)
    finally:
        _TOOL_CALL.cancelled = None


def check_not_cancelled() -> None:
    cancelled = getattr(_TOOL_CALL, "cancelled", None)
    if cancelled is not None and cancelled.is_set():
        raise ToolFailed("the call timed out; it changes nothing more")


class WorkspacePaths:
    """Maps user paths into WORKSPACE_ROOT, or refuses them."""

    def __init__(
        self,
        root: str,
        policy: Policy,
        private_dirs: Iterable[tuple[str, str]] = (),
        private_files: Iterable[tuple[str, str]] = (),
    ) -> None:
        """private_dirs / private_files: (folder or file, the setting that placed it there) pairs lynkr keeps
        to itself: its state, the session store, MCP manifests (which name programs lynkr runs)."""
        self.root = root  # a real path: load_config resolves WORKSPACE_ROOT once
        self.policy = policy
        self.private_dirs = [(os.path.realpath(d), setting) for d, setting in private_dirs]
        self.private_files = {os.path.realpath(f): setting for f, setting in private_files}

    def inside(self, real_path: str) -> bool:
        return real_path == self.root or os.path.commonpath([self.root, real_path]) == self.root

    # -- race-free access beneath the root --
    # resolve() checks a path; between that check and the use, a directory on the way can be swapped
    # for a symlink to a folder outside. So every file a tool reads or writes is then opened component
    # by component from the root's directory descriptor with O_NOFOLLOW: a swapped component fails
    # (ELOOP/ENOTDIR) instead of being followed, temp files are created in the same directory
    # descriptor and renamed there, and only regular files are opened (a FIFO would block a thread,
    # a device could be anything).

    def _parent_fd(self, rel: str, create: bool = False) -> tuple[int, str]:
        """(descriptor of rel's folder, rel's last component), walked from the root without following links."""
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise ToolFailed(f"{rel}: not a file path inside the workspace")
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts[:-1]:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o777, dir_fd=fd)
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = child
        except OSError as exc:
            os.close(fd)
            raise self._changed(rel, exc) from None
        return fd, parts[-1]

    @staticmethod
    def _changed(rel: str, exc: OSError) -> Exception:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return ToolDenied(f"{rel}: a folder on the way is (or became) a symlink; not followed")
        if exc.errno == errno.ENOENT:
            return ToolFailed(f"{rel}: no such file")
        return ToolFailed(f"{rel}: {exc.strerror}")

    def read_bytes(self, rel: str, limit: int) -> bytes:
        """Up to limit + 1 bytes of a regular file (the extra byte tells the caller it was cut)."""
        parent, name = self._parent_fd(rel)
        try:
            return read_regular_file(name, limit + 1, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise ToolFailed(
                    f"{rel}: not a regular file (FIFOs, sockets and devices are never opened)"
                ) from None
            raise self._changed(rel, exc) from None
        finally:
            os.close(parent)

    def exists(self, rel: str) -> bool:
        try:
            parent, name = self._parent_fd(rel)
        except ToolFailed:
            return False
        try:
            os.stat(name, dir_fd=parent, follow_symlinks=False)
            return True
        except OSError:
            return False
        finally:
            os.close(parent)

    def write_bytes(self, rel: str, data: bytes, *, rollback: bool = False) -> None:
        """Atomic write: a temp file beside the target, in the same directory descriptor, then renamed.
        Refused once the calling tool timed out (a roll-back of its own writes still goes through)."""
        if not rollback:
            check_not_cancelled()
        parent, name = self._parent_fd(rel, create=True)
        tmp = f".lynkr-{new_id('', 8)}.tmp"
        try:
            mode = 0o644
            with contextlib.suppress(OSError):
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    raise ToolFailed(f"{rel} is a directory")
                mode = st.st_mode & 0o7777
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent
            )
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    os.fchmod(fh.fileno(), mode)
                os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=parent)
                raise
        except OSError as exc:
            raise self._changed(rel, exc) from None
        finally:
            os.close(parent)

    def unlink(self, rel: str, *, rollback: bool = False) -> None:
        if not rollback:
            check_not_cancelled()
        parent, name = self._parent_fd(rel)
        try:
            os.unlink(name, dir_fd=parent)
        except OSError as exc:
            raise self._changed(rel, exc) from None
        finally:
            os.close(parent)

    def resolve(self, user_path: Any, *, allow_root: bool = True) -> tuple[str, str]:
        """-> (absolute real path, POSIX path relative to the root). Raises ToolDenied/ToolFailed."""
        if not isinstance(user_path, str) or not user_path.strip():
            raise ToolFailed("path must be a non-empty string")
        if "\x00" in user_path:
            raise ToolFailed("path contains a NUL byte")
        expanded = user_path.strip()
        lexical = os.path.normpath(expanded if os.path.isabs(expanded) else os.path.join(self.root, expanded))
        real = os.path.realpath(lexical)  # resolves every symlink on the way
        if not self.inside(lexical):
            raise ToolDenied(f"{user_path} is outside WORKSPACE_ROOT ({self.root})")
        if not self.inside(real):
            raise ToolDenied(f"{user_path} leads outside WORKSPACE_ROOT through a symlink")
        for private, setting in self.private_dirs:
            if real == private or os.path.commonpath([private, real]) == private:
                raise ToolDenied(f"{user_path} is inside lynkr's own state ({setting})")
        if real in self.private_files:
            raise ToolDenied(f"{user_path} is lynkr's own file ({self.private_files[real]})")
        rel = os.path.relpath(real, self.root).replace(os.sep, "/")
        if rel == "." and not allow_root:
            raise ToolFailed("path must name a file, not the workspace root")
        if rel != ".":
            self.policy.check_path(rel)
            lexical_rel = os.path.relpath(lexical, self.root).replace(os.sep, "/")
            if lexical_rel != rel and not lexical_rel.startswith(".."):
                self.policy.check_path(lexical_rel)  # a link named .env is still .env
        return real, rel


@dataclass
class ToolContext:
    cfg: Config
    policy: Policy
    paths: WorkspacePaths
    store: Store
    client: HTTPClient
    log: Logger
    provider: Router | None = None  # for tools with an optional model-written part
    # Made by later sections (names in annotations only): the MCP tools and the index tools use them.
    mcp: MCPManager | None = None  # when MCP servers are configured
    index: RepoIndex | None = None  # created on first use (index_for)
    loop: asyncio.AbstractEventLoop | None = None
    # Blocking tools get their own threads: the loop's default executor also serves DNS lookups, which
    # a few slow tools must not starve.
    executor: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(
            max_workers=TOOL_THREADS, thread_name_prefix="lynkr-tool"
        )
    )

    def store_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """From a worker thread: run fn(db, *args) on the store's thread and wait for it."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(self.store.run(fn, *args), self.loop).result()


async def run_tool(ctx: ToolContext, name: str, args: Any) -> ToolResult:
    spec = TOOLS.get(name)
    if spec is None:
        return ToolResult(f"unknown tool {name!r}", True)
    try:
        ctx.policy.check_tool(name)
        if not isinstance(args, dict):
            raise ToolFailed("input must be a JSON object")
        errors = schema_errors(spec.input_schema, args)
        if errors:
            raise ToolFailed("invalid input: " + "; ".join(errors))
        timeout = ctx.policy.tool_timeout_s
        if spec.timeout_setting:  # the tool enforces its own limit; this one only catches a hang
            timeout = max(
                timeout, getattr(ctx.cfg.settings, SETTINGS_BY_NAME[spec.timeout_setting].attr) + 30
            )
        ctx.loop = asyncio.get_running_loop()
        if spec.blocking:
            cancelled = threading.Event()
            work = ctx.loop.run_in_executor(ctx.executor, _run_blocking, spec.handler, ctx, args, cancelled)
            try:
                output = await asyncio.wait_for(asyncio.shield(work), timeout)
            except (TimeoutError, asyncio.CancelledError):
                cancelled.set()  # the thread cannot be stopped, but it will write nothing more
                raise
        else:
            output = await asyncio.wait_for(spec.handler(ctx, args), timeout)
    except ToolDenied as exc:
        return ToolResult(f"denied: {exc}", True)
    except ToolFailed as exc:
        return ToolResult(str(exc), True)
    except TimeoutError:
        return ToolResult(
            f"{name} timed out (LYNKR_TOOL_TIMEOUT_MS={ctx.policy.tool_timeout_s * 1000:g})", True
        )
    except LynkrError as exc:
        return ToolResult(exc.message, True)
    except OSError as exc:
        return ToolResult(f"{name} failed: {exc.strerror or exc}", True)
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 -- a bug in a tool must not take the turn down
        ctx.log.error("tool crashed", tool=name, **error_log_fields(exc, ctx.cfg.log_bodies))
        return ToolResult(f"{name} failed unexpectedly: {exc!r}", True)
    if isinstance(output, ToolResult):
        return output
    return ToolResult(output if isinstance(output, (str, list)) else json_dumps(output))


# -- Files --

MAX_READ_BYTES = 1024 * 1024  # larger reads are cut (with a note) so one call cannot flood the context
# A patched file is read whole for its roll-back copy (files this large are refused before that).
MAX_PATCH_BACKUP_BYTES = 64 * 1024 * 1024
# A search stops after this long (ripgrep killed, the regex child process killed).
SEARCH_TIMEOUT_S = 20.0
# Folders no search or listing descends into: VCS internals, dependency and build caches.
IGNORED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "dist",
        "build",
        "target",
        ".lynkr",
    }
)


def _read_workspace_text(ctx: ToolContext, rel: str, limit: int = MAX_READ_BYTES) -> tuple[str, bool]:
    data = ctx.paths.read_bytes(rel, limit)
    if b"\x00" in data[:8192]:
        raise ToolFailed("file looks binary; not shown")
    return data[:limit].decode("utf-8", errors="replace"), len(data) > limit


def _atomic_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".lynkr-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@tool(
    "fs_read",
    "Read a text file in the workspace, optionally a range of lines (1-based, inclusive).",
    {
        "path": {"type": "string", "description": "File path relative to the workspace root"},
        "start_line": {"type": "integer", "minimum": 1},
        "end_line": {"type": "integer", "minimum": 1},
        "line_numbers": {"type": "boolean", "description": "Prefix each line with its number"},
    },
    ["path"],
)
def tool_fs_read(ctx: ToolContext, args: dict[str, Any]) -> str:
    _real, rel = ctx.paths.resolve(args["path"], allow_root=False)
    text, truncated = _read_workspace_text(ctx, rel)
    lines = text.splitlines(keepends=True)
    start = args.get("start_line", 1)
    end = min(args.get("end_line", len(lines)), len(lines))
    if start > max(len(lines), 1):
        raise ToolFailed(f"{rel}: start_line {start} is past the end ({len(lines)} lines)")
    selected = lines[start - 1 : end]
    if args.get("line_numbers"):
        selected = [f"{start + i}\t{line}" for i, line in enumerate(selected)]
    out = "".join(selected)
    if truncated:
        out += f"\n[truncated at {MAX_READ_BYTES} bytes]"
    return out


@tool(
    "fs_write",
    "Create or overwrite a text file in the workspace (atomic; parent folders are created).",
    {"path": {"type": "string"}, "content": {"type": "string"}},
    ["path", "content"],
)
def tool_fs_write(ctx: ToolContext, args: dict[str, Any]) -> str:
    _real, rel = ctx.paths.resolve(args["path"], allow_root=False)
    data = args["content"].encode("utf-8")
    ctx.paths.write_bytes(
        rel, data
    )  # folders created and the file written beneath the root, no link followed
    return f"wrote {len(data)} bytes to {rel}"


def _walk(ctx: ToolContext, base_real: str) -> Iterable[tuple[str, str, bool]]:
    """(real path, POSIX rel path, is_dir) below base, skipping ignored, blocked and escaping entries."""
    for dirpath, dirnames, filenames in os.walk(base_real):
        keep = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if d in IGNORED_DIRS:
                continue
            try:
                real, rel = ctx.paths.resolve(full)
            except (ToolDenied, ToolFailed):
                continue
            if os.path.islink(full):
                yield real, rel, True  # listed, not followed: links could loop
                continue
            keep.append(d)
            yield real, rel, True
        dirnames[:] = keep
        for f in sorted(filenames):
            try:
                real, rel = ctx.paths.resolve(os.path.join(dirpath, f))
            except (ToolDenied, ToolFailed):
                continue
            yield real, rel, False


@tool(
    "fs_list",
    "List files and folders in the workspace. `glob` filters paths (e.g. 'src/**/*.py').",
    {
        "path": {"type": "string"},
        "glob": {"type": "string"},
        "recursive": {"type": "boolean"},
        "max_entries": {"type": "integer", "minimum": 1, "maximum": 10000},
    },
)
def tool_fs_list(ctx: ToolContext, args: dict[str, Any]) -> str:
    real, rel = ctx.paths.resolve(args.get("path", "."))
    if not os.path.isdir(real):
        raise ToolFailed(f"{rel}: not a directory")
    glob = args.get("glob")
    recursive = args.get("recursive", bool(glob and "/" in glob))
    limit = args.get("max_entries", 1000)
    entries: list[str] = []
    if recursive:
        source: Iterable[tuple[str, str, bool]] = _walk(ctx, real)
    else:
        source = []
        for name in sorted(os.listdir(real)):
            full = os.path.join(real, name)
            try:
                child_real, child_rel = ctx.paths.resolve(full)
            except (ToolDenied, ToolFailed):
                continue
            source.append((child_real, child_rel, os.path.isdir(full)))
    for _child_real, child_rel, is_dir in source:
        if glob and not glob_match(child_rel, glob):
            continue
        entries.append(child_rel + ("/" if is_dir else ""))
        if len(entries) >= limit:
            entries.append(f"[stopped at max_entries={limit}]")
            break
    return "\n".join(entries) if entries else "(no entries)"


# -- Unified diff patches --

HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass
class FilePatch:
    old_path: str | None
    new_path: str | None
    hunks: list[tuple[int, list[str]]] = field(default_factory=list)  # (old start line, lines with prefix)


def _patch_path(raw: str) -> str | None:
    raw = raw.split("\t", 1)[0].strip()
    if raw == "/dev/null":
        return None
    if raw.startswith(("a/", "b/")):
        raw = raw[2:]
    return raw


def parse_unified_diff(text: str) -> list[FilePatch]:
    lines = text.splitlines()
    patches: list[FilePatch] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            patch = FilePatch(_patch_path(lines[i][4:]), _patch_path(lines[i + 1][4:]))
            patches.append(patch)
            i += 2
            while i < len(lines) and lines[i].startswith("@@"):
                match = HUNK_HEADER.match(lines[i])
                if not match:
                    raise ToolFailed(f"bad hunk header: {lines[i]!r}")
                old_len = int(match.group(2) or 1)
                new_len = int(match.group(4) or 1)
                i += 1
                body: list[str] = []
                seen_old = seen_new = 0
                while i < len(lines) and (seen_old < old_len or seen_new < new_len):
                    line = lines[i]
                    if line.startswith("\\"):
                        i += 1
                        continue
                    tag = line[:1] or " "
                    if tag not in " +-":
                        break
                    body.append(tag + line[1:])
                    seen_old += tag in " -"
                    seen_new += tag in " +"
                    i += 1
                if seen_old != old_len or seen_new != new_len:
                    raise ToolFailed(f"hunk for {patch.new_path or patch.old_path} is truncated")
                patch.hunks.append((int(match.group(1)), body))
                while i < len(lines) and lines[i].startswith("\\"):
                    i += 1
            continue
        i += 1
    if not patches:
        raise ToolFailed("no file changes found: expected a unified diff with ---/+++ headers and @@ hunks")
    return patches


def apply_hunks(
    original: list[str],
    hunks: list[tuple[int, list[str]]],
    name: str,
    items: list[Any] | None = None,
    eol: str = "\n",
) -> list[Any]:
    """Apply hunks to lines (without their line breaks). Context must match exactly; a hunk may have
    moved. With `items` (one per line, e.g. (content, line break)), context lines keep their item and
    added lines become (text, eol); without, plain strings."""
    result: list[Any] = list(items) if items is not None else list(original)
    texts = list(original)
    offset = 0
    for start, body in hunks:
        old = [line[1:] for line in body if line[0] in " -"]
        expected = max(start - 1 + offset, 0) if old else start + offset
        position = None
        if not old:
            position = min(max(expected, 0), len(texts))
        else:
            # Only lines equal to the hunk's first old line can start it: one pass over the file, then
            # the candidates nearest the expected line first (a moved hunk still applies).
            first, last_start = old[0], len(texts) - len(old)
            candidates = sorted(
                (i for i, line in enumerate(texts) if line == first and i <= last_start),
                key=lambda i: (abs(i - expected), i),
            )
            position = next((i for i in candidates if texts[i : i + len(old)] == old), None)
        if position is None:
            raise ToolFailed(f"{name}: hunk at line {start} does not match the file")
        new_items: list[Any] = []
        new_texts: list[str] = []
        removed_endings: collections.deque[str] = collections.deque()  # a replaced line's ending carries over
        cursor = position
        for line in body:
            kind, content = line[0], line[1:]
            if kind == " ":
                new_items.append(result[cursor])
                new_texts.append(texts[cursor])
                removed_endings.clear()
                cursor += 1
            elif kind == "-":
                if items is not None:
                    removed_endings.append(result[cursor][1])
                cursor += 1
            elif kind == "+":
                ending = removed_endings.popleft() if removed_endings else eol
                new_items.append((content, ending or eol) if items is not None else content)
                new_texts.append(content)
        result[position : position + len(old)] = new_items
        texts[position : position + len(old)] = new_texts
        offset += len(new_texts) - len(old)
    return result


# Only these end a line in a patch: a lone CR, a form feed, U+2028 (legal inside a JavaScript string) or
# U+0085 are characters inside a line, as git and diff see them (str.splitlines would split there).
PATCH_LINE_BREAK = re.compile(r"\r\n|\n")
UTF8_BOM = "\ufeff"


def patch_text(text: str, hunks: list[tuple[int, list[str]]], name: str) -> str:
    """Apply hunks to a file's text, changing only the lines they touch: every other line keeps its own
    ending (CRLF, LF, mixed), the file keeps its BOM and its final newline or lack of one; new lines get
    the file's prevailing ending."""
    bom = UTF8_BOM if text.startswith(UTF8_BOM) else ""
    text = text[len(bom) :]
    entries: list[tuple[str, str]] = []  # (line content, its line break)
    position = 0
    for match in PATCH_LINE_BREAK.finditer(text):
        entries.append((text[position : match.start()], match.group()))
        position = match.end()
    if position < len(text):
        entries.append((text[position:], ""))
    crlf = sum(1 for _c, e in entries if e == "\r\n")
    eol = "\r\n" if crlf * 2 > len(entries) else "\n"
    contents = apply_hunks([c for c, _e in entries], hunks, name, entries, eol)
    result: list[tuple[str, str]] = contents
    for i, (content, ending) in enumerate(result[:-1]):
        if not ending:  # a line that was last without a newline is followed by new ones now
            result[i] = (content, eol)
    if result:
        content, ending = result[-1]
        if text and not text.endswith("\n"):
            result[-1] = (content, "")
        elif not ending:
            result[-1] = (content, eol)
    return bom + "".join(c + e for c, e in result)


@tool(
    "edit_patch",
    "Apply a unified diff (git diff / diff -u format) to workspace files. Atomic: all hunks "
    "of all files apply, or nothing changes.",
    {"patch": {"type": "string", "minLength": 1}},
    ["patch"],
)
def tool_edit_patch(ctx: ToolContext, args: dict[str, Any]) -> str:
    planned: list[tuple[str, str, bytes | None]] = []  # (real path, rel, new bytes or None to delete)
    for patch in parse_unified_diff(args["patch"]):
        target = patch.new_path or patch.old_path
        if target is None:
            raise ToolFailed("a file patch names /dev/null on both sides")
        real, rel = ctx.paths.resolve(target, allow_root=False)
        if patch.old_path is None:
            if ctx.paths.exists(rel):
                raise ToolFailed(f"{rel} already exists; the patch creates it")
            text, encoding = "", "utf-8"
        else:
            _old_real, old_rel = ctx.paths.resolve(patch.old_path, allow_root=False)
            data = ctx.paths.read_bytes(old_rel, MAX_READ_BYTES)
            if len(data) > MAX_READ_BYTES:
                raise ToolFailed(f"{rel} is too large to patch")
            if b"\x00" in data[:8192]:
                raise ToolFailed(f"{rel} looks binary; not patched")
            try:
                text, encoding = data.decode("utf-8"), "utf-8"
            except UnicodeDecodeError:  # a legacy 8-bit file: Latin-1 gives its bytes back unchanged
                text, encoding = data.decode("latin-1"), "latin-1"
        content = patch_text(text, patch.hunks, rel)  # a deletion's hunks must match too
        if patch.new_path is None:
            planned.append((real, rel, None))
        else:
            try:
                planned.append((real, rel, content.encode(encoding)))
            except UnicodeEncodeError:
                raise ToolFailed(f"{rel} is {encoding}: the patch adds characters it cannot hold") from None
    backups: list[tuple[str, bytes | None]] = []
    try:
        for _real, rel, data in planned:
            previous = ctx.paths.read_bytes(rel, MAX_PATCH_BACKUP_BYTES) if ctx.paths.exists(rel) else None
            backups.append((rel, previous))
            if data is None:
                ctx.paths.unlink(rel)
            else:
                ctx.paths.write_bytes(rel, data)
    except (OSError, ToolFailed, ToolDenied):
        for rel, previous in reversed(backups):  # roll back what was written
            with contextlib.suppress(OSError, ToolFailed, ToolDenied):
                if previous is None:
                    ctx.paths.unlink(rel, rollback=True)
                else:
                    ctx.paths.write_bytes(rel, previous, rollback=True)
        raise
    return "patched " + ", ".join(f"{rel}{' (deleted)' if data is None else ''}" for _r, rel, data in planned)


# -- Search --


@tool(
    "workspace_search",
    "Search file contents in the workspace (ripgrep when installed). The query is "
    "literal text unless regex is true.",
    {
        "query": {"type": "string", "minLength": 1},
        "path": {"type": "string"},
        "glob": {"type": "string"},
        "regex": {"type": "boolean"},
        "case_sensitive": {"type": "boolean"},
        "max_results": {"type": "integer", "minimum": 1, "maximum": 5000},
    },
    ["query"],
)
def tool_workspace_search(ctx: ToolContext, args: dict[str, Any]) -> str:
    real, _rel = ctx.paths.resolve(args.get("path", "."))
    limit = args.get("max_results", 200)
    query = args["query"]
    if args.get("regex"):
        try:
            re.compile(query)
        except re.error as exc:
            raise ToolFailed(f"invalid regex: {exc}") from None
    rg = shutil.which("rg")
    matches = _search_rg(ctx, rg, real, args, limit) if rg else _search_python(ctx, real, args, limit)
    if not matches:
        return "no matches"
    out = "\n".join(matches[:limit])
    return out + (f"\n[stopped at max_results={limit}]" if len(matches) > limit else "")


def _search_rg(ctx: ToolContext, rg: str, base: str, args: dict[str, Any], limit: int) -> list[str]:
    cmd = [rg, "--json", "--no-config", "--max-columns", "500"]
    if not args.get("regex"):
        cmd.append("--fixed-strings")
    if not args.get("case_sensitive"):
        cmd.append("--ignore-case")
    if args.get("glob"):
        cmd += ["--glob", args["glob"]]
    for ignored in IGNORED_DIRS:
        cmd += ["--glob", f"!{ignored}"]
    cmd += ["--regexp", args["query"], "--", base]  # --regexp/-- : nothing the model sends is an option
    out: list[str] = []
    # Streamed, and stopped at max_results: a query matching every line of a monorepo must not be read
    # whole into memory; ripgrep's regex engine runs in linear time, and a timer bounds the rest.
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            cwd=ctx.paths.root,
            start_new_session=True,
        )
        timer = threading.Timer(SEARCH_TIMEOUT_S, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                event = json.loads(line)
                if event.get("type") != "match":
                    continue
                data = event["data"]
                try:
                    _real, rel = ctx.paths.resolve(data["path"].get("text", ""))
                except (ToolDenied, ToolFailed):
                    continue
                text = (data["lines"].get("text") or "").rstrip("\n")
                out.append(f"{rel}:{data['line_number']}:{text}")
                if len(out) > limit:
                    break
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if proc.returncode not in (0, 1) and len(out) <= limit and proc.returncode != -signal.SIGKILL:
            errors.seek(0)
            raise ToolFailed(f"ripgrep failed: {errors.read(2000).decode(errors='replace').strip()[:500]}")
    return out


# The pure-Python fallback runs a model's regex in a child process: a catastrophic pattern such as
# (a+)+$ holds the GIL for as long as it runs, and only a process can be stopped.
REGEX_SEARCH_CHILD = r"""
import json, os, re, stat, sys
job = json.load(sys.stdin)
pattern = re.compile(job["pattern"], job["flags"])
found = 0
for real, rel in job["files"]:
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        continue
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            continue
        data = fh.read(job["max_bytes"])
    if b"\x00" in data[:8192]:
        continue
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if pattern.search(line):
            print(json.dumps([rel, number, line[:500]]), flush=True)
            found += 1
            if found > job["limit"]:
                sys.exit(0)
"""


def _search_python(ctx: ToolContext, base: str, args: dict[str, Any], limit: int) -> list[str]:
    flags = 0 if args.get("case_sensitive") else re.IGNORECASE
    pattern = re.compile(args["query"] if args.get("regex") else re.escape(args["query"]), flags)
    glob = args.get("glob")
    files = (
        [(base, os.path.relpath(base, ctx.paths.root).replace(os.sep, "/"), False)]
        if os.path.isfile(base)
        else _walk(ctx, base)
    )
    out: list[str] = []
    if args.get("regex"):
        chosen = [
            [real, rel] for real, rel, is_dir in files if not is_dir and (not glob or glob_match(rel, glob))
        ]
        job = json_bytes(
            {
                "pattern": args["query"],
                "flags": flags,
                "files": chosen,
                "limit": limit,
                "max_bytes": MAX_READ_BYTES,
            }
        )
        result = run_command(
            [sys.executable, "-I", "-c", REGEX_SEARCH_CHILD],
            ctx.paths.root,
            SEARCH_TIMEOUT_S,
            env=program_env(),
            stdin=job,
        )
        for line in result.output.splitlines():
            with contextlib.suppress(ValueError, TypeError):
                rel, number, text = json.loads(line)
                out.append(f"{rel}:{number}:{text}")
        if result.timed_out:
            raise ToolFailed(
                f"the regex search was stopped after {SEARCH_TIMEOUT_S:g} s (a pattern that backtracks "
                f"without end, e.g. (a+)+$?); {len(out)} matches were found before that"
            )
        return out
    for _real, rel, is_dir in files:
        if is_dir or (glob and not glob_match(rel, glob)):
            continue
        try:
            text, _ = _read_workspace_text(ctx, rel)
        except (ToolFailed, ToolDenied, OSError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                out.append(f"{rel}:{number}:{line[:500]}")
                if len(out) > limit:
                    return out
    return out


# -- Tasks --

TASK_STATUSES = ["todo", "in_progress", "blocked", "done"]
# Every session lists every task: a 10 MB title would be sent to the model on each listing.
TASK_TITLE_MAX_CHARS = 500
TASK_DESCRIPTION_MAX_CHARS = 20_000
TASK_PRIORITIES = ["low", "medium", "high"]
TASK_COLUMNS = "id, title, description, status, priority, created_at, updated_at"


def _task_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(
        zip(
            ("id", "title", "description", "status", "priority", "created_at", "updated_at"),
            row,
            strict=False,
        )
    )


def _get_task(db: sqlite3.Connection, task_id: int) -> dict[str, Any]:
    row = db.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise ToolFailed(f"no task with id {task_id}")
    return _task_row(row)


def _db_create_task(db: sqlite3.Connection, args: dict[str, Any]) -> dict[str, Any]:
    now = time.time()
    with db:
        task_id = insert_returning_id(
            db,
            "INSERT INTO tasks (title, description, status, priority, created_at, updated_at) VALUES (?,?,?,?,?,?)",
            (
                args["title"],
                args.get("description", ""),
                args.get("status", "todo"),
                args.get("priority", "medium"),
                now,
                now,
            ),
        )
    return _get_task(db, task_id)


def _db_update_task(db: sqlite3.Connection, task_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    _get_task(db, task_id)
    if changes:
        assignments = ", ".join(f"{name} = ?" for name in changes)  # names come from the schema, not input
        with db:
            db.execute(
                f"UPDATE tasks SET {assignments}, updated_at = ? WHERE id = ?",
                (*changes.values(), time.time(), task_id),
            )
    return _get_task(db, task_id)


def _db_list_tasks(db: sqlite3.Connection, status: str | None) -> list[dict[str, Any]]:
    if status:
        rows = db.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE status = ? ORDER BY id", (status,))
    else:
        rows = db.execute(f"SELECT {TASK_COLUMNS} FROM tasks ORDER BY id")
    return [_task_row(r) for r in rows]


def _db_delete_task(db: sqlite3.Connection, task_id: int) -> dict[str, Any]:
    task = _get_task(db, task_id)
    with db:
        db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
    return task


@tool(
    "workspace_task_create",
    "Create a task in the workspace task tracker.",
    {
        "title": {"type": "string", "minLength": 1, "maxLength": TASK_TITLE_MAX_CHARS},
        "description": {"type": "string", "maxLength": TASK_DESCRIPTION_MAX_CHARS},
        "priority": {"type": "string", "enum": TASK_PRIORITIES},
        "status": {"type": "string", "enum": TASK_STATUSES},
    },
    ["title"],
)
def tool_task_create(ctx: ToolContext, args: dict[str, Any]) -> str:
    return json_dumps(ctx.store_call(_db_create_task, args))


@tool(
    "workspace_tasks_list",
    "List tasks, optionally only those with one status.",
    {"status": {"type": "string", "enum": TASK_STATUSES}},
)
def tool_tasks_list(ctx: ToolContext, args: dict[str, Any]) -> str:
    return json_dumps(ctx.store_call(_db_list_tasks, args.get("status")))


@tool(
    "workspace_task_update",
    "Change a task's title, description or priority.",
    {
        "id": {"type": "integer"},
        "title": {"type": "string", "minLength": 1, "maxLength": TASK_TITLE_MAX_CHARS},
        "description": {"type": "string", "maxLength": TASK_DESCRIPTION_MAX_CHARS},
        "priority": {"type": "string", "enum": TASK_PRIORITIES},
    },
    ["id"],
)
def tool_task_update(ctx: ToolContext, args: dict[str, Any]) -> str:
    changes = {k: args[k] for k in ("title", "description", "priority") if k in args}
    return json_dumps(ctx.store_call(_db_update_task, args["id"], changes))


@tool(
    "workspace_task_set_status",
    "Set a task's status.",
    {"id": {"type": "integer"}, "status": {"type": "string", "enum": TASK_STATUSES}},
    ["id", "status"],
)
def tool_task_set_status(ctx: ToolContext, args: dict[str, Any]) -> str:
    return json_dumps(ctx.store_call(_db_update_task, args["id"], {"status": args["status"]}))


@tool("workspace_task_delete", "Delete a task.", {"id": {"type": "integer"}}, ["id"])
def tool_task_delete(ctx: ToolContext, args: dict[str, Any]) -> str:
    return json_dumps({"deleted": ctx.store_call(_db_delete_task, args["id"])})


# -- Web --

MAX_REDIRECTS = 5
WEB_FETCH_DEFAULT_CHARS = 20000


class _TextExtractor(html.parser.HTMLParser):
    """HTML -> readable text: drops script/style/nav chrome, keeps block structure as line breaks."""

    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head", "nav"})
    BLOCKS = frozenset(
        {
            "p",
            "div",
            "br",
            "li",
            "tr",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "pre",
            "section",
            "article",
            "header",
            "footer",
            "blockquote",
            "table",
            "ul",
            "ol",
            "hr",
        }
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in self.SKIP:
            self._skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if not self._skip:
            self.parts.append(data)

    def text(self) -> str:
        raw = "".join(self.parts)
        lines = (re.sub(r"[ \t\f\v\r]+", " ", line).strip() for line in raw.split("\n"))
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(markup: str) -> tuple[str, str]:
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return parser.title.strip(), parser.text()


async def _checked_get(
    ctx: ToolContext, url: str, *, trusted: bool = False, headers: Iterable[tuple[str, str]] = ()
) -> tuple[str, int, dict[str, str], bytes]:
    """GET with every hop (redirects included) checked against the web policy. -> (final url, status, headers, body)"""
    loop = asyncio.get_running_loop()
    for _hop in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ToolFailed(f"only http(s) URLs can be fetched (got {url!r})")
        connect_to: tuple[str, ...] = ()
        if not trusted:
            try:
                infos = await loop.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise ToolFailed(f"cannot resolve {parts.hostname}: {exc.strerror}") from None
            # Connect to the addresses just checked: resolving the name again could answer differently.
            connect_to = tuple(dict.fromkeys(info[4][0] for info in infos))
            ctx.policy.check_web_target(parts.hostname, sorted(connect_to))
        resp = await ctx.client.request(
            "GET",
            url,
            [("accept", "text/html,application/json,text/plain,*/*"), *headers],
            connect_timeout=10,
            read_timeout=30,
            connect_to=connect_to,
        )
        if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("location"):
            await resp.aclose()
            url = urllib.parse.urljoin(url, resp.headers["location"])
            trusted = False  # a trusted endpoint's redirect target is checked like any other URL
            continue
        body = await resp.read_prefix(ctx.policy.web_fetch_max_bytes)
        return url, resp.status, resp.headers, body
    raise ToolFailed(f"too many redirects (more than {MAX_REDIRECTS})")


@tool(
    "web_fetch",
    "Fetch a web page and return its readable text (HTML is converted; size-capped).",
    {
        "url": {"type": "string", "minLength": 1},
        "max_chars": {"type": "integer", "minimum": 100, "maximum": 500000},
    },
    ["url"],
    blocking=False,
)
async def tool_web_fetch(ctx: ToolContext, args: dict[str, Any]) -> str:
    try:
        final_url, status, headers, body = await _checked_get(ctx, args["url"])
    except LynkrError as exc:
        raise ToolFailed(f"fetch failed: {exc.message}") from None
    if status >= 400:
        raise ToolFailed(f"{final_url} answered HTTP {status}")
    ctype = headers.get("content-type", "")
    charset = re.search(r"charset=([\w-]+)", ctype)
    try:
        text = body.decode(charset.group(1) if charset else "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know: the page still reads as UTF-8
        text = body.decode("utf-8", errors="replace")
    title = ""
    if "html" in ctype or text.lstrip()[:15].lower().startswith(("<!doctype html", "<html")):
        title, text = html_to_text(text)
    limit = args.get("max_chars", WEB_FETCH_DEFAULT_CHARS)
    cut = len(text) > limit
    header = f"URL: {final_url}\n" + (f"Title: {title}\n" if title else "")
    return header + "\n" + text[:limit] + (f"\n[truncated at {limit} characters]" if cut else "")


# -- Web search services: one table, used by the web_search tool and Claude Code's WebSearch --


@dataclass(frozen=True)
class SearchHit:
    title: str
    url: str
    snippet: str = ""
    page_age: str = ""  # when the page was published or last seen, as the service says it ("" unknown)


@dataclass(frozen=True)
class SearchService:
    """One search API: how a query becomes its HTTP request and how its JSON answer becomes hits."""

    label: str
    default_url: str  # "" when the user must name it (a SearxNG instance)
    key_setting: str  # "" when it needs none
    # (url, query, count, key, allowed domains, blocked domains) -> (method, url, headers, body)
    request: Callable[
        [str, str, int, str, tuple[str, ...], tuple[str, ...]], tuple[str, str, list[tuple[str, str]], bytes]
    ]
    hits: Callable[[Any], list[SearchHit]]


def _with_query(url: str, params: dict[str, Any]) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode(params)}"


def _records(value: Any) -> list[dict[str, Any]]:
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


SEARCH_SERVICES: dict[str, SearchService] = {
    "searxng": SearchService(
        "SearxNG",
        "",
        "",
        lambda url, q, n, key, allow, block: ("GET", _with_query(url, {"q": q, "format": "json"}), [], b""),
        lambda obj: [
            SearchHit(
                str(r.get("title") or ""),
                str(r.get("url") or ""),
                str(r.get("content") or ""),
                str(r.get("publishedDate") or ""),
            )
            for r in _records(obj.get("results"))
        ],
    ),
    "brave": SearchService(
        "Brave Search",
        "https://api.search.brave.com/res/v1/web/search",
        "BRAVE_API_KEY",
        lambda url, q, n, key, allow, block: (
            "GET",
            _with_query(url, {"q": q, "count": min(n, 20)}),
            [("x-subscription-token", key)],
            b"",
        ),
        lambda obj: [
            SearchHit(
                str(r.get("title") or ""),
                str(r.get("url") or ""),
                str(r.get("description") or ""),
                str(r.get("page_age") or r.get("age") or ""),
            )
            for r in _records((obj.get("web") or {}).get("results"))
        ],
    ),
    "tavily": SearchService(
        "Tavily",
        "https://api.tavily.com/search",
        "TAVILY_API_KEY",
        lambda url, q, n, key, allow, block: (
            "POST",
            url,
            [("authorization", f"Bearer {key}"), ("content-type", "application/json")],
            json_bytes(
                {
                    "query": q,
                    "max_results": min(n, 20),
                    **({"include_domains": list(allow)} if allow else {}),
                    **({"exclude_domains": list(block)} if block else {}),
                }
            ),
        ),
        lambda obj: [
            SearchHit(
                str(r.get("title") or ""),
                str(r.get("url") or ""),
                str(r.get("content") or ""),
                str(r.get("published_date") or ""),
            )
            for r in _records(obj.get("results"))
        ],
    ),
}


def domain_matches(url: str, domains: Iterable[str]) -> bool:
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    return any(host == d or host.endswith("." + d) for d in (d.lower().strip(".") for d in domains) if d)


async def search_web(
    ctx: ToolContext, query: str, count: int, allowed: tuple[str, ...] = (), blocked: tuple[str, ...] = ()
) -> list[SearchHit]:
    """The configured service's hits for a query, domain lists applied. Raises ToolFailed, saying what to set."""
    policy = ctx.policy
    service = SEARCH_SERVICES[policy.web_search_provider]
    url = policy.web_search_endpoint or service.default_url
    if not url:
        raise ToolFailed(
            "web search needs WEB_SEARCH_ENDPOINT (a SearxNG URL such as http://127.0.0.1:8888/search), "
            "or BRAVE_API_KEY or TAVILY_API_KEY"
        )
    if service.key_setting and not policy.web_search_key:
        raise ToolFailed(f"web search with {service.label} needs {service.key_setting}")
    asked = count * 2 if allowed or blocked else count  # room for the results the lists remove
    method, url, headers, body = service.request(url, query, asked, policy.web_search_key, allowed, blocked)
    try:
        if method == "GET":  # the operator named the service; a redirect's target is checked like any URL
            _final, status, _headers, raw = await _checked_get(ctx, url, trusted=True, headers=headers)
        else:
            resp = await ctx.client.request(
                method,
                url,
                [("accept", "application/json"), *headers],
                body,
                connect_timeout=10,
                read_timeout=30,
            )
            status, raw = resp.status, await resp.read_prefix(policy.web_fetch_max_bytes)
            await resp.aclose()
    except LynkrError as exc:
        raise ToolFailed(f"{service.label} search failed: {exc.message}") from None
    if status >= 400:
        raise ToolFailed(f"{service.label} answered HTTP {status}")
    try:
        obj = json.loads(raw)
        hits = service.hits(obj) if isinstance(obj, dict) else None
    except (ValueError, AttributeError):
        hits = None
    if hits is None:
        hint = " (is format=json enabled?)" if policy.web_search_provider == "searxng" else ""
        raise ToolFailed(f"{service.label} did not answer with its JSON{hint}")
    hits = [
        h
        for h in hits
        if h.url.startswith(("http://", "https://"))
        and (not allowed or domain_matches(h.url, allowed))
        and not domain_matches(h.url, blocked)
    ]
    return hits[:count]


@tool(
    "web_search",
    "Search the web (SearxNG, Brave Search or Tavily, as WEB_SEARCH_PROVIDER says).",
    {
        "query": {"type": "string", "minLength": 1},
        "max_results": {"type": "integer", "minimum": 1, "maximum": 50},
    },
    ["query"],
    blocking=False,
)
async def tool_web_search(ctx: ToolContext, args: dict[str, Any]) -> str:
    hits = await search_web(ctx, args["query"], args.get("max_results", 10))
    items = [{"title": h.title, "url": h.url, "snippet": h.snippet} for h in hits]
    return json_dumps(items) if items else "no results"


# == 15. Git and tests ==
#
# Real `git` and the project's own test command, as argument lists (never a shell string), with
# `--` before paths and refs verified with `rev-parse --end-of-options`, so nothing the model
# sends is read as an option. Nothing waits on a terminal (no editor, pager or credential prompt)
# and every command has a timeout after which its whole process group is killed.
#
# The test gate (POLICY_GIT_REQUIRE_TESTS): each test run records the git tree id of the whole
# working tree it ran on (tracked + untracked-not-ignored, written through a temporary index so
# the user's index is untouched). A commit is allowed only when the index's tree equals the tree
# of a passing run of the gate command; a push only when HEAD's tree does.

GIT_TIMEOUT_S = 120.0
TEST_OUTPUT_TAIL_BYTES = 16 * 1024  # what a test run keeps of its output: the end is where failures are
REF_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@{}^~+-]*$")
LOCKFILES = frozenset(
    {
        "package-lock.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "poetry.lock",
        "uv.lock",
        "Pipfile.lock",
        "Cargo.lock",
        "go.sum",
        "Gemfile.lock",
        "composer.lock",
        "bun.lockb",
        "mix.lock",
    }
)
CI_PATH_PATTERNS = (
    ".github/workflows/*",
    ".gitlab-ci.yml",
    ".circleci/*",
    "Jenkinsfile",
    ".ci/*",
    "azure-pipelines.yml",
    ".travis.yml",
    "bitbucket-pipelines.yml",
    ".buildkite/*",
)
SECRET_PATTERNS = (
    ("AWS access key", re.compile(r"AKIA[0-9A-Z]{16}")),
    ("private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("GitHub token", re.compile(r"gh[pousr]_[A-Za-z0-9]{30,}")),
    ("Slack token", re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}")),
    ("Databricks token", re.compile(r"dapi[0-9a-f]{32}")),
    (
        "API key assignment",
        re.compile(r"(?i)(api[_-]?key|secret|password|token)\s*[:=]\s*['\"][^'\"\s]{12,}['\"]"),
    ),
)
LANGUAGE_BY_EXTENSION = {
    ".py": "Python",
    ".js": "JavaScript",
    ".mjs": "JavaScript",
    ".cjs": "JavaScript",
    ".jsx": "JavaScript",
    ".ts": "TypeScript",
    ".tsx": "TypeScript",
    ".go": "Go",
    ".rs": "Rust",
    ".java": "Java",
    ".kt": "Kotlin",
    ".rb": "Ruby",
    ".php": "PHP",
    ".cs": "C#",
    ".c": "C",
    ".h": "C",
    ".cc": "C++",
    ".cpp": "C++",
    ".hpp": "C++",
    ".swift": "Swift",
    ".scala": "Scala",
    ".sh": "Shell",
    ".sql": "SQL",
    ".md": "Markdown",
    ".json": "JSON",
    ".yml": "YAML",
    ".yaml": "YAML",
    ".toml": "TOML",
    ".html": "HTML",
    ".css": "CSS",
    ".lua": "Lua",
    ".ex": "Elixir",
    ".exs": "Elixir",
}
CONVENTIONAL_COMMIT = re.compile(r"^(?P<type>[a-z]+)(?:\((?P<scope>[^)]*)\))?(?P<bang>!)?: (?P<subject>.+)$")
CONVENTIONAL_TITLES = {
    "feat": "Features",
    "fix": "Bug fixes",
    "perf": "Performance",
    "refactor": "Refactoring",
    "docs": "Documentation",
    "test": "Tests",
    "build": "Build",
    "ci": "CI",
    "chore": "Chores",
    "style": "Style",
    "revert": "Reverts",
}


@dataclass
class CommandResult:
    exit_code: int
    output: str
    duration_s: float
    timed_out: bool = False


# What programs run by tools (test runs, git) inherit: never lynkr's environment whole. A test file
# that prints its environment must not find provider keys or LYNKR_API_KEY (they would then sit in
# the session store). Git also gets what it needs to reach remotes (an ssh agent, its ssh command).
SUBPROCESS_ENV_ALLOWED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TERM",
        "TZ",
        "TMPDIR",
        "SHELL",
        "COLUMNS",
        "LINES",
    }
)
GIT_ENV_ALLOWED = frozenset(
    {
        "SSH_AUTH_SOCK",
        "GIT_SSH_COMMAND",
        "GIT_SSH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "GIT_SSL_CAINFO",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "NO_PROXY",
        "https_proxy",
        "http_proxy",
        "no_proxy",
        "XDG_CONFIG_HOME",
        "GIT_CONFIG_NOSYSTEM",
    }
)


def program_env(
    passthrough: Iterable[str] = (),
    extra: dict[str, str] | None = None,
    allowed: frozenset[str] = SUBPROCESS_ENV_ALLOWED,
) -> dict[str, str]:
    """An allowlisted copy of the environment (plus the operator's LYNKR_SUBPROCESS_ENV names)."""
    keep = allowed | frozenset(passthrough)
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("LC_")}
    env.update(extra or {})
    return env


def noninteractive_env(
    extra: dict[str, str] | None = None, passthrough: Iterable[str] = ()
) -> dict[str, str]:
    env = program_env(passthrough, allowed=SUBPROCESS_ENV_ALLOWED | GIT_ENV_ALLOWED)
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_EDITOR": "true",
            "GIT_SEQUENCE_EDITOR": "true",
            "GIT_PAGER": "cat",
            "PAGER": "cat",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GCM_INTERACTIVE": "never",
            "GIT_SSH_COMMAND": env.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
            "LC_ALL": "C",
        }
    )
    env.update(extra or {})
    return env


# What a command run by a tool may print before it is stopped: a `git diff` of a huge tree or a test
# suite printing without end must not grow lynkr's memory without bound.
MAX_COMMAND_OUTPUT_BYTES = 64 * 1024 * 1024


def run_command(
    argv: list[str],
    cwd: str,
    timeout_s: float,
    *,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    tail_bytes: int | None = None,
    max_bytes: int = MAX_COMMAND_OUTPUT_BYTES,
) -> CommandResult:
    """Run argv (no shell) in its own process group; on timeout, or past max_bytes of output (tail_bytes:
    only the end is kept, however long it runs), kill the whole group."""
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env or noninteractive_env(),
            start_new_session=True,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except FileNotFoundError:
        raise ToolFailed(f"{argv[0]} is not installed or not on PATH") from None
    kept: collections.deque[bytes] = collections.deque()
    state = {"size": 0, "dropped": False, "overflow": False}

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def read_output() -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):
            kept.append(chunk)
            state["size"] += len(chunk)
            if tail_bytes is not None:
                while state["size"] - len(kept[0]) >= tail_bytes:  # keep just enough for the tail
                    state["size"] -= len(kept.popleft())
                    state["dropped"] = True
            elif state["size"] > max_bytes:
                state["overflow"] = True
                kill()
                return

    def write_input() -> None:  # on its own thread: a child that never reads must not hang the timeout
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.write(stdin or b"")
        with contextlib.suppress(OSError):
            proc.stdin.close()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    if stdin is not None:
        threading.Thread(target=write_input, daemon=True).start()
    try:
        proc.wait(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        kill()
        proc.wait()
        timed_out = True
    reader.join(timeout=10)
    with contextlib.suppress(OSError):
        proc.stdout.close()  # type: ignore[union-attr]
    out = b"".join(kept)
    if tail_bytes is not None and (state["dropped"] or len(out) > tail_bytes):
        out = b"[... output truncated ...]\n" + out[-tail_bytes:]
    if state["overflow"]:
        raise ToolFailed(f"{os.path.basename(argv[0])} printed more than {max_bytes} bytes and was stopped")
    return CommandResult(
        proc.returncode if not timed_out else -9,
        out.decode("utf-8", errors="replace"),
        time.monotonic() - started,
        timed_out,
    )


# Tool-driven git never runs code the model could have written: hooks (core.hooksPath may point into
# the working tree, where hook managers keep plain files), fsmonitor commands, or a bare repository
# laid out in the workspace that git would otherwise discover.
GIT_SAFETY_CONFIG = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "safe.bareRepository=explicit",
)


def git(
    ctx: ToolContext,
    *args: str,
    stdin: bytes | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> str:
    safety = () if ctx.policy.git_allow_hooks else GIT_SAFETY_CONFIG
    result = run_command(
        ["git", "-c", "core.quotepath=off", *safety, *args],
        ctx.paths.root,
        ctx.policy.git_timeout_s,
        env=noninteractive_env(env, ctx.policy.subprocess_env),
        stdin=stdin,
    )
    if result.timed_out:
        raise ToolFailed(
            f"git {args[0]} timed out after {ctx.policy.git_timeout_s:g} s (LYNKR_GIT_TIMEOUT_MS)"
        )
    if check and result.exit_code != 0:
        raise ToolFailed(f"git {args[0]} failed (exit {result.exit_code}): {result.output.strip()[:2000]}")
    return result.output


def require_repo(ctx: ToolContext) -> None:
    if git(ctx, "rev-parse", "--is-inside-work-tree", check=False).strip() != "true":
        raise ToolFailed(f"WORKSPACE_ROOT ({ctx.paths.root}) is not a git repository")


def verify_ref(ctx: ToolContext, ref: Any, what: str = "ref") -> str:
    """A ref the model names: shape-checked, then resolved by git with --end-of-options."""
    if not isinstance(ref, str) or not REF_PATTERN.match(ref) or ".." in ref:
        raise ToolFailed(f"{what} {ref!r} is not a valid git revision name")
    out = git(
        ctx, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", check=False
    ).strip()
    if not out:
        raise ToolFailed(f"{what} {ref!r} does not exist")
    return ref


def verify_name(value: Any, what: str) -> str:
    """Remote and branch names for push/pull: plain names only (never options, URLs or refspecs)."""
    if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", value) or ".." in value:
        raise ToolFailed(f"{what} {value!r} is not a valid name")
    return value


def verify_remote(ctx: ToolContext, value: Any) -> str:
    """A remote the repository names (`git remote`): never a path or URL the model gives, which git
    would fetch from or push to wherever it points (a symlink in the workspace to a folder outside)."""
    name = verify_name(value, "remote")
    remotes = git(ctx, "remote").split()
    if name not in remotes:
        raise ToolFailed(
            f"remote {name!r} is not configured in this repository (configured: "
            f"{', '.join(remotes) or 'none'}); only configured remotes can be used"
        )
    return name


GIT_PATHSPEC_MAGIC = re.compile(r"[*?[\]]|^:")


def repo_paths(ctx: ToolContext, paths: Any) -> list[str]:
    """Workspace paths as literal git pathspecs, each confined like the file tools. Globs and pathspec
    magic (`*`, `:(top)`, `:(icase)`...) would let git expand what the path check saw as one literal
    name into blocked files or files outside the workspace, so they are refused. A folder's blocked
    files (and lynkr's own) stay excluded."""
    if not isinstance(paths, list) or not paths:
        raise ToolFailed("paths must be a non-empty list")
    specs = []
    for path in paths:
        if isinstance(path, str) and GIT_PATHSPEC_MAGIC.search(path.strip()):
            raise ToolFailed(
                f"path {path!r}: git globs and pathspec magic are not accepted; name each file or "
                "folder literally (or use all: true)"
            )
        specs.append(":(literal)" + ctx.paths.resolve(path)[1])
    return specs + blocked_pathspec(ctx)


def shown_paths(specs: list[str]) -> str:
    return ", ".join(s.removeprefix(":(literal)") for s in specs if not s.startswith(":(exclude"))


def whole_tree_pathspec(ctx: ToolContext) -> list[str]:
    """`.` minus POLICY_FILE_BLOCKED_PATHS and lynkr's own files: what whole-tree git tools may see."""
    return [".", *blocked_pathspec(ctx)]


def blocked_pathspec(ctx: ToolContext) -> list[str]:
    """Exclusions for POLICY_FILE_BLOCKED_PATHS and lynkr's own files. A pattern without '/' matches any
    path component, as in the file tools; matching ignores case."""
    specs = []
    for pattern in ctx.policy.file_blocked_paths:
        pattern = pattern.strip("/")
        base = pattern if "/" in pattern else f"**/{pattern}"
        specs += [f":(exclude,icase,glob){base}", f":(exclude,icase,glob){base}/**"]
    private = [d for d, _setting in ctx.paths.private_dirs] + sorted(ctx.paths.private_files)
    for path in private:
        if path != ctx.paths.root and ctx.paths.inside(path):
            specs.append(":(exclude,literal)" + os.path.relpath(path, ctx.paths.root).replace(os.sep, "/"))
    return specs


def worktree_tree_id(ctx: ToolContext) -> str:
    """Tree id of tracked + untracked-not-ignored files, via a temporary index (the user's stays untouched).
    Blocked paths are left as HEAD has them, exactly as `workspace_git_stage all` leaves them."""
    with tempfile.TemporaryDirectory(prefix="lynkr-index-") as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        if git(ctx, "rev-parse", "--verify", "--quiet", "HEAD", check=False).strip():
            git(ctx, "read-tree", "HEAD", env=env)
        git(ctx, "add", "--all", "--", *whole_tree_pathspec(ctx), env=env)
        return git(ctx, "write-tree", env=env).strip()


# -- git tools --


@tool(
    "workspace_git_status", "Branch, upstream divergence and changed files of the workspace repository.", {}
)
def tool_git_status(ctx: ToolContext, args: dict[str, Any]) -> str:
    require_repo(ctx)
    out = git(
        ctx, "status", "--porcelain=v1", "--branch", "--untracked-files=all", "--", *whole_tree_pathspec(ctx)
    )
    lines = out.splitlines()
    branch = lines[0][3:] if lines and lines[0].startswith("## ") else "(unknown)"
    staged, unstaged, untracked = [], [], []
    for line in lines[1:]:
        code, path = line[:2], line[3:]
        if code == "??":
            untracked.append(path)
            continue
        if code[0] not in " ?":
            staged.append(f"{code[0]} {path}")
        if code[1] not in " ?":
            unstaged.append(f"{code[1]} {path}")
    return json_dumps(
        {
            "branch": branch,
            "staged": staged,
            "unstaged": unstaged,
            "untracked": untracked,
            "clean": not (staged or unstaged or untracked),
        }
    )


def _numstat(ctx: ToolContext, diff_args: list[str]) -> list[dict[str, Any]]:
    files = []
    statuses = {}
    for line in git(ctx, "diff", "--name-status", "--no-renames", *diff_args).splitlines():
        if "\t" in line:
            status, path = line.split("\t", 1)
            statuses[path] = status[:1]
    for line in git(ctx, "diff", "--numstat", "--no-renames", *diff_args).splitlines():
        parts = line.split("\t", 2)
        if len(parts) != 3:
            continue
        added, deleted, path = parts
        binary = added == "-"
        files.append(
            {
                "path": path,
                "status": statuses.get(path, "M"),
                "binary": binary,
                "insertions": 0 if binary else int(added),
                "deletions": 0 if binary else int(deleted),
            }
        )
    return files


def _diff_args(ctx: ToolContext, args: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if args.get("staged"):
        out.append("--cached")
    for key in ("from_ref", "to_ref"):
        if args.get(key):
            out.append(verify_ref(ctx, args[key], key))
    out.append("--")
    out += repo_paths(ctx, args["paths"]) if args.get("paths") else whole_tree_pathspec(ctx)
    return out


DIFF_PROPERTIES = {
    "staged": {"type": "boolean", "description": "Diff the index against HEAD instead of the working tree"},
    "from_ref": {"type": "string", "description": "Compare from this commit/branch/tag"},
    "to_ref": {"type": "string", "description": "...to this one (default: the working tree)"},
    "paths": {"type": "array", "items": {"type": "string"}},
}


@tool(
    "workspace_git_diff",
    "Diff of the working tree, the index (staged), or between refs, with per-file stats.",
    {**DIFF_PROPERTIES, "max_bytes": {"type": "integer", "minimum": 1000}},
)
def tool_git_diff(ctx: ToolContext, args: dict[str, Any]) -> str:
    require_repo(ctx)
    diff_args = _diff_args(ctx, args)
    files = _numstat(ctx, diff_args)
    patch = git(ctx, "diff", "--no-color", "--no-ext-diff", "--no-textconv", *diff_args)
    limit = args.get("max_bytes", 200_000)
    if len(patch) > limit:
        patch = patch[:limit] + f"\n[diff truncated at {limit} bytes]"
    stats = {
        "files": len(files),
        "insertions": sum(f["insertions"] for f in files),
        "deletions": sum(f["deletions"] for f in files),
    }
    return json_dumps({"stats": stats, "files": files}) + "\n\n" + (patch or "(no changes)")


@tool(
    "workspace_git_stage",
    "Stage files (git add). Give paths, or all: true for every change.",
    {"paths": {"type": "array", "items": {"type": "string"}}, "all": {"type": "boolean"}},
)
def tool_git_stage(ctx: ToolContext, args: dict[str, Any]) -> str:
    require_repo(ctx)
    if args.get("all"):
        git(ctx, "add", "--all", "--", *whole_tree_pathspec(ctx))
        return "staged all changes (blocked paths excluded: POLICY_FILE_BLOCKED_PATHS)"
    paths = repo_paths(ctx, args.get("paths"))
    git(ctx, "add", "--", *paths)
    return "staged " + shown_paths(paths)


@tool(
    "workspace_git_unstage",
    "Unstage files (keep the working tree changes).",
    {"paths": {"type": "array", "items": {"type": "string"}}},
    ["paths"],
)
def tool_git_unstage(ctx: ToolContext, args: dict[str, Any]) -> str:
    require_repo(ctx)
    paths = repo_paths(ctx, args["paths"])
    if git(ctx, "rev-parse", "--verify", "--quiet", "HEAD", check=False).strip():
        git(ctx, "reset", "--quiet", "HEAD", "--", *paths)
    else:  # no commit yet: drop the paths from the index
        git(ctx, "rm", "--cached", "--quiet", "-r", "--", *paths)
    return "unstaged " + shown_paths(paths)


# -- the sandbox for programs the model can shape (test runs) --
#
# A test run executes workspace code the model wrote (a test file, a conftest.py, a package.json
# script). Under bubblewrap it sees the host read-only, the workspace as the only writable place
# (plus a private /tmp), no network unless POLICY_SANDBOX_NETWORK, and neither lynkr's state nor the
# usual credential files. A sandbox that was asked for and cannot start is an error, never a run on
# the host.

# How the container *client* finds its engine (a remote or rootless daemon, a context, podman's
# socket). The SDK starts stdio servers with a minimal environment, so these are passed on; the MCP
# server's own variables go into the container with -e, never from lynkr's environment.
CONTAINER_CLIENT_ENV = (
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "CONTAINER_HOST",
    "CONTAINER_CONNECTION",
    "CONTAINERS_CONF",
    "XDG_RUNTIME_DIR",
)


SANDBOX_HIDDEN_HOME = (
    ".ssh",
    ".aws",
    ".azure",
    ".config/gcloud",
    ".kube",
    ".docker",
    ".gnupg",
    ".netrc",
    ".git-credentials",
    ".npmrc",
    ".pypirc",
    ".databrickscfg",
    ".claude",
    ".claude.json",
    ".config/lynkr",
    ".config/gh",
    ".local/share/keyrings",
)


def bwrap_argv(
    root: str,
    hidden_dirs: Iterable[str],
    hidden_files: Iterable[str],
    extra_hide: Iterable[str],
    network: bool,
    readable: Iterable[str] = (),
    *,
    root_writable: bool = True,
    binds: Iterable[tuple[str, str, bool]] = (),
    chdir: str = "",
) -> list[str]:
    argv = ["bwrap", "--die-with-parent", "--new-session", "--unshare-all"]
    if network:
        argv.append("--share-net")
    argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for path in readable:
        path = os.path.realpath(os.path.expanduser(path))
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    argv += ["--bind" if root_writable else "--ro-bind", root, root]
    for source, target, writable in binds:
        argv += ["--bind" if writable else "--ro-bind", source, target]
    # Hidden last, so that no bind above (a workspace that holds the home folder) shows them again.
    home = os.path.expanduser("~")
    secrets_ = [os.path.join(home, p) for p in SANDBOX_HIDDEN_HOME] + [
        os.path.expanduser(p) for p in extra_hide
    ]
    for path in secrets_:
        if os.path.isdir(path) and not os.path.islink(path):
            argv += ["--tmpfs", path]
        elif os.path.lexists(path):
            argv += ["--ro-bind", "/dev/null", path]
    hidden = [d for d in hidden_dirs if os.path.isdir(d)]
    for path in hidden:  # lynkr's state, inside the workspace or not
        argv += ["--tmpfs", path]
    for path in hidden_files:  # (a file inside a hidden folder is gone already)
        if os.path.isfile(path) and not any(os.path.commonpath([d, path]) == d for d in hidden):
            argv += ["--ro-bind", "/dev/null", path]
    return [*argv, "--chdir", chdir or root, "--"]


def podman_argv(ctx: ToolContext, name: str, top: str, chdir: str, readable: Iterable[str]) -> list[str]:
    """A container of POLICY_SANDBOX_IMAGE: only the image and the mounted folder(s); no host home, no
    network unless allowed, no capabilities, lynkr's state masked when it lies in the workspace."""
    argv = [
        "podman",
        "run",
        "--rm",
        "-i",
        "--name",
        name,
        "--network",
        "bridge" if ctx.policy.sandbox_network else "none",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--tmpfs",
        "/tmp",
        "-v",
        f"{top}:{top}:rw",
        "-w",
        chdir,
    ]
    for path in readable:
        path = os.path.realpath(os.path.expanduser(path))
        if os.path.exists(path):
            argv += ["-v", f"{path}:{path}:ro"]
    for path, _setting in ctx.paths.private_dirs:
        if os.path.isdir(path) and os.path.commonpath([top, path]) == top:
            argv += ["--tmpfs", path]
    for name_ in ctx.policy.subprocess_env:
        if name_ in os.environ:
            argv += ["-e", f"{name_}={os.environ[name_]}"]
    return [*argv, ctx.policy.sandbox_image]


def sandbox_prefix(ctx: ToolContext, checkout: str = "", container: str = "") -> list[str]:
    """The sandbox's argv before the command (none: nothing). With a clean checkout, it is the writable
    place and the workspace is readable (its dependency folders are linked in)."""
    if ctx.policy.sandbox not in ("bwrap", "podman"):
        return []
    top = clean_checkout_top(checkout) if checkout else ctx.paths.root
    readable = (*ctx.policy.sandbox_read, ctx.paths.root) if checkout else ctx.policy.sandbox_read
    if ctx.policy.sandbox == "podman":
        return podman_argv(ctx, container, top, checkout or ctx.paths.root, readable)
    argv = bwrap_argv(
        top,
        [d for d, _s in ctx.paths.private_dirs],
        list(ctx.paths.private_files),
        ctx.policy.sandbox_hide,
        ctx.policy.sandbox_network,
        readable,
    )
    if checkout:
        argv[-2] = checkout  # --chdir into the workspace's folder within the checkout
    return argv


# -- the gate's clean checkout --
#
# A run in the workspace can pass because of files the commit will not contain: an ignored pytest.py
# that prints "1 passed", an ignored conftest.py. The gate therefore counts only runs made in a
# checkout of exactly the tested tree (tracked and untracked-not-ignored files, as worktree_tree_id
# records), in a temporary folder, with the workspace's dependency folders (POLICY_GIT_TEST_DEPENDENCY_DIRS:
# node_modules, .venv...) linked in read-only.

CLEAN_CHECKOUT_PREFIX = "lynkr-gate-"


def clean_checkout_top(checkout: str) -> str:
    """The temporary folder holding the whole checkout (checkout may be a sub-folder of it)."""
    parts = checkout.split(os.sep)
    for i, part in enumerate(parts):
        if part.startswith(CLEAN_CHECKOUT_PREFIX):
            return os.sep.join(parts[: i + 1])
    return checkout


@contextlib.contextmanager
def clean_checkout(ctx: ToolContext, tree_id: str) -> Iterator[str]:
    """A temporary checkout of tree_id; yields the workspace's folder inside it."""
    top = tempfile.mkdtemp(prefix=CLEAN_CHECKOUT_PREFIX)
    try:
        with tempfile.TemporaryDirectory(prefix="lynkr-index-") as tmp:
            env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
            git(ctx, "read-tree", tree_id, env=env)
            git(ctx, "checkout-index", "--all", "--force", f"--prefix={top}{os.sep}", env=env)
        prefix = git(ctx, "rev-parse", "--show-prefix").strip().rstrip("/")
        here = os.path.join(top, prefix) if prefix else top
        os.makedirs(here, exist_ok=True)
        for name in ctx.policy.git_test_dependency_dirs:
            source = os.path.join(ctx.paths.root, name)
            target = os.path.join(here, name)
            if os.path.isdir(source) and not os.path.lexists(target):
                os.symlink(source, target)
        yield here
    finally:
        shutil.rmtree(top, ignore_errors=True)


# `python -m pytest` puts the working folder first on sys.path before pytest itself is imported, so a
# pytest.py in the workspace would replace the runner. The runner module is imported first without the
# workspace on the path, then the path is restored (projects' tests import their own package) and the
# runner runs as `python -m` would run it.
RUNNER_BOOTSTRAP = (
    "import os, runpy, sys; here = os.getcwd(); "
    "sys.path[:] = [p for p in sys.path if p not in ('', '.', here)]; module = sys.argv[1]; "
    "__import__(module); sys.path.insert(0, here); del sys.argv[0]; "
    "runpy.run_module(module, run_name='__main__', alter_sys=True)"
)


def runner_argv(argv: list[str]) -> list[str]:
    """`python -m MODULE ARGS` -> the same run with the runner imported before the workspace is on sys.path."""
    if len(argv) >= 3 and os.path.basename(argv[0]).startswith("python") and argv[1] == "-m":
        return [argv[0], "-c", RUNNER_BOOTSTRAP, *argv[2:]]
    return argv


def resolve_sandbox(requested: str, image: str = "") -> tuple[str, str]:
    """POLICY_SANDBOX -> (bwrap | podman | none, what to say at start-up). Raises ConfigError when a
    sandbox that was asked for cannot start."""
    if requested == "none":
        return "none", "test runs execute on the host (POLICY_SANDBOX=none)"
    if requested == "podman":
        if not image:
            raise ConfigError(
                "POLICY_SANDBOX=podman needs POLICY_SANDBOX_IMAGE (an image with the project's toolchain)"
            )
        if shutil.which("podman") is None:
            raise ConfigError(
                "POLICY_SANDBOX=podman, but podman is not installed; lynkr never runs tests unsandboxed "
                "instead"
            )
        probe = subprocess.run(
            ["podman", "image", "exists", image],
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
            env=program_env(CONTAINER_CLIENT_ENV),
        )
        if probe.returncode != 0:
            raise ConfigError(
                f"POLICY_SANDBOX_IMAGE {image!r} is not an image podman has (podman image exists "
                f"failed: {probe.stderr.decode('utf-8', 'replace').strip()[:200] or 'not found'})"
            )
        return "podman", f"test runs execute in podman containers of {image} (POLICY_SANDBOX)"
    problem = ""
    if shutil.which("bwrap") is None:
        problem = "bubblewrap (bwrap) is not installed (apt-get install bubblewrap)"
    else:
        try:
            probe = subprocess.run(
                ["bwrap", "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "--", "true"],
                capture_output=True,
                timeout=15,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if probe.returncode != 0:
                problem = (
                    "bwrap cannot create its namespaces here: "
                    + probe.stderr.decode("utf-8", "replace").strip()[:300]
                )
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = f"bwrap did not run: {exc}"
    if not problem:
        return "bwrap", "test runs execute in a bubblewrap sandbox (POLICY_SANDBOX)"
    if requested == "bwrap":
        raise ConfigError(f"POLICY_SANDBOX=bwrap, but {problem}; lynkr never runs tests unsandboxed instead")
    return "none", f"test runs execute on the host: {problem} (POLICY_SANDBOX=auto)"


def test_command(ctx: ToolContext) -> str:
    return ctx.policy.workspace_test_command or detect_test_command(ctx.paths.root)


def gate_command(ctx: ToolContext) -> str:
    """The command whose passing runs open the commit/push gate (POLICY_GIT_TEST_COMMAND first)."""
    return ctx.policy.git_test_command or test_command(ctx)


def passing_tree_ids(ctx: ToolContext) -> set[str]:
    return set(ctx.store_call(_db_passing_trees, gate_command(ctx)))


@tool(
    "workspace_git_commit",
    "Commit the staged changes with a message (author from git config).",
    {"message": {"type": "string", "minLength": 1}},
    ["message"],
)
def tool_git_commit(ctx: ToolContext, args: dict[str, Any]) -> str:
    require_repo(ctx)
    ctx.policy.check_git("commit")
    if not git(ctx, "diff", "--cached", "--name-only").strip():
        raise ToolFailed("nothing is staged; stage files first (workspace_git_stage)")
    if ctx.policy.git_require_tests:
        tree = git(ctx, "write-tree").strip()
        if tree not in passing_tree_ids(ctx):
            raise ToolDenied(
                "POLICY_GIT_REQUIRE_TESTS: the staged content has no passing test run of "
                f"`{gate_command(ctx)}`; run workspace_test_run on exactly what "
                "you commit (stage everything that was tested, nothing else)"
            )
    # Hooks run only when the operator allowed them (POLICY_GIT_ALLOW_HOOKS): then all of them, pre-commit too.
    verify = () if ctx.policy.git_allow_hooks else ("--no-verify",)
    git(ctx, "commit", "--quiet", *verify, "--file=-", stdin=args["message"].encode("utf-8"))
    return git(ctx, "log", "-1", "--format=committed %h %s")


@tool(
    "workspace_git_push",
    "Push the current branch (or a given branch) to a remote.",
    {"remote": {"type": "string"}, "branch": {"type": "string"}, "set_upstream": {"type": "boolean"}},
)
def tool_git_push(ctx: ToolContext, args: dict[str, Any]) -> str:
    require_repo(ctx)
    ctx.policy.check_git("push")
    remote = verify_remote(ctx, args.get("remote", "origin"))
    branch = verify_name(
        args.get("branch") or git(ctx, "rev-parse", "--abbrev-ref", "HEAD").strip(), "branch"
    )
    if ctx.policy.git_require_tests:
        tree = git(ctx, "rev-parse", "--verify", "--end-of-options", f"{branch}^{{tree}}").strip()
        if tree not in passing_tree_ids(ctx):
            raise ToolDenied(
                f"POLICY_GIT_REQUIRE_TESTS: {branch}'s content was never tested with a passing run of "
                f"`{gate_command(ctx)}`"
            )
    flags = ["--set-upstream"] if args.get("set_upstream") else []
    out = git(ctx, "push", "--porcelain", *flags, "--", remote, f"refs/heads/{branch}:refs/heads/{branch}")
    return out.strip() or f"pushed {branch} to {remote}"


@tool(
    "workspace_git_pull",
    "Fast-forward pull from a remote (never creates merge commits).",
    {"remote": {"type": "string"}, "branch": {"type": "string"}},
)
def tool_git_pull(ctx: ToolContext, args: dict[str, Any]) -> str:
    require_repo(ctx)
    ctx.policy.check_git("pull")
    refs = [verify_remote(ctx, args.get("remote", "origin"))]
    if args.get("branch"):
        refs.append(verify_name(args["branch"], "branch"))
    return git(ctx, "pull", "--ff-only", "--no-edit", "--no-rebase", "--", *refs).strip()


@tool("workspace_git_branches", "Local branches, the current one marked, with their last commit.", {})
def tool_git_branches(ctx: ToolContext, args: dict[str, Any]) -> str:
    require_repo(ctx)
    out = git(ctx, "branch", "--format=%(HEAD)\x1f%(refname:short)\x1f%(objectname:short)\x1f%(subject)")
    branches = []
    for line in out.splitlines():
        head, name, sha, subject = ([*line.split("\x1f"), "", "", "", ""])[:4]
        branches.append({"name": name, "current": head == "*", "commit": sha, "subject": subject})
    return json_dumps(branches)


@tool(
    "workspace_git_log",
    "Recent commits (optionally of one ref or path).",
    {
        "ref": {"type": "string"},
        "path": {"type": "string"},
        "max_count": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
)
def tool_git_log(ctx: ToolContext, args: dict[str, Any]) -> str:
    require_repo(ctx)
    cmd = ["log", f"--max-count={args.get('max_count', 20)}", "--format=%H\x1f%an\x1f%aI\x1f%s"]
    if args.get("ref"):
        cmd.append(verify_ref(ctx, args["ref"]))
    cmd.append("--")
    if args.get("path"):
        cmd += repo_paths(ctx, [args["path"]])
    commits = []
    for line in git(ctx, *cmd).splitlines():
        sha, author, date, subject = ([*line.split("\x1f"), "", "", "", ""])[:4]
        commits.append({"commit": sha, "author": author, "date": date, "subject": subject})
    return json_dumps(commits)


# -- review and release notes --


def _ask_model(ctx: ToolContext, prompt: str, max_tokens: int = 1024) -> str:
    """A one-shot, non-streaming call to the configured provider (used by the optional AI extras)."""
    if ctx.provider is None or not ctx.provider.configured or ctx.loop is None:
        raise ToolFailed(
            "the AI part needs a configured model provider (see DATABRICKS_* / AZURE_ANTHROPIC_*)"
        )
    req = {
        "model": ctx.cfg.settings.model_default or "claude-sonnet-4-5",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    }
    http_req = Request("POST", "/v1/messages", {}, {}, b"", "tool", request_id=new_id("req_"))
    future = asyncio.run_coroutine_threadsafe(ctx.provider.complete(req, http_req), ctx.loop)
    message, _raw = future.result(timeout=ctx.policy.tool_timeout_s)
    return "".join(b.get("text", "") for b in message.get("content") or [] if b.get("type") == "text").strip()


def review_diff(ctx: ToolContext, diff_args: list[str]) -> dict[str, Any]:
    files = _numstat(ctx, diff_args)
    patch = git(ctx, "diff", "--no-color", "--no-ext-diff", "--unified=0", *diff_args)
    languages: dict[str, int] = {}
    risks: list[dict[str, str]] = []
    for f in files:
        path = f["path"]
        name = os.path.basename(path)
        language = LANGUAGE_BY_EXTENSION.get(os.path.splitext(name)[1].lower(), "other")
        f["language"] = language
        languages[language] = languages.get(language, 0) + f["insertions"] + f["deletions"]
        if f["status"] == "D":
            risks.append({"kind": "deleted_file", "path": path})
        if name in LOCKFILES:
            risks.append({"kind": "lockfile", "path": path})
        if any(fnmatch.fnmatch(path, p) for p in CI_PATH_PATTERNS):
            risks.append({"kind": "ci_config", "path": path})
        if re.search(r"(^|/)(migrations?|migrate|alembic)(/|$)", path) or "migration" in name.lower():
            risks.append({"kind": "migration", "path": path})
        if f["insertions"] + f["deletions"] > 500:
            risks.append(
                {
                    "kind": "large_change",
                    "path": path,
                    "detail": f"{f['insertions'] + f['deletions']} lines changed",
                }
            )
    current = ""
    for line in patch.splitlines():
        if line.startswith("+++ "):
            current = line[6:] if line.startswith("+++ b/") else line[4:]
        elif line.startswith("+") and not line.startswith("+++"):
            for label, pattern in SECRET_PATTERNS:
                if pattern.search(line):
                    risks.append({"kind": "possible_secret", "path": current, "detail": label})
                    break
    tests_touched = [
        f["path"]
        for f in files
        if re.search(
            r"(^|/)(tests?|spec|__tests__)(/|$)|(^|/)test_[^/]*$|_test\.|\.test\.|\.spec\.", f["path"]
        )
    ]
    return {
        "files": files,
        "totals": {
            "files": len(files),
            "insertions": sum(f["insertions"] for f in files),
            "deletions": sum(f["deletions"] for f in files),
        },
        "languages": dict(sorted(languages.items(), key=lambda kv: -kv[1])),
        "tests_touched": bool(tests_touched),
        "test_files": tests_touched,
        "risks": risks,
    }


@tool(
    "workspace_diff_review",
    "Structured, deterministic review of a diff: files, sizes, languages, whether "
    "tests were touched, and risky changes (deletions, lockfiles, CI config, migrations, secret-looking lines). "
    "ai_review: true adds a short review written by the configured model.",
    {**DIFF_PROPERTIES, "ai_review": {"type": "boolean"}},
)
def tool_diff_review(ctx: ToolContext, args: dict[str, Any]) -> str:
    require_repo(ctx)
    summary = review_diff(ctx, _diff_args(ctx, args))
    if args.get("ai_review"):
        patch = git(ctx, "diff", "--no-color", "--no-ext-diff", *_diff_args(ctx, args))[:60_000]
        summary["ai_review"] = _ask_model(
            ctx,
            "Review this change briefly: correctness risks, missing tests, "
            f"anything to fix before merging.\n\nSummary:\n{json_dumps(summary)}"
            f"\n\nDiff:\n{patch}",
        )
    return json_dumps(summary)


def release_notes(ctx: ToolContext, from_ref: str | None, to_ref: str) -> tuple[str, dict[str, Any]]:
    span = f"{from_ref}..{to_ref}" if from_ref else to_ref
    raw = git(ctx, "log", "--no-merges", "--format=%H\x1f%an\x1f%s\x1f%b\x1e", span, "--")
    commits = []
    for record in raw.split("\x1e"):
        record = record.strip("\n")
        if not record:
            continue
        sha, author, subject, body = ([*record.split("\x1f"), "", "", "", ""])[:4]
        match = CONVENTIONAL_COMMIT.match(subject)
        commits.append(
            {
                "sha": sha,
                "author": author,
                "subject": subject,
                "match": match,
                "breaking": bool(match and match.group("bang")) or "BREAKING CHANGE" in body,
            }
        )
    conventional = sum(1 for c in commits if c["match"]) * 2 >= len(commits) > 0
    groups: dict[str, list[str]] = {}
    for c in commits:
        if conventional and c["match"]:
            m = c["match"]
            title = CONVENTIONAL_TITLES.get(m.group("type"), "Other changes")
            scope = f"**{m.group('scope')}:** " if m.group("scope") else ""
            line = f"- {scope}{m.group('subject')} ({c['sha'][:7]}, {c['author']})"
        else:
            files = git(ctx, "show", "--name-only", "--format=", c["sha"], "--").split()
            tops = sorted({f.split("/", 1)[0] if "/" in f else "(root)" for f in files}) or ["(no files)"]
            title = tops[0] if len(tops) == 1 else "Across the tree"
            title = "Other changes" if conventional else title
            line = f"- {c['subject']} ({c['sha'][:7]}, {c['author']})"
        groups.setdefault(title, []).append(line)
    authors: dict[str, int] = {}
    for c in commits:
        authors[c["author"]] = authors.get(c["author"], 0) + 1
    header = f"# Release notes: {from_ref or 'start'} → {to_ref}\n\n{len(commits)} commits by {len(authors)} authors."
    parts = [header]
    breaking = [c for c in commits if c["breaking"]]
    if breaking:
        parts.append(
            "## ⚠ Breaking changes\n" + "\n".join(f"- {c['subject']} ({c['sha'][:7]})" for c in breaking)
        )
    order = [*list(CONVENTIONAL_TITLES.values()), "Other changes"]
    for title in sorted(groups, key=lambda t: (order.index(t) if t in order else len(order), t)):
        parts.append(f"## {title} ({len(groups[title])})\n" + "\n".join(groups[title]))
    parts.append(
        "## Authors\n" + "\n".join(f"- {a} ({n})" for a, n in sorted(authors.items(), key=lambda kv: -kv[1]))
    )
    return "\n\n".join(parts) + "\n", {
        "commits": len(commits),
        "authors": authors,
        "conventional": conventional,
    }


@tool(
    "workspace_release_notes",
    "Markdown release notes between two refs (default: last tag to HEAD), grouped by "
    "conventional-commit type when messages follow it, else by the part of the tree touched; authors and counts. "
    "ai_summary: true adds a model-written overview.",
    {"from_ref": {"type": "string"}, "to_ref": {"type": "string"}, "ai_summary": {"type": "boolean"}},
)
def tool_release_notes(ctx: ToolContext, args: dict[str, Any]) -> str:
    require_repo(ctx)
    to_ref = verify_ref(ctx, args.get("to_ref", "HEAD"), "to_ref")
    from_ref = args.get("from_ref")
    if from_ref:
        verify_ref(ctx, from_ref, "from_ref")
    else:
        tag = git(ctx, "describe", "--tags", "--abbrev=0", "--end-of-options", to_ref, check=False).strip()
        from_ref = tag if tag and "fatal" not in tag and REF_PATTERN.match(tag) else None
    notes, _meta = release_notes(ctx, from_ref, to_ref)
    if args.get("ai_summary"):
        overview = _ask_model(ctx, "Write one short overview paragraph for these release notes:\n\n" + notes)
        notes = notes.replace("\n\n", f"\n\n{overview}\n\n", 1)
    return notes


# -- test harness --


# -- project manifests: one table for the test harness and the index's project summary --
#
# A manifest tells the project's dependencies (frameworks and linters are recognised among them) and
# the commands it runs. Both `detect_test_command` (what workspace_run_tests runs) and the index's
# `detect_signals` read manifests through MANIFESTS, so they cannot disagree.

# A match starts only at the beginning of a name and never gives back what it took (possessive): a
# manifest of one 512 KiB word must not take minutes (the engine holds the GIL: the server would stall).
PYTHON_DEPENDENCY = re.compile(
    r"[\"']?(?<![A-Za-z0-9_.-])([A-Za-z][A-Za-z0-9_.-]*+)[ \t]*+(?:[<>=!~]=?|\[|[\"'],|[\"'][ \t]*+$)", re.M
)
# [tool.X] sections of a Python manifest -> the linter or framework they configure
PYTHON_TOOL_SECTIONS = {
    "ruff": "ruff",
    "black": "black",
    "mypy": "mypy",
    "isort": "isort",
    "pytest": "pytest",
}


@dataclasses.dataclass
class ManifestFacts:
    deps: list[str] = dataclasses.field(default_factory=list)
    commands: dict[str, str] = dataclasses.field(
        default_factory=dict
    )  # "test" | "build" | "lint" ... -> command
    tools: list[str] = dataclasses.field(default_factory=list)  # linters/frameworks named by config sections


def _package_json(text: str) -> ManifestFacts:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("package.json is not an object")
    deps = [
        name
        for key in ("dependencies", "devDependencies", "peerDependencies")
        if isinstance(data.get(key), dict)
        for name in data[key]
    ]
    scripts = data.get("scripts") if isinstance(data.get("scripts"), dict) else {}
    return ManifestFacts(
        deps,
        {
            script: "npm test" if script == "test" else f"npm run {script}"
            for script in ("test", "build", "lint", "format", "typecheck")
            if scripts.get(script)
        },
    )


def _python_manifest(text: str) -> ManifestFacts:
    return ManifestFacts(
        [m.lower() for m in PYTHON_DEPENDENCY.findall(text)],
        {"test": "python -m pytest"} if "pytest" in text else {},
        [label for section, label in PYTHON_TOOL_SECTIONS.items() if f"[tool.{section}" in text],
    )


def _requirements(text: str) -> ManifestFacts:
    return ManifestFacts(
        [
            re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower()
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith(("#", "-"))
        ]
    )


def _go_mod(text: str) -> ManifestFacts:
    deps = [
        m.split("/", 1)[-1] if m.count("/") >= 2 else m
        for m in re.findall(r"^[ \t]*+(?:require[ \t]++)?([\w.-]++/[\w./-]++)[ \t]++v", text, re.M)
    ]
    return ManifestFacts(
        deps + re.findall(r"github\.com/([\w-]+/[\w-]+)", text),
        {"test": "go test ./...", "build": "go build ./..."},
    )


def _cargo_toml(text: str) -> ManifestFacts:
    return ManifestFacts(
        [m.lower() for m in re.findall(r"^([A-Za-z0-9_-]++)[ \t]*+=", text, re.M)],
        {"test": "cargo test", "build": "cargo build"},
    )


def _gemfile(text: str) -> ManifestFacts:
    return ManifestFacts(
        [m.lower() for m in re.findall(r"^[ \t]*+gem[ \t]++['\"]([\w-]++)['\"]", text, re.M)]
    )


def _jvm_build(test_command: str) -> Callable[[str], ManifestFacts]:
    def read(text: str) -> ManifestFacts:
        return ManifestFacts(
            ["spring-boot"] * ("spring-boot" in text) + ["junit"] * ("junit" in text.lower()),
            {"test": test_command},
        )

    return read


def _makefile(text: str) -> ManifestFacts:
    return ManifestFacts(
        commands={
            target: f"make {target}"
            for target in ("test", "build", "lint")
            if re.search(rf"^{target}\s*:", text, re.M)
        }
    )


# Manifest name -> its reader, in precedence order: where a directory holds several, the first that names
# a command decides it (a package.json "test" script beats a Makefile's test target).
MANIFESTS: dict[str, Callable[[str], ManifestFacts]] = {
    "package.json": _package_json,
    "go.mod": _go_mod,
    "Cargo.toml": _cargo_toml,
    "pyproject.toml": _python_manifest,
    "setup.cfg": _python_manifest,
    "setup.py": _python_manifest,
    "Pipfile": _python_manifest,
    "pom.xml": _jvm_build("mvn test"),
    "build.gradle": _jvm_build("./gradlew test"),
    "build.gradle.kts": _jvm_build("./gradlew test"),
    "Gemfile": _gemfile,
    "Makefile": _makefile,
    "composer.json": lambda text: ManifestFacts(),
}
DEFAULT_TEST_COMMAND = "python -m pytest"


def manifest_reader(name: str) -> Callable[[str], ManifestFacts] | None:
    if name.startswith("requirements") and name.endswith(".txt"):
        return _requirements
    return MANIFESTS.get(name)


def manifest_order(rel: str) -> tuple[int, int, str]:
    """Shallow manifests first, then by precedence: the order in which their commands are taken."""
    name = posixpath.basename(rel)
    return rel.count("/"), list(MANIFESTS).index(name) if name in MANIFESTS else len(MANIFESTS), rel


def read_manifest(root: str, rel: str) -> ManifestFacts | None:
    """What the manifest at `rel` tells, its commands run from the root (None: unreadable or malformed)."""
    reader = manifest_reader(posixpath.basename(rel))
    if reader is None:
        return None
    try:
        facts = reader(read_regular_file(os.path.join(root, rel), 512 * 1024).decode("utf-8", "replace"))
    except (OSError, ValueError, AttributeError, TypeError, RecursionError):
        return None
    folder = posixpath.dirname(rel)
    if folder and not folder.isprintable():
        facts.commands = {}  # a folder name with control characters would carry text into CLAUDE.md
    elif folder:
        facts.commands = {
            k: f"(cd {shlex.quote(folder)} && {command})" for k, command in facts.commands.items()
        }
    return facts


def detect_test_command(root: str) -> str:
    """What the project most likely runs its tests with: its root manifests' test command."""
    for name in MANIFESTS:
        if os.path.isfile(os.path.join(root, name)):
            facts = read_manifest(root, name)
            if facts is not None and "test" in facts.commands:
                return facts.commands["test"]
    return DEFAULT_TEST_COMMAND


TEST_COUNT_PATTERNS = (  # (regex, which count each named group feeds)
    re.compile(r"(?P<passed>\d+) passed"),
    re.compile(r"(?P<failed>\d+) failed"),
    re.compile(r"(?P<errors>\d+) errors?\b"),
    re.compile(r"(?P<skipped>\d+) skipped"),
)


def parse_test_counts(output: str) -> dict[str, int]:
    """Pass/fail counts from pytest, Jest/Vitest, cargo, go test and the plain 'N passed, N failed' line."""
    counts: dict[str, int] = {}
    jest = re.findall(r"^Tests:\s+(.*)$", output, re.MULTILINE)
    cargo = re.findall(r"test result: \w+\. (\d+) passed; (\d+) failed(?:; (\d+) ignored)?", output)
    if cargo:
        counts["passed"] = sum(int(p) for p, _f, _i in cargo)
        counts["failed"] = sum(int(f) for _p, f, _i in cargo)
        counts["skipped"] = sum(int(i or 0) for _p, _f, i in cargo)
        return counts
    lines = (
        jest[-1:]
        if jest
        else [line for line in output.splitlines()[-40:] if re.search(r"\d+ (passed|failed)", line)][-1:]
    )
    for line in lines:
        for pattern in TEST_COUNT_PATTERNS:
            m = pattern.search(line)
            if m:
                name, value = next(iter(m.groupdict().items()))
                counts[name] = int(value)
    if not counts:
        go_ok = len(re.findall(r"^ok[ \t]+\S+", output, re.MULTILINE))  # one line per package
        go_fail = len(re.findall(r"^FAIL[ \t]+\S+", output, re.MULTILINE))
        if go_ok or go_fail:
            counts = {"packages_passed": go_ok, "packages_failed": go_fail}
    return counts


def _coverage_istanbul(data: Any) -> float | None:
    total = data.get("total") if isinstance(data, dict) else None
    pct = ((total or {}).get("lines") or {}).get("pct")
    return float(pct) if isinstance(pct, (int, float)) else None


def _coverage_py(data: Any) -> float | None:
    totals = data.get("totals") if isinstance(data, dict) else None
    pct = (totals or {}).get("percent_covered")
    return float(pct) if isinstance(pct, (int, float)) else None


def read_coverage(path: str) -> dict[str, Any]:
    """One coverage file -> {"file", "format", "line_percent"} or {"file", "missing": true}."""
    try:
        text = read_regular_file(path).decode("utf-8", "replace")
    except OSError:  # absent, or a symlink, FIFO or device: never followed or opened
        return {"file": path, "missing": True}
    if path.endswith(".info") or text.startswith(("TN:", "SF:")):
        found = sum(int(n) for n in re.findall(r"^LF:(\d+)", text, re.MULTILINE))
        hit = sum(int(n) for n in re.findall(r"^LH:(\d+)", text, re.MULTILINE))
        return {
            "file": path,
            "format": "lcov",
            "line_percent": round(100.0 * hit / found, 2) if found else None,
        }
    try:
        data = json.loads(text)
    except ValueError:
        return {"file": path, "format": "unknown", "error": "not JSON or lcov"}
    for fmt, reader in (("istanbul", _coverage_istanbul), ("coverage.py", _coverage_py)):
        pct = reader(data)
        if pct is not None:
            return {"file": path, "format": fmt, "line_percent": round(pct, 2)}
    return {"file": path, "format": "unknown", "error": "no totals found"}


def _db_add_test_run(db: sqlite3.Connection, run: dict[str, Any]) -> int:
    with db:
        run_id = insert_returning_id(
            db,
            "INSERT INTO test_runs (command, started_at, duration_ms, exit_code, passed, timed_out, counts, coverage,"
            " output_tail, tree_id, checkout) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                run["command"],
                run["started_at"],
                run["duration_ms"],
                run["exit_code"],
                int(run["passed"]),
                int(run["timed_out"]),
                storable_json(run["counts"]),
                storable_json(run["coverage"]),
                escape_surrogates(run["output_tail"]),
                run["tree_id"],
                run.get("checkout", "worktree"),
            ),
        )
    return run_id


def _db_test_runs(db: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT id, command, started_at, duration_ms, exit_code, passed, timed_out, counts, coverage,"
        " tree_id, checkout FROM test_runs ORDER BY id DESC LIMIT ?",
        (limit,),
    )
    return [
        {
            "id": r[0],
            "command": r[1],
            "started_at": r[2],
            "duration_ms": r[3],
            "exit_code": r[4],
            "passed": bool(r[5]),
            "timed_out": bool(r[6]),
            "counts": json.loads(r[7]),
            "coverage": json.loads(r[8]),
            "tree_id": r[9],
            "checkout": r[10],
        }
        for r in rows
    ]


def _db_passing_trees(db: sqlite3.Connection, command: str) -> list[str]:
    return [
        r[0]
        for r in db.execute(
            "SELECT DISTINCT tree_id FROM test_runs WHERE passed = 1 AND command = ? AND tree_id != ''"
            " AND checkout = 'clean'",
            (command,),
        )
    ]


@tool(
    "workspace_test_run",
    "Run the project's tests (WORKSPACE_TEST_COMMAND or the detected default) and record "
    "the result: exit status, duration, pass/fail counts, coverage, and the tail of the output.",
    {
        "gate": {
            "type": "boolean",
            "description": "Run POLICY_GIT_TEST_COMMAND, the command the commit gate counts",
        }
    },
    timeout_setting="WORKSPACE_TEST_TIMEOUT_MS",
)
def tool_test_run(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    command = gate_command(ctx) if args.get("gate") else test_command(ctx)
    argv = shlex.split(command)  # operator-configured, never model input
    if argv and argv[0] == "python" and ctx.policy.sandbox != "podman":  # (the image has its own python)
        argv[0] = sys.executable if not shutil.which("python") else "python"
    is_repo = git(ctx, "rev-parse", "--is-inside-work-tree", check=False).strip() == "true"
    tree_id = worktree_tree_id(ctx) if is_repo else ""
    # The gate counts only runs whose outcome the tested tree decides: those run in a clean checkout.
    clean = bool(tree_id) and ctx.policy.git_require_tests and command == gate_command(ctx)
    started = time.time()
    container = f"lynkr-test-{new_id('', 6)}"
    with contextlib.ExitStack() as stack:
        run_dir = stack.enter_context(clean_checkout(ctx, tree_id)) if clean else ctx.paths.root
        prefix = sandbox_prefix(ctx, run_dir if clean else "", container)
        passthrough = (
            *ctx.policy.subprocess_env,
            *(CONTAINER_CLIENT_ENV if ctx.policy.sandbox == "podman" else ()),
        )
        if ctx.policy.sandbox == "podman":  # killing the client must not leave the container running
            stack.callback(
                subprocess.run,
                ["podman", "rm", "-f", container],
                capture_output=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
                check=False,
                env=program_env(CONTAINER_CLIENT_ENV),
            )
        result = run_command(
            [*prefix, *runner_argv(argv)],
            run_dir,
            ctx.policy.test_timeout_s,
            tail_bytes=TEST_OUTPUT_TAIL_BYTES,
            env=program_env(passthrough),
        )
        coverage = [read_coverage(os.path.join(run_dir, f)) for f in ctx.policy.coverage_files]
    run = {
        "command": command,
        "started_at": started,
        "duration_ms": round(result.duration_s * 1000),
        "exit_code": result.exit_code,
        "passed": result.exit_code == 0 and not result.timed_out,
        "timed_out": result.timed_out,
        "counts": parse_test_counts(result.output),
        "coverage": coverage,
        "output_tail": result.output,
        "tree_id": tree_id,
        "checkout": "clean" if clean else "worktree",
    }
    run["id"] = ctx.store_call(_db_add_test_run, run)
    notes = []
    if result.timed_out:
        notes.append(f"timed out after {ctx.policy.test_timeout_s:g} s (WORKSPACE_TEST_TIMEOUT_MS)")
    for cov in coverage:
        if cov.get("missing"):
            notes.append(
                f"coverage file {cov['file']} not found (WORKSPACE_TEST_COVERAGE_FILES); no coverage recorded"
            )
    if not ctx.policy.coverage_files:
        notes.append("no coverage files configured (WORKSPACE_TEST_COVERAGE_FILES)")
    summary = {k: v for k, v in run.items() if k != "output_tail"}
    summary["notes"] = notes
    return ToolResult(json_dumps(summary) + "\n\n" + result.output, is_error=False)


@tool(
    "workspace_test_history",
    "Past test runs, newest first.",
    {"limit": {"type": "integer", "minimum": 1, "maximum": 1000}},
)
def tool_test_history(ctx: ToolContext, args: dict[str, Any]) -> str:
    return json_dumps(ctx.store_call(_db_test_runs, args.get("limit", 20)))


@tool("workspace_test_summary", "The latest test result and the trend over recent runs.", {})
def tool_test_summary(ctx: ToolContext, args: dict[str, Any]) -> str:
    runs = ctx.store_call(_db_test_runs, 20)
    if not runs:
        return json_dumps({"latest": None, "note": "no test runs recorded yet (workspace_test_run)"})
    recent = runs[:10]
    return json_dumps(
        {
            "latest": runs[0],
            "recent_pass_rate": round(sum(r["passed"] for r in recent) / len(recent), 3),
            "trend": [("pass" if r["passed"] else "fail") for r in reversed(recent)],
            "durations_ms": [r["duration_ms"] for r in reversed(recent)],
        }
    )


# == 16. Indexer ==
#
# Theory of operation: `build_index` crawls WORKSPACE_ROOT (git ls-files for tracked and
# untracked-not-ignored files, else a walk honouring .gitignore basics and build/vendor folders),
# compares each file's size and mtime (then content hash) with the catalog in its own SQLite file
# (index.db beside the session store), and re-parses only what changed: in a process pool when
# many files changed, inline when few did. Symbols and references come from tree-sitter queries
# (per-language grammar wheels, imported lazily) with a regex fallback for other languages and
# for machines without tree-sitter. References are resolved through imports so that a name
# defined independently in an unrelated file is not reported as a use of the first.

INDEX_MAX_FILE_BYTES = 1024 * 1024  # larger files are generated or data: skipped
INDEX_POOL_THRESHOLD = (
    64  # fewer changed files than this parse inline (a pool is slow to start: bench/README.md)
)
CLAUDE_MD_BEGIN = "<!-- lynkr:begin generated (edit outside this block; lynkr rewrites it) -->"
CLAUDE_MD_END = "<!-- lynkr:end generated -->"

LANGUAGE_BY_SUFFIX = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".rb": "ruby",
    ".ex": "elixir",
    ".exs": "elixir",
    ".lua": "lua",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".cs": "csharp",
    ".kt": "kotlin",
    ".swift": "swift",
    ".php": "php",
    ".scala": "scala",
    ".sh": "shell",
    ".md": "markdown",
    ".json": "json",
    ".toml": "toml",
    ".yml": "yaml",
    ".yaml": "yaml",
    ".html": "html",
    ".css": "css",
    ".sql": "sql",
}
# Languages whose symbols are worth extracting (the rest are counted in the language mix only).
CODE_LANGUAGES = frozenset(
    {
        "python",
        "javascript",
        "typescript",
        "tsx",
        "go",
        "rust",
        "java",
        "ruby",
        "elixir",
        "lua",
        "c",
        "cpp",
        "csharp",
        "kotlin",
        "swift",
        "php",
        "scala",
        "shell",
    }
)

# tree-sitter grammar module and loader attribute per language.
TREE_SITTER_GRAMMARS = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "ruby": ("tree_sitter_ruby", "language"),
}
_JS_QUERY = """
(function_declaration name: (identifier) @def.function)
(generator_function_declaration name: (identifier) @def.function)
(method_definition name: (property_identifier) @def.method)
(variable_declarator name: (identifier) @def.function value: [(arrow_function) (function_expression)])
(call_expression function: (identifier) @ref)
(call_expression function: (member_expression property: (property_identifier) @ref))
(new_expression constructor: (identifier) @ref)
(import_statement source: (string) @import)
(import_specifier name: (identifier) @ref)
"""
_JSX_QUERY = """
(jsx_opening_element name: (identifier) @ref)
(jsx_self_closing_element name: (identifier) @ref)
"""
_TS_EXTRA = """
(class_declaration name: (type_identifier) @def.class)
(abstract_class_declaration name: (type_identifier) @def.class)
(interface_declaration name: (type_identifier) @def.interface)
(type_alias_declaration name: (type_identifier) @def.type)
(enum_declaration name: (identifier) @def.enum)
(type_annotation (type_identifier) @ref)
(extends_clause value: (identifier) @ref)
"""
TREE_SITTER_QUERIES = {
    "python": """
(function_definition name: (identifier) @def.function)
(class_definition name: (identifier) @def.class)
(call function: (identifier) @ref)
(attribute attribute: (identifier) @ref)
(class_definition superclasses: (argument_list (identifier) @ref))
(type (identifier) @ref)
(import_from_statement name: (dotted_name (identifier) @ref))
(import_from_statement name: (aliased_import name: (dotted_name (identifier) @ref)))
(import_from_statement module_name: (_) @import)
(import_statement name: (dotted_name) @import)
(import_statement name: (aliased_import name: (dotted_name) @import))
""",
    "javascript": _JS_QUERY + _JSX_QUERY + "(class_declaration name: (identifier) @def.class)\n",
    "typescript": _JS_QUERY + _TS_EXTRA,
    "tsx": _JS_QUERY + _JSX_QUERY + _TS_EXTRA,
    "go": """
(function_declaration name: (identifier) @def.function)
(method_declaration name: (field_identifier) @def.method)
(type_spec name: (type_identifier) @def.type)
(call_expression function: (identifier) @ref)
(call_expression function: (selector_expression field: (field_identifier) @ref))
(type_identifier) @ref
(import_spec path: (interpreted_string_literal) @import)
""",
    "rust": """
(function_item name: (identifier) @def.function)
(struct_item name: (type_identifier) @def.struct)
(enum_item name: (type_identifier) @def.enum)
(trait_item name: (type_identifier) @def.trait)
(mod_item name: (identifier) @def.module)
(macro_definition name: (identifier) @def.macro)
(impl_item type: (type_identifier) @scope.impl)
(impl_item type: (generic_type type: (type_identifier) @scope.impl))
(call_expression function: (identifier) @ref)
(call_expression function: (field_expression field: (field_identifier) @ref))
(call_expression function: (scoped_identifier name: (identifier) @ref))
(type_identifier) @ref
(use_declaration argument: (_) @import)
""",
    "java": """
(class_declaration name: (identifier) @def.class)
(interface_declaration name: (identifier) @def.interface)
(enum_declaration name: (identifier) @def.enum)
(method_declaration name: (identifier) @def.method)
(method_invocation name: (identifier) @ref)
(object_creation_expression type: (type_identifier) @ref)
(type_identifier) @ref
(import_declaration (scoped_identifier) @import)
""",
    "ruby": """
(method name: (identifier) @def.method)
(singleton_method name: (identifier) @def.method)
(class name: (constant) @def.class)
(module name: (constant) @def.module)
(call method: (identifier) @ref)
(constant) @ref
""",
}
# Regex fallback: a definition keyword, then the name. Elixir/Lua and any machine without tree-sitter.
REGEX_DEFINITION = re.compile(
    r"^[ \t]*(?:export\s+|pub(?:\([^)]*\))?\s+|public\s+|private\s+|protected\s+|static\s+|async\s+|local\s+)*"
    r"(?P<kw>def|defp|defmodule|defmacro|function|func|fn|class|module|interface|struct|enum|trait|type|sub|proc)"
    r"\s+(?:\([^)]*\)\s*)?(?P<name>[A-Za-z_]\w*(?:(?:\.|::)\w+)*[!?]?)",
    re.MULTILINE,
)
REGEX_KIND = {
    "def": "function",
    "defp": "function",
    "defmacro": "macro",
    "defmodule": "module",
    "function": "function",
    "func": "function",
    "fn": "function",
    "sub": "function",
    "proc": "function",
    "class": "class",
    "module": "module",
    "interface": "interface",
    "struct": "struct",
    "enum": "enum",
    "trait": "trait",
    "type": "type",
}
REGEX_CALL = re.compile(r"\b([A-Za-z_][\w]*)\s*\(")
# Imports without tree-sitter, so references still resolve across files.
_JS_IMPORTS = re.compile(
    r"""(?:^|\s)(?:import|export)\s[^'";]*?from\s*['"]([^'"]+)['"]|require\(\s*['"]([^'"]+)['"]\s*\)"""
    r"""|^\s*import\s*['"]([^'"]+)['"]""",
    re.MULTILINE,
)
REGEX_IMPORTS = {
    "python": re.compile(r"^\s*from\s+([.\w]+)\s+import\b|^\s*import\s+([\w.]+)", re.MULTILINE),
    "javascript": _JS_IMPORTS,
    "typescript": _JS_IMPORTS,
    "tsx": _JS_IMPORTS,
    "ruby": re.compile(r"^\s*require(?:_relative)?\s*\(?\s*['\"]([^'\"]+)['\"]", re.MULTILINE),
}
REGEX_KEYWORDS = frozenset(
    {
        "if",
        "for",
        "while",
        "switch",
        "return",
        "catch",
        "function",
        "def",
        "fn",
        "func",
        "elif",
        "and",
        "or",
        "not",
        "in",
        "print",
        "sizeof",
        "typeof",
        "new",
    }
)

_PARSERS: dict[str, Any] = {}  # per process: language -> (parser, query) or None


def _tree_sitter_for(language: str) -> Any:
    """(parser, query, cursor class) for a language, or None without tree-sitter. Cached per process."""
    if language in _PARSERS:
        return _PARSERS[language]
    result = None
    grammar = TREE_SITTER_GRAMMARS.get(language)
    if grammar is not None:
        try:
            import importlib

            import tree_sitter

            module = importlib.import_module(grammar[0])
            lang = tree_sitter.Language(getattr(module, grammar[1])())
            parser = tree_sitter.Parser(lang)
            if hasattr(tree_sitter, "QueryCursor"):  # 0.25+
                result = (
                    parser,
                    tree_sitter.Query(lang, TREE_SITTER_QUERIES[language]),
                    tree_sitter.QueryCursor,
                )
            else:  # 0.23/0.24
                result = (parser, lang.query(TREE_SITTER_QUERIES[language]), None)
        except (ImportError, AttributeError, TypeError, ValueError, OSError):
            result = None
    _PARSERS[language] = result
    return result


def tree_sitter_available() -> bool:
    return _tree_sitter_for("python") is not None


def _line_at(source: bytes, offset: int) -> str:
    """The stripped text of the line holding byte `offset`: a definition's signature."""
    start = source.rfind(b"\n", 0, offset) + 1
    end = source.find(b"\n", offset)
    return source[start : end if end != -1 else len(source)].decode("utf-8", errors="replace").strip()[:200]


# Definitions whose functions are methods; "impl" is a Rust scope that is not itself a symbol.
SCOPE_KINDS = frozenset({"class", "struct", "interface", "trait", "impl", "enum", "module"})
SCOPE_ONLY_KINDS = frozenset({"impl"})
GO_RECEIVER_TYPE = re.compile(r"\*?\s*([A-Za-z_]\w*)(?:\[[^\]]*\])?\s*\)\s*$")


def _attach_containers(defs: list[list[Any]]) -> None:
    """Containers of definitions by byte ranges, in one sweep over them in document order. A definition
    is [start byte, end byte, name, kind, container, row, column, signature, end row]; a container set
    already (a Go method's receiver type: Go methods live outside their type's body) is kept."""
    stack: list[list[Any]] = []
    for definition in sorted(defs, key=lambda d: d[0]):
        # Popped: scopes that ended, and a sibling with the very same range (`const a = () => 1,
        # b = () => 2` gives both the declaration's range; neither contains the other).
        while stack and (stack[-1][1] <= definition[0] or stack[-1][:2] == definition[:2]):
            stack.pop()
        if stack:
            if definition[4] is None:
                definition[4] = stack[-1][2]
            if definition[3] == "function" and stack[-1][3] in SCOPE_KINDS:
                definition[3] = "method"
        stack.append(definition)


def pack_spots(flat: list[int]) -> bytes:
    """0-based row, column, row, column, ... -> the refs table's `spots` (little-endian uint32 pairs):
    one C call per file and name instead of a formatted string per use."""
    packed = array.array("I", flat)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack_spots(blob: bytes | str) -> list[tuple[int, int]]:
    """The refs table's `spots` -> 1-based (line, column) pairs in document order."""
    if isinstance(blob, str):  # "line:col line:col", as an older lynkr sharing this index.db writes it
        return sorted(
            (int(line), int(col)) for line, _, col in (spot.partition(":") for spot in blob.split())
        )
    packed = array.array("I")
    packed.frombytes(blob)
    if sys.byteorder == "big":
        packed.byteswap()
    return sorted(zip([row + 1 for row in packed[0::2]], [col + 1 for col in packed[1::2]], strict=False))


def _tree_sitter_extract(
    language: str, source: bytes, ts: tuple[Any, Any, Any]
) -> tuple[list[list[Any]], dict[bytes, list[int]], list[str]]:
    """(definitions, uses by name, imports) from one parse and one query. The uses loop runs for every
    reference of the repository (~200 per file): no per-use objects beyond the flat position list."""
    parser, query, cursor_class = ts
    tree = parser.parse(source)
    raw = cursor_class(query).captures(tree.root_node) if cursor_class else query.captures(tree.root_node)
    captures = raw.items() if isinstance(raw, dict) else _group_captures(raw)
    defs: list[list[Any]] = []
    def_points: set[Any] = set()  # a name captured as a definition is not also a use
    imports: list[str] = []
    for capture, nodes in captures:
        if capture == "import":
            for node in nodes:
                spec = node.text.decode("utf-8", "replace").strip("'\"`")
                parent = node.parent
                if parent is not None and parent.type == "import_from_statement":
                    # Python `from M import a, b as c` / `from M import *`: the names go with the import,
                    # so references know which files take the symbol itself (or a submodule) from M.
                    imported = [
                        child.child_by_field_name("name") if child.type == "aliased_import" else child
                        for child in parent.children_by_field_name("name")
                    ]
                    names = " ".join(n.text.decode("utf-8", "replace") for n in imported if n is not None)
                    imports.append((spec, names or "*"))
                else:
                    imports.append(spec)
        elif capture != "ref":  # def.<kind> or scope.<kind>
            kind = capture.split(".", 1)[1]
            for node in nodes:
                owner = node.parent or node
                while owner.type in ("variable_declarator", "generic_type") and owner.parent is not None:
                    owner = owner.parent
                point = node.start_point
                if capture[0] == "d":
                    def_points.add(point)
                receiver = None
                if language == "go" and owner.type == "method_declaration":
                    receiver_node = owner.child_by_field_name("receiver")
                    m = (
                        GO_RECEIVER_TYPE.search(receiver_node.text.decode("utf-8", "replace"))
                        if receiver_node
                        else None
                    )
                    receiver = m.group(1) if m else None
                start = owner.start_byte
                defs.append(
                    [
                        start,
                        owner.end_byte,
                        node.text.decode("utf-8", "replace"),
                        kind,
                        receiver,
                        point[0],
                        point[1],
                        _line_at(source, start),
                        owner.end_point[0],
                    ]
                )
    uses: dict[bytes, list[int]] = collections.defaultdict(list)
    for capture, nodes in captures:
        if capture == "ref":
            for node in nodes:
                point = node.start_point
                if point not in def_points:
                    uses[node.text].extend(point)
    if language == "ruby":
        imports += [
            m.group(2).decode("utf-8", "replace")
            for m in re.finditer(rb"^\s*(require_relative|require)\s*\(?\s*['\"]([^'\"]+)['\"]", source, re.M)
        ]
    return defs, uses, imports


def _regex_extract(language: str, source: bytes) -> tuple[list[list[Any]], dict[bytes, list[int]], list[str]]:
    """The fallback: definition keywords, calls and import statements by regular expression."""
    text = source.decode("utf-8", errors="replace")
    line_starts = [0]
    for line in text.split("\n"):
        line_starts.append(line_starts[-1] + len(line) + 1)
    defs: list[list[Any]] = []
    name_positions = set()
    for m in REGEX_DEFINITION.finditer(text):
        row = bisect.bisect_right(line_starts, m.start("name")) - 1
        signature = text[line_starts[row] : line_starts[row + 1] - 1].strip()[:200]
        # No bodies, so no containers: the range is empty.
        defs.append(
            [
                m.start(),
                m.start(),
                m.group("name"),
                REGEX_KIND[m.group("kw")],
                None,
                row,
                m.start("name") - line_starts[row],
                signature,
                row,
            ]
        )
        name_positions.add(m.start("name"))
    uses: dict[bytes, list[int]] = collections.defaultdict(list)
    for m in REGEX_CALL.finditer(text):
        if m.group(1) in REGEX_KEYWORDS or m.start(1) in name_positions:
            continue
        row = bisect.bisect_right(line_starts, m.start(1)) - 1
        uses[m.group(1).encode()].extend((row, m.start(1) - line_starts[row]))
    pattern = REGEX_IMPORTS.get(language)
    imports = (
        [next(g for g in m.groups() if g) for m in pattern.finditer(text)] if pattern is not None else []
    )
    return defs, uses, imports


def extract_symbols(path: str, language: str, source: bytes) -> dict[str, Any]:
    """-> {"symbols": rows, "refs": rows, "imports": [...], "parser": "tree-sitter" | "regex"}. Rows are
    the tables' own tuples, `path` first: they cross a process boundary and go straight to executemany.
    References are grouped into one row per name (uses, packed positions): five times fewer rows."""
    ts = _tree_sitter_for(language)
    defs, uses, imports = (
        _tree_sitter_extract(language, source, ts) if ts is not None else _regex_extract(language, source)
    )
    _attach_containers(defs)
    return {
        "symbols": [
            (path, d[2], d[3], d[4], d[5] + 1, d[6] + 1, d[7], d[8] + 1)
            for d in defs
            if d[3] not in SCOPE_ONLY_KINDS
        ],
        "refs": [
            (path, name.decode("utf-8", "replace"), len(flat) >> 1, pack_spots(flat))
            for name, flat in uses.items()
        ],
        "imports": imports,
        "parser": "tree-sitter" if ts is not None else "regex",
    }


def _group_captures(raw: list[tuple[Any, str]]) -> list[tuple[str, list[Any]]]:
    grouped: dict[str, list[Any]] = {}
    for node, name in raw:
        grouped.setdefault(name, []).append(node)
    return list(grouped.items())


def parse_file_job(job: tuple[str, str, str]) -> tuple[str, dict[str, Any] | None, str]:
    """Worker entry (process pool): (rel path, absolute path, language) -> (rel, result, error).
    Each file is read once: digest, line count and the binary check come from the same bytes."""
    rel, absolute, language = job
    try:
        source = read_regular_file(absolute)
        info = {"digest": hashlib.sha1(source).hexdigest(), "lines": source.count(b"\n") + 1}
        if b"\x00" in source[:8192]:
            return (
                rel,
                {**info, "binary": True, "symbols": [], "refs": [], "imports": [], "parser": "skip"},
                "",
            )
        if language not in CODE_LANGUAGES:
            return (
                rel,
                {**info, "binary": False, "symbols": [], "refs": [], "imports": [], "parser": "none"},
                "",
            )
        return rel, {**info, "binary": False, **extract_symbols(rel, language, source)}, ""
    except Exception as exc:  # noqa: BLE001 -- one bad file must not fail the index
        return rel, None, repr(exc)


def _parse_batch(jobs: list[tuple[str, str, str]]) -> list[tuple[str, dict[str, Any] | None, str]]:
    """Worker entry: several files per task keeps the pool's per-task overhead small."""
    return [parse_file_job(job) for job in jobs]


def _m001_index(db: sqlite3.Connection) -> None:
    run_script(
        db,
        """
        CREATE TABLE files (path TEXT PRIMARY KEY, language TEXT, size INTEGER, mtime_ns INTEGER, hash TEXT,
                            lines INTEGER, parser TEXT);
        CREATE TABLE symbols (id INTEGER PRIMARY KEY, file TEXT NOT NULL, name TEXT NOT NULL, kind TEXT,
                              container TEXT, line INTEGER, col INTEGER, signature TEXT);
        CREATE INDEX symbols_name ON symbols(name COLLATE NOCASE);
        CREATE INDEX symbols_file ON symbols(file);
        CREATE TABLE refs (file TEXT NOT NULL, name TEXT NOT NULL, line INTEGER, col INTEGER, enclosing TEXT);
        CREATE INDEX refs_name ON refs(name);
        CREATE INDEX refs_file ON refs(file);
        CREATE TABLE imports (file TEXT NOT NULL, spec TEXT NOT NULL, resolved TEXT);
        CREATE INDEX imports_file ON imports(file);
        CREATE INDEX imports_resolved ON imports(resolved);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
    """,
    )


def _m002_exact_names(db: sqlite3.Connection) -> None:
    # symbols_name is NOCASE for search; definitions and references look names up exactly.
    db.execute("CREATE INDEX symbols_name_exact ON symbols(name)")


def _m003_grouped_refs(db: sqlite3.Connection) -> None:
    # One refs row per (file, name) with the uses packed into `spots` ("line:col line:col"): five times
    # fewer rows to write. Enclosing symbols come from symbol line ranges at query time, hence end_line.
    # Both need a re-parse, so the catalog is emptied and the next rebuild is a full one.
    for statement in (
        "DROP TABLE refs",
        (
            "CREATE TABLE refs (file TEXT NOT NULL, name TEXT NOT NULL, uses INTEGER NOT NULL,"
            " spots TEXT NOT NULL)"
        ),
        "CREATE INDEX refs_name ON refs(name)",
        "CREATE INDEX refs_file ON refs(file)",
        "ALTER TABLE symbols ADD COLUMN end_line INTEGER",
        "DROP INDEX symbols_name",  # NOCASE: search uses the in-memory name table instead
        "DELETE FROM symbols",
        "DELETE FROM imports",
        "DELETE FROM files",
    ):
        db.execute(statement)


def _m004_packed_spots(db: sqlite3.Connection) -> None:
    # `spots` holds packed uint32 (row, column) pairs instead of "line:col" text: no string per use to
    # format when indexing. Old rows need a re-parse, so the catalog is emptied (next rebuild is full).
    for statement in (
        "DROP TABLE refs",
        "CREATE TABLE refs (file TEXT NOT NULL, name TEXT NOT NULL, uses INTEGER NOT NULL, spots BLOB NOT NULL)",
        "CREATE INDEX refs_name ON refs(name)",
        "CREATE INDEX refs_file ON refs(file)",
        "DELETE FROM symbols",
        "DELETE FROM imports",
        "DELETE FROM files",
    ):
        db.execute(statement)


def _m005_import_names(db: sqlite3.Connection) -> None:
    # Python's `from M import a, b` keeps its names ("*" for a star, NULL for a plain import or another
    # language): references tell `from M import f` from `from M import g`, follow re-exports and
    # `from pkg import mod`. Old rows have none, so the catalog is emptied (next rebuild is full).
    for statement in (
        "ALTER TABLE imports ADD COLUMN names TEXT",
        "DELETE FROM symbols",
        "DELETE FROM refs",
        "DELETE FROM imports",
        "DELETE FROM files",
    ):
        db.execute(statement)


INDEX_MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _m001_index,
    _m002_exact_names,
    _m003_grouped_refs,
    _m004_packed_spots,
    _m005_import_names,
]
INDEX_IGNORED_DIRS = IGNORED_DIRS | {
    "vendor",
    "third_party",
    ".next",
    ".nuxt",
    "coverage",
    ".gradle",
    ".idea",
    ".vscode",
    "bower_components",
    ".terraform",
    ".cache",
    "out",
}


def list_workspace_files(root: str, data_dir: str, allowed: Callable[[str], bool] | None = None) -> list[str]:
    """POSIX paths relative to root: git's tracked + untracked-not-ignored, else a filtered walk;
    `allowed` (the file-path policy) has the last word."""
    files = _list_workspace_files(root, data_dir)
    return [f for f in files if allowed(f)] if allowed is not None else files


def _git_quiet(root: str, *args: str) -> subprocess.CompletedProcess[bytes] | None:
    try:
        return subprocess.run(
            ["git", *GIT_SAFETY_CONFIG, *args],
            cwd=root,
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env=noninteractive_env(),
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None


def _list_workspace_files(root: str, data_dir: str) -> list[str]:
    # The index's git is confined like the tools' (no fsmonitor, hooks or implicit bare repository
    # the model could have laid out in the workspace).
    proc = _git_quiet(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", ".")
    if proc is not None and proc.returncode == 0:
        paths = [p for p in proc.stdout.decode("utf-8", "replace").split("\0") if p and p != "CLAUDE.md"]
        return [
            p
            for p in dict.fromkeys(paths)
            if not any(part in INDEX_IGNORED_DIRS for part in p.split("/")[:-1])
        ]
    ignore_globs: list[str] = []
    gitignore = os.path.join(root, ".gitignore")
    with contextlib.suppress(OSError):
        text = read_regular_file(gitignore).decode("utf-8", "replace")
        ignore_globs = [
            ln.strip().rstrip("/") for ln in text.splitlines() if ln.strip() and not ln.startswith(("#", "!"))
        ]
    data_dirs = {
        os.path.abspath(data_dir),
        os.path.realpath(data_dir),
    }  # no link is followed: lexical is enough
    ignore = [g.lstrip("/") for g in ignore_globs]
    ignored = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in ignore)) if ignore else None
    # os.scandir, not os.walk: a folder's entries say whether they are folders without a stat each
    # (a 60,000-file tree is walked in a fraction of the time), in os.walk's top-down sorted order.
    out: list[str] = []
    stack = [(root, "")]
    while stack:
        folder, rel_dir = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError:
            continue
        folders = []
        for entry in entries:
            name = entry.name
            rel = f"{rel_dir}/{name}" if rel_dir else name
            try:
                is_folder = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_folder:
                if not (
                    name in INDEX_IGNORED_DIRS
                    or name.startswith(".")
                    or entry.path in data_dirs
                    or (ignored is not None and ignored.match(name))
                ):
                    folders.append((entry.path, rel))
            elif rel != "CLAUDE.md" and not (
                ignored is not None and (ignored.match(name) or ignored.match(rel))
            ):
                out.append(rel)  # (CLAUDE.md is partly ours: indexing it would make every rebuild rewrite it)
        stack.extend(reversed(folders))
    return out


def import_resolver(known: set[str]) -> Callable[[str, str, str], str | None]:
    """_resolve_import over one file set, remembering answers: most imports of a repository are the
    same absolute modules (`import os`), whose target does not depend on the importing file."""
    answers: dict[tuple[str, str, str], str | None] = {}

    def resolve(rel: str, language: str, spec: str) -> str | None:
        local = spec.startswith(".") or language == "ruby"
        key = (language, posixpath.dirname(rel) if local else "", spec)
        if key not in answers:
            answers[key] = _resolve_import(rel, language, spec, known)
        if answers[key] is None and language == "python" and not local and "/" in rel:
            # Not at the top or under src/: the package may live deeper (a CPython checkout's Lib/,
            # python/, lib/): the importing file's own ancestors, shallowest first.
            key = (language, posixpath.dirname(rel), spec)
            if key not in answers:
                answers[key] = _resolve_import(rel, language, spec, known, ancestors=True)
        return answers[key]

    return resolve


def _resolve_import(
    rel: str, language: str, spec: str, known: set[str], ancestors: bool = False
) -> str | None:
    """Map an import to a workspace file when it names one (relative JS/TS, Python modules, Ruby requires).
    An absolute Python module is looked for at the top and under src/, or with `ancestors` under each
    folder holding the importing file (shallowest first: a package's own folder is not on sys.path)."""
    base = posixpath.dirname(rel)
    candidates: list[str] = []
    if language in ("javascript", "typescript", "tsx"):
        if not spec.startswith("."):
            return None
        stem = posixpath.normpath(posixpath.join(base, spec))
        exts = ("", ".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".d.ts")
        candidates = [stem + e for e in exts] + [f"{stem}/index{e}" for e in exts[1:]]
        if stem.endswith(".js"):
            candidates += [stem[:-3] + ".ts", stem[:-3] + ".tsx"]
    elif language == "python":
        dots = len(spec) - len(spec.lstrip("."))
        module = spec.lstrip(".").replace(".", "/")
        if dots:
            roots = [base]
        elif ancestors:
            parts = base.split("/")
            roots = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        else:
            roots = ["", "src"]
        for _ in range(max(dots - 1, 0)):
            roots = [posixpath.dirname(r) for r in roots]
        for r in roots:
            stem = posixpath.join(r, module) if module else r
            candidates += [stem + ".py", posixpath.join(stem, "__init__.py")]
    elif language == "ruby":
        stem = posixpath.normpath(posixpath.join(base, spec))
        candidates = [stem, stem + ".rb", "lib/" + spec + ".rb"]
    for candidate in candidates:
        candidate = candidate.lstrip("./") if candidate.startswith("./") else candidate
        if candidate in known:
            return candidate
    if language == "python" and "." in spec.lstrip("."):
        # `import os.path`: a submodule set up at run time by a module (not a package) is that module's.
        parent = _resolve_import(rel, language, spec.rsplit(".", 1)[0], known, ancestors)
        return parent if parent is not None and not parent.endswith(("__init__.py", "__init__.pyi")) else None
    return None


@dataclass
class IndexStats:
    files: int = 0
    parsed: int = 0
    deleted: int = 0
    symbols: int = 0
    refs: int = 0
    seconds: float = 0.0
    parser: str = "regex"
    errors: list[str] = field(default_factory=list)


class RepoIndex:
    """The catalog (index.db) and the operations on it. Blocking: call from a worker thread."""

    def __init__(
        self, root: str, db_path: str, data_dir: str, allowed: Callable[[str], bool] | None = None
    ) -> None:
        self.allowed = allowed  # POLICY_FILE_BLOCKED_PATHS: blocked files are never indexed
        self.root = root  # a real path, as load_config resolved WORKSPACE_ROOT
        self.db_path = db_path
        self.data_dir = data_dir
        self._lock = threading.Lock()  # one rebuild at a time; queries use their own connections
        self._closing = threading.Event()  # set at shutdown: a running rebuild stops, none starts
        self._migrated = False
        self._names: tuple[Any, ...] | None = None  # search's name table, rebuilt when built_at changes

    def connect(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(os.path.abspath(self.db_path)), exist_ok=True)
        db = sqlite3.connect(self.db_path, timeout=30)
        if not self._migrated or not os.path.exists(self.db_path + "-wal"):
            db.execute("PRAGMA journal_mode=WAL")  # persistent in the file: once is enough
            apply_migrations(db, INDEX_MIGRATIONS)
            self._migrated = True
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def rebuild(self, workers: int | None = None, timeout_s: float | None = None) -> IndexStats:
        """Bring the index up to date. Past `timeout_s` (LYNKR_INDEX_TIMEOUT_MS) or after close(), the
        rebuild stops (workers finish only the small batch at hand) and raises ToolFailed; the files
        it finished are kept, whole, and the next rebuild goes on from there."""
        with self._lock:
            return self._rebuild(workers, time.monotonic() + timeout_s if timeout_s else None)

    def close(self) -> None:
        """Stop a running rebuild (shutdown must not wait for a large tree to be parsed)."""
        self._closing.set()

    def _check_stop(self, deadline: float | None, started: float) -> None:
        if self._closing.is_set():
            raise ToolFailed("the index rebuild was stopped: lynkr is shutting down")
        if deadline is not None and time.monotonic() > deadline:
            raise ToolFailed(
                f"the index rebuild was stopped after {time.monotonic() - started:.1f} s "
                "(LYNKR_INDEX_TIMEOUT_MS)"
            )

    def _rebuild(self, workers: int | None, deadline: float | None = None) -> IndexStats:
        started = time.monotonic()
        self._check_stop(deadline, started)
        stats = IndexStats(parser="tree-sitter" if tree_sitter_available() else "regex")
        db = self.connect()
        try:
            known = {row[0]: row[1:] for row in db.execute("SELECT path, size, mtime_ns, hash FROM files")}
            current: dict[str, tuple[int, int, str]] = {}
            to_parse: list[tuple[str, str, str]] = []
            touched: list[tuple[int, int, str]] = []  # (size, mtime, path): same bytes, new mtime
            for rel in list_workspace_files(self.root, self.data_dir, self.allowed):
                absolute = os.path.join(self.root, rel)
                try:
                    st = os.lstat(absolute)  # a symlink (which may lead out) or a special file is not indexed
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or st.st_size > INDEX_MAX_FILE_BYTES:
                    continue
                language = LANGUAGE_BY_SUFFIX.get(posixpath.splitext(rel)[1].lower(), "other")
                current[rel] = (st.st_size, st.st_mtime_ns, language)
                previous = known.get(rel)
                if previous is not None:
                    if previous[0] == st.st_size and previous[1] == st.st_mtime_ns:
                        continue
                    if previous[0] == st.st_size and _file_digest(absolute, binary_ok=True) == previous[2]:
                        touched.append((st.st_size, st.st_mtime_ns, rel))  # touched, not changed
                        continue
                to_parse.append((rel, absolute, language))  # new files are hashed by the parser, once
            deleted = [p for p in known if p not in current]
            resolve = import_resolver(set(current))
            parsed = 0
            stopped: ToolFailed | None = None
            with db:
                for rel in deleted:
                    self._drop(db, rel)
                db.executemany("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", touched)
                # A bulk load (first build, most files changed) writes without the secondary indexes and
                # builds them once at the end: sorting once is cheaper than 400k B-tree inserts.
                bulk = len(to_parse) >= INDEX_POOL_THRESHOLD and len(to_parse) * 2 > len(current)
                secondary = (
                    db.execute(
                        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                        " AND tbl_name IN ('symbols', 'refs', 'imports')"
                    ).fetchall()
                    if bulk
                    else []
                )
                if bulk:
                    for rel in [job[0] for job in to_parse if job[0] in known]:
                        self._drop(db, rel)  # while the indexes make it cheap
                for index_name, _sql in secondary:
                    db.execute(f'DROP INDEX "{index_name}"')
                # Results are written as the pool delivers them: parsing and SQLite overlap. A rebuild
                # stopped by LYNKR_INDEX_TIMEOUT_MS or shutdown keeps what it wrote (each file whole):
                # the next rebuild goes on from there instead of starting over.
                try:
                    for results in self._parse(
                        to_parse, workers, lambda: self._check_stop(deadline, started)
                    ):
                        if not bulk:
                            for rel in [item[0] for item in results if item[0] in known]:
                                self._drop(db, rel)  # the old rows stay until the new ones are ready
                        self._insert(db, results, current, resolve, stats)
                        parsed += sum(not (result or {}).get("binary") for _rel, result, _error in results)
                except ToolFailed as exc:
                    stopped = exc
                for _index_name, sql in secondary:
                    db.execute(sql)
                if deleted or to_parse:
                    # Imports that pointed at files now present/absent are re-resolved cheaply.
                    rows = db.execute(
                        "SELECT i.rowid, i.file, f.language, i.spec FROM imports i JOIN files f"
                        " ON f.path = i.file WHERE i.resolved IS NULL OR i.resolved NOT IN"
                        " (SELECT path FROM files)"
                    ).fetchall()
                    db.executemany(
                        "UPDATE imports SET resolved = ? WHERE rowid = ?",
                        [(resolve(f, lang, spec), rowid) for rowid, f, lang, spec in rows],
                    )
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('built_at', ?)", (str(time.time()),))
            stats.files = db.execute("SELECT COUNT(*) FROM files WHERE language != 'binary'").fetchone()[0]
            stats.parsed = parsed
            stats.deleted = len(deleted)
            stats.symbols = db.execute("SELECT COUNT(*) FROM symbols").fetchone()[0]
            stats.refs = db.execute("SELECT COALESCE(SUM(uses), 0) FROM refs").fetchone()[0]
        finally:
            db.close()
        stats.seconds = round(time.monotonic() - started, 3)
        if stopped is not None:
            raise ToolFailed(
                f"{stopped}: {parsed} of {len(to_parse)} changed files were indexed and kept; the next "
                "rebuild goes on from there"
            )
        return stats

    @staticmethod
    def _insert(
        db: sqlite3.Connection,
        results: list[tuple[str, dict[str, Any] | None, str]],
        seen: dict[str, tuple[int, int, str]],
        resolve: Callable[[str, str, str], str | None],
        stats: IndexStats,
    ) -> None:
        """Parsed files' rows: one executemany per table for a whole batch of files."""
        files, symbols, refs, imports = [], [], [], []
        for rel, result, error in results:
            size, mtime_ns, language = seen[rel]
            if result is None:
                stats.errors.append(f"{rel}: {error}")
                result = {
                    "digest": "",
                    "lines": 0,
                    "binary": False,
                    "symbols": [],
                    "refs": [],
                    "imports": [],
                    "parser": "error",
                }
            if result["binary"]:
                language = "binary"  # kept as a row so the next rebuild skips it by size/mtime
            files.append((rel, language, size, mtime_ns, result["digest"], result["lines"], result["parser"]))
            symbols += result["symbols"]
            refs += result["refs"]
            # An import is a spec, or (spec, names) for Python's `from spec import names` ("*" for a star).
            imports += [
                (rel, spec, resolve(rel, language, spec), None)
                if isinstance(spec, str)
                else (rel, spec[0], resolve(rel, language, spec[0]), spec[1])
                for spec in result["imports"]
            ]
        db.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", files)
        db.executemany(
            "INSERT INTO symbols (file, name, kind, container, line, col, signature, end_line)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            symbols,
        )
        db.executemany("INSERT INTO refs VALUES (?, ?, ?, ?)", refs)
        db.executemany("INSERT INTO imports VALUES (?, ?, ?, ?)", imports)

    @staticmethod
    def _drop(db: sqlite3.Connection, rel: str) -> None:
        for table, column in (("files", "path"), ("symbols", "file"), ("refs", "file"), ("imports", "file")):
            db.execute(f"DELETE FROM {table} WHERE {column} = ?", (rel,))

    @staticmethod
    def _parse(
        jobs: list[tuple[str, str, str]], workers: int | None, check_stop: Callable[[], None] = lambda: None
    ) -> Iterable[list[tuple[str, dict[str, Any] | None, str]]]:
        """Batches of parse results as they become ready: inline for a few files, a process pool for
        many. `check_stop` raises to stop; it is called before each inline file and at least twice a
        second while the pool works."""
        workers = workers or os.cpu_count() or 1
        code_jobs = sum(1 for j in jobs if j[2] in CODE_LANGUAGES)
        if code_jobs < INDEX_POOL_THRESHOLD or workers < 2:
            for job in jobs:
                check_stop()
                yield [parse_file_job(job)]
            return
        # Largest files first so the pool's tail is short.
        jobs = sorted(jobs, key=lambda j: -os.path.getsize(j[1]) if os.path.exists(j[1]) else 0)
        import concurrent.futures.process  # only index builds need processes: imported here, not at start
        import multiprocessing

        if sys.platform != "linux":
            context = multiprocessing.get_context("spawn")
        elif threading.active_count() == 1:
            # A single-threaded caller (`lynkr index`, a script): forked workers start at once with
            # everything imported. Forking while other threads run (the server) can copy a lock
            # some thread holds, hence the fork server there.
            context = multiprocessing.get_context("fork")
        else:
            context = multiprocessing.get_context("forkserver")
            # The fork server preloads lynkr when it was imported (the `lynkr` console script): its
            # workers then start without compiling it again. Under `python lynkr.py` or `python -m lynkr`
            # CPython 3.11 does not preload __main__, so each worker runs it once (bench/README.md,
            # Figures behind the code: about half a second per pool).
            context.set_forkserver_preload(["__main__"] + ([__name__] if __name__ != "__main__" else []))
        delivered: set[str] = set()
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
        finished = False
        try:
            # Many small batches: results reach the SQLite writer sooner, and a stopped rebuild
            # leaves only the batches already running to finish.
            batches = min(len(jobs), workers * 32)
            pending = {pool.submit(_parse_batch, jobs[i::batches]) for i in range(batches)}
            while pending:
                done, pending = concurrent.futures.wait(
                    pending, timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED
                )
                check_stop()
                for future in done:
                    results = future.result()
                    delivered.update(item[0] for item in results)
                    yield results
            finished = True
        except concurrent.futures.process.BrokenProcessPool:
            # A worker died (killed, out of memory, or a __main__ it cannot re-import, such as stdin):
            # the rest is parsed here rather than failing the whole rebuild.
            pool.shutdown(wait=False, cancel_futures=True)
            for job in [job for job in jobs if job[0] not in delivered]:
                check_stop()
                yield [parse_file_job(job)]
            finished = True
        finally:
            # Stopped early (timeout, shutdown, an error): batches not started are dropped, the few
            # running ones end on their own. Killing a worker instead can leave the pool's manager
            # thread waiting forever on half a result, and the interpreter waits for that thread.
            pool.shutdown(wait=finished, cancel_futures=not finished)

    # -- queries --
    def _name_table(self, db: sqlite3.Connection) -> tuple[Any, ...]:
        """Distinct symbol names ordered by reference count (the tie-break), as one lowercase
        newline-joined string so each match tier is a C-speed find; rebuilt after each index build."""
        built = db.execute("SELECT value FROM meta WHERE key = 'built_at'").fetchone()
        if self._names is not None and self._names[0] == built:
            return self._names
        counts = dict(db.execute("SELECT name, SUM(uses) FROM refs GROUP BY name"))
        names = sorted(
            {row[0] for row in db.execute("SELECT DISTINCT name FROM symbols")},
            key=lambda n: (-counts.get(n, 0), len(n), n),
        )
        lowered = [n.lower() for n in names]
        blob = "\n" + "\n".join(lowered) + "\n"
        starts, position = [], 1
        for name in lowered:
            starts.append(position)
            position += len(name) + 1
        exact: dict[str, list[int]] = {}
        for i, name in enumerate(lowered):
            exact.setdefault(name, []).append(i)
        # lowered names, and per character a mask of the names holding it (filled as queries need them)
        self._names = (built, names, blob, starts, exact, counts, lowered, {})
        return self._names

    def _fast_candidates(
        self, db: sqlite3.Connection, query: str, limit: int
    ) -> tuple[list[str], dict[str, int], dict[str, int]]:
        """Up to `limit` names by tier (exact, prefix, substring, subsequence), popular first within a tier."""
        _built, names, blob, starts, exact, counts, lowered, char_masks = self._name_table(db)
        q = query.lower()
        picked: dict[int, int] = dict.fromkeys(exact.get(q, ()), 0)

        def take(offsets: Iterable[int], rank: int) -> bool:
            for offset in offsets:
                i = bisect.bisect_right(starts, offset) - 1
                if i not in picked:
                    picked[i] = rank
                    if len(picked) >= limit:
                        return True
            return False

        def finds(needle: str, shift: int) -> Iterable[int]:
            at = blob.find(needle)
            while at != -1:
                yield at + shift
                at = blob.find(needle, at + 1)

        if (
            len(picked) < limit
            and "\n" not in q
            and not take(finds("\n" + q, 1), 1)
            and not take(finds(q, 0), 2)
        ):
            # Subsequences: only names holding every character of the query are tried (masks with one
            # byte per name, ANDed), in popularity order, until the answer is full.
            holding = -1
            for char in set(q):
                if char not in blob:  # a C-speed check first: no mask is built for a character no name has
                    holding = 0
                if not holding:
                    break
                if char not in char_masks:
                    char_masks[char] = int.from_bytes(bytes([char in name for name in lowered]), "little")
                holding &= char_masks[char]
            candidates = holding.to_bytes(len(lowered), "little") if holding > 0 else b""
            # Linear subsequence match: each letter, then anything but the next letter.
            matches = re.compile(
                re.escape(q[0]) + "".join(f"[^{re.escape(c)}]*{re.escape(c)}" for c in q[1:])
            ).search
            i = candidates.find(1)
            while i != -1 and len(picked) < limit:
                if i not in picked and matches(lowered[i]):
                    picked[i] = 3
                i = candidates.find(1, i + 1)
        chosen = {names[i]: rank for i, rank in picked.items()}
        return list(chosen), chosen, counts

    def search(
        self,
        query: str,
        kind: str | None = None,
        language: str | None = None,
        path: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Exact, then prefix, then substring, then subsequence matches; ties by reference count."""
        db = self.connect()
        try:
            if not (kind or language or path):
                chosen, ranks, counts = self._fast_candidates(db, query, limit)
                # Names come best first: their definitions are read name by name, only as many as
                # the answer shows (a popular name such as __init__ has thousands).
                rows: list[tuple[Any, ...]] = []
                for name in chosen:
                    rows += db.execute(
                        "SELECT s.name, s.kind, s.container, s.file, s.line, s.col, s.signature,"
                        " f.language FROM symbols s JOIN files f ON f.path = s.file WHERE s.name = ?"
                        " ORDER BY s.file, s.line LIMIT ?",
                        (name, limit - len(rows)),
                    ).fetchall()
                    if len(rows) >= limit:
                        break
                return [
                    {
                        "name": r[0],
                        "kind": r[1],
                        "container": r[2],
                        "file": r[3],
                        "line": r[4],
                        "column": r[5],
                        "signature": r[6],
                        "language": r[7],
                        "references": counts.get(r[0], 0),
                        "match": ("exact", "prefix", "substring", "subsequence")[ranks[r[0]]],
                    }
                    for r in rows[:limit]
                ]
            sql = (
                "SELECT s.name, s.kind, s.container, s.file, s.line, s.col, s.signature, f.language FROM symbols s"
                " JOIN files f ON f.path = s.file WHERE 1=1"
            )
            params: list[Any] = []
            if kind:
                sql += " AND s.kind = ?"
                params.append(kind)
            if language:
                sql += " AND f.language = ?"
                params.append(language)
            if path:
                sql += " AND s.file GLOB ?"
                params.append(path if any(c in path for c in "*?[") else path.rstrip("/") + "*")
            lowered = query.lower()
            if len(lowered) >= 2:  # subsequence matches need every character in order: prefilter on the first
                sql += " AND instr(lower(s.name), ?) > 0"
                params.append(lowered[0])
            rows = db.execute(sql, params).fetchall()
            pattern = re.compile(".*?".join(map(re.escape, lowered)))
            scored = []
            for row in rows:
                name = row[0].lower()
                if name == lowered:
                    rank = 0
                elif name.startswith(lowered):
                    rank = 1
                elif lowered in name:
                    rank = 2
                elif pattern.search(name):
                    rank = 3
                else:
                    continue
                scored.append((rank, row))
            scored.sort(key=lambda item: (item[0], len(item[1][0])))
            top = scored[: max(limit * 4, limit)]
            names = sorted({row[0] for _, row in top})
            counts: dict[str, int] = {}
            for start in range(0, len(names), 500):
                chunk = names[start : start + 500]
                marks = ",".join("?" * len(chunk))
                counts.update(
                    db.execute(
                        f"SELECT name, SUM(uses) FROM refs WHERE name IN ({marks}) GROUP BY name", chunk
                    ).fetchall()
                )
            top.sort(key=lambda item: (item[0], -counts.get(item[1][0], 0), len(item[1][0]), item[1][3]))
            return [
                {
                    "name": r[0],
                    "kind": r[1],
                    "container": r[2],
                    "file": r[3],
                    "line": r[4],
                    "column": r[5],
                    "signature": r[6],
                    "language": r[7],
                    "references": counts.get(r[0], 0),
                    "match": ("exact", "prefix", "substring", "subsequence")[rank],
                }
                for rank, r in top[:limit]
            ]
        finally:
            db.close()

    def _definitions(self, db: sqlite3.Connection, name: str) -> list[tuple[Any, ...]]:
        return db.execute(
            "SELECT file, line, col, kind, container, signature FROM symbols WHERE name = ?"
            " ORDER BY file, line",
            (name,),
        ).fetchall()

    def references(self, name: str, file: str | None = None) -> dict[str, Any]:
        """Every definition of `name` (only those in `file` when given) with its own uses elsewhere,
        resolved through imports, the most referenced first. `definition`/`references` are the first's."""
        db = self.connect()
        try:
            all_definitions = self._definitions(db, name)
            definitions = [d for d in all_definitions if d[0] == file] if file else all_definitions
            definitions = definitions or all_definitions
            if not definitions:
                return {"name": name, "definition": None, "references": {}, "note": "no definition indexed"}
            defining_files = {d[0] for d in all_definitions}
            several = len(defining_files) > 1
            described = []
            for definition in definitions:
                refs = self._references_of(db, name, definition[0], defining_files, several)
                described.append(
                    {
                        "file": definition[0],
                        "line": definition[1],
                        "column": definition[2],
                        "kind": definition[3],
                        "container": definition[4],
                        "signature": definition[5],
                        "references": refs,
                        "reference_count": sum(len(v) for v in refs.values()),
                    }
                )
            described.sort(key=lambda d: (-d["reference_count"], d["file"], d["line"]))
            first = described[0]
            return {
                "name": name,
                "definition": {k: v for k, v in first.items() if k not in ("references", "reference_count")},
                "references": first["references"],
                "reference_count": first["reference_count"],
                "definitions": described,
                "other_definitions": [
                    {"file": d["file"], "line": d["line"], "reference_count": d["reference_count"]}
                    for d in described[1:]
                ],
            }
        finally:
            db.close()

    def _references_of(
        self, db: sqlite3.Connection, name: str, def_file: str, defining_files: set[str], several: bool
    ) -> dict[str, list[dict[str, Any]]]:
        rows = db.execute(
            "SELECT file, spots FROM refs WHERE name = ? AND file != ? ORDER BY file", (name, def_file)
        ).fetchall()
        importers = self._importers(db, name, def_file)
        grouped: dict[str, list[dict[str, Any]]] = {}
        for ref_file, spots in rows:
            if ref_file in defining_files and ref_file not in importers:
                continue  # that file has its own definition of the name (and no import of this one)
            if ref_file not in importers:
                # No import edge to this definition: count it only when the file imports nothing that
                # could supply the name from elsewhere and its language resolves nothing (Go, Java...);
                # with several definitions, only the one in the same folder (the same package) gets it.
                resolved = {
                    r[0]
                    for r in db.execute(
                        "SELECT resolved FROM imports WHERE file = ? AND resolved IS NOT NULL", (ref_file,)
                    )
                }
                if resolved & defining_files or _resolvable_language(db, ref_file):
                    continue
                if several and posixpath.dirname(ref_file) != posixpath.dirname(def_file):
                    continue
            scopes = db.execute(
                "SELECT line, end_line, name FROM symbols WHERE file = ?", (ref_file,)
            ).fetchall()
            grouped[ref_file] = [
                {"line": line, "column": col, "enclosing": _enclosing(scopes, line)}
                for line, col in unpack_spots(spots)
            ]
        return grouped

    @staticmethod
    def _importers(db: sqlite3.Connection, name: str, def_file: str) -> set[str]:
        """Files whose imports reach `def_file`'s `name`. Python, by the names of `from M import ...`:
        `from M import other` does not (that file's `name` is another one); `from pkg import mod` /
        `from . import mod` (resolved to the package's __init__.py) does, `import pkg.sub` reaches
        pkg/__init__.py too, and re-exports are followed: a file doing `from M import name` (or
        `from M import *`) passes the name on to its own importers, transitively."""

        def rows(sql: str, values: list[str]) -> list[tuple[str, str | None, str]]:
            out: list[tuple[str, str | None, str]] = []
            for start in range(0, len(values), 500):
                chunk = values[start : start + 500]
                out += db.execute(sql.replace("{}", ",".join("?" * len(chunk))), chunk).fetchall()
            return out

        def takes(names: str | None, wanted: str) -> bool:
            return names is None or names == "*" or wanted in names.split()

        importers: set[str] = set()
        reexporters: set[str] = set()
        targets, seen = [def_file], {def_file}
        for _depth in range(5):
            python = [t for t in targets if t.endswith((".py", ".pyi"))]
            packages = {
                posixpath.join(posixpath.dirname(t), "__init__.py"): posixpath.basename(t).rsplit(".", 1)[0]
                for t in python
                if not t.endswith(("/__init__.py", "/__init__.pyi"))
            }
            for file, names, resolved in rows(
                "SELECT file, names, resolved FROM imports WHERE resolved IN ({})",
                targets + [p for p in packages if p not in seen],
            ):
                if resolved in packages and resolved not in seen:  # `from pkg import mod`
                    if names is not None and packages[resolved] in names.split():
                        importers.add(file)
                elif takes(names, name):
                    importers.add(file)
                    if names is not None and file not in seen:
                        reexporters.add(file)
            for target in python:
                if target.endswith(("/__init__.py", "/__init__.pyi")):  # `import pkg.sub` binds pkg
                    folder = posixpath.dirname(target)
                    importers.update(
                        row[0]
                        for row in db.execute(
                            "SELECT file FROM imports WHERE resolved GLOB ? AND names IS NULL",
                            (re.sub(r"([*?[])", r"[\1]", folder) + "/*",),
                        )
                    )
            targets = sorted(reexporters - seen)
            if not targets:
                break
            seen.update(targets)
        return importers

    def goto_definition(
        self, name: str | None, file: str | None, line: int | None, column: int | None
    ) -> dict[str, Any]:
        db = self.connect()
        try:
            if not name:
                if not (file and line):
                    raise ToolFailed("give a name, or a file and line (and column)")
                absolute = os.path.join(self.root, file)
                try:
                    text_lines = read_regular_file(absolute).decode("utf-8", "replace").split("\n")
                except OSError:
                    raise ToolFailed(f"{file}: cannot read") from None
                if not 1 <= line <= len(text_lines):
                    raise ToolFailed(f"{file} has no line {line}")
                text = text_lines[line - 1]
                col = min(max((column or 1) - 1, 0), max(len(text) - 1, 0))
                for m in re.finditer(r"[A-Za-z_$][\w$]*[!?]?", text):
                    if m.start() <= col < m.end() or (column is None and m.group() not in REGEX_KEYWORDS):
                        name = m.group()
                        break
                if not name:
                    raise ToolFailed(f"no identifier at {file}:{line}:{column or 1}")
            candidates = self._definitions(db, name)
            if file and candidates:
                local = [c for c in candidates if c[0] == file]
                imported = {
                    r[0]
                    for r in db.execute(
                        "SELECT resolved FROM imports WHERE file = ? AND resolved IS NOT NULL", (file,)
                    )
                }
                preferred = local or [c for c in candidates if c[0] in imported]
                candidates = preferred + [c for c in candidates if c not in preferred]
            return {
                "name": name,
                "definitions": [
                    {
                        "file": c[0],
                        "line": c[1],
                        "column": c[2],
                        "kind": c[3],
                        "container": c[4],
                        "signature": c[5],
                    }
                    for c in candidates[:20]
                ],
            }
        finally:
            db.close()

    def language_mix(self, db: sqlite3.Connection) -> list[tuple[str, int, int]]:
        return db.execute(
            "SELECT language, COUNT(*), SUM(lines) FROM files WHERE language != 'binary'"
            " GROUP BY language ORDER BY SUM(lines) DESC"
        ).fetchall()


def _enclosing(scopes: list[tuple[int, int | None, str]], line: int) -> str | None:
    """The innermost symbol whose lines contain `line`: (start, end, name) rows of one file."""
    best: tuple[int, int, str] | None = None
    for start, end, name in scopes:
        end = end or start
        if start <= line <= end and (best is None or (start, -end) > (best[0], -best[1])):
            best = (start, end, name)
    return best[2] if best else None


def _resolvable_language(db: sqlite3.Connection, rel: str) -> bool:
    row = db.execute("SELECT language FROM files WHERE path = ?", (rel,)).fetchone()
    return bool(row and row[0] in ("javascript", "typescript", "tsx", "python"))


def _file_digest(path: str, binary_ok: bool = False) -> str | None:
    """sha1 of a file's bytes; None for a binary file (NUL in the first 8 KiB) unless binary_ok."""
    try:
        data = read_regular_file(path)
    except OSError:
        return None
    if not binary_ok and b"\x00" in data[:8192]:
        return None
    return hashlib.sha1(data).hexdigest()


# -- frameworks, tooling and the project summary --

FRAMEWORK_PACKAGES = {
    "react": "React",
    "next": "Next.js",
    "express": "Express",
    "vue": "Vue",
    "svelte": "Svelte",
    "@angular/core": "Angular",
    "@nestjs/core": "NestJS",
    "fastify": "Fastify",
    "nuxt": "Nuxt",
    "jest": "Jest",
    "vitest": "Vitest",
    "mocha": "Mocha",
    "eslint": "ESLint",
    "prettier": "Prettier",
    "typescript": "TypeScript",
    "vite": "Vite",
    "webpack": "webpack",
    "django": "Django",
    "flask": "Flask",
    "fastapi": "FastAPI",
    "pytest": "pytest",
    "ruff": "ruff",
    "black": "black",
    "mypy": "mypy",
    "sqlalchemy": "SQLAlchemy",
    "pydantic": "Pydantic",
    "numpy": "NumPy",
    "pandas": "pandas",
    "torch": "PyTorch",
    "flake8": "flake8",
    "celery": "Celery",
    "gin-gonic/gin": "Gin",
    "labstack/echo": "Echo",
    "gofiber/fiber": "Fiber",
    "spf13/cobra": "Cobra",
    "tokio": "Tokio",
    "actix-web": "Actix Web",
    "axum": "Axum",
    "serde": "Serde",
    "clap": "clap",
    "rails": "Rails",
    "sinatra": "Sinatra",
    "rspec": "RSpec",
    "rubocop": "RuboCop",
    "spring-boot": "Spring Boot",
    "junit": "JUnit",
    "h11": "h11",
}
LINT_CONFIG_FILES = {
    ".eslintrc": "ESLint",
    ".eslintrc.js": "ESLint",
    ".eslintrc.json": "ESLint",
    ".eslintrc.cjs": "ESLint",
    "eslint.config.js": "ESLint",
    "eslint.config.mjs": "ESLint",
    ".prettierrc": "Prettier",
    ".prettierrc.json": "Prettier",
    "prettier.config.js": "Prettier",
    "ruff.toml": "ruff",
    ".ruff.toml": "ruff",
    ".flake8": "flake8",
    "mypy.ini": "mypy",
    ".rubocop.yml": "RuboCop",
    ".golangci.yml": "golangci-lint",
    "rustfmt.toml": "rustfmt",
    "clippy.toml": "clippy",
    ".editorconfig": "EditorConfig",
    "biome.json": "Biome",
    ".stylelintrc": "Stylelint",
}
# Labels from FRAMEWORK_PACKAGES and PYTHON_TOOL_SECTIONS that are linters or formatters, not frameworks.
LINTER_LABELS = frozenset({"ESLint", "Prettier", "ruff", "black", "mypy", "flake8", "RuboCop", "isort"})


def detect_signals(root: str, files: list[str]) -> dict[str, Any]:
    """Frameworks, linters/formatters and commands from manifests anywhere in the tree (MANIFESTS)."""
    frameworks: set[str] = set()
    linters: set[str] = set()
    commands: dict[str, str] = {}
    manifests: list[str] = []
    for rel in files:
        name = posixpath.basename(rel)
        if name in LINT_CONFIG_FILES:
            linters.add(LINT_CONFIG_FILES[name])
        if manifest_reader(name) is not None:
            manifests.append(rel)
    for rel in sorted(manifests, key=manifest_order):
        facts = read_manifest(root, rel)
        if facts is None:
            continue
        for kind, command in facts.commands.items():
            commands.setdefault(kind, command)
        for label in [
            *facts.tools,
            *filter(None, map(FRAMEWORK_PACKAGES.get, (d.lower() for d in facts.deps))),
        ]:
            (linters if label in LINTER_LABELS else frameworks).add(label)
    return {
        "frameworks": sorted(frameworks),
        "linters": sorted(linters),
        "commands": commands,
        "manifests": sorted(manifests)[:50],
    }


def _most_referenced_files(db: sqlite3.Connection) -> list[tuple[str, int]]:
    """The modules other files use most: counted by resolved import edges (an index lookup), or, where the
    languages resolve no imports (Go, Java...), by uses of names only one file defines. The answer is kept
    in `meta` with the catalog's state, so a rebuild that changed nothing does not count again (on a
    50,000-file tree the old join of every reference with every same-named symbol took minutes: see
    bench/monorepo_bench.py)."""
    state = json_dumps(db.execute("SELECT COUNT(*), TOTAL(mtime_ns), TOTAL(size) FROM files").fetchone())
    kept = db.execute("SELECT value FROM meta WHERE key = 'most_referenced'").fetchone()
    if kept:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            stored = json.loads(kept[0])
            if stored["state"] == state:
                return [(f, n) for f, n in stored["files"]]
    found = db.execute(
        "SELECT resolved, COUNT(DISTINCT file) AS n FROM imports WHERE resolved IS NOT NULL"
        " GROUP BY resolved ORDER BY n DESC, resolved LIMIT 10"
    ).fetchall()
    if not found:
        found = db.execute(
            "WITH defs AS (SELECT name, MIN(file) AS file FROM symbols"
            " WHERE kind IN ('function','class','method','interface','type','struct','module')"
            " GROUP BY name HAVING COUNT(DISTINCT file) = 1)"
            " SELECT defs.file, SUM(r.uses) AS n FROM defs JOIN refs r ON r.name = defs.name AND r.file != defs.file"
            " GROUP BY defs.file ORDER BY n DESC, defs.file LIMIT 10"
        ).fetchall()
    with contextlib.suppress(sqlite3.Error), db:  # a read-only catalog still answers
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('most_referenced', ?)",
            (json_dumps({"state": state, "files": [list(row) for row in found]}),),
        )
    return [(f, n) for f, n in found]


def project_summary(
    index: RepoIndex, latest_test: dict[str, Any] | None, coverage_files: tuple[str, ...]
) -> dict[str, Any]:
    db = index.connect()
    try:
        mix = index.language_mix(db)
        files = [row[0] for row in db.execute("SELECT path FROM files WHERE language != 'binary'")]
        top_dirs: dict[str, int] = {}
        for rel in files:
            top = rel.split("/", 1)[0] if "/" in rel else "."
            top_dirs[top] = top_dirs.get(top, 0) + 1
        most_referenced = _most_referenced_files(db)
        symbol_count = db.execute("SELECT COUNT(*) FROM symbols").fetchone()[0]
    finally:
        db.close()
    signals = detect_signals(index.root, files)
    code_lines = sum(lines or 0 for language, _n, lines in mix if language in CODE_LANGUAGES)
    coverage_note = None
    if not coverage_files:
        coverage_note = "no coverage files configured (WORKSPACE_TEST_COVERAGE_FILES)"
    else:
        missing = [f for f in coverage_files if not os.path.isfile(os.path.join(index.root, f))]
        if missing:
            coverage_note = (
                "coverage files missing: " + ", ".join(missing) + " (run the tests with coverage enabled)"
            )
    return {
        "files": len(files),
        "symbols": symbol_count,
        "languages": [
            {
                "language": language,
                "files": n,
                "lines": lines or 0,
                "share": round((lines or 0) / code_lines, 3)
                if code_lines and language in CODE_LANGUAGES
                else None,
            }
            for language, n, lines in mix
        ],
        "frameworks": signals["frameworks"],
        "lint_and_style": signals["linters"],
        "commands": signals["commands"],
        "manifests": signals["manifests"],
        "key_directories": sorted(top_dirs.items(), key=lambda kv: -kv[1])[:12],
        "most_referenced_files": [{"file": f, "references": n} for f, n in most_referenced],
        "latest_test_run": latest_test,
        "coverage_note": coverage_note,
        "parser": "tree-sitter"
        if tree_sitter_available()
        else "regex (pip install 'lynkr[index]' for tree-sitter)",
    }


def render_claude_md(summary: dict[str, Any]) -> str:
    code = [lang for lang in summary["languages"] if lang["share"]]
    lines = ["## Project overview (generated by lynkr)", ""]
    if code:
        lines.append(
            "**Languages:** " + ", ".join(f"{c['language']} ({round(c['share'] * 100)}%)" for c in code[:6])
        )
    if summary["frameworks"]:
        lines.append("**Frameworks and libraries:** " + ", ".join(summary["frameworks"]))
    if summary["lint_and_style"]:
        lines.append("**Lint and style:** " + ", ".join(summary["lint_and_style"]))
    lines += ["", "### Commands"]
    commands = summary["commands"]
    for key in ("build", "test", "lint", "format", "typecheck"):
        if key in commands:
            lines.append(f"- {key}: `{commands[key]}`")
    if not commands:
        lines.append("- (none detected)")
    lines += ["", "### Key directories"]
    lines += [
        f"- `{d}/` ({n} files)" if d != "." else f"- top level ({n} files)"
        for d, n in summary["key_directories"]
    ]
    if summary["most_referenced_files"]:
        lines += ["", "### Most referenced modules"]
        lines += [f"- `{m['file']}` ({m['references']} references)" for m in summary["most_referenced_files"]]
    if summary.get("coverage_note"):
        lines += ["", f"_Coverage: {summary['coverage_note']}._"]
    return "\n".join(lines) + "\n"


def write_claude_md(root: str, body: str) -> str:
    """Own only the marked block of CLAUDE.md: hand-written text around it is kept byte for byte."""
    path = os.path.join(root, "CLAUDE.md")
    block = f"{CLAUDE_MD_BEGIN}\n{body}{CLAUDE_MD_END}\n"
    try:  # never through a symlink: a CLAUDE.md linked to a file outside would be read, then copied in
        existing: str | None = read_regular_file(path).decode("utf-8", errors="replace")  # CRLF stays CRLF
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise ToolFailed("CLAUDE.md is not a regular file: lynkr leaves it alone") from None
        raise ToolFailed(
            f"CLAUDE.md is {'a symlink' if exc.errno == errno.ELOOP else 'unreadable'}: lynkr "
            "neither follows nor replaces it (LYNKR_CLAUDE_MD=false stops trying)"
        ) from None
    if existing is None:
        content = "# CLAUDE.md\n\n" + block
    elif CLAUDE_MD_BEGIN in existing and CLAUDE_MD_END in existing:
        head, rest = existing.split(CLAUDE_MD_BEGIN, 1)
        _old, tail = rest.split(CLAUDE_MD_END, 1)
        content = head + block.rstrip("\n") + tail
    else:
        content = existing.rstrip("\n") + "\n\n" + block
    if content != existing:
        state = _claude_md_git_state(root)
        if state == "tracked-changed":
            raise ToolFailed(
                "CLAUDE.md has uncommitted changes: lynkr leaves it alone until they are committed"
            )
        if existing is None and state == "untracked":
            _exclude_from_git(root, "CLAUDE.md")  # first: the file never shows as a change, not even briefly
        _atomic_write(path, content.encode("utf-8"))
    return path


def _claude_md_git_state(root: str) -> str:
    """'no-repo', 'untracked', 'tracked-clean' or 'tracked-changed' (the user's own edits, staged or not)."""
    inside = _git_quiet(root, "rev-parse", "--is-inside-work-tree")
    if inside is None or inside.stdout.strip() != b"true":
        return "no-repo"
    tracked = _git_quiet(root, "ls-files", "--error-unmatch", "--", ":(literal)CLAUDE.md")
    if tracked is None or tracked.returncode != 0:
        return "untracked"
    for extra in ((), ("--cached",)):
        diff = _git_quiet(root, "diff", "--quiet", *extra, "--", ":(literal)CLAUDE.md")
        if diff is not None and diff.returncode == 1:
            return "tracked-changed"
    return "tracked-clean"


def _exclude_from_git(root: str, name: str) -> None:
    """A file lynkr created is listed in .git/info/exclude: it never shows as a change, never lands in a
    commit by accident, and never counts in what the test gate compares (`git add -f` adopts it)."""
    where = _git_quiet(root, "rev-parse", "--git-path", "info/exclude")
    prefix = _git_quiet(root, "rev-parse", "--show-prefix")
    if where is None or where.returncode != 0 or prefix is None:
        return
    exclude = os.path.join(root, where.stdout.decode().strip())
    entry = "/" + prefix.stdout.decode().strip() + name
    try:
        current = read_regular_file(exclude).decode("utf-8", "replace") if os.path.exists(exclude) else ""
        if entry in current.splitlines():
            return
        os.makedirs(os.path.dirname(exclude), exist_ok=True)
        with open(exclude, "a", encoding="utf-8") as fh:
            fh.write(
                ("" if not current or current.endswith("\n") else "\n")
                + f"# written by lynkr: its generated {name}\n{entry}\n"
            )
    except OSError:
        pass


def policy_allows(policy: Policy) -> Callable[[str], bool]:
    def allowed(rel: str) -> bool:
        try:
            policy.check_path(rel)
            return True
        except ToolDenied:
            return False

    return allowed


def index_for(ctx: ToolContext) -> RepoIndex:
    if ctx.index is None:
        ctx.index = RepoIndex(
            ctx.paths.root,
            os.path.join(ctx.cfg.data_dir, "index.db"),
            ctx.cfg.data_dir,
            policy_allows(ctx.policy),
        )
    return ctx.index


def index_timeout_s(cfg: Config) -> float:
    return cfg.settings.lynkr_index_timeout_s


def rebuild_and_document(ctx: ToolContext) -> dict[str, Any]:
    index = index_for(ctx)
    stats = index.rebuild(timeout_s=index_timeout_s(ctx.cfg))
    result = dataclasses.asdict(stats)
    result["errors"] = result["errors"][:20]
    if ctx.cfg.settings.lynkr_claude_md:
        latest = ctx.store_call(_db_test_runs, 1) if ctx.loop is not None else []
        summary = project_summary(index, latest[0] if latest else None, ctx.policy.coverage_files)
        try:
            result["claude_md"] = os.path.relpath(
                write_claude_md(index.root, render_claude_md(summary)), index.root
            )
        except ToolFailed as exc:
            result["claude_md_error"] = str(exc)
    return result


@tool(
    "workspace_index_rebuild",
    "Rebuild the repository index (incremental: only changed files are re-parsed) "
    "and regenerate CLAUDE.md's generated block. Returns counts and time.",
    {},
    timeout_setting="LYNKR_INDEX_TIMEOUT_MS",
)
def tool_index_rebuild(ctx: ToolContext, args: dict[str, Any]) -> str:
    return json_dumps(rebuild_and_document(ctx))


def _ensure_index(ctx: ToolContext) -> RepoIndex:
    index = index_for(ctx)
    if not os.path.exists(index.db_path):
        index.rebuild(timeout_s=index_timeout_s(ctx.cfg))
    return index


@tool(
    "workspace_symbol_search",
    "Find symbols by name: exact, then prefix, substring and subsequence matches, "
    "ties broken by how often the symbol is referenced. Filter by kind, language or path.",
    {
        "query": {"type": "string", "minLength": 1},
        "kind": {"type": "string"},
        "language": {"type": "string"},
        "path": {"type": "string"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 500},
    },
    ["query"],
)
def tool_symbol_search(ctx: ToolContext, args: dict[str, Any]) -> str:
    results = _ensure_index(ctx).search(
        args["query"], args.get("kind"), args.get("language"), args.get("path"), args.get("limit", 30)
    )
    return json_dumps(results) if results else "no matching symbols"


@tool(
    "workspace_symbol_references",
    "Where a symbol is defined and where other files use it (grouped by file).",
    {
        "name": {"type": "string", "minLength": 1},
        "file": {"type": "string", "description": "Pick the definition in this file"},
    },
    ["name"],
)
def tool_symbol_references(ctx: ToolContext, args: dict[str, Any]) -> str:
    file = ctx.paths.resolve(args["file"])[1] if args.get("file") else None
    return json_dumps(_ensure_index(ctx).references(args["name"], file))


@tool(
    "workspace_goto_definition",
    "Definition(s) of a symbol, from a name or from a file/line/column position.",
    {
        "name": {"type": "string"},
        "file": {"type": "string"},
        "line": {"type": "integer", "minimum": 1},
        "column": {"type": "integer", "minimum": 1},
    },
)
def tool_goto_definition(ctx: ToolContext, args: dict[str, Any]) -> str:
    file = ctx.paths.resolve(args["file"])[1] if args.get("file") else None
    return json_dumps(
        _ensure_index(ctx).goto_definition(args.get("name"), file, args.get("line"), args.get("column"))
    )


@tool(
    "project_summary",
    "Language mix, frameworks, build/test/lint commands, key directories, the latest test "
    "result and coverage notes for the workspace.",
    {},
)
def tool_project_summary(ctx: ToolContext, args: dict[str, Any]) -> str:
    index = _ensure_index(ctx)
    latest = ctx.store_call(_db_test_runs, 1)
    return json_dumps(project_summary(index, latest[0] if latest else None, ctx.policy.coverage_files))


# == 17. MCP ==
#
# Theory of operation: manifests (MCP_SERVER_MANIFEST, *.json in MCP_MANIFEST_DIRS) name MCP
# servers; each gets an MCPServer whose *owner task* enters the transport and ClientSession
# (anyio requires exit in the entering task) and keeps them until stop or breakage: a failed
# ping or a "Connection closed" call restarts the server with exponential backoff, while its
# tools answer a clear error. Tools are registered into TOOLS as mcp_<server>_<tool>. The `mcp`
# SDK is imported only when a manifest names a server (its import is slow). With MCP_SANDBOX_IMAGE
# set, stdio servers run inside a container (docker/podman `run -i --rm`, no network, read-only
# workspace, dropped capabilities, resource limits) unless the permission lists let them out.

MCP_PING_INTERVAL_S = 5.0  # how soon a dead server is noticed between calls
MCP_RESTART_BACKOFF_S = (0.5, 30.0)  # first and largest pause between restarts
MCP_TOOL_NAME_MAX = 64  # Anthropic tool names: ^[a-zA-Z0-9_-]{1,64}$


@dataclass
class MCPServerSpec:
    name: str
    command: str = ""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    transport: str = "stdio"  # stdio | http
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    source: str = ""


def _expand(value: str) -> str:
    """${VAR} and ${VAR:-default}, as Claude Code's .mcp.json allows."""

    def sub(m: re.Match[str]) -> str:
        name, _, default = m.group(1).partition(":-")
        return os.environ.get(name, default)

    return re.sub(r"\$\{([^}]+)\}", sub, value)


def _server_spec(raw: Any, source: str, name: str | None = None) -> MCPServerSpec:
    if not isinstance(raw, dict):
        raise ValueError("a server entry must be an object")
    name = name or raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a server entry needs a name")
    kind = str(raw.get("transport") or raw.get("type") or ("http" if raw.get("url") else "stdio")).lower()
    kind = {"streamable-http": "http", "streamable_http": "http", "streamablehttp": "http"}.get(kind, kind)
    if kind not in ("stdio", "http", "sse"):
        raise ValueError(f"server {name}: unknown transport {kind!r} (stdio, http or sse)")
    args, env, headers = raw.get("args") or [], raw.get("env") or {}, raw.get("headers") or {}
    if not isinstance(args, list) or not isinstance(env, dict) or not isinstance(headers, dict):
        raise ValueError(f"server {name}: args must be a list, env and headers objects")
    spec = MCPServerSpec(
        name=name.strip(),
        command=_expand(str(raw.get("command") or "")),
        args=[_expand(str(a)) for a in args],
        env={str(k): _expand(str(v)) for k, v in env.items()},
        cwd=_expand(str(raw.get("cwd") or "")),
        transport=kind,
        url=_expand(str(raw.get("url") or "")),
        headers={str(k): _expand(str(v)) for k, v in headers.items()},
        source=source,
    )
    if kind == "stdio" and not spec.command:
        raise ValueError(f"server {name}: stdio servers need a command")
    if kind in ("http", "sse") and not spec.url.startswith(("http://", "https://")):
        raise ValueError(f"server {name}: {kind} servers need an http(s) url")
    return spec


def parse_mcp_manifest(data: Any, source: str) -> list[MCPServerSpec]:
    """Three shapes: {"servers": [...]}, a bare list, and Claude Code's {"mcpServers": {name: {...}}}."""
    if isinstance(data, dict) and isinstance(data.get("mcpServers"), dict):
        return [_server_spec(raw, source, name) for name, raw in data["mcpServers"].items()]
    if isinstance(data, dict) and isinstance(data.get("servers"), list):
        return [_server_spec(raw, source) for raw in data["servers"]]
    if isinstance(data, list):
        return [_server_spec(raw, source) for raw in data]
    if isinstance(data, dict) and "name" in data:
        return [_server_spec(data, source)]
    raise ValueError('expected {"servers": [...]}, a list of servers, or {"mcpServers": {...}}')


def discover_mcp_servers(cfg: Config, log: Logger) -> tuple[list[MCPServerSpec], list[str]]:
    """The MCP servers the manifests name, and the manifest files read. A manifest inside the workspace
    is refused unless MCP_ALLOW_WORKSPACE_MANIFEST=true: the model can write there, and a manifest names
    programs lynkr runs as its user. Server names whose tool names could collide are refused."""
    root = cfg.workspace_root

    def in_workspace(path: str) -> bool:
        real = os.path.realpath(path)
        return os.path.commonpath([root, real]) == root

    allow_inside = cfg.settings.mcp_allow_workspace_manifest
    files: list[str] = []
    if cfg.settings.mcp_server_manifest:
        manifest = os.path.expanduser(cfg.settings.mcp_server_manifest)
        if in_workspace(manifest) and not allow_inside:
            raise ConfigError(
                f"MCP_SERVER_MANIFEST {manifest} is inside WORKSPACE_ROOT, where the model can rewrite "
                "it; move it out, or set MCP_ALLOW_WORKSPACE_MANIFEST=true to accept that"
            )
        files.append(manifest)
    for directory in re.split(r"[;:,]", cfg.settings.mcp_manifest_dirs):
        directory = os.path.expanduser(directory.strip())
        if directory and os.path.isdir(directory):
            found = sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".json"))
            if found and in_workspace(directory) and not allow_inside:
                log.warning(
                    "skipping MCP manifests inside WORKSPACE_ROOT (MCP_ALLOW_WORKSPACE_MANIFEST=true accepts "
                    "them)",
                    directory=directory,
                )
                continue
            files += found
    specs: dict[str, MCPServerSpec] = {}
    read: list[str] = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as fh:
                found_specs = parse_mcp_manifest(json.load(fh), path)
        except (OSError, ValueError) as exc:  # one broken manifest must not stop the others
            log.warning("skipping MCP manifest", path=path, reason=str(exc))
            continue
        read.append(path)
        for spec in found_specs:
            if spec.name in specs:
                log.warning("duplicate MCP server name; keeping the first", server=spec.name, path=path)
                continue
            specs[spec.name] = spec
    prefixes = {name: mcp_tool_name(name, "") for name in specs}  # "mcp_<server>_"
    for first, first_prefix in prefixes.items():
        for second, second_prefix in prefixes.items():
            if first != second and second_prefix.startswith(first_prefix):
                raise ConfigError(
                    f"MCP servers {first!r} and {second!r} could give two tools the same name "
                    f"({second_prefix}... is also {first_prefix}...): rename one of them in its manifest"
                )
    return list(specs.values()), read


@dataclass
class SandboxSettings:
    enabled: bool = True
    image: str = ""
    runtime: str = "docker"
    allow_networking: bool = False
    workspace_writable: bool = False
    memory: str = "512m"
    cpus: str = "1"
    pids_limit: int = 256
    env_passthrough: tuple[str, ...] = ()
    extra_mounts: tuple[str, ...] = ()
    permission_mode: str = "auto"  # auto | require | deny
    permission_allow: tuple[str, ...] = ()
    permission_deny: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.enabled and (bool(self.image) or self.runtime == "bwrap")

    @classmethod
    def from_config(cls, cfg: Config) -> SandboxSettings:
        s = cfg.settings
        mode = s.mcp_sandbox_permission_mode
        runtime = s.mcp_sandbox_runtime
        if runtime not in ("docker", "podman", "bwrap") and not os.path.isabs(runtime):
            raise ConfigError(
                f"MCP_SANDBOX_RUNTIME must be docker, podman, bwrap or an absolute path (got {runtime!r})"
            )
        settings = cls(
            enabled=s.mcp_sandbox_enabled,
            image=s.mcp_sandbox_image,
            runtime=runtime,
            allow_networking=s.mcp_sandbox_allow_networking,
            workspace_writable=s.mcp_sandbox_workspace_writable,
            memory=s.mcp_sandbox_memory,
            cpus=s.mcp_sandbox_cpus,
            pids_limit=s.mcp_sandbox_pids_limit,
            env_passthrough=s.mcp_sandbox_env_passthrough,
            extra_mounts=s.mcp_sandbox_extra_mounts,
            permission_mode=mode,
            permission_allow=s.mcp_sandbox_permission_allow,
            permission_deny=s.mcp_sandbox_permission_deny,
        )
        for mount in settings.extra_mounts:
            parts = mount.split(":")
            if (
                len(parts) not in (2, 3)
                or not os.path.isabs(parts[0])
                or not parts[1].startswith("/")
                or (len(parts) == 3 and parts[2] not in ("ro", "rw"))
            ):
                raise ConfigError(
                    f"MCP_SANDBOX_EXTRA_MOUNTS entries are /host:/container[:ro|rw] (bad {mount!r})"
                )
        if settings.active and settings.runtime == "bwrap":
            resolve_sandbox("bwrap")  # raises ConfigError when bubblewrap cannot start here
        elif settings.active and shutil.which(settings.runtime) is None:
            raise ConfigError(
                f"MCP_SANDBOX_IMAGE is set but the container runtime {settings.runtime!r} is not "
                "installed: install it or set MCP_SANDBOX_RUNTIME (lynkr never falls back to the host)"
            )
        return settings

    def placement(self, name: str) -> str:
        """'sandbox', 'host', or 'refused' for a stdio server."""
        allowed_out = any(fnmatch.fnmatchcase(name, g) for g in self.permission_allow)
        denied_out = any(fnmatch.fnmatchcase(name, g) for g in self.permission_deny)
        may_run_on_host = not denied_out and (
            self.permission_mode == "auto" or (self.permission_mode == "require" and allowed_out)
        )
        if self.active:
            return "host" if allowed_out and may_run_on_host else "sandbox"
        return "host" if may_run_on_host else "refused"


def sandbox_argv(
    spec: MCPServerSpec, sandbox: SandboxSettings, workspace: str, container_name: str
) -> list[str]:
    """The container command line for a stdio server (covered by tests; no shell involved)."""
    argv = [
        sandbox.runtime,
        "run",
        "-i",
        "--rm",
        "--name",
        container_name,
        "--network",
        "bridge" if sandbox.allow_networking else "none",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--memory",
        sandbox.memory,
        "--cpus",
        sandbox.cpus,
        "--pids-limit",
        str(sandbox.pids_limit),
        "--read-only",
        "--tmpfs",
        "/tmp",
        "-v",
        f"{workspace}:/workspace:{'rw' if sandbox.workspace_writable else 'ro'}",
        "-w",
        "/workspace",
    ]
    for mount in sandbox.extra_mounts:
        argv += ["-v", mount if mount.count(":") == 2 else mount + ":ro"]
    for name in sandbox.env_passthrough:
        if name in os.environ:
            argv += ["-e", f"{name}={os.environ[name]}"]
    for name, value in spec.env.items():
        argv += ["-e", f"{name}={value}"]
    return [*argv, "--", sandbox.image, spec.command, *spec.args]


def mcp_tool_name(server: str, tool_name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", f"mcp_{server}_{tool_name}")
    if len(name) > MCP_TOOL_NAME_MAX:  # keep names unique when cut
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = name[: MCP_TOOL_NAME_MAX - 9] + "_" + digest
    return name


def mcp_result_to_tool_result(result: Any) -> ToolResult:
    """CallToolResult -> Anthropic tool_result content: text, images, resources, structured content."""
    blocks: list[dict[str, Any]] = []
    for item in getattr(result, "content", None) or []:
        kind = getattr(item, "type", "")
        if kind == "text":
            blocks.append({"type": "text", "text": item.text})
        elif kind == "image":
            blocks.append(
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": item.mime_type, "data": item.data},
                }
            )
        elif kind == "resource":
            resource = item.resource
            text = getattr(resource, "text", None)
            blocks.append(
                {
                    "type": "text",
                    "text": text
                    if text is not None
                    else f"[binary resource {resource.uri} ({getattr(resource, 'mime_type', None) or 'unknown type'})]",
                }
            )
        elif kind == "resource_link":
            blocks.append(
                {"type": "text", "text": f"[resource {item.uri}] {getattr(item, 'name', '') or ''}".strip()}
            )
        elif kind == "audio":
            blocks.append({"type": "text", "text": f"[audio content ({item.mime_type}) omitted]"})
    structured = getattr(result, "structured_content", None)
    if structured is not None:
        text = json_dumps(structured)
        if not any(
            b.get("type") == "text" and b.get("text", "").strip() and _same_json(b["text"], structured)
            for b in blocks
        ):
            blocks.append({"type": "text", "text": text})
    if not blocks:
        blocks.append({"type": "text", "text": "(no content)"})
    return ToolResult(blocks, bool(getattr(result, "is_error", False)))


def _same_json(text: str, value: Any) -> bool:
    try:
        return json.loads(text) == value
    except ValueError:
        return False


class MCPServer:
    """One MCP server and the owner task that keeps its session alive."""

    def __init__(self, spec: MCPServerSpec, manager: MCPManager) -> None:
        self.spec = spec
        self.manager = manager
        self.status = "stopped"
        self.error = ""
        self.placement = (
            "remote" if spec.transport in ("http", "sse") else manager.sandbox.placement(spec.name)
        )
        self.tool_defs: dict[str, Any] = {}  # server tool name -> mcp Tool
        self.session: Any = None
        self.restarts = 0
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._broken = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.refreshing: asyncio.Future[None] | None = None  # a tools re-list after list_changed
        self.container_name = ""
        # The server's last stderr lines: why a server (or its container) died, e.g. "image not known".
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=3)

    def start(self) -> None:
        if self.placement == "refused":
            self.status = "refused"
            self.error = (
                f"MCP_SANDBOX_PERMISSION_MODE={self.manager.sandbox.permission_mode} does not let "
                f"{self.spec.name} run unsandboxed and no sandbox is active (MCP_SANDBOX_IMAGE)"
            )
            self.manager.log.warning("MCP server refused", server=self.spec.name, reason=self.error)
            self.ready.set()
            return
        self.task = asyncio.ensure_future(self._own())

    def _errlog(self) -> Any:
        """A pipe whose lines go to our log under the server's name (the SDK needs a real file)."""
        read_fd, write_fd = os.pipe()
        name, log, tail = self.spec.name, self.manager.log, self.stderr_tail
        tail.clear()

        def pump() -> None:
            with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.strip():
                        tail.append(line.strip()[:500])
                        log.info("mcp server stderr", server=name, line=line.rstrip()[:2000])

        threading.Thread(target=pump, name=f"lynkr-mcp-stderr-{name}", daemon=True).start()
        return os.fdopen(write_fd, "w")

    async def _open(self, stack: contextlib.AsyncExitStack) -> tuple[Any, Any]:
        """Enter the transport on `stack`; returns the (read, write) stream pair."""
        mcp_sdk = self.manager.sdk
        if self.spec.transport == "sse":  # the legacy HTTP+SSE transport (2024-11-05 servers)
            from mcp.client.sse import sse_client

            streams = await stack.enter_async_context(
                sse_client(self.spec.url, headers=self.spec.headers or None)
            )
            return streams[0], streams[1]
        if self.spec.transport == "http":
            import httpx2  # comes with the mcp SDK
            from mcp.client.streamable_http import streamable_http_client

            client = await stack.enter_async_context(
                httpx2.AsyncClient(headers=self.spec.headers, timeout=httpx2.Timeout(30.0, read=300.0))
            )
            streams = await stack.enter_async_context(
                streamable_http_client(self.spec.url, http_client=client)
            )
            return streams[0], streams[1]
        command, args = self.spec.command, list(self.spec.args)
        env = dict(self.spec.env)
        if self.placement == "sandbox" and self.manager.sandbox.runtime == "bwrap":
            # bubblewrap, as for test runs: no image, the host read-only, the workspace read-only (or
            # writable), no network unless allowed, credentials and lynkr's state hidden.
            sandbox, cfg = self.manager.sandbox, self.manager.cfg
            binds = []
            for mount in sandbox.extra_mounts:
                parts = mount.split(":")
                binds.append((parts[0], parts[1], len(parts) == 3 and parts[2] == "rw"))
            prefix = bwrap_argv(
                self.manager.workspace,
                [cfg.data_dir],
                [cfg.session_db_path + s for s in ("", "-wal", "-shm", "-journal")],
                (),
                sandbox.allow_networking,
                root_writable=sandbox.workspace_writable,
                binds=binds,
                chdir=self.spec.cwd or self.manager.workspace,
            )
            command, args = prefix[0], [*prefix[1:], self.spec.command, *self.spec.args]
        elif self.placement == "sandbox":
            self.container_name = (
                f"lynkr-mcp-{re.sub(r'[^a-zA-Z0-9_.-]', '-', self.spec.name)}-{secrets.token_hex(4)}"
            )
            argv = sandbox_argv(self.spec, self.manager.sandbox, self.manager.workspace, self.container_name)
            command, args = argv[0], argv[1:]
            env = {k: os.environ[k] for k in CONTAINER_CLIENT_ENV if os.environ.get(k)}
        errlog = stack.enter_context(self._errlog())
        params = mcp_sdk.StdioServerParameters(
            command=command, args=args, env=env or None, cwd=self.spec.cwd or self.manager.workspace
        )
        streams = await stack.enter_async_context(mcp_sdk.stdio_client(params, errlog=errlog))
        return streams[0], streams[1]

    async def _on_message(self, message: Any) -> None:
        if getattr(message, "method", "") == "notifications/tools/list_changed":
            self.refreshing = asyncio.ensure_future(self._refresh_safely())

    async def _refresh_safely(self) -> None:
        try:
            await self.refresh_tools()
        except Exception as exc:  # noqa: BLE001 -- a failed re-list keeps the old tools; the next ping decides health
            self.manager.log.warning("MCP tools re-list failed", server=self.spec.name, error=repr(exc))

    async def refresh_tools(self) -> None:
        session = self.session
        if session is None:
            return
        tools: dict[str, Any] = {}
        cursor = None
        while True:
            params = self.manager.sdk_types.PaginatedRequestParams(cursor=cursor) if cursor else None
            listing = await asyncio.wait_for(session.list_tools(params=params), self.manager.call_timeout_s)
            for item in listing.tools:
                tools[item.name] = item
            cursor = getattr(listing, "next_cursor", None)
            if not cursor:
                break
        self.tool_defs = tools
        self.manager.register_tools(self)

    async def _own(self) -> None:
        low, high = MCP_RESTART_BACKOFF_S
        backoff = low
        log = self.manager.log
        while not self._stop.is_set():
            self.status = "starting"
            self._broken.clear()
            try:
                async with contextlib.AsyncExitStack() as stack:
                    read, write = await self._open(stack)
                    session = await stack.enter_async_context(
                        self.manager.sdk.ClientSession(read, write, message_handler=self._on_message)
                    )
                    if not await self._until_stopped(session.initialize(), self.manager.startup_timeout_s):
                        break  # asked to stop while the server was starting: leave the contexts here, in order
                    self.session = session
                    await self.refresh_tools()
                    self.status, self.error, backoff = "ready", "", low
                    log.info(
                        "MCP server ready",
                        server=self.spec.name,
                        tools=len(self.tool_defs),
                        placement=self.placement,
                    )
                    self.ready.set()
                    await self._watch(session)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # ExceptionGroups from anyio included; the server restarts
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                self.error = _describe_exception(exc)
                if "closed" in self.error.lower():  # it exited: its stderr says why (a missing image...)
                    await asyncio.sleep(0.1)  # the pump thread reads what it wrote last
                    if self.stderr_tail:
                        said = self.stderr_tail[-1]
                        for _label, pattern in SECRET_PATTERNS:  # it reaches tool results: no keys in them
                            said = pattern.sub("[redacted]", said)
                        self.error += f"; it said: {said}"
            finally:
                self.session = None
            if self._stop.is_set():
                break
            self.status = "restarting"
            self.restarts += 1
            self.ready.set()  # startup must not wait on a failing server
            log.warning(
                "MCP server down; restarting",
                server=self.spec.name,
                error=self.error or "connection lost",
                retry_in_s=backoff,
            )
            try:
                await asyncio.wait_for(self._stop.wait(), backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, high)
        self.status = "stopped"

    async def _until_stopped(self, coro: Awaitable[Any], timeout: float) -> bool:
        """Await coro unless stop is requested first (False). Raises its error, or TimeoutError."""
        work = asyncio.ensure_future(coro)
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait(
                {work, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
        if work in done:
            work.result()
            return True
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        if self._stop.is_set():
            return False
        raise TimeoutError(f"no answer to initialize within {timeout:g} s (MCP_STARTUP_TIMEOUT_MS)")

    async def _watch(self, session: Any) -> None:
        """Return when asked to stop or when the server stops answering."""
        while not self._stop.is_set():
            waiters = [asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(self._broken.wait())]
            done, pending = await asyncio.wait(
                waiters, timeout=MCP_PING_INTERVAL_S, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in pending:
                waiter.cancel()
            if done:
                return
            try:
                await asyncio.wait_for(session.send_ping(), MCP_PING_INTERVAL_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- the SDK raises any exception type
                self.error = f"ping failed: {_describe_exception(exc)}"
                return

    async def call(self, tool_name: str, arguments: dict[str, Any]) -> ToolResult:
        session = self.session
        if session is None or self.status != "ready":
            detail = f": {self.error}" if self.error else ""
            return ToolResult(f"MCP server {self.spec.name} is {self.status}{detail}", True)
        timeout = self.manager.call_timeout_s
        try:
            result = await asyncio.wait_for(session.call_tool(tool_name, arguments), timeout)
        except TimeoutError:
            return ToolResult(
                f"MCP server {self.spec.name}: {tool_name} timed out after {timeout:g} s "
                "(MCP_CALL_TIMEOUT_MS)",
                True,
            )
        except Exception as exc:  # noqa: BLE001 -- the SDK raises any exception type
            message = _describe_exception(exc)
            if "closed" in message.lower():
                self._broken.set()  # the owner task restarts the server
            return ToolResult(f"MCP server {self.spec.name}: {tool_name} failed: {message}", True)
        return mcp_result_to_tool_result(result)

    async def stop(self) -> None:
        self._stop.set()
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), 10)
            except (TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001 -- however it ends, it is stopped
                self.task.cancel()
        if self.container_name:  # belt and braces: `run --rm -i` ends with stdin, but never leave one behind
            argv = [self.manager.sandbox.runtime, "rm", "-f", self.container_name]
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                await asyncio.get_running_loop().run_in_executor(
                    None,
                    functools.partial(
                        subprocess.run,
                        argv,
                        capture_output=True,
                        timeout=10,
                        stdin=subprocess.DEVNULL,
                        check=False,
                    ),
                )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "status": self.status,
            "error": self.error or None,
            "transport": self.spec.transport,
            "placement": self.placement,
            "restarts": self.restarts,
            "source": self.spec.source,
            "tools": [
                {
                    "name": mcp_tool_name(self.spec.name, t),
                    "server_tool": t,
                    "description": getattr(d, "description", "") or "",
                }
                for t, d in self.tool_defs.items()
            ],
        }


def _describe_exception(exc: BaseException) -> str:
    inner = getattr(exc, "exceptions", None)
    if inner:  # anyio ExceptionGroup: the first real cause is the useful one
        return _describe_exception(inner[0])
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class MCPManager:
    def __init__(
        self, cfg: Config, log: Logger, specs: list[MCPServerSpec], sandbox: SandboxSettings
    ) -> None:
        self.cfg = cfg
        self.log = log
        self.sandbox = sandbox
        self.workspace = cfg.workspace_root
        self.call_timeout_s = cfg.settings.mcp_call_timeout_s
        self.startup_timeout_s = cfg.settings.mcp_startup_timeout_s
        self.ready_wait_s = cfg.settings.mcp_ready_wait_s
        self.servers: dict[str, MCPServer] = {}
        self.sdk: Any = None
        self.sdk_types: Any = None
        self.specs = specs
        self.registered: dict[str, set[str]] = {}  # server -> registered TOOLS names

    async def start(self) -> None:
        if not self.specs:
            return
        try:
            import mcp as mcp_sdk  # lazy: a slow import, only needed when servers are configured
            import mcp_types
        except ImportError:
            self.log.error(
                "MCP servers are configured but the mcp package is missing: pip install 'lynkr[mcp]' "
                "(or pip install 'mcp>=2.3,<3')",
                servers=[s.name for s in self.specs],
            )
            for spec in self.specs:
                server = MCPServer(spec, self)
                server.status, server.error = "unavailable", "the mcp package is not installed"
                self.servers[spec.name] = server
            return
        self.sdk, self.sdk_types = mcp_sdk, mcp_types
        if not self.sandbox.active and any(s.transport == "stdio" for s in self.specs):
            self.log.info(
                "MCP sandbox inactive: stdio servers run on the host (set MCP_SANDBOX_IMAGE to contain them)"
            )
        for spec in self.specs:
            server = MCPServer(spec, self)
            self.servers[spec.name] = server
            server.start()
        # Readiness waits a bounded time: a slow server keeps starting in the background.
        waits = [asyncio.ensure_future(s.ready.wait()) for s in self.servers.values()]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=self.ready_wait_s)
            for waiter in pending:
                waiter.cancel()

    def register_tools(self, server: MCPServer) -> None:
        names = set()
        owned = {
            n: s for s, tool_names in self.registered.items() if s != server.spec.name for n in tool_names
        }
        for tool_name, definition in server.tool_defs.items():
            name = mcp_tool_name(server.spec.name, tool_name)
            if name in owned or (name in TOOLS and name not in self.registered.get(server.spec.name, set())):
                self.log.error(
                    "MCP tool name taken; this tool is not offered",
                    server=server.spec.name,
                    tool=tool_name,
                    name=name,
                    owner=owned.get(name, "lynkr"),
                )
                continue
            schema = getattr(definition, "input_schema", None) or {"type": "object", "properties": {}}
            description = (getattr(definition, "description", "") or "").strip()

            async def handler(
                ctx: ToolContext, args: dict[str, Any], _server: MCPServer = server, _tool: str = tool_name
            ) -> ToolResult:
                return await _server.call(_tool, args)

            TOOLS[name] = ToolSpec(
                name, f"[MCP {server.spec.name}] {description}".strip(), dict(schema), handler, blocking=False
            )
            names.add(name)
        for stale in self.registered.get(server.spec.name, set()) - names:
            TOOLS.pop(stale, None)  # tools/list_changed removed it
        self.registered[server.spec.name] = names

    async def call(self, server_name: str, tool_name: str, arguments: dict[str, Any]) -> ToolResult:
        server = self.servers.get(server_name)
        if server is None:
            return ToolResult(f"no MCP server named {server_name!r} (workspace_mcp_servers lists them)", True)
        if server.tool_defs and tool_name not in server.tool_defs:
            return ToolResult(f"MCP server {server_name} has no tool {tool_name!r}", True)
        return await server.call(tool_name, arguments)

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.servers.values()), return_exceptions=True)


@tool(
    "workspace_mcp_servers",
    "List the configured MCP servers with their status and tools.",
    {},
    blocking=False,
)
async def tool_mcp_servers(ctx: ToolContext, args: dict[str, Any]) -> str:
    manager = ctx.mcp
    servers = [s.describe() for s in manager.servers.values()] if manager else []
    return json_dumps({"servers": servers, "sandbox_active": bool(manager and manager.sandbox.active)})


@tool(
    "workspace_mcp_call",
    "Call any tool of a configured MCP server by server and tool name.",
    {
        "server": {"type": "string", "minLength": 1},
        "tool": {"type": "string", "minLength": 1},
        "arguments": {"type": "object"},
    },
    ["server", "tool"],
    blocking=False,
)
async def tool_mcp_call(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    if ctx.mcp is None:
        return ToolResult("no MCP servers are configured (MCP_SERVER_MANIFEST, MCP_MANIFEST_DIRS)", True)
    ctx.policy.check_tool(mcp_tool_name(args["server"], args["tool"]))  # a disallowed tool stays disallowed
    return await ctx.mcp.call(args["server"], args["tool"], args.get("arguments") or {})


# == 18. Orchestrator ==
#
# Theory of operation: `Orchestrator.respond` answers one /v1/messages request.
# 1. It picks the server tools to offer (listed by the client, LYNKR_TOOLS globs, or named by
#    tool_choice; minus POLICY_DISALLOWED_TOOLS) and replaces their client definitions with ours.
# 2. The prompt cache answers identical final prompts without an upstream call.
# 3. Without server tools the provider's stream passes through untouched (the fast path); the
#    bytes are kept aside to record the turn and fill the cache, and the turn is committed before
#    `message_stop` goes out.
# 4. With server tools it runs the agent loop: each round's upstream stream is re-emitted with
#    block indices renumbered and server tool_use blocks held back; when the model calls server
#    tools, lynkr runs them, appends tool_results and calls the model again, up to
#    POLICY_MAX_STEPS rounds and POLICY_MAX_TOOL_CALLS calls. The client sees one continuous
#    stream, plus a short text record of each server call (LYNKR_SHOW_TOOL_ACTIVITY) so that what
#    the tools found survives in its history. Client tool calls end the turn as usual.

# Token-count samples learned at once, at most (each estimates a whole request on a thread); every
# answer teaches until a provider and model have taught TOKEN_SAMPLES_WARM, then one in TOKEN_SAMPLE_EVERY.
MAX_PENDING_TOKEN_SAMPLES = 4
TOKEN_SAMPLES_WARM = 32
TOKEN_SAMPLE_EVERY = 8
# Streamed replies larger than this are not kept for the cache/session record (the reply is unaffected).
MAX_CAPTURED_STREAM_BYTES = 8 * 1024 * 1024
MESSAGE_STOP_MARKER = b"event: message_stop"


def add_usage(total: dict[str, int], usage: dict[str, Any]) -> None:
    for key in total:
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            total[key] += value


class SearchEmulation:
    """Anthropic's web_search server tool (Claude Code's WebSearch), run by lynkr for an upstream that
    cannot run it: the model gets a `web_search(query)` function; each call is searched through the
    configured service (max_uses and the domain lists honoured) and shown to the client exactly as
    Anthropic shows it -- a server_tool_use block and a web_search_tool_result block -- while the model
    reads the results as an ordinary tool result. Failures are error_code results, never HTTP errors."""

    name = "web_search"

    def __init__(self, typed: dict[str, Any], ctx: ToolContext) -> None:
        self.ctx = ctx
        max_uses = typed.get("max_uses")
        self.max_uses = (
            max_uses
            if isinstance(max_uses, int) and not isinstance(max_uses, bool) and max_uses > 0
            else None
        )
        self.allowed = tuple(d for d in typed.get("allowed_domains") or () if isinstance(d, str))
        self.blocked = tuple(d for d in typed.get("blocked_domains") or () if isinstance(d, str))
        self.uses = 0

    def definition(self) -> dict[str, Any]:
        limits = ""
        if self.allowed:
            limits += f" Only results from {', '.join(self.allowed)} are returned."
        if self.blocked:
            limits += f" Results from {', '.join(self.blocked)} are left out."
        return {
            "name": self.name,
            "description": "Search the web. Returns the title, URL and a snippet of each "
            "result; cite the URLs you use." + limits,
            "input_schema": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "What to search for"}},
                "required": ["query"],
            },
        }

    async def run(
        self, call: dict[str, Any], over_limit: bool = False
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(the two blocks the client sees, the tool_result the model reads). over_limit: the request's
        POLICY_MAX_TOOL_CALLS is spent, whatever max_uses says (a client may send none)."""
        query = (call.get("input") or {}).get("query")
        use_id = "srvtoolu_" + secrets.token_hex(12)
        shown = {"type": "server_tool_use", "id": use_id, "name": self.name, "input": {"query": query}}
        error = ""
        if not isinstance(query, str) or not query.strip():
            error, note = "invalid_tool_input", "the query must be a non-empty string"
        elif len(query) > 500:
            error, note = "query_too_long", "the query is longer than 500 characters"
        elif self.max_uses is not None and self.uses >= self.max_uses:
            error, note = "max_uses_exceeded", f"this request allows {self.max_uses} searches"
        elif over_limit:
            error, note = (
                "max_uses_exceeded",
                "POLICY_MAX_TOOL_CALLS server tool calls were made in this request",
            )
        else:
            self.uses += 1
            try:
                hits = await search_web(
                    self.ctx, query, self.ctx.policy.web_search_max_results, self.allowed, self.blocked
                )
            except (ToolFailed, ToolDenied) as exc:
                error, note = "unavailable", str(exc)
                self.ctx.log.warning("web search failed", error=note)
        if error:
            content: Any = {"type": "web_search_tool_result_error", "error_code": error}
            read = f"web search error ({error}): {note}"
        else:
            content = [
                {
                    "type": "web_search_result",
                    "url": h.url,
                    "title": h.title,
                    "encrypted_content": search_result_content(h.snippet),
                    "page_age": h.page_age or None,
                }
                for h in hits
            ]
            read = (
                "\n\n".join(
                    f"{n}. {h.title}\nURL: {h.url}"
                    + (f"\nPublished: {h.page_age}" if h.page_age else "")
                    + (f"\n{h.snippet}" if h.snippet else "")
                    for n, h in enumerate(hits, 1)
                )
                or "no results"
            )
        result = {"type": "web_search_tool_result", "tool_use_id": use_id, "content": content}
        return [shown, result], {
            "type": "tool_result",
            "tool_use_id": call["id"],
            "content": read,
            "is_error": bool(error),
        }


def typed_web_search(req: dict[str, Any]) -> dict[str, Any] | None:
    return next((t for t in req.get("tools") or [] if str(t.get("type", "")).startswith("web_search_")), None)


class Orchestrator:
    def __init__(
        self,
        cfg: Config,
        provider: Router,
        policy: Policy,
        tool_ctx: ToolContext,
        cache: PromptCache,
        store: Store,
        log: Logger,
        prices: PriceBook | None = None,
    ) -> None:
        self.cfg = cfg
        self.prices = prices or PriceBook()
        self.signatures = SignatureBook(store)
        provider.prepare = self._thinking_for
        self._learning: set[asyncio.Future[None]] = set()  # token-count samples being learned
        self._answered: dict[tuple[str, str], int] = {}  # answers per provider and model since start
        self.provider = provider
        self.policy = policy
        self.tool_ctx = tool_ctx
        self.cache = cache
        self.store = store
        self.log = log
        self.offered_globs = cfg.settings.lynkr_tools
        self._glob_key: tuple[str, ...] = ()
        self._glob_names: frozenset[str] = frozenset()
        self.show_activity = cfg.settings.lynkr_show_tool_activity
        # Told each answered request's cost as it is known, with its personal key (the API's budgets).
        self.on_charge: Callable[[str | None, float | None], None] | None = None
        self.on_landed: Callable[[str | None, float | None], None] | None = None  # its ledger row committed
        self.sessions_owned = False  # set while personal keys exist: every session's owner is checked
        self.activity_max_chars = cfg.settings.lynkr_tool_activity_max_chars

    # -- tool exposure --
    def _glob_offered(self) -> frozenset[str]:
        """Tools LYNKR_TOOLS offers on every request; recomputed only when the registry changes (MCP)."""
        key = tuple(TOOLS)
        if key != self._glob_key:
            self._glob_key = key
            self._glob_names = frozenset(
                n for n in TOOLS if any(fnmatch.fnmatchcase(n, g) for g in self.offered_globs)
            )
        return self._glob_names

    def select_server_tools(self, req: dict[str, Any]) -> dict[str, ToolSpec]:
        client_tools = req.get("tools") or []
        names = {t["name"] for t in client_tools if not is_server_typed_tool(t) and t["name"] in TOOLS}
        names.update(self._glob_offered())
        if not names and not client_tools and not req.get("tool_choice"):
            return {}
        choice = req.get("tool_choice") or {}
        if choice.get("type") == "tool" and choice.get("name") in TOOLS:
            names.add(choice["name"])
        # A typed tool the client sent (Claude Code's web_search_20250305) keeps its name: two tools
        # with one name would be a 400 upstream.
        names -= {t.get("name") for t in req.get("tools") or [] if is_server_typed_tool(t)}
        offered = {}
        for name in sorted(names):
            try:
                self.policy.check_tool(name)
            except ToolDenied:
                continue
            offered[name] = TOOLS[name]
        return offered

    @staticmethod
    def upstream_request(
        req: dict[str, Any], server_tools: dict[str, ToolSpec], searcher: SearchEmulation | None = None
    ) -> dict[str, Any]:
        client_tools = req.get("tools") or []
        # A server tool the policy disables, listed by bare name, is not a usable client tool either.
        unusable = {
            t["name"]
            for t in client_tools
            if not is_server_typed_tool(t)
            and t["name"] in TOOLS
            and t["name"] not in server_tools
            and not t.get("input_schema")
        }
        if not server_tools and not unusable and searcher is None:
            return req
        tools = [
            t
            for t in client_tools
            if (is_server_typed_tool(t) and not (searcher and typed_web_search({"tools": [t]})))
            or (not is_server_typed_tool(t) and t["name"] not in server_tools and t["name"] not in unusable)
        ]
        tools += [spec.definition() for spec in server_tools.values()]
        if searcher is not None:
            tools.append(searcher.definition())
        out = {**req, "tools": tools}
        if not tools:
            out.pop("tools")
        choice = req.get("tool_choice") or {}
        if choice.get("type") == "tool" and choice.get("name") in unusable:
            out.pop("tool_choice")  # forcing a tool that cannot run would only produce an error turn
        return out

    def shape(
        self, req: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, ToolSpec], SearchEmulation | None]:
        """The request as the upstream will see it (lynkr's server tools offered, a web search lynkr
        runs itself as a function), with the server tools and the search it implies."""
        server_tools = self.select_server_tools(req)
        typed_search = typed_web_search(req)
        searcher = None
        if typed_search is not None and not self.provider.runs_server_tools(req):
            searcher = SearchEmulation(typed_search, self.tool_ctx)
        return self.upstream_request(req, server_tools, searcher), server_tools, searcher

    # -- entry point --
    async def respond(self, req: dict[str, Any], http_req: Request) -> Response:
        session_id = (
            http_req.headers.get("x-session-id")
            or http_req.headers.get("x-claude-code-session-id")
            or new_id("sess_")
        )
        http_req.log["session_id"] = session_id
        if http_req.owner is not None or self.sessions_owned:
            # A session belongs to the key that started it: another key never adds to it.
            try:
                exists, owner = await self.store.run(session_owner, session_id)
            except StoreUnavailable:  # the database is away: record_turn still refuses another key's session
                exists, owner = False, None
            if exists and owner != http_req.owner:
                raise PermissionDenied(f"session {session_id!r} belongs to another key; start a new session")
        upstream_req, server_tools, searcher = self.shape(req)
        turn = TurnRecord(
            session_id,
            http_req.request_id,
            req["model"],
            req["messages"],
            request_log=http_req.log,
            owner=http_req.owner,
        )
        key = None
        if self.cache.enabled:
            key = prompt_fingerprint(upstream_req, self.provider.cache_target(req))
            hit = await self.cache.lookup(key)
            status = "hit" if hit is not None else "miss"
            METRICS.inc("lynkr_prompt_cache_total", result=status)
            http_req.reply_headers["x-lynkr-cache"] = status
            http_req.log["cache"] = turn.cache = status
            if hit is not None:
                return await self._serve_hit(hit, req, http_req, turn)
        if server_tools or searcher is not None:
            http_req.log["server_tools"] = len(server_tools) + (searcher is not None)
            return await self._agent_loop(upstream_req, http_req, turn, key, server_tools, searcher)
        turn.sent = upstream_req  # one upstream call answers it: its usage can calibrate the estimate
        if req.get("stream"):
            upstream = await self.provider.open_stream(upstream_req, http_req)
            return Response(200, list(SSE_HEADERS), stream=self._pass_through(upstream, turn, key, http_req))
        message, raw = await self.provider.complete(upstream_req, http_req)
        self._store(key, message, http_req, turn)
        turn.reply = message
        await self._record(turn)
        return Response(
            200, [("content-type", "application/json")], raw if raw is not None else json_bytes(message)
        )

    def _store(self, key: str | None, message: dict[str, Any], http_req: Request, turn: TurnRecord) -> None:
        """The one place answers enter the response cache. The answer keeps the upstream's usage as it
        is: the local cache saves a later call, it did not change what this one cost. A stored miss says
        so (`x-lynkr-cache: stored`, where the headers are not yet sent, and in the session record)."""
        if (
            key is None
            or message.get("stop_reason") in (None, "tool_use", "pause_turn")
            or any(b.get("type") in ("tool_use", "server_tool_use") for b in message.get("content") or [])
        ):
            return
        self.cache.keep(key, message)
        http_req.reply_headers["x-lynkr-cache"] = http_req.log["cache"] = turn.cache = "stored"

    async def _record(self, turn: TurnRecord) -> None:
        turn.answered_at = time.time()
        if turn.provider is None and turn.cache != "hit":
            turn.provider = turn.request_log.get("provider")
        if turn.reply is None and turn.usage:  # an abandoned stream: charged, not learned from
            self._charge(turn)
        if turn.reply is not None and turn.cache != "hit":
            self._charge(turn)
            if turn.sent is not None:
                self._learn_tokens(turn)
            if turn.provider:
                assistant_turns = [
                    turn.reply,
                    *(m for m in turn.server_turns if m.get("role") == "assistant"),
                ]
                turn.signed = thinking_keys(assistant_turns)
                self.signatures.note(turn.signed, turn.provider)
        try:
            if self.store.shared:  # queued; the answer waits PG_ACK_WAIT_S at most, never for an outage
                written = self.store.write(record_turn, turn)
                written.add_done_callback(lambda f: self._recorded(f, turn))
                with contextlib.suppress(Exception):  # a failed write is logged when it settles
                    await asyncio.wait_for(asyncio.shield(written), PG_ACK_WAIT_S)
            else:
                await self.store.write(record_turn, turn)
        except (
            sqlite3.Error,
            OSError,
            RecursionError,
            ValueError,
        ) as exc:  # the answer still goes out; the operator sees why it was not kept
            self.log.error("session store write failed", session_id=turn.session_id, error=str(exc))

    def _recorded(self, written: asyncio.Future[Any], turn: TurnRecord, alone: bool = False) -> None:
        """A shared store's turn write settled: its charge counts in the ledger from now on. A write that
        failed (a transcript that could not be stored) still gets its ledger row, alone; if that fails
        too, the charge stays counted in memory."""
        if not written.cancelled() and written.exception() is None:
            if self.on_landed is not None:
                self.on_landed(turn.owner, turn.cost_usd)
        elif not alone and _charge_row(turn, 0.0) is not None:
            self.store.write(record_charge, turn).add_done_callback(lambda f: self._recorded(f, turn, True))

    async def _thinking_for(
        self, provider: Provider, req: dict[str, Any], http_req: Request
    ) -> dict[str, Any]:
        """The request as `provider` may receive it: only the thinking blocks it signed itself."""
        if not provider.checks_signatures:
            return req  # the translation leaves thinking out, or replays it as plain reasoning
        keys = thinking_keys(req["messages"])
        signers = await self.signatures.signers(keys) if keys else {}  # unsigned thinking goes whatever it is
        out, dropped, thinking_off = keep_signed_thinking(req, lambda key: signers.get(key) == provider.name)
        if dropped:
            http_req.log.update(thinking_dropped=dropped, thinking_off=thinking_off or None)
            self.log.debug(
                "left out thinking another provider signed",
                request_id=http_req.request_id,
                provider=provider.name,
                blocks=dropped,
                thinking_off=thinking_off,
            )
        return out

    def _learn_tokens(self, turn: TurnRecord) -> None:
        """Teach the token estimate what this answer's upstream counted (its total input), in the
        background: the estimate of a long conversation takes milliseconds. Once a provider and model
        have taught TOKEN_SAMPLES_WARM answers, one answer in TOKEN_SAMPLE_EVERY keeps the fit current
        (each costs an estimate of the whole request: bench/README.md, Figures behind the code); none
        while many are pending."""
        usage = turn.usage or (turn.reply or {}).get("usage") or {}
        counted = sum(
            v
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            if isinstance(v := usage.get(k), int) and not isinstance(v, bool)
        )
        provider, model = turn.provider, turn.request_log.get("upstream_model")
        if counted <= 0 or not provider or not model or len(self._learning) >= MAX_PENDING_TOKEN_SAMPLES:
            return
        key = (provider, str(model))
        answered = self._answered[key] = self._answered.get(key, 0) + 1
        known = self.provider.calibrations.get(key)
        if known is not None and known.answers >= TOKEN_SAMPLES_WARM and answered % TOKEN_SAMPLE_EVERY:
            return
        task = asyncio.ensure_future(self._learn(turn.sent or {}, key, counted))
        self._learning.add(task)
        task.add_done_callback(self._learning.discard)

    async def _learn(self, sent: dict[str, Any], key: tuple[str, str], counted: int) -> None:
        try:
            raw = await self.provider.estimate(sent)
            calibrations = self.provider.calibrations
            before = calibrations.get(key, TokenCalibration())
            after = before.learned(raw, counted)
            if after is before:
                self.log.debug(
                    "usage not learned: no tokenizer explains it",
                    provider=key[0],
                    model=key[1],
                    estimate=round(raw),
                    upstream=counted,
                )
                return
            calibrations[key] = after
            await self.store.write(save_calibration, *key, after)
        except (
            sqlite3.Error,
            OSError,
            RuntimeError,
            LynkrError,
        ) as exc:  # a lost sample; the answer went out
            self.log.warning("token calibration not saved", provider=key[0], model=key[1], error=str(exc))

    def _charge(self, turn: TurnRecord) -> None:
        """The turn's cost from the upstream's own usage and the price table: the session record, the
        access log and lynkr_cost_usd_total{provider,model} (the model the upstream ran)."""
        log = turn.request_log
        usage = turn.usage or (turn.reply or {}).get("usage") or log.get("usage") or {}
        model = str(log.get("upstream_model") or turn.model)
        turn.cost_usd = self.prices.cost(model, usage)
        if self.on_charge is not None:
            self.on_charge(turn.owner, turn.cost_usd)
        if turn.cost_usd is not None:
            log["cost_usd"] = turn.cost_usd
            METRICS.inc("lynkr_cost_usd_total", turn.cost_usd, provider=turn.provider or "", model=model)

    async def _serve_hit(
        self, hit: dict[str, Any], req: dict[str, Any], http_req: Request, turn: TurnRecord
    ) -> Response:
        reply = cached_reply(hit, req["model"])
        turn.reply = reply
        http_req.log["usage"] = reply["usage"]
        await self._record(turn)
        if req.get("stream"):
            return Response(200, list(SSE_HEADERS), message_to_sse(reply))
        return json_response(200, reply)

    async def _pass_through(
        self, upstream: AsyncIterator[bytes], turn: TurnRecord, key: str | None, http_req: Request
    ) -> AsyncIterator[bytes]:
        reply_builder = http_req.reply_builder
        captured = bytearray()
        capturing = reply_builder is None  # a translator that kept the message spares the re-parse
        recorded = False
        deltas = 0  # content_block_delta events sent (each names itself twice): an abandoned stream's output
        try:
            async for chunk in upstream:
                deltas += chunk.count(b"content_block_delta")
                if capturing:
                    captured += chunk
                    capturing = len(captured) <= MAX_CAPTURED_STREAM_BYTES
                at = chunk.find(MESSAGE_STOP_MARKER)
                if at == -1 or recorded:
                    yield chunk
                    continue
                if at:
                    yield chunk[:at]
                message = reply_builder() if reply_builder is not None else None
                if message is None and capturing:
                    acc = sse_to_message(bytes(captured))
                    message = acc.result() if acc.error is None else None
                if message is not None:
                    self._store(key, message, http_req, turn)
                    turn.reply = message
                # Commit before the last event: a client that saw message_stop has its turn on disk.
                await self._record(turn)
                recorded = True
                yield chunk[at:]
        finally:
            aclose = getattr(upstream, "aclose", None)
            if aclose is not None:
                await aclose()
            if not recorded:
                with contextlib.suppress(Exception):  # a charge estimated is better than none, never an error
                    await self._charge_abandoned(
                        turn, reply_builder, bytes(captured) if capturing else b"", deltas // 2
                    )
                await self._record(turn)

    async def _charge_abandoned(
        self, turn: TurnRecord, reply_builder: Callable[[], Any] | None, captured: bytes, deltas: int
    ) -> None:
        """A stream that ended before message_stop (the client left, the upstream broke off) still cost
        what was generated, and a budget must see it: its input from the upstream's own message_start
        where the stream carried one, else lynkr's calibrated estimate; its output from the text sent
        so far (about four characters a token), at least a token per delta event."""
        if turn.sent is None or not (deltas or captured):
            return
        message = reply_builder() if reply_builder is not None else None
        if message is None and captured:
            acc = sse_to_message(captured)
            message = acc.result() if acc.error is None else None
        usage = dict((message or {}).get("usage") or {})
        if not any(
            isinstance(usage.get(k), int) and usage[k] > 0
            for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
        ):
            key = (str(turn.request_log.get("provider")), str(turn.request_log.get("upstream_model")))
            raw = await self.provider.estimate(turn.sent)
            usage["input_tokens"] = self.provider.calibrations.get(key, TokenCalibration()).count(raw)
        written = sum(
            len(str(b.get("text") or b.get("thinking") or ""))
            + (len(json_dumps(b["input"])) if "input" in b else 0)
            for b in (message or {}).get("content") or []
            if isinstance(b, dict)
        )
        usage["output_tokens"] = max(int(usage.get("output_tokens") or 0), written // 4, deltas)
        turn.usage = usage
        turn.request_log["abandoned"] = True

    # -- the agent loop --
    async def _agent_loop(
        self,
        upstream_req: dict[str, Any],
        http_req: Request,
        record: TurnRecord,
        key: str | None,
        server_tools: dict[str, ToolSpec],
        searcher: SearchEmulation | None = None,
    ) -> Response:
        first = await self.provider.open_stream({**upstream_req, "stream": True}, http_req)
        held = set(server_tools) | ({searcher.name} if searcher is not None else set())
        turn = AgentTurn(
            upstream_req,
            http_req,
            record,
            key,
            searcher,
            RoundRelay(new_id("msg_"), upstream_req["model"], held),
        )
        events = self._rounds(first, turn)
        if upstream_req.get("stream"):
            noted = lambda exc: http_req.log.setdefault("stream_error", exc.error_type)
            return Response(200, list(SSE_HEADERS), stream=errors_as_events(events, noted))
        data = b"".join([chunk async for chunk in events])  # a later round's LynkrError keeps its status
        acc = sse_to_message(data)
        if acc.error is not None:
            error_type = str(acc.error.get("type") or "api_error")
            raise LynkrError(
                str(acc.error.get("message") or "upstream failed"),
                status=ERROR_TYPE_STATUS.get(error_type, 500),
                error_type=error_type,
            )
        return json_response(200, acc.result())

    def _activity(self, call: dict[str, Any], result: ToolResult) -> str:
        args = json_dumps(call.get("input") or {})
        if len(args) > 300:
            args = args[:300] + "…"
        text = result.text()
        if len(text) > self.activity_max_chars:
            text = (
                text[: self.activity_max_chars]
                + f"\n[… {len(text) - self.activity_max_chars} more characters]"
            )
        status = " (error)" if result.is_error else ""
        return f"[lynkr ran server tool {call.get('name')} {args}{status}]\n{text}"

    async def _run_with_pings(self, coro: Awaitable[Any]) -> AsyncIterator[Any]:
        """Run a tool; yield pings (bytes) while it works so the client's idle timer never fires, then its result."""
        task = asyncio.ensure_future(coro)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.cfg.stream_ping_interval_s)
                if done:
                    yield task.result()
                    return
                yield PING_EVENT
        finally:
            if not task.done():
                task.cancel()

    async def _rounds(self, stream: AsyncIterator[bytes], turn: AgentTurn) -> AsyncIterator[bytes]:
        """The client's stream for one turn: model rounds relayed, server calls run between them, up to
        POLICY_MAX_STEPS rounds. An upstream error event ends it (passed on as sent); a failure lynkr
        meets raises LynkrError. The turn is recorded however it ends."""
        try:
            for step in range(1, self.policy.max_steps + 1):
                # aclosing: a client that leaves closes the round (and its upstream stream) at once
                async with contextlib.aclosing(self._relay_round(stream, turn.relay)) as relayed:
                    async for out in relayed:
                        yield out
                if turn.relay.failed:
                    return
                message = turn.relay.message()
                # The next round resends this thinking: its signer must be known before then.
                self.signatures.note(thinking_keys([message]), str(turn.http_req.log.get("provider") or ""))
                if message["stop_reason"] is None:
                    raise UpstreamUnavailable("the upstream stream ended without a stop reason")
                server_calls, client_calls = turn.take(message)
                if not server_calls:
                    break
                if step == self.policy.max_steps and not client_calls:
                    # No round is left to show the model any result: run nothing, say why.
                    yield turn.end_with_note(
                        f"lynkr stopped this turn: POLICY_MAX_STEPS={self.policy.max_steps} model rounds reached "
                        f"while the model still wanted to call {', '.join(c['name'] for c in server_calls)}. "
                        "Raise POLICY_MAX_STEPS, or ask it to continue."
                    )
                    break
                calls = ServerCalls(self, turn)
                async with contextlib.aclosing(calls.run(server_calls)) as running:
                    async for out in running:
                        yield out
                turn.record.server_turns += [
                    {"role": "assistant", "content": message["content"]},
                    {"role": "user", "content": calls.results},
                ]
                notes = [*(calls.records if self.show_activity else []), *calls.limit_notes]
                if notes:
                    yield turn.show({"type": "text", "text": "\n\n".join(notes)})
                if client_calls:
                    turn.stop_reason = "tool_use"  # the client runs its own tools; ours already ran
                    break
                if calls.limit_notes:
                    turn.stop_reason, turn.stop_sequence = "end_turn", None
                    break
                stream = await self.provider.open_stream(
                    turn.next_round(message["content"], calls.results), turn.http_req
                )
            async with contextlib.aclosing(self._finish(turn)) as finishing:
                async for out in finishing:
                    yield out
        finally:
            if not turn.recorded:
                await self._record(turn.record)

    @staticmethod
    async def _relay_round(stream: AsyncIterator[bytes], relay: RoundRelay) -> AsyncIterator[bytes]:
        relay.new_round()
        try:
            async for chunk in stream:
                out = relay.feed(chunk)
                if out:
                    yield out
                if relay.failed:
                    return
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _finish(self, turn: AgentTurn) -> AsyncIterator[bytes]:
        """The turn's end: its reply cached (when no tool ran: tools act on the world) and recorded before
        message_stop goes out."""
        searcher = turn.searcher
        if searcher is not None and searcher.uses:
            turn.usage["server_tool_use"] = {"web_search_requests": searcher.uses}
        reply = message_envelope(
            turn.relay.message_id,
            turn.relay.model,
            turn.visible,
            turn.stop_reason,
            turn.stop_sequence,
            turn.usage,
        )
        if not turn.ran_tools:
            self._store(turn.cache_key, reply, turn.http_req, turn.record)
        turn.http_req.log["usage"] = turn.usage
        end = message_end_events(turn.stop_reason, turn.stop_sequence, turn.usage)
        yield end[: -len(MESSAGE_STOP_EVENT)]
        turn.record.reply, turn.record.usage = reply, turn.usage
        await self._record(turn.record)
        turn.recorded = True
        yield MESSAGE_STOP_EVENT


@dataclasses.dataclass
class AgentTurn:
    """What one agent-loop turn carries across its rounds: the request, the client's view so far (the
    visible blocks, the summed usage, the stop reason) and the server calls made."""

    request: dict[str, Any]  # as sent upstream in the first round
    http_req: Request
    record: TurnRecord
    cache_key: str | None
    searcher: SearchEmulation | None
    relay: RoundRelay
    conversation: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    visible: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    usage: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(EMPTY_USAGE))
    calls_made: int = 0
    ran_tools: bool = False
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    recorded: bool = False

    def __post_init__(self) -> None:
        self.conversation = list(self.request["messages"])

    def take(self, message: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A round's message into the turn; its (server calls, client calls)."""
        add_usage(self.usage, message.get("usage") or {})
        calls = [b for b in message["content"] if b.get("type") == "tool_use"]
        server = [b for b in calls if b.get("name") in self.relay.held]
        self.visible.extend(b for b in message["content"] if b not in server)
        self.stop_reason, self.stop_sequence = message["stop_reason"], message.get("stop_sequence")
        return server, [b for b in calls if b.get("name") not in self.relay.held]

    def show(self, block: dict[str, Any]) -> bytes:
        """A block of lynkr's own, for the client now and in the turn's reply."""
        self.visible.append(block)
        return self.relay.block(block)

    def end_with_note(self, text: str) -> bytes:
        self.stop_reason, self.stop_sequence = "end_turn", None
        return self.show({"type": "text", "text": text})

    def next_round(self, content: list[dict[str, Any]], results: list[dict[str, Any]]) -> dict[str, Any]:
        """The next round's request: this round's answer and the server tools' results appended."""
        results = carry_breakpoint(self.conversation, results)
        self.conversation += [{"role": "assistant", "content": content}, {"role": "user", "content": results}]
        round_req = {**self.request, "messages": self.conversation, "stream": True}
        if (self.request.get("tool_choice") or {}).get("type") in ("tool", "any"):
            round_req["tool_choice"] = {"type": "auto"}  # a forced tool runs once
        return round_req


class ServerCalls:
    """One round's server tool calls, run in order within the request's POLICY_MAX_TOOL_CALLS, pings
    going out while each runs. After `run`: `results` (the tool_results the model reads next), `records`
    (the tool-activity text the client may see), `limit_notes` (why calls were refused, if any)."""

    def __init__(self, orchestrator: Orchestrator, turn: AgentTurn) -> None:
        self.orchestrator, self.turn = orchestrator, turn
        self.results: list[dict[str, Any]] = []
        self.records: list[str] = []
        self.limit_notes: list[str] = []

    async def run(self, calls: list[dict[str, Any]]) -> AsyncIterator[bytes]:
        searcher = self.turn.searcher
        for call in calls:
            runner = self._search if searcher is not None and call["name"] == searcher.name else self._tool
            async for out in runner(call):
                yield out
            self.turn.ran_tools = True

    async def _search(self, call: dict[str, Any]) -> AsyncIterator[bytes]:
        turn, limit = self.turn, self.orchestrator.policy.max_tool_calls
        assert turn.searcher is not None
        over_limit = turn.calls_made >= limit  # searches count like any tool
        turn.calls_made += not over_limit
        shown: list[dict[str, Any]] = []
        async for item in self.orchestrator._run_with_pings(turn.searcher.run(call, over_limit)):
            if isinstance(item, tuple):
                shown, answer = item
                self.results.append(answer)
            else:
                yield item
        for block in shown:  # what Anthropic would show: the search and its results
            yield turn.show(block)

    async def _tool(self, call: dict[str, Any]) -> AsyncIterator[bytes]:
        orchestrator, turn, limit = self.orchestrator, self.turn, self.orchestrator.policy.max_tool_calls
        if turn.calls_made >= limit:
            result = ToolResult(f"denied: POLICY_MAX_TOOL_CALLS ({limit}) reached", True)
            self.limit_notes[:] = [
                f"lynkr stopped this turn: POLICY_MAX_TOOL_CALLS={limit} server tool calls "
                "reached. Raise it to let the model continue."
            ]
        else:
            turn.calls_made += 1
            result = ToolResult("", True)
            async for item in orchestrator._run_with_pings(
                run_tool(orchestrator.tool_ctx, call["name"], call.get("input"))
            ):
                if isinstance(item, ToolResult):
                    result = item
                else:
                    yield item
        METRICS.inc("lynkr_tool_calls_total", tool=call["name"], outcome="error" if result.is_error else "ok")
        turn.http_req.log["tool_calls"] = turn.calls_made
        orchestrator.log.info(
            "server tool", request_id=turn.http_req.request_id, tool=call["name"], is_error=result.is_error
        )
        self.results.append(
            {
                "type": "tool_result",
                "tool_use_id": call["id"],
                "content": result.content,
                "is_error": result.is_error,
            }
        )
        self.records.append(orchestrator._activity(call, result))


# == 19. API routes ==
#
# ROUTES maps (method, path) to a handler. App.handle is the one place where every failure
# becomes an Anthropic error response, and where every request gets its id and its log line.

RouteHandler = Callable[["App", Request], Awaitable[Response]]
CLAUDE_MODEL_NAME = re.compile(r"claude-[a-z0-9.-]{1,40}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (JSON has no NaN or Infinity)")


def parse_json_body(req: Request) -> Any:
    if not req.body.strip():
        raise InvalidRequest("request body is empty: expected a JSON object")
    try:
        return json.loads(req.body, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not valid UTF-8") from None
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("request body nests too deeply to be a Messages request") from None


async def route_messages(app: App, req: Request) -> Response:
    msg_req = validate_messages_request(parse_json_body(req), app.cfg.max_tokens_default)
    if not app.cfg.log_bodies:
        req.body = b""  # parsed: the raw copy (~30 KB for Claude Code) need not live as long as the answer
    req.log["stream"] = bool(msg_req.get("stream"))
    req.log["model"] = msg_req["model"]
    if req.owner is not None:
        await app.keys.admit(req.owner, msg_req["model"])  # its models, requests per minute, budget
    app.orchestrator.sessions_owned = app.keys.any
    return await app.orchestrator.respond(msg_req, req)


async def route_count_tokens(app: App, req: Request) -> Response:
    msg_req = validate_messages_request(parse_json_body(req), app.cfg.max_tokens_default, count_only=True)
    req.log["model"] = msg_req["model"]
    # Count what the upstream will really see: server tool definitions, a web search lynkr runs.
    msg_req = app.orchestrator.shape(msg_req)[0]
    return json_response(200, {"input_tokens": await app.provider.count_tokens(msg_req, req)})


async def route_tools(app: App, req: Request) -> Response:
    data = []
    for spec in TOOLS.values():
        try:
            app.policy.check_tool(spec.name)
            enabled = True
        except ToolDenied:
            enabled = False
        data.append({**spec.definition(), "enabled": enabled})
    return json_response(200, {"data": data})


async def route_tool_call(app: App, req: Request) -> Response:
    name = req.params["name"]
    if name not in TOOLS:
        raise NotFound(f"no server tool named {name!r} (GET /v1/tools lists them)")
    args = parse_json_body(req) if req.body.strip() else {}
    if not isinstance(args, dict):
        raise _field_error("body", "a JSON object with the tool's input", args)
    result = await run_tool(app.orchestrator.tool_ctx, name, args)
    METRICS.inc("lynkr_tool_calls_total", tool=name, outcome="error" if result.is_error else "ok")
    req.log.update(tool=name, is_error=result.is_error)
    return json_response(200, {"content": result.content, "is_error": result.is_error})


def _limit_param(req: Request, default: int, maximum: int) -> int:
    try:
        return max(1, min(int(req.query.get("limit", str(default))), maximum))
    except ValueError:
        raise InvalidRequest(f"limit: expected an integer between 1 and {maximum}") from None


async def route_sessions(app: App, req: Request) -> Response:
    """A personal key lists its own sessions; the admin key, the shared key or nobody (one user) all."""
    sessions = await app.store.run(list_sessions, _limit_param(req, 100, 10000), req.owner)
    return json_response(200, {"data": sessions})


async def route_session(app: App, req: Request) -> Response:
    session = await app.store.run(get_session, req.params["id"])
    if session is None or (req.owner is not None and session.get("owner") != req.owner):
        raise NotFound(f"no session {req.params['id']!r}")  # another key's session is not there for this one
    return json_response(200, session)


async def route_models(app: App, req: Request) -> Response:
    models = [
        {"type": "model", "id": mid, "display_name": name, "created_at": MODELS_CREATED_AT}
        for mid, name in app.provider.advertised_models()
    ]
    limit = _limit_param(req, 20, 1000)
    ids = [m["id"] for m in models]
    if req.query.get("after_id") in ids:
        models = models[ids.index(req.query["after_id"]) + 1 :]
    elif req.query.get("before_id") in ids:
        models = models[: ids.index(req.query["before_id"])][-limit:]
    page = models[:limit]
    return json_response(
        200,
        {
            "data": page,
            "has_more": len(models) > len(page),
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        },
    )


async def route_health(app: App, req: Request) -> Response:
    return json_response(
        200,
        {
            "status": "ok",
            "provider": app.provider.name,
            "configured": app.provider.configured,
            "providers": [
                {k: v for k, v in p.describe().items() if k in ("name", "kind", "configured", "breaker")}
                for p in app.provider.providers.values()
            ],
            # what answers taught the token estimate, per provider and model (count_tokens: "calibrated")
            "token_calibration": [
                {"provider": provider, "model": model, **calibration.describe()}
                for (provider, model), calibration in sorted(app.provider.calibrations.items())
            ],
            "store": app.store.describe(),
            "version": __version__,
            "uptime_s": round(time.monotonic() - app.started, 3),
        },
    )


async def route_live(app: App, req: Request) -> Response:
    return json_response(200, {"status": "live"})


async def route_ready(app: App, req: Request) -> Response:
    reason = app.not_ready_reason()
    if reason:
        return json_response(503, {"ready": False, "reason": reason})
    return json_response(200, {"ready": True, "provider": app.provider.name})


async def route_metrics(app: App, req: Request) -> Response:
    return Response(
        200, [("content-type", "text/plain; version=0.0.4; charset=utf-8")], METRICS.render().encode()
    )


async def route_root(app: App, req: Request) -> Response:
    return json_response(200, {"name": "lynkr", "version": __version__, "docs": "POST /v1/messages"})


# -- the dashboard (/ui): what lynkr is doing, for a person --
#
# Dashboard keeps what the page shows as requests finish: the recent ones, those in flight, and
# per-minute series (requests, errors, latency, cache, tokens and cost per model). The page is one
# HTML file with its script and style (DASHBOARD_ASSETS: no build step, no CDN: it works air-gapped),
# polling the JSON routes under /ui/api/ every two seconds. It is reached like any route (loopback, or
# LYNKR_API_KEY: a browser sends the key through HTTP Basic auth, never in a URL).

DASHBOARD_RECENT = 500  # finished requests the page can list
DASHBOARD_MINUTES = 60  # minutes of per-minute series kept
DASHBOARD_SAMPLES = 200  # latencies kept per minute for its percentiles
DASHBOARD_ROUTES = ("/v1/messages",)  # what the page lists: model calls, not its own polling or the probes
DASHBOARD_MODELS = 20  # distinct model names per minute (a client chooses them); the rest count as "other"
DASHBOARD_TEXT = 200  # characters kept of a client-chosen string (a session id, a model name, an error)


@dataclass
class MinuteStats:
    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    cache_lookups: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    models: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> input/output tokens, cost


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Dashboard:
    """What /ui shows, kept as requests start and finish (on the event loop: no locks)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=DASHBOARD_RECENT)
        self.in_flight: dict[str, tuple[Request, float]] = {}
        self.minutes: collections.OrderedDict[int, MinuteStats] = collections.OrderedDict()
        self.seq = 0

    @staticmethod
    def watched(req: Request) -> bool:
        return req.path.startswith(DASHBOARD_ROUTES)

    def start(self, req: Request) -> None:
        if self.watched(req):
            self.in_flight[req.request_id] = (req, self.clock())

    def finish(self, req: Request, status: int, latency_s: float) -> None:
        if self.in_flight.pop(req.request_id, None) is None:
            return  # not a model call, or refused before it was one (no key): not the page's business
        self.seq += 1
        record = self.describe(req, self.clock() - latency_s)
        latency_ms = round(latency_s * 1000, 1)
        record.update(seq=self.seq, status=status, latency_ms=latency_ms, in_flight=False)
        if record["ttft_ms"] is None and not record["stream"]:
            record["ttft_ms"] = latency_ms  # a JSON answer arrives whole
        self.recent.append(record)
        minute = self._minute(int(record["time"] // 60))
        minute.requests += 1
        minute.errors += status >= 500 or req.log.get("stream_error") not in (None, "client_disconnected")
        if len(minute.latencies_ms) < DASHBOARD_SAMPLES:
            minute.latencies_ms.append(latency_ms)
        if record["cache"] in ("hit", "miss", "stored"):
            minute.cache_lookups += 1
            minute.cache_hits += record["cache"] == "hit"
        if record["model"]:
            if record["model"] not in minute.models and len(minute.models) >= DASHBOARD_MODELS:
                record = {**record, "model": "other"}
            used = minute.models.setdefault(
                record["model"], {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
            )
            used["input_tokens"] += record["input_tokens"] or 0
            used["output_tokens"] += record["output_tokens"] or 0
            used["cost_usd"] += record["cost_usd"] or 0.0

    def describe(self, req: Request, started: float) -> dict[str, Any]:
        log = req.log
        usage = log.get("usage") if isinstance(log.get("usage"), dict) else {}
        inputs = [
            usage.get(k) for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
        ]

        def short(value: Any) -> Any:
            return value[:DASHBOARD_TEXT] if isinstance(value, str) else value

        return {
            "request_id": req.request_id,
            "time": round(started, 3),
            "method": req.method,
            "route": req.route or req.path,
            "session": short(log.get("session_id")),
            "route_taken": log.get("route"),
            "provider": log.get("provider"),
            "model": short(log.get("upstream_model") or log.get("model")),
            "stream": bool(log.get("stream")),
            "ttft_ms": log.get("ttft_ms"),
            "input_tokens": sum(v for v in inputs if isinstance(v, int)) if usage else None,
            "output_tokens": usage.get("output_tokens")
            if isinstance(usage.get("output_tokens"), int)
            else None,
            "cache": log.get("cache"),
            "cost_usd": log.get("cost_usd"),
            "error": short(log.get("error") or log.get("stream_error")),
        }

    def _minute(self, minute: int) -> MinuteStats:
        stats = self.minutes.get(minute)
        if stats is None:
            stats = self.minutes[minute] = MinuteStats()
            while len(self.minutes) > DASHBOARD_MINUTES:
                self.minutes.popitem(last=False)
        return stats

    def requests(self, after: int = 0, limit: int = 200) -> dict[str, Any]:
        now = self.clock()
        flying = [
            {**self.describe(req, started), "in_flight": True, "elapsed_ms": round((now - started) * 1000, 1)}
            for req, started in self.in_flight.values()
        ]
        done = [r for r in reversed(self.recent) if r["seq"] > after][:limit]
        return {"seq": self.seq, "in_flight": flying, "recent": done}

    def series(self) -> dict[str, Any]:
        now_minute = int(self.clock() // 60)
        out = []
        for minute in range(now_minute - DASHBOARD_MINUTES + 1, now_minute + 1):
            stats = self.minutes.get(minute) or MinuteStats()
            out.append(
                {
                    "minute": minute * 60,
                    "requests": stats.requests,
                    "errors": stats.errors,
                    "latency_p50_ms": percentile(stats.latencies_ms, 0.5),
                    "latency_p95_ms": percentile(stats.latencies_ms, 0.95),
                    "cache_hit_rate": stats.cache_hits / stats.cache_lookups if stats.cache_lookups else None,
                    "models": {m: {k: round(v, 8) for k, v in u.items()} for m, u in stats.models.items()},
                }
            )
        return {"minutes": out}

    def provider_errors(self, window_s: float = 300) -> dict[str, tuple[int, int]]:
        """provider -> (requests, errors) over the last window_s seconds."""
        since, counts = self.clock() - window_s, {}
        for record in self.recent:  # in the order they finished, not started: look at every one
            if record["time"] < since:
                continue
            if record["provider"]:
                asked, failed = counts.get(record["provider"], (0, 0))
                counts[record["provider"]] = (asked + 1, failed + (record["status"] >= 500))
        return counts


def index_status(db_path: str) -> dict[str, Any]:
    """The repository index at a glance (blocking: run off the loop); built: False before its first build."""
    if not os.path.isfile(db_path):
        return {"built": False}
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2)) as db:
            files = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            symbols = db.execute("SELECT COUNT(*) FROM symbols").fetchone()[0]
    except sqlite3.Error as exc:
        return {"built": False, "error": str(exc)}
    return {
        "built": True,
        "files": files,
        "symbols": symbols,
        "updated_at": round(os.path.getmtime(db_path), 3),
    }


# The page, its script and its style: (content type, body). Served with a strict Content-Security-Policy
# (only lynkr's own origin: nothing loads from anywhere else, no inline script).
DASHBOARD_ASSETS: dict[str, tuple[str, str]] = {
    "/ui": (
        "text/html; charset=utf-8",
        """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lynkr</title>
<link rel="stylesheet" href="/ui/app.css">
<link rel="icon" href="data:,">
</head>
<body>
<header>
  <h1>lynkr</h1>
  <nav>
    <a href="#requests" data-view="requests">Requests</a>
    <a href="#charts" data-view="charts">Charts</a>
    <a href="#providers" data-view="providers">Providers</a>
    <a href="#sessions" data-view="sessions">Sessions</a>
    <a href="#usage" data-view="usage">Usage</a>
    <a href="#mcp" data-view="mcp">MCP &amp; index</a>
  </nav>
  <span id="status" class="muted">connecting…</span>
</header>
<main>
  <section id="view-requests" class="view">
    <h2>In flight <span id="inflight-count" class="count"></span></h2>
    <table id="inflight"><thead><tr><th>started</th><th>session</th><th>route</th><th>provider / model</th><th>elapsed</th></tr></thead><tbody></tbody></table>
    <h2>Recent</h2>
    <table id="recent"><thead><tr><th>time</th><th>session</th><th>route</th><th>provider / model</th><th>status</th><th>latency</th><th>first token</th><th>tokens in / out</th><th>cache</th><th>cost</th></tr></thead><tbody></tbody></table>
  </section>
  <section id="view-charts" class="view">
    <div class="charts">
      <figure><figcaption>Requests and errors per minute</figcaption><div id="chart-requests" class="chart"></div></figure>
      <figure><figcaption>Latency per minute (p50, p95, ms)</figcaption><div id="chart-latency" class="chart"></div></figure>
      <figure><figcaption>Tokens per model per minute (in + out)</figcaption><div id="chart-tokens" class="chart"></div></figure>
      <figure><figcaption>Cost per model per minute (USD)</figcaption><div id="chart-cost" class="chart"></div></figure>
      <figure><figcaption>Prompt cache hit rate</figcaption><div id="chart-cache" class="chart"></div></figure>
    </div>
  </section>
  <section id="view-providers" class="view">
    <table id="providers"><thead><tr><th>provider</th><th>kind</th><th>configured</th><th>breaker</th><th>requests (5 min)</th><th>error rate</th><th>routes</th></tr></thead><tbody></tbody></table>
  </section>
  <section id="view-sessions" class="view">
    <div class="split">
      <table id="sessions"><thead><tr><th>session</th><th>updated</th><th>turns</th><th>cost</th></tr></thead><tbody></tbody></table>
      <article id="transcript"><p class="muted">Choose a session.</p></article>
    </div>
  </section>
  <section id="view-usage" class="view">
    <p>
      <label>by <select id="usage-by"><option>key</option><option>model</option><option>provider</option><option>day</option></select></label>
      <label>since <select id="usage-since"><option>24h</option><option selected>7d</option><option>30d</option></select></label>
    </p>
    <table id="usage"><thead><tr><th id="usage-group">key</th><th>requests</th><th>input</th><th>output</th><th>cache read</th><th>cache write</th><th>cost</th></tr></thead><tbody></tbody></table>
  </section>
  <section id="view-mcp" class="view">
    <h2>MCP servers</h2>
    <table id="mcp"><thead><tr><th>server</th><th>status</th><th>placement</th><th>tools</th><th>error</th></tr></thead><tbody></tbody></table>
    <h2>Repository index</h2>
    <p id="index-status" class="muted"></p>
  </section>
</main>
<script src="/ui/app.js"></script>
</body>
</html>
""",
    ),
    "/ui/app.js": (
        "text/javascript; charset=utf-8",
        """"use strict";
// lynkr's dashboard: polls /ui/api/* every two seconds and draws with the DOM and inline SVG only.
// Data goes into the page as text (textContent), never as HTML.

const POLL_MS = 2000;
const FOLD_CHARS = 600; // longer tool results are folded
const COLORS = ["#3558d4", "#c23b2a", "#2f8f5b", "#b07d12", "#7a3fb8", "#1f8a99", "#d4569b"];
const SVG = "http://www.w3.org/2000/svg";
let seq = 0;
let recent = [];
let currentSession = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}
async function getJSON(path) {
  // Against the origin: a page opened with credentials in its address (user:key@host) must not carry the key on its requests
  // (the browser sends the credentials it signed in with as a header).
  const resp = await fetch(location.origin + path, { credentials: "same-origin", headers: { accept: "application/json" } });
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}
const clock = (t) => new Date(t * 1000).toLocaleTimeString();
const ms = (v) => (v == null ? "–" : v < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(2)} s`);
const usd = (v) => (v == null ? "–" : `$${v.toFixed(v < 0.01 ? 5 : 3)}`);
const short = (s, n = 18) => (s == null ? "–" : s.length > n ? s.slice(0, n) + "…" : s);
const num = (v) => (v == null ? "–" : v.toLocaleString());

function fill(tbodyParent, rows) {
  const tbody = document.querySelector(`${tbodyParent} tbody`);
  tbody.replaceChildren(...rows);
}
function row(cells, attrs) {
  return el("tr", attrs, ...cells.map((c) => (c instanceof Node ? el("td", {}, c) : el("td", {}, c))));
}

// -- views --
function showView() {
  const name = (location.hash || "#requests").slice(1);
  for (const v of document.querySelectorAll(".view")) v.classList.toggle("active", v.id === `view-${name}`);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === name);
  refresh();
}

async function refreshRequests() {
  const data = await getJSON(`/ui/api/requests?after=${seq}`);
  if (data.seq < seq) recent = []; // lynkr restarted
  seq = data.seq;
  recent = data.recent.concat(recent).slice(0, 200);
  document.getElementById("inflight-count").textContent = `(${data.in_flight.length})`;
  fill("#inflight", data.in_flight.map((r) => row([clock(r.time), short(r.session), r.route,
    `${r.provider ?? "–"} / ${r.model ?? "–"}`, ms(r.elapsed_ms)], { "data-request": r.request_id })));
  fill("#recent", recent.map((r) => {
    const status = el("span", { class: r.status >= 400 ? "bad" : "" }, r.status);
    return row([clock(r.time), short(r.session), r.route, `${r.provider ?? "–"} / ${r.model ?? "–"}`, status,
      ms(r.latency_ms), ms(r.ttft_ms), `${num(r.input_tokens)} / ${num(r.output_tokens)}`, r.cache ?? "–",
      usd(r.cost_usd)], { "data-request": r.request_id });
  }));
}

function chart(id, series, opts = {}) {
  const box = document.getElementById(id);
  const W = 440, H = 180, L = 44, B = 20, T = 8, R = 8;
  const points = series.flatMap((s) => s.points.filter((p) => p[1] != null));
  const xs = series[0] ? series[0].points.map((p) => p[0]) : [];
  const maxY = Math.max(opts.minMax ?? 1, ...points.map((p) => p[1]));
  const x0 = xs[0] ?? 0, x1 = xs[xs.length - 1] ?? 1;
  const sx = (x) => L + ((x - x0) / Math.max(1, x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - (y / maxY) * (H - B - T);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": id });
  root.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  root.append(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  for (const frac of [0, 0.5, 1]) {
    const label = svg("text", { x: L - 4, y: sy(maxY * frac) + 3, "text-anchor": "end" });
    label.textContent = opts.format ? opts.format(maxY * frac) : +(maxY * frac).toPrecision(3);
    root.append(label);
  }
  for (const [i, x] of [[0, x0], [1, x1]]) {
    const label = svg("text", { x: i ? W - R : L, y: H - 6, "text-anchor": i ? "end" : "start" });
    label.textContent = clock(x).slice(0, 5);
    root.append(label);
  }
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    if (s.bars) {
      const w = Math.max(1, (W - L - R) / Math.max(1, xs.length) - 1);
      for (const [x, y] of s.points) if (y) root.append(svg("rect", { x: sx(x) - w / 2, y: sy(y), width: w, height: H - B - sy(y), fill: color, class: "bar" }));
      return;
    }
    let d = "";
    for (const [x, y] of s.points) if (y != null) d += `${d ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
    if (d) root.append(svg("path", { d, fill: "none", stroke: color, "stroke-width": 1.6, class: "line" }));
    // a dot per minute that has a value: a single minute draws no line
    for (const [x, y] of s.points) if (y) root.append(svg("circle", { cx: sx(x), cy: sy(y), r: 2.2, fill: color }));
  });
  const legend = el("div", { class: "legend" }, ...series.map((s, i) => {
    const key = el("span", {}, `■ ${s.name}`);
    key.style.color = COLORS[i % COLORS.length]; // through the CSSOM: the CSP allows no style attributes
    return key;
  }));
  box.replaceChildren(root, legend);
}

async function refreshCharts() {
  const { minutes } = await getJSON("/ui/api/stats");
  const at = (f) => minutes.map((m) => [m.minute, f(m)]);
  chart("chart-requests", [{ name: "requests", bars: true, points: at((m) => m.requests) },
    { name: "errors", bars: true, points: at((m) => m.errors) }]);
  chart("chart-latency", [{ name: "p50", points: at((m) => m.latency_p50_ms) },
    { name: "p95", points: at((m) => m.latency_p95_ms) }], { format: (v) => ms(v) });
  const models = [...new Set(minutes.flatMap((m) => Object.keys(m.models)))];
  const used = (m, name) => (Object.hasOwn(m.models, name) ? m.models[name] : null); // a model may be named "constructor"
  chart("chart-tokens", models.map((name) => ({ name, points: at((m) => used(m, name) ? used(m, name).input_tokens + used(m, name).output_tokens : 0) })));
  chart("chart-cost", models.map((name) => ({ name, points: at((m) => used(m, name) ? used(m, name).cost_usd : 0) })), { format: (v) => usd(v) });
  chart("chart-cache", [{ name: "hit rate", points: at((m) => m.cache_hit_rate) }], { minMax: 1, format: (v) => `${Math.round(v * 100)}%` });
}

async function refreshProviders() {
  const { data } = await getJSON("/ui/api/providers");
  fill("#providers", data.map((p) => row([p.name, p.kind, p.configured ? "yes" : "no",
    el("span", { class: p.breaker === "closed" ? "" : "bad" }, p.breaker), num(p.requests_5m),
    p.error_rate_5m == null ? "–" : `${Math.round(p.error_rate_5m * 100)}%`, p.routes.join(", ") || "–"])));
}

async function refreshSessions() {
  const { data } = await getJSON("/ui/api/sessions?limit=100");
  fill("#sessions", data.map((s) => {
    const tr = row([short(s.id, 28), clock(s.updated_at), num(s.turns), usd(s.cost_usd)],
      { class: "clickable" + (s.id === currentSession ? " selected" : ""), "data-session": s.id });
    tr.addEventListener("click", () => openSession(s.id));
    return tr;
  }));
}

function blockView(block) {
  if (block.type === "text") return el("div", { class: "block" }, block.text);
  if (block.type === "thinking") return el("details", { class: "block" }, el("summary", {}, "thinking"), block.thinking || "");
  if (block.type === "tool_use" || block.type === "server_tool_use") return el("div", { class: "block tool" }, `→ ${block.name} ${JSON.stringify(block.input)}`);
  if (block.type === "tool_result" || block.type === "web_search_tool_result") {
    const content = typeof block.content === "string" ? block.content : JSON.stringify(block.content, null, 1);
    const label = `← result${block.is_error ? " (error)" : ""}`;
    if (content.length <= FOLD_CHARS) return el("div", { class: "block tool" }, `${label}: ${content}`);
    return el("details", { class: "block tool" }, el("summary", {}, `${label}: ${content.length.toLocaleString()} characters`), content);
  }
  return el("div", { class: "block muted" }, `[${block.type}]`);
}

async function openSession(id) {
  currentSession = id;
  const s = await getJSON(`/ui/api/sessions/${encodeURIComponent(id)}`);
  const box = document.getElementById("transcript");
  const head = el("p", {}, el("strong", {}, s.id), ` · ${s.turns.length} turns · ${usd(s.cost_usd)} · `,
    el("a", { href: `/ui/api/sessions/${encodeURIComponent(s.id)}`, download: `${s.id}.json`, id: "export" }, "export (JSON)"));
  const turns = s.turns.map((t) => {
    const blocks = typeof t.content === "string" ? [{ type: "text", text: t.content }] : t.content;
    return el("div", { class: "turn", "data-kind": t.kind },
      el("div", { class: "who" }, `${t.role}${t.kind === "server_tool" ? " (lynkr's tool loop)" : ""}`, el("span", { class: "muted" }, `  ${t.model ?? ""} ${t.cache ? "· cache " + t.cache : ""}`)),
      ...blocks.map(blockView));
  });
  box.replaceChildren(head, ...turns);
  for (const tr of document.querySelectorAll("#sessions tr")) tr.classList.toggle("selected", tr.dataset.session === id);
}

async function refreshMCP() {
  const [mcp, index] = await Promise.all([getJSON("/ui/api/mcp"), getJSON("/ui/api/index")]);
  fill("#mcp", mcp.servers.map((s) => row([s.name, s.status, s.placement, (s.tools || []).map((t) => t.name ?? t).join(", ") || "–", s.error || ""])));
  document.getElementById("index-status").textContent = index.built
    ? `${num(index.files)} files, ${num(index.symbols)} symbols, updated ${clock(index.updated_at)}`
    : "not built yet (it is built on first use, or at start with LYNKR_INDEX_ON_START)";
}

async function refreshUsage() {
  const by = document.getElementById("usage-by").value, since = document.getElementById("usage-since").value;
  const { data } = await getJSON(`/ui/api/usage?by=${by}&since=${since}`);
  document.getElementById("usage-group").textContent = by;
  fill("#usage", data.map((r) => row([r[by], num(r.requests), num(r.input_tokens), num(r.output_tokens),
    num(r.cache_read_tokens), num(r.cache_write_tokens), usd(r.cost_usd)])));
}
for (const id of ["usage-by", "usage-since"]) document.getElementById(id).addEventListener("change", refreshUsage);

const REFRESH = { requests: refreshRequests, charts: refreshCharts, providers: refreshProviders, sessions: refreshSessions, usage: refreshUsage, mcp: refreshMCP };
async function refresh() {
  const name = (location.hash || "#requests").slice(1);
  try {
    await (REFRESH[name] || refreshRequests)();
    document.getElementById("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    document.getElementById("status").textContent = `cannot reach lynkr: ${err.message}`;
  }
}

window.addEventListener("hashchange", showView);
showView();
setInterval(refresh, POLL_MS);
""",
    ),
    "/ui/app.css": (
        "text/css; charset=utf-8",
        """:root { --fg: #1d2330; --muted: #6b7385; --line: #dde1e8; --bg: #f7f8fa; --accent: #3558d4; --bad: #c23b2a; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 24px; align-items: baseline; padding: 10px 20px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { font-size: 18px; margin: 0; }
h2 { font-size: 15px; margin: 18px 0 6px; }
nav a { margin-right: 14px; color: var(--muted); text-decoration: none; }
nav a.active { color: var(--accent); font-weight: 600; }
main { padding: 12px 20px; }
.view { display: none; }
.view.active { display: block; }
table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid var(--line); }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; font-variant-numeric: tabular-nums; }
th { color: var(--muted); font-weight: 500; }
tr.clickable { cursor: pointer; }
tr.clickable:hover, tr.selected { background: #eef2fd; }
.muted { color: var(--muted); }
.count { color: var(--muted); font-weight: 400; }
.bad { color: var(--bad); }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 14px; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); padding: 8px; }
figcaption { color: var(--muted); margin-bottom: 4px; }
.chart svg { width: 100%; height: 180px; display: block; }
.chart .axis { stroke: var(--line); }
.chart text { fill: var(--muted); font-size: 10px; }
.legend span { margin-right: 10px; font-size: 12px; }
.split { display: grid; grid-template-columns: minmax(320px, 1fr) 2fr; gap: 14px; align-items: start; }
article { background: #fff; border: 1px solid var(--line); padding: 10px 14px; min-height: 200px; overflow-wrap: anywhere; }
.turn { border-bottom: 1px solid var(--line); padding: 6px 0; }
.turn .who { font-weight: 600; }
.block { margin: 4px 0 4px 12px; white-space: pre-wrap; }
.block.tool { font-family: ui-monospace, monospace; font-size: 12px; }
details summary { cursor: pointer; color: var(--accent); }
""",
    ),
}
DASHBOARD_HEADERS = (
    (
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
)


async def route_dashboard_asset(app: App, req: Request) -> Response:
    if req.path == "/ui/":  # the browser scopes the credentials it signed in with to the page's folder
        return Response(308, [("location", "/ui"), ("content-length", "0")])
    content_type, body = DASHBOARD_ASSETS[req.route]
    return Response(200, [("content-type", content_type), *DASHBOARD_HEADERS], body.encode())


async def route_dashboard_requests(app: App, req: Request) -> Response:
    try:
        after = int(req.query.get("after", "0"))
    except ValueError:
        raise InvalidRequest("after: expected the seq of the last request seen (an integer)") from None
    return json_response(200, app.dashboard.requests(after, _limit_param(req, 200, DASHBOARD_RECENT)))


async def route_dashboard_stats(app: App, req: Request) -> Response:
    return json_response(200, app.dashboard.series())


async def route_dashboard_providers(app: App, req: Request) -> Response:
    router, counts = app.provider, app.dashboard.provider_errors()
    uses: dict[str, list[str]] = {}
    for route, target in router.routes.items():
        uses.setdefault(target.provider, []).append(route)
    for route, chain in router.fallbacks.items():
        for target in chain:
            uses.setdefault(target.provider, []).append(f"{route} (fallback)")
    data = []
    for name, provider in router.providers.items():
        described = provider.describe()
        asked, failed = counts.get(name, (0, 0))
        data.append(
            {
                "name": name,
                "kind": described.get("kind"),
                "configured": described.get("configured"),
                "breaker": described.get("breaker"),
                "requests_5m": asked,
                "error_rate_5m": failed / asked if asked else None,
                "routes": sorted(set(uses.get(name, []))),
            }
        )
    return json_response(200, {"data": data})


async def route_dashboard_mcp(app: App, req: Request) -> Response:
    manager = app.orchestrator.tool_ctx.mcp
    servers = [server.describe() for server in manager.servers.values()] if manager else []
    return json_response(
        200, {"servers": servers, "sandbox_active": bool(manager and manager.sandbox.active)}
    )


async def route_dashboard_index(app: App, req: Request) -> Response:
    db_path = os.path.join(app.cfg.data_dir, "index.db")
    return json_response(200, await asyncio.get_running_loop().run_in_executor(None, index_status, db_path))


# -- personal keys and usage over HTTP (the admin key only) --

KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
SINCE = re.compile(r"(\d{1,5})([mhdw])")
SINCE_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_budget(text: str) -> tuple[float, str]:
    """ "5/day" -> (5.0, "day"): US dollars per day, week or month."""
    amount, _, period = text.partition("/")
    try:
        value = float(amount)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0 or period not in BUDGET_PERIODS:
        raise InvalidRequest(f"budget {text!r}: expected USD/PERIOD such as 5/day, 20/week or 50/month")
    return value, period


def parse_since(text: str, now: float) -> float:
    """ "7d", "24h", "30m", "2w" -> the epoch time that long ago."""
    match = SINCE.fullmatch(text.strip())
    if match is None:
        raise InvalidRequest(f"since {text!r}: expected a duration such as 30m, 24h, 7d or 2w")
    return now - int(match.group(1)) * SINCE_UNITS[match.group(2)]


def key_settings(body: dict[str, Any]) -> dict[str, Any]:
    """A new key's name and limits, validated (the admin route's JSON and the CLI's options alike)."""
    name = body.get("name")
    if not isinstance(name, str) or not KEY_NAME.fullmatch(name):
        raise InvalidRequest("name: letters, digits and _.@- (at most 64), starting with a letter or digit")
    budget = body.get("budget")
    models = body.get("models") or []
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise InvalidRequest("models: a list of model globs (or one comma-separated string)")
    rpm = body.get("rpm")
    if rpm is not None and (not isinstance(rpm, int) or isinstance(rpm, bool) or rpm < 1):
        raise InvalidRequest("rpm: a whole number of requests per minute, at least 1")
    if budget is not None and not isinstance(budget, str):
        raise InvalidRequest("budget: USD/PERIOD such as 5/day")
    return {
        "name": name,
        "budget": parse_budget(budget) if budget else None,
        "models": tuple(models),
        "rpm": rpm,
    }


def _admin_only(req: Request) -> None:
    if not req.admin:
        raise PermissionDenied("the admin routes need the admin key (LYNKR_ADMIN_KEY) as x-api-key or Bearer")


async def route_admin_keys(app: App, req: Request) -> Response:
    _admin_only(req)
    await app.keys.reload(fresh=True)
    return json_response(200, {"data": [k.describe() for k in app.keys.by_name.values()]})


async def route_admin_create_key(app: App, req: Request) -> Response:
    _admin_only(req)
    body = parse_json_body(req)
    if not isinstance(body, dict):
        raise InvalidRequest("expected a JSON object: {name, budget?, models?, rpm?}")
    wanted = key_settings(body)
    key = await app.store.change(
        create_key, wanted["name"], wanted["budget"], wanted["models"], wanted["rpm"]
    )
    with contextlib.suppress(StoreUnavailable):  # the key exists: it is shown now or never
        await app.keys.reload(fresh=True)
    made = app.keys.by_name.get(wanted["name"])
    described = made.describe() if made is not None else {"name": wanted["name"]}
    return json_response(201, {**described, "key": key})


async def route_admin_revoke_key(app: App, req: Request) -> Response:
    _admin_only(req)
    if not await app.store.change(revoke_key, req.params["name"]):
        raise NotFound(f"no active key named {req.params['name']!r}")
    await app.keys.reload(fresh=True)
    return json_response(200, {"name": req.params["name"], "revoked": True})


async def route_admin_usage(app: App, req: Request) -> Response:
    _admin_only(req)
    return await route_dashboard_usage(app, req)


async def route_dashboard_usage(app: App, req: Request) -> Response:
    """Usage by key, model, provider or day: a personal key sees its own, the admin (or the one user of a
    lynkr without personal keys) everything."""
    by = req.query.get("by", "key")
    if by not in USAGE_GROUPS:
        raise InvalidRequest(f"by: one of {', '.join(USAGE_GROUPS)}")
    since = parse_since(req.query.get("since", "30d"), time.time())
    data = await app.store.run(usage_report, by, since, None if req.admin else req.owner)
    return json_response(200, {"by": by, "since": round(since, 3), "data": data})


ROUTES: dict[tuple[str, str], RouteHandler] = {
    ("POST", "/v1/messages"): route_messages,
    ("POST", "/v1/messages/count_tokens"): route_count_tokens,
    ("GET", "/v1/models"): route_models,
    ("GET", "/health"): route_health,
    ("GET", "/health/live"): route_live,
    ("GET", "/health/ready"): route_ready,
    ("GET", "/metrics"): route_metrics,
    ("GET", "/"): route_root,
    ("HEAD", "/"): route_root,
    ("HEAD", "/api/hello"): route_root,  # Claude Code's warm-up probe
    ("GET", "/v1/tools"): route_tools,
    ("POST", "/v1/tools/{name}"): route_tool_call,
    ("GET", "/v1/sessions"): route_sessions,
    ("GET", "/v1/sessions/{id}"): route_session,
    ("GET", "/ui"): route_dashboard_asset,
    ("GET", "/ui/app.js"): route_dashboard_asset,
    ("GET", "/ui/app.css"): route_dashboard_asset,
    ("GET", "/ui/api/requests"): route_dashboard_requests,
    ("GET", "/ui/api/stats"): route_dashboard_stats,
    ("GET", "/ui/api/providers"): route_dashboard_providers,
    ("GET", "/ui/api/mcp"): route_dashboard_mcp,
    ("GET", "/ui/api/index"): route_dashboard_index,
    ("GET", "/ui/api/usage"): route_dashboard_usage,
    ("GET", "/ui/api/sessions"): route_sessions,
    ("GET", "/ui/api/sessions/{id}"): route_session,
    ("GET", "/admin/keys"): route_admin_keys,
    ("POST", "/admin/keys"): route_admin_create_key,
    ("DELETE", "/admin/keys/{name}"): route_admin_revoke_key,
    ("GET", "/admin/usage"): route_admin_usage,
}


def basic_auth_password(authorization: str) -> str:
    """The password of an `Authorization: Basic` header ("" when there is none or it is malformed)."""
    if authorization[:6].lower() != "basic ":
        return ""
    try:
        return base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8").partition(":")[2]
    except (ValueError, UnicodeDecodeError):
        return ""


def presented_keys(req: Request) -> list[str]:
    """The keys a request offers: Claude Code sends x-api-key (ANTHROPIC_API_KEY) or Bearer
    (ANTHROPIC_AUTH_TOKEN), sometimes both; a browser on the dashboard sends HTTP Basic."""
    auth = req.headers.get("authorization", "")
    candidates = [
        req.headers.get("x-api-key", ""),
        auth[7:].strip() if auth[:7].lower() == "bearer " else "",
    ]
    # A browser sends cached Basic credentials on every request to the origin, cross-site POSTs
    # included: they count only for reading the dashboard.
    if req.method in ("GET", "HEAD") and (req.path == "/ui" or req.path.startswith("/ui/")):
        candidates.append(basic_auth_password(auth))
    return [c for c in candidates if c]


def match_route(template: str, path: str) -> dict[str, str] | None:
    """`/v1/tools/{name}` matches `/v1/tools/fs_read` -> {"name": "fs_read"}; one segment per parameter."""
    t_parts, p_parts = template.split("/"), path.split("/")
    if len(t_parts) != len(p_parts):
        return None
    params = {}
    for t, p in zip(t_parts, p_parts, strict=False):
        if t.startswith("{") and t.endswith("}"):
            if not p:
                return None
            params[t[1:-1]] = urllib.parse.unquote(p)
        elif t != p:
            return None
    return params


class RateLimiter:
    """A token bucket per client: `per_minute` requests a minute, bursts up to the same number."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.clock = clock
        self.buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def take(self, key: str) -> float:
        """0 when admitted, else seconds until a token is free."""
        now = self.clock()
        tokens, last = self.buckets.pop(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * self.rate)
        admitted = tokens >= 1.0
        self.buckets[key] = (tokens - 1.0 if admitted else tokens, now)
        while len(self.buckets) > 100_000:  # many distinct clients must not grow memory without bound
            self.buckets.popitem(last=False)
        return 0.0 if admitted else (1.0 - tokens) / self.rate


KEY_RELOAD_S = 5.0  # keys created or revoked by another process (lynkr keys ...) count after this long


class KeyRing:
    """Personal keys as requests meet them: who a key is, and whether its request may go on -- the models
    it may use, its requests per minute, its budget. The keys live in the store; this keeps them in
    memory (reloaded at most every KEY_RELOAD_S, and at once by the admin routes) with each key's spend
    in its current budget period, so the checks cost no database round trip."""

    def __init__(
        self,
        store: Store | PostgresStore,
        mode: str,
        clock: Callable[[], float] = time.time,
        log: Logger | None = None,
    ) -> None:
        self.store, self.mode, self.clock, self.log = store, mode, clock, log
        self.enabled, self.required = mode != "off", mode == "required"
        self.by_hash: dict[str, PersonalKey] = {}
        self.by_name: dict[str, PersonalKey] = {}
        self.loaded_at = -math.inf
        self.windows: dict[str, collections.deque[float]] = {}  # name -> request times in the last minute
        self.spend: dict[str, tuple[float, float]] = {}  # name -> (period start, spent in it)
        # A shared store is read on every check (other instances spend too); this instance's charges
        # whose ledger rows are still queued are added until they land.
        self.unlanded: dict[str, float] = {}
        self._loading: asyncio.Future[None] | None = None

    @property
    def any(self) -> bool:
        return bool(self.by_name)

    async def reload(self, fresh: bool = False) -> None:
        """One load at a time, shared by every caller (an older load never lands over a newer one);
        fresh: a load that starts after this call (an admin's change must be in it)."""
        if fresh and self._loading is not None and not self._loading.done():
            await asyncio.shield(self._loading)
        if self._loading is None or self._loading.done() or fresh:
            self._loading = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loading)

    async def _load(self) -> None:
        started = self.clock()
        try:
            keys = await self.store.run(load_keys)
        except StoreUnavailable as exc:
            if self.loaded_at == -math.inf:
                raise
            self.loaded_at = started  # the keys known keep working while the database is away
            if self.log is not None:
                self.log.warning("personal keys not reloaded", error=exc.reason)
            return
        self.by_hash = {k.key_hash: k for k in keys}
        self.by_name = {k.name: k for k in keys}
        self.loaded_at = started

    async def identify(self, presented: list[str]) -> PersonalKey | None:
        """The personal key among those presented. Keys already known never wait for a reload (it runs
        in the background once KEY_RELOAD_S has passed); a key not known yet waits for a fresh one."""
        personal = [c for c in presented if c.startswith(KEY_PREFIX)]
        if self.clock() - self.loaded_at > KEY_RELOAD_S:
            if self.loaded_at == -math.inf or any(key_hash(c) not in self.by_hash for c in personal):
                await self.reload()
            elif self._loading is None or self._loading.done():
                self._loading = asyncio.ensure_future(self._load())
                self._loading.add_done_callback(lambda f: f.cancelled() or f.exception())
        for candidate in personal:
            if candidate.startswith(KEY_PREFIX):
                key = self.by_hash.get(key_hash(candidate))
                if key is not None and key.revoked_at is None:
                    return key
        return None

    async def admit(self, name: str, model: str) -> None:
        """Before any upstream call: the key's models, requests per minute and budget."""
        key = self.by_name[name]
        if key.models and not any(fnmatch.fnmatchcase(model, glob) for glob in key.models):
            raise PermissionDenied(
                f"key {name!r} may use only the models {', '.join(key.models)} (not {model!r})"
            )
        now = self.clock()
        if key.rpm:
            wait = await self.take_slot(name, key.rpm, now)
            if wait is not None:
                raise LynkrError(
                    f"key {name!r} made its {key.rpm} requests this minute",
                    status=429,
                    error_type="rate_limit_error",
                    headers={"retry-after": str(max(1, math.ceil(wait)))},
                )
        if key.budget_usd is not None and key.budget_period:
            start, end = period_start(key.budget_period, now)
            spent = await self.spent(name, start)
            if spent >= key.budget_usd:
                resets = datetime.datetime.fromtimestamp(end, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
                raise LynkrError(
                    f"key {name!r} has spent ${spent:.4f} of its ${key.budget_usd:g} per {key.budget_period} "
                    f"budget; it resets at {resets}",
                    status=429,
                    error_type="rate_limit_error",
                    headers={"retry-after": str(max(1, math.ceil(end - now)))},
                )

    def _local_slot(self, name: str, rpm: int, now: float) -> float | None:
        window = self.windows.setdefault(name, collections.deque())
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= rpm:
            return window[0] + 60 - now
        window.append(now)
        return None

    async def take_slot(self, name: str, rpm: int, now: float) -> float | None:
        """None: the request may go (and is counted); else the seconds until a slot frees. A shared
        store counts every instance's requests (this one's alone while the database is away)."""
        if self.store.shared:
            with contextlib.suppress(StoreUnavailable):
                return await self.store.run(take_request_slot, name, rpm)
        return self._local_slot(name, rpm, now)

    async def spent(self, name: str, start: float) -> float:
        known = self.spend.get(name)
        if self.store.shared or known is None or known[0] != start:  # ask the ledger
            try:
                known = (start, await self.store.run(spent_since, name, start))
            except StoreUnavailable:
                if known is None or known[0] != start:
                    raise
            self.spend[name] = known
        return known[1] + self.unlanded.get(name, 0.0)

    def charged(self, name: str | None, cost: float | None) -> None:
        """An answered request's cost, as soon as it is known (the ledger row follows with the turn)."""
        if name is None or not cost:
            return
        if self.store.shared:
            self.unlanded[name] = self.unlanded.get(name, 0.0) + cost
        elif name in self.spend:
            start, spent = self.spend[name]
            self.spend[name] = (start, spent + cost)

    def landed(self, name: str | None, cost: float | None) -> None:
        """The ledger row of a charge is committed: the ledger counts it from now on."""
        if name is not None and cost and name in self.unlanded:
            left = self.unlanded[name] - cost
            if left > 1e-12:
                self.unlanded[name] = left
            else:
                del self.unlanded[name]


class App:
    def __init__(self, cfg: Config, log: Logger, provider: Router, orchestrator: Orchestrator) -> None:
        self.cfg = cfg
        self.log = log
        self.provider = provider
        self.orchestrator = orchestrator
        self.policy = orchestrator.policy
        self.store = orchestrator.store
        self.started = time.monotonic()
        self.allowed_hosts = frozenset(cfg.allowed_hosts)
        self.allowed_origins = frozenset(o.lower().rstrip("/") for o in cfg.settings.lynkr_allowed_origins)
        self.known_models = frozenset(model_id for model_id, _name in provider.advertised_models())
        self.bound_to_loopback = is_loopback_host(cfg.host)
        self.ready = False  # set once listening; cleared the moment shutdown starts
        self.draining = False
        self.background: set[asyncio.Future[None]] = set()  # tasks of the app's own (the startup index)
        self.dashboard = Dashboard()
        self.keys = KeyRing(self.store, cfg.settings.lynkr_keys, log=log)
        orchestrator.on_charge = self.keys.charged
        orchestrator.on_landed = self.keys.landed
        self.in_flight = 0
        self.max_in_flight = cfg.settings.max_concurrent_requests
        per_minute = cfg.settings.rate_limit_requests_per_min
        self.rate_limiter = RateLimiter(per_minute) if per_minute else None

    def metric_model(self, model: str) -> str:
        """The model label: names lynkr routes (listed in /v1/models) and Claude model names as they are,
        anything else "other" (a client can send any string as a model name)."""
        if not model or model in self.known_models or CLAUDE_MODEL_NAME.fullmatch(model):
            return model
        return "other"

    def not_ready_reason(self) -> str:
        if self.draining:
            return "shutting down"
        if not self.ready:
            return "starting"
        if not self.provider.configured:
            return "no model provider configured"
        if self.provider.breakers_all_open():
            return "every provider's circuit breaker is open"
        if self.store.backlogged:
            return "the database's write queue is full (LYNKR_WRITE_QUEUE_MAX)"
        return ""

    def admit(self, req: Request) -> None:
        """Load shedding and the optional per-client rate limit; probes and metrics are never refused
        and never take a slot."""
        if req.path.startswith(("/health", "/metrics")):
            return
        if self.store.backlogged and not req.path.startswith("/ui"):
            METRICS.inc("lynkr_rejected_requests_total", reason="write_queue")
            raise StoreUnavailable(
                f"{self.store.pending} writes are waiting for the database (LYNKR_WRITE_QUEUE_MAX "
                f"{self.cfg.settings.lynkr_write_queue_max}); retry shortly",
                retry_after_s=5,
            )
        if self.in_flight >= self.max_in_flight:
            METRICS.inc("lynkr_rejected_requests_total", reason="concurrency")
            raise LynkrError(
                f"lynkr is at MAX_CONCURRENT_REQUESTS ({self.max_in_flight}); retry shortly",
                status=503,
                error_type="api_error",
                headers={"retry-after": "1", "x-should-retry": "true"},
            )
        if self.rate_limiter is not None:
            # The verified identity only: the client key when lynkr checks one (check_access ran first),
            # else the address. An unchecked x-api-key is a header anyone can vary per request.
            key = "key" if self.cfg.api_key else "addr:" + req.client.rsplit(":", 1)[0]
            wait = self.rate_limiter.take(key)
            if wait > 0:
                METRICS.inc("lynkr_rejected_requests_total", reason="rate_limit")
                raise LynkrError(
                    f"rate limit of {self.rate_limiter.per_minute} requests per minute reached "
                    "(RATE_LIMIT_REQUESTS_PER_MIN)",
                    status=429,
                    error_type="rate_limit_error",
                    headers={"retry-after": str(max(1, math.ceil(wait)))},
                )
        req.counted = True
        self.in_flight += 1
        METRICS.set("lynkr_in_flight_requests", self.in_flight)

    # -- access control --
    def _host_allowed(self, host: str) -> bool:
        if host.lower() in self.allowed_hosts or is_loopback_host(host):
            return True
        if self.bound_to_loopback:
            return False
        try:  # bound to a network: its addresses (a rebinding page can only send a name)
            ipaddress.ip_address(host.strip("[]"))
            return True
        except ValueError:
            return False

    def check_access(self, req: Request) -> None:
        host = split_host_port(req.headers.get("host", ""))
        # DNS rebinding: a page on evil.example resolving to 127.0.0.1 still sends Host: evil.example.
        # Checked wherever no key stands in the way: on loopback, and on a trusted network without one.
        keyless = not self.cfg.api_key and self.cfg.settings.lynkr_keys != "required"
        if (self.bound_to_loopback or self.allowed_hosts or keyless) and not self._host_allowed(host):
            raise PermissionDenied(
                f"Host {host!r} is not allowed; add it to LYNKR_ALLOWED_HOSTS to accept it"
            )
        origin = req.headers.get("origin")
        if origin == "null":
            raise PermissionDenied("requests from opaque origins are refused")
        if origin:
            # A browser page may call lynkr only from lynkr's own origin (its dashboard) or one the operator
            # lists: any page of any local dev server (http://localhost:3000) is not a reason to let it
            # write files. Same origin: the Origin's host:port is the Host the request was sent to.
            netloc = urllib.parse.urlsplit(origin).netloc.lower()
            if (
                netloc != req.headers.get("host", "").lower()
                and origin.lower().rstrip("/") not in self.allowed_origins
            ):
                raise PermissionDenied(
                    f"cross-origin request from {origin!r} refused (LYNKR_ALLOWED_ORIGINS lists "
                    "the origins whose pages may call lynkr)"
                )

    async def authenticate(self, req: Request) -> None:
        """Who is asking: the admin key, a personal key (charged to, limited, owning its sessions), the
        shared LYNKR_API_KEY, or, on loopback without keys, anyone. Raises AuthenticationFailed when a
        key is needed and none fits."""
        presented = presented_keys(req)
        admin_key = self.cfg.settings.lynkr_admin_key
        if admin_key and any(secrets.compare_digest(c.encode(), admin_key.encode()) for c in presented):
            req.admin = True
            return
        key = await self.keys.identify(presented) if self.keys.enabled else None
        if key is not None:
            req.owner = req.log["key"] = key.name
            return
        if self.cfg.api_key:
            if any(secrets.compare_digest(c.encode(), self.cfg.api_key.encode()) for c in presented):
                return
            message = "invalid or missing API key: send LYNKR_API_KEY as x-api-key or Bearer token"
        elif self.keys.required:
            message = "a personal key is required (LYNKR_KEYS=required): ask the operator for one (lynkr keys create)"
        else:
            return
        raise AuthenticationFailed(
            message,
            # the browser asks for it (any user name, the key as the password): never in a URL
            headers={"www-authenticate": 'Basic realm="lynkr", charset="UTF-8"'}
            if req.path == "/ui" or req.path.startswith("/ui/")
            else None,
        )

    # -- dispatch --
    def resolve(self, req: Request) -> RouteHandler:
        method, path = req.method, req.path
        if len(path) > 1:
            path = path.rstrip("/")
        candidates: dict[str, RouteHandler] = {}  # method -> handler for this path
        for (route_method, template), route_handler in ROUTES.items():
            if template == path:
                candidates[route_method] = route_handler
                if route_method == method or (method == "HEAD" and route_method == "GET"):
                    req.route = template
            elif "{" in template:
                params = match_route(template, path)
                if params is not None:
                    candidates[route_method] = route_handler
                    if route_method == method or (method == "HEAD" and route_method == "GET"):
                        req.params = params
                        req.route = template
        handler = candidates.get(method) or (candidates.get("GET") if method == "HEAD" else None)
        if handler is not None:
            return handler
        allowed = sorted(candidates)
        if allowed:
            raise MethodNotAllowed(
                f"{method} is not allowed on {path}; use {', '.join(allowed)}",
                headers={"allow": ", ".join(allowed)},
            )
        raise NotFound(f"no route for {method} {path}")

    def error_response(self, exc: LynkrError, request_id: str) -> Response:
        headers = [("content-type", "application/json"), *exc.headers.items()]
        if exc.raw_body is not None:
            return Response(exc.status, headers, exc.raw_body)
        return Response(exc.status, headers, json_bytes(error_body(exc.error_type, exc.message, request_id)))

    def protocol_error_response(self, status: int, error_type: str, message: str) -> Response:
        request_id = new_id("req_")
        response = self.error_response(LynkrError(message, status=status, error_type=error_type), request_id)
        response.headers.append(("request-id", request_id))
        return response

    async def handle(self, req: Request) -> Response:
        req.request_id = new_id("req_")
        started = time.monotonic()
        try:
            self.check_access(req)
            await self.authenticate(req)
            self.dashboard.start(req)
            handler = self.resolve(req)
            self.admit(req)
            response = await handler(self, req)
        except LynkrError as exc:
            req.log["error"] = exc.message if exc.status >= 500 else exc.error_type
            response = self.error_response(exc, req.request_id)
        except (
            RecursionError
        ):  # a body that parsed, nested too deeply for some later step: the client's doing
            req.log["error"] = "invalid_request_error"
            response = self.error_response(
                InvalidRequest(
                    "the request nests too deeply: a JSON value (e.g. a tool_use input) holds hundreds of levels"
                ),
                req.request_id,
            )
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 -- a bug: the client still gets an Anthropic error, the log gets the detail
            self.log.error(
                "unhandled error",
                request_id=req.request_id,
                path=req.path,
                **error_log_fields(exc, self.cfg.log_bodies),
            )
            response = self.error_response(
                LynkrError(f"internal error in lynkr (request id {req.request_id})"), req.request_id
            )
        # A client's model name is echoed in x-lynkr-model: only printable ASCII may go out as a header.
        response.headers.extend((name, header_safe(value)) for name, value in req.reply_headers.items())
        response.headers.append(("request-id", req.request_id))
        if response.stream is not None:
            inner = response.stream
            response.stream = self._logged_stream(inner, req, response.status, started)
            response.on_done = functools.partial(self._abandoned, inner, req, response.status, started)
        else:
            self.finish(req, response.status, started)
        return response

    async def _logged_stream(
        self, stream: AsyncIterator[bytes], req: Request, status: int, started: float
    ) -> AsyncIterator[bytes]:
        completed = False
        first_token = False
        METRICS.inc("lynkr_in_flight_streams", 1)
        try:
            async for chunk in stream:
                if not first_token and b"content_block_delta" in chunk:
                    first_token = True
                    ttft = time.monotonic() - started
                    req.log["ttft_ms"] = round(ttft * 1000, 1)
                    METRICS.observe(
                        "lynkr_time_to_first_token_seconds", ttft, provider=req.log.get("provider", "")
                    )
                yield chunk
            completed = True
        finally:
            METRICS.inc("lynkr_in_flight_streams", -1)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
            if not completed:
                req.log.setdefault("stream_error", "client_disconnected")
            self.finish(req, status, started)

    async def _abandoned(
        self, inner: AsyncIterator[bytes], req: Request, status: int, started: float
    ) -> None:
        """A stream whose response never got going (the client left before its headers): close what it
        holds (the upstream connection, the turn) and give back its slot."""
        if req.finished:
            return
        aclose = getattr(inner, "aclose", None)
        if aclose is not None:
            await aclose()
        req.log.setdefault("stream_error", "client_disconnected")
        self.finish(req, status, started)

    def finish(self, req: Request, status: int, started: float) -> None:
        if req.finished:
            return
        req.finished = True
        self.dashboard.finish(req, status, time.monotonic() - started)
        if req.counted:
            req.counted = False
            self.in_flight -= 1
            METRICS.set("lynkr_in_flight_requests", self.in_flight)
        route = req.route or "unmatched"
        provider, model = req.log.get("provider", ""), self.metric_model(req.log.get("model", ""))
        METRICS.inc(
            "lynkr_requests_total",
            route=route,
            method=req.method,
            status=status,
            provider=provider,
            model=model,
        )
        METRICS.observe("lynkr_request_duration_seconds", time.monotonic() - started, route=route)
        usage = req.log.get("usage")
        if isinstance(usage, dict):
            for direction, key in (
                ("input", "input_tokens"),
                ("output", "output_tokens"),
                ("cache_read", "cache_read_input_tokens"),
                ("cache_creation", "cache_creation_input_tokens"),
            ):
                if isinstance(usage.get(key), int) and usage[key]:
                    METRICS.inc(
                        "lynkr_tokens_total", usage[key], direction=direction, provider=provider, model=model
                    )
        self.access_log(req, status, started)

    def access_log(self, req: Request, status: int, started: float) -> None:
        fields: dict[str, Any] = {
            "request_id": req.request_id,
            "method": req.method,
            "path": req.path,
            "status": status,
            "latency_ms": round((time.monotonic() - started) * 1000, 2),
            "client": req.client,
        }
        usage = req.log.pop("usage", None) or {}
        fields.update({k: v for k, v in req.log.items() if v is not None})
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ):
            if isinstance(usage, dict) and usage.get(key) is not None:
                fields[key] = usage[key]
        if self.cfg.log_bodies and req.body:
            fields["body"] = req.body.decode("utf-8", errors="replace")
        self.log.info("request", **fields)


# == 20. App lifecycle ==


def return_freed_memory() -> None:
    """Compiling this file takes tens of MiB of parser memory (bench/README.md, Figures behind the
    code). Imported (`python -m lynkr`, the
    `lynkr` console script) it is freed once compiled, but glibc keeps it: hand it back to the OS.
    Run as a script (`python lynkr.py`) CPython keeps the script's syntax tree until exit, so there
    is nothing to return (see bench/README.md)."""
    if __spec__ is None or not sys.platform.startswith("linux"):  # a script; or no glibc to ask
        return
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (ImportError, OSError, AttributeError, TypeError):  # musl has no malloc_trim: nothing to do
        pass


def raise_open_file_limit() -> None:
    """Each stream holds two sockets; the common 1,024 soft limit caps us near 500 streams."""
    try:
        import resource  # POSIX only

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 65536
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, 1 << 20), hard))
    except (ImportError, ValueError, OSError):
        pass


def build_app(cfg: Config, log: Logger) -> App:
    """Wire every component from a validated Config. Raises ConfigError naming a bad variable."""
    client = HTTPClient(ProxySettings.from_environ(dict(os.environ)))
    provider = build_router(cfg, client, log)
    policy = Policy.from_config(cfg)
    cache = PromptCache(
        cfg.settings.prompt_cache_enabled,
        cfg.settings.prompt_cache_ttl_s,
        cfg.settings.prompt_cache_max_entries,
    )
    store = open_store(cfg, log)
    if cfg.settings.prompt_cache_backend == "postgres" and isinstance(store, PostgresStore):
        cache = SharedPromptCache(
            store, cfg.settings.prompt_cache_ttl_s, cfg.settings.prompt_cache_max_entries, log
        )
    db_files = [cfg.session_db_path + suffix for suffix in ("", "-wal", "-shm", "-journal")]
    private_dirs = [(cfg.data_dir, "LYNKR_DATA_DIR")]
    db_dir = os.path.realpath(os.path.dirname(os.path.abspath(cfg.session_db_path)))
    root = cfg.workspace_root
    if (
        os.path.commonpath([db_dir, root]) != db_dir
    ):  # its folder is private unless it holds the whole workspace
        private_dirs.append((db_dir, "SESSION_DB_PATH"))
    policy.sandbox, sandbox_note = resolve_sandbox(
        cfg.settings.policy_sandbox, cfg.settings.policy_sandbox_image
    )
    cfg.notices.append(sandbox_note)
    specs, manifests = discover_mcp_servers(cfg, log)
    private_files = [(f, "SESSION_DB_PATH") for f in db_files] + [(m, "an MCP manifest") for m in manifests]
    paths = WorkspacePaths(cfg.workspace_root, policy, private_dirs=private_dirs, private_files=private_files)
    sandbox = SandboxSettings.from_config(cfg)
    mcp = MCPManager(cfg, log, specs, sandbox) if specs else None
    tool_ctx = ToolContext(cfg, policy, paths, store, client, log, provider, mcp)
    return App(
        cfg, log, provider, Orchestrator(cfg, provider, policy, tool_ctx, cache, store, log, price_book(cfg))
    )


async def _index_in_background(app: App) -> None:
    """Keep the index and CLAUDE.md current for the session that is starting (never delays readiness)."""
    result = await run_tool(app.orchestrator.tool_ctx, "workspace_index_rebuild", {})
    app.log.info(
        "index updated" if not result.is_error else "index update failed", detail=result.text()[:500]
    )


def store_failure(store: Store | PostgresStore, cfg: Config, exc: BaseException) -> str:
    """The one line startup prints when the store cannot be opened."""
    if isinstance(store, PostgresStore):
        reason = exc.reason if isinstance(exc, StoreUnavailable) else error_line(exc)
        return f"cannot reach LYNKR_DATABASE_URL ({store.shown_url}): {scrub_url_secrets(reason, store.url)}"
    return f"cannot open SESSION_DB_PATH {cfg.session_db_path}: {exc}"


async def serve(app: App) -> int:
    cfg, log, provider = app.cfg, app.log, app.provider
    # Signals first: a SIGTERM while MCP servers are still starting must stop them, not orphan them.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
            pass
    mcp = app.orchestrator.tool_ctx.mcp
    server: HTTPServer | None = None
    try:
        try:
            await app.store.run(lambda db: None)  # open + migrate now: a broken database fails at startup
            provider.calibrations.update(await app.store.run(load_calibrations))
            if app.keys.enabled:  # loaded now: a request never waits for the first load
                await app.keys.reload()
        except Exception as exc:  # noqa: BLE001 - any failure to open the store is one line, no traceback
            print(f"lynkr: {store_failure(app.store, cfg, exc)}", file=sys.stderr)
            return 2
        if mcp is not None:
            starting = asyncio.ensure_future(mcp.start())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not starting.done():
                starting.cancel()
                log.info("stopped during startup")
                return 0
        header_timeout = cfg.settings.lynkr_header_timeout_s
        server = HTTPServer(app.handle, app.protocol_error_response, log, header_timeout)
        try:
            port = await server.start(cfg.host, cfg.port)
        except OSError as exc:
            print(
                f"lynkr: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc} (set LYNKR_PORT)",
                file=sys.stderr,
            )
            return 2
        for notice in cfg.notices:
            log.info("notice", detail=notice)
        if not provider.configured:
            log.warning(
                "no model provider configured; model calls answer 503 until it is",
                detail=provider.default.not_configured().message,
            )
        if not app.bound_to_loopback and not cfg.api_key and not app.keys.required:
            log.warning(
                "serving a non-loopback address without a client key (LYNKR_TRUSTED_NETWORK=true): "
                "anyone who reaches the port can use the providers and the tools",
                host=cfg.host,
            )
        shown_host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        app.ready = True
        log.info(
            "listening",
            url=f"http://{shown_host}:{port}",
            port=port,
            host=cfg.host,
            provider=provider.name,
            configured=provider.configured,
            providers=sorted(provider.providers),
            config=cfg.config_file or None,
            version=__version__,
            workspace=cfg.workspace_root,
        )
        if cfg.settings.lynkr_index_on_start:  # kept referenced while it runs; closing the index stops it
            app.background.add(asyncio.ensure_future(_index_in_background(app)))
        await stop.wait()
        app.draining = True  # /health/ready says so at once
        log.info("shutting down", in_flight=server.active_connections, grace_s=cfg.shutdown_grace_s)
        await server.shutdown(cfg.shutdown_grace_s)
        return 0
    finally:
        if app.orchestrator.tool_ctx.index is not None:
            app.orchestrator.tool_ctx.index.close()  # a rebuild still running stops instead of delaying exit
        if mcp is not None:
            await mcp.stop()
        app.orchestrator.tool_ctx.client.close()
        app.orchestrator.tool_ctx.executor.shutdown(wait=False, cancel_futures=True)
        await app.store.drain()  # a shared store's queued writes land first
        await loop.run_in_executor(None, app.store.close)
        if server is not None:
            log.info("stopped")


# == 21. CLI ==


def settings_help() -> str:
    """The settings reference, from the SETTINGS table (shown by --help; docs/configuration.md's copy is checked)."""
    return "\n".join(
        f"  {s.name:<30} {s.help}" + (f" [default: {s.default}]" if s.default else "") for s in SETTINGS
    )


SETTINGS_REFERENCE_BEGIN = "<!-- settings reference: generated from lynkr.py's SETTINGS table -->"
SETTINGS_REFERENCE_END = "<!-- end of settings reference -->"


def settings_markdown() -> str:
    """docs/configuration.md's reference table, from the SETTINGS table (a test keeps the file in step:
    regenerate it with `python lynkr.py --settings-reference`)."""
    rows = ["| Setting | Default | Meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "—"
        rows.append(f"| `{s.name}` | {default} | {s.help.replace('|', chr(92) + '|')} |")
    return "\n".join([SETTINGS_REFERENCE_BEGIN, *rows, SETTINGS_REFERENCE_END])


def build_arg_parser() -> argparse.ArgumentParser:
    epilog = (
        "settings (environment variables; also read from ./.env and the config file's [settings]):\n"
        + settings_help()
    )
    parser = argparse.ArgumentParser(
        prog="lynkr",
        allow_abbrev=False,  # `lynkr --env f claude ...` must not read --env as --env-file
        description="Anthropic Messages API gateway for the Claude Code CLI (Databricks, Claude on Azure, Anthropic, "
        "OpenAI, Azure OpenAI, OpenRouter, Ollama, Gemini, OpenAI-compatible servers).",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="start",
        choices=["start", "index", "doctor", "trust", "claude", "keys", "usage"],
        help="start (default): serve; index: update the repository index and CLAUDE.md, print a "
        "summary; doctor: show the providers and routes and check that each provider answers; "
        "trust [FILE...]: accept the current content of ./.env and ./lynkr.toml (or FILEs); "
        "claude [ARGS...]: run Claude Code through lynkr (a running lynkr on the port, or one started "
        "for the session), ARGS passed to it unchanged; keys create NAME | keys list | keys revoke NAME: "
        "personal keys; usage: spend per key, model, provider or day",
    )
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument(
        "--config", help="config file with providers and routes (LYNKR_CONFIG; default ./lynkr.toml)"
    )
    parser.add_argument("--host", help=f"address to bind (LYNKR_HOST, default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, help="port to listen on; 0 picks a free one (LYNKR_PORT)")
    parser.add_argument("--env-file", help="read settings from this file instead of ./.env")
    parser.add_argument("--version", action="version", version=f"lynkr {__version__}")
    keys = parser.add_argument_group("keys create")
    keys.add_argument("--budget-usd", metavar="USD/PERIOD", help="spend limit, e.g. 5/day, 20/week, 50/month")
    keys.add_argument("--models", metavar="GLOBS", help="models the key may use, comma list of globs")
    keys.add_argument("--rpm", type=int, help="requests per minute")
    usage = parser.add_argument_group("usage")
    usage.add_argument("--by", choices=sorted(USAGE_GROUPS), default="key", help="group by (default key)")
    usage.add_argument("--since", default="30d", help="how far back: 30m, 24h, 7d, 2w (default 30d)")
    parser.add_argument(
        "--settings-reference",
        action="store_true",
        help="print the settings reference (Markdown, as in docs/configuration.md) and exit",
    )
    return parser


def run_index_command(cfg: Config) -> int:
    """`lynkr index`: the same rebuild as workspace_index_rebuild, without a server."""
    policy = Policy.from_config(cfg)
    index = RepoIndex(
        cfg.workspace_root, os.path.join(cfg.data_dir, "index.db"), cfg.data_dir, policy_allows(policy)
    )
    try:
        stats = index.rebuild(timeout_s=index_timeout_s(cfg))
    except ToolFailed as exc:
        print(f"lynkr: {exc}", file=sys.stderr)
        return 1
    latest = None
    if cfg.settings.lynkr_database_url or os.path.exists(cfg.session_db_path):
        store = open_store(cfg)
        try:
            runs = store.call(_db_test_runs, 1)
            latest = runs[0] if runs else None
        except (sqlite3.Error, OSError, StoreUnavailable) as exc:
            print(f"lynkr: no test run in the summary: {store_failure(store, cfg, exc)}", file=sys.stderr)
        finally:
            store.close()
    summary = project_summary(index, latest, policy.coverage_files)
    if cfg.settings.lynkr_claude_md:
        try:
            write_claude_md(index.root, render_claude_md(summary))
        except ToolFailed as exc:
            print(f"lynkr: {exc}", file=sys.stderr)
    print(
        f"indexed {stats.files} files ({stats.parsed} parsed, {stats.deleted} removed) in {stats.seconds:g} s: "
        f"{stats.symbols} symbols, {stats.refs} references [{stats.parser}]"
    )
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


def run_trust_command(files: list[str]) -> int:
    """`lynkr trust [FILE...]`: default ./.env and ./lynkr.toml, whichever exist."""
    targets = files or [f for f in (".env", "lynkr.toml") if os.path.isfile(f)]
    missing = [f for f in targets if not os.path.isfile(f)]
    if missing or not targets:
        print(
            f"lynkr: nothing to trust: {', '.join(missing) or 'no ./.env or ./lynkr.toml here'}",
            file=sys.stderr,
        )
        return 2
    environ = dict(os.environ)
    for path in trust_files(targets, environ):
        print(
            f"trusted {path} as it is now (sha256 {file_digest(path)[:16]}…); a change needs `lynkr trust` again"
        )
    return 0


async def run_keys_command(cfg: Config, args: argparse.Namespace) -> int:
    """`lynkr keys create|list|revoke` and `lynkr usage`, on the session store (a running lynkr sees a
    new or revoked key within KEY_RELOAD_S)."""
    store = open_store(cfg)
    try:
        if args.command == "usage":
            rows = await store.run(usage_report, args.by, parse_since(args.since, time.time()))
            print(usage_table(rows, args.by))
            return 0
        action, *names = args.files or ["list"]
        if action == "list" and not names:
            for key in await store.run(load_keys):
                d = key.describe()
                print(
                    f"{d['name']:<24} {d['prefix']}…  {'revoked' if d['revoked'] else 'active ':<8} "
                    f"budget {d['budget'] or '-':<12} rpm {d['rpm'] or '-':<6} models {','.join(d['models']) or '*'}"
                )
            return 0
        if action == "create" and len(names) == 1:
            wanted = key_settings(
                {"name": names[0], "budget": args.budget_usd, "models": args.models or [], "rpm": args.rpm}
            )
            key = await store.change(
                create_key, wanted["name"], wanted["budget"], wanted["models"], wanted["rpm"]
            )
            print(key)
            print(f"lynkr: key {names[0]!r} created; it is shown only this once", file=sys.stderr)
            return 0
        if action == "revoke" and len(names) == 1:
            if not await store.change(revoke_key, names[0]):
                print(f"lynkr: no active key named {names[0]!r}", file=sys.stderr)
                return 1
            print(f"lynkr: key {names[0]!r} revoked", file=sys.stderr)
            return 0
        print(
            "lynkr: usage: lynkr keys create NAME [--budget-usd USD/PERIOD] [--models GLOBS] [--rpm N] | "
            "lynkr keys list | lynkr keys revoke NAME",
            file=sys.stderr,
        )
        return 2
    except InvalidRequest as exc:
        print(f"lynkr: {exc.message}", file=sys.stderr)
        return 2
    except (sqlite3.Error, OSError, StoreUnavailable) as exc:
        print(f"lynkr: {store_failure(store, cfg, exc)}", file=sys.stderr)
        return 2
    finally:
        await store.drain()
        store.close()


def usage_table(rows: list[dict[str, Any]], by: str) -> str:
    header = (by, "requests", "input", "output", "cache read", "cache write", "cost USD")
    lines = [
        [
            str(r[by]),
            str(r["requests"]),
            str(r["input_tokens"]),
            str(r["output_tokens"]),
            str(r["cache_read_tokens"]),
            str(r["cache_write_tokens"]),
            f"{r['cost_usd']:.4f}",
        ]
        for r in rows
    ]
    widths = [max([len(h), *(len(line[i]) for line in lines)]) for i, h in enumerate(header)]
    out = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    out += [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    return "\n".join(out)


async def run_doctor(app: App) -> int:
    """`lynkr doctor`: the resolved providers (keys masked) and routes, then one request to each."""
    router = app.provider
    where = app.cfg.config_file or "the environment (MODEL_PROVIDER, FALLBACK_PROVIDER)"
    print(f"lynkr {__version__}: providers from {where}")
    for provider in router.providers.values():
        d = provider.describe()
        print(
            f"  {d['name']}: {d['preset']} ({d['kind']} format) at {d['base_url'] or '(no URL)'}, key {d['key']}, "
            f"default model {d['default_model']}"
        )
    print("routes:")
    for route, target in router.routes.items():
        chain = router.fallbacks.get(route, router.fallbacks.get("default", ()))
        print(f"  {route:<13} -> {target}" + (f"  (fallback: {', '.join(map(str, chain))})" if chain else ""))
    if router.models.model_map:
        print("  map          : " + ", ".join(f"{glob}={target}" for glob, target in router.models.model_map))
    print("checks:")
    results = await asyncio.gather(*(check_provider(p) for p in router.providers.values()))
    app.orchestrator.tool_ctx.client.close()
    for provider, (ok, detail) in zip(router.providers.values(), results, strict=True):
        print(f"  {'OK  ' if ok else 'FAIL'} {provider.name}: {detail}")
    failed = [p.name for p, (ok, _) in zip(router.providers.values(), results, strict=True) if not ok]
    print(
        f"{len(results) - len(failed)} of {len(results)} providers answer"
        + (f"; failing: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


# -- `lynkr claude`: Claude Code through lynkr in one command --

CLAUDE_INSTALL_HINT = "npm install -g @anthropic-ai/claude-code (or set LYNKR_CLAUDE_BIN to its path)"
# lynkr's own options that take a value: `lynkr --port 9000 claude -p hi` passes `-p hi` on unchanged.
VALUE_OPTIONS = frozenset({"--config", "--host", "--port", "--env-file"})
CLAUDE_PROXY_START_S = 30.0  # how long a lynkr started for the session may take to become ready


def split_claude_command(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """`lynkr [OPTIONS] claude [ARGS...]` -> (lynkr's options, Claude Code's arguments, untouched);
    None for every other command."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "claude":
            return argv[:i], argv[i + 1 :]
        if not arg.startswith("-"):
            return None
        i += 2 if arg in VALUE_OPTIONS else 1
    return None


def probe_lynkr(port: int, api_key: str, timeout: float = 2.0) -> str:
    """What answers on 127.0.0.1:port: "lynkr" (its /health), "nothing", or "other"."""
    import http.client  # only `lynkr claude` asks

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/health", headers={"x-api-key": api_key} if api_key else {})
        resp = conn.getresponse()
        body = resp.read(65536)
    except ConnectionRefusedError:
        return "nothing"
    except OSError:
        return "other"
    finally:
        conn.close()
    try:
        health = json.loads(body)
    except ValueError:
        return "other"
    ours = resp.status == 200 and (resp.getheader("request-id") or "").startswith("req_")
    return "lynkr" if ours and isinstance(health, dict) and "status" in health else "other"


def start_session_proxy(
    options: list[str], port: int, api_key: str, log_path: str
) -> subprocess.Popen[bytes]:
    """A lynkr for this Claude Code session, in the background: its own session (a Ctrl-C meant for
    Claude Code does not stop it), its log in LYNKR_DATA_DIR. Returns once /health answers."""
    log_file = open(log_path, "ab")  # noqa: SIM115 -- the child writes it; closed below once it runs
    try:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *options, "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    finally:
        log_file.close()
    deadline = time.monotonic() + CLAUDE_PROXY_START_S
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the lynkr started for Claude Code exited ({proc.returncode}): {last_line(log_path)}"
                )
            if probe_lynkr(port, api_key, timeout=1.0) == "lynkr":
                return proc
            time.sleep(0.1)
        raise RuntimeError(
            f"the lynkr started for Claude Code did not answer within {CLAUDE_PROXY_START_S:.0f}s"
        )
    except BaseException:  # a failed start, or SIGTERM while waiting: it must not outlive us
        stop_session_proxy(proc)
        raise


def stop_session_proxy(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """SIGTERM: lynkr finishes what is in flight and flushes the session store, then exits."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def last_line(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - 4096))
            lines = fh.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1][:500] if lines else "(no output)"


def run_claude_command(options: list[str], claude_args: list[str]) -> int:
    """`lynkr claude [ARGS...]`: Claude Code through lynkr. Reuses a lynkr already answering on the
    configured port, or starts one for the session (stopped, its session flushed, when Claude Code
    exits); Claude Code gets the terminal, the arguments as given, and its exit status is ours."""
    args = build_arg_parser().parse_args(options)
    claude = os.environ.get("LYNKR_CLAUDE_BIN") or shutil.which("claude")
    if not claude:
        print(f"lynkr: Claude Code is not installed: {CLAUDE_INSTALL_HINT}", file=sys.stderr)
        return 127
    try:
        cfg = load_config(
            env_file=args.env_file, cli_host=args.host, cli_port=args.port, config_file=args.config
        )
        prepare_data_dir(cfg.data_dir)
    except ConfigError as exc:
        print(f"lynkr: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"lynkr: cannot create LYNKR_DATA_DIR: {exc}", file=sys.stderr)
        return 2
    port = cfg.port or free_local_port()
    found = probe_lynkr(port, cfg.api_key) if cfg.port else "nothing"
    if found == "other":
        print(f"lynkr: port {port} answers, but not as lynkr: set LYNKR_PORT to a free port", file=sys.stderr)
        return 2
    log_path = os.path.join(cfg.data_dir, "claude-session.log")
    env = {
        **os.environ,
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}",
        # lynkr holds the provider keys; Claude Code needs only one lynkr accepts (any, on loopback).
        "ANTHROPIC_API_KEY": cfg.api_key or "lynkr-local",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }

    def leave(signum: int, _frame: Any) -> None:  # a closed terminal, a kill: stop what we started first
        raise SystemExit(128 + signum)

    # Ctrl-C is Claude Code's: a handler of ours (not SIG_IGN, which Claude Code would inherit) keeps
    # this process alive while the terminal's SIGINT reaches Claude Code.
    previous = {
        sig: signal.signal(sig, handler)
        for sig, handler in (
            (signal.SIGINT, lambda signum, frame: None),
            (signal.SIGTERM, leave),
            (signal.SIGHUP, leave),
        )
    }
    started: subprocess.Popen[bytes] | None = None
    status = 127
    try:
        if found == "nothing":
            try:
                started = start_session_proxy(options, port, cfg.api_key, log_path)
            except RuntimeError as exc:
                print(f"lynkr: {exc}", file=sys.stderr)
                return 2
        try:
            status = subprocess.call([claude, *claude_args], env=env)
        except OSError as exc:
            print(
                f"lynkr: cannot run {claude}: {exc.strerror or exc}; {CLAUDE_INSTALL_HINT}", file=sys.stderr
            )
        if started is not None and started.poll() is not None:
            print(
                f"lynkr: the lynkr started for this session exited early ({started.returncode}); "
                f"its log: {log_path}",
                file=sys.stderr,
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if started is not None:
            stop_session_proxy(started, cfg.shutdown_grace_s + 10)
    return status if status >= 0 else 128 - status


def free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    claude = split_claude_command(argv)
    if claude is not None:
        return run_claude_command(*claude)
    args = build_arg_parser().parse_args(argv)
    if args.settings_reference:
        print(settings_markdown())
        return 0
    if args.command == "trust":
        return run_trust_command(args.files)
    if args.files and args.command != "keys":
        print(f"lynkr: unexpected arguments: {' '.join(args.files)}", file=sys.stderr)
        return 2
    if h11 is None:
        print("lynkr: the h11 package is required: pip install 'h11>=0.16'", file=sys.stderr)
        return 2
    if args.port is not None and not 0 <= args.port <= 65535:
        print(f"lynkr: --port must be between 0 and 65535 (got {args.port})", file=sys.stderr)
        return 2
    try:
        cfg = load_config(
            env_file=args.env_file, cli_host=args.host, cli_port=args.port, config_file=args.config
        )
        log = Logger(cfg.log_format, cfg.log_level)
        app = build_app(cfg, log)
        prepare_data_dir(cfg.data_dir)
    except ConfigError as exc:
        print(f"lynkr: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"lynkr: cannot create LYNKR_DATA_DIR: {exc}", file=sys.stderr)
        return 2
    if args.command == "index":
        return run_index_command(cfg)
    if args.command in ("keys", "usage"):
        return asyncio.run(run_keys_command(cfg, args))
    if args.command == "doctor":
        return asyncio.run(run_doctor(app))
    raise_open_file_limit()
    return_freed_memory()
    # The cyclic GC only ever finds a few cycles here, but with its default threshold it ran every
    # ~700 allocations and walked every live object, startup's included: A/B, 3-5 % of CPU per request.
    gc.freeze()
    gc.set_threshold(20000, 20, 20)
    try:
        return asyncio.run(serve(app))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


if __name__ == "__main__":
    sys.exit(main())
