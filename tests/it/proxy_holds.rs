//! The bill cannot be escaped (contract §5): each request shape a member
//! could use to spend past a balance, against an upstream that reports the
//! most usage the shape allows. The balance never goes below zero, no
//! settled cost exceeds its hold (`tollgate_hold_exceeded_total` stays 0),
//! and refusals carry their figures.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tollgate::money::Money;

use crate::both_backends;
use crate::helpers::client;
use crate::helpers::gateway::{standard_models, Backend, TestGateway};
use crate::helpers::upstream::{MockUpstream, Reply, Seen};

/// Input tokens the greedy upstream loads for a request that names stored
/// input (gpt-5.1's window is 400,000).
const HIDDEN_INPUT: u64 = 390_000;
/// Output per choice when the request sets no max-tokens field: a long
/// reasoning answer.
const UNBOUNDED_ANSWER: u64 = 60_000;
/// Reasoning tokens one thinking tick of the paced streams stands for.
const TICK_TOKENS: u64 = 50;

/// A model with no context window (not in the built-in table).
const LOCAL_MODEL: &str = r#"
[[models]]
name = "local-llm"
provider = "up"
input_usd_per_mtok = "1"
output_usd_per_mtok = "2"
"#;

fn usage_of(seen: &Seen) -> (u64, u64) {
    let body = &seen.body;
    let text = body.to_string();
    let hidden = ["previous_response_id", "conversation"]
        .iter()
        .any(|f| !body[*f].is_null())
        || text.contains("https://");
    // Every byte a token: the most a byte-level tokenizer can make.
    let input = if hidden {
        HIDDEN_INPUT
    } else {
        text.len() as u64
    };
    let per_choice = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .filter_map(|f| body[*f].as_u64())
        .filter(|v| *v > 0)
        .max()
        .unwrap_or(UNBOUNDED_ANSWER);
    let choices = body["n"]
        .as_u64()
        .unwrap_or(1)
        .max(body["best_of"].as_u64().unwrap_or(1))
        .max(1);
    (input, per_choice * choices)
}

fn usage_json(input: u64, output: u64) -> Value {
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output,
        "completion_tokens_details": {"reasoning_tokens": output.saturating_sub(1)}})
}

/// An upstream that bills the most each request allows.
pub fn greedy(seen: &Seen) -> Reply {
    let (input, output) = usage_of(seen);
    let usage = usage_json(input, output);
    if seen.body["stream"].as_bool().unwrap_or(false) {
        let mut body = String::new();
        body.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
        body.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Done.\"},\"finish_reason\":\"stop\"}]}\n\n");
        if seen.body["stream_options"]["include_usage"] == true {
            body.push_str(&format!(
                "data: {}\n\n",
                json!({"id":"c","object":"chat.completion.chunk","choices":[],"usage":usage})
            ));
        }
        body.push_str("data: [DONE]\n\n");
        let cuts: Vec<usize> = (0..body.len()).step_by(13).collect();
        return Reply::sse_split(body.as_bytes(), &cuts);
    }
    Reply::json(
        200,
        json!({"id":"c","object":"chat.completion","model":"gpt-5.1",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Done."},"finish_reason":"stop"}],
            "usage":usage})
        .to_string(),
    )
}

/// A reasoning-first stream: `ticks` silent thinking beats of
/// `TICK_TOKENS` each, paced, then the answer and its usage.
fn thinking_stream(ticks: usize, pause: Duration) -> Reply {
    let mut chunks = vec![Bytes::from_static(
        b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    )];
    for _ in 0..ticks {
        chunks.push(Bytes::from_static(b": thinking\n\n"));
    }
    let reasoning = ticks as u64 * TICK_TOKENS;
    chunks.push(Bytes::from_static(
        b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"42\"},\"finish_reason\":\"stop\"}]}\n\n",
    ));
    chunks.push(Bytes::from(format!(
        "data: {}\n\n",
        json!({"id":"c","object":"chat.completion.chunk","choices":[],
            "usage":{"prompt_tokens":20,"completion_tokens":reasoning + 1,"total_tokens":reasoning + 21,
                "completion_tokens_details":{"reasoning_tokens":reasoning}}})
    )));
    chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let mut reply = Reply::sse_split(b"x", &[]).paced(pause);
    reply.chunks = chunks;
    reply
}

async fn gateway(backend: Backend, upstream: &MockUpstream, extra: &str) -> TestGateway {
    let models = format!("{}{LOCAL_MODEL}", standard_models(&upstream.base_url()));
    TestGateway::start_with(backend, &models, extra).await
}

fn money(text: &str) -> Money {
    Money::parse_usd(text).unwrap()
}

