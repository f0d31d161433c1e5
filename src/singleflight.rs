//! One lookup per key at a time: concurrent cache misses for the same key
//! share the first caller's database query instead of each sending their own.
//! Without it, every expiry of a hot key's 1 s cache entry sent one query
//! per request in flight (64 at 64 connections; 1,000 under a burst of new
//! streams, which then queued for seconds on a pool of four connections).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;

use futures_util::future::{BoxFuture, FutureExt, Shared};

pub struct SingleFlight<K, V: Clone> {
    inflight: Mutex<HashMap<K, Shared<BoxFuture<'static, V>>>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone + Send + Sync + 'static> SingleFlight<K, V> {
    /// Runs `make()` unless a lookup for `key` is already in flight, in which
    /// case it waits for that one. The lock is held only to find or insert
    /// the entry, never across an await. A lookup whose callers all went
    /// away is driven by the next caller.
    pub async fn run<F>(&self, key: K, make: impl FnOnce() -> F) -> V
    where
        F: Future<Output = V> + Send + 'static,
    {
        let shared = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get(&key) {
                Some(running) => running.clone(),
                None => {
                    let running = make().boxed().shared();
                    inflight.insert(key.clone(), running.clone());
                    running
                }
            }
        };
        let value = shared.clone().await;
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if inflight.get(&key).is_some_and(|r| r.ptr_eq(&shared)) {
            inflight.remove(&key);
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn concurrent_callers_share_one_lookup() {
        let flight: Arc<SingleFlight<&'static str, u32>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let flight = flight.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                flight
                    .run("k", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        7
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.ok(), Some(7));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Finished lookups are forgotten: the next miss queries again.
        let again = flight.run("k", || async { 8 }).await;
        assert_eq!(again, 8);
    }
}
