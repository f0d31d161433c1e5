//! Operator and self-service routes for users, keys and credits.

use serde_json::json;

use crate::both_backends;
use crate::helpers::client;
use crate::helpers::gateway::{Backend, TestGateway, ADMIN};

async fn users_keys_and_credits(backend: Backend) {
    let gw = TestGateway::start(backend, "http://127.0.0.1:9/v1").await;
    let created = gw
        .admin_post(
            "/api/users",
            json!({"email": "New.User@Example.com", "name": "New"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let user = created.json();
    assert_eq!(user["email"], "new.user@example.com");
    let user_id = user["id"].as_str().unwrap();

    let duplicate = gw
        .admin_post("/api/users", json!({"email": "new.user@example.com"}))
        .await;
    assert_eq!(duplicate.status, 409);

    let bad = gw
        .admin_post("/api/users", json!({"email": "not-an-email"}))
        .await;
    assert_eq!(
        (bad.status, bad.json()["error"]["param"].as_str()),
        (400, Some("email"))
    );
    let unknown = gw
        .admin_post(
            "/api/users",
            json!({"email": "x@example.com", "admin": true}),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.json()["error"]["param"].as_str()),
        (400, Some("admin"))
    );

    let key = gw
        .admin_post(&format!("/api/users/{user_id}/keys"), json!({}))
        .await;
    assert_eq!(key.status, 201);
    let key_json = key.json();
    let key = key_json["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("tg-") && key.len() >= 35);
    assert!(key.starts_with(key_json["prefix"].as_str().unwrap()));

    // Credits: decimal text or a JSON number read as text, never a float.
    let credit = gw
        .admin_post(
            &format!("/api/users/{user_id}/credits"),
            json!({"amount_usd": "12.5"}),
        )
        .await;
    assert_eq!(credit.json()["balance_usd"], "12.5");
    let raw = http::Request::post(gw.url(&format!("/api/users/{user_id}/credits")))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"{\"amount_usd\": 0.1000000001}",
        )))
        .unwrap();
    let too_precise = client::send_raw(raw).await;
    assert_eq!(
        (
            too_precise.status,
            too_precise.json()["error"]["param"].as_str()
        ),
        (400, Some("amount_usd"))
    );
    let raw = http::Request::post(gw.url(&format!("/api/users/{user_id}/credits")))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"{\"amount_usd\": 0.1}",
        )))
        .unwrap();
    assert_eq!(client::send_raw(raw).await.json()["balance_usd"], "12.6");
    let negative = gw
        .admin_post(
            &format!("/api/users/{user_id}/credits"),
            json!({"amount_usd": "-1"}),
        )
        .await;
    assert_eq!(negative.status, 400);
    let missing = gw
        .admin_post("/api/users/usr_nope/credits", json!({"amount_usd": "1"}))
        .await;
    assert_eq!(missing.status, 404);

    // The user sees itself; a user key on an operator route is 403.
    let me = client::send("GET", &gw.url("/api/me"), &key, None, &[]).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["balance_usd"], "12.6");
    assert_eq!(me.json()["teams"], json!([]));
    let forbidden = client::send(
        "POST",
        &gw.url("/api/users"),
        &key,
        Some(json!({"email": "y@example.com"})),
        &[],
    )
    .await;
    assert_eq!(forbidden.status, 403);
    let anonymous = client::send("GET", &gw.url("/api/me"), "", None, &[]).await;
    assert_eq!(anonymous.status, 401);

    // Own keys: list, switch billing (syntax checked), revoke.
    let listed = client::send("GET", &gw.url("/api/me/keys"), &key, None, &[]).await;
    let keys = listed.json()["data"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("key").is_none() && keys[0].get("key_hash").is_none());
    let key_id = keys[0]["id"].as_str().unwrap().to_string();
    let patch = client::send(
        "PATCH",
        &gw.url(&format!("/api/me/keys/{key_id}")),
        &key,
        Some(json!({"billing": "personal"})),
        &[],
    )
    .await;
    assert_eq!(patch.status, 200);
    let bad_billing = client::send(
        "PATCH",
        &gw.url(&format!("/api/me/keys/{key_id}")),
        &key,
        Some(json!({"billing": "company"})),
        &[],
    )
    .await;
    assert_eq!(
        (
            bad_billing.status,
            bad_billing.json()["error"]["param"].as_str()
        ),
        (400, Some("billing"))
    );
    let other_user = gw
        .admin_post("/api/users", json!({"email": "other@example.com"}))
        .await
        .json();
    let other_key = gw
        .admin_post(
            &format!("/api/users/{}/keys", other_user["id"].as_str().unwrap()),
            json!({}),
        )
        .await
        .json();
    let not_mine = client::send(
        "DELETE",
        &gw.url(&format!("/api/me/keys/{key_id}")),
        other_key["key"].as_str().unwrap(),
        None,
        &[],
    )
    .await;
    assert_eq!(not_mine.status, 404);
    gw.finish().await;
}
both_backends!(users_keys_and_credits);
