//! Phases 1, 2 and 4: authenticate the key; apply the per-key rate limit;
//! resolve the model and its provider, the paying account and the team's
//! restrictions.

use std::sync::Arc;

use http::HeaderMap;

use super::ctx::{Billing, RequestCtx, Route};
use super::request::ClientRequest;
use crate::auth::{self, Principal};
use crate::config::ProviderKind;
use crate::domain::BillingChoice;
use crate::error::GatewayError;
use crate::policy;
use crate::providers;
use crate::state::AppState;

/// Phase 1: the key, before anything is read from the body (strangers cost
/// nothing).
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Arc<Principal>, GatewayError> {
    let token = auth::credential(headers).ok_or(GatewayError::InvalidApiKey)?;
    state.keys.authenticate(token).await
}

/// Phase 4: model → provider (404), payer (403 for a team one is not in),
/// the team's restrictions (403), route fits the provider (400).
pub async fn authorize(
    state: &AppState,
    ctx: &mut RequestCtx,
    request: &ClientRequest,
    headers: &HeaderMap,
) -> Result<(), GatewayError> {
    let route = Route::find(&state.config, &request.model)
        .ok_or_else(|| GatewayError::ModelNotFound(request.model.clone()))?;
    let model = route.model(&state.config);
    let provider = route.provider(&state.config);
    ctx.route = Some(route);
    ctx.entry.provider = provider.name.clone();
    // Only a configured model's name goes in the span: the client's text
    // could be anything, of any length.
    let span = super::detail().then(tracing::Span::current);
    if let Some(span) = &span {
        span.record("model", model.name.as_str());
        span.record("provider", provider.name.as_str());
    }
    ctx.entry.tags = request_tags(&ctx.principal, headers)?;
    let billing = resolve_billing(state, &ctx.principal, headers).await?;
    if let Some(span) = &span {
        span.record("payer", billing.account_id.as_str());
    }
    ctx.entry.account_id = billing.account_id.clone();
    ctx.entry.team_id = billing.policy.as_ref().map(|p| p.team_id.clone());
    let restricted = billing
        .policy
        .as_ref()
        .is_some_and(|policy| !policy::model_allowed(&policy.restricted_models, &model.name));
    ctx.billing = Some(billing);
    if restricted {
        return Err(GatewayError::ModelNotAllowed(model.name.clone()));
    }
    if !providers::serves(provider.kind, ctx.endpoint) {
        return Err(GatewayError::invalid(
            format!(
                "The model '{}' is served by a provider that does not speak {}; use {}.",
                model.name,
                ctx.endpoint.suffix(),
                if provider.kind == ProviderKind::Anthropic {
                    "/v1/messages"
                } else {
                    "/v1/chat/completions"
                }
            ),
            Some("model"),
        ));
    }
    Ok(())
}

/// The request's cost allocation tags: the key's defaults, overridden per
/// key by `x-tollgate-tags` (400 naming the header when it is malformed).
fn request_tags(
    principal: &Principal,
    headers: &HeaderMap,
) -> Result<Option<String>, GatewayError> {
    let invalid = |why: String| {
        GatewayError::invalid(
            format!("x-tollgate-tags: {why} (send key=value pairs separated by commas)."),
            Some("x-tollgate-tags"),
        )
    };
    let header = match headers.get("x-tollgate-tags") {
        None => crate::tags::Tags::new(),
        Some(value) => {
            let text = value.to_str().map_err(|_| invalid("not text".into()))?;
            crate::tags::parse_header(text).map_err(invalid)?
        }
    };
    if header.is_empty() && principal.tags.is_empty() {
        return Ok(None);
    }
    let tags = crate::tags::merge(&principal.tags, &header).map_err(invalid)?;
    Ok(crate::tags::to_text(&tags))
}

/// Phase 2: `limits.rpm_per_key` (per process), before the body is read.
pub fn rate_limit(state: &AppState, principal: &Principal) -> Result<(), GatewayError> {
    let Some(limiter) = &state.rate_limiter else {
        return Ok(());
    };
    limiter.check_key(&principal.key_id).map_err(|not_until| {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        GatewayError::RateLimited {
            limit: state.config.limits.rpm_per_key,
            retry_after_secs: wait.as_secs().max(1),
        }
    })
}

/// The paying account: the `x-tollgate-billing` header, else the key's own
/// setting. A team is paid for by its owner; only its members may bill it.
pub async fn resolve_billing(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
) -> Result<Billing, GatewayError> {
    let invalid = || {
        GatewayError::invalid(
            "x-tollgate-billing must be 'personal' or 'team:<id>'.",
            Some("x-tollgate-billing"),
        )
    };
    let from_header = match headers.get("x-tollgate-billing") {
        Some(value) => {
            let text = value.to_str().map_err(|_| invalid())?;
            Some(BillingChoice::parse(text).map_err(|_| invalid())?)
        }
        None => None,
    };
    match from_header.as_ref().unwrap_or(&principal.billing) {
        BillingChoice::Personal => Ok(Billing {
            account_id: principal.user_id.clone(),
            policy: None,
        }),
        BillingChoice::Team(team_id) => {
            match state
                .policies
                .member_policy(team_id, &principal.user_id)
                .await?
            {
                Some(policy) => Ok(Billing {
                    account_id: policy.owner_id.clone(),
                    policy: Some(policy),
                }),
                None => Err(GatewayError::NotATeamMember(team_id.clone())),
            }
        }
    }
}
