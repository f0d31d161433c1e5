//! Invitations by email, the public invite link, and join requests.
//!
//! Tokens are 256 bits from the OS CSPRNG (43 base62 characters), stored
//! only as SHA-256 hashes. An invitation is single use (a conditional update
//! makes a second accept fail even when two race), expires, can be revoked,
//! and is valid only for its own team and email. The invite link creates a
//! pending join request that an admin approves or denies.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::teams::{access, Role};
use super::{audit, json as body, respond, rfc3339, Caller};
use crate::error::GatewayError;
use crate::http_body::Body;
use crate::keys;
use crate::state::AppState;
use crate::store::{Invitation, JoinRequest};

const DEFAULT_EXPIRY_HOURS: i64 = 7 * 24;
const MAX_EXPIRY_HOURS: i64 = 30 * 24;
const HOUR_MS: i64 = 3_600_000;

fn new_token(prefix: &str) -> String {
    format!("{prefix}_{}", keys::random_base62(43))
}

fn invitation_status(invitation: &Invitation, now: i64) -> &'static str {
    if invitation.revoked_at.is_some() {
        "revoked"
    } else if invitation.accepted_at.is_some() {
        "accepted"
    } else if invitation.expires_at <= now {
        "expired"
    } else {
        "pending"
    }
}

fn invitation_json(invitation: &Invitation, now: i64) -> Value {
    json!({
        "id": invitation.id,
        "email": invitation.email,
        "role": invitation.role,
        "status": invitation_status(invitation, now),
        "expires_at": rfc3339(invitation.expires_at),
        "created_at": rfc3339(invitation.created_at),
        "created_by": invitation.created_by,
        "accepted_at": invitation.accepted_at.map(rfc3339),
        "accepted_by": invitation.accepted_by,
    })
}

/// `POST /api/teams/{id}/invitations {email, role, expires_in_hours?}` (admin).
pub async fn create(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Admin).await?;
    let input = body::object(request, &["email", "role", "expires_in_hours"]).await?;
    let email = body::email(
        input
            .get("email")
            .and_then(Value::as_str)
            .ok_or_else(|| GatewayError::invalid("'email' is required.", Some("email")))?,
        "email",
    )?;
    let role =
        match input.get("role") {
            None | Some(Value::Null) => Role::Member,
            Some(value) => match value.as_str().and_then(|text| Role::parse(text).ok()) {
                Some(Role::Owner) => return Err(GatewayError::invalid(
                    "Invitations grant \"admin\" or \"member\"; ownership moves only by transfer.",
                    Some("role"),
                )),
                Some(role) => role,
                None => {
                    return Err(GatewayError::invalid(
                        "'role' must be \"admin\" or \"member\".",
                        Some("role"),
                    ))
                }
            },
        };
    let hours = match input.get("expires_in_hours") {
        None | Some(Value::Null) => DEFAULT_EXPIRY_HOURS,
        Some(value) => match value.as_i64() {
            Some(hours) if (1..=MAX_EXPIRY_HOURS).contains(&hours) => hours,
            _ => {
                return Err(GatewayError::invalid(
                    format!(
                        "'expires_in_hours' must be a whole number from 1 to {MAX_EXPIRY_HOURS}."
                    ),
                    Some("expires_in_hours"),
                ))
            }
        },
    };
    if state.store.member_with_email(team_id, &email).await? {
        return Err(GatewayError::Conflict(format!(
            "{email} is already a member of this team."
        )));
    }
    let now = state.clock.now_ms();
    let token = new_token("tgi");
    let invitation = Invitation {
        id: keys::new_id("inv"),
        team_id: team_id.to_string(),
        email,
        role,
        token_hash: keys::hash_secret(&token),
        expires_at: now + hours * HOUR_MS,
        created_by: super::actor(caller),
        created_at: now,
        accepted_at: None,
        accepted_by: None,
        revoked_at: None,
    };
    state.store.insert_invitation(&invitation).await?;
    audit(
        state,
        Some(team_id),
        caller,
        "invitation.create",
        Some(&invitation.id),
        None,
        Some(json!({"email": invitation.email, "role": invitation.role, "expires_at": rfc3339(invitation.expires_at)})),
    )
    .await?;
    // A page: opened in a browser it shows the team and role and accepts
    // with one click (the API stays `POST /api/invitations/{token}/accept`).
    let url = format!("{}/invite/{token}", state.config.public_url());
    let mut out = invitation_json(&invitation, now);
    out["token"] = json!(token);
    if state.store.mails() {
        out["email_status"] = json!(mail_invitation(state, caller, &invitation, &url).await);
    }
    out["url"] = json!(url);
    respond(StatusCode::CREATED, &out)
}

