//! Usage in complete JSON bodies, and the lenient wire shapes of each
//! protocol's usage object (shared with the stream meter).

use serde::Deserialize;

use super::{Protocol, Usage};

// === Wire shapes (lenient: every field optional, unknown fields ignored) ===

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub(super) struct OpenAiUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
    // Responses API names.
    input_tokens: u64,
    output_tokens: u64,
    input_tokens_details: Option<PromptDetails>,
    output_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct PromptDetails {
    cached_tokens: u64,
    cache_write_tokens: u64,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct CompletionDetails {
    reasoning_tokens: u64,
}

impl OpenAiUsage {
    /// Chat / completions / embeddings usage. Output is the larger of
    /// `completion_tokens` and `total - prompt`: Gemini's compatible endpoint
    /// leaves thinking tokens out of `completion_tokens` but not the total.
    pub(super) fn chat(&self) -> Usage {
        let details = self.prompt_tokens_details.as_ref();
        let output = self
            .completion_tokens
            .max(self.total_tokens.saturating_sub(self.prompt_tokens));
        Usage {
            input_tokens: self.prompt_tokens,
            cached_tokens: details.map_or(0, |d| d.cached_tokens),
            cache_write_tokens: details.map_or(0, |d| d.cache_write_tokens),
            output_tokens: output,
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .map_or(0, |d| d.reasoning_tokens),
        }
    }

    pub(super) fn responses(&self) -> Usage {
        let details = self.input_tokens_details.as_ref();
        Usage {
            input_tokens: self.input_tokens,
            cached_tokens: details.map_or(0, |d| d.cached_tokens),
            cache_write_tokens: details.map_or(0, |d| d.cache_write_tokens),
            output_tokens: self.output_tokens,
            reasoning_tokens: self
                .output_tokens_details
                .as_ref()
                .map_or(0, |d| d.reasoning_tokens),
        }
    }
}

#[derive(Deserialize, Default, Debug, Clone, Copy)]
#[serde(default)]
pub(super) struct AnthropicUsage {
    input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    output_tokens: Option<u64>,
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
    }

    pub(super) fn normalise(&self) -> Usage {
        let uncached = self.input_tokens.unwrap_or(0);
        let write = self.cache_creation_input_tokens.unwrap_or(0);
        let read = self.cache_read_input_tokens.unwrap_or(0);
        Usage {
            input_tokens: uncached + write + read,
            cached_tokens: read,
            cache_write_tokens: write,
            output_tokens: self.output_tokens.unwrap_or(0),
            reasoning_tokens: 0,
        }
    }
}

#[derive(Deserialize, Default, Debug)]
#[serde(default, rename_all = "camelCase")]
struct GeminiUsage {
    prompt_token_count: u64,
    candidates_token_count: u64,
    cached_content_token_count: u64,
    thoughts_token_count: u64,
}

impl GeminiUsage {
    fn normalise(&self) -> Usage {
        Usage {
            input_tokens: self.prompt_token_count,
            cached_tokens: self.cached_content_token_count,
            cache_write_tokens: 0,
            output_tokens: self.candidates_token_count + self.thoughts_token_count,
            reasoning_tokens: self.thoughts_token_count,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonBody<'a> {
    /// Kept as raw text and parsed once into the protocol's own shape
    /// (no `Value` tree per response).
    #[serde(borrow)]
    usage: Option<&'a serde_json::value::RawValue>,
    #[serde(rename = "usageMetadata")]
    usage_metadata: Option<GeminiUsage>,
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
    match protocol {
        Protocol::OpenAiChat | Protocol::OpenAiResponses => {
            let raw: OpenAiUsage = serde_json::from_str(usage).ok()?;
            // The Responses API names its fields differently; take whichever
            // set is present.
            if raw.input_tokens > 0 || raw.output_tokens > 0 {
                Some(raw.responses())
            } else {
                Some(raw.chat())
            }
        }
        Protocol::Anthropic => {
            let raw: AnthropicUsage = serde_json::from_str(usage).ok()?;
            Some(raw.normalise())
        }
    }
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
}
