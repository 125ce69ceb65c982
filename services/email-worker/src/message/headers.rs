//! Header values come from the tenant's configuration (`From`) and from producers' data (the recipient, names that
//! end up in the subject). A line break in one of them would let that data add headers or a body of its own
//! (header injection), so any value with CR or LF is refused here, before the message is built, rather than
//! trusting the mail library to encode it. Other control characters and the Unicode line separators that some
//! mail clients treat as line breaks are refused too.

/// Why a header value is refused. The value itself is never part of the message: it is personal data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the {header} header contains a line break (CR or LF)")]
    LineBreak { header: &'static str },
    #[error("the {header} header contains a control character or line separator")]
    ControlCharacter { header: &'static str },
    #[error("the {header} header is empty")]
    Empty { header: &'static str },
    #[error("the {header} header is not a valid address: {reason}")]
    Address { header: &'static str, reason: String },
}

/// Checks one header value.
pub fn check_header_value(header: &'static str, value: &str) -> Result<(), HeaderError> {
    if value.contains(['\r', '\n']) {
        return Err(HeaderError::LineBreak { header });
    }
    if value.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')) {
        return Err(HeaderError::ControlCharacter { header });
    }
    if value.trim().is_empty() {
        return Err(HeaderError::Empty { header });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_values_pass() {
        for value in ["ada@example.com", "Acme Chat <no-reply@acme.example>", "Zoë's “Chat” — Ørsted", "a\u{a0}b"]
        {
            assert_eq!(check_header_value("Subject", value), Ok(()), "{value:?}");
        }
    }

    #[test]
    fn cr_or_lf_anywhere_is_a_line_break() {
        for value in [
            "ada@example.com\r\nBcc: eve@example.com",
            "ada@example.com\nBcc: eve@example.com",
            "ada@example.com\rBcc: eve@example.com",
            "\r\n",
            "Hello\r\n\r\n<html>body</html>",
            "trailing\n",
            "\nleading",
        ] {
            assert_eq!(check_header_value("To", value), Err(HeaderError::LineBreak { header: "To" }), "{value:?}");
        }
    }

    #[test]
    fn other_control_characters_and_line_separators_are_refused() {
        for value in ["a\u{0}b", "a\tb", "a\u{b}b", "a\u{c}b", "a\u{85}b", "a\u{2028}b", "a\u{2029}b", "a\u{7f}b"] {
            assert_eq!(
                check_header_value("Subject", value),
                Err(HeaderError::ControlCharacter { header: "Subject" }),
                "{value:?}"
            );
        }
    }

    #[test]
    fn empty_values_are_refused() {
        assert_eq!(check_header_value("To", ""), Err(HeaderError::Empty { header: "To" }));
        assert_eq!(check_header_value("To", "   "), Err(HeaderError::Empty { header: "To" }));
    }

    #[test]
    fn the_error_never_repeats_the_value() {
        let error = check_header_value("To", "secret.person@example.com\nBcc: x").expect_err("refused");
        assert!(!error.to_string().contains("secret.person"));
    }
}
