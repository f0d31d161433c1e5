//! Teams: the authorization matrix, invitations and join links, limits,
//! restrictions, transfer, reports and audit, on both backends.

use std::sync::Arc;

use serde_json::{json, Value};
use tollgate::app::Clock;
use tollgate::money::Money;

use crate::both_backends;
use crate::helpers::client::{self, Reply};
use crate::helpers::fixture as sample;
use crate::helpers::gateway::{standard_models, Backend, TestGateway, TestStorage, ADMIN};
use crate::helpers::upstream::{MockUpstream, Reply as Upstream};

/// 2026-11-28T12:00:00Z.
const NOV_28: i64 = 1_795_896_000_000;
/// 2026-12-01T00:00:01Z.
const DEC_1: i64 = 1_796_083_201_000;

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

async fn call(gw: &TestGateway, method: &str, path: &str, key: &str, body: Option<Value>) -> Reply {
    client::send(method, &gw.url(path), key, body, &[]).await
}

async fn user(gw: &TestGateway, email: &str, credit: &str) -> User {
    let (id, key) = gw.user_with_credit(email, credit).await;
    User { id, key }
}

async fn invite_and_accept(
    gw: &TestGateway,
    team_id: &str,
    by: &str,
    who: &User,
    email: &str,
    role: &str,
) {
    let invitation = call(
        gw,
        "POST",
        &format!("/api/teams/{team_id}/invitations"),
        by,
        Some(json!({"email": email, "role": role})),
    )
    .await;
    assert_eq!(invitation.status, 201, "{}", invitation.text());
    let token = invitation.json()["token"].as_str().unwrap().to_string();
    let accepted = call(
        gw,
        "POST",
        &format!("/api/invitations/{token}/accept"),
        &who.key,
        None,
    )
    .await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
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
        .ends_with(&format!("/api/join/{first}")));
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

