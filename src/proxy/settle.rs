//! Settlement: every admitted request settles exactly once.
//!
//! [`Pending`] is created when admission holds money. It is consumed by
//! [`Pending::finish`], which prices the usage, returns the unused part of
//! the hold to the counter and queues the ledger row. If it is dropped
//! unfinished (the client went away while the upstream was being asked),
//! `Drop` finishes it with no usage, so a hold is never leaked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::app::AppState;
use crate::counters::{Counters, Stamps};
use crate::meter::{Usage, UsageSource};
use crate::money::Money;
use crate::pricing::ModelPrice;
use crate::store::UsageRow;

/// How a request ended, for its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The upstream answered 2xx and the response was delivered.
    Ok,
    /// The upstream answered an error status, or failed mid-stream.
    UpstreamError,
    /// The upstream could not be reached or timed out.
    Failed,
    /// The client went away before the response was complete.
    ClientClosed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::UpstreamError => "upstream_error",
            Status::Failed => "failed",
            Status::ClientClosed => "client_closed",
        }
    }
}

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
    /// The member's monthly spend counter the hold also moved.
    pub spend_key: Option<String>,
    /// The counter stamps the hold was taken under.
    pub stamps: Stamps,
    /// The client's request body, kept for the fallback token estimate.
    pub request_body: Bytes,
    /// The output tokens the hold covers: a partial bill stays below it.
    pub max_output_tokens: Option<u64>,
}

/// How long a Redis settlement is retried (each try is bounded to 2 s).
const SETTLE_RETRY_WINDOW: Duration = Duration::from_secs(60);

/// An admitted request's hold and attribution, until it settles.
pub struct Pending {
    state: Arc<AppState>,
    row: UsageRow,
    started: Instant,
    price: ModelPrice,
    held: Money,
    /// The member's monthly spend counter the hold also moved.
    spend_key: Option<String>,
    /// The counter stamps the hold was taken under.
    stamps: Stamps,
    /// The client's request body, kept for the fallback token estimate.
    pub request_body: Bytes,
    pub max_output_tokens: Option<u64>,
    done: bool,
}

impl Pending {
    pub fn new(state: Arc<AppState>, row: UsageRow, started: Instant, hold: Hold) -> Pending {
        state.metrics.reservation_opened();
        Pending {
            state,
            row,
            started,
            price: hold.price,
            held: hold.held,
            spend_key: hold.spend_key,
            stamps: hold.stamps,
            request_body: hold.request_body,
            max_output_tokens: hold.max_output_tokens,
            done: false,
        }
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn request_id(&self) -> &str {
        &self.row.request_id
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
        let (usage, source) = match outcome.usage {
            Some((usage, source)) => (usage, Some(source)),
            None => (Usage::default(), None),
        };
        let cost = self.price.cost(&usage);
        let row = &mut self.row;
        row.input_tokens = usage.input_tokens as i64;
        row.cached_tokens = usage.cached_tokens as i64;
        row.cache_write_tokens = usage.cache_write_tokens as i64;
        row.output_tokens = usage.output_tokens as i64;
        row.reasoning_tokens = usage.reasoning_tokens as i64;
        row.cost_nano = cost.nano();
        row.usage_source = source.map_or("none", UsageSource::as_str).to_string();
        row.status = outcome.status.as_str().to_string();
        row.error_code = outcome.error_code.map(str::to_string);
        row.http_status = i64::from(outcome.http_status);
        row.latency_ms = self.started.elapsed().as_millis() as i64;
        row.finished_at = self.state.clock.now_ms();

        row.spend_key = self.spend_key.take();

        let state = &self.state;
        state.metrics.record_usage(&usage, cost, outcome.status);
        state.metrics.answered(&row.model, outcome.http_status);
        // Return the unused part of the hold (or take the excess, if the
        // estimate was low) in one atomic step, then queue the row with the
        // stamps its cost is counted under.
        let held = self.held;
        let stamps = std::mem::take(&mut self.stamps);
        let mut row = std::mem::take(&mut self.row);
        match state.counters.as_ref() {
            Counters::Memory(memory) => {
                match memory.settle(
                    &row.account_id,
                    row.spend_key.as_deref(),
                    held,
                    cost,
                    &stamps,
                ) {
                    Ok(counted) => row.counted = counted,
                    Err(error) => tracing::error!(%error, "Settlement failed."),
                }
                state.ledger.record(row);
                state.metrics.reservation_closed();
            }
            Counters::Redis(_) => {
                let task_state = state.clone();
                state.tasks.spawn(async move {
                    // Redis may be briefly away: retry for about a minute.
                    // If it never answers, the hold stays taken (the balance
                    // reads low, never high) and the row says the cost is
                    // counted under the hold's stamps, so no writer applies
                    // it a second time.
                    let mut backoff = Duration::from_millis(50);
                    // Retries stop well inside the time Redis keeps the
                    // settled mark (`counters::SETTLED_MARK_SECS`), so a
                    // retry after a lost reply always finds it.
                    let retry_until = tokio::time::Instant::now() + SETTLE_RETRY_WINDOW;
                    row.counted = loop {
                        let settled = task_state
                            .counters
                            .settle(
                                &row.account_id,
                                row.spend_key.as_deref(),
                                held,
                                cost,
                                &stamps,
                                &row.request_id,
                            )
                            .await;
                        match settled {
                            Ok(counted) => break counted,
                            Err(error) if tokio::time::Instant::now() < retry_until => {
                                tracing::warn!(request_id = %row.request_id, %error, "Settlement failed; retrying.");
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                            }
                            Err(error) => {
                                tracing::error!(request_id = %row.request_id, %error, "Settlement failed; the hold stays taken.");
                                task_state.metrics.settlement_failed();
                                break stamps;
                            }
                        }
                    };
                    task_state.ledger.record(row);
                    task_state.metrics.reservation_closed();
                });
            }
        }
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