/// Writes the invitation's mail to the outbox (email on): `queued`,
/// `capped` (over the team's hourly cap: recorded, not sent) or
/// `not_queued` (the outbox could not be written; the invitation stands and
/// its URL is in the answer).
async fn mail_invitation(
    state: &AppState,
    caller: &Caller,
    invitation: &Invitation,
    url: &str,
) -> &'static str {
    let inviter = match caller {
        Caller::Operator => Ok(Some("The Tollgate operator".to_string())),
        Caller::User(principal) => state.store.user(&principal.user_id).await.map(|user| {
            user.map(|u| match u.name.filter(|n| !n.trim().is_empty()) {
                Some(name) => format!("{name} ({})", u.email),
                None => u.email,
            })
        }),
    };
    let inviter = match inviter {
        Ok(inviter) => inviter.unwrap_or_else(|| "A team admin".into()),
        Err(error) => {
            tracing::warn!(%error, invitation = %invitation.id, "Invitation mail not written.");
            return "not_queued";
        }
    };
    let mail = crate::store::outbox::NewMail {
        team_id: Some(invitation.team_id.clone()),
        kind: "invitation",
        dedupe: format!("mail:invitation:{}", invitation.id),
        to: invitation.email.clone(),
        data: json!({
            "invitation_id": invitation.id,
            "role": invitation.role,
            "inviter": inviter,
            "expires_at": invitation.expires_at,
            "url": url,
        }),
        attachment: None,
        at: invitation.created_at,
    };
    match state
        .store
        .enqueue_invitation_mail(&mail, state.config.email.invitations_per_team_per_hour)
        .await
    {
        Ok(status) => {
            if status == "capped" {
                tracing::warn!(team = %invitation.team_id, "Invitation mail over the team's hourly cap: recorded, not sent.");
            }
            status
        }
        Err(error) => {
            tracing::warn!(%error, invitation = %invitation.id, "Invitation mail not written.");
            "not_queued"
        }
    }
}

/// `GET /api/teams/{id}/invitations` (admin): never shows tokens.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Admin).await?;
    let now = state.clock.now_ms();
    let invitations = state.store.invitations(team_id).await?;
    let data: Vec<Value> = invitations
        .iter()
        .map(|i| invitation_json(i, now))
        .collect();
    respond(StatusCode::OK, &json!({"data": data}))
}

/// `DELETE /api/teams/{id}/invitations/{invitation_id}` (admin).
pub async fn revoke(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    id: &str,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Admin).await?;
    let invitation = state
        .store
        .invitation(team_id, id)
        .await?
        .ok_or_else(|| GatewayError::NotFound(format!("No invitation {id}.")))?;
    let now = state.clock.now_ms();
    if !state.store.revoke_invitation(id, now).await? {
        return Err(GatewayError::Conflict(format!(
            "The invitation is already {}.",
            invitation_status(&invitation, now)
        )));
    }
    audit(
        state,
        Some(team_id),
        caller,
        "invitation.revoke",
        Some(id),
        Some(json!({"email": invitation.email})),
        None,
    )
    .await?;
    let mut revoked = invitation;
    revoked.revoked_at = Some(now);
    respond(StatusCode::OK, &invitation_json(&revoked, now))
}

/// The invitation a token opens (404 if none) and its team, if the team
/// still exists.
async fn invitation_of(
    state: &AppState,
    token: &str,
) -> Result<(Invitation, Option<crate::store::Team>), GatewayError> {
    let invitation = state
        .store
        .invitation_by_token(&keys::hash_secret(token))
        .await?
        .ok_or_else(|| GatewayError::NotFound("No such invitation.".into()))?;
    let team = state.store.team(&invitation.team_id).await?;
    Ok((invitation, team))
}

