#!/usr/bin/env bash
# Install the reference tool the benchmark compares against, pinned, into bench/out/node
# (ignored by git). Prints the path of the ccusage executable on stdout.
set -euo pipefail

VERSION="${CCUSAGE_VERSION:-20.0.24}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix="$here/out/node"
bin="$prefix/node_modules/.bin/ccusage"

if [[ ! -x "$bin" ]] || ! grep -q "\"version\": \"$VERSION\"" "$prefix/node_modules/ccusage/package.json" 2>/dev/null; then
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
        "ccusage@$VERSION" "@ccusage/ccusage-linux-x64@$VERSION" >&2
fi

# The native binary ships in the platform package; prefer it when it runs, so the
# benchmark measures the tool itself and not a Node launcher in front of it.
# npm does not keep the executable bit on it (the launcher sets it on first run), so set it.
native="$prefix/node_modules/@ccusage/ccusage-linux-x64/bin/ccusage"
[[ -f "$native" ]] && chmod u+x "$native"
if [[ -x "$native" ]] && "$native" --version >/dev/null 2>&1; then
    echo "$native"
else
    echo "$bin"
fi
