//! Counter corrections: what a write to the database owes the live
//! counters, kept in the `counter_corrections` table so that it cannot
//! vanish when Redis fails part-way or a process dies.
//!
//! A writer (the ledger's, or a credit) records the correction in the same
//! transaction as the data it corrects, applies it once the transaction
//! commits, and deletes the record; a record left by a Redis failure or a
//! crash is applied by any process's ledger writer later
//! ([`apply_pending`]). Each correction is idempotent: it applies only while
//! the counter keeps the stamp it was computed under, an addition at most
//! once per id (a mark in Redis), a rebuild by dropping the counter so it
//! is seeded from the ledger again.

use sqlx::{AnyConnection, Row};

use crate::counters::{Correction, CounterError, CounterKey, Counters, Fix, Stamp};
use crate::store::{Store, StoreError};

/// Applies corrections; deletes the records of those done. One that
/// cannot be applied now (Redis away) stays recorded for a later pass.
/// Returns how many are done.
pub async fn apply(
    store: &Store,
    counters: &Counters,
    corrections: &[Correction],
) -> Result<usize, StoreError> {
    let mut done = Vec::with_capacity(corrections.len());
    for correction in corrections {
        match counters.correct(correction).await {
            Ok(_) => done.push(correction.id.as_str()),
            Err(error) => {
                log_deferred(correction, &error);
                break;
            }
        }
    }
    store.delete_corrections(&done).await?;
    Ok(done.len())
}

fn log_deferred(correction: &Correction, error: &CounterError) {
    tracing::warn!(counter = %crate::domain::clean_label(&correction.key.name(), 80), %error, "Counter correction deferred; it is kept in the database and applied when the counters answer.");
}

/// Corrections recorded at least `older_than_ms` ago are applied: those a
/// Redis failure or a crash left behind (any process's). Returns how many.
pub async fn apply_pending(
    store: &Store,
    counters: &Counters,
    now_ms: i64,
    older_than_ms: i64,
) -> Result<usize, StoreError> {
    let pending = store
        .pending_corrections(now_ms.saturating_sub(older_than_ms), 500)
        .await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let done = apply(store, counters, &pending).await?;
    if done > 0 {
        tracing::info!(done, "Counter corrections applied.");
    }
    Ok(done)
}

/// Records corrections on a connection (inside the transaction of what
/// they correct); one already recorded is kept.
pub async fn insert_on(
    conn: &mut AnyConnection,
    corrections: &[Correction],
    at: i64,
) -> Result<(), StoreError> {
    for correction in corrections {
        let (delta, rebuild) = match correction.fix {
            Fix::Add(delta) => (delta, 0_i64),
            Fix::Rebuild => (0, 1),
        };
        sqlx::query(
                "INSERT INTO counter_corrections (id, counter, stamp, delta_nano, rebuild, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&correction.id)
            .bind(correction.key.name())
            .bind(correction.stamp.as_str())
            .bind(delta)
            .bind(rebuild)
            .bind(at)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Recorded corrections not yet applied, oldest first.
    pub async fn pending_corrections(
        &self,
        recorded_before: i64,
        limit: i64,
    ) -> Result<Vec<Correction>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, counter, stamp, delta_nano, rebuild FROM counter_corrections \
             WHERE created_at <= $1 ORDER BY created_at, id LIMIT $2",
        )
        .bind(recorded_before)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut corrections = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            let counter: String = row.try_get("counter")?;
            let Some(key) = CounterKey::parse(&counter) else {
                tracing::error!(%id, "Counter correction names no counter; left in place.");
                continue;
            };
            let rebuild: i64 = row.try_get("rebuild")?;
            corrections.push(Correction {
                id,
                key,
                stamp: Stamp::from(row.try_get::<String, _>("stamp")?),
                fix: if rebuild != 0 {
                    Fix::Rebuild
                } else {
                    Fix::Add(row.try_get("delta_nano")?)
                },
            });
        }
        Ok(corrections)
    }

    /// How many corrections wait to be applied.
    pub async fn correction_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM counter_corrections")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    pub async fn delete_corrections(&self, ids: &[&str]) -> Result<(), StoreError> {
        for chunk in ids.chunks(100) {
            let mut sql = String::from("DELETE FROM counter_corrections WHERE id IN (");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("${}", i + 1));
            }
            sql.push(')');
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(self.pool()).await?;
        }
        Ok(())
    }
}
