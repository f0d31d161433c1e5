//! Many gateways, one truth: real `tollgate serve` processes on a private
//! Postgres cluster and a private Redis, with real kills.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{Connection, Row};
use tokio::sync::Semaphore;
use tollgate::money::Money;

use crate::helpers::client;
use crate::helpers::fixture;
use crate::helpers::servers::{GatewayProcess, PgCluster, RedisServer, Scratch};
use crate::helpers::upstream::{MockUpstream, Reply};

const ADMIN: &str = "tga-fault-test-operator";
const PREFIX: &str = "tgfault";
/// Each answer: gpt-5.1, 2006 prompt (1920 cached) + 300 output.
const ANSWER_NANO: i64 = 3_347_500;

struct Deployment {
    pg: PgCluster,
    redis: RedisServer,
    scratch: Scratch,
    _upstream: MockUpstream,
    upstream_url: String,
}

impl Deployment {
    async fn start() -> Deployment {
        let upstream = MockUpstream::start(|_| {
            Reply::json(200, fixture("openai_chat_nonstream_cached_reasoning.json"))
        })
        .await;
        let (pg, redis) =
            tokio::task::spawn_blocking(|| (PgCluster::start(), RedisServer::start()))
                .await
                .unwrap();
        Deployment {
            upstream_url: upstream.base_url(),
            _upstream: upstream,
            pg,
            redis,
            scratch: Scratch::new("faults"),
        }
    }

    fn config(&self, name: &str) -> String {
        format!(
            r#"admin_token = "{ADMIN}"
admin_token_env = "TOLLGATE_TEST_NO_SUCH_VAR"
shutdown_grace_secs = 5
[storage]
database_url = "{}"
redis_url = "{}"
redis_prefix = "{PREFIX}"
[ledger]
flush_interval_ms = 10
spool_dir = "{}"
write_timeout_ms = 1000
replay_interval_ms = 200
[cache]
key_ttl_ms = 300
[[providers]]
name = "up"
kind = "openai"
base_url = "{}"
[[models]]
name = "gpt-5.1"
provider = "up"
input_usd_per_mtok = "1.25"
output_usd_per_mtok = "10.00"
cached_input_usd_per_mtok = "0.125"
"#,
            self.pg.url(),
            self.redis.url(),
            self.scratch.0.join(format!("spool-{name}")).display(),
            self.upstream_url
        )
    }

    fn gateway(&self, name: &str) -> GatewayProcess {
        GatewayProcess::start(&self.config(name), &self.scratch.0)
    }

    async fn db(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.pg.url()).await.unwrap()
    }
}

struct Team {
    id: String,
    owner_id: String,
    member_id: String,
    member_key: String,
}

async fn api(gateway: &GatewayProcess, method: &str, path: &str, key: &str, body: Value) -> Value {
    let body = if body.is_null() { None } else { Some(body) };
    let reply = client::send(method, &gateway.url(path), key, body, &[]).await;
    assert!(
        reply.status < 300,
        "{method} {path}: {} {}",
        reply.status,
        reply.text()
    );
    reply.json()
}

