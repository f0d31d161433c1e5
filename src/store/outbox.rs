//! The email outbox (contract §6, "Email"): a mail is a row here before it
//! is anything else, written in the transaction of the fact that caused it
//! where there is one, at most once per fact and recipient (`dedupe`). The
//! worker in `email/` claims due mails under a lease, composes and sends
//! each, and records how it went; only the lease holder records.

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};

/// A mail to record.
#[derive(Debug, Clone)]
pub struct NewMail {
    pub team_id: Option<String>,
    /// `invitation`, `report`, `limit.threshold` or `limit.blocked`.
    pub kind: &'static str,
    /// One mail per fact and recipient: a second with this key is not
    /// recorded.
    pub dedupe: String,
    pub to: String,
    /// What the message is composed from when it is sent.
    pub data: Value,
    /// A file sent with it: name and text (a report's CSV).
    pub attachment: Option<(String, String)>,
    pub at: i64,
}

/// A mail the worker holds.
#[derive(Debug, Clone)]
pub struct DueMail {
    pub id: String,
    pub kind: String,
    pub to: String,
    pub team_id: Option<String>,
    /// The team's name now (None without a team, or if it is gone).
    pub team_name: Option<String>,
    pub data: Value,
    pub attachment: Option<(String, String)>,
    pub attempts: i64,
    pub created_at: i64,
    pub lease_owner: String,
}

/// How a send ended, for [`Store::finish_mail`].
#[derive(Debug, Clone)]
pub enum MailOutcome {
    Sent,
    /// Tried again at this time.
    Retry {
        at: i64,
        error: String,
    },
    /// Given up.
    Failed {
        error: String,
    },
}

/// A mail as the operator's listing shows it (no body, no link).
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxEntry {
    pub id: String,
    pub team_id: Option<String>,
    pub kind: String,
    pub to: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub next_at: i64,
    pub sent_at: Option<i64>,
}

/// The states a mail can be in.
pub const MAIL_STATES: [&str; 4] = ["pending", "sent", "failed", "capped"];

impl Store {
    /// Records a mail (pending, or `capped`), on the caller's transaction;
    /// true when it is new.
    pub async fn enqueue_mail_on(
        conn: &mut AnyConnection,
        mail: &NewMail,
        capped: bool,
    ) -> Result<bool, StoreError> {
        let (name, text) = match &mail.attachment {
            Some((name, text)) => (Some(name.as_str()), Some(text.as_str())),
            None => (None, None),
        };
        let done = sqlx::query(
            "INSERT INTO email_outbox (id, team_id, kind, dedupe, to_addr, data, attachment_name, attachment, \
             state, attempts, next_at, lease_until, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, 0, $10) ON CONFLICT DO NOTHING",
        )
        .bind(crate::keys::new_id("mail"))
        .bind(&mail.team_id)
        .bind(mail.kind)
        .bind(&mail.dedupe)
        .bind(&mail.to)
        .bind(mail.data.to_string())
        .bind(name)
        .bind(text)
        .bind(if capped { "capped" } else { "pending" })
        .bind(mail.at)
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// [`Store::enqueue_mail_on`] in its own transaction (pending).
    pub async fn enqueue_mail(&self, mail: &NewMail) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::enqueue_mail_on(&mut conn, mail, false).await
    }

    /// A member's limit event (`limit.threshold`, `limit.blocked`), mailed
    /// to the member alone (the event's `email`), on the caller's
    /// transaction (the event's).
    pub async fn mail_limit_event_on(
        conn: &mut AnyConnection,
        event: &super::events::NewEvent,
    ) -> Result<(), StoreError> {
        let Some(to) = event.data.get("email").and_then(Value::as_str) else {
            return Ok(());
        };
        Self::enqueue_mail_on(
            conn,
            &NewMail {
                team_id: Some(event.team_id.clone()),
                kind: event.kind,
                dedupe: format!("mail:{}", event.dedupe),
                to: to.to_string(),
                data: event.data.clone(),
                attachment: None,
                at: event.at,
            },
            false,
        )
        .await?;
        Ok(())
    }

