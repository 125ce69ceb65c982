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
