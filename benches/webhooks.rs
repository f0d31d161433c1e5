//! Webhook delivery: how fast one gateway process's worker sends events,
//! and each event's latency from being stored to reaching the receiver.
//! Stores a burst of events (each with one delivery) in the local Postgres
//! (TOLLGATE_TEST_PG, default postgres://postgres@127.0.0.1:5432/postgres;
//! skipped without it), runs the delivery worker against a receiver on
//! loopback that answers 200 at once, and prints deliveries/s and the
//! latency p50/p99/max. `cargo bench --bench webhooks [-- EVENTS]`
//! (default 2,000).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use tollgate::store::events::{NewEvent, Webhook};
use tollgate::store::{Store, Team, User};

fn arrived_count(seen: &Arc<Mutex<HashMap<String, Instant>>>) -> usize {
    seen.lock().unwrap().len()
}

fn main() {
    let events: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(events));
}

async fn run(events: usize) {
    let admin = std::env::var("TOLLGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("tg_bench_hooks_{}", std::process::id());
    let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await else {
        println!("webhooks bench: no Postgres at {admin}; skipped");
        return;
    };
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let store = Store::connect(&url, 8).await.unwrap();
    store.migrate().await.unwrap();

    // The receiver: notes when each event id arrives.
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = arrived.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let id = request
                            .headers()
                            .get("x-tollgate-event-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let _ = request.into_body().collect().await;
                        seen.lock().unwrap().entry(id).or_insert_with(Instant::now);
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"{}",
                        ))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let now = tollgate::clock::now_ms();
    store
        .create_user(&User {
            id: "usr_bench".into(),
            email: "bench@hooks.test".into(),
            name: None,
            created_at: now,
        })
        .await
        .unwrap();
    store
        .create_team(&Team {
            id: "tm_bench".into(),
            name: "Bench".into(),
            owner_id: "usr_bench".into(),
            default_monthly_limit: None,
            enforcement: tollgate::domain::Enforcement::Hard,
            restricted_models: Vec::new(),
            invite_link_hash: None,
            created_at: now,
            low_balance: None,
        })
        .await
        .unwrap();
    store
        .create_webhook(&Webhook {
            id: "wh_bench".into(),
            team_id: "tm_bench".into(),
            url: format!("http://{addr}/hook"),
            events: vec!["member.joined".into()],
            secret: "whsec_bench".into(),
            created_by: "usr_bench".into(),
            created_at: now,
        })
        .await
        .unwrap();

    // The worker runs; the burst of events is stored while it does.
    let stop = CancellationToken::new();
    let deliverer = Arc::new(tollgate::webhooks::Deliverer::new(store.clone(), true).unwrap());
    let worker = tokio::spawn(deliverer.run(stop.clone()));
    let started = Instant::now();
    let mut stored_at: HashMap<String, Instant> = HashMap::new();
    for i in 0..events {
        let id = store
            .record_event(&NewEvent {
                team_id: "tm_bench".into(),
                kind: "member.joined",
                dedupe: format!("bench:{i}"),
                data: serde_json::json!({"user_id": format!("usr_{i}"), "email": "x@hooks.test", "role": "member"}),
                at: tollgate::clock::now_ms(),
                webhook_id: None,
            })
            .await
            .unwrap()
            .unwrap();
        stored_at.insert(id, Instant::now());
    }
    let recorded = started.elapsed();
    while arrived.lock().unwrap().len() < events {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            started.elapsed().as_secs() < 600,
            "deliveries did not finish"
        );
    }
    let total = started.elapsed();
    stop.cancel();
    let _ = worker.await;
    let seen_all = arrived.clone();
    let arrived = arrived.lock().unwrap().clone();
    let mut latencies: Vec<f64> = stored_at
        .iter()
        .map(|(id, at)| arrived[id].duration_since(*at).as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "webhooks: {events} events stored in {:.2} s; all delivered after {:.2} s: {:.0} deliveries/s; \
         stored → received p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (one process, Postgres, receiver on loopback)",
        recorded.as_secs_f64(),
        total.as_secs_f64(),
        events as f64 / total.as_secs_f64(),
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );

    // A backlog: the same number stored while no worker runs, then one
    // worker drains it.
    for i in 0..events {
        store
            .record_event(&NewEvent {
                team_id: "tm_bench".into(),
                kind: "member.joined",
                dedupe: format!("backlog:{i}"),
                data: serde_json::json!({"user_id": format!("usr_{i}"), "email": "x@hooks.test", "role": "member"}),
                at: tollgate::clock::now_ms(),
                webhook_id: None,
            })
            .await
            .unwrap();
    }
    let before = arrived_count(&seen_all);
    let stop = CancellationToken::new();
    let deliverer = Arc::new(tollgate::webhooks::Deliverer::new(store.clone(), true).unwrap());
    let drain_started = Instant::now();
    let worker = tokio::spawn(deliverer.run(stop.clone()));
    while arrived_count(&seen_all) < before + events {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            drain_started.elapsed().as_secs() < 600,
            "the backlog did not drain"
        );
    }
    let drained = drain_started.elapsed();
    stop.cancel();
    let _ = worker.await;
    println!(
        "webhooks: a backlog of {events} drained by one worker in {:.2} s: {:.0} deliveries/s",
        drained.as_secs_f64(),
        events as f64 / drained.as_secs_f64()
    );
    store.close().await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await;
}