    /// Records an invitation's mail unless the team has caused `cap`
    /// invitation mails in the hour before `mail.at`; then it is recorded
    /// as `capped` and not sent. Returns `queued` or `capped`.
    pub async fn enqueue_invitation_mail(
        &self,
        mail: &NewMail,
        cap: u32,
    ) -> Result<&'static str, StoreError> {
        let mut tx = self.pool.begin().await?;
        // SQLite: the write first (see `ledger/writer.rs`); the count then
        // sees it, and a second invitation waits for this one's commit.
        Self::enqueue_mail_on(&mut tx, mail, false).await?;
        let sent: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM email_outbox WHERE team_id = $1 AND kind = 'invitation' \
             AND created_at > $2 AND state <> 'capped'",
        )
        .bind(&mail.team_id)
        .bind(mail.at - 3_600_000)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        let capped = sent > i64::from(cap);
        if capped {
            sqlx::query(
                "UPDATE email_outbox SET state = 'capped', last_error = $1 WHERE dedupe = $2 AND state = 'pending'",
            )
            .bind(format!(
                "not sent: the team caused {cap} invitation mails in the last hour \
                 (email.invitations_per_team_per_hour)"
            ))
            .bind(&mail.dedupe)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(if capped { "capped" } else { "queued" })
    }

    /// Takes up to `limit` due mails for `lease_ms`: pending, due, not
    /// leased.
    pub async fn claim_mails(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DueMail>, StoreError> {
        let owner = self.lease_due("email_outbox", now, lease_ms, limit).await?;
        let rows = sqlx::query(
            "SELECT o.id, o.kind, o.to_addr, o.team_id, t.name AS team_name, o.data, o.attachment_name, \
               o.attachment, o.attempts, o.created_at, o.lease_owner \
             FROM email_outbox o LEFT JOIN teams t ON t.id = o.team_id AND t.deleted_at IS NULL \
             WHERE o.state = 'pending' AND o.lease_owner = $1 ORDER BY o.next_at",
        )
        .bind(&owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(due_from_row).collect()
    }

    /// Records how a send ended (only while this process still holds the
    /// mail's lease). `data`, when given, replaces what the mail was
    /// composed from (an invitation's link is scrubbed once it is done).
    pub async fn finish_mail(
        &self,
        mail: &DueMail,
        outcome: &MailOutcome,
        data: Option<&Value>,
        at: i64,
    ) -> Result<bool, StoreError> {
        let (state, next_at, error) = match outcome {
            MailOutcome::Sent => ("sent", at, None),
            MailOutcome::Retry { at: retry, error } => ("pending", *retry, Some(error.as_str())),
            MailOutcome::Failed { error } => ("failed", at, Some(error.as_str())),
        };
        let done = sqlx::query(
            "UPDATE email_outbox SET state = $1, attempts = attempts + 1, next_at = $2, lease_until = 0, \
             last_error = $3, sent_at = CASE WHEN $1 = 'sent' THEN $4 ELSE sent_at END, \
             data = COALESCE($5, data) \
             WHERE id = $6 AND lease_owner = $7 AND state = 'pending'",
        )
        .bind(state)
        .bind(next_at)
        .bind(error)
        .bind(at)
        .bind(data.map(Value::to_string))
        .bind(&mail.id)
        .bind(&mail.lease_owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The outbox, newest first, optionally of one state.
    pub async fn outbox(
        &self,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        const COLUMNS: &str = "SELECT id, team_id, kind, to_addr, state, attempts, last_error, \
             created_at, next_at, sent_at FROM email_outbox";
        let rows = match state {
            Some(state) => {
                sqlx::query(&format!(
                    "{COLUMNS} WHERE state = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
                ))
                .bind(state)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "{COLUMNS} ORDER BY created_at DESC, id DESC LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(OutboxEntry {
                    id: r.try_get("id")?,
                    team_id: r.try_get("team_id")?,
                    kind: r.try_get("kind")?,
                    to: r.try_get("to_addr")?,
                    state: r.try_get("state")?,
                    attempts: r.try_get("attempts")?,
                    last_error: r.try_get("last_error")?,
                    created_at: r.try_get("created_at")?,
                    next_at: r.try_get("next_at")?,
                    sent_at: r.try_get("sent_at")?,
                })
            })
            .collect()
    }
}

fn due_from_row(row: &AnyRow) -> Result<DueMail, StoreError> {
    let data: String = row.try_get("data")?;
    let name: Option<String> = row.try_get("attachment_name")?;
    let text: Option<String> = row.try_get("attachment")?;
    Ok(DueMail {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        to: row.try_get("to_addr")?,
        team_id: row.try_get("team_id")?,
        team_name: row.try_get("team_name")?,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
        attachment: name.zip(text),
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
        lease_owner: row.try_get("lease_owner")?,
    })
}
