#!/usr/bin/env python3
# /// script
# requires-python = ">=3.10"
# dependencies = ["h11>=0.16"]
# ///
"""Lynkr: a self-hosted Anthropic Messages API backend for the Claude Code CLI, in one file.

Point the unmodified Claude Code CLI (or an Anthropic SDK, or curl) at it with
``ANTHROPIC_BASE_URL=http://127.0.0.1:8080`` and it forwards every ``/v1/messages``
call -- streaming or not, with tools -- to the model provider you have:

* ``databricks`` (default): a Databricks model-serving endpoint, translated losslessly to and
  from the OpenAI chat format, or passed through natively with ``DATABRICKS_API_FORMAT=anthropic``;
* ``azure-anthropic``: Claude on Azure (Microsoft Foundry), native Messages pass-through.

Start it with ``python lynkr.py`` (needs only ``h11``), ``pipx run lynkr.py``, or the ``lynkr``
console script. ``python lynkr.py --help`` lists the options; every environment variable is
documented in the ``CONFIG_KEYS`` table of section 5 and in the README.

Sections (``grep -n '^# == ' lynkr.py`` prints this map; each section uses only those above it):

    0. Header          docstring, version, imports
    1. Constants       limits and defaults, each with its reason
    2. Errors          one LynkrError family -> Anthropic error JSON
    3. Core types      Config, Request, Response
    4. Utilities       JSON, ids, SSE encode/parse, logging
    5. Config          environment + .env -> validated Config
    6. HTTP server     asyncio + h11: keep-alive, limits, backpressure, graceful shutdown
    7. Outbound client pooled h11 connections over asyncio (+TLS, +CONNECT proxy), streaming bodies
    8. Translation     pure functions: request validation, Anthropic <-> OpenAI chat, token estimate
    9. Streaming       incremental upstream stream -> Anthropic SSE state machines, pings
   10. Providers       PROVIDERS registry: databricks, azure-anthropic
   11. API routes      ROUTES registry; the one place errors become responses
   12. App lifecycle   wiring, signals, startup and shutdown
   13. CLI             main(argv) and the __main__ guard
"""

# == 0. Header ==

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import http
import ipaddress
import json
import math
import os
import re
import secrets
import signal
import socket
import ssl
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

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
# Claude Code's largest explicit budget; adaptive thinking is mapped to at most this.
MAX_ADAPTIVE_THINKING_BUDGET = 31999
# Token estimate: ~3 bytes per token errs high for English and code (real is ~3.5-4).
ESTIMATE_BYTES_PER_TOKEN = 3.0
# Anthropic bills an image at most ~1,600 tokens (1092x1092); count the maximum to err high.
ESTIMATE_TOKENS_PER_IMAGE = 1600
ESTIMATE_TOKENS_PER_MESSAGE = 4
# Claude Code's first system block changes on every request; it is metadata, not prompt.
BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"
# Only these prefixes are read from a .env file: it usually belongs to the user's own app.
DOTENV_PREFIXES = (
    "MODEL_", "DATABRICKS_", "AZURE_", "PROMPT_CACHE_", "POLICY_", "MCP_",
    "WORKSPACE_", "WEB_", "SESSION_", "LOG_", "LYNKR_", "STREAM_", "UPSTREAM_", "SHUTDOWN_",
)
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
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workspace_root: str = "."
    data_dir: str = ".lynkr"
    session_db_path: str = ""
    api_key: str = ""
    allowed_hosts: tuple[str, ...] = ()
    provider: str = "databricks"
    model_default: str = ""
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
    # Every lynkr setting by its environment name (validated strings), for providers to read.
    env: dict[str, str] = field(default_factory=dict)
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


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # When set, the body is streamed chunk by chunk (chunked transfer encoding).
    stream: AsyncIterator[bytes] | None = None


# == 4. Utilities ==


def json_dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def json_bytes(obj: Any) -> bytes:
    return json_dumps(obj).encode()


def new_id(prefix: str, nbytes: int = 12) -> str:
    return f"{prefix}{secrets.token_hex(nbytes)}"


def json_response(status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, [("content-type", "application/json"), *headers], json_bytes(obj))


def sse_event(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json_dumps(data)}\n\n".encode()


PING_EVENT = b'event: ping\ndata: {"type":"ping"}\n\n'


