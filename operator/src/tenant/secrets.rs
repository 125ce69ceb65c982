//! Makes the tenant's Secrets exist: generated ones once (never overwritten), copied ones kept in step with
//! their sources. Secret values never reach a log line, an Event, a status or an error message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PartialObjectMeta, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::{Digest, Sha256};

use super::validate::SourceSecrets;
use crate::build::datastores::{POSTGRES_PORT, REDIS_PORT};
use crate::build::secrets::SecretSource;
use crate::build::{DesiredSecret, GeneratedSecret};
use crate::metrics::Metrics;
use crate::names::{Component, FIELD_MANAGER};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot generate key material")]
    Generate,
    #[error("Secret {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Generates the contents of a generated Secret for the tenant namespace `namespace`.
pub fn generate(kind: GeneratedSecret, namespace: &str) -> Result<BTreeMap<String, ByteString>, SecretError> {
    let random = SystemRandom::new();
    let data = match kind {
        GeneratedSecret::JwtSigningKey => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&random).map_err(|_| SecretError::Generate)?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| SecretError::Generate)?;
            // SubjectPublicKeyInfo of an Ed25519 key: the fixed algorithm header, then the 32 key bytes.
            let mut spki = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
            spki.extend_from_slice(pair.public_key().as_ref());
            let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(&spki)[..12]);
            BTreeMap::from([
                ("private.pem", pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()))),
                ("public.pem", pem::encode(&pem::Pem::new("PUBLIC KEY", spki))),
                ("kid", kid),
                ("algorithm", "EdDSA".to_string()),
            ])
        }
        GeneratedSecret::Postgres => {
            let password = password(&random)?;
            let host = format!("{}.{namespace}.svc", Component::Postgres.name());
            BTreeMap::from([
                ("username", "saaschat".to_string()),
                ("database", "saaschat".to_string()),
                ("url", format!("postgres://saaschat:{password}@{host}:{POSTGRES_PORT}/saaschat")),
                ("password", password),
            ])
        }
        GeneratedSecret::Redis => {
            let password = password(&random)?;
            let host = format!("{}.{namespace}.svc", Component::Redis.name());
            BTreeMap::from([("url", format!("redis://:{password}@{host}:{REDIS_PORT}/0")), ("password", password)])
        }
    };
    Ok(data.into_iter().map(|(key, value)| (key.to_string(), ByteString(value.into_bytes()))).collect())
}

/// 256 random bits, URL-safe so that it can stand inside connection URLs unescaped.
fn password(random: &SystemRandom) -> Result<String, SecretError> {
    let mut bytes = [0u8; 32];
    random.fill(&mut bytes).map_err(|_| SecretError::Generate)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The data of a copied Secret, or `None` while a source key is missing (validation reports that).
pub fn copied_data(keys: &[crate::build::CopiedKey], sources: &SourceSecrets) -> Option<BTreeMap<String, ByteString>> {
    keys.iter()
        .map(|copied| {
            let value = sources.get(&copied.source.name)?.as_ref()?.get(&copied.source.key)?;
            Some((copied.key.clone(), value.clone()))
        })
        .collect()
}

/// When each tenant Secret was last seen as it should be, and with which contents. Tenant Secrets are not
/// watched (that would need list/watch on every Secret of the cluster), so they are read back at most once
/// per resync interval instead of on every reconcile: a reconcile triggered by a Deployment's status change
/// then costs no Secret reads at all.
#[derive(Default)]
pub struct Verified {
    entries: Mutex<HashMap<NamespacedName, Seen>>,
}

/// A Secret's namespace and name.
type NamespacedName = (String, String);
/// When a Secret was last seen as it should be, and the digest of what it should hold then.
type Seen = (Instant, [u8; 32]);

impl Verified {
    fn is_fresh(&self, key: &NamespacedName, contents: [u8; 32], max_age: Duration) -> bool {
        self.entries
            .lock()
            .ok()
            .and_then(|entries| entries.get(key).copied())
            .is_some_and(|(at, seen)| seen == contents && at.elapsed() < max_age)
    }

    fn record(&self, key: NamespacedName, contents: [u8; 32]) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(key, (Instant::now(), contents));
        }
    }

    fn forget(&self, key: &NamespacedName) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }

    /// Forgets a namespace's Secrets (its tenant was deleted).
    pub fn forget_namespace(&self, namespace: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|(ns, _), _| ns != namespace);
        }
    }
}

