//! The ledger writer's insert path into Postgres: rows/s for batches of 500,
//! with in-process counters (a plain insert) and with Redis counters (counter
//! locks and the rebuild check). Needs the local Postgres (TOLLGATE_TEST_PG,
//! default postgres://postgres@127.0.0.1:5432/postgres) and Redis; skipped
//! without them. Run with `cargo bench --bench ledger`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sqlx::Connection;
use tollgate::counters::Counters;
use tollgate::domain::{Source, Status};
use tollgate::ledger::{self, Entry};
use tollgate::store::Store;

const BATCH: usize = 500;

fn rows(batch: u64) -> Vec<Entry> {
    (0..BATCH)
        .map(|i| {
            let user = format!("usr_{}", i % 50);
            let mut entry = Entry::draft(
                format!("req_bench_{batch}_{i}").into(),
                &user,
                "key_bench",
                "chat.completions",
                1_795_852_800_000 + i as i64,
            );
            entry.team_id = Some("tm_bench".into());
            entry.model = "gpt-4o-mini".into();
            entry.provider = "up".into();
            entry.input_tokens = 1200;
            entry.output_tokens = 300;
            entry.cost_nano = 3_347_500;
            entry.usage_source = Source::Exact;
            entry.status = Status::Ok;
            entry.http_status = 200;
            entry.finished_at = 1_795_852_800_100 + i as i64;
            entry
        })
        .collect()
}

fn ledger(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let admin = std::env::var("TOLLGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("tg_bench_{}", std::process::id());
    let created = runtime.block_on(async {
        let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .ok()?;
        Some(())
    });
    if created.is_none() {
        eprintln!("Postgres not reachable at {admin}: ledger bench skipped.");
        return;
    }
    let url = format!(
        "{}/{name}",
        admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(root, _)| root)
    );
    let store = runtime.block_on(async {
        let store = Store::connect(&url, 4).await.unwrap();
        store.migrate().await.unwrap();
        store
    });
    let redis_url =
        std::env::var("TOLLGATE_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut backends = vec![("memory counters", Counters::memory())];
    if let Ok(redis) = runtime.block_on(Counters::redis(
        &redis_url,
        &format!("tgbench{}", std::process::id()),
        None,
    )) {
        backends.push(("redis counters", redis));
    }
    let mut group = c.benchmark_group("ledger into postgres");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    let mut batch = 0u64;
    for (label, counters) in &backends {
        group.bench_function(format!("batch of {BATCH}, {label}"), |b| {
            b.iter(|| {
                batch += 1;
                let rows = rows(batch);
                runtime
                    .block_on(ledger::write_rows(&store, counters, &rows))
                    .unwrap()
            })
        });
    }
    group.finish();
    runtime.block_on(async {
        store.close().await;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    });
}

criterion_group!(benches, ledger);
criterion_main!(benches);
