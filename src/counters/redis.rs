//! Redis counters: several gateway processes act as one. Each counter is a
//! hash `{v: value, s: stamp}`; arithmetic is Redis's exact 64-bit HINCRBY
//! and Lua only compares. Every step is one script (`*.lua` beside this
//! file) and every call is bounded to 2 s: a call cut off by a dying server
//! fails (and is retried or refused), it never hangs a request.
//!
//! One Redis or a Redis Cluster (`redis+cluster://host:port,host:port`, or
//! several `redis://` URLs separated by commas). Every key is hash-tagged
//! with its paying account (`<prefix>:bal:{acct}`,
//! `<prefix>:spend:{acct}:team:user:YYYY-MM`, the settled and corrected
//! marks likewise), so each script, which touches one account's keys,
//! runs on one slot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};

use super::fallback::LocalFallback;
use super::lease::{Lease, Leases, Take};
use super::{Correction, CounterError, CounterKey, Fix, Reserve, SpendHold, Stamp, Stamps};
use crate::money::Money;

/// The longest wait for one Redis step.
const REDIS_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a settled hold stays marked: twice a settlement's retry window
/// (60 s, plus one 2 s try, `Counters::release`), so a retry after a lost
/// reply finds the mark and changes nothing. Redis keeps one small key per
/// request settled in this window.
pub const SETTLED_MARK_SECS: u64 = 120;

/// How long a correction's mark is kept: it only has to outlive the time
/// between applying the correction and deleting its record from the
/// database (a crash in between leaves the record, and its retry finds the
/// mark).
const CORRECTED_MARK_SECS: u64 = 24 * 3600;

/// Spend counters outlive their month by a few days, then expire.
const SPEND_TTL_SECS: u64 = 40 * 24 * 3600;

async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, CounterError>>,
) -> Result<T, CounterError> {
    tokio::time::timeout(REDIS_CALL_TIMEOUT, call)
        .await
        .unwrap_or(Err(CounterError::Timeout(REDIS_CALL_TIMEOUT)))
}

/// A money amount Redis returned as text.
fn money(text: &str) -> Result<Money, CounterError> {
    text.parse()
        .map(Money::from_nano)
        .map_err(|_| CounterError::Malformed(text.chars().take(32).collect()))
}

/// Where the counters live: one server, or the nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nodes {
    Single(String),
    Cluster(Vec<String>),
}

impl Nodes {
    /// Reads `storage.redis_url`: `redis+cluster://[auth@]h1:p1,h2:p2` (or
    /// `rediss+cluster://`), several URLs separated by commas (a cluster),
    /// or one URL.
    pub fn parse(url: &str) -> Nodes {
        for (scheme, node_scheme) in [
            ("redis+cluster://", "redis://"),
            ("rediss+cluster://", "rediss://"),
        ] {
            if let Some(rest) = url.strip_prefix(scheme) {
                let (auth, hosts) = match rest.rsplit_once('@') {
                    Some((auth, hosts)) => (format!("{auth}@"), hosts),
                    None => (String::new(), rest),
                };
                return Nodes::Cluster(
                    hosts
                        .split(',')
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .map(|host| format!("{node_scheme}{auth}{host}"))
                        .collect(),
                );
            }
        }
        if url.contains(',') {
            return Nodes::Cluster(
                url.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
        }
        Nodes::Single(url.to_string())
    }

    /// Every node's URL (one for a single server).
    pub fn urls(&self) -> Vec<String> {
        match self {
            Nodes::Single(url) => vec![url.clone()],
            Nodes::Cluster(urls) => urls.clone(),
        }
    }
}

/// A connection to one server (reconnecting) or to a cluster (following
/// its slots).
#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(cmd, offset, count),
            Link::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// A serving core's own connection to a single Redis (`server.per_core`),
/// made on that core so that its I/O is driven there: a core's Redis calls
/// then wake no other thread.
#[derive(Default)]
struct CoreLink {
    link: OnceLock<ConnectionManager>,
    connecting: AtomicBool,
}

/// The reconnecting manager's settings: keep reconnecting (every 0.5 s at
/// most) for as long as Redis is away (a reconnect that gives up would
/// leave the manager failed after Redis returns); each call is bounded by
/// `REDIS_CALL_TIMEOUT`.
fn manager_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_secs(2))
        .set_number_of_retries(1_000_000)
        .set_max_delay(500)
}

