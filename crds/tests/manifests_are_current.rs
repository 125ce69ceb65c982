//! The checked-in CRD manifests must be exactly what the Rust types generate.

#[test]
fn checked_in_manifests_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    for crd in saaschat_crds::crds() {
        let path = dir.join(saaschat_crds::manifest_file_name(&crd));
        let generated = saaschat_crds::manifest_yaml(&crd).expect("CRD serializes");
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            generated == checked_in,
            "{} is stale: run `cargo run -p saaschat-crds --bin crdgen` and commit the result",
            path.display()
        );
    }
}

#[test]
fn checked_in_admission_policies_match_the_chart() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(saaschat_crds::ADMISSION_POLICIES_FILE);
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == saaschat_crds::default_admission_policies(),
        "{} is stale: run `cargo run -p saaschat-crds --bin crdgen` and commit the result",
        path.display()
    );
    assert!(!checked_in.contains("SECRET_NAMESPACE") && !checked_in.contains("PROTECTED_NAMESPACES"));
}

#[test]
fn every_crd_is_in_the_saaschat_category_with_a_status_subresource() {
    for crd in saaschat_crds::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        assert_eq!(crd.spec.names.categories.as_deref(), Some(&["saaschat".to_string()][..]), "{name}");
        assert!(!crd.spec.names.short_names.clone().unwrap_or_default().is_empty(), "{name}");
        let version = &crd.spec.versions[0];
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{name}");
        let columns: Vec<_> = version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        assert!(columns.contains(&"Ready") && columns.contains(&"Age"), "{name}: {columns:?}");
    }
}

/// Every property of every schema carries a description, so `kubectl explain` documents the whole API.
#[test]
fn every_spec_field_has_a_description() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, property) in properties {
                let child = format!("{path}.{name}");
                // metav1.Condition fields come documented from k8s-openapi; apiVersion/kind/metadata are standard.
                if property.get("description").is_none() && !["apiVersion", "kind", "metadata"].contains(&name.as_str())
                {
                    missing.push(child.clone());
                }
                walk(&child, property, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in saaschat_crds::crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema serializes");
        walk(&crd.spec.names.kind, &schema["openAPIV3Schema"], &mut missing);
    }
    assert!(missing.is_empty(), "fields without a description: {missing:#?}");
}
