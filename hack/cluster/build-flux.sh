#!/usr/bin/env bash
# Build Flux's source-controller and kustomize-controller from their upstream Go
# modules at the versions pinned in flux/go.mod, on demand only: the GitOps tests
# (tests/cluster/test_gitops.py) and `make gitops-demo` call it, `make cluster` does not.
# Kept apart from build.sh so that a change here never invalidates the control plane.
#
# Binaries are cached outside the repository, in
#   ${OPTIINFRA_CACHE:-$HOME/.cache/optiinfra}/flux-<version>-<pin hash>/bin
# and rebuilt only when flux/go.mod, flux/go.sum or this script change. Beside bin/
# lies crds/: the controllers' CRDs, copied from the pinned modules'
# config/crd/bases. Prints the bin directory on stdout; progress goes to stderr.
# Set GOFLAGS=-p=1 (or run under nice) to keep the build from taking the machine.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/flux"

version="$(awk '$1=="github.com/fluxcd/source-controller" && $2 ~ /^v/ {print $2; exit}' go.mod)"
pin_hash="$(cat go.mod go.sum ../build-flux.sh | sha256sum | cut -c1-12)"
cache="${OPTIINFRA_CACHE:-$HOME/.cache/optiinfra}"
bin="$cache/flux-$version-$pin_hash/bin"

if [[ -f "$bin/.complete" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin" "$bin/../crds"
# GOTOOLCHAIN=local: never fetch another Go; a pin that needs a newer one fails here.
export CGO_ENABLED=0 GOFLAGS="-mod=mod ${GOFLAGS:-}" GOTOOLCHAIN=local
start=$SECONDS
for cmd in source-controller kustomize-controller; do
  echo "building $cmd $version ..." >&2
  step_start=$SECONDS
  go build -trimpath -ldflags "-s -w" -o "$bin/$cmd" "github.com/fluxcd/$cmd"
  echo "  $cmd took $((SECONDS - step_start))s" >&2
  src="$(go list -m -f '{{.Dir}}' "github.com/fluxcd/$cmd")"
  cp "$src"/config/crd/bases/*.yaml "$bin/../crds/"
done
chmod u+w "$bin"/../crds/*.yaml
touch "$bin/.complete"
echo "flux built in $((SECONDS - start))s into $bin" >&2
echo "$bin"
