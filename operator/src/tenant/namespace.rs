//! Whether a tenant owns its namespace, proven before anything is written into it.
//!
//! The proof is the tenant's UID in the namespace's `saaschat.io/tenant-uid` label, which only the operator sets
//! (an admission policy refuses it to everyone else) and only when it creates the namespace. The namespace is
//! created with a plain create, which the API server makes atomic: of two tenants racing for one namespace
//! exactly one gets it. A namespace that exists without the proof, whoever made it, is refused and never
//! touched: no label, no object, no deletion.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use saaschat_crds::ChatTenant;

use super::validate::Problem;
use super::{Context, Error};
use crate::apply::ObjectKey;
use crate::build;
use crate::kinds::OwnedKind;
use crate::names::{self, FIELD_MANAGER};

/// What the operator may do in a tenant's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// The namespace carries this tenant's UID: it is the tenant's.
    Owned,
    /// The namespace is not (or not yet) the tenant's: nothing may be written into it.
    Refused(Problem),
}

/// What a namespace's labels and state say about a tenant's claim on it. Pure.
pub fn judge(namespace: &str, meta: &ObjectMeta, tenant_uid: &str) -> Ownership {
    let label = |key: &str| meta.labels.as_ref().and_then(|labels| labels.get(key));
    match label(names::LABEL_TENANT_UID) {
        Some(uid) if uid == tenant_uid && meta.deletion_timestamp.is_some() => Ownership::Refused(Problem::new(
            "NamespaceTerminating",
            format!("namespace {namespace} is being deleted; the tenant is set up again once it is gone"),
        )),
        Some(uid) if uid == tenant_uid => Ownership::Owned,
        Some(_) => Ownership::Refused(Problem::new(
            "NamespaceConflict",
            match label(names::LABEL_TENANT) {
                Some(owner) => format!("namespace {namespace} belongs to another ChatTenant ({owner:?})"),
                None => format!("namespace {namespace} belongs to another ChatTenant"),
            },
        )),
        None => Ownership::Refused(Problem::new(
            "NamespaceConflict",
            format!(
                "namespace {namespace} already exists and was not created for this ChatTenant; it is left untouched \
                 (choose another spec.namespace)"
            ),
        )),
    }
}

/// The tenant's namespace as the watch of managed namespaces sees it.
fn watched(ctx: &Context, namespace: &str) -> Option<ObjectMeta> {
    ctx.applier.stores.meta(&ObjectKey { kind: OwnedKind::Namespace, namespace: None, name: namespace.to_string() })
}

/// Makes sure the tenant owns its namespace: known from the watch, created now, or found to carry the proof.
/// Writes nothing into a namespace that is not the tenant's.
pub async fn claim(tenant: &ChatTenant, ctx: &Context, namespace: &str) -> Result<Ownership, Error> {
    let Some(uid) = tenant.meta().uid.as_deref() else {
        // Objects read from the API server always have a UID; without one nothing can be proven.
        return Ok(Ownership::Refused(Problem::new("NamespaceConflict", "the ChatTenant has no UID yet")));
    };
    if let Some(meta) = watched(ctx, namespace)
        && judge(namespace, &meta, uid) == Ownership::Owned
    {
        return Ok(Ownership::Owned);
    }
    let api = Api::<Namespace>::all(ctx.client.clone());
    let labels = build::namespace::creation_labels(tenant);
    let fresh = Namespace {
        metadata: ObjectMeta { name: Some(namespace.to_string()), labels: Some(labels), ..ObjectMeta::default() },
        ..Namespace::default()
    };
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
    match api.create(&params, &fresh).await {
        Ok(_) => {
            ctx.metrics.record_write_of("Namespace", "create");
            return Ok(Ownership::Owned);
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(source) => return Err(Error::Namespace { namespace: namespace.to_string(), source }),
    }
    // It exists: whose is it?
    let existing =
        api.get_opt(namespace).await.map_err(|source| Error::Namespace { namespace: namespace.to_string(), source })?;
    Ok(match existing {
        Some(existing) => judge(namespace, &existing.metadata, uid),
        // Deleted since the create was refused: the next attempt creates it.
        None => Ownership::Refused(Problem::new(
            "NamespaceTerminating",
            format!("namespace {namespace} was being deleted; the tenant is set up again once it is gone"),
        )),
    })
}

/// The tenant's namespace if it is the tenant's, read from the API server (for deletion, which must not trust a
/// cache).
pub async fn owned(tenant: &ChatTenant, ctx: &Context, namespace: &str) -> Result<Option<Namespace>, Error> {
    let existing = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(namespace)
        .await
        .map_err(|source| Error::Namespace { namespace: namespace.to_string(), source })?;
    let uid = tenant.meta().uid.as_deref().unwrap_or_default();
    Ok(existing.filter(|existing| {
        existing.labels().get(names::LABEL_TENANT_UID).map(String::as_str) == Some(uid) && !uid.is_empty()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn meta(labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..ObjectMeta::default()
        }
    }

    fn reason(ownership: Ownership) -> &'static str {
        match ownership {
            Ownership::Owned => "Owned",
            Ownership::Refused(problem) => problem.reason,
        }
    }

    #[test]
    fn only_the_tenants_own_uid_proves_ownership() {
        assert_eq!(judge("t", &meta(&[(names::LABEL_TENANT_UID, "u1")]), "u1"), Ownership::Owned);
        assert_eq!(reason(judge("t", &meta(&[(names::LABEL_TENANT_UID, "u2")]), "u1")), "NamespaceConflict");
        // The tenant's name is no proof: anyone who may label a namespace can write it.
        assert_eq!(reason(judge("t", &meta(&[(names::LABEL_TENANT, "acme")]), "u1")), "NamespaceConflict");
        assert_eq!(reason(judge("t", &meta(&[]), "u1")), "NamespaceConflict");
        assert_eq!(reason(judge("t", &ObjectMeta::default(), "u1")), "NamespaceConflict");
    }

    #[test]
    fn a_conflict_names_the_owner_and_a_terminating_namespace_is_waited_for() {
        let other = meta(&[(names::LABEL_TENANT_UID, "u2"), (names::LABEL_TENANT, "globex")]);
        let Ownership::Refused(problem) = judge("shared", &other, "u1") else { panic!("refused") };
        assert!(problem.message.contains("shared") && problem.message.contains("globex"), "{}", problem.message);
        let mut terminating = meta(&[(names::LABEL_TENANT_UID, "u1")]);
        terminating.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(reason(judge("t", &terminating, "u1")), "NamespaceTerminating");
    }
}
