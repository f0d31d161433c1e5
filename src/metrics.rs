//! Process metrics in the Prometheus text format. Counters and histograms
//! are plain atomics (a relaxed add); the one lock is the map of answers by
//! model and status, held for one map update per request.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::domain::Status;
use crate::meter::Usage;
use crate::money::Money;

/// Upper bounds of histogram buckets, in seconds.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 60.0,
];

/// A latency histogram: a relaxed add per observation, no lock.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// Time from sending upstream to the upstream's response headers.
    pub upstream_latency: Histogram,
    /// Time from a request's arrival to its upstream send: what the gateway
    /// itself adds before forwarding (auth, parse, admission).
    pub gateway_overhead: Histogram,
    /// Answers by model and HTTP status (refusals included). Updated once per
    /// request; the lock is held for one map update.
    by_model: Mutex<HashMap<String, HashMap<u16, u64>>>,
    requests_ok: AtomicU64,
    requests_upstream_error: AtomicU64,
    requests_failed: AtomicU64,
    requests_client_closed: AtomicU64,
    refusals: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    cost_nano: AtomicI64,
    reservations_outstanding: AtomicI64,
    key_cache_hits: AtomicU64,
    key_cache_misses: AtomicU64,
    store_fallbacks: AtomicU64,
    settlement_failures: AtomicU64,
    holds_exceeded: AtomicU64,
    drains: AtomicU64,
    connections_refused: AtomicU64,
    attempts_throttled: AtomicU64,
}

