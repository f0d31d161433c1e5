//! Email (contract §6, issue 19) against a real SMTP server on loopback
//! (aiosmtpd, `helpers/smtp.rs`): an invitation that arrives with a link
//! that opens its page, a report whose attachment is the CSV export byte
//! for byte, limit notices to the member alone, mail that waits out a
//! server that is down, a per-team cap on invitation mail, names that
//! cannot add a header, and two processes that send each mail once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::client::{self, Reply};
use crate::helpers::faults::{self, Deployment};
use crate::helpers::fixture;
use crate::helpers::gateway::{standard_models, Backend, TestGateway, ADMIN};
use crate::helpers::servers::{GatewayProcess, Scratch};
use crate::helpers::smtp::{email_config, header, is_invitation, test_certificates, SmtpSink};
use crate::helpers::teams::{call, invite_and_accept, user, User};
use crate::helpers::upstream::{MockUpstream, Reply as Upstream};

/// Where people reach the gateway, as the links say.
const PUBLIC: &str = "https://gateway.example.test";

/// A gateway mailing through `sink`, in front of a provider whose every
/// answer costs $0.0033475 on gpt-5.1; webhooks may reach loopback.
async fn mailing_gateway(
    backend: Backend,
    sink: &SmtpSink,
    more: &str,
) -> (MockUpstream, TestGateway) {
    let upstream = MockUpstream::start(|_| {
        Upstream::json(200, fixture("openai_chat_nonstream_cached_reasoning.json"))
    })
    .await;
    let extra = format!(
        "\n[webhooks]\nallow_private_networks = true\n{}",
        email_config(sink, PUBLIC, more)
    );
    let gw = TestGateway::start_with(backend, &standard_models(&upstream.base_url()), &extra).await;
    (upstream, gw)
}

