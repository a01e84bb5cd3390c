#!/usr/bin/env bash
# Point the unmodified Claude Code CLI at lynkr.
#
# 1. Start lynkr in another terminal, with a provider configured (see the *.env.example files):
#        cp examples/databricks.env.example .env   # then edit it, and: python lynkr.py trust
#        python lynkr.py                            # listens on http://127.0.0.1:8080
#
# 2. Then run Claude Code with these variables (source this file, or copy the exports):
#        source examples/claude-code.sh && claude
#    or for one command:
#        bash examples/claude-code.sh -p "say hi"

# Where lynkr listens. Claude Code appends /v1/messages (it keeps any path prefix you add here).
export ANTHROPIC_BASE_URL=${ANTHROPIC_BASE_URL:-http://127.0.0.1:8080}

# Claude Code refuses to start without credentials ("Not logged in"), so give it a key:
#  - if lynkr runs WITHOUT LYNKR_API_KEY (the loopback default), any dummy value works;
#  - if lynkr runs WITH LYNKR_API_KEY, use that same value: Claude Code sends it as x-api-key.
# (ANTHROPIC_AUTH_TOKEN works too: it is sent as Authorization: Bearer.)
# lynkr never forwards this key upstream; it uses DATABRICKS_API_KEY / AZURE_ANTHROPIC_API_KEY.
export ANTHROPIC_API_KEY=${LYNKR_API_KEY:-dummy}

# Keep Claude Code from calling Anthropic's own servers for non-essential traffic
# (telemetry, error reports, update checks): everything then goes through lynkr.
export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1
export DISABLE_TELEMETRY=1 DISABLE_ERROR_REPORTING=1 DISABLE_AUTOUPDATER=1

# Optional: the model name Claude Code sends. Any string passes through; lynkr maps it with
# MODEL_MAP (first matching glob) or falls back to MODEL_DEFAULT.
# export ANTHROPIC_MODEL=claude-sonnet-4-5
# Optional: if an endpoint caps output tokens below what Claude Code asks for (32000-128000),
# cap it in lynkr with MODEL_MAX_TOKENS, or here with:
# export CLAUDE_CODE_MAX_OUTPUT_TOKENS=8192

# Run claude when executed (not when sourced).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    exec claude "$@"
fi
