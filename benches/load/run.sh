#!/usr/bin/env bash
# Load measurement: Tollgate against direct-to-mock and nginx, same run.
#   bash benches/load/run.sh [SECONDS_PER_RUN=8] [ROUNDS=3]
# Targets (each alternated with direct to the mock in every round):
#   direct      the fast mock upstream (benches/load/mock_upstream.rs)
#   nginx       nginx as a plain proxy (benches/load/nginx.conf), if installed
#   embedded    Tollgate on SQLite + in-process counters
#   pg-redis    Tollgate on Postgres + Redis (local services), personal billing
#   pg-team     the same, team-billed against a hard monthly limit
# Loads: non-streaming at 64 and 1 connections, streaming at 64. Each
# round runs every load on every target, in reverse order on even rounds
# (drift cancels); the payers start with $1,000,000, so the ledger grows
# through the run. For the Postgres + Redis targets the CPU of Postgres and
# Redis per request is measured too. At the end each payer's charge is
# checked against what wrk saw served (2xx answers times the price of one)
# and, for the Postgres + Redis payer, the balance against the ledger's sum
# (to the nano-dollar: `LEDGER MISMATCH` otherwise).
# Then 1,000 concurrent slow streams through a fresh embedded gateway (RSS).
# Prints requests/s, p50/p99, non-2xx, the target's CPU ms per request, and
# ratios to direct and to nginx, added latency over direct, and RSS; writes
# benches/load/last-run.{csv,json} and last-memory.csv (all gitignored).
# Needs wrk (apt-get install wrk); nginx is optional (apt-get install nginx).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-8}
rounds=${2:-3}
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 2; }
pg_admin=${TOLLGATE_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}
redis_url=${TOLLGATE_TEST_REDIS:-redis://127.0.0.1:6379}

cargo build --release --features bench-tools --bin tollgate --bin tollgate-mock-upstream >&2
work=$(mktemp -d)
tag="bench$(date +%s)"
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  psql "$pg_admin" -q -c "DROP DATABASE IF EXISTS $tag WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

ulimit -n 65536 2>/dev/null || true
./target/release/tollgate-mock-upstream 127.0.0.1:18080 &
mock_pid=$!
# A slow model: stream events 100 ms apart (for memory under many streams).
./target/release/tollgate-mock-upstream 127.0.0.1:18082 100 &
nginx_pid=""
if command -v nginx >/dev/null; then
  mkdir -p "$work/nginx/logs"
  nginx -p "$work/nginx" -c "$PWD/benches/load/nginx.conf" -g "pid $work/nginx.pid;" &
  nginx_master=$!
  # CPU is counted on the worker, which does the proxying.
  for _ in $(seq 1 50); do nginx_pid=$(pgrep -P "$nginx_master" | head -1 || true); [ -n "$nginx_pid" ] && break; sleep 0.1; done
fi

models='[[providers]]
name = "mock-upstream"
kind = "openai"
base_url = "http://127.0.0.1:18080/v1"
[[models]]
name = "gpt-4o-mini"
provider = "mock-upstream"
input_usd_per_mtok = "0.15"
output_usd_per_mtok = "0.60"
[[providers]]
name = "slow-upstream"
kind = "openai"
base_url = "http://127.0.0.1:18082/v1"
[[models]]
name = "slow-model"
provider = "slow-upstream"
input_usd_per_mtok = "0.15"
output_usd_per_mtok = "0.60"'
admin="tga-load-test-token-000000000000000000000"
start_gateway() { # name port database_url redis_url
  cat > "$work/$1.toml" <<TOML
[server]
listen = "127.0.0.1:$2"
admin_token = "$admin"
[storage]
database_url = "$3"
redis_url = "$4"
redis_prefix = "$tag"
[ledger]
spool_dir = "$work/spool-$1"
$models
TOML
  RUST_LOG=warn ./target/release/tollgate serve --config "$work/$1.toml" 2>"$work/$1.log" &
  echo $! > "$work/$1.pid"
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && return; sleep 0.1; done
  echo "gateway $1 did not start:" >&2; cat "$work/$1.log" >&2; exit 1
}
api() { # port method path key body
  curl -sf -X "$2" "http://127.0.0.1:$1$3" -H "Authorization: Bearer $4" -H 'content-type: application/json' ${5:+-d "$5"}
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

start_gateway embedded 14000 "sqlite://$work/tollgate.db" ""
embedded_key=$(./target/release/tollgate users add load@example.com --credits 1000000 --config "$work/embedded.toml" | awk '/^key:/ {print $2}')

pg_ok=""
if psql "$pg_admin" -q -c "CREATE DATABASE $tag" >/dev/null 2>&1 && redis-cli -u "$redis_url" ping >/dev/null 2>&1; then
  pg_ok=1
  start_gateway pg 14001 "${pg_admin%/*}/$tag" "$redis_url"
  owner=$(api 14001 POST /api/users "$admin" '{"email":"owner@example.com"}' | field id)
  owner_key=$(api 14001 POST "/api/users/$owner/keys" "$admin" '{}' | field key)
  api 14001 POST "/api/users/$owner/credits" "$admin" '{"amount_usd":"1000000"}' >/dev/null
  member=$(api 14001 POST /api/users "$admin" '{"email":"member@example.com"}' | field id)
  member_key=$(api 14001 POST "/api/users/$member/keys" "$admin" '{}' | field key)
  team=$(api 14001 POST /api/teams "$owner_key" '{"name":"Load"}' | field id)
  token=$(api 14001 POST "/api/teams/$team/invitations" "$owner_key" '{"email":"member@example.com"}' | field token)
  api 14001 POST "/api/invitations/$token/accept" "$member_key" >/dev/null
  api 14001 PATCH "/api/teams/$team" "$owner_key" '{"default_monthly_limit_usd":"1000000","enforcement":"hard"}' >/dev/null
else
  echo "Postgres or Redis not reachable: pg-redis and pg-team skipped." >&2
fi

lua() { # body key [billing]
  cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$1'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $2"
LUA
  [ -n "${3:-}" ] && echo "wrk.headers[\"x-tollgate-billing\"] = \"$3\"" >> "$work/post.lua"
  return 0
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Postgres's and Redis's processes (all of them: backends, writer, WAL).
svc_ticks() {
  local total=0 pid
  for pid in $(pgrep -x postgres) $(pgrep -f '^redis-server'); do
    [ -r "/proc/$pid/stat" ] && total=$(( total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}') ))
  done
  echo "$total"
}
# What one answer costs at the configured prices: the mock reports 19 in +
# 10 out (JSON) or 19 in + 7 out (streamed) at $0.15 / $0.60 per million.
json_nano=8850
sse_nano=7050
declare -A served_nano   # payer -> expected charge (nano-dollars)
charge() { # payer load served
  local unit=$json_nano
  [ "$2" = sse64 ] && unit=$sse_nano
  served_nano[$1]=$(( ${served_nano[$1]:-0} + $3 * unit ))
}
json_body='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}],"max_tokens":64}'
stream_body='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}],"max_tokens":64,"stream":true}'
tick=$(getconf CLK_TCK)

run() { # round target load pid port key billing payer
  local body=$json_body conns=64
  case $3 in sse64) body=$stream_body ;; json1) conns=1 ;; esac
  lua "$body" "$6" "${7:-}"
  local before svc_before; before=$(cpu_ticks "$4"); svc_before=$(svc_ticks)
  local out; out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$work/post.lua" "http://127.0.0.1:$5/v1/chat/completions")
  local after svc_after; after=$(cpu_ticks "$4"); svc_after=$(svc_ticks)
  local rps p50 p99 errors total
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errors=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  total=$(echo "$out" | awk '/requests in/ {print $1}')
  local cpu svc=""
  cpu=$(python3 -c "print(f'{($after-$before)/$tick*1000/max($total,1):.4f}')")
  case $2 in pg-*) svc=$(python3 -c "print(f'{($svc_after-$svc_before)/$tick*1000/max($total,1):.4f}')") ;; esac
  [ -n "${8:-}" ] && charge "$8" "$3" $(( total - ${errors:-0} ))
  printf '%-3s %-10s %-7s %10s %9s %9s %8s %8s %8s\n' "$1" "$2" "$3" "$rps" "$p50" "$p99" "${errors:-0}" "$cpu" "${svc:--}"
  echo "$1,$2,$3,$rps,$p50,$p99,${errors:-0},$cpu,$svc" >> "$work/results.csv"
}
warm() { # port key billing payer: 2 s at 8 connections, counted as served
  lua "$json_body" "$2" "${3:-}"
  local out; out=$(wrk -t1 -c8 -d2s -s "$work/post.lua" "http://127.0.0.1:$1/v1/chat/completions")
  local total errors
  total=$(echo "$out" | awk '/requests in/ {print $1}')
  errors=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  charge "$4" json64 $(( total - ${errors:-0} ))
}

# Warm up every target (pools, caches, counters).
warm 14000 "$embedded_key" "" embedded
if [ -n "$pg_ok" ]; then
  warm 14001 "$owner_key" "" owner
  warm 14001 "$member_key" "team:$team" owner
fi
rest_kb=$(awk '/VmRSS/ {print $2}' "/proc/$(cat "$work/embedded.pid")/status")

printf '%-3s %-10s %-7s %10s %9s %9s %8s %8s %8s\n' rnd target load req/s p50 p99 non-2xx cpu-ms pg+redis
echo "round,target,load,rps,p50,p99,non2xx,cpu_ms_per_request,services_cpu_ms_per_request" > "$work/results.csv"
targets=(direct)
[ -n "$nginx_pid" ] && targets+=(nginx)
targets+=(embedded)
[ -n "$pg_ok" ] && targets+=(pg-redis pg-team)
for round in $(seq 1 "$rounds"); do
  order=("${targets[@]}")
  if [ $((round % 2)) = 0 ]; then
    order=(); for (( i=${#targets[@]}-1; i>=0; i-- )); do order+=("${targets[$i]}"); done
  fi
  for load in json64 sse64 json1; do
    for target in "${order[@]}"; do
      case $target in
        direct) run "$round" direct "$load" "$mock_pid" 18080 x ;;
        nginx) run "$round" nginx "$load" "$nginx_pid" 18081 x ;;
        embedded) run "$round" embedded "$load" "$(cat "$work/embedded.pid")" 14000 "$embedded_key" "" embedded ;;
        pg-redis) run "$round" pg-redis "$load" "$(cat "$work/pg.pid")" 14001 "$owner_key" "" owner ;;
        pg-team) run "$round" pg-team "$load" "$(cat "$work/pg.pid")" 14001 "$member_key" "team:$team" owner ;;
      esac
    done
  done
