//! The auth service over HTTP, against real PostgreSQL and Redis.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use saaschat_platform::auth::{ApiKeyVerifier, AuthError, HttpApiKeyVerifier, Role};
use serde_json::{Value, json};
use sha2::Sha256;
use support::{AuthServer, Options, PASSWORD, read, write_signing_key};

fn access(tokens: &Value) -> String {
    tokens["accessToken"].as_str().expect("access token").to_string()
}

fn refresh_token(tokens: &Value) -> String {
    tokens["refreshToken"].as_str().expect("refresh token").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_verify_refresh_rotation_reuse_and_sign_out() {
    let server = AuthServer::start().await;
    let tokens = server.sign_up("Ada@Example.com").await;
    assert_eq!(tokens["user"]["role"], "owner", "the first user owns the tenant");
    assert_eq!(tokens["user"]["email"], "ada@example.com");
    assert_eq!(tokens["tokenType"], "Bearer");
    assert_eq!(tokens["expiresIn"], 900);
    let (status, me) = server.get("/v1/auth/me", &access(&tokens)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["emailVerified"], false);

    let token = server.emailed_token("ada@example.com", "verify-email").await;
    let (status, _) = server.post("/v1/auth/verify-email", json!({"token": token})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, problem) = server.post("/v1/auth/verify-email", json!({"token": token})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "single use: {problem}");
    assert_eq!(server.get("/v1/auth/me", &access(&tokens)).await.1["emailVerified"], true);

    let first_refresh = refresh_token(&tokens);
    let (status, rotated) = server.post("/v1/auth/refresh", json!({"refreshToken": first_refresh})).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(refresh_token(&rotated), first_refresh);
    let (status, rotated_again) =
        server.post("/v1/auth/refresh", json!({"refreshToken": refresh_token(&rotated)})).await;
    assert_eq!(status, StatusCode::OK);

    // The first token again: someone kept a copy. The whole family ends, including its newest tokens.
    let (status, problem) = server.post("/v1/auth/refresh", json!({"refreshToken": first_refresh})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(problem["detail"].as_str().is_some_and(|detail| detail.contains("already used")), "{problem}");
    let (status, _) = server.post("/v1/auth/refresh", json!({"refreshToken": refresh_token(&rotated_again)})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the newest refresh token of the family is revoked too");
    let (status, _) = server.get("/v1/auth/me", &access(&rotated_again)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "its access tokens stop working at once");

    // Sign-out ends the session: the access token stops working now, not in 15 minutes.
    let (_, session) = server.sign_in("ada@example.com", PASSWORD).await;
    let (status, _) = server.call(Method::POST, "/v1/auth/signout", Some(&access(&session)), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server.get("/v1/auth/me", &access(&session)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server.post("/v1/auth/refresh", json!({"refreshToken": refresh_token(&session)})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The verification email went through the outbox to the Redis stream the email worker reads.
    let mut redis = redis::Client::open(server.redis.url())
        .expect("redis")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut published = 0usize;
    for _ in 0..50 {
        published = redis::cmd("XLEN").arg("saaschat:emails").query_async(&mut redis).await.expect("xlen");
        if published > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(published, 1);
    assert_eq!(server.stop().await, saaschat_platform::http::Drained::Complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_sign_ups_make_exactly_one_owner() {
    let server = AuthServer::start().await;
    let sign_ups = (0..8).map(|n| {
        let (client, url) = (server.client.clone(), server.url("/v1/auth/signup"));
        tokio::spawn(async move {
            let response = client
                .post(url)
                .json(&json!({"email": format!("user{n}@example.com"), "password": PASSWORD}))
                .send()
                .await
                .expect("sign up");
            read(response).await
        })
    });
    let mut owners = 0;
    for sign_up in sign_ups.collect::<Vec<_>>() {
        let (status, body) = sign_up.await.expect("task");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        owners += usize::from(body["user"]["role"] == "owner");
    }
    assert_eq!(owners, 1);
    assert_eq!(server.count("SELECT count(*) FROM auth.users WHERE role = 'owner'").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_problem_and_changes_nothing() {
    let server = AuthServer::start().await;
    server.sign_up("ada@example.com").await;
    let before = server.count("SELECT count(*) FROM auth.users").await;
    let raw = |body: Vec<u8>| {
        let request = server.client.post(server.url("/v1/auth/signup")).header("content-type", "application/json");
        async move { read(request.body(body).send().await.expect("send")).await }
    };
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        ("malformed", b"{\"email\": \"eve@example.com\", \"password\": }".to_vec(), StatusCode::BAD_REQUEST),
        ("truncated", b"{\"email\": \"eve@example.com\", \"pass".to_vec(), StatusCode::BAD_REQUEST),
        (
            "lone surrogate",
            br#"{"email": "eve\ud800@example.com", "password": "a long and quiet river"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong type",
            br#"{"email": 42, "password": "a long and quiet river"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "null",
            br#"{"email": null, "password": "a long and quiet river"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown field",
            br#"{"email": "eve@example.com", "password": "a long and quiet river", "role": "owner"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "sql",
            br#"{"email": "' OR 1=1; DROP TABLE auth.users; --", "password": "a long and quiet river"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "header injection",
            br#"{"email": "eve@example.com\r\nBcc: all@example.com", "password": "a long and quiet river"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "zero-width",
            "{\"email\": \"eve\u{200b}@example.com\", \"password\": \"a long and quiet river\"}".as_bytes().to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "common password",
            br#"{"email": "eve@example.com", "password": "password123"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "short password",
            br#"{"email": "eve@example.com", "password": "short"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (name, body, expected) in cases {
        let (status, problem) = raw(body).await;
        assert_eq!(status, expected, "{name}: {problem}");
        assert!(problem["title"].is_string() && problem["status"] == expected.as_u16(), "{name}: {problem}");
    }
    let (status, problem) = support::post_oversized(&server.base, "/v1/auth/signup", 10 * 1024 * 1024).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "10 MiB: {problem}");
    // The right content type is required.
    let response = server.client.post(server.url("/v1/auth/signup")).body("{}").send().await.expect("send");
    assert_eq!(read(response).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // SQL-looking sign-in is just a wrong password.
    let (status, _) = server.sign_in("ada@example.com' --", "' OR '1'='1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Reset tokens: empty, null, made up, SQL.
    for (token, expected) in [
        (json!(""), StatusCode::BAD_REQUEST),
        (json!(null), StatusCode::UNPROCESSABLE_ENTITY),
        (json!("x".repeat(43)), StatusCode::BAD_REQUEST),
        (json!("' OR 1=1 --"), StatusCode::BAD_REQUEST),
    ] {
        let (status, problem) = server
            .post("/v1/auth/password-reset/confirm", json!({"token": token, "newPassword": "another long river"}))
            .await;
        assert_eq!(status, expected, "{token}: {problem}");
    }
    let (status, _) = server.post("/v1/auth/refresh", json!({"refreshToken": ""})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.count("SELECT count(*) FROM auth.users").await, before, "nothing was created");
    assert_eq!(server.count("SELECT count(*) FROM auth.users WHERE password_hash IS NULL").await, 0);
    // Unicode that is valid is kept as given (lower-cased), not mangled.
    let tokens = server.sign_up("Zoë@Exämple.de").await;
    assert_eq!(tokens["user"]["email"], "zoë@exämple.de");
}

fn forge(header: Value, claims: Value, signature: &[u8]) -> String {
    let part = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    format!("{}.{}.{}", part(&header), part(&claims), URL_SAFE_NO_PAD.encode(signature))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_misused_tokens_are_refused() {
    let server = AuthServer::start().await;
    let tokens = server.sign_up("ada@example.com").await;
    let genuine = access(&tokens);
    let mut parts = genuine.split('.');
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().expect("header")).expect("b64")).expect("json");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().expect("claims")).expect("b64")).expect("json");
    let kid = header["kid"].as_str().expect("kid");
    let with = |changes: Value| {
        let mut changed = claims.clone();
        for (name, value) in changes.as_object().expect("object") {
            changed[name] = value.clone();
        }
        changed
    };

    // alg none, and HS256 keyed with the public key (the classic confusion).
    let none = forge(json!({"alg": "none", "typ": "JWT", "kid": kid}), claims.clone(), b"");
    let public = std::fs::read(server.key_dir.path().join("public.pem")).expect("public key");
    let hs_header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let unsigned =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(hs_header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut mac = Hmac::<Sha256>::new_from_slice(&public).expect("hmac");
    mac.update(unsigned.as_bytes());
    let hs256 = format!("{unsigned}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));

    // Genuinely signed by another key with our kid.
    let other_dir = tempfile::tempdir().expect("dir");
    write_signing_key(other_dir.path(), kid);
    let other = saaschat_auth::keys::SigningKey::load(other_dir.path()).expect("other key");
    let now = chrono::Utc::now().timestamp();
    let sign_other = |claims: Value| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(kid.to_string());
        other.sign(&header, &claims).expect("sign")
    };
    let foreign = sign_other(claims.clone());
    // And claims changed after signing with the genuine signature kept.
    let tampered = {
        let mut parts = genuine.split('.');
        let (head, _, signature) = (parts.next().expect("h"), parts.next(), parts.next().expect("s"));
        format!(
            "{head}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(with(json!({"role": "owner", "sub": "someone-else"})).to_string())
        )
    };
    let cases = [
        ("alg none", none),
        ("HS256 with the public key", hs256),
        ("foreign key", foreign),
        ("tampered claims", tampered),
        ("refresh token as access token", refresh_token(&tokens)),
        ("garbage", "not.a.token".to_string()),
    ];
    for (name, token) in cases {
        let (status, problem) = server.get("/v1/auth/me", &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {problem}");
    }

    // Correctly signed with the service's own key, but with wrong claims: re-sign with the mounted key.
    let own = saaschat_auth::keys::SigningKey::load(server.key_dir.path()).expect("own key");
    let sign_own = |claims: Value| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(own.kid.clone());
        own.sign(&header, &claims).expect("sign")
    };
    assert_eq!(server.get("/v1/auth/me", &sign_own(claims.clone())).await.0, StatusCode::OK, "the control case passes");
    for (name, changes) in [
        ("wrong audience", json!({"aud": "someone-else"})),
        ("wrong issuer", json!({"iss": "https://evil.example"})),
        ("expired", json!({"exp": now - 3600, "iat": now - 7200, "nbf": now - 7200})),
        ("not yet valid", json!({"nbf": now + 3600})),
        ("refresh type", json!({"typ": "refresh"})),
        ("other tenant", json!({"tenant": "globex"})),
    ] {
        let (status, problem) = server.get("/v1/auth/me", &sign_own(with(changes))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {problem}");
    }
    // One credential path: no query parameter, cookie or second header is read.
    let response =
        server.client.get(server.url(&format!("/v1/auth/me?access_token={genuine}"))).send().await.expect("send");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = server
        .client
        .get(server.url("/v1/auth/me"))
        .header("authorization", format!("Bearer {genuine}"))
        .header("authorization", format!("Bearer {genuine}"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "two Authorization headers are ambiguous");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_is_single_use_and_ends_every_session() {
    let server = AuthServer::start().await;
    let tokens = server.sign_up("ada@example.com").await;
    let (status, _) = server.post("/v1/auth/password-reset", json!({"email": "nobody@example.com"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the same answer for an unknown address");
    assert_eq!(server.count("SELECT count(*) FROM auth.outbox WHERE recipient = 'nobody@example.com'").await, 0);
    let (status, _) = server.post("/v1/auth/password-reset", json!({"email": "ADA@example.com"})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let token = server.emailed_token("ada@example.com", "reset-password").await;
    let (status, problem) =
        server.post("/v1/auth/password-reset/confirm", json!({"token": token, "newPassword": "password"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a common password: {problem}");
    let (status, _) = server
        .post("/v1/auth/password-reset/confirm", json!({"token": token, "newPassword": "a brand new river"}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server
        .post("/v1/auth/password-reset/confirm", json!({"token": token, "newPassword": "yet another river"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "used up");
    assert_eq!(server.get("/v1/auth/me", &access(&tokens)).await.0, StatusCode::UNAUTHORIZED, "sessions ended");
    assert_eq!(server.sign_in("ada@example.com", PASSWORD).await.0, StatusCode::UNAUTHORIZED);
    let (status, signed_in) = server.sign_in("ada@example.com", "a brand new river").await;
    assert_eq!(status, StatusCode::OK);

    // Changing the password needs the current one, ends the other sessions and starts a new one.
    let (_, other_session) = server.sign_in("ada@example.com", "a brand new river").await;
    let change = |current: &str, new: &str| json!({"currentPassword": current, "newPassword": new});
    let (status, _) = server
        .call(
            Method::POST,
            "/v1/auth/password",
            Some(&access(&signed_in)),
            Some(change("wrong one here", "a third river")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, new_session) = server
        .call(
            Method::POST,
            "/v1/auth/password",
            Some(&access(&signed_in)),
            Some(change("a brand new river", "a third river")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.get("/v1/auth/me", &access(&other_session)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(server.get("/v1/auth/me", &access(&signed_in)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(server.get("/v1/auth/me", &access(&new_session)).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_invitations_and_who_may_manage_whom() {
    let server = AuthServer::start_with(Options { seats: 4, ..Options::default() }).await;
    let owner = access(&server.sign_up("owner@example.com").await);
    let invite = |token: String, email: &str, role: &str| {
        let body = json!({"email": email, "role": role});
        let server = &server;
        async move { server.call(Method::POST, "/v1/users/invitations", Some(&token), Some(body)).await }
    };
    let (status, admin_user) = invite(owner.clone(), "admin@example.com", "admin").await;
    assert_eq!(status, StatusCode::CREATED, "{admin_user}");
    assert_eq!(admin_user["active"], false);
    let (status, _) = invite(owner.clone(), "boss@example.com", "owner").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "one owner");
    let token = server.emailed_token("admin@example.com", "invitation").await;
    let (status, admin) =
        server.post("/v1/auth/invitations/accept", json!({"token": token, "password": "the admin's own river"})).await;
    assert_eq!(status, StatusCode::OK, "{admin}");
    let admin = access(&admin);
    let member = access(&server.sign_up("member@example.com").await);
    let member_id = server.get("/v1/auth/me", &member).await.1["id"].as_str().expect("id").to_string();
    let admin_id = admin_user["id"].as_str().expect("id").to_string();
    let owner_id = server.get("/v1/auth/me", &owner).await.1["id"].as_str().expect("id").to_string();
    let patch = |token: &str, id: &str, body: Value| {
        let (server, token, path) = (&server, token.to_string(), format!("/v1/users/{id}"));
        async move { server.call(Method::PATCH, &path, Some(&token), Some(body)).await }
    };

    assert_eq!(
        patch(&member, &member_id, json!({"role": "admin"})).await.0,
        StatusCode::FORBIDDEN,
        "no self-promotion"
    );
    assert_eq!(patch(&member, &admin_id, json!({"disabled": true})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(patch(&admin, &admin_id, json!({"role": "member"})).await.0, StatusCode::FORBIDDEN, "not yourself");
    assert_eq!(patch(&admin, &owner_id, json!({"disabled": true})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(patch(&admin, &member_id, json!({"role": "owner"})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(patch(&admin, &member_id, json!({"role": "root"})).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(patch(&admin, &member_id, json!({})).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        patch(&admin, "00000000-0000-0000-0000-000000000000", json!({"disabled": true})).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(patch(&admin, "not-a-uuid", json!({"disabled": true})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(server.get("/v1/users", &member).await.0, StatusCode::FORBIDDEN);
    assert_eq!(server.count("SELECT count(*) FROM auth.users WHERE role = 'member'").await, 1, "nothing changed");

    let (status, promoted) = patch(&admin, &member_id, json!({"role": "admin"})).await;
    assert_eq!((status, promoted["role"].as_str()), (StatusCode::OK, Some("admin")));
    assert_eq!(server.get("/v1/auth/me", &member).await.0, StatusCode::UNAUTHORIZED, "sessions end on a role change");
    let (status, disabled) = patch(&owner, &member_id, json!({"disabled": true})).await;
    assert_eq!((status, disabled["disabled"].as_bool()), (StatusCode::OK, Some(true)));
    assert_eq!(server.sign_in("member@example.com", PASSWORD).await.0, StatusCode::FORBIDDEN);

    let (status, page) = server.get("/v1/users?limit=2", &owner).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["users"].as_array().map(Vec::len), Some(2));
    let after = page["nextAfter"].as_str().expect("a next page");
    let (_, rest) = server.get(&format!("/v1/users?limit=2&after={after}"), &owner).await;
    assert_eq!(rest["users"].as_array().map(Vec::len), Some(1));
    assert_eq!(server.get("/v1/users?limit=0", &owner).await.0, StatusCode::UNPROCESSABLE_ENTITY);

    // Seats: owner, admin, member (disabled, so free) and one more fit in 4; the fifth does not.
    server.sign_up("fourth@example.com").await;
    server.sign_up("fifth@example.com").await;
    let (status, problem) =
        server.post("/v1/auth/signup", json!({"email": "sixth@example.com", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_shown_once_scoped_to_their_owner_and_verified_for_other_services() {
    let server = AuthServer::start().await;
    let ada = access(&server.sign_up("ada@example.com").await);
    let bob = access(&server.sign_up("bob@example.com").await);
    let (status, created) = server
        .call(Method::POST, "/v1/api-keys", Some(&ada), Some(json!({"name": "laptop", "scopes": ["chat"]})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().expect("the key").to_string();
    assert!(key.starts_with(created["prefix"].as_str().expect("prefix")));
    let (_, listed) = server.get("/v1/api-keys", &ada).await;
    assert!(!listed.to_string().contains(&key), "the key is never shown again");
    assert_eq!(
        server.count("SELECT count(*) FROM auth.api_keys WHERE encode(key_hash, 'escape') LIKE '%sk-saaschat%'").await,
        0
    );

    // The verifier every other service uses.
    let verifier = HttpApiKeyVerifier::new(&server.base, support::TENANT, Duration::from_secs(5)).expect("verifier");
    let verified = verifier.verify(&key).await.expect("valid");
    assert_eq!(verified.role, Role::Owner);
    assert_eq!(verifier.verify("sk-saaschat-made-up").await, Err(AuthError::InvalidApiKey));
    let other_tenant = HttpApiKeyVerifier::new(&server.base, "globex", Duration::from_secs(5)).expect("verifier");
    assert_eq!(other_tenant.verify(&key).await, Err(AuthError::WrongTenant));

    // A key does not manage keys, and Bob cannot revoke Ada's key by its id.
    let (status, _) = server.call(Method::POST, "/v1/api-keys", Some(&key), Some(json!({"name": "escalate"}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "API keys are not accepted by the auth service");
    let id = created["id"].as_str().expect("id");
    let (status, _) = server.call(Method::DELETE, &format!("/v1/api-keys/{id}"), Some(&bob), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.post("/internal/v1/api-keys/verify", json!({"key": key})).await;
    assert_eq!(status, StatusCode::OK, "still valid");
    let (status, _) = server.call(Method::DELETE, &format!("/v1/api-keys/{id}"), Some(&ada), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server.post("/internal/v1/api-keys/verify", json!({"key": key})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked");
    let (_, listed) = server.get("/v1/api-keys", &ada).await;
    assert!(listed["keys"][0]["revokedAt"].is_string());
    assert!(listed["keys"][0]["lastUsedAt"].is_string());

    let past = json!({"name": "old", "expiresAt": "2020-01-01T00:00:00Z"});
    assert_eq!(
        server.call(Method::POST, "/v1/api-keys", Some(&ada), Some(past)).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let wider = json!({"name": "wide", "scopes": ["admin"]});
    assert_eq!(
        server.call(Method::POST, "/v1/api-keys", Some(&ada), Some(wider)).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_is_slowed_without_locking_the_real_user_out() {
    let server = AuthServer::start_with(Options { trusted_proxy_hops: 1, ..Options::default() }).await;
    server.sign_up("ada@example.com").await;
    let attempt = |password: &str, address: &str| {
        let request = server
            .client
            .post(server.url("/v1/auth/signin"))
            .header("x-forwarded-for", address)
            .json(&json!({"email": "ada@example.com", "password": password}));
        async move {
            let response = request.send().await.expect("send");
            let retry_after =
                response.headers().get("retry-after").map(|value| value.to_str().expect("ascii").to_string());
            (read(response).await.0, retry_after)
        }
    };
    for _ in 0..5 {
        assert_eq!(attempt("not the password", "203.0.113.66").await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, retry_after) = attempt("not the password", "203.0.113.66").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after.is_some_and(|seconds| seconds.parse::<u64>().is_ok_and(|s| s >= 1)));
    let (status, _) = attempt(PASSWORD, "203.0.113.66").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "even the right password waits at the attacker's address");
    let (status, _) = attempt(PASSWORD, "198.51.100.7").await;
    assert_eq!(status, StatusCode::OK, "the real user elsewhere signs in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_logs_nobody_out_and_the_api_is_described() {
    let server = AuthServer::start().await;
    let before = access(&server.sign_up("ada@example.com").await);
    let jwks = |server: &AuthServer| {
        let request = server.client.get(server.url("/.well-known/jwks.json"));
        async move { request.send().await.expect("jwks").json::<Value>().await.expect("json") }
    };
    let kids = |jwks: &Value| -> Vec<String> {
        jwks["keys"].as_array().expect("keys").iter().map(|key| key["kid"].as_str().expect("kid").to_string()).collect()
    };
    assert_eq!(kids(&jwks(&server).await), ["key-1"]);

    write_signing_key(server.key_dir.path(), "key-2");
    let mut published = Vec::new();
    for _ in 0..50 {
        published = kids(&jwks(&server).await);
        if published.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(published, ["key-2", "key-1"], "the new key, and the previous one while its tokens live");
    assert_eq!(server.get("/v1/auth/me", &before).await.0, StatusCode::OK, "old tokens still work");
    let (_, after) = server.sign_in("ada@example.com", PASSWORD).await;
    let header =
        access(&after).split('.').next().map(|part| URL_SAFE_NO_PAD.decode(part).expect("b64")).expect("header");
    assert_eq!(serde_json::from_slice::<Value>(&header).expect("json")["kid"], "key-2");

    let document: Value =
        server.client.get(server.url("/v1/auth/openapi.json")).send().await.expect("get").json().await.expect("json");
    assert!(document["openapi"].as_str().is_some_and(|version| version.starts_with("3.")));
    for path in
        ["/v1/auth/signup", "/v1/auth/signin", "/v1/auth/refresh", "/v1/auth/me", "/v1/api-keys", "/v1/users/{id}"]
    {
        assert!(document["paths"][path].is_object(), "{path} is documented");
    }
}

/// schemathesis (from PyPI, `scripts/tools/python-venv`) generates requests from `/v1/auth/openapi.json`, valid and
/// not, signed in and not; no answer may be a server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error() {
    let cache = std::env::var("SAASCHAT_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/saaschat"));
    let schemathesis = cache.join("venv/bin/schemathesis");
    assert!(schemathesis.exists(), "{} is missing: run scripts/tools/python-venv", schemathesis.display());
    let server = AuthServer::start_with(Options { trusted_proxy_hops: 0, seats: 10_000 }).await;
    let token = access(&server.sign_up("owner@example.com").await);
    let report = tempfile::tempdir().expect("report dir");
    let output = tokio::process::Command::new(&schemathesis)
        .arg("run")
        .arg(server.url("/v1/auth/openapi.json"))
        .args(["--checks", "not_a_server_error", "--max-examples", "30", "--seed", "20261126", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing", "--request-timeout", "20", "--no-color"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .arg("--report-dir")
        .arg(report.path())
        .args(["--generation-database", "none"])
        // Nothing of the run (reports, caches) lands in the clone.
        .current_dir(report.path())
        .output()
        .await
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains(&token), "the token is not echoed");
}
