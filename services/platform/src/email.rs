//! The email request: what a service's outbox relay appends to the tenant's Redis stream and what the email worker
//! consumes. The format is documented for operators in `docs/email-stream.md`; this module is its single
//! definition, so producer and consumer cannot drift apart.
//!
//! One stream entry is a flat list of string fields:
//!
//! | field | value |
//! |---|---|
//! | `v` | the format version, `1` |
//! | `id` | the idempotency key, `<producer>:<outbox id>`; a redelivered entry with a known id is not mailed again |
//! | `to` | the recipient's address |
//! | `template` | one of [`EmailContent`]'s kebab-case names |
//! | `data` | a JSON object with the template's variables |
//! | `created_at` | when the producer decided to send it (RFC 3339) |

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The stream every producer appends to; each tenant has its own Redis, so the name needs no tenant.
pub const STREAM: &str = "saaschat:emails";
/// The email worker's consumer group on [`STREAM`].
pub const CONSUMER_GROUP: &str = "email-worker";
/// Where the worker moves an entry it gave up on, with the reason.
pub const DEAD_LETTER_STREAM: &str = "saaschat:emails:dead";
/// The format version this module writes and reads.
pub const FORMAT_VERSION: &str = "1";

/// One email to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailRequest {
    /// `<producer>:<outbox id>`, unique per email.
    pub id: String,
    pub to: String,
    pub content: EmailContent,
    /// RFC 3339.
    pub created_at: String,
}

/// What the email says: the template and its variables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "template", content = "data", rename_all = "kebab-case")]
pub enum EmailContent {
    /// Confirms that the address belongs to the person who signed up.
    #[serde(rename_all = "camelCase")]
    VerifyEmail { tenant_name: String, verify_url: String, expires_at: String },
    /// A single-use link to choose a new password.
    #[serde(rename_all = "camelCase")]
    ResetPassword { tenant_name: String, reset_url: String, expires_at: String },
    /// An owner or admin invited someone.
    #[serde(rename_all = "camelCase")]
    Invitation { tenant_name: String, invited_by: String, role: String, accept_url: String, expires_at: String },
    /// Stripe could not collect a payment.
    #[serde(rename_all = "camelCase")]
    PaymentFailed {
        tenant_name: String,
        /// Amount in the currency's smallest unit, as Stripe gives it.
        amount_due: i64,
        currency: String,
        invoice_url: Option<String>,
        next_attempt_at: Option<String>,
    },
    /// A payment succeeded.
    #[serde(rename_all = "camelCase")]
    Receipt {
        tenant_name: String,
        /// Amount in the currency's smallest unit, as Stripe gives it.
        amount_paid: i64,
        currency: String,
        invoice_url: Option<String>,
        period_end: Option<String>,
    },
}

impl EmailContent {
    /// The template's name, as written in the `template` field.
    pub fn template(&self) -> &'static str {
        match self {
            EmailContent::VerifyEmail { .. } => "verify-email",
            EmailContent::ResetPassword { .. } => "reset-password",
            EmailContent::Invitation { .. } => "invitation",
            EmailContent::PaymentFailed { .. } => "payment-failed",
            EmailContent::Receipt { .. } => "receipt",
        }
    }
}

/// Why a stream entry is not an email request; the worker dead-letters such entries at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmailFormatError {
    #[error("the entry has no {0:?} field")]
    MissingField(&'static str),
    #[error("format version {0:?} is not supported (this worker reads {FORMAT_VERSION})")]
    UnsupportedVersion(String),
    #[error("template {template:?} with its data is not valid: {reason}")]
    InvalidContent { template: String, reason: String },
}

/// The envelope `serde` reads `template` and `data` from.
#[derive(Serialize, Deserialize)]
struct TaggedContent<'a> {
    template: &'a str,
    data: serde_json::Value,
}

impl EmailContent {
    /// The template's variables as a JSON object.
    pub fn data(&self) -> serde_json::Value {
        let tagged = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        tagged.get("data").cloned().unwrap_or(serde_json::Value::Null)
    }
}

