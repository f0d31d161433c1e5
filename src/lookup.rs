//! [`CachedLookup`]: the one implementation of "read through a cache, one
//! database query per key at a time, the last known answer while the
//! database is away, and no stale answer cached after an invalidation".
//! Key authentication and team policies are loaders on top of it.
//!
//! - **Cache**: moka, entries live `ttl` (1 s by default), so a change made
//!   anywhere applies everywhere within that time.
//! - **Single flight**: concurrent misses for a key share one query
//!   ([`SingleFlight`]).
//! - **Last known**: every loaded answer is also kept 24 h and served only
//!   when the load fails (the database is away).
//! - **Generation**: every invalidation bumps it; an answer loaded across an
//!   invalidation (it may have read the old state) is returned to its
//!   callers but not cached.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::singleflight::{Interrupted, SingleFlight};

/// How long last known answers are kept for a database outage.
const LAST_KNOWN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Where an answer came from (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cache,
    Loaded,
    /// The load failed; the last known answer was used.
    LastKnown,
}

pub struct CachedLookup<K, V, E> {
    cache: moka::sync::Cache<K, V>,
    last_known: moka::sync::Cache<K, V>,
    flight: SingleFlight<K, V, E>,
    generation: AtomicU64,
}

impl<K, V, E> CachedLookup<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: From<Interrupted> + Send + Sync + 'static,
{
    pub fn new(ttl: Duration, max_entries: u64) -> Self {
        CachedLookup {
            cache: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
            last_known: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(LAST_KNOWN_TTL)
                .build(),
            flight: SingleFlight::default(),
            generation: AtomicU64::new(0),
        }
    }

    /// The answer for `key`: cached, else loaded by `load` (shared with
    /// concurrent callers), else — when the load fails — the last known
    /// answer. The load's error when there is none.
    pub async fn get<F>(&self, key: &K, load: impl FnOnce() -> F) -> Result<(V, Origin), Arc<E>>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
    {
        if let Some(cached) = self.cache.get(key) {
            return Ok((cached, Origin::Cache));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        match self.flight.run(key.clone(), load).await {
            Ok(value) => {
                if self.generation.load(Ordering::SeqCst) == generation {
                    self.cache.insert(key.clone(), value.clone());
                    self.last_known.insert(key.clone(), value.clone());
                }
                Ok((value, Origin::Loaded))
            }
            Err(error) => match self.last_known.get(key) {
                Some(known) => Ok((known, Origin::LastKnown)),
                None => Err(error),
            },
        }
    }

    /// Forgets one key (cached and last known); loads in flight are not
    /// joined by later callers and their answers are not cached.
    pub fn forget(&self, key: &K) {
        self.new_generation();
        self.cache.invalidate(key);
        self.last_known.invalidate(key);
    }

    /// Forgets every key (cached and last known).
    pub fn forget_all(&self) {
        self.new_generation();
        self.cache.invalidate_all();
        self.last_known.invalidate_all();
    }

    /// Forgets every cached answer but keeps the last known ones (after
    /// invalidation messages may have been missed).
    pub fn forget_cached(&self) {
        self.new_generation();
        self.cache.invalidate_all();
    }

    fn new_generation(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.flight.forget_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Down;

    impl From<Interrupted> for Down {
        fn from(_: Interrupted) -> Self {
            Down
        }
    }

    type Lookup = CachedLookup<&'static str, u32, Down>;

    #[tokio::test]
    async fn caches_falls_back_and_forgets() {
        let lookup = Lookup::new(Duration::from_secs(60), 100);
        assert_eq!(
            lookup.get(&"k", || async { Ok(1) }).await,
            Ok((1, Origin::Loaded))
        );
        assert_eq!(
            lookup.get(&"k", || async { Ok(2) }).await,
            Ok((1, Origin::Cache))
        );
        lookup.forget_cached();
        assert_eq!(
            lookup.get(&"k", || async { Err(Down) }).await,
            Ok((1, Origin::LastKnown))
        );
        lookup.forget(&"k");
        assert_eq!(
            lookup.get(&"k", || async { Err(Down) }).await,
            Err(Arc::new(Down))
        );
    }

    #[tokio::test]
    async fn an_answer_loaded_across_an_invalidation_is_not_cached() {
        let lookup = Arc::new(Lookup::new(Duration::from_secs(60), 100));
        let slow = {
            let lookup = lookup.clone();
            crate::tasks::detached(async move {
                lookup
                    .get(&"k", || async {
                        tokio::time::sleep(Duration::from_millis(40)).await;
                        Ok(1)
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        lookup.forget(&"k");
        assert_eq!(slow.await.ok(), Some(Ok((1, Origin::Loaded))));
        assert_eq!(
            lookup.get(&"k", || async { Ok(2) }).await,
            Ok((2, Origin::Loaded))
        );
    }
}
