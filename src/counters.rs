//! Counters: the hot, atomic state that admission reads and changes.
//!
//! Two backends behind one enum, fixed at startup (no silent fallback from
//! Redis to memory): `Memory` for one process (the embedded default) and
//! `Redis` so several gateway processes act as one. Every admission and
//! every settlement is one atomic step: one critical section in memory, one
//! Lua script in Redis.
//!
//! A balance counter holds what an account may still spend: credits minus
//! settled spend minus outstanding reservations. A missing counter is
//! seeded from the store (credits minus recorded spend) by the caller.

use std::collections::HashMap;
use std::sync::Mutex;

use redis::aio::ConnectionManager;
use redis::Script;

use crate::money::Money;

#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("counter state is poisoned")]
    Poisoned,
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

/// The answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    /// Held; the balance left, and the member's spend with the hold.
    Held {
        remaining: Money,
        spend: Option<Money>,
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

    pub async fn redis(url: &str, prefix: &str) -> Result<Counters, CounterError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(std::time::Duration::from_secs(2))
            .set_response_timeout(std::time::Duration::from_secs(2));
        let connection = ConnectionManager::new_with_config(client, config).await?;
        Ok(Counters::Redis(RedisCounters {
            connection,
            prefix: prefix.to_string(),
            reserve: Script::new(RESERVE_LUA),
            adjust: Script::new(ADJUST_LUA),
        }))
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Counters::Memory(_) => "memory",
            Counters::Redis(_) => "redis",
        }
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
            Counters::Redis(redis) => redis.reserve(account, amount, spend).await,
        }
    }

    /// Sets a missing balance counter; an existing one is left alone
    /// (another request or process seeded it first).
    pub async fn seed(&self, account: &str, balance: Money) -> Result<(), CounterError> {
        match self {
            Counters::Memory(memory) => memory.seed(&balance_key(account), balance),
            Counters::Redis(redis) => redis.seed(&redis.balance_key(account), balance).await,
        }
    }

    /// Sets a missing spend counter.
    pub async fn seed_spend(&self, key: &str, spend: Money) -> Result<(), CounterError> {
        match self {
            Counters::Memory(memory) => memory.seed(&spend_key(key), spend),
            Counters::Redis(redis) => redis.seed(&redis.spend_key(key), spend).await,
        }
    }

    /// Returns the unused part of a hold (or takes the excess): `delta` is
    /// added to the balance and taken from the spend counter, if they exist.
    /// A missing counter stays missing: its next seed reads the store,
    /// which has the truth. Returns whether the balance counter existed.
    pub async fn adjust(
        &self,
        account: &str,
        delta: Money,
        spend_key: Option<&str>,
    ) -> Result<bool, CounterError> {
        match self {
            Counters::Memory(memory) => memory.adjust(account, delta, spend_key),
            Counters::Redis(redis) => redis.adjust(account, delta, spend_key).await,
        }
    }

    /// The member's spend counter, if it exists.
    pub async fn spend(&self, key: &str) -> Result<Option<Money>, CounterError> {
        match self {
            Counters::Memory(memory) => memory.get(&spend_key(key)),
            Counters::Redis(redis) => redis.get(&redis.spend_key(key)).await,
        }
    }

    /// The balance counter's value, if it exists.
    pub async fn balance(&self, account: &str) -> Result<Option<Money>, CounterError> {
        match self {
            Counters::Memory(memory) => memory.get(&balance_key(account)),
            Counters::Redis(redis) => redis.get(&redis.balance_key(account)).await,
        }
    }

    pub async fn ping(&self) -> Result<(), CounterError> {
        match self {
            Counters::Memory(_) => Ok(()),
            Counters::Redis(redis) => {
                let mut connection = redis.connection.clone();
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await?;
                Ok(())
            }
        }
    }
}

// === impl MemoryCounters ===

fn balance_key(account: &str) -> String {
    format!("bal:{account}")
}

fn spend_key(key: &str) -> String {
    format!("spend:{key}")
}

/// One process's counters. The lock is held for map lookups and integer
/// adds, never across an await, so a hold on balance and spend is atomic.
#[derive(Default)]
pub struct MemoryCounters {
    values: Mutex<HashMap<String, i64>>,
}

