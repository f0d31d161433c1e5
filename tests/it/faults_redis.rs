//! Faults: Redis flushed mid-load loses nothing; Redis away serves within
//! the outage budget, and the counters equal the ledger afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use tollgate::money::Money;

use crate::helpers::client;
use crate::helpers::faults::{
    counters_equal_ledger, load, metric, quiescent, team, Deployment, Team, ANSWER_NANO,
};
use crate::helpers::servers::{GatewayProcess, Partition};
use crate::helpers::upstream::{MockUpstream, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushed_mid_load_loses_nothing() {
    flushed_mid_load(Deployment::start().await, "redis").await;
}

/// The same on a three-master Redis Cluster: every master killed and
/// brought back empty (with its slots) while requests are in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_flushed_mid_load_loses_nothing() {
    flushed_mid_load(Deployment::start_on_cluster().await, "redis cluster").await;
}

async fn flushed_mid_load(mut deployment: Deployment, what: &str) {
    let a = deployment.gateway("a");
    let b = deployment.gateway("b");
    let team = team(&a, None).await;
    let urls = [a.url(""), b.url("")];
    let first = load(&urls, &team, 120, 16).await;
    // Kill Redis (it keeps nothing) while requests are in flight.
    let in_flight = tokio::spawn({
        let urls = urls.clone();
        let team = clone_team(&team);
        async move { load(&urls, &team, 800, 8).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    deployment.redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    deployment.redis.resume();
    let mut answers = first;
    answers.extend(in_flight.await.unwrap());
    answers.extend(load(&urls, &team, 40, 8).await);
    quiescent(&[&a, &b]).await;
    let unavailable = answers.iter().filter(|(s, _)| *s == 503).count();
    let (served, spent) = counters_equal_ledger(&deployment, &team, &answers).await;
    println!(
        "{what} flush mid-load: {} requests, {served} served, {unavailable} refused 503 while Redis was away; counters == ledger (${})",
        answers.len(),
        Money::from_nano(spent)
    );
    if answers.iter().any(|(s, _)| *s == 0) {
        let tail = |log: String| log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
        println!(
            "gateway a log (newest first):\n{}\ngateway b log:\n{}",
            tail(a.log()),
            tail(b.log())
        );
    }
    assert!(
        answers.iter().all(|(s, _)| *s == 200 || *s == 503),
        "{:?}",
        answers
            .iter()
            .fold(BTreeMap::<u16, usize>::new(), |mut m, (s, _)| {
                *m.entry(*s).or_default() += 1;
                m
            })
    );
}

fn clone_team(team: &Team) -> Team {
    Team {
        id: team.id.clone(),
        owner_id: team.owner_id.clone(),
        member_id: team.member_id.clone(),
        member_key: team.member_key.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_away_serves_within_the_outage_budget() {
    let mut deployment = Deployment::start().await;
    let config = deployment.config("a").replace(
        "redis_prefix = ",
        "redis_outage_budget_usd = \"0.05\"\nredis_prefix = ",
    );
    let a = GatewayProcess::start(&config, &deployment.scratch.0);
    let team = team(&a, None).await;
    let urls = [a.url("")];
    let mut answers = load(&urls, &team, 5, 1).await;
    deployment.redis.kill();
    let outage = load(&urls, &team, 40, 4).await;
    let served = outage.iter().filter(|(s, _)| *s == 200).count();
    let refused = outage.iter().filter(|(s, _)| *s == 402).count();
    assert_eq!(served + refused, 40, "{outage:?}");
    let budget = Money::parse_usd("0.05").unwrap().nano();
    assert!(
        served >= 5 && served as i64 * ANSWER_NANO <= budget,
        "served {served} on a $0.05 budget"
    );
    let ready = client::send("GET", &a.url("/readyz"), "", None, &[]).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "degraded");
    let metrics = client::send("GET", &a.url("/metrics"), "", None, &[])
        .await
        .text();
    assert!(metric(&metrics, "tollgate_degraded_admissions") >= served as f64);
    answers.extend(outage);
    deployment.redis.resume();
    answers.extend(load(&urls, &team, 10, 2).await);
    quiescent(&[&a]).await;
    let (total_served, spent) = counters_equal_ledger(&deployment, &team, &answers).await;
    println!(
        "redis away, $0.05 outage budget: {served} served and {refused} refused during the outage; after it, counters == ledger ({total_served} rows, ${})",
        Money::from_nano(spent)
    );
}

/// Redis unreachable (a partition: the settlement never reaches it) for
/// longer than a settlement retries: the settlement is given up with the
/// hold still in the counters, and the row, once stored, corrects them.
/// Takes about 70 s: the retry window is a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_given_up_during_a_partition_is_corrected() {
    let upstream = MockUpstream::start(|_| {
        Reply::json(
            200,
            crate::helpers::fixture("openai_chat_nonstream_cached_reasoning.json"),
        )
        .delay_headers(Duration::from_millis(1500))
    })
    .await;
    let deployment = Deployment::start_with(upstream).await;
    let partition = Partition::start(deployment.redis.port()).await;
    let config = deployment
        .config("a")
        .replace(&deployment.redis.url(), &partition.url());
    let a = GatewayProcess::start(&config, &deployment.scratch.0);
    let team = team(&a, None).await;
    let urls = [a.url("")];
    let mut answers = load(&urls, &team, 2, 2).await;
    // One request holds in Redis, then Redis becomes unreachable before
    // its answer comes back: its settlement is retried for a minute and
    // given up.
    let in_flight = {
        let urls = urls.clone();
        let team = clone_team(&team);
        tokio::spawn(async move { load(&urls, &team, 1, 1).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    partition.cut();
    answers.extend(in_flight.await.unwrap());
    assert_eq!(answers.last().map(|a| a.0), Some(200), "{answers:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let metrics = client::send("GET", &a.url("/metrics"), "", None, &[])
            .await
            .text();
        if metric(&metrics, "tollgate_settlement_failures_total") >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the settlement was never given up"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    partition.heal();
    // The counters are seeded again from the ledger on the next requests.
    quiescent(&[&a]).await;
    answers.extend(load(&urls, &team, 2, 2).await);
    quiescent(&[&a]).await;
    let (served, spent) = counters_equal_ledger(&deployment, &team, &answers).await;
    println!(
        "settlement given up during a partition: counters == ledger afterwards ({served} rows, ${})",
        Money::from_nano(spent)
    );
}
