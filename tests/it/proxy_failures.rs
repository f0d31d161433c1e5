//! The proxy when things break: upstream errors, unreachable and slow
//! upstreams, broken streams and clients that leave, billed partially or once.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;
use tollgate::money::Money;

use crate::both_backends;
use crate::helpers::client;
use crate::helpers::fixture;
use crate::helpers::gateway::{Backend, TestGateway};
use crate::helpers::proxy::chat;
use crate::helpers::upstream::{MockUpstream, Reply};

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

/// The default `on_client_disconnect = "drain"`: the stream is read on to
/// the upstream's usage after the client left, and billed exactly, once.
async fn client_disconnect_is_drained_and_billed_once(backend: Backend) {
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
        ("exact", "client_closed")
    );
    assert_eq!((row.input_tokens, row.output_tokens), (10, 300), "{row:?}");
    // 10 × $1.25/M + 300 × $10/M.
    let whole = tollgate::money::Money::parse_usd("0.0030125")
        .unwrap()
        .nano();
    assert_eq!(row.cost_nano, whole, "{row:?}");
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
both_backends!(client_disconnect_is_drained_and_billed_once);

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
