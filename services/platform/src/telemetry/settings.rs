//! Deciding: the telemetry settings from the standard OpenTelemetry and Sentry environment variables. Every
//! error names the variable; values are never echoed, since headers and DSNs carry credentials.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{ConfigError, ENV_OTEL_SERVICE_NAME, SettingError};
use crate::secret::Secret;

pub const ENV_OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
pub const ENV_OTEL_TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
pub const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const ENV_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const ENV_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
pub const ENV_OTLP_TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
pub const ENV_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const ENV_OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
pub const ENV_OTLP_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
pub const ENV_OTLP_TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
pub const ENV_TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
pub const ENV_TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
pub const ENV_BSP_SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
pub const ENV_BSP_MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
pub const ENV_BSP_MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";
pub const ENV_SENTRY_DSN: &str = "SENTRY_DSN";
pub const ENV_SENTRY_ENVIRONMENT: &str = "SENTRY_ENVIRONMENT";

/// What telemetry a service sends beyond its logs. `None` parts cost nothing.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `OTEL_SERVICE_NAME` when set, else the name the service passed to [`super::init`].
    pub service_name: String,
    pub otlp: Option<OtlpSettings>,
    pub sentry: Option<SentrySettings>,
}

/// Where and how request spans are exported.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// The full URL spans are posted to (`.../v1/traces`).
    pub traces_url: url::Url,
    /// Sent with every export; values are marked sensitive because they usually carry an API key.
    pub headers: HeaderMap,
    pub timeout: Duration,
    pub sampler: Sampler,
    pub schedule_delay: Duration,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
}

/// Reporting of errors and panics to Sentry.
#[derive(Debug, Clone)]
pub struct SentrySettings {
    pub dsn: Secret<String>,
    pub environment: Option<String>,
}

/// The standard samplers (`OTEL_TRACES_SAMPLER`). The parent-based ones follow the caller's sampled flag when a
/// request continues a trace and apply their root rule otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

impl Sampler {
    /// Whether a span of `trace_id` is recorded and exported. `parent_sampled` is the caller's flag, `None` for a
    /// new trace.
    pub fn should_sample(self, parent_sampled: Option<bool>, trace_id: &[u8; 16]) -> bool {
        match (self, parent_sampled) {
            (Sampler::AlwaysOn, _) => true,
            (Sampler::AlwaysOff, _) => false,
            (Sampler::TraceIdRatio(ratio), _) => ratio_admits(ratio, trace_id),
            (
                Sampler::ParentBasedAlwaysOn | Sampler::ParentBasedAlwaysOff | Sampler::ParentBasedTraceIdRatio(_),
                Some(sampled),
            ) => sampled,
            (Sampler::ParentBasedAlwaysOn, None) => true,
            (Sampler::ParentBasedAlwaysOff, None) => false,
            (Sampler::ParentBasedTraceIdRatio(ratio), None) => ratio_admits(ratio, trace_id),
        }
    }
}

