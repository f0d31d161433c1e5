//! Alerts judged where the numbers change (contract §6): a member's month
//! spend crossing 50, 80 and 100% of their effective limit, the first hard
//! refusal of a month, an owner's balance falling below a team's
//! low-balance threshold, and members joining and leaving. Each is written
//! in the transaction of the fact that caused it, exactly once: limit
//! crossings and refusals by their `limit_events` key, a low balance by the
//! team's armed flag, with the event (`events.rs`) beside it.
//!
//! Thresholds are judged on settled spend, by the ledger writer, in the
//! transaction that stores the rows: before inserting, it locks the
//! members the rows are for (Postgres: `FOR UPDATE`, in key order, before
//! any rollup row), so two writers judging the same member take turns and
//! the later one sees the earlier one's rows. The judgement is a level
//! (spend ≥ threshold and not yet recorded), so a limit lowered mid-month
//! fires at the next settlement.

use std::collections::BTreeSet;

use serde_json::json;
use sqlx::{AnyConnection, Row};

use super::Entry;
use crate::money::Money;
use crate::store::events::NewEvent;
use crate::store::{Store, StoreError};

/// A member the rows are for, with what their alerts need.
#[derive(Debug, Clone)]
pub struct Judged {
    team_id: String,
    user_id: String,
    email: String,
    limit: Option<Money>,
}

const THRESHOLDS: [i64; 3] = [50, 80, 100];

/// Rows that move a spend or a balance: billed, not imported.
fn counts(row: &Entry) -> bool {
    row.status != crate::domain::Status::Refused
        && row.usage_source != crate::domain::Source::Imported
        && row.cost_nano > 0
}

/// Before the rows are inserted: locks the members they are for (on
/// Postgres) and reads their effective limits. A member removed since
/// their request is judged all the same: the spend was theirs.
pub async fn before_on(
    conn: &mut AnyConnection,
    rows: &[Entry],
) -> Result<Vec<Judged>, StoreError> {
    let pairs: BTreeSet<(&str, &str)> = rows
        .iter()
        .filter(|r| counts(r))
        .filter_map(|r| r.team_id.as_deref().map(|t| (t, r.user_id.as_str())))
        .collect();
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let postgres = conn.backend_name() == "PostgreSQL";
    // One query for the batch's members, locked in key order (every writer
    // runs the same query, so they take these locks in one order).
    let wanted: Vec<String> = (0..pairs.len())
        .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
        .collect();
    let sql = format!(
        "SELECT m.team_id, m.user_id, u.email, m.monthly_limit_nano, t.default_monthly_limit_nano \
         FROM team_members m JOIN teams t ON t.id = m.team_id JOIN users u ON u.id = m.user_id \
         WHERE (m.team_id, m.user_id) IN ({}) ORDER BY m.team_id, m.user_id{}",
        wanted.join(", "),
        if postgres { " FOR UPDATE OF m" } else { "" }
    );
    let query = pairs.iter().fold(sqlx::query(&sql), |q, (team, user)| {
        q.bind(*team).bind(*user)
    });
    let mut judged = Vec::with_capacity(pairs.len());
    for row in query.fetch_all(&mut *conn).await? {
        let own: Option<i64> = row.try_get("monthly_limit_nano")?;
        let default: Option<i64> = row.try_get("default_monthly_limit_nano")?;
        judged.push(Judged {
            team_id: row.try_get("team_id")?,
            user_id: row.try_get("user_id")?,
            email: row.try_get("email")?,
            limit: own.or(default).map(Money::from_nano),
        });
    }
    Ok(judged)
}

