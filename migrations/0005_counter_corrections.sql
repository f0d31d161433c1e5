-- Counter corrections (issue 13): a change a ledger write owes the live
-- counters, stored in the same transaction as the rows it corrects and
-- deleted once applied. `counter` is the counter's name (`bal:<account>`,
-- `spend:<team>:<user>:<YYYY-MM>`); it is changed only while it still has
-- `stamp`. `rebuild` = 1 drops the counter so it is seeded from the ledger
-- again (a settlement given up while Redis was away); else `delta_nano` is
-- added, at most once (a mark in Redis remembers the correction's id).
CREATE TABLE counter_corrections (
    id          TEXT PRIMARY KEY,
    counter     TEXT NOT NULL,
    stamp       TEXT NOT NULL,
    delta_nano  BIGINT NOT NULL,
    rebuild     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX counter_corrections_created ON counter_corrections (created_at);
