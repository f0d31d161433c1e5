//! Validation: the raw file becomes a [`Config`], or an error naming the key.

use std::net::SocketAddr;

use crate::domain::ServiceTier;
use crate::money::{Money, PricePerMtok};
use crate::pricing::{LongContext, ModelPrice, Rates, ToolFees};

use super::known;
use super::raw::{builtin_mock, PriceText, RawConfig, RawRates};
use crate::bound::ModelLimits;

/// The built-in mock's facts: at most 16 words a reply, and an input count
/// of a quarter of the request's bytes.
const MOCK_MAX_OUTPUT_TOKENS: u64 = 16;
const MOCK_CONTEXT_WINDOW: u64 = 1_000_000;
use super::{Config, ConfigError, ModelConfig, ProviderConfig, ProviderKind, Secret};

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

/// A set of prices; `prefix` is the key of its table (`models[0].`).
fn parse_rates(prefix: &str, raw: &RawRates) -> Result<Rates, ConfigError> {
    let required = |field: &str, text: &Option<PriceText>| match text {
        Some(text) => parse_price(&format!("{prefix}{field}"), text),
        None => Err(ConfigError::new(format!("{prefix}{field}"), "is required")),
    };
    let optional = |field: &str, text: &Option<PriceText>| {
        text.as_ref()
            .map(|text| parse_price(&format!("{prefix}{field}"), text))
            .transpose()
    };
    Ok(Rates {
        input: required("input_usd_per_mtok", &raw.input_usd_per_mtok)?,
        output: required("output_usd_per_mtok", &raw.output_usd_per_mtok)?,
        cached_input: optional("cached_input_usd_per_mtok", &raw.cached_input_usd_per_mtok)?,
        cache_write: optional("cache_write_usd_per_mtok", &raw.cache_write_usd_per_mtok)?,
        cache_write_1h: optional(
            "cache_write_1h_usd_per_mtok",
            &raw.cache_write_1h_usd_per_mtok,
        )?,
        audio_input: optional("audio_input_usd_per_mtok", &raw.audio_input_usd_per_mtok)?,
        audio_output: optional("audio_output_usd_per_mtok", &raw.audio_output_usd_per_mtok)?,
    })
}