impl MemoryCounters {
    fn reserve(
        &self,
        account: &str,
        amount: Money,
        spend: Option<SpendHold<'_>>,
    ) -> Result<Reserve, CounterError> {
        let mut values = self.values.lock().map_err(|_| CounterError::Poisoned)?;
        let balance_key = balance_key(account);
        let Some(&balance) = values.get(&balance_key) else {
            return Ok(Reserve::MissingBalance);
        };
        let spend_key = spend.map(|s| spend_key(s.key));
        let spent = match &spend_key {
            Some(key) => match values.get(key) {
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
        values.insert(balance_key, balance - amount.nano());
        let spend_after = match spend_key {
            Some(key) => {
                let after = spent.unwrap_or(0).saturating_add(amount.nano());
                values.insert(key, after);
                Some(Money::from_nano(after))
            }
            None => None,
        };
        Ok(Reserve::Held {
            remaining: Money::from_nano(balance - amount.nano()),
            spend: spend_after,
        })
    }

    fn seed(&self, key: &str, value: Money) -> Result<(), CounterError> {
        let mut values = self.values.lock().map_err(|_| CounterError::Poisoned)?;
        values.entry(key.to_string()).or_insert(value.nano());
        Ok(())
    }

    /// The settlement path for memory counters: synchronous, so it can run
    /// even from a `Drop` outside the runtime.
    pub fn adjust(
        &self,
        account: &str,
        delta: Money,
        spend: Option<&str>,
    ) -> Result<bool, CounterError> {
        let mut values = self.values.lock().map_err(|_| CounterError::Poisoned)?;
        if let Some(key) = spend {
            if let Some(spent) = values.get_mut(&spend_key(key)) {
                *spent = spent.saturating_sub(delta.nano());
            }
        }
        match values.get_mut(&balance_key(account)) {
            Some(balance) => {
                *balance = balance.saturating_add(delta.nano());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Money>, CounterError> {
        let values = self.values.lock().map_err(|_| CounterError::Poisoned)?;
        Ok(values.get(key).map(|b| Money::from_nano(*b)))
    }
}

// === impl RedisCounters ===

/// Holds `ARGV[1]` against the balance `KEYS[1]` and, when `KEYS[2]` is
/// given, adds it to that spend counter, refusing if `ARGV[2]` (a hard
/// limit; empty for none) would be passed. All or nothing. Subtractions are
/// Redis's own exact 64-bit `DECRBY`/`INCRBY`; Lua only compares. Returns
/// `{status, balance, spend}`: 1 held, 0 insufficient, 2 limit reached,
/// -1 balance missing, -2 spend missing.
const RESERVE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1, '0', '0'}
end
local spent = nil
if #KEYS > 1 then
  spent = redis.call('GET', KEYS[2])
  if not spent then
    return {-2, '0', '0'}
  end
  if ARGV[2] ~= '' and tonumber(spent) + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
    return {2, '0', spent}
  end
end
local after = redis.call('DECRBY', KEYS[1], ARGV[1])
if after < 0 then
  local restored = redis.call('INCRBY', KEYS[1], ARGV[1])
  return {0, tostring(restored), '0'}
end
local spend_after = '0'
if #KEYS > 1 then
  spend_after = tostring(redis.call('INCRBY', KEYS[2], ARGV[1]))
end
return {1, tostring(after), spend_after}
";

/// Adds `ARGV[1]` to the balance `KEYS[1]` and subtracts it from the spend
/// counter `KEYS[2]`, each only if it exists.
const ADJUST_LUA: &str = r"
if #KEYS > 1 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('DECRBY', KEYS[2], ARGV[1])
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('INCRBY', KEYS[1], ARGV[1])
return 1
";

/// Spend counters outlive their month by a few days, then expire.
const SPEND_TTL_SECS: u64 = 40 * 24 * 3600;

pub struct RedisCounters {
    connection: ConnectionManager,
    prefix: String,
    reserve: Script,
    adjust: Script,
}

impl RedisCounters {
    fn balance_key(&self, account: &str) -> String {
        format!("{}:bal:{account}", self.prefix)
    }

    fn spend_key(&self, key: &str) -> String {
        format!("{}:spend:{key}", self.prefix)
    }

    async fn reserve(
        &self,
        account: &str,
        amount: Money,
        spend: Option<SpendHold<'_>>,
    ) -> Result<Reserve, CounterError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.reserve.key(self.balance_key(account));
        if let Some(spend) = spend {
            invocation.key(self.spend_key(spend.key));
        }
        invocation.arg(amount.nano());
        invocation.arg(
            spend
                .and_then(|s| s.hard_limit)
                .map_or(String::new(), |l| l.nano().to_string()),
        );
        let (status, balance, spent): (i64, String, String) =
            invocation.invoke_async(&mut connection).await?;
        let balance = Money::from_nano(balance.parse().unwrap_or(0));
        let spent = Money::from_nano(spent.parse().unwrap_or(0));
        Ok(match status {
            1 => Reserve::Held {
                remaining: balance,
                spend: spend.map(|_| spent),
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

    async fn seed(&self, key: &str, value: Money) -> Result<(), CounterError> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("SET");
        command.arg(key).arg(value.nano()).arg("NX");
        if key.starts_with(&format!("{}:spend:", self.prefix)) {
            command.arg("EX").arg(SPEND_TTL_SECS);
        }
        command
            .query_async::<Option<String>>(&mut connection)
            .await?;
        Ok(())
    }

    async fn adjust(
        &self,
        account: &str,
        delta: Money,
        spend: Option<&str>,
    ) -> Result<bool, CounterError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.adjust.key(self.balance_key(account));
        if let Some(key) = spend {
            invocation.key(self.spend_key(key));
        }
        invocation.arg(delta.nano());
        let existed: i64 = invocation.invoke_async(&mut connection).await?;
        Ok(existed == 1)
    }

    async fn get(&self, key: &str) -> Result<Option<Money>, CounterError> {
        let mut connection = self.connection.clone();
        let value: Option<i64> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut connection)
            .await?;
        Ok(value.map(Money::from_nano))
    }
}
