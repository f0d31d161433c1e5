//! Configuration: defaults → TOML file → `TOLLGATE_<SECTION>__<KEY>`
//! environment overrides → validation.
//!
//! Every error names the key it is about (`providers[0].base_url: …`).
//! Secrets are read through `*_env` indirections and kept in [`Secret`],
//! whose `Debug` never shows the value. With no file at all the embedded
//! default applies: SQLite at `./tollgate.db`, in-process counters, and the
//! built-in `mock` provider.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use toml::Value;

use crate::money::PricePerMtok;
use crate::pricing::ModelPrice;

/// A secret value: `Debug` and `Display` print a redaction.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("config: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

// === Raw (what serde reads) ===

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: ServerConfig,
    storage: StorageConfig,
    upstream: UpstreamConfig,
    limits: LimitsConfig,
    ledger: LedgerConfig,
    cache: CacheConfig,
    providers: Vec<RawProvider>,
    models: Vec<RawModel>,
}

/// `[server]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Environment variable holding the operator token.
    pub admin_token_env: String,
    /// The operator token itself (prefer `admin_token_env`).
    pub admin_token: Secret,
    /// Seconds to wait for open requests on shutdown.
    pub shutdown_grace_secs: u64,
    /// Most connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// The gateway's public base URL, used in invitation and join links.
    /// Empty: `http://` + `listen`.
    pub public_url: String,
    /// Runtime worker threads; 0 = one per CPU core.
    pub worker_threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:4000".into(),
            max_body_bytes: 32 * 1024 * 1024,
            admin_token_env: "TOLLGATE_ADMIN_TOKEN".into(),
            admin_token: Secret::default(),
            shutdown_grace_secs: 30,
            max_connections: 10_000,
            public_url: String::new(),
            worker_threads: 0,
        }
    }
}

/// `[storage]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://PATH` or `postgres://…`.
    pub database_url: String,
    /// Empty: in-process counters (one gateway process).
    pub redis_url: String,
    /// Prefix of every Redis key, so several deployments can share a server.
    pub redis_prefix: String,
    /// Connection pool size of the database.
    pub max_connections: u32,
    /// While Redis is away: `local` keeps admitting from process-local
    /// counters within `redis_outage_budget_usd` per account; `refuse`
    /// answers 503.
    pub redis_unavailable: String,
    /// The most one account may spend in one process during one Redis
    /// outage (policy `local`).
    pub redis_outage_budget_usd: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            database_url: "sqlite://tollgate.db".into(),
            redis_url: String::new(),
            redis_prefix: "tollgate".into(),
            max_connections: 16,
            redis_unavailable: "local".into(),
            redis_outage_budget_usd: "5".into(),
        }
    }
}

/// `[upstream]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// TCP + TLS connect timeout (502 when exceeded).
    pub connect_timeout_ms: u64,
    /// Time until the upstream's response headers (504 when exceeded).
    pub response_timeout_ms: u64,
    /// Longest silence between two body chunks before the stream is cut.
    pub idle_timeout_ms: u64,
    /// Idle keep-alive connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_ms: 5_000,
            response_timeout_ms: 600_000,
            idle_timeout_ms: 300_000,
            pool_max_idle_per_host: 512,
        }
    }
}

/// `[limits]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Output bound reserved when a request sets no max tokens and its
    /// model has no `max_output_tokens`.
    pub default_max_output_tokens: u64,
    /// Requests per minute per API key; 0 = unlimited.
    pub rpm_per_key: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            default_max_output_tokens: 4096,
            rpm_per_key: 0,
        }
    }
}

/// `[ledger]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// Rows per insert.
    pub batch_size: usize,
    /// Longest wait before a partial batch is written.
    pub flush_interval_ms: u64,
    /// Rows held in memory waiting for the writer.
    pub queue_capacity: usize,
    /// Where rows wait (fsync'd) while the database is away.
    pub spool_dir: String,
    /// A batch the database has not taken in this time goes to the spool.
    pub write_timeout_ms: u64,
    /// How often a non-empty spool is replayed into the database.
    pub replay_interval_ms: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            batch_size: 500,
            flush_interval_ms: 50,
            queue_capacity: 65_536,
            spool_dir: "tollgate-spool".into(),
            write_timeout_ms: 5_000,
            replay_interval_ms: 1_000,
        }
    }
}

