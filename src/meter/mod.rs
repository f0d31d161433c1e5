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

pub mod sse;

use serde::Deserialize;
use serde_json::Value;

use self::sse::{SseEvent, SseParser};

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

/// Normalised token counts of one request.
///
/// `input_tokens` is every input token, cached or not (OpenAI's
/// `prompt_tokens`; Anthropic's `input_tokens + cache_read + cache_write`).
/// `cached_tokens` and `cache_write_tokens` are subsets of it;
/// `reasoning_tokens` is a subset of `output_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Input tokens billed at the plain input rate.
    pub fn uncached_input(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cached_tokens)
            .saturating_sub(self.cache_write_tokens)
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

// === Wire shapes (lenient: every field optional, unknown fields ignored) ===

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct OpenAiUsage {
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
    fn chat(&self) -> Usage {
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

    fn responses(&self) -> Usage {
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
struct AnthropicUsage {
    input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Later figures win field by field: `message_delta` usage is cumulative
    /// and may repeat or omit the input counts.
    fn merge(&mut self, later: AnthropicUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
    }

    fn normalise(&self) -> Usage {
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

// === Streams ===

/// What the forwarder should do with the event just metered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAction {
    Forward,
    /// The usage-only chunk Tollgate asked for on the client's behalf.
    Drop,
}

/// How a stream ended, as far as the meter could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamEnd {
    /// Still open, or it stopped without a terminal marker.
    #[default]
    Open,
    /// The protocol's normal end (`[DONE]`, `message_stop`, `response.completed`).
    Completed,
    /// The upstream sent an error event.
    Errored,
}

/// Text and output seen so far, kept for the fallback estimate. Bounded: past
/// `TEXT_KEEP_BYTES` only the character count grows.
#[derive(Debug, Default)]
pub struct OutputTally {
    text: String,
    overflow_chars: u64,
}

const TEXT_KEEP_BYTES: usize = 64 * 1024;

impl OutputTally {
    pub fn push(&mut self, piece: &str) {
        if self.text.len() + piece.len() <= TEXT_KEEP_BYTES {
            self.text.push_str(piece);
        } else {
            self.overflow_chars += piece.chars().count() as u64;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.overflow_chars == 0
    }

    /// Tokens of the output seen, counted with the o200k tokenizer (overflow
    /// past the kept text at four characters a token).
    pub fn estimate_tokens(&self) -> u64 {
        count_tokens(&self.text) + self.overflow_chars.div_ceil(4)
    }

    /// Tokens of the output seen, by `quick_tokens` (no tokenizer).
    pub fn quick_tokens(&self) -> u64 {
        quick_tokens(&self.text) + self.overflow_chars.div_ceil(4)
    }
}

/// Meters one event stream as it passes.
#[derive(Debug)]
pub struct StreamMeter {
    protocol: Protocol,
    parser: SseParser,
    /// Drop the usage-only chunk: the client did not ask for it.
    strip_usage_chunk: bool,
    openai_usage: Option<Usage>,
    anthropic_usage: Option<AnthropicUsage>,
    output: OutputTally,
    end: StreamEnd,
}

#[derive(Deserialize)]
struct ChatChunk {
    #[serde(default)]
    choices: Option<Vec<ChatChoice>>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ChatChoice {
    #[serde(default)]
    delta: Option<ChatDelta>,
    /// Legacy completions stream text here.
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct ChatDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct TypedEvent {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    response: Option<ResponseObject>,
    #[serde(default)]
    delta: Option<Value>,
    #[serde(default)]
    message: Option<AnthropicMessage>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

impl TypedEvent {
    /// The event's `type`, else its SSE `event:` name.
    fn kind_or<'a>(&'a self, event_name: &'a str) -> &'a str {
        if self.kind.is_empty() {
            event_name
        } else {
            &self.kind
        }
    }
}

#[derive(Deserialize)]
struct ResponseObject {
    #[serde(default)]
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
struct AnthropicMessage {
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

impl StreamMeter {
    pub fn new(protocol: Protocol, strip_usage_chunk: bool) -> StreamMeter {
        StreamMeter {
            protocol,
            parser: SseParser::default(),
            strip_usage_chunk,
            openai_usage: None,
            anthropic_usage: None,
            output: OutputTally::default(),
            end: StreamEnd::Open,
        }
    }

    /// Feeds one read; `on_event` gets each completed event's advice and the
    /// offset in `chunk` where that event ended.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(EventAction, usize)) {
        let mut parser = std::mem::take(&mut self.parser);
        parser.feed(chunk, |event, end| {
            let action = self.on_event(event);
            on_event(action, end);
        });
        self.parser = parser;
    }

    /// The stream ended (EOF): meters a last unterminated event.
    pub fn finish(&mut self) {
        let mut parser = std::mem::take(&mut self.parser);
        parser.finish(|event| {
            self.on_event(event);
        });
        self.parser = parser;
    }

    pub fn end(&self) -> StreamEnd {
        self.end
    }

    /// Exact usage if the upstream reported any.
    pub fn reported_usage(&self) -> Option<Usage> {
        match self.protocol {
            Protocol::Anthropic => self.anthropic_usage.map(|u| u.normalise()),
            _ => self.openai_usage,
        }
    }

    pub fn output(&self) -> &OutputTally {
        &self.output
    }

    fn on_event(&mut self, event: SseEvent<'_>) -> EventAction {
        match self.protocol {
            Protocol::OpenAiChat => self.on_chat_event(event),
            Protocol::OpenAiResponses => {
                self.on_responses_event(event);
                EventAction::Forward
            }
            Protocol::Anthropic => {
                self.on_anthropic_event(event);
                EventAction::Forward
            }
        }
    }

    fn on_chat_event(&mut self, event: SseEvent<'_>) -> EventAction {
        let data = event.data.trim();
        if data == "[DONE]" {
            if self.end == StreamEnd::Open {
                self.end = StreamEnd::Completed;
            }
            return EventAction::Forward;
        }
        let Ok(chunk) = serde_json::from_str::<ChatChunk>(data) else {
            return EventAction::Forward;
        };
        if chunk.error.is_some() {
            self.end = StreamEnd::Errored;
            return EventAction::Forward;
        }
        let no_choices = chunk.choices.as_ref().is_none_or(|c| c.is_empty());
        for choice in chunk.choices.iter().flatten() {
            if let Some(text) = &choice.text {
                self.output.push(text);
            }
            if let Some(delta) = &choice.delta {
                if let Some(content) = &delta.content {
                    self.output.push(content);
                }
                if let Some(reasoning) = &delta.reasoning_content {
                    self.output.push(reasoning);
                }
                for call in delta.tool_calls.iter().flatten() {
                    if let Some(arguments) =
                        call.function.as_ref().and_then(|f| f.arguments.as_ref())
                    {
                        self.output.push(arguments);
                    }
                }
            }
        }
        if let Some(usage) = chunk.usage {
            // The last usage wins: some servers repeat it on several chunks.
            self.openai_usage = Some(usage.chat());
            if self.strip_usage_chunk && no_choices {
                return EventAction::Drop;
            }
        }
        EventAction::Forward
    }

    fn on_responses_event(&mut self, event: SseEvent<'_>) {
        let Ok(parsed) = serde_json::from_str::<TypedEvent>(event.data) else {
            return;
        };
        let kind = parsed.kind_or(event.event);
        match kind {
            "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(usage) = parsed.response.as_ref().and_then(|r| r.usage.as_ref()) {
                    self.openai_usage = Some(usage.responses());
                }
                self.end = if kind == "response.failed" {
                    StreamEnd::Errored
                } else {
                    StreamEnd::Completed
                };
            }
            "error" => self.end = StreamEnd::Errored,
            kind if kind.ends_with(".delta") => {
                if let Some(Value::String(text)) = &parsed.delta {
                    self.output.push(text);
                }
            }
            _ => {}
        }
    }

    fn on_anthropic_event(&mut self, event: SseEvent<'_>) {
        let Ok(parsed) = serde_json::from_str::<TypedEvent>(event.data) else {
            return;
        };
        let kind = parsed.kind_or(event.event);
        match kind {
            "message_start" => {
                if let Some(usage) = parsed.message.and_then(|m| m.usage) {
                    self.anthropic_usage = Some(usage);
                }
            }
            "message_delta" => {
                if let Some(usage) = parsed.usage {
                    let mut merged = self.anthropic_usage.unwrap_or_default();
                    merged.merge(usage);
                    self.anthropic_usage = Some(merged);
                }
            }
            "content_block_delta" => {
                if let Some(delta) = &parsed.delta {
                    for field in ["text", "partial_json", "thinking"] {
                        if let Some(Value::String(text)) = delta.get(field) {
                            self.output.push(text);
                        }
                    }
                }
            }
            "message_stop" if self.end == StreamEnd::Open => self.end = StreamEnd::Completed,
            "error" => self.end = StreamEnd::Errored,
            _ => {}
        }
    }

    /// The stream's final usage and where it came from. `broken` is true when
    /// the stream did not reach its normal end (client gone, upstream cut).
    /// `prompt_estimate(quick)` is called only when the upstream gave no
    /// input count; `quick` asks for the tokenizer-free estimate, used for
    /// partial streams so that client disconnects never load the tokenizer.
    pub fn conclude(
        &self,
        broken: bool,
        max_output_tokens: Option<u64>,
        prompt_estimate: impl FnOnce(bool) -> u64,
    ) -> (Usage, UsageSource) {
        let completed = self.end == StreamEnd::Completed && !broken;
        let reported = self.reported_usage();
        // Anthropic's `message_start` reports input up front, with a
        // placeholder output; only a final `message_delta` makes it whole.
        let anthropic_final = self.protocol != Protocol::Anthropic || completed;
        match reported {
            Some(usage) if completed && anthropic_final => (usage, UsageSource::Exact),
            Some(usage) if self.protocol != Protocol::Anthropic => {
                // Usage came (it is the last chunk), then the stream broke:
                // the figure is still the upstream's own.
                (usage, UsageSource::Exact)
            }
            Some(mut usage) => {
                usage.output_tokens = partial_output(
                    usage.output_tokens.max(self.output.quick_tokens()),
                    max_output_tokens,
                );
                (usage, UsageSource::Partial)
            }
            None => {
                let input = prompt_estimate(!completed);
                let seen = if completed {
                    self.output.estimate_tokens()
                } else {
                    self.output.quick_tokens()
                };
                let usage_source = if completed {
                    UsageSource::Estimated
                } else {
                    UsageSource::Partial
                };
                let output = if completed {
                    seen
                } else {
                    partial_output(seen, max_output_tokens)
                };
                (
                    Usage {
                        input_tokens: input,
                        output_tokens: output,
                        ..Usage::default()
                    },
                    usage_source,
                )
            }
        }
    }
}

/// A broken stream is billed for at least one token and never for the
/// whole `max_tokens`.
fn partial_output(seen: u64, max_output_tokens: Option<u64>) -> u64 {
    let at_least_one = seen.max(1);
    match max_output_tokens {
        Some(max) if max > 1 => at_least_one.min(max - 1),
        _ => at_least_one,
    }
}

// === Estimates ===

/// Counts tokens with the o200k tokenizer (loaded on first use only: the
/// request path never needs it while upstreams report usage).
pub fn count_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len() as u64
}

/// A tokenizer-free estimate for partial (already approximate) bills: four
/// ASCII bytes a token, one token per other character. On English prose it
/// is within a few percent of o200k; on CJK text it errs high. The o200k
/// tokenizer costs about 45 MB resident once loaded, so disconnects, which
/// are common, must not be what loads it.
pub fn quick_tokens(text: &str) -> u64 {
    let ascii = text.bytes().filter(u8::is_ascii).count() as u64;
    let other = text.chars().filter(|c| !c.is_ascii()).count() as u64;
    ascii.div_ceil(4) + other
}

/// Estimates the input tokens of a request body: the text of its messages,
/// prompt, input, system and instructions, plus three tokens of framing per
/// message and three for the reply. `quick` counts by `quick_tokens`.
pub fn estimate_prompt_tokens(request: &Value, quick: bool) -> u64 {
    let mut text = String::new();
    let mut messages = 0u64;
    for field in [
        "messages",
        "prompt",
        "input",
        "system",
        "instructions",
        "tools",
    ] {
        if let Some(value) = request.get(field) {
            if field == "messages" {
                messages += value.as_array().map_or(0, |a| a.len() as u64);
            }
            collect_strings(value, &mut text);
        }
    }
    let counted = if quick {
        quick_tokens(&text)
    } else {
        count_tokens(&text)
    };
    counted + 3 * messages + 3
}

fn collect_strings(value: &Value, out: &mut String) {
    match value {
        Value::String(text) => {
            out.push_str(text);
            out.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|item| collect_strings(item, out)),
        Value::Object(map) => map.values().for_each(|item| collect_strings(item, out)),
        _ => {}
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

    #[test]
    fn partial_output_is_bounded() {
        assert_eq!(partial_output(0, Some(100)), 1);
        assert_eq!(partial_output(500, Some(100)), 99);
        assert_eq!(partial_output(5, None), 5);
    }

    #[test]
    fn usage_chunk_is_dropped_only_when_asked() {
        let chunk = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n";
        for strip in [true, false] {
            let mut meter = StreamMeter::new(Protocol::OpenAiChat, strip);
            let mut actions = Vec::new();
            meter.feed(chunk, |action, _| actions.push(action));
            let expected = if strip {
                EventAction::Drop
            } else {
                EventAction::Forward
            };
            assert_eq!(actions, vec![expected]);
            assert_eq!(meter.reported_usage().unwrap().output_tokens, 2);
        }
    }

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

    #[test]
    fn quick_estimate_counts_ascii_by_four_and_others_by_one() {
        assert_eq!(quick_tokens(""), 0);
        assert_eq!(quick_tokens("abcd"), 1);
        assert_eq!(quick_tokens("abcde"), 2);
        assert_eq!(quick_tokens("日本語"), 3);
        let prose = "The quick brown fox jumps over the lazy dog, and then it rests for a while.";
        let exact = count_tokens(prose) as f64;
        let quick = quick_tokens(prose) as f64;
        assert!((quick - exact).abs() / exact < 0.35, "{quick} vs {exact}");
    }
}
