#!/usr/bin/env bash
# Same-run A/B of two Tollgate builds: throughput and gateway CPU per request.
#   bash benches/load/ab.sh BIN_A BIN_B [SECONDS=8] [ROUNDS=3]
# BIN_A / BIN_B are `tollgate` release binaries (e.g. the commit before a
# refactor and the refactored build), or the same binary twice with
# settings that differ: $AB_ENV_A / $AB_ENV_B are space-separated
# VAR=VALUE pairs for each side (e.g. AB_ENV_B=TOLLGATE_SERVER__PER_CORE=true).
# The fast mock upstream comes from $MOCK_BIN, else
# target/release/tollgate-mock-upstream (build it with --features bench-tools). Gateways log at $AB_RUST_LOG (default warn).
# Modes (A and B run side by side with identical configs, each with its own
# temp dir, database, spool dir and loopback port):
#   embedded   SQLite + in-process counters
#   pg-redis   Postgres (fresh database each) + Redis (own redis_prefix each);
#              skipped when the local Postgres or Redis is unreachable
# ($AB_MODES=embedded or pg-redis runs that mode alone.)
# Loads (the same wrk bodies as run.sh): json64 (non-streaming, 64 conns),
# json1 (non-streaming, 1 conn), sse64 (streaming, 64 conns).
# Each round runs every load on A then B; the next round B then A (order
# alternates to cancel drift). Per run: req/s, p50, p99, non-2xx, socket
# errors and the gateway's CPU ms per request ((utime+stime) delta from
# /proc/PID/stat over the requests wrk completed).
# Prints Markdown tables (medians over rounds, ratio B/A of the medians and
# the min-max of the per-round ratios) and writes the raw per-round rows to
# benches/load/last-ab.csv ($AB_CSV overrides).
# Needs wrk (apt-get install wrk), curl, python3; psql + redis-cli for pg-redis.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() { echo "usage: bash benches/load/ab.sh BIN_A BIN_B [SECONDS=8] [ROUNDS=3]" >&2; exit 2; }
[ $# -ge 2 ] && [ $# -le 4 ] || usage
bin_a=$(realpath "$1"); bin_b=$(realpath "$2")
secs=${3:-8}; rounds=${4:-3}
[[ $secs =~ ^[0-9]+$ ]] && [ "$secs" -ge 1 ] || usage
[[ $rounds =~ ^[0-9]+$ ]] && [ "$rounds" -ge 1 ] && [ "$rounds" -le 50 ] || usage
for b in "$bin_a" "$bin_b"; do [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 2; }; done
mock_bin=${MOCK_BIN:-target/release/tollgate-mock-upstream}
[ -x "$mock_bin" ] || { echo "mock upstream not found: $mock_bin (set MOCK_BIN)" >&2; exit 2; }
for tool in wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 2; }
done
pg_admin=${TOLLGATE_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}
redis_url=${TOLLGATE_TEST_REDIS:-redis://127.0.0.1:6379}
csv_out=${AB_CSV:-benches/load/last-ab.csv}
mkdir -p "$(dirname "$csv_out")"

work=$(mktemp -d)
tag="ab$(date +%s)_$$"
pids=()        # every long-running process this script starts
dbs=()         # Postgres databases to drop
prefixes=()    # Redis prefixes to clear

stop_pid() { # pid: TERM, wait up to 5 s, then KILL
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  for pid in $(jobs -p); do stop_pid "$pid"; done   # e.g. a wrk cut short
  for db in "${dbs[@]}"; do
    psql "$pg_admin" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
  done
  for p in "${prefixes[@]}"; do
    redis-cli -u "$redis_url" --scan --pattern "$p:*" 2>/dev/null | head -n 100000 \
      | xargs -r -n 500 redis-cli -u "$redis_url" del >/dev/null 2>&1
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_http() { # url seconds; 0 if it answers
  local tries=$(( $2 * 10 ))
  for _ in $(seq 1 "$tries"); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  return 1
}

ulimit -n 65536 2>/dev/null || true
mock_port=$(free_port)
"$mock_bin" "127.0.0.1:$mock_port" 2>"$work/mock.log" &
pids+=($!)
wait_http "http://127.0.0.1:$mock_port/" 10 || { echo "mock upstream did not start:" >&2; cat "$work/mock.log" >&2; exit 1; }

admin="tga-load-test-token-000000000000000000000"
models="[[providers]]
name = \"mock-upstream\"
kind = \"openai\"
base_url = \"http://127.0.0.1:$mock_port/v1\"
[[models]]
name = \"gpt-4o-mini\"
provider = \"mock-upstream\"
input_usd_per_mtok = \"0.15\"
output_usd_per_mtok = \"0.60\""

# start_gateway NAME BIN PORT DATABASE_URL REDIS_URL PREFIX -> pid in $work/NAME.pid, key in $work/NAME.key
start_gateway() {
  local name=$1 bin=$2 port=$3
  mkdir -p "$work/$name"
  cat > "$work/$name/tollgate.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_token = "$admin"
[storage]
database_url = "$4"
redis_url = "$5"
redis_prefix = "$6"
[ledger]
spool_dir = "$work/$name/spool"
$models
TOML
  local side_env=${AB_ENV_A:-}
  [ "${name: -1}" = B ] && side_env=${AB_ENV_B:-}
  # shellcheck disable=SC2086 # word splitting of the VAR=VALUE list
  env $side_env RUST_LOG="${AB_RUST_LOG:-warn}" "$bin" serve --config "$work/$name/tollgate.toml" 2>"$work/$name/log" &
  local pid=$!
  pids+=("$pid")
  echo "$pid" > "$work/$name.pid"
  if ! wait_http "http://127.0.0.1:$port/healthz" 20; then
    echo "gateway $name did not start:" >&2; cat "$work/$name/log" >&2; exit 1
  fi
  local key
  key=$("$bin" users add "load-$name@example.com" --credits 1000000 --config "$work/$name/tollgate.toml" 2>>"$work/$name/log" | awk '/^key:/ {print $2}')
  [ -n "$key" ] || { echo "could not create a user on $name:" >&2; cat "$work/$name/log" >&2; exit 1; }
  echo "$key" > "$work/$name.key"
  # One request end to end, so a broken setup fails here, not as non-2xx.
  local code
  code=$(curl -s -o "$work/$name/probe" -w '%{http_code}' -X POST "http://127.0.0.1:$port/v1/chat/completions" \
    -H "Authorization: Bearer $key" -H 'content-type: application/json' -d "$json_body" || true)
  [ "$code" = 200 ] || { echo "gateway $name answered $code to a probe:" >&2; cat "$work/$name/probe" "$work/$name/log" >&2; exit 1; }
}

json_body='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}],"max_tokens":64}'
stream_body='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}],"max_tokens":64,"stream":true}'
lua() { # file body key
  cat > "$1" <<LUA
wrk.method = "POST"
wrk.body = '$2'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $3"
LUA
}
cpu_ticks() { # utime + stime; the fields after the ")" closing comm
  sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
tick=$(getconf CLK_TCK)
to_ms() { # wrk latency (e.g. 812.00us, 1.23ms, 1.02s, 2.00m) -> ms
  python3 -c "
import re,sys
m=re.fullmatch(r'([0-9.]+)(us|ms|s|m)', sys.argv[1] or '')
print('' if not m else round(float(m[1])*{'us':0.001,'ms':1,'s':1000,'m':60000}[m[2]],4))" "$1"
}

echo "mode,load,round,order,build,rps,p50_ms,p99_ms,non2xx,socket_errors,requests,cpu_ms_per_request" > "$work/ab.csv"

run() { # mode load round order build name port
  local mode=$1 load=$2 round=$3 order=$4 build=$5 name=$6 port=$7
  local pid; pid=$(cat "$work/$name.pid")
  kill -0 "$pid" 2>/dev/null || { echo "gateway $name died:" >&2; tail -20 "$work/$name/log" >&2; exit 1; }
  local body=$json_body conns=64
  case $load in sse64) body=$stream_body ;; json1) conns=1 ;; esac
  lua "$work/$name.lua" "$body" "$(cat "$work/$name.key")"
  local before after out
  before=$(cpu_ticks "$pid")
  out=$(timeout $((secs + 30)) wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$work/$name.lua" "http://127.0.0.1:$port/v1/chat/completions")
  after=$(cpu_ticks "$pid")
  local rps p50 p99 non2xx sockerr total cpu
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  sockerr=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  cpu=$(python3 -c "print(f'{($after-$before)/$tick*1000/max(${total:-0},1):.4f}')")
  printf '%-9s %-6s %5s  %s %10s %9s %9s %7s %6s %8s\n' "$mode" "$load" "$round" "$build" "$rps" "$p50" "$p99" "${non2xx:-0}" "${sockerr:-0}" "$cpu" >&2
  echo "$mode,$load,$round,$order,$build,$rps,$p50,$p99,${non2xx:-0},${sockerr:-0},${total:-0},$cpu" >> "$work/ab.csv"
}

warm() { # name port
  lua "$work/$1.lua" "$json_body" "$(cat "$work/$1.key")"
  timeout 30 wrk -t1 -c8 -d2s -s "$work/$1.lua" "http://127.0.0.1:$2/v1/chat/completions" >/dev/null
}

modes=(embedded)
if [ "${AB_MODES:-}" = pg-redis ]; then
  modes=()   # $AB_MODES=pg-redis: that mode alone
fi
if [ "${AB_MODES:-}" = embedded ]; then
  :          # $AB_MODES=embedded: that mode alone
elif command -v psql >/dev/null && command -v redis-cli >/dev/null \
   && psql "$pg_admin" -q -c "SELECT 1" >/dev/null 2>&1 \
   && [ "$(redis-cli -u "$redis_url" ping 2>/dev/null)" = PONG ]; then
  modes+=(pg-redis)
else
  echo "Postgres or Redis not reachable: pg-redis skipped." >&2
fi

started=$(date +%s)
echo "A = $bin_a ${AB_ENV_A:-}" >&2
echo "B = $bin_b ${AB_ENV_B:-}" >&2
echo "mock = $mock_bin; ${secs}s per run, $rounds rounds" >&2
printf '%-9s %-6s %5s  %s %10s %9s %9s %7s %6s %8s\n' mode load round b req/s p50ms p99ms non2xx sockerr cpu-ms >&2
for mode in "${modes[@]}"; do
  port_a=$(free_port); port_b=$(free_port)
  while [ "$port_b" = "$port_a" ]; do port_b=$(free_port); done
  if [ "$mode" = embedded ]; then
    start_gateway "$mode-A" "$bin_a" "$port_a" "sqlite://$work/$mode-A/tollgate.db" "" "${tag}_a"
    start_gateway "$mode-B" "$bin_b" "$port_b" "sqlite://$work/$mode-B/tollgate.db" "" "${tag}_b"
  else
    for x in a b; do
      dbs+=("${tag}_$x"); prefixes+=("${tag}_$x")
      psql "$pg_admin" -q -c "CREATE DATABASE ${tag}_$x" >/dev/null
    done
    start_gateway "$mode-A" "$bin_a" "$port_a" "${pg_admin%/*}/${tag}_a" "$redis_url" "${tag}_a"
    start_gateway "$mode-B" "$bin_b" "$port_b" "${pg_admin%/*}/${tag}_b" "$redis_url" "${tag}_b"
  fi
  warm "$mode-A" "$port_a"; warm "$mode-B" "$port_b"
  for round in $(seq 1 "$rounds"); do
    for load in json64 json1 sse64; do
      if [ $((round % 2)) = 1 ]; then
        run "$mode" "$load" "$round" AB A "$mode-A" "$port_a"
        run "$mode" "$load" "$round" AB B "$mode-B" "$port_b"
      else
        run "$mode" "$load" "$round" BA B "$mode-B" "$port_b"
        run "$mode" "$load" "$round" BA A "$mode-A" "$port_a"
      fi
    done
  done
  stop_pid "$(cat "$work/$mode-A.pid")"; stop_pid "$(cat "$work/$mode-B.pid")"
done
cp "$work/ab.csv" "$csv_out"

python3 - "$work/ab.csv" "$bin_a ${AB_ENV_A:-}" "$bin_b ${AB_ENV_B:-}" "$secs" "$rounds" "$(( $(date +%s) - started ))" <<'PY'
import csv, statistics as st, sys
path, a, b, secs, rounds, elapsed = sys.argv[1:]
rows = list(csv.DictReader(open(path)))
keys = []
for r in rows:
    k = (r["mode"], r["load"])
    if k not in keys: keys.append(k)
def vals(mode, load, build, field):
    return {int(r["round"]): float(r[field] or "nan") for r in rows
            if r["mode"] == mode and r["load"] == load and r["build"] == build}
def med(d): return st.median(d.values())
def ratios(mode, load, field):
    va, vb = vals(mode, load, "A", field), vals(mode, load, "B", field)
    return [vb[k] / va[k] for k in va if k in vb and va[k]]
print(f"\nA = `{a}`  \nB = `{b}`  \n{secs} s per run, {rounds} rounds (A,B then B,A alternating), {elapsed} s in all.\n")
print("| mode | load | req/s A | req/s B | B/A | B/A per round (min–max) | CPU ms/req A | CPU ms/req B | B/A | B/A per round (min–max) |")
print("|---|---|---:|---:|---:|---|---:|---:|---:|---|")
for mode, load in keys:
    cells = [mode, load]
    for field, fmt in (("rps", "{:.0f}"), ("cpu_ms_per_request", "{:.4f}")):
        ma, mb = med(vals(mode, load, "A", field)), med(vals(mode, load, "B", field))
        rs = ratios(mode, load, field)
        cells += [fmt.format(ma), fmt.format(mb), f"{mb/ma:.3f}" if ma else "–",
                  f"{min(rs):.3f}–{max(rs):.3f}" if rs else "–"]
    print("| " + " | ".join(cells) + " |")
print("\n| mode | load | p50 ms A | p50 ms B | p99 ms A | p99 ms B | non-2xx A | non-2xx B | socket errors A | socket errors B |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for mode, load in keys:
    cells = [mode, load]
    for field in ("p50_ms", "p99_ms"):
        for build in "AB":
            cells.append(f"{med(vals(mode, load, build, field)):.3f}")
    for field in ("non2xx", "socket_errors"):
        for build in "AB":
            cells.append(f"{sum(vals(mode, load, build, field).values()):.0f}")
    print("| " + " | ".join(cells) + " |")
print("\nMedians over rounds; B/A is the ratio of the medians, the min–max column the spread of the per-round ratios (A vs A gives the noise floor).")
PY
echo "raw per-round rows: $csv_out" >&2
