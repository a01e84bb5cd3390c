#!/usr/bin/env bash
# An annotated curl session against a running lynkr (start it first: `python lynkr.py`).
#
#   bash examples/curl-session.sh                       # against http://127.0.0.1:8080
#   LYNKR_URL=http://127.0.0.1:9000 bash examples/curl-session.sh
#   LYNKR_API_KEY=... bash examples/curl-session.sh     # when lynkr was started with LYNKR_API_KEY
#
# Every call is a plain Anthropic Messages API call: lynkr answers in Anthropic's format whatever
# the provider behind it. Errors come back as {"type":"error","error":{"type":...,"message":...}},
# so without a provider configured the /v1/messages calls print a 503 api_error naming the
# variables to set -- the other routes still work.
# Server tools, the agent loop and the session store: see examples/tools-session.sh; git, tests,
# the repository index and MCP: examples/workspace-session.sh.
set -uo pipefail

URL=${LYNKR_URL:-http://127.0.0.1:8080}
MODEL=${LYNKR_MODEL:-claude-sonnet-4-5}   # any name; MODEL_MAP / MODEL_DEFAULT pick the upstream model

# Headers every call sends. anthropic-version is what the Anthropic SDKs and Claude Code send;
# the client's key is only checked by lynkr (when LYNKR_API_KEY is set), never forwarded upstream.
HDRS=(-H "content-type: application/json" -H "anthropic-version: 2023-06-01")
if [[ -n "${LYNKR_API_KEY:-}" ]]; then
    HDRS+=(-H "x-api-key: $LYNKR_API_KEY")      # or: -H "Authorization: Bearer $LYNKR_API_KEY"
fi

say() { printf '\n\033[1m### %s\033[0m\n' "$*"; }

# 1. Health: {"status":"ok","provider":"databricks","configured":true|false,"version":"0.1.0",...}
#    (Probes for load balancers: /health/live and /health/ready, see the end of this file.)
say "GET /health"
curl -sS "${HDRS[@]}" "$URL/health"; echo

# 2. Models, in Anthropic's list shape ({"data":[{"type":"model","id":...}],"has_more",...}).
#    Lists well-known Claude ids plus the literal names on the left of MODEL_MAP.
#    Paging: ?limit=N&after_id=ID / ?before_id=ID
say "GET /v1/models?limit=3"
curl -sS "${HDRS[@]}" "$URL/v1/models?limit=3"; echo

# 3. A non-streaming message. max_tokens may be omitted (MODEL_MAX_TOKENS_DEFAULT, 4096, is used);
#    it is clamped by MODEL_MAX_TOKENS caps. The answer's "model" is the name you sent.
#    -i shows the headers: x-lynkr-provider names the provider that answered (the fallback's name
#    after a failover, see FALLBACK_PROVIDER) and x-lynkr-cache says hit or miss.
say "POST /v1/messages (JSON)"
curl -sS -i "${HDRS[@]}" "$URL/v1/messages" -d @- <<JSON; echo
{
  "model": "$MODEL",
  "max_tokens": 256,
  "system": "You are terse.",
  "messages": [{"role": "user", "content": "Say hello in five words."}]
}
JSON

# 4. The same, streamed: "stream": true gives text/event-stream with event: lines
#    (message_start, content_block_start/delta/stop, message_delta, message_stop; ping on silence).
#    -N turns off curl's buffering so events print as they arrive.
say "POST /v1/messages (stream)"
curl -sS -N "${HDRS[@]}" "$URL/v1/messages" -d @- <<JSON; echo
{
  "model": "$MODEL",
  "max_tokens": 256,
  "stream": true,
  "messages": [{"role": "user", "content": "Count from 1 to 5."}]
}
JSON

# 5. Count tokens: {"input_tokens": N}. Forwarded to Anthropic-format upstreams (Azure,
#    DATABRICKS_API_FORMAT=anthropic); otherwise a deliberately high estimate.
say "POST /v1/messages/count_tokens"
curl -sS "${HDRS[@]}" "$URL/v1/messages/count_tokens" -d @- <<JSON; echo
{
  "model": "$MODEL",
  "system": "You are terse.",
  "messages": [{"role": "user", "content": "How many tokens is this?"}]
}
JSON

# 6. A tool in Anthropic's form ({name, description, input_schema}) with tool_choice forcing it.
#    tool_choice forms: {"type":"auto"} | {"type":"any"} | {"type":"tool","name":"..."} | {"type":"none"},
#    optionally with "disable_parallel_tool_use": true.
#    The answer has stop_reason "tool_use" and a tool_use block with the parsed "input".
say "POST /v1/messages with an Anthropic-style tool"
curl -sS "${HDRS[@]}" "$URL/v1/messages" -d @- <<JSON; echo
{
  "model": "$MODEL",
  "max_tokens": 512,
  "tools": [{
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
      "type": "object",
      "properties": {"city": {"type": "string"}},
      "required": ["city"]
    }
  }],
  "tool_choice": {"type": "tool", "name": "get_weather"},
  "messages": [{"role": "user", "content": "What's the weather in Paris?"}]
}
JSON

# 7. The same tool in OpenAI's form ({"type":"function","function":{name, description, parameters}}),
#    with an OpenAI-style tool_choice ("auto" | "required" | "none" |
#    {"type":"function","function":{"name":...}}). Accepted with every provider: lynkr converts
#    both to the Anthropic form before the request goes upstream.
say "POST /v1/messages with an OpenAI-style tool"
curl -sS "${HDRS[@]}" "$URL/v1/messages" -d @- <<JSON; echo
{
  "model": "$MODEL",
  "max_tokens": 512,
  "tools": [{
    "type": "function",
    "function": {
      "name": "get_weather",
      "description": "Current weather for a city",
      "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"]
      }
    }
  }],
  "tool_choice": "required",
  "messages": [{"role": "user", "content": "What's the weather in Paris?"}]
}
JSON

# 8. Completing the round trip: send the assistant's tool_use back with your tool_result
#    (is_error: true marks a failed tool). The id must match the tool_use block's id.
say "POST /v1/messages with a tool_result"
curl -sS "${HDRS[@]}" "$URL/v1/messages" -d @- <<JSON; echo
{
  "model": "$MODEL",
  "max_tokens": 512,
  "tools": [{
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
  }],
  "messages": [
    {"role": "user", "content": "What's the weather in Paris?"},
    {"role": "assistant", "content": [
      {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
    ]},
    {"role": "user", "content": [
      {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18 C, light rain"}
    ]}
  ]
}
JSON

# 9. Errors are Anthropic error JSON with a request-id header; -i shows status and headers.
say "a bad request (messages missing) -> 400 invalid_request_error"
curl -sS -i "${HDRS[@]}" "$URL/v1/messages" -d '{"model": "'"$MODEL"'", "max_tokens": 10}'; echo

# 10. Operations. Liveness is 200 while the process serves; readiness is 503 with a reason while
#     starting or shutting down, with no provider configured, or when every provider's circuit
#     breaker is open (an outage): {"ready":false,"reason":"..."}.
say "GET /health/live and /health/ready"
curl -sS "${HDRS[@]}" "$URL/health/live"; echo
curl -sS "${HDRS[@]}" "$URL/health/ready"; echo

# 11. Prometheus metrics: requests, latency and time-to-first-token histograms, tokens, cache,
#     tool calls, retries, failovers, breaker state, in-flight requests and streams, rejections.
say "GET /metrics (counters and gauges only)"
curl -sS "${HDRS[@]}" "$URL/metrics" | grep -v -e '^#' -e '_bucket' -e '_sum' -e '_count'
