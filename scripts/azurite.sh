#!/usr/bin/env bash
# Install Azurite (the Azure Blob emulator) into the git-ignored .ci/node/ if it is not there yet, and print the
# path of azurite-blob. Used by tests/fixtures/emulators.py and .ci/run. ~30 s on first run, instant after.
# --ignore-scripts: npm 11 blocks protobufjs' postinstall anyway, and Azurite works without it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.ci/node/node_modules/.bin/azurite-blob
if [ ! -x "$BIN" ]; then
  mkdir -p .ci/node
  npm install --no-audit --no-fund --ignore-scripts --no-package-lock --prefix .ci/node azurite@3.37.0 >&2
fi
echo "$PWD/$BIN"
