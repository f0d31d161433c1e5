//! The audit trail of team changes and the limit events (a member's
//! monthly limit crossed or enforced). Same portable SQL as the rest of the
//! store.

use sqlx::Row;

use super::{Store, StoreError};
use crate::money::Money;

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

impl Store {
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

    // === Limit events ===

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
}
