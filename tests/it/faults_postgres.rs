//! Faults: Postgres stopped for ten seconds loses nothing; a SIGKILL with
//! spooled rows replays them exactly once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::helpers::client;
use crate::helpers::faults::{
    counters_equal_ledger, load, metric, quiescent, rows_of, team, Deployment,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_ten_seconds_loses_nothing() {
    let deployment = Deployment::start().await;
    let a = deployment.gateway("a");
    let b = deployment.gateway("b");
    let team = team(&a, None).await;
    let urls = [a.url(""), b.url("")];
    let mut answers = load(&urls, &team, 40, 8).await;
    deployment.pg.stop();
    let stopped = Instant::now();
    // Keep serving through the outage.
    while stopped.elapsed() < Duration::from_secs(10) {
        answers.extend(load(&urls, &team, 20, 4).await);
    }
    deployment.pg.resume();
    answers.extend(load(&urls, &team, 40, 8).await);
    quiescent(&[&a, &b]).await;
    let served_during = answers.iter().filter(|(s, _)| *s == 200).count();
    let (served, _) = counters_equal_ledger(&deployment, &team, &answers).await;
    let mut db = deployment.db().await;
    let rows = rows_of(&mut db, &team.owner_id).await;
    let ok_rows = rows.values().filter(|(_, status)| status == "ok").count();
    println!(
        "postgres stopped 10 s: {} requests, {served} got 2xx, {ok_rows} ok rows",
        answers.len()
    );
    assert_eq!(ok_rows, served, "every 2xx has exactly one row");
    assert!(
        served_during > 100,
        "the proxy kept serving: {served_during}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_spooled_rows_replays_them_once() {
    let deployment = Deployment::start().await;
    let mut a = deployment.gateway("a");
    let team = team(&a, None).await;
    let urls = [a.url("")];
    let mut answers = load(&urls, &team, 5, 1).await;
    deployment.pg.stop();
    answers.extend(load(&urls, &team, 20, 4).await);
    // Wait until the rows sit in the spool, then kill without a drain.
    let start = Instant::now();
    loop {
        let metrics = client::send("GET", &a.url("/metrics"), "", None, &[])
            .await
            .text();
        if metric(&metrics, "tollgate_ledger_spool_rows") >= 20.0
            && metric(&metrics, "tollgate_ledger_queue_depth") == 0.0
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "rows never reached the spool: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.kill();
    deployment.pg.resume();
    a.resume();
    quiescent(&[&a]).await;
    let mut db = deployment.db().await;
    let rows = rows_of(&mut db, &team.owner_id).await;
    let served: BTreeSet<&String> = answers
        .iter()
        .filter(|(s, _)| *s == 200)
        .filter_map(|(_, id)| id.as_ref())
        .collect();
    assert_eq!(served.len(), 25);
    for id in &served {
        assert!(
            rows.contains_key(*id),
            "spooled row {id} missing after restart; log:\n{}",
            a.log()
        );
    }
    assert_eq!(
        rows.values().filter(|(_, s)| s == "ok").count(),
        25,
        "each row exactly once"
    );
    println!(
        "SIGKILL with 20 spooled rows: 25 expected, {} found",
        rows.len()
    );
}
