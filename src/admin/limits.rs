//! Headroom (contract §6): `GET /api/me/limits`, for each billing target
//! the caller may use, what the next request may hold, from the numbers
//! admission reads: the paying account's live balance counter and the
//! member's month spend counter (each seeded from the ledger when
//! missing, as admission seeds them), and the member's policy as
//! admission loads it.
//!
//! `remaining_usd` = min(limit − spent, balance), never below zero;
//! `binding` names the smaller (`balance` when there is no limit; the
//! limit on a tie, as admission checks it first). A soft limit does not
//! refuse: it is reported, but only the balance binds.

use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::{current_balance, respond, rfc3339, Caller};
use crate::accounts::{self, AccountsError};
use crate::clock::{self, Period};
use crate::domain::Enforcement;
use crate::error::GatewayError;
use crate::http_body::Body;
use crate::money::Money;
use crate::policy::MemberPolicy;
use crate::state::AppState;

/// A member's month spend as admission counts it (held and settled).
async fn current_spend(
    state: &AppState,
    policy: &MemberPolicy,
    user_id: &str,
    period: &Period,
) -> Result<Money, GatewayError> {
    let key = crate::counters::spend_key(&policy.owner_id, &policy.team_id, user_id, &period.key);
    let read = async {
        if let Some(spent) = state.counters.spend(&key).await? {
            return Ok(spent);
        }
        accounts::seed_spend(
            &state.store,
            &state.counters,
            &policy.team_id,
            user_id,
            period,
            &key,
        )
        .await?;
        Ok(state.counters.spend(&key).await?.unwrap_or(Money::ZERO))
    };
    Ok(read
        .await
        .inspect_err(|error: &AccountsError| tracing::warn!(%error, "Counter step failed."))?)
}

/// One target's headroom.
pub fn headroom(
    billing: String,
    balance: Money,
    limit: Option<Money>,
    spent: Option<Money>,
    enforcement: Option<Enforcement>,
    resets_at: Option<String>,
) -> Value {
    let by_limit = match (limit, spent, enforcement) {
        (Some(limit), Some(spent), Some(Enforcement::Hard)) => {
            Some(Money::from_nano(limit.nano().saturating_sub(spent.nano())))
        }
        _ => None,
    };
    let (remaining, binding) = match by_limit {
        // A tie names the limit: admission checks it first.
        Some(left) if left <= balance => (left, "member_monthly"),
        _ => (balance, "balance"),
    };
    let remaining = Money::from_nano(remaining.nano().max(0));
    json!({
        "billing": billing,
        "balance_usd": balance.to_string(),
        "limit_usd": limit.map(|l| l.to_string()),
        "spent_usd": spent.map(|s| s.to_string()),
        "remaining_usd": remaining.to_string(),
        "enforcement": enforcement.map(|e| e.as_str()),
        "resets_at": resets_at,
        "binding": binding,
    })
}

/// `GET /api/me/limits`.
pub async fn mine(state: &AppState, caller: &Caller) -> Result<Response<Body>, GatewayError> {
    let principal = caller.require_user()?;
    let user_id = principal.user_id.as_str();
    // What this process's budget leases hold of a target's counters is
    // admission's here (a request gives it back and asks again in one
    // step): the counters read without it.
    let leased = |account: &str, spend_key: Option<&str>| {
        state
            .counters
            .leases()
            .map_or(Money::ZERO, |l| l.local(account, spend_key))
    };
    let mut data = vec![headroom(
        "personal".into(),
        current_balance(state, user_id)
            .await?
            .saturating_add(leased(user_id, None)),
        None,
        None,
        None,
        None,
    )];
    let period = clock::period_of(state.clock.now_ms());
    for (team, _) in state.store.teams_of_user(user_id).await? {
        let Some(policy) = state.policies.member_policy(&team.id, user_id).await? else {
            continue;
        };
        let key =
            crate::counters::spend_key(&policy.owner_id, &policy.team_id, user_id, &period.key);
        let mine = leased(&policy.owner_id, Some(&key));
        let balance = current_balance(state, &policy.owner_id)
            .await?
            .saturating_add(mine);
        let spent = Money::from_nano(
            current_spend(state, &policy, user_id, &period)
                .await?
                .nano()
                .saturating_sub(mine.nano()),
        );
        let mut entry = headroom(
            format!("team:{}", team.id),
            balance,
            policy.limit,
            Some(spent),
            Some(policy.enforcement),
            Some(rfc3339(period.end_ms)),
        );
        entry["team_id"] = json!(team.id);
        entry["team_name"] = json!(team.name);
        data.push(entry);
    }
    respond(StatusCode::OK, &json!({ "data": data }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(text: &str) -> Money {
        Money::parse_usd(text).unwrap()
    }

    #[test]
    fn the_smaller_binds() {
        let h = headroom(
            "t".into(),
            usd("5"),
            Some(usd("2")),
            Some(usd("0.5")),
            Some(Enforcement::Hard),
            None,
        );
        assert_eq!(h["remaining_usd"], usd("1.5").to_string());
        assert_eq!(h["binding"], "member_monthly");
        let h = headroom(
            "t".into(),
            usd("1"),
            Some(usd("2")),
            Some(usd("0.5")),
            Some(Enforcement::Hard),
            None,
        );
        assert_eq!(h["remaining_usd"], usd("1").to_string());
        assert_eq!(h["binding"], "balance");
        let h = headroom(
            "t".into(),
            usd("1"),
            Some(usd("2")),
            Some(usd("3")),
            Some(Enforcement::Hard),
            None,
        );
        assert_eq!(h["remaining_usd"], usd("0").to_string());
        let h = headroom(
            "t".into(),
            usd("1"),
            Some(usd("0.1")),
            Some(usd("3")),
            Some(Enforcement::Soft),
            None,
        );
        assert_eq!(h["binding"], "balance");
        let h = headroom("personal".into(), usd("-0.2"), None, None, None, None);
        assert_eq!(h["remaining_usd"], usd("0").to_string());
        assert_eq!(h["limit_usd"], Value::Null);
    }
}
