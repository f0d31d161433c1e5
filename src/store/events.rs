//! Events and webhooks (contract §6): an event is stored once per fact
//! (its `dedupe` key is unique), in the transaction of the fact that caused
//! it, with one delivery for each of the team's webhooks that takes its
//! type. The delivery worker (`webhooks/`) claims due deliveries under a
//! lease, records every attempt, and reschedules or finishes them.

use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};

/// The events a webhook can take.
pub const EVENT_TYPES: [&str; 6] = [
    "limit.threshold",
    "limit.blocked",
    "balance.low",
    "member.joined",
    "member.left",
    "report.scheduled",
];

/// An event to record.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub team_id: String,
    pub kind: &'static str,
    /// One event per fact: a second event with this key is not recorded.
    pub dedupe: String,
    pub data: Value,
    pub at: i64,
    /// Deliver to this webhook only (a scheduled report), else to every
    /// webhook of the team that takes the type.
    pub webhook_id: Option<String>,
}

/// A team's report schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSchedule {
    pub team_id: String,
    /// `weekly` or `monthly`.
    pub cadence: String,
    pub group_by: String,
    pub webhook_id: String,
    /// The end of the period the next report covers.
    pub next_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub team_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
    pub created_by: String,
    pub created_at: i64,
}

/// A delivery the worker holds: what to send, where, and how it went so
/// far.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: String,
    pub webhook_id: String,
    pub url: String,
    pub secret: String,
    pub event_id: String,
    pub event_type: String,
    pub team_id: String,
    pub data: String,
    pub event_at: i64,
    pub attempts: i64,
    pub created_at: i64,
}

/// One attempt, as `GET …/deliveries` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attempt {
    pub id: String,
    pub event_id: String,
    pub attempt: i64,
    pub at: i64,
    pub http_status: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// How an attempt ended, for [`Store::finish_attempt`].
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub http_status: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub delivered: bool,
    /// When to try again; `None` gives up (`failed`).
    pub retry_at: Option<i64>,
}

