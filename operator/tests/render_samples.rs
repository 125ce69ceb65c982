//! The samples in `config/samples/` form a complete tenant that renders without a cluster.

use std::path::PathBuf;

use saaschat_operator::render::{RenderError, render};
use saaschat_operator::settings::Settings;

fn samples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("config/samples exists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_samples_render_every_object_of_a_tenant() {
    let yaml = render(&samples(), &Settings::default()).expect("samples render");
    let documents: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect();
    let count = |kind: &str| documents.iter().filter(|d| d["kind"].as_str() == Some(kind)).count();
    assert_eq!(count("Namespace"), 1);
    assert_eq!(count("Deployment"), 4);
    assert_eq!(count("StatefulSet"), 2);
    assert_eq!(count("HorizontalPodAutoscaler"), 4);
    assert_eq!(count("PodDisruptionBudget"), 4);
    assert_eq!(count("Secret"), 4);
    assert!(count("NetworkPolicy") >= 8);
    // The sample tenant is on the pro plan: chat may grow to 10 replicas, not the tenant's 20.
    let chat_hpa = documents
        .iter()
        .find(|d| {
            d["kind"].as_str() == Some("HorizontalPodAutoscaler") && d["metadata"]["name"].as_str() == Some("chat")
        })
        .expect("chat autoscaler");
    assert_eq!(chat_hpa["spec"]["maxReplicas"].as_i64(), Some(10));
    assert!(!yaml.contains("sk-replace-me"), "secret values are never printed");
}

#[test]
fn a_tenant_whose_provider_is_missing_is_refused_with_the_reason() {
    let without_provider: Vec<PathBuf> = samples().into_iter().filter(|p| !p.ends_with("01-aiprovider.yaml")).collect();
    match render(&without_provider, &Settings::default()) {
        Err(RenderError::Problems(problems)) => assert_eq!(problems[0].reason, "ProviderNotFound"),
        other => panic!("expected ProviderNotFound, got {:?}", other.map(|_| "rendered")),
    }
}
