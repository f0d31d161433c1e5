//! [`Settler`]: the narrow handle a finished request needs — release its
//! hold on the counters at the exact cost, then queue its entry with the
//! stamps the cost is counted under. Never waits: in memory the release is
//! synchronous; on Redis it runs on a tracked task (with retries).

use std::sync::Arc;

use super::{Entry, LedgerSender};
use crate::clock::Clock;
use crate::counters::{Counters, Holding, Release, Released, Stamps};
use crate::metrics::Metrics;
use crate::money::Money;
use crate::tasks::Tasks;

pub struct Settler {
    counters: Arc<Counters>,
    ledger: LedgerSender,
    tasks: Tasks,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl Settler {
    pub fn new(
        counters: Arc<Counters>,
        ledger: LedgerSender,
        tasks: Tasks,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Settler {
        Settler {
            counters,
            ledger,
            tasks,
            metrics,
            clock,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Releases `held` at the entry's cost (returning the unused part, or
    /// taking the excess) in one atomic step, then queues the entry.
    pub fn settle(self: &Arc<Self>, entry: Entry, held: Money, stamps: Stamps) {
        let this = self.clone();
        let settling = Settling {
            entry,
            held,
            stamps,
        };
        self.counters
            .release(&self.tasks, settling, move |settling, released| {
                let mut entry = settling.entry;
                entry.counted = match released {
                    Released::Counted(stamps) => stamps,
                    Released::Failed(stamps) => {
                        this.metrics.settlement_failed();
                        entry.settle_failed = true;
                        stamps
                    }
                };
                this.ledger.record(entry);
                this.metrics.reservation_closed();
            });
    }

    /// Queues the entry of a request refused before it held anything.
    pub fn record(&self, entry: Entry) {
        self.ledger.record(entry);
    }
}

/// A finished request's entry with the hold it releases.
struct Settling {
    entry: Entry,
    held: Money,
    /// The stamps the hold was taken under.
    stamps: Stamps,
}

impl Holding for Settling {
    fn release(&self) -> Release<'_> {
        Release {
            account: &self.entry.account_id,
            spend_key: self.entry.spend_key.as_deref(),
            held: self.held,
            cost: Money::from_nano(self.entry.cost_nano),
            stamps: &self.stamps,
            request_id: &self.entry.request_id,
        }
    }
}
