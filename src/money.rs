//! Money: integer nano-dollars, from config to ledger.
//!
//! Owns parsing decimal text into exact integers and printing it back. Never
//! touches `f64`. The one rounding rule of the project lives in
//! [`Money::from_nano_micro`]: a per-request amount with a fraction of a
//! nano-dollar is rounded half up, once, when the request is priced.

use std::fmt;

/// Nano-dollars per dollar.
pub const NANO_PER_USD: i64 = 1_000_000_000;

/// An amount of US dollars in integer nano-dollars (1e-9 USD). Signed, so a
/// balance that a settlement pushed below zero is representable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(i64);

/// Why decimal text is not an amount.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("is not a decimal number")]
    NotDecimal,
    #[error("has more than 9 decimal places")]
    TooPrecise,
    #[error("is too large")]
    TooLarge,
    #[error("must not be negative")]
    Negative,
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_nano(nano: i64) -> Money {
        Money(nano)
    }

    pub const fn nano(self) -> i64 {
        self.0
    }

    /// Rounds an amount given in millionths of a nano-dollar (the unit a
    /// per-million-token price times a token count lands in) to whole
    /// nano-dollars, half up. This is the project's one rounding rule.
    pub fn from_nano_micro(nano_micro: i128) -> Money {
        let whole = nano_micro.div_euclid(1_000_000);
        let rest = nano_micro.rem_euclid(1_000_000);
        let rounded = if rest >= 500_000 { whole + 1 } else { whole };
        Money(clamp_i64(rounded))
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }

    /// Parses a decimal USD string such as `"12.5"` or `"0.000008850"`.
    /// Accepts an optional leading `-`; at most 9 decimal places.
    pub fn parse_usd(text: &str) -> Result<Money, MoneyError> {
        parse_scaled(text, 9).map(Money)
    }

    /// Parses a non-negative decimal USD string.
    pub fn parse_usd_non_negative(text: &str) -> Result<Money, MoneyError> {
        let money = Money::parse_usd(text)?;
        if money.0 < 0 {
            return Err(MoneyError::Negative);
        }
        Ok(money)
    }

    /// The decimal USD text of this amount, trailing zeros trimmed, at
    /// least one decimal place (`"12.5"`, `"0.00000885"`, `"3.0"`).
    pub fn to_usd_string(self) -> String {
        self.to_string()
    }
}

fn clamp_i64(value: i128) -> i64 {
    if value > i64::MAX as i128 {
        i64::MAX
    } else if value < i64::MIN as i128 {
        i64::MIN
    } else {
        value as i64
    }
}

/// Parses decimal text into an integer scaled by 10^scale, exactly.
pub(crate) fn parse_scaled(text: &str, scale: u32) -> Result<i64, MoneyError> {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int_part, frac_part) = match digits.split_once('.') {
        Some((int_part, frac_part)) => (int_part, frac_part),
        None => (digits, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(MoneyError::NotDecimal);
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(MoneyError::NotDecimal);
    }
    if digits.contains('.') && frac_part.is_empty() && int_part.is_empty() {
        return Err(MoneyError::NotDecimal);
    }
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > scale as usize {
        return Err(MoneyError::TooPrecise);
    }
    let mut value: i128 = 0;
    for b in int_part.bytes() {
        value = value * 10 + i128::from(b - b'0');
        if value > i64::MAX as i128 {
            return Err(MoneyError::TooLarge);
        }
    }
    let mut frac_value: i128 = 0;
    for b in frac_trimmed.bytes() {
        frac_value = frac_value * 10 + i128::from(b - b'0');
    }
    frac_value *= 10_i128.pow(scale - frac_trimmed.len() as u32);
    let total = value * 10_i128.pow(scale) + frac_value;
    let total = if negative { -total } else { total };
    if total > i64::MAX as i128 || total < i64::MIN as i128 {
        return Err(MoneyError::TooLarge);
    }
    Ok(total as i64)
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = i128::from(self.0);
        let sign = if value < 0 { "-" } else { "" };
        let abs = value.abs();
        let whole = abs / i128::from(NANO_PER_USD);
        let frac = abs % i128::from(NANO_PER_USD);
        let mut frac_text = format!("{frac:09}");
        while frac_text.len() > 1 && frac_text.ends_with('0') {
            frac_text.pop();
        }
        write!(f, "{sign}{whole}.{frac_text}")
    }
}

