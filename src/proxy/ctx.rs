//! [`RequestCtx`]: what one request has learnt so far. Each phase reads it
//! and extends it; the row draft (`entry`) becomes the ledger row.

use std::sync::Arc;
use std::time::Instant;

use crate::auth::Principal;
use crate::config::{Config, ModelConfig, ProviderConfig};
use crate::domain::RequestId;
use crate::ledger::Entry;
use crate::policy::MemberPolicy;
use crate::providers::Endpoint;

/// Who pays for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Billing {
    pub account_id: String,
    /// The member's policy when a team pays.
    pub policy: Option<Arc<MemberPolicy>>,
}

/// The model a request asked for, resolved once (an index into the
/// configured models; its provider follows from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route(usize);

impl Route {
    pub fn find(config: &Config, model: &str) -> Option<Route> {
        config
            .models
            .iter()
            .position(|m| m.name == model)
            .map(Route)
    }

    pub fn model(self, config: &Config) -> &ModelConfig {
        &config.models[self.0]
    }

    pub fn provider(self, config: &Config) -> &ProviderConfig {
        config.provider_of(self.model(config))
    }
}

pub struct RequestCtx {
    pub endpoint: Endpoint,
    /// When the request arrived (latency, overhead).
    pub started: Instant,
    pub principal: Arc<Principal>,
    /// Set by authorize.
    pub route: Option<Route>,
    /// Set by authorize.
    pub billing: Option<Billing>,
    /// A soft-limit warning for the response, set by admit.
    pub warning: Option<String>,
    /// The ledger row, filled in as the phases learn.
    pub entry: Entry,
}

impl RequestCtx {
    pub fn new(
        id: RequestId,
        endpoint: Endpoint,
        started: Instant,
        started_at: i64,
        principal: Arc<Principal>,
    ) -> RequestCtx {
        let entry = Entry::draft(
            id,
            &principal.user_id,
            &principal.key_id,
            endpoint.name(),
            started_at,
        );
        RequestCtx {
            endpoint,
            started,
            principal,
            route: None,
            billing: None,
            warning: None,
            entry,
        }
    }
}
