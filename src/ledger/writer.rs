//! The ledger writer: one task batches entries (by `batch_size` or
//! `flush_interval_ms`), appends each batch to the spool (one fsync) before
//! anything else, then inserts it idempotently; while the database is
//! behind, batches wait in the spool and are replayed in order.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::owed;
use super::spool::{self, Spool};
use super::{Entry, LedgerStats};
use crate::accounts::AccountsError;
use crate::corrections;
use crate::counters::{CounterKey, Counters};
use crate::store::{Store, StoreError};

pub(super) struct Writer {
    pub(super) store: Store,
    pub(super) counters: Arc<Counters>,
    pub(super) batch_size: usize,
    pub(super) flush_interval: Duration,
    pub(super) write_timeout: Duration,
    pub(super) replay_interval: Duration,
    pub(super) stats: Arc<LedgerStats>,
    pub(super) spool: Arc<Mutex<Spool>>,
    /// The database is behind the spool: new batches wait there for replay.
    pub(super) spooling: bool,
}

/// The current spool file is emptied past this size once every row in it
/// is stored.
const TRUNCATE_AFTER_BYTES: u64 = 4 * 1024 * 1024;

/// Most batches held in memory for the database; past it they wait in the
/// spool and a replay takes them.
const MAX_PENDING_BATCHES: usize = 64;

/// How often recorded counter corrections that were not applied at once
/// (Redis was away, or a process died in between) are looked for, and how
/// old one must be: younger ones are still being applied by their writer.
const CORRECTION_SWEEP: Duration = Duration::from_secs(5);
const CORRECTION_MIN_AGE_MS: i64 = 2_000;

/// The database side of the writer: what a store or a replay needs, on
/// its own task, so that the spool keeps taking batches meanwhile.
#[derive(Clone)]
struct Database {
    store: Store,
    counters: Arc<Counters>,
    write_timeout: Duration,
    stats: Arc<LedgerStats>,
    spool: Arc<Mutex<Spool>>,
}

/// What the writer is waiting on from the database.
enum InFlight {
    /// A batch being stored (its rows).
    Store(u64),
    /// The spool being replayed.
    Replay,
}

impl Writer {
    fn database(&self) -> Database {
        Database {
            store: self.store.clone(),
            counters: self.counters.clone(),
            write_timeout: self.write_timeout,
            stats: self.stats.clone(),
            spool: self.spool.clone(),
        }
    }

