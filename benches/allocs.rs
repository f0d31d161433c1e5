//! Allocations per request: how many heap allocations (and bytes) one
//! metered request costs the gateway, counted by a global allocator.
//! A mock upstream (fixed chat answer, JSON or a 9-event stream with usage)
//! and the client run in this process too, so the same requests are first
//! sent straight to the mock and that count is subtracted: what is left is
//! the gateway's (request path, settlement, ledger writer, spool, SQLite).
//! Embedded gateway (SQLite + in-process counters) in a temporary
//! directory, one keep-alive connection, requests one after another.
//! `cargo bench --bench allocs [-- REQUESTS]` (default 20,000 per load);
//! with `TOLLGATE_ALLOCS_TRACE=1` it then records the stacks of the
//! allocations of 4 KiB or more in 300 JSON requests and prints them grouped.

#![allow(
    unsafe_code, // the counting allocator
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::sync::CancellationToken;
use tollgate::app::App;
use tollgate::config::Config;

struct Counting;

static CALLS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Allocations of 4 KiB or more, and their bytes (buffers, mostly).
static BIG_CALLS: AtomicU64 = AtomicU64::new(0);
static BIG_BYTES: AtomicU64 = AtomicU64::new(0);

/// With `TOLLGATE_ALLOCS_TRACE=1`: how many more allocations of 4 KiB or
/// more get their stack recorded (armed after the warm-up).
static TRACE_LEFT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
static TRACES: std::sync::Mutex<Vec<(usize, String)>> = std::sync::Mutex::new(Vec::new());

