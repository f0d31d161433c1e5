//! The management API (`/api`): JSON in, JSON out.
//!
//! Every route authenticates the caller (a user key or the operator token)
//! and checks its rights on the server. Unknown fields and invalid values
//! are 400 with `error.param` naming the field. The request path never
//! imports this module.

mod json;
mod users;

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::app::AppState;
use crate::auth::{self, Principal};
use crate::error::{ErrorShape, GatewayError};
use crate::http_body::Body;
use crate::keys;
use crate::money::Money;

/// Who is calling a management route.
#[derive(Debug, Clone)]
pub enum Caller {
    Operator,
    User(Arc<Principal>),
}

impl Caller {
    fn require_operator(&self) -> Result<(), GatewayError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::User(_) => Err(GatewayError::Forbidden(
                "This route needs the operator token.".into(),
            )),
        }
    }

    fn require_user(&self) -> Result<&Principal, GatewayError> {
        match self {
            Caller::User(principal) => Ok(principal),
            Caller::Operator => Err(GatewayError::Forbidden(
                "The operator token is not a user; use a user's API key.".into(),
            )),
        }
    }
}

pub async fn handle(state: Arc<AppState>, request: Request<Incoming>) -> Response<Body> {
    let request_id = keys::new_id("req");
    match route(&state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(ErrorShape::OpenAi, &request_id),
    }
}

async fn authenticate(
    state: &AppState,
    request: &Request<Incoming>,
) -> Result<Caller, GatewayError> {
    let token = auth::credential(request.headers()).ok_or(GatewayError::InvalidApiKey)?;
    if auth::is_operator(state, token) {
        return Ok(Caller::Operator);
    }
    Ok(Caller::User(auth::authenticate_key(state, token).await?))
}

async fn route(
    state: &Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let caller = authenticate(state, &request).await?;
    let method = request.method().clone();
    let path = request.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').skip(2).collect();
    match (&method, segments.as_slice()) {
        (&Method::POST, ["users"]) => users::create_user(state, &caller, request).await,
        (&Method::POST, ["users", id, "keys"]) => {
            users::create_key_for(state, &caller, id, request).await
        }
        (&Method::POST, ["users", id, "credits"]) => {
            users::add_credits(state, &caller, id, request).await
        }
        (&Method::GET, ["me"]) => users::me(state, &caller).await,
        (&Method::GET, ["me", "keys"]) => users::list_my_keys(state, &caller).await,
        (&Method::POST, ["me", "keys"]) => users::create_my_key(state, &caller, request).await,
        (&Method::PATCH, ["me", "keys", id]) => {
            users::update_my_key(state, &caller, id, request).await
        }
        (&Method::DELETE, ["me", "keys", id]) => users::revoke_my_key(state, &caller, id).await,
        _ => Err(GatewayError::NotFound(format!(
            "No route for {method} {path}."
        ))),
    }
}

/// A JSON response.
pub fn respond(status: StatusCode, body: &impl Serialize) -> Result<Response<Body>, GatewayError> {
    let bytes = serde_json::to_vec(body).map_err(GatewayError::internal)?;
    let mut response = Response::new(Body::full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// What an account may spend now: its counter, seeded from the store when
/// missing.
pub async fn current_balance(state: &AppState, account: &str) -> Result<Money, GatewayError> {
    if let Some(balance) = state
        .counters
        .balance(account)
        .await
        .map_err(GatewayError::internal)?
    {
        return Ok(balance);
    }
    let recorded = state
        .store
        .recorded_balance(account)
        .await
        .map_err(GatewayError::internal)?;
    state
        .counters
        .seed(account, recorded)
        .await
        .map_err(GatewayError::internal)?;
    Ok(state
        .counters
        .balance(account)
        .await
        .map_err(GatewayError::internal)?
        .unwrap_or(recorded))
}

/// RFC 3339 UTC text of epoch milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
