//! [`CachedLookup`]: the one implementation of "read through a cache, one
//! database query per key at a time, the last known answer while the
//! database is away, and no stale answer cached after an invalidation".
//! Key authentication and team policies are loaders on top of it.
//!
//! - **Cache**: moka, an answer is fresh for `ttl` (1 s by default). The
//!   first caller after that gets it at once and starts one reload in the
//!   background (callers never wait on the database for a known key while
//!   it answers slowly — a database busy with the ledger stalled every
//!   request of a key once per `ttl`); past twice `ttl` an answer is gone
//!   and callers wait for the load. So a change made anywhere applies
//!   everywhere within `ttl`, or within twice `ttl` while the database is
//!   slow to answer.
//! - **Single flight**: concurrent misses for a key share one query
//!   ([`SingleFlight`]).
//! - **Last known**: every loaded answer is also kept 24 h and served only
//!   when the load fails (the database is away).
//! - **Generation**: every invalidation bumps it; an answer loaded across an
//!   invalidation (it may have read the old state) is returned to its
//!   callers but not cached.
//! - **Breaker**: a failed load opens it, and so does a known key's load
//!   that takes longer than [`LOAD_PATIENCE`]; while it is open, a key with
//!   a last known answer gets that answer at once (no request waits on a
//!   database known to be down), and one probe at a time, every
//!   [`PROBE_INTERVAL_MS`], loads in the background; its success closes it.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
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

/// Least time between two probes of a database the breaker holds down.
pub const PROBE_INTERVAL_MS: i64 = 500;

/// Longest a caller with a last known answer waits for a load: past it the
/// database counts as down (the breaker opens) and the last known answer
/// is used; the load runs on and its answer is not lost for later callers.
pub const LOAD_PATIENCE: Duration = Duration::from_secs(1);

/// Whether the database behind a lookup is known to be down.
#[derive(Debug, Default)]
pub struct Breaker {
    open: AtomicBool,
    probing: AtomicBool,
    next_probe_ms: AtomicI64,
}

impl Breaker {
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    fn trip(&self) {
        self.next_probe_ms.store(
            crate::clock::now_ms() + PROBE_INTERVAL_MS,
            Ordering::Release,
        );
        self.open.store(true, Ordering::Release);
    }

