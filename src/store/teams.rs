//! Teams, members, invitations, join requests, limit events, the audit
//! trail and usage reports. Same portable SQL as the rest of the store.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{map_unique, Store, StoreError};
use crate::money::Money;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub default_monthly_limit: Option<Money>,
    /// `hard` or `soft`.
    pub enforcement: String,
    pub restricted_models: Vec<String>,
    pub invite_link_hash: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub team_id: String,
    pub user_id: String,
    pub email: String,
    /// `owner`, `admin` or `member`.
    pub role: String,
    pub monthly_limit: Option<Money>,
    pub joined_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub id: String,
    pub team_id: String,
    pub email: String,
    pub role: String,
    pub token_hash: String,
    pub expires_at: i64,
    pub created_by: String,
    pub created_at: i64,
    pub accepted_at: Option<i64>,
    pub accepted_by: Option<String>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub id: String,
    pub team_id: String,
    pub user_id: String,
    pub email: String,
    pub status: String,
    pub created_at: i64,
    pub decided_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: String,
    pub team_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub before_json: Option<String>,
    pub after_json: Option<String>,
    pub at: i64,
}

/// A member's limit crossing (`soft_exceeded`) or refusal (`hard_refused`),
/// recorded once per member, month and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitEvent {
    pub team_id: String,
    pub user_id: String,
    /// `YYYY-MM`.
    pub period: String,
    pub kind: &'static str,
    pub limit: Money,
    pub spend: Money,
    pub at: i64,
}

/// One group of a usage report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsageGroup {
    pub key: String,
    pub label: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_nano: i64,
}

impl UsageGroup {
    /// Adds another group's counts and cost to this one.
    pub fn add(&mut self, other: &UsageGroup) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_tokens += other.cached_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.cost_nano += other.cost_nano;
    }

    /// Reads the sums of `USAGE_SUMS` from a report row.
    fn from_sums(
        r: &sqlx::any::AnyRow,
        key: String,
        label: String,
    ) -> Result<UsageGroup, sqlx::Error> {
        Ok(UsageGroup {
            key,
            label,
            requests: r.try_get("requests")?,
            input_tokens: r.try_get("input_tokens")?,
            output_tokens: r.try_get("output_tokens")?,
            cached_tokens: r.try_get("cached_tokens")?,
            reasoning_tokens: r.try_get("reasoning_tokens")?,
            cost_nano: r.try_get("cost_nano")?,
        })
    }
}

/// The sums every usage report selects.
const USAGE_SUMS: &str = "COUNT(*) AS requests, \
     CAST(COALESCE(SUM(r.input_tokens), 0) AS BIGINT) AS input_tokens, \
     CAST(COALESCE(SUM(r.output_tokens), 0) AS BIGINT) AS output_tokens, \
     CAST(COALESCE(SUM(r.cached_tokens), 0) AS BIGINT) AS cached_tokens, \
     CAST(COALESCE(SUM(r.reasoning_tokens), 0) AS BIGINT) AS reasoning_tokens, \
     CAST(COALESCE(SUM(r.cost_nano), 0) AS BIGINT) AS cost_nano";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Member,
    Model,
    Day,
}

const TEAM_COLUMNS: &str = "id, name, owner_id, default_monthly_limit_nano, enforcement, restricted_models, invite_link_hash, created_at";
const DAY_MS: i64 = 86_400_000;

fn team_from_row(row: &AnyRow) -> Result<Team, StoreError> {
    let restricted: String = row.try_get("restricted_models")?;
    Ok(Team {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        owner_id: row.try_get("owner_id")?,
        default_monthly_limit: row
            .try_get::<Option<i64>, _>("default_monthly_limit_nano")?
            .map(Money::from_nano),
        enforcement: row.try_get("enforcement")?,
        restricted_models: serde_json::from_str(&restricted).unwrap_or_default(),
        invite_link_hash: row.try_get("invite_link_hash")?,
        created_at: row.try_get("created_at")?,
    })
}

