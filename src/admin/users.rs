//! Users, their keys and their credits.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{audit, current_balance, json as body, respond, rfc3339, Caller};
use crate::domain::BillingChoice;
use crate::error::GatewayError;
use crate::http_body::Body;
use crate::keys;
use crate::state::AppState;
use crate::store::{Credit, KeyRow, StoreError, User};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    billing: Option<String>,
    /// Default cost allocation tags (`tags.rs`).
    #[serde(default)]
    tags: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyPatch {
    #[serde(default)]
    billing: Option<String>,
    /// Absent: unchanged; null or `{}`: none.
    #[serde(default, deserialize_with = "present")]
    tags: Option<Value>,
}

/// A field that is present (even as null) reads as `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Some(Value::deserialize(d)?))
}

/// Default tags from a request body (400 naming `tags`).
fn tags_input(value: &Value) -> Result<Option<String>, GatewayError> {
    let tags = crate::tags::from_json(value)
        .map_err(|why| GatewayError::invalid(format!("'tags': {why}."), Some("tags")))?;
    Ok(crate::tags::to_text(&tags))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCredit {
    amount_usd: Value,
    #[serde(default)]
    note: Option<String>,
}

fn user_json(user: &User) -> Value {
    json!({"id": user.id, "email": user.email, "name": user.name, "created_at": rfc3339(user.created_at)})
}

fn key_json(key: &KeyRow) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "billing": key.billing,
        "tags": crate::tags::from_text(key.tags.as_deref()),
        "created_at": rfc3339(key.created_at),
        "revoked_at": key.revoked_at.map(rfc3339),
    })
}

/// Checks a billing choice: `personal`, or a team the key's owner is a
/// member of (checked again on every request).
async fn billing(
    state: &AppState,
    user_id: &str,
    value: Option<&str>,
) -> Result<BillingChoice, GatewayError> {
    let choice = match value {
        None => BillingChoice::Personal,
        Some(text) => BillingChoice::parse(text).map_err(|_| {
            GatewayError::invalid(
                "'billing' must be \"personal\" or \"team:<team_id>\".",
                Some("billing"),
            )
        })?,
    };
    if let BillingChoice::Team(team_id) = &choice {
        if state.store.member(team_id, user_id).await?.is_none() {
            return Err(GatewayError::NotATeamMember(team_id.clone()));
        }
    }
    Ok(choice)
}

/// `POST /api/users` (operator).
pub async fn create_user(
    state: &AppState,
    caller: &Caller,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    caller.require_operator()?;
    let input: NewUser = body::read(request).await?;
    let user = User {
        id: keys::new_id("usr"),
        email: body::email(&input.email, "email")?,
        name: body::short_text(input.name, "name", 200)?,
        created_at: state.clock.now_ms(),
    };
    match state.store.create_user(&user).await {
        Ok(()) => {}
        Err(StoreError::Conflict) => {
            return Err(GatewayError::Conflict(format!(
                "A user with the email {} already exists.",
                user.email
            )))
        }
        Err(error) => return Err(error.into()),
    }
    audit(
        state,
        None,
        caller,
        "user.create",
        Some(&user.id),
        None,
        Some(json!({"email": user.email})),
    )
    .await?;
    let mut out = user_json(&user);
    out["balance_usd"] = json!("0.0");
    respond(StatusCode::CREATED, &out)
}

async fn issue_key(
    state: &AppState,
    caller: &Caller,
    user_id: &str,
    name: Option<String>,
    billing_choice: Option<&str>,
    tags: &Value,
) -> Result<Response<Body>, GatewayError> {
    let tags = tags_input(tags)?;
    let (key, prefix, key_hash) = keys::new_api_key();
    let row = KeyRow {
        id: keys::new_id("key"),
        user_id: user_id.to_string(),
        name: body::short_text(name, "name", 200)?,
        prefix,
        key_hash,
        billing: billing(state, user_id, billing_choice).await?,
        created_at: state.clock.now_ms(),
        revoked_at: None,
        tags,
    };
    state.store.insert_key(&row).await?;
    let after = json!({"user_id": row.user_id, "prefix": row.prefix, "billing": row.billing});
    audit(
        state,
        None,
        caller,
        "key.create",
        Some(&row.id),
        None,
        Some(after),
    )
    .await?;
    let mut out = key_json(&row);
    out["key"] = json!(key);
    respond(StatusCode::CREATED, &out)
}

/// `POST /api/users/{id}/keys` (operator).
pub async fn create_key_for(
    state: &AppState,
    caller: &Caller,
    user_id: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    caller.require_operator()?;
    let input: NewKey = body::read(request).await?;
    if state.store.user(user_id).await?.is_none() {
        return Err(GatewayError::NotFound(format!("No user {user_id}.")));
    }
    issue_key(
        state,
        caller,
        user_id,
        input.name,
        input.billing.as_deref(),
        &input.tags,
    )
    .await
}

