//! SSE responses: `X-Accel-Buffering: no` and `Cache-Control: no-cache` so proxies pass events on at once, a
//! keep-alive comment while nothing else is sent, and an end when the service shuts down (the gateway ends
//! its streams itself, so the server can drain within the grace period).

use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderValue;
use axum::http::header::CACHE_CONTROL;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::Value;

pub fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

pub fn response<S>(events: S, keep_alive: Duration) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let mut response =
        Sse::new(events).keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive")).into_response();
    let headers = response.headers_mut();
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
