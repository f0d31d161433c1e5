//! The ledger's table, `usage_rows`: its SQL lives here, beside the
//! [`Entry`] it stores, as methods of the [`Store`] (one database handle,
//! one pool). Reports over the table are in `store/`.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::Entry;
use crate::domain::{RequestId, ServiceTier, Source, Status};
use crate::store::{Store, StoreError};

const USAGE_COLUMNS: &str =
    "request_id, user_id, key_id, account_id, team_id, model, provider, endpoint, streamed, \
     input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nano, \
     usage_source, status, error_code, http_status, latency_ms, started_at, finished_at, \
     cache_write_1h_tokens, audio_input_tokens, audio_output_tokens, web_search_calls, \
     web_fetch_calls, code_execution_calls, service_tier, long_context, tags";
const USAGE_COLUMN_COUNT: usize = 31;
/// Rows per multi-row insert on SQLite (31 parameters each): it prepares
/// long statements slowly, so it gets short ones.
const SQLITE_ROWS_PER_STATEMENT: usize = 128;

/// `INSERT … VALUES (…),(…) ON CONFLICT DO NOTHING` for `n` rows, with
/// anonymous `?` parameters (SQLite: numbered ones cost it a name lookup
/// per parameter on every bind).
fn insert_usage_sql(n: usize) -> String {
    let mut sql = String::with_capacity(64 + n * USAGE_COLUMN_COUNT * 5);
    sql.push_str("INSERT INTO usage_rows (");
    sql.push_str(USAGE_COLUMNS);
    sql.push_str(") VALUES ");
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..USAGE_COLUMN_COUNT {
            if c > 0 {
                sql.push(',');
            }
            sql.push('?');
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT DO NOTHING RETURNING request_id");
    sql
}

/// The rollup key of a row (`store/rollups.rs`): SQLite's batches are
/// inserted in this order.
fn sort_key(row: &Entry) -> (&str, i64, &str, &str, &str) {
    (
        row.team_id.as_deref().unwrap_or(""),
        row.started_at / 86_400_000,
        &row.user_id,
        &row.model,
        &row.account_id,
    )
}

impl Store {
    /// Inserts rows in one transaction; a row whose request id is already
    /// stored is skipped, so a retried batch never counts twice. Returns the
    /// rows newly stored.
    ///
    /// Rows go in multi-row statements (fewer round trips to the database
    /// or to SQLite's worker thread), short enough to prepare quickly.
    pub async fn insert_usage_rows(&self, rows: &[Entry]) -> Result<u64, StoreError> {
        let mut tx = self.pool().begin().await?;
        let inserted = Self::insert_usage_rows_on(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(inserted.len() as u64)
    }

    /// Inserts rows on a connection (inside a counter lock); returns the
    /// request ids newly stored.
    pub async fn insert_usage_rows_on(
        conn: &mut AnyConnection,
        rows: &[Entry],
    ) -> Result<Vec<String>, StoreError> {
        let mut inserted = Vec::with_capacity(rows.len());
        if rows.is_empty() {
            return Ok(inserted);
        }
        let postgres = conn.backend_name() == "PostgreSQL";
        if postgres {
            return Self::insert_usage_rows_pg(conn, rows).await;
        }
        // SQLite takes one writer at a time; the rows go in rollup key
        // order all the same.
        let mut rows: Vec<&Entry> = rows.iter().collect();
        rows.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        for chunk in rows.chunks(SQLITE_ROWS_PER_STATEMENT) {
            let sql = insert_usage_sql(chunk.len());
            let mut query = sqlx::query(&sql);
            for row in chunk {
                query = query
                    .bind(row.request_id.as_str())
                    .bind(&row.user_id)
                    .bind(&row.key_id)
                    .bind(&row.account_id)
                    .bind(&row.team_id)
                    .bind(&row.model)
                    .bind(&row.provider)
                    .bind(&row.endpoint)
                    .bind(i64::from(row.streamed))
                    .bind(row.input_tokens)
                    .bind(row.cached_tokens)
                    .bind(row.cache_write_tokens)
                    .bind(row.output_tokens)
                    .bind(row.reasoning_tokens)
                    .bind(row.cost_nano)
                    .bind(row.usage_source.as_str())
                    .bind(row.status.as_str())
                    .bind(&row.error_code)
                    .bind(row.http_status)
                    .bind(row.latency_ms)
                    .bind(row.started_at)
                    .bind(row.finished_at)
                    .bind(row.cache_write_1h_tokens)
                    .bind(row.audio_input_tokens)
                    .bind(row.audio_output_tokens)
                    .bind(row.web_search_calls)
                    .bind(row.web_fetch_calls)
                    .bind(row.code_execution_calls)
                    .bind(row.service_tier.map(|t| t.as_str()))
                    .bind(i64::from(row.long_context))
                    .bind(row.tags.as_deref());
            }
            for stored in query.fetch_all(&mut *conn).await? {
                inserted.push(stored.try_get("request_id")?);
            }
        }
        Ok(inserted)
    }

    /// Inserts rows on Postgres in one statement, however many: the rows go
    /// as one JSON parameter (`json_populate_recordset`), so the rollup
    /// trigger fires once and takes its rollup rows, then its account rows,
    /// each in key order: every writer takes its locks in one order, and
    /// two gateways' batches never deadlock.
    async fn insert_usage_rows_pg(
        conn: &mut AnyConnection,
        rows: &[Entry],
    ) -> Result<Vec<String>, StoreError> {
        let records: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "request_id": r.request_id.as_str(),
                    "user_id": r.user_id,
                    "key_id": r.key_id,
                    "account_id": r.account_id,
                    "team_id": r.team_id,
                    "model": r.model,
                    "provider": r.provider,
                    "endpoint": r.endpoint,
                    "streamed": i64::from(r.streamed),
                    "input_tokens": r.input_tokens,
                    "cached_tokens": r.cached_tokens,
                    "cache_write_tokens": r.cache_write_tokens,
                    "output_tokens": r.output_tokens,
                    "reasoning_tokens": r.reasoning_tokens,
                    "cost_nano": r.cost_nano,
                    "usage_source": r.usage_source.as_str(),
                    "status": r.status.as_str(),
                    "error_code": r.error_code,
                    "http_status": r.http_status,
                    "latency_ms": r.latency_ms,
                    "started_at": r.started_at,
                    "finished_at": r.finished_at,
                    "cache_write_1h_tokens": r.cache_write_1h_tokens,
                    "audio_input_tokens": r.audio_input_tokens,
                    "audio_output_tokens": r.audio_output_tokens,
                    "web_search_calls": r.web_search_calls,
                    "web_fetch_calls": r.web_fetch_calls,
                    "code_execution_calls": r.code_execution_calls,
                    "service_tier": r.service_tier.map(|t| t.as_str()),
                    "long_context": i64::from(r.long_context),
                    "tags": r.tags,
                })
            })
            .collect();
        let payload = serde_json::Value::Array(records).to_string();
        let sql = format!(
            "INSERT INTO usage_rows ({USAGE_COLUMNS}) \
             SELECT {USAGE_COLUMNS} FROM json_populate_recordset(NULL::usage_rows, CAST($1 AS json)) \
             ON CONFLICT DO NOTHING RETURNING request_id"
        );
        let stored = sqlx::query(&sql)
            .bind(payload)
            .fetch_all(&mut *conn)
            .await?;
        stored
            .iter()
            .map(|r| Ok(r.try_get("request_id")?))
            .collect()
    }

    /// Inserts rows on a Postgres connection with one `UNNEST` statement
    /// per call (31 array parameters however many rows: far cheaper to
    /// parse and bind than 30 per row); a row already stored is skipped.
    /// Returns how many were newly stored. For bulk loads (usage import).
    pub async fn insert_usage_rows_unnest(
        conn: &mut sqlx::PgConnection,
        rows: &[Entry],
    ) -> Result<u64, StoreError> {
        Self::insert_usage_rows_unnest_into(conn, "usage_rows", rows).await
    }

    /// [`Store::insert_usage_rows_unnest`] into `table` (`usage_rows`, or
    /// a staging table of the same columns).
    pub async fn insert_usage_rows_unnest_into(
        conn: &mut sqlx::PgConnection,
        table: &'static str,
        rows: &[Entry],
    ) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let text = |f: &dyn Fn(&Entry) -> String| rows.iter().map(f).collect::<Vec<String>>();
        let opt = |f: &dyn Fn(&Entry) -> Option<String>| {
            rows.iter().map(f).collect::<Vec<Option<String>>>()
        };
        let int = |f: &dyn Fn(&Entry) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
        let sql = format!(
            "INSERT INTO {table} ({USAGE_COLUMNS}) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
               $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[], \
               $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::text[], $17::text[], \
               $18::text[], $19::bigint[], $20::bigint[], $21::bigint[], $22::bigint[], \
               $23::bigint[], $24::bigint[], $25::bigint[], $26::bigint[], $27::bigint[], \
               $28::bigint[], $29::text[], $30::bigint[], $31::text[]) \
             ON CONFLICT DO NOTHING"
        );
        let done = sqlx::query(&sql)
            .bind(text(&|r| r.request_id.as_str().to_string()))
            .bind(text(&|r| r.user_id.clone()))
            .bind(text(&|r| r.key_id.clone()))
            .bind(text(&|r| r.account_id.clone()))
            .bind(opt(&|r| r.team_id.clone()))
            .bind(text(&|r| r.model.clone()))
            .bind(text(&|r| r.provider.clone()))
            .bind(text(&|r| r.endpoint.clone()))
            .bind(int(&|r| i64::from(r.streamed)))
            .bind(int(&|r| r.input_tokens))
            .bind(int(&|r| r.cached_tokens))
            .bind(int(&|r| r.cache_write_tokens))
            .bind(int(&|r| r.output_tokens))
            .bind(int(&|r| r.reasoning_tokens))
            .bind(int(&|r| r.cost_nano))
            .bind(text(&|r| r.usage_source.as_str().to_string()))
            .bind(text(&|r| r.status.as_str().to_string()))
            .bind(opt(&|r| r.error_code.clone()))
            .bind(int(&|r| r.http_status))
            .bind(int(&|r| r.latency_ms))
            .bind(int(&|r| r.started_at))
            .bind(int(&|r| r.finished_at))
            .bind(int(&|r| r.cache_write_1h_tokens))
            .bind(int(&|r| r.audio_input_tokens))
            .bind(int(&|r| r.audio_output_tokens))
            .bind(int(&|r| r.web_search_calls))
            .bind(int(&|r| r.web_fetch_calls))
            .bind(int(&|r| r.code_execution_calls))
            .bind(opt(&|r| r.service_tier.map(|t| t.as_str().to_string())))
            .bind(int(&|r| i64::from(r.long_context)))
            .bind(opt(&|r| r.tags.clone()))
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn usage_row(&self, request_id: &str) -> Result<Option<Entry>, StoreError> {
        let sql = format!("SELECT {USAGE_COLUMNS} FROM usage_rows WHERE request_id = $1");
        let row = sqlx::query(&sql)
            .bind(request_id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| entry_from_row(&r)).transpose()
    }

    pub async fn usage_rows_of_account(&self, account_id: &str) -> Result<Vec<Entry>, StoreError> {
        let sql = format!(
            "SELECT {USAGE_COLUMNS} FROM usage_rows WHERE account_id = $1 ORDER BY started_at, request_id"
        );
        let rows = sqlx::query(&sql)
            .bind(account_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(entry_from_row).collect()
    }
}

