//! 200 concurrent requests against a balance that covers only part of them:
//! the balance never goes below zero, and spend equals the settled rows.

use std::sync::Arc;

use serde_json::json;
use tollgate::money::Money;

use crate::both_backends;
use crate::helpers::fixture;
use crate::helpers::gateway::{Backend, TestGateway};
use crate::helpers::upstream::{MockUpstream, Reply};

async fn concurrent_requests_never_overspend(backend: Backend) {
    overspend_check(backend, "").await;
}
both_backends!(concurrent_requests_never_overspend);

/// Three serving cores (`server.per_core`, the default, has one per CPU):
/// connections land on different cores and race for one balance.
async fn concurrent_requests_never_overspend_on_three_cores(backend: Backend) {
    overspend_check(backend, "worker_threads = 3").await;
}
both_backends!(concurrent_requests_never_overspend_on_three_cores);

/// The same with one shared work-stealing runtime (`per_core = false`).
async fn concurrent_requests_never_overspend_shared(backend: Backend) {
    overspend_check(backend, "per_core = false").await;
}
both_backends!(concurrent_requests_never_overspend_shared);

async fn overspend_check(backend: Backend, server: &str) {
    // Each answer costs 2006 prompt (1920 cached) + 300 output of gpt-5.1:
    // $0.0033475. Each hold is larger (the body bound plus 400 tokens).
    let upstream = MockUpstream::start(|_| {
        Reply::json(200, fixture("openai_chat_nonstream_cached_reasoning.json"))
    })
    .await;
    let models = crate::helpers::gateway::standard_models(&upstream.base_url());
    let gw = Arc::new(TestGateway::start_with(backend, &models, server).await);
    let (user_id, key) = gw.user_with_credit("burst@example.com", "0.25").await;
    let body = json!({"model": "gpt-5.1", "max_tokens": 400, "messages": [{"role": "user", "content": "total?"}]});
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let gw = gw.clone();
        let key = key.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            gw.post("/v1/chat/completions", &key, body).await.status
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            200 => ok += 1,
            402 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok + refused, 200);
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    gw.ledger_idle().await;
    let rows = gw.store().usage_rows_of_account(&user_id).await.unwrap();
    let spent: i64 = rows.iter().map(|r| r.cost_nano).sum();
    let served = rows.iter().filter(|r| r.status == "ok").count();
    assert_eq!(served, ok);
    assert_eq!(
        spent,
        ok as i64 * Money::parse_usd("0.0033475").unwrap().nano()
    );
    let balance = Money::parse_usd(&gw.balance(&key).await).unwrap();
    assert!(balance.nano() >= 0, "balance went negative: {balance}");
    assert_eq!(
        balance.nano(),
        Money::parse_usd("0.25").unwrap().nano() - spent
    );
    assert_eq!(gw.state.metrics.reservations_outstanding(), 0);
    Arc::try_unwrap(gw).ok().unwrap().finish().await;
}
