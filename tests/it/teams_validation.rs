//! Teams: management input is validated, each error naming its field.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::gateway::{Backend, TestGateway};
use crate::helpers::teams::{call, fixture};

async fn management_input_is_validated(backend: Backend) {
    let gw = TestGateway::start(backend, "http://127.0.0.1:9/v1").await;
    let fx = fixture(&gw, "val").await;
    let team = fx.team_id.clone();
    let cases: Vec<(&str, String, Value, &str)> = vec![
        (
            "PATCH",
            format!("/api/teams/{team}"),
            json!({"default_monthly_limit_usd": "-1"}),
            "default_monthly_limit_usd",
        ),
        (
            "PATCH",
            format!("/api/teams/{team}"),
            json!({"default_monthly_limit_usd": "99999999"}),
            "default_monthly_limit_usd",
        ),
        (
            "PATCH",
            format!("/api/teams/{team}"),
            json!({"default_monthly_limit_usd": 1.0000000001}),
            "default_monthly_limit_usd",
        ),
        (
            "PATCH",
            format!("/api/teams/{team}"),
            json!({"enforcement": "strict"}),
            "enforcement",
        ),
        (
            "PATCH",
            format!("/api/teams/{team}"),
            json!({"restricted_models": ["claude [opus]"]}),
            "restricted_models",
        ),
        (
            "PATCH",
            format!("/api/teams/{team}"),
            json!({"name": ""}),
            "name",
        ),
        (
            "PATCH",
            format!("/api/teams/{team}"),
            json!({"name": "x".repeat(101)}),
            "name",
        ),
        (
            "PATCH",
            format!("/api/teams/{team}"),
            json!({"colour": "red"}),
            "colour",
        ),
        (
            "POST",
            "/api/teams".to_string(),
            json!({"name": "ok", "plan": "pro"}),
            "plan",
        ),
        (
            "POST",
            format!("/api/teams/{team}/invitations"),
            json!({"email": "not an email"}),
            "email",
        ),
        (
            "POST",
            format!("/api/teams/{team}/invitations"),
            json!({"email": "a@example.com", "role": "owner"}),
            "role",
        ),
        (
            "POST",
            format!("/api/teams/{team}/invitations"),
            json!({"email": "a@example.com", "role": "boss"}),
            "role",
        ),
        (
            "POST",
            format!("/api/teams/{team}/invitations"),
            json!({"email": "a@example.com", "expires_in_hours": 0}),
            "expires_in_hours",
        ),
        (
            "PATCH",
            format!("/api/teams/{team}/members/{}", fx.member.id),
            json!({"role": "king"}),
            "role",
        ),
        (
            "PATCH",
            format!("/api/teams/{team}/members/{}", fx.member.id),
            json!({"monthly_limit_usd": "ten"}),
            "monthly_limit_usd",
        ),
        (
            "PUT",
            format!("/api/teams/{team}/invite-link"),
            json!({"enabled": "yes"}),
            "enabled",
        ),
        (
            "POST",
            format!("/api/teams/{team}/transfer"),
            json!({"user_id": fx.outsider.id}),
            "user_id",
        ),
    ];
    for (method, path, body, param) in cases {
        let reply = call(&gw, method, &path, &fx.owner.key, Some(body.clone())).await;
        assert_eq!(
            reply.status,
            400,
            "{method} {path} {body}: {}",
            reply.text()
        );
        assert_eq!(
            reply.json()["error"]["param"],
            param,
            "{method} {path} {body}"
        );
    }
    let bad_query = call(
        &gw,
        "GET",
        &format!("/api/teams/{team}/usage?group_by=week"),
        &fx.member.key,
        None,
    )
    .await;
    assert_eq!(
        (
            bad_query.status,
            bad_query.json()["error"]["param"].as_str()
        ),
        (400, Some("group_by"))
    );
    let bad_date = call(
        &gw,
        "GET",
        &format!("/api/teams/{team}/usage?from=yesterday"),
        &fx.member.key,
        None,
    )
    .await;
    assert_eq!(
        (bad_date.status, bad_date.json()["error"]["param"].as_str()),
        (400, Some("from"))
    );
    assert_eq!(
        call(&gw, "GET", "/api/teams/tm_nope", &fx.owner.key, None)
            .await
            .status,
        404
    );
    gw.finish().await;
}
both_backends!(management_input_is_validated);
