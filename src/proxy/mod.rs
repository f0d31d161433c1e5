//! The metered request path. `handle` is the only place that orders the
//! phases; each phase is a plain function.
//!
//! ```text
//!  1 authenticate  key → Principal (cache; store on miss)              401
//!  2 read          body limit, content type, JSON, model               413/415/400
//!  3 authorize     model → provider; billing target                   404/400/403
//!  4 rate limit    per key requests per minute                         429
//!  5 admit         hold an upper bound of the cost on the payer        402
//!  6 forward       rewrite model/include_usage; pooled client          502/504
//!  7 meter+settle  JSON: whole body; SSE: MeteredBody; settle once
//!  8 record        row → ledger queue (never awaited)
//! ```
//!
//! Refusals after authentication are recorded as rows with no cost, so an
//! owner can see who was refused and why.

pub mod settle;
pub mod stream;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use self::settle::{Hold, Outcome, Pending, Status};
use self::stream::{MeteredBody, Source};
use crate::accounts;
use crate::app::AppState;
use crate::auth::{self, Principal};
use crate::config::{ModelConfig, ProviderKind};
use crate::counters::{Reserve, SpendHold, Stamps};
use crate::error::{ErrorShape, GatewayError};
use crate::http_body::Body;
use crate::keys;
use crate::meter::{self, UsageSource};
use crate::money::Money;
use crate::policy::{self, Enforcement, MemberPolicy, Period};
use crate::providers::{self, mock, Endpoint};
use crate::store::teams::LimitEvent;
use crate::store::UsageRow;

/// Largest non-streamed upstream response read (for metering).
const MAX_UPSTREAM_BODY: usize = 256 * 1024 * 1024;

/// Who pays for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Billing {
    pub account_id: String,
    /// The member's policy when a team pays.
    pub policy: Option<Arc<MemberPolicy>>,
}

pub async fn handle(
    state: Arc<AppState>,
    request: Request<Incoming>,
    endpoint: Endpoint,
) -> Response<Body> {
    let request_id = keys::new_request_id();
    let shape = if endpoint == Endpoint::Messages {
        ErrorShape::Anthropic
    } else {
        ErrorShape::OpenAi
    };
    match handle_inner(&state, request, endpoint, &request_id).await {
        Ok(response) => response,
        Err(error) => {
            state.metrics.refused();
            error.into_response(shape, &request_id)
        }
    }
}

/// The parts of a request known after reading it.
struct Parsed {
    head: RequestHead,
    model: String,
    stream: bool,
}

/// The few fields of a request body the gateway reads. Everything else is
/// skipped while the body is validated, so a request is not copied into a
/// JSON tree unless it must be rewritten.
#[derive(serde::Deserialize, Default)]
struct RequestHead {
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    stream: Option<Value>,
    #[serde(default)]
    max_tokens: Option<Value>,
    #[serde(default)]
    max_completion_tokens: Option<Value>,
    #[serde(default)]
    max_output_tokens: Option<Value>,
    #[serde(default)]
    stream_options: Option<Value>,
}

impl RequestHead {
    fn field(&self, name: &str) -> Option<&Value> {
        match name {
            "max_tokens" => self.max_tokens.as_ref(),
            "max_completion_tokens" => self.max_completion_tokens.as_ref(),
            "max_output_tokens" => self.max_output_tokens.as_ref(),
            _ => None,
        }
    }

