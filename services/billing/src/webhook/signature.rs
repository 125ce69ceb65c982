//! Stripe's webhook signature (`Stripe-Signature: t=<unix time>,v1=<hex>,v1=<hex>,...`): an HMAC-SHA256 of
//! `<t>.<raw body>` under the endpoint's signing secret. Several `v1` entries arrive while a secret is being
//! rotated, and the service may hold several secrets; one match of any secret with any `v1` is enough.
//! Written here rather than taken from a Stripe crate: it is a few lines, and the whole crate would come with it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use saaschat_platform::Secret;

/// Stripe's default tolerance for the signature timestamp.
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header has no timestamp (t=)")]
    MissingTimestamp,
    #[error("the Stripe-Signature header has no v1 signature")]
    MissingSignature,
    #[error("the Stripe-Signature timestamp is not a number")]
    BadTimestamp,
    #[error("the signature timestamp is outside the tolerance of {0} seconds")]
    Stale(i64),
    #[error("no v1 signature matches the payload")]
    NoMatch,
}

/// The parts of a `Stripe-Signature` header that matter: the timestamp and the `v1` signatures (other schemes,
/// such as Stripe's test-only `v0`, are ignored).
#[derive(Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    pub signatures: Vec<Vec<u8>>,
}

/// Parses the header. A `v1` entry that is not hex can never match, so it is dropped rather than failing the
/// header: another entry may still match.
pub fn parse_header(header: &str) -> Result<SignatureHeader, SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else { continue };
        match key {
            "t" => timestamp = Some(value.parse::<i64>().map_err(|_| SignatureError::BadTimestamp)?),
            "v1" => {
                if let Ok(bytes) = hex::decode(value) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::MissingTimestamp)?;
    if signatures.is_empty() {
        return Err(SignatureError::MissingSignature);
    }
    Ok(SignatureHeader { timestamp, signatures })
}

/// Checks a webhook delivery: the header's timestamp within `tolerance_seconds` of `now` (either side: a clock
/// ahead of ours is as suspect as an old replay) and an HMAC match under one of `secrets`. Compared in constant
/// time by `hmac`'s `verify_slice`.
pub fn verify(
    header: &str,
    payload: &[u8],
    secrets: &[Secret<String>],
    now: i64,
    tolerance_seconds: i64,
) -> Result<i64, SignatureError> {
    let parsed = parse_header(header)?;
    if (now - parsed.timestamp).abs() > tolerance_seconds {
        return Err(SignatureError::Stale(tolerance_seconds));
    }
    for secret in secrets {
        let mac = signed_payload_mac(secret.expose().as_bytes(), parsed.timestamp, payload);
        if parsed.signatures.iter().any(|signature| mac.clone().verify_slice(signature).is_ok()) {
            return Ok(parsed.timestamp);
        }
    }
    Err(SignatureError::NoMatch)
}

