//! Where the durable store and the live counters meet: seeding counters
//! from the store and crediting an account, each in an order that keeps the
//! counters equal to the ledger even when Redis loses everything (see
//! `ARCHITECTURE.md`, "Redis restarts"). The ledger writer keeps the same
//! rule for usage rows (`ledger/writer.rs`).
//!
//! The rule: a counter rebuild reads the ledger under an exclusive lock on
//! that counter; a ledger write or a credit holds the same lock shared and
//! reads the counter's stamp inside it. So each write lands wholly before a
//! rebuild (the rebuild includes it) or wholly after (the writer sees the new
//! stamp and applies its cost to the rebuilt counter itself). In-process
//! counters, never rebuilt, order seeds against credits with a guard in
//! the process instead (`Counters::local_guard`).

use crate::clock::Period;
use crate::corrections;
use crate::counters::{Correction, CounterError, CounterKey, Counters, Fix};
use crate::error::GatewayError;
use crate::store::{Credit, Store, StoreError};

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

impl From<&AccountsError> for GatewayError {
    /// A seed, credit or write that could not reach the database or the
    /// counters: retryable, never a 500.
    fn from(error: &AccountsError) -> Self {
        let what = match error {
            AccountsError::Store(_) => "its database to read this balance",
            AccountsError::Counters(_) => "its counters",
        };
        GatewayError::Unavailable(format!("The gateway cannot reach {what}; retry shortly."))
    }
}

impl From<AccountsError> for GatewayError {
    fn from(error: AccountsError) -> Self {
        Self::from(&error)
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
        let _guard = counters.local_guard(false).await;
        let balance = store.recorded_balance(account).await?;
        counters.seed(&key, balance).await?;
        return Ok(());
    }
    let mut lock = store.lock_counters(&[key.name()], true).await?;
    let seeded = async {
        let balance = Store::recorded_balance_on(lock.conn(), account).await?;
        counters.seed(&key, balance).await?;
        Ok::<_, AccountsError>(())
    }
    .await;
    lock.finish(seeded).await
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
    let mut lock = store.lock_counters(&[key.name()], true).await?;
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
    // In-process counters: no seed may read the ledger before this credit
    // is stored and set the counter after it was moved (or found missing).
    let _guard = counters.local_guard(true).await;
    let mut lock = store.lock_counters(&[key.name()], false).await?;
    let stored = async {
        let stamp = counters
            .stamps(std::slice::from_ref(&key))
            .await?
            .pop()
            .unwrap_or_default();
        Store::add_credit_on(lock.conn(), credit).await?;
        // What the live counter is owed (nothing when it is missing: its
        // seed will read the credit), recorded with the credit when the
        // counter lives in Redis, so that Redis failing after the commit
        // cannot lose it (`corrections.rs`).
        let owed = Correction {
            id: format!("credit:{}", credit.id),
            key: key.clone(),
            stamp,
            fix: Fix::Add(credit.amount.nano()),
        };
        if counters.can_be_rebuilt() && !owed.stamp.is_missing() {
            corrections::insert_on(lock.conn(), std::slice::from_ref(&owed), credit.at).await?;
        }
        Ok::<_, AccountsError>(owed)
    }
    .await;
    let owed = lock.finish(stored).await?;
    if counters.can_be_rebuilt() {
        if !owed.stamp.is_missing() {
            if let Err(error) =
                corrections::apply(store, counters, std::slice::from_ref(&owed)).await
            {
                // Stored: the counter gets it when Redis answers.
                tracing::warn!(%error, "Credit stored; its counter correction is applied later.");
            }
        }
    } else {
        counters
            .credit_if(credit.user_id, credit.amount, &owed.stamp)
            .await?;
    }
    Ok(())
}
