//! Header hygiene: which upstream headers a client may see, and the
//! gateway's own (`x-request-id`).

use http::{HeaderMap, HeaderValue};

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
/// account identifiers stay behind; the upstream's request id is renamed.
pub fn copy_upstream(from: &HeaderMap, to: &mut HeaderMap) {
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

pub fn set_request_id(headers: &mut HeaderMap, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
}
