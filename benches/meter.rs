//! Micro-benchmarks of the metering hot path: SSE framing and usage
//! extraction per MB and per chunk, JSON usage extraction, and pricing.
//! Run with `cargo bench --bench meter`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tollgate::meter::{usage_from_json, Protocol, StreamMeter, Usage};
use tollgate::money::PricePerMtok;
use tollgate::pricing::ModelPrice;

/// A realistic chat stream: `n` content chunks and a usage chunk.
fn chat_stream(n: usize) -> Vec<u8> {
    let mut body = String::new();
    for i in 0..n {
        body.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token{i} \"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    body.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"total_tokens\":29}}\n\ndata: [DONE]\n\n");
    body.into_bytes()
}

fn sse(c: &mut Criterion) {
    let body = chat_stream(2000);
    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Bytes(body.len() as u64));
    for (name, chunk) in [
        ("whole", body.len()),
        ("64B reads", 64),
        ("1400B reads", 1400),
    ] {
        group.bench_function(format!("chat stream, {name}"), |b| {
            b.iter(|| {
                let mut meter = StreamMeter::new(Protocol::OpenAiChat, true);
                for piece in body.chunks(chunk) {
                    meter.feed(piece, |_, _| {});
                }
                meter.finish();
                black_box(meter.reported_usage())
            })
        });
    }
    group.finish();

    let one = chat_stream(1);
    let first_event = &one[..one.iter().position(|&b| b == b'\n').unwrap() + 2];
    let mut group = c.benchmark_group("sse per chunk");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one content chunk", |b| {
        let mut meter = StreamMeter::new(Protocol::OpenAiChat, false);
        b.iter(|| meter.feed(black_box(first_event), |_, _| {}))
    });
    group.finish();
}

fn json_and_pricing(c: &mut Criterion) {
    let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-5.1","choices":[{"index":0,"message":{"role":"assistant","content":"The invoice total is $1,284.50."},"finish_reason":"stop"}],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920},"completion_tokens_details":{"reasoning_tokens":192}}}"#;
    c.bench_function("usage from JSON body", |b| {
        b.iter(|| black_box(usage_from_json(Protocol::OpenAiChat, black_box(body))))
    });
    let price = ModelPrice::simple(tollgate::pricing::Rates {
        cached_input: Some(PricePerMtok::parse("0.125").unwrap()),
        ..tollgate::pricing::Rates::new(
            PricePerMtok::parse("1.25").unwrap(),
            PricePerMtok::parse("10").unwrap(),
        )
    });
    let usage = Usage {
        input_tokens: 2006,
        cached_tokens: 1920,
        output_tokens: 300,
        ..Usage::default()
    };
    c.bench_function("price one request", |b| {
        b.iter(|| black_box(price.cost(black_box(&usage))))
    });
}

criterion_group!(benches, sse, json_and_pricing);
criterion_main!(benches);
