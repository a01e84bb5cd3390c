#!/usr/bin/env bash
# An annotated curl session for lynkr's server tools, the agent loop and the session store.
# (Git, tests, the repository index and MCP: see examples/workspace-session.sh.)
# Start lynkr first, in the workspace you want the tools to work on:
#
#   cd /path/to/project && python /path/to/lynkr.py          # WORKSPACE_ROOT = current directory
#   bash examples/tools-session.sh                             # against http://127.0.0.1:8080
#   LYNKR_URL=http://127.0.0.1:9000 bash examples/tools-session.sh
#   LYNKR_API_KEY=... bash examples/tools-session.sh           # when lynkr was started with LYNKR_API_KEY
#
# Steps 1-7 need no model provider: direct tool calls run in lynkr itself. Step 8 calls the model,
# so without a provider it prints a 503 api_error naming the variables to set.
#
# NOTE: step 4 writes, patches and then deletes a scratch file, lynkr-demo.txt, in WORKSPACE_ROOT,
# and step 5 creates and deletes a task. Nothing else in the workspace is changed.
set -uo pipefail

URL=${LYNKR_URL:-http://127.0.0.1:8080}
MODEL=${LYNKR_MODEL:-claude-sonnet-4-5}
SESSION=${LYNKR_SESSION:-tools-demo-$$}   # sent as x-session-id in step 8, exported in step 9

HDRS=(-H "content-type: application/json" -H "anthropic-version: 2023-06-01")
if [[ -n "${LYNKR_API_KEY:-}" ]]; then
    HDRS+=(-H "x-api-key: $LYNKR_API_KEY")
fi

say() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
# POST /v1/tools/NAME with the JSON input on stdin (or as $2). The answer is always HTTP 200 with
# {"content": ..., "is_error": true|false}; only an unknown tool (404) or a body that is not a
# JSON object (400) is an HTTP error.
tool() {
    if [[ $# -ge 2 ]]; then
        curl -sS "${HDRS[@]}" "$URL/v1/tools/$1" -d "$2"
    else
        curl -sS "${HDRS[@]}" "$URL/v1/tools/$1" -d @-
    fi
    echo
}

# 1. The tool list: {"data": [{"name", "description", "input_schema", "enabled"}, ...]}.
#    enabled is false for tools matched by POLICY_DISALLOWED_TOOLS. Printed here as one line per tool.
say "GET /v1/tools"
curl -sS "${HDRS[@]}" "$URL/v1/tools" | python3 -c '
import json, sys
for t in json.load(sys.stdin)["data"]:
    schema = t["input_schema"]
    need = set(schema.get("required", []))
    args = ", ".join(p + ("*" if p in need else "") for p in schema.get("properties", {}))
    print(t["name"].ljust(28), "" if t["enabled"] else "(disabled)", args)'
echo "(* = required)"

# 2. Files. Paths are relative to WORKSPACE_ROOT. fs_list lists one level unless recursive is
#    true or the glob contains '/'. A glob without '/' matches names ('*.py'); one with '/' matches
#    the path from WORKSPACE_ROOT, '*' within one folder, '**/' across folders ('src/**/*.py').
say "fs_list: top level, then every *.py file"
tool fs_list '{}'
tool fs_list '{"glob": "*.py", "recursive": true, "max_entries": 20}'

# 3. Search: literal and case-insensitive by default, "regex": true for a regular expression.
#    One path:line:text line per match; ripgrep is used when it is installed.
say "workspace_search"
tool workspace_search '{"query": "def ", "max_results": 5}'

# 4. Write, patch, read back, delete. edit_patch takes a unified diff and is atomic: every hunk
#    of every file applies, or nothing changes. A '+++ /dev/null' side deletes the file.
say "fs_write + edit_patch + fs_read + delete via edit_patch"
tool fs_write '{"path": "lynkr-demo.txt", "content": "one\ntwo\n"}'
tool edit_patch <<'JSON'
{"patch": "--- a/lynkr-demo.txt\n+++ b/lynkr-demo.txt\n@@ -1,2 +1,2 @@\n one\n-two\n+TWO\n"}
JSON
tool fs_read '{"path": "lynkr-demo.txt", "line_numbers": true}'
tool edit_patch <<'JSON'
{"patch": "--- a/lynkr-demo.txt\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-one\n-TWO\n"}
JSON

# 5. Tasks, kept in the session database (SESSION_DB_PATH). Results are JSON text.
say "workspace_task_create / set_status / list / delete"
created=$(tool workspace_task_create '{"title": "Try lynkr server tools", "priority": "high"}')
echo "$created"
task_id=$(printf '%s' "$created" | python3 -c 'import json,sys; print(json.loads(json.load(sys.stdin)["content"])["id"])')
tool workspace_task_set_status "{\"id\": $task_id, \"status\": \"done\"}"
tool workspace_tasks_list '{"status": "done"}'
tool workspace_task_delete "{\"id\": $task_id}"

# 6. Policy denials and bad input are is_error results, not HTTP errors. Each names the variable
#    (or the input field) to change. Blocked paths match ignoring case: .ENV is .env.
say "denied and invalid calls"
tool fs_read '{"path": ".env"}'                   # POLICY_FILE_BLOCKED_PATHS (default covers .env, .git, *.pem, id_rsa*)
tool fs_read '{"path": "../outside.txt"}'         # outside WORKSPACE_ROOT
tool fs_read '{"path": "x", "start_line": 0}'     # invalid input: input.start_line: must be >= 1
tool web_fetch '{"url": "http://127.0.0.1/"}'     # loopback refused unless in WEB_SEARCH_ALLOWED_HOSTS

# 7. Web search needs WEB_SEARCH_ENDPOINT (a SearxNG URL with JSON output enabled); without it the
#    result says so. web_fetch returns "URL:", "Title:" and the page's readable text.
say "web_search"
tool web_search '{"query": "anthropic messages api", "max_results": 3}'

# 8. The agent loop. Listing a server tool by name is enough: lynkr replaces the entry with its own
#    definition. The OpenAI form {"type": "function", "function": {"name": "workspace_search"}}
#    works too, and so does a tool_choice naming the tool, even if "tools" omits it. If the model
#    calls workspace_search, lynkr runs it and calls the model again. The reply carries a text
#    record "[lynkr ran server tool workspace_search {...}]" with the result, unless
#    LYNKR_SHOW_TOOL_ACTIVITY=false. -i shows the x-lynkr-cache header (hit or miss).
say "POST /v1/messages offering workspace_search (session $SESSION)"
curl -sS -i "${HDRS[@]}" -H "x-session-id: $SESSION" "$URL/v1/messages" -d @- <<JSON; echo
{
  "model": "$MODEL",
  "max_tokens": 1024,
  "tools": [{"name": "workspace_search"}],
  "messages": [{"role": "user", "content": "Use workspace_search to find where 'def main' appears, then answer in one line."}]
}
JSON

# 9. The session store: the turn above, exported as JSON. kind is user, assistant, or
#    server_tool (the model's tool_use and lynkr's tool_result, which the client never sees).
#    If step 8 failed (e.g. no provider), nothing was recorded and the second call is a 404.
say "GET /v1/sessions?limit=3 and GET /v1/sessions/$SESSION"
curl -sS "${HDRS[@]}" "$URL/v1/sessions?limit=3"; echo
curl -sS "${HDRS[@]}" "$URL/v1/sessions/$SESSION"; echo
