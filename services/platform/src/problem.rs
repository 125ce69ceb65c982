//! RFC 9457 problem responses (`application/problem+json`), and the mapping of every way a request can be
//! refused (extractor rejections, the body limit, unknown routes, methods) to one, so that bad input always gets
//! a problem body: never plain text, never a 500.

use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const CONTENT_TYPE_PROBLEM: &str = "application/problem+json";
/// Where the problem types of saaschat are documented; a type is this base plus a slug.
pub const TYPE_BASE: &str = "https://saaschat.io/problems/";
/// The most of a plain-text error body that is carried over into a problem's `detail`.
const MAX_CARRIED_DETAIL: usize = 4096;

/// A problem detail (RFC 9457). Build one with [`Problem::new`] or a helper and return it from a handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type; `about:blank` when the status code says it all.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Extension members, serialized beside the standard ones.
    #[serde(flatten)]
    #[schema(ignore)]
    pub extensions: Map<String, Value>,
    /// Response headers to send with the problem (`WWW-Authenticate`, `Retry-After`, `Allow`).
    #[serde(skip)]
    #[schema(ignore)]
    pub headers: HeaderMap,
}

impl Problem {
    /// A problem of type `about:blank` whose title is the status' reason phrase.
    pub fn new(status: StatusCode) -> Problem {
        Problem {
            problem_type: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: None,
            instance: None,
            extensions: Map::new(),
            headers: HeaderMap::new(),
        }
    }

    /// A problem of a saaschat type: `slug` is appended to [`TYPE_BASE`].
    pub fn typed(status: StatusCode, slug: &str, title: &str) -> Problem {
        Problem { problem_type: format!("{TYPE_BASE}{slug}"), title: title.into(), ..Problem::new(status) }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Problem {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_instance(mut self, instance: impl Into<String>) -> Problem {
        self.instance = Some(instance.into());
        self
    }

    pub fn with_extension(mut self, name: &str, value: impl Into<Value>) -> Problem {
        self.extensions.insert(name.into(), value.into());
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Problem {
        self.headers.insert(name, value);
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST).with_detail(detail)
    }

    pub fn not_found() -> Problem {
        Problem::new(StatusCode::NOT_FOUND)
    }

    /// 401 with the `WWW-Authenticate: Bearer` challenge. `detail` must not contain the credential.
    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::typed(StatusCode::UNAUTHORIZED, "unauthorized", "Authentication required")
            .with_detail(detail)
            .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN).with_detail(detail)
    }

    pub fn payload_too_large(limit_bytes: usize) -> Problem {
        Problem::typed(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "Request body too large")
            .with_detail(format!("the request body exceeds the limit of {limit_bytes} bytes"))
            .with_extension("limit", limit_bytes)
    }

    /// The server did not answer within the request timeout.
    pub fn timeout() -> Problem {
        Problem::typed(StatusCode::SERVICE_UNAVAILABLE, "timeout", "Request timed out")
            .with_detail("the request did not complete in time; retry later")
            .with_header(HeaderName::from_static("retry-after"), HeaderValue::from_static("1"))
    }

    /// A 500 that says nothing about its cause; the cause is logged here instead.
    pub fn internal(error: &dyn std::error::Error) -> Problem {
        tracing::error!(error = %error, "internal error");
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The problem for a rejection whose status and text axum decided.
    fn from_rejection(status: StatusCode, text: String) -> Problem {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => {
                Problem::typed(status, "body-too-large", "Request body too large").with_detail(text)
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Problem::typed(status, "unsupported-media-type", "Unsupported media type").with_detail(text)
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                Problem::typed(status, "invalid-body", "The request body is not valid").with_detail(text)
            }
            status if status.is_server_error() => Problem::new(status),
            status => Problem::new(status).with_detail(text),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut headers = self.headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_PROBLEM));
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        (status, headers, body).into_response()
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} {}", self.status, self.title)?;
        if let Some(detail) = &self.detail {
            write!(formatter, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl From<JsonRejection> for Problem {
    /// Syntax errors are 400, well-formed JSON of the wrong shape 422, a missing `Content-Type:
    /// application/json` 415, a body over the limit 413.
    fn from(rejection: JsonRejection) -> Problem {
        let (status, text) = (rejection.status(), rejection.body_text());
        match rejection {
            JsonRejection::JsonSyntaxError(_) => {
                Problem::typed(status, "malformed-json", "The request body is not valid JSON").with_detail(text)
            }
            _ => Problem::from_rejection(status, text),
        }
    }
}

impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Problem {
        Problem::from_rejection(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Problem {
        Problem::from_rejection(rejection.status(), rejection.body_text())
    }
}

/// `axum::Json` whose rejections are problems. Use it instead of `axum::Json` to extract request bodies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    /// A valid body is read by serde_json alone. axum's extractor tracks the path of every field it reads
    /// (serde_path_to_error), a few percent of a busy service's CPU, so it runs only when the body is refused:
    /// on the content type, or to name the field at fault.
    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
            return Ok(Json(value));
        }
        let body = Bytes::from_request(request, state).await.map_err(JsonRejection::from)?;
        if let Ok(value) = serde_json::from_slice(&body) {
            return Ok(Json(value));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&body)?;
        Ok(Json(value))
    }
}

