#!/usr/bin/env bash
# Make sure the tools the deployment tests need are on this machine: promtool and the
# prometheus server (Debian's `prometheus` package ships both), and docker-compose 1.29
# (Debian's; it validates docker-compose.yml offline, no Docker engine needed). Idempotent;
# installs with apt-get only when they are missing and we are root; never leaves a
# Prometheus service running (it would hold port 9090), and gives up after a bounded time.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

# kubectl (with its built-in kustomize) renders deploy/k8s in the tests. It ships with the
# machine image; Debian's kubernetes-client is too old for these kustomizations.
have kubectl || echo "note: kubectl is missing; the Kubernetes manifest tests will be skipped" >&2

missing=()
{ have promtool && have prometheus; } || missing+=(prometheus)
have docker-compose || missing+=(docker-compose)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "${missing[*]} missing: run 'sudo apt-get install -y --no-install-recommends" \
    "${missing[*]}'; the tests that need them will be skipped." >&2
  exit 0
fi

echo "installing ${missing[*]} with apt-get"

# Keep the package's service from being started: tests start their own Prometheus on a free
# port. policy-rc.d answering 101 tells invoke-rc.d "not allowed"; ours is removed after.
policy=/usr/sbin/policy-rc.d
placed_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  placed_policy=true
fi
cleanup() { if $placed_policy; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
timeout 300 apt-get update -qq >/dev/null || true
timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# A system without policy-rc.d support may still have started it: stop it (bounded).
if have systemctl && systemctl is-active --quiet prometheus 2>/dev/null; then
  timeout 30 systemctl stop prometheus || true
elif [ -x /etc/init.d/prometheus ]; then
  timeout 30 /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi

have promtool && have prometheus && have docker-compose || {
  echo "installed, but promtool, prometheus or docker-compose is not on PATH" >&2
  exit 1
}