done

# Each payer's charge against what wrk saw served. A request in flight
# when wrk stops at its deadline is served and billed but not counted by
# wrk: the charge may pass the count by at most one answer per connection
# per run.
sleep 2
check_charge() { # name port key
  local balance charged expected slack
  balance=$(api "$2" GET /api/me "$3" | field balance_usd)
  charged=$(python3 -c "from decimal import Decimal as D; print(int((D(1000000) - D('$balance')) * 10**9))")
  expected=${served_nano[$1]:-0}
  slack=$(( (64 * 2 + 1) * 3 * rounds * json_nano ))
  echo "charge $1: billed $charged nano-USD, served by wrk's count $expected (difference $(( charged - expected )), allowed 0..$slack)"
  echo "charge_${1}_billed_nano,$charged" >> "$work/memory.csv.part"
  echo "charge_${1}_served_nano,$expected" >> "$work/memory.csv.part"
  if [ "$charged" -lt "$expected" ] || [ "$(( charged - expected ))" -gt "$slack" ]; then
    echo "CHARGE MISMATCH for $1" >&2
  fi
  if [ -n "${4:-}" ]; then
    # The ledger's sum (the one payer of this database): the balance must
    # say the same.
    local ledger
    ledger=$(psql "$4" -At -c "SELECT COALESCE(SUM(cost_nano), 0) FROM usage_rows")
    echo "charge $1: the ledger holds $ledger nano-USD (balance minus ledger $(( charged - ledger )))"
    echo "charge_${1}_ledger_nano,$ledger" >> "$work/memory.csv.part"
    [ "$charged" = "$ledger" ] || echo "LEDGER MISMATCH for $1" >&2
  fi
}
: > "$work/memory.csv.part"
check_charge embedded 14000 "$embedded_key"
[ -n "$pg_ok" ] && check_charge owner 14001 "$owner_key" "${pg_admin%/*}/$tag"
peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$(cat "$work/embedded.pid")/status")
sleep 10
after_kb=$(awk '/VmRSS/ {print $2}' "/proc/$(cat "$work/embedded.pid")/status")

