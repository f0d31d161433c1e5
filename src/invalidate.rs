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
//! Messages go out through one long-lived connection ([`Invalidator::publish`]),
//! deduplicated per batch; a policy change is published at most once per
//! [`POLICY_WINDOW`] (each one makes every process drop its policy cache,
//! so a user changing settings in a loop must not turn into a storm of
//! cache misses everywhere). A full queue turns into one "forget
//! everything" message. Nothing here is needed for correctness beyond the
//! TTL: it only makes changes apply sooner.
//!
//! The [`Invalidator`] knows the caches only as [`Forget`] targets.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Shortest time between two published policy changes.
pub const POLICY_WINDOW: Duration = Duration::from_millis(100);

/// Messages waiting for the publisher; past this, "forget everything".
const QUEUE: usize = 1024;

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invalidation {
    /// One key (by hash).
    Key(String),
    /// Team policies (limits, restrictions, roles, membership).
    Policies,
    /// Anything may have changed (messages were dropped).
    All,
}

impl Invalidation {
    fn encode(&self) -> String {
        match self {
            Invalidation::Key(hash) => format!("key:{hash}"),
            Invalidation::Policies => "policies".into(),
            Invalidation::All => "all".into(),
        }
    }

    fn decode(text: &str) -> Option<Invalidation> {
        if text == "policies" {
            return Some(Invalidation::Policies);
        }
        if text == "all" {
            return Some(Invalidation::All);
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
    /// The servers to publish and subscribe through: one, or every node of
    /// a cluster (classic pub/sub reaches every node; a connection that
    /// fails moves on to the next).
    nodes: Vec<String>,
    next_node: std::sync::atomic::AtomicUsize,
    channel: String,
    targets: Vec<Arc<dyn Forget>>,
    queue: mpsc::Sender<Invalidation>,
    /// Taken by the publisher when it starts.
    waiting: Mutex<Option<mpsc::Receiver<Invalidation>>>,
    /// The queue was full: publish "forget everything" next.
    overflowed: AtomicBool,
}

impl Invalidator {
    pub fn new(redis_url: &str, redis_prefix: &str, targets: Vec<Arc<dyn Forget>>) -> Invalidator {
        let (queue, waiting) = mpsc::channel(QUEUE);
        Invalidator {
            redis_url: redis_url.to_string(),
            nodes: crate::counters::redis::Nodes::parse(redis_url).urls(),
            next_node: std::sync::atomic::AtomicUsize::new(0),
            channel: format!("{redis_prefix}:invalidate"),
            targets,
            queue,
            waiting: Mutex::new(Some(waiting)),
            overflowed: AtomicBool::new(false),
        }
    }

    /// The next node to connect to (round robin over a cluster's nodes).
    fn node(&self) -> &str {
        let i = self.next_node.fetch_add(1, Ordering::Relaxed);
        self.nodes
            .get(i % self.nodes.len().max(1))
            .map_or("", String::as_str)
    }

    /// Clears this process's caches.
    pub fn apply_locally(&self, what: &Invalidation) {
        for target in &self.targets {
            if *what == Invalidation::All {
                target.forget_cached();
            } else {
                target.forget(what);
            }
        }
    }

    /// Clears this process's caches and queues the change for the other
    /// processes (never waits).
    pub fn broadcast(&self, what: Invalidation) {
        self.apply_locally(&what);
        if self.redis_url.is_empty() {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(what) {
            self.overflowed.store(true, Ordering::Relaxed);
        }
    }

    /// Publishes queued changes on one connection until shutdown: each
    /// batch deduplicated, policy changes at most once per
    /// [`POLICY_WINDOW`].
    pub async fn publish(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut waiting) = self.waiting.lock().ok().and_then(|mut w| w.take()) else {
            return;
        };
        if self.redis_url.is_empty() {
            return;
        }
        let mut connection: Option<redis::aio::MultiplexedConnection> = None;
        let mut last_policies = tokio::time::Instant::now() - POLICY_WINDOW;
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => return,
                first = waiting.recv() => match first {
                    Some(first) => first,
                    None => return,
                },
            };
            let mut batch = BTreeSet::from([first]);
            while let Ok(more) = waiting.try_recv() {
                batch.insert(more);
            }
            if self.overflowed.swap(false, Ordering::Relaxed) {
                batch = BTreeSet::from([Invalidation::All]);
            }
            if batch
                .iter()
                .any(|w| matches!(w, Invalidation::Policies | Invalidation::All))
            {
                let due = last_policies + POLICY_WINDOW;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep_until(due) => {}
                }
                // What arrived meanwhile goes in the same publish.
                while let Ok(more) = waiting.try_recv() {
                    batch.insert(more);
                }
                last_policies = tokio::time::Instant::now();
            }
            let sent =
                tokio::time::timeout(Duration::from_secs(2), self.send(&mut connection, &batch))
                    .await
                    .unwrap_or_else(|_| {
                        Err(redis::RedisError::from((
                            redis::ErrorKind::IoError,
                            "timed out",
                        )))
                    });
            if let Err(error) = sent {
                // Reconnect next time; the other processes catch up within
                // the cache TTL.
                connection = None;
                tracing::warn!(%error, "Cache invalidation not published; other processes catch up within the cache TTL.");
            }
        }
    }

    /// One pipelined PUBLISH per message, on the kept connection.
    async fn send(
        &self,
        connection: &mut Option<redis::aio::MultiplexedConnection>,
        batch: &BTreeSet<Invalidation>,
    ) -> Result<(), redis::RedisError> {
        if connection.is_none() {
            let client = redis::Client::open(self.node())?;
            *connection = Some(client.get_multiplexed_async_connection().await?);
        }
        let Some(connection) = connection.as_mut() else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        for what in batch {
            pipe.cmd("PUBLISH")
                .arg(&self.channel)
                .arg(what.encode())
                .ignore();
        }
        pipe.query_async::<()>(connection).await
    }

    /// Subscribes to invalidations until shutdown, reconnecting as needed.
    pub async fn subscribe(self: Arc<Self>, shutdown: CancellationToken) {
        if self.redis_url.is_empty() {
            return;
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let session = async {
                let client = redis::Client::open(self.node())?;
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
        for what in [
            Invalidation::Key("abc".into()),
            Invalidation::Policies,
            Invalidation::All,
        ] {
            assert_eq!(Invalidation::decode(&what.encode()), Some(what));
        }
        assert_eq!(Invalidation::decode("nonsense"), None);
    }
}