pub(super) fn validate(
    raw: RawConfig,
    lookup_env: &impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    // A bare port listens on the default host (127.0.0.1).
    let listen: SocketAddr = match raw.server.listen.trim().parse::<u16>() {
        Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        Err(_) => raw.server.listen.parse().map_err(|_| {
            ConfigError::new(
                "server.listen",
                format!(
                    "{:?} is not HOST:PORT (or a port: 4011 listens on 127.0.0.1:4011)",
                    raw.server.listen
                ),
            )
        })?,
    };
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
    let one_node = |u: &str| u.starts_with("redis://") || u.starts_with("rediss://");
    let cluster =
        redis_url.starts_with("redis+cluster://") || redis_url.starts_with("rediss+cluster://");
    if !(redis_url.is_empty() || cluster || redis_url.split(',').map(str::trim).all(one_node)) {
        return Err(ConfigError::new(
            "storage.redis_url",
            "must be empty, one redis:// (or rediss://) URL, a Redis Cluster as \
             redis+cluster://host:port,host:port, or several redis:// URLs separated by commas",
        ));
    }
    if raw.storage.redis_prefix.contains(['{', '}']) {
        return Err(ConfigError::new(
            "storage.redis_prefix",
            "must not contain { or }: keys are hash-tagged with the paying account for Redis Cluster",
        ));
    }
    let postgres = !url.starts_with("sqlite:");
    if postgres && redis_url.is_empty() && !raw.storage.single_node {
        return Err(ConfigError::new(
            "storage.single_node",
            "in-process counters (no storage.redis_url) with a Postgres that several gateway \
             processes may share would let each process enforce its own copy of every balance: \
             set storage.redis_url, or storage.single_node = true if this is the only process",
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
    if crate::money::Money::parse_usd_non_negative(&raw.storage.lease_usd).is_err() {
        return Err(ConfigError::new(
            "storage.lease_usd",
            "must be a non-negative decimal amount of USD (\"0\": no leases)",
        ));
    }
    if raw.storage.lease_ms == 0 || raw.storage.lease_ms > 60_000 {
        return Err(ConfigError::new(
            "storage.lease_ms",
            "must be from 1 to 60000 (a slice is used at most this long)",
        ));
    }
    if raw.limits.default_max_output_tokens == 0 {
        return Err(ConfigError::new(
            "limits.default_max_output_tokens",
            "must be above 0",
        ));
    }
    if raw.metering.drain_timeout_secs == 0 {
        return Err(ConfigError::new(
            "metering.drain_timeout_secs",
            "must be above 0",
        ));
    }
    if raw.metering.cancel_assumed_tokens_per_sec == 0 {
        return Err(ConfigError::new(
            "metering.cancel_assumed_tokens_per_sec",
            "must be above 0",
        ));
    }
    for (key, value, most) in [
        (
            "ledger.flush_interval_ms",
            raw.ledger.flush_interval_ms,
            60_000,
        ),
        (
            "ledger.write_timeout_ms",
            raw.ledger.write_timeout_ms,
            3_600_000,
        ),
        (
            "ledger.replay_interval_ms",
            raw.ledger.replay_interval_ms,
            3_600_000,
        ),
        (
            "ledger.retention_months",
            u64::from(raw.ledger.retention_months),
            1_200,
        ),
        (
            "metering.drain_timeout_secs",
            raw.metering.drain_timeout_secs,
            86_400,
        ),
    ] {
        if value > most {
            return Err(ConfigError::new(key, format!("must be at most {most}")));
        }
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
            headers.push((name, Secret::new(value)));
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
        let mut price = ModelPrice::simple(parse_rates(&key(""), &m.rates())?);
        if let Some(long) = &m.long_context {
            let prefix = key("long_context.");
            if long.above_input_tokens == 0 {
                return Err(ConfigError::new(
                    format!("{prefix}above_input_tokens"),
                    "must be above 0",
                ));
            }
            price.long_context = Some(LongContext {
                above_input_tokens: long.above_input_tokens,
                rates: parse_rates(&prefix, &long.rates())?,
            });
        }
        for (name, rates) in &m.service_tiers {
            let prefix = key(&format!("service_tiers.{name}."));
            let tier = ServiceTier::parse(name).map_err(|_| {
                ConfigError::new(
                    key(&format!("service_tiers.{name}")),
                    "is not a service tier: one of standard, priority, flex, scale, batch",
                )
            })?;
            price.tiers[tier.index()] = Some(parse_rates(&prefix, rates)?);
        }
        if let Some(fees) = &m.tool_fees {
            let fee = |field: &str, text: &Option<PriceText>| -> Result<Money, ConfigError> {
                let key = key(&format!("tool_fees.{field}"));
                match text {
                    None => Ok(Money::ZERO),
                    Some(PriceText::Text(text)) => Money::parse_usd_non_negative(text)
                        .map_err(|error| ConfigError::new(key, format!("{text:?} {error}"))),
                    Some(PriceText::Integer(value)) if *value >= 0 => {
                        Money::parse_usd_non_negative(&value.to_string())
                            .map_err(|error| ConfigError::new(key, error.to_string()))
                    }
                    Some(PriceText::Integer(_)) => Err(ConfigError::new(key, "must not be negative")),
                    Some(PriceText::Float(value)) => Err(ConfigError::new(
                        key,
                        format!("write {value} as a decimal string (\"{value}\"): money is never a float"),
                    )),
                }
            };
            price.tool_fees = ToolFees {
                web_search: fee("web_search", &fees.web_search)?,
                web_fetch: fee("web_fetch", &fees.web_fetch)?,
                code_execution: fee("code_execution", &fees.code_execution)?,
            };
        }
        for (field, value) in [
            ("max_output_tokens", m.max_output_tokens),
            ("context_window", m.context_window),
        ] {
            if value == Some(0) {
                return Err(ConfigError::new(key(field), "must be above 0"));
            }
        }
        let upstream_model = m.upstream_model.unwrap_or_else(|| m.name.clone());
        let known = known::lookup(&upstream_model).or_else(|| known::lookup(&m.name));
        let mock = providers[provider].kind == ProviderKind::Mock;
        let context_window = m
            .context_window
            .or(known.map(|k| k.context_window))
            .or(mock.then_some(MOCK_CONTEXT_WINDOW));
        let max_output_tokens = m
            .max_output_tokens
            .or(known.map(|k| k.max_output_tokens))
            .or(mock.then_some(MOCK_MAX_OUTPUT_TOKENS))
            .or(context_window)
            .unwrap_or(raw.limits.default_max_output_tokens);
        models.push(ModelConfig {
            upstream_model,
            name: m.name,
            provider,
            price,
            limits: ModelLimits {
                context_window,
                max_output_tokens,
            },
        });
    }

    let email_password = validate_email(&raw.email, &raw.server.public_url, lookup_env)?;

    Ok(Config {
        listen,
        server: raw.server,
        storage: raw.storage,
        upstream: raw.upstream,
        limits: raw.limits,
        ledger: raw.ledger,
        cache: raw.cache,
        metering: raw.metering,
        webhooks: raw.webhooks,
        email: raw.email,
        email_password,
        providers,
        models,
    })
}

/// `[email]`: all or nothing. With `smtp_url` set, `from` must be an
/// address and the links need a public base; the password comes only from
/// the environment. Returns the password.
fn validate_email(
    email: &super::EmailConfig,
    server_public_url: &str,
    lookup_env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    if email.smtp_url.is_empty() {
        return Ok(None);
    }
    let url = email.smtp_url.as_str();
    let rest = url
        .strip_prefix("smtp://")
        .or_else(|| url.strip_prefix("smtps://"))
        .ok_or_else(|| {
            ConfigError::new(
                "email.smtp_url",
                format!("{url:?} must start with smtp:// or smtps://"),
            )
        })?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if userinfo.contains(':') {
            return Err(ConfigError::new(
                "email.smtp_url",
                "holds a password: put the user name in the URL (smtp://user@host) and the \
                 password in the environment variable named by email.smtp_password_env",
            ));
        }
    }
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || host.starts_with(':') {
        return Err(ConfigError::new(
            "email.smtp_url",
            format!("{url:?} names no host"),
        ));
    }
    if lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url).is_err() {
        return Err(ConfigError::new(
            "email.smtp_url",
            format!("{url:?} is not an SMTP URL (smtp://host:port, smtps://host:port, smtp://user@host:port?tls=required)"),
        ));
    }
    if !email.tls_ca_file.is_empty() {
        if super::SmtpTls::of(url).is_none() {
            return Err(ConfigError::new(
                "email.tls_ca_file",
                "trusts a CA for TLS, but the URL asks for none: use smtps://, or smtp://…?tls=required",
            ));
        }
        let pem = std::fs::read(&email.tls_ca_file).map_err(|error| {
            ConfigError::new(
                "email.tls_ca_file",
                format!("cannot read {:?}: {error}", email.tls_ca_file),
            )
        })?;
        if lettre::transport::smtp::client::Certificate::from_pem(&pem).is_err() {
            return Err(ConfigError::new(
                "email.tls_ca_file",
                format!("{:?} holds no PEM certificate", email.tls_ca_file),
            ));
        }
    }
    if email.from.parse::<lettre::message::Mailbox>().is_err() {
        return Err(ConfigError::new(
            "email.from",
            format!(
                "{:?} is not an address (name@example.com or \"Tollgate <name@example.com>\")",
                email.from
            ),
        ));
    }
    let public = if email.public_url.is_empty() {
        server_public_url
    } else {
        email.public_url.as_str()
    };
    let ok = public
        .parse::<http::Uri>()
        .map(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
        .unwrap_or(false);
    if !ok {
        return Err(ConfigError::new(
            "email.public_url",
            "mail carries links: set email.public_url (or server.public_url) to the \
             gateway's http(s) address as people reach it",
        ));
    }
    if email.invitations_per_team_per_hour == 0 {
        return Err(ConfigError::new(
            "email.invitations_per_team_per_hour",
            "must be above 0 (invitations are mailed only with email on)",
        ));
    }
    if email.retry_max_secs == 0 {
        return Err(ConfigError::new("email.retry_max_secs", "must be above 0"));
    }
    if email.smtp_password_env.is_empty() {
        return Ok(None);
    }
    match lookup_env(&email.smtp_password_env) {
        Some(value) if !value.is_empty() => Ok(Some(Secret::new(value))),
        _ => Err(ConfigError::new(
            "email.smtp_password_env",
            format!(
                "environment variable {} is not set",
                email.smtp_password_env
            ),
        )),
    }
}