    fn close(&self) {
        self.open.store(false, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }

    /// Whether the caller may probe now (one at a time, spaced).
    fn try_probe(&self) -> bool {
        crate::clock::now_ms() >= self.next_probe_ms.load(Ordering::Acquire)
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    fn probe_failed(&self) {
        self.next_probe_ms.store(
            crate::clock::now_ms() + PROBE_INTERVAL_MS,
            Ordering::Release,
        );
        self.probing.store(false, Ordering::Release);
    }
}

pub struct CachedLookup<K, V, E> {
    /// Answers with when they were loaded; kept twice the freshness.
    cache: moka::sync::Cache<K, (V, std::time::Instant)>,
    /// How long an answer is fresh.
    fresh: Duration,
    /// Keys being reloaded in the background (one reload per key).
    refreshing: Arc<std::sync::Mutex<std::collections::HashSet<K>>>,
    last_known: moka::sync::Cache<K, V>,
    flight: SingleFlight<K, V, E>,
    generation: Arc<AtomicU64>,
    breaker: Arc<Breaker>,
}

impl<K, V, E> CachedLookup<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: From<Interrupted> + Send + Sync + 'static,
{
    pub fn new(ttl: Duration, max_entries: u64) -> Self {
        let fresh = ttl.max(Duration::from_millis(1));
        CachedLookup {
            cache: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(fresh.saturating_mul(2))
                .build(),
            fresh,
            refreshing: Arc::default(),
            last_known: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(LAST_KNOWN_TTL)
                .build(),
            flight: SingleFlight::default(),
            generation: Arc::new(AtomicU64::new(0)),
            breaker: Arc::new(Breaker::default()),
        }
    }

    /// Whether the database is held down by the breaker.
    pub fn database_down(&self) -> bool {
        self.breaker.is_open()
    }

    /// The answer for `key`: cached, else loaded by `load` (shared with
    /// concurrent callers), else — when the load fails — the last known
    /// answer. The load's error when there is none.
    pub async fn get<F>(&self, key: &K, load: impl FnOnce() -> F) -> Result<(V, Origin), Arc<E>>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
    {
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some((cached, loaded_at)) = self.cache.get(key) {
            if loaded_at.elapsed() >= self.fresh && !self.breaker.is_open() {
                self.refresh(key.clone(), generation, load);
            }
            return Ok((cached, Origin::Cache));
        }
        if self.breaker.is_open() {
            if let Some(known) = self.last_known.get(key) {
                if self.breaker.try_probe() {
                    self.probe(key.clone(), generation, load());
                }
                return Ok((known, Origin::LastKnown));
            }
        }
        let loaded = match self.last_known.get(key) {
            // A known key waits at most `LOAD_PATIENCE` for a database that
            // may have just gone away (its first failure can take seconds).
            Some(known) => {
                match tokio::time::timeout(LOAD_PATIENCE, self.flight.run(key.clone(), load)).await
                {
                    Ok(loaded) => loaded,
                    Err(_) => {
                        self.breaker.trip();
                        return Ok((known, Origin::LastKnown));
                    }
                }
            }
            None => self.flight.run(key.clone(), load).await,
        };
        match loaded {
            Ok(value) => {
                self.breaker.close();
                if self.generation.load(Ordering::SeqCst) == generation {
                    self.cache
                        .insert(key.clone(), (value.clone(), std::time::Instant::now()));
                    self.last_known.insert(key.clone(), value.clone());
                }
                Ok((value, Origin::Loaded))
            }
            Err(error) => {
                // An invalidation during the load interrupts it: that is not
                // the database failing.
                if self.generation.load(Ordering::SeqCst) == generation {
                    self.breaker.trip();
                }
                match self.last_known.get(key) {
                    Some(known) => Ok((known, Origin::LastKnown)),
                    None => Err(error),
                }
            }
        }
    }

    /// Loads in the background while the breaker is open: success fills
    /// the cache and closes the breaker; failure spaces the next probe.
    fn probe<F>(&self, key: K, generation: u64, load: F)
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
    {
        self.load_behind(
            key,
            generation,
            load,
            |breaker, _| breaker.probe_failed(),
            None,
        );
    }

    /// Reloads a known key in the background (once at a time per key): its
    /// answer is cached fresh; a failure opens the breaker, as a failed
    /// load in the foreground would.
    fn refresh<F>(&self, key: K, generation: u64, load: impl FnOnce() -> F)
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
    {
        let first = self
            .refreshing
            .lock()
            .is_ok_and(|mut refreshing| refreshing.insert(key.clone()));
        if first {
            let refreshing = Some(self.refreshing.clone());
            let failed = |breaker: &Breaker, current: bool| {
                if current {
                    breaker.trip();
                }
            };
            self.load_behind(key, generation, load(), failed, refreshing);
        }
    }

    /// Runs `load` on a task of its own: success closes the breaker and,
    /// unless an invalidation came meanwhile, caches the answer; failure
    /// calls `failed` (told whether no invalidation came meanwhile). At the
    /// end `key` leaves `refreshing`, if given.
    fn load_behind<F>(
        &self,
        key: K,
        generation: u64,
        load: F,
        failed: fn(&Breaker, bool),
        refreshing: Option<Arc<std::sync::Mutex<std::collections::HashSet<K>>>>,
    ) where
        F: Future<Output = Result<V, E>> + Send + 'static,
    {
        let (cache, last_known) = (self.cache.clone(), self.last_known.clone());
        let (breaker, generations) = (self.breaker.clone(), self.generation.clone());
        // Detached, not tracked: it holds no money and no row (its only
        // effect is a cache fill), so shutdown need not wait for it.
        crate::tasks::detached(async move {
            let loaded = load.await;
            let current = generations.load(Ordering::SeqCst) == generation;
            match loaded {
                Ok(value) => {
                    breaker.close();
                    if current {
                        cache.insert(key.clone(), (value.clone(), std::time::Instant::now()));
                        last_known.insert(key.clone(), value);
                    }
                }
                Err(_) => failed(&breaker, current),
            }
            if let Some(Ok(mut refreshing)) = refreshing.as_deref().map(|r| r.lock()) {
                refreshing.remove(&key);
            }
        });
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

    #[tokio::test]
    async fn an_open_breaker_answers_last_known_at_once_and_probes_once() {
        let lookup = Lookup::new(Duration::from_millis(1), 100);
        assert!(lookup.get(&"k", || async { Ok(7) }).await.is_ok());
        std::thread::sleep(Duration::from_millis(5));
        // The database fails: the breaker opens, the last known answers.
        assert_eq!(
            lookup.get(&"k", || async { Err(Down) }).await,
            Ok((7, Origin::LastKnown))
        );
        assert!(lookup.database_down());
        // While open, a load that would hang is never awaited.
        let answered = tokio::time::timeout(
            Duration::from_secs(1),
            lookup.get(&"k", || async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(8)
            }),
        )
        .await;
        assert_eq!(answered.unwrap(), Ok((7, Origin::LastKnown)));
        // A key never seen must still ask the database.
        assert_eq!(
            lookup.get(&"new", || async { Ok(1) }).await,
            Ok((1, Origin::Loaded))
        );
        assert!(!lookup.database_down(), "a load that succeeds closes it");
    }

    #[tokio::test]
    async fn a_known_key_past_its_freshness_answers_at_once_and_reloads_once() {
        let ms = Duration::from_millis;
        let lookup = Lookup::new(ms(200), 100);
        assert!(lookup.get(&"k", || async { Ok(1) }).await.is_ok());
        tokio::time::sleep(ms(250)).await;
        // Stale but known: answered without waiting on the (slow) reload,
        // which runs once for all callers.
        let loads = Arc::new(AtomicU64::new(0));
        for _ in 0..5 {
            let loads = loads.clone();
            let answered = tokio::time::timeout(
                ms(1000),
                lookup.get(&"k", move || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(ms(3000)).await;
                    Ok(2)
                }),
            )
            .await;
            assert_eq!(answered.unwrap(), Ok((1, Origin::Cache)));
        }
        tokio::time::sleep(ms(50)).await;
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one reload");
        // Past twice the freshness, the old answer is gone: callers wait.
        tokio::time::sleep(ms(150)).await;
        assert_eq!(
            lookup.get(&"k", || async { Ok(4) }).await,
            Ok((4, Origin::Loaded))
        );
        // A failed reload opens the breaker, as a failed load would.
        let lookup = Lookup::new(ms(100), 100);
        assert!(lookup.get(&"k", || async { Ok(5) }).await.is_ok());
        tokio::time::sleep(ms(120)).await;
        assert_eq!(
            lookup.get(&"k", || async { Err(Down) }).await,
            Ok((5, Origin::Cache))
        );
        for _ in 0..100 {
            if lookup.database_down() {
                break;
            }
            tokio::time::sleep(ms(10)).await;
        }
        assert!(lookup.database_down());
    }
}