class SSEParser:
    """Incremental Server-Sent Events parser, robust to input split at any byte.

    feed() returns complete events as (event_name, data_text). Handles LF, CRLF and CR line
    endings, multi-line data, comments, and events without an `event:` line (name "message").
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        self._buffer += chunk
        events: list[tuple[str, str]] = []
        while True:
            # Find the next line terminator; a lone trailing CR may be half of a CRLF, so wait.
            idx_n = self._buffer.find(b"\n")
            idx_r = self._buffer.find(b"\r")
            if idx_r != -1 and (idx_n == -1 or idx_r < idx_n):
                if idx_r == len(self._buffer) - 1:
                    break
                end, skip = idx_r, 2 if self._buffer[idx_r + 1 : idx_r + 2] == b"\n" else 1
            elif idx_n != -1:
                end, skip = idx_n, 1
            else:
                break
            raw_line, self._buffer = self._buffer[:end], self._buffer[end + skip :]
            line = raw_line.decode("utf-8", errors="replace")
            if not line:
                if self._data or self._event:
                    events.append((self._event or "message", "\n".join(self._data)))
                self._event, self._data = "", []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "event":
                self._event = value
            elif name == "data":
                self._data.append(value)
        return events

    def flush(self) -> list[tuple[str, str]]:
        """Events left at end of stream without a final blank line."""
        events = self.feed(b"\n\n") if (self._buffer.strip() or self._data) else []
        self._buffer = b""
        return events


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
            self.stream.write(line + "\n")
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


def parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false (got {value!r})")


# == 5. Config ==

# Every environment variable lynkr reads: name -> (default, meaning). The README mirrors this table.
CONFIG_KEYS: dict[str, tuple[str, str]] = {
    "LYNKR_HOST": (DEFAULT_HOST, "Address to bind. Anything but loopback requires LYNKR_API_KEY."),
    "LYNKR_PORT": ("", f"Port to listen on (else PORT from the real environment, else {DEFAULT_PORT})."),
    "LYNKR_API_KEY": ("", "Client key required on every request (x-api-key or Authorization: Bearer)."),
    "LYNKR_ALLOWED_HOSTS": ("", "Extra Host/Origin names accepted besides loopback (comma list)."),
    "LYNKR_DATA_DIR": ("", "State directory (SQLite files); default <WORKSPACE_ROOT>/.lynkr/."),
    "SESSION_DB_PATH": ("", "Session store file; default sessions.db in LYNKR_DATA_DIR."),
    "WORKSPACE_ROOT": ("", "The workspace lynkr serves; default the current directory."),
    "MODEL_PROVIDER": ("databricks", "databricks | azure-anthropic."),
    "MODEL_DEFAULT": ("", "Upstream model/endpoint for names MODEL_MAP does not match."),
    "MODEL_MAP": ("", "Comma list of glob=target (first match wins), e.g. claude-*haiku*=my-haiku."),
    "MODEL_MAX_TOKENS": ("", "Comma list of glob=N caps on max_tokens, matched on the client's model name."),
    "MODEL_MAX_TOKENS_DEFAULT": (str(DEFAULT_MAX_TOKENS), "max_tokens for requests that omit it."),
    "DATABRICKS_API_BASE": ("", "Workspace URL, e.g. https://adb-123.azuredatabricks.net."),
    "DATABRICKS_API_KEY": ("", "Personal access token or OAuth token (sent as Bearer)."),
    "DATABRICKS_ENDPOINT_PATH": ("", "Pin one path for every model, e.g. /serving-endpoints/x/invocations."),
    "DATABRICKS_API_FORMAT": ("openai", "openai (serving endpoints) | anthropic (AI Gateway pass-through)."),
    "AZURE_ANTHROPIC_ENDPOINT": ("", "https://<resource>.services.ai.azure.com/anthropic/v1/messages."),
    "AZURE_ANTHROPIC_API_KEY": ("", "Foundry API key (sent as x-api-key and api-key)."),
    "AZURE_ANTHROPIC_VERSION": (ANTHROPIC_VERSION_DEFAULT, "anthropic-version when the client sends none."),
    "STREAM_PING_INTERVAL_MS": ("15000", "Send an SSE ping after this much upstream silence."),
    "UPSTREAM_CONNECT_TIMEOUT_MS": ("10000", "Upstream TCP+TLS connect timeout."),
    "UPSTREAM_READ_TIMEOUT_MS": ("600000", "Longest upstream silence before timeout_error."),
    "SHUTDOWN_GRACE_MS": ("10000", "On SIGTERM, how long in-flight requests may finish."),
    "LOG_FORMAT": ("json", "json | text."),
    "LOG_LEVEL": ("info", "debug | info | warning | error."),
    "LOG_BODIES": ("false", "Log request bodies (prompts!). Keys are never logged."),
}

PROVIDER_DEFAULT_MODELS = {"databricks": "databricks-claude-sonnet-4-5", "azure-anthropic": "claude-sonnet-4-5"}


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
        if key.startswith(DOTENV_PREFIXES):
            values[key] = value
    return values, notices


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
        upper = f" and {maximum}" if maximum is not None else ""
        raise ConfigError(f"{name} must be between {minimum}{upper} (got {number})")
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


def load_config(
    environ: dict[str, str] | None = None,
    env_file: str | None = None,
    cli_host: str | None = None,
    cli_port: int | None = None,
) -> Config:
    """Environment + .env -> validated Config. Raises ConfigError naming the bad variable."""
    real_env = dict(os.environ if environ is None else environ)
    explicit_file = env_file is not None
    dotenv_path = env_file or os.path.join(os.getcwd(), ".env")
    if explicit_file and not os.path.isfile(dotenv_path):
        raise ConfigError(f"--env-file {dotenv_path} does not exist")
    dotenv, notices = read_dotenv(dotenv_path)
    merged = {**dotenv, **{k: v for k, v in real_env.items() if k in CONFIG_KEYS}}

    def get(name: str) -> str:
        value = merged.get(name, "")
        return value if value.strip() else CONFIG_KEYS[name][0]

    cfg = Config(notices=notices)
    cfg.host = cli_host or get("LYNKR_HOST")
    if cli_port is not None:
        cfg.port = cli_port
    elif get("LYNKR_PORT"):
        cfg.port = parse_int_setting("LYNKR_PORT", get("LYNKR_PORT"), 0, 65535)
    elif real_env.get("PORT", "").strip():
        cfg.port = parse_int_setting("PORT", real_env["PORT"], 0, 65535)
    cfg.api_key = get("LYNKR_API_KEY")
    cfg.allowed_hosts = tuple(h.strip().lower() for h in get("LYNKR_ALLOWED_HOSTS").split(",") if h.strip())
    if not is_loopback_host(cfg.host) and not cfg.api_key:
        raise ConfigError(
            f"LYNKR_API_KEY must be set to bind {cfg.host} (not loopback): clients then send it as x-api-key"
        )
    cfg.workspace_root = os.path.abspath(get("WORKSPACE_ROOT") or os.getcwd())
    if not os.path.isdir(cfg.workspace_root):
        raise ConfigError(f"WORKSPACE_ROOT must be an existing directory (got {cfg.workspace_root!r})")
    cfg.data_dir = os.path.abspath(get("LYNKR_DATA_DIR") or os.path.join(cfg.workspace_root, ".lynkr"))
    cfg.session_db_path = get("SESSION_DB_PATH") or os.path.join(cfg.data_dir, "sessions.db")
    cfg.provider = get("MODEL_PROVIDER").strip().lower()
    cfg.model_default = get("MODEL_DEFAULT") or PROVIDER_DEFAULT_MODELS.get(cfg.provider, "")
    cfg.model_map = tuple(parse_glob_pairs("MODEL_MAP", get("MODEL_MAP")))
    caps = parse_glob_pairs("MODEL_MAX_TOKENS", get("MODEL_MAX_TOKENS"))
    cfg.model_max_tokens = tuple((g, parse_int_setting("MODEL_MAX_TOKENS", n, 1)) for g, n in caps)
    cfg.max_tokens_default = parse_int_setting("MODEL_MAX_TOKENS_DEFAULT", get("MODEL_MAX_TOKENS_DEFAULT"), 1)
    cfg.log_format = get("LOG_FORMAT").strip().lower()
    if cfg.log_format not in ("json", "text"):
        raise ConfigError(f"LOG_FORMAT must be json or text (got {cfg.log_format!r})")
    cfg.log_level = get("LOG_LEVEL").strip().lower()
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)} (got {cfg.log_level!r})")
    cfg.log_bodies = parse_bool("LOG_BODIES", get("LOG_BODIES"))
    cfg.stream_ping_interval_s = parse_int_setting("STREAM_PING_INTERVAL_MS", get("STREAM_PING_INTERVAL_MS"), 1) / 1000
    cfg.upstream_connect_timeout_s = (
        parse_int_setting("UPSTREAM_CONNECT_TIMEOUT_MS", get("UPSTREAM_CONNECT_TIMEOUT_MS"), 1) / 1000
    )
    cfg.upstream_read_timeout_s = parse_int_setting("UPSTREAM_READ_TIMEOUT_MS", get("UPSTREAM_READ_TIMEOUT_MS"), 1) / 1000
    cfg.shutdown_grace_s = parse_int_setting("SHUTDOWN_GRACE_MS", get("SHUTDOWN_GRACE_MS"), 0) / 1000
    cfg.env = {name: get(name) for name in CONFIG_KEYS}
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


class HTTPServer:
    def __init__(self, handler: Handler, error_responder: ErrorResponder, log: Logger) -> None:
        self.handler = handler
        self.error_responder = error_responder  # (status, type, message) -> Response, for protocol errors
        self.log = log
        self.draining = False
        self._server: asyncio.base_events.Server | None = None
        self._connections: dict[asyncio.Task[Any], _ConnectionState] = {}

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._on_connect, host, port, limit=READ_CHUNK_BYTES, backlog=1024)
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
        except Exception as exc:  # a bug: log it once, drop only this connection
            self.log.error("connection failed", client=client, error=repr(exc))
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _receive(self, conn: h11.Connection, reader: asyncio.StreamReader, timeout: float) -> None:
        try:
            data = await asyncio.wait_for(reader.read(READ_CHUNK_BYTES), timeout)
        except asyncio.TimeoutError:
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
                    deadline = time.monotonic() + HEADER_READ_TIMEOUT_S
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
            request = self._make_request(event, client)
            try:
                declared = int(request.headers.get("content-length", "0") or 0)
            except ValueError:
                declared = 0
            try:
                if declared > MAX_REQUEST_BODY_BYTES:
                    raise RequestTooLarge(f"request body exceeds {MAX_REQUEST_BODY_BYTES} bytes (32 MiB)")
                body = await self._read_body(conn, reader)
            except RequestTooLarge as exc:
                await self._send(conn, writer, request, self.error_responder(413, exc.error_type, exc.message))
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
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        target = urllib.parse.urlsplit(event.target.decode("latin-1"))
        query = dict(urllib.parse.parse_qsl(target.query, keep_blank_values=True))
        return Request(event.method.decode("ascii").upper(), target.path or "/", query, headers, b"", client)

    async def _send_protocol_error(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response = self.error_responder(status, error_type_for_status(status), f"malformed HTTP request: {message}")
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
            out = conn.send(h11.Response(status_code=response.status, headers=headers,
                                         reason=_reason_phrase(response.status)))
            if request.method != "HEAD" and response.body:
                out += conn.send(h11.Data(data=response.body))
            out += conn.send(h11.EndOfMessage())
            writer.write(out)
            await writer.drain()
            return
        stream = response.stream
        try:
            writer.write(conn.send(h11.Response(status_code=response.status, headers=headers,
                                                reason=_reason_phrase(response.status))))
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


class UpstreamResponse:
    """Status and headers of an upstream answer; the body is read incrementally."""

    def __init__(self, client: HTTPClient, key: tuple[str, str, int], conn: _UpstreamConnection,
                 status: int, headers: dict[str, str], read_timeout: float, origin: str) -> None:
        self._client = client
        self._key = key
        self._conn: _UpstreamConnection | None = conn
        self.status = status
        self.headers = headers
        self.read_timeout = read_timeout
        self.origin = origin

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Yield body bytes as they arrive. Raises UpstreamTimeout/UpstreamUnavailable."""
        conn = self._conn
        if conn is None:
            return
        while True:
            try:
                event = conn.h11.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(conn.reader.read(READ_CHUNK_BYTES), self.read_timeout)
                    conn.h11.receive_data(data)
                    continue
            except asyncio.TimeoutError:
                self._discard()
                raise UpstreamTimeout(
                    f"upstream {self.origin} sent nothing for {self.read_timeout:g} s (UPSTREAM_READ_TIMEOUT_MS)"
                ) from None
            except (h11.RemoteProtocolError, ConnectionError, OSError) as exc:
                self._discard()
                raise UpstreamUnavailable(f"upstream {self.origin} broke off the response: {exc}") from None
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._release()
                return
            elif isinstance(event, h11.ConnectionClosed):
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
        self._pools: dict[tuple[str, str, int], list[_UpstreamConnection]] = {}
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
    ) -> UpstreamResponse:
        parts = urllib.parse.urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        key = (scheme, host, port)
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
                conn.writer.write(conn.h11.send(h11.Request(method=method, target=target, headers=all_headers)))
                if body:
                    conn.writer.write(conn.h11.send(h11.Data(data=body)))
                conn.writer.write(conn.h11.send(h11.EndOfMessage()))
                await conn.writer.drain()
                event = await self._read_head(conn, read_timeout)
            except asyncio.TimeoutError:
                conn.close()
                raise UpstreamTimeout(
                    f"upstream {origin} did not answer within {read_timeout:g} s (UPSTREAM_READ_TIMEOUT_MS)"
                ) from None
            except (h11.RemoteProtocolError, h11.LocalProtocolError, ConnectionError, OSError) as exc:
                conn.close()
                if reused and attempt == 0:
                    continue  # a stale keep-alive connection; the server never saw a full request
                raise UpstreamUnavailable(f"upstream {origin} closed the connection: {exc or type(exc).__name__}") from None
            resp_headers: dict[str, str] = {}
            for raw_name, raw_value in event.headers:
                name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
                resp_headers[name] = f"{resp_headers[name]}, {value}" if name in resp_headers else value
            return UpstreamResponse(self, key, conn, event.status_code, resp_headers, read_timeout, origin)
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
        self, key: tuple[str, str, int], proxy: str, timeout: float, origin: str
    ) -> tuple[_UpstreamConnection, bool]:
        pool = self._pools.get(key, [])
        while pool:
            conn = pool.pop()
            if conn.usable():
                return conn, True
            conn.close()
        scheme, host, port = key
        ctx = self.ssl_context() if scheme == "https" else None
        try:
            if not proxy:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, ssl=ctx, server_hostname=host if ctx else None,
                                            limit=READ_CHUNK_BYTES),
                    timeout,
                )
            elif ctx is not None:
                sock = await asyncio.wait_for(self._tunnel(proxy, host, port), timeout)
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=host, limit=READ_CHUNK_BYTES), timeout
                )
            else:
                pparts = urllib.parse.urlsplit(proxy)
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(pparts.hostname, pparts.port or 80, limit=READ_CHUNK_BYTES), timeout
                )
        except asyncio.TimeoutError:
            raise UpstreamTimeout(
                f"connecting to {origin} timed out after {timeout:g} s (UPSTREAM_CONNECT_TIMEOUT_MS)"
            ) from None
        except ssl.SSLError as exc:
            raise UpstreamUnavailable(f"TLS with {origin} failed: {exc.reason or exc} (see SSL_CERT_FILE)") from None
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

                creds = f"{urllib.parse.unquote(pparts.username)}:{urllib.parse.unquote(pparts.password or '')}"
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

    def _release(self, key: tuple[str, str, int], conn: _UpstreamConnection) -> None:
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            conn.idle_since = time.monotonic()
            pool = self._pools.setdefault(key, [])
            if len(pool) < MAX_IDLE_UPSTREAM_CONNECTIONS:
                pool.append(conn)
                return
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
        out = {"name": fn["name"], "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
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
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
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
        if kind == "tool_use" and (not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str)):
            raise InvalidRequest(f"{path}.{i}: tool_use needs string id and name")
        if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
            raise InvalidRequest(f"{path}.{i}.tool_use_id: required string")


