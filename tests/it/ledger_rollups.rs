//! Reports that do not slow down as the ledger grows (issue 17): the daily
//! rollups give the same answers as the rows to the nano-dollar, over
//! random rows and random ranges (whole days, partial days, one day, none),
//! whatever statements inserted them and however often; a database from
//! before the rollups and partitions is converted on start; months are
//! partitioned, rows of a month without its table are moved into it when
//! it is made, and retention drops whole old months without changing a
//! balance or a day-level report.

use std::collections::{BTreeSet, HashMap};

use sqlx::{Executor, Row};
use tollgate::domain::{RequestId, ServiceTier, Source, Status};
use tollgate::ledger::Entry;
use tollgate::store::partitions;
use tollgate::store::rollups::Span;
use tollgate::store::{GroupBy, MineBy, Store, User};

use crate::helpers::gateway::{Backend, TestStorage};

const DAY: i64 = 86_400_000;

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const TEAMS: [&str; 3] = ["tm_rollAAAAAAAAAAAAAAAA", "tm_rollBBBBBBBBBBBBBBBB", ""];
const USERS: [&str; 5] = ["usr_a", "usr_B", "usr_c", "usr_D", "usr_e"];
const MODELS: [&str; 4] = ["gpt-5.1", "claude-sonnet-4.5", "Gemini 2.5", "gpt-5-mini"];

/// A random row about `base` (± 10 days), refusals costing nothing.
fn random_row(rng: &mut Rng, base: i64) -> Entry {
    let team = rng.pick(&TEAMS);
    let user = rng.pick(&USERS);
    let started_at = base - 10 * DAY + rng.below(20 * DAY as u64) as i64;
    let refused = rng.below(10) == 0;
    let mut row = Entry::draft(RequestId::new(), user, "key_x", "chat", started_at);
    row.team_id = (!team.is_empty()).then(|| team.to_string());
    row.account_id = if team.is_empty() {
        user.to_string()
    } else {
        format!("owner_{}", &team[3..7])
    };
    row.model = rng.pick(&MODELS).to_string();
    row.provider = "mock".into();
    row.finished_at = started_at + 5;
    if refused {
        row.status = Status::Refused;
        return row;
    }
    row.status = Status::Ok;
    row.usage_source = if rng.below(7) == 0 {
        Source::Imported
    } else {
        Source::Exact
    };
    row.input_tokens = rng.below(5_000) as i64;
    row.output_tokens = rng.below(2_000) as i64;
    row.cached_tokens = rng.below(100) as i64;
    row.reasoning_tokens = rng.below(300) as i64;
    row.cache_write_tokens = rng.below(50) as i64;
    row.cache_write_1h_tokens = rng.below(3) as i64;
    row.audio_input_tokens = rng.below(3) as i64;
    row.audio_output_tokens = rng.below(3) as i64;
    row.web_search_calls = rng.below(2) as i64;
    row.web_fetch_calls = rng.below(2) as i64;
    row.code_execution_calls = rng.below(2) as i64;
    row.service_tier = match rng.below(3) {
        0 => Some(ServiceTier::Priority),
        1 => Some(ServiceTier::Flex),
        _ => None,
    };
    row.long_context = rng.below(5) == 0;
    row.cost_nano = rng.below(90_000_000) as i64 + 1;
    let mut tags = tollgate::tags::Tags::new();
    if rng.below(3) > 0 {
        tags.insert(
            "project".into(),
            rng.pick(&["alpha", "beta", "Gamma ray"]).into(),
        );
    }
    if rng.below(2) == 0 {
        tags.insert("env".into(), rng.pick(&["prod", "dev"]).into());
    }
    row.tags = tollgate::tags::to_text(&tags);
    row
}

async fn store_of(storage: &TestStorage) -> Store {
    let store = Store::connect(&storage.database_url, 4).await.unwrap();
    store.migrate().await.unwrap();
    for user in USERS {
        store
            .create_user(&User {
                id: user.to_string(),
                email: format!("{user}@example.com"),
                name: None,
                created_at: 0,
            })
            .await
            .unwrap();
    }
    store
}

/// Inserts `rows` in batches of random sizes, some of them twice.
async fn insert(store: &Store, rng: &mut Rng, rows: &[Entry]) {
    let mut at = 0;
    while at < rows.len() {
        let n = (1 + rng.below(400) as usize).min(rows.len() - at);
        let batch = &rows[at..at + n];
        store.insert_usage_rows(batch).await.unwrap();
        if rng.below(4) == 0 {
            // A replayed batch: stored rows are skipped, counted once.
            assert_eq!(store.insert_usage_rows(batch).await.unwrap(), 0);
        }
        at += n;
    }
}

