#!/usr/bin/env bash
# The benchmark: builds omnigate and omnigate-bench (release), installs nginx (Debian
# package) and oha (cargo) when missing, then runs omnigate-bench, which starts the fake
# upstream, nginx and omnigate on PostgreSQL and SQLite, drives oha at each and prints one
# table. Every flag is passed on: bench/run.sh --smoke, --sustain-secs 60, --prefill,
# --scale (the poller over 100,000 unfinished tasks, webhook deliveries, two gateways),
# --capacity (the admission queue against fake providers with a real cap: see
# docs/capacity-bench.md), --help. After a full (not --smoke) run, schemathesis tests the API against its OpenAPI
# document with BENCH_SCHEMATHESIS_EXAMPLES examples per operation (100; CI runs 12; 0
# skips it), and the crash drill runs with BENCH_DRILL_TASKS tasks (1000; CI runs 200; 0
# skips it).
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth), as the tests do.
set -euo pipefail
cd "$(dirname "$0")/.."

# Whatever happens, nothing this script started outlives it.
cleanup() {
  trap - EXIT INT TERM
  local kids
  kids=$(jobs -p)
  if [ -n "$kids" ]; then kill -TERM $kids 2>/dev/null || true; wait $kids 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  echo "installing nginx (Debian package)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null ||
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
if ! command -v oha >/dev/null; then
  echo "installing oha (cargo install oha)" >&2
  cargo install --locked oha
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# BENCH_PROFILE=debug reuses the binaries `cargo test` built (CI's smoke run); figures
# worth reading need the release build.
PROFILE=${BENCH_PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin omnigate --bin omnigate-bench
else
  cargo build --quiet --bin omnigate --bin omnigate-bench
fi
# In the background, so that the trap can stop it on an interrupt.
"target/$PROFILE/omnigate-bench" --nginx "$NGINX" --oha "$(command -v oha)" "$@" &
wait $!

# Property-based API testing, with more examples than CI's run of the same test.
EXAMPLES=${BENCH_SCHEMATHESIS_EXAMPLES:-100}
full_run=1
for arg in "$@"; do
  case "$arg" in --smoke | --help | -h) full_run=0 ;; esac
done
if [ -n "${BENCH_SMOKE:-}" ]; then full_run=0; fi
if [ "$PROFILE" = release ]; then release=--release; else release=; fi
if [ "$full_run" = 1 ] && [ "$EXAMPLES" != 0 ]; then
  echo "schemathesis: $EXAMPLES examples per operation (tests/openapi.rs)" >&2
  OMNIGATE_SCHEMATHESIS_MAX_EXAMPLES=$EXAMPLES cargo test $release --quiet --test openapi \
    schemathesis -- --nocapture &
  wait $!
  echo "schemathesis: $EXAMPLES examples per operation, no problem found"
fi

# The crash drill at a large scale (CI runs it with 200 tasks and 2 kills): the real
# gateway killed with SIGKILL under load and restarted, on PostgreSQL and on SQLite.
DRILL_TASKS=${BENCH_DRILL_TASKS:-1000}
if [ "$full_run" = 1 ] && [ "$DRILL_TASKS" != 0 ]; then
  echo "crash drill: $DRILL_TASKS tasks, 32 clients, 3 kills (tests/drill_crash.rs)" >&2
  OMNIGATE_DRILL_TASKS=$DRILL_TASKS OMNIGATE_DRILL_CLIENTS=32 OMNIGATE_DRILL_KILLS=3 \
    cargo test $release --quiet --test drill_crash -- --nocapture &
  wait $!
  echo "crash drill: $DRILL_TASKS tasks per store, every task finished, nothing lost or doubled"
fi
