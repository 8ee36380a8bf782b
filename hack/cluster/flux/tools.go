//go:build tools

// Package tools pins the Flux controllers that ../build-flux.sh compiles.
package tools

import (
	_ "github.com/fluxcd/kustomize-controller"
	_ "github.com/fluxcd/source-controller"
)