    /// Whether the client asked for the usage chunk itself.
    fn asked_for_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

async fn handle_inner(
    state: &Arc<AppState>,
    request: Request<Incoming>,
    endpoint: Endpoint,
    request_id: &str,
) -> Result<Response<Body>, GatewayError> {
    let started = Instant::now();
    let started_at = state.clock.now_ms();

    // 1. Authenticate before reading the body: strangers cost nothing.
    let token = auth::credential(request.headers()).ok_or(GatewayError::InvalidApiKey)?;
    let principal = auth::authenticate_key(state, token).await?;

    let (parts, body) = request.into_parts();
    let mut row = UsageRow {
        request_id: request_id.to_string(),
        user_id: principal.user_id.clone(),
        key_id: principal.key_id.clone(),
        account_id: principal.user_id.clone(),
        endpoint: endpoint.name().to_string(),
        started_at,
        ..UsageRow::default()
    };

    let admitted = admit(state, &principal, &parts.headers, body, endpoint, &mut row).await;
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(error) => {
            record_refusal(state, row, &error, started);
            return Err(error);
        }
    };
    let model = admitted.model;
    let provider = state.config.provider_of(model);
    let hold = Hold {
        price: model.price,
        held: admitted.held,
        spend_key: admitted.spend_key,
        stamps: admitted.stamps,
        request_body: admitted.body_bytes.clone(),
        max_output_tokens: admitted.max_output,
    };
    let pending = Pending::new(state.clone(), row, started, hold);
    let mut response = forward(
        state,
        pending,
        admitted.parsed,
        model,
        provider.kind,
        &parts.headers,
        endpoint,
        admitted.body_bytes,
    )
    .await?;
    if let Some(warning) = admitted.warning {
        if let Ok(value) = HeaderValue::from_str(&warning) {
            response
                .headers_mut()
                .insert("x-tollgate-limit-warning", value);
        }
    }
    Ok(response)
}

/// What admission hands to forwarding.
struct Admitted<'s> {
    parsed: Parsed,
    model: &'s ModelConfig,
    body_bytes: Bytes,
    held: Money,
    /// The output tokens the hold covers (the client's `max_tokens`, else
    /// the model's or the configured default): a partial bill stays below.
    max_output: Option<u64>,
    /// The member's spend counter moved with the hold (team billing).
    spend_key: Option<String>,
    /// The counter stamps the hold was taken under.
    stamps: Stamps,
    /// A soft-limit warning for the response.
    warning: Option<String>,
}

/// Phases 2–5: read, authorize, rate-limit and hold money. On success the
/// row names the model and payer and the hold is taken.
async fn admit<'s>(
    state: &'s AppState,
    principal: &Principal,
    headers: &HeaderMap,
    body: Incoming,
    endpoint: Endpoint,
    row: &mut UsageRow,
) -> Result<Admitted<'s>, GatewayError> {
    // 2. Read.
    let parsed_and_bytes = read_json(state, headers, body).await?;
    let (parsed, body_bytes) = parsed_and_bytes;
    row.model = parsed.model.clone();
    row.streamed = parsed.stream;

    // 3. Authorize.
    let model = state
        .config
        .model(&parsed.model)
        .ok_or_else(|| GatewayError::ModelNotFound(parsed.model.clone()))?;
    let provider = state.config.provider_of(model);
    row.provider = provider.name.clone();
    let billing = resolve_billing(state, principal, headers).await?;
    row.account_id = billing.account_id.clone();
    row.team_id = billing.policy.as_ref().map(|p| p.team_id.clone());
    if let Some(policy) = &billing.policy {
        if !policy::model_allowed(&policy.restricted_models, &model.name) {
            return Err(GatewayError::ModelNotAllowed(model.name.clone()));
        }
    }
    if !providers::serves(provider.kind, endpoint) {
        return Err(GatewayError::invalid(
            format!(
                "The model '{}' is served by a provider that does not speak {}; use {}.",
                model.name,
                endpoint.suffix(),
                if provider.kind == ProviderKind::Anthropic {
                    "/v1/messages"
                } else {
                    "/v1/chat/completions"
                }
            ),
            Some("model"),
        ));
    }

    // 4. Rate limit.
    if let Some(limiter) = &state.rate_limiter {
        if let Err(not_until) = limiter.check_key(&principal.key_id) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(GatewayError::RateLimited {
                limit: state.config.limits.rpm_per_key,
                retry_after_secs: wait.as_secs().max(1),
            });
        }
    }

    // 5. Admit: hold an upper bound of the cost. A ledger that cannot keep
    // up refuses first: money it could not record is not spent.
    if state.ledger.is_saturated() {
        return Err(GatewayError::Unavailable(
            "The usage ledger is behind; the request was not forwarded. Retry shortly.".into(),
        ));
    }
    let max_output = requested_max_output(&parsed.head, endpoint);
    let output_bound = if endpoint == Endpoint::Embeddings {
        0
    } else {
        max_output
            .or(model.max_output_tokens)
            .unwrap_or(state.config.limits.default_max_output_tokens)
    };
    // Any tokenizer yields at most one token per two bytes of JSON text for
    // ordinary prompts; the bound needs no tokenizer on the hot path.
    let input_bound = (body_bytes.len() as u64).div_ceil(2);
    let hold = model.price.bound(input_bound, output_bound);
    let period = policy::period_of(row.started_at);
    let spend_key = billing
        .policy
        .as_ref()
        .map(|p| format!("{}:{}:{}", p.team_id, principal.user_id, period.key));
    let spend_hold = match (&billing.policy, &spend_key) {
        (Some(policy), Some(key)) => Some((
            policy.as_ref(),
            SpendHold {
                key,
                hard_limit: policy
                    .limit
                    .filter(|_| policy.enforcement == Enforcement::Hard),
            },
        )),
        _ => None,
    };
    let (spend, stamps) = hold_money(
        state,
        &billing.account_id,
        hold,
        spend_hold,
        &principal.user_id,
        &period,
        output_bound,
        &model.name,
    )
    .await?;
    let warning = soft_limit_warning(
        state,
        billing.policy.as_deref(),
        spend,
        &principal.user_id,
        &period,
    );
    Ok(Admitted {
        parsed,
        model,
        body_bytes,
        held: hold,
        max_output: (output_bound > 0).then_some(output_bound),
        spend_key,
        stamps,
        warning,
    })
}