def validate_messages_request(body: Any, default_max_tokens: int, *, count_only: bool = False) -> dict[str, Any]:
    """Check an incoming /v1/messages body; returns a normalized shallow copy. Unknown fields pass."""
    if not isinstance(body, dict):
        raise _field_error("body", "a JSON object", body)
    req = dict(body)
    model = req.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("model: required string")
    messages = req.get("messages")
    if not isinstance(messages, list):
        raise _field_error("messages", "a list", messages) if "messages" in req else InvalidRequest(
            "messages: field required"
        )
    if not messages:
        raise InvalidRequest("messages: at least one message is required")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _field_error(f"messages.{i}", "an object", msg)
        if msg.get("role") not in MESSAGE_ROLES:
            raise InvalidRequest(f"messages.{i}.role: expected 'user' or 'assistant', got {msg.get('role')!r}")
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
                if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
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
    """MODEL_MAP globs (first match wins) -> upstream target; MODEL_MAX_TOKENS caps."""

    def __init__(self, model_map: Iterable[tuple[str, str]], default: str, caps: Iterable[tuple[str, int]]) -> None:
        self.model_map = tuple(model_map)
        self.default = default
        self.caps = tuple(caps)

    def target(self, model: str) -> str:
        lowered = model.lower()
        for glob, target in self.model_map:
            if fnmatch.fnmatchcase(lowered, glob):
                return target
        return self.default or model

    def clamp_max_tokens(self, model: str, max_tokens: int) -> int:
        """MODEL_MAX_TOKENS globs match the client's model name or the upstream target; then the
        built-in output limits of known Claude models apply to the target (Claude Code asks up to 128000)."""
        target = self.target(model).lower()
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
    """Move `role:"system"` entries of `messages` into top-level `system` (upstreams reject them)."""
    if not any(m.get("role") == "system" for m in req["messages"]):
        return req
    system = req.get("system")
    blocks = [{"type": "text", "text": system}] if isinstance(system, str) and system else list(system or [])
    messages = []
    for msg in req["messages"]:
        if msg.get("role") == "system":
            blocks.extend(_text_blocks(msg.get("content")))
        else:
            messages.append(msg)
    out = {**req, "messages": messages}
    if blocks:
        out["system"] = blocks
    if not messages:
        raise InvalidRequest("messages: at least one user or assistant message is required")
    return out


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
        return [{"type": "image_url", "image_url": {"url": _image_url(block.get("source") or {})}}]
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
                images.append({"type": "image_url", "image_url": {"url": _image_url(inner.get("source") or {})}})
            else:
                texts.extend(p["text"] for p in _user_parts(inner) if p.get("type") == "text")
    text = "\n".join(t for t in texts if t)
    if block.get("is_error"):
        text = f"[tool error] {text}" if text else "[tool error]"
    return text or "(no output)", images


def _assistant_to_openai(content: Any) -> dict[str, Any] | None:
    if isinstance(content, str):
        return {"role": "assistant", "content": content} if content else None
    texts: list[str] = []
    reasoning: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            texts.append(block["text"])
        elif kind == "thinking" and block.get("thinking"):
            item = {"type": "summary_text", "text": block["thinking"]}
            if block.get("signature"):
                item["signature"] = block["signature"]
            reasoning.append(item)
        elif kind == "tool_use":
            tool_calls.append({
                "id": sanitize_tool_id(block["id"]),
                "type": "function",
                "function": {"name": block["name"], "arguments": json_dumps(block.get("input") or {})},
            })
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
    for msg in req["messages"]:
        if msg.get("role") == "system":
            blocks.extend(_text_blocks(msg.get("content")))
    return [_text_part(b["text"], b) for b in blocks if b.get("text")]


def anthropic_messages_to_openai(req: dict[str, Any]) -> list[dict[str, Any]]:
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
            converted = _assistant_to_openai(content)
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
                    out.append({"role": "tool", "tool_call_id": call_id, "content": text})
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


