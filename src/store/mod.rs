//! Durable records: users, keys, credits, the usage ledger, settings.
//!
//! One implementation over `sqlx::AnyPool` serves both backends (SQLite for
//! the embedded default, PostgreSQL in production): the schema and every
//! statement are written in the SQL both dialects share (`$N` parameters,
//! `ON CONFLICT … DO NOTHING`, BIGINT epoch milliseconds and nano-dollars).
//! Methods are named by intent. The request path calls the store only on a
//! cache miss (keys, team policies) and to seed a counter; the ledger
//! writer is the only writer of usage rows, whose SQL is in `ledger/rows.rs`.

pub mod audit;
pub mod events;
pub mod invitations;
pub mod outbox;
pub mod partitions;
pub mod reports;
pub mod rollups;
pub mod teams;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Executor, Row};

use crate::domain::{BillingChoice, ParseError};
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
    #[error("a stored value is not valid: {0}")]
    Invalid(#[from] ParseError),
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
    pub billing: BillingChoice,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// Default cost allocation tags (stored form, `tags.rs`).
    pub tags: Option<String>,
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

    /// Commits after `result` succeeded; after a failure rolls back at once,
    /// so no lock outlives the error.
    pub async fn finish<T, E: From<StoreError>>(self, result: Result<T, E>) -> Result<T, E> {
        match result {
            Ok(value) => {
                self.commit().await?;
                Ok(value)
            }
            Err(error) => {
                self.rollback().await;
                Err(error)
            }
        }
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

/// Connections in a SQLite pool, whatever `storage.max_connections` says.
const SQLITE_MAX_CONNECTIONS: u32 = 4;

/// The database behind the gateway.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    postgres: bool,
    /// Email is on (`[email] smtp_url`): facts that are mailed write their
    /// mail to the outbox in their own transaction.
    mail: bool,
}

pub use self::{
    audit::AuditEntry,
    invitations::{Invitation, JoinRequest},
    reports::{GroupBy, MineBy, UsageGroup},
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
        Ok(Store {
            pool,
            postgres,
            mail: false,
        })
    }

    /// The pool, for the modules that own their tables' SQL (`ledger`).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// Leases up to `limit` rows of a work table (`webhook_deliveries`,
    /// `email_outbox`: `state`, `next_at`, `lease_until`, `lease_owner`)
    /// that are pending, due and not leased, for `lease_ms`: no other
    /// process takes them meanwhile. Returns the owner they are leased to.
    pub(crate) async fn lease_due(
        &self,
        table: &'static str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<String, StoreError> {
        let owner = crate::keys::new_id("lease");
        // The lease condition is repeated outside the subquery: a row
        // another process leased meanwhile fails it when re-read.
        sqlx::query(&format!(
            "UPDATE {table} SET lease_until = $1, lease_owner = $2 WHERE id IN \
               (SELECT id FROM {table} WHERE state = 'pending' AND next_at <= $3 \
                AND lease_until <= $3 ORDER BY next_at LIMIT $4) \
             AND state = 'pending' AND lease_until <= $3"
        ))
        .bind(now + lease_ms)
        .bind(&owner)
        .bind(now)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(owner)
    }

    /// Turns mail on (set once at start, before the store is shared).
    pub fn set_mail(&mut self, on: bool) {
        self.mail = on;
    }

    /// Whether facts that are mailed write their mail (email is on).
    pub fn mails(&self) -> bool {
        self.mail
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        if self.postgres {
            partitions::ensure_partitioned(self).await?;
        }
        rollups::ensure(self).await?;
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
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, billing, created_at, tags) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&key.id)
        .bind(&key.user_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.key_hash)
        .bind(key.billing.to_string())
        .bind(key.created_at)
        .bind(key.tags.as_deref())
        .execute(&self.pool)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    /// The live key with this hash whose owner is not deleted.
    pub async fn key_by_hash(&self, key_hash: &str) -> Result<Option<KeyRow>, StoreError> {
        let row = sqlx::query(
            "SELECT k.id, k.user_id, k.name, k.prefix, k.key_hash, k.billing, k.created_at, k.revoked_at, k.tags \
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
            "SELECT id, user_id, name, prefix, key_hash, billing, created_at, revoked_at, tags \
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
            "SELECT id, user_id, name, prefix, key_hash, billing, created_at, revoked_at, tags \
             FROM api_keys WHERE user_id = $1 AND id = $2",
        )
        .bind(user_id)
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| key_from_row(&r)).transpose()
    }

    pub async fn set_key_billing(
        &self,
        key_id: &str,
        billing: &BillingChoice,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET billing = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(billing.to_string())
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets a key's default tags (stored form, `tags.rs`).
    pub async fn set_key_tags(&self, key_id: &str, tags: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET tags = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(tags)
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

    /// The durable balance of an account: credits minus recorded spend
    /// (`rollups.rs` has the query).
    pub async fn recorded_balance(&self, account_id: &str) -> Result<Money, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::recorded_balance_on(&mut conn, account_id).await
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
        billing: BillingChoice::parse(&row.try_get::<String, _>("billing")?)?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        tags: row.try_get("tags")?,
    })
}
