#!/usr/bin/env bash
# Builds (or reuses) the real Kubernetes binaries the e2e tests run:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#                            from k8s.io/kubernetes (version pinned in go.mod)
#   etcd                     from go.etcd.io/etcd/server/v3 (./cmd/etcd, version pinned in go.mod)
#   kwok                     from sigs.k8s.io/kwok@$KWOK_VERSION, in its own module graph
# everything from the Go module proxy, nothing prebuilt is downloaded.
#
# Prints the absolute bin dir on stdout (last and only line); progress goes to stderr.
#
# Env:
#   CODEBROWSE_K8S_ASSETS  dir with ready kube-apiserver, kube-controller-manager, kube-scheduler,
#                          etcd, kubectl, kwok: build nothing, use it
#   CODEBROWSE_CACHE       cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/codebrowse), keep it
#                          outside the clone: go/mod, go/build and bin/<key>/ live there
#   GO                     go command to use (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

KWOK_VERSION=v0.8.0
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler etcd kubectl kwok)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf 'e2e/cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# missing_in DIR: prints the first of BINARIES that is not an executable file in DIR.
missing_in() {
  local b
  for b in "${BINARIES[@]}"; do
    if [[ ! -f "$1/$b" || ! -x "$1/$b" ]]; then
      echo "$b"
      return
    fi
  done
}

# 1. Prebuilt binaries (like envtest's KUBEBUILDER_ASSETS).
if [[ -n "${CODEBROWSE_K8S_ASSETS:-}" ]]; then
  [[ -d "$CODEBROWSE_K8S_ASSETS" ]] ||
    die "CODEBROWSE_K8S_ASSETS=$CODEBROWSE_K8S_ASSETS is not a directory"
  assets="$(cd "$CODEBROWSE_K8S_ASSETS" && pwd)"
  missing="$(missing_in "$assets")"
  [[ -z "$missing" ]] ||
    die "CODEBROWSE_K8S_ASSETS=$assets has no executable '$missing' (it needs all of: ${BINARIES[*]}); unset it to build them"
  log "using prebuilt binaries from CODEBROWSE_K8S_ASSETS=$assets"
  echo "$assets"
  exit 0
fi

# 2. Cache key and warm path: no go build, no network.
GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO=go
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else die "no go command found (set GO=/path/to/go or PATH), or set CODEBROWSE_K8S_ASSETS to prebuilt binaries"
  fi
fi
export GOTOOLCHAIN=local
go_version="$(cd / && "$GO" version)"

k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ { print $2; exit }' "$here/go.mod")"
[[ "$k8s_version" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "cannot read the k8s.io/kubernetes version from $here/go.mod"
k8s_minor="${BASH_REMATCH[1]}"
staging_version="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
# Every k8s.io/* staging replace must be the release that matches k8s.io/kubernetes.
if bad="$(grep -E '^\s*k8s\.io/\S+ => k8s\.io/\S+ v' "$here/go.mod" | grep -v " $staging_version\$")"; then
  die "go.mod replaces staging modules with versions other than $staging_version for k8s.io/kubernetes $k8s_version:"$'\n'"$bad"
fi

cache="${CODEBROWSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codebrowse}"
mkdir -p "$cache/bin"
cache="$(cd "$cache" && pwd)"

key="$(
  {
    cat "$here/go.mod" "$here/go.sum" "$here/cmd/etcd/main.go" "$here/build.sh"
    echo "kwok $KWOK_VERSION"
    echo "$go_version"
  } | sha256sum | cut -c1-12
)"
bindir="$cache/bin/$key"

if [[ -z "$(missing_in "$bindir")" ]]; then
  log "kube-apiserver, kube-controller-manager, kube-scheduler $k8s_version, etcd, kubectl, kwok $KWOK_VERSION ready in $bindir"
  echo "$bindir"
  exit 0
fi

# 3. Cold path. One build at a time per cache (a second caller waits, then finds the dir done).
exec 9>"$cache/bin/.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
  if [[ -z "$(missing_in "$bindir")" ]]; then
    log "built meanwhile by another caller: $bindir"
    echo "$bindir"
    exit 0
  fi
fi

export GOMODCACHE="$cache/go/mod"
export GOCACHE="$cache/go/build"
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED="${CGO_ENABLED:-0}"

tmp="$(mktemp -d "$cache/bin/.tmp-$key.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done

start=$SECONDS
log "building kube-apiserver, kube-controller-manager, kube-scheduler and kubectl $k8s_version and etcd ($("$GO" -C "$here" list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)) from the Go module proxy with $go_version"
log "(a cold build takes ~25 min on 2 cores; later runs reuse $cache)"
(cd "$here" && "$GO" build -p 2 -trimpath -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl ./cmd/etcd) >&2
log "building kwok $KWOK_VERSION in its own module graph"
(cd "$tmp" && GOBIN="$tmp" "$GO" install -p 2 -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION") >&2

missing="$(missing_in "$tmp")"
[[ -z "$missing" ]] || die "build finished without $missing"
rm -rf "$bindir"                 # an incomplete dir (a binary deleted by hand)
mv -T "$tmp" "$bindir"
trap - EXIT
log "built in $((SECONDS - start)) s: $bindir"
echo "$bindir"
