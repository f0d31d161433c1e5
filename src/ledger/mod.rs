//! The ledger writer: attribution rows reach the store off the request path,
//! and none is lost.
//!
//! Settlement hands a [`UsageRow`] to [`LedgerSender::record`], which never
//! waits: a full queue hands the row to a tracked task that waits for room,
//! and admission refuses new requests (503) while the queue is full, so the
//! rows in memory are bounded by the capacity plus the requests in flight.
//!
//! One writer task batches rows (by `batch_size` or `flush_interval_ms`)
//! into inserts that skip request ids already stored, so a repeated batch
//! never counts twice. When the database refuses a batch or does not answer
//! within `write_timeout_ms`, the batch goes to the [`spool`] (fsync'd)
//! and so does every later batch, in order, until a replay has moved the
//! whole spool into the database. If even the spool cannot be written, the
//! gateway refuses new requests (fail closed) and keeps the rows in memory,
//! retrying. On shutdown the writer drains the queue (into the database, or
//! the spool); a spool left behind is replayed on the next start.
//!
//! What is not covered: rows still in the in-memory queue when the process
//! is killed (SIGKILL, power loss). They spend one flush interval there
//! (50 ms by default) while the database answers.

pub mod spool;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::spool::Spool;
use crate::accounts;
use crate::config::LedgerConfig;
use crate::counters::Counters;
use crate::store::{Store, UsageRow};

/// Counts shared with `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct LedgerStats {
    pub queued: AtomicU64,
    pub written: AtomicU64,
    pub spooled: AtomicU64,
    pub replayed: AtomicU64,
    pub failed_batches: AtomicU64,
    /// The writer sends batches to the spool (the database is away).
    pub spooling: AtomicBool,
    /// The spool could not be written: new requests are refused.
    pub spool_failed: AtomicBool,
}

impl LedgerStats {
    /// Rows in memory, not yet in the database or the spool.
    pub fn depth(&self) -> u64 {
        self.queued.load(Ordering::Relaxed).saturating_sub(
            self.written.load(Ordering::Relaxed) + self.spooled.load(Ordering::Relaxed),
        )
    }

    /// Rows in the spool, not yet replayed.
    pub fn spool_rows(&self) -> u64 {
        self.spooled
            .load(Ordering::Relaxed)
            .saturating_sub(self.replayed.load(Ordering::Relaxed))
    }
}

/// The request path's handle on the ledger.
#[derive(Clone)]
pub struct LedgerSender {
    tx: mpsc::Sender<UsageRow>,
    capacity: u64,
    tasks: TaskTracker,
    spool_dir: PathBuf,
    pub stats: Arc<LedgerStats>,
}

impl LedgerSender {
    /// Whether new requests must be refused: rows wait beyond the queue's
    /// capacity, or the spool cannot be written (money that could not be
    /// recorded is not spent).
    pub fn is_saturated(&self) -> bool {
        self.stats.depth() >= self.capacity || self.stats.spool_failed.load(Ordering::Relaxed)
    }

