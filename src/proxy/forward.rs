//! Phases 6–7: rewrite the body if it must change, send it upstream (a real
//! provider or the built-in mock, one path), and hand the answer to the
//! meter: a JSON answer is read whole and settled; an SSE answer streams
//! through [`MeteredBody`], which settles at its end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use super::ctx::Route;
use super::headers;
use super::request::ClientRequest;
use super::settle::{Outcome, Pending};
use super::stream::{Disconnect, MeteredBody};
use crate::domain::Status;
use crate::error::GatewayError;
use crate::http_body::Body;
use crate::meter::decode::{self, Coding};
use crate::meter::{self, UsageSource};
use crate::providers::{self, Endpoint, Prepared, SendError, UpstreamBody};
use crate::state::AppState;
use crate::tasks::RunToEnd;

/// Largest non-streamed upstream response read (for metering).
const MAX_UPSTREAM_BODY: usize = 256 * 1024 * 1024;

/// Sends the request upstream and answers the client.
pub async fn forward(
    state: &Arc<AppState>,
    route: Route,
    endpoint: Endpoint,
    request: ClientRequest,
    pending: Pending,
    client_headers: &HeaderMap,
) -> Result<Response<Body>, GatewayError> {
    let model = route.model(&state.config);
    let provider = route.provider(&state.config);
    let rewrite = providers::plan_rewrite(
        endpoint,
        provider,
        &model.name,
        &model.upstream_model,
        request.stream,
        request.asked_for_usage(),
    );
    // The body is spliced (never parsed into a tree) only when it must
    // change.
    let (upstream_body, strip_usage) = if rewrite.is_none() {
        (request.bytes, false)
    } else {
        let (changed, strip_usage) = rewrite
            .apply(&request.bytes)
            .map_err(GatewayError::internal)?;
        (changed.map_or(request.bytes, Bytes::from), strip_usage)
    };
    let request_id = pending.request_id().clone();
    state.metrics.gateway_overhead.observe(pending.elapsed());
    let prepared = providers::prepare(provider, endpoint, upstream_body, client_headers)
        .map_err(GatewayError::internal)?;

    if !request.stream {
        // A non-streamed call runs to the end even if the client leaves: the
        // upstream bills it in full, so Tollgate does too. It runs inline (no
        // task, no thread hop) and moves onto a tracked task only if the
        // client goes away first.
        let task_state = state.clone();
        let call = RunToEnd::new(&state.tasks, async move {
            let upstream = match send(&task_state, prepared).await {
                Ok(response) => response,
                Err(error) => return Err(unreachable_upstream(pending, error)),
            };
            let (parts, body) = upstream.into_parts();
            let coding = coding_of(&parts.headers);
            let body =
                complete_json(&task_state, pending, endpoint, body, parts.status, coding).await?;
            Ok((parts, body))
        });
        let (parts, body) = call.await?;
        let mut response = Response::new(Body::full(body));
        *response.status_mut() = parts.status;
        headers::copy_upstream(&parts.headers, response.headers_mut());
        headers::set_request_id(response.headers_mut(), &request_id);
        return Ok(response);
    }

    // A stream, too, runs on if the client leaves before the upstream's
    // headers: the upstream may already be generating (and billing), and
    // the metered body, dropped unread, then settles as a disconnect.
    let task_state = state.clone();
    let call = RunToEnd::new(&state.tasks, async move {
        let upstream = match send(&task_state, prepared).await {
            Ok(upstream) => upstream,
            Err(error) => return Err(unreachable_upstream(pending, error)),
        };
        let (parts, body) = upstream.into_parts();
        let is_sse = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !parts.status.is_success() || !is_sse {
            // An error status (or a JSON answer to a stream request): pass
            // it through; it costs nothing unless it carries usage.
            let coding = coding_of(&parts.headers);
            let body =
                complete_json(&task_state, pending, endpoint, body, parts.status, coding).await?;
            return Ok((parts, Body::full(body), false));
        }
        let metered = MeteredBody::new(
            body,
            endpoint.protocol(),
            strip_usage,
            pending,
            idle_timeout(&task_state),
            Disconnect::new(&task_state.config.metering, &task_state.tasks),
            coding_of(&parts.headers),
        );
        Ok((parts, Body::stream(metered), true))
    });
    let (parts, body, streamed) = call.await?;
    let mut response = Response::new(body);
    *response.status_mut() = parts.status;
    headers::copy_upstream(&parts.headers, response.headers_mut());
    headers::set_request_id(response.headers_mut(), &request_id);
    if streamed {
        response.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
    }
    Ok(response)
}