/// Every report read both ways over `ranges`: rollups + partial days, and
/// the rows alone.
async fn assert_rollups_equal_rows(store: &Store, ranges: &[(i64, i64)]) {
    for &(from, to) in ranges {
        let (split, rows) = (Span::of(from, to), Span::rows_only(from, to));
        for team in &TEAMS[..2] {
            for by in [GroupBy::Member, GroupBy::Model, GroupBy::Day] {
                let a = store.usage_report_over(&split, team, by).await.unwrap();
                let b = store.usage_report_over(&rows, team, by).await.unwrap();
                assert_eq!(a, b, "{team} by {by:?} over {split:?}");
            }
            for by in [GroupBy::Member, GroupBy::Model] {
                let a = store
                    .usage_daily_split_over(&split, team, by)
                    .await
                    .unwrap();
                let b = store.usage_daily_split_over(&rows, team, by).await.unwrap();
                assert_eq!(a, b, "{team} daily split by {by:?} over {split:?}");
            }
        }
        for user in USERS {
            for by in [MineBy::Day, MineBy::Model, MineBy::Payer] {
                let a = store
                    .user_usage_report_over(&split, user, by)
                    .await
                    .unwrap();
                let b = store.user_usage_report_over(&rows, user, by).await.unwrap();
                assert_eq!(a, b, "{user} by {by:?} over {split:?}");
            }
        }
    }
}

/// What the rows say, computed here: per team member spend in a range, and
/// every account's balance (no credits: minus its spend, imports left out).
fn oracle_spend(rows: &[Entry], team: &str, from: i64, to: i64) -> HashMap<String, i64> {
    let mut spends = HashMap::new();
    for row in rows {
        if row.team_id.as_deref() == Some(team) && row.started_at >= from && row.started_at < to {
            *spends.entry(row.user_id.clone()).or_insert(0) += row.cost_nano;
        }
    }
    spends
}

fn oracle_balance(rows: &[Entry], account: &str) -> i64 {
    -rows
        .iter()
        .filter(|r| r.account_id == account && r.usage_source != Source::Imported)
        .map(|r| r.cost_nano)
        .sum::<i64>()
}

fn random_ranges(rng: &mut Rng, base: i64) -> Vec<(i64, i64)> {
    let day0 = base.div_euclid(DAY) * DAY;
    let mut ranges = vec![
        (day0 - 12 * DAY, day0 + 12 * DAY),
        (day0 - 3 * DAY, day0 + 2 * DAY),
        (day0 + 3_600_000, day0 + 7_200_000),
        (day0, day0),
        (day0 + 5, day0 - 5),
        (0, i64::MAX),
    ];
    for _ in 0..8 {
        let from = day0 - 11 * DAY + rng.below(22 * DAY as u64) as i64;
        let to = from + rng.below(8 * DAY as u64) as i64;
        ranges.push((from, to));
    }
    ranges
}

async fn rollups_equal_the_rows(backend: Backend) {
    let storage = TestStorage::new(backend).await;
    let store = store_of(&storage).await;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let base = tollgate::clock::now_ms();
    let rows: Vec<Entry> = (0..3_000).map(|_| random_row(&mut rng, base)).collect();
    insert(&store, &mut rng, &rows).await;
    // The import path on Postgres: one UNNEST statement.
    let more: Vec<Entry> = (0..500).map(|_| random_row(&mut rng, base)).collect();
    if backend == Backend::Production {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&storage.database_url)
            .await
            .unwrap();
        Store::insert_usage_rows_unnest(&mut conn, &more)
            .await
            .unwrap();
        assert_eq!(
            Store::insert_usage_rows_unnest(&mut conn, &more)
                .await
                .unwrap(),
            0
        );
    } else {
        insert(&store, &mut rng, &more).await;
    }
    let all: Vec<Entry> = rows.into_iter().chain(more).collect();

    let ranges = random_ranges(&mut rng, base);
    assert_rollups_equal_rows(&store, &ranges).await;

    // Against figures computed here from the rows themselves.
    for &(from, to) in &ranges {
        for team in &TEAMS[..2] {
            let expected = oracle_spend(&all, team, from, to);
            let spends = store.member_spends(team, from, to).await.unwrap();
            for user in USERS {
                let want = expected.get(user).copied().unwrap_or(0);
                let got = spends.get(user).map_or(0, |m| m.nano());
                assert_eq!(got, want, "{team} {user} spends over {from}..{to}");
                let one = store.member_spend(team, user, from, to).await.unwrap();
                assert_eq!(one.nano(), want, "{team} {user} spend over {from}..{to}");
            }
        }
    }
    let accounts: BTreeSet<&str> = all.iter().map(|r| r.account_id.as_str()).collect();
    for account in accounts {
        assert_eq!(
            store.recorded_balance(account).await.unwrap().nano(),
            oracle_balance(&all, account),
            "{account}'s balance"
        );
    }
    store.close().await;
    storage.cleanup().await;
}