/// `[cache]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How long a key lookup is trusted; bounds how late a revocation made
    /// on another process takes effect.
    pub key_ttl_ms: u64,
    /// Most keys cached.
    pub max_keys: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            key_ttl_ms: 1_000,
            max_keys: 100_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    kind: String,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default)]
    anthropic_version: Option<String>,
    #[serde(default)]
    inject_stream_usage: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    provider: String,
    #[serde(default)]
    upstream_model: Option<String>,
    input_usd_per_mtok: PriceText,
    output_usd_per_mtok: PriceText,
    #[serde(default)]
    cached_input_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    cache_write_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
}

/// A price as written in TOML: a decimal string (preferred) or an integer.
/// Floats are refused: money is never a float.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PriceText {
    Text(String),
    Integer(i64),
    Float(f64),
}

// === Validated ===

/// What a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Any OpenAI-compatible server.
    OpenAi,
    /// Anthropic's native Messages API.
    Anthropic,
    /// Built in, offline, deterministic.
    Mock,
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Base URL including `/v1`, without a trailing slash.
    pub base_url: String,
    pub api_key: Secret,
    pub anthropic_version: String,
    /// Add `stream_options.include_usage` to streamed chat/completions.
    pub inject_stream_usage: bool,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    pub provider: usize,
    pub upstream_model: String,
    pub price: ModelPrice,
    pub max_output_tokens: Option<u64>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub listen: SocketAddr,
    pub storage: StorageConfig,
    pub upstream: UpstreamConfig,
    pub limits: LimitsConfig,
    pub ledger: LedgerConfig,
    pub cache: CacheConfig,
    pub providers: Vec<ProviderConfig>,
    pub models: Vec<ModelConfig>,
}

impl Config {
    /// Loads from an optional file plus the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|error| {
                ConfigError::new(path.display().to_string(), format!("cannot read: {error}"))
            })?,
            None => String::new(),
        };
        let env: Vec<(String, String)> = std::env::vars().collect();
        Config::from_parts(&text, &env, |name| std::env::var(name).ok())
    }

    /// Builds from TOML text, override pairs and a secret lookup. Pure, so
    /// tests need not touch the process environment.
    pub fn from_parts(
        text: &str,
        overrides: &[(String, String)],
        lookup_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut root: Value = if text.trim().is_empty() {
            Value::Table(Default::default())
        } else {
            toml::from_str(text).map_err(|error| {
                ConfigError::new("(file)", error.to_string().trim_end().to_string())
            })?
        };
        for (name, value) in overrides {
            if let Some(path) = name.strip_prefix("TOLLGATE_") {
                if path.contains("__") {
                    apply_override(&mut root, path, value)?;
                }
            }
        }
        let raw: RawConfig = serde_path_to_error::deserialize(root).map_err(|error| {
            let key = error.path().to_string();
            ConfigError::new(key, error.into_inner().to_string())
        })?;
        validate(raw, &lookup_env)
    }

    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn provider_of(&self, model: &ModelConfig) -> &ProviderConfig {
        &self.providers[model.provider]
    }

    /// The base of links handed to people (invitations, join links).
    pub fn public_url(&self) -> String {
        if self.server.public_url.is_empty() {
            format!("http://{}", self.listen)
        } else {
            self.server.public_url.trim_end_matches('/').to_string()
        }
    }

    /// The per-account, per-process budget while Redis is away, when the
    /// policy is `local`.
    pub fn redis_outage_budget(&self) -> Option<crate::money::Money> {
        if self.storage.redis_unavailable != "local" {
            return None;
        }
        crate::money::Money::parse_usd_non_negative(&self.storage.redis_outage_budget_usd).ok()
    }

    pub fn uses_postgres(&self) -> bool {
        self.storage.database_url.starts_with("postgres")
    }
}