async fn read_json(
    state: &AppState,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<(Parsed, Bytes), GatewayError> {
    if let Some(content_type) = headers.get(http::header::CONTENT_TYPE) {
        let text = content_type.to_str().unwrap_or("");
        if !text
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            return Err(GatewayError::UnsupportedMediaType);
        }
    }
    let limit = state.config.server.max_body_bytes;
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::PayloadTooLarge(limit));
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            if error.is::<http_body_util::LengthLimitError>() {
                return Err(GatewayError::PayloadTooLarge(limit));
            }
            return Err(GatewayError::invalid(
                "The request body could not be read.",
                None,
            ));
        }
    };
    let head: RequestHead =
        serde_json::from_slice(&bytes).map_err(|error| match error.classify() {
            serde_json::error::Category::Data => {
                GatewayError::invalid("The request body must be a JSON object.", None)
            }
            _ => GatewayError::invalid(
                format!("The request body is not valid JSON: {error}."),
                None,
            ),
        })?;
    let model = match &head.model {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        Some(_) => {
            return Err(GatewayError::invalid(
                "'model' must be a non-empty string.",
                Some("model"),
            ))
        }
        None => {
            return Err(GatewayError::invalid(
                "The request has no 'model'.",
                Some("model"),
            ))
        }
    };
    let stream = match &head.stream {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => {
            return Err(GatewayError::invalid(
                "'stream' must be a boolean.",
                Some("stream"),
            ))
        }
    };
    Ok((
        Parsed {
            head,
            model,
            stream,
        },
        bytes,
    ))
}

fn requested_max_output(head: &RequestHead, endpoint: Endpoint) -> Option<u64> {
    endpoint
        .max_output_field()
        .iter()
        .find_map(|field| head.field(field).and_then(Value::as_u64))
}

