//! The five templates, as plain text and HTML.
//!
//! Written as small functions rather than with a template engine: there are five fixed templates whose variables
//! are the fields of [`EmailContent`], so a misspelt variable is a compile error here instead of an empty string at
//! run time, and HTML escaping is one visible function ([`format::html_escape`]) applied to every variable.
//! Links must be absolute `http(s)` URLs ([`format::link`]). The subject is checked for line breaks when the
//! message is built ([`crate::message`]), like every other header.

pub mod format;

use saaschat_platform::email::EmailContent;

use format::{LinkError, date_time, html_escape, link, money};

/// One email, ready to be put into a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// What a template's text says, before it becomes text or HTML: paragraphs of plain text, at most one button, and
/// small print. Every piece is plain text; [`Layout::html`] escapes it.
struct Layout {
    subject: String,
    paragraphs: Vec<String>,
    button: Option<(&'static str, String)>,
    small_print: Vec<String>,
}

impl Layout {
    fn text(&self) -> String {
        let mut text = String::new();
        for paragraph in &self.paragraphs {
            text.push_str(paragraph);
            text.push_str("\n\n");
        }
        if let Some((label, url)) = &self.button {
            text.push_str(&format!("{label}:\n{url}\n\n"));
        }
        for line in &self.small_print {
            text.push_str(line);
            text.push_str("\n\n");
        }
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    }

