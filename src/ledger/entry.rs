//! [`Entry`]: one attribution row of the ledger, from the moment a request
//! is authenticated (a draft) to the moment it is stored.

use crate::counters::Stamps;
use crate::domain::{RequestId, ServiceTier, Source, Status};

/// One attribution row. The request path fills it in as it learns (payer,
/// model, usage, cost); the ledger writer stores it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub request_id: RequestId,
    pub user_id: String,
    pub key_id: String,
    /// The paying account (a user; the team owner for team billing).
    pub account_id: String,
    pub team_id: Option<String>,
    pub model: String,
    pub provider: String,
    pub endpoint: String,
    pub streamed: bool,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_nano: i64,
    pub usage_source: Source,
    pub status: Status,
    pub error_code: Option<String>,
    pub http_status: i64,
    pub latency_ms: i64,
    pub started_at: i64,
    pub finished_at: i64,
    // The parts of the cost beyond plain tokens (absent in spool records
    // written before they existed: zero).
    #[serde(default)]
    pub cache_write_1h_tokens: i64,
    #[serde(default)]
    pub audio_input_tokens: i64,
    #[serde(default)]
    pub audio_output_tokens: i64,
    #[serde(default)]
    pub web_search_calls: i64,
    #[serde(default)]
    pub web_fetch_calls: i64,
    #[serde(default)]
    pub code_execution_calls: i64,
    /// The service tier the upstream reported (none without usage).
    #[serde(default)]
    pub service_tier: Option<ServiceTier>,
    /// Long-context prices applied.
    #[serde(default)]
    pub long_context: bool,
    /// Cost allocation tags: a JSON object, keys sorted (`tags.rs`); none
    /// when the request and its key carry none.
    #[serde(default)]
    pub tags: Option<String>,
    /// Not stored: the counter stamps this row's cost is counted under, and
    /// the member's spend counter, for the writer's rebuild check.
    #[serde(default)]
    pub counted: Stamps,
    #[serde(default)]
    pub spend_key: Option<String>,
    /// Not stored: the settlement never reached the counters (Redis away
    /// past the retry window), so they still hold the hold; the writer
    /// records a correction with the row (`corrections.rs`).
    #[serde(default)]
    pub settle_failed: bool,
}

impl Entry {
    /// The row of a request just authenticated: paid by the caller until
    /// billing says otherwise, nothing used yet.
    pub fn draft(
        request_id: RequestId,
        user_id: &str,
        key_id: &str,
        endpoint: &str,
        started_at: i64,
    ) -> Entry {
        Entry {
            request_id,
            user_id: user_id.to_string(),
            key_id: key_id.to_string(),
            account_id: user_id.to_string(),
            team_id: None,
            model: String::new(),
            provider: String::new(),
            endpoint: endpoint.to_string(),
            streamed: false,
            input_tokens: 0,
            cached_tokens: 0,
            cache_write_tokens: 0,
            output_tokens: 0,
            reasoning_tokens: 0,
            cost_nano: 0,
            usage_source: Source::None,
            status: Status::Refused,
            error_code: None,
            http_status: 0,
            latency_ms: 0,
            started_at,
            finished_at: started_at,
            cache_write_1h_tokens: 0,
            audio_input_tokens: 0,
            audio_output_tokens: 0,
            web_search_calls: 0,
            web_fetch_calls: 0,
            code_execution_calls: 0,
            service_tier: None,
            long_context: false,
            tags: None,
            counted: Stamps::default(),
            spend_key: None,
            settle_failed: false,
        }
    }
}
