//! The CRDs' CEL rules, evaluated client-side with kube's CEL validator. The control-plane suite proves the
//! same rules against a real API server; these tests pin down each rule's meaning quickly.

use kube::core::cel::{validate_cel, validate_cel_update};
use saaschat_crds::{AIProvider, ChatTenant, Subscription};
use serde_json::json;

fn tenant(name: &str, spec: serde_json::Value) -> ChatTenant {
    serde_json::from_value(json!({
        "apiVersion": "saaschat.io/v1alpha1", "kind": "ChatTenant",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("test tenant deserializes")
}

fn valid_tenant_spec() -> serde_json::Value {
    json!({
        "displayName": "Acme",
        "providers": [{"name": "openai", "models": ["gpt-4o-mini", "gpt-4o"]}],
        "defaultModel": "gpt-4o-mini",
    })
}

fn with(mut base: serde_json::Value, patch: serde_json::Value) -> serde_json::Value {
    if let (Some(base), Some(patch)) = (base.as_object_mut(), patch.as_object()) {
        for (key, value) in patch {
            base.insert(key.clone(), value.clone());
        }
    }
    base
}

fn rejection(tenant: &ChatTenant) -> String {
    match validate_cel(tenant) {
        Ok(()) => panic!("expected a rejection for {:?}", tenant.spec),
        Err(errors) => format!("{errors:?}"),
    }
}

#[test]
fn a_complete_tenant_is_accepted() {
    validate_cel(&tenant("acme", valid_tenant_spec())).expect("valid tenant");
}

#[test]
fn default_model_must_be_allowed() {
    let bad = tenant("acme", with(valid_tenant_spec(), json!({"defaultModel": "claude-opus"})));
    assert!(rejection(&bad).contains("defaultModel must be one of the models"));
}

#[test]
fn tenant_names_must_fit_a_namespace() {
    let long = "a".repeat(57);
    assert!(rejection(&tenant(&long, valid_tenant_spec())).contains("at most 56 characters"));
    validate_cel(&tenant(&"a".repeat(56), valid_tenant_spec())).expect("56 characters fit");
    assert!(rejection(&tenant("Acme_Corp", valid_tenant_spec())).contains("DNS-1123 label"));
}

#[test]
fn min_replicas_cannot_exceed_max() {
    let spec = with(valid_tenant_spec(), json!({"components": {"chat": {"minReplicas": 5, "maxReplicas": 2}}}));
    assert!(rejection(&tenant("acme", spec)).contains("minReplicas must not be greater than maxReplicas"));
}

#[test]
fn external_database_needs_a_secret_and_no_storage() {
    let without_secret = with(valid_tenant_spec(), json!({"database": {"mode": "External"}}));
    assert!(rejection(&tenant("acme", without_secret)).contains("requires externalSecretRef"));
    let with_storage = with(
        valid_tenant_spec(),
        json!({"database": {"mode": "External", "externalSecretRef": {"name": "db", "key": "url"}, "storage": {"size": "5Gi"}}}),
    );
    assert!(rejection(&tenant("acme", with_storage)).contains("cannot have managed storage"));
    let good = with(
        valid_tenant_spec(),
        json!({"database": {"mode": "External", "externalSecretRef": {"name": "db", "key": "url"}}}),
    );
    validate_cel(&tenant("acme", good)).expect("external database with a secret");
}

#[test]
fn ingress_tls_takes_exactly_one_source() {
    let both = with(
        valid_tenant_spec(),
        json!({"ingress": {"host": "acme.example.com", "tls": {"secretName": "t", "clusterIssuer": "le"}}}),
    );
    assert!(rejection(&tenant("acme", both)).contains("exactly one of secretName and clusterIssuer"));
}

#[test]
fn stripe_prices_name_paid_plans_with_price_ids() {
    let spec =
        with(valid_tenant_spec(), json!({"stripe": {"secretRef": {"name": "stripe"}, "prices": {"pro": "prod_123"}}}));
    assert!(rejection(&tenant("acme", spec)).contains("Stripe price id"));
}

#[test]
fn namespace_is_immutable() {
    let old = tenant("acme", with(valid_tenant_spec(), json!({"namespace": "acme"})));
    let moved = tenant("acme", with(valid_tenant_spec(), json!({"namespace": "elsewhere"})));
    let errors = validate_cel_update(&moved, &old).expect_err("namespace change must be refused");
    assert!(format!("{errors:?}").contains("cannot be changed"));
    validate_cel_update(&old.clone(), &old).expect("unchanged namespace");
}

fn provider(spec: serde_json::Value) -> AIProvider {
    serde_json::from_value(json!({
        "apiVersion": "saaschat.io/v1alpha1", "kind": "AIProvider", "metadata": {"name": "local"}, "spec": spec
    }))
    .expect("test provider deserializes")
}

fn provider_spec(patch: serde_json::Value) -> serde_json::Value {
    with(
        json!({
            "type": "openaiCompatible",
            "apiKeySecretRef": {"name": "vllm", "key": "api-key"},
            "models": [{"name": "llama", "inputPricePerMillion": "0", "outputPricePerMillion": "0"}],
        }),
        patch,
    )
}

#[test]
fn openai_compatible_needs_a_base_url() {
    let errors = validate_cel(&provider(provider_spec(json!({})))).expect_err("no baseUrl");
    assert!(format!("{errors:?}").contains("baseUrl is required"));
    validate_cel(&provider(provider_spec(json!({"baseUrl": "https://vllm.example.com/v1"})))).expect("https");
}

#[test]
fn plain_http_needs_allow_insecure() {
    let errors = validate_cel(&provider(provider_spec(json!({"baseUrl": "http://vllm.ai.svc:8000/v1"}))))
        .expect_err("plain http");
    assert!(format!("{errors:?}").contains("must use https"));
    validate_cel(&provider(provider_spec(json!({"baseUrl": "http://vllm.ai.svc:8000/v1", "allowInsecure": true}))))
        .expect("explicitly insecure");
}

fn subscription(name: &str, spec: serde_json::Value) -> Subscription {
    serde_json::from_value(json!({
        "apiVersion": "saaschat.io/v1alpha1", "kind": "Subscription",
        "metadata": {"name": name, "namespace": "tenant-acme"}, "spec": spec
    }))
    .expect("test subscription deserializes")
}

#[test]
fn custom_plans_and_only_they_carry_limits() {
    let limits = json!({"tokensPerMonth": 1000, "requestsPerMinute": 10, "seats": 2});
    assert!(validate_cel(&subscription("default", json!({"plan": "custom"}))).is_err());
    assert!(validate_cel(&subscription("default", json!({"plan": "pro", "limits": limits}))).is_err());
    validate_cel(&subscription("default", json!({"plan": "custom", "limits": limits}))).expect("custom");
    assert!(validate_cel(&subscription("second", json!({"plan": "pro"}))).is_err(), "only 'default'");
}

/// Every spelling of a metadata, loopback or cluster address is refused; ordinary hosts pass. The control-plane
/// suite checks the same list against the API server's own CEL libraries.
#[test]
fn base_urls_into_the_node_the_cloud_or_the_cluster_are_refused() {
    let refused = [
        "https://169.254.169.254/latest",
        "https://2852039166/",
        "https://0xa9fea9fe/",
        "https://0251.0376.0251.0376/",
        "https://169.254.43518/",
        "https://127.1/",
        "https://0.0.0.0/",
        "https://[::1]/v1",
        "https://[fd00:ec2::254]/",
        "https://[FD00:EC2::254]/",
        "https://[::ffff:169.254.169.254]/",
        "https://[::ffff:a9fe:a9fe]/",
        "https://[64:ff9b::a9fe:a9fe]/",
        "https://[2002:a9fe:a9fe::1]/",
        "https://[fe80::1]/",
        "https://100.100.100.200/",
        "https://168.63.129.16/",
        "https://localhost:8443/",
        "https://api.localhost/",
        "https://metadata.google.internal/computeMetadata/v1",
        "https://kubernetes.default.svc/",
        "https://kubernetes.default.svc.cluster.local/",
        "https://user@api.example.com/",
        "https://LOCALHOST/",
        "https://api.example.com/v1?x=1",
    ];
    for url in refused {
        let errors = validate_cel(&provider(provider_spec(json!({"baseUrl": url}))));
        // The schema's pattern refuses some before CEL sees them; the CEL rules refuse the rest.
        let pattern = regex_lite_matches(saaschat_crds::endpoint::BASE_URL_PATTERN, url);
        assert!(errors.is_err() || !pattern, "{url} must be refused");
    }
    for url in [
        "https://api.openai.com/v1",
        "https://10.0.0.7:8443/v1",
        "https://[2001:db8::7]/v1",
        "https://llm.internal.example/",
    ] {
        validate_cel(&provider(provider_spec(json!({"baseUrl": url})))).unwrap_or_else(|e| panic!("{url}: {e:?}"));
        assert!(regex_lite_matches(saaschat_crds::endpoint::BASE_URL_PATTERN, url), "{url}");
    }
}

/// The schema's `pattern`, checked the way the API server does (Go's RE2, which the `regex` crate matches for
/// these constructs).
fn regex_lite_matches(pattern: &str, text: &str) -> bool {
    regex::Regex::new(pattern).expect("pattern compiles").is_match(text)
}

#[test]
fn allow_insecure_is_only_for_services_of_the_cluster() {
    let spec = |url: &str| provider(provider_spec(json!({"baseUrl": url, "allowInsecure": true})));
    validate_cel(&spec("http://vllm.models.svc:8000/v1")).expect("an in-cluster Service");
    validate_cel(&spec("http://vllm.models.svc.cluster.local:8000/v1")).expect("with the cluster domain");
    for url in ["http://vllm.example.com/v1", "http://10.0.0.7:8000/v1", "https://api.openai.com/v1"] {
        let errors = validate_cel(&spec(url)).expect_err(url);
        assert!(format!("{errors:?}").contains("allowInsecure is only for endpoints inside the cluster"), "{url}");
    }
}

#[test]
fn requests_stay_within_limits_and_quantities_within_reason() {
    let resources = |r: serde_json::Value| {
        tenant(
            "acme",
            with(
                valid_tenant_spec(),
                json!({"components": {"chat": {"minReplicas": 1, "maxReplicas": 2, "resources": r}}}),
            ),
        )
    };
    validate_cel(&resources(
        json!({"cpuRequest": "100m", "cpuLimit": "1", "memoryRequest": "128Mi", "memoryLimit": "1Gi"}),
    ))
    .expect("sane resources");
    let cases = [
        (
            json!({"cpuRequest": "2", "cpuLimit": "500m", "memoryRequest": "128Mi", "memoryLimit": "1Gi"}),
            "cpuRequest must not exceed cpuLimit",
        ),
        (
            json!({"cpuRequest": "1", "memoryRequest": "2Gi", "memoryLimit": "1024Mi"}),
            "memoryRequest must not exceed memoryLimit",
        ),
        (
            json!({"cpuRequest": "999", "memoryRequest": "128Mi", "memoryLimit": "1Gi"}),
            "cpuRequest must be between 1m and 64",
        ),
        (
            json!({"cpuRequest": "0", "memoryRequest": "128Mi", "memoryLimit": "1Gi"}),
            "cpuRequest must be between 1m and 64",
        ),
        (
            json!({"cpuRequest": "1", "memoryRequest": "128Mi", "memoryLimit": "999999Ti"}),
            "memoryLimit must be between 16Mi and 256Gi",
        ),
    ];
    for (r, message) in cases {
        assert!(rejection(&resources(r.clone())).contains(message), "{r}: {message}");
    }
    let huge = with(valid_tenant_spec(), json!({"database": {"storage": {"size": "999999Ti"}}}));
    assert!(rejection(&tenant("acme", huge)).contains("size must be between 64Mi and 64Ti"));
}

#[test]
fn system_namespaces_and_snippets_are_refused() {
    for namespace in ["default", "kube-system", "kube-public", "kube-anything"] {
        let spec = with(valid_tenant_spec(), json!({"namespace": namespace}));
        assert!(rejection(&tenant("acme", spec)).contains("cannot be default or a kube-*"), "{namespace}");
    }
    let spec = with(
        valid_tenant_spec(),
        json!({"ingress": {"host": "acme.example.com", "annotations": {"nginx.ingress.kubernetes.io/server-snippet": "x"}}}),
    );
    assert!(rejection(&tenant("acme", spec)).contains("controller snippets"));
}
