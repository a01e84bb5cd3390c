#!/usr/bin/env bash
# An annotated curl session for lynkr's git, test, repository-index and MCP tools, and its
# operations routes. Start lynkr first, in the git repository you want the tools to work on:
#
#   cd /path/to/repo && python /path/to/lynkr.py             # WORKSPACE_ROOT = current directory
#   bash examples/workspace-session.sh                         # against http://127.0.0.1:8080
#   LYNKR_URL=http://127.0.0.1:9000 bash examples/workspace-session.sh
#   LYNKR_API_KEY=... bash examples/workspace-session.sh       # when lynkr was started with LYNKR_API_KEY
#   RUN_TESTS=1 bash examples/workspace-session.sh             # also run the project's test command
#
# None of this needs a model provider. The git steps only read: nothing is staged, committed,
# pushed or pulled. Step 4 runs the project's tests only with RUN_TESTS=1. Step 5 rebuilds the
# index, which also rewrites the generated block of CLAUDE.md (unless lynkr runs with
# LYNKR_CLAUDE_MD=false) -- lynkr already did that at startup by default.
#
# To see MCP tools in step 6, start lynkr with a manifest, e.g.
#   pip install '.[mcp]' mcp-server-time && MCP_SERVER_MANIFEST=examples/mcp.json python lynkr.py
set -uo pipefail

URL=${LYNKR_URL:-http://127.0.0.1:8080}
HDRS=(-H "content-type: application/json")
if [[ -n "${LYNKR_API_KEY:-}" ]]; then
    HDRS+=(-H "x-api-key: $LYNKR_API_KEY")
fi

say() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
# POST /v1/tools/NAME with a JSON input; prints is_error and the content (JSON content pretty-printed,
# long output cut at 60 lines). The HTTP answer is always 200 {"content": ..., "is_error": ...}.
tool() {
    local input=${2:-'{}'}
    curl -sS "${HDRS[@]}" "$URL/v1/tools/$1" -d "$input" | python3 -c '
import json, sys
body = json.load(sys.stdin)
content = body.get("content")
if isinstance(content, list):  # MCP tools answer with content blocks
    content = "\n".join(b.get("text", "[%s]" % b.get("type")) for b in content)
try:
    head, _, rest = str(content).partition("\n\n")
    content = json.dumps(json.loads(head), indent=2) + ("\n\n" + rest if rest else "")
except ValueError:
    pass
lines = str(content).splitlines()
print("is_error:", body.get("is_error"))
print("\n".join(lines[:60]) + (f"\n[... {len(lines) - 60} more lines]" if len(lines) > 60 else ""))'
}

# 1. Git, read-only. workspace_git_status: branch line (with ahead/behind) and changed files.
#    Every git tool answers "... is not a git repository" if WORKSPACE_ROOT is not inside one.
say "workspace_git_status / workspace_git_branches / workspace_git_log"
tool workspace_git_status
tool workspace_git_branches
tool workspace_git_log '{"max_count": 5}'

# 2. Diffs: per-file stats as JSON, then the patch (cut at max_bytes). staged: true diffs the index
#    against HEAD; from_ref/to_ref diff between commits. workspace_diff_review adds languages,
#    whether tests were touched, and risks (deleted files, lockfiles, CI config, migrations, large
#    changes, secret-looking lines) -- computed locally; ai_review: true would ask the model too.
say "workspace_git_diff (working tree) and workspace_diff_review"
tool workspace_git_diff '{"max_bytes": 2000}'
tool workspace_diff_review '{}'

# 3. Release notes from the last tag (or the whole history) to HEAD, as Markdown.
#    Nothing the model sends is read as a git option: a ref like --output=... is refused.
say "workspace_release_notes, and a refused option-like ref"
tool workspace_release_notes '{}'
tool workspace_git_log '{"ref": "--output=/tmp/pwned"}'

# 4. Tests. workspace_test_run runs WORKSPACE_TEST_COMMAND (or the detected npm test / go test /
#    cargo test / python -m pytest) and records exit code, counts, coverage and the git tree it
#    ran on; with POLICY_GIT_REQUIRE_TESTS=true only content a passing run saw can be committed.
if [[ "${RUN_TESTS:-0}" == "1" ]]; then
    say "workspace_test_run"
    tool workspace_test_run '{}'
fi
say "workspace_test_summary and workspace_test_history"
tool workspace_test_summary
tool workspace_test_history '{"limit": 3}'

# 5. The repository index: an incremental rebuild (only changed files are re-parsed), then
#    queries. Symbol search ranks exact, prefix, substring and subsequence matches.
say "workspace_index_rebuild / project_summary"
tool workspace_index_rebuild
tool project_summary
say "workspace_symbol_search for 'main', then references and definition of the first hit"
search=$(curl -sS "${HDRS[@]}" "$URL/v1/tools/workspace_symbol_search" -d '{"query": "main", "limit": 5}')
printf '%s\n' "$search" | python3 -c 'import json,sys; print(json.load(sys.stdin)["content"])'
name=$(printf '%s' "$search" | python3 -c '
import json, sys
try:
    print(json.loads(json.load(sys.stdin)["content"])[0]["name"])
except (ValueError, LookupError, TypeError):
    pass')
if [[ -n "$name" ]]; then
    tool workspace_symbol_references "{\"name\": \"$name\"}"
    tool workspace_goto_definition "{\"name\": \"$name\"}"
fi

# 6. MCP: the configured servers (status, placement, tools). Their tools are also plain tools,
#    named mcp_<server>_<tool>, e.g. mcp_time_get_current_time with examples/mcp.json.
say "workspace_mcp_servers"
tool workspace_mcp_servers
if curl -sS "${HDRS[@]}" "$URL/v1/tools" | grep -q '"mcp_time_get_current_time"'; then
    tool mcp_time_get_current_time '{"timezone": "Europe/Paris"}'
fi

# 7. Operations: liveness, readiness (503 with a reason while starting, shutting down, with no
#    provider configured, or when every provider's circuit breaker is open) and Prometheus metrics.
say "GET /health/live, /health/ready, /metrics (first lines)"
curl -sS "${HDRS[@]}" "$URL/health/live"; echo
curl -sS -i "${HDRS[@]}" "$URL/health/ready" | sed -n '1p;$p'; echo
curl -sS "${HDRS[@]}" "$URL/metrics" | grep -v -e '^#' -e '_bucket' | sed -n '1,15p'   # not head: under pipefail its early exit fails the pipeline
