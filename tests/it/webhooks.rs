//! Telling people before the wall (contract §6, issue 18): events stored
//! with the fact that caused them and delivered to a real HTTP receiver,
//! signed, retried, once per crossing; webhook URLs that reach private
//! networks refused; headroom that agrees with admission.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::both_backends;
use crate::helpers::faults::{self, Deployment};
use crate::helpers::fixture;
use crate::helpers::gateway::{standard_models, Backend, TestGateway};
use crate::helpers::servers::GatewayProcess;
use crate::helpers::teams::{call, user, User};
use crate::helpers::upstream::{MockUpstream, Reply, Seen};

const ALLOW_PRIVATE: &str = "\n[webhooks]\nallow_private_networks = true\n";

/// A receiver that answers each event's first `fail_first` attempts with
/// 500, then 200.
async fn receiver(fail_first: usize) -> MockUpstream {
    let attempts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    MockUpstream::start(move |seen: &Seen| {
        let id = seen
            .headers
            .get("x-tollgate-event-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut attempts = attempts.lock().unwrap();
        let n = attempts.entry(id).or_default();
        *n += 1;
        if *n <= fail_first {
            Reply::json(500, "{\"error\":\"not yet\"}")
        } else {
            Reply::json(200, "{}")
        }
    })
    .await
}

fn hook_url(receiver: &MockUpstream) -> String {
    format!("http://{}/hooks/tollgate", receiver.addr)
}

/// Checks a delivery's signature as a receiver would, with the secret.
fn verify(seen: &Seen, secret: &str) {
    let header = seen.headers["x-tollgate-signature"].to_str().unwrap();
    let (t, v1) = header
        .split_once(",v1=")
        .and_then(|(t, v1)| Some((t.strip_prefix("t=")?, v1)))
        .unwrap_or_else(|| panic!("signature header {header:?}"));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&seen.raw);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        v1,
        expected,
        "signature of {}",
        String::from_utf8_lossy(&seen.raw)
    );
    let t: i64 = t.parse().unwrap();
    let now = tollgate::clock::now_ms() / 1000;
    assert!((now - t).abs() < 600, "timestamp {t} vs now {now}");
    assert_eq!(
        seen.headers["x-tollgate-event-id"].to_str().unwrap(),
        seen.body["id"].as_str().unwrap()
    );
}