    /// Bytes waiting in the spool.
    pub fn spool_bytes(&self) -> u64 {
        Spool::open(&self.spool_dir).map_or(0, |s| s.size_bytes())
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

/// Why the ledger could not start.
#[derive(Debug, thiserror::Error)]
#[error("ledger spool at {path}: {source}")]
pub struct SpoolError {
    path: String,
    source: std::io::Error,
}

/// Starts the writer; returns the sender and the writer's join handle.
pub fn start(
    store: Store,
    counters: Arc<Counters>,
    config: &LedgerConfig,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> Result<(LedgerSender, tokio::task::JoinHandle<()>), SpoolError> {
    let spool_dir = PathBuf::from(&config.spool_dir);
    let spool = Spool::open(&spool_dir).map_err(|source| SpoolError {
        path: config.spool_dir.clone(),
        source,
    })?;
    let (tx, rx) = mpsc::channel(config.queue_capacity);
    let stats = Arc::new(LedgerStats::default());
    let spooling = !spool.is_empty();
    stats.spooling.store(spooling, Ordering::Relaxed);
    let sender = LedgerSender {
        tx,
        capacity: config.queue_capacity as u64,
        tasks,
        spool_dir,
        stats: stats.clone(),
    };
    let writer = Writer {
        store,
        counters,
        batch_size: config.batch_size,
        flush_interval: Duration::from_millis(config.flush_interval_ms.max(1)),
        write_timeout: Duration::from_millis(config.write_timeout_ms.max(1)),
        replay_interval: Duration::from_millis(config.replay_interval_ms.max(1)),
        stats,
        spool: Arc::new(Mutex::new(spool)),
        spooling,
    };
    let handle = tokio::spawn(writer.run(rx, shutdown));
    Ok((sender, handle))
}

struct Writer {
    store: Store,
    counters: Arc<Counters>,
    batch_size: usize,
    flush_interval: Duration,
    write_timeout: Duration,
    replay_interval: Duration,
    stats: Arc<LedgerStats>,
    spool: Arc<Mutex<Spool>>,
    spooling: bool,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<UsageRow>, shutdown: CancellationToken) {
        let mut batch: Vec<UsageRow> = Vec::with_capacity(self.batch_size);
        let mut next_replay = tokio::time::Instant::now();
        loop {
            // Wait for a first row, a replay tick (while spooling), or shutdown.
            let first = tokio::select! {
                row = rx.recv() => row,
                () = shutdown.cancelled() => None,
                () = tokio::time::sleep_until(next_replay), if self.spooling => {
                    self.replay().await;
                    next_replay = tokio::time::Instant::now() + self.replay_interval;
                    continue;
                }
            };
            let Some(first) = first else { break };
            batch.push(first);
            // Take what is queued; if that is not a full batch, sleep once
            // until the flush deadline and take what came meanwhile. Waiting
            // on the queue instead woke this task (and armed a timer) for
            // every row: one cross-thread wake-up per request.
            self.take_queued(&mut rx, &mut batch);
            if batch.len() < self.batch_size {
                tokio::select! {
                    () = tokio::time::sleep(self.flush_interval) => {}
                    () = shutdown.cancelled() => {}
                }
                self.take_queued(&mut rx, &mut batch);
            }
            self.write(&mut batch).await;
        }
        // Drain: everything still queued goes to the database or the spool.
        rx.close();
        while let Some(row) = rx.recv().await {
            batch.push(row);
            if batch.len() >= self.batch_size {
                self.write(&mut batch).await;
            }
        }
        self.write(&mut batch).await;
        if self.spooling {
            self.replay().await;
        }
    }

    /// Moves queued rows into `batch`, up to a full batch, without waiting.
    fn take_queued(&self, rx: &mut mpsc::Receiver<UsageRow>, batch: &mut Vec<UsageRow>) {
        while batch.len() < self.batch_size {
            match rx.try_recv() {
                Ok(row) => batch.push(row),
                Err(_) => break,
            }
        }
    }

    /// Stores a batch in the database, else in the spool; never drops it.
    async fn write(&mut self, batch: &mut Vec<UsageRow>) {
        if batch.is_empty() {
            return;
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            if !self.spooling {
                if self.store_rows(batch).await {
                    self.stats
                        .written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                    return;
                }
                self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                self.spooling = true;
                self.stats.spooling.store(true, Ordering::Relaxed);
            }
            match self.append_to_spool(batch).await {
                Ok(()) => {
                    self.stats
                        .spooled
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    self.stats.spool_failed.store(false, Ordering::Relaxed);
                    batch.clear();
                    return;
                }
                Err(error) => {
                    // Neither the database nor the disk: keep the rows, refuse
                    // new requests, and try both again.
                    tracing::error!(rows = batch.len(), %error, "Spool write failed; refusing new requests.");
                    self.stats.spool_failed.store(true, Ordering::Relaxed);
                    self.spooling = false;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Writes rows to the database. The write runs on its own task and is
    /// never cancelled mid-transaction (that could leave its counter locks
    /// held); past `write_timeout` the writer stops waiting and treats the
    /// batch as failed. If the write then completes anyway, the rows' later
    /// replay finds them stored and changes nothing.
    async fn store_rows(&self, rows: &[UsageRow]) -> bool {
        let store = self.store.clone();
        let counters = self.counters.clone();
        let rows = rows.to_vec();
        let count = rows.len();
        let write =
            tokio::spawn(async move { accounts::write_rows(&store, &counters, &rows).await });
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(Ok(Ok(_))) => true,
            Ok(Ok(Err(error))) => {
                tracing::warn!(rows = count, %error, "Ledger batch failed; spooling.");
                false
            }
            Ok(Err(error)) => {
                tracing::error!(rows = count, %error, "Ledger write task failed; spooling.");
                false
            }
            Err(_) => {
                tracing::warn!(rows = count, "Ledger batch timed out; spooling.");
                false
            }
        }
    }

    async fn append_to_spool(&self, batch: &[UsageRow]) -> std::io::Result<()> {
        let spool = self.spool.clone();
        let rows = batch.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut spool = spool
                .lock()
                .map_err(|_| std::io::Error::other("spool lock poisoned"))?;
            spool.append(&rows)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Moves the spool into the database, oldest first. Stops at the first
    /// failure; a replay file is deleted only when all its rows are stored.
    async fn replay(&mut self) {
        let spool = self.spool.clone();
        let files = tokio::task::spawn_blocking(move || {
            spool
                .lock()
                .map_err(|_| std::io::Error::other("spool lock poisoned"))
                .and_then(|mut s| s.take_for_replay())
        })
        .await;
        let files = match files {
            Ok(Ok(files)) => files,
            Ok(Err(error)) => {
                tracing::error!(%error, "Spool cannot be read.");
                return;
            }
            Err(error) => {
                tracing::error!(%error, "Spool replay task failed.");
                return;
            }
        };
        for file in files {
            let records = match spool::read_records(&file) {
                Ok(records) => records,
                Err(error) => {
                    tracing::error!(file = %file.display(), %error, "Spool file cannot be read.");
                    return;
                }
            };
            for rows in &records {
                if !self.store_rows(rows).await {
                    return;
                }
            }
            let rows: u64 = records.iter().map(|r| r.len() as u64).sum();
            if let Err(error) = std::fs::remove_file(&file) {
                tracing::error!(file = %file.display(), %error, "Replayed spool file not removed.");
                return;
            }
            self.stats.replayed.fetch_add(rows, Ordering::Relaxed);
            tracing::info!(rows, "Spooled ledger rows replayed.");
        }
        let spool_empty = self.spool.lock().map(|s| s.is_empty()).unwrap_or(false);
        if spool_empty {
            self.spooling = false;
            self.stats.spooling.store(false, Ordering::Relaxed);
        }
    }
}
