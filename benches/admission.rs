//! The admission step (hold, then settle) against in-process and Redis
//! counters, personal billing vs team billing with a hard monthly limit.
//! Run with `cargo bench --bench admission` (the Redis cases need Redis on
//! 127.0.0.1:6379, or TOLLGATE_BENCH_REDIS; they are skipped without it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::counters::{CounterKey, Counters, Reserve, SpendHold};
use tollgate::money::Money;

fn admission(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut backends = vec![("memory", Counters::memory())];
    let url =
        std::env::var("TOLLGATE_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("tgbench:{}", std::process::id());
    match runtime.block_on(Counters::redis(&url, &prefix, None)) {
        Ok(redis) if runtime.block_on(redis.ping()).is_ok() => backends.push(("redis", redis)),
        _ => eprintln!("Redis not reachable at {url}: Redis cases skipped."),
    }
    let hold = Money::parse_usd("0.004").unwrap();
    let cost = Money::parse_usd("0.0033475").unwrap();
    for (name, counters) in &backends {
        runtime.block_on(async {
            counters
                .seed(
                    &CounterKey::Balance("bench-owner".into()),
                    Money::parse_usd("1000000").unwrap(),
                )
                .await
                .unwrap();
            counters
                .seed(
                    &CounterKey::Spend("bench-team:bench-member:2026-11".into()),
                    Money::ZERO,
                )
                .await
                .unwrap();
        });
        let mut group = c.benchmark_group(format!("admission/{name}"));
        group.bench_function("personal: hold + settle", |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let id = tollgate::keys::new_request_id();
                    let Reserve::Held { stamps, .. } =
                        counters.reserve("bench-owner", hold, None).await.unwrap()
                    else {
                        panic!("not held");
                    };
                    counters
                        .settle("bench-owner", None, hold, cost, &stamps, &id)
                        .await
                        .unwrap();
                })
            })
        });
        let limit = Some(Money::parse_usd("1000000").unwrap());
        group.bench_function("team, hard limit: hold + settle", |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let key = "bench-team:bench-member:2026-11";
                    let spend = SpendHold {
                        key,
                        hard_limit: limit,
                    };
                    let id = tollgate::keys::new_request_id();
                    let Reserve::Held { stamps, .. } = counters
                        .reserve("bench-owner", hold, Some(spend))
                        .await
                        .unwrap()
                    else {
                        panic!("not held");
                    };
                    counters
                        .settle("bench-owner", Some(key), hold, cost, &stamps, &id)
                        .await
                        .unwrap();
                })
            })
        });
        group.finish();
    }
    if backends.len() > 1 {
        // Leave nothing behind in the shared Redis.
        runtime.block_on(async {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}:*"))
                .query_async(&mut conn)
                .await
                .unwrap();
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL")
                    .arg(keys)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        });
    }
}

/// The head read before holds became an upper bound (issue 11): six
/// fields, everything else skipped by serde. The baseline of `bound`.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct HeadBefore {
    #[serde(default)]
    model: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_output_tokens: Option<serde_json::Value>,
    #[serde(default)]
    stream_options: Option<serde_json::Value>,
}

/// Reading a body for admission: the old head parse against the one scan
/// plus the bound that replaced it, on the same bodies in the same run.
fn bound(c: &mut Criterion) {
    use tollgate::bound::{self as hold, ModelLimits};
    use tollgate::money::PricePerMtok;
    use tollgate::pricing::ModelPrice;

    let price = ModelPrice::simple(tollgate::pricing::Rates {
        cached_input: Some(PricePerMtok::parse("0.125").unwrap()),
        ..tollgate::pricing::Rates::new(
            PricePerMtok::parse("1.25").unwrap(),
            PricePerMtok::parse("10").unwrap(),
        )
    });
    let limits = ModelLimits {
        context_window: Some(400_000),
        max_output_tokens: 128_000,
    };
    let message = |i: usize, len: usize| {
        serde_json::json!({"role": if i % 2 == 0 { "user" } else { "assistant" },
            "content": "The invoice total is due on the first of the month. ".repeat(len / 52 + 1)})
    };
    let chat = |messages: usize, len: usize| {
        let messages: Vec<_> = (0..messages).map(|i| message(i, len)).collect();
        serde_json::to_vec(&serde_json::json!({"model": "gpt-5.1", "max_tokens": 500,
            "stream": true, "messages": messages}))
        .unwrap()
    };
    let tools: Vec<_> = (0..20)
        .map(|i| serde_json::json!({"type": "function", "name": format!("tool_{i}"),
            "parameters": {"type": "object", "properties": {"url": {"type": "string"}, "q": {"type": "string"}}}}))
        .collect();
    let parts: Vec<_> = (0..40)
        .map(|i| serde_json::json!({"role": "user", "content": [
            {"type": "input_text", "text": "Describe this picture in detail, please. ".repeat(30)},
            {"type": "input_image", "image_url": format!("data:image/png;base64,{}", "iVBORw0KGgo".repeat(10 + i))}]}))
        .collect();
    let responses = serde_json::to_vec(&serde_json::json!({"model": "gpt-5.1",
        "max_output_tokens": 2000, "input": parts, "tools": tools}))
    .unwrap();
    let bodies = [
        ("chat 200 B", chat(1, 100)),
        ("chat 8 KB", chat(10, 750)),
        ("responses 64 KB, images and tools", responses),
        ("chat 1 MB", chat(40, 25_000)),
    ];
    let mut group = c.benchmark_group("bound");
    for (name, body) in &bodies {
        group.throughput(criterion::Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("{name}: head parse before"), |b| {
            b.iter(|| serde_json::from_slice::<HeadBefore>(std::hint::black_box(body)).unwrap())
        });
        group.bench_function(format!("{name}: scan + bound"), |b| {
            b.iter(|| {
                let shape = hold::scan(std::hint::black_box(body)).unwrap();
                hold::bound(&shape, body.len(), true, &limits, &price).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, admission, bound);
criterion_main!(benches);
