//! What serde reads from the TOML file, the `TOLLGATE_<SECTION>__<KEY>`
//! environment overrides applied to it, and the embedded default's mock.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Value;

use super::sections::EmailConfig;
use super::sections::{
    CacheConfig, LedgerConfig, LimitsConfig, MeteringConfig, ServerConfig, StorageConfig,
    UpstreamConfig, WebhooksConfig,
};
use super::ConfigError;

// === Raw (what serde reads) ===

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) server: ServerConfig,
    pub(super) storage: StorageConfig,
    pub(super) upstream: UpstreamConfig,
    pub(super) limits: LimitsConfig,
    pub(super) ledger: LedgerConfig,
    pub(super) cache: CacheConfig,
    pub(super) metering: MeteringConfig,
    pub(super) webhooks: WebhooksConfig,
    pub(super) email: EmailConfig,
    pub(super) providers: Vec<RawProvider>,
    pub(super) models: Vec<RawModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub(super) name: String,
    pub(super) kind: String,
    #[serde(default)]
    pub(super) base_url: Option<String>,
    #[serde(default)]
    pub(super) api_key: Option<String>,
    #[serde(default)]
    pub(super) api_key_env: Option<String>,
    #[serde(default)]
    pub(super) anthropic_version: Option<String>,
    #[serde(default)]
    pub(super) inject_stream_usage: Option<bool>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    pub(super) name: String,
    pub(super) provider: String,
    #[serde(default)]
    pub(super) upstream_model: Option<String>,
    pub(super) input_usd_per_mtok: PriceText,
    pub(super) output_usd_per_mtok: PriceText,
    #[serde(default)]
    pub(super) cached_input_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) cache_write_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) cache_write_1h_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) audio_input_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) audio_output_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) max_output_tokens: Option<u64>,
    #[serde(default)]
    pub(super) context_window: Option<u64>,
    #[serde(default)]
    pub(super) long_context: Option<RawLongContext>,
    #[serde(default)]
    pub(super) service_tiers: BTreeMap<String, RawRates>,
    #[serde(default)]
    pub(super) tool_fees: Option<RawToolFees>,
}

impl RawModel {
    /// The model's own prices as a rate set.
    pub(super) fn rates(&self) -> RawRates {
        RawRates {
            input_usd_per_mtok: Some(self.input_usd_per_mtok.clone()),
            output_usd_per_mtok: Some(self.output_usd_per_mtok.clone()),
            cached_input_usd_per_mtok: self.cached_input_usd_per_mtok.clone(),
            cache_write_usd_per_mtok: self.cache_write_usd_per_mtok.clone(),
            cache_write_1h_usd_per_mtok: self.cache_write_1h_usd_per_mtok.clone(),
            audio_input_usd_per_mtok: self.audio_input_usd_per_mtok.clone(),
            audio_output_usd_per_mtok: self.audio_output_usd_per_mtok.clone(),
        }
    }
}

/// A set of prices (`[models.service_tiers.<tier>]`; also the model's own).
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRates {
    #[serde(default)]
    pub(super) input_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) output_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) cached_input_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) cache_write_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) cache_write_1h_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) audio_input_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) audio_output_usd_per_mtok: Option<PriceText>,
}

/// `[models.long_context]`: its threshold and its prices.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLongContext {
    pub(super) above_input_tokens: u64,
    #[serde(default)]
    pub(super) input_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) output_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) cached_input_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) cache_write_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) cache_write_1h_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) audio_input_usd_per_mtok: Option<PriceText>,
    #[serde(default)]
    pub(super) audio_output_usd_per_mtok: Option<PriceText>,
}

impl RawLongContext {
    pub(super) fn rates(&self) -> RawRates {
        RawRates {
            input_usd_per_mtok: self.input_usd_per_mtok.clone(),
            output_usd_per_mtok: self.output_usd_per_mtok.clone(),
            cached_input_usd_per_mtok: self.cached_input_usd_per_mtok.clone(),
            cache_write_usd_per_mtok: self.cache_write_usd_per_mtok.clone(),
            cache_write_1h_usd_per_mtok: self.cache_write_1h_usd_per_mtok.clone(),
            audio_input_usd_per_mtok: self.audio_input_usd_per_mtok.clone(),
            audio_output_usd_per_mtok: self.audio_output_usd_per_mtok.clone(),
        }
    }
}

/// `[models.tool_fees]`: USD per server-side tool call.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToolFees {
    #[serde(default)]
    pub(super) web_search: Option<PriceText>,
    #[serde(default)]
    pub(super) web_fetch: Option<PriceText>,
    #[serde(default)]
    pub(super) code_execution: Option<PriceText>,
}

/// A price as written in TOML: a decimal string (preferred) or an integer.
/// Floats are refused: money is never a float.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum PriceText {
    Text(String),
    Integer(i64),
    Float(f64),
}

/// The config key an override path names, as serde reports paths
/// (`SERVER__LISTEN` → `server.listen`, `PROVIDERS__0__BASE_URL` →
/// `providers[0].base_url`).
pub(super) fn override_key(path: &str) -> String {
    let mut key = String::new();
    for part in path.split("__") {
        if part.parse::<usize>().is_ok() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(&part.to_ascii_lowercase());
        }
    }
    key
}

/// `TOLLGATE_SERVER__LISTEN=…` sets `server.listen`; `PROVIDERS__0__BASE_URL`
/// indexes arrays. Values are read as TOML when they parse (numbers, bools),
/// else taken as strings.
/// `as_text`: take the value as a string even if it reads as a number.
pub(super) fn apply_override(
    root: &mut Value,
    path: &str,
    value: &str,
    as_text: bool,
) -> Result<(), ConfigError> {
    let key_name = format!("TOLLGATE_{path}");
    let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
    let parsed = if as_text {
        Value::String(value.to_string())
    } else {
        toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| Value::String(value.to_string()))
    };
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

/// The embedded default's provider and models: the offline mock.
pub(super) fn builtin_mock() -> (Vec<RawProvider>, Vec<RawModel>) {
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
        cache_write_1h_usd_per_mtok: None,
        audio_input_usd_per_mtok: None,
        audio_output_usd_per_mtok: None,
        max_output_tokens: None,
        context_window: None,
        long_context: None,
        service_tiers: BTreeMap::new(),
        tool_fees: None,
    };
    (
        vec![provider],
        vec![
            model("mock-1", "1.00", "2.00"),
            model("mock-embed-1", "0.02", "0"),
        ],
    )
}
