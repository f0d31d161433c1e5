//! Phase 2, read: the body within its limit, as a JSON object with a
//! `model`. One scan ([`bound::scan`]) validates it and reads the few fields
//! the gateway needs (and whether it names input the gateway cannot see);
//! a request is not copied into a JSON tree unless it must be rewritten.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::bound::{self, Scalar, ScanError, Shape};
use crate::error::GatewayError;

/// A read request: its bytes and the fields the gateway uses.
pub struct ClientRequest {
    pub bytes: Bytes,
    pub model: String,
    pub stream: bool,
    /// What the one scan of the body found (counts, hidden input).
    pub shape: Shape,
}

impl ClientRequest {
    /// Whether the client asked for the usage chunk itself.
    pub fn asked_for_usage(&self) -> bool {
        self.shape
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

/// Reads and checks the body: content type, size limit, JSON object,
/// `model` a non-empty string, `stream` a boolean.
pub async fn read(
    headers: &http::HeaderMap,
    body: Incoming,
    limit: usize,
    timeout_ms: u64,
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
    let collected = tokio::time::timeout(
        std::time::Duration::from_millis(timeout_ms),
        Limited::new(body, limit).collect(),
    )
    .await
    .map_err(|_| GatewayError::BodyTimeout(timeout_ms))?;
    let bytes = match collected {
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
    let shape = bound::scan(&bytes).map_err(|error| match error {
        ScanError::NotAnObject => {
            GatewayError::invalid("The request body must be a JSON object.", None)
        }
        ScanError::Syntax(error) => GatewayError::invalid(
            format!("The request body is not valid JSON: {error}."),
            None,
        ),
        ScanError::Duplicate(field) => GatewayError::invalid(
            format!("'{field}' appears twice in the request body; send it once."),
            Some(field),
        ),
    })?;
    let model = match &shape.model {
        Some(Scalar::Str(model)) if !model.is_empty() => model.clone(),
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
    let stream = match &shape.stream {
        None | Some(Scalar::Null) => false,
        Some(Scalar::Bool(stream)) => *stream,
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
        shape,
    })
}
