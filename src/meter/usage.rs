//! Usage in complete JSON bodies, and the lenient wire shapes of each
//! protocol's usage object (shared with the stream meter).
//!
//! Every field may be absent, `null`, a float or a numeric string (some
//! OpenAI-compatible servers and proxies send them so): each reads as the
//! count a lenient reader would see, `null` and absent as nothing. One odd
//! field never makes the whole usage unreadable.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{Protocol, Usage};
use crate::domain::ServiceTier;

// === Lenient fields ===

/// A count as leniently as it can be read: `None` for absent, `null`, or
/// a value no reader would take as a count.
fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    deserializer.deserialize_any(CountVisitor)
}

struct CountVisitor;

/// The key under which serde_json's `arbitrary_precision` (enabled in this
/// build) passes a float or a wide integer.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

fn from_f64(value: f64) -> Option<u64> {
    if value.is_nan() {
        None
    } else if value <= 0.0 {
        Some(0)
    } else if value >= u64::MAX as f64 {
        Some(u64::MAX)
    } else {
        Some(value.round() as u64)
    }
}

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a token count")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Option<u64>, E> {
        Ok(Some(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Option<u64>, E> {
        Ok(Some(value.max(0) as u64))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Option<u64>, E> {
        Ok(from_f64(value))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Option<u64>, E> {
        Ok(text.trim().parse::<f64>().ok().and_then(from_f64))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(CountVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<u64>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
        let mut count = None;
        let mut first = true;
        while let Some(key) = map.next_key::<std::borrow::Cow<'_, str>>()? {
            if first && key == NUMBER_TOKEN {
                let text: std::borrow::Cow<'_, str> = map.next_value()?;
                count = text.parse::<f64>().ok().and_then(from_f64);
            } else {
                map.next_value::<IgnoredAny>()?;
                count = None;
            }
            first = false;
        }
        Ok(count)
    }
}

/// An object that may be `null` or of the wrong type: read as absent.
fn object<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(match value {
        serde_json::Value::Object(_) => T::deserialize(value).ok(),
        _ => None,
    })
}

/// A service tier name; anything else is the standard tier.
pub(super) fn tier<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<ServiceTier>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(value.as_str().map(ServiceTier::from_upstream))
}

// === OpenAI (chat, completions, embeddings, Responses) ===

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub(super) struct OpenAiUsage {
    #[serde(deserialize_with = "count")]
    prompt_tokens: Option<u64>,
    #[serde(deserialize_with = "count")]
    completion_tokens: Option<u64>,
    #[serde(deserialize_with = "count")]
    total_tokens: Option<u64>,
    #[serde(deserialize_with = "object")]
    prompt_tokens_details: Option<InputDetails>,
    #[serde(deserialize_with = "object")]
    completion_tokens_details: Option<OutputDetails>,
    // Responses API names.
    #[serde(deserialize_with = "count")]
    input_tokens: Option<u64>,
    #[serde(deserialize_with = "count")]
    output_tokens: Option<u64>,
    #[serde(deserialize_with = "object")]
    input_tokens_details: Option<InputDetails>,
    #[serde(deserialize_with = "object")]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct InputDetails {
    #[serde(deserialize_with = "count")]
    cached_tokens: Option<u64>,
    #[serde(deserialize_with = "count")]
    cache_write_tokens: Option<u64>,
    #[serde(deserialize_with = "count")]
    audio_tokens: Option<u64>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct OutputDetails {
    #[serde(deserialize_with = "count")]
    reasoning_tokens: Option<u64>,
    #[serde(deserialize_with = "count")]
    audio_tokens: Option<u64>,
}

impl OpenAiUsage {
    /// Whether the Responses API's names are the ones present.
    pub(super) fn is_responses(&self) -> bool {
        self.input_tokens.is_some() || self.output_tokens.is_some()
    }

    /// Chat / completions / embeddings usage. Output is the larger of
    /// `completion_tokens` and `total - prompt`: Gemini's compatible endpoint
    /// leaves thinking tokens out of `completion_tokens` but not the total.
    pub(super) fn chat(&self) -> Usage {
        let prompt = self.prompt_tokens.unwrap_or(0);
        let output = self
            .completion_tokens
            .unwrap_or(0)
            .max(self.total_tokens.unwrap_or(0).saturating_sub(prompt));
        parts(
            prompt,
            output,
            self.prompt_tokens_details.as_ref(),
            self.completion_tokens_details.as_ref(),
        )
    }

    pub(super) fn responses(&self) -> Usage {
        parts(
            self.input_tokens.unwrap_or(0),
            self.output_tokens.unwrap_or(0),
            self.input_tokens_details.as_ref(),
            self.output_tokens_details.as_ref(),
        )
    }

    /// Whichever set of names is present.
    pub(super) fn either(&self) -> Usage {
        if self.is_responses() {
            self.responses()
        } else {
            self.chat()
        }
    }
}

fn parts(
    input: u64,
    output: u64,
    input_details: Option<&InputDetails>,
    output_details: Option<&OutputDetails>,
) -> Usage {
    let detail =
        |d: Option<&InputDetails>, f: fn(&InputDetails) -> Option<u64>| d.and_then(f).unwrap_or(0);
    let out = |d: Option<&OutputDetails>, f: fn(&OutputDetails) -> Option<u64>| {
        d.and_then(f).unwrap_or(0)
    };
    Usage {
        input_tokens: input,
        cached_tokens: detail(input_details, |d| d.cached_tokens),
        cache_write_tokens: detail(input_details, |d| d.cache_write_tokens),
        audio_input_tokens: detail(input_details, |d| d.audio_tokens),
        output_tokens: output,
        reasoning_tokens: out(output_details, |d| d.reasoning_tokens),
        audio_output_tokens: out(output_details, |d| d.audio_tokens),
        ..Usage::default()
    }
}

// === Anthropic ===

#[derive(Deserialize, Default, Debug, Clone, Copy)]
#[serde(default)]
pub(super) struct AnthropicUsage {
    #[serde(deserialize_with = "count")]
    input_tokens: Option<u64>,
    #[serde(deserialize_with = "count")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(deserialize_with = "count")]
    cache_read_input_tokens: Option<u64>,
    #[serde(deserialize_with = "count")]
    output_tokens: Option<u64>,
    #[serde(deserialize_with = "object")]
    cache_creation: Option<CacheCreation>,
    #[serde(deserialize_with = "object")]
    server_tool_use: Option<ServerToolUse>,
    #[serde(deserialize_with = "tier")]
    service_tier: Option<ServiceTier>,
}

#[derive(Deserialize, Default, Debug, Clone, Copy)]
#[serde(default)]
struct CacheCreation {
    #[serde(deserialize_with = "count")]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(deserialize_with = "count")]
    ephemeral_1h_input_tokens: Option<u64>,
}

#[derive(Deserialize, Default, Debug, Clone, Copy)]
#[serde(default)]
struct ServerToolUse {
    #[serde(deserialize_with = "count")]
    web_search_requests: Option<u64>,
    #[serde(deserialize_with = "count")]
    web_fetch_requests: Option<u64>,
    #[serde(deserialize_with = "count")]
    code_execution_requests: Option<u64>,
}

impl AnthropicUsage {
    /// Later figures win field by field: `message_delta` usage is cumulative
    /// and may repeat or omit the input counts.
    pub(super) fn merge(&mut self, later: AnthropicUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation = later.cache_creation.or(self.cache_creation);
        self.server_tool_use = later.server_tool_use.or(self.server_tool_use);
        self.service_tier = later.service_tier.or(self.service_tier);
    }

    pub(super) fn normalise(&self) -> Usage {
        let uncached = self.input_tokens.unwrap_or(0);
        let read = self.cache_read_input_tokens.unwrap_or(0);
        // The split by duration when given; else the one total (never both).
        let (write_5m, write_1h) = match self.cache_creation {
            Some(split) => (
                split.ephemeral_5m_input_tokens.unwrap_or(0),
                split.ephemeral_1h_input_tokens.unwrap_or(0),
            ),
            None => (self.cache_creation_input_tokens.unwrap_or(0), 0),
        };
        let tools = self.server_tool_use.unwrap_or_default();
        Usage {
            // Saturating: an upstream's absurd counts must not wrap round
            // to a small bill.
            input_tokens: uncached
                .saturating_add(write_5m)
                .saturating_add(write_1h)
                .saturating_add(read),
            cached_tokens: read,
            cache_write_tokens: write_5m,
            cache_write_1h_tokens: write_1h,
            output_tokens: self.output_tokens.unwrap_or(0),
            web_search_calls: tools.web_search_requests.unwrap_or(0),
            web_fetch_calls: tools.web_fetch_requests.unwrap_or(0),
            code_execution_calls: tools.code_execution_requests.unwrap_or(0),
            service_tier: self.service_tier.unwrap_or_default(),
            ..Usage::default()
        }
    }
}

// === Gemini (native `usageMetadata`) ===

#[derive(Deserialize, Default, Debug)]
#[serde(default, rename_all = "camelCase")]
struct GeminiUsage {
    #[serde(deserialize_with = "count")]
    prompt_token_count: Option<u64>,
    #[serde(deserialize_with = "count")]
    candidates_token_count: Option<u64>,
    #[serde(deserialize_with = "count")]
    cached_content_token_count: Option<u64>,
    #[serde(deserialize_with = "count")]
    thoughts_token_count: Option<u64>,
    #[serde(deserialize_with = "count")]
    tool_use_prompt_token_count: Option<u64>,
    prompt_tokens_details: Option<Vec<GeminiModality>>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct GeminiModality {
    modality: Option<String>,
    #[serde(rename = "tokenCount", deserialize_with = "count")]
    token_count: Option<u64>,
}

impl GeminiUsage {
    fn normalise(&self) -> Usage {
        let thoughts = self.thoughts_token_count.unwrap_or(0);
        let audio = self
            .prompt_tokens_details
            .iter()
            .flatten()
            .filter(|d| d.modality.as_deref() == Some("AUDIO"))
            .filter_map(|d| d.token_count)
            .fold(0u64, u64::saturating_add);
        Usage {
            input_tokens: self
                .prompt_token_count
                .unwrap_or(0)
                .saturating_add(self.tool_use_prompt_token_count.unwrap_or(0)),
            cached_tokens: self.cached_content_token_count.unwrap_or(0),
            audio_input_tokens: audio,
            output_tokens: self
                .candidates_token_count
                .unwrap_or(0)
                .saturating_add(thoughts),
            reasoning_tokens: thoughts,
            ..Usage::default()
        }
    }
}

// === Whole bodies ===

/// Server-tool calls among a Responses answer's `output` items: only each
/// item's `type` is read; anything that is not a list of objects counts 0.
pub(super) fn web_search_calls<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<u64, D::Error> {
    deserializer.deserialize_any(ItemsVisitor)
}

struct ItemsVisitor;

impl<'de> Visitor<'de> for ItemsVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("output items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut calls = 0;
        while let Some(is_call) = seq.next_element::<ItemKind>()? {
            calls += u64::from(is_call.0);
        }
        Ok(calls)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(0)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }
}

/// Whether one output item is a `web_search_call`.
struct ItemKind(bool);

impl<'de> Deserialize<'de> for ItemKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ItemKind, D::Error> {
        struct KindVisitor;
        impl<'de> Visitor<'de> for KindVisitor {
            type Value = ItemKind;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an output item")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ItemKind, A::Error> {
                let mut call = false;
                while let Some(key) = map.next_key::<std::borrow::Cow<'_, str>>()? {
                    if key == "type" {
                        let kind: serde_json::Value = map.next_value()?;
                        call = kind == "web_search_call";
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(ItemKind(call))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ItemKind, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ItemKind(false))
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<ItemKind, E> {
                Ok(ItemKind(false))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<ItemKind, E> {
                Ok(ItemKind(false))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<ItemKind, E> {
                Ok(ItemKind(false))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<ItemKind, E> {
                Ok(ItemKind(false))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<ItemKind, E> {
                Ok(ItemKind(false))
            }

            fn visit_unit<E: de::Error>(self) -> Result<ItemKind, E> {
                Ok(ItemKind(false))
            }
        }
        deserializer.deserialize_any(KindVisitor)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonBody<'a> {
    /// Kept as raw text and parsed once into the protocol's own shape
    /// (no `Value` tree per response).
    #[serde(borrow)]
    usage: Option<&'a serde_json::value::RawValue>,
    #[serde(rename = "usageMetadata", deserialize_with = "object")]
    usage_metadata: Option<GeminiUsage>,
    #[serde(deserialize_with = "tier")]
    service_tier: Option<ServiceTier>,
    /// `web_search_call` items of a Responses `output`.
    #[serde(rename = "output", deserialize_with = "web_search_calls")]
    web_search_calls: u64,
}

/// Reads usage from a complete (non-streamed) JSON response body.
pub fn usage_from_json(protocol: Protocol, body: &[u8]) -> Option<Usage> {
    // Only an object can carry usage (serde would read an array positionally).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let parsed: JsonBody = serde_json::from_slice(body).ok()?;
    if let Some(gemini) = parsed.usage_metadata {
        return Some(gemini.normalise());
    }
    let usage = parsed.usage.filter(|u| u.get() != "null")?.get();
    let mut usage = match protocol {
        Protocol::OpenAiChat | Protocol::OpenAiResponses => {
            let raw: OpenAiUsage = serde_json::from_str(usage).ok()?;
            raw.either()
        }
        Protocol::Anthropic => {
            let raw: AnthropicUsage = serde_json::from_str(usage).ok()?;
            raw.normalise()
        }
    };
    if let Some(tier) = parsed.service_tier {
        usage.service_tier = tier;
    }
    usage.web_search_calls = usage.web_search_calls.max(parsed.web_search_calls);
    Some(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemini_compat_output_includes_thinking() {
        let body = br#"{"usage":{"prompt_tokens":10,"completion_tokens":4,"total_tokens":20}}"#;
        let usage = usage_from_json(Protocol::OpenAiChat, body).unwrap();
        assert_eq!(usage.output_tokens, 10);
    }

    #[test]
    fn nulls_and_odd_values_are_read_leniently() {
        let body =
            br#"{"usage":{"prompt_tokens":20000,"completion_tokens":"35","total_tokens":null,
            "prompt_tokens_details":{"cached_tokens":null,"audio_tokens":null},
            "completion_tokens_details":null}}"#;
        let usage = usage_from_json(Protocol::OpenAiChat, body).unwrap();
        assert_eq!(
            (usage.input_tokens, usage.cached_tokens, usage.output_tokens),
            (20_000, 0, 35)
        );
        let body = br#"{"usage":{"prompt_tokens":12.0,"completion_tokens":3,"prompt_tokens_details":"n/a"}}"#;
        let usage = usage_from_json(Protocol::OpenAiChat, body).unwrap();
        assert_eq!((usage.input_tokens, usage.output_tokens), (12, 3));
    }

    #[test]
    fn anthropic_splits_cache_writes_by_duration() {
        let body = br#"{"usage":{"input_tokens":6,"cache_creation_input_tokens":100000,"cache_read_input_tokens":0,
            "cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":100000},
            "output_tokens":10,"server_tool_use":{"web_search_requests":5},"service_tier":"priority"}}"#;
        let usage = usage_from_json(Protocol::Anthropic, body).unwrap();
        assert_eq!(usage.input_tokens, 100_006);
        assert_eq!(
            (usage.cache_write_tokens, usage.cache_write_1h_tokens),
            (0, 100_000)
        );
        assert_eq!(usage.web_search_calls, 5);
        assert_eq!(usage.service_tier, ServiceTier::Priority);
        let body = br#"{"usage":{"input_tokens":6,"cache_creation_input_tokens":100,"output_tokens":1,"cache_creation":null}}"#;
        let usage = usage_from_json(Protocol::Anthropic, body).unwrap();
        assert_eq!(
            (usage.cache_write_tokens, usage.cache_write_1h_tokens),
            (100, 0)
        );
    }

    #[test]
    fn openai_tier_audio_and_web_search_calls() {
        let body = br#"{"service_tier":"priority","output":[{"type":"web_search_call"},{"type":"web_search_call"},{"type":"message"}],
            "usage":{"input_tokens":100,"output_tokens":20,"input_tokens_details":{"cached_tokens":10},"output_tokens_details":{"reasoning_tokens":5}}}"#;
        let usage = usage_from_json(Protocol::OpenAiResponses, body).unwrap();
        assert_eq!(usage.service_tier, ServiceTier::Priority);
        assert_eq!(usage.web_search_calls, 2);
        assert_eq!(
            (
                usage.input_tokens,
                usage.cached_tokens,
                usage.reasoning_tokens
            ),
            (100, 10, 5)
        );
        let body = br#"{"service_tier":"default","usage":{"prompt_tokens":100,"completion_tokens":50,
            "prompt_tokens_details":{"audio_tokens":60},"completion_tokens_details":{"audio_tokens":40}}}"#;
        let usage = usage_from_json(Protocol::OpenAiChat, body).unwrap();
        assert_eq!(usage.service_tier, ServiceTier::Standard);
        assert_eq!(
            (usage.audio_input_tokens, usage.audio_output_tokens),
            (60, 40)
        );
    }
}
