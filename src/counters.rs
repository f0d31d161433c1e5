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

/// The answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    /// Held; the balance left after the hold.
    Held { remaining: Money },
    /// The account cannot cover the amount; what it has.
    Insufficient { available: Money },
    /// No counter yet: seed it from the store and ask again.
    Missing,
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

    /// Atomically holds `amount` against the account's balance if it covers it.
    pub async fn reserve(&self, account: &str, amount: Money) -> Result<Reserve, CounterError> {
        match self {
            Counters::Memory(memory) => memory.reserve(account, amount),
            Counters::Redis(redis) => redis.reserve(account, amount).await,
        }
    }

    /// Sets a missing counter; an existing one is left alone (another
    /// request or process seeded it first).
    pub async fn seed(&self, account: &str, balance: Money) -> Result<(), CounterError> {
        match self {
            Counters::Memory(memory) => memory.seed(account, balance),
            Counters::Redis(redis) => redis.seed(account, balance).await,
        }
    }

    /// Adds `delta` to an existing counter (a settlement returning the
    /// unused part of a hold, or a credit). A missing counter is left
    /// missing: its next seed reads the store, which has the truth.
    /// Returns whether the counter existed.
    pub async fn adjust(&self, account: &str, delta: Money) -> Result<bool, CounterError> {
        match self {
            Counters::Memory(memory) => memory.adjust(account, delta),
            Counters::Redis(redis) => redis.adjust(account, delta).await,
        }
    }

    /// The counter's value, if it exists.
    pub async fn balance(&self, account: &str) -> Result<Option<Money>, CounterError> {
        match self {
            Counters::Memory(memory) => memory.balance(account),
            Counters::Redis(redis) => redis.balance(account).await,
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

/// One process's counters. The lock is held for a map lookup and an integer
/// add, never across an await.
#[derive(Default)]
pub struct MemoryCounters {
    balances: Mutex<HashMap<String, i64>>,
}

impl MemoryCounters {
    fn reserve(&self, account: &str, amount: Money) -> Result<Reserve, CounterError> {
        let mut balances = self.balances.lock().map_err(|_| CounterError::Poisoned)?;
        let Some(balance) = balances.get_mut(account) else {
            return Ok(Reserve::Missing);
        };
        if *balance < amount.nano() {
            return Ok(Reserve::Insufficient {
                available: Money::from_nano(*balance),
            });
        }
        *balance -= amount.nano();
        Ok(Reserve::Held {
            remaining: Money::from_nano(*balance),
        })
    }

    fn seed(&self, account: &str, balance: Money) -> Result<(), CounterError> {
        let mut balances = self.balances.lock().map_err(|_| CounterError::Poisoned)?;
        balances
            .entry(account.to_string())
            .or_insert(balance.nano());
        Ok(())
    }

    /// The settlement path for memory counters: synchronous, so it can run
    /// even from a `Drop` outside the runtime.
    pub fn adjust(&self, account: &str, delta: Money) -> Result<bool, CounterError> {
        let mut balances = self.balances.lock().map_err(|_| CounterError::Poisoned)?;
        match balances.get_mut(account) {
            Some(balance) => {
                *balance = balance.saturating_add(delta.nano());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn balance(&self, account: &str) -> Result<Option<Money>, CounterError> {
        let balances = self.balances.lock().map_err(|_| CounterError::Poisoned)?;
        Ok(balances.get(account).map(|b| Money::from_nano(*b)))
    }
}

// === impl RedisCounters ===

/// Holds `ARGV[1]` against `KEYS[1]` if the balance covers it. The
/// subtraction is Redis's own exact 64-bit `DECRBY`; Lua only compares.
/// Returns `{status, balance}` where status is 1 held, 0 insufficient, -1
/// missing.
const RESERVE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1, '0'}
end
local after = redis.call('DECRBY', KEYS[1], ARGV[1])
if after < 0 then
  local restored = redis.call('INCRBY', KEYS[1], ARGV[1])
  return {0, tostring(restored)}
end
return {1, tostring(after)}
";

/// Adds `ARGV[1]` to `KEYS[1]` only if it exists.
const ADJUST_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('INCRBY', KEYS[1], ARGV[1])
return 1
";

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

    async fn reserve(&self, account: &str, amount: Money) -> Result<Reserve, CounterError> {
        let mut connection = self.connection.clone();
        let (status, balance): (i64, String) = self
            .reserve
            .key(self.balance_key(account))
            .arg(amount.nano())
            .invoke_async(&mut connection)
            .await?;
        let balance = Money::from_nano(balance.parse().unwrap_or(0));
        Ok(match status {
            1 => Reserve::Held { remaining: balance },
            0 => Reserve::Insufficient { available: balance },
            _ => Reserve::Missing,
        })
    }

    async fn seed(&self, account: &str, balance: Money) -> Result<(), CounterError> {
        let mut connection = self.connection.clone();
        redis::cmd("SET")
            .arg(self.balance_key(account))
            .arg(balance.nano())
            .arg("NX")
            .query_async::<Option<String>>(&mut connection)
            .await?;
        Ok(())
    }

    async fn adjust(&self, account: &str, delta: Money) -> Result<bool, CounterError> {
        let mut connection = self.connection.clone();
        let existed: i64 = self
            .adjust
            .key(self.balance_key(account))
            .arg(delta.nano())
            .invoke_async(&mut connection)
            .await?;
        Ok(existed == 1)
    }

    async fn balance(&self, account: &str) -> Result<Option<Money>, CounterError> {
        let mut connection = self.connection.clone();
        let value: Option<i64> = redis::cmd("GET")
            .arg(self.balance_key(account))
            .query_async(&mut connection)
            .await?;
        Ok(value.map(Money::from_nano))
    }
}
