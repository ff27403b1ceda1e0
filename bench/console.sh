#!/usr/bin/env bash
# Times every console page with 100,000 tasks in the store (PostgreSQL): the console's
# target is every page under 100 ms of server time. Prints one table of p50 / p95 / max
# per page, from CONSOLE_BENCH_REQUESTS sequential requests each on loopback (so the time
# is the server's, plus well under a millisecond of curl).
#
#   bench/console.sh            # release build, 100,000 tasks, 30 requests per page
#   bench/console.sh --smoke    # 2,000 tasks, 3 requests per page: checks the harness
#
# BENCH_PROFILE=debug uses the debug binary. It stops the gateway and drops its database
# on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

TASKS=${CONSOLE_BENCH_TASKS:-100000}
REQS=${CONSOLE_BENCH_REQUESTS:-30}
if [ "${1:-}" = "--smoke" ]; then TASKS=2000; REQS=3; fi
PROFILE=${BENCH_PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin omnigate
else
  cargo build --quiet --bin omnigate
fi
BIN=target/$PROFILE/omnigate

PG="psql -q -h 127.0.0.1 -U postgres"
DB=omnigate_bench_console_$$
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
ADMIN=bench-admin-token-$$-0123456789abcdef0123
GW=""
cleanup() {
  [ -n "$GW" ] && kill "$GW" 2>/dev/null && wait "$GW" 2>/dev/null || true
  $PG -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
$PG -d postgres -c "CREATE DATABASE $DB"

OMNIGATE_SERVER__LISTEN=127.0.0.1:$PORT \
OMNIGATE_DATABASE__URL=postgres://postgres@127.0.0.1:5432/$DB \
OMNIGATE_SANDBOX__ENABLED=always \
OMNIGATE_ADMIN__TOKEN_ENV=BENCH_CONSOLE_ADMIN_TOKEN BENCH_CONSOLE_ADMIN_TOKEN=$ADMIN \
OMNIGATE_LOG__FORMAT=json \
  "$BIN" >"$WORK/gateway.log" 2>&1 &
GW=$!
for _ in $(seq 100); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.2; done
KEY=$(grep -o 'og_[A-Za-z0-9]*' "$WORK/gateway.log" | head -1)
KEY_ID=$($PG -d "$DB" -Atc "SELECT id FROM api_keys LIMIT 1")

# The tasks: spread over the last 14 days, three providers, both models, every state.
# Unfinished ones are due far in the future, so the poller leaves them alone.
$PG -d "$DB" <<SQL
INSERT INTO tasks (id, api_key_id, model, request, state, provider, provider_task_id, sandbox,
                   cost_estimated_micros, cost_final_micros, billed_seconds, routing_reason,
                   created_at, updated_at, completed_at, next_poll_at)
SELECT 'vgt_bench' || lpad(g::text, 9, '0'), '$KEY_ID',
       CASE WHEN g % 2 = 0 THEN 'kling-video-o1' ELSE 'kling-v3-omni' END,
       '{"model":"kling-video-o1","prompt":"a benchmark task","aspect_ratio":"16:9"}',
       (ARRAY['completed','completed','completed','failed','in_progress','queued'])[1 + g % 6],
       (ARRAY['sandbox-modellix','sandbox-kling','sandbox-apimodels'])[1 + g % 3],
       'sbx-' || g, 1, 285000, CASE WHEN g % 6 < 3 THEN 285000 END, 5, 'bench',
       t, t, CASE WHEN g % 6 < 4 THEN t + 60000 END,
       (extract(epoch from now()) * 1000)::bigint + 86400000
FROM generate_series(1, $TASKS) g,
     LATERAL (SELECT (extract(epoch from now()) * 1000)::bigint - g::bigint * (1209600000 / $TASKS) AS t) ts;
INSERT INTO task_status_changes (task_id, status, at)
SELECT id, s, created_at FROM tasks, unnest(ARRAY['submitting','queued','in_progress','completed']) s
WHERE id = 'vgt_bench000000006' OR id = 'vgt_bench000000012';
ANALYZE;
SQL

sign_in() { # $1 cookie jar, $2 token
  local page nonce
  page=$(curl -s -c "$1" -b "$1" "$BASE/console/login")
  nonce=$(sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' <<<"$page" | head -1)
  curl -s -o /dev/null -c "$1" -b "$1" --data-urlencode "csrf=$nonce" --data-urlencode "token=$2" "$BASE/console/login"
}
sign_in "$WORK/op" "$ADMIN"
sign_in "$WORK/key" "$KEY"
TODAY=$(date -u +%F)
WEEK_AGO=$(date -u -d '7 days ago' +%F)
# The cursor of a page deep in the list: the 50,000th-newest task (or the middle one).
MID=$((TASKS / 2))
CURSOR=$($PG -d "$DB" -Atc "SELECT created_at || '.' || id FROM tasks ORDER BY created_at DESC, id DESC OFFSET $MID LIMIT 1")

time_page() { # $1 label, $2 jar, $3 path
  local times=() code
  code=$(curl -s -o /dev/null -w '%{http_code}' -b "$2" "$BASE$3")
  if [ "$code" != 200 ]; then echo "FAIL: $1 answered $code" >&2; exit 1; fi
  for _ in $(seq "$REQS"); do
    times+=("$(curl -s -o /dev/null -w '%{time_total}' -b "$2" "$BASE$3")")
  done
  printf '%s\n' "${times[@]}" | python3 -c '
import sys
label = sys.argv[1]
t = sorted(float(x) * 1000 for x in sys.stdin)
p = lambda q: t[min(len(t) - 1, int(q * len(t)))]
print(f"| {label} | {p(0.5):.1f} | {p(0.95):.1f} | {t[-1]:.1f} |")' "$1"
}

echo
echo "Console pages, $TASKS tasks in PostgreSQL, $REQS requests each ($PROFILE build), ms:"
echo
echo "| page | p50 | p95 | max |"
echo "|---|---|---|---|"
time_page "operator: tasks, first page" "$WORK/op" "/console/tasks"
time_page "operator: tasks, page at the middle of the list" "$WORK/op" "/console/tasks?after=$CURSOR"
time_page "operator: tasks, status=failed" "$WORK/op" "/console/tasks?status=failed"
time_page "operator: tasks, provider + model + last 7 days" "$WORK/op" "/console/tasks?provider=sandbox-kling&model=kling-v3-omni&from=$WEEK_AGO&to=$TODAY"
time_page "operator: tasks, by key" "$WORK/op" "/console/tasks?key=$KEY_ID"
time_page "operator: task page" "$WORK/op" "/console/tasks/vgt_bench000000006"
time_page "operator: providers" "$WORK/op" "/console/providers"
time_page "operator: keys" "$WORK/op" "/console/keys"
time_page "operator: usage (14 days)" "$WORK/op" "/console/usage"
time_page "key: tasks" "$WORK/key" "/console/tasks"
time_page "key: tasks, status=in_progress" "$WORK/key" "/console/tasks?status=in_progress"
time_page "key: usage (14 days)" "$WORK/key" "/console/usage"
time_page "key: playground" "$WORK/key" "/console/playground"
