#!/usr/bin/env bash
# Copies a third-party CRD, verbatim, out of the Go module that publishes it into
# e2e/thirdparty/crds/, under a header naming module, version, path and module checksum.
#
#   e2e/thirdparty/fetch-crd.sh NAME            (re)write the CRD NAME (below)
#   e2e/thirdparty/fetch-crd.sh NAME --check    exit 1 if the committed copy differs
#
# NAME: dnsendpoint  ExternalDNS's DNSEndpoint (sigs.k8s.io/external-dns)
#       nad          Multus' NetworkAttachmentDefinition (the Network Plumbing Working Group's
#                    client module, which carries the CRD Multus installs)
#
# Needs only `go` and the Go module proxy. external-dns v0.23.0 declares `go 1.27`; an older go
# still downloads, verifies (go.sum database) and extracts it but then exits 1 with "requires go
# >= 1.27.0" and no "Dir" in its JSON, so this script reads the extracted directory itself, and
# falls back to the verified module zip.
set -euo pipefail

case "${1:-}" in
  dnsendpoint)
    MODULE=sigs.k8s.io/external-dns
    VERSION=${EXTERNAL_DNS_VERSION:-v0.23.0}
    CRD_PATH=config/crd/standard/dnsendpoints.externaldns.k8s.io.yaml
    OUT=dnsendpoints.externaldns.k8s.io.yaml
    ;;
  nad)
    MODULE=github.com/k8snetworkplumbingwg/network-attachment-definition-client
    VERSION=v1.7.7
    CRD_PATH=artifacts/networks-crd.yaml
    OUT=network-attachment-definitions.k8s.cni.cncf.io.yaml
    ;;
  *)
    echo "usage: e2e/thirdparty/fetch-crd.sh dnsendpoint|nad [--check]" >&2
    exit 2
    ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/crds/$OUT"
export GOMODCACHE=${GOMODCACHE:-$HOME/.cache/codebrowse/go/mod}
export GOFLAGS=-mod=mod

json_field() { # json_field NAME < go-mod-download-json
  sed -n "s/^[[:space:]]*\"$1\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" | head -n 1
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Run outside any Go module so that no go.mod/go.work around the caller interferes.
(cd "$tmp" && go mod download -json "$MODULE@$VERSION" >"$tmp/download.json") || true

sum=$(json_field Sum <"$tmp/download.json")
dir=$(json_field Dir <"$tmp/download.json")
zip=$(json_field Zip <"$tmp/download.json")
if [[ -z "$sum" ]]; then
  echo "fetch-crd: go mod download $MODULE@$VERSION failed:" >&2
  cat "$tmp/download.json" >&2
  exit 1
fi
[[ -n "$dir" ]] || dir="$GOMODCACHE/$MODULE@$VERSION"

if [[ -f "$dir/$CRD_PATH" ]]; then
  cp "$dir/$CRD_PATH" "$tmp/crd.yaml"
elif [[ -n "$zip" && -f "$zip" ]]; then
  unzip -p "$zip" "$MODULE@$VERSION/$CRD_PATH" >"$tmp/crd.yaml"
else
  echo "fetch-crd: $CRD_PATH not found in $dir or in the module zip" >&2
  exit 1
fi

{
  echo "# Copied verbatim (everything below this header) by e2e/thirdparty/fetch-crd.sh $1 from"
  echo "#   Go module $MODULE@$VERSION ($sum)"
  echo "#   file $CRD_PATH"
  echo "# Do not edit; rerun the script instead."
  cat "$tmp/crd.yaml"
} >"$tmp/out.yaml"

if [[ "${2:-}" == "--check" ]]; then
  if cmp -s "$tmp/out.yaml" "$out"; then
    echo "up to date: $out"
  else
    echo "stale: $out (run e2e/thirdparty/fetch-crd.sh $1)" >&2
    exit 1
  fi
else
  mkdir -p "$(dirname "$out")"
  cp "$tmp/out.yaml" "$out"
  echo "wrote $out from $MODULE@$VERSION $CRD_PATH"
fi
