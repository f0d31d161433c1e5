-- Teams, membership, invitations, join requests, limit events and the audit
-- trail. Portable between PostgreSQL and SQLite; nothing is hard-deleted.

CREATE TABLE teams (
    id                          TEXT PRIMARY KEY,
    name                        TEXT NOT NULL,
    owner_id                    TEXT NOT NULL REFERENCES users (id),
    default_monthly_limit_nano  BIGINT,
    enforcement                 TEXT NOT NULL DEFAULT 'hard',
    restricted_models           TEXT NOT NULL DEFAULT '[]',
    invite_link_hash            TEXT,
    created_at                  BIGINT NOT NULL,
    deleted_at                  BIGINT
);
CREATE UNIQUE INDEX teams_invite_link ON teams (invite_link_hash);

CREATE TABLE team_members (
    team_id             TEXT NOT NULL REFERENCES teams (id),
    user_id             TEXT NOT NULL REFERENCES users (id),
    role                TEXT NOT NULL,
    monthly_limit_nano  BIGINT,
    joined_at           BIGINT NOT NULL,
    removed_at          BIGINT,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members (user_id);

CREATE TABLE invitations (
    id           TEXT PRIMARY KEY,
    team_id      TEXT NOT NULL REFERENCES teams (id),
    email        TEXT NOT NULL,
    role         TEXT NOT NULL,
    token_hash   TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    accepted_at  BIGINT,
    accepted_by  TEXT,
    revoked_at   BIGINT
);
CREATE UNIQUE INDEX invitations_token ON invitations (token_hash);
CREATE INDEX invitations_team ON invitations (team_id);

CREATE TABLE join_requests (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL REFERENCES teams (id),
    user_id     TEXT NOT NULL REFERENCES users (id),
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    decided_at  BIGINT,
    decided_by  TEXT
);
CREATE INDEX join_requests_team ON join_requests (team_id, status);

-- Soft-limit crossings, once per member per month.
CREATE TABLE limit_events (
    team_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    period       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    limit_nano   BIGINT NOT NULL,
    spend_nano   BIGINT NOT NULL,
    at           BIGINT NOT NULL,
    PRIMARY KEY (team_id, user_id, period, kind)
);

-- Append-only: the code never updates or deletes a row here.
CREATE TABLE audit_log (
    id           TEXT PRIMARY KEY,
    team_id      TEXT,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT,
    before_json  TEXT,
    after_json   TEXT,
    at           BIGINT NOT NULL
);
CREATE INDEX audit_log_team ON audit_log (team_id, at);
