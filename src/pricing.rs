//! Pricing: usage × a model's prices → money. Pure; no I/O.
//!
//! One formula for every provider, on normalised [`Usage`]:
//! `uncached_input × input + cached × cached_input + cache_write ×
//! cache_write + output × output`, summed exactly in millionths of a
//! nano-dollar and rounded once (half up) to whole nano-dollars. Reasoning tokens are inside
//! output and billed at the output rate. A cache price that is not
//! configured falls back to the input price.

use crate::meter::Usage;
use crate::money::{Money, PricePerMtok};

/// A model's prices, parsed once at config load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelPrice {
    pub input: PricePerMtok,
    pub output: PricePerMtok,
    pub cached_input: Option<PricePerMtok>,
    pub cache_write: Option<PricePerMtok>,
}

impl ModelPrice {
    fn cached_rate(&self) -> PricePerMtok {
        self.cached_input.unwrap_or(self.input)
    }

    fn cache_write_rate(&self) -> PricePerMtok {
        self.cache_write.unwrap_or(self.input)
    }

    /// The highest price any input token can have: used to bound a
    /// reservation whose input mix is unknown.
    pub fn max_input_rate(&self) -> PricePerMtok {
        self.input
            .max(self.cached_rate())
            .max(self.cache_write_rate())
    }

    /// The exact cost of `usage`.
    pub fn cost(&self, usage: &Usage) -> Money {
        let micro = self.input.times(usage.uncached_input())
            + self.cached_rate().times(usage.cached_tokens)
            + self.cache_write_rate().times(usage.cache_write_tokens)
            + self.output.times(usage.output_tokens);
        Money::from_nano_micro(micro)
    }

    /// An upper bound on the cost of a request with at most these many input
    /// and output tokens.
    pub fn bound(&self, input_tokens: u64, output_tokens: u64) -> Money {
        let micro = self.max_input_rate().times(input_tokens) + self.output.times(output_tokens);
        // Round up so the bound is never below any exact cost it covers.
        Money::from_nano_micro(micro + 999_999)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: &str, output: &str, cached: Option<&str>, write: Option<&str>) -> ModelPrice {
        ModelPrice {
            input: PricePerMtok::parse(input).unwrap(),
            output: PricePerMtok::parse(output).unwrap(),
            cached_input: cached.map(|c| PricePerMtok::parse(c).unwrap()),
            cache_write: write.map(|w| PricePerMtok::parse(w).unwrap()),
        }
    }

    #[test]
    fn cached_tokens_are_a_subset_of_input() {
        let gpt51 = price("1.25", "10.00", Some("0.125"), None);
        let usage = Usage {
            input_tokens: 2006,
            cached_tokens: 1920,
            output_tokens: 300,
            reasoning_tokens: 192,
            ..Usage::default()
        };
        assert_eq!(gpt51.cost(&usage), Money::parse_usd("0.0033475").unwrap());
    }

    #[test]
    fn bound_covers_cost() {
        let sonnet = price("3", "15", Some("0.3"), Some("3.75"));
        let usage = Usage {
            input_tokens: 100,
            cache_write_tokens: 100,
            output_tokens: 7,
            ..Usage::default()
        };
        assert!(sonnet.bound(100, 7) >= sonnet.cost(&usage));
    }

    proptest::proptest! {
        #[test]
        fn cost_is_additive_within_rounding(
            a in 0u64..1_000_000, b in 0u64..1_000_000, out in 0u64..100_000,
            input_nano in 0i64..100_000_000_000, output_nano in 0i64..100_000_000_000,
        ) {
            let p = ModelPrice {
                input: PricePerMtok::from_nano_per_mtok(input_nano),
                output: PricePerMtok::from_nano_per_mtok(output_nano),
                cached_input: None,
                cache_write: None,
            };
            let whole = p.cost(&Usage { input_tokens: a + b, output_tokens: out, ..Usage::default() });
            let left = p.cost(&Usage { input_tokens: a, ..Usage::default() });
            let right = p.cost(&Usage { input_tokens: b, output_tokens: out, ..Usage::default() });
            let diff = (whole.nano() - left.nano() - right.nano()).abs();
            proptest::prop_assert!(diff <= 1);
            proptest::prop_assert!(p.bound(a + b, out) >= whole);
        }
    }
}