/// The data of the source Secrets (in the operator's secret namespace), read with a `get` only when the
/// metadata watch shows a resourceVersion the cache has not read: a reconcile triggered by an owned object's
/// status then costs no Secret reads. A Secret the watch does not know is read every time (it may be newer than
/// the watch).
pub struct SourceCache {
    metadata: Store<PartialObjectMeta<Secret>>,
    data: Mutex<HashMap<String, CachedSource>>,
}

/// A source Secret's data as of a resourceVersion.
type CachedSource = (String, Option<BTreeMap<String, ByteString>>);

impl SourceCache {
    pub fn new(metadata: Store<PartialObjectMeta<Secret>>) -> SourceCache {
        SourceCache { metadata, data: Mutex::default() }
    }

    /// The resourceVersion the watch last saw for a Secret.
    fn watched_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.metadata.get(&ObjectRef::new(name).within(namespace)).and_then(|meta| meta.resource_version())
    }

    fn cached(&self, name: &str, version: &str) -> Option<Option<BTreeMap<String, ByteString>>> {
        let data = self.data.lock().ok()?;
        data.get(name).filter(|(cached_version, _)| cached_version == version).map(|(_, data)| data.clone())
    }

    /// The data of the named Secrets of `namespace` (`None` for a Secret that does not exist).
    pub async fn read(
        &self,
        api: &Api<Secret>,
        namespace: &str,
        names: &[String],
    ) -> Result<SourceSecrets, kube::Error> {
        let mut secrets = BTreeMap::new();
        for name in names {
            let watched = self.watched_version(namespace, name);
            if let Some(data) = watched.as_deref().and_then(|version| self.cached(name, version)) {
                secrets.insert(name.clone(), data);
                continue;
            }
            let secret = api.get_opt(name).await?;
            let version = secret.as_ref().and_then(|secret| secret.resource_version());
            let data = secret.map(|secret| secret.data.unwrap_or_default());
            if let (Some(version), Ok(mut cache)) = (version, self.data.lock()) {
                cache.insert(name.clone(), (version, data.clone()));
            }
            secrets.insert(name.clone(), data);
        }
        Ok(secrets)
    }
}

/// A digest of what a Secret should hold: for generated ones only that it exists, for copies their data.
fn expected_digest(data: Option<&BTreeMap<String, ByteString>>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for (key, value) in data.into_iter().flatten() {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(&value.0);
        hasher.update([0]);
    }
    hasher.finalize().into()
}

/// When `ensure` reads a Secret before writing it.
#[derive(Debug, Clone, Copy)]
pub struct ReadPolicy {
    /// A Secret seen as it should be this recently is not read again.
    pub max_age: Duration,
    /// The Secrets most likely do not exist yet (a tenant never reconciled): they are created without a read
    /// first, saving a round trip. One that exists after all is left alone if generated, and read, compared and
    /// replaced if need be if it is a copy.
    pub probably_missing: bool,
    /// The operator's access to the namespace's Secrets (its RoleBinding there) was granted a moment ago: the API
    /// server's authorizer may not know it yet, so a refusal is retried a few times before it counts.
    pub access_just_granted: bool,
}

/// Waits between attempts while a fresh RoleBinding reaches the API server's authorizer (its cache usually
/// catches up within milliseconds); about 1.5 seconds in all.
const ACCESS_GRANT_WAITS: [Duration; 6] = [
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
];

fn is_forbidden(error: &SecretError) -> bool {
    matches!(error, SecretError::Api { source: kube::Error::Api(status), .. } if status.code == 403)
}

/// Ensures every desired Secret exists with the right contents, all at the same time. Returns the number of
/// writes made.
pub async fn ensure(
    api: &Api<Secret>,
    desired: &[DesiredSecret],
    sources: &SourceSecrets,
    namespace: &str,
    metrics: &Metrics,
    verified: &Verified,
    policy: ReadPolicy,
) -> Result<usize, SecretError> {
    let written = futures::future::try_join_all(desired.iter().map(|secret| async move {
        let mut waits = ACCESS_GRANT_WAITS.iter();
        loop {
            match ensure_one(api, secret, sources, namespace, metrics, verified, policy).await {
                Err(error) if policy.access_just_granted && is_forbidden(&error) => match waits.next() {
                    Some(wait) => tokio::time::sleep(*wait).await,
                    None => return Err(error),
                },
                result => return result,
            }
        }
    }))
    .await?;
    Ok(written.into_iter().filter(|written| *written).count())
}

