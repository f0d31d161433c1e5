//! The proxy meters exactly: JSON and streamed chat, Responses, Anthropic
//! and embeddings, and the built-in mock on every endpoint.

use bytes::Bytes;
use serde_json::json;
use tollgate::money::Money;

use crate::both_backends;
use crate::helpers::client;
use crate::helpers::fixture;
use crate::helpers::gateway::{Backend, TestGateway};
use crate::helpers::proxy::{chat, fixture_upstream};

fn nano(usd: &str) -> i64 {
    Money::parse_usd(usd).unwrap().nano()
}

async fn chat_json_is_metered_exactly(backend: Backend) {
    let upstream = fixture_upstream().await;
    let gw = TestGateway::start(backend, &upstream.base_url()).await;
    let (_, key) = gw.user_with_credit("json@example.com", "1").await;
    let reply = gw.post("/v1/chat/completions", &key, chat("gpt-5.1")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The body is the upstream's, byte for byte.
    assert_eq!(
        reply.body,
        Bytes::from(fixture("openai_chat_nonstream_cached_reasoning.json"))
    );
    let row = gw.row(&reply.request_id()).await;
    assert_eq!(row.cost_nano, nano("0.0033475"));
    assert_eq!(
        (row.input_tokens, row.cached_tokens, row.output_tokens),
        (2006, 1920, 300)
    );
    assert_eq!(
        (row.usage_source.as_str(), row.status.as_str()),
        ("exact", "ok")
    );
    assert_eq!(gw.balance(&key).await, "0.9966525");
    let seen = &upstream.seen()[0];
    assert_eq!(seen.headers["authorization"], "Bearer sk-upstream-secret");
    assert_eq!(seen.body["model"], "gpt-5.1");
    gw.finish().await;
}
both_backends!(chat_json_is_metered_exactly);

async fn stream_usage_is_injected_and_hidden(backend: Backend) {
    let upstream = fixture_upstream().await;
    let gw = TestGateway::start(backend, &upstream.base_url()).await;
    let (_, key) = gw.user_with_credit("stream@example.com", "1").await;
    let mut body = chat("gpt-4o-mini");
    body["stream"] = json!(true);
    let reply = gw.post("/v1/chat/completions", &key, body.clone()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let text = reply.text();
    assert!(
        !text.contains("\"prompt_tokens\""),
        "usage chunk leaked: {text}"
    );
    assert!(
        text.contains("How can I help you today?") && text.trim_end().ends_with("data: [DONE]")
    );
    let seen = &upstream.seen()[0];
    assert_eq!(seen.body["stream_options"]["include_usage"], true);
    assert_eq!(seen.body["model"], "gpt-4o-mini-2024-07-18");
    let row = gw.row(&reply.request_id()).await;
    assert_eq!(row.cost_nano, nano("0.00000885"));
    assert_eq!(row.usage_source, "exact");
    assert!(row.streamed);

    // A client that asked for usage sees it.
    body["stream_options"] = json!({"include_usage": true});
    let reply = gw.post("/v1/chat/completions", &key, body).await;
    assert!(reply.text().contains("\"prompt_tokens\":19"));
    assert_eq!(
        gw.row(&reply.request_id()).await.cost_nano,
        nano("0.00000885")
    );
    gw.finish().await;
}
both_backends!(stream_usage_is_injected_and_hidden);

async fn responses_and_anthropic_streams(backend: Backend) {
    let upstream = fixture_upstream().await;
    let gw = TestGateway::start(backend, &upstream.base_url()).await;
    let (_, key) = gw.user_with_credit("events@example.com", "1").await;

    let reply = gw
        .post(
            "/v1/responses",
            &key,
            json!({"model": "gpt-5-mini", "input": "Capital of France?", "stream": true}),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        Bytes::from(fixture("openai_responses_stream_completed.sse"))
    );
    assert_eq!(
        gw.row(&reply.request_id()).await.cost_nano,
        nano("0.0007496")
    );

    // Anthropic SDKs authenticate with x-api-key.
    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let reply = client::send(
        "POST",
        &gw.url("/v1/messages"),
        "",
        Some(body),
        &[
            ("x-api-key", key.as_str()),
            ("anthropic-version", "2023-06-01"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.body,
        Bytes::from(fixture("anthropic_message_stream.sse"))
    );
    let row = gw.row(&reply.request_id()).await;
    assert_eq!(row.cost_nano, nano("0.000727"));
    assert_eq!((row.input_tokens, row.cached_tokens), (2272, 1800));
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.headers["x-api-key"], "sk-ant-secret");
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert!(seen.headers.get("authorization").is_none());

    let reply = gw
        .post(
            "/v1/messages",
            &key,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 300, "messages": []}),
        )
        .await;
    assert_eq!(
        gw.row(&reply.request_id()).await.cost_nano,
        nano("0.01371225")
    );

    let reply = gw
        .post(
            "/v1/embeddings",
            &key,
            json!({"model": "text-embedding-3-small", "input": ["a", "b"]}),
        )
        .await;
    assert_eq!(
        gw.row(&reply.request_id()).await.cost_nano,
        nano("0.00000032")
    );

    // An Anthropic model on the OpenAI route is a clear 400.
    let reply = gw
        .post("/v1/chat/completions", &key, chat("claude-haiku-4-5"))
        .await;
    assert_eq!(reply.status, 400);
    gw.finish().await;
}
both_backends!(responses_and_anthropic_streams);

async fn builtin_mock_serves_every_endpoint(backend: Backend) {
    let gw = TestGateway::start(backend, "http://127.0.0.1:9/v1").await;
    let (_, key) = gw.user_with_credit("mock@example.com", "1").await;
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
        "/v1/embeddings",
    ] {
        for stream in [false, true] {
            if path == "/v1/embeddings" && stream {
                continue;
            }
            let body = json!({"model": "mock-1", "stream": stream, "max_tokens": 5, "max_output_tokens": 5,
                "messages": [{"role": "user", "content": "Say something short please"}], "prompt": "hi", "input": "hi"});
            let reply = gw.post(path, &key, body).await;
            assert_eq!(reply.status, 200, "{path} {stream}: {}", reply.text());
            let row = gw.row(&reply.request_id()).await;
            assert_eq!(row.usage_source, "exact", "{path} {stream}");
            assert!(row.cost_nano > 0, "{path} {stream}");
        }
    }
    let models = client::send("GET", &gw.url("/v1/models"), &key, None, &[]).await;
    assert_eq!(models.status, 200);
    assert!(models.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "mock-1"));
    assert_eq!(
        client::send("GET", &gw.url("/v1/models"), "", None, &[])
            .await
            .status,
        401
    );
    gw.finish().await;
}
both_backends!(builtin_mock_serves_every_endpoint);
