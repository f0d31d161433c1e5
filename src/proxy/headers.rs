//! Header hygiene: which upstream headers a client may see, and the
//! gateway's own (`x-request-id`).

use http::{HeaderMap, HeaderValue};

/// Upstream headers a client may see (contract §4): what the body needs
/// to be read (`content-encoding`: the client gets the bytes as sent) and
/// when to retry. Everything else stays behind — the provider account's
/// organization and project, its rate-limit headers, its timings, cookies.
const ALLOWED: [&str; 4] = [
    "content-type",
    "content-encoding",
    "cache-control",
    "retry-after",
];

/// Copies the allowed upstream headers; the upstream's request id is
/// renamed `x-upstream-request-id` (the gateway's own is `x-request-id`).
pub fn copy_upstream(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let lower = name.as_str();
        if lower == "x-request-id" || lower == "request-id" {
            to.insert("x-upstream-request-id", value.clone());
        } else if ALLOWED.contains(&lower) {
            to.append(name.clone(), value.clone());
        }
    }
}

pub fn set_request_id(headers: &mut HeaderMap, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
}
