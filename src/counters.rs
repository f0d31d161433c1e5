//! Counters: the hot, atomic state that admission reads and changes.
//!
//! Two backends behind one enum, fixed at startup (no silent fallback from
//! Redis to memory): `Memory` for one process (the embedded default) and
//! `Redis` so several gateway processes act as one. Every admission and
//! every settlement is one atomic step: one critical section in memory, one
//! Lua script in Redis.
//!
//! Two kinds of counter: an account's **balance** (credits − settled spend −
//! outstanding holds) and a member's **month spend** in a team (settled
//! spend + outstanding holds). A missing counter is seeded from the store by
//! the caller.
//!
//! Every counter carries a **stamp**, a random id given when it is seeded.
//! Redis keeps nothing on disk: after a restart counters are rebuilt from
//! the ledger under new stamps. A settlement or ledger write that finds a
//! stamp other than the one its hold was taken under knows the rebuilt
//! counter does not contain that hold, and applies the cost alone (see
//! `ARCHITECTURE.md`, "Redis restarts").

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;

use crate::money::Money;

#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("counter state is poisoned")]
    Poisoned,
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis is away and this process has no last known value for the counter")]
    Unknown,
}

/// The longest wait for one Redis step: a call cut off by a dying server
/// must fail (and be retried or refused), never hang a request.
const REDIS_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a settled hold stays marked: twice a settlement's retry window
/// (60 s, plus one 2 s try, `proxy/settle.rs`), so a retry after a lost
/// reply finds the mark and changes nothing. Redis keeps one small key per
/// request settled in this window.
pub const SETTLED_MARK_SECS: u64 = 120;

async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, CounterError>>,
) -> Result<T, CounterError> {
    tokio::time::timeout(REDIS_CALL_TIMEOUT, call)
        .await
        .unwrap_or(Err(CounterError::Timeout(REDIS_CALL_TIMEOUT)))
}

/// Which counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CounterKey {
    /// An account's balance.
    Balance(String),
    /// A member's month spend: `team:user:YYYY-MM`.
    Spend(String),
}

impl CounterKey {
    fn name(&self) -> String {
        match self {
            CounterKey::Balance(account) => format!("bal:{account}"),
            CounterKey::Spend(key) => format!("spend:{key}"),
        }
    }

