#!/usr/bin/env bash
# Installs Debian's `prometheus` package (it provides `prometheus` and `promtool`) when either is
# missing; the observability test (tests/observability_prometheus.rs) starts its own Prometheus on
# a loopback port with a temp storage dir and runs `promtool check` on deploy/prometheus/.
#
# The package's own service is never left running: a policy-rc.d refuses service starts during
# the install, and any running instance is stopped (and disabled) afterwards.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  echo "prometheus found: $(prometheus --version 2>&1 | head -n1)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-prometheus.sh: not root and no sudo; install the Debian package 'prometheus' by hand" >&2
    exit 1
  fi
fi

# Refuse service starts while the package installs (invoke-rc.d honours policy-rc.d; exit 101).
policy=/usr/sbin/policy-rc.d
placed_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  placed_policy=1
fi
cleanup() { if [ -n "$placed_policy" ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y --no-install-recommends prometheus

# Belt and braces: where an init system exists, stop and disable the packaged service.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl stop prometheus 2>/dev/null || true
  $SUDO systemctl disable prometheus 2>/dev/null || true
elif command -v service >/dev/null 2>&1; then
  $SUDO service prometheus stop 2>/dev/null || true
fi

command -v prometheus >/dev/null && command -v promtool >/dev/null || {
  echo "install-prometheus.sh: the package installed but prometheus/promtool are not on PATH" >&2
  exit 1
}
echo "prometheus installed: $(prometheus --version 2>&1 | head -n1)"