thread_local! {
    static TRACING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn counted(size: usize) {
    CALLS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
    if size >= 4096 {
        BIG_CALLS.fetch_add(1, Ordering::Relaxed);
        BIG_BYTES.fetch_add(size as u64, Ordering::Relaxed);
        if TRACE_LEFT.load(Ordering::Relaxed) > 0 && !TRACING.get() {
            TRACING.set(true);
            if TRACE_LEFT.fetch_sub(1, Ordering::Relaxed) > 0 {
                let trace = std::backtrace::Backtrace::force_capture().to_string();
                if let Ok(mut traces) = TRACES.lock() {
                    traces.push((size, trace));
                }
            }
            TRACING.set(false);
        }
    }
}

/// The recorded stacks, grouped by the frames that name this crate,
/// hyper or the allocating collection, most frequent first.
fn print_traces() {
    let traces = std::mem::take(&mut *TRACES.lock().unwrap());
    let mut groups: std::collections::HashMap<String, (usize, usize)> = Default::default();
    for (size, trace) in &traces {
        let frames: Vec<&str> = trace
            .lines()
            .map(str::trim)
            .filter(|l| {
                l.contains(": ")
                    && (l.contains("tollgate")
                        || l.contains("hyper")
                        || l.contains("bytes::")
                        || l.contains("http_body")
                        || l.contains("sqlx")
                        || l.contains("serde_json"))
            })
            .filter(|l| !l.contains("allocs::"))
            .take(6)
            .collect();
        let key = frames.join("\n    ");
        let entry = groups.entry(key).or_default();
        entry.0 += 1;
        entry.1 += size;
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by_key(|group| std::cmp::Reverse(group.1 .1));
    println!(
        "\nAllocations of 4 KiB or more, by stack ({} recorded):",
        traces.len()
    );
    for (frames, (count, bytes)) in groups.iter().take(8) {
        println!("{count} allocations, {bytes} bytes:\n    {frames}");
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const JSON: &str = r#"{"id":"chatcmpl-a","object":"chat.completion","created":1764000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}"#;

fn stream_body() -> String {
    let mut body = String::new();
    for word in ["Hello", "!", " How", " can", " I", " help", "?"] {
        body.push_str(&format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1764000000,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{word}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"));
    }
    body.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1764000000,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":7,\"total_tokens\":26}}\n\n");
    body.push_str("data: [DONE]\n\n");
    body
}

/// A mock upstream on loopback: JSON, or SSE when the body asks to stream.
async fn mock() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stream = Bytes::from(stream_body());
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let _ = socket.set_nodelay(true);
            let stream = stream.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let stream = stream.clone();
                    async move {
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let streamed = body.windows(13).any(|w| w == b"\"stream\":true");
                        let (kind, bytes) = if streamed {
                            ("text/event-stream", stream)
                        } else {
                            ("application/json", Bytes::from_static(JSON.as_bytes()))
                        };
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .header("content-type", kind)
                                .body(Full::new(bytes))
                                .unwrap(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    addr
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn post(client: &HttpClient, url: &str, key: &str, body: &'static str) -> (u16, Bytes) {
    let request = http::Request::builder()
        .method("POST")
        .uri(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// Per request: allocations, bytes, and of them those of 4 KiB or more.
type Counts = [f64; 4];

fn now_counts() -> [u64; 4] {
    [&CALLS, &BYTES, &BIG_CALLS, &BIG_BYTES].map(|c| c.load(Ordering::Relaxed))
}

/// Allocation counts per request for `n` requests, after a warm-up.
async fn count(client: &HttpClient, url: &str, key: &str, body: &'static str, n: u64) -> Counts {
    for _ in 0..2_000 {
        assert_eq!(post(client, url, key, body).await.0, 200);
    }
    // Let the ledger catch up with the warm-up before counting.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = now_counts();
    for _ in 0..n {
        assert_eq!(post(client, url, key, body).await.0, 200);
    }
    // The ledger writer's share of these requests lands within its flush.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = now_counts();
    [0, 1, 2, 3].map(|i| (after[i] - before[i]) as f64 / n as f64)
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}],"max_tokens":64}"#;
const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}],"max_tokens":64,"stream":true}"#;

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let upstream = mock().await;
        let dir = std::env::temp_dir().join(format!("tollgate-allocs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let admin = "tga-allocs-bench-token-0000000000000000000";
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_token = "{admin}"
admin_token_env = "TOLLGATE_ALLOCS_NO_SUCH_VAR"
[storage]
database_url = "sqlite://{db}"
[ledger]
spool_dir = "{spool}"
[[providers]]
name = "mock-upstream"
kind = "openai"
base_url = "http://{upstream}/v1"
[[models]]
name = "gpt-4o-mini"
provider = "mock-upstream"
input_usd_per_mtok = "0.15"
output_usd_per_mtok = "0.60"
"#,
            db = dir.join("t.db").display(),
            spool = dir.join("spool").display(),
        );
        let config = Config::from_parts(&text, &[], |_| None).unwrap();
        let per_core = config.server.per_core;
        let app = App::build(config).await.unwrap();
        let gateway = app.local_addr();
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(app.run(shutdown.clone()));
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build_http();
        let admin_post = |path: String, body: String| {
            let client = client.clone();
            async move {
                let request = http::Request::builder()
                    .method("POST")
                    .uri(format!("http://{gateway}{path}"))
                    .header("authorization", format!("Bearer {admin}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                let response = client.request(request).await.unwrap();
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
            }
        };
        let user = admin_post("/api/users".into(), r#"{"email":"allocs@example.com"}"#.into()).await;
        let user_id = user["id"].as_str().unwrap().to_string();
        let key = admin_post(format!("/api/users/{user_id}/keys"), "{}".into()).await;
        let key = key["key"].as_str().unwrap().to_string();
        admin_post(
            format!("/api/users/{user_id}/credits"),
            r#"{"amount_usd":"1000000"}"#.into(),
        )
        .await;

        let direct = format!("http://{upstream}/v1/chat/completions");
        let through = format!("http://{gateway}/v1/chat/completions");
        println!("{n} requests per load, one connection, embedded gateway (per_core = {per_core})");
        println!("| load | allocations per request | bytes per request | of them ≥ 4 KiB: allocations | bytes |");
        println!("|---|--:|--:|--:|--:|");
        for (name, body) in [("JSON", CHAT), ("streamed", CHAT_STREAM)] {
            let alone = count(&client, &direct, "x", body, n).await;
            let with = count(&client, &through, &key, body, n).await;
            let share: Vec<f64> = (0..4).map(|i| with[i] - alone[i]).collect();
            println!(
                "| {name}: the gateway's share | {:.1} | {:.0} | {:.2} | {:.0} |",
                share[0], share[1], share[2], share[3]
            );
            println!(
                "| {name}: client and mock alone (subtracted) | {:.1} | {:.0} | {:.2} | {:.0} |",
                alone[0], alone[1], alone[2], alone[3]
            );
        }
        if std::env::var("TOLLGATE_ALLOCS_TRACE").is_ok_and(|v| v == "1") {
            count(&client, &through, &key, CHAT, 100).await;
            TRACE_LEFT.store(2_000, Ordering::Relaxed);
            count(&client, &through, &key, CHAT, 300).await;
            TRACE_LEFT.store(0, Ordering::Relaxed);
            print_traces();
        }
        shutdown.cancel();
        serving.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    });
}
