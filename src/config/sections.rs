//! The typed sections of the file (`[server]`, `[storage]`, `[upstream]`,
//! `[limits]`, `[ledger]`, `[cache]`, `[metering]`) and their defaults.

use serde::Deserialize;

use super::Secret;

/// `[server]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Environment variable holding the operator token.
    pub admin_token_env: String,
    /// The operator token itself (prefer `admin_token_env`).
    pub admin_token: Secret,
    /// Seconds to wait for open requests on shutdown.
    pub shutdown_grace_secs: u64,
    /// Most connections open at once; one past it is closed at once (the
    /// accept loop never waits).
    pub max_connections: usize,
    /// Most connections open at once from one client address.
    pub max_connections_per_ip: usize,
    /// A connection must send a whole request head within this (from its
    /// start, or from the first byte of a later request).
    pub header_read_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this.
    pub idle_timeout_secs: u64,
    /// A request body must arrive within this.
    pub body_read_timeout_ms: u64,
    /// When set, `/metrics` needs it as a Bearer token.
    pub metrics_token: Secret,
    /// The gateway's public base URL, used in invitation and join links.
    /// Empty: `http://` + `listen`.
    pub public_url: String,
    /// Runtime worker threads; 0 = one per CPU core. With `per_core`, the
    /// number of serving cores.
    pub worker_threads: usize,
    /// One single-threaded runtime per core, each serving the connections
    /// handed to it with its own upstream connection pool (no work
    /// stealing, no cross-thread wake-up on a request's path); `false`: one
    /// work-stealing runtime serves everything.
    pub per_core: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:4000".into(),
            max_body_bytes: 32 * 1024 * 1024,
            admin_token_env: "TOLLGATE_ADMIN_TOKEN".into(),
            admin_token: Secret::default(),
            shutdown_grace_secs: 30,
            max_connections: 10_000,
            max_connections_per_ip: 512,
            header_read_timeout_ms: 10_000,
            idle_timeout_secs: 75,
            body_read_timeout_ms: 60_000,
            metrics_token: Secret::default(),
            public_url: String::new(),
            worker_threads: 0,
            per_core: true,
        }
    }
}

/// `[storage]` (its `Debug` hides the passwords in the URLs)
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://PATH` or `postgres://…`.
    pub database_url: String,
    /// Empty: in-process counters (one gateway process).
    pub redis_url: String,
    /// Prefix of every Redis key, so several deployments can share a server.
    pub redis_prefix: String,
    /// Connection pool size of the database.
    pub max_connections: u32,
    /// While Redis is away: `local` keeps admitting from process-local
    /// counters within `redis_outage_budget_usd` per account; `refuse`
    /// answers 503.
    pub redis_unavailable: String,
    /// The most one account may spend in one process during one Redis
    /// outage (policy `local`).
    pub redis_outage_budget_usd: String,
    /// In-process counters with Postgres: allowed only when this is the one
    /// gateway process using that database (each process would otherwise
    /// enforce its own copy of every balance).
    pub single_node: bool,
    /// Budget leases (Redis counters): the largest slice of an account's
    /// or a member's budget one process takes to admit from locally. "0":
    /// off, every admission asks Redis.
    pub lease_usd: String,
    /// The longest a slice is used before it goes back.
    pub lease_ms: u64,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("database_url", &redact_url(&self.database_url))
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("max_connections", &self.max_connections)
            .field("redis_unavailable", &self.redis_unavailable)
            .field("redis_outage_budget_usd", &self.redis_outage_budget_usd)
            .field("single_node", &self.single_node)
            .field("lease_usd", &self.lease_usd)
            .field("lease_ms", &self.lease_ms)
            .finish()
    }
}

/// A URL with the password of its user info replaced (`user:***@`), and
/// any query string (which may carry one) dropped.
pub fn redact_url(url: &str) -> String {
    // A list of nodes: each one redacted.
    url.split(',')
        .map(redact_one_url)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one_url(url: &str) -> String {
    let url = url.split('?').next().unwrap_or(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((user_info, host)) if !host.is_empty() => {
            let user = user_info.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            database_url: "sqlite://tollgate.db".into(),
            redis_url: String::new(),
            redis_prefix: "tollgate".into(),
            max_connections: 16,
            redis_unavailable: "local".into(),
            redis_outage_budget_usd: "5".into(),
            single_node: false,
            lease_usd: "0".into(),
            lease_ms: 1_000,
        }
    }
}

/// `[upstream]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// TCP + TLS connect timeout (502 when exceeded).
    pub connect_timeout_ms: u64,
    /// Time until the upstream's response headers (504 when exceeded).
    pub response_timeout_ms: u64,
    /// Longest silence between two body chunks before the stream is cut.
    pub idle_timeout_ms: u64,
    /// Idle keep-alive connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_ms: 5_000,
            response_timeout_ms: 600_000,
            idle_timeout_ms: 300_000,
            pool_max_idle_per_host: 512,
        }
    }
}

