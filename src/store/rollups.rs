//! Daily rollups of the ledger: `usage_daily` (migration 0006) holds, per
//! UTC day, team (`''` for personal usage), member, model and paying
//! account, the sums every report and balance reads. A trigger on
//! `usage_rows` keeps it: on PostgreSQL one statement trigger aggregates
//! the rows a statement inserted (its transition table) and upserts them in
//! key order, so two writers lock the same rollup rows in the same order;
//! on SQLite a row trigger upserts each row. Either way a rollup changes in
//! the transaction of the rows it sums, and only for rows actually
//! inserted (a row skipped as already stored fires nothing), whatever
//! path inserted them: the ledger writer, a replay, a dead-letter retry,
//! `tollgate usage import`.
//!
//! Refusals are not rolled up: they cost nothing (`proxy::record_refusal`
//! zeroes them) and no report counts them.
//!
//! Reports split a range `[from, to)` with [`Span`]: whole UTC days come
//! from the rollups, a partial first or last day from the rows.

use sqlx::{AnyConnection, Executor, Row};

use super::{Store, StoreError};

/// The rollup's key columns and how a ledger row (`{r}` its prefix) gives
/// each.
const KEYS: [(&str, &str); 5] = [
    ("team_id", "COALESCE({r}team_id, '')"),
    ("day", "{r}started_at / 86400000"),
    ("user_id", "{r}user_id"),
    ("model", "{r}model"),
    ("account_id", "{r}account_id"),
];

/// The rollup's sums and what one ledger row adds to each.
const SUMS: [(&str, &str); 17] = [
    ("requests", "1"),
    ("input_tokens", "{r}input_tokens"),
    ("output_tokens", "{r}output_tokens"),
    ("cached_tokens", "{r}cached_tokens"),
    ("reasoning_tokens", "{r}reasoning_tokens"),
    ("cost_nano", "{r}cost_nano"),
    ("cache_write_tokens", "{r}cache_write_tokens"),
    ("cache_write_1h_tokens", "{r}cache_write_1h_tokens"),
    ("audio_input_tokens", "{r}audio_input_tokens"),
    ("audio_output_tokens", "{r}audio_output_tokens"),
    ("web_search_calls", "{r}web_search_calls"),
    ("web_fetch_calls", "{r}web_fetch_calls"),
    ("code_execution_calls", "{r}code_execution_calls"),
    (
        "priority_tier_requests",
        "CASE WHEN {r}service_tier = 'priority' THEN 1 ELSE 0 END",
    ),
    (
        "flex_tier_requests",
        "CASE WHEN {r}service_tier = 'flex' THEN 1 ELSE 0 END",
    ),
    ("long_context_requests", "{r}long_context"),
    (
        "imported_cost_nano",
        "CASE WHEN {r}usage_source = 'imported' THEN {r}cost_nano ELSE 0 END",
    ),
];

/// The settings key that says the rollups hold every stored row.
const BUILT: &str = "usage_daily_built";
/// Likewise for `usage_accounts` (filled from the daily rollups).
const ACCOUNTS_BUILT: &str = "usage_accounts_built";

const ACCOUNTS_UPSERT: &str = "ON CONFLICT (account_id) DO UPDATE SET \
     cost_nano = usage_accounts.cost_nano + excluded.cost_nano";

const DAY_MS: i64 = 86_400_000;

fn with_prefix(expression: &str, prefix: &str) -> String {
    expression.replace("{r}", prefix)
}

/// `team_id, day, …, imported_cost_nano`.
fn column_list() -> String {
    KEYS.iter()
        .chain(SUMS.iter())
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `SELECT <keys>, SUM(<sums>) FROM <from> WHERE not refused GROUP BY
/// <keys> ORDER BY <keys>`: the rollup rows of a set of ledger rows, in
/// key order (byte order on PostgreSQL, as the writer sorts its batches).
fn aggregate(from: &str, postgres: bool) -> String {
    let keys: Vec<String> = KEYS.iter().map(|(_, e)| with_prefix(e, "")).collect();
    let sums: Vec<String> = SUMS
        .iter()
        .map(|(_, e)| format!("SUM({})", with_prefix(e, "")))
        .collect();
    let order: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            // day is a number; the text keys sort as bytes.
            if postgres && i != 1 {
                format!("({key}) COLLATE \"C\"")
            } else {
                key.clone()
            }
        })
        .collect();
    format!(
        "SELECT {}, {} FROM {from} WHERE status <> 'refused' GROUP BY {} ORDER BY {}",
        keys.join(", "),
        sums.join(", "),
        (1..=KEYS.len())
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        order.join(", "),
    )
}

/// `ON CONFLICT (<keys>) DO UPDATE SET <sum> = <table>.<sum> +
/// excluded.<sum>, …`.
fn upsert_into(table: &str, keys: &[&str]) -> String {
    let sets: Vec<String> = SUMS
        .iter()
        .map(|(name, _)| format!("{name} = {table}.{name} + excluded.{name}"))
        .collect();
    format!(
        "ON CONFLICT ({}) DO UPDATE SET {}",
        keys.join(", "),
        sets.join(", ")
    )
}