/// `POST /api/invitations/{token}/accept`: the caller's email must match.
pub async fn accept(
    state: &AppState,
    caller: &Caller,
    token: &str,
) -> Result<Response<Body>, GatewayError> {
    let principal = caller.require_user()?;
    let (invitation, team) = invitation_of(state, token).await?;
    let now = state.clock.now_ms();
    let Some(team) = team else {
        return Err(GatewayError::Gone(
            "The team of this invitation no longer exists.".into(),
        ));
    };
    match invitation_status(&invitation, now) {
        "revoked" => return Err(GatewayError::Gone("This invitation was revoked.".into())),
        "accepted" => {
            return Err(GatewayError::Gone(
                "This invitation was already used.".into(),
            ))
        }
        "expired" => {
            return Err(GatewayError::Gone(format!(
                "This invitation expired at {}; ask for a new one.",
                rfc3339(invitation.expires_at)
            )))
        }
        _ => {}
    }
    let user = state
        .store
        .user(&principal.user_id)
        .await?
        .ok_or(GatewayError::InvalidApiKey)?;
    if !user.email.eq_ignore_ascii_case(&invitation.email) {
        return Err(GatewayError::Forbidden(
            "This invitation is for another email address.".into(),
        ));
    }
    refuse_if_member(state, &team.id, &user.id).await?;
    if !state
        .store
        .consume_invitation(&invitation.id, &user.id, now)
        .await?
    {
        return Err(GatewayError::Gone(
            "This invitation was already used.".into(),
        ));
    }
    state
        .store
        .add_member(&team.id, &user.id, invitation.role, now)
        .await?;
    // Joined: a join request or another invitation left pending must not
    // re-admit them later.
    state
        .store
        .close_join_requests(&team.id, &user.id, now)
        .await?;
    state
        .store
        .revoke_invitations_to(&team.id, &user.email, now)
        .await?;
    state.forget_policies();
    audit(
        state,
        Some(&team.id),
        caller,
        "invitation.accept",
        Some(&user.id),
        None,
        Some(json!({"invitation_id": invitation.id, "role": invitation.role})),
    )
    .await?;
    respond(
        StatusCode::OK,
        &json!({"team": {"id": team.id, "name": team.name}, "role": invitation.role}),
    )
}

/// `PUT /api/teams/{id}/invite-link {enabled}` (admin). Enabling issues a
/// fresh link (the previous one stops working): that is how it rotates.
pub async fn set_link(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Admin).await?;
    let input = body::object(request, &["enabled"]).await?;
    let enabled = input
        .get("enabled")
        .and_then(Value::as_bool)
        .ok_or_else(|| {
            GatewayError::invalid("'enabled' must be true or false.", Some("enabled"))
        })?;
    if !enabled {
        state.store.set_invite_link(team_id, None).await?;
        audit(
            state,
            Some(team_id),
            caller,
            "invite_link.disable",
            Some(team_id),
            None,
            None,
        )
        .await?;
        return respond(StatusCode::OK, &json!({"enabled": false}));
    }
    let token = new_token("tgl");
    state
        .store
        .set_invite_link(team_id, Some(&keys::hash_secret(&token)))
        .await?;
    audit(
        state,
        Some(team_id),
        caller,
        "invite_link.enable",
        Some(team_id),
        None,
        None,
    )
    .await?;
    // A page, as for invitations (the API stays `POST /api/join/{token}`).
    let url = format!("{}/join/{token}", state.config.public_url());
    respond(
        StatusCode::OK,
        &json!({"enabled": true, "token": token, "url": url}),
    )
}

/// 409 when the user already belongs to the team.
async fn refuse_if_member(
    state: &AppState,
    team_id: &str,
    user_id: &str,
) -> Result<(), GatewayError> {
    match state.store.member(team_id, user_id).await? {
        Some(_) => Err(GatewayError::Conflict(
            "You are already a member of this team.".into(),
        )),
        None => Ok(()),
    }
}

fn join_request_json(request: &JoinRequest) -> Value {
    json!({
        "id": request.id,
        "team_id": request.team_id,
        "user_id": request.user_id,
        "email": request.email,
        "status": request.status,
        "created_at": rfc3339(request.created_at),
        "decided_at": request.decided_at.map(rfc3339),
    })
}

