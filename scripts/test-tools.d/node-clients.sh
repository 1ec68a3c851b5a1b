#!/usr/bin/env bash
# Node packages of examples/clients/node (@grpc/grpc-js, @grpc/proto-loader), for
# tests/integration/test_clients_other_languages.py: `npm ci` from the committed package-lock.json
# (the npm registry) when node_modules is missing or older than the lock file. Node and npm
# themselves come from Debian (nodejs, npm) when missing.
set -euo pipefail
client=examples/clients/node
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    . "$(dirname "$0")/../test-tools-apt.bash"
    apt_install Node nodejs npm
fi
# npm ci writes node_modules/.package-lock.json: older than package-lock.json means stale.
stamp="$client/node_modules/.package-lock.json"
if [ -e "$stamp" ] && [ ! "$client/package-lock.json" -nt "$stamp" ]; then
    exit 0
fi
echo "test-tools: npm ci in $client" >&2
(cd "$client" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
(cd "$client" && node -e 'require("@grpc/grpc-js"); require("@grpc/proto-loader")') \
    || { echo "test-tools: npm ci ran but $client cannot require @grpc/grpc-js" >&2; exit 1; }
