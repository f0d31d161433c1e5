//! The hold: an upper bound of what a request can cost, from its shape
//! alone. Pure; no I/O.
//!
//! - **Input**: one token per byte of the body (no tokenizer makes more
//!   tokens than bytes), capped at the model's context window when it is
//!   known; when the request names input the gateway cannot see (an id, a
//!   URL, a stored conversation or prompt, a server-side tool), the context
//!   window itself, and a model without one cannot serve such a request.
//! - **Output**: the largest positive of `max_tokens`,
//!   `max_completion_tokens`, `max_output_tokens` (upstreams differ on
//!   which one they obey), else the model's output limit; times the largest
//!   of `n` and `best_of`.
//! - **Rates**: input at the model's highest input-side rate, output at its
//!   highest output rate, over every tier and threshold it prices
//!   ([`ModelPrice::bound`]).
//! - **Tool fees**: a request offering a server-side tool holds
//!   `max_tool_calls` (else [`SERVER_TOOL_CALLS`]) calls at the model's
//!   highest tool fee.

mod scan;

pub use self::scan::{scan, Count, Scalar, ScanError, Shape, StreamOptions};

use crate::money::Money;
use crate::pricing::ModelPrice;

/// No count above this is believed (a real request is far below it); keeps
/// the arithmetic of absurd requests finite. The hold it gives is still
/// refused by any real balance.
const TOKEN_CAP: u64 = 1_000_000_000_000;

/// Server-tool calls held for a request that offers a server-side tool and
/// sets no `max_tool_calls`.
pub const SERVER_TOOL_CALLS: u64 = 20;

/// A model's limits, resolved by the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelLimits {
    /// Most input tokens the model accepts; `None`: unknown.
    pub context_window: Option<u64>,
    /// Most output tokens one choice can have when the request sets none.
    pub max_output_tokens: u64,
}

/// The bound of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub input_tokens: u64,
    /// Output tokens of all choices together.
    pub output_tokens: u64,
    /// Choices generated (`n`, `best_of`).
    pub choices: u64,
    /// The output bound came from the request's own max-tokens field.
    pub output_from_request: bool,
    /// The request names input the gateway cannot see.
    pub hidden_input: bool,
    /// Server-tool calls held (each at the model's highest tool fee).
    pub tool_calls: u64,
    /// The money held: the bound priced at the model's highest rates.
    pub amount: Money,
}

/// Why a request cannot be bounded (400 `unmeterable_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmeterable {
    pub param: &'static str,
    pub message: String,
}

