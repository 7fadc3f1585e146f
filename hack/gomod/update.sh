#!/usr/bin/env bash
# Regenerate the wrapper Go modules that hack/build-tools.sh builds from.
#
#   hack/gomod/update.sh kubernetes v1.36.3
#   hack/gomod/update.sh etcd v3.6.16
#   hack/gomod/update.sh kwok v0.8.0
#   hack/gomod/update.sh victoriametrics v1.151.0
#   hack/gomod/update.sh argo-rollouts v1.9.0
#
# k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/client-go, ...) at v0.0.0 and
# maps them to ./staging/src/... with replace directives, which only apply inside its own repo.
# A module that depends on it must replace every one of them with the published v0.X.Y tag, so
# the list is derived from the kubernetes go.mod of the chosen version rather than kept by hand.
# Commit the resulting go.mod and go.sum: builds then use exactly these versions.
set -euo pipefail

component=${1:?usage: update.sh kubernetes|etcd|kwok|victoriametrics|argo-rollouts VERSION}
version=${2:?usage: update.sh kubernetes|etcd|kwok|victoriametrics|argo-rollouts VERSION}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir="$here/$component"
export GOTOOLCHAIN=${GOTOOLCHAIN:-local} GOFLAGS=-mod=mod
mkdir -p "$dir"
cd "$dir"
rm -f go.mod go.sum

case "$component" in
kubernetes)
    go mod init gpu-rightsizer.dev/hack/kubernetes >/dev/null 2>&1
    modfile=$(go mod download -json "k8s.io/kubernetes@$version" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    staging_tag="v0.${version#v1.}"
    # Lines like "k8s.io/api => ./staging/src/k8s.io/api" (inside a replace block or not).
    modules=$(sed -nE 's#^[[:space:]]*(replace[[:space:]]+)?(k8s\.io/[^[:space:]]+)[[:space:]]+=>[[:space:]]+\./staging/src/.*#\2#p' "$modfile")
    [ -n "$modules" ] || { echo "no staging modules found in $modfile" >&2; exit 1; }
    go mod edit -require="k8s.io/kubernetes@$version"
    for m in $modules; do
        go mod edit -replace="$m=$m@$staging_tag"
    done
    for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
        go mod edit -tool="k8s.io/kubernetes/cmd/$cmd"
    done
    ;;
etcd)
    go mod init gpu-rightsizer.dev/hack/etcd >/dev/null 2>&1
    go mod edit -require="go.etcd.io/etcd/server/v3@$version"
    ;;
kwok)
    go mod init gpu-rightsizer.dev/hack/kwok >/dev/null 2>&1
    go mod edit -require="sigs.k8s.io/kwok@$version"
    go mod edit -tool="sigs.k8s.io/kwok/cmd/kwok"
    ;;
victoriametrics)
    go mod init gpu-rightsizer.dev/hack/victoriametrics >/dev/null 2>&1
    go mod edit -require="github.com/VictoriaMetrics/VictoriaMetrics@$version"
    go mod edit -tool="github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics"
    go mod edit -tool="github.com/VictoriaMetrics/VictoriaMetrics/app/vmauth"
    ;;
argo-rollouts)
    # Its go.mod pins the k8s.io modules with replace directives, which (as for Kubernetes) only
    # apply inside its own repo: copy them here.
    go mod init gpu-rightsizer.dev/hack/argo-rollouts >/dev/null 2>&1
    modfile=$(go mod download -json "github.com/argoproj/argo-rollouts@$version" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    go mod edit -require="github.com/argoproj/argo-rollouts@$version"
    replaces=$(go mod edit -json "$modfile" |
        python3 -c 'import json,sys; [print(r["Old"]["Path"] + "=" + r["New"]["Path"] + "@" + r["New"]["Version"]) for r in json.load(sys.stdin).get("Replace") or ()]')
    for r in $replaces; do
        go mod edit -replace="$r"
    done
    go mod edit -tool="github.com/argoproj/argo-rollouts/cmd/rollouts-controller"
    ;;
*)
    echo "unknown component: $component" >&2
    exit 2
    ;;
esac

go mod edit -go=1.22.0 -toolchain=none
go mod tidy
# tidy may raise the go line to the highest one among the dependencies; report it.
echo "$component $version: $(grep -E '^go ' go.mod)"