async fn new_team(gw: &TestGateway, owner: &User, name: &str) -> String {
    let reply = call(
        gw,
        "POST",
        "/api/teams",
        &owner.key,
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["id"].as_str().unwrap().to_string()
}

async fn invite(gw: &TestGateway, team: &str, key: &str, email: &str, role: &str) -> Reply {
    call(
        gw,
        "POST",
        &format!("/api/teams/{team}/invitations"),
        key,
        Some(json!({"email": email, "role": role})),
    )
    .await
}

async fn chat(gw: &TestGateway, member: &User, team: &str) -> Reply {
    client::send(
        "POST",
        &gw.url("/v1/chat/completions"),
        &member.key,
        Some(json!({"model": "gpt-5.1", "max_tokens": 400,
            "messages": [{"role": "user", "content": "total?"}]})),
        &[("x-tollgate-billing", &format!("team:{team}"))],
    )
    .await
}

async fn outbox(gw: &TestGateway, query: &str) -> Vec<Value> {
    let reply = call(gw, "GET", &format!("/api/email/outbox{query}"), ADMIN, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["data"].as_array().unwrap().clone()
}

/// Waits until the outbox has no pending mail (sent, failed or capped).
async fn outbox_settled(gw: &TestGateway, timeout: Duration) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let all = outbox(gw, "?limit=1000").await;
        if all.iter().all(|m| m["status"] != "pending") {
            return all;
        }
        assert!(start.elapsed() < timeout, "mail still pending: {all:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rcpts(mail: &Value) -> Vec<&str> {
    mail["rcpt_tos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect()
}

/// The link in an invitation's text.
fn link_in(text: &str) -> &str {
    let start = text.find(PUBLIC).expect("a link in the mail");
    let end = text[start..]
        .find(char::is_whitespace)
        .map_or(text.len(), |e| start + e);
    &text[start..end]
}

/// Standard base64, as the sink writes attachments.
fn from_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|c| *c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | u32::from(*d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

async fn outbox_rows(gw: &TestGateway) -> Vec<(String, String)> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&gw.storage.database_url)
        .await
        .unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT kind, data FROM email_outbox")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

/// An invitation's mail: to the invitee alone, from the configured sender,
/// team and inviter in the subject, the link (built from `public_url`, the
/// same as the API's `url`) opening the invitation page, the expiry in
/// words and in UTC, text and HTML. Once sent the outbox lists it and no
/// longer keeps the link.
async fn an_invitation_arrives_and_its_link_opens_the_page(backend: Backend) {
    let sink = SmtpSink::start();
    let (_upstream, gw) = mailing_gateway(backend, &sink, "").await;
    let owner = user(&gw, "owner@mail.test", "10").await;
    let team = new_team(&gw, &owner, "Research & Development").await;
    let reply = invite(&gw, &team, &owner.key, "new.user@mail.test", "admin").await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let created = reply.json();
    assert_eq!(created["email_status"], "queued");
    let url = created["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("{PUBLIC}/invite/tgi_")), "{url}");

    let mails = sink.wait_for(1, Duration::from_secs(30)).await;
    let mail = &mails[0];
    assert_eq!(rcpts(mail), ["new.user@mail.test"]);
    assert_eq!(mail["mail_from"], "noreply@tollgate.test");
    assert_eq!(header(mail, "From"), ["Tollgate <noreply@tollgate.test>"]);
    assert_eq!(header(mail, "To"), ["new.user@mail.test"]);
    assert_eq!(
        mail["subject"],
        "owner@mail.test invited you to join Research & Development on Tollgate"
    );
    assert_eq!(header(mail, "Date").len(), 1);
    assert_eq!(header(mail, "Message-ID").len(), 1);
    let text = mail["text"].as_str().unwrap();
    let html = mail["html"].as_str().unwrap();
    assert_eq!(link_in(text), url);
    assert!(text.contains("as admin"), "{text}");
    let expires = time::OffsetDateTime::parse(
        created["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let utc = format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        expires.year(),
        u8::from(expires.month()),
        expires.day(),
        expires.hour(),
        expires.minute()
    );
    assert!(
        text.contains(&format!("expires in 7 days, on {utc}"))
            || text.contains(&format!("expires in 6 days and 23 hours, on {utc}")),
        "{text}"
    );
    assert!(html.contains(&format!("<a href=\"{url}\">")), "{html}");
    assert!(html.contains("Research &amp; Development"), "{html}");
    assert!(!html.contains("<img"), "no images, no tracking");

    // The link opens the invitation page, which names the team.
    let path = url.strip_prefix(PUBLIC).unwrap();
    let token = path.strip_prefix("/invite/").unwrap();
    let page = client::send("GET", &gw.url(path), "", None, &[]).await;
    assert_eq!(page.status, 302);
    assert_eq!(
        page.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/dashboard#/invite/{token}").as_str())
    );
    let described = client::send(
        "GET",
        &gw.url(&format!("/api/invitations/{token}")),
        "",
        None,
        &[],
    )
    .await;
    assert_eq!(described.status, 200, "{}", described.text());
    assert_eq!(described.json()["team"]["name"], "Research & Development");

    let listed = outbox_settled(&gw, Duration::from_secs(10)).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "sent");
    assert_eq!(listed[0]["kind"], "invitation");
    assert_eq!(listed[0]["to"], "new.user@mail.test");
    assert!(!serde_json::to_string(&listed).unwrap().contains(token));
    let rows = outbox_rows(&gw).await;
    assert!(
        !rows[0].1.contains(token),
        "the link is scrubbed once sent: {}",
        rows[0].1
    );
    // Members and keys cannot read the outbox.
    assert_eq!(
        call(&gw, "GET", "/api/email/outbox", &owner.key, None)
            .await
            .status,
        403
    );
    assert_eq!(
        call(&gw, "GET", "/api/email/outbox?status=lost", ADMIN, None)
            .await
            .status,
        400
    );
    gw.finish().await;
}

both_backends!(an_invitation_arrives_and_its_link_opens_the_page);

/// A scheduled report is mailed to the owner and the admins (not the
/// member) with the CSV attached: the same bytes as `format=csv` for the
/// report's range and grouping.
async fn a_report_mail_attaches_the_csv_export(backend: Backend) {
    let sink = SmtpSink::start();
    let (_upstream, gw) = mailing_gateway(backend, &sink, "").await;
    let hooks = MockUpstream::start(|_| Upstream::json(200, "{}")).await;
    let owner = user(&gw, "owner@report.test", "10").await;
    let admin = user(&gw, "admin@report.test", "0").await;
    let member = user(&gw, "member@report.test", "0").await;
    let team = new_team(&gw, &owner, "Reports").await;
    invite_and_accept(&gw, &team, &owner.key, &admin, "admin@report.test", "admin").await;
    invite_and_accept(
        &gw,
        &team,
        &owner.key,
        &member,
        "member@report.test",
        "member",
    )
    .await;
    for _ in 0..3 {
        assert_eq!(chat(&gw, &member, &team).await.status, 200);
    }
    gw.ledger_idle().await;
    let hook = call(
        &gw,
        "POST",
        &format!("/api/teams/{team}/webhooks"),
        &owner.key,
        Some(json!({"url": format!("http://{}/hook", hooks.addr), "events": ["member.left"]})),
    )
    .await
    .json();
    let path = format!("/api/teams/{team}/report-schedule");
    let set = call(
        &gw,
        "PUT",
        &path,
        &owner.key,
        Some(json!({"cadence": "monthly", "group_by": "member", "webhook_id": hook["id"]})),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.text());
    let sent = call(&gw, "POST", &format!("{path}/send"), &owner.key, None).await;
    assert_eq!(sent.status, 202, "{}", sent.text());
    let reports = sink
        .wait_for_kind(2, Duration::from_secs(30), |m| !is_invitation(m))
        .await;
    let reports: Vec<&Value> = reports.iter().collect();
    let mut to: Vec<&str> = reports.iter().flat_map(|m| rcpts(m)).collect();
    to.sort_unstable();
    assert_eq!(to, ["admin@report.test", "owner@report.test"]);
    // The range the report covers, from its webhook event.
    let start = Instant::now();
    while hooks.seen().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "no report event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let data = hooks.seen()[0].body["data"].clone();
    let csv = client::send(
        "GET",
        &gw.url(
            &format!(
                "/api/teams/{team}/usage?from={}&to={}&group_by=member&format=csv",
                data["from"].as_str().unwrap(),
                data["to"].as_str().unwrap()
            )
            .replace('+', "%2B"),
        ),
        &owner.key,
        None,
        &[],
    )
    .await;
    assert_eq!(csv.status, 200);
    let period = tollgate::clock::period_of(tollgate::clock::now_ms());
    let first_day = tollgate::clock::rfc3339(period.start_ms)[..10].to_string();
    let today = tollgate::clock::rfc3339(tollgate::clock::now_ms())[..10].to_string();
    for mail in &reports {
        let attachments = mail["attachments"].as_array().unwrap();
        assert_eq!(attachments.len(), 1, "{mail:#?}");
        assert_eq!(
            attachments[0]["filename"],
            format!("usage-{team}-{first_day}-{today}.csv")
        );
        assert_eq!(attachments[0]["content_type"], "text/csv");
        let bytes = from_base64(attachments[0]["data_b64"].as_str().unwrap());
        assert_eq!(bytes, csv.body.to_vec(), "the attachment is the CSV export");
        assert!(mail["subject"]
            .as_str()
            .unwrap()
            .starts_with("Usage so far for Reports:"));
        let text = mail["text"].as_str().unwrap();
        assert!(text.contains("Requests: 3"), "{text}");
        assert!(text.contains("Cost: $0.0100425"), "{text}");
    }
    assert_eq!(
        String::from_utf8_lossy(&csv.body).lines().count(),
        2,
        "header and the member"
    );
    gw.finish().await;
}

both_backends!(a_report_mail_attaches_the_csv_export);

/// A member crossing 50, 80 and 100% of their limit, then blocked: four
/// mails, each to the member alone, with spend, limit and reset date;
/// the owner hears nothing by mail.
async fn limit_notices_reach_only_the_member(backend: Backend) {
    let sink = SmtpSink::start();
    let (_upstream, gw) = mailing_gateway(backend, &sink, "").await;
    let owner = user(&gw, "owner@limits.test", "10").await;
    let member = user(&gw, "member@limits.test", "0").await;
    let team = new_team(&gw, &owner, "Limits").await;
    invite_and_accept(
        &gw,
        &team,
        &owner.key,
        &member,
        "member@limits.test",
        "member",
    )
    .await;
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
        assert_eq!(chat(&gw, &member, &team).await.status, 200);
    }
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
    sink.wait_for_kind(4, Duration::from_secs(60), |m| !is_invitation(m))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let notices: Vec<Value> = sink
        .mails()
        .into_iter()
        .filter(|m| !is_invitation(m))
        .collect();
    assert_eq!(
        notices.len(),
        4,
        "three thresholds, one block: {notices:#?}"
    );
    let period = tollgate::clock::period_of(tollgate::clock::now_ms());
    let reset = tollgate::clock::rfc3339(period.end_ms)[..10].to_string();
    let mut subjects: Vec<String> = Vec::new();
    for mail in &notices {
        assert_eq!(rcpts(mail), ["member@limits.test"], "to the member alone");
        assert_eq!(header(mail, "To"), ["member@limits.test"]);
        assert!(header(mail, "Cc").is_empty() && header(mail, "Bcc").is_empty());
        let text = mail["text"].as_str().unwrap();
        assert!(
            text.contains(&format!("of $0.01. The limit resets on {reset} 00:00 UTC")),
            "{text}"
        );
        assert!(
            text.contains(&format!("Spent in {}: $", period.key)),
            "{text}"
        );
        assert!(text.contains(&format!("{PUBLIC}/dashboard")), "{text}");
        subjects.push(mail["subject"].as_str().unwrap().to_string());
    }
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "You have used 100% of your monthly limit in Limits".to_string(),
            "You have used 50% of your monthly limit in Limits".to_string(),
            "You have used 80% of your monthly limit in Limits".to_string(),
            format!("Your requests in Limits are blocked until {reset}"),
        ]
    );
    gw.finish().await;
}

both_backends!(limit_notices_reach_only_the_member);

/// A team name and an inviter's name with CR/LF and header text in them:
/// the mail has no header they tried to add and one recipient.
async fn names_with_line_breaks_cannot_add_a_header(backend: Backend) {
    let sink = SmtpSink::start();
    let (_upstream, gw) = mailing_gateway(backend, &sink, "").await;
    let made = call(
        &gw,
        "POST",
        "/api/users",
        ADMIN,
        Some(json!({"email": "mallory@inject.test", "name": "Mallory\r\nBcc: victim@inject.test"})),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let mallory_id = made.json()["id"].as_str().unwrap().to_string();
    let key = call(
        &gw,
        "POST",
        &format!("/api/users/{mallory_id}/keys"),
        ADMIN,
        Some(json!({})),
    )
    .await
    .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mallory = User {
        id: mallory_id,
        key,
    };
    let evil = "Evil\r\nBcc: victim@inject.test\r\nX-Injected: yes\r\n\r\nbody";
    let team = new_team(&gw, &mallory, evil).await;
    let reply = invite(&gw, &team, &mallory.key, "target@inject.test", "member").await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let mails = sink.wait_for(1, Duration::from_secs(30)).await;
    let mail = &mails[0];
    assert_eq!(rcpts(mail), ["target@inject.test"], "one recipient");
    assert!(header(mail, "Bcc").is_empty(), "{mail:#?}");
    assert!(header(mail, "X-Injected").is_empty(), "{mail:#?}");
    let head = mail["raw_head"].as_str().unwrap();
    assert!(
        !head.contains("\r\nBcc:") && !head.contains("\r\nX-Injected:"),
        "{head}"
    );
    let subject = mail["subject"].as_str().unwrap();
    assert!(
        !subject.contains('\r') && !subject.contains('\n'),
        "{subject:?}"
    );
    assert!(
        subject.contains("Evil Bcc: victim@inject.test X-Injected: yes body"),
        "{subject}"
    );
    assert!(
        subject.starts_with("Mallory Bcc: victim@inject.test (mallory@inject.test) invited you"),
        "{subject}"
    );
    // A recipient address with a line break never gets that far: the API
    // refuses it.
    let bad = invite(
        &gw,
        &team,
        &mallory.key,
        "a@inject.test\r\nBcc: b@inject.test",
        "member",
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    gw.finish().await;
}

both_backends!(names_with_line_breaks_cannot_add_a_header);

/// The SMTP server down for 30 s: every API call in that time succeeds,
/// the mail waits (pending, its error listed) and arrives once the server
/// is back, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_for_thirty_seconds_delays_mail_and_loses_none() {
    let mut sink = SmtpSink::start();
    let (_upstream, gw) = mailing_gateway(Backend::Production, &sink, "retry_max_secs = 2").await;
    let owner = user(&gw, "owner@down.test", "10").await;
    let team = new_team(&gw, &owner, "Down").await;
    sink.stop();
    let down = Instant::now();
    let mut invited = Vec::new();
    let mut slowest = Duration::ZERO;
    while down.elapsed() < Duration::from_secs(30) {
        let email = format!("invitee{}@down.test", invited.len());
        let asked = Instant::now();
        let reply = invite(&gw, &team, &owner.key, &email, "member").await;
        slowest = slowest.max(asked.elapsed());
        assert_eq!(reply.status, 201, "{}", reply.text());
        assert_eq!(reply.json()["email_status"], "queued");
        invited.push(email);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let waiting = outbox(&gw, "?status=pending").await;
    assert_eq!(waiting.len(), invited.len(), "{waiting:#?}");
    assert!(
        waiting.iter().any(|m| m["attempts"].as_i64().unwrap() > 0
            && m["last_error"].as_str().is_some_and(|e| !e.is_empty())),
        "tried and told why: {waiting:#?}"
    );
    assert!(sink.mails().is_empty());
    sink.restart();
    let back = Instant::now();
    let mails = sink.wait_for(invited.len(), Duration::from_secs(60)).await;
    let delay = back.elapsed();
    outbox_settled(&gw, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails_after = sink.mails();
    assert_eq!(mails_after.len(), mails.len(), "nothing sent twice");
    let mut got: Vec<&str> = mails_after.iter().flat_map(|m| rcpts(m)).collect();
    got.sort_unstable();
    invited.sort();
    assert_eq!(got, invited);
    let sent = outbox(&gw, "?status=sent").await;
    assert_eq!(sent.len(), invited.len());
    println!(
        "SMTP server down 30 s: {} invitations made (slowest API answer {slowest:?}), all mailed {delay:?} after it came back, each once; attempts per mail {:?}",
        invited.len(),
        sent.iter().map(|m| m["attempts"].as_i64().unwrap()).collect::<Vec<_>>()
    );
    gw.finish().await;
}

/// Over `invitations_per_team_per_hour`, invitations are still made (201,
/// with their URL) but their mail is recorded as capped and not sent; an
/// other team is not held back.
async fn invitation_mail_is_capped_per_team_per_hour(backend: Backend) {
    let sink = SmtpSink::start();
    let (_upstream, gw) =
        mailing_gateway(backend, &sink, "invitations_per_team_per_hour = 3").await;
    let owner = user(&gw, "owner@cap.test", "10").await;
    let team = new_team(&gw, &owner, "Capped").await;
    let other = new_team(&gw, &owner, "Other").await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let reply = invite(
            &gw,
            &team,
            &owner.key,
            &format!("spam{i}@cap.test"),
            "member",
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        assert!(reply.json()["url"].as_str().is_some());
        statuses.push(reply.json()["email_status"].as_str().unwrap().to_string());
    }
    assert_eq!(statuses, ["queued", "queued", "queued", "capped", "capped"]);
    let reply = invite(&gw, &other, &owner.key, "fine@cap.test", "member").await;
    assert_eq!(reply.json()["email_status"], "queued");
    sink.wait_for(4, Duration::from_secs(30)).await;
    let listed = outbox_settled(&gw, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(sink.mails().len(), 4);
    let capped: Vec<&Value> = listed.iter().filter(|m| m["status"] == "capped").collect();
    assert_eq!(capped.len(), 2);
    assert!(capped[0]["last_error"]
        .as_str()
        .unwrap()
        .contains("invitations_per_team_per_hour"));
    assert_eq!(outbox(&gw, "?status=capped").await.len(), 2);
    gw.finish().await;
}

both_backends!(invitation_mail_is_capped_per_team_per_hour);

/// Two gateway processes on one Postgres: 200 invitations made through
/// both, each mailed exactly once; the workers' throughput is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_send_each_mail_once() {
    let sink = SmtpSink::start();
    let deployment = Deployment::start().await;
    let config = |name: &str| {
        format!(
            "{}{}",
            deployment.config(name),
            email_config(&sink, PUBLIC, "invitations_per_team_per_hour = 1000")
        )
    };
    let a = GatewayProcess::start(&config("a"), &deployment.scratch.0);
    let b = GatewayProcess::start(&config("b"), &deployment.scratch.0);
    let team = faults::team(&a, None).await;
    const N: usize = 200;
    let path = format!("/api/teams/{}/invitations", team.id);
    let path = &path;
    let started = Instant::now();
    let mut made = Vec::new();
    for chunk in (0..N).collect::<Vec<_>>().chunks(20) {
        let calls = chunk.iter().map(|i| {
            let gateway = if i % 2 == 0 { &a } else { &b };
            let email = format!("person{i}@twice.test");
            async move {
                let reply = faults::api(
                    gateway,
                    "POST",
                    path,
                    faults::ADMIN,
                    json!({"email": email, "role": "member"}),
                )
                .await;
                assert_eq!(reply["email_status"], "queued", "{reply}");
                email
            }
        });
        made.extend(futures_util::future::join_all(calls).await);
    }
    let api_done = started.elapsed();
    let mails = sink.wait_for(N, Duration::from_secs(120)).await;
    let all_sent = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails_after = sink.mails();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for mail in &mails_after {
        for to in rcpts(mail) {
            *count.entry(to.to_string()).or_default() += 1;
        }
    }
    assert_eq!(mails_after.len(), mails.len(), "nothing more arrives");
    assert_eq!(count.len(), N);
    assert!(count.values().all(|n| *n == 1), "each once: {count:?}");
    made.sort();
    assert_eq!(count.keys().cloned().collect::<Vec<_>>(), made);
    println!(
        "two processes, {N} invitations: API calls done in {api_done:?}; all {N} mails taken by the SMTP server {all_sent:?} after the first call ({:.0} mails/s end to end), each once",
        N as f64 / all_sent.as_secs_f64()
    );
}

/// TLS and login as operators use them: implicit TLS (`smtps://`) and
/// STARTTLS (`?tls=required`) to a server whose certificate a private CA
/// signed (`tls_ca_file`), the user from the URL and the password from
/// `smtp_password_env`. Without the CA the certificate is refused and
/// nothing is sent in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_over_tls_with_a_login() {
    let certs = Scratch::new("smtp-tls");
    let (ca, cert, key) = test_certificates(&certs.0);
    let (cert, key, ca) = (
        cert.display().to_string(),
        key.display().to_string(),
        ca.display().to_string(),
    );
    // A TLS server that wants the login; a gateway mailing to `url` (with
    // `{port}` the server's), trusting `ca` if given, having invited one
    // person.
    let server = |tls: &str| {
        SmtpSink::start_with(&[
            "--tls",
            tls,
            "--cert",
            &cert,
            "--key",
            &key,
            "--auth",
            "mailer:s3cret-pw",
        ])
    };
    let inviting = |sink_port: u16, url: &str, ca: Option<&str>| {
        let extra = format!(
            "\n[email]\nsmtp_url = \"{}\"\nsmtp_password_env = \"TOLLGATE_TEST_SMTP_PASSWORD\"\n{}from = \"noreply@tollgate.test\"\npublic_url = \"{PUBLIC}\"\n",
            url.replace("{port}", &sink_port.to_string()),
            ca.map_or(String::new(), |ca| format!("tls_ca_file = \"{ca}\"\n")),
        );
        async move {
            let gw = TestGateway::start_with_env(
                Backend::Embedded,
                &standard_models("http://127.0.0.1:9/v1"),
                &extra,
                &[("TOLLGATE_TEST_SMTP_PASSWORD", "s3cret-pw")],
            )
            .await;
            let owner = user(&gw, "owner@tls.test", "1").await;
            let team = new_team(&gw, &owner, "Secure").await;
            assert_eq!(
                invite(&gw, &team, &owner.key, "new.user@tls.test", "member")
                    .await
                    .status,
                201
            );
            gw
        }
    };
    for (tls, url) in [
        ("implicit", "smtps://mailer@127.0.0.1:{port}"),
        ("starttls", "smtp://mailer@127.0.0.1:{port}?tls=required"),
    ] {
        let sink = server(tls);
        let gw = inviting(sink.port, url, Some(&ca)).await;
        let mails = sink.wait_for(1, Duration::from_secs(30)).await;
        assert_eq!(mails[0]["tls"], true, "{tls}");
        assert_eq!(mails[0]["user"], "mailer", "{tls}");
        assert_eq!(rcpts(&mails[0]), ["new.user@tls.test"]);
        gw.finish().await;
    }
    // The same server without the CA: refused, kept, told why.
    let sink = server("implicit");
    let gw = inviting(sink.port, "smtps://mailer@127.0.0.1:{port}", None).await;
    let start = Instant::now();
    let refused = loop {
        let pending = outbox(&gw, "?status=pending").await;
        if let Some(error) = pending.first().and_then(|m| m["last_error"].as_str()) {
            break error.to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{pending:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    assert!(sink.mails().is_empty());
    gw.finish().await;
}
