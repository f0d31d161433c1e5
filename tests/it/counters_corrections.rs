//! Settlements and corrections that cannot vanish (issue 13, item 7), on a
//! real Postgres and Redis: a settlement given up while Redis was away
//! leaves its row to correct the counter; a correction owed to a rebuilt
//! counter is stored with its row and applies once, even when retried after
//! a crash; one left behind is applied by a running gateway; and with
//! in-process counters a credit racing an account's first seed is kept.

use tollgate::accounts;
use tollgate::counters::{CounterKey, Counters, Reserve, Stamps};
use tollgate::domain::{RequestId, Status};
use tollgate::ledger::{self, Entry};
use tollgate::money::Money;
use tollgate::store::{Credit, Store, User};

use crate::helpers::gateway::{Backend, TestGateway, TestStorage};
use crate::helpers::proxy::fixture_upstream;

fn usd(text: &str) -> Money {
    Money::parse_usd(text).unwrap()
}

struct Fixture {
    storage: TestStorage,
    store: Store,
    counters: Counters,
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        let storage = TestStorage::new(backend).await;
        let store = Store::connect(&storage.database_url, 4).await.unwrap();
        store.migrate().await.unwrap();
        let counters = match backend {
            Backend::Production => Counters::redis(&storage.redis_url, &storage.redis_prefix, None)
                .await
                .unwrap(),
            Backend::Embedded => Counters::memory(),
        };
        Fixture {
            storage,
            store,
            counters,
        }
    }

    async fn user(&self, id: &str) {
        self.store
            .create_user(&User {
                id: id.to_string(),
                email: format!("{id}@example.com"),
                name: None,
                created_at: 0,
            })
            .await
            .unwrap();
    }

    /// A user whose balance counter is seeded at `credit`.
    async fn account(&self, credit: &str) -> String {
        let id = format!("u_{}", tollgate::keys::random_base62(10));
        self.user(&id).await;
        self.credit(&id, credit).await;
        accounts::seed_balance(&self.store, &self.counters, &id)
            .await
            .unwrap();
        id
    }

    async fn credit(&self, account: &str, amount: &str) {
        let credit_id = format!("c_{}", tollgate::keys::random_base62(10));
        accounts::add_credit(
            &self.store,
            &self.counters,
            &Credit {
                id: &credit_id,
                user_id: account,
                amount: usd(amount),
                note: None,
                created_by: "test",
                at: 1,
            },
        )
        .await
        .unwrap();
    }

    async fn balance(&self, account: &str) -> Option<Money> {
        self.counters.balance(account).await.unwrap()
    }

    /// Holds `hold` on the account; the stamps it was taken under.
    async fn hold(&self, account: &str, hold: Money) -> Stamps {
        match self.counters.reserve(account, hold, None).await.unwrap() {
            Reserve::Held { stamps, .. } => stamps,
            other => panic!("not held: {other:?}"),
        }
    }

    async fn finish(self) {
        self.store.close().await;
        self.storage.cleanup().await;
    }
}

/// The row of a finished request that cost `cost`, counted under `counted`.
fn row(account: &str, cost: Money, counted: Stamps) -> Entry {
    let mut entry = Entry::draft(RequestId::new(), account, "key", "/v1/chat/completions", 1);
    entry.model = "gpt-4o-mini".into();
    entry.provider = "openai".into();
    entry.status = Status::Ok;
    entry.http_status = 200;
    entry.cost_nano = cost.nano();
    entry.counted = counted;
    entry
}

#[tokio::test]
async fn a_given_up_settlement_is_corrected_when_its_row_is_stored() {
    let f = Fixture::new(Backend::Production).await;
    let account = f.account("1").await;
    // A $0.50 hold whose settlement never reached Redis: the counter keeps
    // the hold and never sees the $0.10 cost.
    let stamps = f.hold(&account, usd("0.5")).await;
    assert_eq!(f.balance(&account).await, Some(usd("0.5")));
    let mut entry = row(&account, usd("0.1"), stamps);
    entry.settle_failed = true;
    let rows = vec![entry];
    assert_eq!(
        ledger::write_rows(&f.store, &f.counters, &rows)
            .await
            .unwrap(),
        1
    );
    // The counter was dropped; its next seed reads the ledger.
    assert_eq!(f.balance(&account).await, None);
    accounts::seed_balance(&f.store, &f.counters, &account)
        .await
        .unwrap();
    assert_eq!(f.balance(&account).await, Some(usd("0.9")));
    // The same batch again (a replay): stored once, nothing corrected twice.
    assert_eq!(
        ledger::write_rows(&f.store, &f.counters, &rows)
            .await
            .unwrap(),
        0
    );
    assert_eq!(f.balance(&account).await, Some(usd("0.9")));
    assert_eq!(f.store.correction_count().await.unwrap(), 0);
    f.finish().await;
}

