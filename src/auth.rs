//! Authentication: a bearer credential → a [`Principal`] or the operator.
//!
//! Key lookups go through a moka cache keyed by the key's hash (hits take
//! no lock shared by all requests). Entries live `cache.key_ttl_ms`
//! (default 1 s), so a revocation made anywhere takes effect within that
//! time; a revocation made in this process invalidates at once. Unknown
//! keys are cached too (negatively), so a flood of bad keys cannot turn into
//! a flood of database queries.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use crate::app::AppState;
use crate::error::GatewayError;
use crate::keys;

/// Who is calling, from a valid API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub user_id: String,
    pub key_prefix: String,
    /// `personal` or `team:<team_id>`.
    pub billing: String,
}

pub type KeyCache = moka::sync::Cache<String, Option<Arc<Principal>>>;

pub fn key_cache(ttl_ms: u64, max_keys: u64) -> KeyCache {
    moka::sync::Cache::builder()
        .max_capacity(max_keys)
        .time_to_live(Duration::from_millis(ttl_ms.max(1)))
        .build()
}

/// The credential of a request: `Authorization: Bearer …`, or `x-api-key`
/// (what Anthropic SDKs send).
pub fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let text = value.to_str().ok()?.trim();
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))?;
        return Some(token.trim());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Whether `token` is the operator token.
pub fn is_operator(state: &AppState, token: &str) -> bool {
    let hash = keys::hash_secret(token);
    keys::constant_time_eq(hash.as_bytes(), state.admin_token_hash.as_bytes())
}

/// Resolves an API key to its principal.
pub async fn authenticate_key(
    state: &AppState,
    token: &str,
) -> Result<Arc<Principal>, GatewayError> {
    if !keys::looks_like_key(token) {
        return Err(GatewayError::InvalidApiKey);
    }
    let hash = keys::hash_secret(token);
    if let Some(cached) = state.key_cache.get(&hash) {
        state.metrics.key_cache_hit();
        return cached.ok_or(GatewayError::InvalidApiKey);
    }
    state.metrics.key_cache_miss();
    // An invalidation while the lookup runs makes its answer unfit to cache.
    let generation = state.cache_generation();
    let store = state.store.clone();
    let lookup_hash = hash.clone();
    let looked_up = state
        .key_lookups
        .run(hash.clone(), move || async move {
            store.key_by_hash(&lookup_hash).await
        })
        .await;
    let row = match looked_up {
        Ok(row) => row,
        Err(error) => {
            // The database is away: keys this process has seen keep working.
            if let Some(known) = state.last_known_keys.get(&hash) {
                state.metrics.store_fallback();
                return known.ok_or(GatewayError::InvalidApiKey);
            }
            tracing::warn!(%error, "Key lookup failed and the key is not known here.");
            return Err(GatewayError::Unavailable(
                "The gateway cannot reach its database to check this key; retry shortly.".into(),
            ));
        }
    };
    // The lookup was by hash; compare the stored hash in constant time too.
    let principal = row
        .filter(|row| keys::constant_time_eq(row.key_hash.as_bytes(), hash.as_bytes()))
        .map(|row| {
            Arc::new(Principal {
                key_id: row.id,
                user_id: row.user_id,
                key_prefix: row.prefix,
                billing: row.billing,
            })
        });
    if state.cache_generation() == generation {
        state.key_cache.insert(hash.clone(), principal.clone());
        state.last_known_keys.insert(hash, principal.clone());
    }
    principal.ok_or(GatewayError::InvalidApiKey)
}

/// Forgets a key in this process's cache (after a revocation or a billing
/// change made here).
pub fn forget_key(state: &AppState, key_hash: &str) {
    crate::invalidate::broadcast(
        state,
        crate::invalidate::Invalidation::Key(key_hash.to_string()),
    );
}

/// The last answer the database gave for each key (or team policy), kept
/// for a day and used only while the database does not answer.
pub fn last_known<K, V>(max: u64) -> moka::sync::Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    moka::sync::Cache::builder()
        .max_capacity(max)
        .time_to_live(Duration::from_secs(24 * 3600))
        .build()
}
