//! A fast mock model provider for load measurements: answers any POST with
//! a fixed chat completion (JSON) or, when the body asks to stream, a fixed
//! 9-event SSE stream with usage. Instant, HTTP/1.1 keep-alive, TCP_NODELAY.
//!
//! Usage: tollgate-mock-upstream [ADDR] [PACE_MS]
//! (default 127.0.0.1:18080; with PACE_MS, streamed events are sent that
//! many milliseconds apart: a slow model, for memory under many streams).

// A load tool, not the gateway: one bare task per connection is what it
// needs (the spawn ban in clippy.toml is for the gateway's own tasks).
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const JSON: &str = r#"{"id":"chatcmpl-load","object":"chat.completion","created":1764000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"system_fingerprint":"fp_44709d6fcb"}"#;

fn sse_events() -> Vec<String> {
    sse().split_inclusive("\n\n").map(str::to_string).collect()
}

/// A tiny `Stream` over an mpsc receiver.
struct Receiver(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>);

impl futures_util::Stream for Receiver {
    type Item = Result<Frame<Bytes>, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

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
    let pace: u64 = std::env::args()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
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
                    let (content_type, body) = if wants_stream && pace > 0 {
                        let (tx, rx) = tokio::sync::mpsc::channel(2);
                        tokio::spawn(async move {
                            for event in sse_events() {
                                tokio::time::sleep(std::time::Duration::from_millis(pace)).await;
                                if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
                                    return;
                                }
                            }
                        });
                        (
                            "text/event-stream",
                            Either::Right(StreamBody::new(Receiver(rx))),
                        )
                    } else if wants_stream {
                        ("text/event-stream", Either::Left(Full::new(stream_body)))
                    } else {
                        ("application/json", Either::Left(Full::new(json_body)))
                    };
                    let mut response = Response::new(body);
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
