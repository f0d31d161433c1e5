//! Team policy on the request path: who may bill a team, which models it
//! restricts, and a member's effective monthly limit.
//!
//! [`PolicyLookup`] is a loader over [`CachedLookup`]: member policies live
//! `cache.key_ttl_ms` (1 s by default), so a change made anywhere applies to
//! the next request on every process within that time; a change made through
//! any process clears the caches at once (see `invalidate.rs`).

use std::sync::Arc;
use std::time::Duration;

use crate::domain::{Enforcement, Role};
use crate::error::GatewayError;
use crate::invalidate::{Forget, Invalidation};
use crate::lookup::{CachedLookup, Origin};
use crate::metrics::Metrics;
use crate::money::Money;
use crate::store::{Store, StoreError};

/// What the request path needs to know about a member billing a team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPolicy {
    pub team_id: String,
    pub team_name: String,
    /// The payer: the team owner's balance.
    pub owner_id: String,
    pub role: Role,
    pub enforcement: Enforcement,
    /// The member's override, else the team default; `None` = no limit.
    pub limit: Option<Money>,
    pub restricted_models: Vec<String>,
}

impl MemberPolicy {
    /// The limit that refuses (a hard one), if any.
    pub fn hard_limit(&self) -> Option<Money> {
        self.limit.filter(|_| self.enforcement == Enforcement::Hard)
    }
}

type Policy = Option<Arc<MemberPolicy>>;

/// (team, member) → the member's policy, through the cache.
pub struct PolicyLookup {
    lookup: CachedLookup<(String, String), Policy, StoreError>,
    store: Store,
    metrics: Arc<Metrics>,
}

impl PolicyLookup {
    pub fn new(store: Store, metrics: Arc<Metrics>, ttl_ms: u64) -> PolicyLookup {
        PolicyLookup {
            lookup: CachedLookup::new(Duration::from_millis(ttl_ms), 100_000),
            store,
            metrics,
        }
    }

    /// The policy of `user_id` in `team_id`, or `None` when the user is not
    /// an active member of a live team.
    pub async fn member_policy(
        &self,
        team_id: &str,
        user_id: &str,
    ) -> Result<Policy, GatewayError> {
        let key = (team_id.to_string(), user_id.to_string());
        let store = self.store.clone();
        let (team, user) = key.clone();
        let answer = self
            .lookup
            .get(
                &key,
                move || async move { load(&store, &team, &user).await },
            )
            .await;
        match answer {
            Ok((policy, origin)) => {
                if origin == Origin::LastKnown {
                    self.metrics.store_fallback();
                }
                Ok(policy)
            }
            Err(error) => {
                tracing::warn!(%error, "Team policy lookup failed and is not known here.");
                Err(GatewayError::Unavailable(
                    "The gateway cannot reach its database to check this team; retry shortly."
                        .into(),
                ))
            }
        }
    }
}

impl Forget for PolicyLookup {
    fn forget(&self, what: &Invalidation) {
        if *what == Invalidation::Policies {
            self.lookup.forget_all();
        }
    }

    fn forget_cached(&self) {
        self.lookup.forget_all();
    }
}

/// Reads a member's policy from the database (one query per table).
async fn load(store: &Store, team_id: &str, user_id: &str) -> Result<Policy, StoreError> {
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
        enforcement: team.enforcement,
        limit: member.monthly_limit.or(team.default_monthly_limit),
        restricted_models: team.restricted_models,
    })))
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
}