/// The rule of OpenTelemetry's `TraceIdRatioBased` sampler: the trace id's low 63 bits against the ratio, so
/// every service that sees the trace decides the same.
fn ratio_admits(ratio: f64, trace_id: &[u8; 16]) -> bool {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let random = u64::from_be_bytes(low) >> 1;
    let bound = (ratio.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64;
    random < bound
}

impl TelemetrySettings {
    /// Decides the settings from a lookup of environment variables. Empty values count as unset.
    pub fn from_lookup(
        default_service_name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<TelemetrySettings, ConfigError> {
        let get = |name: &str| lookup(name).map(|value| value.trim().to_string()).filter(|value| !value.is_empty());
        let mut errors = Vec::new();
        let service_name = get(ENV_OTEL_SERVICE_NAME).unwrap_or_else(|| default_service_name.to_string());
        let otlp = otlp_settings(&get, &mut errors);
        let sentry = sentry_settings(&get, &mut errors);
        if errors.is_empty() {
            Ok(TelemetrySettings { service_name, otlp, sentry })
        } else {
            Err(ConfigError::Settings(errors))
        }
    }
}

fn otlp_settings(get: &dyn Fn(&str) -> Option<String>, errors: &mut Vec<SettingError>) -> Option<OtlpSettings> {
    let disabled = match get(ENV_OTEL_SDK_DISABLED).map(|value| value.to_ascii_lowercase()) {
        None => false,
        Some(value) if value == "true" => true,
        Some(value) if value == "false" => false,
        Some(_) => {
            errors.push(invalid(ENV_OTEL_SDK_DISABLED, "expected true or false"));
            false
        }
    };
    let exporter_off = match get(ENV_OTEL_TRACES_EXPORTER).as_deref() {
        None | Some("otlp") => false,
        Some("none") => true,
        Some(other) => {
            errors.push(invalid(ENV_OTEL_TRACES_EXPORTER, format!("{other:?} is not supported; use otlp or none")));
            false
        }
    };
    let traces_url = traces_url(get, errors)?;
    if disabled || exporter_off {
        return None;
    }
    // The exporter speaks OTLP/HTTP with JSON bodies. Receivers of OTLP/HTTP accept JSON and binary protobuf
    // alike, so a configured http/protobuf is served as well; gRPC is a different port and wire protocol.
    for name in [ENV_OTLP_TRACES_PROTOCOL, ENV_OTLP_PROTOCOL] {
        if let Some(protocol) = get(name)
            && protocol != "http/json"
            && protocol != "http/protobuf"
        {
            errors.push(invalid(name, format!("{protocol:?} is not supported; use http/json or http/protobuf")));
        }
    }
    let headers = headers(get, errors);
    let timeout_name = if get(ENV_OTLP_TRACES_TIMEOUT).is_some() { ENV_OTLP_TRACES_TIMEOUT } else { ENV_OTLP_TIMEOUT };
    let timeout = Duration::from_millis(number(get, errors, timeout_name, 10_000, 1));
    let schedule_delay = Duration::from_millis(number(get, errors, ENV_BSP_SCHEDULE_DELAY, 5_000, 1));
    let max_queue_size = number(get, errors, ENV_BSP_MAX_QUEUE_SIZE, 2_048, 1) as usize;
    let max_export_batch_size = number(get, errors, ENV_BSP_MAX_EXPORT_BATCH_SIZE, 512, 1) as usize;
    let sampler = sampler(get, errors);
    Some(OtlpSettings { traces_url, headers, timeout, sampler, schedule_delay, max_queue_size, max_export_batch_size })
}

/// The traces URL: the signal-specific endpoint as it is, or the general endpoint with `v1/traces` appended, as
/// the OTLP exporter specification says. `None` (export off) when neither is set.
fn traces_url(get: &dyn Fn(&str) -> Option<String>, errors: &mut Vec<SettingError>) -> Option<url::Url> {
    let (name, text, append) = match (get(ENV_OTLP_TRACES_ENDPOINT), get(ENV_OTLP_ENDPOINT)) {
        (Some(endpoint), _) => (ENV_OTLP_TRACES_ENDPOINT, endpoint, false),
        (None, Some(endpoint)) => (ENV_OTLP_ENDPOINT, endpoint, true),
        (None, None) => return None,
    };
    let text = if append { format!("{}/v1/traces", text.trim_end_matches('/')) } else { text };
    match url::Url::parse(&text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Some(url),
        Ok(_) => {
            errors.push(invalid(name, "expected an http:// or https:// URL with a host"));
            None
        }
        Err(error) => {
            errors.push(invalid(name, format!("not a URL ({error})")));
            None
        }
    }
}

/// `key1=value1,key2=value2` with percent-encoded values (the W3C Baggage format the specification names).
fn headers(get: &dyn Fn(&str) -> Option<String>, errors: &mut Vec<SettingError>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    // The general headers first, so the signal-specific ones win for the same key.
    for name in [ENV_OTLP_HEADERS, ENV_OTLP_TRACES_HEADERS] {
        let Some(text) = get(name) else { continue };
        for (index, pair) in text.split(',').enumerate().filter(|(_, pair)| !pair.trim().is_empty()) {
            match parse_header(pair) {
                Some((key, value)) => {
                    headers.insert(key, value);
                }
                None => errors.push(invalid(
                    name,
                    format!("entry {} is not key=value with a valid header name and value", index + 1),
                )),
            }
        }
    }
    headers
}

fn parse_header(pair: &str) -> Option<(HeaderName, HeaderValue)> {
    let (key, value) = pair.split_once('=')?;
    let key = HeaderName::from_bytes(key.trim().as_bytes()).ok()?;
    let value = percent_decode(value.trim())?;
    let mut value = HeaderValue::from_str(&value).ok()?;
    value.set_sensitive(true);
    Some((key, value))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

fn number(
    get: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<SettingError>,
    name: &'static str,
    default: u64,
    minimum: u64,
) -> u64 {
    match get(name) {
        None => default,
        Some(text) => match text.parse::<u64>() {
            Ok(value) if value >= minimum => value,
            _ => {
                errors.push(invalid(name, format!("{text:?} is not a whole number of at least {minimum}")));
                default
            }
        },
    }
}

fn sampler(get: &dyn Fn(&str) -> Option<String>, errors: &mut Vec<SettingError>) -> Sampler {
    let mut ratio = || match get(ENV_TRACES_SAMPLER_ARG) {
        None => 1.0,
        Some(text) => match text.parse::<f64>() {
            Ok(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
            _ => {
                errors.push(invalid(ENV_TRACES_SAMPLER_ARG, format!("{text:?} is not a ratio between 0 and 1")));
                1.0
            }
        },
    };
    match get(ENV_TRACES_SAMPLER).as_deref() {
        None | Some("parentbased_always_on") => Sampler::ParentBasedAlwaysOn,
        Some("parentbased_always_off") => Sampler::ParentBasedAlwaysOff,
        Some("parentbased_traceidratio") => Sampler::ParentBasedTraceIdRatio(ratio()),
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::TraceIdRatio(ratio()),
        Some(other) => {
            errors.push(invalid(
                ENV_TRACES_SAMPLER,
                format!(
                    "{other:?} is not one of always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off, parentbased_traceidratio"
                ),
            ));
            Sampler::ParentBasedAlwaysOn
        }
    }
}

fn sentry_settings(get: &dyn Fn(&str) -> Option<String>, errors: &mut Vec<SettingError>) -> Option<SentrySettings> {
    let dsn = get(ENV_SENTRY_DSN)?;
    if let Err(reason) = check_dsn(&dsn) {
        errors.push(invalid(ENV_SENTRY_DSN, reason));
        return None;
    }
    Some(SentrySettings { dsn: Secret::new(dsn), environment: get(ENV_SENTRY_ENVIRONMENT) })
}

/// A DSN is `scheme://public_key@host[:port]/[path/]project_id`. The reason never contains the DSN.
fn check_dsn(dsn: &str) -> Result<(), String> {
    let url = url::Url::parse(dsn).map_err(|_| "not a URL".to_string())?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err("expected an http:// or https:// URL with a host".into());
    }
    if url.username().is_empty() {
        return Err("the public key (the user part of the URL) is missing".into());
    }
    let project = url.path_segments().and_then(|mut segments| segments.next_back()).unwrap_or_default();
    if project.is_empty() {
        return Err("the project id (the last path segment) is missing".into());
    }
    Ok(())
}

fn invalid(name: &'static str, reason: impl Into<String>) -> SettingError {
    SettingError::Invalid { name, reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(env: &[(&str, &str)]) -> Result<TelemetrySettings, ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TelemetrySettings::from_lookup("auth", |name| env.get(name).cloned())
    }

    fn otlp(env: &[(&str, &str)]) -> OtlpSettings {
        settings(env).expect("valid").otlp.expect("export on")
    }

    fn error(env: &[(&str, &str)]) -> String {
        settings(env).expect_err("invalid").to_string()
    }

    #[test]
    fn nothing_is_exported_or_reported_when_nothing_is_set() {
        let settings = settings(&[]).expect("valid");
        assert_eq!(settings.service_name, "auth");
        assert!(settings.otlp.is_none());
        assert!(settings.sentry.is_none());
    }

    #[test]
    fn the_general_endpoint_gets_the_traces_path_and_the_specific_one_is_used_as_it_is() {
        let general = otlp(&[(ENV_OTLP_ENDPOINT, "http://collector:4318/")]);
        assert_eq!(general.traces_url.as_str(), "http://collector:4318/v1/traces");
        let prefixed = otlp(&[(ENV_OTLP_ENDPOINT, "https://otlp.example.com/tenant-a")]);
        assert_eq!(prefixed.traces_url.as_str(), "https://otlp.example.com/tenant-a/v1/traces");
        let specific = otlp(&[
            (ENV_OTLP_ENDPOINT, "http://collector:4318"),
            (ENV_OTLP_TRACES_ENDPOINT, "http://traces:9999/custom"),
        ]);
        assert_eq!(specific.traces_url.as_str(), "http://traces:9999/custom");
    }

    #[test]
    fn defaults_follow_the_specification() {
        let settings = otlp(&[(ENV_OTLP_ENDPOINT, "http://collector:4318")]);
        assert_eq!(settings.sampler, Sampler::ParentBasedAlwaysOn);
        assert_eq!(settings.timeout, Duration::from_secs(10));
        assert_eq!(settings.schedule_delay, Duration::from_secs(5));
        assert_eq!(settings.max_queue_size, 2048);
        assert_eq!(settings.max_export_batch_size, 512);
        assert!(settings.headers.is_empty());
    }

    #[test]
    fn the_service_name_setting_wins_over_the_name_in_code() {
        assert_eq!(settings(&[(ENV_OTEL_SERVICE_NAME, "saaschat-auth")]).expect("valid").service_name, "saaschat-auth");
    }

    #[test]
    fn export_can_be_switched_off_while_an_endpoint_is_set() {
        for off in [(ENV_OTEL_SDK_DISABLED, "true"), (ENV_OTEL_TRACES_EXPORTER, "none")] {
            let settings = settings(&[(ENV_OTLP_ENDPOINT, "http://collector:4318"), off]).expect("valid");
            assert!(settings.otlp.is_none(), "{off:?}");
        }
    }

    #[test]
    fn headers_are_parsed_decoded_and_the_traces_ones_win() {
        let settings = otlp(&[
            (ENV_OTLP_ENDPOINT, "http://collector:4318"),
            (ENV_OTLP_HEADERS, "api-key=abc%20def, x-tenant = acme"),
            (ENV_OTLP_TRACES_HEADERS, "x-tenant=globex"),
        ]);
        assert_eq!(settings.headers["api-key"], "abc def");
        assert_eq!(settings.headers["x-tenant"], "globex");
        assert!(settings.headers["api-key"].is_sensitive());
    }

    #[test]
    fn bad_headers_name_the_setting_and_the_entry_but_not_the_value() {
        let message = error(&[
            (ENV_OTLP_ENDPOINT, "http://collector:4318"),
            (ENV_OTLP_HEADERS, "api-key=s3cret,no-equals-sign-s3cret"),
        ]);
        assert_eq!(
            message,
            "invalid configuration: OTEL_EXPORTER_OTLP_HEADERS is invalid: entry 2 is not key=value with a valid \
             header name and value"
        );
        let message = error(&[(ENV_OTLP_ENDPOINT, "http://collector:4318"), (ENV_OTLP_HEADERS, "bad key=s3cret")]);
        assert!(message.contains("OTEL_EXPORTER_OTLP_HEADERS is invalid: entry 1"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        let message = error(&[(ENV_OTLP_ENDPOINT, "http://collector:4318"), (ENV_OTLP_HEADERS, "key=%zz")]);
        assert!(message.contains("OTEL_EXPORTER_OTLP_HEADERS is invalid"), "{message}");
    }

    #[test]
    fn bad_endpoints_name_the_setting() {
        assert_eq!(
            error(&[(ENV_OTLP_ENDPOINT, "collector:4318")]),
            "invalid configuration: OTEL_EXPORTER_OTLP_ENDPOINT is invalid: expected an http:// or https:// URL \
             with a host"
        );
        let message = error(&[(ENV_OTLP_TRACES_ENDPOINT, "http://[::1")]);
        assert!(message.starts_with("invalid configuration: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is invalid: not a URL"));
    }

    #[test]
    fn samplers_are_read_with_their_ratio() {
        let endpoint = (ENV_OTLP_ENDPOINT, "http://collector:4318");
        for (name, expected) in [
            ("always_on", Sampler::AlwaysOn),
            ("always_off", Sampler::AlwaysOff),
            ("parentbased_always_on", Sampler::ParentBasedAlwaysOn),
            ("parentbased_always_off", Sampler::ParentBasedAlwaysOff),
            ("traceidratio", Sampler::TraceIdRatio(1.0)),
            ("parentbased_traceidratio", Sampler::ParentBasedTraceIdRatio(1.0)),
        ] {
            assert_eq!(otlp(&[endpoint, (ENV_TRACES_SAMPLER, name)]).sampler, expected, "{name}");
        }
        let ratio =
            otlp(&[endpoint, (ENV_TRACES_SAMPLER, "parentbased_traceidratio"), (ENV_TRACES_SAMPLER_ARG, "0.25")]);
        assert_eq!(ratio.sampler, Sampler::ParentBasedTraceIdRatio(0.25));
    }

    #[test]
    fn bad_samplers_and_ratios_name_the_setting() {
        let endpoint = (ENV_OTLP_ENDPOINT, "http://collector:4318");
        let message = error(&[endpoint, (ENV_TRACES_SAMPLER, "sometimes")]);
        assert!(message.starts_with("invalid configuration: OTEL_TRACES_SAMPLER is invalid: \"sometimes\" is not one"));
        let message = error(&[endpoint, (ENV_TRACES_SAMPLER, "traceidratio"), (ENV_TRACES_SAMPLER_ARG, "1.5")]);
        assert_eq!(
            message,
            "invalid configuration: OTEL_TRACES_SAMPLER_ARG is invalid: \"1.5\" is not a ratio between 0 and 1"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let message = error(&[
            (ENV_OTLP_ENDPOINT, "http://collector:4318"),
            (ENV_OTLP_PROTOCOL, "grpc"),
            (ENV_BSP_SCHEDULE_DELAY, "soon"),
            (ENV_SENTRY_DSN, "not a dsn"),
        ]);
        assert_eq!(
            message,
            "invalid configuration: OTEL_EXPORTER_OTLP_PROTOCOL is invalid: \"grpc\" is not supported; use http/json \
             or http/protobuf; OTEL_BSP_SCHEDULE_DELAY is invalid: \"soon\" is not a whole number of at least 1; \
             SENTRY_DSN is invalid: not a URL"
        );
    }

    #[test]
    fn sentry_is_on_with_a_dsn_and_bad_dsns_are_not_echoed() {
        let sentry =
            settings(&[(ENV_SENTRY_DSN, "https://abc123@o1.ingest.sentry.io/42"), (ENV_SENTRY_ENVIRONMENT, "staging")])
                .expect("valid")
                .sentry
                .expect("on");
        assert_eq!(sentry.dsn.expose(), "https://abc123@o1.ingest.sentry.io/42");
        assert_eq!(sentry.environment.as_deref(), Some("staging"));
        for (dsn, reason) in [
            ("https://o1.ingest.sentry.io/42", "the public key"),
            ("https://abc123@o1.ingest.sentry.io/", "the project id"),
            ("ftp://abc123@host/42", "expected an http:// or https:// URL"),
        ] {
            let message = error(&[(ENV_SENTRY_DSN, dsn)]);
            assert!(
                message.starts_with(&format!("invalid configuration: SENTRY_DSN is invalid: {reason}")),
                "{message}"
            );
            assert!(!message.contains("abc123"), "{message}");
        }
    }

    const TRACE: [u8; 16] =
        [0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36];

    #[test]
    fn parent_based_samplers_follow_the_caller_and_decide_roots_by_their_rule() {
        for sampler in
            [Sampler::ParentBasedAlwaysOn, Sampler::ParentBasedAlwaysOff, Sampler::ParentBasedTraceIdRatio(0.0)]
        {
            assert!(sampler.should_sample(Some(true), &TRACE), "{sampler:?}");
            assert!(!sampler.should_sample(Some(false), &TRACE), "{sampler:?}");
        }
        assert!(Sampler::ParentBasedAlwaysOn.should_sample(None, &TRACE));
        assert!(!Sampler::ParentBasedAlwaysOff.should_sample(None, &TRACE));
        assert!(!Sampler::ParentBasedTraceIdRatio(0.0).should_sample(None, &TRACE));
        assert!(Sampler::ParentBasedTraceIdRatio(1.0).should_sample(None, &TRACE));
    }

    #[test]
    fn plain_samplers_ignore_the_caller() {
        assert!(Sampler::AlwaysOn.should_sample(Some(false), &TRACE));
        assert!(!Sampler::AlwaysOff.should_sample(Some(true), &TRACE));
        assert!(!Sampler::TraceIdRatio(0.0).should_sample(Some(true), &TRACE));
    }

    #[test]
    fn the_ratio_decides_by_the_low_half_of_the_trace_id() {
        let mut low = TRACE;
        low[8..].copy_from_slice(&[0x00, 0, 0, 0, 0, 0, 0, 0x10]);
        let mut high = TRACE;
        high[8..].copy_from_slice(&[0xf0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(Sampler::TraceIdRatio(0.5).should_sample(None, &low));
        assert!(!Sampler::TraceIdRatio(0.5).should_sample(None, &high));
        // About the ratio of many random traces is kept.
        let kept = (0..10_000u32)
            .filter(|seed| {
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&(u64::from(*seed).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes());
                Sampler::TraceIdRatio(0.25).should_sample(None, &id)
            })
            .count();
        assert!((2_000..3_000).contains(&kept), "{kept}");
    }
}
