//! Operations routes: `/healthz`, `/readyz`, `/metrics`.

use http::{HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use crate::http_body::Body;
use crate::state::AppState;

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    response
}

/// The process is up.
pub fn healthz() -> Response<Body> {
    respond(
        StatusCode::OK,
        "application/json",
        r#"{"status":"ok"}"#.into(),
    )
}

/// Whether the gateway can serve. A database that does not answer degrades
/// (known keys still work, rows spool); Redis that does not answer degrades
/// under the `local` policy and refuses under `refuse`; a ledger that cannot
/// record refuses.
pub async fn readyz(state: &AppState) -> Response<Body> {
    let timeout = std::time::Duration::from_secs(2);
    let database = matches!(
        tokio::time::timeout(timeout, state.store.ping()).await,
        Ok(Ok(()))
    );
    let counters = matches!(
        tokio::time::timeout(timeout, state.counters.ping()).await,
        Ok(Ok(()))
    );
    let spooling = state
        .ledger
        .stats
        .spooling
        .load(std::sync::atomic::Ordering::Relaxed);
    let local_fallback = state.counters.fallback().is_some();
    let status = if database && counters && !spooling {
        "ok"
    } else {
        "degraded"
    };
    // Without Redis the gateway still serves under the `local` policy;
    // under `refuse`, or with a ledger that cannot record, it refuses.
    let serving = (counters || local_fallback) && !state.ledger.is_saturated();
    let code = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": status,
        "database": if database { "ok" } else { "unreachable" },
        "counters": {
            "backend": state.counters.backend_name(),
            "status": if counters { "ok" } else { "unreachable" },
            // Redis's outage policy; in-process counters cannot be away.
            "when_unreachable": if state.counters.can_be_rebuilt() {
                json!(if local_fallback { "local" } else { "refuse" })
            } else {
                Value::Null
            },
        },
        "ledger": {
            "queue_depth": state.ledger.stats.depth(),
            "mode": if state.ledger.stats.spooling.load(std::sync::atomic::Ordering::Relaxed) { "spooling" } else { "direct" },
            "spool_rows": state.ledger.stats.spool_rows(),
            "set_aside_rows": state.ledger.stats.set_aside.load(std::sync::atomic::Ordering::Relaxed),
            "refusing": state.ledger.is_saturated(),
        },
    });
    respond(code, "application/json", body.to_string())
}

/// `GET /metrics`; with `server.metrics_token` set, only with it as a
/// Bearer token (401 otherwise).
pub fn metrics(state: &AppState, headers: &http::HeaderMap) -> Response<Body> {
    let wanted = &state.config.server.metrics_token;
    if !wanted.is_empty() {
        let given = crate::auth::credential(headers).unwrap_or("");
        if !crate::keys::constant_time_eq(given.as_bytes(), wanted.expose().as_bytes()) {
            return crate::error::GatewayError::Unauthorized(
                "/metrics needs the metrics token (server.metrics_token) as a Bearer token.".into(),
            )
            .into_response(
                crate::error::ErrorShape::OpenAi,
                &crate::domain::RequestId::new(),
            );
        }
    }
    let stats = &state.ledger.stats;
    let depth = stats.depth() as i64;
    let failed = stats
        .failed_batches
        .load(std::sync::atomic::Ordering::Relaxed) as i64;
    let spool_rows = stats.spool_rows() as i64;
    let fallback = state.counters.fallback();
    let redis_away =
        fallback.is_some_and(|f| f.degraded.load(std::sync::atomic::Ordering::Relaxed));
    let local_admissions = fallback.map_or(0, |f| {
        f.admissions.load(std::sync::atomic::Ordering::Relaxed) as i64
    });
    let degraded = i64::from(
        stats.spooling.load(std::sync::atomic::Ordering::Relaxed)
            || state.ledger.is_saturated()
            || redis_away,
    );
    let spooling = i64::from(stats.spooling.load(std::sync::atomic::Ordering::Relaxed));
    let spool_bytes = state.ledger.spool_bytes() as i64;
    let (leases, leased, lease_admissions) =
        state
            .counters
            .leases()
            .map_or((0, crate::money::Money::ZERO, 0), |l| {
                let (n, left) = l.outstanding();
                (n, left, l.admitted())
            });
    let body = state.metrics.render(&[
        (
            "tollgate_leases_outstanding",
            "Budget slices this process holds (storage.lease_usd).",
            leases as i64,
        ),
        (
            "tollgate_leased_nano_usd",
            "What this process's budget slices have left, in nano-dollars.",
            leased.nano(),
        ),
        (
            "tollgate_lease_admissions",
            "Admissions this process served from its budget slices, without asking Redis.",
            i64::try_from(lease_admissions).unwrap_or(i64::MAX),
        ),
        (
            "tollgate_degraded",
            "1 while a dependency is away (ledger spooling, or Redis away).",
            degraded,
        ),
        (
            "tollgate_degraded_admissions",
            "Admissions served from local counters while Redis was away.",
            local_admissions,
        ),
        (
            "tollgate_ledger_spool_rows",
            "Usage rows waiting in the spool for the database.",
            spool_rows,
        ),
        (
            "tollgate_ledger_spool_bytes",
            "Bytes of the spool on disk.",
            spool_bytes,
        ),
        (
            "tollgate_ledger_set_aside_rows",
            "Usage rows the database rejected, set aside as dead letters by this process (`tollgate dead-letters list`).",
            stats.set_aside.load(std::sync::atomic::Ordering::Relaxed) as i64,
        ),
        (
            "tollgate_ledger_spooling",
            "1 while ledger rows go to the spool (database away).",
            spooling,
        ),
        (
            "tollgate_ledger_queue_depth",
            "Usage rows waiting for the ledger writer.",
            depth,
        ),
        (
            "tollgate_ledger_failed_batches",
            "Ledger batches that failed and were retried.",
            failed,
        ),
    ]);
    respond(StatusCode::OK, "text/plain; version=0.0.4", body)
}
