//! What a stored row owes the live counters. Two things leave a counter
//! wrong after a row is counted: a rebuild between the row's settlement and
//! its storage (the rebuilt counter lacks the cost), and a settlement given
//! up while Redis was away (the counter still has the hold and lacks the
//! cost). The writer records the fix in the same transaction as the row and
//! applies it after the commit (`crate::corrections`).

use std::collections::BTreeSet;

use super::Entry;
use crate::counters::{Correction, CounterKey, Fix, Stamp};
use crate::money::Money;

/// The counters a row's cost is counted in, with the stamps it was counted
/// under, and a tag for correction ids.
pub(super) fn row_counters(row: &Entry) -> Vec<(CounterKey, &Stamp, char)> {
    let mut keys = vec![(
        CounterKey::Balance(row.account_id.clone()),
        &row.counted.balance,
        'b',
    )];
    if let Some(spend_key) = &row.spend_key {
        keys.push((
            CounterKey::Spend(spend_key.clone()),
            &row.counted.spend,
            's',
        ));
    }
    keys
}

/// Whether a row may owe its counters anything.
pub(super) fn may_owe(row: &Entry) -> bool {
    row.cost_nano != 0 || row.settle_failed
}

/// The corrections newly stored rows owe, given the counters' stamps read
/// under the counter locks (`keys[i]` has `now[i]`).
pub(super) fn owed(
    rows: &[Entry],
    inserted: &BTreeSet<&str>,
    keys: &[CounterKey],
    now: &[Stamp],
) -> Vec<Correction> {
    let mut owed = Vec::new();
    for row in rows
        .iter()
        .filter(|r| may_owe(r) && inserted.contains(r.request_id.as_str()))
    {
        for (key, counted, tag) in row_counters(row) {
            let Some(stamp) = keys.iter().position(|k| *k == key).map(|i| &now[i]) else {
                continue;
            };
            if stamp.is_missing() {
                // No counter: its seed will read this row.
                continue;
            }
            let fix = if stamp != counted {
                // Rebuilt after the cost was counted and before this row
                // was stored: the rebuild missed the cost.
                if row.cost_nano == 0 {
                    continue;
                }
                Fix::Add(key.cost_delta(Money::from_nano(row.cost_nano)))
            } else if row.settle_failed {
                // The settlement never reached the counter: it holds the
                // hold, not the cost. Dropping it brings the truth back
                // from the ledger, whether or not a lost try did apply.
                Fix::Rebuild
            } else {
                continue;
            };
            owed.push(Correction {
                id: format!("{}:{tag}", row.request_id.as_str()),
                key,
                stamp: stamp.clone(),
                fix,
            });
        }
    }
    owed
}