/// The paying account: the `x-tollgate-billing` header, else the key's own
/// setting. A team is paid for by its owner; only its members may bill it.
pub async fn resolve_billing(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
) -> Result<Billing, GatewayError> {
    let choice = match headers.get("x-tollgate-billing") {
        Some(value) => value.to_str().map_err(|_| {
            GatewayError::invalid(
                "x-tollgate-billing must be 'personal' or 'team:<id>'.",
                Some("x-tollgate-billing"),
            )
        })?,
        None => principal.billing.as_str(),
    };
    match choice.trim() {
        "personal" => Ok(Billing {
            account_id: principal.user_id.clone(),
            policy: None,
        }),
        other => match other.strip_prefix("team:") {
            Some(team_id) if !team_id.is_empty() => {
                match policy::member_policy(state, team_id, &principal.user_id).await? {
                    Some(policy) => Ok(Billing {
                        account_id: policy.owner_id.clone(),
                        policy: Some(policy),
                    }),
                    None => Err(GatewayError::NotATeamMember(team_id.to_string())),
                }
            }
            _ => Err(GatewayError::invalid(
                "x-tollgate-billing must be 'personal' or 'team:<id>'.",
                Some("x-tollgate-billing"),
            )),
        },
    }
}

/// Holds `amount` on the account (and the member's monthly spend, for team
/// billing) in one atomic step, seeding a missing counter from the store.
/// Returns the member's spend with this hold.
#[allow(clippy::too_many_arguments)]
async fn hold_money(
    state: &AppState,
    account: &str,
    amount: Money,
    spend: Option<(&MemberPolicy, SpendHold<'_>)>,
    user_id: &str,
    period: &Period,
    output_bound: u64,
    model: &str,
) -> Result<(Option<Money>, Stamps), GatewayError> {
    for _ in 0..3 {
        let reserve = state
            .counters
            .reserve(account, amount, spend.map(|(_, hold)| hold))
            .await
            .map_err(counters_away)?;
        match reserve {
            Reserve::Held { spend, stamps, .. } => return Ok((spend, stamps)),
            Reserve::Insufficient { available } => {
                return Err(GatewayError::InsufficientBalance(format!(
                    "The paying account's balance (${available}) cannot cover this request's reserved cost \
                     (${amount}: the prompt plus up to {output_bound} output tokens of {model}). \
                     Add credits, or lower max_tokens."
                )));
            }
            Reserve::LimitReached { spent, limit } => {
                let team = spend.map_or("", |(policy, _)| policy.team_name.as_str());
                if let Some((policy, _)) = spend {
                    record_limit_event(
                        state,
                        policy,
                        user_id,
                        period,
                        "hard_refused",
                        limit,
                        spent,
                    );
                }
                return Err(GatewayError::MonthlyLimitExceeded(format!(
                    "Monthly limit reached for this member of team '{team}': limit ${limit}, \
                     spent ${spent} this month, and this request reserves up to ${amount}. \
                     The limit resets at {}.",
                    crate::app::rfc3339(period.end_ms)
                )));
            }
            Reserve::MissingBalance => {
                let owned = account.to_string();
                seed_once(
                    state,
                    format!("balance:{account}"),
                    |store, counters| async move {
                        accounts::seed_balance(&store, &counters, &owned).await
                    },
                )
                .await?;
            }
            Reserve::MissingSpend => {
                let Some((policy, hold)) = spend else {
                    return Err(GatewayError::internal(
                        "spend counter missing without a team",
                    ));
                };
                let (team_id, user, period) =
                    (policy.team_id.clone(), user_id.to_string(), period.clone());
                let key = hold.key.to_string();
                seed_once(
                    state,
                    format!("spend:{key}"),
                    |store, counters| async move {
                        accounts::seed_spend(&store, &counters, &team_id, &user, &period, &key)
                            .await
                    },
                )
                .await?;
            }
        }
    }
    Err(GatewayError::internal("counters could not be seeded"))
}

/// Runs a future inline; if it is dropped before the end (the client went
/// away), the rest of it moves onto a tracked task and still runs to the end.
struct RunToEnd<T: Send + 'static> {
    future: Option<std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>>,
    tasks: tokio_util::task::TaskTracker,
}

impl<T: Send + 'static> RunToEnd<T> {
    fn new(
        tasks: &tokio_util::task::TaskTracker,
        future: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Self {
        RunToEnd {
            future: Some(Box::pin(future)),
            tasks: tasks.clone(),
        }
    }
}