def _openai_tool(tool: dict[str, Any]) -> dict[str, Any]:
    schema = dict(tool.get("input_schema") or {"type": "object", "properties": {}})
    schema.pop("$schema", None)
    fn: dict[str, Any] = {"name": tool["name"], "parameters": schema}
    fn["description"] = tool.get("description") or tool["name"]
    return {"type": "function", "function": fn}


TOOL_CHOICE_TO_OPENAI: dict[str, Callable[[dict[str, Any]], Any]] = {
    "auto": lambda c: "auto",
    "any": lambda c: "required",
    "none": lambda c: "none",
    "tool": lambda c: {"type": "function", "function": {"name": c["name"]}},
}


def openai_thinking(req: dict[str, Any], max_tokens: int) -> dict[str, Any] | None:
    """Anthropic thinking -> the object Databricks accepts (enabled + budget below max_tokens)."""
    thinking = req.get("thinking") or {}
    kind = thinking.get("type")
    choice = (req.get("tool_choice") or {}).get("type")
    if kind not in ("enabled", "adaptive") or choice in ("any", "tool"):
        return None  # thinking cannot be combined with a forced tool
    if kind == "adaptive":
        budget = min(max_tokens // 2, MAX_ADAPTIVE_THINKING_BUDGET)
    else:
        budget = thinking.get("budget_tokens")
        budget = min(budget, max_tokens - 1) if isinstance(budget, int) and not isinstance(budget, bool) else 0
    return {"type": "enabled", "budget_tokens": budget} if budget >= MIN_THINKING_BUDGET else None


def anthropic_to_openai(req: dict[str, Any], max_tokens: int) -> tuple[dict[str, Any], list[str]]:
    """Build an OpenAI chat body. Returns (body, names of typed server tools dropped)."""
    body: dict[str, Any] = {"messages": anthropic_messages_to_openai(req), "max_tokens": max_tokens}
    dropped: list[str] = []
    tools = []
    for tool in req.get("tools") or []:
        if is_server_typed_tool(tool):
            dropped.append(f"{tool.get('name')} ({tool.get('type')})")
        else:
            tools.append(_openai_tool(tool))
    choice = req.get("tool_choice")
    if tools:
        body["tools"] = tools
        if choice:
            body["tool_choice"] = TOOL_CHOICE_TO_OPENAI[choice["type"]](choice)
            if choice.get("disable_parallel_tool_use"):
                body["parallel_tool_calls"] = False
    if req.get("stop_sequences"):
        body["stop"] = list(req["stop_sequences"])
    for name in ("temperature", "top_p", "top_k"):
        if req.get(name) is not None:
            body[name] = req[name]
    thinking = openai_thinking(req, max_tokens)
    if thinking:
        body["thinking"] = thinking
        body.pop("temperature", None)  # Claude rejects temperature/top_k with thinking on
        body.pop("top_k", None)
    if req.get("stream"):
        body["stream"] = True
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
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or usage.get("cache_read_input_tokens") or 0)
    created = int(usage.get("cache_creation_input_tokens") or 0)
    # Anthropic's input_tokens excludes cache reads; OpenAI's prompt_tokens includes them.
    return {
        "input_tokens": max(prompt - cached, 0) if "prompt_tokens" in usage else prompt,
        "output_tokens": int(usage.get("completion_tokens") or usage.get("output_tokens") or 0),
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": cached,
    }


def stop_reason_for(finish_reason: Any, has_tool_calls: bool, text: str, stops: list[str]) -> tuple[str, str | None]:
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
    reasoning_text = message.get("reasoning_content")
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
                    blocks.append({"type": "thinking", "thinking": item.get("text", ""),
                                   "signature": item.get("signature", "")})
            elif part.get("type") == "text" and part.get("text"):
                texts.append(part["text"])
                blocks.append({"type": "text", "text": part["text"]})
    tool_calls = message.get("tool_calls") or []
    for call in tool_calls:
        fn = call.get("function") or {}
        blocks.append({
            "type": "tool_use",
            "id": sanitize_tool_id(str(call.get("id") or "")) if call.get("id") else new_id("toolu_"),
            "name": fn.get("name", ""),
            "input": parse_tool_arguments(fn.get("arguments")),
        })
    stop_reason, stop_sequence = stop_reason_for(choice.get("finish_reason"), bool(tool_calls), "".join(texts), stops or [])
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": openai_usage_to_anthropic(resp.get("usage")),
    }


# -- Token estimate (count_tokens where the upstream cannot count) --


def estimate_input_tokens(req: dict[str, Any]) -> int:
    """Errs high: an undercount breaks Claude Code's context compaction, an overcount only compacts early."""
    text_bytes = 0
    images = 0

    def walk(value: Any) -> None:
        nonlocal text_bytes, images
        if isinstance(value, str):
            text_bytes += len(value.encode("utf-8"))
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            if value.get("type") == "image":
                images += 1
                return
            for key, item in value.items():
                if key not in ("type", "cache_control", "signature"):
                    walk(item)

    walk(req.get("system"))
    walk(req.get("messages"))
    if req.get("tools"):
        text_bytes += len(json_dumps(req["tools"]).encode())
    tokens = math.ceil(text_bytes / ESTIMATE_BYTES_PER_TOKEN)
    tokens += images * ESTIMATE_TOKENS_PER_IMAGE + ESTIMATE_TOKENS_PER_MESSAGE * len(req.get("messages") or [])
    return max(tokens, 1)


# == 9. Streaming ==
#
# Theory of operation: an upstream body is an async iterator of byte chunks split anywhere.
# `with_silence_ticks` interleaves None ticks during upstream silence (turned into `ping`s).
# SSEParser (section 4) cuts events out of the bytes; a translator turns each event into
# Anthropic SSE bytes at once, so every upstream chunk is written before the next is read.
# A stream that fails after its 200 ends with `event: error`, never with a fake message_stop.


def error_event(exc: LynkrError) -> bytes:
    return sse_event("error", {"type": "error", "error": {"type": exc.error_type, "message": exc.message}})


