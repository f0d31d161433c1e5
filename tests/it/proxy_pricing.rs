//! Every charge the provider makes is priced (contract §5): one-hour cache
//! writes, usage with nulls, compressed answers, service tiers, audio,
//! server-tool fees, long context. Each case as JSON and as a stream split
//! at awkward bytes, each with its exact cost in nano-dollars, and the row
//! keeps the parts that explain it.

use std::io::Write as _;

use bytes::Bytes;
use serde_json::{json, Value};
use tollgate::ledger::Entry;

use crate::both_backends;
use crate::helpers::client;
use crate::helpers::fixture;
use crate::helpers::gateway::{Backend, TestGateway};
use crate::helpers::upstream::{MockUpstream, Reply, Seen};

fn models(base: &str) -> String {
    format!(
        r#"
[[providers]]
name = "up"
kind = "openai"
base_url = "{base}"
api_key = "sk-upstream"

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{base}"
api_key = "sk-ant"

[[models]]
name = "gpt-5.1"
provider = "up"
input_usd_per_mtok = "1.25"
output_usd_per_mtok = "10.00"
cached_input_usd_per_mtok = "0.125"
[models.service_tiers.priority]
input_usd_per_mtok = "2.50"
output_usd_per_mtok = "20.00"
cached_input_usd_per_mtok = "0.25"
[models.service_tiers.flex]
input_usd_per_mtok = "0.625"
output_usd_per_mtok = "5.00"
cached_input_usd_per_mtok = "0.0625"
[models.tool_fees]
web_search = "0.01"

[[models]]
name = "gpt-4o-audio-preview"
provider = "up"
input_usd_per_mtok = "2.50"
output_usd_per_mtok = "10.00"
audio_input_usd_per_mtok = "40.00"
audio_output_usd_per_mtok = "80.00"

[[models]]
name = "claude-sonnet-4-5"
provider = "claude"
input_usd_per_mtok = "3.00"
output_usd_per_mtok = "15.00"
cached_input_usd_per_mtok = "0.30"
cache_write_usd_per_mtok = "3.75"
cache_write_1h_usd_per_mtok = "6.00"
[models.long_context]
above_input_tokens = 200000
input_usd_per_mtok = "6.00"
output_usd_per_mtok = "22.50"
cached_input_usd_per_mtok = "0.60"
cache_write_usd_per_mtok = "7.50"
cache_write_1h_usd_per_mtok = "12.00"
[models.tool_fees]
web_search = "0.01"
"#
    )
}

/// What the mock answers: the body of the JSON answer, or the events of a
/// stream; the test's request names the case in `metadata.case`.
fn case_reply(seen: &Seen) -> Reply {
    let case = seen.body["metadata"]["case"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let stream = seen.body["stream"].as_bool().unwrap_or(false);
    let anthropic = seen.path == "/v1/messages";
    let (usage, extra): (Value, Value) = match case.as_str() {
        "write_1h" => (
            json!({"input_tokens":6,"cache_creation_input_tokens":100000,"cache_read_input_tokens":0,
                "cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":100000},"output_tokens":12}),
            json!({}),
        ),
        "nulls" => (
            json!({"prompt_tokens":20000,"completion_tokens":100,"total_tokens":null,
                "prompt_tokens_details":{"cached_tokens":null,"audio_tokens":null},"completion_tokens_details":null}),
            json!({}),
        ),
        "priority" | "flex" => (
            json!({"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500,
                "prompt_tokens_details":{"cached_tokens":200}}),
            json!({"service_tier": case}),
        ),
        "audio" => (
            json!({"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500,
                "prompt_tokens_details":{"audio_tokens":600},"completion_tokens_details":{"audio_tokens":400}}),
            json!({}),
        ),
        "search" => (
            json!({"input_tokens":1000,"output_tokens":200,"server_tool_use":{"web_search_requests":5}}),
            json!({}),
        ),
        "long" => (
            json!({"input_tokens":150000,"cache_read_input_tokens":60000,"cache_creation_input_tokens":0,"output_tokens":1000}),
            json!({}),
        ),
        other => panic!("unknown case {other:?}"),
    };
    let mut reply = if anthropic {
        if stream {
            anthropic_stream(&usage)
        } else {
            Reply::json(
                200,
                json!({"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5",
                    "content":[{"type":"text","text":"Priced."}],"stop_reason":"end_turn","usage":usage})
                .to_string(),
            )
        }
    } else if stream {
        chat_stream(&usage, &extra)
    } else {
        let mut body = json!({"id":"c1","object":"chat.completion","model":"gpt-5.1",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Priced."},"finish_reason":"stop"}],
            "usage":usage});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        Reply::json(200, body.to_string())
    };
    if seen.body["metadata"]["gzip"] == true {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for chunk in &reply.chunks {
            encoder.write_all(chunk).unwrap();
        }
        let encoded = encoder.finish().unwrap();
        let cuts: Vec<usize> = (0..encoded.len()).step_by(5).collect();
        let split = Reply::sse_split(&encoded, &cuts);
        reply.chunks = split.chunks;
        reply = reply.encoded("gzip");
    }
    reply
}