/// The content types axum's JSON extractor accepts: `application/json` and `application/*+json`.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(essence) = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
    else {
        return false;
    };
    essence.strip_prefix("application/").is_some_and(|subtype| subtype == "json" || subtype.ends_with("+json"))
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Whether an error response must be rewritten as a problem: it is an error and its body is plain text or empty
/// (what axum's built-in rejections, the body limit layer and the 404/405 fallbacks produce). Bodies of another
/// type are left alone, for example the OpenAI-shaped errors of the chat service's compatible API.
pub fn needs_problem_body(status: StatusCode, content_type: Option<&str>) -> bool {
    let plain = match content_type {
        None => true,
        Some(content_type) => content_type.trim_start().to_ascii_lowercase().starts_with("text/plain"),
    };
    (status.is_client_error() || status.is_server_error()) && plain
}

/// Middleware that turns every plain-text or empty error response into a problem with the same status and
/// headers. Client errors keep the text as `detail`; server errors never show it.
pub async fn normalize_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let content_type = response.headers().get(CONTENT_TYPE).and_then(|value| value.to_str().ok());
    if !needs_problem_body(response.status(), content_type) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_CARRIED_DETAIL).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let mut problem = if parts.status == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::typed(parts.status, "body-too-large", "Request body too large")
    } else {
        Problem::new(parts.status)
    };
    if !text.is_empty() && parts.status.is_client_error() {
        problem.detail = Some(text);
    }
    let mut response = problem.into_response();
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
}

