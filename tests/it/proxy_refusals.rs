//! The proxy refuses with the contract's shape: bad keys, models and
//! bodies, too little money, oversized bodies, revoked keys.

use bytes::Bytes;
use serde_json::json;

use crate::both_backends;
use crate::helpers::client;
use crate::helpers::gateway::{standard_models, Backend, TestGateway};
use crate::helpers::proxy::{chat, fixture_upstream};

async fn refusals_have_the_contract_shape(backend: Backend) {
    let upstream = fixture_upstream().await;
    let gw = TestGateway::start_with(backend, &standard_models(&upstream.base_url()), "").await;
    let (_, key) = gw.user_with_credit("refuse@example.com", "0.001").await;
    let url = gw.url("/v1/chat/completions");

    let reply = client::send("POST", &url, "", Some(chat("gpt-4o-mini")), &[]).await;
    assert_eq!(
        (reply.status, reply.json()["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let reply = client::send(
        "POST",
        &url,
        "tg-0000000000000000000000000000000000000000",
        Some(chat("gpt-4o-mini")),
        &[],
    )
    .await;
    assert_eq!(reply.status, 401);

    let reply = gw
        .post("/v1/chat/completions", &key, chat("no-such-model"))
        .await;
    assert_eq!(
        (reply.status, reply.json()["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    assert_eq!(reply.json()["error"]["param"], "model");

    let reply = gw
        .post("/v1/chat/completions", &key, json!({"messages": []}))
        .await;
    assert_eq!(
        (reply.status, reply.json()["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );

    let request = http::Request::post(&url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from_static(
            b"{\"model\": \"gpt-4o-mini\", ",
        )))
        .unwrap();
    let reply = client::send_raw(request).await;
    assert_eq!(reply.status, 400);
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));

    let request = http::Request::post(&url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(Bytes::from_static(b"a=b")))
        .unwrap();
    assert_eq!(client::send_raw(request).await.status, 415);

    // $0.001 cannot cover 500 output tokens of gpt-5.1 ($0.005).
    let reply = gw.post("/v1/chat/completions", &key, chat("gpt-5.1")).await;
    assert_eq!(reply.status, 402, "{}", reply.text());
    assert_eq!(reply.header("x-should-retry"), Some("false"));
    let error = &reply.json()["error"];
    assert_eq!(
        (error["code"].as_str(), error["type"].as_str()),
        (Some("insufficient_balance"), Some("insufficient_quota"))
    );
    let row = gw.row(&reply.request_id()).await;
    assert_eq!((row.status.as_str(), row.cost_nano), ("refused", 0));
    assert_eq!(
        upstream.seen().len(),
        0,
        "refusals never reach the upstream"
    );

    // Anthropic route refusals use the Anthropic shape.
    let reply = client::send(
        "POST",
        &gw.url("/v1/messages"),
        "",
        Some(json!({"model": "x"})),
        &[],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["type"], "error");
    assert_eq!(reply.json()["error"]["type"], "authentication_error");

    // Billing a team one is not a member of.
    let reply = client::send(
        "POST",
        &url,
        &key,
        Some(chat("gpt-4o-mini")),
        &[("x-tollgate-billing", "team:tm_nope")],
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()["error"]["code"].as_str()),
        (403, Some("not_a_team_member"))
    );
    gw.finish().await;
}
both_backends!(refusals_have_the_contract_shape);

async fn body_over_the_limit_is_413(backend: Backend) {
    let upstream = fixture_upstream().await;
    let gw = TestGateway::start_with(
        backend,
        &standard_models(&upstream.base_url()),
        "max_body_bytes = 4096\n",
    )
    .await;
    let (_, key) = gw.user_with_credit("big@example.com", "1").await;
    let mut body = chat("gpt-4o-mini");
    body["messages"][0]["content"] = json!("x".repeat(8192));
    let reply = gw.post("/v1/chat/completions", &key, body).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"]["code"], "invalid_request");
    gw.finish().await;
}
both_backends!(body_over_the_limit_is_413);

async fn revoked_key_is_refused_at_once(backend: Backend) {
    let upstream = fixture_upstream().await;
    let gw = TestGateway::start(backend, &upstream.base_url()).await;
    let (_, key) = gw.user_with_credit("revoke@example.com", "1").await;
    let created = client::send(
        "POST",
        &gw.url("/api/me/keys"),
        &key,
        Some(json!({"name": "laptop"})),
        &[],
    )
    .await;
    assert_eq!(created.status, 201);
    let second = created.json()["key"].as_str().unwrap().to_string();
    let second_id = created.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        gw.post("/v1/chat/completions", &second, chat("gpt-4o-mini"))
            .await
            .status,
        200
    );
    let revoked = client::send(
        "DELETE",
        &gw.url(&format!("/api/me/keys/{second_id}")),
        &key,
        None,
        &[],
    )
    .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(
        gw.post("/v1/chat/completions", &second, chat("gpt-4o-mini"))
            .await
            .status,
        401
    );
    assert_eq!(
        gw.post("/v1/chat/completions", &key, chat("gpt-4o-mini"))
            .await
            .status,
        200
    );
    gw.finish().await;
}
both_backends!(revoked_key_is_refused_at_once);
