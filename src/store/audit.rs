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

    /// Records a limit event once per member, period and kind; the first
    /// hard refusal of a month also raises `limit.blocked` (same
    /// transaction).
    pub async fn record_limit_event(&self, event: &LimitEvent) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let fresh = Self::insert_limit_event_on(
            &mut tx,
            &event.team_id,
            &event.user_id,
            &event.period,
            event.kind,
            event.limit,
            event.spend,
            event.at,
        )
        .await?;
        if fresh && event.kind == "hard_refused" {
            let email = Self::email_on(&mut tx, &event.user_id).await?;
            let blocked = super::events::NewEvent {
                team_id: event.team_id.clone(),
                kind: "limit.blocked",
                dedupe: format!(
                    "limit.blocked:{}:{}:{}",
                    event.team_id, event.user_id, event.period
                ),
                data: serde_json::json!({
                    "user_id": event.user_id,
                    "email": email,
                    "spent_usd": event.spend.to_string(),
                    "limit_usd": event.limit.to_string(),
                    "month": event.period,
                }),
                at: event.at,
                webhook_id: None,
            };
            Self::record_event_on(&mut tx, &blocked).await?;
            if self.mail {
                Self::mail_limit_event_on(&mut tx, &blocked).await?;
            }
        }
        tx.commit().await?;
        Ok(fresh)
    }

    /// Inserts a limit event unless one of its member, period and kind is
    /// recorded; true when it is new.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_limit_event_on(
        conn: &mut sqlx::AnyConnection,
        team_id: &str,
        user_id: &str,
        period: &str,
        kind: &str,
        limit: Money,
        spend: Money,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO limit_events (team_id, user_id, period, kind, limit_nano, spend_nano, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (team_id, user_id, period, kind) DO NOTHING",
        )
        .bind(team_id)
        .bind(user_id)
        .bind(period)
        .bind(kind)
        .bind(limit.nano())
        .bind(spend.nano())
        .bind(at)
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Soft crossings and hard refusals recorded for a member and month
    /// (the threshold alerts are counted apart).
    pub async fn limit_event_count(
        &self,
        team_id: &str,
        user_id: &str,
        period: &str,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM limit_events WHERE team_id = $1 AND user_id = $2 AND period = $3 \
             AND kind IN ('soft_exceeded', 'hard_refused')",
        )
        .bind(team_id)
        .bind(user_id)
        .bind(period)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }
}
