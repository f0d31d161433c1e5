//! The gateway around the proxy: shutdown drains the ledger, the ops
//! routes answer, and a stalled ledger refuses new requests.

use crate::both_backends;
use crate::helpers::client;
use crate::helpers::gateway::{standard_models, Backend, TestGateway};
use crate::helpers::proxy::{chat, fixture_upstream};

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
    // The outage policy in force: the README's default on Redis, none for
    // in-process counters (they cannot be away).
    let policy = &ready.json()["counters"]["when_unreachable"];
    match backend {
        Backend::Production => assert_eq!(policy, "local"),
        Backend::Embedded => assert!(policy.is_null(), "{policy}"),
    }
    let metrics = client::send("GET", &gw.url("/metrics"), "", None, &[]).await;
    assert!(metrics
        .text()
        .contains("tollgate_requests_total{outcome=\"ok\"}"));
    let missing = client::send("GET", &gw.url("/nope"), "", None, &[]).await;
    assert_eq!(missing.status, 404);
    gw.finish().await;
}
both_backends!(ops_routes_answer);

/// A database that stops taking rows (a held lock) stalls nothing: rows
/// are durable in the spool at once, requests are served, and every served
/// request has its row once the lock is released.
async fn a_stalled_database_stalls_no_request(backend: Backend) {
    use sqlx::Connection;
    let upstream = fixture_upstream().await;
    let storage = crate::helpers::gateway::TestStorage::new(backend).await;
    let gw = TestGateway::start_on(storage, &standard_models(&upstream.base_url()), "", &[]).await;
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

    // The write-ahead spool takes every row at once: a stalled database
    // fills no queue and stalls no request (before the spool it did).
    let mut served = 1;
    for _ in 0..10 {
        let reply = gw
            .post("/v1/chat/completions", &key, chat("gpt-4o-mini"))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        served += 1;
    }
    let mut durable = false;
    for _ in 0..200 {
        let ready = client::send("GET", &gw.url("/readyz"), "", None, &[]).await;
        let ledger = &ready.json()["ledger"];
        if ledger["queue_depth"] == 0 && ledger["spool_rows"].as_u64().unwrap_or(0) > 0 {
            durable = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        durable,
        "rows never reached the spool while the database stalled"
    );

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
both_backends!(a_stalled_database_stalls_no_request);
