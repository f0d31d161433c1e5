//! Durable records: users, keys, credits, the usage ledger, settings.
//!
//! One implementation over `sqlx::AnyPool` serves both backends (SQLite for
//! the embedded default, PostgreSQL in production): the schema and every
//! statement are written in the SQL both dialects share (`$N` parameters,
//! `ON CONFLICT … DO NOTHING`, BIGINT epoch milliseconds and nano-dollars).
//! Methods are named by intent. The request path calls the store only on a
//! key-cache miss and to seed a counter; the ledger writer is the only
//! writer of usage rows.

pub mod audit;
pub mod invitations;
pub mod reports;
pub mod teams;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Executor, Row};

use crate::counters::Stamps;
use crate::money::Money;

/// A storage failure; its detail goes to logs, never to clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the record conflicts with an existing one")]
    Conflict,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the lookup stopped before it answered")]
    Interrupted,
}

impl From<crate::singleflight::Interrupted> for StoreError {
    fn from(_: crate::singleflight::Interrupted) -> Self {
        StoreError::Interrupted
    }
}

fn map_unique(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Database(error),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub created_at: i64,
}

/// A stored API key (never the key itself: only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: String,
    pub user_id: String,
    pub name: Option<String>,
    pub prefix: String,
    pub key_hash: String,
    pub billing: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A transaction holding counter locks; see [`Store::lock_counters`].
pub struct CounterLock {
    tx: sqlx::Transaction<'static, sqlx::Any>,
}

impl CounterLock {
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Ends the transaction at once, releasing its locks.
    pub async fn rollback(self) {
        let _ = self.tx.rollback().await;
    }
}

/// A prepaid credit.
pub struct Credit<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub amount: Money,
    pub note: Option<&'a str>,
    pub created_by: &'a str,
    pub at: i64,
}

/// One attribution row of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct UsageRow {
    pub request_id: String,
    pub user_id: String,
    pub key_id: String,
    pub account_id: String,
    pub team_id: Option<String>,
    pub model: String,
    pub provider: String,
    pub endpoint: String,
    pub streamed: bool,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_nano: i64,
    pub usage_source: String,
    pub status: String,
    pub error_code: Option<String>,
    pub http_status: i64,
    pub latency_ms: i64,
    pub started_at: i64,
    pub finished_at: i64,
    /// Not stored: the counter stamps this row's cost is counted under, and
    /// the member's spend counter, for the writer's rebuild check.
    #[serde(default)]
    pub counted: Stamps,
    #[serde(default)]
    pub spend_key: Option<String>,
}

const USAGE_COLUMNS: &str =
    "request_id, user_id, key_id, account_id, team_id, model, provider, endpoint, streamed, \
     input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nano, \
     usage_source, status, error_code, http_status, latency_ms, started_at, finished_at";
const USAGE_COLUMN_COUNT: usize = 22;
/// Rows per multi-row insert (22 parameters each). SQLite prepares long
/// statements slowly, so it gets short ones.
const PG_ROWS_PER_STATEMENT: usize = 100;
const SQLITE_ROWS_PER_STATEMENT: usize = 128;
/// Connections in a SQLite pool, whatever `storage.max_connections` says.
const SQLITE_MAX_CONNECTIONS: u32 = 4;

