//! Counters: the hot, atomic state that admission reads and changes.
//!
//! Two backends behind one type, fixed at startup (no silent fallback from
//! Redis to memory): [`memory`] for one process (the embedded default) and
//! [`redis`] so several gateway processes act as one, with [`fallback`] for
//! admission while Redis is away. Every admission and every settlement is
//! one atomic step: one critical section in memory, one Lua script in
//! Redis. No caller matches on the backend.
//!
//! Two kinds of counter: an account's **balance** (credits − settled spend −
//! outstanding holds) and a member's **month spend** in a team (settled
//! spend + outstanding holds). A missing counter is seeded from the store by
//! the caller (`accounts.rs`).
//!
//! Every counter carries a [`Stamp`], a random id given when it is seeded.
//! Redis keeps nothing on disk: after a restart counters are rebuilt from
//! the ledger under new stamps. A settlement or ledger write that finds a
//! stamp other than the one its hold was taken under knows the rebuilt
//! counter does not contain that hold, and applies the cost alone (see
//! `ARCHITECTURE.md`, "Redis restarts").

pub mod fallback;
pub mod lease;
pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use self::fallback::LocalFallback;
use self::memory::MemoryCounters;
use self::redis::RedisCounters;
use crate::money::Money;
use crate::tasks::Tasks;

#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("counter state is poisoned")]
    Poisoned,
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis is away and this process has no last known value for the counter")]
    Unknown,
    #[error("redis answered '{0}' where a number was expected")]
    Malformed(String),
}

/// How long a settlement is retried (each try is bounded to 2 s).
const SETTLE_RETRY_WINDOW: Duration = Duration::from_secs(60);

/// Which counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CounterKey {
    /// An account's balance.
    Balance(String),
    /// A member's month spend: `account:team:user:YYYY-MM` ([`spend_key`]),
    /// led by the paying account.
    Spend(String),
}

/// The name of a member's month spend counter in a team paid by `account`
/// (its owner). The payer leads: in a Redis Cluster every counter of one
/// admission is tagged with it, so one script touches one slot. A team
/// whose ownership moves gets new counters, seeded from the ledger.
pub fn spend_key(account: &str, team_id: &str, user_id: &str, month: &str) -> String {
    format!("{account}:{team_id}:{user_id}:{month}")
}

impl CounterKey {
    /// The counter's name, in Redis (after the prefix) and in memory; also
    /// the name of its lock in the database (`accounts.rs`).
    pub fn name(&self) -> String {
        match self {
            CounterKey::Balance(account) => format!("bal:{account}"),
            CounterKey::Spend(key) => format!("spend:{key}"),
        }
    }

    /// The counter a name names (the inverse of [`CounterKey::name`]).
    pub fn parse(name: &str) -> Option<CounterKey> {
        if let Some(account) = name.strip_prefix("bal:") {
            Some(CounterKey::Balance(account.to_string()))
        } else {
            name.strip_prefix("spend:")
                .map(|key| CounterKey::Spend(key.to_string()))
        }
    }

    /// The paying account the counter belongs to.
    pub fn account(&self) -> &str {
        match self {
            CounterKey::Balance(account) => account,
            CounterKey::Spend(key) => key.split_once(':').map_or(key.as_str(), |(a, _)| a),
        }
    }

    /// How a cost moves this counter: a balance goes down, a spend up.
    pub fn cost_delta(&self, cost: Money) -> i64 {
        match self {
            CounterKey::Balance(_) => -cost.nano(),
            CounterKey::Spend(_) => cost.nano(),
        }
    }
}

/// The member's monthly spend counter a team-billed hold also moves.
#[derive(Debug, Clone, Copy)]
pub struct SpendHold<'a> {
    /// The counter's name (team, member and period).
    pub key: &'a str,
    /// A hard limit: the hold is refused if spend + amount would pass it.
    /// `None` (no limit, or a soft one) only counts.
    pub hard_limit: Option<Money>,
}

/// The stamp of one counter: given when it is seeded, new after a rebuild.
/// Empty: the counter did not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Stamp(String);