/// Sends upstream within `upstream.response_timeout_ms` (to the headers).
async fn send(
    state: &AppState,
    prepared: Prepared,
) -> Result<Response<UpstreamBody>, GatewayError> {
    let timeout = Duration::from_millis(state.config.upstream.response_timeout_ms);
    let sent = Instant::now();
    let answer = tokio::time::timeout(timeout, prepared.send(state.client())).await;
    state.metrics.upstream_latency.observe(sent.elapsed());
    match answer {
        Err(_) => Err(GatewayError::UpstreamTimeout),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => {
            tracing::warn!(%error, "Upstream request failed.");
            Err(match error {
                SendError::TimedOut(_) => GatewayError::UpstreamTimeout,
                SendError::Connect(_) => {
                    GatewayError::UpstreamUnreachable("connection failed".into())
                }
                SendError::Broken(_) => {
                    GatewayError::UpstreamUnreachable("the connection broke".into())
                }
                SendError::Build(error) => GatewayError::internal(error),
            })
        }
    }
}

/// The upstream could not be asked: settle with no cost, return the error.
fn unreachable_upstream(pending: Pending, error: GatewayError) -> GatewayError {
    let status = error.status().as_u16();
    pending.finish(Outcome::nothing(Status::Failed, status, Some(error.code())));
    error
}

/// Reads a whole (non-streamed) upstream answer and settles from it.
async fn complete_json(
    state: &AppState,
    pending: Pending,
    endpoint: Endpoint,
    body: UpstreamBody,
    status: StatusCode,
    coding: Option<Coding>,
) -> Result<Bytes, GatewayError> {
    let read = tokio::time::timeout(
        idle_timeout(state),
        Limited::new(body, MAX_UPSTREAM_BODY).collect(),
    )
    .await;
    let error = match read {
        Ok(Ok(collected)) => {
            let body = collected.to_bytes();
            match coding {
                Some(coding) => {
                    let decoded = decode::decode_all(coding, &body);
                    finish_json(pending, endpoint, &decoded, status.as_u16());
                }
                None => finish_json(pending, endpoint, &body, status.as_u16()),
            }
            return Ok(body);
        }
        Err(_) => GatewayError::UpstreamTimeout,
        Ok(Err(_)) => GatewayError::UpstreamUnreachable("the response broke off".into()),
    };
    pending.finish(Outcome::nothing(
        Status::Failed,
        502,
        Some("upstream_disconnected"),
    ));
    Err(error)
}

/// The answer's content coding, for the meter. A coding it cannot read is
/// metered as it came (its usage is then estimated) and logged.
fn coding_of(headers: &HeaderMap) -> Option<Coding> {
    let header = headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    match Coding::of(header) {
        Ok(coding) => coding,
        Err(unknown) => {
            tracing::warn!(coding = %unknown, "Upstream answer in a coding the meter cannot read.");
            None
        }
    }
}

fn idle_timeout(state: &AppState) -> Duration {
    Duration::from_millis(state.config.upstream.idle_timeout_ms)
}

/// Meters a whole JSON answer and settles.
fn finish_json(pending: Pending, endpoint: Endpoint, body: &[u8], http_status: u16) {
    if !(200..300).contains(&http_status) {
        pending.finish(Outcome::nothing(
            Status::UpstreamError,
            http_status,
            Some("upstream_status"),
        ));
        return;
    }
    let usage = match meter::usage_from_json(endpoint.protocol(), body) {
        Some(usage) => (usage, UsageSource::Exact),
        None => {
            let input = pending.estimate_prompt_tokens(false);
            let output = serde_json::from_slice::<Value>(body)
                .map(|value| {
                    let mut tally = meter::OutputTally::default();
                    collect_output_text(&value, &mut tally);
                    tally.estimate_tokens()
                })
                .unwrap_or(0);
            (
                meter::Usage {
                    input_tokens: input,
                    output_tokens: output,
                    ..meter::Usage::default()
                },
                UsageSource::Estimated,
            )
        }
    };
    pending.finish(Outcome {
        usage: Some(usage),
        status: Status::Ok,
        http_status,
        error_code: None,
    });
}

/// The generated text of a JSON answer, for the fallback estimate.
fn collect_output_text(value: &Value, tally: &mut meter::OutputTally) {
    for field in ["choices", "content", "output"] {
        if let Some(part) = value.get(field) {
            walk_text(part, tally);
        }
    }
}

fn walk_text(value: &Value, tally: &mut meter::OutputTally) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| walk_text(item, tally)),
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("text" | "content" | "arguments", Value::String(text)) => tally.push(text),
                    (_, Value::Array(_) | Value::Object(_)) => walk_text(item, tally),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}