impl<T: Send + 'static> std::future::Future for RunToEnd<T> {
    type Output = T;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        let Some(future) = self.future.as_mut() else {
            // Polled again after its end: nothing more will come.
            return std::task::Poll::Pending;
        };
        let polled = future.as_mut().poll(cx);
        if polled.is_ready() {
            self.future = None;
        }
        polled
    }
}

impl<T: Send + 'static> Drop for RunToEnd<T> {
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        // Outside a runtime (it is shutting down) nothing can run it on.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.tasks.track_future(async move {
                future.await;
            }));
        }
    }
}

/// Seeds a missing counter once, however many requests found it missing.
async fn seed_once<F, Fut>(state: &AppState, name: String, seed: F) -> Result<(), GatewayError>
where
    F: FnOnce(crate::store::Store, Arc<crate::counters::Counters>) -> Fut,
    Fut: std::future::Future<Output = Result<(), accounts::AccountsError>> + Send + 'static,
{
    let (store, counters) = (state.store.clone(), state.counters.clone());
    let seeding = seed(store, counters);
    state
        .counter_seeds
        .run(name, move || seeding)
        .await
        .map_err(|error| GatewayError::from(&*error))
}

/// The counters (Redis) do not answer: money cannot be checked, so the
/// request is refused (fail closed).
fn counters_away(error: crate::counters::CounterError) -> GatewayError {
    tracing::warn!(%error, "Counters unreachable; refusing.");
    GatewayError::Unavailable(
        "The gateway cannot reach its counters to check the balance; the request was not forwarded. Retry shortly."
            .into(),
    )
}

/// A soft limit passed by this request: the warning text, and a limit
/// event recorded once per member per month.
fn soft_limit_warning(
    state: &AppState,
    policy: Option<&MemberPolicy>,
    spend: Option<Money>,
    user_id: &str,
    period: &Period,
) -> Option<String> {
    let policy = policy?;
    let limit = policy.limit?;
    let spend = spend?;
    if policy.enforcement != Enforcement::Soft || spend <= limit {
        return None;
    }
    record_limit_event(
        state,
        policy,
        user_id,
        period,
        "soft_exceeded",
        limit,
        spend,
    );
    Some(format!(
        "Monthly limit of ${limit} in team '{}' exceeded: ${spend} spent or reserved this month (soft limit; resets {}).",
        policy.team_name,
        crate::app::rfc3339(period.end_ms)
    ))
}

fn record_limit_event(
    state: &AppState,
    policy: &MemberPolicy,
    user_id: &str,
    period: &Period,
    kind: &'static str,
    limit: Money,
    spend: Money,
) {
    let store = state.store.clone();
    let event = LimitEvent {
        team_id: policy.team_id.clone(),
        user_id: user_id.to_string(),
        period: period.key.clone(),
        kind,
        limit,
        spend,
        at: state.clock.now_ms(),
    };
    state.tasks.spawn(async move {
        if let Err(error) = store.record_limit_event(&event).await {
            tracing::warn!(%error, "Limit event not recorded.");
        }
    });
}

fn record_refusal(state: &AppState, mut row: UsageRow, error: &GatewayError, started: Instant) {
    row.status = "refused".into();
    row.error_code = Some(error.code().to_string());
    row.http_status = i64::from(error.status().as_u16());
    row.usage_source = "none".into();
    row.latency_ms = started.elapsed().as_millis() as i64;
    row.finished_at = state.clock.now_ms();
    state.metrics.answered(&row.model, error.status().as_u16());
    state.ledger.record(row);
}

