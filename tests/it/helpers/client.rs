//! A small HTTP client for tests, over hyper-util's pooled client.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    // One pool per test runtime would be ideal; a fresh client per call is
    // simple and keeps tests independent of each other's runtimes.
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn request_id(&self) -> String {
        self.header("x-request-id")
            .expect("x-request-id")
            .to_string()
    }
}

fn build(
    method: &str,
    url: &str,
    key: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(url);
    if !key.is_empty() {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    let bytes = match body {
        Some(body) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(bytes)).unwrap()
}

pub async fn send(
    method: &str,
    url: &str,
    key: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Reply {
    send_request(build(method, url, key, body, headers)).await
}

pub async fn send_raw(request: Request<Full<Bytes>>) -> Reply {
    send_request(request).await
}

/// Sends a request; `None` when the connection fails (a process down).
pub async fn try_send_raw(request: Request<Full<Bytes>>) -> Option<Reply> {
    let response = client().request(request).await.ok()?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

async fn send_request(request: Request<Full<Bytes>>) -> Reply {
    let (method, path) = (
        request.method().to_string(),
        request.uri().path().to_string(),
    );
    let response = tokio::time::timeout(Duration::from_secs(30), client().request(request))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    // Every JSON answer any test sees matches the OpenAPI document.
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    crate::openapi::check_answer(&method, &path, parts.status.as_u16(), content_type, &body);
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// Starts a request and returns the response with its body unread.
pub async fn open(
    method: &str,
    url: &str,
    key: &str,
    body: Option<Value>,
) -> http::Response<Incoming> {
    client()
        .request(build(method, url, key, body, &[]))
        .await
        .expect("request failed")
}
