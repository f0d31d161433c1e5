//! Background work, tracked. Bare `tokio::spawn` is banned by `clippy.toml`:
//! a task whose end nobody waits for can lose a settlement or a ledger row
//! at shutdown. [`Tasks::spawn`] tracks the task so shutdown waits for it;
//! [`detached`] is for the few tasks whose handle is awaited by their owner
//! (each call says why it is not tracked). A tracked task runs inside the
//! span that spawned it, so its log lines carry the request's fields.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// The tracked tasks of one gateway: shutdown closes and waits for them.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    /// Cancelled by [`Tasks::close`]: a task that could run long (a drained
    /// stream) ends early on it.
    stopping: CancellationToken,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Resolves once shutdown has closed the tasks: long tasks finish up.
    pub async fn stopping(&self) {
        self.stopping.cancelled().await;
    }

    /// Runs `future` on the runtime; shutdown waits for it to end.
    #[allow(clippy::disallowed_methods)] // The one tracked spawn.
    pub fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(future.in_current_span());
    }

    /// Like [`Tasks::spawn`], from code that may run outside a runtime (a
    /// `Drop` during shutdown): then nothing can run the future, and it is
    /// dropped. Returns whether it was started.
    #[allow(clippy::disallowed_methods)] // The one tracked spawn on a handle.
    pub fn spawn_if_running<F>(&self, future: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(self.tracker.track_future(future.in_current_span()));
                true
            }
            Err(_) => false,
        }
    }

    /// No new tasks are expected; [`Tasks::wait`] can end.
    pub fn close(&self) {
        self.stopping.cancel();
        self.tracker.close();
    }

    /// Waits until every tracked task has ended (after [`Tasks::close`]).
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }
}

/// Runs `future` on its own task, untracked: for a task whose owner keeps
/// the handle and awaits it (or deliberately stops waiting on it). Every
/// caller says in a comment why the task is not a tracked one.
#[allow(clippy::disallowed_methods)] // The one untracked spawn; callers justify theirs.
pub fn detached<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future)
}

/// Runs a future inline; if it is dropped before the end (the client went
/// away), the rest of it moves onto a tracked task and still runs to the
/// end. Inline costs no task and no thread hop on the common path.
pub struct RunToEnd<T: Send + 'static> {
    future: Option<std::pin::Pin<Box<dyn Future<Output = T> + Send>>>,
    tasks: Tasks,
    /// What becomes of the output when nobody waits for it any more.
    leftover: Option<Leftover<T>>,
}

type Leftover<T> = Box<dyn FnOnce(T) + Send>;

impl<T: Send + 'static> RunToEnd<T> {
    pub fn new(tasks: &Tasks, future: impl Future<Output = T> + Send + 'static) -> Self {
        RunToEnd {
            future: Some(Box::pin(future)),
            tasks: tasks.clone(),
            leftover: None,
        }
    }

    /// As [`RunToEnd::new`]; when it ends after it was dropped, its output
    /// goes to `leftover` (which gives back what the output holds).
    pub fn with_leftover(
        tasks: &Tasks,
        future: impl Future<Output = T> + Send + 'static,
        leftover: impl FnOnce(T) + Send + 'static,
    ) -> Self {
        RunToEnd {
            future: Some(Box::pin(future)),
            tasks: tasks.clone(),
            leftover: Some(Box::new(leftover)),
        }
    }
}

impl<T: Send + 'static> Future for RunToEnd<T> {
    type Output = T;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        let Some(future) = self.future.as_mut() else {
            // Polled again after its end: nothing more will come.
            return std::task::Poll::Pending;
        };
        let polled = future.as_mut().poll(cx);
        if polled.is_ready() {
            self.future = None;
        }
        polled
    }
}

impl<T: Send + 'static> Drop for RunToEnd<T> {
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        let leftover = self.leftover.take();
        // Outside a runtime (it is shutting down) nothing can run it on.
        self.tasks.spawn_if_running(async move {
            let output = future.await;
            if let Some(leftover) = leftover {
                leftover(output);
            }
        });
    }
}

/// A worker that claims due work from the store under a lease (webhook
/// deliveries, mail): every `poll` (at once again after a full batch of
/// `batch`), `claim` takes what is due and `work` runs on each item, all
/// of a batch at once, until `stop`. A batch cut by the stop leaves its
/// leases to run out: the next claim takes the items again.
pub async fn claim_loop<T, E, C, CF, W, WF>(
    stop: CancellationToken,
    poll: std::time::Duration,
    batch: usize,
    what: &'static str,
    mut claim: C,
    work: W,
) where
    E: std::fmt::Display,
    C: FnMut() -> CF,
    CF: Future<Output = Result<Vec<T>, E>>,
    W: Fn(T) -> WF,
    WF: Future<Output = ()>,
{
    let mut full = false;
    loop {
        if !full {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(poll) => {}
            }
        }
        let due = match claim().await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, what, "Due work not claimed; trying again.");
                full = false;
                continue;
            }
        };
        full = due.len() == batch;
        if due.is_empty() {
            continue;
        }
        let runs = due.into_iter().map(&work);
        tokio::select! {
            () = stop.cancelled() => return,
            _ = futures_util::future::join_all(runs) => {}
        }
    }
}
