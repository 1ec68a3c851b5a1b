#!/usr/bin/env bash
# Installs the system tools some tests need (promtool, Ruby gRPC, Node packages...), so that the
# README's one test command works on a fresh machine. Each scripts/test-tools.d/*.sh installs one
# tool if it is missing and returns at once when it is there; they run in name order.
set -euo pipefail
cd "$(dirname "$0")/.."
for step in scripts/test-tools.d/*.sh; do
    [ -e "$step" ] || continue
    bash "$step"
done
