#!/usr/bin/env bash
# Build the local control plane from upstream Go modules at the versions pinned
# in go.mod (kube-apiserver, kube-controller-manager, kubectl, etcd).
#
# Binaries are cached outside the repository, in
#   ${OPTIINFRA_CACHE:-$HOME/.cache/optiinfra}/k8s-<version>-<pin hash>/bin
# and rebuilt only when go.mod, go.sum or this script change. Prints the bin
# directory on stdout; progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

k8s_version="$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' go.mod)"
etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' go.mod)"
pin_hash="$(cat go.mod go.sum build.sh | sha256sum | cut -c1-12)"
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
for cmd in kube-apiserver kube-controller-manager kubectl; do
  echo "building $cmd $k8s_version ..." >&2
  go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd"
done
echo "building etcd $etcd_version ..." >&2
go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
touch "$bin/.complete"
echo "control plane built in $((SECONDS - start))s into $bin" >&2
echo "$bin"
