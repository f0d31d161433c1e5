//! Budget leases (issue 16, `counters/lease.rs`): each process takes a
//! slice of the member's and the owner's budget from Redis and admits from
//! it locally. A slice is a hold, so two processes still cannot overspend
//! a hard limit; what leases cost is a refusal in one process near the
//! limit while the other holds a slice, until that slice goes back.

use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate::money::Money;

use crate::helpers::client;
use crate::helpers::faults::{
    counters_equal_ledger, load, metric, quiescent, team, team_request, Deployment, ANSWER_NANO,
};
use crate::helpers::servers::GatewayProcess;

/// A gateway of `deployment` with budget leases.
fn leasing(deployment: &Deployment, name: &str, lease_usd: &str, lease_ms: u64) -> GatewayProcess {
    let config = deployment.config(name).replacen(
        "[storage]\n",
        &format!("[storage]\nlease_usd = \"{lease_usd}\"\nlease_ms = {lease_ms}\n"),
        1,
    );
    GatewayProcess::start(&config, &deployment.scratch.0)
}

async fn metrics(gateway: &GatewayProcess) -> String {
    client::send("GET", &gateway.url("/metrics"), "", None, &[])
        .await
        .text()
}

/// Admissions the processes served from their slices, without Redis.
async fn admitted_from_slices(gateways: &[&GatewayProcess]) -> f64 {
    let mut total = 0.0;
    for gateway in gateways {
        total += metric(&metrics(gateway).await, "tollgate_lease_admissions");
    }
    total
}

/// Waits until neither process holds a slice (each goes back within
/// `lease_ms`, swept every 0.1 s).
async fn slices_returned(gateways: &[&GatewayProcess]) {
    let start = Instant::now();
    'wait: loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "slices not given back"
        );
        for gateway in gateways {
            if metric(&metrics(gateway).await, "tollgate_leases_outstanding") > 0.0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'wait;
            }
        }
        return;
    }
}

/// 400 requests through two leasing processes against a $0.5 hard limit:
/// never over it, every 2xx one row, and once the slices are back the
/// counters equal the ledger to the nano-dollar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_leasing_processes_hold_one_hard_limit() {
    let deployment = Deployment::start().await;
    let a = leasing(&deployment, "a", "0.05", 500);
    let b = leasing(&deployment, "b", "0.05", 500);
    let team = team(&a, Some("0.5")).await;
    let answers = load(&[a.url(""), b.url("")], &team, 400, 64).await;
    quiescent(&[&a, &b]).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused = answers.iter().filter(|(s, _)| *s == 402).count();
    assert_eq!(ok + refused, 400, "{answers:?}");
    let from_slices = admitted_from_slices(&[&a, &b]).await;
    assert!(from_slices > 0.0, "no admission came from a slice");
    slices_returned(&[&a, &b]).await;
    let (_, spent) = counters_equal_ledger(&deployment, &team, &answers).await;
    assert_eq!(spent, ok as i64 * ANSWER_NANO);
    let limit = Money::parse_usd("0.5").unwrap().nano();
    assert!(
        spent <= limit,
        "spent {} over the limit",
        Money::from_nano(spent)
    );
    println!(
        "two leasing processes ($0.05 slices), 400 requests, hard limit $0.5: served {ok} ({from_slices} admitted from slices), spent ${}, left unspent ${} (one request holds about $0.004)",
        Money::from_nano(spent),
        Money::from_nano(limit - spent)
    );
}

fn headroom_of(limits: &Value) -> Money {
    let team = limits["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["billing"]
                .as_str()
                .is_some_and(|b| b.starts_with("team:"))
        })
        .unwrap();
    Money::parse_usd(team["remaining_usd"].as_str().unwrap()).unwrap()
}

async fn one(gateway: &GatewayProcess, team: &crate::helpers::faults::Team) -> u16 {
    load(&[gateway.url("")], team, 1, 1).await[0].0
}