async def with_silence_ticks(source: AsyncIterator[bytes], interval: float) -> AsyncIterator[bytes | None]:
    """Yield the source's chunks, and None each time `interval` seconds pass without one."""
    iterator = source.__aiter__()
    pending: asyncio.Future[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield None
                continue
            finished, pending = pending, None
            try:
                chunk = finished.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        if pending is not None:
            pending.cancel()
            try:
                await pending
            except (asyncio.CancelledError, StopAsyncIteration, Exception):
                pass
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


class OpenAIStreamTranslator:
    """OpenAI chat.completion.chunk objects -> Anthropic SSE bytes, one chunk at a time.

    Blocks are emitted sequentially (start, deltas, stop). Tool-call fragments are keyed by the
    OpenAI `index` (or `id`); a lone leading "{}" arguments fragment is held back so that servers
    that send "{}" before the real fragments do not produce `{}{"a":1}`.
    """

    def __init__(self, model: str, stops: list[str] | None = None) -> None:
        self.model = model
        self.stops = stops or []
        self.message_id = new_id("msg_")
        self.started = False
        self.finished = False
        self.next_index = 0
        self.open_kind: str | None = None  # "text" | "thinking" | "tool"
        self.open_tool_key: Any = None
        self.tools: dict[Any, dict[str, Any]] = {}  # key -> {index, args, held_empty, emitted}
        self.finish_reason: str | None = None
        self.usage: dict[str, int] = openai_usage_to_anthropic(None)
        self.text_tail = ""
        self.saw_usage = False

    # -- event helpers --
    def start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        usage = dict(self.usage)
        return sse_event("message_start", {"type": "message_start", "message": {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage}})

    def _close_open(self) -> bytes:
        if self.open_kind is None:
            return b""
        out = b""
        if self.open_kind == "tool":
            state = self.tools[self.open_tool_key]
            if state["held_empty"] and not state["emitted"]:
                out += self._json_delta(state["index"], "{}")
            state["closed"] = True
        out += sse_event("content_block_stop", {"type": "content_block_stop", "index": self.next_index - 1})
        self.open_kind, self.open_tool_key = None, None
        return out

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_open()
        self.open_kind = kind
        out += sse_event("content_block_start", {"type": "content_block_start", "index": self.next_index,
                                                 "content_block": block})
        self.next_index += 1
        return out

    @staticmethod
    def _json_delta(index: int, fragment: str) -> bytes:
        return sse_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                 "delta": {"type": "input_json_delta", "partial_json": fragment}})

    def _text(self, text: str) -> bytes:
        out = b"" if self.open_kind == "text" else self._open("text", {"type": "text", "text": ""})
        self.text_tail = (self.text_tail + text)[-256:]
        return out + sse_event("content_block_delta", {"type": "content_block_delta", "index": self.next_index - 1,
                                                       "delta": {"type": "text_delta", "text": text}})

    def _thinking(self, text: str, signature: str = "") -> bytes:
        out = b""
        if self.open_kind != "thinking":
            out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        index = self.next_index - 1
        if text:
            out += sse_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                     "delta": {"type": "thinking_delta", "thinking": text}})
        if signature:
            out += sse_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                     "delta": {"type": "signature_delta", "signature": signature}})
        return out

    def _tool_fragment(self, call: dict[str, Any]) -> bytes:
        fn = call.get("function") or {}
        key = call.get("index", call.get("id"))
        if key is None:
            key = call.get("id") or len(self.tools)
        state = self.tools.get(key)
        out = b""
        if state is None:
            call_id = call.get("id")
            state = {"index": self.next_index, "args": "", "held_empty": False, "emitted": False, "closed": False}
            self.tools[key] = state
            out += self._open("tool", {
                "type": "tool_use",
                "id": sanitize_tool_id(str(call_id)) if call_id else new_id("toolu_"),
                "name": fn.get("name") or "",
                "input": {},
            })
            self.open_tool_key = key
        elif self.open_tool_key != key and not state["closed"]:
            pass  # interleaved fragments of a block that is not the open one: emitted by index below
        fragment = fn.get("arguments")
        if isinstance(fragment, dict):
            fragment = json_dumps(fragment)
        if not fragment:
            return out
        if fragment == "{}":
            if not state["args"]:
                state["held_empty"] = True
                return out
            try:
                json.loads(state["args"])
                return out  # already a complete object: a trailing "{}" would double count
            except ValueError:
                pass
        state["args"] += fragment
        state["emitted"] = True
        return out + self._json_delta(state["index"], fragment)

    # -- public --
    def feed(self, chunk: dict[str, Any]) -> bytes:
        if isinstance(chunk.get("usage"), dict):
            self.usage = openai_usage_to_anthropic(chunk["usage"])
            self.saw_usage = True
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
        out = self.start() + self._close_open()
        stop_reason, stop_sequence = stop_reason_for(self.finish_reason, bool(self.tools), self.text_tail, self.stops)
        out += sse_event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                           "usage": dict(self.usage)})
        return out + sse_event("message_stop", {"type": "message_stop"})


class AnthropicStreamRelay:
    """Anthropic SSE from upstream -> re-framed event by event (LF endings), usage noted for the log."""

    def __init__(self) -> None:
        self.parser = SSEParser()
        self.saw_stop = False
        self.saw_error = False
        self.usage: dict[str, int] = {}

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for name, data in self.parser.feed(chunk):
            out.append(self._event(name, data))
        return b"".join(out)

    def flush(self) -> bytes:
        return b"".join(self._event(name, data) for name, data in self.parser.flush())

    def _event(self, name: str, data: str) -> bytes:
        if name == "message_stop":
            self.saw_stop = True
        elif name == "error":
            self.saw_error = True
        elif name in ("message_start", "message_delta"):
            try:
                obj = json.loads(data)
                usage = (obj.get("message") or {}).get("usage") if name == "message_start" else obj.get("usage")
                if isinstance(usage, dict):
                    self.usage.update({k: v for k, v in usage.items() if isinstance(v, int)})
            except ValueError:
                pass
        return f"event: {name}\ndata: {data}\n\n".encode()


