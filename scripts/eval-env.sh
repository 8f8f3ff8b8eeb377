# Shared set-up of the quality measurements (sourced by scripts/*-quality.sh, from the
# checkout's root): the venv with every corpus pinned in scripts/requirements-eval*.txt
# (one file per measurement; installed with --no-deps --require-hashes when one is missing), and a `tollgate` binary
# that has the given subcommand ($TOLLGATE_BIN, else the release build, else a debug build).
# Sets $venv and $bin.
eval_env() {
  local subcommand="$1" home pin
  home="${TOLLGATE_HOME:-$HOME/.tollgate}"
  venv="$home/venv"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  local installed
  installed="$("$venv/bin/pip" freeze 2>/dev/null || true)"
  local req
  for req in scripts/requirements-eval*.txt; do
    for pin in $(grep -oE '^[A-Za-z0-9._-]+==[^ ]+' "$req"); do
      if ! grep -qixF -e "$pin" <<<"$installed"; then
        "$venv/bin/pip" install -q --no-deps --require-hashes -r "$req"
        break
      fi
    done
  done
  if [ -n "${TOLLGATE_BIN:-}" ]; then
    bin="$TOLLGATE_BIN"
  elif [ -x target/release/tollgate ] && target/release/tollgate "$subcommand" --help >/dev/null 2>&1; then
    bin=target/release/tollgate
  else
    cargo build -q -p tollgate-ext-proc --bin tollgate
    bin=target/debug/tollgate
  fi
}