fn chat_stream(usage: &Value, extra: &Value) -> Reply {
    let tier = extra.get("service_tier").cloned().unwrap_or(Value::Null);
    let mut body = String::new();
    for piece in ["Pri", "ced."] {
        body.push_str(&format!(
            "data: {}\n\n",
            json!({"id":"c1","object":"chat.completion.chunk","service_tier":tier,
                "choices":[{"index":0,"delta":{"content":piece},"finish_reason":null}]})
        ));
    }
    body.push_str(&format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"id":"c1","object":"chat.completion.chunk","service_tier":tier,"choices":[],"usage":usage})
    ));
    let cuts: Vec<usize> = (0..body.len()).step_by(3).collect();
    Reply::sse_split(body.as_bytes(), &cuts)
}

fn anthropic_stream(usage: &Value) -> Reply {
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    let final_output = usage["output_tokens"].clone();
    let mut delta_usage = json!({"output_tokens": final_output});
    if let Some(tools) = usage.get("server_tool_use") {
        delta_usage["server_tool_use"] = tools.clone();
    }
    let events = [
        (
            "message_start",
            json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",
            "model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":start_usage}}),
        ),
        (
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        (
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Priced."}}),
        ),
        (
            "content_block_stop",
            json!({"type":"content_block_stop","index":0}),
        ),
        (
            "message_delta",
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":delta_usage}),
        ),
        ("message_stop", json!({"type":"message_stop"})),
    ];
    let body: String = events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    let cuts: Vec<usize> = (0..body.len()).step_by(2).collect();
    Reply::sse_split(body.as_bytes(), &cuts)
}

async fn gateway(backend: Backend) -> (MockUpstream, TestGateway, String) {
    let upstream = MockUpstream::start(case_reply).await;
    let gw = TestGateway::start_with(backend, &models(&upstream.base_url()), "").await;
    let (_, key) = gw.user_with_credit("priced@example.com", "100").await;
    (upstream, gw, key)
}

/// Sends one case, JSON then streamed; returns both rows.
async fn both_ways(gw: &TestGateway, key: &str, path: &str, body: Value) -> Vec<Entry> {
    let mut rows = Vec::new();
    for stream in [false, true] {
        let mut body = body.clone();
        body["stream"] = json!(stream);
        let reply = if path == "/v1/messages" {
            client::send("POST", &gw.url(path), "", Some(body), &[("x-api-key", key)]).await
        } else {
            gw.post(path, key, body).await
        };
        assert_eq!(reply.status, 200, "{}", reply.text());
        let row = gw.row(&reply.request_id()).await;
        assert_eq!(row.usage_source, "exact", "stream {stream}: {row:?}");
        rows.push(row);
    }
    rows
}

fn nano(usd: &str) -> i64 {
    tollgate::money::Money::parse_usd(usd).unwrap().nano()
}

fn chat(case: &str) -> Value {
    json!({"model": "gpt-5.1", "max_tokens": 1000, "metadata": {"case": case},
        "messages": [{"role": "user", "content": "Price this."}]})
}

