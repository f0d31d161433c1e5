//! [`AppState`]: everything a request may touch, shared by all of them,
//! built once at start (`app.rs`). Modules below this one never see it:
//! they get the narrow handle they use (the store, the counters, a lookup).

use std::sync::Arc;

use governor::DefaultKeyedRateLimiter;

use crate::accounts::AccountsError;
use crate::auth::{self, KeyLookup};
use crate::clock::Clock;
use crate::config::Config;
use crate::counters::Counters;
use crate::invalidate::{Invalidation, Invalidator};
use crate::ledger::{LedgerSender, Settler};
use crate::metrics::Metrics;
use crate::policy::PolicyLookup;
use crate::providers::UpstreamClient;
use crate::singleflight::SingleFlight;
use crate::store::Store;
use crate::tasks::Tasks;

pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub counters: Arc<Counters>,
    /// API keys → principals (cached).
    pub keys: Arc<KeyLookup>,
    /// (team, member) → policy (cached).
    pub policies: Arc<PolicyLookup>,
    /// Clears caches here and in every other process.
    pub invalidator: Arc<Invalidator>,
    /// The upstream client off the serving cores (shared serving).
    pub client: UpstreamClient,
    /// One upstream client (and so one connection pool) per serving core
    /// when `server.per_core` is on; empty otherwise.
    pub core_clients: Vec<UpstreamClient>,
    pub ledger: LedgerSender,
    /// What a finished request needs: release its hold, queue its entry.
    pub settler: Arc<Settler>,
    pub tasks: Tasks,
    pub metrics: Arc<Metrics>,
    pub admin_token_hash: String,
    pub rate_limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// Failed management credentials per client address.
    pub failed_credentials: crate::throttle::FailedAttempts,
    /// Concurrent requests that find a counter missing share one seed (a
    /// sum over the account's ledger rows).
    pub counter_seeds: SingleFlight<String, (), AccountsError>,
    pub clock: Clock,
}

impl AppState {
    /// Whether a missing counter must not be seeded now: in-process
    /// counters seeded from a database that is behind the spool would miss
    /// the spooled spend (Redis counters need no wait: a row stored after a
    /// rebuild brings its cost to the rebuilt counter, `ledger::write_rows`).
    pub fn seeding_waits_for_ledger(&self) -> bool {
        self.ledger.is_behind() && !self.counters.can_be_rebuilt()
    }

    /// The upstream client of the core this runs on (its own pool), else
    /// the shared one.
    pub fn client(&self) -> &UpstreamClient {
        crate::cores::current()
            .and_then(|core| self.core_clients.get(core))
            .unwrap_or(&self.client)
    }

    /// Whether `token` is the operator token.
    pub fn is_operator(&self, token: &str) -> bool {
        auth::is_operator(token, &self.admin_token_hash)
    }

    /// Forgets a key everywhere (after a revocation or a billing change).
    pub fn forget_key(&self, key_hash: &str) {
        self.invalidator
            .broadcast(Invalidation::Key(key_hash.to_string()));
    }

    /// Forgets team policies everywhere (limits, restrictions, roles,
    /// membership changed).
    pub fn forget_policies(&self) {
        self.invalidator.broadcast(Invalidation::Policies);
    }
}
