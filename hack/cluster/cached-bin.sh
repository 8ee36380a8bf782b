# Sourced by the on-demand build scripts (build-prometheus.sh): where a build is cached and
# whether it is done. `cached_bin NAME VERSION FILE...` sets $bin to
#   ${OPTIINFRA_CACHE:-$HOME/.cache/optiinfra}/NAME-VERSION-<hash of the FILEs>/bin
# and, when that build completed (bin/.complete), prints it and exits; otherwise it creates
# the directory and exports a static Go build with the local toolchain only
# (GOTOOLCHAIN=local: never fetch another Go; a pin that needs a newer one fails).
cached_bin() {
  local name="$1" version="$2" pin_hash
  shift 2
  pin_hash="$(cat "$@" | sha256sum | cut -c1-12)"
  bin="${OPTIINFRA_CACHE:-$HOME/.cache/optiinfra}/$name-$version-$pin_hash/bin"
  if [[ -f "$bin/.complete" ]]; then
    echo "$bin"
    exit 0
  fi
  mkdir -p "$bin"
  export CGO_ENABLED=0 GOFLAGS="-mod=mod ${GOFLAGS:-}" GOTOOLCHAIN=local
}