impl Stamp {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The counter did not exist.
    pub fn is_missing(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Stamp {
    fn from(text: String) -> Stamp {
        Stamp(text)
    }
}

impl From<&str> for Stamp {
    fn from(text: &str) -> Stamp {
        Stamp(text.to_string())
    }
}

/// The stamps of the counters a hold or a cost is counted in.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamps {
    pub balance: Stamp,
    pub spend: Stamp,
}

/// A change a ledger write owes a counter, recorded with the rows it
/// corrects (`ledger/corrections.rs`) and applied once Redis answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    /// Unique per row and counter, so a retry changes nothing.
    pub id: String,
    pub key: CounterKey,
    /// The counter is changed only while it still has this stamp: a rebuild
    /// since then read the ledger, rows included, and needs nothing.
    pub stamp: Stamp,
    pub fix: Fix,
}

/// What a correction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// Add to the value, at most once.
    Add(i64),
    /// Drop the counter, so that it is seeded from the ledger again.
    Rebuild,
}

/// The answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// Held; the balance left, the member's spend with the hold, and the
    /// stamps the hold was taken under.
    Held {
        remaining: Money,
        spend: Option<Money>,
        stamps: Stamps,
    },
    /// The account cannot cover the amount; what it has.
    Insufficient { available: Money },
    /// The member's hard monthly limit cannot take the amount.
    LimitReached { spent: Money, limit: Money },
    /// No balance counter yet: seed it from the store and ask again.
    MissingBalance,
    /// No spend counter yet: seed it from the store and ask again.
    MissingSpend,
}

/// One hold to settle, borrowed from what carries it (see
/// [`Counters::release`]): nothing is copied on the synchronous path.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    pub account: &'a str,
    pub spend_key: Option<&'a str>,
    pub held: Money,
    pub cost: Money,
    /// The stamps the hold was taken under.
    pub stamps: &'a Stamps,
    pub request_id: &'a str,
}

/// What carries a hold to settle (the ledger entry of a request).
pub trait Holding: Send + 'static {
    fn release(&self) -> Release<'_>;
}

/// How a release ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// Settled: the stamps the cost is now counted under.
    Counted(Stamps),
    /// The counters never took it: the hold stays taken (a balance reads
    /// low, never high); the cost counts as under the hold's stamps.
    Failed(Stamps),
}

