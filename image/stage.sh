#!/bin/sh
# Makes what the image holds under /app in DEST: the production dependencies only, the compiled
# build (dist/) and the launcher (bin/codebrowse). The Dockerfile runs it, and so does make test
# (e2e/image/image.test.ts), so the image's contents are tested where no Docker engine exists.
# Usage: image/stage.sh DEST
set -eu
dest=${1:?usage: image/stage.sh DEST}
root=$(cd "$(dirname "$0")/.." && pwd)
[ -d "$dest" ] && chmod -R u+w "$dest"
rm -rf "$dest"
mkdir -p "$dest"
cp "$root/package.json" "$root/package-lock.json" "$dest/"
(cd "$dest" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
node "$root/node_modules/typescript/bin/tsc" -p "$root/tsconfig.build.json" --outDir "$dest/dist"
mkdir -p "$dest/bin"
cp "$root/bin/codebrowse" "$root/bin/node-version.sh" "$dest/bin/"
chmod 0755 "$dest/bin/codebrowse"
# Nothing in /app is writable at run time (the root filesystem is read-only in the pod anyway).
chmod -R a-w,a+rX "$dest"