    /// How a cost moves this counter: a balance goes down, a spend up.
    fn cost_delta(&self, cost: Money) -> i64 {
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

/// The stamps of the counters a hold or a cost is counted in (`""`: the
/// counter did not exist).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamps {
    pub balance: String,
    pub spend: String,
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

pub enum Counters {
    Memory(MemoryCounters),
    Redis(RedisCounters),
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
        let client = redis::Client::open(url)?;
        // Keep reconnecting (every 0.5 s at most) for as long as Redis is
        // away: a reconnect that gives up would leave the manager failed
        // after Redis returns. Each call is bounded by `REDIS_CALL_TIMEOUT`.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(1_000_000)
            .set_max_delay(500);
        let connection = ConnectionManager::new_with_config(client, config).await?;
        Ok(Counters::Redis(RedisCounters {
            connection,
            prefix: prefix.to_string(),
            reserve: Script::new(RESERVE_LUA),
            settle: Script::new(SETTLE_LUA),
            seed: Script::new(SEED_LUA),
            apply: Script::new(APPLY_LUA),
            fallback: outage_budget.map(|budget| Box::new(LocalFallback::new(budget))),
        }))
    }

    /// The outage fallback, when Redis counters use the `local` policy.
    pub fn fallback(&self) -> Option<&LocalFallback> {
        match self {
            Counters::Redis(redis) => redis.fallback.as_deref(),
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
            Counters::Redis(redis) => {
                let answer = bounded(redis.reserve(account, amount, spend)).await;
                let Some(fallback) = &redis.fallback else {
                    return answer;
                };
                match answer {
                    Ok(reserve) => {
                        if fallback
                            .degraded
                            .swap(false, std::sync::atomic::Ordering::Relaxed)
                        {
                            // Redis is back: the outage budget starts over
                            // next time; local costs reach Redis via the ledger.
                            fallback.local.clear();
                        }
                        fallback.remember(account, spend, &reserve);
                        Ok(reserve)
                    }
                    Err(error) => {
                        if !fallback
                            .degraded
                            .swap(true, std::sync::atomic::Ordering::Relaxed)
                        {
                            tracing::warn!(%error, "Redis is away; admitting from local counters within the outage budget.");
                        }
                        fallback.reserve(account, amount, spend)
                    }
                }
            }
        }
    }

    /// Sets a missing counter under a new stamp; an existing one is left
    /// alone (another request or process seeded it first).
    pub async fn seed(&self, key: &CounterKey, value: Money) -> Result<(), CounterError> {
        match self {
            Counters::Memory(memory) => memory.seed(key, value),
            Counters::Redis(redis) => bounded(redis.seed(key, value)).await,
        }
    }

    /// Settles a hold at its exact cost: where the counter still has the
    /// stamp of the hold, the unused part (`hold − cost`) is returned; where
    /// it was rebuilt since, only the cost is applied. On Redis, at most once
    /// per `request_id`: a retry after a lost reply changes nothing. Returns
    /// the stamps the cost is now counted under.
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
            Counters::Memory(memory) => memory.settle(account, spend_key, hold, cost, stamps),
            Counters::Redis(redis) => match &redis.fallback {
                Some(fallback) if stamps.balance == LOCAL_STAMP => {
                    fallback
                        .local
                        .settle(account, spend_key, hold, cost, stamps)?;
                    // Not in Redis yet: the ledger writer will apply it.
                    Ok(Stamps {
                        balance: LOCAL_STAMP.into(),
                        spend: if spend_key.is_some() {
                            LOCAL_STAMP.into()
                        } else {
                            String::new()
                        },
                    })
                }
                _ => {
                    bounded(redis.settle(account, spend_key, hold, cost, stamps, request_id)).await
                }
            },
        }
    }

    /// Applies `cost` to a counter only if it still has `stamp` (a ledger
    /// write correcting a counter rebuilt before the row was stored).
    pub async fn apply_cost_if(
        &self,
        key: &CounterKey,
        cost: Money,
        stamp: &str,
    ) -> Result<(), CounterError> {
        self.apply_if(key, key.cost_delta(cost), stamp).await
    }

    /// Adds a credit to a balance only if it still has `stamp` (read before
    /// the credit was stored; a counter rebuilt after already has it).
    pub async fn credit_if(
        &self,
        account: &str,
        amount: Money,
        stamp: &str,
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
        stamp: &str,
    ) -> Result<(), CounterError> {
        if stamp.is_empty() {
            return Ok(());
        }
        match self {
            Counters::Memory(memory) => memory.apply_if(key, delta, stamp),
            Counters::Redis(redis) => bounded(redis.apply_if(key, delta, stamp)).await,
        }
    }

    /// The current stamps of counters (`""` for a missing one).
    pub async fn stamps(&self, keys: &[CounterKey]) -> Result<Vec<String>, CounterError> {
        match self {
            Counters::Memory(memory) => memory.stamps(keys),
            Counters::Redis(redis) => bounded(redis.stamps(keys)).await,
        }
    }

    /// A counter's value, if it exists.
    pub async fn value(&self, key: &CounterKey) -> Result<Option<Money>, CounterError> {
        match self {
            Counters::Memory(memory) => memory.value(key),
            Counters::Redis(redis) => bounded(redis.value(key)).await,
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
            Counters::Redis(redis) => {
                let mut connection = redis.connection.clone();
                bounded(async {
                    redis::cmd("PING")
                        .query_async::<String>(&mut connection)
                        .await?;
                    Ok(())
                })
                .await
            }
        }
    }
}

// === impl MemoryCounters ===

/// The stamp of every in-process counter: they are never rebuilt.
const MEMORY_STAMP: &str = "m";

/// One process's counters. The lock is held for map lookups and integer
/// adds, never across an await, so a hold on balance and spend is atomic.
pub struct MemoryCounters {
    values: Mutex<HashMap<String, i64>>,
    /// `MEMORY_STAMP`, or `LOCAL_STAMP` for Redis's outage fallback.
    stamp: &'static str,
}

impl Default for MemoryCounters {
    fn default() -> Self {
        MemoryCounters::with_stamp(MEMORY_STAMP)
    }
}

impl MemoryCounters {
    fn with_stamp(stamp: &'static str) -> MemoryCounters {
        MemoryCounters {
            values: Mutex::new(HashMap::new()),
            stamp,
        }
    }

    fn clear(&self) {
        if let Ok(mut values) = self.values.lock() {
            values.clear();
        }
    }

