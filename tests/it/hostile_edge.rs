//! Hostile clients on the front door (contract §4): stalled request heads
//! and bodies, idle connections, connection floods from one address, huge
//! model names, bodies built to explode in memory, credential guessing,
//! and what the upstream's headers would tell a client.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::client;
use crate::helpers::faults::metric;
use crate::helpers::gateway::{standard_models, Backend, TestGateway, ADMIN};
use crate::helpers::proxy::{chat, fixture_upstream};
use crate::helpers::servers::{GatewayProcess, Scratch};
use crate::helpers::upstream::{MockUpstream, Reply};

/// The embedded gateway with `server` settings (no upstream needed).
async fn edge_gateway(server: &str) -> TestGateway {
    TestGateway::start_with(
        Backend::Embedded,
        &standard_models("http://127.0.0.1:9/v1"),
        server,
    )
    .await
}

/// A socket from another loopback address (127.0.0.2), so the gateway sees
/// a client other than the test's own requests.
async fn connect_from(ip: &str, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap()
}

/// Whether the server closed the socket within `within` (a read sees EOF
/// or a reset). A generous bound, for liveness only.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A response (a 408, say) before the close.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_neither_starves_healthz_nor_keeps_its_sockets() {
    let gw = edge_gateway(
        "header_read_timeout_ms = 1000\nmax_connections_per_ip = 50\nmax_connections = 100",
    )
    .await;
    let port = gw.addr.port();
    let mut stalled = Vec::new();
    for _ in 0..60 {
        let mut stream = connect_from("127.0.0.2", port).await;
        // Half a request head, then nothing.
        let _ = stream
            .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
            .await;
        stalled.push(stream);
    }
    // The test's own address is not the one flooding: /healthz answers.
    let health = client::send("GET", &gw.url("/healthz"), "", None, &[]).await;
    assert_eq!(health.status, 200);
    // Every stalled socket is closed: ten at once (over the address's 50),
    // the rest when their head did not arrive in time.
    for stream in &mut stalled {
        assert!(
            closed_within(stream, Duration::from_secs(60)).await,
            "a stalled socket was kept open"
        );
    }
    let metrics = client::send("GET", &gw.url("/metrics"), "", None, &[])
        .await
        .text();
    assert!(metric(&metrics, "tollgate_connections_refused_total") >= 10.0);
    gw.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_outlives_the_head_timeout_until_its_idle_timeout() {
    let gw = edge_gateway("header_read_timeout_ms = 300\nidle_timeout_secs = 8").await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    stream.write_all(request).await.unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Longer than the head timeout, well inside the idle timeout: the
    // connection is still there for the next request.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stream.write_all(request).await.unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Then it is closed once idle for its idle timeout.
    assert!(closed_within(&mut stream, Duration::from_secs(60)).await);
    gw.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_408() {
    let upstream = fixture_upstream().await;
    let gw = TestGateway::start_with(
        Backend::Embedded,
        &standard_models(&upstream.base_url()),
        "body_read_timeout_ms = 500",
    )
    .await;
    let (_, key) = gw.user_with_credit("slowbody@example.com", "1").await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf))
        .await
        .expect("no answer to a stalled body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    gw.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_model_names_reach_no_label_and_no_long_row_and_count_toward_the_limit() {
    let gw = edge_gateway("\n[limits]\nrpm_per_key = 5").await;
    let (user_id, key) = gw.user_with_credit("names@example.com", "1").await;
    let mut statuses = Vec::new();
    for i in 0..30 {
        let name = format!("{i}-{}", "m".repeat(2 * 1024 * 1024));
        let body = json!({"model": name, "messages": [{"role": "user", "content": "hi"}]});
        let request = http::Request::builder()
            .method("POST")
            .uri(gw.url("/v1/chat/completions"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        // A refusal before the body is read may cut the upload of a 2 MiB
        // body short (the client then sees no status): 0 here.
        let status = client::try_send_raw(request).await.map_or(0, |r| r.status);
        statuses.push(status);
    }
    assert_eq!(&statuses[..5], &[404; 5], "{statuses:?}");
    assert!(
        statuses[5..].iter().all(|s| *s == 429 || *s == 0),
        "{statuses:?}"
    );
    // A small request from the same key sees its 429.
    let small = gw.post("/v1/chat/completions", &key, chat("gpt-5.1")).await;
    assert_eq!(small.status, 429);
    let metrics = client::send("GET", &gw.url("/metrics"), "", None, &[]).await;
    assert!(
        metrics.body.len() < 64 * 1024,
        "/metrics grew to {} bytes",
        metrics.body.len()
    );
    assert!(!metrics.text().contains("mmmmmmmm"));
    assert!(metrics.text().contains("model=\"unknown\""));
    gw.ledger_idle().await;
    let rows = gw.store().usage_rows_of_account(&user_id).await.unwrap();
    assert_eq!(rows.len(), 5, "the 429s leave no row");
    assert!(rows.iter().all(|r| r.model.len() <= 256));
    gw.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_headers_reach_the_client_from_an_allowlist() {
    let upstream = MockUpstream::start(|_| {
        Reply::json(
            200,
            crate::helpers::fixture("openai_chat_nonstream_cached_reasoning.json"),
        )
        .header("openai-organization", "org-operator")
        .header("openai-project", "proj_operator")
        .header("anthropic-organization-id", "anthropic-org")
        .header("x-ratelimit-remaining-tokens", "123")
        .header("openai-processing-ms", "42")
        .header("server", "upstream/1.0")
        .header("x-request-id", "req_upstream")
        .header("cache-control", "no-store")
        .header("retry-after", "3")
    })
    .await;
    let gw = TestGateway::start_with(
        Backend::Embedded,
        &standard_models(&upstream.base_url()),
        "",
    )
    .await;
    let (_, key) = gw.user_with_credit("headers@example.com", "1").await;
    let reply = gw.post("/v1/chat/completions", &key, chat("gpt-5.1")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for hidden in [
        "openai-organization",
        "openai-project",
        "anthropic-organization-id",
        "x-ratelimit-remaining-tokens",
        "openai-processing-ms",
        "server",
    ] {
        assert!(reply.header(hidden).is_none(), "{hidden} leaked");
    }
    assert_eq!(reply.header("x-upstream-request-id"), Some("req_upstream"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("retry-after"), Some("3"));
    assert!(reply
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json")));
    assert_ne!(reply.header("x-request-id"), Some("req_upstream"));
    gw.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_credentials_on_the_management_api_is_throttled() {
    let gw = edge_gateway("").await;
    // The operator has worked from this address; a member's key has not
    // been used on /api yet.
    let (_, member_key) = gw.user_with_credit("guess@example.com", "1").await;
    for i in 0..20 {
        let reply = client::send(
            "GET",
            &gw.url("/api/users"),
            &format!("tga-guess-{i:040}"),
            None,
            &[],
        )
        .await;
        assert_eq!(reply.status, 401);
    }
    // Guesses, and credentials new to this address, wait out the minute.
    let blocked = client::send(
        "GET",
        &gw.url("/api/users"),
        "tga-guess-again-0000000000000000000000000",
        None,
        &[],
    )
    .await;
    assert_eq!(blocked.status, 429);
    assert!(blocked.header("retry-after").is_some());
    assert_eq!(blocked.json()["error"]["code"], "rate_limit_exceeded");
    let new_here = client::send("GET", &gw.url("/api/me"), &member_key, None, &[]).await;
    assert_eq!(new_here.status, 429);
    // A credential that already worked from here keeps working (behind a
    // proxy or NAT a stranger's guesses must not lock everyone out).
    let operator = client::send("GET", &gw.url("/api/teams"), ADMIN, None, &[]).await;
    assert_eq!(operator.status, 200, "{}", operator.text());
    gw.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_token_guards_metrics() {
    let gw = edge_gateway("metrics_token = \"scrape-0123456789\"").await;
    let open = client::send("GET", &gw.url("/metrics"), "", None, &[]).await;
    assert_eq!(open.status, 401);
    let wrong = client::send("GET", &gw.url("/metrics"), "scrape-x", None, &[]).await;
    assert_eq!(wrong.status, 401);
    let right = client::send("GET", &gw.url("/metrics"), "scrape-0123456789", None, &[]).await;
    assert_eq!(right.status, 200);
    assert!(right.text().contains("tollgate_requests_total"));
    gw.finish().await;
}

#[tokio::test]
async fn a_short_operator_token_is_refused_at_start() {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token_env = \"TOLLGATE_TEST_NO_SUCH_VAR\"\nadmin_token = \"short-token\"\n[storage]\ndatabase_url = \"sqlite://{}\"\n[ledger]\nspool_dir = \"{}\"\n",
        std::env::temp_dir()
            .join(format!("tg-short-{}.db", tollgate::keys::random_base62(8)))
            .display(),
        std::env::temp_dir()
            .join(format!("tg-short-spool-{}", tollgate::keys::random_base62(8)))
            .display()
    );
    let config = tollgate::config::Config::from_parts(&text, &[], |_| None).unwrap();
    let error = match tollgate::app::App::build(config).await {
        Ok(_) => panic!("a 11-character operator token was accepted"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("at least 32"), "{error}");
}

/// A process's peak resident memory, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_32_mib_numeric_body_is_not_expanded_in_memory() {
    let upstream = MockUpstream::start(|_| {
        Reply::json(
            200,
            crate::helpers::fixture("openai_chat_nonstream_cached_reasoning.json"),
        )
    })
    .await;
    let scratch = Scratch::new("bigbody");
    let config = format!(
        "admin_token = \"{ADMIN}\"\nadmin_token_env = \"TOLLGATE_TEST_NO_SUCH_VAR\"\n[storage]\ndatabase_url = \"sqlite://{}\"\n[ledger]\nspool_dir = \"{}\"\n{}",
        scratch.0.join("t.db").display(),
        scratch.0.join("spool").display(),
        standard_models(&upstream.base_url())
    );
    let gateway = GatewayProcess::start(&config, &scratch.0);
    let (_, key) =
        crate::helpers::faults::user_with_credit_as(&gateway, ADMIN, "big@example.com", "100")
            .await;
    // A warm-up request, so the baseline includes what any request costs.
    let warm = client::send(
        "POST",
        &gateway.url("/v1/chat/completions"),
        &key,
        Some(chat("gpt-4o-mini")),
        &[],
    )
    .await;
    assert_eq!(warm.status, 200, "{}", warm.text());
    let pid = gateway.pid();
    let before = peak_rss(pid);
    // `gpt-4o-mini` is renamed upstream: the body must be rewritten.
    let mut body = Vec::with_capacity(32 * 1024 * 1024);
    body.extend_from_slice(br#"{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"x"}],"metadata_blob":["#);
    while body.len() < 32 * 1024 * 1024 - 64 {
        body.extend_from_slice(b"1,");
    }
    body.extend_from_slice(b"1]}");
    let size = body.len() as u64;
    let request = http::Request::builder()
        .method("POST")
        .uri(gateway.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let reply = client::send_raw(request).await;
    assert_ne!(reply.status, 500, "{}", reply.text());
    let after = peak_rss(pid);
    let grew = after.saturating_sub(before);
    println!(
        "32 MiB numeric body: peak RSS {} MiB → {} MiB (+{:.1}× the body; status {})",
        before >> 20,
        after >> 20,
        grew as f64 / size as f64,
        reply.status
    );
    assert!(
        grew < 8 * size,
        "peak memory grew by {} MiB for a {} MiB body",
        grew >> 20,
        size >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_policy_changes_is_published_at_a_bounded_rate() {
    use futures_util::StreamExt;
    let gw = TestGateway::start_with(
        Backend::Production,
        &standard_models("http://127.0.0.1:9/v1"),
        "",
    )
    .await;
    let client = redis::Client::open(gw.storage.redis_url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(format!("{}:invalidate", gw.storage.redis_prefix))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for _ in 0..5000 {
        gw.state
            .invalidator
            .broadcast(tollgate::invalidate::Invalidation::Policies);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let elapsed = started.elapsed();
    let mut messages = pubsub.on_message();
    let mut received = 0u32;
    while tokio::time::timeout(Duration::from_millis(200), messages.next())
        .await
        .is_ok_and(|m| m.is_some())
    {
        received += 1;
    }
    let bound = (elapsed.as_millis() / 100) as u32 + 3;
    println!("5000 policy changes in {elapsed:?}: {received} messages published");
    assert!(received >= 1, "the change was never published");
    assert!(received <= bound, "{received} messages in {elapsed:?}");
    drop(messages);
    gw.finish().await;
}
