#!/usr/bin/env bash
# Runs every test suite of Tollgate, each even when an earlier one failed,
# then prints a summary and exits non-zero if any failed:
#   rust     unit, property and fuzz tests, and the integration binary
#            (SQLite + in-process counters and Postgres + Redis, the
#            official Python and Node SDKs, fault tests with real processes)
#   browser  the dashboard's end-to-end tests in headless Chromium
# TOLLGATE_SKIP_E2E=1 leaves the browser suite out. Arguments go to
# `cargo test`.
# Needs Postgres on 127.0.0.1:5432 (trust auth, user postgres) and Redis on
# 127.0.0.1:6379; override with TOLLGATE_TEST_PG / TOLLGATE_TEST_REDIS.
set -uo pipefail
cd "$(dirname "$0")/.."

summary=()
failed=0
suite() {
  local name=$1
  shift
  local start
  start=$(date +%s)
  echo "=== suite: $name"
  if "$@"; then
    summary+=("passed  $name ($(( $(date +%s) - start )) s)")
  else
    summary+=("FAILED  $name ($(( $(date +%s) - start )) s)")
    failed=1
  fi
}

# The SDK check runs the official `openai` package, and the email tests an
# SMTP server (aiosmtpd), from a private venv.
python_sdk() {
  if ! tests/.venv/bin/python -c "import openai, aiosmtpd" >/dev/null 2>&1; then
    python3 -m venv tests/.venv &&
      tests/.venv/bin/pip install --quiet --disable-pip-version-check "openai>=1.40" "aiosmtpd>=1.4"
  fi
}

# The browser tests drive Debian's Chromium through playwright-core (Node).
chromium_present() {
  [ -x /usr/bin/chromium ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y --no-install-recommends chromium >/dev/null
  else
    echo "tests: the dashboard tests need Chromium: apt-get install chromium (or TOLLGATE_SKIP_E2E=1)" >&2
    return 1
  fi
}

# The Node SDK check runs the official npm packages from tests/sdk/node.
node_sdks() {
  [ -d tests/sdk/node/node_modules/openai ] && [ -d tests/sdk/node/node_modules/@anthropic-ai/sdk ] && return 0
  (cd tests/sdk/node && npm install --no-audit --no-fund --loglevel=error)
}

rust_suite() {
  python_sdk || echo "tests: the openai and aiosmtpd Python packages could not be installed; their tests will fail" >&2
  node_sdks || echo "tests: the Node SDKs could not be installed; their test will fail" >&2
  # --no-fail-fast: a failing unit test does not hide the integration run.
  cargo test --locked --no-fail-fast "$@"
}

suite "rust: unit, property, fuzz and integration tests" rust_suite "$@"

# The browser suite uses the gateway binary cargo test just built (with
# the dashboard embedded).
browser_suite() {
  chromium_present && TOLLGATE_BIN="$PWD/target/debug/tollgate" bash tests/e2e/run.sh
}
if [ -z "${TOLLGATE_SKIP_E2E:-}" ]; then
  suite "browser: dashboard end-to-end" browser_suite
fi

echo
echo "=== summary"
for line in "${summary[@]}"; do
  echo "  $line"
done
if [ "$failed" != 0 ]; then
  echo "tests: some suites failed (above)" >&2
fi
exit "$failed"