/// The problem body of a response built by this module, for tests and clients.
pub async fn read_problem(body: Body) -> Option<Problem> {
    let bytes = axum::body::to_bytes(body, 1 << 20).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::post;
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Message {
        #[allow(dead_code)]
        text: String,
    }

    async fn echo(Json(_message): Json<Message>) -> StatusCode {
        StatusCode::NO_CONTENT
    }

    fn app() -> Router {
        Router::new().route("/messages", post(echo)).layer(axum::middleware::from_fn(normalize_errors))
    }

    async fn send(body: &'static str, content_type: Option<&str>) -> (StatusCode, HeaderMap, Option<Problem>) {
        let mut request = Request::post("/messages");
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let response = app().oneshot(request.body(Body::from(body)).expect("request")).await.expect("response");
        let (parts, body) = response.into_parts();
        (parts.status, parts.headers, read_problem(body).await)
    }

    fn problem_type(problem: &Option<Problem>) -> &str {
        problem.as_ref().map(|problem| problem.problem_type.as_str()).unwrap_or("<no problem body>")
    }

    #[test]
    fn problems_serialize_as_rfc_9457() {
        let problem = Problem::typed(StatusCode::FORBIDDEN, "out-of-credit", "You do not have enough credit")
            .with_detail("Your current balance is 30, but that costs 50.")
            .with_instance("/account/12345/msgs/abc")
            .with_extension("balance", 30);
        assert_eq!(
            serde_json::to_value(&problem).expect("json"),
            json!({
                "type": "https://saaschat.io/problems/out-of-credit",
                "title": "You do not have enough credit",
                "status": 403,
                "detail": "Your current balance is 30, but that costs 50.",
                "instance": "/account/12345/msgs/abc",
                "balance": 30,
            })
        );
        assert_eq!(
            serde_json::to_value(Problem::not_found()).expect("json"),
            json!({
                "type": "about:blank", "title": "Not Found", "status": 404,
            })
        );
    }

    #[test]
    fn a_problem_response_has_the_problem_content_type_and_its_headers() {
        let response = Problem::unauthorized("no bearer token").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[CONTENT_TYPE], CONTENT_TYPE_PROBLEM);
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn internal_errors_do_not_reveal_their_cause() {
        let error = std::io::Error::other("password authentication failed for user saaschat");
        let problem = Problem::internal(&error);
        assert_eq!(problem.status, 500);
        assert_eq!(problem.detail, None);
    }

    #[test]
    fn which_error_responses_are_rewritten() {
        assert!(needs_problem_body(StatusCode::PAYLOAD_TOO_LARGE, Some("text/plain; charset=utf-8")));
        assert!(needs_problem_body(StatusCode::METHOD_NOT_ALLOWED, None));
        assert!(!needs_problem_body(StatusCode::BAD_REQUEST, Some("application/json")));
        assert!(!needs_problem_body(StatusCode::BAD_REQUEST, Some(CONTENT_TYPE_PROBLEM)));
        assert!(!needs_problem_body(StatusCode::OK, Some("text/plain")));
    }

    #[tokio::test]
    async fn malformed_json_is_a_400_problem() {
        let (status, headers, problem) = send("{\"text\": ", Some("application/json")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers[CONTENT_TYPE], CONTENT_TYPE_PROBLEM);
        assert_eq!(problem_type(&problem), "https://saaschat.io/problems/malformed-json");
    }

    #[tokio::test]
    async fn json_of_the_wrong_shape_is_a_422_problem_naming_the_field() {
        let (status, _, problem) = send("{\"txt\": 1}", Some("application/json")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem_type(&problem), "https://saaschat.io/problems/invalid-body");
        let detail = problem.and_then(|problem| problem.detail).unwrap_or_default();
        assert!(detail.contains("missing field `text`"), "{detail}");
    }

    #[tokio::test]
    async fn a_valid_body_is_accepted_with_any_json_content_type() {
        for content_type in ["application/json", "Application/JSON; charset=utf-8", "application/merge-patch+json"] {
            let (status, _, _) = send("{\"text\": \"hi\"}", Some(content_type)).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{content_type}");
        }
    }

    #[tokio::test]
    async fn a_wrongly_typed_field_is_named_by_its_path() {
        let (status, _, problem) = send("{\"text\": 7}", Some("application/json")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let detail = problem.and_then(|problem| problem.detail).unwrap_or_default();
        assert!(detail.contains("text: invalid type: integer `7`"), "{detail}");
    }

    #[test]
    fn json_content_types_are_told_apart() {
        let headers = |value: &'static str| HeaderMap::from_iter([(CONTENT_TYPE, HeaderValue::from_static(value))]);
        assert!(is_json(&headers("application/json")));
        assert!(is_json(&headers(" application/json ; charset=utf-8")));
        assert!(is_json(&headers("application/problem+json")));
        assert!(!is_json(&headers("text/json")));
        assert!(!is_json(&headers("application/jsonx")));
        assert!(!is_json(&headers("text/plain")));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn a_missing_content_type_is_a_415_problem() {
        let (status, _, problem) = send("{\"text\": \"hi\"}", None).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(problem_type(&problem), "https://saaschat.io/problems/unsupported-media-type");
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_get_problems_and_keep_their_headers() {
        let response = app().oneshot(Request::get("/nowhere").body(Body::empty()).expect("request")).await;
        let response = response.expect("response");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[CONTENT_TYPE], CONTENT_TYPE_PROBLEM);

        let response = app().oneshot(Request::get("/messages").body(Body::empty()).expect("request")).await;
        let response = response.expect("response");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()["allow"], "POST");
        let problem = read_problem(response.into_body()).await.expect("problem");
        assert_eq!(problem.title, "Method Not Allowed");
    }

    #[tokio::test]
    async fn plain_text_server_errors_lose_their_text() {
        let app = Router::new()
            .route("/boom", post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "db password is hunter2") }))
            .layer(axum::middleware::from_fn(normalize_errors));
        let response = app.oneshot(Request::post("/boom").body(Body::empty()).expect("request")).await;
        let problem = read_problem(response.expect("response").into_body()).await.expect("problem");
        assert_eq!(problem.status, 500);
        assert_eq!(problem.detail, None);
    }
}
