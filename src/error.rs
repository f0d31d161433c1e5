//! `GatewayError`: every refusal Tollgate itself makes, and the one `match`
//! that turns it into a status, a code, headers and a body.
//!
//! Bodies use the OpenAI error shape `{"error":{message,type,param,code}}`,
//! or the Anthropic shape on `/v1/messages`. Internal failures give the
//! client a generic message; their detail is logged once, at the edge.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::http_body::Body;
use crate::money::Money;
use crate::store::StoreError;

/// Which error shape the client's SDK expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    OpenAi,
    Anthropic,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("Invalid API key. Pass a Tollgate key as 'Authorization: Bearer tg-…'.")]
    InvalidApiKey,
    #[error("The model '{0}' does not exist on this gateway. GET /v1/models lists the models your key may use.")]
    ModelNotFound(String),
    #[error("The model '{0}' is restricted for this team.")]
    ModelNotAllowed(String),
    #[error("{message}")]
    MonthlyLimitExceeded {
        message: String,
        figures: Box<Figures>,
    },
    #[error("{message}")]
    InsufficientBalance {
        message: String,
        figures: Box<Figures>,
    },
    /// The request's cost cannot be bounded or metered (400).
    #[error("{message}")]
    Unmeterable { message: String, param: String },
    #[error("Rate limit reached: {limit} requests per minute for this key. Try again in {retry_after_secs} s.")]
    RateLimited { limit: u32, retry_after_secs: u64 },
    /// Too many failed credentials from one address (management routes).
    #[error("Too many failed attempts from this address. Try again in {retry_after_secs} s.")]
    TooManyAttempts { retry_after_secs: u64 },
    /// A credential other than an API key is missing or wrong (401).
    #[error("{0}")]
    Unauthorized(String),
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error("The request body is larger than the limit of {0} bytes.")]
    PayloadTooLarge(usize),
    #[error("The request body did not arrive within {0} ms.")]
    BodyTimeout(u64),
    #[error(
        "Content-Type must be application/json (with curl: -H 'content-type: application/json')."
    )]
    UnsupportedMediaType,
    #[error("You are not a member of team '{0}'.")]
    NotATeamMember(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("Method not allowed.")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("The upstream provider could not be reached: {0}")]
    UpstreamUnreachable(String),
    #[error("The upstream provider did not answer in time.")]
    UpstreamTimeout,
    #[error("{0}")]
    Unavailable(String),
    /// Detail for the log only; the client sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The machine-readable figures of a money refusal, beside the message
/// (contract §5, "Money refusals say why, in fields").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// `balance` or `member_monthly`.
    pub scope: &'static str,
    /// What the request would have held.
    pub hold: Money,
    /// `balance`: the paying account's balance (holds in flight deducted).
    pub balance: Option<Money>,
    /// `member_monthly`: the limit, the month's spend (settled and held)
    /// and when it resets (RFC 3339).
    pub limit: Option<Money>,
    pub spent: Option<Money>,
    pub resets_at: Option<String>,
}

impl Figures {
    fn insert_into(&self, object: &mut serde_json::Map<String, serde_json::Value>) {
        object.insert("scope".into(), self.scope.into());
        object.insert("hold_usd".into(), self.hold.to_string().into());
        let optional = [
            ("balance_usd", self.balance),
            ("limit_usd", self.limit),
            ("spent_usd", self.spent),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                object.insert(name.into(), value.to_string().into());
            }
        }
        if let Some(resets_at) = &self.resets_at {
            object.insert("resets_at".into(), resets_at.clone().into());
        }
    }
}