#[tokio::test]
async fn a_given_up_settlement_after_a_rebuild_adds_only_the_cost() {
    let f = Fixture::new(Backend::Production).await;
    let account = f.account("1").await;
    let stamps = f.hold(&account, usd("0.5")).await;
    // Redis lost the counter (a restart) and it was rebuilt from the ledger
    // before the row arrived: it has neither the hold nor the cost.
    drop_counter(&f, &CounterKey::Balance(account.clone())).await;
    accounts::seed_balance(&f.store, &f.counters, &account)
        .await
        .unwrap();
    assert_eq!(f.balance(&account).await, Some(usd("1")));
    let mut entry = row(&account, usd("0.1"), stamps);
    entry.settle_failed = true;
    ledger::write_rows(&f.store, &f.counters, &[entry])
        .await
        .unwrap();
    assert_eq!(f.balance(&account).await, Some(usd("0.9")));
    f.finish().await;
}

#[tokio::test]
async fn a_correction_retried_after_a_crash_applies_once() {
    let f = Fixture::new(Backend::Production).await;
    let account = f.account("1").await;
    let hold = usd("0.5");
    let cost = usd("0.1");
    let stamps = f.hold(&account, hold).await;
    let request = RequestId::new();
    let counted = f
        .counters
        .settle(&account, None, hold, cost, &stamps, request.as_str())
        .await
        .unwrap();
    assert_eq!(f.balance(&account).await, Some(usd("0.9")));
    // Rebuilt before the row was stored: the rebuild misses the cost.
    drop_counter(&f, &CounterKey::Balance(account.clone())).await;
    accounts::seed_balance(&f.store, &f.counters, &account)
        .await
        .unwrap();
    assert_eq!(f.balance(&account).await, Some(usd("1")));
    let mut entry = row(&account, cost, counted);
    entry.request_id = request.clone();
    ledger::write_rows(&f.store, &f.counters, &[entry])
        .await
        .unwrap();
    assert_eq!(f.balance(&account).await, Some(usd("0.9")));
    assert_eq!(f.store.correction_count().await.unwrap(), 0);

    // A process that applied the correction and died before deleting its
    // record leaves it behind; whoever finds it applies nothing twice.
    let stamp = f
        .counters
        .stamps(&[CounterKey::Balance(account.clone())])
        .await
        .unwrap()
        .remove(0);
    leave_correction(
        &f.storage.database_url,
        &format!("{}:b", request.as_str()),
        &format!("bal:{account}"),
        stamp.as_str(),
        -cost.nano(),
    )
    .await;
    let now = tollgate::clock::now_ms();
    assert_eq!(
        tollgate::corrections::apply_pending(&f.store, &f.counters, now, 0)
            .await
            .unwrap(),
        1,
        "the left-behind record is taken"
    );
    assert_eq!(
        f.balance(&account).await,
        Some(usd("0.9")),
        "not applied twice"
    );
    assert_eq!(f.store.correction_count().await.unwrap(), 0);
    f.finish().await;
}

#[tokio::test]
async fn a_running_gateway_applies_corrections_left_behind() {
    let upstream = fixture_upstream().await;
    let gw = TestGateway::start(Backend::Production, &upstream.base_url()).await;
    let (user_id, key) = gw.user_with_credit("corrected@example.com", "1").await;
    let reply = gw
        .post(
            "/v1/chat/completions",
            &key,
            serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(reply.status, 200);
    gw.ledger_idle().await;
    let before = gw.state.counters.balance(&user_id).await.unwrap().unwrap();
    let stamp = gw
        .state
        .counters
        .stamps(&[CounterKey::Balance(user_id.clone())])
        .await
        .unwrap()
        .remove(0);
    // What a writer that lost Redis after its commit leaves: a correction
    // recorded with its row, not applied.
    leave_correction(
        &gw.storage.database_url,
        "left-behind:b",
        &format!("bal:{user_id}"),
        stamp.as_str(),
        -usd("0.25").nano(),
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let now = gw.state.counters.balance(&user_id).await.unwrap().unwrap();
        if now != before {
            assert_eq!(now.nano(), before.nano() - usd("0.25").nano());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the correction was never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Its record goes once it is applied.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while gw.store().correction_count().await.unwrap() != 0 {
        assert!(std::time::Instant::now() < deadline, "record never cleared");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    gw.finish().await;
}

#[tokio::test]
async fn a_credit_racing_the_first_seed_is_kept_in_process() {
    let f = Fixture::new(Backend::Embedded).await;
    for i in 0..100 {
        let id = format!("race_{i}");
        f.user(&id).await;
        let seed = accounts::seed_balance(&f.store, &f.counters, &id);
        let credit = f.credit(&id, "0.01");
        let (seeded, ()) = tokio::join!(seed, credit);
        seeded.unwrap();
        assert_eq!(
            f.balance(&id).await,
            Some(f.store.recorded_balance(&id).await.unwrap()),
            "counter and ledger disagree for {id}"
        );
    }
    f.finish().await;
}

/// What a Redis restart does to one counter.
async fn drop_counter(f: &Fixture, key: &CounterKey) {
    f.counters.forget(key).await.unwrap();
}

async fn leave_correction(database_url: &str, id: &str, counter: &str, stamp: &str, delta: i64) {
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(database_url).await.unwrap();
    sqlx::query(
        "INSERT INTO counter_corrections (id, counter, stamp, delta_nano, rebuild, created_at) \
         VALUES ($1, $2, $3, $4, 0, $5)",
    )
    .bind(id)
    .bind(counter)
    .bind(stamp)
    .bind(delta)
    .bind(tollgate::clock::now_ms() - 60_000)
    .execute(&mut db)
    .await
    .unwrap();
}
