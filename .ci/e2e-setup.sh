#!/usr/bin/env bash
# Installs what the end-to-end tests in a real VS Code need, idempotently:
#   Debian packages (chromium, ripgrep, headers for code-server's native modules),
#   code-server 4.100.3, playwright-core and @vscode/vsce into .e2e/ (gitignored),
#   kept out of the extension's own dependencies.
# Usage: bash .ci/e2e-setup.sh   (from anywhere; as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
E2E=$ROOT/.e2e
CODE_SERVER_VERSION=4.100.3
PLAYWRIGHT_VERSION=1.65.1
VSCE_VERSION=3.9.1

SUDO=
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

# 1. Debian packages. `dpkg -s` first so that a machine that has them does no apt work at all.
pkgs=(chromium ripgrep libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev python3 make g++ pkg-config)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
mkdir -p "$E2E"
if [ ${#missing[@]} -gt 0 ]; then
  echo "e2e-setup: installing Debian packages: ${missing[*]} (log: .e2e/apt.log)"
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$E2E/apt.log" 2>&1; then
    tail -n 40 "$E2E/apt.log"
    echo "e2e-setup: apt-get failed" >&2
    exit 1
  fi
fi

# 2. npm packages into .e2e/, unless the pinned versions are already there.
cs_native=$E2E/node_modules/code-server/lib/vscode/node_modules/node-pty/build/Release/pty.node
have() { # have NAME VERSION
  [ -f "$E2E/node_modules/$1/package.json" ] &&
    [ "$(node -p "require('$E2E/node_modules/$1/package.json').version")" = "$2" ]
}
if have code-server "$CODE_SERVER_VERSION" && have playwright-core "$PLAYWRIGHT_VERSION" && have @vscode/vsce "$VSCE_VERSION" &&
   [ -x "$E2E/node_modules/.bin/code-server" ] && [ -f "$cs_native" ]; then
  echo "e2e-setup: .e2e/ is up to date (code-server $CODE_SERVER_VERSION, playwright-core $PLAYWRIGHT_VERSION, vsce $VSCE_VERSION)"
  exit 0
fi

mkdir -p "$E2E/tmp"
# @vscode/ripgrep downloads rg from GitHub unless it finds this cached archive: give it Debian's rg.
export TMPDIR=$E2E/tmp
cache=$TMPDIR/vscode-ripgrep-cache-1.15.11
if [ ! -f "$cache/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz" ]; then
  mkdir -p "$cache" "$E2E/tmp/rg"
  cp /usr/bin/rg "$E2E/tmp/rg/rg"
  tar -C "$E2E/tmp/rg" -czf "$cache/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz" rg
fi

if [ ! -f "$E2E/package.json" ]; then
  cat >"$E2E/package.json" <<JSON
{ "name": "neuronpatch-e2e", "private": true, "description": "Test tools for the extension's end-to-end tests (not shipped)." }
JSON
fi
# code-server's postinstall refuses root without unsafe-perm; node-pty's runs `npx node-gyp`.
export npm_config_unsafe_perm=true npm_config_yes=true npm_config_fund=false npm_config_audit=false
echo "e2e-setup: npm install into .e2e/ (code-server@$CODE_SERVER_VERSION playwright-core@$PLAYWRIGHT_VERSION @vscode/vsce@$VSCE_VERSION)"
(cd "$E2E" && npm install --no-save --no-package-lock --loglevel=warn \
  "code-server@$CODE_SERVER_VERSION" "playwright-core@$PLAYWRIGHT_VERSION" "@vscode/vsce@$VSCE_VERSION")
test -x "$E2E/node_modules/.bin/code-server"
test -f "$cs_native" || { echo "e2e-setup: code-server's native modules were not built (missing $cs_native)" >&2; exit 1; }
echo "e2e-setup: done"
