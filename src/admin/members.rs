//! Team members: list them with their spend, change a member's role or
//! monthly limit, remove a member or leave.
//!
//! Like the team routes, every route resolves the caller's role on the
//! server first (`teams::access`): a team the caller is not in (or a
//! deleted one) is 404, a role too low is 403. The operator has owner
//! rights on every team. Every change is audited and clears the policy
//! cache, so it applies to the next request.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::teams::{access, limit_input, money_or_null, Role};
use super::{audit, json as body, respond, rfc3339, Caller};
use crate::error::GatewayError;
use crate::http_body::Body;
use crate::money::Money;
use crate::state::AppState;
use crate::store::{Member, Team};

fn member_json(member: &Member, team: &Team, spend: Money) -> Value {
    let effective = member.monthly_limit.or(team.default_monthly_limit);
    json!({
        "user_id": member.user_id,
        "email": member.email,
        "role": member.role,
        "spend_this_month_usd": spend.to_string(),
        "monthly_limit_usd": money_or_null(member.monthly_limit),
        "effective_limit_usd": money_or_null(effective),
        "enforcement": team.enforcement,
        "joined_at": rfc3339(member.joined_at),
    })
}

/// `GET /api/teams/{id}/members` (member).
pub async fn members(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
) -> Result<Response<Body>, GatewayError> {
    let access = access(state, caller, team_id, Role::Member).await?;
    let period = crate::clock::period_of(state.clock.now_ms());
    let members = state.store.members(team_id).await?;
    let spends = state
        .store
        .member_spends(team_id, period.start_ms, period.end_ms)
        .await?;
    let data: Vec<Value> = members
        .iter()
        .map(|m| {
            member_json(
                m,
                &access.team,
                spends.get(&m.user_id).copied().unwrap_or(Money::ZERO),
            )
        })
        .collect();
    respond(StatusCode::OK, &json!({"data": data}))
}

/// `PATCH /api/teams/{id}/members/{user_id} {role?, monthly_limit_usd?}` (admin).
pub async fn update_member(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    user_id: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let access = access(state, caller, team_id, Role::Admin).await?;
    let input = body::object(request, &["role", "monthly_limit_usd"]).await?;
    let member = state
        .store
        .member(team_id, user_id)
        .await?
        .ok_or_else(|| GatewayError::NotFound(format!("No member {user_id} in the team.")))?;
    let mut role = member.role;
    if let Some(value) = input.get("role") {
        let wanted = value
            .as_str()
            .and_then(|text| Role::parse(text).ok())
            .ok_or_else(|| {
                GatewayError::invalid("'role' must be \"admin\" or \"member\".", Some("role"))
            })?;
        let touches_owner = wanted == Role::Owner || member.role == Role::Owner;
        if touches_owner && wanted != member.role {
            if access.role < Role::Owner {
                return Err(GatewayError::Forbidden(
                    "Admins cannot grant or take the owner role.".into(),
                ));
            }
            return Err(GatewayError::Conflict(
                "The owner role moves only by transfer: POST /api/teams/{id}/transfer.".into(),
            ));
        }
        role = wanted;
    }
    let mut limit = member.monthly_limit;
    if let Some(value) = input.get("monthly_limit_usd") {
        limit = limit_input(value, "monthly_limit_usd")?;
    }
    state
        .store
        .update_member(team_id, user_id, role, limit)
        .await?;
    if member.role >= Role::Admin && role < Role::Admin {
        // Demoted: the invitations they sent as an admin go with the role.
        state
            .store
            .revoke_invitations_by(team_id, user_id, state.clock.now_ms())
            .await?;
    }
    state.forget_policies();
    audit(
        state,
        Some(team_id),
        caller,
        "member.update",
        Some(user_id),
        Some(
            json!({"role": member.role, "monthly_limit_usd": money_or_null(member.monthly_limit)}),
        ),
        Some(json!({"role": role, "monthly_limit_usd": money_or_null(limit)})),
    )
    .await?;
    let updated = Member {
        role,
        monthly_limit: limit,
        ..member
    };
    let period = crate::clock::period_of(state.clock.now_ms());
    let spend = state
        .store
        .member_spend(team_id, user_id, period.start_ms, period.end_ms)
        .await?;
    respond(StatusCode::OK, &member_json(&updated, &access.team, spend))
}

/// `DELETE /api/teams/{id}/members/{user_id}`: admins remove members;
/// anyone may leave; the owner can do neither (transfer first).
pub async fn remove_member(
    state: &Arc<AppState>,
    caller: &Caller,
    team_id: &str,
    user_id: &str,
) -> Result<Response<Body>, GatewayError> {
    let leaving = matches!(caller, Caller::User(p) if p.user_id == user_id);
    let needed = if leaving { Role::Member } else { Role::Admin };
    let access = access(state, caller, team_id, needed).await?;
    let member = state
        .store
        .member(team_id, user_id)
        .await?
        .ok_or_else(|| GatewayError::NotFound(format!("No member {user_id} in the team.")))?;
    if member.user_id == access.team.owner_id {
        return Err(GatewayError::Conflict(
            "The owner cannot be removed or leave; transfer the team first.".into(),
        ));
    }
    let now = state.clock.now_ms();
    state.store.remove_member(team_id, user_id, now).await?;
    // Gone: nothing they left behind may bring anyone (them included) in.
    state
        .store
        .revoke_invitations_by(team_id, user_id, now)
        .await?;
    state
        .store
        .close_join_requests(team_id, user_id, now)
        .await?;
    state.forget_policies();
    let action = if leaving {
        "member.leave"
    } else {
        "member.remove"
    };
    audit(
        state,
        Some(team_id),
        caller,
        action,
        Some(user_id),
        Some(json!({"role": member.role})),
        None,
    )
    .await?;
    respond(
        StatusCode::OK,
        &json!({"user_id": user_id, "removed": true}),
    )
}