    fn html(&self) -> String {
        let mut body = String::new();
        for paragraph in &self.paragraphs {
            body.push_str(&format!("<p>{}</p>\n", html_escape(paragraph)));
        }
        if let Some((label, url)) = &self.button {
            let url = html_escape(url);
            body.push_str(&format!(
                "<p><a href=\"{url}\" style=\"display:inline-block;padding:10px 18px;background:#2563eb;\
                 color:#ffffff;text-decoration:none;border-radius:6px\">{}</a></p>\n\
                 <p style=\"font-size:13px;color:#555555\">Or copy this link: {url}</p>\n",
                html_escape(label)
            ));
        }
        for line in &self.small_print {
            body.push_str(&format!("<p style=\"font-size:13px;color:#555555\">{}</p>\n", html_escape(line)));
        }
        format!(
            "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n</head>\n\
             <body style=\"font-family:sans-serif;line-height:1.5;color:#111111\">\n{body}</body>\n</html>\n",
            html_escape(&self.subject)
        )
    }
}

/// Renders an email's content.
pub fn render(content: &EmailContent) -> Result<RenderedEmail, LinkError> {
    let layout = layout(content)?;
    Ok(RenderedEmail { text: layout.text(), html: layout.html(), subject: layout.subject })
}

fn layout(content: &EmailContent) -> Result<Layout, LinkError> {
    Ok(match content {
        EmailContent::VerifyEmail { tenant_name, verify_url, expires_at } => Layout {
            subject: format!("Confirm your email address for {tenant_name}"),
            paragraphs: vec![
                "Hello,".into(),
                format!("please confirm that this address is yours to finish signing up for {tenant_name}."),
            ],
            button: Some(("Confirm email address", link("verifyUrl", verify_url)?.to_string())),
            small_print: vec![
                format!("The link expires at {}.", date_time(expires_at)),
                format!("If you did not sign up for {tenant_name}, ignore this email."),
            ],
        },
        EmailContent::ResetPassword { tenant_name, reset_url, expires_at } => Layout {
            subject: format!("Reset your password for {tenant_name}"),
            paragraphs: vec![
                "Hello,".into(),
                format!("someone asked to reset the password of your {tenant_name} account."),
            ],
            button: Some(("Choose a new password", link("resetUrl", reset_url)?.to_string())),
            small_print: vec![
                format!("The link works once and expires at {}.", date_time(expires_at)),
                "If you did not ask for this, ignore this email: your password stays as it is.".into(),
            ],
        },
        EmailContent::Invitation { tenant_name, invited_by, role, accept_url, expires_at } => Layout {
            subject: format!("{invited_by} invited you to {tenant_name}"),
            paragraphs: vec![
                "Hello,".into(),
                format!("{invited_by} invited you to join {tenant_name} as {}.", article_and(role)),
            ],
            button: Some(("Accept the invitation", link("acceptUrl", accept_url)?.to_string())),
            small_print: vec![format!("The invitation expires at {}.", date_time(expires_at))],
        },
        EmailContent::PaymentFailed { tenant_name, amount_due, currency, invoice_url, next_attempt_at } => {
            let mut paragraphs = vec![
                "Hello,".into(),
                format!("we could not collect the payment of {} for {tenant_name}.", money(*amount_due, currency)),
            ];
            paragraphs.push(match next_attempt_at {
                Some(next) => {
                    format!("We will try again at {}. Please check your payment method before then.", date_time(next))
                }
                None => "Please update your payment method to keep your subscription.".into(),
            });
            Layout {
                subject: format!("Payment failed for {tenant_name}"),
                paragraphs,
                button: invoice_url
                    .as_deref()
                    .map(|url| link("invoiceUrl", url))
                    .transpose()?
                    .map(|url| ("View the invoice", url.to_string())),
                small_print: Vec::new(),
            }
        }
        EmailContent::Receipt { tenant_name, amount_paid, currency, invoice_url, period_end } => {
            let mut paragraphs = vec![
                "Hello,".into(),
                format!("thank you: we received your payment of {} for {tenant_name}.", money(*amount_paid, currency)),
            ];
            if let Some(end) = period_end {
                paragraphs.push(format!("Your subscription is paid until {}.", date_time(end)));
            }
            Layout {
                subject: format!("Your receipt from {tenant_name}"),
                paragraphs,
                button: invoice_url
                    .as_deref()
                    .map(|url| link("invoiceUrl", url))
                    .transpose()?
                    .map(|url| ("View the invoice", url.to_string())),
                small_print: Vec::new(),
            }
        }
    })
}

/// `member` → `a member`, `owner` → `an owner`.
fn article_and(noun: &str) -> String {
    let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U']) { "an" } else { "a" };
    format!("{article} {noun}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify() -> EmailContent {
        EmailContent::VerifyEmail {
            tenant_name: "Acme".into(),
            verify_url: "https://chat.acme.example/verify?token=abc&x=1".into(),
            expires_at: "2026-11-27T10:00:00Z".into(),
        }
    }

    #[test]
    fn verify_email_renders_text_and_html() {
        let rendered = render(&verify()).expect("renders");
        assert_eq!(rendered.subject, "Confirm your email address for Acme");
        assert_eq!(
            rendered.text,
            "Hello,\n\nplease confirm that this address is yours to finish signing up for Acme.\n\n\
             Confirm email address:\nhttps://chat.acme.example/verify?token=abc&x=1\n\n\
             The link expires at 2026-11-27 10:00 UTC.\n\nIf you did not sign up for Acme, ignore this email.\n"
        );
        assert!(rendered.html.contains("<title>Confirm your email address for Acme</title>"), "{}", rendered.html);
        assert!(rendered.html.contains("href=\"https://chat.acme.example/verify?token=abc&amp;x=1\""));
        assert!(rendered.html.contains(">Confirm email address</a>"));
    }

    #[test]
    fn every_variable_is_escaped_in_html_and_left_alone_in_text() {
        let content = EmailContent::Invitation {
            tenant_name: "<b>Acme</b> & \"Co\"".into(),
            invited_by: "Eve <eve@example.com>".into(),
            role: "admin".into(),
            accept_url: "https://chat.acme.example/accept?a=\"><script>".into(),
            expires_at: "<soon>".into(),
        };
        let rendered = render(&content).expect("renders");
        assert!(!rendered.html.contains("<b>"), "{}", rendered.html);
        assert!(!rendered.html.contains("<script>"), "{}", rendered.html);
        assert!(!rendered.html.contains("<eve@"), "{}", rendered.html);
        assert!(!rendered.html.contains("<soon>"), "{}", rendered.html);
        assert!(rendered.html.contains("&lt;b&gt;Acme&lt;/b&gt; &amp; &quot;Co&quot;"));
        assert!(rendered.text.contains("Eve <eve@example.com> invited you to join <b>Acme</b> & \"Co\" as an admin."));
        assert_eq!(rendered.subject, "Eve <eve@example.com> invited you to <b>Acme</b> & \"Co\"");
    }

    #[test]
    fn links_that_are_not_http_are_refused_in_every_template() {
        let bad = "javascript:alert(1)".to_string();
        let contents = [
            EmailContent::VerifyEmail { tenant_name: "A".into(), verify_url: bad.clone(), expires_at: "t".into() },
            EmailContent::ResetPassword { tenant_name: "A".into(), reset_url: bad.clone(), expires_at: "t".into() },
            EmailContent::Invitation {
                tenant_name: "A".into(),
                invited_by: "b".into(),
                role: "member".into(),
                accept_url: bad.clone(),
                expires_at: "t".into(),
            },
            EmailContent::PaymentFailed {
                tenant_name: "A".into(),
                amount_due: 1,
                currency: "usd".into(),
                invoice_url: Some(bad.clone()),
                next_attempt_at: None,
            },
            EmailContent::Receipt {
                tenant_name: "A".into(),
                amount_paid: 1,
                currency: "usd".into(),
                invoice_url: Some(bad.clone()),
                period_end: None,
            },
        ];
        for content in contents {
            assert!(matches!(render(&content), Err(LinkError::Scheme { .. })), "{content:?}");
        }
    }

    #[test]
    fn reset_password_says_the_link_works_once() {
        let rendered = render(&EmailContent::ResetPassword {
            tenant_name: "Acme".into(),
            reset_url: "https://chat.acme.example/reset?token=r".into(),
            expires_at: "2026-11-27T10:00:00Z".into(),
        })
        .expect("renders");
        assert_eq!(rendered.subject, "Reset your password for Acme");
        assert!(rendered.text.contains("Choose a new password:\nhttps://chat.acme.example/reset?token=r\n"));
        assert!(rendered.text.contains("The link works once and expires at 2026-11-27 10:00 UTC."));
    }

    #[test]
    fn invitation_names_the_inviter_and_the_role() {
        let rendered = render(&EmailContent::Invitation {
            tenant_name: "Acme".into(),
            invited_by: "ada@acme.example".into(),
            role: "member".into(),
            accept_url: "https://chat.acme.example/accept?i=1".into(),
            expires_at: "2026-12-01T00:00:00Z".into(),
        })
        .expect("renders");
        assert_eq!(rendered.subject, "ada@acme.example invited you to Acme");
        assert!(rendered.text.contains("ada@acme.example invited you to join Acme as a member."));
        assert!(rendered.text.contains("The invitation expires at 2026-12-01 00:00 UTC."));
    }

    #[test]
    fn payment_failed_shows_the_amount_and_what_happens_next() {
        let with_retry = render(&EmailContent::PaymentFailed {
            tenant_name: "Acme".into(),
            amount_due: 4900,
            currency: "usd".into(),
            invoice_url: Some("https://invoice.stripe.com/i/1".into()),
            next_attempt_at: Some("2026-11-30T09:00:00Z".into()),
        })
        .expect("renders");
        assert_eq!(with_retry.subject, "Payment failed for Acme");
        assert!(with_retry.text.contains("we could not collect the payment of 49.00 USD for Acme."));
        assert!(with_retry.text.contains("We will try again at 2026-11-30 09:00 UTC."));
        assert!(with_retry.text.contains("View the invoice:\nhttps://invoice.stripe.com/i/1\n"));

        let final_notice = render(&EmailContent::PaymentFailed {
            tenant_name: "Acme".into(),
            amount_due: 500,
            currency: "jpy".into(),
            invoice_url: None,
            next_attempt_at: None,
        })
        .expect("renders");
        assert!(final_notice.text.contains("500 JPY"));
        assert!(final_notice.text.contains("Please update your payment method"));
        assert!(!final_notice.text.contains("View the invoice"));
        assert!(!final_notice.html.contains("<a "));
    }

    #[test]
    fn receipt_shows_the_amount_and_the_period() {
        let rendered = render(&EmailContent::Receipt {
            tenant_name: "Acme".into(),
            amount_paid: 1999,
            currency: "eur".into(),
            invoice_url: None,
            period_end: Some("2026-12-26T00:00:00Z".into()),
        })
        .expect("renders");
        assert_eq!(rendered.subject, "Your receipt from Acme");
        assert!(rendered.text.contains("we received your payment of 19.99 EUR for Acme."));
        assert!(rendered.text.contains("Your subscription is paid until 2026-12-26 00:00 UTC."));
        assert!(rendered.html.contains("<p>thank you: we received your payment of 19.99 EUR for Acme.</p>"));
    }
}