fn chat(model: &str, max_tokens: u64) -> Value {
    json!({"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "total?"}]})
}

/// Each answer: gpt-5.1 at 2006 prompt (1920 cached) + 300 output = $0.0033475;
/// each hold (⌈body/2⌉ input tokens + 400 output tokens) is about $0.00406.
async fn json_upstream() -> MockUpstream {
    MockUpstream::start(|_| {
        Upstream::json(200, sample("openai_chat_nonstream_cached_reasoning.json"))
    })
    .await
}

const ANSWER_NANO: i64 = 3_347_500;

async fn team_bill(gw: &TestGateway, key: &str, team_id: &str, model: &str) -> Reply {
    client::send(
        "POST",
        &gw.url("/v1/chat/completions"),
        key,
        Some(chat(model, 400)),
        &[("x-tollgate-billing", &format!("team:{team_id}"))],
    )
    .await
}

async fn limits_soft_hard_override_and_rollover(backend: Backend) {
    let upstream = json_upstream().await;
    let storage = TestStorage::new(backend).await;
    let clock = Clock::manual(NOV_28);
    let gw = TestGateway::start_with_clock(
        storage,
        &standard_models(&upstream.base_url()),
        "",
        &[],
        clock.clone(),
    )
    .await;
    let fx = fixture(&gw, "lim").await;
    let team = fx.team_id.clone();
    let team_path = format!("/api/teams/{team}");
    let patch_team = |body: Value| call(&gw, "PATCH", &team_path, &fx.admin.key, Some(body));

    // Hard default limit of $0.01: the hold (~$0.0031 + output bound) fits
    // twice at most; then 402.
    assert_eq!(
        patch_team(json!({"default_monthly_limit_usd": "0.01", "enforcement": "hard"}))
            .await
            .status,
        200
    );
    let mut served = 0;
    let refused = loop {
        let reply = team_bill(&gw, &fx.member.key, &team, "gpt-5.1").await;
        match reply.status {
            200 => served += 1,
            402 => break reply,
            other => panic!("{other}: {}", reply.text()),
        }
        assert!(served < 10);
    };
    assert!(served >= 1);
    assert_eq!(refused.header("x-should-retry"), Some("false"));
    let error = &refused.json()["error"];
    assert_eq!(
        (error["code"].as_str(), error["type"].as_str()),
        (Some("monthly_limit_exceeded"), Some("insufficient_quota"))
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("limit $0.01")
            && message.contains("2026-12-01T00:00:00Z")
            && message.contains("spent $"),
        "{message}"
    );
    // Personal billing is untouched by the team's limit (the member has no money: 402 balance).
    let personal = client::send(
        "POST",
        &gw.url("/v1/chat/completions"),
        &fx.member.key,
        Some(chat("gpt-5.1", 300)),
        &[],
    )
    .await;
    assert_eq!(personal.json()["error"]["code"], "insufficient_balance");

    // An override beats the default; null clears it.
    let set = call(
        &gw,
        "PATCH",
        &format!("/api/teams/{team}/members/{}", fx.member.id),
        &fx.admin.key,
        Some(json!({"monthly_limit_usd": 1})),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(
        (
            set.json()["monthly_limit_usd"].as_str(),
            set.json()["effective_limit_usd"].as_str()
        ),
        (Some("1.0"), Some("1.0"))
    );
    assert_eq!(
        team_bill(&gw, &fx.member.key, &team, "gpt-5.1")
            .await
            .status,
        200
    );
    let cleared = call(
        &gw,
        "PATCH",
        &format!("/api/teams/{team}/members/{}", fx.member.id),
        &fx.admin.key,
        Some(json!({"monthly_limit_usd": null})),
    )
    .await;
    assert_eq!(cleared.json()["monthly_limit_usd"], Value::Null);
    assert_eq!(cleared.json()["effective_limit_usd"], "0.01");
    assert_eq!(
        team_bill(&gw, &fx.member.key, &team, "gpt-5.1")
            .await
            .status,
        402
    );

    // Soft: never refuses, warns, records the crossing once this month.
    assert_eq!(patch_team(json!({"enforcement": "soft"})).await.status, 200);
    for _ in 0..3 {
        let reply = team_bill(&gw, &fx.member.key, &team, "gpt-5.1").await;
        assert_eq!(reply.status, 200);
        let warning = reply
            .header("x-tollgate-limit-warning")
            .expect("soft limit warning");
        assert!(warning.contains("$0.01"), "{warning}");
    }
    gw.ledger_idle().await;
    // The limit events are written on tracked tasks; wait for them.
    for _ in 0..100 {
        if gw
            .store()
            .limit_event_count(&team, &fx.member.id, "2026-11")
            .await
            .unwrap()
            >= 2
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // One soft crossing and one hard refusal recorded for the month.
    assert_eq!(
        gw.store()
            .limit_event_count(&team, &fx.member.id, "2026-11")
            .await
            .unwrap(),
        2
    );

    // Month rollover: hard again, and December starts from zero.
    assert_eq!(patch_team(json!({"enforcement": "hard"})).await.status, 200);
    assert_eq!(
        team_bill(&gw, &fx.member.key, &team, "gpt-5.1")
            .await
            .status,
        402
    );
    clock.set_ms(DEC_1);
    let december = team_bill(&gw, &fx.member.key, &team, "gpt-5.1").await;
    assert_eq!(december.status, 200, "{}", december.text());
    let members = call(
        &gw,
        "GET",
        &format!("/api/teams/{team}/members"),
        &fx.owner.key,
        None,
    )
    .await
    .json();
    let me = members["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == fx.member.id.as_str())
        .unwrap()
        .clone();
    gw.ledger_idle().await;
    assert_eq!(me["enforcement"], "hard");

    // The owner paid for all of it.
    gw.ledger_idle().await;
    let rows = gw
        .store()
        .usage_rows_of_account(&fx.owner.id)
        .await
        .unwrap();
    let spent: i64 = rows.iter().map(|r| r.cost_nano).sum();
    assert_eq!(
        spent,
        rows.iter().filter(|r| r.status == "ok").count() as i64 * ANSWER_NANO
    );
    assert!(rows
        .iter()
        .all(|r| r.team_id.as_deref() == Some(team.as_str()) && r.user_id == fx.member.id));
    assert_eq!(
        gw.balance(&fx.owner.key).await,
        Money::from_nano(10_000_000_000 - spent).to_string()
    );
    gw.finish().await;
}
both_backends!(limits_soft_hard_override_and_rollover);

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

async fn reports_match_the_ledger_and_csv(backend: Backend) {
    let upstream = MockUpstream::start(|seen| {
        if seen.body["model"] == "gpt-5.1" {
            Upstream::json(200, sample("openai_chat_nonstream_cached_reasoning.json"))
        } else {
            Upstream::json(200, r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#)
        }
    })
    .await;
    let storage = TestStorage::new(backend).await;
    let clock = Clock::manual(NOV_28);
    let gw = TestGateway::start_with_clock(
        storage,
        &standard_models(&upstream.base_url()),
        "",
        &[],
        clock.clone(),
    )
    .await;
    let fx = fixture(&gw, "rep").await;
    let team = fx.team_id.clone();
    for (who, model, day) in [
        (&fx.member, "gpt-5.1", 0),
        (&fx.member, "gpt-4o-mini", 0),
        (&fx.admin, "gpt-4o-mini", 1),
        (&fx.owner, "gpt-5.1", 1),
        (&fx.member, "gpt-5.1", 2),
    ] {
        clock.set_ms(NOV_28 - day * 86_400_000);
        assert_eq!(team_bill(&gw, &who.key, &team, model).await.status, 200);
    }
    // A refusal is not counted.
    clock.set_ms(NOV_28);
    assert_eq!(
        team_bill(&gw, &fx.member.key, &team, "no-such-model")
            .await
            .status,
        404
    );
    // The member leaves; history keeps them.
    assert_eq!(
        call(
            &gw,
            "DELETE",
            &format!("/api/teams/{team}/members/{}", fx.member.id),
            &fx.member.key,
            None
        )
        .await
        .status,
        200
    );
    gw.ledger_idle().await;

    for group_by in ["member", "model", "day"] {
        let path =
            format!("/api/teams/{team}/usage?from=2026-11-01&to=2026-11-30&group_by={group_by}");
        let report = call(&gw, "GET", &path, &fx.admin.key, None).await;
        assert_eq!(report.status, 200, "{}", report.text());
        let report = report.json();
        assert_eq!(report["total"]["requests"], 5, "{report}");
        let mini_nano = Money::parse_usd("0.00000285").unwrap().nano(); // 7×0.15 + 3×0.60 per Mtok
        let expected = Money::from_nano(3 * ANSWER_NANO + 2 * mini_nano).to_string();
        assert_eq!(report["total"]["cost_usd"], expected.as_str());
        let groups = report["groups"].as_array().unwrap();
        let sum: i64 = groups
            .iter()
            .map(|g| {
                Money::parse_usd(g["cost_usd"].as_str().unwrap())
                    .unwrap()
                    .nano()
            })
            .sum();
        assert_eq!(Money::from_nano(sum).to_string(), expected);
        if group_by == "member" {
            let member = groups
                .iter()
                .find(|g| g["key"] == fx.member.id.as_str())
                .expect("a removed member stays in history");
            assert_eq!(member["label"], "member-rep@example.com");
            assert_eq!(member["requests"], 3);
        }
        if group_by == "day" {
            let keys: Vec<&str> = groups.iter().map(|g| g["key"].as_str().unwrap()).collect();
            assert_eq!(keys, vec!["2026-11-26", "2026-11-27", "2026-11-28"]);
            // The dashboard's stacked chart: each day split by member or
            // model, the parts summing to the day.
            for split in ["member", "model"] {
                let split_report = call(
                    &gw,
                    "GET",
                    &format!("{path}&split_by={split}"),
                    &fx.admin.key,
                    None,
                )
                .await;
                assert_eq!(split_report.status, 200, "{}", split_report.text());
                let split_report = split_report.json();
                for (day, plain) in split_report["groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(groups)
                {
                    let parts = day["split"].as_array().unwrap();
                    assert!(!parts.is_empty(), "{day}");
                    let nano = |v: &Value| {
                        Money::parse_usd(v["cost_usd"].as_str().unwrap())
                            .unwrap()
                            .nano()
                    };
                    let sum: i64 = parts.iter().map(nano).sum();
                    assert_eq!(sum, nano(plain), "{split} {day}");
                    let requests: i64 = parts.iter().map(|p| p["requests"].as_i64().unwrap()).sum();
                    assert_eq!(requests, plain["requests"].as_i64().unwrap());
                }
                let day_28 = &split_report["groups"][2]["split"];
                if split == "model" {
                    let keys: Vec<&str> = day_28
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p["label"].as_str().unwrap())
                        .collect();
                    assert_eq!(keys, vec!["gpt-4o-mini", "gpt-5.1"]);
                } else {
                    assert_eq!(day_28[0]["label"], "member-rep@example.com");
                }
            }
            for bad in [
                format!("{path}&split_by=team"),
                format!("{path}&split_by=member&format=csv"),
                path.replace("group_by=day", "group_by=member&split_by=model"),
            ] {
                let refused = call(&gw, "GET", &bad, &fx.admin.key, None).await;
                assert_eq!(
                    (refused.status, refused.json()["error"]["param"].as_str()),
                    (400, Some("split_by")),
                    "{bad}"
                );
            }
        }

        // CSV: parsed by Python's csv module, its totals equal the JSON's.
        let csv = call(
            &gw,
            "GET",
            &format!("{path}&format=csv"),
            &fx.owner.key,
            None,
        )
        .await;
        assert_eq!(csv.status, 200, "{}", csv.text());
        assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
        let script = r#"
import csv, io, sys, json
from decimal import Decimal
rows = list(csv.DictReader(io.StringIO(sys.stdin.read(), newline="")))
print(json.dumps({"requests": sum(int(r["requests"]) for r in rows),
                  "cost_usd": str(sum((Decimal(r["cost_usd"]) for r in rows), Decimal(0))),
                  "header": list(rows[0].keys()) if rows else []}))
"#;
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&csv.body).unwrap();
        let output = child.wait_with_output().unwrap();
        let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(parsed["requests"], 5);
        assert_eq!(
            Money::parse_usd(parsed["cost_usd"].as_str().unwrap())
                .unwrap()
                .to_string(),
            expected
        );
        assert_eq!(
            parsed["header"],
            json!([
                "key",
                "label",
                "requests",
                "input_tokens",
                "output_tokens",
                "cached_tokens",
                "reasoning_tokens",
                "cost_usd"
            ])
        );
    }
    // A removed member no longer sees the team.
    assert_eq!(
        call(
            &gw,
            "GET",
            &format!("/api/teams/{team}/usage"),
            &fx.member.key,
            None
        )
        .await
        .status,
        404
    );
    gw.finish().await;
}
both_backends!(reports_match_the_ledger_and_csv);

/// 200 concurrent team-billed requests against a hard limit: the recorded
/// month spend never passes the limit (holds are upper bounds).
async fn concurrent_team_requests_hold_the_limit(backend: Backend) {
    let upstream = json_upstream().await;
    let gw = Arc::new(TestGateway::start(backend, &upstream.base_url()).await);
    let fx = fixture(&gw, "burst").await;
    let team = fx.team_id.clone();
    let limit = Money::parse_usd("0.1").unwrap();
    let patch = call(
        &gw,
        "PATCH",
        &format!("/api/teams/{team}"),
        &fx.owner.key,
        Some(json!({"default_monthly_limit_usd": "0.1", "enforcement": "hard"})),
    )
    .await;
    assert_eq!(patch.status, 200);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let gw = gw.clone();
        let key = fx.member.key.clone();
        let team = team.clone();
        tasks.push(tokio::spawn(async move {
            team_bill(&gw, &key, &team, "gpt-5.1").await.status
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            200 => ok += 1,
            402 => {}
            other => panic!("unexpected {other}"),
        }
    }
    gw.ledger_idle().await;
    let rows = gw
        .store()
        .usage_rows_of_account(&fx.owner.id)
        .await
        .unwrap();
    let spent: i64 = rows.iter().map(|r| r.cost_nano).sum();
    assert_eq!(spent, ok * ANSWER_NANO);
    let overspend = spent - limit.nano();
    println!(
        "hard limit {limit}: served {ok}, spent {}, overspend {} USD ({backend:?})",
        Money::from_nano(spent),
        Money::from_nano(overspend.max(0))
    );
    assert!(
        overspend <= 0,
        "spent {} over a {limit} limit",
        Money::from_nano(spent)
    );
    let members = call(
        &gw,
        "GET",
        &format!("/api/teams/{team}/members"),
        &fx.owner.key,
        None,
    )
    .await
    .json();
    let member = members["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == fx.member.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        member["spend_this_month_usd"],
        Money::from_nano(spent).to_string().as_str()
    );
    assert_eq!(gw.state.metrics.reservations_outstanding(), 0);
    Arc::try_unwrap(gw).ok().unwrap().finish().await;
}
both_backends!(concurrent_team_requests_hold_the_limit);