    fn reserve(
        &self,
        account: &str,
        amount: Money,
        spend: Option<SpendHold<'_>>,
    ) -> Result<Reserve, CounterError> {
        let mut values = self.values.lock().map_err(|_| CounterError::Poisoned)?;
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
                balance: self.stamp.into(),
                spend: if spend.is_some() {
                    self.stamp.into()
                } else {
                    String::new()
                },
            },
        })
    }

    fn seed(&self, key: &CounterKey, value: Money) -> Result<(), CounterError> {
        let mut values = self.values.lock().map_err(|_| CounterError::Poisoned)?;
        values.entry(key.name()).or_insert(value.nano());
        Ok(())
    }

    /// The settlement path for memory counters: synchronous, so it can run
    /// even from a `Drop` outside the runtime.
    pub fn settle(
        &self,
        account: &str,
        spend_key: Option<&str>,
        hold: Money,
        cost: Money,
        _stamps: &Stamps,
    ) -> Result<Stamps, CounterError> {
        let unused = hold.nano().saturating_sub(cost.nano());
        let mut values = self.values.lock().map_err(|_| CounterError::Poisoned)?;
        let mut counted = Stamps::default();
        if let Some(balance) = values.get_mut(&CounterKey::Balance(account.to_string()).name()) {
            *balance = balance.saturating_add(unused);
            counted.balance = self.stamp.into();
        }
        if let Some(key) = spend_key {
            if let Some(spent) = values.get_mut(&CounterKey::Spend(key.to_string()).name()) {
                *spent = spent.saturating_sub(unused);
                counted.spend = self.stamp.into();
            }
        }
        Ok(counted)
    }

    fn apply_if(&self, key: &CounterKey, delta: i64, stamp: &str) -> Result<(), CounterError> {
        if stamp != self.stamp {
            return Ok(());
        }
        let mut values = self.values.lock().map_err(|_| CounterError::Poisoned)?;
        if let Some(value) = values.get_mut(&key.name()) {
            *value = value.saturating_add(delta);
        }
        Ok(())
    }

    fn stamps(&self, keys: &[CounterKey]) -> Result<Vec<String>, CounterError> {
        let values = self.values.lock().map_err(|_| CounterError::Poisoned)?;
        Ok(keys
            .iter()
            .map(|k| {
                if values.contains_key(&k.name()) {
                    self.stamp.into()
                } else {
                    String::new()
                }
            })
            .collect())
    }

    fn value(&self, key: &CounterKey) -> Result<Option<Money>, CounterError> {
        let values = self.values.lock().map_err(|_| CounterError::Poisoned)?;
        Ok(values.get(&key.name()).map(|v| Money::from_nano(*v)))
    }
}

// === impl RedisCounters ===

// Each counter is a hash {v: value, s: stamp}. Arithmetic is Redis's exact
// 64-bit HINCRBY; Lua only compares.

/// Holds `ARGV[1]` against the balance `KEYS[1]` and, when `KEYS[2]` is
/// given, adds it to that spend counter, refusing if `ARGV[2]` (a hard limit;
/// empty for none) would be passed. All or nothing. `ARGV[3]` is -`ARGV[1]`.
/// Returns `{status, balance, spend, balance stamp, spend stamp}`: status 1
/// held, 0 insufficient, 2 limit reached, -1 balance missing, -2 spend
/// missing.
const RESERVE_LUA: &str = r"
local has_spend = #KEYS == 2
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1, '0', '0', '', ''}
end
local bstamp = redis.call('HGET', KEYS[1], 's') or ''
local spent = '0'
local sstamp = ''
if has_spend then
  if redis.call('EXISTS', KEYS[2]) == 0 then
    return {-2, '0', '0', bstamp, ''}
  end
  spent = redis.call('HGET', KEYS[2], 'v') or '0'
  sstamp = redis.call('HGET', KEYS[2], 's') or ''
  if ARGV[2] ~= '' and tonumber(spent) + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
    return {2, '0', spent, bstamp, sstamp}
  end
end
local after = redis.call('HINCRBY', KEYS[1], 'v', ARGV[3])
if after < 0 then
  local restored = redis.call('HINCRBY', KEYS[1], 'v', ARGV[1])
  return {0, tostring(restored), '0', bstamp, sstamp}
end
local spend_after = '0'
if has_spend then
  spend_after = tostring(redis.call('HINCRBY', KEYS[2], 'v', ARGV[1]))
end
return {1, tostring(after), spend_after, bstamp, sstamp}
";

