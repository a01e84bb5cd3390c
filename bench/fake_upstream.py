#!/usr/bin/env python3
"""A cheap fake LLM upstream for benchmarks: OpenAI chat and Anthropic Messages, streaming or not.

Routes (HTTP/1.1, keep-alive, loopback only by default):

    POST /serving-endpoints/<name>/invocations   OpenAI chat (Databricks serving-endpoint path)
    POST /v1/chat/completions, /chat/completions OpenAI chat
    POST /v1/messages                            Anthropic Messages
    GET  /health                                 200 "ok"
    GET  /stats                                  counters (requests, max concurrent streams, ...)

Every answer has N tokens, N = the request's ``max_tokens`` (or ``max_completion_tokens``),
capped by ``--max-answer-tokens``; a ``-t<N>`` in the model name or endpoint name overrides it.
``"stream": true`` in the body selects SSE. A per-token delay comes from ``--delay-ms`` or from a
``-d<ms>`` in the model/endpoint name (``slow-d250`` -> 250 ms between tokens).

The server shares a 2-core machine with the proxy under test, so it does as little as possible:
the body is never JSON-decoded (three small regexes find model, max_tokens and stream), and every
answer is rendered once per (format, stream, tokens, model) and then served from a dict.

    python bench/fake_upstream.py --port 0 --port-file /tmp/fake.port
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time

WORDS = (
    "the",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " a",
    " lazy",
    " dog",
    ",",
    " and",
    " then",
    " it",
    " writes",
    " some",
    " code",
    ".",
    "\n",
    " def",
    " main",
)
MODEL_RE = re.compile(rb'"model"\s*:\s*"([^"]{1,200})"')
MAX_TOKENS_RE = re.compile(rb'"max_(?:completion_)?tokens"\s*:\s*(\d+)')
STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
NAME_TOKENS_RE = re.compile(r"-t(\d+)")
NAME_DELAY_RE = re.compile(r"-d(\d+)")
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
CACHE_LIMIT = 256  # rendered answers kept; the benchmark uses a handful


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Rendered:
    """One answer, pre-rendered: head + body (non-stream) or head + pieces (stream)."""

    __slots__ = ("first", "head", "tail", "tokens", "whole")

    def __init__(
        self,
        whole: bytes = b"",
        head: bytes = b"",
        first: bytes = b"",
        tokens: tuple[bytes, ...] = (),
        tail: bytes = b"",
    ) -> None:
        self.whole = whole  # everything at once (used when there is no delay)
        self.head, self.first, self.tokens, self.tail = head, first, tokens, tail


def _json_answer(obj: object) -> Rendered:
    body = _dumps(obj).encode()
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
    return Rendered(whole=head + body)


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _sse_answer(first: bytes, tokens: list[bytes], tail: bytes) -> Rendered:
    chunks = (_chunk(first), tuple(_chunk(t) for t in tokens), _chunk(tail) + b"0\r\n\r\n")
    whole = SSE_HEAD + chunks[0] + b"".join(chunks[1]) + chunks[2]
    return Rendered(whole=whole, head=SSE_HEAD, first=chunks[0], tokens=chunks[1], tail=chunks[2])


def render_openai(model: str, n: int, stream: bool) -> Rendered:
    words = [WORDS[i % len(WORDS)] for i in range(n)]
    created = 1_700_000_000
    usage = {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n}
    if not stream:
        return _json_answer(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(words)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )

    def ev(delta: dict, finish: str | None = None, with_usage: bool = False) -> bytes:
        obj: dict = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if with_usage:
            obj["usage"] = usage
        return b"data: " + _dumps(obj).encode() + b"\n\n"

    first = ev({"role": "assistant", "content": ""})
    tokens = [ev({"content": w}) for w in words]
    tail = ev({}, "stop", with_usage=True) + b"data: [DONE]\n\n"
    return _sse_answer(first, tokens, tail)


def render_anthropic(model: str, n: int, stream: bool) -> Rendered:
    words = [WORDS[i % len(WORDS)] for i in range(n)]
    usage = {
        "input_tokens": 12,
        "output_tokens": n,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    message = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "".join(words)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    if not stream:
        return _json_answer(message)

    def ev(name: str, obj: dict) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + _dumps(obj).encode() + b"\n\n"

    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    first = (
        ev("message_start", {"type": "message_start", "message": start})
        + ev(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        + ev("ping", {"type": "ping"})
    )
    tokens = [
        ev(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}},
        )
        for w in words
    ]
    tail = (
        ev("content_block_stop", {"type": "content_block_stop", "index": 0})
        + ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": n},
            },
        )
        + ev("message_stop", {"type": "message_stop"})
    )
    return _sse_answer(first, tokens, tail)


NOT_FOUND = b'HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 21\r\n\r\n{"error":"not found"}'
HEALTH = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


class Server:
    def __init__(self, max_tokens: int, delay_ms: float) -> None:
        self.max_tokens = max_tokens
        self.delay_ms = delay_ms
        self.cache: dict[tuple[str, bool, int, str], Rendered] = {}
        self.requests = 0
        self.streams_open = 0
        self.max_streams_open = 0
        self.connections = 0
        self.max_connections = 0

    def stats(self) -> bytes:
        body = _dumps(
            {
                "requests": self.requests,
                "streams_open": self.streams_open,
                "max_streams_open": self.max_streams_open,
                "connections": self.connections,
                "max_connections": self.max_connections,
            }
        ).encode()
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
            + body
        )

    def answer(self, kind: str, path_name: str, body: bytes) -> tuple[Rendered, float]:
        m = MODEL_RE.search(body)
        model = m.group(1).decode("utf-8", "replace") if m else (path_name or "fake")
        name = path_name or model
        t = NAME_TOKENS_RE.search(name)
        if t:
            n = int(t.group(1))
        else:
            mt = MAX_TOKENS_RE.search(body)
            n = int(mt.group(1)) if mt else 16
        n = max(1, min(n, self.max_tokens))
        d = NAME_DELAY_RE.search(name)
        delay = int(d.group(1)) / 1000 if d else self.delay_ms / 1000
        stream = STREAM_RE.search(body) is not None
        key = (kind, stream, n, model)
        rendered = self.cache.get(key)
        if rendered is None:
            if len(self.cache) >= CACHE_LIMIT:
                self.cache.clear()
            rendered = (render_openai if kind == "openai" else render_anthropic)(model, n, stream)
            self.cache[key] = rendered
        return rendered, (delay if stream else 0.0)


class Conn(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a delayed stream is being written; later requests wait in buf
        self.closed = False
        self.paused = False
        self.resume: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1
        self.server.max_connections = max(self.server.max_connections, self.server.connections)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections -= 1
        if self.resume is not None and not self.resume.done():
            self.resume.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.resume is not None and not self.resume.done():
            self.resume.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.process()

    def process(self) -> None:
        """Answer every complete request in the buffer (requests are handled in order)."""
        while not self.busy and not self.closed:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.transport.close()
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) < 3:
                self.transport.close()
                return
            method, target = parts[0], parts[1]
            length = 0
            chunked = close = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip() or 0)
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
                elif name == "connection" and "close" in value.lower():
                    close = True
                elif name == "expect" and "100-continue" in value.lower():
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            start = end + 4
            if chunked:
                body, consumed = _dechunk(self.buf, start)
                if body is None:
                    return
            else:
                if length > MAX_BODY:
                    self.transport.close()
                    return
                if len(self.buf) - start < length:
                    return
                body, consumed = bytes(self.buf[start : start + length]), start + length
            del self.buf[:consumed]
            self.server.requests += 1
            self.respond(method, target.split("?", 1)[0], body, close)

    def respond(self, method: str, path: str, body: bytes, close: bool) -> None:
        t = self.transport
        kind, name = "", ""
        if method == "POST":
            if path.startswith("/serving-endpoints/") and path.endswith("/invocations"):
                kind, name = "openai", path[len("/serving-endpoints/") : -len("/invocations")]
            elif path in ("/v1/chat/completions", "/chat/completions"):
                kind = "openai"
            elif path in ("/v1/messages", "/messages"):
                kind = "anthropic"
        elif method == "GET" and path in ("/health", "/"):
            t.write(HEALTH)
            return
        elif method == "GET" and path == "/stats":
            t.write(self.server.stats())
            if close:
                t.close()
            return
        if not kind:
            t.write(NOT_FOUND)
            return
        rendered, delay = self.server.answer(kind, name, body)
        if delay <= 0 or not rendered.tokens:
            t.write(rendered.whole)
            if close:
                t.close()
            return
        self.busy = True
        self.streaming = asyncio.ensure_future(self.slow_stream(rendered, delay, close))  # kept referenced

    async def slow_stream(self, r: Rendered, delay: float, close: bool) -> None:
        self.server.streams_open += 1
        self.server.max_streams_open = max(self.server.max_streams_open, self.server.streams_open)
        try:
            self.transport.write(r.head + r.first)
            for piece in r.tokens:
                await asyncio.sleep(delay)
                if self.closed:
                    return
                self.transport.write(piece)
                if self.paused:
                    self.resume = asyncio.get_running_loop().create_future()
                    await self.resume
            self.transport.write(r.tail)
        finally:
            self.server.streams_open -= 1
        self.busy = False
        if close:
            self.transport.close()
        elif self.buf:
            self.process()


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes | None, int]:
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None, 0
        size = int(bytes(buf[pos:eol]).split(b";")[0] or b"0", 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n", pos)  # no trailers expected: the final CRLF
            return (bytes(out), end + 2) if end >= 0 else (None, 0)
        if len(buf) < pos + size + 2:
            return None, 0
        out += buf[pos : pos + size]
        pos += size + 2


async def amain(args: argparse.Namespace) -> None:
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("fake_upstream: loopback only")
    _raise_nofile()
    server = Server(args.max_answer_tokens, args.delay_ms)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(
        lambda: Conn(server), args.host, args.port, backlog=4096, reuse_address=True
    )
    port = srv.sockets[0].getsockname()[1]
    if args.port_file:
        _write_port(args.port_file, port)
    print(f"fake upstream on http://{args.host}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    deadline = time.monotonic() + args.max_runtime_s
    while not stop.is_set() and time.monotonic() < deadline:  # bounded: never outlives the benchmark
        try:
            await asyncio.wait_for(stop.wait(), 5)
        except TimeoutError:
            pass
    srv.close()


def _write_port(path: str, port: int) -> None:
    """Atomically, so a reader never sees a half-written number."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(str(port))
    os.replace(tmp, path)


def _raise_nofile() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 20), hard))
    except (ImportError, ValueError, OSError):
        pass


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", default="", help="write the bound port here (atomically)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="delay between streamed tokens")
    p.add_argument("--max-answer-tokens", type=int, default=4096)
    p.add_argument("--max-runtime-s", type=float, default=3600.0, help="exit after this long regardless")
    asyncio.run(amain(p.parse_args(argv)))


if __name__ == "__main__":
    main()
