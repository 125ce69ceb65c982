#!/usr/bin/env bash
# Checks that the control plane from `controlplane up` gives what the operator's
# e2e tests rely on. Runs against $KUBECONFIG; cleans up its namespace.
#
#   trap 'e2e/controlplane/controlplane down' EXIT
#   KUBECONFIG=$(e2e/controlplane/controlplane up) e2e/controlplane/smoke-test.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${KUBECONFIG:?set KUBECONFIG (output of controlplane up)}"
export KUBECONFIG
PATH=$("$here/controlplane" bindir):$PATH

ns=cp-smoke-$$
passed=0
failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
cleanup() {
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  kubectl delete crd widgets.smoke.saaschat.io --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

restricted_pod_spec() {
  cat <<'EOF'
      securityContext:
        runAsNonRoot: true
        runAsUser: 1000
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: app
        image: registry.invalid/fake:1
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: ["ALL"]}
EOF
}

# 1. Pod Security admission: restricted namespace.
kubectl create namespace "$ns" >/dev/null
kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null

# 2. Deployment of 2 compliant replicas becomes Available (kwok fakes the pods).
kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
$(restricted_pod_spec)
EOF
if kubectl -n "$ns" wait deployment/web --for=condition=Available --timeout=90s >/dev/null &&
   [[ "$(kubectl -n "$ns" get deployment web -o jsonpath='{.status.readyReplicas}')" == 2 ]]; then
  ok "Deployment Available with readyReplicas=2"
else
  fail "Deployment not Available/ready"; kubectl -n "$ns" get deploy,rs,pods -o wide || true
fi

# 3. A non-compliant pod is rejected by Pod Security admission.
if out=$(kubectl -n "$ns" run bad --image=registry.invalid/fake:1 --restart=Never 2>&1); then
  fail "non-compliant pod was admitted"
elif grep -q 'violates PodSecurity "restricted' <<<"$out"; then
  ok "non-compliant pod rejected: ${out:0:110}..."
else
  fail "pod rejected for another reason: $out"
fi

# 4. StatefulSet with a volumeClaimTemplate: PVC bound by the hostPath provisioner, pod Ready.
kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
$(restricted_pod_spec)
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
EOF
if kubectl -n "$ns" wait pod/db-0 --for=create --timeout=60s >/dev/null &&
   kubectl -n "$ns" wait pod/db-0 --for=condition=Ready --timeout=90s >/dev/null; then
  ok "StatefulSet pod db-0 Ready, PVC $(kubectl -n "$ns" get pvc data-db-0 -o jsonpath='{.status.phase}')"
else
  fail "StatefulSet pod not Ready"; kubectl -n "$ns" get sts,pvc,pods -o wide || true
  kubectl -n "$ns" describe pod db-0 | tail -5 || true
fi

# 5. Garbage collector: deleting an owner removes its dependents.
kubectl -n "$ns" create configmap owner >/dev/null
uid=$(kubectl -n "$ns" get configmap owner -o jsonpath='{.metadata.uid}')
kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: dependent
  ownerReferences:
  - {apiVersion: v1, kind: ConfigMap, name: owner, uid: "$uid"}
EOF
kubectl -n "$ns" delete deployment web --wait=true >/dev/null
kubectl -n "$ns" delete configmap owner >/dev/null
if kubectl -n "$ns" wait configmap/dependent --for=delete --timeout=60s >/dev/null 2>&1 &&
   kubectl -n "$ns" wait pod -l app=web --for=delete --timeout=60s >/dev/null 2>&1 &&
   [[ -z "$(kubectl -n "$ns" get rs -l app=web -o name)" ]]; then
  ok "garbage collector removed dependent ConfigMap and the Deployment's ReplicaSet/pods"
else
  fail "dependents not garbage-collected"; kubectl -n "$ns" get cm,rs,pods || true
fi

# 6. CRD with a CEL rule (x-kubernetes-validations) is accepted and enforced.
kubectl apply -f - >/dev/null <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.saaschat.io}
spec:
  group: smoke.saaschat.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: "self.minReplicas <= self.maxReplicas"
              message: "minReplicas must not exceed maxReplicas"
            properties:
              minReplicas: {type: integer}
              maxReplicas: {type: integer}
EOF
kubectl wait crd/widgets.smoke.saaschat.io --for=condition=Established --timeout=30s >/dev/null
widget() {
  kubectl -n "$ns" apply -f - 2>&1 <<EOF
apiVersion: smoke.saaschat.io/v1
kind: Widget
metadata: {name: $1}
spec: {minReplicas: $2, maxReplicas: $3}
EOF
}
if good=$(widget good 1 3) && ! bad=$(widget bad 5 2) && grep -q 'minReplicas must not exceed maxReplicas' <<<"$bad"; then
  ok "CRD CEL rule enforced: ${bad:0:120}..."
else
  fail "CRD CEL validation: good=[$good] bad=[${bad:-}]"
fi

# 7. Audit log records writes to core/apps objects.
auditlog=$(dirname "$KUBECONFIG")/logs/audit.log
if [[ -s "$auditlog" ]] &&
   grep '"verb":"create"' "$auditlog" | grep '"resource":"deployments"' |
     grep "\"namespace\":\"$ns\"" | grep -q '"name":"web"'; then
  ok "audit log $auditlog has the Deployment create ($(grep -c "\"namespace\":\"$ns\"" "$auditlog") events in $ns)"
else
  fail "audit log $auditlog lacks the Deployment create"
fi

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
