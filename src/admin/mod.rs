//! The management API (`/api`): JSON in, JSON out.
//!
//! Every route authenticates the caller (a user key or the operator token)
//! and checks its rights on the server. Unknown fields and invalid values
//! are 400 with `error.param` naming the field. The request path never
//! imports this module.

mod email;
mod invitations;
mod json;
mod limits;
mod members;
pub mod schedule;
mod teams;
mod usage;
mod users;
mod webhooks;

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::accounts::{self, AccountsError};
use crate::auth::{self, Principal};
use crate::error::{ErrorShape, GatewayError};
use crate::http_body::Body;
use crate::keys;
use crate::money::Money;
use crate::state::AppState;

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

    pub(crate) fn require_user(&self) -> Result<&Principal, GatewayError> {
        match self {
            Caller::User(principal) => Ok(principal),
            Caller::Operator => Err(GatewayError::Forbidden(
                "The operator token is not a user; use a user's API key.".into(),
            )),
        }
    }
}

pub async fn handle(state: Arc<AppState>, request: Request<Incoming>) -> Response<Body> {
    let request_id = keys::new_request_id();
    let client = request
        .extensions()
        .get::<crate::conn::ClientAddr>()
        .map(|c| c.0);
    // A wrong credential is an attempt; none at all is not (a browser
    // opening a link, a client not configured yet).
    let credential = auth::credential(request.headers())
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    if let Some(wait) =
        client.and_then(|ip| state.failed_credentials.blocked(ip, credential.as_deref()))
    {
        state.metrics.attempt_throttled();
        let error = GatewayError::TooManyAttempts {
            retry_after_secs: wait.as_secs().max(1),
        };
        return error.into_response(ErrorShape::OpenAi, &request_id);
    }
    let outcome = route(&state, request, client).await;
    if let (Some(ip), Some(_), Err(error)) = (client, &credential, &outcome) {
        if error.status() == StatusCode::UNAUTHORIZED {
            state.failed_credentials.failed(ip);
        }
    }
    match outcome {
        Ok(response) => response,
        Err(error) => error.into_response(ErrorShape::OpenAi, &request_id),
    }
}

async fn authenticate(
    state: &AppState,
    request: &Request<Incoming>,
) -> Result<Caller, GatewayError> {
    let token = auth::credential(request.headers()).ok_or(GatewayError::InvalidApiKey)?;
    if state.is_operator(token) {
        return Ok(Caller::Operator);
    }
    match state.keys.authenticate(token).await {
        Err(GatewayError::InvalidApiKey) if token.starts_with("tga-") => {
            Err(GatewayError::Unauthorized(
                "This is not the gateway's operator token. It is the value of TOLLGATE_ADMIN_TOKEN (or server.admin_token) when set, else the token printed at the first start; a lost one is replaced by setting TOLLGATE_ADMIN_TOKEN (32+ characters) and restarting.".into(),
            ))
        }
        other => Ok(Caller::User(other?)),
    }
}

