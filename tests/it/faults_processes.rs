//! Faults: two gateway processes hold one hard limit, and a limit change
//! or key revocation made on one reaches the other at once.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate::money::Money;

use crate::helpers::client;
use crate::helpers::faults::{
    api, counters_equal_ledger, load, quiescent, team, user_with_credit, Deployment, ADMIN,
    ANSWER_NANO,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_hold_one_hard_limit() {
    hold_one_hard_limit(Deployment::start().await, "redis").await;
}

/// The same with the counters on a three-master Redis Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_a_redis_cluster_hold_one_hard_limit() {
    hold_one_hard_limit(Deployment::start_on_cluster().await, "redis cluster").await;
}

async fn hold_one_hard_limit(deployment: Deployment, what: &str) {
    let a = deployment.gateway("a");
    let b = deployment.gateway("b");
    let team = team(&a, Some("0.5")).await;
    let answers = load(&[a.url(""), b.url("")], &team, 400, 64).await;
    quiescent(&[&a, &b]).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused = answers.iter().filter(|(s, _)| *s == 402).count();
    assert_eq!(ok + refused, 400, "{answers:?}");
    let (_, spent) = counters_equal_ledger(&deployment, &team, &answers).await;
    assert_eq!(spent, ok as i64 * ANSWER_NANO);
    let limit = Money::parse_usd("0.5").unwrap().nano();
    println!(
        "two processes ({what}), 400 requests, hard limit $0.5: served {ok}, spent ${}, overspend ${}",
        Money::from_nano(spent),
        Money::from_nano((spent - limit).max(0))
    );
    assert!(
        spent <= limit,
        "spent {} over the limit",
        Money::from_nano(spent)
    );
    // The API reports the same spend through either process.
    let owner_view = client::send(
        "GET",
        &b.url(&format!("/api/teams/{}/members", team.id)),
        ADMIN,
        None,
        &[],
    )
    .await
    .json();
    let member = owner_view["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == team.member_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        member["spend_this_month_usd"],
        Money::from_nano(spent).to_string().as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_change_reaches_the_other_process_at_once() {
    let deployment = Deployment::start().await;
    let a = deployment.gateway("a");
    let b = deployment.gateway("b");
    let team = team(&a, None).await;
    let b_urls = [b.url("")];
    let call_b = || load(&b_urls, &team, 1, 1);
    assert_eq!(call_b().await[0].0, 200);
    // A limit of zero set through A refuses through B on the next request.
    api(
        &a,
        "PATCH",
        &format!("/api/teams/{}", team.id),
        ADMIN,
        json!({"default_monthly_limit_usd": "0", "enforcement": "hard"}),
    )
    .await;
    let start = Instant::now();
    loop {
        let status = call_b().await[0].0;
        if status == 402 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "B still served {status} a second after the change"
        );
    }
    println!(
        "limit change seen by the other process after {:?}",
        start.elapsed()
    );
    // A key revoked through A is refused through B.
    let keys = client::send("GET", &a.url("/api/me/keys"), &team.member_key, None, &[])
        .await
        .json();
    let key_id = keys["data"][0]["id"].as_str().unwrap();
    api(
        &a,
        "DELETE",
        &format!("/api/me/keys/{key_id}"),
        &team.member_key,
        Value::Null,
    )
    .await;
    let start = Instant::now();
    while client::send("GET", &b.url("/api/me"), &team.member_key, None, &[])
        .await
        .status
        != 401
    {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "revoked key still accepted by B"
        );
    }
}

/// 200 hidden-input requests (each held at gpt-5.1's 400,000-token window,
/// each loading 390,000 tokens upstream) through two processes against a
/// balance that covers three holds: at most three served, nothing negative.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_hold_hidden_input_to_the_balance() {
    let upstream = crate::helpers::upstream::MockUpstream::start(crate::proxy_holds::greedy).await;
    let deployment = Deployment::start_with(upstream).await;
    let a = deployment.gateway("a");
    let b = deployment.gateway("b");
    let (_, key) = user_with_credit(&a, "hidden@example.com", "1.60").await;
    let body = json!({"model": "gpt-5.1", "previous_response_id": "resp_1", "input": "more", "max_output_tokens": 100});
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = if i % 2 == 0 {
            a.url("/v1/responses")
        } else {
            b.url("/v1/responses")
        };
        let (key, body) = (key.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            client::send("POST", &url, &key, Some(body), &[])
                .await
                .status
        }));
    }
    let mut served = 0;
    for task in tasks {
        match task.await.unwrap() {
            200 => served += 1,
            402 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    quiescent(&[&a, &b]).await;
    assert!((1..=3).contains(&served), "served {served}");
    for gateway in [&a, &b] {
        let me = api(gateway, "GET", "/api/me", &key, Value::Null).await;
        let balance = Money::parse_usd(me["balance_usd"].as_str().unwrap()).unwrap();
        assert!(balance >= Money::ZERO, "balance went negative: {balance}");
        let metrics = client::send("GET", &gateway.url("/metrics"), ADMIN, None, &[]).await;
        assert!(metrics.text().contains("tollgate_hold_exceeded_total 0"));
    }
}
