#!/usr/bin/env bash
# Runs every fuzz target (or those named after the time) for a bounded time each, on the
# nightly toolchain, and prints how many inputs each ran. Exits non-zero when a target
# crashes; the input that did it is in fuzz/artifacts/TARGET/ and the log in
# fuzz/target/logs/TARGET.log.
#
#   fuzz/run.sh [SECONDS [TARGET...]]     (default: 30 seconds, every target)
#
# The corpus each target grows is kept in fuzz/corpus/TARGET (not committed) and starts
# from the seeds in fuzz/seeds/TARGET. Builds go to fuzz/target, never the main target/.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-30}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: fuzz/run.sh [SECONDS [TARGET...]]  (SECONDS a whole number > 0)" >&2
  exit 2
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: no nightly toolchain (rustup toolchain install nightly)" >&2
  exit 3
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# Release builds with debug assertions and overflow checks (cargo-fuzz's default), without
# AddressSanitizer: omnigate forbids unsafe code, and twice the executions find more.
# Built once up front, so that a build error shows as one and the time limits are all fuzzing.
flags=(--sanitizer none)
cargo +nightly fuzz build "${flags[@]}"
mkdir -p target/logs

failed=0
summary=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  log="target/logs/$target.log"
  echo "== $target: ${seconds}s" >&2
  if cargo +nightly fuzz run "${flags[@]}" "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -dict=json.dict -print_final_stats=1 >"$log" 2>&1; then
    outcome=ok
  else
    outcome=CRASH
    failed=1
    tail -n 40 "$log" >&2
  fi
  # libFuzzer's last word: "Done N runs in S second(s)" (or stat::number_of_executed_units).
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1 || true)
  corpus=$(find "corpus/$target" -type f | wc -l)
  summary+=("$(printf '%-20s %-6s %12s runs %6s corpus files' "$target" "$outcome" "${runs:-?}" "$corpus")")
done

printf '%s\n' "${summary[@]}"
exit "$failed"
