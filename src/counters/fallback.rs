//! Admission while Redis is away (policy `local`).
//!
//! Each account may spend, in this process and this outage, at most the
//! smaller of its last balance seen in Redis and the budget; a member's hard
//! limit is checked against the last spend seen plus local holds. So across
//! N processes a balance or limit is overspent by at most N × budget. The
//! costs reach Redis through the ledger: rows settled here carry
//! [`LOCAL_STAMP`], which the writer recognises as "not in the counter yet".

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::memory::MemoryCounters;
use super::{CounterError, CounterKey, Reserve, SpendHold, Stamp, Stamps};
use crate::money::Money;

/// The stamp of holds and costs taken by the outage fallback: never a
/// Redis stamp, so the ledger writer applies these costs to the Redis
/// counters once Redis answers again.
pub(super) const LOCAL_STAMP: &str = "local";

pub struct LocalFallback {
    budget: Money,
    last_known: Mutex<HashMap<String, i64>>,
    local: MemoryCounters,
    /// Redis is away (the last call failed).
    pub degraded: AtomicBool,
    /// Admissions served by the fallback.
    pub admissions: AtomicU64,
}

impl LocalFallback {
    pub(super) fn new(budget: Money) -> LocalFallback {
        LocalFallback {
            budget,
            last_known: Mutex::new(HashMap::new()),
            local: MemoryCounters::with_stamp(LOCAL_STAMP),
            degraded: AtomicBool::new(false),
            admissions: AtomicU64::new(0),
        }
    }

    /// Redis answered `answer`: remember what it said; after an outage,
    /// the budget starts over (local costs reach Redis via the ledger).
    pub(super) fn redis_answered(
        &self,
        account: &str,
        spend: Option<SpendHold<'_>>,
        answer: &Reserve,
    ) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            self.local.clear();
        }
        if let Reserve::Held {
            remaining,
            spend: spent,
            ..
        } = answer
        {
            if let Ok(mut last) = self.last_known.lock() {
                last.insert(
                    CounterKey::Balance(account.to_string()).name(),
                    remaining.nano(),
                );
                if let (Some(hold), Some(spent)) = (spend, spent) {
                    last.insert(CounterKey::Spend(hold.key.to_string()).name(), spent.nano());
                }
            }
        }
    }

    /// Redis failed with `error`: admit locally within the budget.
    pub(super) fn reserve(
        &self,
        error: &CounterError,
        account: &str,
        amount: Money,
        spend: Option<SpendHold<'_>>,
    ) -> Result<Reserve, CounterError> {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "Redis is away; admitting from local counters within the outage budget.");
        }
        let balance_key = CounterKey::Balance(account.to_string());
        let spend_key = spend.map(|s| CounterKey::Spend(s.key.to_string()));
        {
            let last = self.last_known.lock().map_err(|_| CounterError::Poisoned)?;
            let Some(&balance) = last.get(&balance_key.name()) else {
                return Err(CounterError::Unknown);
            };
            self.local.seed(
                &balance_key,
                Money::from_nano(balance.min(self.budget.nano())),
            )?;
            if let Some(key) = &spend_key {
                let spent = last.get(&key.name()).copied();
                match (spent, spend.and_then(|s| s.hard_limit)) {
                    (Some(spent), _) => self.local.seed(key, Money::from_nano(spent))?,
                    (None, None) => self.local.seed(key, Money::ZERO)?,
                    // A hard limit with no known spend cannot be checked.
                    (None, Some(_)) => return Err(CounterError::Unknown),
                }
            }
        }
        let reserve = self.local.reserve(account, amount, spend)?;
        if matches!(reserve, Reserve::Held { .. }) {
            self.admissions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(reserve)
    }

    /// Whether a hold was taken here (not in Redis).
    pub(super) fn took(stamps: &Stamps) -> bool {
        stamps.balance.as_str() == LOCAL_STAMP
    }

    /// Settles a hold taken here; its cost is not in Redis yet (the ledger
    /// writer applies it).
    pub(super) fn settle(
        &self,
        account: &str,
        spend_key: Option<&str>,
        hold: Money,
        cost: Money,
    ) -> Result<Stamps, CounterError> {
        self.local.settle(account, spend_key, hold, cost)?;
        Ok(Stamps {
            balance: Stamp::from(LOCAL_STAMP),
            spend: if spend_key.is_some() {
                Stamp::from(LOCAL_STAMP)
            } else {
                Stamp::default()
            },
        })
    }
}
