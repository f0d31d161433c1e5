//! The built-in `mock` provider: offline, deterministic, speaking each
//! endpoint's real wire format (JSON, and SSE when `stream` is true).
//!
//! Usage is a pure function of the request: input tokens are a quarter of
//! the bytes of the request's text (at least 1), output tokens are the
//! words of the reply, which has `min(max_tokens, 16)` words. Its answers go
//! through the same meter as a real upstream's.

use bytes::Bytes;
use serde_json::{json, Value};

use super::Endpoint;

const REPLY_WORDS: [&str; 16] = [
    "This",
    "is",
    "a",
    "metered",
    "reply",
    "from",
    "the",
    "Tollgate",
    "mock",
    "provider,",
    "served",
    "offline",
    "so",
    "that",
    "setups",
    "work.",
];

/// A canned upstream answer.
pub struct MockResponse {
    pub content_type: &'static str,
    pub chunks: Vec<Bytes>,
}

/// The input tokens the mock reports for a request.
pub fn input_tokens(request: &Value) -> u64 {
    let mut bytes = 0usize;
    for field in ["messages", "prompt", "input", "system", "instructions"] {
        if let Some(value) = request.get(field) {
            bytes += text_bytes(value);
        }
    }
    (bytes as u64 / 4).max(1)
}

fn text_bytes(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len(),
        Value::Array(items) => items.iter().map(text_bytes).sum(),
        Value::Object(map) => map.values().map(text_bytes).sum(),
        _ => 0,
    }
}

fn reply_words(request: &Value, endpoint: Endpoint) -> Vec<&'static str> {
    let max = endpoint
        .max_output_field()
        .iter()
        .find_map(|field| request.get(*field).and_then(Value::as_u64))
        .unwrap_or(REPLY_WORDS.len() as u64);
    let n = (max as usize).clamp(1, REPLY_WORDS.len());
    REPLY_WORDS[..n].to_vec()
}

