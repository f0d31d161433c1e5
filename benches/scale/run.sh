#!/usr/bin/env bash
# Report latency by ledger size (Postgres): imports rows in steps with
# `tollgate usage import` and times each team report (p50 of 7 calls) at
# each size. Usage: bash benches/scale/run.sh [SIZES...] (default 100000
# 1000000; cumulative). Needs a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes=("$@"); [ ${#sizes[@]} -eq 0 ] && sizes=(100000 1000000)
bin=target/release/tollgate
pg_admin=${TOLLGATE_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}
db="tg_scale_$$"; port=4099
token="tga-scale-bench-token-0123456789abcdef"
work=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT
psql "$pg_admin" -qc "CREATE DATABASE $db"
cat > "$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_token = "$token"
[storage]
database_url = "${pg_admin%/*}/$db"
single_node = true
[ledger]
spool_dir = "$work/spool"
TOML
TOLLGATE_ADMIN_TOKEN= "$bin" serve --config "$work/config.toml" 2> "$work/serve.log" & pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
api() { curl -sf -H "authorization: Bearer $1" -H 'content-type: application/json' "http://127.0.0.1:$port$2" ${3:+-d "$3"}; }
owner=$(api "$token" /api/users '{"email":"owner@scale.test"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
key=$(api "$token" "/api/users/$owner/keys" '{}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
team=$(api "$key" /api/teams '{"name":"Scale"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
done_rows=0
printf "%-9s %-28s %8s\n" rows report p50_ms
for size in "${sizes[@]}"; do
  add=$((size - done_rows))
  python3 - "$add" "$done_rows" "$work/rows.csv" "$team" "$owner" <<'PY'
import sys, datetime
n, offset, path, team, user = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
start = datetime.datetime(2026, 10, 1, tzinfo=datetime.timezone.utc)
models = ["gpt-5.1", "gpt-5-mini", "claude-sonnet-4-5", "gpt-4o-mini", "gemini-2.5-flash"]
span = 61 * 86400
with open(path, "w") as f:
    f.write("time,team_id,user_id,model,input_tokens,output_tokens,cached_tokens,reasoning_tokens,cost_usd\n")
    for i in range(offset, offset + n):
        t = (start + datetime.timedelta(seconds=(i * 7919) % span)).strftime("%Y-%m-%dT%H:%M:%SZ")
        f.write(f"{t},{team},{user},{models[i % 5]},{1000 + i % 977},{200 + i % 311},0,0,0.{(i % 99991):06d}\n")
PY
  "$bin" usage import "$work/rows.csv" --config "$work/config.toml" > /dev/null 2>&1
  done_rows=$size
  for report in "group_by=member" "group_by=model" "group_by=day" "group_by=member&format=csv"; do
    times=()
    for _ in 1 2 3 4 5 6 7; do
      times+=("$(curl -s -o /dev/null -w '%{time_total}' -H "authorization: Bearer $key" "http://127.0.0.1:$port/api/teams/$team/usage?from=2026-10-01&to=2026-11-30&$report")")
    done
    p50=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 4p)
    printf "%-9s %-28s %8.1f\n" "$size" "$report" "$(python3 -c "print($p50*1000)")"
  done
done