/// `TOLLGATE_SERVER__LISTEN=…` sets `server.listen`; `PROVIDERS__0__BASE_URL`
/// indexes arrays. Values are read as TOML when they parse (numbers, bools),
/// else taken as strings.
fn apply_override(root: &mut Value, path: &str, value: &str) -> Result<(), ConfigError> {
    let key_name = format!("TOLLGATE_{path}");
    let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(value.to_string()));
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        node = match node {
            Value::Table(table) => {
                if last {
                    table.insert(part.clone(), parsed);
                    return Ok(());
                }
                let next_is_index = parts[i + 1].parse::<usize>().is_ok();
                table.entry(part.clone()).or_insert_with(|| {
                    if next_is_index {
                        Value::Array(Vec::new())
                    } else {
                        Value::Table(Default::default())
                    }
                })
            }
            Value::Array(items) => {
                let index: usize = part
                    .parse()
                    .map_err(|_| ConfigError::new(&key_name, "expected an array index"))?;
                if index > items.len() {
                    return Err(ConfigError::new(&key_name, "array index out of range"));
                }
                if index == items.len() {
                    items.push(Value::Table(Default::default()));
                }
                if last {
                    items[index] = parsed;
                    return Ok(());
                }
                &mut items[index]
            }
            _ => {
                return Err(ConfigError::new(
                    &key_name,
                    "cannot set a key inside a value",
                ))
            }
        };
    }
    Ok(())
}

fn parse_price(key: &str, price: &PriceText) -> Result<PricePerMtok, ConfigError> {
    match price {
        PriceText::Text(text) => PricePerMtok::parse(text)
            .map_err(|error| ConfigError::new(key, format!("{text:?} {error}"))),
        PriceText::Integer(value) if *value >= 0 => PricePerMtok::parse(&value.to_string())
            .map_err(|error| ConfigError::new(key, error.to_string())),
        PriceText::Integer(_) => Err(ConfigError::new(key, "must not be negative")),
        PriceText::Float(value) => Err(ConfigError::new(
            key,
            format!("write {value} as a decimal string (\"{value}\"): money is never a float"),
        )),
    }
}

