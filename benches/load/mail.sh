#!/usr/bin/env bash
#   bash benches/load/mail.sh [N=2000]   (needs target/release/tollgate and tests/.venv)
# Email worker drain rate (issue 19): N invitations made while the SMTP server
# is down (retry_max_secs = 1), then the server starts; time until the
# outbox has no pending mail.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ -x "$ROOT/target/release/tollgate" ] || { echo "build first: cargo build --release" >&2; exit 2; }
"$ROOT/tests/.venv/bin/python" -c "import aiosmtpd" || { echo "aiosmtpd missing: run tests/run.sh once (it makes tests/.venv)" >&2; exit 2; }
N=${1:-2000}
W=$(mktemp -d); cd "$W"
cat > gw.toml <<TOML
[server]
listen = "127.0.0.1:4089"
admin_token = "tga-mail-bench-token-0000000000000000000"
[storage]
database_url = "sqlite://$W/gw.db"
[ledger]
spool_dir = "$W/spool"
[email]
smtp_url = "smtp://127.0.0.1:2598"
from = "noreply@example.com"
public_url = "https://gw.example.com"
invitations_per_team_per_hour = 100000
retry_max_secs = 1
TOML
RUST_LOG=error "$ROOT/target/release/tollgate" serve --config gw.toml 2> gw.log &
GW=$!
for _ in $(seq 50); do curl -s -o /dev/null localhost:4089/healthz && break; sleep 0.1; done
T="tga-mail-bench-token-0000000000000000000"
H=(-H "authorization: Bearer $T" -H 'content-type: application/json')
U=$(curl -s -X POST localhost:4089/api/users "${H[@]}" -d '{"email":"owner@example.com"}' | python3 -c "import json,sys; print(json.load(sys.stdin)['id'])")
TID=$(curl -s -X POST localhost:4089/api/teams "${H[@]}" -d "{\"name\":\"Bench\",\"owner_id\":\"$U\"}" | python3 -c "import json,sys; print(json.load(sys.stdin)['id'])")
seq 1 "$N" | xargs -P 8 -I{} curl -s -o /dev/null -X POST "localhost:4089/api/teams/$TID/invitations" "${H[@]}" -d '{"email":"p{}@example.com"}'
sleep 2
(sleep 100000 | "$ROOT/tests/.venv/bin/python" -m aiosmtpd -n -c aiosmtpd.handlers.Sink -l 127.0.0.1:2598 > sink.out 2>&1) &
start=$(date +%s.%N)
while :; do
  pending=$(curl -s "localhost:4089/api/email/outbox?status=pending&limit=1" "${H[@]}" | python3 -c "import json,sys; print(len(json.load(sys.stdin)['data']))")
  [ "$pending" = 0 ] && break
  sleep 0.05
done
end=$(date +%s.%N)
python3 -c "print(f'$N mails waiting; the server started; all sent in {$end-$start:.2f} s ({$N/($end-$start):.0f} mails/s, including up to 1 s of backoff)')"
kill $GW; pkill -f "aiosmtpd -n -c"; pkill -f "sleep 100000"; rm -rf "$W"
