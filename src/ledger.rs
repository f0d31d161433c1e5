//! The ledger writer: attribution rows reach the store off the request path.
//!
//! Settlement hands a [`UsageRow`] to [`LedgerSender::record`], which never
//! waits: a full queue hands the row to a tracked task that waits for room,
//! and admission refuses new requests (503) while the queue is full, so the
//! rows in memory are bounded by the capacity plus the requests in flight.
//! One writer task batches rows (by `batch_size` or `flush_interval_ms`,
//! whichever comes first) into multi-row inserts that skip request ids
//! already stored, so a retried batch never counts twice. A failed batch is
//! retried with backoff and never dropped. On shutdown the writer drains the
//! queue before it returns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::LedgerConfig;
use crate::store::{Store, UsageRow};

/// Counts shared with `/metrics`.
#[derive(Debug, Default)]
pub struct LedgerStats {
    pub queued: AtomicU64,
    pub written: AtomicU64,
    pub failed_batches: AtomicU64,
}

impl LedgerStats {
    pub fn depth(&self) -> u64 {
        self.queued
            .load(Ordering::Relaxed)
            .saturating_sub(self.written.load(Ordering::Relaxed))
    }
}

/// The request path's handle on the ledger.
#[derive(Clone)]
pub struct LedgerSender {
    tx: mpsc::Sender<UsageRow>,
    capacity: u64,
    tasks: TaskTracker,
    pub stats: Arc<LedgerStats>,
}

impl LedgerSender {
    /// Whether rows wait beyond the queue's capacity. Admission refuses new
    /// requests then (fail closed), which bounds the memory rows can take.
    pub fn is_saturated(&self) -> bool {
        self.stats.depth() >= self.capacity
    }

    /// Queues a row without waiting.
    pub fn record(&self, row: UsageRow) {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(row) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(row)) => {
                let tx = self.tx.clone();
                self.tasks.spawn(async move {
                    if let Err(error) = tx.send(row).await {
                        tracing::error!(request_id = %error.0.request_id, "Ledger closed; usage row not recorded.");
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(row)) => {
                tracing::error!(request_id = %row.request_id, "Ledger closed; usage row not recorded.");
            }
        }
    }
}

/// Starts the writer; returns the sender and the writer's join handle.
pub fn start(
    store: Store,
    config: &LedgerConfig,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> (LedgerSender, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(config.queue_capacity);
    let stats = Arc::new(LedgerStats::default());
    let sender = LedgerSender {
        tx,
        capacity: config.queue_capacity as u64,
        tasks,
        stats: stats.clone(),
    };
    let writer = Writer {
        store,
        batch_size: config.batch_size,
        flush_interval: Duration::from_millis(config.flush_interval_ms.max(1)),
        stats,
    };
    let handle = tokio::spawn(writer.run(rx, shutdown));
    (sender, handle)
}

struct Writer {
    store: Store,
    batch_size: usize,
    flush_interval: Duration,
    stats: Arc<LedgerStats>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<UsageRow>, shutdown: CancellationToken) {
        let mut batch: Vec<UsageRow> = Vec::with_capacity(self.batch_size);
        loop {
            // Wait for a first row, or shutdown.
            let first = tokio::select! {
                row = rx.recv() => row,
                () = shutdown.cancelled() => None,
            };
            let Some(first) = first else { break };
            batch.push(first);
            let deadline = tokio::time::Instant::now() + self.flush_interval;
            while batch.len() < self.batch_size {
                match rx.try_recv() {
                    Ok(row) => batch.push(row),
                    Err(_) => {
                        tokio::select! {
                            row = rx.recv() => match row {
                                Some(row) => batch.push(row),
                                None => break,
                            },
                            () = tokio::time::sleep_until(deadline) => break,
                            () = shutdown.cancelled() => break,
                        }
                    }
                }
            }
            self.write(&mut batch).await;
        }
        // Drain: everything still queued is written before we return.
        rx.close();
        while let Some(row) = rx.recv().await {
            batch.push(row);
            if batch.len() >= self.batch_size {
                self.write(&mut batch).await;
            }
        }
        self.write(&mut batch).await;
    }

    /// Writes a batch, retrying until it is stored.
    async fn write(&self, batch: &mut Vec<UsageRow>) {
        if batch.is_empty() {
            return;
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.store.insert_usage_rows(batch).await {
                Ok(_) => {
                    self.stats
                        .written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                    return;
                }
                Err(error) => {
                    self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(rows = batch.len(), %error, "Ledger batch failed; retrying.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
