#!/usr/bin/env bash
# Lints and renders the saaschat chart; used by the test command.
#
#   charts/saaschat/lint.sh
#
# 1. Makes sure helm $HELM_VERSION is in the cache (built from the Go module proxy when missing: no other
#    download, nothing inside the clone): ${SAASCHAT_CACHE:-~/.cache/saaschat}/tools/helm.
# 2. sync-crds.sh --check: the chart's crds/ equal crds/manifests/.
# 3. helm lint --strict, with the default values and with the optional parts turned on.
# 4. helm template, and checks on what it renders (every role bound, no placeholder left, no Namespace, ...).
# 5. Only with SAASCHAT_LINT_SERVER=1: `kubectl apply --dry-run=server` of the rendered chart (CRDs
#    included, namespace `default`) against $KUBECONFIG. Nothing is persisted.
#
# Environment: SAASCHAT_CACHE, HELM_VERSION (default v3.21.0), SAASCHAT_NICE (nice level of the helm build,
# default 10), SAASCHAT_LINT_SERVER.
set -euo pipefail

chart_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$chart_dir/../.." && pwd)
HELM_VERSION=${HELM_VERSION:-v3.21.0}
tools_dir="${SAASCHAT_CACHE:-$HOME/.cache/saaschat}/tools"
helm="$tools_dir/helm"

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'lint.sh: FAIL: %s\n' "$*" >&2; exit 1; }

installed_version() { "$helm" version --template '{{.Version}}' 2>/dev/null || true; }

step "helm $HELM_VERSION in $tools_dir"
if [ -x "$helm" ] && [ "$(installed_version)" = "$HELM_VERSION" ]; then
  echo "present: $helm"
else
  command -v go >/dev/null || fail "go is needed to build helm (go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION)"
  mkdir -p "$tools_dir"
  staging=$(mktemp -d "$tools_dir/.helm-build.XXXXXX")
  trap 'rm -rf "$staging"' EXIT
  echo "building: GOBIN=$staging go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION (nice ${SAASCHAT_NICE:-10})"
  (cd "$staging" && GOBIN="$staging" GOFLAGS="" GOWORK=off CGO_ENABLED=0 nice -n "${SAASCHAT_NICE:-10}" \
    go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  mv -f "$staging/helm" "$helm"
  echo "installed: $helm ($(installed_version))"
fi

step "sync-crds.sh --check"
"$chart_dir/sync-crds.sh" --check

cd "$repo_dir"
step "helm lint --strict charts/saaschat"
"$helm" lint --strict charts/saaschat
step "helm lint --strict charts/saaschat (ServiceMonitor, every optional value set)"
"$helm" lint --strict charts/saaschat --set serviceMonitor.enabled=true \
  --set services.postgresImage=postgres:17.6 --set services.redisImage=redis:8.2 \
  --set operator.concurrency=4 --set operator.resyncSeconds=600 --set operator.logLevel=debug \
  --set tenantTelemetry.otlpEndpoint=http://otel-collector.observability.svc:4318 \
  --set tenantTelemetry.sentryDsn=https://key@o1.ingest.sentry.io/42 --set tenantTelemetry.sentryEnvironment=production \
  --set tenantEgress.httpsProxy=http://egress-proxy.network.svc:3128 --set tenantEgress.noProxy=.internal.example

rendered=$(mktemp)
trap 'rm -f "$rendered"; rm -rf "${staging:-}"' EXIT
step "helm template t charts/saaschat -n saaschat-system"
"$helm" template t charts/saaschat -n saaschat-system > "$rendered"
count() { grep -c "^kind: $1\$" "$rendered" || true; }
for kind in ServiceAccount ClusterRole ClusterRoleBinding Role RoleBinding Deployment PodDisruptionBudget Service \
  ValidatingAdmissionPolicy ValidatingAdmissionPolicyBinding; do
  n=$(count "$kind")
  [ "$n" -ge 1 ] || fail "no $kind rendered"
  echo "  $kind: $n"
done
[ "$(count Namespace)" -eq 0 ] || fail "the chart must not create a Namespace"
[ "$(count ServiceMonitor)" -eq 0 ] || fail "ServiceMonitor rendered although serviceMonitor.enabled is false"
# saaschat-operator-tenant is bound by the operator itself, in each tenant namespace, never cluster-wide.
[ "$(count ClusterRole)" -eq "$(( $(count ClusterRoleBinding) + 1 ))" ] || fail "a ClusterRole has no ClusterRoleBinding"
! grep -q '^  name: saaschat-operator-tenant$' <(grep -A3 '^kind: ClusterRoleBinding$' "$rendered") \
  || fail "saaschat-operator-tenant must not be bound cluster-wide"
for policy in saaschat-tenant-namespace saaschat-tenant-secret-references saaschat-provider-secret-references \
  saaschat-namespace-proof saaschat-operator-namespaces saaschat-operator-tenant-objects saaschat-operator-bindings; do
  grep -q "^  name: $policy\$" "$rendered" || fail "admission policy $policy not rendered"
done
[ "$(count ValidatingAdmissionPolicy)" -eq "$(count ValidatingAdmissionPolicyBinding)" ] || fail "a policy has no binding"
! grep -q PROTECTED_NAMESPACES "$rendered" || fail "placeholder PROTECTED_NAMESPACES left in the admission policies"
grep -qF "saaschat-system''] + [\"ingress-nginx\"" "$rendered" || fail "protected namespaces not rendered into the policy"
[ "$(count Role)" -eq "$(count RoleBinding)" ] || fail "a Role has no RoleBinding"
! grep -qw SECRET_NAMESPACE "$rendered" || fail "placeholder SECRET_NAMESPACE left in the RBAC"
grep -q 'fieldPath: metadata.namespace' "$rendered" || fail "SAASCHAT_SECRET_NAMESPACE is not the pod namespace"
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$chart_dir/Chart.yaml")
grep -q "image: \"ghcr.io/saaschat/saaschat-operator:$app_version\"" "$rendered" \
  || fail "the operator image is not ghcr.io/saaschat/saaschat-operator:<appVersion $app_version>"
echo "  checks passed ($(grep -c '^kind:' "$rendered") objects)"

step "helm template --include-crds (CRDs come from charts/saaschat/crds)"
crds=$("$helm" template t charts/saaschat -n saaschat-system --include-crds | grep -c '^kind: CustomResourceDefinition$' || true)
sources=(crds/manifests/*.yaml)
[ "$crds" -eq "${#sources[@]}" ] || fail "expected one CRD per crds/manifests file, got $crds"
echo "  CustomResourceDefinition: $crds"

step "helm template --set serviceMonitor.enabled=true"
"$helm" template t charts/saaschat -n saaschat-system --set serviceMonitor.enabled=true | grep -q '^kind: ServiceMonitor$' \
  || fail "no ServiceMonitor rendered"
echo "  ServiceMonitor: 1"

step "helm template refuses replicas > 1 without leader election"
if "$helm" template t charts/saaschat -n saaschat-system --set leaderElection.enabled=false >/dev/null 2>&1; then
  fail "replicaCount 2 with leaderElection.enabled=false rendered"
fi
echo "  refused"

if [ "${SAASCHAT_LINT_SERVER:-}" = 1 ]; then
  step "kubectl apply --dry-run=server (KUBECONFIG=${KUBECONFIG:-unset})"
  command -v kubectl >/dev/null || fail "kubectl not in PATH"
  "$helm" template t charts/saaschat -n default --include-crds | kubectl apply --dry-run=server -f -
fi

step "chart OK"
