#!/usr/bin/env bash
# Quick load measurement: Tollgate (embedded default: SQLite + in-process
# counters) against direct-to-mock, in the same run, with wrk.
#   bash benches/load/run.sh [SECONDS_PER_RUN]
# Needs wrk (apt-get install wrk). Prints a table of requests/s, latency and
# gateway RSS; figures are ratios to direct measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-8}
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 2; }

cargo build --release --features bench-tools --bin tollgate --bin tollgate-mock-upstream >&2
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

./target/release/tollgate-mock-upstream 127.0.0.1:18080 &
cat > "$work/tollgate.toml" <<TOML
[server]
listen = "127.0.0.1:14000"
admin_token = "tga-load-test-token-000000000000000000000"
[storage]
database_url = "sqlite://$work/tollgate.db"
[[providers]]
name = "mock-upstream"
kind = "openai"
base_url = "http://127.0.0.1:18080/v1"
[[models]]
name = "gpt-4o-mini"
provider = "mock-upstream"
input_usd_per_mtok = "0.15"
output_usd_per_mtok = "0.60"
TOML
key=$(./target/release/tollgate users add load@example.com --credits 1000000 --config "$work/tollgate.toml" | awk '/^key:/ {print $2}')
RUST_LOG=warn ./target/release/tollgate serve --config "$work/tollgate.toml" &
gw_pid=$!
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:14000/healthz >/dev/null && break; sleep 0.1; done

json_body='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}],"max_tokens":64}'
stream_body='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}],"max_tokens":64,"stream":true}'
lua() { # $1 body, $2 key
  cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$1'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $2"
LUA
}
rss() { awk '/VmRSS/ {print $2}' "/proc/$gw_pid/status"; }
peak=0
sample() { while kill -0 "$gw_pid" 2>/dev/null; do r=$(rss); [ "$r" -gt "$(cat "$work/peak" 2>/dev/null || echo 0)" ] && echo "$r" > "$work/peak"; sleep 0.2; done; }

# Warm up (key cache, pools).
lua "$json_body" "$key"; wrk -t1 -c8 -d2s -s "$work/post.lua" http://127.0.0.1:14000/v1/chat/completions >/dev/null
rest_kb=$(rss)
sample & sampler=$!

run() { # name url body conns
  lua "$3" "$key"
  out=$(wrk -t1 -c"$4" -d"${secs}s" --latency -s "$work/post.lua" "$2")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errors=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  printf '%-34s %10s %10s %10s %8s\n' "$1" "$rps" "$p50" "$p99" "${errors:-0}"
  echo "$1,$rps,$p50,$p99,${errors:-0}" >> "$work/results.csv"
}
printf '%-34s %10s %10s %10s %8s\n' "run" "req/s" "p50" "p99" "non-2xx"
for round in 1 2; do
  run "direct json c64 (r$round)"  http://127.0.0.1:18080/v1/chat/completions "$json_body" 64
  run "tollgate json c64 (r$round)" http://127.0.0.1:14000/v1/chat/completions "$json_body" 64
  run "direct sse c64 (r$round)"   http://127.0.0.1:18080/v1/chat/completions "$stream_body" 64
  run "tollgate sse c64 (r$round)"  http://127.0.0.1:14000/v1/chat/completions "$stream_body" 64
done
run "direct json c1"  http://127.0.0.1:18080/v1/chat/completions "$json_body" 1
run "tollgate json c1" http://127.0.0.1:14000/v1/chat/completions "$json_body" 1
kill "$sampler" 2>/dev/null || true
echo "tollgate RSS at rest: $((rest_kb / 1024)) MB; peak under load: $(( $(cat "$work/peak") / 1024 )) MB"
python3 - "$work/results.csv" <<'PY'
import csv, sys, statistics
rows = list(csv.reader(open(sys.argv[1])))
def med(prefix):
    vals = [float(r[1]) for r in rows if r[0].startswith(prefix)]
    return statistics.median(vals) if vals else float("nan")
for kind in ("json c64", "sse c64", "json c1"):
    d, t = med(f"direct {kind}"), med(f"tollgate {kind}")
    print(f"{kind}: tollgate/direct = {t/d:.2f} ({t:.0f} vs {d:.0f} req/s)")
PY