/// The cost, shown: process A takes one request and a slice; B then
/// serves until its counters run short and refuses, while A's own headroom
/// (which counts its slice) still covers a request. Once A's slice goes
/// back (after `lease_ms`), B serves again. Spend never passes the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_held_in_one_process_can_refuse_in_the_other_until_it_goes_back() {
    let deployment = Deployment::start().await;
    let a = leasing(&deployment, "a", "1", 4_000);
    let b = leasing(&deployment, "b", "1", 4_000);
    let team = team(&a, Some("0.1")).await;
    assert_eq!(one(&a, &team).await, 200);
    let a_holds = Money::from_nano(metric(&metrics(&a).await, "tollgate_leased_nano_usd") as i64);
    assert!(a_holds > Money::ZERO, "A took a slice");
    let mut served_by_b = 0;
    let refused_at = loop {
        assert!(served_by_b < 100, "B never refused");
        match one(&b, &team).await {
            200 => served_by_b += 1,
            402 => break Instant::now(),
            other => panic!("B answered {other}"),
        }
    };
    let limits = |gateway: &GatewayProcess| {
        let url = gateway.url("/api/me/limits");
        let key = team.member_key.clone();
        async move { client::send("GET", &url, &key, None, &[]).await.json() }
    };
    let (seen_by_a, seen_by_b) = (
        headroom_of(&limits(&a).await),
        headroom_of(&limits(&b).await),
    );
    let hold = Money::parse_usd("0.0041").unwrap();
    assert!(
        seen_by_a >= hold && seen_by_b < hold,
        "A's headroom {seen_by_a} (with its slice), B's {seen_by_b}"
    );
    // A's slice goes back after its life: B serves again.
    slices_returned(&[&a, &b]).await;
    assert_eq!(one(&b, &team).await, 200, "B after A's slice went back");
    quiescent(&[&a, &b]).await;
    let mut db = deployment.db().await;
    let spent: i64 = crate::helpers::faults::rows_of(&mut db, &team.owner_id)
        .await
        .values()
        .map(|(cost, _)| cost)
        .sum();
    assert!(spent <= Money::parse_usd("0.1").unwrap().nano());
    println!(
        "A held a ${a_holds} slice; B served {served_by_b} and refused with its headroom at ${seen_by_b} while A's was ${seen_by_a}; B served again {:?} later, once A's slice went back; spent ${} of $0.1",
        refused_at.elapsed(),
        Money::from_nano(spent)
    );
}

/// Redis killed (it keeps nothing) and brought back empty while two
/// leasing processes serve: the slices taken before are of counters that
/// no longer exist; what they admit is still counted (the ledger writer
/// applies it to the rebuilt counters), their give-backs change nothing,
/// and once the slices are back the counters equal the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushed_under_leasing_processes_loses_nothing() {
    let mut deployment = Deployment::start().await;
    let a = leasing(&deployment, "a", "0.05", 500);
    let b = leasing(&deployment, "b", "0.05", 500);
    let team = team(&a, None).await;
    let urls = [a.url(""), b.url("")];
    let mut answers = load(&urls, &team, 120, 16).await;
    let in_flight = tokio::spawn({
        let urls = urls.clone();
        let team = crate::helpers::faults::Team {
            id: team.id.clone(),
            owner_id: team.owner_id.clone(),
            member_id: team.member_id.clone(),
            member_key: team.member_key.clone(),
        };
        async move { load(&urls, &team, 800, 8).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    deployment.redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    deployment.redis.resume();
    answers.extend(in_flight.await.unwrap());
    answers.extend(load(&urls, &team, 40, 8).await);
    quiescent(&[&a, &b]).await;
    assert!(
        admitted_from_slices(&[&a, &b]).await > 0.0,
        "no admission came from a slice"
    );
    slices_returned(&[&a, &b]).await;
    assert!(
        answers.iter().all(|(s, _)| *s == 200 || *s == 503),
        "{:?}",
        answers
            .iter()
            .map(|(s, _)| *s)
            .collect::<std::collections::BTreeSet<_>>()
    );
    let (served, spent) = counters_equal_ledger(&deployment, &team, &answers).await;
    assert_eq!(spent, served as i64 * ANSWER_NANO);
    println!(
        "Redis flushed under two leasing processes: {} requests, {served} served; counters == ledger (${}) once the slices went back",
        answers.len(),
        Money::from_nano(spent)
    );
}

/// A client that leaves while its hold is being taken (the counters' step
/// sent, its answer not yet read) leaves nothing held: admission runs to
/// its end and gives back what it took, slice and hold, with a
/// `client_closed` row at no cost. Redis is paused (`CLIENT PAUSE`, below
/// the gateway's 2 s call timeout) so that the clients are gone before
/// their steps run. Before the fix the slice taken for a dropped request
/// stayed taken: the load suite's payer was billed $45 more than served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_during_admission_leaves_nothing_held() {
    let deployment = Deployment::start().await;
    let a = leasing(&deployment, "a", "0.05", 500);
    let team = team(&a, Some("0.5")).await;
    // Counters seeded; the first slice taken and given back.
    let answers = load(&[a.url("")], &team, 4, 2).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    quiescent(&[&a]).await;
    slices_returned(&[&a]).await;

    let redis = redis::Client::open(deployment.redis.url()).unwrap();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1200)
        .arg("ALL")
        .query_async(&mut connection)
        .await
        .unwrap();
    let mut gone = Vec::new();
    for _ in 0..8 {
        let request = team_request(&a.url(""), &team);
        // The client gives up long before Redis answers.
        gone.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_millis(300), client::try_send_raw(request))
                .await
                .is_err()
        }));
    }
    for client in gone {
        assert!(
            client.await.unwrap(),
            "a client was answered during the pause"
        );
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    quiescent(&[&a]).await;
    slices_returned(&[&a]).await;

    let mut db = deployment.db().await;
    let closed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM usage_rows WHERE status = 'client_closed' AND cost_nano = 0",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(closed, 8, "each abandoned admission is one row at no cost");
    let (served, spent) = counters_equal_ledger(&deployment, &team, &answers).await;
    assert_eq!(served, 4);
    assert_eq!(spent, 4 * ANSWER_NANO);
}
