-- Email (issue 19, contract §6): every mail is written here first, in the
-- transaction of the fact that caused it where there is one (a threshold
-- judged by the ledger writer, a first hard refusal), and sent by a worker
-- in each gateway process. `dedupe` is unique: one mail per fact and
-- recipient however often the fact is judged. `data` is what the message
-- is composed from at send time (an invitation's link is scrubbed from it
-- once the mail has gone or failed); a report's CSV waits in
-- `attachment`.
--
-- state: 'pending' until the SMTP server takes it ('sent'), or its retries
-- end ('failed'); 'capped' is an invitation mail over its team's hourly
-- cap (recorded, never sent). A process sending it holds `lease_until`.
CREATE TABLE email_outbox (
    id               TEXT PRIMARY KEY,
    team_id          TEXT,
    kind             TEXT NOT NULL,
    dedupe           TEXT NOT NULL,
    to_addr          TEXT NOT NULL,
    data             TEXT NOT NULL,
    attachment_name  TEXT,
    attachment       TEXT,
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    next_at          BIGINT NOT NULL,
    lease_until      BIGINT NOT NULL,
    lease_owner      TEXT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    sent_at          BIGINT
);
CREATE UNIQUE INDEX email_outbox_dedupe ON email_outbox (dedupe);
CREATE INDEX email_outbox_due ON email_outbox (state, next_at);
CREATE INDEX email_outbox_team ON email_outbox (team_id, kind, created_at);
