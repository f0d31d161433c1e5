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
    let metrics = client::send("GET", &gw.url("/metrics"), "", None, &[]).await;
    assert!(metrics
        .text()
        .contains("tollgate_requests_total{outcome=\"ok\"}"));
    let missing = client::send("GET", &gw.url("/nope"), "", None, &[]).await;
    assert_eq!(missing.status, 404);
    gw.finish().await;
}
both_backends!(ops_routes_answer);

async fn a_stalled_ledger_refuses_new_requests(backend: Backend) {
    use sqlx::Connection;
    let upstream = fixture_upstream().await;
    let storage = crate::helpers::gateway::TestStorage::new(backend).await;
    let gw = TestGateway::start_on(
        storage,
        &standard_models(&upstream.base_url()),
        "",
        &[
            ("TOLLGATE_LEDGER__QUEUE_CAPACITY", "3"),
            ("TOLLGATE_LEDGER__BATCH_SIZE", "1"),
        ],
    )
    .await;
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

    let mut served = 1;
    let mut refused = None;
    for _ in 0..10 {
        let reply = gw
            .post("/v1/chat/completions", &key, chat("gpt-4o-mini"))
            .await;
        match reply.status {
            200 => served += 1,
            503 => {
                refused = Some(reply);
                break;
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    let refused = refused.expect("a full ledger queue must refuse new requests");
    assert_eq!(
        refused.header("retry-after"),
        Some("1"),
        "{:?} {}",
        refused.headers,
        refused.text()
    );
    assert!(served <= 5, "served {served} with a queue of 3");

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
both_backends!(a_stalled_ledger_refuses_new_requests);
