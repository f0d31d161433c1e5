//! Cache invalidation across gateway processes.
//!
//! A change made through one process (a key revoked or re-billed, a limit,
//! a restriction, a role) clears that process's caches at once and is
//! published on the Redis channel `<prefix>:invalidate`; every process
//! subscribed clears its own caches when the message arrives (typically
//! within milliseconds). The caches' TTL (`cache.key_ttl_ms`, 1 s) is the
//! backstop when a message is lost; after a reconnect the subscriber clears
//! every cache, since messages sent meanwhile were missed.
//!
//! The [`Invalidator`] knows the caches only as [`Forget`] targets.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::tasks::Tasks;

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

/// A cache that invalidations clear.
pub trait Forget: Send + Sync {
    /// Forgets what `what` names (ignoring what it does not hold).
    fn forget(&self, what: &Invalidation);
    /// Messages may have been missed: forget what could be stale.
    fn forget_cached(&self);
}

/// Clears this process's caches and tells the other processes.
pub struct Invalidator {
    /// Empty without Redis: one process, nothing to tell.
    redis_url: String,
    channel: String,
    targets: Vec<Arc<dyn Forget>>,
    tasks: Tasks,
}

impl Invalidator {
    pub fn new(
        redis_url: &str,
        redis_prefix: &str,
        targets: Vec<Arc<dyn Forget>>,
        tasks: Tasks,
    ) -> Invalidator {
        Invalidator {
            redis_url: redis_url.to_string(),
            channel: format!("{redis_prefix}:invalidate"),
            targets,
            tasks,
        }
    }

    /// Clears this process's caches.
    pub fn apply_locally(&self, what: &Invalidation) {
        for target in &self.targets {
            target.forget(what);
        }
    }

    /// Clears this process's caches and publishes the change.
    pub fn broadcast(&self, what: Invalidation) {
        self.apply_locally(&what);
        if self.redis_url.is_empty() {
            return;
        }
        let url = self.redis_url.clone();
        let channel = self.channel.clone();
        self.tasks.spawn(async move {
            let published = async {
                let client = redis::Client::open(url.as_str())?;
                let mut connection = client.get_multiplexed_async_connection().await?;
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(what.encode())
                    .query_async::<i64>(&mut connection)
                    .await
            };
            let published = tokio::time::timeout(Duration::from_secs(2), published)
                .await
                .unwrap_or_else(|_| {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::IoError,
                        "timed out",
                    )))
                });
            if let Err(error) = published {
                tracing::warn!(%error, "Cache invalidation not published; other processes catch up within the cache TTL.");
            }
        });
    }

    /// Subscribes to invalidations until shutdown, reconnecting as needed.
    pub async fn subscribe(self: Arc<Self>, shutdown: CancellationToken) {
        if self.redis_url.is_empty() {
            return;
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let session = async {
                let client = redis::Client::open(self.redis_url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&self.channel).await?;
                // Anything sent while we were away is lost: start clean.
                for target in &self.targets {
                    target.forget_cached();
                }
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    if let Ok(text) = message.get_payload::<String>() {
                        if let Some(what) = Invalidation::decode(&text) {
                            self.apply_locally(&what);
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
