//go:build tools

// Package tools pins the Prometheus server that ../build-prometheus.sh compiles.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
)