fn validate(
    raw: RawConfig,
    lookup_env: &impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
        ConfigError::new(
            "server.listen",
            format!("{:?} is not HOST:PORT", raw.server.listen),
        )
    })?;
    if raw.server.max_body_bytes == 0 {
        return Err(ConfigError::new("server.max_body_bytes", "must be above 0"));
    }
    let url = &raw.storage.database_url;
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        return Err(ConfigError::new(
            "storage.database_url",
            "must start with sqlite: or postgres://",
        ));
    }
    let redis_url = &raw.storage.redis_url;
    if !(redis_url.is_empty()
        || redis_url.starts_with("redis://")
        || redis_url.starts_with("rediss://"))
    {
        return Err(ConfigError::new(
            "storage.redis_url",
            "must start with redis:// or be empty",
        ));
    }
    if !matches!(raw.storage.redis_unavailable.as_str(), "local" | "refuse") {
        return Err(ConfigError::new(
            "storage.redis_unavailable",
            format!(
                "{:?} is not \"local\" or \"refuse\"",
                raw.storage.redis_unavailable
            ),
        ));
    }
    if crate::money::Money::parse_usd_non_negative(&raw.storage.redis_outage_budget_usd).is_err() {
        return Err(ConfigError::new(
            "storage.redis_outage_budget_usd",
            "must be a non-negative decimal amount of USD",
        ));
    }
    if raw.ledger.batch_size == 0 || raw.ledger.queue_capacity == 0 {
        return Err(ConfigError::new(
            "ledger",
            "batch_size and queue_capacity must be above 0",
        ));
    }

    let (raw_providers, raw_models) = if raw.providers.is_empty() && raw.models.is_empty() {
        builtin_mock()
    } else {
        (raw.providers, raw.models)
    };

    let mut providers: Vec<ProviderConfig> = Vec::new();
    for (i, p) in raw_providers.into_iter().enumerate() {
        let key = |field: &str| format!("providers[{i}].{field}");
        if p.name.trim().is_empty() {
            return Err(ConfigError::new(key("name"), "must not be empty"));
        }
        if providers.iter().any(|q| q.name == p.name) {
            return Err(ConfigError::new(
                key("name"),
                format!("{:?} is declared twice", p.name),
            ));
        }
        let kind = match p.kind.as_str() {
            "openai" => ProviderKind::OpenAi,
            "anthropic" => ProviderKind::Anthropic,
            "mock" => ProviderKind::Mock,
            other => {
                return Err(ConfigError::new(
                    key("kind"),
                    format!("{other:?} is not one of openai, anthropic, mock"),
                ))
            }
        };
        let default_base = match kind {
            ProviderKind::OpenAi => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com/v1",
            ProviderKind::Mock => "mock://local/v1",
        };
        let base_url = p
            .base_url
            .unwrap_or_else(|| default_base.to_string())
            .trim_end_matches('/')
            .to_string();
        if kind != ProviderKind::Mock {
            let parsed: Result<http::Uri, _> = base_url.parse();
            let ok = parsed
                .as_ref()
                .map(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError::new(
                    key("base_url"),
                    format!("{base_url:?} is not an http(s) URL"),
                ));
            }
        }
        let api_key = match (&p.api_key, &p.api_key_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    key("api_key_env"),
                    "set api_key or api_key_env, not both",
                ))
            }
            (Some(value), None) => Secret::new(value.clone()),
            (None, Some(var)) => match lookup_env(var) {
                Some(value) if !value.is_empty() => Secret::new(value),
                _ => {
                    return Err(ConfigError::new(
                        key("api_key_env"),
                        format!("environment variable {var} is not set"),
                    ))
                }
            },
            (None, None) => Secret::default(),
        };
        let mut headers = Vec::new();
        for (name, value) in p.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(&value).is_err()
            {
                return Err(ConfigError::new(
                    key(&format!("headers.{name}")),
                    "is not a valid header",
                ));
            }
            headers.push((name, value));
        }
        providers.push(ProviderConfig {
            name: p.name,
            kind,
            base_url,
            api_key,
            anthropic_version: p.anthropic_version.unwrap_or_else(|| "2023-06-01".into()),
            inject_stream_usage: p
                .inject_stream_usage
                .unwrap_or(kind != ProviderKind::Anthropic),
            headers,
        });
    }

    let mut models: Vec<ModelConfig> = Vec::new();
    for (i, m) in raw_models.into_iter().enumerate() {
        let key = |field: &str| format!("models[{i}].{field}");
        if m.name.trim().is_empty() {
            return Err(ConfigError::new(key("name"), "must not be empty"));
        }
        if models.iter().any(|n| n.name == m.name) {
            return Err(ConfigError::new(
                key("name"),
                format!("{:?} is declared twice", m.name),
            ));
        }
        let provider = providers
            .iter()
            .position(|p| p.name == m.provider)
            .ok_or_else(|| {
                ConfigError::new(
                    key("provider"),
                    format!("no provider named {:?}", m.provider),
                )
            })?;
        let price = ModelPrice {
            input: parse_price(&key("input_usd_per_mtok"), &m.input_usd_per_mtok)?,
            output: parse_price(&key("output_usd_per_mtok"), &m.output_usd_per_mtok)?,
            cached_input: m
                .cached_input_usd_per_mtok
                .as_ref()
                .map(|p| parse_price(&key("cached_input_usd_per_mtok"), p))
                .transpose()?,
            cache_write: m
                .cache_write_usd_per_mtok
                .as_ref()
                .map(|p| parse_price(&key("cache_write_usd_per_mtok"), p))
                .transpose()?,
        };
        if m.max_output_tokens == Some(0) {
            return Err(ConfigError::new(
                key("max_output_tokens"),
                "must be above 0",
            ));
        }
        models.push(ModelConfig {
            upstream_model: m.upstream_model.unwrap_or_else(|| m.name.clone()),
            name: m.name,
            provider,
            price,
            max_output_tokens: m.max_output_tokens,
        });
    }

    Ok(Config {
        listen,
        server: raw.server,
        storage: raw.storage,
        upstream: raw.upstream,
        limits: raw.limits,
        ledger: raw.ledger,
        cache: raw.cache,
        providers,
        models,
    })
}