/// A ledger row the database rejected, set aside with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub request_id: String,
    pub row: Entry,
    pub reason: String,
    pub set_aside_at: i64,
}

impl Store {
    /// Sets a rejected row aside (its JSON escapes every control byte, so
    /// the text itself is storable).
    pub async fn insert_dead_letter(
        &self,
        row: &Entry,
        reason: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(row)
            .map_err(|error| StoreError::Database(sqlx::Error::Decode(Box::new(error))))?;
        let reason: String = reason
            .chars()
            .filter(|c| !c.is_control())
            .take(500)
            .collect();
        sqlx::query(
            "INSERT INTO usage_dead_letters (request_id, row_json, reason, set_aside_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(crate::domain::clean_label(row.request_id.as_str(), 200))
        .bind(json)
        .bind(reason)
        .bind(at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every row set aside, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT request_id, row_json, reason, set_aside_at FROM usage_dead_letters \
             ORDER BY set_aside_at, request_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let json: String = r.try_get("row_json")?;
                let row: Entry = serde_json::from_str(&json)
                    .map_err(|error| StoreError::Database(sqlx::Error::Decode(Box::new(error))))?;
                Ok(DeadLetter {
                    request_id: r.try_get("request_id")?,
                    row,
                    reason: r.try_get("reason")?,
                    set_aside_at: r.try_get("set_aside_at")?,
                })
            })
            .collect()
    }

