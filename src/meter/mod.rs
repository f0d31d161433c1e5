//! Metering: the token usage of one response, from JSON or from a stream.
//!
//! Owns the normalised [`Usage`], the per-protocol extraction of usage from
//! upstream payloads, and the fallback estimate when usage is missing. It
//! never changes bytes: [`StreamMeter::on_event`] only *advises* dropping the
//! usage-only chunk that Tollgate itself asked for.
//!
//! Protocol facts (see `ARCHITECTURE.md`): OpenAI cached ⊂ prompt and
//! reasoning ⊂ completion; Anthropic `input_tokens` excludes cache reads and
//! writes; Anthropic streams carry cumulative usage (take the last, never
//! sum); Responses streams carry usage only on their terminal event.

use crate::domain::ServiceTier;

pub mod decode;
mod estimate;
pub mod sse;
mod stream;
mod usage;

pub use self::estimate::{count_tokens, estimate_prompt_tokens, quick_tokens, OutputTally};
pub use self::stream::{EventAction, StreamEnd, StreamMeter};
pub use self::usage::usage_from_json;

/// Where a usage figure came from; stored on every ledger row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    /// The upstream reported it.
    Exact,
    /// The upstream completed but reported nothing: counted with a tokenizer.
    Estimated,
    /// The response broke off (upstream error or client gone): what was
    /// generated up to that point, partly estimated.
    Partial,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Exact => "exact",
            UsageSource::Estimated => "estimated",
            UsageSource::Partial => "partial",
        }
    }
}

/// Normalised usage of one request: every part the provider bills.
///
/// `input_tokens` is every input token, cached or not (OpenAI's
/// `prompt_tokens`; Anthropic's `input_tokens + cache_read + cache_write`).
/// `cached_tokens`, `cache_write_tokens` (five-minute writes, or writes of
/// unstated duration), `cache_write_1h_tokens` and `audio_input_tokens` are
/// disjoint subsets of it; `reasoning_tokens` and `audio_output_tokens` are
/// subsets of `output_tokens`. Server-tool calls are counted by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub audio_input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub audio_output_tokens: u64,
    pub web_search_calls: u64,
    pub web_fetch_calls: u64,
    pub code_execution_calls: u64,
    pub service_tier: ServiceTier,
}

impl Usage {
    /// Input tokens billed at the plain (text) input rate.
    pub fn uncached_input(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cached_tokens)
            .saturating_sub(self.cache_write_tokens)
            .saturating_sub(self.cache_write_1h_tokens)
            .saturating_sub(self.audio_input_tokens)
    }

    /// Output tokens billed at the plain (text) output rate.
    pub fn text_output(&self) -> u64 {
        self.output_tokens.saturating_sub(self.audio_output_tokens)
    }
}

/// The wire protocol of a response body, which decides how usage is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `/v1/chat/completions` and `/v1/completions` (also Gemini's
    /// OpenAI-compatible endpoint) and `/v1/embeddings`.
    OpenAiChat,
    /// `/v1/responses`.
    OpenAiResponses,
    /// Anthropic `/v1/messages`.
    Anthropic,
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// No input makes the meter panic.
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            for protocol in [Protocol::OpenAiChat, Protocol::OpenAiResponses, Protocol::Anthropic] {
                let _ = usage_from_json(protocol, &body);
                let mut meter = StreamMeter::new(protocol, true);
                meter.feed(&body, |_, _| {});
                meter.finish();
                let _ = meter.conclude(true, Some(10), |_| 1);
            }
        }
    }
}
