#!/usr/bin/env bash
# Build the Prometheus server from its upstream Go module at the version pinned in
# prometheus/go.mod, on demand only: the verification tests (the `prometheus`
# fixture of tests/cluster/) start it, `make cluster` does not. Kept apart from
# build.sh so that a change here never invalidates the control plane.
#
# Built with the `remove_all_sd` tag: the tests scrape static targets only, so the
# cloud service discoveries (and their SDKs) are left out of the binary. The web UI's
# assets are not built in (the HTTP API, /-/ready and the scrape do not need them).
#
# The binary is cached outside the repository, in
#   ${OPTIINFRA_CACHE:-$HOME/.cache/optiinfra}/prometheus-<version>-<pin hash>/bin/prometheus
# and rebuilt only when prometheus/go.mod, prometheus/go.sum or this script change.
# The build runs under `nice` (the machine is shared). Prints the bin directory on
# stdout; progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/prometheus"

module=github.com/prometheus/prometheus
version="$(awk -v m="$module" '{for (i = 1; i < NF; i++) if ($i == m && $(i + 1) ~ /^v/) {print $(i + 1); exit}}' go.mod)"
pin_hash="$(cat go.mod go.sum ../build-prometheus.sh | sha256sum | cut -c1-12)"
cache="${OPTIINFRA_CACHE:-$HOME/.cache/optiinfra}"
bin="$cache/prometheus-$version-$pin_hash/bin"

if [[ -f "$bin/.complete" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
# GOTOOLCHAIN=local: never fetch another Go; a pin that needs a newer one fails here.
export CGO_ENABLED=0 GOFLAGS="-mod=mod ${GOFLAGS:-}" GOTOOLCHAIN=local
start=$SECONDS
echo "building prometheus $version ..." >&2
nice -n 10 go build -trimpath -tags remove_all_sd \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=${version#v}" \
  -o "$bin/prometheus" "$module/cmd/prometheus"
touch "$bin/.complete"
echo "prometheus built in $((SECONDS - start))s into $bin" >&2
echo "$bin"
