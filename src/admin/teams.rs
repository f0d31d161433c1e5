//! Teams: create, overview, settings, delete, transfer. The member routes
//! are in `members`.
//!
//! Every route resolves the caller's role on the server first: a team the
//! caller is not in (or a deleted one) is 404, a role too low is 403. The
//! operator has owner rights on every team. Every change is audited and
//! clears the policy cache, so it applies to the next request.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{audit, current_balance, json as body, respond, rfc3339, Caller};
use crate::domain::Enforcement;
pub use crate::domain::Role;
use crate::error::GatewayError;
use crate::http_body::Body;
use crate::keys;
use crate::money::Money;
use crate::policy;
use crate::state::AppState;
use crate::store::Team;

/// The caller's standing in a team.
pub struct Access {
    pub team: Team,
    pub role: Role,
}

/// Largest monthly limit accepted, in USD: anything above is a typo.
const MAX_LIMIT_USD: i64 = 1_000_000;

/// Resolves the caller's role in a team and checks it against `needed`.
pub async fn access(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    needed: Role,
) -> Result<Access, GatewayError> {
    let not_found = || GatewayError::NotFound(format!("No team {team_id}."));
    let team = state.store.team(team_id).await?.ok_or_else(not_found)?;
    let role = match caller {
        Caller::Operator => Role::Owner,
        Caller::User(principal) => {
            let member = state
                .store
                .member(team_id, &principal.user_id)
                .await?
                .ok_or_else(not_found)?;
            member.role
        }
    };
    if role < needed {
        return Err(GatewayError::Forbidden(format!(
            "This needs the {} role in the team; you are {}.",
            needed.as_str(),
            role.as_str()
        )));
    }
    Ok(Access { team, role })
}

/// A monthly limit input: null clears, a decimal string or number sets.
pub(super) fn limit_input(value: &Value, field: &str) -> Result<Option<Money>, GatewayError> {
    if value.is_null() {
        return Ok(None);
    }
    let money = body::money(value, field)?;
    if money.nano() < 0 {
        return Err(GatewayError::invalid(
            format!("'{field}' must not be negative."),
            Some(field),
        ));
    }
    if money > Money::from_nano(MAX_LIMIT_USD * crate::money::NANO_PER_USD) {
        return Err(GatewayError::invalid(
            format!("'{field}' is above the largest accepted limit of ${MAX_LIMIT_USD}."),
            Some(field),
        ));
    }
    Ok(Some(money))
}

fn team_name(value: &Value) -> Result<String, GatewayError> {
    let name = value
        .as_str()
        .map(str::trim)
        .ok_or_else(|| GatewayError::invalid("'name' must be a string.", Some("name")))?;
    let length = name.chars().count();
    if length == 0 || length > 100 {
        return Err(GatewayError::invalid(
            "'name' must be 1 to 100 characters.",
            Some("name"),
        ));
    }
    Ok(name.to_string())
}

pub(super) fn money_or_null(money: Option<Money>) -> Value {
    money.map_or(Value::Null, |m| json!(m.to_string()))
}

fn team_settings_json(team: &Team) -> Value {
    json!({
        "name": team.name,
        "default_monthly_limit_usd": money_or_null(team.default_monthly_limit),
        "enforcement": team.enforcement,
        "restricted_models": team.restricted_models,
        "low_balance_usd": money_or_null(team.low_balance),
    })
}

/// The overview of a team.
async fn overview_json(state: &AppState, team: &Team) -> Result<Value, GatewayError> {
    let period = crate::clock::period_of(state.clock.now_ms());
    let members = state.store.members(&team.id).await?;
    let pending = state.store.pending_join_request_count(&team.id).await?;
    let spends = state
        .store
        .member_spends(&team.id, period.start_ms, period.end_ms)
        .await?;
    let spend: i64 = spends.values().map(|m| m.nano()).sum();
    let balance = current_balance(state, &team.owner_id).await?;
    Ok(json!({
        "id": team.id,
        "name": team.name,
        "owner_id": team.owner_id,
        "balance_usd": balance.to_string(),
        "member_count": members.len(),
        "pending_join_requests": pending,
        "spend_this_month_usd": Money::from_nano(spend).to_string(),
        "default_monthly_limit_usd": money_or_null(team.default_monthly_limit),
        "enforcement": team.enforcement,
        "restricted_models": team.restricted_models,
        "low_balance_usd": money_or_null(team.low_balance),
        "invite_link_enabled": team.invite_link_hash.is_some(),
        "created_at": rfc3339(team.created_at),
    }))
}

