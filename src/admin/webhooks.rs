//! Webhooks (contract §6): add, list, delete, and see a webhook's delivery
//! attempts. Every route needs the admin role; no listing shows the secret
//! (it is shown once, when the webhook is made). A URL must be `http` or
//! `https` and, unless the operator allows private networks, reach only
//! public addresses (`webhooks/guard.rs`, checked again at each send).

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::teams::{access, Role};
use super::{audit, json as body, respond, rfc3339, Caller};
use crate::error::GatewayError;
use crate::http_body::Body;
use crate::keys;
use crate::state::AppState;
use crate::store::events::{Webhook, EVENT_TYPES};

/// Webhooks a team may have.
const MAX_WEBHOOKS: usize = 20;
const MAX_URL_BYTES: usize = 2048;

fn webhook_json(hook: &Webhook) -> Value {
    json!({
        "id": hook.id,
        "url": hook.url,
        "events": hook.events,
        "created_at": rfc3339(hook.created_at),
    })
}

fn events_input(value: Option<&Value>) -> Result<Vec<String>, GatewayError> {
    let invalid = |message: String| GatewayError::invalid(message, Some("events"));
    let items = value.and_then(Value::as_array).ok_or_else(|| {
        invalid(format!(
            "'events' must be a list of: {}.",
            EVENT_TYPES.join(", ")
        ))
    })?;
    if items.is_empty() {
        return Err(invalid(format!(
            "'events' is empty; name at least one of: {}.",
            EVENT_TYPES.join(", ")
        )));
    }
    let mut events: Vec<String> = Vec::new();
    for item in items {
        let name = item
            .as_str()
            .filter(|name| EVENT_TYPES.contains(name))
            .ok_or_else(|| {
                invalid(format!(
                    "'events' has {item}, which is not one of: {}.",
                    EVENT_TYPES.join(", ")
                ))
            })?;
        if !events.iter().any(|e| e == name) {
            events.push(name.to_string());
        }
    }
    Ok(events)
}

/// `POST /api/teams/{id}/webhooks {url, events}` (admin).
pub async fn create(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Admin).await?;
    let input = body::object(request, &["url", "events"]).await?;
    let url = input
        .get("url")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|u| !u.is_empty() && u.len() <= MAX_URL_BYTES)
        .ok_or_else(|| {
            GatewayError::invalid(
                "'url' must be an http:// or https:// URL of at most 2048 bytes.",
                Some("url"),
            )
        })?
        .to_string();
    let events = events_input(input.get("events"))?;
    crate::webhooks::guard::check(&url, state.config.webhooks.allow_private_networks)
        .await
        .map_err(|refused| GatewayError::invalid(format!("'url' {}.", refused.0), Some("url")))?;
    if state.store.webhooks(team_id).await?.len() >= MAX_WEBHOOKS {
        return Err(GatewayError::invalid(
            format!("A team has at most {MAX_WEBHOOKS} webhooks; delete one first."),
            Some("url"),
        ));
    }
    let hook = Webhook {
        id: keys::new_id("wh"),
        team_id: team_id.to_string(),
        url,
        events,
        secret: format!("whsec_{}", keys::random_base62(32)),
        created_by: super::actor(caller),
        created_at: state.clock.now_ms(),
    };
    state.store.create_webhook(&hook).await?;
    audit(
        state,
        Some(team_id),
        caller,
        "webhook.create",
        Some(&hook.id),
        None,
        Some(webhook_json(&hook)),
    )
    .await?;
    let mut shown = webhook_json(&hook);
    shown["secret"] = json!(hook.secret);
    respond(StatusCode::CREATED, &shown)
}

/// `GET /api/teams/{id}/webhooks` (admin).
pub async fn list(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Admin).await?;
    let hooks = state.store.webhooks(team_id).await?;
    let data: Vec<Value> = hooks.iter().map(webhook_json).collect();
    respond(StatusCode::OK, &json!({ "data": data }))
}

async fn webhook_of(state: &AppState, team_id: &str, id: &str) -> Result<Webhook, GatewayError> {
    state
        .store
        .webhook(team_id, id)
        .await?
        .ok_or_else(|| GatewayError::NotFound(format!("No webhook {id} in this team.")))
}

/// `DELETE /api/teams/{id}/webhooks/{wid}` (admin): its pending
/// deliveries are dropped.
pub async fn delete(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    id: &str,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Admin).await?;
    let hook = webhook_of(state, team_id, id).await?;
    state
        .store
        .delete_webhook(team_id, id, state.clock.now_ms())
        .await?;
    audit(
        state,
        Some(team_id),
        caller,
        "webhook.delete",
        Some(id),
        Some(webhook_json(&hook)),
        None,
    )
    .await?;
    respond(StatusCode::OK, &json!({"id": id, "deleted": true}))
}

/// `GET /api/teams/{id}/webhooks/{wid}/deliveries` (admin): the latest
/// 100 attempts, newest first.
pub async fn deliveries(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    id: &str,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Admin).await?;
    let hook = webhook_of(state, team_id, id).await?;
    let attempts = state.store.webhook_attempts(&hook.id, 100).await?;
    let data: Vec<Value> = attempts
        .iter()
        .map(|a| {
            json!({
                "id": a.id,
                "event_id": a.event_id,
                "attempt": a.attempt,
                "at": rfc3339(a.at),
                "status": a.http_status,
                "delivered": a.http_status.is_some_and(|s| (200..300).contains(&s)),
                "error": a.error,
                "duration_ms": a.duration_ms,
            })
        })
        .collect();
    respond(StatusCode::OK, &json!({ "data": data }))
}
