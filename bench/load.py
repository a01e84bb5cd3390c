#!/usr/bin/env python3
"""A small keep-alive HTTP/1.1 load client for the gateway benchmarks (asyncio, stdlib only).

Closed loop: `concurrency` workers, each on its own keep-alive connection, send the same POST
again and again until `count` requests were sent or `duration_s` ran out (both always bound the
run; a stuck response is cut off by `timeout_s`). Per request it records latency, and for
streams the time to the first ``content_block_delta`` (TTFT) and to the end. Bodies are kept
and checked after the timed window (so checking costs no time inside it): a stream must be a
valid Anthropic SSE sequence whose text is exactly the expected answer; a JSON answer must be
an Anthropic message with that text.

Only loopback targets are accepted.

    python bench/load.py --url http://127.0.0.1:8080/v1/messages --body bench.json -c 32 -n 2000 -d 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DELTA_MARK = b"content_block_delta"


class LoadError(Exception):
    pass


@dataclass
class Result:
    """What one run measured. Times in seconds; the summary converts to ms."""

    sent: int = 0
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    invalid: list[str] = field(default_factory=list)
    max_open: int = 0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        ttft = sorted(self.ttfts)
        return {
            "sent": self.sent,
            "ok": self.ok,
            "errors": len(self.errors),
            "invalid": len(self.invalid),
            "first_error": (self.errors or self.invalid or [""])[0][:300],
            "rps": self.ok / self.wall_s if self.wall_s > 0 else 0.0,
            "p50_ms": pct(lat, 50) * 1000,
            "p99_ms": pct(lat, 99) * 1000,
            "mean_ms": mean(lat) * 1000,
            "ttft_p50_ms": pct(ttft, 50) * 1000,
            "ttft_p99_ms": pct(ttft, 99) * 1000,
            "wall_s": self.wall_s,
            "client_cpu_ms_per_req": 1000 * self.client_cpu_s / max(1, self.ok),
            "max_open": self.max_open,
        }


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


# -- HTTP/1.1 response reader (content-length or chunked), as an asyncio Protocol --


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, float, bool]] | None = None
        self.lost: Exception | None = None
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.state = 0  # 0 head, 1 content-length body, 2 chunked body
        self.status = 0
        self.remaining = 0
        self.body = bytearray()
        self.first_at = 0.0
        self.scan_from = 0
        self.server_close = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(LoadError(f"connection closed mid-response ({exc or 'EOF'})"))

    def send(self, data: bytes) -> asyncio.Future[tuple[int, bytes, float, bool]]:
        self._reset()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            return  # bytes after a finished response (should not happen): ignored
        self.buf += data
        try:
            self._parse()
        except Exception as exc:  # noqa: BLE001 - a malformed response fails this request only
            if not self.waiter.done():
                self.waiter.set_exception(LoadError(f"bad response: {exc!r}"))
            self.transport.close()

    def _parse(self) -> None:
        buf = self.buf
        if self.state == 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            self.status = int(lines[0].split(" ", 2)[1])
            if self.status == 100:
                return self._parse()
            length, chunked = -1, False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
                elif name == "connection" and "close" in value.lower():
                    self.server_close = True
            if chunked:
                self.state = 2
            elif length >= 0:
                self.state, self.remaining = 1, length
            else:
                raise LoadError("response without content-length or chunked encoding")
        if self.state == 1:
            take = min(self.remaining, len(buf))
            self.body += buf[:take]
            del buf[:take]
            self.remaining -= take
            self._mark_first()
            if self.remaining == 0:
                self._done()
            return
        while True:  # chunked
            eol = buf.find(b"\r\n")
            if eol < 0:
                break
            size = int(bytes(buf[:eol]).split(b";")[0], 16)
            if size == 0:
                if len(buf) < eol + 4:
                    break
                del buf[: eol + 4]
                self._mark_first()
                self._done()
                return
            if len(buf) < eol + 2 + size + 2:
                break
            self.body += buf[eol + 2 : eol + 2 + size]
            del buf[: eol + 2 + size + 2]
        self._mark_first()

    def _mark_first(self) -> None:
        if self.first_at == 0.0 and self.body:
            if self.body.find(DELTA_MARK, self.scan_from) >= 0:
                self.first_at = time.perf_counter()
            else:
                self.scan_from = max(0, len(self.body) - len(DELTA_MARK))

    def _done(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.status, bytes(self.body), self.first_at, self.server_close))


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"host: {host}:{port}",
        "content-type: application/json",
        f"content-length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def run_load(
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    concurrency: int = 1,
    count: int = 1000,
    duration_s: float = 10.0,
    timeout_s: float = 30.0,
    stream: bool = False,
    expect_text: str | None = None,
    keep_bodies: int | None = None,
    connect_timeout_s: float = 30.0,
) -> Result:
    """Run one closed-loop load and check what came back. See the module docstring."""
    if keep_bodies is None:
        keep_bodies = count  # check every answer
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    if host not in LOOPBACK:
        raise LoadError(f"refusing non-loopback target {host!r}")
    raw = build_request(host, port, parts.path or "/", body, headers or {})
    loop = asyncio.get_running_loop()
    result = Result()
    bodies: list[tuple[int, bytes]] = []
    issued = 0
    open_now = 0

    async def connect() -> _Conn:
        _, proto = await asyncio.wait_for(loop.create_connection(_Conn, host, port), connect_timeout_s)
        return proto  # type: ignore[return-value]

    conns = await asyncio.gather(*(connect() for _ in range(concurrency)), return_exceptions=True)
    failed = [c for c in conns if isinstance(c, BaseException)]
    if failed:
        for c in conns:
            if isinstance(c, _Conn):
                c.transport.close()
        raise LoadError(f"{len(failed)} of {concurrency} connections failed: {failed[0]!r}")
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    deadline = start + duration_s

    async def worker(conn: _Conn) -> None:
        nonlocal issued, open_now
        while issued < count and time.perf_counter() < deadline:
            issued += 1
            result.sent += 1
            if conn.closed:
                conn = await connect()
            t0 = time.perf_counter()
            open_now += 1
            result.max_open = max(result.max_open, open_now)
            try:
                status, data, first_at, server_close = await asyncio.wait_for(conn.send(raw), timeout_s)
            except (TimeoutError, LoadError, OSError) as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")
                conn.transport.close()
                conn.closed = True
                continue
            finally:
                open_now -= 1
            t1 = time.perf_counter()
            if status != 200:
                result.errors.append(f"HTTP {status}: {data[:300]!r}")
            else:
                result.ok += 1
                result.latencies.append(t1 - t0)
                if stream:
                    result.ttfts.append((first_at or t1) - t0)
                if len(bodies) < keep_bodies:
                    bodies.append((status, data))
            if server_close:
                conn.transport.close()
                conn.closed = True
        conn.transport.close()

    await asyncio.gather(*(worker(c) for c in conns))
    result.wall_s = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    result.client_cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    for _, data in bodies:
        problem = check_stream(data, expect_text) if stream else check_message(data, expect_text)
        if problem:
            result.invalid.append(problem)
    return result


# -- checks --


def parse_sse(data: bytes) -> list[tuple[str, str]]:
    events = []
    for block in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        name, datas = "message", []
        for line in block.decode("utf-8").split("\n"):
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                datas.append(value)
        events.append((name, "\n".join(datas)))
    return events


def check_stream(data: bytes, expect_text: str | None) -> str:
    """'' when `data` is a valid Anthropic Messages SSE stream (with the expected text), else why not."""
    if not data.endswith(b"\n\n"):
        return "stream does not end with a blank line"
    try:
        events = parse_sse(data)
    except UnicodeDecodeError:
        return "stream is not UTF-8"
    state = "start"  # start -> message -> (block) -> delta_done -> stopped
    open_index: int | None = None
    next_index = 0
    block_type = ""
    text: list[str] = []
    for name, raw in events:
        try:
            obj = json.loads(raw)
        except ValueError:
            return f"event {name}: data is not JSON: {raw[:80]!r}"
        if not isinstance(obj, dict) or obj.get("type") != name:
            return (
                f"event {name}: data type {obj.get('type') if isinstance(obj, dict) else obj!r} != event name"
            )
        if name == "ping":
            if state == "stopped":
                return "ping after message_stop"
            continue
        if name == "error":
            return f"error event: {raw[:200]}"
        if state == "start":
            if name != "message_start":
                return f"first event is {name}, not message_start"
            msg = obj.get("message") or {}
            if (
                msg.get("role") != "assistant"
                or msg.get("type") != "message"
                or not isinstance(msg.get("content"), list)
            ):
                return "message_start without an assistant message"
            state = "message"
        elif state == "message":
            if name == "content_block_start":
                if open_index is not None:
                    return f"content_block_start {obj.get('index')} while block {open_index} is open"
                if obj.get("index") != next_index:
                    return f"content_block_start index {obj.get('index')}, expected {next_index}"
                open_index, next_index = next_index, next_index + 1
                block_type = (obj.get("content_block") or {}).get("type", "")
            elif name == "content_block_delta":
                if obj.get("index") != open_index:
                    return f"delta for index {obj.get('index')} while {open_index} is open"
                delta = obj.get("delta") or {}
                if block_type == "text":
                    if delta.get("type") != "text_delta" or not isinstance(delta.get("text"), str):
                        return f"text block got delta {delta.get('type')}"
                    text.append(delta["text"])
            elif name == "content_block_stop":
                if obj.get("index") != open_index:
                    return f"content_block_stop {obj.get('index')} while {open_index} is open"
                open_index = None
            elif name == "message_delta":
                if open_index is not None:
                    return "message_delta while a block is open"
                if not (obj.get("delta") or {}).get("stop_reason"):
                    return "message_delta without stop_reason"
                if not isinstance((obj.get("usage") or {}).get("output_tokens"), int):
                    return "message_delta without usage.output_tokens"
                state = "delta_done"
            else:
                return f"unexpected event {name}"
        elif state == "delta_done":
            if name != "message_stop":
                return f"{name} after message_delta"
            state = "stopped"
        else:
            return f"{name} after message_stop"
    if state != "stopped":
        return f"stream ended in state {state} (no message_stop)"
    if expect_text is not None and "".join(text) != expect_text:
        got = "".join(text)
        return f"text mismatch: {len(got)} chars, expected {len(expect_text)}: {got[:60]!r}"
    return ""


def check_message(data: bytes, expect_text: str | None) -> str:
    try:
        obj = json.loads(data)
    except ValueError:
        return f"answer is not JSON: {data[:80]!r}"
    if not isinstance(obj, dict) or obj.get("type") != "message" or obj.get("role") != "assistant":
        return f"answer is not an assistant message: {data[:120]!r}"
    text = "".join(
        b.get("text", "") for b in obj.get("content") or [] if isinstance(b, dict) and b.get("type") == "text"
    )
    if expect_text is not None and text != expect_text:
        return f"text mismatch: {text[:60]!r}"
    if not obj.get("stop_reason"):
        return "message without stop_reason"
    return ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--body", required=True, help="file with the JSON request body")
    p.add_argument("-c", "--concurrency", type=int, default=1)
    p.add_argument("-n", "--count", type=int, default=1000)
    p.add_argument("-d", "--duration", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("-H", "--header", action="append", default=[], help="name: value")
    args = p.parse_args(argv)
    with open(args.body, "rb") as fh:
        body = fh.read()
    stream = bool(json.loads(body).get("stream"))
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    res = asyncio.run(
        run_load(
            args.url,
            body,
            headers,
            concurrency=args.concurrency,
            count=args.count,
            duration_s=args.duration,
            timeout_s=args.timeout,
            stream=stream,
        )
    )
    print(json.dumps(res.summary(), indent=2))
    return 0 if not res.errors and not res.invalid else 1


if __name__ == "__main__":
    sys.exit(main())
