//! `POST /v1/billing/webhooks/stripe`: verifies the signature over the raw body, stores the event in the queue
//! (once per event id) and answers 200 at once; the [`crate::events`] workers do the work.

pub mod signature;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use saaschat_platform::Problem;
use serde::Deserialize;
use serde_json::json;

use crate::app::{AppState, not_configured};
use crate::events::store::{self, NewEvent};
use crate::stripe::objects::is_object_id;

pub const SIGNATURE_HEADER: &str = "stripe-signature";

/// The fields of Stripe's event envelope that are kept apart from the payload.
#[derive(Debug, Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    data: EnvelopeData,
}

#[derive(Debug, Deserialize)]
struct EnvelopeData {
    object: EnvelopeObject,
}

#[derive(Debug, Deserialize)]
struct EnvelopeObject {
    #[serde(default)]
    id: Option<String>,
}

/// Reads the verified body as an event: well-formed ids, a known creation time.
pub fn parse_event(body: &[u8]) -> Result<NewEvent, String> {
    let payload: serde_json::Value = serde_json::from_slice(body).map_err(|error| format!("not JSON: {error}"))?;
    let envelope: Envelope =
        serde_json::from_value(payload.clone()).map_err(|error| format!("not a Stripe event: {error}"))?;
    if !is_object_id(&envelope.id) || !envelope.id.starts_with("evt_") {
        return Err(format!("{:?} is not an event id", envelope.id));
    }
    if envelope.event_type.is_empty() || envelope.event_type.len() > 100 {
        return Err("the event type is missing or too long".into());
    }
    let created = DateTime::<Utc>::from_timestamp(envelope.created, 0).ok_or("the creation time is out of range")?;
    Ok(NewEvent {
        id: envelope.id,
        event_type: envelope.event_type,
        object_id: envelope.data.object.id,
        created,
        payload,
    })
}

pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, Problem> {
    let stripe = state.stripe.clone().ok_or_else(not_configured)?;
    let rejected = |problem: Problem| {
        state.metrics.webhooks.with_label_values(&["rejected"]).inc();
        problem
    };
    let header = headers
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| rejected(signature_problem("the Stripe-Signature header is missing")))?;
    signature::verify(header, &body, &stripe.webhook_secrets, Utc::now().timestamp(), state.webhook_tolerance_seconds)
        .map_err(|error| {
            tracing::info!(reason = %error, "webhook refused");
            rejected(signature_problem(&error.to_string()))
        })?;
    let event = parse_event(&body).map_err(|reason| {
        rejected(Problem::typed(StatusCode::BAD_REQUEST, "invalid-event", "The event is not valid").with_detail(reason))
    })?;
    let mut conn = state.pool.acquire().await.map_err(|error| Problem::internal(&error))?;
    let new = store::insert(&mut conn, &event).await.map_err(|error| Problem::internal(&error))?;
    if new {
        state.metrics.webhooks.with_label_values(&["accepted"]).inc();
        state.event_stored.notify_one();
    } else {
        state.metrics.webhooks.with_label_values(&["duplicate"]).inc();
        tracing::info!(event = %event.id, "event received again; already queued");
    }
    Ok((StatusCode::OK, axum::Json(json!({ "received": true, "duplicate": !new }))).into_response())
}

fn signature_problem(detail: &str) -> Problem {
    Problem::typed(StatusCode::BAD_REQUEST, "invalid-signature", "The webhook signature is not valid")
        .with_detail(detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_with_their_object() {
        let event = parse_event(
            br#"{"id":"evt_1","type":"customer.subscription.updated","created":1764140000,
                 "data":{"object":{"id":"sub_1","object":"subscription"}}}"#,
        )
        .expect("valid");
        assert_eq!(event.id, "evt_1");
        assert_eq!(event.event_type, "customer.subscription.updated");
        assert_eq!(event.object_id.as_deref(), Some("sub_1"));
        assert_eq!(event.created.timestamp(), 1_764_140_000);
        assert_eq!(event.payload["data"]["object"]["object"], "subscription");
    }

    #[test]
    fn malformed_events_are_refused_with_a_reason() {
        let cases: [(&[u8], &str); 4] = [
            (b"{", "not JSON"),
            (br#"{"id":"evt_1","type":"x","created":1}"#, "not a Stripe event"),
            (br#"{"id":"../x","type":"x","created":1,"data":{"object":{}}}"#, "is not an event id"),
            (br#"{"id":"evt_1","type":"","created":1,"data":{"object":{}}}"#, "event type"),
        ];
        for (body, expected) in cases {
            let error = parse_event(body).expect_err("invalid");
            assert!(error.contains(expected), "{error}");
        }
    }
}
