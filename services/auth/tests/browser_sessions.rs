//! Browser sessions over HTTP: the refresh token only ever in an `HttpOnly` cookie scoped to the refresh path,
//! refresh by cookie from the tenant's own origin only, and sign-out that clears the cookie.

mod support;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};
use support::{AuthServer, PASSWORD};

const ORIGIN: &str = "https://chat.acme.example";

/// A request as the web UI sends it: opted in, from the tenant's origin.
fn browser(server: &AuthServer, path: &str) -> reqwest::RequestBuilder {
    server
        .client
        .post(server.url(path))
        .header("x-saaschat-session", "cookie")
        .header("origin", ORIGIN)
        .header("sec-fetch-site", "same-origin")
}

/// The refresh token a response set, and the whole `Set-Cookie` line.
fn cookie_of(response: &reqwest::Response) -> (String, String) {
    let line = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|line| line.starts_with("saaschat_refresh="))
        .expect("a session cookie")
        .to_string();
    let value = line.trim_start_matches("saaschat_refresh=").split(';').next().expect("value").to_string();
    (value, line)
}

async fn body(response: reqwest::Response) -> Value {
    response.json().await.unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_token_lives_in_an_http_only_cookie_that_only_the_tenants_pages_can_use() {
    let server = AuthServer::start().await;
    let response = browser(&server, "/v1/auth/signup")
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("sign up");
    assert_eq!(response.status(), StatusCode::CREATED);
    let (token, line) = cookie_of(&response);
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/v1/auth/refresh"] {
        assert!(line.contains(attribute), "{line} lacks {attribute}");
    }
    let tokens = body(response).await;
    assert!(tokens.get("refreshToken").is_none(), "no script sees the refresh token: {tokens}");
    assert!(tokens["accessToken"].is_string());
    assert_eq!(tokens["user"]["email"], "ada@example.com");

    // Refresh by cookie: a new access token and a rotated cookie.
    let response = browser(&server, "/v1/auth/refresh")
        .header(COOKIE, format!("theme=dark; saaschat_refresh={token}"))
        .send()
        .await
        .expect("refresh");
    assert_eq!(response.status(), StatusCode::OK);
    let (rotated, _) = cookie_of(&response);
    assert_ne!(rotated, token);
    let refreshed = body(response).await;
    assert!(refreshed.get("refreshToken").is_none());
    let access = refreshed["accessToken"].as_str().expect("access token").to_string();
    assert_eq!(server.get("/v1/auth/me", &access).await.0, StatusCode::OK);

    // Forged requests: another origin, a cross-site fetch, no Origin, or the cookie without the opt-in header
    // (a plain form post) are refused, and none of them uses the token up.
    for (origin, site) in [
        (Some("https://evil.example"), Some("cross-site")),
        (Some(ORIGIN), Some("cross-site")),
        (Some("https://chat.acme.example.evil.example"), None),
        (None, None),
    ] {
        let mut request = server
            .client
            .post(server.url("/v1/auth/refresh"))
            .header("x-saaschat-session", "cookie")
            .header(COOKIE, format!("saaschat_refresh={rotated}"));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(site) = site {
            request = request.header("sec-fetch-site", site);
        }
        let response = request.send().await.expect("forged");
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin:?} {site:?}");
        assert_eq!(body(response).await["type"], "https://saaschat.io/problems/cross-site-request");
    }
    let form = server
        .client
        .post(server.url("/v1/auth/refresh"))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .header(COOKIE, format!("saaschat_refresh={rotated}"))
        .body("a=b")
        .send()
        .await
        .expect("form");
    assert!(form.status().is_client_error());
    assert!(form.headers().get(SET_COOKIE).is_none());

    // The token survived every forgery: the page still refreshes with it.
    let response = browser(&server, "/v1/auth/refresh")
        .header(COOKIE, format!("saaschat_refresh={rotated}"))
        .send()
        .await
        .expect("refresh");
    assert_eq!(response.status(), StatusCode::OK);
    let (current, _) = cookie_of(&response);
    let access = body(response).await["accessToken"].as_str().expect("access").to_string();

    // Without a cookie, or with two, there is no session; the answer clears the cookie.
    let response = browser(&server, "/v1/auth/refresh").send().await.expect("refresh");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie_of(&response).1.contains("Max-Age=0"));
    let response = browser(&server, "/v1/auth/refresh")
        .header(COOKIE, format!("saaschat_refresh={current}; saaschat_refresh=other"))
        .send()
        .await
        .expect("refresh");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Sign-out ends the session and clears the cookie; the old cookie then refreshes nothing.
    let response = browser(&server, "/v1/auth/signout").bearer_auth(&access).send().await.expect("sign out");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(cookie_of(&response).1.contains("Max-Age=0"));
    let response = browser(&server, "/v1/auth/refresh")
        .header(COOKIE, format!("saaschat_refresh={current}"))
        .send()
        .await
        .expect("refresh");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie_of(&response).1.contains("Max-Age=0"), "a dead session's cookie is cleared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_password_change_and_other_clients_keep_their_own_ways() {
    let server = AuthServer::start().await;
    // A client that does not opt in gets the refresh token in the body, as before, and no cookie.
    let tokens = server.sign_up("ada@example.com").await;
    assert!(tokens["refreshToken"].is_string());

    let response = browser(&server, "/v1/auth/signin")
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status(), StatusCode::OK);
    let (first, _) = cookie_of(&response);
    let access = body(response).await["accessToken"].as_str().expect("access").to_string();

    // Changing the password ends every session and starts a new one, in the cookie.
    let response = browser(&server, "/v1/auth/password")
        .bearer_auth(&access)
        .json(&json!({"currentPassword": PASSWORD, "newPassword": "another long and quiet river"}))
        .send()
        .await
        .expect("change password");
    assert_eq!(response.status(), StatusCode::OK);
    let (second, _) = cookie_of(&response);
    assert!(body(response).await.get("refreshToken").is_none());
    let stale = browser(&server, "/v1/auth/refresh")
        .header(COOKIE, format!("saaschat_refresh={first}"))
        .send()
        .await
        .expect("refresh");
    assert_eq!(stale.status(), StatusCode::UNAUTHORIZED);
    let fresh = browser(&server, "/v1/auth/refresh")
        .header(COOKIE, format!("saaschat_refresh={second}"))
        .send()
        .await
        .expect("refresh");
    assert_eq!(fresh.status(), StatusCode::OK);

    // A wrong password in cookie mode is the same problem as without it, and sets no cookie.
    let response = browser(&server, "/v1/auth/signin")
        .json(&json!({"email": "ada@example.com", "password": "not the password at all"}))
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get(SET_COOKIE).is_none());
}
