//! Membership doors that close (contract §4, "Hostile clients"): inviting
//! a current member is 409; removing or demoting a member revokes the
//! invitations they sent; joining or leaving closes their join requests.

use serde_json::json;

use crate::both_backends;
use crate::helpers::gateway::{standard_models, Backend, TestGateway};
use crate::helpers::teams::{accept, call, fixture, invite, user};

async fn gateway(backend: Backend) -> TestGateway {
    TestGateway::start_with(backend, &standard_models("http://127.0.0.1:9/v1"), "").await
}

async fn is_member(gw: &TestGateway, team: &str, owner_key: &str, user_id: &str) -> bool {
    let members = call(
        gw,
        "GET",
        &format!("/api/teams/{team}/members"),
        owner_key,
        None,
    )
    .await;
    assert_eq!(members.status, 200, "{}", members.text());
    members.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["user_id"] == user_id)
}

async fn a_removed_admin_cannot_walk_back_in(backend: Backend) {
    let gw = gateway(backend).await;
    let fx = fixture(&gw, "reentry").await;
    let team = &fx.team_id;

    // An admin inviting themselves (or any member): 409.
    let (status, _) = invite(
        &gw,
        team,
        &fx.admin.key,
        "admin-reentry@example.com",
        "admin",
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = invite(
        &gw,
        team,
        &fx.admin.key,
        "MEMBER-reentry@example.com",
        "admin",
    )
    .await;
    assert_eq!(status, 409, "emails compare without case");

    // An admin's invitation to a second address of theirs dies with their
    // membership.
    let alt = user(&gw, "alt-reentry@example.com", "0").await;
    let (status, token) =
        invite(&gw, team, &fx.admin.key, "alt-reentry@example.com", "admin").await;
    assert_eq!(status, 201);
    let removed = call(
        &gw,
        "DELETE",
        &format!("/api/teams/{team}/members/{}", fx.admin.id),
        &fx.owner.key,
        None,
    )
    .await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    assert_eq!(accept(&gw, &token, &alt.key).await, 410);
    assert!(!is_member(&gw, team, &fx.owner.key, &alt.id).await);

    // Demotion takes the invitations sent as an admin with it.
    let promoted = call(
        &gw,
        "PATCH",
        &format!("/api/teams/{team}/members/{}", fx.member.id),
        &fx.owner.key,
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(promoted.status, 200, "{}", promoted.text());
    let (status, token) = invite(
        &gw,
        team,
        &fx.member.key,
        "alt-reentry@example.com",
        "admin",
    )
    .await;
    assert_eq!(status, 201);
    let demoted = call(
        &gw,
        "PATCH",
        &format!("/api/teams/{team}/members/{}", fx.member.id),
        &fx.owner.key,
        Some(json!({"role": "member"})),
    )
    .await;
    assert_eq!(demoted.status, 200, "{}", demoted.text());
    assert_eq!(accept(&gw, &token, &alt.key).await, 410);
    assert!(!is_member(&gw, team, &fx.owner.key, &alt.id).await);

    // The owner's own invitations are untouched by all this.
    let (status, token) = invite(
        &gw,
        team,
        &fx.owner.key,
        "alt-reentry@example.com",
        "member",
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(accept(&gw, &token, &alt.key).await, 200);
    gw.finish().await;
}
both_backends!(a_removed_admin_cannot_walk_back_in);

async fn an_old_join_request_cannot_readmit(backend: Backend) {
    let gw = gateway(backend).await;
    let fx = fixture(&gw, "oldjoin").await;
    let team = &fx.team_id;
    // The joiner has a pending join request; they join by invitation
    // instead, then are removed.
    let (status, token) = invite(
        &gw,
        team,
        &fx.owner.key,
        "joiner-oldjoin@example.com",
        "member",
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(accept(&gw, &token, &fx.joiner.key).await, 200);
    let removed = call(
        &gw,
        "DELETE",
        &format!("/api/teams/{team}/members/{}", fx.joiner.id),
        &fx.owner.key,
        None,
    )
    .await;
    assert_eq!(removed.status, 200);
    // Approving the old request now changes nothing.
    let approved = call(
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
    assert_eq!(approved.status, 409, "{}", approved.text());
    assert!(!is_member(&gw, team, &fx.owner.key, &fx.joiner.id).await);
    let listed = call(
        &gw,
        "GET",
        &format!("/api/teams/{team}/join-requests"),
        &fx.admin.key,
        None,
    )
    .await;
    let request = listed.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == fx.join_request_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(request["status"], "closed");
    gw.finish().await;
}
both_backends!(an_old_join_request_cannot_readmit);

async fn a_second_invitation_dies_when_its_person_joins(backend: Backend) {
    let gw = gateway(backend).await;
    let fx = fixture(&gw, "twice").await;
    let team = &fx.team_id;
    let email = "outsider-twice@example.com";
    let (_, first) = invite(&gw, team, &fx.owner.key, email, "member").await;
    let (_, second) = invite(&gw, team, &fx.admin.key, email, "admin").await;
    assert_eq!(accept(&gw, &first, &fx.outsider.key).await, 200);
    // Given a limit, then leaving: the other invitation must not bring them
    // back with a fresh limit and a higher role.
    let left = call(
        &gw,
        "DELETE",
        &format!("/api/teams/{team}/members/{}", fx.outsider.id),
        &fx.outsider.key,
        None,
    )
    .await;
    assert_eq!(left.status, 200, "{}", left.text());
    assert_eq!(accept(&gw, &second, &fx.outsider.key).await, 410);
    assert!(!is_member(&gw, team, &fx.owner.key, &fx.outsider.id).await);
    gw.finish().await;
}
both_backends!(a_second_invitation_dies_when_its_person_joins);
