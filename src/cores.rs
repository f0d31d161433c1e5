//! Per-core serving (`server.per_core`): one single-threaded runtime per
//! core, each on a thread of its own, serving the connections the accept
//! loop hands it. What a request touches on its way (its connection, its
//! upstream pool, the tasks it spawns) lives on its core, so a request
//! wakes no other thread and no task is stolen half-way.
//!
//! A core keeps its runtime after its connections end, until the gateway
//! releases it: settlements and drains spawned there must still run while
//! shutdown waits for them.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

thread_local! {
    static CORE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The serving core this thread is, if it is one.
pub fn current() -> Option<usize> {
    CORE.with(Cell::get)
}

/// How many cores serve when `per_core` is on: `worker_threads`, else one
/// per CPU core.
pub fn count(worker_threads: usize) -> usize {
    if worker_threads > 0 {
        return worker_threads;
    }
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A core's runtime, built at start (so a failure is a start error), not
/// yet running.
pub struct Idle {
    index: usize,
    /// Taken when the core starts.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Idle {
    /// A core that never started (the gateway was built and dropped, or
    /// its thread could not start) lets its runtime go without blocking:
    /// this may run inside another runtime.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Builds `count` single-threaded runtimes.
pub fn build(count: usize) -> std::io::Result<Vec<Idle>> {
    (0..count)
        .map(|index| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(Idle {
                index,
                runtime: Some(runtime),
            })
        })
        .collect()
}

/// A running core.
pub struct Running {
    /// Open connections on this core (the accept loop picks the least
    /// loaded).
    pub load: Arc<AtomicUsize>,
    /// Resolves when the core's serving future has ended.
    served: oneshot::Receiver<()>,
    /// Resolves when the core's runtime is gone (after release).
    ended: oneshot::Receiver<()>,
}

impl Idle {
    /// Runs `serve` on this core's thread. The runtime stays up after it
    /// ends until `release` is cancelled.
    pub fn start<F>(
        self,
        release: CancellationToken,
        serve: impl FnOnce(Arc<AtomicUsize>) -> F + Send + 'static,
    ) -> std::io::Result<Running>
    where
        F: std::future::Future<Output = ()> + 'static,
    {
        let load = Arc::new(AtomicUsize::new(0));
        let (served_tx, served) = oneshot::channel();
        let (ended_tx, ended) = oneshot::channel();
        let core_load = load.clone();
        let index = self.index;
        // If the thread cannot start, the closure and this core with it are
        // dropped (without blocking, see `Drop`).
        let mut idle = self;
        std::thread::Builder::new()
            .name(format!("tollgate-core-{index}"))
            .spawn(move || {
                CORE.with(|core| core.set(Some(index)));
                if let Some(runtime) = idle.runtime.take() {
                    runtime.block_on(async move {
                        serve(core_load).await;
                        let _ = served_tx.send(());
                        release.cancelled().await;
                    });
                    // Outside any runtime here: its tasks are dropped now.
                    drop(runtime);
                }
                let _ = ended_tx.send(());
            })?;
        Ok(Running {
            load,
            served,
            ended,
        })
    }
}

impl Running {
    /// Waits until the core's serving future has ended.
    pub async fn served(&mut self) {
        let _ = (&mut self.served).await;
    }

    /// Waits until the core's runtime is gone (call after release).
    pub async fn ended(self) {
        let _ = self.ended.await;
    }
}

/// The least loaded of `loads`, ties going round from `turn`.
pub fn least_loaded(loads: &[Arc<AtomicUsize>], turn: usize) -> usize {
    let n = loads.len().max(1);
    (0..loads.len())
        .map(|k| (turn + k) % n)
        .min_by_key(|&i| loads[i].load(Ordering::Relaxed))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_loaded_core_is_picked_and_ties_go_round() {
        let loads: Vec<_> = [3, 1, 1, 2]
            .into_iter()
            .map(|n| Arc::new(AtomicUsize::new(n)))
            .collect();
        assert_eq!(least_loaded(&loads, 0), 1);
        assert_eq!(least_loaded(&loads, 2), 2);
        assert_eq!(least_loaded(&loads, 3), 1);
        assert_eq!(least_loaded(&[], 5), 0);
    }

    #[test]
    fn a_core_thread_knows_its_index_and_keeps_its_runtime_until_released() {
        let outer = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        outer.block_on(async {
            assert_eq!(current(), None);
            let release = CancellationToken::new();
            let (seen_tx, seen) = oneshot::channel();
            let (late_tx, late) = oneshot::channel::<usize>();
            let mut cores = build(2).unwrap();
            let core = cores.pop().unwrap();
            let mut running = core
                .start(release.clone(), move |_| async move {
                    let _ = seen_tx.send(current());
                    // A task spawned by the serving future outlives it.
                    #[allow(clippy::disallowed_methods)]
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        let _ = late_tx.send(current().unwrap_or(99));
                    });
                })
                .unwrap();
            assert_eq!(seen.await.unwrap(), Some(1));
            running.served().await;
            assert_eq!(late.await.unwrap(), 1);
            release.cancel();
            running.ended().await;
        });
    }
}
