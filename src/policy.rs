//! Team policy on the request path: who may bill a team, which models it
//! restricts, a member's effective monthly limit, and the month a request
//! falls in.
//!
//! Member policies are cached (moka) for `cache.key_ttl_ms` (1 s by
//! default), so a change made anywhere applies to the next request on every
//! process within that time; a change made in this process clears the
//! cache at once. Months are UTC calendar months: counters are keyed by
//! month, so a reset needs no job and cannot be missed.

use std::sync::Arc;
use std::time::Duration;

use time::{Date, Month, OffsetDateTime, Time};

use crate::app::AppState;
use crate::error::GatewayError;
use crate::money::Money;

/// How a team's monthly limits act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Refuse a request that would pass the limit (402).
    Hard,
    /// Serve, warn in a header, record the crossing once a month.
    Soft,
}

impl Enforcement {
    pub fn parse(text: &str) -> Option<Enforcement> {
        match text {
            "hard" => Some(Enforcement::Hard),
            "soft" => Some(Enforcement::Soft),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Hard => "hard",
            Enforcement::Soft => "soft",
        }
    }
}

/// What the request path needs to know about a member billing a team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPolicy {
    pub team_id: String,
    pub team_name: String,
    /// The payer: the team owner's balance.
    pub owner_id: String,
    pub role: String,
    pub enforcement: Enforcement,
    /// The member's override, else the team default; `None` = no limit.
    pub limit: Option<Money>,
    pub restricted_models: Vec<String>,
}

pub type PolicyCache = moka::sync::Cache<(String, String), Option<Arc<MemberPolicy>>>;

pub fn policy_cache(ttl_ms: u64) -> PolicyCache {
    moka::sync::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(Duration::from_millis(ttl_ms.max(1)))
        .build()
}

/// The policy of `user_id` in `team_id`, or `None` when the user is not an
/// active member of a live team.
pub async fn member_policy(
    state: &AppState,
    team_id: &str,
    user_id: &str,
) -> Result<Option<Arc<MemberPolicy>>, GatewayError> {
    let cache_key = (team_id.to_string(), user_id.to_string());
    if let Some(cached) = state.policy_cache.get(&cache_key) {
        return Ok(cached);
    }
    // An invalidation while the lookup runs makes its answer unfit to cache.
    let generation = state.cache_generation();
    let store = state.store.clone();
    let (team_key, user_key) = cache_key.clone();
    let looked_up = state
        .policy_lookups
        .run(cache_key.clone(), move || async move {
            load_policy(&store, &team_key, &user_key).await
        })
        .await;
    let policy = match looked_up {
        Ok(policy) => policy,
        Err(error) => {
            if let Some(known) = state.last_known_policies.get(&cache_key) {
                state.metrics.store_fallback();
                return Ok(known);
            }
            tracing::warn!(%error, "Team policy lookup failed and is not known here.");
            return Err(GatewayError::Unavailable(
                "The gateway cannot reach its database to check this team; retry shortly.".into(),
            ));
        }
    };
    if state.cache_generation() == generation {
        state.policy_cache.insert(cache_key.clone(), policy.clone());
        state.last_known_policies.insert(cache_key, policy.clone());
    }
    Ok(policy)
}

/// Reads a member's policy from the database (one query per table).
async fn load_policy(
    store: &crate::store::Store,
    team_id: &str,
    user_id: &str,
) -> Result<Option<Arc<MemberPolicy>>, crate::store::StoreError> {
    let Some(team) = store.team(team_id).await? else {
        return Ok(None);
    };
    let Some(member) = store.member(team_id, user_id).await? else {
        return Ok(None);
    };
    Ok(Some(Arc::new(MemberPolicy {
        team_id: team.id,
        team_name: team.name,
        owner_id: team.owner_id,
        role: member.role,
        enforcement: Enforcement::parse(&team.enforcement).unwrap_or(Enforcement::Hard),
        limit: member.monthly_limit.or(team.default_monthly_limit),
        restricted_models: team.restricted_models,
    })))
}

/// Forgets cached policies after a change made in this process.
pub fn forget_policies(state: &AppState) {
    crate::invalidate::broadcast(state, crate::invalidate::Invalidation::Policies);
}

/// Whether `model` is usable under these restrictions.
pub fn model_allowed(restricted: &[String], model: &str) -> bool {
    !restricted.iter().any(|pattern| glob_match(pattern, model))
}

/// `*` matches any run of characters, `?` one character; all else is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Checks a restriction pattern: model-name characters plus `*` and `?`.
pub fn validate_glob(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > 200 {
        return Err("must be 1 to 200 characters".into());
    }
    match pattern.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@' | '*' | '?'))
    }) {
        Some(bad) => Err(format!(
            "has the character {bad:?}; use letters, digits, - _ . : / @ and the wildcards * ?"
        )),
        None => Ok(()),
    }
}

/// A UTC calendar month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// `YYYY-MM`.
    pub key: String,
    pub start_ms: i64,
    /// The first instant of the next month: when limits reset.
    pub end_ms: i64,
}

fn month_start_ms(year: i32, month: Month) -> i64 {
    Date::from_calendar_date(year, month, 1)
        .map(|d| d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp() * 1000)
        .unwrap_or(0)
}

/// The month containing `ms`.
pub fn period_of(ms: i64) -> Period {
    let at = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let (year, month) = (at.year(), at.month());
    let (next_year, next_month) = if month == Month::December {
        (year + 1, Month::January)
    } else {
        (year, month.next())
    };
    Period {
        key: format!("{year:04}-{:02}", u8::from(month)),
        start_ms: month_start_ms(year, month),
        end_ms: month_start_ms(next_year, next_month),
    }
}

/// The month before the one containing `ms`.
pub fn previous_period(ms: i64) -> Period {
    period_of(period_of(ms).start_ms - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shells() {
        assert!(glob_match("claude-opus-*", "claude-opus-4-5"));
        assert!(!glob_match("claude-opus-*", "claude-sonnet-4-5"));
        assert!(glob_match("gpt-?o", "gpt-4o"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("*mini*", "gpt-4o-mini-2024"));
        assert!(!glob_match("gpt-5", "gpt-5.1"));
        assert!(glob_match("gpt-5", "gpt-5"));
        assert!(validate_glob("claude-opus-*").is_ok());
        assert!(validate_glob("claude [x]").is_err());
        assert!(validate_glob("").is_err());
    }

    #[test]
    fn periods_are_utc_months() {
        // 2026-11-28T08:00:00Z
        let period = period_of(1_795_852_800_000);
        assert_eq!(period.key, "2026-11");
        assert_eq!(period.start_ms, 1_793_491_200_000); // 2026-11-01
        assert_eq!(period.end_ms, 1_796_083_200_000); // 2026-12-01
        let december = period_of(period.end_ms);
        assert_eq!(december.key, "2026-12");
        assert_eq!(period_of(december.end_ms).key, "2027-01");
        assert_eq!(period_of(period.end_ms - 1).key, "2026-11");
        assert_eq!(previous_period(period.start_ms).key, "2026-10");
    }
}