fn signed_payload_mac(secret: &[u8], timestamp: i64, payload: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// The hex `v1` signature Stripe would send for `payload` at `timestamp`; tests and the benchmark sign with it.
pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    hex::encode(signed_payload_mac(secret.as_bytes(), timestamp, payload).finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_140_000;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;

    fn secrets(values: &[&str]) -> Vec<Secret<String>> {
        values.iter().map(|value| Secret::new(value.to_string())).collect()
    }

    fn header(timestamp: i64, signatures: &[String]) -> String {
        let mut header = format!("t={timestamp}");
        for signature in signatures {
            header.push_str(&format!(",v1={signature}"));
        }
        header
    }

    #[test]
    fn a_valid_signature_is_accepted_and_its_timestamp_returned() {
        let signed = header(NOW - 10, &[sign("whsec_a", NOW - 10, BODY)]);
        assert_eq!(verify(&signed, BODY, &secrets(&["whsec_a"]), NOW, 300), Ok(NOW - 10));
    }

    #[test]
    fn the_signature_matches_stripes_published_algorithm() {
        // HMAC-SHA256("whsec_test", "1700000000.{}"), computed independently with `openssl dgst -sha256 -hmac`.
        assert_eq!(
            sign("whsec_test", 1_700_000_000, b"{}"),
            "35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }

    #[test]
    fn a_tampered_body_is_refused() {
        let signed = header(NOW, &[sign("whsec_a", NOW, BODY)]);
        let tampered = br#"{"id":"evt_1","type":"invoice.paid","x":1}"#;
        assert_eq!(verify(&signed, tampered, &secrets(&["whsec_a"]), NOW, 300), Err(SignatureError::NoMatch));
    }

    #[test]
    fn a_changed_timestamp_is_refused() {
        let signed = header(NOW - 1, &[sign("whsec_a", NOW, BODY)]);
        assert_eq!(verify(&signed, BODY, &secrets(&["whsec_a"]), NOW, 300), Err(SignatureError::NoMatch));
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_stale_on_either_side() {
        for timestamp in [NOW - 301, NOW + 301] {
            let signed = header(timestamp, &[sign("whsec_a", timestamp, BODY)]);
            assert_eq!(verify(&signed, BODY, &secrets(&["whsec_a"]), NOW, 300), Err(SignatureError::Stale(300)));
        }
        for timestamp in [NOW - 300, NOW + 300] {
            let signed = header(timestamp, &[sign("whsec_a", timestamp, BODY)]);
            assert!(verify(&signed, BODY, &secrets(&["whsec_a"]), NOW, 300).is_ok());
        }
    }

    #[test]
    fn during_rotation_any_v1_under_any_secret_matches() {
        let both = header(NOW, &[sign("whsec_old", NOW, BODY), sign("whsec_new", NOW, BODY)]);
        assert!(verify(&both, BODY, &secrets(&["whsec_new"]), NOW, 300).is_ok());
        assert!(verify(&both, BODY, &secrets(&["whsec_old"]), NOW, 300).is_ok());
        let new_only = header(NOW, &[sign("whsec_new", NOW, BODY)]);
        assert!(verify(&new_only, BODY, &secrets(&["whsec_old", "whsec_new"]), NOW, 300).is_ok());
        assert_eq!(
            verify(&new_only, BODY, &secrets(&["whsec_old", "whsec_other"]), NOW, 300),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn a_wrong_secret_is_refused() {
        let signed = header(NOW, &[sign("whsec_attacker", NOW, BODY)]);
        assert_eq!(verify(&signed, BODY, &secrets(&["whsec_a"]), NOW, 300), Err(SignatureError::NoMatch));
        assert_eq!(verify(&signed, BODY, &[], NOW, 300), Err(SignatureError::NoMatch));
    }

    #[test]
    fn malformed_headers_are_named() {
        let signature = sign("whsec_a", NOW, BODY);
        assert_eq!(parse_header(&format!("v1={signature}")), Err(SignatureError::MissingTimestamp));
        assert_eq!(parse_header(&format!("t={NOW}")), Err(SignatureError::MissingSignature));
        assert_eq!(parse_header(&format!("t={NOW},v0={signature}")), Err(SignatureError::MissingSignature));
        assert_eq!(parse_header(&format!("t=yesterday,v1={signature}")), Err(SignatureError::BadTimestamp));
        assert_eq!(parse_header("t=1,v1=zz"), Err(SignatureError::MissingSignature));
        assert_eq!(parse_header(""), Err(SignatureError::MissingTimestamp));
    }

    #[test]
    fn unknown_schemes_and_spaces_are_tolerated() {
        let signature = sign("whsec_a", NOW, BODY);
        let parsed = parse_header(&format!("t={NOW}, v0=abc, v1={signature}, foo")).expect("parses");
        assert_eq!(parsed.timestamp, NOW);
        assert_eq!(parsed.signatures.len(), 1);
    }
}