/// See [`Counters::local_guard`]; held until dropped.
pub enum LocalGuard<'a> {
    Shared(tokio::sync::RwLockReadGuard<'a, ()>),
    Exclusive(tokio::sync::RwLockWriteGuard<'a, ()>),
}

pub enum Counters {
    Memory(MemoryCounters),
    Redis(Box<RedisCounters>),
}

impl Counters {
    pub fn memory() -> Counters {
        Counters::Memory(MemoryCounters::default())
    }

    /// Redis counters. With `outage_budget`, a process keeps admitting while
    /// Redis is away, from local counters seeded with the last values it saw,
    /// each account capped at the budget (see [`LocalFallback`]).
    pub async fn redis(
        url: &str,
        prefix: &str,
        outage_budget: Option<Money>,
    ) -> Result<Counters, CounterError> {
        Ok(Counters::Redis(Box::new(
            RedisCounters::connect(url, prefix, outage_budget).await?,
        )))
    }

    /// With `server.per_core`: each of `cores` serving cores talks to a
    /// single Redis on a connection of its own.
    pub fn per_core(&mut self, cores: usize) {
        if let Counters::Redis(redis) = self {
            redis.per_core(cores);
        }
    }

    /// With `storage.lease_usd` above 0 (Redis only): admission from
    /// budget leases (`lease.rs`).
    pub fn lease(&mut self, want: Money, life: Duration) {
        if let Counters::Redis(redis) = self {
            redis.lease(want, life);
        }
    }

    /// The budget leases, when on.
    pub fn leases(&self) -> Option<&lease::Leases> {
        match self {
            Counters::Redis(redis) => redis.leases(),
            Counters::Memory(_) => None,
        }
    }

    /// Gives back the slices that are due (all, at shutdown).
    pub async fn return_leases(&self, all: bool) {
        if let Counters::Redis(redis) = self {
            redis.return_leases(all).await;
        }
    }

    /// The outage fallback, when Redis counters use the `local` policy.
    pub fn fallback(&self) -> Option<&LocalFallback> {
        match self {
            Counters::Redis(redis) => redis.fallback(),
            Counters::Memory(_) => None,
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Counters::Memory(_) => "memory",
            Counters::Redis(_) => "redis",
        }
    }

    /// Whether counters can lose their state while the gateway runs (a
    /// Redis restart), so stamps must be checked.
    pub fn can_be_rebuilt(&self) -> bool {
        matches!(self, Counters::Redis(_))
    }

    /// Atomically holds `amount` against the account's balance and, for a
    /// team-billed request, the member's monthly spend: both move, or
    /// neither does.
    pub async fn reserve(
        &self,
        account: &str,
        amount: Money,
        spend: Option<SpendHold<'_>>,
    ) -> Result<Reserve, CounterError> {
        match self {
            Counters::Memory(memory) => memory.reserve(account, amount, spend),
            Counters::Redis(redis) => redis.reserve_or_fall_back(account, amount, spend).await,
        }
    }

    /// Sets a missing counter under a new stamp; an existing one is left
    /// alone (another request or process seeded it first).
    pub async fn seed(&self, key: &CounterKey, value: Money) -> Result<(), CounterError> {
        match self {
            Counters::Memory(memory) => memory.seed(key, value),
            Counters::Redis(redis) => redis.seed(key, value).await,
        }
    }

    /// Settles a hold at its exact cost, in one step: where the counter
    /// still has the stamp of the hold, the unused part (`hold − cost`) is
    /// returned; where it was rebuilt since, only the cost is applied. On
    /// Redis, at most once per `request_id` (a retry after a lost reply
    /// changes nothing). Returns the stamps the cost is now counted under.
    pub async fn settle(
        &self,
        account: &str,
        spend_key: Option<&str>,
        hold: Money,
        cost: Money,
        stamps: &Stamps,
        request_id: &str,
    ) -> Result<Stamps, CounterError> {
        match self {
            Counters::Memory(memory) => memory.settle(account, spend_key, hold, cost),
            Counters::Redis(redis) => {
                redis
                    .settle(account, spend_key, hold, cost, stamps, request_id)
                    .await
            }
        }
    }

    /// Settles a hold and hands the holding and the result back to `done`:
    /// in memory at once, on the caller's thread (so it works from a
    /// `Drop`); on Redis on a tracked task, retried for up to a minute while
    /// Redis is away.
    pub fn release<H: Holding>(
        self: &Arc<Self>,
        tasks: &Tasks,
        holding: H,
        done: impl FnOnce(H, Released) + Send + 'static,
    ) {
        match self.as_ref() {
            Counters::Memory(memory) => {
                let hold = holding.release();
                let released =
                    match memory.settle(hold.account, hold.spend_key, hold.held, hold.cost) {
                        Ok(counted) => Released::Counted(counted),
                        Err(error) => {
                            let request_id = hold.request_id;
                            tracing::error!(%request_id, %error, "Settlement failed.");
                            Released::Failed(Stamps::default())
                        }
                    };
                done(holding, released);
            }
            Counters::Redis(redis) => {
                let hold = holding.release();
                let unused = hold.held.nano().saturating_sub(hold.cost.nano());
                if redis.absorb(hold.account, hold.spend_key, hold.stamps, unused) {
                    // Redis counted the whole hold in the slice; its unused
                    // part is the slice's again, here.
                    let counted = hold.stamps.clone();
                    done(holding, Released::Counted(counted));
                    return;
                }
                let counters = self.clone();
                tasks.spawn(async move {
                    // Retries stop well inside the time Redis keeps the
                    // settled mark (`redis::SETTLED_MARK_SECS`), so a retry
                    // after a lost reply always finds it.
                    let mut backoff = Duration::from_millis(50);
                    let retry_until = tokio::time::Instant::now() + SETTLE_RETRY_WINDOW;
                    let hold = holding.release();
                    let request_id = hold.request_id;
                    let released = loop {
                        let settled = counters
                            .settle(
                                hold.account,
                                hold.spend_key,
                                hold.held,
                                hold.cost,
                                hold.stamps,
                                request_id,
                            )
                            .await;
                        match settled {
                            Ok(counted) => break Released::Counted(counted),
                            Err(error) if tokio::time::Instant::now() < retry_until => {
                                tracing::warn!(%request_id, %error, "Settlement failed; retrying.");
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                            }
                            Err(error) => {
                                tracing::error!(%request_id, %error, "Settlement failed; the hold stays taken.");
                                break Released::Failed(hold.stamps.clone());
                            }
                        }
                    };
                    done(holding, released);
                });
            }
        }
    }

    /// Applies `cost` to a counter only if it still has `stamp` (a ledger
    /// write correcting a counter rebuilt before the row was stored).
    pub async fn apply_cost_if(
        &self,
        key: &CounterKey,
        cost: Money,
        stamp: &Stamp,
    ) -> Result<(), CounterError> {
        self.apply_if(key, key.cost_delta(cost), stamp).await
    }

    /// Adds a credit to a balance only if it still has `stamp` (read before
    /// the credit was stored; a counter rebuilt after already has it).
    pub async fn credit_if(
        &self,
        account: &str,
        amount: Money,
        stamp: &Stamp,
    ) -> Result<(), CounterError> {
        self.apply_if(
            &CounterKey::Balance(account.to_string()),
            amount.nano(),
            stamp,
        )
        .await
    }

    async fn apply_if(
        &self,
        key: &CounterKey,
        delta: i64,
        stamp: &Stamp,
    ) -> Result<(), CounterError> {
        if stamp.is_missing() {
            return Ok(());
        }
        match self {
            Counters::Memory(memory) => memory.apply_if(key, delta, stamp),
            Counters::Redis(redis) => redis.apply_if(key, delta, stamp).await,
        }
    }

    /// Applies a correction (see [`Correction`]); true if it changed the
    /// counter, false if the counter no longer has its stamp (or the
    /// correction was applied before).
    pub async fn correct(&self, correction: &Correction) -> Result<bool, CounterError> {
        if correction.stamp.is_missing() {
            return Ok(false);
        }
        match self {
            Counters::Memory(memory) => memory.correct(correction),
            Counters::Redis(redis) => redis.correct(correction).await,
        }
    }

    /// Orders seeds against credits in one process, for in-process
    /// counters (Redis ones are ordered by the database's counter locks,
    /// `accounts.rs`): a seed reads the ledger and sets the counter under a
    /// shared guard, a credit stores itself and moves the counter under an
    /// exclusive one, so a credit never falls between a seed's read and
    /// its write.
    pub async fn local_guard(&self, exclusive: bool) -> Option<LocalGuard<'_>> {
        match self {
            Counters::Memory(memory) => Some(if exclusive {
                LocalGuard::Exclusive(memory.seeding.write().await)
            } else {
                LocalGuard::Shared(memory.seeding.read().await)
            }),
            Counters::Redis(_) => None,
        }
    }

    /// Drops a counter, so that its next use seeds it from the ledger (as
    /// a Redis restart would; holds in flight then settle by stamp).
    pub async fn forget(&self, key: &CounterKey) -> Result<(), CounterError> {
        match self {
            Counters::Memory(memory) => memory.forget(key),
            Counters::Redis(redis) => redis.forget(key).await,
        }
    }

    /// The current stamps of counters (missing ones empty).
    pub async fn stamps(&self, keys: &[CounterKey]) -> Result<Vec<Stamp>, CounterError> {
        match self {
            Counters::Memory(memory) => memory.stamps(keys),
            Counters::Redis(redis) => redis.stamps(keys).await,
        }
    }

    /// A counter's value, if it exists.
    pub async fn value(&self, key: &CounterKey) -> Result<Option<Money>, CounterError> {
        match self {
            Counters::Memory(memory) => memory.value(key),
            Counters::Redis(redis) => redis.value(key).await,
        }
    }

    pub async fn balance(&self, account: &str) -> Result<Option<Money>, CounterError> {
        self.value(&CounterKey::Balance(account.to_string())).await
    }

    pub async fn spend(&self, key: &str) -> Result<Option<Money>, CounterError> {
        self.value(&CounterKey::Spend(key.to_string())).await
    }

    pub async fn ping(&self) -> Result<(), CounterError> {
        match self {
            Counters::Memory(_) => Ok(()),
            Counters::Redis(redis) => redis.ping().await,
        }
    }
}