/// Phase 6 onward: send upstream and hand the answer to the meter.
#[allow(clippy::too_many_arguments)]
async fn forward(
    state: &Arc<AppState>,
    pending: Pending,
    parsed: Parsed,
    model: &ModelConfig,
    kind: ProviderKind,
    client_headers: &HeaderMap,
    endpoint: Endpoint,
    client_body: Bytes,
) -> Result<Response<Body>, GatewayError> {
    let provider = state.config.provider_of(model);
    // The body is copied into a JSON tree only when it must change (or for
    // the built-in mock, which reads it).
    let needs_rewrite = model.upstream_model != model.name
        || (parsed.stream
            && endpoint.takes_stream_options()
            && provider.inject_stream_usage
            && !parsed.head.asked_for_usage());
    let mut json = if needs_rewrite || kind == ProviderKind::Mock {
        Some(serde_json::from_slice::<Value>(&client_body).map_err(GatewayError::internal)?)
    } else {
        None
    };
    let (changed, strip_usage) = match json.as_mut() {
        Some(json) => providers::rewrite_body(
            json,
            endpoint,
            provider,
            &model.upstream_model,
            &model.name,
            parsed.stream,
        ),
        None => (false, false),
    };
    let request_id = pending.request_id().to_string();
    state.metrics.gateway_overhead.observe(pending.elapsed());

    if kind == ProviderKind::Mock {
        let request = json.unwrap_or_default();
        let answer = mock::respond(endpoint, &request, &model.upstream_model, parsed.stream);
        let mut response = Response::new(Body::empty());
        set_common_headers(response.headers_mut(), &request_id, answer.content_type);
        if parsed.stream {
            let source = Source::Mock(VecDeque::from(answer.chunks));
            *response.body_mut() = Body::Metered(Box::new(MeteredBody::new(
                source,
                endpoint.protocol(),
                strip_usage,
                pending,
                idle_timeout(state),
            )));
        } else {
            let body: Bytes = answer.chunks.concat().into();
            finish_json(pending, endpoint, &body, 200);
            *response.body_mut() = Body::full(body);
        }
        return Ok(response);
    }

    let upstream_body = match (&json, changed) {
        (Some(json), true) => {
            Bytes::from(serde_json::to_vec(json).map_err(GatewayError::internal)?)
        }
        _ => client_body,
    };
    let upstream_request =
        providers::upstream_request(provider, endpoint, upstream_body, client_headers)
            .map_err(GatewayError::internal)?;

    if !parsed.stream {
        // A non-streamed call runs to the end even if the client leaves: the
        // upstream bills it in full, so Tollgate does too. It runs inline (no
        // task, no thread hop) and moves onto a tracked task only if the
        // client goes away first.
        let task_state = state.clone();
        let call = RunToEnd::new(&state.tasks, async move {
            let response = match call_upstream(&task_state, upstream_request).await {
                Ok(response) => response,
                Err(error) => return Err(unreachable_upstream(pending, error)),
            };
            let (parts, body) = response.into_parts();
            let body = complete_json(&task_state, pending, endpoint, body, parts.status).await?;
            Ok((parts, body))
        });
        let (parts, body) = call.await?;
        let mut response = Response::new(Body::full(body));
        *response.status_mut() = parts.status;
        copy_upstream_headers(&parts.headers, response.headers_mut());
        set_request_id(response.headers_mut(), &request_id);
        return Ok(response);
    }

    let upstream = match call_upstream(state, upstream_request).await {
        Ok(upstream) => upstream,
        Err(error) => return Err(unreachable_upstream(pending, error)),
    };
    let (parts, body) = upstream.into_parts();
    let mut response = Response::new(Body::empty());
    *response.status_mut() = parts.status;
    copy_upstream_headers(&parts.headers, response.headers_mut());
    set_request_id(response.headers_mut(), &request_id);
    let is_sse = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !parts.status.is_success() || !is_sse {
        // An error status (or a JSON answer to a stream request): pass it
        // through; it costs nothing unless it carries usage.
        let body = complete_json(state, pending, endpoint, body, parts.status).await?;
        *response.body_mut() = Body::full(body);
        return Ok(response);
    }
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    *response.body_mut() = Body::Metered(Box::new(MeteredBody::new(
        Source::Upstream(body),
        endpoint.protocol(),
        strip_usage,
        pending,
        idle_timeout(state),
    )));
    Ok(response)
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
    body: Incoming,
    status: StatusCode,
) -> Result<Bytes, GatewayError> {
    match read_upstream_body(state, body).await {
        Ok(body) => {
            finish_json(pending, endpoint, &body, status.as_u16());
            Ok(body)
        }
        Err(error) => {
            pending.finish(Outcome::nothing(
                Status::Failed,
                502,
                Some("upstream_disconnected"),
            ));
            Err(error)
        }
    }
}

