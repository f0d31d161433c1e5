//! The official `openai` Python SDK against the gateway: a JSON and a
//! streamed chat completion, then their ledger rows' cost. The SDK lives in
//! the venv the README's test command creates (`tests/.venv`).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tollgate::money::{Money, PricePerMtok};
use tollgate::pricing::ModelPrice;

use crate::helpers::gateway::{Backend, TestGateway};

fn python() -> PathBuf {
    if let Ok(path) = std::env::var("TOLLGATE_TEST_PYTHON") {
        return PathBuf::from(path);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_gets_metered_completions() {
    let python = python();
    assert!(
        python.exists(),
        "{} is missing: run the README's test command (tests/run), which installs the openai SDK into tests/.venv",
        python.display()
    );
    let gw = TestGateway::start(Backend::Embedded, "http://127.0.0.1:9/v1").await;
    let (user_id, key) = gw.user_with_credit("sdk@example.com", "1").await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_sdk_check.py");
    let base_url = gw.url("/v1");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("TOLLGATE_BASE_URL", base_url)
            .env("TOLLGATE_KEY", key)
            .env("OPENAI_MAX_RETRIES", "0")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "SDK script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");

    let mock = ModelPrice::simple(tollgate::pricing::Rates::new(
        PricePerMtok::parse("1.00").unwrap(),
        PricePerMtok::parse("2.00").unwrap(),
    ));
    let json = &lines[0];
    let row = gw.row(json["request_id"].as_str().unwrap()).await;
    assert_eq!(row.input_tokens, json["prompt_tokens"].as_i64().unwrap());
    assert_eq!(
        row.output_tokens,
        json["completion_tokens"].as_i64().unwrap()
    );
    let usage = tollgate::meter::Usage {
        input_tokens: row.input_tokens as u64,
        output_tokens: row.output_tokens as u64,
        ..Default::default()
    };
    assert_eq!(row.cost_nano, mock.cost(&usage).nano());
    assert!(row.cost_nano > 0);

    let stream = &lines[1];
    assert_eq!(
        stream["saw_usage"], false,
        "the injected usage chunk must stay hidden"
    );
    assert_eq!(stream["text"], "This is a metered reply from");
    let row = gw.row(stream["request_id"].as_str().unwrap()).await;
    assert_eq!((row.output_tokens, row.usage_source.as_str()), (6, "exact"));
    let usage = tollgate::meter::Usage {
        input_tokens: row.input_tokens as u64,
        output_tokens: 6,
        ..Default::default()
    };
    assert_eq!(row.cost_nano, mock.cost(&usage).nano());

    assert_eq!(lines[2]["status"], 404);
    assert_eq!(lines[2]["code"], "model_not_found");

    gw.ledger_idle().await;
    let rows = gw.store().usage_rows_of_account(&user_id).await.unwrap();
    let spent: i64 = rows.iter().map(|r| r.cost_nano).sum();
    assert_eq!(
        gw.balance(&key_of(&gw, &user_id).await).await,
        Money::from_nano(1_000_000_000 - spent).to_string()
    );
    gw.finish().await;
}

/// A fresh key for the user (the first was handed to the script).
async fn key_of(gw: &TestGateway, user_id: &str) -> String {
    let key = gw
        .admin_post(&format!("/api/users/{user_id}/keys"), serde_json::json!({}))
        .await;
    key.json()["key"].as_str().unwrap().to_string()
}

/// The official Node SDKs (`openai` 6, `@anthropic-ai/sdk`), installed into
/// `tests/sdk/node` by the README's test command: chat (JSON and streamed),
/// embeddings, Responses (streamed), Messages (JSON and streamed) metered
/// to the token; a 402 raised once, never retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdks_get_metered_and_a_402_is_final() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/node");
    assert!(
        dir.join("node_modules/openai").exists() && dir.join("node_modules/@anthropic-ai/sdk").exists(),
        "the Node SDKs are missing: run the README's test command (bash tests/run.sh), which runs npm install in tests/sdk/node"
    );
    let upstream = crate::helpers::proxy::fixture_upstream().await;
    let gw = TestGateway::start(Backend::Embedded, &upstream.base_url()).await;
    let (user_id, key) = gw.user_with_credit("node@example.com", "10").await;
    let (broke_id, broke_key) = gw.user_with_credit("broke@example.com", "0").await;
    let base_url = gw.url("/v1");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(dir.join("check.mjs"))
            .current_dir(&dir)
            .env("TOLLGATE_BASE_URL", base_url)
            .env("TOLLGATE_KEY", key)
            .env("TOLLGATE_BROKE_KEY", broke_key)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Node SDK script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: std::collections::BTreeMap<String, Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["kind"].as_str().unwrap().to_string(), v))
        .collect();
    let line = |kind: &str| {
        lines
            .get(kind)
            .unwrap_or_else(|| panic!("no {kind} line in {stdout}"))
    };
    gw.ledger_idle().await;

    let chat = line("chat");
    let row = gw.row(chat["request_id"].as_str().unwrap()).await;
    assert_eq!(row.input_tokens, chat["prompt_tokens"].as_i64().unwrap());
    assert_eq!(
        row.output_tokens,
        chat["completion_tokens"].as_i64().unwrap()
    );
    assert!(row.cost_nano > 0);

    let stream = line("chat_stream");
    assert_eq!(
        stream["saw_usage"], false,
        "the injected usage chunk leaked"
    );
    assert!(!stream["text"].as_str().unwrap().is_empty());
    let row = gw.row(stream["request_id"].as_str().unwrap()).await;
    assert_eq!(row.usage_source.as_str(), "exact");

    let embeddings = line("embeddings");
    let row = gw.row(embeddings["request_id"].as_str().unwrap()).await;
    assert_eq!(
        row.input_tokens,
        embeddings["prompt_tokens"].as_i64().unwrap()
    );

    let responses = line("responses_stream");
    let row = gw.row(responses["request_id"].as_str().unwrap()).await;
    assert_eq!(
        row.input_tokens,
        responses["input_tokens"].as_i64().unwrap()
    );
    assert_eq!(
        row.output_tokens,
        responses["output_tokens"].as_i64().unwrap()
    );

    let messages = line("messages");
    let row = gw.row(messages["request_id"].as_str().unwrap()).await;
    assert_eq!(
        row.output_tokens,
        messages["output_tokens"].as_i64().unwrap()
    );
    assert!(line("messages_stream")["output_tokens"].as_i64().unwrap() > 0);

    for kind in ["openai_402", "anthropic_402"] {
        assert_eq!(line(kind)["status"], 402, "{}", line(kind));
    }
    assert_eq!(line("openai_402")["code"], "insufficient_balance");
    // Each 402 reached the gateway once (one refusal row each) and the
    // upstream never: the SDKs did not retry it.
    let refused = gw.store().usage_rows_of_account(&broke_id).await.unwrap();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(upstream.seen().len(), 6, "upstream calls");
    let rows = gw.store().usage_rows_of_account(&user_id).await.unwrap();
    assert_eq!(rows.len(), 6);
    gw.finish().await;
}
