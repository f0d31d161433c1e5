//! Shared by the `teams_*` tests: a team with one user in each role, calls
//! as a given key, and team-billed chat requests.

use serde_json::{json, Value};

use super::client::{self, Reply};
use super::fixture as sample;
use super::gateway::TestGateway;
use super::upstream::{MockUpstream, Reply as Upstream};

/// 2026-11-28T12:00:00Z.
pub const NOV_28: i64 = 1_795_896_000_000;

pub struct User {
    pub id: String,
    pub key: String,
}

/// A team with an owner, an admin and a member, an outsider with a pending
/// invitation, and a joiner with a pending join request.
pub struct Fixture {
    pub team_id: String,
    pub owner: User,
    pub admin: User,
    pub member: User,
    pub outsider: User,
    pub joiner: User,
    pub outsider_invitation: (String, String),
    pub join_request_id: String,
}

pub async fn call(
    gw: &TestGateway,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> Reply {
    client::send(method, &gw.url(path), key, body, &[]).await
}

pub async fn user(gw: &TestGateway, email: &str, credit: &str) -> User {
    let (id, key) = gw.user_with_credit(email, credit).await;
    User { id, key }
}

/// Invites `email` to `team` with `role` as `by`: (status, token).
pub async fn invite(
    gw: &TestGateway,
    team: &str,
    by: &str,
    email: &str,
    role: &str,
) -> (u16, String) {
    let reply = call(
        gw,
        "POST",
        &format!("/api/teams/{team}/invitations"),
        by,
        Some(json!({"email": email, "role": role})),
    )
    .await;
    let token = reply.json()["token"].as_str().unwrap_or("").to_string();
    (reply.status, token)
}

/// Accepts an invitation with `key`: the status.
pub async fn accept(gw: &TestGateway, token: &str, key: &str) -> u16 {
    call(
        gw,
        "POST",
        &format!("/api/invitations/{token}/accept"),
        key,
        None,
    )
    .await
    .status
}

pub async fn invite_and_accept(
    gw: &TestGateway,
    team_id: &str,
    by: &str,
    who: &User,
    email: &str,
    role: &str,
) {
    let (status, token) = invite(gw, team_id, by, email, role).await;
    assert_eq!(status, 201);
    assert_eq!(accept(gw, &token, &who.key).await, 200);
}

pub async fn fixture(gw: &TestGateway, tag: &str) -> Fixture {
    let owner = user(gw, &format!("owner-{tag}@example.com"), "10").await;
    let admin = user(gw, &format!("admin-{tag}@example.com"), "0").await;
    let member = user(gw, &format!("member-{tag}@example.com"), "0").await;
    let outsider = user(gw, &format!("outsider-{tag}@example.com"), "0").await;
    let joiner = user(gw, &format!("joiner-{tag}@example.com"), "0").await;
    let team = call(
        gw,
        "POST",
        "/api/teams",
        &owner.key,
        Some(json!({"name": format!("Team {tag}")})),
    )
    .await;
    assert_eq!(team.status, 201, "{}", team.text());
    let team_id = team.json()["id"].as_str().unwrap().to_string();
    invite_and_accept(
        gw,
        &team_id,
        &owner.key,
        &admin,
        &format!("admin-{tag}@example.com"),
        "admin",
    )
    .await;
    invite_and_accept(
        gw,
        &team_id,
        &admin.key,
        &member,
        &format!("member-{tag}@example.com"),
        "member",
    )
    .await;
    let invitation = call(
        gw,
        "POST",
        &format!("/api/teams/{team_id}/invitations"),
        &owner.key,
        Some(json!({"email": format!("outsider-{tag}@example.com")})),
    )
    .await;
    let invitation = invitation.json();
    let link = call(
        gw,
        "PUT",
        &format!("/api/teams/{team_id}/invite-link"),
        &admin.key,
        Some(json!({"enabled": true})),
    )
    .await;
    let link_token = link.json()["token"].as_str().unwrap().to_string();
    let joined = call(
        gw,
        "POST",
        &format!("/api/join/{link_token}"),
        &joiner.key,
        None,
    )
    .await;
    assert_eq!(joined.status, 201, "{}", joined.text());
    Fixture {
        team_id,
        owner,
        admin,
        member,
        outsider,
        joiner,
        outsider_invitation: (
            invitation["id"].as_str().unwrap().to_string(),
            invitation["token"].as_str().unwrap().to_string(),
        ),
        join_request_id: joined.json()["id"].as_str().unwrap().to_string(),
    }
}

pub fn chat(model: &str, max_tokens: u64) -> Value {
    json!({"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "total?"}]})
}

/// Each answer: gpt-5.1 at 2006 prompt (1920 cached) + 300 output = $0.0033475;
/// each hold (⌈body/2⌉ input tokens + 400 output tokens) is about $0.00406.
pub async fn json_upstream() -> MockUpstream {
    MockUpstream::start(|_| {
        Upstream::json(200, sample("openai_chat_nonstream_cached_reasoning.json"))
    })
    .await
}

pub const ANSWER_NANO: i64 = 3_347_500;

pub async fn team_bill(gw: &TestGateway, key: &str, team_id: &str, model: &str) -> Reply {
    client::send(
        "POST",
        &gw.url("/v1/chat/completions"),
        key,
        Some(chat(model, 400)),
        &[("x-tollgate-billing", &format!("team:{team_id}"))],
    )
    .await
}