    /// Forgets a set-aside row (after its retry stored it).
    pub async fn delete_dead_letter(&self, request_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM usage_dead_letters WHERE request_id = $1")
            .bind(request_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Rows set aside.
    pub async fn dead_letter_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM usage_dead_letters")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }
}

fn entry_from_row(row: &AnyRow) -> Result<Entry, StoreError> {
    Ok(Entry {
        request_id: RequestId::from(row.try_get::<String, _>("request_id")?),
        user_id: row.try_get("user_id")?,
        key_id: row.try_get("key_id")?,
        account_id: row.try_get("account_id")?,
        team_id: row.try_get("team_id")?,
        model: row.try_get("model")?,
        provider: row.try_get("provider")?,
        endpoint: row.try_get("endpoint")?,
        streamed: row.try_get::<i64, _>("streamed")? != 0,
        input_tokens: row.try_get("input_tokens")?,
        cached_tokens: row.try_get("cached_tokens")?,
        cache_write_tokens: row.try_get("cache_write_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        reasoning_tokens: row.try_get("reasoning_tokens")?,
        cost_nano: row.try_get("cost_nano")?,
        usage_source: Source::parse(&row.try_get::<String, _>("usage_source")?)?,
        status: Status::parse(&row.try_get::<String, _>("status")?)?,
        error_code: row.try_get("error_code")?,
        http_status: row.try_get("http_status")?,
        latency_ms: row.try_get("latency_ms")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        cache_write_1h_tokens: row.try_get("cache_write_1h_tokens")?,
        audio_input_tokens: row.try_get("audio_input_tokens")?,
        audio_output_tokens: row.try_get("audio_output_tokens")?,
        web_search_calls: row.try_get("web_search_calls")?,
        web_fetch_calls: row.try_get("web_fetch_calls")?,
        code_execution_calls: row.try_get("code_execution_calls")?,
        service_tier: row
            .try_get::<Option<String>, _>("service_tier")?
            .map(|t| ServiceTier::from_upstream(&t)),
        long_context: row.try_get::<i64, _>("long_context")? != 0,
        tags: row.try_get("tags")?,
        counted: crate::counters::Stamps::default(),
        spend_key: None,
        settle_failed: false,
    })
}