/// Deletes copies no longer referenced; one already gone counts as deleted.
pub async fn delete_copies(
    api: &Api<Secret>,
    names: &[String],
    namespace: &str,
    metrics: &Metrics,
    verified: &Verified,
) -> Result<(), SecretError> {
    for name in names {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => metrics.record_write_of("Secret", "delete"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => return Err(SecretError::Api { name: name.clone(), source }),
        }
        verified.forget(&(namespace.to_string(), name.clone()));
    }
    Ok(())
}

/// Ensures one Secret; returns whether it was written.
async fn ensure_one(
    api: &Api<Secret>,
    secret: &DesiredSecret,
    sources: &SourceSecrets,
    namespace: &str,
    metrics: &Metrics,
    verified: &Verified,
    policy: ReadPolicy,
) -> Result<bool, SecretError> {
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
    let name = secret.name().to_string();
    let api_error = |source| SecretError::Api { name: name.clone(), source };
    let copied = match &secret.source {
        SecretSource::Copied(keys) => Some(copied_data(keys, sources)),
        SecretSource::Generated(_) => None,
    };
    let cache_key = (namespace.to_string(), name.clone());
    let digest = expected_digest(copied.as_ref().and_then(|data| data.as_ref()));
    if verified.is_fresh(&cache_key, digest, policy.max_age) {
        return Ok(false);
    }
    let current = if policy.probably_missing { None } else { api.get_opt(&name).await.map_err(api_error)? };
    match &secret.source {
        SecretSource::Generated(kind) => {
            if current.is_some() {
                verified.record(cache_key, digest);
                return Ok(false);
            }
            let object = Secret {
                metadata: secret.meta.clone(),
                data: Some(generate(*kind, namespace)?),
                type_: Some("Opaque".into()),
                ..Secret::default()
            };
            match api.create(&params, &object).await {
                Ok(_) => {
                    metrics.record_write_of("Secret", "create");
                    verified.record(cache_key, digest);
                    Ok(true)
                }
                // Another replica or an earlier, interrupted reconcile created it: never overwrite.
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(api_error(error)),
            }
        }
        SecretSource::Copied(_) => {
            let Some(data) = copied.flatten() else {
                return Ok(false);
            };
            let mut object = Secret {
                metadata: secret.meta.clone(),
                data: Some(data),
                type_: Some("Opaque".into()),
                ..Secret::default()
            };
            let current = match current {
                Some(current) => current,
                None => match api.create(&params, &object).await {
                    Ok(_) => {
                        verified.record(cache_key, digest);
                        metrics.record_write_of("Secret", "write");
                        return Ok(true);
                    }
                    // Not read first (`probably_missing`), or created since it was read: compare what is there.
                    Err(kube::Error::Api(status)) if status.code == 409 => api.get(&name).await.map_err(api_error)?,
                    Err(error) => return Err(api_error(error)),
                },
            };
            if is_copy_of(&current, &object) {
                verified.record(cache_key, digest);
                return Ok(false);
            }
            // A copy is wholly the operator's: replacing it (not merging) drops keys the source no longer
            // has, and the resourceVersion makes a concurrent change a retryable conflict.
            object.metadata.resource_version = current.metadata.resource_version;
            api.replace(&name, &params, &object).await.map_err(api_error)?;
            verified.record(cache_key, digest);
            metrics.record_write_of("Secret", "write");
            Ok(true)
        }
    }
}

