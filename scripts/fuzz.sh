#!/usr/bin/env bash
# Fuzz every target (fuzz/fuzz_targets/) for a bounded time with cargo-fuzz
# (libFuzzer, nightly Rust), one target at a time, one job each.
#
#   scripts/fuzz.sh                    every target, 60 s each
#   scripts/fuzz.sh --seconds 300      every target, 5 minutes each
#   scripts/fuzz.sh --target sse       one target (repeat --target for more)
#   scripts/fuzz.sh --list             the targets
#   scripts/fuzz.sh --cmin             minimize the checked-in corpora instead (inputs cut
#                                      to 1 KiB, at most 300 a target, seeds and crashes kept)
#
# New inputs that grow coverage go to fuzz/corpus/<target>/ (checked in;
# the corpus tests run them on stable: core/tests/fuzz_corpus.rs and
# wasm-filter/tests/fuzz_corpus.rs). A crashing input is written to
# fuzz/artifacts/<target>/ and listed at the end; reproduce it with
#   cd fuzz && cargo +nightly fuzz run --sanitizer none <target> artifacts/<target>/<file>
# and, once fixed, copy it into fuzz/corpus/<target>/ so CI keeps it fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=60
max_len=1024
max_files=300
targets=()
cmin=0
list=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
    --target) targets+=("$2"); shift 2 ;;
    --target=*) targets+=("${1#*=}"); shift ;;
    --cmin) cmin=1; shift ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

all_targets() { ls fuzz/fuzz_targets | sed -n 's/\.rs$//p' | sort; }
if [ "$list" = 1 ]; then all_targets; exit 0; fi
if [ ${#targets[@]} -eq 0 ]; then mapfile -t targets < <(all_targets); fi
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "no such target: $t (see --list)" >&2; exit 2; }
done

# What cargo-fuzz needs: a nightly toolchain (for the sanitizer flags) and cargo-fuzz itself.
if ! rustup toolchain list | grep -q '^nightly'; then
  say "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cd fuzz
# The fuzz crate builds in its own target directory (fuzz/target), never the workspace's.
unset CARGO_TARGET_DIR
say "building ${#targets[@]} target(s)"
# Optimized, with debug assertions and overflow checks (cargo-fuzz's
# default); no sanitizer: the project's code has no `unsafe` (denied in the
# workspace), and without ASan twice as many inputs run.
flags=(--sanitizer none)
cargo +nightly fuzz build "${flags[@]}"

summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  if [ "$cmin" = 1 ]; then
    # Keep what CI can run in seconds: the seeds and pinned crashes as they
    # are, plus the inputs (cut to $max_len bytes) that keep the coverage,
    # at most $max_files of them.
    before=$(ls "corpus/$t" | wc -l)
    keep=$(mktemp -d)
    find "corpus/$t" -maxdepth 1 -type f \( -name 'seed-*' -o -name 'crash-*' \) -exec mv {} "$keep/" \;
    cargo +nightly fuzz cmin "${flags[@]}" "$t" "corpus/$t" -- -rss_limit_mb=2048 -max_len="$max_len" 2>"artifacts/$t.cmin.log"
    # Names are content hashes: the first ones by name are a fair sample.
    ls "corpus/$t" | sort | tail -n +"$((max_files + 1))" | sed "s|^|corpus/$t/|" | xargs -r rm -f
    mv "$keep"/* "corpus/$t/" 2>/dev/null || true
    rmdir "$keep"
    say "$t: corpus $before -> $(ls "corpus/$t" | wc -l) inputs, $(du -sb "corpus/$t" | cut -f1) bytes"
    continue
  fi
  before=$(ls "corpus/$t" | wc -l)
  crashes_before=$(ls "artifacts/$t" | wc -l)
  say "$t: fuzzing for ${seconds}s (corpus: $before inputs)"
  status=0
  # One process, one job (no -jobs/-fork: the machine is shared); an input
  # slower than 10 s is a hang; inputs up to 64 KiB (recorded streams are a few KiB).
  cargo +nightly fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 2>"artifacts/$t.log" || status=$?
  after=$(ls "corpus/$t" | wc -l)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "artifacts/$t.log" | tail -1)
  crashes=$(( $(ls "artifacts/$t" | wc -l) - crashes_before ))
  line="$t: ${seconds}s, ${execs:-?} runs, corpus $before -> $after, new crashes: $crashes"
  summary+=("$line")
  if [ "$status" != 0 ]; then
    say "$t: libFuzzer stopped with status $status; its log: fuzz/artifacts/$t.log"
    grep -m1 -A12 -E 'panicked at|ERROR: libFuzzer|SUMMARY' "artifacts/$t.log" >&2 || true
  fi
done

if [ "$cmin" = 0 ]; then
  say "summary"
  printf '%s\n' "${summary[@]}"
  found=$(find artifacts -type f ! -name '*.log' 2>/dev/null | sort)
  if [ -n "$found" ]; then
    say "crashing inputs (reproduce: cd fuzz && cargo +nightly fuzz run --sanitizer none <target> <file>)"
    printf '%s\n' "$found" | sed "s|^|$root/fuzz/|"
    exit 1
  fi
fi
