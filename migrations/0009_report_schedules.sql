-- Scheduled reports (issue 18): one schedule per team. `next_at` is the
-- end of the period the next report covers; the process that moves it on
-- (a conditional update) sends that report, so each period is reported
-- once however many processes run.
CREATE TABLE report_schedules (
    team_id     TEXT PRIMARY KEY REFERENCES teams (id),
    cadence     TEXT NOT NULL,
    group_by    TEXT NOT NULL,
    webhook_id  TEXT NOT NULL,
    next_at     BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX report_schedules_due ON report_schedules (next_at);