/// `INSERT … VALUES (…),(…) ON CONFLICT DO NOTHING` for `n` rows. SQLite
/// gets anonymous `?` parameters: numbered ones cost it a name lookup per
/// parameter on every bind.
fn insert_usage_sql(n: usize, postgres: bool) -> String {
    let mut sql = String::with_capacity(64 + n * USAGE_COLUMN_COUNT * 5);
    sql.push_str("INSERT INTO usage_rows (");
    sql.push_str(USAGE_COLUMNS);
    sql.push_str(") VALUES ");
    let mut param = 0;
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..USAGE_COLUMN_COUNT {
            if c > 0 {
                sql.push(',');
            }
            param += 1;
            if postgres {
                sql.push('$');
                sql.push_str(&param.to_string());
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (request_id) DO NOTHING RETURNING request_id");
    sql
}

/// The database behind the gateway.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    postgres: bool,
}

pub use self::{
    audit::AuditEntry,
    invitations::{Invitation, JoinRequest},
    reports::{GroupBy, UsageGroup},
    teams::{Member, Team},
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Connects (creating a SQLite file when missing).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres");
        let url = if postgres || url.contains("mode=") || url.contains(":memory:") {
            url.to_string()
        } else if url.contains('?') {
            format!("{url}&mode=rwc")
        } else {
            format!("{url}?mode=rwc")
        };
        // Statements are logged at debug level only: a slow batch insert
        // must not print its whole SQL at warn.
        let options = sqlx::any::AnyConnectOptions::from_str(&url)?
            .log_statements(log::LevelFilter::Trace)
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
        let pool = AnyPoolOptions::new()
            // SQLite takes one writer at a time and each connection keeps
            // its own page cache: a few connections serve it best.
            .max_connections(if postgres {
                max_connections.max(1)
            } else {
                max_connections.clamp(1, SQLITE_MAX_CONNECTIONS)
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if !postgres {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        // Measured on the ledger writer: statement journals
                        // in memory, a page cache that holds the hot index
                        // pages, and fewer (larger) WAL checkpoints.
                        conn.execute("PRAGMA temp_store = MEMORY").await?;
                        conn.execute("PRAGMA cache_size = -4096").await?;
                        conn.execute("PRAGMA wal_autocheckpoint = 4000").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Store { pool, postgres })
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A cheap round trip for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // === Users ===

    pub async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO users (id, email, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&user.id)
            .bind(&user.email)
            .bind(&user.name)
            .bind(user.created_at)
            .execute(&self.pool)
            .await
            .map_err(map_unique)?;
        Ok(())
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT id, email, name, created_at FROM users WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    // === Keys ===

    pub async fn insert_key(&self, key: &KeyRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, billing, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(&key.user_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.key_hash)
        .bind(&key.billing)
        .bind(key.created_at)
        .execute(&self.pool)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    /// The live key with this hash whose owner is not deleted.
    pub async fn key_by_hash(&self, key_hash: &str) -> Result<Option<KeyRow>, StoreError> {
        let row = sqlx::query(
            "SELECT k.id, k.user_id, k.name, k.prefix, k.key_hash, k.billing, k.created_at, k.revoked_at \
             FROM api_keys k JOIN users u ON u.id = k.user_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND u.deleted_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| key_from_row(&r)).transpose()
    }

    pub async fn keys_of_user(&self, user_id: &str) -> Result<Vec<KeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, user_id, name, prefix, key_hash, billing, created_at, revoked_at \
             FROM api_keys WHERE user_id = $1 ORDER BY created_at, id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    pub async fn key_of_user(
        &self,
        user_id: &str,
        key_id: &str,
    ) -> Result<Option<KeyRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, user_id, name, prefix, key_hash, billing, created_at, revoked_at \
             FROM api_keys WHERE user_id = $1 AND id = $2",
        )
        .bind(user_id)
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| key_from_row(&r)).transpose()
    }

    pub async fn set_key_billing(&self, key_id: &str, billing: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET billing = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(billing)
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn revoke_key(&self, key_id: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(at)
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // === Money ===

    pub async fn add_credit(&self, credit: &Credit<'_>) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::add_credit_on(&mut conn, credit).await
    }

    /// Adds a credit on a connection (inside a counter lock).
    pub async fn add_credit_on(
        conn: &mut AnyConnection,
        credit: &Credit<'_>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO credits (id, user_id, amount_nano, note, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(credit.id)
        .bind(credit.user_id)
        .bind(credit.amount.nano())
        .bind(credit.note)
        .bind(credit.created_by)
        .bind(credit.at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// The durable balance of an account: credits minus recorded spend.
    /// Rows still queued for the ledger are not in it; counters are.
    pub async fn recorded_balance(&self, account_id: &str) -> Result<Money, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::recorded_balance_on(&mut conn, account_id).await
    }

    pub async fn recorded_balance_on(
        conn: &mut AnyConnection,
        account_id: &str,
    ) -> Result<Money, StoreError> {
        let row = sqlx::query(
            "SELECT \
               CAST(COALESCE((SELECT SUM(amount_nano) FROM credits WHERE user_id = $1), 0) AS BIGINT) AS credit, \
               CAST(COALESCE((SELECT SUM(cost_nano) FROM usage_rows WHERE account_id = $1), 0) AS BIGINT) AS spent",
        )
        .bind(account_id)
        .fetch_one(&mut *conn)
        .await?;
        let credit: i64 = row.try_get("credit")?;
        let spent: i64 = row.try_get("spent")?;
        Ok(Money::from_nano(credit.saturating_sub(spent)))
    }

    // === Ledger ===

    /// Inserts rows in one transaction; a row whose request id is already
    /// stored is skipped, so a retried batch never counts twice. Returns the
    /// rows newly stored.
    ///
    /// Rows go in multi-row statements (fewer round trips to the database
    /// or to SQLite's worker thread), short enough to prepare quickly.
    pub async fn insert_usage_rows(&self, rows: &[UsageRow]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = Self::insert_usage_rows_on(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(inserted.len() as u64)
    }

    /// Inserts rows on a connection (inside a counter lock); returns the
    /// request ids newly stored.
    pub async fn insert_usage_rows_on(
        conn: &mut AnyConnection,
        rows: &[UsageRow],
    ) -> Result<Vec<String>, StoreError> {
        let mut inserted = Vec::with_capacity(rows.len());
        if rows.is_empty() {
            return Ok(inserted);
        }
        let postgres = conn.backend_name() == "PostgreSQL";
        let per_statement = if postgres {
            PG_ROWS_PER_STATEMENT
        } else {
            SQLITE_ROWS_PER_STATEMENT
        };
        for chunk in rows.chunks(per_statement) {
            let sql = insert_usage_sql(chunk.len(), postgres);
            let mut query = sqlx::query(&sql);
            for row in chunk {
                query = query
                    .bind(&row.request_id)
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
                    .bind(&row.usage_source)
                    .bind(&row.status)
                    .bind(&row.error_code)
                    .bind(row.http_status)
                    .bind(row.latency_ms)
                    .bind(row.started_at)
                    .bind(row.finished_at);
            }
            for stored in query.fetch_all(&mut *conn).await? {
                inserted.push(stored.try_get("request_id")?);
            }
        }
        Ok(inserted)
    }

    /// Opens a transaction holding advisory locks on counters (Postgres;
    /// elsewhere a plain transaction). A counter rebuild takes its lock
    /// exclusively; ledger writes and credits take theirs shared, so a
    /// rebuild reads the ledger either before or after each of them, never
    /// in the middle.
    pub async fn lock_counters(
        &self,
        names: &[String],
        exclusive: bool,
    ) -> Result<CounterLock, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.postgres {
            // Never wait long for a lock or a statement: a stuck holder must
            // turn into an error (503 or a spooled batch), not a hang.
            tx.execute("SET LOCAL lock_timeout = '3s'").await?;
            tx.execute("SET LOCAL statement_timeout = '10s'").await?;
            let mut sorted: Vec<&String> = names.iter().collect();
            sorted.sort();
            sorted.dedup();
            let function = if exclusive {
                "pg_advisory_xact_lock"
            } else {
                "pg_advisory_xact_lock_shared"
            };
            let sql = format!("SELECT {function}(hashtextextended($1, 0))");
            for name in sorted {
                sqlx::query(&sql).bind(name).execute(&mut *tx).await?;
            }
        }
        Ok(CounterLock { tx })
    }

    pub async fn usage_row(&self, request_id: &str) -> Result<Option<UsageRow>, StoreError> {
        let sql = format!("SELECT {USAGE_COLUMNS} FROM usage_rows WHERE request_id = $1");
        let row = sqlx::query(&sql)
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| usage_from_row(&r)).transpose()
    }

    pub async fn usage_rows_of_account(
        &self,
        account_id: &str,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let sql = format!(
            "SELECT {USAGE_COLUMNS} FROM usage_rows WHERE account_id = $1 ORDER BY started_at, request_id"
        );
        let rows = sqlx::query(&sql)
            .bind(account_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(usage_from_row).collect()
    }

    // === Settings ===

    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    /// Stores a setting unless one is there; returns the value in force.
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(self
            .setting(key)
            .await?
            .unwrap_or_else(|| value.to_string()))
    }
}

fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

fn key_from_row(row: &AnyRow) -> Result<KeyRow, StoreError> {
    Ok(KeyRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        key_hash: row.try_get("key_hash")?,
        billing: row.try_get("billing")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn usage_from_row(row: &AnyRow) -> Result<UsageRow, StoreError> {
    Ok(UsageRow {
        request_id: row.try_get("request_id")?,
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
        usage_source: row.try_get("usage_source")?,
        status: row.try_get("status")?,
        error_code: row.try_get("error_code")?,
        http_status: row.try_get("http_status")?,
        latency_ms: row.try_get("latency_ms")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        counted: Stamps::default(),
        spend_key: None,
    })
}
