#!/bin/sh
# Installs Debian's prometheus and prometheus-alertmanager (promtool, amtool) and chromium when missing.
# Needs root or sudo; without either it says what to install and leaves the tests to skip.
set -eu
need=""
command -v promtool >/dev/null 2>&1 || need="$need prometheus"
command -v amtool >/dev/null 2>&1 || need="$need prometheus-alertmanager"
# the status page test renders / in a real headless browser
command -v chromium >/dev/null 2>&1 || need="$need chromium fonts-dejavu-core"
[ -z "$need" ] && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
  echo "install-system-deps: not root; install$need with apt-get to run the rule and end-to-end tests" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends: the packages' daemons are started by the tests, never as services
$SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
# Debian starts the services on install where it can; the tests run their own instances
for svc in prometheus prometheus-alertmanager prometheus-node-exporter; do
  $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