/// `POST /api/teams {name}`: the caller becomes the owner. The operator
/// names the owner with `owner_id`.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let input = body::object(request, &["name", "owner_id"]).await?;
    let name = team_name(input.get("name").unwrap_or(&Value::Null))?;
    let owner_id = match caller {
        Caller::User(principal) => {
            if input.contains_key("owner_id") {
                return Err(GatewayError::invalid(
                    "'owner_id' is for the operator; you become the owner.",
                    Some("owner_id"),
                ));
            }
            principal.user_id.clone()
        }
        Caller::Operator => {
            let owner = input
                .get("owner_id")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    GatewayError::invalid("The operator must name 'owner_id'.", Some("owner_id"))
                })?;
            if state.store.user(owner).await?.is_none() {
                return Err(GatewayError::invalid(
                    format!("No user {owner}."),
                    Some("owner_id"),
                ));
            }
            owner.to_string()
        }
    };
    let team = Team {
        id: keys::new_id("tm"),
        name,
        owner_id,
        default_monthly_limit: None,
        enforcement: Enforcement::Hard,
        restricted_models: Vec::new(),
        invite_link_hash: None,
        created_at: state.clock.now_ms(),
        low_balance: None,
    };
    state.store.create_team(&team).await?;
    audit(
        state,
        Some(&team.id),
        caller,
        "team.create",
        Some(&team.id),
        None,
        Some(team_settings_json(&team)),
    )
    .await?;
    respond(StatusCode::CREATED, &overview_json(state, &team).await?)
}

/// `GET /api/teams`: the caller's teams (every team for the operator).
pub async fn list(state: &AppState, caller: &Caller) -> Result<Response<Body>, GatewayError> {
    let teams: Vec<Value> = match caller {
        Caller::Operator => state
            .store
            .all_teams()
            .await?
            .iter()
            // The operator sees every team without a role in any.
            .map(|t| json!({"id": t.id, "name": t.name, "role": "operator"}))
            .collect(),
        Caller::User(principal) => state
            .store
            .teams_of_user(&principal.user_id)
            .await?
            .iter()
            .map(|(t, role)| json!({"id": t.id, "name": t.name, "role": role}))
            .collect(),
    };
    respond(StatusCode::OK, &json!({"data": teams}))
}

/// `GET /api/teams/{id}` (member).
pub async fn overview(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
) -> Result<Response<Body>, GatewayError> {
    let access = access(state, caller, team_id, Role::Member).await?;
    respond(StatusCode::OK, &overview_json(state, &access.team).await?)
}

/// `PATCH /api/teams/{id}` (admin): name, default limit, enforcement,
/// restricted models.
pub async fn update(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let access = access(state, caller, team_id, Role::Admin).await?;
    let input = body::object(
        request,
        &[
            "name",
            "default_monthly_limit_usd",
            "enforcement",
            "restricted_models",
            "low_balance_usd",
        ],
    )
    .await?;
    if input.contains_key("low_balance_usd") && access.role < Role::Owner {
        return Err(GatewayError::Forbidden(
            "Only the team's owner sets the low-balance threshold (it is about the owner's balance)."
                .into(),
        ));
    }
    let before = team_settings_json(&access.team);
    let mut team = access.team;
    if let Some(value) = input.get("name") {
        team.name = team_name(value)?;
    }
    if let Some(value) = input.get("default_monthly_limit_usd") {
        team.default_monthly_limit = limit_input(value, "default_monthly_limit_usd")?;
    }
    if let Some(value) = input.get("enforcement") {
        let enforcement = value
            .as_str()
            .and_then(|text| Enforcement::parse(text).ok())
            .ok_or_else(|| {
                GatewayError::invalid(
                    "'enforcement' must be \"soft\" or \"hard\".",
                    Some("enforcement"),
                )
            })?;
        team.enforcement = enforcement;
    }
    if let Some(value) = input.get("restricted_models") {
        team.restricted_models = restricted_models(value)?;
    }
    if let Some(value) = input.get("low_balance_usd") {
        team.low_balance = limit_input(value, "low_balance_usd")?;
    }
    state.store.update_team(&team).await?;
    state.forget_policies();
    audit(
        state,
        Some(&team.id),
        caller,
        "team.update",
        Some(&team.id),
        Some(before),
        Some(team_settings_json(&team)),
    )
    .await?;
    respond(StatusCode::OK, &overview_json(state, &team).await?)
}

