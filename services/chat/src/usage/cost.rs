//! Prices and costs, in exact integer arithmetic: prices are decimal strings of US dollars per million tokens
//! (`"0.15"`), costs are US dollar millionths (`cost_micros`).

/// A price in billionths of a US dollar per million tokens (so `"0.15"` is 150_000_000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Price {
    nanos_per_million: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a price (a decimal number of dollars with at most 9 decimals)")]
pub struct PriceError(String);

impl Price {
    pub fn parse(text: &str) -> Result<Price, PriceError> {
        let error = || PriceError(text.to_string());
        let (whole, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 {
            return Err(error());
        }
        let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| error())? };
        let fraction_nanos: u64 =
            if fraction.is_empty() { 0 } else { format!("{fraction:0<9}").parse().map_err(|_| error())? };
        let nanos_per_million =
            whole.checked_mul(1_000_000_000).and_then(|n| n.checked_add(fraction_nanos)).ok_or_else(error)?;
        Ok(Price { nanos_per_million })
    }

    /// The cost of `tokens` in US dollar millionths, rounded half up.
    pub fn cost_micros(self, tokens: u64) -> u64 {
        // tokens * dollars-per-million / 1e6 dollars = tokens * nanos / 1e9 * 1e6 / 1e6 micros = tokens*nanos/1e9
        let exact = u128::from(tokens) * u128::from(self.nanos_per_million);
        u64::try_from((exact + 500_000_000) / 1_000_000_000).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_exactly() {
        assert_eq!(Price::parse("0.15").expect("price").nanos_per_million, 150_000_000);
        assert_eq!(Price::parse("10").expect("price").nanos_per_million, 10_000_000_000);
        assert_eq!(Price::parse(".5").expect("price").nanos_per_million, 500_000_000);
        assert_eq!(Price::parse("0.000000001").expect("price").nanos_per_million, 1);
        for bad in ["", ".", "-1", "1e3", "0.0000000001", "abc", "1.2.3", "99999999999999999999"] {
            assert!(Price::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn costs_are_in_micro_dollars_rounded_half_up() {
        // 1,000 tokens at $0.15 per million is $0.00015.
        assert_eq!(Price::parse("0.15").expect("price").cost_micros(1000), 150);
        assert_eq!(Price::parse("10").expect("price").cost_micros(1_000_000), 10_000_000);
        assert_eq!(Price::parse("0.15").expect("price").cost_micros(3), 0);
        assert_eq!(Price::parse("0.5").expect("price").cost_micros(1), 1);
        assert_eq!(Price::parse("0.49").expect("price").cost_micros(1), 0);
        assert_eq!(Price::default().cost_micros(1_000_000), 0);
    }
}
