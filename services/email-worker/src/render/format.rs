//! The small formatting pieces the templates share: HTML escaping, amounts of money, dates and link checks.

use chrono::{DateTime, Utc};

/// Escapes text for HTML element content and double- or single-quoted attribute values.
pub fn html_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Currencies whose smallest unit is the unit itself, and those with three decimals, as Stripe lists them.
const ZERO_DECIMAL: [&str; 16] =
    ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"];
const THREE_DECIMAL: [&str; 5] = ["bhd", "jod", "kwd", "omr", "tnd"];

/// An amount in the currency's smallest unit (as Stripe gives it) for people: `2000`, `usd` → `20.00 USD`.
pub fn money(amount: i64, currency: &str) -> String {
    let currency = currency.trim().to_ascii_lowercase();
    let decimals = if ZERO_DECIMAL.contains(&currency.as_str()) {
        0
    } else if THREE_DECIMAL.contains(&currency.as_str()) {
        3
    } else {
        2
    };
    let sign = if amount < 0 { "-" } else { "" };
    let magnitude = amount.unsigned_abs();
    let code = currency.to_ascii_uppercase();
    if decimals == 0 {
        return format!("{sign}{magnitude} {code}");
    }
    let scale = 10u64.pow(decimals);
    format!("{sign}{}.{:0width$} {code}", magnitude / scale, magnitude % scale, width = decimals as usize)
}

/// An RFC 3339 time for people, in UTC (`2026-11-27 10:00 UTC`); text that is not RFC 3339 is shown as it is.
pub fn date_time(text: &str) -> String {
    match DateTime::parse_from_rfc3339(text.trim()) {
        Ok(time) => time.with_timezone(&Utc).format("%Y-%m-%d %H:%M UTC").to_string(),
        Err(_) => text.to_string(),
    }
}

/// Why a link cannot be put into an email.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("{field} is not an absolute URL")]
    NotAUrl { field: &'static str },
    #[error("{field} must be an http or https URL, not {scheme}:")]
    Scheme { field: &'static str, scheme: String },
}

/// Checks that a link is an absolute `http(s)` URL, so a producer's data can never put a `javascript:` or `data:`
/// link into a button. Returns the link as given.
pub fn link<'a>(field: &'static str, url: &'a str) -> Result<&'a str, LinkError> {
    let parsed = url::Url::parse(url).map_err(|_| LinkError::NotAUrl { field })?;
    match parsed.scheme() {
        "https" | "http" if parsed.host_str().is_some_and(|host| !host.is_empty()) => Ok(url),
        "https" | "http" => Err(LinkError::NotAUrl { field }),
        scheme => Err(LinkError::Scheme { field, scheme: scheme.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escape_covers_markup_and_both_quotes() {
        assert_eq!(
            html_escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(html_escape("Zoë & Ørsted"), "Zoë &amp; Ørsted");
        assert_eq!(html_escape(""), "");
    }

    #[test]
    fn money_uses_the_currencys_decimals() {
        assert_eq!(money(2000, "usd"), "20.00 USD");
        assert_eq!(money(5, "eur"), "0.05 EUR");
        assert_eq!(money(1999, "EUR"), "19.99 EUR");
        assert_eq!(money(500, "jpy"), "500 JPY");
        assert_eq!(money(12345, "kwd"), "12.345 KWD");
        assert_eq!(money(-250, "usd"), "-2.50 USD");
        assert_eq!(money(0, "usd"), "0.00 USD");
        assert_eq!(money(i64::MIN, "usd"), "-92233720368547758.08 USD");
    }

    #[test]
    fn date_times_are_shown_in_utc_or_as_given() {
        assert_eq!(date_time("2026-11-27T10:00:00Z"), "2026-11-27 10:00 UTC");
        assert_eq!(date_time("2026-11-27T12:30:00+02:00"), "2026-11-27 10:30 UTC");
        assert_eq!(date_time("tomorrow"), "tomorrow");
    }

    #[test]
    fn only_absolute_http_links_are_accepted() {
        assert_eq!(
            link("verifyUrl", "https://chat.acme.example/verify?t=1"),
            Ok("https://chat.acme.example/verify?t=1")
        );
        assert_eq!(link("verifyUrl", "http://localhost:8080/v"), Ok("http://localhost:8080/v"));
        assert_eq!(
            link("verifyUrl", "javascript:alert(1)"),
            Err(LinkError::Scheme { field: "verifyUrl", scheme: "javascript".into() })
        );
        assert_eq!(
            link("verifyUrl", "data:text/html,hi"),
            Err(LinkError::Scheme { field: "verifyUrl", scheme: "data".into() })
        );
        assert_eq!(link("verifyUrl", "/verify?t=1"), Err(LinkError::NotAUrl { field: "verifyUrl" }));
        assert_eq!(link("verifyUrl", ""), Err(LinkError::NotAUrl { field: "verifyUrl" }));
    }
}
