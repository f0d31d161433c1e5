//! `MeteredBody`: a streamed response passing through the meter.
//!
//! Every byte is forwarded as soon as it arrives, except in one case: when
//! Tollgate added `include_usage` on the client's behalf, bytes are
//! forwarded per complete event so that the usage-only event can be cut
//! out (at most one partial event is held). The body settles its request
//! exactly once: at the end of the stream, on an upstream failure or idle
//! timeout, or in `Drop` when the client goes away mid-stream (billed as
//! `partial`).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as _, Frame};
use tokio::time::Sleep;

use super::settle::{Outcome, Pending};
use crate::domain::Status;
use crate::http_body::BoxError;
use crate::meter::{EventAction, Protocol, StreamEnd, StreamMeter};
use crate::providers::UpstreamBody;

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
}

impl MeteredBody {
    pub fn new(
        source: UpstreamBody,
        protocol: Protocol,
        strip_usage: bool,
        pending: Pending,
        idle_timeout: Duration,
    ) -> MeteredBody {
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
        }
    }

    /// Meters one chunk; returns the bytes to forward.
    fn pass(&mut self, chunk: Bytes) -> Bytes {
        if !self.strip_usage {
            self.meter.feed(&chunk, |_, _| {});
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
        let (usage, source) = self
            .meter
            .conclude(broken, pending.max_output_tokens, |quick| {
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
                    this.meter.finish();
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
        // The client went away mid-stream: bill what was generated so far.
        self.settle(true, Status::ClientClosed, Some("client_closed"));
    }
}
