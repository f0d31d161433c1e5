//! `GET /api/email/outbox?status=pending|sent|failed|capped&limit=N`
//! (operator): the mail the gateway wrote and how it went, newest first —
//! recipient, kind, state, tries, the last error; never a body or a link.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{respond, rfc3339, Caller};
use crate::error::GatewayError;
use crate::http_body::Body;
use crate::state::AppState;
use crate::store::outbox::MAIL_STATES;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

pub async fn outbox(
    state: &AppState,
    caller: &Caller,
    request: &Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    caller.require_operator()?;
    let params = super::usage::query_params(request.uri().query(), &["status", "limit"])?;
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let status = match param("status") {
        None => None,
        Some(s) if MAIL_STATES.contains(&s) => Some(s),
        Some(_) => {
            return Err(GatewayError::invalid(
                "'status' must be pending, sent, failed or capped.",
                Some("status"),
            ))
        }
    };
    let limit = match param("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(GatewayError::invalid(
                    format!("'limit' must be a whole number from 1 to {MAX_LIMIT}."),
                    Some("limit"),
                ))
            }
        },
    };
    let mails = state.store.outbox(status, limit).await?;
    let data: Vec<_> = mails
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "team_id": m.team_id,
                "kind": m.kind,
                "to": m.to,
                "status": m.state,
                "attempts": m.attempts,
                "last_error": m.last_error,
                "created_at": rfc3339(m.created_at),
                "next_attempt_at": (m.state == "pending").then(|| rfc3339(m.next_at)),
                "sent_at": m.sent_at.map(rfc3339),
            })
        })
        .collect();
    respond(
        StatusCode::OK,
        &json!({"email": state.store.mails(), "data": data}),
    )
}