async def _single_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def message_to_sse(message: dict[str, Any]) -> bytes:
    """A complete Anthropic message -> the equivalent SSE event sequence (for JSON-only upstreams)."""
    usage = dict(message.get("usage") or {})
    out = [sse_event("message_start", {"type": "message_start", "message": {
        **{k: v for k, v in message.items() if k not in ("content", "stop_reason", "stop_sequence")},
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}})]
    for index, block in enumerate(message.get("content") or []):
        kind = block.get("type")
        if kind == "text":
            start, deltas = {"type": "text", "text": ""}, [{"type": "text_delta", "text": block.get("text", "")}]
        elif kind == "tool_use":
            start = {"type": "tool_use", "id": block.get("id"), "name": block.get("name"), "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": json_dumps(block.get("input") or {})}]
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": block.get("thinking", "")}]
            if block.get("signature"):
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:  # redacted_thinking, server tool blocks, ...: complete in their start event
            start, deltas = block, []
        out.append(sse_event("content_block_start", {"type": "content_block_start", "index": index,
                                                     "content_block": start}))
        for delta in deltas:
            out.append(sse_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                         "delta": delta}))
        out.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    out.append(sse_event("message_delta", {"type": "message_delta", "delta": {
        "stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}, "usage": usage}))
    out.append(sse_event("message_stop", {"type": "message_stop"}))
    return b"".join(out)


# == 10. Providers ==
#
# PROVIDERS maps MODEL_PROVIDER to a factory. A provider validates its own settings (raising
# ConfigError naming the variable), maps the model, builds the upstream request and returns a
# Response: JSON, or a stream. Upstream failures become LynkrErrors here.

SSE_HEADERS = [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache"),
               ("x-accel-buffering", "no")]
# Upstream response headers a client may act on (retry pacing, rate limits).
FORWARDED_RESPONSE_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry")
NOT_CONFIGURED_MESSAGE = (
    "lynkr has no model provider configured: set DATABRICKS_API_BASE and DATABRICKS_API_KEY "
    "(MODEL_PROVIDER=databricks, the default), or set MODEL_PROVIDER=azure-anthropic with "
    "AZURE_ANTHROPIC_ENDPOINT and AZURE_ANTHROPIC_API_KEY; then restart lynkr"
)


def forwarded_headers(headers: dict[str, str]) -> dict[str, str]:
    picked = {name: headers[name] for name in FORWARDED_RESPONSE_HEADERS if name in headers}
    picked.update({k: v for k, v in headers.items() if k.startswith("anthropic-ratelimit-")})
    return picked


def _error_message_from_body(raw: bytes) -> tuple[str, str]:
    """(message, code) from an upstream error body in Databricks, OpenAI or Anthropic shape."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace").strip()[:500] or "(empty body)", ""
    if not isinstance(obj, dict):
        return str(obj)[:500], ""
    err = obj.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err), str(err.get("code") or err.get("type") or "")
    return str(obj.get("message") or err or obj)[:2000], str(obj.get("error_code") or "")


class Provider:
    name = ""
    label = ""
    configured = True

    def __init__(self, cfg: Config, client: HTTPClient, log: Logger) -> None:
        self.cfg = cfg
        self.client = client
        self.log = log
        self.router = ModelRouter(cfg.model_map, cfg.model_default, cfg.model_max_tokens)

    async def create_message(self, req: dict[str, Any], http_req: Request) -> Response:
        """Answer a validated Messages request: an SSE stream or the JSON message."""
        if req.get("stream"):
            return Response(200, list(SSE_HEADERS), stream=await self.open_stream(req, http_req))
        message, raw = await self.complete(req, http_req)
        return Response(200, [("content-type", "application/json")], raw if raw is not None else json_bytes(message))

    async def open_stream(self, req: dict[str, Any], http_req: Request) -> AsyncIterator[bytes]:
        """Start the upstream call (raising LynkrError before any byte) and return Anthropic SSE bytes."""
        raise NotConfigured(NOT_CONFIGURED_MESSAGE, headers={"x-should-retry": "false"})

    async def complete(self, req: dict[str, Any], http_req: Request) -> tuple[dict[str, Any], bytes | None]:
        """Non-streaming call: (Anthropic message, the upstream's own bytes when they can pass unchanged)."""
        raise NotConfigured(NOT_CONFIGURED_MESSAGE, headers={"x-should-retry": "false"})

    async def count_tokens(self, req: dict[str, Any], http_req: Request) -> int:
        return estimate_input_tokens(req)

    async def _post(self, url: str, headers: list[tuple[str, str]], body: dict[str, Any], stream: bool) -> UpstreamResponse:
        headers = [("content-type", "application/json"),
                   ("accept", "text/event-stream" if stream else "application/json"), *headers]
        return await self.client.request(
            "POST", url, headers, json_bytes(body),
            connect_timeout=self.cfg.upstream_connect_timeout_s, read_timeout=self.cfg.upstream_read_timeout_s,
        )

    async def _read_error(self, resp: UpstreamResponse) -> bytes:
        try:
            return await resp.read(MAX_UPSTREAM_ERROR_BYTES)
        except LynkrError:
            return b""

    def _note(self, http_req: Request, model: str, target: str) -> None:
        http_req.log.update(provider=self.name, model=model, upstream_model=target)


class UnconfiguredProvider(Provider):
    configured = False

    def __init__(self, cfg: Config, client: HTTPClient, log: Logger) -> None:
        super().__init__(cfg, client, log)
        self.name = cfg.provider


class DatabricksOpenAIProvider(Provider):
    """Databricks serving endpoints (OpenAI chat format), translated both ways."""

    name, label = "databricks", "Databricks"

    def __init__(self, cfg: Config, client: HTTPClient, log: Logger, base: str, key: str) -> None:
        super().__init__(cfg, client, log)
        self.base, self.key = base, key
        self.pinned = cfg.env.get("DATABRICKS_ENDPOINT_PATH", "").strip()

    def url_for(self, target: str) -> str:
        if self.pinned:
            return self.pinned if "://" in self.pinned else self.base + "/" + self.pinned.lstrip("/")
        return f"{self.base}/serving-endpoints/{urllib.parse.quote(target, safe='')}/invocations"

    def upstream_error(self, status: int, raw: bytes, headers: dict[str, str]) -> LynkrError:
        message, code = _error_message_from_body(raw)
        extra = forwarded_headers(headers)
        if status in (400, 401, 403, 404, 413) and "x-should-retry" not in extra:
            extra["x-should-retry"] = "false"  # retrying cannot fix these; spare Claude Code its 3-minute loop
        status_out = status if 400 <= status <= 599 else 502
        detail = f" {code}" if code else ""
        return LynkrError(f"{self.label} returned HTTP {status}{detail}: {message}", status=status_out, headers=extra)

    async def _call(self, req: dict[str, Any], http_req: Request, stream: bool) -> UpstreamResponse:
        model = req["model"]
        target = self.router.target(model)
        self._note(http_req, model, target)
        max_tokens = self.router.clamp_max_tokens(model, req["max_tokens"])
        body, dropped = anthropic_to_openai({**req, "stream": stream}, max_tokens)
        if dropped:
            self.log.info("dropped server tools the upstream cannot run", request_id=http_req.request_id,
                          tools=dropped, provider=self.name)
        resp = await self._post(self.url_for(target), [("authorization", f"Bearer {self.key}")], body, stream)
        if resp.status != 200:
            raise self.upstream_error(resp.status, await self._read_error(resp), resp.headers)
        return resp

    async def _read_message(self, resp: UpstreamResponse, req: dict[str, Any], http_req: Request) -> dict[str, Any]:
        raw = await resp.read()
        try:
            obj = json.loads(raw)
        except ValueError:
            raise UpstreamUnavailable(f"{self.label} answered with invalid JSON") from None
        if not isinstance(obj, dict):
            raise UpstreamUnavailable(f"{self.label} answered with an unexpected JSON value")
        message = openai_to_anthropic(obj, req["model"], list(req.get("stop_sequences") or []))
        http_req.log.update(usage=message["usage"])
        return message

    async def complete(self, req: dict[str, Any], http_req: Request) -> tuple[dict[str, Any], bytes | None]:
        resp = await self._call(req, http_req, stream=False)
        return await self._read_message(resp, req, http_req), None

    async def open_stream(self, req: dict[str, Any], http_req: Request) -> AsyncIterator[bytes]:
        resp = await self._call(req, http_req, stream=True)
        if "text/event-stream" not in resp.headers.get("content-type", "text/event-stream"):
            # The upstream ignored stream:true; still give the client a valid SSE stream.
            return _single_chunk(message_to_sse(await self._read_message(resp, req, http_req)))
        translator = OpenAIStreamTranslator(req["model"], list(req.get("stop_sequences") or []))
        return self._stream(resp, translator, http_req)

    async def _stream(self, resp: UpstreamResponse, translator: OpenAIStreamTranslator,
                      http_req: Request) -> AsyncIterator[bytes]:
        parser = SSEParser()
        try:
            async for chunk in with_silence_ticks(resp.aiter_bytes(), self.cfg.stream_ping_interval_s):
                if chunk is None:
                    if translator.finished:
                        break  # [DONE] seen and the upstream lingers: we have everything
                    yield translator.start() + PING_EVENT
                    continue
                out = b"".join(self._on_event(data, translator) for _, data in parser.feed(chunk))
                if out:
                    yield out
            if not translator.finished:
                out = b"".join(self._on_event(data, translator) for _, data in parser.flush())
                if not translator.finished and translator.finish_reason is None:
                    raise UpstreamUnavailable(f"{self.label} ended the stream before the response was complete")
                yield out + translator.finish()
        except LynkrError as exc:
            http_req.log.update(stream_error=exc.error_type)
            yield error_event(exc)
        finally:
            await resp.aclose()
            http_req.log.update(usage=translator.usage)

    def _on_event(self, data: str, translator: OpenAIStreamTranslator) -> bytes:
        data = data.strip()
        if not data or translator.finished:
            return b""
        if data == "[DONE]":
            return translator.finish()
        try:
            obj = json.loads(data)
        except ValueError:
            raise UpstreamUnavailable(f"{self.label} sent invalid JSON in its stream: {data[:200]!r}") from None
        if not isinstance(obj, dict):
            return b""
        if "error" in obj or "error_code" in obj:
            message, code = _error_message_from_body(data.encode())
            raise LynkrError(f"{self.label} stream failed{f' ({code})' if code else ''}: {message}", status=500)
        return translator.feed(obj)


class AnthropicNativeProvider(Provider):
    """Upstreams that speak Anthropic Messages: the body passes through with the model mapped."""

    messages_url = ""

    def auth_headers(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def count_url(self) -> str:
        return self.messages_url + "/count_tokens"

    def upstream_headers(self, http_req: Request) -> list[tuple[str, str]]:
        version = http_req.headers.get("anthropic-version") or self.cfg.env.get(
            "AZURE_ANTHROPIC_VERSION", ANTHROPIC_VERSION_DEFAULT)
        headers = [*self.auth_headers(), ("anthropic-version", version)]
        if http_req.headers.get("anthropic-beta"):
            headers.append(("anthropic-beta", http_req.headers["anthropic-beta"]))
        return headers

    def upstream_error(self, status: int, raw: bytes, headers: dict[str, str]) -> LynkrError:
        message, _code = _error_message_from_body(raw)
        try:
            passthrough = raw if isinstance(json.loads(raw), dict) else None
        except ValueError:
            passthrough = None
        status_out = status if 400 <= status <= 599 else 502
        return LynkrError(f"{self.label}: {message}", status=status_out, headers=forwarded_headers(headers),
                          raw_body=passthrough)

    async def _call(self, req: dict[str, Any], http_req: Request, stream: bool) -> UpstreamResponse:
        model = req["model"]
        target = self.router.target(model)
        self._note(http_req, model, target)
        body = fold_system_messages(req)
        max_tokens = self.router.clamp_max_tokens(model, req["max_tokens"])
        body = {**body, "model": target, "max_tokens": max_tokens}
        thinking = body.get("thinking")
        if isinstance(thinking, dict) and isinstance(thinking.get("budget_tokens"), int) \
                and thinking["budget_tokens"] >= max_tokens:
            # A budget must stay below max_tokens; clamping max_tokens must not turn the request into a 400.
            if max_tokens - 1 >= MIN_THINKING_BUDGET:
                body["thinking"] = {**thinking, "budget_tokens": max_tokens - 1}
            else:
                body.pop("thinking")
        body["stream"] = stream
        resp = await self._post(self.messages_url, self.upstream_headers(http_req), body, stream)
        if resp.status != 200:
            raise self.upstream_error(resp.status, await self._read_error(resp), resp.headers)
        http_req.reply_headers.update(forwarded_headers(resp.headers))
        return resp

    async def _read_message(self, resp: UpstreamResponse, http_req: Request) -> tuple[dict[str, Any], bytes]:
        raw = await resp.read()
        try:
            message = json.loads(raw)
        except ValueError:
            raise UpstreamUnavailable(f"{self.label} answered with invalid JSON") from None
        if not isinstance(message, dict):
            raise UpstreamUnavailable(f"{self.label} answered with an unexpected JSON value")
        http_req.log.update(usage=message.get("usage"))
        return message, raw

    async def complete(self, req: dict[str, Any], http_req: Request) -> tuple[dict[str, Any], bytes | None]:
        return await self._read_message(await self._call(req, http_req, stream=False), http_req)

    async def open_stream(self, req: dict[str, Any], http_req: Request) -> AsyncIterator[bytes]:
        resp = await self._call(req, http_req, stream=True)
        if "text/event-stream" not in resp.headers.get("content-type", "text/event-stream"):
            message, _raw = await self._read_message(resp, http_req)
            return _single_chunk(message_to_sse(message))
        return self._relay(resp, http_req)

    async def _relay(self, resp: UpstreamResponse, http_req: Request) -> AsyncIterator[bytes]:
        relay = AnthropicStreamRelay()
        try:
            async for chunk in with_silence_ticks(resp.aiter_bytes(), self.cfg.stream_ping_interval_s):
                if chunk is None:
                    if relay.saw_stop:
                        break
                    yield PING_EVENT
                    continue
                out = relay.feed(chunk)
                if out:
                    yield out
            out = relay.flush()
            if not relay.saw_stop and not relay.saw_error:
                yield out + error_event(UpstreamUnavailable(f"{self.label} ended the stream before message_stop"))
            elif out:
                yield out
        except LynkrError as exc:
            http_req.log.update(stream_error=exc.error_type)
            yield error_event(exc)
        finally:
            await resp.aclose()
            http_req.log.update(usage=relay.usage)

    async def count_tokens(self, req: dict[str, Any], http_req: Request) -> int:
        body = fold_system_messages(req)
        body = {k: v for k, v in body.items() if k in ("messages", "system", "tools", "tool_choice", "thinking")}
        body["model"] = self.router.target(req["model"])
        try:
            resp = await self._post(self.count_url(), self.upstream_headers(http_req), body, False)
            raw = await resp.read(MAX_UPSTREAM_ERROR_BYTES)
            if resp.status == 200:
                count = json.loads(raw).get("input_tokens")
                if isinstance(count, int):
                    return count
            self.log.info("upstream count_tokens unavailable; estimating", request_id=http_req.request_id,
                          status=resp.status, provider=self.name)
        except (LynkrError, ValueError, AttributeError) as exc:
            self.log.info("upstream count_tokens failed; estimating", request_id=http_req.request_id,
                          error=str(exc), provider=self.name)
        return estimate_input_tokens(req)


class DatabricksAnthropicProvider(AnthropicNativeProvider):
    """Databricks AI Gateway's native Anthropic surface: lossless for Claude on Databricks."""

    name, label = "databricks", "Databricks"

    def __init__(self, cfg: Config, client: HTTPClient, log: Logger, base: str, key: str) -> None:
        super().__init__(cfg, client, log)
        self.key = key
        pinned = cfg.env.get("DATABRICKS_ENDPOINT_PATH", "").strip()
        if pinned:
            self.messages_url = pinned if "://" in pinned else base + "/" + pinned.lstrip("/")
        else:
            self.messages_url = base + "/ai-gateway/anthropic/v1/messages"

    def auth_headers(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.key}")]


class AzureAnthropicProvider(AnthropicNativeProvider):
    name, label = "azure-anthropic", "Azure Anthropic"

    def __init__(self, cfg: Config, client: HTTPClient, log: Logger, endpoint: str, key: str) -> None:
        super().__init__(cfg, client, log)
        self.key = key
        self.messages_url = endpoint if endpoint.endswith("/v1/messages") else endpoint + "/v1/messages"

    def auth_headers(self) -> list[tuple[str, str]]:
        # The SDK sends api-key, LiteLLM and Microsoft samples x-api-key: both are accepted.
        return [("x-api-key", self.key), ("api-key", self.key)]


def _paired_settings(cfg: Config, url_var: str, key_var: str) -> tuple[str, str] | None:
    """Both set -> (url, key); neither -> None; one alone is a startup error naming the other."""
    url, key = cfg.env.get(url_var, "").strip(), cfg.env.get(key_var, "").strip()
    if not url and not key:
        return None
    if not url:
        raise ConfigError(f"{url_var} must be set when {key_var} is (e.g. https://host.example.com)")
    if not key:
        raise ConfigError(f"{key_var} must be set when {url_var} is")
    return parse_url_setting(url_var, url), key


def make_databricks(cfg: Config, client: HTTPClient, log: Logger) -> Provider:
    fmt = cfg.env.get("DATABRICKS_API_FORMAT", "openai").strip().lower()
    if fmt not in ("openai", "anthropic"):
        raise ConfigError(f"DATABRICKS_API_FORMAT must be openai or anthropic (got {fmt!r})")
    pinned = cfg.env.get("DATABRICKS_ENDPOINT_PATH", "").strip()
    if pinned and "://" in pinned:
        parse_url_setting("DATABRICKS_ENDPOINT_PATH", pinned)
    settings = _paired_settings(cfg, "DATABRICKS_API_BASE", "DATABRICKS_API_KEY")
    if settings is None:
        return UnconfiguredProvider(cfg, client, log)
    factory = DatabricksAnthropicProvider if fmt == "anthropic" else DatabricksOpenAIProvider
    return factory(cfg, client, log, *settings)


def make_azure_anthropic(cfg: Config, client: HTTPClient, log: Logger) -> Provider:
    settings = _paired_settings(cfg, "AZURE_ANTHROPIC_ENDPOINT", "AZURE_ANTHROPIC_API_KEY")
    if settings is None:
        return UnconfiguredProvider(cfg, client, log)
    return AzureAnthropicProvider(cfg, client, log, *settings)


PROVIDERS: dict[str, Callable[[Config, HTTPClient, Logger], Provider]] = {
    "databricks": make_databricks,
    "azure-anthropic": make_azure_anthropic,
}


def make_provider(cfg: Config, client: HTTPClient, log: Logger) -> Provider:
    factory = PROVIDERS.get(cfg.provider)
    if factory is None:
        raise ConfigError(f"MODEL_PROVIDER must be one of {', '.join(PROVIDERS)} (got {cfg.provider!r})")
    return factory(cfg, client, log)


# == 11. API routes ==
#
# ROUTES maps (method, path) to a handler. App.handle is the one place where every failure
# becomes an Anthropic error response, and where every request gets its id and its log line.

RouteHandler = Callable[["App", Request], Awaitable[Response]]


def parse_json_body(req: Request) -> Any:
    if not req.body.strip():
        raise InvalidRequest("request body is empty: expected a JSON object")
    try:
        return json.loads(req.body)
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not valid UTF-8") from None
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None


async def route_messages(app: App, req: Request) -> Response:
    msg_req = validate_messages_request(parse_json_body(req), app.cfg.max_tokens_default)
    req.log["stream"] = bool(msg_req.get("stream"))
    req.log["model"] = msg_req["model"]
    return await app.provider.create_message(msg_req, req)


async def route_count_tokens(app: App, req: Request) -> Response:
    msg_req = validate_messages_request(parse_json_body(req), app.cfg.max_tokens_default, count_only=True)
    req.log["model"] = msg_req["model"]
    return json_response(200, {"input_tokens": await app.provider.count_tokens(msg_req, req)})


async def route_models(app: App, req: Request) -> Response:
    models = [{"type": "model", "id": mid, "display_name": name, "created_at": MODELS_CREATED_AT}
              for mid, name in app.provider.router.advertised_models()]
    try:
        limit = max(1, min(int(req.query.get("limit", "20")), 1000))
    except ValueError:
        raise InvalidRequest(f"limit: expected an integer between 1 and 1000, got {req.query['limit']!r}") from None
    ids = [m["id"] for m in models]
    if req.query.get("after_id") in ids:
        models = models[ids.index(req.query["after_id"]) + 1 :]
    elif req.query.get("before_id") in ids:
        models = models[: ids.index(req.query["before_id"])][-limit:]
    page = models[:limit]
    return json_response(200, {
        "data": page,
        "has_more": len(models) > len(page),
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    })


async def route_health(app: App, req: Request) -> Response:
    return json_response(200, {
        "status": "ok",
        "provider": app.provider.name,
        "configured": app.provider.configured,
        "version": __version__,
        "uptime_s": round(time.monotonic() - app.started, 3),
    })


async def route_root(app: App, req: Request) -> Response:
    return json_response(200, {"name": "lynkr", "version": __version__, "docs": "POST /v1/messages"})


ROUTES: dict[tuple[str, str], RouteHandler] = {
    ("POST", "/v1/messages"): route_messages,
    ("POST", "/v1/messages/count_tokens"): route_count_tokens,
    ("GET", "/v1/models"): route_models,
    ("GET", "/health"): route_health,
    ("GET", "/"): route_root,
    ("HEAD", "/"): route_root,
    ("HEAD", "/api/hello"): route_root,  # Claude Code's warm-up probe
}


class App:
    def __init__(self, cfg: Config, log: Logger, provider: Provider) -> None:
        self.cfg = cfg
        self.log = log
        self.provider = provider
        self.started = time.monotonic()
        self.allowed_hosts = frozenset(cfg.allowed_hosts)
        self.bound_to_loopback = is_loopback_host(cfg.host)

    # -- access control --
    def _host_allowed(self, host: str) -> bool:
        return host.lower() in self.allowed_hosts or is_loopback_host(host)

    def check_access(self, req: Request) -> None:
        host = split_host_port(req.headers.get("host", ""))
        # DNS rebinding: a page on evil.example resolving to 127.0.0.1 still sends Host: evil.example.
        if (self.bound_to_loopback or self.allowed_hosts) and not self._host_allowed(host):
            raise PermissionDenied(f"Host {host!r} is not allowed; add it to LYNKR_ALLOWED_HOSTS to accept it")
        origin = req.headers.get("origin")
        if origin and origin != "null":
            origin_host = urllib.parse.urlsplit(origin).hostname or ""
            same_origin = not self.bound_to_loopback and origin_host == host
            if not (self._host_allowed(origin_host) or same_origin):
                raise PermissionDenied(f"cross-origin request from {origin!r} refused (LYNKR_ALLOWED_HOSTS)")
        elif origin == "null":
            raise PermissionDenied("requests from opaque origins are refused")
        if self.cfg.api_key:
            # Claude Code sends x-api-key (ANTHROPIC_API_KEY) or Bearer (ANTHROPIC_AUTH_TOKEN), sometimes both.
            auth = req.headers.get("authorization", "")
            candidates = [req.headers.get("x-api-key", ""), auth[7:].strip() if auth[:7].lower() == "bearer " else ""]
            expected = self.cfg.api_key.encode()
            if not any(secrets.compare_digest(c.encode(), expected) for c in candidates):
                raise AuthenticationFailed("invalid or missing API key: send LYNKR_API_KEY as x-api-key or Bearer token")

    # -- dispatch --
    def resolve(self, method: str, path: str) -> RouteHandler:
        if len(path) > 1:
            path = path.rstrip("/")
        handler = ROUTES.get((method, path)) or (ROUTES.get(("GET", path)) if method == "HEAD" else None)
        if handler is not None:
            return handler
        allowed = sorted({m for m, p in ROUTES if p == path})
        if allowed:
            raise MethodNotAllowed(f"{method} is not allowed on {path}; use {', '.join(allowed)}",
                                   headers={"allow": ", ".join(allowed)})
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
            handler = self.resolve(req.method, req.path)
            response = await handler(self, req)
        except LynkrError as exc:
            req.log["error"] = exc.message if exc.status >= 500 else exc.error_type
            response = self.error_response(exc, req.request_id)
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as exc:  # a bug: the client still gets an Anthropic error, the log gets the detail
            self.log.error("unhandled error", request_id=req.request_id, error=repr(exc), path=req.path)
            response = self.error_response(LynkrError(f"internal error in lynkr (request id {req.request_id})"),
                                           req.request_id)
        response.headers.extend(req.reply_headers.items())
        response.headers.append(("request-id", req.request_id))
        if response.stream is not None:
            response.stream = self._logged_stream(response.stream, req, response.status, started)
        else:
            self.access_log(req, response.status, started)
        return response

    async def _logged_stream(self, stream: AsyncIterator[bytes], req: Request, status: int,
                             started: float) -> AsyncIterator[bytes]:
        completed = False
        try:
            async for chunk in stream:
                yield chunk
            completed = True
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
            if not completed:
                req.log.setdefault("stream_error", "client_disconnected")
            self.access_log(req, status, started)

    def access_log(self, req: Request, status: int, started: float) -> None:
        fields: dict[str, Any] = {
            "request_id": req.request_id, "method": req.method, "path": req.path, "status": status,
            "latency_ms": round((time.monotonic() - started) * 1000, 2), "client": req.client,
        }
        usage = req.log.pop("usage", None) or {}
        fields.update({k: v for k, v in req.log.items() if v is not None})
        for key in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            if isinstance(usage, dict) and usage.get(key) is not None:
                fields[key] = usage[key]
        if self.cfg.log_bodies and req.body:
            fields["body"] = req.body.decode("utf-8", errors="replace")
        self.log.info("request", **fields)


# == 12. App lifecycle ==


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


async def serve(cfg: Config, log: Logger, provider: Provider, client: HTTPClient) -> int:
    app = App(cfg, log, provider)
    server = HTTPServer(app.handle, app.protocol_error_response, log)
    try:
        port = await server.start(cfg.host, cfg.port)
    except OSError as exc:
        print(f"lynkr: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc} (set LYNKR_PORT)",
              file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
            pass
    for notice in cfg.notices:
        log.info("notice", detail=notice)
    if not provider.configured:
        log.warning("no model provider configured; model calls answer 503 until it is", detail=NOT_CONFIGURED_MESSAGE)
    shown_host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    log.info("listening", url=f"http://{shown_host}:{port}", port=port, host=cfg.host, provider=provider.name,
             configured=provider.configured, version=__version__, workspace=cfg.workspace_root)
    await stop.wait()
    log.info("shutting down", in_flight=server.active_connections, grace_s=cfg.shutdown_grace_s)
    await server.shutdown(cfg.shutdown_grace_s)
    client.close()
    log.info("stopped")
    return 0


# == 13. CLI ==


def build_arg_parser() -> argparse.ArgumentParser:
    epilog = "environment variables (also read from ./.env, lynkr's own keys only):\n" + "\n".join(
        f"  {name:<28} {desc}" + (f" [default: {default}]" if default else "")
        for name, (default, desc) in CONFIG_KEYS.items()
    )
    parser = argparse.ArgumentParser(
        prog="lynkr",
        description="Anthropic Messages API gateway for the Claude Code CLI (Databricks, Claude on Azure).",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", default="start", choices=["start"], help="start (default): serve")
    parser.add_argument("--host", help=f"address to bind (LYNKR_HOST, default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, help="port to listen on; 0 picks a free one (LYNKR_PORT)")
    parser.add_argument("--env-file", help="read settings from this file instead of ./.env")
    parser.add_argument("--version", action="version", version=f"lynkr {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    if h11 is None:
        print("lynkr: the h11 package is required: pip install 'h11>=0.16'", file=sys.stderr)
        return 2
    if args.port is not None and not 0 <= args.port <= 65535:
        print(f"lynkr: --port must be between 0 and 65535 (got {args.port})", file=sys.stderr)
        return 2
    try:
        cfg = load_config(env_file=args.env_file, cli_host=args.host, cli_port=args.port)
        log = Logger(cfg.log_format, cfg.log_level)
        client = HTTPClient(ProxySettings.from_environ(dict(os.environ)))
        provider = make_provider(cfg, client, log)
        prepare_data_dir(cfg.data_dir)
    except ConfigError as exc:
        print(f"lynkr: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"lynkr: cannot create LYNKR_DATA_DIR: {exc}", file=sys.stderr)
        return 2
    raise_open_file_limit()
    try:
        return asyncio.run(serve(cfg, log, provider, client))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


if __name__ == "__main__":
    sys.exit(main())
