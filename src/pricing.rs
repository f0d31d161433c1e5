//! Pricing: usage × a model's prices → money. Pure; no I/O.
//!
//! One formula for every provider, on normalised [`Usage`]: each part
//! times its price, summed exactly in millionths of a nano-dollar and
//! rounded once (half up) to whole nano-dollars:
//!
//! ```text
//! text_input × input     + cached × cached_input
//! cache_write × write_5m + cache_write_1h × write_1h
//! audio_input × audio_in + text_output × output
//! audio_output × audio_out + Σ tool calls × tool fee
//! ```
//!
//! Reasoning tokens are inside output and billed at the output rate.
//!
//! Which rates: the reported service tier's, when the model prices that
//! tier; else the long-context rates when the request's whole input
//! (cached and cache writes included) is above their threshold; else the
//! model's own. Unset prices fall back: cache reads and five-minute writes
//! to the input price, one-hour writes to twice the input price, audio to
//! the text prices.

use crate::meter::Usage;
use crate::money::{Money, PricePerMtok};

/// One set of per-token prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    pub input: PricePerMtok,
    pub output: PricePerMtok,
    pub cached_input: Option<PricePerMtok>,
    pub cache_write: Option<PricePerMtok>,
    pub cache_write_1h: Option<PricePerMtok>,
    pub audio_input: Option<PricePerMtok>,
    pub audio_output: Option<PricePerMtok>,
}

impl Rates {
    /// Input and output prices; every other price falls back.
    pub fn new(input: PricePerMtok, output: PricePerMtok) -> Rates {
        Rates {
            input,
            output,
            ..Rates::default()
        }
    }

    fn cached(&self) -> PricePerMtok {
        self.cached_input.unwrap_or(self.input)
    }

    fn write_5m(&self) -> PricePerMtok {
        self.cache_write.unwrap_or(self.input)
    }

    fn write_1h(&self) -> PricePerMtok {
        self.cache_write_1h.unwrap_or_else(|| {
            PricePerMtok::from_nano_per_mtok(self.input.nano_per_mtok().saturating_mul(2))
        })
    }

    fn audio_in(&self) -> PricePerMtok {
        self.audio_input.unwrap_or(self.input)
    }

    fn audio_out(&self) -> PricePerMtok {
        self.audio_output.unwrap_or(self.output)
    }

    /// The highest price any input token can have at these rates.
    fn max_input(&self) -> PricePerMtok {
        self.input
            .max(self.cached())
            .max(self.write_5m())
            .max(self.write_1h())
            .max(self.audio_in())
    }

    /// The highest price any output token can have at these rates.
    fn max_output(&self) -> PricePerMtok {
        self.output.max(self.audio_out())
    }

    /// The tokens of `usage` at these rates, in millionths of a nano-dollar.
    fn tokens(&self, usage: &Usage) -> i128 {
        self.input.times(usage.uncached_input())
            + self.cached().times(usage.cached_tokens)
            + self.write_5m().times(usage.cache_write_tokens)
            + self.write_1h().times(usage.cache_write_1h_tokens)
            + self.audio_in().times(usage.audio_input_tokens)
            + self.output.times(usage.text_output())
            + self.audio_out().times(usage.audio_output_tokens)
    }
}

/// Long-context prices: for a request whose whole input is above
/// `above_input_tokens`, every token is priced at `rates`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongContext {
    pub above_input_tokens: u64,
    pub rates: Rates,
}

/// Fees per server-side tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ToolFees {
    pub web_search: Money,
    pub web_fetch: Money,
    pub code_execution: Money,
}

impl ToolFees {
    fn max(&self) -> Money {
        self.web_search.max(self.web_fetch).max(self.code_execution)
    }

    /// The fees of `usage`'s tool calls, in millionths of a nano-dollar.
    fn of(&self, usage: &Usage) -> i128 {
        let fee = |fee: Money, calls: u64| i128::from(fee.nano()) * i128::from(calls) * 1_000_000;
        fee(self.web_search, usage.web_search_calls)
            + fee(self.web_fetch, usage.web_fetch_calls)
            + fee(self.code_execution, usage.code_execution_calls)
    }
}

/// A model's prices, parsed once at config load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelPrice {
    pub base: Rates,
    pub long_context: Option<LongContext>,
    /// Prices by service tier (`ServiceTier::index`); `None`: base rates.
    pub tiers: [Option<Rates>; 5],
    pub tool_fees: ToolFees,
}

