//! Shared by the `proxy_*` tests: a chat request body and an upstream that
//! answers each endpoint with its recorded fixture.

use serde_json::json;

use super::fixture;
use super::upstream::{MockUpstream, Reply};

pub fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "What is the invoice total?"}], "max_tokens": 500})
}

/// Answers each path with a fixture.
pub async fn fixture_upstream() -> MockUpstream {
    MockUpstream::start(|seen| {
        let stream = seen.body["stream"].as_bool().unwrap_or(false);
        match (seen.path.as_str(), stream) {
            ("/v1/chat/completions", false) => {
                Reply::json(200, fixture("openai_chat_nonstream_cached_reasoning.json"))
            }
            ("/v1/chat/completions", true) => {
                Reply::sse_bytewise(&fixture("openai_chat_stream_usage.sse"))
            }
            ("/v1/responses", true) => {
                let body = fixture("openai_responses_stream_completed.sse");
                let cuts: Vec<usize> = (0..body.len()).step_by(7).collect();
                Reply::sse_split(&body, &cuts)
            }
            ("/v1/messages", false) => Reply::json(200, fixture("anthropic_message_nonstream.json")),
            ("/v1/messages", true) => Reply::sse_bytewise(&fixture("anthropic_message_stream.sse")),
            ("/v1/embeddings", _) => Reply::json(200, fixture("openai_embeddings_response.json")),
            _ => Reply::json(404, r#"{"error":{"message":"no","type":"invalid_request_error","param":null,"code":null}}"#),
        }
    })
    .await
}