/// A storage failure: its detail is logged at the edge, the client sees a
/// generic error.
impl From<StoreError> for GatewayError {
    fn from(error: StoreError) -> Self {
        GatewayError::internal(error)
    }
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> GatewayError {
        GatewayError::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_string),
        }
    }

    pub fn internal(detail: impl std::fmt::Display) -> GatewayError {
        GatewayError::Internal(detail.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::InvalidApiKey | GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::ModelNotFound(_) | GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::ModelNotAllowed(_)
            | GatewayError::NotATeamMember(_)
            | GatewayError::Forbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::MonthlyLimitExceeded { .. }
            | GatewayError::InsufficientBalance { .. } => StatusCode::PAYMENT_REQUIRED,
            GatewayError::RateLimited { .. } | GatewayError::TooManyAttempts { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            GatewayError::InvalidRequest { .. } | GatewayError::Unmeterable { .. } => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Conflict(_) => StatusCode::CONFLICT,
            GatewayError::Gone(_) => StatusCode::GONE,
            GatewayError::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `error.code`; also the low-cardinality metric label.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::InvalidApiKey | GatewayError::Unauthorized(_) => "invalid_api_key",
            GatewayError::ModelNotFound(_) => "model_not_found",
            GatewayError::ModelNotAllowed(_) => "model_not_allowed",
            GatewayError::MonthlyLimitExceeded { .. } => "monthly_limit_exceeded",
            GatewayError::InsufficientBalance { .. } => "insufficient_balance",
            GatewayError::Unmeterable { .. } => "unmeterable_request",
            GatewayError::RateLimited { .. } | GatewayError::TooManyAttempts { .. } => {
                "rate_limit_exceeded"
            }
            GatewayError::InvalidRequest { .. }
            | GatewayError::PayloadTooLarge(_)
            | GatewayError::UnsupportedMediaType => "invalid_request",
            GatewayError::BodyTimeout(_) => "request_timeout",
            GatewayError::NotATeamMember(_) => "not_a_team_member",
            GatewayError::Forbidden(_) => "forbidden",
            GatewayError::NotFound(_) => "not_found",
            GatewayError::MethodNotAllowed => "method_not_allowed",
            GatewayError::Conflict(_) => "conflict",
            GatewayError::Gone(_) => "gone",
            GatewayError::UpstreamUnreachable(_) | GatewayError::UpstreamTimeout => {
                "upstream_error"
            }
            GatewayError::Unavailable(_) => "unavailable",
            GatewayError::Internal(_) => "internal_error",
        }
    }

    fn openai_type(&self) -> &'static str {
        match self {
            GatewayError::MonthlyLimitExceeded { .. }
            | GatewayError::InsufficientBalance { .. } => "insufficient_quota",
            GatewayError::RateLimited { .. } | GatewayError::TooManyAttempts { .. } => "requests",
            GatewayError::ModelNotAllowed(_)
            | GatewayError::NotATeamMember(_)
            | GatewayError::Forbidden(_) => "permission_error",
            GatewayError::UpstreamUnreachable(_)
            | GatewayError::UpstreamTimeout
            | GatewayError::Unavailable(_)
            | GatewayError::Internal(_) => "server_error",
            _ => "invalid_request_error",
        }
    }

    fn anthropic_type(&self) -> &'static str {
        match self.status().as_u16() {
            400 | 405 | 408 | 409 | 410 | 415 => "invalid_request_error",
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            _ => "api_error",
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            GatewayError::InvalidRequest { param, .. } => param.as_deref(),
            GatewayError::Unmeterable { param, .. } => Some(param),
            GatewayError::ModelNotFound(_) | GatewayError::ModelNotAllowed(_) => Some("model"),
            _ => None,
        }
    }

    /// The message a client may see.
    pub fn public_message(&self) -> String {
        match self {
            GatewayError::Internal(_) => "Internal error. The gateway logged the details.".into(),
            other => other.to_string(),
        }
    }

    /// The response for this error; `request_id` goes in `x-request-id`.
    pub fn into_response(self, shape: ErrorShape, request_id: &str) -> Response<Body> {
        if let GatewayError::Internal(detail) = &self {
            tracing::error!(request_id, error = %detail, "Internal error.");
        }
        let message = self.public_message();
        let mut body = match shape {
            ErrorShape::OpenAi => json!({"error": {
                "message": message,
                "type": self.openai_type(),
                "param": self.param(),
                "code": self.code(),
            }}),
            ErrorShape::Anthropic => json!({"type": "error", "error": {
                "type": self.anthropic_type(),
                "message": message,
            }}),
        };
        if let Some(object) = body.get_mut("error").and_then(|e| e.as_object_mut()) {
            match &self {
                GatewayError::MonthlyLimitExceeded { figures, .. }
                | GatewayError::InsufficientBalance { figures, .. } => {
                    figures.insert_into(object);
                }
                GatewayError::ModelNotAllowed(_) => {
                    object.insert("scope".into(), "model_restriction".into());
                }
                _ => {}
            }
        }
        let mut response = Response::new(Body::full(Bytes::from(body.to_string())));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(value) = HeaderValue::from_str(request_id) {
            headers.insert("x-request-id", value);
        }
        match &self {
            GatewayError::MonthlyLimitExceeded { .. }
            | GatewayError::InsufficientBalance { .. } => {
                headers.insert("x-should-retry", HeaderValue::from_static("false"));
            }
            GatewayError::RateLimited {
                retry_after_secs, ..
            }
            | GatewayError::TooManyAttempts { retry_after_secs } => {
                headers.insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(*retry_after_secs),
                );
            }
            GatewayError::Unavailable(_) => {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// An error in words with each of its causes (`a: b: c`), for logs and
/// for what the operator is shown of a failed delivery.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