/// A priced usage: the cost and which rates made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priced {
    pub cost: Money,
    /// The long-context rates applied.
    pub long_context: bool,
}

impl ModelPrice {
    /// Prices with only the base rates (no tiers, no long context, no fees).
    pub fn simple(rates: Rates) -> ModelPrice {
        ModelPrice {
            base: rates,
            ..ModelPrice::default()
        }
    }

    /// Every rate set this model may apply.
    fn all_rates(&self) -> impl Iterator<Item = &Rates> {
        std::iter::once(&self.base)
            .chain(self.long_context.as_ref().map(|l| &l.rates))
            .chain(self.tiers.iter().flatten())
    }

    /// The highest price any input token of this model can have.
    pub fn max_input_rate(&self) -> PricePerMtok {
        self.all_rates()
            .map(Rates::max_input)
            .max()
            .unwrap_or_default()
    }

    /// The highest price any output token of this model can have.
    pub fn max_output_rate(&self) -> PricePerMtok {
        self.all_rates()
            .map(Rates::max_output)
            .max()
            .unwrap_or_default()
    }

    /// The exact cost of `usage`, and which rates applied.
    pub fn price(&self, usage: &Usage) -> Priced {
        let tier = self.tiers[usage.service_tier.index()];
        let long = self
            .long_context
            .filter(|l| tier.is_none() && usage.input_tokens > l.above_input_tokens);
        let rates = tier.or(long.map(|l| l.rates)).unwrap_or(self.base);
        let micro = rates.tokens(usage) + self.tool_fees.of(usage);
        Priced {
            cost: Money::from_nano_micro(micro),
            long_context: long.is_some(),
        }
    }

    /// The exact cost of `usage`.
    pub fn cost(&self, usage: &Usage) -> Money {
        self.price(usage).cost
    }

