#!/usr/bin/env bash
# End-to-end browser tests of the dashboard (/dashboard).
#
#   bash tests/e2e/run.sh
#
# Starts a fresh gateway ($TOLLGATE_BIN, default target/debug/tollgate) on a
# free port with a temporary SQLite database and operator token, serving the
# dashboard EMBEDDED in the binary; seeds it through the API (and 100,000
# ledger rows straight into SQLite); runs tests/*.test.mjs with node:test
# against Debian's Chromium through playwright-core; stops the gateway.
# Screenshots and the timing go to target/e2e-artifacts/. With
# TOLLGATE_E2E_UPDATE_SCREENSHOTS=1, a passing run also copies the 1440 px
# Overview and Usage screenshots to docs/screenshots/ (the README's).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BIN="${TOLLGATE_BIN:-$REPO/target/debug/tollgate}"
ARTIFACTS="$REPO/target/e2e-artifacts"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$BIN" ]; then
  echo "e2e: no gateway binary at $BIN: run 'cargo build --bin tollgate' or set TOLLGATE_BIN." >&2
  exit 2
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "e2e: no Chromium at $CHROMIUM: run 'apt-get install -y chromium' or set CHROMIUM." >&2
  exit 2
fi
if [ ! -d "$HERE/node_modules/playwright-core" ]; then
  (cd "$HERE" && npm ci --no-audit --no-fund)
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-e2e.XXXXXX")"
GATEWAY_PID=""
cleanup() {
  if [ -n "$GATEWAY_PID" ] && kill -0 "$GATEWAY_PID" 2>/dev/null; then
    kill "$GATEWAY_PID" 2>/dev/null || true
    wait "$GATEWAY_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ADMIN_TOKEN="op-$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
BASE="http://127.0.0.1:$PORT"

# The embedded dashboard only: TOLLGATE_DASHBOARD_DIR is removed.
(
  cd "$WORK"
  exec env -u TOLLGATE_DASHBOARD_DIR \
    TOLLGATE_ADMIN_TOKEN="$ADMIN_TOKEN" \
    TOLLGATE_SERVER__LISTEN="127.0.0.1:$PORT" \
    TOLLGATE_STORAGE__DATABASE_URL="sqlite://$WORK/tollgate.db" \
    TOLLGATE_LEDGER__SPOOL_DIR="$WORK/spool" \
    TOLLGATE_WEBHOOKS__ALLOW_PRIVATE_NETWORKS=true \
    "$BIN" serve
) >"$ARTIFACTS/gateway.log" 2>&1 &
GATEWAY_PID=$!

for _ in $(seq 1 150); do
  if curl -fsS "$BASE/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
    echo "e2e: the gateway exited; see $ARTIFACTS/gateway.log" >&2
    tail -20 "$ARTIFACTS/gateway.log" >&2
    exit 1
  fi
  sleep 0.2
done
curl -fsS "$BASE/healthz" >/dev/null

export E2E_BASE="$BASE" E2E_ADMIN_TOKEN="$ADMIN_TOKEN" E2E_STATE="$WORK/seed.json"
export E2E_ARTIFACTS="$ARTIFACTS" CHROMIUM
node "$HERE/seed.mjs"
python3 "$HERE/bulk_usage.py" "$WORK/tollgate.db" "$WORK/seed.json" 100000

status=0
node --test --test-concurrency=1 --test-timeout=90000 --test-reporter=spec \
  "$HERE"/tests/*.test.mjs || status=$?

if [ "$status" -eq 0 ]; then
  # The README's screenshots are committed once; refresh them on request.
  if [ -n "${TOLLGATE_E2E_UPDATE_SCREENSHOTS:-}" ]; then
    mkdir -p "$REPO/docs/screenshots"
    cp "$ARTIFACTS/screens/overview-1440.png" "$REPO/docs/screenshots/overview.png"
    cp "$ARTIFACTS/screens/usage-1440.png" "$REPO/docs/screenshots/usage.png"
  fi
  echo "e2e: passed; screenshots in $ARTIFACTS/screens, timing in $ARTIFACTS/timing.json"
else
  echo "e2e: FAILED (exit $status); artifacts in $ARTIFACTS" >&2
fi
exit "$status"
