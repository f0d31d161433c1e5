//! Per-core serving (`server.per_core`): one single-threaded runtime per
//! core, each on a thread of its own, serving the connections the accept
//! loop hands it. What a request touches on its way (its connection, its
//! upstream pool, the tasks it spawns) lives on its core, so a request
//! wakes no other thread and no task is stolen half-way.
//!
//! A core keeps its runtime after its connections end, until the gateway
//! releases it: settlements and drains spawned there must still run while
//! shutdown waits for them.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

thread_local! {
    static CORE: Cell<Option<usize>> = const { Cell::new(None) };
    static BOOK: RefCell<Book> = RefCell::new(Book::default());
}

/// How often a core looks at its booked deadlines.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Deadlines of the futures waiting on this core that need no precision
/// finer than [`SWEEP_EVERY`] (a connection's head and idle deadlines),
/// checked by one sweep task instead of one runtime timer each: registering
/// a timer due before every other one wakes the runtime's driver, a system
/// call per request on a single-threaded core.
#[derive(Default)]
struct Book {
    entries: Vec<Option<(Instant, Waker)>>,
    free: Vec<usize>,
    booked: usize,
    sweeping: bool,
}

/// A future's place in its core's [`Book`].
#[derive(Debug)]
pub struct Booked {
    slot: usize,
    core: usize,
}

/// Books (or moves) a wake-up of `waker` once `deadline` has passed, on
/// this core. `false` off a serving core: the caller uses a timer.
pub fn book(place: &mut Option<Booked>, deadline: Instant, waker: &Waker) -> bool {
    let Some(core) = current() else {
        return false;
    };
    let start_sweep = BOOK.with(|book| {
        let mut book = book.borrow_mut();
        let entry = Some((deadline, waker.clone()));
        match place {
            Some(booked) if booked.core == core && booked.slot < book.entries.len() => {
                if book.entries[booked.slot].is_none() {
                    book.booked += 1;
                }
                book.entries[booked.slot] = entry;
            }
            _ => {
                let slot = match book.free.pop() {
                    Some(slot) => {
                        book.entries[slot] = entry;
                        slot
                    }
                    None => {
                        book.entries.push(entry);
                        book.entries.len() - 1
                    }
                };
                book.booked += 1;
                *place = Some(Booked { slot, core });
            }
        }
        !std::mem::replace(&mut book.sweeping, true)
    });
    if start_sweep {
        // Detached, not tracked: it only wakes futures and ends once the
        // book is empty; it runs on this core.
        drop(crate::tasks::detached(sweep()));
    }
    true
}

/// Gives a place back (the future was dropped or is done).
pub fn unbook(place: &mut Option<Booked>) {
    let Some(booked) = place.take() else { return };
    if current() != Some(booked.core) {
        // Dropped on another thread (not on the serving path): the entry
        // stays until its deadline passes and the sweep clears it.
        return;
    }
    BOOK.with(|book| {
        let mut book = book.borrow_mut();
        if let Some(entry) = book.entries.get_mut(booked.slot) {
            if entry.take().is_some() {
                book.booked -= 1;
            }
            book.free.push(booked.slot);
        }
    });
}

/// Wakes the futures whose deadline has passed, every [`SWEEP_EVERY`],
/// until none is booked. A woken future that still waits books again.
async fn sweep() {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let now = Instant::now();
        let due: Vec<Waker> = BOOK.with(|book| {
            let mut book = book.borrow_mut();
            let mut due = Vec::new();
            for entry in book.entries.iter_mut() {
                if entry.as_ref().is_some_and(|(deadline, _)| *deadline <= now) {
                    if let Some((_, waker)) = entry.take() {
                        due.push(waker);
                    }
                }
            }
            book.booked -= due.len();
            if book.booked == 0 {
                book.sweeping = false;
            }
            due
        });
        let done = BOOK.with(|book| !book.borrow().sweeping);
        for waker in due {
            waker.wake();
        }
        if done {
            return;
        }
    }
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
                        // A panic in the serving future (a bug) still lets
                        // the tasks spawned here run until release.
                        let served = std::panic::AssertUnwindSafe(serve(core_load)).catch_unwind();
                        if served.await.is_err() {
                            tracing::error!(core = index, "A serving core's loop panicked.");
                        }
                        let _ = served_tx.send(());
                        release.cancelled().await;
                    });
                    // Every tracked task has ended by now; a blocking job
                    // still running (a DNS lookup, say) is not waited for
                    // longer than this.
                    runtime.shutdown_timeout(Duration::from_secs(1));
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

    /// A future that ends at `at`, booked with its core's sweep.
    struct Until {
        at: Instant,
        place: Option<Booked>,
    }

    impl std::future::Future for Until {
        type Output = ();

        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<()> {
            if Instant::now() >= self.at {
                unbook(&mut self.place);
                return std::task::Poll::Ready(());
            }
            let at = self.at;
            assert!(book(&mut self.place, at, cx.waker()));
            std::task::Poll::Pending
        }
    }

    impl Drop for Until {
        fn drop(&mut self) {
            unbook(&mut self.place);
        }
    }

    #[test]
    fn booked_deadlines_wake_their_futures_and_free_their_places() {
        let outer = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        outer.block_on(async {
            // Off a core nothing is booked.
            let waker = std::task::Waker::noop();
            assert!(!book(&mut None, Instant::now(), waker));
            let release = CancellationToken::new();
            let (done_tx, done) = oneshot::channel();
            let core = build(1).unwrap().pop().unwrap();
            let running = core
                .start(release.clone(), move |_| async move {
                    let start = Instant::now();
                    let short = Until {
                        at: start + Duration::from_millis(150),
                        place: None,
                    };
                    // A long one dropped early gives its place back.
                    let long = Until {
                        at: start + Duration::from_secs(3600),
                        place: None,
                    };
                    let mut long = Box::pin(long);
                    let _ = futures_util::poll!(long.as_mut());
                    drop(long);
                    short.await;
                    let waited = start.elapsed();
                    let left = BOOK.with(|book| book.borrow().booked);
                    let _ = done_tx.send((waited, left));
                })
                .unwrap();
            let (waited, left) = done.await.unwrap();
            assert!(waited >= Duration::from_millis(150), "{waited:?}");
            assert_eq!(left, 0);
            release.cancel();
            running.ended().await;
        });
    }

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
