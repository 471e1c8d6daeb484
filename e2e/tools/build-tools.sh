#!/usr/bin/env bash
# Builds (or reuses) the tools the e2e tests run besides the control plane:
#   helm          from helm.sh/helm/v3@$HELM_VERSION           (./cmd/helm)
#   external-dns  from sigs.k8s.io/external-dns@$EXTERNAL_DNS_VERSION
# each in its own module graph (`go install pkg@version`), from the Go module proxy only: nothing
# prebuilt is downloaded and no VCS is contacted.
#
# external-dns is v0.21.0, not the newest v0.23.0: v0.23.0's go.mod says `go 1.27.0` and the
# machines run go 1.26. v0.21.0 has the crd source (namespace and label filters) and the rfc2136
# provider (with --rfc2136-axfr); the DNSEndpoint CRD in e2e/thirdparty/crds/ says where it is from.
#
# Prints the absolute bin dir on stdout (last and only line); progress goes to stderr.
#
# Env:
#   CODEBROWSE_TOOLS_ASSETS  dir with ready helm and external-dns: build nothing, use it
#   CODEBROWSE_CACHE         cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/codebrowse), shared
#                            with e2e/cluster/build.sh: go/mod, go/build and bin/tools-<key>/
#   GO                       go command to use (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

HELM_VERSION=v3.22.0
EXTERNAL_DNS_VERSION=v0.21.0
BINARIES=(helm external-dns)

log() { printf 'e2e/tools: %s\n' "$*" >&2; }
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

# 1. Prebuilt binaries.
if [[ -n "${CODEBROWSE_TOOLS_ASSETS:-}" ]]; then
  [[ -d "$CODEBROWSE_TOOLS_ASSETS" ]] ||
    die "CODEBROWSE_TOOLS_ASSETS=$CODEBROWSE_TOOLS_ASSETS is not a directory"
  assets="$(cd "$CODEBROWSE_TOOLS_ASSETS" && pwd)"
  missing="$(missing_in "$assets")"
  [[ -z "$missing" ]] ||
    die "CODEBROWSE_TOOLS_ASSETS=$assets has no executable '$missing' (it needs all of: ${BINARIES[*]}); unset it to build them"
  log "using prebuilt tools from CODEBROWSE_TOOLS_ASSETS=$assets"
  echo "$assets"
  exit 0
fi

# 2. Cache key and warm path: no go command at all, no network.
cache="${CODEBROWSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codebrowse}"
mkdir -p "$cache/bin"
cache="$(cd "$cache" && pwd)"

GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else GO=""
  fi
fi
# `go version` would cost a go call on the warm path; the toolchain's VERSION file says the same.
go_version=""
if [[ -n "$GO" ]]; then
  goroot="$(dirname "$(dirname "$(readlink -f "$(command -v "$GO")")")")"
  go_version="$(head -1 "$goroot/VERSION" 2>/dev/null || true)"
fi

key="$(
  {
    cat "${BASH_SOURCE[0]}"
    echo "helm $HELM_VERSION external-dns $EXTERNAL_DNS_VERSION"
    echo "$go_version"
  } | sha256sum | cut -c1-12
)"
bindir="$cache/bin/tools-$key"

if [[ -z "$(missing_in "$bindir")" ]]; then
  log "helm $HELM_VERSION, external-dns $EXTERNAL_DNS_VERSION ready in $bindir"
  echo "$bindir"
  exit 0
fi

# 3. Cold path.
[[ -n "$GO" ]] || die "no go command found (set GO=/path/to/go or PATH), or set CODEBROWSE_TOOLS_ASSETS to prebuilt binaries"
[[ -n "$go_version" ]] || go_version="$(cd / && "$GO" version)"

# The same lock as e2e/cluster/build.sh: one Go build at a time per cache (the machines have two
# cores), and a second caller of this script waits, then finds the first one's result.
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
# The module proxy only: never fall back to cloning from VCS hosts ("direct").
proxy="$(cd / && "$GO" env GOPROXY | tr ',|' '\n' | { grep -vxE 'direct|off|' || true; } | paste -sd, -)"
[[ -n "$proxy" ]] || die "GOPROXY ($("$GO" env GOPROXY)) names no module proxy"
export GOPROXY="$proxy"

tmp="$(mktemp -d "$cache/bin/.tmp-tools-$key.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

start=$SECONDS
log "building helm $HELM_VERSION and external-dns $EXTERNAL_DNS_VERSION from the Go module proxy ($GOPROXY) with $go_version"
log "(a cold build takes several minutes on 2 cores; later runs reuse $cache)"

# helm's Makefile stamps its version and the Kubernetes version `helm lint`/`template` assume
# (client-go v0.X.Y means Kubernetes 1.X).
(cd "$tmp" && "$GO" mod download -json "helm.sh/helm/v3@$HELM_VERSION" >/dev/null)
client_go="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' \
  "$GOMODCACHE/cache/download/helm.sh/helm/v3/@v/$HELM_VERSION.mod")"
[[ "$client_go" =~ ^v0\.([0-9]+)\. ]] || die "cannot read k8s.io/client-go from helm's go.mod (got '$client_go')"
k8s_minor="${BASH_REMATCH[1]}"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
(cd "$tmp" && GOBIN="$tmp" "$GO" install -p 2 -trimpath -ldflags "$helm_ldflags" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") >&2

(cd "$tmp" && GOBIN="$tmp" "$GO" install -p 2 -trimpath \
  -ldflags "-s -w -X sigs.k8s.io/external-dns/pkg/apis/externaldns.Version=$EXTERNAL_DNS_VERSION" \
  "sigs.k8s.io/external-dns@$EXTERNAL_DNS_VERSION") >&2

missing="$(missing_in "$tmp")"
[[ -z "$missing" ]] || die "build finished without $missing"
"$tmp/helm" version --short >&2
"$tmp/external-dns" --version >&2
rm -rf "$bindir" # an incomplete dir (a binary deleted by hand)
mv -T "$tmp" "$bindir"
trap - EXIT
log "built in $((SECONDS - start)) s: $bindir"
echo "$bindir"
