//! Providers: what each upstream kind needs on the wire.
//!
//! Owns the routes (`Endpoint`), the upstream URL and auth headers of each
//! provider kind, the one body rewrite Tollgate makes (model name, and
//! `stream_options.include_usage` for streamed chat/completions), and the
//! pooled HTTPS client. Response bytes are never rewritten here.

pub mod mock;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::{ProviderConfig, ProviderKind, UpstreamConfig};
use crate::meter::Protocol;

/// A model route of the public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Messages,
}

impl Endpoint {
    pub fn from_path(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/completions" => Endpoint::Completions,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/v1/responses" => Endpoint::Responses,
            "/v1/messages" => Endpoint::Messages,
            _ => return None,
        })
    }

    /// The path after the provider's `/v1` base.
    pub fn suffix(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Responses => "/responses",
            Endpoint::Messages => "/messages",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Messages => "messages",
        }
    }

    pub fn protocol(self) -> Protocol {
        match self {
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings => {
                Protocol::OpenAiChat
            }
            Endpoint::Responses => Protocol::OpenAiResponses,
            Endpoint::Messages => Protocol::Anthropic,
        }
    }

    /// The request field that bounds output tokens.
    pub fn max_output_field(self) -> &'static [&'static str] {
        match self {
            Endpoint::ChatCompletions => &["max_completion_tokens", "max_tokens"],
            Endpoint::Completions | Endpoint::Messages => &["max_tokens"],
            Endpoint::Responses => &["max_output_tokens"],
            Endpoint::Embeddings => &[],
        }
    }

    /// Whether `stream_options.include_usage` applies.
    pub fn takes_stream_options(self) -> bool {
        matches!(self, Endpoint::ChatCompletions | Endpoint::Completions)
    }
}

/// Whether a provider kind can serve an endpoint.
pub fn serves(kind: ProviderKind, endpoint: Endpoint) -> bool {
    match kind {
        ProviderKind::Mock => true,
        ProviderKind::OpenAi => endpoint != Endpoint::Messages,
        ProviderKind::Anthropic => endpoint == Endpoint::Messages,
    }
}

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

/// Applies Tollgate's one body rewrite. Returns the new body, or `None`
/// when the client's bytes can go upstream unchanged, and whether the
/// usage-only chunk must be hidden from the client.
pub fn rewrite_body(
    request: &mut Value,
    endpoint: Endpoint,
    provider: &ProviderConfig,
    upstream_model: &str,
    client_model: &str,
    stream: bool,
) -> (bool, bool) {
    let mut changed = false;
    let mut strip_usage = false;
    if upstream_model != client_model {
        if let Some(model) = request.get_mut("model") {
            *model = Value::String(upstream_model.to_string());
            changed = true;
        }
    }
    if stream && endpoint.takes_stream_options() && provider.inject_stream_usage {
        let asked = request
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !asked {
            if let Some(object) = request.as_object_mut() {
                let options = object
                    .entry("stream_options")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(options) = options.as_object_mut() {
                    options.insert("include_usage".into(), Value::Bool(true));
                    changed = true;
                    strip_usage = true;
                }
            }
        }
    }
    (changed, strip_usage)
}

/// Builds the upstream request for a real provider.
pub fn upstream_request(
    provider: &ProviderConfig,
    endpoint: Endpoint,
    body: Bytes,
    client_headers: &http::HeaderMap,
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
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder.body(Full::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn provider(kind: ProviderKind) -> ProviderConfig {
        ProviderConfig {
            name: "p".into(),
            kind,
            base_url: "http://x/v1".into(),
            api_key: Secret::new("k"),
            anthropic_version: "2023-06-01".into(),
            inject_stream_usage: kind != ProviderKind::Anthropic,
            headers: vec![],
        }
    }

    #[test]
    fn injects_include_usage_and_keeps_other_options() {
        let mut body = serde_json::json!({"model":"a","stream":true,"stream_options":{"include_obfuscation":false}});
        let (changed, strip) = rewrite_body(
            &mut body,
            Endpoint::ChatCompletions,
            &provider(ProviderKind::OpenAi),
            "b",
            "a",
            true,
        );
        assert!(changed && strip);
        assert_eq!(body["model"], "b");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["stream_options"]["include_obfuscation"], false);
    }

    #[test]
    fn leaves_a_client_that_asked_for_usage_alone() {
        let mut body =
            serde_json::json!({"model":"a","stream":true,"stream_options":{"include_usage":true}});
        let (changed, strip) = rewrite_body(
            &mut body,
            Endpoint::ChatCompletions,
            &provider(ProviderKind::OpenAi),
            "a",
            "a",
            true,
        );
        assert!(!changed && !strip);
    }
}
