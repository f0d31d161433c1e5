-- Telling people before the wall (issue 18): webhooks, the events they
-- carry (stored before they are sent, one per fact: `dedupe` is unique),
-- one delivery per event and webhook with its schedule and lease, every
-- attempt, and a team's low-balance threshold.
CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL REFERENCES teams (id),
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,
    secret      TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX webhooks_team ON webhooks (team_id);

CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL,
    type        TEXT NOT NULL,
    dedupe      TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX events_dedupe ON events (dedupe);
CREATE INDEX events_team ON events (team_id, created_at);

-- state: 'pending' until a 2xx ('delivered') or 24 h of retries ('failed').
-- A process sending it holds `lease_until`; another may take it after.
CREATE TABLE webhook_deliveries (
    id            TEXT PRIMARY KEY,
    event_id      TEXT NOT NULL,
    webhook_id    TEXT NOT NULL,
    state         TEXT NOT NULL,
    attempts      BIGINT NOT NULL,
    next_at       BIGINT NOT NULL,
    lease_until   BIGINT NOT NULL,
    lease_owner   TEXT,
    created_at    BIGINT NOT NULL,
    delivered_at  BIGINT
);
CREATE UNIQUE INDEX webhook_deliveries_pair ON webhook_deliveries (event_id, webhook_id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_at);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at);

CREATE TABLE webhook_attempts (
    id            TEXT PRIMARY KEY,
    delivery_id   TEXT NOT NULL,
    webhook_id    TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    attempt       BIGINT NOT NULL,
    at            BIGINT NOT NULL,
    http_status   BIGINT,
    error         TEXT,
    duration_ms   BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_webhook ON webhook_attempts (webhook_id, at);

-- Below this balance the owner's teams raise `balance.low`, once per
-- crossing: `low_balance_fired_at` is set when it fires and cleared when
-- the balance is topped up above the threshold.
ALTER TABLE teams ADD COLUMN low_balance_nano BIGINT;
ALTER TABLE teams ADD COLUMN low_balance_fired_at BIGINT;

-- Every account's spend that counts in its balance (imported history and
-- refusals left out), kept by the rollup trigger with `usage_daily`: a
-- balance reads one row however long the ledger. An import never touches
-- it, so a long import holds no lock a gateway's writer waits on.
CREATE TABLE usage_accounts (
    account_id  TEXT PRIMARY KEY,
    cost_nano   BIGINT NOT NULL
);
