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
# and rebuilt only when prometheus/go.mod, prometheus/go.sum, this script or
# cached-bin.sh change.
# The build runs under `nice` (the machine is shared). Prints the bin directory on
# stdout; progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/prometheus"

module=github.com/prometheus/prometheus
version="$(awk -v m="$module" '{for (i = 1; i < NF; i++) if ($i == m && $(i + 1) ~ /^v/) {print $(i + 1); exit}}' go.mod)"
# shellcheck source=cached-bin.sh
source ../cached-bin.sh
cached_bin prometheus "$version" go.mod go.sum ../build-prometheus.sh ../cached-bin.sh
# The module's v0.MNN.P is Prometheus M.NN.P (v0.316.0: 3.16.0), the version it reports.
release="${version#v0.}"
release="${release:0:1}.${release:1}"
start=$SECONDS
echo "building prometheus $release (module $version) ..." >&2
nice -n 10 go build -trimpath -tags remove_all_sd \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
  -o "$bin/prometheus" "$module/cmd/prometheus"
touch "$bin/.complete"
echo "prometheus built in $((SECONDS - start))s into $bin" >&2
echo "$bin"