fn claude(case: &str) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 1000, "metadata": {"case": case},
        "messages": [{"role": "user", "content": "Price this."}]})
}

async fn one_hour_cache_writes(backend: Backend) {
    let (_upstream, gw, key) = gateway(backend).await;
    for row in both_ways(&gw, &key, "/v1/messages", claude("write_1h")).await {
        // 6 × $3 + 100,000 × $6 (one-hour writes) + 12 × $15, per million.
        assert_eq!(row.cost_nano, nano("0.600198"), "{row:?}");
        assert_eq!(
            (row.cache_write_tokens, row.cache_write_1h_tokens),
            (0, 100_000)
        );
        assert_eq!(row.input_tokens, 100_006);
    }
    gw.finish().await;
}
both_backends!(one_hour_cache_writes);

async fn null_usage_fields_are_read(backend: Backend) {
    let (_upstream, gw, key) = gateway(backend).await;
    for row in both_ways(&gw, &key, "/v1/chat/completions", chat("nulls")).await {
        // 20,000 × $1.25 + 100 × $10, per million.
        assert_eq!(row.cost_nano, nano("0.026"), "{row:?}");
        assert_eq!((row.input_tokens, row.cached_tokens), (20_000, 0));
    }
    gw.finish().await;
}
both_backends!(null_usage_fields_are_read);

