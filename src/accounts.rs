//! Where the durable ledger and the live counters meet: seeding counters
//! from the store, crediting an account, and writing ledger rows, each in
//! an order that keeps the counters equal to the ledger even when Redis
//! loses everything (see `ARCHITECTURE.md`, "Redis restarts").
//!
//! The rule: a counter rebuild reads the ledger under an exclusive lock on
//! that counter; a ledger write or a credit holds the same lock shared and
//! reads the counter's stamp inside it. So each write lands wholly before a
//! rebuild (the rebuild includes it) or wholly after (the writer sees the new
//! stamp and applies its cost to the rebuilt counter itself).

use std::collections::BTreeSet;

use crate::counters::{CounterError, CounterKey, Counters};
use crate::money::Money;
use crate::policy::Period;
use crate::store::{CounterLock, Credit, Store, StoreError, UsageRow};

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("counters: {0}")]
    Counters(#[from] CounterError),
}

impl From<crate::singleflight::Interrupted> for AccountsError {
    fn from(interrupted: crate::singleflight::Interrupted) -> Self {
        AccountsError::Store(interrupted.into())
    }
}

impl From<AccountsError> for crate::error::GatewayError {
    /// A seed, credit or write that could not reach the database or the
    /// counters: retryable, never a 500.
    fn from(error: AccountsError) -> Self {
        Self::from(&error)
    }
}

impl From<&AccountsError> for crate::error::GatewayError {
    fn from(error: &AccountsError) -> Self {
        tracing::warn!(%error, "Counter step failed.");
        let what = match error {
            AccountsError::Store(_) => "its database to read this balance",
            AccountsError::Counters(_) => "its counters",
        };
        crate::error::GatewayError::Unavailable(format!(
            "The gateway cannot reach {what}; retry shortly."
        ))
    }
}

/// Seeds a missing balance counter from the ledger (credits − spend).
pub async fn seed_balance(
    store: &Store,
    counters: &Counters,
    account: &str,
) -> Result<(), AccountsError> {
    let key = CounterKey::Balance(account.to_string());
    if !counters.can_be_rebuilt() {
        let balance = store.recorded_balance(account).await?;
        counters.seed(&key, balance).await?;
        return Ok(());
    }
    let mut lock = store.lock_counters(&[lock_name(&key)], true).await?;
    let seeded = async {
        let balance = Store::recorded_balance_on(lock.conn(), account).await?;
        counters.seed(&key, balance).await?;
        Ok::<_, AccountsError>(())
    }
    .await;
    finish(lock, seeded).await
}

/// Seeds a missing member-spend counter from the ledger rows of the month.
pub async fn seed_spend(
    store: &Store,
    counters: &Counters,
    team_id: &str,
    user_id: &str,
    period: &Period,
    spend_key: &str,
) -> Result<(), AccountsError> {
    let key = CounterKey::Spend(spend_key.to_string());
    if !counters.can_be_rebuilt() {
        let spent = store
            .member_spend(team_id, user_id, period.start_ms, period.end_ms)
            .await?;
        counters.seed(&key, spent).await?;
        return Ok(());
    }
    let mut lock = store.lock_counters(&[lock_name(&key)], true).await?;
    let spent = Store::member_spend_on(
        lock.conn(),
        team_id,
        user_id,
        period.start_ms,
        period.end_ms,
    )
    .await?;
    counters.seed(&key, spent).await?;
    lock.commit().await?;
    Ok(())
}

/// Stores a credit, then moves the live balance, unless the counter was
/// rebuilt in between (then the rebuild already counted it) or is missing
/// (its seed will).
pub async fn add_credit(
    store: &Store,
    counters: &Counters,
    credit: &Credit<'_>,
) -> Result<(), AccountsError> {
    let key = CounterKey::Balance(credit.user_id.to_string());
    let mut lock = store.lock_counters(&[lock_name(&key)], false).await?;
    let stamp = counters
        .stamps(std::slice::from_ref(&key))
        .await?
        .pop()
        .unwrap_or_default();
    Store::add_credit_on(lock.conn(), credit).await?;
    lock.commit().await?;
    counters
        .credit_if(credit.user_id, credit.amount, &stamp)
        .await?;
    Ok(())
}

/// Commits on success; on failure rolls back at once, so no lock outlives
/// the error.
async fn finish<T>(
    lock: CounterLock,
    result: Result<T, AccountsError>,
) -> Result<T, AccountsError> {
    match result {
        Ok(value) => {
            lock.commit().await?;
            Ok(value)
        }
        Err(error) => {
            lock.rollback().await;
            Err(error)
        }
    }
}

/// The counters a row's cost is counted in.
fn row_counters(row: &UsageRow) -> Vec<(CounterKey, &str)> {
    let mut keys = vec![(
        CounterKey::Balance(row.account_id.clone()),
        row.counted.balance.as_str(),
    )];
    if let Some(spend_key) = &row.spend_key {
        keys.push((
            CounterKey::Spend(spend_key.clone()),
            row.counted.spend.as_str(),
        ));
    }
    keys
}

fn lock_name(key: &CounterKey) -> String {
    match key {
        CounterKey::Balance(account) => format!("bal:{account}"),
        CounterKey::Spend(spend) => format!("spend:{spend}"),
    }
}

/// Writes ledger rows; where a counter was rebuilt after a row's cost was
/// counted (and before the row was stored), applies the cost to the rebuilt
/// counter. Returns how many rows were newly stored.
pub async fn write_rows(
    store: &Store,
    counters: &Counters,
    rows: &[UsageRow],
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
    let names: Vec<String> = keys.iter().map(lock_name).collect();
    let mut lock = store.lock_counters(&names, false).await?;
    let stored = async {
        let stamps_now = counters.stamps(&keys).await?;
        let inserted = Store::insert_usage_rows_on(lock.conn(), rows).await?;
        Ok::<_, AccountsError>((stamps_now, inserted))
    }
    .await;
    let (stamps_now, inserted) = finish(lock, stored).await?;
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
