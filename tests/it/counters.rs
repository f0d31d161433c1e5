//! The Redis counter steps against a real Redis: a settlement retried after
//! a lost reply (Redis ran it, the answer never came) changes nothing the
//! second time.

use tollgate::counters::{CounterKey, Counters, Reserve, SpendHold};
use tollgate::money::Money;

use crate::helpers::gateway::redis_url;

#[tokio::test]
async fn a_retried_settlement_applies_once() {
    let prefix = format!("tgtest-settle-{}", tollgate::keys::random_base62(8));
    let counters = Counters::redis(&redis_url(), &prefix, None).await.unwrap();
    let balance = CounterKey::Balance("acct".into());
    let spend = CounterKey::Spend("acct:team:user:2026-11".into());
    counters
        .seed(&balance, Money::parse_usd("1").unwrap())
        .await
        .unwrap();
    counters.seed(&spend, Money::ZERO).await.unwrap();
    let hold = Money::parse_usd("0.004").unwrap();
    let cost = Money::parse_usd("0.0033475").unwrap();
    let id = tollgate::keys::new_request_id();
    let held = counters
        .reserve(
            "acct",
            hold,
            Some(SpendHold {
                key: "acct:team:user:2026-11",
                hard_limit: None,
            }),
        )
        .await
        .unwrap();
    let Reserve::Held { stamps, .. } = held else {
        panic!("not held: {held:?}");
    };
    let first = counters
        .settle(
            "acct",
            Some("acct:team:user:2026-11"),
            hold,
            cost,
            &stamps,
            &id,
        )
        .await
        .unwrap();
    // The same settlement again, as a retry after a lost reply would send.
    let again = counters
        .settle(
            "acct",
            Some("acct:team:user:2026-11"),
            hold,
            cost,
            &stamps,
            &id,
        )
        .await
        .unwrap();
    assert_eq!(first, again, "the retry reports the same stamps");
    assert_eq!(
        counters.value(&balance).await.unwrap(),
        Some(Money::from_nano(1_000_000_000 - cost.nano()))
    );
    assert_eq!(counters.value(&spend).await.unwrap(), Some(cost));

    // Another request settles normally beside it.
    let other = tollgate::keys::new_request_id();
    let Reserve::Held { stamps, .. } = counters.reserve("acct", hold, None).await.unwrap() else {
        panic!("not held");
    };
    counters
        .settle("acct", None, hold, cost, &stamps, &other)
        .await
        .unwrap();
    assert_eq!(
        counters.value(&balance).await.unwrap(),
        Some(Money::from_nano(1_000_000_000 - 2 * cost.nano()))
    );
    // The settled marks expire on their own; remove this test's keys now.
    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        keys.iter().any(|k| k.contains(":settled:")),
        "the settled marks are kept for retries: {keys:?}"
    );
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Balances past 14 digits of nano-dollars ($100,000 and more) come back
/// from the reserve script exact, not in a float's exponent form.
#[tokio::test]
async fn a_large_balance_is_held_exactly() {
    let prefix = format!("tgtest-large-{}", tollgate::keys::random_base62(8));
    let counters = Counters::redis(&redis_url(), &prefix, None).await.unwrap();
    let balance = CounterKey::Balance("acct".into());
    let spend = CounterKey::Spend("acct:team:user:2026-12".into());
    let credit = Money::parse_usd("1000000").unwrap();
    counters.seed(&balance, credit).await.unwrap();
    counters
        .seed(&spend, Money::parse_usd("123456.789").unwrap())
        .await
        .unwrap();
    let hold = Money::parse_usd("0.0000493").unwrap();
    let held = counters
        .reserve(
            "acct",
            hold,
            Some(SpendHold {
                key: "acct:team:user:2026-12",
                hard_limit: None,
            }),
        )
        .await
        .unwrap();
    let Reserve::Held {
        remaining, spend, ..
    } = held
    else {
        panic!("not held: {held:?}");
    };
    assert_eq!(remaining, Money::from_nano(credit.nano() - hold.nano()));
    assert_eq!(
        spend,
        Some(Money::from_nano(
            Money::parse_usd("123456.789").unwrap().nano() + hold.nano()
        ))
    );
    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}:bal:{{acct}}"))
        .arg(format!("{prefix}:spend:{{acct}}:team:user:2026-12"))
        .query_async(&mut conn)
        .await
        .unwrap();
}
