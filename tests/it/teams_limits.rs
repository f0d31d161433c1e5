//! Teams: monthly member limits (soft, hard, overrides, month rollover),
//! also under 200 concurrent team-billed requests.

use std::sync::Arc;

use serde_json::{json, Value};
use tollgate::clock::Clock;
use tollgate::money::Money;

use crate::both_backends;
use crate::helpers::client;
use crate::helpers::gateway::{standard_models, Backend, TestGateway, TestStorage};
use crate::helpers::teams::{call, chat, fixture, json_upstream, team_bill, ANSWER_NANO, NOV_28};

/// 2026-12-01T00:00:01Z.
const DEC_1: i64 = 1_796_083_201_000;

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
    // The figures, in fields (contract §5).
    assert_eq!(error["scope"], "member_monthly");
    assert_eq!(error["limit_usd"], "0.01");
    assert_eq!(error["resets_at"], "2026-12-01T00:00:00Z");
    let spent = tollgate::money::Money::parse_usd(error["spent_usd"].as_str().unwrap()).unwrap();
    let hold = tollgate::money::Money::parse_usd(error["hold_usd"].as_str().unwrap()).unwrap();
    assert!(spent.nano() > 0 && hold.nano() > 0, "{error}");
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