fn restricted_models(value: &Value) -> Result<Vec<String>, GatewayError> {
    let field = "restricted_models";
    let items = value.as_array().ok_or_else(|| {
        GatewayError::invalid(
            "'restricted_models' must be a list of model names or globs.",
            Some(field),
        )
    })?;
    if items.len() > 500 {
        return Err(GatewayError::invalid(
            "'restricted_models' has more than 500 entries.",
            Some(field),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let pattern = item.as_str().map(str::trim).ok_or_else(|| {
            GatewayError::invalid("'restricted_models' entries must be strings.", Some(field))
        })?;
        policy::validate_glob(pattern).map_err(|why| {
            GatewayError::invalid(
                format!("'restricted_models' entry {pattern:?} {why}."),
                Some(field),
            )
        })?;
        if !out.iter().any(|p| p == pattern) {
            out.push(pattern.to_string());
        }
    }
    Ok(out)
}

/// `DELETE /api/teams/{id}` (owner): soft; history stays.
pub async fn delete(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
) -> Result<Response<Body>, GatewayError> {
    let access = access(state, caller, team_id, Role::Owner).await?;
    state
        .store
        .delete_team(team_id, state.clock.now_ms())
        .await?;
    state.forget_policies();
    audit(
        state,
        Some(team_id),
        caller,
        "team.delete",
        Some(team_id),
        Some(team_settings_json(&access.team)),
        None,
    )
    .await?;
    respond(StatusCode::OK, &json!({"id": team_id, "deleted": true}))
}

/// `POST /api/teams/{id}/transfer {user_id}` (owner): the old owner becomes
/// an admin; billing follows the new owner from the next request on.
pub async fn transfer(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let access = access(state, caller, team_id, Role::Owner).await?;
    let input = body::object(request, &["user_id"]).await?;
    let new_owner = input
        .get("user_id")
        .and_then(Value::as_str)
        .ok_or_else(|| GatewayError::invalid("'user_id' must name a member.", Some("user_id")))?;
    if new_owner == access.team.owner_id {
        return Err(GatewayError::invalid(
            "That user already owns the team.",
            Some("user_id"),
        ));
    }
    if state.store.member(team_id, new_owner).await?.is_none() {
        return Err(GatewayError::invalid(
            format!("{new_owner} is not a member of the team; invite them first."),
            Some("user_id"),
        ));
    }
    state
        .store
        .transfer_team(team_id, &access.team.owner_id, new_owner)
        .await?;
    state.forget_policies();
    audit(
        state,
        Some(team_id),
        caller,
        "team.transfer",
        Some(new_owner),
        Some(json!({"owner_id": access.team.owner_id})),
        Some(json!({"owner_id": new_owner})),
    )
    .await?;
    let team = state
        .store
        .team(team_id)
        .await?
        .ok_or_else(|| GatewayError::NotFound(format!("No team {team_id}.")))?;
    respond(StatusCode::OK, &overview_json(state, &team).await?)
}

/// Makes a JSON object from a role list for `/api/me`.
pub fn me_teams(teams: &[(Team, Role)]) -> Vec<Value> {
    teams
        .iter()
        .map(|(team, role)| json!({"id": team.id, "name": team.name, "role": role}))
        .collect()
}
