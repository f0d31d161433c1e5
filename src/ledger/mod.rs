//! The ledger writer: attribution rows reach the store off the request path,
//! and none is lost.
//!
//! Settlement hands an [`Entry`] to [`LedgerSender::record`], which never
//! waits: a full queue hands the row to a tracked task that waits for room,
//! and admission refuses new requests (503) while the queue is full, so the
//! rows in memory are bounded by the capacity plus the requests in flight.
//!
//! One writer task batches rows (by `batch_size` or `flush_interval_ms`),
//! appends each batch to the [`spool`] with one fsync (a write-ahead log),
//! and then inserts it, skipping request ids already stored, so a repeated
//! batch never counts twice. When the database refuses a batch or does not
//! answer within `write_timeout_ms`, that batch and every later one wait
//! in the spool, in order, until a replay has moved the whole spool into
//! the database. If the spool cannot be written, the database alone keeps
//! the batch if it can; else the gateway refuses new requests (fail closed)
//! and keeps the rows in memory, retrying. On shutdown the writer drains
//! the queue; a spool left behind is replayed on the next start.
//!
//! What is not covered: rows still in the in-memory queue when the process
//! is killed (SIGKILL, power loss): at most one flush interval (50 ms by
//! default) of settled rows, plus the time of one fsync.

mod alerts;
mod entry;
pub mod import;
mod owed;
mod rows;
mod settle;
pub mod spool;
mod writer;

pub use self::entry::Entry;
pub use self::rows::DeadLetter;
pub use self::settle::Settler;
pub use self::writer::write_rows;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::spool::Spool;
use self::writer::Writer;
use crate::config::LedgerConfig;
use crate::counters::Counters;
use crate::store::Store;
use crate::tasks::{self, Tasks};

/// Counts shared with `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct LedgerStats {
    /// Rows handed to the ledger.
    pub queued: AtomicU64,
    /// Rows stored in the database (directly or by replay).
    pub written: AtomicU64,
    /// Rows made durable in the spool (every row passes through it; rows
    /// found there at start count too).
    pub spooled: AtomicU64,
    /// Rows stored by replaying the spool.
    pub replayed: AtomicU64,
    /// Rows durable in the spool that the database does not have yet (a
    /// gauge kept by the writer; `written` may count a row twice).
    pub unstored: AtomicU64,
    /// Rows the database rejected, set aside as dead letters (this process).
    pub set_aside: AtomicU64,
    pub failed_batches: AtomicU64,
    /// The writer sends batches to the spool (the database is away).
    pub spooling: AtomicBool,
    /// The spool could not be written: new requests are refused.
    pub spool_failed: AtomicBool,
}

impl LedgerStats {
    /// Rows in memory, not yet durable in the spool.
    pub fn depth(&self) -> u64 {
        // `spooled` first: read after `queued`, a row spooled in between
        // would make the difference read low.
        let spooled = self.spooled.load(Ordering::Acquire);
        self.queued.load(Ordering::Acquire).saturating_sub(spooled)
    }

    /// Rows durable in the spool, not yet in the database.
    pub fn spool_rows(&self) -> u64 {
        self.unstored.load(Ordering::Acquire)
    }
}

/// The request path's handle on the ledger.
#[derive(Clone)]
pub struct LedgerSender {
    tx: mpsc::Sender<Entry>,
    capacity: u64,
    tasks: Tasks,
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

    /// Whether the database is behind the spool (rows wait there for it).
    pub fn is_behind(&self) -> bool {
        self.stats.spooling.load(Ordering::Relaxed)
    }

    /// Bytes waiting in the spool.
    pub fn spool_bytes(&self) -> u64 {
        Spool::open(&self.spool_dir).map_or(0, |s| s.size_bytes())
    }

    /// Queues a row without waiting.
    pub fn record(&self, row: Entry) {
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
    tasks: Tasks,
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
    if spooling {
        let left = spool::count_rows(&spool_dir);
        stats.spooled.store(left, Ordering::Relaxed);
        stats.queued.store(left, Ordering::Relaxed);
        stats.unstored.store(left, Ordering::Relaxed);
    }
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
    // Detached, not tracked: shutdown awaits this handle after the tracked
    // tasks (which may still queue rows) have ended.
    let handle = tasks::detached(writer.run(rx, shutdown));
    Ok((sender, handle))
}
