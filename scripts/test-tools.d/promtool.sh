#!/usr/bin/env bash
# promtool, for tests/test_monitoring.py: `promtool check rules` parses every alert and dashboard
# expression with Prometheus's own PromQL parser, `promtool test rules` runs the alerts' unit tests.
# The prometheus server binary, for tests/integration/test_monitoring_live.py: a real Prometheus
# scrapes live nodes, evaluates the alerts and answers the dashboard's queries.
# Debian's `prometheus` package ships both (/usr/bin/promtool, /usr/bin/prometheus). Its postinst
# would start a Prometheus service where systemd runs; in a container without systemd nothing starts.
set -euo pipefail
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "test-tools: installing promtool and prometheus (Debian package prometheus)" >&2
$SUDO apt-get update -qq -o DPkg::Lock::Timeout=300
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends prometheus >/dev/null
for tool in promtool prometheus; do
    command -v "$tool" >/dev/null 2>&1 || { echo "test-tools: apt-get installed prometheus but $tool is not on PATH" >&2; exit 1; }
done
