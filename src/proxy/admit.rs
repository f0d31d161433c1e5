//! Phase 5, admit: hold an upper bound of the request's cost on the paying
//! account (and, for team billing, on the member's month spend, refusing
//! past a hard limit) in one atomic step, seeding missing counters from the
//! store. A ledger that cannot keep up refuses first: money it could not
//! record is not spent.

use std::future::Future;

use super::ctx::RequestCtx;
use super::request::ClientRequest;
use super::settle::Hold;
use crate::accounts::{self, AccountsError};
use crate::bound::{self, Bound};
use crate::clock::{self, Period};
use crate::counters::{Reserve, SpendHold, Stamps};
use crate::domain::Enforcement;
use crate::error::{Figures, GatewayError};
use crate::money::Money;
use crate::policy::MemberPolicy;
use crate::providers::Endpoint;
use crate::state::AppState;
use crate::store::teams::LimitEvent;

pub async fn admit(
    state: &AppState,
    ctx: &mut RequestCtx,
    request: &ClientRequest,
) -> Result<Hold, GatewayError> {
    if state.ledger.is_saturated() {
        return Err(GatewayError::Unavailable(
            "The usage ledger is behind; the request was not forwarded. Retry shortly.".into(),
        ));
    }
    let (Some(route), Some(billing)) = (ctx.route, ctx.billing.as_ref()) else {
        return Err(GatewayError::internal("admission before authorization"));
    };
    let model = route.model(&state.config);
    if request.shape.background && ctx.endpoint == Endpoint::Responses {
        return Err(GatewayError::Unmeterable {
            message: "'background' responses cannot be metered: their usage never passes \
                      through the gateway. Send the request without 'background', or stream it."
                .into(),
            param: "background".into(),
        });
    }
    let bound = bound::bound(
        &request.shape,
        request.bytes.len(),
        ctx.endpoint != Endpoint::Embeddings,
        &model.limits,
        &model.price,
    )
    .map_err(|refused| GatewayError::Unmeterable {
        message: refused.message,
        param: refused.param.into(),
    })?;
    let amount = bound.amount;
    let period = clock::period_of(ctx.entry.started_at);
    let user_id = ctx.principal.user_id.as_str();
    let policy = billing.policy.as_deref();
    let spend_key = policy
        .map(|p| crate::counters::spend_key(&billing.account_id, &p.team_id, user_id, &period.key));
    let held = HoldRequest {
        account: &billing.account_id,
        amount,
        policy,
        spend_key: spend_key.as_deref(),
        user_id,
        period: &period,
    };
    let (spend, stamps) = match hold_money(state, &held).await {
        Ok(held) => held,
        Err(Refusal::Error(error)) => return Err(error),
        Err(Refusal::Insufficient(available)) => {
            return Err(GatewayError::InsufficientBalance {
                message: format!(
                    "The paying account's balance (${available}) cannot cover this request's hold \
                     of ${amount} ({}). Add credits{}.",
                    describe(&bound, &model.name),
                    lower_hint(&bound)
                ),
                figures: Box::new(Figures {
                    scope: "balance",
                    hold: amount,
                    balance: Some(available),
                    ..Figures::default()
                }),
            });
        }
        Err(Refusal::Limit { spent, limit }) => {
            let team = policy.map_or("", |p| p.team_name.as_str());
            let resets_at = clock::rfc3339(period.end_ms);
            return Err(GatewayError::MonthlyLimitExceeded {
                message: format!(
                    "Monthly limit reached for this member of team '{team}': limit ${limit}, \
                     spent ${spent} this month, and this request holds up to ${amount} ({}). \
                     The limit resets at {resets_at}{}.",
                    describe(&bound, &model.name),
                    lower_hint(&bound)
                ),
                figures: Box::new(Figures {
                    scope: "member_monthly",
                    hold: amount,
                    limit: Some(limit),
                    spent: Some(spent),
                    resets_at: Some(resets_at),
                    ..Figures::default()
                }),
            });
        }
    };
    ctx.warning = soft_limit_warning(state, policy, spend, user_id, &period);
    Ok(Hold {
        price: model.price,
        held: amount,
        bound,
        spend_key,
        stamps,
        request_body: request.bytes.clone(),
    })
}

/// What the hold covers, in words.
fn describe(bound: &Bound, model: &str) -> String {
    let input = if bound.hidden_input {
        format!("{} input tokens, the context window, since the request names input the gateway cannot see", bound.input_tokens)
    } else {
        format!("up to {} input tokens", bound.input_tokens)
    };
    let choices = if bound.choices > 1 {
        format!(" over {} choices", bound.choices)
    } else {
        String::new()
    };
    format!(
        "{input} and up to {} output tokens{choices} of {model}",
        bound.output_tokens
    )
}

/// How the client can lower the hold.
fn lower_hint(bound: &Bound) -> &'static str {
    if bound.output_from_request || bound.output_tokens == 0 {
        ""
    } else {
        ", or send max_tokens (max_completion_tokens, max_output_tokens): without it the hold \
         covers the model's largest possible answer"
    }
}

/// What one hold asks of the counters.
struct HoldRequest<'a> {
    account: &'a str,
    amount: Money,
    /// The member's policy, for team billing.
    policy: Option<&'a MemberPolicy>,
    /// The member's month-spend counter, for team billing.
    spend_key: Option<&'a str>,
    user_id: &'a str,
    period: &'a Period,
}