/// A price in nano-dollars per million tokens, parsed from the config's
/// decimal USD-per-million-tokens text. One token at this price costs
/// `self / 1e6` nano-dollars, so a token count times this value is in
/// millionths of a nano-dollar: exact for any price with up to 9 decimals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PricePerMtok(i64);

impl PricePerMtok {
    pub fn parse(text: &str) -> Result<PricePerMtok, MoneyError> {
        let nano = parse_scaled(text, 9)?;
        if nano < 0 {
            return Err(MoneyError::Negative);
        }
        Ok(PricePerMtok(nano))
    }

    pub const fn from_nano_per_mtok(nano: i64) -> PricePerMtok {
        PricePerMtok(nano)
    }

    pub const fn nano_per_mtok(self) -> i64 {
        self.0
    }

    /// Tokens times this price, in millionths of a nano-dollar.
    pub fn times(self, tokens: u64) -> i128 {
        i128::from(tokens) * i128::from(self.0)
    }
}

impl fmt::Display for PricePerMtok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Money(self.0).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        for (text, nano, shown) in [
            ("12.5", 12_500_000_000, "12.5"),
            ("0.000008850", 8_850, "0.00000885"),
            ("3", 3_000_000_000, "3.0"),
            ("-1.25", -1_250_000_000, "-1.25"),
            ("0.000000001", 1, "0.000000001"),
            (".5", 500_000_000, "0.5"),
        ] {
            let money = Money::parse_usd(text).unwrap();
            assert_eq!(money.nano(), nano, "{text}");
            assert_eq!(money.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!(Money::parse_usd("abc"), Err(MoneyError::NotDecimal));
        assert_eq!(Money::parse_usd(""), Err(MoneyError::NotDecimal));
        assert_eq!(Money::parse_usd("."), Err(MoneyError::NotDecimal));
        assert_eq!(Money::parse_usd("1e5"), Err(MoneyError::NotDecimal));
        assert_eq!(
            Money::parse_usd("0.0000000001"),
            Err(MoneyError::TooPrecise)
        );
        assert_eq!(
            Money::parse_usd("99999999999999"),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(
            Money::parse_usd_non_negative("-1"),
            Err(MoneyError::Negative)
        );
    }

    #[test]
    fn rounds_half_up_once() {
        assert_eq!(Money::from_nano_micro(1_499_999).nano(), 1);
        assert_eq!(Money::from_nano_micro(1_500_000).nano(), 2);
        assert_eq!(Money::from_nano_micro(0).nano(), 0);
        assert_eq!(Money::from_nano_micro(-500_000).nano(), 0);
    }

    proptest::proptest! {
        #[test]
        fn display_round_trips(nano in proptest::num::i64::ANY) {
            let money = Money::from_nano(nano);
            proptest::prop_assert_eq!(Money::parse_usd(&money.to_string()), Ok(money));
        }

        #[test]
        fn price_times_tokens_is_exact(price_nano in 0i64..1_000_000_000_000, tokens in 0u64..10_000_000) {
            let price = PricePerMtok::from_nano_per_mtok(price_nano);
            let micro = price.times(tokens);
            // Splitting a token count never changes the exact sum.
            let half = tokens / 2;
            proptest::prop_assert_eq!(micro, price.times(half) + price.times(tokens - half));
            let money = Money::from_nano_micro(micro);
            let diff = i128::from(money.nano()) * 1_000_000 - micro;
            proptest::prop_assert!((-500_000..500_000).contains(&diff));
        }
    }
}