pub struct RedisCounters {
    connection: Link,
    /// The single server's client (not for a cluster), for the cores' links.
    single: Option<Box<redis::Client>>,
    /// One link per serving core, made on first use (empty: one link).
    core_links: Arc<[CoreLink]>,
    prefix: String,
    reserve: Script,
    settle: Script,
    seed: Script,
    apply: Script,
    correct: Script,
    lease: Script,
    /// Budget leases (`storage.lease_usd` above 0).
    leases: Option<Box<Leases>>,
    fallback: Option<Box<LocalFallback>>,
}

impl RedisCounters {
    pub(super) async fn connect(
        url: &str,
        prefix: &str,
        outage_budget: Option<Money>,
    ) -> Result<RedisCounters, CounterError> {
        let mut single = None;
        let connection = match Nodes::parse(url) {
            Nodes::Single(url) => {
                let client = redis::Client::open(url)?;
                single = Some(Box::new(client.clone()));
                Link::Single(ConnectionManager::new_with_config(client, manager_config()).await?)
            }
            Nodes::Cluster(nodes) => {
                // The cluster connection follows MOVED and ASK answers and
                // reconnects to nodes as it needs them; a call it cannot
                // finish fails within `REDIS_CALL_TIMEOUT`.
                let client = redis::cluster::ClusterClientBuilder::new(nodes)
                    .connection_timeout(Duration::from_secs(1))
                    .response_timeout(Duration::from_secs(2))
                    .retries(3)
                    .max_retry_wait(500)
                    .build()?;
                Link::Cluster(client.get_async_connection().await?)
            }
        };
        Ok(RedisCounters {
            connection,
            single,
            core_links: Arc::new([]),
            prefix: prefix.to_string(),
            reserve: Script::new(include_str!("reserve.lua")),
            settle: Script::new(include_str!("settle.lua")),
            seed: Script::new(include_str!("seed.lua")),
            apply: Script::new(include_str!("apply.lua")),
            correct: Script::new(include_str!("correct.lua")),
            lease: Script::new(include_str!("lease.lua")),
            leases: None,
            fallback: outage_budget.map(|budget| Box::new(LocalFallback::new(budget))),
        })
    }

    /// Gives each of `cores` serving cores a link of its own (single
    /// server only; a cluster connection is shared).
    pub(super) fn per_core(&mut self, cores: usize) {
        if self.single.is_some() {
            self.core_links = (0..cores).map(|_| CoreLink::default()).collect();
        }
    }

    /// The link for a call from here: this core's own once it is connected
    /// (the first call on a core starts connecting it in the background and
    /// goes through the shared link meanwhile), else the shared one.
    fn link(&self) -> Link {
        let Some(core) = crate::cores::current() else {
            return self.connection.clone();
        };
        let (Some(slot), Some(client)) = (self.core_links.get(core), &self.single) else {
            return self.connection.clone();
        };
        if let Some(link) = slot.link.get() {
            return Link::Single(link.clone());
        }
        if !slot.connecting.swap(true, Ordering::AcqRel) {
            let links = self.core_links.clone();
            let client = redis::Client::clone(client);
            // Detached, not tracked: it only fills a slot; on this core's
            // runtime, so the connection's I/O is driven here. A failure
            // leaves the shared link in use and is tried again after 5 s.
            drop(crate::tasks::detached(async move {
                let made = tokio::time::timeout(
                    REDIS_CALL_TIMEOUT,
                    ConnectionManager::new_with_config(client, manager_config()),
                )
                .await;
                let Some(slot) = links.get(core) else { return };
                match made {
                    Ok(Ok(link)) => {
                        let _ = slot.link.set(link);
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        slot.connecting.store(false, Ordering::Release);
                    }
                }
            }));
        }
        self.connection.clone()
    }

    /// Admits from budget leases: slices of up to `want`, each used for
    /// at most `life` (see `lease.rs`).
    pub(super) fn lease(&mut self, want: Money, life: Duration) {
        self.leases = (want.nano() > 0).then(|| Box::new(Leases::new(want, life)));
    }

    pub(super) fn leases(&self) -> Option<&Leases> {
        self.leases.as_deref()
    }

    /// The mark of one give-back of a slice (in the account's slot).
    fn lease_mark(&self, account: &str, id: &str) -> String {
        format!("{}:lease:{{{account}}}:{id}", self.prefix)
    }

    pub(super) fn fallback(&self) -> Option<&LocalFallback> {
        self.fallback.as_deref()
    }

