// Template module for building the Kubeflow notebook-controller
// (github.com/kubeflow/notebooks/components/notebook-controller, branch notebooks-v1).
// It needs controller-runtime 0.12 / client-go 0.24, which conflict with the
// k8s 1.36 modules of hack/controlplane, hence its own module. hack/build-controlplane.sh
// copies this file into a scratch dir under the build cache and runs
// `go get <module>@<ref>` there, because the module has no tagged version.
module gpushift.local/notebook-controller

go 1.26.0