fn idle_timeout(state: &AppState) -> Duration {
    Duration::from_millis(state.config.upstream.idle_timeout_ms)
}

async fn call_upstream(
    state: &AppState,
    request: Request<http_body_util::Full<Bytes>>,
) -> Result<Response<Incoming>, GatewayError> {
    let timeout = Duration::from_millis(state.config.upstream.response_timeout_ms);
    let sent = Instant::now();
    let answer = tokio::time::timeout(timeout, state.client.request(request)).await;
    state.metrics.upstream_latency.observe(sent.elapsed());
    match answer {
        Err(_) => Err(GatewayError::UpstreamTimeout),
        Ok(Err(error)) => {
            let mut detail = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                detail.push_str(": ");
                detail.push_str(&cause.to_string());
                source = cause.source();
            }
            tracing::warn!(error = %detail, "Upstream request failed.");
            if detail.contains("timed out") {
                Err(GatewayError::UpstreamTimeout)
            } else {
                Err(GatewayError::UpstreamUnreachable(if error.is_connect() {
                    "connection failed".into()
                } else {
                    "the connection broke".into()
                }))
            }
        }
        Ok(Ok(response)) => Ok(response),
    }
}

async fn read_upstream_body(state: &AppState, body: Incoming) -> Result<Bytes, GatewayError> {
    let idle = Duration::from_millis(state.config.upstream.idle_timeout_ms);
    match tokio::time::timeout(idle, Limited::new(body, MAX_UPSTREAM_BODY).collect()).await {
        Err(_) => Err(GatewayError::UpstreamTimeout),
        Ok(Err(_)) => Err(GatewayError::UpstreamUnreachable(
            "the response broke off".into(),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
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

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Upstream headers the client may see: hop-by-hop headers and provider
/// account identifiers stay behind.
fn copy_upstream_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let lower = name.as_str();
        if HOP_BY_HOP.contains(&lower)
            || lower == "openai-organization"
            || lower == "openai-project"
            || lower == "set-cookie"
        {
            continue;
        }
        if lower == "x-request-id" || lower == "request-id" {
            to.insert("x-upstream-request-id", value.clone());
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

fn set_request_id(headers: &mut HeaderMap, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
}

fn set_common_headers(headers: &mut HeaderMap, request_id: &str, content_type: &'static str) {
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    if content_type == "text/event-stream" {
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
    }
    set_request_id(headers, request_id);
}

/// `GET /v1/models`: the models this key may use.
pub async fn list_models(state: &AppState, request: &Request<Incoming>) -> Response<Body> {
    let request_id = keys::new_request_id();
    let principal = match auth::credential(request.headers()) {
        Some(token) => auth::authenticate_key(state, token).await,
        None => Err(GatewayError::InvalidApiKey),
    };
    let principal = match principal {
        Ok(principal) => principal,
        Err(error) => return error.into_response(ErrorShape::OpenAi, &request_id),
    };
    let billing = match resolve_billing(state, &principal, request.headers()).await {
        Ok(billing) => billing,
        Err(error) => return error.into_response(ErrorShape::OpenAi, &request_id),
    };
    let restricted: &[String] = billing
        .policy
        .as_ref()
        .map_or(&[], |p| p.restricted_models.as_slice());
    let data: Vec<Value> = state
        .config
        .models
        .iter()
        .filter(|model| policy::model_allowed(restricted, &model.name))
        .map(|model| {
            serde_json::json!({
                "id": model.name,
                "object": "model",
                "created": 0,
                "owned_by": state.config.providers[model.provider].name,
            })
        })
        .collect();
    let body = serde_json::json!({"object": "list", "data": data});
    let mut response = Response::new(Body::full(body.to_string()));
    set_common_headers(response.headers_mut(), &request_id, "application/json");
    *response.status_mut() = StatusCode::OK;
    response
}
