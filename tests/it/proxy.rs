//! The metered request path end to end, on both backend pairs.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;
use tollgate::money::Money;

use crate::both_backends;
use crate::helpers::client;
use crate::helpers::fixture;
use crate::helpers::gateway::{standard_models, Backend, TestGateway};
use crate::helpers::upstream::{MockUpstream, Reply};

fn nano(usd: &str) -> i64 {
    Money::parse_usd(usd).unwrap().nano()
}

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "What is the invoice total?"}], "max_tokens": 500})
}

/// Answers each path with a fixture.
async fn fixture_upstream() -> MockUpstream {
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

async fn upstream_error_status_passes_through_and_costs_nothing(backend: Backend) {
    let body = fixture("errors/openai_429_rate_limit_exceeded.json");
    let upstream_body = body.clone();
    let upstream = MockUpstream::start(move |_| Reply::json(429, upstream_body.clone())).await;
    let gw = TestGateway::start(backend, &upstream.base_url()).await;
    let (_, key) = gw.user_with_credit("err@example.com", "1").await;
    let reply = gw
        .post("/v1/chat/completions", &key, chat("gpt-4o-mini"))
        .await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.body, Bytes::from(body));
    let row = gw.row(&reply.request_id()).await;
    assert_eq!(
        (row.cost_nano, row.status.as_str(), row.http_status),
        (0, "upstream_error", 429)
    );
    assert_eq!(gw.balance(&key).await, "1.0");
    gw.finish().await;
}
both_backends!(upstream_error_status_passes_through_and_costs_nothing);

async fn unreachable_and_slow_upstreams(backend: Backend) {
    let slow = MockUpstream::start(|_| {
        Reply::json(200, fixture("openai_chat_nonstream_cached_reasoning.json"))
            .delay_headers(Duration::from_secs(3))
    })
    .await;
    // A port that refuses connections: bind, note the port, close.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let models = format!(
        r#"
[[providers]]
name = "slow"
kind = "openai"
base_url = "{}"
[[providers]]
name = "gone"
kind = "openai"
base_url = "http://127.0.0.1:{closed}/v1"
[[models]]
name = "slow-model"
provider = "slow"
input_usd_per_mtok = "1"
output_usd_per_mtok = "1"
[[models]]
name = "gone-model"
provider = "gone"
input_usd_per_mtok = "1"
output_usd_per_mtok = "1"
"#,
        slow.base_url()
    );
    let gw =
        TestGateway::start_with(backend, &models, "[upstream]\nresponse_timeout_ms = 300\n").await;
    let (_, key) = gw.user_with_credit("down@example.com", "1").await;
    let reply = gw
        .post("/v1/chat/completions", &key, chat("gone-model"))
        .await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "upstream_error");
    let reply = gw
        .post("/v1/chat/completions", &key, chat("slow-model"))
        .await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    let mut streamed = chat("slow-model");
    streamed["stream"] = json!(true);
    let reply = gw.post("/v1/chat/completions", &key, streamed).await;
    assert_eq!(reply.status, 504);
    gw.ledger_idle().await;
    assert_eq!(gw.balance(&key).await, "1.0");
    assert_eq!(gw.state.metrics.reservations_outstanding(), 0);
    gw.finish().await;
}
both_backends!(unreachable_and_slow_upstreams);

async fn broken_streams_bill_partial(backend: Backend) {
    let upstream = MockUpstream::start(|seen| {
        let model = seen.body["model"].as_str().unwrap_or("");
        if model == "gpt-4o-mini-2024-07-18" {
            Reply::sse_split(&fixture("openai_chat_stream_midstream_error.sse"), &[100, 400])
        } else {
            // A long, slow stream without usage that the upstream cuts off.
            let mut body = String::new();
            for i in 0..40 {
                body.push_str(&format!(
                    "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word{i} and more words \"}}}}]}}\n\n"
                ));
            }
            let body = body.into_bytes();
            let cuts: Vec<usize> = (1..40).map(|i| i * body.len() / 40).collect();
            Reply::sse_split(&body, &cuts).cut_after(10)
        }
    })
    .await;
    let gw = TestGateway::start(backend, &upstream.base_url()).await;
    let (_, key) = gw.user_with_credit("broken@example.com", "1").await;

    let mut body = chat("gpt-4o-mini");
    body["stream"] = json!(true);
    let reply = gw.post("/v1/chat/completions", &key, body).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.text().contains("\"server_error\""),
        "{}",
        reply.text()
    );
    let row = gw.row(&reply.request_id()).await;
    assert_eq!(
        (row.usage_source.as_str(), row.status.as_str()),
        ("partial", "upstream_error")
    );
    assert!(
        row.input_tokens > 0 && row.output_tokens > 0 && row.output_tokens < 500,
        "{row:?}"
    );
    assert!(row.cost_nano > 0);

    let mut body = chat("gpt-5.1");
    body["stream"] = json!(true);
    let reply = gw.post("/v1/chat/completions", &key, body).await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("upstream_error"), "{}", reply.text());
    let row = gw.row(&reply.request_id()).await;
    assert_eq!(
        (row.usage_source.as_str(), row.status.as_str()),
        ("partial", "failed")
    );
    assert!(row.output_tokens > 0 && row.output_tokens < 500, "{row:?}");
    gw.finish().await;
}
both_backends!(broken_streams_bill_partial);