fn webhook_from_row(row: &AnyRow) -> Result<Webhook, StoreError> {
    let events: String = row.try_get("events")?;
    Ok(Webhook {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        url: row.try_get("url")?,
        events: events
            .split(',')
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect(),
        secret: row.try_get("secret")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Records an event once (by its dedupe key) and a delivery for each of
    /// the team's webhooks that takes it, on the caller's transaction.
    /// Returns the event's id when it is new.
    pub async fn record_event_on(
        conn: &mut AnyConnection,
        event: &NewEvent,
    ) -> Result<Option<String>, StoreError> {
        let id = crate::keys::new_id("evt");
        let inserted = sqlx::query(
            "INSERT INTO events (id, team_id, type, dedupe, data, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(&event.team_id)
        .bind(event.kind)
        .bind(&event.dedupe)
        .bind(event.data.to_string())
        .bind(event.at)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(None);
        }
        let hooks = sqlx::query(
            "SELECT id, events FROM webhooks WHERE team_id = $1 AND deleted_at IS NULL",
        )
        .bind(&event.team_id)
        .fetch_all(&mut *conn)
        .await?;
        for hook in hooks {
            let events: String = hook.try_get("events")?;
            let webhook_id: String = hook.try_get("id")?;
            let wanted = match &event.webhook_id {
                Some(only) => *only == webhook_id,
                None => events.split(',').any(|e| e == event.kind),
            };
            if !wanted {
                continue;
            }
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, event_id, webhook_id, state, attempts, next_at, lease_until, created_at) \
                 VALUES ($1, $2, $3, 'pending', 0, $4, 0, $4)",
            )
            .bind(crate::keys::new_id("dlv"))
            .bind(&id)
            .bind(&webhook_id)
            .bind(event.at)
            .execute(&mut *conn)
            .await?;
        }
        Ok(Some(id))
    }

    /// [`Store::record_event_on`] in its own transaction.
    pub async fn record_event(&self, event: &NewEvent) -> Result<Option<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = Self::record_event_on(&mut tx, event).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The events of a team, newest first (for tests and the API).
    pub async fn events(&self, team_id: &str) -> Result<Vec<(String, String, Value)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, type, data FROM events WHERE team_id = $1 ORDER BY created_at DESC, id DESC",
        )
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let data: String = r.try_get("data")?;
                Ok((
                    r.try_get("id")?,
                    r.try_get("type")?,
                    serde_json::from_str(&data).unwrap_or(Value::Null),
                ))
            })
            .collect()
    }

    // === Webhooks ===

    pub async fn create_webhook(&self, hook: &Webhook) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhooks (id, team_id, url, events, secret, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&hook.id)
        .bind(&hook.team_id)
        .bind(&hook.url)
        .bind(hook.events.join(","))
        .bind(&hook.secret)
        .bind(&hook.created_by)
        .bind(hook.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn webhooks(&self, team_id: &str) -> Result<Vec<Webhook>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, team_id, url, events, secret, created_by, created_at FROM webhooks \
             WHERE team_id = $1 AND deleted_at IS NULL ORDER BY created_at, id",
        )
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    pub async fn webhook(&self, team_id: &str, id: &str) -> Result<Option<Webhook>, StoreError> {
        let row = sqlx::query(
            "SELECT id, team_id, url, events, secret, created_by, created_at FROM webhooks \
             WHERE team_id = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(team_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| webhook_from_row(&r)).transpose()
    }

    /// Deletes a webhook (soft); its pending deliveries are dropped.
    pub async fn delete_webhook(
        &self,
        team_id: &str,
        id: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE webhooks SET deleted_at = $1 WHERE team_id = $2 AND id = $3 AND deleted_at IS NULL",
        )
        .bind(at)
        .bind(team_id)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "UPDATE webhook_deliveries SET state = 'dropped' WHERE webhook_id = $1 AND state = 'pending'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done == 1)
    }

    /// A webhook's attempts, newest first.
    pub async fn webhook_attempts(
        &self,
        webhook_id: &str,
        limit: i64,
    ) -> Result<Vec<Attempt>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event_id, attempt, at, http_status, error, duration_ms FROM webhook_attempts \
             WHERE webhook_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(webhook_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Attempt {
                    id: r.try_get("id")?,
                    event_id: r.try_get("event_id")?,
                    attempt: r.try_get("attempt")?,
                    at: r.try_get("at")?,
                    http_status: r.try_get("http_status")?,
                    error: r.try_get("error")?,
                    duration_ms: r.try_get("duration_ms")?,
                })
            })
            .collect()
    }

    /// The state of each delivery of an event (`pending`, `delivered`,
    /// `failed`, `dropped`), by webhook.
    pub async fn delivery_states(
        &self,
        event_id: &str,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT webhook_id, state, attempts FROM webhook_deliveries WHERE event_id = $1 ORDER BY webhook_id",
        )
        .bind(event_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("webhook_id")?,
                    r.try_get("state")?,
                    r.try_get("attempts")?,
                ))
            })
            .collect()
    }

    /// Takes up to `limit` due deliveries for `lease_ms` (no other process
    /// takes them meanwhile): pending, due, and not leased.
    pub async fn claim_deliveries(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let owner = self
            .lease_due("webhook_deliveries", now, lease_ms, limit)
            .await?;
        let rows = sqlx::query(
            "SELECT d.id, d.webhook_id, w.url, w.secret, d.event_id, e.type, e.team_id, e.data, \
               e.created_at AS event_at, d.attempts, d.created_at \
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id JOIN events e ON e.id = d.event_id \
             WHERE d.state = 'pending' AND d.lease_owner = $1 AND w.deleted_at IS NULL",
        )
        .bind(&owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueDelivery {
                    id: r.try_get("id")?,
                    webhook_id: r.try_get("webhook_id")?,
                    url: r.try_get("url")?,
                    secret: r.try_get("secret")?,
                    event_id: r.try_get("event_id")?,
                    event_type: r.try_get("type")?,
                    team_id: r.try_get("team_id")?,
                    data: r.try_get("data")?,
                    event_at: r.try_get("event_at")?,
                    attempts: r.try_get("attempts")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Records an attempt and moves its delivery on: delivered, retried at
    /// `retry_at`, or failed.
    pub async fn finish_attempt(
        &self,
        delivery: &DueDelivery,
        outcome: &AttemptOutcome,
        at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (id, delivery_id, webhook_id, event_id, attempt, at, http_status, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(crate::keys::new_id("att"))
        .bind(&delivery.id)
        .bind(&delivery.webhook_id)
        .bind(&delivery.event_id)
        .bind(delivery.attempts + 1)
        .bind(at)
        .bind(outcome.http_status)
        .bind(&outcome.error)
        .bind(outcome.duration_ms)
        .execute(&mut *tx)
        .await?;
        let (state, next_at) = match (outcome.delivered, outcome.retry_at) {
            (true, _) => ("delivered", at),
            (false, Some(retry_at)) => ("pending", retry_at),
            (false, None) => ("failed", at),
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, next_at = $2, lease_until = 0, \
             delivered_at = CASE WHEN $1 = 'delivered' THEN $3 ELSE delivered_at END \
             WHERE id = $4 AND state = 'pending'",
        )
        .bind(state)
        .bind(next_at)
        .bind(at)
        .bind(&delivery.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Arms `balance.low` again for an owner's teams whose threshold the
    /// balance is back above (after a credit).
    pub async fn rearm_low_balance(&self, owner_id: &str) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let balance = Self::recorded_balance_on(&mut conn, owner_id).await?;
        sqlx::query(
            "UPDATE teams SET low_balance_fired_at = NULL WHERE owner_id = $1 \
             AND low_balance_fired_at IS NOT NULL AND low_balance_nano <= $2",
        )
        .bind(owner_id)
        .bind(balance.nano())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// A member joined or left a team: its event, on the caller's
    /// transaction.
    pub async fn record_member_event_on(
        conn: &mut AnyConnection,
        team_id: &str,
        user_id: &str,
        joined: bool,
        role: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let email = Self::email_on(conn, user_id).await?;
        let kind = if joined {
            "member.joined"
        } else {
            "member.left"
        };
        Self::record_event_on(
            conn,
            &NewEvent {
                team_id: team_id.to_string(),
                kind,
                dedupe: format!(
                    "{kind}:{team_id}:{user_id}:{at}:{}",
                    crate::keys::new_id("x")
                ),
                data: json!({"user_id": user_id, "email": email, "role": role}),
                at,
                webhook_id: None,
            },
        )
        .await?;
        Ok(())
    }

    /// A user's email (events name the member), on the caller's
    /// transaction.
    pub(super) async fn email_on(
        conn: &mut AnyConnection,
        user_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query("SELECT email FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| r.try_get("email"))
            .transpose()?)
    }

    // === Report schedules ===

    pub async fn set_report_schedule(
        &self,
        schedule: &ReportSchedule,
        by: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO report_schedules (team_id, cadence, group_by, webhook_id, next_at, created_by, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (team_id) DO UPDATE SET \
             cadence = excluded.cadence, group_by = excluded.group_by, webhook_id = excluded.webhook_id, \
             next_at = excluded.next_at, created_by = excluded.created_by, updated_at = excluded.updated_at",
        )
        .bind(&schedule.team_id)
        .bind(&schedule.cadence)
        .bind(&schedule.group_by)
        .bind(&schedule.webhook_id)
        .bind(schedule.next_at)
        .bind(by)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn report_schedule(
        &self,
        team_id: &str,
    ) -> Result<Option<ReportSchedule>, StoreError> {
        let row = sqlx::query(
            "SELECT team_id, cadence, group_by, webhook_id, next_at FROM report_schedules WHERE team_id = $1",
        )
        .bind(team_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| schedule_from_row(&r)).transpose()
    }

    pub async fn delete_report_schedule(&self, team_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM report_schedules WHERE team_id = $1")
            .bind(team_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Schedules whose period has ended.
    pub async fn due_report_schedules(&self, now: i64) -> Result<Vec<ReportSchedule>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.team_id, s.cadence, s.group_by, s.webhook_id, s.next_at FROM report_schedules s \
             JOIN teams t ON t.id = s.team_id WHERE s.next_at <= $1 AND t.deleted_at IS NULL \
             ORDER BY s.next_at LIMIT 100",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(schedule_from_row).collect()
    }

    /// Moves a schedule to its next period, once: true for the one caller
    /// that moved it (that caller sends the report).
    pub async fn advance_report_schedule(
        &self,
        team_id: &str,
        from: i64,
        to: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE report_schedules SET next_at = $1 WHERE team_id = $2 AND next_at = $3",
        )
        .bind(to)
        .bind(team_id)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn schedule_from_row(row: &AnyRow) -> Result<ReportSchedule, StoreError> {
    Ok(ReportSchedule {
        team_id: row.try_get("team_id")?,
        cadence: row.try_get("cadence")?,
        group_by: row.try_get("group_by")?,
        webhook_id: row.try_get("webhook_id")?,
        next_at: row.try_get("next_at")?,
    })
}