/// After the rows are inserted (same transaction): records the limit
/// thresholds reached and the low balances, with their events.
pub async fn after_on(
    conn: &mut AnyConnection,
    judged: &[Judged],
    rows: &[Entry],
    now: i64,
    mail: bool,
) -> Result<(), StoreError> {
    for member in judged {
        let Some(limit) = member.limit.filter(|l| l.nano() > 0) else {
            continue;
        };
        let periods: std::collections::BTreeMap<String, crate::clock::Period> = rows
            .iter()
            .filter(|r| {
                r.team_id.as_deref() == Some(member.team_id.as_str())
                    && r.user_id == member.user_id
                    && counts(r)
            })
            .map(|r| {
                let period = crate::clock::period_of(r.started_at);
                (period.key.clone(), period)
            })
            .collect();
        for period in periods.into_values() {
            let spent = Store::member_spend_on(
                conn,
                &member.team_id,
                &member.user_id,
                period.start_ms,
                period.end_ms,
            )
            .await?;
            for percent in THRESHOLDS {
                if i128::from(spent.nano()) * 100 < i128::from(limit.nano()) * i128::from(percent) {
                    continue;
                }
                let kind = match percent {
                    50 => "threshold_50",
                    80 => "threshold_80",
                    _ => "threshold_100",
                };
                let fresh = Store::insert_limit_event_on(
                    conn,
                    &member.team_id,
                    &member.user_id,
                    &period.key,
                    kind,
                    limit,
                    spent,
                    now,
                )
                .await?;
                if fresh {
                    let event = NewEvent {
                        team_id: member.team_id.clone(),
                        kind: "limit.threshold",
                        dedupe: format!(
                            "limit.threshold:{}:{}:{}:{percent}",
                            member.team_id, member.user_id, period.key
                        ),
                        data: json!({
                            "user_id": member.user_id,
                            "email": member.email,
                            "threshold_percent": percent,
                            "spent_usd": spent.to_string(),
                            "limit_usd": limit.to_string(),
                            "month": period.key,
                        }),
                        at: now,
                        webhook_id: None,
                    };
                    Store::record_event_on(conn, &event).await?;
                    if mail {
                        Store::mail_limit_event_on(conn, &event).await?;
                    }
                }
            }
        }
    }
    let accounts: BTreeSet<&str> = rows
        .iter()
        .filter(|r| counts(r))
        .map(|r| r.account_id.as_str())
        .collect();
    for account in accounts {
        let teams = sqlx::query(
            "SELECT id, low_balance_nano FROM teams WHERE owner_id = $1 AND deleted_at IS NULL \
                 AND low_balance_nano IS NOT NULL AND low_balance_fired_at IS NULL ORDER BY id",
        )
        .bind(account)
        .fetch_all(&mut *conn)
        .await?;
        if teams.is_empty() {
            continue;
        }
        let balance = Store::recorded_balance_on(conn, account).await?;
        for team in teams {
            let team_id: String = team.try_get("id")?;
            let low = Money::from_nano(team.try_get("low_balance_nano")?);
            if balance >= low {
                continue;
            }
            // The balance is judged again by the update itself: a credit
            // committed since it was read (whose re-arm found nothing to
            // re-arm) stops a spurious alert that would leave the next
            // real crossing untold.
            let fired = sqlx::query(
                    "UPDATE teams SET low_balance_fired_at = $1 WHERE id = $2 AND low_balance_fired_at IS NULL \
                     AND COALESCE((SELECT SUM(amount_nano) FROM credits WHERE user_id = $3), 0) \
                       - COALESCE((SELECT cost_nano FROM usage_accounts WHERE account_id = $3), 0) \
                       < low_balance_nano",
                )
                .bind(now)
                .bind(&team_id)
                .bind(account)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if fired == 1 {
                Store::record_event_on(
                    conn,
                    &NewEvent {
                        team_id: team_id.clone(),
                        kind: "balance.low",
                        dedupe: format!("balance.low:{team_id}:{now}:{}", crate::keys::new_id("x")),
                        data: json!({
                            "balance_usd": balance.to_string(),
                            "low_balance_usd": low.to_string(),
                        }),
                        at: now,
                        webhook_id: None,
                    },
                )
                .await?;
            }
        }
    }
    Ok(())
}