async fn client_disconnect_bills_partial_once(backend: Backend) {
    let upstream = MockUpstream::start(|_| {
        let mut body = String::new();
        for i in 0..100 {
            body.push_str(&format!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token{i} \"}}}}],\"usage\":null}}\n\n"
            ));
        }
        body.push_str("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":300,\"total_tokens\":310}}\n\ndata: [DONE]\n\n");
        let body = body.into_bytes();
        let cuts: Vec<usize> = (1..101).map(|i| i * body.len() / 101).collect();
        Reply::sse_split(&body, &cuts).paced(Duration::from_millis(20))
    })
    .await;
    let gw = TestGateway::start(backend, &upstream.base_url()).await;
    let (_, key) = gw.user_with_credit("gone@example.com", "1").await;
    let mut body = chat("gpt-5.1");
    body["stream"] = json!(true);
    let response = client::open("POST", &gw.url("/v1/chat/completions"), &key, Some(body)).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut body = response.into_body();
    let mut received = 0;
    while received < 5 {
        match body.frame().await {
            Some(Ok(frame)) if frame.is_data() => received += 1,
            _ => break,
        }
    }
    drop(body);
    let row = gw.row(&request_id).await;
    assert_eq!(
        (row.usage_source.as_str(), row.status.as_str()),
        ("partial", "client_closed")
    );
    assert!(row.output_tokens >= 1 && row.output_tokens < 500, "{row:?}");
    let full = tollgate::money::Money::parse_usd("0.005").unwrap().nano(); // 500 output tokens of gpt-5.1
    assert!(row.cost_nano > 0 && row.cost_nano < full, "{row:?}");
    gw.ledger_idle().await;
    let rows = gw
        .store()
        .usage_rows_of_account(&row.account_id)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "settled exactly once");
    let expected = 1_000_000_000 - row.cost_nano;
    assert_eq!(
        gw.balance(&key).await,
        Money::from_nano(expected).to_string()
    );
    gw.finish().await;
}
both_backends!(client_disconnect_bills_partial_once);

/// A client that leaves during a non-streamed call does not cancel it: the
/// provider bills the whole answer, so the row does too, once.
async fn client_leaving_a_json_call_is_billed_in_full(backend: Backend) {
    let upstream = MockUpstream::start(|_| {
        Reply::json(200, fixture("openai_chat_nonstream_cached_reasoning.json"))
            .delay_headers(Duration::from_millis(400))
    })
    .await;
    let gw = TestGateway::start(backend, &upstream.base_url()).await;
    let (user_id, key) = gw.user_with_credit("leaver@example.com", "1").await;
    let gone = tokio::time::timeout(
        Duration::from_millis(100),
        client::send(
            "POST",
            &gw.url("/v1/chat/completions"),
            &key,
            Some(chat("gpt-5.1")),
            &[],
        ),
    )
    .await;
    assert!(gone.is_err(), "the client gave up before the answer");
    let mut rows = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        gw.ledger_idle().await;
        rows = gw.store().usage_rows_of_account(&user_id).await.unwrap();
        if !rows.is_empty() {
            break;
        }
    }
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(
        (row.status.as_str(), row.usage_source.as_str()),
        ("ok", "exact"),
        "{row:?}"
    );
    // gpt-5.1: 2006 prompt (1920 cached) + 300 output tokens = $0.0033475.
    assert_eq!(row.cost_nano, 3_347_500);
    assert_eq!(
        gw.balance(&key).await,
        Money::from_nano(1_000_000_000 - 3_347_500).to_string()
    );
    gw.finish().await;
}
both_backends!(client_leaving_a_json_call_is_billed_in_full);