    /// An upper bound on the cost of a request with at most these many input
    /// and output tokens and server-tool calls: every token at the highest
    /// rate any tier or threshold could apply, every call at the highest fee.
    pub fn bound(&self, input_tokens: u64, output_tokens: u64, tool_calls: u64) -> Money {
        let micro = self.max_input_rate().times(input_tokens)
            + self.max_output_rate().times(output_tokens)
            + i128::from(self.tool_fees.max().nano()) * i128::from(tool_calls) * 1_000_000;
        // Round up so the bound is never below any exact cost it covers.
        Money::from_nano_micro(micro + 999_999)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ServiceTier;

    fn p(text: &str) -> PricePerMtok {
        PricePerMtok::parse(text).unwrap()
    }

    fn rates(input: &str, output: &str, cached: Option<&str>, write: Option<&str>) -> Rates {
        Rates {
            cached_input: cached.map(p),
            cache_write: write.map(p),
            ..Rates::new(p(input), p(output))
        }
    }

    #[test]
    fn cached_tokens_are_a_subset_of_input() {
        let gpt51 = ModelPrice::simple(rates("1.25", "10.00", Some("0.125"), None));
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
    fn one_hour_writes_default_to_twice_the_input_price() {
        let sonnet = ModelPrice::simple(rates("3", "15", Some("0.3"), Some("3.75")));
        let usage = Usage {
            input_tokens: 100_006,
            cache_write_1h_tokens: 100_000,
            output_tokens: 10,
            ..Usage::default()
        };
        // 6 × $3 + 100,000 × $6 + 10 × $15, per million.
        assert_eq!(sonnet.cost(&usage), Money::parse_usd("0.600168").unwrap());
    }

    #[test]
    fn tiers_and_long_context_pick_the_rates() {
        let mut price = ModelPrice::simple(rates("3", "15", Some("0.3"), Some("3.75")));
        price.long_context = Some(LongContext {
            above_input_tokens: 200_000,
            rates: rates("6", "22.5", Some("0.6"), Some("7.5")),
        });
        price.tiers[ServiceTier::Priority.index()] = Some(rates("5", "25", None, None));
        let long = Usage {
            input_tokens: 200_001,
            output_tokens: 1000,
            ..Usage::default()
        };
        let priced = price.price(&long);
        assert!(priced.long_context);
        assert_eq!(priced.cost, Money::parse_usd("1.222506").unwrap());
        let at_threshold = Usage {
            input_tokens: 200_000,
            ..long
        };
        assert!(!price.price(&at_threshold).long_context);
        let priority = Usage {
            service_tier: ServiceTier::Priority,
            ..long
        };
        assert_eq!(price.cost(&priority), Money::parse_usd("1.025005").unwrap());
        assert_eq!(price.max_input_rate(), p("12"));
        assert_eq!(price.max_output_rate(), p("25"));
    }

    #[test]
    fn audio_and_tool_fees() {
        let mut price = ModelPrice::simple(Rates {
            audio_input: Some(p("40")),
            audio_output: Some(p("80")),
            ..rates("2.5", "10", None, None)
        });
        price.tool_fees.web_search = Money::parse_usd("0.01").unwrap();
        let usage = Usage {
            input_tokens: 1000,
            audio_input_tokens: 600,
            output_tokens: 500,
            audio_output_tokens: 400,
            web_search_calls: 5,
            ..Usage::default()
        };
        // 400 × 2.5 + 600 × 40 + 100 × 10 + 400 × 80 per million, + 5 × $0.01.
        assert_eq!(price.cost(&usage), Money::parse_usd("0.108").unwrap());
    }

    proptest::proptest! {
        /// The price is the sum of its parts priced one by one, within the
        /// one rounding step per part; and the bound covers it.
        #[test]
        fn cost_is_the_sum_of_its_parts(
            parts in proptest::collection::vec(0u64..2_000_000, 11),
            prices in proptest::collection::vec(0i64..100_000_000_000, 7),
            tier in 0usize..5, long in proptest::bool::ANY,
            fees in proptest::collection::vec(0i64..1_000_000_000, 3),
        ) {
            let price_of = |i: usize| PricePerMtok::from_nano_per_mtok(prices[i]);
            let base = Rates {
                input: price_of(0), output: price_of(1), cached_input: Some(price_of(2)),
                cache_write: Some(price_of(3)), cache_write_1h: None,
                audio_input: Some(price_of(5)), audio_output: Some(price_of(6)),
            };
            let mut price = ModelPrice::simple(base);
            price.tool_fees = ToolFees {
                web_search: Money::from_nano(fees[0]),
                web_fetch: Money::from_nano(fees[1]),
                code_execution: Money::from_nano(fees[2]),
            };
            if long {
                price.long_context = Some(LongContext { above_input_tokens: 1_000_000, rates: Rates::new(price_of(4), price_of(1)) });
            }
            let (cached, w5, w1h, audio_in, plain_in) = (parts[0], parts[1], parts[2], parts[3], parts[4]);
            let (reasoning, audio_out, plain_out) = (parts[5].min(parts[7]), parts[6], parts[7]);
            let usage = Usage {
                input_tokens: cached + w5 + w1h + audio_in + plain_in,
                cached_tokens: cached, cache_write_tokens: w5, cache_write_1h_tokens: w1h,
                audio_input_tokens: audio_in,
                output_tokens: plain_out + audio_out, reasoning_tokens: reasoning,
                audio_output_tokens: audio_out,
                web_search_calls: parts[8] % 50, web_fetch_calls: parts[9] % 50, code_execution_calls: parts[10] % 50,
                service_tier: ServiceTier::ALL[tier],
            };
            let whole = price.price(&usage);
            // Priced part by part at the rates the whole used.
            let forced = if whole.long_context { ModelPrice { base: price.long_context.unwrap().rates, long_context: None, ..price } } else { ModelPrice { long_context: None, ..price } };
            let part = |u: Usage| forced.cost(&Usage { service_tier: usage.service_tier, ..u }).nano();
            let sum = part(Usage { input_tokens: plain_in, ..Usage::default() })
                + part(Usage { input_tokens: cached, cached_tokens: cached, ..Usage::default() })
                + part(Usage { input_tokens: w5, cache_write_tokens: w5, ..Usage::default() })
                + part(Usage { input_tokens: w1h, cache_write_1h_tokens: w1h, ..Usage::default() })
                + part(Usage { input_tokens: audio_in, audio_input_tokens: audio_in, ..Usage::default() })
                + part(Usage { output_tokens: plain_out, ..Usage::default() })
                + part(Usage { output_tokens: audio_out, audio_output_tokens: audio_out, ..Usage::default() })
                + part(Usage { web_search_calls: usage.web_search_calls, web_fetch_calls: usage.web_fetch_calls, code_execution_calls: usage.code_execution_calls, ..Usage::default() });
            proptest::prop_assert!((whole.cost.nano() - sum).abs() <= 8, "{} vs {}", whole.cost.nano(), sum);
            let calls = usage.web_search_calls + usage.web_fetch_calls + usage.code_execution_calls;
            proptest::prop_assert!(price.bound(usage.input_tokens, usage.output_tokens, calls) >= whole.cost);
        }
    }
}
