#!/usr/bin/env bash
# Runs every test of Tollgate: unit, integration (SQLite + in-process
# counters and Postgres + Redis) and the official openai Python SDK check.
# Needs Postgres on 127.0.0.1:5432 (trust auth, user postgres) and Redis on
# 127.0.0.1:6379; override with TOLLGATE_TEST_PG / TOLLGATE_TEST_REDIS.
set -euo pipefail
cd "$(dirname "$0")/.."

# The SDK check runs the official `openai` package from a private venv.
if ! tests/.venv/bin/python -c "import openai" >/dev/null 2>&1; then
  python3 -m venv tests/.venv
  tests/.venv/bin/pip install --quiet --disable-pip-version-check "openai>=1.40"
fi

cargo test --locked "$@"