async fn refusals_have_the_contract_shape(backend: Backend) {
    let upstream = fixture_upstream().await;
    let gw = TestGateway::start_with(backend, &standard_models(&upstream.base_url()), "").await;
    let (_, key) = gw.user_with_credit("refuse@example.com", "0.001").await;
    let url = gw.url("/v1/chat/completions");

    let reply = client::send("POST", &url, "", Some(chat("gpt-4o-mini")), &[]).await;
    assert_eq!(
        (reply.status, reply.json()["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let reply = client::send(
        "POST",
        &url,
        "tg-0000000000000000000000000000000000000000",
        Some(chat("gpt-4o-mini")),
        &[],
    )
    .await;
    assert_eq!(reply.status, 401);

    let reply = gw
        .post("/v1/chat/completions", &key, chat("no-such-model"))
        .await;
    assert_eq!(
        (reply.status, reply.json()["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    assert_eq!(reply.json()["error"]["param"], "model");

    let reply = gw
        .post("/v1/chat/completions", &key, json!({"messages": []}))
        .await;
    assert_eq!(
        (reply.status, reply.json()["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );

    let request = http::Request::post(&url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from_static(
            b"{\"model\": \"gpt-4o-mini\", ",
        )))
        .unwrap();
    let reply = client::send_raw(request).await;
    assert_eq!(reply.status, 400);
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));

    let request = http::Request::post(&url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(Bytes::from_static(b"a=b")))
        .unwrap();
    assert_eq!(client::send_raw(request).await.status, 415);

    // $0.001 cannot cover 500 output tokens of gpt-5.1 ($0.005).
    let reply = gw.post("/v1/chat/completions", &key, chat("gpt-5.1")).await;
    assert_eq!(reply.status, 402, "{}", reply.text());
    assert_eq!(reply.header("x-should-retry"), Some("false"));
    let error = &reply.json()["error"];
    assert_eq!(
        (error["code"].as_str(), error["type"].as_str()),
        (Some("insufficient_balance"), Some("insufficient_quota"))
    );
    let row = gw.row(&reply.request_id()).await;
    assert_eq!((row.status.as_str(), row.cost_nano), ("refused", 0));
    assert_eq!(
        upstream.seen().len(),
        0,
        "refusals never reach the upstream"
    );

    // Anthropic route refusals use the Anthropic shape.
    let reply = client::send(
        "POST",
        &gw.url("/v1/messages"),
        "",
        Some(json!({"model": "x"})),
        &[],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["type"], "error");
    assert_eq!(reply.json()["error"]["type"], "authentication_error");

    // Billing a team one is not a member of.
    let reply = client::send(
        "POST",
        &url,
        &key,
        Some(chat("gpt-4o-mini")),
        &[("x-tollgate-billing", "team:tm_nope")],
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()["error"]["code"].as_str()),
        (403, Some("not_a_team_member"))
    );
    gw.finish().await;
}
both_backends!(refusals_have_the_contract_shape);

async fn body_over_the_limit_is_413(backend: Backend) {
    let upstream = fixture_upstream().await;
    let gw = TestGateway::start_with(
        backend,
        &standard_models(&upstream.base_url()),
        "max_body_bytes = 4096\n",
    )
    .await;
    let (_, key) = gw.user_with_credit("big@example.com", "1").await;
    let mut body = chat("gpt-4o-mini");
    body["messages"][0]["content"] = json!("x".repeat(8192));
    let reply = gw.post("/v1/chat/completions", &key, body).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"]["code"], "invalid_request");
    gw.finish().await;
}
both_backends!(body_over_the_limit_is_413);

async fn revoked_key_is_refused_at_once(backend: Backend) {
    let upstream = fixture_upstream().await;
    let gw = TestGateway::start(backend, &upstream.base_url()).await;
    let (_, key) = gw.user_with_credit("revoke@example.com", "1").await;
    let created = client::send(
        "POST",
        &gw.url("/api/me/keys"),
        &key,
        Some(json!({"name": "laptop"})),
        &[],
    )
    .await;
    assert_eq!(created.status, 201);
    let second = created.json()["key"].as_str().unwrap().to_string();
    let second_id = created.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        gw.post("/v1/chat/completions", &second, chat("gpt-4o-mini"))
            .await
            .status,
        200
    );
    let revoked = client::send(
        "DELETE",
        &gw.url(&format!("/api/me/keys/{second_id}")),
        &key,
        None,
        &[],
    )
    .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(
        gw.post("/v1/chat/completions", &second, chat("gpt-4o-mini"))
            .await
            .status,
        401
    );
    assert_eq!(
        gw.post("/v1/chat/completions", &key, chat("gpt-4o-mini"))
            .await
            .status,
        200
    );
    gw.finish().await;
}
both_backends!(revoked_key_is_refused_at_once);

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

async fn shutdown_drains_the_ledger(backend: Backend) {
    let upstream = fixture_upstream().await;
    let gw = TestGateway::start(backend, &upstream.base_url()).await;
    let (user_id, key) = gw.user_with_credit("drain@example.com", "1").await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        let reply = gw
            .post("/v1/chat/completions", &key, chat("gpt-4o-mini"))
            .await;
        ids.push(reply.request_id());
    }
    let storage = gw.stop().await;
    let store = tollgate::store::Store::connect(&storage.database_url, 2)
        .await
        .unwrap();
    let rows = store.usage_rows_of_account(&user_id).await.unwrap();
    assert_eq!(rows.len(), 20);
    store.close().await;
    storage.cleanup().await;
}
both_backends!(shutdown_drains_the_ledger);

async fn ops_routes_answer(backend: Backend) {
    let gw = TestGateway::start(backend, "http://127.0.0.1:9/v1").await;
    let health = client::send("GET", &gw.url("/healthz"), "", None, &[]).await;
    assert_eq!(health.status, 200);
    let ready = client::send("GET", &gw.url("/readyz"), "", None, &[]).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ok");
    let metrics = client::send("GET", &gw.url("/metrics"), "", None, &[]).await;
    assert!(metrics
        .text()
        .contains("tollgate_requests_total{outcome=\"ok\"}"));
    let missing = client::send("GET", &gw.url("/nope"), "", None, &[]).await;
    assert_eq!(missing.status, 404);
    gw.finish().await;
}
both_backends!(ops_routes_answer);

async fn a_stalled_ledger_refuses_new_requests(backend: Backend) {
    use sqlx::Connection;
    let upstream = fixture_upstream().await;
    let storage = crate::helpers::gateway::TestStorage::new(backend).await;
    let gw = TestGateway::start_on(
        storage,
        &standard_models(&upstream.base_url()),
        "",
        &[
            ("TOLLGATE_LEDGER__QUEUE_CAPACITY", "3"),
            ("TOLLGATE_LEDGER__BATCH_SIZE", "1"),
        ],
    )
    .await;
    let (user_id, key) = gw.user_with_credit("stall@example.com", "1").await;
    assert_eq!(
        gw.post("/v1/chat/completions", &key, chat("gpt-4o-mini"))
            .await
            .status,
        200
    );
    gw.ledger_idle().await;

    // Hold a lock that stops the ledger writer's inserts.
    let url = gw.storage.database_url.clone();
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let locker = tokio::spawn(async move {
        if url.starts_with("postgres") {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("LOCK TABLE usage_rows IN ACCESS EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await
                .unwrap();
            locked_tx.send(()).unwrap();
            release_rx.await.unwrap();
            tx.rollback().await.unwrap();
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut conn)
                .await
                .unwrap();
            locked_tx.send(()).unwrap();
            release_rx.await.unwrap();
            sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
        }
    });
    locked_rx.await.unwrap();

    let mut served = 1;
    let mut refused = None;
    for _ in 0..10 {
        let reply = gw
            .post("/v1/chat/completions", &key, chat("gpt-4o-mini"))
            .await;
        match reply.status {
            200 => served += 1,
            503 => {
                refused = Some(reply);
                break;
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    let refused = refused.expect("a full ledger queue must refuse new requests");
    assert_eq!(
        refused.header("retry-after"),
        Some("1"),
        "{:?} {}",
        refused.headers,
        refused.text()
    );
    assert!(served <= 5, "served {served} with a queue of 3");

    release_tx.send(()).unwrap();
    locker.await.unwrap();
    gw.ledger_idle().await;
    assert_eq!(
        gw.post("/v1/chat/completions", &key, chat("gpt-4o-mini"))
            .await
            .status,
        200
    );
    served += 1;
    gw.ledger_idle().await;
    let rows = gw.store().usage_rows_of_account(&user_id).await.unwrap();
    assert_eq!(
        rows.iter().filter(|r| r.status == "ok").count(),
        served,
        "every served request has its row"
    );
    gw.finish().await;
}
both_backends!(a_stalled_ledger_refuses_new_requests);