/// The distinct events delivered (2xx answered), by id.
fn delivered(receiver: &MockUpstream, fail_first: usize) -> BTreeMap<String, Value> {
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for seen in receiver.seen() {
        by_id
            .entry(seen.body["id"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(seen.body.clone());
    }
    by_id
        .into_iter()
        .filter(|(_, tries)| tries.len() > fail_first)
        .map(|(id, mut tries)| (id, tries.remove(0)))
        .collect()
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn of_type<'a>(events: &'a BTreeMap<String, Value>, kind: &str) -> Vec<&'a Value> {
    events.values().filter(|e| e["type"] == kind).collect()
}

/// A gateway (webhooks may reach loopback) in front of a provider whose
/// every answer costs $0.0033475 on gpt-5.1.
async fn answering_gateway(backend: Backend) -> (MockUpstream, TestGateway) {
    let upstream = MockUpstream::start(|_| {
        Reply::json(200, fixture("openai_chat_nonstream_cached_reasoning.json"))
    })
    .await;
    let gw = TestGateway::start_with(
        backend,
        &standard_models(&upstream.base_url()),
        ALLOW_PRIVATE,
    )
    .await;
    (upstream, gw)
}

/// A team `owner` makes; its id.
async fn new_team(gw: &TestGateway, owner: &User, name: impl std::fmt::Display) -> String {
    let reply = call(
        gw,
        "POST",
        "/api/teams",
        &owner.key,
        Some(json!({"name": name.to_string()})),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["id"].as_str().unwrap().to_string()
}

/// `member` joins `team` as a member, invited by `owner`.
async fn join(gw: &TestGateway, team: &str, owner: &User, member: &User, email: &str) {
    crate::helpers::teams::invite_and_accept(gw, team, &owner.key, member, email, "member").await;
}

async fn create_hook(gw: &TestGateway, team: &str, key: &str, url: &str, events: Value) -> Value {
    let reply = call(
        gw,
        "POST",
        &format!("/api/teams/{team}/webhooks"),
        key,
        Some(json!({"url": url, "events": events})),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()
}

/// A member crossing 50, 80 and 100% of a soft limit, then refused by the
/// hard limit, and a member joining and leaving: each event delivered once,
/// signed, after two refused attempts each; the deliveries listed.
async fn events_are_signed_retried_and_delivered_once(backend: Backend) {
    let (_upstream, gw) = answering_gateway(backend).await;
    let hooks = receiver(2).await;
    let owner = user(&gw, "owner@hooks.test", "10").await;
    let member = user(&gw, "member@hooks.test", "0").await;
    let team = new_team(&gw, &owner, "Hooks").await;
    let hook = create_hook(
        &gw,
        &team,
        &owner.key,
        &hook_url(&hooks),
        json!(tollgate::store::events::EVENT_TYPES),
    )
    .await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    // Listing never shows the secret.
    let listed = call(
        &gw,
        "GET",
        &format!("/api/teams/{team}/webhooks"),
        &owner.key,
        None,
    )
    .await;
    assert!(!listed.text().contains(&secret));
    join(&gw, &team, &owner, &member, "member@hooks.test").await;
    // A soft limit of 1 cent: each answer costs $0.0033475.
    let patch = call(
        &gw,
        "PATCH",
        &format!("/api/teams/{team}"),
        &owner.key,
        Some(json!({"default_monthly_limit_usd": "0.01", "enforcement": "soft"})),
    )
    .await;
    assert_eq!(patch.status, 200, "{}", patch.text());
    for _ in 0..4 {
        let reply = chat(&gw, &member, &team).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // Hard now: the next request is refused, once reported.
    call(
        &gw,
        "PATCH",
        &format!("/api/teams/{team}"),
        &owner.key,
        Some(json!({"enforcement": "hard"})),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(chat(&gw, &member, &team).await.status, 402);
    }
    let removed = call(
        &gw,
        "DELETE",
        &format!("/api/teams/{team}/members/{}", member.id),
        &owner.key,
        None,
    )
    .await;
    assert!(removed.status < 300, "{}", removed.text());

    let start = Instant::now();
    while delivered(&hooks, 2).len() < 6 {
        if start.elapsed() > Duration::from_secs(60) {
            let kinds: Vec<(String, Value)> = hooks
                .seen()
                .iter()
                .map(|s| {
                    (
                        s.body["type"].as_str().unwrap_or("").to_string(),
                        s.body["data"].clone(),
                    )
                })
                .collect();
            let stored = gw.store().events(&team).await.unwrap();
            panic!("six events not delivered in 60 s: seen {kinds:#?}; stored {stored:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing more arrives: each fact made one event.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = delivered(&hooks, 2);
    let thresholds: Vec<i64> = of_type(&events, "limit.threshold")
        .iter()
        .map(|e| e["data"]["threshold_percent"].as_i64().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(thresholds, vec![50, 80, 100], "{events:#?}");
    assert_eq!(of_type(&events, "limit.threshold").len(), 3);
    assert_eq!(of_type(&events, "limit.blocked").len(), 1, "{events:#?}");
    assert_eq!(of_type(&events, "member.joined").len(), 1);
    assert_eq!(of_type(&events, "member.left").len(), 1);
    let threshold = of_type(&events, "limit.threshold")[0];
    assert_eq!(threshold["team_id"], team.as_str());
    assert_eq!(threshold["data"]["user_id"], member.id.as_str());
    assert_eq!(threshold["data"]["email"], "member@hooks.test");
    assert_eq!(threshold["data"]["limit_usd"], "0.01");
    assert_eq!(
        threshold["data"]["month"],
        tollgate::clock::period_of(tollgate::clock::now_ms())
            .key
            .as_str()
    );
    let blocked = of_type(&events, "limit.blocked")[0];
    assert_eq!(blocked["data"]["limit_usd"], "0.01");
    assert!(blocked["data"].get("threshold_percent").is_none());
    assert_eq!(
        of_type(&events, "member.joined")[0]["data"]["role"],
        "member"
    );
    // Every attempt signed afresh with the secret.
    for seen in hooks.seen() {
        verify(&seen, &secret);
    }
    assert_eq!(
        hooks.seen().len(),
        3 * events.len(),
        "two 500s, then a 200, each"
    );
    // The attempts, newest first.
    let wid = hook["id"].as_str().unwrap();
    let attempts = call(
        &gw,
        "GET",
        &format!("/api/teams/{team}/webhooks/{wid}/deliveries"),
        &owner.key,
        None,
    )
    .await
    .json();
    let attempts = attempts["data"].as_array().unwrap();
    assert_eq!(attempts.len(), 3 * events.len());
    let statuses: Vec<i64> = attempts
        .iter()
        .map(|a| a["status"].as_i64().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 500).count(),
        2 * events.len()
    );
    let times: Vec<time::OffsetDateTime> = attempts
        .iter()
        .map(|a| {
            time::OffsetDateTime::parse(
                a["at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    gw.finish().await;
}

both_backends!(events_are_signed_retried_and_delivered_once);

async fn chat(gw: &TestGateway, member: &User, team: &str) -> crate::helpers::client::Reply {
    crate::helpers::client::send(
        "POST",
        &gw.url("/v1/chat/completions"),
        &member.key,
        Some(json!({"model": "gpt-5.1", "max_tokens": 400,
            "messages": [{"role": "user", "content": "total?"}]})),
        &[("x-tollgate-billing", &format!("team:{team}"))],
    )
    .await
}

/// Two gateway processes, 200 concurrent settlements that cross 50, 80
/// and 100% together: one event per threshold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_and_200_settlements_make_one_event_per_threshold() {
    let deployment = Deployment::start().await;
    let config = |name: &str| format!("{}{ALLOW_PRIVATE}", deployment.config(name));
    let a = GatewayProcess::start(&config("a"), &deployment.scratch.0);
    let b = GatewayProcess::start(&config("b"), &deployment.scratch.0);
    let hooks = receiver(0).await;
    let team = faults::team(&a, None).await;
    // The owner's key is the operator here: create the hook as operator.
    let hook = faults::api(
        &a,
        "POST",
        &format!("/api/teams/{}/webhooks", team.id),
        faults::ADMIN,
        json!({"url": hook_url(&hooks), "events": ["limit.threshold"]}),
    )
    .await;
    faults::api(
        &a,
        "PATCH",
        &format!("/api/teams/{}", team.id),
        faults::ADMIN,
        json!({"default_monthly_limit_usd": "0.3", "enforcement": "soft"}),
    )
    .await;
    let started = Instant::now();
    let answers = faults::load(&[a.url(""), b.url("")], &team, 200, 64).await;
    assert!(answers.iter().all(|(s, _)| *s == 200));
    faults::quiescent(&[&a, &b]).await;
    wait_for("three threshold events", Duration::from_secs(30), || {
        delivered(&hooks, 0).len() >= 3
    })
    .await;
    let latency = started.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = delivered(&hooks, 0);
    let mut percents: Vec<i64> = events
        .values()
        .map(|e| e["data"]["threshold_percent"].as_i64().unwrap())
        .collect();
    percents.sort_unstable();
    assert_eq!(percents, vec![50, 80, 100], "{events:#?}");
    assert_eq!(hooks.seen().len(), 3, "each delivered once");
    for seen in hooks.seen() {
        verify(&seen, hook["secret"].as_str().unwrap());
    }
    println!(
        "two processes, 200 settlements across 50/80/100% of a soft limit: 3 events, 3 deliveries; load start to last delivery {latency:?}"
    );
}

/// Deliveries wait out a receiver that is down and a gateway restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_survives_a_restart_while_the_receiver_is_down() {
    let gw = TestGateway::start_with(
        Backend::Embedded,
        &standard_models("http://127.0.0.1:9/v1"),
        ALLOW_PRIVATE,
    )
    .await;
    let owner = user(&gw, "owner@restart.test", "1").await;
    let member = user(&gw, "member@restart.test", "0").await;
    let team = new_team(&gw, &owner, "Restart").await;
    // A port nothing listens on yet.
    let port = crate::helpers::servers::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    create_hook(&gw, &team, &owner.key, &url, json!(["member.joined"])).await;
    join(&gw, &team, &owner, &member, "member@restart.test").await;
    // At least one failed attempt, then the gateway stops.
    let start = Instant::now();
    let wid = gw.store().webhooks(&team).await.unwrap()[0].id.clone();
    while gw
        .store()
        .webhook_attempts(&wid, 1)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(start.elapsed() < Duration::from_secs(10), "no attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let storage = gw.stop().await;
    // The receiver comes up on that port; the gateway starts again.
    let hooks = MockUpstream::start_on(port, |_| Reply::json(200, "{}")).await;
    let gw = TestGateway::start_on(
        storage,
        &standard_models("http://127.0.0.1:9/v1"),
        ALLOW_PRIVATE,
        &[],
    )
    .await;
    wait_for(
        "the delivery after the restart",
        Duration::from_secs(30),
        || !hooks.seen().is_empty(),
    )
    .await;
    assert_eq!(hooks.seen()[0].body["type"], "member.joined");
    gw.finish().await;
}

/// Private and malformed targets, and bad event lists, are refused.
async fn webhook_targets_are_guarded(backend: Backend) {
    let gw = TestGateway::start(backend, "http://127.0.0.1:9/v1").await;
    let owner = user(&gw, "owner@ssrf.test", "1").await;
    let team = new_team(&gw, &owner, "Guard").await;
    let path = format!("/api/teams/{team}/webhooks");
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.7/hook",
        "http://192.168.1.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://localhost/hook",
        "http://0.0.0.0/hook",
        "ftp://example.com/hook",
        "not a url",
    ] {
        let reply = call(
            &gw,
            "POST",
            &path,
            &owner.key,
            Some(json!({"url": url, "events": ["member.joined"]})),
        )
        .await;
        assert_eq!(reply.status, 400, "{url}: {}", reply.text());
        assert_eq!(reply.json()["error"]["param"], "url", "{url}");
    }
    for events in [
        json!([]),
        json!(["limit.nope"]),
        json!("member.joined"),
        Value::Null,
    ] {
        let reply = call(
            &gw,
            "POST",
            &path,
            &owner.key,
            Some(json!({"url": "https://example.com/h", "events": events})),
        )
        .await;
        assert_eq!(reply.status, 400, "{events}: {}", reply.text());
        assert_eq!(reply.json()["error"]["param"], "events");
    }
    // Someone outside the team does not even see its webhooks.
    let outsider = user(&gw, "outsider@ssrf.test", "0").await;
    let reply = call(&gw, "GET", &path, &outsider.key, None).await;
    assert_eq!(reply.status, 404);
    gw.finish().await;
}

both_backends!(webhook_targets_are_guarded);

/// Headroom says what admission does: the binding figure, and a request
/// holding more than `remaining_usd` is refused while the limit binds.
async fn headroom_agrees_with_admission(backend: Backend) {
    let upstream = MockUpstream::start(|_| {
        Reply::json(200, fixture("openai_chat_nonstream_cached_reasoning.json"))
    })
    .await;
    let gw = TestGateway::start(backend, &upstream.base_url()).await;
    let owner = user(&gw, "owner@room.test", "5").await;
    let member = user(&gw, "member@room.test", "0.5").await;
    let team = new_team(&gw, &owner, "Room").await;
    join(&gw, &team, &owner, &member, "member@room.test").await;
    let limits = |gw: &TestGateway, key: String| {
        let url = gw.url("/api/me/limits");
        async move {
            crate::helpers::client::send("GET", &url, &key, None, &[])
                .await
                .json()["data"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let data = limits(&gw, member.key.clone()).await;
    assert_eq!(data[0]["billing"], "personal");
    let usd = |text: &str| tollgate::money::Money::parse_usd(text).unwrap().to_string();
    assert_eq!(data[0]["balance_usd"], usd("0.5"));
    assert_eq!(data[0]["remaining_usd"], usd("0.5"));
    assert_eq!(data[0]["limit_usd"], Value::Null);
    assert_eq!(data[1]["billing"], format!("team:{team}"));
    assert_eq!(data[1]["balance_usd"], usd("5"));
    assert_eq!(data[1]["binding"], "balance");
    // A hard limit of two answers and a bit.
    call(
        &gw,
        "PATCH",
        &format!("/api/teams/{team}"),
        &owner.key,
        Some(json!({"default_monthly_limit_usd": "0.0081", "enforcement": "hard"})),
    )
    .await;
    // Each settled before the next is held: two holds at once would not
    // fit under the limit (the settlement on Redis is asynchronous).
    for _ in 0..2 {
        let reply = chat(&gw, &member, &team).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        gw.ledger_idle().await;
    }
    let data = limits(&gw, member.key.clone()).await;
    let team_entry = &data[1];
    assert_eq!(team_entry["binding"], "member_monthly");
    assert_eq!(team_entry["spent_usd"], usd("0.006695"));
    assert_eq!(team_entry["remaining_usd"], usd("0.001405"));
    assert_eq!(team_entry["limit_usd"], usd("0.0081"));
    assert_eq!(team_entry["enforcement"], "hard");
    assert_eq!(
        team_entry["resets_at"],
        tollgate::clock::rfc3339(tollgate::clock::period_of(tollgate::clock::now_ms()).end_ms)
    );
    // The next request holds about $0.004 (400 output tokens at $10/M):
    // more than the remaining $0.001405, so admission refuses it, naming
    // the same figures.
    let refused = chat(&gw, &member, &team).await;
    assert_eq!(refused.status, 402, "{}", refused.text());
    let error = &refused.json()["error"];
    assert_eq!(error["scope"], "member_monthly", "{error}");
    assert_eq!(error["spent_usd"], usd("0.006695"), "{error}");
    gw.finish().await;
}

both_backends!(headroom_agrees_with_admission);

/// `balance.low`: once per crossing, armed again by a credit that lifts the
/// balance above the threshold.
async fn a_low_balance_is_told_once_per_crossing(backend: Backend) {
    let (_upstream, gw) = answering_gateway(backend).await;
    let hooks = receiver(0).await;
    let owner = user(&gw, "owner@low.test", "0.02").await;
    let member = user(&gw, "member@low.test", "0").await;
    let team = new_team(&gw, &owner, "Low").await;
    create_hook(
        &gw,
        &team,
        &owner.key,
        &hook_url(&hooks),
        json!(["balance.low"]),
    )
    .await;
    join(&gw, &team, &owner, &member, "member@low.test").await;
    // Only the owner sets it.
    let by_admin = call(
        &gw,
        "PATCH",
        &format!("/api/teams/{team}"),
        &member.key,
        Some(json!({"low_balance_usd": "0.015"})),
    )
    .await;
    assert_eq!(by_admin.status, 403);
    let set = call(
        &gw,
        "PATCH",
        &format!("/api/teams/{team}"),
        &owner.key,
        Some(json!({"low_balance_usd": "0.015"})),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(set.json()["low_balance_usd"], "0.015");
    // $0.02 − 2 × $0.0033475 < $0.015: told once, not again at the third.
    for _ in 0..3 {
        assert_eq!(chat(&gw, &member, &team).await.status, 200);
    }
    gw.ledger_idle().await;
    wait_for("one balance.low", Duration::from_secs(20), || {
        delivered(&hooks, 0).len() == 1
    })
    .await;
    // Topped up above the threshold, then down below it again: told again.
    let credit = gw
        .admin_post(
            &format!("/api/users/{}/credits", owner.id),
            json!({"amount_usd": "0.01"}),
        )
        .await;
    assert_eq!(credit.status, 200, "{}", credit.text());
    for _ in 0..3 {
        assert_eq!(chat(&gw, &member, &team).await.status, 200);
    }
    gw.ledger_idle().await;
    wait_for("a second balance.low", Duration::from_secs(20), || {
        delivered(&hooks, 0).len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let events = delivered(&hooks, 0);
    assert_eq!(events.len(), 2, "{events:#?}");
    for event in events.values() {
        assert_eq!(event["type"], "balance.low");
        assert_eq!(event["data"]["low_balance_usd"], "0.015");
    }
    gw.finish().await;
}

both_backends!(a_low_balance_is_told_once_per_crossing);

/// A scheduled report carries what `GET …/usage` says for its period; the
/// send-now route marks it partial; an ended period is reported once.
async fn scheduled_reports_equal_the_usage_report(backend: Backend) {
    let (_upstream, gw) = answering_gateway(backend).await;
    let hooks = receiver(0).await;
    let owner = user(&gw, "owner@report.test", "10").await;
    let member = user(&gw, "member@report.test", "0").await;
    let team = new_team(&gw, &owner, "Reports").await;
    join(&gw, &team, &owner, &member, "member@report.test").await;
    let hook = create_hook(
        &gw,
        &team,
        &owner.key,
        &hook_url(&hooks),
        json!(["member.left"]),
    )
    .await;
    let wid = hook["id"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(chat(&gw, &member, &team).await.status, 200);
    }
    gw.ledger_idle().await;
    let path = format!("/api/teams/{team}/report-schedule");
    // Nothing to send before a schedule exists; bad input is named.
    assert_eq!(
        call(&gw, "POST", &format!("{path}/send"), &owner.key, None)
            .await
            .status,
        404
    );
    for (body, param) in [
        (json!({"cadence": "daily", "webhook_id": wid}), "cadence"),
        (
            json!({"cadence": "weekly", "webhook_id": "wh_nope"}),
            "webhook_id",
        ),
        (
            json!({"cadence": "weekly", "webhook_id": wid, "group_by": "colour"}),
            "group_by",
        ),
    ] {
        let reply = call(&gw, "PUT", &path, &owner.key, Some(body)).await;
        assert_eq!(reply.status, 400, "{}", reply.text());
        assert_eq!(reply.json()["error"]["param"], param);
    }
    let set = call(
        &gw,
        "PUT",
        &path,
        &owner.key,
        Some(json!({"cadence": "monthly", "group_by": "model", "webhook_id": wid})),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.text());
    let period = tollgate::clock::period_of(tollgate::clock::now_ms());
    assert_eq!(
        set.json()["next_report_at"],
        tollgate::clock::rfc3339(period.end_ms)
    );
    let sent = call(&gw, "POST", &format!("{path}/send"), &owner.key, None).await;
    assert_eq!(sent.status, 202, "{}", sent.text());
    wait_for("the partial report", Duration::from_secs(20), || {
        hooks.seen().len() == 1
    })
    .await;
    let event = hooks.seen()[0].body.clone();
    assert_eq!(event["type"], "report.scheduled");
    let data = &event["data"];
    assert_eq!(data["partial"], true);
    assert_eq!(data["cadence"], "monthly");
    assert_eq!(data["from"], tollgate::clock::rfc3339(period.start_ms));
    let same = |data: &Value| {
        let url = format!(
            "/api/teams/{team}/usage?from={}&to={}&group_by=model",
            data["from"].as_str().unwrap(),
            data["to"].as_str().unwrap()
        );
        let key = owner.key.clone();
        let gw_url = gw.url(&url.replace('+', "%2B"));
        async move {
            crate::helpers::client::send("GET", &gw_url, &key, None, &[])
                .await
                .json()
        }
    };
    let mut expected = same(data).await;
    expected["partial"] = json!(true);
    expected["cadence"] = json!("monthly");
    assert_eq!(data, &expected);
    assert_eq!(data["total"]["requests"], 3);

    // The month "ended" a moment ago: its report goes out once.
    let now = tollgate::clock::now_ms();
    gw.store()
        .set_report_schedule(
            &tollgate::store::events::ReportSchedule {
                team_id: team.clone(),
                cadence: "monthly".into(),
                group_by: "model".into(),
                webhook_id: wid.to_string(),
                next_at: now - 1,
            },
            "test",
            now,
        )
        .await
        .unwrap();
    wait_for("the scheduled report", Duration::from_secs(30), || {
        hooks.seen().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(hooks.seen().len(), 2, "one report per period");
    let data = hooks.seen()[1].body["data"].clone();
    assert_eq!(data["partial"], false);
    assert_eq!(data["to"], tollgate::clock::rfc3339(now - 1));
    let mut expected = same(&data).await;
    expected["partial"] = json!(false);
    expected["cadence"] = json!("monthly");
    assert_eq!(data, expected);
    let after = call(&gw, "GET", &path, &owner.key, None).await.json();
    assert_eq!(
        after["next_report_at"],
        tollgate::clock::rfc3339(period.end_ms)
    );
    // Stopped by a null body.
    assert_eq!(
        call(&gw, "PUT", &path, &owner.key, Some(Value::Null))
            .await
            .status,
        200
    );
    assert_eq!(
        call(&gw, "GET", &path, &owner.key, None).await.json(),
        Value::Null
    );
    gw.finish().await;
}

both_backends!(scheduled_reports_equal_the_usage_report);

/// For random limits, balances and spends: a request is admitted exactly
/// when its hold is at most what `GET /api/me/limits` says remains, and
/// the binding figure is the one admission names when it refuses.
async fn headroom_is_what_admission_allows(backend: Backend) {
    let gw = TestGateway::start(backend, "http://127.0.0.1:9/v1").await;
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15 ^ (backend == Backend::Production) as u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let ask = |who: &User, team: &str| {
        let url = gw.url("/v1/chat/completions");
        let key = who.key.clone();
        let billing = format!("team:{team}");
        async move {
            crate::helpers::client::send(
                "POST",
                &url,
                &key,
                Some(json!({"model": "mock-1", "max_tokens": 1000,
                    "messages": [{"role": "user", "content": "how much room is left?"}]})),
                &[("x-tollgate-billing", &billing)],
            )
            .await
        }
    };
    // The hold of that request shape, as admission states it: a user with
    // no balance is refused and told.
    let probe = user(&gw, "probe@room.test", "0").await;
    let refused = crate::helpers::client::send(
        "POST",
        &gw.url("/v1/chat/completions"),
        &probe.key,
        Some(json!({"model": "mock-1", "max_tokens": 1000,
            "messages": [{"role": "user", "content": "how much room is left?"}]})),
        &[],
    )
    .await;
    assert_eq!(refused.status, 402, "{}", refused.text());
    let hold =
        tollgate::money::Money::parse_usd(refused.json()["error"]["hold_usd"].as_str().unwrap())
            .unwrap();
    let mut outcomes = BTreeMap::new();
    for round in 0..12 {
        let owner_credit = format!("0.00{}", 1 + next(9));
        let owner = user(&gw, &format!("owner{round}@room.test"), &owner_credit).await;
        let member = user(&gw, &format!("member{round}@room.test"), "0").await;
        let team = call(
            &gw,
            "POST",
            "/api/teams",
            &owner.key,
            Some(json!({"name": format!("Room {round}")})),
        )
        .await
        .json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        join(
            &gw,
            &team,
            &owner,
            &member,
            &format!("member{round}@room.test"),
        )
        .await;
        let limit = format!("0.00{}", 1 + next(9));
        call(
            &gw,
            "PATCH",
            &format!("/api/teams/{team}"),
            &owner.key,
            Some(json!({"default_monthly_limit_usd": limit, "enforcement": "hard"})),
        )
        .await;
        // Some spend first, as long as it is admitted.
        for _ in 0..next(3) {
            let _ = ask(&member, &team).await;
        }
        gw.ledger_idle().await;
        let room =
            crate::helpers::client::send("GET", &gw.url("/api/me/limits"), &member.key, None, &[])
                .await
                .json();
        let entry = room["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["billing"] == format!("team:{team}"))
            .unwrap()
            .clone();
        let remaining =
            tollgate::money::Money::parse_usd(entry["remaining_usd"].as_str().unwrap()).unwrap();
        let reply = ask(&member, &team).await;
        let admitted = reply.status == 200;
        assert!(admitted || reply.status == 402, "{}", reply.text());
        assert_eq!(
            admitted,
            hold <= remaining,
            "a hold of {hold} with {remaining} remaining ({entry}): {}",
            reply.text()
        );
        if !admitted {
            // The refusal names a figure the hold passes.
            let error = reply.json()["error"].clone();
            let left = |field: &str| {
                tollgate::money::Money::parse_usd(entry[field].as_str().unwrap()).unwrap()
            };
            let passed = match error["scope"].as_str() {
                Some("member_monthly") => {
                    hold.nano() > left("limit_usd").nano() - left("spent_usd").nano()
                }
                Some("balance") => hold > left("balance_usd"),
                other => panic!("scope {other:?}"),
            };
            assert!(passed, "{error} vs {entry}");
        }
        *outcomes
            .entry(if admitted { "admitted" } else { "refused" })
            .or_insert(0) += 1;
    }
    println!("headroom vs admission ({backend:?}): {outcomes:?}");
    gw.finish().await;
}

both_backends!(headroom_is_what_admission_allows);
