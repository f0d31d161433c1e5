//! The metered request path. `handle` is the only place that orders the
//! phases; each phase lives in its own file and reads and extends one
//! [`RequestCtx`].
//!
//! ```text
//!  1 authenticate  key → Principal (cache; store on miss)   authorize.rs  401
//!  2 rate limit    per key requests per minute              authorize.rs  429
//!  3 read          body limit, content type, JSON, model    request.rs    413/415/400
//!  4 authorize     model → provider; billing target         authorize.rs  404/400/403
//!  5 admit         hold an upper bound of the cost          admit.rs      402/503
//!  6 forward       rewrite if needed; upstream or mock      forward.rs    502/504
//!  7 meter+settle  JSON: whole body; SSE: MeteredBody       forward.rs, stream.rs, settle.rs
//!  8 record        entry → ledger queue (never awaited)     ledger::Settler
//! ```
//!
//! Refusals after the rate limit are recorded as rows with no cost, so an
//! owner can see who was refused and why. Every log line of a request runs
//! inside its span: the request id always; the key prefix, model, provider
//! and payer too when debug logging is on (see [`detail`]).

mod admit;
mod authorize;
mod ctx;
mod forward;
mod headers;
mod models;
mod request;
mod settle;
mod stream;

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Request, Response};
use hyper::body::Incoming;
use tracing::Instrument;

use self::ctx::RequestCtx;

/// Most bytes of a client's model name kept on a row (contract §4).
const MODEL_NAME_BYTES: usize = 256;

pub use self::models::list as list_models;
use self::request::ClientRequest;
use self::settle::{Hold, Pending};
use crate::domain::{RequestId, Source, Status};
use crate::error::{ErrorShape, GatewayError};
use crate::http_body::Body;
use crate::providers::Endpoint;
use crate::state::AppState;
use crate::tasks::RunToEnd;

pub async fn handle(
    state: Arc<AppState>,
    request: Request<Incoming>,
    endpoint: Endpoint,
) -> Response<Body> {
    let id = RequestId::new();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        key = tracing::field::Empty,
        model = tracing::field::Empty,
        provider = tracing::field::Empty,
        payer = tracing::field::Empty,
    );
    let shape = if endpoint == Endpoint::Messages {
        ErrorShape::Anthropic
    } else {
        ErrorShape::OpenAi
    };
    async move {
        match serve(&state, request, endpoint, id.clone()).await {
            Ok(response) => response,
            Err(error) => {
                state.metrics.refused();
                error.into_response(shape, &id)
            }
        }
    }
    .instrument(span)
    .await
}

async fn serve(
    state: &Arc<AppState>,
    request: Request<Incoming>,
    endpoint: Endpoint,
    id: RequestId,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let started_at = state.clock.now_ms();

    // 1. Authenticate before reading the body: strangers cost nothing.
    let principal = authorize::authenticate(state, request.headers()).await?;
    // Then the per-key rate limit, before anything that costs memory, a
    // row or a query: every request counts, refused or not, and a key
    // that passes its limit gets no row for it (a flood cannot grow the
    // ledger).
    if let Err(limited) = authorize::rate_limit(state, &principal) {
        state.metrics.answered("unknown", limited.status().as_u16());
        return Err(limited);
    }
    if detail() {
        tracing::Span::current().record("key", principal.key_prefix.as_str());
    }
    let (parts, body) = request.into_parts();
    let ctx = RequestCtx::new(id, endpoint, started, started_at, principal);

    // 3–5. Read, authorize, hold money; a refusal is recorded. Once begun
    // this runs to its end even if the client leaves: a hold whose
    // counter step was cut off half-way (the script ran, its answer was
    // never read) would stay taken for good. What it then holds goes back
    // at once (the pending request is dropped unforwarded: a
    // `client_closed` row at no cost).
    let admitting = {
        let task_state = state.clone();
        let leftover_state = state.clone();
        let headers = parts.headers;
        RunToEnd::with_leftover(
            &state.tasks,
            async move {
                let mut ctx = ctx;
                let admitted = admit(&task_state, &mut ctx, &headers, body).await;
                (ctx, headers, admitted)
            },
            move |(ctx, _, admitted)| match admitted {
                Ok((_, hold)) => drop(Pending::new(
                    leftover_state.settler.clone(),
                    ctx.entry,
                    ctx.started,
                    hold,
                )),
                Err(error) => record_refusal(&leftover_state, ctx, &error),
            },
        )
    };
    let (mut ctx, headers, admitted) = admitting.await;
    let (request, hold) = match admitted {
        Ok(admitted) => admitted,
        Err(error) => {
            record_refusal(state, ctx, &error);
            return Err(error);
        }
    };
    let Some(route) = ctx.route else {
        return Err(GatewayError::internal("forwarding without a route"));
    };
    let warning = ctx.warning.take();
    let pending = Pending::new(state.settler.clone(), ctx.entry, ctx.started, hold);

    // 6–8. Forward, meter, settle, record.
    let mut response = forward::forward(state, route, endpoint, request, pending, &headers).await?;
    if let Some(warning) = warning {
        if let Ok(value) = HeaderValue::from_str(&warning) {
            response
                .headers_mut()
                .insert("x-tollgate-limit-warning", value);
        }
    }
    Ok(response)
}

/// Phases 3–5. On success the entry names the model and payer and the hold
/// is taken.
async fn admit(
    state: &AppState,
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<(ClientRequest, Hold), GatewayError> {
    let server = &state.config.server;
    let request = request::read(
        headers,
        body,
        server.max_body_bytes,
        server.body_read_timeout_ms,
    )
    .await?;
    // A client's name reaches the row cleaned and bounded: a NUL byte or a
    // 100 KB name must not make the database reject the row.
    ctx.entry.model = crate::domain::clean_label(&request.model, MODEL_NAME_BYTES);
    ctx.entry.streamed = request.stream;
    authorize::authorize(state, ctx, &request, headers).await?;
    let hold = admit::admit(state, ctx, &request).await?;
    Ok((request, hold))
}

/// Whether the request span carries its detail fields (key prefix, model,
/// provider, payer): only with debug logging on. Each field costs the log
/// subscriber a formatting pass per request (about 0.3 µs; the four of them
/// 1.7 µs on top of 0.75 µs for the span itself, measured with the `fmt`
/// subscriber), which at the default `info` level is paid by every request
/// and read by almost none.
pub(crate) fn detail() -> bool {
    tracing::enabled!(tracing::Level::DEBUG)
}

/// Records a refusal after authentication: no cost, the refusal's code.
fn record_refusal(state: &AppState, ctx: RequestCtx, error: &GatewayError) {
    let mut entry = ctx.entry;
    entry.status = Status::Refused;
    // Nothing was forwarded: a refusal costs nothing (the daily rollups,
    // and the balances read from them, leave refusals out).
    entry.cost_nano = 0;
    entry.error_code = Some(error.code().to_string());
    entry.http_status = i64::from(error.status().as_u16());
    entry.usage_source = Source::None;
    entry.latency_ms = ctx.started.elapsed().as_millis() as i64;
    entry.finished_at = state.clock.now_ms();
    // Only a configured model's name becomes a metric label.
    let label = ctx
        .route
        .map_or("unknown", |route| route.model(&state.config).name.as_str());
    state.metrics.answered(label, error.status().as_u16());
    state.settler.record(entry);
}
