# shellcheck shell=sh
# Sourced by bin/codebrowse and bin/kubectl-browse: refuses a Node.js older (or newer) than
# package.json's "engines" allows, naming both versions, before Node meets an API it lacks (an old
# Node dies in a SyntaxError on an import, which says nothing about the cause).
# Needs $here (the bin dir); checks the `node` on PATH; exits 2 when it does not fit.
# shellcheck disable=SC2154
engines=$(sed -n 's/^ *"node": *"\(>=[^"]*\)".*/\1/p' "$here/../package.json" | head -n 1)
found=$(node --version 2>/dev/null) || {
  echo "codebrowse: no Node.js found on PATH: it needs Node.js $engines (package.json engines)" >&2
  exit 2
}
# engines reads ">=MAJOR.MINOR.PATCH <NEXT": compare MAJOR.MINOR.PATCH numerically, and the major below NEXT.
fits=$(echo "$found $engines" | awk '{
  split(substr($1, 2), v, "."); split(substr($2, 3), m, "."); below = substr($3, 2)
  have = v[1] * 1000000 + v[2] * 1000 + v[3]; need = m[1] * 1000000 + m[2] * 1000 + m[3]
  print (have >= need && (below == "" || v[1] + 0 < below + 0)) ? "yes" : "no" }')
if [ "$fits" != yes ]; then
  echo "codebrowse: found Node.js $found at $(command -v node || echo node), but it needs Node.js $engines (package.json engines): put a Node.js 24 first on PATH (make installs one into .tools/node)" >&2
  exit 2
fi