/// Settles one hold, at most once. `KEYS`: balance, [spend,] the request's
/// settled mark. `ARGV`: 1 balance stamp of the hold, 2 spend stamp, 3 the
/// unused part (hold − cost), 4 −cost, 5 cost − hold, 6 cost, 7 seconds to
/// keep the mark. The mark is set only if absent: a settlement retried after
/// a lost reply finds it and changes nothing (if Redis restarted between
/// the two, the first was lost with it, and the retry applies). Same stamp:
/// return the unused part; another stamp (rebuilt): apply the cost. Returns
/// the stamps the cost is counted under (`''` where missing).
const SETTLE_LUA: &str = r"
local has_spend = #KEYS == 3
local counted = {'', ''}
if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'EX', ARGV[7]) then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    counted[1] = redis.call('HGET', KEYS[1], 's') or ''
  end
  if has_spend and redis.call('EXISTS', KEYS[2]) == 1 then
    counted[2] = redis.call('HGET', KEYS[2], 's') or ''
  end
  return counted
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local stamp = redis.call('HGET', KEYS[1], 's') or ''
  if stamp == ARGV[1] then
    redis.call('HINCRBY', KEYS[1], 'v', ARGV[3])
  else
    redis.call('HINCRBY', KEYS[1], 'v', ARGV[4])
  end
  counted[1] = stamp
end
if has_spend and redis.call('EXISTS', KEYS[2]) == 1 then
  local stamp = redis.call('HGET', KEYS[2], 's') or ''
  if stamp == ARGV[2] then
    redis.call('HINCRBY', KEYS[2], 'v', ARGV[5])
  else
    redis.call('HINCRBY', KEYS[2], 'v', ARGV[6])
  end
  counted[2] = stamp
end
return counted
";

/// Seeds a missing counter: value `ARGV[1]`, stamp `ARGV[2]`, and expiry
/// `ARGV[3]` seconds when not empty.
const SEED_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return 1
";

/// Adds `ARGV[1]` to the counter if its stamp is `ARGV[2]`.
const APPLY_LUA: &str = r"
if redis.call('HGET', KEYS[1], 's') == ARGV[2] then
  redis.call('HINCRBY', KEYS[1], 'v', ARGV[1])
  return 1
end
return 0
";

/// Spend counters outlive their month by a few days, then expire.
const SPEND_TTL_SECS: u64 = 40 * 24 * 3600;

pub struct RedisCounters {
    connection: ConnectionManager,
    prefix: String,
    reserve: Script,
    settle: Script,
    seed: Script,
    apply: Script,
    fallback: Option<Box<LocalFallback>>,
}

/// The stamp of holds and costs taken by the outage fallback: never a
/// Redis stamp, so the ledger writer applies these costs to the Redis
/// counters once Redis answers again.
const LOCAL_STAMP: &str = "local";

/// Admission while Redis is away (policy `local`).
///
/// Each account may spend, in this process and this outage, at most the
/// smaller of its last balance seen in Redis and `budget`; a member's hard
/// limit is checked against the last spend seen plus local holds. So across
/// N processes a balance or limit is overspent by at most N × budget. The
/// costs reach Redis through the ledger: rows settled here carry
/// `LOCAL_STAMP`, which the writer recognises as "not in the counter yet".
pub struct LocalFallback {
    budget: Money,
    last_known: Mutex<HashMap<String, i64>>,
    local: MemoryCounters,
    /// Redis is away (the last call failed).
    pub degraded: std::sync::atomic::AtomicBool,
    /// Admissions served by the fallback.
    pub admissions: std::sync::atomic::AtomicU64,
}

