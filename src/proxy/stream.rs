//! `MeteredBody`: a streamed response passing through the meter.
//!
//! Every byte is forwarded as soon as it arrives, except in one case: when
//! Tollgate added `include_usage` on the client's behalf, bytes are
//! forwarded per complete event so that the usage-only event can be cut
//! out (at most one partial event is held). The body settles its request
//! exactly once: at the end of the stream, on an upstream failure or idle
//! timeout, or in `Drop` when the client goes away mid-stream. A client
//! that leaves never pays less than the upstream charges (contract §5):
//! `drain` reads the upstream on to its usage on a tracked task ([`Drain`]);
//! `cancel` closes it and bills [`conservative`] usage.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as _, Frame};
use tokio::time::Sleep;

use super::settle::{Outcome, Pending};
use crate::config::{MeteringConfig, OnClientDisconnect};
use crate::domain::Status;
use crate::http_body::BoxError;
use crate::meter::decode::{Coding, Decoder};
use crate::meter::{EventAction, Protocol, StreamEnd, StreamMeter, Usage, UsageSource};
use crate::providers::UpstreamBody;
use crate::tasks::Tasks;

/// What to do with a stream whose client left (`[metering]`).
#[derive(Clone)]
pub struct Disconnect {
    pub mode: OnClientDisconnect,
    pub drain_timeout: Duration,
    pub assumed_tokens_per_sec: u64,
    pub tasks: Tasks,
}

impl Disconnect {
    pub fn new(config: &MeteringConfig, tasks: &Tasks) -> Disconnect {
        Disconnect {
            mode: config.on_client_disconnect,
            drain_timeout: Duration::from_secs(config.drain_timeout_secs),
            assumed_tokens_per_sec: config.cancel_assumed_tokens_per_sec,
            tasks: tasks.clone(),
        }
    }
}

/// The next chunk of data from the upstream (trailers carry nothing we
/// meter and are skipped).
fn poll_chunk(
    body: &mut UpstreamBody,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Bytes, BoxError>>> {
    loop {
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    return Poll::Ready(Some(Ok(data)));
                }
            }
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        }
    }
}

pub struct MeteredBody {
    source: UpstreamBody,
    protocol: Protocol,
    meter: StreamMeter,
    strip_usage: bool,
    /// Bytes of the current, incomplete event (strip mode only).
    held: BytesMut,
    pending: Option<Pending>,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    ended: bool,
    disconnect: Disconnect,
    /// A compressed stream: the meter reads it decoded, the client gets it
    /// as it came (and so the usage chunk is not cut out of it).
    decoder: Option<Decoder>,
}

impl MeteredBody {
    pub fn new(
        source: UpstreamBody,
        protocol: Protocol,
        strip_usage: bool,
        pending: Pending,
        idle_timeout: Duration,
        disconnect: Disconnect,
        coding: Option<Coding>,
    ) -> MeteredBody {
        let strip_usage = strip_usage && coding.is_none();
        MeteredBody {
            source,
            protocol,
            meter: StreamMeter::new(protocol, strip_usage),
            strip_usage,
            held: BytesMut::new(),
            pending: Some(pending),
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            ended: false,
            disconnect,
            decoder: coding.map(Decoder::new),
        }
    }

    /// Meters one chunk; returns the bytes to forward.
    fn pass(&mut self, chunk: Bytes) -> Bytes {
        if !self.strip_usage {
            meter_chunk(&mut self.meter, self.decoder.as_mut(), &chunk);
            return chunk;
        }
        let mut out = BytesMut::new();
        let mut last_end = 0;
        let held = &mut self.held;
        self.meter.feed(&chunk, |action, end| {
            if action == EventAction::Forward {
                out.extend_from_slice(held);
                out.extend_from_slice(&chunk[last_end..end]);
            }
            held.clear();
            last_end = end;
        });
        self.held.extend_from_slice(&chunk[last_end..]);
        out.freeze()
    }