/// `POST /api/users/{id}/credits` (operator).
pub async fn add_credits(
    state: &AppState,
    caller: &Caller,
    user_id: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    caller.require_operator()?;
    let input: NewCredit = body::read(request).await?;
    let amount = body::money(&input.amount_usd, "amount_usd")?;
    if amount.nano() <= 0 {
        return Err(GatewayError::invalid(
            "'amount_usd' must be above zero.",
            Some("amount_usd"),
        ));
    }
    let note = body::short_text(input.note, "note", 500)?;
    if state.store.user(user_id).await?.is_none() {
        return Err(GatewayError::NotFound(format!("No user {user_id}.")));
    }
    let credit_id = keys::new_id("crd");
    let credit = Credit {
        id: &credit_id,
        user_id,
        amount,
        note: note.as_deref(),
        created_by: &super::actor(caller),
        at: state.clock.now_ms(),
    };
    // The credit row is durable first; then the live counter moves (unless
    // it is missing or was rebuilt meanwhile: the store already has it).
    crate::accounts::add_credit(&state.store, &state.counters, &credit)
        .await
        .inspect_err(|error| tracing::warn!(%error, "Counter step failed."))?;
    // Topped up above a team's low-balance threshold: `balance.low` may
    // fire again at the next crossing.
    state.store.rearm_low_balance(user_id).await?;
    audit(
        state,
        None,
        caller,
        "credits.add",
        Some(user_id),
        None,
        Some(json!({"amount_usd": amount.to_string(), "note": note})),
    )
    .await?;
    let balance = current_balance(state, user_id).await?;
    respond(
        StatusCode::OK,
        &json!({"user_id": user_id, "amount_usd": amount.to_string(), "balance_usd": balance.to_string()}),
    )
}

/// `GET /api/me`.
pub async fn me(state: &AppState, caller: &Caller) -> Result<Response<Body>, GatewayError> {
    let principal = caller.require_user()?;
    let user = state
        .store
        .user(&principal.user_id)
        .await?
        .ok_or(GatewayError::InvalidApiKey)?;
    let balance = current_balance(state, &user.id).await?;
    let mut out = user_json(&user);
    out["balance_usd"] = json!(balance.to_string());
    let teams = state.store.teams_of_user(&user.id).await?;
    out["teams"] = json!(super::teams::me_teams(&teams));
    respond(StatusCode::OK, &out)
}

/// `GET /api/me/keys`.
pub async fn list_my_keys(
    state: &AppState,
    caller: &Caller,
) -> Result<Response<Body>, GatewayError> {
    let principal = caller.require_user()?;
    let keys = state.store.keys_of_user(&principal.user_id).await?;
    let data: Vec<Value> = keys.iter().map(key_json).collect();
    respond(StatusCode::OK, &json!({"data": data}))
}

/// `POST /api/me/keys`.
pub async fn create_my_key(
    state: &AppState,
    caller: &Caller,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let principal = caller.require_user()?;
    let input: NewKey = body::read(request).await?;
    issue_key(
        state,
        caller,
        &principal.user_id,
        input.name,
        input.billing.as_deref(),
        &input.tags,
    )
    .await
}

async fn my_live_key(
    state: &AppState,
    user_id: &str,
    key_id: &str,
) -> Result<KeyRow, GatewayError> {
    match state.store.key_of_user(user_id, key_id).await? {
        Some(key) if key.revoked_at.is_none() => Ok(key),
        _ => Err(GatewayError::NotFound(format!("No key {key_id}."))),
    }
}

/// `PATCH /api/me/keys/{id}`: switch billing; the next request uses it.
pub async fn update_my_key(
    state: &Arc<AppState>,
    caller: &Caller,
    key_id: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let principal = caller.require_user()?;
    let input: KeyPatch = body::read(request).await?;
    let mut key = my_live_key(state, &principal.user_id, key_id).await?;
    if input.billing.is_none() && input.tags.is_none() {
        return Err(GatewayError::invalid(
            "Send 'billing', 'tags' or both.",
            Some("billing"),
        ));
    }
    if let Some(choice) = &input.billing {
        let before = key.billing.clone();
        key.billing = billing(state, &principal.user_id, Some(choice)).await?;
        state.store.set_key_billing(&key.id, &key.billing).await?;
        audit(
            state,
            None,
            caller,
            "key.billing",
            Some(&key.id),
            Some(json!({"billing": before})),
            Some(json!({"billing": key.billing})),
        )
        .await?;
    }
    if let Some(tags) = &input.tags {
        let before = key.tags.clone();
        key.tags = tags_input(tags)?;
        state
            .store
            .set_key_tags(&key.id, key.tags.as_deref())
            .await?;
        audit(
            state,
            None,
            caller,
            "key.tags",
            Some(&key.id),
            Some(json!({"tags": crate::tags::from_text(before.as_deref())})),
            Some(json!({"tags": crate::tags::from_text(key.tags.as_deref())})),
        )
        .await?;
    }
    state.forget_key(&key.key_hash);
    respond(StatusCode::OK, &key_json(&key))
}

/// `DELETE /api/me/keys/{id}`: revoke (the row stays for history).
pub async fn revoke_my_key(
    state: &Arc<AppState>,
    caller: &Caller,
    key_id: &str,
) -> Result<Response<Body>, GatewayError> {
    let principal = caller.require_user()?;
    let mut key = my_live_key(state, &principal.user_id, key_id).await?;
    let at = state.clock.now_ms();
    state.store.revoke_key(&key.id, at).await?;
    state.forget_key(&key.key_hash);
    key.revoked_at = Some(at);
    audit(state, None, caller, "key.revoke", Some(&key.id), None, None).await?;
    respond(StatusCode::OK, &key_json(&key))
}

/// `GET /api/models` (any caller; dashboard addition): every configured
/// model, unfiltered, so admins can pick restrictions from the list.
pub fn models(state: &AppState) -> Result<Response<Body>, GatewayError> {
    let data: Vec<Value> = state
        .config
        .models
        .iter()
        .map(|m| {
            let provider = state
                .config
                .providers
                .get(m.provider)
                .map(|p| p.name.as_str())
                .unwrap_or("");
            json!({"id": m.name, "provider": provider})
        })
        .collect();
    respond(StatusCode::OK, &json!({"data": data}))
}
