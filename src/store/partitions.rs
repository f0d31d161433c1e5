//! A ledger kept for years. On PostgreSQL `usage_rows` is partitioned by
//! month of `started_at` (tables `usage_rows_YYYY_MM`, UTC), with a default
//! partition that takes any row whose month has no table yet, so an insert
//! never fails for want of one. [`maintain`] creates the current and the
//! next two months ahead (moving any of their rows out of the default
//! partition first) and, with `ledger.retention_months` set, drops whole
//! months older than that; SQLite deletes those rows instead. The daily
//! rollups are kept, so balances and day-level reports over dropped months
//! stay as they were.
//!
//! A database created before partitioning is converted on start
//! ([`ensure_partitioned`]): the rows are copied into the partitioned
//! table in one transaction.

use std::collections::BTreeSet;

use sqlx::{AnyConnection, Executor, Row};
use time::{Date, Month, OffsetDateTime};

use super::{Store, StoreError};

/// The advisory lock every partition change takes (any fixed number).
const PARTITION_LOCK: i64 = 0x7467_7061_7274;

/// Months are numbered `year * 12 + month - 1`.
pub fn month_of(ms: i64) -> i64 {
    let at = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    i64::from(at.year()) * 12 + i64::from(u8::from(at.month())) - 1
}

/// The first millisecond of a month.
pub fn month_start_ms(month: i64) -> i64 {
    let year = i32::try_from(month.div_euclid(12)).unwrap_or(1970);
    let number = u8::try_from(month.rem_euclid(12) + 1).unwrap_or(1);
    let date = Month::try_from(number)
        .ok()
        .and_then(|m| Date::from_calendar_date(year, m, 1).ok())
        .unwrap_or(Date::MIN);
    date.midnight().assume_utc().unix_timestamp() * 1000
}

fn table_name(month: i64) -> String {
    format!(
        "usage_rows_{:04}_{:02}",
        month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}

/// The month a partition's name gives, if it is a month partition.
fn month_of_name(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("usage_rows_")?;
    let (year, month) = rest.split_once('_')?;
    if year.len() != 4 || month.len() != 2 {
        return None;
    }
    let (year, month): (i64, i64) = (year.parse().ok()?, month.parse().ok()?);
    (1..=12).contains(&month).then_some(year * 12 + month - 1)
}

async fn relkind(conn: &mut AnyConnection, table: &str) -> Result<Option<String>, StoreError> {
    let row = sqlx::query(
        "SELECT CAST(c.relkind AS TEXT) AS kind FROM pg_class c WHERE c.oid = to_regclass($1)",
    )
    .bind(table)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| r.try_get("kind")).transpose()?)
}

/// Converts a plain `usage_rows` into the partitioned table, copying its
/// rows (once; a partitioned table is left alone).
pub(super) async fn ensure_partitioned(store: &Store) -> Result<(), StoreError> {
    let mut tx = store.pool().begin().await?;
    let conn: &mut AnyConnection = &mut tx;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PARTITION_LOCK)
        .execute(&mut *conn)
        .await?;
    if relkind(conn, "usage_rows").await?.as_deref() != Some("r") {
        tx.rollback().await?;
        return Ok(());
    }
    for statement in [
        "LOCK TABLE usage_rows IN ACCESS EXCLUSIVE MODE",
        "ALTER TABLE usage_rows RENAME TO usage_rows_unpartitioned",
        "ALTER TABLE usage_rows_unpartitioned DROP CONSTRAINT IF EXISTS usage_rows_pkey",
        "DROP INDEX IF EXISTS usage_rows_account",
        "DROP INDEX IF EXISTS usage_rows_user",
        "DROP INDEX IF EXISTS usage_rows_team",
        "DROP TRIGGER IF EXISTS usage_rows_rollup ON usage_rows_unpartitioned",
        "CREATE TABLE usage_rows (LIKE usage_rows_unpartitioned INCLUDING DEFAULTS) \
         PARTITION BY RANGE (started_at)",
        // A request id is stored once: the partition key must be part of
        // a unique key, and a request's row always has the same start.
        "ALTER TABLE usage_rows ADD PRIMARY KEY (request_id, started_at)",
        "CREATE INDEX usage_rows_account ON usage_rows (account_id, started_at)",
        "CREATE INDEX usage_rows_user ON usage_rows (user_id, started_at)",
        "CREATE INDEX usage_rows_team ON usage_rows (team_id, started_at)",
        "CREATE TABLE usage_rows_default PARTITION OF usage_rows DEFAULT",
    ] {
        conn.execute(statement).await?;
    }
    let mut months: BTreeSet<i64> = BTreeSet::new();
    for row in sqlx::query(
        "SELECT DISTINCT CAST(EXTRACT(YEAR FROM (to_timestamp(started_at / 1000.0) AT TIME ZONE 'UTC')) * 12 \
           + EXTRACT(MONTH FROM (to_timestamp(started_at / 1000.0) AT TIME ZONE 'UTC')) - 1 AS BIGINT) AS m \
         FROM usage_rows_unpartitioned",
    )
    .fetch_all(&mut *conn)
    .await?
    {
        months.insert(row.try_get("m")?);
    }
    let now = month_of(crate::clock::now_ms());
    months.extend(now..=now + 2);
    for month in months {
        let sql = format!(
            "CREATE TABLE {} PARTITION OF usage_rows FOR VALUES FROM ({}) TO ({})",
            table_name(month),
            month_start_ms(month),
            month_start_ms(month + 1)
        );
        conn.execute(sql.as_str()).await?;
    }
    let copied = conn
        .execute("INSERT INTO usage_rows SELECT * FROM usage_rows_unpartitioned")
        .await?
        .rows_affected();
    conn.execute("DROP TABLE usage_rows_unpartitioned").await?;
    tx.commit().await?;
    tracing::info!(
        rows = copied,
        "The ledger table is now partitioned by month."
    );
    Ok(())
}

