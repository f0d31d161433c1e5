//! Poison rows: names from clients reach rows cleaned and bounded, a row
//! the database rejects is set aside with its reason, and the rows behind
//! it flow on. Postgres (SQLite stores a NUL byte; Postgres refuses it).

use tollgate::domain::RequestId;
use tollgate::ledger::Entry;

use crate::helpers::client;
use crate::helpers::gateway::{redis_url, Backend, TestGateway};
use crate::helpers::proxy::{chat, fixture_upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_rows_are_set_aside_and_the_rest_flow() {
    let upstream = fixture_upstream().await;
    let gw = TestGateway::start(Backend::Production, &upstream.base_url()).await;
    let (user_id, key) = gw.user_with_credit("poison@example.com", "5").await;
    // A NUL-byte model and a 100 KB model name: refused, and their refusal
    // rows carry the names cleaned.
    let mut refusals = Vec::new();
    for model in ["gpt\u{0}-5.1".to_string(), "m".repeat(100_000)] {
        let reply = gw.post("/v1/chat/completions", &key, chat(&model)).await;
        assert_eq!(reply.status, 404, "{}", reply.text());
        refusals.push(reply.request_id());
    }
    // A row the database rejects whatever the gateway cleans (a NUL byte in
    // a field the gateway fills itself), queued as a bug would queue it.
    let mut bad = Entry::draft(
        RequestId::from("req_poison".to_string()),
        &user_id,
        "key_x",
        "chat.completions",
        tollgate::clock::now_ms(),
    );
    bad.error_code = Some("bad\u{0}code".into());
    gw.state.ledger.record(bad);
    // Normal traffic behind it.
    let mut served = Vec::new();
    for _ in 0..10 {
        let reply = gw.post("/v1/chat/completions", &key, chat("gpt-5.1")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        served.push(reply.request_id());
    }
    gw.ledger_idle().await;
    for id in &served {
        assert_eq!(gw.row(id).await.status, "ok");
    }
    for id in &refusals {
        let row = gw.row(id).await;
        assert!(
            !row.model.contains('\u{0}') && row.model.len() <= 256,
            "{}",
            row.model.len()
        );
    }
    let letters = gw.store().dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].request_id, "req_poison");
    assert!(letters[0].reason.starts_with("22"), "{}", letters[0].reason);
    let metrics = client::send("GET", &gw.url("/metrics"), "", None, &[])
        .await
        .text();
    assert!(
        metrics.contains("tollgate_ledger_set_aside_rows 1"),
        "{metrics}"
    );
    let ready = client::send("GET", &gw.url("/readyz"), "", None, &[])
        .await
        .json();
    assert_eq!(ready["ledger"]["set_aside_rows"], 1);
    // The command line lists it, and a retry with the names cleaned stores it.
    let cli = |command: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["dead-letters", command])
            .env("TOLLGATE_STORAGE__DATABASE_URL", &gw.storage.database_url)
            .env("TOLLGATE_STORAGE__REDIS_URL", redis_url())
            .env("TOLLGATE_LEDGER__SPOOL_DIR", &gw.storage.spool_dir)
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let listed = cli("list");
    assert!(listed.contains("req_poison"), "{listed}");
    let retried = cli("retry");
    assert!(retried.contains("1 stored"), "{retried}");
    assert!(gw.store().dead_letters().await.unwrap().is_empty());
    assert_eq!(
        gw.row("req_poison").await.error_code.as_deref(),
        Some("badcode")
    );
    gw.finish().await;
}
