//! The application: config → shared state → a listening server, and the
//! order of a graceful shutdown.
//!
//! Shutdown order (each step needs the one before): stop accepting → let
//! open requests finish (bounded by `server.shutdown_grace_secs`) → wait for
//! tracked settlement tasks → drain the ledger queue into the store.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::{Quota, RateLimiter};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::KeyLookup;
use crate::config::Config;
use crate::conn::{BodyDeadline, ClientAddr, ConnLimits, ConnSlot, ConnTimer, Watched};
use crate::cores;
use crate::counters::Counters;
use crate::invalidate::{Forget, Invalidator};
use crate::keys;
use crate::ledger::{self, Settler};
use crate::metrics::Metrics;
use crate::policy::PolicyLookup;
use crate::providers;
use crate::router;
use crate::store::Store;
use crate::tasks::{self, Tasks};

use crate::clock::Clock;
use crate::state::AppState;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("redis: {0}")]
    Counters(#[from] crate::counters::CounterError),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Spool(#[from] crate::ledger::SpoolError),
    #[error("the operator token from {from} has {length} characters; use at least {MIN_ADMIN_TOKEN_CHARS} (or leave it unset and one is generated)")]
    WeakAdminToken { from: String, length: usize },
    #[error("cannot start the serving cores: {0}")]
    Cores(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A built gateway, bound to its port, not yet serving.
pub struct App {
    state: Arc<AppState>,
    listener: TcpListener,
    /// The serving cores' runtimes (`server.per_core`), not yet running.
    cores: Vec<cores::Idle>,
    ledger_stop: CancellationToken,
    ledger_writer: tokio::task::JoinHandle<()>,
    /// The operator token, when this start generated it (shown once).
    pub generated_admin_token: Option<String>,
}

/// Connects storage and applies migrations.
pub async fn open_store(config: &Config) -> Result<Store, InitError> {
    let mut store =
        Store::connect(&config.storage.database_url, config.storage.max_connections).await?;
    store.migrate().await?;
    store.set_mail(!config.email.smtp_url.is_empty());
    Ok(store)
}

impl App {
    pub async fn build(config: Config) -> Result<App, InitError> {
        App::build_with_clock(config, Clock::system()).await
    }

    pub async fn build_with_clock(config: Config, clock: Clock) -> Result<App, InitError> {
        let store = open_store(&config).await?;
        maintain_ledger(&store, config.ledger.retention_months, clock.now_ms()).await;
        let cores = if config.server.per_core {
            cores::build(cores::count(config.server.worker_threads)).map_err(InitError::Cores)?
        } else {
            Vec::new()
        };
        let mut counters = if config.storage.redis_url.is_empty() {
            Counters::memory()
        } else {
            Counters::redis(
                &config.storage.redis_url,
                &config.storage.redis_prefix,
                config.redis_outage_budget(),
            )
            .await?
        };
        counters.per_core(cores.len());
        if let Ok(want) = crate::money::Money::parse_usd_non_negative(&config.storage.lease_usd) {
            counters.lease(want, Duration::from_millis(config.storage.lease_ms));
        }
        let counters = Arc::new(counters);
        let (admin_token_hash, generated_admin_token) = admin_token(&config, &store).await?;
        let client = providers::build_client(&config.upstream)?;
        let core_clients = cores
            .iter()
            .map(|_| providers::build_client(&config.upstream))
            .collect::<Result<Vec<_>, _>>()?;
        let tasks = Tasks::new();
        let ledger_stop = CancellationToken::new();
        let (ledger, ledger_writer) = ledger::start(
            store.clone(),
            counters.clone(),
            &config.ledger,
            tasks.clone(),
            ledger_stop.clone(),
        )?;
        let rate_limiter = std::num::NonZeroU32::new(config.limits.rpm_per_key)
            .map(|rpm| RateLimiter::keyed(Quota::per_minute(rpm)));
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| InitError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let metrics = Arc::new(Metrics::default());
        let keys = Arc::new(KeyLookup::new(
            store.clone(),
            metrics.clone(),
            config.cache.key_ttl_ms,
            config.cache.max_keys,
        ));
        let policies = Arc::new(PolicyLookup::new(
            store.clone(),
            metrics.clone(),
            config.cache.key_ttl_ms,
        ));
        let targets: Vec<Arc<dyn Forget>> = vec![keys.clone(), policies.clone()];
        let invalidator = Arc::new(Invalidator::new(
            &config.storage.redis_url,
            &config.storage.redis_prefix,
            targets,
        ));
        let settler = Arc::new(Settler::new(
            counters.clone(),
            ledger.clone(),
            tasks.clone(),
            metrics.clone(),
            clock.clone(),
        ));
        let state = Arc::new(AppState {
            keys,
            policies,
            invalidator,
            settler,
            counter_seeds: Default::default(),
            failed_credentials: Default::default(),
            clock,
            config,
            store,
            counters,
            client,
            core_clients,
            ledger,
            tasks,
            metrics,
            admin_token_hash,
            rate_limiter,
        });
        Ok(App {
            state,
            listener,
            cores,
            ledger_stop,
            ledger_writer,
            generated_admin_token,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.config.listen)
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` is cancelled, then shuts down in order.
    pub async fn run(self, shutdown: CancellationToken) {
        let App {
            state,
            listener,
            cores,
            ledger_stop,
            ledger_writer,
            ..
        } = self;
        let subscriber_stop = CancellationToken::new();
        // Detached, not tracked: its handle is awaited right after serving.
        let subscriber =
            tasks::detached(state.invalidator.clone().subscribe(subscriber_stop.clone()));
        // Detached, not tracked: awaited with the subscriber.
        let publisher = tasks::detached(state.invalidator.clone().publish(subscriber_stop.clone()));
        // Detached, not tracked: awaited with the subscriber.
        let maintenance = tasks::detached(maintain_ledger_hourly(
            state.clone(),
            subscriber_stop.clone(),
        ));
        // Detached, not tracked: awaited with the subscriber.
        let schedules = tasks::detached(crate::admin::schedule::run(
            state.clone(),
            subscriber_stop.clone(),
        ));
        // Detached, not tracked: awaited with the subscriber. Deliveries it
        // leaves half done are leased and taken again later.
        let deliverer = match crate::webhooks::Deliverer::new(
            state.store.clone(),
            state.config.webhooks.allow_private_networks,
        ) {
            Ok(deliverer) => Some(tasks::detached(
                Arc::new(deliverer).run(subscriber_stop.clone()),
            )),
            Err(error) => {
                tracing::error!(%error, "Webhook delivery could not start.");
                None
            }
        };
        // Detached, not tracked: awaited with the subscriber. Slices left
        // at the stop are all given back below.
        let lease_sweep = state.counters.leases().is_some().then(|| {
            let counters = state.counters.clone();
            let stop = subscriber_stop.clone();
            tasks::detached(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                    counters.return_leases(false).await;
                }
            })
        });
        // Detached, not tracked: awaited with the subscriber. Mail it
        // leaves half sent is leased and taken again later.
        let mailer = match crate::email::Mailer::new(&state.config, state.store.clone()) {
            Ok(Some(mailer)) => Some(tasks::detached(
                Arc::new(mailer).run(subscriber_stop.clone()),
            )),
            Ok(None) => None,
            Err(error) => {
                tracing::error!(%error, "Email could not start; mail waits in the outbox.");
                None
            }
        };
        let serving = serve(listener, state.clone(), shutdown, cores).await;
        subscriber_stop.cancel();
        let _ = subscriber.await;
        let _ = publisher.await;
        let _ = maintenance.await;
        let _ = schedules.await;
        if let Some(deliverer) = deliverer {
            let _ = deliverer.await;
        }
        if let Some(mailer) = mailer {
            let _ = mailer.await;
        }
        if let Some(sweep) = lease_sweep {
            let _ = sweep.await;
        }
        state.tasks.close();
        state.tasks.wait().await;
        // After every settlement: what the slices have left goes back.
        state.counters.return_leases(true).await;
        ledger_stop.cancel();
        if let Err(error) = ledger_writer.await {
            tracing::error!(%error, "Ledger writer failed.");
        }
        state.store.close().await;
        // Last: the cores' runtimes ran the tasks waited for above.
        serving.release().await;
        tracing::info!("Shutdown complete.");
    }
}

/// Creates the ledger's partitions ahead and applies
/// `ledger.retention_months` (`store/partitions.rs`). A failure is logged:
/// rows without a month partition wait in the default one, never lost.
async fn maintain_ledger(store: &Store, retention_months: u32, now_ms: i64) {
    match crate::store::partitions::maintain(store, retention_months, now_ms).await {
        Ok(0) => {}
        Ok(dropped) => tracing::info!(dropped, "Ledger retention applied."),
        Err(error) => {
            tracing::warn!(%error, "Ledger maintenance failed; it is tried again within the hour.")
        }
    }
}

/// [`maintain_ledger`] every hour until `stop`.
async fn maintain_ledger_hourly(state: Arc<AppState>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            () = stop.cancelled() => return,
        }
        maintain_ledger(
            &state.store,
            state.config.ledger.retention_months,
            state.clock.now_ms(),
        )
        .await;
    }
}

/// The shortest operator token accepted (contract §4); a generated one has
/// 44 characters.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// Refuses an operator token too short to resist guessing.
fn strong_enough(token: &str, from: String) -> Result<(), InitError> {
    let length = token.chars().count();
    if length < MIN_ADMIN_TOKEN_CHARS {
        return Err(InitError::WeakAdminToken { from, length });
    }
    Ok(())
}

/// The operator token: from the configured environment variable or key;
/// else the stored one; else a new one, stored (hashed) and returned so the
/// caller can print it once.
async fn admin_token(
    config: &Config,
    store: &Store,
) -> Result<(String, Option<String>), InitError> {
    let from_env = std::env::var(&config.server.admin_token_env)
        .ok()
        .filter(|t| !t.is_empty());
    if let Some(token) = from_env {
        strong_enough(&token, format!("${}", config.server.admin_token_env))?;
        return Ok((keys::hash_secret(&token), None));
    }
    if !config.server.admin_token.is_empty() {
        strong_enough(
            config.server.admin_token.expose(),
            "server.admin_token".into(),
        )?;
        return Ok((keys::hash_secret(config.server.admin_token.expose()), None));
    }
    if let Some(hash) = store.setting("admin_token_hash").await? {
        return Ok((hash, None));
    }
    let token = format!("tga-{}", keys::random_base62(40));
    let hash = keys::hash_secret(&token);
    let stored = store.setting_or_insert("admin_token_hash", &hash).await?;
    if stored == hash {
        Ok((hash, Some(token)))
    } else {
        // Another process stored one first; that one is in force.
        Ok((stored, None))
    }
}

/// A connection the accept loop took and admitted, on its way to the
/// runtime that serves it.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    slot: ConnSlot,
}

/// The serving runtimes after their connections ended: the cores stay up
/// until [`Serving::release`] (tasks spawned there still run).
struct Serving {
    /// Cancels the cores' release when dropped: if the gateway's future is
    /// dropped before its end, the cores' threads still end.
    release: tokio_util::sync::DropGuard,
    cores: Vec<cores::Running>,
}

impl Serving {
    async fn release(self) {
        drop(self.release);
        for core in self.cores {
            core.ended().await;
        }
    }
}

/// One open connection on a serving runtime: its place in the limits and
/// in its runtime's load, both given back however it ends (aborted past
/// the grace period too).
struct Open {
    _slot: ConnSlot,
    load: Arc<AtomicUsize>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The accept loop: bounds on open connections (in all and per client
/// address: one past them is closed at once, so the loop never waits and
/// `/healthz` is always reachable), then each connection goes to the
/// serving runtime with the fewest open ones — a core of its own with
/// `server.per_core`, else a task on this runtime. Returns once every
/// serving runtime has let its connections go ([`serve_connections`]).
async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    idle_cores: Vec<cores::Idle>,
) -> Serving {
    let server = &state.config.server;
    let limits = ConnLimits::new(server.max_connections, server.max_connections_per_ip);
    let release = CancellationToken::new();
    let release_guard = release.clone().drop_guard();
    let mut queues = Vec::new();
    let mut loads = Vec::new();
    let mut running = Vec::new();
    for core in idle_cores {
        let (queue, connections) = tokio::sync::mpsc::unbounded_channel();
        let core_state = state.clone();
        match core.start(release.clone(), move |load| {
            serve_connections(connections, core_state, load)
        }) {
            Ok(core) => {
                queues.push(queue);
                loads.push(core.load.clone());
                running.push(core);
            }
            Err(error) => tracing::error!(%error, "A serving core could not start."),
        }
    }
    let mut shared = None;
    if queues.is_empty() {
        let (queue, connections) = tokio::sync::mpsc::unbounded_channel();
        let load = Arc::new(AtomicUsize::new(0));
        // Detached, not tracked: awaited below, before shutdown goes on.
        shared = Some(tasks::detached(serve_connections(
            connections,
            state.clone(),
            load.clone(),
        )));
        queues.push(queue);
        loads.push(load);
    }
    let mut turn = 0usize;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "Accept failed.");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(slot) = limits.admit(peer.ip()) else {
            state.metrics.connection_refused();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "An accepted connection could not be handed on.");
                continue;
            }
        };
        let mut accepted = Accepted { stream, peer, slot };
        // A runtime whose queue is closed (its serving future ended, which
        // only a bug could cause before shutdown) is taken out of the
        // rotation and the connection goes to another one.
        for _ in 0..queues.len() {
            let pick = cores::least_loaded(&loads, turn);
            turn = turn.wrapping_add(1);
            let (Some(queue), Some(load)) = (queues.get(pick), loads.get(pick)) else {
                break;
            };
            load.fetch_add(1, Ordering::Relaxed);
            match queue.send(accepted) {
                Ok(()) => break,
                Err(returned) => {
                    tracing::error!(
                        core = pick,
                        "A serving runtime is gone; it gets no more connections."
                    );
                    load.store(usize::MAX / 2, Ordering::Relaxed);
                    accepted = returned.0;
                }
            }
        }
    }
    drop(listener);
    drop(queues);
    if let Some(shared) = shared {
        let _ = shared.await;
    }
    for core in &mut running {
        core.served().await;
    }
    Serving {
        release: release_guard,
        cores: running,
    }
}

/// Serves the connections handed to one runtime: HTTP/1.1 with keep-alive,
/// TCP_NODELAY, request-head and idle timeouts (`conn.rs`), and a graceful
/// drain when the accept loop stops: open connections finish within
/// `server.shutdown_grace_secs`; past it the ones left are cut, and their
/// requests settle under the disconnect policy (a stream being drained ends
/// at once, billed at the conservative estimate) before the ledger is
/// flushed.
async fn serve_connections(
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Accepted>,
    state: Arc<AppState>,
    load: Arc<AtomicUsize>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    let server = &state.config.server;
    let header_timeout = Duration::from_millis(server.header_read_timeout_ms.max(1));
    let idle_timeout = Duration::from_secs(server.idle_timeout_secs.max(1));
    let body_timeout = Duration::from_millis(server.body_read_timeout_ms.max(1));
    let grace = Duration::from_secs(server.shutdown_grace_secs);
    let mut builder = http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(header_timeout);
    while let Some(Accepted { stream, peer, slot }) = queue.recv().await {
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "A connection could not join its runtime.");
                load.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
        };
        let (stream, activity) = Watched::new(stream);
        let client = ClientAddr(peer.ip());
        let conn_state = state.clone();
        let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            // Only the management API reads these (the proxy times its own
            // body read): model requests skip the extensions' allocation.
            if request.uri().path().starts_with("/api") {
                request.extensions_mut().insert(client);
                request
                    .extensions_mut()
                    .insert(BodyDeadline(std::time::Instant::now() + body_timeout));
            }
            let state = conn_state.clone();
            async move { Ok::<_, Infallible>(router::route(state, request).await) }
        });
        let mut conn_builder = builder.clone();
        conn_builder.timer(ConnTimer::new(activity, header_timeout, idle_timeout));
        let connection = conn_builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        let open = Open {
            _slot: slot,
            load: load.clone(),
        };
        // Tracked in the connection set: shutdown waits for it, and cuts it
        // past the grace period so that its requests settle before the
        // ledger closes.
        #[allow(clippy::disallowed_methods)] // The connection set (see above).
        connections.spawn(async move {
            let _ = connection.await;
            drop(open);
        });
        while connections.try_join_next().is_some() {}
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(
                open = connections.len(),
                "Open connections outlived the shutdown grace period; cutting them."
            );
            // Drains started from here on end at once (conservative bill).
            state.tasks.close();
            connections.abort_all();
        }
    }
    while connections.join_next().await.is_some() {}
}
