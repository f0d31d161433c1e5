-- Cost allocation tags (issue 18): a row's tags (a JSON object of
-- key → value, keys sorted; NULL for none), a key's default tags, and the
-- daily rollup by team, tag key and value that a report by tag reads for
-- whole days (kept by the rollup trigger, `store/rollups.rs`).
ALTER TABLE usage_rows ADD COLUMN tags TEXT;
ALTER TABLE api_keys ADD COLUMN tags TEXT;

CREATE TABLE usage_daily_tags (
    team_id                 TEXT NOT NULL,
    tag_key                 TEXT NOT NULL,
    day                     BIGINT NOT NULL,
    tag_value               TEXT NOT NULL,
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
    PRIMARY KEY (team_id, tag_key, day, tag_value)
);
