#!/usr/bin/env bash
# Report latency by ledger size (Postgres): imports rows in steps with
# `tollgate usage import` (timing each import) and, at each size, times the
# dashboard's Overview (its five API calls at once, as the browser makes
# them) and each usage report: p50 of 7 calls, curl's total time (HTTP
# included). One team of 50 members, five models, rows spread over the 365
# days up to now, heavier for a few members.
# Usage: bash benches/scale/run.sh [SIZES...] (default 100000 1000000
# 10000000; cumulative). Needs a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes=("$@"); [ ${#sizes[@]} -eq 0 ] && sizes=(100000 1000000 10000000)
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
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
owner=$(api "$token" /api/users '{"email":"owner@scale.test"}' | field id)
key=$(api "$token" "/api/users/$owner/keys" '{}' | field key)
team=$(api "$key" /api/teams '{"name":"Scale"}' | field id)
members=()
for i in $(seq 1 50); do
  members+=("$(api "$token" /api/users "{\"email\":\"m$i@scale.test\"}" | field id)")
done
member_key=$(api "$token" "/api/users/${members[0]}/keys" '{}' | field key)
printf '%s\n' "${members[@]}" > "$work/members.txt"

# This month, last month, the year, and a range with partial first and
# last days (RFC 3339), as the reports are asked for.
read -r month_from month_to last_from last_to year_from partial_from partial_to < <(python3 - <<'PY'
import datetime as d
now = d.datetime.now(d.timezone.utc)
m = d.date(now.year, now.month, 1)
nxt = d.date(m.year + (m.month == 12), m.month % 12 + 1, 1)
last = d.date(m.year - (m.month == 1), (m.month - 2) % 12 + 1, 1)
print(m, nxt - d.timedelta(days=1), last, m - d.timedelta(days=1), now.date() - d.timedelta(days=364),
      f"{last}T13:30:00Z", f"{now.date()}T09:15:00Z")
PY
)

p50() { sort -n | sed -n 4p; }
time_get() { # path [key] -> p50 ms of 7
  local k=${2:-$key} times=()
  for _ in 1 2 3 4 5 6 7; do
    times+=("$(curl -s -o /dev/null -w '%{time_total}' -H "authorization: Bearer $k" "http://127.0.0.1:$port$1")")
  done
  python3 -c "print(f'{float(\"$(printf '%s\n' "${times[@]}" | p50)\")*1000:.1f}')"
}
time_overview() { # the five calls at once -> p50 ms of 7
  local q="/api/teams/$team/usage" times=()
  for _ in 1 2 3 4 5 6 7; do
    local start=$(date +%s%N) calls=()
    for path in "/api/teams/$team" "$q?from=$month_from&to=$month_to&group_by=day" \
      "$q?from=$month_from&to=$month_to&group_by=member" "$q?from=$month_from&to=$month_to&group_by=model" \
      "$q?from=$last_from&to=$last_to&group_by=model"; do
      curl -s -o /dev/null -H "authorization: Bearer $key" "http://127.0.0.1:$port$path" & calls+=($!)
    done
    wait "${calls[@]}"
    times+=("$(( ($(date +%s%N) - start) / 1000 ))")
  done
  python3 -c "print(f'{$(printf '%s\n' "${times[@]}" | p50)/1000:.1f}')"
}

done_rows=0
printf "%-10s %-34s %9s\n" rows measure value
for size in "${sizes[@]}"; do
  add=$((size - done_rows))
  python3 - "$add" "$done_rows" "$work/rows.csv" "$team" "$work/members.txt" <<'PY'
import sys, datetime, random
n, offset, path, team, members_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
members = open(members_file).read().split()
rng = random.Random(offset)
weights = [1.0 / (i + 1) ** 0.8 for i in range(len(members))]
picks = rng.choices(members, weights, k=4096)
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
span = 365 * 86400 - 120
base = int(now.timestamp()) - span - 60
models = ["gpt-5.1", "gpt-5-mini", "claude-sonnet-4-5", "gpt-4o-mini", "gemini-2.5-flash"]
with open(path, "w") as f:
    f.write("time,team_id,user_id,model,input_tokens,output_tokens,cached_tokens,reasoning_tokens,cost_usd\n")
    out = []
    for i in range(offset, offset + n):
        t = datetime.datetime.fromtimestamp(base + (i * 7919) % span, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(f"{t},{team},{picks[i % 4096]},{models[i % 5]},{1000 + i % 977},{200 + i % 311},0,0,0.{(i % 99991):06d}\n")
        if len(out) == 10000:
            f.writelines(out); out = []
    f.writelines(out)
PY
  start=$(date +%s%N)
  "$bin" usage import "$work/rows.csv" --config "$work/config.toml" > /dev/null 2>&1
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  done_rows=$size
  printf "%-10s %-34s %9s\n" "$size" "import rows/s" "$(( add * 1000 / (ms > 0 ? ms : 1) ))"
  printf "%-10s %-34s %9s\n" "$size" "overview (5 calls at once) ms" "$(time_overview)"
  q="/api/teams/$team/usage"
  for report in "month by member:$q?from=$month_from&to=$month_to&group_by=member" \
      "month by model:$q?from=$month_from&to=$month_to&group_by=model" \
      "month by day:$q?from=$month_from&to=$month_to&group_by=day" \
      "month CSV by member:$q?from=$month_from&to=$month_to&group_by=member&format=csv" \
      "year by model:$q?from=$year_from&to=$month_to&group_by=model" \
      "partial days by member:$q?from=$partial_from&to=$partial_to&group_by=member"; do
    printf "%-10s %-34s %9s\n" "$size" "${report%%:*} ms" "$(time_get "${report#*:}")"
  done
  printf "%-10s %-34s %9s\n" "$size" "my usage (a member) ms" "$(time_get "/api/me/usage?from=$month_from&to=$month_to" "$member_key")"
done
