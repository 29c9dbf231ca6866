//go:build tools

// Package tools pins the Kubernetes commands built by hack/build-controlplane.sh,
// so that `go build k8s.io/kubernetes/cmd/...` resolves inside this module.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
