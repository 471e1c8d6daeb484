#!/bin/sh
# Builds the compiled guest agent (this Go module) for the guests: static (CGO off), stripped,
# for linux/amd64, linux/arm64 and windows/amd64, into DIR (default
# ${CODEBROWSE_CACHE:-$HOME/.cache/codebrowse}/bin/agent-<hash>, the hash being the first 12 hex
# digits of the sha256 of the module's *.go files, go.mod and go.sum, sorted by path). A DIR that
# has all three binaries already is left as it is. Prints DIR on its last line.
# Usage: build.sh [DIR]
# Env:   CODEBROWSE_CACHE; GOMODCACHE, GOCACHE, GOFLAGS (default: the project's caches, -mod=mod)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache=${CODEBROWSE_CACHE:-${HOME:-/root}/.cache/codebrowse}
GOMODCACHE=${GOMODCACHE:-$cache/go/mod}
GOCACHE=${GOCACHE:-$cache/go/build}
GOFLAGS=${GOFLAGS:--mod=mod}
export GOMODCACHE GOCACHE GOFLAGS
go=go
command -v go >/dev/null 2>&1 || go=/usr/local/go/bin/go

# The module's sources, by path: each path, then its content.
hash=$(cd "$here" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | LC_ALL=C sort |
  while IFS= read -r f; do
    printf '%s\n' "$f"
    cat "$f"
  done | sha256sum | cut -c1-12)
out=${1:-$cache/bin/agent-$hash}

targets="linux/amd64 linux/arm64 windows/amd64"
binary() { # OS ARCH
  if [ "$1" = windows ]; then echo "codebrowse-agent-$1-$2.exe"; else echo "codebrowse-agent-$1-$2"; fi
}

missing=""
for t in $targets; do
  os=${t%/*} arch=${t#*/}
  [ -f "$out/$(binary "$os" "$arch")" ] || missing="$missing $t"
done
if [ -n "$missing" ]; then
  mkdir -p "$out"
  for t in $missing; do
    os=${t%/*} arch=${t#*/}
    name=$(binary "$os" "$arch")
    echo "building $name" >&2
    (cd "$here" && CGO_ENABLED=0 GOOS=$os GOARCH=$arch "$go" build -trimpath -ldflags='-s -w' -o "$out/$name.tmp" .)
    mv -f "$out/$name.tmp" "$out/$name"
  done
fi
printf '%s\n' "$out"
