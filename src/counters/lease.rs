//! Budget leases (issue 16): a process takes a slice of an account's (and,
//! for team billing, a member's) remaining budget from Redis in one atomic
//! step (`lease.lua`) and admits later requests against it locally, with
//! no Redis call; their settlements give the unused part of each hold back
//! to the slice, again locally. A slice is itself a hold in Redis: the
//! balance is lowered and the member's spend raised by it the moment it is
//! taken, so the hard bound stays exact across processes — what leases
//! cost is that another process, seeing the counters without this one's
//! slice, may refuse a request near the limit that this one could have
//! admitted (see `ARCHITECTURE.md`, "Budget leases").
//!
//! A slice is at most `storage.lease_usd` and at most half of what the
//! counters have beyond the request that takes it; below the request's own
//! size none is taken (a plain hold, as without leases). What a slice has
//! left goes back to Redis when the next request does not fit in it (in the
//! same step that takes the next slice), when it is `storage.lease_ms`
//! old (so after a Redis rebuild a stale slice admits for at most that
//! long), and at shutdown — only to counters that still
//! have the stamps it was taken under, and at most once (a mark per
//! give-back). A process killed with a slice strands what the slice had
//! left (at most `lease_usd` per account and member) until the counter is
//! rebuilt: the balance reads low and the spend high, never the reverse.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Reserve, SpendHold, Stamps};
use crate::money::Money;

/// Which counters a slice is of: the paying account, and the member's
/// month-spend counter for team billing.
pub(super) type LeaseKey = (String, Option<String>);

/// One slice this process holds.
#[derive(Debug, Clone)]
pub(super) struct Lease {
    /// Names the give-back's mark in Redis (once per slice).
    pub id: String,
    pub stamps: Stamps,
    /// The member's hard limit the slice was taken under.
    pub hard_limit: Option<Money>,
    /// What is left to admit from, in nano-dollars.
    pub remaining: i64,
    /// The counters as the slice was taken (balance after it; spend with
    /// it), for what a local admission reports.
    pub balance_seen: i64,
    pub spend_seen: Option<i64>,
    pub taken_at: Instant,
}

/// What a local admission found.
pub(super) enum Take {
    /// Admitted from the slice.
    Held(Reserve),
    /// No slice, or too little left: ask Redis, giving back this (if any)
    /// in the same step.
    Ask(Option<Lease>),
}

pub struct Leases {
    /// The largest slice, in nano-dollars.
    pub(super) want: i64,
    /// The longest a slice is used: then it goes back (the next request
    /// takes a new one in the same step).
    life: Duration,
    /// By account, then by spend counter (`""` for the account alone):
    /// looked up with borrowed names, so admitting allocates nothing.
    held: Mutex<Held>,
    /// Admissions served from slices (a metric).
    admitted: AtomicU64,
    /// Slices whose give-back failed (Redis away): tried again by the
    /// sweep, under the same mark, until given back or a minute has passed.
    owed: Mutex<Vec<(LeaseKey, Lease, Instant)>>,
    /// The counter pairs a request of this process is taking a slice of
    /// right now (by account, then spend counter, `""` for none): the
    /// others hold plainly meanwhile instead of each taking a slice.
    taking: Mutex<HashMap<String, HashSet<String>>>,
}

/// A slice being taken of one counter pair ([`Leases::begin_taking`]);
/// the mark goes when it is dropped.
pub(super) struct Taking<'l> {
    leases: &'l Leases,
    account: &'l str,
    spend_key: Option<&'l str>,
}

impl Drop for Taking<'_> {
    fn drop(&mut self) {
        if let Ok(mut taking) = self.leases.taking.lock() {
            if let Some(of_account) = taking.get_mut(self.account) {
                of_account.remove(self.spend_key.unwrap_or(""));
                if of_account.is_empty() {
                    taking.remove(self.account);
                }
            }
        }
    }
}

type Held = HashMap<String, HashMap<String, Lease>>;

