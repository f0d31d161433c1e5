-- Tollgate schema, portable between PostgreSQL and SQLite.
-- Times are Unix epoch milliseconds (BIGINT); money is integer nano-dollars
-- (BIGINT); ids are opaque text. Nothing is ever hard-deleted.

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    name        TEXT,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE UNIQUE INDEX users_email ON users (email);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id),
    name          TEXT,
    prefix        TEXT NOT NULL,
    key_hash      TEXT NOT NULL,
    billing       TEXT NOT NULL DEFAULT 'personal',
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE UNIQUE INDEX api_keys_hash ON api_keys (key_hash);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- Prepaid credit added to a user's balance (operator action).
CREATE TABLE credits (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id),
    amount_nano BIGINT NOT NULL,
    note        TEXT,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX credits_user ON credits (user_id);

-- One attribution row per request, keyed by the request id (idempotent).
CREATE TABLE usage_rows (
    request_id          TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL,
    key_id              TEXT NOT NULL,
    account_id          TEXT NOT NULL,
    team_id             TEXT,
    model               TEXT NOT NULL,
    provider            TEXT NOT NULL,
    endpoint            TEXT NOT NULL,
    streamed            BIGINT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    cached_tokens       BIGINT NOT NULL,
    cache_write_tokens  BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    cost_nano           BIGINT NOT NULL,
    usage_source        TEXT NOT NULL,
    status              TEXT NOT NULL,
    error_code          TEXT,
    http_status         BIGINT NOT NULL,
    latency_ms          BIGINT NOT NULL,
    started_at          BIGINT NOT NULL,
    finished_at         BIGINT NOT NULL
);
CREATE INDEX usage_rows_account ON usage_rows (account_id, started_at);
CREATE INDEX usage_rows_user ON usage_rows (user_id, started_at);
CREATE INDEX usage_rows_team ON usage_rows (team_id, started_at);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
