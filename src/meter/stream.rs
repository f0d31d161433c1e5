//! The stream meter: usage and output text of an event stream as it passes.

use serde::Deserialize;
use serde_json::Value;

use super::estimate::OutputTally;
use super::sse::{SseEvent, SseParser};
use super::usage::{tier, web_search_calls, AnthropicUsage, OpenAiUsage};
use super::{Protocol, Usage, UsageSource};
use crate::domain::ServiceTier;

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
    /// The tier an OpenAI chat stream's chunks name.
    service_tier: Option<ServiceTier>,
}

#[derive(Deserialize)]
struct ChatChunk {
    #[serde(default)]
    choices: Option<Vec<ChatChoice>>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
    #[serde(default, deserialize_with = "tier")]
    service_tier: Option<ServiceTier>,
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
    #[serde(default, deserialize_with = "tier")]
    service_tier: Option<ServiceTier>,
    #[serde(default, rename = "output", deserialize_with = "web_search_calls")]
    web_search_calls: u64,
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
            service_tier: None,
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
            _ => self.openai_usage.map(|mut usage| {
                if let Some(tier) = self.service_tier {
                    usage.service_tier = tier;
                }
                usage
            }),
        }
    }

    /// The upstream's usage once it is final: OpenAI-style streams report
    /// it once, at their end; Anthropic's counts are whole only at
    /// `message_stop`.
    pub fn final_usage(&self) -> Option<Usage> {
        match self.protocol {
            Protocol::Anthropic if self.end != StreamEnd::Completed => None,
            _ => self.reported_usage(),
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
        if chunk.service_tier.is_some() {
            self.service_tier = chunk.service_tier;
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
                if let Some(response) = &parsed.response {
                    if let Some(usage) = &response.usage {
                        let mut usage = usage.responses();
                        usage.web_search_calls = response.web_search_calls;
                        self.openai_usage = Some(usage);
                    }
                    if response.service_tier.is_some() {
                        self.service_tier = response.service_tier;
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_output_is_bounded() {
        assert_eq!(partial_output(0, Some(100)), 1);
        assert_eq!(partial_output(500, Some(100)), 99);
        assert_eq!(partial_output(5, None), 5);
    }

    #[test]
    fn responses_streams_carry_tier_and_search_calls() {
        let body = concat!(
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Found.\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"service_tier\":\"flex\",",
            "\"output\":[{\"type\":\"web_search_call\"},{\"type\":\"message\",\"content\":[]}],",
            "\"usage\":{\"input_tokens\":100,\"input_tokens_details\":{\"cached_tokens\":null},\"output_tokens\":20}}}\n\n"
        );
        let mut meter = StreamMeter::new(Protocol::OpenAiResponses, false);
        for byte in body.as_bytes().chunks(3) {
            meter.feed(byte, |_, _| {});
        }
        meter.finish();
        let usage = meter.final_usage().unwrap();
        assert_eq!((usage.input_tokens, usage.output_tokens), (100, 20));
        assert_eq!(usage.web_search_calls, 1);
        assert_eq!(usage.service_tier, ServiceTier::Flex);
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
}
