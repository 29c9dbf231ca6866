//go:build tools

// Package tools pins Prometheus's promtool, built by hack/build-controlplane.sh with the
// build tag remove_all_sd (no service-discovery plugins: checking and unit-testing rules
// needs none of the cloud SDKs they pull in).
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
