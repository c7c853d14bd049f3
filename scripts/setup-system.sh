#!/usr/bin/env bash
# Install the system programs Quart-FaaS runs for real (Debian packages), when missing.
# The tests fail (they never skip) when one of these is missing: tests/conftest.py
# SYSTEM_TOOLS lists what they run, and tests/test_setup_tools.py checks it against `--list`.
set -euo pipefail
# program:Debian package
TOOLS=(
  redis-server:redis-server
  prometheus:prometheus
  promtool:prometheus                  # checks the alert rules and scrape configs
  amtool:prometheus-alertmanager       # checks deploy/'s AlertManager route
  prometheus-alertmanager:prometheus-alertmanager  # delivers an alert to the plugin for real
  pgrep:procps                         # tests look for leftover processes
  unshare:util-linux                   # a watchdog/pod in its own network namespace
  ip:iproute2                          # loopback and veth pairs in those namespaces
  openssl:openssl                      # a TLS certificate for the Kubernetes API stand-in
  nsenter:util-linux                   # a pod's watchdog started inside its namespace
)
if [ "${1:-}" = "--list" ]; then
  for t in "${TOOLS[@]}"; do echo "${t%%:*} ${t#*:}"; done
  exit 0
fi
need=()
for t in "${TOOLS[@]}"; do
  pkg="${t#*:}"
  if ! command -v "${t%%:*}" >/dev/null 2>&1 && [[ " ${need[*]-} " != *" $pkg "* ]]; then
    need+=("$pkg")
  fi
done
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "installing ${need[*]} from Debian packages"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
# The packages may start system-wide instances on the default ports; ours start their own.
for svc in redis-server prometheus prometheus-alertmanager; do
  if command -v service >/dev/null 2>&1; then $SUDO service "$svc" stop >/dev/null 2>&1 || true; fi
done
