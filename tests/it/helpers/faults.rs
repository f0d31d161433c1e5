//! Shared by the `faults_*` tests: a deployment of real processes (private
//! Postgres cluster, private Redis, mock upstream), a team in it, load, and
//! the check that the counters equal the ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{Connection, Row};
use tokio::sync::Semaphore;

use super::client;
use super::fixture;
use super::servers::{GatewayProcess, PgCluster, Redis, RedisCluster, RedisServer, Scratch};
use super::upstream::{MockUpstream, Reply};

pub const ADMIN: &str = "tga-fault-test-operator-0123456789abcdef";
const PREFIX: &str = "tgfault";
/// Each answer: gpt-5.1, 2006 prompt (1920 cached) + 300 output.
pub const ANSWER_NANO: i64 = 3_347_500;

pub struct Deployment {
    pub pg: PgCluster,
    pub redis: Box<dyn Redis>,
    pub scratch: Scratch,
    _upstream: MockUpstream,
    upstream_url: String,
}

impl Deployment {
    pub async fn start() -> Deployment {
        let upstream = MockUpstream::start(|_| {
            Reply::json(200, fixture("openai_chat_nonstream_cached_reasoning.json"))
        })
        .await;
        Deployment::start_with(upstream).await
    }

    /// A deployment on a three-master Redis Cluster.
    pub async fn start_on_cluster() -> Deployment {
        let upstream = MockUpstream::start(|_| {
            Reply::json(200, fixture("openai_chat_nonstream_cached_reasoning.json"))
        })
        .await;
        Deployment::start_on(upstream, true).await
    }

    /// A deployment in front of the given upstream.
    pub async fn start_with(upstream: MockUpstream) -> Deployment {
        Deployment::start_on(upstream, false).await
    }

    async fn start_on(upstream: MockUpstream, cluster: bool) -> Deployment {
        let (pg, redis) = tokio::task::spawn_blocking(move || {
            let redis: Box<dyn Redis> = if cluster {
                Box::new(RedisCluster::start())
            } else {
                Box::new(RedisServer::start())
            };
            (PgCluster::start(), redis)
        })
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

    pub fn config(&self, name: &str) -> String {
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

    pub fn gateway(&self, name: &str) -> GatewayProcess {
        GatewayProcess::start(&self.config(name), &self.scratch.0)
    }

    pub async fn db(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.pg.url()).await.unwrap()
    }
}

pub struct Team {
    pub id: String,
    pub owner_id: String,
    pub member_id: String,
    pub member_key: String,
}

pub async fn api(
    gateway: &GatewayProcess,
    method: &str,
    path: &str,
    key: &str,
    body: Value,
) -> Value {
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

/// A user with a key and `usd` of credit: (user id, key).
pub async fn user_with_credit(
    gateway: &GatewayProcess,
    email: &str,
    usd: &str,
) -> (String, String) {
    user_with_credit_as(gateway, ADMIN, email, usd).await
}

/// [`user_with_credit`] on a gateway with another operator token.
pub async fn user_with_credit_as(
    gateway: &GatewayProcess,
    admin: &str,
    email: &str,
    usd: &str,
) -> (String, String) {
    let user = api(
        gateway,
        "POST",
        "/api/users",
        admin,
        json!({"email": email}),
    )
    .await;
    let user_id = user["id"].as_str().unwrap().to_string();
    let key = api(
        gateway,
        "POST",
        &format!("/api/users/{user_id}/keys"),
        admin,
        json!({}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_string();
    if usd != "0" {
        api(
            gateway,
            "POST",
            &format!("/api/users/{user_id}/credits"),
            admin,
            json!({"amount_usd": usd}),
        )
        .await;
    }
    (user_id, key)
}

/// An owner with $100, a member, a team, and the member in it.
pub async fn team(gateway: &GatewayProcess, limit: Option<&str>) -> Team {
    let (owner_id, owner_key) = user_with_credit(gateway, "owner@example.com", "100").await;
    let (member_id, member_key) = user_with_credit(gateway, "member@example.com", "0").await;
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

/// One team-billed chat request (the member's key) to the gateway at `url`.
pub fn team_request(url: &str, team: &Team) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let body = json!({"model": "gpt-5.1", "max_tokens": 400, "messages": [{"role": "user", "content": "total?"}]});
    http::Request::post(format!("{url}/v1/chat/completions"))
        .header("authorization", format!("Bearer {}", team.member_key))
        .header("content-type", "application/json")
        .header("x-tollgate-billing", format!("team:{}", team.id))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap()
}

/// Sends `n` team-billed requests, `concurrency` at a time, round-robin over
/// the gateways; `during` runs once `at` of them have answered.
pub async fn load(
    urls: &[String],
    team: &Team,
    n: usize,
    concurrency: usize,
) -> Vec<(u16, Option<String>)> {
    load_timed(urls, team, n, concurrency)
        .await
        .into_iter()
        .map(|(status, id, _)| (status, id))
        .collect()
}

/// `load`, with each request's time to its answer (for printing, never
/// for asserting).
pub async fn load_timed(
    urls: &[String],
    team: &Team,
    n: usize,
    concurrency: usize,
) -> Vec<(u16, Option<String>, Duration)> {
    let semaphore = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for i in 0..n {
        let request = team_request(&urls[i % urls.len()], team);
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let reply =
                tokio::time::timeout(Duration::from_secs(60), client::try_send_raw(request)).await;
            let took = sent.elapsed();
            drop(permit);
            match reply {
                Ok(Some(reply)) => (
                    reply.status,
                    reply.header("x-request-id").map(str::to_string),
                    took,
                ),
                _ => (0, None, took),
            }
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until every gateway has settled, written and replayed everything.
pub async fn quiescent(gateways: &[&GatewayProcess]) {
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

pub async fn rows_of(
    db: &mut sqlx::PgConnection,
    account: &str,
) -> BTreeMap<String, (i64, String)> {
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
    let mut command = redis::cmd("HGET");
    command.arg(key).arg("v");
    match tollgate::counters::redis::Nodes::parse(url) {
        tollgate::counters::redis::Nodes::Cluster(nodes) => {
            let client = redis::cluster::ClusterClient::new(nodes).unwrap();
            let mut conn = client.get_async_connection().await.unwrap();
            command.query_async(&mut conn).await.unwrap()
        }
        tollgate::counters::redis::Nodes::Single(url) => {
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            command.query_async(&mut conn).await.unwrap()
        }
    }
}

fn spend_key(team: &Team) -> String {
    let period = tollgate::clock::period_of(tollgate::clock::now_ms());
    // Tagged with the paying account (one Redis Cluster slot per account).
    format!(
        "{PREFIX}:spend:{{{}}}:{}:{}:{}",
        team.owner_id, team.id, team.member_id, period.key
    )
}

/// Checks that the counters equal the ledger, and every 2xx has one row.
pub async fn counters_equal_ledger(
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
        &format!("{PREFIX}:bal:{{{}}}", team.owner_id),
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
