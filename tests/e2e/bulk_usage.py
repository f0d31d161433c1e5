"""Inserts ledger rows for the Northwind Labs team straight into SQLite.

Usage: python3 bulk_usage.py DB_PATH SEED_JSON [ROWS]

The rows spread over last month and this month up to now (UTC), weighted
towards weekdays and a few heavy members, across four models priced as in
config/tollgate.example.toml (nano-dollars per token). About 1% are
refusals (no cost), which reports must not count. The gateway has already
migrated the database; WAL mode lets it keep running meanwhile.
"""

import json
import random
import sqlite3
import sys
import time
from datetime import datetime, timezone

DB, SEED = sys.argv[1], sys.argv[2]
ROWS = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000

# model, provider, nano-dollars per input token, per output token, weight
MODELS = [
    ("gpt-5.1", "openai", 1250, 10000, 35),
    ("gpt-4o-mini", "openai", 150, 600, 30),
    ("claude-sonnet-4-5", "anthropic", 3000, 15000, 22),
    ("text-embedding-3-small", "openai", 20, 0, 13),
]

seed = json.load(open(SEED))
team = seed["teams"]["northwind"]["id"]
owner = seed["users"]["bigOwner"]["id"]
members = [m["id"] for m in seed["bigMembers"]]

rng = random.Random(42)
member_weights = [1.0 / (i + 1) ** 0.8 for i in range(len(members))]
rng.shuffle(member_weights)
model_weights = [m[4] for m in MODELS]

now = datetime.now(timezone.utc)
month_start = datetime(now.year, now.month, 1, tzinfo=timezone.utc)
last_start = datetime(now.year - 1, 12, 1, tzinfo=timezone.utc) if now.month == 1 else datetime(now.year, now.month - 1, 1, tzinfo=timezone.utc)
start_ms = int(last_start.timestamp() * 1000)
end_ms = int(now.timestamp() * 1000) - 60_000
# Growth: this month carries a bit more traffic per day than last month.
split_ms = int(month_start.timestamp() * 1000)


def when():
    while True:
        t = rng.randint(start_ms, end_ms)
        weekday = datetime.fromtimestamp(t / 1000, timezone.utc).weekday()
        keep = (0.35 if weekday >= 5 else 1.0) * (1.0 if t >= split_ms else 0.8)
        if rng.random() < keep:
            return t


rows = []
for i in range(ROWS):
    user = rng.choices(members, member_weights)[0]
    model, provider, price_in, price_out, _ = rng.choices(MODELS, model_weights)[0]
    started = when()
    embedding = price_out == 0
    input_tokens = rng.randint(20, 800) if embedding else int(rng.lognormvariate(7.3, 0.9))
    output_tokens = 0 if embedding else int(rng.lognormvariate(6.0, 0.8))
    cached = 0 if embedding or rng.random() < 0.6 else rng.randint(0, input_tokens)
    reasoning = rng.randint(0, output_tokens) if model == "gpt-5.1" and rng.random() < 0.3 else 0
    refused = rng.random() < 0.01
    cost = 0 if refused else input_tokens * price_in + output_tokens * price_out
    latency = rng.randint(120, 4000)
    rows.append((
        f"req_e2e{i:08d}", user, f"key_e2e{user[-6:]}", owner, team, model, provider,
        "embeddings" if embedding else "chat.completions", 0,
        0 if refused else input_tokens, 0 if refused else cached, 0,
        0 if refused else output_tokens, 0 if refused else reasoning, cost,
        "exact", "refused" if refused else "ok", "monthly_limit_exceeded" if refused else None,
        402 if refused else 200, latency, started, started + latency,
    ))

begin = time.time()
db = sqlite3.connect(DB, timeout=30)
db.execute("PRAGMA busy_timeout = 30000")
with db:
    db.executemany(
        "INSERT INTO usage_rows (request_id, user_id, key_id, account_id, team_id, model, provider, endpoint, "
        "streamed, input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nano, "
        "usage_source, status, error_code, http_status, latency_ms, started_at, finished_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
db.close()
print(f"inserted {len(rows)} usage rows for {team} in {time.time() - begin:.1f}s")
