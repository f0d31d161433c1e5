//! Reading management JSON: unknown fields and bad values are 400 with
//! `error.param` naming the field; money is read from the number's text,
//! never through a float.

use http::Request;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::GatewayError;
use crate::money::Money;

const MAX_ADMIN_BODY: usize = 1024 * 1024;

/// Reads and deserializes a JSON body (an empty body reads as `{}`).
pub async fn read<T: DeserializeOwned>(request: Request<Incoming>) -> Result<T, GatewayError> {
    let (parts, body) = request.into_parts();
    let started = std::time::Instant::now();
    let bytes = crate::conn::by_deadline(
        &parts.extensions,
        Limited::new(body, MAX_ADMIN_BODY).collect(),
    )
    .await
    .ok_or_else(|| GatewayError::BodyTimeout(started.elapsed().as_millis() as u64))?
    .map_err(|_| GatewayError::PayloadTooLarge(MAX_ADMIN_BODY))?
    .to_bytes();
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        // serde names an unknown field in its message, not in the path.
        let param = if let Some(rest) = message.strip_prefix("unknown field `") {
            rest.split('`').next().unwrap_or("").to_string()
        } else if path == "." {
            String::new()
        } else {
            path
        };
        GatewayError::invalid(
            format!("Invalid request body: {message}."),
            (!param.is_empty()).then_some(param.as_str()),
        )
    })
}

/// Reads a JSON object, refusing fields outside `allowed` (400 naming the
/// field). For routes where `null` and an absent field mean different
/// things (null clears a limit).
pub async fn object(
    request: Request<Incoming>,
    allowed: &[&str],
) -> Result<serde_json::Map<String, Value>, GatewayError> {
    let value: Value = read(request).await?;
    let Value::Object(map) = value else {
        return Err(GatewayError::invalid(
            "The request body must be a JSON object.",
            None,
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(GatewayError::invalid(
            format!(
                "Unknown field '{unknown}'; expected one of: {}.",
                allowed.join(", ")
            ),
            Some(unknown),
        ));
    }
    Ok(map)
}

/// A money input: a decimal string or a JSON number, read as decimal text.
pub fn money(value: &Value, field: &str) -> Result<Money, GatewayError> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => {
            return Err(GatewayError::invalid(
                format!("'{field}' must be a decimal string or a number of US dollars."),
                Some(field),
            ))
        }
    };
    Money::parse_usd(&text)
        .map_err(|error| GatewayError::invalid(format!("'{field}' {error}."), Some(field)))
}

/// A plausible email address, lowercased.
pub fn email(value: &str, field: &str) -> Result<String, GatewayError> {
    let email = value.trim().to_ascii_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && local.len() <= 64
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
            }
            None => false,
        };
    if valid {
        Ok(email)
    } else {
        Err(GatewayError::invalid(
            format!("'{field}' is not a valid email address."),
            Some(field),
        ))
    }
}

/// An optional short text field.
pub fn short_text(
    value: Option<String>,
    field: &str,
    max: usize,
) -> Result<Option<String>, GatewayError> {
    match value {
        Some(text) if text.chars().count() > max => Err(GatewayError::invalid(
            format!("'{field}' is longer than {max} characters."),
            Some(field),
        )),
        Some(text) if text.trim().is_empty() => Ok(None),
        other => Ok(other.map(|t| t.trim().to_string())),
    }
}
