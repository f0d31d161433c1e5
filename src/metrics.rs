//! Process metrics in the Prometheus text format. Plain atomics: recording
//! is a relaxed add, never a lock on the request path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::meter::Usage;
use crate::money::Money;
use crate::proxy::settle::Status;

#[derive(Debug, Default)]
pub struct Metrics {
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

    pub fn refused(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    pub fn key_cache_hit(&self) {
        self.key_cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// A settlement Redis never took: its hold stays taken.
    pub fn settlement_failed(&self) {
        self.settlement_failures.fetch_add(1, Ordering::Relaxed);
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
        let _ = writeln!(out, "# HELP tollgate_settlement_failures_total Settlements the counters never took (holds left taken).");
        let _ = writeln!(out, "# TYPE tollgate_settlement_failures_total counter");
        let _ = writeln!(
            out,
            "tollgate_settlement_failures_total {}",
            load(&self.settlement_failures)
        );
        for (name, help, value) in extra {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}
