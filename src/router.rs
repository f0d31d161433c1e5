//! (method, path) → handler. Nothing else happens here.

use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::error::{ErrorShape, GatewayError};
use crate::http_body::Body;
use crate::providers::Endpoint;
use crate::state::AppState;
use crate::{admin, dashboard, openapi, ops, proxy};

pub async fn route(state: Arc<AppState>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    if let Some(endpoint) = Endpoint::from_path(path) {
        if request.method() != Method::POST {
            return refuse(
                GatewayError::MethodNotAllowed,
                endpoint == Endpoint::Messages,
            );
        }
        return proxy::handle(state, request, endpoint).await;
    }
    match (request.method(), path) {
        (&Method::GET, "/v1/models") => proxy::list_models(&state, &request).await,
        (&Method::GET, "/healthz") => ops::healthz(),
        (&Method::GET, "/readyz") => ops::readyz(&state).await,
        (&Method::GET, "/metrics") => ops::metrics(&state, request.headers()),
        (&Method::GET | &Method::HEAD, "/openapi.json") => openapi::serve(request.method()),
        (_, p) if p == "/api" || p.starts_with("/api/") => admin::handle(state, request).await,
        (&Method::GET, p) if p.starts_with("/invite/") || p.starts_with("/join/") => {
            dashboard::link_page(p)
        }
        (method, p) if dashboard::owns(method, p) => dashboard::serve(method, p, request.headers()),
        _ => refuse(
            GatewayError::NotFound(format!("No route for {} {}.", request.method(), path)),
            false,
        ),
    }
}

fn refuse(error: GatewayError, anthropic: bool) -> Response<Body> {
    let shape = if anthropic {
        ErrorShape::Anthropic
    } else {
        ErrorShape::OpenAi
    };
    error.into_response(shape, &crate::domain::RequestId::new())
}
