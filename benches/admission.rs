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

criterion_group!(benches, admission);
criterion_main!(benches);
