//! Teams: every management route × every caller role, the exact status.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::gateway::{Backend, TestGateway, ADMIN};
use crate::helpers::teams::{call, fixture};

/// Every management route × {owner, admin, member, non-member, operator,
/// no key}: the exact status. Each cell runs on a fresh team.
async fn authorization_matrix(backend: Backend) {
    let gw = TestGateway::start(backend, "http://127.0.0.1:9/v1").await;
    type Route = (&'static str, &'static str, Option<Value>, [u16; 6]);
    // {t} team, {m} member's id, {a} admin's id, {i} invitation id,
    // {j} join request id, {o} owner's id, {x} outsider's invitation token,
    // {u} outsider's id.
    let routes: Vec<Route> = vec![
        (
            "GET",
            "/api/teams/{t}",
            None,
            [200, 200, 200, 404, 200, 401],
        ),
        (
            "PATCH",
            "/api/teams/{t}",
            Some(json!({"name": "Renamed"})),
            [200, 200, 403, 404, 200, 401],
        ),
        (
            "DELETE",
            "/api/teams/{t}",
            None,
            [200, 403, 403, 404, 200, 401],
        ),
        (
            "POST",
            "/api/teams/{t}/transfer",
            Some(json!({"user_id": "{a}"})),
            [200, 403, 403, 404, 200, 401],
        ),
        (
            "GET",
            "/api/teams/{t}/members",
            None,
            [200, 200, 200, 404, 200, 401],
        ),
        (
            "PATCH",
            "/api/teams/{t}/members/{m}",
            Some(json!({"monthly_limit_usd": "5"})),
            [200, 200, 403, 404, 200, 401],
        ),
        (
            "DELETE",
            "/api/teams/{t}/members/{m}",
            None,
            [200, 200, 200, 404, 200, 401],
        ),
        (
            "POST",
            "/api/teams/{t}/invitations",
            Some(json!({"email": "new@example.com"})),
            [201, 201, 403, 404, 201, 401],
        ),
        (
            "GET",
            "/api/teams/{t}/invitations",
            None,
            [200, 200, 403, 404, 200, 401],
        ),
        (
            "DELETE",
            "/api/teams/{t}/invitations/{i}",
            None,
            [200, 200, 403, 404, 200, 401],
        ),
        (
            "PUT",
            "/api/teams/{t}/invite-link",
            Some(json!({"enabled": false})),
            [200, 200, 403, 404, 200, 401],
        ),
        (
            "GET",
            "/api/teams/{t}/join-requests",
            None,
            [200, 200, 403, 404, 200, 401],
        ),
        (
            "POST",
            "/api/teams/{t}/join-requests/{j}/approve",
            None,
            [200, 200, 403, 404, 200, 401],
        ),
        (
            "POST",
            "/api/teams/{t}/join-requests/{j}/deny",
            None,
            [200, 200, 403, 404, 200, 401],
        ),
        (
            "GET",
            "/api/teams/{t}/usage?group_by=model",
            None,
            [200, 200, 200, 404, 200, 401],
        ),
        (
            "GET",
            "/api/teams/{t}/audit",
            None,
            [200, 200, 403, 404, 200, 401],
        ),
        (
            "POST",
            "/api/teams",
            Some(json!({"name": "Another"})),
            [201, 201, 201, 201, 400, 401],
        ),
        ("GET", "/api/teams", None, [200, 200, 200, 200, 200, 401]),
        (
            "POST",
            "/api/users",
            Some(json!({"email": "fresh@example.com"})),
            [403, 403, 403, 403, 201, 401],
        ),
        (
            "POST",
            "/api/users/{u}/keys",
            Some(json!({})),
            [403, 403, 403, 403, 201, 401],
        ),
        (
            "POST",
            "/api/users/{u}/credits",
            Some(json!({"amount_usd": "1"})),
            [403, 403, 403, 403, 200, 401],
        ),
        ("GET", "/api/me", None, [200, 200, 200, 200, 403, 401]),
        (
            "POST",
            "/api/invitations/{x}/accept",
            None,
            [403, 403, 403, 200, 403, 401],
        ),
    ];
    let mut n = 0;
    for (method, template, body, expected) in routes {
        for (caller_index, want) in expected.iter().enumerate() {
            n += 1;
            let fx = fixture(&gw, &format!("m{n}")).await;
            let key = match caller_index {
                0 => fx.owner.key.clone(),
                1 => fx.admin.key.clone(),
                2 => fx.member.key.clone(),
                3 => fx.outsider.key.clone(),
                4 => ADMIN.to_string(),
                _ => String::new(),
            };
            let fill = |text: &str| {
                text.replace("{t}", &fx.team_id)
                    .replace("{m}", &fx.member.id)
                    .replace("{a}", &fx.admin.id)
                    .replace("{o}", &fx.owner.id)
                    .replace("{u}", &fx.outsider.id)
                    .replace("{i}", &fx.outsider_invitation.0)
                    .replace("{x}", &fx.outsider_invitation.1)
                    .replace("{j}", &fx.join_request_id)
            };
            let path = fill(template);
            let body = body
                .as_ref()
                .map(|b| serde_json::from_str(&fill(&b.to_string())).unwrap());
            let reply = call(&gw, method, &path, &key, body).await;
            let who = [
                "owner",
                "admin",
                "member",
                "non-member",
                "operator",
                "no key",
            ][caller_index];
            assert_eq!(
                reply.status,
                *want,
                "{method} {template} as {who}: {}",
                reply.text()
            );
        }
    }
    // The join link, separately: members already belong, the operator is no user.
    let fx = fixture(&gw, "join").await;
    let link = call(
        &gw,
        "PUT",
        &format!("/api/teams/{}/invite-link", fx.team_id),
        &fx.owner.key,
        Some(json!({"enabled": true})),
    )
    .await;
    let token = link.json()["token"].as_str().unwrap().to_string();
    for (key, want) in [
        (&fx.member.key, 409),
        (&fx.outsider.key, 201),
        (&ADMIN.to_string(), 403),
        (&String::new(), 401),
    ] {
        assert_eq!(
            call(&gw, "POST", &format!("/api/join/{token}"), key, None)
                .await
                .status,
            want
        );
    }
    gw.finish().await;
}
both_backends!(authorization_matrix);
