//! Teams: model restrictions, team billing by header or key, and
//! ownership transfer and team deletion.

use serde_json::json;

use crate::both_backends;
use crate::helpers::gateway::{Backend, TestGateway};
use crate::helpers::teams::{call, chat, fixture, json_upstream, team_bill};

async fn restrictions_billing_and_transfer(backend: Backend) {
    let upstream = json_upstream().await;
    let gw = TestGateway::start(backend, &upstream.base_url()).await;
    let fx = fixture(&gw, "res").await;
    let team = fx.team_id.clone();
    let patch = call(
        &gw,
        "PATCH",
        &format!("/api/teams/{team}"),
        &fx.admin.key,
        Some(json!({"restricted_models": ["gpt-5.1", "claude-*"]})),
    )
    .await;
    assert_eq!(patch.status, 200, "{}", patch.text());
    assert_eq!(
        patch.json()["restricted_models"],
        json!(["gpt-5.1", "claude-*"])
    );

    let restricted = team_bill(&gw, &fx.member.key, &team, "gpt-5.1").await;
    assert_eq!(
        (
            restricted.status,
            restricted.json()["error"]["code"].as_str()
        ),
        (403, Some("model_not_allowed"))
    );
    assert_eq!(restricted.json()["error"]["scope"], "model_restriction");
    let globbed = team_bill(&gw, &fx.member.key, &team, "claude-haiku-4-5").await;
    assert_eq!(globbed.status, 403);
    assert_eq!(
        team_bill(&gw, &fx.member.key, &team, "gpt-4o-mini")
            .await
            .status,
        200
    );

    // The key's billing switch applies to the next request, and /v1/models
    // lists what that billing allows.
    let keys = call(&gw, "GET", "/api/me/keys", &fx.member.key, None)
        .await
        .json();
    let key_id = keys["data"][0]["id"].as_str().unwrap().to_string();
    let switched = call(
        &gw,
        "PATCH",
        &format!("/api/me/keys/{key_id}"),
        &fx.member.key,
        Some(json!({"billing": format!("team:{team}")})),
    )
    .await;
    assert_eq!(switched.status, 200, "{}", switched.text());
    let models = call(&gw, "GET", "/v1/models", &fx.member.key, None)
        .await
        .json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"gpt-4o-mini")
            && !ids.contains(&"gpt-5.1")
            && !ids.iter().any(|id| id.starts_with("claude-")),
        "{ids:?}"
    );
    let plain = gw
        .post("/v1/chat/completions", &fx.member.key, chat("gpt-5.1", 300))
        .await;
    assert_eq!(plain.status, 403, "{}", plain.text());

    // A non-member can never bill the team.
    let outsider = team_bill(&gw, &fx.outsider.key, &team, "gpt-4o-mini").await;
    assert_eq!(
        (outsider.status, outsider.json()["error"]["code"].as_str()),
        (403, Some("not_a_team_member"))
    );
    let keys = call(&gw, "GET", "/api/me/keys", &fx.outsider.key, None)
        .await
        .json();
    let outsider_key = keys["data"][0]["id"].as_str().unwrap().to_string();
    let refused = call(
        &gw,
        "PATCH",
        &format!("/api/me/keys/{outsider_key}"),
        &fx.outsider.key,
        Some(json!({"billing": format!("team:{team}")})),
    )
    .await;
    assert_eq!(refused.status, 403);

    // Transfer: the admin becomes owner, billing follows; the old owner is admin.
    let credit = gw
        .admin_post(
            &format!("/api/users/{}/credits", fx.admin.id),
            json!({"amount_usd": "5"}),
        )
        .await;
    assert_eq!(credit.status, 200);
    let transfer = call(
        &gw,
        "POST",
        &format!("/api/teams/{team}/transfer"),
        &fx.owner.key,
        Some(json!({"user_id": fx.admin.id})),
    )
    .await;
    assert_eq!(transfer.status, 200, "{}", transfer.text());
    assert_eq!(transfer.json()["owner_id"], fx.admin.id.as_str());
    let reply = team_bill(&gw, &fx.member.key, &team, "gpt-4o-mini").await;
    assert_eq!(reply.status, 200);
    let row = gw.row(&reply.request_id()).await;
    assert_eq!(row.account_id, fx.admin.id);
    let members = call(
        &gw,
        "GET",
        &format!("/api/teams/{team}/members"),
        &fx.member.key,
        None,
    )
    .await
    .json();
    let role_of = |id: &str| {
        members["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user_id"] == id)
            .unwrap()["role"]
            .clone()
    };
    assert_eq!(
        (role_of(&fx.owner.id), role_of(&fx.admin.id)),
        (json!("admin"), json!("owner"))
    );
    // The old owner, now admin, cannot delete; the owner cannot leave.
    assert_eq!(
        call(
            &gw,
            "DELETE",
            &format!("/api/teams/{team}"),
            &fx.owner.key,
            None
        )
        .await
        .status,
        403
    );
    assert_eq!(
        call(
            &gw,
            "DELETE",
            &format!("/api/teams/{team}/members/{}", fx.admin.id),
            &fx.admin.key,
            None
        )
        .await
        .status,
        409
    );
    assert_eq!(
        call(
            &gw,
            "PATCH",
            &format!("/api/teams/{team}/members/{}", fx.member.id),
            &fx.owner.key,
            Some(json!({"role": "owner"}))
        )
        .await
        .status,
        403
    );

    // Deleting the team stops team billing; history stays.
    assert_eq!(
        call(
            &gw,
            "DELETE",
            &format!("/api/teams/{team}"),
            &fx.admin.key,
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        team_bill(&gw, &fx.member.key, &team, "gpt-4o-mini")
            .await
            .status,
        403
    );
    assert_eq!(
        call(
            &gw,
            "GET",
            &format!("/api/teams/{team}"),
            &fx.admin.key,
            None
        )
        .await
        .status,
        404
    );
    gw.ledger_idle().await;
    assert!(!gw
        .store()
        .usage_rows_of_account(&fx.admin.id)
        .await
        .unwrap()
        .is_empty());
    gw.finish().await;
}
both_backends!(restrictions_billing_and_transfer);
