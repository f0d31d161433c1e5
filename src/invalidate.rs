//! Cache invalidation across gateway processes.
//!
//! A change made through one process (a key revoked or re-billed, a limit,
//! a restriction, a role) clears that process's caches at once and is
//! published on the Redis channel `<prefix>:invalidate`; every process
//! subscribed clears its own caches when the message arrives (typically
//! within milliseconds). The caches' TTL (`cache.key_ttl_ms`, 1 s) is the
//! backstop when a message is lost; after a reconnect the subscriber clears
//! everything, since messages sent meanwhile were missed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// One key (by hash).
    Key(String),
    /// Team policies (limits, restrictions, roles, membership).
    Policies,
}

impl Invalidation {
    fn encode(&self) -> String {
        match self {
            Invalidation::Key(hash) => format!("key:{hash}"),
            Invalidation::Policies => "policies".into(),
        }
    }

    fn decode(text: &str) -> Option<Invalidation> {
        if text == "policies" {
            return Some(Invalidation::Policies);
        }
        text.strip_prefix("key:")
            .map(|hash| Invalidation::Key(hash.to_string()))
    }
}

fn channel(state: &AppState) -> String {
    format!("{}:invalidate", state.config.storage.redis_prefix)
}

/// Clears this process's caches.
pub fn apply_locally(state: &AppState, what: &Invalidation) {
    // Lookups already running may have read the old state: their answers
    // are not cached, and later requests start fresh ones.
    state
        .cache_generation
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    state.key_lookups.forget_all();
    state.policy_lookups.forget_all();
    match what {
        Invalidation::Key(hash) => {
            state.key_cache.invalidate(hash);
            state.last_known_keys.invalidate(hash);
        }
        Invalidation::Policies => {
            state.policy_cache.invalidate_all();
            state.last_known_policies.invalidate_all();
        }
    }
}

/// Clears this process's caches and tells the other processes.
pub fn broadcast(state: &AppState, what: Invalidation) {
    apply_locally(state, &what);
    if state.config.storage.redis_url.is_empty() {
        return;
    }
    let url = state.config.storage.redis_url.clone();
    let channel = channel(state);
    state.tasks.spawn(async move {
        let published = async {
            let client = redis::Client::open(url.as_str())?;
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(what.encode())
                .query_async::<i64>(&mut connection)
                .await
        };
        if let Err(error) = tokio::time::timeout(Duration::from_secs(2), published)
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::IoError, "timed out"))))
        {
            tracing::warn!(%error, "Cache invalidation not published; other processes catch up within the cache TTL.");
        }
    });
}

/// Subscribes to invalidations until shutdown, reconnecting as needed.
pub async fn subscribe(state: Arc<AppState>, shutdown: CancellationToken) {
    if state.config.storage.redis_url.is_empty() {
        return;
    }
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            let client = redis::Client::open(state.config.storage.redis_url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel(&state)).await?;
            // Anything sent while we were away is lost: start clean.
            apply_locally(&state, &Invalidation::Policies);
            state.key_cache.invalidate_all();
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                if let Ok(text) = message.get_payload::<String>() {
                    if let Some(what) = Invalidation::decode(&text) {
                        apply_locally(&state, &what);
                    }
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = session => {
                if let Err(error) = result {
                    tracing::warn!(%error, "Invalidation channel lost; reconnecting.");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for what in [Invalidation::Key("abc".into()), Invalidation::Policies] {
            assert_eq!(Invalidation::decode(&what.encode()), Some(what));
        }
        assert_eq!(Invalidation::decode("nonsense"), None);
    }
}
