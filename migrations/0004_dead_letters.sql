-- Ledger rows the database rejected (issue 13): kept whole, with the
-- reason, so that the rows behind them flow on and none is lost.
CREATE TABLE usage_dead_letters (
    request_id    TEXT NOT NULL,
    row_json      TEXT NOT NULL,
    reason        TEXT NOT NULL,
    set_aside_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX usage_dead_letters_request ON usage_dead_letters (request_id);
