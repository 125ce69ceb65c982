#!/usr/bin/env bash
# Builds the control-plane programs pinned in go.mod into the folder $1.
# Called by `controlplane build`, which picks the folder (a cache outside the
# clone, keyed by a hash of go.mod, go.sum, this file and the Go version).
# Changing this file changes the cache key.
set -euo pipefail

out=${1:?usage: build.sh OUTDIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

mod_version() { go list -m -f '{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}' "$1"; }

kube_version=$(mod_version k8s.io/kubernetes)   # e.g. v1.36.3
kwok_version=$(mod_version sigs.k8s.io/kwok)    # e.g. v0.8.0
etcd_version=$(mod_version go.etcd.io/etcd/server/v3)
kv=${kube_version#v}
kube_major=${kv%%.*}
kube_minor=${kv#*.}; kube_minor=${kube_minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# What hack/lib/version.sh of kubernetes sets; kwokctl runs `<binary> --version`
# to choose the flags it passes, so an unset (v0.0.0-master) version would be wrong.
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X ${pkg}.gitVersion=${kube_version}"
  kube_ldflags+=" -X ${pkg}.gitMajor=${kube_major}"
  kube_ldflags+=" -X ${pkg}.gitMinor=${kube_minor}"
  kube_ldflags+=" -X ${pkg}.gitTreeState=clean"
  kube_ldflags+=" -X ${pkg}.buildDate=${build_date}"
done
# What kwok's hack/releases.sh sets.
kwok_ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${kwok_version}"
kwok_ldflags+=" -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${kube_version}"
kwok_ldflags+=" -X sigs.k8s.io/kwok/pkg/consts.PreRelease=GA"

export CGO_ENABLED=0
common=(-mod=readonly -trimpath -buildvcs=false)

mkdir -p "$out"
echo "build.sh: kubernetes ${kube_version}, etcd ${etcd_version}, kwok ${kwok_version}, $(go env GOVERSION) -> $out" >&2
set -x
go build "${common[@]}" -ldflags "$kube_ldflags" -o "$out/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl
# The package go.etcd.io/etcd/server/v3 is etcd's main package.
go build "${common[@]}" -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
go build "${common[@]}" -ldflags "$kwok_ldflags" -o "$out/" \
  sigs.k8s.io/kwok/cmd/kwok \
  sigs.k8s.io/kwok/cmd/kwokctl
