#!/usr/bin/env bash
# Runs every test of Tollgate: unit, integration (SQLite + in-process
# counters and Postgres + Redis), the official openai Python SDK check, and
# the dashboard's end-to-end tests in headless Chromium (tests/e2e; set
# TOLLGATE_SKIP_E2E=1 to leave them out).
# Needs Postgres on 127.0.0.1:5432 (trust auth, user postgres) and Redis on
# 127.0.0.1:6379; override with TOLLGATE_TEST_PG / TOLLGATE_TEST_REDIS.
set -euo pipefail
cd "$(dirname "$0")/.."

# The SDK check runs the official `openai` package from a private venv.
if ! tests/.venv/bin/python -c "import openai" >/dev/null 2>&1; then
  python3 -m venv tests/.venv
  tests/.venv/bin/pip install --quiet --disable-pip-version-check "openai>=1.40"
fi

# The browser tests drive Debian's Chromium through playwright-core (Node).
if [ -z "${TOLLGATE_SKIP_E2E:-}" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y --no-install-recommends chromium >/dev/null
  else
    echo "tests: the dashboard tests need Chromium: apt-get install chromium (or TOLLGATE_SKIP_E2E=1)" >&2
    exit 2
  fi
fi

cargo test --locked "$@"

# The gateway binary cargo test just built, with the dashboard embedded.
if [ -z "${TOLLGATE_SKIP_E2E:-}" ]; then
  TOLLGATE_BIN="$PWD/target/debug/tollgate" bash tests/e2e/run.sh
fi
