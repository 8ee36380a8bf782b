//go:build tools

// Package tools pins the helm CLI that ../build-helm.sh compiles.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