fn slot<'h>(held: &'h mut Held, account: &str, spend_key: Option<&str>) -> Option<&'h mut Lease> {
    held.get_mut(account)?.get_mut(spend_key.unwrap_or(""))
}

fn take_out(held: &mut Held, account: &str, spend_key: Option<&str>) -> Option<Lease> {
    let of_account = held.get_mut(account)?;
    let lease = of_account.remove(spend_key.unwrap_or(""));
    if of_account.is_empty() {
        held.remove(account);
    }
    lease
}

fn put(held: &mut Held, key: &LeaseKey, lease: Lease) -> Option<Lease> {
    held.entry(key.0.clone())
        .or_default()
        .insert(key.1.clone().unwrap_or_default(), lease)
}

impl Leases {
    pub fn new(want: Money, life: Duration) -> Leases {
        Leases {
            want: want.nano(),
            life,
            held: Mutex::new(HashMap::new()),
            admitted: AtomicU64::new(0),
            owed: Mutex::new(Vec::new()),
            taking: Mutex::new(HashMap::new()),
        }
    }

    /// Marks a slice of these counters as being taken by the caller; `None`
    /// if another request of this process is taking one now (the caller
    /// then holds its request plainly: when a slice runs out under many
    /// concurrent requests, one of them takes the next slice, not each).
    pub(super) fn begin_taking<'l>(
        &'l self,
        account: &'l str,
        spend_key: Option<&'l str>,
    ) -> Option<Taking<'l>> {
        let mut taking = self.taking.lock().ok()?;
        let spend = spend_key.unwrap_or("");
        if taking.get(account).is_some_and(|t| t.contains(spend)) {
            return None;
        }
        taking
            .entry(account.to_string())
            .or_default()
            .insert(spend.to_string());
        Some(Taking {
            leases: self,
            account,
            spend_key,
        })
    }

    /// Admits `amount` from this process's slice of the counters, if it
    /// has one with enough left (and the same hard limit).
    pub(super) fn take(&self, account: &str, amount: Money, spend: Option<SpendHold<'_>>) -> Take {
        let Ok(mut held) = self.held.lock() else {
            return Take::Ask(None);
        };
        let spend_key = spend.map(|s| s.key);
        let limit = spend.and_then(|s| s.hard_limit);
        match slot(&mut held, account, spend_key) {
            Some(lease)
                if lease.hard_limit == limit
                    && lease.remaining >= amount.nano()
                    && lease.taken_at.elapsed() < self.life =>
            {
                lease.remaining -= amount.nano();
                self.admitted.fetch_add(1, Ordering::Relaxed);
                Take::Held(Reserve::Held {
                    remaining: Money::from_nano(lease.balance_seen.saturating_add(lease.remaining)),
                    spend: lease
                        .spend_seen
                        .map(|s| Money::from_nano(s.saturating_sub(lease.remaining))),
                    stamps: lease.stamps.clone(),
                })
            }
            Some(_) => Take::Ask(take_out(&mut held, account, spend_key)),
            None => Take::Ask(None),
        }
    }

    /// Keeps a slice just taken. A slice of the same counters taken
    /// meanwhile by another request is merged into it (same stamps) or,
    /// after a rebuild, replaced (the old one is owed back).
    pub(super) fn keep(&self, key: LeaseKey, lease: Lease) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        match slot(&mut held, &key.0, key.1.as_deref()) {
            Some(existing)
                if existing.stamps == lease.stamps && existing.hard_limit == lease.hard_limit =>
            {
                existing.remaining = existing.remaining.saturating_add(lease.remaining);
                existing.balance_seen = existing.balance_seen.min(lease.balance_seen);
                existing.spend_seen = existing.spend_seen.max(lease.spend_seen);
            }
            _ => {
                if let Some(old) = put(&mut held, &key, lease) {
                    self.owe(key, old);
                }
            }
        }
    }

    /// A settled hold's unused part goes back to this process's slice of
    /// the same counters, if it holds one under the hold's stamps (Redis
    /// still counts the whole hold as taken, so the slice may use it).
    /// False: settle in Redis.
    pub(super) fn absorb(
        &self,
        account: &str,
        spend_key: Option<&str>,
        stamps: &Stamps,
        unused: i64,
    ) -> bool {
        let Ok(mut held) = self.held.lock() else {
            return false;
        };
        match slot(&mut held, account, spend_key) {
            Some(lease) if lease.stamps == *stamps => {
                lease.remaining = lease.remaining.saturating_add(unused.max(0));
                true
            }
            _ => false,
        }
    }

    /// A slice to give back later (a give-back that failed).
    pub(super) fn owe(&self, key: LeaseKey, lease: Lease) {
        if lease.remaining <= 0 {
            return;
        }
        if let Ok(mut owed) = self.owed.lock() {
            owed.push((key, lease, Instant::now()));
        }
    }

    /// The slices older than their life (or all, at shutdown), taken out
    /// to be given back, with those owed from before.
    pub(super) fn due(&self, all: bool) -> Vec<(LeaseKey, Lease)> {
        let mut out = Vec::new();
        if let Ok(mut owed) = self.owed.lock() {
            // Past the mark's life a retry could give twice: dropped (the
            // slice stays taken: a balance reads low, never high).
            owed.retain(|(_, _, since)| since.elapsed() < Duration::from_secs(60));
            out.extend(owed.drain(..).map(|(k, l, _)| (k, l)));
        }
        if let Ok(mut held) = self.held.lock() {
            let idle: Vec<LeaseKey> = held
                .iter()
                .flat_map(|(account, of_account)| {
                    of_account
                        .iter()
                        .filter(|(_, l)| all || l.taken_at.elapsed() >= self.life)
                        .map(move |(spend, _)| {
                            (account.clone(), (!spend.is_empty()).then(|| spend.clone()))
                        })
                })
                .collect();
            for key in idle {
                if let Some(lease) = take_out(&mut held, &key.0, key.1.as_deref()) {
                    out.push((key, lease));
                }
            }
        }
        out
    }

    /// Slices held now (for tests and metrics): their count and what they
    /// have left.
    pub fn outstanding(&self) -> (usize, Money) {
        let held = self.held.lock().map(|h| {
            h.values()
                .flat_map(HashMap::values)
                .fold((0, 0_i64), |(n, nano), l| {
                    (n + 1, nano.saturating_add(l.remaining))
                })
        });
        match held {
            Ok((n, nano)) => (n, Money::from_nano(nano)),
            Err(_) => (0, Money::ZERO),
        }
    }

    /// This process's slice left of the counters, if any (headroom adds
    /// it: admission here may use it).
    pub fn local(&self, account: &str, spend_key: Option<&str>) -> Money {
        self.held
            .lock()
            .ok()
            .and_then(|mut h| {
                slot(&mut h, account, spend_key).map(|l| Money::from_nano(l.remaining))
            })
            .unwrap_or(Money::ZERO)
    }

    /// Admissions served from slices so far (a metric).
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Stamp;

    fn stamps(tag: &str) -> Stamps {
        Stamps {
            balance: Stamp::from(tag),
            spend: Stamp::from(tag),
        }
    }

    #[test]
    fn one_request_at_a_time_takes_a_slice_of_a_counter_pair() {
        let leases = Leases::new(Money::from_nano(1_000), Duration::from_secs(1));
        let first = leases.begin_taking("acct", Some("spend"));
        assert!(first.is_some());
        // The same pair meanwhile: hold plainly.
        assert!(leases.begin_taking("acct", Some("spend")).is_none());
        // Another pair of the same account, or another account: free.
        let alone = leases.begin_taking("acct", None);
        assert!(alone.is_some());
        assert!(leases.begin_taking("other", Some("spend")).is_some());
        drop(first);
        assert!(leases.begin_taking("acct", Some("spend")).is_some());
        drop(alone);
        assert!(leases.taking.lock().unwrap().is_empty());
    }

    fn lease(tag: &str, remaining: i64, limit: Option<Money>) -> Lease {
        Lease {
            id: format!("lease-{tag}"),
            stamps: stamps(tag),
            hard_limit: limit,
            remaining,
            balance_seen: 1_000,
            spend_seen: Some(500),
            taken_at: Instant::now(),
        }
    }

    fn key() -> LeaseKey {
        (
            "acct".to_string(),
            Some("acct:team:user:2026-12".to_string()),
        )
    }

    fn spend(limit: Option<Money>) -> Option<SpendHold<'static>> {
        Some(SpendHold {
            key: "acct:team:user:2026-12",
            hard_limit: limit,
        })
    }

    #[test]
    fn a_slice_admits_what_it_has_and_reports_the_counters_with_it() {
        let leases = Leases::new(Money::from_nano(1_000), Duration::from_secs(60));
        let limit = Some(Money::from_nano(10_000));
        leases.keep(key(), lease("a", 300, limit));
        let Take::Held(Reserve::Held {
            remaining,
            spend: spent,
            stamps: s,
        }) = leases.take("acct", Money::from_nano(200), spend(limit))
        else {
            panic!("admitted from the slice");
        };
        assert_eq!(s, stamps("a"));
        // Balance after the slice was taken, plus what it has left.
        assert_eq!(remaining, Money::from_nano(1_100));
        // Spend with the slice, less what it has left.
        assert_eq!(spent, Some(Money::from_nano(400)));
        // 100 left: a request of 200 asks Redis, giving the 100 back.
        match leases.take("acct", Money::from_nano(200), spend(limit)) {
            Take::Ask(Some(back)) => assert_eq!(back.remaining, 100),
            _ => panic!("asks Redis with the rest"),
        }
        assert_eq!(leases.outstanding().0, 0);
    }

    #[test]
    fn another_limit_or_another_member_is_not_admitted_from_the_slice() {
        let leases = Leases::new(Money::from_nano(1_000), Duration::from_secs(60));
        leases.keep(key(), lease("a", 300, Some(Money::from_nano(10_000))));
        assert!(matches!(
            leases.take(
                "acct",
                Money::from_nano(10),
                spend(Some(Money::from_nano(5_000)))
            ),
            Take::Ask(Some(_))
        ));
        leases.keep(key(), lease("a", 300, None));
        assert!(matches!(
            leases.take("acct", Money::from_nano(10), None),
            Take::Ask(None)
        ));
    }

    #[test]
    fn unused_parts_go_back_to_a_slice_of_the_same_stamps_only() {
        let leases = Leases::new(Money::from_nano(1_000), Duration::from_secs(60));
        leases.keep(key(), lease("a", 300, None));
        let spend_key = Some("acct:team:user:2026-12");
        assert!(leases.absorb("acct", spend_key, &stamps("a"), 50));
        assert_eq!(leases.local("acct", spend_key), Money::from_nano(350));
        // A hold of a rebuilt counter settles in Redis.
        assert!(!leases.absorb("acct", spend_key, &stamps("b"), 50));
        assert!(!leases.absorb("other", None, &stamps("a"), 50));
    }

    #[test]
    fn slices_merge_or_are_owed_back_and_old_ones_fall_due() {
        let leases = Leases::new(Money::from_nano(1_000), Duration::from_millis(0));
        leases.keep(key(), lease("a", 300, None));
        leases.keep(key(), lease("a", 200, None));
        assert_eq!(leases.outstanding(), (1, Money::from_nano(500)));
        // Rebuilt meanwhile: the new stamps replace, the old slice is owed.
        leases.keep(key(), lease("b", 100, None));
        let due = leases.due(false);
        let mut left: Vec<(String, i64)> = due
            .iter()
            .map(|(_, l)| (l.stamps.balance.as_str().to_string(), l.remaining))
            .collect();
        left.sort();
        assert_eq!(left, vec![("a".to_string(), 500), ("b".to_string(), 100)]);
        assert_eq!(leases.outstanding().0, 0);
        // A life of 0: an old slice admits nothing.
        leases.keep(key(), lease("c", 300, None));
        assert!(matches!(
            leases.take("acct", Money::from_nano(10), spend(None)),
            Take::Ask(Some(_))
        ));
    }
}
