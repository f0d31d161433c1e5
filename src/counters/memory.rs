//! In-process counters: one process (the embedded default), and the local
//! counters of Redis's outage fallback. The lock is held for map lookups
//! and integer adds, never across an await, so a hold on balance and spend
//! is atomic.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{Correction, CounterError, CounterKey, Fix, Reserve, SpendHold, Stamp, Stamps};
use crate::money::Money;

/// The stamp of every in-process counter: they are never rebuilt.
const MEMORY_STAMP: &str = "m";

pub struct MemoryCounters {
    values: Mutex<HashMap<String, i64>>,
    /// `MEMORY_STAMP`, or the fallback's `LOCAL_STAMP`.
    stamp: &'static str,
    /// Seeds (shared) against credits (exclusive): `Counters::local_guard`.
    pub(super) seeding: tokio::sync::RwLock<()>,
}

impl Default for MemoryCounters {
    fn default() -> Self {
        MemoryCounters::with_stamp(MEMORY_STAMP)
    }
}

impl MemoryCounters {
    pub(super) fn with_stamp(stamp: &'static str) -> MemoryCounters {
        MemoryCounters {
            values: Mutex::new(HashMap::new()),
            stamp,
            seeding: tokio::sync::RwLock::new(()),
        }
    }

    fn values(&self) -> Result<MutexGuard<'_, HashMap<String, i64>>, CounterError> {
        self.values.lock().map_err(|_| CounterError::Poisoned)
    }

    fn stamp(&self) -> Stamp {
        Stamp::from(self.stamp)
    }

    pub(super) fn clear(&self) {
        if let Ok(mut values) = self.values.lock() {
            values.clear();
        }
    }

    pub(super) fn reserve(
        &self,
        account: &str,
        amount: Money,
        spend: Option<SpendHold<'_>>,
    ) -> Result<Reserve, CounterError> {
        let mut values = self.values()?;
        let balance_name = CounterKey::Balance(account.to_string()).name();
        let Some(&balance) = values.get(&balance_name) else {
            return Ok(Reserve::MissingBalance);
        };
        let spend_name = spend.map(|s| CounterKey::Spend(s.key.to_string()).name());
        let spent = match &spend_name {
            Some(name) => match values.get(name) {
                Some(&spent) => Some(spent),
                None => return Ok(Reserve::MissingSpend),
            },
            None => None,
        };
        if let (Some(spent), Some(limit)) = (spent, spend.and_then(|s| s.hard_limit)) {
            if spent.saturating_add(amount.nano()) > limit.nano() {
                return Ok(Reserve::LimitReached {
                    spent: Money::from_nano(spent),
                    limit,
                });
            }
        }
        if balance < amount.nano() {
            return Ok(Reserve::Insufficient {
                available: Money::from_nano(balance),
            });
        }
        values.insert(balance_name, balance - amount.nano());
        let spend_after = match spend_name {
            Some(name) => {
                let after = spent.unwrap_or(0).saturating_add(amount.nano());
                values.insert(name, after);
                Some(Money::from_nano(after))
            }
            None => None,
        };
        Ok(Reserve::Held {
            remaining: Money::from_nano(balance - amount.nano()),
            spend: spend_after,
            stamps: Stamps {
                balance: self.stamp(),
                spend: if spend.is_some() {
                    self.stamp()
                } else {
                    Stamp::default()
                },
            },
        })
    }

    pub(super) fn seed(&self, key: &CounterKey, value: Money) -> Result<(), CounterError> {
        self.values()?.entry(key.name()).or_insert(value.nano());
        Ok(())
    }

    /// Settles synchronously (so it can run from a `Drop`, even outside the
    /// runtime): returns the unused part of the hold.
    pub(super) fn settle(
        &self,
        account: &str,
        spend_key: Option<&str>,
        hold: Money,
        cost: Money,
    ) -> Result<Stamps, CounterError> {
        let unused = hold.nano().saturating_sub(cost.nano());
        let mut values = self.values()?;
        let mut counted = Stamps::default();
        if let Some(balance) = values.get_mut(&CounterKey::Balance(account.to_string()).name()) {
            *balance = balance.saturating_add(unused);
            counted.balance = self.stamp();
        }
        if let Some(key) = spend_key {
            if let Some(spent) = values.get_mut(&CounterKey::Spend(key.to_string()).name()) {
                *spent = spent.saturating_sub(unused);
                counted.spend = self.stamp();
            }
        }
        Ok(counted)
    }

    pub(super) fn apply_if(
        &self,
        key: &CounterKey,
        delta: i64,
        stamp: &Stamp,
    ) -> Result<(), CounterError> {
        if stamp.as_str() != self.stamp {
            return Ok(());
        }
        if let Some(value) = self.values()?.get_mut(&key.name()) {
            *value = value.saturating_add(delta);
        }
        Ok(())
    }

    /// In-process counters are never rebuilt, so the ledger owes them no
    /// correction; applied all the same if one comes.
    pub(super) fn correct(&self, correction: &Correction) -> Result<bool, CounterError> {
        if correction.stamp.as_str() != self.stamp {
            return Ok(false);
        }
        let mut values = self.values()?;
        let name = correction.key.name();
        match correction.fix {
            Fix::Rebuild => Ok(values.remove(&name).is_some()),
            Fix::Add(delta) => Ok(values
                .get_mut(&name)
                .map(|value| *value = value.saturating_add(delta))
                .is_some()),
        }
    }

    pub(super) fn forget(&self, key: &CounterKey) -> Result<(), CounterError> {
        self.values()?.remove(&key.name());
        Ok(())
    }

    pub(super) fn stamps(&self, keys: &[CounterKey]) -> Result<Vec<Stamp>, CounterError> {
        let values = self.values()?;
        Ok(keys
            .iter()
            .map(|k| {
                if values.contains_key(&k.name()) {
                    self.stamp()
                } else {
                    Stamp::default()
                }
            })
            .collect())
    }

    pub(super) fn value(&self, key: &CounterKey) -> Result<Option<Money>, CounterError> {
        Ok(self
            .values()?
            .get(&key.name())
            .map(|v| Money::from_nano(*v)))
    }
}
