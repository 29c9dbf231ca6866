//go:build tools

// Package tools pins Prometheus's promtool and the Prometheus server, built by
// hack/build-controlplane.sh with the build tag remove_all_sd (no service-discovery
// plugins: checking rules, unit-testing them and serving a backfilled TSDB to the
// report's tests need none of the cloud SDKs they pull in).
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
