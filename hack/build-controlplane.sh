#!/usr/bin/env bash
# Build (once) the binaries of the local Kubernetes control plane used by
# tests/cluster and the demo, from package registries only:
#   etcd                        hack/tools-etcd     (go.etcd.io/etcd/server/v3; Debian 12's
#                               etcd-server 3.4.23 lacks RequestWatchProgress, which kwok needs)
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#                               hack/controlplane   (k8s.io/kubernetes + staging modules)
#   kwok (+ its stage config)   hack/tools-kwok
#   helm, kubeconform           hack/tools-cli
#   promtool                    hack/tools-prom     (Prometheus's; the chart's alert rules)
#   prometheus                  hack/tools-prom     (the server, without its web UI's assets:
#                               serves a backfilled TSDB to `gpushift report`'s tests)
#   notebook-controller         Kubeflow's, from its source in ../shared/kubeflow/notebook-controller
#                               (read-only there: only -o and Go's caches are written)
#
# Binaries go to ${GPUSHIFT_CACHE:-$HOME/.cache/gpushift}/bin/<name>-<version>, outside
# the repo; a binary that is already there is not rebuilt (idempotent). Builds run one
# after another (a cold kube-apiserver build takes about 10 minutes on 2 cores).
#
# Usage: hack/build-controlplane.sh [--print-dir] [name ...]
#   names: etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm
#          kubeconform promtool prometheus notebook-controller (default: all)
# Exit status: non-zero when a required binary could not be built. The optional tools
# (kubectl, helm, kubeconform, promtool, prometheus) only warn, unless named explicitly.
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=controlplane-versions.env
source "$HACK/controlplane-versions.env"

CACHE="${GPUSHIFT_CACHE:-$HOME/.cache/gpushift}"
BIN="$CACHE/bin"
LOGS="$CACHE/logs"
mkdir -p "$BIN" "$LOGS"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$BIN"
  exit 0
fi

export CGO_ENABLED=0
# Go newer than 1.26 changed encoding/json; k8s 1.36's OpenAPI needs the old one.
go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
if [[ "$go_minor" =~ ^[0-9]+$ ]] && ((go_minor > 26)); then
  export GOEXPERIMENT="${GOEXPERIMENT:+$GOEXPERIMENT,}nojsonv2"
fi

# One build at a time, also across processes (pytest fixture + a shell).
exec 9>"$CACHE/build.lock"
flock 9

