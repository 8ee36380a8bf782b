#!/usr/bin/env bash
# Build the helm CLI from its upstream Go module at the version pinned in
# helm/go.mod, on demand only: the chart's tests (tests/cluster/test_helm.py) call
# it, `make cluster` does not. Kept apart from build.sh so that a change here never
# invalidates the control plane.
#
# The binary is cached outside the repository, in
#   ${OPTIINFRA_CACHE:-$HOME/.cache/optiinfra}/helm-<version>-<pin hash>/bin/helm
# and rebuilt only when helm/go.mod, helm/go.sum or this script change. The build
# runs under `nice` (the machine is shared). Prints the bin directory on stdout;
# progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/helm"

version="$(awk '{for (i = 1; i < NF; i++) if ($i == "helm.sh/helm/v4" && $(i + 1) ~ /^v/) {print $(i + 1); exit}}' go.mod)"
pin_hash="$(cat go.mod go.sum ../build-helm.sh | sha256sum | cut -c1-12)"
cache="${OPTIINFRA_CACHE:-$HOME/.cache/optiinfra}"
bin="$cache/helm-$version-$pin_hash/bin"

if [[ -f "$bin/.complete" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
# GOTOOLCHAIN=local: never fetch another Go; a pin that needs a newer one fails here.
export CGO_ENABLED=0 GOFLAGS="-mod=mod ${GOFLAGS:-}" GOTOOLCHAIN=local
start=$SECONDS
echo "building helm $version ..." >&2
nice -n 10 go build -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" \
  -o "$bin/helm" helm.sh/helm/v4/cmd/helm
touch "$bin/.complete"
echo "helm built in $((SECONDS - start))s into $bin" >&2
echo "$bin"