fn upsert() -> String {
    let keys: Vec<&str> = KEYS.iter().map(|(name, _)| *name).collect();
    upsert_into("usage_daily", &keys)
}

/// The keys of `usage_daily_tags`.
const TAG_KEYS: [&str; 4] = ["team_id", "tag_key", "day", "tag_value"];

fn tag_columns() -> String {
    TAG_KEYS
        .iter()
        .copied()
        .chain(SUMS.iter().map(|(name, _)| *name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The per-tag rollup rows of `from`'s rows (Postgres: one per team, tag
/// key, day and value, in key order).
fn tags_aggregate_pg(from: &str) -> String {
    let sums: Vec<String> = SUMS
        .iter()
        .map(|(_, e)| format!("SUM({})", with_prefix(e, "r.")))
        .collect();
    format!(
        "SELECT COALESCE(r.team_id, ''), t.key, r.started_at / 86400000, t.value, {} \
         FROM {from} r CROSS JOIN LATERAL json_each_text(CAST(r.tags AS json)) t \
         WHERE r.tags IS NOT NULL AND r.status <> 'refused' \
         GROUP BY 1, 2, 3, 4 \
         ORDER BY COALESCE(r.team_id, '') COLLATE \"C\", t.key COLLATE \"C\", 3, t.value COLLATE \"C\"",
        sums.join(", ")
    )
}

/// The rollup sums a report selects from `usage_daily r`, named as the
/// row reports name theirs.
pub(super) fn report_sums() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        SUMS.iter()
            .filter(|(name, _)| *name != "imported_cost_nano")
            .map(|(name, _)| format!("CAST(COALESCE(SUM(r.{name}), 0) AS BIGINT) AS {name}"))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// Creates the trigger (and its function) when missing, and fills the
/// rollups from every stored row once, in one transaction that holds off
/// concurrent inserts; after that the trigger keeps them.
pub(super) async fn ensure(store: &Store) -> Result<(), StoreError> {
    let mut tx = store.pool().begin().await?;
    let conn: &mut AnyConnection = &mut tx;
    let columns = column_list();
    if store.is_postgres() {
        conn.execute("LOCK TABLE usage_rows IN SHARE ROW EXCLUSIVE MODE")
            .await?;
        let function = format!(
            "CREATE OR REPLACE FUNCTION tollgate_usage_rollup() RETURNS trigger \
             LANGUAGE plpgsql AS $body$ BEGIN \
             INSERT INTO usage_daily ({columns}) {} {}; \
             INSERT INTO usage_accounts (account_id, cost_nano) {} {ACCOUNTS_UPSERT}; \
             INSERT INTO usage_daily_tags ({}) {} {}; \
             RETURN NULL; END $body$",
            aggregate("new_rows", true),
            upsert(),
            accounts_aggregate("new_rows", true),
            tag_columns(),
            tags_aggregate_pg("new_rows"),
            upsert_into("usage_daily_tags", &TAG_KEYS),
        );
        conn.execute(function.as_str()).await?;
        let present: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
             WHERE c.relname = 'usage_rows' AND t.tgname = 'usage_rows_rollup'",
        )
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
        if present == 0 {
            conn.execute(
                "CREATE TRIGGER usage_rows_rollup AFTER INSERT ON usage_rows \
                 REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT \
                 EXECUTE FUNCTION tollgate_usage_rollup()",
            )
            .await?;
        }
    } else {
        let values: Vec<String> = KEYS
            .iter()
            .chain(SUMS.iter())
            .map(|(_, e)| with_prefix(e, "NEW."))
            .collect();
        conn.execute("DROP TRIGGER IF EXISTS usage_rows_rollup")
            .await?;
        let trigger = format!(
            "CREATE TRIGGER usage_rows_rollup AFTER INSERT ON usage_rows \
             WHEN NEW.status <> 'refused' BEGIN \
             INSERT INTO usage_daily ({columns}) VALUES ({}) {}; \
             INSERT INTO usage_accounts (account_id, cost_nano) \
             SELECT NEW.account_id, NEW.cost_nano WHERE NEW.usage_source <> 'imported' \
             {ACCOUNTS_UPSERT}; \
             INSERT INTO usage_daily_tags ({}) \
             SELECT COALESCE(NEW.team_id, ''), j.key, NEW.started_at / 86400000, j.value, {} \
             FROM json_each(NEW.tags) j WHERE NEW.tags IS NOT NULL {}; END",
            values.join(", "),
            upsert(),
            tag_columns(),
            SUMS.iter()
                .map(|(_, e)| with_prefix(e, "NEW."))
                .collect::<Vec<_>>()
                .join(", "),
            upsert_into("usage_daily_tags", &TAG_KEYS),
        );
        conn.execute(trigger.as_str()).await?;
    }
    let fill_daily = format!(
        "INSERT INTO usage_daily ({columns}) {}",
        aggregate("usage_rows", store.is_postgres())
    );
    fill_once(conn, BUILT, &["DELETE FROM usage_daily", &fill_daily]).await?;
    fill_once(
        conn,
        ACCOUNTS_BUILT,
        &[
            "DELETE FROM usage_accounts",
            "INSERT INTO usage_accounts (account_id, cost_nano) \
             SELECT account_id, SUM(cost_nano - imported_cost_nano) FROM usage_daily \
             GROUP BY account_id",
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Runs `statements` unless the settings key `marker` says they ran, then
/// sets it (in the caller's transaction).
async fn fill_once(
    conn: &mut AnyConnection,
    marker: &str,
    statements: &[&str],
) -> Result<(), StoreError> {
    let done = sqlx::query("SELECT value FROM settings WHERE key = $1")
        .bind(marker)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    if done {
        return Ok(());
    }
    for statement in statements {
        conn.execute(*statement).await?;
    }
    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, '1')")
        .bind(marker)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The spend of each account among `from`'s rows that counts in a balance,
/// in account order (after the daily rollups, in every writer: one lock
/// order).
fn accounts_aggregate(from: &str, postgres: bool) -> String {
    let order = if postgres {
        "account_id COLLATE \"C\""
    } else {
        "account_id"
    };
    format!(
        "SELECT account_id, SUM(cost_nano) FROM {from} \
         WHERE status <> 'refused' AND usage_source <> 'imported' \
         GROUP BY account_id ORDER BY {order}"
    )
}

/// One part of a report's range: ledger rows in `[from, to)` (ms), or
/// rollups of the UTC days `[first, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Rows(i64, i64),
    Days(i64, i64),
}

/// How a range `[from, to)` is read: whole UTC days from the rollups, a
/// partial first or last day from the rows. `rows_only` reads everything
/// from the rows (the reference the rollups are tested against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub parts: Vec<Part>,
}

impl Span {
    pub fn of(from: i64, to: i64) -> Span {
        if from >= to {
            return Span { parts: Vec::new() };
        }
        let first = ceil_day(from);
        let end = to.div_euclid(DAY_MS);
        if first >= end {
            return Span {
                parts: vec![Part::Rows(from, to)],
            };
        }
        let mut parts = Vec::with_capacity(3);
        if from < first * DAY_MS {
            parts.push(Part::Rows(from, first * DAY_MS));
        }
        parts.push(Part::Days(first, end));
        if end * DAY_MS < to {
            parts.push(Part::Rows(end * DAY_MS, to));
        }
        Span { parts }
    }

    pub fn rows_only(from: i64, to: i64) -> Span {
        Span {
            parts: if from < to {
                vec![Part::Rows(from, to)]
            } else {
                Vec::new()
            },
        }
    }
}

/// The first whole day starting at or after `ms`.
fn ceil_day(ms: i64) -> i64 {
    let day = ms.div_euclid(DAY_MS);
    if ms.rem_euclid(DAY_MS) == 0 {
        day
    } else {
        day + 1
    }
}

impl Store {
    /// The durable balance of an account: credits minus recorded spend
    /// (imported history left out), from `usage_accounts`. Rows still queued
    /// for the ledger are not in it; counters are.
    pub async fn recorded_balance_on(
        conn: &mut AnyConnection,
        account_id: &str,
    ) -> Result<crate::money::Money, StoreError> {
        let row = sqlx::query(
            "SELECT \
               CAST(COALESCE((SELECT SUM(amount_nano) FROM credits WHERE user_id = $1), 0) AS BIGINT) AS credit, \
               CAST(COALESCE((SELECT cost_nano FROM usage_accounts WHERE account_id = $1), 0) AS BIGINT) AS spent",
        )
        .bind(account_id)
        .fetch_one(&mut *conn)
        .await?;
        let credit: i64 = row.try_get("credit")?;
        let spent: i64 = row.try_get("spent")?;
        Ok(crate::money::Money::from_nano(credit.saturating_sub(spent)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_split_at_whole_days() {
        let d = DAY_MS;
        assert_eq!(Span::of(10 * d, 12 * d).parts, vec![Part::Days(10, 12)]);
        assert_eq!(
            Span::of(10 * d + 5, 12 * d + 7).parts,
            vec![
                Part::Rows(10 * d + 5, 11 * d),
                Part::Days(11, 12),
                Part::Rows(12 * d, 12 * d + 7)
            ]
        );
        assert_eq!(
            Span::of(10 * d + 5, 11 * d + 7).parts,
            vec![Part::Rows(10 * d + 5, 11 * d + 7)]
        );
        assert_eq!(
            Span::of(10 * d + 5, 11 * d).parts,
            vec![Part::Rows(10 * d + 5, 11 * d)]
        );
        assert_eq!(Span::of(5, 5).parts, vec![]);
        assert_eq!(
            Span::of(i64::MIN, i64::MAX).parts.len(),
            3,
            "extreme bounds do not overflow"
        );
    }
}