    /// Settles the request from what the meter saw.
    fn settle(&mut self, broken: bool, status_if_broken: Status, error_code: Option<&'static str>) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let end = self.meter.end();
        let broken = broken || end == StreamEnd::Errored;
        let (usage, source) =
            self.meter
                .conclude(broken, Some(pending.bound.output_tokens), |quick| {
                    pending.estimate_prompt_tokens(quick)
                });
        let status = if !broken {
            Status::Ok
        } else if end == StreamEnd::Errored {
            Status::UpstreamError
        } else {
            status_if_broken
        };
        let error_code = if end == StreamEnd::Errored {
            Some("upstream_stream_error")
        } else if broken {
            error_code
        } else {
            None
        };
        pending.finish(Outcome {
            usage: Some((usage, source)),
            status,
            http_status: 200,
            error_code,
        });
    }

    /// The event that tells an SDK the stream failed (the status is already 200).
    fn error_event(&self, message: &str) -> Bytes {
        let text = match self.protocol {
            Protocol::OpenAiChat => format!(
                "\n\ndata: {}\n\n",
                serde_json::json!({"error":{"message":message,"type":"server_error","param":null,"code":"upstream_error"}})
            ),
            Protocol::OpenAiResponses => format!(
                "\n\nevent: error\ndata: {}\n\n",
                serde_json::json!({"type":"error","code":"upstream_error","message":message,"param":null})
            ),
            Protocol::Anthropic => format!(
                "\n\nevent: error\ndata: {}\n\n",
                serde_json::json!({"type":"error","error":{"type":"api_error","message":message}})
            ),
        };
        Bytes::from(text)
    }

    fn fail(
        &mut self,
        message: &str,
        error_code: &'static str,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.settle(true, Status::Failed, Some(error_code));
        self.ended = true;
        self.held.clear();
        Poll::Ready(Some(Ok(Frame::data(self.error_event(message)))))
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match poll_chunk(&mut this.source, cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let deadline = tokio::time::Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(deadline);
                    let out = this.pass(chunk);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    let span = this.pending.as_ref().map(|p| p.span().clone());
                    let _entered = span.as_ref().map(tracing::Span::enter);
                    tracing::warn!(%error, "Upstream stream broke off.");
                    return this.fail(
                        "The upstream connection broke off mid-stream.",
                        "upstream_disconnected",
                    );
                }
                Poll::Ready(None) => {
                    finish_meter(&mut this.meter, this.decoder.as_mut());
                    // No terminal marker and no usage: the upstream cut the
                    // stream short.
                    let truncated = this.meter.end() == StreamEnd::Open
                        && this.meter.reported_usage().is_none();
                    this.settle(truncated, Status::UpstreamError, Some("upstream_truncated"));
                    this.ended = true;
                    if !this.held.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(this.held.split().freeze()))));
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if this.idle.as_mut().poll(cx).is_ready() {
                        return this.fail(
                            "The upstream stream went idle past the timeout.",
                            "upstream_idle_timeout",
                        );
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // The client went away mid-stream.
        let Some(pending) = self.pending.take() else {
            return;
        };
        let assumed = self.disconnect.assumed_tokens_per_sec;
        let meter = std::mem::replace(&mut self.meter, StreamMeter::new(self.protocol, false));
        if self.disconnect.mode == OnClientDisconnect::Cancel {
            settle_cancelled(pending, &meter, assumed);
            return;
        }
        let drain = Drain {
            source: std::mem::replace(&mut self.source, UpstreamBody::Mock(Default::default())),
            meter,
            decoder: self.decoder.take(),
            pending: Some(pending),
            idle_timeout: self.idle_timeout,
            assumed_tokens_per_sec: assumed,
        };
        let timeout = self.disconnect.drain_timeout;
        let tasks = self.disconnect.tasks.clone();
        // Outside a runtime the future is dropped unrun, and `Drain`'s own
        // `Drop` bills the conservative estimate. Shutdown ends a drain
        // early (the same estimate), so it cannot hold shutdown for long.
        self.disconnect.tasks.spawn_if_running(async move {
            tokio::select! {
                () = drain.run(timeout) => {}
                () = tasks.stopping() => {}
            }
        });
    }
}