REQUIRED=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok notebook-controller)
ALL=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubectl helm kubeconform promtool prometheus notebook-controller)
if (($# > 0)); then
  WANT=("$@")
  EXPLICIT=1
else
  WANT=("${ALL[@]}")
  EXPLICIT=0
fi

failed=()
soft_failed=()

log() { printf '[build-controlplane] %s\n' "$*" >&2; }

is_required() {
  local n="$1" r
  ((EXPLICIT)) && return 0
  for r in "${REQUIRED[@]}"; do [[ "$r" == "$n" ]] && return 0; done
  return 1
}

note_failure() {
  if is_required "$1"; then failed+=("$1"); else soft_failed+=("$1"); fi
}

check_mod_version() { # dir module expected
  local got
  got="$(cd "$1" && go list -m -f '{{.Version}}' "$2")"
  if [[ "$got" != "$3" ]]; then
    log "ERROR: $1/go.mod has $2 $got but controlplane-versions.env says $3"
    exit 2
  fi
}

# go_build NAME VERSION MODULE_DIR PACKAGE LDFLAGS
go_build() {
  local name="$1" version="$2" dir="$3" pkg="$4" ldflags="$5"
  local out="$BIN/$name-$version"
  if [[ -x "$out" ]]; then
    log "$name $version: cached ($out)"
    return 0
  fi
  local where="$dir"
  [[ "$dir" == "$HACK/"* ]] && where="hack/${dir#"$HACK/"}"
  log "$name $version: building $pkg in $where ..."
  local start end
  start=$(date +%s)
  if (cd "$dir" && go build -trimpath -ldflags="-s -w $ldflags" -o "$out.tmp.$$" "$pkg") \
    >"$LOGS/build-$name.log" 2>&1; then
    mv -f "$out.tmp.$$" "$out"
    end=$(date +%s)
    log "$name $version: built in $((end - start))s ($(du -h "$out" | cut -f1))"
    echo "$(date -u +%FT%TZ) $name $version $((end - start))s" >>"$LOGS/build-times.txt"
  else
    rm -f "$out.tmp.$$"
    log "$name $version: BUILD FAILED, see $LOGS/build-$name.log:"
    tail -n 20 "$LOGS/build-$name.log" >&2 || true
    note_failure "$name"
  fi
}

build_etcd() {
  check_mod_version "$HACK/tools-etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  go_build etcd "$ETCD_VERSION" "$HACK/tools-etcd" go.etcd.io/etcd/server/v3 \
    "-X go.etcd.io/etcd/api/v3/version.GitSHA=gpushift"
}

K8S_LDFLAGS="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
-X k8s.io/component-base/version.gitMajor=$(echo "${K8S_VERSION#v}" | cut -d. -f1) \
-X k8s.io/component-base/version.gitMinor=$(echo "${K8S_VERSION#v}" | cut -d. -f2) \
-X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION \
-X k8s.io/client-go/pkg/version.gitMajor=$(echo "${K8S_VERSION#v}" | cut -d. -f1) \
-X k8s.io/client-go/pkg/version.gitMinor=$(echo "${K8S_VERSION#v}" | cut -d. -f2) \
-X k8s.io/client-go/pkg/version.gitTreeState=clean"

build_k8s() { # name
  check_mod_version "$HACK/controlplane" k8s.io/kubernetes "$K8S_VERSION"
  go_build "$1" "$K8S_VERSION" "$HACK/controlplane" "k8s.io/kubernetes/cmd/$1" "$K8S_LDFLAGS"
}

build_kwok() {
  check_mod_version "$HACK/tools-kwok" sigs.k8s.io/kwok "$KWOK_VERSION"
  go_build kwok "$KWOK_VERSION" "$HACK/tools-kwok" sigs.k8s.io/kwok/cmd/kwok \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
  # kwok's controller needs Stages to move nodes to Ready and pods to Running. Take
  # kwok's own default stages (what kwokctl uses) from the module, as one config file.
  local stages="$BIN/kwok-stages-$KWOK_VERSION.yaml"
  if [[ ! -s "$stages" ]]; then
    local kdir s
    kdir="$(cd "$HACK/tools-kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
    : >"$stages.tmp"
    for s in node/fast/node-initialize.yaml \
      node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      {
        echo "---"
        cat "$kdir/kustomize/stage/$s"
      } >>"$stages.tmp"
    done
    mv -f "$stages.tmp" "$stages"
    log "kwok: wrote default stages to $stages"
  fi
}

build_cli() { # helm | kubeconform
  case "$1" in
  helm)
    check_mod_version "$HACK/tools-cli" helm.sh/helm/v3 "$HELM_VERSION"
    go_build helm "$HELM_VERSION" "$HACK/tools-cli" helm.sh/helm/v3/cmd/helm \
      "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    ;;
  kubeconform)
    check_mod_version "$HACK/tools-cli" github.com/yannh/kubeconform "$KUBECONFORM_VERSION"
    go_build kubeconform "$KUBECONFORM_VERSION" "$HACK/tools-cli" \
      github.com/yannh/kubeconform/cmd/kubeconform "-X main.version=$KUBECONFORM_VERSION"
    ;;
  esac
}

build_promtool() {
  check_mod_version "$HACK/tools-prom" github.com/prometheus/prometheus "$PROMETHEUS_VERSION"
  # remove_all_sd: without the service-discovery plugins (cloud SDKs), which checking
  # and unit-testing rules does not need.
  GOFLAGS="${GOFLAGS:+$GOFLAGS }-tags=remove_all_sd" go_build promtool "$PROMETHEUS_VERSION" \
    "$HACK/tools-prom" github.com/prometheus/prometheus/cmd/promtool ""
}

build_prometheus() {
  check_mod_version "$HACK/tools-prom" github.com/prometheus/prometheus "$PROMETHEUS_VERSION"
  # Same module and tag as promtool, so most packages come from Go's build cache. Without
  # the builtinassets tag the web UI is not embedded (the tests only use the HTTP API).
  GOFLAGS="${GOFLAGS:+$GOFLAGS }-tags=remove_all_sd" go_build prometheus "$PROMETHEUS_VERSION" \
    "$HACK/tools-prom" github.com/prometheus/prometheus/cmd/prometheus ""
}

build_notebook_controller() {
  # Kubeflow's source, unchanged, beside the repo (CI lays ../shared read-only).
  local src="${GPUSHIFT_SHARED:-$HACK/../../shared}/kubeflow/notebook-controller"
  if [[ ! -f "$src/go.mod" ]]; then
    log "notebook-controller: no source at $src (../shared/kubeflow/notebook-controller)"
    note_failure notebook-controller
    return 0
  fi
  go_build notebook-controller "$NOTEBOOK_CONTROLLER_REF" "$(cd "$src" && pwd)" . ""
}

for name in "${WANT[@]}"; do
  case "$name" in
  etcd) build_etcd ;;
  kube-apiserver | kube-controller-manager | kube-scheduler | kubectl) build_k8s "$name" ;;
  kwok) build_kwok ;;
  helm | kubeconform) build_cli "$name" ;;
  promtool) build_promtool ;;
  prometheus) build_prometheus ;;
  notebook-controller) build_notebook_controller ;;
  *)
    log "unknown binary: $name"
    exit 2
    ;;
  esac
done

if ((${#soft_failed[@]})); then
  log "optional binaries not built: ${soft_failed[*]}"
fi
if ((${#failed[@]})); then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "done; binaries in $BIN"
