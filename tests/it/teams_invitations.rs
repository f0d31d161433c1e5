//! Teams: invitations (accept, reuse, expiry, revoke) and join links
//! (approve, deny, rotate, disable), with the audit trail they leave.

use serde_json::json;
use tollgate::clock::Clock;

use crate::both_backends;
use crate::helpers::gateway::{standard_models, Backend, TestGateway, TestStorage};
use crate::helpers::teams::{call, fixture, user, NOV_28};

async fn invitation_lifecycle(backend: Backend) {
    let storage = TestStorage::new(backend).await;
    let clock = Clock::manual(NOV_28);
    let gw = TestGateway::start_with_clock(
        storage,
        &standard_models("http://127.0.0.1:9/v1"),
        "",
        &[],
        clock.clone(),
    )
    .await;
    let fx = fixture(&gw, "inv").await;
    let team = &fx.team_id;
    let invitations_path = format!("/api/teams/{team}/invitations");
    let invite = |email: &str, hours: Option<i64>| {
        let mut body = json!({"email": email, "role": "member"});
        if let Some(hours) = hours {
            body["expires_in_hours"] = json!(hours);
        }
        call(&gw, "POST", &invitations_path, &fx.admin.key, Some(body))
    };

    // Wrong email: 403, and the invitation stays usable.
    let (invitation_id, token) = fx.outsider_invitation.clone();
    let wrong = call(
        &gw,
        "POST",
        &format!("/api/invitations/{token}/accept"),
        &fx.joiner.key,
        None,
    )
    .await;
    assert_eq!(wrong.status, 403);
    let accepted = call(
        &gw,
        "POST",
        &format!("/api/invitations/{token}/accept"),
        &fx.outsider.key,
        None,
    )
    .await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    assert_eq!(accepted.json()["role"], "member");
    // Reuse: 410.
    let reused = call(
        &gw,
        "POST",
        &format!("/api/invitations/{token}/accept"),
        &fx.outsider.key,
        None,
    )
    .await;
    assert_eq!(reused.status, 410);
    let listed = call(
        &gw,
        "GET",
        &format!("/api/teams/{team}/invitations"),
        &fx.owner.key,
        None,
    )
    .await
    .json();
    let entry = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == invitation_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["status"], "accepted");
    assert!(entry.get("token").is_none() && entry.get("token_hash").is_none());

    // Expiry with the injectable clock.
    let late = user(&gw, "late@example.com", "0").await;
    let expiring = invite("late@example.com", Some(2)).await.json();
    let expiring_token = expiring["token"].as_str().unwrap().to_string();
    clock.set_ms(NOV_28 + 3 * 3_600_000);
    let expired = call(
        &gw,
        "POST",
        &format!("/api/invitations/{expiring_token}/accept"),
        &late.key,
        None,
    )
    .await;
    assert_eq!(expired.status, 410);
    assert!(expired.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));

    // Revoke.
    let revoked = invite("late@example.com", None).await.json();
    let revoke = call(
        &gw,
        "DELETE",
        &format!(
            "/api/teams/{team}/invitations/{}",
            revoked["id"].as_str().unwrap()
        ),
        &fx.admin.key,
        None,
    )
    .await;
    assert_eq!(revoke.status, 200);
    let after_revoke = call(
        &gw,
        "POST",
        &format!(
            "/api/invitations/{}/accept",
            revoked["token"].as_str().unwrap()
        ),
        &late.key,
        None,
    )
    .await;
    assert_eq!(after_revoke.status, 410);
    assert_eq!(
        call(
            &gw,
            "POST",
            "/api/invitations/tgi_nope/accept",
            &late.key,
            None
        )
        .await
        .status,
        404
    );

    // An invitation is valid only for its own team.
    let other = call(
        &gw,
        "POST",
        "/api/teams",
        &late.key,
        Some(json!({"name": "Other"})),
    )
    .await
    .json();
    let other_id = other["id"].as_str().unwrap();
    let cross = call(
        &gw,
        "DELETE",
        &format!(
            "/api/teams/{other_id}/invitations/{}",
            fx.outsider_invitation.0
        ),
        &late.key,
        None,
    )
    .await;
    assert_eq!(cross.status, 404);

    // Join link: approve, deny, rotate, disable.
    let overview = call(
        &gw,
        "GET",
        &format!("/api/teams/{team}"),
        &fx.member.key,
        None,
    )
    .await
    .json();
    assert_eq!(overview["pending_join_requests"], 1);
    let approve = call(
        &gw,
        "POST",
        &format!(
            "/api/teams/{team}/join-requests/{}/approve",
            fx.join_request_id
        ),
        &fx.admin.key,
        None,
    )
    .await;
    assert_eq!(approve.status, 200);
    assert_eq!(approve.json()["status"], "approved");
    let again = call(
        &gw,
        "POST",
        &format!(
            "/api/teams/{team}/join-requests/{}/deny",
            fx.join_request_id
        ),
        &fx.admin.key,
        None,
    )
    .await;
    assert_eq!(again.status, 409);
    let members = call(
        &gw,
        "GET",
        &format!("/api/teams/{team}/members"),
        &fx.member.key,
        None,
    )
    .await
    .json();
    assert!(members["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["user_id"] == fx.joiner.id.as_str()));

    let link = call(
        &gw,
        "PUT",
        &format!("/api/teams/{team}/invite-link"),
        &fx.admin.key,
        Some(json!({"enabled": true})),
    )
    .await
    .json();
    let first = link["token"].as_str().unwrap().to_string();
    assert!(link["url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/join/{first}")));
    let rotated = call(
        &gw,
        "PUT",
        &format!("/api/teams/{team}/invite-link"),
        &fx.admin.key,
        Some(json!({"enabled": true})),
    )
    .await
    .json();
    let second = rotated["token"].as_str().unwrap().to_string();
    assert_eq!(
        call(&gw, "POST", &format!("/api/join/{first}"), &late.key, None)
            .await
            .status,
        404
    );
    let request = call(&gw, "POST", &format!("/api/join/{second}"), &late.key, None).await;
    assert_eq!(request.status, 201);
    let deny = call(
        &gw,
        "POST",
        &format!(
            "/api/teams/{team}/join-requests/{}/deny",
            request.json()["id"].as_str().unwrap()
        ),
        &fx.owner.key,
        None,
    )
    .await;
    assert_eq!(deny.json()["status"], "denied");
    assert_eq!(
        call(&gw, "GET", &format!("/api/teams/{team}"), &late.key, None)
            .await
            .status,
        404
    );
    let disabled = call(
        &gw,
        "PUT",
        &format!("/api/teams/{team}/invite-link"),
        &fx.admin.key,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(disabled.json()["enabled"], false);
    assert_eq!(
        call(&gw, "POST", &format!("/api/join/{second}"), &late.key, None)
            .await
            .status,
        404
    );

    // The audit trail saw it all, newest first.
    let audit = call(
        &gw,
        "GET",
        &format!("/api/teams/{team}/audit"),
        &fx.admin.key,
        None,
    )
    .await
    .json();
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions[0], "invite_link.disable");
    for action in [
        "team.create",
        "invitation.create",
        "invitation.accept",
        "invitation.revoke",
        "join_request.approve",
        "join_request.deny",
        "invite_link.enable",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    gw.finish().await;
}
both_backends!(invitation_lifecycle);

/// Invitation and join links open pages: the URL redirects into the
/// dashboard, and what the link is for can be read without a key.
async fn links_open_pages(backend: Backend) {
    let gw = TestGateway::start_with(backend, &standard_models("http://127.0.0.1:9/v1"), "").await;
    let fx = fixture(&gw, "pages").await;
    let team = &fx.team_id;
    let created = call(
        &gw,
        "POST",
        &format!("/api/teams/{team}/invitations"),
        &fx.owner.key,
        Some(json!({"email": "page-reader@example.com", "role": "admin"})),
    )
    .await;
    assert_eq!(created.status, 201);
    let token = created.json()["token"].as_str().unwrap().to_string();
    let url = created.json()["url"].as_str().unwrap().to_string();
    assert!(url.ends_with(&format!("/invite/{token}")), "{url}");
    let opened =
        crate::helpers::client::send("GET", &gw.url(&format!("/invite/{token}")), "", None, &[])
            .await;
    assert_eq!(opened.status, 302);
    assert_eq!(
        opened.header("location"),
        Some(format!("/dashboard#/invite/{token}").as_str())
    );
    let described = crate::helpers::client::send(
        "GET",
        &gw.url(&format!("/api/invitations/{token}")),
        "",
        None,
        &[],
    )
    .await;
    assert_eq!(described.status, 200, "{}", described.text());
    let described = described.json();
    assert_eq!(described["team"]["name"], "Team pages");
    assert_eq!(described["role"], "admin");
    assert_eq!(described["email"], "page-reader@example.com");
    assert_eq!(described["status"], "pending");
    let unknown =
        crate::helpers::client::send("GET", &gw.url("/api/invitations/tgi_nope"), "", None, &[])
            .await;
    assert_eq!(unknown.status, 404);

    let link = call(
        &gw,
        "PUT",
        &format!("/api/teams/{team}/invite-link"),
        &fx.owner.key,
        Some(json!({"enabled": true})),
    )
    .await
    .json();
    let link_token = link["token"].as_str().unwrap();
    let opened = crate::helpers::client::send(
        "GET",
        &gw.url(&format!("/join/{link_token}")),
        "",
        None,
        &[],
    )
    .await;
    assert_eq!(opened.status, 302);
    let described = crate::helpers::client::send(
        "GET",
        &gw.url(&format!("/api/join/{link_token}")),
        "",
        None,
        &[],
    )
    .await;
    assert_eq!(described.json()["team"]["name"], "Team pages");
    gw.finish().await;
}
both_backends!(links_open_pages);
