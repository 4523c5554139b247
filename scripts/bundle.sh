#!/usr/bin/env bash
# npm run bundle: an offline release bundle for rack controllers.
#
#   scripts/bundle.sh [--out DIR] [--version V] [--skip-build]
#
# Writes DIR/rackpilot-<version>-linux-<arch>.tar.gz (default DIR: release/)
# holding rackpilot-<version>/ with the built JavaScript (tests left out; the
# agent itself bundled by scripts/bundle-agent.mjs into dist/agent/cli.js), the
# production node_modules of THIS machine's architecture and Node ABI (native
# bindings included: koffi, serialport, epoll), install.sh, the example
# configs, the protocol docs and BUNDLE.json (version, arch, Node ABI, commit,
# build id). Build it on the controllers' architecture (x64 or arm64) with the
# same Node major version they run: install.sh refuses a mismatch.
# It needs no network once `npm ci` has run (node_modules is pruned in place
# from the lockfile, never downloaded).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$here/release"
version=""
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --skip-build) build=0; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bundle: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

cd "$here"
[ -d node_modules ] || { echo "bundle: node_modules is missing: run npm ci first" >&2; exit 1; }
if [ "$build" = 1 ]; then npm run --silent build; fi
[ -f dist/agent/cli.js ] || { echo "bundle: dist/ is missing: run npm run build (or drop --skip-build)" >&2; exit 1; }
[ -f dist/bundle/agent/cli.js ] || { echo "bundle: dist/bundle/ is missing: run npm run build (or drop --skip-build)" >&2; exit 1; }

[ -n "$version" ] || version="$(node -p "require('./package.json').version")"
case "$version" in *[!A-Za-z0-9._+-]*|"") echo "bundle: bad version \"$version\"" >&2; exit 2 ;; esac
arch="$(node -p process.arch)"
name="rackpilot-$version"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
stage="$(mktemp -d "${TMPDIR:-/tmp}/rackpilot-bundle.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
root="$stage/$name"
mkdir -p "$root"

# the built JavaScript, without tests (the demo's simulators use hil/testing: it stays)
tar -C "$here" -cf - \
  --exclude='dist/test' --exclude='*.test.js' --exclude='*.test.js.map' --exclude='dist/bundle' \
  dist | tar -C "$root" -xf -
# the agent as it runs: the esbuild bundle (scripts/bundle-agent.mjs) in place of tsc's dist/agent/cli.js; the
# simulators and benchmarks it can start stay the separate files beside it
cp dist/bundle/agent/*.js "$root/dist/agent/"
mkdir -p "$root/drivers/braiins" "$root/protocol"
cp -r drivers/braiins/proto "$root/drivers/braiins/"
cp -r protocol/README.md protocol/schema "$root/protocol/"
cp -r examples README.md package-lock.json install.sh "$root/"
node -e '
  const p = require("./package.json");
  p.version = process.argv[1];
  delete p.devDependencies;
  process.stdout.write(JSON.stringify(p, null, 2) + "\n");
' "$version" > "$root/package.json"

# production dependencies: this machine's node_modules, pruned offline from the lockfile
cp -a node_modules "$root/node_modules"
(cd "$root" && npm prune --omit=dev --ignore-scripts --no-audit --no-fund --offline --loglevel=error >/dev/null)
rm -rf "$root"/node_modules/epoll/build/Release/obj.target "$root"/node_modules/.package-lock.json
# native bindings must be there for this architecture
[ -f "$root/node_modules/epoll/build/Release/epoll.node" ] || { echo "bundle: epoll was not built (npm ci must run its install script: see allowScripts)" >&2; exit 1; }
node -e "require(process.argv[1] + '/node_modules/koffi')" "$root" || { echo "bundle: koffi has no binary for $arch" >&2; exit 1; }

commit="$(git -C "$here" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
dirty=""
git -C "$here" diff --quiet HEAD 2>/dev/null || dirty="-dirty"
# the build id: a hash of every file's path and content, so install.sh can tell an identical bundle from a rebuilt one
build_id="$(cd "$root" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
node -e '
  const [version, arch, commit, buildId] = process.argv.slice(1);
  process.stdout.write(JSON.stringify({
    name: "rackpilot", version, platform: process.platform, arch,
    nodeAbi: process.versions.modules, builtWithNode: process.version,
    nodeMin: "20.0.0", commit, buildId, builtAt: new Date().toISOString(),
  }, null, 2) + "\n");
' "$version" "$arch" "$commit$dirty" "$build_id" > "$root/BUNDLE.json"

file="$out/$name-linux-$arch.tar.gz"
tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$file.tmp" "$name"
mv "$file.tmp" "$file"
size="$(du -h "$file" | cut -f1)"
echo "bundle: $file ($size; node ABI $(node -p process.versions.modules), $arch, build $build_id)"