/// `[limits]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Output bound of one answer when a request sets no max tokens and its
    /// model's limit is unknown (no `max_output_tokens`, not in the built-in
    /// table, no `context_window`).
    pub default_max_output_tokens: u64,
    /// Requests per minute per API key; 0 = unlimited.
    pub rpm_per_key: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            default_max_output_tokens: 128_000,
            rpm_per_key: 0,
        }
    }
}

/// `[ledger]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// Rows per insert.
    pub batch_size: usize,
    /// Longest wait before a partial batch is written.
    pub flush_interval_ms: u64,
    /// Rows held in memory waiting for the writer.
    pub queue_capacity: usize,
    /// Where rows wait (fsync'd) while the database is away.
    pub spool_dir: String,
    /// A batch the database has not taken in this time goes to the spool.
    pub write_timeout_ms: u64,
    /// How often a non-empty spool is replayed into the database.
    pub replay_interval_ms: u64,
    /// Months of raw usage rows kept before the current month; older whole
    /// months are dropped (rollups stay). 0 keeps everything.
    pub retention_months: u32,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            batch_size: 500,
            flush_interval_ms: 50,
            queue_capacity: 65_536,
            spool_dir: "tollgate-spool".into(),
            write_timeout_ms: 5_000,
            replay_interval_ms: 1_000,
            retention_months: 0,
        }
    }
}

/// `[webhooks]`
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Let webhooks reach loopback, private and link-local addresses
    /// (refused by default: a team admin must not reach the operator's
    /// internal network through them).
    pub allow_private_networks: bool,
}

/// `[email]` (contract §6): unset `smtp_url`, no mail is sent.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// `smtp://host:port` (STARTTLS when the server offers it;
    /// `?tls=required` insists), `smtps://host:port` (implicit TLS); a
    /// user name as `smtp://user@host`, its password from
    /// `smtp_password_env`. Empty: no email.
    pub smtp_url: String,
    /// The environment variable holding the SMTP password.
    pub smtp_password_env: String,
    /// A PEM file of certificates to trust for the SMTP server besides the
    /// public roots (an internal relay's CA); needs TLS in the URL.
    pub tls_ca_file: String,
    /// The sender, an RFC 5322 address (`Tollgate <noreply@example.com>`).
    pub from: String,
    /// The gateway's address as people reach it, for the links in mail
    /// (and in the API's invitation and join URLs); empty: `server.public_url`.
    pub public_url: String,
    /// Invitation mails one team may cause in an hour; more are recorded
    /// as `capped` and not sent (the invitation itself is made).
    pub invitations_per_team_per_hour: u32,
    /// The longest wait between two tries of a mail the server did not
    /// take (1 s doubling up to this); a mail is tried for 24 h.
    pub retry_max_secs: u64,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            smtp_url: String::new(),
            smtp_password_env: String::new(),
            tls_ca_file: String::new(),
            from: String::new(),
            public_url: String::new(),
            invitations_per_team_per_hour: 50,
            retry_max_secs: 600,
        }
    }
}

/// How an SMTP URL asks for TLS: `smtps://` wraps the connection,
/// `?tls=required` and `?tls=opportunistic` upgrade it with STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    Wrapper,
    Required,
    Opportunistic,
}

impl SmtpTls {
    /// The URL's TLS; `None`, plain.
    pub fn of(url: &str) -> Option<SmtpTls> {
        if url.starts_with("smtps://") {
            return Some(SmtpTls::Wrapper);
        }
        let query = url.split_once('?')?.1;
        query.split('&').find_map(|pair| match pair {
            "tls=required" => Some(SmtpTls::Required),
            "tls=opportunistic" => Some(SmtpTls::Opportunistic),
            _ => None,
        })
    }
}

/// `[cache]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How long a key lookup is trusted; bounds how late a revocation made
    /// on another process takes effect (twice this while the database is
    /// slow to answer: a known key past it is answered while it reloads).
    pub key_ttl_ms: u64,
    /// Most keys cached.
    pub max_keys: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            key_ttl_ms: 1_000,
            max_keys: 100_000,
        }
    }
}

/// What a stream costs when its client goes away before the end.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnClientDisconnect {
    /// Keep reading the upstream to its usage and bill that exactly.
    Drain,
    /// Close the upstream at once and bill a conservative estimate.
    Cancel,
}

/// `[metering]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct MeteringConfig {
    pub on_client_disconnect: OnClientDisconnect,
    /// Longest a drained stream is read after its client left; past it the
    /// stream is closed and billed as `cancel` would.
    pub drain_timeout_secs: u64,
    /// `cancel`'s assumption of the fastest an upstream generates (hidden
    /// reasoning included): a cut stream is billed at least this many
    /// output tokens per second since it was sent, within the hold.
    pub cancel_assumed_tokens_per_sec: u64,
}

impl Default for MeteringConfig {
    fn default() -> Self {
        MeteringConfig {
            on_client_disconnect: OnClientDisconnect::Drain,
            drain_timeout_secs: 600,
            cancel_assumed_tokens_per_sec: 5_000,
        }
    }
}