/// The embedded default's provider and models: the offline mock.
fn builtin_mock() -> (Vec<RawProvider>, Vec<RawModel>) {
    let provider = RawProvider {
        name: "mock".into(),
        kind: "mock".into(),
        base_url: None,
        api_key: None,
        api_key_env: None,
        anthropic_version: None,
        inject_stream_usage: None,
        headers: BTreeMap::new(),
    };
    let model = |name: &str, input: &str, output: &str| RawModel {
        name: name.into(),
        provider: "mock".into(),
        upstream_model: None,
        input_usd_per_mtok: PriceText::Text(input.into()),
        output_usd_per_mtok: PriceText::Text(output.into()),
        cached_input_usd_per_mtok: Some(PriceText::Text("0.10".into())),
        cache_write_usd_per_mtok: None,
        max_output_tokens: None,
    };
    (
        vec![provider],
        vec![
            model("mock-1", "1.00", "2.00"),
            model("mock-embed-1", "0.02", "0"),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, overrides: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let overrides: Vec<(String, String)> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_parts(text, &overrides, |name| {
            (name == "OPENAI_API_KEY").then(|| "sk-test".to_string())
        })
    }

    #[test]
    fn empty_config_is_the_embedded_default() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:4000");
        assert_eq!(config.storage.database_url, "sqlite://tollgate.db");
        assert!(config.model("mock-1").is_some());
    }

    #[test]
    fn env_overrides_reach_nested_keys() {
        let config = load(
            "[[providers]]\nname='openai'\nkind='openai'\napi_key_env='OPENAI_API_KEY'\n[[models]]\nname='gpt'\nprovider='openai'\ninput_usd_per_mtok='1'\noutput_usd_per_mtok='2'\n",
            &[
                ("TOLLGATE_SERVER__LISTEN", "0.0.0.0:9000"),
                ("TOLLGATE_PROVIDERS__0__BASE_URL", "http://127.0.0.1:1/v1"),
                ("TOLLGATE_LEDGER__BATCH_SIZE", "7"),
            ],
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.providers[0].base_url, "http://127.0.0.1:1/v1");
        assert_eq!(config.providers[0].api_key.expose(), "sk-test");
        assert_eq!(config.ledger.batch_size, 7);
        assert_eq!(format!("{:?}", config.providers[0].api_key), "Secret(***)");
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../config/tollgate.example.toml");
        let config = Config::from_parts(text, &[], |_| Some("secret".to_string())).unwrap();
        assert_eq!(config.providers.len(), 3);
        assert!(config.model("claude-sonnet-4-5").is_some());
    }

    #[test]
    fn errors_name_the_key() {
        let error = load("[server]\nlisten='nope'\n", &[]).unwrap_err();
        assert_eq!(error.key, "server.listen");
        let error = load("[server]\nlisen='x'\n", &[]).unwrap_err();
        assert!(error.to_string().contains("lisen"), "{error}");
        let error = load(
            "[[providers]]\nname='m'\nkind='mock'\n[[models]]\nname='x'\nprovider='m'\ninput_usd_per_mtok=1.5\noutput_usd_per_mtok='1'\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(error.key, "models[0].input_usd_per_mtok");
        let error = load(
            "[[providers]]\nname='a'\nkind='anthropic'\napi_key_env='MISSING'\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(error.key, "providers[0].api_key_env");
    }
}
