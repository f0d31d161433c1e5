#!/usr/bin/env bash
# Usage import throughput into a fresh Postgres database:
#   bash benches/import/run.sh [ROWS] [BIN]
# ROWS (default 200000) rows across 5 users, personal billing, generated as
# CSV; imported with `tollgate usage import`, then imported again (the
# re-import must add nothing). Prints rows/s for both.
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-200000}
bin=${2:-target/release/tollgate}
pg_admin=${TOLLGATE_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}
db="tg_import_bench_$$"
work=$(mktemp -d)
trap 'psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1; rm -rf "$work"' EXIT
psql "$pg_admin" -qc "CREATE DATABASE $db"
cat > "$work/config.toml" <<TOML
[storage]
database_url = "${pg_admin%/*}/$db"
single_node = true
[ledger]
spool_dir = "$work/spool"
TOML
users=()
for i in 1 2 3 4 5; do
  users+=("$("$bin" users add "import-$i@example.com" --config "$work/config.toml" | sed -n 's/^user: *\([^ ]*\).*/\1/p')")
done
python3 - "$rows" "$work/usage.csv" "${users[@]}" <<'PY'
import sys, datetime
rows, path, users = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
with open(path, "w") as f:
    f.write("time,team_id,user_id,model,input_tokens,output_tokens,cached_tokens,reasoning_tokens,cost_usd\n")
    for i in range(rows):
        t = (start + datetime.timedelta(seconds=i * 37)).strftime("%Y-%m-%dT%H:%M:%SZ")
        f.write(f"{t},,{users[i % len(users)]},gpt-5.1,{1000 + i % 977},{200 + i % 311},0,0,0.{(i % 99991):06d}\n")
PY
ls -la "$work/usage.csv" | awk '{print "csv bytes:", $5}'
RUST_LOG=tollgate=debug "$bin" usage import "$work/usage.csv" --config "$work/config.toml"
RUST_LOG=tollgate=debug "$bin" usage import "$work/usage.csv" --config "$work/config.toml"