fn sse(event: Option<&str>, data: &Value) -> Bytes {
    match event {
        Some(name) => Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

/// Answers a request as the upstream would.
pub fn respond(endpoint: Endpoint, request: &Value, model: &str, stream: bool) -> MockResponse {
    let input = input_tokens(request);
    let words = reply_words(request, endpoint);
    let output = words.len() as u64;
    let text = words.join(" ");
    let created = 1_764_000_000u64;
    let json_response = |body: Value| MockResponse {
        content_type: "application/json",
        chunks: vec![Bytes::from(body.to_string())],
    };
    match (endpoint, stream) {
        (Endpoint::Embeddings, _) => {
            let inputs = match request.get("input") {
                Some(Value::Array(items)) => items.len().max(1),
                _ => 1,
            };
            let data: Vec<Value> = (0..inputs)
                .map(|i| json!({"object":"embedding","index":i,"embedding":[0.0125, -0.0078, 0.0031, 0.0094]}))
                .collect();
            json_response(json!({"object":"list","data":data,"model":model,
                "usage":{"prompt_tokens":input,"total_tokens":input}}))
        }
        (Endpoint::ChatCompletions | Endpoint::Completions, false) => {
            let usage = json!({"prompt_tokens":input,"completion_tokens":output,"total_tokens":input+output,
                "prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}});
            if endpoint == Endpoint::ChatCompletions {
                json_response(
                    json!({"id":"chatcmpl-mock","object":"chat.completion","created":created,"model":model,
                    "choices":[{"index":0,"message":{"role":"assistant","content":text},"finish_reason":"stop"}],
                    "usage":usage}),
                )
            } else {
                json_response(
                    json!({"id":"cmpl-mock","object":"text_completion","created":created,"model":model,
                    "choices":[{"index":0,"text":text,"finish_reason":"stop"}],"usage":usage}),
                )
            }
        }
        (Endpoint::ChatCompletions | Endpoint::Completions, true) => {
            let include_usage = request
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let chat = endpoint == Endpoint::ChatCompletions;
            let object = if chat {
                "chat.completion.chunk"
            } else {
                "text_completion"
            };
            let mut chunks = Vec::with_capacity(words.len() + 3);
            for (i, word) in words.iter().enumerate() {
                let piece = if i == 0 {
                    word.to_string()
                } else {
                    format!(" {word}")
                };
                let choice = if chat {
                    json!({"index":0,"delta":{"content":piece},"finish_reason":null})
                } else {
                    json!({"index":0,"text":piece,"finish_reason":null})
                };
                let mut chunk = json!({"id":"chatcmpl-mock","object":object,"created":created,"model":model,"choices":[choice]});
                if include_usage {
                    chunk["usage"] = Value::Null;
                }
                chunks.push(sse(None, &chunk));
            }
            let finish = if chat {
                json!({"index":0,"delta":{},"finish_reason":"stop"})
            } else {
                json!({"index":0,"text":"","finish_reason":"stop"})
            };
            chunks.push(sse(None, &json!({"id":"chatcmpl-mock","object":object,"created":created,"model":model,"choices":[finish]})));
            if include_usage {
                chunks.push(sse(None, &json!({"id":"chatcmpl-mock","object":object,"created":created,"model":model,"choices":[],
                    "usage":{"prompt_tokens":input,"completion_tokens":output,"total_tokens":input+output}})));
            }
            chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
            MockResponse {
                content_type: "text/event-stream",
                chunks,
            }
        }
        (Endpoint::Responses, _) => {
            let usage = json!({"input_tokens":input,"input_tokens_details":{"cached_tokens":0,"cache_write_tokens":0},
                "output_tokens":output,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":input+output});
            let output_item = json!([{"id":"msg_mock","type":"message","status":"completed","role":"assistant",
                "content":[{"type":"output_text","text":text,"annotations":[]}]}]);
            let response = |status: &str, usage: Value, output: Value| {
                json!({"id":"resp_mock","object":"response",
                "created_at":created,"status":status,"model":model,"output":output,"usage":usage})
            };
            if !stream {
                return json_response(response("completed", usage, output_item));
            }
            let mut chunks = vec![sse(
                Some("response.created"),
                &json!({"type":"response.created","response":response("in_progress", Value::Null, json!([])),"sequence_number":0}),
            )];
            for (i, word) in words.iter().enumerate() {
                let piece = if i == 0 {
                    word.to_string()
                } else {
                    format!(" {word}")
                };
                chunks.push(sse(
                    Some("response.output_text.delta"),
                    &json!({"type":"response.output_text.delta","item_id":"msg_mock","output_index":0,"content_index":0,"delta":piece,"sequence_number":i+1}),
                ));
            }
            chunks.push(sse(
                Some("response.completed"),
                &json!({"type":"response.completed","response":response("completed", usage, output_item),"sequence_number":words.len()+1}),
            ));
            MockResponse {
                content_type: "text/event-stream",
                chunks,
            }
        }
        (Endpoint::Messages, false) => json_response(
            json!({"id":"msg_mock","type":"message","role":"assistant","model":model,
            "content":[{"type":"text","text":text}],"stop_reason":"end_turn","stop_sequence":null,
            "usage":{"input_tokens":input,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":output}}),
        ),
        (Endpoint::Messages, true) => {
            let mut chunks = vec![
                sse(
                    Some("message_start"),
                    &json!({"type":"message_start","message":{"id":"msg_mock","type":"message","role":"assistant",
                    "model":model,"content":[],"stop_reason":null,"stop_sequence":null,
                    "usage":{"input_tokens":input,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}),
                ),
                sse(
                    Some("content_block_start"),
                    &json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
                ),
            ];
            for (i, word) in words.iter().enumerate() {
                let piece = if i == 0 {
                    word.to_string()
                } else {
                    format!(" {word}")
                };
                chunks.push(sse(Some("content_block_delta"), &json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":piece}})));
            }
            chunks.push(sse(
                Some("content_block_stop"),
                &json!({"type":"content_block_stop","index":0}),
            ));
            chunks.push(sse(Some("message_delta"), &json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":output}})));
            chunks.push(sse(Some("message_stop"), &json!({"type":"message_stop"})));
            MockResponse {
                content_type: "text/event-stream",
                chunks,
            }
        }
    }
}
