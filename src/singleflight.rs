//! One lookup per key at a time: concurrent cache misses for the same key
//! share the first caller's database query instead of each sending their own.
//! Without it, every expiry of a hot key's 1 s cache entry sent one query
//! per request in flight (64 at 64 connections; 1,000 under a burst of new
//! streams, which then queued for seconds on a pool of four connections).
//!
//! The lookup runs on its own task: a caller that goes away (a client that
//! disconnects) never leaves a half-done query, a pool connection or a
//! database lock parked inside an unpolled future. The task removes its own
//! entry when it ends, however it ends; if it dies (a panic), every
//! waiter gets `E::from(Interrupted)`, so callers handle one error type.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::{BoxFuture, FutureExt, Shared};

/// A lookup task that stopped before it answered (it panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

/// What every waiter of one lookup gets.
pub type Answer<T, E> = Result<T, Arc<E>>;

type Running<V> = Shared<BoxFuture<'static, V>>;
/// Each entry carries the number of the lookup that made it.
type Map<K, V> = Arc<Mutex<HashMap<K, (u64, Running<V>)>>>;

pub struct SingleFlight<K, T, E> {
    inflight: Map<K, Answer<T, E>>,
    next: AtomicU64,
}

impl<K: Hash + Eq + Clone, T, E> Default for SingleFlight<K, T, E> {
    fn default() -> Self {
        SingleFlight {
            inflight: Arc::new(Mutex::new(HashMap::new())),
            next: AtomicU64::new(0),
        }
    }
}

fn lock<K, V>(map: &Mutex<HashMap<K, V>>) -> MutexGuard<'_, HashMap<K, V>> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes the entry when the lookup task ends, even by a panic; only its
/// own entry (after `forget_all`, a newer lookup may hold the key).
struct Done<K: Hash + Eq, V: Clone> {
    map: Map<K, V>,
    key: Option<K>,
    id: u64,
}

impl<K: Hash + Eq, V: Clone> Drop for Done<K, V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut map = lock(&self.map);
            if map.get(&key).is_some_and(|(id, _)| *id == self.id) {
                map.remove(&key);
            }
        }
    }
}

impl<K, T, E> SingleFlight<K, T, E>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Clone + Send + Sync + 'static,
    E: From<Interrupted> + Send + Sync + 'static,
{
    /// Runs `make()` on a task unless a lookup for `key` is already in
    /// flight, in which case it waits for that one; every waiter gets the
    /// same answer. The lock is held only to find or insert the entry,
    /// never across an await.
    pub async fn run<F>(&self, key: K, make: impl FnOnce() -> F) -> Answer<T, E>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let running = {
            let mut inflight = lock(&self.inflight);
            match inflight.get(&key) {
                Some((_, running)) => running.clone(),
                None => {
                    let lookup = make();
                    let id = self.next.fetch_add(1, Ordering::Relaxed);
                    let done = Done {
                        map: Arc::clone(&self.inflight),
                        key: Some(key.clone()),
                        id,
                    };
                    // The task cannot remove its entry before it is
                    // inserted: removal takes the lock held here.
                    // Detached, not tracked: every waiter awaits it, and a
                    // lookup left without waiters is a bounded read.
                    let task = crate::tasks::detached(async move {
                        let _done = done;
                        lookup.await.map_err(Arc::new)
                    });
                    let running = async move {
                        task.await
                            .unwrap_or_else(|_| Err(Arc::new(E::from(Interrupted))))
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key, (id, running.clone()));
                    running
                }
            }
        };
        running.await
    }

    /// Forgets every lookup in flight: the next caller starts a new one.
    /// Used when cached answers are invalidated, so that no request that
    /// arrives after a change joins a lookup that read the old state.
    pub fn forget_all(&self) {
        lock(&self.inflight).clear();
    }

    /// Lookups in flight (for tests).
    pub fn len(&self) -> usize {
        lock(&self.inflight).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests spawn concurrent callers.
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[derive(Debug, PartialEq)]
    struct Died;

    impl From<Interrupted> for Died {
        fn from(_: Interrupted) -> Self {
            Died
        }
    }

    type Flight = SingleFlight<&'static str, u32, Died>;

    #[tokio::test]
    async fn concurrent_callers_share_one_lookup() {
        let flight: Arc<Flight> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let flight = flight.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                flight
                    .run("k", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(7)
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.ok(), Some(Ok(7)));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Finished lookups are forgotten: the next miss queries again.
        assert!(flight.is_empty());
        assert_eq!(flight.run("k", || async { Ok(8) }).await, Ok(8));
    }

    #[tokio::test]
    async fn a_lookup_whose_callers_left_still_finishes_and_is_removed() {
        let flight: Arc<Flight> = Arc::default();
        let finished = Arc::new(AtomicUsize::new(0));
        let seen = finished.clone();
        let caller = {
            let flight = flight.clone();
            tokio::spawn(async move {
                flight
                    .run("k", || async move {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        seen.fetch_add(1, Ordering::SeqCst);
                        Ok(1)
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        caller.abort();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        assert!(flight.is_empty());
    }

    #[tokio::test]
    #[allow(clippy::panic)]
    async fn a_panicking_lookup_answers_interrupted_and_is_removed() {
        let flight: Flight = SingleFlight::default();
        let answer = flight
            .run("k", || async {
                if always() {
                    panic!("lookup failed");
                }
                Ok(1)
            })
            .await;
        assert_eq!(answer, Err(Arc::new(Died)));
        assert!(flight.is_empty());
        assert_eq!(flight.run("k", || async { Ok(2) }).await, Ok(2));
    }

    fn always() -> bool {
        true
    }

    #[tokio::test]
    async fn forget_all_starts_a_new_lookup() {
        let flight: Arc<Flight> = Arc::default();
        let slow = {
            let flight = flight.clone();
            tokio::spawn(async move {
                flight
                    .run("k", || async {
                        tokio::time::sleep(Duration::from_millis(40)).await;
                        Ok(1)
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        flight.forget_all();
        assert_eq!(flight.run("k", || async { Ok(2) }).await, Ok(2));
        assert_eq!(slow.await.ok(), Some(Ok(1)));
        // The old lookup's end did not remove a newer entry, and none is left.
        assert!(flight.is_empty());
    }
}
