#!/usr/bin/env bash
# Copies the generated CRD manifests (crds/manifests/*.yaml at the repository root) into the chart's crds/
# folder: Helm installs CRDs only from inside the chart, and a chart cannot reference files outside itself.
#
#   charts/saaschat/sync-crds.sh           copy (and remove copies whose source is gone)
#   charts/saaschat/sync-crds.sh --check   exit 1 with a message when the copies differ from the sources
#
# The sources are generated from crds/src (`cargo run -p saaschat-crds --bin crdgen`); never edit either copy.
set -euo pipefail

chart_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source_dir=$(cd "$chart_dir/../../crds/manifests" && pwd)
target_dir="$chart_dir/crds"

mode=sync
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  -h|--help) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

shopt -s nullglob
sources=("$source_dir"/*.yaml)
if [ ${#sources[@]} -eq 0 ]; then
  echo "sync-crds: no CRD manifests in $source_dir" >&2
  exit 1
fi

if [ "$mode" = check ]; then
  problems=()
  for src in "${sources[@]}"; do
    name=$(basename "$src")
    if [ ! -f "$target_dir/$name" ]; then
      problems+=("missing: charts/saaschat/crds/$name")
    elif ! cmp -s "$src" "$target_dir/$name"; then
      problems+=("differs: charts/saaschat/crds/$name")
    fi
  done
  for copy in "$target_dir"/*.yaml; do
    name=$(basename "$copy")
    [ -f "$source_dir/$name" ] || problems+=("stale (no source in crds/manifests): charts/saaschat/crds/$name")
  done
  if [ ${#problems[@]} -gt 0 ]; then
    echo "sync-crds: the chart's CRDs are out of date with crds/manifests:" >&2
    printf '  %s\n' "${problems[@]}" >&2
    echo "sync-crds: run charts/saaschat/sync-crds.sh and commit the result" >&2
    exit 1
  fi
  echo "sync-crds: charts/saaschat/crds matches crds/manifests (${#sources[@]} CRDs)"
  exit 0
fi

mkdir -p "$target_dir"
for copy in "$target_dir"/*.yaml; do
  name=$(basename "$copy")
  if [ ! -f "$source_dir/$name" ]; then
    echo "sync-crds: removing charts/saaschat/crds/$name (no source)"
    rm -f "$copy"
  fi
done
for src in "${sources[@]}"; do
  name=$(basename "$src")
  if cmp -s "$src" "$target_dir/$name" 2>/dev/null; then
    echo "sync-crds: unchanged charts/saaschat/crds/$name"
  else
    cp "$src" "$target_dir/$name"
    echo "sync-crds: copied crds/manifests/$name -> charts/saaschat/crds/$name"
  fi
done