crate::both_backends!(rollups_equal_the_rows);

/// Makes the test database look like one from before rollups and
/// partitions: a plain `usage_rows` holding `rows`, empty rollups.
async fn as_before_rollups(store: &Store, storage: &TestStorage, rows: &[Entry]) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&storage.database_url)
        .await
        .unwrap();
    for statement in [
        "DROP TABLE usage_rows CASCADE",
        "CREATE TABLE usage_rows (request_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, \
         key_id TEXT NOT NULL, account_id TEXT NOT NULL, team_id TEXT, model TEXT NOT NULL, \
         provider TEXT NOT NULL, endpoint TEXT NOT NULL, streamed BIGINT NOT NULL, \
         input_tokens BIGINT NOT NULL, cached_tokens BIGINT NOT NULL, \
         cache_write_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL, \
         reasoning_tokens BIGINT NOT NULL, cost_nano BIGINT NOT NULL, usage_source TEXT NOT NULL, \
         status TEXT NOT NULL, error_code TEXT, http_status BIGINT NOT NULL, \
         latency_ms BIGINT NOT NULL, started_at BIGINT NOT NULL, finished_at BIGINT NOT NULL, \
         cache_write_1h_tokens BIGINT NOT NULL DEFAULT 0, audio_input_tokens BIGINT NOT NULL DEFAULT 0, \
         audio_output_tokens BIGINT NOT NULL DEFAULT 0, web_search_calls BIGINT NOT NULL DEFAULT 0, \
         web_fetch_calls BIGINT NOT NULL DEFAULT 0, code_execution_calls BIGINT NOT NULL DEFAULT 0, \
         service_tier TEXT, long_context BIGINT NOT NULL DEFAULT 0, tags TEXT)",
        "CREATE INDEX usage_rows_account ON usage_rows (account_id, started_at)",
        "CREATE INDEX usage_rows_user ON usage_rows (user_id, started_at)",
        "CREATE INDEX usage_rows_team ON usage_rows (team_id, started_at)",
        "DELETE FROM usage_daily",
        "DELETE FROM settings WHERE key = 'usage_daily_built'",
    ] {
        conn.execute(statement).await.unwrap();
    }
    drop(conn);
    store.insert_usage_rows(rows).await.unwrap();
    let rolled: i64 = sqlx::query("SELECT COUNT(*) AS n FROM usage_daily")
        .fetch_one(&mut *store_conn(storage).await)
        .await
        .unwrap()
        .get("n");
    assert_eq!(rolled, 0, "no trigger on the old table");
}

async fn store_conn(storage: &TestStorage) -> Box<sqlx::PgConnection> {
    use sqlx::Connection;
    Box::new(
        sqlx::PgConnection::connect(&storage.database_url)
            .await
            .unwrap(),
    )
}

