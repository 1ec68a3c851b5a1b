#!/usr/bin/env bash
# promtool, for tests/test_monitoring.py: `promtool check rules` parses every alert and dashboard
# expression with Prometheus's own PromQL parser, `promtool test rules` runs the alerts' unit tests.
# Debian's `prometheus` package ships it (/usr/bin/promtool). The package's postinst would start a
# Prometheus server where systemd runs; in a container without systemd nothing is started.
set -euo pipefail
command -v promtool >/dev/null 2>&1 && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "test-tools: installing promtool (Debian package prometheus)" >&2
$SUDO apt-get update -qq -o DPkg::Lock::Timeout=300
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends prometheus >/dev/null
command -v promtool >/dev/null 2>&1 || { echo "test-tools: apt-get installed prometheus but promtool is not on PATH" >&2; exit 1; }
