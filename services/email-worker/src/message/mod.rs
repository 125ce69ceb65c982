//! From an email request and its rendered content to the MIME message handed to SMTP: every header value checked
//! ([`headers`]), a `multipart/alternative` body with text and HTML, and a `Message-ID` derived from the
//! idempotency id so a duplicate (see `docs/email-stream.md`, "what remains") carries the same id as the original.

pub mod headers;

use lettre::Message;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use saaschat_platform::email::EmailRequest;
use sha2::{Digest, Sha256};

use crate::render::RenderedEmail;
use headers::{HeaderError, check_header_value};

/// The header that carries the idempotency id, for people and tools looking at a delivered message.
pub const EMAIL_ID_HEADER: &str = "X-Saaschat-Email-Id";

/// `X-Saaschat-Email-Id: auth:0b0f8a52-...`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailIdHeader(String);

impl Header for EmailIdHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str(EMAIL_ID_HEADER)
    }

    fn parse(text: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(EmailIdHeader(text.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// The `Message-ID` for an idempotency id: the same id always gives the same `Message-ID`, on any worker.
pub fn message_id(email_id: &str, domain: &str) -> String {
    let digest = Sha256::digest(email_id.as_bytes());
    let hex: String = digest.iter().take(16).map(|byte| format!("{byte:02x}")).collect();
    format!("<{hex}@{domain}>")
}

/// Why a request cannot become a message. Never retried: the same input fails the same way.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("the message cannot be built: {0}")]
    Message(#[from] lettre::error::Error),
}

fn mailbox(header: &'static str, value: &str) -> Result<Mailbox, HeaderError> {
    check_header_value(header, value)?;
    value.parse::<Mailbox>().map_err(|error| HeaderError::Address { header, reason: error.to_string() })
}

/// Builds the message. `from` is the tenant's sender (`smtp.from`).
pub fn build(from: &str, request: &EmailRequest, rendered: &RenderedEmail) -> Result<Message, BuildError> {
    let from = mailbox("From", from)?;
    let to = mailbox("To", &request.to)?;
    check_header_value("Subject", &rendered.subject)?;
    check_header_value(EMAIL_ID_HEADER, &request.id)?;
    let domain = from.email.domain().to_string();
    Ok(Message::builder()
        .from(from)
        .to(to)
        .subject(rendered.subject.clone())
        .message_id(Some(message_id(&request.id, &domain)))
        .header(EmailIdHeader(request.id.clone()))
        .multipart(MultiPart::alternative_plain_html(rendered.text.clone(), rendered.html.clone()))?)
}

#[cfg(test)]
mod tests {
    use saaschat_platform::email::EmailContent;

    use super::*;

    fn request(to: &str) -> EmailRequest {
        EmailRequest {
            id: "auth:0b0f8a52-3f1e-4c1b-9d61-1f6f3e7f0a11".into(),
            to: to.into(),
            content: EmailContent::VerifyEmail {
                tenant_name: "Acme".into(),
                verify_url: "https://chat.acme.example/verify?token=abc".into(),
                expires_at: "2026-11-27T10:00:00Z".into(),
            },
            created_at: "2026-11-26T10:00:00Z".into(),
        }
    }

    fn rendered(subject: &str) -> RenderedEmail {
        RenderedEmail { subject: subject.into(), text: "hello\n".into(), html: "<p>hello</p>\n".into() }
    }

    const FROM: &str = "Acme Chat <no-reply@acme.example>";

    #[test]
    fn the_message_carries_the_headers_and_both_bodies() {
        let message = build(FROM, &request("ada@example.com"), &rendered("Confirm")).expect("builds");
        let formatted = String::from_utf8(message.formatted()).expect("utf8");
        assert!(formatted.contains("From: \"Acme Chat\" <no-reply@acme.example>\r\n"), "{formatted}");
        assert!(formatted.contains("To: ada@example.com\r\n"), "{formatted}");
        assert!(formatted.contains("Subject: Confirm\r\n"), "{formatted}");
        assert!(formatted.contains("X-Saaschat-Email-Id: auth:0b0f8a52-3f1e-4c1b-9d61-1f6f3e7f0a11\r\n"));
        let expected_id = message_id("auth:0b0f8a52-3f1e-4c1b-9d61-1f6f3e7f0a11", "acme.example");
        assert!(formatted.contains(&format!("Message-ID: {expected_id}\r\n")), "{formatted}");
        assert!(formatted.contains("multipart/alternative"));
        assert!(formatted.contains("Content-Type: text/plain; charset=utf-8"));
        assert!(formatted.contains("Content-Type: text/html; charset=utf-8"));
        assert_eq!(message.envelope().to()[0].to_string(), "ada@example.com");
    }

    #[test]
    fn the_message_id_is_a_stable_function_of_the_email_id() {
        let first = message_id("auth:1", "acme.example");
        assert_eq!(first, message_id("auth:1", "acme.example"));
        assert_ne!(first, message_id("auth:2", "acme.example"));
        assert_eq!(first.len(), 1 + 32 + 1 + "acme.example".len() + 1);
        assert!(first.starts_with('<') && first.ends_with("@acme.example>"));
    }

    #[test]
    fn line_breaks_in_any_header_value_are_refused() {
        let injected = "ada@example.com\r\nBcc: eve@example.com";
        assert!(matches!(
            build(FROM, &request(injected), &rendered("Confirm")),
            Err(BuildError::Header(HeaderError::LineBreak { header: "To" }))
        ));
        assert!(matches!(
            build("Acme\n <no-reply@acme.example>", &request("ada@example.com"), &rendered("Confirm")),
            Err(BuildError::Header(HeaderError::LineBreak { header: "From" }))
        ));
        assert!(matches!(
            build(FROM, &request("ada@example.com"), &rendered("Confirm\r\nBcc: eve@example.com")),
            Err(BuildError::Header(HeaderError::LineBreak { header: "Subject" }))
        ));
        let mut with_bad_id = request("ada@example.com");
        with_bad_id.id = "auth:1\nBcc: eve@example.com".into();
        assert!(matches!(
            build(FROM, &with_bad_id, &rendered("Confirm")),
            Err(BuildError::Header(HeaderError::LineBreak { header: EMAIL_ID_HEADER }))
        ));
    }

    #[test]
    fn a_tenant_name_with_a_line_break_is_refused_through_the_subject() {
        let content = EmailContent::ResetPassword {
            tenant_name: "Acme\r\nBcc: eve@example.com".into(),
            reset_url: "https://chat.acme.example/reset".into(),
            expires_at: "t".into(),
        };
        let rendered = crate::render::render(&content).expect("renders");
        assert!(matches!(
            build(FROM, &EmailRequest { content, ..request("ada@example.com") }, &rendered),
            Err(BuildError::Header(HeaderError::LineBreak { header: "Subject" }))
        ));
    }

    #[test]
    fn addresses_that_do_not_parse_are_refused() {
        for to in ["not an address", "ada@", "@example.com", "ada@example.com, eve@example.com"] {
            assert!(
                matches!(
                    build(FROM, &request(to), &rendered("Confirm")),
                    Err(BuildError::Header(HeaderError::Address { header: "To", .. }))
                ),
                "{to:?}"
            );
        }
    }

    #[test]
    fn non_ascii_subjects_are_encoded_not_passed_raw() {
        let message = build(FROM, &request("ada@example.com"), &rendered("Zoë’s receipt")).expect("builds");
        let formatted = String::from_utf8(message.formatted()).expect("utf8");
        assert!(formatted.contains("Subject: =?utf-8?"), "{formatted}");
    }
}
