//! The upstream: one [`send`] for every provider kind. A real provider gets
//! an HTTPS request over the pooled client (its URL, auth and version
//! headers); the built-in `mock` answers in process with the same wire
//! format. Either way the answer is a `Response<UpstreamBody>`, so the
//! proxy has one forward path and one meter for both.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::{mock, Endpoint};
use crate::config::{ProviderConfig, ProviderKind, UpstreamConfig};

/// The pooled upstream client: HTTP/1.1 keep-alive and h2 over rustls,
/// TCP_NODELAY (no Nagle stall on streams), connect timeout.
pub type UpstreamClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub fn build_client(config: &UpstreamConfig) -> Result<UpstreamClient, rustls::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https))
}

/// Why an upstream could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The connection could not be opened (refused, unreachable, or not
    /// within `upstream.connect_timeout_ms`).
    #[error("connection failed: {0}")]
    Connect(String),
    /// A connect or read timed out below the client.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// The connection broke while the request was sent or answered.
    #[error("the connection broke: {0}")]
    Broken(String),
    /// The request could not be built (a bad configured URL or header).
    #[error("the upstream request could not be built: {0}")]
    Build(#[from] http::Error),
}

impl SendError {
    fn from_client(error: hyper_util::client::legacy::Error) -> SendError {
        let mut detail = error.to_string();
        let mut timed_out = false;
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            if cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                timed_out = true;
            }
            source = cause.source();
        }
        // A connection that could not be opened is unreachable (502), even
        // when opening it timed out; a timeout after that is a 504.
        if error.is_connect() {
            SendError::Connect(detail)
        } else if timed_out {
            SendError::TimedOut(detail)
        } else {
            SendError::Broken(detail)
        }
    }
}

/// An upstream answer's body: a connection's, or the mock's chunks.
pub enum UpstreamBody {
    Incoming(Incoming),
    Mock(VecDeque<Bytes>),
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Incoming(incoming) => Pin::new(incoming).poll_frame(cx),
            UpstreamBody::Mock(chunks) => {
                Poll::Ready(chunks.pop_front().map(|c| Ok(Frame::data(c))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Incoming(incoming) => incoming.is_end_stream(),
            UpstreamBody::Mock(chunks) => chunks.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Incoming(incoming) => incoming.size_hint(),
            UpstreamBody::Mock(_) => SizeHint::default(),
        }
    }
}

/// A request ready to go upstream: built for a real provider, or the body
/// the mock will answer.
// Made once per request and moved once: boxing the large variant would add
// an allocation per request to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
pub enum Prepared {
    Http(http::Request<Full<Bytes>>),
    Mock(Endpoint, Bytes),
}

/// Builds the upstream request (URL, auth and version headers).
pub fn prepare(
    provider: &ProviderConfig,
    endpoint: Endpoint,
    body: Bytes,
    client_headers: &HeaderMap,
) -> Result<Prepared, SendError> {
    if provider.kind == ProviderKind::Mock {
        return Ok(Prepared::Mock(endpoint, body));
    }
    Ok(Prepared::Http(upstream_request(
        provider,
        endpoint,
        body,
        client_headers,
    )?))
}

impl Prepared {
    /// Sends it; the answer's headers and body.
    pub async fn send(self, client: &UpstreamClient) -> Result<Response<UpstreamBody>, SendError> {
        match self {
            Prepared::Mock(endpoint, body) => Ok(mock_answer(endpoint, &body)),
            Prepared::Http(request) => {
                let response = client
                    .request(request)
                    .await
                    .map_err(SendError::from_client)?;
                Ok(response.map(UpstreamBody::Incoming))
            }
        }
    }
}

/// The built-in mock's answer, as the upstream would send it.
fn mock_answer(endpoint: Endpoint, body: &[u8]) -> Response<UpstreamBody> {
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let model = request.get("model").and_then(Value::as_str).unwrap_or("");
    let stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let answer = mock::respond(endpoint, &request, model, stream);
    let mut response = Response::new(UpstreamBody::Mock(VecDeque::from(answer.chunks)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(answer.content_type),
    );
    response
}

/// Builds the upstream request for a real provider.
fn upstream_request(
    provider: &ProviderConfig,
    endpoint: Endpoint,
    body: Bytes,
    client_headers: &HeaderMap,
) -> Result<http::Request<Full<Bytes>>, http::Error> {
    let url = format!("{}{}", provider.base_url, endpoint.suffix());
    let mut builder = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, text/event-stream");
    match provider.kind {
        ProviderKind::Anthropic => {
            if !provider.api_key.is_empty() {
                builder = builder.header("x-api-key", provider.api_key.expose());
            }
            let version = client_headers
                .get("anthropic-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(&provider.anthropic_version);
            builder = builder.header("anthropic-version", version);
            if let Some(beta) = client_headers.get("anthropic-beta") {
                builder = builder.header("anthropic-beta", beta);
            }
        }
        ProviderKind::OpenAi | ProviderKind::Mock => {
            if !provider.api_key.is_empty() {
                builder = builder.header(
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", provider.api_key.expose()),
                );
            }
            if let Some(beta) = client_headers.get("openai-beta") {
                builder = builder.header("openai-beta", beta);
            }
        }
    }
    for (name, value) in &provider.headers {
        builder = builder.header(name.as_str(), value.expose());
    }
    builder.body(Full::new(body))
}