/// `GET /api/invitations/{token}` (no credential: the token is the
/// secret): the team, role, address and state of an invitation, for the
/// page its link opens.
pub async fn describe_invitation(
    state: &AppState,
    token: &str,
) -> Result<Response<Body>, GatewayError> {
    let (invitation, team) = invitation_of(state, token).await?;
    let team = team.ok_or_else(|| GatewayError::NotFound("No such invitation.".into()))?;
    let now = state.clock.now_ms();
    respond(
        StatusCode::OK,
        &json!({
            "team": {"id": team.id, "name": team.name},
            "role": invitation.role,
            "email": invitation.email,
            "status": invitation_status(&invitation, now),
            "expires_at": rfc3339(invitation.expires_at),
        }),
    )
}

/// `GET /api/join/{token}` (no credential): the team a join link is for.
pub async fn describe_link(state: &AppState, token: &str) -> Result<Response<Body>, GatewayError> {
    let team = state
        .store
        .team_by_invite_link(&keys::hash_secret(token))
        .await?
        .ok_or_else(|| GatewayError::NotFound("No such invite link, or it was disabled.".into()))?;
    respond(
        StatusCode::OK,
        &json!({"team": {"id": team.id, "name": team.name}}),
    )
}

/// `POST /api/join/{token}`: a pending join request for the link's team.
pub async fn join(
    state: &AppState,
    caller: &Caller,
    token: &str,
) -> Result<Response<Body>, GatewayError> {
    let principal = caller.require_user()?;
    let team = state
        .store
        .team_by_invite_link(&keys::hash_secret(token))
        .await?
        .ok_or_else(|| GatewayError::NotFound("No such invite link, or it was disabled.".into()))?;
    refuse_if_member(state, &team.id, &principal.user_id).await?;
    if let Some(pending) = state
        .store
        .pending_join_request(&team.id, &principal.user_id)
        .await?
    {
        return respond(StatusCode::OK, &join_request_json(&pending));
    }
    let request = JoinRequest {
        id: keys::new_id("jr"),
        team_id: team.id.clone(),
        user_id: principal.user_id.clone(),
        email: String::new(),
        status: "pending".into(),
        created_at: state.clock.now_ms(),
        decided_at: None,
    };
    state.store.insert_join_request(&request).await?;
    audit(
        state,
        Some(&team.id),
        caller,
        "join_request.create",
        Some(&request.id),
        None,
        None,
    )
    .await?;
    let stored = state
        .store
        .join_request(&team.id, &request.id)
        .await?
        .unwrap_or(request);
    respond(StatusCode::CREATED, &join_request_json(&stored))
}

/// `GET /api/teams/{id}/join-requests` (admin).
pub async fn list_join_requests(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Admin).await?;
    let requests = state.store.join_requests(team_id).await?;
    let data: Vec<Value> = requests.iter().map(join_request_json).collect();
    respond(StatusCode::OK, &json!({"data": data}))
}

/// `POST /api/teams/{id}/join-requests/{id}/approve|deny` (admin).
pub async fn decide(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    id: &str,
    approve: bool,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Admin).await?;
    let request = state
        .store
        .join_request(team_id, id)
        .await?
        .ok_or_else(|| GatewayError::NotFound(format!("No join request {id}.")))?;
    let status = if approve { "approved" } else { "denied" };
    let now = state.clock.now_ms();
    if !state
        .store
        .decide_join_request(id, status, &super::actor(caller), now)
        .await?
    {
        return Err(GatewayError::Conflict(format!(
            "The join request is already {}.",
            request.status
        )));
    }
    if approve
        && state
            .store
            .member(team_id, &request.user_id)
            .await?
            .is_none()
    {
        state
            .store
            .add_member(team_id, &request.user_id, Role::Member, now)
            .await?;
        state
            .store
            .close_join_requests(team_id, &request.user_id, now)
            .await?;
        if let Some(user) = state.store.user(&request.user_id).await? {
            state
                .store
                .revoke_invitations_to(team_id, &user.email, now)
                .await?;
        }
        state.forget_policies();
    }
    let action = if approve {
        "join_request.approve"
    } else {
        "join_request.deny"
    };
    audit(
        state,
        Some(team_id),
        caller,
        action,
        Some(&request.user_id),
        None,
        None,
    )
    .await?;
    let mut decided = request;
    decided.status = status.into();
    decided.decided_at = Some(now);
    respond(StatusCode::OK, &join_request_json(&decided))
}