impl Metrics {
    pub fn reservation_opened(&self) {
        self.reservations_outstanding
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn reservation_closed(&self) {
        self.reservations_outstanding
            .fetch_sub(1, Ordering::Relaxed);
    }

    pub fn reservations_outstanding(&self) -> i64 {
        self.reservations_outstanding.load(Ordering::Relaxed)
    }

    pub fn answered(&self, model: &str, http_status: u16) {
        if let Ok(mut by_model) = self.by_model.lock() {
            // Allocates only for a model's first answer.
            let statuses = match by_model.get_mut(model) {
                Some(statuses) => statuses,
                None => by_model.entry(model.to_string()).or_default(),
            };
            *statuses.entry(http_status).or_default() += 1;
        }
    }

    /// A connection closed at once: its address or the server at its limit.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A management request refused for too many failed credentials.
    pub fn attempt_throttled(&self) {
        self.attempts_throttled.fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    pub fn key_cache_hit(&self) {
        self.key_cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// A settlement Redis never took (its row corrects the counters).
    pub fn settlement_failed(&self) {
        self.settlement_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A settled cost above its hold: the bound was broken.
    pub fn hold_exceeded(&self) {
        self.holds_exceeded.fetch_add(1, Ordering::Relaxed);
    }

    /// A stream read to its end after its client left.
    pub fn drained(&self) {
        self.drains.fetch_add(1, Ordering::Relaxed);
    }

    pub fn holds_exceeded(&self) -> u64 {
        self.holds_exceeded.load(Ordering::Relaxed)
    }

    /// A lookup answered from the last known value: the database was away.
    pub fn store_fallback(&self) {
        self.store_fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    pub fn key_cache_miss(&self) {
        self.key_cache_misses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_usage(&self, usage: &Usage, cost: Money, status: Status) {
        let counter = match status {
            Status::Ok => &self.requests_ok,
            Status::UpstreamError => &self.requests_upstream_error,
            Status::Failed => &self.requests_failed,
            Status::ClientClosed => &self.requests_client_closed,
            Status::Refused => &self.refusals,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.input_tokens
            .fetch_add(usage.input_tokens, Ordering::Relaxed);
        self.output_tokens
            .fetch_add(usage.output_tokens, Ordering::Relaxed);
        self.cached_tokens
            .fetch_add(usage.cached_tokens, Ordering::Relaxed);
        self.cost_nano.fetch_add(cost.nano(), Ordering::Relaxed);
    }

    /// Renders every metric; `extra` adds gauges owned elsewhere.
    pub fn render(&self, extra: &[(&str, &str, i64)]) -> String {
        let mut out = String::with_capacity(2048);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP tollgate_requests_total Admitted requests by outcome."
        );
        let _ = writeln!(out, "# TYPE tollgate_requests_total counter");
        for (outcome, value) in [
            ("ok", load(&self.requests_ok)),
            ("upstream_error", load(&self.requests_upstream_error)),
            ("failed", load(&self.requests_failed)),
            ("client_closed", load(&self.requests_client_closed)),
        ] {
            let _ = writeln!(
                out,
                "tollgate_requests_total{{outcome=\"{outcome}\"}} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tollgate_refusals_total Requests refused by the gateway."
        );
        let _ = writeln!(out, "# TYPE tollgate_refusals_total counter");
        let _ = writeln!(out, "tollgate_refusals_total {}", load(&self.refusals));
        let _ = writeln!(out, "# HELP tollgate_tokens_total Tokens metered, by kind.");
        let _ = writeln!(out, "# TYPE tollgate_tokens_total counter");
        let _ = writeln!(
            out,
            "tollgate_tokens_total{{kind=\"input\"}} {}",
            load(&self.input_tokens)
        );
        let _ = writeln!(
            out,
            "tollgate_tokens_total{{kind=\"cached\"}} {}",
            load(&self.cached_tokens)
        );
        let _ = writeln!(
            out,
            "tollgate_tokens_total{{kind=\"output\"}} {}",
            load(&self.output_tokens)
        );
        let _ = writeln!(out, "# HELP tollgate_cost_usd_total Cost metered, in USD.");
        let _ = writeln!(out, "# TYPE tollgate_cost_usd_total counter");
        let _ = writeln!(
            out,
            "tollgate_cost_usd_total {}",
            Money::from_nano(self.cost_nano.load(Ordering::Relaxed))
        );
        let _ = writeln!(
            out,
            "# HELP tollgate_reservations_outstanding Holds not yet settled."
        );
        let _ = writeln!(out, "# TYPE tollgate_reservations_outstanding gauge");
        let _ = writeln!(
            out,
            "tollgate_reservations_outstanding {}",
            self.reservations_outstanding()
        );
        let _ = writeln!(
            out,
            "# HELP tollgate_key_cache_total Key cache lookups by result."
        );
        let _ = writeln!(out, "# TYPE tollgate_key_cache_total counter");
        let _ = writeln!(
            out,
            "tollgate_key_cache_total{{result=\"hit\"}} {}",
            load(&self.key_cache_hits)
        );
        let _ = writeln!(
            out,
            "tollgate_key_cache_total{{result=\"miss\"}} {}",
            load(&self.key_cache_misses)
        );
        let _ = writeln!(out, "# HELP tollgate_store_fallbacks_total Lookups answered from last known values while the database was away.");
        let _ = writeln!(out, "# TYPE tollgate_store_fallbacks_total counter");
        let _ = writeln!(
            out,
            "tollgate_store_fallbacks_total {}",
            load(&self.store_fallbacks)
        );
        let _ = writeln!(out, "# HELP tollgate_settlement_failures_total Settlements the counters never took (their rows correct the counters when stored).");
        let _ = writeln!(out, "# TYPE tollgate_settlement_failures_total counter");
        let _ = writeln!(
            out,
            "tollgate_settlement_failures_total {}",
            load(&self.settlement_failures)
        );
        let _ = writeln!(out, "# HELP tollgate_hold_exceeded_total Settled costs above their hold (a breach of the hold bound; billed in full).");
        let _ = writeln!(out, "# TYPE tollgate_hold_exceeded_total counter");
        let _ = writeln!(
            out,
            "tollgate_hold_exceeded_total {}",
            load(&self.holds_exceeded)
        );
        let _ = writeln!(out, "# HELP tollgate_streams_drained_total Streams read to their usage after the client left.");
        let _ = writeln!(out, "# TYPE tollgate_streams_drained_total counter");
        let _ = writeln!(out, "tollgate_streams_drained_total {}", load(&self.drains));
        let _ = writeln!(out, "# HELP tollgate_connections_refused_total Connections closed at once (server.max_connections or max_connections_per_ip reached).");
        let _ = writeln!(out, "# TYPE tollgate_connections_refused_total counter");
        let _ = writeln!(
            out,
            "tollgate_connections_refused_total {}",
            load(&self.connections_refused)
        );
        let _ = writeln!(out, "# HELP tollgate_credential_attempts_throttled_total Management requests refused 429 after too many failed credentials from one address.");
        let _ = writeln!(
            out,
            "# TYPE tollgate_credential_attempts_throttled_total counter"
        );
        let _ = writeln!(
            out,
            "tollgate_credential_attempts_throttled_total {}",
            load(&self.attempts_throttled)
        );
        let _ = writeln!(
            out,
            "# HELP tollgate_answers_total Answers by model and HTTP status, refusals included."
        );
        let _ = writeln!(out, "# TYPE tollgate_answers_total counter");
        if let Ok(by_model) = self.by_model.lock() {
            let mut entries: Vec<(&String, &u16, &u64)> = by_model
                .iter()
                .flat_map(|(model, statuses)| {
                    statuses
                        .iter()
                        .map(move |(status, count)| (model, status, count))
                })
                .collect();
            entries.sort();
            for (model, status, count) in entries {
                let model = model.replace(['\\', '"', '\n'], "_");
                let _ = writeln!(
                    out,
                    "tollgate_answers_total{{model=\"{model}\",status=\"{status}\"}} {count}"
                );
            }
        }
        self.upstream_latency.render(
            &mut out,
            "tollgate_upstream_latency_seconds",
            "Time to the upstream's response headers.",
        );
        self.gateway_overhead.render(
            &mut out,
            "tollgate_gateway_overhead_seconds",
            "Time from a request's arrival to its upstream send.",
        );
        let hits = load(&self.key_cache_hits) as f64;
        let lookups = hits + load(&self.key_cache_misses) as f64;
        let ratio = if lookups > 0.0 { hits / lookups } else { 1.0 };
        let _ = writeln!(
            out,
            "# HELP tollgate_key_cache_hit_ratio Key lookups answered by the cache."
        );
        let _ = writeln!(out, "# TYPE tollgate_key_cache_hit_ratio gauge");
        let _ = writeln!(out, "tollgate_key_cache_hit_ratio {ratio}");
        for (name, help, value) in extra {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}
