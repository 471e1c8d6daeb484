#!/usr/bin/env bash
# Builds (or reuses) KubeVirt's real control plane for the e2e tests, from the Go module proxy:
#   virt-api, virt-controller   kubevirt.io/kubevirt (version pinned in go.mod), CGO_ENABLED=0
#   kubevirt-install            ./cmd/kubevirt-install: what virt-operator would install
#   kubevirt-crds.json          every CRD virt-operator installs, and CDI's five (from
#                               kubevirt.io/containerized-data-importer, pinned below)
#   versions.txt                the module each binary was built from (its Go build info)
#   snapshot-crds/              the CSI snapshotter's CRDs (VolumeSnapshot, -Class, -Content), from
#                               github.com/kubernetes-csi/external-snapshotter/client at the version
#                               kubevirt's go.mod requires
# Prints the absolute bin dir on stdout (last and only line); progress goes to stderr.
#
# Env: CODEBROWSE_KUBEVIRT_ASSETS (a dir holding all of the above: build nothing), CODEBROWSE_CACHE,
# GO, as e2e/cluster/build.sh.
set -euo pipefail

CDI_VERSION=v1.64.0
BINARIES=(virt-api virt-controller kubevirt-install kubevirt-crds.json snapshot-crds versions.txt)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf 'e2e/kubevirt: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

missing_in() {
  local b
  for b in "${BINARIES[@]}"; do
    if [[ ! -e "$1/$b" ]]; then
      echo "$b"
      return
    fi
  done
}

if [[ -n "${CODEBROWSE_KUBEVIRT_ASSETS:-}" ]]; then
  assets="$(cd "$CODEBROWSE_KUBEVIRT_ASSETS" && pwd)" || die "CODEBROWSE_KUBEVIRT_ASSETS=$CODEBROWSE_KUBEVIRT_ASSETS is not a directory"
  missing="$(missing_in "$assets")"
  [[ -z "$missing" ]] || die "CODEBROWSE_KUBEVIRT_ASSETS=$assets has no '$missing' (it needs all of: ${BINARIES[*]})"
  echo "$assets"
  exit 0
fi

GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO=go
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else die "no go command found (set GO=/path/to/go or PATH)"
  fi
fi
export GOTOOLCHAIN=local
go_version="$(cd / && "$GO" version)"
kubevirt_version="$(awk '$1 == "kubevirt.io/kubevirt" && $2 ~ /^v1\./ { print $2; exit }' "$here/go.mod")"
[[ -n "$kubevirt_version" ]] || die "cannot read the kubevirt.io/kubevirt version from $here/go.mod"

cache="${CODEBROWSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codebrowse}"
mkdir -p "$cache/bin"
cache="$(cd "$cache" && pwd)"
key="$(
  {
    cat "$here/go.mod" "$here/go.sum" "$here/build.sh"
    find "$here/cmd" -type f -name '*.go' | sort | xargs cat
    echo "cdi $CDI_VERSION"
    echo "$go_version"
  } | sha256sum | cut -c1-12
)"
bindir="$cache/bin/kubevirt-$key"

if [[ -z "$(missing_in "$bindir")" ]]; then
  log "virt-api, virt-controller $kubevirt_version ready in $bindir"
  echo "$bindir"
  exit 0
fi

exec 9>"$cache/bin/.lock-kubevirt"
if command -v flock >/dev/null 2>&1; then
  flock 9
  if [[ -z "$(missing_in "$bindir")" ]]; then
    echo "$bindir"
    exit 0
  fi
fi

export GOMODCACHE="$cache/go/mod"
export GOCACHE="$cache/go/build"
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0
# CDI's release is not in the checksum database; its module's hash is checked against go.sum-less
# download only (it is read, never built).
export GONOSUMDB=kubevirt.io/containerized-data-importer

tmp="$(mktemp -d "$cache/bin/.tmp-kubevirt-$key.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

start=$SECONDS
ldflags="-s -w"
for pkg in kubevirt.io/client-go/version; do
  ldflags+=" -X $pkg.gitVersion=$kubevirt_version -X $pkg.gitTreeState=clean"
done
log "building virt-api and virt-controller $kubevirt_version from the Go module proxy with $go_version"
log "(a cold build takes ~15 min on 2 cores; later runs reuse $cache)"
(cd "$here" && "$GO" build -p 2 -trimpath -ldflags "$ldflags" -o "$tmp/" \
  kubevirt.io/kubevirt/cmd/virt-api kubevirt.io/kubevirt/cmd/virt-controller ./cmd/kubevirt-install) >&2

cdi_dir="$(cd / && GOFLAGS= "$GO" mod download -json "kubevirt.io/containerized-data-importer@$CDI_VERSION" | awk -F'"' '$2 == "Dir" { print $4 }')"
[[ -f "$cdi_dir/pkg/operator/resources/crds_generated.go" ]] || die "CDI $CDI_VERSION has no pkg/operator/resources/crds_generated.go"
"$tmp/kubevirt-install" crds --cdi-crds "$cdi_dir/pkg/operator/resources/crds_generated.go" > "$tmp/kubevirt-crds.json"

snapshotter="$(awk '$1 == "github.com/kubernetes-csi/external-snapshotter/client/v4" { print $2; exit }' "$here/go.sum")"
[[ -n "$snapshotter" ]] || die "go.sum names no github.com/kubernetes-csi/external-snapshotter/client/v4"
snap_dir="$(cd / && GOFLAGS= "$GO" mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v4@$snapshotter" | awk -F'"' '$2 == "Dir" { print $4 }')"
mkdir -p "$tmp/snapshot-crds"
cp "$snap_dir"/config/crd/snapshot.storage.k8s.io_*.yaml "$tmp/snapshot-crds/"
chmod -R u+w "$tmp/snapshot-crds"

# What each binary was built from, as its build info says (the harness prints it).
for b in virt-api virt-controller; do
  echo "$b $("$GO" version -m "$tmp/$b" | awk '$1 == "mod" { print $2 "@" $3; exit }')"
done > "$tmp/versions.txt"

missing="$(missing_in "$tmp")"
[[ -z "$missing" ]] || die "build finished without $missing"
rm -rf "$bindir"
mv -T "$tmp" "$bindir"
trap - EXIT
log "built in $((SECONDS - start)) s: $bindir"
echo "$bindir"
