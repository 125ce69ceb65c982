//! Access-token verification throughput on one core: what every authenticated request to every service pays.
//! Run with `cargo bench -p saaschat-platform --bench jwt_verify`; ops/s per core = 1 / the reported time.
//! `first_verification` is a token never seen before (signature and claims checked); `repeat_verification` is
//! the same token again, as a client sends it with every request until it expires.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use saaschat_platform::auth::jwks::FetchFuture;
use saaschat_platform::auth::{JwksSource, JwtSettings, JwtVerifier, KeyCache};
use serde_json::json;

const ISSUER: &str = "http://auth.tenant-acme.svc:8080";

struct FixedJwks(JwkSet);

impl JwksSource for FixedJwks {
    fn fetch(&self) -> FetchFuture<'_> {
        let set = self.0.clone();
        Box::pin(async move { Ok(set) })
    }
}

fn verification(criterion: &mut Criterion) {
    let mut seed = [0u8; 32];
    fastrand::fill(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    let mut pkcs8 =
        vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    pkcs8.extend_from_slice(&key.to_bytes());
    let jwks: JwkSet = serde_json::from_value(json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "bench",
        "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
    }]}))
    .expect("jwks");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let encoding = EncodingKey::from_ed_der(&pkcs8);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("bench".into());
    let sign = |jti: u64| {
        let claims = json!({
            "iss": ISSUER, "aud": "saaschat", "sub": "0192f0c1-7a4e-7b3c-9d2e-5f6a7b8c9d0e", "tenant": "acme",
            "role": "member", "typ": "access", "sid": "0192f0c1-7a4e-7b3c-9d2e-000000000001",
            "jti": jti.to_string(), "iat": now, "nbf": now, "exp": now + 900,
        });
        encode(&header, &claims, &encoding).expect("sign")
    };
    let token = sign(0);

    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let new_verifier = || {
        let keys = KeyCache::new(Arc::new(FixedJwks(jwks.clone())), Duration::from_secs(60));
        let verifier = JwtVerifier::new(keys, JwtSettings::new(ISSUER, "acme"));
        runtime.block_on(verifier.verify(&token)).expect("the token verifies");
        verifier
    };
    criterion.bench_function("first_verification", |bench| {
        bench.iter_custom(|iterations| {
            let verifier = new_verifier();
            let tokens: Vec<String> = (1..=iterations).map(sign).collect();
            let started = std::time::Instant::now();
            for token in &tokens {
                runtime.block_on(verifier.verify(std::hint::black_box(token))).expect("valid");
            }
            started.elapsed()
        })
    });
    let verifier = new_verifier();
    criterion.bench_function("repeat_verification", |bench| {
        bench.iter(|| runtime.block_on(verifier.verify(std::hint::black_box(&token))).expect("valid"))
    });
}

criterion_group!(benches, verification);
criterion_main!(benches);
