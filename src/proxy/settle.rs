//! Settlement: every admitted request settles exactly once.
//!
//! [`Pending`] is created when admission holds money. It is consumed by
//! [`Pending::finish`], which prices the usage and hands the entry and the
//! hold to the [`Settler`] (release the unused part, queue the row). If it
//! is dropped unfinished (the client went away while the upstream was being
//! asked), `Drop` finishes it with no usage, so a hold is never leaked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::bound::Bound;
use crate::counters::Stamps;
use crate::domain::{RequestId, Source, Status};
use crate::ledger::{Entry, Settler};
use crate::meter::{Usage, UsageSource};
use crate::money::Money;
use crate::pricing::ModelPrice;

/// What a finished request consumed.
pub struct Outcome {
    pub usage: Option<(Usage, UsageSource)>,
    pub status: Status,
    pub http_status: u16,
    pub error_code: Option<&'static str>,
}

impl Outcome {
    pub fn nothing(status: Status, http_status: u16, error_code: Option<&'static str>) -> Outcome {
        Outcome {
            usage: None,
            status,
            http_status,
            error_code,
        }
    }
}

/// What admission held for a request.
pub struct Hold {
    pub price: ModelPrice,
    pub held: Money,
    /// The tokens the hold covers.
    pub bound: Bound,
    /// The member's monthly spend counter the hold also moved.
    pub spend_key: Option<String>,
    /// The counter stamps the hold was taken under.
    pub stamps: Stamps,
    /// The client's request body, kept for the fallback token estimate.
    pub request_body: Bytes,
}

/// An admitted request's hold and attribution, until it settles.
pub struct Pending {
    settler: Arc<Settler>,
    entry: Entry,
    started: Instant,
    price: ModelPrice,
    held: Money,
    stamps: Stamps,
    /// The client's request body, kept for the fallback token estimate.
    pub request_body: Bytes,
    /// The tokens the hold covers: a partial or estimated bill stays
    /// within them.
    pub bound: Bound,
    /// The request's span: settlement may run after the handler returned
    /// (a stream's end, a client gone), and its log lines still carry it.
    span: tracing::Span,
    done: bool,
}

impl Pending {
    pub fn new(settler: Arc<Settler>, mut entry: Entry, started: Instant, hold: Hold) -> Pending {
        settler.metrics().reservation_opened();
        entry.spend_key = hold.spend_key;
        Pending {
            settler,
            entry,
            started,
            price: hold.price,
            held: hold.held,
            stamps: hold.stamps,
            request_body: hold.request_body,
            bound: hold.bound,
            span: tracing::Span::current(),
            done: false,
        }
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn request_id(&self) -> &RequestId {
        &self.entry.request_id
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        self.settler.metrics()
    }

    /// The request's span.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Tokens of the request's prompt, counted with the tokenizer (or by the
    /// quick estimate when `quick`).
    pub fn estimate_prompt_tokens(&self, quick: bool) -> u64 {
        serde_json::from_slice(&self.request_body)
            .map(|value| crate::meter::estimate_prompt_tokens(&value, quick))
            .unwrap_or_else(|_| {
                let text = String::from_utf8_lossy(&self.request_body);
                if quick {
                    crate::meter::quick_tokens(&text)
                } else {
                    crate::meter::count_tokens(&text)
                }
            })
    }

    /// Settles: prices the usage, releases the rest of the hold, records.
    pub fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.settle(outcome);
    }

    fn settle(&mut self, outcome: Outcome) {
        let span = self.span.clone();
        let _entered = span.enter();
        let (usage, source) = match outcome.usage {
            Some((usage, source)) => (usage, source_of(source)),
            None => (Usage::default(), Source::None),
        };
        let priced = self.price.price(&usage);
        let cost = priced.cost;
        if cost > self.held {
            // The bound is a promise (ARCHITECTURE.md): a cost above it is a
            // bug or an upstream billing past its own limits. Billed in full.
            tracing::error!(
                held = %self.held,
                %cost,
                input_tokens = usage.input_tokens,
                output_tokens = usage.output_tokens,
                "Cost above its hold: the hold bound was broken."
            );
            self.settler.metrics().hold_exceeded();
        }
        let mut entry = std::mem::replace(
            &mut self.entry,
            Entry::draft(RequestId::default(), "", "", "", 0),
        );
        entry.input_tokens = usage.input_tokens as i64;
        entry.cached_tokens = usage.cached_tokens as i64;
        entry.cache_write_tokens = usage.cache_write_tokens as i64;
        entry.output_tokens = usage.output_tokens as i64;
        entry.reasoning_tokens = usage.reasoning_tokens as i64;
        entry.cache_write_1h_tokens = usage.cache_write_1h_tokens as i64;
        entry.audio_input_tokens = usage.audio_input_tokens as i64;
        entry.audio_output_tokens = usage.audio_output_tokens as i64;
        entry.web_search_calls = usage.web_search_calls as i64;
        entry.web_fetch_calls = usage.web_fetch_calls as i64;
        entry.code_execution_calls = usage.code_execution_calls as i64;
        entry.service_tier = (source != Source::None).then_some(usage.service_tier);
        entry.long_context = priced.long_context;
        entry.cost_nano = cost.nano();
        entry.usage_source = source;
        entry.status = outcome.status;
        entry.error_code = outcome.error_code.map(str::to_string);
        entry.http_status = i64::from(outcome.http_status);
        entry.latency_ms = self.started.elapsed().as_millis() as i64;
        entry.finished_at = self.settler.clock().now_ms();
        let metrics = self.settler.metrics();
        metrics.record_usage(&usage, cost, outcome.status);
        metrics.answered(&entry.model, outcome.http_status);
        let stamps = std::mem::take(&mut self.stamps);
        self.settler.settle(entry, self.held, stamps);
    }
}

fn source_of(source: UsageSource) -> Source {
    match source {
        UsageSource::Exact => Source::Exact,
        UsageSource::Estimated => Source::Estimated,
        UsageSource::Partial => Source::Partial,
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.settle(Outcome::nothing(
                Status::ClientClosed,
                499,
                Some("client_closed"),
            ));
        }
    }
}
