#!/usr/bin/env bash
# Build the local control plane from upstream Go modules at the versions pinned
# in go.mod (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# etcd) and in kwok/go.mod (kwok, kept in a module of its own: its dependencies
# are newer than those of k8s.io/kubernetes and would move under the others).
#
# Binaries are cached outside the repository, in
#   ${OPTIINFRA_CACHE:-$HOME/.cache/optiinfra}/k8s-<version>-<pin hash>/bin
# and rebuilt only when go.mod, go.sum, kwok/go.mod, kwok/go.sum or this script
# change. Beside bin/ lies kwok-stages.yaml: kwok's default node and pod stages
# (the ones kwokctl uses), copied from the pinned kwok module. Prints the bin
# directory on stdout; progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

k8s_version="$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' go.mod)"
etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' go.mod)"
kwok_version="$(awk '{for (i = 1; i < NF; i++) if ($i == "sigs.k8s.io/kwok" && $(i + 1) ~ /^v/) {print $(i + 1); exit}}' kwok/go.mod)"
pin_hash="$(cat go.mod go.sum kwok/go.mod kwok/go.sum build.sh | sha256sum | cut -c1-12)"
cache="${OPTIINFRA_CACHE:-$HOME/.cache/optiinfra}"
bin="$cache/k8s-$k8s_version-$pin_hash/bin"

if [[ -f "$bin/.complete" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

export CGO_ENABLED=0 GOFLAGS=-mod=mod
start=$SECONDS
step() { echo "building $1 $2 ..." >&2; step_start=$SECONDS; }
took() { echo "  $1 took $((SECONDS - step_start))s" >&2; }
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  step "$cmd" "$k8s_version"
  go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  took "$cmd"
done
step etcd "$etcd_version"
go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
took etcd
step kwok "$kwok_version"
(cd kwok && go build -trimpath -ldflags "-s -w" -o "$bin/kwok" sigs.k8s.io/kwok/cmd/kwok)
took kwok
kwok_src="$(cd kwok && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
             pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
  echo "---"
  cat "$kwok_src/kustomize/stage/$stage.yaml"
done > "$bin/../kwok-stages.yaml"
touch "$bin/.complete"
echo "control plane built in $((SECONDS - start))s into $bin" >&2
echo "$bin"
