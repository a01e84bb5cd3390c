#!/usr/bin/env python3
"""CPU per 200-token stream for each provider kind's decoder (issue 17), beside the Databricks path.

Every kind shares the pump, the HTTP layers and the turn record; what differs is the decoder that turns
the upstream's stream into Anthropic SSE. This feeds each decoder the same 200-token answer in its
wire format, in the chunks an upstream sends (one event or frame per token), and reports process CPU
per stream (best of 5 rounds of 200 streams):

    python bench/kinds_stream_bench.py

- databricks / openai: Chat Completions chunks (OpenAIStreamDecoder, the byte-level fast path)
- anthropic / vertex / bedrock Messages API: Anthropic SSE relayed event by event (AnthropicStreamRelay)
- bedrock InvokeModel: AWS event-stream frames, CRC-checked, base64 events (EventStreamDecoder)
- openai-responses: Responses API events (ResponsesStreamDecoder)
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lynkr

TOKENS = 200
WORDS = [f" word{i % 37}" for i in range(TOKENS)]


def sse(name: str | None, obj: dict) -> bytes:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


def openai_chunks() -> list[bytes]:
    frame = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    out = [sse(None, {**frame, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})]
    out += [sse(None, {**frame, "choices": [{"index": 0, "delta": {"content": w}}]}) for w in WORDS]
    out.append(
        sse(
            None,
            {
                **frame,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": TOKENS},
            },
        )
    )
    return [*out, b"data: [DONE]\n\n"]


def anthropic_events() -> list[dict]:
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "m",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    events += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}} for w in WORDS
    ]
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": TOKENS},
        },
        {"type": "message_stop"},
    ]
    return events


def event_frame(payload: bytes) -> bytes:
    headers = b""
    for name, value in (
        (":event-type", "chunk"),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ):
        headers += (
            bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
        )
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    body = prelude + headers + payload
    return body + struct.pack(">I", binascii.crc32(body))


def bedrock_frames() -> list[bytes]:
    return [
        event_frame(json.dumps({"bytes": base64.b64encode(json.dumps(e).encode()).decode()}).encode())
        for e in anthropic_events()
    ]


def responses_events() -> list[bytes]:
    out = [
        sse(
            "response.created",
            {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
        ),
        sse(
            "response.output_item.added",
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {"type": "message", "id": "m1", "role": "assistant", "content": []},
            },
        ),
    ]
    out += [
        sse(
            "response.output_text.delta",
            {
                "type": "response.output_text.delta",
                "output_index": 0,
                "content_index": 0,
                "item_id": "m1",
                "delta": w,
            },
        )
        for w in WORDS
    ]
    out.append(
        sse(
            "response.completed",
            {
                "type": "response.completed",
                "response": {
                    "id": "resp_1",
                    "status": "completed",
                    "output": [],
                    "usage": {
                        "input_tokens": 10,
                        "input_tokens_details": {"cached_tokens": 0},
                        "output_tokens": TOKENS,
                    },
                },
            },
        )
    )
    return out


def cpu_per_stream(make_decoder, chunks: list[bytes], rounds: int = 5, streams: int = 200) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(streams):
            decoder = make_decoder()
            for chunk in chunks:
                decoder.feed(chunk)
            decoder.flush()
            assert decoder.done, type(decoder).__name__
        best = min(best, (time.process_time() - t0) / streams)
    return best * 1000


def main() -> int:
    cases = [
        (
            "databricks / openai (chat chunks)",
            lambda: lynkr.OpenAIStreamDecoder("m", [], "x"),
            openai_chunks(),
        ),
        (
            "anthropic / vertex / bedrock Messages (SSE relay)",
            lynkr.AnthropicStreamRelay,
            [sse(e["type"], e) for e in anthropic_events()],
        ),
        ("bedrock InvokeModel (event-stream frames)", lynkr.EventStreamDecoder, bedrock_frames()),
        (
            "openai-responses (Responses events)",
            lambda: lynkr.ResponsesStreamDecoder("m", "x"),
            responses_events(),
        ),
    ]
    print(f"{'kind':<52} {'ms CPU / 200-token stream':>26}")
    for name, make, chunks in cases:
        print(f"{name:<52} {cpu_per_stream(make, chunks):>26.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