/// Bounds a request. `body_len`: bytes of the client's body;
/// `generates_output`: false for embeddings.
pub fn bound(
    shape: &Shape,
    body_len: usize,
    generates_output: bool,
    limits: &ModelLimits,
    price: &ModelPrice,
) -> Result<Bound, Unmeterable> {
    for (param, count) in [
        ("max_tool_calls", shape.max_tool_calls),
        ("max_tokens", shape.max_tokens),
        ("max_completion_tokens", shape.max_completion_tokens),
        ("max_output_tokens", shape.max_output_tokens),
        ("n", shape.n),
        ("best_of", shape.best_of),
    ] {
        if count == Count::Unreadable {
            return Err(Unmeterable {
                param,
                message: format!(
                    "'{param}' must be a number: the gateway bounds the request's cost by it."
                ),
            });
        }
    }
    let visible = (body_len as u64).min(TOKEN_CAP);
    let input_tokens = match (shape.hidden_input, limits.context_window) {
        (Some(_), Some(window)) => window,
        (Some(param), None) => {
            return Err(Unmeterable {
                param,
                message: format!(
                    "'{param}' names input the gateway cannot see, and this model has no \
                     context_window configured to bound it; send the content inline instead."
                ),
            })
        }
        (None, Some(window)) => visible.min(window),
        (None, None) => visible,
    };
    let requested = [
        shape.max_tokens,
        shape.max_completion_tokens,
        shape.max_output_tokens,
    ]
    .into_iter()
    .filter_map(Count::positive)
    .max();
    let choices = [shape.n, shape.best_of]
        .into_iter()
        .filter_map(Count::positive)
        .max()
        .unwrap_or(1)
        .min(TOKEN_CAP);
    let (per_choice, output_from_request) = match requested {
        Some(requested) => (requested.min(TOKEN_CAP), true),
        None => (limits.max_output_tokens, false),
    };
    let output_tokens = if generates_output {
        per_choice.saturating_mul(choices).min(TOKEN_CAP)
    } else {
        0
    };
    let tool_calls = if shape.server_tool {
        shape
            .max_tool_calls
            .positive()
            .unwrap_or(SERVER_TOOL_CALLS)
            .min(TOKEN_CAP)
    } else {
        0
    };
    Ok(Bound {
        input_tokens,
        output_tokens,
        choices,
        output_from_request,
        hidden_input: shape.hidden_input.is_some(),
        tool_calls,
        amount: price.bound(input_tokens, output_tokens, tool_calls),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::Usage;
    use crate::money::PricePerMtok;
    use crate::pricing::{LongContext, Rates};

    fn price() -> ModelPrice {
        let mut price = ModelPrice::simple(Rates {
            cached_input: Some(PricePerMtok::parse("0.3").unwrap()),
            cache_write: Some(PricePerMtok::parse("3.75").unwrap()),
            audio_output: Some(PricePerMtok::parse("40").unwrap()),
            ..Rates::new(
                PricePerMtok::parse("3").unwrap(),
                PricePerMtok::parse("15").unwrap(),
            )
        });
        price.long_context = Some(LongContext {
            above_input_tokens: 100_000,
            rates: Rates::new(
                PricePerMtok::parse("6").unwrap(),
                PricePerMtok::parse("22.5").unwrap(),
            ),
        });
        price.tool_fees.web_search = Money::parse_usd("0.01").unwrap();
        price
    }

    const LIMITS: ModelLimits = ModelLimits {
        context_window: Some(200_000),
        max_output_tokens: 64_000,
    };

    fn bound_of(body: &str) -> Result<Bound, Unmeterable> {
        let shape = scan(body.as_bytes()).unwrap();
        bound(&shape, body.len(), true, &LIMITS, &price())
    }

    #[test]
    fn output_is_the_largest_field_times_the_choices() {
        let b = bound_of(r#"{"n":128,"max_completion_tokens":4096}"#).unwrap();
        assert_eq!((b.output_tokens, b.choices), (128 * 4096, 128));
        let b = bound_of(r#"{"max_completion_tokens":0,"max_tokens":100000}"#).unwrap();
        assert_eq!(b.output_tokens, 100_000);
        let b = bound_of(r#"{"best_of":5,"n":2,"max_tokens":10}"#).unwrap();
        assert_eq!(b.output_tokens, 50);
        let b = bound_of(r#"{"messages":[]}"#).unwrap();
        assert_eq!(b.output_tokens, 64_000);
        assert!(!b.output_from_request);
    }

    #[test]
    fn input_is_a_token_a_byte_or_the_window_when_hidden() {
        let body = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(bound_of(body).unwrap().input_tokens, body.len() as u64);
        let b = bound_of(r#"{"previous_response_id":"resp_1"}"#).unwrap();
        assert_eq!(b.input_tokens, 200_000);
        let shape = scan(br#"{"previous_response_id":"resp_1"}"#).unwrap();
        let unknown = ModelLimits {
            context_window: None,
            ..LIMITS
        };
        let refused = bound(&shape, 30, true, &unknown, &price()).unwrap_err();
        assert_eq!(refused.param, "previous_response_id");
    }

    #[test]
    fn unreadable_counts_are_refused() {
        assert_eq!(
            bound_of(r#"{"max_tokens":[1]}"#).unwrap_err().param,
            "max_tokens"
        );
    }

    #[test]
    fn absurd_counts_stay_finite() {
        let b = bound_of(r#"{"n":1e300,"max_tokens":18446744073709551615}"#).unwrap();
        assert_eq!(b.output_tokens, TOKEN_CAP);
        assert!(b.amount.nano() > 0);
    }

    proptest::proptest! {
        /// Whatever the request's shape, a usage the upstream could report
        /// for it costs no more than the hold.
        #[test]
        fn cost_never_exceeds_the_hold(
            text in "[a-zé日\\u{1F600}]{0,40}",
            n in proptest::option::of(0u64..200),
            best_of in proptest::option::of(0u64..10),
            max_tokens in proptest::option::of(prop_count()),
            max_completion in proptest::option::of(prop_count()),
            max_output in proptest::option::of(prop_count()),
            hidden in proptest::option::of(0usize..4),
            image in proptest::bool::ANY,
            cached_share in 0u64..=100, write_share in 0u64..=100,
            used_share in 0u64..=100, reasoning_share in 0u64..=100,
        ) {
            let mut body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": text}]});
            let object = body.as_object_mut().unwrap();
            if let Some(n) = n { object.insert("n".into(), n.into()); }
            if let Some(b) = best_of { object.insert("best_of".into(), b.into()); }
            for (field, value) in [("max_tokens", &max_tokens), ("max_completion_tokens", &max_completion), ("max_output_tokens", &max_output)] {
                if let Some(value) = value { object.insert(field.into(), value.clone()); }
            }
            match hidden {
                Some(0) => { object.insert("previous_response_id".into(), "resp_1".into()); }
                Some(1) => { object.insert("conversation".into(), "conv_1".into()); }
                Some(2) => { object.insert("tools".into(), serde_json::json!([{"type": "web_search"}])); }
                Some(_) => { object.insert("prompt".into(), serde_json::json!({"id": "pmpt_1"})); }
                None => {}
            }
            if image {
                object.insert("input".into(), serde_json::json!([{"type": "input_image", "image_url": "https://x/a.png"}]));
            }
            let bytes = serde_json::to_vec(&body).unwrap();
            let shape = scan(&bytes).unwrap();
            let b = bound(&shape, bytes.len(), true, &LIMITS, &price()).unwrap();
            // The largest usage the upstream may report for this shape: every
            // input token the model can see (the window when hidden, else a
            // token a byte), every output token the fields allow per choice.
            let input_max = if hidden.is_some() || image { LIMITS.context_window.unwrap() } else { (bytes.len() as u64).min(LIMITS.context_window.unwrap()) };
            let input = input_max * used_share / 100;
            let cached = input * cached_share / 100;
            let write = (input - cached) * write_share / 100;
            let per_choice = [max_tokens, max_completion, max_output].iter().flatten()
                .filter_map(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
                .filter(|v| *v > 0.0).map(|v| v.ceil() as u64).max()
                .unwrap_or(LIMITS.max_output_tokens);
            let choices = n.unwrap_or(1).max(best_of.unwrap_or(1)).max(1);
            // No upstream generates past the cap (10^12 tokens).
            let output = (per_choice * choices).min(TOKEN_CAP) * used_share / 100;
            let write_1h = (input - cached - write) * write_share / 100;
            let audio_out = output * reasoning_share / 200;
            let calls = if hidden == Some(2) { SERVER_TOOL_CALLS * used_share / 100 } else { 0 };
            let usage = Usage {
                input_tokens: input,
                cached_tokens: cached,
                cache_write_tokens: write,
                cache_write_1h_tokens: write_1h,
                output_tokens: output,
                reasoning_tokens: output * reasoning_share / 100,
                audio_output_tokens: audio_out,
                web_search_calls: calls,
                ..Usage::default()
            };
            proptest::prop_assert!(price().cost(&usage) <= b.amount, "{:?} > {:?}", usage, b);
        }
    }

    fn prop_count() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        prop_oneof![
            Just(serde_json::json!(0)),
            (1u64..200_000).prop_map(|v| serde_json::json!(v)),
            (1u64..200_000).prop_map(|v| serde_json::json!(v.to_string())),
            (1u64..2_000).prop_map(|v| serde_json::json!(v as f64 + 0.5)),
            (1u64..100).prop_map(|v| serde_json::json!(v * 10_000_000_000)),
            Just(serde_json::json!(-1)),
            Just(serde_json::Value::Null),
        ]
    }
}