async fn count(storage: &TestStorage, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(&mut *store_conn(storage).await)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

#[tokio::test]
async fn an_old_ledger_is_partitioned_and_rolled_up_on_start_and_old_months_can_go() {
    let storage = TestStorage::new(Backend::Production).await;
    let store = store_of(&storage).await;
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let now = tollgate::clock::now_ms();
    let this_month = partitions::month_of(now);
    // Rows in this month, 13 and 15 months ago.
    let mut rows: Vec<Entry> = Vec::new();
    for months_ago in [0, 13, 15] {
        let base = partitions::month_start_ms(this_month - months_ago) + 12 * DAY;
        rows.extend((0..400).map(|_| random_row(&mut rng, base)));
    }
    as_before_rollups(&store, &storage, &rows).await;

    // The next start converts the table and fills the rollups.
    store.migrate().await.unwrap();
    assert_eq!(
        count(
            &storage,
            "SELECT COUNT(*) FROM pg_class WHERE relname = 'usage_rows' AND relkind = 'p'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&storage, "SELECT COUNT(*) FROM usage_rows").await,
        1200
    );
    assert_eq!(
        count(&storage, "SELECT COUNT(*) FROM usage_rows_default").await,
        0,
        "every existing month got its partition"
    );
    let ranges: Vec<(i64, i64)> = [0, 13, 15]
        .iter()
        .flat_map(|ago| {
            let start = partitions::month_start_ms(this_month - ago);
            [
                (start, start + 40 * DAY),
                (start + 7 * DAY + 5, start + 20 * DAY - 5),
            ]
        })
        .collect();
    assert_rollups_equal_rows(&store, &ranges).await;
    // A start of a converted database changes nothing.
    store.migrate().await.unwrap();
    assert_rollups_equal_rows(&store, &ranges).await;

    // A month without a table: its rows wait in the default partition and
    // move when it is made, counted once.
    let later = partitions::month_start_ms(this_month + 6) + 3 * DAY;
    let future: Vec<Entry> = (0..50).map(|_| random_row(&mut rng, later)).collect();
    store.insert_usage_rows(&future).await.unwrap();
    let in_default = count(&storage, "SELECT COUNT(*) FROM usage_rows_default").await;
    assert!(in_default > 0);
    let balances_before: Vec<i64> = {
        let mut all = Vec::new();
        for account in ["owner_roll", "usr_a", "usr_B"] {
            all.push(store.recorded_balance(account).await.unwrap().nano());
        }
        all
    };
    let months: BTreeSet<i64> = (this_month + 3..=this_month + 9).collect();
    partitions::ensure_months(&store, &months).await.unwrap();
    assert_eq!(
        count(&storage, "SELECT COUNT(*) FROM usage_rows_default").await,
        0
    );
    assert_eq!(
        count(&storage, "SELECT COUNT(*) FROM usage_rows").await,
        1250
    );
    let far = partitions::month_start_ms(this_month + 6) - 12 * DAY;
    assert_rollups_equal_rows(&store, &[(far, far + 30 * DAY)]).await;

    // Retention of 12 months drops the two old months' rows, keeps their
    // rollups: balances and day-level reports stay.
    let old = partitions::month_start_ms(this_month - 13);
    let old_report = store
        .usage_report(TEAMS[0], old, old + 31 * DAY, GroupBy::Member)
        .await
        .unwrap();
    assert!(!old_report.is_empty());
    let dropped = partitions::maintain(&store, 12, now).await.unwrap();
    assert_eq!(dropped, 2, "13 and 15 months ago");
    assert_eq!(
        count(&storage, "SELECT COUNT(*) FROM usage_rows").await,
        450
    );
    let mut balances_after = Vec::new();
    for account in ["owner_roll", "usr_a", "usr_B"] {
        balances_after.push(store.recorded_balance(account).await.unwrap().nano());
    }
    assert_eq!(balances_before, balances_after);
    assert_eq!(
        store
            .usage_report(TEAMS[0], old, old + 31 * DAY, GroupBy::Member)
            .await
            .unwrap(),
        old_report
    );
    // Kept months still agree with their rows.
    assert_rollups_equal_rows(&store, &ranges[..2]).await;
    store.close().await;
    storage.cleanup().await;
}

#[tokio::test]
async fn retention_on_sqlite_deletes_old_rows_and_keeps_rollups() {
    let storage = TestStorage::new(Backend::Embedded).await;
    let store = store_of(&storage).await;
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let now = tollgate::clock::now_ms();
    let this_month = partitions::month_of(now);
    let old = partitions::month_start_ms(this_month - 4);
    let mut rows: Vec<Entry> = (0..300)
        .map(|_| random_row(&mut rng, old + 15 * DAY))
        .collect();
    rows.extend((0..300).map(|_| random_row(&mut rng, now)));
    insert(&store, &mut rng, &rows).await;
    let report = store
        .usage_report(TEAMS[1], old, old + 28 * DAY, GroupBy::Model)
        .await
        .unwrap();
    let balance = store.recorded_balance("usr_a").await.unwrap();
    assert_eq!(partitions::maintain(&store, 0, now).await.unwrap(), 0);
    let deleted = partitions::maintain(&store, 2, now).await.unwrap();
    assert!(deleted > 0);
    assert_eq!(
        store
            .usage_report(TEAMS[1], old, old + 28 * DAY, GroupBy::Model)
            .await
            .unwrap(),
        report
    );
    assert_eq!(store.recorded_balance("usr_a").await.unwrap(), balance);
    store.close().await;
    storage.cleanup().await;
}