# 1,000 concurrent slow streams (9 events, 100 ms apart) through a FRESH
# embedded gateway: RSS at rest before, peak while they run, and 10 s after.
start_gateway streams 14002 "sqlite://$work/streams.db" ""
streams_key=$(./target/release/tollgate users add streams@example.com --credits 1000000 --config "$work/streams.toml" | awk '/^key:/ {print $2}')
slow_body='{"model":"slow-model","messages":[{"role":"user","content":"Hello!"}],"max_tokens":64,"stream":true}'
lua "$slow_body" "$streams_key"
gw_pid=$(cat "$work/streams.pid")
fresh_kb=$(awk '/VmRSS/ {print $2}' "/proc/$gw_pid/status")
wrk -t1 -c1000 -d8s -s "$work/post.lua" http://127.0.0.1:14002/v1/chat/completions > "$work/streams.txt" &
wrk_pid=$!
streams_peak=0
while kill -0 "$wrk_pid" 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$gw_pid/status")
  [ "$rss" -gt "$streams_peak" ] && streams_peak=$rss
  sleep 0.2
done
sleep 10
streams_rest=$(awk '/VmRSS/ {print $2}' "/proc/$gw_pid/status")
streams_rps=$(awk '/Requests\/sec/ {print $2}' "$work/streams.txt")
streams_errors=$(awk '/Non-2xx/ {print $5}' "$work/streams.txt")
cat > "$work/memory.csv" <<CSV
measure,kb
embedded_rest_after_warmup,$rest_kb
embedded_peak_over_run,$peak_kb
embedded_rest_10s_after_run,$after_kb
streams_fresh,$fresh_kb
streams_peak,$streams_peak
streams_rest_10s_after,$streams_rest
streams_per_second,${streams_rps:-0}
streams_non2xx,${streams_errors:-0}
CSV
cat "$work/memory.csv.part" >> "$work/memory.csv"
cp "$work/results.csv" benches/load/last-run.csv
cp "$work/memory.csv" benches/load/last-memory.csv
python3 benches/load/summarize.py benches/load/last-run.csv benches/load/last-memory.csv benches/load/last-run.json