async fn balance(gw: &TestGateway, key: &str) -> Money {
    money(&gw.balance(key).await)
}

fn chat(extra: Value) -> Value {
    let mut body =
        json!({"model": "gpt-5.1", "messages": [{"role": "user", "content": "Think hard."}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// A 402 on the balance, with its figures.
fn assert_balance_refusal(reply: &client::Reply, balance: &str) -> Money {
    assert_eq!(reply.status, 402, "{}", reply.text());
    let error = &reply.json()["error"];
    assert_eq!(error["code"], "insufficient_balance");
    assert_eq!(error["type"], "insufficient_quota");
    assert_eq!(error["scope"], "balance");
    assert_eq!(error["balance_usd"], balance, "{error}");
    let hold = money(error["hold_usd"].as_str().unwrap());
    assert!(hold > money(balance));
    hold
}

async fn no_hold_broken(gw: &TestGateway) {
    gw.ledger_idle().await;
    assert_eq!(
        gw.state.metrics.holds_exceeded(),
        0,
        "a cost exceeded its hold"
    );
    assert_eq!(gw.state.metrics.reservations_outstanding(), 0);
}

async fn n_choices_are_held(backend: Backend) {
    let upstream = MockUpstream::start(greedy).await;
    let gw = gateway(backend, &upstream, "").await;
    let (_, poor) = gw.user_with_credit("poor@example.com", "0.10").await;
    let body = chat(json!({"n": 128, "max_completion_tokens": 4096}));
    let refused = gw.post("/v1/chat/completions", &poor, body.clone()).await;
    let hold = assert_balance_refusal(&refused, "0.1");
    // 128 × 4096 output tokens at $10/M.
    assert!(hold >= money("5.24288"), "{hold}");
    println!("n=128 × 4096 on $0.10: 402, hold ${hold}");
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("128 choices"));
    assert_eq!(balance(&gw, &poor).await, money("0.10"));
    // Legacy completions: best_of counts too.
    let refused = gw
        .post(
            "/v1/completions",
            &poor,
            json!({"model": "gpt-5.1", "prompt": "x", "best_of": 20, "max_tokens": 1000}),
        )
        .await;
    assert_balance_refusal(&refused, "0.1");
    // Served when the balance covers every choice; the bill stays within.
    let (_, rich) = gw.user_with_credit("rich@example.com", "6").await;
    let served = gw.post("/v1/chat/completions", &rich, body).await;
    assert_eq!(served.status, 200, "{}", served.text());
    let row = gw.row(&served.request_id()).await;
    assert_eq!(row.output_tokens, 128 * 4096);
    assert!(balance(&gw, &rich).await >= Money::ZERO);
    no_hold_broken(&gw).await;
    assert!(
        upstream.seen().len() == 1,
        "a refused request reached the upstream"
    );
    gw.finish().await;
}
both_backends!(n_choices_are_held);

async fn no_max_field_holds_the_models_largest_answer(backend: Backend) {
    let upstream = MockUpstream::start(greedy).await;
    let gw = gateway(backend, &upstream, "").await;
    let (_, poor) = gw.user_with_credit("poor@example.com", "0.10").await;
    let refused = gw
        .post("/v1/chat/completions", &poor, chat(json!({})))
        .await;
    let hold = assert_balance_refusal(&refused, "0.1");
    // gpt-5.1 answers up to 128,000 tokens: $1.28 at $10/M.
    assert!(hold >= money("1.28"), "{hold}");
    println!("no max field on $0.10: 402, hold ${hold}");
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("send max_tokens"), "{message}");
    // `max_completion_tokens: 0` is ignored; the largest field binds.
    let refused = gw
        .post(
            "/v1/chat/completions",
            &poor,
            chat(json!({"max_completion_tokens": 0, "max_tokens": 100000})),
        )
        .await;
    let hold = assert_balance_refusal(&refused, "0.1");
    assert!(hold >= money("1.0"), "{hold}");
    println!("max_completion_tokens 0 + max_tokens 100000 on $0.10: 402, hold ${hold}");
    assert!(!refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("send max_tokens"));
    // Numeric strings count as lenient upstreams read them.
    let refused = gw
        .post(
            "/v1/chat/completions",
            &poor,
            chat(json!({"max_tokens": "100000"})),
        )
        .await;
    assert_balance_refusal(&refused, "0.1");
    // A 60k-token reasoning answer on a balance that covers the hold.
    let (_, rich) = gw.user_with_credit("rich@example.com", "2").await;
    let served = gw
        .post("/v1/chat/completions", &rich, chat(json!({})))
        .await;
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(
        gw.row(&served.request_id()).await.output_tokens,
        UNBOUNDED_ANSWER as i64
    );
    assert!(balance(&gw, &rich).await >= Money::ZERO);
    no_hold_broken(&gw).await;
    gw.finish().await;
}
both_backends!(no_max_field_holds_the_models_largest_answer);

async fn hidden_input_is_held_at_the_context_window(backend: Backend) {
    let upstream = MockUpstream::start(greedy).await;
    let gw = gateway(backend, &upstream, "").await;
    let (_, poor) = gw.user_with_credit("poor@example.com", "0.01").await;
    let shapes = [
        json!({"model": "gpt-5.1", "previous_response_id": "resp_1", "input": "go on", "max_output_tokens": 100}),
        json!({"model": "gpt-5.1", "conversation": "conv_1", "input": "go on", "max_output_tokens": 100}),
        json!({"model": "gpt-5.1", "prompt": {"id": "pmpt_1"}, "max_output_tokens": 100}),
        json!({"model": "gpt-5.1", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://example.com/a.png"}]}], "max_output_tokens": 100}),
        json!({"model": "gpt-5.1", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}], "max_output_tokens": 100}),
    ];
    for shape in shapes {
        let refused = gw.post("/v1/responses", &poor, shape.clone()).await;
        let hold = assert_balance_refusal(&refused, "0.01");
        // 400,000 tokens of window at $1.25/M.
        assert!(hold >= money("0.5"), "{shape}: {hold}");
        println!("hidden input on $0.01: 402, hold ${hold}: {shape}");
    }
    // Twenty at once on $0.01: none served.
    let gw = Arc::new(gw);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (gw, key) = (gw.clone(), poor.clone());
        tasks.push(tokio::spawn(async move {
            gw.post("/v1/responses", &key, json!({"model": "gpt-5.1", "previous_response_id": "resp_1", "max_output_tokens": 100}))
                .await
                .status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 402);
    }
    assert!(upstream.seen().is_empty());
    assert_eq!(balance(&gw, &poor).await, money("0.01"));
    // A model without a context window cannot bound such a request.
    let unbounded = gw
        .post("/v1/responses", &poor, json!({"model": "local-llm", "previous_response_id": "resp_1", "max_output_tokens": 10}))
        .await;
    assert_eq!(unbounded.status, 400, "{}", unbounded.text());
    assert_eq!(unbounded.json()["error"]["code"], "unmeterable_request");
    assert_eq!(unbounded.json()["error"]["param"], "previous_response_id");
    Arc::try_unwrap(gw).ok().unwrap().finish().await;
}
both_backends!(hidden_input_is_held_at_the_context_window);

async fn parallel_hidden_input_serves_only_what_the_balance_covers(backend: Backend) {
    let upstream = MockUpstream::start(greedy).await;
    let gw = Arc::new(gateway(backend, &upstream, "").await);
    // Each hold: 400,000 × $1.25/M + 100 × $10/M = $0.501; each answer
    // loads 390,000 tokens: $0.4885. $1.60 covers three holds, not four.
    let (_, key) = gw.user_with_credit("burst@example.com", "1.60").await;
    let body = json!({"model": "gpt-5.1", "previous_response_id": "resp_1", "input": "more", "max_output_tokens": 100});
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (gw, key, body) = (gw.clone(), key.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            gw.post("/v1/responses", &key, body).await.status
        }));
    }
    let mut served = 0;
    for task in tasks {
        match task.await.unwrap() {
            200 => served += 1,
            402 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!((1..=3).contains(&served), "served {served}");
    let left = balance(&gw, &key).await;
    assert!(left >= Money::ZERO);
    println!("200 parallel previous_response_id on $1.60 ({backend:?}): served {served}, balance ${left}");
    no_hold_broken(&gw).await;
    Arc::try_unwrap(gw).ok().unwrap().finish().await;
}
both_backends!(parallel_hidden_input_serves_only_what_the_balance_covers);

async fn every_byte_may_be_a_token(backend: Backend) {
    let upstream = MockUpstream::start(greedy).await;
    let gw = gateway(backend, &upstream, "").await;
    let (_, key) = gw.user_with_credit("bytes@example.com", "1").await;
    // Rare characters: the greedy upstream bills a token per byte.
    let text: String = "\u{10FFFF}\u{E000}ꙮ".repeat(3000);
    let served = gw
        .post(
            "/v1/chat/completions",
            &key,
            chat(json!({"max_tokens": 10, "messages": [{"role": "user", "content": text}]})),
        )
        .await;
    assert_eq!(served.status, 200, "{}", served.text());
    no_hold_broken(&gw).await;
    assert!(balance(&gw, &key).await >= Money::ZERO);
    gw.finish().await;
}
both_backends!(every_byte_may_be_a_token);

async fn stream_usage_cannot_be_turned_off(backend: Backend) {
    let upstream = MockUpstream::start(greedy).await;
    let gw = gateway(backend, &upstream, "").await;
    let (_, key) = gw.user_with_credit("stream@example.com", "5").await;
    for options in [Value::Null, json!(false), json!("off")] {
        let reply = gw
            .post(
                "/v1/chat/completions",
                &key,
                chat(json!({"stream": true, "stream_options": options})),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(
            !reply.text().contains("\"usage\""),
            "usage chunk shown: {}",
            reply.text()
        );
        let row = gw.row(&reply.request_id()).await;
        assert_eq!(row.usage_source, "exact");
        assert_eq!(row.output_tokens, UNBOUNDED_ANSWER as i64);
        let seen = upstream.seen();
        assert_eq!(
            seen.last().unwrap().body["stream_options"],
            json!({"include_usage": true})
        );
    }
    no_hold_broken(&gw).await;
    gw.finish().await;
}
both_backends!(stream_usage_cannot_be_turned_off);

/// Opens a stream, reads its headers (and `frames` body frames), leaves.
async fn leave_early(gw: &TestGateway, key: &str, body: Value, frames: usize) -> String {
    let mut response = client::open("POST", &gw.url("/v1/chat/completions"), key, Some(body)).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    for _ in 0..frames {
        let _ = response.body_mut().frame().await;
    }
    drop(response);
    request_id
}

async fn a_client_that_leaves_pays_what_the_upstream_bills(backend: Backend) {
    // 20 thinking beats of 50 tokens, 40 ms apart: the whole answer is
    // 1,001 output tokens, settled after the client has gone.
    let upstream = MockUpstream::start(|_| thinking_stream(20, Duration::from_millis(40))).await;
    let gw = gateway(backend, &upstream, "").await;
    let (_, key) = gw.user_with_credit("leaver@example.com", "1").await;
    let body = chat(json!({"stream": true, "max_completion_tokens": 20000}));
    let request_id = leave_early(&gw, &key, body, 1).await;
    let row = gw.row(&request_id).await;
    assert_eq!(row.status, "client_closed");
    assert_eq!(row.usage_source, "exact", "{row:?}");
    assert_eq!(row.output_tokens, 20 * TICK_TOKENS as i64 + 1);
    assert_eq!(row.input_tokens, 20);
    no_hold_broken(&gw).await;
    gw.finish().await;
}
both_backends!(a_client_that_leaves_pays_what_the_upstream_bills);

async fn a_client_that_leaves_before_the_headers_still_pays(backend: Backend) {
    let upstream = MockUpstream::start(|_| {
        thinking_stream(4, Duration::from_millis(10)).delay_headers(Duration::from_millis(400))
    })
    .await;
    let gw = gateway(backend, &upstream, "").await;
    let (_, key) = gw.user_with_credit("impatient@example.com", "1").await;
    let body = chat(json!({"stream": true, "max_completion_tokens": 20000}));
    let gone = tokio::time::timeout(
        Duration::from_millis(100),
        client::open("POST", &gw.url("/v1/chat/completions"), &key, Some(body)),
    )
    .await;
    assert!(gone.is_err(), "the upstream answered early");
    for _ in 0..500 {
        if gw.state.metrics.reservations_outstanding() == 0 && !upstream.delivered().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.ledger_idle().await;
    let before = balance(&gw, &key).await;
    // 4 × 50 + 1 output tokens at $10/M and 20 input at $1.25/M.
    assert_eq!(before, money("0.997965"), "billed {before}");
    no_hold_broken(&gw).await;
    gw.finish().await;
}
both_backends!(a_client_that_leaves_before_the_headers_still_pays);

async fn cancel_bills_no_less_than_was_generated(backend: Backend) {
    // A long think: 200 beats 25 ms apart (5 s), cut after about 0.5 s.
    let upstream = MockUpstream::start(|_| thinking_stream(200, Duration::from_millis(25))).await;
    let gw = gateway(
        backend,
        &upstream,
        "[metering]\non_client_disconnect = \"cancel\"",
    )
    .await;
    let (_, key) = gw.user_with_credit("canceller@example.com", "1").await;
    let body = chat(json!({"stream": true, "max_completion_tokens": 20000}));
    let mut response =
        client::open("POST", &gw.url("/v1/chat/completions"), &key, Some(body)).await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let _ = response.body_mut().frame().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(response);
    let row = gw.row(&request_id).await;
    assert_eq!(row.status, "client_closed");
    assert_eq!(row.usage_source, "partial");
    // What the upstream generated before it saw the cut.
    let mut delivered = Vec::new();
    for _ in 0..500 {
        delivered = upstream.delivered();
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let generated = delivered[0] as i64 * TICK_TOKENS as i64;
    println!(
        "cancel after 0.5 s: upstream generated {generated} tokens, billed {} (${})",
        row.output_tokens,
        Money::from_nano(row.cost_nano)
    );
    assert!(
        row.output_tokens >= generated,
        "billed {} < generated {generated}",
        row.output_tokens
    );
    assert!(
        row.output_tokens <= 20_000,
        "billed past the hold: {}",
        row.output_tokens
    );
    assert!(delivered[0] < 200, "the upstream was not cancelled");
    no_hold_broken(&gw).await;
    gw.finish().await;
}
both_backends!(cancel_bills_no_less_than_was_generated);

async fn background_and_unreadable_counts_are_refused(backend: Backend) {
    let upstream = MockUpstream::start(greedy).await;
    let gw = gateway(backend, &upstream, "").await;
    let (_, key) = gw.user_with_credit("bg@example.com", "5").await;
    let refused = gw
        .post(
            "/v1/responses",
            &key,
            json!({"model": "gpt-5.1", "input": "hi", "background": true, "max_output_tokens": 10}),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "unmeterable_request");
    assert_eq!(refused.json()["error"]["param"], "background");
    let refused = gw
        .post(
            "/v1/chat/completions",
            &key,
            chat(json!({"max_tokens": {"value": 10}})),
        )
        .await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"]["param"], "max_tokens");
    // A repeated field: upstreams differ on which copy wins.
    let text = r#"{"model":"gpt-5.1","max_tokens":10,"messages":[],"max_tokens":100000}"#;
    let request = http::Request::builder()
        .method("POST")
        .uri(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from_static(
            text.as_bytes(),
        )))
        .unwrap();
    let refused = client::send_raw(request).await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(refused.json()["error"]["param"], "max_tokens");
    assert!(upstream.seen().is_empty());
    assert_eq!(balance(&gw, &key).await, money("5"));
    gw.finish().await;
}
both_backends!(background_and_unreadable_counts_are_refused);

async fn anthropic_refusals_carry_the_figures(backend: Backend) {
    let upstream = MockUpstream::start(greedy).await;
    let gw = gateway(backend, &upstream, "").await;
    let (_, key) = gw.user_with_credit("claude@example.com", "0.01").await;
    let refused = client::send(
        "POST",
        &gw.url("/v1/messages"),
        "",
        Some(json!({"model": "claude-sonnet-4-5", "max_tokens": 64000, "messages": [{"role": "user", "content": "hi"}]})),
        &[("x-api-key", &key)],
    )
    .await;
    assert_eq!(refused.status, 402, "{}", refused.text());
    let body = refused.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "billing_error");
    assert_eq!(body["error"]["scope"], "balance");
    assert_eq!(body["error"]["balance_usd"], "0.01");
    assert!(money(body["error"]["hold_usd"].as_str().unwrap()) >= money("0.96"));
    gw.finish().await;
}
both_backends!(anthropic_refusals_carry_the_figures);

async fn a_cost_above_its_hold_is_billed_and_counted(backend: Backend) {
    // An upstream that reports ten times what the request allowed.
    let upstream = MockUpstream::start(|_| {
        Reply::json(
            200,
            json!({"id":"c","object":"chat.completion","choices":[],"usage":usage_json(10, 1000)})
                .to_string(),
        )
    })
    .await;
    let gw = gateway(backend, &upstream, "").await;
    let (_, key) = gw.user_with_credit("over@example.com", "1").await;
    let served = gw
        .post(
            "/v1/chat/completions",
            &key,
            chat(json!({"max_tokens": 100})),
        )
        .await;
    assert_eq!(served.status, 200);
    let row = gw.row(&served.request_id()).await;
    assert_eq!(row.output_tokens, 1000);
    // Billed in full: 10 × $1.25/M + 1000 × $10/M.
    assert_eq!(row.cost_nano, money("0.0100125").nano());
    gw.ledger_idle().await;
    assert_eq!(gw.state.metrics.holds_exceeded(), 1);
    let metrics = client::send("GET", &gw.url("/metrics"), "", None, &[]).await;
    assert!(
        metrics.text().contains("tollgate_hold_exceeded_total 1"),
        "{}",
        metrics.text()
    );
    gw.finish().await;
}
both_backends!(a_cost_above_its_hold_is_billed_and_counted);