/// The stream entry's fields, in the order documented above. Outbox relays call this with what they stored, so
/// an entry they could not have produced through [`EmailRequest`] still reaches the worker (which dead-letters it
/// with the reason) instead of staying in an outbox.
pub fn entry_fields(id: &str, to: &str, template: &str, data: &str, created_at: &str) -> [(&'static str, String); 6] {
    [
        ("v", FORMAT_VERSION.to_string()),
        ("id", id.to_string()),
        ("to", to.to_string()),
        ("template", template.to_string()),
        ("data", data.to_string()),
        ("created_at", created_at.to_string()),
    ]
}

impl EmailRequest {
    pub fn to_fields(&self) -> [(&'static str, String); 6] {
        entry_fields(&self.id, &self.to, self.content.template(), &self.content.data().to_string(), &self.created_at)
    }

    /// Reads a stream entry's fields.
    pub fn from_fields(fields: &HashMap<String, String>) -> Result<EmailRequest, EmailFormatError> {
        let field = |name: &'static str| fields.get(name).ok_or(EmailFormatError::MissingField(name));
        let version = field("v")?;
        if version != FORMAT_VERSION {
            return Err(EmailFormatError::UnsupportedVersion(version.clone()));
        }
        let template = field("template")?;
        let invalid = |reason: String| EmailFormatError::InvalidContent { template: template.clone(), reason };
        let data: serde_json::Value =
            serde_json::from_str(field("data")?).map_err(|error| invalid(error.to_string()))?;
        let tagged =
            serde_json::to_value(TaggedContent { template, data }).map_err(|error| invalid(error.to_string()))?;
        let content = serde_json::from_value(tagged).map_err(|error| invalid(error.to_string()))?;
        Ok(EmailRequest {
            id: field("id")?.clone(),
            to: field("to")?.clone(),
            content,
            created_at: field("created_at")?.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(request: &EmailRequest) -> HashMap<String, String> {
        request.to_fields().into_iter().map(|(name, value)| (name.to_string(), value)).collect()
    }

    fn sample() -> EmailRequest {
        EmailRequest {
            id: "auth:0b0f8a52-3f1e-4c1b-9d61-1f6f3e7f0a11".into(),
            to: "ada@example.com".into(),
            content: EmailContent::VerifyEmail {
                tenant_name: "Acme".into(),
                verify_url: "https://chat.acme.example/verify?token=abc".into(),
                expires_at: "2026-11-27T10:00:00Z".into(),
            },
            created_at: "2026-11-26T10:00:00Z".into(),
        }
    }

    #[test]
    fn every_template_round_trips_through_stream_fields() {
        let contents = [
            sample().content,
            EmailContent::ResetPassword { tenant_name: "A".into(), reset_url: "u".into(), expires_at: "t".into() },
            EmailContent::Invitation {
                tenant_name: "A".into(),
                invited_by: "ada@example.com".into(),
                role: "member".into(),
                accept_url: "u".into(),
                expires_at: "t".into(),
            },
            EmailContent::PaymentFailed {
                tenant_name: "A".into(),
                amount_due: 2000,
                currency: "usd".into(),
                invoice_url: None,
                next_attempt_at: Some("t".into()),
            },
            EmailContent::Receipt {
                tenant_name: "A".into(),
                amount_paid: 2000,
                currency: "eur".into(),
                invoice_url: Some("u".into()),
                period_end: None,
            },
        ];
        for content in contents {
            let request = EmailRequest { content, ..sample() };
            assert_eq!(EmailRequest::from_fields(&fields(&request)), Ok(request));
        }
    }

    #[test]
    fn the_documented_field_layout_is_what_is_written() {
        let written = sample().to_fields();
        let names: Vec<&str> = written.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["v", "id", "to", "template", "data", "created_at"]);
        assert_eq!(written[3].1, "verify-email");
        let data: serde_json::Value = serde_json::from_str(&written[4].1).expect("json");
        assert_eq!(data["verifyUrl"], "https://chat.acme.example/verify?token=abc");
    }

    #[test]
    fn malformed_entries_are_named() {
        let mut entry = fields(&sample());
        entry.remove("to");
        assert_eq!(EmailRequest::from_fields(&entry), Err(EmailFormatError::MissingField("to")));

        let mut entry = fields(&sample());
        entry.insert("v".into(), "2".into());
        assert_eq!(EmailRequest::from_fields(&entry), Err(EmailFormatError::UnsupportedVersion("2".into())));

        let mut entry = fields(&sample());
        entry.insert("template".into(), "newsletter".into());
        assert!(matches!(EmailRequest::from_fields(&entry), Err(EmailFormatError::InvalidContent { .. })));

        let mut entry = fields(&sample());
        entry.insert("data".into(), "{\"tenantName\": 1}".into());
        assert!(matches!(EmailRequest::from_fields(&entry), Err(EmailFormatError::InvalidContent { .. })));
    }
}
