//! Providers: what each upstream kind needs on the wire.
//!
//! Owns the routes (`Endpoint`), the one body rewrite Tollgate makes (model
//! name, and `stream_options.include_usage` for streamed chat/completions:
//! [`plan_rewrite`] decides it, [`Rewrite::apply`] makes it), and the
//! upstream itself (`upstream.rs`: URL and auth headers of each provider
//! kind, the pooled HTTPS client, and the built-in mock, which answers
//! through the same path). Response bytes are never rewritten here.

pub mod mock;
pub mod splice;
mod upstream;

pub use self::upstream::{
    build_client, prepare, Prepared, SendError, UpstreamBody, UpstreamClient,
};

use crate::config::{ProviderConfig, ProviderKind};
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

/// What Tollgate changes in a request body before it goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rewrite<'a> {
    /// The upstream's name of the model, where it differs from the client's.
    pub model: Option<&'a str>,
    /// Ask for the usage chunk (`stream_options.include_usage`) the client
    /// did not ask for; the chunk is then hidden from the client.
    pub include_usage: bool,
}

/// The one decision of what to rewrite. `asked_for_usage`: the client's
/// own `stream_options.include_usage`.
pub fn plan_rewrite<'a>(
    endpoint: Endpoint,
    provider: &ProviderConfig,
    client_model: &str,
    upstream_model: &'a str,
    stream: bool,
    asked_for_usage: bool,
) -> Rewrite<'a> {
    Rewrite {
        model: (upstream_model != client_model).then_some(upstream_model),
        include_usage: stream
            && endpoint.takes_stream_options()
            && provider.inject_stream_usage
            && !asked_for_usage,
    }
}

impl Rewrite<'_> {
    /// Whether the client's bytes can go upstream unchanged.
    pub fn is_none(&self) -> bool {
        self.model.is_none() && !self.include_usage
    }

    /// Applies the rewrite to a body's bytes (spliced, never parsed into
    /// a tree). Returns the new body if it changed, and whether the usage
    /// chunk was asked for (and so must be hidden from the client).
    pub fn apply(&self, body: &[u8]) -> Result<(Option<Vec<u8>>, bool), serde_json::Error> {
        let changed = splice::splice(body, self.model, self.include_usage)?;
        Ok((changed, self.include_usage))
    }
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

    fn applied(
        rewrite: Rewrite<'_>,
        body: &serde_json::Value,
    ) -> (Option<serde_json::Value>, bool) {
        let (changed, strip) = rewrite.apply(body.to_string().as_bytes()).unwrap();
        (changed.map(|b| serde_json::from_slice(&b).unwrap()), strip)
    }

    #[test]
    fn injects_include_usage_and_keeps_other_options() {
        let body = serde_json::json!({"model":"a","stream":true,"stream_options":{"include_obfuscation":false}});
        let rewrite = plan_rewrite(
            Endpoint::ChatCompletions,
            &provider(ProviderKind::OpenAi),
            "a",
            "b",
            true,
            false,
        );
        let (body, strip) = applied(rewrite, &body);
        let body = body.unwrap();
        assert!(strip);
        assert_eq!(body["model"], "b");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["stream_options"]["include_obfuscation"], false);
    }

    #[test]
    fn replaces_stream_options_that_are_not_an_object() {
        for options in [
            serde_json::Value::Null,
            false.into(),
            "include_usage".into(),
        ] {
            let body = serde_json::json!({"model":"a","stream":true,"stream_options":options});
            let rewrite = plan_rewrite(
                Endpoint::ChatCompletions,
                &provider(ProviderKind::OpenAi),
                "a",
                "a",
                true,
                false,
            );
            let (body, strip) = applied(rewrite, &body);
            assert!(strip);
            assert_eq!(
                body.unwrap()["stream_options"],
                serde_json::json!({"include_usage": true})
            );
        }
    }

    #[test]
    fn leaves_a_client_that_asked_for_usage_alone() {
        let body =
            serde_json::json!({"model":"a","stream":true,"stream_options":{"include_usage":true}});
        let rewrite = plan_rewrite(
            Endpoint::ChatCompletions,
            &provider(ProviderKind::OpenAi),
            "a",
            "a",
            true,
            true,
        );
        assert!(rewrite.is_none());
        let (changed, strip) = applied(rewrite, &body);
        assert!(changed.is_none() && !strip);
    }
}
