//! Webhook delivery (contract §6). Events are stored with their deliveries
//! (`store/events.rs`); this worker, one per gateway process, claims due
//! deliveries under a lease (30 s: no other process sends them
//! meanwhile), POSTs each event as JSON signed with the webhook's secret
//! (`x-tollgate-signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`, signed afresh on every attempt), and records the
//! attempt. A 2xx within 5 s is delivered; anything else is tried again
//! with exponential backoff and jitter (1 s doubling to at most an hour)
//! until 24 h after the event, then marked failed. At least once: a process
//! that dies after sending and before recording leaves the lease to
//! expire, and another process sends the same event id again.
//!
//! The worker never runs on a request's path; a slow receiver holds only
//! its own delivery.

pub mod guard;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use self::guard::GuardedResolver;
use crate::store::events::{AttemptOutcome, DueDelivery};
use crate::store::Store;

/// How long one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long deliveries are retried after their event.
pub const RETRY_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// How long a claimed delivery is this process's alone.
const LEASE_MS: i64 = 30_000;
/// How often due deliveries are looked for.
const POLL: Duration = Duration::from_millis(250);
/// Deliveries sent at once by one process.
const BATCH: usize = 32;

type WebhookClient =
    Client<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// The signature header's value for `body` sent at `t` (Unix seconds).
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// When to try again after `attempts` failed attempts: 1 s doubling, at
/// most an hour, ±25% jitter.
pub fn backoff_ms(attempts: i64) -> i64 {
    let base = 1000_i64
        .saturating_mul(1_i64 << attempts.clamp(0, 12))
        .min(3_600_000);
    let jitter = (rand::random::<u16>() as i64 % 501) - 250; // per mille
    base + base * jitter / 1000
}

/// The body of an event as it is sent.
pub fn event_body(delivery: &DueDelivery) -> Vec<u8> {
    let data: serde_json::Value =
        serde_json::from_str(&delivery.data).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "id": delivery.event_id,
        "type": delivery.event_type,
        "created_at": crate::clock::rfc3339(delivery.event_at),
        "team_id": delivery.team_id,
        "data": data,
    })
    .to_string()
    .into_bytes()
}

/// Sends due webhook deliveries (one per process).
pub struct Deliverer {
    store: Store,
    client: WebhookClient,
    allow_private: bool,
}

impl Deliverer {
    pub fn new(store: Store, allow_private: bool) -> Result<Deliverer, rustls::Error> {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver { allow_private });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(ATTEMPT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(4)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Deliverer {
            store,
            client,
            allow_private,
        })
    }

    /// Claims and sends due deliveries until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        crate::tasks::claim_loop(
            stop,
            POLL,
            BATCH,
            "webhook deliveries",
            || {
                self.store
                    .claim_deliveries(crate::clock::now_ms(), LEASE_MS, BATCH as i64)
            },
            |delivery| self.deliver(delivery),
        )
        .await;
    }

    /// One attempt, recorded.
    async fn deliver(&self, delivery: DueDelivery) {
        let started = Instant::now();
        let (http_status, error) = self.attempt(&delivery).await;
        let now = crate::clock::now_ms();
        let delivered = http_status.is_some_and(|s| (200..300).contains(&s));
        let retry_at = (!delivered)
            .then(|| now + backoff_ms(delivery.attempts))
            .filter(|at| *at - delivery.created_at <= RETRY_WINDOW_MS);
        let outcome = AttemptOutcome {
            http_status,
            error,
            duration_ms: started.elapsed().as_millis() as i64,
            delivered,
            retry_at,
        };
        if let Err(error) = self.store.finish_attempt(&delivery, &outcome, now).await {
            // The lease runs out and the delivery is tried again.
            tracing::warn!(%error, delivery = %delivery.id, "Webhook attempt not recorded.");
        }
    }

    /// Sends once: the status, or why there is none.
    async fn attempt(&self, delivery: &DueDelivery) -> (Option<i64>, Option<String>) {
        let host = match guard::target(&delivery.url) {
            Ok((_, host, _)) => host,
            Err(refused) => return (None, Some(format!("the URL {}", refused.0))),
        };
        // A literal address never reaches the resolver: checked here.
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            if !self.allow_private && !guard::is_public(ip) {
                return (None, Some(format!("refused: {ip} is not a public address")));
            }
        }
        let body = event_body(delivery);
        let t = crate::clock::now_ms() / 1000;
        let request = http::Request::post(delivery.url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "Tollgate-Webhooks/1")
            .header("x-tollgate-event-id", delivery.event_id.as_str())
            .header(
                "x-tollgate-signature",
                signature(&delivery.secret, t, &body),
            )
            .body(Full::new(Bytes::from(body)));
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                return (
                    None,
                    Some(format!("the request could not be built: {error}")),
                )
            }
        };
        let sent = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            let response = self.client.request(request).await?;
            let status = i64::from(response.status().as_u16());
            // Read (and drop) what the receiver answers, so the connection
            // can be reused.
            let _ = response.into_body().collect().await;
            Ok::<i64, hyper_util::client::legacy::Error>(status)
        })
        .await;
        match sent {
            Ok(Ok(status)) => (Some(status), None),
            Ok(Err(error)) => (None, Some(crate::error::with_causes(&error))),
            Err(_) => (None, Some(format!("no answer within {ATTEMPT_TIMEOUT:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_time_and_body() {
        // Computed apart: Python's hmac.new(b"whsec_test",
        // b'1700000000.{"a":1}', hashlib.sha256).hexdigest().
        let got = signature("whsec_test", 1_700_000_000, b"{\"a\":1}");
        assert_eq!(
            got,
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert_ne!(got, signature("whsec_other", 1_700_000_000, b"{\"a\":1}"));
        assert_ne!(got, signature("whsec_test", 1_700_000_001, b"{\"a\":1}"));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_an_hour() {
        for attempts in 0..20 {
            let base = (1000_i64 << attempts.min(12)).min(3_600_000);
            let wait = backoff_ms(attempts);
            assert!(
                wait >= base * 3 / 4 && wait <= base * 5 / 4,
                "{attempts}: {wait}"
            );
        }
    }
}