async fn route(
    state: &Arc<AppState>,
    request: Request<Incoming>,
    client: Option<std::net::IpAddr>,
) -> Result<Response<Body>, GatewayError> {
    // What an invitation or join link is for, to whoever holds the link
    // (its token is the secret): the page it opens shows it before
    // anyone signs in.
    if request.method() == Method::GET {
        let path = request.uri().path().trim_end_matches('/');
        if let Some(token) = path.strip_prefix("/api/invitations/") {
            if !token.contains('/') {
                return invitations::describe_invitation(state, token).await;
            }
        }
        if let Some(token) = path.strip_prefix("/api/join/") {
            if !token.contains('/') {
                return invitations::describe_link(state, token).await;
            }
        }
    }
    let caller = authenticate(state, &request).await?;
    // It worked from here: it keeps working here while this address is
    // throttled for others' wrong guesses (`throttle.rs`).
    if let (Some(ip), Some(token)) = (client, auth::credential(request.headers())) {
        state.failed_credentials.succeeded(ip, token);
    }
    let method = request.method().clone();
    let path = request.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').skip(2).collect();
    match (&method, segments.as_slice()) {
        (&Method::POST, ["users"]) => users::create_user(state, &caller, request).await,
        (&Method::GET, ["email", "outbox"]) => email::outbox(state, &caller, &request).await,
        (&Method::POST, ["users", id, "keys"]) => {
            users::create_key_for(state, &caller, id, request).await
        }
        (&Method::POST, ["users", id, "credits"]) => {
            users::add_credits(state, &caller, id, request).await
        }
        (&Method::GET, ["me"]) => users::me(state, &caller).await,
        (&Method::GET, ["me", "usage"]) => usage::mine(state, &caller, &request).await,
        (&Method::GET, ["me", "limits"]) => limits::mine(state, &caller).await,
        (&Method::GET, ["models"]) => users::models(state),
        (&Method::GET, ["me", "keys"]) => users::list_my_keys(state, &caller).await,
        (&Method::POST, ["me", "keys"]) => users::create_my_key(state, &caller, request).await,
        (&Method::PATCH, ["me", "keys", id]) => {
            users::update_my_key(state, &caller, id, request).await
        }
        (&Method::DELETE, ["me", "keys", id]) => users::revoke_my_key(state, &caller, id).await,
        (&Method::POST, ["teams"]) => teams::create(state, &caller, request).await,
        (&Method::GET, ["teams"]) => teams::list(state, &caller).await,
        (&Method::GET, ["teams", id]) => teams::overview(state, &caller, id).await,
        (&Method::PATCH, ["teams", id]) => teams::update(state, &caller, id, request).await,
        (&Method::DELETE, ["teams", id]) => teams::delete(state, &caller, id).await,
        (&Method::POST, ["teams", id, "transfer"]) => {
            teams::transfer(state, &caller, id, request).await
        }
        (&Method::GET, ["teams", id, "members"]) => members::members(state, &caller, id).await,
        (&Method::PATCH, ["teams", id, "members", user]) => {
            members::update_member(state, &caller, id, user, request).await
        }
        (&Method::DELETE, ["teams", id, "members", user]) => {
            members::remove_member(state, &caller, id, user).await
        }
        (&Method::POST, ["teams", id, "invitations"]) => {
            invitations::create(state, &caller, id, request).await
        }
        (&Method::GET, ["teams", id, "invitations"]) => invitations::list(state, &caller, id).await,
        (&Method::DELETE, ["teams", id, "invitations", invitation]) => {
            invitations::revoke(state, &caller, id, invitation).await
        }
        (&Method::PUT, ["teams", id, "invite-link"]) => {
            invitations::set_link(state, &caller, id, request).await
        }
        (&Method::GET, ["teams", id, "join-requests"]) => {
            invitations::list_join_requests(state, &caller, id).await
        }
        (&Method::POST, ["teams", id, "join-requests", join, "approve"]) => {
            invitations::decide(state, &caller, id, join, true).await
        }
        (&Method::POST, ["teams", id, "join-requests", join, "deny"]) => {
            invitations::decide(state, &caller, id, join, false).await
        }
        (&Method::POST, ["teams", id, "webhooks"]) => {
            webhooks::create(state, &caller, id, request).await
        }
        (&Method::GET, ["teams", id, "webhooks"]) => webhooks::list(state, &caller, id).await,
        (&Method::DELETE, ["teams", id, "webhooks", hook]) => {
            webhooks::delete(state, &caller, id, hook).await
        }
        (&Method::GET, ["teams", id, "webhooks", hook, "deliveries"]) => {
            webhooks::deliveries(state, &caller, id, hook).await
        }
        (&Method::GET, ["teams", id, "report-schedule"]) => schedule::get(state, &caller, id).await,
        (&Method::PUT, ["teams", id, "report-schedule"]) => {
            schedule::put(state, &caller, id, request).await
        }
        (&Method::DELETE, ["teams", id, "report-schedule"]) => {
            schedule::delete(state, &caller, id).await
        }
        (&Method::POST, ["teams", id, "report-schedule", "send"]) => {
            schedule::send_now(state, &caller, id).await
        }
        (&Method::GET, ["teams", id, "usage"]) => usage::report(state, &caller, id, &request).await,
        (&Method::GET, ["teams", id, "audit"]) => {
            usage::audit_trail(state, &caller, id, &request).await
        }
        (&Method::POST, ["invitations", token, "accept"]) => {
            invitations::accept(state, &caller, token).await
        }
        (&Method::POST, ["join", token]) => invitations::join(state, &caller, token).await,
        _ => Err(GatewayError::NotFound(format!(
            "No route for {method} {path}."
        ))),
    }
}

/// The audit name of a caller: a user id, or `operator`.
pub fn actor(caller: &Caller) -> String {
    match caller {
        Caller::Operator => "operator".into(),
        Caller::User(principal) => principal.user_id.clone(),
    }
}

/// Appends one entry to the audit trail (never updated or deleted).
pub async fn audit(
    state: &AppState,
    team_id: Option<&str>,
    caller: &Caller,
    action: &str,
    target: Option<&str>,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<(), GatewayError> {
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let at = state.clock.now_ms();
    let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Ids sort by time, then by order within this process.
    let id = format!("aud_{at:013}_{sequence:010}_{}", keys::random_base62(6));
    let entry = crate::store::AuditEntry {
        id,
        team_id: team_id.map(str::to_string),
        actor: actor(caller),
        action: action.to_string(),
        target: target.map(str::to_string),
        before_json: before.map(|v| v.to_string()),
        after_json: after.map(|v| v.to_string()),
        at,
    };
    Ok(state.store.append_audit(&entry).await?)
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
    let behind = state.seeding_waits_for_ledger();
    let balance = async {
        if let Some(balance) = state.counters.balance(account).await? {
            return Ok(Some(balance));
        }
        if behind {
            // See `AppState::seeding_waits_for_ledger`.
            return Ok(None);
        }
        accounts::seed_balance(&state.store, &state.counters, account).await?;
        Ok(state.counters.balance(account).await?)
    };
    balance
        .await
        .inspect_err(|error: &AccountsError| tracing::warn!(%error, "Counter step failed."))?
        .ok_or_else(|| {
            if behind {
                GatewayError::Unavailable(
                    "The usage ledger is catching up; the balance cannot be read yet. Retry shortly."
                        .into(),
                )
            } else {
                GatewayError::internal("balance counter missing after its seed")
            }
        })
}

pub use crate::clock::rfc3339;
