#!/usr/bin/env bash
# Takes the screenshot of the console's queue view that docs/capacity.md shows
# (docs/images/console-queue.png): a gateway over two capped providers (unreachable: no
# task is submitted while the picture is taken) on a fresh PostgreSQL database filled with
# three keys' waiting tasks, as a burst leaves them, then headless Chromium signed in as the
# operator (bench/console_queue_shot.py). Needs what tests/prepare.sh installs.
#
#   bench/console-queue-shot.sh [OUT.png]
#
# BENCH_PROFILE=release uses the release binary. It stops the gateway and drops its
# database on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-docs/images/console-queue.png}
PROFILE=${BENCH_PROFILE:-debug}
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin omnigate
else
  cargo build --quiet --bin omnigate
fi
BIN=target/$PROFILE/omnigate

PG="psql -q -h 127.0.0.1 -U postgres"
DB=omnigate_queue_shot_$$
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
ADMIN=queue-shot-admin-token-$$-0123456789abcdef
GW=""
cleanup() {
  [ -n "$GW" ] && kill "$GW" 2>/dev/null && wait "$GW" 2>/dev/null || true
  $PG -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
$PG -d postgres -c "CREATE DATABASE $DB"

# Two providers of both models, capped at 20 and 10; nothing listens at their address.
cat >"$WORK/omnigate.toml" <<TOML
[queue]
# Only this run's own wakes would start a waiting task: none comes while the picture is taken.
tick_ms = 3600000

[providers.cheap]
dialect = "apimodels"
base_url = "http://127.0.0.1:9"
api_key_env = "QUEUE_SHOT_PROVIDER_KEY"
models = ["kling-video-o1", "kling-v3-omni"]
max_in_flight = 20
[providers.cheap.prices.kling-video-o1]
std = 0.0633
[providers.cheap.prices.kling-v3-omni]
std = 0.0633

[providers.pricier]
dialect = "apimodels"
base_url = "http://127.0.0.1:9"
api_key_env = "QUEUE_SHOT_PROVIDER_KEY"
models = ["kling-v3-omni"]
max_in_flight = 10
[providers.pricier.prices.kling-v3-omni]
std = 0.0712
TOML

OMNIGATE_CONFIG=$WORK/omnigate.toml \
OMNIGATE_SERVER__LISTEN=127.0.0.1:$PORT \
OMNIGATE_DATABASE__URL=postgres://postgres@127.0.0.1:5432/$DB \
OMNIGATE_ADMIN__TOKEN_ENV=QUEUE_SHOT_ADMIN_TOKEN QUEUE_SHOT_ADMIN_TOKEN=$ADMIN \
QUEUE_SHOT_PROVIDER_KEY=not-used \
OMNIGATE_LOG__FORMAT=json \
  "$BIN" >"$WORK/gateway.log" 2>&1 &
GW=$!
for _ in $(seq 150); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.2; done
curl -sf "$BASE/readyz" >/dev/null || { cat "$WORK/gateway.log"; exit 1; }

# Three teams mid-burst: 1,000, 100 and 10 tasks sent, 30 running (both providers full,
# the pricier one lowered to 8 after a capacity refusal), the rest waiting in fair order.
NOW=$(python3 -c 'import time; print(int(time.time() * 1000))')
$PG -d "$DB" <<SQL
INSERT INTO api_keys (id, name, key_hash, key_prefix, created_at, queue_weight, max_queued)
VALUES ('key_render', 'render-farm', 'h1', 'og_rend', 0, 1, 2000),
       ('key_ads', 'ads-team', 'h2', 'og_adst', 0, 2, NULL),
       ('key_labs', 'labs', 'h3', 'og_labs', 0, 1, NULL);
UPDATE provider_capacity SET in_flight = 20 WHERE provider = 'cheap';
UPDATE provider_capacity SET in_flight = 8, effective_cap = 8, refusals = 3,
       cooldown_until = $NOW + 20000 WHERE provider = 'pricier';
INSERT INTO tasks (id, api_key_id, model, request, state, created_at, updated_at,
                   next_poll_at, queue_tag, queue_priority, waiting_since, max_wait_until)
SELECT 'vgt_shot_' || k.id || '_' || lpad(g::text, 5, '0'), k.id,
       CASE WHEN g % 4 = 0 THEN 'kling-video-o1' ELSE 'kling-v3-omni' END,
       '{"model":"kling-v3-omni","prompt":"a burst task","aspect_ratio":"16:9"}', 'waiting',
       $NOW - k.age, $NOW - k.age, 0, g * 1000000 / k.weight, 1,
       $NOW - k.age + g * 10, $NOW - k.age + 3600000
FROM (VALUES ('key_render', 975, 1, 754000), ('key_ads', 88, 2, 312000), ('key_labs', 7, 1, 45000))
       AS k(id, n, weight, age),
     LATERAL generate_series(1, k.n) g;
UPDATE api_keys SET queued = (SELECT COUNT(*) FROM tasks t WHERE t.api_key_id = api_keys.id AND t.state = 'waiting');
ANALYZE;
SQL

python3 bench/console_queue_shot.py "$BASE" "$ADMIN" "$OUT" "vgt_shot_key_labs_00003"
echo "wrote $OUT"