/// A stream whose client left, read on to the upstream's own usage. Dropped
/// before it settled (shutdown, no runtime), it bills the conservative
/// estimate.
struct Drain {
    source: UpstreamBody,
    meter: StreamMeter,
    decoder: Option<Decoder>,
    /// Taken when settled; `Drop` settles what was not.
    pending: Option<Pending>,
    idle_timeout: Duration,
    assumed_tokens_per_sec: u64,
}

impl Drain {
    async fn run(mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let Some(output_bound) = self.pending.as_ref().map(|p| p.bound.output_tokens) else {
            return;
        };
        loop {
            let until = deadline.min(tokio::time::Instant::now() + self.idle_timeout);
            let source = &mut self.source;
            let next =
                tokio::time::timeout_at(until, std::future::poll_fn(|cx| poll_chunk(source, cx)))
                    .await;
            match next {
                Ok(Some(Ok(chunk))) => {
                    meter_chunk(&mut self.meter, self.decoder.as_mut(), &chunk);
                    // An upstream past the hold's output is broken; what it
                    // sends is no longer worth reading.
                    if self.meter.output().quick_tokens() > output_bound.saturating_mul(4) {
                        break;
                    }
                }
                Ok(Some(Err(_))) | Err(_) => break,
                Ok(None) => {
                    finish_meter(&mut self.meter, self.decoder.as_mut());
                    break;
                }
            }
        }
        let Some(pending) = self.pending.take() else {
            return;
        };
        match self.meter.final_usage() {
            Some(usage) => {
                pending.metrics().drained();
                pending.finish(Outcome {
                    usage: Some((usage, UsageSource::Exact)),
                    status: Status::ClientClosed,
                    http_status: 499,
                    error_code: Some("client_closed"),
                });
            }
            None => settle_cancelled(pending, &self.meter, self.assumed_tokens_per_sec),
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            settle_cancelled(pending, &self.meter, self.assumed_tokens_per_sec);
        }
    }
}

/// Feeds the meter one chunk, decoded first when the stream is compressed.
fn meter_chunk(meter: &mut StreamMeter, decoder: Option<&mut Decoder>, chunk: &[u8]) {
    match decoder {
        Some(decoder) => meter.feed(&decoder.push(chunk), |_, _| {}),
        None => meter.feed(chunk, |_, _| {}),
    }
}

/// The stream ended: the decoder's last bytes, then the meter's last event.
fn finish_meter(meter: &mut StreamMeter, decoder: Option<&mut Decoder>) {
    if let Some(decoder) = decoder {
        meter.feed(&decoder.finish(), |_, _| {});
    }
    meter.finish();
}

/// Settles a stream cut on the client's behalf at [`conservative`] usage.
fn settle_cancelled(pending: Pending, meter: &StreamMeter, assumed_tokens_per_sec: u64) {
    // Usage the upstream already reported in full needs no estimate.
    let usage = match meter.final_usage() {
        Some(usage) => (usage, UsageSource::Exact),
        None => (
            conservative(meter, &pending, assumed_tokens_per_sec),
            UsageSource::Partial,
        ),
    };
    pending.finish(Outcome {
        usage: Some(usage),
        status: Status::ClientClosed,
        http_status: 499,
        error_code: Some("client_closed"),
    });
}

/// The usage of a stream cut before its end, never below what the upstream
/// can have charged and never above the hold: input as reported (Anthropic
/// reports it first) or else the hold's input bound; output the most of
/// what was seen, what was reported, and `assumed_tokens_per_sec` for every
/// second since the request arrived (hidden reasoning is not seen), within
/// the hold's output bound.
fn conservative(meter: &StreamMeter, pending: &Pending, assumed_tokens_per_sec: u64) -> Usage {
    let bound = &pending.bound;
    let reported = meter.reported_usage();
    let mut usage = reported.unwrap_or(Usage {
        input_tokens: bound.input_tokens,
        ..Usage::default()
    });
    let elapsed_ms = pending.elapsed().as_millis() as u64;
    let assumed = assumed_tokens_per_sec
        .saturating_mul(elapsed_ms)
        .div_ceil(1000);
    let seen = meter.output().quick_tokens();
    usage.output_tokens = usage
        .output_tokens
        .max(seen)
        .max(assumed)
        .max(1)
        .min(bound.output_tokens.max(usage.output_tokens));
    usage
}
