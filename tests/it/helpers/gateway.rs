//! The real gateway, in-process on port 0, on either backend pair, each
//! test with its own database (SQLite file or a fresh Postgres database)
//! and its own Redis key prefix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use tollgate::app::App;
use tollgate::clock::Clock;
use tollgate::config::Config;
use tollgate::ledger::Entry as UsageRow;
use tollgate::state::AppState;
use tollgate::store::Store;

use super::client::{self, Reply as HttpReply};

pub const ADMIN: &str = "tga-test-operator-token-0123456789abcdef";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite + in-process counters.
    Embedded,
    /// Postgres + Redis.
    Production,
}

pub fn pg_admin_url() -> String {
    std::env::var("TOLLGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("TOLLGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A test's private storage.
pub struct TestStorage {
    pub database_url: String,
    /// The ledger spool of this test's gateway.
    pub spool_dir: PathBuf,
    pub redis_url: String,
    pub redis_prefix: String,
    sqlite_dir: Option<PathBuf>,
    pg_database: Option<String>,
}

impl TestStorage {
    pub async fn new(backend: Backend) -> TestStorage {
        let tag = tollgate::keys::random_base62(12).to_ascii_lowercase();
        let spool_dir = std::env::temp_dir().join(format!("tollgate-test-spool-{tag}"));
        match backend {
            Backend::Embedded => {
                let dir = std::env::temp_dir().join(format!("tollgate-test-{tag}"));
                std::fs::create_dir_all(&dir).unwrap();
                TestStorage {
                    database_url: format!("sqlite://{}", dir.join("t.db").display()),
                    spool_dir,
                    redis_url: String::new(),
                    redis_prefix: String::new(),
                    sqlite_dir: Some(dir),
                    pg_database: None,
                }
            }
            Backend::Production => {
                let name = format!("tg_test_{tag}");
                let mut admin = sqlx::PgConnection::connect(&pg_admin_url())
                    .await
                    .expect("Postgres must be up for the Production backend tests (see README)");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let base = pg_admin_url();
                let root = base.rsplit_once('/').map(|(root, _)| root).unwrap_or(&base);
                TestStorage {
                    database_url: format!("{root}/{name}"),
                    spool_dir,
                    redis_url: redis_url(),
                    redis_prefix: format!("tgtest:{tag}"),
                    sqlite_dir: None,
                    pg_database: Some(name),
                }
            }
        }
    }

    /// Drops the test's database and keys.
    pub async fn cleanup(&self) {
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = std::fs::remove_dir_all(&self.spool_dir);
        if let Some(name) = &self.pg_database {
            if let Ok(mut admin) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        }
        if !self.redis_prefix.is_empty() {
            if let Ok(client) = redis::Client::open(self.redis_url.as_str()) {
                if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                    let keys: Vec<String> = redis::cmd("KEYS")
                        .arg(format!("{}:*", self.redis_prefix))
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    if !keys.is_empty() {
                        let _: Result<(), _> =
                            redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                    }
                }
            }
        }
    }
}

pub struct TestGateway {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub storage: TestStorage,
    shutdown: CancellationToken,
    join: Option<tokio::task::JoinHandle<()>>,
}

/// Providers and models used by most tests: an OpenAI-compatible and an
/// Anthropic upstream (both the test's mock), plus the built-in mock.
pub fn standard_models(upstream_base: &str) -> String {
    format!(
        r#"
[[providers]]
name = "up"
kind = "openai"
base_url = "{upstream_base}"
api_key = "sk-upstream-secret"

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{upstream_base}"
api_key = "sk-ant-secret"

[[providers]]
name = "mock"
kind = "mock"

[[models]]
name = "gpt-4o-mini"
provider = "up"
upstream_model = "gpt-4o-mini-2024-07-18"
input_usd_per_mtok = "0.15"
output_usd_per_mtok = "0.60"
cached_input_usd_per_mtok = "0.075"

[[models]]
name = "gpt-5.1"
provider = "up"
input_usd_per_mtok = "1.25"
output_usd_per_mtok = "10.00"
cached_input_usd_per_mtok = "0.125"

[[models]]
name = "gpt-5-mini"
provider = "up"
input_usd_per_mtok = "0.25"
output_usd_per_mtok = "2.00"
cached_input_usd_per_mtok = "0.025"

[[models]]
name = "gemini-2.5-flash"
provider = "up"
input_usd_per_mtok = "0.30"
output_usd_per_mtok = "2.50"
cached_input_usd_per_mtok = "0.03"

[[models]]
name = "text-embedding-3-small"
provider = "up"
input_usd_per_mtok = "0.02"
output_usd_per_mtok = "0"

[[models]]
name = "claude-sonnet-4-5"
provider = "claude"
input_usd_per_mtok = "3.00"
output_usd_per_mtok = "15.00"
cached_input_usd_per_mtok = "0.30"
cache_write_usd_per_mtok = "3.75"

[[models]]
name = "claude-haiku-4-5"
provider = "claude"
input_usd_per_mtok = "1.00"
output_usd_per_mtok = "5.00"
cached_input_usd_per_mtok = "0.10"
cache_write_usd_per_mtok = "1.25"

[[models]]
name = "mock-1"
provider = "mock"
input_usd_per_mtok = "1.00"
output_usd_per_mtok = "2.00"
"#
    )
}

impl TestGateway {
    pub async fn start(backend: Backend, upstream_base: &str) -> TestGateway {
        Self::start_with(backend, &standard_models(upstream_base), "").await
    }

    /// Starts with extra TOML: bare keys land in `[server]`, then sections.
    pub async fn start_with(backend: Backend, models: &str, extra: &str) -> TestGateway {
        let storage = TestStorage::new(backend).await;
        Self::start_on(storage, models, extra, &[]).await
    }

    /// Starts on given storage; `overrides` are `TOLLGATE_…` pairs.
    pub async fn start_on(
        storage: TestStorage,
        models: &str,
        extra: &str,
        overrides: &[(&str, &str)],
    ) -> TestGateway {
        Self::start_with_clock(storage, models, extra, overrides, Clock::system()).await
    }

    /// Starts with `env` as the environment the config reads
    /// (`*_env` keys), nothing else of the test process's.
    pub async fn start_with_env(
        backend: Backend,
        models: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> TestGateway {
        let storage = TestStorage::new(backend).await;
        Self::start_inner(storage, models, extra, &[], Clock::system(), env).await
    }

    /// Starts with a clock the test controls.
    pub async fn start_with_clock(
        storage: TestStorage,
        models: &str,
        extra: &str,
        overrides: &[(&str, &str)],
        clock: Clock,
    ) -> TestGateway {
        Self::start_inner(storage, models, extra, overrides, clock, &[]).await
    }

    async fn start_inner(
        storage: TestStorage,
        models: &str,
        extra: &str,
        overrides: &[(&str, &str)],
        clock: Clock,
        env: &[(&str, &str)],
    ) -> TestGateway {
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_token_env = "TOLLGATE_TEST_NO_SUCH_VAR"
admin_token = "{ADMIN}"
shutdown_grace_secs = 5
{extra}

[storage]
database_url = "{}"
redis_url = "{}"
redis_prefix = "{}"

[ledger]
flush_interval_ms = 5
spool_dir = "{}"

{models}
"#,
            storage.database_url,
            storage.redis_url,
            storage.redis_prefix,
            storage.spool_dir.display()
        );
        let overrides: Vec<(String, String)> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = Config::from_parts(&text, &overrides, |var| {
            env.iter()
                .find(|(name, _)| *name == var)
                .map(|(_, value)| value.to_string())
        })
        .unwrap();
        let app = App::build_with_clock(config, clock).await.unwrap();
        let addr = app.local_addr();
        let state = app.state();
        let shutdown = CancellationToken::new();
        let join = tokio::spawn(app.run(shutdown.clone()));
        TestGateway {
            addr,
            state,
            storage,
            shutdown,
            join: Some(join),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Stops serving and drains the ledger; returns the storage for reuse.
    pub async fn stop(mut self) -> TestStorage {
        self.shutdown.cancel();
        if let Some(join) = self.join.take() {
            join.await.unwrap();
        }
        self.storage
    }

    /// Stops and removes the test's storage.
    pub async fn finish(self) {
        let storage = self.stop().await;
        storage.cleanup().await;
    }

    /// Creates a user with a prepaid balance and a key; returns (user id, key).
    pub async fn user_with_credit(&self, email: &str, credit_usd: &str) -> (String, String) {
        let user = self.admin_post("/api/users", json!({"email": email})).await;
        assert_eq!(user.status, 201, "{}", user.text());
        let user_id = user.json()["id"].as_str().unwrap().to_string();
        let key = self
            .admin_post(
                &format!("/api/users/{user_id}/keys"),
                json!({"name": "test"}),
            )
            .await;
        assert_eq!(key.status, 201, "{}", key.text());
        let key = key.json()["key"].as_str().unwrap().to_string();
        if credit_usd != "0" {
            let credit = self
                .admin_post(
                    &format!("/api/users/{user_id}/credits"),
                    json!({"amount_usd": credit_usd}),
                )
                .await;
            assert_eq!(credit.status, 200, "{}", credit.text());
        }
        (user_id, key)
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> HttpReply {
        client::send("POST", &self.url(path), ADMIN, Some(body), &[]).await
    }

    /// Posts a model request with a user key.
    pub async fn post(&self, path: &str, key: &str, body: Value) -> HttpReply {
        client::send("POST", &self.url(path), key, Some(body), &[]).await
    }

    /// The row of a request once the ledger has written it.
    pub async fn row(&self, request_id: &str) -> UsageRow {
        for _ in 0..500 {
            if let Some(row) = self.store().usage_row(request_id).await.unwrap() {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no ledger row for {request_id}");
    }

    /// Waits until the ledger has written every queued row.
    pub async fn ledger_idle(&self) {
        for _ in 0..1000 {
            let stats = &self.state.ledger.stats;
            let spooling = stats.spooling.load(std::sync::atomic::Ordering::Relaxed);
            let settling = self.state.metrics.reservations_outstanding();
            if settling == 0 && stats.depth() == 0 && stats.spool_rows() == 0 && !spooling {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("ledger did not drain");
    }

    pub async fn balance(&self, key: &str) -> String {
        let me = client::send("GET", &self.url("/api/me"), key, None, &[]).await;
        assert_eq!(me.status, 200, "{}", me.text());
        me.json()["balance_usd"].as_str().unwrap().to_string()
    }
}

/// Runs one test body once per backend pair.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name($crate::helpers::gateway::Backend::Embedded).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn production() {
                super::$name($crate::helpers::gateway::Backend::Production).await;
            }
        }
    };
}
