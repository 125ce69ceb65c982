//! Browser sessions: the web UI keeps its access token in memory only, and its refresh token where no script can
//! read it, in an `HttpOnly; Secure; SameSite=Strict` cookie sent to the refresh endpoint alone.
//!
//! A request opts in with `X-Saaschat-Session: cookie`. Then every answer that carries a refresh token (sign-up,
//! sign-in, refresh, password change, accepted invitation) carries it as that cookie instead of in the body, and
//! `POST /v1/auth/refresh` takes it from the cookie. The cookie alone authenticates nothing: without the header
//! the refresh endpoint wants the token in the body, as for any other client.
//!
//! Cross-site request forgery against the one cookie-authenticated request is refused three times over:
//! `SameSite=Strict` keeps the cookie off cross-site requests; the custom header cannot be sent cross-origin
//! without a CORS preflight, which no saaschat service answers; and an opted-in request must come from the
//! tenant's own origin (`Origin`, and `Sec-Fetch-Site: same-origin` when the browser sends fetch metadata).
//! Sign-out, in either mode, also clears the cookie.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, COOKIE, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use saaschat_platform::Problem;
use serde_json::{Value, json};

/// The header a browser client sends to keep its refresh token in the cookie.
pub const SESSION_HEADER: &str = "x-saaschat-session";
pub const SESSION_HEADER_VALUE: &str = "cookie";
/// The cookie's name and the one path it is sent to.
pub const REFRESH_COOKIE: &str = "saaschat_refresh";
pub const REFRESH_PATH: &str = "/v1/auth/refresh";
pub const SIGN_OUT_PATH: &str = "/v1/auth/signout";
/// How long the browser keeps the cookie: a session's lifetime (the server's expiry is what counts).
pub const COOKIE_MAX_AGE_SECONDS: i64 = 30 * 24 * 3600;
/// Token answers are a few hundred bytes; anything larger is not one to rewrite.
const MAX_TOKEN_BODY: usize = 64 * 1024;

/// The origin pages of the tenant are served from, as browsers write it in `Origin`.
#[derive(Clone, Debug)]
pub struct TenantOrigin(url::Origin);

impl TenantOrigin {
    /// The origin of the tenant's public URL; `None` if the URL cannot be parsed (no browser request is then
    /// accepted in cookie mode).
    pub fn from_url(url: &str) -> Option<TenantOrigin> {
        url::Url::parse(url).ok().map(|url| TenantOrigin(url.origin())).filter(|origin| origin.0.is_tuple())
    }

    fn matches(&self, origin: &str) -> bool {
        url::Url::parse(origin).is_ok_and(|url| url.origin() == self.0)
    }
}

/// Why an opted-in request is not taken for one of the tenant's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CrossSite {
    #[error("the tenant's URL is not configured, so no browser session can be checked")]
    NoTenantOrigin,
    #[error("the Origin is not this tenant's")]
    ForeignOrigin,
    #[error("a browser session request must carry an Origin header")]
    NoOrigin,
    #[error("Sec-Fetch-Site says the request is not from this site")]
    NotSameOrigin,
}

impl From<CrossSite> for Problem {
    fn from(refusal: CrossSite) -> Problem {
        Problem::typed(StatusCode::FORBIDDEN, "cross-site-request", "The request did not come from this site")
            .with_detail(refusal.to_string())
    }
}

/// Whether an opted-in request comes from a page of the tenant's own origin.
pub fn check_same_origin(headers: &HeaderMap, tenant: Option<&TenantOrigin>) -> Result<(), CrossSite> {
    let tenant = tenant.ok_or(CrossSite::NoTenantOrigin)?;
    match headers.get(ORIGIN).and_then(|value| value.to_str().ok()) {
        Some(origin) if tenant.matches(origin) => {}
        Some(_) => return Err(CrossSite::ForeignOrigin),
        None => return Err(CrossSite::NoOrigin),
    }
    match headers.get("sec-fetch-site").map(HeaderValue::as_bytes) {
        None | Some(b"same-origin") => Ok(()),
        Some(_) => Err(CrossSite::NotSameOrigin),
    }
}

fn opted_in(headers: &HeaderMap) -> bool {
    headers
        .get(SESSION_HEADER)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(SESSION_HEADER_VALUE.as_bytes()))
}

/// The refresh token from the request's cookies; several cookies of the name are refused as ambiguous.
pub fn refresh_cookie(headers: &HeaderMap) -> Option<String> {
    let mut found = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|cookie| cookie.name() == REFRESH_COOKIE)
        .map(|cookie| cookie.value().to_string());
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// The `Set-Cookie` value that stores `token` (an empty token with `max_age` 0 clears it).
pub fn set_cookie(token: &str, max_age_seconds: i64) -> HeaderValue {
    let cookie = Cookie::build((REFRESH_COOKIE, token.to_string()))
        .path(REFRESH_PATH)
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .max_age(cookie::time::Duration::seconds(max_age_seconds))
        .build();
    // A cookie built from a token of URL-safe characters is always a valid header value.
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn clear_cookie() -> HeaderValue {
    set_cookie("", 0)
}

/// Takes the refresh token out of a token answer: the body without it, and the token.
pub fn take_refresh_token(body: &[u8]) -> Option<(Vec<u8>, String)> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let token = value.as_object_mut()?.remove("refreshToken")?;
    let token = token.as_str()?.to_string();
    Some((serde_json::to_vec(&value).ok()?, token))
}