impl LocalFallback {
    fn new(budget: Money) -> LocalFallback {
        LocalFallback {
            budget,
            last_known: Mutex::new(HashMap::new()),
            local: MemoryCounters::with_stamp(LOCAL_STAMP),
            degraded: std::sync::atomic::AtomicBool::new(false),
            admissions: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn remember(&self, account: &str, spend: Option<SpendHold<'_>>, reserve: &Reserve) {
        if let Reserve::Held {
            remaining,
            spend: spent,
            ..
        } = reserve
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

    fn reserve(
        &self,
        account: &str,
        amount: Money,
        spend: Option<SpendHold<'_>>,
    ) -> Result<Reserve, CounterError> {
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
            self.admissions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(reserve)
    }
}

impl RedisCounters {
    fn key(&self, key: &CounterKey) -> String {
        format!("{}:{}", self.prefix, key.name())
    }

    /// The mark of one request's settlement, kept `SETTLED_MARK_SECS`.
    fn settled_key(&self, request_id: &str) -> String {
        format!("{}:settled:{request_id}", self.prefix)
    }

    async fn reserve(
        &self,
        account: &str,
        amount: Money,
        spend: Option<SpendHold<'_>>,
    ) -> Result<Reserve, CounterError> {
        let mut connection = self.connection.clone();
        let mut invocation = self
            .reserve
            .key(self.key(&CounterKey::Balance(account.to_string())));
        if let Some(spend) = spend {
            invocation.key(self.key(&CounterKey::Spend(spend.key.to_string())));
        }
        invocation.arg(amount.nano());
        invocation.arg(
            spend
                .and_then(|s| s.hard_limit)
                .map_or(String::new(), |l| l.nano().to_string()),
        );
        invocation.arg(-amount.nano());
        let (status, balance, spent, balance_stamp, spend_stamp): (
            i64,
            String,
            String,
            String,
            String,
        ) = invocation.invoke_async(&mut connection).await?;
        let balance = Money::from_nano(balance.parse().unwrap_or(0));
        let spent = Money::from_nano(spent.parse().unwrap_or(0));
        Ok(match status {
            1 => Reserve::Held {
                remaining: balance,
                spend: spend.map(|_| spent),
                stamps: Stamps {
                    balance: balance_stamp,
                    spend: spend_stamp,
                },
            },
            0 => Reserve::Insufficient { available: balance },
            2 => Reserve::LimitReached {
                spent,
                limit: spend.and_then(|s| s.hard_limit).unwrap_or(Money::ZERO),
            },
            -2 => Reserve::MissingSpend,
            _ => Reserve::MissingBalance,
        })
    }

    async fn seed(&self, key: &CounterKey, value: Money) -> Result<(), CounterError> {
        let mut connection = self.connection.clone();
        let expiry = match key {
            CounterKey::Spend(_) => SPEND_TTL_SECS.to_string(),
            CounterKey::Balance(_) => String::new(),
        };
        let _: i64 = self
            .seed
            .key(self.key(key))
            .arg(value.nano())
            .arg(crate::keys::random_base62(16))
            .arg(expiry)
            .invoke_async(&mut connection)
            .await?;
        Ok(())
    }

    async fn settle(
        &self,
        account: &str,
        spend_key: Option<&str>,
        hold: Money,
        cost: Money,
        stamps: &Stamps,
        request_id: &str,
    ) -> Result<Stamps, CounterError> {
        let mut connection = self.connection.clone();
        let mut invocation = self
            .settle
            .key(self.key(&CounterKey::Balance(account.to_string())));
        if let Some(key) = spend_key {
            invocation.key(self.key(&CounterKey::Spend(key.to_string())));
        }
        invocation.key(self.settled_key(request_id));
        let unused = hold.nano().saturating_sub(cost.nano());
        invocation
            .arg(&stamps.balance)
            .arg(&stamps.spend)
            .arg(unused)
            .arg(-cost.nano())
            .arg(-unused)
            .arg(cost.nano())
            .arg(SETTLED_MARK_SECS);
        let (balance, spend): (String, String) = invocation.invoke_async(&mut connection).await?;
        Ok(Stamps { balance, spend })
    }

    async fn apply_if(
        &self,
        key: &CounterKey,
        delta: i64,
        stamp: &str,
    ) -> Result<(), CounterError> {
        let mut connection = self.connection.clone();
        let _: i64 = self
            .apply
            .key(self.key(key))
            .arg(delta)
            .arg(stamp)
            .invoke_async(&mut connection)
            .await?;
        Ok(())
    }

    async fn stamps(&self, keys: &[CounterKey]) -> Result<Vec<String>, CounterError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.connection.clone();
        let mut pipeline = redis::pipe();
        for key in keys {
            pipeline.cmd("HGET").arg(self.key(key)).arg("s");
        }
        let stamps: Vec<Option<String>> = pipeline.query_async(&mut connection).await?;
        Ok(stamps.into_iter().map(Option::unwrap_or_default).collect())
    }

    async fn value(&self, key: &CounterKey) -> Result<Option<Money>, CounterError> {
        let mut connection = self.connection.clone();
        let value: Option<i64> = redis::cmd("HGET")
            .arg(self.key(key))
            .arg("v")
            .query_async(&mut connection)
            .await?;
        Ok(value.map(Money::from_nano))
    }
}