    /// Batches rows, makes each batch durable in the spool at once, and
    /// feeds the database from a second task: a slow or absent database
    /// never keeps a settled row in memory longer than a flush interval.
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Entry>, shutdown: CancellationToken) {
        let database = self.database();
        let mut batch: Vec<Entry> = Vec::with_capacity(self.batch_size);
        // Durable batches the database has yet to take, oldest first.
        let mut pending: VecDeque<Vec<Entry>> = VecDeque::new();
        let mut in_flight: Option<(InFlight, tokio::task::JoinHandle<bool>)> = None;
        // Batches appended while a replay runs: they may come after its
        // scan of the spool, so they are stored from memory once it ends.
        let mut during_replay: Vec<Vec<Entry>> = Vec::new();
        let mut flush_at: Option<tokio::time::Instant> = None;
        // A store ended since the spool's size was last looked at.
        let mut stored_since_check = false;
        let mut next_replay = tokio::time::Instant::now();
        // Corrections only exist for counters that can be rebuilt.
        let sweeps = self.counters.can_be_rebuilt();
        let mut sweeping: Option<tokio::task::JoinHandle<()>> = None;
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            let replay_due = self.spooling && in_flight.is_none();
            tokio::select! {
                // Between a batch's first row and its flush deadline the
                // queue is not watched: rows wait in it and are taken at the
                // deadline. Watching it woke this task for every row (one
                // cross-thread wake-up per request).
                row = rx.recv(), if flush_at.is_none() => {
                    let Some(row) = row else { break };
                    batch.push(row);
                    self.take_queued(&mut rx, &mut batch);
                    if batch.len() >= self.batch_size {
                        flush_at = None;
                        self.flush(&mut batch, &mut pending, &mut during_replay, &in_flight).await;
                    } else if flush_at.is_none() {
                        flush_at = Some(tokio::time::Instant::now() + self.flush_interval);
                    }
                }
                () = sleep_until_some(flush_at) => {
                    flush_at = None;
                    self.take_queued(&mut rx, &mut batch);
                    self.flush(&mut batch, &mut pending, &mut during_replay, &in_flight).await;
                }
                done = join_some(&mut in_flight) => {
                    let Some((what, _)) = in_flight.take() else { continue };
                    stored_since_check = true;
                    self.settle_in_flight(what, done, &mut pending, &mut during_replay, &mut next_replay);
                }
                () = tokio::time::sleep_until(next_replay), if replay_due => {
                    during_replay.clear();
                    let database = database.clone();
                    // Detached, not tracked: its handle is the in-flight
                    // operation this loop awaits (also at shutdown).
                    in_flight = Some((InFlight::Replay, crate::tasks::detached(async move { database.replay().await })));
                    continue;
                }
                () = tokio::time::sleep_until(next_sweep), if sweeps && sweeping.is_none() => {
                    let database = database.clone();
                    // Detached, not tracked: awaited by this loop; at
                    // shutdown left to end (each correction is idempotent).
                    sweeping = Some(crate::tasks::detached(async move { database.sweep_corrections().await }));
                    next_sweep = tokio::time::Instant::now() + CORRECTION_SWEEP;
                    continue;
                }
                _ = join_optional(&mut sweeping) => {
                    sweeping = None;
                    continue;
                }
                () = shutdown.cancelled() => break,
            }
            if in_flight.is_none() && !self.spooling {
                if let Some(next) = pending.pop_front() {
                    let rows = next.len() as u64;
                    let database = database.clone();
                    // Detached, not tracked: awaited by this loop.
                    in_flight = Some((
                        InFlight::Store(rows),
                        crate::tasks::detached(async move { database.store_rows(&next).await }),
                    ));
                } else if std::mem::take(&mut stored_since_check) {
                    self.truncate_if_large(false).await;
                }
            }
        }
        // Drain: everything still queued becomes durable, then goes to the
        // database while it answers.
        rx.close();
        while let Some(row) = rx.recv().await {
            batch.push(row);
        }
        self.flush(&mut batch, &mut pending, &mut during_replay, &in_flight)
            .await;
        if let Some((what, handle)) = in_flight.take() {
            let done = handle.await.unwrap_or(false);
            self.settle_in_flight(
                what,
                Ok(done),
                &mut pending,
                &mut during_replay,
                &mut next_replay,
            );
        }
        while !self.spooling {
            let Some(next) = pending.pop_front() else {
                break;
            };
            if database.store_rows(&next).await {
                self.stats
                    .written
                    .fetch_add(next.len() as u64, Ordering::Relaxed);
                self.stats
                    .unstored
                    .fetch_sub(next.len() as u64, Ordering::AcqRel);
            } else {
                self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                self.spooling = true;
                self.stats.spooling.store(true, Ordering::Relaxed);
            }
        }
        if self.spooling && database.replay().await {
            self.spooling = false;
            self.stats.spooling.store(false, Ordering::Relaxed);
            self.stats.unstored.store(0, Ordering::Release);
        }
        if !self.spooling {
            // Every row is stored: leave an empty spool, so the next start
            // has nothing to replay.
            self.truncate_if_large(true).await;
        }
    }

    /// What a finished database operation means for the writer.
    fn settle_in_flight(
        &mut self,
        what: InFlight,
        done: Result<bool, tokio::task::JoinError>,
        pending: &mut VecDeque<Vec<Entry>>,
        during_replay: &mut Vec<Vec<Entry>>,
        next_replay: &mut tokio::time::Instant,
    ) {
        let ok = done.unwrap_or(false);
        match what {
            InFlight::Store(rows) if ok => {
                self.stats.written.fetch_add(rows, Ordering::Relaxed);
                self.stats.unstored.fetch_sub(rows, Ordering::AcqRel);
            }
            InFlight::Store(_) => {
                // The database is away: this batch and those behind it wait
                // in the spool for the replay.
                self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                self.spooling = true;
                self.stats.spooling.store(true, Ordering::Relaxed);
                pending.clear();
                *next_replay = tokio::time::Instant::now() + self.replay_interval;
            }
            InFlight::Replay if ok => {
                // Caught up: what was appended while it ran (perhaps after
                // its scan) is stored from memory; a batch stored twice is
                // skipped the second time.
                self.spooling = false;
                self.stats.spooling.store(false, Ordering::Relaxed);
                pending.clear();
                pending.extend(during_replay.drain(..));
                // Everything else is stored now.
                let left: u64 = pending.iter().map(|b| b.len() as u64).sum();
                self.stats.unstored.store(left, Ordering::Release);
            }
            InFlight::Replay => {
                // Still away: those batches wait in the spool for the next.
                during_replay.clear();
                *next_replay = tokio::time::Instant::now() + self.replay_interval;
            }
        }
    }

    /// Moves queued rows into `batch`, up to a full batch, without waiting.
    fn take_queued(&self, rx: &mut mpsc::Receiver<Entry>, batch: &mut Vec<Entry>) {
        while batch.len() < self.batch_size {
            match rx.try_recv() {
                Ok(row) => batch.push(row),
                Err(_) => break,
            }
        }
    }

    /// Makes a batch durable in the spool, then hands it to the database
    /// side (unless the database is behind: then the replay takes it from
    /// the spool). Never drops it.
    async fn flush(
        &mut self,
        batch: &mut Vec<Entry>,
        pending: &mut VecDeque<Vec<Entry>>,
        during_replay: &mut Vec<Vec<Entry>>,
        in_flight: &Option<(InFlight, tokio::task::JoinHandle<bool>)>,
    ) {
        if batch.is_empty() {
            return;
        }
        let rows = batch.len() as u64;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.append_to_spool(batch).await {
                Ok(()) => {
                    self.stats.unstored.fetch_add(rows, Ordering::AcqRel);
                    self.stats.spooled.fetch_add(rows, Ordering::Release);
                    self.stats.spool_failed.store(false, Ordering::Relaxed);
                    break;
                }
                Err(error) => {
                    // The disk refuses: the database alone keeps the rows if
                    // it can; else keep them in memory, refuse new
                    // requests, and try both again.
                    tracing::error!(rows, %error, "Spool write failed; refusing new requests.");
                    self.stats.spool_failed.store(true, Ordering::Relaxed);
                    // Inserts are idempotent: order does not matter, so the
                    // database may take this batch whatever else is pending.
                    if self.database().store_rows(batch).await {
                        self.stats.spooled.fetch_add(rows, Ordering::Relaxed);
                        self.stats.written.fetch_add(rows, Ordering::Relaxed);
                        batch.clear();
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let full = std::mem::replace(batch, Vec::with_capacity(self.batch_size));
        if !self.spooling {
            pending.push_back(full);
            if pending.len() > MAX_PENDING_BATCHES {
                // The database keeps up too slowly: stop holding batches in
                // memory; they wait in the spool for the replay.
                tracing::warn!(
                    batches = pending.len(),
                    "Ledger database falls behind; replaying from the spool."
                );
                self.spooling = true;
                self.stats.spooling.store(true, Ordering::Relaxed);
                pending.clear();
            }
        } else if matches!(in_flight, Some((InFlight::Replay, _))) {
            during_replay.push(full);
        }
    }

    /// Empties the current spool file when every row in it is stored (the
    /// caller knows: nothing pending, nothing in flight, not behind), once
    /// it has grown, or always (`force`, at shutdown). A crash before this
    /// only means its rows are replayed, and skipped as stored, next start.
    async fn truncate_if_large(&self, force: bool) {
        let spool = self.spool.clone();
        let truncated = tokio::task::spawn_blocking(move || {
            let mut spool = spool
                .lock()
                .map_err(|_| std::io::Error::other("spool lock poisoned"))?;
            if force || spool.current_bytes() > TRUNCATE_AFTER_BYTES {
                spool.truncate_current()?;
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
        if let Ok(Err(error)) = truncated {
            tracing::warn!(%error, "Spool not truncated; it is replayed (idempotently) on the next start.");
        }
    }

    /// Appends `batch` to the spool on a blocking thread. The rows are
    /// lent to it, not copied (a row's strings were cloned per row before:
    /// 2% of the embedded gateway's CPU), and are back in `batch` whatever
    /// happens there.
    async fn append_to_spool(&self, batch: &mut Vec<Entry>) -> std::io::Result<()> {
        let spool = self.spool.clone();
        let rows = Arc::new(std::mem::take(batch));
        let lent = rows.clone();
        let appended = tokio::task::spawn_blocking(move || {
            let mut spool = spool
                .lock()
                .map_err(|_| std::io::Error::other("spool lock poisoned"))?;
            spool.append(&lent)
        })
        .await;
        // The blocking task has ended (or never ran): its share is gone.
        *batch = Arc::try_unwrap(rows).unwrap_or_else(|rows| rows.as_ref().clone());
        appended.map_err(std::io::Error::other)?
    }
}

/// Sleeps until the deadline, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The in-flight operation's end, or never without one.
async fn join_some(
    in_flight: &mut Option<(InFlight, tokio::task::JoinHandle<bool>)>,
) -> Result<bool, tokio::task::JoinError> {
    match in_flight {
        Some((_, handle)) => handle.await,
        None => std::future::pending().await,
    }
}

/// A task's end, or never without one.
async fn join_optional(
    task: &mut Option<tokio::task::JoinHandle<()>>,
) -> Result<(), tokio::task::JoinError> {
    match task {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

impl Database {
    /// Applies the counter corrections left behind (see `corrections.rs`).
    async fn sweep_corrections(&self) {
        let now = crate::clock::now_ms();
        let swept = tokio::time::timeout(
            self.write_timeout.max(Duration::from_secs(10)),
            corrections::apply_pending(&self.store, &self.counters, now, CORRECTION_MIN_AGE_MS),
        )
        .await;
        match swept {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::debug!(%error, "Counter corrections not looked for."),
            Err(_) => tracing::debug!("Looking for counter corrections timed out."),
        }
    }

    /// Stores rows; a batch the database rejects for its data is split, the
    /// rows it rejects alone are set aside (dead letters) and the others
    /// stored. False only when the database is unavailable.
    async fn store_rows(&self, rows: &[Entry]) -> bool {
        match self.try_store(rows).await {
            Stored::Yes => true,
            Stored::Unavailable => false,
            Stored::Rejected(reason) => {
                tracing::warn!(rows = rows.len(), %reason, "Ledger batch rejected; storing its rows one by one.");
                for row in rows {
                    match self.try_store(std::slice::from_ref(row)).await {
                        Stored::Yes => {}
                        Stored::Unavailable => return false,
                        Stored::Rejected(reason) => {
                            if !self.set_aside(row, &reason).await {
                                return false;
                            }
                        }
                    }
                }
                true
            }
        }
    }

    /// Puts a rejected row in the dead-letter table (else, when even that
    /// fails, in the spool directory's dead-letter file).
    async fn set_aside(&self, row: &Entry, reason: &str) -> bool {
        tracing::error!(request_id = %crate::domain::clean_label(row.request_id.as_str(), 64), %reason, "Ledger row rejected by the database; set aside.");
        let at = crate::clock::now_ms();
        let stored = tokio::time::timeout(
            self.write_timeout,
            self.store.insert_dead_letter(row, reason, at),
        )
        .await;
        let kept = match stored {
            Ok(Ok(())) => true,
            _ => {
                let spool = self.spool.clone();
                let (row, reason) = (row.clone(), reason.to_string());
                tokio::task::spawn_blocking(move || {
                    spool
                        .lock()
                        .map_err(|_| std::io::Error::other("spool lock poisoned"))
                        .and_then(|s| s.append_dead_letter(&row, &reason, at))
                })
                .await
                .is_ok_and(|r| r.is_ok())
            }
        };
        if kept {
            self.stats.set_aside.fetch_add(1, Ordering::Relaxed);
        }
        kept
    }

    /// Writes rows to the database. The write runs on its own task and is
    /// never cancelled mid-transaction (that could leave its counter locks
    /// held); past `write_timeout` the writer stops waiting and treats the
    /// batch as failed. If the write then completes anyway, the rows' later
    /// replay finds them stored and changes nothing.
    async fn try_store(&self, rows: &[Entry]) -> Stored {
        let store = self.store.clone();
        let counters = self.counters.clone();
        let rows = rows.to_vec();
        let count = rows.len();
        // Detached, not tracked: the writer awaits it up to the timeout and
        // then stops waiting on purpose (see above); it must not be cut off.
        let write =
            crate::tasks::detached(async move { write_rows(&store, &counters, &rows).await });
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(Ok(Ok(_))) => Stored::Yes,
            Ok(Ok(Err(error))) => {
                if let Some(reason) = rejected_data(&error) {
                    return Stored::Rejected(reason);
                }
                tracing::warn!(rows = count, %error, "Ledger batch failed; spooling.");
                Stored::Unavailable
            }
            Ok(Err(error)) => {
                tracing::error!(rows = count, %error, "Ledger write task failed; spooling.");
                Stored::Unavailable
            }
            Err(_) => {
                tracing::warn!(rows = count, "Ledger batch timed out; spooling.");
                Stored::Unavailable
            }
        }
    }

    /// Moves the spool into the database, oldest first. Stops at the first
    /// failure; a replay file is deleted only when all its rows are stored.
    /// True when every file it took was stored.
    async fn replay(&self) -> bool {
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
                return false;
            }
            Err(error) => {
                tracing::error!(%error, "Spool replay task failed.");
                return false;
            }
        };
        for file in files {
            let (records, skipped) = match spool::read_records(&file) {
                Ok(read) => read,
                Err(error) => {
                    tracing::error!(file = %file.display(), %error, "Spool file cannot be read.");
                    return false;
                }
            };
            for rows in &records {
                if !self.store_rows(rows).await {
                    return false;
                }
            }
            let rows: u64 = records.iter().map(|r| r.len() as u64).sum();
            // A file with damaged bytes is kept aside (its good records are
            // stored) for whoever wants to look at what was lost.
            let done = if skipped > 0 {
                std::fs::rename(&file, file.with_extension("damaged"))
            } else {
                std::fs::remove_file(&file)
            };
            if let Err(error) = done {
                tracing::error!(file = %file.display(), %error, "Replayed spool file not removed.");
                return false;
            }
            self.stats.replayed.fetch_add(rows, Ordering::Relaxed);
            self.stats.written.fetch_add(rows, Ordering::Relaxed);
            tracing::info!(rows, "Spooled ledger rows replayed.");
        }
        true
    }
}

/// What one write came to.
enum Stored {
    Yes,
    /// The database is away or slow: the rows wait in the spool.
    Unavailable,
    /// The database refused the data itself (the reason).
    Rejected(String),
}

/// The reason, when the database refused a write for its data (an invalid
/// byte, a value too long, a constraint) rather than for being away.
fn rejected_data(error: &AccountsError) -> Option<String> {
    let AccountsError::Store(crate::store::StoreError::Database(sqlx::Error::Database(db))) = error
    else {
        return None;
    };
    let code = db.code().map(|c| c.to_string()).unwrap_or_default();
    let data_class = if code.len() == 5 {
        // Postgres SQLSTATE (always five characters) classes: 22 data
        // exception, 23 integrity, 54 limit exceeded.
        ["22", "23", "54"]
            .iter()
            .any(|class| code.starts_with(class))
    } else {
        // SQLite result codes (the primary code is the low byte): 18 too
        // big, 19 constraint, 20 type mismatch, 25 bind out of range.
        code.parse::<u32>()
            .is_ok_and(|c| matches!(c & 0xff, 18 | 19 | 20 | 25))
    };
    let constraint = !matches!(db.kind(), sqlx::error::ErrorKind::Other);
    (data_class || constraint).then(|| format!("{code}: {}", db.message()))
}

/// Writes ledger rows; where a counter was rebuilt after a row's cost was
/// counted (and before the row was stored), or a settlement never reached
/// the counters, records the correction in the same transaction and applies
/// it after the commit (`corrections.rs`; one Redis cannot take now waits
/// in the database for a later pass). Returns how many rows were newly
/// stored.
pub async fn write_rows(
    store: &Store,
    counters: &Counters,
    rows: &[Entry],
) -> Result<u64, AccountsError> {
    let now = crate::clock::now_ms();
    if !counters.can_be_rebuilt() {
        let mut tx = store.pool().begin().await.map_err(StoreError::from)?;
        // SQLite: the write comes first. A deferred transaction that reads
        // and then writes fails at once (a busy snapshot) when another
        // connection wrote in between; one that starts with its write waits
        // for the lock instead. One writer at a time: the members need no
        // lock of their own there.
        let (judged, inserted) = if store.is_postgres() {
            let judged = super::alerts::before_on(&mut tx, rows).await?;
            (judged, Store::insert_usage_rows_on(&mut tx, rows).await?)
        } else {
            let inserted = Store::insert_usage_rows_on(&mut tx, rows).await?;
            (super::alerts::before_on(&mut tx, rows).await?, inserted)
        };
        super::alerts::after_on(&mut tx, &judged, rows, now, store.mails()).await?;
        tx.commit().await.map_err(StoreError::from)?;
        return Ok(inserted.len() as u64);
    }
    let keys: Vec<CounterKey> = rows
        .iter()
        .filter(|r| owed::may_owe(r))
        .flat_map(|r| owed::row_counters(r).into_iter().map(|(key, _, _)| key))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let names: Vec<String> = keys.iter().map(CounterKey::name).collect();
    let mut lock = store.lock_counters(&names, false).await?;
    let stored = async {
        // Members locked before the rows on Postgres; on SQLite the write
        // comes first (see the in-process path above).
        let judged = if store.is_postgres() {
            Some(super::alerts::before_on(lock.conn(), rows).await?)
        } else {
            None
        };
        let stamps_now = counters.stamps(&keys).await?;
        let inserted = Store::insert_usage_rows_on(lock.conn(), rows).await?;
        let judged = match judged {
            Some(judged) => judged,
            None => super::alerts::before_on(lock.conn(), rows).await?,
        };
        super::alerts::after_on(lock.conn(), &judged, rows, now, store.mails()).await?;
        let owed = {
            let inserted: BTreeSet<&str> = inserted.iter().map(String::as_str).collect();
            owed::owed(rows, &inserted, &keys, &stamps_now)
        };
        corrections::insert_on(lock.conn(), &owed, crate::clock::now_ms()).await?;
        Ok::<_, AccountsError>((inserted.len() as u64, owed))
    }
    .await;
    let (inserted, owed) = lock.finish(stored).await?;
    if !owed.is_empty() {
        // The rows are stored: a failure from here on leaves the
        // corrections recorded, never fails the batch.
        if let Err(error) = corrections::apply(store, counters, &owed).await {
            tracing::warn!(%error, "Applied counter corrections not cleared; they are applied again (idempotently) later.");
        }
    }
    Ok(inserted)
}