fn is_success_json(response: &Response) -> bool {
    response.status().is_success()
        && response.headers().get(CONTENT_TYPE).is_some_and(|value| value.as_bytes().starts_with(b"application/json"))
}

/// Middleware on the auth routes (see the module documentation).
pub async fn sessions(State(tenant): State<Option<TenantOrigin>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if !opted_in(request.headers()) {
        let mut response = next.run(request).await;
        if path == SIGN_OUT_PATH && response.status().is_success() {
            response.headers_mut().append(SET_COOKIE, clear_cookie());
        }
        return response;
    }
    if let Err(refusal) = check_same_origin(request.headers(), tenant.as_ref()) {
        return Problem::from(refusal).into_response();
    }
    let request = if path == REFRESH_PATH {
        let Some(token) = refresh_cookie(request.headers()) else {
            let mut response =
                Problem::unauthorized("no browser session: sign in again (the session cookie is missing)")
                    .into_response();
            response.headers_mut().append(SET_COOKIE, clear_cookie());
            return response;
        };
        let (mut parts, _) = request.into_parts();
        parts.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        parts.headers.remove(CONTENT_LENGTH);
        Request::from_parts(parts, Body::from(json!({ "refreshToken": token }).to_string()))
    } else {
        request
    };
    let response = next.run(request).await;
    if path == SIGN_OUT_PATH && response.status().is_success() {
        let mut response = response;
        response.headers_mut().append(SET_COOKIE, clear_cookie());
        return response;
    }
    if path == REFRESH_PATH && response.status() == StatusCode::UNAUTHORIZED {
        let mut response = response;
        response.headers_mut().append(SET_COOKIE, clear_cookie());
        return response;
    }
    if !is_success_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_TOKEN_BODY).await else {
        return Problem::new(StatusCode::INTERNAL_SERVER_ERROR).into_response();
    };
    match take_refresh_token(&bytes) {
        Some((body, token)) => {
            parts.headers.remove(CONTENT_LENGTH);
            parts.headers.append(SET_COOKIE, set_cookie(&token, COOKIE_MAX_AGE_SECONDS));
            Response::from_parts(parts, Body::from(body))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn only_the_tenants_own_origin_may_use_a_browser_session() {
        let tenant = TenantOrigin::from_url("https://chat.acme.example/");
        let tenant = tenant.as_ref();
        assert!(check_same_origin(&headers(&[("origin", "https://chat.acme.example")]), tenant).is_ok());
        assert!(check_same_origin(&headers(&[("origin", "https://chat.acme.example:443")]), tenant).is_ok());
        assert!(
            check_same_origin(
                &headers(&[("origin", "https://chat.acme.example"), ("sec-fetch-site", "same-origin")]),
                tenant
            )
            .is_ok()
        );
        for bad in [
            vec![],
            vec![("origin", "https://evil.example")],
            vec![("origin", "http://chat.acme.example")],
            vec![("origin", "https://chat.acme.example.evil.example")],
            vec![("origin", "null")],
            vec![("origin", "https://chat.acme.example"), ("sec-fetch-site", "cross-site")],
            vec![("origin", "https://chat.acme.example"), ("sec-fetch-site", "same-site")],
        ] {
            let refusal = check_same_origin(&headers(&bad), tenant).expect_err("refused");
            assert_eq!(Problem::from(refusal).status, 403, "{bad:?}");
        }
        assert!(check_same_origin(&headers(&[("origin", "https://x")]), None).is_err());
        assert!(TenantOrigin::from_url("not a url").is_none());
    }

    #[test]
    fn the_cookie_is_http_only_secure_strict_and_scoped_to_the_refresh_path() {
        let value = set_cookie("abc_DEF-123", COOKIE_MAX_AGE_SECONDS);
        let text = value.to_str().expect("ascii");
        for part in ["saaschat_refresh=abc_DEF-123", "HttpOnly", "Secure", "SameSite=Strict", "Path=/v1/auth/refresh"] {
            assert!(text.contains(part), "{text} lacks {part}");
        }
        assert!(text.contains("Max-Age=2592000"));
        assert!(clear_cookie().to_str().expect("ascii").contains("Max-Age=0"));
    }

    #[test]
    fn the_refresh_token_is_read_from_exactly_one_cookie() {
        assert_eq!(refresh_cookie(&headers(&[("cookie", "a=1; saaschat_refresh=tok; b=2")])), Some("tok".into()));
        assert_eq!(
            refresh_cookie(&headers(&[("cookie", "a=1"), ("cookie", "saaschat_refresh=tok")])),
            Some("tok".into())
        );
        assert_eq!(refresh_cookie(&headers(&[("cookie", "saaschat_refresh=one; saaschat_refresh=two")])), None);
        assert_eq!(refresh_cookie(&headers(&[("cookie", "other=1")])), None);
        assert_eq!(refresh_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn token_answers_lose_their_refresh_token_and_keep_the_rest() {
        let body = br#"{"accessToken":"a","tokenType":"Bearer","expiresIn":900,"refreshToken":"r","user":{"id":"u"}}"#;
        let (rest, token) = take_refresh_token(body).expect("a token answer");
        assert_eq!(token, "r");
        let rest: Value = serde_json::from_slice(&rest).expect("json");
        assert_eq!(rest, json!({"accessToken": "a", "tokenType": "Bearer", "expiresIn": 900, "user": {"id": "u"}}));
        assert!(take_refresh_token(br#"{"id":"u"}"#).is_none());
        assert!(take_refresh_token(b"[]").is_none());
        assert!(take_refresh_token(br#"{"refreshToken":7}"#).is_none());
    }
}