fn member_from_row(row: &AnyRow) -> Result<Member, StoreError> {
    Ok(Member {
        team_id: row.try_get("team_id")?,
        user_id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        role: row.try_get("role")?,
        monthly_limit: row
            .try_get::<Option<i64>, _>("monthly_limit_nano")?
            .map(Money::from_nano),
        joined_at: row.try_get("joined_at")?,
    })
}

fn invitation_from_row(row: &AnyRow) -> Result<Invitation, StoreError> {
    Ok(Invitation {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        email: row.try_get("email")?,
        role: row.try_get("role")?,
        token_hash: row.try_get("token_hash")?,
        expires_at: row.try_get("expires_at")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        accepted_at: row.try_get("accepted_at")?,
        accepted_by: row.try_get("accepted_by")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn join_request_from_row(row: &AnyRow) -> Result<JoinRequest, StoreError> {
    Ok(JoinRequest {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        user_id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        status: row.try_get("status")?,
        created_at: row.try_get("created_at")?,
        decided_at: row.try_get("decided_at")?,
    })
}

const MEMBER_SELECT: &str =
    "SELECT m.team_id, m.user_id, u.email, m.role, m.monthly_limit_nano, m.joined_at \
     FROM team_members m JOIN users u ON u.id = m.user_id";

const INVITATION_COLUMNS: &str = "id, team_id, email, role, token_hash, expires_at, created_by, created_at, accepted_at, accepted_by, revoked_at";

impl Store {
    // === Teams ===

    /// Creates a team with its owner as the first member, atomically.
    pub async fn create_team(&self, team: &Team) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO teams (id, name, owner_id, default_monthly_limit_nano, enforcement, restricted_models, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&team.id)
        .bind(&team.name)
        .bind(&team.owner_id)
        .bind(team.default_monthly_limit.map(Money::nano))
        .bind(&team.enforcement)
        .bind(serde_json::to_string(&team.restricted_models).unwrap_or_else(|_| "[]".into()))
        .bind(team.created_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO team_members (team_id, user_id, role, joined_at) VALUES ($1, $2, 'owner', $3)",
        )
        .bind(&team.id)
        .bind(&team.owner_id)
        .bind(team.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A team that is not deleted.
    pub async fn team(&self, id: &str) -> Result<Option<Team>, StoreError> {
        let sql = format!("SELECT {TEAM_COLUMNS} FROM teams WHERE id = $1 AND deleted_at IS NULL");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| team_from_row(&r)).transpose()
    }

    pub async fn all_teams(&self) -> Result<Vec<Team>, StoreError> {
        let sql = format!(
            "SELECT {TEAM_COLUMNS} FROM teams WHERE deleted_at IS NULL ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(team_from_row).collect()
    }

    /// Saves name, default limit, enforcement and restrictions.
    pub async fn update_team(&self, team: &Team) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE teams SET name = $1, default_monthly_limit_nano = $2, enforcement = $3, restricted_models = $4 \
             WHERE id = $5 AND deleted_at IS NULL",
        )
        .bind(&team.name)
        .bind(team.default_monthly_limit.map(Money::nano))
        .bind(&team.enforcement)
        .bind(serde_json::to_string(&team.restricted_models).unwrap_or_else(|_| "[]".into()))
        .bind(&team.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_team(&self, id: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE teams SET deleted_at = $1, invite_link_hash = NULL WHERE id = $2 AND deleted_at IS NULL")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves ownership; the old owner becomes an admin.
    pub async fn transfer_team(
        &self,
        team_id: &str,
        old_owner: &str,
        new_owner: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE teams SET owner_id = $1 WHERE id = $2")
            .bind(new_owner)
            .bind(team_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE team_members SET role = 'admin' WHERE team_id = $1 AND user_id = $2")
            .bind(team_id)
            .bind(old_owner)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE team_members SET role = 'owner' WHERE team_id = $1 AND user_id = $2")
            .bind(team_id)
            .bind(new_owner)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_invite_link(
        &self,
        team_id: &str,
        hash: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE teams SET invite_link_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(team_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn team_by_invite_link(&self, hash: &str) -> Result<Option<Team>, StoreError> {
        let sql = format!(
            "SELECT {TEAM_COLUMNS} FROM teams WHERE invite_link_hash = $1 AND deleted_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| team_from_row(&r)).transpose()
    }

    // === Members ===

    /// An active member of a team that is not deleted.
    pub async fn member(&self, team_id: &str, user_id: &str) -> Result<Option<Member>, StoreError> {
        let sql = format!(
            "{MEMBER_SELECT} JOIN teams t ON t.id = m.team_id \
             WHERE m.team_id = $1 AND m.user_id = $2 AND m.removed_at IS NULL AND t.deleted_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(team_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| member_from_row(&r)).transpose()
    }

    pub async fn members(&self, team_id: &str) -> Result<Vec<Member>, StoreError> {
        let sql = format!(
            "{MEMBER_SELECT} WHERE m.team_id = $1 AND m.removed_at IS NULL ORDER BY m.joined_at, m.user_id"
        );
        let rows = sqlx::query(&sql)
            .bind(team_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(member_from_row).collect()
    }

    /// The teams a user belongs to, with the user's role.
    pub async fn teams_of_user(&self, user_id: &str) -> Result<Vec<(Team, String)>, StoreError> {
        let sql = format!(
            "SELECT {}, m.role AS member_role FROM teams t JOIN team_members m ON m.team_id = t.id \
             WHERE m.user_id = $1 AND m.removed_at IS NULL AND t.deleted_at IS NULL ORDER BY t.created_at, t.id",
            TEAM_COLUMNS
                .split(", ")
                .map(|c| format!("t.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((team_from_row(r)?, r.try_get("member_role")?)))
            .collect()
    }

    /// Adds a member, or brings a removed one back with a fresh role and no
    /// override.
    pub async fn add_member(
        &self,
        team_id: &str,
        user_id: &str,
        role: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO team_members (team_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (team_id, user_id) DO UPDATE SET role = excluded.role, joined_at = excluded.joined_at, \
             monthly_limit_nano = NULL, removed_at = NULL",
        )
        .bind(team_id)
        .bind(user_id)
        .bind(role)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn update_member(
        &self,
        team_id: &str,
        user_id: &str,
        role: &str,
        monthly_limit: Option<Money>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE team_members SET role = $1, monthly_limit_nano = $2 \
             WHERE team_id = $3 AND user_id = $4 AND removed_at IS NULL",
        )
        .bind(role)
        .bind(monthly_limit.map(Money::nano))
        .bind(team_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn remove_member(
        &self,
        team_id: &str,
        user_id: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE team_members SET removed_at = $1 WHERE team_id = $2 AND user_id = $3 AND removed_at IS NULL")
            .bind(at)
            .bind(team_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // === Invitations ===

    pub async fn insert_invitation(&self, invitation: &Invitation) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO invitations (id, team_id, email, role, token_hash, expires_at, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&invitation.id)
        .bind(&invitation.team_id)
        .bind(&invitation.email)
        .bind(&invitation.role)
        .bind(&invitation.token_hash)
        .bind(invitation.expires_at)
        .bind(&invitation.created_by)
        .bind(invitation.created_at)
        .execute(&self.pool)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    pub async fn invitations(&self, team_id: &str) -> Result<Vec<Invitation>, StoreError> {
        let sql = format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE team_id = $1 ORDER BY created_at DESC, id");
        let rows = sqlx::query(&sql)
            .bind(team_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(invitation_from_row).collect()
    }

    pub async fn invitation(
        &self,
        team_id: &str,
        id: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        let sql =
            format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE team_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(team_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| invitation_from_row(&r)).transpose()
    }

    pub async fn invitation_by_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        let sql = format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = $1");
        let row = sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| invitation_from_row(&r)).transpose()
    }

    pub async fn revoke_invitation(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE invitations SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL AND accepted_at IS NULL",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks an invitation used, once: a second accept (even a concurrent
    /// one) changes nothing and returns false.
    pub async fn consume_invitation(
        &self,
        id: &str,
        user_id: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE invitations SET accepted_at = $1, accepted_by = $2 \
             WHERE id = $3 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(at)
        .bind(user_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // === Join requests ===

    pub async fn pending_join_request(
        &self,
        team_id: &str,
        user_id: &str,
    ) -> Result<Option<JoinRequest>, StoreError> {
        let row = sqlx::query(
            "SELECT j.id, j.team_id, j.user_id, u.email, j.status, j.created_at, j.decided_at \
             FROM join_requests j JOIN users u ON u.id = j.user_id \
             WHERE j.team_id = $1 AND j.user_id = $2 AND j.status = 'pending'",
        )
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| join_request_from_row(&r)).transpose()
    }

    pub async fn insert_join_request(&self, request: &JoinRequest) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO join_requests (id, team_id, user_id, status, created_at) VALUES ($1, $2, $3, 'pending', $4)",
        )
        .bind(&request.id)
        .bind(&request.team_id)
        .bind(&request.user_id)
        .bind(request.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn join_requests(&self, team_id: &str) -> Result<Vec<JoinRequest>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.id, j.team_id, j.user_id, u.email, j.status, j.created_at, j.decided_at \
             FROM join_requests j JOIN users u ON u.id = j.user_id \
             WHERE j.team_id = $1 ORDER BY j.created_at DESC, j.id",
        )
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(join_request_from_row).collect()
    }

    pub async fn join_request(
        &self,
        team_id: &str,
        id: &str,
    ) -> Result<Option<JoinRequest>, StoreError> {
        let row = sqlx::query(
            "SELECT j.id, j.team_id, j.user_id, u.email, j.status, j.created_at, j.decided_at \
             FROM join_requests j JOIN users u ON u.id = j.user_id WHERE j.team_id = $1 AND j.id = $2",
        )
        .bind(team_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| join_request_from_row(&r)).transpose()
    }

    /// Decides a pending request, once; returns false if it was not pending.
    pub async fn decide_join_request(
        &self,
        id: &str,
        status: &str,
        by: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE join_requests SET status = $1, decided_by = $2, decided_at = $3 WHERE id = $4 AND status = 'pending'",
        )
        .bind(status)
        .bind(by)
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn pending_join_request_count(&self, team_id: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM join_requests WHERE team_id = $1 AND status = 'pending'",
        )
        .bind(team_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    // === Limits and spend ===

    /// Records a limit event once per member, period and kind.
    pub async fn record_limit_event(&self, event: &LimitEvent) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO limit_events (team_id, user_id, period, kind, limit_nano, spend_nano, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (team_id, user_id, period, kind) DO NOTHING",
        )
        .bind(&event.team_id)
        .bind(&event.user_id)
        .bind(&event.period)
        .bind(event.kind)
        .bind(event.limit.nano())
        .bind(event.spend.nano())
        .bind(event.at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn limit_event_count(
        &self,
        team_id: &str,
        user_id: &str,
        period: &str,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM limit_events WHERE team_id = $1 AND user_id = $2 AND period = $3",
        )
        .bind(team_id)
        .bind(user_id)
        .bind(period)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// A member's recorded team spend in `[from, to)`.
    pub async fn member_spend(
        &self,
        team_id: &str,
        user_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Money, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::member_spend_on(&mut conn, team_id, user_id, from, to).await
    }

    /// A member's recorded team spend on a connection (inside a counter lock).
    pub async fn member_spend_on(
        conn: &mut sqlx::AnyConnection,
        team_id: &str,
        user_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Money, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(cost_nano), 0) AS BIGINT) AS spent FROM usage_rows \
             WHERE team_id = $1 AND user_id = $2 AND started_at >= $3 AND started_at < $4",
        )
        .bind(team_id)
        .bind(user_id)
        .bind(from)
        .bind(to)
        .fetch_one(&mut *conn)
        .await?;
        Ok(Money::from_nano(row.try_get("spent")?))
    }

    /// Each member's recorded team spend in `[from, to)`.
    pub async fn member_spends(
        &self,
        team_id: &str,
        from: i64,
        to: i64,
    ) -> Result<HashMap<String, Money>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, CAST(COALESCE(SUM(cost_nano), 0) AS BIGINT) AS spent FROM usage_rows \
             WHERE team_id = $1 AND started_at >= $2 AND started_at < $3 GROUP BY user_id",
        )
        .bind(team_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("user_id")?, Money::from_nano(r.try_get("spent")?))))
            .collect()
    }

    /// The usage report of a team in `[from, to)`; refusals are not counted.
    pub async fn usage_report(
        &self,
        team_id: &str,
        from: i64,
        to: i64,
        group_by: GroupBy,
    ) -> Result<Vec<UsageGroup>, StoreError> {
        let (key, join, label) = match group_by {
            GroupBy::Member => (
                "r.user_id",
                "LEFT JOIN users u ON u.id = r.user_id",
                "MIN(u.email)",
            ),
            GroupBy::Model => ("r.model", "", "MIN(r.model)"),
            GroupBy::Day => ("(r.started_at / 86400000)", "", "MIN(r.started_at)"),
        };
        let sql = format!(
            "SELECT CAST({key} AS TEXT) AS k, {label} AS label_raw, {USAGE_SUMS} \
             FROM usage_rows r {join} \
             WHERE r.team_id = $1 AND r.started_at >= $2 AND r.started_at < $3 AND r.status <> 'refused' \
             GROUP BY {key} ORDER BY {key}"
        );
        let rows = sqlx::query(&sql)
            .bind(team_id)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let key: String = r.try_get("k")?;
                let label = match group_by {
                    GroupBy::Member => r
                        .try_get::<Option<String>, _>("label_raw")?
                        .unwrap_or_default(),
                    GroupBy::Model => r.try_get("label_raw")?,
                    GroupBy::Day => String::new(),
                };
                Ok(UsageGroup::from_sums(r, key, label)?)
            })
            .collect()
    }

    /// Daily usage split by member or by model: `(day number, group)` pairs,
    /// ordered by day then key. Each day's groups sum to that day's total.
    pub async fn usage_daily_split(
        &self,
        team_id: &str,
        from: i64,
        to: i64,
        split: GroupBy,
    ) -> Result<Vec<(i64, UsageGroup)>, StoreError> {
        let (key, join, label) = match split {
            GroupBy::Member => (
                "r.user_id",
                "LEFT JOIN users u ON u.id = r.user_id",
                "MIN(u.email)",
            ),
            GroupBy::Model | GroupBy::Day => ("r.model", "", "MIN(r.model)"),
        };
        let sql = format!(
            "SELECT CAST(r.started_at / 86400000 AS BIGINT) AS day, CAST({key} AS TEXT) AS k, \
             {label} AS label_raw, {USAGE_SUMS} \
             FROM usage_rows r {join} \
             WHERE r.team_id = $1 AND r.started_at >= $2 AND r.started_at < $3 AND r.status <> 'refused' \
             GROUP BY CAST(r.started_at / 86400000 AS BIGINT), {key} ORDER BY 1, 2"
        );
        let rows = sqlx::query(&sql)
            .bind(team_id)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let day: i64 = r.try_get("day")?;
                let label: Option<String> = r.try_get("label_raw")?;
                let group = UsageGroup::from_sums(r, r.try_get("k")?, label.unwrap_or_default())?;
                Ok((day, group))
            })
            .collect()
    }

    // === Audit ===

    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (id, team_id, actor, action, target, before_json, after_json, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&entry.id)
        .bind(&entry.team_id)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&entry.before_json)
        .bind(&entry.after_json)
        .bind(entry.at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A team's audit trail, newest first.
    pub async fn audit(&self, team_id: &str, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, team_id, actor, action, target, before_json, after_json, at FROM audit_log \
             WHERE team_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(team_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    team_id: r.try_get("team_id")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    before_json: r.try_get("before_json")?,
                    after_json: r.try_get("after_json")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }
}

/// The UTC day number of epoch milliseconds.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}