/// An owner with $100, a member, a team, and the member in it.
async fn team(gateway: &GatewayProcess, limit: Option<&str>) -> Team {
    let owner = api(
        gateway,
        "POST",
        "/api/users",
        ADMIN,
        json!({"email": "owner@example.com"}),
    )
    .await;
    let owner_id = owner["id"].as_str().unwrap().to_string();
    let owner_key = api(
        gateway,
        "POST",
        &format!("/api/users/{owner_id}/keys"),
        ADMIN,
        json!({}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_string();
    api(
        gateway,
        "POST",
        &format!("/api/users/{owner_id}/credits"),
        ADMIN,
        json!({"amount_usd": "100"}),
    )
    .await;
    let member = api(
        gateway,
        "POST",
        "/api/users",
        ADMIN,
        json!({"email": "member@example.com"}),
    )
    .await;
    let member_id = member["id"].as_str().unwrap().to_string();
    let member_key = api(
        gateway,
        "POST",
        &format!("/api/users/{member_id}/keys"),
        ADMIN,
        json!({}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let team = api(
        gateway,
        "POST",
        "/api/teams",
        &owner_key,
        json!({"name": "Faults"}),
    )
    .await;
    let id = team["id"].as_str().unwrap().to_string();
    let invitation = api(
        gateway,
        "POST",
        &format!("/api/teams/{id}/invitations"),
        &owner_key,
        json!({"email": "member@example.com"}),
    )
    .await;
    let token = invitation["token"].as_str().unwrap();
    api(
        gateway,
        "POST",
        &format!("/api/invitations/{token}/accept"),
        &member_key,
        Value::Null,
    )
    .await;
    if let Some(limit) = limit {
        api(
            gateway,
            "PATCH",
            &format!("/api/teams/{id}"),
            &owner_key,
            json!({"default_monthly_limit_usd": limit, "enforcement": "hard"}),
        )
        .await;
    }
    Team {
        id,
        owner_id,
        member_id,
        member_key,
    }
}

/// Sends `n` team-billed requests, `concurrency` at a time, round-robin over
/// the gateways; `during` runs once `at` of them have answered.
async fn load(
    urls: &[String],
    team: &Team,
    n: usize,
    concurrency: usize,
) -> Vec<(u16, Option<String>)> {
    let semaphore = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = format!("{}/v1/chat/completions", urls[i % urls.len()]);
        let key = team.member_key.clone();
        let billing = format!("team:{}", team.id);
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": "gpt-5.1", "max_tokens": 400, "messages": [{"role": "user", "content": "total?"}]});
            let request = http::Request::post(url)
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", "application/json")
                .header("x-tollgate-billing", billing)
                .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
                .unwrap();
            let reply = tokio::time::timeout(Duration::from_secs(60), client::try_send_raw(request)).await;
            drop(permit);
            match reply {
                Ok(Some(reply)) => (reply.status, reply.header("x-request-id").map(str::to_string)),
                _ => (0, None),
            }
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until every gateway has settled, written and replayed everything.
async fn quiescent(gateways: &[&GatewayProcess]) {
    let start = Instant::now();
    'wait: loop {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "gateways did not settle"
        );
        for gateway in gateways {
            let metrics = client::send("GET", &gateway.url("/metrics"), "", None, &[])
                .await
                .text();
            let busy = metric(&metrics, "tollgate_reservations_outstanding")
                + metric(&metrics, "tollgate_ledger_queue_depth")
                + metric(&metrics, "tollgate_ledger_spool_rows")
                + metric(&metrics, "tollgate_ledger_spooling");
            if busy > 0.0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'wait;
            }
        }
        return;
    }
}

async fn rows_of(db: &mut sqlx::PgConnection, account: &str) -> BTreeMap<String, (i64, String)> {
    sqlx::query("SELECT request_id, cost_nano, status FROM usage_rows WHERE account_id = $1")
        .bind(account)
        .fetch_all(db)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("request_id"), (r.get("cost_nano"), r.get("status"))))
        .collect()
}

async fn redis_value(url: &str, key: &str) -> Option<i64> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("HGET")
        .arg(key)
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn spend_key(team: &Team) -> String {
    let period = tollgate::clock::period_of(tollgate::clock::now_ms());
    format!(
        "{PREFIX}:spend:{}:{}:{}",
        team.id, team.member_id, period.key
    )
}

/// Checks that the counters equal the ledger, and every 2xx has one row.
async fn counters_equal_ledger(
    deployment: &Deployment,
    team: &Team,
    answers: &[(u16, Option<String>)],
) -> (usize, i64) {
    let mut db = deployment.db().await;
    let rows = rows_of(&mut db, &team.owner_id).await;
    let served: BTreeSet<&String> = answers
        .iter()
        .filter(|(s, _)| *s == 200)
        .filter_map(|(_, id)| id.as_ref())
        .collect();
    for id in &served {
        let row = rows
            .get(*id)
            .unwrap_or_else(|| panic!("2xx {id} has no ledger row"));
        assert_eq!(row.1, "ok");
    }
    let spent: i64 = rows.values().map(|(cost, _)| cost).sum();
    let balance = redis_value(
        &deployment.redis.url(),
        &format!("{PREFIX}:bal:{}", team.owner_id),
    )
    .await;
    let spend = redis_value(&deployment.redis.url(), &spend_key(team)).await;
    assert_eq!(
        balance,
        Some(100_000_000_000 - spent),
        "owner balance counter vs ledger"
    );
    assert_eq!(spend, Some(spent), "member month spend counter vs ledger");
    (served.len(), spent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_hold_one_hard_limit() {
    let deployment = Deployment::start().await;
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
        "two processes, 400 requests, hard limit $0.5: served {ok}, spent ${}, overspend ${}",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushed_mid_load_loses_nothing() {
    let mut deployment = Deployment::start().await;
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
        "redis flush mid-load: {} requests, {served} served, {unavailable} refused 503 while Redis was away; counters == ledger (${})",
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
