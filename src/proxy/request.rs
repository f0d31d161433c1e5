//! Phase 2, read: the body within its limit, as a JSON object with a
//! `model`. Only the few fields the gateway needs are read; everything else
//! is skipped while the body is validated, so a request is not copied into
//! a JSON tree unless it must be rewritten.

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use crate::error::GatewayError;
use crate::providers::Endpoint;

/// A read request: its bytes and the fields the gateway uses.
pub struct ClientRequest {
    pub bytes: Bytes,
    pub model: String,
    pub stream: bool,
    head: RequestHead,
}

#[derive(serde::Deserialize, Default)]
struct RequestHead {
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    stream: Option<Value>,
    #[serde(default)]
    max_tokens: Option<Value>,
    #[serde(default)]
    max_completion_tokens: Option<Value>,
    #[serde(default)]
    max_output_tokens: Option<Value>,
    #[serde(default)]
    stream_options: Option<Value>,
}

impl ClientRequest {
    /// The client's bound on output tokens, from the endpoint's field.
    pub fn max_output(&self, endpoint: Endpoint) -> Option<u64> {
        endpoint.max_output_field().iter().find_map(|field| {
            let value = match *field {
                "max_tokens" => self.head.max_tokens.as_ref(),
                "max_completion_tokens" => self.head.max_completion_tokens.as_ref(),
                "max_output_tokens" => self.head.max_output_tokens.as_ref(),
                _ => None,
            };
            value.and_then(Value::as_u64)
        })
    }

    /// Whether the client asked for the usage chunk itself.
    pub fn asked_for_usage(&self) -> bool {
        self.head
            .stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// Reads and checks the body: content type, size limit, JSON object,
/// `model` a non-empty string, `stream` a boolean.
pub async fn read(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<ClientRequest, GatewayError> {
    if let Some(content_type) = headers.get(http::header::CONTENT_TYPE) {
        let text = content_type.to_str().unwrap_or("");
        if !text
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            return Err(GatewayError::UnsupportedMediaType);
        }
    }
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::PayloadTooLarge(limit));
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            if error.is::<http_body_util::LengthLimitError>() {
                return Err(GatewayError::PayloadTooLarge(limit));
            }
            return Err(GatewayError::invalid(
                "The request body could not be read.",
                None,
            ));
        }
    };
    let head: RequestHead =
        serde_json::from_slice(&bytes).map_err(|error| match error.classify() {
            serde_json::error::Category::Data => {
                GatewayError::invalid("The request body must be a JSON object.", None)
            }
            _ => GatewayError::invalid(
                format!("The request body is not valid JSON: {error}."),
                None,
            ),
        })?;
    let model = match &head.model {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        Some(_) => {
            return Err(GatewayError::invalid(
                "'model' must be a non-empty string.",
                Some("model"),
            ))
        }
        None => {
            return Err(GatewayError::invalid(
                "The request has no 'model'.",
                Some("model"),
            ))
        }
    };
    let stream = match &head.stream {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => {
            return Err(GatewayError::invalid(
                "'stream' must be a boolean.",
                Some("stream"),
            ))
        }
    };
    Ok(ClientRequest {
        bytes,
        model,
        stream,
        head,
    })
}