async fn compressed_answers_are_metered(backend: Backend) {
    let (upstream, gw, key) = gateway(backend).await;
    let mut body = chat("nulls");
    body["metadata"]["gzip"] = json!(true);
    for row in both_ways(&gw, &key, "/v1/chat/completions", body.clone()).await {
        assert_eq!(row.cost_nano, nano("0.026"), "{row:?}");
    }
    // The client gets the bytes as the upstream sent them.
    let reply = gw.post("/v1/chat/completions", &key, body).await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(&reply.body[..2], &[0x1f, 0x8b], "not the gzip bytes");
    drop(upstream);
    // Brotli, from the reference encoder.
    let br = MockUpstream::start(|_| {
        let mut reply = Reply::json(
            200,
            Bytes::from(fixture("openai_chat_nonstream_nulls.json.br")),
        );
        reply.encoding = Some("br");
        reply
    })
    .await;
    let gw2 = TestGateway::start_with(backend, &models(&br.base_url()), "").await;
    let (_, key2) = gw2.user_with_credit("br@example.com", "10").await;
    let reply = gw2.post("/v1/chat/completions", &key2, chat("br")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-encoding"), Some("br"));
    let row = gw2.row(&reply.request_id()).await;
    assert_eq!(
        (row.usage_source.as_str(), row.cost_nano),
        ("exact", nano("0.026"))
    );
    gw2.finish().await;
    gw.finish().await;
}
both_backends!(compressed_answers_are_metered);

async fn service_tiers_are_priced(backend: Backend) {
    let (_upstream, gw, key) = gateway(backend).await;
    for row in both_ways(&gw, &key, "/v1/chat/completions", chat("priority")).await {
        // 800 × $2.50 + 200 × $0.25 + 500 × $20, per million.
        assert_eq!(row.cost_nano, nano("0.01205"), "{row:?}");
        assert_eq!(row.service_tier.map(|t| t.as_str()), Some("priority"));
    }
    for row in both_ways(&gw, &key, "/v1/chat/completions", chat("flex")).await {
        // 800 × $0.625 + 200 × $0.0625 + 500 × $5, per million.
        assert_eq!(row.cost_nano, nano("0.0030125"), "{row:?}");
    }
    gw.finish().await;
}
both_backends!(service_tiers_are_priced);

async fn audio_tokens_are_priced(backend: Backend) {
    let (_upstream, gw, key) = gateway(backend).await;
    let mut body = chat("audio");
    body["model"] = json!("gpt-4o-audio-preview");
    for row in both_ways(&gw, &key, "/v1/chat/completions", body).await {
        // 400 × $2.50 + 600 × $40 (audio in) + 100 × $10 + 400 × $80 (audio out), per million.
        assert_eq!(row.cost_nano, nano("0.058"), "{row:?}");
        assert_eq!(
            (row.audio_input_tokens, row.audio_output_tokens),
            (600, 400)
        );
    }
    gw.finish().await;
}
both_backends!(audio_tokens_are_priced);

async fn server_tool_calls_are_priced(backend: Backend) {
    let (_upstream, gw, key) = gateway(backend).await;
    let mut body = claude("search");
    body["tools"] = json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]);
    for row in both_ways(&gw, &key, "/v1/messages", body).await {
        // 1,000 × $3 + 200 × $15, per million, + 5 searches × $0.01.
        assert_eq!(row.cost_nano, nano("0.056"), "{row:?}");
        assert_eq!(row.web_search_calls, 5);
    }
    // Responses: `web_search_call` output items.
    let upstream = MockUpstream::start(|_| {
        Reply::json(
            200,
            json!({"id":"resp_1","object":"response","status":"completed","model":"gpt-5.1",
                "output":[{"type":"web_search_call","id":"ws_1","status":"completed"},
                          {"type":"web_search_call","id":"ws_2","status":"completed"},
                          {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Found."}]}],
                "usage":{"input_tokens":100,"output_tokens":20}})
            .to_string(),
        )
    })
    .await;
    let gw2 = TestGateway::start_with(backend, &models(&upstream.base_url()), "").await;
    let (_, key2) = gw2.user_with_credit("search@example.com", "10").await;
    let reply = gw2
        .post("/v1/responses", &key2, json!({"model": "gpt-5.1", "input": "Search.", "tools": [{"type": "web_search"}], "max_output_tokens": 100}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let row = gw2.row(&reply.request_id()).await;
    // 100 × $1.25 + 20 × $10, per million, + 2 searches × $0.01.
    assert_eq!((row.web_search_calls, row.cost_nano), (2, nano("0.020325")));
    gw2.ledger_idle().await;
    assert_eq!(gw2.state.metrics.holds_exceeded(), 0);
    gw2.finish().await;
    gw.ledger_idle().await;
    assert_eq!(gw.state.metrics.holds_exceeded(), 0);
    gw.finish().await;
}
both_backends!(server_tool_calls_are_priced);

async fn long_context_is_priced(backend: Backend) {
    let (_upstream, gw, key) = gateway(backend).await;
    // A document by URL: input the gateway cannot see, held at the window.
    let mut body = claude("long");
    body["messages"] = json!([{"role": "user", "content": [
        {"type": "document", "source": {"type": "url", "url": "https://example.com/contract.pdf"}},
        {"type": "text", "text": "Summarise."}]}]);
    for row in both_ways(&gw, &key, "/v1/messages", body).await {
        // 210,000 input > 200,000: 150,000 × $6 + 60,000 × $0.60 + 1,000 × $22.50, per million.
        assert_eq!(row.cost_nano, nano("0.9585"), "{row:?}");
        assert!(row.long_context);
    }
    gw.ledger_idle().await;
    assert_eq!(gw.state.metrics.holds_exceeded(), 0);
    gw.finish().await;
}
both_backends!(long_context_is_priced);

/// The ledger rows keep the parts.
async fn rows_carry_the_parts(backend: Backend) {
    let (_upstream, gw, key) = gateway(backend).await;
    for case in ["write_1h", "search"] {
        let mut body = claude(case);
        if case == "search" {
            body["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
        }
        both_ways(&gw, &key, "/v1/messages", body).await;
    }
    gw.ledger_idle().await;
    let rows = gw
        .store()
        .usage_rows_of_account(
            &gw.row(
                &gw.post("/v1/chat/completions", &key, chat("priority"))
                    .await
                    .request_id(),
            )
            .await
            .account_id,
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows.iter().map(|r| r.cache_write_1h_tokens).sum::<i64>(),
        200_000
    );
    assert_eq!(rows.iter().map(|r| r.web_search_calls).sum::<i64>(), 10);
    gw.finish().await;
}
both_backends!(rows_carry_the_parts);