enum Refusal {
    Insufficient(Money),
    Limit { spent: Money, limit: Money },
    Error(GatewayError),
}

impl From<GatewayError> for Refusal {
    fn from(error: GatewayError) -> Self {
        Refusal::Error(error)
    }
}

/// Holds the amount on the account (and the member's monthly spend, for
/// team billing) in one atomic step, seeding a missing counter from the
/// store. Returns the member's spend with this hold, and the stamps.
async fn hold_money(
    state: &AppState,
    held: &HoldRequest<'_>,
) -> Result<(Option<Money>, Stamps), Refusal> {
    let spend = match (held.policy, held.spend_key) {
        (Some(policy), Some(key)) => Some(SpendHold {
            key,
            hard_limit: policy.hard_limit(),
        }),
        _ => None,
    };
    for _ in 0..3 {
        let reserve = match state
            .counters
            .reserve(held.account, held.amount, spend)
            .await
        {
            Ok(reserve) => reserve,
            Err(error) => {
                tracing::warn!(%error, "Counters unreachable; refusing.");
                return Err(counters_away().into());
            }
        };
        match reserve {
            Reserve::Held { spend, stamps, .. } => return Ok((spend, stamps)),
            Reserve::Insufficient { available } => return Err(Refusal::Insufficient(available)),
            Reserve::LimitReached { spent, limit } => {
                if let Some(policy) = held.policy {
                    record_limit_event(
                        state,
                        policy,
                        held.user_id,
                        held.period,
                        "hard_refused",
                        limit,
                        spent,
                    );
                }
                return Err(Refusal::Limit { spent, limit });
            }
            Reserve::MissingBalance => {
                let account = held.account.to_string();
                seed_once(
                    state,
                    format!("balance:{account}"),
                    |store, counters| async move {
                        accounts::seed_balance(&store, &counters, &account).await
                    },
                )
                .await?;
            }
            Reserve::MissingSpend => {
                let (Some(policy), Some(key)) = (held.policy, held.spend_key) else {
                    return Err(
                        GatewayError::internal("spend counter missing without a team").into(),
                    );
                };
                let (team_id, user, period, key) = (
                    policy.team_id.clone(),
                    held.user_id.to_string(),
                    held.period.clone(),
                    key.to_string(),
                );
                seed_once(
                    state,
                    format!("spend:{key}"),
                    |store, counters| async move {
                        accounts::seed_spend(&store, &counters, &team_id, &user, &period, &key)
                            .await
                    },
                )
                .await?;
            }
        }
    }
    Err(GatewayError::internal("counters could not be seeded").into())
}

/// Seeds a missing counter once, however many requests found it missing;
/// not while [`AppState::seeding_waits_for_ledger`] (a restart replays the
/// spool first, and admission waits for it).
async fn seed_once<F, Fut>(state: &AppState, name: String, seed: F) -> Result<(), GatewayError>
where
    F: FnOnce(crate::store::Store, std::sync::Arc<crate::counters::Counters>) -> Fut,
    Fut: Future<Output = Result<(), AccountsError>> + Send + 'static,
{
    if state.seeding_waits_for_ledger() {
        return Err(GatewayError::Unavailable(
            "The usage ledger is catching up; the balance cannot be read yet. Retry shortly."
                .into(),
        ));
    }
    let seeding = seed(state.store.clone(), state.counters.clone());
    match state.counter_seeds.run(name, move || seeding).await {
        Ok(()) => Ok(()),
        Err(error) => {
            tracing::warn!(%error, "Counter seed failed.");
            Err(GatewayError::from(&*error))
        }
    }
}

/// The counters (Redis) do not answer: money cannot be checked, so the
/// request is refused (fail closed).
fn counters_away() -> GatewayError {
    GatewayError::Unavailable(
        "The gateway cannot reach its counters to check the balance; the request was not forwarded. Retry shortly."
            .into(),
    )
}

/// A soft limit passed by this request: the warning text, and a limit
/// event recorded once per member per month.
fn soft_limit_warning(
    state: &AppState,
    policy: Option<&MemberPolicy>,
    spend: Option<Money>,
    user_id: &str,
    period: &Period,
) -> Option<String> {
    let policy = policy?;
    let limit = policy.limit?;
    let spend = spend?;
    if policy.enforcement != Enforcement::Soft || spend <= limit {
        return None;
    }
    record_limit_event(
        state,
        policy,
        user_id,
        period,
        "soft_exceeded",
        limit,
        spend,
    );
    Some(format!(
        "Monthly limit of ${limit} in team '{}' exceeded: ${spend} spent or reserved this month (soft limit; resets {}).",
        policy.team_name,
        clock::rfc3339(period.end_ms)
    ))
}

/// Records a limit crossing off the request path (once per member, month
/// and kind: the store ignores repeats).
fn record_limit_event(
    state: &AppState,
    policy: &MemberPolicy,
    user_id: &str,
    period: &Period,
    kind: &'static str,
    limit: Money,
    spend: Money,
) {
    let store = state.store.clone();
    let event = LimitEvent {
        team_id: policy.team_id.clone(),
        user_id: user_id.to_string(),
        period: period.key.clone(),
        kind,
        limit,
        spend,
        at: state.clock.now_ms(),
    };
    state.tasks.spawn(async move {
        if let Err(error) = store.record_limit_event(&event).await {
            tracing::warn!(%error, "Limit event not recorded.");
        }
    });
}
