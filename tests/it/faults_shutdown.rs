//! Shutdown keeps every row: SIGTERM with open streams lets them finish
//! within the grace period; past it, the streams are cut, settled under the
//! disconnect policy, and the process exits with every row written.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;

use crate::helpers::client;
use crate::helpers::faults::{rows_of, user_with_credit, Deployment};
use crate::helpers::servers::GatewayProcess;
use crate::helpers::upstream::{MockUpstream, Reply};

/// A stream of `max_tokens` events 100 ms apart, usage at the end.
async fn slow_streams() -> MockUpstream {
    MockUpstream::start(|seen| {
        let events = seen.body["max_tokens"].as_u64().unwrap_or(10) as usize;
        let mut chunks = Vec::new();
        for i in 0..events {
            chunks.push(Bytes::from(format!(
                "data: {}\n\n",
                json!({"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":format!("w{i} ")}}]})
            )));
        }
        chunks.push(Bytes::from(format!(
            "data: {}\n\ndata: [DONE]\n\n",
            json!({"id":"c","object":"chat.completion.chunk","choices":[],
                "usage":{"prompt_tokens":10,"completion_tokens":events,"total_tokens":10 + events}})
        )));
        let mut reply = Reply::sse_split(b"x", &[]).paced(Duration::from_millis(100));
        reply.chunks = chunks;
        reply
    })
    .await
}

async fn user_key(gateway: &GatewayProcess) -> (String, String) {
    user_with_credit(gateway, "term@example.com", "10").await
}

/// Opens `n` streams of `events` events; returns them with their ids.
async fn open_streams(
    gateway: &GatewayProcess,
    key: &str,
    n: usize,
    events: u64,
) -> Vec<(String, http::Response<hyper::body::Incoming>)> {
    let mut streams = Vec::new();
    for _ in 0..n {
        let body = json!({"model": "gpt-5.1", "stream": true, "max_tokens": events,
            "messages": [{"role": "user", "content": "Go slowly."}]});
        let response = client::open(
            "POST",
            &gateway.url("/v1/chat/completions"),
            key,
            Some(body),
        )
        .await;
        assert_eq!(response.status(), 200);
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        streams.push((id, response));
    }
    streams
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_streams_finish_within_the_grace() {
    streams_finish_within_the_grace("shutdown_grace_secs = 20").await;
}

/// The same with one shared runtime instead of one per core (the default;
/// there a core keeps its runtime until the streams it served settled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_streams_finish_within_the_grace_shared() {
    streams_finish_within_the_grace("shutdown_grace_secs = 20\nper_core = false").await;
}

async fn streams_finish_within_the_grace(server: &str) {
    let deployment = Deployment::start_with(slow_streams().await).await;
    let config = deployment
        .config("grace")
        .replace("shutdown_grace_secs = 5", server);
    let mut gateway = GatewayProcess::start(&config, &deployment.scratch.0);
    let (user_id, key) = user_key(&gateway).await;
    // Five streams of 4 s each.
    let streams = open_streams(&gateway, &key, 5, 40).await;
    let terminated = tokio::task::spawn_blocking(move || {
        gateway.terminate();
        gateway
    });
    let mut ids = Vec::new();
    for (id, response) in streams {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(
            body.ends_with(b"data: [DONE]\n\n"),
            "stream {id} cut: {}",
            String::from_utf8_lossy(&body)
        );
        ids.push(id);
    }
    let _gateway = terminated.await.unwrap();
    let mut db = deployment.db().await;
    let rows = rows_of(&mut db, &user_id).await;
    for id in &ids {
        assert_eq!(
            rows.get(id).map(|(_, s)| s.as_str()),
            Some("ok"),
            "{id}: {rows:?}"
        );
    }
    println!(
        "SIGTERM, grace 20 s, 5 streams of 4 s: 5 complete, {} rows",
        rows.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_cuts_streams_and_keeps_their_rows() {
    streams_cut_past_the_grace("shutdown_grace_secs = 1").await;
}

/// The same with one shared runtime (per core, the default, streams cut on
/// their cores still settle there before the ledger closes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_cuts_streams_and_keeps_their_rows_shared() {
    streams_cut_past_the_grace("shutdown_grace_secs = 1\nper_core = false").await;
}

async fn streams_cut_past_the_grace(server: &str) {
    let deployment = Deployment::start_with(slow_streams().await).await;
    let config = deployment
        .config("cut")
        .replace("shutdown_grace_secs = 5", server);
    let mut gateway = GatewayProcess::start(&config, &deployment.scratch.0);
    let (user_id, key) = user_key(&gateway).await;
    // Five streams of 30 s each.
    let streams = open_streams(&gateway, &key, 5, 300).await;
    let sent = Instant::now();
    let terminated = tokio::task::spawn_blocking(move || {
        gateway.terminate();
        gateway
    });
    let ids: Vec<String> = streams.iter().map(|(id, _)| id.clone()).collect();
    let _gateway = terminated.await.unwrap();
    let took = sent.elapsed();
    drop(streams);
    // Each row says the stream was cut (`client_closed`), not completed:
    // the grace ended them, not their own end (30 s). The time is printed,
    // not asserted.
    let mut db = deployment.db().await;
    let rows = rows_of(&mut db, &user_id).await;
    for id in &ids {
        let (cost, status) = rows
            .get(id)
            .unwrap_or_else(|| panic!("stream {id} has no row: {rows:?}"));
        assert_eq!(status, "client_closed");
        assert!(*cost > 0, "{id} billed nothing");
    }
    println!(
        "SIGTERM, grace 1 s, 5 streams of 30 s: exit after {took:?}, {} rows",
        rows.len()
    );
}
