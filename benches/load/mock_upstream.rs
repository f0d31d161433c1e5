//! A fast mock model provider for load measurements: answers any POST with
//! a fixed chat completion (JSON) or, when the body asks to stream, a fixed
//! 9-event SSE stream with usage. Instant, HTTP/1.1 keep-alive, TCP_NODELAY.
//!
//! Usage: tollgate-mock-upstream [ADDR]   (default 127.0.0.1:18080)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const JSON: &str = r#"{"id":"chatcmpl-load","object":"chat.completion","created":1764000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"system_fingerprint":"fp_44709d6fcb"}"#;

fn sse() -> String {
    let mut body = String::new();
    for word in ["Hello", "!", " How", " can", " I", " help", "?"] {
        body.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-load\",\"object\":\"chat.completion.chunk\",\"created\":1764000000,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{word}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    body.push_str("data: {\"id\":\"chatcmpl-load\",\"object\":\"chat.completion.chunk\",\"created\":1764000000,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":7,\"total_tokens\":26}}\n\n");
    body.push_str("data: [DONE]\n\n");
    body
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".into());
    let listener = TcpListener::bind(&addr).await.expect("bind");
    let stream_body = Bytes::from(sse());
    let json_body = Bytes::from_static(JSON.as_bytes());
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        let stream_body = stream_body.clone();
        let json_body = json_body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let stream_body = stream_body.clone();
                let json_body = json_body.clone();
                async move {
                    let body = request
                        .into_body()
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    let wants_stream = body.windows(13).any(|w| w == b"\"stream\":true");
                    let (content_type, bytes) = if wants_stream {
                        ("text/event-stream", stream_body)
                    } else {
                        ("application/json", json_body)
                    };
                    let mut response = Response::new(Full::new(bytes));
                    response
                        .headers_mut()
                        .insert("content-type", content_type.parse().unwrap());
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
