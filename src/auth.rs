//! Authentication: a bearer credential → a [`Principal`] or the operator.
//!
//! [`KeyLookup`] is a loader over [`CachedLookup`], keyed by the key's
//! hash: cache hits take no lock shared by all requests; entries live
//! `cache.key_ttl_ms` (default 1 s), so a revocation made anywhere takes
//! effect within that time, and one made through any process invalidates
//! at once (see `invalidate.rs`). Unknown keys are cached too (negatively),
//! so a flood of bad keys cannot turn into a flood of database queries.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use crate::domain::BillingChoice;
use crate::error::GatewayError;
use crate::invalidate::{Forget, Invalidation};
use crate::keys;
use crate::lookup::{CachedLookup, Origin};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Who is calling, from a valid API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub user_id: String,
    pub key_prefix: String,
    /// Who pays unless a request says otherwise.
    pub billing: BillingChoice,
    /// The key's default tags.
    pub tags: crate::tags::Tags,
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

/// Whether `token` is the operator token (by its hash, in constant time).
pub fn is_operator(token: &str, admin_token_hash: &str) -> bool {
    let hash = keys::hash_secret(token);
    keys::constant_time_eq(hash.as_bytes(), admin_token_hash.as_bytes())
}

/// API keys → principals, through the cache.
pub struct KeyLookup {
    lookup: CachedLookup<String, Option<Arc<Principal>>, StoreError>,
    store: Store,
    metrics: Arc<Metrics>,
}

impl KeyLookup {
    pub fn new(store: Store, metrics: Arc<Metrics>, ttl_ms: u64, max_keys: u64) -> KeyLookup {
        KeyLookup {
            lookup: CachedLookup::new(Duration::from_millis(ttl_ms), max_keys),
            store,
            metrics,
        }
    }

    /// Resolves an API key to its principal.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Principal>, GatewayError> {
        if !keys::looks_like_key(token) {
            return Err(GatewayError::InvalidApiKey);
        }
        let hash = keys::hash_secret(token);
        let store = self.store.clone();
        let lookup_hash = hash.clone();
        let answer = self
            .lookup
            .get(
                &hash,
                move || async move { load(&store, &lookup_hash).await },
            )
            .await;
        match answer {
            Ok((principal, origin)) => {
                match origin {
                    Origin::Cache => self.metrics.key_cache_hit(),
                    Origin::Loaded => self.metrics.key_cache_miss(),
                    Origin::LastKnown => {
                        self.metrics.key_cache_miss();
                        self.metrics.store_fallback();
                    }
                }
                principal.ok_or(GatewayError::InvalidApiKey)
            }
            Err(error) => {
                self.metrics.key_cache_miss();
                tracing::warn!(%error, "Key lookup failed and the key is not known here.");
                Err(GatewayError::Unavailable(
                    "The gateway cannot reach its database to check this key; retry shortly."
                        .into(),
                ))
            }
        }
    }
}

/// Reads a key by hash; the stored hash is compared in constant time too.
async fn load(store: &Store, hash: &str) -> Result<Option<Arc<Principal>>, StoreError> {
    let row = store.key_by_hash(hash).await?;
    Ok(row
        .filter(|row| keys::constant_time_eq(row.key_hash.as_bytes(), hash.as_bytes()))
        .map(|row| {
            Arc::new(Principal {
                key_id: row.id,
                user_id: row.user_id,
                key_prefix: row.prefix,
                billing: row.billing,
                tags: crate::tags::from_text(row.tags.as_deref()),
            })
        }))
}

impl Forget for KeyLookup {
    fn forget(&self, what: &Invalidation) {
        if let Invalidation::Key(hash) = what {
            self.lookup.forget(hash);
        }
    }

    fn forget_cached(&self) {
        self.lookup.forget_cached();
    }
}