    /// `script` on an account's balance and, for team billing, a member's
    /// spend counter (the keys every admission and settlement script
    /// takes first).
    fn on_counters<'s>(
        &self,
        script: &'s Script,
        account: &str,
        spend_key: Option<&str>,
    ) -> redis::ScriptInvocation<'s> {
        let mut invocation = script.key(self.key(&CounterKey::Balance(account.to_string())));
        if let Some(key) = spend_key {
            invocation.key(self.key(&CounterKey::Spend(key.to_string())));
        }
        invocation
    }

    /// A counter's key, tagged with its paying account.
    fn key(&self, key: &CounterKey) -> String {
        match key {
            CounterKey::Balance(account) => format!("{}:bal:{{{account}}}", self.prefix),
            CounterKey::Spend(name) => {
                let rest = name.split_once(':').map_or("", |(_, rest)| rest);
                format!("{}:spend:{{{}}}:{rest}", self.prefix, key.account())
            }
        }
    }

    /// The mark of one request's settlement, kept `SETTLED_MARK_SECS`
    /// (in the slot of the account it settles).
    fn settled_key(&self, account: &str, request_id: &str) -> String {
        format!("{}:settled:{{{account}}}:{request_id}", self.prefix)
    }

    /// Reserves in Redis; while Redis is away, from the local fallback when
    /// the `local` policy is on.
    pub(super) async fn reserve_or_fall_back(
        &self,
        account: &str,
        amount: Money,
        spend: Option<SpendHold<'_>>,
    ) -> Result<Reserve, CounterError> {
        let answer = match self.leases.as_deref() {
            None => bounded(self.reserve(account, amount, spend)).await,
            Some(leases) => match leases.take(account, amount, spend) {
                Take::Held(reserve) => return Ok(reserve),
                Take::Ask(back) => {
                    let taking = leases.begin_taking(account, spend.map(|s| s.key));
                    if taking.is_none() && back.is_none() {
                        // Another request here is taking the next slice:
                        // hold this one plainly (its unused part joins the
                        // slice at settlement, see `absorb`).
                        bounded(self.reserve(account, amount, spend)).await
                    } else {
                        self.acquire_or_owe(leases, account, amount, spend, back)
                            .await
                    }
                }
            },
        };
        let Some(fallback) = &self.fallback else {
            return answer;
        };
        match answer {
            Ok(reserve) => {
                fallback.redis_answered(account, spend, &reserve);
                Ok(reserve)
            }
            Err(error) => fallback.reserve(&error, account, amount, spend),
        }
    }

    async fn reserve(
        &self,
        account: &str,
        amount: Money,
        spend: Option<SpendHold<'_>>,
    ) -> Result<Reserve, CounterError> {
        let mut connection = self.link();
        let mut invocation = self.on_counters(&self.reserve, account, spend.map(|s| s.key));
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
        let balance = money(&balance)?;
        let spent = money(&spent)?;
        Ok(match status {
            1 => Reserve::Held {
                remaining: balance,
                spend: spend.map(|_| spent),
                stamps: Stamps {
                    balance: Stamp::from(balance_stamp),
                    spend: Stamp::from(spend_stamp),
                },
            },
            0 => Reserve::Insufficient { available: balance },
            2 => Reserve::LimitReached {
                spent,
                limit: spend.and_then(|s| s.hard_limit).unwrap_or(Money::ZERO),
            },
            -2 => Reserve::MissingSpend,
            -1 => Reserve::MissingBalance,
            other => return Err(CounterError::Malformed(other.to_string())),
        })
    }

    /// [`Self::acquire`], bounded; a slice it was to give back is owed
    /// when the step failed (given back or not: the mark tells on the
    /// retry).
    async fn acquire_or_owe(
        &self,
        leases: &Leases,
        account: &str,
        amount: Money,
        spend: Option<SpendHold<'_>>,
        back: Option<Lease>,
    ) -> Result<Reserve, CounterError> {
        let answer = bounded(self.acquire(leases, account, amount, spend, back.as_ref())).await;
        if let (Err(_), Some(back)) = (&answer, back) {
            leases.owe(
                (account.to_string(), spend.map(|s| s.key.to_string())),
                back,
            );
        }
        answer
    }

    /// One `lease.lua` step: gives `back` back, holds `amount` and takes a
    /// slice where the budget allows (kept in `leases`).
    async fn acquire(
        &self,
        leases: &Leases,
        account: &str,
        amount: Money,
        spend: Option<SpendHold<'_>>,
        back: Option<&Lease>,
    ) -> Result<Reserve, CounterError> {
        let mut connection = self.link();
        let mut invocation = self.on_counters(&self.lease, account, spend.map(|s| s.key));
        // The mark is set only when something is given back.
        invocation.key(self.lease_mark(account, back.map_or("-", |b| b.id.as_str())));
        let hard_limit = spend.and_then(|s| s.hard_limit);
        invocation
            .arg(amount.nano())
            .arg(hard_limit.map_or(String::new(), |l| l.nano().to_string()))
            .arg(back.map_or(0, |b| b.remaining.max(0)))
            .arg(back.map_or("", |b| b.stamps.balance.as_str()))
            .arg(back.map_or("", |b| b.stamps.spend.as_str()))
            .arg(if amount.nano() > 0 { leases.want } else { 0 })
            .arg(SETTLED_MARK_SECS);
        let (status, balance, spent, balance_stamp, spend_stamp, slice): (
            i64,
            String,
            String,
            String,
            String,
            String,
        ) = invocation.invoke_async(&mut connection).await?;
        let balance = money(&balance)?;
        let spent = money(&spent)?;
        let slice = money(&slice)?.nano();
        let stamps = Stamps {
            balance: Stamp::from(balance_stamp),
            spend: Stamp::from(spend_stamp),
        };
        Ok(match status {
            1 => {
                if slice > 0 {
                    leases.keep(
                        (account.to_string(), spend.map(|s| s.key.to_string())),
                        Lease {
                            id: crate::keys::random_base62(12),
                            stamps: stamps.clone(),
                            hard_limit,
                            remaining: slice,
                            balance_seen: balance.nano(),
                            spend_seen: spend.map(|_| spent.nano()),
                            taken_at: std::time::Instant::now(),
                        },
                    );
                }
                Reserve::Held {
                    remaining: Money::from_nano(balance.nano().saturating_add(slice)),
                    spend: spend.map(|_| Money::from_nano(spent.nano().saturating_sub(slice))),
                    stamps,
                }
            }
            0 => Reserve::Insufficient { available: balance },
            2 => Reserve::LimitReached {
                spent,
                limit: hard_limit.unwrap_or(Money::ZERO),
            },
            -2 => Reserve::MissingSpend,
            -1 => Reserve::MissingBalance,
            other => return Err(CounterError::Malformed(other.to_string())),
        })
    }

    /// Gives back the slices that are due (all of them with `all`, at
    /// shutdown); one that cannot go now is owed and tried again.
    pub(super) async fn return_leases(&self, all: bool) {
        let Some(leases) = self.leases.as_deref() else {
            return;
        };
        for ((account, spend_key), lease) in leases.due(all) {
            if lease.remaining <= 0 {
                continue;
            }
            let spend = spend_key.as_deref().map(|key| SpendHold {
                key,
                hard_limit: lease.hard_limit,
            });
            let given =
                bounded(self.acquire(leases, &account, Money::ZERO, spend, Some(&lease))).await;
            if let Err(error) = given {
                tracing::warn!(%error, %account, "A lease's slice was not given back; trying again.");
                leases.owe((account, spend_key), lease);
            }
        }
    }

    /// A settled hold's unused part, to this process's slice of its
    /// counters (see [`Leases::absorb`]); false: settle in Redis.
    pub(super) fn absorb(
        &self,
        account: &str,
        spend_key: Option<&str>,
        stamps: &Stamps,
        unused: i64,
    ) -> bool {
        match self.leases.as_deref() {
            Some(leases) if unused >= 0 => leases.absorb(account, spend_key, stamps, unused),
            _ => false,
        }
    }

    pub(super) async fn seed(&self, key: &CounterKey, value: Money) -> Result<(), CounterError> {
        let mut connection = self.link();
        let expiry = match key {
            CounterKey::Spend(_) => SPEND_TTL_SECS.to_string(),
            CounterKey::Balance(_) => String::new(),
        };
        bounded(async {
            let _: i64 = self
                .seed
                .key(self.key(key))
                .arg(value.nano())
                .arg(crate::keys::random_base62(16))
                .arg(expiry)
                .invoke_async(&mut connection)
                .await?;
            Ok(())
        })
        .await
    }

    /// One settlement step (see `settle.lua`); a hold the outage fallback
    /// took settles there.
    pub(super) async fn settle(
        &self,
        account: &str,
        spend_key: Option<&str>,
        hold: Money,
        cost: Money,
        stamps: &Stamps,
        request_id: &str,
    ) -> Result<Stamps, CounterError> {
        if let Some(fallback) = self.fallback.as_deref() {
            if LocalFallback::took(stamps) {
                return fallback.settle(account, spend_key, hold, cost);
            }
        }
        let mut connection = self.link();
        let mut invocation = self.on_counters(&self.settle, account, spend_key);
        invocation.key(self.settled_key(account, request_id));
        let unused = hold.nano().saturating_sub(cost.nano());
        invocation
            .arg(stamps.balance.as_str())
            .arg(stamps.spend.as_str())
            .arg(unused)
            .arg(-cost.nano())
            .arg(-unused)
            .arg(cost.nano())
            .arg(SETTLED_MARK_SECS);
        bounded(async {
            let (balance, spend): (String, String) =
                invocation.invoke_async(&mut connection).await?;
            Ok(Stamps {
                balance: Stamp::from(balance),
                spend: Stamp::from(spend),
            })
        })
        .await
    }

    pub(super) async fn apply_if(
        &self,
        key: &CounterKey,
        delta: i64,
        stamp: &Stamp,
    ) -> Result<(), CounterError> {
        let mut connection = self.link();
        bounded(async {
            let _: i64 = self
                .apply
                .key(self.key(key))
                .arg(delta)
                .arg(stamp.as_str())
                .invoke_async(&mut connection)
                .await?;
            Ok(())
        })
        .await
    }

    pub(super) async fn correct(&self, correction: &Correction) -> Result<bool, CounterError> {
        let mut connection = self.link();
        let (mode, delta) = match correction.fix {
            Fix::Rebuild => ("rebuild", 0),
            Fix::Add(delta) => ("add", delta),
        };
        let mark = format!(
            "{}:corrected:{{{}}}:{}",
            self.prefix,
            correction.key.account(),
            correction.id
        );
        bounded(async {
            let changed: i64 = self
                .correct
                .key(self.key(&correction.key))
                .key(mark)
                .arg(correction.stamp.as_str())
                .arg(mode)
                .arg(delta)
                .arg(CORRECTED_MARK_SECS)
                .invoke_async(&mut connection)
                .await?;
            Ok(changed == 1)
        })
        .await
    }

    pub(super) async fn forget(&self, key: &CounterKey) -> Result<(), CounterError> {
        let mut connection = self.link();
        bounded(async {
            redis::cmd("DEL")
                .arg(self.key(key))
                .query_async::<i64>(&mut connection)
                .await?;
            Ok(())
        })
        .await
    }

    pub(super) async fn stamps(&self, keys: &[CounterKey]) -> Result<Vec<Stamp>, CounterError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.link();
        bounded(async {
            let stamps: Vec<Option<String>> = match &self.connection {
                Link::Single(_) => {
                    let mut pipeline = redis::pipe();
                    for key in keys {
                        pipeline.cmd("HGET").arg(self.key(key)).arg("s");
                    }
                    pipeline.query_async(&mut connection).await?
                }
                // Keys of several accounts live on several nodes: one
                // command each, all at once.
                Link::Cluster(_) => {
                    let reads = keys.iter().map(|key| {
                        let mut connection = self.link();
                        let name = self.key(key);
                        async move {
                            redis::cmd("HGET")
                                .arg(name)
                                .arg("s")
                                .query_async::<Option<String>>(&mut connection)
                                .await
                        }
                    });
                    futures_util::future::try_join_all(reads).await?
                }
            };
            Ok(stamps
                .into_iter()
                .map(|s| Stamp::from(s.unwrap_or_default()))
                .collect())
        })
        .await
    }

    pub(super) async fn value(&self, key: &CounterKey) -> Result<Option<Money>, CounterError> {
        let mut connection = self.link();
        bounded(async {
            let value: Option<i64> = redis::cmd("HGET")
                .arg(self.key(key))
                .arg("v")
                .query_async(&mut connection)
                .await?;
            Ok(value.map(Money::from_nano))
        })
        .await
    }

    pub(super) async fn ping(&self) -> Result<(), CounterError> {
        let mut connection = self.link();
        bounded(async {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::Nodes;

    #[test]
    fn cluster_urls_are_read() {
        assert_eq!(
            Nodes::parse("redis://127.0.0.1:6379"),
            Nodes::Single("redis://127.0.0.1:6379".into())
        );
        assert_eq!(
            Nodes::parse("redis+cluster://:pw@a:7000,b:7001, c:7002"),
            Nodes::Cluster(vec![
                "redis://:pw@a:7000".into(),
                "redis://:pw@b:7001".into(),
                "redis://:pw@c:7002".into()
            ])
        );
        assert_eq!(
            Nodes::parse("rediss+cluster://a:7000"),
            Nodes::Cluster(vec!["rediss://a:7000".into()])
        );
        assert_eq!(
            Nodes::parse("redis://a:1,redis://b:2"),
            Nodes::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
    }
}