/// Whether `current` holds what the desired copy does, with the operator's labels and owner.
fn is_copy_of(current: &Secret, desired: &Secret) -> bool {
    current.data == desired.data
        && current.metadata.labels == desired.metadata.labels
        && current.metadata.owner_references == desired.metadata.owner_references
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(data: &BTreeMap<String, ByteString>, key: &str) -> String {
        String::from_utf8(data[key].0.clone()).expect("utf8")
    }

    /// A source Secret read once is served from the cache while the watch shows the same resourceVersion,
    /// and read again once the watch shows a new one.
    #[tokio::test]
    async fn source_secrets_are_read_again_only_when_their_resource_version_changes() {
        use base64::engine::general_purpose::STANDARD;
        use http::{Request, Response};
        use kube::client::Body;
        use kube::runtime::watcher;
        use tower_test::mock;

        let (service, mut server) = mock::pair::<Request<Body>, Response<Body>>();
        let api = Api::<Secret>::namespaced(kube::Client::new(service, "default"), "saaschat-system");
        let (store, mut writer) = kube::runtime::reflector::store::<PartialObjectMeta<Secret>>();
        let watched = |version: &str| {
            let mut meta = PartialObjectMeta::<Secret>::default();
            meta.metadata.name = Some("openai-api-key".into());
            meta.metadata.namespace = Some("saaschat-system".into());
            meta.metadata.resource_version = Some(version.into());
            watcher::Event::Apply(meta)
        };
        let secret = |version: &str, key: &str| {
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "openai-api-key", "namespace": "saaschat-system", "resourceVersion": version},
                "data": {"apiKey": STANDARD.encode(key)},
            }))
            .expect("json")
        };
        let api_key = |sources: SourceSecrets| text(&sources["openai-api-key"].clone().expect("exists"), "apiKey");
        let cache = SourceCache::new(store);
        let names = ["openai-api-key".to_string()];

        writer.apply_watcher_event(&watched("5"));
        let get = async {
            let (request, reply) = server.next_request().await.expect("a get");
            assert_eq!(request.uri().path(), "/api/v1/namespaces/saaschat-system/secrets/openai-api-key");
            reply.send_response(Response::new(Body::from(secret("5", "one"))));
        };
        let (first, ()) = tokio::join!(cache.read(&api, "saaschat-system", &names), get);
        assert_eq!(api_key(first.expect("read")), "one");

        // Nobody answers the mock now: a request would hang until the timeout.
        let cached = tokio::time::timeout(Duration::from_secs(2), cache.read(&api, "saaschat-system", &names))
            .await
            .expect("served from the cache, without a request");
        assert_eq!(api_key(cached.expect("read")), "one");

        writer.apply_watcher_event(&watched("6"));
        let get = async {
            let (_, reply) = server.next_request().await.expect("a get after the change");
            reply.send_response(Response::new(Body::from(secret("6", "two"))));
        };
        let (changed, ()) = tokio::join!(cache.read(&api, "saaschat-system", &names), get);
        assert_eq!(api_key(changed.expect("read")), "two");
    }

    /// A tenant never reconciled has its Secrets created without a read. One that exists after all is kept if
    /// generated (never overwritten), and compared and replaced if it is a copy.
    #[tokio::test]
    async fn secrets_probably_missing_are_created_without_a_read_and_existing_ones_handled() {
        use crate::build::CopiedKey;
        use http::{Method, Request, Response, StatusCode};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        use kube::client::Body;
        use tower_test::mock;

        let (service, mut server) = mock::pair::<Request<Body>, Response<Body>>();
        let api = Api::<Secret>::namespaced(kube::Client::new(service, "default"), "tenant-acme");
        let meta = |name: &str| ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() };
        let reference = saaschat_crds::SecretKeyRef { name: "openai".into(), key: "api-key".into() };
        let desired = vec![
            DesiredSecret {
                meta: meta("jwt"),
                source: SecretSource::Generated(GeneratedSecret::JwtSigningKey),
                retained_with_data: false,
            },
            DesiredSecret {
                meta: meta("provider-openai"),
                source: SecretSource::Copied(vec![CopiedKey { key: "api-key".into(), source: reference }]),
                retained_with_data: false,
            },
        ];
        let sources: SourceSecrets =
            [("openai".to_string(), Some([("api-key".to_string(), ByteString(b"new".to_vec()))].into()))].into();
        let exists = || {
            let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "AlreadyExists", "code": 409});
            Response::builder()
                .status(StatusCode::CONFLICT)
                .body(Body::from(serde_json::to_vec(&status).expect("json")))
                .expect("response")
        };
        let api_server = async {
            let mut seen = Vec::new();
            while let Some((request, reply)) = server.next_request().await {
                let (method, path) = (request.method().clone(), request.uri().path().to_string());
                seen.push(format!("{method} {path}"));
                let body = request.into_body().collect_bytes().await.expect("body");
                match (method, path.as_str()) {
                    (Method::POST, "/api/v1/namespaces/tenant-acme/secrets") => reply.send_response(exists()),
                    (Method::GET, "/api/v1/namespaces/tenant-acme/secrets/provider-openai") => {
                        let stale = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": "provider-openai", "resourceVersion": "7"},
                            "data": {"api-key": "b2xk"}});
                        reply.send_response(Response::new(Body::from(serde_json::to_vec(&stale).expect("json"))));
                    }
                    (Method::PUT, "/api/v1/namespaces/tenant-acme/secrets/provider-openai") => {
                        let sent: Secret = serde_json::from_slice(&body).expect("a secret");
                        assert_eq!(sent.metadata.resource_version.as_deref(), Some("7"), "guarded by the version");
                        reply.send_response(Response::new(Body::from(body)));
                    }
                    (method, path) => panic!("unexpected {method} {path}"),
                }
            }
            seen.sort();
            seen
        };
        let metrics = Metrics::new().expect("metrics");
        let policy =
            ReadPolicy { max_age: Duration::from_secs(300), probably_missing: true, access_just_granted: false };
        let ensured = async {
            let written = ensure(&api, &desired, &sources, "tenant-acme", &metrics, &Verified::default(), policy).await;
            drop(api);
            written
        };
        let (written, seen) = tokio::join!(ensured, api_server);
        assert_eq!(written.expect("ensured"), 1, "only the stale copy was written");
        assert_eq!(
            seen,
            [
                "GET /api/v1/namespaces/tenant-acme/secrets/provider-openai",
                "POST /api/v1/namespaces/tenant-acme/secrets",
                "POST /api/v1/namespaces/tenant-acme/secrets",
                "PUT /api/v1/namespaces/tenant-acme/secrets/provider-openai",
            ],
            "the generated Secret was never read nor overwritten"
        );
    }

    #[test]
    fn jwt_keys_are_a_matching_ed25519_pair_with_a_kid() {
        let data = generate(GeneratedSecret::JwtSigningKey, "tenant-acme").expect("keys");
        let private = pem::parse(text(&data, "private.pem")).expect("pem");
        assert_eq!(private.tag(), "PRIVATE KEY");
        let pair = Ed25519KeyPair::from_pkcs8(private.contents()).expect("pkcs8");
        let public = pem::parse(text(&data, "public.pem")).expect("pem");
        assert_eq!(&public.contents()[12..], pair.public_key().as_ref());
        assert_eq!(text(&data, "kid").len(), 16);
        assert_eq!(text(&data, "algorithm"), "EdDSA");
    }

    #[test]
    fn passwords_are_long_random_and_fit_in_urls() {
        let first = generate(GeneratedSecret::Postgres, "tenant-acme").expect("postgres");
        let second = generate(GeneratedSecret::Postgres, "tenant-acme").expect("postgres");
        let password = text(&first, "password");
        assert_ne!(password, text(&second, "password"));
        assert_eq!(password.len(), 43);
        assert!(password.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(
            text(&first, "url"),
            format!("postgres://saaschat:{password}@postgres.tenant-acme.svc:5432/saaschat")
        );
        let redis = generate(GeneratedSecret::Redis, "tenant-acme").expect("redis");
        assert!(text(&redis, "url").starts_with("redis://:"));
    }

    #[test]
    fn a_secret_is_read_back_again_when_its_contents_change_or_the_interval_passes() {
        let verified = Verified::default();
        let key = ("tenant-acme".to_string(), "provider-openai".to_string());
        let first = expected_digest(Some(&BTreeMap::from([("api-key".to_string(), ByteString(b"sk-1".to_vec()))])));
        let rotated = expected_digest(Some(&BTreeMap::from([("api-key".to_string(), ByteString(b"sk-2".to_vec()))])));
        assert!(!verified.is_fresh(&key, first, Duration::from_secs(300)), "never seen");
        verified.record(key.clone(), first);
        assert!(verified.is_fresh(&key, first, Duration::from_secs(300)));
        assert!(!verified.is_fresh(&key, rotated, Duration::from_secs(300)), "new contents are written");
        assert!(!verified.is_fresh(&key, first, Duration::ZERO), "looked at again every interval");
        verified.forget_namespace("tenant-acme");
        assert!(!verified.is_fresh(&key, first, Duration::from_secs(300)));
    }

    #[test]
    fn copied_data_needs_every_source_key() {
        let reference = saaschat_crds::SecretKeyRef { name: "openai".into(), key: "api-key".into() };
        let keys = vec![crate::build::CopiedKey { key: "api-key".into(), source: reference }];
        let present: SourceSecrets = BTreeMap::from([(
            "openai".to_string(),
            Some(BTreeMap::from([("api-key".to_string(), ByteString(b"sk".to_vec()))])),
        )]);
        assert_eq!(copied_data(&keys, &present).expect("data")["api-key"].0, b"sk");
        assert!(copied_data(&keys, &BTreeMap::new()).is_none());
    }
}
