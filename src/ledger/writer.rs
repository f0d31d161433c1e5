//! The ledger writer: one task batches entries (by `batch_size` or
//! `flush_interval_ms`) into idempotent inserts, spools batches the
//! database does not take, and replays the spool in order.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::spool::{self, Spool};
use super::{Entry, LedgerStats};
use crate::accounts::AccountsError;
use crate::counters::{CounterKey, Counters, Stamp};
use crate::money::Money;
use crate::store::Store;

pub(super) struct Writer {
    pub(super) store: Store,
    pub(super) counters: Arc<Counters>,
    pub(super) batch_size: usize,
    pub(super) flush_interval: Duration,
    pub(super) write_timeout: Duration,
    pub(super) replay_interval: Duration,
    pub(super) stats: Arc<LedgerStats>,
    pub(super) spool: Arc<Mutex<Spool>>,
    pub(super) spooling: bool,
}

impl Writer {
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Entry>, shutdown: CancellationToken) {
        let mut batch: Vec<Entry> = Vec::with_capacity(self.batch_size);
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
    fn take_queued(&self, rx: &mut mpsc::Receiver<Entry>, batch: &mut Vec<Entry>) {
        while batch.len() < self.batch_size {
            match rx.try_recv() {
                Ok(row) => batch.push(row),
                Err(_) => break,
            }
        }
    }

    /// Stores a batch in the database, else in the spool; never drops it.
    async fn write(&mut self, batch: &mut Vec<Entry>) {
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
    async fn store_rows(&self, rows: &[Entry]) -> bool {
        let store = self.store.clone();
        let counters = self.counters.clone();
        let rows = rows.to_vec();
        let count = rows.len();
        // Detached, not tracked: the writer awaits it up to the timeout and
        // then stops waiting on purpose (see above); it must not be cut off.
        let write =
            crate::tasks::detached(async move { write_rows(&store, &counters, &rows).await });
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

    async fn append_to_spool(&self, batch: &[Entry]) -> std::io::Result<()> {
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

/// The counters a row's cost is counted in.
fn row_counters(row: &Entry) -> Vec<(CounterKey, &Stamp)> {
    let mut keys = vec![(
        CounterKey::Balance(row.account_id.clone()),
        &row.counted.balance,
    )];
    if let Some(spend_key) = &row.spend_key {
        keys.push((CounterKey::Spend(spend_key.clone()), &row.counted.spend));
    }
    keys
}

/// Writes ledger rows; where a counter was rebuilt after a row's cost was
/// counted (and before the row was stored), applies the cost to the rebuilt
/// counter. Returns how many rows were newly stored.
pub async fn write_rows(
    store: &Store,
    counters: &Counters,
    rows: &[Entry],
) -> Result<u64, AccountsError> {
    if !counters.can_be_rebuilt() {
        return Ok(store.insert_usage_rows(rows).await?);
    }
    let keys: Vec<CounterKey> = rows
        .iter()
        .filter(|r| r.cost_nano != 0)
        .flat_map(|r| row_counters(r).into_iter().map(|(key, _)| key))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let names: Vec<String> = keys.iter().map(CounterKey::name).collect();
    let mut lock = store.lock_counters(&names, false).await?;
    let stored = async {
        let stamps_now = counters.stamps(&keys).await?;
        let inserted = Store::insert_usage_rows_on(lock.conn(), rows).await?;
        Ok::<_, AccountsError>((stamps_now, inserted))
    }
    .await;
    let (stamps_now, inserted) = lock.finish(stored).await?;
    let inserted: BTreeSet<&str> = inserted.iter().map(String::as_str).collect();
    for row in rows
        .iter()
        .filter(|r| r.cost_nano != 0 && inserted.contains(r.request_id.as_str()))
    {
        for (key, counted) in row_counters(row) {
            let Some(position) = keys.iter().position(|k| *k == key) else {
                continue;
            };
            let now = &stamps_now[position];
            if now != counted {
                // Rebuilt after the cost was counted and before this row
                // was stored: the rebuild missed the cost.
                counters
                    .apply_cost_if(&key, Money::from_nano(row.cost_nano), now)
                    .await?;
            }
        }
    }
    Ok(inserted.len() as u64)
}
