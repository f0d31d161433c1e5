-- Daily rollups of the ledger (issue 17): one row per UTC day, team
-- ('' for personal usage), member, model and paying account, holding the
-- sums every report and balance needs. Maintained by a trigger on
-- usage_rows, created at start by the store (`store/rollups.rs`: a
-- statement trigger over the inserted rows on PostgreSQL, a row trigger on
-- SQLite), so a rollup changes in the same transaction as the rows it
-- sums and only for rows actually inserted. Refusals are not rolled up
-- (they cost nothing and no report counts them). Kept when old rows are
-- dropped by `ledger.retention_months`.
CREATE TABLE usage_daily (
    team_id                 TEXT NOT NULL,
    day                     BIGINT NOT NULL,
    user_id                 TEXT NOT NULL,
    model                   TEXT NOT NULL,
    account_id              TEXT NOT NULL,
    requests                BIGINT NOT NULL,
    input_tokens            BIGINT NOT NULL,
    output_tokens           BIGINT NOT NULL,
    cached_tokens           BIGINT NOT NULL,
    reasoning_tokens        BIGINT NOT NULL,
    cost_nano               BIGINT NOT NULL,
    cache_write_tokens      BIGINT NOT NULL,
    cache_write_1h_tokens   BIGINT NOT NULL,
    audio_input_tokens      BIGINT NOT NULL,
    audio_output_tokens     BIGINT NOT NULL,
    web_search_calls        BIGINT NOT NULL,
    web_fetch_calls         BIGINT NOT NULL,
    code_execution_calls    BIGINT NOT NULL,
    priority_tier_requests  BIGINT NOT NULL,
    flex_tier_requests      BIGINT NOT NULL,
    long_context_requests   BIGINT NOT NULL,
    imported_cost_nano      BIGINT NOT NULL,
    PRIMARY KEY (team_id, day, user_id, model, account_id)
);
CREATE INDEX usage_daily_user ON usage_daily (user_id, day);
CREATE INDEX usage_daily_account ON usage_daily (account_id, day);