/// Creates the partitions of `months` that are missing: each is built
/// apart, takes its month's rows out of the default partition, and is then
/// attached (rows are moved, never lost or counted twice: the rollup
/// trigger fires on inserts into `usage_rows`, not into a partition).
pub async fn ensure_months(store: &Store, months: &BTreeSet<i64>) -> Result<(), StoreError> {
    if !store.is_postgres() {
        return Ok(());
    }
    for &month in months {
        let name = table_name(month);
        let mut conn = store.pool().acquire().await?;
        if relkind(&mut conn, &name).await?.is_some() {
            continue;
        }
        drop(conn);
        let mut tx = store.pool().begin().await?;
        let conn: &mut AnyConnection = &mut tx;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK)
            .execute(&mut *conn)
            .await?;
        if relkind(conn, &name).await?.is_some() {
            tx.rollback().await?;
            continue;
        }
        let (from, to) = (month_start_ms(month), month_start_ms(month + 1));
        conn.execute("SET LOCAL lock_timeout = '10s'").await?;
        for statement in [
            format!("CREATE TABLE {name} (LIKE usage_rows INCLUDING DEFAULTS)"),
            // One statement moves the month's rows: what it deletes is what
            // it copies. A row committed after it stays in the default
            // partition, and the attach below then fails (this month is
            // tried again within the hour), so nothing is lost.
            format!(
                "WITH moved AS (DELETE FROM usage_rows_default \
                 WHERE started_at >= {from} AND started_at < {to} RETURNING *) \
                 INSERT INTO {name} SELECT * FROM moved"
            ),
            format!(
                "ALTER TABLE usage_rows ATTACH PARTITION {name} FOR VALUES FROM ({from}) TO ({to})"
            ),
        ] {
            conn.execute(statement.as_str()).await?;
        }
        tx.commit().await?;
        tracing::info!(partition = %name, "Ledger partition created.");
    }
    Ok(())
}

/// Creates the partitions of this month and the next two, and drops rows
/// of months older than `retention_months` (0 keeps everything). Returns
/// how many months were dropped (PostgreSQL) or rows deleted (SQLite).
pub async fn maintain(
    store: &Store,
    retention_months: u32,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let now = month_of(now_ms);
    ensure_months(store, &(now..=now + 2).collect()).await?;
    if retention_months == 0 {
        return Ok(0);
    }
    // Kept: this month and the `retention_months` before it.
    let first_kept = now - i64::from(retention_months);
    let cutoff = month_start_ms(first_kept);
    if !store.is_postgres() {
        let mut deleted = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM usage_rows WHERE rowid IN \
                 (SELECT rowid FROM usage_rows WHERE started_at < $1 LIMIT 10000)",
            )
            .bind(cutoff)
            .execute(store.pool())
            .await?
            .rows_affected();
            deleted += done;
            if done == 0 {
                return Ok(deleted);
            }
        }
    }
    let partitions: Vec<String> = sqlx::query(
        "SELECT CAST(c.relname AS TEXT) AS name FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass('usage_rows')",
    )
    .fetch_all(store.pool())
    .await?
    .iter()
    .map(|r| r.try_get("name"))
    .collect::<Result<_, _>>()?;
    let mut dropped = 0;
    for name in partitions {
        if month_of_name(&name).is_none_or(|m| m >= first_kept) {
            continue;
        }
        let mut tx = store.pool().begin().await?;
        let conn: &mut AnyConnection = &mut tx;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK)
            .execute(&mut *conn)
            .await?;
        if relkind(conn, &name).await?.is_none() {
            tx.rollback().await?;
            continue;
        }
        conn.execute("SET LOCAL lock_timeout = '10s'").await?;
        conn.execute(format!("ALTER TABLE usage_rows DETACH PARTITION {name}").as_str())
            .await?;
        conn.execute(format!("DROP TABLE {name}").as_str()).await?;
        tx.commit().await?;
        tracing::info!(partition = %name, "Ledger month dropped (ledger.retention_months).");
        dropped += 1;
    }
    sqlx::query("DELETE FROM usage_rows_default WHERE started_at < $1")
        .bind(cutoff)
        .execute(store.pool())
        .await?;
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_names() {
        // 2026-12-02T00:00:00Z; the month began a day before.
        let at = 1_796_169_600_000;
        let month = month_of(at);
        assert_eq!(table_name(month), "usage_rows_2026_12");
        assert_eq!(month_of_name("usage_rows_2026_12"), Some(month));
        assert_eq!(month_of_name("usage_rows_default"), None);
        assert_eq!(month_start_ms(month), at - 86_400_000);
        assert_eq!(table_name(month + 1), "usage_rows_2027_01");
        assert_eq!(
            month_start_ms(month + 1) - month_start_ms(month),
            31 * 86_400_000
        );
        assert_eq!(month_of(month_start_ms(month + 1) - 1), month);
    }
}
