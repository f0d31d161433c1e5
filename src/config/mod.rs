//! Configuration: defaults → TOML file → `TOLLGATE_<SECTION>__<KEY>`
//! environment overrides → validation.
//!
//! Every error names the key it is about (`providers[0].base_url: …`).
//! Secrets are read through `*_env` indirections and kept in [`Secret`],
//! whose `Debug` never shows the value. With no file at all the embedded
//! default applies: SQLite at `./tollgate.db`, in-process counters, and the
//! built-in `mock` provider.

pub mod known;
mod raw;
mod sections;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use toml::Value;

use crate::bound::ModelLimits;
use crate::pricing::ModelPrice;

use self::raw::{apply_override, override_key, RawConfig};
use self::validate::validate;

pub use self::sections::{
    CacheConfig, EmailConfig, LedgerConfig, LimitsConfig, MeteringConfig, OnClientDisconnect,
    ServerConfig, SmtpTls, StorageConfig, UpstreamConfig, WebhooksConfig,
};

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
    /// Extra headers sent upstream (values may be credentials).
    pub headers: Vec<(String, Secret)>,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    pub provider: usize,
    pub upstream_model: String,
    pub price: ModelPrice,
    /// Context window and output limit: configured, else built in (see
    /// [`known`]), else derived.
    pub limits: ModelLimits,
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
    pub metering: MeteringConfig,
    pub webhooks: WebhooksConfig,
    pub email: EmailConfig,
    /// The SMTP password (from `email.smtp_password_env`).
    pub email_password: Option<Secret>,
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
        let mut applied: Vec<(String, &str, &str)> = Vec::new();
        for (name, value) in overrides {
            if let Some(path) = name.strip_prefix("TOLLGATE_") {
                if path.contains("__") {
                    apply_override(&mut root, path, value, false)?;
                    applied.push((override_key(path), path, value));
                }
            }
        }
        // An override is read as TOML (a number, a bool) when it parses;
        // where the key wants text (`TOLLGATE_SERVER__LISTEN=4011`, a price),
        // it is taken as the text it was.
        let mut as_text: Vec<String> = Vec::new();
        let raw: RawConfig = loop {
            match serde_path_to_error::deserialize(root.clone()) {
                Ok(raw) => break raw,
                Err(error) => {
                    let key = error.path().to_string();
                    let retry = applied.iter().find(|(config_key, _, _)| {
                        *config_key == key && !as_text.contains(config_key)
                    });
                    match retry {
                        Some((config_key, path, value)) => {
                            apply_override(&mut root, path, value, true)?;
                            as_text.push(config_key.clone());
                        }
                        None => return Err(ConfigError::new(key, error.into_inner().to_string())),
                    }
                }
            }
        };
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
        if !self.email.public_url.is_empty() {
            self.email.public_url.trim_end_matches('/').to_string()
        } else if self.server.public_url.is_empty() {
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
    fn overrides_that_read_as_numbers_reach_text_keys() {
        let config = load(
            "",
            &[
                ("TOLLGATE_SERVER__LISTEN", "4011"),
                ("TOLLGATE_STORAGE__REDIS_OUTAGE_BUDGET_USD", "10"),
                ("TOLLGATE_SERVER__MAX_CONNECTIONS", "77"),
            ],
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:4011");
        assert_eq!(config.storage.redis_outage_budget_usd, "10");
        assert_eq!(config.server.max_connections, 77);
        let wrong = load("", &[("TOLLGATE_SERVER__MAX_CONNECTIONS", "many")]).unwrap_err();
        assert!(
            wrong.to_string().contains("server.max_connections"),
            "{wrong}"
        );
    }

    #[test]
    fn debug_output_keeps_secrets_out() {
        let config = load(
            "[server]\nadmin_token='tga-0123456789abcdef0123456789abcdef'\nmetrics_token='scrape-secret'\n[storage]\ndatabase_url='postgres://app:pg-secret@db:5432/t?password=q-secret'\nredis_url='redis://:redis-secret@cache:6379'\n[[providers]]\nname='openai'\nkind='openai'\napi_key_env='OPENAI_API_KEY'\nheaders={'x-extra-auth'='header-secret'}\n[[models]]\nname='gpt'\nprovider='openai'\ninput_usd_per_mtok='1'\noutput_usd_per_mtok='2'\n",
            &[],
        )
        .unwrap();
        let printed = format!("{config:?}");
        for secret in [
            "0123456789abcdef",
            "scrape-secret",
            "pg-secret",
            "q-secret",
            "redis-secret",
            "header-secret",
            "sk-test",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("postgres://app:***@db:5432/t"));
        // Every node of a list is redacted.
        let config = load(
            "[storage]\ndatabase_url='postgres://x@y/z'\nredis_url='redis://:one-secret@a:1,redis://:two-secret@b:2'\n",
            &[],
        )
        .unwrap();
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("one-secret") && !printed.contains("two-secret"),
            "{printed}"
        );
        assert!(load("[storage]\nredis_prefix='a{b}'\n", &[]).is_err());
        assert!(load("[storage]\nredis_url='memcache://x'\n", &[]).is_err());
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
        let text = include_str!("../../config/tollgate.example.toml");
        let config = Config::from_parts(text, &[], |_| Some("secret".to_string())).unwrap();
        assert_eq!(config.providers.len(), 4);
        assert!(config.model("claude-sonnet-4-5").is_some());
        // Every model it lists states its limits (the hold's bounds).
        let models = text.matches("\n[[models]]").count();
        assert_eq!(models, config.models.len());
        assert_eq!(text.matches("\ncontext_window = ").count(), models);
        assert_eq!(text.matches("\nmax_output_tokens = ").count(), models);
    }

    /// The example config states the defaults (a key set to anything else
    /// is commented out), and the README's stated defaults are the code's.
    #[test]
    fn the_example_config_and_the_readme_state_the_defaults() {
        let text = include_str!("../../config/tollgate.example.toml");
        let example = Config::from_parts(text, &[], |_| Some("secret".to_string())).unwrap();
        let default = load("", &[]).unwrap();
        assert_eq!(
            format!("{:?}", example.server),
            format!("{:?}", default.server)
        );
        assert_eq!(
            format!("{:?}", example.storage),
            format!("{:?}", default.storage)
        );
        assert_eq!(
            format!("{:?}", example.upstream),
            format!("{:?}", default.upstream)
        );
        assert_eq!(
            format!("{:?}", example.limits),
            format!("{:?}", default.limits)
        );
        assert_eq!(
            format!("{:?}", example.ledger),
            format!("{:?}", default.ledger)
        );
        assert_eq!(
            format!("{:?}", example.cache),
            format!("{:?}", default.cache)
        );
        assert_eq!(
            format!("{:?}", example.metering),
            format!("{:?}", default.metering)
        );
        assert_eq!(
            format!("{:?}", example.email),
            format!("{:?}", default.email)
        );
        let readme = include_str!("../../README.md");
        let server = &default.server;
        for stated in [
            format!(
                "`server.header_read_timeout_ms`\n({} s)",
                server.header_read_timeout_ms / 1000
            ),
            format!(
                "`server.idle_timeout_secs` ({} s)",
                server.idle_timeout_secs
            ),
            format!(
                "`server.body_read_timeout_ms` ({} s",
                server.body_read_timeout_ms / 1000
            ),
            format!(
                "`server.max_connections_per_ip` ({})",
                server.max_connections_per_ip
            ),
            format!(
                "${} per account per process per outage by default",
                default.storage.redis_outage_budget_usd
            ),
            format!(
                "`storage.redis_unavailable = \"{}\"` (the\ndefault)",
                default.storage.redis_unavailable
            ),
        ] {
            assert!(readme.contains(&stated), "README does not say {stated:?}");
        }
    }

    #[test]
    fn email_is_all_or_nothing_and_keeps_its_password_out_of_the_file() {
        let env = |var: &str| (var == "SMTP_PW").then(|| "pw".to_string());
        let base = "[server]\npublic_url = 'https://gw.example.com'\n[email]\nfrom = 'Tollgate <noreply@example.com>'\n";
        let ok = Config::from_parts(
            &format!(
                "{base}smtp_url = 'smtp://mailer@127.0.0.1:2525'\nsmtp_password_env = 'SMTP_PW'\n"
            ),
            &[],
            env,
        )
        .unwrap();
        assert_eq!(ok.email_password.as_ref().map(Secret::expose), Some("pw"));
        assert_eq!(ok.public_url(), "https://gw.example.com");
        for (text, key) in [
            ("smtp_url = 'http://x'\n", "email.smtp_url"),
            ("smtp_url = 'smtp://u:p@x:25'\n", "email.smtp_url"),
            ("smtp_url = 'smtp://'\n", "email.smtp_url"),
            (
                "smtp_url = 'smtp://x:25'\nsmtp_password_env = 'NOPE'\n",
                "email.smtp_password_env",
            ),
            (
                "smtp_url = 'smtp://x:25'\ninvitations_per_team_per_hour = 0\n",
                "email.invitations_per_team_per_hour",
            ),
        ] {
            let error = Config::from_parts(&format!("{base}{text}"), &[], env).unwrap_err();
            assert!(error.to_string().contains(key), "{text}: {error}");
        }
        let no_from = Config::from_parts(
            "[server]\npublic_url = 'https://gw.example.com'\n[email]\nsmtp_url = 'smtp://x:25'\nfrom = 'not an address'\n",
            &[],
            env,
        )
        .unwrap_err();
        assert!(no_from.to_string().contains("email.from"), "{no_from}");
        let no_public = Config::from_parts(
            "[email]\nsmtp_url = 'smtp://x:25'\nfrom = 'a@example.com'\n",
            &[],
            env,
        )
        .unwrap_err();
        assert!(
            no_public.to_string().contains("email.public_url"),
            "{no_public}"
        );
        // Unset: no email, nothing else asked for.
        let off = load("[email]\nfrom = 'whatever'\n", &[]).unwrap();
        assert!(off.email.smtp_url.is_empty() && off.email_password.is_none());
    }

    #[test]
    fn model_limits_come_from_config_then_the_table() {
        let config = load(
            "[[providers]]\nname='o'\nkind='openai'\napi_key='k'\n\
             [[models]]\nname='a'\nprovider='o'\nupstream_model='gpt-4o-mini'\ninput_usd_per_mtok='1'\noutput_usd_per_mtok='1'\n\
             [[models]]\nname='b'\nprovider='o'\nupstream_model='gpt-4o'\nmax_output_tokens=100\ninput_usd_per_mtok='1'\noutput_usd_per_mtok='1'\n\
             [[models]]\nname='c'\nprovider='o'\ncontext_window=32000\ninput_usd_per_mtok='1'\noutput_usd_per_mtok='1'\n\
             [[models]]\nname='d'\nprovider='o'\ninput_usd_per_mtok='1'\noutput_usd_per_mtok='1'\n",
            &[],
        )
        .unwrap();
        let limits = |name: &str| config.model(name).unwrap().limits;
        assert_eq!(limits("a").context_window, Some(128_000));
        assert_eq!(limits("a").max_output_tokens, 16_384);
        assert_eq!(limits("b").max_output_tokens, 100);
        assert_eq!(limits("c").max_output_tokens, 32_000);
        assert_eq!(limits("d").context_window, None);
        assert_eq!(limits("d").max_output_tokens, 128_000);
        let error = load(
            "[[providers]]\nname='m'\nkind='mock'\n[[models]]\nname='x'\nprovider='m'\ncontext_window=0\ninput_usd_per_mtok='1'\noutput_usd_per_mtok='1'\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(error.key, "models[0].context_window");
        let error = load("[storage]\ndatabase_url='postgres://x@y/z'\n", &[]).unwrap_err();
        assert_eq!(error.key, "storage.single_node");
        assert!(load(
            "[storage]\ndatabase_url='postgres://x@y/z'\nsingle_node=true\n",
            &[]
        )
        .is_ok());
        assert!(load(
            "[storage]\ndatabase_url='postgres://x@y/z'\nredis_url='redis://r'\n",
            &[]
        )
        .is_ok());
        let error = load("[metering]\non_client_disconnect='later'\n", &[]).unwrap_err();
        assert_eq!(error.key, "metering.on_client_disconnect");
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
