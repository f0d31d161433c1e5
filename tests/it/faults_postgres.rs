//! Faults: Postgres stopped for ten seconds loses nothing; a SIGKILL while
//! Postgres is down loses no row; a single-node restart counts spooled
//! spend.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate::money::Money;

use crate::helpers::client;
use crate::helpers::faults::{
    counters_equal_ledger, load, load_timed, quiescent, rows_of, team, user_with_credit, Deployment,
};
use crate::helpers::servers::GatewayProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_ten_seconds_loses_nothing() {
    let deployment = Deployment::start().await;
    let a = deployment.gateway("a");
    let b = deployment.gateway("b");
    let team = team(&a, None).await;
    let urls = [a.url(""), b.url("")];
    let before = load_timed(&urls, &team, 40, 8).await;
    let mut answers: Vec<(u16, Option<String>)> =
        before.iter().map(|(s, id, _)| (*s, id.clone())).collect();
    deployment.pg.stop();
    let stopped = Instant::now();
    // Keep serving through the outage.
    let mut during = Vec::new();
    while stopped.elapsed() < Duration::from_secs(10) {
        during.extend(load_timed(&urls, &team, 20, 4).await);
    }
    let percentiles = |timed: &[(u16, Option<String>, Duration)]| {
        let mut took: Vec<Duration> = timed.iter().map(|(_, _, t)| *t).collect();
        took.sort();
        let at = |q: f64| {
            took.get(((took.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        (at(0.5), at(0.99))
    };
    println!(
        "latency before the outage p50/p99 {:?}, during it {:?} (printed, not asserted)",
        percentiles(&before),
        percentiles(&during)
    );
    answers.extend(during.into_iter().map(|(s, id, _)| (s, id)));
    deployment.pg.resume();
    answers.extend(load(&urls, &team, 40, 8).await);
    quiescent(&[&a, &b]).await;
    let served_during = answers
        .iter()
        .filter(|(s, _)| *s == 200)
        .count()
        .saturating_sub(80);
    let (served, _) = counters_equal_ledger(&deployment, &team, &answers).await;
    let mut db = deployment.db().await;
    let rows = rows_of(&mut db, &team.owner_id).await;
    let ok_rows = rows.values().filter(|(_, status)| status == "ok").count();
    println!(
        "postgres stopped 10 s: {} requests, {served} got 2xx, {ok_rows} ok rows",
        answers.len()
    );
    assert_eq!(ok_rows, served, "every 2xx has exactly one row");
    // Every request with a known key is answered: keys and policies come
    // from their last known copies while the breaker holds the database down.
    let failed: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "not answered 2xx: {failed:?}");
    // How many were served during the outage is a speed, not a test (see
    // the fault benchmark); it is printed, not asserted.
    println!("served while Postgres was stopped: {served_during}");
}

/// The write-ahead spool: 20 requests served with Postgres stopped, the
/// process SIGKILLed 0.3 s after the last answer (well before any database
/// write could time out): every row is there after the restart, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_postgres_down_loses_no_row() {
    let deployment = Deployment::start().await;
    let mut a = deployment.gateway("a");
    let team = team(&a, None).await;
    let urls = [a.url("")];
    let mut answers = load(&urls, &team, 5, 1).await;
    deployment.pg.stop();
    answers.extend(load(&urls, &team, 20, 4).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
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
        "SIGKILL 0.3 s after 20 requests with Postgres down: 25 rows expected, {} found",
        rows.len()
    );
}

/// In-process counters on Postgres (`single_node`): spend spooled during
/// an outage survives a SIGKILL, and the restarted process seeds its
/// counter only after the spool is replayed: balance = credits − ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_restart_counts_spooled_spend() {
    let deployment = Deployment::start().await;
    let config = deployment.config("solo").replace(
        &format!("redis_url = \"{}\"", deployment.redis.url()),
        "redis_url = \"\"\nsingle_node = true",
    );
    let mut solo = GatewayProcess::start(&config, &deployment.scratch.0);
    let (user_id, key) = user_with_credit(&solo, "solo@example.com", "1").await;
    let body = json!({"model": "gpt-5.1", "max_tokens": 400, "messages": [{"role": "user", "content": "total?"}]});
    let mut served = 0;
    for _ in 0..5 {
        let reply = client::send(
            "POST",
            &solo.url("/v1/chat/completions"),
            &key,
            Some(body.clone()),
            &[],
        )
        .await;
        served += usize::from(reply.status == 200);
    }
    deployment.pg.stop();
    for _ in 0..20 {
        let reply = client::send(
            "POST",
            &solo.url("/v1/chat/completions"),
            &key,
            Some(body.clone()),
            &[],
        )
        .await;
        served += usize::from(reply.status == 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    solo.kill();
    deployment.pg.resume();
    solo.resume();
    // The balance answers once the spool is replayed (503 until then).
    let start = Instant::now();
    let after = loop {
        let me = client::send("GET", &solo.url("/api/me"), &key, None, &[]).await;
        if me.status == 200 {
            break me.json()["balance_usd"].as_str().unwrap().to_string();
        }
        assert_eq!(me.status, 503, "{}", me.text());
        assert!(start.elapsed() < Duration::from_secs(60), "never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    quiescent(&[&solo]).await;
    let mut db = deployment.db().await;
    let rows = rows_of(&mut db, &user_id).await;
    let spent: i64 = rows.values().map(|(cost, _)| cost).sum();
    let expected = Money::parse_usd("1").unwrap().nano() - spent;
    println!(
        "single node: {served} served, {} rows, balance after the restart ${after} (credits − ledger: ${})",
        rows.len(),
        Money::from_nano(expected)
    );
    assert_eq!(rows.values().filter(|(_, s)| s == "ok").count(), served);
    assert_eq!(
        Money::parse_usd(&after).unwrap().nano(),
        expected,
        "the restart forgot spooled spend"
    );
}

/// Twenty SIGKILLs at random moments under steady load (Postgres up):
/// every 2xx answered more than a flush interval (plus a margin for the
/// settlement and the fsync) before its kill has exactly one row; the ones
/// answered just before a kill are counted and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_under_load_lose_only_the_last_moments() {
    let deployment = Deployment::start().await;
    let mut a = deployment.gateway("a");
    let team = team(&a, None).await;
    // flush_interval_ms is 10 in the fault config; the margin covers the
    // Redis settlement before the row is queued and the fsyncs ahead of it
    // on a machine busy with other work (a CI run at a third of this
    // machine's speed lost a row answered 250 ms before its kill).
    let margin = Duration::from_millis(1500);
    let mut answered: Vec<(String, Instant)> = Vec::new();
    let mut kills: Vec<Instant> = Vec::new();
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..20 {
        let url = a.url("/v1/chat/completions");
        let mut clients = Vec::new();
        for _ in 0..4 {
            let (url, key, billing) = (
                url.clone(),
                team.member_key.clone(),
                format!("team:{}", team.id),
            );
            clients.push(tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let body = json!({"model": "gpt-5.1", "max_tokens": 400,
                        "messages": [{"role": "user", "content": "total?"}]});
                    let request = http::Request::post(&url)
                        .header("authorization", format!("Bearer {key}"))
                        .header("content-type", "application/json")
                        .header("x-tollgate-billing", &billing)
                        .body(http_body_util::Full::new(bytes::Bytes::from(
                            body.to_string(),
                        )))
                        .unwrap();
                    match client::try_send_raw(request).await {
                        Some(reply) if reply.status == 200 => {
                            done.push((reply.request_id(), Instant::now()));
                        }
                        Some(_) => {}
                        None => return done,
                    }
                }
            }));
        }
        // A random moment 1.7–2.7 s into the load.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(1700 + seed % 1000)).await;
        a.kill();
        kills.push(Instant::now());
        for client in clients {
            answered.extend(client.await.unwrap());
        }
        a.resume();
    }
    quiescent(&[&a]).await;
    let mut db = deployment.db().await;
    let rows = rows_of(&mut db, &team.owner_id).await;
    let (mut early, mut late, mut late_lost) = (0, 0, 0);
    let mut oldest_lost = Duration::ZERO;
    for (id, at) in &answered {
        let kill = kills.iter().find(|k| *k > at).copied();
        let before_kill = kill.map_or(Duration::MAX, |k| k.duration_since(*at));
        if before_kill > margin {
            early += 1;
            assert!(
                rows.contains_key(id),
                "{id} answered {before_kill:?} before a kill has no row"
            );
        } else {
            late += 1;
            if !rows.contains_key(id) {
                late_lost += 1;
                oldest_lost = oldest_lost.max(before_kill);
            }
        }
    }
    println!(
        "20 SIGKILLs under load: {} answered, {early} more than {margin:?} before a kill (all with a row), \
         {late} within it ({late_lost} of those lost; the oldest lost was answered {oldest_lost:?} before its kill)",
        answered.len()
    );
    assert!(early > 0);
}
