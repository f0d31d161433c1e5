//! `GET /v1/models`: the models this key may use (a team's restrictions
//! apply when the key, or `x-tollgate-billing`, bills a team).

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

use super::authorize;
use super::headers;
use crate::domain::RequestId;
use crate::error::{ErrorShape, GatewayError};
use crate::http_body::Body;
use crate::policy;
use crate::state::AppState;

pub async fn list(state: &AppState, request: &Request<Incoming>) -> Response<Body> {
    let request_id = RequestId::new();
    match models(state, request).await {
        Ok(body) => {
            let mut response = Response::new(Body::full(body.to_string()));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers::set_request_id(response.headers_mut(), &request_id);
            *response.status_mut() = StatusCode::OK;
            response
        }
        Err(error) => error.into_response(ErrorShape::OpenAi, &request_id),
    }
}

async fn models(state: &AppState, request: &Request<Incoming>) -> Result<Value, GatewayError> {
    let principal = authorize::authenticate(state, request.headers()).await?;
    let billing = authorize::resolve_billing(state, &principal, request.headers()).await?;
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
                "owned_by": state.config.provider_of(model).name,
            })
        })
        .collect();
    Ok(serde_json::json!({"object": "list", "data": data}))
}
